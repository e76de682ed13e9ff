//! A revisioned key-value store with watch, the persistence layer under the API server.
//!
//! Why a trait: the API server runs on an embedded store (redb, the default of `svcnet up`)
//! or on a shared etcd cluster, and both must behave identically — one monotonic revision
//! counter per store, multi-key transactions with preconditions (optimistic concurrency and
//! atomic address allocation), and ordered watch streams that report compaction.
//! What it leaves out: anything Kubernetes-specific (keys and values are opaque bytes here).

pub mod embedded;
pub mod error;
pub mod etcd;

pub use error::{Error, Result};

use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;

/// A store revision. Every committed transaction gets exactly one new revision, strictly
/// greater than all earlier ones (etcd's `header.revision`).
pub type Revision = u64;

/// A stored value with its revisions, as etcd reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the transaction that created this key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the transaction that last wrote this key.
    pub mod_revision: Revision,
}

/// What must hold for one operation of a transaction to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// No condition.
    None,
    /// The key must not exist (create).
    Absent,
    /// The key must exist.
    Exists,
    /// The key must exist with exactly this `mod_revision` (optimistic concurrency).
    ModRevision(Revision),
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Vec<u8>, precondition: Precondition },
    Delete { key: String, precondition: Precondition },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

/// The outcome of a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    /// The revision of this transaction (the new store revision). A transaction that changes
    /// nothing (only deletes of absent keys) takes no revision, as in etcd: this is then the
    /// current revision.
    pub revision: Revision,
    /// For each op, the value the key had before the transaction (None if absent).
    pub prev: Vec<Option<KeyValue>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change, in revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    /// For `Put` the new value; for `Delete` the key with `mod_revision` = the deleting
    /// revision and `value` = the last value before deletion.
    pub kv: KeyValue,
    /// The value before this event, when there was one.
    pub prev: Option<KeyValue>,
}

/// Rejects a transaction that names the same key twice (etcd refuses those too).
pub(crate) fn check_distinct_keys(ops: &[Op]) -> Result<()> {
    let mut keys: Vec<&str> = ops.iter().map(Op::key).collect();
    keys.sort_unstable();
    match keys.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => {
            Err(Error::InvalidArgument(format!("key {} appears twice in one transaction", w[0])))
        }
        None => Ok(()),
    }
}

pub type WatchStream = BoxStream<'static, Result<WatchEvent>>;

/// The store contract. Both backends pass the same conformance suite (`tests/it/`).
///
/// Architecture Invariant: a transaction applies all of its ops or none; every event of a
/// transaction carries that transaction's revision; watch streams deliver events in revision
/// order with no gaps and no duplicates, or end with `Error::Compacted`.
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>>>;

    /// Reads every key starting with `prefix`, in key order, with the store revision of the read.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<(Vec<KeyValue>, Revision)>>;

    /// Applies all ops atomically if every precondition holds; otherwise applies nothing and
    /// returns `Error::PreconditionFailed` naming the first op that failed.
    /// An acknowledged transaction is durable (survives kill -9 and power loss).
    fn txn(&self, ops: Vec<Op>) -> BoxFuture<'_, Result<TxnResponse>>;

    /// Streams every change under `prefix` with revision > `after`.
    /// Fails with `Error::Compacted` if `after` is older than the retained history.
    fn watch<'a>(&'a self, prefix: &'a str, after: Revision) -> BoxFuture<'a, Result<WatchStream>>;

    /// The current store revision.
    fn current_revision(&self) -> BoxFuture<'_, Result<Revision>>;

    /// Discards watch history before `revision` (etcd's compaction): afterwards a watch needs
    /// `after >= revision - 1`. Current values are never affected. The default does nothing.
    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>> {
        let _ = revision;
        Box::pin(futures::future::ready(Ok(())))
    }
}

/// Opens the store named by `spec`: `embedded` (the file `data_dir/store.redb`, creating
/// `data_dir` if needed) or `etcd:http://host:port[,http://…]` (every key stored under
/// [`etcd::DEFAULT_PREFIX`]). Anything else is `Error::InvalidArgument`.
pub async fn open(spec: &str, data_dir: &Path) -> Result<Arc<dyn Store>> {
    if spec == "embedded" {
        std::fs::create_dir_all(data_dir).map_err(|e| Error::Unavailable(Box::new(e)))?;
        let path = data_dir.join("store.redb");
        let store = tokio::task::spawn_blocking(move || embedded::EmbeddedStore::open(&path))
            .await
            .map_err(|e| Error::Unavailable(Box::new(e)))??;
        return Ok(Arc::new(store));
    }
    if let Some(list) = spec.strip_prefix("etcd:") {
        let endpoints: Vec<String> =
            list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        if endpoints.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "unknown store {spec:?}: use embedded or etcd:http://host:port[,…]"
            )));
        }
        let store = etcd::EtcdStore::connect(&endpoints, etcd::DEFAULT_PREFIX).await?;
        return Ok(Arc::new(store));
    }
    Err(Error::InvalidArgument(format!(
        "unknown store {spec:?}: use embedded or etcd:http://host:port[,…]"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_rejects_unknown_specs() {
        let dir = std::env::temp_dir();
        for spec in ["", "redb", "etcd:", "etcd: , "] {
            assert!(matches!(open(spec, &dir).await, Err(Error::InvalidArgument(_))), "{spec:?}");
        }
    }

    #[tokio::test]
    async fn open_embedded_creates_the_data_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("a/b");
        let store = open("embedded", &data).await.expect("open");
        assert_eq!(store.current_revision().await.expect("rev"), 1);
        assert!(data.join("store.redb").exists());
    }

    #[test]
    fn duplicate_keys_are_found() {
        let put =
            |k: &str| Op::Put { key: k.into(), value: vec![], precondition: Precondition::None };
        assert!(check_distinct_keys(&[put("a"), put("b")]).is_ok());
        assert!(check_distinct_keys(&[put("a"), put("b"), put("a")]).is_err());
    }
}
