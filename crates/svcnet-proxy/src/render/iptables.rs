//! iptables rendering: a `ProxyPlan` as `iptables-restore --noflush` input, in kube-proxy's
//! well-known layout (`pkg/proxy/iptables/proxier.go`) with svcnet's own chain names.
//!
//! * nat `SVNT-SERVICES`: one rule per ClusterIP frontend → `SVNT-SVC-X` (or `SVNT-SVL-X` for
//!   `internalTrafficPolicy: Local`), per externalIP / LoadBalancer IP → `SVNT-EXT-X`
//!   (`SVNT-FW-X` with `loadBalancerSourceRanges`), and last, per NodePort address →
//!   `SVNT-NODEPORTS` (one rule per (protocol, nodePort) → `SVNT-EXT-X`).
//! * `SVNT-EXT-X`: Cluster policy marks for masquerade and jumps `SVNT-SVC-X`; Local policy
//!   sends pod sources (`--cluster-cidr`) and, masqueraded, local sources to `SVNT-SVC-X`
//!   and the rest to `SVNT-SVL-X`.
//! * `SVNT-SVC-X` / `SVNT-SVL-X`: off-cluster sources to the ClusterIP are marked, then
//!   ClientIP affinity (`recent --rcheck`), then a `statistic --mode random` cascade (weights
//!   become probabilities) or, for round robin, an exact `statistic --mode nth` cascade.
//!   Source hash, Maglev and least connections have no iptables match and render as random.
//! * `SVNT-SEP-Y`: hairpin masquerade, `recent --set` for affinity, DNAT.
//! * `SVNT-MARK-MASQ` / `SVNT-POSTROUTING`: mark bit 0x4000, masquerade `--random-fully`.
//! * filter `SVNT-SERVICES` / `SVNT-EXTERNAL-SERVICES`: REJECT when a Service has no
//!   endpoints, DROP when only the Local policy leaves none; `SVNT-FIREWALL`: drops sources
//!   outside `loadBalancerSourceRanges` (they were not DNATed); `SVNT-FORWARD`: accepts
//!   marked and established traffic.
//!
//! The jumps from the built-in chains are not part of the restore input (appending them with
//! `--noflush` would duplicate them); [`jump_rules`] lists them for the data plane, which adds
//! each once. Only the first of several cluster CIDRs of a family is used for masquerading,
//! like kube-proxy's single `--cluster-cidr` per family.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::{
    Backend, EmptyAction, FrontendKind, IpFamily, ProxyPlan, Scheduler, ServicePortKey,
    ServicePortPlan, TrafficPolicy,
};

/// Prefix of every chain svcnet owns.
pub const PREFIX: &str = "SVNT-";
const MASQ_MARK: &str = "0x4000";

/// The rules of one table: chain → rules (each rule without the leading `-A CHAIN`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tables {
    pub nat_top: BTreeMap<String, Vec<String>>,
    /// Service chains grouped by the Service port that owns them.
    pub nat_services: BTreeMap<ServicePortKey, BTreeMap<String, Vec<String>>>,
    pub filter: BTreeMap<String, Vec<String>>,
}

/// Jumps from built-in chains into svcnet's chains, as `(table, chain, rule spec)`; the data
/// plane checks each with `-C` and inserts it at the top when missing.
pub fn jump_rules() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("nat", "PREROUTING", "-m comment --comment svcnet-services -j SVNT-SERVICES"),
        ("nat", "OUTPUT", "-m comment --comment svcnet-services -j SVNT-SERVICES"),
        ("nat", "POSTROUTING", "-m comment --comment svcnet-postrouting -j SVNT-POSTROUTING"),
        (
            "filter",
            "INPUT",
            "-m conntrack --ctstate NEW -m comment --comment svcnet-firewall -j SVNT-FIREWALL",
        ),
        (
            "filter",
            "FORWARD",
            "-m conntrack --ctstate NEW -m comment --comment svcnet-firewall -j SVNT-FIREWALL",
        ),
        (
            "filter",
            "OUTPUT",
            "-m conntrack --ctstate NEW -m comment --comment svcnet-firewall -j SVNT-FIREWALL",
        ),
        (
            "filter",
            "INPUT",
            "-m conntrack --ctstate NEW -m comment --comment svcnet-external -j SVNT-EXTERNAL-SERVICES",
        ),
        (
            "filter",
            "FORWARD",
            "-m conntrack --ctstate NEW -m comment --comment svcnet-external -j SVNT-EXTERNAL-SERVICES",
        ),
        (
            "filter",
            "FORWARD",
            "-m conntrack --ctstate NEW -m comment --comment svcnet-services -j SVNT-SERVICES",
        ),
        (
            "filter",
            "OUTPUT",
            "-m conntrack --ctstate NEW -m comment --comment svcnet-services -j SVNT-SERVICES",
        ),
        ("filter", "FORWARD", "-m comment --comment svcnet-forward -j SVNT-FORWARD"),
        ("filter", "INPUT", "-m comment --comment svcnet-health-check -j SVNT-NODEPORTS"),
    ]
}

fn hash16(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    // Base32 (RFC 4648 alphabet) of the first 10 bytes = 16 characters, like kube-proxy.
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits: u128 = 0;
    for b in &digest[..10] {
        bits = (bits << 8) | u128::from(*b);
    }
    (0..16).rev().map(|i| ALPHABET[((bits >> (i * 5)) & 31) as usize] as char).collect()
}

fn chain(kind: &str, key: &ServicePortKey) -> String {
    format!("{PREFIX}{kind}-{}", hash16(&key.to_string()))
}

fn sep_chain(key: &ServicePortKey, b: &Backend) -> String {
    format!("{PREFIX}SEP-{}", hash16(&format!("{key}{}", socket(b.ip, b.port))))
}

fn socket(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

fn family_of(ip: &IpAddr) -> IpFamily {
    if ip.is_ipv4() { IpFamily::V4 } else { IpFamily::V6 }
}

/// The rules for one family (`iptables-restore` is per family).
pub fn tables(plan: &ProxyPlan, family: IpFamily) -> Tables {
    let mut t = Tables::default();
    for c in ["SERVICES", "NODEPORTS", "POSTROUTING", "MARK-MASQ"] {
        t.nat_top.insert(format!("{PREFIX}{c}"), Vec::new());
    }
    for c in ["SERVICES", "EXTERNAL-SERVICES", "FIREWALL", "FORWARD", "NODEPORTS"] {
        t.filter.insert(format!("{PREFIX}{c}"), Vec::new());
    }
    let post = |t: &mut Tables, r: String| {
        t.nat_top.entry(format!("{PREFIX}POSTROUTING")).or_default().push(r)
    };
    post(&mut t, format!("-m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"));
    post(&mut t, format!("-j MARK --xor-mark {MASQ_MARK}"));
    post(&mut t, "-m comment --comment \"svcnet service traffic requiring SNAT\" -j MASQUERADE --random-fully".to_string());
    t.nat_top
        .entry(format!("{PREFIX}MARK-MASQ"))
        .or_default()
        .push(format!("-j MARK --or-mark {MASQ_MARK}"));
    let fwd = t.filter.entry(format!("{PREFIX}FORWARD")).or_default();
    fwd.push(format!("-m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT"));
    fwd.push("-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".to_string());

    let cluster_cidr = plan
        .node
        .cluster_cidrs
        .iter()
        .find(|c| family_of(&c.addr()) == family)
        .map(|c| c.trunc().to_string());
    let node_addrs: Vec<IpAddr> =
        plan.node.node_port_addresses.iter().copied().filter(|a| family_of(a) == family).collect();

    let mut services = Vec::new();
    let mut nodeports = Vec::new();
    let mut filter_services = Vec::new();
    let mut filter_external = Vec::new();
    let mut filter_firewall = Vec::new();

    for (key, sp) in plan.service_ports.iter().filter(|(k, _)| k.family == family) {
        let proto = key.protocol.to_string();
        let svc = chain("SVC", key);
        let svl = chain("SVL", key);
        let ext = chain("EXT", key);
        let fw = chain("FW", key);
        let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let comment = format!("-m comment --comment \"{key}\"");
        let has_cluster = !sp.cluster_backends.is_empty();
        let has_local = !sp.local_backends.is_empty();
        let mut need_svc = false;
        let mut need_svl = false;
        let mut need_ext = false;

        for fe in &sp.frontends {
            let backends = sp.backends_for(fe.kind);
            let match_port = format!("-p {proto} -m {proto} --dport {}", fe.port);
            let empty_verdict = match sp.when_empty(fe.kind) {
                EmptyAction::Reject => "REJECT",
                EmptyAction::Drop => "DROP",
            };
            match fe.kind {
                FrontendKind::ClusterIp => {
                    let Some(addr) = fe.address.filter(|a| family_of(a) == family) else {
                        continue;
                    };
                    let dst = format!("-d {} {match_port}", host(addr));
                    if backends.is_empty() {
                        filter_services.push(format!("{comment} {dst} -j {empty_verdict}"));
                        continue;
                    }
                    let target = if sp.internal_traffic_policy == TrafficPolicy::Local {
                        need_svl = true;
                        &svl
                    } else {
                        need_svc = true;
                        &svc
                    };
                    services.push(format!("{comment} {dst} -j {target}"));
                    let masq = if plan.node.masquerade_all {
                        Some(format!("{dst} -j {PREFIX}MARK-MASQ"))
                    } else {
                        cluster_cidr
                            .as_ref()
                            .map(|c| format!("{dst} ! -s {c} -j {PREFIX}MARK-MASQ"))
                    };
                    if let Some(m) = masq {
                        chains.entry(target.clone()).or_default().push(m);
                    }
                }
                FrontendKind::NodePort => {
                    if backends.is_empty() {
                        for a in &node_addrs {
                            filter_external.push(format!(
                                "{comment} -d {} {match_port} -j {empty_verdict}",
                                host(*a)
                            ));
                        }
                        if !(sp.external_traffic_policy == TrafficPolicy::Local && has_cluster) {
                            continue;
                        }
                    }
                    need_ext = true;
                    nodeports.push(format!("{comment} {match_port} -j {ext}"));
                }
                FrontendKind::ExternalIp | FrontendKind::LoadBalancer => {
                    let Some(addr) = fe.address.filter(|a| family_of(a) == family) else {
                        continue;
                    };
                    let dst = format!("-d {} {match_port}", host(addr));
                    if backends.is_empty() {
                        filter_external.push(format!("{comment} {dst} -j {empty_verdict}"));
                        if !(sp.external_traffic_policy == TrafficPolicy::Local && has_cluster) {
                            continue;
                        }
                    }
                    need_ext = true;
                    let ranges: Vec<String> = sp
                        .load_balancer_source_ranges
                        .iter()
                        .filter(|r| family_of(&r.addr()) == family)
                        .map(|r| r.trunc().to_string())
                        .collect();
                    if fe.kind == FrontendKind::LoadBalancer && !ranges.is_empty() {
                        services.push(format!("{comment} {dst} -j {fw}"));
                        let fw_rules = chains.entry(fw.clone()).or_default();
                        for r in &ranges {
                            if !fw_rules.iter().any(|x| x.contains(&format!("-s {r} "))) {
                                fw_rules.push(format!("-s {r} -j {ext}"));
                            }
                        }
                        filter_firewall.push(format!("{comment} {dst} -j DROP"));
                    } else {
                        services.push(format!("{comment} {dst} -j {ext}"));
                    }
                }
            }
        }

        if need_ext {
            let rules = chains.entry(ext.clone()).or_default();
            match sp.external_traffic_policy {
                TrafficPolicy::Cluster => {
                    rules.push(format!("-j {PREFIX}MARK-MASQ"));
                    rules.push(format!("-j {svc}"));
                    need_svc = true;
                }
                TrafficPolicy::Local => {
                    if has_cluster {
                        if let Some(c) = &cluster_cidr {
                            rules.push(format!("-s {c} -j {svc}"));
                        }
                        rules.push(format!("-m addrtype --src-type LOCAL -j {PREFIX}MARK-MASQ"));
                        rules.push(format!("-m addrtype --src-type LOCAL -j {svc}"));
                        need_svc = true;
                    }
                    if has_local {
                        rules.push(format!("-j {svl}"));
                        need_svl = true;
                    }
                }
            }
        }
        if need_svc {
            lb_rules(&mut chains, &svc, key, sp, &sp.cluster_backends, family, &proto);
        }
        if need_svl {
            lb_rules(&mut chains, &svl, key, sp, &sp.local_backends, family, &proto);
        }
        t.nat_services.insert(key.clone(), chains);
    }
    let nat_services = t.nat_top.entry(format!("{PREFIX}SERVICES")).or_default();
    nat_services.extend(services);
    for a in &node_addrs {
        nat_services.push(format!(
            "-m comment --comment \"svcnet service nodeports; NOTE: this must be the last rule in this chain\" -d {} -j {PREFIX}NODEPORTS",
            host(*a)
        ));
    }
    t.nat_top.entry(format!("{PREFIX}NODEPORTS")).or_default().extend(nodeports);
    t.filter.entry(format!("{PREFIX}SERVICES")).or_default().extend(filter_services);
    t.filter.entry(format!("{PREFIX}EXTERNAL-SERVICES")).or_default().extend(filter_external);
    t.filter.entry(format!("{PREFIX}FIREWALL")).or_default().extend(filter_firewall);
    // healthCheckNodePorts are accepted, like kube-proxy's filter KUBE-NODEPORTS chain.
    let health: std::collections::BTreeSet<(String, u16)> = plan
        .service_ports
        .iter()
        .filter(|(k, _)| k.family == family)
        .filter_map(|(k, sp)| {
            sp.health_check_node_port.map(|p| (format!("{}/{}", k.namespace, k.name), p))
        })
        .collect();
    let nodeports_filter = t.filter.entry(format!("{PREFIX}NODEPORTS")).or_default();
    for (svc, port) in health {
        nodeports_filter.push(format!(
            "-m comment --comment \"{svc} health check node port\" -m tcp -p tcp --dport {port} -j ACCEPT"
        ));
    }
    t
}

/// Adds the load-balancing rules of `chain` (affinity checks, then the cascade) and the
/// endpoint chains they jump to.
fn lb_rules(
    chains: &mut BTreeMap<String, Vec<String>>,
    chain: &str,
    key: &ServicePortKey,
    sp: &ServicePortPlan,
    backends: &[Backend],
    family: IpFamily,
    proto: &str,
) {
    let mask = match family {
        IpFamily::V4 => "255.255.255.255",
        IpFamily::V6 => "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    };
    let mut rules = chains.remove(chain).unwrap_or_default();
    if let Some(t) = sp.session_affinity_timeout {
        for b in backends {
            let sep = sep_chain(key, b);
            rules.push(format!(
                "-m comment --comment \"{key} -> {}\" -m recent --name {sep} --mask {mask} --rsource --rcheck --seconds {t} --reap -j {sep}",
                socket(b.ip, b.port)
            ));
        }
    }
    let total: u64 = backends.iter().map(|b| u64::from(b.weight.max(1))).sum();
    let mut remaining = total;
    let n = backends.len();
    for (i, b) in backends.iter().enumerate() {
        let sep = sep_chain(key, b);
        let c = format!("-m comment --comment \"{key} -> {}\"", socket(b.ip, b.port));
        if i + 1 == n {
            rules.push(format!("{c} -j {sep}"));
        } else if sp.scheduler == Scheduler::RoundRobin && backends.iter().all(|b| b.weight <= 1) {
            rules
                .push(format!("{c} -m statistic --mode nth --every {} --packet 0 -j {sep}", n - i));
        } else {
            let w = u64::from(b.weight.max(1));
            let p = w as f64 / remaining as f64;
            rules.push(format!("{c} -m statistic --mode random --probability {p:.10} -j {sep}"));
        }
        remaining -= u64::from(b.weight.max(1));
        let mut sep_rules = vec![format!("{c} -s {} -j {PREFIX}MARK-MASQ", host(b.ip))];
        if sp.session_affinity_timeout.is_some() {
            sep_rules.push(format!("{c} -m recent --name {sep} --mask {mask} --rsource --set"));
        }
        sep_rules.push(format!(
            "{c} -p {proto} -m {proto} -j DNAT --to-destination {}",
            socket(b.ip, b.port)
        ));
        chains.insert(sep, sep_rules);
    }
    chains.insert(chain.to_string(), rules);
}

fn write_table(
    out: &mut String,
    table: &str,
    declare: &[&String],
    rules: &[(&String, &Vec<String>)],
    delete: &[&String],
) {
    let _ = writeln!(out, "*{table}");
    for c in declare {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    for c in delete {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    for (c, rs) in rules {
        for r in rs.iter() {
            let _ = writeln!(out, "-A {c} {r}");
        }
    }
    for c in delete {
        let _ = writeln!(out, "-X {c}");
    }
    out.push_str("COMMIT\n");
}

/// Full restore input for one family, deleting the svcnet chains in `existing_nat` that the
/// plan no longer has.
pub fn render_family(
    plan: &ProxyPlan,
    family: IpFamily,
    existing_nat: &BTreeSet<String>,
) -> String {
    let t = tables(plan, family);
    let mut out = String::new();
    let mut nat: BTreeMap<&String, &Vec<String>> = t.nat_top.iter().collect();
    for chains in t.nat_services.values() {
        nat.extend(chains.iter());
    }
    let stale: Vec<&String> = existing_nat.iter().filter(|c| !nat.contains_key(c)).collect();
    let declare: Vec<&String> = nat.keys().copied().collect();
    let rules: Vec<(&String, &Vec<String>)> = nat.into_iter().collect();
    write_table(&mut out, "nat", &declare, &rules, &stale);
    // nat before filter, as in `render_update`.
    let filter_chains: Vec<&String> = t.filter.keys().collect();
    let filter_rules: Vec<(&String, &Vec<String>)> = t.filter.iter().collect();
    write_table(&mut out, "filter", &filter_chains, &filter_rules, &[]);
    out
}

/// Full restore input: IPv4 (`iptables-restore`), then, when the plan has IPv6 Service ports,
/// a line `# ip6tables-restore` and the IPv6 input.
pub fn render(plan: &ProxyPlan) -> String {
    let mut out = render_family(plan, IpFamily::V4, &BTreeSet::new());
    if plan.service_ports.keys().any(|k| k.family == IpFamily::V6) {
        out.push_str("# ip6tables-restore\n");
        out.push_str(&render_family(plan, IpFamily::V6, &BTreeSet::new()));
    }
    out
}

/// Partial sync for one family (KEP-3453): the top-level chains in full, the chains of
/// Service ports that changed, and the deletion of chains that went away.
pub fn render_update(old: &ProxyPlan, new: &ProxyPlan, family: IpFamily) -> String {
    let a = tables(old, family);
    let b = tables(new, family);
    let node_changed = old.node != new.node;
    let mut out = String::new();
    let mut write: BTreeMap<&String, &Vec<String>> = b.nat_top.iter().collect();
    for (key, chains) in &b.nat_services {
        let unchanged = !node_changed
            && old.service_ports.get(key) == new.service_ports.get(key)
            && a.nat_services.get(key) == Some(chains);
        if !unchanged {
            write.extend(chains.iter());
        }
    }
    let new_names: BTreeSet<&String> = b.nat_services.values().flat_map(|c| c.keys()).collect();
    let stale: Vec<&String> = a
        .nat_services
        .values()
        .flat_map(|c| c.keys())
        .filter(|c| !new_names.contains(c))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let declare: Vec<&String> = write.keys().copied().collect();
    let rules: Vec<(&String, &Vec<String>)> = write.into_iter().collect();
    write_table(&mut out, "nat", &declare, &rules, &stale);
    // nat before filter: iptables-restore commits table by table, and a Service whose endpoints
    // appear must get its DNAT before its REJECT goes, or a new connection in between leaves
    // un-NATed towards the ClusterIP and hangs (seen as one lost connection per selector change).
    let filter_chains: Vec<&String> = b.filter.keys().collect();
    let filter_rules: Vec<(&String, &Vec<String>)> = b.filter.iter().collect();
    write_table(&mut out, "filter", &filter_chains, &filter_rules, &[]);
    out
}

#[cfg(test)]
mod tests;
