//! Names outside the cluster zone: forwarding for allowed clients, refusal for others, the
//! cache, and autopath. The "upstream" is a second svcnet-dns on loopback serving a zone
//! named `example.com`, so nothing leaves the host.

use svcnet_dns::Config;

use crate::harness::{TestServer, fixture, start, test_config};

async fn upstream() -> TestServer {
    start(
        Config { cluster_domain: "example.com".to_string(), ttl: 60, ..test_config() },
        &fixture(),
    )
    .await
}

pub async fn metrics_text(server: &TestServer) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.handle.metrics_addr.expect("metrics address");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await.expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_for_allowed_clients_only() {
    let upstream = upstream().await;
    let server = start(
        Config {
            upstreams: vec![upstream.handle.addr],
            metrics_address: Some("127.0.0.1:0".parse().expect("addr")),
            ..test_config()
        },
        &fixture(),
    )
    .await;

    let dig = server.dig(&["web.demo.svc.example.com", "A"]).await;
    assert_eq!(dig.status, "NOERROR", "{}", dig.raw);
    assert_eq!(dig.answers(), ["web.demo.svc.example.com. A 10.96.0.20"]);
    assert!(dig.has_flag("ra") && !dig.has_flag("aa"), "{}", dig.raw);
    // Negative answers come through with the upstream's SOA.
    let dig = server.dig(&["nope.demo.svc.example.com", "A"]).await;
    assert_eq!(dig.status, "NXDOMAIN", "{}", dig.raw);
    assert!(dig.authority[0].contains("SOA"), "{}", dig.raw);
    // Again: from the cache, with a TTL that has not grown.
    let dig = server.dig(&["web.demo.svc.example.com", "A"]).await;
    assert_eq!(dig.answers(), ["web.demo.svc.example.com. A 10.96.0.20"]);
    let ttl: u32 =
        dig.answer[0].split_whitespace().nth(1).and_then(|t| t.parse().ok()).expect("ttl");
    assert!(ttl <= 60, "{}", dig.raw);
    let metrics = metrics_text(&server).await;
    assert!(metrics.contains("svcnet_dns_cache_hits_total 1"), "{metrics}");
    assert!(metrics.contains("svcnet_dns_cache_misses_total 2"), "{metrics}");
    assert!(metrics.contains("rcode=\"NXDOMAIN\""), "{metrics}");

    // A client outside the allowed ranges: REFUSED for other names, answers for the cluster.
    let dig = server.dig(&["-b", "127.0.0.2", "web.demo.svc.example.com", "A"]).await;
    assert_eq!(dig.status, "REFUSED", "{}", dig.raw);
    assert!(dig.answer.is_empty());
    let dig = server.dig(&["-b", "127.0.0.2", "-x", "192.0.2.1"]).await;
    assert_eq!(dig.status, "REFUSED", "{}", dig.raw);
    let dig = server.dig(&["-b", "127.0.0.2", "web.demo.svc.cluster.local", "A"]).await;
    assert_eq!(dig.answers(), ["web.demo.svc.cluster.local. A 10.96.0.20"]);
    assert!(!dig.has_flag("ra"), "{}", dig.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_upstream_is_servfail() {
    let server = start(test_config(), &fixture()).await;
    let dig = server.dig(&["www.example.org", "A"]).await;
    assert_eq!(dig.status, "SERVFAIL", "{}", dig.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autopath_answers_in_one_round_trip() {
    let upstream = upstream().await;
    let server = start(
        Config {
            upstreams: vec![upstream.handle.addr],
            autopath: true,
            // The pod 127.0.0.4 (namespace demo) may recurse.
            allow_recursion: vec!["127.0.0.0/8".parse().expect("cidr")],
            ..test_config()
        },
        &fixture(),
    )
    .await;
    // A pod in `demo` asks its first search domain for an outside name.
    let dig = server
        .dig(&["-b", "127.0.0.4", "web.demo.svc.example.com.demo.svc.cluster.local", "A"])
        .await;
    assert_eq!(dig.status, "NOERROR", "{}", dig.raw);
    assert_eq!(
        dig.answers(),
        [
            "web.demo.svc.example.com. A 10.96.0.20",
            "web.demo.svc.example.com.demo.svc.cluster.local. CNAME web.demo.svc.example.com."
        ]
    );
    // A cluster name found further down the search path.
    let dig = server.dig(&["-b", "127.0.0.4", "web.demo.demo.svc.cluster.local", "A"]).await;
    assert_eq!(
        dig.answers(),
        [
            "web.demo.demo.svc.cluster.local. CNAME web.demo.svc.cluster.local.",
            "web.demo.svc.cluster.local. A 10.96.0.20"
        ]
    );
    // Not a known pod: the plain NXDOMAIN the client's search path expects.
    let dig = server
        .dig(&["-b", "127.0.0.1", "web.demo.svc.example.com.demo.svc.cluster.local", "A"])
        .await;
    assert_eq!(dig.status, "NXDOMAIN", "{}", dig.raw);
}
