//! nftables rendering: a `ProxyPlan` as an `nft -f` script for one table, `inet svcnet`,
//! laid out so that an update costs the same at 10 and at 10,000 Services.
//!
//! kube-proxy's nftables mode keeps one chain per Service and one per endpoint, reached
//! through a verdict map. Every transaction that touches a verdict map makes the kernel
//! re-validate the whole chain graph, so one element costs about a second at 10,000 Services.
//! svcnet keeps the chain graph small and fixed instead: per-Service facts live in sets and
//! maps keyed by the frontend `F = daddr . l4proto . dport`, and the chains are shared by
//! every Service with the same shape (scheduler, slot count, affinity timeout).
//!
//! # Layout (per family; `-v4` shown, `-v6` is the same with `ip6`)
//!
//! * Base chains: `nat-prerouting`/`nat-output` (priority dstnat) jump `services`;
//!   `nat-postrouting` (srcnat) jumps `masquerading`; `filter-prerouting`/`filter-output`
//!   (dstnat − 10, before DNAT) jump `firewall-check` for new connections;
//!   `filter-input`/`filter-forward`/`filter-output-post-dnat` (filter) jump `endpoints-check`.
//! * `services`: marks for masquerade (`masq-cluster-ips-v4` ClusterIP frontends from sources
//!   outside `cluster-cidrs-v4`; `masq-external-v4` external frontends with
//!   `externalTrafficPolicy: Cluster`); short-circuits pod- and host-originated traffic to
//!   `externalTrafficPolicy: Local` frontends to cluster backends (`shortcut-<pick chain>`
//!   sets; host sources also masqueraded via `etp-local-v4`); then one rule per pick chain in
//!   use, `F @in-<pick chain> goto <pick chain>`. There is no verdict map with per-Service
//!   elements: adding one makes the kernel re-validate the chain graph on every element
//!   change, which is what makes kube-proxy's updates slow. The rule count grows with the
//!   number of distinct Service shapes (usually a handful), not with the number of Services.
//! * Pick chains: one per (backend pool, scheduler, slot count, affinity: on or off for IPv4,
//!   its timeout for IPv6), e.g. `pick-random-3-v4`:
//!   `numgen random mod 3 vmap { 0 : goto slot-0-v4, … }`. Round robin uses `numgen inc`
//!   (the counter is shared by Services with the same slot count, so each Service sees a
//!   round robin with skips), source hash `jhash ip saddr`. Least connections has no kernel
//!   equivalent and is rendered as random.
//! * `slot-K-v4`: `dnat ip to F map @backend-K-v4`, the K-th backend of each frontend;
//!   `local-slot-K-v4` / `local-backend-K-v4` hold the node-local backends that
//!   `externalTrafficPolicy: Local` uses for outside traffic. Weights become slot counts
//!   (divided by their gcd, at most `MAX_SLOTS` slots per frontend).
//! * Maglev: the lookup table is `scheduler::maglev`'s (the userspace data plane's) and loaded into
//!   `maglev-v4` (F . bucket → backend); `pick-maglev-M-v4` does
//!   `dnat ip to F . jhash ip saddr mod M map @maglev-v4`.
//! * ClientIP affinity (IPv4) is to a backend, as kube-proxy's: the dynamic map
//!   `affinity-v4` (`saddr . F : backend addr . port`, timeouts, never flushed or diffed, so
//!   it survives updates and restarts). An affinity pick chain (`pick-random-3-affinity-v4`)
//!   first does `dnat ip to ip saddr . F map @affinity-v4` (a miss falls through to the
//!   usual `numgen … vmap` over the shared slot chains). The element is written after DNAT:
//!   `affinity-prerouting`/`affinity-output` (filter, dstnat + 1) jump `affinity` for new
//!   DNATed connections, where one rule per (protocol, timeout) in use does `update
//!   @affinity-v4 { ip saddr . <ct original F> timeout Ts : ip daddr . th dport }` for the
//!   frontends in `affinity-tT-v4`, refreshing the timeout on every new connection.
//!   (`ct original proto-dst` is only typed after a protocol match, hence the per-protocol
//!   rules.) `affinity-backends-v4` holds `F . backend` of every backend the frontend's pools
//!   may use; the data plane deletes elements pointing elsewhere in the transaction that
//!   removes a backend (and on a full sync), and a guard rule in `affinity` catches any
//!   written meanwhile (the element expires in 100 ms and the packet is dropped; the client
//!   retransmits to a fresh pick). A Service whose traffic policy changes from Cluster to
//!   Local keeps outside clients on their old (valid cluster) backend until their timeout.
//! * ClientIP affinity (IPv6) is still to a slot: nft 1.0.6 cannot write a map element from
//!   the packet path when the key or the data is over 16 bytes (its register allocation
//!   asserts); hashing the key with `jhash` compiles, but the DNAT lookup then runs out of
//!   registers and listing a `typeof jhash` map crashes nft. Per-slot dynamic sets
//!   `affinity-K-v6` of `saddr . F`; the pick chain (`pick-random-3-t60-v6`) checks
//!   `saddr . F @affinity-K-v6 goto aff-slot-K-t60-v6` for each slot, then picks;
//!   `aff-slot-K-tT-v6` refreshes the element and DNATs. When the backend list changes,
//!   clients of a moved slot move.
//! * Maglev ignores affinity (it is sticky).
//! * No usable backend: F in `no-endpoint-reject-v4` → `goto reject-chain` (TCP RST, else
//!   ICMP port unreachable) or in `no-endpoint-drop-v4` → `drop` (Local policy without a
//!   local endpoint), checked after DNAT.
//! * `loadBalancerSourceRanges`: `firewall-ips-v4` (F) and `firewall-allow-v4`
//!   (F . saddr interval); other sources are dropped before DNAT.
//! * `masquerading`: hairpin (`saddr . daddr @hairpin-v4`, a local endpoint to itself) is
//!   masqueraded; then the mark bit 0x4000 is tested, cleared and the packet masqueraded.
//! * Updates: [`update_layout`] turns a change of a few Service ports into element deletes
//!   and adds computed from those ports' layouts alone (no whole-layout build or diff), when
//!   the chains and sets they need exist; anything else is a diff of whole layouts.
//! * NodePorts: one F per address in `NodePlan::node_port_addresses` (no `fib` match: the
//!   backend maps are keyed by the destination address, so it must be known).
//!
//! * `healthCheckNodePort`s: `health-check-v4` (node-port address . port) accepted in
//!   `filter-input`, as kube-proxy's `KUBE-NODEPORTS` filter rule does.
//!
//! * `cluster-ips-check` (after DNAT, new connections): a ClusterIP in `cluster-ips-v4` on a
//!   port no Service has is rejected, an address of `NodePlan::service_cidrs` that is no
//!   ClusterIP dropped, as kube-proxy's nftables mode does.
//!
//! What is left out: localhost NodePorts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::scheduler::maglev::{self, MaglevTable};
use crate::{
    Backend, EmptyAction, FrontendKind, IpFamily, ProxyPlan, Scheduler, ServicePortKey,
    ServicePortPlan, TrafficPolicy,
};

/// The table svcnet owns; nothing outside it is ever touched.
pub const TABLE: &str = "inet svcnet";
/// The packet-mark bit meaning "masquerade this connection" (kube-proxy's default).
pub const MASQUERADE_MARK: u32 = 0x4000;
/// Upper bound of slots per frontend for weighted random / round robin / source hash.
pub const MAX_SLOTS: usize = 256;
/// Seed of the source-hash and Maglev `jhash`, fixed so every node hashes alike.
const HASH_SEED: &str = "0x7376636e";
/// Elements per `add element` command in a full render.
const ELEMENTS_PER_COMMAND: usize = 2000;

/// The whole desired content of the table: chains with their rules, sets with elements.
/// Both [`render`] and [`render_update`] are derived from it, so they cannot disagree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub chains: BTreeMap<String, Chain>,
    pub sets: BTreeMap<String, Set>,
    /// `(set, key)` of elements more than one Service port wrote (e.g. the hairpin element of
    /// a pod backing two Services): [`update_layout`] never changes these in place.
    pub shared: BTreeSet<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    /// `type nat hook prerouting priority -100 ; policy accept ;` for base chains.
    pub hook: Option<String>,
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Set {
    /// `set` or `map`.
    pub kind: &'static str,
    /// The body between braces, e.g. `type ipv4_addr ; flags interval ;`.
    pub spec: String,
    /// Elements written by the packet path (affinity): never flushed, never diffed.
    pub dynamic: bool,
    /// Key → value (`None` for plain sets).
    pub elements: BTreeMap<String, Option<String>>,
}

impl Layout {
    fn chain(&mut self, name: &str) -> &mut Chain {
        self.chains.entry(name.to_string()).or_default()
    }
    fn rule(&mut self, chain: &str, rule: impl Into<String>) {
        self.chain(chain).rules.push(rule.into());
    }
    fn set(&mut self, name: &str, kind: &'static str, spec: &str) -> &mut Set {
        let set = self.sets.entry(name.to_string()).or_default();
        set.kind = kind;
        set.spec = spec.to_string();
        set
    }
    fn element(&mut self, set: &str, key: String, value: Option<String>) {
        let Layout { sets, shared, .. } = self;
        if let Some(elements) = sets.get_mut(set).map(|s| &mut s.elements) {
            // First writer wins, like kube-proxy when two Services claim one address:port.
            match elements.entry(key) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(value);
                }
                std::collections::btree_map::Entry::Occupied(e) => {
                    shared.insert((set.to_string(), e.key().clone()));
                }
            }
        }
    }
}

/// Per-family spellings.
struct Fam {
    sfx: &'static str,
    ip: &'static str,
    addr_type: &'static str,
}

fn fam(family: IpFamily) -> Fam {
    match family {
        IpFamily::V4 => Fam { sfx: "v4", ip: "ip", addr_type: "ipv4_addr" },
        IpFamily::V6 => Fam { sfx: "v6", ip: "ip6", addr_type: "ipv6_addr" },
    }
}

fn family_of(ip: &IpAddr) -> IpFamily {
    if ip.is_ipv4() { IpFamily::V4 } else { IpFamily::V6 }
}

/// Which backend maps a pick chain reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    Cluster,
    Local,
}

impl Pool {
    fn prefix(self) -> &'static str {
        match self {
            Pool::Cluster => "",
            Pool::Local => "local-",
        }
    }
}

/// Builds the desired layout of the table for `plan`.
pub fn layout(plan: &ProxyPlan) -> Layout {
    let mut l = Layout::default();
    let masq = format!("{MASQUERADE_MARK:#x}");

    // Base chains and the fixed helper chains.
    for (name, hook) in [
        ("nat-prerouting", "type nat hook prerouting priority -100 ; policy accept ;"),
        ("nat-output", "type nat hook output priority -100 ; policy accept ;"),
        ("nat-postrouting", "type nat hook postrouting priority 100 ; policy accept ;"),
        ("filter-prerouting", "type filter hook prerouting priority -110 ; policy accept ;"),
        ("filter-output", "type filter hook output priority -110 ; policy accept ;"),
        ("filter-input", "type filter hook input priority 0 ; policy accept ;"),
        ("filter-forward", "type filter hook forward priority 0 ; policy accept ;"),
        ("filter-output-post-dnat", "type filter hook output priority 0 ; policy accept ;"),
    ] {
        l.chain(name).hook = Some(hook.to_string());
    }
    l.rule("nat-prerouting", "jump services");
    l.rule("nat-output", "jump services");
    l.rule("nat-postrouting", "jump masquerading");
    l.rule("filter-prerouting", "ct state new jump firewall-check");
    l.rule("filter-output", "ct state new jump firewall-check");
    l.rule("filter-input", "ct state new jump endpoints-check");
    l.rule("filter-forward", "ct state new jump endpoints-check");
    l.rule("filter-output-post-dnat", "ct state new jump endpoints-check");
    l.rule("filter-forward", "ct state new jump cluster-ips-check");
    l.rule("filter-output-post-dnat", "ct state new jump cluster-ips-check");
    l.rule("mark-for-masquerade", format!("meta mark set meta mark or {masq}"));
    l.rule("reject-chain", "meta l4proto tcp reject with tcp reset");
    l.rule("reject-chain", "reject");
    l.chain("services");
    l.chain("firewall-check");
    l.chain("endpoints-check");
    l.chain("cluster-ips-check");
    l.chain("masquerading");

    let families: BTreeSet<IpFamily> = plan.service_ports.keys().map(|k| k.family).collect();

    // Family-wide sets, maps and dispatch rules.
    for family in [IpFamily::V4, IpFamily::V6] {
        if !families.contains(&family) {
            continue;
        }
        let f = fam(family);
        let (s, ip, at) = (f.sfx, f.ip, f.addr_type);
        let key = format!("{at} . inet_proto . inet_service");
        let fkey = format!("{ip} daddr . meta l4proto . th dport");
        let cidrs: Vec<String> = plan
            .node
            .cluster_cidrs
            .iter()
            .filter(|c| family_of(&c.addr()) == family)
            .map(|c| c.trunc().to_string())
            .collect();
        let detect_local = !cidrs.is_empty();

        l.set(&format!("etp-local-{s}"), "set", &format!("type {key} ;"));
        l.set(&format!("no-endpoint-reject-{s}"), "set", &format!("type {key} ;"));
        l.set(&format!("no-endpoint-drop-{s}"), "set", &format!("type {key} ;"));
        l.set(&format!("masq-external-{s}"), "set", &format!("type {key} ;"));
        l.set(&format!("firewall-ips-{s}"), "set", &format!("type {key} ;"));
        l.set(
            &format!("firewall-allow-{s}"),
            "set",
            &format!("type {key} . {at} ; flags interval ;"),
        );
        l.set(&format!("hairpin-{s}"), "set", &format!("type {at} . {at} ;"));
        // A Service's healthCheckNodePort is accepted (kube-proxy's KUBE-NODEPORTS filter
        // rule), on the node-port addresses of this family.
        l.set(&format!("health-check-{s}"), "set", &format!("type {at} . inet_service ;"));
        l.rule("filter-input", format!("{ip} daddr . tcp dport @health-check-{s} accept"));
        for prefix in ["", "local-"] {
            l.set(
                &format!("{prefix}maglev-{s}"),
                "map",
                &format!("typeof {fkey} . numgen random mod 65536 : {ip} daddr . th dport ;"),
            );
        }

        if detect_local {
            l.set(&format!("cluster-cidrs-{s}"), "set", &format!("type {at} ; flags interval ;"));
            for c in &cidrs {
                l.element(&format!("cluster-cidrs-{s}"), c.clone(), None);
            }
        }
        if plan.node.masquerade_all {
            l.rule(
                "masquerading",
                format!("meta nfproto {} ct status dnat masquerade fully-random", nfproto(family)),
            );
        } else if detect_local {
            l.set(&format!("masq-cluster-ips-{s}"), "set", &format!("type {key} ;"));
            l.rule(
                "services",
                format!("{fkey} @masq-cluster-ips-{s} {ip} saddr != @cluster-cidrs-{s} jump mark-for-masquerade"),
            );
        }
        l.rule("services", format!("{fkey} @masq-external-{s} jump mark-for-masquerade"));
        // Host sources to an externalTrafficPolicy: Local frontend are masqueraded and
        // short-circuited to cluster backends (the dispatch rules follow below).
        l.rule(
            "services",
            format!("fib saddr type local {fkey} @etp-local-{s} jump mark-for-masquerade"),
        );

        l.rule(
            "firewall-check",
            format!("{fkey} @firewall-ips-{s} {fkey} . {ip} saddr != @firewall-allow-{s} drop"),
        );
        l.rule("endpoints-check", format!("{fkey} @no-endpoint-reject-{s} goto reject-chain"));
        l.rule("endpoints-check", format!("{fkey} @no-endpoint-drop-{s} drop"));
        // After DNAT a serviced connection's destination is its endpoint; one still headed for
        // a ClusterIP is on a port the Service lacks (rejected), or for an unallocated
        // address of the Service range (dropped), as in kube-proxy's nftables mode. Without
        // this it would be routed on, towards wherever the range leads.
        l.set(&format!("cluster-ips-{s}"), "set", &format!("type {at} ;"));
        l.rule("cluster-ips-check", format!("{ip} daddr @cluster-ips-{s} goto reject-chain"));
        let ranges: Vec<String> = plan
            .node
            .service_cidrs
            .iter()
            .filter(|c| family_of(&c.addr()) == family)
            .map(ToString::to_string)
            .collect();
        if !ranges.is_empty() {
            l.rule("cluster-ips-check", format!("{ip} daddr {{ {} }} drop", ranges.join(", ")));
        }
        l.rule(
            "masquerading",
            format!("ct status dnat {ip} saddr . {ip} daddr @hairpin-{s} masquerade fully-random"),
        );
    }
    l.rule("masquerading", format!("meta mark & {masq} == 0 return"));
    l.rule("masquerading", format!("meta mark set meta mark xor {masq}"));
    l.rule("masquerading", "masquerade fully-random");

    // Per Service port: elements only (plus shared pick chains on first use).
    let mut dispatch: BTreeMap<IpFamily, BTreeSet<(bool, String)>> = BTreeMap::new();
    for (key, sp) in &plan.service_ports {
        let f = fam(key.family);
        let s = f.sfx;
        let cluster_slots = slots(&sp.cluster_backends, sp.scheduler);
        let local_slots = slots(&sp.local_backends, sp.scheduler);
        for fe in &sp.frontends {
            let addrs: Vec<IpAddr> = match fe.address {
                Some(a) => vec![a],
                None => plan.node.node_port_addresses.clone(),
            };
            let external = fe.kind != FrontendKind::ClusterIp;
            let policy =
                if external { sp.external_traffic_policy } else { sp.internal_traffic_policy };
            for addr in addrs.into_iter().filter(|a| family_of(a) == key.family) {
                let fk = format!("{} . {} . {}", addr, fe.protocol, fe.port);
                let backends = sp.backends_for(fe.kind);
                // Which pool the main dispatch uses.
                let (pool, pool_slots) = match (external, policy) {
                    (true, TrafficPolicy::Local) => (Pool::Local, &local_slots),
                    (false, TrafficPolicy::Local) => (Pool::Local, &local_slots),
                    _ => (Pool::Cluster, &cluster_slots),
                };
                if !external {
                    l.element(&format!("masq-cluster-ips-{s}"), fk.clone(), None);
                    l.element(&format!("cluster-ips-{s}"), addr.to_string(), None);
                }
                if external && sp.external_traffic_policy == TrafficPolicy::Cluster {
                    l.element(&format!("masq-external-{s}"), fk.clone(), None);
                }
                if fe.kind == FrontendKind::LoadBalancer
                    && !sp.load_balancer_source_ranges.is_empty()
                {
                    l.element(&format!("firewall-ips-{s}"), fk.clone(), None);
                    for range in &sp.load_balancer_source_ranges {
                        if family_of(&range.addr()) == key.family {
                            l.element(
                                &format!("firewall-allow-{s}"),
                                format!("{fk} . {}", range.trunc()),
                                None,
                            );
                        }
                    }
                }
                if backends.is_empty() {
                    let set = match sp.when_empty(fe.kind) {
                        EmptyAction::Reject => "reject",
                        EmptyAction::Drop => "drop",
                    };
                    l.element(&format!("no-endpoint-{set}-{s}"), fk.clone(), None);
                } else {
                    let chain = pick(&mut l, key.family, pool, sp, pool_slots, &fk);
                    dispatch.entry(key.family).or_default().insert((false, chain.clone()));
                    l.set(
                        &format!("in-{chain}"),
                        "set",
                        &format!("type {} . inet_proto . inet_service ;", f.addr_type),
                    );
                    l.element(&format!("in-{chain}"), fk.clone(), None);
                }
                // Pod- and host-originated traffic to an external Local frontend goes to
                // cluster backends.
                if external && policy == TrafficPolicy::Local && !sp.cluster_backends.is_empty() {
                    let chain = pick(&mut l, key.family, Pool::Cluster, sp, &cluster_slots, &fk);
                    dispatch.entry(key.family).or_default().insert((true, chain.clone()));
                    l.element(&format!("etp-local-{s}"), fk.clone(), None);
                    l.set(
                        &format!("shortcut-{chain}"),
                        "set",
                        &format!("type {} . inet_proto . inet_service ;", f.addr_type),
                    );
                    l.element(&format!("shortcut-{chain}"), fk.clone(), None);
                }
                // ClientIP affinity (Maglev is sticky already): every backend of the pools
                // this frontend uses is a valid target of its clients' affinity elements.
                if let (Some(t), false, IpFamily::V4) =
                    (sp.session_affinity_timeout, sp.scheduler == Scheduler::Maglev, key.family)
                {
                    let mut valid: BTreeSet<(IpAddr, u16)> = BTreeSet::new();
                    if !backends.is_empty() {
                        valid.extend(pool_slots.iter().map(|b| (b.ip, b.port)));
                    }
                    if external && policy == TrafficPolicy::Local {
                        valid.extend(cluster_slots.iter().map(|b| (b.ip, b.port)));
                    }
                    if !valid.is_empty() {
                        affinity(&mut l, key.family, &fk, t, &fe.protocol.to_string(), &valid);
                    }
                }
            }
        }
        if let Some(port) = sp.health_check_node_port {
            for addr in plan.node.node_port_addresses.iter().filter(|a| family_of(a) == key.family)
            {
                l.element(&format!("health-check-{s}"), format!("{addr} . {port}"), None);
            }
        }
        // Only an endpoint on this node can reach itself through this node's rules.
        for b in sp.cluster_backends.iter().chain(&sp.local_backends).filter(|b| b.is_local) {
            l.element(&format!("hairpin-{s}"), format!("{} . {}", b.ip, b.ip), None);
        }
    }

    // Dispatch: one rule per shared pick chain in use, matching its set of frontends. No
    // verdict map holds per-Service elements, so element changes never make the kernel
    // re-validate the chain graph. Short-circuits (pod and host sources to Local external
    // frontends) come first.
    for (family, chains) in dispatch {
        let f = fam(family);
        let (s, ip) = (f.sfx, f.ip);
        let fkey = format!("{ip} daddr . meta l4proto . th dport");
        let detect_local = l.sets.contains_key(&format!("cluster-cidrs-{s}"));
        for (shortcut, chain) in &chains {
            if *shortcut {
                if detect_local {
                    l.rule(
                        "services",
                        format!(
                            "{ip} saddr @cluster-cidrs-{s} {fkey} @shortcut-{chain} goto {chain}"
                        ),
                    );
                }
                l.rule(
                    "services",
                    format!("fib saddr type local {fkey} @shortcut-{chain} goto {chain}"),
                );
            }
        }
        for (shortcut, chain) in &chains {
            if !*shortcut {
                l.rule("services", format!("{fkey} @in-{chain} goto {chain}"));
            }
        }
    }
    l
}

fn nfproto(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ipv4",
        IpFamily::V6 => "ipv6",
    }
}

/// The slot list of a backend set: each backend repeated by its weight (divided by the gcd of
/// all weights, scaled down to at most `MAX_SLOTS` slots). Maglev returns the plain list.
fn slots(backends: &[Backend], scheduler: Scheduler) -> Vec<Backend> {
    if scheduler == Scheduler::Maglev || backends.is_empty() {
        return backends.to_vec();
    }
    let g = backends.iter().map(|b| b.weight.max(1)).fold(0, gcd);
    let mut counts: Vec<usize> =
        backends.iter().map(|b| (b.weight.max(1) / g.max(1)) as usize).collect();
    let total: usize = counts.iter().sum();
    if total > MAX_SLOTS {
        let scale = MAX_SLOTS as f64 / total as f64;
        for c in &mut counts {
            *c = ((*c as f64 * scale).floor() as usize).max(1);
        }
    }
    backends.iter().zip(counts).flat_map(|(b, c)| std::iter::repeat_n(b.clone(), c)).collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Ensures the shared pick chain for this shape exists, writes the frontend's slot elements,
/// and returns the chain's name.
fn pick(
    l: &mut Layout,
    family: IpFamily,
    pool: Pool,
    sp: &ServicePortPlan,
    slot_list: &[Backend],
    fk: &str,
) -> String {
    let f = fam(family);
    let (s, ip) = (f.sfx, f.ip);
    let prefix = pool.prefix();
    let fkey = format!("{ip} daddr . meta l4proto . th dport");
    let n = slot_list.len();

    if sp.scheduler == Scheduler::Maglev {
        let table = maglev_table(slot_list);
        let m = table.len();
        let chain = format!("pick-{prefix}maglev-{m}-{s}");
        let map_name = format!("{prefix}maglev-{s}");
        if !l.chains.contains_key(&chain) {
            l.rule(
                &chain,
                format!("dnat {ip} to {fkey} . jhash {ip} saddr mod {m} seed {HASH_SEED} map @{map_name}"),
            );
        }
        for (bucket, idx) in table.iter().enumerate() {
            let b = &slot_list[*idx];
            l.element(
                &map_name,
                format!("{fk} . {bucket}"),
                Some(format!("{} . {}", b.ip, b.port)),
            );
        }
        return chain;
    }

    let sched = match sp.scheduler {
        Scheduler::RoundRobin => "rr",
        Scheduler::SourceHash => "sh",
        // Least connections needs per-backend connection counts the kernel does not offer.
        Scheduler::Random | Scheduler::LeastConnections | Scheduler::Maglev => "random",
    };
    let expr = match sched {
        "rr" => format!("numgen inc mod {n}"),
        "sh" => format!("jhash {ip} saddr mod {n} seed {HASH_SEED}"),
        _ => format!("numgen random mod {n}"),
    };
    for k in 0..n {
        let map = format!("{prefix}backend-{k}-{s}");
        if !l.sets.contains_key(&map) {
            let at = f.addr_type;
            l.set(
                &map,
                "map",
                &format!("type {at} . inet_proto . inet_service : {at} . inet_service ;"),
            );
            l.rule(&format!("{prefix}slot-{k}-{s}"), format!("dnat {ip} to {fkey} map @{map}"));
        }
    }
    for (k, b) in slot_list.iter().enumerate() {
        l.element(
            &format!("{prefix}backend-{k}-{s}"),
            fk.to_string(),
            Some(format!("{} . {}", b.ip, b.port)),
        );
    }
    let chain = match (sp.session_affinity_timeout, family) {
        (None, _) => format!("pick-{prefix}{sched}-{n}-{s}"),
        (Some(t), IpFamily::V6) => return per_slot_affinity(l, f, prefix, (sched, &expr), n, t),
        (Some(_), IpFamily::V4) => format!("pick-{prefix}{sched}-{n}-affinity-{s}"),
    };
    if !l.chains.contains_key(&chain) {
        if sp.session_affinity_timeout.is_some() {
            // The client's backend, when it has one (a miss falls through to the pick). The
            // element is written after DNAT by the `affinity` chain.
            l.rule(&chain, format!("dnat {ip} to {ip} saddr . {fkey} map @affinity-{s}"));
        }
        let arms: Vec<String> =
            (0..n).map(|k| format!("{k} : goto {prefix}slot-{k}-{s}")).collect();
        l.rule(&chain, format!("{expr} vmap {{ {} }}", arms.join(", ")));
    }
    chain
}

/// IPv6 ClientIP affinity, to a slot: nft 1.0.6 cannot write a map element whose key or data
/// is over 16 bytes from the packet path (its register allocation asserts), so the map of
/// IPv4 (`saddr . F : backend`) is out of reach. Per-slot dynamic sets `affinity-K-v6` of
/// `saddr . F` instead; `aff-slot-K-tT-v6` refreshes the element and DNATs.
fn per_slot_affinity(
    l: &mut Layout,
    f: Fam,
    prefix: &str,
    (sched, expr): (&str, &str),
    n: usize,
    t: u32,
) -> String {
    let (s, ip, at) = (f.sfx, f.ip, f.addr_type);
    let fkey = format!("{ip} daddr . meta l4proto . th dport");
    let chain = format!("pick-{prefix}{sched}-{n}-t{t}-{s}");
    if l.chains.contains_key(&chain) {
        return chain;
    }
    for k in 0..n {
        let set = format!("affinity-{k}-{s}");
        if !l.sets.contains_key(&set) {
            l.set(
                &set,
                "set",
                &format!("type {at} . {at} . inet_proto . inet_service ; flags dynamic,timeout ; size 262144 ;"),
            )
            .dynamic = true;
        }
        l.rule(&chain, format!("{ip} saddr . {fkey} @{set} goto aff-{prefix}slot-{k}-t{t}-{s}"));
    }
    let arms: Vec<String> =
        (0..n).map(|k| format!("{k} : goto aff-{prefix}slot-{k}-t{t}-{s}")).collect();
    l.rule(&chain, format!("{expr} vmap {{ {} }}", arms.join(", ")));
    for k in 0..n {
        let slot_chain = format!("aff-{prefix}slot-{k}-t{t}-{s}");
        if !l.chains.contains_key(&slot_chain) {
            l.rule(
                &slot_chain,
                format!("update @affinity-{k}-{s} {{ {ip} saddr . {fkey} timeout {t}s }}"),
            );
            l.rule(&slot_chain, format!("dnat {ip} to {fkey} map @{prefix}backend-{k}-{s}"));
        }
    }
    chain
}

/// ClientIP affinity of one frontend: the frontend joins the timeout's set, and every
/// backend of the pools it may use becomes a valid target of its affinity elements. Writes
/// the family's affinity map and chains on first use.
fn affinity(
    l: &mut Layout,
    family: IpFamily,
    fk: &str,
    timeout: u32,
    protocol: &str,
    backends: &BTreeSet<(IpAddr, u16)>,
) {
    let f = fam(family);
    let (s, ip, at) = (f.sfx, f.ip, f.addr_type);
    let map = format!("affinity-{s}");
    if !l.sets.contains_key(&map) {
        l.set(
            &map,
            "map",
            &format!("type {at} . {at} . inet_proto . inet_service : {at} . inet_service ; flags dynamic,timeout ; size 262144 ;"),
        )
        .dynamic = true;
        let key = format!("type {at} . inet_proto . inet_service ;");
        l.set(&format!("affinity-frontends-{s}"), "set", &key);
        l.set(
            &format!("affinity-backends-{s}"),
            "set",
            &format!("type {at} . inet_proto . inet_service . {at} . inet_service ;"),
        );
        for (name, hook) in [
            ("affinity-prerouting", "type filter hook prerouting priority -99 ; policy accept ;"),
            ("affinity-output", "type filter hook output priority -99 ; policy accept ;"),
        ] {
            if !l.chains.contains_key(name) {
                l.chain(name).hook = Some(hook.to_string());
                l.rule(name, "ct state new ct status dnat jump affinity");
            }
        }
    }
    // The frontend of a DNATed connection; `ct original proto-dst` needs a fixed protocol.
    let ct_fk = format!("ct original {ip} daddr . meta l4proto . ct original proto-dst");
    let guard = format!(
        "meta l4proto {protocol} {ct_fk} @affinity-frontends-{s} {ct_fk} . {ip} daddr . th dport != @affinity-backends-{s} update @{map} {{ {ip} saddr . {ct_fk} timeout 100ms : {ip} daddr . th dport }} drop"
    );
    let timeouts = format!("affinity-t{timeout}-{s}");
    let record = format!(
        "meta l4proto {protocol} {ct_fk} @{timeouts} update @{map} {{ {ip} saddr . {ct_fk} timeout {timeout}s : {ip} daddr . th dport }}"
    );
    if !l.sets.contains_key(&timeouts) {
        l.set(&timeouts, "set", &format!("type {at} . inet_proto . inet_service ;"));
    }
    let rules = &l.chain("affinity").rules;
    if !rules.contains(&guard) {
        // Guards first: a stale element must not be refreshed.
        let at = rules.iter().take_while(|r| r.contains(" drop")).count();
        l.chain("affinity").rules.insert(at, guard);
    }
    if !l.chain("affinity").rules.contains(&record) {
        l.rule("affinity", record);
    }
    l.element(&format!("affinity-frontends-{s}"), fk.to_string(), None);
    l.element(&timeouts, fk.to_string(), None);
    for (addr, port) in backends {
        l.element(&format!("affinity-backends-{s}"), format!("{fk} . {addr} . {port}"), None);
    }
}

/// Maglev lookup table of `backends` (bucket → backend index): the same table as the
/// userspace data plane's (`scheduler::maglev`), names `ip:port`, weights as turns, size
/// `scheduler::maglev::table_size_for` the total weight.
pub fn maglev_table(backends: &[Backend]) -> Vec<usize> {
    let names: Vec<String> =
        backends.iter().map(|b| std::net::SocketAddr::new(b.ip, b.port).to_string()).collect();
    let weights: Vec<u32> = backends.iter().map(|b| b.weight.max(1)).collect();
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    MaglevTable::new(&names, &weights, maglev::table_size_for(total))
        .slots()
        .iter()
        .map(|i| *i as usize)
        .collect()
}

fn push_elements(out: &mut String, verb: &str, set: &str, elements: &[String]) {
    for chunk in elements.chunks(ELEMENTS_PER_COMMAND) {
        let _ = writeln!(out, "{verb} element {TABLE} {set} {{");
        for (i, e) in chunk.iter().enumerate() {
            let sep = if i + 1 == chunk.len() { "" } else { "," };
            let _ = writeln!(out, "\t{e}{sep}");
        }
        out.push_str("}\n");
    }
}

fn element_text(key: &str, value: &Option<String>) -> String {
    match value {
        Some(v) => format!("{key} : {v}"),
        None => key.to_string(),
    }
}

/// The full `nft -f` script for `plan`. It creates the table if needed and replaces its
/// content (rules and elements) in one transaction without deleting the table, so it is safe
/// on a table an earlier run left: connections keep their conntrack NAT bindings, and the
/// affinity sets keep their elements. Objects the plan no longer needs are not deleted here
/// (see [`render_reconcile`]).
pub fn render(plan: &ProxyPlan) -> String {
    render_layout(&layout(plan))
}

fn render_layout(l: &Layout) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "add table {TABLE}");
    let _ = writeln!(out, "flush table {TABLE}");
    for (name, c) in &l.chains {
        match &c.hook {
            Some(h) => {
                let _ = writeln!(out, "add chain {TABLE} {name} {{ {h} }}");
            }
            None => {
                let _ = writeln!(out, "add chain {TABLE} {name}");
            }
        }
    }
    for (name, s) in &l.sets {
        let _ = writeln!(out, "add {} {TABLE} {name} {{ {} }}", s.kind, s.spec);
        if !s.dynamic {
            let _ = writeln!(out, "flush {} {TABLE} {name}", s.kind);
        }
    }
    for (name, c) in &l.chains {
        for r in &c.rules {
            let _ = writeln!(out, "add rule {TABLE} {name} {r}");
        }
    }
    for (name, s) in &l.sets {
        if s.elements.is_empty() {
            continue;
        }
        let elements: Vec<String> = s.elements.iter().map(|(k, v)| element_text(k, v)).collect();
        push_elements(&mut out, "add", name, &elements);
    }
    out
}

/// Objects found in the kernel's table (names only), for reconciling after a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    pub chains: BTreeSet<String>,
    /// Set and map names, each with `"set"` or `"map"`.
    pub sets: BTreeMap<String, String>,
}

/// A full render plus the deletion of chains, sets and maps that exist in the kernel but not
/// in the plan. Used by the first sync of a data plane.
pub fn render_reconcile(plan: &ProxyPlan, existing: &Existing) -> String {
    render_reconcile_layout(&layout(plan), existing)
}

/// [`render_reconcile`] of an already built layout.
pub fn render_reconcile_layout(l: &Layout, existing: &Existing) -> String {
    let mut out = render_layout(l);
    let stale_chains: Vec<&String> =
        existing.chains.iter().filter(|c| !l.chains.contains_key(*c)).collect();
    // `flush table` above already emptied every chain, so stale ones can be deleted at once.
    for c in &stale_chains {
        let _ = writeln!(out, "delete chain {TABLE} {c}");
    }
    for (name, kind) in &existing.sets {
        if !l.sets.contains_key(name) {
            let _ = writeln!(out, "delete {kind} {TABLE} {name}");
        }
    }
    out
}

/// The transaction that turns the table rendered for `old` into the one for `new`: element
/// adds and deletes, and only rarely chain, set or rule changes (a new slot count, scheduler
/// or affinity timeout; a change of node settings). Empty when nothing changed.
pub fn render_update(old: &ProxyPlan, new: &ProxyPlan) -> String {
    diff_layouts(&layout(old), &layout(new))
}

/// Most Service ports changed at once for which [`update_layout`] tries the element-only path.
const INCREMENTAL_MAX: usize = 64;

/// Service ports added, removed or changed between `old` and `new`, in key order.
pub fn changed_keys(old: &ProxyPlan, new: &ProxyPlan) -> Vec<ServicePortKey> {
    // One ordered walk of both maps (no lookups): this runs on every change.
    let mut keys = Vec::new();
    let mut a = old.service_ports.iter().peekable();
    let mut b = new.service_ports.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((ka, _)), None) => {
                keys.push((*ka).clone());
                a.next();
            }
            (None, Some((kb, _))) => {
                keys.push((*kb).clone());
                b.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    keys.push((*ka).clone());
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    keys.push((*kb).clone());
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if va != vb {
                        keys.push((*kb).clone());
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
    keys
}

fn subset(plan: &ProxyPlan, keys: &[ServicePortKey]) -> ProxyPlan {
    ProxyPlan {
        service_ports: keys
            .iter()
            .filter_map(|k| plan.service_ports.get(k).map(|v| (k.clone(), v.clone())))
            .collect(),
        node: plan.node.clone(),
        warnings: Vec::new(),
    }
}

/// The transaction that takes the kernel from `current` (the layout it holds, the result of
/// the previous call or of [`layout`] of `old`) to the rules of `new`, updating `current` to
/// what the kernel holds afterwards.
///
/// When the node settings are unchanged and only a few Service ports changed, only their
/// layouts are built (old and new) and their element differences applied: the cost does not
/// depend on the number of Services. That path is taken only when every chain, rule and set
/// the changed ports need already exists and no element another port also wrote is touched;
/// otherwise the whole layout of `new` is built and diffed. Chains and sets the changed ports
/// stop using stay (empty of their elements) until the next whole diff.
pub fn update_layout(current: &mut Layout, old: &ProxyPlan, new: &ProxyPlan) -> String {
    if old.node == new.node {
        let keys = changed_keys(old, new);
        if keys.is_empty() {
            return String::new();
        }
        if keys.len() <= INCREMENTAL_MAX {
            let a = layout(&subset(old, &keys));
            let b = layout(&subset(new, &keys));
            if let Some(script) = update_elements(current, &a, &b) {
                return script;
            }
        }
    }
    let l = layout(new);
    let script = diff_layouts(current, &l);
    *current = l;
    script
}

/// The element-only transaction from `a` to `b` (layouts of the same Service ports, before
/// and after) applied on `current`, or `None` when it would need more than element changes.
fn update_elements(current: &mut Layout, a: &Layout, b: &Layout) -> Option<String> {
    for (name, c) in &b.chains {
        let cur = current.chains.get(name)?;
        if cur.hook != c.hook || !c.rules.iter().all(|r| cur.rules.contains(r)) {
            return None;
        }
    }
    for (name, s) in &b.sets {
        let cur = current.sets.get(name)?;
        if cur.kind != s.kind || cur.spec != s.spec || cur.dynamic != s.dynamic {
            return None;
        }
    }
    let mut deletes: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for (name, s) in a.sets.iter().filter(|(_, s)| !s.dynamic) {
        let after = b.sets.get(name);
        let cur = current.sets.get(name)?;
        for (k, v) in &s.elements {
            if after.and_then(|n| n.elements.get(k)) == Some(v) {
                continue;
            }
            // Only an element this port alone wrote may go.
            if cur.elements.get(k) != Some(v) || current.shared.contains(&(name.clone(), k.clone()))
            {
                return None;
            }
            deletes.entry(name).or_default().push(k);
        }
    }
    let mut adds: BTreeMap<&str, Vec<(&String, &Option<String>)>> = BTreeMap::new();
    for (name, s) in b.sets.iter().filter(|(_, s)| !s.dynamic) {
        let before = a.sets.get(name);
        let cur = current.sets.get(name)?;
        let deleted = deletes.get(name.as_str());
        for (k, v) in &s.elements {
            if before.and_then(|o| o.elements.get(k)) == Some(v) {
                continue;
            }
            // An element another port holds would need the first-writer order: whole diff.
            if cur.elements.contains_key(k) && !deleted.is_some_and(|d| d.contains(&k)) {
                return None;
            }
            adds.entry(name).or_default().push((k, v));
        }
    }
    let mut out = String::new();
    for (name, keys) in &deletes {
        let text: Vec<String> = keys.iter().map(|k| (*k).clone()).collect();
        push_elements(&mut out, "delete", name, &text);
    }
    for (name, elements) in &adds {
        let text: Vec<String> = elements.iter().map(|(k, v)| element_text(k, v)).collect();
        push_elements(&mut out, "add", name, &text);
    }
    for (name, keys) in deletes {
        if let Some(set) = current.sets.get_mut(name) {
            for k in keys {
                set.elements.remove(k);
            }
        }
    }
    for (name, elements) in adds {
        if let Some(set) = current.sets.get_mut(name) {
            for (k, v) in elements {
                set.elements.insert(k.clone(), v.clone());
            }
        }
    }
    Some(out)
}

/// The transaction from layout `a` to layout `b`.
pub fn diff_layouts(a: &Layout, b: &Layout) -> String {
    let mut out = String::new();
    // New chains and sets first: rules and elements below may refer to them.
    for (name, c) in &b.chains {
        if !a.chains.contains_key(name) {
            match &c.hook {
                Some(h) => {
                    let _ = writeln!(out, "add chain {TABLE} {name} {{ {h} }}");
                }
                None => {
                    let _ = writeln!(out, "add chain {TABLE} {name}");
                }
            }
        }
    }
    for (name, s) in &b.sets {
        match a.sets.get(name) {
            None => {
                let _ = writeln!(out, "add {} {TABLE} {name} {{ {} }}", s.kind, s.spec);
            }
            Some(old) if old.spec != s.spec || old.kind != s.kind => {
                // A changed declaration cannot be altered in place; no caller produces one
                // today except a family's first appearance, which is the `None` arm.
                let _ = writeln!(out, "delete {} {TABLE} {name}", old.kind);
                let _ = writeln!(out, "add {} {TABLE} {name} {{ {} }}", s.kind, s.spec);
            }
            Some(_) => {}
        }
    }
    // Element deletes before adds, so that a changed value is a delete + add.
    for (name, s) in &b.sets {
        if s.dynamic {
            continue;
        }
        let old = a.sets.get(name).filter(|o| o.spec == s.spec && o.kind == s.kind);
        let mut deletes = Vec::new();
        let mut adds = Vec::new();
        if let Some(old) = old {
            for (k, v) in &old.elements {
                match s.elements.get(k) {
                    Some(nv) if nv == v => {}
                    _ => deletes.push(k.clone()),
                }
            }
            for (k, v) in &s.elements {
                if old.elements.get(k) != Some(v) {
                    adds.push(element_text(k, v));
                }
            }
        } else {
            adds = s.elements.iter().map(|(k, v)| element_text(k, v)).collect();
        }
        push_elements(&mut out, "delete", name, &deletes);
        push_elements(&mut out, "add", name, &adds);
    }
    // Changed rules: rewrite the whole (small, shared) chain.
    for (name, c) in &b.chains {
        match a.chains.get(name) {
            Some(old) if old.rules == c.rules => {}
            Some(_) => {
                let _ = writeln!(out, "flush chain {TABLE} {name}");
                for r in &c.rules {
                    let _ = writeln!(out, "add rule {TABLE} {name} {r}");
                }
            }
            None => {
                for r in &c.rules {
                    let _ = writeln!(out, "add rule {TABLE} {name} {r}");
                }
            }
        }
    }
    // Stale objects last: elements pointing at them are gone by now. Flush every stale chain
    // before deleting any, so references between stale chains are gone too.
    let stale: Vec<&String> = a.chains.keys().filter(|c| !b.chains.contains_key(*c)).collect();
    for c in &stale {
        let _ = writeln!(out, "flush chain {TABLE} {c}");
    }
    for c in &stale {
        let _ = writeln!(out, "delete chain {TABLE} {c}");
    }
    for (name, s) in &a.sets {
        if !b.sets.contains_key(name) {
            let _ = writeln!(out, "delete {} {TABLE} {name}", s.kind);
        }
    }
    out
}

#[cfg(test)]
mod tests;
