//! The whole speaker end to end: two speakers (node-a and node-b, in two zones) against one
//! svcnet API server, announcing into the namespaces of `netns::Net`.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Service};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::netns::Net;

struct Server {
    handle: svcnet_apiserver::ServerHandle,
    _dir: tempfile::TempDir,
    cancel: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn server() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = svcnet_apiserver::Config {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..Default::default()
    };
    let cancel = CancellationToken::new();
    let handle = svcnet_apiserver::start(config, cancel.clone()).await.expect("server starts");
    Server { handle, _dir: dir, cancel }
}

async fn client(server: &Server) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(&server.handle.kubeconfig).expect("kubeconfig");
    let config =
        kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config");
    kube::Client::try_from(config).expect("client")
}

async fn ready_node(client: &kube::Client, name: &str, zone: &str) {
    let api = Api::<Node>::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
    }))
    .expect("node");
    api.create(&PostParams::default(), &node).await.expect("create node");
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("node status");
}

async fn lb_service(client: &kube::Client, vip: IpAddr) {
    let api = Api::<Service>::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 8080}], "selector": {"app": "web"}},
    }))
    .expect("service");
    api.create(&PostParams::default(), &service).await.expect("create service");
    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": vip.to_string(), "ipMode": "VIP"}]}}});
    api.patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("service status");
}

struct Running {
    held: watch::Receiver<BTreeSet<IpAddr>>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<svcnet_speaker::Result<()>>,
}

/// A TCP relay to the API server that can cut every connection, standing in for a node that
/// loses its link to the control plane.
struct Relay {
    url: String,
    cut: CancellationToken,
}

async fn relay(server: &Server) -> Relay {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    let upstream = server.handle.addr;
    let cut = CancellationToken::new();
    let stop = cut.clone();
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => {
                    let Ok((mut inbound, _)) = accepted else { break };
                    connections.spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            }
        }
        // Dropping the listener and aborting the copies cuts every connection at once.
        connections.abort_all();
    });
    Relay { url, cut }
}

async fn client_via(server: &Server, relay: &Relay) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(&server.handle.kubeconfig).expect("kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config");
    config.cluster_url = relay.url.parse().expect("relay url");
    kube::Client::try_from(config).expect("client")
}

fn start(client: &kube::Client, net: &Net, host: &str, zone: &str) -> Running {
    let config = svcnet_speaker::Config {
        node_name: format!("node-{host}"),
        zone: zone.into(),
        netns: Some(net.ns(host)),
        ..Default::default()
    };
    let speaker = svcnet_speaker::Speaker::new(client.clone(), config);
    let held = speaker.held();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(speaker.run(cancel.clone()));
    Running { held, cancel, task }
}

/// Waits until `running` holds `vip` (or does not, per `want`); returns how long it took.
async fn wait_held(running: &mut Running, vip: IpAddr, want: bool, limit: Duration) -> Duration {
    let started = Instant::now();
    let reached =
        tokio::time::timeout(limit, running.held.wait_for(|held| held.contains(&vip) == want))
            .await;
    assert!(matches!(reached, Ok(Ok(_))), "held({vip}) == {want} within {limit:?}");
    started.elapsed()
}

/// Polls the client until `target` answers with `name`; returns how long it took.
async fn wait_answer(net: &Net, target: SocketAddr, name: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < limit {
        if net.ask("c", target, Duration::from_millis(200)).await.as_deref() == Some(name) {
            return started.elapsed();
        }
    }
    panic!("{name} did not answer on {target} within {limit:?}");
}

#[tokio::test]
async fn one_node_holds_and_the_other_takes_over() {
    let server = server().await;
    let client = client(&server).await;
    let net = Net::new("el");
    let vip = IpAddr::V4(net.address(100));
    let target = SocketAddr::new(vip, 8080);
    net.serve_name("a", 8080);
    net.serve_name("b", 8080);
    ready_node(&client, "node-a", "zone-a").await;
    ready_node(&client, "node-b", "zone-b").await;
    lb_service(&client, vip).await;

    let mut a = start(&client, &net, "a", "zone-a");
    let mut b = start(&client, &net, "b", "zone-b");
    // Exactly one of them takes the address.
    let limit = Duration::from_secs(10);
    tokio::time::timeout(limit, async {
        loop {
            if a.held.borrow().contains(&vip) || b.held.borrow().contains(&vip) {
                break;
            }
            tokio::select! {
                _ = a.held.changed() => {}
                _ = b.held.changed() => {}
            }
        }
    })
    .await
    .expect("someone holds the address");
    let (mut holder, mut other, holder_host, other_host) =
        if a.held.borrow().contains(&vip) { (a, b, "a", "b") } else { (b, a, "b", "a") };
    assert!(!other.held.borrow().contains(&vip), "never two holders");
    wait_answer(&net, target, holder_host, limit).await;
    let announcers =
        svcnet_speaker::announcers(client.clone(), "kube-system").await.expect("announcers");
    assert_eq!(
        announcers.get(&vip).map(String::as_str),
        Some(format!("node-{holder_host}").as_str())
    );

    // Crash the holder (no release): the other takes over once the 1 s Lease expires.
    holder.task.abort();
    let started = Instant::now();
    wait_held(&mut other, vip, true, Duration::from_secs(5)).await;
    let lease_failover = started.elapsed();
    let served =
        wait_answer(&net, target, other_host, Duration::from_secs(5)).await + lease_failover;
    println!(
        "crash failover node-{holder_host} -> node-{other_host}: lease {lease_failover:?}, client served after {served:?}"
    );
    assert!(!net.has_address(holder_host, vip), "the crashed speaker's address is gone");

    // The crashed node comes back: the address stays where it is (no second disruption).
    holder =
        start(&client, &net, holder_host, if holder_host == "a" { "zone-a" } else { "zone-b" });
    tokio::time::sleep(Duration::from_millis(1500)).await; // A window in which nothing may change.
    assert!(other.held.borrow().contains(&vip) && !holder.held.borrow().contains(&vip));

    // A graceful stop releases the Lease, so the handover is fast.
    other.cancel.cancel();
    let started = Instant::now();
    wait_held(&mut holder, vip, true, Duration::from_secs(5)).await;
    let handover = started.elapsed();
    wait_answer(&net, target, holder_host, Duration::from_secs(5)).await;
    println!("graceful handover node-{other_host} -> node-{holder_host}: {handover:?}");
    other.task.await.expect("join").expect("speaker stops cleanly");
    assert!(!net.has_address(other_host, vip));

    holder.cancel.cancel();
    holder.task.await.expect("join").expect("speaker stops cleanly");
    assert!(!net.has_address(holder_host, vip), "a stopped speaker leaves no address behind");
}

#[tokio::test]
async fn a_holder_cut_off_from_the_api_drops_the_address_before_the_takeover() {
    let server = server().await;
    let client = client(&server).await;
    let relay = relay(&server).await;
    let cut_off_client = client_via(&server, &relay).await;
    let net = Net::new("cu");
    let vip = IpAddr::V4(net.address(100));
    ready_node(&client, "node-a", "zone-a").await;
    ready_node(&client, "node-b", "zone-b").await;
    lb_service(&client, vip).await;

    // node-a starts alone, so it holds the address whatever the preference order.
    let mut a = start(&cut_off_client, &net, "a", "zone-a");
    wait_held(&mut a, vip, true, Duration::from_secs(10)).await;
    let mut b = start(&client, &net, "b", "zone-b");

    relay.cut.cancel();
    let started = Instant::now();
    let (dropped, acquired) = tokio::join!(
        async {
            wait_held(&mut a, vip, false, Duration::from_secs(5)).await;
            Instant::now()
        },
        async {
            wait_held(&mut b, vip, true, Duration::from_secs(5)).await;
            Instant::now()
        },
    );
    println!(
        "cut off: node-a dropped after {:?}, node-b acquired after {:?}",
        dropped - started,
        acquired - started
    );
    assert!(dropped <= acquired, "the cut-off holder lets go before the other node takes over");
    assert!(!net.has_address("a", vip) && net.has_address("b", vip));

    a.cancel.cancel();
    b.cancel.cancel();
    let _ = a.task.await;
    let _ = b.task.await;
}
