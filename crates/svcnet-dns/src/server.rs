//! Transports: UDP worker threads and a TCP listener. They move packets and nothing else; every
//! DNS decision is the handler's.
//!
//! UDP uses one `SO_REUSEPORT` socket per worker thread, each a tight blocking loop of
//! `recvmmsg` (every queued query, up to a batch) → handle each → one `sendmmsg`, so the kernel
//! spreads queries over the cores, a burst costs two system calls, and a local answer never
//! touches the async runtime. Each worker keeps its own answer cache (`cache.rs`). Only forwarded questions go to a tokio task.
//! TCP is a tokio listener with RFC 1035 length-prefixed framing, several queries per
//! connection, an idle timeout and a connection limit.
//! Left out: DNS over TLS/HTTPS/QUIC, TCP pipelining out of order.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::cache::AnswerCache;
use crate::error::{Error, Result};
use crate::handler::{Handler, Outcome, Transport, UdpOutcome};
use crate::sys::UdpBatch;

/// How often a blocked UDP worker wakes up to check for cancellation.
const UDP_POLL: Duration = Duration::from_millis(200);
/// A TCP connection idle this long is closed (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// A UDP worker adds its answer-cache counts to the metrics every this many packets.
const FLUSH_EVERY: usize = 4096;
/// Longer UDP queries are answered FORMERR (a query is a header, a name and an OPT record).
const MAX_UDP_QUERY: usize = 4096;
/// At most this many TCP connections at once; more are closed at once.
const MAX_TCP_CONNECTIONS: usize = 512;

fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    // Room for bursts: a full receive queue drops queries.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(Some(UDP_POLL))?;
    Ok(socket)
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Binds the UDP sockets and the TCP listener on one port (a free one if `addr` has port 0).
pub fn bind(addr: SocketAddr, n_udp: usize) -> Result<(Vec<UdpSocket>, std::net::TcpListener)> {
    let listen_error = |source| Error::Listen { addr, source };
    let mut last_error = None;
    // With port 0 the TCP port may already be taken; try a few ports.
    for _ in 0..8 {
        let first = udp_socket(addr).map_err(listen_error)?;
        let bound = first.local_addr().map_err(listen_error)?;
        let tcp = match tcp_listener(bound) {
            Ok(tcp) => tcp,
            Err(err) if addr.port() == 0 => {
                last_error = Some(err);
                continue;
            }
            Err(err) => return Err(listen_error(err)),
        };
        let mut sockets = vec![first];
        for _ in 1..n_udp.max(1) {
            sockets.push(udp_socket(bound).map_err(listen_error)?);
        }
        return Ok((sockets, tcp));
    }
    Err(listen_error(last_error.unwrap_or_else(|| std::io::Error::other("no free port"))))
}

/// Runs one UDP worker thread until `cancel`, receiving and answering up to `batch` queries
/// per pair of system calls.
pub fn spawn_udp_worker(
    socket: UdpSocket,
    handler: Arc<Handler>,
    runtime: tokio::runtime::Handle,
    cancel: CancellationToken,
    worker_idx: usize,
    batch: usize,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("dns-udp-{worker_idx}"))
        .spawn(move || udp_loop(socket, handler, runtime, cancel, batch))
}

fn udp_loop(
    socket: UdpSocket,
    handler: Arc<Handler>,
    runtime: tokio::runtime::Handle,
    cancel: CancellationToken,
    batch_size: usize,
) {
    let socket = Arc::new(socket);
    let mut batch = UdpBatch::new(batch_size, MAX_UDP_QUERY);
    let mut replies: Vec<Vec<u8>> =
        (0..batch.capacity()).map(|_| Vec::with_capacity(1232)).collect();
    let mut to_send: Vec<usize> = Vec::with_capacity(batch.capacity());
    let mut cache = AnswerCache::new();
    let mut since_flush = 0usize;
    while !cancel.is_cancelled() {
        let received = match batch.recv(&socket) {
            Ok(received) => received,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                // Idle: publish counts and let go of a replaced zone snapshot.
                flush_cache_counts(&mut cache, &handler);
                cache.follow(&handler.zone());
                continue;
            }
            Err(err) => {
                // ICMP errors from earlier sends surface here (ECONNREFUSED); keep serving.
                tracing::trace!(error = %err, "udp receive failed");
                continue;
            }
        };
        to_send.clear();
        for (idx, reply) in replies.iter_mut().enumerate().take(received) {
            let (packet, truncated, peer) = batch.packet(idx);
            let Some(peer) = peer else {
                continue;
            };
            let outcome = if truncated {
                handler.handle_oversized(packet, reply)
            } else {
                handler.handle_udp(packet, peer.ip(), &mut cache, reply)
            };
            match outcome {
                UdpOutcome::Reply => to_send.push(idx),
                UdpOutcome::Forward(job) => {
                    let socket = socket.clone();
                    let handler = handler.clone();
                    runtime.spawn(async move {
                        let bytes = handler.forward(job).await;
                        if let Err(err) = socket.send_to(&bytes, peer) {
                            tracing::trace!(%peer, error = %err, "udp send failed");
                        }
                    });
                }
                UdpOutcome::Drop => {}
            }
        }
        batch.send(&socket, &to_send, &replies);
        since_flush += received;
        if since_flush >= FLUSH_EVERY {
            since_flush = 0;
            flush_cache_counts(&mut cache, &handler);
        }
    }
}

/// Adds the worker's answer-cache hits and misses to the shared counters (in batches, so the
/// hot path touches no shared cache line for them).
fn flush_cache_counts(cache: &mut AnswerCache, handler: &Handler) {
    let (hits, misses) = cache.take_counts();
    if hits + misses > 0 {
        handler.metrics().answer_cache_hits.inc_by(hits);
        handler.metrics().answer_cache_misses.inc_by(misses);
    }
}

/// Serves TCP until `cancel`.
pub async fn serve_tcp(
    listener: std::net::TcpListener,
    handler: Arc<Handler>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let connections = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::debug!(error = %err, "tcp accept failed");
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let handler = handler.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                result = tcp_connection(stream, peer, &handler) => {
                    if let Err(err) = result {
                        tracing::trace!(%peer, error = %err, "tcp connection ended");
                    }
                }
            }
            drop(permit);
        });
    }
}

async fn tcp_connection(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    handler: &Handler,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 65535];
    loop {
        let length = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(length)) => usize::from(length),
            // Idle, or the client closed the connection.
            Ok(Err(_)) | Err(_) => return Ok(()),
        };
        let body = &mut buf[..length];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(body)).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "tcp read timed out")
        })??;
        let bytes = match handler.handle(body, peer.ip(), Transport::Tcp) {
            Outcome::Reply(bytes) => bytes,
            Outcome::Forward(job) => handler.forward(job).await,
            Outcome::Drop => return Ok(()),
        };
        let length = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&length.to_be_bytes());
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await?;
    }
}
