//! Turns a `Topology` into namespaces, veths, a bridge, addresses, routes and the router's
//! firewall, with the `ip` and `nft` tools — and takes it all down again.
//!
//! The commands are computed first (`build_commands`, pure and tested) and then run in order.
//! Every link and address lives inside a lab namespace: the machine's own namespace gets
//! nothing, so deleting the lab's namespaces removes every interface the lab made.

use std::process::Stdio;

use tokio::process::Command;

use crate::topology::{Role, Topology};
use crate::{Error, Result};

/// One command line (program and arguments), plus optional standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub argv: Vec<String>,
    pub stdin: Option<String>,
}

impl Cmd {
    fn new(argv: &[&str]) -> Cmd {
        Cmd { argv: argv.iter().map(|s| s.to_string()).collect(), stdin: None }
    }

    /// `sysctl -qw SETTING` inside `netns`.
    fn sysctl(netns: &str, setting: &str) -> Cmd {
        Cmd::new(&["ip", "netns", "exec", netns, "sysctl", "-qw", setting])
    }
}

impl std::fmt::Display for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.argv.join(" "))
    }
}

/// The router-side name of a VPC host's veth (interface names are at most 15 bytes).
pub fn router_port(host: &str) -> String {
    match host {
        "control-plane" => "v-cp".to_string(),
        other => format!("v-{other}"),
    }
}

/// The router's firewall: from the internet only to external LoadBalancer addresses.
pub fn router_ruleset(topology: &Topology) -> String {
    format!(
        "table inet svcnet-lab-router {{\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy drop;\n\
         \t\tct state established,related accept\n\
         \t\tiifname \"vpc0\" accept\n\
         \t\tiifname \"inet0\" ip daddr {external} accept\n\
         \t}}\n\
         }}\n",
        external = topology.external_lb
    )
}

/// Every command that builds the lab's network, in order.
pub fn build_commands(topology: &Topology) -> Vec<Cmd> {
    let mut cmds = Vec::new();
    let ns_of = |name: &str| topology.host(name).map(|h| h.netns.clone()).unwrap_or_default();
    let router = ns_of("router");
    let internet = ns_of("internet");
    for host in &topology.hosts {
        cmds.push(Cmd::new(&["ip", "netns", "add", &host.netns]));
        cmds.push(Cmd::new(&["ip", "-n", &host.netns, "link", "set", "lo", "up"]));
    }
    // The VPC bridge lives in the router's namespace.
    let gateway = format!("{}/{}", topology.vpc_gateway, topology.vpc.prefix_len());
    cmds.push(Cmd::new(&["ip", "-n", &router, "link", "add", "vpc0", "type", "bridge"]));
    cmds.push(Cmd::new(&["ip", "-n", &router, "addr", "add", &gateway, "dev", "vpc0"]));
    cmds.push(Cmd::new(&["ip", "-n", &router, "link", "set", "vpc0", "up"]));
    cmds.push(Cmd::sysctl(&router, "net.ipv4.ip_forward=1"));
    cmds.push(Cmd::new(&[
        "ip",
        "-n",
        &router,
        "route",
        "add",
        &topology.external_lb.to_string(),
        "dev",
        "vpc0",
    ]));
    // Pod addresses are routable in the VPC (as GKE's VPC-native alias ranges are): each
    // node's podCIDR via that node, on the router and every VPC host that is not a node.
    for node in topology.nodes() {
        if let Some(cidr) = node.pod_cidr {
            let (cidr, via) = (cidr.to_string(), node.address.to_string());
            cmds.push(Cmd::new(&["ip", "-n", &router, "route", "add", &cidr, "via", &via]));
        }
    }
    // The internet link.
    let router_inet =
        format!("{}/{}", topology.router_internet_address, topology.internet_link.prefix_len());
    cmds.push(Cmd::new(&[
        "ip", "-n", &router, "link", "add", "inet0", "type", "veth", "peer", "name", "eth0",
        "netns", &internet,
    ]));
    cmds.push(Cmd::new(&["ip", "-n", &router, "addr", "add", &router_inet, "dev", "inet0"]));
    cmds.push(Cmd::new(&["ip", "-n", &router, "link", "set", "inet0", "up"]));
    if let Some(client) = topology.host("internet") {
        let addr = format!("{}/{}", client.address, topology.internet_link.prefix_len());
        let via = topology.router_internet_address.to_string();
        cmds.push(Cmd::new(&["ip", "-n", &internet, "addr", "add", &addr, "dev", "eth0"]));
        cmds.push(Cmd::new(&["ip", "-n", &internet, "link", "set", "eth0", "up"]));
        // Only the lab's own ranges, via the router (which drops all but the external LB range).
        for dst in [topology.external_lb, topology.vpc] {
            cmds.push(Cmd::new(&[
                "ip",
                "-n",
                &internet,
                "route",
                "add",
                &dst.to_string(),
                "via",
                &via,
            ]));
        }
    }
    cmds.push(Cmd {
        argv: vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            router.clone(),
            "nft".into(),
            "-f".into(),
            "-".into(),
        ],
        stdin: Some(router_ruleset(topology)),
    });
    // Each VPC host: a veth whose router end is a port of the bridge.
    for host in topology.vpc_hosts() {
        let port = router_port(&host.name);
        let addr = format!("{}/{}", host.address, topology.vpc.prefix_len());
        cmds.push(Cmd::new(&[
            "ip",
            "-n",
            &router,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &host.netns,
        ]));
        cmds.push(Cmd::new(&["ip", "-n", &router, "link", "set", &port, "master", "vpc0", "up"]));
        cmds.push(Cmd::new(&["ip", "-n", &host.netns, "addr", "add", &addr, "dev", "eth0"]));
        cmds.push(Cmd::new(&["ip", "-n", &host.netns, "link", "set", "eth0", "up"]));
        let gw = topology.vpc_gateway.to_string();
        cmds.push(Cmd::new(&[
            "ip",
            "-n",
            &host.netns,
            "route",
            "add",
            &topology.internet_link.to_string(),
            "via",
            &gw,
        ]));
        // External LB addresses are answered (ARP) by the announcing node on the VPC.
        cmds.push(Cmd::new(&[
            "ip",
            "-n",
            &host.netns,
            "route",
            "add",
            &topology.external_lb.to_string(),
            "dev",
            "eth0",
        ]));
        // Pod ranges are routed on the VPC (GKE VPC-native): every host reaches each other
        // node's pods through that node.
        for other in topology.nodes().filter(|o| o.name != host.name) {
            if let Some(cidr) = other.pod_cidr {
                cmds.push(Cmd::new(&[
                    "ip",
                    "-n",
                    &host.netns,
                    "route",
                    "add",
                    &cidr.to_string(),
                    "via",
                    &other.address.to_string(),
                ]));
            }
        }
        if host.role == Role::Node {
            cmds.push(Cmd::sysctl(&host.netns, "net.ipv4.ip_forward=1"));
            // Nodes have no default route, so a connection to a ClusterIP needs a route to
            // leave the node at all; the proxy's DNAT then rewrites it (the address is never
            // answered on the VPC).
            cmds.push(Cmd::new(&[
                "ip",
                "-n",
                &host.netns,
                "route",
                "add",
                &topology.service_cidr.to_string(),
                "dev",
                "eth0",
            ]));
        }
    }
    cmds
}

/// For the userspace data plane, which listens on Service addresses rather than rewriting
/// packets: on each node, the Service range and both LoadBalancer ranges become local
/// (`local` routes on `lo`), so the proxy can bind any of their addresses. `arp_ignore=1`
/// keeps the node from answering ARP for addresses that are merely local: only an address
/// the speaker put on `eth0` is answered on the VPC.
pub fn userspace_commands(topology: &Topology) -> Vec<Cmd> {
    let mut cmds = Vec::new();
    for node in topology.nodes() {
        for range in [topology.service_cidr, topology.internal_lb, topology.external_lb] {
            cmds.push(Cmd::new(&[
                "ip",
                "-n",
                &node.netns,
                "route",
                "replace",
                "local",
                &range.to_string(),
                "dev",
                "lo",
            ]));
        }
        for conf in ["all", "eth0"] {
            cmds.push(Cmd::sysctl(&node.netns, &format!("net.ipv4.conf.{conf}.arp_ignore=1")));
        }
    }
    cmds
}

/// Runs one command; a non-zero exit is an error carrying its stderr.
pub async fn run(cmd: &Cmd) -> Result<String> {
    let (program, args) =
        cmd.argv.split_first().ok_or_else(|| Error::Internal("empty command".into()))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(if cmd.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::Spawn { program: program.clone(), source })?;
    if let (Some(input), Some(mut stdin)) = (cmd.stdin.as_ref(), child.stdin.take()) {
        use tokio::io::AsyncWriteExt;
        stdin
            .write_all(input.as_bytes())
            .await
            .map_err(|source| Error::Spawn { program: program.clone(), source })?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|source| Error::Spawn { program: program.clone(), source })?;
    if !output.status.success() {
        return Err(Error::CommandFailed {
            command: cmd.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Every network namespace on the machine (`ip netns list`).
pub async fn all_namespaces() -> Result<Vec<String>> {
    let out = run(&Cmd::new(&["ip", "netns", "list"])).await?;
    Ok(out.lines().filter_map(|line| line.split_whitespace().next()).map(str::to_string).collect())
}

/// The lab's host namespaces that exist now (by prefix). Pod namespaces are found with
/// `recorded_pod_namespaces`.
pub async fn lab_namespaces() -> Result<Vec<String>> {
    Ok(all_namespaces()
        .await?
        .into_iter()
        .filter(|name| name.starts_with(crate::topology::NETNS_PREFIX))
        .collect())
}

/// The pod namespaces the lab's node agents made (`svcnet-<node>-<uid>`), as each agent
/// records them under `DATA_DIR/<node>/run/netns/` before creating them. Only recorded names
/// are returned, so another `svcnet node` on the machine with the same node name is left alone.
pub fn recorded_pod_namespaces(data_dir: &std::path::Path, node_names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for node in node_names {
        let Ok(entries) = std::fs::read_dir(data_dir.join(node).join("run").join("netns")) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("svcnet-{node}-")) {
                out.push(name);
            }
        }
    }
    out.sort();
    out
}

/// Kills every process inside `netns` (SIGKILL) — used by `lab down`.
pub async fn kill_processes_in(netns: &str) -> Result<()> {
    let out = match run(&Cmd::new(&["ip", "netns", "pids", netns])).await {
        Ok(out) => out,
        Err(_) => return Ok(()),
    };
    for pid in out.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_command_touches_the_host_namespace() {
        let topology = Topology::choose(&[]).expect("topology");
        for cmd in build_commands(&topology).into_iter().chain(userspace_commands(&topology)) {
            let argv: Vec<&str> = cmd.argv.iter().map(String::as_str).collect();
            let scoped = matches!(argv.as_slice(), ["ip", "netns", "add", ..])
                || matches!(argv.as_slice(), ["ip", "-n", ns, ..] if ns.starts_with("svcnet-lab-"))
                || matches!(argv.as_slice(), ["ip", "netns", "exec", ns, ..] if ns.starts_with("svcnet-lab-"));
            assert!(scoped, "command not scoped to a lab namespace: {cmd}");
            assert!(!argv.contains(&"default"), "no default routes: {cmd}");
        }
    }

    #[test]
    fn router_forwards_only_the_external_range_from_the_internet() {
        let topology = Topology::choose(&[]).expect("topology");
        let rules = router_ruleset(&topology);
        assert!(rules.contains("policy drop"));
        assert!(rules.contains("iifname \"inet0\" ip daddr 198.51.100.0/24 accept"));
    }

    #[test]
    fn veth_names_fit_the_kernel_limit() {
        let topology = Topology::choose(&[]).expect("topology");
        for host in topology.vpc_hosts() {
            assert!(router_port(&host.name).len() <= 15, "{}", router_port(&host.name));
        }
    }
}
