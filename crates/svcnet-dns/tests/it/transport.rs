//! UDP and TCP, EDNS0, truncation, malformed and hostile input.

use std::time::Duration;

use serde_json::json;

use crate::harness::{fixture, start, start_fixture, test_config};

/// The fixture plus a headless Service `big` with `n` ready endpoints.
fn with_big_headless(n: usize) -> svcnet_dns::Objects {
    let mut objects = fixture();
    objects.services.push(
        serde_json::from_value(json!({
            "kind": "Service", "apiVersion": "v1",
            "metadata": {"name": "big", "namespace": "demo"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"]}
        }))
        .expect("service"),
    );
    let endpoints: Vec<_> = (0..n)
        .map(|idx| json!({"addresses": [format!("10.245.{}.{}", idx / 250, idx % 250 + 1)], "conditions": {"ready": true}}))
        .collect();
    objects.endpoint_slices.push(
        serde_json::from_value(json!({
            "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"name": "big-1", "namespace": "demo", "labels": {"kubernetes.io/service-name": "big"}},
            "addressType": "IPv4",
            "endpoints": endpoints
        }))
        .expect("slice"),
    );
    objects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_and_tcp_fallback() {
    let server = start(test_config(), &with_big_headless(100)).await;
    // 100 A records (16 bytes each with compression) do not fit in 512 bytes.
    let dig = server.dig(&["+noedns", "+ignore", "big.demo.svc.cluster.local", "A"]).await;
    assert_eq!(dig.status, "NOERROR", "{}", dig.raw);
    assert!(dig.has_flag("tc"), "{}", dig.raw);
    assert!(dig.answer.len() < 100 && !dig.answer.is_empty(), "{}", dig.raw);
    // dig retries over TCP by itself without +ignore.
    let dig = server.dig(&["+noedns", "big.demo.svc.cluster.local", "A"]).await;
    assert!(!dig.has_flag("tc"), "{}", dig.raw);
    assert_eq!(dig.answer.len(), 100);
    let dig = server.dig(&["+tcp", "big.demo.svc.cluster.local", "A"]).await;
    assert_eq!(dig.answer.len(), 100);
    // A large EDNS0 buffer is honoured: everything fits over UDP.
    let dig = server.dig(&["+bufsize=4096", "+ignore", "big.demo.svc.cluster.local", "A"]).await;
    assert!(!dig.has_flag("tc"), "{}", dig.raw);
    assert_eq!(dig.answer.len(), 100);
    assert!(dig.raw.contains("; EDNS: version: 0"), "{}", dig.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edns_and_odd_questions() {
    let server = start_fixture().await;
    let dig = server.dig(&["+edns=1", "+noednsnegotiation", "web.demo.svc.cluster.local"]).await;
    assert_eq!(dig.status, "BADVERS", "{}", dig.raw);
    // ANY inside the zone: the records of the name.
    let dig = server.dig(&["web.demo.svc.cluster.local", "ANY"]).await;
    assert_eq!(dig.status, "NOERROR");
    assert_eq!(dig.answers(), ["web.demo.svc.cluster.local. A 10.96.0.20"]);
    // ANY outside the zone is not forwarded (RFC 8482).
    let dig = server.dig(&["example.org", "ANY"]).await;
    assert_eq!(dig.status, "NOTIMP", "{}", dig.raw);
    // Zone transfers are refused.
    let dig = server.dig(&["cluster.local", "AXFR"]).await;
    assert!(dig.raw.contains("Transfer failed"), "{}", dig.raw);
    let ixfr = crate::harness::raw_query(
        server.handle.addr,
        "cluster.local.",
        hickory_proto::rr::RecordType::IXFR,
    )
    .await;
    assert_eq!(ixfr.metadata.response_code, hickory_proto::op::ResponseCode::Refused);
    // Another class.
    let dig = server.dig(&["-c", "CH", "version.bind", "TXT"]).await;
    assert_eq!(dig.status, "REFUSED", "{}", dig.raw);
    // Case is preserved in the answer and matched case-insensitively.
    let dig = server.dig(&["WeB.DeMo.svc.CLUSTER.local", "A"]).await;
    assert_eq!(dig.answers(), ["WeB.DeMo.svc.CLUSTER.local. A 10.96.0.20"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_leaves_the_server_serving() {
    let server = start_fixture().await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket.connect(server.handle.addr).await.expect("connect");
    let valid = {
        // A valid query for web.demo.svc.cluster.local A, used to derive malformed variants.
        let mut message = hickory_proto::op::Message::query();
        message.add_query(hickory_proto::op::Query::query(
            "web.demo.svc.cluster.local.".parse().expect("name"),
            hickory_proto::rr::RecordType::A,
        ));
        message.to_vec().expect("encode")
    };
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut n_replies = 0usize;
    for idx in 0..3000usize {
        let packet: Vec<u8> = match idx % 6 {
            // Random bytes of random length.
            0 => (0..(next() % 600)).map(|_| next() as u8).collect(),
            // A valid query cut short.
            1 => valid[..(next() as usize % valid.len())].to_vec(),
            // A valid query with random bytes flipped.
            2 => {
                let mut packet = valid.clone();
                for _ in 0..3 {
                    let at = next() as usize % packet.len();
                    packet[at] = next() as u8;
                }
                packet
            }
            // Counts that promise more than the packet holds.
            3 => {
                let mut packet = valid.clone();
                packet[4] = 0xff;
                packet[6] = 0xff;
                packet
            }
            // Oversized: a valid query followed by 60,000 bytes of junk.
            4 => {
                let mut packet = valid.clone();
                packet.extend(std::iter::repeat_n(0xAB, 60_000));
                packet
            }
            // A compression pointer loop in the question name.
            _ => {
                let mut packet = valid[..12].to_vec();
                packet.extend_from_slice(&[0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01]);
                packet
            }
        };
        let _ = socket.send(&packet).await;
        // Drain replies without waiting for them.
        let mut buf = [0u8; 4096];
        while let Ok(Ok(_)) = tokio::time::timeout(Duration::ZERO, socket.recv(&mut buf)).await {
            n_replies += 1;
        }
    }
    // Garbage over TCP too: a length prefix and too few bytes, then a zero length.
    for payload in [&[0x00, 0x40, 1, 2, 3][..], &[0x00, 0x00][..], &[0xff, 0xff, 0xde, 0xad][..]] {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(server.handle.addr).await.expect("connect");
        let _ = stream.write_all(payload).await;
        drop(stream);
    }
    let dig = server.dig(&["web.demo.svc.cluster.local", "A"]).await;
    assert_eq!(dig.answers(), ["web.demo.svc.cluster.local. A 10.96.0.20"]);
    let dig = server.dig(&["+tcp", "web.demo.svc.cluster.local", "A"]).await;
    assert_eq!(dig.answers(), ["web.demo.svc.cluster.local. A 10.96.0.20"]);
    // Some garbage parses well enough to get FORMERR; the count only shows replies flowed.
    let _ = n_replies;
}
