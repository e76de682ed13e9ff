//! Test fixtures: a store of each backend, a real etcd on free loopback ports, small helpers.
//!
//! The etcd process is started through `sh` with a pipe on its stdin: when the guard drops, or
//! when the test process dies for any reason, the pipe closes and the shell kills etcd and
//! removes its data directory. One etcd is shared by the whole binary (each test uses its own
//! key prefix); tests that compact or kill etcd start their own.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use svcnet_store::embedded::EmbeddedStore;
use svcnet_store::etcd::EtcdStore;
use svcnet_store::{Op, Precondition, Store};

/// A running etcd, killed (and its data removed) when dropped.
pub struct EtcdServer {
    pub endpoint: String,
    pub data_dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
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

/// The etcd shared by every test of this binary; it dies with the process (stdin EOF).
pub fn shared_etcd() -> &'static str {
    static ETCD: OnceLock<EtcdServer> = OnceLock::new();
    &ETCD.get_or_init(EtcdServer::start).endpoint
}

/// A unique key prefix per fixture, so tests sharing one etcd do not see each other.
pub fn unique_prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("/t{}-{}/", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Etcd,
}

/// A store under test, with whatever keeps it alive.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
    _etcd: Option<EtcdServer>,
}

impl Fixture {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Embedded => Self::embedded(),
            Backend::Etcd => Self::etcd().await,
        }
    }

    pub fn embedded() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(&dir.path().join("store.redb")).expect("open embedded");
        Self { store: Arc::new(store), backend: Backend::Embedded, _dir: Some(dir), _etcd: None }
    }

    /// A store on the shared etcd, under a fresh prefix.
    pub async fn etcd() -> Self {
        let endpoint =
            tokio::task::spawn_blocking(|| shared_etcd().to_owned()).await.expect("etcd");
        let store = EtcdStore::connect(&[endpoint], &unique_prefix()).await.expect("connect etcd");
        Self { store: Arc::new(store), backend: Backend::Etcd, _dir: None, _etcd: None }
    }

    /// A store on an etcd of its own (for tests that compact).
    pub async fn etcd_private() -> Self {
        let server = tokio::task::spawn_blocking(EtcdServer::start).await.expect("etcd");
        let store = EtcdStore::connect(std::slice::from_ref(&server.endpoint), "/p/")
            .await
            .expect("connect etcd");
        Self { store: Arc::new(store), backend: Backend::Etcd, _dir: None, _etcd: Some(server) }
    }
}

pub fn put(key: &str, value: &str) -> Op {
    Op::Put { key: key.into(), value: value.as_bytes().to_vec(), precondition: Precondition::None }
}

pub fn put_if(key: &str, value: &str, precondition: Precondition) -> Op {
    Op::Put { key: key.into(), value: value.as_bytes().to_vec(), precondition }
}

pub fn delete(key: &str) -> Op {
    Op::Delete { key: key.into(), precondition: Precondition::None }
}

pub fn delete_if(key: &str, precondition: Precondition) -> Op {
    Op::Delete { key: key.into(), precondition }
}

/// Runs each named `async fn(Fixture)` against both backends as two tests.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$name($crate::harness::Fixture::new($crate::harness::Backend::Embedded).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd() {
                super::$name($crate::harness::Fixture::new($crate::harness::Backend::Etcd).await).await
            }
        }
    )* };
}
