//! The small runtime every controller here shares: a per-key work queue that coalesces bursts,
//! and a watch loop that turns a kube-rs watcher into `Change`s (a re-list arrives as one
//! `Resync` with the complete set).
//!
//! Leaves out: rate limiting per key (a failed key is retried after a short backoff) and leader
//! election (one controller process per cluster is assumed).

use std::collections::{HashSet, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the state stays
/// consistent because every critical section here only inserts and removes map entries).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
struct QueueState<K> {
    queue: VecDeque<K>,
    queued: HashSet<K>,
    processing: HashSet<K>,
    dirty: HashSet<K>,
}

/// A work queue of keys: a key added while queued is not added twice; a key added while being
/// processed is processed once more afterwards (client-go's workqueue semantics).
#[derive(Debug)]
pub struct WorkQueue<K> {
    state: Mutex<QueueState<K>>,
    notify: Notify,
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    pub fn new() -> Arc<Self> {
        Arc::new(WorkQueue {
            state: Mutex::new(QueueState {
                queue: VecDeque::new(),
                queued: HashSet::new(),
                processing: HashSet::new(),
                dirty: HashSet::new(),
            }),
            notify: Notify::new(),
        })
    }

    pub fn add(&self, key: K) {
        let mut s = lock(&self.state);
        if s.processing.contains(&key) {
            s.dirty.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            s.queue.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Adds the key again after `delay` (retry after a failure).
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration, cancel: CancellationToken) {
        let queue = Arc::clone(self);
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(delay) => queue.add(key),
            }
        });
    }

    /// Waits for the next key; `None` once cancelled. Call `done` when finished with it.
    pub async fn next(&self, cancel: &CancellationToken) -> Option<K> {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = lock(&self.state);
                if let Some(key) = s.queue.pop_front() {
                    s.queued.remove(&key);
                    s.processing.insert(key.clone());
                    if !s.queue.is_empty() {
                        drop(s);
                        self.notify.notify_one();
                    }
                    return Some(key);
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = notified => {}
            }
        }
    }

    pub fn done(&self, key: &K) {
        let mut s = lock(&self.state);
        s.processing.remove(key);
        if s.dirty.remove(key) && s.queued.insert(key.clone()) {
            s.queue.push_back(key.clone());
            drop(s);
            self.notify.notify_one();
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.state).queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One change seen by a watch.
#[derive(Debug)]
pub enum Change<K> {
    Apply(K),
    Delete(K),
    /// The complete current set after a (re-)list.
    Resync(Vec<K>),
}

/// Runs a watch until cancelled, handing every change to `handle`. Watch errors are logged and
/// retried with kube-rs's default backoff.
pub async fn watch<K, F>(
    api: Api<K>,
    config: watcher::Config,
    cancel: CancellationToken,
    what: &'static str,
    mut handle: F,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    F: FnMut(Change<K>) + Send,
{
    let stream = watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    let mut buffer: Vec<K> = Vec::new();
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            event = stream.next() => event,
        };
        match event {
            None => return,
            Some(Ok(watcher::Event::Apply(obj))) => handle(Change::Apply(obj)),
            Some(Ok(watcher::Event::Delete(obj))) => handle(Change::Delete(obj)),
            Some(Ok(watcher::Event::Init)) => buffer.clear(),
            Some(Ok(watcher::Event::InitApply(obj))) => buffer.push(obj),
            Some(Ok(watcher::Event::InitDone)) => {
                handle(Change::Resync(std::mem::take(&mut buffer)))
            }
            Some(Err(error)) => tracing::warn!(%error, what, "watch failed; retrying"),
        }
    }
}

/// Spawns on `tasks` a watch of `api` that hands every change to `handle` on `controller`: the
/// shape every controller's `run` shares.
pub fn spawn_watch<C, K>(
    tasks: &mut JoinSet<()>,
    controller: &Arc<C>,
    api: Api<K>,
    cancel: &CancellationToken,
    what: &'static str,
    handle: fn(&C, Change<K>),
) where
    C: Send + Sync + 'static,
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let this = Arc::clone(controller);
    let cancel = cancel.clone();
    tasks.spawn(async move {
        watch(api, watcher::Config::default(), cancel, what, move |change| handle(&this, change))
            .await
    });
}

/// `namespace/name` of an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn of<K: Resource>(obj: &K) -> Self {
        ObjectKey {
            namespace: obj.meta().namespace.clone().unwrap_or_default(),
            name: obj.meta().name.clone().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Whether `new` is not older than `old` by resourceVersion (both decimal, as etcd and svcnet
/// write them; anything else counts as newer).
pub fn not_older<K: Resource>(new: &K, old: &K) -> bool {
    let parse = |k: &K| k.meta().resource_version.as_deref().and_then(|rv| rv.parse::<u64>().ok());
    match (parse(new), parse(old)) {
        (Some(n), Some(o)) => n >= o,
        _ => true,
    }
}

/// Whether a request failed with 404 Not Found.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Whether a request failed with 409 Conflict (or AlreadyExists).
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queue_coalesces_and_reprocesses_dirty_keys() {
        let q = WorkQueue::<u32>::new();
        let cancel = CancellationToken::new();
        q.add(1);
        q.add(1);
        q.add(2);
        assert_eq!(q.len(), 2);
        let k = q.next(&cancel).await.unwrap();
        assert_eq!(k, 1);
        q.add(1);
        assert_eq!(q.len(), 1, "a key being processed is not queued twice");
        q.done(&1);
        assert_eq!(q.next(&cancel).await, Some(2));
        q.done(&2);
        assert_eq!(q.next(&cancel).await, Some(1));
        q.done(&1);
        cancel.cancel();
        assert_eq!(q.next(&cancel).await, None);
    }
}
