//! Writes svcnet's nftables and iptables renders for N services × M endpoints, with the same
//! addresses as `shared/bench/kube_proxy_rules.py`, so both layouts load the same cluster.
//!
//! Usage: svcnet-bench-dataplane --style nft|ipt --variant full|update -n N [-m M]
//! `update` is the transaction that changes the last service's endpoints (one endpoint
//! replaced), applied on top of `full`. The render time goes to stderr as `render_s=…`
//! (for `update` as the nftables data plane does it: `update_layout` on the kept layout of
//! the applied plan).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use svcnet_proxy::render;
use svcnet_proxy::{
    Backend, Frontend, FrontendKind, IpFamily, NodePlan, Protocol, ProxyPlan, Scheduler,
    ServicePortKey, ServicePortPlan, TrafficPolicy,
};

fn v4(base: u32, i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(base + i))
}

fn plan(n: u32, m: u32, changed: bool) -> ProxyPlan {
    let svc_base = u32::from(Ipv4Addr::new(198, 19, 0, 0)) + 1;
    let pod_base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + 1;
    let mut service_ports = BTreeMap::new();
    for i in 0..n {
        let mut backends: Vec<Backend> = (0..m)
            .map(|j| {
                let e = i * m + j;
                Backend {
                    ip: v4(pod_base, e % 65000),
                    port: 8000 + (e / 65000) as u16,
                    weight: 1,
                    node_name: None,
                    zone: None,
                    is_local: false,
                    ready: true,
                    target: None,
                }
            })
            .collect();
        if changed && i == n - 1 {
            backends[0].port += 1000;
            backends.sort();
        }
        service_ports.insert(
            ServicePortKey {
                namespace: format!("ns{}", i / 100),
                name: format!("svc{i}"),
                port_name: "p80".to_string(),
                protocol: Protocol::Tcp,
                family: IpFamily::V4,
            },
            ServicePortPlan {
                frontends: vec![Frontend {
                    kind: FrontendKind::ClusterIp,
                    address: Some(v4(svc_base, i)),
                    port: 80,
                    protocol: Protocol::Tcp,
                }],
                cluster_backends: backends,
                local_backends: Vec::new(),
                has_endpoints_anywhere: true,
                internal_traffic_policy: TrafficPolicy::Cluster,
                external_traffic_policy: TrafficPolicy::Cluster,
                session_affinity_timeout: None,
                scheduler: Scheduler::Random,
                load_balancer_source_ranges: Vec::new(),
                health_check_node_port: None,
            },
        );
    }
    ProxyPlan {
        service_ports,
        node: NodePlan {
            node_name: "bench".to_string(),
            zone: None,
            node_port_addresses: vec![IpAddr::V4(Ipv4Addr::new(198, 18, 255, 254))],
            cluster_cidrs: vec!["198.18.0.0/16".parse().expect("static cidr")],
            masquerade_all: false,
            service_cidrs: Vec::new(),
        },
        warnings: Vec::new(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get =
        |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let style = get("--style").unwrap_or_else(|| "nft".to_string());
    let variant = get("--variant").unwrap_or_else(|| "full".to_string());
    let n: u32 = get("-n").and_then(|v| v.parse().ok()).unwrap_or(100);
    let m: u32 = get("-m").and_then(|v| v.parse().ok()).unwrap_or(10);
    let old = plan(n, m, false);
    let new = plan(n, m, true);
    // The data plane keeps the applied plan's layout, so a change builds only the new one.
    let mut old_layout = render::nftables::layout(&old);
    let started = std::time::Instant::now();
    let text = match (style.as_str(), variant.as_str()) {
        ("nft", "full") => render::nftables::render(&old),
        ("nft", "update") => render::nftables::update_layout(&mut old_layout, &old, &new),
        ("ipt", "full") => render::iptables::render(&old),
        ("ipt", "update") => render::iptables::render_update(&old, &new, IpFamily::V4),
        _ => {
            eprintln!(
                "usage: svcnet-bench-dataplane --style nft|ipt --variant full|update -n N [-m M]"
            );
            std::process::exit(2);
        }
    };
    // The render time (plans are built before the clock starts) goes to stderr for run.sh.
    eprintln!("render_s={:.3}", started.elapsed().as_secs_f64());
    print!("{text}");
}
