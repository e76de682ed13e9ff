//! Single-key reads and writes, lists and revisions.

use crate::conformance;
use crate::harness::{Fixture, delete, put};

conformance!(crud, list_in_key_order_with_revision, revision_is_monotonic);

async fn crud(f: Fixture) {
    let s = &f.store;
    assert_eq!(s.get("k/a").await.expect("get"), None);
    let r1 = s.txn(vec![put("k/a", "one")]).await.expect("put");
    assert_eq!(r1.prev, vec![None]);
    let kv = s.get("k/a").await.expect("get").expect("present");
    assert_eq!((kv.key.as_str(), kv.value.as_slice()), ("k/a", b"one".as_slice()));
    assert_eq!((kv.create_revision, kv.mod_revision), (r1.revision, r1.revision));

    let r2 = s.txn(vec![put("k/a", "two")]).await.expect("update");
    assert!(r2.revision > r1.revision);
    assert_eq!(r2.prev, vec![Some(kv.clone())]);
    let kv2 = s.get("k/a").await.expect("get").expect("present");
    assert_eq!((kv2.create_revision, kv2.mod_revision), (r1.revision, r2.revision));
    assert_eq!(kv2.value, b"two");

    let r3 = s.txn(vec![delete("k/a")]).await.expect("delete");
    assert!(r3.revision > r2.revision);
    assert_eq!(r3.prev, vec![Some(kv2)]);
    assert_eq!(s.get("k/a").await.expect("get"), None);

    // Re-creating starts a new life: a fresh create_revision.
    let r4 = s.txn(vec![put("k/a", "three")]).await.expect("recreate");
    let kv4 = s.get("k/a").await.expect("get").expect("present");
    assert_eq!(kv4.create_revision, r4.revision);

    // Deleting an absent key changes nothing and succeeds.
    let r5 = s.txn(vec![delete("k/missing")]).await.expect("delete missing");
    assert_eq!(r5.prev, vec![None]);
    assert!(r5.revision >= r4.revision);

    // Values are opaque bytes.
    let bin: Vec<u8> = (0..=255).collect();
    s.txn(vec![svcnet_store::Op::Put {
        key: "k/bin".into(),
        value: bin.clone(),
        precondition: svcnet_store::Precondition::None,
    }])
    .await
    .expect("put binary");
    assert_eq!(s.get("k/bin").await.expect("get").expect("present").value, bin);
}

async fn list_in_key_order_with_revision(f: Fixture) {
    let s = &f.store;
    for k in ["l/c", "l/a", "l/b/x", "l/ab", "lz", "m/a"] {
        s.txn(vec![put(k, k)]).await.expect("put");
    }
    let last = s.txn(vec![put("l/0", "zero")]).await.expect("put").revision;
    let (items, rev) = s.list("l/").await.expect("list");
    let keys: Vec<&str> = items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["l/0", "l/a", "l/ab", "l/b/x", "l/c"]);
    assert!(rev >= last, "list revision {rev} < last write {last}");
    assert!(rev <= s.current_revision().await.expect("rev"));
    assert_eq!(items[0].value, b"zero");
    assert_eq!(items[0].mod_revision, last);

    let (none, rev2) = s.list("nothing/").await.expect("list empty");
    assert!(none.is_empty());
    assert!(rev2 >= rev);

    // A list of more keys than one etcd page (2,000) stays complete and ordered.
    let ops: Vec<_> = (0..2500).map(|i| put(&format!("big/{i:05}"), "v")).collect();
    for chunk in ops.chunks(100) {
        s.txn(chunk.to_vec()).await.expect("bulk");
    }
    let (big, _) = s.list("big/").await.expect("list big");
    assert_eq!(big.len(), 2500);
    assert!(big.windows(2).all(|w| w[0].key < w[1].key));
}

async fn revision_is_monotonic(f: Fixture) {
    let s = &f.store;
    let mut last = s.current_revision().await.expect("rev");
    assert!(last >= 1);
    for i in 0..30 {
        let r = s.txn(vec![put(&format!("r/{}", i % 3), "v")]).await.expect("put").revision;
        assert!(r > last, "revision {r} not after {last}");
        last = r;
        let cur = s.current_revision().await.expect("rev");
        assert!(cur >= r);
    }
}
