//! Root mode of `svcnet up`: the node, its pods and the Service addresses in a network
//! namespace svcnet creates, with the kernel data plane (nftables or iptables).
//!
//! The process the user starts (the outer half) stays in the host's namespace: it cleans up
//! what a killed earlier run left (recorded in `DIR/up-root.json`), creates the namespace
//! (only `lo` and the node's bridge; no default route, no route out), starts itself again
//! inside it with `nsenter --net` (the inner half runs the whole cluster there) and forwards
//! `127.0.0.1:PORT` on the host to the API server inside (svcnet-lab's forward), so the
//! kubeconfig in DIR works from the host. On Ctrl-C it stops the inner half and removes the
//! namespace, the pods' namespaces (their veths go with them) and so every rule. The host's
//! namespace gets no address, route or rule. Left out: IPv6, more than one node.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use svcnet_lab::net::{self, Cmd};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

use super::Ranges;

/// The address plan inside the namespace (nothing of it exists in the host's namespace).
pub const RANGES: Ranges = Ranges {
    service: "10.96.0.0/16",
    pod: "10.244.0.0/24",
    internal_lb: "10.240.0.0/24",
    external_lb: "10.241.0.0/24",
    dns: Ipv4Addr::new(10, 96, 0, 10),
};
/// The node's address: the bridge's, the first of the pod range (pods' gateway).
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// The node's bridge.
pub const BRIDGE: &str = "svcnet0";
/// The line the inner half prints when the cluster is up, followed by the API address.
pub const READY_PREFIX: &str = "svcnet-inner-ready ";
const STATE_FILE: &str = "up-root.json";

/// What root mode created, kept so a later run can remove it after a crash.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RootState {
    netns: String,
    /// The inner half (pid and start time, so a reused pid is never killed).
    inner: Option<(i32, u64)>,
}

impl RootState {
    fn load(data_dir: &Path) -> anyhow::Result<Option<RootState>> {
        let path = data_dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("corrupt state {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("while reading {}", path.display())),
        }
    }

    /// Writes atomically (temporary file, then rename).
    fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        let tmp = data_dir.join(format!("{STATE_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("while writing {}", tmp.display()))?;
        std::fs::rename(&tmp, data_dir.join(STATE_FILE)).context("while saving the state")
    }
}

/// `svcnet up exec`: a command in the namespace of a root-mode `svcnet up`.
#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// The data dir of the running `svcnet up`.
    #[arg(long, default_value = "svcnet-data")]
    pub data_dir: PathBuf,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Replaces this process with `ip netns exec NETNS COMMAND…`.
pub fn exec(args: ExecArgs) -> anyhow::Result<()> {
    let state = RootState::load(&args.data_dir)?.with_context(|| {
        format!(
            "no root-mode svcnet up recorded in {} (exec needs `svcnet up --dataplane nftables|iptables`)",
            args.data_dir.display()
        )
    })?;
    if !Path::new("/run/netns").join(&state.netns).exists() {
        bail!("network namespace {} does not exist: is svcnet up running?", state.netns);
    }
    let err = std::process::Command::new("ip")
        .args(["netns", "exec", &state.netns])
        .args(&args.command)
        .exec();
    Err(err).context("while running ip netns exec")
}

/// The pods' network in the namespace: one namespace per pod on the node's bridge, with routes
/// to the Service and LoadBalancer ranges through the node (and no default route).
pub fn pod_network() -> anyhow::Result<svcnet_agent::PodNetwork> {
    Ok(svcnet_agent::PodNetwork::Bridge {
        bridge: BRIDGE.to_string(),
        pod_cidr: RANGES.pod.parse()?,
        routes: vec![
            RANGES.service.parse()?,
            RANGES.internal_lb.parse()?,
            RANGES.external_lb.parse()?,
        ],
        node_netns: None,
    })
}

/// Inner half: ends (like Ctrl-C would) when the outer half is gone, e.g. after a SIGKILL.
pub async fn watch_parent(cancel: CancellationToken) -> anyhow::Result<()> {
    let parent = nix::unistd::getppid();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        if nix::unistd::getppid() != parent {
            tracing::warn!("the outer svcnet up is gone; stopping");
            return Ok(());
        }
    }
}

/// The namespace name for a data dir: stable, short and distinct per directory.
fn netns_name(data_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut hasher);
    format!("svcnet-up-{:08x}", hasher.finish() as u32)
}

fn cmd(argv: &[&str]) -> Cmd {
    Cmd { argv: argv.iter().map(|s| s.to_string()).collect(), stdin: None }
}

/// The commands that build the node's namespace. Every one is scoped to it.
fn setup_commands(netns: &str) -> Vec<Cmd> {
    let gateway = format!("{NODE_IP}/{}", RANGES.pod.rsplit('/').next().unwrap_or("24"));
    let mut cmds = vec![
        cmd(&["ip", "netns", "add", netns]),
        cmd(&["ip", "-n", netns, "link", "set", "lo", "up"]),
        cmd(&["ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"]),
        cmd(&["ip", "-n", netns, "link", "add", "name", BRIDGE, "type", "bridge"]),
        cmd(&["ip", "-n", netns, "addr", "add", &gateway, "dev", BRIDGE]),
        cmd(&["ip", "-n", netns, "link", "set", "dev", BRIDGE, "up"]),
    ];
    // A connection from the node to a Service address needs a route before the data plane's
    // DNAT rewrites it; the addresses themselves are never answered on the bridge.
    for range in [RANGES.service, RANGES.internal_lb, RANGES.external_lb] {
        cmds.push(cmd(&["ip", "-n", netns, "route", "add", range, "dev", BRIDGE]));
    }
    cmds
}

/// Pod namespaces the agent recorded (it records each before creating it).
fn recorded_pod_namespaces(data_dir: &Path) -> Vec<String> {
    let dir = data_dir.join("agent").join("run").join("netns");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
}

fn alive(pid: i32, start_time: u64) -> bool {
    svcnet_agent::pods::orphans::process_start_time(pid) == Some(start_time)
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| !stat.rsplit(')').next().unwrap_or_default().trim_start().starts_with('Z'))
            .unwrap_or(false)
}

/// Removes everything a run recorded in `data_dir`: the inner half, every process in the
/// pods' and the node's namespaces, those namespaces (and with them veths, bridge and rules).
/// Safe to run twice.
async fn teardown(data_dir: &Path, state: &RootState) -> anyhow::Result<()> {
    // The inner half first, so that nothing tears down alongside (and its store is free
    // before a new one opens it).
    if let Some((pid, start)) = state.inner {
        if alive(pid, start) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while alive(pid, start) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let existing = net::all_namespaces().await?;
    let pods = recorded_pod_namespaces(data_dir);
    let doomed: Vec<&String> = pods
        .iter()
        .chain(std::iter::once(&state.netns))
        .filter(|ns| existing.contains(ns))
        .collect();
    for netns in &doomed {
        net::kill_processes_in(netns).await?;
    }
    for netns in doomed {
        if let Err(err) = net::run(&cmd(&["ip", "netns", "del", netns])).await
            && Path::new("/run/netns").join(netns).exists()
        {
            return Err(err.into());
        }
    }
    for netns in &pods {
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(netns));
        let _ = std::fs::remove_file(data_dir.join("agent").join("run").join("netns").join(netns));
    }
    Ok(())
}

/// Outer half: namespace, inner half, forward, summary; then teardown on Ctrl-C.
pub async fn run(args: super::Args) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "--dataplane {} needs root (it creates a network namespace); without root use the default loopback mode",
            args.dataplane
        );
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("while creating {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir).context("while resolving the data dir")?;
    let mut state = match RootState::load(&data_dir)? {
        Some(old) => {
            tracing::info!(netns = %old.netns, "removing what an earlier run left");
            teardown(&data_dir, &old).await.context("while cleaning up an earlier run")?;
            RootState { netns: old.netns, inner: None }
        }
        None => RootState { netns: netns_name(&data_dir), inner: None },
    };
    // Record first: a crash part-way through still leaves enough to clean up.
    state.save(&data_dir)?;
    let host_listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| {
        format!("while listening on {} (host side of the forward)", args.listen)
    })?;
    let result = run_in_namespace(&args, &data_dir, &mut state, host_listener).await;
    let cleaned = teardown(&data_dir, &state).await;
    if cleaned.is_ok() {
        let _ = std::fs::remove_file(data_dir.join(STATE_FILE));
    }
    result.and(cleaned)
}

async fn run_in_namespace(
    args: &super::Args,
    data_dir: &Path,
    state: &mut RootState,
    host_listener: tokio::net::TcpListener,
) -> anyhow::Result<()> {
    for command in setup_commands(&state.netns) {
        net::run(&command).await?;
    }
    let exe = std::env::current_exe().context("while finding the svcnet binary")?;
    let mut inner = tokio::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", state.netns))
        .arg("--")
        .arg(&exe)
        .args(["up", "--inner", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", &args.listen.to_string(), "--dataplane", &args.dataplane])
        .args(["--node-name", &args.node_name])
        .args(args.no_dns.then_some("--no-dns"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("while starting the cluster inside the namespace (nsenter)")?;
    if let Some(pid) = inner.id() {
        let pid = pid as i32;
        let start = svcnet_agent::pods::orphans::process_start_time(pid).unwrap_or_default();
        state.inner = Some((pid, start));
        state.save(data_dir)?;
    }
    let stdout = inner.stdout.take().context("inner stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let api = loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) => if let Some(addr) = line.strip_prefix(READY_PREFIX) {
                    break addr.parse::<std::net::SocketAddr>().context("inner ready line")?;
                },
                None => {
                    let status = inner.wait().await?;
                    bail!("the cluster inside the namespace stopped before it was up ({status})");
                }
            },
            _ = super::super::shutdown_signal() => {
                stop_inner(&mut inner).await;
                return Ok(());
            }
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let cancel = CancellationToken::new();
    let (netns, stop_forward) = (state.netns.clone(), cancel.clone());
    let forward = tokio::spawn(async move {
        svcnet_lab::forward::forward(host_listener, &netns, api, stop_forward).await
    });
    let kubeconfig = data_dir.join("kubeconfig");
    println!("svcnet is up (root mode: {} in network namespace {})", args.dataplane, state.netns);
    println!("  API server:  https://{} (forwarded from the host into the namespace)", args.listen);
    println!("  kubeconfig:  {}", kubeconfig.display());
    println!(
        "  services:    {} (DNS {}), pods: {}, node: {NODE_IP}",
        RANGES.service, RANGES.dns, RANGES.pod
    );
    println!("  LB pools:    internal {}, external {}", RANGES.internal_lb, RANGES.external_lb);
    println!("next: KUBECONFIG={} kubectl apply -f examples/", kubeconfig.display());
    println!(
        "      svcnet up exec --data-dir {} -- curl http://$(KUBECONFIG={} kubectl get svc echo-clusterip -o jsonpath='{{.spec.clusterIP}}')/",
        data_dir.display(),
        kubeconfig.display()
    );
    let result = tokio::select! {
        _ = super::super::shutdown_signal() => {
            tracing::info!("stopping");
            stop_inner(&mut inner).await;
            Ok(())
        }
        status = inner.wait() => Err(anyhow::anyhow!("the cluster inside the namespace stopped ({})", status?)),
    };
    cancel.cancel();
    let _ = forward.await;
    result
}

/// Asks the inner half to stop (SIGTERM: pods get their grace) and waits a bounded time.
async fn stop_inner(inner: &mut tokio::process::Child) {
    if let Some(pid) = inner.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(20), inner.wait()).await.is_err() {
        let _ = inner.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setup_command_is_scoped_to_the_namespace() {
        let ns = netns_name(Path::new("/tmp/x"));
        assert!(ns.starts_with("svcnet-up-") && ns.len() <= 20, "{ns}");
        for c in setup_commands(&ns) {
            let argv: Vec<&str> = c.argv.iter().map(String::as_str).collect();
            let scoped = matches!(argv.as_slice(), ["ip", "netns", "add", n] if *n == ns)
                || matches!(argv.as_slice(), ["ip", "-n", n, ..] if *n == ns)
                || matches!(argv.as_slice(), ["ip", "netns", "exec", n, ..] if *n == ns);
            assert!(scoped, "not scoped to the namespace: {c}");
            assert!(!argv.contains(&"default"), "no default route: {c}");
        }
    }

    #[test]
    fn names_differ_per_data_dir() {
        assert_ne!(netns_name(Path::new("/a")), netns_name(Path::new("/b")));
        assert_eq!(netns_name(Path::new("/a")), netns_name(Path::new("/a")));
    }
}
