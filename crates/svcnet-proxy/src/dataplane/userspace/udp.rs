//! UDP frontends: per-client flows, each with its own connected socket to one backend.
//!
//! A flow lives while packets pass in either direction within the idle timeout. Replies go
//! out through the frontend socket, so clients see the frontend address. A flow whose backend
//! left the route is dropped at its next packet and the packet goes to a new backend (what
//! kube-proxy achieves by clearing UDP conntrack). Packets without a usable backend are dropped.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::{BackendCounters, Route, UserspaceConfig, bind_group};

const MAX_DATAGRAM: usize = 65_536;

struct Flow {
    backend: SocketAddr,
    socket: Arc<UdpSocket>,
    /// Milliseconds since `epoch` of the last packet in either direction.
    last_seen: AtomicU64,
    cancel: CancellationToken,
}

struct Flows {
    epoch: Instant,
    by_client: Mutex<HashMap<SocketAddr, Arc<Flow>>>,
}

impl Flows {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// Binds `address` and spawns its receive loop.
pub(super) fn listen(
    address: SocketAddr,
    route: Arc<ArcSwap<Route>>,
    cancel: CancellationToken,
    config: UserspaceConfig,
) -> std::io::Result<()> {
    let take_over = config.take_over;
    let Some(socket) = bind_group(address, socket2::Type::DGRAM, 1, take_over)?.pop() else {
        return Err(std::io::Error::other("no socket bound"));
    };
    let socket = Arc::new(UdpSocket::from_std(socket.into())?);
    tracing::debug!(%address, "listening (udp)");
    tokio::spawn(receive_loop(socket, route, cancel, config));
    Ok(())
}

async fn receive_loop(
    frontend: Arc<UdpSocket>,
    route: Arc<ArcSwap<Route>>,
    cancel: CancellationToken,
    config: UserspaceConfig,
) {
    let flows = Arc::new(Flows { epoch: Instant::now(), by_client: Mutex::new(HashMap::new()) });
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            _ = cancel.cancelled() => break,
            received = frontend.recv_from(&mut buf) => received,
        };
        let (n, client) = match received {
            Ok(received) => received,
            Err(error) => {
                tracing::debug!(%error, "udp receive failed");
                continue;
            }
        };
        let route = route.load();
        let Some(flow) = flow_for(&flows, &frontend, &route, client, &cancel, &config).await else {
            continue;
        };
        flow.last_seen.store(flows.now_ms(), Ordering::Relaxed);
        if let Err(error) = flow.socket.send(&buf[..n]).await {
            tracing::trace!(%client, backend = %flow.backend, %error, "udp send to backend failed");
        }
    }
    let flows = flows.by_client.lock().unwrap_or_else(|p| p.into_inner());
    for flow in flows.values() {
        flow.cancel.cancel();
    }
}

/// The flow of `client`, created if needed; `None` drops the packet.
async fn flow_for(
    flows: &Arc<Flows>,
    frontend: &Arc<UdpSocket>,
    route: &Arc<Route>,
    client: SocketAddr,
    cancel: &CancellationToken,
    config: &UserspaceConfig,
) -> Option<Arc<Flow>> {
    let route = route.for_client(client.ip());
    if !route.allows(client.ip()) {
        return None;
    }
    let existing = flows.by_client.lock().unwrap_or_else(|p| p.into_inner()).get(&client).cloned();
    if let Some(flow) = existing {
        if route.index_of(flow.backend).is_some() && !flow.cancel.is_cancelled() {
            return Some(flow);
        }
        // The backend left: forget the flow, as kube-proxy clears stale UDP conntrack entries.
        flow.cancel.cancel();
        flows.by_client.lock().unwrap_or_else(|p| p.into_inner()).remove(&client);
    }
    let index = route.choose(client, &vec![false; route.backends.len()])?;
    let backend = &route.backends[index];
    let unspecified = if backend.address.is_ipv4() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
    } else {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
    };
    let socket = match UdpSocket::bind(unspecified).await {
        Ok(socket) => socket,
        Err(error) => {
            tracing::warn!(%error, "cannot open a udp socket");
            return None;
        }
    };
    if let Err(error) = socket.connect(backend.address).await {
        tracing::debug!(backend = %backend.address, %error, "udp connect failed");
        backend.counters.failed.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    route.chosen(client, index);
    let flow = Arc::new(Flow {
        backend: backend.address,
        socket: Arc::new(socket),
        last_seen: AtomicU64::new(flows.now_ms()),
        cancel: cancel.child_token(),
    });
    flows.by_client.lock().unwrap_or_else(|p| p.into_inner()).insert(client, flow.clone());
    backend.counters.active.fetch_add(1, Ordering::Relaxed);
    backend.counters.total.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(reply_loop(
        flows.clone(),
        frontend.clone(),
        flow.clone(),
        client,
        backend.counters.clone(),
        config.udp_idle_timeout,
    ));
    Some(flow)
}

/// Carries replies of one flow back to the client until the flow idles out or is cancelled.
async fn reply_loop(
    flows: Arc<Flows>,
    frontend: Arc<UdpSocket>,
    flow: Arc<Flow>,
    client: SocketAddr,
    counters: Arc<BackendCounters>,
    idle_timeout: Duration,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let idle_ms = idle_timeout.as_millis() as u64;
    loop {
        let since = flows.now_ms().saturating_sub(flow.last_seen.load(Ordering::Relaxed));
        if since >= idle_ms {
            break;
        }
        let wait = Duration::from_millis(idle_ms - since);
        let received = tokio::select! {
            _ = flow.cancel.cancelled() => break,
            received = tokio::time::timeout(wait, flow.socket.recv(&mut buf)) => received,
        };
        match received {
            Err(_) => continue, // Re-check: the client may have sent in the meantime.
            Ok(Ok(n)) => {
                flow.last_seen.store(flows.now_ms(), Ordering::Relaxed);
                if let Err(error) = frontend.send_to(&buf[..n], client).await {
                    tracing::trace!(%client, %error, "udp send to client failed");
                }
            }
            Ok(Err(error)) => {
                // ICMP port unreachable from the backend and the like.
                tracing::trace!(%client, backend = %flow.backend, %error, "udp receive from backend failed");
            }
        }
    }
    counters.active.fetch_sub(1, Ordering::Relaxed);
    let mut by_client = flows.by_client.lock().unwrap_or_else(|p| p.into_inner());
    if by_client.get(&client).is_some_and(|f| Arc::ptr_eq(f, &flow)) {
        by_client.remove(&client);
    }
}
