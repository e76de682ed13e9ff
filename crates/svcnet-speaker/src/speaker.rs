//! The speaker as a long-running task: reflectors over Services, EndpointSlices, Nodes and
//! the speaker Leases feed `elect`; Lease requests run as tasks whose outcomes come back to
//! one loop; the set of held addresses is published on a `watch` channel that the announce
//! task applies to the interface.
//!
//! The safety rule: an address is held locally only until `lease_duration` (less a margin)
//! after the start of the last successful write of its Lease. Another node takes a Lease
//! only after it saw no change for `lease_duration`, which is later, so two nodes never
//! answer for one address at once, even when this node is cut off from the API server.
//! Expiry is judged by when a change was observed (as client-go's leader election does),
//! never by comparing `renewTime` with the local clock.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::announce::Announcer;
use crate::elect::{self, Action, LeaseView, NodeInfo};
use crate::error::{Error, Result};
use crate::lease::{self, LeaseClient};

/// How often the loop re-evaluates every address (cheap: no recomputation of eligibility).
const TICK: Duration = Duration::from_millis(50);
/// How often the announce task re-applies the held set even without changes (so an address
/// removed by hand comes back).
const RESYNC: Duration = Duration::from_secs(5);

/// A Lease this node holds.
#[derive(Debug, Clone)]
struct Held {
    /// The copy returned by the last successful write (its resourceVersion is the base of
    /// the next renewal).
    lease: Lease,
    /// When the address must be dropped locally unless renewed.
    deadline: Instant,
    /// When the last successful write was started.
    renewed: Instant,
}

/// When a Lease was last seen to change (or, for an absent one, first seen absent).
#[derive(Debug, Clone)]
struct Observed {
    resource_version: Option<String>,
    at: Instant,
}

#[derive(Debug)]
enum Request {
    Acquire,
    Renew,
    Release,
    Delete,
}

#[derive(Debug)]
struct Outcome {
    address: IpAddr,
    request: Request,
    started: Instant,
    result: Result<Option<Lease>>,
}

/// One node's speaker. `held()` shows what it announces; `run` does the work.
pub struct Speaker {
    client: Client,
    config: Config,
    held_tx: watch::Sender<BTreeSet<IpAddr>>,
}

impl Speaker {
    pub fn new(client: Client, config: Config) -> Self {
        let (held_tx, _) = watch::channel(BTreeSet::new());
        Speaker { client, config, held_tx }
    }

    /// The addresses this node currently holds (and has on its interface, or is adding).
    pub fn held(&self) -> watch::Receiver<BTreeSet<IpAddr>> {
        self.held_tx.subscribe()
    }

    /// Runs until `cancel`; then removes every address and releases every Lease it holds.
    pub async fn run(self, cancel: CancellationToken) -> Result<()> {
        let config = self.config;
        config.validate()?;
        let announcer = config.announcer();
        match announcer.remove_stale().await {
            Ok(stale) if !stale.is_empty() => {
                tracing::info!(?stale, "removed addresses left by an earlier run")
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %err, "cannot remove addresses left by an earlier run")
            }
        }

        let held_tx = Arc::new(self.held_tx);
        let announce_task =
            tokio::spawn(apply_held(announcer, held_tx.subscribe(), cancel.clone()));

        let changed = Arc::new(Notify::new());
        let child = cancel.child_token();
        let services = spawn_reflector(
            Api::<Service>::all(self.client.clone()),
            watcher::Config::default(),
            changed.clone(),
            child.clone(),
        );
        let endpoint_slices = spawn_reflector(
            Api::<EndpointSlice>::all(self.client.clone()),
            watcher::Config::default(),
            changed.clone(),
            child.clone(),
        );
        let nodes = spawn_reflector(
            Api::<Node>::all(self.client.clone()),
            watcher::Config::default(),
            changed.clone(),
            child.clone(),
        );
        let lease_api = Api::<Lease>::namespaced(self.client.clone(), &config.lease_namespace);
        let leases = spawn_reflector(
            lease_api.clone(),
            watcher::Config::default().labels(&format!(
                "{}={}",
                lease::MANAGED_BY_LABEL,
                lease::MANAGED_BY
            )),
            Arc::new(Notify::new()),
            child.clone(),
        );
        let synced = async {
            let _ = services.wait_until_ready().await;
            let _ = endpoint_slices.wait_until_ready().await;
            let _ = nodes.wait_until_ready().await;
            let _ = leases.wait_until_ready().await;
        };
        tokio::select! {
            () = cancel.cancelled() => {}
            () = synced => {}
        }

        let lease_client = LeaseClient {
            api: lease_api,
            identity: config.node_name.clone(),
            duration: config.lease_duration,
            timeout: config.request_timeout(),
        };
        let mut state = Loop {
            config: &config,
            lease_client,
            leases,
            ranked: BTreeMap::new(),
            held: BTreeMap::new(),
            observed: BTreeMap::new(),
            in_flight: BTreeSet::new(),
            retry_after: BTreeMap::new(),
            requests: JoinSet::new(),
            held_tx: held_tx.clone(),
        };
        if !cancel.is_cancelled() {
            tracing::info!(node = %config.node_name, interface = %config.interface, "speaker started");
            state.recompute(&services, &endpoint_slices, &nodes);
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let next_deadline = state.held.values().map(|h| h.deadline).min();
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = changed.notified() => state.recompute(&services, &endpoint_slices, &nodes),
                    Some(joined) = state.requests.join_next() => match joined {
                        Ok(outcome) => state.complete(outcome),
                        Err(err) => tracing::error!(error = %err, "lease request task failed"),
                    },
                    () = sleep_until_opt(next_deadline) => state.expire(),
                    _ = tick.tick() => {
                        state.expire();
                        state.step();
                    }
                }
            }
        }
        child.cancel();
        state.shutdown().await;
        let _ = announce_task.await;
        Ok(())
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

struct Loop<'a> {
    config: &'a Config,
    lease_client: LeaseClient,
    leases: Store<Lease>,
    /// Eligible nodes per address, most preferred first.
    ranked: BTreeMap<IpAddr, Vec<String>>,
    held: BTreeMap<IpAddr, Held>,
    observed: BTreeMap<IpAddr, Observed>,
    in_flight: BTreeSet<IpAddr>,
    /// After a failed acquisition (not a lost race), the address is left alone until then, so
    /// an unreachable API server is not hammered every tick.
    retry_after: BTreeMap<IpAddr, Instant>,
    requests: JoinSet<Outcome>,
    held_tx: Arc<watch::Sender<BTreeSet<IpAddr>>>,
}

impl Loop<'_> {
    fn recompute(
        &mut self,
        services: &Store<Service>,
        endpoint_slices: &Store<EndpointSlice>,
        nodes: &Store<Node>,
    ) {
        let services = services.state();
        let endpoint_slices = endpoint_slices.state();
        let nodes = nodes.state();
        let services: Vec<&Service> = services.iter().map(AsRef::as_ref).collect();
        let endpoint_slices: Vec<&EndpointSlice> =
            endpoint_slices.iter().map(AsRef::as_ref).collect();
        let nodes: Vec<&Node> = nodes.iter().map(AsRef::as_ref).collect();
        let eligible = elect::eligible_nodes(&services, &endpoint_slices, &nodes);
        self.ranked = eligible
            .into_iter()
            .map(|(address, mut infos)| {
                // The configured zone stands in for a missing label on this node.
                for info in infos
                    .iter_mut()
                    .filter(|i| i.name == self.config.node_name && i.zone.is_empty())
                {
                    info.zone.clone_from(&self.config.zone);
                }
                let ranked = elect::ranked(address, &infos as &[NodeInfo]);
                (address, ranked)
            })
            .collect();
        let ranked = &self.ranked;
        self.observed.retain(|address, _| ranked.contains_key(address));
        self.retry_after.retain(|address, _| ranked.contains_key(address));
        tracing::debug!(addresses = self.ranked.len(), "eligibility recomputed");
    }

    /// This node's view of the Lease for `address`, updating when it was last seen to change.
    fn view(&mut self, address: IpAddr, now: Instant) -> (LeaseView, Option<Arc<Lease>>) {
        if self.held.contains_key(&address) {
            // Our own successful write is fresher than the watch.
            return (LeaseView::Held { holder: self.config.node_name.clone() }, None);
        }
        let current = self.leases.get(
            &reflector::ObjectRef::new(&lease::lease_name(address))
                .within(&self.config.lease_namespace),
        );
        let resource_version = current.as_ref().and_then(|l| l.metadata.resource_version.clone());
        let observed = self
            .observed
            .entry(address)
            .or_insert_with(|| Observed { resource_version: resource_version.clone(), at: now });
        if observed.resource_version != resource_version {
            *observed = Observed { resource_version, at: now };
        }
        let since = now.saturating_duration_since(observed.at);
        let view = match current.as_deref() {
            None => LeaseView::Free { last_holder: None, free_for: since },
            Some(l) => match lease::holder(l) {
                None => LeaseView::Free { last_holder: None, free_for: since },
                Some(holder) => {
                    let duration = lease::duration(l).unwrap_or(self.config.lease_duration);
                    match since.checked_sub(duration) {
                        None => LeaseView::Held { holder: holder.to_string() },
                        Some(free_for) => {
                            LeaseView::Free { last_holder: Some(holder.to_string()), free_for }
                        }
                    }
                }
            },
        };
        (view, current)
    }

    /// Evaluates every address and starts the Lease requests that are due.
    fn step(&mut self) {
        let now = Instant::now();
        let addresses: BTreeSet<IpAddr> =
            self.ranked.keys().chain(self.held.keys()).copied().collect();
        let me = self.config.node_name.clone();
        for address in addresses {
            if self.in_flight.contains(&address)
                || self.retry_after.get(&address).is_some_and(|t| *t > now)
            {
                continue;
            }
            let Some(ranked) = self.ranked.get(&address).cloned() else {
                // No Service uses the address any more: drop it and delete our Lease.
                if let Some(held) = self.drop_local(address, "no Service uses it") {
                    self.start(address, Request::Delete, Some(held.lease));
                }
                self.observed.remove(&address);
                continue;
            };
            let (view, current) = self.view(address, now);
            match elect::decide(&me, &ranked, &view, self.config.takeover_grace) {
                Action::Wait => {}
                Action::Acquire => {
                    self.start(address, Request::Acquire, current.map(|l| (*l).clone()))
                }
                Action::Renew => match self.held.get(&address) {
                    Some(held)
                        if now.saturating_duration_since(held.renewed)
                            < self.config.renew_interval => {}
                    Some(held) => {
                        let lease = held.lease.clone();
                        self.start(address, Request::Renew, Some(lease));
                    }
                    // Our Lease from an earlier run (or a write whose answer timed out): adopt it.
                    None => self.start(address, Request::Renew, current.map(|l| (*l).clone())),
                },
                Action::Release => {
                    let lease = self
                        .drop_local(address, "no longer eligible")
                        .map(|h| h.lease)
                        .or(current.map(|l| (*l).clone()));
                    self.start(address, Request::Release, lease);
                }
            }
        }
    }

    fn start(&mut self, address: IpAddr, request: Request, lease: Option<Lease>) {
        let client = self.lease_client.clone();
        self.in_flight.insert(address);
        self.requests.spawn(async move {
            let started = Instant::now();
            let result = match (&request, &lease) {
                (Request::Acquire, current) => {
                    client.acquire(address, current.as_ref()).await.map(Some)
                }
                (Request::Renew, Some(lease)) => client.renew(lease).await.map(Some),
                (Request::Release, Some(lease)) => client.release(lease).await.map(Some),
                (Request::Delete, Some(lease)) => client.delete(lease).await.map(|()| None),
                (_, None) => Ok(None),
            };
            Outcome { address, request, started, result }
        });
    }

    fn complete(&mut self, outcome: Outcome) {
        let Outcome { address, request, started, result } = outcome;
        self.in_flight.remove(&address);
        match (request, result) {
            (Request::Acquire | Request::Renew, Ok(Some(lease))) => {
                let deadline = started + self.local_hold();
                if deadline <= Instant::now() {
                    // The answer came too late to count; the next tick tries again.
                    return;
                }
                let new = !self.held.contains_key(&address);
                self.held.insert(address, Held { lease, deadline, renewed: started });
                if new {
                    tracing::info!(%address, "acquired load-balancer address");
                    self.publish();
                }
            }
            (Request::Renew, Err(err)) if err.is_conflict() => {
                // Someone else wrote the Lease: unless it was our own write whose answer was
                // lost (the watch shows us as holder), the address is no longer ours.
                let name = lease::lease_name(address);
                let current = self
                    .leases
                    .get(&reflector::ObjectRef::new(&name).within(&self.config.lease_namespace));
                match (current, self.held.get_mut(&address)) {
                    (Some(current), Some(held))
                        if lease::holder(&current) == Some(self.config.node_name.as_str()) =>
                    {
                        held.lease = (*current).clone();
                    }
                    _ => {
                        self.drop_local(address, "lease taken by another node");
                    }
                }
            }
            (Request::Acquire, Err(err)) if err.is_conflict() => {
                tracing::debug!(%address, "another node acquired the lease first");
            }
            (Request::Acquire, Err(err)) => {
                tracing::warn!(%address, error = %err, "lease acquisition failed");
                self.retry_after.insert(address, Instant::now() + self.config.renew_interval);
            }
            (Request::Renew, Err(err)) => {
                tracing::warn!(%address, error = %err, "lease renewal failed");
            }
            (Request::Release | Request::Delete, Err(err)) => {
                tracing::debug!(%address, error = %err, "lease release failed; it will expire");
            }
            (_, Ok(_)) => {}
        }
    }

    /// Drops addresses whose Lease could not be renewed in time.
    fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<IpAddr> =
            self.held.iter().filter(|(_, h)| h.deadline <= now).map(|(a, _)| *a).collect();
        for address in expired {
            self.drop_local(address, "lease not renewed in time");
        }
    }

    fn drop_local(&mut self, address: IpAddr, reason: &str) -> Option<Held> {
        let held = self.held.remove(&address)?;
        tracing::info!(%address, reason, "released load-balancer address");
        self.publish();
        Some(held)
    }

    /// How long after a write starts this node may keep the address: the Lease duration less
    /// a margin for the removal itself.
    fn local_hold(&self) -> Duration {
        let duration = self.config.lease_duration;
        duration.saturating_sub(duration / 10)
    }

    fn publish(&self) {
        let held: BTreeSet<IpAddr> = self.held.keys().copied().collect();
        self.held_tx.send_replace(held);
    }

    /// Drops everything and releases the Leases (best effort, bounded by the request timeout)
    /// so other nodes take over at once instead of after expiry.
    async fn shutdown(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.publish();
        self.requests.abort_all();
        let releases = held.values().map(|h| self.lease_client.release(&h.lease));
        for result in futures::future::join_all(releases).await {
            if let Err(err) = result {
                tracing::debug!(error = %err, "lease release on shutdown failed; it will expire");
            }
        }
    }
}

/// Applies the published held set to the interface until `cancel`, then removes everything.
async fn apply_held(
    announcer: Announcer,
    mut held: watch::Receiver<BTreeSet<IpAddr>>,
    cancel: CancellationToken,
) {
    let mut applied: BTreeSet<IpAddr> = BTreeSet::new();
    let mut garps: JoinSet<()> = JoinSet::new();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        let desired = held.borrow_and_update().clone();
        for address in applied.difference(&desired).copied().collect::<Vec<_>>() {
            match announcer.remove(address).await {
                Ok(()) => {
                    applied.remove(&address);
                }
                Err(err) => {
                    tracing::error!(%address, error = %err, "cannot remove load-balancer address")
                }
            }
        }
        for address in &desired {
            // `ip addr replace` is idempotent, so a resync also repairs a removed address.
            match announcer.add(*address).await {
                Ok(()) => {
                    if applied.insert(*address) {
                        tracing::info!(%address, interface = %announcer.interface, "announcing load-balancer address");
                        let announcer = announcer.clone();
                        let address = *address;
                        garps.spawn(async move {
                            if let Err(err) = announcer.announce(address).await {
                                tracing::warn!(%address, error = %err, "gratuitous ARP failed; neighbours learn the new owner only when their cache entry expires (is iputils-arping installed?)");
                            }
                        });
                    }
                }
                Err(err) => {
                    tracing::error!(%address, error = %err, "cannot add load-balancer address")
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            changed = held.changed() => if changed.is_err() { break },
            _ = resync.tick() => {}
            Some(_) = garps.join_next() => {}
        }
    }
    garps.abort_all();
    for address in applied {
        if let Err(err) = announcer.remove(address).await {
            tracing::error!(%address, error = %err, "cannot remove load-balancer address");
        }
    }
}

fn spawn_reflector<K>(
    api: Api<K>,
    config: watcher::Config,
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
        watcher(api, config)
            .modify(|object: &mut K| {
                object.meta_mut().managed_fields = None;
            })
            .default_backoff(),
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
                    tracing::warn!(kind = %K::kind(&K::DynamicType::default()), error = %err, "watch failed, retrying");
                }
                None => return,
            }
        }
    });
    reader
}

/// Who announces each address, from the speaker Leases in `namespace` (for `lab status`).
/// Expiry is not judged here: a Lease whose holder died still names it until taken over.
pub async fn announcers(client: Client, namespace: &str) -> Result<BTreeMap<IpAddr, String>> {
    let api = Api::<Lease>::namespaced(client, namespace);
    let params = kube::api::ListParams::default().labels(&format!(
        "{}={}",
        lease::MANAGED_BY_LABEL,
        lease::MANAGED_BY
    ));
    let list = api.list(&params).await.map_err(|err| Error::Lease {
        name: format!("{namespace}/*"),
        message: err.to_string(),
        conflict: false,
    })?;
    Ok(list
        .items
        .iter()
        .filter_map(|l| Some((lease::lease_address(l)?, lease::holder(l)?.to_string())))
        .collect())
}
