//! `lab check`: the reachability matrix of overview.md, run for real.
//!
//! From a pod, a node, vm-1 and the internet, an HTTP request goes to each demo Service's
//! address; the answer (or its absence) is compared with what the Service type promises.
//! `expected` and `render` are pure; `probe` runs `curl` inside a lab namespace.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

/// Where a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Pod,
    Node,
    Vm,
    Internet,
}

/// Which address of a Service is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    ClusterIp,
    NodePort,
    InternalLb,
    ExternalLb,
}

impl Source {
    pub const ALL: [Source; 4] = [Source::Pod, Source::Node, Source::Vm, Source::Internet];
    pub fn label(self) -> &'static str {
        match self {
            Source::Pod => "a pod",
            Source::Node => "a node",
            Source::Vm => "vm-1 (VPC)",
            Source::Internet => "internet",
        }
    }
}

impl Target {
    pub const ALL: [Target; 4] = [Target::ClusterIp, Target::NodePort, Target::InternalLb, Target::ExternalLb];
    pub fn label(self) -> &'static str {
        match self {
            Target::ClusterIp => "ClusterIP",
            Target::NodePort => "NodePort",
            Target::InternalLb => "internal LB",
            Target::ExternalLb => "external LB",
        }
    }
}

/// The promise of each Service type (overview.md, "Who reaches what").
pub fn expected(source: Source, target: Target) -> bool {
    match source {
        Source::Pod | Source::Node => true,
        Source::Vm => target != Target::ClusterIp,
        Source::Internet => target == Target::ExternalLb,
    }
}

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub source: Source,
    pub target: Target,
    pub address: String,
    pub expected: bool,
    /// The pod that answered, if any.
    pub answered_by: Option<String>,
}

impl Cell {
    pub fn reached(&self) -> bool {
        self.answered_by.is_some()
    }
    pub fn ok(&self) -> bool {
        self.reached() == self.expected
    }
}

/// The matrix as a table: expected vs seen, and whether answers came from both zones.
pub fn render(cells: &[Cell], zones_seen: &BTreeSet<String>) -> String {
    let mut out = String::new();
    let _ = write!(out, "{:<12}", "from \\ to");
    for t in Target::ALL {
        let _ = write!(out, " {:<20}", t.label());
    }
    out.push('\n');
    for s in Source::ALL {
        let _ = write!(out, "{:<12}", s.label());
        for t in Target::ALL {
            let text = match cells.iter().find(|c| c.source == s && c.target == t) {
                Some(c) => {
                    let seen = if c.reached() { "yes" } else { "no" };
                    let want = if c.expected { "yes" } else { "no" };
                    let mark = if c.ok() { "ok" } else { "MISMATCH" };
                    format!("{seen} (want {want}) {mark}")
                }
                None => "-".to_string(),
            };
            let _ = write!(out, " {text:<20}");
        }
        out.push('\n');
    }
    let zones: Vec<&str> = zones_seen.iter().map(String::as_str).collect();
    let _ = writeln!(out, "answers came from zones: {}", if zones.is_empty() { "none".to_string() } else { zones.join(", ") });
    out
}

/// Runs one HTTP request from inside `netns` and returns the answering pod's name.
pub async fn probe(netns: &str, url: &str) -> Option<serde_json::Value> {
    let output = tokio::process::Command::new("ip")
        .args(["netns", "exec", netns, "curl", "-s", "--connect-timeout", "1", "-m", "2", url])
        .kill_on_drop(true)
        .output()
        .await
        .ok()?;
    if !output.status.success() {
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_of_the_overview() {
        let row = |s| Target::ALL.map(|t| expected(s, t));
        assert_eq!(row(Source::Pod), [true, true, true, true]);
        assert_eq!(row(Source::Node), [true, true, true, true]);
        assert_eq!(row(Source::Vm), [false, true, true, true]);
        assert_eq!(row(Source::Internet), [false, false, false, true]);
    }

    #[test]
    fn render_marks_mismatches() {
        let cells = vec![
            Cell { source: Source::Vm, target: Target::ClusterIp, address: "10.96.0.20:80".into(), expected: false, answered_by: Some("echo-1".into()) },
            Cell { source: Source::Vm, target: Target::NodePort, address: "10.200.0.11:30080".into(), expected: true, answered_by: Some("echo-2".into()) },
        ];
        let zones = ["zone-a".to_string()].into_iter().collect();
        let text = render(&cells, &zones);
        assert!(text.contains("yes (want no) MISMATCH"), "{text}");
        assert!(text.contains("yes (want yes) ok"), "{text}");
        assert!(text.contains("answers came from zones: zone-a"), "{text}");
    }
}
