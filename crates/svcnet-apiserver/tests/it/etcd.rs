//! The server on etcd: it compacts etcd's history on its interval (kube-apiserver's
//! `--etcd-compaction-interval`), so the database does not keep every revision forever while
//! current objects stay readable; an object over etcd's request limit is a 413, not a 500.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;

use crate::common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_history_is_compacted_and_objects_stay() {
    if !svcnet_testkit::etcd::available() {
        eprintln!("etcd is not installed; skipped");
        return;
    }
    let etcd = svcnet_testkit::etcd::EtcdServer::start();
    let endpoint = etcd.endpoint.clone();
    let server = TestServer::start_with(move |config| {
        config.store = format!("etcd:{endpoint}");
        config.compaction_interval = Duration::from_millis(100);
    })
    .await;
    let client = server.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..5 {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("c{i}")}, "data": {"i": i.to_string()}
        }))
        .expect("configmap");
        api.create(&PostParams::default(), &cm).await.expect("create");
    }
    let written = server.handle.store.current_revision().await.expect("revision");

    // Compaction reaches the last write within a few ticks: a watch needing the history just
    // before it is refused (a client would re-list).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let watch = server.handle.store.watch("/registry/", written - 2).await;
        if matches!(watch, Err(svcnet_store::Error::Compacted { .. })) {
            break;
        }
        assert!(Instant::now() < deadline, "etcd history was not compacted past {written}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..5 {
        let cm = api.get(&format!("c{i}")).await.expect("objects survive compaction");
        assert_eq!(cm.data.and_then(|d| d.get("i").cloned()), Some(i.to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_over_etcds_limit_is_413() {
    if !svcnet_testkit::etcd::available() {
        eprintln!("etcd is not installed; skipped");
        return;
    }
    let etcd = svcnet_testkit::etcd::EtcdServer::start();
    let endpoint = etcd.endpoint.clone();
    // The body limit (3 MiB) is above etcd's default request limit (1.5 MiB).
    let server =
        TestServer::start_with(move |config| config.store = format!("etcd:{endpoint}")).await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "big"}, "data": {"blob": "x".repeat(2 * 1024 * 1024)}
    }))
    .expect("configmap");
    match api.create(&PostParams::default(), &cm).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (413, "RequestEntityTooLarge"))
        }
        other => panic!("want 413, got {other:?}"),
    }
    // Still serving.
    let small: ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "small"}})).expect("cm");
    api.create(&PostParams::default(), &small).await.expect("a small object is stored");
}
