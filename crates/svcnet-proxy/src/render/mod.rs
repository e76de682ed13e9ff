//! Plan → rule text, pure. Golden tests pin the output.

pub mod iptables;
pub mod nftables;

#[cfg(test)]
pub(crate) mod testplans;
