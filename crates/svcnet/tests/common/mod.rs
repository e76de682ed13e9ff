//! Helpers shared by the `svcnet up` tests (loopback and root mode).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

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
        std::thread::sleep(Duration::from_millis(100));
    }
}
