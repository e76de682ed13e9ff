//! `svcnet dns`: cluster DNS against an API server (svcnet's or any Kubernetes), or over a
//! fixed JSON list of objects with `--objects` (no API server).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use svcnet_dns::{IpNet, PodMode};
use tokio_util::sync::CancellationToken;

/// Serve the Kubernetes DNS specification for the cluster domain.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kubeconfig of the API server (default: in-cluster or ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Serve a fixed JSON `List` of Services, EndpointSlices, Pods and Namespaces instead of
    /// watching an API server.
    #[arg(long, conflicts_with = "kubeconfig")]
    objects: Option<PathBuf>,
    /// UDP and TCP listen address.
    #[arg(long, default_value = "127.0.0.1:53")]
    listen: SocketAddr,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// TTL of cluster records, in seconds (CoreDNS default 5, at most 3600).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=3600))]
    ttl: u32,
    /// Upstream resolver for names outside the cluster (repeatable); default: /etc/resolv.conf.
    #[arg(long = "upstream", value_name = "IP:PORT")]
    upstreams: Vec<SocketAddr>,
    /// Clients allowed to resolve names outside the cluster (repeatable); default: loopback plus
    /// the service and pod ranges.
    #[arg(long = "allow-recursion", value_name = "CIDR")]
    allow_recursion: Vec<IpNet>,
    /// The cluster's Service ranges (repeatable).
    #[arg(long = "service-cidr", value_name = "CIDR", default_value = "10.96.0.0/12")]
    service_cidrs: Vec<IpNet>,
    /// The cluster's pod ranges (repeatable).
    #[arg(long = "pod-cidr", value_name = "CIDR", default_value = "10.244.0.0/16")]
    pod_cidrs: Vec<IpNet>,
    /// Pod records `a-b-c-d.<ns>.pod.<zone>`: disabled, insecure or verified.
    #[arg(long, default_value = "insecure")]
    pods: PodMode,
    /// Server-side search path for pods (like CoreDNS autopath; watches pods).
    #[arg(long)]
    autopath: bool,
    /// Address of /healthz, /ready and /metrics.
    #[arg(long, default_value = "127.0.0.1:9153")]
    metrics_address: SocketAddr,
    /// UDP worker threads (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    udp_workers: usize,
    /// UDP queries received and answered per `recvmmsg`/`sendmmsg` pair (1: a system call
    /// per datagram).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    udp_batch: u16,
    /// Answer every UDP query through the full parse-lookup-encode path instead of the
    /// per-worker cache of encoded answers (which follows each zone snapshot).
    #[arg(long)]
    no_answer_cache: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = svcnet_dns::Config {
        listen: args.listen,
        cluster_domain: args.cluster_domain,
        ttl: args.ttl,
        upstreams: args.upstreams,
        allow_recursion: args.allow_recursion,
        service_cidrs: args.service_cidrs,
        pod_cidrs: args.pod_cidrs,
        pods: args.pods,
        autopath: args.autopath,
        metrics_address: Some(args.metrics_address),
        udp_workers: args.udp_workers,
        udp_batch: usize::from(args.udp_batch),
        answer_cache: !args.no_answer_cache,
        upstream_timeout: Duration::from_secs(2),
        ..svcnet_dns::Config::default()
    };
    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            super::shutdown_signal().await;
            cancel.cancel();
        });
    }
    if let Some(path) = args.objects {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("while reading {}", path.display()))?;
        let objects = svcnet_dns::Objects::from_list_json(&text)
            .with_context(|| format!("while parsing {}", path.display()))?;
        let handle = svcnet_dns::serve_static(config, &objects, cancel.clone())
            .await
            .context("while starting the dns server")?;
        tracing::info!(addr = %handle.addr, "serving static objects");
        cancel.cancelled().await;
        return Ok(());
    }
    let client = super::kube_client(args.kubeconfig.as_deref()).await?;
    svcnet_dns::run(client, config, cancel).await.context("while serving dns")
}
