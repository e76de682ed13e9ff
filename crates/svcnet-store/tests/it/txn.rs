//! Transactions: preconditions, all-or-nothing, the failing op named.

use svcnet_store::{Error, Precondition};

use crate::conformance;
use crate::harness::{Fixture, delete_if, put, put_if};

conformance!(
    preconditions,
    failed_txn_applies_nothing,
    multi_op_is_atomic,
    duplicate_keys_rejected
);

async fn preconditions(f: Fixture) {
    let s = &f.store;
    let created = s.txn(vec![put_if("p/a", "1", Precondition::Absent)]).await.expect("create");

    // Absent on an existing key.
    match s.txn(vec![put_if("p/a", "2", Precondition::Absent)]).await {
        Err(Error::PreconditionFailed { index: 0, key, current: Some(cur) }) => {
            assert_eq!(key, "p/a");
            assert_eq!(cur.mod_revision, created.revision);
            assert_eq!(cur.value, b"1");
        }
        other => panic!("expected PreconditionFailed, got {other:?}"),
    }
    // Stale ModRevision.
    let upd = s
        .txn(vec![put_if("p/a", "2", Precondition::ModRevision(created.revision))])
        .await
        .expect("cas update");
    match s.txn(vec![put_if("p/a", "3", Precondition::ModRevision(created.revision))]).await {
        Err(Error::PreconditionFailed { index: 0, current: Some(cur), .. }) => {
            assert_eq!(cur.mod_revision, upd.revision);
        }
        other => panic!("expected PreconditionFailed, got {other:?}"),
    }
    // ModRevision on a missing key.
    assert!(matches!(
        s.txn(vec![put_if("p/none", "x", Precondition::ModRevision(upd.revision))]).await,
        Err(Error::PreconditionFailed { index: 0, current: None, .. })
    ));
    // Exists.
    assert!(matches!(
        s.txn(vec![delete_if("p/none", Precondition::Exists)]).await,
        Err(Error::PreconditionFailed { index: 0, current: None, .. })
    ));
    let del = s.txn(vec![delete_if("p/a", Precondition::Exists)]).await.expect("delete existing");
    assert_eq!(del.prev[0].as_ref().map(|kv| kv.value.clone()), Some(b"2".to_vec()));
    assert_eq!(s.get("p/a").await.expect("get"), None);
    // Delete guarded by ModRevision.
    let c = s.txn(vec![put("p/b", "x")]).await.expect("put");
    assert!(
        s.txn(vec![delete_if("p/b", Precondition::ModRevision(c.revision + 100))]).await.is_err()
    );
    s.txn(vec![delete_if("p/b", Precondition::ModRevision(c.revision))]).await.expect("cas delete");
}

async fn failed_txn_applies_nothing(f: Fixture) {
    let s = &f.store;
    s.txn(vec![put("f/exists", "old")]).await.expect("seed");
    let ops = vec![
        put_if("f/new1", "x", Precondition::Absent),
        put("f/exists", "new"),
        delete_if("f/ghost", Precondition::Exists),
        put_if("f/new2", "y", Precondition::Absent),
    ];
    match s.txn(ops).await {
        Err(Error::PreconditionFailed { index, key, current }) => {
            assert_eq!((index, key.as_str(), current), (2, "f/ghost", None));
        }
        other => panic!("expected PreconditionFailed, got {other:?}"),
    }
    assert_eq!(s.get("f/new1").await.expect("get"), None);
    assert_eq!(s.get("f/new2").await.expect("get"), None);
    assert_eq!(s.get("f/exists").await.expect("get").expect("present").value, b"old");
    if f.backend == crate::harness::Backend::Embedded {
        // Nobody else writes to this store: a failed txn must not consume a revision.
        let before = s.current_revision().await.expect("rev");
        let _ = s.txn(vec![put_if("f/exists", "z", Precondition::Absent)]).await;
        assert_eq!(s.current_revision().await.expect("rev"), before);
    }
}

async fn multi_op_is_atomic(f: Fixture) {
    let s = &f.store;
    s.txn(vec![put("m/d", "gone soon")]).await.expect("seed");
    let start = s.current_revision().await.expect("rev");
    let r = s
        .txn(vec![
            put_if("m/a", "1", Precondition::Absent),
            put("m/b", "2"),
            delete_if("m/d", Precondition::Exists),
            put("m/c", "3"),
        ])
        .await
        .expect("txn");
    assert!(r.revision > start);
    assert_eq!(r.prev.len(), 4);
    assert!(r.prev[2].is_some());
    let (items, _) = s.list("m/").await.expect("list");
    let keys: Vec<&str> = items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["m/a", "m/b", "m/c"]);
    assert!(
        items.iter().all(|kv| kv.mod_revision == r.revision && kv.create_revision == r.revision)
    );

    use futures::StreamExt;
    let mut w = s.watch("m/", start).await.expect("watch");
    for key in ["m/a", "m/b", "m/d", "m/c"] {
        let ev = w.next().await.expect("event").expect("ok");
        assert_eq!(ev.kv.key, key);
        assert_eq!(ev.kv.mod_revision, r.revision);
    }
}

async fn duplicate_keys_rejected(f: Fixture) {
    let s = &f.store;
    let res = s.txn(vec![put("d/a", "1"), put("d/a", "2")]).await;
    assert!(matches!(res, Err(Error::InvalidArgument(_))), "{res:?}");
    assert_eq!(s.get("d/a").await.expect("get"), None);
}

#[tokio::test]
async fn etcd_oversized_request_is_too_large() {
    let f = Fixture::etcd().await;
    let big = svcnet_store::Op::Put {
        key: "big/a".into(),
        value: vec![0; 3 * 1024 * 1024],
        precondition: Precondition::None,
    };
    let res = f.store.txn(vec![big]).await;
    assert!(matches!(res, Err(Error::TooLarge(_))), "{res:?}");
}
