//! The Deployment controller's pure core: rollout steps, the new ReplicaSet and the status.
//!
//! Follows `pkg/controller/deployment/rolling.go`: the new ReplicaSet grows while the total
//! stays within `replicas + maxSurge`; old ReplicaSets shrink (unhealthy pods first) while at
//! least `replicas - maxUnavailable` pods stay available. `Recreate` empties old ReplicaSets
//! before the new one grows. When no old ReplicaSet has pods, the new one is simply set to
//! `replicas` (how `kubectl scale` lands). Proportional scaling during a rollout, `paused`,
//! `progressDeadlineSeconds` time-outs and rollback are left out.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::labels::pod_template_hash;

/// The label carrying the template hash.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision annotation kubectl reads.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// The numbers of one ReplicaSet that a rollout step needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaSetView {
    pub name: String,
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.availableReplicas`.
    pub available: i32,
}

/// Resolves an int-or-percent against `total`, rounding up or down as Kubernetes does.
pub fn resolve(
    value: Option<&IntOrString>,
    total: i32,
    default_percent: i32,
    round_up: bool,
) -> i32 {
    match value {
        Some(IntOrString::Int(n)) => (*n).max(0),
        Some(IntOrString::String(text)) => {
            let percent: i32 = text.trim_end_matches('%').parse().unwrap_or(default_percent);
            percent_of(percent, total, round_up)
        }
        None => percent_of(default_percent, total, round_up),
    }
}

fn percent_of(percent: i32, total: i32, round_up: bool) -> i32 {
    let product = i64::from(percent.max(0)) * i64::from(total.max(0));
    let value = if round_up { (product + 99) / 100 } else { product / 100 };
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// `(maxSurge, maxUnavailable)` of a deployment; both zero becomes `(0, 1)`.
pub fn surge_and_unavailable(deployment: &Deployment) -> (i32, i32) {
    let spec = deployment.spec.as_ref();
    let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
    let rolling = spec.and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    let surge = resolve(rolling.and_then(|r| r.max_surge.as_ref()), desired, 25, true);
    let unavailable = resolve(rolling.and_then(|r| r.max_unavailable.as_ref()), desired, 25, false);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
}

/// One step of a rolling update: new `spec.replicas` for the ReplicaSets that change.
pub fn rolling_step(
    desired: i32,
    max_surge: i32,
    max_unavailable: i32,
    new: &ReplicaSetView,
    olds: &[ReplicaSetView],
) -> Vec<(String, i32)> {
    let old_total: i32 = olds.iter().map(|o| o.replicas).sum();
    if old_total == 0 {
        return if new.replicas == desired { vec![] } else { vec![(new.name.clone(), desired)] };
    }
    // Grow the new ReplicaSet within the surge.
    if new.replicas > desired {
        return vec![(new.name.clone(), desired)];
    }
    let all_total = old_total + new.replicas;
    let max_total = desired + max_surge;
    if new.replicas < desired && all_total < max_total {
        let grow = (max_total - all_total).min(desired - new.replicas);
        return vec![(new.name.clone(), new.replicas + grow)];
    }
    // Shrink old ReplicaSets while enough pods stay available.
    let min_available = desired - max_unavailable;
    let new_unavailable = (new.replicas - new.available).max(0);
    let mut budget = all_total - min_available - new_unavailable;
    if budget <= 0 {
        return vec![];
    }
    let mut changes: BTreeMap<String, i32> = BTreeMap::new();
    // Unhealthy pods of old ReplicaSets go first; they do not lower availability.
    for old in olds {
        let unhealthy = (old.replicas - old.available).max(0).min(budget);
        if unhealthy > 0 {
            changes.insert(old.name.clone(), old.replicas - unhealthy);
            budget -= unhealthy;
        }
    }
    let available_total: i32 =
        olds.iter().map(|o| o.available.min(o.replicas)).sum::<i32>() + new.available;
    let mut scale_down = (available_total - min_available).min(budget);
    for old in olds {
        if scale_down <= 0 {
            break;
        }
        let current = changes.get(&old.name).copied().unwrap_or(old.replicas);
        let cut = current.min(scale_down);
        if cut > 0 {
            changes.insert(old.name.clone(), current - cut);
            scale_down -= cut;
        }
    }
    changes.into_iter().collect()
}

/// One step of a `Recreate` rollout.
pub fn recreate_step(
    desired: i32,
    new: &ReplicaSetView,
    olds: &[ReplicaSetView],
    old_pods_running: bool,
) -> Vec<(String, i32)> {
    let shrink: Vec<(String, i32)> =
        olds.iter().filter(|o| o.replicas > 0).map(|o| (o.name.clone(), 0)).collect();
    if !shrink.is_empty() {
        return shrink;
    }
    if old_pods_running || new.replicas == desired {
        return vec![];
    }
    vec![(new.name.clone(), desired)]
}

/// The hash, and the new ReplicaSet to create when none matches it.
pub fn new_replica_set(deployment: &Deployment, revision: i64) -> ReplicaSet {
    let spec = deployment.spec.clone().unwrap_or_default();
    let hash = pod_template_hash(
        &spec.template,
        deployment.status.as_ref().and_then(|s| s.collision_count),
    );
    let name = format!("{}-{hash}", deployment.metadata.name.as_deref().unwrap_or(""));
    let mut template = spec.template.clone();
    let mut template_meta = template.metadata.clone().unwrap_or_default();
    let mut labels = template_meta.labels.clone().unwrap_or_default();
    labels.insert(HASH_LABEL.to_string(), hash.clone());
    template_meta.labels = Some(labels.clone());
    template.metadata = Some(template_meta);
    let mut selector: LabelSelector = spec.selector.clone();
    let mut match_labels = selector.match_labels.clone().unwrap_or_default();
    match_labels.insert(HASH_LABEL.to_string(), hash);
    selector.match_labels = Some(match_labels);
    let annotations: BTreeMap<String, String> = [
        (REVISION_ANNOTATION.to_string(), revision.to_string()),
        (
            "deployment.kubernetes.io/desired-replicas".to_string(),
            spec.replicas.unwrap_or(1).to_string(),
        ),
    ]
    .into();
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: deployment.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".to_string(),
                kind: "Deployment".to_string(),
                name: deployment.metadata.name.clone().unwrap_or_default(),
                uid: deployment.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// The hash of the deployment's current template.
pub fn current_hash(deployment: &Deployment) -> String {
    let spec = deployment.spec.clone().unwrap_or_default();
    pod_template_hash(&spec.template, deployment.status.as_ref().and_then(|s| s.collision_count))
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    previous: Option<&DeploymentStatus>,
    now: &Time,
) -> DeploymentCondition {
    let status = if ok { "True" } else { "False" }.to_string();
    let old = previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == type_));
    let last_transition_time = old
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    let last_update_time = old
        .filter(|c| c.status == status && c.reason.as_deref() == Some(reason))
        .and_then(|c| c.last_update_time.clone())
        .unwrap_or_else(|| now.clone());
    DeploymentCondition {
        type_: type_.to_string(),
        status,
        reason: Some(reason.to_string()),
        message: Some(message),
        last_transition_time: Some(last_transition_time),
        last_update_time: Some(last_update_time),
    }
}

/// The Deployment's status from its ReplicaSets (`new` is the one matching the template).
pub fn status(
    deployment: &Deployment,
    new: Option<&ReplicaSet>,
    olds: &[&ReplicaSet],
    now: &Time,
) -> DeploymentStatus {
    let desired = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let (_, max_unavailable) = surge_and_unavailable(deployment);
    let rs_status = |rs: &ReplicaSet| rs.status.clone().unwrap_or_default();
    let all: Vec<&ReplicaSet> = new.into_iter().chain(olds.iter().copied()).collect();
    let replicas: i32 = all.iter().map(|rs| rs_status(rs).replicas).sum();
    let ready: i32 = all.iter().map(|rs| rs_status(rs).ready_replicas.unwrap_or(0)).sum();
    let available: i32 = all.iter().map(|rs| rs_status(rs).available_replicas.unwrap_or(0)).sum();
    let updated = new.map(|rs| rs_status(rs).replicas).unwrap_or(0);
    let new_available = new.map(|rs| rs_status(rs).available_replicas.unwrap_or(0)).unwrap_or(0);
    let previous = deployment.status.as_ref();
    let new_name = new.and_then(|rs| rs.metadata.name.clone()).unwrap_or_default();
    let complete = updated == desired && replicas == desired && new_available == desired;
    let progressing = if complete {
        condition(
            "Progressing",
            true,
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            previous,
            now,
        )
    } else {
        condition(
            "Progressing",
            true,
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
            previous,
            now,
        )
    };
    let available_ok = available >= desired - max_unavailable;
    let available_condition = if available_ok {
        condition(
            "Available",
            true,
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".to_string(),
            previous,
            now,
        )
    } else {
        condition(
            "Available",
            false,
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".to_string(),
            previous,
            now,
        )
    };
    DeploymentStatus {
        observed_generation: deployment.metadata.generation,
        replicas: Some(replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((desired - available).max(0)),
        terminating_replicas: None,
        collision_count: previous.and_then(|p| p.collision_count),
        conditions: Some(vec![available_condition, progressing]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, replicas: i32, available: i32) -> ReplicaSetView {
        ReplicaSetView { name: name.to_string(), replicas, available }
    }

    /// Runs a rollout to completion assuming every pod becomes available at once, and returns
    /// (new, old) replicas after each step.
    fn simulate(desired: i32, surge: i32, unavailable: i32, old_replicas: i32) -> Vec<(i32, i32)> {
        let mut new = view("new", 0, 0);
        let mut old = view("old", old_replicas, old_replicas);
        let mut steps = Vec::new();
        for _ in 0..50 {
            let changes =
                rolling_step(desired, surge, unavailable, &new, std::slice::from_ref(&old));
            if changes.is_empty() {
                break;
            }
            for (name, replicas) in changes {
                if name == "new" {
                    new.replicas = replicas;
                } else {
                    old.replicas = replicas;
                }
            }
            // Pods start and become available.
            new.available = new.replicas;
            old.available = old.replicas;
            steps.push((new.replicas, old.replicas));
            assert!(new.replicas + old.replicas <= desired + surge, "surge exceeded");
            assert!(new.available + old.available >= desired - unavailable, "too many unavailable");
        }
        steps
    }

    #[test]
    fn rolls_within_surge_and_unavailability() {
        assert_eq!(simulate(3, 1, 0, 3), [(1, 3), (1, 2), (2, 2), (2, 1), (3, 1), (3, 0)]);
        assert_eq!(simulate(4, 1, 1, 4), [(1, 4), (1, 2), (3, 2), (3, 0), (4, 0)]);
        assert_eq!(simulate(2, 0, 1, 2), [(0, 1), (1, 1), (1, 0), (2, 0)]);
    }

    #[test]
    fn scales_without_old_replica_sets() {
        assert_eq!(
            rolling_step(5, 1, 1, &view("new", 1, 1), &[view("old", 0, 0)]),
            [("new".to_string(), 5)]
        );
        assert!(rolling_step(1, 1, 1, &view("new", 1, 1), &[]).is_empty());
    }

    #[test]
    fn does_not_scale_down_when_new_pods_are_unavailable() {
        // New pods never become available: the old ReplicaSet keeps desired - maxUnavailable.
        assert!(rolling_step(3, 1, 0, &view("new", 1, 0), &[view("old", 3, 3)]).is_empty());
    }

    #[test]
    fn resolves_percentages() {
        let pct = IntOrString::String("25%".into());
        assert_eq!(resolve(Some(&pct), 3, 25, true), 1);
        assert_eq!(resolve(Some(&pct), 3, 25, false), 0);
        assert_eq!(resolve(Some(&IntOrString::Int(2)), 3, 25, false), 2);
        assert_eq!(resolve(None, 10, 25, false), 2);
    }

    #[test]
    fn recreates() {
        assert_eq!(
            recreate_step(2, &view("new", 0, 0), &[view("old", 2, 2)], true),
            [("old".to_string(), 0)]
        );
        assert!(recreate_step(2, &view("new", 0, 0), &[view("old", 0, 0)], true).is_empty());
        assert_eq!(
            recreate_step(2, &view("new", 0, 0), &[view("old", 0, 0)], false),
            [("new".to_string(), 2)]
        );
    }
}
