//! The ReplicaSet controller's pure core: which pods to create or delete, and the status.
//!
//! Follows `pkg/controller/replicaset`: only active pods (not terminal, not being deleted)
//! count; surplus pods are deleted in the order of `controller.ActivePods` (unbound before
//! bound, pending before running, unready before ready, more restarts first, newer first).
//! Pods are owned through a controller `ownerReference`; adopting orphans is left out.
//! Failed pods beyond `replicas` are deleted so a crash-looping template cannot pile them up.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// Whether a pod still counts toward replicas.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    pod.metadata.deletion_timestamp.is_none() && phase != "Succeeded" && phase != "Failed"
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|conditions| {
        conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Whether the pod has been ready for `min_ready_seconds` at `now` (seconds since the epoch).
pub fn is_available(pod: &Pod, min_ready_seconds: i64, now: i64) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    let since = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.as_second());
    since.is_some_and(|since| now - since >= min_ready_seconds)
}

/// The uid of the controller owning `meta`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.iter().flatten().find(|o| o.controller == Some(true))
}

/// What a pass should do for one ReplicaSet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaSetPlan {
    pub create: usize,
    /// Pod names to delete, most expendable first.
    pub delete: Vec<String>,
}

fn deletion_rank(pod: &Pod) -> (u8, u8, u8, i64, i64) {
    let bound =
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let restarts: i64 = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|statuses| statuses.iter().map(|c| i64::from(c.restart_count)).sum())
        .unwrap_or(0);
    let created =
        pod.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(i64::MAX);
    (u8::from(bound), phase, u8::from(is_ready(pod)), -restarts, -created)
}

/// Compares desired replicas with the owned pods (`pending_creates` are created but not yet seen).
pub fn plan(replicas: i32, owned: &[&Pod], pending_creates: usize) -> ReplicaSetPlan {
    let desired = usize::try_from(replicas.max(0)).unwrap_or(0);
    let mut active: Vec<&Pod> = owned.iter().copied().filter(|p| is_active(p)).collect();
    let current = active.len() + pending_creates;
    let mut result = ReplicaSetPlan::default();
    if current < desired {
        result.create = desired - current;
    } else if active.len() > desired {
        active.sort_by_key(|p| deletion_rank(p));
        result.delete = active[..active.len() - desired]
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
    }
    let mut failed: Vec<&Pod> = owned
        .iter()
        .copied()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !is_active(p))
        .collect();
    if failed.len() > desired.max(1) {
        failed.sort_by_key(|p| {
            p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0)
        });
        let surplus = failed.len() - desired.max(1);
        result.delete.extend(failed[..surplus].iter().filter_map(|p| p.metadata.name.clone()));
    }
    result
}

/// The status of a ReplicaSet over its owned pods.
pub fn status(rs: &ReplicaSet, owned: &[&Pod], now: i64) -> ReplicaSetStatus {
    let min_ready = i64::from(rs.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0));
    let template_labels: BTreeMap<String, String> = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let active: Vec<&Pod> = owned.iter().copied().filter(|p| is_active(p)).collect();
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(active.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let fully_labeled = count(&|p: &Pod| {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        template_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    });
    ReplicaSetStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: Some(fully_labeled),
        ready_replicas: Some(count(&is_ready)),
        available_replicas: Some(count(&|p| is_available(p, min_ready, now))),
        terminating_replicas: None,
        observed_generation: rs.metadata.generation,
        conditions: None,
    }
}

/// A new pod for `rs` (the name is chosen by the caller).
pub fn new_pod(rs: &ReplicaSet, name: String) -> Pod {
    let template: PodTemplateSpec =
        rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
    let template_meta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: rs.metadata.namespace.clone(),
            labels: template_meta.labels,
            annotations: template_meta.annotations,
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".to_string(),
                kind: "ReplicaSet".to_string(),
                name: rs.metadata.name.clone().unwrap_or_default(),
                uid: rs.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, phase: &str, ready: bool, node: &str, created: i64) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "creationTimestamp": jiff::Timestamp::from_second(created).unwrap().to_string()},
            "spec": {"containers": [], "nodeName": node},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    fn check(replicas: i32, pods: &[Pod], pending: usize, expected: ReplicaSetPlan) {
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(plan(replicas, &refs, pending), expected);
    }

    #[test]
    fn creates_the_missing() {
        check(
            3,
            &[pod("a", "Running", true, "n1", 1)],
            0,
            ReplicaSetPlan { create: 2, delete: vec![] },
        );
        check(3, &[pod("a", "Running", true, "n1", 1)], 2, ReplicaSetPlan::default());
        check(
            2,
            &[pod("a", "Running", true, "n1", 1), pod("f", "Failed", false, "n1", 1)],
            0,
            ReplicaSetPlan { create: 1, delete: vec![] },
        );
    }

    #[test]
    fn deletes_the_most_expendable_first() {
        let pods = [
            pod("ready-old", "Running", true, "n1", 1),
            pod("ready-new", "Running", true, "n1", 5),
            pod("unready", "Running", false, "n1", 2),
            pod("unbound", "Pending", false, "", 3),
        ];
        check(
            1,
            &pods,
            0,
            ReplicaSetPlan {
                create: 0,
                delete: vec!["unbound".into(), "unready".into(), "ready-new".into()],
            },
        );
    }

    #[test]
    fn bounds_failed_pods() {
        let pods = [
            pod("f1", "Failed", false, "n1", 1),
            pod("f2", "Failed", false, "n1", 2),
            pod("f3", "Failed", false, "n1", 3),
        ];
        check(1, &pods, 0, ReplicaSetPlan { create: 1, delete: vec!["f1".into(), "f2".into()] });
    }

    #[test]
    fn status_counts() {
        let rs: ReplicaSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "rs", "generation": 4},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "a"}}}}
        }))
        .unwrap();
        let pods = [
            pod("a", "Running", true, "n1", 1),
            pod("b", "Running", false, "n1", 1),
            pod("c", "Failed", false, "n1", 1),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let status = status(&rs, &refs, 100);
        assert_eq!(
            (
                status.replicas,
                status.ready_replicas,
                status.available_replicas,
                status.observed_generation
            ),
            (2, Some(1), Some(1), Some(4))
        );
    }
}
