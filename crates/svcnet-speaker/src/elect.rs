//! The pure core of the speaker: which nodes may announce each LoadBalancer address, in which
//! order of preference, and what this node should do about one address's Lease right now.
//!
//! Everything here is plain data in, data out: no clock (the caller passes durations), no
//! Kubernetes client. Left out: BGP, node selectors and interface selection per pool
//! (MetalLB's `L2Advertisement`), and moving an address back to its preferred node once that
//! node returns. A held address stays where it is (as with Cilium's per-service Lease), so a
//! node coming back does not cut connections a second time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label kube-proxy and cloud providers use for a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Nodes with this label never announce LoadBalancer addresses (as for cloud LBs and MetalLB).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A node as the election sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeInfo {
    pub name: String,
    /// The node's zone (`topology.kubernetes.io/zone`); empty when unlabelled.
    pub zone: String,
}

/// The nodes that may announce each LoadBalancer address, from the cluster's objects.
///
/// An address comes from `status.loadBalancer.ingress[].ip` of a Service of type LoadBalancer
/// whose `ipMode` is `VIP` or unset (`Proxy` means something else delivers the traffic).
/// A node is eligible when it is Ready and not excluded from external load balancers; for
/// `externalTrafficPolicy: Local` it must also have a ready endpoint of the Service (as MetalLB
/// does, so traffic is never sent to a node that would drop it). When several Services share
/// an address, a node must be eligible for all of them; if none is, the union is used so the
/// address stays reachable for at least some of them.
pub fn eligible_nodes(
    services: &[&Service],
    endpoint_slices: &[&EndpointSlice],
    nodes: &[&Node],
) -> BTreeMap<IpAddr, Vec<NodeInfo>> {
    let ready_nodes: BTreeMap<String, NodeInfo> = nodes
        .iter()
        .filter(|node| node_is_ready(node) && !node_is_excluded(node))
        .filter_map(|node| {
            let name = node.metadata.name.clone()?;
            let zone = node
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(ZONE_LABEL))
                .cloned()
                .unwrap_or_default();
            Some((name.clone(), NodeInfo { name, zone }))
        })
        .collect();

    // For each address, the eligible node set of each Service using it.
    let mut per_address: BTreeMap<IpAddr, Vec<BTreeSet<String>>> = BTreeMap::new();
    for service in services {
        let addresses = announced_addresses(service);
        if addresses.is_empty() {
            continue;
        }
        let local = service.spec.as_ref().and_then(|s| s.external_traffic_policy.as_deref())
            == Some("Local");
        let names: BTreeSet<String> = if local {
            let with_endpoint = nodes_with_ready_endpoint(service, endpoint_slices);
            ready_nodes.keys().filter(|n| with_endpoint.contains(*n)).cloned().collect()
        } else {
            ready_nodes.keys().cloned().collect()
        };
        for address in addresses {
            per_address.entry(address).or_default().push(names.clone());
        }
    }

    per_address
        .into_iter()
        .map(|(address, sets)| {
            let mut all = sets.iter();
            let first = all.next().cloned().unwrap_or_default();
            let mut both: BTreeSet<String> =
                all.fold(first, |acc, set| acc.intersection(set).cloned().collect());
            if both.is_empty() {
                both = sets.iter().flatten().cloned().collect();
            }
            let infos = both.iter().filter_map(|name| ready_nodes.get(name).cloned()).collect();
            (address, infos)
        })
        .collect()
}

/// The addresses of one Service that a speaker announces (see `eligible_nodes`).
pub fn announced_addresses(service: &Service) -> Vec<IpAddr> {
    let is_lb = service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
    if !is_lb {
        return Vec::new();
    }
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    ingress
        .into_iter()
        .flatten()
        .filter(|i| matches!(i.ip_mode.as_deref(), None | Some("VIP")))
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

fn node_is_ready(node: &Node) -> bool {
    let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.into_iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

fn node_is_excluded(node: &Node) -> bool {
    node.metadata.labels.as_ref().is_some_and(|l| l.contains_key(EXCLUDE_LABEL))
}

/// Names of nodes with a ready endpoint of `service` (an unset `ready` counts as ready, as the
/// EndpointSlice API says).
fn nodes_with_ready_endpoint(
    service: &Service,
    endpoint_slices: &[&EndpointSlice],
) -> BTreeSet<String> {
    let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
    let name = service.metadata.name.as_deref().unwrap_or_default();
    endpoint_slices
        .iter()
        .filter(|slice| slice.metadata.namespace.as_deref().unwrap_or("default") == namespace)
        .filter(|slice| {
            slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(String::as_str)
                == Some(name)
        })
        .flat_map(|slice| slice.endpoints.iter())
        .filter(|endpoint| endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|endpoint| endpoint.node_name.clone())
        .collect()
}

/// A stable 64-bit hash (FNV-1a with a splitmix64 finaliser so that similar names such as
/// `node-1` and `node-2` still spread). `std`'s hasher is not stable across releases, and
/// every node must compute the same order.
fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The order in which nodes should hold `address`: rendezvous (highest random weight) hashing
/// of node and address, so addresses spread over nodes and removing a node moves only its
/// own addresses; then zones interleave, so the first fallback is the best node in another
/// zone (a zone failure moves the address out of the zone at once).
pub fn ranked(address: IpAddr, eligible: &[NodeInfo]) -> Vec<String> {
    let mut scored: Vec<(u64, &NodeInfo)> = eligible
        .iter()
        .map(|node| (stable_hash(format!("{}/{}", node.name, address).as_bytes()), node))
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
    // Zones in the order of their best node; each zone's nodes in score order.
    let mut zones: Vec<(&str, Vec<&str>)> = Vec::new();
    for (_, node) in &scored {
        match zones.iter_mut().find(|(zone, _)| *zone == node.zone) {
            Some((_, members)) => members.push(&node.name),
            None => zones.push((&node.zone, vec![&node.name])),
        }
    }
    let longest = zones.iter().map(|(_, members)| members.len()).max().unwrap_or(0);
    let mut order = Vec::with_capacity(scored.len());
    for round in 0..longest {
        for (_, members) in &zones {
            if let Some(name) = members.get(round) {
                order.push((*name).to_string());
            }
        }
    }
    order
}

/// What this node knows about one address's Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseView {
    /// Held by `holder`, renewed within its duration (as observed by this node).
    Held { holder: String },
    /// The Lease is absent, released (no holder) or expired; `holder` is the last holder if
    /// any, and `free_for` how long it has been free as observed by this node.
    Free { last_holder: Option<String>, free_for: Duration },
}

/// What to do about one address now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing: another node holds it, or it is not this node's turn yet.
    Wait,
    /// Take the free Lease (create it, or update it with its resourceVersion).
    Acquire,
    /// Renew this node's Lease.
    Renew,
    /// Give up this node's Lease (this node is no longer eligible).
    Release,
}

/// Decides for node `me` and one address, given the nodes `ranked` for it and its Lease.
///
/// A free Lease goes first to the most preferred eligible node, ignoring the last holder (it
/// stopped renewing, so it is presumed dead); the node at position `r` of the remaining order
/// takes it once it has been free for `r × grace`. So a preferred node that is Ready but has no
/// running speaker delays a takeover by one `grace` per position, never forever.
pub fn decide(me: &str, ranked: &[String], lease: &LeaseView, grace: Duration) -> Action {
    let eligible = ranked.iter().any(|n| n == me);
    match lease {
        LeaseView::Held { holder } if holder == me => {
            if eligible {
                Action::Renew
            } else {
                Action::Release
            }
        }
        LeaseView::Held { .. } => Action::Wait,
        LeaseView::Free { last_holder, free_for } => {
            let position = ranked
                .iter()
                .filter(|n| last_holder.as_deref() != Some(n.as_str()) || n.as_str() == me)
                .position(|n| n == me);
            match position {
                Some(position)
                    if *free_for
                        >= grace.saturating_mul(u32::try_from(position).unwrap_or(u32::MAX)) =>
                {
                    Action::Acquire
                }
                _ => Action::Wait,
            }
        }
    }
}

#[cfg(test)]
mod tests;
