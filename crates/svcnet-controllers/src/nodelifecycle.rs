//! Node health from Leases, as kube-controller-manager's node lifecycle controller: a node whose
//! Lease in `kube-node-lease` has not been renewed for the grace period (`--node-monitor-grace-
//! period`, 40 s) gets `Ready=Unknown` (reason `NodeStatusUnknown`); the EndpointSlice
//! controller then marks its pods' endpoints not ready. When the Lease is renewed again, Ready
//! goes back to `True` (the agent's next status post says the same).
//!
//! The lapse is measured on this controller's monotonic clock from the last time it saw
//! `renewTime` change, as kube does, so clock skew between nodes does not matter.
//!
//! Leaves out: taints (`node.kubernetes.io/unreachable`), pod eviction and zone disruption modes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::runtime::{Change, lock, spawn_watch};

/// The namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

#[derive(Debug, Clone)]
struct LeaseSeen {
    renew_time: Option<jiff::Timestamp>,
    observed: Instant,
}

#[derive(Default)]
struct State {
    leases: HashMap<String, LeaseSeen>,
    nodes: HashMap<String, Node>,
}

/// What to do about one node at a given moment (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAction {
    MarkUnknown,
    MarkReady,
}

/// The node's Ready condition status, if any.
pub fn ready_status(node: &Node) -> Option<(String, Option<String>)> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Decides what a node needs given how long ago its lease was last seen renewed.
pub fn decide(node: &Node, since_renewal: Duration, grace: Duration) -> Option<NodeAction> {
    let ready = ready_status(node);
    if since_renewal > grace {
        if ready.as_ref().map(|(s, _)| s.as_str()) != Some("Unknown") {
            return Some(NodeAction::MarkUnknown);
        }
    } else if let Some((status, reason)) = ready
        && status == "Unknown"
        && reason.as_deref() == Some("NodeStatusUnknown")
    {
        return Some(NodeAction::MarkReady);
    }
    None
}

/// The node's conditions after the action (all other conditions kept).
pub fn conditions_after(
    node: &Node,
    action: &NodeAction,
    now: jiff::Timestamp,
) -> Vec<NodeCondition> {
    let mut conditions =
        node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let (status, reason, message) = match action {
        NodeAction::MarkUnknown => {
            ("Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")
        }
        NodeAction::MarkReady => ("True", "KubeletReady", "node lease renewed"),
    };
    let idx = conditions.iter().position(|c| c.type_ == "Ready");
    let mut ready = idx
        .map(|i| conditions[i].clone())
        .unwrap_or(NodeCondition { type_: "Ready".into(), ..Default::default() });
    if ready.status != status {
        ready.last_transition_time = Some(Time(now));
    }
    ready.status = status.into();
    ready.reason = Some(reason.into());
    ready.message = Some(message.into());
    if *action == NodeAction::MarkReady {
        ready.last_heartbeat_time = Some(Time(now));
    }
    match idx {
        Some(i) => conditions[i] = ready,
        None => conditions.push(ready),
    }
    conditions
}

/// The node lifecycle controller.
pub struct NodeLifecycleController {
    client: Client,
    grace: Duration,
    state: Mutex<State>,
    wake: Notify,
}

impl NodeLifecycleController {
    pub fn new(client: Client, grace: Duration) -> Arc<Self> {
        Arc::new(NodeLifecycleController {
            client,
            grace,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
        })
    }

    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut tasks = JoinSet::new();
        spawn_watch(
            &mut tasks,
            &self,
            Api::<Lease>::namespaced(self.client.clone(), LEASE_NAMESPACE),
            &cancel,
            "leases",
            Self::on_lease,
        );
        spawn_watch(
            &mut tasks,
            &self,
            Api::<Node>::all(self.client.clone()),
            &cancel,
            "nodes",
            Self::on_node,
        );
        let c = Arc::clone(&self);
        let cc = cancel.clone();
        tasks.spawn(async move { c.monitor(cc).await });
        cancel.cancelled().await;
        tasks.shutdown().await;
    }

    fn on_lease(&self, change: Change<Lease>) {
        let now = Instant::now();
        {
            let mut s = lock(&self.state);
            let seen = |s: &mut State, lease: &Lease| {
                let name = lease.metadata.name.clone().unwrap_or_default();
                let renew_time =
                    lease.spec.as_ref().and_then(|sp| sp.renew_time.as_ref()).map(|t| t.0);
                let changed = s.leases.get(&name).is_none_or(|old| old.renew_time != renew_time);
                if changed {
                    s.leases.insert(name, LeaseSeen { renew_time, observed: now });
                }
            };
            match change {
                Change::Apply(lease) => seen(&mut s, &lease),
                Change::Delete(lease) => {
                    s.leases.remove(lease.metadata.name.as_deref().unwrap_or(""));
                }
                Change::Resync(all) => {
                    let names: std::collections::HashSet<String> =
                        all.iter().filter_map(|l| l.metadata.name.clone()).collect();
                    s.leases.retain(|n, _| names.contains(n));
                    for lease in &all {
                        seen(&mut s, lease);
                    }
                }
            }
        }
        self.wake.notify_one();
    }

    fn on_node(&self, change: Change<Node>) {
        {
            let mut s = lock(&self.state);
            match change {
                Change::Apply(node) => {
                    s.nodes.insert(node.metadata.name.clone().unwrap_or_default(), node);
                }
                Change::Delete(node) => {
                    s.nodes.remove(node.metadata.name.as_deref().unwrap_or(""));
                }
                Change::Resync(all) => {
                    s.nodes = all
                        .into_iter()
                        .map(|n| (n.metadata.name.clone().unwrap_or_default(), n))
                        .collect()
                }
            }
        }
        self.wake.notify_one();
    }

    /// Checks every node, then sleeps until the next lease could lapse or something changes.
    async fn monitor(&self, cancel: CancellationToken) {
        loop {
            let notified = self.wake.notified();
            let (actions, next_deadline) = {
                let s = lock(&self.state);
                let now = Instant::now();
                let mut actions = Vec::new();
                let mut next: Option<Instant> = None;
                for (name, node) in &s.nodes {
                    let Some(seen) = s.leases.get(name) else { continue };
                    let since = now.saturating_duration_since(seen.observed);
                    if let Some(action) = decide(node, since, self.grace) {
                        actions.push((
                            name.clone(),
                            conditions_after(node, &action, jiff::Timestamp::now()),
                            action,
                        ));
                    }
                    let deadline = seen.observed + self.grace + Duration::from_millis(1);
                    if deadline > now && next.is_none_or(|n| deadline < n) {
                        next = Some(deadline);
                    }
                }
                (actions, next)
            };
            let api: Api<Node> = Api::all(self.client.clone());
            for (name, conditions, action) in actions {
                let patch = serde_json::json!({"status": {"conditions": conditions}});
                match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await
                {
                    Ok(node) => {
                        match action {
                            NodeAction::MarkUnknown => {
                                warn!(node = %name, "node lease lapsed; Ready=Unknown")
                            }
                            NodeAction::MarkReady => {
                                info!(node = %name, "node lease renewed; Ready=True")
                            }
                        }
                        lock(&self.state).nodes.insert(name, node);
                    }
                    Err(error) => warn!(%error, node = %name, "updating node status failed"),
                }
            }
            let sleep_until = next_deadline.unwrap_or_else(|| Instant::now() + self.grace);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = notified => {}
                _ = tokio::time::sleep_until(sleep_until) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeStatus;

    fn node(status: &str, reason: Option<&str>) -> Node {
        Node {
            status: Some(NodeStatus {
                conditions: Some(vec![
                    NodeCondition {
                        type_: "MemoryPressure".into(),
                        status: "False".into(),
                        ..Default::default()
                    },
                    NodeCondition {
                        type_: "Ready".into(),
                        status: status.into(),
                        reason: reason.map(Into::into),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn lapse_and_renewal() {
        let grace = Duration::from_secs(40);
        assert_eq!(decide(&node("True", None), Duration::from_secs(39), grace), None);
        assert_eq!(
            decide(&node("True", None), Duration::from_secs(41), grace),
            Some(NodeAction::MarkUnknown)
        );
        assert_eq!(
            decide(&node("Unknown", Some("NodeStatusUnknown")), Duration::from_secs(41), grace),
            None
        );
        assert_eq!(
            decide(&node("Unknown", Some("NodeStatusUnknown")), Duration::from_secs(1), grace),
            Some(NodeAction::MarkReady)
        );
        assert_eq!(
            decide(&node("False", Some("KubeletNotReady")), Duration::from_secs(1), grace),
            None
        );
        let conds = conditions_after(
            &node("True", None),
            &NodeAction::MarkUnknown,
            jiff::Timestamp::UNIX_EPOCH,
        );
        assert_eq!(conds.len(), 2);
        assert_eq!(conds[1].status, "Unknown");
        assert_eq!(conds[1].reason.as_deref(), Some("NodeStatusUnknown"));
        assert!(conds[1].last_transition_time.is_some());
    }
}
