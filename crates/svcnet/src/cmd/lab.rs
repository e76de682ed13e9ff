//! `svcnet lab …`: the network-namespace lab (internet, router, VPC, control plane, two nodes
//! in two zones, a VM outside the cluster): `up`, `down`, `status`, `check`, `exec`, `fail`,
//! `heal`, and two hidden helpers that `up` starts (`forward`, `workloads`).

use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the lab keeps its state, logs and kubeconfig.
    #[arg(long, global = true, default_value = "/var/lib/svcnet-lab")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(clap::Subcommand, Debug)]
enum LabCommand {
    /// Build the lab and start svcnet in it.
    Up {
        #[arg(long, default_value = "nftables", value_parser = ["nftables", "iptables", "userspace"])]
        dataplane: String,
        /// Build only the network (namespaces, links, router), start no svcnet process.
        #[arg(long)]
        network_only: bool,
    },
    /// Remove every namespace, interface, rule and process the lab created (safe to run twice).
    Down,
    /// Print hosts, zones and addresses.
    Status {
        #[arg(long, short, default_value = "table", value_parser = ["table", "json"])]
        output: String,
    },
    /// Run the reachability matrix for real; exits non-zero on any mismatch.
    Check {
        #[arg(long, short, default_value = "table", value_parser = ["table", "json"])]
        output: String,
    },
    /// Run a command inside a lab host: internet, router, control-plane, node-1, node-2, vm-1,
    /// pod/NAME[.NAMESPACE].
    Exec {
        host: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Cut a node off the VPC (link down).
    Fail { host: String },
    /// Bring a failed node back.
    Heal { host: String },
    /// Internal: the loopback forward from the host into a lab namespace.
    #[command(hide = true)]
    Forward {
        #[arg(long)]
        netns: String,
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        to: std::net::SocketAddr,
    },
    /// Internal: the workload controllers (Deployments, ReplicaSets, scheduler), which
    /// `svcnet server` does not run yet.
    #[command(hide = true)]
    Workloads {
        #[arg(long)]
        kubeconfig: PathBuf,
    },
}

fn load_state(data_dir: &std::path::Path) -> anyhow::Result<svcnet_lab::LabState> {
    svcnet_lab::LabState::load(data_dir)?
        .ok_or_else(|| anyhow::anyhow!("the lab is not up (no state in {})", data_dir.display()))
}

async fn lab_client(data_dir: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = data_dir.join("kubeconfig");
    anyhow::ensure!(
        kubeconfig.exists(),
        "the lab's cluster is not running (no {}; was it `lab up --network-only`?)",
        kubeconfig.display()
    );
    Ok(svcnet_lab::cluster::client(&kubeconfig).await?)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let data_dir = args.data_dir;
    match args.command {
        LabCommand::Up { dataplane, network_only } => {
            require_root()?;
            let mut state = svcnet_lab::up_network(&data_dir)
                .await
                .context("while building the lab network")?;
            if network_only {
                println!("lab network is up (state in {})", data_dir.display());
                return Ok(());
            }
            let config = svcnet_lab::orchestrate::UpConfig::new(
                data_dir.clone(),
                dataplane,
                std::env::current_exe().context("while locating the svcnet binary")?,
            );
            let started = std::time::Instant::now();
            match svcnet_lab::orchestrate::start_cluster(&config, &mut state).await {
                Ok(kubeconfig) => {
                    println!(
                        "lab is up in {:.1}s; kubeconfig: {}",
                        started.elapsed().as_secs_f64(),
                        kubeconfig.display()
                    );
                    println!("next: KUBECONFIG={} kubectl get nodes", kubeconfig.display());
                    Ok(())
                }
                Err(err) => {
                    let _ = svcnet_lab::down(&data_dir).await;
                    Err(err).context("while starting svcnet in the lab (the lab was removed again)")
                }
            }
        }
        LabCommand::Down => {
            require_root()?;
            svcnet_lab::down(&data_dir).await.context("while removing the lab")?;
            println!("lab is down");
            Ok(())
        }
        LabCommand::Status { output } => {
            let state = load_state(&data_dir)?;
            // Services come from the API when the cluster runs (not after `up --network-only`).
            let services = match lab_client(&data_dir).await {
                Ok(client) => Some(
                    svcnet_lab::cluster::services(&client)
                        .await
                        .context("while listing Services")?,
                ),
                Err(_) => None,
            };
            if output == "json" {
                let json = serde_json::json!({
                    "topology": state.topology,
                    "failed": state.failed,
                    "apiPort": state.forward_port,
                    "services": services,
                });
                println!("{}", serde_json::to_string_pretty(&json)?);
                return Ok(());
            }
            println!("{:<14} {:<10} {:<8} {:<16} POD CIDR", "HOST", "ROLE", "ZONE", "ADDRESS");
            for h in &state.topology.hosts {
                let role = serde_json::to_value(h.role)?.as_str().unwrap_or_default().to_string();
                println!(
                    "{:<14} {:<10} {:<8} {:<16} {}",
                    h.name,
                    role,
                    h.zone.as_deref().unwrap_or("-"),
                    h.address,
                    h.pod_cidr.map(|c| c.to_string()).unwrap_or_else(|| "-".into())
                );
            }
            let t = &state.topology;
            println!();
            println!(
                "VPC {}  internal LB pool {}  external LB pool {}  services {}",
                t.vpc, t.internal_lb, t.external_lb, t.service_cidr
            );
            if let Some(port) = state.forward_port {
                println!(
                    "API: https://127.0.0.1:{port} (kubeconfig {})",
                    data_dir.join("kubeconfig").display()
                );
            }
            if !state.failed.is_empty() {
                println!("failed hosts: {}", state.failed.join(", "));
            }
            if let Some(services) = &services {
                println!();
                println!(
                    "{:<28} {:<13} {:<15} {:<15} {:<11} ANNOUNCED BY",
                    "SERVICE", "TYPE", "CLUSTER-IP", "LB IP", "NODE PORTS"
                );
                for s in services {
                    let ports: Vec<String> = s.node_ports.iter().map(i32::to_string).collect();
                    println!(
                        "{:<28} {:<13} {:<15} {:<15} {:<11} {}",
                        format!("{}/{}", s.namespace, s.name),
                        s.type_,
                        s.cluster_ip.as_deref().unwrap_or("-"),
                        s.load_balancer_ip.as_deref().unwrap_or("-"),
                        if ports.is_empty() { "-".to_string() } else { ports.join(",") },
                        s.announced_by.as_deref().unwrap_or(if s.load_balancer_ip.is_some() {
                            "(nobody)"
                        } else {
                            "-"
                        })
                    );
                }
            }
            Ok(())
        }
        LabCommand::Check { output } => {
            let state = load_state(&data_dir)?;
            let client = lab_client(&data_dir).await?;
            let plan = svcnet_lab::cluster::check_plan(&client, &state)
                .await
                .context("while planning the check")?;
            let report = svcnet_lab::check::run(&plan).await;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", svcnet_lab::check::render_report(&report));
            }
            if !report.ok {
                anyhow::bail!("the reachability check failed");
            }
            Ok(())
        }
        LabCommand::Workloads { kubeconfig } => {
            let client = svcnet_lab::cluster::client(&kubeconfig).await?;
            let cancel = tokio_util::sync::CancellationToken::new();
            let stop = cancel.clone();
            tokio::spawn(async move {
                super::shutdown_signal().await;
                stop.cancel();
            });
            svcnet_workloads::run(client, svcnet_workloads::Config::default(), cancel)
                .await
                .context("while running the workload controllers")?;
            Ok(())
        }
        LabCommand::Exec { host, command } => {
            let state = load_state(&data_dir)?;
            let netns = match host.strip_prefix("pod/") {
                Some(pod) => {
                    let client = lab_client(&data_dir).await?;
                    let pod = svcnet_lab::cluster::find_pod(&client, pod).await?;
                    svcnet_lab::cluster::find_pod_netns(&pod).await?
                }
                None => state
                    .topology
                    .host(&host)
                    .ok_or_else(|| svcnet_lab::Error::UnknownHost(host.clone()))?
                    .netns
                    .clone(),
            };
            let status = tokio::process::Command::new("ip")
                .args(["netns", "exec", &netns])
                .args(&command)
                .status()
                .await
                .context("while running ip netns exec")?;
            std::process::exit(status.code().unwrap_or(1));
        }
        LabCommand::Fail { host } => {
            svcnet_lab::set_link(&data_dir, &host, false).await?;
            println!("{host} is cut off the VPC");
            Ok(())
        }
        LabCommand::Heal { host } => {
            svcnet_lab::set_link(&data_dir, &host, true).await?;
            println!("{host} is back on the VPC");
            Ok(())
        }
        LabCommand::Forward { netns, listen, to } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("while listening on {listen}"))?;
            let cancel = tokio_util::sync::CancellationToken::new();
            let stop = cancel.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                stop.cancel();
            });
            svcnet_lab::forward::forward(listener, &netns, to, cancel).await?;
            Ok(())
        }
    }
}

fn require_root() -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        anyhow::bail!("the lab needs root (it creates network namespaces)");
    }
    Ok(())
}
