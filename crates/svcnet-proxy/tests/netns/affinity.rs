//! ClientIP affinity of the nftables data plane in a namespace the test creates: a client
//! keeps its backend while that backend exists (also when another one goes, and across a
//! restart of the data plane; on IPv4 — IPv6 affinity is still to a slot), affinity elements
//! pointing to a removed backend are purged in the update that removes it, and each Service's
//! timeout holds. IPv4 and IPv6, TCP and UDP. The netns scenario checks the basics on every
//! data plane; this file the nftables-specific parts (purge, guard, timeouts).
//! Everything is on the namespace's loopback: clients bind distinct local addresses and go
//! through the output hook.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use svcnet_proxy::dataplane::DataPlane;
use svcnet_proxy::dataplane::nftables::{NftablesConfig, NftablesDataPlane};
use svcnet_proxy::{
    Backend, Frontend, FrontendKind, IpFamily, NodePlan, Protocol, ProxyPlan, Scheduler,
    ServicePortKey, ServicePortPlan, TrafficPolicy,
};
use svcnet_testkit::{NetnsGuard, Topology, can_create_netns};

use super::echo;
use super::scenario::{apply, node_plan};

const PORT: u16 = 8080;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn backend(addr: IpAddr) -> Backend {
    Backend {
        ip: addr,
        port: PORT,
        weight: 1,
        node_name: Some("node".to_string()),
        zone: None,
        is_local: true,
        ready: true,
        target: None,
    }
}

fn service(vip: IpAddr, protocol: Protocol, backends: &[IpAddr], timeout: u32) -> ServicePortPlan {
    let backends: Vec<Backend> = backends.iter().map(|b| backend(*b)).collect();
    ServicePortPlan {
        frontends: vec![Frontend {
            kind: FrontendKind::ClusterIp,
            address: Some(vip),
            port: 80,
            protocol,
        }],
        local_backends: backends.clone(),
        has_endpoints_anywhere: !backends.is_empty(),
        cluster_backends: backends,
        internal_traffic_policy: TrafficPolicy::Cluster,
        external_traffic_policy: TrafficPolicy::Cluster,
        session_affinity_timeout: Some(timeout),
        scheduler: Scheduler::Random,
        load_balancer_source_ranges: Vec::new(),
        health_check_node_port: None,
    }
}

fn key(name: &str, protocol: Protocol, family: IpFamily) -> ServicePortKey {
    ServicePortKey {
        namespace: "default".to_string(),
        name: name.to_string(),
        port_name: String::new(),
        protocol,
        family,
    }
}

const V4_BACKENDS: [&str; 3] = ["10.1.0.1", "10.1.0.2", "10.1.0.3"];
const V6_BACKENDS: [&str; 3] = ["fd01::1", "fd01::2", "fd01::3"];

/// The plan: TCP and UDP on v4 (timeouts 600 s and 300 s), TCP on v6, each over the
/// backends whose index is in `keep`.
fn plan(keep: &[usize]) -> ProxyPlan {
    let pick = |all: &[&str]| -> Vec<IpAddr> { keep.iter().map(|i| ip(all[*i])).collect() };
    let mut p =
        ProxyPlan { service_ports: BTreeMap::new(), node: NodePlan::default(), warnings: vec![] };
    p.service_ports.insert(
        key("tcp4", Protocol::Tcp, IpFamily::V4),
        service(ip("10.96.0.10"), Protocol::Tcp, &pick(&V4_BACKENDS), 600),
    );
    p.service_ports.insert(
        key("udp4", Protocol::Udp, IpFamily::V4),
        service(ip("10.96.0.11"), Protocol::Udp, &pick(&V4_BACKENDS), 300),
    );
    p.service_ports.insert(
        key("tcp6", Protocol::Tcp, IpFamily::V6),
        service(ip("fd96::10"), Protocol::Tcp, &pick(&V6_BACKENDS), 600),
    );
    p
}

fn nftables() -> Box<dyn DataPlane> {
    Box::new(NftablesDataPlane::new(NftablesConfig::default()))
}

/// Which backend (its address) answers `client` for `service`.
fn who(ns: &NetnsGuard, client: IpAddr, service: SocketAddr, udp: bool) -> String {
    ns.thread(move || {
        let mut buf = [0u8; 64];
        if udp {
            let s = UdpSocket::bind(SocketAddr::new(client, 0))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.send_to(b"?", service)?;
            let (n, _) = s.recv_from(&mut buf)?;
            return Ok(String::from_utf8_lossy(&buf[..n]).to_string());
        }
        let s = socket2::Socket::new(
            socket2::Domain::for_address(service),
            socket2::Type::STREAM,
            None,
        )?;
        s.bind(&SocketAddr::new(client, 0).into())?;
        s.connect_timeout(&service.into(), Duration::from_secs(3))?;
        let mut s: TcpStream = s.into();
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .join()
    .expect("client thread")
    .unwrap_or_else(|e| format!("error: {e}"))
}

/// Elements of the affinity map of `family` as (client, frontend address, backend, timeout).
fn affinity_elements(ns: &NetnsGuard, sfx: &str) -> Vec<(String, String, String, u64)> {
    let out = ns
        .exec(&["nft", "-j", "list", "map", "inet", "svcnet", &format!("affinity-{sfx}")])
        .expect("list map");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut found = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        for e in item["map"]["elem"].as_array().into_iter().flatten() {
            let k = &e[0]["elem"];
            let parts = |v: &serde_json::Value| -> Vec<String> {
                v["concat"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| p.as_str().map(String::from).unwrap_or(p.to_string()))
                    .collect()
            };
            let (key, data) = (parts(&k["val"]), parts(&e[1]));
            found.push((
                key[0].clone(),
                key[1].clone(),
                data[0].clone(),
                k["timeout"].as_u64().unwrap_or(0),
            ));
        }
    }
    found
}

#[test]
fn nftables_affinity_is_per_backend() {
    if !can_create_netns() {
        return;
    }
    let ns = NetnsGuard::new("aff").expect("namespace");
    let v4_clients: Vec<IpAddr> = (11..19).map(|i| ip(&format!("10.1.0.{i}"))).collect();
    let v6_clients: Vec<IpAddr> = (0x11..0x19).map(|i| ip(&format!("fd01::{i:x}"))).collect();
    for a in V4_BACKENDS
        .iter()
        .map(|a| format!("{a}/32"))
        .chain(v4_clients.iter().map(|a| format!("{a}/32")))
    {
        ns.exec(&["ip", "addr", "add", &a, "dev", "lo"]).expect("v4 address");
    }
    for a in V6_BACKENDS
        .iter()
        .map(|a| format!("{a}/128"))
        .chain(v6_clients.iter().map(|a| format!("{a}/128")))
    {
        ns.exec(&["ip", "addr", "add", &a, "dev", "lo", "nodad"]).expect("v6 address");
    }
    ns.exec(&["ip", "route", "add", "local", "10.96.0.0/16", "dev", "lo"]).expect("route");
    ns.exec(&["ip", "-6", "route", "add", "local", "fd96::/64", "dev", "lo"]).expect("route");
    // Echo backends: each answers with its own address.
    for b in V4_BACKENDS.iter().chain(&V6_BACKENDS).map(|a| ip(a)) {
        let tcp =
            ns.thread(move || Ok(TcpListener::bind((b, PORT))?)).join().expect("t").expect("bind");
        std::thread::spawn(move || {
            for mut c in tcp.incoming().flatten() {
                let _ = std::io::Write::write_all(&mut c, b.to_string().as_bytes());
            }
        });
        let udp =
            ns.thread(move || Ok(UdpSocket::bind((b, PORT))?)).join().expect("t").expect("bind");
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((_, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(b.to_string().as_bytes(), from);
            }
        });
    }
    let tcp4: SocketAddr = "10.96.0.10:80".parse().expect("sock");
    let udp4: SocketAddr = "10.96.0.11:80".parse().expect("sock");
    let tcp6: SocketAddr = "[fd96::10]:80".parse().expect("sock");
    let cases = [(tcp4, false, &v4_clients), (udp4, true, &v4_clients), (tcp6, false, &v6_clients)];

    let mut dp = apply(&ns, nftables(), Some(plan(&[0, 1, 2])));
    // Every client sticks to one backend.
    let mut chosen: BTreeMap<(SocketAddr, IpAddr), String> = BTreeMap::new();
    for (svc, udp, clients) in cases {
        for c in clients.iter() {
            let first = who(&ns, *c, svc, udp);
            assert!(!first.starts_with("error"), "{svc} from {c}: {first}");
            for _ in 0..4 {
                assert_eq!(who(&ns, *c, svc, udp), first, "{svc} from {c}");
            }
            chosen.insert((svc, *c), first);
        }
    }
    // The per-Service timeout holds.
    let v4 = affinity_elements(&ns, "v4");
    assert!(v4.iter().any(|e| e.1 == "10.96.0.10" && e.3 == 600), "{v4:?}");
    assert!(v4.iter().any(|e| e.1 == "10.96.0.11" && e.3 == 300), "{v4:?}");

    // Backend 0 goes: its clients move at once (its elements are purged in that update), the
    // others keep their backend.
    dp = apply(&ns, dp, Some(plan(&[1, 2])));
    let left = affinity_elements(&ns, "v4");
    assert!(!left.iter().any(|e| e.2 == V4_BACKENDS[0]), "{left:?}");
    for (svc, udp, clients) in cases {
        for c in clients.iter() {
            let now = who(&ns, *c, svc, udp);
            let before = &chosen[&(svc, *c)];
            if svc.is_ipv6() {
                // IPv6 affinity is still to a slot (see render::nftables): only reachability.
                assert!(
                    !now.starts_with("error") && now != V6_BACKENDS[0],
                    "{svc} from {c}: {now}"
                );
                chosen.insert((svc, *c), now);
            } else if *before == V4_BACKENDS[0] {
                assert!(!now.starts_with("error") && now != *before, "{svc} from {c}: {now}");
                chosen.insert((svc, *c), now);
            } else {
                assert_eq!(&now, before, "{svc} from {c} moved");
            }
        }
    }

    // An element pointing to a removed backend that escaped the purge (written between the
    // listing and the commit) is caught by the guard: the client does not reach that backend
    // (still listening here) and gets a fresh pick after its SYN is retransmitted.
    let c = v4_clients[0];
    let element =
        format!("{{ {c} . 10.96.0.10 . tcp . 80 timeout 600s : {} . {PORT} }}", V4_BACKENDS[0]);
    ns.exec(&[
        "nft",
        "delete",
        "element",
        "inet",
        "svcnet",
        "affinity-v4",
        &format!("{{ {c} . 10.96.0.10 . tcp . 80 }}"),
    ])
    .expect("delete element");
    ns.exec(&["nft", "add", "element", "inet", "svcnet", "affinity-v4", &element])
        .expect("add element");
    let now = who(&ns, c, tcp4, false);
    assert!(now == V4_BACKENDS[1] || now == V4_BACKENDS[2], "stale element used: {now}");
    chosen.insert((tcp4, c), now);

    // A restart (a new data plane, full sync) keeps the affinity; one that also drops backend
    // 1 purges its elements.
    drop(dp);
    let dp = apply(&ns, nftables(), Some(plan(&[1, 2])));
    for (svc, udp, clients) in cases {
        for c in clients.iter() {
            assert_eq!(who(&ns, *c, svc, udp), chosen[&(svc, *c)], "{svc} from {c} after restart");
        }
    }
    drop(dp);
    let dp = apply(&ns, nftables(), Some(plan(&[2])));
    let left = affinity_elements(&ns, "v4");
    assert!(left.iter().all(|e| e.2 == V4_BACKENDS[2]), "{left:?}");
    for (svc, udp, clients) in cases {
        for c in clients.iter() {
            let now = who(&ns, *c, svc, udp);
            assert!(now == V4_BACKENDS[2] || now == V6_BACKENDS[2], "{svc} from {c}: {now}");
        }
    }
    apply(&ns, dp, None);
}

/// externalTrafficPolicy Local with affinity, through the node's prerouting path: an outside
/// client sticks to one of the local pods and moves to the other local one when its own goes;
/// a pod (short-circuited to every backend) sticks to any backend and keeps it.
#[test]
fn nftables_affinity_with_local_traffic_policy() {
    if !can_create_netns() {
        return;
    }
    // Pods 0 and 1 are local backends, pod 2 a "remote" one, pod 3 a client.
    let t = Topology::new(4).expect("topology");
    let _echoes: Vec<echo::Echo> = t
        .pods
        .iter()
        .enumerate()
        .map(|(i, p)| echo::start(p, format!("pod-{i}")).expect("echo"))
        .collect();
    let o = t.subnet.octets();
    let vip = Ipv4Addr::new(o[0], o[1], o[2], 245);
    let plan = |pods: &[usize]| {
        let backends: Vec<Backend> = pods
            .iter()
            .map(|i| Backend {
                ip: IpAddr::V4(t.pod_ip(*i)),
                port: echo::TCP_PORT,
                weight: 1,
                node_name: Some(if *i < 2 { "node" } else { "other" }.to_string()),
                zone: None,
                is_local: *i < 2,
                ready: true,
                target: None,
            })
            .collect();
        let mut sp = service(IpAddr::V4(vip), Protocol::Tcp, &[], 600);
        sp.frontends.push(Frontend {
            kind: FrontendKind::NodePort,
            address: None,
            port: 30090,
            protocol: Protocol::Tcp,
        });
        sp.local_backends = backends.iter().filter(|b| b.is_local).cloned().collect();
        sp.has_endpoints_anywhere = !backends.is_empty();
        sp.cluster_backends = backends;
        sp.external_traffic_policy = TrafficPolicy::Local;
        let mut p = ProxyPlan { node: node_plan(&t), ..Default::default() };
        p.service_ports.insert(key("sticky-local", Protocol::Tcp, IpFamily::V4), sp);
        p
    };
    let seen = |ns: &NetnsGuard, addr: SocketAddr| -> Vec<String> {
        ns.thread(move || {
            Ok((0..8)
                .map(|_| {
                    echo::who(addr, Duration::from_secs(3)).unwrap_or_else(|e| format!("{e:?}"))
                })
                .collect::<Vec<_>>())
        })
        .join()
        .expect("thread")
        .expect("client")
    };
    let node_port = SocketAddr::new(IpAddr::V4(t.node_ip()), 30090);

    let dp = apply(&t.node, nftables(), Some(plan(&[0, 1, 2])));
    let outside = seen(&t.client, node_port);
    assert!(outside.iter().all(|b| *b == outside[0]), "{outside:?}");
    assert!(outside[0] == "pod-0" || outside[0] == "pod-1", "{outside:?}");
    let from_pod = seen(&t.pods[3], node_port);
    assert!(from_pod.iter().all(|b| *b == from_pod[0] && b.starts_with("pod-")), "{from_pod:?}");

    // The outside client's pod goes: it moves to the other local pod, at once.
    let gone: usize = outside[0].trim_start_matches("pod-").parse().expect("index");
    let left: Vec<usize> = (0..3).filter(|i| *i != gone).collect();
    let dp = apply(&t.node, dp, Some(plan(&left)));
    let moved = seen(&t.client, node_port);
    assert_eq!(moved, vec![format!("pod-{}", 1 - gone); 8]);
    let pod_now = seen(&t.pods[3], node_port);
    if from_pod[0] != outside[0] {
        assert_eq!(pod_now, vec![from_pod[0].clone(); 8], "the pod's backend stayed");
    } else {
        assert!(pod_now.iter().all(|b| *b == pod_now[0] && *b != outside[0]), "{pod_now:?}");
    }
    apply(&t.node, dp, None);
}
