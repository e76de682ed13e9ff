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
    pub const ALL: [Target; 4] =
        [Target::ClusterIp, Target::NodePort, Target::InternalLb, Target::ExternalLb];
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
    let _ = writeln!(
        out,
        "answers came from zones: {}",
        if zones.is_empty() { "none".to_string() } else { zones.join(", ") }
    );
    out
}

/// The whole outcome of `lab check`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub cells: Vec<Cell>,
    /// Zones of the pods that answered (mapped pod → node → zone).
    pub zones_seen: BTreeSet<String>,
    /// Zones of the nodes that are not failed: answers must come from each.
    pub zones_expected: BTreeSet<String>,
    /// Hosts cut off with `lab fail` when the check ran.
    pub failed_hosts: Vec<String>,
    /// Cluster DNS from the pod: the ClusterIP Service's name resolves to its ClusterIP, also
    /// through the pod's search path, and HTTP by that name reaches the Service.
    pub dns: Option<DnsCheck>,
    pub ok: bool,
}

/// Cluster DNS as a pod uses it: `dig` of the full name, then the short name
/// `<service>.<namespace>` through the pod's resolv.conf search path with the C library
/// (`getent hosts`), then `curl` by that short name.
#[derive(Debug, Clone, Serialize)]
pub struct DnsCheck {
    /// The full name, e.g. `demo-clusterip.demo.svc.cluster.local`.
    pub name: String,
    /// The ClusterIP it must resolve to.
    pub expected: String,
    /// What `dig` answered for `name`.
    pub answer: Option<String>,
    /// The name a pod would write: `name` without `.svc.<cluster domain>`.
    pub short_name: String,
    /// The address `getent hosts short_name` gave (search path, glibc resolver).
    pub search_answer: Option<String>,
    /// The URL fetched by name, and the pod that answered it.
    pub url: String,
    pub answered_by: Option<String>,
}

impl DnsCheck {
    pub fn ok(&self) -> bool {
        self.answer.as_deref() == Some(self.expected.as_str())
            && self.search_answer.as_deref() == Some(self.expected.as_str())
            && self.answered_by.is_some()
    }
}

/// `demo-clusterip.demo.svc.cluster.local` → `demo-clusterip.demo` (the Service and namespace
/// labels: what a pod in another namespace writes, resolved through `svc.<domain>`).
pub fn short_name(name: &str) -> String {
    let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
    match labels.iter().position(|label| *label == "svc") {
        Some(at) if at >= 2 => labels[..at].join("."),
        _ => name.trim_end_matches('.').to_string(),
    }
}

/// The URL of a Service by name, with the port of its ClusterIP target (`ip:port`).
fn url_by_name(short_name: &str, cluster_ip_target: Option<&str>) -> String {
    match cluster_ip_target.and_then(|target| target.rsplit_once(':')).map(|(_, port)| port) {
        Some(port) if port != "80" => format!("http://{short_name}:{port}/"),
        _ => format!("http://{short_name}/"),
    }
}

/// What to probe: each source's namespace and each target's address (`None`: not assigned,
/// the cell is then a mismatch when expected to answer).
#[derive(Debug, Clone)]
pub struct Plan {
    pub sources: Vec<(Source, String)>,
    pub targets: Vec<(Target, Option<String>)>,
    /// Pod name → zone, for the zones seen.
    pub pod_zones: std::collections::BTreeMap<String, String>,
    pub zones_expected: BTreeSet<String>,
    pub failed_hosts: Vec<String>,
    /// A name to look up from the pod source, and the address it must resolve to.
    pub dns: Option<(String, String)>,
}

/// Attempts per cell: a cell answers when any attempt does (a backend on a node that just
/// failed may still be in the rotation for the node grace period).
const ATTEMPTS: usize = 3;
/// Extra requests to the internal LB from vm-1, to see answers from every zone.
const ZONE_SAMPLES: usize = 12;

async fn probe_cell(netns: &str, address: Option<&str>) -> Option<String> {
    let address = address?;
    for _ in 0..ATTEMPTS {
        if let Some(answer) = probe(netns, &format!("http://{address}/")).await {
            return Some(answer.get("pod").and_then(|p| p.as_str()).unwrap_or("?").to_string());
        }
    }
    None
}

/// Runs every probe of `plan` concurrently and compares with `expected`.
pub async fn run(plan: &Plan) -> Report {
    let mut jobs = Vec::new();
    for (source, netns) in &plan.sources {
        for (target, address) in &plan.targets {
            let (source, target, netns, address) =
                (*source, *target, netns.clone(), address.clone());
            jobs.push(async move {
                let answered_by = probe_cell(&netns, address.as_deref()).await;
                Cell {
                    source,
                    target,
                    address: address.unwrap_or_else(|| "(none)".to_string()),
                    expected: expected(source, target),
                    answered_by,
                }
            });
        }
    }
    let vm = plan.sources.iter().find(|(s, _)| *s == Source::Vm).map(|(_, ns)| ns.clone());
    let internal =
        plan.targets.iter().find(|(t, _)| *t == Target::InternalLb).and_then(|(_, a)| a.clone());
    let samples = async {
        let (Some(vm), Some(internal)) = (vm, internal) else { return Vec::new() };
        let url = format!("http://{internal}/");
        let mut answers = Vec::new();
        for _ in 0..ZONE_SAMPLES {
            // The first failure ends the sampling: the matrix already shows the LB unreachable.
            let Some(answer) = probe(&vm, &url).await else { break };
            if let Some(pod) = answer.get("pod").and_then(|p| p.as_str()) {
                answers.push(pod.to_string());
            }
        }
        answers
    };
    let pod = plan.sources.iter().find(|(s, _)| *s == Source::Pod).map(|(_, ns)| ns.clone());
    let cluster_ip_target =
        plan.targets.iter().find(|(t, _)| *t == Target::ClusterIp).and_then(|(_, a)| a.clone());
    let dns = async {
        let ((name, expected), pod) = (plan.dns.clone()?, pod?);
        let short_name = short_name(&name);
        let url = url_by_name(&short_name, cluster_ip_target.as_deref());
        let (answer, search_answer, answered_by) =
            futures::join!(lookup(&pod, &name), getent(&pod, &short_name), async {
                for _ in 0..ATTEMPTS {
                    if let Some(answer) = probe(&pod, &url).await {
                        return Some(
                            answer.get("pod").and_then(|p| p.as_str()).unwrap_or("?").to_string(),
                        );
                    }
                }
                None
            });
        Some(DnsCheck { name, expected, answer, short_name, search_answer, url, answered_by })
    };
    let (cells, samples, dns) = futures::join!(futures::future::join_all(jobs), samples, dns);
    let zones_seen: BTreeSet<String> = cells
        .iter()
        .filter_map(|c| c.answered_by.clone())
        .chain(samples)
        .filter_map(|pod| plan.pod_zones.get(&pod).cloned())
        .collect();
    let ok = cells.iter().all(Cell::ok)
        && plan.zones_expected.is_subset(&zones_seen)
        && dns.as_ref().is_none_or(DnsCheck::ok);
    Report {
        cells,
        zones_seen,
        zones_expected: plan.zones_expected.clone(),
        failed_hosts: plan.failed_hosts.clone(),
        dns,
        ok,
    }
}

/// Resolves `name` with `dig` inside `netns` (its resolv.conf: the pod's, naming cluster DNS).
async fn lookup(netns: &str, name: &str) -> Option<String> {
    let output = tokio::process::Command::new("ip")
        .args(["netns", "exec", netns, "dig", "+short", "+time=1", "+tries=2", name])
        .kill_on_drop(true)
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with(';')).map(str::to_string)
}

/// Resolves `name` with the C library inside `netns` (`getent hosts`: nsswitch, the pod's
/// resolv.conf search path and ndots, as a program in the pod resolves). Returns the address.
async fn getent(netns: &str, name: &str) -> Option<String> {
    let output = tokio::process::Command::new("ip")
        .args(["netns", "exec", netns, "getent", "hosts", name])
        .kill_on_drop(true)
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().filter_map(|line| line.split_whitespace().next()).next().map(str::to_string)
}

/// The report as text: the matrix, the zones, and a verdict line.
pub fn render_report(report: &Report) -> String {
    let mut out = render(&report.cells, &report.zones_seen);
    if !report.failed_hosts.is_empty() {
        let _ = writeln!(out, "failed hosts: {}", report.failed_hosts.join(", "));
    }
    let missing: Vec<&str> =
        report.zones_expected.difference(&report.zones_seen).map(String::as_str).collect();
    if !missing.is_empty() {
        let _ = writeln!(out, "MISMATCH: no answer from zone(s) {}", missing.join(", "));
    }
    if let Some(dns) = &report.dns {
        let mark = |ok: bool| if ok { "ok" } else { "MISMATCH" };
        let want = Some(dns.expected.as_str());
        let seen = dns.answer.as_deref().unwrap_or("no answer");
        let _ = writeln!(
            out,
            "DNS from a pod: dig {} -> {seen} (want {}) {}",
            dns.name,
            dns.expected,
            mark(dns.answer.as_deref() == want)
        );
        let seen = dns.search_answer.as_deref().unwrap_or("no answer");
        let _ = writeln!(
            out,
            "DNS from a pod: getent (search path) {} -> {seen} (want {}) {}",
            dns.short_name,
            dns.expected,
            mark(dns.search_answer.as_deref() == want)
        );
        let seen = dns.answered_by.as_deref().unwrap_or("no answer");
        let _ = writeln!(
            out,
            "DNS from a pod: curl {} -> {seen} {}",
            dns.url,
            mark(dns.answered_by.is_some())
        );
    }
    let _ = writeln!(out, "{}", if report.ok { "check passed" } else { "check FAILED" });
    out
}

/// Runs one HTTP request from inside `netns` and returns the answer (the echo server's JSON).
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
    fn names_a_pod_writes() {
        assert_eq!(short_name("demo-clusterip.demo.svc.cluster.local"), "demo-clusterip.demo");
        assert_eq!(short_name("web.demo.svc.example.org."), "web.demo");
        assert_eq!(short_name("odd"), "odd");
        assert_eq!(url_by_name("a.b", Some("10.96.0.20:80")), "http://a.b/");
        assert_eq!(url_by_name("a.b", Some("10.96.0.20:8080")), "http://a.b:8080/");
        assert_eq!(url_by_name("a.b", None), "http://a.b/");
    }

    #[test]
    fn render_marks_mismatches() {
        let cells = vec![
            Cell {
                source: Source::Vm,
                target: Target::ClusterIp,
                address: "10.96.0.20:80".into(),
                expected: false,
                answered_by: Some("echo-1".into()),
            },
            Cell {
                source: Source::Vm,
                target: Target::NodePort,
                address: "10.200.0.11:30080".into(),
                expected: true,
                answered_by: Some("echo-2".into()),
            },
        ];
        let zones = ["zone-a".to_string()].into_iter().collect();
        let text = render(&cells, &zones);
        assert!(text.contains("yes (want no) MISMATCH"), "{text}");
        assert!(text.contains("yes (want yes) ok"), "{text}");
        assert!(text.contains("answers came from zones: zone-a"), "{text}");
    }
}
