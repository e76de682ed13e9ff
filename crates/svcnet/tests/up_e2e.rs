//! `svcnet up` as a newcomer without root runs it: the real binary, the real kubectl, the
//! examples, curl to a ClusterIP; scale, a deleted pod, logs; then a stop and a second `up` on
//! the same data dir that resumes the cluster. Addresses are all in 127.0.0.0/8 (the default
//! loopback mode).
//!
//! Honest about privileges: `svcnet up`, kubectl and curl all run as `nobody` (setpriv, no
//! capabilities, data dir owned by nobody). So that port 80 of a Service can be bound without a
//! capability, the test makes its own network namespace (only `lo`) and sets
//! `net.ipv4.ip_unprivileged_port_start=0` inside that namespace only — the setting README tells
//! an unprivileged user to use. The test itself needs root for that set-up (CI runs as root).
#![allow(clippy::unwrap_used)]

mod common;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The test's network namespace (only `lo`); removed on drop with everything in it.
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Netns {
        let name = format!("svcnet-t-up-{}", std::process::id());
        let ns = Netns { name };
        for args in [
            vec!["netns", "add", &ns.name],
            vec!["-n", &ns.name, "link", "set", "lo", "up"],
            vec![
                "netns",
                "exec",
                &ns.name,
                "sysctl",
                "-qw",
                "net.ipv4.ip_unprivileged_port_start=0",
            ],
        ] {
            let status = Command::new("ip").args(&args).status().unwrap();
            assert!(status.success(), "ip {args:?}");
        }
        ns
    }

    /// `PROGRAM ARGS` inside the namespace as nobody:nogroup, with no supplementary groups
    /// and no capabilities.
    fn unprivileged(&self, home: &Path, program: &str) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name, "setpriv", "--reuid=nobody", "--regid=nogroup"])
            .args(["--clear-groups", "--inh-caps=-all", "--", program])
            .env("HOME", home);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

struct Up {
    child: Child,
}

impl Up {
    /// Starts `svcnet up` and waits for its "svcnet is up" line (its readiness signal).
    fn start(env: &Env, listen: &str) -> Up {
        let up = Up {
            child: common::spawn_up(
                env.ns.unprivileged(&env.home, env!("CARGO_BIN_EXE_svcnet")).args([
                    "up",
                    "--data-dir",
                    env.data_dir.to_str().unwrap(),
                    "--listen",
                    listen,
                ]),
            ),
        };
        // `ip netns exec` and setpriv exec in place: the child is svcnet itself, as nobody.
        let status = std::fs::read_to_string(format!("/proc/{}/status", up.child.id())).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap().to_string();
        assert!(uid.split_whitespace().skip(1).all(|id| id == "65534"), "runs as nobody: {uid}");
        let caps = status.lines().find(|l| l.starts_with("CapEff:")).unwrap().to_string();
        assert!(caps.ends_with("0000000000000000"), "no capabilities: {caps}");
        up
    }

    /// Stops it like Ctrl-C would and waits for a clean exit.
    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "svcnet up exits cleanly on SIGTERM: {status:?}");
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Env {
    ns: Netns,
    home: PathBuf,
    data_dir: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Env {
    /// kubectl as nobody inside the test's namespace.
    fn kubectl_command(&self) -> Command {
        common::kubectl_command(
            self.ns.unprivileged(&self.home, "kubectl"),
            &self.kubeconfig,
            &self.cache,
        )
    }

    fn kubectl(&self, args: &[&str]) -> String {
        common::kubectl_output(self.kubectl_command(), args)
    }

    fn kubectl_stdin(&self, args: &[&str], stdin: &str) {
        use std::io::Write;
        let mut child = self
            .kubectl_command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("kubectl");
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "kubectl {args:?}");
    }

    fn pods(&self, selector: &str) -> Vec<String> {
        let out = self.kubectl(&[
            "get",
            "pods",
            "-l",
            selector,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}{\" \"}{end}",
        ]);
        out.split_whitespace().map(str::to_string).collect()
    }

    /// The pod name answering an HTTP GET (curl as nobody in the namespace).
    fn curl(&self, url: &str) -> Option<String> {
        let out = self
            .ns
            .unprivileged(&self.home, "curl")
            .args(["-s", "--connect-timeout", "1", "-m", "2", url])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        common::answering_pod(&out.stdout)
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
            "jsonpath={range .items[*]}{.metadata.name}{\" \"}{end}",
        ]);
        out.split_whitespace().map(str::to_string).collect()
    }

    /// Waits until the answers through `url` come from exactly the `replicas` running echo
    /// pods (all of them, none other).
    fn answers_from_every_replica(&self, url: &str, replicas: usize) -> BTreeSet<String> {
        common::answers_from_every_replica(|u| self.curl(u), || self.echo_pods(), url, replicas)
    }
}

#[test]
fn up_as_nobody_serves_the_examples_and_resumes() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the set-up (a network namespace, setpriv) needs root; CI runs as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nobody = Some(nix::unistd::Uid::from_raw(65534));
    let nogroup = Some(nix::unistd::Gid::from_raw(65534));
    nix::unistd::chown(dir.path(), nobody, nogroup).unwrap();
    let data_dir = dir.path().join("cluster");
    let env = Env {
        ns: Netns::create(),
        home: dir.path().to_path_buf(),
        kubeconfig: data_dir.join("kubeconfig"),
        cache: dir.path().join("kube-cache"),
        data_dir,
    };
    // Inside the test's namespace no other process uses the port.
    let listen = "127.0.0.1:6443";

    let up = Up::start(&env, listen);
    env.kubectl(&["apply", "-f", common::examples().to_str().unwrap()]);
    env.kubectl(&["rollout", "status", "deployment/echo", "--timeout=60s"]);
    let svc = |name: &str, path: &str| {
        env.kubectl(&["get", "svc", name, "-o", &format!("jsonpath={{{path}}}")])
    };
    let cluster_ip = svc("echo-clusterip", ".spec.clusterIP");
    assert!(cluster_ip.starts_with("127.96."), "ClusterIP from the loopback range: {cluster_ip}");

    // Every replica answers through the ClusterIP, the NodePort and the LoadBalancer address.
    env.answers_from_every_replica(&format!("http://{cluster_ip}/"), 3);
    env.answers_from_every_replica("http://127.0.0.1:30080/", 3);
    let lb_ip = common::wait_non_empty("the external LoadBalancer gets an address", || {
        svc("echo-lb-external", ".status.loadBalancer.ingress[0].ip")
    });
    env.answers_from_every_replica(&format!("http://{lb_ip}/"), 3);

    // Scale up and down changes who answers; a deleted pod is replaced.
    env.kubectl(&["scale", "deployment/echo", "--replicas=5"]);
    env.kubectl(&["rollout", "status", "deployment/echo", "--timeout=60s"]);
    env.answers_from_every_replica(&format!("http://{cluster_ip}/"), 5);
    env.kubectl(&["scale", "deployment/echo", "--replicas=1"]);
    let one = env.answers_from_every_replica(&format!("http://{cluster_ip}/"), 1);
    let victim = one.iter().next().unwrap().clone();
    env.kubectl(&["delete", "pod", &victim, "--wait=true"]);
    env.kubectl(&["rollout", "status", "deployment/echo", "--timeout=60s"]);
    let replacement = env.answers_from_every_replica(&format!("http://{cluster_ip}/"), 1);
    assert!(!replacement.contains(&victim), "a replacement answers: {replacement:?}");
    let logs = env.kubectl(&["logs", replacement.iter().next().unwrap()]);
    assert!(!logs.trim().is_empty(), "kubectl logs shows the echo server's log");

    // A pod whose readiness probe fails stops receiving traffic, and gets it back when it
    // passes again. The probe fails while a file named after the pod exists.
    let marks = env.home.join("marks");
    std::fs::create_dir(&marks).unwrap();
    env.kubectl_stdin(&["apply", "-f", "-"], &common::flaky_manifest(&marks));
    env.kubectl(&["rollout", "status", "deployment/flaky", "--timeout=60s"]);
    let flaky_ip = svc("flaky", ".spec.clusterIP");
    let pods = env.pods("app=flaky");
    assert_eq!(pods.len(), 2, "{pods:?}");
    let (sick, healthy) = (pods[0].clone(), pods[1].clone());
    common::answered_only_by(|url| env.curl(url), &flaky_ip, &[&sick, &healthy]);
    std::fs::write(marks.join(&sick), b"").unwrap();
    common::answered_only_by(|url| env.curl(url), &flaky_ip, &[&healthy]);
    std::fs::remove_file(marks.join(&sick)).unwrap();
    common::answered_only_by(|url| env.curl(url), &flaky_ip, &[&sick, &healthy]);
    up.stop();

    // A second `up` on the same directory resumes the same cluster.
    let up = Up::start(&env, listen);
    assert_eq!(svc("echo-clusterip", ".spec.clusterIP"), cluster_ip, "the same Service address");
    env.kubectl(&["rollout", "status", "deployment/echo", "--timeout=60s"]);
    env.answers_from_every_replica(&format!("http://{cluster_ip}/"), 1);
    up.stop();
}
