//! Fills an API server with the memory benchmark's cluster, for `bench/dns/mem_run.sh`:
//! `load_cluster KUBECONFIG SERVICES PODS` creates 100 namespaces, SERVICES ClusterIP Services
//! (addresses allocated by the server) and PODS pods, each given a pod IP through the status
//! subresource, as a kubelet would. Any API server works (it only uses kube-rs).

use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const NAMESPACES: usize = 100;
const IN_FLIGHT: usize = 32;

fn ignore_exists(result: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        other => other,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: load_cluster KUBECONFIG SERVICES PODS";
    let kubeconfig = args.next().ok_or(usage)?;
    let n_services: usize = args.next().ok_or(usage)?.parse()?;
    let n_pods: usize = args.next().ok_or(usage)?.parse()?;
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let client = Client::try_from(config)?;
    let post = PostParams::default();
    let start = Instant::now();

    let namespaces: Api<Namespace> = Api::all(client.clone());
    for idx in 0..NAMESPACES {
        let namespace = serde_json::from_value(json!({"metadata": {"name": format!("ns-{idx}")}}))?;
        ignore_exists(namespaces.create(&post, &namespace).await.map(drop))?;
    }

    futures::stream::iter(0..n_services)
        .map(|idx| {
            let client = client.clone();
            let post = post.clone();
            async move {
                let ns = format!("ns-{}", idx % NAMESPACES);
                let service: Service = serde_json::from_value(json!({
                    "metadata": {"name": format!("svc-{idx}"), "namespace": ns},
                    "spec": {"type": "ClusterIP",
                             "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
                }))
                .map_err(kube::Error::SerdeError)?;
                let api: Api<Service> = Api::namespaced(client, &ns);
                ignore_exists(api.create(&post, &service).await.map(drop))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    eprintln!("{n_services} services in {:.1} s", start.elapsed().as_secs_f64());

    futures::stream::iter(0..n_pods)
        .map(|idx| {
            let client = client.clone();
            let post = post.clone();
            async move {
                let ns = format!("ns-{}", idx % NAMESPACES);
                let name = format!("pod-{idx}");
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"containers": [{"name": "c", "image": "none"}]}
                }))
                .map_err(kube::Error::SerdeError)?;
                let api: Api<Pod> = Api::namespaced(client, &ns);
                ignore_exists(api.create(&post, &pod).await.map(drop))?;
                let ip =
                    format!("10.{}.{}.{}", 244 + idx / 65_000, (idx / 250) % 256, idx % 250 + 1);
                let status =
                    json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await?;
                Ok::<(), kube::Error>(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    eprintln!("{n_pods} pods in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
