//! The watch cache: one store watch feeding every list and watch of the server.
//!
//! It keeps the current objects decoded and pre-serialized (so a list of 10,000 Services is a
//! copy of bytes), a ring buffer of recent events (so a watch can resume from a recent
//! resourceVersion) and a broadcast channel fanning each event out to all watchers at once.
//! What it leaves out: writes (they go to the store, and come back here through the watch) and
//! keys that are not objects of a served resource (IPAM allocations).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use svcnet_store::{EventKind, KeyValue, Store};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::object;
use crate::registry::{self, Resource};

/// One object as the cache holds it: decoded, with `metadata.resourceVersion` set, and its JSON.
#[derive(Debug)]
pub struct CachedObject {
    pub key: String,
    pub resource: &'static Resource,
    pub rev: u64,
    pub value: Value,
    pub json: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
pub struct CacheEvent {
    pub rev: u64,
    pub kind: EventType,
    pub obj: Arc<CachedObject>,
    pub prev: Option<Arc<CachedObject>>,
}

/// What the broadcast channel carries.
#[derive(Debug, Clone)]
pub enum Broadcast {
    Event(Arc<CacheEvent>),
    /// The cache lost continuity with the store (compaction): every watcher must end with 410.
    Reset,
}

struct Inner {
    /// The revision of the last event applied (or of the initial list).
    rev: u64,
    /// Events with a revision greater than this are all in `ring`.
    oldest: u64,
    state: BTreeMap<String, Arc<CachedObject>>,
    ring: VecDeque<Arc<CacheEvent>>,
}

pub struct WatchCache {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Broadcast>,
    rev_tx: watch::Sender<u64>,
    capacity: usize,
}

/// The buffered events after a resourceVersion, the cache revision, and a live subscription.
pub type Resume = (Vec<Arc<CacheEvent>>, u64, broadcast::Receiver<Broadcast>);

/// A watch that could not start because `rv` is older than the history kept.
#[derive(Debug)]
pub struct TooOld {
    pub oldest: u64,
}

const PREFIX: &str = "/registry/";

/// Decodes a stored value into a cached object with `rev` as its resourceVersion.
pub fn decode(key: &str, value: &[u8], rev: u64) -> Option<Arc<CachedObject>> {
    let (resource, _, _) = registry::from_key(key)?;
    let mut v: Value = match serde_json::from_slice(value) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(key, error = %e, "undecodable object in the store; skipped");
            return None;
        }
    };
    object::set_resource_version(&mut v, rev);
    let json = Bytes::from(serde_json::to_vec(&v).ok()?);
    Some(Arc::new(CachedObject { key: key.to_string(), resource, rev, value: v, json }))
}

impl WatchCache {
    /// Lists the store and starts following it. Returns once the initial list is loaded.
    pub async fn start(
        store: Arc<dyn Store>,
        capacity: usize,
        cancel: CancellationToken,
    ) -> svcnet_store::Result<Arc<WatchCache>> {
        let (kvs, rev) = store.list(PREFIX).await?;
        let state = build_state(&kvs);
        let (tx, _) = broadcast::channel(8192);
        let (rev_tx, _) = watch::channel(rev);
        let cache = Arc::new(WatchCache {
            inner: Mutex::new(Inner {
                rev,
                oldest: rev,
                state,
                ring: VecDeque::with_capacity(capacity),
            }),
            tx,
            rev_tx,
            capacity,
        });
        let follower = cache.clone();
        tokio::spawn(async move { follower.follow(store, cancel).await });
        Ok(cache)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked while holding it; the data is
        // still a consistent map (every mutation is a single insert or remove).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn follow(self: Arc<Self>, store: Arc<dyn Store>, cancel: CancellationToken) {
        loop {
            let from = self.lock().rev;
            let stream = tokio::select! {
                _ = cancel.cancelled() => return,
                s = store.watch(PREFIX, from) => s,
            };
            let mut stream = match stream {
                Ok(s) => s,
                Err(svcnet_store::Error::Compacted { .. }) => {
                    self.relist(&store).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watch cache: store watch failed; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => return,
                    n = stream.next() => n,
                };
                match next {
                    Some(Ok(ev)) => self.apply(ev),
                    Some(Err(svcnet_store::Error::Compacted { .. })) => {
                        self.relist(&store).await;
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "watch cache: store watch ended; re-watching");
                        break;
                    }
                    None => break,
                }
            }
        }
    }

    /// Lost continuity: reload everything and tell every watcher to start over.
    async fn relist(&self, store: &Arc<dyn Store>) {
        loop {
            match store.list(PREFIX).await {
                Ok((kvs, rev)) => {
                    let state = build_state(&kvs);
                    let mut inner = self.lock();
                    inner.state = state;
                    inner.rev = rev;
                    inner.oldest = rev;
                    inner.ring.clear();
                    let _ = self.tx.send(Broadcast::Reset);
                    drop(inner);
                    self.rev_tx.send_replace(rev);
                    tracing::warn!(rev, "watch cache re-listed after losing the store history");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watch cache: re-list failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    fn apply(&self, ev: svcnet_store::WatchEvent) {
        let rev = ev.kv.mod_revision;
        let mut inner = self.lock();
        if rev < inner.rev {
            return;
        }
        let key = ev.kv.key.clone();
        let event = match ev.kind {
            EventKind::Put => {
                let Some(obj) = decode(&key, &ev.kv.value, rev) else {
                    inner.rev = rev;
                    drop(inner);
                    self.rev_tx.send_replace(rev);
                    return;
                };
                let prev = inner.state.insert(key, obj.clone());
                let kind = if prev.is_some() { EventType::Modified } else { EventType::Added };
                CacheEvent { rev, kind, obj, prev }
            }
            EventKind::Delete => {
                let prev = inner.state.remove(&key);
                let last = match (&prev, ev.prev.as_ref()) {
                    (Some(p), _) => Some(p.value.clone()),
                    (None, Some(kv)) => serde_json::from_slice::<Value>(&kv.value).ok(),
                    (None, None) => serde_json::from_slice::<Value>(&ev.kv.value).ok(),
                };
                let Some(mut last) = last.filter(|_| registry::from_key(&key).is_some()) else {
                    inner.rev = rev;
                    drop(inner);
                    self.rev_tx.send_replace(rev);
                    return;
                };
                object::set_resource_version(&mut last, rev);
                let Some(obj) = serde_json::to_vec(&last)
                    .ok()
                    .and_then(|j| registry::from_key(&key).map(|(r, _, _)| (r, j)))
                    .map(|(resource, j)| {
                        Arc::new(CachedObject {
                            key: key.clone(),
                            resource,
                            rev,
                            value: last,
                            json: Bytes::from(j),
                        })
                    })
                else {
                    return;
                };
                CacheEvent { rev, kind: EventType::Deleted, obj, prev }
            }
        };
        let event = Arc::new(event);
        inner.rev = rev;
        if inner.ring.len() >= self.capacity
            && let Some(old) = inner.ring.pop_front()
        {
            inner.oldest = old.rev;
        }
        inner.ring.push_back(event.clone());
        let _ = self.tx.send(Broadcast::Event(event));
        drop(inner);
        self.rev_tx.send_replace(rev);
    }

    /// The revision of the last applied event.
    pub fn rev(&self) -> u64 {
        self.lock().rev
    }

    /// Waits until the cache has applied everything up to `rev`; false on timeout.
    pub async fn wait_for(&self, rev: u64, timeout: Duration) -> bool {
        let mut rx = self.rev_tx.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= rev))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false)
    }

    /// The current objects under `prefix`, in key order, and the revision they reflect.
    pub fn snapshot(&self, prefix: &str) -> (Vec<Arc<CachedObject>>, u64) {
        let inner = self.lock();
        let items = inner
            .state
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rev)
    }

    /// One object from the cache.
    pub fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        self.lock().state.get(key).cloned()
    }

    /// The current objects under `prefix` plus a subscription for every later event.
    pub fn snapshot_and_subscribe(
        &self,
        prefix: &str,
    ) -> (Vec<Arc<CachedObject>>, u64, broadcast::Receiver<Broadcast>) {
        let inner = self.lock();
        let items = inner
            .state
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        let rx = self.tx.subscribe();
        (items, inner.rev, rx)
    }

    /// The buffered events after `rv` plus a subscription for every later one.
    pub fn subscribe_from(&self, rv: u64) -> Result<Resume, TooOld> {
        let inner = self.lock();
        if rv < inner.oldest {
            return Err(TooOld { oldest: inner.oldest });
        }
        let skip = inner.ring.partition_point(|e| e.rev <= rv);
        let events = inner.ring.iter().skip(skip).cloned().collect();
        let rx = self.tx.subscribe();
        Ok((events, inner.rev, rx))
    }
}

fn build_state(kvs: &[KeyValue]) -> BTreeMap<String, Arc<CachedObject>> {
    let mut state = BTreeMap::new();
    for kv in kvs {
        if let Some(obj) = decode(&kv.key, &kv.value, kv.mod_revision) {
            state.insert(kv.key.clone(), obj);
        }
    }
    state
}
