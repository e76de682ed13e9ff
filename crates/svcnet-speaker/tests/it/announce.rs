//! The effect layer alone: an address added in one node namespace is reachable from the
//! client; after it moves to the other node (with gratuitous ARP) the client reaches the new
//! node without flushing its ARP cache.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use svcnet_speaker::Announcer;

use crate::netns::Net;

fn announcer(net: &Net, host: &str) -> Announcer {
    Announcer { netns: Some(net.ns(host)), ..Announcer::new("eth0") }
}

#[tokio::test]
async fn address_moves_between_nodes_with_gratuitous_arp() {
    let net = Net::new("an");
    let vip = IpAddr::V4(net.address(100));
    let target = SocketAddr::new(vip, 8080);
    net.serve_name("a", 8080);
    net.serve_name("b", 8080);
    let a = announcer(&net, "a");
    let b = announcer(&net, "b");

    // Adding twice is fine (idempotent), and the client reaches node a.
    a.add(vip).await.expect("add on a");
    a.add(vip).await.expect("add on a again");
    a.announce(vip).await.expect("garp from a");
    assert_eq!(net.ask("c", target, Duration::from_secs(2)).await.as_deref(), Some("a"));
    assert_eq!(net.neighbour("c", vip), Some(net.mac("a")));

    // Move the address; the client's cache still points at a until b's gratuitous ARP.
    let started = Instant::now();
    a.remove(vip).await.expect("remove on a");
    b.add(vip).await.expect("add on b");
    let garp = tokio::spawn({
        let b = b.clone();
        async move { b.announce(vip).await }
    });
    let deadline = started + Duration::from_secs(5);
    let mut answer = None;
    while Instant::now() < deadline {
        answer = net.ask("c", target, Duration::from_millis(200)).await;
        if answer.as_deref() == Some("b") {
            break;
        }
    }
    let failover = started.elapsed();
    println!("effect-layer failover a -> b: {failover:?}");
    assert_eq!(answer.as_deref(), Some("b"), "client reaches b within 5 s");
    assert_eq!(
        net.neighbour("c", vip),
        Some(net.mac("b")),
        "gratuitous ARP updated the client's cache"
    );
    garp.await.expect("join").expect("garp from b");
    assert!(!net.has_address("a", vip));

    // Removing twice is fine too.
    a.remove(vip).await.expect("remove absent");
}

#[tokio::test]
async fn stale_addresses_are_found_and_removed() {
    let net = Net::new("st");
    let dir = tempfile::tempdir().expect("tempdir");
    let v4 = IpAddr::V4(net.address(101));
    let v6: IpAddr = "fd00:5eed::101".parse().expect("v6");
    let first = Announcer { state_file: Some(dir.path().join("held")), ..announcer(&net, "a") };
    first.add(v4).await.expect("add v4");
    first.add(v6).await.expect("add v6");
    assert!(net.has_address("a", v4) && net.has_address("a", v6));

    // A later run finds both (the IPv4 one by its label, the IPv6 one from the state file)
    // and leaves the node's own address alone.
    let later = Announcer { state_file: Some(dir.path().join("held")), ..announcer(&net, "a") };
    assert_eq!(later.ours().await.expect("ours"), BTreeSet::from([v4, v6]));
    assert_eq!(later.remove_stale().await.expect("remove"), BTreeSet::from([v4, v6]));
    assert!(!net.has_address("a", v4) && !net.has_address("a", v6));
    assert!(net.has_address("a", IpAddr::V4(net.address(2))));
    assert!(later.ours().await.expect("ours").is_empty());
}
