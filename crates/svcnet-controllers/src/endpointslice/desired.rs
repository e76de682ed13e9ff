//! The pure heart of the EndpointSlice controller: Service + Pods + Nodes + existing slices →
//! which slices to create, update and delete, as kube-controller-manager's
//! `pkg/controller/endpointslice` reconciler (`staging/.../endpointslice/reconciler.go`) does.
//!
//! Minimal churn: existing slices keep their endpoints in place; only slices whose content
//! changes are updated, new endpoints first fill slices that are updated anyway, then one slice
//! with room for all of them, and only then new slices. Also the legacy Endpoints mirror
//! (`desired_endpoints`).
//!
//! Leaves out: the `topology-mode: Auto` hint heuristics (only `trafficDistribution:
//! PreferClose`/`PreferSameZone`, where each endpoint is hinted to its own zone) and the
//! EndpointSlice mirroring controller (selectorless Services are left alone).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointSubset, Endpoints, Node, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForZone,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// `kubernetes.io/service-name`.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// `endpointslice.kubernetes.io/managed-by`.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// The value of `LABEL_MANAGED_BY` for this controller (the same as kube-controller-manager's).
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// `service.kubernetes.io/headless`, set on the slices of headless Services.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// `topology.kubernetes.io/zone`.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// (address type, ports key): endpoints with equal keys share slices.
type GroupKey = (String, String);

/// Ports, ready addresses and not-ready addresses of one Endpoints subset.
type SubsetParts =
    (Vec<k8s_openapi::api::core::v1::EndpointPort>, Vec<EndpointAddress>, Vec<EndpointAddress>);

/// What to write to bring a Service's slices to the desired state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SliceChanges {
    /// New slices (`metadata.generateName` `<service>-`, no name).
    pub create: Vec<EndpointSlice>,
    /// Existing slices with new content (name and resourceVersion kept).
    pub update: Vec<EndpointSlice>,
    /// Existing slices to delete.
    pub delete: Vec<EndpointSlice>,
}

impl SliceChanges {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// Whether this controller manages the slice for the named Service.
pub fn is_managed_slice(slice: &EndpointSlice, service_name: &str) -> bool {
    let labels = slice.metadata.labels.as_ref();
    labels.and_then(|l| l.get(LABEL_MANAGED_BY)).map(String::as_str) == Some(CONTROLLER_NAME)
        && labels.and_then(|l| l.get(LABEL_SERVICE_NAME)).map(String::as_str) == Some(service_name)
}

/// Whether the Service gets endpoints from this controller: it has a selector and is not
/// ExternalName.
pub fn has_selector(service: &Service) -> bool {
    let Some(spec) = service.spec.as_ref() else { return false };
    spec.type_.as_deref() != Some("ExternalName")
        && spec.selector.as_ref().is_some_and(|s| !s.is_empty())
}

/// Whether the pod's labels match the Service's selector (a selectorless Service matches nothing).
pub fn selects(service: &Service, pod: &Pod) -> bool {
    if service.metadata.namespace != pod.metadata.namespace || !has_selector(service) {
        return false;
    }
    let selector = service.spec.as_ref().and_then(|s| s.selector.as_ref());
    let labels = pod.metadata.labels.as_ref();
    selector.is_some_and(|sel| sel.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)))
}

/// Whether the node's Ready condition is `Unknown` (its lease lapsed; see `nodelifecycle`).
pub fn node_unreachable(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "Unknown")
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// kube's `ShouldPodBeInEndpoints` with terminating pods included: a pod with an IP that is
/// not in a terminal phase.
fn pod_has_endpoint(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else { return false };
    let phase = status.phase.as_deref().unwrap_or("");
    if phase == "Failed" || phase == "Succeeded" {
        return false;
    }
    status.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
        || status.pod_ips.as_ref().is_some_and(|ips| !ips.is_empty())
}

fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = pod.status.as_ref() else { return Vec::new() };
    let mut out: Vec<IpAddr> =
        status.pod_ips.iter().flatten().filter_map(|p| p.ip.parse().ok()).collect();
    if out.is_empty() {
        out.extend(status.pod_ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()));
    }
    out
}

/// The address types (`IPv4`, `IPv6`) the Service's slices carry: its `ipFamilies`, else the
/// family of its cluster IP, else IPv4.
pub fn address_types(service: &Service) -> Vec<String> {
    let spec = service.spec.as_ref();
    if let Some(families) = spec.and_then(|s| s.ip_families.clone()).filter(|f| !f.is_empty()) {
        return families;
    }
    match spec.and_then(|s| s.cluster_ip.as_deref()).and_then(|ip| ip.parse::<IpAddr>().ok()) {
        Some(IpAddr::V6(_)) => vec!["IPv6".into()],
        _ => vec!["IPv4".into()],
    }
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// The endpoint ports of one pod: named target ports resolved against its containers (a port
/// whose name the pod lacks is left out, as kube does).
fn pod_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let mut out = Vec::new();
    for sp in service.spec.as_ref().and_then(|s| s.ports.as_ref()).into_iter().flatten() {
        let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
        let port = match &sp.target_port {
            None => Some(sp.port),
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                Some(if *n == 0 { sp.port } else { *n })
            }
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name)) => {
                match name.parse::<i32>() {
                    Ok(n) => Some(n),
                    Err(_) => find_named_port(pod, name, &protocol),
                }
            }
        };
        if let Some(port) = port {
            out.push(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(protocol),
                app_protocol: sp.app_protocol.clone(),
            });
        }
    }
    out
}

fn find_named_port(pod: &Pod, name: &str, protocol: &str) -> Option<i32> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol
        })
        .map(|p| p.container_port)
}

/// A grouping key for slices: the address type and the ports rendered stably.
fn ports_key(ports: &[EndpointPort]) -> String {
    let mut parts: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                "{}/{}/{}/{}",
                p.name.as_deref().unwrap_or(""),
                p.protocol.as_deref().unwrap_or(""),
                p.port.unwrap_or(0),
                p.app_protocol.as_deref().unwrap_or("")
            )
        })
        .collect();
    parts.sort();
    parts.join(",")
}

/// The identity of an endpoint within a Service: the pod it points to, else its first address.
fn endpoint_key(ep: &Endpoint) -> String {
    match &ep.target_ref {
        Some(r) => {
            format!("{}/{}", r.namespace.as_deref().unwrap_or(""), r.name.as_deref().unwrap_or(""))
        }
        None => ep.addresses.first().cloned().unwrap_or_default(),
    }
}

fn prefer_close(service: &Service) -> bool {
    matches!(
        service.spec.as_ref().and_then(|s| s.traffic_distribution.as_deref()),
        Some("PreferClose") | Some("PreferSameZone")
    )
}

/// The endpoint of `pod` for address type `address_type`, if it has an address of that family.
fn pod_endpoint(
    service: &Service,
    pod: &Pod,
    nodes: &BTreeMap<String, Node>,
    address_type: &str,
) -> Option<Endpoint> {
    let ips: Vec<String> = pod_ips(pod)
        .iter()
        .filter(|ip| family(ip) == address_type)
        .map(|ip| ip.to_string())
        .collect();
    let first = ips.into_iter().next()?;
    let spec = service.spec.as_ref();
    let publish_not_ready = spec.and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
    let node = node_name.as_ref().and_then(|n| nodes.get(n));
    let unreachable = node.is_some_and(node_unreachable);
    let serving = pod_ready(pod) && !unreachable;
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ready = publish_not_ready || (serving && !terminating);
    let zone =
        node.and_then(|n| n.metadata.labels.as_ref()).and_then(|l| l.get(LABEL_ZONE)).cloned();
    let hostname = pod.spec.as_ref().and_then(|s| {
        let same = s.subdomain.as_deref() == service.metadata.name.as_deref()
            && pod.metadata.namespace == service.metadata.namespace;
        s.hostname.clone().filter(|h| same && !h.is_empty())
    });
    let hints = if prefer_close(service) {
        zone.as_ref().map(|z| EndpointHints {
            for_zones: Some(vec![ForZone { name: z.clone() }]),
            for_nodes: None,
        })
    } else {
        None
    };
    Some(Endpoint {
        addresses: vec![first],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname,
        node_name,
        zone,
        hints,
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
        deprecated_topology: None,
    })
}

/// The labels every managed slice of the Service carries: the Service's own labels (as kube
/// copies them), the service name, managed-by and, for headless Services, the headless label.
fn slice_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.remove(LABEL_HEADLESS);
    labels.insert(LABEL_SERVICE_NAME.into(), service.metadata.name.clone().unwrap_or_default());
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    let headless = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    if headless {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    }
    labels
}

fn owner_reference(service: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: service.metadata.name.clone().unwrap_or_default(),
        uid: service.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn sorted_endpoints(eps: &[Endpoint]) -> Vec<Endpoint> {
    let mut v = eps.to_vec();
    v.sort_by_key(endpoint_key);
    v
}

/// The slices the Service should have, as changes against `existing` (the slices of any manager
/// that carry the Service's name; only this controller's are touched). Pods outside the
/// Service's namespace or not matching its selector are ignored, so callers may pass a superset.
pub fn desired_slices(
    service: &Service,
    pods: &[&Pod],
    nodes: &BTreeMap<String, Node>,
    existing: &[EndpointSlice],
    max_per_slice: usize,
) -> SliceChanges {
    let max_per_slice = max_per_slice.max(1);
    let service_name = service.metadata.name.clone().unwrap_or_default();
    let mut changes = SliceChanges::default();
    let managed: Vec<&EndpointSlice> =
        existing.iter().filter(|s| is_managed_slice(s, &service_name)).collect();
    if !has_selector(service) {
        // Selectorless and ExternalName Services: slices written by others are left alone; our
        // own leftovers (from when the Service had a selector) go.
        if service.spec.as_ref().is_some_and(|s| s.type_.as_deref() == Some("ExternalName"))
            || !managed.is_empty()
        {
            changes.delete = managed.into_iter().cloned().collect();
        }
        return changes;
    }
    let labels = slice_labels(service);
    let owner = owner_reference(service);

    // Desired endpoints grouped by (address type, ports).
    let mut desired: BTreeMap<GroupKey, (Vec<EndpointPort>, BTreeMap<String, Endpoint>)> =
        BTreeMap::new();
    let address_types = address_types(service);
    for pod in pods {
        if !selects(service, pod) || !pod_has_endpoint(pod) {
            continue;
        }
        let ports = pod_ports(service, pod);
        let key = ports_key(&ports);
        for at in &address_types {
            if let Some(ep) = pod_endpoint(service, pod, nodes, at) {
                let entry = desired
                    .entry((at.clone(), key.clone()))
                    .or_insert_with(|| (ports.clone(), BTreeMap::new()));
                entry.1.insert(endpoint_key(&ep), ep);
            }
        }
    }

    // Existing managed slices grouped the same way.
    let mut existing_groups: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in &managed {
        let key = (slice.address_type.clone(), ports_key(slice.ports.as_deref().unwrap_or(&[])));
        existing_groups.entry(key).or_default().push(slice);
    }

    let all_keys: BTreeSet<(String, String)> =
        desired.keys().chain(existing_groups.keys()).cloned().collect();
    for key in all_keys {
        let slices = existing_groups.remove(&key).unwrap_or_default();
        let (ports, mut wanted) = desired.remove(&key).unwrap_or_default();
        reconcile_group(
            &key.0,
            &ports,
            &mut wanted,
            slices,
            &labels,
            &owner,
            &service_name,
            max_per_slice,
            &mut changes,
        );
    }
    changes
}

#[allow(clippy::too_many_arguments)]
fn reconcile_group(
    address_type: &str,
    ports: &[EndpointPort],
    wanted: &mut BTreeMap<String, Endpoint>,
    slices: Vec<&EndpointSlice>,
    labels: &BTreeMap<String, String>,
    owner: &OwnerReference,
    service_name: &str,
    max_per_slice: usize,
    changes: &mut SliceChanges,
) {
    // Step 1: existing slices keep the endpoints still wanted (with fresh content) in place.
    let mut kept: Vec<(EndpointSlice, bool)> = Vec::new();
    for slice in slices {
        let mut next = slice.clone();
        let mut endpoints = Vec::new();
        for ep in &slice.endpoints {
            let key = endpoint_key(ep);
            if endpoints.len() >= max_per_slice {
                continue;
            }
            if let Some(fresh) = wanted.remove(&key) {
                endpoints.push(fresh);
            }
        }
        next.endpoints = endpoints;
        let meta_changed = next.metadata.labels.as_ref() != Some(labels)
            || next.metadata.owner_references.as_ref().is_none_or(|o| !o.contains(owner));
        if meta_changed {
            next.metadata.labels = Some(labels.clone());
            next.metadata.owner_references = Some(vec![owner.clone()]);
        }
        let changed =
            meta_changed || sorted_endpoints(&next.endpoints) != sorted_endpoints(&slice.endpoints);
        if next.endpoints.is_empty() {
            changes.delete.push(slice.clone());
        } else {
            kept.push((next, changed));
        }
    }

    // Step 2: new endpoints first fill slices that are written anyway.
    let mut remaining: Vec<Endpoint> = std::mem::take(wanted).into_values().collect();
    for (slice, changed) in kept.iter_mut() {
        if !*changed {
            continue;
        }
        while slice.endpoints.len() < max_per_slice {
            let Some(ep) = remaining.pop() else { break };
            slice.endpoints.push(ep);
        }
    }
    // Step 3: then one untouched slice that has room for all of them.
    if !remaining.is_empty()
        && let Some((slice, changed)) = kept
            .iter_mut()
            .filter(|(s, c)| !*c && s.endpoints.len() + remaining.len() <= max_per_slice)
            .max_by_key(|(s, _)| s.endpoints.len())
    {
        slice.endpoints.append(&mut remaining);
        *changed = true;
    }
    for (slice, changed) in kept {
        if changed {
            changes.update.push(slice);
        }
    }
    // Step 4: then new slices.
    for chunk in remaining.chunks(max_per_slice) {
        changes.create.push(EndpointSlice {
            metadata: ObjectMeta {
                generate_name: Some(format!("{service_name}-")),
                namespace: None,
                labels: Some(labels.clone()),
                owner_references: Some(vec![owner.clone()]),
                ..Default::default()
            },
            address_type: address_type.to_string(),
            endpoints: chunk.to_vec(),
            ports: Some(ports.to_vec()),
        });
    }
}

/// The legacy Endpoints object mirroring the Service's pods (kube's endpoints controller):
/// ready pods in `addresses`, others in `notReadyAddresses`, terminating pods left out unless
/// `publishNotReadyAddresses`. `None` for Services this controller does not manage.
pub fn desired_endpoints(
    service: &Service,
    pods: &[&Pod],
    nodes: &BTreeMap<String, Node>,
) -> Option<Endpoints> {
    if !has_selector(service) {
        return None;
    }
    let spec = service.spec.as_ref()?;
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let primary = address_types(service).into_iter().next().unwrap_or_else(|| "IPv4".into());
    let mut subsets: BTreeMap<String, SubsetParts> = BTreeMap::new();
    for pod in pods {
        if !selects(service, pod) || !pod_has_endpoint(pod) {
            continue;
        }
        let Some(ep) = pod_endpoint(service, pod, nodes, &primary) else { continue };
        let terminating = pod.metadata.deletion_timestamp.is_some();
        if terminating && !publish_not_ready {
            continue;
        }
        let ports = pod_ports(service, pod);
        let core_ports: Vec<k8s_openapi::api::core::v1::EndpointPort> = ports
            .iter()
            .map(|p| k8s_openapi::api::core::v1::EndpointPort {
                name: p.name.clone().filter(|n| !n.is_empty()),
                port: p.port.unwrap_or(0),
                protocol: p.protocol.clone(),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let address = EndpointAddress {
            ip: ep.addresses[0].clone(),
            hostname: ep.hostname.clone(),
            node_name: ep.node_name.clone(),
            target_ref: ep.target_ref.clone(),
        };
        let entry = subsets
            .entry(ports_key(&ports))
            .or_insert_with(|| (core_ports, Vec::new(), Vec::new()));
        if ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false) {
            entry.1.push(address);
        } else {
            entry.2.push(address);
        }
    }
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    if spec.cluster_ip.as_deref() == Some("None") {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    }
    let subsets: Vec<EndpointSubset> = subsets
        .into_values()
        .filter(|(ports, _, _)| !ports.is_empty())
        .map(|(ports, mut ready, mut not_ready)| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: if ready.is_empty() { None } else { Some(ready) },
                not_ready_addresses: if not_ready.is_empty() { None } else { Some(not_ready) },
                ports: Some(ports),
            }
        })
        .collect();
    Some(Endpoints {
        metadata: ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            labels: if labels.is_empty() { None } else { Some(labels) },
            ..Default::default()
        },
        subsets: if subsets.is_empty() { None } else { Some(subsets) },
    })
}

/// Whether a stored Endpoints object already says what `desired` says.
pub fn endpoints_equal(stored: &Endpoints, desired: &Endpoints) -> bool {
    stored.subsets.clone().unwrap_or_default() == desired.subsets.clone().unwrap_or_default()
        && stored.metadata.labels.clone().unwrap_or_default()
            == desired.metadata.labels.clone().unwrap_or_default()
}
