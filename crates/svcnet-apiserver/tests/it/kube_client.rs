//! kube-rs against the server: typed CRUD, a watcher that sees every change in order, and
//! recovery from 410 Expired by re-listing.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::common::TestServer;

fn service(name: &str, port: i32) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": [{"port": port}], "selector": {"app": name}},
    }))
    .expect("service")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_crud() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let api: Api<Service> = Api::namespaced(client, "default");
    let created = api.create(&PostParams::default(), &service("a", 80)).await.expect("create");
    let ip =
        created.spec.as_ref().and_then(|s| s.cluster_ip.clone()).expect("cluster IP allocated");
    assert!(ip.starts_with("10."), "{ip}");
    let err = api.create(&PostParams::default(), &service("a", 80)).await.expect_err("duplicate");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err:?}"
    );

    let mut got = api.get("a").await.expect("get");
    got.spec.as_mut().expect("spec").ports.as_mut().expect("ports")[0].port = 81;
    let replaced = api.replace("a", &PostParams::default(), &got).await.expect("replace");
    assert_eq!(replaced.spec.as_ref().and_then(|s| s.ports.as_ref()).map(|p| p[0].port), Some(81));
    assert_eq!(replaced.metadata.generation, Some(2));
    // A stale resourceVersion is a 409 Conflict.
    let err = api.replace("a", &PostParams::default(), &got).await.expect_err("stale");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );

    let patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(
        patched.metadata.labels.as_ref().and_then(|l| l.get("x")).map(String::as_str),
        Some("y")
    );
    // A no-op patch does not bump the resourceVersion.
    let again = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .expect("no-op");
    assert_eq!(again.metadata.resource_version, patched.metadata.resource_version);
    let applied = api
        .patch("b", &PatchParams::apply("test").force(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b"}, "spec": {"ports": [{"port": 90}]}})))
        .await
        .expect("apply creates");
    assert!(applied.metadata.managed_fields.is_some());
    let list = api.list(&Default::default()).await.expect("list");
    assert_eq!(list.items.len(), 3);
    api.delete("a", &DeleteParams::default()).await.expect("delete");
    let err = api.get("a").await.expect_err("gone");
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 404), "{err:?}");
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("event in time")
        .expect("stream open")
}

async fn wait_for(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    want: &str,
) -> Vec<String> {
    let mut log = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) if s.starts_with(want) => return log,
            Ok(Some(s)) => log.push(s),
            Ok(None) => panic!("watcher ended; saw {log:?}"),
            Err(_) => panic!("no {want:?} in time; saw {log:?}"),
        }
    }
}

/// (type, name, port) of a watcher event, for the order check.
fn summarize(ev: &watcher::Event<Service>) -> Option<String> {
    let port = |s: &Service| {
        s.spec.as_ref().and_then(|s| s.ports.as_ref()).map(|p| p[0].port).unwrap_or(0)
    };
    match ev {
        watcher::Event::Apply(s) => {
            Some(format!("apply {} {}", s.metadata.name.as_deref().unwrap_or(""), port(s)))
        }
        watcher::Event::Delete(s) => {
            Some(format!("delete {}", s.metadata.name.as_deref().unwrap_or("")))
        }
        watcher::Event::Init => Some("init".into()),
        watcher::Event::InitApply(s) => {
            Some(format!("initapply {}", s.metadata.name.as_deref().unwrap_or("")))
        }
        watcher::Event::InitDone => Some("initdone".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_every_change_in_order() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &service("pre", 1)).await.expect("create");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = tokio::spawn(watcher(api.clone(), watcher::Config::default()).for_each(move |ev| {
        if let Ok(ev) = ev
            && let Some(s) = summarize(&ev)
        {
            let _ = tx.send(s);
        }
        futures::future::ready(())
    }));
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next(&mut rx).await);
    }
    let kubernetes_svc = seen.iter().any(|s| s == "initapply kubernetes");
    let expected_init = if kubernetes_svc { 4 } else { 3 };
    while seen.len() < expected_init {
        seen.push(next(&mut rx).await);
    }
    assert_eq!(seen.first().map(String::as_str), Some("init"));
    assert_eq!(seen.last().map(String::as_str), Some("initdone"));
    let mut expected = Vec::new();
    for i in 0..20 {
        let name = format!("s{}", i % 4);
        if i < 4 {
            api.create(&PostParams::default(), &service(&name, 100 + i)).await.expect("create");
        } else {
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"ports": [{"port": 100 + i}]}})),
            )
            .await
            .expect("patch");
        }
        expected.push(format!("apply {name} {}", 100 + i));
    }
    api.delete("s0", &DeleteParams::default()).await.expect("delete");
    expected.push("delete s0".into());
    let mut got = Vec::new();
    while got.len() < expected.len() {
        got.push(next(&mut rx).await);
    }
    assert_eq!(got, expected);
    w.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_relists_after_410() {
    // A small event history, so a watcher idle in one namespace falls behind it.
    let server = TestServer::start_with(|c| {
        c.watch_cache_events = 20;
        c.bookmark_interval = Duration::from_secs(3600);
    })
    .await;
    let client = server.client().await;
    let quiet: Api<Service> = Api::namespaced(client.clone(), "default");
    let busy: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "kube-system");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // timeoutSeconds=1: the watcher re-watches every second from its last resourceVersion.
    let w = tokio::spawn(watcher(quiet.clone(), watcher::Config::default().timeout(1)).for_each(
        move |ev| {
            let s = match ev {
                Ok(ev) => summarize(&ev),
                Err(e) => Some(format!("error {e}")),
            };
            if let Some(s) = s {
                let _ = tx.send(s);
            }
            futures::future::ready(())
        },
    ));
    wait_for(&mut rx, "initdone").await;
    // Push the history window past the watcher's resourceVersion.
    for i in 0..60 {
        let cm: k8s_openapi::api::core::v1::ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("cm{i}")}})).expect("cm");
        busy.create(&PostParams::default(), &cm).await.expect("create cm");
    }
    // The next re-watch (within a second) asks for a resourceVersion older than the history:
    // an in-stream 410, surfaced as an error, after which the watcher re-lists from scratch.
    wait_for(&mut rx, "error").await;
    wait_for(&mut rx, "init").await;
    wait_for(&mut rx, "initdone").await;
    quiet.create(&PostParams::default(), &service("after", 7)).await.expect("create");
    wait_for(&mut rx, "apply after 7").await;
    w.abort();
}

/// A stand-in node agent: answers every request with one log line and reports the paths.
async fn fake_agent() -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let _ = tx.send(path);
                let body = "hello from c\n";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (port, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_bind_log_and_terminate_gracefully() {
    use k8s_openapi::api::core::v1::{Node, Pod};
    let server = TestServer::start().await;
    let client = server.client().await;
    let (agent_port, mut paths) = fake_agent().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "n1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}], "daemonEndpoints": {"kubeletEndpoint": {"Port": agent_port}}},
    }))
    .expect("node");
    nodes.create(&PostParams::default(), &node).await.expect("create node");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
    )
    .expect("pod");
    pods.create(&PostParams::default(), &pod).await.expect("create pod");

    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}});
    let req = http::Request::post("/api/v1/namespaces/default/pods/p/binding")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&binding).expect("json"))
        .expect("request");
    let resp = client.send(req.map(kube::client::Body::from)).await.expect("binding");
    assert_eq!(resp.status().as_u16(), 201);
    let bound = pods.get("p").await.expect("get");
    assert_eq!(bound.spec.as_ref().and_then(|s| s.node_name.as_deref()), Some("n1"));

    let logs = pods.logs("p", &Default::default()).await.expect("logs");
    assert_eq!(logs, "hello from c\n");
    let path = paths.recv().await.expect("agent saw the request");
    assert!(path.starts_with("/containerLogs/default/p/c?follow=false"), "{path}");

    // A bound pod on a node with an agent terminates gracefully; the agent finishes it.
    pods.delete("p", &DeleteParams::default()).await.expect("delete");
    let terminating = pods.get("p").await.expect("still there");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    pods.delete("p", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
        .await
        .expect("final delete");
    assert!(pods.get_opt("p").await.expect("get").is_none());

    // An unbound pod goes at once.
    pods.create(&PostParams::default(), &pod).await.expect("create again");
    pods.delete("p", &DeleteParams::default()).await.expect("delete unbound");
    assert!(pods.get_opt("p").await.expect("get").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_watcher() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let api: Api<Service> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &service("early", 1)).await.expect("create");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = tokio::spawn(
        watcher(api.clone(), watcher::Config::default().streaming_lists()).for_each(move |ev| {
            let s = match ev {
                Ok(ev) => summarize(&ev),
                Err(e) => Some(format!("error {e}")),
            };
            if let Some(s) = s {
                let _ = tx.send(s);
            }
            futures::future::ready(())
        }),
    );
    let initial = wait_for(&mut rx, "initdone").await;
    assert!(initial.contains(&"initapply early".to_string()), "{initial:?}");
    assert!(!initial.iter().any(|s| s.starts_with("error")), "{initial:?}");
    api.create(&PostParams::default(), &service("late", 2)).await.expect("create");
    wait_for(&mut rx, "apply late 2").await;
    w.abort();
}
