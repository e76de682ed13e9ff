//! The EndpointSlice controller: watches Services, Pods, Nodes, EndpointSlices and Endpoints and
//! keeps every selector Service's slices (and its legacy Endpoints) equal to `desired_slices`.
//!
//! Events map to Service keys on a work queue that coalesces bursts; a worker computes the
//! changes under the cache lock (pure and fast) and writes them without it. What it writes goes
//! straight into its cache, so a second reconcile before the watch echo does not duplicate a
//! slice. Services that disappear lose their managed slices (svcnet's API server has no garbage
//! collector to follow ownerReferences).
//!
//! Leaves out: the EndpointSlice mirroring controller and per-key rate limiting.

pub mod desired;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use desired::{SliceChanges, desired_endpoints, desired_slices};

use crate::runtime::{Change, ObjectKey, WorkQueue, is_not_found, lock, not_older, spawn_watch};

/// Settings of the EndpointSlice controller.
#[derive(Debug, Clone)]
pub struct EndpointSliceConfig {
    /// `--max-endpoints-per-slice` (kube-controller-manager's default 100).
    pub max_endpoints_per_slice: usize,
    /// Parallel reconciles (`--concurrent-service-endpoint-syncs`).
    pub workers: usize,
    /// Also maintain the legacy Endpoints objects.
    pub mirror_endpoints: bool,
}

impl Default for EndpointSliceConfig {
    fn default() -> Self {
        EndpointSliceConfig { max_endpoints_per_slice: 100, workers: 2, mirror_endpoints: true }
    }
}

const WATCHES: usize = 5;

/// (namespace, label key, label value).
type LabelKey = (String, String, String);

/// The first (in key order) pair of the Service's selector, if it selects pods.
fn first_selector_pair(svc: &Service) -> Option<LabelKey> {
    if !desired::has_selector(svc) {
        return None;
    }
    let (k, v) = svc.spec.as_ref()?.selector.as_ref()?.iter().next()?;
    Some((svc.metadata.namespace.clone().unwrap_or_default(), k.clone(), v.clone()))
}

fn pod_label_keys(pod: &Pod) -> Vec<LabelKey> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    pod.metadata.labels.iter().flatten().map(|(k, v)| (ns.clone(), k.clone(), v.clone())).collect()
}

/// The controller's view of the cluster, fed by the watches.
#[derive(Default)]
struct State {
    services: HashMap<ObjectKey, Arc<Service>>,
    services_by_ns: HashMap<String, HashSet<String>>,
    pods: HashMap<ObjectKey, Arc<Pod>>,
    pods_by_ns: HashMap<String, HashSet<String>>,
    pods_by_node: HashMap<String, HashSet<ObjectKey>>,
    /// Services whose slices may hold the pod (a superset).
    pod_services: HashMap<ObjectKey, HashSet<ObjectKey>>,
    nodes: BTreeMap<String, Node>,
    /// Services by the first pair of their selector, so a pod event looks only at Services
    /// that can match one of its labels.
    selector_index: HashMap<LabelKey, HashSet<String>>,
    /// Pods by each of their labels, so a reconcile looks only at candidate pods.
    pod_label_index: HashMap<LabelKey, HashSet<String>>,
    /// Slices by the Service they name (`kubernetes.io/service-name`), then by slice name.
    slices: HashMap<ObjectKey, BTreeMap<String, Arc<EndpointSlice>>>,
    /// Slices this controller deleted whose Delete event has not arrived yet.
    deleted_slices: HashSet<ObjectKey>,
    endpoints: HashMap<ObjectKey, Arc<Endpoints>>,
    synced: [bool; WATCHES],
}

impl State {
    fn all_synced(&self) -> bool {
        self.synced.iter().all(|s| *s)
    }

    fn matching_services(&self, pod: &Pod) -> HashSet<ObjectKey> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let mut out = HashSet::new();
        for label in pod_label_keys(pod) {
            for name in self.selector_index.get(&label).into_iter().flatten() {
                let key = ObjectKey { namespace: ns.clone(), name: name.clone() };
                if let Some(svc) = self.services.get(&key)
                    && desired::selects(svc, pod)
                {
                    out.insert(key);
                }
            }
        }
        out
    }

    fn put_service(&mut self, svc: Service) -> ObjectKey {
        let key = ObjectKey::of(&svc);
        self.unindex_service(&key);
        if let Some(pair) = first_selector_pair(&svc) {
            self.selector_index.entry(pair).or_default().insert(key.name.clone());
        }
        self.services_by_ns.entry(key.namespace.clone()).or_default().insert(key.name.clone());
        self.services.insert(key.clone(), Arc::new(svc));
        key
    }

    fn unindex_service(&mut self, key: &ObjectKey) {
        if let Some(pair) = self.services.get(key).and_then(|old| first_selector_pair(old))
            && let Some(set) = self.selector_index.get_mut(&pair)
        {
            set.remove(&key.name);
            if set.is_empty() {
                self.selector_index.remove(&pair);
            }
        }
    }

    /// The pods that may match the Service (a superset; callers filter with `selects`).
    fn candidate_pods(&self, svc: &Service) -> Vec<Arc<Pod>> {
        let Some(pair) = first_selector_pair(svc) else { return Vec::new() };
        let ns = pair.0.clone();
        self.pod_label_index
            .get(&pair)
            .into_iter()
            .flatten()
            .filter_map(|name| {
                self.pods.get(&ObjectKey { namespace: ns.clone(), name: name.clone() }).cloned()
            })
            .collect()
    }

    fn remove_service(&mut self, key: &ObjectKey) {
        self.unindex_service(key);
        self.services.remove(key);
        if let Some(set) = self.services_by_ns.get_mut(&key.namespace) {
            set.remove(&key.name);
        }
    }

    /// Stores the pod and returns the Services to reconcile.
    fn put_pod(&mut self, pod: Pod) -> HashSet<ObjectKey> {
        let key = ObjectKey::of(&pod);
        let mut affected = self.remove_pod(&key);
        let matching = self.matching_services(&pod);
        affected.extend(matching.iter().cloned());
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
            self.pods_by_node.entry(node).or_default().insert(key.clone());
        }
        self.pods_by_ns.entry(key.namespace.clone()).or_default().insert(key.name.clone());
        for label in pod_label_keys(&pod) {
            self.pod_label_index.entry(label).or_default().insert(key.name.clone());
        }
        // Services that stop matching are in `affected` and get reconciled now; only the
        // current matches need remembering.
        self.pod_services.insert(key.clone(), matching);
        self.pods.insert(key, Arc::new(pod));
        affected
    }

    fn remove_pod(&mut self, key: &ObjectKey) -> HashSet<ObjectKey> {
        let Some(old) = self.pods.remove(key) else { return HashSet::new() };
        if let Some(node) = old.spec.as_ref().and_then(|s| s.node_name.as_ref())
            && let Some(set) = self.pods_by_node.get_mut(node)
        {
            set.remove(key);
        }
        if let Some(set) = self.pods_by_ns.get_mut(&key.namespace) {
            set.remove(&key.name);
        }
        for label in pod_label_keys(&old) {
            if let Some(set) = self.pod_label_index.get_mut(&label) {
                set.remove(&key.name);
                if set.is_empty() {
                    self.pod_label_index.remove(&label);
                }
            }
        }
        let mut affected = self.pod_services.remove(key).unwrap_or_default();
        affected.extend(self.matching_services(&old));
        affected
    }

    fn services_on_node(&self, node: &str) -> HashSet<ObjectKey> {
        let mut out = HashSet::new();
        for pod in self.pods_by_node.get(node).into_iter().flatten() {
            out.extend(self.pod_services.get(pod).into_iter().flatten().cloned());
        }
        out
    }

    fn slice_service(slice: &EndpointSlice) -> Option<ObjectKey> {
        let name = slice.metadata.labels.as_ref()?.get(desired::LABEL_SERVICE_NAME)?.clone();
        Some(ObjectKey { namespace: slice.metadata.namespace.clone().unwrap_or_default(), name })
    }

    /// Stores a slice unless the cache already holds a newer version; returns its Service.
    fn put_slice(&mut self, slice: EndpointSlice, from_watch: bool) -> Option<ObjectKey> {
        let svc = Self::slice_service(&slice)?;
        let name = slice.metadata.name.clone().unwrap_or_default();
        let slice_key = ObjectKey { namespace: svc.namespace.clone(), name: name.clone() };
        if from_watch && self.deleted_slices.contains(&slice_key) {
            return Some(svc);
        }
        let entry = self.slices.entry(svc.clone()).or_default();
        if let Some(old) = entry.get(&name)
            && !not_older(&slice, old)
        {
            return Some(svc);
        }
        entry.insert(name, Arc::new(slice));
        Some(svc)
    }

    fn remove_slice(&mut self, slice: &EndpointSlice, from_watch: bool) -> Option<ObjectKey> {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
        let slice_key = ObjectKey { namespace, name: name.clone() };
        if from_watch {
            self.deleted_slices.remove(&slice_key);
        } else {
            self.deleted_slices.insert(slice_key);
        }
        let svc = Self::slice_service(slice)?;
        if let Some(map) = self.slices.get_mut(&svc) {
            map.remove(&name);
            if map.is_empty() {
                self.slices.remove(&svc);
            }
        }
        Some(svc)
    }
}

/// What one reconcile decided, computed under the lock and applied without it.
struct Plan {
    changes: SliceChanges,
    endpoints: Option<EndpointsAction>,
}

enum EndpointsAction {
    Create(Endpoints),
    Replace(Endpoints),
    Delete,
}

/// The EndpointSlice controller.
pub struct EndpointSliceController {
    client: Client,
    config: EndpointSliceConfig,
    state: Mutex<State>,
    queue: Arc<WorkQueue<ObjectKey>>,
}

impl EndpointSliceController {
    pub fn new(client: Client, config: EndpointSliceConfig) -> Arc<Self> {
        Arc::new(EndpointSliceController {
            client,
            config,
            state: Mutex::new(State::default()),
            queue: WorkQueue::new(),
        })
    }

    /// Runs the watches and the workers until cancelled.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut tasks = JoinSet::new();
        spawn_watch(
            &mut tasks,
            &self,
            Api::<Service>::all(self.client.clone()),
            &cancel,
            "services",
            Self::on_service,
        );
        spawn_watch(
            &mut tasks,
            &self,
            Api::<Pod>::all(self.client.clone()),
            &cancel,
            "pods",
            Self::on_pod,
        );
        spawn_watch(
            &mut tasks,
            &self,
            Api::<Node>::all(self.client.clone()),
            &cancel,
            "nodes",
            Self::on_node,
        );
        // Slices without `kubernetes.io/service-name` are skipped in `put_slice`; no label
        // selector here, so servers without existence selectors work too.
        let slices = Api::<EndpointSlice>::all(self.client.clone());
        spawn_watch(&mut tasks, &self, slices, &cancel, "endpointslices", Self::on_slice);
        if self.config.mirror_endpoints {
            let endpoints = Api::<Endpoints>::all(self.client.clone());
            spawn_watch(&mut tasks, &self, endpoints, &cancel, "endpoints", Self::on_endpoints);
        } else {
            self.mark_synced(4);
        }
        for _ in 0..self.config.workers.max(1) {
            let c = Arc::clone(&self);
            let cc = cancel.clone();
            tasks.spawn(async move { c.worker(cc).await });
        }
        cancel.cancelled().await;
        tasks.shutdown().await;
    }

    fn mark_synced(&self, idx: usize) {
        let keys: Vec<ObjectKey> = {
            let mut s = lock(&self.state);
            let was = s.all_synced();
            s.synced[idx] = true;
            if was || !s.all_synced() {
                return;
            }
            info!(
                services = s.services.len(),
                pods = s.pods.len(),
                "endpointslice controller caches synced"
            );
            let mut keys: HashSet<ObjectKey> = s.services.keys().cloned().collect();
            keys.extend(s.slices.keys().cloned());
            keys.into_iter().collect()
        };
        for k in keys {
            self.queue.add(k);
        }
    }

    fn enqueue(&self, keys: impl IntoIterator<Item = ObjectKey>) {
        for k in keys {
            self.queue.add(k);
        }
    }

    fn on_service(&self, change: Change<Service>) {
        let keys: Vec<ObjectKey> = {
            let mut s = lock(&self.state);
            match change {
                Change::Apply(svc) => vec![s.put_service(svc)],
                Change::Delete(svc) => {
                    let key = ObjectKey::of(&svc);
                    s.remove_service(&key);
                    vec![key]
                }
                Change::Resync(all) => {
                    let mut keys: Vec<ObjectKey> = s.services.keys().cloned().collect();
                    s.services.clear();
                    s.services_by_ns.clear();
                    s.selector_index.clear();
                    for svc in all {
                        keys.push(s.put_service(svc));
                    }
                    drop(s);
                    self.enqueue(keys);
                    self.mark_synced(0);
                    return;
                }
            }
        };
        self.enqueue(keys);
    }

    fn on_pod(&self, change: Change<Pod>) {
        let keys: HashSet<ObjectKey> = {
            let mut s = lock(&self.state);
            match change {
                Change::Apply(pod) => s.put_pod(pod),
                Change::Delete(pod) => s.remove_pod(&ObjectKey::of(&pod)),
                Change::Resync(all) => {
                    let mut keys: HashSet<ObjectKey> =
                        s.pod_services.values().flatten().cloned().collect();
                    s.pods.clear();
                    s.pods_by_ns.clear();
                    s.pods_by_node.clear();
                    s.pod_services.clear();
                    s.pod_label_index.clear();
                    for pod in all {
                        keys.extend(s.put_pod(pod));
                    }
                    drop(s);
                    self.enqueue(keys);
                    self.mark_synced(1);
                    return;
                }
            }
        };
        self.enqueue(keys);
    }

    fn on_node(&self, change: Change<Node>) {
        let keys: HashSet<ObjectKey> = {
            let mut s = lock(&self.state);
            match change {
                Change::Apply(node) => {
                    let name = node.metadata.name.clone().unwrap_or_default();
                    let old = s.nodes.insert(name.clone(), node.clone());
                    if old.as_ref().is_some_and(|o| node_view_equal(o, &node)) {
                        HashSet::new()
                    } else {
                        s.services_on_node(&name)
                    }
                }
                Change::Delete(node) => {
                    let name = node.metadata.name.clone().unwrap_or_default();
                    s.nodes.remove(&name);
                    s.services_on_node(&name)
                }
                Change::Resync(all) => {
                    s.nodes = all
                        .into_iter()
                        .map(|n| (n.metadata.name.clone().unwrap_or_default(), n))
                        .collect();
                    let keys: HashSet<ObjectKey> = s.services.keys().cloned().collect();
                    drop(s);
                    self.enqueue(keys);
                    self.mark_synced(2);
                    return;
                }
            }
        };
        self.enqueue(keys);
    }

    fn on_slice(&self, change: Change<EndpointSlice>) {
        let keys: HashSet<ObjectKey> = {
            let mut s = lock(&self.state);
            match change {
                Change::Apply(slice) => s.put_slice(slice, true).into_iter().collect(),
                Change::Delete(slice) => s.remove_slice(&slice, true).into_iter().collect(),
                Change::Resync(all) => {
                    let mut keys: HashSet<ObjectKey> = s.slices.keys().cloned().collect();
                    s.slices.clear();
                    s.deleted_slices.clear();
                    for slice in all {
                        keys.extend(s.put_slice(slice, true));
                    }
                    drop(s);
                    self.enqueue(keys);
                    self.mark_synced(3);
                    return;
                }
            }
        };
        self.enqueue(keys);
    }

    fn on_endpoints(&self, change: Change<Endpoints>) {
        let keys: Vec<ObjectKey> = {
            let mut s = lock(&self.state);
            match change {
                Change::Apply(ep) => {
                    let key = ObjectKey::of(&ep);
                    if s.endpoints.get(&key).is_none_or(|old| not_older(&ep, old.as_ref())) {
                        s.endpoints.insert(key.clone(), Arc::new(ep));
                    }
                    vec![key]
                }
                Change::Delete(ep) => {
                    let key = ObjectKey::of(&ep);
                    s.endpoints.remove(&key);
                    vec![key]
                }
                Change::Resync(all) => {
                    s.endpoints =
                        all.into_iter().map(|e| (ObjectKey::of(&e), Arc::new(e))).collect();
                    drop(s);
                    self.mark_synced(4);
                    return;
                }
            }
        };
        self.enqueue(keys);
    }

    async fn worker(&self, cancel: CancellationToken) {
        while let Some(key) = self.queue.next(&cancel).await {
            if !lock(&self.state).all_synced() {
                // The queue is filled again once every cache is synced.
                self.queue.done(&key);
                continue;
            }
            let ok = self.sync(&key).await;
            self.queue.done(&key);
            if !ok {
                self.queue.add_after(key, Duration::from_millis(500), cancel.clone());
            }
        }
    }

    /// Computes what the Service needs (under the lock, no I/O).
    fn plan(&self, key: &ObjectKey) -> Plan {
        let mut s = lock(&self.state);
        let existing: Vec<EndpointSlice> = s
            .slices
            .get(key)
            .map(|m| m.values().map(|a| a.as_ref().clone()).collect())
            .unwrap_or_default();
        let Some(svc) = s.services.get(key).cloned() else {
            let delete = existing
                .into_iter()
                .filter(|sl| desired::is_managed_slice(sl, &key.name))
                .collect();
            let endpoints = if self.config.mirror_endpoints
                && s.endpoints.contains_key(key)
                && !s.services.contains_key(key)
            {
                Some(EndpointsAction::Delete)
            } else {
                None
            };
            return Plan { changes: SliceChanges { delete, ..Default::default() }, endpoints };
        };
        let pods: Vec<Arc<Pod>> = s.candidate_pods(&svc);
        let selected: Vec<&Pod> =
            pods.iter().map(|p| p.as_ref()).filter(|p| desired::selects(&svc, p)).collect();
        for pod in &selected {
            s.pod_services.entry(ObjectKey::of(*pod)).or_default().insert(key.clone());
        }
        let changes = desired_slices(
            &svc,
            &selected,
            &s.nodes,
            &existing,
            self.config.max_endpoints_per_slice,
        );
        let endpoints = if self.config.mirror_endpoints {
            match (desired_endpoints(&svc, &selected, &s.nodes), s.endpoints.get(key)) {
                (Some(want), None) => Some(EndpointsAction::Create(want)),
                (Some(mut want), Some(have)) if !desired::endpoints_equal(have, &want) => {
                    want.metadata.resource_version = have.metadata.resource_version.clone();
                    want.metadata.annotations = have.metadata.annotations.clone();
                    Some(EndpointsAction::Replace(want))
                }
                _ => None,
            }
        } else {
            None
        };
        Plan { changes, endpoints }
    }

    /// Reconciles one Service; false if something failed and it should be retried.
    #[tracing::instrument(skip_all, fields(service = %key))]
    async fn sync(&self, key: &ObjectKey) -> bool {
        let plan = self.plan(key);
        if plan.changes.is_empty() && plan.endpoints.is_none() {
            return true;
        }
        debug!(
            create = plan.changes.create.len(),
            update = plan.changes.update.len(),
            delete = plan.changes.delete.len(),
            "applying endpointslice changes"
        );
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &key.namespace);
        let pp = PostParams {
            field_manager: Some(desired::CONTROLLER_NAME.into()),
            ..Default::default()
        };
        let mut ok = true;
        // Create, then update, then delete (as Kubernetes' reconciler does): a proxy watching
        // the slices never sees a moment with fewer endpoints than before and after.
        for mut slice in plan.changes.create {
            slice.metadata.namespace = Some(key.namespace.clone());
            match api.create(&pp, &slice).await {
                Ok(stored) => {
                    lock(&self.state).put_slice(stored, false);
                }
                Err(error) => {
                    warn!(%error, "creating endpointslice failed");
                    ok = false;
                }
            }
        }
        for slice in plan.changes.update {
            let name = slice.metadata.name.clone().unwrap_or_default();
            match api.replace(&name, &pp, &slice).await {
                Ok(stored) => {
                    lock(&self.state).put_slice(stored, false);
                }
                Err(error) => {
                    debug!(%error, slice = %name, "updating endpointslice failed");
                    ok = false;
                }
            }
        }
        for slice in plan.changes.delete {
            let name = slice.metadata.name.clone().unwrap_or_default();
            match api
                .delete(&name, &DeleteParams::default())
                .await
                .map(|_| ())
                .or_else(|e| if is_not_found(&e) { Ok(()) } else { Err(e) })
            {
                Ok(()) => {
                    let mut sl = slice;
                    sl.metadata.namespace = Some(key.namespace.clone());
                    lock(&self.state).remove_slice(&sl, false);
                }
                Err(error) => {
                    warn!(%error, slice = %name, "deleting endpointslice failed");
                    ok = false;
                }
            }
        }
        if let Some(action) = plan.endpoints {
            let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &key.namespace);
            let result = match action {
                EndpointsAction::Create(ep) => api.create(&pp, &ep).await.map(Some),
                EndpointsAction::Replace(ep) => api.replace(&key.name, &pp, &ep).await.map(Some),
                EndpointsAction::Delete => {
                    match api.delete(&key.name, &DeleteParams::default()).await {
                        Ok(_) => Ok(None),
                        Err(e) if is_not_found(&e) => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            };
            match result {
                Ok(Some(stored)) => {
                    lock(&self.state).endpoints.insert(key.clone(), Arc::new(stored));
                }
                Ok(None) => {
                    lock(&self.state).endpoints.remove(key);
                }
                Err(error) => {
                    debug!(%error, "writing endpoints failed");
                    ok = false;
                }
            }
        }
        ok
    }
}

/// Whether two versions of a Node look the same to endpoints (zone label and reachability).
fn node_view_equal(a: &Node, b: &Node) -> bool {
    let zone =
        |n: &Node| n.metadata.labels.as_ref().and_then(|l| l.get(desired::LABEL_ZONE)).cloned();
    zone(a) == zone(b) && desired::node_unreachable(a) == desired::node_unreachable(b)
}
