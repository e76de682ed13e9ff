//! The etcd backend: the same `Store` contract on an etcd v3 cluster (3.4 or newer), so that
//! several API servers can share one store.
//!
//! Our revision is etcd's `header.revision`; a transaction is one etcd `Txn` whose compares
//! are the preconditions (`Absent` = `create_revision == 0`, `Exists` = `create_revision > 0`,
//! `ModRevision(n)` = `mod_revision == n`) and whose failure branch reads every key, so the
//! failing op is named from the same atomic snapshot. Every key lives under a prefix.
//!
//! What it leaves out: leases, TLS and auth (a loopback or otherwise trusted etcd is assumed),
//! and the 3.7-only `RangeStream` (`get_stream`) — lists page with plain ranges instead.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KvClient,
    PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use std::collections::VecDeque;

use crate::{
    Error, EventKind, KeyValue, Op, Precondition, Result, Revision, Store, TxnResponse, WatchEvent,
    WatchStream,
};

/// The key prefix `svcnet::open` uses for `etcd:` specs.
pub const DEFAULT_PREFIX: &str = "/svcnet";

/// Keys per page when listing.
const PAGE: i64 = 2000;
/// Largest gRPC message accepted from etcd (a page of large objects).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;
/// How long `connect` waits for the cluster to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A store on an etcd cluster, with every key under `prefix`.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn unavailable(e: etcd_client::Error) -> Error {
    // A request over etcd's size limits: INVALID_ARGUMENT (3, "request is too large") or
    // RESOURCE_EXHAUSTED (8) from gRPC's message limit. Retrying cannot help.
    if let etcd_client::Error::GRpcStatus(s) = &e
        && (s.code() as i32 == 3
            || (s.code() as i32 == 8 && s.message().contains("larger than max")))
    {
        return Error::TooLarge(format!("etcd: {}", s.message()));
    }
    Error::Unavailable(Box::new(e))
}

fn other(msg: impl Into<String>) -> Error {
    Error::Unavailable(Box::new(std::io::Error::other(msg.into())))
}

fn to_rev(r: i64) -> Revision {
    u64::try_from(r).unwrap_or(0)
}

fn from_rev(r: Revision) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

/// The first key after every key starting with `prefix` (etcd's prefix range end).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every key: etcd reads an end of "\0" as "to the end of the keyspace".
    vec![0]
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (e.g. `http://127.0.0.1:2379`) and checks that it
    /// answers. Every key of this store is stored as `prefix + key`.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let client = tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(endpoints, Some(opts)))
            .await
            .map_err(|_| other(format!("connecting to etcd at {endpoints:?} timed out")))?
            .map_err(unavailable)?;
        let store = Self { client, prefix: prefix.to_owned() };
        tokio::time::timeout(CONNECT_TIMEOUT, store.revision())
            .await
            .map_err(|_| other(format!("etcd at {endpoints:?} did not answer")))??;
        Ok(store)
    }

    /// The underlying client, for callers that need more of etcd (e.g. tests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn kv(&self) -> KvClient {
        self.client.kv_client().max_decoding_message_size(MAX_MESSAGE)
    }

    fn full(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(self.prefix.as_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    fn convert(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        let key = kv
            .key()
            .strip_prefix(self.prefix.as_bytes())
            .ok_or_else(|| Error::Corrupt("etcd returned a key outside the prefix".into()))?;
        let key = std::str::from_utf8(key)
            .map_err(|_| Error::Corrupt("etcd returned a key that is not UTF-8".into()))?;
        Ok(KeyValue {
            key: key.to_owned(),
            value: kv.value().to_vec(),
            create_revision: to_rev(kv.create_revision()),
            mod_revision: to_rev(kv.mod_revision()),
        })
    }

    async fn revision(&self) -> Result<Revision> {
        let resp = self
            .kv()
            .get(self.prefix.as_bytes(), Some(GetOptions::new().with_count_only()))
            .await
            .map_err(unavailable)?;
        resp.header()
            .map(|h| to_rev(h.revision()))
            .ok_or_else(|| other("etcd response without header"))
    }

    async fn get_impl(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self.kv().get(self.full(key), None).await.map_err(unavailable)?;
        resp.kvs().first().map(|kv| self.convert(kv)).transpose()
    }

    async fn list_impl(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        let start = self.full(prefix);
        let end = prefix_end(&start);
        let mut kv = self.kv();
        let mut from = if start.is_empty() { vec![0] } else { start };
        let mut revision = 0;
        let mut out = Vec::new();
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                opts = opts.with_revision(from_rev(revision));
            }
            let resp = kv.get(from.clone(), Some(opts)).await.map_err(unavailable)?;
            if revision == 0 {
                revision = resp
                    .header()
                    .map(|h| to_rev(h.revision()))
                    .ok_or_else(|| other("etcd response without header"))?;
            }
            for item in resp.kvs() {
                out.push(self.convert(item)?);
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok((out, revision))
    }

    async fn txn_impl(&self, ops: Vec<Op>) -> Result<TxnResponse> {
        crate::check_distinct_keys(&ops)?;
        let mut compares = Vec::new();
        let mut success = Vec::with_capacity(ops.len());
        let mut failure = Vec::with_capacity(ops.len());
        for op in &ops {
            let key = self.full(op.key());
            let precondition = match op {
                Op::Put { value, precondition, .. } => {
                    let opts = PutOptions::new().with_prev_key();
                    success.push(TxnOp::put(key.clone(), value.clone(), Some(opts)));
                    precondition
                }
                Op::Delete { precondition, .. } => {
                    let opts = DeleteOptions::new().with_prev_key();
                    success.push(TxnOp::delete(key.clone(), Some(opts)));
                    precondition
                }
            };
            match precondition {
                Precondition::None => {}
                Precondition::Absent => {
                    compares.push(Compare::create_revision(key.clone(), CompareOp::Equal, 0));
                }
                Precondition::Exists => {
                    compares.push(Compare::create_revision(key.clone(), CompareOp::Greater, 0));
                }
                Precondition::ModRevision(r) => {
                    compares.push(Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        from_rev(*r),
                    ));
                }
            }
            failure.push(TxnOp::get(key, None));
        }
        let txn = Txn::new().when(compares).and_then(success).or_else(failure);
        let resp = self.kv().txn(txn).await.map_err(unavailable)?;
        let revision = resp
            .header()
            .map(|h| to_rev(h.revision()))
            .ok_or_else(|| other("etcd response without header"))?;
        let responses = resp.op_responses();
        if resp.succeeded() {
            let mut prev = Vec::with_capacity(ops.len());
            for r in &responses {
                let p = match r {
                    TxnOpResponse::Put(p) => p.prev_key(),
                    TxnOpResponse::Delete(d) => d.prev_kvs().first(),
                    _ => None,
                };
                prev.push(p.map(|kv| self.convert(kv)).transpose()?);
            }
            return Ok(TxnResponse { revision, prev });
        }
        for (index, (op, r)) in ops.iter().zip(&responses).enumerate() {
            let current = match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| self.convert(kv)).transpose()?,
                _ => None,
            };
            let precondition = match op {
                Op::Put { precondition, .. } | Op::Delete { precondition, .. } => *precondition,
            };
            let ok = match precondition {
                Precondition::None => true,
                Precondition::Absent => current.is_none(),
                Precondition::Exists => current.is_some(),
                Precondition::ModRevision(r) => {
                    current.as_ref().is_some_and(|c| c.mod_revision == r)
                }
            };
            if !ok {
                return Err(Error::PreconditionFailed {
                    index,
                    key: op.key().to_owned(),
                    current: current.map(Box::new),
                });
            }
        }
        Err(other("etcd transaction failed but every precondition holds"))
    }

    async fn watch_impl(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let start = self.full(prefix);
        // A cheap probe: reading at `after + 1` fails at once when that revision is compacted,
        // whereas the watch itself reports compaction only after etcd's next sync.
        let probe = self
            .kv()
            .get(
                start.clone(),
                Some(GetOptions::new().with_count_only().with_revision(from_rev(after + 1))),
            )
            .await;
        let compacted = matches!(&probe, Err(e) if e.to_string().contains("compacted"));
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from_rev(after + 1))
            .with_prev_key();
        let stream = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .watch(start, Some(opts))
            .await
            .map_err(unavailable)?;
        let state = EtcdWatch {
            store: self.clone(),
            stream,
            pending: VecDeque::new(),
            after,
            requested: after,
            done: false,
        };
        if compacted {
            // Read up to etcd's cancellation, which names the compaction revision.
            if let Some((Err(e), _)) = state.next().await {
                return Err(e);
            }
            return Err(Error::Compacted { requested: after, oldest: after + 1 });
        }
        Ok(Box::pin(futures::stream::unfold(state, EtcdWatch::next)))
    }

    async fn compact_impl(&self, revision: Revision) -> Result<()> {
        let opts = etcd_client::CompactionOptions::new().with_physical();
        match self.kv().compact(from_rev(revision), Some(opts)).await {
            Ok(_) => Ok(()),
            // Compacting at or below the current compaction is not an error for us.
            Err(e) if e.to_string().contains("compacted") => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}

struct EtcdWatch {
    store: EtcdStore,
    stream: etcd_client::WatchStream,
    pending: VecDeque<WatchEvent>,
    /// The revision of the last event taken into `pending`.
    after: Revision,
    requested: Revision,
    done: bool,
}

impl EtcdWatch {
    async fn next(mut self) -> Option<(Result<WatchEvent>, Self)> {
        loop {
            if self.done {
                return None;
            }
            if let Some(ev) = self.pending.pop_front() {
                return Some((Ok(ev), self));
            }
            let err = match self.stream.message().await {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        if resp.compact_revision() > 0 {
                            Error::Compacted {
                                requested: self.requested.max(self.after),
                                oldest: to_rev(resp.compact_revision()).saturating_sub(1),
                            }
                        } else {
                            other(format!("etcd cancelled the watch: {}", resp.cancel_reason()))
                        }
                    } else {
                        match self.take_events(&resp) {
                            Ok(()) => continue,
                            Err(e) => e,
                        }
                    }
                }
                Ok(None) => other("etcd closed the watch"),
                Err(e) => unavailable(e),
            };
            self.done = true;
            return Some((Err(err), self));
        }
    }

    fn take_events(&mut self, resp: &etcd_client::WatchResponse) -> Result<()> {
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let revision = to_rev(kv.mod_revision());
            if revision <= self.requested {
                continue;
            }
            let prev = ev.prev_kv().map(|p| self.store.convert(p)).transpose()?;
            let event = match ev.event_type() {
                EventType::Put => {
                    WatchEvent { kind: EventKind::Put, kv: self.store.convert(kv)?, prev }
                }
                EventType::Delete => {
                    let mut kv = self.store.convert(kv)?;
                    if let Some(p) = &prev {
                        kv.value = p.value.clone();
                        kv.create_revision = p.create_revision;
                    }
                    WatchEvent { kind: EventKind::Delete, kv, prev }
                }
            };
            self.after = revision;
            self.pending.push_back(event);
        }
        Ok(())
    }
}

impl Store for EtcdStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>>> {
        self.get_impl(key).boxed()
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<(Vec<KeyValue>, Revision)>> {
        self.list_impl(prefix).boxed()
    }

    fn txn(&self, ops: Vec<Op>) -> BoxFuture<'_, Result<TxnResponse>> {
        self.txn_impl(ops).boxed()
    }

    fn watch<'a>(&'a self, prefix: &'a str, after: Revision) -> BoxFuture<'a, Result<WatchStream>> {
        self.watch_impl(prefix, after).boxed()
    }

    fn current_revision(&self) -> BoxFuture<'_, Result<Revision>> {
        self.revision().boxed()
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>> {
        self.compact_impl(revision).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/a"), b"/b".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
