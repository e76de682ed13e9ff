//! Server-side defaulting as kube-apiserver does it on create and update
//! (`pkg/apis/core/v1/defaults.go`, `pkg/apis/apps/v1/defaults.go`,
//! `pkg/apis/discovery/v1/defaults.go`) plus the strategy `PrepareForCreate` bits users see
//! (Namespace finalizers and phase).
//!
//! Leaves out address allocation (ClusterIP, NodePort, ipFamilies, ipFamilyPolicy): the
//! allocator in the API server's write path owns those.

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentStrategy, ReplicaSet, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    ClientIPConfig, Container, EmptyDirVolumeSource, Endpoints, LoadBalancerStatus, Namespace,
    NamespaceSpec, NamespaceStatus, Node, Pod, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    Service, ServiceStatus, SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// `v1.DefaultClientIPServiceAffinitySeconds`.
pub const DEFAULT_CLIENT_IP_SERVICE_AFFINITY_SECONDS: i32 = 10800;

/// `SetDefaults_Service`.
pub fn default_service(service: &mut Service) {
    let spec = service.spec.get_or_insert_with(Default::default);
    let affinity = spec.session_affinity.get_or_insert_with(|| "None".to_string()).clone();
    if affinity == "None" {
        spec.session_affinity_config = None;
    }
    if affinity == "ClientIP" {
        let has_timeout = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .is_some();
        if !has_timeout {
            spec.session_affinity_config = Some(SessionAffinityConfig {
                client_ip: Some(ClientIPConfig {
                    timeout_seconds: Some(DEFAULT_CLIENT_IP_SERVICE_AFFINITY_SECONDS),
                }),
            });
        }
    }
    let type_ = spec.type_.get_or_insert_with(|| "ClusterIP".to_string()).clone();
    for port in spec.ports.iter_mut().flatten() {
        if port.protocol.as_deref().unwrap_or("").is_empty() {
            port.protocol = Some("TCP".to_string());
        }
        let unset = match &port.target_port {
            None => true,
            Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(s)) => s.is_empty(),
            Some(IntOrString::Int(_)) => false,
        };
        if unset {
            port.target_port = Some(IntOrString::Int(port.port));
        }
    }
    // `service.ExternallyAccessible`: NodePort, LoadBalancer, or ClusterIP with external IPs.
    let externally_accessible = type_ == "LoadBalancer"
        || type_ == "NodePort"
        || (type_ == "ClusterIP" && spec.external_ips.as_ref().is_some_and(|ips| !ips.is_empty()));
    if externally_accessible && spec.external_traffic_policy.as_deref().unwrap_or("").is_empty() {
        spec.external_traffic_policy = Some("Cluster".to_string());
    }
    if spec.internal_traffic_policy.is_none()
        && matches!(type_.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer")
    {
        spec.internal_traffic_policy = Some("Cluster".to_string());
    }
    if type_ == "LoadBalancer" && spec.allocate_load_balancer_node_ports.is_none() {
        spec.allocate_load_balancer_node_ports = Some(true);
    }
    let status = service.status.get_or_insert_with(ServiceStatus::default);
    let load_balancer = status.load_balancer.get_or_insert_with(LoadBalancerStatus::default);
    if type_ == "LoadBalancer" {
        for ingress in load_balancer.ingress.iter_mut().flatten() {
            if !ingress.ip.as_deref().unwrap_or("").is_empty() && ingress.ip_mode.is_none() {
                ingress.ip_mode = Some("VIP".to_string());
            }
        }
    }
}

/// `SetDefaults_Container` and the probe/port defaults under it.
fn default_container(container: &mut Container) {
    if container.image_pull_policy.is_none() {
        let image = container.image.as_deref().unwrap_or("");
        // The tag is what follows the last ':' after the last '/'; a digest pins the image.
        let name_part = image.rsplit('/').next().unwrap_or(image);
        let tag = if image.contains('@') {
            Some("digest")
        } else {
            name_part.split_once(':').map(|(_, t)| t)
        };
        let policy = match tag {
            None | Some("latest") => "Always",
            Some(_) => "IfNotPresent",
        };
        container.image_pull_policy = Some(policy.to_string());
    }
    if container.termination_message_path.is_none() {
        container.termination_message_path = Some("/dev/termination-log".to_string());
    }
    if container.termination_message_policy.is_none() {
        container.termination_message_policy = Some("File".to_string());
    }
    for port in container.ports.iter_mut().flatten() {
        if port.protocol.is_none() {
            port.protocol = Some("TCP".to_string());
        }
    }
    for env in container.env.iter_mut().flatten() {
        if let Some(field_ref) = env.value_from.as_mut().and_then(|v| v.field_ref.as_mut())
            && field_ref.api_version.is_none()
        {
            field_ref.api_version = Some("v1".to_string());
        }
    }
    for probe in [
        &mut container.liveness_probe,
        &mut container.readiness_probe,
        &mut container.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
}

fn default_probe(probe: &mut Probe) {
    probe.timeout_seconds.get_or_insert(1);
    probe.period_seconds.get_or_insert(10);
    probe.success_threshold.get_or_insert(1);
    probe.failure_threshold.get_or_insert(3);
    if let Some(http) = probe.http_get.as_mut() {
        if http.path.as_deref().unwrap_or("").is_empty() {
            http.path = Some("/".to_string());
        }
        http.scheme.get_or_insert_with(|| "HTTP".to_string());
    }
}

/// `SetDefaults_PodSpec` and the container defaults.
pub fn default_pod_spec(spec: &mut PodSpec) {
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".to_string());
    spec.restart_policy.get_or_insert_with(|| "Always".to_string());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.security_context.get_or_insert_with(PodSecurityContext::default);
    spec.scheduler_name.get_or_insert_with(|| "default-scheduler".to_string());
    let host_network = spec.host_network == Some(true);
    for container in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        default_container(container);
        if host_network {
            for port in container.ports.iter_mut().flatten() {
                if port.host_port.is_none() {
                    port.host_port = Some(port.container_port);
                }
            }
        }
    }
    for volume in spec.volumes.iter_mut().flatten() {
        let mut probe = volume.clone();
        probe.name = String::new();
        let has_source = serde_json::to_value(&probe)
            .ok()
            .and_then(|v| v.as_object().map(|m| m.len()))
            .unwrap_or(0)
            > 1;
        if !has_source {
            volume.empty_dir = Some(EmptyDirVolumeSource::default());
        }
    }
}

/// `SetDefaults_Pod` + `SetDefaults_PodSpec`.
pub fn default_pod(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    default_pod_spec(spec);
    spec.enable_service_links.get_or_insert(true);
    for container in &mut spec.containers {
        // Requests default to limits when only limits are set.
        if let Some(resources) = container.resources.as_mut()
            && let (Some(limits), None) = (&resources.limits, &resources.requests)
        {
            resources.requests = Some(limits.clone());
        }
    }
}

fn default_template(template: &mut PodTemplateSpec) {
    if let Some(spec) = template.spec.as_mut() {
        default_pod_spec(spec);
    }
}

/// `SetDefaults_Deployment`.
pub fn default_deployment(deployment: &mut Deployment) {
    let spec = deployment.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    let strategy = spec.strategy.get_or_insert_with(DeploymentStrategy::default);
    let type_ = strategy.type_.get_or_insert_with(|| "RollingUpdate".to_string()).clone();
    if type_ == "RollingUpdate" {
        let rolling = strategy.rolling_update.get_or_insert_with(RollingUpdateDeployment::default);
        rolling.max_unavailable.get_or_insert_with(|| IntOrString::String("25%".to_string()));
        rolling.max_surge.get_or_insert_with(|| IntOrString::String("25%".to_string()));
    }
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
    default_template(&mut spec.template);
}

/// `SetDefaults_ReplicaSet`.
pub fn default_replicaset(replicaset: &mut ReplicaSet) {
    let spec = replicaset.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    if let Some(template) = spec.template.as_mut() {
        default_template(template);
    }
}

/// `SetDefaults_Namespace` (the `kubernetes.io/metadata.name` label), `SetDefaults_NamespaceStatus`
/// (phase Active) and the strategy's `PrepareForCreate` finalizer `kubernetes`. The finalizer is
/// added only when `spec.finalizers` is absent: an empty list is the namespace controller's
/// "finalized" and must stay empty.
pub fn default_namespace(namespace: &mut Namespace) {
    if let Some(name) = namespace.metadata.name.clone().filter(|n| !n.is_empty()) {
        namespace
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert("kubernetes.io/metadata.name".to_string(), name);
    }
    let spec = namespace.spec.get_or_insert_with(NamespaceSpec::default);
    if spec.finalizers.is_none() {
        spec.finalizers = Some(vec!["kubernetes".to_string()]);
    }
    let status = namespace.status.get_or_insert_with(NamespaceStatus::default);
    status.phase.get_or_insert_with(|| "Active".to_string());
}

/// `SetDefaults_NodeStatus`: allocatable defaults to capacity.
pub fn default_node(node: &mut Node) {
    if let Some(status) = node.status.as_mut()
        && status.allocatable.is_none()
    {
        status.allocatable = status.capacity.clone();
    }
}

/// `discovery/v1` `SetDefaults_EndpointPort`: name `""`, protocol TCP.
pub fn default_endpoint_slice(slice: &mut EndpointSlice) {
    for port in slice.ports.iter_mut().flatten() {
        port.name.get_or_insert_with(String::new);
        port.protocol.get_or_insert_with(|| "TCP".to_string());
    }
}

/// `SetDefaults_EndpointPort` for legacy Endpoints.
pub fn default_endpoints(endpoints: &mut Endpoints) {
    for subset in endpoints.subsets.iter_mut().flatten() {
        for port in subset.ports.iter_mut().flatten() {
            port.protocol.get_or_insert_with(|| "TCP".to_string());
        }
    }
}

fn typed<T: DeserializeOwned + Serialize>(obj: &mut Value, f: fn(&mut T)) -> Result<(), String> {
    let mut typed: T = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
    f(&mut typed);
    *obj = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    Ok(())
}

/// Defaults any served kind given as JSON, through its typed struct (which also drops unknown
/// fields, as the real server does). Kinds without defaults are left as they are. An error means
/// the object does not decode as its kind (the caller reports a 400).
pub fn default_object(group: &str, kind: &str, obj: &mut Value) -> Result<(), String> {
    match (group, kind) {
        ("", "Service") => typed(obj, default_service),
        ("", "Pod") => typed(obj, default_pod),
        ("", "Namespace") => typed(obj, default_namespace),
        ("", "Node") => typed(obj, default_node),
        ("", "Endpoints") => typed(obj, default_endpoints),
        ("discovery.k8s.io", "EndpointSlice") => typed(obj, default_endpoint_slice),
        ("apps", "Deployment") => typed(obj, default_deployment),
        ("apps", "ReplicaSet") => typed(obj, default_replicaset),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(group: &str, kind: &str, input: Value, expected: Value) {
        let mut obj = input;
        default_object(group, kind, &mut obj).unwrap();
        assert_eq!(obj, expected);
    }

    #[test]
    fn service_defaults() {
        check(
            "",
            "Service",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                   "spec": {"internalTrafficPolicy": "Cluster", "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
                            "selector": {"app": "web"}, "sessionAffinity": "None", "type": "ClusterIP"},
                   "status": {"loadBalancer": {}}}),
        );
        check(
            "",
            "Service",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP", "ports": [{"port": 443, "targetPort": "https", "protocol": "UDP"}]}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
                   "spec": {"allocateLoadBalancerNodePorts": true, "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster",
                            "ports": [{"port": 443, "protocol": "UDP", "targetPort": "https"}], "sessionAffinity": "ClientIP",
                            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}}, "type": "LoadBalancer"},
                   "status": {"loadBalancer": {}}}),
        );
        // ExternalName gets no traffic policies.
        check(
            "",
            "Service",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"type": "ExternalName", "externalName": "example.com"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
                   "spec": {"externalName": "example.com", "sessionAffinity": "None", "type": "ExternalName"}, "status": {"loadBalancer": {}}}),
        );
    }

    #[test]
    fn workload_defaults() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}]}}}});
        default_object("apps", "Deployment", &mut d).unwrap();
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}, "type": "RollingUpdate"})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}], "volumes": [{"name": "v"}]}});
        default_object("", "Pod", &mut p).unwrap();
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(p["spec"]["enableServiceLinks"], true);
        assert_eq!(p["spec"]["volumes"][0], json!({"emptyDir": {}, "name": "v"}));
        assert_eq!(p["spec"]["schedulerName"], "default-scheduler");
    }

    #[test]
    fn namespace_and_slice_defaults() {
        check(
            "",
            "Namespace",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"labels": {"kubernetes.io/metadata.name": "n"}, "name": "n"}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        );
        // A finalized, terminating namespace keeps its empty finalizers and its phase.
        check(
            "",
            "Namespace",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"labels": {"kubernetes.io/metadata.name": "n"}, "name": "n"}, "spec": {"finalizers": []}, "status": {"phase": "Terminating"}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"labels": {"kubernetes.io/metadata.name": "n"}, "name": "n"}, "spec": {"finalizers": []}, "status": {"phase": "Terminating"}}),
        );
        let mut s = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "s"}, "addressType": "IPv4", "endpoints": [], "ports": [{"port": 80}]});
        default_object("discovery.k8s.io", "EndpointSlice", &mut s).unwrap();
        assert_eq!(s["ports"][0], json!({"name": "", "port": 80, "protocol": "TCP"}));
    }
}
