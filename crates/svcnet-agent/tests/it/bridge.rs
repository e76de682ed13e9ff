//! Bridge mode as root: a pod namespace on a bridge inside a node namespace the test creates
//! (nothing is added to the host's namespace), with resolv.conf and a probe from inside the pod.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use svcnet_agent::pods::network::{ensure_bridge, netns_name, setup_pod_netns, teardown_pod_netns};
use svcnet_agent::pods::resolv::resolv_conf;
use svcnet_agent::pods::runner::{self, PodSandbox, RunnerConfig};

/// Deletes the namespaces it names, also when the test fails.
struct NetnsGuard(Vec<String>);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", name])
                .stderr(std::process::Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{name}"));
        }
    }
}

#[tokio::test]
async fn a_pod_gets_a_namespace_an_address_and_cluster_dns() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bridge mode needs root; skipped");
        return;
    }
    let pid = std::process::id();
    let node_ns = format!("svcnet-it-node-{pid}");
    let uid = format!("b1d9{pid:04x}-0000-0000");
    let pod_ns = netns_name(&format!("it{pid}"), &uid);
    let _guard = NetnsGuard(vec![pod_ns.clone(), node_ns.clone()]);
    assert!(
        std::process::Command::new("ip")
            .args(["netns", "add", &node_ns])
            .status()
            .unwrap()
            .success()
    );
    let cidr = "10.244.7.0/24".parse().unwrap();
    ensure_bridge(Some(&node_ns), "svcbr0", cidr).await.unwrap();
    let resolv = resolv_conf("demo", "cluster.local", &["10.96.0.10".parse().unwrap()]);
    setup_pod_netns(
        Some(&node_ns),
        &pod_ns,
        &uid,
        "svcbr0",
        cidr,
        "10.244.7.2".parse().unwrap(),
        &[],
        &resolv,
    )
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p1", "namespace": "default", "uid": uid},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": "x",
            "command": ["sh", "-c", "cat /etc/resolv.conf; ip -4 -o addr show dev eth0; exec nc -lk 10.244.7.2 8080"],
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
        }]}
    }))
    .unwrap();
    let config = Arc::new(RunnerConfig {
        data_dir: dir.path().to_path_buf(),
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        path: std::env::var("PATH").unwrap(),
    });
    let sandbox = PodSandbox {
        pod_ip: "10.244.7.2".parse().unwrap(),
        host_ip: "10.244.7.1".parse().unwrap(),
        netns: Some(pod_ns.clone()),
        check_ports: false,
    };
    let (tx, _events) = tokio::sync::mpsc::unbounded_channel();
    let mut handle = runner::start_pod(&pod, sandbox, config, tx);
    let mut status = handle.status.clone();
    tokio::time::timeout(Duration::from_secs(20), status.wait_for(|r| r.containers[0].ready))
        .await
        .expect("ready through the in-namespace probe")
        .unwrap();
    let log =
        std::fs::read_to_string(runner::log_path(dir.path(), "default", "p1", "main")).unwrap();
    assert!(log.contains("search demo.svc.cluster.local svc.cluster.local cluster.local"), "{log}");
    assert!(log.contains("nameserver 10.96.0.10"), "{log}");
    assert!(log.contains("inet 10.244.7.2/24"), "{log}");
    // The node reaches the pod over the bridge.
    let reached = std::process::Command::new("ip")
        .args(["netns", "exec", &node_ns, "nc", "-z", "-w", "2", "10.244.7.2", "8080"])
        .status()
        .unwrap();
    assert!(reached.success());
    handle.terminate(Duration::from_millis(500));
    tokio::time::timeout(Duration::from_secs(20), handle.wait()).await.unwrap();
    teardown_pod_netns(&pod_ns).await;
    let listed = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&pod_ns));
}
