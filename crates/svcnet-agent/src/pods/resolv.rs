//! The `/etc/resolv.conf` a pod sees with `dnsPolicy: ClusterFirst`.
//!
//! Matches what the kubelet writes (`pkg/kubelet/network/dns/dns.go`): the pod's namespace
//! search domain first, then `svc.<domain>` and `<domain>`, and `options ndots:5`.
//! Host search domains and `dnsConfig` merging are left out.

use std::net::IpAddr;

/// Renders resolv.conf for a pod in `namespace`.
pub fn resolv_conf(namespace: &str, cluster_domain: &str, nameservers: &[IpAddr]) -> String {
    let mut text = String::new();
    for nameserver in nameservers {
        text.push_str(&format!("nameserver {nameserver}\n"));
    }
    text.push_str(&format!(
        "search {namespace}.svc.{cluster_domain} svc.{cluster_domain} {cluster_domain}\n"
    ));
    text.push_str("options ndots:5\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_kubelet() {
        let text = resolv_conf("default", "cluster.local", &["10.96.0.10".parse().unwrap()]);
        assert_eq!(
            text,
            "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        );
    }
}
