//! `lab up` beyond the network: starts `svcnet server` in `control-plane` and `svcnet node` in
//! each node namespace (as detached processes recorded in the lab's state), the loopback
//! forward to the API, and writes the host's kubeconfig.
//!
//! The processes are the real binary (`std::env::current_exe()`), started through
//! `ip netns exec`, each in its own process group with its log under `DATA_DIR/logs/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::state::{LabProcess, LabState};
use crate::topology::Role;
use crate::{Error, Result};

/// How to start the lab's processes.
#[derive(Debug, Clone)]
pub struct UpConfig {
    pub data_dir: PathBuf,
    /// `nftables`, `iptables` or `userspace`.
    pub dataplane: String,
    /// The svcnet binary to run inside the namespaces.
    pub svcnet: PathBuf,
}

/// The API server's port inside `control-plane`.
pub const API_PORT: u16 = 6443;

fn log_file(data_dir: &Path, name: &str) -> Result<std::fs::File> {
    let dir = data_dir.join("logs");
    std::fs::create_dir_all(&dir).map_err(|source| Error::State { path: dir.display().to_string(), source })?;
    let path = dir.join(format!("{name}.log"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| Error::State { path: path.display().to_string(), source })
}

/// Starts `args` inside `netns` (or the host namespace when `None`), detached, logging to
/// `logs/<name>.log`, and records it in the state.
pub fn spawn(state: &mut LabState, data_dir: &Path, name: &str, netns: Option<&str>, program: &Path, args: &[String]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let log = log_file(data_dir, name)?;
    let err_log = log.try_clone().map_err(|source| Error::State { path: name.to_string(), source })?;
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = std::process::Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => std::process::Command::new(program),
    };
    cmd.args(args).stdin(Stdio::null()).stdout(log).stderr(err_log).process_group(0);
    let child = cmd.spawn().map_err(|source| Error::Spawn { program: program.display().to_string(), source })?;
    state.processes.push(LabProcess { name: name.to_string(), pid: child.id() as i32 });
    state.save(data_dir)
}

/// Waits until `path` exists (a process signals readiness by writing it), or fails after `timeout`.
pub async fn wait_for_file(path: &Path, timeout: Duration, what: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while !path.exists() {
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Internal(format!("{what} did not become ready within {timeout:?} (see logs)")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Starts the control plane, the loopback forward and the node agents; writes the host's
/// kubeconfig to `DATA_DIR/kubeconfig`.
pub async fn start_cluster(config: &UpConfig, state: &mut LabState) -> Result<PathBuf> {
    let data_dir = &config.data_dir;
    let topology = state.topology.clone();
    let cp = topology.host("control-plane").ok_or_else(|| Error::Internal("no control-plane host".into()))?;
    let cp_dir = data_dir.join("control-plane");
    let listen = format!("{}:{API_PORT}", cp.address);
    spawn(
        state,
        data_dir,
        "control-plane",
        Some(&cp.netns),
        &config.svcnet,
        &[
            "server".into(),
            "--data-dir".into(),
            cp_dir.display().to_string(),
            "--listen".into(),
            listen.clone(),
            "--service-cluster-ip-range".into(),
            topology.service_cidr.to_string(),
        ],
    )?;
    let cluster_kubeconfig = cp_dir.join("kubeconfig");
    wait_for_file(&cluster_kubeconfig, Duration::from_secs(30), "the API server").await?;

    // The host's way in: 127.0.0.1:PORT → control-plane:6443.
    let port = free_loopback_port()?;
    spawn(
        state,
        data_dir,
        "forward",
        None,
        &config.svcnet,
        &["lab".into(), "forward".into(), "--netns".into(), cp.netns.clone(), "--listen".into(), format!("127.0.0.1:{port}"), "--to".into(), listen.clone()],
    )?;
    state.forward_port = Some(port);
    state.save(data_dir)?;
    let text = std::fs::read_to_string(&cluster_kubeconfig)
        .map_err(|source| Error::State { path: cluster_kubeconfig.display().to_string(), source })?;
    let host_kubeconfig = data_dir.join("kubeconfig");
    write_private(&host_kubeconfig, &text.replace(&format!("https://{listen}"), &format!("https://127.0.0.1:{port}")))?;

    for node in topology.hosts.iter().filter(|h| h.role == Role::Node) {
        let node_dir = data_dir.join(&node.name);
        let mut args = vec![
            "node".into(),
            "--kubeconfig".into(),
            cluster_kubeconfig.display().to_string(),
            "--node-name".into(),
            node.name.clone(),
            "--node-ip".into(),
            node.address.to_string(),
            "--dataplane".into(),
            config.dataplane.clone(),
            "--data-dir".into(),
            node_dir.display().to_string(),
        ];
        if let Some(zone) = &node.zone {
            args.extend(["--zone".into(), zone.clone()]);
        }
        if let Some(cidr) = node.pod_cidr {
            args.extend(["--pod-cidr".into(), cidr.to_string()]);
        }
        spawn(state, data_dir, &node.name, Some(&node.netns), &config.svcnet, &args)?;
    }
    Ok(host_kubeconfig)
}

fn free_loopback_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| Error::Spawn { program: "bind".into(), source })?;
    listener.local_addr().map(|a| a.port()).map_err(|source| Error::Spawn { program: "bind".into(), source })
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::io::Write;
    let err = |source| Error::State { path: path.display().to_string(), source };
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(path).map_err(err)?;
    file.write_all(text.as_bytes()).map_err(err)
}
