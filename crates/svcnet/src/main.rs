//! The `svcnet` binary: one command per component, as fixed in `shared/design/overview.md`.
//!
//! Each subcommand lives in `cmd/<name>.rs` with its clap arguments and a `run` function;
//! this file only parses, installs logging and maps errors to a one-line message and exit code.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "svcnet", version, about = "Kubernetes Service networking, end to end", long_about = None)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax); also read from RUST_LOG.
    #[arg(long, global = true, env = "SVCNET_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// All-in-one: API server, controllers, one node, DNS, embedded store (loopback mode, no
    /// root; or, as root with --dataplane nftables|iptables, in its own network namespace).
    Up(cmd::up::Args),
    /// The Kubernetes-compatible API server (with the controllers unless --no-controllers).
    Server(cmd::server::Args),
    /// The controllers alone (IPAM, EndpointSlices, LoadBalancer pools, node health).
    Controllers(cmd::controllers::Args),
    /// The node agent: proxy and pod runner for one node.
    Node(cmd::node::Args),
    /// The node proxy alone (a kube-proxy replacement), or offline with --objects.
    Proxy(cmd::proxy::Args),
    /// Cluster DNS.
    Dns(cmd::dns::Args),
    /// The network-namespace lab.
    Lab(cmd::lab::Args),
    /// Test backend: answers TCP, UDP and HTTP with its pod name, pod IP and the client it saw.
    Echo(cmd::echo::Args),
    /// Explain the path of a connection (not built yet).
    Trace(cmd::trace::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cmd::init_tracing(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("svcnet: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => cmd::up::run(args).await,
            Command::Server(args) => cmd::server::run(args).await,
            Command::Controllers(args) => cmd::controllers::run(args).await,
            Command::Node(args) => cmd::node::run(args).await,
            Command::Proxy(args) => cmd::proxy::run(args).await,
            Command::Dns(args) => cmd::dns::run(args).await,
            Command::Lab(args) => cmd::lab::run(args).await,
            Command::Echo(args) => cmd::echo::run(args).await,
            Command::Trace(args) => cmd::trace::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(cmd::NotBuilt(what)) = err.downcast_ref::<cmd::NotBuilt>() {
                eprintln!("svcnet: {what}: not built yet");
                return ExitCode::from(2);
            }
            eprintln!("svcnet: {err:#}");
            ExitCode::FAILURE
        }
    }
}
