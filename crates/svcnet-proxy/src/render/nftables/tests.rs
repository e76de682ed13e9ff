use super::*;
use crate::Protocol;
use crate::render::testplans::*;

/// Loads `script` into a fresh network namespace with `nft -c` (check only) when possible.
fn nft_accepts(script: &str) -> Option<Result<(), String>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("unshare")
        .args(["-n", "nft", "-c", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(script.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if stderr.contains("Operation not permitted") && !out.status.success() {
        return None;
    }
    Some(if out.status.success() { Ok(()) } else { Err(stderr) })
}

#[test]
fn full_render_is_accepted_by_nft() {
    let script = render(&everything());
    if let Some(result) = nft_accepts(&script) {
        result.unwrap_or_else(|e| panic!("{e}\n{script}"));
    }
}

#[test]
fn update_of_one_backend_is_elements_only() {
    let old = everything();
    let mut new = old.clone();
    let sp = new.service_ports.get_mut(&key("web", Protocol::Tcp, IpFamily::V4)).expect("web");
    sp.cluster_backends[2].ip = ip("10.244.2.40");
    let update = render_update(&old, &new);
    assert!(!update.contains("chain"), "{update}");
    assert!(update.contains("delete element inet svcnet backend-2-v4"), "{update}");
    assert!(update.contains("10.96.0.10 . tcp . 80 : 10.244.2.40 . 8080"), "{update}");
    assert_eq!(render_update(&new, &new), "");
}

#[test]
fn update_applies_on_top_of_full_render() {
    let old = everything();
    let mut new = old.clone();
    new.service_ports.remove(&key("maglev", Protocol::Tcp, IpFamily::V4));
    let sp = new.service_ports.get_mut(&key("web", Protocol::Tcp, IpFamily::V4)).expect("web");
    sp.cluster_backends.push(backend("10.244.3.3", 8080, false));
    sp.session_affinity_timeout = Some(60);
    let script = format!("{}{}", render(&old), render_update(&old, &new));
    if let Some(result) = nft_accepts(&script) {
        result.unwrap_or_else(|e| panic!("{e}\n{script}"));
    }
}

#[test]
fn weights_become_slot_counts() {
    let mut b = vec![backend("10.0.0.1", 1, true), backend("10.0.0.2", 1, true)];
    b[0].weight = 20;
    b[1].weight = 40;
    let s = slots(&b, Scheduler::Random);
    assert_eq!(s.iter().filter(|x| x.ip == ip("10.0.0.1")).count(), 1);
    assert_eq!(s.len(), 3);
}

#[test]
fn maglev_table_is_balanced_and_disrupts_little() {
    let backends: Vec<Backend> =
        (1..=5).map(|i| backend(&format!("10.0.0.{i}"), 80, true)).collect();
    let t = maglev_table(&backends);
    let m = t.len();
    assert_eq!(t.len(), m);
    for i in 0..5 {
        let count = t.iter().filter(|x| **x == i).count();
        assert!((count as i64 - (m / 5) as i64).abs() <= 2, "backend {i}: {count}");
    }
    let fewer: Vec<Backend> = backends.iter().filter(|b| b.ip != ip("10.0.0.3")).cloned().collect();
    let t2 = maglev_table(&fewer);
    let moved = t
        .iter()
        .zip(&t2)
        .filter(|(a, b)| backends[**a].ip != ip("10.0.0.3") && backends[**a].ip != fewer[**b].ip)
        .count();
    assert!(moved < m / 10, "{moved} buckets moved");
}

#[test]
fn no_endpoints_reject_and_local_drop() {
    let script = render(&everything());
    let l = layout(&everything());
    let has = |set: &str, key: &str| l.sets[set].elements.contains_key(key);
    assert!(has("no-endpoint-reject-v4", "10.96.0.14 . tcp . 80"), "{script}");
    assert!(has("no-endpoint-drop-v4", "192.168.50.1 . tcp . 30015"), "{script}");
    // The Local frontend's cluster backends remain reachable for pod and host sources.
    assert!(has("shortcut-pick-random-1-v4", "192.168.50.1 . tcp . 30015"), "{script}");
}

/// `update_layout` leaves `current` with exactly the elements of `layout(new)` (extra chains
/// and sets may stay, empty), whichever path it takes, and its script loads.
fn assert_update_matches(old: &ProxyPlan, new: &ProxyPlan) -> String {
    let mut current = layout(old);
    let script = update_layout(&mut current, old, new);
    let want = layout(new);
    for (name, set) in want.sets.iter().filter(|(_, s)| !s.dynamic) {
        assert_eq!(current.sets[name].elements, set.elements, "set {name}\n{script}");
    }
    for (name, set) in current.sets.iter().filter(|(n, _)| !want.sets.contains_key(*n)) {
        assert!(set.dynamic || set.elements.is_empty(), "stale elements in {name}\n{script}");
    }
    for (name, chain) in &want.chains {
        assert_eq!(current.chains[name].rules, chain.rules, "chain {name}\n{script}");
    }
    if let Some(result) = nft_accepts(&format!("{}{script}", render(old))) {
        result.expect("update loads");
    }
    script
}

#[test]
fn update_of_one_service_touches_only_its_elements() {
    let old = everything();
    let web = key("web", Protocol::Tcp, IpFamily::V4);
    // One endpoint replaced: element changes of that Service only.
    let mut new = old.clone();
    new.service_ports.get_mut(&web).expect("web").cluster_backends[0].port += 1;
    let script = assert_update_matches(&old, &new);
    assert!(script.lines().all(|l| !l.contains("chain") && !l.contains("rule")), "{script}");
    assert_eq!(script.matches(" element ").count(), 2, "{script}");
    // A Service removed, one added (same shape as another), one with a new slot count
    // (needs a new pick chain: the whole diff), the maglev Service's backends changed.
    let mut new = old.clone();
    let removed = new.service_ports.remove(&web).expect("web");
    new.service_ports.insert(key("web2", Protocol::Tcp, IpFamily::V4), {
        let mut sp = removed.clone();
        sp.frontends[0].address = Some(ip("10.96.0.99"));
        sp
    });
    assert_update_matches(&old, &new);
    let mut grown = old.clone();
    let dns = key("dns", Protocol::Udp, IpFamily::V4);
    let sp = grown.service_ports.get_mut(&dns).expect("dns");
    sp.cluster_backends.push(backend("10.244.9.9", 53, false));
    assert_update_matches(&old, &grown);
    let mut mag = old.clone();
    let m = key("maglev", Protocol::Tcp, IpFamily::V4);
    mag.service_ports.get_mut(&m).expect("maglev").cluster_backends.remove(0);
    assert_update_matches(&old, &mag);
    // Node settings changed: whole diff, still exact.
    let mut node = old.clone();
    node.node.masquerade_all = !node.node.masquerade_all;
    assert_update_matches(&old, &node);
    assert_eq!(update_layout(&mut layout(&old), &old, &old), "");
}

/// IPv4 and IPv6 Services with affinity (TCP and UDP, two timeouts, Local external traffic):
/// the script loads, IPv4 uses the per-backend map with every pool's backends valid, IPv6
/// the per-slot sets.
fn affinity_plan() -> ProxyPlan {
    let mut plan = everything();
    let mut udp = service(
        vec![frontend(FrontendKind::ClusterIp, Some("10.96.0.54"), 53, Protocol::Udp)],
        vec![backend("10.244.1.7", 53, true), backend("10.244.2.8", 53, false)],
    );
    udp.session_affinity_timeout = Some(300);
    plan.service_ports.insert(key("udp-sticky", Protocol::Udp, IpFamily::V4), udp);
    let mut v6 = service(
        vec![frontend(FrontendKind::ClusterIp, Some("fd00:96::11"), 443, Protocol::Tcp)],
        vec![backend("fd00:244::5", 8443, true), backend("fd00:244::6", 8443, false)],
    );
    v6.session_affinity_timeout = Some(300);
    plan.service_ports.insert(key("v6-sticky", Protocol::Tcp, IpFamily::V6), v6);
    plan
}

#[test]
fn affinity_is_per_backend_on_ipv4() {
    let plan = affinity_plan();
    let l = layout(&plan);
    let script = render(&plan);
    if let Some(result) = nft_accepts(&script) {
        result.unwrap_or_else(|e| panic!("{e}\n{script}"));
    }
    let map = &l.sets["affinity-v4"];
    assert!(map.dynamic && map.kind == "map" && map.elements.is_empty(), "{script}");
    // The Local frontend: the local pool for outside clients, every backend for pods.
    let valid = &l.sets["affinity-backends-v4"].elements;
    for k in [
        "203.0.113.11 . tcp . 443 . 10.244.1.5 . 8443",
        "203.0.113.11 . tcp . 443 . 10.244.2.6 . 8443",
    ] {
        assert!(valid.contains_key(k), "{k}\n{script}");
    }
    assert!(l.sets["affinity-t10800-v4"].elements.contains_key("10.96.0.11 . tcp . 443"));
    assert!(l.sets["affinity-t300-v4"].elements.contains_key("10.96.0.54 . udp . 53"));
    let rules = &l.chains["affinity"].rules;
    assert!(rules.iter().any(|r| r.starts_with("meta l4proto udp") && r.contains("timeout 300s")));
    assert!(rules[0].ends_with(" drop"), "guards come first: {rules:?}");
    // No per-slot affinity on IPv4, and the pick chains share the slot chains.
    assert!(!l.sets.keys().any(|s| s.starts_with("affinity-0-v4")), "{script}");
    assert!(
        l.chains
            .values()
            .flat_map(|c| &c.rules)
            .all(|r| !r.contains("aff-slot") || r.contains("-v6"))
    );
    // IPv6: per-slot sets.
    assert!(l.sets["affinity-0-v6"].dynamic, "{script}");
}

#[test]
fn affinity_backend_change_is_elements_only() {
    let old = affinity_plan();
    let mut new = old.clone();
    let k = key("udp-sticky", Protocol::Udp, IpFamily::V4);
    new.service_ports.get_mut(&k).expect("udp").cluster_backends[1].ip = ip("10.244.2.9");
    let script = assert_update_matches(&old, &new);
    assert!(script.lines().all(|l| !l.contains("chain") && !l.contains("rule")), "{script}");
    assert!(script.contains("delete element inet svcnet affinity-backends-v4"), "{script}");
    assert!(!script.contains("affinity-v4 "), "the dynamic map is never touched: {script}");
}
