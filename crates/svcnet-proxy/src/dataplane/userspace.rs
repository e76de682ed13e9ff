//! The userspace data plane: svcnet itself listens on every frontend and forwards.
//!
//! It needs no root and no kernel rules, which is what `svcnet up` uses by default (the
//! Service range sits in 127.0.0.0/8 so every frontend address is local). One listener per
//! frontend address:port and protocol (NodePorts on each `node_port_addresses` entry); each
//! holds a swappable `Route` (backends, scheduler, affinity, source ranges), so a plan change
//! rebinds only listeners that appear or disappear and swaps routes in place. Established
//! TCP connections keep their backend when it is removed (drain); UDP sessions to a removed
//! backend are dropped, as kube-proxy clears UDP conntrack. SCTP is not carried (logged).
//! Source addresses are not preserved: backends see the proxy's address. Pods (clients in the
//! cluster CIDRs) reaching an `externalTrafficPolicy: Local` NodePort or load-balancer address
//! use every endpoint, as kube-proxy short-circuits them.
//!
//! Restarts hand over instead of flushing: a successor started with `take_over` joins the
//! `SO_REUSEPORT` group of every frontend, then the predecessor's `shutdown` closes its
//! listeners (with `net.ipv4.tcp_migrate_req` their queued connections move) and drains its
//! established connections, as HAProxy's seamless reload does. A proxy that is killed, or
//! restarted without a successor running, loses its connections: they live in this process.
//!
//! Forwarding runs on the data plane's own threads (`workers`): one single-threaded runtime
//! per usable CPU, each with its own TCP listener per frontend. With more than one thread the
//! listeners share the port with SO_REUSEPORT (the kernel spreads connections); before such a
//! group is bound, a probe bind checks that nobody else holds the port, so a second proxy can
//! never silently split a port with this one (unless asked to take over). UDP frontends live
//! on the first thread.

mod splice;
mod tcp;
mod udp;
mod workers;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use crate::dataplane::DataPlane;
use crate::error::{Error, Result};
use crate::plan::types::*;
use crate::scheduler::{PickContext, Picker};

/// Settings of the userspace data plane.
#[derive(Debug, Clone)]
pub struct UserspaceConfig {
    /// A UDP flow with no packet in either direction for this long is forgotten.
    pub udp_idle_timeout: Duration,
    /// Giving up on a backend that does not answer a TCP connect.
    pub connect_timeout: Duration,
    /// Forward TCP with splice(2) (zero-copy); otherwise copy through user space.
    pub splice: bool,
    /// TCP keepalive idle time on both sides of a forwarded connection.
    pub tcp_keepalive: Duration,
    /// Data-path threads; 0 = one per CPU the process may run on (its affinity mask).
    pub workers: usize,
    /// Bind frontends that a predecessor of this user still listens on, joining its
    /// `SO_REUSEPORT` group (a restart with hand-over: start the new proxy, then shut the old
    /// one down). Without it a frontend held by anyone is refused. With
    /// `net.ipv4.tcp_migrate_req = 1` the connections still queued on the predecessor's
    /// listeners move to ours when it closes them.
    pub take_over: bool,
    /// How long `shutdown` keeps serving established connections after it stopped accepting.
    pub drain_timeout: Duration,
}

impl Default for UserspaceConfig {
    fn default() -> Self {
        UserspaceConfig {
            udp_idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            splice: true,
            tcp_keepalive: Duration::from_secs(60),
            workers: 0,
            take_over: false,
            drain_timeout: Duration::ZERO,
        }
    }
}

/// Per-backend counters, shared with metrics.
#[derive(Debug, Default)]
pub struct BackendCounters {
    /// Connections (TCP) or flows (UDP) open now.
    pub active: AtomicU64,
    /// Connections or flows ever opened.
    pub total: AtomicU64,
    /// Connect attempts that failed (refused, timed out).
    pub failed: AtomicU64,
    /// Until when (`now_ms`) new connections avoid this backend after a failed connect.
    ejected_until: AtomicU64,
}

/// How long a backend that refused or timed out a connect is avoided (passive health
/// checking, as Envoy's outlier detection and HAProxy's `observe layer4` do): the
/// EndpointSlice takes seconds to drop a dead pod, and meanwhile every connection that draws it
/// would pay a connect timeout.
const EJECTION: Duration = Duration::from_secs(5);

/// Milliseconds since the first call: a cheap clock for atomics.
fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl BackendCounters {
    fn ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// Records a failed connect: the backend is avoided for `EJECTION`.
    fn connect_failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.ejected_until.store(now_ms() + EJECTION.as_millis() as u64, Ordering::Relaxed);
    }

    /// Records a successful connect (ends an ejection early).
    fn connected(&self) {
        if self.ejected_until.load(Ordering::Relaxed) != 0 {
            self.ejected_until.store(0, Ordering::Relaxed);
        }
        self.active.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }
}

/// One row of `Stats::snapshot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStat {
    pub service: ServicePortKey,
    pub backend: SocketAddr,
    pub active: u64,
    pub total: u64,
    pub failed: u64,
}

/// Counters of every backend the data plane has used, by Service port and backend address.
#[derive(Debug, Default)]
pub struct Stats {
    counters: Mutex<BTreeMap<(ServicePortKey, SocketAddr), Arc<BackendCounters>>>,
}

impl Stats {
    fn counters(&self, service: &ServicePortKey, backend: SocketAddr) -> Arc<BackendCounters> {
        let mut counters = self.counters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        counters.entry((service.clone(), backend)).or_default().clone()
    }

    /// Forgets backends that are no longer planned and have no open connection.
    fn retain(&self, planned: &dyn Fn(&ServicePortKey, &SocketAddr) -> bool) {
        let mut counters = self.counters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        counters.retain(|(service, backend), c| {
            planned(service, backend) || c.active.load(Ordering::Relaxed) > 0
        });
    }

    /// Connections and flows open now, over every backend.
    pub fn active(&self) -> u64 {
        let counters = self.counters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        counters.values().map(|c| c.active.load(Ordering::Relaxed)).sum()
    }

    /// The counters now, sorted by Service port and backend.
    pub fn snapshot(&self) -> Vec<BackendStat> {
        let counters = self.counters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        counters
            .iter()
            .map(|((service, backend), c)| BackendStat {
                service: service.clone(),
                backend: *backend,
                active: c.active.load(Ordering::Relaxed),
                total: c.total.load(Ordering::Relaxed),
                failed: c.failed.load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// ClientIP session affinity of one Service port: client address → backend, with expiry.
#[derive(Debug, Default)]
struct AffinityTable {
    entries: Mutex<HashMap<IpAddr, (SocketAddr, Instant)>>,
}

impl AffinityTable {
    fn get(&self, client: IpAddr, timeout: Duration) -> Option<SocketAddr> {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        match entries.get(&client) {
            Some((backend, seen)) if now.duration_since(*seen) < timeout => Some(*backend),
            Some(_) => {
                entries.remove(&client);
                None
            }
            None => None,
        }
    }

    fn set(&self, client: IpAddr, backend: SocketAddr, timeout: Duration) {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if entries.len() > 65_536 {
            entries.retain(|_, (_, seen)| now.duration_since(*seen) < timeout);
        }
        entries.insert(client, (backend, now));
    }
}

/// A backend as a route holds it.
#[derive(Debug)]
struct RouteBackend {
    address: SocketAddr,
    counters: Arc<BackendCounters>,
}

/// Where connections to one frontend kind of one Service port go. Immutable; replaced whole.
#[derive(Debug)]
struct Route {
    service: ServicePortKey,
    kind: FrontendKind,
    backends: Vec<RouteBackend>,
    picker: Picker,
    affinity: Option<(Duration, Arc<AffinityTable>)>,
    /// Allowed client ranges (LoadBalancer frontends only); empty = all.
    source_ranges: Vec<IpNet>,
    /// For an external frontend with `externalTrafficPolicy: Local`: clients inside these
    /// cluster CIDRs (pods) use this route to every endpoint instead, as kube-proxy
    /// short-circuits pod traffic to NodePorts and load-balancer addresses.
    from_pods: Option<(Arc<Vec<IpNet>>, Arc<Route>)>,
}

impl Route {
    /// The route for connections from `client`.
    fn for_client(self: &Arc<Self>, client: IpAddr) -> &Arc<Route> {
        match &self.from_pods {
            Some((cidrs, route)) if cidrs.iter().any(|net| net.contains(&client)) => route,
            _ => self,
        }
    }

    fn allows(&self, client: IpAddr) -> bool {
        self.source_ranges.is_empty() || self.source_ranges.iter().any(|net| net.contains(&client))
    }

    fn index_of(&self, address: SocketAddr) -> Option<usize> {
        self.backends.iter().position(|b| b.address == address)
    }

    /// The backend for a new connection: the affinity entry if still valid, else the
    /// scheduler's choice among backends not yet `excluded`. Ejected backends (a recent failed
    /// connect) are passed over while another one is left.
    fn choose(&self, client: SocketAddr, excluded: &[bool]) -> Option<usize> {
        if let Some((timeout, table)) = &self.affinity
            && let Some(i) = table.get(client.ip(), *timeout).and_then(|a| self.index_of(a))
            && !excluded.get(i).copied().unwrap_or(false)
            && !self.backends[i].counters.ejected()
        {
            return Some(i);
        }
        let active: Vec<u64> = if self.picker.scheduler() == Scheduler::LeastConnections {
            self.backends.iter().map(|b| b.counters.active.load(Ordering::Relaxed)).collect()
        } else {
            Vec::new()
        };
        let pick = |excluded: &[bool]| {
            self.picker.pick(&PickContext { client, active: &active, excluded })
        };
        let first = pick(excluded)?;
        if !self.backends[first].counters.ejected() {
            return Some(first);
        }
        let avoid: Vec<bool> = self
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| excluded.get(i).copied().unwrap_or(false) || b.counters.ejected())
            .collect();
        pick(&avoid).or(Some(first))
    }

    /// Records a successful choice for affinity.
    fn chosen(&self, client: SocketAddr, index: usize) {
        if let (Some((timeout, table)), Some(backend)) = (&self.affinity, self.backends.get(index))
        {
            table.set(client.ip(), backend.address, *timeout);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ListenKey {
    address: SocketAddr,
    protocol: Protocol,
}

struct Listener {
    route: Arc<ArcSwap<Route>>,
    cancel: CancellationToken,
}

/// The userspace data plane. Must be created and applied inside a tokio runtime.
pub struct UserspaceDataPlane {
    config: UserspaceConfig,
    stats: Arc<Stats>,
    cancel: CancellationToken,
    listeners: HashMap<ListenKey, Listener>,
    /// Routes of the last plan, reused when their Service port did not change.
    routes: HashMap<(ServicePortKey, FrontendKind), Arc<Route>>,
    affinity: HashMap<ServicePortKey, Arc<AffinityTable>>,
    last: ProxyPlan,
    /// The data-path threads, started at the first plan that has a frontend.
    workers: Option<workers::Workers>,
}

impl UserspaceDataPlane {
    /// A data plane whose listeners stop when `cancel` is cancelled (or on drop).
    pub fn new(config: UserspaceConfig, cancel: CancellationToken) -> Self {
        UserspaceDataPlane {
            config,
            stats: Arc::default(),
            cancel,
            listeners: HashMap::new(),
            routes: HashMap::new(),
            affinity: HashMap::new(),
            last: ProxyPlan::default(),
            workers: None,
        }
    }

    /// The per-backend counters (for metrics).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// The addresses listened on now, sorted (for tests and logs).
    pub fn listening(&self) -> Vec<(SocketAddr, Protocol)> {
        let mut out: Vec<_> = self.listeners.keys().map(|k| (k.address, k.protocol)).collect();
        out.sort();
        out
    }

    fn route_for(
        &mut self,
        key: &ServicePortKey,
        port: &ServicePortPlan,
        kind: FrontendKind,
        pod_cidrs: &Arc<Vec<IpNet>>,
    ) -> Arc<Route> {
        let unchanged = self.last.service_ports.get(key) == Some(port)
            && self.last.node.cluster_cidrs.as_slice() == pod_cidrs.as_slice();
        if unchanged && let Some(route) = self.routes.get(&(key.clone(), kind)) {
            return route.clone();
        }
        let from_pods = (kind != FrontendKind::ClusterIp
            && port.external_traffic_policy == TrafficPolicy::Local
            && !pod_cidrs.is_empty())
        .then(|| {
            let everywhere = self.build_route(key, port, kind, &port.cluster_backends, None);
            (pod_cidrs.clone(), everywhere)
        });
        let route = self.build_route(key, port, kind, port.backends_for(kind), from_pods);
        self.routes.insert((key.clone(), kind), route.clone());
        route
    }

    fn build_route(
        &mut self,
        key: &ServicePortKey,
        port: &ServicePortPlan,
        kind: FrontendKind,
        backends: &[Backend],
        from_pods: Option<(Arc<Vec<IpNet>>, Arc<Route>)>,
    ) -> Arc<Route> {
        let affinity = port.session_affinity_timeout.map(|seconds| {
            let table = self.affinity.entry(key.clone()).or_default().clone();
            (Duration::from_secs(u64::from(seconds)), table)
        });
        Arc::new(Route {
            service: key.clone(),
            kind,
            backends: backends
                .iter()
                .map(|b| {
                    let address = SocketAddr::new(b.ip, b.port);
                    RouteBackend { address, counters: self.stats.counters(key, address) }
                })
                .collect(),
            picker: Picker::new(port.scheduler, backends),
            affinity,
            source_ranges: if kind == FrontendKind::LoadBalancer {
                port.load_balancer_source_ranges.clone()
            } else {
                Vec::new()
            },
            from_pods,
        })
    }

    async fn apply_plan(&mut self, plan: &ProxyPlan) -> Result<()> {
        let mut desired: HashMap<ListenKey, Arc<Route>> = HashMap::new();
        let pod_cidrs = Arc::new(plan.node.cluster_cidrs.clone());
        for (key, port) in &plan.service_ports {
            if key.protocol == Protocol::Sctp {
                tracing::debug!(service = %key, "the userspace data plane does not carry SCTP");
                continue;
            }
            for frontend in &port.frontends {
                let addresses: Vec<IpAddr> = match frontend.address {
                    Some(address) => vec![address],
                    None => plan
                        .node
                        .node_port_addresses
                        .iter()
                        .copied()
                        .filter(|a| a.is_ipv4() == (key.family == IpFamily::V4))
                        .collect(),
                };
                let route = self.route_for(key, port, frontend.kind, &pod_cidrs);
                for address in addresses {
                    let listen_key = ListenKey {
                        address: SocketAddr::new(address, frontend.port),
                        protocol: key.protocol,
                    };
                    if let Some(other) = desired.insert(listen_key, route.clone()) {
                        tracing::warn!(
                            address = %listen_key.address, first = %other.service, second = %key,
                            "two Service ports share a frontend; the second wins"
                        );
                    }
                }
            }
        }
        self.routes.retain(|(key, _), _| plan.service_ports.contains_key(key));
        self.affinity.retain(|key, _| {
            plan.service_ports.get(key).is_some_and(|p| p.session_affinity_timeout.is_some())
        });

        // Close listeners that are no longer wanted; established connections continue.
        self.listeners.retain(|key, listener| {
            let keep = desired.contains_key(key);
            if !keep {
                tracing::debug!(address = %key.address, protocol = %key.protocol, "closing listener");
                listener.cancel.cancel();
            }
            keep
        });
        let mut first_error = None;
        let mut n_bound = 0usize;
        if self.workers.is_none() && !desired.is_empty() {
            let started =
                workers::Workers::start(self.config.workers, self.cancel.child_token()).map_err(
                    |source| Error::Listen { address: "data path threads".into(), source },
                )?;
            self.workers = Some(started);
        }
        let handles = self.workers.as_ref().map(|w| w.handles().to_vec()).unwrap_or_default();
        for (key, route) in desired {
            if let Some(listener) = self.listeners.get(&key) {
                if !Arc::ptr_eq(&listener.route.load(), &route) {
                    listener.route.store(route);
                }
                continue;
            }
            let shared = Arc::new(ArcSwap::new(route));
            let cancel = self.cancel.child_token();
            let bound = match key.protocol {
                Protocol::Tcp => tcp::listen(
                    key.address,
                    shared.clone(),
                    cancel.clone(),
                    self.config.clone(),
                    &handles,
                ),
                Protocol::Udp => {
                    let Some(handle) = handles.first() else { continue };
                    let _entered = handle.enter();
                    udp::listen(key.address, shared.clone(), cancel.clone(), self.config.clone())
                }
                Protocol::Sctp => continue,
            };
            match bound {
                Ok(()) => {
                    n_bound += 1;
                    self.listeners.insert(key, Listener { route: shared, cancel });
                }
                Err(source) => {
                    tracing::warn!(address = %key.address, protocol = %key.protocol, error = %source, "cannot listen");
                    first_error.get_or_insert(Error::Listen {
                        address: format!("{}/{}", key.address, key.protocol),
                        source,
                    });
                }
            }
        }
        let planned: std::collections::HashSet<(ServicePortKey, SocketAddr)> = plan
            .service_ports
            .iter()
            .flat_map(|(key, port)| {
                port.cluster_backends
                    .iter()
                    .chain(&port.local_backends)
                    .map(move |b| (key.clone(), SocketAddr::new(b.ip, b.port)))
            })
            .collect();
        self.stats.retain(&|key, backend| planned.contains(&(key.clone(), *backend)));
        tracing::debug!(
            listeners = self.listeners.len(),
            newly_bound = n_bound,
            "userspace plan applied"
        );
        self.last = plan.clone();
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

impl Drop for UserspaceDataPlane {
    fn drop(&mut self) {
        for listener in self.listeners.values() {
            listener.cancel.cancel();
        }
    }
}

impl DataPlane for UserspaceDataPlane {
    fn name(&self) -> &'static str {
        "userspace"
    }

    /// Binds what is new, swaps routes of what changed, closes what is gone. A frontend that
    /// cannot be bound (address not local, port taken) yields `Error::Listen` after every other
    /// frontend was applied; the next `apply` tries it again.
    fn apply<'a>(&'a mut self, plan: &'a ProxyPlan) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.apply_plan(plan))
    }

    /// Closes every listener (with `SO_REUSEPORT` and `net.ipv4.tcp_migrate_req`, a successor
    /// started with `take_over` inherits their queued connections), then keeps the data-path
    /// threads serving established TCP connections until none is left or the drain timeout
    /// passes. UDP flows end with their listener.
    fn shutdown(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        for listener in self.listeners.values() {
            listener.cancel.cancel();
        }
        self.listeners.clear();
        let deadline = Instant::now() + self.config.drain_timeout;
        Box::pin(async move {
            let mut open = self.stats.active();
            if open > 0 {
                tracing::info!(connections = open, timeout = ?self.config.drain_timeout, "draining");
            }
            while open > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                open = self.stats.active();
            }
            if open > 0 {
                tracing::info!(connections = open, "drain timeout; closing what is left");
            }
            drop(self);
        })
    }

    fn cleanup(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            for listener in self.listeners.values() {
                listener.cancel.cancel();
            }
            self.listeners.clear();
            self.routes.clear();
            self.last = ProxyPlan::default();
            Ok(())
        })
    }
}

/// `count` sockets bound to `address` in one `SO_REUSEPORT` group (so that this process's
/// threads share the port, and a successor started with `take_over` can join it). Unless
/// `take_over`, a probe bind first refuses a port that anyone holds already, as a plain bind
/// would: the group must never silently take in another proxy's sockets.
fn bind_group(
    address: SocketAddr,
    kind: socket2::Type,
    count: usize,
    take_over: bool,
) -> std::io::Result<Vec<socket2::Socket>> {
    if !take_over {
        drop(bind_socket(address, kind, false)?);
    }
    (0..count.max(1)).map(|_| bind_socket(address, kind, true)).collect()
}

/// A bound (not yet listening) socket with the options a proxy wants; `reuse_port` lets
/// several of this process's threads bind the same address.
fn bind_socket(
    address: SocketAddr,
    kind: socket2::Type,
    reuse_port: bool,
) -> std::io::Result<socket2::Socket> {
    let domain = socket2::Domain::for_address(address);
    let protocol =
        if kind == socket2::Type::STREAM { socket2::Protocol::TCP } else { socket2::Protocol::UDP };
    let socket = socket2::Socket::new(domain, kind, Some(protocol))?;
    // For TCP, SO_REUSEADDR only skips TIME_WAIT; for UDP it would let anyone share the port.
    if kind == socket2::Type::STREAM {
        socket.set_reuse_address(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&address.into())?;
    Ok(socket)
}
