//! Helpers shared by the `svcnet up` tests (loopback and root mode).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `kubectl` (as `command` starts it) against `kubeconfig`, with a private `cache` dir.
pub fn kubectl_command(mut command: Command, kubeconfig: &Path, cache: &Path) -> Command {
    command.arg("--kubeconfig").arg(kubeconfig).arg("--cache-dir").arg(cache);
    command
}

/// Runs `command args` and returns its stdout; a failure panics with kubectl's stderr.
pub fn kubectl_output(mut command: Command, args: &[&str]) -> String {
    let out = command.args(args).output().expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Spawns `svcnet up` as `command` describes it and returns once it printed "svcnet is up"
/// (its readiness signal). Its stdout keeps being drained, so it never blocks on the pipe.
pub fn spawn_up(command: &mut Command) -> Child {
    let mut child = command
        .env("SVCNET_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn svcnet up");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("svcnet is up") => break,
            Some(Ok(_)) => continue,
            _ => {
                let status = child.wait();
                panic!("svcnet up exited before it was up: {status:?}");
            }
        }
    }
    std::thread::spawn(move || for _ in lines {});
    child
}

/// Two echo pods whose readiness probe fails while `MARKS/<pod name>` exists.
pub fn flaky_manifest(marks: &Path) -> String {
    let probe = format!("test ! -e {}/$POD_NAME", marks.display());
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "flaky"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "flaky"}},
            "template": {"metadata": {"labels": {"app": "flaky"}}, "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "echo", "image": "ghcr.io/svcnet/svcnet:latest",
                    "command": ["svcnet", "echo", "--listen", "$(POD_IP):8080"],
                    "env": [
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"exec": {"command": ["sh", "-c", probe]},
                                       "periodSeconds": 1, "failureThreshold": 1}}]}}}
    });
    let service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "flaky"},
        "spec": {"selector": {"app": "flaky"}, "ports": [{"port": 80, "targetPort": "http"}]}
    });
    format!("{deployment}\n{service}\n")
}

/// Waits until 6 × (number of pods) GETs through `ip` (with `curl`, which returns the answering
/// pod's name) come only from `pods`, and from each of them.
pub fn answered_only_by(curl: impl Fn(&str) -> Option<String>, ip: &str, pods: &[&str]) {
    let want: BTreeSet<String> = pods.iter().map(|p| p.to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen: BTreeSet<String> = (0..pods.len() * 6)
            .map(|_| curl(&format!("http://{ip}/")).unwrap_or_default())
            .collect();
        if seen == want {
            return;
        }
        assert!(Instant::now() < deadline, "answers only from {want:?}; saw {seen:?}");
        std::thread::sleep(POLL);
    }
}

/// How often the tests poll a condition.
pub const POLL: Duration = Duration::from_millis(100);

/// The repository's `examples/`.
pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// The pod name in an echo server's HTTP answer.
pub fn answering_pod(body: &[u8]) -> Option<String> {
    let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    answer["pod"].as_str().map(str::to_string)
}

/// Waits until the answers through `url` (by `curl`, which returns the answering pod) come from
/// exactly the `replicas` echo pods `echo_pods` lists (all of them, none other).
pub fn answers_from_every_replica(
    curl: impl Fn(&str) -> Option<String>,
    echo_pods: impl Fn() -> BTreeSet<String>,
    url: &str,
    replicas: usize,
) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pods = echo_pods();
        let mut seen = BTreeSet::new();
        if pods.len() == replicas {
            for _ in 0..(replicas * 8) {
                if let Some(pod) = curl(url) {
                    seen.insert(pod);
                }
                if seen == pods {
                    return seen;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "answers through {url} from all {replicas} replicas {pods:?}; saw {seen:?}"
        );
        std::thread::sleep(POLL);
    }
}

/// Polls `get` until it returns a non-empty value (e.g. a LoadBalancer address), for 20 s.
pub fn wait_non_empty(what: &str, get: impl Fn() -> String) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value = get();
        if !value.is_empty() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(POLL);
    }
}
