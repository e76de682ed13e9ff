//! Data planes: the only part of the proxy that acts (kernel rules or sockets).

pub mod iptables;
pub mod nftables;
pub mod userspace;

use futures::future::BoxFuture;

use crate::{ProxyPlan, Result};

/// A data plane programs plans. The first `apply` reconciles whatever is already programmed
/// (rules left by an earlier run) with the plan; later calls apply only the difference from
/// the previous plan. `apply` is all-or-nothing per call where the mechanism allows it
/// (one `nft -f` transaction, one `iptables-restore`).
pub trait DataPlane: Send {
    /// The name used by `--dataplane` (`nftables`, `iptables`, `userspace`).
    fn name(&self) -> &'static str;
    /// Programs `plan`.
    fn apply<'a>(&'a mut self, plan: &'a ProxyPlan) -> BoxFuture<'a, Result<()>>;
    /// Removes everything this data plane programmed (`svcnet proxy --cleanup`).
    fn cleanup(&mut self) -> BoxFuture<'_, Result<()>>;
    /// Stops the data plane when the proxy stops. Kernel data planes leave their rules in
    /// place (the next start reconciles them, and established connections never notice);
    /// the userspace one stops accepting at once and serves its established connections for
    /// up to its drain timeout.
    fn shutdown(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}
