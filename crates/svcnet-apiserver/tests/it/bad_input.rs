//! Hostile input: thousands of malformed, oversized, wrong-kind and garbage requests. Every one
//! is answered with a `Status` whose code is the HTTP status, no handler panics, and the server
//! keeps serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{Method, Request};
use serde_json::Value;

use crate::common::TestServer;

fn bodies() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"42".to_vec(),
        b"\"str\"".to_vec(),
        b"{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"x\"}}".to_vec(),
        b"{\"kind\":\"Service\",\"apiVersion\":\"apps/v1\",\"metadata\":{\"name\":\"x\"}}".to_vec(),
        b"{\"kind\":\"Service\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"Bad_Name\"}}".to_vec(),
        b"{\"kind\":\"Service\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":5}}".to_vec(),
        b"{\"metadata\":{\"name\":\"x\"},\"spec\":{\"ports\":\"nope\"}}".to_vec(),
        b"{\"metadata\":{\"name\":\"x\"},\"spec\":{\"ports\":[{\"port\":99999999999}]}}".to_vec(),
        b"{\"metadata\":{\"name\":\"x\"},\"spec\":{\"type\":\"Bogus\",\"ports\":[{\"port\":-1}]}}".to_vec(),
        b"{\"metadata\":{\"name\":\"x\"},\"spec\":{\"clusterIP\":\"1.2.3.4.5\",\"ports\":[{\"port\":1}]}}".to_vec(),
        b"k8s\x00\xff\xff\xff\xff".to_vec(),
        b"- a\n- : b\n  ::".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x01],
        "{\"metadata\":{\"name\":\"x\",\"labels\":{\"a\":\"\u{1F600}\"}}}".as_bytes().to_vec(),
    ];
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    out.push(deep.into_bytes());
    out.push("- ".repeat(20000).into_bytes());
    out.push("a: ".repeat(20000).into_bytes());
    out.push(format!("{}1{}", "{\"a\":".repeat(3000), "}".repeat(3000)).into_bytes());
    out
}

fn paths() -> Vec<&'static str> {
    vec![
        "/api/v1/namespaces/default/services",
        "/api/v1/namespaces/default/services/x",
        "/api/v1/namespaces/default/services/x/status",
        "/api/v1/namespaces/nope/services",
        "/api/v1/namespaces/default/pods/x/binding",
        "/api/v1/namespaces",
        "/api/v1/nodes/x",
        "/apis/apps/v1/namespaces/default/deployments/x/scale",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        "/api/v1/namespaces/default/bogus",
        "/apis/nope/v1/things",
        "/api/v1/namespaces/default/services/x/y/z",
        "/api/v1/namespaces/default/services?labelSelector=a%20in%20(",
        "/api/v1/namespaces/default/services?fieldSelector=spec.bogus%3D1",
        "/api/v1/namespaces/default/services?watch=true&resourceVersion=abc",
        "/api/v1/namespaces/default/services?continue=%%%%",
        "/api/v1/namespaces/default/services?watch=true&sendInitialEvents=true",
        "/api/v1/namespaces/default/services/x?dryRun=Maybe",
        "/api/v1/namespaces/default/services/x?fieldValidation=Loud",
    ]
}

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
    "text/plain",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_a_status() {
    let panics = Arc::new(AtomicUsize::new(0));
    let counter = panics.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counter.fetch_add(1, Ordering::SeqCst);
        eprintln!("PANIC: {info}");
    }));
    let server = TestServer::start_with(|c| c.max_body_bytes = 64 * 1024).await;
    let client = server.client().await;
    let methods = [Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::GET];
    let mut n = 0usize;
    for path in paths() {
        for body in bodies() {
            for ct in CONTENT_TYPES {
                for method in &methods {
                    if *method == Method::GET && (!body.is_empty() || *ct != "application/json") {
                        continue;
                    }
                    let req = Request::builder()
                        .method(method.clone())
                        .uri(path)
                        .header("content-type", *ct)
                        .body(body.clone())
                        .expect("request");
                    let resp = client
                        .send(req.map(kube::client::Body::from))
                        .await
                        .expect("an HTTP answer");
                    let status = resp.status().as_u16();
                    let bytes = http_body_util::BodyExt::collect(resp.into_body())
                        .await
                        .expect("body")
                        .to_bytes();
                    if status >= 400 {
                        let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                            panic!(
                                "{method} {path} ({ct}) → {status} without a Status: {}",
                                String::from_utf8_lossy(&bytes)
                            )
                        });
                        assert_eq!(v["kind"], "Status", "{method} {path}: {v}");
                        assert_eq!(
                            v["code"].as_u64(),
                            Some(u64::from(status)),
                            "{method} {path}: {v}"
                        );
                        assert!(status < 500, "{method} {path} ({ct}) → {status}: {v}");
                    }
                    n += 1;
                }
            }
        }
    }
    // Oversized bodies: 413.
    for _ in 0..5 {
        let big = vec![b' '; 200 * 1024];
        let req = Request::post("/api/v1/namespaces/default/services")
            .header("content-type", "application/json")
            .body(big)
            .expect("request");
        let resp = client.send(req.map(kube::client::Body::from)).await.expect("answer");
        assert_eq!(resp.status().as_u16(), 413);
        n += 1;
    }
    assert!(n > 2000, "only {n} requests");
    // Still serving, and nothing half-written: every stored Service decodes.
    let api: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::all(client);
    let list = api.list(&Default::default()).await.expect("list after the storm");
    for svc in &list.items {
        assert!(svc.spec.is_some(), "half-written Service: {svc:?}");
    }
    std::panic::set_hook(previous);
    assert_eq!(panics.load(Ordering::SeqCst), 0, "handlers panicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_or_wrong_token_is_401_but_health_is_open() {
    let server = TestServer::start().await;
    let kc = kube::config::Kubeconfig::read_from(&server.handle.kubeconfig).expect("kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config");
    config.auth_info = Default::default();
    let anonymous = kube::Client::try_from(config.clone()).expect("client");
    config.auth_info.token = Some("wrong".to_string().into());
    let wrong = kube::Client::try_from(config).expect("client");
    for client in [anonymous, wrong] {
        let req = Request::get("/api/v1/namespaces").body(Vec::new()).expect("request");
        let resp = client.send(req.map(kube::client::Body::from)).await.expect("answer");
        assert_eq!(resp.status().as_u16(), 401);
        let bytes =
            http_body_util::BodyExt::collect(resp.into_body()).await.expect("body").to_bytes();
        let v: Value = serde_json::from_slice(&bytes).expect("status");
        assert_eq!(v["reason"], "Unauthorized");
        for path in ["/readyz", "/livez", "/healthz"] {
            let req = Request::get(path).body(Vec::new()).expect("request");
            let resp = client.send(req.map(kube::client::Body::from)).await.expect("answer");
            assert_eq!(resp.status().as_u16(), 200, "{path}");
        }
    }
    // The kubeconfig and token are private.
    use std::os::unix::fs::PermissionsExt;
    let mode =
        std::fs::metadata(&server.handle.kubeconfig).expect("kubeconfig").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// A full Service range is the server's problem, not the request's: 500 InternalError with
/// kube-apiserver's message, and the Service is not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_service_range_is_500() {
    use k8s_openapi::api::core::v1::Service;
    use kube::Api;
    use kube::api::PostParams;
    let server = TestServer::start_with(|c| {
        c.service_cluster_ip_ranges = vec!["10.97.0.0/29".parse().expect("cidr")];
    })
    .await;
    let api: Api<Service> = Api::namespaced(server.client().await, "default");
    let service = |name: &str| -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"ports": [{"port": 80}]}
        }))
        .expect("service")
    };
    for i in 0..16 {
        let name = format!("s{i}");
        match api.create(&PostParams::default(), &service(&name)).await {
            Ok(_) => continue,
            Err(kube::Error::Api(status)) => {
                assert_eq!((status.code, status.reason.as_str()), (500, "InternalError"));
                assert!(status.message.contains("range is full"), "{}", status.message);
                assert!(i > 0, "the range held no Service at all");
                assert!(api.get_opt(&name).await.expect("get").is_none(), "nothing stored");
                return;
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    panic!("a /29 held 16 Services");
}
