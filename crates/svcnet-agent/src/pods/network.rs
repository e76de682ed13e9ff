//! Pod addresses and, as root, pod network namespaces.
//!
//! Two modes ([`PodNetwork`]): `Loopback` gives each pod an address from a range inside
//! 127.0.0.0/8 and needs no privileges (pods share the host's network namespace, so two pods
//! can clash on a port bound to 0.0.0.0); `Bridge` creates a network namespace per pod
//! (`svcnet-<node>-<uid prefix>`), a veth pair whose node end joins the node's bridge, an
//! address from the node's podCIDR and `/etc/netns/<name>/resolv.conf`, which `ip netns exec`
//! bind-mounts over `/etc/resolv.conf` for the pod's processes.
//! The bridge lives in the agent's namespace or in a named node namespace (`node_netns`), so
//! a test or `svcnet up` can keep the whole node out of the host's namespace.
//! IPv6 pod addresses are left out.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::error::{Error, Result};

/// How pods get their network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodNetwork {
    /// Addresses from a loopback range (no root needed, no isolation).
    Loopback { range: Ipv4Net },
    /// A network namespace per pod, attached to `bridge` with addresses from `pod_cidr`.
    Bridge {
        bridge: String,
        pod_cidr: Ipv4Net,
        /// Routes each pod gets through the bridge address (for example the Service range).
        routes: Vec<IpNet>,
        /// The named network namespace holding the bridge (the node); `None` is the agent's own.
        node_netns: Option<String>,
    },
}

impl Default for PodNetwork {
    fn default() -> Self {
        PodNetwork::Loopback {
            range: Ipv4Net::new(Ipv4Addr::new(127, 1, 0, 0), 16).unwrap_or_default(),
        }
    }
}

/// Hands out pod addresses from a range; the first usable address may be reserved (a gateway).
#[derive(Clone, Debug)]
pub struct IpPool {
    range: Ipv4Net,
    reserved: BTreeSet<Ipv4Addr>,
    used: BTreeSet<Ipv4Addr>,
}

impl IpPool {
    /// A pool over the host addresses of `range`, minus `reserved`.
    pub fn new(range: Ipv4Net, reserved: impl IntoIterator<Item = Ipv4Addr>) -> Self {
        IpPool { range, reserved: reserved.into_iter().collect(), used: BTreeSet::new() }
    }

    /// Takes `preferred` when it is in range and free, else the lowest free address.
    pub fn allocate(&mut self, preferred: Option<IpAddr>) -> Result<Ipv4Addr> {
        if let Some(IpAddr::V4(ip)) = preferred
            && self.usable(ip)
        {
            self.used.insert(ip);
            return Ok(ip);
        }
        let found = self.range.hosts().find(|ip| self.usable(*ip));
        match found {
            Some(ip) => {
                self.used.insert(ip);
                Ok(ip)
            }
            None => Err(Error::NoPodAddress { range: self.range.to_string() }),
        }
    }

    fn usable(&self, ip: Ipv4Addr) -> bool {
        self.range.contains(&ip)
            && ip != self.range.network()
            && ip != self.range.broadcast()
            && !self.reserved.contains(&ip)
            && !self.used.contains(&ip)
    }

    pub fn release(&mut self, ip: IpAddr) {
        if let IpAddr::V4(ip) = ip {
            self.used.remove(&ip);
        }
    }
}

/// The network namespace name of a pod.
pub fn netns_name(node: &str, pod_uid: &str) -> String {
    let prefix: String = pod_uid.chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
    format!("svcnet-{node}-{prefix}")
}

/// The node-side veth name of a pod (at most 15 bytes).
pub fn host_veth_name(pod_uid: &str) -> String {
    let prefix: String = pod_uid.chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
    format!("svh{prefix}")
}

/// The bridge's own address: the first host address of the podCIDR.
pub fn gateway(pod_cidr: Ipv4Net) -> Option<Ipv4Addr> {
    pod_cidr.hosts().next()
}

async fn ip(args: &[&str]) -> Result<()> {
    ip_in(None, args).await
}

/// Runs `ip [-n NETNS] ARGS`.
async fn ip_in(netns: Option<&str>, args: &[&str]) -> Result<()> {
    let mut command = tokio::process::Command::new("ip");
    if let Some(netns) = netns {
        command.args(["-n", netns]);
    }
    let output = command
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| Error::io("running ip", e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command: format!(
                "ip {}{}",
                netns.map(|n| format!("-n {n} ")).unwrap_or_default(),
                args.join(" ")
            ),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// Creates the bridge with the gateway address if it is missing.
pub async fn ensure_bridge(
    node_netns: Option<&str>,
    bridge: &str,
    pod_cidr: Ipv4Net,
) -> Result<()> {
    let gw = gateway(pod_cidr)
        .ok_or_else(|| Error::Config(format!("podCIDR {pod_cidr} has no host address")))?;
    if ip_in(node_netns, &["link", "show", "dev", bridge]).await.is_err() {
        ip_in(node_netns, &["link", "add", "name", bridge, "type", "bridge"]).await?;
    }
    let addr = format!("{gw}/{}", pod_cidr.prefix_len());
    if let Err(err) = ip_in(node_netns, &["addr", "add", &addr, "dev", bridge]).await
        && !err.to_string().contains("File exists")
        && !err.to_string().contains("already assigned")
    {
        return Err(err);
    }
    ip_in(node_netns, &["link", "set", "dev", bridge, "up"]).await
}

/// Creates the namespace, veth, address, routes and resolv.conf of one pod.
#[allow(clippy::too_many_arguments)]
pub async fn setup_pod_netns(
    node_netns: Option<&str>,
    netns: &str,
    pod_uid: &str,
    bridge: &str,
    pod_cidr: Ipv4Net,
    pod_ip: Ipv4Addr,
    routes: &[IpNet],
    resolv_conf: &str,
) -> Result<()> {
    let gw = gateway(pod_cidr)
        .ok_or_else(|| Error::Config(format!("podCIDR {pod_cidr} has no host address")))?;
    let veth = host_veth_name(pod_uid);
    // A leftover namespace of the same name is from an earlier run: start clean.
    let _ = ip(&["netns", "del", netns]).await;
    ip(&["netns", "add", netns]).await?;
    ip_in(
        node_netns,
        &["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", netns],
    )
    .await?;
    ip_in(node_netns, &["link", "set", "dev", &veth, "master", bridge, "up"]).await?;
    let addr = format!("{pod_ip}/{}", pod_cidr.prefix_len());
    ip(&["-n", netns, "link", "set", "dev", "lo", "up"]).await?;
    ip(&["-n", netns, "addr", "add", &addr, "dev", "eth0"]).await?;
    ip(&["-n", netns, "link", "set", "dev", "eth0", "up"]).await?;
    forget_previous_owner(node_netns, netns, bridge, pod_ip).await;
    let gw_text = gw.to_string();
    for route in routes {
        let route_text = route.to_string();
        ip(&["-n", netns, "route", "add", &route_text, "via", &gw_text]).await?;
    }
    let etc = std::path::Path::new("/etc/netns").join(netns);
    tokio::fs::create_dir_all(&etc)
        .await
        .map_err(|e| Error::io(format!("creating {}", etc.display()), e))?;
    tokio::fs::write(etc.join("resolv.conf"), resolv_conf)
        .await
        .map_err(|e| Error::io(format!("writing {}/resolv.conf", etc.display()), e))?;
    Ok(())
}

/// A new pod may get the address of one that just went. Neighbours that cached the old pod's
/// MAC would send its traffic into the void until the entry times out (about 30 s): drop the
/// node's entry, and announce the new MAC with a gratuitous ARP from the pod (as the CNI bridge
/// plugin does) for everyone else on the bridge. Both are best effort: no entry, or no `arping`
/// installed, is not an error. The announcement runs in the background: `arping` lingers a
/// second after its one packet, and the pod must not wait for that.
async fn forget_previous_owner(
    node_netns: Option<&str>,
    netns: &str,
    bridge: &str,
    pod_ip: Ipv4Addr,
) {
    let address = pod_ip.to_string();
    let _ = ip_in(node_netns, &["neigh", "del", &address, "dev", bridge]).await;
    let garp = tokio::process::Command::new("ip")
        .args(["netns", "exec", netns, "arping", "-q", "-U", "-c", "1", "-I", "eth0", &address])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let netns = netns.to_string();
    tokio::spawn(async move {
        let result = match garp {
            Ok(child) => child.wait_with_output().await.map_err(|e| e.to_string()).and_then(|o| {
                if o.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&o.stderr).into_owned())
                }
            }),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = result {
            tracing::debug!(netns, %error, "gratuitous ARP for the pod address failed");
        }
    });
}

/// Removes a pod namespace (its veth goes with it) and its /etc/netns directory.
pub async fn teardown_pod_netns(netns: &str) {
    if let Err(err) = ip(&["netns", "del", netns]).await {
        tracing::debug!(netns, error = %err, "deleting pod namespace");
    }
    let _ = tokio::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(netns)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_prefers_the_old_address_and_skips_reserved() {
        let range: Ipv4Net = "10.244.1.0/29".parse().unwrap();
        let mut pool = IpPool::new(range, gateway(range));
        assert_eq!(pool.allocate(None).unwrap(), Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(
            pool.allocate(Some("10.244.1.5".parse().unwrap())).unwrap(),
            Ipv4Addr::new(10, 244, 1, 5)
        );
        assert_eq!(
            pool.allocate(Some("10.244.1.5".parse().unwrap())).unwrap(),
            Ipv4Addr::new(10, 244, 1, 3)
        );
        assert_eq!(pool.allocate(None).unwrap(), Ipv4Addr::new(10, 244, 1, 4));
        assert_eq!(pool.allocate(None).unwrap(), Ipv4Addr::new(10, 244, 1, 6));
        assert!(pool.allocate(None).is_err());
        pool.release("10.244.1.3".parse().unwrap());
        assert_eq!(pool.allocate(None).unwrap(), Ipv4Addr::new(10, 244, 1, 3));
    }

    #[test]
    fn names_fit_the_kernel_limits() {
        assert_eq!(netns_name("node-1", "0f3a9c2e-1111-2222"), "svcnet-node-1-0f3a9c2e");
        assert!(host_veth_name("0f3a9c2e-1111-2222").len() <= 15);
    }
}
