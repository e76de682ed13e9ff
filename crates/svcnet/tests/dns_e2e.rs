//! End to end: svcnet's API server, svcnet-dns watching it through kube-rs, and the real `dig`.
//! A Service written to the API server is answered, changed and deleted; the time from the
//! write to the new answer is printed (not asserted; see bench/dns for numbers).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use tokio_util::sync::CancellationToken;

struct Cancel(CancellationToken);

impl Drop for Cancel {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

async fn dig(addr: SocketAddr, qname: &str, qtype: &str) -> (String, Vec<String>) {
    let output = tokio::process::Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "+tries=1", "+time=2", qname, qtype])
        .output()
        .await
        .expect("dig runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_default()
        .to_string();
    let short = tokio::process::Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "+tries=1", "+time=2", "+short", qname, qtype])
        .output()
        .await
        .expect("dig runs");
    let mut answers: Vec<String> =
        String::from_utf8_lossy(&short.stdout).lines().map(str::to_string).collect();
    answers.sort();
    (status, answers)
}

/// One hand-encoded A question over UDP; returns (rcode, answer count). For timing only: it
/// costs microseconds where a `dig` process costs tens of milliseconds.
fn quick_a(addr: SocketAddr, qname: &str) -> (u8, u16) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
    let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in qname.split('.').filter(|label| !label.is_empty()) {
        packet.push(u8::try_from(label.len()).expect("short label"));
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, 0, 1, 0, 1]);
    socket.send_to(&packet, addr).expect("send");
    let mut buf = [0u8; 1500];
    let n = socket.recv(&mut buf).expect("reply");
    assert!(n >= 12);
    (buf[3] & 0x0f, u16::from_be_bytes([buf[6], buf[7]]))
}

/// Polls with `quick_a` until `check` holds (deadline 10 s); returns how long it took.
async fn time_until(addr: SocketAddr, qname: &str, check: impl Fn(u8, u16) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let (rcode, n_answers) = quick_a(addr, qname);
        if check(rcode, n_answers) {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{qname}: still rcode {rcode}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Polls `dig` until `check` holds (deadline 10 s); returns how long it took.
async fn wait_for(
    addr: SocketAddr,
    qname: &str,
    qtype: &str,
    check: impl Fn(&str, &[String]) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let (status, answers) = dig(addr, qname, qtype).await;
        if check(&status, &answers) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{qname} {qtype}: still {status} {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_follows_the_api_server() {
    let cancel = Cancel(CancellationToken::new());
    let data_dir = tempfile::tempdir().expect("tempdir");
    let apiserver = svcnet_apiserver::start(
        svcnet_apiserver::Config {
            data_dir: data_dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..svcnet_apiserver::Config::default()
        },
        cancel.0.clone(),
    )
    .await
    .expect("api server starts");
    let kubeconfig =
        kube::config::Kubeconfig::read_from(&apiserver.kubeconfig).expect("kubeconfig reads");
    let client_config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("kubeconfig loads");
    let client = kube::Client::try_from(client_config).expect("client");

    let (dns, _watch) = svcnet_dns::start_watching(
        client.clone(),
        svcnet_dns::Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            metrics_address: None,
            udp_workers: 1,
            resolv_conf: "/nonexistent".into(),
            // Also runs the pod watch (readiness waits for its first sync).
            pods: svcnet_dns::PodMode::Verified,
            ..svcnet_dns::Config::default()
        },
        cancel.0.clone(),
    )
    .await
    .expect("dns starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dns.is_ready() {
        assert!(Instant::now() < deadline, "dns never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let addr = dns.addr;

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.50", "ports": [{"name": "http", "port": 80}]}
    }))
    .expect("service");
    let written = Instant::now();
    services.create(&PostParams::default(), &service).await.expect("create service");
    let answered =
        time_until(addr, "web.default.svc.cluster.local", |rcode, n| rcode == 0 && n == 1).await;
    eprintln!("API write → new answer: {answered:?} (after the create call returned)");
    let elapsed = wait_for(addr, "web.default.svc.cluster.local", "A", |status, answers| {
        status == "NOERROR" && answers == ["10.96.0.50"]
    })
    .await;
    eprintln!("create → answer: {:?} (from the API write: {:?})", elapsed, written.elapsed());
    let (_, srv) = dig(addr, "_http._tcp.web.default.svc.cluster.local", "SRV").await;
    assert_eq!(srv, ["0 100 80 web.default.svc.cluster.local."]);
    let (_, ptr) = dig(addr, "50.0.96.10.in-addr.arpa", "PTR").await;
    assert_eq!(ptr, ["web.default.svc.cluster.local."]);

    // A headless Service with a hand-written EndpointSlice.
    let headless: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}
    }))
    .expect("service");
    services.create(&PostParams::default(), &headless).await.expect("create headless");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "db-manual", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.0.7"], "hostname": "db-0", "conditions": {"ready": true}}]
    }))
    .expect("slice");
    slices.create(&PostParams::default(), &slice).await.expect("create slice");
    wait_for(addr, "db-0.db.default.svc.cluster.local", "A", |status, answers| {
        status == "NOERROR" && answers == ["10.244.0.7"]
    })
    .await;

    // Deleted names turn NXDOMAIN.
    let deleted = Instant::now();
    services.delete("web", &DeleteParams::default()).await.expect("delete service");
    let gone = time_until(addr, "web.default.svc.cluster.local", |rcode, _| rcode == 3).await;
    eprintln!("API delete → NXDOMAIN: {gone:?} (after the delete call returned)");
    wait_for(addr, "web.default.svc.cluster.local", "A", |status, _| status == "NXDOMAIN").await;
    eprintln!("delete → NXDOMAIN: {:?}", deleted.elapsed());
}
