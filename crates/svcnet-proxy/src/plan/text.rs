//! A deterministic, human-readable rendering of a `ProxyPlan` (`impl Display`).
//!
//! Golden tests pin it and `svcnet proxy --dry-run` prints it. It is for people: it is not
//! parsed back, and it leaves out nothing that a data plane programs.

use std::fmt;

use super::types::*;

impl fmt::Display for FrontendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrontendKind::ClusterIp => "ClusterIP",
            FrontendKind::NodePort => "NodePort",
            FrontendKind::ExternalIp => "ExternalIP",
            FrontendKind::LoadBalancer => "LoadBalancer",
        })
    }
}

impl fmt::Display for TrafficPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrafficPolicy::Cluster => "Cluster",
            TrafficPolicy::Local => "Local",
        })
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheduler::Random => "random",
            Scheduler::RoundRobin => "round-robin",
            Scheduler::LeastConnections => "least-connections",
            Scheduler::SourceHash => "source-hash",
            Scheduler::Maglev => "maglev",
        })
    }
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            Some(std::net::IpAddr::V6(ip)) => {
                write!(f, "{} [{ip}]:{}/{}", self.kind, self.port, self.protocol)
            }
            Some(ip) => write!(f, "{} {ip}:{}/{}", self.kind, self.port, self.protocol),
            None => write!(f, "{} *:{}/{}", self.kind, self.port, self.protocol),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::net::SocketAddr::new(self.ip, self.port))?;
        write!(f, " weight={}", self.weight)?;
        if let Some(node) = &self.node_name {
            write!(f, " node={node}")?;
        }
        if let Some(zone) = &self.zone {
            write!(f, " zone={zone}")?;
        }
        if self.is_local {
            f.write_str(" local")?;
        }
        f.write_str(if self.ready { " ready" } else { " serving-terminating" })?;
        if let Some(target) = &self.target {
            write!(f, " pod={target}")?;
        }
        Ok(())
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "-".to_string();
    }
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for ProxyPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let node = &self.node;
        writeln!(f, "node {}", if node.node_name.is_empty() { "-" } else { &node.node_name })?;
        writeln!(f, "  zone: {}", node.zone.as_deref().unwrap_or("-"))?;
        writeln!(f, "  node_port_addresses: {}", join(&node.node_port_addresses))?;
        writeln!(f, "  cluster_cidrs: {}", join(&node.cluster_cidrs))?;
        writeln!(f, "  masquerade_all: {}", node.masquerade_all)?;
        if !node.service_cidrs.is_empty() {
            writeln!(f, "  service_cidrs: {}", join(&node.service_cidrs))?;
        }
        for (key, port) in &self.service_ports {
            writeln!(f)?;
            writeln!(f, "service {key}")?;
            for frontend in &port.frontends {
                writeln!(f, "  frontend {frontend}")?;
            }
            writeln!(
                f,
                "  policy internal={} external={} scheduler={}",
                port.internal_traffic_policy, port.external_traffic_policy, port.scheduler
            )?;
            if let Some(timeout) = port.session_affinity_timeout {
                writeln!(f, "  session_affinity ClientIP timeout={timeout}s")?;
            }
            if !port.load_balancer_source_ranges.is_empty() {
                writeln!(
                    f,
                    "  load_balancer_source_ranges: {}",
                    join(&port.load_balancer_source_ranges)
                )?;
            }
            if let Some(health) = port.health_check_node_port {
                writeln!(f, "  health_check_node_port: {health}")?;
            }
            writeln!(f, "  has_endpoints_anywhere: {}", port.has_endpoints_anywhere)?;
            writeln!(
                f,
                "  cluster_backends:{}",
                if port.cluster_backends.is_empty() { " -" } else { "" }
            )?;
            for backend in &port.cluster_backends {
                writeln!(f, "    {backend}")?;
            }
            writeln!(
                f,
                "  local_backends:{}",
                if port.local_backends.is_empty() { " -" } else { "" }
            )?;
            for backend in &port.local_backends {
                writeln!(f, "    {backend}")?;
            }
            let external_kind =
                port.frontends.iter().map(|fe| fe.kind).find(|k| *k != FrontendKind::ClusterIp);
            for (label, kind) in
                [("internal", Some(FrontendKind::ClusterIp)), ("external", external_kind)]
            {
                let Some(kind) = kind else { continue };
                if port.backends_for(kind).is_empty() {
                    let action = match port.when_empty(kind) {
                        EmptyAction::Reject => "reject",
                        EmptyAction::Drop => "drop",
                    };
                    writeln!(f, "  when_empty {label}: {action}")?;
                }
            }
        }
        if !self.warnings.is_empty() {
            writeln!(f)?;
            for warning in &self.warnings {
                writeln!(f, "warning: {warning}")?;
            }
        }
        Ok(())
    }
}
