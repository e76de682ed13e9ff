//! The proxy's view of the cluster: the Kubernetes objects `plan` reads, plus this node's facts.
//!
//! The model is plain data (k8s-openapi types behind `Arc`, keyed by namespace/name) so that the
//! watch (`run`), offline files (`objects`) and tests all feed `plan` the same way. It does not
//! interpret anything: every Service semantic is decided in `plan`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

/// `namespace/name` of an object; cluster-scoped objects (Nodes) have an empty namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey { namespace: namespace.into(), name: name.into() }
    }

    /// The key of any Kubernetes object.
    pub fn of<K: kube::Resource>(object: &K) -> Self {
        ObjectKey { namespace: object.namespace().unwrap_or_default(), name: object.name_any() }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// Services, EndpointSlices and Nodes as the API server has them.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub services: BTreeMap<ObjectKey, Arc<Service>>,
    pub endpoint_slices: BTreeMap<ObjectKey, Arc<EndpointSlice>>,
    /// Nodes keyed with an empty namespace.
    pub nodes: BTreeMap<ObjectKey, Arc<Node>>,
}

impl Model {
    pub fn insert_service(&mut self, service: Service) {
        self.services.insert(ObjectKey::of(&service), Arc::new(service));
    }

    pub fn insert_endpoint_slice(&mut self, slice: EndpointSlice) {
        self.endpoint_slices.insert(ObjectKey::of(&slice), Arc::new(slice));
    }

    pub fn insert_node(&mut self, node: Node) {
        self.nodes.insert(ObjectKey::new("", node.name_any()), Arc::new(node));
    }

    /// The Node object named `name`, if the model has it.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(&ObjectKey::new("", name)).map(|node| node.as_ref())
    }
}

/// This node's facts that are not (or not only) in the API: what kube-proxy takes from flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// The Node's name (`--node-name`/`--hostname-override`); endpoints with this `nodeName` are local.
    pub name: String,
    /// The node's zone; `None` = take the Node's `topology.kubernetes.io/zone` label.
    pub zone: Option<String>,
    /// The node's addresses; empty = take the Node's `status.addresses` (InternalIP, ExternalIP).
    pub addresses: Vec<IpAddr>,
    /// `--nodeport-addresses`: NodePorts are served only on node addresses inside these CIDRs.
    /// Empty = every node address.
    pub nodeport_addresses: Vec<IpNet>,
    /// `--cluster-cidr`: pod ranges, for masquerading traffic from outside them.
    pub cluster_cidrs: Vec<IpNet>,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// `--service-cluster-ip-range`: the Service ranges (see `NodePlan::service_cidrs`).
    pub service_cidrs: Vec<IpNet>,
}
