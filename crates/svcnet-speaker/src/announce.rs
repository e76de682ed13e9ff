//! The effect of holding an address on the host: the address is added to the announce
//! interface (so the kernel answers ARP/NDP for it and accepts its traffic), gratuitous ARP
//! tells the neighbours' caches about the new owner, and releasing removes it again.
//!
//! Everything goes through `ip` and `arping` (package `iputils-arping`) via `tokio::process`,
//! as kube-proxy and MetalLB's users do by hand. IPv4 addresses carry the label `<if>:svlb`
//! so a restarted speaker finds and removes the addresses an earlier run left behind; IPv6
//! addresses have no labels, so they are tracked in an optional state file. Left out:
//! unsolicited neighbour advertisements for IPv6 (the address is added with `nodad` and
//! neighbours learn it on their next solicitation) and interface selection per address.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use tokio::process::Command;

use crate::error::{Error, Result};

/// The suffix of the IPv4 address label marking svcnet's addresses (`eth0:svlb`).
pub const LABEL_SUFFIX: &str = "svlb";

/// Adds, announces and removes LoadBalancer addresses on one interface.
#[derive(Debug, Clone)]
pub struct Announcer {
    pub interface: String,
    /// Run the tools inside this network namespace (`ip -n`, `ip netns exec`); `None` is the
    /// speaker's own namespace. Used by tests and tools that drive a namespace from outside.
    pub netns: Option<String>,
    /// How many gratuitous ARP packets to send on takeover (one per second; the first at once).
    pub garp_count: u32,
    /// Where to record the addresses added (needed to clean up IPv6 after a crash).
    pub state_file: Option<PathBuf>,
}

impl Announcer {
    pub fn new(interface: impl Into<String>) -> Self {
        Announcer { interface: interface.into(), netns: None, garp_count: 2, state_file: None }
    }

    /// The label for IPv4 addresses, when the interface name leaves room for it (labels are
    /// limited to 15 bytes like interface names).
    fn label(&self) -> Option<String> {
        let label = format!("{}:{LABEL_SUFFIX}", self.interface);
        (label.len() <= 15).then_some(label)
    }

    /// Adds `address` as a host address (`/32`, `/128`); adding an address that is already
    /// there succeeds.
    pub async fn add(&self, address: IpAddr) -> Result<()> {
        let mut args: Vec<String> = vec!["addr".into(), "replace".into()];
        match address {
            IpAddr::V4(_) => {
                args.extend([format!("{address}/32"), "dev".into(), self.interface.clone()]);
                if let Some(label) = self.label() {
                    args.extend(["label".into(), label]);
                }
            }
            IpAddr::V6(_) => {
                args.extend([
                    format!("{address}/128"),
                    "dev".into(),
                    self.interface.clone(),
                    "nodad".into(),
                ]);
            }
        }
        self.ip(&args).await?;
        self.record(address, true).await
    }

    /// Removes `address`; removing an address that is not there succeeds.
    pub async fn remove(&self, address: IpAddr) -> Result<()> {
        let prefix = if address.is_ipv4() { 32 } else { 128 };
        let args: Vec<String> = vec![
            "addr".into(),
            "del".into(),
            format!("{address}/{prefix}"),
            "dev".into(),
            self.interface.clone(),
        ];
        match self.ip(&args).await {
            Ok(()) => {}
            Err(Error::CommandFailed { stderr, .. })
                if stderr.contains("Cannot assign requested address")
                    || stderr.contains("not found") => {}
            Err(err) => return Err(err),
        }
        self.record(address, false).await
    }

    /// Sends gratuitous ARP for `address` (unsolicited ARP requests with sender = target =
    /// `address`), so neighbours that cached the previous owner's MAC switch at once. The
    /// first packet leaves immediately; the call returns after the last (about
    /// `garp_count - 1` seconds). IPv6 is a no-op (see the module doc).
    pub async fn announce(&self, address: IpAddr) -> Result<()> {
        if address.is_ipv6() || self.garp_count == 0 {
            return Ok(());
        }
        let argv: Vec<String> = vec![
            "arping".into(),
            "-U".into(),
            "-c".into(),
            self.garp_count.to_string(),
            "-I".into(),
            self.interface.clone(),
            address.to_string(),
        ];
        self.exec(argv).await.map(|_| ())
    }

    /// Addresses on the interface that an earlier run added: IPv4 ones with svcnet's label,
    /// and whatever the state file lists that is still on the interface.
    pub async fn ours(&self) -> Result<BTreeSet<IpAddr>> {
        let args: Vec<String> =
            vec!["-j".into(), "addr".into(), "show".into(), "dev".into(), self.interface.clone()];
        let out = self.exec(self.ip_argv(&args)).await?;
        let links: Vec<serde_json::Value> =
            serde_json::from_str(&out).map_err(Error::ParseAddresses)?;
        let recorded = self.recorded().await?;
        let label = self.label();
        let mut ours = BTreeSet::new();
        for info in links.iter().filter_map(|l| l.get("addr_info")?.as_array()).flatten() {
            let Some(address) =
                info.get("local").and_then(|v| v.as_str()).and_then(|s| s.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let labelled =
                label.is_some() && info.get("label").and_then(|v| v.as_str()) == label.as_deref();
            if labelled || recorded.contains(&address) {
                ours.insert(address);
            }
        }
        Ok(ours)
    }

    /// Removes every address an earlier run left behind; returns them.
    pub async fn remove_stale(&self) -> Result<BTreeSet<IpAddr>> {
        let stale = self.ours().await?;
        for address in &stale {
            self.remove(*address).await?;
        }
        Ok(stale)
    }

    async fn recorded(&self) -> Result<BTreeSet<IpAddr>> {
        let Some(path) = &self.state_file else {
            return Ok(BTreeSet::new());
        };
        match tokio::fs::read_to_string(path).await {
            Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
            Err(source) => Err(Error::StateFile { path: path.display().to_string(), source }),
        }
    }

    async fn record(&self, address: IpAddr, present: bool) -> Result<()> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let mut recorded = self.recorded().await?;
        let changed = if present { recorded.insert(address) } else { recorded.remove(&address) };
        if !changed {
            return Ok(());
        }
        let text: String = recorded.iter().map(|a| format!("{a}\n")).collect();
        // Write a sibling and rename, so a crash never leaves a torn file.
        let tmp = path.with_extension("tmp");
        let io = |source| Error::StateFile { path: path.display().to_string(), source };
        tokio::fs::write(&tmp, text).await.map_err(io)?;
        tokio::fs::rename(&tmp, path).await.map_err(io)
    }

    fn ip_argv(&self, args: &[String]) -> Vec<String> {
        let mut argv = vec!["ip".to_string()];
        if let Some(netns) = &self.netns {
            argv.extend(["-n".to_string(), netns.clone()]);
        }
        argv.extend(args.iter().cloned());
        argv
    }

    async fn ip(&self, args: &[String]) -> Result<()> {
        self.exec(self.ip_argv(args)).await.map(|_| ())
    }

    /// Runs `argv` (inside `netns` unless it is an `ip -n` call already) and returns stdout.
    async fn exec(&self, argv: Vec<String>) -> Result<String> {
        let argv = match &self.netns {
            Some(netns) if argv.first().map(String::as_str) != Some("ip") => {
                let mut wrapped =
                    vec!["ip".to_string(), "netns".into(), "exec".into(), netns.clone()];
                wrapped.extend(argv);
                wrapped
            }
            _ => argv,
        };
        let command = argv.join(" ");
        let (program, args) =
            argv.split_first().ok_or_else(|| Error::InvalidConfig("empty command".into()))?;
        let output = Command::new(program)
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| Error::Spawn { program: program.clone(), source })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            return Err(Error::CommandFailed { command, stderr });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}
