//! svcnet-controllers: what gives a Service its addresses and keeps its endpoints true.
//!
//! - `ipam`: ClusterIP and NodePort allocation, pure, called by the API server in its write path.
//! - `endpointslice`: Service + Pods → EndpointSlices (and legacy Endpoints).
//! - `nodelifecycle`: node Leases → the Node's Ready condition.
//! - `lb`: svcnet-lb, the LoadBalancer provider (internal and external pools).
//! - `runtime`: the work queue and watch loop the controllers share.
//!
//! The controllers use only kube-rs list and watch, so they work against any Kubernetes API
//! server. Leaves out: storage of IPAM reservations (the API server owns the store), leader
//! election and the proxy.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod endpointslice;
pub mod error;
pub mod ipam;
pub mod lb;
pub mod nodelifecycle;
pub mod runtime;

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use error::{Error, Result};

/// Settings of all controllers.
#[derive(Debug, Clone)]
pub struct Config {
    /// Run the EndpointSlice (and Endpoints) controller.
    pub endpointslice: bool,
    /// Run the node lifecycle controller.
    pub node_lifecycle: bool,
    /// Run the LoadBalancer provider.
    pub load_balancer: bool,
    /// `--max-endpoints-per-slice`.
    pub max_endpoints_per_slice: usize,
    /// `--concurrent-service-endpoint-syncs`.
    pub endpointslice_workers: usize,
    /// Also write legacy Endpoints.
    pub mirror_endpoints: bool,
    /// `--node-monitor-grace-period`.
    pub node_monitor_grace_period: Duration,
    /// Where the LoadBalancer pools live.
    pub lb: lb::LbConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpointslice: true,
            node_lifecycle: true,
            load_balancer: true,
            max_endpoints_per_slice: 100,
            endpointslice_workers: 2,
            mirror_endpoints: true,
            node_monitor_grace_period: Duration::from_secs(40),
            lb: lb::LbConfig::default(),
        }
    }
}

/// Runs every enabled controller until `cancel` fires.
pub async fn run(client: kube::Client, config: Config, cancel: CancellationToken) -> Result<()> {
    if config.max_endpoints_per_slice == 0 || config.max_endpoints_per_slice > 1000 {
        return Err(Error::Config(format!(
            "max endpoints per slice must be 1-1000, got {}",
            config.max_endpoints_per_slice
        )));
    }
    let mut tasks = JoinSet::new();
    if config.endpointslice {
        let c = endpointslice::EndpointSliceController::new(
            client.clone(),
            endpointslice::EndpointSliceConfig {
                max_endpoints_per_slice: config.max_endpoints_per_slice,
                workers: config.endpointslice_workers,
                mirror_endpoints: config.mirror_endpoints,
            },
        );
        tasks.spawn(c.run(cancel.clone()));
    }
    if config.node_lifecycle {
        let c = nodelifecycle::NodeLifecycleController::new(
            client.clone(),
            config.node_monitor_grace_period,
        );
        tasks.spawn(c.run(cancel.clone()));
    }
    if config.load_balancer {
        let c = lb::LbController::new(client.clone(), config.lb.clone());
        tasks.spawn(c.run(cancel.clone()));
    }
    tracing::info!(
        endpointslice = config.endpointslice,
        node_lifecycle = config.node_lifecycle,
        load_balancer = config.load_balancer,
        "controllers started"
    );
    while tasks.join_next().await.is_some() {}
    Ok(())
}
