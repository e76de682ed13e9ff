//! The `ProxyPlan`: what every data plane programs, as plain data.
//!
//! This is the contract between the pure heart of the proxy (`plan`, `diff`) and the data
//! planes (userspace, nftables, iptables). A data plane must not look at Kubernetes objects:
//! every Service semantic it needs is decided here (which endpoints are usable, traffic
//! policies, affinity, scheduling, what to do when nothing is usable).
//! Output is deterministic: `BTreeMap`s and sorted `Vec`s, so renders and golden files are stable.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// Everything one node's proxy programs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyPlan {
    /// One entry per (Service port, IP family); dual-stack Services appear twice.
    pub service_ports: BTreeMap<ServicePortKey, ServicePortPlan>,
    /// Node-wide settings that shape rendering.
    pub node: NodePlan,
    /// Odd input that did not stop planning (plan cannot fail).
    pub warnings: Vec<String>,
}

/// Node-wide facts a data plane needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePlan {
    pub node_name: String,
    pub zone: Option<String>,
    /// Addresses on which NodePorts are served (`--nodeport-addresses` filtered node IPs,
    /// else the node's addresses). Sorted.
    pub node_port_addresses: Vec<IpAddr>,
    /// Pod CIDRs of the cluster (`--cluster-cidr`): traffic from outside them to a ClusterIP is
    /// masqueraded, as kube-proxy's detect-local does. Empty = masquerade nothing by CIDR.
    pub cluster_cidrs: Vec<IpNet>,
    /// Masquerade every serviced connection (kube-proxy `--masquerade-all`).
    pub masquerade_all: bool,
    /// The Service ranges (`--service-cluster-ip-range`): new connections to an address in
    /// them that is no ClusterIP are dropped, as kube-proxy's nftables mode does with the
    /// ServiceCIDRs. Empty = unknown (nothing dropped). Sorted.
    pub service_cidrs: Vec<IpNet>,
}

/// Identifies a Service port in one IP family: `namespace/name:port_name/protocol/family`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortKey {
    pub namespace: String,
    pub name: String,
    /// The `spec.ports[].name` (empty for a single unnamed port).
    pub port_name: String,
    pub protocol: Protocol,
    pub family: IpFamily,
}

impl fmt::Display for ServicePortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port_name.is_empty() {
            write!(f, ":{}", self.port_name)?;
        }
        write!(f, "/{}/{}", self.protocol, self.family)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "ipv4",
            IpFamily::V6 => "ipv6",
        })
    }
}

/// Everything about one Service port in one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortPlan {
    /// The addresses and ports that lead to this Service port. Sorted.
    pub frontends: Vec<Frontend>,
    /// Usable endpoints for `Cluster` policy, after topology filtering and the KEP-1669
    /// terminating fallback (serving+terminating only when none is ready). Sorted.
    pub cluster_backends: Vec<Backend>,
    /// Usable endpoints on this node (ready local, else serving-terminating local). Sorted.
    pub local_backends: Vec<Backend>,
    /// Whether the Service has any endpoint at all, anywhere (reject vs drop, as kube-proxy).
    pub has_endpoints_anywhere: bool,
    pub internal_traffic_policy: TrafficPolicy,
    pub external_traffic_policy: TrafficPolicy,
    /// ClientIP session affinity timeout in seconds, when `sessionAffinity: ClientIP`.
    pub session_affinity_timeout: Option<u32>,
    pub scheduler: Scheduler,
    /// `spec.loadBalancerSourceRanges`; applies to LoadBalancer frontends only. Empty = all.
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// `spec.healthCheckNodePort` for `externalTrafficPolicy: Local` LoadBalancers.
    pub health_check_node_port: Option<u16>,
}

impl ServicePortPlan {
    /// The backends for traffic arriving at a frontend of this kind, honouring the traffic
    /// policy that governs it (internal for ClusterIP, external for the rest).
    pub fn backends_for(&self, kind: FrontendKind) -> &[Backend] {
        let policy = if kind == FrontendKind::ClusterIp {
            self.internal_traffic_policy
        } else {
            self.external_traffic_policy
        };
        match policy {
            TrafficPolicy::Cluster => &self.cluster_backends,
            TrafficPolicy::Local => &self.local_backends,
        }
    }

    /// What to do with a new connection to a frontend of this kind when `backends_for` is
    /// empty: reject (TCP RST / ICMP unreachable) when the Service has no endpoints at all,
    /// drop when only the Local policy leaves none (kube-proxy's behaviour).
    pub fn when_empty(&self, _kind: FrontendKind) -> EmptyAction {
        if self.has_endpoints_anywhere { EmptyAction::Drop } else { EmptyAction::Reject }
    }
}

/// One address:port that leads to a Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    pub kind: FrontendKind,
    /// The destination address; `None` for a NodePort (every address in
    /// `NodePlan::node_port_addresses` of the frontend's family).
    pub address: Option<IpAddr>,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrontendKind {
    ClusterIp,
    NodePort,
    ExternalIp,
    LoadBalancer,
}

/// One endpoint a connection may be sent to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    pub ip: IpAddr,
    pub port: u16,
    /// Relative weight (1 unless the weights annotation says otherwise); 0 is never planned.
    pub weight: u32,
    pub node_name: Option<String>,
    pub zone: Option<String>,
    /// The endpoint is on this node.
    pub is_local: bool,
    /// Ready (false only for serving-but-terminating fallback endpoints).
    pub ready: bool,
    /// `targetRef` as `namespace/name` of the pod, when known (metrics, tracing).
    pub target: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyAction {
    Reject,
    Drop,
}

/// How a new connection picks a backend. Chosen per Service by the annotation
/// `svcnet.io/scheduler` (see docs/scheduling.md); `Random` is the default, as in kube-proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Scheduler {
    #[default]
    Random,
    RoundRobin,
    LeastConnections,
    SourceHash,
    Maglev,
}
