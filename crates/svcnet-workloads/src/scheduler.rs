//! The scheduler: binds each unbound Pod to a Ready node.
//!
//! [`choose_node`] is pure: it filters nodes (Ready, schedulable, `nodeSelector`, NoSchedule
//! taints the pod does not tolerate) and then spreads the pod's siblings (same namespace and
//! controller, else same labels) across zones first and nodes second, breaking ties by total pods
//! and node name, much as kube-scheduler's default topology spreading does. Affinity, resources
//! and preemption are left out. The pass binds through `pods/binding`; a server that does not
//! serve it gets a patch of `spec.nodeName`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};

/// The zone label.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Whether a pod waits for this scheduler.
pub fn wants_scheduling(pod: &Pod, scheduler_name: &str) -> bool {
    let Some(spec) = &pod.spec else { return false };
    let unbound = spec.node_name.as_deref().unwrap_or("").is_empty();
    let ours =
        spec.scheduler_name.as_deref().is_none_or(|name| name.is_empty() || name == scheduler_name);
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    unbound
        && ours
        && pod.metadata.deletion_timestamp.is_none()
        && phase != "Succeeded"
        && phase != "Failed"
}

/// Whether a node can take pods at all.
pub fn node_ready(node: &Node) -> bool {
    let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
    let ready =
        node.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|conditions| {
            conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
        });
    ready && !unschedulable && node.metadata.deletion_timestamp.is_none()
}

fn tolerates_taints(pod: &Pod, node: &Node) -> bool {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    node.spec.as_ref().and_then(|s| s.taints.as_ref()).into_iter().flatten().all(|taint| {
        if taint.effect == "PreferNoSchedule" {
            return true;
        }
        tolerations.iter().any(|t| {
            let key_ok = t.key.as_deref().is_none_or(|k| k.is_empty() || k == taint.key);
            let effect_ok = t.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
            let value_ok = t.operator.as_deref() == Some("Exists") || t.value == taint.value;
            key_ok && effect_ok && value_ok
        })
    })
}

fn selector_ok(pod: &Pod, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    pod.spec
        .as_ref()
        .and_then(|s| s.node_selector.as_ref())
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
}

fn controller_uid(pod: &Pod) -> Option<&str> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

fn siblings(a: &Pod, b: &Pod) -> bool {
    if a.metadata.namespace != b.metadata.namespace {
        return false;
    }
    match (controller_uid(a), controller_uid(b)) {
        (Some(x), Some(y)) => x == y,
        (None, None) => a.metadata.labels.is_some() && a.metadata.labels == b.metadata.labels,
        _ => false,
    }
}

/// Picks a node for `pod`; `placed` are the pods already bound (or assumed bound), with their node.
pub fn choose_node(pod: &Pod, nodes: &[Node], placed: &[(Pod, String)]) -> Option<String> {
    let candidates: Vec<&Node> = nodes
        .iter()
        .filter(|n| node_ready(n) && selector_ok(pod, n) && tolerates_taints(pod, n))
        .collect();
    let zone_of = |node: &Node| -> String {
        node.metadata.labels.as_ref().and_then(|l| l.get(ZONE_LABEL).cloned()).unwrap_or_default()
    };
    let node_zone: BTreeMap<String, String> =
        nodes.iter().map(|n| (n.metadata.name.clone().unwrap_or_default(), zone_of(n))).collect();
    let mut siblings_per_node: BTreeMap<&str, usize> = BTreeMap::new();
    let mut siblings_per_zone: BTreeMap<String, usize> = BTreeMap::new();
    let mut pods_per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for (other, node) in placed {
        *pods_per_node.entry(node.as_str()).or_default() += 1;
        if siblings(pod, other) {
            *siblings_per_node.entry(node.as_str()).or_default() += 1;
            if let Some(zone) = node_zone.get(node) {
                *siblings_per_zone.entry(zone.clone()).or_default() += 1;
            }
        }
    }
    candidates
        .into_iter()
        .min_by_key(|node| {
            let name = node.metadata.name.as_deref().unwrap_or("");
            (
                siblings_per_zone.get(&zone_of(node)).copied().unwrap_or(0),
                siblings_per_node.get(name).copied().unwrap_or(0),
                pods_per_node.get(name).copied().unwrap_or(0),
                name.to_string(),
            )
        })
        .and_then(|node| node.metadata.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, zone: &str, ready: bool) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {ZONE_LABEL: zone, "disk": if name == "n3" {"ssd"} else {"hdd"}}},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    fn pod(name: &str, owner: &str, selector: Option<(&str, &str)>) -> Pod {
        let mut spec = serde_json::json!({"containers": []});
        if let Some((k, v)) = selector {
            spec["nodeSelector"] = serde_json::json!({k: v});
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner, "uid": owner, "controller": true}]},
            "spec": spec
        }))
        .unwrap()
    }

    /// Schedules `n` sibling pods one by one and returns the chosen nodes.
    fn check(nodes: &[Node], n: usize, selector: Option<(&str, &str)>) -> Vec<Option<String>> {
        let mut placed: Vec<(Pod, String)> = Vec::new();
        (0..n)
            .map(|i| {
                let p = pod(&format!("p{i}"), "rs1", selector);
                let choice = choose_node(&p, nodes, &placed);
                if let Some(node) = &choice {
                    placed.push((p, node.clone()));
                }
                choice
            })
            .collect()
    }

    #[test]
    fn spreads_across_zones_then_nodes() {
        let nodes = [
            node("n1", "a", true),
            node("n2", "a", true),
            node("n3", "b", true),
            node("n4", "b", false),
        ];
        let chosen: Vec<String> = check(&nodes, 4, None).into_iter().map(Option::unwrap).collect();
        assert_eq!(chosen, ["n1", "n3", "n2", "n3"]);
    }

    #[test]
    fn honours_node_selector_and_readiness() {
        let nodes = [node("n1", "a", true), node("n3", "b", true)];
        assert_eq!(
            check(&nodes, 2, Some(("disk", "ssd"))),
            [Some("n3".to_string()), Some("n3".to_string())]
        );
        assert_eq!(check(&nodes, 1, Some(("disk", "nvme"))), [None]);
        assert_eq!(check(&[node("n4", "b", false)], 1, None), [None]);
    }
}
