//! `svcnet controllers`: the EndpointSlice controller, node lifecycle and the LoadBalancer
//! provider against an API server (svcnet's or any Kubernetes). ClusterIP and NodePort
//! allocation is not here: it lives in the API server's write path.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// Run the controllers alone.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kubeconfig of the API server (default: in-cluster or ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Maximum endpoints per EndpointSlice (kube-controller-manager's flag).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_endpoints_per_slice: u32,
    /// Parallel EndpointSlice reconciles.
    #[arg(long, default_value_t = 2)]
    concurrent_service_endpoint_syncs: usize,
    /// How long a node Lease may go unrenewed before the node's Ready becomes Unknown (seconds).
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period: u64,
    /// Namespace/name of the LoadBalancer pool ConfigMap.
    #[arg(long, default_value = "kube-system/svcnet-lb-pools")]
    lb_pools: String,
    /// Do not run the LoadBalancer provider.
    #[arg(long)]
    no_load_balancer: bool,
    /// Do not run the EndpointSlice controller.
    #[arg(long)]
    no_endpointslice: bool,
    /// Do not run the node lifecycle controller.
    #[arg(long)]
    no_node_lifecycle: bool,
    /// Do not write legacy Endpoints objects.
    #[arg(long)]
    no_endpoints: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (pools_namespace, pools_name) =
        args.lb_pools.split_once('/').context("--lb-pools must be NAMESPACE/NAME")?;
    let config = svcnet_controllers::Config {
        endpointslice: !args.no_endpointslice,
        node_lifecycle: !args.no_node_lifecycle,
        load_balancer: !args.no_load_balancer,
        max_endpoints_per_slice: args.max_endpoints_per_slice as usize,
        endpointslice_workers: args.concurrent_service_endpoint_syncs.max(1),
        mirror_endpoints: !args.no_endpoints,
        node_monitor_grace_period: Duration::from_secs(args.node_monitor_grace_period),
        lb: svcnet_controllers::lb::LbConfig {
            pools_namespace: pools_namespace.to_string(),
            pools_name: pools_name.to_string(),
        },
    };
    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            super::shutdown_signal().await;
            cancel.cancel();
        });
    }
    let client = super::kube_client(args.kubeconfig.as_deref()).await?;
    svcnet_controllers::run(client, config, cancel).await.context("while running the controllers")
}
