//! The network-namespace lab: an internet host, a router, a VPC with a control plane, two
//! nodes in two zones and a VM outside the cluster, all on one machine.
//!
//! The lab exists to make the reachability claims of each Service type real packets. This
//! crate owns the topology (pure), building and removing it (`net`), and the state that lets
//! `lab down` clean up even after a crash of `lab up`.

pub mod check;
pub mod error;
pub mod forward;
pub mod net;
pub mod orchestrate;
pub mod state;
pub mod topology;

pub use error::{Error, Result};
pub use state::LabState;
pub use topology::{Host, Role, Topology};

use std::path::Path;

use ipnet::IpNet;

/// The machine's routes (destinations only), read from the host namespace without changing it.
pub async fn host_routes() -> Result<Vec<IpNet>> {
    let out = net::run(&net::Cmd { argv: vec!["ip".into(), "-j".into(), "route".into(), "show".into(), "table".into(), "all".into()], stdin: None }).await?;
    let routes: Vec<serde_json::Value> = serde_json::from_str(&out).map_err(|e| Error::Internal(format!("cannot parse `ip -j route`: {e}")))?;
    Ok(routes
        .iter()
        .filter_map(|r| r.get("dst").and_then(|d| d.as_str()))
        .filter(|dst| *dst != "default")
        .filter_map(|dst| if dst.contains('/') { dst.parse().ok() } else { dst.parse::<std::net::IpAddr>().ok().map(IpNet::from) })
        .collect())
}

/// Builds the lab's network (no svcnet processes yet) and records it in `data_dir`.
/// On any failure everything created so far is removed again.
pub async fn up_network(data_dir: &Path) -> Result<LabState> {
    if LabState::load(data_dir)?.is_some() {
        return Err(Error::AlreadyUp(data_dir.display().to_string()));
    }
    let topology = Topology::choose(&host_routes().await?)?;
    let state = LabState { topology: topology.clone(), processes: Vec::new(), forward_port: None };
    // Record first: a crash part-way through still leaves enough for `lab down`.
    state.save(data_dir)?;
    for cmd in net::build_commands(&topology) {
        if let Err(err) = net::run(&cmd).await {
            let _ = down(data_dir).await;
            return Err(err);
        }
    }
    Ok(state)
}

/// Removes every process, namespace (and so every interface) and rule the lab created.
/// Safe to run twice and after a crash.
pub async fn down(data_dir: &Path) -> Result<()> {
    if let Some(state) = LabState::load(data_dir)? {
        state.stop_processes().await;
    }
    for netns in net::lab_namespaces().await? {
        net::kill_processes_in(&netns).await?;
        let _ = net::run(&net::Cmd { argv: vec!["ip".into(), "netns".into(), "del".into(), netns.clone()], stdin: None }).await;
    }
    LabState::remove(data_dir)
}

/// Cuts a lab host off the VPC (its link on the bridge goes down), or brings it back.
pub async fn set_link(data_dir: &Path, host: &str, up: bool) -> Result<()> {
    let state = LabState::load(data_dir)?.ok_or_else(|| Error::NotUp(data_dir.display().to_string()))?;
    let topology = &state.topology;
    let target = topology.host(host).ok_or_else(|| Error::UnknownHost(host.to_string()))?;
    if matches!(target.role, Role::Internet | Role::Router) {
        return Err(Error::UnknownHost(format!("{host} (only VPC hosts can fail)")));
    }
    let router = topology.host("router").map(|h| h.netns.clone()).unwrap_or_default();
    let port = net::router_port(host);
    let cmd = net::Cmd { argv: vec!["ip".into(), "-n".into(), router, "link".into(), "set".into(), port, if up { "up".into() } else { "down".into() }], stdin: None };
    net::run(&cmd).await.map(|_| ())
}
