//! Keeps the zone snapshot in step with the cluster: kube-rs reflectors over Services,
//! EndpointSlices, Namespaces and (only for verified pod records or autopath) Pods, and one
//! task that rebuilds the whole zone after changes and swaps it in.
//!
//! Readers never block: a rebuild makes a new `Zone` and swaps an `Arc`. Changes that arrive
//! during a rebuild coalesce into one more rebuild (`Notify` keeps one permit). Left out:
//! incremental updates (a full build of 10,000 Services takes milliseconds) and label or
//! namespace filters.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::zone::{PodMode, Zone, ZoneConfig};

fn spawn_reflector<K>(
    api: Api<K>,
    strip: fn(&mut K),
    changed: Arc<Notify>,
    cancel: CancellationToken,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).modify(strip).default_backoff(),
    );
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            let event = tokio::select! {
                () = cancel.cancelled() => return,
                event = stream.next() => event,
            };
            match event {
                Some(Ok(
                    watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone,
                )) => changed.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    // The backoff retries; the store keeps the last good state meanwhile.
                    tracing::warn!(kind = %K::kind(&K::DynamicType::default()), error = %err, "watch failed, retrying");
                }
                None => return,
            }
        }
    });
    reader
}

fn strip_service(service: &mut Service) {
    service.metadata.managed_fields = None;
    service.metadata.annotations = None;
    service.status = None;
}

fn strip_endpoint_slice(slice: &mut EndpointSlice) {
    slice.metadata.managed_fields = None;
    slice.metadata.annotations = None;
}

fn strip_namespace(namespace: &mut Namespace) {
    namespace.metadata.managed_fields = None;
    namespace.metadata.annotations = None;
    namespace.spec = None;
    namespace.status = None;
}

fn strip_pod(pod: &mut Pod) {
    // Only the namespace and the pod IPs matter here; drop the rest to save memory.
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    pod.metadata.labels = None;
    pod.metadata.owner_references = None;
    pod.spec = None;
    if let Some(status) = &mut pod.status {
        status.conditions = None;
        status.container_statuses = None;
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
    }
}

/// Watches the cluster and swaps rebuilt zones into `zone` until `cancel`; sets `ready` after
/// the first complete sync.
pub async fn run(
    client: Client,
    config: ZoneConfig,
    zone: Arc<ArcSwap<Zone>>,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let changed = Arc::new(Notify::new());
    let services = spawn_reflector(
        Api::<Service>::all(client.clone()),
        strip_service,
        changed.clone(),
        cancel.clone(),
    );
    let endpoint_slices = spawn_reflector(
        Api::<EndpointSlice>::all(client.clone()),
        strip_endpoint_slice,
        changed.clone(),
        cancel.clone(),
    );
    let namespaces = spawn_reflector(
        Api::<Namespace>::all(client.clone()),
        strip_namespace,
        changed.clone(),
        cancel.clone(),
    );
    let pods = (config.pods == PodMode::Verified || config.autopath).then(|| {
        spawn_reflector(Api::<Pod>::all(client.clone()), strip_pod, changed.clone(), cancel.clone())
    });

    let synced = async {
        let _ = services.wait_until_ready().await;
        let _ = endpoint_slices.wait_until_ready().await;
        let _ = namespaces.wait_until_ready().await;
        if let Some(pods) = &pods {
            let _ = pods.wait_until_ready().await;
        }
    };
    tokio::select! {
        () = cancel.cancelled() => return,
        () = synced => {}
    }
    tracing::info!("initial watch sync done");

    let mut serial: u32 = 1;
    loop {
        let start = Instant::now();
        let pod_state = pods.as_ref().map(Store::state).unwrap_or_default();
        let built = Zone::build(
            &services.state(),
            &endpoint_slices.state(),
            &pod_state,
            &namespaces.state(),
            &ZoneConfig { serial, ..config.clone() },
        );
        for warning in built.warnings() {
            tracing::debug!(warning, "object skipped");
        }
        let n_services = built.n_services();
        let n_names = built.n_names();
        zone.store(Arc::new(built));
        if !ready.swap(true, Ordering::AcqRel) {
            tracing::info!(n_services, n_names, "dns ready");
        }
        metrics.zone_builds.inc();
        metrics.zone_services.set(i64::try_from(n_services).unwrap_or(i64::MAX));
        metrics.programming_duration.observe(start.elapsed().as_secs_f64());
        tracing::debug!(
            n_services,
            n_names,
            elapsed_ms = start.elapsed().as_millis() as u64,
            "zone rebuilt"
        );
        serial = serial.wrapping_add(1);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = changed.notified() => {}
        }
    }
}
