//! `svcnet up --dataplane nftables` as root: the node, its pods and the Service addresses in
//! svcnet's own network namespace. The real binary, the real kubectl (from the host, through
//! the 127.0.0.1 forward), real curl and dig inside the namespace via `svcnet up exec`. Then a
//! SIGKILL, a restart that cleans up and resumes the same objects, and a final Ctrl-C after
//! which the host has exactly the namespaces, routes, addresses and rules it had before.
#![allow(clippy::unwrap_used)]

mod common;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Up {
    child: Child,
}

impl Up {
    /// Starts root-mode `svcnet up` (nftables) and waits for its "svcnet is up" line.
    fn start(data_dir: &Path, listen: &str) -> Up {
        Up::start_with(data_dir, listen, "nftables")
    }

    fn start_with(data_dir: &Path, listen: &str, dataplane: &str) -> Up {
        Up {
            child: common::spawn_up(
                Command::new(env!("CARGO_BIN_EXE_svcnet"))
                    .args(["up", "--dataplane", dataplane, "--data-dir"])
                    .arg(data_dir)
                    .args(["--listen", listen]),
            ),
        }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Stops it like Ctrl-C would and waits for a clean exit.
    fn stop(mut self) {
        self.signal(nix::sys::signal::Signal::SIGINT);
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "svcnet up exits cleanly on Ctrl-C: {status:?}");
    }

    fn kill9(mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        // Ctrl-C cleans up; a test that failed part-way still leaves nothing behind.
        if let Ok(None) = self.child.try_wait() {
            self.signal(nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(common::POLL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Removes what a run recorded in the data dir if the test failed before a clean stop (after
/// a clean stop there is nothing left to remove).
struct Leftovers(PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let Ok(bytes) = std::fs::read(self.0.join("up-root.json")) else { return };
        let Ok(state) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return };
        let mut namespaces = pod_namespaces(&self.0);
        namespaces.extend(state["netns"].as_str().map(str::to_string));
        for pid in pids_in_namespaces(&namespaces) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for ns in &namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
    }
}

struct Cluster {
    data_dir: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Cluster {
    /// The cluster of a test whose files live in `dir`.
    fn new(dir: &Path) -> Cluster {
        let data_dir = dir.join("cluster");
        Cluster { kubeconfig: data_dir.join("kubeconfig"), cache: dir.join("kube-cache"), data_dir }
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let command =
            common::kubectl_command(Command::new("kubectl"), &self.kubeconfig, &self.cache);
        common::kubectl_output(command, args)
    }

    /// Runs a command inside the cluster's namespace (`svcnet up exec`).
    fn exec(&self, command: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_svcnet"))
            .args(["up", "exec", "--data-dir"])
            .arg(&self.data_dir)
            .arg("--")
            .args(command)
            .output()
            .expect("svcnet up exec")
    }

    /// The pod name answering an HTTP GET, from inside the namespace.
    fn curl(&self, url: &str) -> Option<String> {
        let out = self.exec(&["curl", "-s", "--connect-timeout", "1", "-m", "2", url]);
        if !out.status.success() {
            return None;
        }
        common::answering_pod(&out.stdout)
    }

    /// Waits until the answers through `url` come from exactly the ready pods of the echo
    /// Deployment (all of them, none other).
    fn answers_from_every_replica(&self, url: &str, replicas: usize) -> BTreeSet<String> {
        common::answers_from_every_replica(|u| self.curl(u), || self.echo_pods(), url, replicas)
    }

    fn echo_pods(&self) -> BTreeSet<String> {
        let out = self.kubectl(&[
            "get",
            "pods",
            "-l",
            "app=echo",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "jsonpath={range .items[?(@.metadata.deletionTimestamp)]}{end}{range .items[*]}{.metadata.name}{\" \"}{end}",
        ]);
        out.split_whitespace().map(str::to_string).collect()
    }
}

/// What the host's own namespace looks like (read only).
fn host_snapshot() -> (String, String, String, String) {
    let run = |args: &[&str]| {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    (
        run(&["ip", "netns", "list"]),
        run(&["ip", "route", "show", "table", "all"]),
        run(&["ip", "-br", "addr"]),
        run(&["nft", "list", "ruleset"]),
    )
}

/// The processes of `pids` still running (zombies waiting for init count as gone), with their
/// command lines; waits up to 5 s for killed ones to disappear.
fn processes_alive(pids: &[i32]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let alive: Vec<String> = pids
            .iter()
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let state = stat.rsplit(')').next()?.split_whitespace().next()?.to_string();
                if state == "Z" {
                    return None;
                }
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                Some(format!(
                    "{pid} {state} {}",
                    String::from_utf8_lossy(&cmdline).replace('\0', " ")
                ))
            })
            .collect();
        if alive.is_empty() || Instant::now() > deadline {
            return alive;
        }
        std::thread::sleep(common::POLL);
    }
}

/// Processes in the named network namespaces.
fn pids_in_namespaces(namespaces: &[String]) -> Vec<i32> {
    let mut pids = Vec::new();
    for ns in namespaces {
        {
            let out = Command::new("ip").args(["netns", "pids", ns]).output().unwrap();
            pids.extend(
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    pids
}

/// The pod namespaces the agent of this cluster recorded.
fn pod_namespaces(data_dir: &Path) -> Vec<String> {
    std::fs::read_dir(data_dir.join("agent/run/netns"))
        .map(|dir| dir.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn root_mode_nftables_serves_the_examples_and_survives_sigkill() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: root mode needs root (CI runs as root)");
        return;
    }
    let before = host_snapshot();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::new(dir.path());
    let data_dir = cluster.data_dir.clone();
    let _leftovers = Leftovers(data_dir.clone());
    let listen = format!("127.0.0.1:{}", free_port());

    let up = Up::start(&data_dir, &listen);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("up-root.json")).unwrap()).unwrap();
    let netns = state["netns"].as_str().unwrap().to_string();
    assert!(Path::new("/run/netns").join(&netns).exists(), "the namespace {netns} exists");
    let no_route_out = cluster.exec(&["ip", "route", "show", "default"]);
    assert!(no_route_out.status.success() && no_route_out.stdout.is_empty(), "no default route");

    cluster.kubectl(&["apply", "-f", common::examples().to_str().unwrap()]);
    cluster.kubectl(&["rollout", "status", "deployment/echo", "--timeout=60s"]);
    let svc = |name: &str, path: &str| {
        cluster.kubectl(&["get", "svc", name, "-o", &format!("jsonpath={{{path}}}")])
    };
    let cluster_ip = svc("echo-clusterip", ".spec.clusterIP");
    assert!(cluster_ip.starts_with("10.96."), "ClusterIP from the namespace's range: {cluster_ip}");

    // Every Service type, from inside the namespace, answers from every replica.
    cluster.answers_from_every_replica(&format!("http://{cluster_ip}/"), 3);
    cluster.answers_from_every_replica("http://10.244.0.1:30080/", 3);
    let lb_ip = common::wait_non_empty("the internal LoadBalancer gets an address", || {
        svc("echo-lb-internal", ".status.loadBalancer.ingress[0].ip")
    });
    cluster.answers_from_every_replica(&format!("http://{lb_ip}/"), 3);
    // Cluster DNS at the tenth Service address.
    let dig = cluster.exec(&[
        "dig",
        "+short",
        "+time=1",
        "+tries=3",
        "@10.96.0.10",
        "echo-clusterip.default.svc.cluster.local",
    ]);
    assert_eq!(String::from_utf8_lossy(&dig.stdout).trim(), cluster_ip, "kube-dns answers");

    // Scale up and down changes who answers.
    cluster.kubectl(&["scale", "deployment/echo", "--replicas=5"]);
    cluster.kubectl(&["rollout", "status", "deployment/echo", "--timeout=60s"]);
    cluster.answers_from_every_replica(&format!("http://{cluster_ip}/"), 5);
    cluster.kubectl(&["scale", "deployment/echo", "--replicas=2"]);
    let two = cluster.answers_from_every_replica(&format!("http://{cluster_ip}/"), 2);

    // A deleted pod gets a replacement, which then answers too.
    let victim = two.iter().next().unwrap().clone();
    cluster.kubectl(&["delete", "pod", &victim, "--wait=true"]);
    cluster.kubectl(&["rollout", "status", "deployment/echo", "--timeout=60s"]);
    let after = cluster.answers_from_every_replica(&format!("http://{cluster_ip}/"), 2);
    assert!(!after.contains(&victim), "the deleted pod {victim} no longer answers: {after:?}");

    // The echo server's log through the API server and the agent.
    let survivor = after.iter().next().unwrap().clone();
    let logs = cluster.kubectl(&["logs", &survivor]);
    assert!(!logs.trim().is_empty(), "kubectl logs shows the echo server's log");

    // A pod whose readiness probe fails stops receiving traffic, and gets it back when it
    // passes again. The probe fails while a file named after the pod exists.
    let marks = dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    let flaky = dir.path().join("flaky.json");
    std::fs::write(&flaky, common::flaky_manifest(&marks)).unwrap();
    cluster.kubectl(&["apply", "-f", flaky.to_str().unwrap()]);
    cluster.kubectl(&["rollout", "status", "deployment/flaky", "--timeout=60s"]);
    let flaky_ip = svc("flaky", ".spec.clusterIP");
    let pods = cluster.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=flaky",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}{\" \"}{end}",
    ]);
    let pods: Vec<&str> = pods.split_whitespace().collect();
    assert_eq!(pods.len(), 2, "{pods:?}");
    let (sick, healthy) = (pods[0], pods[1]);
    let curl = |url: &str| cluster.curl(url);
    common::answered_only_by(curl, &flaky_ip, &[sick, healthy]);
    std::fs::write(marks.join(sick), b"").unwrap();
    common::answered_only_by(curl, &flaky_ip, &[healthy]);
    std::fs::remove_file(marks.join(sick)).unwrap();
    common::answered_only_by(curl, &flaky_ip, &[sick, healthy]);

    // SIGKILL: the next `up` cleans up what was left and resumes the same objects.
    let uid = svc("echo-clusterip", ".metadata.uid");
    let pod_pids = pids_in_namespaces(&pod_namespaces(&data_dir));
    assert!(!pod_pids.is_empty(), "pod processes run in their own namespaces");
    up.kill9();
    let up = Up::start(&data_dir, &listen);
    assert_eq!(svc("echo-clusterip", ".metadata.uid"), uid, "the same Service after SIGKILL");
    assert_eq!(svc("echo-clusterip", ".spec.clusterIP"), cluster_ip, "the same ClusterIP");
    let left = processes_alive(&pod_pids);
    assert!(left.is_empty(), "the old pod processes are gone: {left:?}");
    cluster.kubectl(&["rollout", "status", "deployment/echo", "--timeout=60s"]);
    cluster.answers_from_every_replica(&format!("http://{cluster_ip}/"), 2);
    let pod_pids = pids_in_namespaces(&pod_namespaces(&data_dir));
    let inner_pids = pids_in_namespaces(std::slice::from_ref(&netns));
    up.stop();

    // Nothing is left: processes, namespaces, routes, addresses, rules.
    let left = processes_alive(&pod_pids);
    assert!(left.is_empty(), "pod processes stopped: {left:?}");
    let left = processes_alive(&inner_pids);
    assert!(left.is_empty(), "the cluster's processes stopped: {left:?}");
    assert!(!Path::new("/run/netns").join(&netns).exists(), "the namespace is removed");
    // Other tests may run beside this one, so only lines that could be ours are compared.
    let after = host_snapshot();
    let ours = |line: &&str| {
        ["10.96.", "10.244.", "10.240.", "10.241.", "svcnet0", "svcnet-up", "svcnet-svcnet-up"]
            .iter()
            .any(|pattern| line.contains(pattern))
    };
    for (what, before, after) in [
        ("network namespaces", &before.0, &after.0),
        ("routes", &before.1, &after.1),
        ("addresses", &before.2, &after.2),
        ("nftables ruleset", &before.3, &after.3),
    ] {
        let new: Vec<&str> =
            after.lines().filter(ours).filter(|line| !before.lines().any(|b| b == *line)).collect();
        assert!(new.is_empty(), "the host's {what} keep nothing of svcnet up: {new:?}");
    }
}

#[test]
fn root_mode_iptables_serves_a_cluster_ip() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: root mode needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::new(dir.path());
    let data_dir = cluster.data_dir.clone();
    let _leftovers = Leftovers(data_dir.clone());
    let up = Up::start_with(&data_dir, &format!("127.0.0.1:{}", free_port()), "iptables");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("up-root.json")).unwrap()).unwrap();
    let netns = state["netns"].as_str().unwrap().to_string();
    cluster.kubectl(&[
        "apply",
        "-f",
        common::examples().join("echo-deployment.yaml").to_str().unwrap(),
    ]);
    cluster.kubectl(&[
        "apply",
        "-f",
        common::examples().join("service-clusterip.yaml").to_str().unwrap(),
    ]);
    cluster.kubectl(&["rollout", "status", "deployment/echo", "--timeout=60s"]);
    let cluster_ip =
        cluster.kubectl(&["get", "svc", "echo-clusterip", "-o", "jsonpath={.spec.clusterIP}"]);
    cluster.answers_from_every_replica(&format!("http://{cluster_ip}/"), 3);
    let pods = pod_namespaces(&data_dir);
    up.stop();
    let existing =
        String::from_utf8(Command::new("ip").args(["netns", "list"]).output().unwrap().stdout)
            .unwrap();
    for ns in pods.iter().chain(std::iter::once(&netns)) {
        assert!(!existing.lines().any(|l| l.split_whitespace().next() == Some(ns)), "{ns} removed");
    }
}
