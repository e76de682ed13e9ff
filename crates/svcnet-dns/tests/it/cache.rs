//! The UDP answer cache seen from outside: repeated questions (same socket, so the same
//! `SO_REUSEPORT` worker) get the same answer the full path gives, with the asker's ID and
//! spelling, and a zone swap is answered at once (the cache follows the snapshot).

use std::net::Ipv4Addr;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::harness::{fixture, start, test_config};

struct Client {
    socket: tokio::net::UdpSocket,
    id: u16,
}

impl Client {
    async fn new(server: std::net::SocketAddr) -> Client {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        socket.connect(server).await.expect("connect");
        Client { socket, id: 7 }
    }

    async fn ask(&mut self, name: &str, qtype: RecordType, edns: bool) -> Message {
        self.id = self.id.wrapping_add(1);
        let mut request = Message::query();
        request.metadata.id = self.id;
        request.metadata.recursion_desired = true;
        request.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
        if edns {
            let mut opt = Edns::new();
            opt.set_max_payload(1232);
            request.edns = Some(opt);
        }
        self.socket.send(&request.to_vec().expect("encode")).await.expect("send");
        let mut buf = vec![0u8; 65535];
        let n = tokio::time::timeout(std::time::Duration::from_secs(3), self.socket.recv(&mut buf))
            .await
            .expect("reply in time")
            .expect("recv");
        let reply = Message::from_vec(&buf[..n]).expect("reply parses");
        assert_eq!(reply.metadata.id, self.id);
        assert_eq!(reply.queries[0].name().to_ascii(), name, "the asker's spelling is echoed");
        reply
    }
}

fn a_records(reply: &Message) -> Vec<Ipv4Addr> {
    reply
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_match_and_follow_zone_swaps() {
    let config = svcnet_dns::Config {
        metrics_address: Some("127.0.0.1:0".parse().expect("addr")),
        ..test_config()
    };
    let server = start(config, &fixture()).await;
    let mut client = Client::new(server.handle.addr).await;
    let name = "web.demo.svc.cluster.local.";
    let first = client.ask(name, RecordType::A, false).await;
    assert_eq!(first.metadata.response_code, ResponseCode::NoError);
    let ips = a_records(&first);
    assert!(!ips.is_empty());
    for spelling in ["WEB.demo.svc.cluster.local.", "wEb.DeMo.SvC.cLuStEr.LoCaL.", name] {
        let again = client.ask(spelling, RecordType::A, false).await;
        assert_eq!(a_records(&again), ips);
        assert!(again.metadata.authoritative);
        assert!(again.edns.is_none());
    }
    // EDNS0 is a different entry: the reply carries an OPT record.
    for _ in 0..3 {
        let with_edns = client.ask(name, RecordType::A, true).await;
        assert!(with_edns.edns.is_some());
        assert_eq!(a_records(&with_edns), ips);
    }
    let missing = "nope.demo.svc.cluster.local.";
    for _ in 0..3 {
        let reply = client.ask(missing, RecordType::A, false).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(reply.authorities.len(), 1, "SOA in the negative answer");
    }

    // Delete `web`: the next question (same worker, warm cache) is NXDOMAIN.
    let mut objects = fixture();
    objects.services.retain(|service| service.metadata.name.as_deref() != Some("web"));
    server.handle.set_objects(&objects);
    let gone = client.ask(name, RecordType::A, false).await;
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);

    // Re-create it with another address.
    let mut objects = fixture();
    for service in &mut objects.services {
        if service.metadata.name.as_deref() == Some("web") {
            let spec = service.spec.as_mut().expect("spec");
            spec.cluster_ip = Some("10.96.99.99".to_string());
            spec.cluster_ips = Some(vec!["10.96.99.99".to_string()]);
        }
    }
    server.handle.set_objects(&objects);
    let back = client.ask(name, RecordType::A, false).await;
    assert_eq!(a_records(&back), vec![Ipv4Addr::new(10, 96, 99, 99)]);
    let back = client.ask("Web.demo.svc.cluster.local.", RecordType::A, false).await;
    assert_eq!(a_records(&back), vec![Ipv4Addr::new(10, 96, 99, 99)]);

    // The repeats above were hits (workers add their counts when idle for a moment).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = crate::recursion::metrics_text(&server).await;
        let hits = text
            .lines()
            .find_map(|line| line.strip_prefix("svcnet_dns_answer_cache_hits_total "))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if hits >= 7 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "answer cache hits: {hits}\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
