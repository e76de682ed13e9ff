use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::*;

fn node(name: &str, zone: &str, ready: bool) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {ZONE_LABEL: zone}},
        "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
    }))
    .expect("node")
}

fn lb_service(name: &str, ips: &[&str], local: bool) -> Service {
    let ingress: Vec<_> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": if local { "Local" } else { "Cluster" }},
        "status": {"loadBalancer": {"ingress": ingress}},
    }))
    .expect("service")
}

/// One slice of `service` with an endpoint per `(node, ready)`.
fn slice(service: &str, endpoints: &[(&str, Option<bool>)]) -> EndpointSlice {
    let endpoints: Vec<_> = endpoints
        .iter()
        .enumerate()
        .map(|(idx, (node, ready))| {
            let conditions = match ready {
                Some(ready) => json!({"ready": ready}),
                None => json!({}),
            };
            json!({"addresses": [format!("10.244.0.{}", idx + 1)], "nodeName": node, "conditions": conditions})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("{service}-abc"), "namespace": "demo", "labels": {SERVICE_NAME_LABEL: service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
    }))
    .expect("slice")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// `eligible_nodes` as address → node names.
fn check_eligible(
    services: &[Service],
    slices: &[EndpointSlice],
    nodes: &[Node],
    expected: &[(&str, &[&str])],
) {
    let services: Vec<&Service> = services.iter().collect();
    let slices: Vec<&EndpointSlice> = slices.iter().collect();
    let nodes: Vec<&Node> = nodes.iter().collect();
    let got: BTreeMap<String, Vec<String>> = eligible_nodes(&services, &slices, &nodes)
        .into_iter()
        .map(|(address, infos)| (address.to_string(), infos.into_iter().map(|i| i.name).collect()))
        .collect();
    let expected: BTreeMap<String, Vec<String>> = expected
        .iter()
        .map(|(a, names)| (a.to_string(), names.iter().map(|n| n.to_string()).collect()))
        .collect();
    assert_eq!(got, expected);
}

fn three_nodes() -> Vec<Node> {
    vec![node("node-1", "a", true), node("node-2", "b", true), node("node-3", "a", true)]
}

#[test]
fn cluster_policy_uses_every_ready_node() {
    let mut nodes = three_nodes();
    nodes[2] = node("node-3", "a", false);
    check_eligible(
        &[lb_service("web", &["10.0.0.200"], false)],
        &[],
        &nodes,
        &[("10.0.0.200", &["node-1", "node-2"])],
    );
}

#[test]
fn excluded_nodes_never_announce() {
    let mut nodes = three_nodes();
    nodes[0].metadata.labels.get_or_insert_default().insert(EXCLUDE_LABEL.into(), String::new());
    check_eligible(
        &[lb_service("web", &["10.0.0.200"], false)],
        &[],
        &nodes,
        &[("10.0.0.200", &["node-2", "node-3"])],
    );
}

#[test]
fn local_policy_needs_a_ready_local_endpoint() {
    let slices =
        [slice("web", &[("node-1", Some(true)), ("node-2", Some(false)), ("node-3", None)])];
    check_eligible(
        &[lb_service("web", &["10.0.0.200"], true)],
        &slices,
        &three_nodes(),
        &[("10.0.0.200", &["node-1", "node-3"])],
    );
    // No ready endpoint anywhere: nobody announces (traffic would be dropped).
    let slices = [slice("web", &[("node-1", Some(false))])];
    check_eligible(
        &[lb_service("web", &["10.0.0.200"], true)],
        &slices,
        &three_nodes(),
        &[("10.0.0.200", &[])],
    );
    // Slices of another Service do not count.
    let slices = [slice("other", &[("node-1", Some(true))])];
    check_eligible(
        &[lb_service("web", &["10.0.0.200"], true)],
        &slices,
        &three_nodes(),
        &[("10.0.0.200", &[])],
    );
}

#[test]
fn only_vip_addresses_of_load_balancers_are_announced() {
    let mut proxy_mode = lb_service("proxied", &["10.0.0.201"], false);
    if let Some(ingress) = proxy_mode
        .status
        .as_mut()
        .and_then(|s| s.load_balancer.as_mut())
        .and_then(|l| l.ingress.as_mut())
    {
        ingress[0].ip_mode = Some("Proxy".into());
    }
    let mut node_port = lb_service("np", &["10.0.0.202"], false);
    node_port.spec.as_mut().expect("spec").type_ = Some("NodePort".into());
    let mut vip = lb_service("vip", &["10.0.0.203", "fd00::203"], false);
    if let Some(ingress) =
        vip.status.as_mut().and_then(|s| s.load_balancer.as_mut()).and_then(|l| l.ingress.as_mut())
    {
        ingress[0].ip_mode = Some("VIP".into());
    }
    let pending = lb_service("pending", &[], false);
    check_eligible(
        &[proxy_mode, node_port, vip, pending],
        &[],
        &three_nodes()[..1],
        &[("10.0.0.203", &["node-1"]), ("fd00::203", &["node-1"])],
    );
}

#[test]
fn shared_address_needs_nodes_eligible_for_every_service() {
    let slices = [slice("web", &[("node-2", Some(true))])];
    let services =
        [lb_service("web", &["10.0.0.200"], true), lb_service("api", &["10.0.0.200"], false)];
    check_eligible(&services, &slices, &three_nodes(), &[("10.0.0.200", &["node-2"])]);
}

fn infos(nodes: &[(&str, &str)]) -> Vec<NodeInfo> {
    nodes
        .iter()
        .map(|(name, zone)| NodeInfo { name: name.to_string(), zone: zone.to_string() })
        .collect()
}

#[test]
fn ranking_is_stable_and_independent_of_input_order() {
    let nodes = infos(&[("node-1", "a"), ("node-2", "b"), ("node-3", "a"), ("node-4", "b")]);
    let mut reversed = nodes.clone();
    reversed.reverse();
    for last in 0..50u8 {
        let address = ip(&format!("10.0.0.{last}"));
        assert_eq!(ranked(address, &nodes), ranked(address, &reversed));
    }
    // Pinned, so a change of the hash (which would move addresses on upgrade) is noticed.
    assert_eq!(ranked(ip("10.200.0.200"), &nodes), ["node-1", "node-4", "node-3", "node-2"]);
}

#[test]
fn ranking_alternates_zones() {
    let nodes = infos(&[("node-1", "a"), ("node-2", "a"), ("node-3", "a"), ("node-4", "b")]);
    for last in 0..50u8 {
        let order = ranked(ip(&format!("10.0.0.{last}")), &nodes);
        let zone = |name: &str| if name == "node-4" { "b" } else { "a" };
        assert_ne!(
            zone(&order[0]),
            zone(&order[1]),
            "first fallback is in another zone: {order:?}"
        );
    }
}

#[test]
fn addresses_spread_over_nodes() {
    let nodes = infos(&[("node-1", "a"), ("node-2", "b"), ("node-3", "c")]);
    let mut first: BTreeMap<String, usize> = BTreeMap::new();
    for last in 0..60u8 {
        *first.entry(ranked(ip(&format!("10.0.0.{last}")), &nodes)[0].clone()).or_default() += 1;
    }
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(first.values().all(|n| *n >= 10), "each node is preferred for a fair share: {first:?}");
}

#[test]
fn removing_a_node_moves_only_its_addresses() {
    let all = infos(&[("node-1", "a"), ("node-2", "b"), ("node-3", "c")]);
    let without_3 = infos(&[("node-1", "a"), ("node-2", "b")]);
    for last in 0..60u8 {
        let address = ip(&format!("10.0.0.{last}"));
        let before = ranked(address, &all)[0].clone();
        if before != "node-3" {
            assert_eq!(ranked(address, &without_3)[0], before);
        }
    }
}

const GRACE: Duration = Duration::from_millis(250);

fn order(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn free(last_holder: Option<&str>, free_for_ms: u64) -> LeaseView {
    LeaseView::Free {
        last_holder: last_holder.map(str::to_string),
        free_for: Duration::from_millis(free_for_ms),
    }
}

fn held(holder: &str) -> LeaseView {
    LeaseView::Held { holder: holder.to_string() }
}

#[test]
fn decide_cases() {
    let ranked = order(&["node-1", "node-2", "node-3"]);
    let cases: &[(&str, LeaseView, Action)] = &[
        // The preferred node takes an absent Lease at once; the others wait their turn.
        ("node-1", free(None, 0), Action::Acquire),
        ("node-2", free(None, 0), Action::Wait),
        ("node-2", free(None, 250), Action::Acquire),
        ("node-3", free(None, 250), Action::Wait),
        ("node-3", free(None, 500), Action::Acquire),
        // The holder expired: it is skipped, so the next in order takes over at once.
        ("node-2", free(Some("node-1"), 0), Action::Acquire),
        ("node-3", free(Some("node-1"), 0), Action::Wait),
        ("node-3", free(Some("node-1"), 250), Action::Acquire),
        // The previous holder may take its own expired Lease back in its own turn.
        ("node-1", free(Some("node-1"), 0), Action::Acquire),
        // Held: the holder renews, everyone else waits; an ineligible holder releases.
        ("node-1", held("node-1"), Action::Renew),
        ("node-2", held("node-1"), Action::Wait),
        ("node-4", held("node-4"), Action::Release),
        // Ineligible nodes never acquire.
        ("node-4", free(None, 10_000), Action::Wait),
    ];
    for (me, view, expected) in cases {
        assert_eq!(decide(me, &ranked, view, GRACE), *expected, "{me} with {view:?}");
    }
}

#[test]
fn failover_goes_to_another_zone() {
    // node-1 (zone a) held the address and died; its zone peer node-3 is ranked after node-2.
    let nodes = infos(&[("node-1", "a"), ("node-2", "b"), ("node-3", "a")]);
    let address = (0..255u8)
        .map(|last| ip(&format!("10.0.0.{last}")))
        .find(|a| ranked(*a, &nodes)[0] == "node-1")
        .expect("some address prefers node-1");
    let order = ranked(address, &nodes);
    assert_eq!(order[1], "node-2");
    let view = free(Some("node-1"), 0);
    assert_eq!(decide("node-2", &order, &view, GRACE), Action::Acquire);
    assert_eq!(decide("node-3", &order, &view, GRACE), Action::Wait);
}
