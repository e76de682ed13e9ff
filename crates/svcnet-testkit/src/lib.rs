//! Helpers shared by tests: network-namespace guards, a small node/pod/client topology, and a
//! real etcd ([`etcd`]).
//!
//! Everything here lives in named network namespaces (`ip netns add svcnet-test-…`) that the
//! test creates; the root namespace gets no address, route or rule. Namespaces get no default
//! route and no link to the outside. `Drop` deletes the namespaces and kills every process
//! left in them, also when the test panics. Tests that need root call [`can_create_netns`]
//! first and skip themselves when it returns false.
//!
//! Left out: IPv6 addressing (tests add it with [`NetnsGuard::exec`] when needed) and
//! anything that needs kernel modules (no `dummy` links here).

pub mod etcd;

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub use anyhow;
use anyhow::{Context, Result, bail};

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_suffix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}{n}", std::process::id(), nanos & 0xffff)
}

/// Whether this process may create network namespaces (root with `ip netns`).
pub fn can_create_netns() -> bool {
    let name = format!("svcnet-probe-{}", unique_suffix());
    let ok = Command::new("ip")
        .args(["netns", "add", &name])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
    }
    ok
}

/// Runs a command, failing with its stderr when it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> Result<Output> {
    let out =
        Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// A named network namespace, deleted (with its processes) on drop.
#[derive(Debug)]
pub struct NetnsGuard {
    name: String,
    children: Vec<Child>,
}

impl NetnsGuard {
    /// Creates `svcnet-test-<tag>-<unique>` with `lo` up and nothing else.
    pub fn new(tag: &str) -> Result<Self> {
        let name = format!("svcnet-test-{tag}-{}", unique_suffix());
        // Interface names derived from this are limited to 15 characters by the kernel; the
        // namespace name itself has no such limit.
        run("ip", &["netns", "add", &name])?;
        let guard = Self { name, children: Vec::new() };
        guard.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(guard)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` running `args` inside the namespace (`ip netns exec NAME …`).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Runs `args` inside the namespace and waits; fails with stderr on a non-zero exit.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        let out = self.command(args).output().with_context(|| format!("running {args:?}"))?;
        if !out.status.success() {
            bail!(
                "{} in {}: {}",
                args.join(" "),
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    /// Runs `args` inside the namespace with `stdin` as its input.
    pub fn exec_stdin(&self, args: &[&str], stdin: &[u8]) -> Result<Output> {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {args:?}"))?;
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(stdin)?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "{} in {}: {}",
                args.join(" "),
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    /// Starts a long-running process in the namespace; it is killed on drop.
    pub fn spawn(&mut self, args: &[&str]) -> Result<u32> {
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {args:?}"))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Runs `f` on a new thread that has entered this namespace (sockets it creates belong to
    /// the namespace, and so do processes it starts). Returns the thread's handle.
    pub fn thread<F, T>(&self, f: F) -> std::thread::JoinHandle<Result<T>>
    where
        F: FnOnce() -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path)?;
            f()
        })
    }

    /// Enters this namespace on the current thread. Only for threads the caller owns (never
    /// a thread of a multi-threaded async runtime).
    pub fn enter_current_thread(&self) -> Result<()> {
        enter(&format!("/var/run/netns/{}", self.name))
    }
}

fn enter(path: &str) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
    Ok(())
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Kill whatever else still runs in the namespace (`ip netns pids`).
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Picks a private /24 (`10.X.Y.0/24`) that overlaps nothing in the root namespace's routing
/// table (read only; nothing is added there).
pub fn unused_subnet() -> Result<Ipv4Addr> {
    let routes = run("ip", &["-4", "route", "show", "table", "all"])?;
    let text = String::from_utf8_lossy(&routes.stdout).to_string();
    let prefixes: Vec<(u32, u32)> = text
        .lines()
        .filter_map(|l| {
            let first = l
                .split_whitespace()
                .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
            let (addr, len) = match first.split_once('/') {
                Some((a, n)) => (a, n.parse::<u32>().ok()?),
                None => (first, 32),
            };
            let addr: Ipv4Addr = addr.parse().ok()?;
            Some((u32::from(addr), len))
        })
        .collect();
    let seed = std::process::id() ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(7919);
    for attempt in 0..1000u32 {
        let x = 200 + (seed.wrapping_add(attempt * 13) % 50);
        let y = seed.wrapping_add(attempt * 31) % 250;
        let candidate = u32::from(Ipv4Addr::new(10, x as u8, y as u8, 0));
        let overlaps = prefixes.iter().any(|(net, len)| {
            let len = (*len).min(24);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            (candidate & mask) == (net & mask)
        });
        if !overlaps {
            return Ok(Ipv4Addr::from(candidate));
        }
    }
    bail!("no unused 10.x.y.0/24 found")
}

/// A node namespace with a bridge, pod namespaces and a client namespace on that bridge.
///
/// Addresses (in the /24 chosen by [`unused_subnet`]): node `.1/24` on bridge `br0`; pod *i*
/// `.(10+i)/32`; client `.200/32`. Pods and the client route the whole subnet plus any extra
/// prefixes (`Topology::route`) via the node, so all traffic between them is routed by the
/// node (and sees its rules) rather than bridged. The node forwards and sends no redirects.
pub struct Topology {
    pub subnet: Ipv4Addr,
    pub node: NetnsGuard,
    pub pods: Vec<NetnsGuard>,
    pub client: NetnsGuard,
}

impl Topology {
    pub fn new(n_pods: usize) -> Result<Self> {
        let subnet = unused_subnet()?;
        let node = NetnsGuard::new("node")?;
        let client = NetnsGuard::new("client")?;
        let mut pods = Vec::new();
        for _ in 0..n_pods {
            pods.push(NetnsGuard::new("pod")?);
        }
        let topo = Self { subnet, node, pods, client };
        let n = &topo.node;
        n.exec(&["ip", "link", "add", "br0", "type", "bridge"])?;
        n.exec(&["ip", "addr", "add", &format!("{}/24", topo.node_ip()), "dev", "br0"])?;
        n.exec(&["ip", "link", "set", "br0", "up"])?;
        for knob in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.send_redirects=0",
            "net.ipv4.conf.br0.send_redirects=0",
            "net.ipv4.conf.default.send_redirects=0",
        ] {
            n.exec(&["sysctl", "-qw", knob])?;
        }
        // Bridged frames must not traverse the IP hooks twice (br_netfilter is per netns).
        let _ = n.exec(&["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"]);
        for (i, pod) in topo.pods.iter().enumerate() {
            topo.attach(pod, &format!("p{i}"), topo.pod_ip(i))?;
        }
        topo.attach(&topo.client, "cl", topo.client_ip())?;
        Ok(topo)
    }

    fn host(&self, last: u8) -> Ipv4Addr {
        let o = self.subnet.octets();
        Ipv4Addr::new(o[0], o[1], o[2], last)
    }

    pub fn node_ip(&self) -> Ipv4Addr {
        self.host(1)
    }

    pub fn pod_ip(&self, i: usize) -> Ipv4Addr {
        self.host(10 + i as u8)
    }

    pub fn client_ip(&self) -> Ipv4Addr {
        self.host(200)
    }

    /// The subnet as `10.x.y.0/24`.
    pub fn cidr(&self) -> String {
        format!("{}/24", self.subnet)
    }

    fn attach(&self, ns: &NetnsGuard, tag: &str, ip: Ipv4Addr) -> Result<()> {
        let host_end = format!("v{tag}");
        self.node.exec(&[
            "ip",
            "link",
            "add",
            &host_end,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ])?;
        self.node.exec(&["ip", "link", "set", &host_end, "master", "br0", "up"])?;
        ns.exec(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
        ns.exec(&["ip", "link", "set", "eth0", "up"])?;
        ns.exec(&[
            "ip",
            "route",
            "add",
            &self.node_ip().to_string(),
            "dev",
            "eth0",
            "scope",
            "link",
        ])?;
        ns.exec(&[
            "ip",
            "route",
            "add",
            &self.cidr(),
            "via",
            &self.node_ip().to_string(),
            "dev",
            "eth0",
        ])?;
        ns.exec(&["sysctl", "-qw", "net.ipv4.conf.all.accept_redirects=0"])?;
        Ok(())
    }

    /// Routes `prefix` (service or load-balancer addresses) via the node from every pod and
    /// the client.
    pub fn route(&self, prefix: &str) -> Result<()> {
        for ns in self.pods.iter().chain([&self.client]) {
            ns.exec(&[
                "ip",
                "route",
                "add",
                prefix,
                "via",
                &self.node_ip().to_string(),
                "dev",
                "eth0",
            ])?;
        }
        // The node needs a route too, or locally generated packets to the prefix fail before
        // the output hook; send them to the bridge (they are DNATed before leaving).
        self.node.exec(&["ip", "route", "add", prefix, "dev", "br0"])?;
        Ok(())
    }
}
