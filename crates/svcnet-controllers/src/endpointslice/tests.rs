//! Check-style tests of `desired_slices` and `desired_endpoints`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Node, NodeCondition, NodeStatus, Pod, PodCondition, PodIP, PodSpec,
    PodStatus, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::desired::*;

fn service(name: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some("svc-uid".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some([("app".to_string(), "web".to_string())].into()),
            cluster_ip: Some("10.96.0.10".into()),
            ip_families: Some(vec!["IPv4".into()]),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("web".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn pod(name: &str, ip: &str, ready: bool, container_port: i32, node: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(format!("uid-{name}")),
            labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![Container {
                name: "c".into(),
                ports: Some(vec![ContainerPort {
                    name: Some("web".into()),
                    container_port,
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip.into()),
            pod_ips: Some(vec![PodIP { ip: ip.into() }]),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn node(name: &str, zone: &str, ready: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([(LABEL_ZONE.to_string(), zone.to_string())].into()),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: ready.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn nodes() -> BTreeMap<String, Node> {
    [
        ("n1".to_string(), node("n1", "zone-a", "True")),
        ("n2".to_string(), node("n2", "zone-b", "Unknown")),
    ]
    .into()
}

/// A compact rendering of changes: one line per slice, `op type ports: addr(r/s/t node zone hint)…`.
fn render(changes: &SliceChanges) -> String {
    let mut out = Vec::new();
    for (op, slices) in
        [("create", &changes.create), ("update", &changes.update), ("delete", &changes.delete)]
    {
        for s in slices {
            let ports: Vec<String> = s
                .ports
                .iter()
                .flatten()
                .map(|p| format!("{}={}", p.name.as_deref().unwrap_or(""), p.port.unwrap_or(0)))
                .collect();
            let eps: Vec<String> = s
                .endpoints
                .iter()
                .map(|e| {
                    let c = e.conditions.clone().unwrap_or_default();
                    let b = |v: Option<bool>| if v == Some(true) { "1" } else { "0" };
                    let hint = e
                        .hints
                        .as_ref()
                        .and_then(|h| h.for_zones.as_ref())
                        .map(|z| z.iter().map(|z| z.name.clone()).collect::<Vec<_>>().join("+"))
                        .unwrap_or_default();
                    format!(
                        "{}({}{}{} {} {} {})",
                        e.addresses[0],
                        b(c.ready),
                        b(c.serving),
                        b(c.terminating),
                        e.node_name.as_deref().unwrap_or("-"),
                        e.zone.as_deref().unwrap_or("-"),
                        if hint.is_empty() { "-" } else { &hint }
                    )
                })
                .collect();
            out.push(format!("{op} {} [{}]: {}", s.address_type, ports.join(","), eps.join(" ")));
        }
    }
    out.join("\n")
}

fn check(
    svc: &Service,
    pods: &[Pod],
    existing: &[EndpointSlice],
    max: usize,
    expect: &str,
) -> SliceChanges {
    let refs: Vec<&Pod> = pods.iter().collect();
    let changes = desired_slices(svc, &refs, &nodes(), existing, max);
    assert_eq!(render(&changes), expect.trim());
    changes
}

/// What the API server would store for created slices.
fn stored(changes: &SliceChanges) -> Vec<EndpointSlice> {
    let mut out: Vec<EndpointSlice> = changes.update.clone();
    for (i, s) in changes.create.iter().enumerate() {
        let mut s = s.clone();
        s.metadata.name = Some(format!("web-{i}"));
        s.metadata.namespace = Some("ns".into());
        out.push(s);
    }
    out
}

#[test]
fn basic_conditions_zone_and_unreachable_node() {
    let mut terminating = pod("p3", "10.0.0.3", true, 8080, "n1");
    terminating.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
    let changes = check(
        &service("web"),
        &[
            pod("p1", "10.0.0.1", true, 8080, "n1"),
            pod("p2", "10.0.0.2", false, 8080, "n1"),
            terminating,
            pod("p4", "10.0.0.4", true, 8080, "n2"),
        ],
        &[],
        100,
        "create IPv4 [http=8080]: 10.0.0.1(110 n1 zone-a -) 10.0.0.2(000 n1 zone-a -) 10.0.0.3(011 n1 zone-a -) 10.0.0.4(000 n2 zone-b -)",
    );
    let slice = &changes.create[0];
    let labels = slice.metadata.labels.as_ref().unwrap();
    assert_eq!(labels.get(LABEL_SERVICE_NAME).map(String::as_str), Some("web"));
    assert_eq!(labels.get(LABEL_MANAGED_BY).map(String::as_str), Some(CONTROLLER_NAME));
    assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
    assert_eq!(slice.metadata.owner_references.as_ref().unwrap()[0].uid, "svc-uid");
    assert_eq!(slice.endpoints[0].target_ref.as_ref().unwrap().name.as_deref(), Some("p1"));
}

#[test]
fn named_ports_resolve_per_pod() {
    check(
        &service("web"),
        &[pod("p1", "10.0.0.1", true, 8080, "n1"), pod("p2", "10.0.0.2", true, 9090, "n1")],
        &[],
        100,
        "create IPv4 [http=8080]: 10.0.0.1(110 n1 zone-a -)\ncreate IPv4 [http=9090]: 10.0.0.2(110 n1 zone-a -)",
    );
}

#[test]
fn publish_not_ready_and_prefer_close_hints() {
    let mut svc = service("web");
    svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    svc.spec.as_mut().unwrap().traffic_distribution = Some("PreferClose".into());
    check(
        &svc,
        &[pod("p2", "10.0.0.2", false, 8080, "n1")],
        &[],
        100,
        "create IPv4 [http=8080]: 10.0.0.2(100 n1 zone-a zone-a)",
    );
}

#[test]
fn selectorless_services_are_left_alone() {
    let mut svc = service("web");
    svc.spec.as_mut().unwrap().selector = None;
    let user_slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some("mine".into()),
            labels: Some([(LABEL_SERVICE_NAME.to_string(), "web".to_string())].into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: vec![],
        ports: None,
    };
    check(&svc, &[pod("p1", "10.0.0.1", true, 8080, "n1")], &[user_slice], 100, "");
}

#[test]
fn two_hundred_fifty_pods_make_three_slices_and_one_change_rewrites_one() {
    let pods: Vec<Pod> = (0..250)
        .map(|i| {
            pod(&format!("p{i:03}"), &format!("10.0.{}.{}", i / 200, i % 200 + 1), true, 8080, "n1")
        })
        .collect();
    let refs: Vec<&Pod> = pods.iter().collect();
    let first = desired_slices(&service("web"), &refs, &nodes(), &[], 100);
    let sizes: Vec<usize> = first.create.iter().map(|s| s.endpoints.len()).collect();
    assert_eq!(sizes, vec![100, 100, 50]);
    let existing = stored(&first);
    // Nothing changed: nothing to write.
    assert!(desired_slices(&service("web"), &refs, &nodes(), &existing, 100).is_empty());
    // One pod turns unready: exactly one slice is updated.
    let mut pods2 = pods.clone();
    pods2[123] = pod("p123", "10.0.0.124", false, 8080, "n1");
    let refs2: Vec<&Pod> = pods2.iter().collect();
    let changes = desired_slices(&service("web"), &refs2, &nodes(), &existing, 100);
    assert_eq!((changes.create.len(), changes.update.len(), changes.delete.len()), (0, 1, 0));
    // One pod deleted and one added: the added one fills the slice that is written anyway.
    let mut pods3 = pods.clone();
    pods3.remove(5);
    pods3.push(pod("p999", "10.0.9.9", true, 8080, "n1"));
    let refs3: Vec<&Pod> = pods3.iter().collect();
    let changes = desired_slices(&service("web"), &refs3, &nodes(), &existing, 100);
    assert_eq!((changes.create.len(), changes.update.len(), changes.delete.len()), (0, 1, 0));
    // All pods gone: all slices deleted.
    let changes = desired_slices(&service("web"), &[], &nodes(), &existing, 100);
    assert_eq!(changes.delete.len(), 3);
}

#[test]
fn dual_stack_gets_a_slice_per_family() {
    let mut svc = service("web");
    svc.spec.as_mut().unwrap().ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
    let mut p = pod("p1", "10.0.0.1", true, 8080, "n1");
    p.status.as_mut().unwrap().pod_ips =
        Some(vec![PodIP { ip: "10.0.0.1".into() }, PodIP { ip: "fd00::1".into() }]);
    check(
        &svc,
        &[p],
        &[],
        100,
        "create IPv4 [http=8080]: 10.0.0.1(110 n1 zone-a -)\ncreate IPv6 [http=8080]: fd00::1(110 n1 zone-a -)",
    );
}

#[test]
fn legacy_endpoints_mirror() {
    let svc = service("web");
    let pods = [pod("p1", "10.0.0.1", true, 8080, "n1"), pod("p2", "10.0.0.2", false, 8080, "n1")];
    let refs: Vec<&Pod> = pods.iter().collect();
    let ep = desired_endpoints(&svc, &refs, &nodes()).unwrap();
    let subsets = ep.subsets.unwrap();
    assert_eq!(subsets.len(), 1);
    assert_eq!(subsets[0].addresses.as_ref().unwrap()[0].ip, "10.0.0.1");
    assert_eq!(subsets[0].not_ready_addresses.as_ref().unwrap()[0].ip, "10.0.0.2");
    assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8080);
}

/// Applies changes as the API server would (created slices get names).
fn apply(
    existing: &[EndpointSlice],
    changes: &SliceChanges,
    next_name: &mut usize,
) -> Vec<EndpointSlice> {
    let gone: Vec<&str> = changes
        .delete
        .iter()
        .chain(changes.update.iter())
        .filter_map(|s| s.metadata.name.as_deref())
        .collect();
    let mut out: Vec<EndpointSlice> = existing
        .iter()
        .filter(|s| !gone.contains(&s.metadata.name.as_deref().unwrap_or("")))
        .cloned()
        .collect();
    out.extend(changes.update.iter().cloned());
    for s in &changes.create {
        let mut s = s.clone();
        s.metadata.name = Some(format!("web-{next_name}"));
        *next_name += 1;
        out.push(s);
    }
    out
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]
    /// Whatever sequence of pod sets arrives, the applied slices hold exactly the wanted
    /// endpoints, each once, at most `max` per slice, and a second reconcile changes nothing.
    #[test]
    fn slices_converge(steps in proptest::collection::vec(proptest::collection::btree_map(0u16..60, (proptest::bool::ANY, 0u8..2), 0..60), 1..8), max in 1usize..20) {
        let svc = service("web");
        let mut existing: Vec<EndpointSlice> = Vec::new();
        let mut next_name = 0;
        for pods_spec in steps {
            let pods: Vec<Pod> = pods_spec.iter().map(|(i, (ready, port))| pod(&format!("p{i}"), &format!("10.0.0.{}", i + 1), *ready, 8080 + i32::from(*port), "n1")).collect();
            let refs: Vec<&Pod> = pods.iter().collect();
            let changes = desired_slices(&svc, &refs, &nodes(), &existing, max);
            existing = apply(&existing, &changes, &mut next_name);
            let mut seen = std::collections::BTreeMap::new();
            for s in &existing {
                proptest::prop_assert!(!s.endpoints.is_empty() && s.endpoints.len() <= max);
                for e in &s.endpoints {
                    let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
                    let port = s.ports.as_ref().and_then(|p| p[0].port).unwrap_or(0);
                    proptest::prop_assert!(seen.insert(e.addresses[0].clone(), (ready, port)).is_none(), "duplicate {}", e.addresses[0]);
                }
            }
            let want: std::collections::BTreeMap<String, (bool, i32)> = pods_spec.iter().map(|(i, (ready, port))| (format!("10.0.0.{}", i + 1), (*ready, 8080 + i32::from(*port)))).collect();
            proptest::prop_assert_eq!(&seen, &want);
            proptest::prop_assert!(desired_slices(&svc, &refs, &nodes(), &existing, max).is_empty());
        }
    }
}
