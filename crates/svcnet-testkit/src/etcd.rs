//! A real etcd on free loopback ports for tests (the store's conformance suite, the API server's
//! crash test).
//!
//! The etcd process is started through `sh` with a pipe on its stdin: when the guard drops, or
//! when the test process dies for any reason, the pipe closes and the shell kills etcd and
//! removes its data directory, so no etcd outlives a failed test.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// Whether etcd and etcdctl are installed (tests on etcd are skipped otherwise).
pub fn available() -> bool {
    ["etcd", "etcdctl"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A running etcd, killed (and its data removed) when dropped.
pub struct EtcdServer {
    pub endpoint: String,
    pub data_dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts etcd with a fresh data directory and waits until it is healthy.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("svcnet-etcd-").tempdir().expect("tempdir");
        let data_dir = dir.keep();
        let mut s = Self {
            endpoint: String::new(),
            data_dir,
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
        };
        s.endpoint = format!("http://127.0.0.1:{}", s.client_port);
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        // The shell runs etcd in the background and waits on its stdin: a line means "kill etcd
        // and keep its data" (a crash), EOF means the test process is gone: also remove it.
        let script = format!(
            "etcd --name t --data-dir \"$DIR/data\" --listen-client-urls {client} \
             --advertise-client-urls {client} --listen-peer-urls {peer} \
             --initial-advertise-peer-urls {peer} --initial-cluster t={peer} \
             >>\"$DIR/etcd.log\" 2>&1 </dev/null & pid=$!; if read _; then kill -9 $pid; wait $pid; \
             else kill -9 $pid; wait $pid; rm -rf \"$DIR\"; fi"
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("DIR", &self.data_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new("etcdctl")
                .args(["--endpoints", &self.endpoint, "--command-timeout=1s", "endpoint", "health"])
                .env("ETCDCTL_API", "3")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy; see {:?}",
                self.data_dir
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills etcd with SIGKILL (keeping its data) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(b"\n");
            }
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
