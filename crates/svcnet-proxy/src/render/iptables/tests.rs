use super::*;
use crate::Protocol;
use crate::render::testplans::*;

/// Runs `iptables-restore --test` on `input` in a fresh network namespace, when possible.
fn restore_accepts(tool: &str, input: &str) -> Option<Result<(), String>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("unshare")
        .args(["-n", tool, "--test", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(input.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if stderr.contains("Operation not permitted") || stderr.contains("No such file") {
        return None;
    }
    Some(if out.status.success() { Ok(()) } else { Err(stderr) })
}

#[test]
fn full_render_is_accepted_by_iptables_restore() {
    let plan = everything();
    for (tool, family) in [("iptables-restore", IpFamily::V4), ("ip6tables-restore", IpFamily::V6)]
    {
        let input = render_family(&plan, family, &BTreeSet::new());
        if let Some(result) = restore_accepts(tool, &input) {
            result.unwrap_or_else(|e| panic!("{tool}: {e}\n{input}"));
        }
    }
}

#[test]
fn chain_names_fit_iptables() {
    let t = tables(&everything(), IpFamily::V4);
    for chains in t.nat_services.values() {
        for name in chains.keys() {
            assert!(name.len() <= 28, "{name}");
        }
    }
}

#[test]
fn random_cascade_gives_equal_shares() {
    let t = tables(&everything(), IpFamily::V4);
    let web = &t.nat_services[&key("web", Protocol::Tcp, IpFamily::V4)];
    let svc = web.iter().find(|(k, _)| k.starts_with("SVNT-SVC-")).expect("svc chain").1;
    let text = svc.join("\n");
    assert!(text.contains("--probability 0.3333333333"), "{text}");
    assert!(text.contains("--probability 0.5000000000"), "{text}");
    assert!(text.contains("! -s 10.244.0.0/16 -j SVNT-MARK-MASQ"), "{text}");
}

#[test]
fn partial_update_rewrites_only_the_changed_service() {
    let old = everything();
    let mut new = old.clone();
    let sp = new.service_ports.get_mut(&key("web", Protocol::Tcp, IpFamily::V4)).expect("web");
    sp.cluster_backends.remove(2);
    let update = render_update(&old, &new, IpFamily::V4);
    let t = tables(&new, IpFamily::V4);
    let dns_chains = &t.nat_services[&key("dns", Protocol::Udp, IpFamily::V4)];
    for name in dns_chains.keys() {
        assert!(!update.contains(&format!(":{name} ")), "{name} rewritten:\n{update}");
    }
    assert!(update.contains("-X SVNT-SEP-"), "{update}");
    if let Some(result) = restore_accepts(
        "iptables-restore",
        &format!("{}{update}", render_family(&old, IpFamily::V4, &BTreeSet::new())),
    ) {
        result.unwrap_or_else(|e| panic!("{e}\n{update}"));
    }
}
