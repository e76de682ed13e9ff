#![allow(clippy::unwrap_used)]

//! Integration tests of svcnet-proxy with real sockets on loopback.
//!
//! Backends are small tokio echo servers that first send their name; the userspace data plane
//! listens on 127.x addresses, one per test, so tests run in parallel without port clashes.

mod health;
mod userspace;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use svcnet_proxy::*;

/// Every wait in these tests is bounded by this.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A TCP and UDP echo backend on 127.0.0.1 that answers with its name.
pub struct Echo {
    pub name: String,
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
    cancel: CancellationToken,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Echo {
    pub async fn start(name: &str) -> Echo {
        let cancel = CancellationToken::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = listener.local_addr().unwrap();
        let udp_socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let udp = udp_socket.local_addr().unwrap();
        let tcp_name = name.to_string();
        let tcp_cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = tokio::select! {
                    _ = tcp_cancel.cancelled() => return,
                    accepted = listener.accept() => accepted.unwrap(),
                };
                let name = tcp_name.clone();
                tokio::spawn(async move {
                    if stream.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                        return;
                    }
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        let udp_name = name.to_string();
        let udp_cancel = cancel.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                let (n, from) = tokio::select! {
                    _ = udp_cancel.cancelled() => return,
                    received = udp_socket.recv_from(&mut buf) => received.unwrap(),
                };
                let reply = format!("{udp_name} {}", String::from_utf8_lossy(&buf[..n]));
                let _ = udp_socket.send_to(reply.as_bytes(), from).await;
            }
        });
        Echo { name: name.to_string(), tcp, udp, cancel }
    }
}

pub fn backend(address: SocketAddr) -> Backend {
    Backend {
        ip: address.ip(),
        port: address.port(),
        weight: 1,
        node_name: Some("node-1".to_string()),
        zone: None,
        is_local: true,
        ready: true,
        target: None,
    }
}

pub fn service_key(name: &str, protocol: Protocol) -> ServicePortKey {
    ServicePortKey {
        namespace: "default".to_string(),
        name: name.to_string(),
        port_name: String::new(),
        protocol,
        family: IpFamily::V4,
    }
}

pub fn service_port(
    frontends: Vec<Frontend>,
    backends: Vec<Backend>,
    scheduler: Scheduler,
) -> ServicePortPlan {
    ServicePortPlan {
        frontends,
        has_endpoints_anywhere: !backends.is_empty(),
        local_backends: backends.clone(),
        cluster_backends: backends,
        internal_traffic_policy: TrafficPolicy::Cluster,
        external_traffic_policy: TrafficPolicy::Cluster,
        session_affinity_timeout: None,
        scheduler,
        load_balancer_source_ranges: Vec::new(),
        health_check_node_port: None,
    }
}

/// A plan with one ClusterIP Service port on `frontend` over `backends`.
pub fn cluster_ip_plan(
    frontend: SocketAddr,
    protocol: Protocol,
    backends: &[SocketAddr],
    scheduler: Scheduler,
) -> ProxyPlan {
    let mut plan = ProxyPlan::default();
    plan.service_ports.insert(
        service_key("svc", protocol),
        service_port(
            vec![Frontend {
                kind: FrontendKind::ClusterIp,
                address: Some(frontend.ip()),
                port: frontend.port(),
                protocol,
            }],
            backends.iter().copied().map(backend).collect(),
            scheduler,
        ),
    );
    plan
}

/// Connects (from `source` when given) and reads the backend's name line.
pub async fn connect_and_name(
    frontend: SocketAddr,
    source: Option<IpAddr>,
) -> (String, BufReader<TcpStream>) {
    let stream = tokio::time::timeout(DEADLINE, async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(source) = source {
            socket.bind(SocketAddr::new(source, 0)).unwrap();
        }
        socket.connect(frontend).await.unwrap()
    })
    .await
    .expect("connect in time");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(DEADLINE, reader.read_line(&mut line))
        .await
        .expect("name in time")
        .unwrap();
    (line.trim().to_string(), reader)
}

/// Connects, reads the name and closes.
pub async fn name_of_new_connection(frontend: SocketAddr) -> String {
    connect_and_name(frontend, None).await.0
}
