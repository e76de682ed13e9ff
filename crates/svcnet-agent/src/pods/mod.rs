//! The pod runner: runs the Pods bound to this node as processes and reports their status.
//!
//! The API edge lives here: a watch on Pods with `spec.nodeName == <node>` feeds one supervisor
//! task per pod, which gives the pod an address ([`network`]), starts it with the runner core
//! ([`runner`]), writes `status` through the status subresource whenever the rendered status
//! ([`status`]) changes, posts Events, and on `deletionTimestamp` stops the processes and
//! deletes the Pod with `gracePeriodSeconds=0`, as the kubelet does. Pod spec updates after
//! start (other than deletion) are ignored, as pods are immutable in the fields svcnet uses.

pub mod backoff;
pub mod logs;
pub mod network;
pub mod orphans;
pub mod probe;
pub mod resolv;
pub mod runner;
pub mod spec;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use network::{IpPool, PodNetwork};
use runner::{PodSandbox, RunnerConfig, RuntimeEvent};

/// Settings of the pod runner.
#[derive(Clone, Debug)]
pub struct PodsConfig {
    pub node_name: String,
    /// The node's address (status.hostIP).
    pub host_ip: IpAddr,
    pub network: PodNetwork,
    pub runner: RunnerConfig,
    pub cluster_domain: String,
    /// Cluster DNS servers written into pod resolv.conf (bridge mode).
    pub dns: Vec<IpAddr>,
    /// How long pods get to stop when the agent itself stops.
    pub shutdown_grace: Duration,
}

impl Default for PodsConfig {
    fn default() -> Self {
        PodsConfig {
            node_name: "node-1".to_string(),
            host_ip: IpAddr::from([127, 0, 0, 1]),
            network: PodNetwork::default(),
            runner: RunnerConfig::default(),
            cluster_domain: "cluster.local".to_string(),
            dns: Vec::new(),
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

struct Shared {
    client: Client,
    config: PodsConfig,
    runner: Arc<RunnerConfig>,
    pool: Mutex<IpPool>,
}

fn new_pool(network: &PodNetwork) -> IpPool {
    match network {
        PodNetwork::Loopback { range } => IpPool::new(*range, []),
        PodNetwork::Bridge { pod_cidr, .. } => IpPool::new(*pod_cidr, network::gateway(*pod_cidr)),
    }
}

/// Runs the pods of `config.node_name` until `cancel` fires, then stops them.
pub async fn run(client: Client, config: PodsConfig, cancel: CancellationToken) -> Result<()> {
    let (killed, namespaces) = orphans::cleanup(&config.runner.data_dir).await;
    if killed + namespaces > 0 {
        tracing::info!(killed, namespaces, "cleaned up after an earlier run");
    }
    std::fs::create_dir_all(config.runner.data_dir.join("logs"))
        .map_err(|e| Error::io(format!("creating {}", config.runner.data_dir.display()), e))?;
    if let PodNetwork::Bridge { bridge, pod_cidr, node_netns, .. } = &config.network {
        network::ensure_bridge(node_netns.as_deref(), bridge, *pod_cidr).await?;
    }
    let shared = Arc::new(Shared {
        client: client.clone(),
        runner: Arc::new(config.runner.clone()),
        pool: Mutex::new(new_pool(&config.network)),
        config: config.clone(),
    });
    let node = config.node_name.clone();
    let api: Api<Pod> = Api::all(client);
    let watch_config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = watcher(api, watch_config).default_backoff().boxed();
    let mut supervisors: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut seen_in_list: HashSet<String> = HashSet::new();
    let (finished_tx, mut finished_rx) = mpsc::unbounded_channel::<String>();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => break,
            Some(uid) = finished_rx.recv() => {
                supervisors.remove(&uid);
                continue;
            }
            event = events.next() => event,
        };
        let Some(event) = event else { break };
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!(error = %err, "pod watch failed; retrying");
                continue;
            }
        };
        let (pod, deleted) = match event {
            watcher::Event::Init => {
                seen_in_list.clear();
                continue;
            }
            watcher::Event::InitDone => {
                for (uid, sender) in &supervisors {
                    if !seen_in_list.contains(uid) {
                        let _ = sender.send(None);
                    }
                }
                continue;
            }
            watcher::Event::InitApply(pod) => {
                if let Some(uid) = &pod.metadata.uid {
                    seen_in_list.insert(uid.clone());
                }
                (pod, false)
            }
            watcher::Event::Apply(pod) => (pod, false),
            watcher::Event::Delete(pod) => (pod, true),
        };
        let bound_here =
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str());
        let Some(uid) = pod.metadata.uid.clone() else { continue };
        if let Some(sender) = supervisors.get(&uid) {
            let _ = sender.send(if deleted || !bound_here { None } else { Some(pod) });
            continue;
        }
        if deleted || !bound_here {
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
        let terminal = phase == "Succeeded" || phase == "Failed";
        if pod.metadata.deletion_timestamp.is_some() {
            // Not running here (agent restart or never started): finish the deletion.
            let shared = shared.clone();
            tasks.spawn(async move { delete_now(&shared, &pod).await });
            continue;
        }
        if terminal {
            continue;
        }
        let (sender, receiver) = watch::channel(Some(pod.clone()));
        supervisors.insert(uid.clone(), sender);
        let shared = shared.clone();
        let finished = finished_tx.clone();
        let cancel = cancel.clone();
        tasks.spawn(async move {
            supervise(shared, pod, receiver, cancel).await;
            let _ = finished.send(uid);
        });
    }
    // Supervisors see the cancellation and stop their pods.
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

fn pod_key(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_else(|| "default".to_string()),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

async fn delete_now(shared: &Shared, pod: &Pod) {
    let (namespace, name) = pod_key(pod);
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &namespace);
    let mut params = DeleteParams::default().grace_period(0);
    if let Some(uid) = &pod.metadata.uid {
        params = params.preconditions(kube::api::Preconditions {
            uid: Some(uid.clone()),
            resource_version: None,
        });
    }
    match api.delete(&name, &params).await {
        Ok(_) => tracing::info!(pod = %format!("{namespace}/{name}"), "pod deleted"),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
        Err(err) => {
            tracing::warn!(pod = %format!("{namespace}/{name}"), error = %err, "deleting pod failed")
        }
    }
}

async fn post_event(shared: &Shared, pod: &Pod, event: &RuntimeEvent) {
    let (namespace, name) = pod_key(pod);
    let now = jiff::Timestamp::now();
    let nanos = now.as_nanosecond();
    let object = Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{nanos:x}")),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Pod".to_string()),
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            field_path: event.field_path.clone(),
        },
        reason: Some(event.reason.clone()),
        message: Some(event.message.clone()),
        type_: Some(if event.warning { "Warning" } else { "Normal" }.to_string()),
        source: Some(EventSource {
            component: Some("kubelet".to_string()),
            host: Some(shared.config.node_name.clone()),
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        count: Some(1),
        reporting_component: Some("svcnet-agent".to_string()),
        reporting_instance: Some(shared.config.node_name.clone()),
        action: Some(event.reason.clone()),
        ..Default::default()
    };
    if event.warning {
        tracing::warn!(pod = %format!("{namespace}/{name}"), reason = %event.reason, message = %event.message, "pod event");
    } else {
        tracing::debug!(pod = %format!("{namespace}/{name}"), reason = %event.reason, message = %event.message, "pod event");
    }
    let api: Api<Event> = Api::namespaced(shared.client.clone(), &namespace);
    if let Err(err) = api.create(&PostParams::default(), &object).await {
        tracing::debug!(error = %err, "posting event failed");
    }
}

async fn write_status(
    shared: &Shared,
    pod: &Pod,
    status: &k8s_openapi::api::core::v1::PodStatus,
) -> bool {
    let (namespace, name) = pod_key(pod);
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &namespace);
    let patch = serde_json::json!({ "status": status });
    match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => true,
        Err(err) => {
            tracing::debug!(pod = %format!("{namespace}/{name}"), error = %err, "writing pod status failed");
            false
        }
    }
}

/// Gives the pod an address and (bridge mode) a namespace; `Err` is the reason for the Event.
async fn sandbox_for(shared: &Shared, pod: &Pod) -> Result<PodSandbox> {
    let preferred: Option<IpAddr> =
        pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok());
    let ip = {
        let mut pool = shared
            .pool
            .lock()
            .map_err(|_| Error::Config("pod address pool poisoned".to_string()))?;
        pool.allocate(preferred)?
    };
    let config = &shared.config;
    match &config.network {
        PodNetwork::Loopback { .. } => Ok(PodSandbox {
            pod_ip: IpAddr::V4(ip),
            host_ip: config.host_ip,
            netns: None,
            check_ports: true,
        }),
        PodNetwork::Bridge { bridge, pod_cidr, routes, node_netns } => {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let netns = network::netns_name(&config.node_name, &uid);
            let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
            let resolv = resolv::resolv_conf(&namespace, &config.cluster_domain, &config.dns);
            orphans::record_netns(&config.runner.data_dir, &netns);
            if let Err(err) = network::setup_pod_netns(
                node_netns.as_deref(),
                &netns,
                &uid,
                bridge,
                *pod_cidr,
                ip,
                routes,
                &resolv,
            )
            .await
            {
                network::teardown_pod_netns(&netns).await;
                orphans::forget_netns(&config.runner.data_dir, &netns);
                release(shared, IpAddr::V4(ip));
                return Err(err);
            }
            Ok(PodSandbox {
                pod_ip: IpAddr::V4(ip),
                host_ip: config.host_ip,
                netns: Some(netns),
                check_ports: false,
            })
        }
    }
}

fn release(shared: &Shared, ip: IpAddr) {
    if let Ok(mut pool) = shared.pool.lock() {
        pool.release(ip);
    }
}

fn deletion_grace(pod: &Pod) -> Duration {
    match pod.metadata.deletion_grace_period_seconds {
        Some(seconds) => Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
        None => runner::termination_grace(pod),
    }
}

async fn supervise(
    shared: Arc<Shared>,
    mut pod: Pod,
    mut updates: watch::Receiver<Option<Pod>>,
    cancel: CancellationToken,
) {
    let (namespace, name) = pod_key(&pod);
    let sandbox = match sandbox_for(&shared, &pod).await {
        Ok(sandbox) => sandbox,
        Err(err) => {
            let event = RuntimeEvent {
                warning: true,
                reason: "FailedCreatePodSandBox".to_string(),
                message: format!("Failed to create pod sandbox: {err}"),
                field_path: None,
            };
            post_event(&shared, &pod, &event).await;
            let status = serde_json::json!({"phase": "Pending", "reason": "FailedCreatePodSandBox", "message": event.message});
            let api: Api<Pod> = Api::namespaced(shared.client.clone(), &namespace);
            let _ = api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&serde_json::json!({"status": status})),
                )
                .await;
            return;
        }
    };
    tracing::info!(pod = %format!("{namespace}/{name}"), pod_ip = %sandbox.pod_ip, "starting pod");
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let mut handle = runner::start_pod(&pod, sandbox.clone(), shared.runner.clone(), events_tx);
    let mut status_rx = handle.status.clone();
    let mut written: Option<k8s_openapi::api::core::v1::PodStatus> = pod.status.clone();
    let mut last_write_ok = false;
    let mut deleting = false;
    let mut gone = false;
    let mut stopping_for_shutdown = false;
    let mut closed = false;
    let mut retry = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            () = cancel.cancelled(), if !stopping_for_shutdown => {
                stopping_for_shutdown = true;
                handle.terminate(shared.config.shutdown_grace);
            }
            Some(event) = events_rx.recv() => {
                if !stopping_for_shutdown {
                    post_event(&shared, &pod, &event).await;
                }
            }
            changed = updates.changed() => {
                if changed.is_err() {
                    gone = true;
                    handle.terminate(Duration::ZERO);
                    continue;
                }
                let update = updates.borrow_and_update().clone();
                match update {
                    None => {
                        gone = true;
                        handle.terminate(Duration::ZERO);
                    }
                    Some(update) => {
                        pod.metadata = update.metadata.clone();
                        if pod.metadata.deletion_timestamp.is_some() && !deleting {
                            deleting = true;
                            let grace = deletion_grace(&pod);
                            tracing::info!(pod = %format!("{namespace}/{name}"), ?grace, "stopping pod for deletion");
                            handle.terminate(grace);
                        }
                    }
                }
            }
            changed = status_rx.changed() => {
                // Closed: every container has ended; the final status is still written below.
                closed = changed.is_err();
            }
            _ = retry.tick(), if !last_write_ok => {}
        }
        let runtime = status_rx.borrow_and_update().clone();
        if !stopping_for_shutdown && !gone {
            let status =
                status::pod_status(&runtime, written.as_ref(), &Time(jiff::Timestamp::now()));
            if written.as_ref() != Some(&status) || !last_write_ok {
                last_write_ok = write_status(&shared, &pod, &status).await;
                written = Some(status);
            }
        }
        if closed || (runtime.terminated && (deleting || gone || stopping_for_shutdown)) {
            break;
        }
    }
    handle.wait().await;
    // Events queued while stopping still go out unless the agent is shutting down.
    while let Ok(event) = events_rx.try_recv() {
        if !stopping_for_shutdown && !gone {
            post_event(&shared, &pod, &event).await;
        }
    }
    if let Some(netns) = &sandbox.netns {
        network::teardown_pod_netns(netns).await;
        orphans::forget_netns(&shared.config.runner.data_dir, netns);
    }
    release(&shared, sandbox.pod_ip);
    if (deleting || gone) && !stopping_for_shutdown {
        let _ = std::fs::remove_dir_all(
            shared.config.runner.data_dir.join("logs").join(&namespace).join(&name),
        );
    }
    if deleting && !gone && !stopping_for_shutdown {
        delete_now(&shared, &pod).await;
    }
    tracing::info!(pod = %format!("{namespace}/{name}"), "pod stopped");
}
