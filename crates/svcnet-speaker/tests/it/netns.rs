//! A throw-away layer-2 network in namespaces the test creates: a bridge in its own namespace
//! and hosts (`node-a`, `node-b`, `client`) each with an `eth0` veth into it, on a test-only
//! /24 that overlaps no route of this machine. No namespace gets a default route; the root
//! namespace gets nothing. `Drop` deletes every namespace (and so every interface).
//!
//! Local stand-in for the NetnsGuard that `svcnet-testkit` is meant to provide.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::Duration;

pub struct Net {
    pub prefix: String,
    pub subnet: [u8; 3],
    namespaces: Vec<String>,
}

/// The host names and their last address octet.
pub const HOSTS: &[(&str, u8)] = &[("a", 2), ("b", 3), ("c", 10)];

fn run(argv: &[&str]) -> String {
    let out = Command::new(argv[0]).args(&argv[1..]).output().expect("spawn");
    assert!(out.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A /24 from a few candidates that overlaps no route of this machine.
fn free_subnet() -> [u8; 3] {
    let routes: Vec<serde_json::Value> =
        serde_json::from_str(&run(&["ip", "-j", "route", "show", "table", "all"]))
            .expect("ip -j route");
    let candidates: [[u8; 3]; 3] = [[10, 251, 77], [172, 31, 251], [192, 168, 251]];
    let overlaps = |candidate: &[u8; 3]| {
        let net = u32::from(Ipv4Addr::new(candidate[0], candidate[1], candidate[2], 0));
        routes.iter().filter_map(|r| r.get("dst")?.as_str()).any(|dst| {
            let (address, len) = dst.split_once('/').unwrap_or((dst, "32"));
            let (Ok(address), Ok(len)) = (address.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
                return false; // "default" adds no namespace route here, and IPv6 cannot clash.
            };
            let len = len.min(24);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            (u32::from(address) & mask) == (net & mask)
        })
    };
    *candidates.iter().find(|c| !overlaps(c)).expect("a free test subnet")
}

impl Net {
    /// Builds the network; `tag` keeps parallel tests apart.
    pub fn new(tag: &str) -> Net {
        let prefix = format!("spk{}{tag}", std::process::id() % 100_000);
        let subnet = free_subnet();
        let mut net = Net { prefix: prefix.clone(), subnet, namespaces: Vec::new() };
        let bridge = net.add_netns("br");
        run(&["ip", "-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &bridge, "link", "set", "br0", "up"]);
        for (host, octet) in HOSTS {
            let ns = net.add_netns(host);
            let port = format!("p-{host}");
            // The pair is created inside the host namespace, never in the root namespace.
            run(&[
                "ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port,
                "netns", &bridge,
            ]);
            run(&["ip", "-n", &bridge, "link", "set", &port, "master", "br0", "up"]);
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.address(*octet)),
                "dev",
                "eth0",
            ]);
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    fn add_netns(&mut self, host: &str) -> String {
        let ns = format!("{}-{host}", self.prefix);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        run(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        ns
    }

    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    pub fn address(&self, octet: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.subnet[0], self.subnet[1], self.subnet[2], octet)
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
        let ns = self.ns(host);
        let listener = in_netns(&ns, move || {
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
        let ns = self.ns(host);
        let socket = in_netns(&ns, || {
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

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Runs `f` on a fresh thread that has entered network namespace `ns`; sockets it creates
/// stay in `ns` wherever they are used later.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}
