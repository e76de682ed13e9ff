//! `svcnet server`: the Kubernetes-compatible API server and, unless `--no-controllers`, the
//! controllers (IPAM repair, EndpointSlices, LoadBalancer pools, node health) in-process.
//!
//! Prints where it listens and the kubeconfig path, then serves until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory for the store, TLS material, token and kubeconfig.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Address to listen on (HTTPS).
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// `embedded`, or `etcd:http://HOST:PORT[,http://…]`.
    #[arg(long, default_value = "embedded")]
    pub store: String,
    /// One or two CIDRs (dual-stack), primary first.
    #[arg(long, default_value = "10.96.0.0/12", value_delimiter = ',')]
    pub service_cluster_ip_range: Vec<ipnet_arg::Cidr>,
    /// Node port range `A-B`.
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// The address published in the `kubernetes` Service's endpoints.
    #[arg(long)]
    pub advertise_address: Option<std::net::IpAddr>,
    /// Do not run the controllers in this process.
    #[arg(long)]
    pub no_controllers: bool,
    /// How often the store's history is compacted, e.g. `5m`, `30s`; `0` turns it off
    /// (kube-apiserver's flag).
    #[arg(long, default_value = "5m", value_parser = parse_interval)]
    pub etcd_compaction_interval: std::time::Duration,
}

/// A duration as Go writes short ones: `0`, `500ms`, `30s`, `5m`, `1h`.
fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    use std::time::Duration;
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 =
        number.parse().map_err(|_| format!("{text:?} is not a duration like 5m or 30s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{text:?} is not a duration like 5m or 30s (units: ms, s, m, h)")),
    }
}

/// A CIDR argument (kept local so the binary needs no extra dependency).
mod ipnet_arg {
    #[derive(Debug, Clone)]
    pub struct Cidr(pub String);
    impl std::str::FromStr for Cidr {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            let (ip, len) = s.split_once('/').ok_or_else(|| format!("{s:?} is not a CIDR"))?;
            ip.parse::<std::net::IpAddr>().map_err(|e| format!("{s:?}: {e}"))?;
            len.parse::<u8>().map_err(|e| format!("{s:?}: {e}"))?;
            Ok(Cidr(s.to_string()))
        }
    }
}

fn parse_port_range(s: &str) -> anyhow::Result<std::ops::RangeInclusive<u16>> {
    let (a, b) =
        s.split_once('-').with_context(|| format!("--service-node-port-range {s:?} is not A-B"))?;
    let a: u16 = a.trim().parse().with_context(|| format!("--service-node-port-range {s:?}"))?;
    let b: u16 = b.trim().parse().with_context(|| format!("--service-node-port-range {s:?}"))?;
    anyhow::ensure!(a <= b && a > 0, "--service-node-port-range {s:?} is empty");
    Ok(a..=b)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut ranges = Vec::new();
    for c in &args.service_cluster_ip_range {
        ranges.push(c.0.parse().with_context(|| format!("--service-cluster-ip-range {}", c.0))?);
    }
    let config = svcnet_apiserver::Config {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        store: args.store.clone(),
        service_cluster_ip_ranges: ranges,
        service_node_port_range: parse_port_range(&args.service_node_port_range)?,
        advertise_address: args.advertise_address,
        compaction_interval: args.etcd_compaction_interval,
        ..Default::default()
    };
    let cancel = CancellationToken::new();
    let handle = svcnet_apiserver::start(config, cancel.clone())
        .await
        .context("while starting the API server")?;
    println!("svcnet API server listening on {}", handle.url);
    println!("kubeconfig: {}", handle.kubeconfig.display());
    let mut controllers = None;
    if !args.no_controllers {
        let client = super::kube_client(Some(&handle.kubeconfig)).await?;
        let token = cancel.child_token();
        controllers = Some(tokio::spawn(async move {
            if let Err(e) =
                svcnet_controllers::run(client, svcnet_controllers::Config::default(), token).await
            {
                tracing::error!(error = %e, "controllers stopped");
            }
        }));
    }
    super::shutdown_signal().await;
    tracing::info!("shutting down");
    cancel.cancel();
    if let Some(c) = controllers {
        let _ = c.await;
    }
    handle.stopped().await;
    Ok(())
}
