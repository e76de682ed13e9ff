//! Incremental zone updates: [`ZoneBuilder`] keeps the objects the zone was made from and, for
//! a change to one Service, EndpointSlice, Pod or Namespace, takes that object's records out of
//! the zone and puts the new ones in, so a change costs what it touches, not the cluster.
//!
//! The records of a Service depend only on the Service and its EndpointSlices, so the builder
//! takes them out by recomputing them from the objects it added them with (it keeps `Arc`s to
//! those objects, shared with the watch caches) instead of storing them. Snapshots share every
//! shard of the zone's maps that a change did not touch ([`super::sharded`]).
//! `zone/tests.rs` checks that any sequence of changes gives the zone `Zone::build` makes from
//! the same objects. Left out: batching several changes of one Service into one recomputation.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{PodIps, Zone, ZoneConfig, intern, slice_service_key, uses_endpoint_slices};

/// `(namespace, name)` of an object.
pub type ObjectKey = (String, String);

fn lower((ns, name): &ObjectKey) -> ObjectKey {
    (ns.to_ascii_lowercase(), name.to_ascii_lowercase())
}

/// A zone kept in step with the cluster one object at a time.
#[derive(Debug)]
pub struct ZoneBuilder {
    zone: Zone,
    /// Services by lowercased `(namespace, name)`, as their DNS names are.
    services: HashMap<ObjectKey, Arc<Service>>,
    /// EndpointSlices by `(namespace, name)`.
    slices: HashMap<ObjectKey, Arc<EndpointSlice>>,
    /// Lowercased Service key → keys of its EndpointSlices, sorted.
    slices_by_service: HashMap<ObjectKey, Vec<ObjectKey>>,
    /// Lowercased names of the Namespace objects.
    namespace_objects: HashSet<String>,
    /// Lowercased namespace → number of Services in it.
    services_per_namespace: HashMap<String, usize>,
    /// Pods by `(namespace, name)` (only with verified pod records or autopath).
    pods: HashMap<ObjectKey, PodIps>,
    /// One shared string per pod namespace.
    interned: HashMap<String, Arc<str>>,
    changed: bool,
}

impl ZoneBuilder {
    /// A builder holding the empty zone.
    pub fn new(config: &ZoneConfig) -> ZoneBuilder {
        ZoneBuilder {
            zone: Zone::empty(config),
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_by_service: HashMap::new(),
            namespace_objects: HashSet::new(),
            services_per_namespace: HashMap::new(),
            pods: HashMap::new(),
            interned: HashMap::new(),
            changed: true,
        }
    }

    /// The current zone.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// Whether the zone changed since the last [`ZoneBuilder::snapshot`].
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// A snapshot of the zone with SOA serial `serial`; it shares all unchanged shards with
    /// the builder. Warnings are those of the changes since the previous snapshot.
    pub fn snapshot(&mut self, serial: u32) -> Zone {
        self.zone.set_serial(serial);
        let snapshot = self.zone.clone();
        self.zone.warnings.clear();
        self.changed = false;
        snapshot
    }

    fn slices_of(&self, service: &ObjectKey) -> Vec<Arc<EndpointSlice>> {
        self.slices_by_service
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(|key| self.slices.get(key).cloned())
            .collect()
    }

    fn with_service(&mut self, key: &ObjectKey, add: bool) {
        let Some(service) = self.services.get(key).cloned() else {
            return;
        };
        let slices = self.slices_of(key);
        let slices: Vec<&EndpointSlice> = slices.iter().map(|slice| &**slice).collect();
        if add {
            self.zone.add_service(&service, &slices);
        } else {
            self.zone.remove_service(&service, &slices);
        }
        self.changed = true;
    }

    fn sync_namespace(&mut self, ns: &str) {
        let exists = self.namespace_objects.contains(ns)
            || self.services_per_namespace.get(ns).is_some_and(|n| *n > 0);
        if self.zone.namespaces.contains(ns) != exists {
            self.zone.set_namespace(ns, exists);
            self.changed = true;
        }
    }

    /// Sets the Service `key` (`None`: deleted).
    pub fn set_service(&mut self, key: &ObjectKey, service: Option<Arc<Service>>) {
        let key = lower(key);
        match (self.services.get(&key), &service) {
            (None, None) => return,
            (Some(old), Some(new)) if Arc::ptr_eq(old, new) || **old == **new => return,
            _ => {}
        }
        if self.services.contains_key(&key) {
            self.with_service(&key, false);
            self.services.remove(&key);
            if let Some(count) = self.services_per_namespace.get_mut(&key.0) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.services_per_namespace.remove(&key.0);
                }
            }
        }
        if let Some(service) = service {
            self.services.insert(key.clone(), service);
            *self.services_per_namespace.entry(key.0.clone()).or_default() += 1;
            self.with_service(&key, true);
        }
        self.sync_namespace(&key.0);
    }

    /// Sets the EndpointSlice `key` (`None`: deleted).
    pub fn set_endpoint_slice(&mut self, key: &ObjectKey, slice: Option<Arc<EndpointSlice>>) {
        let old = self.slices.get(key).cloned();
        match (&old, &slice) {
            (None, None) => return,
            (Some(old), Some(new)) if Arc::ptr_eq(old, new) || **old == **new => return,
            _ => {}
        }
        let old_service = old.as_deref().and_then(slice_service_key);
        let new_service = slice.as_deref().and_then(slice_service_key);
        let mut affected: Vec<ObjectKey> = Vec::new();
        for service in [&old_service, &new_service].into_iter().flatten() {
            let uses_slices = self.services.get(service).is_some_and(|s| uses_endpoint_slices(s));
            if uses_slices && !affected.contains(service) {
                affected.push(service.clone());
            }
        }
        for service in &affected {
            self.with_service(service, false);
        }
        if let Some(service) = &old_service
            && let Some(keys) = self.slices_by_service.get_mut(service)
        {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.slices_by_service.remove(service);
            }
        }
        self.slices.remove(key);
        if let Some(slice) = slice {
            if let Some(service) = new_service {
                let keys = self.slices_by_service.entry(service).or_default();
                if let Err(index) = keys.binary_search(key) {
                    keys.insert(index, key.clone());
                }
            }
            self.slices.insert(key.clone(), slice);
        }
        for service in &affected {
            self.with_service(service, true);
        }
    }

    /// Sets whether the Namespace object `name` exists.
    pub fn set_namespace(&mut self, name: &str, exists: bool) {
        let ns = name.to_ascii_lowercase();
        if exists {
            self.namespace_objects.insert(ns.clone());
        } else {
            self.namespace_objects.remove(&ns);
        }
        self.sync_namespace(&ns);
    }

    /// Sets the pod `key` (`None`: deleted). Ignored unless the zone keeps pod IPs.
    pub fn set_pod(&mut self, key: &ObjectKey, pod: Option<PodIps>) {
        if !self.zone.tracks_pods() || self.pods.get(key) == pod.as_ref() {
            return;
        }
        if let Some(old) = self.pods.remove(key) {
            self.zone.remove_pod(&old.namespace.to_ascii_lowercase(), &old.ips);
        }
        if let Some(pod) = pod {
            let ns = intern(&mut self.interned, &pod.namespace);
            self.zone.add_pod(&ns, &pod.ips);
            self.pods.insert(key.clone(), pod);
        }
        self.changed = true;
    }

    /// Replaces every pod (after a relist of the pod watch).
    pub fn set_pods(&mut self, pods: HashMap<ObjectKey, PodIps>) {
        let gone: Vec<ObjectKey> =
            self.pods.keys().filter(|key| !pods.contains_key(*key)).cloned().collect();
        for key in gone {
            self.set_pod(&key, None);
        }
        for (key, pod) in pods {
            self.set_pod(&key, Some(pod));
        }
    }

    /// Number of pods kept.
    pub fn n_pods(&self) -> usize {
        self.pods.len()
    }

    /// The IPs of the pods kept (for tests and benchmarks).
    pub fn pod_ips(&self) -> impl Iterator<Item = (&ObjectKey, &[IpAddr])> {
        self.pods.iter().map(|(key, pod)| (key, pod.ips.as_slice()))
    }

    /// Keys of the Services, EndpointSlices and Namespace objects held.
    pub fn keys(&self) -> (Vec<ObjectKey>, Vec<ObjectKey>, Vec<String>) {
        (
            self.services.keys().cloned().collect(),
            self.slices.keys().cloned().collect(),
            self.namespace_objects.iter().cloned().collect(),
        )
    }
}
