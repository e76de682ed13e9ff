//! The embedded store: one redb file, one writer thread with group commit, an in-memory watch
//! hub.
//!
//! Why: `svcnet up` and single-server deployments need a crash-safe store without running
//! etcd. Every acknowledged transaction is fsynced (`Durability::Immediate`); to still reach
//! thousands of transactions per second, a dedicated writer thread drains all queued
//! transactions into one redb write transaction, gives each its own revision, commits once and
//! only then acknowledges them.
//!
//! Layout on disk: table `kv` maps a key to `create_revision (u64 LE) | mod_revision (u64 LE) |
//! value`; table `meta` holds the store revision under `"revision"`, written in the same redb
//! transaction as the data so they can never disagree.
//!
//! What it leaves out: a persisted event log. Watch history lives in memory (bounded by event
//! count and bytes), so a watch from a revision before the store was opened, or older than the
//! retained history, fails with `Error::Compacted` and the caller re-lists.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;

use futures::FutureExt;
use futures::future::BoxFuture;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, oneshot};

use crate::{
    Error, EventKind, KeyValue, Op, Precondition, Result, Revision, Store, TxnResponse, WatchEvent,
    WatchStream,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";

/// The revision of an empty store, as in etcd (the first write gets revision 2).
const INITIAL_REVISION: Revision = 1;
/// The longest the writer waits for more transactions to join a batch.
const LINGER: std::time::Duration = std::time::Duration::from_micros(500);
/// At most this many transactions go into one redb commit.
const MAX_BATCH: usize = 4096;

/// Limits of the in-memory watch history.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// The most events kept.
    pub max_events: usize,
    /// The most bytes (keys and values of events) kept.
    pub max_bytes: usize,
    /// Committed transactions buffered per watcher; a watcher that falls further behind
    /// catches up from the history (or ends with `Error::Compacted` if that is gone too).
    pub live_buffer: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self { max_events: 100_000, max_bytes: 64 * 1024 * 1024, live_buffer: 16 * 1024 }
    }
}

/// The events of one committed transaction.
#[derive(Debug)]
struct Committed {
    revision: Revision,
    events: Vec<WatchEvent>,
    bytes: usize,
}

/// Watch history and the broadcast of new commits, behind one lock so that a new watcher's
/// replay and its live subscription join without a gap or an overlap.
struct Hub {
    history: VecDeque<Arc<Committed>>,
    events: usize,
    bytes: usize,
    /// Every event with a revision <= `compacted` is gone; watches need `after >= compacted`.
    compacted: Revision,
    tx: broadcast::Sender<Arc<Committed>>,
    limits: HistoryLimits,
}

impl Hub {
    fn publish(&mut self, committed: Committed) {
        let committed = Arc::new(committed);
        self.events += committed.events.len();
        self.bytes += committed.bytes;
        self.history.push_back(committed.clone());
        while self.events > self.limits.max_events || self.bytes > self.limits.max_bytes {
            let Some(old) = self.history.pop_front() else { break };
            self.events -= old.events.len();
            self.bytes -= old.bytes;
            self.compacted = old.revision;
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(committed);
    }

    fn compact(&mut self, revision: Revision) {
        while self.history.front().is_some_and(|c| c.revision <= revision) {
            if let Some(old) = self.history.pop_front() {
                self.events -= old.events.len();
                self.bytes -= old.bytes;
            }
        }
        self.compacted = self.compacted.max(revision);
    }

    /// The retained events after `after` under `prefix`, and a subscription to later commits.
    fn subscribe(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<(VecDeque<WatchEvent>, Revision, broadcast::Receiver<Arc<Committed>>)> {
        if after < self.compacted {
            return Err(Error::Compacted { requested: after, oldest: self.compacted });
        }
        let mut pending = VecDeque::new();
        let mut last = after;
        for c in self.history.iter().filter(|c| c.revision > after) {
            pending.extend(c.events.iter().filter(|e| e.kv.key.starts_with(prefix)).cloned());
            last = c.revision;
        }
        Ok((pending, last, self.tx.subscribe()))
    }
}

struct Request {
    ops: Vec<Op>,
    reply: oneshot::Sender<Result<TxnResponse>>,
}

/// The embedded, crash-safe store on a redb file.
pub struct EmbeddedStore {
    db: Arc<Database>,
    hub: Arc<Mutex<Hub>>,
    revision: Arc<AtomicU64>,
    tx: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("revision", &self.revision.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

fn lock(hub: &Mutex<Hub>) -> MutexGuard<'_, Hub> {
    // A panic while holding the hub lock leaves plain data behind that is still consistent
    // enough to serve (worst case a watcher re-lists), so poisoning is ignored.
    hub.lock().unwrap_or_else(|p| p.into_inner())
}

fn redb_err(e: impl Into<redb::Error>) -> Error {
    match e.into() {
        redb::Error::Corrupted(msg) => Error::Corrupt(msg),
        other => Error::Unavailable(Box::new(other)),
    }
}

fn closed() -> Error {
    Error::Unavailable(Box::new(std::io::Error::other("embedded store is closed")))
}

fn encode(create_revision: Revision, mod_revision: Revision, value: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 + value.len());
    buf.extend_from_slice(&create_revision.to_le_bytes());
    buf.extend_from_slice(&mod_revision.to_le_bytes());
    buf.extend_from_slice(value);
    buf
}

fn decode(key: &str, raw: &[u8]) -> Result<KeyValue> {
    let (Some(c), Some(m), Some(value)) = (raw.get(0..8), raw.get(8..16), raw.get(16..)) else {
        return Err(Error::Corrupt(format!("value of key {key} is {} bytes long", raw.len())));
    };
    let rev = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_le_bytes(a)
    };
    Ok(KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision: rev(c),
        mod_revision: rev(m),
    })
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store file at `path`, with the default history limits.
    /// After a crash redb repairs the file here, which can take a moment for large files.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, HistoryLimits::default())
    }

    /// Opens the store with explicit watch-history limits.
    pub fn open_with(path: &Path, limits: HistoryLimits) -> Result<Self> {
        let db = Database::create(path).map_err(redb_err)?;
        let mut wtx = db.begin_write().map_err(redb_err)?;
        wtx.set_durability(Durability::Immediate).map_err(redb_err)?;
        let revision = {
            wtx.open_table(KV).map_err(redb_err)?;
            let mut meta = wtx.open_table(META).map_err(redb_err)?;
            let stored = meta.get(META_REVISION).map_err(redb_err)?.map(|g| g.value());
            match stored {
                Some(rev) => rev,
                None => {
                    meta.insert(META_REVISION, INITIAL_REVISION).map_err(redb_err)?;
                    INITIAL_REVISION
                }
            }
        };
        wtx.commit().map_err(redb_err)?;
        tracing::debug!(path = %path.display(), revision, "opened embedded store");

        let db = Arc::new(db);
        let (btx, _) = broadcast::channel(limits.live_buffer.max(1));
        let hub = Arc::new(Mutex::new(Hub {
            history: VecDeque::new(),
            events: 0,
            bytes: 0,
            compacted: revision,
            tx: btx,
            limits,
        }));
        let rev = Arc::new(AtomicU64::new(revision));
        let (tx, rx) = mpsc::channel();
        let writer =
            Writer { db: db.clone(), hub: hub.clone(), revision: rev.clone(), current: revision };
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::Unavailable(Box::new(e)))?;
        Ok(Self { db, hub, revision: rev, tx: Some(tx), writer: Some(writer) })
    }

    /// Drops the watch history up to and including `revision`: later watches need
    /// `after >= revision`. Data is untouched.
    /// A revision beyond the current one is treated as the current one.
    pub fn compact_history(&self, revision: Revision) {
        let mut hub = lock(&self.hub);
        // Read under the hub lock: the writer publishes and advances the revision under it.
        let current = self.revision.load(Ordering::Acquire);
        hub.compact(revision.min(current));
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| Error::Unavailable(Box::new(e)))?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer after its current batch; joining it makes the file
        // free to reopen as soon as this returns (with no readers still running).
        self.tx.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        // Dropping the broadcast sender ends every open watch with an `Unavailable` error
        // instead of leaving it waiting forever.
        let (closed, _) = broadcast::channel(1);
        drop(std::mem::replace(&mut lock(&self.hub).tx, closed));
    }
}

fn get_kv(db: &Database, key: &str) -> Result<Option<KeyValue>> {
    let rtx = db.begin_read().map_err(redb_err)?;
    let kv = rtx.open_table(KV).map_err(redb_err)?;
    let raw = kv.get(key).map_err(redb_err)?;
    raw.map(|g| decode(key, g.value())).transpose()
}

fn list_kv(db: &Database, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
    let rtx = db.begin_read().map_err(redb_err)?;
    let meta = rtx.open_table(META).map_err(redb_err)?;
    let revision = meta
        .get(META_REVISION)
        .map_err(redb_err)?
        .map(|g| g.value())
        .ok_or_else(|| Error::Corrupt("store revision is missing".into()))?;
    let kv = rtx.open_table(KV).map_err(redb_err)?;
    let mut out = Vec::new();
    for entry in kv.range(prefix..).map_err(redb_err)? {
        let (k, v) = entry.map_err(redb_err)?;
        let key = k.value();
        if !key.starts_with(prefix) {
            break;
        }
        out.push(decode(key, v.value())?);
    }
    Ok((out, revision))
}

impl Store for EmbeddedStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>>> {
        let key = key.to_owned();
        self.read(move |db| get_kv(db, &key)).boxed()
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<(Vec<KeyValue>, Revision)>> {
        let prefix = prefix.to_owned();
        self.read(move |db| list_kv(db, &prefix)).boxed()
    }

    fn txn(&self, ops: Vec<Op>) -> BoxFuture<'_, Result<TxnResponse>> {
        async move {
            crate::check_distinct_keys(&ops)?;
            let (reply, rx) = oneshot::channel();
            let tx = self.tx.as_ref().ok_or_else(closed)?;
            tx.send(Request { ops, reply }).map_err(|_| closed())?;
            rx.await.map_err(|_| closed())?
        }
        .boxed()
    }

    fn watch<'a>(&'a self, prefix: &'a str, after: Revision) -> BoxFuture<'a, Result<WatchStream>> {
        let res = (|| {
            let (pending, last, rx) = lock(&self.hub).subscribe(prefix, after)?;
            let state = WatchState {
                hub: self.hub.clone(),
                rx,
                pending,
                prefix: prefix.to_owned(),
                after: last,
                done: false,
            };
            Ok(Box::pin(futures::stream::unfold(state, WatchState::next)) as WatchStream)
        })();
        futures::future::ready(res).boxed()
    }

    fn current_revision(&self) -> BoxFuture<'_, Result<Revision>> {
        futures::future::ready(Ok(self.revision.load(Ordering::Acquire))).boxed()
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>> {
        // Same meaning as etcd: history before `revision` is gone, `after >= revision - 1` works.
        self.compact_history(revision.saturating_sub(1));
        futures::future::ready(Ok(())).boxed()
    }
}

struct WatchState {
    hub: Arc<Mutex<Hub>>,
    rx: broadcast::Receiver<Arc<Committed>>,
    pending: VecDeque<WatchEvent>,
    prefix: String,
    /// The revision of the last transaction taken into `pending`.
    after: Revision,
    done: bool,
}

impl WatchState {
    async fn next(mut self) -> Option<(Result<WatchEvent>, Self)> {
        loop {
            if self.done {
                return None;
            }
            if let Some(ev) = self.pending.pop_front() {
                return Some((Ok(ev), self));
            }
            match self.rx.recv().await {
                Ok(c) => {
                    if c.revision <= self.after {
                        continue;
                    }
                    self.after = c.revision;
                    let prefix = &self.prefix;
                    self.pending
                        .extend(c.events.iter().filter(|e| e.kv.key.starts_with(prefix)).cloned());
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // The live buffer overflowed; catch up from history if it still reaches
                    // back far enough, otherwise end with Compacted (never skip silently).
                    let res = lock(&self.hub).subscribe(&self.prefix, self.after);
                    match res {
                        Ok((pending, last, rx)) => {
                            self.pending = pending;
                            self.after = last;
                            self.rx = rx;
                        }
                        Err(e) => {
                            self.done = true;
                            return Some((Err(e), self));
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.done = true;
                    return Some((Err(closed()), self));
                }
            }
        }
    }
}

/// The single writer: owns all writes to the redb file.
struct Writer {
    db: Arc<Database>,
    hub: Arc<Mutex<Hub>>,
    revision: Arc<AtomicU64>,
    current: Revision,
}

/// The outcome of one transaction inside a batch, before the batch commits.
struct Applied {
    response: TxnResponse,
    events: Vec<WatchEvent>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Request>) {
        // Group commit: everything queued goes into one commit. Writers that were just
        // acknowledged need a moment to send their next transaction, so when the queue holds
        // fewer than the last batch, wait briefly (far less than an fsync) for them.
        let mut last_batch = 1;
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let deadline = std::time::Instant::now() + LINGER;
            while batch.len() < last_batch.min(MAX_BATCH) {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match rx.recv_timeout(left) {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            last_batch = batch.len();
            let t = std::time::Instant::now();
            self.commit_batch(batch);
            tracing::trace!(txns = last_batch, elapsed = ?t.elapsed(), "group commit");
        }
        tracing::debug!("store writer stopped");
    }

    fn commit_batch(&mut self, batch: Vec<Request>) {
        let results = match self.apply_batch(&batch) {
            Ok((results, revision)) => {
                self.current = revision;
                let mut hub = lock(&self.hub);
                let mut out = Vec::with_capacity(results.len());
                for r in results {
                    out.push(r.map(|a| {
                        if !a.events.is_empty() {
                            let bytes =
                                a.events.iter().map(|e| e.kv.key.len() + e.kv.value.len()).sum();
                            hub.publish(Committed {
                                revision: a.response.revision,
                                events: a.events,
                                bytes,
                            });
                        }
                        a.response
                    }));
                }
                // Published before acknowledging: a client that saw its revision can watch it.
                self.revision.store(revision, Ordering::Release);
                drop(hub);
                out
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed");
                let msg = e.to_string();
                batch
                    .iter()
                    .map(|_| Err(Error::Unavailable(Box::new(std::io::Error::other(msg.clone())))))
                    .collect()
            }
        };
        for (req, res) in batch.into_iter().zip(results) {
            // A caller that went away does not care about its result.
            let _ = req.reply.send(res);
        }
    }

    /// Applies every transaction of the batch in one redb write transaction and commits it.
    /// Returns each transaction's outcome and the new store revision.
    #[allow(clippy::type_complexity)]
    fn apply_batch(&self, batch: &[Request]) -> Result<(Vec<Result<Applied>>, Revision)> {
        let mut wtx = self.db.begin_write().map_err(redb_err)?;
        wtx.set_durability(Durability::Immediate).map_err(redb_err)?;
        let mut revision = self.current;
        let mut results = Vec::with_capacity(batch.len());
        let mut changed = false;
        {
            let mut kv = wtx.open_table(KV).map_err(redb_err)?;
            for req in batch {
                match apply_txn(&mut kv, &req.ops, revision)? {
                    Ok(applied) => {
                        changed |= !applied.events.is_empty();
                        revision = applied.response.revision;
                        results.push(Ok(applied));
                    }
                    Err(e) => results.push(Err(e)),
                }
            }
            if changed {
                let mut meta = wtx.open_table(META).map_err(redb_err)?;
                meta.insert(META_REVISION, revision).map_err(redb_err)?;
            }
        }
        if changed {
            wtx.commit().map_err(redb_err)?;
        } else {
            // Only failed or no-op transactions: nothing to make durable.
            wtx.abort().map_err(redb_err)?;
        }
        Ok((results, revision))
    }
}

/// Checks every precondition of `ops` against the current table, then applies all of them.
/// The outer error aborts the whole batch (storage failure); the inner one is this
/// transaction's own outcome (a failed precondition, nothing written).
fn apply_txn(
    kv: &mut redb::Table<&str, &[u8]>,
    ops: &[Op],
    current: Revision,
) -> Result<Result<Applied>> {
    let read = |kv: &redb::Table<&str, &[u8]>, key: &str| -> Result<Option<KeyValue>> {
        kv.get(key).map_err(redb_err)?.map(|g| decode(key, g.value())).transpose()
    };
    let mut prev = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let (key, precondition) = match op {
            Op::Put { key, precondition, .. } | Op::Delete { key, precondition } => {
                (key, precondition)
            }
        };
        let cur = read(kv, key)?;
        let ok = match precondition {
            Precondition::None => true,
            Precondition::Absent => cur.is_none(),
            Precondition::Exists => cur.is_some(),
            Precondition::ModRevision(r) => cur.as_ref().is_some_and(|c| c.mod_revision == *r),
        };
        if !ok {
            return Ok(Err(Error::PreconditionFailed {
                index,
                key: key.clone(),
                current: cur.map(Box::new),
            }));
        }
        prev.push(cur);
    }
    let changes = ops.iter().zip(&prev).any(|(op, p)| matches!(op, Op::Put { .. }) || p.is_some());
    if !changes {
        // Like etcd, a transaction that changes nothing does not take a revision.
        return Ok(Ok(Applied {
            response: TxnResponse { revision: current, prev },
            events: vec![],
        }));
    }
    let revision = current + 1;
    let mut events = Vec::with_capacity(ops.len());
    for op in ops {
        // Read again: an earlier op of this transaction may have touched the same key.
        let before = read(kv, op.key())?;
        match op {
            Op::Put { key, value, .. } => {
                let create_revision = before.as_ref().map_or(revision, |b| b.create_revision);
                kv.insert(key.as_str(), encode(create_revision, revision, value).as_slice())
                    .map_err(redb_err)?;
                events.push(WatchEvent {
                    kind: EventKind::Put,
                    kv: KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision,
                        mod_revision: revision,
                    },
                    prev: before,
                });
            }
            Op::Delete { key, .. } => {
                if let Some(b) = before {
                    kv.remove(key.as_str()).map_err(redb_err)?;
                    events.push(WatchEvent {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            key: key.clone(),
                            value: b.value.clone(),
                            create_revision: b.create_revision,
                            mod_revision: revision,
                        },
                        prev: Some(b),
                    });
                }
            }
        }
    }
    Ok(Ok(Applied { response: TxnResponse { revision, prev }, events }))
}
