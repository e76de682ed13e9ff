//! Store throughput benchmark (run by `bench/store/run.sh`): N concurrent writers create keys
//! with an `Absent` precondition, then one list of everything and a watch fan-out.
//!
//! Usage: `store_bench <embedded|etcd:URL> [writers] [txns] [value_bytes] [watchers]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use svcnet_store::{Op, Precondition, Store};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let spec = args.get(1).map_or("embedded", String::as_str).to_owned();
    let writers: usize = args.get(2).map_or(Ok(16), |s| s.parse())?;
    let txns: usize = args.get(3).map_or(Ok(10_000), |s| s.parse())?;
    let value_bytes: usize = args.get(4).map_or(Ok(1024), |s| s.parse())?;
    let watchers: usize = args.get(5).map_or(Ok(100), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = if spec == "embedded" {
        svcnet_store::open("embedded", dir.path()).await?
    } else {
        let endpoints: Vec<String> =
            spec.trim_start_matches("etcd:").split(',').map(str::to_owned).collect();
        let prefix = format!("/bench-{}/", std::process::id());
        Arc::new(svcnet_store::etcd::EtcdStore::connect(&endpoints, &prefix).await?)
    };

    let value = vec![b'x'; value_bytes];
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let value = value.clone();
        let n = txns / writers + usize::from(w < txns % writers);
        tasks.push(tokio::spawn(async move {
            for i in 0..n {
                let op = Op::Put {
                    key: format!("b/{w:02}-{i:06}"),
                    value: value.clone(),
                    precondition: Precondition::Absent,
                };
                store.txn(vec![op]).await?;
            }
            Ok::<_, svcnet_store::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{spec}: {txns} creates, {writers} writers, {value_bytes} B values: {:.0} txns/s ({secs:.2} s)",
        txns as f64 / secs
    );

    let started = Instant::now();
    let (items, _) = store.list("b/").await?;
    println!(
        "{spec}: list of {} keys: {:.1} ms",
        items.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );

    // Fan-out: one write seen by every watcher; latency from before the txn to each receipt.
    let rev = store.current_revision().await?;
    let mut streams = Vec::new();
    for _ in 0..watchers {
        streams.push(store.watch("b/", rev).await?);
    }
    let t0 = Instant::now();
    let receivers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(10), s.next())
                    .await
                    .ok()
                    .flatten()
                    .map(|_| t0.elapsed())
            })
        })
        .collect();
    store
        .txn(vec![Op::Put { key: "b/fanout".into(), value, precondition: Precondition::None }])
        .await?;
    let mut lat = Vec::new();
    for r in receivers {
        if let Some(d) = r.await? {
            lat.push(d);
        }
    }
    lat.sort();
    if !lat.is_empty() {
        let p = |q: f64| {
            lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0
        };
        println!(
            "{spec}: watch fan-out to {} watchers: p50 {:.2} ms, p99 {:.2} ms",
            lat.len(),
            p(0.5),
            p(0.99)
        );
    }
    Ok(())
}
