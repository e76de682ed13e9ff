use serde_json::json;

use super::*;

fn now() -> jiff::Timestamp {
    "2026-01-10T00:00:00Z".parse().unwrap()
}

/// Renders one object of `kind` and compares its cells.
fn check(kind: &str, obj: Value, expected: Value) {
    let table = table(kind, &[&obj], now(), IncludeObject::None);
    let n_columns = table["columnDefinitions"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(table["rows"][0]["cells"], expected, "{obj}");
    assert_eq!(
        table["rows"][0]["cells"].as_array().map(Vec::len),
        Some(n_columns),
        "one cell per column"
    );
}

fn meta(name: &str) -> Value {
    json!({"name": name, "namespace": "default", "creationTimestamp": "2026-01-05T00:00:00Z"})
}

#[test]
fn human_durations() {
    for (secs, expected) in [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (123, "2m3s"),
        (300, "5m"),
        (600, "10m"),
        (3 * 3600 + 5 * 60, "3h5m"),
        (5 * 3600, "5h"),
        (30 * 3600, "30h"),
        (5 * 86400, "5d"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (100 * 86400, "100d"),
        (3 * 365 * 86400 + 86400 * 10, "3y10d"),
        (10 * 365 * 86400, "10y"),
    ] {
        assert_eq!(human_duration_secs(secs), expected, "{secs}");
    }
    assert_eq!(human_duration(std::time::Duration::from_secs(123)), "2m3s");
    assert_eq!(age(None, now()), "<unknown>");
}

#[test]
fn services() {
    let cluster_ip = json!({"metadata": meta("kubernetes"), "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"], "ports": [{"port": 443, "protocol": "TCP"}]}});
    check(
        "Service",
        cluster_ip,
        json!(["kubernetes", "ClusterIP", "10.96.0.1", "<none>", "443/TCP", "5d", "<none>"]),
    );
    let node_port = json!({"metadata": meta("np"), "spec": {"type": "NodePort", "clusterIPs": ["10.96.0.2"], "selector": {"b": "2", "a": "1"},
        "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}, {"port": 53, "protocol": "UDP", "nodePort": 30053}]}});
    check(
        "Service",
        node_port,
        json!([
            "np",
            "NodePort",
            "10.96.0.2",
            "<none>",
            "80:30080/TCP,53:30053/UDP",
            "5d",
            "a=1,b=2"
        ]),
    );
    let pending = json!({"metadata": meta("lb"), "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.3"], "ports": [{"port": 80, "protocol": "TCP", "nodePort": 31000}]}, "status": {"loadBalancer": {}}});
    check(
        "Service",
        pending,
        json!(["lb", "LoadBalancer", "10.96.0.3", "<pending>", "80:31000/TCP", "5d", "<none>"]),
    );
    let assigned = json!({"metadata": meta("lb"), "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.3"], "externalIPs": ["192.0.2.1"], "ports": []},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example"}]}}});
    check(
        "Service",
        assigned,
        json!([
            "lb",
            "LoadBalancer",
            "10.96.0.3",
            "203.0.113.9,lb.example,192.0.2.1",
            "<none>",
            "5d",
            "<none>"
        ]),
    );
    let external = json!({"metadata": meta("ext"), "spec": {"type": "ExternalName", "externalName": "example.com"}});
    check(
        "Service",
        external,
        json!(["ext", "ExternalName", "<none>", "example.com", "<none>", "5d", "<none>"]),
    );
}

#[test]
fn pods() {
    let running = json!({"metadata": meta("p"), "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
        "status": {"phase": "Running", "podIPs": [{"ip": "10.244.0.5"}], "containerStatuses": [
            {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}, "lastState": {"terminated": {"finishedAt": "2026-01-09T23:55:00Z"}}},
            {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
    check(
        "Pod",
        running,
        json!([
            "p",
            "1/2",
            "CrashLoopBackOff",
            "2 (5m ago)",
            "5d",
            "10.244.0.5",
            "n1",
            "<none>",
            "<none>"
        ]),
    );
    let pending = json!({"metadata": meta("q"), "spec": {"containers": [{"name": "a"}], "readinessGates": [{"conditionType": "x"}]}, "status": {"phase": "Pending"}});
    check(
        "Pod",
        pending,
        json!(["q", "0/1", "Pending", "0", "5d", "<none>", "<none>", "<none>", "0/1"]),
    );
    let mut terminating = json!({"metadata": meta("t"), "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running"}});
    terminating["metadata"]["deletionTimestamp"] = json!("2026-01-09T00:00:00Z");
    check(
        "Pod",
        terminating,
        json!(["t", "0/1", "Terminating", "0", "5d", "<none>", "<none>", "<none>", "<none>"]),
    );
    let done = json!({"metadata": meta("d"), "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Succeeded"}});
    let t = table("Pod", &[&done], now(), IncludeObject::Metadata);
    assert_eq!(t["rows"][0]["conditions"][0]["type"], "Completed");
    assert_eq!(
        t["rows"][0]["object"],
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta("d")})
    );
}

#[test]
fn other_kinds() {
    check(
        "Namespace",
        json!({"metadata": meta("ns"), "status": {"phase": "Active"}}),
        json!(["ns", "Active", "5d"]),
    );
    let node = json!({"metadata": {"name": "n1", "creationTimestamp": "2026-01-09T23:59:00Z", "labels": {"node-role.kubernetes.io/control-plane": ""}},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "Ready", "status": "False"}], "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                   "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian"}}});
    check(
        "Node",
        node,
        json!([
            "n1",
            "NotReady,SchedulingDisabled",
            "control-plane",
            "60s",
            "v1.32.0",
            "10.0.0.1",
            "<none>",
            "Debian",
            "<unknown>",
            "<unknown>"
        ]),
    );
    let endpoints = json!({"metadata": meta("web"), "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}, {"ip": "10.0.0.4"}], "ports": [{"port": 80}]}]});
    check(
        "Endpoints",
        endpoints,
        json!(["web", "10.0.0.1:80,10.0.0.2:80,[fd00::3]:80 + 1 more...", "5d"]),
    );
    check("Endpoints", json!({"metadata": meta("none")}), json!(["none", "<none>", "5d"]));
    let slice = json!({"metadata": meta("web-abc"), "addressType": "IPv4", "ports": [{"port": 80}, {"name": "x"}], "endpoints": [{"addresses": ["10.0.0.1"]}]});
    check("EndpointSlice", slice, json!(["web-abc", "IPv4", "80,x", "10.0.0.1", "5d"]));
    check(
        "EndpointSlice",
        json!({"metadata": meta("empty"), "addressType": "IPv4", "endpoints": []}),
        json!(["empty", "IPv4", "<unset>", "<unset>", "5d"]),
    );
    let event = json!({"metadata": meta("web.1"), "type": "Warning", "reason": "PoolExhausted", "message": " no addresses left ",
        "involvedObject": {"kind": "Service", "name": "web"}, "source": {"component": "svcnet-lb"}, "firstTimestamp": "2026-01-09T23:00:00Z", "lastTimestamp": "2026-01-09T23:58:00Z", "count": 3});
    check(
        "Event",
        event,
        json!([
            "2m",
            "Warning",
            "PoolExhausted",
            "service/web",
            "",
            "svcnet-lb",
            "no addresses left",
            "60m",
            3,
            "web.1"
        ]),
    );
    check(
        "ConfigMap",
        json!({"metadata": meta("cm"), "data": {"a": "1", "b": "2"}}),
        json!(["cm", 2, "5d"]),
    );
    check(
        "Lease",
        json!({"metadata": meta("n1"), "spec": {"holderIdentity": "n1"}}),
        json!(["n1", "n1", "5d"]),
    );
    let deployment = json!({"metadata": meta("d"), "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "d"}},
        "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}, {"name": "s", "image": "envoy"}]}}},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
    check("Deployment", deployment, json!(["d", "2/3", 3, 2, "5d", "c,s", "nginx,envoy", "app=d"]));
    let rs = json!({"metadata": meta("d-1"), "spec": {"replicas": 2, "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["b", "a"]}]}}, "status": {"replicas": 2}});
    check("ReplicaSet", rs, json!(["d-1", 2, 2, 0, "5d", "", "", "app in (a,b)"]));
    check("Widget", json!({"metadata": meta("w")}), json!(["w", "5d"]));
}

#[test]
fn include_object_and_columns() {
    let obj = json!({"metadata": meta("x"), "spec": {}});
    assert!(
        table("Namespace", &[&obj], now(), IncludeObject::None)["rows"][0].get("object").is_none()
    );
    assert_eq!(table("Namespace", &[&obj], now(), IncludeObject::Object)["rows"][0]["object"], obj);
    assert_eq!(IncludeObject::parse(Some("Object")), IncludeObject::Object);
    assert_eq!(IncludeObject::parse(None), IncludeObject::Metadata);
    let columns = table_column_definitions("Service");
    let names: Vec<&str> =
        columns.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"]);
    assert_eq!(columns[6]["priority"], 1);
    assert_eq!(columns[0]["format"], "name");
    let empty = table("Service", &[], now(), IncludeObject::Metadata);
    assert_eq!(empty["rows"], json!([]));
    assert_eq!(empty["kind"], "Table");
}
