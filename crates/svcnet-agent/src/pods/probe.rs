//! Readiness and liveness probes: the pure result state machine and the three probe actions.
//!
//! [`ProbeTracker`] turns single outcomes into a result with the kubelet's rules
//! (`successThreshold` consecutive successes to pass, `failureThreshold` consecutive failures to
//! fail); [`run`] performs one `httpGet`, `tcpSocket` or `exec` probe with a timeout.
//! Startup probes, gRPC probes and HTTPS are left out (HTTPS probes fail with a clear message).

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The timing fields of a probe, with Kubernetes defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeTiming {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeAction {
    Http {
        host: Option<String>,
        port: u16,
        path: String,
        https: bool,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: Option<String>,
        port: u16,
    },
    Exec {
        command: Vec<String>,
    },
}

/// A probe ready to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    pub action: ProbeAction,
    pub timing: ProbeTiming,
}

fn secs(value: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(
        value.and_then(|v| u64::try_from(v).ok()).filter(|v| *v > 0).unwrap_or(default),
    )
}

fn threshold(value: Option<i32>, default: u32) -> u32 {
    value.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0).unwrap_or(default)
}

/// Resolves a port that may name one of the container's ports.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(number) => u16::try_from(*number).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .or_else(|| name.parse().ok()),
    }
}

/// Converts a Kubernetes probe; `Err` names what is unsupported.
pub fn probe_spec(probe: &Probe, container: &Container) -> Result<ProbeSpec, String> {
    let timing = ProbeTiming {
        initial_delay: Duration::from_secs(
            probe.initial_delay_seconds.and_then(|v| u64::try_from(v).ok()).unwrap_or(0),
        ),
        period: secs(probe.period_seconds, 10),
        timeout: secs(probe.timeout_seconds, 1),
        success_threshold: threshold(probe.success_threshold, 1),
        failure_threshold: threshold(probe.failure_threshold, 3),
    };
    let action = if let Some(http) = &probe.http_get {
        let port = resolve_port(&http.port, container)
            .ok_or_else(|| format!("unknown probe port {:?}", http.port))?;
        ProbeAction::Http {
            host: http.host.clone().filter(|h| !h.is_empty()),
            port,
            path: http.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".to_string()),
            https: http.scheme.as_deref() == Some("HTTPS"),
            headers: http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        }
    } else if let Some(tcp) = &probe.tcp_socket {
        let port = resolve_port(&tcp.port, container)
            .ok_or_else(|| format!("unknown probe port {:?}", tcp.port))?;
        ProbeAction::Tcp { host: tcp.host.clone().filter(|h| !h.is_empty()), port }
    } else if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        if command.is_empty() {
            return Err("exec probe without command".to_string());
        }
        ProbeAction::Exec { command }
    } else {
        return Err("probe has no httpGet, tcpSocket or exec".to_string());
    };
    Ok(ProbeSpec { action, timing })
}

/// The result of a probe over time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeTracker {
    success_threshold: u32,
    failure_threshold: u32,
    consecutive_success: u32,
    consecutive_failure: u32,
    passing: bool,
}

impl ProbeTracker {
    /// `initially_passing` is false for readiness (not ready until proven) and true for liveness.
    pub fn new(timing: &ProbeTiming, initially_passing: bool) -> Self {
        ProbeTracker {
            success_threshold: timing.success_threshold.max(1),
            failure_threshold: timing.failure_threshold.max(1),
            consecutive_success: 0,
            consecutive_failure: 0,
            passing: initially_passing,
        }
    }

    pub fn passing(&self) -> bool {
        self.passing
    }

    /// Records one outcome and returns the result when it changed.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.consecutive_failure = 0;
            self.consecutive_success = self.consecutive_success.saturating_add(1);
            if !self.passing && self.consecutive_success >= self.success_threshold {
                self.passing = true;
                return Some(true);
            }
        } else {
            self.consecutive_success = 0;
            self.consecutive_failure = self.consecutive_failure.saturating_add(1);
            if self.passing && self.consecutive_failure >= self.failure_threshold {
                self.passing = false;
                return Some(false);
            }
        }
        None
    }
}

/// Where a probe runs: the pod's address and, for exec probes, the environment.
#[derive(Clone, Debug)]
pub struct ProbeTarget {
    pub pod_ip: IpAddr,
    pub env: Vec<(String, String)>,
    /// The pod's network namespace, if any: every probe connects (or runs) from inside it, so
    /// it works wherever the bridge is.
    pub netns: Option<String>,
}

/// Connects to `host:port`, from inside `netns` when given.
async fn connect(
    host: &str,
    port: u16,
    netns: Option<&str>,
) -> std::io::Result<tokio::net::TcpStream> {
    let Some(netns) = netns else {
        return tokio::net::TcpStream::connect((host, port)).await;
    };
    let addr: std::net::SocketAddr = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
    let path = std::path::Path::new("/run/netns").join(netns);
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A thread of its own enters the namespace and ends afterwards, so no runtime thread ever
    // changes namespace; the socket keeps the namespace it was created in.
    std::thread::spawn(move || {
        let result = std::fs::File::open(&path).and_then(|file| {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            let stream =
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(10))?;
            stream.set_nonblocking(true)?;
            Ok(stream)
        });
        let _ = tx.send(result);
    });
    let stream = rx.await.map_err(|_| std::io::Error::other("probe thread ended"))??;
    tokio::net::TcpStream::from_std(stream)
}

/// Runs one probe; `Err` carries the failure message.
pub async fn run(
    action: &ProbeAction,
    target: &ProbeTarget,
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, run_inner(action, target)).await {
        Ok(result) => result,
        Err(_) => Err(format!("probe timed out after {timeout:?}")),
    }
}

async fn run_inner(action: &ProbeAction, target: &ProbeTarget) -> Result<(), String> {
    match action {
        ProbeAction::Tcp { host, port } => {
            let host = host.clone().unwrap_or_else(|| target.pod_ip.to_string());
            connect(&host, *port, target.netns.as_deref())
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"))
        }
        ProbeAction::Http { host, port, path, https, headers } => {
            if *https {
                return Err("HTTPS probes are not supported by svcnet".to_string());
            }
            let host = host.clone().unwrap_or_else(|| target.pod_ip.to_string());
            let mut stream = connect(&host, *port, target.netns.as_deref())
                .await
                .map_err(|e| format!("Get \"http://{host}:{port}{path}\": {e}"))?;
            let mut request = format!(
                "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\n"
            );
            for (name, value) in headers {
                request.push_str(&format!("{name}: {value}\r\n"));
            }
            request.push_str("\r\n");
            stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
                let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let status_line = String::from_utf8_lossy(&head);
            let code: u16 = status_line
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| "malformed HTTP response".to_string())?;
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            }
        }
        ProbeAction::Exec { command } => {
            let mut argv: Vec<String> = Vec::new();
            if let Some(netns) = &target.netns {
                argv.extend([
                    "ip".to_string(),
                    "netns".to_string(),
                    "exec".to_string(),
                    netns.clone(),
                ]);
            }
            argv.extend(command.iter().cloned());
            let mut cmd = tokio::process::Command::new(&argv[0]);
            cmd.args(&argv[1..])
                .env_clear()
                .envs(target.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true);
            let status = cmd.status().await.map_err(|e| format!("exec {:?}: {e}", command[0]))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("command {command:?} exited with {status}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(success: u32, failure: u32) -> ProbeTiming {
        ProbeTiming {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    /// Feeds outcomes and returns the result after each.
    fn check(success: u32, failure: u32, initially: bool, outcomes: &[bool], expected: &[bool]) {
        let mut tracker = ProbeTracker::new(&timing(success, failure), initially);
        let seen: Vec<bool> = outcomes
            .iter()
            .map(|ok| {
                tracker.observe(*ok);
                tracker.passing()
            })
            .collect();
        assert_eq!(seen, expected, "outcomes {outcomes:?}");
    }

    #[test]
    fn readiness_needs_success_threshold() {
        check(1, 3, false, &[true], &[true]);
        check(2, 3, false, &[true, false, true, true], &[false, false, false, true]);
    }

    #[test]
    fn failure_needs_consecutive_failures() {
        check(
            1,
            3,
            true,
            &[false, false, true, false, false, false],
            &[true, true, true, true, true, false],
        );
        check(1, 1, true, &[false, true], &[false, true]);
    }

    #[test]
    fn converts_probe_with_defaults_and_named_port() {
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "ports": [{"name": "http", "containerPort": 8080}]
        }))
        .unwrap();
        let probe: Probe = serde_json::from_value(
            serde_json::json!({"httpGet": {"port": "http", "path": "/healthz"}}),
        )
        .unwrap();
        let spec = probe_spec(&probe, &container).unwrap();
        assert_eq!(
            spec.timing,
            ProbeTiming {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
        assert!(
            matches!(spec.action, ProbeAction::Http { port: 8080, ref path, .. } if path == "/healthz")
        );
        let bad: Probe =
            serde_json::from_value(serde_json::json!({"tcpSocket": {"port": "nope"}})).unwrap();
        assert!(probe_spec(&bad, &container).is_err());
    }
}
