//! The difference between two plans, so data planes touch only what changed.
//!
//! Pure: `diff(old, new)` and `PlanDiff::apply(old) == new`. The unit of change is one
//! `ServicePortPlan` (a Service port in one family); finer diffs (per frontend, per backend)
//! are for each data plane to derive from the two `ServicePortPlan`s.

use std::collections::BTreeMap;

use crate::plan::types::{NodePlan, ProxyPlan, ServicePortKey, ServicePortPlan};

/// What turns one plan into another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanDiff {
    /// The new node-wide settings, when they changed (data planes usually resync fully then).
    pub node: Option<NodePlan>,
    /// Service ports that are new or changed, with their new plan.
    pub upserted: BTreeMap<ServicePortKey, ServicePortPlan>,
    /// Service ports that are gone.
    pub removed: Vec<ServicePortKey>,
    /// The new warnings, when they changed.
    pub warnings: Option<Vec<String>>,
}

impl PlanDiff {
    /// Whether the two plans were equal.
    pub fn is_empty(&self) -> bool {
        self.node.is_none()
            && self.upserted.is_empty()
            && self.removed.is_empty()
            && self.warnings.is_none()
    }

    /// Applies this difference to `old`, giving the new plan.
    pub fn apply(&self, old: &ProxyPlan) -> ProxyPlan {
        let mut plan = old.clone();
        if let Some(node) = &self.node {
            plan.node = node.clone();
        }
        for key in &self.removed {
            plan.service_ports.remove(key);
        }
        for (key, port) in &self.upserted {
            plan.service_ports.insert(key.clone(), port.clone());
        }
        if let Some(warnings) = &self.warnings {
            plan.warnings = warnings.clone();
        }
        plan
    }
}

/// What changed from `old` to `new`.
pub fn diff(old: &ProxyPlan, new: &ProxyPlan) -> PlanDiff {
    let mut out = PlanDiff {
        node: (old.node != new.node).then(|| new.node.clone()),
        warnings: (old.warnings != new.warnings).then(|| new.warnings.clone()),
        ..PlanDiff::default()
    };
    for (key, port) in &new.service_ports {
        if old.service_ports.get(key) != Some(port) {
            out.upserted.insert(key.clone(), port.clone());
        }
    }
    out.removed = old
        .service_ports
        .keys()
        .filter(|key| !new.service_ports.contains_key(*key))
        .cloned()
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::plan::types::*;

    fn key() -> impl Strategy<Value = ServicePortKey> {
        (0u8..6, prop::bool::ANY, prop::bool::ANY).prop_map(|(name, udp, v6)| ServicePortKey {
            namespace: "default".to_string(),
            name: format!("svc-{name}"),
            port_name: String::new(),
            protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
            family: if v6 { IpFamily::V6 } else { IpFamily::V4 },
        })
    }

    fn backend() -> impl Strategy<Value = Backend> {
        (0u8..8, 1u32..4, prop::bool::ANY).prop_map(|(host, weight, is_local)| Backend {
            ip: IpAddr::from([10, 0, 0, host]),
            port: 80,
            weight,
            node_name: None,
            zone: None,
            is_local,
            ready: true,
            target: None,
        })
    }

    fn port_plan() -> impl Strategy<Value = ServicePortPlan> {
        (
            prop::collection::vec(backend(), 0..4),
            1u16..4,
            prop::option::of(1u32..100),
            prop::bool::ANY,
        )
            .prop_map(|(backends, port, affinity, local)| ServicePortPlan {
                frontends: vec![Frontend {
                    kind: FrontendKind::ClusterIp,
                    address: Some(IpAddr::from([10, 96, 0, 1])),
                    port,
                    protocol: Protocol::Tcp,
                }],
                has_endpoints_anywhere: !backends.is_empty(),
                local_backends: backends.iter().filter(|b| b.is_local).cloned().collect(),
                cluster_backends: backends,
                internal_traffic_policy: if local {
                    TrafficPolicy::Local
                } else {
                    TrafficPolicy::Cluster
                },
                external_traffic_policy: TrafficPolicy::Cluster,
                session_affinity_timeout: affinity,
                scheduler: Scheduler::Random,
                load_balancer_source_ranges: Vec::new(),
                health_check_node_port: None,
            })
    }

    fn proxy_plan() -> impl Strategy<Value = ProxyPlan> {
        (
            prop::collection::btree_map(key(), port_plan(), 0..6),
            prop::option::of("zone-[ab]"),
            prop::collection::vec("[a-c]", 0..2),
        )
            .prop_map(|(service_ports, zone, warnings)| ProxyPlan {
                service_ports,
                node: NodePlan { node_name: "node-1".to_string(), zone, ..NodePlan::default() },
                warnings,
            })
    }

    proptest! {
        #[test]
        fn apply_of_diff_gives_the_new_plan(a in proxy_plan(), b in proxy_plan()) {
            let d = diff(&a, &b);
            prop_assert_eq!(d.apply(&a), b.clone());
            prop_assert_eq!(d.is_empty(), a == b);
            prop_assert!(diff(&b, &b).is_empty());
        }
    }
}
