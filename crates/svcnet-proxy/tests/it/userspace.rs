//! The userspace data plane against real loopback sockets.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use svcnet_proxy::dataplane::DataPlane;
use svcnet_proxy::dataplane::userspace::{UserspaceConfig, UserspaceDataPlane};
use svcnet_proxy::*;

use crate::*;

fn frontend(test: u8) -> SocketAddr {
    SocketAddr::from(([127, 53, test, 1], 7000))
}

async fn three_backends() -> Vec<Echo> {
    vec![Echo::start("a").await, Echo::start("b").await, Echo::start("c").await]
}

fn tcp_addresses(echos: &[Echo]) -> Vec<SocketAddr> {
    echos.iter().map(|e| e.tcp).collect()
}

async fn dataplane_with(plan: &ProxyPlan) -> UserspaceDataPlane {
    let mut dataplane =
        UserspaceDataPlane::new(UserspaceConfig::default(), CancellationToken::new());
    dataplane.apply(plan).await.expect("apply");
    dataplane
}

async fn count_names(frontend: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        *counts.entry(name_of_new_connection(frontend).await).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn round_robin_is_exact() {
    let echos = three_backends().await;
    let fe = frontend(1);
    let _dp = dataplane_with(&cluster_ip_plan(
        fe,
        Protocol::Tcp,
        &tcp_addresses(&echos),
        Scheduler::RoundRobin,
    ))
    .await;
    let counts = count_names(fe, 30).await;
    assert_eq!(counts, BTreeMap::from([("a".into(), 10), ("b".into(), 10), ("c".into(), 10)]));
}

#[tokio::test]
async fn random_and_maglev_spread_over_all_backends() {
    let echos = three_backends().await;
    for (test, scheduler) in [(2, Scheduler::Random), (3, Scheduler::Maglev)] {
        let fe = frontend(test);
        let _dp =
            dataplane_with(&cluster_ip_plan(fe, Protocol::Tcp, &tcp_addresses(&echos), scheduler))
                .await;
        let counts = count_names(fe, 60).await;
        // Each expects 20; fewer than 5 has probability below 1e-5 for a uniform choice.
        assert_eq!(counts.len(), 3, "{scheduler:?}: {counts:?}");
        assert!(counts.values().all(|c| *c >= 5), "{scheduler:?}: {counts:?}");
    }
}

#[tokio::test]
async fn least_connections_fills_the_least_busy() {
    let echos = three_backends().await;
    let fe = frontend(4);
    let _dp = dataplane_with(&cluster_ip_plan(
        fe,
        Protocol::Tcp,
        &tcp_addresses(&echos),
        Scheduler::LeastConnections,
    ))
    .await;
    let mut open = Vec::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..9 {
        let (name, stream) = connect_and_name(fe, None).await;
        *counts.entry(name).or_default() += 1;
        open.push(stream);
    }
    assert_eq!(counts, BTreeMap::from([("a".into(), 3), ("b".into(), 3), ("c".into(), 3)]));
}

#[tokio::test]
async fn source_hash_sticks_to_the_client_address() {
    let echos = three_backends().await;
    let fe = frontend(5);
    let _dp = dataplane_with(&cluster_ip_plan(
        fe,
        Protocol::Tcp,
        &tcp_addresses(&echos),
        Scheduler::SourceHash,
    ))
    .await;
    let mut seen_per_source: BTreeMap<IpAddr, std::collections::BTreeSet<String>> = BTreeMap::new();
    for host in 1..=24u8 {
        let source = IpAddr::from([127, 54, 5, host]);
        for _ in 0..3 {
            let (name, _) = connect_and_name(fe, Some(source)).await;
            seen_per_source.entry(source).or_default().insert(name);
        }
    }
    assert!(seen_per_source.values().all(|names| names.len() == 1), "{seen_per_source:?}");
    let distinct: std::collections::BTreeSet<_> = seen_per_source.values().flatten().collect();
    assert!(distinct.len() >= 2, "24 clients all hashed to one backend: {distinct:?}");
}

#[tokio::test]
async fn client_ip_affinity_holds() {
    let echos = three_backends().await;
    let fe = frontend(6);
    let mut plan =
        cluster_ip_plan(fe, Protocol::Tcp, &tcp_addresses(&echos), Scheduler::RoundRobin);
    for port in plan.service_ports.values_mut() {
        port.session_affinity_timeout = Some(60);
    }
    let _dp = dataplane_with(&plan).await;
    let counts = count_names(fe, 12).await;
    assert_eq!(counts.len(), 1, "affinity broken: {counts:?}");
}

#[tokio::test]
async fn no_endpoints_rejects_at_once() {
    let fe = frontend(7);
    let _dp = dataplane_with(&cluster_ip_plan(fe, Protocol::Tcp, &[], Scheduler::Random)).await;
    // The proxy resets at accept; on its own thread that may land before connect returns.
    let mut stream =
        match tokio::time::timeout(DEADLINE, tokio::net::TcpStream::connect(fe)).await.unwrap() {
            Ok(stream) => stream,
            Err(error) => return assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
        };
    let mut buf = [0u8; 16];
    let read =
        tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await.expect("closed promptly");
    match read {
        Ok(0) => {}
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
        Ok(n) => panic!("got {n} bytes from a Service without endpoints"),
    }
}

#[tokio::test]
async fn endpoint_change_drains_old_connections() {
    let echos = three_backends().await;
    let fe = frontend(8);
    let mut dp =
        dataplane_with(&cluster_ip_plan(fe, Protocol::Tcp, &[echos[0].tcp], Scheduler::Random))
            .await;
    let (name, mut old) = connect_and_name(fe, None).await;
    assert_eq!(name, "a");
    dp.apply(&cluster_ip_plan(fe, Protocol::Tcp, &[echos[1].tcp], Scheduler::Random))
        .await
        .unwrap();
    assert_eq!(dp.listening(), vec![(fe, Protocol::Tcp)], "the listener was kept, not rebound");
    assert_eq!(count_names(fe, 5).await, BTreeMap::from([("b".into(), 5)]));
    // The old connection still reaches its backend.
    old.get_mut().write_all(b"still here\n").await.unwrap();
    let mut line = String::new();
    tokio::time::timeout(DEADLINE, old.read_line(&mut line)).await.unwrap().unwrap();
    assert_eq!(line, "still here\n");
    // Removing the Service closes the listener; the old connection keeps working.
    dp.apply(&ProxyPlan::default()).await.unwrap();
    assert!(dp.listening().is_empty());
    old.get_mut().write_all(b"and now\n").await.unwrap();
    line.clear();
    tokio::time::timeout(DEADLINE, old.read_line(&mut line)).await.unwrap().unwrap();
    assert_eq!(line, "and now\n");
}

#[tokio::test]
async fn refused_connect_is_retried_on_the_next_backend_which_is_then_preferred() {
    let live = Echo::start("live").await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let fe = frontend(9);
    let dp = dataplane_with(&cluster_ip_plan(
        fe,
        Protocol::Tcp,
        &[dead, live.tcp],
        Scheduler::RoundRobin,
    ))
    .await;
    assert_eq!(count_names(fe, 6).await, BTreeMap::from([("live".into(), 6)]));
    let stats = dp.stats().snapshot();
    let dead_row = stats.iter().find(|row| row.backend == dead).unwrap();
    // Tried once; then avoided (ejected) instead of costing every third connection a retry.
    assert_eq!((dead_row.failed, dead_row.total), (1, 0), "{stats:?}");
    let live_row = stats.iter().find(|row| row.backend == live.tcp).unwrap();
    assert_eq!(live_row.total, 6);
}

#[tokio::test]
async fn udp_is_carried_per_flow() {
    let echos = three_backends().await;
    let fe = frontend(10);
    let udp_backends: Vec<SocketAddr> = echos.iter().map(|e| e.udp).collect();
    let _dp =
        dataplane_with(&cluster_ip_plan(fe, Protocol::Udp, &udp_backends, Scheduler::RoundRobin))
            .await;
    let mut names = BTreeMap::new();
    for client in 0..6 {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut first = None;
        for packet in 0..3 {
            socket.send_to(format!("hello {client}/{packet}").as_bytes(), fe).await.unwrap();
            let mut buf = [0u8; 256];
            let (n, from) =
                tokio::time::timeout(DEADLINE, socket.recv_from(&mut buf)).await.unwrap().unwrap();
            assert_eq!(from, fe, "replies come from the frontend address");
            let reply = String::from_utf8_lossy(&buf[..n]).to_string();
            let (name, echoed) = reply.split_once(' ').unwrap();
            assert_eq!(echoed, format!("hello {client}/{packet}"));
            // One flow stays on one backend.
            assert_eq!(*first.get_or_insert(name.to_string()), name);
        }
        *names.entry(first.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(names, BTreeMap::from([("a".into(), 2), ("b".into(), 2), ("c".into(), 2)]));
}

#[tokio::test]
async fn source_ranges_apply_to_load_balancer_frontends() {
    let echo = Echo::start("lb").await;
    let lb = frontend(11);
    let mut plan = ProxyPlan::default();
    let mut port = service_port(
        vec![Frontend {
            kind: FrontendKind::LoadBalancer,
            address: Some(lb.ip()),
            port: lb.port(),
            protocol: Protocol::Tcp,
        }],
        vec![backend(echo.tcp)],
        Scheduler::Random,
    );
    port.load_balancer_source_ranges = vec!["127.54.11.0/24".parse().unwrap()];
    plan.service_ports.insert(service_key("lb", Protocol::Tcp), port);
    let _dp = dataplane_with(&plan).await;
    let (name, _) = connect_and_name(lb, Some(IpAddr::from([127, 54, 11, 7]))).await;
    assert_eq!(name, "lb");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 54, 12, 7], 0))).unwrap();
    // The proxy resets at accept; on its own thread that may land before connect returns.
    if let Ok(mut stream) = tokio::time::timeout(DEADLINE, socket.connect(lb)).await.unwrap() {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await.unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "a source outside the ranges was served: {read:?}");
    }
}

#[tokio::test]
async fn unbindable_frontend_is_reported_and_the_rest_served() {
    let echo = Echo::start("ok").await;
    let fe = frontend(12);
    let mut plan = cluster_ip_plan(fe, Protocol::Tcp, &[echo.tcp], Scheduler::Random);
    // 192.0.2.1 (TEST-NET-1) is not an address of this host, so binding it fails.
    plan.service_ports.values_mut().for_each(|port| {
        port.frontends.push(Frontend {
            kind: FrontendKind::ExternalIp,
            address: Some(IpAddr::from([192, 0, 2, 1])),
            port: 7000,
            protocol: Protocol::Tcp,
        })
    });
    let mut dp = UserspaceDataPlane::new(UserspaceConfig::default(), CancellationToken::new());
    let error = dp.apply(&plan).await.unwrap_err();
    assert!(matches!(error, Error::Listen { .. }), "{error}");
    assert_eq!(name_of_new_connection(fe).await, "ok");
}

/// Several data-path threads share a frontend with SO_REUSEPORT; that must not let a second
/// proxy join the group and silently take half of the connections.
#[tokio::test]
async fn threads_share_a_port_but_a_second_proxy_cannot() {
    let (a, b) = (Echo::start("first").await, Echo::start("second").await);
    let fe = frontend(20);
    let config = UserspaceConfig { workers: 2, ..UserspaceConfig::default() };
    let mut first = UserspaceDataPlane::new(config.clone(), CancellationToken::new());
    first.apply(&cluster_ip_plan(fe, Protocol::Tcp, &[a.tcp], Scheduler::Random)).await.unwrap();
    let mut second = UserspaceDataPlane::new(config, CancellationToken::new());
    let error = second
        .apply(&cluster_ip_plan(fe, Protocol::Tcp, &[b.tcp], Scheduler::Random))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Listen { .. }), "{error}");
    assert_eq!(count_names(fe, 8).await, BTreeMap::from([("first".into(), 8)]));
}

#[tokio::test]
async fn node_ports_listen_on_node_port_addresses() {
    let echo = Echo::start("np").await;
    let mut plan = ProxyPlan::default();
    plan.node.node_port_addresses =
        vec![IpAddr::from([127, 53, 13, 1]), IpAddr::from([127, 53, 13, 2])];
    plan.service_ports.insert(
        service_key("np", Protocol::Tcp),
        service_port(
            vec![Frontend {
                kind: FrontendKind::NodePort,
                address: None,
                port: 30_013,
                protocol: Protocol::Tcp,
            }],
            vec![backend(echo.tcp)],
            Scheduler::Random,
        ),
    );
    let dp = dataplane_with(&plan).await;
    assert_eq!(dp.listening().len(), 2);
    for host in [1, 2] {
        assert_eq!(
            name_of_new_connection(SocketAddr::from(([127, 53, 13, host], 30_013))).await,
            "np"
        );
    }
}

#[tokio::test]
async fn bulk_data_is_forwarded_intact_with_half_close() {
    let echo = Echo::start("bulk").await;
    let fe = frontend(14);
    let _dp =
        dataplane_with(&cluster_ip_plan(fe, Protocol::Tcp, &[echo.tcp], Scheduler::Random)).await;
    let (name, reader) = connect_and_name(fe, None).await;
    assert_eq!(name, "bulk");
    let data: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (mut read, mut write) = reader.into_inner().into_split();
    let to_send = data.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&to_send).await.unwrap();
        // Half-close: the echo server sees EOF, finishes echoing and closes.
        write.shutdown().await.unwrap();
    });
    let mut echoed = Vec::new();
    tokio::time::timeout(DEADLINE, read.read_to_end(&mut echoed))
        .await
        .expect("echo in time")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "bulk data was corrupted");
}
