//! The I/O edge: reflectors for the four kinds, one level-triggered pass per change.
//!
//! Each pass reads the caches, runs the scheduler, then the ReplicaSet and Deployment
//! controllers, and writes what the pure cores decided. Writes made in a pass may not be in the
//! caches for the next one, so pods created or deleted recently are remembered for a short while
//! (the "expectations" of the upstream controllers) to avoid creating twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::deployment::{self, ReplicaSetView};
use crate::error::Result;
use crate::labels::{name_suffix, selector_matches};
use crate::replicaset;
use crate::scheduler;

/// How long a write is remembered while the caches catch up.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);
/// Objects younger than this are never garbage collected (their owner may be in flight).
const GC_MIN_AGE_SECONDS: i64 = 10;

fn spawn_reflector<K>(api: Api<K>, notify: Arc<Notify>, cancel: CancellationToken) -> Store<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                item = stream.next() => match item {
                    Some(Ok(_)) => notify.notify_one(),
                    Some(Err(err)) => tracing::debug!(error = %err, "workload watch error; retrying"),
                    None => return,
                },
            }
        }
    });
    reader
}

#[derive(Default)]
struct Expectations {
    /// Pods created per owner uid: name and when.
    created: HashMap<String, Vec<(String, Instant)>>,
    /// Pods deleted, by `namespace/name`.
    deleted: HashMap<String, Instant>,
    /// Pods bound by the scheduler, by uid: node and when.
    bound: HashMap<String, (String, Instant)>,
}

impl Expectations {
    fn expire(&mut self) {
        let now = Instant::now();
        for entries in self.created.values_mut() {
            entries.retain(|(_, at)| now.duration_since(*at) < EXPECTATION_TTL);
        }
        self.created.retain(|_, entries| !entries.is_empty());
        self.deleted.retain(|_, at| now.duration_since(*at) < EXPECTATION_TTL);
        self.bound.retain(|_, (_, at)| now.duration_since(*at) < EXPECTATION_TTL);
    }
}

struct Caches {
    pods: Store<Pod>,
    nodes: Store<Node>,
    replicasets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
}

fn key(meta: &ObjectMeta) -> String {
    format!("{}/{}", meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or(""))
}

fn now_seconds() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn age_seconds(meta: &ObjectMeta) -> i64 {
    meta.creation_timestamp.as_ref().map_or(i64::MAX, |t| now_seconds() - t.0.as_second())
}

/// Runs the enabled controllers until `cancel` fires.
pub async fn run(client: Client, config: Config, cancel: CancellationToken) -> Result<()> {
    let notify = Arc::new(Notify::new());
    let caches = Caches {
        pods: spawn_reflector(Api::<Pod>::all(client.clone()), notify.clone(), cancel.clone()),
        nodes: spawn_reflector(Api::<Node>::all(client.clone()), notify.clone(), cancel.clone()),
        replicasets: spawn_reflector(
            Api::<ReplicaSet>::all(client.clone()),
            notify.clone(),
            cancel.clone(),
        ),
        deployments: spawn_reflector(
            Api::<Deployment>::all(client.clone()),
            notify.clone(),
            cancel.clone(),
        ),
    };
    let ready = async {
        let _ = caches.pods.wait_until_ready().await;
        let _ = caches.nodes.wait_until_ready().await;
        let _ = caches.replicasets.wait_until_ready().await;
        let _ = caches.deployments.wait_until_ready().await;
    };
    tokio::select! {
        () = cancel.cancelled() => return Ok(()),
        () = ready => {}
    }
    tracing::info!("workload controllers started");
    let mut expectations = Expectations::default();
    loop {
        expectations.expire();
        if config.scheduler {
            schedule_pass(&client, &config, &caches, &mut expectations).await;
        }
        if config.deployments {
            deployment_pass(&client, &caches).await;
        }
        if config.replicasets {
            replicaset_pass(&client, &caches, &mut expectations).await;
        }
        if config.garbage_collect {
            gc_pass(&client, &caches, &mut expectations).await;
        }
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = notify.notified() => {
                // Let a burst of events land before the next pass.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            () = tokio::time::sleep(config.resync) => {}
        }
    }
}

async fn schedule_pass(
    client: &Client,
    config: &Config,
    caches: &Caches,
    expectations: &mut Expectations,
) {
    let nodes: Vec<Node> = caches.nodes.state().iter().map(|n| (**n).clone()).collect();
    let pods = caches.pods.state();
    let mut placed: Vec<(Pod, String)> = Vec::new();
    let mut pending: Vec<Arc<Pod>> = Vec::new();
    for pod in &pods {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
        match (node, expectations.bound.get(&uid)) {
            (Some(node), _) => {
                if replicaset::is_active(pod) {
                    placed.push(((**pod).clone(), node));
                }
            }
            (None, Some((node, _))) => placed.push(((**pod).clone(), node.clone())),
            (None, None) if scheduler::wants_scheduling(pod, &config.scheduler_name) => {
                pending.push(pod.clone())
            }
            (None, None) => {}
        }
    }
    pending.sort_by_key(|p| (p.metadata.creation_timestamp.clone(), p.metadata.name.clone()));
    for pod in pending {
        let Some(node) = scheduler::choose_node(&pod, &nodes, &placed) else {
            tracing::debug!(pod = %key(&pod.metadata), "no node fits");
            continue;
        };
        match bind(client, &pod, &node).await {
            Ok(()) => {
                tracing::info!(pod = %key(&pod.metadata), %node, "pod scheduled");
                expectations.bound.insert(
                    pod.metadata.uid.clone().unwrap_or_default(),
                    (node.clone(), Instant::now()),
                );
                placed.push(((*pod).clone(), node));
            }
            Err(err) => tracing::warn!(pod = %key(&pod.metadata), error = %err, "binding failed"),
        }
    }
}

async fn bind(client: &Client, pod: &Pod, node: &str) -> Result<()> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Node".to_string()),
            name: Some(node.to_string()),
            ..Default::default()
        },
    };
    match api
        .create_subresource::<Binding, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 405 => {
            // The server does not serve pods/binding: set spec.nodeName directly.
            let patch = serde_json::json!({"spec": {"nodeName": node}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(drop)
                .map_err(|e| crate::Error::kube("patching spec.nodeName", e))
        }
        Err(err) => Err(crate::Error::kube("binding the pod", err)),
    }
}

/// Pods controlled by `owner_uid`, minus those deleted recently.
fn owned_pods<'a>(
    pods: &'a [Arc<Pod>],
    owner_uid: &str,
    expectations: &Expectations,
) -> Vec<&'a Pod> {
    pods.iter()
        .filter(|p| replicaset::controller_of(&p.metadata).is_some_and(|o| o.uid == owner_uid))
        .filter(|p| !expectations.deleted.contains_key(&key(&p.metadata)))
        .map(|p| p.as_ref())
        .collect()
}

async fn replicaset_pass(client: &Client, caches: &Caches, expectations: &mut Expectations) {
    let pods = caches.pods.state();
    for rs in caches.replicasets.state() {
        if rs.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(uid) = rs.metadata.uid.clone() else { continue };
        let namespace = rs.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
        let rs_name = rs.metadata.name.clone().unwrap_or_default();
        let selector = rs.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
        let owned: Vec<&Pod> = owned_pods(&pods, &uid, expectations)
            .into_iter()
            .filter(|p| selector_matches(&selector, &p.metadata.labels.clone().unwrap_or_default()))
            .collect();
        // A created pod seen in the cache (in any state) no longer needs remembering.
        let seen: std::collections::HashSet<&str> = pods
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        let pending = match expectations.created.get_mut(&uid) {
            Some(entries) => {
                entries.retain(|(name, _)| !seen.contains(name.as_str()));
                entries.len()
            }
            None => 0,
        };
        let replicas = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let plan = replicaset::plan(replicas, &owned, pending);
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        for _ in 0..plan.create {
            let name = format!("{rs_name}-{}", name_suffix());
            let pod = replicaset::new_pod(&rs, name.clone());
            match api.create(&PostParams::default(), &pod).await {
                Ok(created) => {
                    let created_name = created.metadata.name.unwrap_or(name);
                    tracing::info!(replicaset = %key(&rs.metadata), pod = %created_name, "pod created");
                    expectations
                        .created
                        .entry(uid.clone())
                        .or_default()
                        .push((created_name, Instant::now()));
                }
                Err(err) => {
                    tracing::warn!(replicaset = %key(&rs.metadata), error = %err, "creating a pod failed")
                }
            }
        }
        for name in &plan.delete {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(replicaset = %key(&rs.metadata), pod = %name, "pod deleted");
                    expectations.deleted.insert(format!("{namespace}/{name}"), Instant::now());
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(err) => {
                    tracing::warn!(replicaset = %key(&rs.metadata), error = %err, "deleting a pod failed")
                }
            }
        }
        let status = replicaset::status(&rs, &owned, now_seconds());
        if rs.status.as_ref() != Some(&status) {
            let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), &namespace);
            let patch = serde_json::json!({"status": status});
            if let Err(err) =
                rs_api.patch_status(&rs_name, &PatchParams::default(), &Patch::Merge(&patch)).await
            {
                tracing::debug!(replicaset = %key(&rs.metadata), error = %err, "writing status failed");
            }
        }
    }
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(deployment::REVISION_ANNOTATION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn view(rs: &ReplicaSet) -> ReplicaSetView {
    ReplicaSetView {
        name: rs.metadata.name.clone().unwrap_or_default(),
        replicas: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
        available: rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0),
    }
}

async fn deployment_pass(client: &Client, caches: &Caches) {
    let all_rs = caches.replicasets.state();
    let pods = caches.pods.state();
    for deploy in caches.deployments.state() {
        if deploy.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(uid) = deploy.metadata.uid.clone() else { continue };
        let namespace = deploy.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
        let name = deploy.metadata.name.clone().unwrap_or_default();
        let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), &namespace);
        let mut owned: Vec<Arc<ReplicaSet>> = all_rs
            .iter()
            .filter(|rs| replicaset::controller_of(&rs.metadata).is_some_and(|o| o.uid == uid))
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .cloned()
            .collect();
        owned.sort_by_key(|rs| revision(rs));
        let hash = deployment::current_hash(&deploy);
        let new_name = format!("{name}-{hash}");
        let mut new_rs: Option<Arc<ReplicaSet>> =
            owned.iter().find(|rs| rs.metadata.name.as_deref() == Some(new_name.as_str())).cloned();
        let olds: Vec<Arc<ReplicaSet>> = owned
            .iter()
            .filter(|rs| rs.metadata.name.as_deref() != Some(new_name.as_str()))
            .cloned()
            .collect();
        let desired = deploy.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        if new_rs.is_none() {
            let next_revision = owned.iter().map(|rs| revision(rs)).max().unwrap_or(0) + 1;
            let mut rs = deployment::new_replica_set(&deploy, next_revision);
            let old_views: Vec<ReplicaSetView> = olds.iter().map(|rs| view(rs)).collect();
            let new_view = ReplicaSetView { name: new_name.clone(), replicas: 0, available: 0 };
            let (surge, unavailable) = deployment::surge_and_unavailable(&deploy);
            let initial = if is_recreate(&deploy) {
                0
            } else {
                deployment::rolling_step(desired, surge, unavailable, &new_view, &old_views)
                    .into_iter()
                    .find(|(n, _)| *n == new_name)
                    .map_or(0, |(_, r)| r)
            };
            if let Some(spec) = rs.spec.as_mut() {
                spec.replicas = Some(initial);
            }
            match rs_api.create(&PostParams::default(), &rs).await {
                Ok(created) => {
                    tracing::info!(deployment = %key(&deploy.metadata), replicaset = %new_name, replicas = initial, "replicaset created");
                    new_rs = Some(Arc::new(created));
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    // Either the cache is behind or a ReplicaSet of another owner has the name.
                    match rs_api.get(&new_name).await {
                        Ok(existing)
                            if replicaset::controller_of(&existing.metadata)
                                .is_some_and(|o| o.uid == uid) =>
                        {
                            new_rs = Some(Arc::new(existing));
                        }
                        _ => {
                            bump_collision_count(client, &deploy).await;
                            continue;
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(deployment = %key(&deploy.metadata), error = %err, "creating a replicaset failed");
                    continue;
                }
            }
        }
        let Some(new_rs) = new_rs else { continue };
        let old_views: Vec<ReplicaSetView> = olds.iter().map(|rs| view(rs)).collect();
        let changes = if is_recreate(&deploy) {
            let old_uids: Vec<String> =
                olds.iter().filter_map(|rs| rs.metadata.uid.clone()).collect();
            let old_running = pods.iter().any(|p| {
                replicaset::controller_of(&p.metadata).is_some_and(|o| old_uids.contains(&o.uid))
                    && p.status
                        .as_ref()
                        .and_then(|s| s.phase.as_deref())
                        .is_some_and(|ph| ph == "Running" || ph == "Pending")
            });
            deployment::recreate_step(desired, &view(&new_rs), &old_views, old_running)
        } else {
            let (surge, unavailable) = deployment::surge_and_unavailable(&deploy);
            deployment::rolling_step(desired, surge, unavailable, &view(&new_rs), &old_views)
        };
        for (rs_name, replicas) in &changes {
            let patch = serde_json::json!({"spec": {"replicas": replicas}});
            match rs_api.patch(rs_name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    tracing::info!(deployment = %key(&deploy.metadata), replicaset = %rs_name, replicas, "replicaset scaled")
                }
                Err(err) => {
                    tracing::warn!(deployment = %key(&deploy.metadata), error = %err, "scaling a replicaset failed")
                }
            }
        }
        // Old ReplicaSets beyond revisionHistoryLimit that are empty go away.
        let limit = usize::try_from(
            deploy.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10),
        )
        .unwrap_or(10);
        let empty_olds: Vec<&Arc<ReplicaSet>> = olds
            .iter()
            .filter(|rs| {
                view(rs).replicas == 0 && rs.status.as_ref().is_none_or(|s| s.replicas == 0)
            })
            .collect();
        if empty_olds.len() > limit {
            for rs in &empty_olds[..empty_olds.len() - limit] {
                let _ = rs_api
                    .delete(rs.metadata.name.as_deref().unwrap_or(""), &DeleteParams::default())
                    .await;
            }
        }
        let old_refs: Vec<&ReplicaSet> = olds.iter().map(|rs| rs.as_ref()).collect();
        let status =
            deployment::status(&deploy, Some(&new_rs), &old_refs, &Time(jiff::Timestamp::now()));
        if deploy.status.as_ref() != Some(&status) {
            let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
            let patch = serde_json::json!({"status": status});
            if let Err(err) =
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await
            {
                tracing::debug!(deployment = %key(&deploy.metadata), error = %err, "writing status failed");
            }
        }
        let revision_now = revision(&new_rs).to_string();
        let current = deploy
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(deployment::REVISION_ANNOTATION))
            .cloned();
        if current.as_deref() != Some(revision_now.as_str()) {
            let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
            let patch = serde_json::json!({"metadata": {"annotations": {deployment::REVISION_ANNOTATION: revision_now}}});
            let _ = api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
        }
    }
}

fn is_recreate(deploy: &Deployment) -> bool {
    deploy.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

async fn bump_collision_count(client: &Client, deploy: &Deployment) {
    let namespace = deploy.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
    let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let count = deploy.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0) + 1;
    let patch = serde_json::json!({"status": {"collisionCount": count}});
    let _ = api
        .patch_status(
            deploy.metadata.name.as_deref().unwrap_or(""),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await;
}

/// Deletes pods of vanished ReplicaSets and ReplicaSets of vanished Deployments.
async fn gc_pass(client: &Client, caches: &Caches, expectations: &mut Expectations) {
    let rs_uids: BTreeMap<String, ()> = caches
        .replicasets
        .state()
        .iter()
        .filter_map(|rs| rs.metadata.uid.clone())
        .map(|u| (u, ()))
        .collect();
    let deploy_uids: BTreeMap<String, ()> = caches
        .deployments
        .state()
        .iter()
        .filter_map(|d| d.metadata.uid.clone())
        .map(|u| (u, ()))
        .collect();
    for rs in caches.replicasets.state() {
        let Some(owner) = replicaset::controller_of(&rs.metadata) else { continue };
        if owner.kind == "Deployment"
            && !deploy_uids.contains_key(&owner.uid)
            && age_seconds(&rs.metadata) > GC_MIN_AGE_SECONDS
            && rs.metadata.deletion_timestamp.is_none()
        {
            let api: Api<ReplicaSet> = Api::namespaced(
                client.clone(),
                rs.metadata.namespace.as_deref().unwrap_or("default"),
            );
            tracing::info!(replicaset = %key(&rs.metadata), "owner gone; deleting");
            let _ = api
                .delete(rs.metadata.name.as_deref().unwrap_or(""), &DeleteParams::default())
                .await;
        }
    }
    for pod in caches.pods.state() {
        let Some(owner) = replicaset::controller_of(&pod.metadata) else { continue };
        let pod_key = key(&pod.metadata);
        if owner.kind == "ReplicaSet"
            && !rs_uids.contains_key(&owner.uid)
            && age_seconds(&pod.metadata) > GC_MIN_AGE_SECONDS
            && pod.metadata.deletion_timestamp.is_none()
            && !expectations.deleted.contains_key(&pod_key)
        {
            let api: Api<Pod> = Api::namespaced(
                client.clone(),
                pod.metadata.namespace.as_deref().unwrap_or("default"),
            );
            tracing::info!(pod = %pod_key, "owner gone; deleting");
            if api
                .delete(pod.metadata.name.as_deref().unwrap_or(""), &DeleteParams::default())
                .await
                .is_ok()
            {
                expectations.deleted.insert(pod_key, Instant::now());
            }
        }
    }
}
