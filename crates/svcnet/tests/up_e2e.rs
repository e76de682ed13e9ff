//! `svcnet up` as a newcomer runs it: the real binary, the real kubectl, the examples, curl to
//! a ClusterIP; then a stop and a second `up` on the same data dir that resumes the cluster.
//! Addresses are all in 127.0.0.0/8 (the default loopback mode).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Poll interval while waiting for a condition (with a deadline).
const POLL: Duration = Duration::from_millis(100);

struct Up {
    child: Child,
}

impl Up {
    /// Starts `svcnet up` and waits for its "svcnet is up" line (its readiness signal).
    fn start(data_dir: &Path, listen: &str) -> Up {
        let mut child = Command::new(env!("CARGO_BIN_EXE_svcnet"))
            .args(["up", "--data-dir", data_dir.to_str().unwrap(), "--listen", listen])
            .env("SVCNET_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn svcnet up");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut up = Up { child };
        loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("svcnet is up") => break,
                Some(Ok(_)) => continue,
                _ => {
                    let status = up.child.wait();
                    panic!("svcnet up exited before it was up: {status:?}");
                }
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
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

fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn curl(url: &str) -> Option<serde_json::Value> {
    let out = Command::new("curl")
        .args(["-s", "--connect-timeout", "1", "-m", "2", url])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn up_serves_the_examples_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("kube-cache");
    let data_dir = dir.path().join("cluster");
    let listen = format!("127.0.0.1:{}", free_port());
    let kubeconfig = data_dir.join("kubeconfig");

    let up = Up::start(&data_dir, &listen);
    kubectl(&kubeconfig, &cache, &["apply", "-f", examples().to_str().unwrap()]);
    kubectl(&kubeconfig, &cache, &["rollout", "status", "deployment/echo", "--timeout=60s"]);
    let cluster_ip = kubectl(
        &kubeconfig,
        &cache,
        &["get", "svc", "echo-clusterip", "-o", "jsonpath={.spec.clusterIP}"],
    );
    assert!(cluster_ip.starts_with("127.96."), "ClusterIP from the loopback range: {cluster_ip}");

    // Every replica answers through the ClusterIP (the proxy follows the EndpointSlices).
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "answers from all 3 replicas through the ClusterIP; saw {seen:?}"
        );
        match curl(&format!("http://{cluster_ip}/")) {
            Some(answer) => {
                seen.insert(answer["pod"].as_str().unwrap_or_default().to_string());
            }
            None => std::thread::sleep(POLL),
        }
    }
    up.stop();

    // A second `up` on the same directory resumes the same cluster.
    let up = Up::start(&data_dir, &listen);
    let again = kubectl(
        &kubeconfig,
        &cache,
        &["get", "svc", "echo-clusterip", "-o", "jsonpath={.spec.clusterIP}"],
    );
    assert_eq!(again, cluster_ip, "the Service and its address survive a restart");
    kubectl(&kubeconfig, &cache, &["rollout", "status", "deployment/echo", "--timeout=60s"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(&format!("http://{cluster_ip}/")).is_none() {
        assert!(Instant::now() < deadline, "the ClusterIP answers again after a restart");
        std::thread::sleep(POLL);
    }
    up.stop();
}
