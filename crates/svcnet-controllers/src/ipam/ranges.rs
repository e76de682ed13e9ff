//! Address arithmetic for one service CIDR and the KEP-3070 / KEP-3668 band sizes.
//!
//! Leaves out: which addresses are taken (the `Ipam` keeps that).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One service CIDR: its usable addresses are numbered `0..size` from `first()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRange {
    net: ipnet::IpNet,
    base: u128,
    size: u128,
    static_size: u128,
}

impl IpRange {
    /// Usable addresses as kube-apiserver's bitmap allocator counts them: IPv4 skips the network
    /// and broadcast addresses, IPv6 the network address and uses at most 65535 addresses.
    /// `None` when no address is usable.
    pub fn new(net: ipnet::IpNet) -> Option<IpRange> {
        let net = net.trunc();
        let (base, cidr_size, size) = match net {
            ipnet::IpNet::V4(v4) => {
                let cidr_size = 1u128 << (32 - u32::from(v4.prefix_len()));
                (u128::from(u32::from(v4.network())), cidr_size, cidr_size.saturating_sub(2))
            }
            ipnet::IpNet::V6(v6) => {
                let bits = 128 - u32::from(v6.prefix_len());
                let cidr_size = if bits >= 127 { u128::MAX } else { 1u128 << bits };
                (u128::from(v6.network()), cidr_size, cidr_size.min(65536) - 1)
            }
        };
        if size == 0 {
            return None;
        }
        Some(IpRange {
            net,
            base: base + 1,
            size,
            static_size: ip_static_band_size(cidr_size).min(size),
        })
    }

    pub fn net(&self) -> ipnet::IpNet {
        self.net
    }

    /// `IPv4` or `IPv6`.
    pub fn family(&self) -> &'static str {
        match self.net {
            ipnet::IpNet::V4(_) => "IPv4",
            ipnet::IpNet::V6(_) => "IPv6",
        }
    }

    /// The number of usable addresses.
    pub fn size(&self) -> u128 {
        self.size
    }

    /// The size of the static (lower) band of KEP-3070.
    pub fn static_size(&self) -> u128 {
        self.static_size
    }

    /// The first usable address (`10.96.0.1` for `10.96.0.0/12`).
    pub fn first(&self) -> IpAddr {
        self.at(0)
    }

    /// The usable address number `offset` (`offset < size`).
    pub fn at(&self, offset: u128) -> IpAddr {
        let n = self.base + offset;
        match self.net {
            ipnet::IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
            ipnet::IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
        }
    }

    /// The number of a usable address, if it is one.
    pub fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        let n = match (ip, self.net) {
            (IpAddr::V4(v4), ipnet::IpNet::V4(_)) => u128::from(u32::from(v4)),
            (IpAddr::V6(v6), ipnet::IpNet::V6(_)) => u128::from(v6),
            _ => return None,
        };
        n.checked_sub(self.base).filter(|off| *off < self.size)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.offset_of(ip).is_some()
    }
}

/// KEP-3070: the static band is `min(max(16, cidr_size / 16), 256)` addresses, none for ranges of
/// 16 addresses or fewer.
pub fn ip_static_band_size(cidr_size: u128) -> u128 {
    if cidr_size <= 16 {
        return 0;
    }
    (cidr_size / 16).clamp(16, 256)
}

/// KEP-3668: the static band of the node port range is `min(max(16, size / 32), 128)` ports, none
/// for ranges of 16 ports or fewer.
pub fn port_static_band_size(size: u32) -> u32 {
    if size <= 16 {
        return 0;
    }
    (size / 32).clamp(16, 128)
}
