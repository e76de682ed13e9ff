//! `lab up` beyond the network: starts `svcnet server`, `svcnet controllers` and the workload
//! controllers in `control-plane`, `svcnet node` (and `svcnet proxy` while the node does not
//! run it in-process) in each node namespace, as detached processes recorded in the lab's
//! state, and the loopback forward to the API; writes the host's kubeconfig; then configures
//! the LoadBalancer pools and deploys the demo, waiting on each step with a deadline.
//!
//! The processes are the real binary (`std::env::current_exe()`), started through
//! `nsenter --net`, each in its own process group with its log under `DATA_DIR/logs/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::state::{LabProcess, LabState};
use crate::{Error, Result};

/// How to start the lab's processes.
#[derive(Debug, Clone)]
pub struct UpConfig {
    pub data_dir: PathBuf,
    /// `nftables`, `iptables` or `userspace`.
    pub dataplane: String,
    /// The svcnet binary to run inside the namespaces.
    pub svcnet: PathBuf,
    /// How long a node Lease may lapse before its endpoints stop being ready (seconds).
    pub node_monitor_grace_period: u64,
    /// The node Lease's duration (seconds; renewed every quarter of it).
    pub node_lease_duration_seconds: u32,
    /// The LoadBalancer speaker's address Lease duration and renew interval: together they bound
    /// the failover time of an LB address.
    pub announce_lease_duration: Duration,
    pub announce_renew_interval: Duration,
    /// The userspace proxy's connect timeout: a connection that draws a pod of a dead node is
    /// sent to another pod after this long, within the client's patience.
    pub userspace_connect_timeout: Duration,
}

impl UpConfig {
    /// The lab's settings: a node that stops renewing its Lease loses its endpoints within about
    /// five seconds (Kubernetes: 40–50 s), and an LB address moves within a second.
    pub fn new(data_dir: PathBuf, dataplane: String, svcnet: PathBuf) -> UpConfig {
        UpConfig {
            data_dir,
            dataplane,
            svcnet,
            node_monitor_grace_period: 4,
            node_lease_duration_seconds: 4,
            announce_lease_duration: Duration::from_millis(500),
            announce_renew_interval: Duration::from_millis(125),
            userspace_connect_timeout: Duration::from_millis(200),
        }
    }
}

/// How long each stage of `lab up` may take.
pub const API_TIMEOUT: Duration = Duration::from_secs(30);
pub const NODES_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEMO_TIMEOUT: Duration = Duration::from_secs(60);

/// The API server's port inside `control-plane`.
pub const API_PORT: u16 = 6443;

fn log_file(data_dir: &Path, name: &str) -> Result<std::fs::File> {
    let dir = data_dir.join("logs");
    std::fs::create_dir_all(&dir)
        .map_err(|source| Error::State { path: dir.display().to_string(), source })?;
    let path = dir.join(format!("{name}.log"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| Error::State { path: path.display().to_string(), source })
}

/// Starts `args` inside `netns` (or the host namespace when `None`), detached, logging to
/// `logs/<name>.log`, and records it in the state.
pub fn spawn(
    state: &mut LabState,
    data_dir: &Path,
    name: &str,
    netns: Option<&str>,
    program: &Path,
    args: &[String],
) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let log = log_file(data_dir, name)?;
    let err_log =
        log.try_clone().map_err(|source| Error::State { path: name.to_string(), source })?;
    // `nsenter --net` changes only the network namespace. (`ip netns exec` would also give the
    // process a private mount namespace, so the pod namespaces a node agent creates with
    // `ip netns add` would be mounted only there: invisible to `lab exec`, `lab check` and
    // `lab down`.)
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = std::process::Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(program);
            c
        }
        None => std::process::Command::new(program),
    };
    cmd.args(args).stdin(Stdio::null()).stdout(log).stderr(err_log).process_group(0);
    let child = cmd
        .spawn()
        .map_err(|source| Error::Spawn { program: program.display().to_string(), source })?;
    state.processes.push(LabProcess { name: name.to_string(), pid: child.id() as i32 });
    state.save(data_dir)
}

/// Waits until `path` exists (a process signals readiness by writing it), or fails after `timeout`.
pub async fn wait_for_file(path: &Path, timeout: Duration, what: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while !path.exists() {
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Internal(format!(
                "{what} did not become ready within {timeout:?} (see logs)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Starts the control plane (API server, controllers, workload controllers), the loopback
/// forward and the node agents (with their proxies); writes the host's kubeconfig to
/// `DATA_DIR/kubeconfig` and returns its path once the API answers `/readyz` through it.
pub async fn start_cluster(config: &UpConfig, state: &mut LabState) -> Result<PathBuf> {
    let data_dir = &config.data_dir;
    let topology = state.topology.clone();
    let svcnet = &config.svcnet;
    let cp = topology
        .host("control-plane")
        .ok_or_else(|| Error::Internal("no control-plane host".into()))?;
    let cp_dir = data_dir.join("control-plane");
    let listen = format!("{}:{API_PORT}", cp.address);
    // The controllers run as their own process so the lab can set the node grace period.
    let server_args: Vec<String> = vec![
        "server".into(),
        "--data-dir".into(),
        cp_dir.display().to_string(),
        "--listen".into(),
        listen.clone(),
        "--advertise-address".into(),
        cp.address.to_string(),
        "--service-cluster-ip-range".into(),
        topology.service_cidr.to_string(),
        "--no-controllers".into(),
    ];
    spawn(state, data_dir, "control-plane", Some(&cp.netns), svcnet, &server_args)?;
    let cluster_kubeconfig = cp_dir.join("kubeconfig");
    wait_for_file(&cluster_kubeconfig, API_TIMEOUT, "the API server").await?;

    // The host's way in: 127.0.0.1:PORT → control-plane:6443.
    let port = free_loopback_port()?;
    spawn(
        state,
        data_dir,
        "forward",
        None,
        svcnet,
        &[
            "lab".into(),
            "forward".into(),
            "--netns".into(),
            cp.netns.clone(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--to".into(),
            listen.clone(),
        ],
    )?;
    state.forward_port = Some(port);
    state.save(data_dir)?;
    let text = std::fs::read_to_string(&cluster_kubeconfig).map_err(|source| Error::State {
        path: cluster_kubeconfig.display().to_string(),
        source,
    })?;
    let host_kubeconfig = data_dir.join("kubeconfig");
    write_private(
        &host_kubeconfig,
        &text.replace(&format!("https://{listen}"), &format!("https://127.0.0.1:{port}")),
    )?;
    crate::cluster::wait_for(
        API_TIMEOUT,
        "the loopback forward did not accept connections",
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        },
    )
    .await?;
    let client = crate::cluster::client(&host_kubeconfig).await?;
    crate::cluster::wait_readyz(&client, API_TIMEOUT).await?;

    let kubeconfig_arg = cluster_kubeconfig.display().to_string();
    spawn(
        state,
        data_dir,
        "controllers",
        Some(&cp.netns),
        svcnet,
        &[
            "controllers".into(),
            "--kubeconfig".into(),
            kubeconfig_arg.clone(),
            "--node-monitor-grace-period".into(),
            config.node_monitor_grace_period.to_string(),
        ],
    )?;
    // Cluster DNS on the control plane, reached by pods through the kube-dns ClusterIP.
    spawn(
        state,
        data_dir,
        "dns",
        Some(&cp.netns),
        svcnet,
        &[
            "dns".into(),
            "--kubeconfig".into(),
            kubeconfig_arg.clone(),
            "--listen".into(),
            format!("{}:53", cp.address),
            "--service-cidr".into(),
            topology.service_cidr.to_string(),
            "--pod-cidr".into(),
            topology.cluster_cidr.to_string(),
        ],
    )?;
    crate::cluster::ensure_kube_dns(&client, &topology, cp.address).await?;
    let cluster_dns = crate::cluster::dns_service_ip(&topology).to_string();
    spawn(
        state,
        data_dir,
        "workloads",
        Some(&cp.netns),
        svcnet,
        &["lab".into(), "workloads".into(), "--kubeconfig".into(), kubeconfig_arg.clone()],
    )?;

    if config.dataplane == "userspace" {
        for cmd in crate::net::userspace_commands(&topology) {
            crate::net::run(&cmd).await?;
        }
    }
    for node in topology.nodes() {
        let node_dir = data_dir.join(&node.name);
        let mut args: Vec<String> = vec![
            "node".into(),
            "--kubeconfig".into(),
            kubeconfig_arg.clone(),
            "--node-name".into(),
            node.name.clone(),
            "--node-ip".into(),
            node.address.to_string(),
            "--data-dir".into(),
            node_dir.display().to_string(),
            "--pod-network".into(),
            "bridge".into(),
            "--cluster-dns".into(),
            cluster_dns.clone(),
        ];
        args.extend(["--dataplane".into(), config.dataplane.clone()]);
        args.extend(["--service-cluster-ip-range".into(), topology.service_cidr.to_string()]);
        if config.dataplane == "userspace" {
            args.extend([
                "--userspace-connect-timeout".into(),
                config.userspace_connect_timeout.as_secs_f64().to_string(),
            ]);
        }
        // Pods reach the Service range, other pods, the VPC (node ports, internal LBs) and the
        // external LB range through their node; nothing else.
        for range in
            [topology.service_cidr, topology.cluster_cidr, topology.vpc, topology.external_lb]
        {
            args.extend(["--pod-route".into(), range.to_string()]);
        }
        args.extend([
            "--announce-interface".into(),
            "eth0".into(),
            "--announce-lease-duration-ms".into(),
            config.announce_lease_duration.as_millis().to_string(),
            "--announce-renew-interval-ms".into(),
            config.announce_renew_interval.as_millis().to_string(),
            "--node-lease-duration-seconds".into(),
            config.node_lease_duration_seconds.to_string(),
        ]);
        if let Some(zone) = &node.zone {
            args.extend(["--zone".into(), zone.clone()]);
        }
        if let Some(cidr) = node.pod_cidr {
            args.extend(["--pod-cidr".into(), cidr.to_string()]);
        }
        spawn(state, data_dir, &node.name, Some(&node.netns), svcnet, &args)?;
    }
    let node_names: Vec<String> = topology.nodes().map(|n| n.name.clone()).collect();
    crate::cluster::wait_nodes_ready(&client, &node_names, NODES_TIMEOUT).await?;
    crate::cluster::ensure_lb_pools(&client, &topology).await?;
    // The demo goes in only once every node is Ready, so the scheduler spreads it over zones.
    crate::cluster::apply_demo(&client).await?;
    crate::cluster::wait_demo(&client, &topology, DEMO_TIMEOUT).await?;
    crate::cluster::wait_serving(&client, state, DEMO_TIMEOUT).await?;
    Ok(host_kubeconfig)
}

fn free_loopback_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|source| Error::Spawn { program: "bind".into(), source })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| Error::Spawn { program: "bind".into(), source })
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| Error::State { path: path.display().to_string(), source };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    file.write_all(text.as_bytes()).map_err(err)
}
