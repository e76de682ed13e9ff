//! Namespaces: the four that exist from the start, and deletion of a Terminating namespace's
//! contents (the job of kube-controller-manager's namespace controller, done in-process here).
//!
//! A deleted namespace first gets `deletionTimestamp` and phase Terminating (`rest::delete`);
//! the deleter then deletes every namespaced object in it, waits until none is left (objects
//! with finalizers stay until their owners remove them) and finally removes the namespace.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use svcnet_store::{Op, Precondition};
use tokio::sync::mpsc;

use crate::error::{ApiError, Error};
use crate::registry::{self, RESOURCES};
use crate::rest::{self, DeleteOptions, Target};
use crate::server::State;
use crate::{kinds, object};

pub const INITIAL: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

pub async fn bootstrap(state: &Arc<State>) -> crate::Result<()> {
    let ns = registry::find("", "v1", "namespaces")
        .ok_or_else(|| Error::Bootstrap("namespaces not registered".into()))?;
    for name in INITIAL {
        let key = ns.key(None, name);
        if state.store.get(&key).await?.is_some() {
            continue;
        }
        let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}});
        rest::stamp_new(&mut obj, ns);
        kinds::apply_defaults(ns, &mut obj).map_err(|e| Error::Bootstrap(e.message))?;
        let value = serde_json::to_vec(&obj).map_err(|e| Error::Bootstrap(e.to_string()))?;
        match state
            .store
            .txn(vec![Op::Put { key, value, precondition: Precondition::Absent }])
            .await
        {
            Ok(_) | Err(svcnet_store::Error::PreconditionFailed { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Runs until cancelled: deletes the contents of each namespace sent on `rx`, and of every
/// namespace found Terminating at start-up.
pub async fn run_deleter(state: Arc<State>, mut rx: mpsc::UnboundedReceiver<String>) {
    if let Some(ns) = registry::find("", "v1", "namespaces") {
        let (objs, _) = state.cache.snapshot(&ns.prefix());
        for o in objs {
            if object::deletion_timestamp(&o.value).is_some() {
                let _ = state.namespace_deleter.send(object::name(&o.value).to_string());
            }
        }
    }
    let mut running = std::collections::HashSet::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    loop {
        tokio::select! {
            _ = state.cancel.cancelled() => return,
            Some(name) = rx.recv() => {
                if running.insert(name.clone()) {
                    let state = state.clone();
                    let done = done_tx.clone();
                    tokio::spawn(async move {
                        finalize(&state, &name).await;
                        let _ = done.send(name);
                    });
                }
            }
            Some(name) = done_rx.recv() => { running.remove(&name); }
        }
    }
}

async fn finalize(state: &Arc<State>, name: &str) {
    let mut delay = Duration::from_millis(50);
    loop {
        if state.cancel.is_cancelled() {
            return;
        }
        match finalize_once(state, name).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(namespace = name, error = %e.message, "namespace deletion step failed; retrying")
            }
        }
        tokio::select! {
            _ = state.cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// One pass; true once the namespace is gone.
async fn finalize_once(state: &Arc<State>, name: &str) -> Result<bool, ApiError> {
    let ns = registry::find("", "v1", "namespaces")
        .ok_or_else(|| ApiError::internal("namespaces not registered"))?;
    let Some(kv) = state.store.get(&ns.key(None, name)).await? else { return Ok(true) };
    let nsobj: Value = serde_json::from_slice(&kv.value).map_err(ApiError::internal)?;
    if object::deletion_timestamp(&nsobj).is_none() {
        return Ok(true);
    }
    let mut remaining = 0usize;
    for resource in RESOURCES.iter().filter(|r| r.namespaced) {
        let prefix = resource.collection_prefix(Some(name));
        let (kvs, _) = state.store.list(&prefix).await?;
        for kv in kvs {
            remaining += 1;
            let Some((_, _, obj_name)) = registry::from_key(&kv.key) else { continue };
            let target = Target {
                resource,
                namespace: Some(name.to_string()),
                name: Some(obj_name.to_string()),
                sub: None,
            };
            // Pods go immediately: their namespace is going away.
            let opts = DeleteOptions { grace_period: Some(0), ..Default::default() };
            match rest::delete(state, &target, &opts).await {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => {
                    tracing::debug!(key = %kv.key, error = %e.message, "namespace content delete failed")
                }
            }
        }
    }
    if remaining > 0 {
        return Ok(false);
    }
    match state
        .store
        .txn(vec![Op::Delete {
            key: ns.key(None, name),
            precondition: Precondition::ModRevision(kv.mod_revision),
        }])
        .await
    {
        Ok(_) => {
            tracing::info!(namespace = name, "namespace deleted");
            Ok(true)
        }
        Err(svcnet_store::Error::PreconditionFailed { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
