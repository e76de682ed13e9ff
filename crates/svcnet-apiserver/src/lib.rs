//! A Kubernetes-compatible API server for the kinds svcnet serves.
//!
//! The real `kubectl` (1.29–1.33) and kube-rs talk to it unchanged: HTTPS with a bearer token,
//! aggregated and legacy discovery, OpenAPI v3 with schemas, Table output, watch with bookmarks,
//! strategic-merge/merge/JSON patches and server-side apply. The wire behaviour follows
//! `shared/design/kubectl-api.md`, which was found by experiment.
//!
//! Map: `registry` (the table of resources) → `handler` (routing, auth, negotiation) →
//! `rest` (create/get/list/update/patch/delete) and `watch` (streams from the `cache`, which
//! follows the store). `kinds` holds per-kind defaulting and validation (via `svcnet_api`),
//! `services` the IPAM integration. Deliberately absent: RBAC, admission webhooks, CRDs,
//! protobuf responses, OpenAPI v2.

pub mod cache;
pub mod compaction;
pub mod discovery;
pub mod error;
pub mod handler;
pub mod kinds;
pub mod logs;
pub mod namespaces;
pub mod object;
pub mod openapi;
pub mod openapi_v2;
pub mod protobuf;
pub mod query;
pub mod registry;
pub mod rest;
pub mod server;
pub mod services;
pub mod table;
pub mod tls;
pub mod watch;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use error::{ApiError, Error, Result};
use tokio_util::sync::CancellationToken;

/// Everything the server needs to start. `Default` gives a loopback server on 6443 with an
/// embedded store in `./svcnet-data`.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Where to listen; port 0 picks a free port (see `ServerHandle::addr`).
    pub listen: SocketAddr,
    /// `embedded` or `etcd:http://host:port[,http://…]`.
    pub store: String,
    /// One or two CIDRs (dual-stack), primary first.
    pub service_cluster_ip_ranges: Vec<ipnet::IpNet>,
    pub service_node_port_range: RangeInclusive<u16>,
    /// Whether to publish Endpoints/EndpointSlice for the `kubernetes` Service.
    pub advertise_kubernetes_endpoints: bool,
    /// The address published for the `kubernetes` Service; default: the listen address, or
    /// 127.0.0.1 when listening on an unspecified address.
    pub advertise_address: Option<IpAddr>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How many recent events the watch cache keeps for resuming watches.
    pub watch_cache_events: usize,
    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// How often the store's history is compacted (kube-apiserver's
    /// `--etcd-compaction-interval`); zero turns compaction off.
    pub compaction_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("svcnet-data"),
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 6443),
            store: "embedded".into(),
            service_cluster_ip_ranges: vec!["10.96.0.0/12".parse().expect("constant CIDR parses")],
            service_node_port_range: 30000..=32767,
            advertise_kubernetes_endpoints: true,
            advertise_address: None,
            max_body_bytes: 3 * 1024 * 1024,
            watch_cache_events: 20_000,
            bookmark_interval: Duration::from_secs(60),
            compaction_interval: Duration::from_secs(300),
        }
    }
}

/// A running server. It stops when the `CancellationToken` given to `start` is cancelled;
/// `stopped` waits for that.
pub struct ServerHandle {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    /// `https://addr`.
    pub url: String,
    pub token: String,
    pub ca_pem: String,
    pub store: Arc<dyn svcnet_store::Store>,
    done: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// Waits until the server has shut down (after cancellation).
    pub async fn stopped(self) {
        let _ = self.done.await;
    }

    /// Same as `stopped`.
    pub async fn wait(self) {
        self.stopped().await
    }
}

/// Starts the server; it serves `/readyz` with 200 when this returns.
pub async fn start(config: Config, cancel: CancellationToken) -> Result<ServerHandle> {
    server::start(config, cancel).await
}
