//! TCP frontends: accept, choose a backend (affinity, scheduler, retry on a failed connect),
//! forward until both sides close.
//!
//! One listener per data-path thread (see `workers`); a connection lives as ONE task on the
//! thread that accepted it, driving both directions. The hot path is kept to the syscalls the
//! forwarding needs: TCP_NODELAY and keepalive are set once on the listener (accepted sockets
//! inherit them, which a test checks), the backend socket gets its options before the
//! non-blocking connect, no buffer is allocated per connection (see `splice`), and a
//! direction's end is passed on with `shutdown(SHUT_WR)` only while the other direction is
//! still open (when both are done, `close` sends the FIN).
//!
//! A connection that cannot be served (no usable backend, source outside
//! `loadBalancerSourceRanges`, every connect failed) is reset at once (`SO_LINGER` 0), the
//! userspace equivalent of kube-proxy's REJECT; a userspace proxy cannot silently drop a
//! connection the kernel already accepted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

#[cfg(test)]
use super::bind_socket;
use super::{Route, UserspaceConfig, bind_group, splice};

/// Pending connections per listener.
const BACKLOG: i32 = 4096;

/// Binds `address` once per data-path thread in `workers` and spawns each accept loop there.
/// Nothing is left bound when it fails.
pub(super) fn listen(
    address: SocketAddr,
    route: Arc<ArcSwap<Route>>,
    cancel: CancellationToken,
    config: UserspaceConfig,
    workers: &[Handle],
) -> std::io::Result<()> {
    let sockets = bind_group(address, socket2::Type::STREAM, workers.len(), config.take_over)?;
    for socket in &sockets {
        tune(&SockRef::from(socket), config.tcp_keepalive)?;
        socket.listen(BACKLOG)?;
    }
    let config = Arc::new(config);
    for (socket, handle) in sockets.into_iter().zip(workers) {
        let _entered = handle.enter();
        let listener = TcpListener::from_std(socket.into())?;
        handle.spawn(accept_loop(listener, route.clone(), cancel.clone(), config.clone()));
    }
    tracing::debug!(%address, threads = workers.len(), "listening (tcp)");
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    route: Arc<ArcSwap<Route>>,
    cancel: CancellationToken,
    config: Arc<UserspaceConfig>,
) {
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        // Accepting again right after a success drains the backlog until WouldBlock.
        let accepted = tokio::select! {
            biased;
            _ = &mut cancelled => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, client)) => {
                let route = route.load_full();
                tokio::spawn(serve(stream, client, route, config.clone()));
            }
            Err(error) => {
                // Out of file descriptors and the like: back off briefly instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

fn reset(stream: TcpStream) {
    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// TCP_NODELAY and keepalive (idle time; the kernel's probe interval).
fn tune(socket: &SockRef<'_>, keepalive: Duration) -> std::io::Result<()> {
    socket.set_tcp_nodelay(true)?;
    socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(keepalive))
}

async fn connect(backend: SocketAddr, config: &UserspaceConfig) -> std::io::Result<TcpStream> {
    let socket = if backend.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    tune(&SockRef::from(&socket), config.tcp_keepalive)?;
    match tokio::time::timeout(config.connect_timeout, socket.connect(backend)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")),
    }
}

async fn serve(
    client_stream: TcpStream,
    client: SocketAddr,
    route: Arc<Route>,
    config: Arc<UserspaceConfig>,
) {
    let route = route.for_client(client.ip());
    if !route.allows(client.ip()) {
        tracing::trace!(%client, service = %route.service, "source not in loadBalancerSourceRanges");
        return reset(client_stream);
    }
    // Allocated only when a connect fails.
    let mut excluded: Vec<bool> = Vec::new();
    let mut connected = None;
    while let Some(index) = route.choose(client, &excluded) {
        let backend = &route.backends[index];
        match connect(backend.address, &config).await {
            Ok(stream) => {
                connected = Some((index, stream));
                break;
            }
            Err(error) => {
                tracing::debug!(%client, backend = %backend.address, %error, "connect failed; trying the next backend");
                backend.counters.connect_failed();
                if excluded.is_empty() {
                    excluded = vec![false; route.backends.len()];
                }
                excluded[index] = true;
            }
        }
    }
    let Some((index, backend_stream)) = connected else {
        tracing::trace!(%client, service = %route.service, kind = ?route.kind, "no usable backend; reset");
        return reset(client_stream);
    };
    route.chosen(client, index);
    let counters = &route.backends[index].counters;
    counters.connected();
    let result = if config.splice {
        splice::bidirectional(&client_stream, &backend_stream).await
    } else {
        let (mut client_stream, mut backend_stream) = (client_stream, backend_stream);
        tokio::io::copy_bidirectional(&mut client_stream, &mut backend_stream).await
    };
    counters.active.fetch_sub(1, Ordering::Relaxed);
    if let Err(error) = result {
        tracing::trace!(%client, %error, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hot path relies on accepted sockets inheriting the listener's options.
    #[test]
    fn accepted_sockets_inherit_nodelay_and_keepalive() {
        let socket =
            bind_socket("127.0.0.1:0".parse().unwrap(), socket2::Type::STREAM, false).unwrap();
        tune(&SockRef::from(&socket), Duration::from_secs(42)).unwrap();
        socket.listen(8).unwrap();
        socket.set_nonblocking(false).unwrap();
        let listener: std::net::TcpListener = socket.into();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let accepted = SockRef::from(&accepted);
        assert!(accepted.tcp_nodelay().unwrap());
        assert!(accepted.keepalive().unwrap());
        assert_eq!(accepted.tcp_keepalive_time().unwrap(), Duration::from_secs(42));
    }
}
