//! End-to-end tests of the controllers (issue 4) against svcnet's real API server started in
//! this process: EndpointSlices follow pods, a lapsed node lease makes endpoints not ready, and
//! the LoadBalancer provider hands out internal and external addresses with Events.
//! Every wait polls a condition with a deadline; nothing sleeps as synchronisation.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Node, NodeCondition, NodeStatus, Pod, PodCondition, PodIP, PodStatus, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

struct Cluster {
    client: kube::Client,
    cancel: CancellationToken,
    kubeconfig: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Runs the real kubectl against the server with a private cache directory.
    fn kubectl(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kubectl-cache"))
            .args(args)
            .output()
            .expect("run kubectl");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn cluster(grace: Duration) -> Cluster {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "svcnet_controllers=info".into()),
        ))
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let cancel = CancellationToken::new();
    let config = svcnet_apiserver::Config {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..svcnet_apiserver::Config::default()
    };
    let handle = svcnet_apiserver::start(config, cancel.clone()).await.expect("api server starts");
    let kc = kube::config::Kubeconfig::read_from(&handle.kubeconfig).expect("kubeconfig");
    let kconfig =
        kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config");
    let client = kube::Client::try_from(kconfig).expect("client");
    let controllers =
        svcnet_controllers::Config { node_monitor_grace_period: grace, ..Default::default() };
    tokio::spawn(svcnet_controllers::run(client.clone(), controllers, cancel.clone()));
    Cluster { client, cancel, kubeconfig: handle.kubeconfig.clone(), dir }
}

/// Polls `f` until it returns `Some`, for at most 20 s.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("test object")
}

fn pod(name: &str, ip: &str, ready: bool, node: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        },
        spec: Some(obj(serde_json::json!({
            "nodeName": node,
            "containers": [{"name": "c", "image": "svcnet/echo", "ports": [{"name": "http", "containerPort": 8080}]}]
        }))),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip.into()),
            pod_ips: Some(vec![PodIP { ip: ip.into() }]),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

async fn set_ready(pods: &Api<Pod>, name: &str, ready: bool) {
    let patch = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch pod status");
}

/// (address, ready) of every endpoint in the Service's slices, sorted.
async fn endpoints_of(slices: &Api<EndpointSlice>, svc: &str) -> Vec<(String, bool)> {
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
        .await
        .expect("list slices");
    let mut out: Vec<(String, bool)> = list
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .map(|e| {
            (e.addresses[0].clone(), e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpointslices_follow_pods() {
    let c = cluster(Duration::from_secs(40)).await;
    let ns = "default";
    let services: Api<Service> = Api::namespaced(c.client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), ns);
    let svc: Service = obj(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    }));
    services.create(&PostParams::default(), &svc).await.expect("create service");
    pods.create(&PostParams::default(), &pod("p1", "10.244.0.1", true, "n1"))
        .await
        .expect("create p1");
    pods.create(&PostParams::default(), &pod("p2", "10.244.0.2", false, "n1"))
        .await
        .expect("create p2");

    let want = vec![("10.244.0.1".to_string(), true), ("10.244.0.2".to_string(), false)];
    eventually("both pods in slices", || async {
        let got = endpoints_of(&slices, "web").await;
        (got == want).then_some(())
    })
    .await;
    let list = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .expect("list");
    let slice = &list.items[0];
    assert_eq!(
        slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("endpointslice.kubernetes.io/managed-by"))
            .map(String::as_str),
        Some("endpointslice-controller.k8s.io")
    );
    assert_eq!(
        slice.ports.as_ref().and_then(|p| p[0].port),
        Some(8080),
        "named target port resolved"
    );

    set_ready(&pods, "p2", true).await;
    set_ready(&pods, "p1", false).await;
    let want = vec![("10.244.0.1".to_string(), false), ("10.244.0.2".to_string(), true)];
    eventually("readiness flipped", || async {
        (endpoints_of(&slices, "web").await == want).then_some(())
    })
    .await;

    pods.delete("p1", &DeleteParams::default()).await.expect("delete p1");
    let want = vec![("10.244.0.2".to_string(), true)];
    eventually("deleted pod gone", || async {
        (endpoints_of(&slices, "web").await == want).then_some(())
    })
    .await;

    // The legacy Endpoints mirror.
    let endpoints: Api<k8s_openapi::api::core::v1::Endpoints> =
        Api::namespaced(c.client.clone(), ns);
    eventually("endpoints mirrored", || async {
        let ep = endpoints.get_opt("web").await.ok()??;
        let subsets = ep.subsets?;
        (subsets[0].addresses.as_ref()?.len() == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapsed_node_lease_makes_endpoints_not_ready() {
    let c = cluster(Duration::from_secs(1)).await;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let node = Node {
        metadata: ObjectMeta {
            name: Some("n1".into()),
            labels: Some([("topology.kubernetes.io/zone".to_string(), "a".to_string())].into()),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: Some("KubeletReady".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    };
    nodes.create(&PostParams::default(), &node).await.expect("create node");
    // The create may drop status, as Kubernetes does; write it through the subresource.
    let patch = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}});
    nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("node status");
    let lease = Lease {
        metadata: ObjectMeta { name: Some("n1".into()), ..Default::default() },
        spec: Some(LeaseSpec {
            holder_identity: Some("n1".into()),
            lease_duration_seconds: Some(40),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        }),
    };
    leases.create(&PostParams::default(), &lease).await.expect("create lease");

    let services: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "default");
    let svc: Service = obj(
        serde_json::json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    );
    services.create(&PostParams::default(), &svc).await.expect("create service");
    pods.create(&PostParams::default(), &pod("p1", "10.244.0.1", true, "n1"))
        .await
        .expect("create pod");

    // The lease is never renewed: after the grace period the node is Unknown and the endpoint
    // not ready.
    eventually("node Ready=Unknown", || async {
        let n = nodes.get("n1").await.ok()?;
        let cond = n.status?.conditions?.into_iter().find(|c| c.type_ == "Ready")?;
        (cond.status == "Unknown" && cond.reason.as_deref() == Some("NodeStatusUnknown"))
            .then_some(())
    })
    .await;
    eventually("endpoint not ready", || async {
        (endpoints_of(&slices, "web").await == vec![("10.244.0.1".to_string(), false)])
            .then_some(())
    })
    .await;

    // Renewing the lease brings Ready back, and the endpoint with it.
    let patch =
        serde_json::json!({"spec": {"renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now())}});
    leases.patch("n1", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("renew");
    eventually("endpoint ready again", || async {
        (endpoints_of(&slices, "web").await == vec![("10.244.0.1".to_string(), true)]).then_some(())
    })
    .await;
}

fn lb_service(name: &str, annotations: &[(&str, &str)]) -> Service {
    let annotations: BTreeMap<String, String> =
        annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    obj(serde_json::json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80}]}
    }))
}

async fn lb_ip(services: &Api<Service>, name: &str) -> Option<String> {
    let svc = services.get(name).await.ok()?;
    svc.status?.load_balancer?.ingress?.first()?.ip.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_pools_internal_external_and_exhaustion() {
    let c = cluster(Duration::from_secs(40)).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "kube-system");
    let pools = "- {name: vpc, scope: internal, addresses: [\"10.200.0.10-10.200.0.20\"]}\n- {name: public, scope: external, addresses: [\"203.0.113.10-203.0.113.11\"]}\n";
    let cm = ConfigMap {
        metadata: ObjectMeta { name: Some("svcnet-lb-pools".into()), ..Default::default() },
        data: Some([("pools.yaml".to_string(), pools.to_string())].into()),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm).await.expect("create pools");
    let services: Api<Service> = Api::namespaced(c.client.clone(), "default");

    let internal = [
        ("networking.gke.io/load-balancer-type", "Internal"),
        ("cloud.google.com/load-balancer-type", "Internal"),
        ("service.beta.kubernetes.io/aws-load-balancer-internal", "true"),
        ("service.beta.kubernetes.io/aws-load-balancer-scheme", "internal"),
        ("service.beta.kubernetes.io/azure-load-balancer-internal", "true"),
        ("svcnet.io/load-balancer-scope", "internal"),
    ];
    for (i, (k, v)) in internal.iter().enumerate() {
        services
            .create(&PostParams::default(), &lb_service(&format!("int{i}"), &[(k, v)]))
            .await
            .expect("create");
    }
    services.create(&PostParams::default(), &lb_service("ext0", &[])).await.expect("create");
    for i in 0..internal.len() {
        let name = format!("int{i}");
        let ip = eventually("internal address", || lb_ip(&services, &name)).await;
        assert!(ip.starts_with("10.200.0."), "int{i} got {ip}");
    }
    let ip = eventually("external address", || lb_ip(&services, "ext0")).await;
    assert!(ip.starts_with("203.0.113."), "ext0 got {ip}");
    let svc = services.get("ext0").await.expect("get");
    let ingress =
        &svc.status.and_then(|s| s.load_balancer).and_then(|l| l.ingress).expect("ingress")[0];
    assert_eq!(ingress.ip_mode.as_deref(), Some("VIP"));

    // The external pool has two addresses: the third external Service stays pending with a
    // Warning Event.
    services.create(&PostParams::default(), &lb_service("ext1", &[])).await.expect("create");
    services.create(&PostParams::default(), &lb_service("ext2", &[])).await.expect("create");
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    let (pending, message) = eventually("AllocationFailed event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("AllocationFailed"))
            .map(|e| (e.involved_object.name.unwrap_or_default(), e.message.unwrap_or_default()))
    })
    .await;
    assert!(message.contains("no available IPs in the external pools"), "{message}");
    assert!(lb_ip(&services, &pending).await.is_none());
    let describe = c.kubectl(&["describe", "service", &pending]);
    assert!(
        describe.contains("AllocationFailed") && describe.contains("no available IPs"),
        "{describe}"
    );
    assert!(c.kubectl(&["get", "service", &pending]).contains("<pending>"));
    let allocated = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("IPAllocated"))
        .count();
    assert!(allocated >= 8, "an IPAllocated event per allocation, got {allocated}");

    // Deleting an external Service frees its address for the pending one.
    let holder = if pending == "ext2" { "ext1" } else { "ext2" };
    services.delete(holder, &DeleteParams::default()).await.expect("delete");
    eventually("pending service gets the freed address", || lb_ip(&services, &pending)).await;

    // Switching a Service to internal moves it to the internal pool.
    let patch = serde_json::json!({"metadata": {"annotations": {"svcnet.io/load-balancer-scope": "internal"}}});
    services.patch("ext0", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    eventually("ext0 moved to internal", || async {
        lb_ip(&services, "ext0").await.filter(|ip| ip.starts_with("10.200.0."))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_fifty_pods_make_three_slices() {
    let c = cluster(Duration::from_secs(40)).await;
    let services: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "default");
    let svc: Service = obj(
        serde_json::json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    );
    for i in 0..250 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("p{i}"), &format!("10.244.{}.{}", i / 200, i % 200 + 1), true, "n1"),
        )
        .await
        .expect("create pod");
    }
    // The Service comes last, so one reconcile sees (nearly) all pods at once.
    services.create(&PostParams::default(), &svc).await.expect("create service");
    let sizes = eventually("250 endpoints", || async {
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .ok()?;
        let mut sizes: Vec<usize> = list.items.iter().map(|s| s.endpoints.len()).collect();
        sizes.sort();
        (sizes.iter().sum::<usize>() == 250).then_some(sizes)
    })
    .await;
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    assert!(sizes.iter().all(|n| *n <= 100), "{sizes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_sees_kubernetes_allocation_errors() {
    let c = cluster(Duration::from_secs(40)).await;
    let manifest = |name: &str, cluster_ip: &str, node_port: u16| {
        let path = c.dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  type: NodePort\n  clusterIP: {cluster_ip}\n  selector:\n    app: {name}\n  ports:\n  - port: 80\n    nodePort: {node_port}\n"
            ),
        )
        .expect("write manifest");
        path
    };
    let first = manifest("first", "10.96.0.50", 30080);
    let out = c.kubectl(&["apply", "-f", first.to_str().expect("utf-8 path")]);
    assert!(out.contains("service/first created"), "{out}");
    let same_ip = manifest("second", "10.96.0.50", 30081);
    let out = c.kubectl(&["apply", "-f", same_ip.to_str().expect("utf-8 path")]);
    assert!(
        out.contains("failed to allocate IP 10.96.0.50: provided IP is already allocated"),
        "{out}"
    );
    let same_port = manifest("third", "10.96.0.51", 30080);
    let out = c.kubectl(&["apply", "-f", same_port.to_str().expect("utf-8 path")]);
    assert!(
        out.contains(
            "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
        ),
        "{out}"
    );
    // The failed creates left nothing reserved: both values are free for a new Service once
    // the first is gone.
    let out = c.kubectl(&["delete", "service", "first"]);
    assert!(out.contains("deleted"), "{out}");
    let out = c.kubectl(&["apply", "-f", same_port.to_str().expect("utf-8 path")]);
    assert!(out.contains("service/third created"), "{out}");
}
