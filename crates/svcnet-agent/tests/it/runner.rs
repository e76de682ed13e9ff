//! The runner core with real processes: restarts, probes, termination, logs, bad specs.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use svcnet_agent::pods::runner::{
    self, PodHandle, PodRuntime, PodSandbox, RunnerConfig, RuntimeEvent,
};
use svcnet_agent::pods::{logs, orphans, status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

struct Fixture {
    dir: tempfile::TempDir,
    handle: PodHandle,
    events: mpsc::UnboundedReceiver<RuntimeEvent>,
}

impl Fixture {
    fn start(pod: serde_json::Value, pod_ip: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let pod: Pod = serde_json::from_value(pod).unwrap();
        let config = Arc::new(RunnerConfig {
            data_dir: dir.path().to_path_buf(),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
            path: std::env::var("PATH").unwrap(),
        });
        let sandbox = PodSandbox {
            pod_ip: pod_ip.parse().unwrap(),
            host_ip: "127.0.0.1".parse().unwrap(),
            netns: None,
            check_ports: true,
        };
        let (tx, events) = mpsc::unbounded_channel();
        let handle = runner::start_pod(&pod, sandbox, config, tx);
        Fixture { dir, handle, events }
    }

    /// Waits (up to 20 s) until the runtime satisfies `condition`.
    async fn wait_for(
        &mut self,
        what: &str,
        condition: impl Fn(&PodRuntime) -> bool,
    ) -> PodRuntime {
        let mut status = self.handle.status.clone();
        let result =
            tokio::time::timeout(Duration::from_secs(20), status.wait_for(|r| condition(r))).await;
        match result {
            Ok(Ok(runtime)) => runtime.clone(),
            _ => panic!("timed out waiting for {what}: {:#?}", *self.handle.status.borrow()),
        }
    }

    async fn wait_for_event(&mut self, reason: &str) -> RuntimeEvent {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) if event.reason == reason => return event,
                Ok(Some(_)) => {}
                _ => panic!("no {reason} event"),
            }
        }
    }

    async fn stop(mut self, grace: Duration) -> PodRuntime {
        self.handle.terminate(grace);
        tokio::time::timeout(Duration::from_secs(20), self.handle.wait()).await.expect("pod stops");
        let runtime = self.handle.status.borrow().clone();
        assert!(runtime.terminated);
        runtime
    }

    fn log(&self, container: &str) -> String {
        std::fs::read_to_string(runner::log_path(self.dir.path(), "default", "p1", container))
            .unwrap_or_default()
    }
}

fn pod(containers: serde_json::Value, restart_policy: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"name": "p1", "namespace": "default", "uid": "0f3a9c2e-aaaa-bbbb"},
        "spec": {"restartPolicy": restart_policy, "terminationGracePeriodSeconds": 1, "containers": containers}
    })
}

fn shell(script: &str) -> serde_json::Value {
    serde_json::json!([{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}])
}

#[tokio::test]
async fn restarts_a_crashing_container_with_logs_and_env() {
    let mut fixture = Fixture::start(
        pod(shell("echo hello $POD_NAME $POD_IP; exit 3"), "OnFailure"),
        "127.77.0.2",
    );
    let runtime = fixture.wait_for("two restarts", |r| r.containers[0].restart_count >= 2).await;
    let last = runtime.containers[0].last_state.clone().unwrap().terminated.unwrap();
    assert_eq!(last.exit_code, 3);
    assert_eq!(status::phase(&runtime), "Running");
    fixture.wait_for_event("BackOff").await;
    assert!(
        fixture.log("main").contains("stdout F hello p1 127.77.0.2\n"),
        "log: {}",
        fixture.log("main")
    );
    fixture.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_completed_pod_succeeds_and_never_fails() {
    let mut fixture = Fixture::start(pod(shell("exit 0"), "OnFailure"), "127.77.0.3");
    let runtime = fixture.wait_for("completion", |r| r.containers[0].done).await;
    assert_eq!(status::phase(&runtime), "Succeeded");
    let mut fixture = Fixture::start(pod(shell("exit 1"), "Never"), "127.77.0.3");
    let runtime = fixture.wait_for("failure", |r| r.containers[0].done).await;
    assert_eq!(status::phase(&runtime), "Failed");
    assert_eq!(runtime.containers[0].restart_count, 0);
}

#[tokio::test]
async fn bad_specs_say_why() {
    let no_command = serde_json::json!([{"name": "web", "image": "nginx"}]);
    let mut fixture = Fixture::start(pod(no_command, "Always"), "127.77.0.4");
    let event = fixture.wait_for_event("NoCommand").await;
    assert!(event.warning && event.message.contains("no command"), "{event:?}");
    let runtime = fixture.wait_for("failed", |r| r.containers[0].done).await;
    let status = status::pod_status(
        &runtime,
        None,
        &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff_now()),
    );
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert_eq!(status.reason.as_deref(), Some("NoCommand"));

    let missing = serde_json::json!([{"name": "x", "image": "x", "command": ["/no/such/binary"]}]);
    let mut fixture = Fixture::start(pod(missing, "Never"), "127.77.0.4");
    let event = fixture.wait_for_event("Failed").await;
    assert!(event.message.contains("executable file not found"), "{event:?}");
    let runtime = fixture.wait_for("done", |r| r.containers[0].done).await;
    let terminated = runtime.containers[0].state.terminated.clone().unwrap();
    assert_eq!(terminated.reason.as_deref(), Some("StartError"));

    let _taken = std::net::TcpListener::bind("127.77.0.5:9000").unwrap();
    let clash = serde_json::json!([{"name": "x", "image": "x", "command": ["sleep", "5"],
        "ports": [{"containerPort": 9000}]}]);
    let mut fixture = Fixture::start(pod(clash, "Always"), "127.77.0.5");
    let event = fixture.wait_for_event("PortConflict").await;
    assert!(event.message.contains("9000"), "{event:?}");
    fixture.stop(Duration::ZERO).await;
}

fn jiff_now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

#[tokio::test]
async fn readiness_follows_the_probe() {
    let containers = serde_json::json!([{"name": "main", "image": "x", "command": ["sleep", "30"],
        "readinessProbe": {"tcpSocket": {"port": 9100}, "periodSeconds": 1, "failureThreshold": 1}}]);
    let mut fixture = Fixture::start(pod(containers, "Always"), "127.77.0.6");
    let runtime = fixture.wait_for("running", |r| r.containers[0].started).await;
    assert!(!runtime.containers[0].ready);
    let listener = tokio::net::TcpListener::bind("127.77.0.6:9100").await.unwrap();
    fixture.wait_for("ready", |r| r.containers[0].ready).await;
    drop(listener);
    fixture.wait_for("unready", |r| !r.containers[0].ready).await;
    fixture.wait_for_event("Unhealthy").await;
    fixture.stop(Duration::ZERO).await;
}

#[tokio::test]
async fn liveness_failure_and_outside_kill_restart() {
    let containers = serde_json::json!([{"name": "main", "image": "x", "command": ["sleep", "30"],
        "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1}}]);
    let mut fixture = Fixture::start(pod(containers, "Always"), "127.77.0.7");
    fixture.wait_for_event("Killing").await;
    fixture.wait_for("restart", |r| r.containers[0].restart_count >= 1).await;
    fixture.stop(Duration::ZERO).await;

    let mut fixture = Fixture::start(pod(shell("sleep 30"), "Always"), "127.77.0.7");
    fixture.wait_for("running", |r| r.containers[0].state.running.is_some()).await;
    let pid_file = runner::pid_path(fixture.dir.path(), "0f3a9c2e-aaaa-bbbb", "main");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let runtime =
        fixture.wait_for("restart after kill", |r| r.containers[0].restart_count >= 1).await;
    let _ = runtime;
    let runtime =
        fixture.wait_for("running again", |r| r.containers[0].state.running.is_some()).await;
    assert!(
        runtime.containers[0].last_state.as_ref().unwrap().terminated.as_ref().unwrap().signal
            == Some(9)
    );
    fixture.stop(Duration::ZERO).await;
}

#[tokio::test]
async fn termination_is_graceful_then_forced() {
    let mut fixture = Fixture::start(
        pod(
            shell("trap 'echo got TERM; exit 0' TERM; echo up; while true; do sleep 0.05; done"),
            "Always",
        ),
        "127.77.0.8",
    );
    fixture.wait_for("running", |r| r.containers[0].state.running.is_some()).await;
    while !fixture.log("main").contains("up") {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let runtime = fixture.stop(Duration::from_secs(10)).await;
    let terminated = runtime.containers[0].state.terminated.clone().unwrap();
    assert_eq!(terminated.exit_code, 0);

    let mut fixture = Fixture::start(
        pod(shell("trap '' TERM; echo up; while true; do sleep 0.05; done"), "Always"),
        "127.77.0.8",
    );
    fixture.wait_for("running", |r| r.containers[0].state.running.is_some()).await;
    while !fixture.log("main").contains("up") {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let runtime = fixture.stop(Duration::from_millis(200)).await;
    let terminated = runtime.containers[0].state.terminated.clone().unwrap();
    assert_eq!(terminated.signal, Some(9));
}

#[tokio::test]
async fn logs_are_served_over_http_and_orphans_are_killed() {
    let mut fixture = Fixture::start(
        pod(shell("echo one; echo two; echo three; sleep 30"), "Always"),
        "127.77.0.9",
    );
    while !fixture.log("main").contains("three") {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let server =
        logs::LogServer::bind("127.0.0.1:0".parse().unwrap(), fixture.dir.path().to_path_buf())
            .await
            .unwrap();
    let addr = server.local_addr().unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(server.serve(cancel.clone()));
    let body = http_get(addr, "/containerLogs/default/p1/main?tailLines=2").await;
    assert!(body.ends_with("\r\n\r\ntwo\nthree\n"), "{body}");
    let body = http_get(addr, "/containerLogs/default/p1/nope").await;
    assert!(body.starts_with("HTTP/1.1 404"), "{body}");

    // A process recorded by an "earlier run" is killed by cleanup.
    fixture.wait_for("running", |r| r.containers[0].state.running.is_some()).await;
    let pid_file = runner::pid_path(fixture.dir.path(), "0f3a9c2e-aaaa-bbbb", "main");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (killed, _) = orphans::cleanup(fixture.dir.path()).await;
    assert_eq!(killed, 1);
    fixture.wait_for("restart after cleanup", |r| r.containers[0].restart_count >= 1).await;
    assert!(
        orphans::process_start_time(pid).is_none()
            || !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z"))
                    .unwrap_or(true)
            }
    );
    cancel.cancel();
    fixture.stop(Duration::ZERO).await;
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}
