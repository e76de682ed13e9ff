//! Serves a JSON `List` of objects without an API server, for `bench/dns/run.sh`:
//! `serve_static OBJECTS.json ADDR [UDP_WORKERS]`. Stops on Ctrl-C or SIGTERM.
//! `SVCNET_DNS_ANSWER_CACHE=0` turns the UDP answer cache off and `SVCNET_DNS_UDP_BATCH=N`
//! sets the `recvmmsg` batch (1: one system call per datagram), to compare with the defaults.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: serve_static OBJECTS.json ADDR [UDP_WORKERS]")?;
    let listen = args.next().ok_or("missing ADDR")?.parse()?;
    let udp_workers = args.next().map(|n| n.parse()).transpose()?.unwrap_or(0);
    let objects = svcnet_dns::Objects::from_list_json(&std::fs::read_to_string(path)?)?;
    let cancel = CancellationToken::new();
    let defaults = svcnet_dns::Config::default();
    let answer_cache = std::env::var("SVCNET_DNS_ANSWER_CACHE").map_or(true, |value| value != "0");
    let udp_batch = match std::env::var("SVCNET_DNS_UDP_BATCH") {
        Ok(value) => value.parse()?,
        Err(_) => defaults.udp_batch,
    };
    let config = svcnet_dns::Config {
        listen,
        udp_workers,
        answer_cache,
        udp_batch,
        metrics_address: None,
        resolv_conf: "/nonexistent".into(),
        pods: svcnet_dns::PodMode::Verified,
        upstream_timeout: Duration::from_secs(1),
        ..defaults
    };
    let handle = svcnet_dns::serve_static(config, &objects, cancel.clone()).await?;
    // Like `run`: Services, EndpointSlices and Namespaces as the reflector stores hold them,
    // Pods as namespace and IPs (what the pod watch keeps).
    let zone = handle.zone();
    eprintln!(
        "serving {} services, {} names on {}",
        zone.n_services(),
        zone.n_names(),
        handle.addr
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    cancel.cancel();
    Ok(())
}
