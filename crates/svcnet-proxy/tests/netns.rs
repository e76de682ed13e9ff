//! The data planes in network namespaces the test creates: a node namespace holding the
//! rules, pod namespaces running echo backends, a client namespace making real connections.
//! Skips itself when namespaces cannot be created (not root).

mod netns {
    mod affinity;
    pub mod echo;
    pub mod scenario;
}

use netns::scenario::{Kind, run_scenario};

#[test]
fn nftables_data_plane() {
    run_scenario(Kind::Nftables);
}

#[test]
fn iptables_data_plane() {
    run_scenario(Kind::Iptables);
}

#[test]
fn iptables_legacy_data_plane() {
    if std::path::Path::new("/usr/sbin/iptables-legacy-restore").exists() {
        run_scenario(Kind::IptablesLegacy);
    }
}

#[test]
fn userspace_data_plane() {
    run_scenario(Kind::Userspace);
}
