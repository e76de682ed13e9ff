//! Periodic compaction of the store's history, as kube-apiserver does with
//! `--etcd-compaction-interval` (default 5 minutes): without it etcd keeps every revision of every
//! object forever and its database only grows.
//!
//! Each tick compacts to the revision seen at the previous tick, so a watcher that is less than
//! one interval behind can still resume; one further behind gets `410 Gone` and re-lists, which
//! every client handles. The embedded store bounds its own history; compacting it is harmless.

use std::sync::Arc;
use std::time::Duration;

use svcnet_store::Store;
use tokio_util::sync::CancellationToken;

/// Compacts `store` every `interval` until `cancel` fires.
pub async fn run(store: Arc<dyn Store>, interval: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous: Option<u64> = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let current = match store.current_revision().await {
            Ok(revision) => revision,
            Err(error) => {
                tracing::warn!(%error, "compaction: reading the store revision failed");
                continue;
            }
        };
        if let Some(revision) = previous.filter(|&r| r > 1) {
            match store.compact(revision).await {
                Ok(()) => tracing::debug!(revision, "compacted the store history"),
                Err(error) => tracing::warn!(%error, revision, "compaction failed"),
            }
        }
        previous = Some(current);
    }
}
