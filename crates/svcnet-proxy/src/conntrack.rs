//! UDP conntrack cleanup after a sync, as kube-proxy does (`pkg/proxy/conntrack/cleanup.go`):
//! UDP has no connection teardown, so a flow keeps its NAT binding to a dead endpoint (or to
//! "no DNAT" while a Service had no endpoints) until it idles out. After each sync svcnet
//! deletes, with the `conntrack` tool in the current network namespace:
//! * flows to a frontend whose endpoint set went from empty to non-empty;
//! * flows from a frontend to an endpoint that was removed.
//!
//! TCP is left alone (it fails fast on its own); SCTP likewise, as kube-proxy does.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::{IpFamily, Protocol, ProxyPlan};

/// One `conntrack -D` invocation, as its arguments.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deletion {
    pub args: Vec<String>,
}

/// The deletions needed after moving from `old` to `new` (pure).
pub fn stale_udp(old: &ProxyPlan, new: &ProxyPlan) -> BTreeSet<Deletion> {
    let mut out = BTreeSet::new();
    for (key, sp) in &new.service_ports {
        if key.protocol != Protocol::Udp {
            continue;
        }
        let old_sp = old.service_ports.get(key);
        let family = match key.family {
            IpFamily::V4 => "ipv4",
            IpFamily::V6 => "ipv6",
        };
        for fe in &sp.frontends {
            let addrs: Vec<Option<IpAddr>> = match fe.address {
                Some(a) => vec![Some(a)],
                // A NodePort: every destination.
                None => vec![None],
            };
            let new_backends = sp.backends_for(fe.kind);
            let old_backends = old_sp.map(|o| o.backends_for(fe.kind)).unwrap_or(&[]);
            for addr in addrs {
                let mut base = vec![
                    "-D".to_string(),
                    "-f".to_string(),
                    family.to_string(),
                    "-p".to_string(),
                    "udp".to_string(),
                ];
                if let Some(a) = addr {
                    base.extend(["--orig-dst".to_string(), a.to_string()]);
                }
                base.extend(["--orig-port-dst".to_string(), fe.port.to_string()]);
                if old_backends.is_empty() && !new_backends.is_empty() {
                    out.insert(Deletion { args: base.clone() });
                }
                for b in old_backends {
                    if !new_backends.iter().any(|n| n.ip == b.ip && n.port == b.port) {
                        let mut args = base.clone();
                        args.extend([
                            "--reply-src".to_string(),
                            b.ip.to_string(),
                            "--reply-port-src".to_string(),
                            b.port.to_string(),
                        ]);
                        out.insert(Deletion { args });
                    }
                }
            }
        }
    }
    // Service ports that disappeared: their flows to endpoints are stale too.
    for (key, sp) in &old.service_ports {
        if key.protocol != Protocol::Udp || new.service_ports.contains_key(key) {
            continue;
        }
        let family = match key.family {
            IpFamily::V4 => "ipv4",
            IpFamily::V6 => "ipv6",
        };
        for fe in &sp.frontends {
            let mut args = vec![
                "-D".to_string(),
                "-f".to_string(),
                family.to_string(),
                "-p".to_string(),
                "udp".to_string(),
            ];
            if let Some(a) = fe.address {
                args.extend(["--orig-dst".to_string(), a.to_string()]);
            }
            args.extend(["--orig-port-dst".to_string(), fe.port.to_string()]);
            out.insert(Deletion { args });
        }
    }
    out
}

/// Runs the deletions for `old` → `new` with the `conntrack` binary. Failures are logged, not
/// returned: a stale flow is degraded service, not a reason to fail the sync.
pub async fn cleanup(conntrack: &str, old: &ProxyPlan, new: &ProxyPlan) {
    for deletion in stale_udp(old, new) {
        let args: Vec<&str> = deletion.args.iter().map(String::as_str).collect();
        match crate::dataplane::nftables::run_tool(conntrack, &args, None).await {
            Ok((_, _, Ok(_))) => {}
            // `conntrack -D` exits 1 when nothing matched.
            Ok((_, _, Err(stderr))) if stderr.contains("0 flow entries") || stderr.is_empty() => {}
            Ok((_, _, Err(stderr))) => tracing::warn!(?args, %stderr, "conntrack cleanup failed"),
            Err(error) => tracing::warn!(%error, "cannot run conntrack"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::testplans::*;

    #[test]
    fn removed_udp_endpoint_and_revived_service_are_cleared() {
        let old = everything();
        let mut new = old.clone();
        let dns = key("dns", Protocol::Udp, IpFamily::V4);
        let sp = new.service_ports.get_mut(&dns).expect("dns");
        sp.cluster_backends.remove(0);
        let dels = stale_udp(&old, &new);
        let text: Vec<String> = dels.iter().map(|d| d.args.join(" ")).collect();
        assert_eq!(
            text,
            vec![
                "-D -f ipv4 -p udp --orig-dst 10.96.0.53 --orig-port-dst 53 --reply-src 10.244.1.7 --reply-port-src 53"
            ]
        );
        let mut empty = old.clone();
        empty.service_ports.get_mut(&dns).expect("dns").cluster_backends.clear();
        let dels = stale_udp(&empty, &old);
        let text: Vec<String> = dels.iter().map(|d| d.args.join(" ")).collect();
        assert_eq!(text, vec!["-D -f ipv4 -p udp --orig-dst 10.96.0.53 --orig-port-dst 53"]);
    }
}
