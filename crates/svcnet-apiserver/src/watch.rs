//! Watch streams: newline-delimited JSON events from the watch cache.
//!
//! Follows kubectl-api.md §6 and §9: a `\n` after every event; `kind`/`apiVersion` on every
//! object including bookmarks; resourceVersion 0 or absent starts with a synthetic ADDED per
//! existing object; `sendInitialEvents` ends the initial burst with an annotated BOOKMARK; a
//! too-old resourceVersion is answered with HTTP 200 and an in-stream ERROR 410 (never an HTTP
//! 410, which kube-rs would retry forever); streams end at `timeoutSeconds` and when the client
//! goes away. Objects that start or stop matching a selector become ADDED / DELETED, as in the
//! real server.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::cache::{Broadcast, CacheEvent, CachedObject, EventType};
use crate::error::ApiError;
use crate::query::{Format, Query};
use crate::registry::Resource;
use crate::rest::{Filters, Target};
use crate::server::State;
use crate::table;

pub type WatchBody = mpsc::Receiver<Result<Bytes, Infallible>>;

struct Watcher {
    resource: &'static Resource,
    prefix: String,
    filters: Filters,
    format: Format,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    sent_columns: bool,
    last_rev: u64,
}

impl Watcher {
    fn encode(&mut self, kind: &str, obj: &CachedObject) -> Bytes {
        match self.format {
            Format::Json => {
                let mut out = Vec::with_capacity(obj.json.len() + 32);
                out.extend_from_slice(b"{\"type\":\"");
                out.extend_from_slice(kind.as_bytes());
                out.extend_from_slice(b"\",\"object\":");
                out.extend_from_slice(&obj.json);
                out.extend_from_slice(b"}\n");
                Bytes::from(out)
            }
            Format::Table(include) => {
                let t = table::render(
                    self.resource,
                    &[&obj.value],
                    include,
                    &obj.rev.to_string(),
                    !self.sent_columns,
                );
                self.sent_columns = true;
                line(&json!({"type": kind, "object": t}))
            }
        }
    }

    async fn send(&self, bytes: Bytes) -> bool {
        self.tx.send(Ok(bytes)).await.is_ok()
    }

    /// Sends what one cache event means for this watcher. False when the client is gone.
    async fn event(&mut self, ev: &CacheEvent) -> bool {
        if ev.rev <= self.last_rev {
            return true;
        }
        self.last_rev = ev.rev;
        if !ev.obj.key.starts_with(&self.prefix) || !std::ptr::eq(ev.obj.resource, self.resource) {
            return true;
        }
        let now = self.filters.matches(self.resource, &ev.obj.value);
        let before =
            ev.prev.as_ref().is_some_and(|p| self.filters.matches(self.resource, &p.value));
        let kind = match ev.kind {
            EventType::Added if now => "ADDED",
            EventType::Modified if now && before => "MODIFIED",
            EventType::Modified if now => "ADDED",
            EventType::Modified if before => "DELETED",
            EventType::Deleted if now => "DELETED",
            _ => return true,
        };
        let bytes = self.encode(kind, &ev.obj);
        self.send(bytes).await
    }

    fn bookmark(&self, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": self.last_rev.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = match self.format {
            Format::Json => {
                json!({"kind": self.resource.kind, "apiVersion": self.resource.api_version(), "metadata": meta})
            }
            Format::Table(_) => {
                json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "rows": []})
            }
        };
        line(&json!({"type": "BOOKMARK", "object": object}))
    }
}

fn line(v: &Value) -> Bytes {
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

fn expired_event(msg: String) -> Bytes {
    line(&json!({"type": "ERROR", "object": ApiError::expired(msg).status()}))
}

enum Start {
    /// Synthetic ADDED for these objects, then events after `rev`.
    Snapshot { objects: Vec<Arc<CachedObject>>, rev: u64, initial_end: bool },
    /// These buffered events, then live ones.
    Resume { events: Vec<Arc<CacheEvent>>, rev: u64 },
}

/// Starts a watch; the returned receiver is the response body.
pub async fn watch(
    state: &Arc<State>,
    target: &Target,
    query: &Query,
    format: Format,
) -> Result<WatchBody, ApiError> {
    let resource = target.resource;
    let q = query;
    let mut filters = Filters::parse(resource, q)?;
    if let Some(name) = &target.name {
        // The deprecated single-object watch: same as fieldSelector=metadata.name=NAME.
        filters.fields.requirements.push(svcnet_api::selector::FieldRequirement {
            field: "metadata.name".into(),
            value: name.clone(),
            negated: false,
        });
    }
    let bookmarks = q.flag("allowWatchBookmarks");
    let send_initial = q.get("sendInitialEvents").map(|v| v == "true");
    let rv = q.value("resourceVersion").map(str::to_string);
    if send_initial.is_some()
        && (q.get("resourceVersionMatch") != Some("NotOlderThan") || !bookmarks)
    {
        return Err(ApiError::invalid_options(
            "ListOptions",
            &[svcnet_api::FieldError::forbidden(
                svcnet_api::FieldPath::new("sendInitialEvents"),
                "sendInitialEvents is forbidden for watch unless resourceVersionMatch is set to NotOlderThan and allowWatchBookmarks is true",
            )],
        ));
    }
    let timeout = q
        .value("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map(Duration::from_secs);
    let prefix = resource.collection_prefix(target.namespace.as_deref());

    let (tx, rx) = mpsc::channel(512);
    let (start, sub) = match (send_initial, rv.as_deref()) {
        (Some(true), _) | (None, None | Some("0")) => {
            if rv.is_none() || send_initial == Some(true) {
                // "Most recent": make the snapshot at least as new as the store.
                let current = state.store.current_revision().await?;
                state.cache.wait_for(current, Duration::from_secs(1)).await;
            }
            let (objects, rev, sub) = state.cache.snapshot_and_subscribe(&prefix);
            (Start::Snapshot { objects, rev, initial_end: send_initial == Some(true) }, sub)
        }
        (_, rv) => {
            let requested: u64 = match rv {
                Some(r) => r
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid resource version: {r}")))?,
                None => state.cache.rev(),
            };
            match state.cache.subscribe_from(requested) {
                Ok((events, _, sub)) => (Start::Resume { events, rev: requested }, sub),
                Err(too_old) => {
                    let _ = tx.try_send(Ok(expired_event(format!(
                        "too old resource version: {requested} ({})",
                        too_old.oldest + 1
                    ))));
                    return Ok(rx);
                }
            }
        }
    };
    let watcher =
        Watcher { resource, prefix, filters, format, tx, sent_columns: false, last_rev: 0 };
    let interval = state.config.bookmark_interval;
    let cancel = state.cancel.clone();
    let cache = state.cache.clone();
    tokio::spawn(async move {
        let fut = run(watcher, start, sub, bookmarks, interval, cache);
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = async {
                match timeout {
                    Some(t) => { let _ = tokio::time::timeout(t, fut).await; }
                    None => fut.await,
                }
            } => {}
        }
    });
    Ok(rx)
}

async fn run(
    mut w: Watcher,
    start: Start,
    mut sub: broadcast::Receiver<Broadcast>,
    bookmarks: bool,
    interval: Duration,
    cache: Arc<crate::cache::WatchCache>,
) {
    match start {
        Start::Snapshot { objects, rev, initial_end } => {
            for o in objects.iter() {
                if !w.filters.matches(w.resource, &o.value) {
                    continue;
                }
                let b = w.encode("ADDED", o);
                if !w.send(b).await {
                    return;
                }
            }
            w.last_rev = rev;
            if initial_end {
                let b = w.bookmark(true);
                if !w.send(b).await {
                    return;
                }
            }
        }
        Start::Resume { events, rev } => {
            w.last_rev = rev;
            for ev in events {
                if !w.event(&ev).await {
                    return;
                }
            }
        }
    }
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            _ = w.tx.closed() => return,
            _ = ticker.tick(), if bookmarks => {
                let b = w.bookmark(false);
                if !w.send(b).await {
                    return;
                }
            }
            msg = sub.recv() => match msg {
                Ok(Broadcast::Event(ev)) => {
                    if !w.event(&ev).await {
                        return;
                    }
                }
                Ok(Broadcast::Reset) | Err(broadcast::error::RecvError::Closed) => {
                    let _ = w.send(expired_event("the watch cache was reset; re-list".into())).await;
                    return;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow for the broadcast: catch up from the ring buffer.
                    match cache.subscribe_from(w.last_rev) {
                        Ok((events, _, new_sub)) => {
                            sub = new_sub;
                            for ev in events {
                                if !w.event(&ev).await {
                                    return;
                                }
                            }
                        }
                        Err(too_old) => {
                            let _ = w.send(expired_event(format!("too old resource version: {} ({})", w.last_rev, too_old.oldest + 1))).await;
                            return;
                        }
                    }
                }
            }
        }
    }
}
