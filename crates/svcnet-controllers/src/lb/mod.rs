//! svcnet-lb, the LoadBalancer provider: gives `type: LoadBalancer` Services (no class, or class
//! `svcnet.io/lb`) an address from the pools in ConfigMap `kube-system/svcnet-lb-pools`, internal
//! or external by the cloud annotations, and writes `status.loadBalancer.ingress` with Events
//! saying what happened (`IPAllocated`, `AllocationFailed`). The holdings are rebuilt from the
//! Services' status at start, so a restart changes no address.
//!
//! Leaves out: announcing addresses (ARP/BGP; the lab routes them) and `loadBalancerSourceRanges`
//! (passed through untouched for the proxy).

pub mod alloc;
pub mod pools;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Event, EventSource, ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use alloc::{LbAllocator, LbError, LbRequest, is_ours, request_for, scope_of};
pub use pools::{Pool, Scope, parse_pools};

use crate::runtime::{Change, ObjectKey, WorkQueue, lock, spawn_watch};

/// Settings of the LoadBalancer provider.
#[derive(Debug, Clone)]
pub struct LbConfig {
    /// Namespace and name of the pool ConfigMap.
    pub pools_namespace: String,
    pub pools_name: String,
}

impl Default for LbConfig {
    fn default() -> Self {
        LbConfig { pools_namespace: "kube-system".into(), pools_name: "svcnet-lb-pools".into() }
    }
}

/// The component name in Events.
pub const COMPONENT: &str = "svcnet-lb";

#[derive(Default)]
struct State {
    services: HashMap<ObjectKey, Arc<Service>>,
    allocator: LbAllocator,
    pools_text: Option<String>,
    /// The last Event message per Service, so a repeated reconcile does not repeat it.
    last_event: HashMap<ObjectKey, String>,
    /// Services waiting for an address; retried whenever one is freed.
    pending: HashSet<ObjectKey>,
    services_synced: bool,
    pools_synced: bool,
    restored: bool,
}

/// What a reconcile decided, applied without the lock.
struct Plan {
    status: Option<Vec<IpAddr>>,
    event: Option<(&'static str, &'static str, String)>,
    service: Arc<Service>,
}

/// The LoadBalancer provider.
pub struct LbController {
    client: Client,
    config: LbConfig,
    state: Mutex<State>,
    queue: Arc<WorkQueue<ObjectKey>>,
}

impl LbController {
    pub fn new(client: Client, config: LbConfig) -> Arc<Self> {
        Arc::new(LbController {
            client,
            config,
            state: Mutex::new(State::default()),
            queue: WorkQueue::new(),
        })
    }

    /// Runs the watches and one worker until cancelled.
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
        let pools = Api::<ConfigMap>::namespaced(self.client.clone(), &self.config.pools_namespace);
        spawn_watch(&mut tasks, &self, pools, &cancel, "configmaps", Self::on_configmap);
        let c = Arc::clone(&self);
        let cc = cancel.clone();
        tasks.spawn(async move { c.worker(cc).await });
        cancel.cancelled().await;
        tasks.shutdown().await;
    }

    fn on_service(&self, change: Change<Service>) {
        let keys: Vec<ObjectKey> = {
            let mut s = lock(&self.state);
            match change {
                Change::Apply(svc) => {
                    let key = ObjectKey::of(&svc);
                    s.services.insert(key.clone(), Arc::new(svc));
                    vec![key]
                }
                Change::Delete(svc) => {
                    let key = ObjectKey::of(&svc);
                    s.services.remove(&key);
                    vec![key]
                }
                Change::Resync(all) => {
                    let mut keys: Vec<ObjectKey> = s.services.keys().cloned().collect();
                    s.services =
                        all.into_iter().map(|svc| (ObjectKey::of(&svc), Arc::new(svc))).collect();
                    keys.extend(s.services.keys().cloned());
                    s.services_synced = true;
                    keys.extend(Self::restore(&mut s));
                    keys
                }
            }
        };
        for k in keys {
            self.queue.add(k);
        }
    }

    fn on_configmap(&self, change: Change<ConfigMap>) {
        let name = self.config.pools_name.clone();
        let keys: Vec<ObjectKey> = {
            let mut s = lock(&self.state);
            let text = match change {
                Change::Apply(cm) if cm.metadata.name.as_deref() == Some(&name) => {
                    Some(cm_text(&cm))
                }
                Change::Delete(cm) if cm.metadata.name.as_deref() == Some(&name) => {
                    Some(String::new())
                }
                Change::Resync(all) => {
                    s.pools_synced = true;
                    Some(
                        all.iter()
                            .find(|cm| cm.metadata.name.as_deref() == Some(&name))
                            .map(cm_text)
                            .unwrap_or_default(),
                    )
                }
                _ => None,
            };
            let Some(text) = text else { return };
            let mut keys: Vec<ObjectKey> = Vec::new();
            if s.pools_text.as_deref() != Some(text.as_str()) {
                let (pools, problems) = parse_pools(&text);
                for problem in &problems {
                    warn!(problem = %problem, "load balancer pool configuration");
                }
                info!(pools = pools.len(), "load balancer pools loaded");
                s.allocator.set_pools(pools);
                s.pools_text = Some(text);
                keys.extend(
                    s.services.iter().filter(|(_, svc)| is_ours(svc)).map(|(k, _)| k.clone()),
                );
            }
            keys.extend(Self::restore(&mut s));
            keys
        };
        for k in keys {
            self.queue.add(k);
        }
    }

    /// Once Services and pools are both known: rebuild the holdings from the Services' status.
    fn restore(s: &mut State) -> Vec<ObjectKey> {
        if s.restored || !s.services_synced || !s.pools_synced {
            return Vec::new();
        }
        s.restored = true;
        let mut keys: Vec<ObjectKey> = s.services.keys().cloned().collect();
        keys.sort();
        let mut restored = 0;
        for key in &keys {
            let Some(svc) = s.services.get(key).cloned() else { continue };
            if !is_ours(&svc) {
                continue;
            }
            let ips = status_ips(&svc);
            if ips.is_empty() {
                continue;
            }
            if let Ok(req) = request_for(&svc)
                && s.allocator.restore(&req, &ips)
            {
                restored += 1;
            }
        }
        info!(restored, "load balancer holdings rebuilt from Service status");
        keys
    }

    async fn worker(&self, cancel: CancellationToken) {
        while let Some(key) = self.queue.next(&cancel).await {
            let ready = lock(&self.state).restored;
            if !ready {
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

    /// The plan for one Service, and the pending Services to retry because addresses were freed.
    fn plan(&self, key: &ObjectKey) -> (Option<Plan>, Vec<ObjectKey>) {
        let mut s = lock(&self.state);
        let before = s.allocator.current(key);
        let plan = Self::plan_locked(&mut s, key);
        let after = s.allocator.current(key);
        let ours = s.services.get(key).is_some_and(|svc| is_ours(svc));
        if ours && after.is_empty() {
            s.pending.insert(key.clone());
        } else {
            s.pending.remove(key);
        }
        let freed = before.iter().any(|ip| !after.contains(ip));
        let wake = if freed {
            s.pending.iter().filter(|k| *k != key).cloned().collect()
        } else {
            Vec::new()
        };
        (plan, wake)
    }

    fn plan_locked(s: &mut State, key: &ObjectKey) -> Option<Plan> {
        let Some(svc) = s.services.get(key).cloned() else {
            let released = s.allocator.release(key);
            if !released.is_empty() {
                info!(service = %key, ?released, "released load balancer addresses");
            }
            s.last_event.remove(key);
            return None;
        };
        if !is_ours(&svc) {
            let released = s.allocator.release(key);
            s.last_event.remove(key);
            if !released.is_empty() && !status_ips(&svc).is_empty() {
                return Some(Plan { status: Some(Vec::new()), event: None, service: svc });
            }
            return None;
        }
        let before = s.allocator.current(key);
        let result = request_for(&svc).and_then(|req| s.allocator.assign(&req));
        let current = status_ips(&svc);
        match result {
            Ok(ips) => {
                let status = if ips != current { Some(ips.clone()) } else { None };
                let event = if ips != before || (status.is_some() && !ips.is_empty()) {
                    let pool = ips
                        .first()
                        .and_then(|ip| s.allocator.pool_of(*ip))
                        .map(|p| format!("{} ({})", p.name, p.scope))
                        .unwrap_or_default();
                    let list: Vec<String> =
                        ips.iter().map(|ip| format!("{:?}", ip.to_string())).collect();
                    let message = format!("Assigned IP [{}] from pool {pool}", list.join(", "));
                    if s.last_event.get(key) == Some(&message) {
                        None
                    } else {
                        Some(("Normal", "IPAllocated", message))
                    }
                } else {
                    None
                };
                if let Some((_, _, m)) = &event {
                    s.last_event.insert(key.clone(), m.clone());
                }
                Some(Plan { status, event, service: svc })
            }
            Err(error) => {
                let message = format!("Failed to allocate IP for \"{key}\": {error}");
                let event = if s.last_event.get(key) == Some(&message) {
                    None
                } else {
                    Some(("Warning", "AllocationFailed", message.clone()))
                };
                s.last_event.insert(key.clone(), message);
                let status = if current.is_empty() { None } else { Some(Vec::new()) };
                Some(Plan { status, event, service: svc })
            }
        }
    }

    #[tracing::instrument(skip_all, fields(service = %key))]
    async fn sync(&self, key: &ObjectKey) -> bool {
        let (plan, wake) = self.plan(key);
        for k in wake {
            self.queue.add(k);
        }
        let Some(plan) = plan else { return true };
        let mut ok = true;
        if let Some(ips) = &plan.status {
            let ingress: Vec<serde_json::Value> = ips
                .iter()
                .map(|ip| serde_json::json!({"ip": ip.to_string(), "ipMode": "VIP"}))
                .collect();
            let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": ingress}}});
            let api: Api<Service> = Api::namespaced(self.client.clone(), &key.namespace);
            match api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await
            {
                Ok(_) => debug!(?ips, "load balancer status written"),
                Err(error) => {
                    warn!(%error, "writing load balancer status failed");
                    ok = false;
                }
            }
        }
        if let Some((type_, reason, message)) = plan.event {
            if type_ == "Warning" {
                warn!(reason, message = %message, "load balancer");
            } else {
                info!(reason, message = %message, "load balancer");
            }
            if let Err(error) =
                record_event(&self.client, &plan.service, type_, reason, &message).await
            {
                warn!(%error, "recording event failed");
            }
        }
        ok
    }
}

fn cm_text(cm: &ConfigMap) -> String {
    cm.data.as_ref().and_then(|d| d.get(pools::POOLS_KEY)).cloned().unwrap_or_default()
}

/// The addresses in `status.loadBalancer.ingress`.
pub fn status_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| {
            ing.iter().filter_map(|i| i.ip.as_deref().and_then(|ip| ip.parse().ok())).collect()
        })
        .unwrap_or_default()
}

/// Creates a core/v1 Event about the Service, as `kubectl describe` shows them.
pub async fn record_event(
    client: &Client,
    svc: &Service,
    type_: &str,
    reason: &str,
    message: &str,
) -> Result<(), kube::Error> {
    let namespace = svc.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let now = jiff::Timestamp::now();
    let event = Event {
        metadata: ObjectMeta {
            // client-go's recorder names events `<object>.<hex nanoseconds>`.
            name: Some(format!(
                "{}.{:x}",
                svc.metadata.name.as_deref().unwrap_or("service"),
                now.as_nanosecond()
            )),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: svc.metadata.name.clone(),
            namespace: Some(namespace.clone()),
            uid: svc.metadata.uid.clone(),
            resource_version: svc.metadata.resource_version.clone(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        action: Some("Allocate".into()),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(COMPONENT.into()),
        source: Some(EventSource { component: Some(COMPONENT.into()), host: None }),
        related: None,
        series: None,
    };
    Api::<Event>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &event)
        .await
        .map(|_| ())
}

/// Keys with a status to write, for tests: which Services of `all` hold which address.
pub fn holdings_by_service(allocator: &LbAllocator) -> HashMap<ObjectKey, HashSet<IpAddr>> {
    let mut out: HashMap<ObjectKey, HashSet<IpAddr>> = HashMap::new();
    for (ip, svc) in allocator.holdings() {
        out.entry(svc).or_default().insert(ip);
    }
    out
}
