//! `svcnet up`: the API server, the controllers, one node (pods and proxy) and DNS in one
//! process with the embedded store.
//!
//! Two modes. The default (loopback) needs no root and no routes: the userspace data plane,
//! with the Service, pod and LoadBalancer ranges inside 127.0.0.0/8, so every address is local
//! to the host. Without root, ports below 1024 (a Service on port 80, DNS on 53) need
//! `CAP_NET_BIND_SERVICE` or `net.ipv4.ip_unprivileged_port_start`; the proxy reports the
//! Services it cannot serve. As root, `--dataplane nftables|iptables` puts the node, its pods
//! and the Service addresses in a network namespace svcnet creates ([`root`]); the host keeps
//! no address, route or rule of it and reaches the API server through a 127.0.0.1 forward.

mod root;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;

/// The ranges of `svcnet up` in its default (loopback) mode.
pub const SERVICE_RANGE: &str = "127.96.0.0/16";
pub const POD_RANGE: &str = "127.244.0.0/16";
pub const INTERNAL_LB_RANGE: &str = "127.240.0.0/24";
pub const EXTERNAL_LB_RANGE: &str = "127.241.0.0/24";
/// The `kube-dns` Service address: the tenth of the Service range, as in Kubernetes.
pub const DNS_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(127, 96, 0, 10);

/// The address plan of one mode.
#[derive(Clone, Copy, Debug)]
pub struct Ranges {
    pub service: &'static str,
    pub pod: &'static str,
    pub internal_lb: &'static str,
    pub external_lb: &'static str,
    pub dns: Ipv4Addr,
}

/// Loopback mode: everything inside 127.0.0.0/8.
pub const LOOPBACK: Ranges = Ranges {
    service: SERVICE_RANGE,
    pod: POD_RANGE,
    internal_lb: INTERNAL_LB_RANGE,
    external_lb: EXTERNAL_LB_RANGE,
    dns: DNS_SERVICE_IP,
};

/// What `svcnet up --help` says is built.
const AFTER_HELP: &str =
    "svcnet up runs the API server, controllers, workloads, one node (pods and proxy) and \
cluster DNS in one process with the embedded store.

Built:
  * default (loopback) mode, no root needed: userspace data plane; Services in 127.96.0.0/16 \
(kube-dns 127.96.0.10), pods in 127.244.0.0/16 (processes on loopback addresses), LoadBalancer \
pools 127.240.0.0/24 and 127.241.0.0/24. Ports below 1024 need CAP_NET_BIND_SERVICE or \
net.ipv4.ip_unprivileged_port_start.
  * root mode (--dataplane nftables|iptables, as root): the node, its pods (one network \
namespace each, on a bridge) and the Service addresses live in a network namespace svcnet \
creates (svcnet-up-...; no default route, nothing added to the host's namespace). Services in \
10.96.0.0/16 (kube-dns 10.96.0.10), pods in 10.244.0.0/24, node 10.244.0.1. kubectl works \
from the host through a 127.0.0.1 forward; `svcnet up exec -- CMD` runs CMD in the namespace.

Ctrl-C stops everything (and in root mode removes the namespaces); a later `svcnet up` on the \
same --data-dir resumes the same cluster, also after a SIGKILL (it first removes what the \
killed run left). Not built: more than one node, IPv6.";

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, after_help = AFTER_HELP)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<UpCommand>,
    /// Where the cluster lives (store, certificates, kubeconfig, pod logs); a second `up` on the
    /// same directory resumes the same cluster.
    #[arg(long, default_value = "svcnet-data")]
    pub data_dir: PathBuf,
    /// The API server's address (in root mode: inside the namespace, and forwarded from the
    /// same 127.0.0.1 port on the host).
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// The node's data plane: `userspace` (loopback mode, no root) or, as root, `nftables` /
    /// `iptables` in svcnet's own network namespace.
    #[arg(long, default_value = "userspace", value_parser = ["userspace", "nftables", "iptables"])]
    pub dataplane: String,
    /// The node's name.
    #[arg(long, default_value = "svcnet-up")]
    pub node_name: String,
    /// Do not run cluster DNS.
    #[arg(long)]
    pub no_dns: bool,
    /// Internal: this process is the cluster half of root mode, already inside the namespace.
    #[arg(long, hide = true)]
    pub inner: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum UpCommand {
    /// Runs a command in the network namespace of a root-mode `svcnet up`
    /// (e.g. `svcnet up exec -- curl http://CLUSTER-IP/`).
    Exec(root::ExecArgs),
}

/// Records in `DIR/mode` whether the cluster in `dir` is a loopback or a root-mode one, and
/// refuses the other mode: their address ranges differ, so Services, pods and allocations of
/// one would be nonsense to the other.
fn claim_data_dir(dir: &std::path::Path, root_mode: bool) -> anyhow::Result<()> {
    let mode = if root_mode { "root" } else { "loopback" };
    std::fs::create_dir_all(dir).with_context(|| format!("while creating {}", dir.display()))?;
    let path = dir.join("mode");
    match std::fs::read_to_string(&path) {
        Ok(found) if found.trim() == mode => Ok(()),
        Ok(found) => bail!(
            "{} holds a {} cluster; a {mode} `svcnet up` needs another --data-dir (or remove that one)",
            dir.display(),
            found.trim()
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, format!("{mode}\n"))
                .with_context(|| format!("while writing {}", path.display()))
        }
        Err(error) => Err(error).with_context(|| format!("while reading {}", path.display())),
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(UpCommand::Exec(exec)) = args.command {
        return root::exec(exec);
    }
    if !args.inner {
        claim_data_dir(&args.data_dir, args.dataplane != "userspace")?;
    }
    if args.dataplane != "userspace" && !args.inner {
        return root::run(args).await;
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("while creating {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir).context("while resolving the data dir")?;
    let root_mode = args.dataplane != "userspace";
    let ranges = if root_mode { root::RANGES } else { LOOPBACK };
    let cancel = CancellationToken::new();
    let server_config = svcnet_apiserver::Config {
        data_dir: data_dir.join("server"),
        listen: args.listen,
        store: "embedded".to_string(),
        service_cluster_ip_ranges: vec![ranges.service.parse()?],
        ..svcnet_apiserver::Config::default()
    };
    let server = svcnet_apiserver::start(server_config, cancel.clone())
        .await
        .context("while starting the API server")?;
    let kubeconfig = data_dir.join("kubeconfig");
    std::fs::copy(&server.kubeconfig, &kubeconfig).context("while writing the kubeconfig")?;
    set_private(&kubeconfig)?;
    let client = super::kube_client(Some(&kubeconfig)).await?;

    let mut tasks = tokio::task::JoinSet::new();
    let node_ip =
        if root_mode { IpAddr::V4(root::NODE_IP) } else { IpAddr::V4(Ipv4Addr::LOCALHOST) };

    let controllers = svcnet_controllers::Config::default();
    tasks.spawn(component(
        "controllers",
        svcnet_controllers::run(client.clone(), controllers, cancel.clone()),
    ));
    tasks.spawn(component(
        "workloads",
        svcnet_workloads::run(client.clone(), svcnet_workloads::Config::default(), cancel.clone()),
    ));

    let proxy = svcnet_proxy::Config {
        node_name: args.node_name.clone(),
        node_ips: vec![node_ip],
        cluster_cidrs: if root_mode { vec![ranges.pod.parse()?] } else { Vec::new() },
        service_cidrs: vec![ranges.service.parse()?],
        dataplane: args.dataplane.parse().context("while parsing --dataplane")?,
        metrics_bind_address: None,
        healthz_bind_address: None,
        health_check_bind_addresses: vec![node_ip],
        // One node and a handful of Services: a sync is cheap, so every change is applied at
        // once (kube-proxy's 1 s default would hold a Service's EndpointSlice update that
        // follows the Service update by a few milliseconds for up to a second).
        min_sync_period: std::time::Duration::ZERO,
        ..svcnet_proxy::Config::default()
    };
    let network = if root_mode {
        root::pod_network()?
    } else {
        svcnet_agent::PodNetwork::Loopback { range: POD_RANGE.parse()? }
    };
    let agent = svcnet_agent::Config {
        node_name: args.node_name.clone(),
        node_ip,
        network,
        dns: if root_mode { vec![IpAddr::V4(ranges.dns)] } else { Vec::new() },
        data_dir: data_dir.join("agent"),
        kubelet_port: 0,
        proxy: Some(proxy),
        ..svcnet_agent::Config::default()
    };
    tasks.spawn(component("node", svcnet_agent::run(client.clone(), agent, cancel.clone())));

    ensure_lb_pools(&client, &ranges).await?;
    if !args.no_dns {
        // Loopback mode: DNS listens on a free loopback port and the kube-dns Service
        // (127.96.0.10:53) reaches it through the proxy, like any other Service. Root mode: on
        // the node's address, port 53.
        let dns_addr = if root_mode {
            SocketAddr::new(node_ip, 53)
        } else {
            let socket =
                std::net::UdpSocket::bind("127.0.0.1:0").context("while choosing a DNS port")?;
            socket.local_addr()?
        };
        let dns = svcnet_dns::Config {
            listen: dns_addr,
            service_cidrs: vec![ranges.service.parse()?],
            pod_cidrs: vec![ranges.pod.parse()?],
            metrics_address: None,
            ..svcnet_dns::Config::default()
        };
        tasks.spawn(component("dns", svcnet_dns::run(client.clone(), dns, cancel.clone())));
        ensure_kube_dns(&client, &ranges, dns_addr).await?;
    }

    if args.inner {
        // The outer half (on the host) reads this line, starts its forward and prints the
        // user-facing summary.
        println!("{}{}", root::READY_PREFIX, server.addr);
        tasks.spawn(root::watch_parent(cancel.clone()));
    } else {
        println!("svcnet is up");
        println!("  API server:  {}", server.url);
        println!("  kubeconfig:  {}", kubeconfig.display());
        println!("  services:    {SERVICE_RANGE} (DNS {DNS_SERVICE_IP}), pods: {POD_RANGE}");
        println!("  LB pools:    internal {INTERNAL_LB_RANGE}, external {EXTERNAL_LB_RANGE}");
        println!("next: KUBECONFIG={} kubectl apply -f examples/", kubeconfig.display());
    }

    tokio::select! {
        _ = super::shutdown_signal() => tracing::info!("stopping"),
        Some(done) = tasks.join_next() => {
            if let Ok(Err(err)) = done {
                tracing::error!(error = %format!("{err:#}"), "a component failed; stopping");
            }
        }
    }
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
    server.wait().await;
    Ok(())
}

/// Runs one component, naming it in its error.
async fn component<E>(
    name: &'static str,
    fut: impl std::future::Future<Output = Result<(), E>>,
) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fut.await.with_context(|| format!("{name} failed"))
}

fn set_private(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .context("while protecting the kubeconfig")
}

/// The LoadBalancer pools of `svcnet up` (in loopback mode both inside 127.0.0.0/8).
async fn ensure_lb_pools(client: &kube::Client, ranges: &Ranges) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let pools = format!(
        "- name: internal\n  scope: internal\n  addresses: [\"{}\"]\n- name: external\n  scope: external\n  addresses: [\"{}\"]\n",
        ranges.internal_lb, ranges.external_lb
    );
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "svcnet-lb-pools", "namespace": "kube-system"},
        "data": {"pools.yaml": pools},
    }))?;
    create_if_absent(&api, &cm).await.context("while creating the LoadBalancer pools")
}

/// `kube-system/kube-dns`: a selectorless Service at the tenth address with a slice pointing at
/// the DNS server's real address.
async fn ensure_kube_dns(
    client: &kube::Client,
    ranges: &Ranges,
    dns: SocketAddr,
) -> anyhow::Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    let svc: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
        "spec": {"clusterIP": ranges.dns.to_string(), "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": dns.port()},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": dns.port()}]},
    }))?;
    create_if_absent(&services, &svc).await.context("while creating the kube-dns Service")?;
    // The slice is rewritten on every start: the DNS port is chosen anew each time.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "kube-system");
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kube-dns-svcnet-up", "namespace": "kube-system",
                     "labels": {"kubernetes.io/service-name": "kube-dns", "endpointslice.kubernetes.io/managed-by": "svcnet-up"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [dns.ip().to_string()], "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "dns", "port": dns.port(), "protocol": "UDP"}, {"name": "dns-tcp", "port": dns.port(), "protocol": "TCP"}],
    }))?;
    let _ = slices.delete("kube-dns-svcnet-up", &Default::default()).await;
    slices
        .create(&PostParams::default(), &slice)
        .await
        .context("while publishing the DNS endpoints")?;
    Ok(())
}

async fn create_if_absent<K>(api: &Api<K>, object: &K) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    if api.get_opt(&name).await?.is_some() {
        return Ok(());
    }
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::claim_data_dir;

    #[test]
    fn a_data_dir_serves_one_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        claim_data_dir(&data, false).expect("a fresh dir");
        claim_data_dir(&data, false).expect("the same mode again");
        let error = claim_data_dir(&data, true).expect_err("the other mode").to_string();
        assert!(error.contains("holds a loopback cluster"), "{error}");
        let other = dir.path().join("other");
        claim_data_dir(&other, true).expect("a fresh dir");
        let error = claim_data_dir(&other, false).expect_err("the other mode").to_string();
        assert!(error.contains("holds a root cluster"), "{error}");
    }
}
