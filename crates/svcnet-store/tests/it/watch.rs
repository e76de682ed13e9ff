//! Watch: order, no gaps or duplicates, prefix filtering, event shape, compaction.

use std::time::Duration;

use futures::StreamExt;
use svcnet_store::embedded::{EmbeddedStore, HistoryLimits};
use svcnet_store::{Error, EventKind, Revision, Store, WatchStream};

use crate::conformance;
use crate::harness::{Fixture, delete, put};

conformance!(watch_in_order_without_gaps, watch_event_shape, watch_sees_live_writes);

async fn next(w: &mut WatchStream) -> svcnet_store::WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("watch event within 10s")
        .expect("stream not ended")
        .expect("event ok")
}

async fn watch_in_order_without_gaps(f: Fixture) {
    let s = &f.store;
    let start = s.current_revision().await.expect("rev");
    let mut expected = Vec::new();
    for i in 0..100 {
        let key = format!("w/{}", i % 7);
        let mut ops = vec![put(&key, &i.to_string())];
        if i % 10 == 0 {
            ops.push(put(&format!("w/extra{i}"), "e"));
        }
        let r = s.txn(ops).await.expect("put").revision;
        s.txn(vec![put(&format!("other/{i}"), "x")]).await.expect("other prefix");
        expected.push((r, key));
        if i % 10 == 0 {
            expected.push((r, format!("w/extra{i}")));
        }
    }
    let mut w = s.watch("w/", start).await.expect("watch");
    for (rev, key) in &expected {
        let ev = next(&mut w).await;
        assert_eq!((ev.kv.mod_revision, &ev.kv.key), (*rev, key));
        assert_eq!(ev.kind, EventKind::Put);
    }
    // From the middle: only strictly later revisions.
    let mid = expected[50].0;
    let mut w = s.watch("w/", mid).await.expect("watch mid");
    let first = next(&mut w).await;
    assert!(first.kv.mod_revision > mid);
    assert_eq!(first.kv.mod_revision, expected.iter().find(|(r, _)| *r > mid).expect("later").0);
}

async fn watch_event_shape(f: Fixture) {
    let s = &f.store;
    let start = s.current_revision().await.expect("rev");
    let r1 = s.txn(vec![put("e/a", "v1")]).await.expect("put").revision;
    let r2 = s.txn(vec![put("e/a", "v2")]).await.expect("put").revision;
    let r3 = s.txn(vec![delete("e/a")]).await.expect("delete").revision;
    let mut w = s.watch("e/", start).await.expect("watch");
    let e1 = next(&mut w).await;
    assert_eq!((e1.kind, e1.kv.create_revision, e1.kv.mod_revision), (EventKind::Put, r1, r1));
    assert_eq!(e1.prev, None);
    let e2 = next(&mut w).await;
    assert_eq!((e2.kind, e2.kv.create_revision, e2.kv.mod_revision), (EventKind::Put, r1, r2));
    assert_eq!(e2.prev.as_ref().map(|p| p.value.clone()), Some(b"v1".to_vec()));
    let e3 = next(&mut w).await;
    assert_eq!(e3.kind, EventKind::Delete);
    assert_eq!((e3.kv.key.as_str(), e3.kv.mod_revision), ("e/a", r3));
    assert_eq!(e3.kv.value, b"v2");
    assert_eq!(e3.prev.as_ref().map(|p| p.mod_revision), Some(r2));
}

async fn watch_sees_live_writes(f: Fixture) {
    let s = f.store.clone();
    let start = s.current_revision().await.expect("rev");
    let mut w = s.watch("live/", start).await.expect("watch");
    let writer = tokio::spawn(async move {
        let mut revs = Vec::new();
        for i in 0..200 {
            revs.push(s.txn(vec![put(&format!("live/{i}"), "v")]).await.expect("put").revision);
        }
        revs
    });
    let mut seen = Vec::new();
    for _ in 0..200 {
        seen.push(next(&mut w).await.kv.mod_revision);
    }
    let revs = writer.await.expect("writer");
    assert_eq!(seen, revs);
}

async fn compaction(store: &dyn Store) {
    let start = store.current_revision().await.expect("rev");
    let mut last: Revision = start;
    for i in 0..10 {
        last = store.txn(vec![put(&format!("c/{i}"), "v")]).await.expect("put").revision;
    }
    store.compact(last).await.expect("compact");
    match store.watch("c/", start).await {
        Err(Error::Compacted { requested, oldest }) => {
            assert_eq!(requested, start);
            assert!(oldest > start, "oldest {oldest}");
        }
        Err(e) => panic!("expected Compacted, got {e:?}"),
        Ok(mut w) => match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
            Ok(Some(Err(Error::Compacted { .. }))) => {}
            other => panic!("expected a Compacted stream error, got {other:?}"),
        },
    }
    // From the compaction point on, watching works.
    let mut w = store.watch("c/", last).await.expect("watch at compaction point");
    let r = store.txn(vec![put("c/new", "v")]).await.expect("put").revision;
    let ev = next(&mut w).await;
    assert_eq!((ev.kv.key.as_str(), ev.kv.mod_revision), ("c/new", r));
    // Data survives compaction.
    assert_eq!(store.list("c/").await.expect("list").0.len(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_embedded() {
    let f = Fixture::embedded();
    compaction(f.store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_etcd() {
    let f = Fixture::etcd_private().await;
    compaction(f.store.as_ref()).await;
}

#[tokio::test]
async fn embedded_history_starts_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.redb");
    let first = {
        let s = EmbeddedStore::open(&path).expect("open");
        let r = s.txn(vec![put("h/a", "1")]).await.expect("put").revision;
        s.txn(vec![put("h/b", "1")]).await.expect("put");
        r
    };
    let s = EmbeddedStore::open(&path).expect("reopen");
    let cur = s.current_revision().await.expect("rev");
    assert!(cur > first);
    assert!(matches!(s.watch("h/", first).await, Err(Error::Compacted { .. })));
    let mut w = s.watch("h/", cur).await.expect("watch from now");
    let r = s.txn(vec![put("h/c", "1")]).await.expect("put").revision;
    assert_eq!(next(&mut w).await.kv.mod_revision, r);
}

#[tokio::test]
async fn embedded_slow_watcher_catches_up_from_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = HistoryLimits { live_buffer: 4, ..HistoryLimits::default() };
    let s = EmbeddedStore::open_with(&dir.path().join("s.redb"), limits).expect("open");
    let start = s.current_revision().await.expect("rev");
    let mut w = s.watch("slow/", start).await.expect("watch");
    let mut revs = Vec::new();
    for i in 0..50 {
        revs.push(s.txn(vec![put(&format!("slow/{i}"), "v")]).await.expect("put").revision);
    }
    let mut seen = Vec::new();
    for _ in 0..50 {
        seen.push(next(&mut w).await.kv.mod_revision);
    }
    assert_eq!(seen, revs);
}

#[tokio::test]
async fn embedded_overflowing_watcher_ends_with_compacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = HistoryLimits { max_events: 8, max_bytes: 1 << 20, live_buffer: 4 };
    let s = EmbeddedStore::open_with(&dir.path().join("s.redb"), limits).expect("open");
    let start = s.current_revision().await.expect("rev");
    let mut w = s.watch("o/", start).await.expect("watch");
    let mut revs = Vec::new();
    for i in 0..50 {
        revs.push(s.txn(vec![put(&format!("o/{i}"), "v")]).await.expect("put").revision);
    }
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), w.next()).await.expect("no hang") {
            Some(Ok(ev)) => seen.push(ev.kv.mod_revision),
            Some(Err(Error::Compacted { .. })) => break,
            other => panic!("expected events then Compacted, got {other:?}"),
        }
    }
    // Whatever was delivered is a gap-free prefix of the writes.
    assert_eq!(seen, revs[..seen.len()]);
    assert!(seen.len() < revs.len());
    assert!(w.next().await.is_none(), "the stream ends after Compacted");
}

#[tokio::test]
async fn embedded_watch_ends_when_store_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = EmbeddedStore::open(&dir.path().join("s.redb")).expect("open");
    let mut w = s.watch("x/", s.current_revision().await.expect("rev")).await.expect("watch");
    drop(s);
    let end = tokio::time::timeout(Duration::from_secs(10), w.next()).await.expect("no hang");
    assert!(matches!(end, Some(Err(Error::Unavailable(_)))), "{end:?}");
    assert!(w.next().await.is_none());
}
