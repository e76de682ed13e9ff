#![allow(clippy::unwrap_used)]

//! Golden tests: `tests/golden/<case>/input.yaml` (+ optional `args`) → `plan.txt`, and the
//! rendered `nftables.nft` / `iptables.rules` when a case has those files.
//!
//! Regenerate with `UPDATE_GOLDEN=1 cargo test -p svcnet-proxy --test golden`; review the diff
//! like code. `args` holds `key=value` lines: `node-name`, `zone`, `node-ip` (repeatable),
//! `nodeport-addresses`, `cluster-cidr` and `service-cidr` (repeatable, CIDRs),
//! `masquerade-all=true`.

use std::path::{Path, PathBuf};

use svcnet_proxy::{NodeInfo, ProxyPlan};

fn node_info(case: &Path) -> NodeInfo {
    let mut node = NodeInfo { name: "node-1".to_string(), ..NodeInfo::default() };
    let Ok(args) = std::fs::read_to_string(case.join("args")) else { return node };
    for line in args.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("bad args line {line:?}"));
        match key {
            "node-name" => node.name = value.to_string(),
            "zone" => node.zone = Some(value.to_string()),
            "node-ip" => node.addresses.push(value.parse().unwrap()),
            "nodeport-addresses" => node.nodeport_addresses.push(value.parse().unwrap()),
            "cluster-cidr" => node.cluster_cidrs.push(value.parse().unwrap()),
            "service-cidr" => node.service_cidrs.push(value.parse().unwrap()),
            "masquerade-all" => node.masquerade_all = value == "true",
            other => panic!("unknown args key {other:?}"),
        }
    }
    node
}

/// A renderer of a plan into a golden file's text.
type Render = fn(&ProxyPlan) -> String;

/// The renderings a case may pin: file name and renderer.
fn renderings() -> Vec<(&'static str, Render)> {
    let mut out: Vec<(&'static str, Render)> = vec![("plan.txt", |plan| plan.to_string())];
    out.extend(kernel_renderings());
    out
}

/// The kernel data planes' renderers (issue 6).
fn kernel_renderings() -> Vec<(&'static str, Render)> {
    vec![
        ("nftables.nft", svcnet_proxy::render::nftables::render),
        ("iptables.rules", svcnet_proxy::render::iptables::render),
    ]
}

fn check_case(case: &Path, update: bool) -> Vec<String> {
    let model = svcnet_proxy::objects::load(&case.join("input.yaml")).expect("input.yaml loads");
    let plan = svcnet_proxy::plan(&model, &node_info(case));
    let mut failures = Vec::new();
    for (file, render) in renderings() {
        let path = case.join(file);
        // Kernel renderings are pinned only where a case opted in by having the file.
        if file != "plan.txt" && !path.exists() {
            continue;
        }
        let actual = render(&plan);
        if update {
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{} differs (UPDATE_GOLDEN=1 to accept):\n--- expected\n{expected}\n+++ actual\n{actual}",
                path.display()
            ));
        }
    }
    failures
}

#[test]
fn golden() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("input.yaml").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 8, "fixture set is missing cases: {cases:?}");
    let failures: Vec<String> = cases.iter().flat_map(|case| check_case(case, update)).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
