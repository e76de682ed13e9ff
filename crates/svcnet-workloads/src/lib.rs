//! svcnet-workloads: the scheduler and the ReplicaSet and Deployment controllers.
//!
//! Pure cores ([`scheduler::choose_node`], [`replicaset::plan`], [`deployment::rolling_step`])
//! decide; [`controller`] watches Pods, Nodes, ReplicaSets and Deployments through kube-rs
//! reflectors and applies the decisions with level-triggered passes, so the controllers work
//! against svcnet's API server and a real one alike. Garbage collection of objects whose owner
//! is gone is done here too (svcnet's API server has no garbage collector).
//! StatefulSets, DaemonSets, Jobs and pod disruption budgets are absent.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod controller;
pub mod deployment;
pub mod error;
pub mod labels;
pub mod replicaset;
pub mod scheduler;

use std::time::Duration;

use kube::Client;
use tokio_util::sync::CancellationToken;

pub use error::{Error, Result};

/// Which controllers run, and how often every object is looked at even without events.
#[derive(Clone, Debug)]
pub struct Config {
    pub scheduler: bool,
    pub replicasets: bool,
    pub deployments: bool,
    /// Pods whose `spec.schedulerName` is this (or empty) are scheduled.
    pub scheduler_name: String,
    /// Delete pods and ReplicaSets whose controlling owner no longer exists.
    pub garbage_collect: bool,
    pub resync: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            scheduler: true,
            replicasets: true,
            deployments: true,
            scheduler_name: "default-scheduler".to_string(),
            garbage_collect: true,
            resync: Duration::from_secs(5),
        }
    }
}

/// Runs the enabled controllers until `cancel` fires.
pub async fn run(client: Client, config: Config, cancel: CancellationToken) -> Result<()> {
    controller::run(client, config, cancel).await
}
