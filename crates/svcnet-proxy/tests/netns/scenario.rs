//! One scenario, run against each data plane (nftables, iptables, userspace): ClusterIP
//! distribution, reject with no endpoints (and of a ClusterIP's undefined port), NodePort, LoadBalancer source ranges,
//! externalTrafficPolicy Local, ClientIP affinity (kept when another backend goes), a plan
//! change under a live connection, restarts of the data plane under a client loop with no
//! failed connection, and UDP flows moving after their endpoint goes away.
//!
//! A restart starts the successor, then shuts the predecessor down: for the kernel data planes
//! the order does not matter (rules stay in the kernel), the userspace one hands its ports
//! over (`SO_REUSEPORT`, `tcp_migrate_req`) and drains its established connections. Where a
//! userspace proxy cannot behave like rules (it has already accepted the connection it would
//! reject or drop), the scenario expects a reset instead.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use svcnet_proxy::dataplane::DataPlane;
use svcnet_proxy::dataplane::iptables::{IptablesBackend, IptablesConfig, IptablesDataPlane};
use svcnet_proxy::dataplane::nftables::{NftablesConfig, NftablesDataPlane};
use svcnet_proxy::dataplane::userspace::{UserspaceConfig, UserspaceDataPlane};
use svcnet_proxy::{
    Backend, Frontend, FrontendKind, IpFamily, NodePlan, Protocol, ProxyPlan, Scheduler,
    ServicePortKey, ServicePortPlan, TrafficPolicy,
};
use svcnet_testkit::{NetnsGuard, Topology, can_create_netns};
use tokio_util::sync::CancellationToken;

use super::echo::{self, Held, TCP_PORT, UDP_PORT, who};

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Nftables,
    Iptables,
    IptablesLegacy,
    Userspace,
}

fn data_plane(kind: Kind) -> Box<dyn DataPlane> {
    match kind {
        Kind::Nftables => Box::new(NftablesDataPlane::new(NftablesConfig::default())),
        Kind::Iptables => {
            Box::new(IptablesDataPlane::new(IptablesConfig { ipv6: false, ..Default::default() }))
        }
        Kind::IptablesLegacy => Box::new(IptablesDataPlane::new(IptablesConfig {
            backend: IptablesBackend::Legacy,
            ipv6: false,
            ..Default::default()
        })),
        Kind::Userspace => Box::new(UserspaceDataPlane::new(
            UserspaceConfig {
                take_over: true,
                drain_timeout: Duration::from_secs(30),
                ..Default::default()
            },
            CancellationToken::new(),
        )),
    }
}

/// Shuts a data plane down on a thread of its own; the userspace one returns when its
/// connections are drained.
fn shut_down(dp: Box<dyn DataPlane>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        rt.expect("runtime").block_on(dp.shutdown());
    })
}

/// Runs `apply` (or `cleanup`) inside the node namespace on a thread of its own.
pub fn apply(
    node: &NetnsGuard,
    mut dp: Box<dyn DataPlane>,
    plan: Option<ProxyPlan>,
) -> Box<dyn DataPlane> {
    node.thread(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            match &plan {
                Some(plan) => dp.apply(plan).await,
                None => dp.cleanup().await,
            }
        })?;
        Ok(dp)
    })
    .join()
    .expect("data plane thread")
    .expect("apply")
}

fn in_ns<T: Send + 'static>(ns: &NetnsGuard, f: impl FnOnce() -> T + Send + 'static) -> T {
    ns.thread(move || Ok(f())).join().expect("namespace thread").expect("namespace thread")
}

fn backend(ip: Ipv4Addr, port: u16, local: bool) -> Backend {
    Backend {
        ip: IpAddr::V4(ip),
        port,
        weight: 1,
        node_name: Some(if local { "node" } else { "other" }.to_string()),
        zone: None,
        is_local: local,
        ready: true,
        target: None,
    }
}

fn service(frontends: Vec<Frontend>, backends: Vec<Backend>) -> ServicePortPlan {
    ServicePortPlan {
        frontends,
        local_backends: backends.iter().filter(|b| b.is_local).cloned().collect(),
        has_endpoints_anywhere: !backends.is_empty(),
        cluster_backends: backends,
        internal_traffic_policy: TrafficPolicy::Cluster,
        external_traffic_policy: TrafficPolicy::Cluster,
        session_affinity_timeout: None,
        scheduler: Scheduler::Random,
        load_balancer_source_ranges: Vec::new(),
        health_check_node_port: None,
    }
}

fn key(name: &str, protocol: Protocol) -> ServicePortKey {
    ServicePortKey {
        namespace: "default".to_string(),
        name: name.to_string(),
        port_name: String::new(),
        protocol,
        family: IpFamily::V4,
    }
}

fn fe(kind: FrontendKind, ip: Option<Ipv4Addr>, port: u16, protocol: Protocol) -> Frontend {
    Frontend { kind, address: ip.map(IpAddr::V4), port, protocol }
}

struct Addrs {
    web: Ipv4Addr,
    empty: Ipv4Addr,
    sticky: Ipv4Addr,
    local: Ipv4Addr,
    dns: Ipv4Addr,
    lb: Ipv4Addr,
    lb_denied: Ipv4Addr,
}

fn addrs(t: &Topology) -> Addrs {
    let o = t.subnet.octets();
    let h = |last| Ipv4Addr::new(o[0], o[1], o[2], last);
    Addrs {
        web: h(240),
        empty: h(241),
        sticky: h(242),
        local: h(243),
        dns: h(244),
        lb: h(250),
        lb_denied: h(251),
    }
}

/// The topology's node: NodePorts on its address, pods in the lower half of the subnet.
pub fn node_plan(t: &Topology) -> NodePlan {
    NodePlan {
        node_name: "node".to_string(),
        zone: None,
        node_port_addresses: vec![IpAddr::V4(t.node_ip())],
        cluster_cidrs: vec![format!("{}/25", t.subnet).parse().expect("cidr")],
        masquerade_all: false,
        service_cidrs: Vec::new(),
    }
}

fn plan(t: &Topology, web_pods: &[usize], sticky_pods: &[usize], dns_pod: usize) -> ProxyPlan {
    let a = addrs(t);
    let tcp = Protocol::Tcp;
    let mut plan = ProxyPlan {
        node: NodePlan {
            // .240–.255: the Service addresses below, and unallocated ones.
            service_cidrs: vec![format!("{}/28", a.web).parse().expect("cidr")],
            ..node_plan(t)
        },
        ..Default::default()
    };
    let web_backends: Vec<Backend> =
        web_pods.iter().map(|i| backend(t.pod_ip(*i), TCP_PORT, true)).collect();
    let mut web = service(
        vec![
            fe(FrontendKind::ClusterIp, Some(a.web), 80, tcp),
            fe(FrontendKind::NodePort, None, 30080, tcp),
            fe(FrontendKind::LoadBalancer, Some(a.lb), 80, tcp),
        ],
        web_backends.clone(),
    );
    web.load_balancer_source_ranges = vec![format!("{}/32", t.client_ip()).parse().expect("cidr")];
    plan.service_ports.insert(key("web", tcp), web);
    let mut denied = service(
        vec![fe(FrontendKind::LoadBalancer, Some(a.lb_denied), 80, tcp)],
        web_backends.clone(),
    );
    denied.load_balancer_source_ranges = vec!["192.0.2.0/24".parse().expect("cidr")];
    plan.service_ports.insert(key("denied", tcp), denied);
    plan.service_ports.insert(
        key("empty", tcp),
        service(vec![fe(FrontendKind::ClusterIp, Some(a.empty), 80, tcp)], vec![]),
    );
    let mut sticky = service(
        vec![fe(FrontendKind::ClusterIp, Some(a.sticky), 80, tcp)],
        sticky_pods.iter().map(|i| backend(t.pod_ip(*i), TCP_PORT, true)).collect(),
    );
    sticky.session_affinity_timeout = Some(600);
    plan.service_ports.insert(key("sticky", tcp), sticky);
    // Pod 0 is on this node, pod 1 is "remote".
    let mut local = service(
        vec![
            fe(FrontendKind::ClusterIp, Some(a.local), 80, tcp),
            fe(FrontendKind::NodePort, None, 30081, tcp),
        ],
        vec![backend(t.pod_ip(0), TCP_PORT, true), backend(t.pod_ip(1), TCP_PORT, false)],
    );
    local.external_traffic_policy = TrafficPolicy::Local;
    plan.service_ports.insert(key("local", tcp), local);
    plan.service_ports.insert(
        key("dns", Protocol::Udp),
        service(
            vec![fe(FrontendKind::ClusterIp, Some(a.dns), 53, Protocol::Udp)],
            vec![backend(t.pod_ip(dns_pod), UDP_PORT, true)],
        ),
    );
    plan
}

fn sock(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

/// Names of the backends reached by `n` connections from `ns`.
fn spread(ns: &NetnsGuard, addr: SocketAddr, n: usize) -> Vec<String> {
    in_ns(ns, move || {
        (0..n)
            .map(|_| who(addr, Duration::from_secs(2)).unwrap_or_else(|e| format!("error: {e:?}")))
            .collect()
    })
}

pub fn run_scenario(kind: Kind) {
    if !can_create_netns() {
        eprintln!("skipping: cannot create network namespaces");
        return;
    }
    let t = Topology::new(3).expect("topology");
    let a = addrs(&t);
    let _echoes: Vec<echo::Echo> = t
        .pods
        .iter()
        .enumerate()
        .map(|(i, p)| echo::start(p, format!("pod-{i}")).expect("echo"))
        .collect();
    if matches!(kind, Kind::Userspace) {
        // A userspace proxy serves the frontends on addresses of its node.
        for ip in [a.web, a.empty, a.sticky, a.local, a.dns, a.lb, a.lb_denied] {
            t.node.exec(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"]).expect("addr");
        }
        t.node.exec(&["sysctl", "-qw", "net.ipv4.tcp_migrate_req=1"]).expect("sysctl");
    }
    // What a userspace proxy does instead of dropping or rejecting: reset.
    let (when_dropped, when_rejected) = match kind {
        Kind::Userspace => {
            (std::io::ErrorKind::ConnectionReset, std::io::ErrorKind::ConnectionReset)
        }
        _ => (std::io::ErrorKind::TimedOut, std::io::ErrorKind::ConnectionRefused),
    };
    let mut dp = data_plane(kind);
    let first = plan(&t, &[0, 1, 2], &[0, 1, 2], 0);
    dp = apply(&t.node, dp, Some(first.clone()));

    // ClusterIP from the client (outside the cluster CIDR) and from a pod: spread over all.
    let seen: BTreeSet<String> = spread(&t.client, sock(a.web, 80), 30).into_iter().collect();
    assert_eq!(
        seen,
        ["pod-0", "pod-1", "pod-2"].map(String::from).into(),
        "{kind:?} ClusterIP from client"
    );
    let seen: BTreeSet<String> = spread(&t.pods[1], sock(a.web, 80), 30).into_iter().collect();
    assert!(
        seen.len() >= 2 && seen.iter().all(|s| s.starts_with("pod-")),
        "{kind:?} ClusterIP from pod: {seen:?}"
    );

    // NodePort and an allowed LoadBalancer address.
    let seen: BTreeSet<String> =
        spread(&t.client, sock(t.node_ip(), 30080), 20).into_iter().collect();
    assert!(
        seen.len() >= 2 && seen.iter().all(|s| s.starts_with("pod-")),
        "{kind:?} NodePort: {seen:?}"
    );
    let seen: BTreeSet<String> = spread(&t.client, sock(a.lb, 80), 10).into_iter().collect();
    assert!(seen.iter().all(|s| s.starts_with("pod-")), "{kind:?} LoadBalancer: {seen:?}");

    // A source outside loadBalancerSourceRanges is dropped (times out).
    let denied = in_ns(&t.client, move || who(sock(a.lb_denied, 80), Duration::from_millis(400)));
    assert_eq!(denied, Err(when_dropped), "{kind:?} source ranges");

    // No endpoints: refused, quickly.
    let started = Instant::now();
    let refused = in_ns(&t.client, move || who(sock(a.empty, 80), Duration::from_secs(3)));
    assert_eq!(refused, Err(when_rejected), "{kind:?} reject");
    assert!(started.elapsed() < Duration::from_secs(2));

    // A ClusterIP on a port no Service has is refused (nftables, as kube-proxy's nftables
    // mode; userspace: nothing listens there); an unallocated address of the Service range is
    // dropped. iptables, like kube-proxy's, lets both go on unanswered.
    let wrong_port = in_ns(&t.client, move || who(sock(a.web, 81), Duration::from_millis(400)));
    let unallocated = in_ns(&t.client, move || {
        who(sock(Ipv4Addr::from(u32::from(a.web) + 5), 80), Duration::from_millis(400))
    });
    match kind {
        Kind::Nftables | Kind::Userspace => {
            assert_eq!(wrong_port, Err(std::io::ErrorKind::ConnectionRefused), "{kind:?} port");
        }
        _ => assert!(wrong_port.is_err(), "{kind:?} port: {wrong_port:?}"),
    }
    assert_eq!(unallocated, Err(std::io::ErrorKind::TimedOut), "{kind:?} unallocated");

    // ClientIP affinity: one backend for every connection.
    let seen: BTreeSet<String> = spread(&t.client, sock(a.sticky, 80), 15).into_iter().collect();
    assert_eq!(seen.len(), 1, "{kind:?} affinity: {seen:?}");
    let sticky_name = seen.first().cloned().unwrap_or_default();
    let sticky_pod: usize = sticky_name.trim_start_matches("pod-").parse().expect("pod index");

    // externalTrafficPolicy Local: outside traffic only to the local pod 0; pod traffic to
    // the NodePort short-circuits to every endpoint.
    let seen: BTreeSet<String> =
        spread(&t.client, sock(t.node_ip(), 30081), 15).into_iter().collect();
    assert_eq!(seen, ["pod-0".to_string()].into(), "{kind:?} ETP Local from outside");
    let seen: BTreeSet<String> =
        spread(&t.pods[2], sock(t.node_ip(), 30081), 20).into_iter().collect();
    assert_eq!(seen, ["pod-0", "pod-1"].map(String::from).into(), "{kind:?} ETP Local from a pod");

    // UDP: a flow from a fixed source port, then its endpoint goes away.
    let udp = in_ns(&t.client, || {
        let s = UdpSocket::bind(("0.0.0.0", 40000)).expect("udp bind");
        s.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
        s
    });
    assert_eq!(echo::udp_who(&udp, sock(a.dns, 53)).as_deref(), Some("pod-0"), "{kind:?} UDP");

    // A long-lived connection survives a plan change and a restart of the data plane.
    let mut held = in_ns(&t.client, move || Held::open(sock(a.web, 80))).expect("held connection");
    held.ping().expect("ping before");
    let held_pod: usize = held.backend.trim_start_matches("pod-").parse().expect("pod index");
    let others: Vec<usize> = (0..3).filter(|i| *i != held_pod).collect();
    // The sticky Service loses its first backend that is not the client's.
    let gone = (0..3).find(|i| *i != sticky_pod).expect("another pod");
    let sticky_left: Vec<usize> = (0..3).filter(|i| *i != gone).collect();
    let second = plan(&t, &[held_pod, others[0]], &sticky_left, 1);
    dp = apply(&t.node, dp, Some(second.clone()));
    held.ping().expect("ping after an update");
    let seen: BTreeSet<String> = spread(&t.client, sock(a.web, 80), 20).into_iter().collect();
    assert!(
        !seen.contains(&format!("pod-{}", others[1])),
        "{kind:?} removed endpoint still used: {seen:?}"
    );
    // ClientIP affinity is to a backend: removing another one does not move the client.
    let seen: BTreeSet<String> = spread(&t.client, sock(a.sticky, 80), 10).into_iter().collect();
    assert_eq!(seen, [sticky_name].into(), "{kind:?} affinity after another backend went");

    // UDP moved to pod 1 after conntrack cleanup.
    assert_eq!(
        echo::udp_who(&udp, sock(a.dns, 53)).as_deref(),
        Some("pod-1"),
        "{kind:?} UDP after change"
    );

    // Restart under load: a bounded client loop (200 connections, a few seconds) runs while a
    // fresh data plane takes over (reconciling with what the kernel holds) and the old one
    // shuts down, three times. No connection may fail, and the held connection survives.
    let done = Arc::new(AtomicUsize::new(0));
    let counter = done.clone();
    let web = sock(a.web, 80);
    let load = t.client.thread(move || {
        let mut failures = Vec::new();
        for i in 0..200 {
            if let Err(e) = who(web, Duration::from_secs(2)) {
                failures.push(format!("connection {i}: {e:?}"));
            }
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(failures)
    });
    let mut dp = dp;
    let mut draining = Vec::new();
    for round in 1..=3 {
        let deadline = Instant::now() + Duration::from_secs(20);
        while done.load(Ordering::SeqCst) < round * 40 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let successor = apply(&t.node, data_plane(kind), Some(second.clone()));
        draining.push(shut_down(std::mem::replace(&mut dp, successor)));
    }
    let failures = load.join().expect("load thread").expect("load loop");
    assert_eq!(done.load(Ordering::SeqCst), 200);
    assert!(failures.is_empty(), "{kind:?} failed during restarts: {failures:?}");
    held.ping().expect("ping after a restart");
    let seen: BTreeSet<String> = spread(&t.client, sock(a.web, 80), 10).into_iter().collect();
    assert!(seen.iter().all(|s| s.starts_with("pod-")), "{kind:?} after restart: {seen:?}");

    // Cleanup removes everything svcnet added.
    dp = apply(&t.node, dp, None);
    drop(dp);
    let after = in_ns(&t.client, move || who(sock(a.web, 80), Duration::from_millis(400)));
    assert!(after.is_err(), "{kind:?} rules left after cleanup");
    // The predecessors finish once their last connection closes.
    drop(held);
    for handle in draining {
        handle.join().expect("shutdown thread");
    }
}
