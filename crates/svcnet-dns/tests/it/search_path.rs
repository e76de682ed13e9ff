//! A program in a pod resolves with the C library, not `dig`: through `/etc/resolv.conf` with
//! the pod's search path and `ndots:5`. In a network namespace this test creates (root only;
//! skipped otherwise), the server answers on 127.0.0.1:53, the namespace's resolv.conf is a
//! pod's in `default`, and `getent hosts web.demo` and `curl http://web.demo/` must work, the
//! latter against a small HTTP server on the Service's ClusterIP inside the namespace.

use std::net::SocketAddr;

use svcnet_testkit::NetnsGuard;
use tokio_util::sync::CancellationToken;

use crate::harness::{fixture, test_config};

/// Removes `/etc/netns/<name>` (the resolv.conf `ip netns exec` mounts) on drop.
struct EtcGuard(std::path::PathBuf);

impl Drop for EtcGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn getent_and_curl_resolve_through_the_search_path() {
    if !svcnet_testkit::can_create_netns() {
        eprintln!("skipped: needs root to create a network namespace");
        return;
    }
    let netns = NetnsGuard::new("dns").expect("netns");
    let etc = EtcGuard(std::path::Path::new("/etc/netns").join(netns.name()));
    std::fs::create_dir_all(&etc.0).expect("etc dir");
    std::fs::write(
        etc.0.join("resolv.conf"),
        "nameserver 127.0.0.1\nsearch default.svc.cluster.local svc.cluster.local \
         cluster.local\noptions ndots:5\n",
    )
    .expect("resolv.conf");
    // The ClusterIP of `web.demo` (fixture), on the namespace's loopback, for curl.
    netns.exec(&["ip", "addr", "add", "10.96.0.20/32", "dev", "lo"]).expect("address");

    let cancel = CancellationToken::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let server = {
        let cancel = cancel.clone();
        netns.thread(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(serve(cancel, ready_tx))
        })
    };
    let addr = ready_rx.recv_timeout(std::time::Duration::from_secs(10)).expect("server ready");
    assert_eq!(addr.port(), 53);

    let getent = netns.command(&["getent", "hosts", "web.demo"]).output().expect("getent runs");
    let text = String::from_utf8_lossy(&getent.stdout);
    assert_eq!(text.split_whitespace().next(), Some("10.96.0.20"), "getent: {text}");
    let missing = netns.command(&["getent", "hosts", "nope.demo"]).output().expect("getent");
    assert!(!missing.status.success(), "a missing name does not resolve");
    let curl = netns
        .command(&["curl", "-s", "--connect-timeout", "2", "-m", "5", "http://web.demo/"])
        .output()
        .expect("curl runs");
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "web.demo\n", "{curl:?}");

    cancel.cancel();
    server.join().expect("server thread").expect("server ran");
}

/// Inside the namespace: the DNS server on 127.0.0.1:53 and an HTTP server on web's ClusterIP.
async fn serve(
    cancel: CancellationToken,
    ready: std::sync::mpsc::Sender<SocketAddr>,
) -> svcnet_testkit::anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = svcnet_dns::Config { listen: "127.0.0.1:53".parse()?, ..test_config() };
    let dns = svcnet_dns::serve_static(config, &fixture(), cancel.clone()).await?;
    let http = tokio::net::TcpListener::bind("10.96.0.20:80").await?;
    let _ = ready.send(dns.addr);
    loop {
        let (mut stream, _) = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            accepted = http.accept() => accepted?,
        };
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request).await?;
        stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nweb.demo\n").await?;
    }
}
