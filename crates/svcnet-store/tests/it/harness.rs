//! Test fixtures: a store of each backend, a real etcd on free loopback ports
//! (`svcnet_testkit::etcd`), small helpers. One etcd is shared by the whole binary (each test
//! uses its own key prefix); tests that compact or kill etcd start their own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use svcnet_store::embedded::EmbeddedStore;
use svcnet_store::etcd::EtcdStore;
use svcnet_store::{Op, Precondition, Store};

pub use svcnet_testkit::etcd::EtcdServer;

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
