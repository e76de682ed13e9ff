//! The network-namespace lab: an internet host, a router, a VPC with a control plane, two
//! nodes in two zones and a VM outside the cluster, all on one machine.
//!
//! The lab exists to make the reachability claims of each Service type real packets. This
//! crate owns the topology (pure), building and removing it (`net`), and the state that lets
//! `lab down` clean up even after a crash of `lab up`.

pub mod check;
pub mod cluster;
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
    let out = net::run(&net::Cmd {
        argv: vec![
            "ip".into(),
            "-j".into(),
            "route".into(),
            "show".into(),
            "table".into(),
            "all".into(),
        ],
        stdin: None,
    })
    .await?;
    let routes: Vec<serde_json::Value> = serde_json::from_str(&out)
        .map_err(|e| Error::Internal(format!("cannot parse `ip -j route`: {e}")))?;
    Ok(routes
        .iter()
        .filter_map(|r| r.get("dst").and_then(|d| d.as_str()))
        .filter(|dst| *dst != "default")
        .filter_map(|dst| {
            if dst.contains('/') {
                dst.parse().ok()
            } else {
                dst.parse::<std::net::IpAddr>().ok().map(IpNet::from)
            }
        })
        .collect())
}

/// Builds the lab's network (no svcnet processes yet) and records it in `data_dir`.
/// On any failure everything created so far is removed again.
pub async fn up_network(data_dir: &Path) -> Result<LabState> {
    if LabState::load(data_dir)?.is_some() {
        return Err(Error::AlreadyUp(data_dir.display().to_string()));
    }
    let topology = Topology::choose(&host_routes().await?)?;
    let state = LabState {
        topology: topology.clone(),
        processes: Vec::new(),
        forward_port: None,
        failed: Vec::new(),
    };
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
    let state = LabState::load(data_dir)?;
    if let Some(state) = &state {
        state.stop_processes().await;
    }
    let node_names: Vec<String> = match &state {
        Some(state) => state.topology.nodes().map(|n| n.name.clone()).collect(),
        None => Topology::choose(&[])?.nodes().map(|n| n.name.clone()).collect(),
    };
    let existing = net::all_namespaces().await?;
    // Pods first (their processes and veths hang off the nodes), then the lab's hosts.
    let mut doomed = net::recorded_pod_namespaces(data_dir, &node_names);
    doomed.retain(|ns| existing.contains(ns));
    doomed.extend(net::lab_namespaces().await?);
    for netns in &doomed {
        net::kill_processes_in(netns).await?;
        let _ = net::run(&net::Cmd {
            argv: vec!["ip".into(), "netns".into(), "del".into(), netns.clone()],
            stdin: None,
        })
        .await;
    }
    for netns in net::recorded_pod_namespaces(data_dir, &node_names) {
        // The agent keeps each pod's resolv.conf in /etc/netns/<netns>/.
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&netns));
        for node in &node_names {
            let _ =
                std::fs::remove_file(data_dir.join(node).join("run").join("netns").join(&netns));
        }
    }
    LabState::remove(data_dir)
}

/// Cuts a lab host off the VPC (its link on the bridge goes down), or brings it back.
pub async fn set_link(data_dir: &Path, host: &str, up: bool) -> Result<()> {
    let state =
        LabState::load(data_dir)?.ok_or_else(|| Error::NotUp(data_dir.display().to_string()))?;
    let topology = &state.topology.clone();
    let target = topology.host(host).ok_or_else(|| Error::UnknownHost(host.to_string()))?;
    if matches!(target.role, Role::Internet | Role::Router) {
        return Err(Error::UnknownHost(format!("{host} (only VPC hosts can fail)")));
    }
    let router = topology.host("router").map(|h| h.netns.clone()).unwrap_or_default();
    let port = net::router_port(host);
    let cmd = net::Cmd {
        argv: vec![
            "ip".into(),
            "-n".into(),
            router,
            "link".into(),
            "set".into(),
            port,
            if up { "up".into() } else { "down".into() },
        ],
        stdin: None,
    };
    net::run(&cmd).await?;
    let mut state = state;
    state.failed.retain(|h| h != host);
    if !up {
        state.failed.push(host.to_string());
    }
    state.save(data_dir)
}
