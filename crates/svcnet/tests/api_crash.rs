//! Crash test of `svcnet server` (issue 3 acceptance): a client creates Services as fast as it
//! can while the server is killed with SIGKILL 20 times and restarted. Afterwards every create
//! that got a 201 is there, the store opens cleanly, resourceVersions never go backwards and no
//! two Services share a ClusterIP. Runs on the embedded store and, when `/usr/bin/etcd` exists,
//! on etcd started on free loopback ports.

use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};

/// Kills its process (SIGKILL) when dropped, so a failing test leaves nothing behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn start_server(data_dir: &Path, port: u16, store: &str) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("server.log"))
        .expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_svcnet"))
        .args([
            "server",
            "--no-controllers",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--store",
            store,
            "--data-dir",
        ])
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn svcnet server");
    Proc(child)
}

async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config =
        kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config");
    kube::Client::try_from(config).expect("client")
}

/// Waits until the server answers (a readiness signal, polled with a deadline).
async fn wait_ready(kubeconfig: &Path, proc: &mut Proc) -> kube::Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = proc.0.try_wait() {
            panic!("server exited early: {status}");
        }
        if kubeconfig.exists() {
            let c = client(kubeconfig).await;
            // The server accepts connections only once it is ready (`start` has returned).
            if c.apiserver_version().await.is_ok() {
                return c;
            }
        }
        assert!(Instant::now() < deadline, "server not ready in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn service(name: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"type": "NodePort", "ports": [{"port": 80}], "selector": {"app": name}},
    }))
    .expect("service")
}

async fn crash_test(store: &str, data_dir: PathBuf) {
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let port = free_port();
    let kubeconfig = data_dir.join("kubeconfig");
    let mut server = start_server(&data_dir, port, store);
    let mut c = wait_ready(&kubeconfig, &mut server).await;

    let acked: Arc<std::sync::Mutex<BTreeMap<String, u64>>> = Arc::default();
    // Names whose DELETE was acknowledged: they must stay gone.
    let deleted: Arc<std::sync::Mutex<HashSet<String>>> = Arc::default();
    let n_ok = Arc::new(AtomicUsize::new(0));
    let max_rv = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (acked, deleted, n_ok, max_rv, stop) =
            (acked.clone(), deleted.clone(), n_ok.clone(), max_rv.clone(), stop.clone());
        let kubeconfig = kubeconfig.clone();
        workers.push(tokio::spawn(async move {
            let mut c = client(&kubeconfig).await;
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("w{w}-{i}");
                let api: Api<Service> = Api::namespaced(c.clone(), "default");
                match api.create(&PostParams::default(), &service(&name)).await {
                    Ok(svc) => {
                        let rv: u64 = svc
                            .metadata
                            .resource_version
                            .as_deref()
                            .and_then(|r| r.parse().ok())
                            .expect("numeric RV");
                        acked.lock().expect("lock").insert(name, rv);
                        max_rv.fetch_max(rv, Ordering::SeqCst);
                        n_ok.fetch_add(1, Ordering::SeqCst);
                        // Every other create also deletes the previous Service, so the burst
                        // releases addresses and ports while the server is being killed.
                        if i % 2 == 1 {
                            let previous = format!("w{w}-{}", i - 1);
                            // Whatever the outcome, the previous Service is no longer promised.
                            acked.lock().expect("lock").remove(&previous);
                            if api.delete(&previous, &Default::default()).await.is_ok() {
                                deleted.lock().expect("lock").insert(previous);
                            }
                        }
                        i += 1;
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => i += 1,
                    Err(_) => {
                        // The server is down or restarting; a fresh client avoids a dead pool.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        c = client(&kubeconfig).await;
                    }
                }
            }
        }));
    }

    for kill in 0..20 {
        // Let a few creates succeed on this incarnation, then kill it mid-burst.
        let before = n_ok.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(20);
        while n_ok.load(Ordering::SeqCst) < before + 5 {
            assert!(Instant::now() < deadline, "no progress after restart {kill}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let rv_before = max_rv.load(Ordering::SeqCst);
        drop(server); // SIGKILL
        server = start_server(&data_dir, port, store);
        c = wait_ready(&kubeconfig, &mut server).await;
        // The revision never goes backwards across a crash.
        let api: Api<Service> = Api::namespaced(c.clone(), "default");
        let list = api.list(&Default::default()).await.expect("list after restart");
        let list_rv: u64 = list
            .metadata
            .resource_version
            .as_deref()
            .and_then(|r| r.parse().ok())
            .expect("list RV");
        assert!(list_rv >= rv_before, "RV went backwards: {list_rv} < {rv_before}");
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.await;
    }

    // Restart once more and check everything.
    drop(server);
    let mut server = start_server(&data_dir, port, store);
    let c2 = wait_ready(&kubeconfig, &mut server).await;
    let _ = c;
    let api: Api<Service> = Api::all(c2);
    let list = api.list(&Default::default()).await.expect("final list");
    let names: HashSet<String> =
        list.items.iter().filter_map(|s| s.metadata.name.clone()).collect();
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 100, "too few creates: {}", acked.len());
    for (name, rv) in &acked {
        assert!(
            names.contains(name),
            "acknowledged Service {name} (rv {rv}) is missing after the crashes"
        );
    }
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for svc in &list.items {
        let spec = svc.spec.as_ref().expect("spec");
        for ip in spec.cluster_ips.clone().unwrap_or_default() {
            assert!(ips.insert(ip.clone()), "duplicate ClusterIP {ip}");
        }
        for p in spec.ports.clone().unwrap_or_default() {
            if let Some(np) = p.node_port {
                assert!(ports.insert(np), "duplicate nodePort {np}");
            }
        }
    }
    let deleted = deleted.lock().expect("lock").clone();
    assert!(!deleted.is_empty(), "the burst deleted nothing");
    for name in &deleted {
        assert!(!names.contains(name), "deleted Service {name} is back after the crashes");
    }
    let log = std::fs::read_to_string(data_dir.join("server.log")).unwrap_or_default();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");

    // No leaked reservation: after the restart's repair, the stored allocations are exactly the
    // addresses and ports of the Services (read from the store with the server stopped).
    drop(server);
    let store = svcnet_store::open(store, &data_dir).await.expect("open the store");
    let (kvs, _) = store.list("/registry/svcnet.io/allocations/").await.expect("list allocations");
    let mut stored = HashSet::new();
    for kv in kvs {
        let key = kv.key.trim_start_matches("/registry/svcnet.io/allocations/").to_string();
        assert!(stored.insert(key.clone()), "duplicate reservation {key}");
    }
    let mut expected: HashSet<String> = ips.iter().map(|ip| format!("clusterips/{ip}")).collect();
    expected.extend(ports.iter().map(|p| format!("nodeports/{p}")));
    let leaked: Vec<_> = stored.difference(&expected).collect();
    let missing: Vec<_> = expected.difference(&stored).collect();
    assert!(leaked.is_empty(), "leaked reservations after the crashes: {leaked:?}");
    assert!(missing.is_empty(), "Services without a reservation: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_creates_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    crash_test("embedded", dir.path().join("data")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_creates_etcd() {
    if !svcnet_testkit::etcd::available() {
        eprintln!("etcd is not installed; the etcd crash test is skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = svcnet_testkit::etcd::EtcdServer::start();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    crash_test(&format!("etcd:{}", etcd.endpoint), data).await;
}
