//! `svcnet proxy`: the node proxy (a kube-proxy replacement), live or offline.
//!
//! Live: `--kubeconfig F --node-name N` watches the API server and programs the chosen data
//! plane until Ctrl-C. Offline: `--objects FILE` plans from a file of objects and prints the
//! plan and rules (`--dry-run`), programs them once (`--once`), or removes svcnet's rules
//! (`--cleanup`); it goes through the same `plan` and data planes as the live mode.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, bail};
use svcnet_proxy::IpNet;
use svcnet_proxy::dataplane::userspace::UserspaceConfig;
use svcnet_proxy::run::{Config, DataPlaneKind, make_dataplane};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kubeconfig to watch the API server with (default: in-cluster or $KUBECONFIG).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// This node's name: endpoints on it are local; its Node object gives zone and addresses.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Data plane: userspace, nftables or iptables (default: nftables as root, else userspace).
    #[arg(long)]
    dataplane: Option<String>,
    /// Where to serve /metrics (and /healthz); "" disables.
    #[arg(long, default_value = "127.0.0.1:10249")]
    metrics_bind_address: String,
    /// Where to serve /healthz; "" disables.
    #[arg(long, default_value = "0.0.0.0:10256")]
    healthz_bind_address: String,
    /// Pod CIDRs (repeatable or comma-separated): traffic from outside them is masqueraded.
    #[arg(long, value_delimiter = ',')]
    cluster_cidr: Vec<IpNet>,
    /// The Service ranges (comma-separated): kernel data planes drop new connections to an
    /// address in them that is no ClusterIP (ClusterIPs on a port no Service has are rejected
    /// regardless), as kube-proxy's nftables mode does with the cluster's ServiceCIDRs.
    #[arg(long, value_delimiter = ',')]
    service_cluster_ip_range: Vec<IpNet>,
    /// Serve NodePorts only on node addresses inside these CIDRs (comma-separated).
    #[arg(long, value_delimiter = ',')]
    nodeport_addresses: Vec<IpNet>,
    /// This node's zone (default: the Node's topology.kubernetes.io/zone label).
    #[arg(long)]
    zone: Option<String>,
    /// This node's addresses (repeatable; default: the Node's InternalIP/ExternalIP).
    #[arg(long = "node-ip", value_delimiter = ',')]
    node_ips: Vec<IpAddr>,
    /// Masquerade all Service traffic.
    #[arg(long)]
    masquerade_all: bool,
    /// Least time between two syncs, in seconds (fractions allowed).
    #[arg(long, default_value = "1")]
    min_sync_period: f64,
    /// Offline: plan from this file of Services, EndpointSlices and Nodes (YAML or JSON).
    #[arg(long)]
    objects: Option<PathBuf>,
    /// Offline: print the plan (and for nftables/iptables the rules) and exit.
    #[arg(long, requires = "objects")]
    dry_run: bool,
    /// Offline: program the plan into the current network namespace and exit (userspace:
    /// serve until SIGTERM or Ctrl-C).
    #[arg(long, requires = "objects", conflicts_with = "dry_run")]
    once: bool,
    /// Userspace: share the frontends of a svcnet proxy still running as this user (start the
    /// new proxy, then stop the old one; set net.ipv4.tcp_migrate_req=1 so queued connections
    /// move too). Without it a frontend someone holds is an error.
    #[arg(long)]
    userspace_take_over: bool,
    /// Userspace: seconds to wait for a backend's connect before trying another (a backend that
    /// failed is then avoided for 5 s).
    #[arg(long, default_value = "5")]
    userspace_connect_timeout: f64,
    /// Userspace: on SIGTERM/Ctrl-C stop accepting, then serve established connections for up
    /// to this many seconds (fractions allowed).
    #[arg(long, default_value = "0")]
    userspace_drain_timeout: f64,
    /// Remove everything svcnet programmed with this data plane, and exit.
    #[arg(long, conflicts_with_all = ["dry_run", "once"])]
    cleanup: bool,
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(error).context("while writing the plan")
        }
        _ => Ok(()),
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?.to_string();
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

fn parse_bind(value: &str, flag: &str) -> anyhow::Result<Option<SocketAddr>> {
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some).with_context(|| format!("while parsing {flag} {value:?}"))
}

fn config(args: &Args, dataplane: DataPlaneKind) -> anyhow::Result<Config> {
    let userspace = UserspaceConfig {
        take_over: args.userspace_take_over,
        drain_timeout: super::seconds(args.userspace_drain_timeout, "--userspace-drain-timeout")?,
        connect_timeout: super::positive_seconds(
            args.userspace_connect_timeout,
            "--userspace-connect-timeout",
        )?,
        ..UserspaceConfig::default()
    };
    Ok(Config {
        node_name: args.node_name.clone().unwrap_or_default(),
        zone: args.zone.clone(),
        node_ips: args.node_ips.clone(),
        nodeport_addresses: args.nodeport_addresses.clone(),
        cluster_cidrs: args.cluster_cidr.clone(),
        service_cidrs: args.service_cluster_ip_range.clone(),
        masquerade_all: args.masquerade_all,
        dataplane,
        metrics_bind_address: parse_bind(&args.metrics_bind_address, "--metrics-bind-address")?,
        healthz_bind_address: parse_bind(&args.healthz_bind_address, "--healthz-bind-address")?,
        min_sync_period: super::seconds(args.min_sync_period, "--min-sync-period")?,
        userspace,
        ..Config::default()
    })
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let dataplane = match &args.dataplane {
        Some(name) => name.parse::<DataPlaneKind>()?,
        None if running_as_root() => DataPlaneKind::Nftables,
        None => DataPlaneKind::Userspace,
    };
    let mut config = config(&args, dataplane)?;
    let cancel = CancellationToken::new();

    if args.cleanup {
        let (mut dataplane, _) =
            make_dataplane(dataplane, config.userspace.clone(), cancel.clone());
        dataplane
            .cleanup()
            .await
            .with_context(|| format!("while cleaning up the {} data plane", dataplane.name()))?;
        return Ok(());
    }

    if let Some(path) = &args.objects {
        let model = svcnet_proxy::objects::load(path)?;
        if config.node_name.is_empty()
            && model.nodes.len() == 1
            && let Some(key) = model.nodes.keys().next()
        {
            config.node_name = key.name.clone();
        }
        let plan = svcnet_proxy::plan(&model, &config.node_info());
        if args.dry_run || !args.once {
            let mut out = plan.to_string();
            match dataplane {
                DataPlaneKind::Nftables => {
                    out.push_str("\n# nftables (nft -f -)\n");
                    out.push_str(&svcnet_proxy::render::nftables::render(&plan));
                }
                DataPlaneKind::Iptables => {
                    out.push_str("\n# iptables (iptables-restore --noflush)\n");
                    out.push_str(&svcnet_proxy::render::iptables::render(&plan));
                }
                DataPlaneKind::Userspace => {}
            }
            write_stdout(&out)?;
            return Ok(());
        }
        let (mut programmed, _) =
            make_dataplane(dataplane, config.userspace.clone(), cancel.clone());
        let applied = programmed.apply(&plan).await;
        if dataplane != DataPlaneKind::Userspace {
            applied.with_context(|| {
                format!("while programming the {} data plane", programmed.name())
            })?;
            return Ok(());
        }
        // A userspace data plane exists only while svcnet runs: serve until Ctrl-C.
        if let Err(error) = applied {
            tracing::warn!(%error, "some frontends could not be served");
        }
        tracing::info!("serving the plan in user space until SIGTERM or Ctrl-C");
        super::shutdown_signal().await;
        programmed.shutdown().await;
        return Ok(());
    }

    if config.node_name.is_empty() {
        bail!("--node-name is required (or --objects FILE for offline use)");
    }
    let client = super::kube_client(args.kubeconfig.as_deref()).await?;
    let mut task = tokio::spawn(svcnet_proxy::run(client, config, cancel.clone()));
    tokio::select! {
        result = &mut task => return Ok(result.context("the proxy task panicked")??),
        () = super::shutdown_signal() => cancel.cancel(),
    }
    Ok(task.await.context("the proxy task panicked")??)
}
