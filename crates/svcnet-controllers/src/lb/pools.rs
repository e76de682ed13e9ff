//! The LoadBalancer address pools: the `pools.yaml` key of ConfigMap
//! `kube-system/svcnet-lb-pools` (format in `docs/loadbalancer.md`), parsed into `Pool`s.
//!
//! Leaves out: allocation (see `alloc`) and watching the ConfigMap (see the controller).

use std::net::IpAddr;

use serde::Deserialize;

/// Which network an address is reachable from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The private network (VPC) only.
    Internal,
    /// Public-facing.
    External,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Internal => "internal",
            Scope::External => "external",
        })
    }
}

/// One inclusive address range of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressRange {
    pub first: IpAddr,
    pub last: IpAddr,
}

impl AddressRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.first.is_ipv4()
            && to_u128(ip) >= to_u128(self.first)
            && to_u128(ip) <= to_u128(self.last)
    }

    /// The number of addresses (saturating).
    pub fn len(&self) -> u128 {
        (to_u128(self.last) - to_u128(self.first)).saturating_add(1)
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The address `offset` places after `first` (`offset < len()`).
    pub fn at(&self, offset: u128) -> IpAddr {
        from_u128(to_u128(self.first) + offset, self.first.is_ipv4())
    }
}

/// One address pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub scope: Scope,
    pub ranges: Vec<AddressRange>,
    /// Only Services asking for this zone (annotation `svcnet.io/load-balancer-zone`) use a
    /// zoned pool automatically; zoneless pools serve everyone.
    pub zone: Option<String>,
    /// Whether Services get addresses from it without naming it (`svcnet.io/address-pool`).
    pub auto_assign: bool,
}

impl Pool {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PoolYaml {
    name: String,
    scope: Scope,
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    cidrs: Vec<String>,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default = "default_true")]
    auto_assign: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PoolsYaml {
    List(Vec<PoolYaml>),
    Wrapped { pools: Vec<PoolYaml> },
}

/// The ConfigMap key holding the pools.
pub const POOLS_KEY: &str = "pools.yaml";

/// Parses `pools.yaml`. Every problem is reported, one sentence each; a pool with a problem is
/// left out and the others still work.
pub fn parse_pools(text: &str) -> (Vec<Pool>, Vec<String>) {
    let mut problems = Vec::new();
    if text.trim().is_empty() {
        return (Vec::new(), problems);
    }
    let parsed: PoolsYaml = match serde_saphyr::from_str(text) {
        Ok(p) => p,
        Err(e) => return (Vec::new(), vec![format!("{POOLS_KEY} is not a list of pools: {e}")]),
    };
    let list = match parsed {
        PoolsYaml::List(l) => l,
        PoolsYaml::Wrapped { pools } => pools,
    };
    let mut pools: Vec<Pool> = Vec::new();
    for p in list {
        if pools.iter().any(|q| q.name == p.name) {
            problems.push(format!("pool {:?} is defined twice; the second is ignored", p.name));
            continue;
        }
        let mut ranges = Vec::new();
        let mut bad = false;
        for a in p.cidrs.iter().chain(p.addresses.iter()) {
            match parse_range(a) {
                Ok(r) => ranges.push(r),
                Err(e) => {
                    problems.push(format!("pool {:?}: {e}", p.name));
                    bad = true;
                }
            }
        }
        if bad {
            continue;
        }
        if ranges.is_empty() {
            problems.push(format!("pool {:?} has no addresses", p.name));
            continue;
        }
        if let Some(other) =
            pools.iter().find(|q| q.ranges.iter().any(|qr| ranges.iter().any(|r| overlaps(qr, r))))
        {
            problems
                .push(format!("pool {:?} overlaps pool {:?}; it is ignored", p.name, other.name));
            continue;
        }
        pools.push(Pool {
            name: p.name,
            scope: p.scope,
            ranges,
            zone: p.zone.filter(|z| !z.is_empty()),
            auto_assign: p.auto_assign,
        });
    }
    (pools, problems)
}

fn overlaps(a: &AddressRange, b: &AddressRange) -> bool {
    a.first.is_ipv4() == b.first.is_ipv4()
        && to_u128(a.first) <= to_u128(b.last)
        && to_u128(b.first) <= to_u128(a.last)
}

/// `10.0.0.0/24` (without its network and broadcast addresses for IPv4 prefixes shorter than
/// /31, without the network address for IPv6 shorter than /127), `10.0.0.5-10.0.0.9`, or one
/// address.
pub fn parse_range(text: &str) -> Result<AddressRange, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<ipnet::IpNet>() {
        let net = net.trunc();
        let (mut first, mut last) = (to_u128(net.network()), to_u128(net.broadcast()));
        match net {
            ipnet::IpNet::V4(v4) if v4.prefix_len() < 31 => {
                first += 1;
                last -= 1;
            }
            ipnet::IpNet::V6(v6) if v6.prefix_len() < 127 => first += 1,
            _ => {}
        }
        let v4 = net.addr().is_ipv4();
        return Ok(AddressRange { first: from_u128(first, v4), last: from_u128(last, v4) });
    }
    if let Some((a, b)) = text.split_once('-') {
        let first: IpAddr =
            a.trim().parse().map_err(|_| format!("{text:?} is not a CIDR or an address range"))?;
        let last: IpAddr =
            b.trim().parse().map_err(|_| format!("{text:?} is not a CIDR or an address range"))?;
        if first.is_ipv4() != last.is_ipv4() || to_u128(first) > to_u128(last) {
            return Err(format!("{text:?} is not a valid address range"));
        }
        return Ok(AddressRange { first, last });
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(AddressRange { first: ip, last: ip });
    }
    Err(format!("{text:?} is not a CIDR or an address range"))
}

pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

pub(crate) fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(std::net::Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(std::net::Ipv6Addr::from(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_format() {
        let text = r#"
- name: vpc
  scope: internal
  cidrs: ["10.200.0.0/30"]
  zone: zone-a
- name: public
  scope: external
  addresses: ["203.0.113.10-203.0.113.12", "2001:db8::5"]
  autoAssign: false
"#;
        let (pools, problems) = parse_pools(text);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(pools.len(), 2);
        assert_eq!(pools[0].scope, Scope::Internal);
        assert_eq!(pools[0].zone.as_deref(), Some("zone-a"));
        assert_eq!(pools[0].ranges[0].first.to_string(), "10.200.0.1");
        assert_eq!(pools[0].ranges[0].last.to_string(), "10.200.0.2");
        assert!(pools[0].auto_assign);
        assert!(!pools[1].auto_assign);
        assert_eq!(pools[1].ranges[0].len(), 3);
        assert!(pools[1].contains("2001:db8::5".parse().unwrap()));
    }

    #[test]
    fn wrapped_form_and_problems() {
        let (pools, problems) = parse_pools(
            "pools:\n- name: a\n  scope: external\n  cidrs: [\"10.0.0.0/24\"]\n- name: b\n  scope: internal\n  cidrs: [\"10.0.0.128/25\"]\n- name: c\n  scope: internal\n  cidrs: [\"nonsense\"]\n",
        );
        assert_eq!(pools.len(), 1);
        assert_eq!(
            problems,
            vec![
                r#"pool "b" overlaps pool "a"; it is ignored"#.to_string(),
                r#"pool "c": "nonsense" is not a CIDR or an address range"#.to_string()
            ]
        );
        let (pools, problems) = parse_pools("- name: x\n  scope: sideways\n");
        assert!(pools.is_empty());
        assert_eq!(problems.len(), 1);
    }
}
