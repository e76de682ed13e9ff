//! Zero-copy TCP forwarding with splice(2): socket → pipe → socket, never through user memory.
//! A direction starts by copying (cheap for request/response traffic, no pipe to create) and
//! switches to splice at its first full 16 KiB read.
//!
//! One pipe per direction; each chunk read into the pipe is written out fully before the next
//! read, so the pipe never holds more than one chunk and a `WouldBlock` always belongs to the
//! socket that tokio is polling. Readiness comes from tokio (`readable`/`writable` + `try_io`);
//! rustix makes the syscalls safe. Half-close is forwarded with `shutdown(SHUT_WR)`.
//! Not here: TLS or anything that must see the bytes.

use std::io;

use rustix::net::Shutdown;
use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes moved per splice call (the default pipe capacity).
const CHUNK: usize = 64 * 1024;

/// Forwards both directions until both have seen EOF, or either fails. Returns bytes
/// (client → backend, backend → client).
pub async fn bidirectional(client: &TcpStream, backend: &TcpStream) -> io::Result<(u64, u64)> {
    let up = one_way(client, backend);
    let down = one_way(backend, client);
    tokio::pin!(up, down);
    let (mut up_bytes, mut down_bytes) = (None, None);
    while up_bytes.is_none() || down_bytes.is_none() {
        tokio::select! {
            result = &mut up, if up_bytes.is_none() => up_bytes = Some(result?),
            result = &mut down, if down_bytes.is_none() => down_bytes = Some(result?),
        }
    }
    Ok((up_bytes.unwrap_or_default(), down_bytes.unwrap_or_default()))
}

/// Bytes copied through user space before a direction counts as bulk and switches to splice.
const COPY_BUFFER: usize = 16 * 1024;

/// Forwards one direction: small reads are copied (no pipe is created for request/response
/// traffic); the first read that fills the buffer switches the direction to splice.
async fn one_way(src: &TcpStream, dst: &TcpStream) -> io::Result<u64> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        src.readable().await?;
        let n = match src.try_read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            shutdown_write(dst)?;
            return Ok(total);
        }
        let mut written = 0;
        while written < n {
            dst.writable().await?;
            match dst.try_write(&buf[written..n]) {
                Ok(m) => written += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        total += n as u64;
        if n == buf.len() {
            return Ok(total + splice_one_way(src, dst).await?);
        }
    }
}

/// EOF from the source: pass the half-close on; the peer may still answer.
fn shutdown_write(dst: &TcpStream) -> io::Result<()> {
    match rustix::net::shutdown(dst, Shutdown::Write) {
        Ok(()) | Err(rustix::io::Errno::NOTCONN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn splice_one_way(src: &TcpStream, dst: &TcpStream) -> io::Result<u64> {
    let (pipe_read, pipe_write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
    let flags = SpliceFlags::NONBLOCK | SpliceFlags::MOVE;
    let mut total = 0u64;
    loop {
        src.readable().await?;
        let read = src.try_io(Interest::READABLE, || {
            splice(src, None, &pipe_write, None, CHUNK, flags).map_err(io::Error::from)
        });
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            shutdown_write(dst)?;
            return Ok(total);
        }
        let mut left = n;
        while left > 0 {
            dst.writable().await?;
            let written = dst.try_io(Interest::WRITABLE, || {
                splice(&pipe_read, None, dst, None, left, flags).map_err(io::Error::from)
            });
            match written {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        total += n as u64;
    }
}
