//! The lab's conversations with its own API server: readiness, the LoadBalancer pools, the demo
//! workload, and what `status` and `check` need to know (Services, pods, announcing nodes).
//!
//! Everything goes through the Kubernetes API with a `kube::Client` built from the host's
//! kubeconfig (the loopback forward). Waits poll a condition against a deadline; nothing here
//! sleeps as synchronisation. Left out: any knowledge of how the components work inside.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Service};
use kube::api::{Api, ListParams, PostParams};
use serde::Serialize;

use crate::topology::Topology;
use crate::{Error, Result};

/// The demo manifests `lab up` applies.
pub const DEMO_YAML: &str = include_str!("demo.yaml");
/// The demo's namespace and the echo pods' label.
pub const DEMO_NAMESPACE: &str = "demo";
pub const ECHO_SELECTOR: &str = "app=echo";
/// The zone label of Nodes.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// How often a wait re-reads its condition.
const POLL: Duration = Duration::from_millis(200);

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Api { what, source }
}

/// A client for the lab's API server from a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> Result<kube::Client> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| Error::Internal(format!("cannot read {}: {e}", kubeconfig.display())))?;
    let config =
        kube::Config::from_custom_kubeconfig(config, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Internal(format!("cannot load {}: {e}", kubeconfig.display())))?;
    kube::Client::try_from(config).map_err(api_err("cannot create the API client"))
}

/// Polls `condition` until it returns `Some`, or fails naming `what` (with the last
/// observation) after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut condition: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match condition().await {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout(format!("{what} within {timeout:?} (last seen: {last})")));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `GET /readyz` answers `ok` (through the kubeconfig's address, so it proves
/// the forward, the certificate and the token too).
pub async fn wait_readyz(client: &kube::Client, timeout: Duration) -> Result<()> {
    wait_for(timeout, "the API server did not answer /readyz", || {
        let client = client.clone();
        async move {
            let request =
                http::Request::get("/readyz").body(Vec::new()).map_err(|e| e.to_string())?;
            match tokio::time::timeout(Duration::from_secs(2), client.request_text(request)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err("no answer within 2s".to_string()),
            }
        }
    })
    .await
}

fn node_is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until every Node in `names` exists and is Ready.
pub async fn wait_nodes_ready(
    client: &kube::Client,
    names: &[String],
    timeout: Duration,
) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    wait_for(timeout, "the lab's nodes did not become Ready", || {
        let nodes = nodes.clone();
        async move {
            let list = nodes.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
            let ready: Vec<String> = list
                .items
                .iter()
                .filter(|n| node_is_ready(n))
                .filter_map(|n| n.metadata.name.clone())
                .collect();
            if names.iter().all(|n| ready.contains(n)) {
                Ok(())
            } else {
                Err(format!("ready nodes: {ready:?}"))
            }
        }
    })
    .await
}

/// The `pools.yaml` of ConfigMap `kube-system/svcnet-lb-pools` (docs/loadbalancer.md).
pub fn lb_pools_yaml(topology: &Topology) -> String {
    format!(
        "- name: lab-internal\n  scope: internal\n  cidrs: [\"{}\"]\n- name: lab-external\n  scope: external\n  cidrs: [\"{}\"]\n",
        topology.internal_lb, topology.external_lb
    )
}

/// Creates `object` unless it exists (AlreadyExists is success: `lab up` may be re-run on a
/// half-built cluster).
async fn create_if_absent<K>(api: &Api<K>, object: &K, what: &str) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(Error::Api { what: format!("cannot create {what}"), source }),
    }
}

/// Creates the LoadBalancer pools: internal = a VPC range, external = the routed range.
pub async fn ensure_lb_pools(client: &kube::Client, topology: &Topology) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "svcnet-lb-pools", "namespace": "kube-system"},
        "data": {"pools.yaml": lb_pools_yaml(topology)},
    }))
    .map_err(|e| Error::Internal(e.to_string()))?;
    create_if_absent(&api, &cm, "ConfigMap kube-system/svcnet-lb-pools").await
}

/// The `kube-dns` Service address: the tenth of the Service range, as in Kubernetes.
pub fn dns_service_ip(topology: &Topology) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::from(topology.service_cidr.network()) + 10)
}

/// `kube-system/kube-dns`: a selectorless Service at the tenth address with an EndpointSlice
/// pointing at `svcnet dns` on the control plane (`dns`), as `svcnet up` does.
pub async fn ensure_kube_dns(
    client: &kube::Client,
    topology: &Topology,
    dns: std::net::Ipv4Addr,
) -> Result<()> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    fn to_object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<K> {
        serde_json::from_value(value).map_err(|e| Error::Internal(e.to_string()))
    }
    let svc: Service = to_object(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
        "spec": {"clusterIP": dns_service_ip(topology).to_string(), "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]},
    }))?;
    create_if_absent(
        &Api::<Service>::namespaced(client.clone(), "kube-system"),
        &svc,
        "Service kube-system/kube-dns",
    )
    .await?;
    let slice: EndpointSlice = to_object(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kube-dns-lab", "namespace": "kube-system",
                     "labels": {"kubernetes.io/service-name": "kube-dns", "endpointslice.kubernetes.io/managed-by": "svcnet-lab"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [dns.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
    }))?;
    create_if_absent(
        &Api::<EndpointSlice>::namespaced(client.clone(), "kube-system"),
        &slice,
        "EndpointSlice kube-system/kube-dns-lab",
    )
    .await
}

/// The demo manifests, parsed (pure; a unit test pins that the embedded file parses).
pub fn demo_objects() -> Result<Vec<serde_json::Value>> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(DEMO_YAML)
        .map_err(|e| Error::Internal(format!("demo.yaml: {e}")))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn typed<K: serde::de::DeserializeOwned>(value: &serde_json::Value) -> Result<K> {
    serde_json::from_value(value.clone()).map_err(|e| Error::Internal(format!("demo.yaml: {e}")))
}

/// Applies the demo: namespace `demo`, Deployment `echo` and one Service of each type.
pub async fn apply_demo(client: &kube::Client) -> Result<()> {
    for doc in demo_objects()? {
        let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_string();
        let name =
            doc.pointer("/metadata/name").and_then(|n| n.as_str()).unwrap_or_default().to_string();
        let namespace =
            doc.pointer("/metadata/namespace").and_then(|n| n.as_str()).unwrap_or(DEMO_NAMESPACE);
        let what = format!("{kind} {namespace}/{name}");
        match kind.as_str() {
            "Namespace" => {
                create_if_absent(&Api::<Namespace>::all(client.clone()), &typed(&doc)?, &what)
                    .await?
            }
            "Deployment" => {
                create_if_absent(
                    &Api::<Deployment>::namespaced(client.clone(), namespace),
                    &typed(&doc)?,
                    &what,
                )
                .await?
            }
            "Service" => {
                create_if_absent(
                    &Api::<Service>::namespaced(client.clone(), namespace),
                    &typed(&doc)?,
                    &what,
                )
                .await?
            }
            other => return Err(Error::Internal(format!("demo.yaml: unexpected kind {other:?}"))),
        }
    }
    Ok(())
}

/// One pod of the demo, as `check` and `exec` need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: Option<String>,
    pub ip: Option<String>,
    pub ready: bool,
}

fn pod_info(pod: &Pod) -> PodInfo {
    let status = pod.status.as_ref();
    PodInfo {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()),
        ip: status.and_then(|s| s.pod_ip.clone()).filter(|ip| !ip.is_empty()),
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
    }
}

/// Pods in `namespace` (all namespaces when `None`) matching `selector`.
pub async fn pods(
    client: &kube::Client,
    namespace: Option<&str>,
    selector: Option<&str>,
) -> Result<Vec<PodInfo>> {
    let api: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut params = ListParams::default();
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    let list = api.list(&params).await.map_err(api_err("cannot list pods"))?;
    Ok(list.items.iter().map(pod_info).collect())
}

/// The network namespace the node agent made for a pod: `svcnet-<node>-<first 8 alphanumerics
/// of the uid>` (mirrors `svcnet_agent::pods::network::netns_name`).
pub fn pod_netns(node: &str, uid: &str) -> String {
    let prefix: String = uid.chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
    format!("svcnet-{node}-{prefix}")
}

/// The lab's Services as `status` shows them, with the node announcing each LB address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceInfo {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub cluster_ip: Option<String>,
    pub load_balancer_ip: Option<String>,
    pub node_ports: Vec<i32>,
    pub ports: Vec<i32>,
    /// The holder of the speaker's Lease for the LB address.
    pub announced_by: Option<String>,
}

/// The speaker's Lease name for an LB address (mirrors `svcnet_speaker::lease::lease_name`).
pub fn lb_lease_name(address: &str) -> String {
    format!("svcnet-lb-{}", address.replace(['.', ':'], "-"))
}

/// Every Service (all namespaces), with the announcing node of each LB address.
pub async fn services(client: &kube::Client) -> Result<Vec<ServiceInfo>> {
    let list = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(api_err("cannot list Services"))?;
    let leases: BTreeMap<String, String> =
        match Api::<Lease>::namespaced(client.clone(), "kube-system")
            .list(&ListParams::default())
            .await
        {
            Ok(leases) => leases
                .items
                .into_iter()
                .filter_map(|l| {
                    Some((
                        l.metadata.name.clone()?,
                        l.spec?.holder_identity.filter(|h| !h.is_empty())?,
                    ))
                })
                .collect(),
            Err(_) => BTreeMap::new(),
        };
    let mut out: Vec<ServiceInfo> = list
        .items
        .iter()
        .map(|svc| {
            let spec = svc.spec.clone().unwrap_or_default();
            let load_balancer_ip = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .and_then(|ingress| ingress.iter().find_map(|i| i.ip.clone()));
            let announced_by =
                load_balancer_ip.as_ref().and_then(|ip| leases.get(&lb_lease_name(ip)).cloned());
            let ports = spec.ports.clone().unwrap_or_default();
            ServiceInfo {
                namespace: svc.metadata.namespace.clone().unwrap_or_default(),
                name: svc.metadata.name.clone().unwrap_or_default(),
                type_: spec.type_.clone().unwrap_or_else(|| "ClusterIP".into()),
                cluster_ip: spec.cluster_ip.clone().filter(|ip| !ip.is_empty()),
                load_balancer_ip,
                node_ports: ports.iter().filter_map(|p| p.node_port).collect(),
                ports: ports.iter().map(|p| p.port).collect(),
                announced_by,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(out)
}

/// Waits until the demo is serving: the echo pods are Ready on nodes of every zone in
/// `zones`, and both LoadBalancer Services have an address.
pub async fn wait_demo(
    client: &kube::Client,
    topology: &Topology,
    timeout: Duration,
) -> Result<()> {
    let zone_of: BTreeMap<String, String> =
        topology.nodes().filter_map(|n| Some((n.name.clone(), n.zone.clone()?))).collect();
    let want_zones: std::collections::BTreeSet<String> = zone_of.values().cloned().collect();
    wait_for(timeout, "the demo did not become ready", || {
        let (client, zone_of, want_zones) = (client.clone(), zone_of.clone(), want_zones.clone());
        async move {
            let pods = pods(&client, Some(DEMO_NAMESPACE), Some(ECHO_SELECTOR))
                .await
                .map_err(|e| e.to_string())?;
            let ready: Vec<&PodInfo> = pods.iter().filter(|p| p.ready).collect();
            let zones: std::collections::BTreeSet<String> = ready
                .iter()
                .filter_map(|p| p.node.as_ref().and_then(|n| zone_of.get(n)).cloned())
                .collect();
            if ready.len() < 4 || zones != want_zones {
                return Err(format!("{} ready echo pods in zones {zones:?}", ready.len()));
            }
            let services = services(&client).await.map_err(|e| e.to_string())?;
            let pending: Vec<&str> = services
                .iter()
                .filter(|s| {
                    s.namespace == DEMO_NAMESPACE
                        && s.type_ == "LoadBalancer"
                        && s.load_balancer_ip.is_none()
                })
                .map(|s| s.name.as_str())
                .collect();
            if pending.is_empty() {
                Ok(())
            } else {
                Err(format!("LoadBalancer Services without an address: {pending:?}"))
            }
        }
    })
    .await
}

/// The namespace of a pod: the agent's name for it if that namespace exists, else the lab
/// namespace whose `eth0` carries the pod's IP.
pub async fn find_pod_netns(pod: &PodInfo) -> Result<String> {
    let existing = crate::net::all_namespaces().await?;
    if let Some(node) = &pod.node {
        let name = pod_netns(node, &pod.uid);
        if existing.contains(&name) {
            return Ok(name);
        }
    }
    if let Some(ip) = &pod.ip {
        for netns in existing.iter().filter(|ns| ns.starts_with("svcnet-")) {
            let cmd = crate::net::Cmd {
                argv: vec![
                    "ip".into(),
                    "-n".into(),
                    netns.clone(),
                    "-o".into(),
                    "addr".into(),
                    "show".into(),
                ],
                stdin: None,
            };
            if let Ok(out) = crate::net::run(&cmd).await
                && out.split_whitespace().any(|word| word.split('/').next() == Some(ip.as_str()))
                && !netns.starts_with(crate::topology::NETNS_PREFIX)
            {
                return Ok(netns.clone());
            }
        }
    }
    Err(Error::UnknownHost(format!(
        "pod/{}.{} (no network namespace found)",
        pod.name, pod.namespace
    )))
}

/// Looks a pod up by name (`NAME` or `NAME.NAMESPACE`, default namespace `demo`).
pub async fn find_pod(client: &kube::Client, spec: &str) -> Result<PodInfo> {
    let (name, namespace) = spec.split_once('.').unwrap_or((spec, DEMO_NAMESPACE));
    let pod = Api::<Pod>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(api_err(format!("cannot get pod {namespace}/{name}")))?;
    Ok(pod_info(&pod))
}

/// What `lab check` probes, from the lab's state and the API: sources on healthy hosts, the
/// demo Services' addresses, and the zone of every demo pod.
pub async fn check_plan(
    client: &kube::Client,
    state: &crate::LabState,
) -> Result<crate::check::Plan> {
    use crate::check::{Plan, Source, Target};
    let topology = &state.topology;
    let healthy: Vec<&crate::Host> =
        topology.nodes().filter(|n| !state.failed.contains(&n.name)).collect();
    let node = healthy
        .first()
        .ok_or_else(|| Error::Internal("every node is failed; nothing to check from".into()))?;
    let zone_of: BTreeMap<String, String> =
        topology.nodes().filter_map(|n| Some((n.name.clone(), n.zone.clone()?))).collect();
    let pods = pods(client, Some(DEMO_NAMESPACE), Some(ECHO_SELECTOR)).await?;
    let pod_zones = pods
        .iter()
        .filter_map(|p| Some((p.name.clone(), zone_of.get(p.node.as_ref()?)?.clone())))
        .collect();
    let source_pod = pods
        .iter()
        .find(|p| p.ready && p.node.as_ref().is_some_and(|n| healthy.iter().any(|h| &h.name == n)))
        .ok_or_else(|| Error::Internal("no ready echo pod on a healthy node".into()))?;
    let ns_of = |name: &str| {
        topology
            .host(name)
            .map(|h| h.netns.clone())
            .ok_or_else(|| Error::UnknownHost(name.to_string()))
    };
    let sources = vec![
        (Source::Pod, find_pod_netns(source_pod).await?),
        (Source::Node, node.netns.clone()),
        (Source::Vm, ns_of("vm-1")?),
        (Source::Internet, ns_of("internet")?),
    ];
    let services = services(client).await?;
    let find =
        |name: &str| services.iter().find(|s| s.namespace == DEMO_NAMESPACE && s.name == name);
    let port_of = |s: &ServiceInfo| s.ports.first().copied().unwrap_or(80);
    let targets = vec![
        (
            Target::ClusterIp,
            find("demo-clusterip")
                .and_then(|s| Some(format!("{}:{}", s.cluster_ip.as_ref()?, port_of(s)))),
        ),
        (
            Target::NodePort,
            find("demo-nodeport")
                .and_then(|s| Some(format!("{}:{}", node.address, s.node_ports.first()?))),
        ),
        (
            Target::InternalLb,
            find("demo-internal-lb")
                .and_then(|s| Some(format!("{}:{}", s.load_balancer_ip.as_ref()?, port_of(s)))),
        ),
        (
            Target::ExternalLb,
            find("demo-external-lb")
                .and_then(|s| Some(format!("{}:{}", s.load_balancer_ip.as_ref()?, port_of(s)))),
        ),
    ];
    Ok(Plan {
        sources,
        targets,
        pod_zones,
        zones_expected: healthy.iter().filter_map(|n| n.zone.clone()).collect(),
        failed_hosts: state.failed.clone(),
        dns: find("demo-clusterip").and_then(|s| {
            Some((format!("{}.{}.svc.cluster.local", s.name, s.namespace), s.cluster_ip.clone()?))
        }),
    })
}

/// Waits until the demo answers everywhere the matrix promises an answer, so that the first
/// `lab check` after `lab up` passes: from a pod and a node every Service address, from vm-1 and
/// the internet the LoadBalancer addresses once a node announces them.
pub async fn wait_serving(
    client: &kube::Client,
    state: &crate::LabState,
    timeout: Duration,
) -> Result<()> {
    wait_for(timeout, "the demo Services did not answer where the matrix promises", || async {
        let plan = check_plan(client, state).await.map_err(|e| e.to_string())?;
        let mut silent = Vec::new();
        for (source, netns) in &plan.sources {
            for (target, address) in &plan.targets {
                if !crate::check::expected(*source, *target) {
                    continue;
                }
                let answered = match address {
                    Some(address) => {
                        crate::check::probe(netns, &format!("http://{address}/")).await.is_some()
                    }
                    None => false,
                };
                if !answered {
                    silent.push(format!("{} -> {}", source.label(), target.label()));
                }
            }
        }
        if silent.is_empty() { Ok(()) } else { Err(format!("no answer: {}", silent.join(", "))) }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_parses_into_a_namespace_a_deployment_and_four_services() {
        let kinds: Vec<String> = demo_objects()
            .expect("demo")
            .iter()
            .map(|d| d["kind"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(kinds, ["Namespace", "Deployment", "Service", "Service", "Service", "Service"]);
        for doc in demo_objects().expect("demo") {
            match doc["kind"].as_str() {
                Some("Deployment") => drop(typed::<Deployment>(&doc).expect("deployment")),
                Some("Service") => drop(typed::<Service>(&doc).expect("service")),
                _ => {}
            }
        }
    }

    #[test]
    fn pools_are_the_topologys_ranges() {
        let topology = Topology::choose(&[]).expect("topology");
        let yaml = lb_pools_yaml(&topology);
        assert!(yaml.contains("scope: internal\n  cidrs: [\"10.200.0.192/26\"]"), "{yaml}");
        assert!(yaml.contains("scope: external\n  cidrs: [\"198.51.100.0/24\"]"), "{yaml}");
    }

    #[test]
    fn names_mirror_the_agent_and_the_speaker() {
        assert_eq!(pod_netns("node-1", "0f3a9c2e-1111-2222"), "svcnet-node-1-0f3a9c2e");
        assert_eq!(lb_lease_name("10.200.0.192"), "svcnet-lb-10-200-0-192");
        let topology = Topology::choose(&[]).expect("topology");
        assert_eq!(dns_service_ip(&topology).to_string(), "10.96.0.10");
    }
}
