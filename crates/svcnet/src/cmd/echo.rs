//! `svcnet echo`: the test backend. Answers TCP, UDP and HTTP on one port with its pod name,
//! pod IP and the client address it saw; logs every request on stdout (for `kubectl logs`).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use svcnet_agent::echo::{EchoConfig, EchoRequest, EchoServer};
use tokio_util::sync::CancellationToken;

/// Answers TCP (a line), UDP (a datagram) and HTTP/1.1 (JSON) on the same address.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on (TCP and UDP), for example 0.0.0.0:8080 or $(POD_IP):8080.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// The name to report; defaults to $POD_NAME, else the host name.
    #[arg(long)]
    name: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = EchoConfig::from_env(args.listen);
    if let Some(name) = args.name {
        config.pod_name = name;
    }
    config.on_request = Some(Arc::new(|request: &EchoRequest| {
        let time = k8s_openapi::jiff::Timestamp::now();
        if request.path.is_empty() {
            println!("{time} {} from {}", request.protocol, request.client);
        } else {
            println!("{time} {} from {} path {}", request.protocol, request.client, request.path);
        }
    }));
    let server = EchoServer::bind(config.clone())
        .await
        .with_context(|| format!("while listening on {}", args.listen))?;
    let addr = server.local_addr()?;
    println!(
        "svcnet echo: pod {} ({}) listening on {addr} (tcp, udp, http)",
        config.pod_name, config.pod_ip
    );
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        stop.cancel();
    });
    server.serve(cancel).await?;
    Ok(())
}
