//! `svcnet node`: the node agent (Node registration, Lease, pod runner, log endpoint, proxy).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use svcnet_agent::PodNetwork;
use tokio_util::sync::CancellationToken;

/// Runs the Pods bound to this node as processes and keeps the Node and its Lease fresh.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kubeconfig of the API server.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The Node name.
    #[arg(long)]
    node_name: String,
    /// Data plane of the in-process proxy: nftables, iptables or userspace.
    #[arg(long, default_value = "userspace")]
    dataplane: String,
    /// The Service ranges (comma-separated), for the in-process proxy: see `svcnet proxy
    /// --service-cluster-ip-range`.
    #[arg(long, value_delimiter = ',')]
    service_cluster_ip_range: Vec<svcnet_proxy::IpNet>,
    /// Userspace data plane: seconds to wait for a backend's connect before trying another.
    #[arg(long, default_value = "5")]
    userspace_connect_timeout: f64,
    /// Do not run the proxy in-process (run `svcnet proxy` separately).
    #[arg(long)]
    no_proxy: bool,
    /// topology.kubernetes.io/zone of the Node.
    #[arg(long)]
    zone: Option<String>,
    /// podCIDR of the Node; with --pod-network bridge pods get addresses from it.
    #[arg(long)]
    pod_cidr: Option<String>,
    /// The Node's InternalIP (the log endpoint listens there).
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: IpAddr,
    /// Logs and process records.
    #[arg(long, default_value = "/var/lib/svcnet/agent")]
    data_dir: PathBuf,
    /// How pods get their network: loopback (no root) or bridge (root: a namespace per pod).
    #[arg(long, default_value = "loopback")]
    pod_network: String,
    /// Loopback range for pod addresses (loopback mode).
    #[arg(long, default_value = "127.1.0.0/16")]
    loopback_pod_range: String,
    /// Bridge name (bridge mode).
    #[arg(long, default_value = "svcnet0")]
    bridge: String,
    /// Named network namespace holding the bridge (bridge mode); default: the agent's own.
    #[arg(long)]
    node_netns: Option<String>,
    /// Port of the log endpoint (0: any free port).
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// Cluster DNS server written into pod resolv.conf (bridge mode).
    #[arg(long)]
    cluster_dns: Vec<IpAddr>,
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Initial crash-loop back-off in seconds (doubles up to 300).
    #[arg(long, default_value_t = 10.0)]
    backoff_base_seconds: f64,
    /// Routes each pod gets through the bridge (bridge mode), e.g. the Service and cluster ranges.
    /// Pods get no default route.
    #[arg(long = "pod-route")]
    pod_routes: Vec<String>,
    /// Announce LoadBalancer addresses (ARP) on this interface, MetalLB-L2 style; off when unset.
    #[arg(long)]
    announce_interface: Option<String>,
    /// Namespace of the per-address election Leases.
    #[arg(long, default_value = "kube-system")]
    announce_lease_namespace: String,
    /// How long an address Lease lasts without renewal (failover time).
    #[arg(long, default_value_t = 1000)]
    announce_lease_duration_ms: u64,
    /// How often the holder renews its Leases.
    #[arg(long, default_value_t = 250)]
    announce_renew_interval_ms: u64,
    /// The node Lease's duration (the kubelet's nodeLeaseDurationSeconds); renewed every quarter.
    #[arg(long, default_value_t = svcnet_agent::node::LEASE_DURATION_SECONDS,
          value_parser = clap::value_parser!(i32).range(1..=3600))]
    node_lease_duration_seconds: i32,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = super::kube_client(Some(&args.kubeconfig)).await?;
    let network = match args.pod_network.as_str() {
        "loopback" => PodNetwork::Loopback {
            range: args.loopback_pod_range.parse().context("while parsing --loopback-pod-range")?,
        },
        "bridge" => {
            let cidr = args.pod_cidr.as_deref().context("--pod-network bridge needs --pod-cidr")?;
            PodNetwork::Bridge {
                bridge: args.bridge.clone(),
                pod_cidr: cidr.parse().context("while parsing --pod-cidr")?,
                routes: args
                    .pod_routes
                    .iter()
                    .map(|r| r.parse().with_context(|| format!("while parsing --pod-route {r}")))
                    .collect::<anyhow::Result<_>>()?,
                node_netns: args.node_netns.clone(),
            }
        }
        other => anyhow::bail!("unknown --pod-network {other:?} (loopback or bridge)"),
    };
    let proxy = if args.no_proxy {
        None
    } else {
        let dataplane: svcnet_proxy::DataPlaneKind =
            args.dataplane.parse().context("while parsing --dataplane")?;
        Some(svcnet_proxy::Config {
            node_name: args.node_name.clone(),
            zone: args.zone.clone(),
            node_ips: vec![args.node_ip],
            service_cidrs: args.service_cluster_ip_range.clone(),
            dataplane,
            userspace: svcnet_proxy::dataplane::userspace::UserspaceConfig {
                connect_timeout: super::positive_seconds(
                    args.userspace_connect_timeout,
                    "--userspace-connect-timeout",
                )?,
                ..Default::default()
            },
            ..Default::default()
        })
    };
    let speaker = args.announce_interface.clone().map(|interface| svcnet_speaker::Config {
        node_name: args.node_name.clone(),
        zone: args.zone.clone().unwrap_or_default(),
        interface,
        lease_namespace: args.announce_lease_namespace.clone(),
        lease_duration: Duration::from_millis(args.announce_lease_duration_ms),
        renew_interval: Duration::from_millis(args.announce_renew_interval_ms),
        state_file: Some(args.data_dir.join("speaker-addresses")),
        ..Default::default()
    });
    let config = svcnet_agent::Config {
        node_name: args.node_name,
        node_ip: args.node_ip,
        zone: args.zone,
        pod_cidr: args.pod_cidr,
        network,
        data_dir: args.data_dir,
        kubelet_port: args.kubelet_port,
        node_lease_duration_seconds: args.node_lease_duration_seconds,
        backoff_base: Duration::from_secs_f64(args.backoff_base_seconds.max(0.0)),
        cluster_domain: args.cluster_domain,
        dns: args.cluster_dns,
        proxy,
        ..Default::default()
    };
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        stop.cancel();
    });
    let speaker_task = speaker.map(|speaker| {
        let (client, cancel) = (client.clone(), cancel.clone());
        tokio::spawn(async move { svcnet_speaker::run(client, speaker, cancel).await })
    });
    let result = svcnet_agent::run(client, config, cancel.clone())
        .await
        .context("while running the node agent");
    cancel.cancel();
    if let Some(task) = speaker_task {
        match task.await {
            Ok(Err(err)) => tracing::warn!(error = %err, "the LoadBalancer speaker failed"),
            Err(err) => tracing::warn!(error = %err, "the LoadBalancer speaker panicked"),
            Ok(Ok(())) => {}
        }
    }
    result
}
