//! Crash test: a child process (this test binary, re-executed in writer mode) commits as fast
//! as it can and prints every acknowledged key; the test kills it with SIGKILL mid-stream,
//! reopens the store and checks that every acknowledged key is there, that the store opens
//! cleanly and that the revision never goes backwards.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use svcnet_store::embedded::EmbeddedStore;
use svcnet_store::{Error, Precondition, Revision, Store};

use crate::harness::put_if;

const DB_ENV: &str = "SVCNET_STORE_CRASH_DB";
const ETCD_ENV: &str = "SVCNET_STORE_CRASH_ETCD";

/// Writer mode: runs only when re-executed by a crash test (the env var names the target).
#[test]
fn crash_writer_child() {
    let db = std::env::var(DB_ENV).ok();
    let etcd = std::env::var(ETCD_ENV).ok();
    if db.is_none() && etcd.is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let store: Arc<dyn Store> = match (db, etcd) {
            (Some(path), _) => Arc::new(EmbeddedStore::open(Path::new(&path)).expect("open")),
            (None, Some(endpoint)) => Arc::new(
                svcnet_store::etcd::EtcdStore::connect(&[endpoint], "/crash/")
                    .await
                    .expect("connect"),
            ),
            (None, None) => return,
        };
        let pid = std::process::id();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut tasks = Vec::new();
        for t in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let key = format!("ck/{pid}-{t}-{i}");
                    match store.txn(vec![put_if(&key, "v", Precondition::Absent)]).await {
                        Ok(r) => {
                            // One write per line; a torn last line lacks the END marker.
                            println!("ACK {key} {} END", r.revision);
                            i += 1;
                        }
                        // Committed but not acknowledged before a failure: unknown, skip it.
                        Err(Error::PreconditionFailed { .. }) => i += 1,
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

struct Acked {
    key: String,
    revision: Revision,
}

fn parse(line: &str) -> Option<Acked> {
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("ACK"), Some(key), Some(rev), Some("END"), None) => {
            Some(Acked { key: key.to_owned(), revision: rev.parse().ok()? })
        }
        _ => None,
    }
}

fn spawn_writer(env: (&str, &str)) -> std::process::Child {
    Command::new(std::env::current_exe().expect("current exe"))
        .args(["crash::crash_writer_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(env.0, env.1)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn writer")
}

async fn verify(store: &dyn Store, acked: &[Acked], last_revision: &mut Revision) {
    let (items, _) = store.list("ck/").await.expect("list");
    let present: std::collections::HashMap<&str, Revision> =
        items.iter().map(|kv| (kv.key.as_str(), kv.mod_revision)).collect();
    for a in acked {
        assert_eq!(
            present.get(a.key.as_str()),
            Some(&a.revision),
            "acknowledged key {} lost",
            a.key
        );
    }
    let rev = store.current_revision().await.expect("rev");
    let max_acked = acked.iter().map(|a| a.revision).max().unwrap_or(0);
    assert!(rev >= max_acked, "revision {rev} behind acknowledged {max_acked}");
    assert!(rev >= *last_revision, "revision went backwards: {rev} < {last_revision}");
    *last_revision = rev;
}

#[test]
fn embedded_survives_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let path_str = path.to_str().expect("utf8 path").to_owned();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut acked = Vec::new();
    let mut last_revision = 0;
    for round in 0..10u64 {
        let mut child = spawn_writer((DB_ENV, &path_str));
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        // Kill after a varying number of acknowledgements, so the kill lands mid-batch.
        let target = 20 + (round * 37) % 150;
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while got < target && Instant::now() < deadline {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(a) = parse(&line) {
                        acked.push(a);
                        got += 1;
                    }
                }
                _ => break,
            }
        }
        child.kill().expect("SIGKILL");
        // Lines printed before the kill are acknowledged writes too.
        for line in lines.map_while(Result::ok) {
            if let Some(a) = parse(&line) {
                acked.push(a);
            }
        }
        child.wait().expect("reap");
        assert!(got > 0, "round {round}: the writer acknowledged nothing");
        let store = EmbeddedStore::open(&path).expect("store opens cleanly after SIGKILL");
        rt.block_on(verify(&store, &acked, &mut last_revision));
    }
    eprintln!(
        "embedded: {} acknowledged writes survived 10 SIGKILLs (revision {last_revision})",
        acked.len()
    );
}

#[test]
fn etcd_survives_sigkill() {
    let mut etcd = crate::harness::EtcdServer::start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut child = spawn_writer((ETCD_ENV, &etcd.endpoint));
    let stdout = child.stdout.take().expect("stdout");
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(a) = parse(&line) {
                    acked.lock().expect("lock").push(a);
                }
            }
        })
    };
    let count = || acked.lock().expect("lock").len();
    let mut last_revision = 0;
    for round in 0..5usize {
        let before = count();
        let target = before + 20 + (round * 37) % 100;
        let deadline = Instant::now() + Duration::from_secs(20);
        while count() < target {
            assert!(Instant::now() < deadline, "round {round}: the writer is stuck at {}", count());
            std::thread::sleep(Duration::from_millis(5));
        }
        etcd.restart();
        let snapshot: Vec<Acked> = acked
            .lock()
            .expect("lock")
            .iter()
            .map(|a| Acked { key: a.key.clone(), revision: a.revision })
            .collect();
        rt.block_on(async {
            let store = svcnet_store::etcd::EtcdStore::connect(
                std::slice::from_ref(&etcd.endpoint),
                "/crash/",
            )
            .await
            .expect("connect after restart");
            verify(&store, &snapshot, &mut last_revision).await;
        });
    }
    child.kill().expect("kill writer");
    child.wait().expect("reap");
    reader.join().expect("reader");
    let all = std::mem::take(&mut *acked.lock().expect("lock"));
    rt.block_on(async {
        let store =
            svcnet_store::etcd::EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/crash/")
                .await
                .expect("connect");
        verify(&store, &all, &mut last_revision).await;
    });
    eprintln!(
        "etcd: {} acknowledged writes survived 5 SIGKILLs (revision {last_revision})",
        all.len()
    );
}
