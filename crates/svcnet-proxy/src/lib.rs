//! The node proxy: Kubernetes objects in, a `ProxyPlan` out, rendered by a data plane.
//!
//! `plan` and `diff` are pure (no I/O, cannot fail); `render` turns a plan into rule text
//! (pure); only `dataplane` acts on the kernel or on sockets. `run` wires a kube-rs watch to a
//! data plane; `objects` reads the same objects from a file for offline use.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod conntrack;
pub mod dataplane;
pub mod diff;
pub mod error;
pub mod healthz;
pub mod metrics;
pub mod model;
pub mod objects;
pub mod plan;
pub mod render;
pub mod run;
pub mod scheduler;

pub use diff::{PlanDiff, diff};
pub use error::{Error, Result};
pub use ipnet::IpNet;
pub use model::{Model, NodeInfo, ObjectKey};
pub use plan::plan;
pub use plan::types::*;
pub use run::{Config, DataPlaneKind, run};
