//! svcnet-agent: the node agent, one per node.
//!
//! It registers the Node and renews its Lease ([`node`]), runs the Pods bound to the node as
//! processes ([`pods`]), serves their logs on the kubelet endpoint, and can run the node proxy
//! in-process (`Config::proxy`). It talks to the cluster only through kube-rs, so it works against svcnet's API
//! server and a real one alike. The `svcnet echo` test backend lives here too ([`echo`]).
//! Pod pulling, volumes, exec/attach and cgroups are deliberately absent.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod echo;
pub mod error;
pub mod node;
pub mod pods;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use kube::Client;
use tokio_util::sync::CancellationToken;

pub use error::{Error, Result};
pub use pods::network::PodNetwork;

/// Everything the agent needs to know; `Default` is a non-root single node on loopback.
#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    /// The node's InternalIP; the log endpoint listens there.
    pub node_ip: IpAddr,
    /// `topology.kubernetes.io/zone`.
    pub zone: Option<String>,
    /// Extra Node labels.
    pub labels: BTreeMap<String, String>,
    /// The podCIDR advertised on the Node; `None` advertises the loopback range in loopback mode
    /// and the bridge's podCIDR in bridge mode.
    pub pod_cidr: Option<String>,
    pub network: PodNetwork,
    /// Logs, PID records and namespace records.
    pub data_dir: PathBuf,
    /// The log endpoint port; 0 picks a free one (advertised on the Node either way).
    pub kubelet_port: u16,
    /// Crash-loop back-off base and cap (the kubelet uses 10 s and 5 min).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub cluster_domain: String,
    /// Cluster DNS servers for pod resolv.conf (bridge mode).
    pub dns: Vec<IpAddr>,
    /// The `PATH` pod processes get.
    pub path: String,
    /// Register the Node and renew its Lease (off when another component does it).
    pub register_node: bool,
    /// The node Lease's duration (the kubelet's `nodeLeaseDurationSeconds`); renewed every quarter.
    pub node_lease_duration_seconds: i32,
    /// Runs the node proxy in-process (`svcnet_proxy::run`) when set; `node_name` and `zone`
    /// are filled in from this config when empty.
    pub proxy: Option<svcnet_proxy::Config>,
    /// How long pods get to stop when the agent stops.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_name: "node-1".to_string(),
            node_ip: IpAddr::from([127, 0, 0, 1]),
            zone: None,
            labels: BTreeMap::new(),
            pod_cidr: None,
            network: PodNetwork::default(),
            data_dir: PathBuf::from("/var/lib/svcnet/agent"),
            kubelet_port: 10250,
            backoff_base: pods::backoff::DEFAULT_BASE,
            backoff_max: pods::backoff::DEFAULT_MAX,
            cluster_domain: "cluster.local".to_string(),
            dns: Vec::new(),
            path: pods::runner::default_path(),
            register_node: true,
            node_lease_duration_seconds: node::LEASE_DURATION_SECONDS,
            proxy: None,
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

impl Config {
    fn advertised_pod_cidr(&self) -> String {
        match (&self.pod_cidr, &self.network) {
            (Some(cidr), _) => cidr.clone(),
            (None, PodNetwork::Loopback { range }) => range.to_string(),
            (None, PodNetwork::Bridge { pod_cidr, .. }) => pod_cidr.to_string(),
        }
    }

    /// The runner settings derived from this config.
    pub fn pods_config(&self) -> pods::PodsConfig {
        pods::PodsConfig {
            node_name: self.node_name.clone(),
            host_ip: self.node_ip,
            network: self.network.clone(),
            runner: pods::runner::RunnerConfig {
                data_dir: self.data_dir.clone(),
                backoff_base: self.backoff_base,
                backoff_max: self.backoff_max,
                path: self.path.clone(),
            },
            cluster_domain: self.cluster_domain.clone(),
            dns: self.dns.clone(),
            shutdown_grace: self.shutdown_grace,
        }
    }
}

/// Runs the agent until `cancel` fires: log endpoint, Node registration and Lease, pod runner.
/// Pods are stopped before this returns.
pub async fn run(client: Client, config: Config, cancel: CancellationToken) -> Result<()> {
    let log_server = pods::logs::LogServer::bind(
        SocketAddr::new(config.node_ip, config.kubelet_port),
        config.data_dir.clone(),
    )
    .await?;
    let kubelet_port = log_server.local_addr()?.port();
    let mut tasks = tokio::task::JoinSet::new();
    let child = cancel.child_token();
    let log_cancel = child.clone();
    tasks.spawn(async move { log_server.serve(log_cancel).await });
    if config.register_node {
        let node_config = node::NodeConfig {
            node_name: config.node_name.clone(),
            node_ip: config.node_ip,
            zone: config.zone.clone(),
            pod_cidr: Some(config.advertised_pod_cidr()),
            kubelet_port,
            labels: config.labels.clone(),
            lease_duration_seconds: config.node_lease_duration_seconds,
        };
        let registered = loop {
            match node::register(&client, &node_config).await {
                Ok(node) => break node,
                Err(err) => {
                    tracing::warn!(error = %err, "node registration failed; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => {
                            child.cancel();
                            return Ok(());
                        }
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        let uid = registered.metadata.uid.clone();
        let heartbeat_client = client.clone();
        let heartbeat_cancel = child.clone();
        tasks.spawn(async move {
            node::heartbeat(heartbeat_client, node_config, uid, heartbeat_cancel).await;
            Ok(())
        });
    }
    if let Some(mut proxy) = config.proxy.clone() {
        if proxy.node_name.is_empty() {
            proxy.node_name = config.node_name.clone();
        }
        if proxy.zone.is_none() {
            proxy.zone = config.zone.clone();
        }
        let proxy_client = client.clone();
        let proxy_cancel = child.clone();
        tasks.spawn(async move {
            if let Err(err) = svcnet_proxy::run(proxy_client, proxy, proxy_cancel).await {
                tracing::error!(error = %err, "the in-process proxy stopped");
            }
            Ok(())
        });
    }
    let pods_result = pods::run(client, config.pods_config(), child.clone()).await;
    child.cancel();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Err(err)) = joined {
            tracing::warn!(error = %err, "agent task failed");
        }
    }
    pods_result
}
