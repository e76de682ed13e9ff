//! Hand-built plans shared by the renderers' unit tests.

use std::net::IpAddr;

use crate::{
    Backend, Frontend, FrontendKind, IpFamily, NodePlan, Protocol, ProxyPlan, Scheduler,
    ServicePortKey, ServicePortPlan, TrafficPolicy,
};

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

pub fn backend(addr: &str, port: u16, local: bool) -> Backend {
    Backend {
        ip: ip(addr),
        port,
        weight: 1,
        node_name: Some(if local { "node-a" } else { "node-b" }.to_string()),
        zone: None,
        is_local: local,
        ready: true,
        target: None,
    }
}

pub fn key(name: &str, protocol: Protocol, family: IpFamily) -> ServicePortKey {
    ServicePortKey {
        namespace: "default".to_string(),
        name: name.to_string(),
        port_name: String::new(),
        protocol,
        family,
    }
}

pub fn frontend(
    kind: FrontendKind,
    address: Option<&str>,
    port: u16,
    protocol: Protocol,
) -> Frontend {
    Frontend { kind, address: address.map(ip), port, protocol }
}

pub fn service(frontends: Vec<Frontend>, backends: Vec<Backend>) -> ServicePortPlan {
    let local_backends = backends.iter().filter(|b| b.is_local).cloned().collect();
    ServicePortPlan {
        frontends,
        has_endpoints_anywhere: !backends.is_empty(),
        cluster_backends: backends,
        local_backends,
        internal_traffic_policy: TrafficPolicy::Cluster,
        external_traffic_policy: TrafficPolicy::Cluster,
        session_affinity_timeout: None,
        scheduler: Scheduler::Random,
        load_balancer_source_ranges: Vec::new(),
        health_check_node_port: None,
    }
}

/// A plan exercising every feature the renderers handle.
pub fn everything() -> ProxyPlan {
    let mut plan = ProxyPlan {
        node: NodePlan {
            node_name: "node-a".to_string(),
            zone: None,
            node_port_addresses: vec![ip("192.168.50.1"), ip("fd00:50::1")],
            cluster_cidrs: vec![
                "10.244.0.0/16".parse().expect("cidr"),
                "fd00:244::/64".parse().expect("cidr"),
            ],
            masquerade_all: false,
            service_cidrs: vec![
                "10.96.0.0/16".parse().expect("cidr"),
                "fd00:96::/112".parse().expect("cidr"),
            ],
        },
        ..Default::default()
    };
    let tcp = Protocol::Tcp;
    let v4 = IpFamily::V4;
    // ClusterIP + NodePort + LoadBalancer with source ranges, 3 backends, random.
    let mut web = service(
        vec![
            frontend(FrontendKind::ClusterIp, Some("10.96.0.10"), 80, tcp),
            frontend(FrontendKind::NodePort, None, 30080, tcp),
            frontend(FrontendKind::LoadBalancer, Some("203.0.113.10"), 80, tcp),
        ],
        vec![
            backend("10.244.1.2", 8080, true),
            backend("10.244.1.3", 8080, false),
            backend("10.244.2.4", 8080, false),
        ],
    );
    web.load_balancer_source_ranges = vec!["198.51.100.0/24".parse().expect("cidr")];
    plan.service_ports.insert(key("web", tcp, v4), web);
    // externalTrafficPolicy Local with affinity.
    let mut local = service(
        vec![
            frontend(FrontendKind::ClusterIp, Some("10.96.0.11"), 443, tcp),
            frontend(FrontendKind::ExternalIp, Some("203.0.113.11"), 443, tcp),
        ],
        vec![backend("10.244.1.5", 8443, true), backend("10.244.2.6", 8443, false)],
    );
    local.external_traffic_policy = TrafficPolicy::Local;
    local.session_affinity_timeout = Some(10800);
    plan.service_ports.insert(key("local", tcp, v4), local);
    // UDP, round robin, weighted.
    let mut dns = service(
        vec![frontend(FrontendKind::ClusterIp, Some("10.96.0.53"), 53, Protocol::Udp)],
        vec![backend("10.244.1.7", 53, true), backend("10.244.2.8", 53, false)],
    );
    dns.scheduler = Scheduler::RoundRobin;
    dns.cluster_backends[1].weight = 2;
    plan.service_ports.insert(key("dns", Protocol::Udp, v4), dns);
    // Maglev.
    let mut mag = service(
        vec![frontend(FrontendKind::ClusterIp, Some("10.96.0.12"), 80, tcp)],
        vec![backend("10.244.1.9", 80, true), backend("10.244.2.9", 80, false)],
    );
    mag.scheduler = Scheduler::Maglev;
    plan.service_ports.insert(key("maglev", tcp, v4), mag);
    // Source hash.
    let mut sh = service(
        vec![frontend(FrontendKind::ClusterIp, Some("10.96.0.13"), 80, tcp)],
        vec![backend("10.244.1.10", 80, true), backend("10.244.2.10", 80, false)],
    );
    sh.scheduler = Scheduler::SourceHash;
    plan.service_ports.insert(key("hash", tcp, v4), sh);
    // No endpoints at all: reject.
    plan.service_ports.insert(
        key("empty", tcp, v4),
        service(vec![frontend(FrontendKind::ClusterIp, Some("10.96.0.14"), 80, tcp)], vec![]),
    );
    // Local policy with no local endpoint: drop for outside traffic.
    let mut remote = service(
        vec![
            frontend(FrontendKind::ClusterIp, Some("10.96.0.15"), 80, tcp),
            frontend(FrontendKind::NodePort, None, 30015, tcp),
        ],
        vec![backend("10.244.2.11", 80, false)],
    );
    remote.external_traffic_policy = TrafficPolicy::Local;
    plan.service_ports.insert(key("remote", tcp, v4), remote);
    // IPv6.
    plan.service_ports.insert(
        key("web", tcp, IpFamily::V6),
        service(
            vec![frontend(FrontendKind::ClusterIp, Some("fd00:96::10"), 80, tcp)],
            vec![backend("fd00:244::2", 8080, true)],
        ),
    );
    plan
}
