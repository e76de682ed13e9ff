//! The lab's shape as plain data: hosts, links, subnets and routes, chosen so that nothing
//! overlaps the machine's own routes.
//!
//! Pure: `Topology::choose` takes the host's routes and returns the plan that `net::build`
//! carries out. Nothing here touches the kernel, so every address decision is unit-tested.
//! Deliberately absent: any default route. No lab host can reach anything outside the lab.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What a host is for. Decides its links and routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A client on the internet, outside the VPC.
    Internet,
    /// Between the internet and the VPC; forwards from the internet only to external LB addresses.
    Router,
    /// Runs `svcnet server`.
    ControlPlane,
    /// Runs `svcnet node` (proxy and pods).
    Node,
    /// A machine in the VPC that is not part of the cluster.
    Vm,
}

/// One lab host: a network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// The name users type (`node-1`, `vm-1`, `internet`).
    pub name: String,
    /// The network namespace (`svcnet-lab-node-1`).
    pub netns: String,
    pub role: Role,
    /// Availability zone (nodes only).
    pub zone: Option<String>,
    /// The host's address on its uplink (VPC address, or the internet address).
    pub address: Ipv4Addr,
    /// The pod CIDR (nodes only).
    pub pod_cidr: Option<Ipv4Net>,
}

/// The whole lab plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// The private network shared by the control plane, the nodes and vm-1.
    pub vpc: Ipv4Net,
    /// The router's address on the VPC bridge.
    pub vpc_gateway: Ipv4Addr,
    /// The link between the internet host and the router.
    pub internet_link: Ipv4Net,
    /// The router's address on the internet link.
    pub router_internet_address: Ipv4Addr,
    /// Internal LoadBalancer addresses: a range inside the VPC subnet.
    pub internal_lb: Ipv4Net,
    /// External LoadBalancer addresses: the range the router forwards from the internet.
    pub external_lb: Ipv4Net,
    /// The cluster's pod network (each node gets a /24 of it).
    pub cluster_cidr: Ipv4Net,
    /// The Service ClusterIP range.
    pub service_cidr: Ipv4Net,
    pub hosts: Vec<Host>,
}

/// Candidate layouts, tried in order; the first whose ranges overlap nothing on the machine wins.
const CANDIDATES: &[Candidate] = &[
    Candidate {
        vpc: "10.200.0.0/24",
        internet_link: "203.0.113.0/24",
        external_lb: "198.51.100.0/24",
        cluster_cidr: "10.244.0.0/16",
        service_cidr: "10.96.0.0/16",
    },
    Candidate {
        vpc: "172.30.0.0/24",
        internet_link: "100.72.0.0/24",
        external_lb: "100.73.0.0/24",
        cluster_cidr: "172.31.0.0/16",
        service_cidr: "172.29.0.0/16",
    },
    Candidate {
        vpc: "192.168.213.0/24",
        internet_link: "100.112.0.0/24",
        external_lb: "100.113.0.0/24",
        cluster_cidr: "192.168.128.0/18",
        service_cidr: "192.168.64.0/18",
    },
];

struct Candidate {
    vpc: &'static str,
    internet_link: &'static str,
    external_lb: &'static str,
    cluster_cidr: &'static str,
    service_cidr: &'static str,
}

/// The prefix of every namespace the lab creates; `lab down` removes exactly these.
pub const NETNS_PREFIX: &str = "svcnet-lab-";

impl Topology {
    /// Chooses a layout whose subnets overlap none of `existing` (the machine's routes, as
    /// destinations; `default` routes are ignored since they overlap everything).
    pub fn choose(existing: &[IpNet]) -> Result<Topology> {
        let mut refused = Vec::new();
        for candidate in CANDIDATES {
            let topology = Topology::from_candidate(candidate)?;
            let clashes: Vec<String> = topology
                .ranges()
                .iter()
                .flat_map(|range| {
                    existing
                        .iter()
                        .filter(|route| {
                            route.prefix_len() > 0 && overlaps(route, &IpNet::V4(*range))
                        })
                        .map(move |route| format!("{range} overlaps the route to {route}"))
                })
                .collect();
            if clashes.is_empty() {
                return Ok(topology);
            }
            refused.extend(clashes);
        }
        Err(Error::NoFreeSubnets { clashes: refused.join("; ") })
    }

    fn from_candidate(candidate: &Candidate) -> Result<Topology> {
        let parse = |s: &str| -> Result<Ipv4Net> {
            s.parse().map_err(|_| Error::Internal(format!("bad built-in subnet {s}")))
        };
        let vpc = parse(candidate.vpc)?;
        let internet_link = parse(candidate.internet_link)?;
        let external_lb = parse(candidate.external_lb)?;
        let cluster_cidr = parse(candidate.cluster_cidr)?;
        let service_cidr = parse(candidate.service_cidr)?;
        let at = |net: Ipv4Net, n: u32| Ipv4Addr::from(u32::from(net.network()) + n);
        // The upper quarter of the VPC /24 (.192/26) is the internal LoadBalancer pool.
        let internal_lb = Ipv4Net::new(at(vpc, 192), 26)
            .map_err(|_| Error::Internal("internal LB range".into()))?;
        let pod_cidr = |i: u32| -> Result<Ipv4Net> {
            Ipv4Net::new(at(cluster_cidr, i << 8), 24)
                .map_err(|_| Error::Internal("pod CIDR".into()))
        };
        let host = |name: &str,
                    role: Role,
                    zone: Option<&str>,
                    address: Ipv4Addr,
                    pod_cidr: Option<Ipv4Net>| Host {
            name: name.to_string(),
            netns: format!("{NETNS_PREFIX}{name}"),
            role,
            zone: zone.map(str::to_string),
            address,
            pod_cidr,
        };
        let hosts = vec![
            host("internet", Role::Internet, None, at(internet_link, 10), None),
            host("router", Role::Router, None, at(vpc, 1), None),
            host("control-plane", Role::ControlPlane, None, at(vpc, 2), None),
            host("node-1", Role::Node, Some("zone-a"), at(vpc, 11), Some(pod_cidr(1)?)),
            host("node-2", Role::Node, Some("zone-b"), at(vpc, 12), Some(pod_cidr(2)?)),
            host("vm-1", Role::Vm, None, at(vpc, 20), None),
        ];
        Ok(Topology {
            vpc,
            vpc_gateway: at(vpc, 1),
            internet_link,
            router_internet_address: at(internet_link, 1),
            internal_lb,
            external_lb,
            cluster_cidr,
            service_cidr,
            hosts,
        })
    }

    /// Every range the lab uses, for the overlap check.
    pub fn ranges(&self) -> Vec<Ipv4Net> {
        vec![self.vpc, self.internet_link, self.external_lb, self.cluster_cidr, self.service_cidr]
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|h| h.role == Role::Node)
    }

    /// The hosts attached to the VPC bridge (everything but the internet host and the router).
    pub fn vpc_hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|h| !matches!(h.role, Role::Internet | Role::Router))
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    match (a, b) {
        (IpNet::V4(a), IpNet::V4(b)) => a.contains(&b.network()) || b.contains(&a.network()),
        (IpNet::V6(a), IpNet::V6(b)) => a.contains(&b.network()) || b.contains(&a.network()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().expect("test route")).collect()
    }

    #[test]
    fn first_candidate_when_nothing_overlaps() {
        let topology = Topology::choose(&routes(&["192.0.2.0/24", "0.0.0.0/0"])).expect("choose");
        assert_eq!(topology.vpc.to_string(), "10.200.0.0/24");
        assert_eq!(topology.internal_lb.to_string(), "10.200.0.192/26");
        assert_eq!(
            topology.host("node-2").and_then(|h| h.pod_cidr).map(|c| c.to_string()).as_deref(),
            Some("10.244.2.0/24")
        );
        assert_eq!(
            topology.host("vm-1").map(|h| h.address.to_string()).as_deref(),
            Some("10.200.0.20")
        );
    }

    #[test]
    fn skips_a_candidate_that_overlaps() {
        let topology = Topology::choose(&routes(&["10.0.0.0/8"])).expect("choose");
        assert_eq!(topology.vpc.to_string(), "172.30.0.0/24");
    }

    #[test]
    fn refuses_when_every_candidate_overlaps() {
        let err = Topology::choose(&routes(&["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]))
            .expect_err("must refuse");
        assert!(err.to_string().contains("overlaps the route to 10.0.0.0/8"), "{err}");
    }

    #[test]
    fn netns_names_carry_the_prefix() {
        let topology = Topology::choose(&[]).expect("choose");
        assert!(topology.hosts.iter().all(|h| h.netns.starts_with(NETNS_PREFIX)));
        assert_eq!(topology.vpc_hosts().count(), 4);
        assert_eq!(topology.nodes().count(), 2);
    }
}
