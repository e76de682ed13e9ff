//! Property test: random transaction sequences behave like a simple in-memory model, and a
//! watch from the start replays to exactly the final state.

use std::collections::BTreeMap;

use futures::StreamExt;
use proptest::prelude::*;
use svcnet_store::{Error, EventKind, Op, Precondition, Store};

use crate::harness::{Backend, Fixture};

#[derive(Debug, Clone)]
enum Pre {
    None,
    Absent,
    Exists,
    /// The current mod_revision (fresh) or a wrong one.
    Mod(bool),
}

#[derive(Debug, Clone)]
struct GenOp {
    key: usize,
    delete: bool,
    pre: Pre,
    value: u8,
}

fn gen_op() -> impl Strategy<Value = GenOp> {
    let pre = prop_oneof![
        Just(Pre::None),
        Just(Pre::Absent),
        Just(Pre::Exists),
        any::<bool>().prop_map(Pre::Mod)
    ];
    (0..4usize, any::<bool>(), pre, any::<u8>()).prop_map(|(key, delete, pre, value)| GenOp {
        key,
        delete,
        pre,
        value,
    })
}

fn gen_txns() -> impl Strategy<Value = Vec<Vec<GenOp>>> {
    prop::collection::vec(
        prop::collection::vec(gen_op(), 1..4).prop_map(|mut ops| {
            ops.sort_by_key(|o| o.key);
            ops.dedup_by_key(|o| o.key);
            ops
        }),
        1..25,
    )
}

/// key -> (value, create_revision, mod_revision)
type Model = BTreeMap<String, (Vec<u8>, u64, u64)>;

async fn run_case(store: &dyn Store, txns: Vec<Vec<GenOp>>) {
    let start = store.current_revision().await.expect("rev");
    let mut model = Model::new();
    let mut events = 0usize;
    for planned in txns {
        let ops: Vec<Op> = planned
            .iter()
            .map(|g| {
                let key = format!("mk/{}", g.key);
                let cur = model.get(&key).map(|v| v.2);
                let precondition = match g.pre {
                    Pre::None => Precondition::None,
                    Pre::Absent => Precondition::Absent,
                    Pre::Exists => Precondition::Exists,
                    Pre::Mod(true) => Precondition::ModRevision(cur.unwrap_or(start)),
                    Pre::Mod(false) => Precondition::ModRevision(cur.unwrap_or(start) + 1_000_000),
                };
                if g.delete {
                    Op::Delete { key, precondition }
                } else {
                    Op::Put { key, value: vec![g.value], precondition }
                }
            })
            .collect();
        let failing = ops.iter().position(|op| {
            let cur = model.get(op.key());
            let pre = match op {
                Op::Put { precondition, .. } | Op::Delete { precondition, .. } => *precondition,
            };
            match pre {
                Precondition::None => false,
                Precondition::Absent => cur.is_some(),
                Precondition::Exists => cur.is_none(),
                Precondition::ModRevision(r) => cur.is_none_or(|c| c.2 != r),
            }
        });
        let result = store.txn(ops.clone()).await;
        match (failing, result) {
            (Some(i), Err(Error::PreconditionFailed { index, .. })) => assert_eq!(index, i),
            (None, Ok(resp)) => {
                for (op, prev) in ops.iter().zip(&resp.prev) {
                    let expected = model.get(op.key()).map(|v| (v.0.clone(), v.1, v.2));
                    let got =
                        prev.as_ref().map(|p| (p.value.clone(), p.create_revision, p.mod_revision));
                    assert_eq!(got, expected, "prev of {}", op.key());
                }
                for op in &ops {
                    if matches!(op, Op::Put { .. }) || model.contains_key(op.key()) {
                        events += 1;
                    }
                    match op {
                        Op::Put { key, value, .. } => {
                            let create = model.get(key).map_or(resp.revision, |v| v.1);
                            model.insert(key.clone(), (value.clone(), create, resp.revision));
                        }
                        Op::Delete { key, .. } => {
                            model.remove(key);
                        }
                    }
                }
            }
            (f, r) => panic!("model says failing op {f:?}, store says {r:?}"),
        }
    }
    let (items, _) = store.list("mk/").await.expect("list");
    let got: Model = items
        .into_iter()
        .map(|kv| (kv.key, (kv.value, kv.create_revision, kv.mod_revision)))
        .collect();
    assert_eq!(got, model);

    // Replaying the watch from the start reproduces the final state, event by event.
    let mut replay = Model::new();
    if events > 0 {
        let mut w = store.watch("mk/", start).await.expect("watch");
        let mut last = start;
        for _ in 0..events {
            let ev = tokio::time::timeout(std::time::Duration::from_secs(10), w.next())
                .await
                .expect("event within 10s")
                .expect("stream open")
                .expect("event ok");
            assert!(ev.kv.mod_revision >= last);
            last = ev.kv.mod_revision;
            match ev.kind {
                EventKind::Put => {
                    replay.insert(
                        ev.kv.key,
                        (ev.kv.value, ev.kv.create_revision, ev.kv.mod_revision),
                    );
                }
                EventKind::Delete => {
                    replay.remove(&ev.kv.key);
                }
            }
        }
    }
    assert_eq!(replay, model);
}

fn model_test(backend: Backend) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let config =
        ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(txns in gen_txns())| {
        rt.block_on(async {
            let f = Fixture::new(backend).await;
            run_case(f.store.as_ref(), txns).await;
        });
    });
}

#[test]
fn model_embedded() {
    model_test(Backend::Embedded);
}

#[test]
fn model_etcd() {
    model_test(Backend::Etcd);
}
