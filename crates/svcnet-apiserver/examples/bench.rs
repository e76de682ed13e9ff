//! The API benchmark behind `bench/api/run.sh`: creates/s with concurrent clients, the time to
//! list everything, and the fan-out latency of one update to many watchers.
//!
//! `bench [STORE] [N] [CLIENTS] [WATCHERS]`, STORE = `embedded` or `etcd:http://…`. It starts
//! an in-process server on a loopback port with a fresh data directory and prints one line of
//! results per measurement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};

fn service(name: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"bench": "yes"}},
        "spec": {"ports": [{"port": 80}], "selector": {"app": name}},
    }))
    .expect("service")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let store = args.next().unwrap_or_else(|| "embedded".into());
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10_000);
    let clients: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(16);
    let watchers: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(100);
    let dir = tempfile::tempdir()?;
    let config = svcnet_apiserver::Config {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse()?,
        store: store.clone(),
        // A /16 so 10,000 Services fit comfortably.
        service_cluster_ip_ranges: vec!["10.96.0.0/12".parse()?],
        ..Default::default()
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let handle = svcnet_apiserver::start(config, cancel.clone()).await?;
    let kc = kube::config::Kubeconfig::read_from(&handle.kubeconfig)?;
    let kconfig = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(kconfig.clone())?;
    let ns: Api<Namespace> = Api::all(client.clone());
    for name in ["bench", "fanout"] {
        ns.create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?,
        )
        .await?;
    }

    // 1. Creates with concurrent clients (one connection each).
    let started = Instant::now();
    let per = n.div_ceil(clients);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = kube::Client::try_from(kconfig.clone())?;
        tasks.push(tokio::spawn(async move {
            let api: Api<Service> = Api::namespaced(client, "bench");
            let mut failed = 0usize;
            for i in 0..per {
                if c * per + i >= n {
                    break;
                }
                if api.create(&PostParams::default(), &service(&format!("s{c}-{i}"))).await.is_err()
                {
                    failed += 1;
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await?;
    }
    let took = started.elapsed();
    println!(
        "store={store} creates={n} clients={clients} seconds={:.2} creates_per_sec={:.0} failed={failed}",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );

    // 2. List everything (median of 5).
    let api: Api<Service> = Api::namespaced(client.clone(), "bench");
    let mut times = Vec::new();
    let mut count = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let list = api.list(&ListParams::default()).await?;
        times.push(t.elapsed());
        count = list.items.len();
    }
    times.sort();
    println!(
        "store={store} list_items={count} list_ms_median={:.1} list_ms_min={:.1}",
        times[2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3
    );

    // 3. One update seen by many watchers.
    let fan: Api<Service> = Api::namespaced(client.clone(), "fanout");
    let svc = fan.create(&PostParams::default(), &service("target")).await?;
    let rv = svc.metadata.resource_version.clone().unwrap_or_default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String, Instant)>();
    let ready = Arc::new(tokio::sync::Barrier::new(watchers + 1));
    for w in 0..watchers {
        let client = kube::Client::try_from(kconfig.clone())?;
        let tx = tx.clone();
        let rv = rv.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let api: Api<Service> = Api::namespaced(client, "fanout");
            let stream = api.watch(&WatchParams::default().timeout(290), &rv).await;
            ready.wait().await;
            let Ok(stream) = stream else { return };
            let mut stream = stream.boxed();
            while let Ok(Some(ev)) = stream.try_next().await {
                if let WatchEvent::Modified(s) = ev {
                    let v = s
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("round"))
                        .cloned()
                        .unwrap_or_default();
                    let _ = tx.send((w, v, Instant::now()));
                }
            }
        });
    }
    ready.wait().await;
    // The watch requests are answered with headers before `watch` returns; give the last
    // streams a moment to be registered server-side by waiting for a probe round.
    let rounds = 20;
    let mut samples = Vec::new();
    for round in 0..=rounds {
        let sent = Instant::now();
        fan.patch(
            "target",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"labels": {"round": round.to_string()}}}),
            ),
        )
        .await?;
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while got < watchers {
            match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                Ok(Some((_, v, at))) if v == round.to_string() => {
                    got += 1;
                    if round > 0 {
                        samples.push(at - sent);
                    }
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        if got < watchers {
            println!("round {round}: only {got}/{watchers} watchers saw the update");
        }
    }
    samples.sort();
    println!(
        "store={store} fanout_watchers={watchers} rounds={rounds} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    cancel.cancel();
    handle.stopped().await;
    Ok(())
}
