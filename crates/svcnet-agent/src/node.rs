//! Node registration and heartbeats: the Node object and its Lease in `kube-node-lease`.
//!
//! On start the agent creates its Node (or updates labels, addresses and status of an existing
//! one), then renews the Lease every quarter of its duration ([`LEASE_DURATION_SECONDS`] unless
//! configured) and refreshes the Ready condition's heartbeat every [`STATUS_EVERY`], as the
//! kubelet does with `NodeLease`. Taints, images and volume fields are left out.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Namespace, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec,
    NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// How long a Lease is valid without renewal (the kubelet's `nodeLeaseDurationSeconds`).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// How often the Node's Ready heartbeat is refreshed.
pub const STATUS_EVERY: Duration = Duration::from_secs(60);
/// The namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// What the Node says about this host.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_name: String,
    pub node_ip: IpAddr,
    pub zone: Option<String>,
    /// The podCIDR to advertise; `None` keeps what the server assigned.
    pub pod_cidr: Option<String>,
    /// The port of the log endpoint (`status.daemonEndpoints.kubeletEndpoint.Port`).
    pub kubelet_port: u16,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
    /// `spec.leaseDurationSeconds` of the node Lease; it is renewed every quarter of it, as the
    /// kubelet does.
    pub lease_duration_seconds: i32,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_name: "node-1".to_string(),
            node_ip: IpAddr::from([127, 0, 0, 1]),
            zone: None,
            pod_cidr: None,
            kubelet_port: 10250,
            labels: BTreeMap::new(),
            lease_duration_seconds: LEASE_DURATION_SECONDS,
        }
    }
}

impl NodeConfig {
    /// How often the Lease is renewed: a quarter of its duration (the kubelet's fraction).
    pub fn lease_renew_interval(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.lease_duration_seconds.max(1)).unwrap_or(1) * 250)
    }
}

/// The labels the Node carries.
pub fn node_labels(config: &NodeConfig) -> BTreeMap<String, String> {
    let mut labels = config.labels.clone();
    labels.insert("kubernetes.io/hostname".to_string(), config.node_name.clone());
    labels.insert("kubernetes.io/os".to_string(), "linux".to_string());
    labels.insert(
        "kubernetes.io/arch".to_string(),
        std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
    );
    if let Some(zone) = &config.zone {
        labels.insert("topology.kubernetes.io/zone".to_string(), zone.clone());
    }
    labels
}

/// The Node status the agent reports (pure but for the clock).
pub fn node_status(config: &NodeConfig, now: &Time) -> NodeStatus {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let resources: BTreeMap<String, Quantity> = [
        ("cpu".to_string(), Quantity(cpus.to_string())),
        (
            "memory".to_string(),
            Quantity(memory_kib().map_or_else(|| "1Gi".to_string(), |kib| format!("{kib}Ki"))),
        ),
        ("pods".to_string(), Quantity("110".to_string())),
    ]
    .into();
    NodeStatus {
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".to_string(), address: config.node_ip.to_string() },
            NodeAddress { type_: "Hostname".to_string(), address: config.node_name.clone() },
        ]),
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        conditions: Some(vec![NodeCondition {
            type_: "Ready".to_string(),
            status: "True".to_string(),
            reason: Some("KubeletReady".to_string()),
            message: Some("svcnet agent is posting ready status".to_string()),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(now.clone()),
        }]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: i32::from(config.kubelet_port) }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64"),
            operating_system: "linux".to_string(),
            os_image: "svcnet".to_string(),
            kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            kubelet_version: format!("v1.33.0-svcnet-{}", env!("CARGO_PKG_VERSION")),
            kube_proxy_version: String::new(),
            container_runtime_version: "svcnet-process://0.1".to_string(),
            machine_id: std::fs::read_to_string("/etc/machine-id")
                .unwrap_or_default()
                .trim()
                .to_string(),
            system_uuid: String::new(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .unwrap_or_default()
                .trim()
                .to_string(),
            swap: None,
        }),
        ..Default::default()
    }
}

fn memory_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// Creates or updates the Node; returns it as the server has it.
pub async fn register(client: &Client, config: &NodeConfig) -> Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    let labels = node_labels(config);
    let existing =
        api.get_opt(&config.node_name).await.map_err(|e| Error::kube("reading the node", e))?;
    match existing {
        None => {
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(config.node_name.clone()),
                    labels: Some(labels),
                    ..Default::default()
                },
                spec: Some(NodeSpec {
                    pod_cidr: config.pod_cidr.clone(),
                    pod_cidrs: config.pod_cidr.clone().map(|cidr| vec![cidr]),
                    ..Default::default()
                }),
                status: None,
            };
            api.create(&PostParams::default(), &node)
                .await
                .map_err(|e| Error::kube("creating the node", e))?;
            tracing::info!(node = %config.node_name, "node registered");
        }
        Some(node) => {
            let mut patch = serde_json::json!({ "metadata": { "labels": labels } });
            let has_cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some();
            if let (false, Some(cidr)) = (has_cidr, &config.pod_cidr) {
                patch["spec"] = serde_json::json!({ "podCIDR": cidr, "podCIDRs": [cidr] });
            }
            api.patch(&config.node_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| Error::kube("updating the node", e))?;
        }
    }
    update_status(&api, config).await?;
    api.get(&config.node_name).await.map_err(|e| Error::kube("reading the node", e))
}

async fn update_status(api: &Api<Node>, config: &NodeConfig) -> Result<()> {
    let status = node_status(config, &now());
    let patch = serde_json::json!({ "status": status });
    api.patch_status(&config.node_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::kube("writing node status", e))?;
    Ok(())
}

/// Renews (or creates) the node's Lease.
pub async fn renew_lease(
    client: &Client,
    config: &NodeConfig,
    node_uid: Option<&str>,
) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let spec = LeaseSpec {
        holder_identity: Some(config.node_name.clone()),
        lease_duration_seconds: Some(config.lease_duration_seconds),
        renew_time: Some(MicroTime(jiff::Timestamp::now())),
        ..Default::default()
    };
    let patch = serde_json::json!({ "spec": spec });
    match api.patch(&config.node_name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(err) => return Err(Error::kube("renewing the node lease", err)),
    }
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            namespace: Some(LEASE_NAMESPACE.to_string()),
            owner_references: node_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".to_string(),
                    kind: "Node".to_string(),
                    name: config.node_name.clone(),
                    uid: uid.to_string(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: Some(spec),
    };
    match api.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            // The lease namespace does not exist yet: create it and try once more.
            let namespaces: Api<Namespace> = Api::all(client.clone());
            let namespace = Namespace {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAMESPACE.to_string()),
                    ..Default::default()
                },
                ..Default::default()
            };
            let _ = namespaces.create(&PostParams::default(), &namespace).await;
            api.create(&PostParams::default(), &lease)
                .await
                .map(drop)
                .map_err(|e| Error::kube("creating the node lease", e))
        }
        Err(err) => Err(Error::kube("creating the node lease", err)),
    }
}

/// Keeps the Lease and the Ready heartbeat fresh until `cancel` fires.
pub async fn heartbeat(
    client: Client,
    config: NodeConfig,
    node_uid: Option<String>,
    cancel: CancellationToken,
) {
    let api: Api<Node> = Api::all(client.clone());
    let mut lease_tick = tokio::time::interval(config.lease_renew_interval());
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = lease_tick.tick() => {
                if let Err(err) = renew_lease(&client, &config, node_uid.as_deref()).await {
                    tracing::warn!(error = %err, "lease renewal failed");
                }
            }
            _ = status_tick.tick() => {
                if let Err(err) = update_status(&api, &config).await {
                    tracing::warn!(error = %err, "node status update failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_status() {
        let config =
            NodeConfig { zone: Some("zone-a".into()), kubelet_port: 10999, ..Default::default() };
        let labels = node_labels(&config);
        assert_eq!(labels["topology.kubernetes.io/zone"], "zone-a");
        assert_eq!(labels["kubernetes.io/hostname"], "node-1");
        let status = node_status(&config, &Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(status.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port, 10999);
        assert_eq!(status.addresses.unwrap()[0].address, "127.0.0.1");
        assert_eq!(status.conditions.unwrap()[0].status, "True");
    }
}
