#![allow(clippy::unwrap_used)]
//! Issue 7, end to end against svcnet's API server in-process: scheduler, ReplicaSet and Deployment
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
        Cluster::start_with(pod_range, |_| {}).await
    }

    async fn start_with(pod_range: &str, tweak: impl FnOnce(&mut svcnet_agent::Config)) -> Cluster {
        Cluster::start_full(pod_range, None, tweak).await
    }

    /// With `service_range`, also runs the controllers and the in-process userspace proxy: the
    /// composition `svcnet up` uses without root.
    async fn start_full(
        pod_range: &str,
        service_range: Option<&str>,
        tweak: impl FnOnce(&mut svcnet_agent::Config),
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let mut server_config = svcnet_apiserver::Config {
            data_dir: dir.path().join("server"),
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        };
        if let Some(range) = service_range {
            server_config.service_cluster_ip_ranges = vec![range.parse().unwrap()];
        }
        let server = svcnet_apiserver::start(server_config, cancel.clone()).await.unwrap();
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
        let mut agent_config = agent_config;
        let mut tasks = Vec::new();
        if service_range.is_some() {
            agent_config.proxy = Some(svcnet_proxy::Config {
                dataplane: svcnet_proxy::DataPlaneKind::Userspace,
                node_ips: vec!["127.0.0.1".parse().unwrap()],
                metrics_bind_address: None,
                healthz_bind_address: None,
                ..Default::default()
            });
            let controllers =
                svcnet_controllers::Config { load_balancer: false, ..Default::default() };
            let (c, k) = (client.clone(), cancel.clone());
            tasks.push(tokio::spawn(async move {
                svcnet_controllers::run(c, controllers, k).await.unwrap()
            }));
        }
        tweak(&mut agent_config);
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
        self.pods_with("app=web").await
    }

    async fn pods_with(&self, selector: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        api.list(&ListParams::default().labels(selector)).await.unwrap().items
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

/// The `svcnet` binary's directory first, so `command: ["svcnet", …]` runs the binary under test.
fn path_with_svcnet() -> String {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_svcnet"));
    format!("{}:{}", bin.parent().unwrap().display(), std::env::var("PATH").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_example_answers_and_logs() {
    let cluster =
        Cluster::start_with("127.44.0.0/16", |config| config.path = path_with_svcnet()).await;
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/echo-deployment.yaml");
    let (ok, text) = cluster.kubectl(&["apply", "-f", manifest]).await;
    assert!(ok, "apply: {text}");
    let (ok, text) =
        cluster.kubectl(&["rollout", "status", "deployment/echo", "--timeout=60s"]).await;
    assert!(ok, "rollout status: {text}");
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let pods =
        ready_running(&api.list(&ListParams::default().labels("app=echo")).await.unwrap().items);
    assert_eq!(pods.len(), 3);
    for pod in &pods {
        let name = pod.metadata.name.clone().unwrap();
        let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
        let mut stream = tokio::net::TcpStream::connect((ip.as_str(), 8080)).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let body = response.split_once("\r\n\r\n").unwrap().1;
        let json: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
        assert_eq!(json["pod"], name.as_str());
        assert_eq!(json["podIP"], ip.as_str());
        assert_eq!(json["path"], "/hello");
        let logs = eventually("echo log", || async {
            let (ok, text) = cluster.kubectl(&["logs", &name]).await;
            (ok && text.contains("path /hello")).then_some(text)
        })
        .await;
        assert!(logs.contains(&format!("listening on {ip}:8080")), "{logs}");
        // `kubectl logs -f` streams: the first line arrives while the pod keeps running.
        let mut follow = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .arg("--cache-dir")
            .arg(cluster.dir.path().join("kubectl-cache"))
            .args(["logs", "-f", &name])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = follow.stdout.take().unwrap();
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap()
            .unwrap();
        assert!(first.unwrap_or_default().contains("listening on"));
        follow.kill().await.unwrap();
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_ip_reaches_every_replica() {
    let cluster = Cluster::start_full("127.45.0.0/16", Some("127.96.0.0/16"), |config| {
        config.path = path_with_svcnet()
    })
    .await;
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let (ok, text) = cluster.kubectl(&["apply", "-f", examples]).await;
    assert!(ok, "apply examples/: {text}");
    let (ok, text) =
        cluster.kubectl(&["rollout", "status", "deployment/echo", "--timeout=60s"]).await;
    assert!(ok, "rollout status: {text}");
    let (ok, cluster_ip) = cluster
        .kubectl(&["get", "svc", "echo-clusterip", "-o", "jsonpath={.spec.clusterIP}"])
        .await;
    assert!(ok && cluster_ip.starts_with("127.96."), "{cluster_ip}");
    let answered = |want: usize| {
        let cluster_ip = cluster_ip.clone();
        async move {
            let mut names = std::collections::BTreeSet::new();
            // Bounded: at most 60 requests per try.
            for _ in 0..60 {
                if let Some(name) = http_pod_name(&cluster_ip, 80).await {
                    names.insert(name);
                }
                if names.len() == want {
                    break;
                }
            }
            names
        }
    };
    eventually("three backends", || async { (answered(3).await.len() == 3).then_some(()) }).await;
    // The NodePort on the node's address reaches the same pods.
    eventually("the node port", || async { http_pod_name("127.0.0.1", 30080).await }).await;
    let (ok, text) = cluster.kubectl(&["scale", "deployment/echo", "--replicas=1"]).await;
    assert!(ok, "{text}");
    eventually("one backend", || async {
        let pods = ready_running(&cluster.pods_with("app=echo").await);
        if pods.len() != 1 {
            return None;
        }
        let only = pods[0].metadata.name.clone()?;
        let names = answered(2).await;
        (names.len() == 1 && names.contains(&only)).then_some(())
    })
    .await;
    cluster.stop().await;
}

/// One HTTP request; the answering pod's name.
async fn http_pod_name(ip: &str, port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = tokio::net::TcpStream::connect((ip, port));
    let mut stream = tokio::time::timeout(Duration::from_secs(2), connect).await.ok()?.ok()?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.ok()?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut response))
        .await
        .ok()?
        .ok()?;
    let body = response.split_once("\r\n\r\n")?.1;
    let json: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
    json["pod"].as_str().map(str::to_string)
}

/// Reads the PIDs the agent recorded in `data_dir`.
fn recorded_pids(data_dir: &std::path::Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("run/pids")) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            std::fs::read_to_string(e.path()).ok()?.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

/// Kills the child process when dropped (also on test failure).
struct ChildGuard(Option<tokio::process::Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // SIGTERM first so the agent stops its pods; SIGKILL if it does not exit in 10 s.
        if let Some(child) = self.0.as_mut()
            && let Some(pid) = child.id()
        {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            for _ in 0..200 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.start_kill();
        }
    }
}

fn spawn_node(kubeconfig: &std::path::Path, data_dir: &std::path::Path) -> ChildGuard {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_svcnet"))
        .args(["node", "--node-name", "node-1", "--kubelet-port", "0", "--no-proxy"])
        .args(["--loopback-pod-range", "127.46.0.0/16", "--backoff-base-seconds", "0.1"])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    ChildGuard(Some(child))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_agent_leaves_no_orphans_and_resumes() {
    // The API server and workloads in-process; the agent as a `svcnet node` process.
    let cluster =
        Cluster::start_with("127.47.0.0/16", |config| config.node_name = "unused".into()).await;
    let data_dir = cluster.dir.path().join("node");
    let mut node = spawn_node(&cluster.kubeconfig, &data_dir);
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    let mut deployment = deployment(2);
    deployment.spec.as_mut().unwrap().template.spec.as_mut().unwrap().node_selector =
        Some([("kubernetes.io/hostname".to_string(), "node-1".to_string())].into());
    deployments.create(&PostParams::default(), &deployment).await.unwrap();
    let (ok, text) =
        cluster.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]).await;
    assert!(ok, "rollout status: {text}");
    let before = recorded_pids(&data_dir);
    assert_eq!(before.len(), 2);

    // SIGKILL: the pod processes outlive the agent...
    let mut child = node.0.take().unwrap();
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert!(before.iter().all(|pid| alive(*pid)));
    // ...until the next start cleans them up and runs the pods again.
    let mut node = spawn_node(&cluster.kubeconfig, &data_dir);
    eventually("old processes gone, pods running again", || async {
        let now = recorded_pids(&data_dir);
        let fresh = now.len() == 2 && now.iter().all(|pid| !before.contains(pid) && alive(*pid));
        (fresh && before.iter().all(|pid| !alive(*pid))).then_some(())
    })
    .await;
    let (ok, text) =
        cluster.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]).await;
    assert!(ok, "rollout status after restart: {text}");
    // SIGTERM: the agent stops its pods before it exits.
    let after = recorded_pids(&data_dir);
    let mut child = node.0.take().unwrap();
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(recorded_pids(&data_dir).is_empty());
    assert!(after.iter().all(|pid| !alive(*pid)));
    cluster.stop().await;
}
