//! A throw-away layer-2 network in namespaces the test creates: a bridge in its own namespace
//! and hosts (`node-a`, `node-b`, `client`) each with an `eth0` veth into it, on a test-only
//! /24 that overlaps no route of this machine. No namespace gets a default route; the root
//! namespace gets nothing. The namespaces are `svcnet_testkit::NetnsGuard`s: dropping the `Net`
//! deletes them (and so every interface), also when the test fails.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use svcnet_testkit::NetnsGuard;

pub struct Net {
    subnet: Ipv4Addr,
    hosts: Vec<(&'static str, NetnsGuard)>,
    /// Dropped last, after the hosts whose veth peers it holds.
    _bridge: NetnsGuard,
}

/// The host names and their last address octet.
pub const HOSTS: &[(&str, u8)] = &[("a", 2), ("b", 3), ("c", 10)];

fn run(argv: &[&str]) -> String {
    let out = Command::new(argv[0]).args(&argv[1..]).output().expect("spawn");
    assert!(out.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Net {
    /// Builds the network; `tag` names its namespaces.
    pub fn new(tag: &str) -> Net {
        let subnet = svcnet_testkit::unused_subnet().expect("a free test subnet");
        let bridge = NetnsGuard::new(&format!("spk-{tag}-br")).expect("bridge namespace");
        bridge.exec(&["ip", "link", "add", "br0", "type", "bridge"]).expect("bridge");
        bridge.exec(&["ip", "link", "set", "br0", "up"]).expect("bridge up");
        let mut net = Net { subnet, hosts: Vec::new(), _bridge: bridge };
        for (host, octet) in HOSTS {
            let ns = NetnsGuard::new(&format!("spk-{tag}-{host}")).expect("host namespace");
            let port = format!("p-{host}");
            // The pair is created inside the host namespace, never in the root namespace.
            run(&[
                "ip",
                "-n",
                ns.name(),
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                net._bridge.name(),
            ]);
            net._bridge.exec(&["ip", "link", "set", &port, "master", "br0", "up"]).expect("port");
            let cidr = format!("{}/24", net.address(*octet));
            ns.exec(&["ip", "addr", "add", &cidr, "dev", "eth0"]).expect("address");
            ns.exec(&["ip", "link", "set", "eth0", "up"]).expect("eth0 up");
            net.hosts.push((host, ns));
        }
        net
    }

    pub fn ns(&self, host: &str) -> String {
        let (_, guard) = self.hosts.iter().find(|(h, _)| *h == host).expect("a host of HOSTS");
        guard.name().to_string()
    }

    pub fn address(&self, octet: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.subnet.octets();
        Ipv4Addr::new(a, b, c, octet)
    }

    pub fn mac(&self, host: &str) -> String {
        let out = run(&["ip", "-n", &self.ns(host), "-j", "link", "show", "dev", "eth0"]);
        let links: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
        links[0]["address"].as_str().expect("mac").to_string()
    }

    /// The MAC `host` has cached for `address`, if any.
    pub fn neighbour(&self, host: &str, address: IpAddr) -> Option<String> {
        let out = run(&[
            "ip",
            "-n",
            &self.ns(host),
            "-j",
            "neigh",
            "show",
            "to",
            &address.to_string(),
            "dev",
            "eth0",
        ]);
        let entries: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
        entries.first()?.get("lladdr")?.as_str().map(str::to_string)
    }

    pub fn has_address(&self, host: &str, address: IpAddr) -> bool {
        run(&["ip", "-n", &self.ns(host), "-o", "addr", "show", "dev", "eth0"])
            .contains(&format!(" {address}/"))
    }

    /// A TCP listener on `0.0.0.0:port` inside `host` that answers every connection with the
    /// host's name, served on the test's runtime.
    pub fn serve_name(&self, host: &str, port: u16) {
        let listener = in_netns(self, host, move || {
            let listener = std::net::TcpListener::bind(("0.0.0.0", port)).expect("bind");
            listener.set_nonblocking(true).expect("nonblocking");
            listener
        });
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let name = host.to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = stream.write_all(name.as_bytes()).await;
            }
        });
    }

    /// Connects from `host` to `target` and returns what the server said, or `None` on
    /// failure within `timeout`.
    pub async fn ask(&self, host: &str, target: SocketAddr, timeout: Duration) -> Option<String> {
        let socket = in_netns(self, host, || {
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket")
        });
        socket.set_nonblocking(true).expect("nonblocking");
        let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
        let exchange = async {
            let mut stream = socket.connect(target).await.ok()?;
            let mut answer = String::new();
            use tokio::io::AsyncReadExt;
            stream.read_to_string(&mut answer).await.ok()?;
            Some(answer)
        };
        tokio::time::timeout(timeout, exchange).await.ok().flatten()
    }
}

/// Runs `f` on a fresh thread inside `host`'s namespace; sockets it creates stay there
/// wherever they are used later.
fn in_netns<T: Send + 'static>(net: &Net, host: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (_, guard) = net.hosts.iter().find(|(h, _)| *h == host).expect("a host of HOSTS");
    guard.thread(move || Ok(f())).join().expect("netns thread").expect("entering the namespace")
}
