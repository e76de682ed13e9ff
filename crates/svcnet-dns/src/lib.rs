//! svcnet-dns: cluster DNS serving the Kubernetes DNS-Based Service Discovery specification
//! (schema 1.1.0) from a kube-rs watch, built to answer more queries per core than CoreDNS.
//!
//! The crate is split as hickory-dns's server is: transport (`server`: UDP worker threads, TCP),
//! handler (`handler`: parsing, policy, EDNS0, truncation), and data (`zone`: a pure, immutable
//! snapshot; `forward`: upstream resolvers and their cache). `watch` applies each watched change
//! to the zone (`zone::ZoneBuilder`) and swaps a snapshot in; `http` serves `/healthz`, `/ready`
//! and `/metrics`.
//! hickory-proto is used only to parse and encode messages; there is no per-query task.
//! `cache` keeps encoded replies per UDP worker (invalidated by each zone swap) and `sys` holds
//! the only unsafe code (`recvmmsg`/`sendmmsg`, `malloc_trim`).
//!
//! Entry points: [`run`] (with a `kube::Client`) and [`serve_static`] (a fixed set of objects,
//! for tests and benchmarks). See `docs/dns.md`.

pub mod cache;
pub mod error;
pub mod forward;
pub mod handler;
mod http;
pub mod metrics;
pub mod objects;
pub mod server;
pub(crate) mod sys;
mod watch;
pub mod zone;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

pub use error::{Error, Result};
pub use ipnet::IpNet;
pub use objects::Objects;
pub use zone::{Answer, PodMode, Zone, ZoneAnswer, ZoneBuilder, ZoneConfig};

use crate::forward::Forwarder;
use crate::handler::Handler;
use crate::metrics::Metrics;

/// Configuration of the DNS server.
#[derive(Clone, Debug)]
pub struct Config {
    /// UDP and TCP listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The cluster domain.
    pub cluster_domain: String,
    /// TTL of cluster records, in seconds.
    pub ttl: u32,
    /// Upstream resolvers for other names; empty means the `nameserver`s of `resolv_conf`.
    pub upstreams: Vec<SocketAddr>,
    /// Where to find upstreams when `upstreams` is empty.
    pub resolv_conf: PathBuf,
    /// Clients allowed to have other names resolved; empty means loopback plus
    /// `service_cidrs` and `pod_cidrs`. Everyone else gets REFUSED for them.
    pub allow_recursion: Vec<IpNet>,
    /// The cluster's Service ranges (default recursion allowance).
    pub service_cidrs: Vec<IpNet>,
    /// The cluster's pod ranges (default recursion allowance).
    pub pod_cidrs: Vec<IpNet>,
    /// Pod record mode.
    pub pods: PodMode,
    /// Server-side search path for pods (needs the pod watch).
    pub autopath: bool,
    /// Address of `/healthz`, `/ready` and `/metrics`; `None` serves none.
    pub metrics_address: Option<SocketAddr>,
    /// UDP worker threads (one `SO_REUSEPORT` socket each); 0 means one per CPU.
    pub udp_workers: usize,
    /// Queries a UDP worker receives (and answers) per `recvmmsg`/`sendmmsg` pair; 1 is one
    /// system call per datagram.
    pub udp_batch: usize,
    /// Keep encoded replies to repeated questions per UDP worker (invalidated with each zone
    /// snapshot); off answers every query through the full parse-lookup-encode path.
    pub answer_cache: bool,
    /// Entries in the forwarder's cache.
    pub cache_size: usize,
    /// Time to wait for one upstream.
    pub upstream_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53),
            cluster_domain: "cluster.local".to_string(),
            ttl: 5,
            upstreams: Vec::new(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            allow_recursion: Vec::new(),
            // The kubeadm defaults.
            service_cidrs: vec![
                IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 0)), 12).unwrap_or_default(),
            ],
            pod_cidrs: vec![
                IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 244, 0, 0)), 16).unwrap_or_default(),
            ],
            pods: PodMode::Insecure,
            autopath: false,
            metrics_address: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9153)),
            udp_workers: 0,
            udp_batch: 32,
            answer_cache: true,
            cache_size: 10_000,
            upstream_timeout: Duration::from_secs(2),
        }
    }
}

impl Config {
    /// The zone part of the configuration.
    pub fn zone_config(&self) -> ZoneConfig {
        ZoneConfig {
            cluster_domain: self.cluster_domain.clone(),
            ttl: self.ttl,
            pods: self.pods,
            autopath: self.autopath,
            serial: 1,
        }
    }

    /// The clients allowed to recurse, with the default filled in.
    pub fn recursion_ranges(&self) -> Vec<IpNet> {
        if !self.allow_recursion.is_empty() {
            return self.allow_recursion.clone();
        }
        let mut ranges = vec![
            IpNet::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8).unwrap_or_default(),
            IpNet::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128).unwrap_or_default(),
        ];
        ranges.extend(self.service_cidrs.iter().copied());
        ranges.extend(self.pod_cidrs.iter().copied());
        ranges
    }
}

/// Returns freed heap memory to the kernel (glibc keeps it mapped): call after dropping large
/// parsed inputs. The server calls it after each zone rebuild.
pub fn release_free_memory() {
    sys::release_free_memory();
}

/// A running server.
pub struct ServerHandle {
    /// The UDP and TCP address it answers on.
    pub addr: SocketAddr,
    /// The bound metrics address, if any.
    pub metrics_addr: Option<SocketAddr>,
    zone: Arc<ArcSwap<Zone>>,
    zone_config: ZoneConfig,
    serial: std::sync::atomic::AtomicU32,
    ready: Arc<AtomicBool>,
}

impl ServerHandle {
    /// Replaces the served zone with one built from `objects`.
    pub fn set_objects(&self, objects: &Objects) {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        let zone = objects.zone(&ZoneConfig { serial, ..self.zone_config.clone() });
        self.zone.store(Arc::new(zone));
        sys::release_free_memory();
    }

    /// Whether the initial sync is done (always true for `serve_static`).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The zone being served.
    pub fn zone(&self) -> Arc<Zone> {
        self.zone.load_full()
    }
}

fn upstreams(config: &Config, own: SocketAddr) -> Vec<SocketAddr> {
    let upstreams = if config.upstreams.is_empty() {
        match forward::read_resolv_conf(&config.resolv_conf) {
            Ok(upstreams) => upstreams,
            Err(err) => {
                tracing::warn!(path = %config.resolv_conf.display(), error = %err, "no upstream resolvers: names outside the cluster get SERVFAIL");
                Vec::new()
            }
        }
    } else {
        config.upstreams.clone()
    };
    // Never forward to ourselves.
    upstreams
        .into_iter()
        .filter(|upstream| {
            *upstream != own
                && !(own.ip().is_unspecified()
                    && upstream.port() == own.port()
                    && upstream.ip().is_loopback())
        })
        .collect()
}

async fn start(
    config: &Config,
    zone: Arc<ArcSwap<Zone>>,
    ready: Arc<AtomicBool>,
    cancel: CancellationToken,
) -> Result<(ServerHandle, Arc<Metrics>)> {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let n_udp = if config.udp_workers == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        config.udp_workers
    };
    let (udp_sockets, tcp_listener) = server::bind(config.listen, n_udp)?;
    let addr = tcp_listener
        .local_addr()
        .map_err(|source| Error::Listen { addr: config.listen, source })?;
    let upstreams = upstreams(config, addr);
    let forwarder = (!upstreams.is_empty()).then(|| {
        Arc::new(Forwarder::new(
            upstreams,
            config.upstream_timeout,
            config.cache_size,
            metrics.clone(),
        ))
    });
    let handler = Arc::new(
        Handler::new(
            zone.clone(),
            ready.clone(),
            config.recursion_ranges(),
            forwarder,
            metrics.clone(),
        )
        .with_answer_cache(config.answer_cache),
    );
    let runtime = tokio::runtime::Handle::current();
    for (worker_idx, socket) in udp_sockets.into_iter().enumerate() {
        server::spawn_udp_worker(
            socket,
            handler.clone(),
            runtime.clone(),
            cancel.clone(),
            worker_idx,
            config.udp_batch,
        )
        .map_err(|source| Error::Listen { addr, source })?;
    }
    {
        let handler = handler.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if let Err(err) = server::serve_tcp(tcp_listener, handler, cancel).await {
                tracing::error!(error = %err, "tcp listener failed");
            }
        });
    }
    let metrics_addr = match config.metrics_address {
        Some(metrics_address) => Some(
            http::serve(metrics_address, ready.clone(), Arc::new(registry), cancel.clone()).await?,
        ),
        None => None,
    };
    tracing::info!(%addr, udp_workers = n_udp, metrics = ?metrics_addr, "dns listening");
    Ok((
        ServerHandle {
            addr,
            metrics_addr,
            zone,
            zone_config: config.zone_config(),
            serial: std::sync::atomic::AtomicU32::new(1),
            ready,
        },
        metrics,
    ))
}

/// Serves a fixed set of objects (no API server) until `cancel`. Ready at once; the zone can be
/// replaced with [`ServerHandle::set_objects`].
pub async fn serve_static(
    config: Config,
    objects: &Objects,
    cancel: CancellationToken,
) -> Result<ServerHandle> {
    let zone = Arc::new(ArcSwap::from_pointee(objects.zone(&config.zone_config())));
    sys::release_free_memory();
    let ready = Arc::new(AtomicBool::new(true));
    let (handle, _metrics) = start(&config, zone, ready, cancel).await?;
    Ok(handle)
}

/// Runs cluster DNS against an API server until `cancel`. Answers SERVFAIL for cluster names
/// until the initial watch sync is done (`/ready` turns 200 then).
pub async fn run(client: kube::Client, config: Config, cancel: CancellationToken) -> Result<()> {
    let (_handle, watch) = start_watching(client, config, cancel).await?;
    watch.await.map_err(Error::Task)
}

/// Like [`run`], but returns once the sockets are bound, with the handle (for the bound address
/// and [`ServerHandle::is_ready`]) and the watch task, which ends at `cancel`.
pub async fn start_watching(
    client: kube::Client,
    config: Config,
    cancel: CancellationToken,
) -> Result<(ServerHandle, tokio::task::JoinHandle<()>)> {
    let zone_config = config.zone_config();
    let zone = Arc::new(ArcSwap::from_pointee(Zone::empty(&zone_config)));
    let ready = Arc::new(AtomicBool::new(false));
    let (handle, metrics) = start(&config, zone.clone(), ready.clone(), cancel.clone()).await?;
    let watch = tokio::spawn(watch::run(client, zone_config, zone, ready, metrics, cancel));
    Ok((handle, watch))
}
