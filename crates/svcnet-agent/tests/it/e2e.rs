//! End to end against svcnet's API server in-process: scheduler, ReplicaSet and Deployment
//! controllers, the agent running real processes on loopback addresses, and the real kubectl.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

struct Cluster {
    dir: tempfile::TempDir,
    client: kube::Client,
    kubeconfig: PathBuf,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    async fn start(pod_range: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let server = svcnet_apiserver::start(
            svcnet_apiserver::Config {
                data_dir: dir.path().join("server"),
                listen: "127.0.0.1:0".parse().unwrap(),
                ..Default::default()
            },
            cancel.clone(),
        )
        .await
        .unwrap();
        let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let agent_config = svcnet_agent::Config {
            node_name: "node-1".into(),
            zone: Some("zone-a".into()),
            network: svcnet_agent::PodNetwork::Loopback { range: pod_range.parse().unwrap() },
            data_dir: dir.path().join("agent"),
            kubelet_port: 0,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            path: std::env::var("PATH").unwrap(),
            shutdown_grace: Duration::from_millis(500),
            ..Default::default()
        };
        let mut tasks = Vec::new();
        let (c, k) = (client.clone(), cancel.clone());
        tasks.push(tokio::spawn(
            async move { svcnet_agent::run(c, agent_config, k).await.unwrap() },
        ));
        let (c, k) = (client.clone(), cancel.clone());
        let workloads =
            svcnet_workloads::Config { resync: Duration::from_millis(500), ..Default::default() };
        tasks.push(tokio::spawn(
            async move { svcnet_workloads::run(c, workloads, k).await.unwrap() },
        ));
        Cluster { kubeconfig: server.kubeconfig.clone(), dir, client, cancel, tasks }
    }

    async fn stop(self) {
        self.cancel.cancel();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("component stops")
                .unwrap();
        }
        let pids = std::fs::read_dir(self.dir.path().join("agent/run/pids"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(pids, 0, "every pod process was stopped");
    }

    async fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let output = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kubectl-cache"))
            .args(args)
            .output()
            .await
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }

    async fn pods(&self) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        api.list(&ListParams::default().labels("app=web")).await.unwrap().items
    }
}

/// Polls `f` until it returns `Some` (30 s deadline).
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = f().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ready_running(pods: &[Pod]) -> Vec<Pod> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .cloned()
        .collect()
}

fn deployment(replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "main", "image": "busybox",
                        "command": ["sh", "-c", "echo started $POD_NAME $POD_IP $GREETING; exec sleep 300"],
                        "env": [{"name": "GREETING", "value": "v1"}],
                        "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}
                    }]
                }
            }
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_pods_run_restart_and_are_replaced() {
    let cluster = Cluster::start("127.42.0.0/16").await;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    deployments.create(&PostParams::default(), &deployment(2)).await.unwrap();
    let (ok, text) =
        cluster.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]).await;
    assert!(ok, "rollout status: {text}");
    let pods = ready_running(&cluster.pods().await);
    assert_eq!(pods.len(), 2);
    for pod in &pods {
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(status.pod_ip.as_deref().unwrap().starts_with("127.42."), "{status:?}");
        assert_eq!(pod.spec.as_ref().unwrap().node_name.as_deref(), Some("node-1"));
    }

    // kubectl logs reaches the agent's log endpoint through the API server.
    let name = pods[0].metadata.name.clone().unwrap();
    let ip = pods[0].status.as_ref().unwrap().pod_ip.clone().unwrap();
    let logs = eventually("logs", || async {
        let (ok, text) = cluster.kubectl(&["logs", &name]).await;
        (ok && text.contains("started")).then_some(text)
    })
    .await;
    assert_eq!(logs.trim(), format!("started {name} {ip} v1"));

    // A process killed from outside is restarted and counted.
    let pids_dir = cluster.dir.path().join("agent/run/pids");
    let uid = pods[0].metadata.uid.clone().unwrap();
    let pid: i32 = std::fs::read_to_string(pids_dir.join(format!("{uid}_main.pid")))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let pod_api: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    eventually("restart count", || async {
        let pod = pod_api.get(&name).await.ok()?;
        let statuses = pod.status?.container_statuses?;
        (statuses[0].restart_count >= 1 && statuses[0].ready).then_some(())
    })
    .await;

    // A deleted pod is stopped, removed, and replaced.
    pod_api.delete(&name, &DeleteParams::default()).await.unwrap();
    eventually("replacement", || async {
        let pods = cluster.pods().await;
        let names: Vec<String> = pods.iter().filter_map(|p| p.metadata.name.clone()).collect();
        (!names.contains(&name) && ready_running(&pods).len() == 2).then_some(())
    })
    .await;

    // kubectl scale goes through the scale subresource.
    let (ok, text) = cluster.kubectl(&["scale", "deployment/web", "--replicas=3"]).await;
    assert!(ok, "{text}");
    eventually("three replicas", || async {
        (ready_running(&cluster.pods().await).len() == 3).then_some(())
    })
    .await;

    // A template change rolls out a new ReplicaSet.
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "env": [{"name": "GREETING", "value": "v2"}]}]}}}});
    deployments.patch("web", &PatchParams::default(), &Patch::Strategic(&patch)).await.unwrap();
    let (ok, text) =
        cluster.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]).await;
    assert!(ok, "rollout status: {text}");
    eventually("only new pods", || async {
        let pods = cluster.pods().await;
        let live: Vec<&Pod> =
            pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        let hashes: std::collections::BTreeSet<String> = live
            .iter()
            .filter_map(|p| p.metadata.labels.as_ref()?.get("pod-template-hash").cloned())
            .collect();
        (live.len() == 3 && hashes.len() == 1 && ready_running(&pods).len() == 3).then_some(())
    })
    .await;

    let (ok, text) = cluster.kubectl(&["scale", "deployment/web", "--replicas=1"]).await;
    assert!(ok, "{text}");
    eventually("one replica", || async { (cluster.pods().await.len() == 1).then_some(()) }).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_without_command_fails_with_an_event() {
    let cluster = Cluster::start("127.43.0.0/16").await;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "nginx", "namespace": "default"},
        "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = eventually("failed phase", || async {
        let status = pods.get("nginx").await.ok()?.status?;
        (status.phase.as_deref() == Some("Failed")).then_some(status)
    })
    .await;
    assert_eq!(status.reason.as_deref(), Some("NoCommand"));
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    eventually("NoCommand event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("NoCommand") && e.type_.as_deref() == Some("Warning")
            })
            .then_some(())
    })
    .await;
    cluster.stop().await;
}
