//! The pure heart: Services, EndpointSlices and Nodes → `ProxyPlan`.
//!
//! `plan` copies kube-proxy's shared front half (`pkg/proxy/serviceport.go`,
//! `endpointslicecache.go`, `topology.go`): which Services are proxied, which frontends they
//! have per IP family, which endpoints are usable for Cluster and Local traffic policy.
//! It does no I/O and cannot fail: odd input becomes `ProxyPlan::warnings`.
//! Rendering rules, binding sockets and conntrack are left to the data planes.

mod text;
pub mod types;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

use crate::model::{Model, NodeInfo, ObjectKey};
use types::*;

/// Label naming the Service an EndpointSlice belongs to.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Services (and their slices) with this label belong to another proxy; kube-proxy ignores them.
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// EndpointSlices of headless Services carry this label; kube-proxy ignores them.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// The Node label with the node's zone.
pub const LABEL_TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";
/// Per-Service scheduler (see docs/scheduling.md).
pub const ANNOTATION_SCHEDULER: &str = "svcnet.io/scheduler";
/// Per-Service endpoint weights (see docs/scheduling.md).
pub const ANNOTATION_WEIGHTS: &str = "svcnet.io/weights";
/// The legacy annotation form of `spec.loadBalancerSourceRanges`.
pub const ANNOTATION_LB_SOURCE_RANGES: &str =
    "service.beta.kubernetes.io/load-balancer-source-ranges";
/// kube-proxy's default ClientIP affinity timeout (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10800;

/// Computes what this node's proxy programs. Pure; cannot fail.
pub fn plan(model: &Model, node: &NodeInfo) -> ProxyPlan {
    let mut warnings = Vec::new();
    let node_object = model.node(&node.name);
    let zone = node.zone.clone().or_else(|| {
        node_object.and_then(|n| n.metadata.labels.as_ref()?.get(LABEL_TOPOLOGY_ZONE).cloned())
    });
    let mut addresses: Vec<IpAddr> = node.addresses.clone();
    if addresses.is_empty()
        && let Some(status_addresses) =
            node_object.and_then(|n| n.status.as_ref()?.addresses.as_ref())
    {
        for address in status_addresses {
            if address.type_ != "InternalIP" && address.type_ != "ExternalIP" {
                continue;
            }
            match address.address.parse::<IpAddr>() {
                Ok(ip) => addresses.push(ip),
                Err(_) => warnings.push(format!(
                    "node {}: ignoring unparsable address {:?}",
                    node.name, address.address
                )),
            }
        }
    }
    let mut node_port_addresses: Vec<IpAddr> = addresses
        .into_iter()
        .filter(|ip| {
            node.nodeport_addresses.is_empty()
                || node.nodeport_addresses.iter().any(|net| net.contains(ip))
        })
        .collect();
    node_port_addresses.sort();
    node_port_addresses.dedup();
    let mut cluster_cidrs = node.cluster_cidrs.clone();
    cluster_cidrs.sort();
    cluster_cidrs.dedup();
    let mut service_cidrs: Vec<IpNet> = node.service_cidrs.iter().map(IpNet::trunc).collect();
    service_cidrs.sort();
    service_cidrs.dedup();

    let mut out = ProxyPlan {
        service_ports: BTreeMap::new(),
        node: NodePlan {
            node_name: node.name.clone(),
            zone: zone.clone(),
            node_port_addresses,
            cluster_cidrs,
            masquerade_all: node.masquerade_all,
            service_cidrs,
        },
        warnings: Vec::new(),
    };

    // Index slices by the Service they belong to (in slice-name order, as BTreeMap iterates).
    let mut slices_by_service: BTreeMap<ObjectKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for (key, slice) in &model.endpoint_slices {
        let labels = slice.metadata.labels.as_ref();
        let has = |label: &str| labels.is_some_and(|l| l.contains_key(label));
        if has(LABEL_HEADLESS) || has(LABEL_SERVICE_PROXY_NAME) {
            continue;
        }
        let Some(service_name) = labels.and_then(|l| l.get(LABEL_SERVICE_NAME)) else {
            continue;
        };
        slices_by_service
            .entry(ObjectKey::new(key.namespace.clone(), service_name.clone()))
            .or_default()
            .push(slice);
    }

    let ctx = NodeCtx { name: &node.name, zone: zone.as_deref() };
    for (key, service) in &model.services {
        let slices = slices_by_service.get(key).map(Vec::as_slice).unwrap_or_default();
        plan_service(key, service, slices, &ctx, &mut out.service_ports, &mut warnings);
    }
    out.warnings = warnings;
    out
}

struct NodeCtx<'a> {
    name: &'a str,
    zone: Option<&'a str>,
}

fn family_of(ip: &IpAddr) -> IpFamily {
    if ip.is_ipv4() { IpFamily::V4 } else { IpFamily::V6 }
}

fn parse_protocol(protocol: Option<&str>) -> Option<Protocol> {
    match protocol.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

fn parse_policy(policy: Option<&str>) -> TrafficPolicy {
    match policy {
        Some("Local") => TrafficPolicy::Local,
        _ => TrafficPolicy::Cluster,
    }
}

/// Parses `svcnet.io/scheduler`.
pub fn parse_scheduler(value: &str) -> Option<Scheduler> {
    Some(match value.trim() {
        "random" => Scheduler::Random,
        "round-robin" | "rr" => Scheduler::RoundRobin,
        "least-connections" | "lc" => Scheduler::LeastConnections,
        "source-hash" | "sh" => Scheduler::SourceHash,
        "maglev" | "mh" => Scheduler::Maglev,
        _ => return None,
    })
}

/// Parses `svcnet.io/weights`: comma-separated `KEY=WEIGHT` where KEY is a pod name
/// (the endpoint's `targetRef.name`), an IP, or `IP:PORT` (`[IPv6]:PORT`).
fn parse_weights(value: &str, warn: &mut dyn FnMut(String)) -> BTreeMap<String, u32> {
    let mut weights = BTreeMap::new();
    for item in value.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        let Some((key, weight)) = item.rsplit_once('=') else {
            warn(format!("{ANNOTATION_WEIGHTS}: ignoring {item:?} (want KEY=WEIGHT)"));
            continue;
        };
        match weight.trim().parse::<u32>() {
            Ok(weight) if weight <= 10_000 => {
                weights.insert(key.trim().to_string(), weight);
            }
            _ => warn(format!(
                "{ANNOTATION_WEIGHTS}: ignoring {item:?} (weight must be an integer 0..=10000)"
            )),
        }
    }
    weights
}

/// One endpoint of a Service port as kube-proxy's endpointslicecache sees it.
struct EndpointInfo {
    ip: IpAddr,
    port: u16,
    ready: bool,
    serving: bool,
    terminating: bool,
    is_local: bool,
    node_name: Option<String>,
    zone: Option<String>,
    zone_hints: BTreeSet<String>,
    node_hints: BTreeSet<String>,
    target: Option<String>,
    target_name: Option<String>,
}

fn plan_service(
    key: &ObjectKey,
    service: &Service,
    slices: &[&EndpointSlice],
    node: &NodeCtx<'_>,
    out: &mut BTreeMap<ServicePortKey, ServicePortPlan>,
    warnings: &mut Vec<String>,
) {
    if service.metadata.labels.as_ref().is_some_and(|l| l.contains_key(LABEL_SERVICE_PROXY_NAME)) {
        return;
    }
    let Some(spec) = service.spec.as_ref() else { return };
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    if service_type == "ExternalName" {
        return;
    }
    let mut warn = |message: String| warnings.push(format!("service {key}: {message}"));
    let cluster_ip_strings: Vec<&str> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ => spec.cluster_ip.as_deref().into_iter().collect(),
    };
    if cluster_ip_strings.contains(&"None") {
        return; // Headless: DNS only.
    }
    let mut cluster_ips: BTreeMap<IpFamily, IpAddr> = BTreeMap::new();
    for ip in cluster_ip_strings {
        if ip.is_empty() {
            continue;
        }
        match ip.parse::<IpAddr>() {
            Ok(ip) => {
                cluster_ips.entry(family_of(&ip)).or_insert(ip);
            }
            Err(_) => warn(format!("ignoring unparsable clusterIP {ip:?}")),
        }
    }
    if cluster_ips.is_empty() {
        warn("no clusterIP allocated yet; skipped".to_string());
        return;
    }

    let annotations = service.metadata.annotations.as_ref();
    let annotation = |name: &str| annotations.and_then(|a| a.get(name)).map(String::as_str);
    let scheduler = match annotation(ANNOTATION_SCHEDULER) {
        None => Scheduler::Random,
        Some(value) => parse_scheduler(value).unwrap_or_else(|| {
            warn(format!("unknown {ANNOTATION_SCHEDULER} {value:?}; using random"));
            Scheduler::Random
        }),
    };
    let weights = annotation(ANNOTATION_WEIGHTS)
        .map(|value| parse_weights(value, &mut warn))
        .unwrap_or_default();

    let is_load_balancer = service_type == "LoadBalancer";
    let is_node_port = service_type == "NodePort" || is_load_balancer;
    let mut external_ips: Vec<IpAddr> = Vec::new();
    for ip in spec.external_ips.iter().flatten() {
        match ip.parse() {
            Ok(ip) => external_ips.push(ip),
            Err(_) => warn(format!("ignoring unparsable externalIP {ip:?}")),
        }
    }
    let mut load_balancer_ips: Vec<IpAddr> = Vec::new();
    if is_load_balancer {
        let ingress =
            service.status.as_ref().and_then(|s| s.load_balancer.as_ref()?.ingress.as_ref());
        for ingress in ingress.into_iter().flatten() {
            let Some(ip) = ingress.ip.as_deref().filter(|ip| !ip.is_empty()) else { continue };
            // ipMode Proxy: the load balancer proxies, so traffic must reach the node as
            // addressed to the node, not be short-circuited to the Service (KEP-1860).
            if ingress.ip_mode.as_deref() == Some("Proxy") {
                continue;
            }
            match ip.parse() {
                Ok(ip) => load_balancer_ips.push(ip),
                Err(_) => warn(format!("ignoring unparsable load balancer ingress IP {ip:?}")),
            }
        }
    }
    let externally_accessible =
        is_node_port || !external_ips.is_empty() || !load_balancer_ips.is_empty();
    let internal_traffic_policy = parse_policy(spec.internal_traffic_policy.as_deref());
    let external_traffic_policy = if externally_accessible {
        parse_policy(spec.external_traffic_policy.as_deref())
    } else {
        TrafficPolicy::Cluster
    };
    let session_affinity_timeout =
        (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref()?.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECONDS)
        });
    let mut load_balancer_source_ranges: Vec<IpNet> = Vec::new();
    if is_load_balancer {
        let ranges: Vec<String> = match &spec.load_balancer_source_ranges {
            Some(ranges) if !ranges.is_empty() => ranges.clone(),
            _ => annotation(ANNOTATION_LB_SOURCE_RANGES)
                .map(|value| value.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
        };
        for range in ranges.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
            match range.parse::<IpNet>() {
                Ok(net) => load_balancer_source_ranges.push(net.trunc()),
                Err(_) => warn(format!("ignoring unparsable loadBalancerSourceRange {range:?}")),
            }
        }
        load_balancer_source_ranges.sort();
        load_balancer_source_ranges.dedup();
    }
    let health_check_node_port = (is_load_balancer
        && external_traffic_policy == TrafficPolicy::Local)
        .then(|| {
            spec.health_check_node_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0)
        })
        .flatten();
    let traffic_distribution = spec.traffic_distribution.as_deref();

    let ports = spec.ports.as_deref().unwrap_or_default();
    for (family, cluster_ip) in &cluster_ips {
        let family = *family;
        for service_port in ports {
            let port_name = service_port.name.clone().unwrap_or_default();
            let Some(protocol) = parse_protocol(service_port.protocol.as_deref()) else {
                warn(format!(
                    "port {port_name:?}: unknown protocol {:?}; skipped",
                    service_port.protocol.as_deref().unwrap_or_default()
                ));
                continue;
            };
            let Ok(port) = u16::try_from(service_port.port) else {
                warn(format!("port {port_name:?}: invalid port {}; skipped", service_port.port));
                continue;
            };
            if port == 0 {
                warn(format!("port {port_name:?}: port 0; skipped"));
                continue;
            }
            let mut frontends = vec![Frontend {
                kind: FrontendKind::ClusterIp,
                address: Some(*cluster_ip),
                port,
                protocol,
            }];
            if is_node_port
                && let Some(node_port) =
                    service_port.node_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0)
            {
                frontends.push(Frontend {
                    kind: FrontendKind::NodePort,
                    address: None,
                    port: node_port,
                    protocol,
                });
            }
            for ip in external_ips.iter().filter(|ip| family_of(ip) == family) {
                frontends.push(Frontend {
                    kind: FrontendKind::ExternalIp,
                    address: Some(*ip),
                    port,
                    protocol,
                });
            }
            for ip in load_balancer_ips.iter().filter(|ip| family_of(ip) == family) {
                frontends.push(Frontend {
                    kind: FrontendKind::LoadBalancer,
                    address: Some(*ip),
                    port,
                    protocol,
                });
            }
            frontends.sort();
            frontends.dedup();

            let endpoints =
                collect_endpoints(key, slices, family, &port_name, protocol, node, &mut warn);
            let uses_local = internal_traffic_policy == TrafficPolicy::Local
                || external_traffic_policy == TrafficPolicy::Local;
            let uses_cluster = internal_traffic_policy == TrafficPolicy::Cluster
                || (externally_accessible && external_traffic_policy == TrafficPolicy::Cluster);
            let categorized = categorize_endpoints(
                &endpoints,
                node,
                traffic_distribution,
                uses_cluster,
                uses_local,
            );
            let to_backends = |indices: &[usize]| -> Vec<Backend> {
                let mut backends: Vec<Backend> = indices
                    .iter()
                    .map(|&i| &endpoints[i])
                    .filter_map(|ep| {
                        let weight = endpoint_weight(ep, &weights);
                        (weight > 0).then(|| Backend {
                            ip: ep.ip,
                            port: ep.port,
                            weight,
                            node_name: ep.node_name.clone(),
                            zone: ep.zone.clone(),
                            is_local: ep.is_local,
                            ready: ep.ready,
                            target: ep.target.clone(),
                        })
                    })
                    .collect();
                backends.sort();
                backends
            };
            let plan = ServicePortPlan {
                frontends,
                cluster_backends: to_backends(&categorized.cluster),
                local_backends: to_backends(&categorized.local),
                has_endpoints_anywhere: categorized.has_any,
                internal_traffic_policy,
                external_traffic_policy,
                session_affinity_timeout,
                scheduler,
                load_balancer_source_ranges: load_balancer_source_ranges.clone(),
                health_check_node_port,
            };
            let port_key = ServicePortKey {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                port_name: port_name.clone(),
                protocol,
                family,
            };
            if out.insert(port_key.clone(), plan).is_some() {
                warn(format!("duplicate port {port_key}; the last one wins"));
            }
        }
    }
}

/// Weight of an endpoint from `svcnet.io/weights`: `IP:PORT`, then IP, then pod name; else 1.
fn endpoint_weight(ep: &EndpointInfo, weights: &BTreeMap<String, u32>) -> u32 {
    if weights.is_empty() {
        return 1;
    }
    let socket = std::net::SocketAddr::new(ep.ip, ep.port).to_string();
    weights
        .get(&socket)
        .or_else(|| weights.get(&ep.ip.to_string()))
        .or_else(|| ep.target_name.as_ref().and_then(|name| weights.get(name)))
        .copied()
        .unwrap_or(1)
}

/// Gathers a Service port's endpoints from its slices like kube-proxy's endpointslicecache:
/// slices of the right address family, ports matched by name and protocol, the first address
/// of each endpoint, deduplicated by `ip:port` (a local copy wins).
fn collect_endpoints(
    key: &ObjectKey,
    slices: &[&EndpointSlice],
    family: IpFamily,
    port_name: &str,
    protocol: Protocol,
    node: &NodeCtx<'_>,
    warn: &mut dyn FnMut(String),
) -> Vec<EndpointInfo> {
    let wanted_type = match family {
        IpFamily::V4 => "IPv4",
        IpFamily::V6 => "IPv6",
    };
    let mut by_address: BTreeMap<(IpAddr, u16), EndpointInfo> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != wanted_type {
            continue;
        }
        for slice_port in slice.ports.iter().flatten() {
            if slice_port.name.as_deref().unwrap_or_default() != port_name
                || parse_protocol(slice_port.protocol.as_deref()) != Some(protocol)
            {
                continue;
            }
            let Some(port) =
                slice_port.port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0)
            else {
                continue;
            };
            for endpoint in &slice.endpoints {
                let Some(info) = endpoint_info(key, slice, endpoint, port, family, node, warn)
                else {
                    continue;
                };
                let address = (info.ip, info.port);
                if !by_address.contains_key(&address) || info.is_local {
                    by_address.insert(address, info);
                }
            }
        }
    }
    by_address.into_values().collect()
}

fn endpoint_info(
    key: &ObjectKey,
    slice: &EndpointSlice,
    endpoint: &Endpoint,
    port: u16,
    family: IpFamily,
    node: &NodeCtx<'_>,
    warn: &mut dyn FnMut(String),
) -> Option<EndpointInfo> {
    let address = endpoint.addresses.first()?;
    let ip: IpAddr = match address.parse() {
        Ok(ip) => ip,
        Err(_) => {
            warn(format!(
                "EndpointSlice {}/{}: ignoring unparsable address {address:?}",
                key.namespace,
                slice.metadata.name.as_deref().unwrap_or_default()
            ));
            return None;
        }
    };
    if family_of(&ip) != family {
        return None;
    }
    let conditions = endpoint.conditions.as_ref();
    // EndpointSlice API: nil ready/serving mean true; nil terminating means false.
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
    let hints = endpoint.hints.as_ref();
    let zone_hints = hints
        .and_then(|h| h.for_zones.as_ref())
        .map(|zones| zones.iter().map(|z| z.name.clone()).collect())
        .unwrap_or_default();
    let node_hints = hints
        .and_then(|h| h.for_nodes.as_ref())
        .map(|nodes| nodes.iter().map(|n| n.name.clone()).collect())
        .unwrap_or_default();
    let target_ref = endpoint.target_ref.as_ref();
    let target_name = target_ref.and_then(|t| t.name.clone());
    let target = target_name.as_ref().map(|name| {
        let namespace =
            target_ref.and_then(|t| t.namespace.clone()).unwrap_or_else(|| key.namespace.clone());
        format!("{namespace}/{name}")
    });
    Some(EndpointInfo {
        ip,
        port,
        ready,
        serving,
        terminating,
        is_local: endpoint.node_name.as_deref() == Some(node.name) && !node.name.is_empty(),
        node_name: endpoint.node_name.clone(),
        zone: endpoint.zone.clone(),
        zone_hints,
        node_hints,
        target,
        target_name,
    })
}

struct Categorized {
    cluster: Vec<usize>,
    local: Vec<usize>,
    has_any: bool,
}

#[derive(PartialEq, Clone, Copy)]
enum TopologyMode {
    None,
    SameNode,
    SameZone,
}

/// kube-proxy's `CategorizeEndpoints` (pkg/proxy/topology.go), returning endpoint indices.
fn categorize_endpoints(
    endpoints: &[EndpointInfo],
    node: &NodeCtx<'_>,
    traffic_distribution: Option<&str>,
    uses_cluster: bool,
    uses_local: bool,
) -> Categorized {
    let mut out = Categorized { cluster: Vec::new(), local: Vec::new(), has_any: false };
    let indices = |filter: &dyn Fn(&EndpointInfo) -> bool| -> Vec<usize> {
        endpoints.iter().enumerate().filter(|(_, ep)| filter(ep)).map(|(i, _)| i).collect()
    };
    if uses_cluster {
        let (mode, derived_zone_hints) = topology_mode(endpoints, node, traffic_distribution);
        out.cluster = indices(&|ep: &EndpointInfo| {
            ep.ready
                && match mode {
                    TopologyMode::None => true,
                    TopologyMode::SameNode => ep.node_hints.contains(node.name),
                    TopologyMode::SameZone => {
                        let zone = node.zone.unwrap_or_default();
                        if derived_zone_hints {
                            ep.zone.as_deref() == Some(zone)
                        } else {
                            ep.zone_hints.contains(zone)
                        }
                    }
                }
        });
        // KEP-1669: with no ready endpoint anywhere, use serving-and-terminating ones.
        if out.cluster.is_empty() {
            out.cluster = indices(&|ep: &EndpointInfo| ep.serving && ep.terminating);
        }
        out.has_any = !out.cluster.is_empty();
    }
    if !uses_local {
        return out;
    }
    let mut has_local_ready = false;
    let mut has_local_serving_terminating = false;
    for ep in endpoints {
        if ep.ready {
            out.has_any = true;
            has_local_ready |= ep.is_local;
        } else if ep.serving && ep.terminating {
            out.has_any = true;
            has_local_serving_terminating |= ep.is_local;
        }
    }
    if has_local_ready {
        out.local = indices(&|ep: &EndpointInfo| ep.is_local && ep.ready);
    } else if has_local_serving_terminating {
        out.local = indices(&|ep: &EndpointInfo| ep.is_local && ep.serving && ep.terminating);
    }
    out
}

/// kube-proxy's `topologyModeFromHints`: hints are used only when every ready endpoint has one
/// and one names this node (zone). As a svcnet extension, a Service with
/// `trafficDistribution: PreferClose` (or `PreferSameZone`) whose endpoints carry no zone hints
/// at all (an EndpointSlice controller that does not write hints) uses the endpoints' own
/// `zone` as if it were their hint. Returns the mode and whether zone hints were derived.
fn topology_mode(
    endpoints: &[EndpointInfo],
    node: &NodeCtx<'_>,
    traffic_distribution: Option<&str>,
) -> (TopologyMode, bool) {
    let ready = || endpoints.iter().filter(|ep| ep.ready);
    if ready().next().is_none() {
        return (TopologyMode::None, false);
    }
    if ready().all(|ep| !ep.node_hints.is_empty())
        && ready().any(|ep| ep.node_hints.contains(node.name))
    {
        return (TopologyMode::SameNode, false);
    }
    let zone = node.zone.unwrap_or_default();
    if ready().all(|ep| !ep.zone_hints.is_empty()) {
        if !zone.is_empty() && ready().any(|ep| ep.zone_hints.contains(zone)) {
            return (TopologyMode::SameZone, false);
        }
        return (TopologyMode::None, false);
    }
    let prefers_close =
        matches!(traffic_distribution, Some("PreferClose") | Some("PreferSameZone"));
    if prefers_close
        && !zone.is_empty()
        && endpoints.iter().all(|ep| ep.zone_hints.is_empty())
        && ready().all(|ep| ep.zone.is_some())
        && ready().any(|ep| ep.zone.as_deref() == Some(zone))
    {
        return (TopologyMode::SameZone, true);
    }
    (TopologyMode::None, false)
}
