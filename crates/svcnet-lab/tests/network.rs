//! Builds the lab's network for real (namespaces, veths, bridge, router firewall), checks who
//! reaches whom with real packets, and checks that `down` leaves nothing behind.

use std::process::Command;

/// The lab's namespaces (other engineers' tests create their own namespaces concurrently).
fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("svcnet-lab-"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A TCP connect from one lab host to an address, with a short timeout.
fn connects(from: &str, addr: &str, port: u16) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("svcnet-lab-{from}"),
            "timeout",
            "2",
            "bash",
            "-c",
            &format!("echo > /dev/tcp/{addr}/{port}"),
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

struct Listener(std::process::Child);
impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn listen(host: &str, port: u16) -> Listener {
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("svcnet-lab-{host}"),
            "nc",
            "-lk",
            "-p",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("nc");
    Listener(child)
}

#[tokio::test(flavor = "current_thread")]
async fn network_up_reachability_and_down() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let before = netns_list();
    assert!(!before.contains("svcnet-lab-"), "a lab is already up: {before}");
    let dir = tempfile::tempdir().expect("tempdir");
    let state = svcnet_lab::up_network(dir.path()).await.expect("lab network up");
    let result = std::panic::AssertUnwindSafe(async {
        let t = &state.topology;
        let node1 = t.host("node-1").expect("node-1").address.to_string();
        let vm1 = t.host("vm-1").expect("vm-1").address.to_string();
        let _l1 = listen("node-1", 8080);
        let _l2 = listen("vm-1", 8080);
        // Wait until both listeners accept (readiness, not a fixed sleep).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !(connects("node-1", "127.0.0.1", 8080) && connects("vm-1", "127.0.0.1", 8080)) {
            assert!(std::time::Instant::now() < deadline, "listeners did not start");
        }
        assert!(connects("vm-1", &node1, 8080), "vm-1 reaches node-1 on the VPC");
        assert!(connects("control-plane", &vm1, 8080), "the VPC is one L2 network");
        assert!(!connects("internet", &vm1, 8080), "the router keeps the internet out of the VPC");
        assert!(
            !connects("internet", &node1, 8080),
            "the router keeps the internet out of the VPC"
        );
        svcnet_lab::set_link(dir.path(), "node-1", false).await.expect("fail node-1");
        assert!(!connects("vm-1", &node1, 8080), "a failed node is cut off");
        svcnet_lab::set_link(dir.path(), "node-1", true).await.expect("heal node-1");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !connects("vm-1", &node1, 8080) {
            assert!(std::time::Instant::now() < deadline, "a healed node is reachable again");
        }
    });
    let outcome = futures::FutureExt::catch_unwind(result).await;
    svcnet_lab::down(dir.path()).await.expect("lab down");
    svcnet_lab::down(dir.path()).await.expect("lab down is safe twice");
    assert_eq!(netns_list(), before, "down removes every namespace");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
