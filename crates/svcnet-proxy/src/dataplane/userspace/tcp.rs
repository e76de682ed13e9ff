//! TCP frontends: accept, choose a backend (affinity, scheduler, retry on a failed connect),
//! forward with splice until both sides close.
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
use tokio_util::sync::CancellationToken;

use super::{Route, UserspaceConfig, bind_socket, splice};

/// Binds `address` and spawns its accept loop.
pub(super) fn listen(
    address: SocketAddr,
    route: Arc<ArcSwap<Route>>,
    cancel: CancellationToken,
    config: UserspaceConfig,
) -> std::io::Result<()> {
    let socket = bind_socket(address, socket2::Type::STREAM)?;
    socket.listen(1024)?;
    let listener = TcpListener::from_std(socket.into())?;
    tracing::debug!(%address, "listening (tcp)");
    tokio::spawn(accept_loop(listener, route, cancel, config));
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    route: Arc<ArcSwap<Route>>,
    cancel: CancellationToken,
    config: UserspaceConfig,
) {
    let config = Arc::new(config);
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
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

fn tune(stream: &TcpStream, keepalive: Duration, nodelay: bool) {
    let socket = SockRef::from(stream);
    if nodelay {
        let _ = socket.set_tcp_nodelay(true);
    }
    let _ = socket.set_tcp_keepalive(
        &TcpKeepalive::new().with_time(keepalive).with_interval(Duration::from_secs(10)),
    );
}

async fn connect(backend: SocketAddr, config: &UserspaceConfig) -> std::io::Result<TcpStream> {
    let socket = if backend.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_nodelay(true)?;
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
    if !route.allows(client.ip()) {
        tracing::trace!(%client, service = %route.service, "source not in loadBalancerSourceRanges");
        return reset(client_stream);
    }
    let n = route.backends.len();
    let mut excluded = vec![false; n];
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
                backend.counters.failed.fetch_add(1, Ordering::Relaxed);
                excluded[index] = true;
            }
        }
    }
    let Some((index, backend_stream)) = connected else {
        tracing::trace!(%client, service = %route.service, kind = ?route.kind, "no usable backend; reset");
        return reset(client_stream);
    };
    route.chosen(client, index);
    let counters = route.backends[index].counters.clone();
    counters.active.fetch_add(1, Ordering::Relaxed);
    counters.total.fetch_add(1, Ordering::Relaxed);
    tune(&client_stream, config.tcp_keepalive, true);
    tune(&backend_stream, config.tcp_keepalive, false);
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
