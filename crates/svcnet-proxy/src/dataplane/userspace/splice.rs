//! TCP forwarding: copy small exchanges through one per-thread buffer, splice(2) bulk.
//!
//! A direction starts by copying: each readable event is one `read` into the thread's scratch
//! buffer and one `write` of those bytes; only bytes the destination cannot take at once are
//! kept (a per-connection buffer exists only then), so request/response traffic allocates
//! nothing per connection. A read shorter than the buffer drained the socket, so its readiness
//! is cleared right away (as nginx does with edge-triggered epoll) instead of paying for a
//! `read` that returns EAGAIN; end of stream stays visible through tokio's read-closed flag.
//! The first read that fills the buffer switches the direction to splice: socket → pipe →
//! socket, never through user memory.
//!
//! One pipe per bulk direction; each chunk read into the pipe is written out fully before the
//! next read, so the pipe never holds more than one chunk and a `WouldBlock` always belongs to
//! the socket that tokio is polling. Readiness comes from tokio (`readable`/`writable` +
//! `try_io`); rustix makes the syscalls safe. Half-close is forwarded with `shutdown(SHUT_WR)`.
//! Not here: TLS or anything that must see the bytes.

use std::cell::RefCell;
use std::io;

use rustix::net::Shutdown;
use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_setpipe_size, pipe_with, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipe capacity asked for a bulk direction (the kernel caps it at `fs.pipe-max-size`); one
/// splice call moves up to this much, so bulk costs fewer syscalls and wake-ups per byte.
/// The default capacity (64 KiB) is kept when the kernel refuses.
const PIPE_SIZE: usize = 512 * 1024;
const DEFAULT_PIPE_SIZE: usize = 64 * 1024;

/// Forwards both directions until both have seen EOF, or either fails. Returns bytes
/// (client → backend, backend → client). The end of one direction is passed on with a
/// half-close while the other is still open; once both have ended, dropping the sockets
/// closes them (and sends the FIN) without a `shutdown` call.
pub async fn bidirectional(client: &TcpStream, backend: &TcpStream) -> io::Result<(u64, u64)> {
    let up = one_way(client, backend);
    let down = one_way(backend, client);
    tokio::pin!(up, down);
    let (mut up_bytes, mut down_bytes) = (None, None);
    while up_bytes.is_none() || down_bytes.is_none() {
        tokio::select! {
            biased;
            result = &mut up, if up_bytes.is_none() => {
                up_bytes = Some(result?);
                if down_bytes.is_none() {
                    shutdown_write(backend)?;
                }
            }
            result = &mut down, if down_bytes.is_none() => {
                down_bytes = Some(result?);
                if up_bytes.is_none() {
                    shutdown_write(client)?;
                }
            }
        }
    }
    Ok((up_bytes.unwrap_or_default(), down_bytes.unwrap_or_default()))
}

/// Bytes copied through user space per read; a read that fills it marks the direction as
/// bulk and switches it to splice.
const COPY_BUFFER: usize = 16 * 1024;

thread_local! {
    /// The copy buffer of this thread; borrowed only between a read and its write, never
    /// across an `.await`.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; COPY_BUFFER].into_boxed_slice());
}

/// What one readable event moved.
enum Step {
    /// `n` bytes read and handed to the destination (or kept in `pending`).
    Moved { n: usize, full: bool },
    /// The source had nothing after all.
    Again,
    /// End of stream.
    Eof,
}

/// Forwards one direction until EOF (not passed on here; see `bidirectional`).
async fn one_way(src: &TcpStream, dst: &TcpStream) -> io::Result<u64> {
    let mut pending: Vec<u8> = Vec::new();
    let mut total = 0u64;
    loop {
        src.readable().await?;
        let step = SCRATCH.with_borrow_mut(|buf| transfer(src, dst, buf, &mut pending))?;
        match step {
            Step::Again => continue,
            Step::Eof => return Ok(total),
            Step::Moved { n, full } => {
                total += n as u64;
                let mut written = 0;
                while written < pending.len() {
                    dst.writable().await?;
                    match dst.try_write(&pending[written..]) {
                        Ok(m) => written += m,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e),
                    }
                }
                pending.clear();
                if full {
                    return Ok(total + splice_one_way(src, dst).await?);
                }
            }
        }
    }
}

/// One read from `src` into `buf` and one write of it to `dst`; what `dst` did not take is
/// appended to `pending`.
fn transfer(
    src: &TcpStream,
    dst: &TcpStream,
    buf: &mut [u8],
    pending: &mut Vec<u8>,
) -> io::Result<Step> {
    let mut n = 0usize;
    let read = src.try_io(Interest::READABLE, || {
        n = rustix::io::read(src, &mut *buf)?;
        if n > 0 && n < buf.len() {
            // A short read emptied the receive queue: report WouldBlock so that tokio clears
            // the readiness now; new data (or the FIN) raises a new edge.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    });
    match read {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Again),
        Err(e) => return Err(e),
    }
    if n == 0 {
        return Ok(Step::Eof);
    }
    match dst.try_write(&buf[..n]) {
        Ok(m) => pending.extend_from_slice(&buf[m..n]),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => pending.extend_from_slice(&buf[..n]),
        Err(e) => return Err(e),
    }
    Ok(Step::Moved { n, full: n == buf.len() })
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
    let chunk = fcntl_setpipe_size(&pipe_write, PIPE_SIZE).unwrap_or(DEFAULT_PIPE_SIZE);
    let flags = SpliceFlags::NONBLOCK | SpliceFlags::MOVE;
    let mut total = 0u64;
    loop {
        src.readable().await?;
        let read = src.try_io(Interest::READABLE, || {
            splice(src, None, &pipe_write, None, chunk, flags).map_err(io::Error::from)
        });
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
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
