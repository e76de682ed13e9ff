//! The lab end to end with the real binary: `lab up` → `lab check` passes → `lab fail node-1`
//! (a client on vm-1 loops requests to the internal LB meanwhile) → `check` shows the LB
//! addresses served from the other zone → `lab heal node-1` → `lab down` leaves the machine's
//! namespaces, links, nftables ruleset and processes as they were.
//!
//! Needs root (CI runs as root); skipped otherwise. Prints `lab up` → passing check time and the
//! failover time (bench/README.md, section "Lab", records them); asserts no timing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

fn svcnet(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(SVCNET)
        .arg("lab")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("SVCNET_LOG", "warn")
        .output()
        .expect("run svcnet")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn capture(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect(program);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `lab down` must restore: namespaces, links, the root ruleset, our processes.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    netns: String,
    links: Vec<String>,
    ruleset: String,
    processes: Vec<String>,
}

fn snapshot(data_dir: &Path) -> Snapshot {
    let mut links: Vec<String> = capture("ip", &["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .collect();
    links.sort();
    // Processes of this lab: every command line naming its data dir.
    let marker = data_dir.display().to_string();
    let mut processes: Vec<String> = capture("ps", &["-eo", "pid=,args="])
        .lines()
        .filter(|l| l.contains(&marker) && !l.contains(" ps "))
        .map(str::to_string)
        .collect();
    processes.sort();
    Snapshot {
        netns: capture("ip", &["netns", "list"]),
        links,
        ruleset: capture("nft", &["list", "ruleset"]),
        processes,
    }
}

/// Removes the lab whatever happens to the test.
struct Down(PathBuf);
impl Drop for Down {
    fn drop(&mut self) {
        let out = svcnet(&self.0, &["down"]);
        if !out.status.success() {
            eprintln!("lab down failed: {}", text(&out));
        }
    }
}

fn logs(data_dir: &Path) -> String {
    let mut all = String::new();
    if let Ok(entries) = std::fs::read_dir(data_dir.join("logs")) {
        for entry in entries.flatten() {
            let body = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let tail: Vec<&str> = body.lines().rev().take(15).collect();
            all.push_str(&format!("--- {}\n", entry.path().display()));
            for line in tail.into_iter().rev() {
                all.push_str(line);
                all.push('\n');
            }
        }
    }
    all
}

/// Runs `lab check --output json` until it passes or `timeout` ends; returns the last report.
fn check_until_pass(data_dir: &Path, timeout: Duration) -> (bool, serde_json::Value, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let out = svcnet(data_dir, &["check", "--output", "json"]);
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        if out.status.success() || Instant::now() >= deadline {
            return (out.status.success(), report, text(&out));
        }
    }
}

/// The demo's LoadBalancer Services as (name, address, announcing node).
fn lb_services(data_dir: &Path) -> Vec<(String, String, Option<String>)> {
    let out = svcnet(data_dir, &["status", "--output", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    status["services"]
        .as_array()
        .map(|services| {
            services
                .iter()
                .filter(|s| s["type"] == "LoadBalancer" && s["namespace"] == "demo")
                .map(|s| {
                    (
                        s["name"].as_str().unwrap_or_default().to_string(),
                        s["load_balancer_ip"].as_str().unwrap_or_default().to_string(),
                        s["announced_by"].as_str().map(str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How a client looping requests saw a failover.
#[derive(Debug, Clone, Copy)]
struct Failover {
    /// From the start of the first failed request to the start of the first good one after it.
    first_good: Duration,
    /// From the start of the first failed request to the start of the first of
    /// [`RESTORED_AFTER`] good requests in a row (service fully back: no request to a dead
    /// endpoint either).
    restored: Option<Duration>,
}

/// Good requests in a row that count as "restored".
const RESTORED_AFTER: usize = 20;

/// A client on vm-1 requesting `address` in a loop (bounded in time and count), with short
/// timeouts so that the failover time is measured to about a tenth of a second.
fn failover_loop(
    address: String,
    stop_after: Duration,
) -> std::thread::JoinHandle<Option<Failover>> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut first_failure: Option<Instant> = None;
        let mut first_good: Option<Duration> = None;
        let mut good_run: Option<(Instant, usize)> = None;
        for _ in 0..20_000 {
            if start.elapsed() >= stop_after {
                break;
            }
            let sent = Instant::now();
            let ok = Command::new("ip")
                .args(["netns", "exec", "svcnet-lab-vm-1", "curl", "-s", "-o", "/dev/null"])
                .args(["--connect-timeout", "0.2", "-m", "0.5"])
                .arg(format!("http://{address}/"))
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            let Some(failed_at) = first_failure else {
                if !ok {
                    first_failure = Some(sent);
                }
                continue;
            };
            if !ok {
                good_run = None;
                continue;
            }
            first_good.get_or_insert(sent - failed_at);
            let (run_start, count) = good_run.get_or_insert((sent, 0));
            *count += 1;
            if *count >= RESTORED_AFTER {
                let restored = Some(*run_start - failed_at);
                return first_good.map(|first_good| Failover { first_good, restored });
            }
        }
        first_good.map(|first_good| Failover { first_good, restored: None })
    })
}

/// The cells of a report that do not match the promise, as `source->target`.
fn mismatches(report: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = report["cells"]
        .as_array()
        .map(|cells| {
            cells
                .iter()
                .filter(|c| c["expected"].as_bool() != Some(!c["answered_by"].is_null()))
                .map(|c| {
                    format!(
                        "{}->{}",
                        c["source"].as_str().unwrap_or("?"),
                        c["target"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn lab_round(dataplane: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_path_buf();
    let before = snapshot(&data_dir);
    assert!(!before.netns.contains("svcnet-lab-"), "a lab is already up: {}", before.netns);
    {
        let _down = Down(data_dir.clone());
        let started = Instant::now();
        let up = svcnet(&data_dir, &["up", "--dataplane", dataplane]);
        assert!(
            up.status.success(),
            "lab up ({dataplane}) failed: {}\n{}",
            text(&up),
            logs(&data_dir)
        );
        // `lab up` returns once the demo answers where promised: the first check passes.
        let first = svcnet(&data_dir, &["check", "--output", "json"]);
        let report: serde_json::Value =
            serde_json::from_slice(&first.stdout).unwrap_or(serde_json::Value::Null);
        assert!(
            first.status.success(),
            "the first lab check after up ({dataplane}) failed: {:?}\n{}\n{}",
            mismatches(&report),
            text(&first),
            logs(&data_dir)
        );
        println!(
            "lab[{dataplane}]: up -> passing check in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        assert_eq!(
            report["zones_seen"].as_array().map(Vec::len),
            Some(2),
            "answers from both zones: {report}"
        );
        // Cluster DNS from a pod: dig, `getent hosts demo-clusterip.demo` through the search path,
        // and curl by name.
        let dns = &report["dns"];
        assert_eq!(dns["answer"], dns["expected"], "dig from a pod: {dns}");
        assert_eq!(dns["search_answer"], dns["expected"], "getent from a pod: {dns}");
        assert!(dns["answered_by"].is_string(), "curl by name from a pod: {dns}");

        // Fail node-1 while vm-1 loops requests to the LB address node-1 announces.
        let lbs = lb_services(&data_dir);
        let on_node_1 = lbs.iter().find(|(_, _, by)| by.as_deref() == Some("node-1"));
        let internal = lbs.iter().find(|(name, _, _)| name == "demo-internal-lb");
        let (name, address, by) = on_node_1.or(internal).expect("an LB Service").clone();
        println!(
            "lab[{dataplane}]: looping requests from vm-1 to {name} {address} (announced by {by:?})"
        );
        let target = format!("{address}:80");
        let looper = failover_loop(target, Duration::from_secs(40));
        let fail = svcnet(&data_dir, &["fail", "node-1"]);
        assert!(fail.status.success(), "lab fail: {}", text(&fail));
        let failover = looper.join().expect("failover loop");
        match failover {
            Some(f) => println!(
                "lab[{dataplane}]: failover (first failed -> first good request) {:.2}s; \
                 restored ({RESTORED_AFTER} good in a row) after {}",
                f.first_good.as_secs_f64(),
                f.restored.map_or("(not within the loop)".to_string(), |d| format!(
                    "{:.2}s",
                    d.as_secs_f64()
                ))
            ),
            None => println!("lab[{dataplane}]: no request failed while node-1 was cut off"),
        }
        let (passed, report, out) = check_until_pass(&data_dir, Duration::from_secs(60));
        assert!(passed, "check after failing node-1 ({dataplane}): {out}\n{}", logs(&data_dir));
        assert_eq!(report["zones_seen"], serde_json::json!(["zone-b"]), "{report}");
        for (name, _, by) in lb_services(&data_dir) {
            assert_eq!(by.as_deref(), Some("node-2"), "{name} is announced from the other zone");
        }

        let heal = svcnet(&data_dir, &["heal", "node-1"]);
        assert!(heal.status.success(), "lab heal: {}", text(&heal));
        let (passed, _, out) = check_until_pass(&data_dir, Duration::from_secs(60));
        assert!(passed, "check after healing node-1 ({dataplane}): {out}\n{}", logs(&data_dir));
    }
    // `_down` ran: the machine is as before.
    assert_eq!(
        snapshot(&data_dir),
        before,
        "lab down leaves namespaces, links, rules and processes as before"
    );
    let again = svcnet(&data_dir, &["down"]);
    assert!(again.status.success(), "lab down is safe twice: {}", text(&again));
}

#[test]
fn lab_up_check_fail_heal_down() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: the lab needs root");
        return;
    }
    // One lab at a time: the lab's namespace names are fixed.
    for dataplane in ["nftables", "iptables", "userspace"] {
        lab_round(dataplane);
    }
}
