//! healthCheckNodePort servers answer like kube-proxy's.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use svcnet_proxy::healthz::{HealthCheckServers, ProxyHealth};
use svcnet_proxy::*;

use crate::*;

async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::time::timeout(DEADLINE, tokio::net::TcpStream::connect(address))
        .await
        .unwrap()
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(DEADLINE, stream.read_to_string(&mut response)).await.unwrap().unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

#[tokio::test]
async fn health_check_node_port_reports_local_endpoints() {
    let health = Arc::new(ProxyHealth::new(Duration::from_secs(60)));
    health.updated();
    let bind = IpAddr::from([127, 53, 40, 1]);
    let mut servers = HealthCheckServers::new(health.clone(), vec![bind], CancellationToken::new());
    let mut plan = ProxyPlan::default();
    let mut port = service_port(Vec::new(), Vec::new(), Scheduler::Random);
    port.external_traffic_policy = TrafficPolicy::Local;
    port.health_check_node_port = Some(32_140);
    plan.service_ports.insert(service_key("lb", Protocol::Tcp), port.clone());
    servers.sync(&plan).await;
    let address = SocketAddr::new(bind, 32_140);
    let (status, body) = get(address, "/").await;
    assert_eq!(status, 503);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"service": {"namespace": "default", "name": "lb"}, "localEndpoints": 0, "serviceProxyHealthy": true})
    );
    port.local_backends = vec![
        backend(SocketAddr::from(([10, 0, 0, 1], 80))),
        backend(SocketAddr::from(([10, 0, 0, 2], 80))),
    ];
    plan.service_ports.insert(service_key("lb", Protocol::Tcp), port);
    servers.sync(&plan).await;
    let (status, body) = get(address, "/healthz").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"localEndpoints\":2"), "{body}");
    servers.sync(&ProxyPlan::default()).await;
    let closed = async {
        loop {
            if tokio::net::TcpStream::connect(address).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(DEADLINE, closed).await.expect("server stopped");
}
