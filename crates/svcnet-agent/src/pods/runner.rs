//! The runner core: runs one pod's containers as process groups and reports what happens.
//!
//! A [`PodHandle`] owns a task per container that starts the process, pumps its output into a
//! CRI-format log file, runs its probes, restarts it per `restartPolicy` with [`Backoff`] and
//! stops it on request (SIGTERM, the grace period, SIGKILL). State is published as a
//! [`PodRuntime`] snapshot on a watch channel and notable moments as [`RuntimeEvent`]s;
//! the runner never talks to the API server, so it is tested with real processes alone.
//! Init containers, ephemeral containers, startup probes and resource limits are left out.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::backoff::Backoff;
use super::probe::{self, ProbeSpec, ProbeTarget, ProbeTracker};
use super::spec::{self, PodAddresses, ProcessSpec};

/// Settings shared by every pod of one agent.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Logs go to `<data_dir>/logs/<ns>/<pod>/<container>.log`, PIDs to `<data_dir>/run/`.
    pub data_dir: PathBuf,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The `PATH` every process gets.
    pub path: String,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            data_dir: PathBuf::from("/var/lib/svcnet/agent"),
            backoff_base: super::backoff::DEFAULT_BASE,
            backoff_max: super::backoff::DEFAULT_MAX,
            path: default_path(),
        }
    }
}

/// The directory of the running binary followed by the agent's own `PATH`, so `svcnet` in a
/// pod command is the same binary.
pub fn default_path() -> String {
    let inherited =
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_string());
    match std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        Some(dir) => format!("{}:{inherited}", dir.display()),
        None => inherited,
    }
}

/// Where a pod's processes run.
#[derive(Clone, Debug)]
pub struct PodSandbox {
    pub pod_ip: IpAddr,
    pub host_ip: IpAddr,
    /// The pod's network namespace; `None` runs in the agent's namespace.
    pub netns: Option<String>,
    /// Check declared container ports before starting (shared-namespace mode).
    pub check_ports: bool,
}

/// The state of one container, in Kubernetes' own types.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerRuntime {
    pub name: String,
    pub image: String,
    pub state: ContainerState,
    pub last_state: Option<ContainerState>,
    pub ready: bool,
    pub started: bool,
    pub restart_count: i32,
    /// The container will not run again.
    pub done: bool,
    /// The container cannot run at all (for example no command); the pod fails.
    pub unrunnable: bool,
    pub last_exit_code: Option<i32>,
}

/// The state of one pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodRuntime {
    pub pod_ip: IpAddr,
    pub host_ip: IpAddr,
    pub start_time: Time,
    pub containers: Vec<ContainerRuntime>,
    /// Every container process has stopped after a termination request.
    pub terminated: bool,
}

/// Something worth an Event on the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeEvent {
    pub warning: bool,
    pub reason: String,
    pub message: String,
    /// `spec.containers{name}` when about a container.
    pub field_path: Option<String>,
}

/// A running pod.
pub struct PodHandle {
    pub status: watch::Receiver<PodRuntime>,
    terminate: watch::Sender<Option<Duration>>,
    tasks: JoinSet<()>,
}

impl PodHandle {
    /// Asks every container to stop within `grace` (SIGTERM, then SIGKILL).
    pub fn terminate(&self, grace: Duration) {
        self.terminate.send_if_modified(|current| {
            let next = Some(current.map_or(grace, |existing| existing.min(grace)));
            let changed = *current != next;
            *current = next;
            changed
        });
    }

    /// Waits until every container task has finished.
    pub async fn wait(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting { reason: Some(reason.to_string()), message }),
        ..Default::default()
    }
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// The log file of a container.
pub fn log_path(data_dir: &Path, namespace: &str, pod: &str, container: &str) -> PathBuf {
    data_dir.join("logs").join(namespace).join(pod).join(format!("{container}.log"))
}

/// The PID file of a container process (read by orphan cleanup).
pub fn pid_path(data_dir: &Path, pod_uid: &str, container: &str) -> PathBuf {
    data_dir.join("run").join("pids").join(format!("{pod_uid}_{container}.pid"))
}

/// Starts every container of `pod`.
pub fn start_pod(
    pod: &Pod,
    sandbox: PodSandbox,
    config: Arc<RunnerConfig>,
    events: mpsc::UnboundedSender<RuntimeEvent>,
) -> PodHandle {
    let containers: Vec<Container> =
        pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
    let runtime = PodRuntime {
        pod_ip: sandbox.pod_ip,
        host_ip: sandbox.host_ip,
        start_time: now(),
        containers: containers
            .iter()
            .map(|c| ContainerRuntime {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                state: waiting("ContainerCreating", None),
                last_state: None,
                ready: false,
                started: false,
                restart_count: 0,
                done: false,
                unrunnable: false,
                last_exit_code: None,
            })
            .collect(),
        terminated: false,
    };
    let (status_tx, status_rx) = watch::channel(runtime);
    let status_tx = Arc::new(status_tx);
    let (terminate_tx, terminate_rx) = watch::channel(None);
    let mut tasks = JoinSet::new();
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
    let name = pod.metadata.name.clone().unwrap_or_default();
    prepare_log_dir(&config.data_dir, &namespace, &name, pod.metadata.uid.as_deref().unwrap_or(""));
    let pod = Arc::new(pod.clone());
    for (idx, container) in containers.into_iter().enumerate() {
        let ctx = ContainerCtx {
            idx,
            pod: pod.clone(),
            container,
            sandbox: sandbox.clone(),
            config: config.clone(),
            status: status_tx.clone(),
            events: events.clone(),
            terminate: terminate_rx.clone(),
        };
        tasks.spawn(ctx.run());
    }
    let status_for_done = status_tx.clone();
    let mut waiter = JoinSet::new();
    std::mem::swap(&mut waiter, &mut tasks);
    tasks.spawn(async move {
        while waiter.join_next().await.is_some() {}
        status_for_done.send_modify(|runtime| runtime.terminated = true);
    });
    PodHandle { status: status_rx, terminate: terminate_tx, tasks }
}

/// Removes logs of an earlier pod with the same name (another UID) and marks the directory.
fn prepare_log_dir(data_dir: &Path, namespace: &str, pod: &str, uid: &str) {
    let dir = data_dir.join("logs").join(namespace).join(pod);
    let marker = dir.join(".uid");
    match std::fs::read_to_string(&marker) {
        Ok(existing) if existing == uid => {}
        _ => {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    if let Err(err) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&marker, uid)) {
        tracing::warn!(dir = %dir.display(), error = %err, "cannot prepare the log directory");
    }
}

struct ContainerCtx {
    idx: usize,
    pod: Arc<Pod>,
    container: Container,
    sandbox: PodSandbox,
    config: Arc<RunnerConfig>,
    status: Arc<watch::Sender<PodRuntime>>,
    events: mpsc::UnboundedSender<RuntimeEvent>,
    terminate: watch::Receiver<Option<Duration>>,
}

/// How one run of the process ended.
enum RunEnd {
    Exited(ContainerStateTerminated),
    Terminated(ContainerStateTerminated),
}

impl ContainerCtx {
    fn update(&self, f: impl FnOnce(&mut ContainerRuntime)) {
        let idx = self.idx;
        self.status.send_modify(|runtime| {
            if let Some(container) = runtime.containers.get_mut(idx) {
                f(container);
            }
        });
    }

    fn event(&self, warning: bool, reason: &str, message: String) {
        let _ = self.events.send(RuntimeEvent {
            warning,
            reason: reason.to_string(),
            message,
            field_path: Some(format!("spec.containers{{{}}}", self.container.name)),
        });
    }

    fn termination_requested(&self) -> Option<Duration> {
        *self.terminate.borrow()
    }

    fn restart_policy(&self) -> &str {
        self.pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always")
    }

    async fn run(mut self) {
        let addresses = PodAddresses {
            pod_ip: self.sandbox.pod_ip.to_string(),
            host_ip: self.sandbox.host_ip.to_string(),
            path: self.config.path.clone(),
        };
        let process = match spec::process_spec(&self.pod, &self.container, &addresses) {
            Ok(process) => process,
            Err(err) => {
                self.event(true, err.reason, err.message.clone());
                self.update(|c| {
                    c.state = waiting(err.reason, Some(err.message));
                    c.done = true;
                    c.unrunnable = true;
                });
                return;
            }
        };
        for warning in &process.warnings {
            self.event(true, "UnsupportedEnv", warning.clone());
        }
        let mut backoff = Backoff::new(self.config.backoff_base, self.config.backoff_max);
        loop {
            if self.termination_requested().is_some() {
                break;
            }
            let started = Instant::now();
            let end = self.run_once(&process).await;
            let (terminated, by_request) = match end {
                RunEnd::Exited(terminated) => (terminated, false),
                RunEnd::Terminated(terminated) => (terminated, true),
            };
            let exit_code = terminated.exit_code;
            let terminated_state =
                ContainerState { terminated: Some(terminated), ..Default::default() };
            let restart = !by_request
                && self.termination_requested().is_none()
                && match self.restart_policy() {
                    "Never" => false,
                    "OnFailure" => exit_code != 0,
                    _ => true,
                };
            if !restart {
                self.update(|c| {
                    c.state = terminated_state;
                    c.ready = false;
                    c.done = true;
                    c.last_exit_code = Some(exit_code);
                });
                break;
            }
            backoff.observe_run(started.elapsed());
            let delay = backoff.next_delay();
            let message = format!(
                "back-off {delay:?} restarting failed container={} pod={}",
                self.container.name,
                self.pod.metadata.name.as_deref().unwrap_or("")
            );
            self.event(
                true,
                "BackOff",
                format!("Back-off restarting failed container {}", self.container.name),
            );
            self.update(|c| {
                c.last_state = Some(terminated_state);
                c.state = waiting("CrashLoopBackOff", Some(message));
                c.ready = false;
                c.last_exit_code = Some(exit_code);
            });
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = self.terminate.wait_for(Option::is_some) => break,
            }
            self.update(|c| c.restart_count += 1);
        }
    }

    /// Starts the process once and waits for it to end.
    async fn run_once(&mut self, process: &ProcessSpec) -> RunEnd {
        let started_at = now();
        if self.sandbox.check_ports
            && let Some(message) = port_conflict(self.sandbox.pod_ip, &self.container)
        {
            self.event(true, "PortConflict", message.clone());
            return RunEnd::Exited(ContainerStateTerminated {
                exit_code: 128,
                reason: Some("PortConflict".to_string()),
                message: Some(message),
                started_at: Some(started_at.clone()),
                finished_at: Some(now()),
                ..Default::default()
            });
        }
        let mut command = match &self.sandbox.netns {
            Some(netns) => {
                let mut command = tokio::process::Command::new("ip");
                command.args(["netns", "exec", netns.as_str(), process.program.as_str()]);
                command
            }
            None => tokio::process::Command::new(&process.program),
        };
        command
            .args(&process.args)
            .env_clear()
            .envs(process.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        if let Some(dir) = &process.working_dir {
            command.current_dir(dir);
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                let message = if err.kind() == std::io::ErrorKind::NotFound {
                    format!("exec: {:?}: executable file not found in $PATH", process.program)
                } else {
                    format!("exec {:?}: {err}", process.program)
                };
                self.event(true, "Failed", format!("Error: {message}"));
                return RunEnd::Exited(ContainerStateTerminated {
                    exit_code: 128,
                    reason: Some("StartError".to_string()),
                    message: Some(message),
                    started_at: Some(started_at.clone()),
                    finished_at: Some(now()),
                    ..Default::default()
                });
            }
        };
        let pid = child.id().and_then(|pid| i32::try_from(pid).ok()).unwrap_or(0);
        let pid_file = pid_path(
            &self.config.data_dir,
            self.pod.metadata.uid.as_deref().unwrap_or(""),
            &self.container.name,
        );
        super::orphans::record(&pid_file, pid);
        let namespace = self.pod.metadata.namespace.as_deref().unwrap_or("default");
        let pod_name = self.pod.metadata.name.as_deref().unwrap_or("");
        let log_file = log_path(&self.config.data_dir, namespace, pod_name, &self.container.name);
        let mut pumps = JoinSet::new();
        if let Some(stdout) = child.stdout.take() {
            pumps.spawn(pump_log(stdout, log_file.clone(), "stdout"));
        }
        if let Some(stderr) = child.stderr.take() {
            pumps.spawn(pump_log(stderr, log_file, "stderr"));
        }
        self.event(false, "Started", format!("Started container {}", self.container.name));
        let has_readiness = self.container.readiness_probe.is_some();
        self.update(|c| {
            c.state = ContainerState {
                running: Some(ContainerStateRunning { started_at: Some(started_at.clone()) }),
                ..Default::default()
            };
            c.started = true;
            c.ready = !has_readiness;
        });
        let (liveness_tx, mut liveness_rx) = mpsc::channel::<String>(1);
        let mut probes = JoinSet::new();
        let target = ProbeTarget {
            pod_ip: self.sandbox.pod_ip,
            env: process.env.clone(),
            netns: self.sandbox.netns.clone(),
        };
        for (is_readiness, probe) in
            [(true, &self.container.readiness_probe), (false, &self.container.liveness_probe)]
        {
            let Some(probe) = probe else { continue };
            match probe::probe_spec(probe, &self.container) {
                Ok(spec) => {
                    let loop_ctx = ProbeLoop {
                        spec,
                        target: target.clone(),
                        is_readiness,
                        idx: self.idx,
                        status: self.status.clone(),
                        events: self.events.clone(),
                        container: self.container.name.clone(),
                        liveness: liveness_tx.clone(),
                    };
                    probes.spawn(loop_ctx.run());
                }
                Err(message) => {
                    self.event(true, "Unhealthy", format!("probe cannot run: {message}"))
                }
            }
        }
        drop(liveness_tx);
        let grace_on_liveness = termination_grace(&self.pod);
        let mut terminate = self.terminate.clone();
        let requested = async move {
            terminate.wait_for(Option::is_some).await.ok().and_then(|g| *g).unwrap_or_default()
        };
        let end = tokio::select! {
            status = child.wait() => RunEnd::Exited(exit_state(status, started_at.clone())),
            Some(message) = liveness_rx.recv() => {
                self.event(false, "Killing", format!("Container {} failed liveness probe, will be restarted: {message}", self.container.name));
                let status = stop_process(&mut child, pid, grace_on_liveness).await;
                RunEnd::Exited(exit_state(status, started_at.clone()))
            }
            grace = requested => {
                self.event(false, "Killing", format!("Stopping container {}", self.container.name));
                let status = stop_process(&mut child, pid, grace).await;
                RunEnd::Terminated(exit_state(status, started_at.clone()))
            }
        };
        probes.abort_all();
        // Stragglers in the process group go with the main process, as a container's would.
        signal_group(pid, Signal::SIGKILL);
        // Output still buffered in the pipes is written before the state changes.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while pumps.join_next().await.is_some() {}
        })
        .await;
        pumps.abort_all();
        super::orphans::forget(&pid_file);
        end
    }
}

/// `terminationGracePeriodSeconds`, default 30 s.
pub fn termination_grace(pod: &Pod) -> Duration {
    let seconds = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

fn signal_group(pid: i32, signal: Signal) {
    if pid > 1 {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
    }
}

async fn stop_process(
    child: &mut tokio::process::Child,
    pid: i32,
    grace: Duration,
) -> std::io::Result<std::process::ExitStatus> {
    signal_group(pid, Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            signal_group(pid, Signal::SIGKILL);
            child.wait().await
        }
    }
}

fn exit_state(
    status: std::io::Result<std::process::ExitStatus>,
    started_at: Time,
) -> ContainerStateTerminated {
    use std::os::unix::process::ExitStatusExt;
    let finished_at = Some(now());
    match status {
        Ok(status) => {
            let (exit_code, signal) = match (status.code(), status.signal()) {
                (Some(code), _) => (code, None),
                (None, Some(signal)) => (128 + signal, Some(signal)),
                (None, None) => (-1, None),
            };
            ContainerStateTerminated {
                exit_code,
                signal,
                reason: Some(if exit_code == 0 { "Completed" } else { "Error" }.to_string()),
                started_at: Some(started_at),
                finished_at,
                ..Default::default()
            }
        }
        Err(err) => ContainerStateTerminated {
            exit_code: -1,
            reason: Some("Unknown".to_string()),
            message: Some(format!("waiting for the process failed: {err}")),
            started_at: Some(started_at),
            finished_at,
            ..Default::default()
        },
    }
}

/// Whether a declared TCP or UDP port is already taken on the pod's address.
pub fn port_conflict(pod_ip: IpAddr, container: &Container) -> Option<String> {
    for port in container.ports.iter().flatten() {
        let Ok(number) = u16::try_from(port.container_port) else { continue };
        let addr = SocketAddr::new(pod_ip, number);
        let taken = match port.protocol.as_deref().unwrap_or("TCP") {
            "UDP" => std::net::UdpSocket::bind(addr).err(),
            _ => std::net::TcpListener::bind(addr).err(),
        };
        if let Some(err) = taken {
            return Some(format!(
                "container {:?} port {}/{} is not free on {pod_ip}: {err}",
                container.name,
                number,
                port.protocol.as_deref().unwrap_or("TCP")
            ));
        }
    }
    None
}

/// Copies process output into the log file, one CRI-format line per output line.
async fn pump_log(source: impl tokio::io::AsyncRead + Unpin, path: PathBuf, stream: &'static str) {
    let file = tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await;
    let mut file = match file {
        Ok(file) => file,
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "cannot open the container log");
            return;
        }
    };
    let mut reader = tokio::io::BufReader::new(source);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let (content, tag) = match line.strip_suffix(b"\n") {
                    Some(content) => (content, "F"),
                    None => (&line[..], "P"),
                };
                let mut record = format!("{} {stream} {tag} ", jiff::Timestamp::now()).into_bytes();
                record.extend_from_slice(content);
                record.push(b'\n');
                if file.write_all(&record).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// How soon a readiness probe that has never passed is retried during its first period.
const FIRST_READY_RETRY: Duration = Duration::from_millis(100);

struct ProbeLoop {
    spec: ProbeSpec,
    target: ProbeTarget,
    is_readiness: bool,
    idx: usize,
    status: Arc<watch::Sender<PodRuntime>>,
    events: mpsc::UnboundedSender<RuntimeEvent>,
    container: String,
    liveness: mpsc::Sender<String>,
}

impl ProbeLoop {
    async fn run(self) {
        tokio::time::sleep(self.spec.timing.initial_delay).await;
        let kind = if self.is_readiness { "Readiness" } else { "Liveness" };
        let mut tracker = ProbeTracker::new(&self.spec.timing, !self.is_readiness);
        let started = tokio::time::Instant::now();
        // Deviation from the kubelet, for start-up latency: until a readiness probe has passed
        // once, a failed one is retried every `FIRST_READY_RETRY` during its first period (a
        // process often needs a few milliseconds to listen, and a probe that just missed it
        // would otherwise hold the pod out of its Services for a whole period).
        let fast_until = started + self.spec.timing.period;
        let mut ever_passed = false;
        let mut next_regular = started;
        let mut next = started;
        loop {
            tokio::time::sleep_until(next).await;
            let outcome =
                probe::run(&self.spec.action, &self.target, self.spec.timing.timeout).await;
            let was_passing = tracker.passing();
            let changed = tracker.observe(outcome.is_ok());
            if let Err(message) = &outcome
                && was_passing == tracker.passing()
                && (was_passing || changed.is_none())
            {
                tracing::debug!(container = %self.container, kind, %message, "probe failed");
            }
            if let (Some(now_passing), Err(message)) = (changed, &outcome)
                && !now_passing
            {
                let _ = self.events.send(RuntimeEvent {
                    warning: true,
                    reason: "Unhealthy".to_string(),
                    message: format!("{kind} probe failed: {message}"),
                    field_path: Some(format!("spec.containers{{{}}}", self.container)),
                });
            }
            ever_passed |= tracker.passing() && outcome.is_ok();
            let now = tokio::time::Instant::now();
            if next >= next_regular {
                next_regular = (next_regular + self.spec.timing.period).max(now);
            }
            next = if self.is_readiness && !ever_passed && now + FIRST_READY_RETRY < fast_until {
                (now + FIRST_READY_RETRY).min(next_regular)
            } else {
                next_regular
            };
            if let Some(now_passing) = changed {
                if self.is_readiness {
                    let idx = self.idx;
                    self.status.send_modify(|runtime| {
                        if let Some(container) = runtime.containers.get_mut(idx) {
                            container.ready = now_passing;
                        }
                    });
                } else if !now_passing {
                    let _ = self.liveness.send(outcome.err().unwrap_or_default()).await;
                    return;
                }
            }
        }
    }
}
