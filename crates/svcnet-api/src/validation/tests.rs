use serde_json::json;

use super::*;

fn service(spec: Value) -> Value {
    let mut svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": spec});
    crate::defaults::default_object("", "Service", &mut svc).unwrap();
    svc
}

fn rendered(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(|e| e.to_string()).collect()
}

/// Validates a (defaulted) Service spec and compares the rendered `field: message` lines.
fn check(spec: Value, expected: &[&str]) {
    let svc = service(spec.clone());
    assert_eq!(rendered(&validate_object("", "Service", &svc, None)), expected, "spec {spec}");
}

fn check_update(old: Value, new: Value, expected: &[&str]) {
    let (old, new) = (service(old), service(new));
    assert_eq!(rendered(&validate_object("", "Service", &new, Some(&old))), expected);
}

const P80: &str = r#"[{"port": 80}]"#;

fn ports80() -> Value {
    serde_json::from_str(P80).unwrap()
}

#[test]
fn valid_services() {
    check(json!({"ports": ports80(), "selector": {"app": "web"}}), &[]);
    check(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}), &[]);
    check(
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 30000, "ports": ports80(), "loadBalancerSourceRanges": ["10.0.0.0/8"], "loadBalancerClass": "svcnet.io/lb"}),
        &[],
    );
    check(json!({"type": "ExternalName", "externalName": "example.com."}), &[]);
    check(json!({"clusterIP": "None", "clusterIPs": ["None"]}), &[]);
    check(
        json!({"clusterIP": "10.0.0.10", "clusterIPs": ["10.0.0.10", "fd00::10"], "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack", "ports": ports80()}),
        &[],
    );
    check(
        json!({"ports": [{"name": "http", "port": 80, "targetPort": "http-alt"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}),
        &[],
    );
    check(
        json!({"ports": [{"name": "a", "port": 53, "protocol": "TCP"}, {"name": "b", "port": 53, "protocol": "UDP"}]}),
        &[],
    );
    check(
        json!({"ports": ports80(), "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86400}}}),
        &[],
    );
    check(
        json!({"ports": ports80(), "externalIPs": ["192.0.2.10"], "trafficDistribution": "PreferClose"}),
        &[],
    );
}

#[test]
fn service_name_and_metadata() {
    let mut svc = service(json!({"ports": ports80()}));
    svc["metadata"]["name"] = json!("Invalid_Name");
    svc["metadata"]["labels"] = json!({"bad key": "v", "ok": "bad value!"});
    assert_eq!(
        rendered(&validate_object("", "Service", &svc, None)),
        vec![
            "metadata.name: Invalid value: \"Invalid_Name\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
            "metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            "metadata.labels: Invalid value: \"bad value!\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
        ]
    );
    svc["metadata"] = json!({"namespace": "default"});
    assert_eq!(
        rendered(&validate_object("", "Service", &svc, None)),
        vec!["metadata.name: Required value: name or generateName is required"]
    );
    svc["metadata"] = json!({"generateName": "web-", "namespace": "default", "annotations": {"big": "x".repeat(300 * 1024)}});
    assert_eq!(
        rendered(&validate_object("", "Service", &svc, None)),
        vec![
            "metadata.name: Required value: name or generateName is required",
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        ]
    );
}

#[test]
fn service_ports() {
    check(json!({}), &["spec.ports: Required value"]);
    check(
        json!({"ports": [{"port": 0}]}),
        &[
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
        ],
    );
    check(
        json!({"ports": [{"port": 70000, "targetPort": 80}]}),
        &["spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"],
    );
    check(
        json!({"ports": [{"port": 80, "protocol": "ICMP"}]}),
        &[
            "spec.ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        ],
    );
    check(
        json!({"ports": [{"port": 80}, {"port": 81}]}),
        &["spec.ports[0].name: Required value", "spec.ports[1].name: Required value"],
    );
    check(
        json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 80}]}),
        &[
            "spec.ports[1].name: Duplicate value: \"a\"",
            "spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}",
        ],
    );
    check(
        json!({"ports": [{"port": 80, "targetPort": "HTTP"}]}),
        &[
            "spec.ports[0].targetPort: Invalid value: \"HTTP\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            "spec.ports[0].targetPort: Invalid value: \"HTTP\": must contain at least one letter (a-z)",
        ],
    );
    check(
        json!({"ports": [{"port": 80, "nodePort": 30080}]}),
        &["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"],
    );
    check(
        json!({"type": "NodePort", "ports": [{"name": "a", "port": 80, "nodePort": 30080}, {"name": "b", "port": 81, "nodePort": 30080}]}),
        &["spec.ports[1].nodePort: Duplicate value: 30080"],
    );
    check(
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 70000}]}),
        &["spec.ports[0].nodePort: Invalid value: 70000: must be between 1 and 65535, inclusive"],
    );
    check(
        json!({"type": "LoadBalancer", "ports": [{"port": 10250}]}),
        &[
            "spec.ports[0]: Invalid value: 10250: may not expose port 10250 externally since it is used by kubelet",
        ],
    );
}

#[test]
fn service_type_rules() {
    check(
        json!({"type": "Bogus", "ports": ports80()}),
        &[
            "spec.type: Unsupported value: \"Bogus\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
        ],
    );
    check(json!({"type": "ExternalName"}), &["spec.externalName: Required value"]);
    check(
        json!({"type": "ExternalName", "externalName": "Not_A_Name"}),
        &[
            "spec.externalName: Invalid value: \"Not_A_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ],
    );
    check(
        json!({"type": "ExternalName", "externalName": "a.com", "clusterIP": "10.0.0.1", "ipFamilyPolicy": "SingleStack"}),
        &[
            "spec.clusterIPs: Forbidden: may not be set for ExternalName services",
            "spec.ipFamilyPolicy: Forbidden: may not be set for ExternalName services",
        ],
    );
    check(
        json!({"type": "NodePort", "clusterIP": "None", "clusterIPs": ["None"], "ports": ports80()}),
        &[
            "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services",
        ],
    );
    check(
        json!({"ports": ports80(), "loadBalancerSourceRanges": ["10.0.0.0/8"], "loadBalancerIP": "1.2.3.4", "loadBalancerClass": "x/y", "allocateLoadBalancerNodePorts": false}),
        &[
            "spec.LoadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'",
            "spec.loadBalancerIP: Forbidden: may only be used when `type` is 'LoadBalancer'",
            "spec.allocateLoadBalancerNodePorts: Forbidden: may only be used when `type` is 'LoadBalancer'",
            "spec.loadBalancerClass: Forbidden: may only be used when `type` is 'LoadBalancer'",
        ],
    );
    check(
        json!({"type": "LoadBalancer", "ports": ports80(), "loadBalancerSourceRanges": ["10.0.0.0/33"]}),
        &[
            "spec.LoadBalancerSourceRanges[0]: Invalid value: \"10.0.0.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        ],
    );
    check(
        json!({"type": "LoadBalancer", "ports": ports80(), "healthCheckNodePort": 30000}),
        &[
            "spec.healthCheckNodePort: Invalid value: 30000: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        ],
    );
    check(
        json!({"ports": ports80(), "externalTrafficPolicy": "Local"}),
        &[
            "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services",
        ],
    );
    check(
        json!({"type": "NodePort", "ports": ports80(), "externalTrafficPolicy": "Sometimes"}),
        &[
            "spec.externalTrafficPolicy: Unsupported value: \"Sometimes\": supported values: \"Cluster\", \"Local\"",
        ],
    );
    check(
        json!({"ports": ports80(), "internalTrafficPolicy": "Nearby"}),
        &[
            "spec.internalTrafficPolicy: Unsupported value: \"Nearby\": supported values: \"Cluster\", \"Local\"",
        ],
    );
    check(
        json!({"ports": ports80(), "trafficDistribution": "Anywhere"}),
        &[
            "spec.trafficDistribution: Unsupported value: \"Anywhere\": supported values: \"PreferClose\"",
        ],
    );
    check(
        json!({"ports": ports80(), "externalIPs": ["1.2.3", "127.0.0.1"]}),
        &[
            "spec.externalIPs[0]: Invalid value: \"1.2.3\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            "spec.externalIPs[1]: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
        ],
    );
    check(
        json!({"ports": ports80(), "selector": {"app": "-x"}}),
        &[
            "spec.selector: Invalid value: \"-x\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
        ],
    );
}

#[test]
fn service_affinity_and_families() {
    check(
        json!({"ports": ports80(), "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 90000}}}),
        &[
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 90000: must be greater than 0 and less than 86400",
        ],
    );
    check(
        json!({"ports": ports80(), "sessionAffinity": "Sticky"}),
        &[
            "spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"",
        ],
    );
    check(
        json!({"ports": ports80(), "clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.2"]}),
        &[
            "spec.clusterIPs: Invalid value: []string{\"10.0.0.2\"}: first value must match `clusterIP`",
        ],
    );
    check(
        json!({"ports": ports80(), "clusterIPs": ["10.0.0.2"]}),
        &[
            "spec.clusterIPs: Invalid value: []string{\"10.0.0.2\"}: must be empty when `clusterIP` is not specified",
        ],
    );
    check(
        json!({"ports": ports80(), "clusterIP": "10.0.0.300", "clusterIPs": ["10.0.0.300"]}),
        &[
            "spec.clusterIPs[0]: Invalid value: \"10.0.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ],
    );
    check(
        json!({"ports": ports80(), "clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1", "10.0.0.2"], "ipFamilyPolicy": "PreferDualStack"}),
        &[
            "spec.clusterIPs: Invalid value: []string{\"10.0.0.1\", \"10.0.0.2\"}: may specify no more than one IP for each IP family",
        ],
    );
    check(
        json!({"ports": ports80(), "clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ipFamilies": ["IPv6"]}),
        &[
            "spec.clusterIPs[0]: Invalid value: \"10.0.0.1\": expected an IPv6 value as indicated by `ipFamilies[0]`",
        ],
    );
    check(
        json!({"ports": ports80(), "ipFamilies": ["IPv4", "IPv4"]}),
        &["spec.ipFamilies[1]: Duplicate value: \"IPv4\""],
    );
    check(
        json!({"ports": ports80(), "ipFamilies": ["IPv5"]}),
        &["spec.ipFamilies[0]: Unsupported value: \"IPv5\": supported values: \"IPv4\", \"IPv6\""],
    );
    check(
        json!({"ports": ports80(), "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "SingleStack"}),
        &[
            "spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
        ],
    );
    check(
        json!({"ports": ports80(), "ipFamilyPolicy": "Triple"}),
        &[
            "spec.ipFamilyPolicy: Unsupported value: \"Triple\": supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\"",
        ],
    );
}

#[test]
fn service_updates() {
    let base = json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "ports": ports80()});
    check_update(base.clone(), base.clone(), &[]);
    let mut changed = base.clone();
    changed["clusterIP"] = json!("10.0.0.2");
    changed["clusterIPs"] = json!(["10.0.0.2"]);
    check_update(
        base.clone(),
        changed,
        &["spec.clusterIPs[0]: Invalid value: []string{\"10.0.0.2\"}: may not change once set"],
    );
    // Changing to ExternalName may drop the cluster IP.
    check_update(base.clone(), json!({"type": "ExternalName", "externalName": "example.com"}), &[]);
    let mut families = base.clone();
    families["ipFamilies"] = json!(["IPv6"]);
    families["clusterIP"] = json!("fd00::1");
    families["clusterIPs"] = json!(["fd00::1"]);
    check_update(
        base.clone(),
        families,
        &[
            "spec.clusterIPs[0]: Invalid value: []string{\"fd00::1\"}: may not change once set",
            "spec.ipFamilies[0]: Invalid value: []string{\"IPv6\"}: may not change once set",
        ],
    );
    let lb = json!({"type": "LoadBalancer", "loadBalancerClass": "a.io/x", "ports": ports80()});
    let mut lb2 = lb.clone();
    lb2["loadBalancerClass"] = json!("b.io/y");
    check_update(
        lb,
        lb2,
        &["spec.loadBalancerClass: Invalid value: \"b.io/y\": may not change once set"],
    );
    let old = service(base.clone());
    let mut moved = old.clone();
    moved["metadata"]["namespace"] = json!("other");
    moved["metadata"]["uid"] = json!("u2");
    assert_eq!(
        rendered(&validate_object("", "Service", &moved, Some(&old))),
        vec![
            "metadata.namespace: Invalid value: \"other\": field is immutable",
            "metadata.uid: Invalid value: \"u2\": field is immutable",
        ]
    );
}

#[test]
fn service_status() {
    let svc: Service =
        serde_json::from_value(service(json!({"type": "LoadBalancer", "ports": ports80()})))
            .unwrap();
    let mut new = svc.clone();
    new.status = serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.5", "ipMode": "VIP"}, {"ip": "bad"}, {"hostname": "lb.example.com", "ipMode": "Proxy"}]}})).unwrap();
    assert_eq!(
        rendered(&validate_service_status_update(&new, &svc)),
        vec![
            "status.loadBalancer.ingress[1].ip: Invalid value: \"bad\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            "status.loadBalancer.ingress[1].ipMode: Required value: must be specified when `ip` is set",
            "status.loadBalancer.ingress[2].ipMode: Forbidden: may not be specified when `ip` is not set",
        ]
    );
}

fn check_object(group: &str, kind: &str, obj: Value, expected: &[&str]) {
    assert_eq!(rendered(&validate_object(group, kind, &obj, None)), expected, "{obj}");
}

#[test]
fn other_kinds() {
    let meta = json!({"name": "x", "namespace": "default"});
    check_object(
        "",
        "Pod",
        json!({"metadata": meta, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
        &[],
    );
    check_object(
        "",
        "Pod",
        json!({"metadata": meta, "spec": {"containers": []}}),
        &["spec.containers: Required value"],
    );
    check_object(
        "",
        "Pod",
        json!({"metadata": meta, "spec": {"containers": [{"name": "C"}, {"name": "C", "image": "x", "ports": [{"containerPort": 0, "name": "HTTP"}]}]}}),
        &[
            "spec.containers[0].name: Invalid value: \"C\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            "spec.containers[0].image: Required value",
            "spec.containers[1].name: Invalid value: \"C\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            "spec.containers[1].name: Duplicate value: \"C\"",
            "spec.containers[1].ports[0].name: Invalid value: \"HTTP\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            "spec.containers[1].ports[0].name: Invalid value: \"HTTP\": must contain at least one letter (a-z)",
            "spec.containers[1].ports[0].containerPort: Required value",
        ],
    );
    check_object(
        "",
        "Pod",
        json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        &["metadata.namespace: Required value"],
    );
    check_object(
        "",
        "Namespace",
        json!({"metadata": {"name": "a.b"}}),
        &[
            "metadata.name: Invalid value: \"a.b\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        ],
    );
    check_object(
        "",
        "Node",
        json!({"metadata": {"name": "node-1.example", "namespace": "x"}}),
        &["metadata.namespace: Forbidden: not allowed on this type"],
    );
    let template = json!({"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    check_object(
        "apps",
        "Deployment",
        json!({"metadata": meta, "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": template}}),
        &[],
    );
    check_object(
        "apps",
        "Deployment",
        json!({"metadata": meta, "spec": {"replicas": -1, "selector": {"matchLabels": {"app": "other"}}, "template": template}}),
        &[
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"d\"}: `selector` does not match template `labels`",
        ],
    );
    check_object(
        "apps",
        "Deployment",
        json!({"metadata": meta, "spec": {"template": template}}),
        &["spec.selector: Required value"],
    );
    check_object(
        "discovery.k8s.io",
        "EndpointSlice",
        json!({"metadata": meta, "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"name": "http", "port": 80}]}),
        &[],
    );
    check_object(
        "discovery.k8s.io",
        "EndpointSlice",
        json!({"metadata": meta, "endpoints": [{"addresses": []}]}),
        &[
            "addressType: Required value",
            "endpoints[0].addresses: Required value: must contain at least 1 address",
        ],
    );
    check_object(
        "discovery.k8s.io",
        "EndpointSlice",
        json!({"metadata": meta, "addressType": "IPv6", "endpoints": [{"addresses": ["10.0.0.1"]}]}),
        &["endpoints[0].addresses[0]: Invalid value: \"10.0.0.1\": must be a valid IPv6 address"],
    );
    check_object(
        "coordination.k8s.io",
        "Lease",
        json!({"metadata": meta, "spec": {"leaseDurationSeconds": 0, "holderIdentity": "n"}}),
        &["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"],
    );
    check_object(
        "",
        "ConfigMap",
        json!({"metadata": meta, "data": {"ok.key": "v", "bad/key": "v"}}),
        &[
            "data[bad/key]: Invalid value: \"bad/key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
        ],
    );
    check_object(
        "",
        "Endpoints",
        json!({"metadata": meta, "subsets": [{"addresses": [{"ip": "x"}], "ports": [{"port": 80}]}]}),
        &[
            "subsets[0].addresses[0].ip: Invalid value: \"x\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ],
    );
    check_object(
        "",
        "Event",
        json!({"metadata": meta, "involvedObject": {"kind": "Service", "name": "web", "namespace": "default"}}),
        &[],
    );
}

#[test]
fn deployment_strategy() {
    let meta = json!({"name": "x", "namespace": "default"});
    let template = json!({"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let strategy = |s: Value| json!({"metadata": meta, "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": template, "strategy": s}});
    check_object(
        "apps",
        "Deployment",
        strategy(
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}}),
        ),
        &[],
    );
    check_object(
        "apps",
        "Deployment",
        strategy(
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}}),
        ),
        &[
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0",
        ],
    );
    check_object(
        "apps",
        "Deployment",
        strategy(json!({"type": "Recreate", "rollingUpdate": {}})),
        &[
            "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'",
        ],
    );
    check_object(
        "apps",
        "Deployment",
        strategy(json!({"type": "Blue"})),
        &[
            "spec.strategy.type: Unsupported value: \"Blue\": supported values: \"Recreate\", \"RollingUpdate\"",
        ],
    );
}
