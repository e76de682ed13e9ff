//! Starting a server on a free loopback port and running `dig` against it.

use std::net::SocketAddr;

use svcnet_dns::{Config, IpNet, Objects, ServerHandle};
use tokio_util::sync::CancellationToken;

pub const FIXTURE: &str = include_str!("../fixtures/cluster.json");

pub fn fixture() -> Objects {
    Objects::from_list_json(FIXTURE).expect("fixture parses")
}

/// A server that stops when dropped.
pub struct TestServer {
    pub handle: ServerHandle,
    cancel: CancellationToken,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl TestServer {
    /// Runs `dig @127.0.0.1 -p PORT ARGS…` and parses its output.
    pub async fn dig(&self, args: &[&str]) -> Dig {
        dig_at(self.handle.addr, args).await
    }
}

/// A test configuration: free loopback port, no metrics, no upstreams unless given, two UDP
/// workers (so the `SO_REUSEPORT` path is exercised).
pub fn test_config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        metrics_address: None,
        udp_workers: 2,
        // Never the host's resolv.conf: tests stay on loopback.
        resolv_conf: "/nonexistent/resolv.conf".into(),
        allow_recursion: vec!["127.0.0.1/32".parse::<IpNet>().expect("cidr")],
        ..Config::default()
    }
}

pub async fn start(config: Config, objects: &Objects) -> TestServer {
    let cancel = CancellationToken::new();
    let handle =
        svcnet_dns::serve_static(config, objects, cancel.clone()).await.expect("server starts");
    TestServer { handle, cancel }
}

pub async fn start_fixture() -> TestServer {
    start(test_config(), &fixture()).await
}

/// The parsed output of one `dig` run.
#[derive(Debug)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    pub answer: Vec<String>,
    pub authority: Vec<String>,
    pub additional: Vec<String>,
    pub raw: String,
}

impl Dig {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The answer records as `name type data` (TTL and class dropped), sorted.
    pub fn answers(&self) -> Vec<String> {
        let mut answers: Vec<String> = self.answer.iter().map(|line| strip_ttl(line)).collect();
        answers.sort();
        answers
    }
}

fn strip_ttl(line: &str) -> String {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 4 {
        return line.to_string();
    }
    // name ttl class type data…
    let mut out = vec![fields[0]];
    out.extend(&fields[3..]);
    out.join(" ")
}

pub async fn dig_at(addr: SocketAddr, args: &[&str]) -> Dig {
    let output = tokio::process::Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["+tries=1", "+time=3"])
        .args(args)
        .output()
        .await
        .expect("dig runs");
    let raw = String::from_utf8_lossy(&output.stdout).into_owned();
    parse_dig(raw)
}

fn parse_dig(raw: String) -> Dig {
    let mut dig = Dig {
        status: String::new(),
        flags: Vec::new(),
        answer: Vec::new(),
        authority: Vec::new(),
        additional: Vec::new(),
        raw: raw.clone(),
    };
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            dig.status = rest.split(',').next().unwrap_or_default().to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            let flags = rest.split(';').next().unwrap_or_default();
            dig.flags = flags.split_whitespace().map(str::to_string).collect();
        }
        if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
            continue;
        }
        if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
            continue;
        }
        if line.starts_with(";; ADDITIONAL SECTION") {
            section = "additional";
            continue;
        }
        if line.trim().is_empty() || line.starts_with(';') {
            if line.trim().is_empty() {
                section = "";
            }
            continue;
        }
        match section {
            "answer" => dig.answer.push(line.to_string()),
            "authority" => dig.authority.push(line.to_string()),
            "additional" => dig.additional.push(line.to_string()),
            _ => {}
        }
    }
    dig
}

/// One question over UDP with hickory-proto, for what `dig` cannot express.
pub async fn raw_query(
    addr: SocketAddr,
    name: &str,
    qtype: hickory_proto::rr::RecordType,
) -> hickory_proto::op::Message {
    use hickory_proto::op::{Message, Query};
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket.connect(addr).await.expect("connect");
    let mut request = Message::query();
    request.add_query(Query::query(name.parse().expect("name"), qtype));
    socket.send(&request.to_vec().expect("encode")).await.expect("send");
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(std::time::Duration::from_secs(3), socket.recv(&mut buf))
        .await
        .expect("reply in time")
        .expect("recv");
    Message::from_vec(&buf[..n]).expect("reply parses")
}
