//! The kubectl battery (issue 3 acceptance): every command users run against a Service API,
//! with the machine's kubectl and the 1.27, 1.29 and 1.33 binaries.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{Kubectl, TestServer, kubectl_binary};

const MANIFESTS: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web, tier: frontend}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: https, port: 443, targetPort: 8443}
---
apiVersion: v1
kind: Service
metadata:
  name: np
spec:
  type: NodePort
  selector: {app: np}
  ports:
  - {port: 80, targetPort: 8080, nodePort: NODEPORT}
---
apiVersion: v1
kind: Service
metadata:
  name: lb
spec:
  type: LoadBalancer
  selector: {app: lb}
  ports:
  - {port: 443}
---
apiVersion: v1
kind: Service
metadata:
  name: ext
spec:
  type: ExternalName
  externalName: example.com
---
apiVersion: v1
kind: Service
metadata:
  name: headless
spec:
  clusterIP: None
  selector: {app: db}
  ports:
  - {port: 5432}
"#;

async fn battery(bin: &str, node_port: u16) {
    let server = TestServer::start().await;
    let k = server.kubectl(bin);
    let ns = "bat";

    let resources = k.ok(&["api-resources"]).await;
    for needle in ["services", "svc", "endpointslices", "deployments", "leases"] {
        assert!(resources.contains(needle), "api-resources lacks {needle}:\n{resources}");
    }
    // 1.27 prints the whole version.Info struct, later versions the short form.
    let version = k.ok(&["version"]).await;
    assert!(
        version.contains("Server Version: v1.32.0") || version.contains("GitVersion:\"v1.32.0\""),
        "{version}"
    );
    assert!(k.ok(&["create", "namespace", ns]).await.contains("namespace/bat created"));

    // apply twice (second: unchanged), then a changed manifest (patched with SMP).
    let manifests = MANIFESTS.replace("NODEPORT", &node_port.to_string());
    let file = k.write("svcs.yaml", &manifests);
    let f = file.to_str().expect("utf-8 path");
    let out = k.ok(&["apply", "-n", ns, "-f", f]).await;
    assert_eq!(out.matches(" created").count(), 5, "{out}");
    let out = k.ok(&["apply", "-n", ns, "-f", f]).await;
    assert_eq!(out.matches(" unchanged").count(), 5, "{out}");
    let changed = manifests
        .replace("targetPort: 8443", "targetPort: 9443")
        .replace("port: 5432", "port: 5433")
        .replace("tier: frontend", "tier: edge");
    let file2 = k.write("svcs2.yaml", &changed);
    let out = k.ok(&["apply", "-n", ns, "-f", file2.to_str().expect("utf-8")]).await;
    assert!(
        out.contains("service/web configured") && out.contains("service/headless configured"),
        "{out}"
    );
    let ports = k
        .ok(&[
            "get",
            "svc",
            "web",
            "-n",
            ns,
            "-o",
            "jsonpath={.spec.ports[1].targetPort} {.metadata.labels.tier}",
        ])
        .await;
    assert_eq!(ports, "9443 edge");

    // get in every output format.
    let wide = k.ok(&["get", "svc", "-n", ns, "-o", "wide"]).await;
    assert!(wide.contains("web") && wide.contains("headless"), "{wide}");
    let yaml = k.ok(&["get", "svc", "web", "-n", ns, "-o", "yaml"]).await;
    assert!(yaml.contains("kind: Service") && yaml.contains("clusterIP:"), "{yaml}");
    let json = k.ok(&["get", "svc", "-n", ns, "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json).expect("json output");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(5));
    let np =
        k.ok(&["get", "svc", "np", "-n", ns, "-o", "jsonpath={.spec.ports[0].nodePort}"]).await;
    assert_eq!(np, node_port.to_string());
    let headless =
        k.ok(&["get", "svc", "headless", "-n", ns, "-o", "jsonpath={.spec.clusterIP}"]).await;
    assert_eq!(headless, "None");
    let names = k.ok(&["get", "svc", "-n", ns, "-o", "name"]).await;
    assert!(names.contains("service/ext"), "{names}");
    let labelled = k.ok(&["get", "svc", "-n", ns, "-l", "app=web", "-o", "name"]).await;
    assert_eq!(labelled.trim(), "service/web");
    let all_ns = k.ok(&["get", "svc", "-A"]).await;
    assert!(all_ns.contains("default") && all_ns.contains("bat"), "{all_ns}");
    let by_field =
        k.ok(&["get", "svc", "-n", ns, "--field-selector", "metadata.name=lb", "-o", "name"]).await;
    assert_eq!(by_field.trim(), "service/lb");
    let all = k.ok(&["get", "all", "-n", ns]).await;
    assert!(all.contains("service/web"), "{all}");

    let describe = k.ok(&["describe", "svc", "web", "-n", ns]).await;
    assert!(
        describe.contains("Name:") && describe.contains("web") && describe.contains("Selector:"),
        "{describe}"
    );

    // label, annotate, three patch types.
    k.ok(&["label", "svc", "web", "-n", ns, "watched=no"]).await;
    k.ok(&["annotate", "svc", "web", "-n", ns, "note=hello"]).await;
    k.ok(&[
        "patch",
        "svc",
        "web",
        "-n",
        ns,
        "-p",
        r#"{"spec":{"ports":[{"port":80,"targetPort":9090}]}}"#,
    ])
    .await;
    k.ok(&[
        "patch",
        "svc",
        "web",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"merged":"yes"}}}"#,
    ])
    .await;
    k.ok(&[
        "patch",
        "svc",
        "web",
        "-n",
        ns,
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/jsonpatched","value":"yes"}]"#,
    ])
    .await;
    let got = k.ok(&["get", "svc", "web", "-n", ns, "-o", "jsonpath={.metadata.labels.watched},{.metadata.annotations.note},{.spec.ports[0].targetPort},{.metadata.labels.merged},{.metadata.labels.jsonpatched}"]).await;
    assert_eq!(got, "no,hello,9090,yes,yes");

    // Server-side apply, and a conflict with another manager.
    let ssa = "apiVersion: v1\nkind: Service\nmetadata: {name: ssa}\nspec:\n  ports: [{port: 80, targetPort: 80}]\n";
    assert!(
        k.ok_stdin(&["apply", "--server-side", "-n", ns, "-f", "-"], ssa)
            .await
            .contains("serverside-applied")
    );
    let conflict = k
        .fails(
            &["apply", "--server-side", "--field-manager", "other", "-n", ns, "-f", "-"],
            Some(&ssa.replace("targetPort: 80", "targetPort: 81")),
        )
        .await;
    assert!(conflict.contains("conflict"), "{conflict}");
    let forced = k
        .ok_stdin(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager",
                "other",
                "-n",
                ns,
                "-f",
                "-",
            ],
            &ssa.replace("targetPort: 80", "targetPort: 81"),
        )
        .await;
    assert!(forced.contains("serverside-applied"), "{forced}");

    // Client-side-applied objects move to server-side apply (kubectl's managedFields migration).
    let migrated = k
        .ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-n",
            ns,
            "-f",
            file2.to_str().expect("utf-8"),
        ])
        .await;
    assert_eq!(migrated.matches("serverside-applied").count(), 5, "{migrated}");
    k.ok(&["create", "configmap", "gen-cm", "-n", ns, "--from-literal=a=b"]).await;
    assert_eq!(k.ok(&["get", "cm", "gen-cm", "-n", ns, "-o", "jsonpath={.data.a}"]).await, "b");

    // Dry run: reported, not persisted.
    let dry = k
        .ok_stdin(
            &["create", "-n", ns, "--dry-run=server", "-f", "-"],
            "apiVersion: v1\nkind: Service\nmetadata: {name: dry}\nspec:\n  ports: [{port: 80}]\n",
        )
        .await;
    assert!(dry.contains("(server dry run)"), "{dry}");
    let missing = k.fails(&["get", "svc", "dry", "-n", ns], None).await;
    assert!(missing.contains("NotFound"), "{missing}");

    let explain = k.ok(&["explain", "service.spec"]).await;
    assert!(explain.contains("ServiceSpec") || explain.contains("spec"), "{explain}");
    assert!(explain.contains("clusterIP"), "{explain}");

    // get -w sees an update.
    let mut watch = k
        .command(&[
            "get",
            "svc",
            "web",
            "-n",
            ns,
            "-w",
            "-o",
            "jsonpath={.metadata.labels.watched}{\"\\n\"}",
        ])
        .spawn()
        .expect("spawn watch");
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("first watch line")
        .expect("read");
    assert_eq!(first.as_deref(), Some("no"));
    k.ok(&["label", "svc", "web", "-n", ns, "watched=yes", "--overwrite"]).await;
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line == "yes" {
                return true;
            }
        }
        false
    })
    .await
    .expect("watch saw the update in time");
    assert!(seen);
    let _ = watch.kill().await;

    // edit through KUBE_EDITOR.
    let editor = k.write(
        "editor.sh",
        "#!/bin/sh\nsed -i 's/sessionAffinity: None/sessionAffinity: ClientIP/' \"$1\"\n",
    );
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let out = k
        .run_env(
            &["edit", "svc", "web", "-n", ns],
            None,
            &[("KUBE_EDITOR", editor.to_str().expect("utf-8"))],
        )
        .await;
    assert!(out.ok, "edit failed: {}", out.all());
    assert_eq!(
        k.ok(&["get", "svc", "web", "-n", ns, "-o", "jsonpath={.spec.sessionAffinity}"]).await,
        "ClientIP"
    );

    // The typed generators send protobuf.
    k.ok(&["create", "service", "clusterip", "gen-cip", "-n", ns, "--tcp=5678:8080"]).await;
    k.ok(&["create", "service", "nodeport", "gen-np", "-n", ns, "--tcp=80:80"]).await;
    k.ok(&["create", "service", "loadbalancer", "gen-lb", "-n", ns, "--tcp=80:80"]).await;
    let types = k
        .ok(&[
            "get",
            "svc",
            "gen-cip",
            "gen-np",
            "gen-lb",
            "-n",
            ns,
            "-o",
            "jsonpath={.items[*].spec.type}",
        ])
        .await;
    assert_eq!(types, "ClusterIP NodePort LoadBalancer");
    let target = k
        .ok(&["get", "svc", "gen-cip", "-n", ns, "-o", "jsonpath={.spec.ports[0].targetPort}"])
        .await;
    assert_eq!(target, "8080");
    // `kubectl create deployment` (the docs' tutorials) sends a protobuf Deployment too.
    k.ok(&[
        "create",
        "deployment",
        "gen-dep",
        "-n",
        ns,
        "--image=registry.k8s.io/echoserver:1.4",
        "--port=8080",
        "--replicas=0",
        "--",
        "/bin/echo",
        "hi",
    ])
    .await;
    let dep = k
        .ok(&[
            "get",
            "deployment",
            "gen-dep",
            "-n",
            ns,
            "-o",
            "jsonpath={.spec.replicas} {.spec.selector.matchLabels.app} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].command} {.spec.template.spec.containers[0].ports[0].containerPort}",
        ])
        .await;
    assert_eq!(dep, r#"0 gen-dep registry.k8s.io/echoserver:1.4 ["/bin/echo","hi"] 8080"#);

    // Invalid manifests: kubectl's usual errors with field paths.
    let bad = "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec:\n  ports: [{port: 0}]\n";
    let err = k.fails(&["apply", "-n", ns, "-f", "-"], Some(bad)).await;
    assert!(err.contains("is invalid") && err.contains("spec.ports[0].port"), "{err}");
    let unknown = "apiVersion: v1\nkind: Service\nmetadata: {name: bad2}\nspec:\n  bogusField: 1\n  ports: [{port: 80}]\n";
    let err = k.fails(&["create", "-n", ns, "-f", "-"], Some(unknown)).await;
    assert!(err.contains("unknown field \"spec.bogusField\""), "{err}");
    let dup = k.fails(&["create", "-n", ns, "-f", "-"], Some("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}]\n")).await;
    assert!(dup.contains("AlreadyExists"), "{dup}");
    let taken = k
        .fails(
            &[
                "create",
                "service",
                "nodeport",
                "taken",
                "-n",
                ns,
                "--tcp=80:80",
                &format!("--node-port={node_port}"),
            ],
            None,
        )
        .await;
    assert!(taken.contains("already allocated"), "{taken}");

    // delete, with --wait, and a namespace with everything in it.
    assert!(k.ok(&["delete", "svc", "gen-cip", "-n", ns, "--wait"]).await.contains("deleted"));
    assert!(k.fails(&["get", "svc", "gen-cip", "-n", ns], None).await.contains("NotFound"));
    assert!(
        k.ok(&["delete", "namespace", ns, "--wait", "--timeout=60s"]).await.contains("deleted")
    );
    assert!(k.fails(&["get", "namespace", ns], None).await.contains("NotFound"));
    let left = k.ok(&["get", "svc", "-A", "-o", "name"]).await;
    assert_eq!(left.trim(), "service/kubernetes", "{left}");
    check_events_and_describe_other_kinds(&k).await;
}

async fn check_events_and_describe_other_kinds(k: &Kubectl) {
    // Kinds beyond Service answer the common verbs.
    k.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, namespace: default}\ndata: {a: b}\n",
    )
    .await;
    k.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: default}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: d}}\n  template:\n    metadata: {labels: {app: d}}\n    spec:\n      containers: [{name: c, image: busybox}]\n",
    )
    .await;
    k.ok(&["scale", "deployment", "d", "--replicas=3"]).await;
    assert_eq!(k.ok(&["get", "deploy", "d", "-o", "jsonpath={.spec.replicas}"]).await, "3");
    k.ok(&["get", "endpointslices,endpoints,events,leases,nodes,pods,cm"]).await;
}

async fn run_for(version: Option<&str>, node_port: u16) {
    match kubectl_binary(version) {
        Some(bin) => battery(&bin, node_port).await,
        None => eprintln!("kubectl {version:?} is not installed; battery skipped"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_battery_default() {
    run_for(None, 30080).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_battery_1_29() {
    run_for(Some("1.29"), 30081).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_battery_1_33() {
    run_for(Some("1.33"), 30082).await;
}

/// 1.27 and 1.28 download the protobuf OpenAPI v2 document before validating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_battery_1_27() {
    run_for(Some("1.27"), 30083).await;
}
