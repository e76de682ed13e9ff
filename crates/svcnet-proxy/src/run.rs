//! The proxy as a long-running component: kube-rs reflectors → `Model` → `plan` → data plane.
//!
//! Nothing is programmed before Services, EndpointSlices and this Node have been listed once.
//! Changes are coalesced without a fixed delay: every watch event wakes the sync loop, which
//! syncs at once unless the previous sync ended less than `min_sync_period` ago (kube-proxy's
//! `--min-sync-period`), in which case it waits out only the remainder. A failed apply is
//! retried with backoff. Metrics, `/healthz` and healthCheckNodePort servers run beside it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::dataplane::DataPlane;
use crate::dataplane::userspace::{Stats, UserspaceConfig, UserspaceDataPlane};
use crate::error::{Error, Result};
use crate::healthz::{HealthCheckServers, ProxyHealth};
use crate::metrics::Metrics;
use crate::model::{Model, NodeInfo, ObjectKey};
use crate::plan::types::{ProxyPlan, TrafficPolicy};

/// The EndpointSlice annotation with the time of the change that triggered it.
const ANNOTATION_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Which data plane programs the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataPlaneKind {
    #[default]
    Userspace,
    Nftables,
    Iptables,
}

impl FromStr for DataPlaneKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "userspace" => Ok(DataPlaneKind::Userspace),
            "nftables" => Ok(DataPlaneKind::Nftables),
            "iptables" => Ok(DataPlaneKind::Iptables),
            other => Err(Error::Other(format!(
                "unknown data plane {other:?} (want userspace, nftables or iptables)"
            ))),
        }
    }
}

impl std::fmt::Display for DataPlaneKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DataPlaneKind::Userspace => "userspace",
            DataPlaneKind::Nftables => "nftables",
            DataPlaneKind::Iptables => "iptables",
        })
    }
}

/// Settings of `run` (kube-proxy's flag names where one exists).
#[derive(Debug, Clone)]
pub struct Config {
    /// `--node-name`: endpoints on this node are local; its Node gives zone and addresses.
    pub node_name: String,
    /// `--zone`: overrides the Node's `topology.kubernetes.io/zone` label.
    pub zone: Option<String>,
    /// Node addresses; empty = the Node's InternalIP/ExternalIP addresses.
    pub node_ips: Vec<IpAddr>,
    /// `--nodeport-addresses`: CIDRs selecting the node addresses NodePorts are served on.
    pub nodeport_addresses: Vec<IpNet>,
    /// `--cluster-cidr`.
    pub cluster_cidrs: Vec<IpNet>,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// `--service-cluster-ip-range`.
    pub service_cidrs: Vec<IpNet>,
    /// `--dataplane`.
    pub dataplane: DataPlaneKind,
    /// `--metrics-bind-address` (also serves `/healthz`); `None` = no metrics server.
    pub metrics_bind_address: Option<SocketAddr>,
    /// `--healthz-bind-address`; `None` = no health server.
    pub healthz_bind_address: Option<SocketAddr>,
    /// Addresses healthCheckNodePort servers bind; empty = `0.0.0.0`.
    pub health_check_bind_addresses: Vec<IpAddr>,
    /// `--min-sync-period`: the least time between the end of one sync and the next.
    pub min_sync_period: Duration,
    /// `/healthz` turns 503 when a change waited unapplied longer than this.
    pub health_timeout: Duration,
    /// Settings of the userspace data plane.
    pub userspace: UserspaceConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_name: String::new(),
            zone: None,
            node_ips: Vec::new(),
            nodeport_addresses: Vec::new(),
            cluster_cidrs: Vec::new(),
            masquerade_all: false,
            service_cidrs: Vec::new(),
            dataplane: DataPlaneKind::Userspace,
            metrics_bind_address: Some(SocketAddr::from(([127, 0, 0, 1], 10249))),
            healthz_bind_address: Some(SocketAddr::from(([0, 0, 0, 0], 10256))),
            health_check_bind_addresses: Vec::new(),
            min_sync_period: Duration::from_secs(1),
            health_timeout: Duration::from_secs(60),
            userspace: UserspaceConfig::default(),
        }
    }
}

impl Config {
    /// This node's facts for `plan`.
    pub fn node_info(&self) -> NodeInfo {
        NodeInfo {
            name: self.node_name.clone(),
            zone: self.zone.clone(),
            addresses: self.node_ips.clone(),
            nodeport_addresses: self.nodeport_addresses.clone(),
            cluster_cidrs: self.cluster_cidrs.clone(),
            masquerade_all: self.masquerade_all,
            service_cidrs: self.service_cidrs.clone(),
        }
    }
}

/// Builds the data plane `kind`; the userspace one also returns its counters. Its listeners
/// stop when `cancel` is cancelled.
pub fn make_dataplane(
    kind: DataPlaneKind,
    userspace: UserspaceConfig,
    cancel: CancellationToken,
) -> (Box<dyn DataPlane>, Option<Arc<Stats>>) {
    match kind {
        DataPlaneKind::Userspace => {
            let dataplane = UserspaceDataPlane::new(userspace, cancel);
            let stats = dataplane.stats();
            (Box::new(dataplane), Some(stats))
        }
        DataPlaneKind::Nftables => {
            (Box::new(crate::dataplane::nftables::NftablesDataPlane::new(Default::default())), None)
        }
        DataPlaneKind::Iptables => {
            (Box::new(crate::dataplane::iptables::IptablesDataPlane::new(Default::default())), None)
        }
    }
}

/// Stores of the three watched kinds.
struct Stores {
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    nodes: Store<Node>,
}

impl Stores {
    fn model(&self) -> Model {
        let mut model = Model::default();
        for service in self.services.state() {
            model.services.insert(ObjectKey::of(service.as_ref()), service);
        }
        for slice in self.endpoint_slices.state() {
            model.endpoint_slices.insert(ObjectKey::of(slice.as_ref()), slice);
        }
        for node in self.nodes.state() {
            model
                .nodes
                .insert(ObjectKey::new("", node.metadata.name.clone().unwrap_or_default()), node);
        }
        model
    }
}

/// Watches one kind into a store; every change notifies `notify` and bumps `changes`.
fn spawn_reflector<K>(
    api: kube::Api<K>,
    config: watcher::Config,
    notify: Arc<Notify>,
    health: Arc<ProxyHealth>,
    changes: prometheus_client::metrics::counter::Counter,
    cancel: CancellationToken,
) -> Store<K>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    tokio::spawn(async move {
        tokio::pin!(stream);
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => return,
                event = stream.next() => event,
            };
            match event {
                None => return,
                Some(Ok(
                    watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone,
                )) => {
                    changes.inc();
                    health.queued();
                    notify.notify_one();
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::warn!(kind = %K::kind(&Default::default()), %error, "watch failed; retrying")
                }
            }
        }
    });
    reader
}

/// Runs the proxy until `cancel`.
pub async fn run(client: kube::Client, config: Config, cancel: CancellationToken) -> Result<()> {
    if config.node_name.is_empty() {
        return Err(Error::Other("the node name is required (--node-name)".to_string()));
    }
    let health = Arc::new(ProxyHealth::new(config.health_timeout));
    // Not a child of `cancel`: the data plane outlives it to drain (`shutdown` below).
    let (mut dataplane, stats) =
        make_dataplane(config.dataplane, config.userspace.clone(), CancellationToken::new());
    let mut metrics = Metrics::new();
    if let Some(stats) = stats {
        metrics.register_backend_stats(stats);
    }
    let metrics = Arc::new(metrics);
    if let Some(address) = config.metrics_bind_address {
        let listener = crate::healthz::bind(address).await?;
        tracing::info!(address = %listener.local_addr().unwrap_or(address), "serving metrics");
        tokio::spawn(crate::healthz::serve_healthz(
            listener,
            health.clone(),
            Some(metrics.clone()),
            cancel.child_token(),
        ));
    }
    if let Some(address) = config.healthz_bind_address {
        let listener = crate::healthz::bind(address).await?;
        tracing::info!(address = %listener.local_addr().unwrap_or(address), "serving healthz");
        tokio::spawn(crate::healthz::serve_healthz(
            listener,
            health.clone(),
            None,
            cancel.child_token(),
        ));
    }

    let notify = Arc::new(Notify::new());
    let stores = Stores {
        services: spawn_reflector(
            kube::Api::<Service>::all(client.clone()),
            watcher::Config::default().labels("!service.kubernetes.io/service-proxy-name"),
            notify.clone(),
            health.clone(),
            metrics.sync_proxy_rules_service_changes_total.clone(),
            cancel.child_token(),
        ),
        endpoint_slices: spawn_reflector(
            kube::Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(
                "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name",
            ),
            notify.clone(),
            health.clone(),
            metrics.sync_proxy_rules_endpoint_changes_total.clone(),
            cancel.child_token(),
        ),
        nodes: spawn_reflector(
            kube::Api::<Node>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={}", config.node_name)),
            notify.clone(),
            health.clone(),
            prometheus_client::metrics::counter::Counter::default(),
            cancel.child_token(),
        ),
    };
    tokio::select! {
        _ = cancel.cancelled() => {
            dataplane.shutdown().await;
            return Ok(());
        }
        synced = async {
            stores.services.wait_until_ready().await?;
            stores.endpoint_slices.wait_until_ready().await?;
            stores.nodes.wait_until_ready().await
        } => synced.map_err(|e| Error::Watch { resource: "initial list", source: Box::new(e) })?,
    }
    tracing::info!(node = %config.node_name, dataplane = dataplane.name(), "initial lists done; syncing");

    let hc_bind = if config.health_check_bind_addresses.is_empty() {
        vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
    } else {
        config.health_check_bind_addresses.clone()
    };
    let mut health_checks = HealthCheckServers::new(health.clone(), hc_bind, cancel.child_token());
    let node_info = config.node_info();
    let mut syncer = Syncer {
        applied: None,
        trigger_times: HashMap::new(),
        metrics: metrics.clone(),
        health: health.clone(),
    };
    let mut last_sync_end: Option<Instant> = None;
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut backoff = Duration::from_millis(500);
    loop {
        // Wait for a change (or a retry), then only for what min_sync_period still requires.
        if syncer.applied.is_some() {
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = notify.notified() => {}
                _ = retry => {}
            }
        }
        if let Some(end) = last_sync_end {
            let since = end.elapsed();
            if since < config.min_sync_period {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(config.min_sync_period - since) => {}
                }
            }
        }
        metrics.sync_proxy_rules_last_queued_timestamp_seconds.set(unix_seconds(SystemTime::now()));
        let model = stores.model();
        let plan = crate::plan::plan(&model, &node_info);
        match syncer.sync(dataplane.as_mut(), &model, plan).await {
            Ok(plan) => {
                health_checks.sync(&plan).await;
                retry_at = None;
                backoff = Duration::from_millis(500);
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "sync failed");
                metrics.sync_errors_total.inc();
                retry_at = Some(tokio::time::Instant::now() + backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
                if syncer.applied.is_none() {
                    // Still count the attempt so the loop waits for events or the retry.
                    syncer.applied = Some(ProxyPlan::default());
                }
            }
        }
        last_sync_end = Some(Instant::now());
    }
    dataplane.shutdown().await;
    Ok(())
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

struct Syncer {
    applied: Option<ProxyPlan>,
    /// The trigger-time annotation of each EndpointSlice at the last sync.
    trigger_times: HashMap<ObjectKey, String>,
    metrics: Arc<Metrics>,
    health: Arc<ProxyHealth>,
}

impl Syncer {
    /// Applies `plan` if it differs from the applied one; returns the plan now in force.
    async fn sync(
        &mut self,
        dataplane: &mut dyn DataPlane,
        model: &Model,
        plan: ProxyPlan,
    ) -> Result<ProxyPlan> {
        let started = Instant::now();
        // Changes that happened before this proxy started are not its programming latency.
        let first_sync = self.applied.is_none();
        let mut new_triggers = Vec::new();
        let mut trigger_times = HashMap::new();
        for (key, slice) in &model.endpoint_slices {
            if let Some(value) =
                slice.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_TRIGGER_TIME))
            {
                if !first_sync && self.trigger_times.get(key) != Some(value) {
                    new_triggers.push(value.clone());
                }
                trigger_times.insert(key.clone(), value.clone());
            }
        }
        let unchanged = self.applied.as_ref() == Some(&plan);
        if !unchanged {
            let changes =
                crate::diff::diff(self.applied.as_ref().unwrap_or(&ProxyPlan::default()), &plan);
            for warning in changes.warnings.iter().flatten() {
                tracing::warn!(warning, "plan");
            }
            dataplane.apply(&plan).await?;
            tracing::info!(
                service_ports = plan.service_ports.len(),
                changed = changes.upserted.len(),
                removed = changes.removed.len(),
                elapsed = ?started.elapsed(),
                "sync applied"
            );
        }
        let now = SystemTime::now();
        self.metrics.sync_proxy_rules_duration_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.sync_proxy_rules_last_timestamp_seconds.set(unix_seconds(now));
        self.metrics.service_ports.set(plan.service_ports.len() as i64);
        for value in new_triggers {
            if let Ok(trigger) = value.parse::<jiff::Timestamp>() {
                let latency = jiff::Timestamp::try_from(now)
                    .map(|now| now.as_millisecond() - trigger.as_millisecond());
                if let Ok(ms) = latency {
                    self.metrics
                        .network_programming_duration_seconds
                        .observe((ms.max(0) as f64) / 1000.0);
                }
            }
        }
        let mut no_local = [0i64; 2];
        for port in plan.service_ports.values() {
            if port.internal_traffic_policy == TrafficPolicy::Local
                && port.local_backends.is_empty()
            {
                no_local[0] += 1;
            }
            if port.external_traffic_policy == TrafficPolicy::Local
                && port.local_backends.is_empty()
            {
                no_local[1] += 1;
            }
        }
        for (policy, count) in [("internal", no_local[0]), ("external", no_local[1])] {
            self.metrics
                .sync_proxy_rules_no_local_endpoints_total
                .get_or_create(&vec![("traffic_policy".to_string(), policy.to_string())])
                .set(count);
        }
        self.trigger_times = trigger_times;
        self.health.updated();
        self.applied = Some(plan.clone());
        Ok(plan)
    }
}
