//! The parts of kube-apiserver's registry strategies (`pkg/registry/core/service/strategy.go`,
//! `pkg/registry/core/pod/strategy.go`) that shape an object before validation: syncing
//! `clusterIP`/`clusterIPs`, wiping fields a type change made meaningless, and a new Pod's status.
//!
//! Leaves out what needs state (address allocation and release): the API server's allocator
//! does that after these run.

use k8s_openapi::api::core::v1::{LoadBalancerStatus, Pod, PodStatus, Service, ServiceSpec};

fn spec(service: &Service) -> ServiceSpec {
    service.spec.clone().unwrap_or_default()
}

/// `NormalizeClusterIPs`: an old client that sets only `clusterIP` gets `clusterIPs` filled in,
/// and a patch that drops `clusterIPs` while keeping `clusterIP` keeps the old list.
pub fn normalize_cluster_ips(new: &mut Service, old: Option<&Service>) {
    let new_spec = new.spec.get_or_insert_with(Default::default);
    let cluster_ip = new_spec.cluster_ip.clone().unwrap_or_default();
    let cluster_ips_empty = new_spec.cluster_ips.as_ref().is_none_or(|ips| ips.is_empty());
    let Some(old) = old else {
        if !cluster_ip.is_empty() && cluster_ips_empty {
            new_spec.cluster_ips = Some(vec![cluster_ip]);
        }
        return;
    };
    let old_spec = spec(old);
    let old_cluster_ip = old_spec.cluster_ip.clone().unwrap_or_default();
    let old_ips = old_spec.cluster_ips.clone().unwrap_or_default();
    if !old_ips.is_empty() && cluster_ips_empty && old_cluster_ip == cluster_ip {
        new_spec.cluster_ips = Some(old_ips.clone());
    }
    if old_cluster_ip != cluster_ip {
        if !old_cluster_ip.is_empty() && cluster_ip.is_empty() {
            if new_spec.cluster_ips.as_ref().is_none_or(|ips| ips.is_empty()) {
                new_spec.cluster_ips = None;
            }
            return;
        }
        if new_spec.cluster_ips.clone().unwrap_or_default() == old_ips {
            new_spec.cluster_ips = Some(vec![cluster_ip]);
        }
    }
}

fn type_of(spec: &ServiceSpec) -> &str {
    spec.type_.as_deref().unwrap_or("ClusterIP")
}

fn externally_accessible(spec: &ServiceSpec) -> bool {
    let type_ = type_of(spec);
    type_ == "LoadBalancer"
        || type_ == "NodePort"
        || (type_ == "ClusterIP" && spec.external_ips.as_ref().is_some_and(|ips| !ips.is_empty()))
}

/// `dropTypeDependentFields`: on an update that changes the type, wipe the fields the new type
/// does not use, but only those the user left unchanged (the allocator releases them later).
pub fn drop_type_dependent_fields(new: &mut Service, old: &Service) {
    let old_spec = spec(old);
    let new_spec = new.spec.get_or_insert_with(Default::default);
    let needs_cluster_ip = |s: &ServiceSpec| type_of(s) != "ExternalName";
    let needs_node_port = |s: &ServiceSpec| matches!(type_of(s), "NodePort" | "LoadBalancer");
    let needs_hc_node_port = |s: &ServiceSpec| {
        type_of(s) == "LoadBalancer" && s.external_traffic_policy.as_deref() == Some("Local")
    };

    if needs_cluster_ip(&old_spec) && !needs_cluster_ip(new_spec) {
        if old_spec.cluster_ip == new_spec.cluster_ip
            && old_spec.cluster_ips == new_spec.cluster_ips
        {
            new_spec.cluster_ip = None;
            new_spec.cluster_ips = None;
        }
        if old_spec.ip_families == new_spec.ip_families {
            new_spec.ip_families = None;
        }
        if old_spec.ip_family_policy == new_spec.ip_family_policy {
            new_spec.ip_family_policy = None;
        }
    }
    let node_ports = |s: &ServiceSpec| -> Vec<Option<i32>> {
        s.ports.iter().flatten().map(|p| p.node_port.filter(|n| *n != 0)).collect()
    };
    if needs_node_port(&old_spec)
        && !needs_node_port(new_spec)
        && node_ports(&old_spec) == node_ports(new_spec)
    {
        for port in new_spec.ports.iter_mut().flatten() {
            port.node_port = None;
        }
    }
    if needs_hc_node_port(&old_spec)
        && !needs_hc_node_port(new_spec)
        && old_spec.health_check_node_port == new_spec.health_check_node_port
    {
        new_spec.health_check_node_port = None;
    }
    let old_lb = type_of(&old_spec) == "LoadBalancer";
    let new_lb = type_of(new_spec) == "LoadBalancer";
    if old_lb && !new_lb {
        if new_spec.allocate_load_balancer_node_ports.is_some()
            && old_spec.allocate_load_balancer_node_ports
                == new_spec.allocate_load_balancer_node_ports
        {
            new_spec.allocate_load_balancer_node_ports = None;
        }
        if old_spec.load_balancer_class == new_spec.load_balancer_class {
            new_spec.load_balancer_class = None;
        }
    }
    if externally_accessible(&old_spec)
        && !externally_accessible(new_spec)
        && old_spec.external_traffic_policy == new_spec.external_traffic_policy
    {
        new_spec.external_traffic_policy = None;
    }
    if old_lb && !new_lb {
        new.status.get_or_insert_with(Default::default).load_balancer =
            Some(LoadBalancerStatus::default());
    }
}

/// The Pod strategy's `PrepareForCreate`: status `Pending` with the QoS class.
pub fn prepare_pod_for_create(pod: &mut Pod) {
    pod.status = Some(PodStatus {
        phase: Some("Pending".to_string()),
        qos_class: Some(pod_qos_class(pod).to_string()),
        ..PodStatus::default()
    });
}

/// `qos.GetPodQOS`: Guaranteed when every container sets equal CPU and memory requests and
/// limits, BestEffort when none sets any, Burstable otherwise.
pub fn pod_qos_class(pod: &Pod) -> &'static str {
    let containers: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for container in containers {
        let resources = container.resources.clone().unwrap_or_default();
        let limits = resources.limits.unwrap_or_default();
        let requests = resources.requests.unwrap_or_else(|| limits.clone());
        if !limits.is_empty() || !requests.is_empty() {
            any = true;
        }
        for name in ["cpu", "memory"] {
            match (limits.get(name), requests.get(name)) {
                (Some(l), Some(r)) if l == r => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn svc(spec: Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": spec})).unwrap()
    }

    fn check_normalize(new: Value, old: Option<Value>, expected: Value) {
        let mut service = svc(new);
        normalize_cluster_ips(&mut service, old.map(svc).as_ref());
        assert_eq!(serde_json::to_value(&service.spec).unwrap(), expected);
    }

    #[test]
    fn normalizes_cluster_ips() {
        check_normalize(
            json!({"clusterIP": "10.0.0.1"}),
            None,
            json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"]}),
        );
        check_normalize(json!({}), None, json!({}));
        check_normalize(
            json!({"clusterIP": "10.0.0.1"}),
            Some(json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1", "fd00::1"]})),
            json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1", "fd00::1"]}),
        );
        check_normalize(
            json!({"clusterIP": "10.0.0.2", "clusterIPs": ["10.0.0.1"]}),
            Some(json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"]})),
            json!({"clusterIP": "10.0.0.2", "clusterIPs": ["10.0.0.2"]}),
        );
    }

    #[test]
    fn drops_type_dependent_fields() {
        let old = svc(
            json!({"type": "LoadBalancer", "clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack", "externalTrafficPolicy": "Local", "healthCheckNodePort": 30001, "allocateLoadBalancerNodePorts": true,
            "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        let mut new = old.clone();
        new.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        new.spec.as_mut().unwrap().external_name = Some("example.com".into());
        drop_type_dependent_fields(&mut new, &old);
        assert_eq!(
            serde_json::to_value(&new.spec).unwrap(),
            json!({"externalName": "example.com", "ports": [{"port": 80}], "type": "ExternalName"})
        );
        assert_eq!(serde_json::to_value(&new.status).unwrap(), json!({"loadBalancer": {}}));
        // LoadBalancer → NodePort keeps the node ports and the cluster IP.
        let mut node_port = old.clone();
        node_port.spec.as_mut().unwrap().type_ = Some("NodePort".into());
        drop_type_dependent_fields(&mut node_port, &old);
        let spec = node_port.spec.unwrap();
        assert_eq!(spec.ports.unwrap()[0].node_port, Some(30080));
        assert_eq!(spec.health_check_node_port, None);
        assert_eq!(spec.allocate_load_balancer_node_ports, None);
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
    }

    #[test]
    fn pod_status_on_create() {
        let mut pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}, "status": {"phase": "Running"}}))
        .unwrap();
        prepare_pod_for_create(&mut pod);
        assert_eq!(
            serde_json::to_value(&pod.status).unwrap(),
            json!({"phase": "Pending", "qosClass": "Guaranteed"})
        );
        let best_effort: Pod =
            serde_json::from_value(json!({"spec": {"containers": [{"name": "c"}]}})).unwrap();
        assert_eq!(pod_qos_class(&best_effort), "BestEffort");
        let burstable: Pod =
            serde_json::from_value(json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}})).unwrap();
        assert_eq!(pod_qos_class(&burstable), "Burstable");
    }
}
