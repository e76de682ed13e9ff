//! The LoadBalancer speaker: announces Service LoadBalancer addresses on a layer-2 network
//! the way MetalLB's L2 mode, Cilium's L2 announcements and kube-vip do.
//!
//! For each address one eligible node is elected through a `coordination.k8s.io/v1` Lease
//! per address (`elect` decides, `lease` writes with optimistic concurrency); the holder adds
//! the address to its interface, so its kernel answers ARP for it, and sends gratuitous ARP
//! on takeover (`announce`). When the holder stops renewing, the next node in rendezvous
//! order, preferring another zone, takes over after the Lease duration (default 1 s).
//!
//! Deliberately absent: BGP, IPv6 unsolicited neighbour advertisements, per-pool interface
//! and node selection, and moving an address back to its preferred node (addresses stay
//! where they are until their holder fails or becomes ineligible).

pub mod announce;
pub mod elect;
pub mod error;
pub mod lease;
pub mod speaker;

use std::path::PathBuf;
use std::time::Duration;

pub use announce::Announcer;
pub use error::{Error, Result};
pub use speaker::{Speaker, announcers};
use tokio_util::sync::CancellationToken;

/// How one node's speaker behaves. `Default` suits the lab: `eth0`, Leases in `kube-system`,
/// a 1 s Lease renewed every 250 ms.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name: the Lease holderIdentity and the Node object it checks for Ready.
    pub node_name: String,
    /// This node's zone, used when its Node has no `topology.kubernetes.io/zone` label.
    pub zone: String,
    /// The interface on the network where addresses are announced.
    pub interface: String,
    /// Run `ip`/`arping` inside this network namespace (`None`: the speaker's own); for tests.
    pub netns: Option<String>,
    /// Where the Leases live.
    pub lease_namespace: String,
    /// The Lease duration: another node takes over after this long without a renewal.
    /// `leaseDurationSeconds` carries it rounded up to whole seconds; the precise value goes
    /// in the `svcnet.io/lease-duration-ms` annotation, which speakers honour (so 600 ms works).
    pub lease_duration: Duration,
    /// How often the holder renews.
    pub renew_interval: Duration,
    /// How long the node at position `r` of an address's preference order waits, `r` times,
    /// before taking a free Lease (so the preferred node normally wins and addresses spread).
    pub takeover_grace: Duration,
    /// Every Lease request gives up after this long.
    pub request_timeout: Duration,
    /// Gratuitous ARP packets sent on takeover (one per second; the first at once).
    pub garp_count: u32,
    /// A file recording the addresses added (lets a restart clean up IPv6 addresses too).
    pub state_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_name: String::new(),
            zone: String::new(),
            interface: "eth0".into(),
            netns: None,
            lease_namespace: "kube-system".into(),
            lease_duration: Duration::from_secs(1),
            renew_interval: Duration::from_millis(250),
            takeover_grace: Duration::from_millis(250),
            request_timeout: Duration::from_millis(500),
            garp_count: 2,
            state_file: None,
        }
    }
}

impl Config {
    /// The timeout of one Lease request: at most half the Lease duration, so an answer that
    /// arrives still leaves time to hold the address.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout.min(self.lease_duration / 2)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.node_name.is_empty() {
            return Err(Error::InvalidConfig("node_name is empty".into()));
        }
        if self.interface.is_empty() {
            return Err(Error::InvalidConfig("interface is empty".into()));
        }
        let duration = self.lease_duration;
        if duration < Duration::from_millis(100) {
            return Err(Error::InvalidConfig(format!(
                "lease_duration {duration:?} is below 100ms"
            )));
        }
        if self.renew_interval.is_zero() || self.renew_interval * 2 > duration {
            return Err(Error::InvalidConfig(format!(
                "renew_interval {:?} must be positive and at most half the lease duration {duration:?}",
                self.renew_interval
            )));
        }
        Ok(())
    }

    pub(crate) fn announcer(&self) -> Announcer {
        Announcer {
            interface: self.interface.clone(),
            netns: self.netns.clone(),
            garp_count: self.garp_count,
            state_file: self.state_file.clone(),
        }
    }
}

/// Runs a speaker for this node until `cancel`; then removes its addresses and releases its
/// Leases. Use `Speaker::new` + `Speaker::held` to also watch what it announces.
pub async fn run(client: kube::Client, config: Config, cancel: CancellationToken) -> Result<()> {
    Speaker::new(client, config).run(cancel).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_checks() {
        let named = Config { node_name: "node-1".into(), ..Config::default() };
        assert!(named.validate().is_ok());
        assert!(Config::default().validate().is_err(), "a node name is required");
        let slow_renew = Config { renew_interval: Duration::from_millis(600), ..named.clone() };
        assert!(slow_renew.validate().is_err(), "renewing less than twice per lease is refused");
        let short = Config {
            lease_duration: Duration::from_millis(600),
            renew_interval: Duration::from_millis(150),
            ..named
        };
        assert!(short.validate().is_ok());
        assert_eq!(short.request_timeout(), Duration::from_millis(300));
    }
}
