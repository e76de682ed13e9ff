//! Keeps the zone snapshot in step with the cluster: kube-rs reflectors over Services,
//! EndpointSlices and Namespaces, a compact watch of Pods (only for verified pod records or
//! autopath: namespace and IPs of each), and one task that applies each change to a
//! [`ZoneBuilder`] and swaps a new snapshot in.
//!
//! Readers never block: the task changes its own copy of the zone and swaps an `Arc`; the
//! snapshot shares every shard the change did not touch, so a change to one object costs what
//! that object adds to the zone (well under a millisecond at 10,000 Services and 50,000 pods,
//! `bench/dns/update_run.sh`), not a rebuild. Changes queued during an update go into the next
//! snapshot together; the UDP workers' answer caches follow the swap. A relist of a kind
//! re-reads every object of it (unchanged ones cost a comparison). Left out: label or
//! namespace filters.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::zone::{ObjectKey, PodIps, PodMode, Zone, ZoneBuilder, ZoneConfig};

/// One change the zone task applies: the key of an object to re-read from its reflector store
/// (which already holds the new state or no longer holds the object), or pods as the pod watch
/// saw them.
#[derive(Debug)]
enum Change {
    Service(ObjectKey),
    EndpointSlice(ObjectKey),
    Namespace(String),
    Pod(ObjectKey, Option<PodIps>),
    /// The pod watch relisted: every pod.
    Pods(PodMap),
    /// A reflector relisted: re-read every object of the three reflector kinds.
    Resync,
}

fn object_key<K: Resource>(object: &K) -> ObjectKey {
    (
        object.meta().namespace.clone().unwrap_or_default(),
        object.meta().name.clone().unwrap_or_default(),
    )
}

fn spawn_reflector<K>(
    api: Api<K>,
    strip: fn(&mut K),
    to_change: fn(&K) -> Change,
    changes: mpsc::UnboundedSender<Change>,
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
            let change = match event {
                Some(Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object))) => {
                    to_change(&object)
                }
                Some(Ok(watcher::Event::InitDone)) => Change::Resync,
                Some(Ok(_)) => continue,
                Some(Err(err)) => {
                    // The backoff retries; the store keeps the last good state meanwhile.
                    tracing::warn!(kind = %K::kind(&K::DynamicType::default()), error = %err, "watch failed, retrying");
                    continue;
                }
                None => return,
            };
            if changes.send(change).is_err() {
                return;
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

/// Pods as the zone needs them, keyed by (namespace, name).
type PodMap = HashMap<ObjectKey, PodIps>;

/// Watches Pods without a reflector: only namespace and IPs go to the zone task (a `Pod` value
/// is over 2 KB), which keeps them. A relist sends every pod at `InitDone`.
fn spawn_pod_watch(
    api: Api<Pod>,
    changes: mpsc::UnboundedSender<Change>,
    cancel: CancellationToken,
) {
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut relisted: Option<PodMap> = None;
        loop {
            let event = tokio::select! {
                () = cancel.cancelled() => return,
                event = stream.next() => event,
            };
            let change = match event {
                Some(Ok(watcher::Event::Init)) => {
                    relisted = Some(PodMap::new());
                    continue;
                }
                Some(Ok(watcher::Event::InitApply(pod))) => {
                    if let Some(map) = &mut relisted {
                        map.insert(object_key(&pod), PodIps::of(&pod));
                    }
                    continue;
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    Change::Pods(relisted.take().unwrap_or_default())
                }
                // Most pod updates (conditions, statuses) do not change the zone; the zone task
                // compares with what it has.
                Some(Ok(watcher::Event::Apply(pod))) => {
                    Change::Pod(object_key(&pod), Some(PodIps::of(&pod)))
                }
                Some(Ok(watcher::Event::Delete(pod))) => Change::Pod(object_key(&pod), None),
                Some(Err(err)) => {
                    tracing::warn!(kind = "Pod", error = %err, "watch failed, retrying");
                    continue;
                }
                None => return,
            };
            if changes.send(change).is_err() {
                return;
            }
        }
    });
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
    let (changes_tx, mut changes) = mpsc::unbounded_channel();
    let services = spawn_reflector(
        Api::<Service>::all(client.clone()),
        strip_service,
        |service| Change::Service(object_key(service)),
        changes_tx.clone(),
        cancel.clone(),
    );
    let endpoint_slices = spawn_reflector(
        Api::<EndpointSlice>::all(client.clone()),
        strip_endpoint_slice,
        |slice| Change::EndpointSlice(object_key(slice)),
        changes_tx.clone(),
        cancel.clone(),
    );
    let namespaces = spawn_reflector(
        Api::<Namespace>::all(client.clone()),
        strip_namespace,
        |namespace| Change::Namespace(object_key(namespace).1),
        changes_tx.clone(),
        cancel.clone(),
    );
    let watch_pods = config.pods == PodMode::Verified || config.autopath;
    if watch_pods {
        spawn_pod_watch(Api::<Pod>::all(client.clone()), changes_tx.clone(), cancel.clone());
    }
    drop(changes_tx);
    let stores = Stores { services, endpoint_slices, namespaces };

    let synced = async {
        let _ = stores.services.wait_until_ready().await;
        let _ = stores.endpoint_slices.wait_until_ready().await;
        let _ = stores.namespaces.wait_until_ready().await;
    };
    tokio::select! {
        () = cancel.cancelled() => return,
        () = synced => {}
    }
    // The first pod list, if pods are watched; other changes so far are in the stores, which
    // the first build reads.
    let mut first_pods: Option<PodMap> = None;
    while watch_pods && first_pods.is_none() {
        tokio::select! {
            () = cancel.cancelled() => return,
            change = changes.recv() => match change {
                Some(Change::Pods(pods)) => first_pods = Some(pods),
                Some(_) => {}
                None => return,
            },
        }
    }
    let mut batch: Vec<Change> = vec![Change::Resync];
    batch.extend(first_pods.map(Change::Pods));
    // Pod changes are not in any store: keep them, in order.
    while let Ok(change) = changes.try_recv() {
        if matches!(change, Change::Pod(..) | Change::Pods(_)) {
            batch.push(change);
        }
    }
    tracing::info!("initial watch sync done");

    let mut builder = ZoneBuilder::new(&config);
    let mut serial: u32 = 1;
    loop {
        let start = Instant::now();
        let full = batch.iter().any(|change| matches!(change, Change::Resync | Change::Pods(_)));
        for change in batch.drain(..) {
            match change {
                Change::Resync => stores.resync(&mut builder),
                Change::Service(key) => {
                    let service = stores.services.get(&ObjectRef::new(&key.1).within(&key.0));
                    builder.set_service(&key, service);
                }
                Change::EndpointSlice(key) => {
                    let slice = stores.endpoint_slices.get(&ObjectRef::new(&key.1).within(&key.0));
                    builder.set_endpoint_slice(&key, slice);
                }
                Change::Namespace(name) => {
                    let exists = stores.namespaces.get(&ObjectRef::new(&name)).is_some();
                    builder.set_namespace(&name, exists);
                }
                Change::Pod(key, pod) => builder.set_pod(&key, pod),
                Change::Pods(pods) => builder.set_pods(pods),
            }
        }
        if builder.changed() {
            let snapshot = builder.snapshot(serial);
            serial = serial.wrapping_add(1);
            for warning in snapshot.warnings() {
                tracing::debug!(warning, "object skipped");
            }
            let n_services = snapshot.n_services();
            let n_names = snapshot.n_names();
            zone.store(Arc::new(snapshot));
            if full {
                // A full pass frees much of the previous zone (once the UDP workers let go of
                // it); glibc would keep it mapped.
                tokio::task::spawn_blocking(crate::sys::release_free_memory);
            }
            metrics.zone_builds.inc();
            metrics.zone_services.set(i64::try_from(n_services).unwrap_or(i64::MAX));
            metrics.programming_duration.observe(start.elapsed().as_secs_f64());
            tracing::debug!(
                n_services,
                n_names,
                full,
                elapsed_us = start.elapsed().as_micros() as u64,
                "zone updated"
            );
        }
        if !ready.swap(true, Ordering::AcqRel) {
            tracing::info!(
                n_services = builder.zone().n_services(),
                n_names = builder.zone().n_names(),
                "dns ready"
            );
        }
        // Wait for a change, then take every change already queued (a burst is one snapshot).
        tokio::select! {
            () = cancel.cancelled() => return,
            change = changes.recv() => match change {
                Some(change) => batch.push(change),
                None => return,
            },
        }
        while batch.len() < MAX_BATCH
            && let Ok(change) = changes.try_recv()
        {
            batch.push(change);
        }
    }
}

/// Changes taken into one snapshot at most.
const MAX_BATCH: usize = 4096;

/// The reflector stores the zone task re-reads objects from.
struct Stores {
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    namespaces: Store<Namespace>,
}

impl Stores {
    /// Brings the builder to the stores' state: objects it holds that the stores no longer
    /// have are removed, every stored object is set (unchanged ones cost a comparison).
    fn resync(&self, builder: &mut ZoneBuilder) {
        let (service_keys, slice_keys, namespace_names) = builder.keys();
        let services = self.services.state();
        let slices = self.endpoint_slices.state();
        let namespaces = self.namespaces.state();
        let present: HashSet<ObjectKey> = services
            .iter()
            .map(|service| {
                let (ns, name) = object_key(&**service);
                (ns.to_ascii_lowercase(), name.to_ascii_lowercase())
            })
            .collect();
        for key in service_keys.iter().filter(|key| !present.contains(*key)) {
            builder.set_service(key, None);
        }
        let present: HashSet<ObjectKey> = slices.iter().map(|slice| object_key(&**slice)).collect();
        for key in slice_keys.iter().filter(|key| !present.contains(*key)) {
            builder.set_endpoint_slice(key, None);
        }
        let present: HashSet<String> = namespaces
            .iter()
            .filter_map(|ns| ns.metadata.name.as_deref().map(str::to_ascii_lowercase))
            .collect();
        for name in namespace_names.iter().filter(|name| !present.contains(*name)) {
            builder.set_namespace(name, false);
        }
        for namespace in namespaces {
            builder.set_namespace(&object_key(&*namespace).1, true);
        }
        for slice in slices {
            builder.set_endpoint_slice(&object_key(&*slice), Some(slice));
        }
        for service in services {
            builder.set_service(&object_key(&*service), Some(service));
        }
    }
}
