//! Concurrent writers: no acknowledged write is lost, optimistic concurrency serialises updates.

use std::collections::HashSet;

use svcnet_store::{Error, Precondition};

use crate::conformance;
use crate::harness::{Fixture, put_if};

conformance!(concurrent_writers_lose_nothing);

async fn concurrent_writers_lose_nothing(f: Fixture) {
    const WRITERS: usize = 16;
    const CREATES: usize = 20;
    const INCREMENTS: usize = 5;
    let s = f.store.clone();
    s.txn(vec![put_if("cc/counter", "0", Precondition::Absent)]).await.expect("seed");
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..CREATES {
                let key = format!("cc/k/{w}-{i}");
                revs.push(
                    s.txn(vec![put_if(&key, "v", Precondition::Absent)])
                        .await
                        .expect("create")
                        .revision,
                );
            }
            for _ in 0..INCREMENTS {
                loop {
                    let cur = s.get("cc/counter").await.expect("get").expect("counter");
                    let n: u64 =
                        std::str::from_utf8(&cur.value).expect("utf8").parse().expect("number");
                    let op = put_if(
                        "cc/counter",
                        &(n + 1).to_string(),
                        Precondition::ModRevision(cur.mod_revision),
                    );
                    match s.txn(vec![op]).await {
                        Ok(r) => {
                            revs.push(r.revision);
                            break;
                        }
                        Err(Error::PreconditionFailed { .. }) => continue,
                        Err(e) => panic!("increment: {e}"),
                    }
                }
            }
            revs
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        for r in t.await.expect("writer") {
            assert!(all.insert(r), "revision {r} acknowledged twice");
        }
    }
    let (items, _) = s.list("cc/k/").await.expect("list");
    assert_eq!(items.len(), WRITERS * CREATES);
    let counter = s.get("cc/counter").await.expect("get").expect("counter");
    assert_eq!(counter.value, (WRITERS * INCREMENTS).to_string().as_bytes());
}
