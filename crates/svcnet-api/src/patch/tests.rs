use serde_json::json;

use super::*;

fn check_smp(kind: &str, target: Value, patch: Value, expected: Value) {
    let meta = match kind {
        "Deployment" => patch_meta("apps", kind),
        "EndpointSlice" => patch_meta("discovery.k8s.io", kind),
        _ => patch_meta("", kind),
    };
    let got =
        strategic_merge_patch(&target, &patch, &meta).unwrap_or_else(|e| panic!("{patch}: {e}"));
    assert_eq!(got, expected, "patch {patch}");
}

fn check_merge(target: Value, patch: Value, expected: Value) {
    let mut got = target;
    merge_patch(&mut got, &patch);
    assert_eq!(got, expected);
}

#[test]
fn merge_patch_rfc7386() {
    check_merge(json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"}));
    check_merge(json!({"a": "b"}), json!({"b": "c"}), json!({"a": "b", "b": "c"}));
    check_merge(json!({"a": "b"}), json!({"a": null}), json!({}));
    check_merge(json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"}));
    check_merge(json!({"a": [{"b": "c"}]}), json!({"a": [1]}), json!({"a": [1]}));
    check_merge(
        json!({"a": {"b": "c"}}),
        json!({"a": {"b": "d", "c": null}}),
        json!({"a": {"b": "d"}}),
    );
    check_merge(json!({"e": null}), json!({"a": 1}), json!({"e": null, "a": 1}));
    check_merge(json!([1, 2]), json!({"a": "b", "c": null}), json!({"a": "b"}));
    check_merge(json!({}), json!({"a": {"bb": {"ccc": null}}}), json!({"a": {"bb": {}}}));
    check_merge(
        json!({"metadata": {"labels": {"a": "1"}}}),
        json!({"metadata": {"labels": {"k": "v"}}}),
        json!({"metadata": {"labels": {"a": "1", "k": "v"}}}),
    );
}

#[test]
fn json_patch_rfc6902() {
    let mut doc = json!({"metadata": {"managedFields": [], "resourceVersion": "3"}, "spec": {"ports": [{"port": 80}]}});
    json_patch(
        &mut doc,
        &json!([
            {"op": "replace", "path": "/metadata/managedFields", "value": [{"manager": "kubectl"}]},
            {"op": "add", "path": "/spec/ports/-", "value": {"port": 443}},
            {"op": "test", "path": "/metadata/resourceVersion", "value": "3"},
            {"op": "copy", "from": "/spec/ports/0", "path": "/spec/first"},
            {"op": "move", "from": "/spec/first", "path": "/spec/moved"},
            {"op": "remove", "path": "/spec/moved"}
        ]),
    )
    .unwrap();
    assert_eq!(
        doc,
        json!({"metadata": {"managedFields": [{"manager": "kubectl"}], "resourceVersion": "3"}, "spec": {"ports": [{"port": 80}, {"port": 443}]}})
    );
    let before = doc.clone();
    let err = json_patch(
        &mut doc,
        &json!([{"op": "remove", "path": "/spec/ports/0"}, {"op": "test", "path": "/metadata/resourceVersion", "value": "4"}]),
    );
    assert!(matches!(err, Err(PatchError::Test(_))), "{err:?}");
    assert_eq!(doc, before, "a failed JSON patch leaves the target alone");
    assert!(matches!(
        json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope"}])),
        Err(PatchError::Apply(_))
    ));
    assert!(matches!(json_patch(&mut doc, &json!({"op": "remove"})), Err(PatchError::Invalid(_))));
}

#[test]
fn smp_kubectl_service_ports() {
    // The first real kubectl 1.32 patch of kubectl-api.md §8.3.
    check_smp(
        "Service",
        json!({"metadata": {"name": "web", "annotations": {"x": "1"}},
               "spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}, {"port": 9090, "protocol": "TCP", "targetPort": 9090}],
                        "selector": {"app": "web"}, "type": "ClusterIP"}}),
        json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}, "labels": {"tier": "frontend"}},
               "spec": {"$setElementOrder/ports": [{"port": 443}, {"port": 80}],
                        "ports": [{"name": "https", "port": 443, "targetPort": 8443}, {"port": 80, "targetPort": 8081}, {"$patch": "delete", "port": 9090}]}}),
        json!({"metadata": {"name": "web", "annotations": {"x": "1", "kubectl.kubernetes.io/last-applied-configuration": "{}"}, "labels": {"tier": "frontend"}},
               "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}, {"port": 80, "protocol": "TCP", "targetPort": 8081}],
                        "selector": {"app": "web"}, "type": "ClusterIP"}}),
    );
    // The second: UDP 80 replaces TCP 80 (merge key `port` only), selector key deleted,
    // externalIPs replaced.
    check_smp(
        "Service",
        json!({"spec": {"externalIPs": ["1.2.3.4"], "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}], "selector": {"app": "web", "extra": "x"}}}),
        json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
               "spec": {"$setElementOrder/ports": [{"port": 80}], "externalIPs": ["5.6.7.8"], "ports": [{"port": 80, "protocol": "UDP"}], "selector": {"extra": null}}}),
        json!({"spec": {"externalIPs": ["5.6.7.8"], "ports": [{"port": 80, "protocol": "UDP", "targetPort": 80}], "selector": {"app": "web"}},
               "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}}}),
    );
}

#[test]
fn smp_kubectl_pod_containers_env_volumes() {
    // The third real patch: container reorder, env merge with delete, ports nulled, retainKeys.
    check_smp(
        "Pod",
        json!({"metadata": {"labels": {"old": "1", "keep": "2"}},
               "spec": {"containers": [
                            {"name": "a", "image": "nginx:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}], "ports": [{"containerPort": 80}]},
                            {"name": "b", "image": "busybox:old"}],
                        "volumes": [{"name": "v", "emptyDir": {}}]}}),
        json!({"metadata": {"annotations": {"a": "b"}, "labels": {"old": null}},
               "spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}], "$setElementOrder/volumes": [{"name": "v"}],
                        "containers": [{"image": "busybox", "name": "b"},
                                       {"$setElementOrder/env": [{"name": "Y"}, {"name": "Z"}], "env": [{"name": "Z", "value": "3"}, {"$patch": "delete", "name": "X"}], "image": "nginx:2", "name": "a", "ports": null}],
                        "volumes": [{"$retainKeys": ["configMap", "name"], "configMap": {"name": "cm"}, "emptyDir": null, "name": "v"}]}}),
        json!({"metadata": {"labels": {"keep": "2"}, "annotations": {"a": "b"}},
               "spec": {"containers": [
                            {"name": "b", "image": "busybox"},
                            {"name": "a", "image": "nginx:2", "env": [{"name": "Y", "value": "2"}, {"name": "Z", "value": "3"}]}],
                        "volumes": [{"name": "v", "configMap": {"name": "cm"}}]}}),
    );
}

#[test]
fn smp_lists_and_directives() {
    let pod = |c: Value| json!({"spec": {"containers": c}});
    // Merge by key: matched elements merge, new ones are placed by normalizeElementOrder.
    check_smp(
        "Pod",
        pod(json!([{"name": "a", "image": "x"}])),
        pod(json!([{"name": "a", "image": "y"}])),
        pod(json!([{"name": "a", "image": "y"}])),
    );
    check_smp(
        "Pod",
        pod(json!([{"name": "a"}])),
        pod(json!([{"name": "b"}])),
        pod(json!([{"name": "b"}, {"name": "a"}])),
    );
    check_smp(
        "Pod",
        pod(json!([{"name": "a"}, {"name": "b"}])),
        pod(json!([{"name": "b", "image": "i"}])),
        pod(json!([{"name": "a"}, {"name": "b", "image": "i"}])),
    );
    // `$patch: replace` inside a merge list replaces the list.
    check_smp(
        "Pod",
        pod(json!([{"name": "a"}, {"name": "b"}])),
        pod(json!([{"name": "c"}, {"$patch": "replace"}])),
        pod(json!([{"name": "c"}])),
    );
    // `$patch: replace` on a map.
    check_smp(
        "Service",
        json!({"spec": {"selector": {"a": "1", "b": "2"}}}),
        json!({"spec": {"selector": {"$patch": "replace", "c": "3"}}}),
        json!({"spec": {"selector": {"c": "3"}}}),
    );
    // `$patch: delete` on a map empties it.
    check_smp(
        "Service",
        json!({"spec": {"selector": {"a": "1"}}}),
        json!({"spec": {"selector": {"$patch": "delete"}}}),
        json!({"spec": {"selector": {}}}),
    );
    // Finalizers are a primitive set: union, and $deleteFromPrimitiveList removes.
    check_smp(
        "Service",
        json!({"metadata": {"finalizers": ["a", "b"]}}),
        json!({"metadata": {"finalizers": ["c", "a"]}}),
        json!({"metadata": {"finalizers": ["c", "a", "b"]}}),
    );
    check_smp(
        "Service",
        json!({"metadata": {"finalizers": ["a", "b"]}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        json!({"metadata": {"finalizers": ["b"]}}),
    );
    check_smp(
        "Service",
        json!({"metadata": {"finalizers": ["a", "b"]}}),
        json!({"metadata": {"$setElementOrder/finalizers": ["b", "a", "c"], "finalizers": ["c"]}}),
        json!({"metadata": {"finalizers": ["b", "a", "c"]}}),
    );
    // Lists without a strategy are replaced; directives inside new values are stripped.
    check_smp(
        "Service",
        json!({"spec": {"externalIPs": ["1.1.1.1"]}}),
        json!({"spec": {"externalIPs": ["2.2.2.2", "3.3.3.3"]}}),
        json!({"spec": {"externalIPs": ["2.2.2.2", "3.3.3.3"]}}),
    );
    check_smp(
        "Service",
        json!({}),
        json!({"spec": {"$setElementOrder/ports": [{"port": 1}], "ports": [{"port": 1}]}}),
        json!({"spec": {"ports": [{"port": 1}]}}),
    );
    check_smp(
        "Service",
        json!({}),
        json!({"spec": {"ports": [{"port": 1, "$patch": "merge"}]}}),
        json!({"spec": {"ports": [{"port": 1}]}}),
    );
    // EndpointSlice endpoints are atomic.
    check_smp(
        "EndpointSlice",
        json!({"endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]}),
        json!({"endpoints": [{"addresses": ["10.0.0.3"]}]}),
        json!({"endpoints": [{"addresses": ["10.0.0.3"]}]}),
    );
    // Unknown kinds: maps merge, lists replace.
    check_smp(
        "Widget",
        json!({"a": {"b": 1}, "l": [1, 2]}),
        json!({"a": {"c": 2}, "l": [3]}),
        json!({"a": {"b": 1, "c": 2}, "l": [3]}),
    );
    // Deployment templates use the pod rules.
    check_smp(
        "Deployment",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}}}}),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "2"}]}}}}),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}}}}),
    );
    // Node status conditions merge by type.
    check_smp(
        "Node",
        json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}]}}),
        json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
        json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}, {"type": "MemoryPressure", "status": "False"}]}}),
    );
}

#[test]
fn smp_errors() {
    let meta = patch_meta("", "Service");
    let bad = [
        json!({"spec": {"ports": [{"name": "x"}]}}),
        json!({"spec": {"ports": ["x"]}}),
        json!({"spec": {"$patch": "explode"}}),
        json!({"spec": {"$bogus": 1}}),
        json!({"spec": {"$retainKeys": "x"}}),
        json!({"spec": {"$retainKeys": ["a"], "b": 1}}),
        json!([1]),
    ];
    for patch in bad {
        assert!(
            strategic_merge_patch(&json!({"spec": {"ports": [{"port": 1}]}}), &patch, &meta)
                .is_err(),
            "{patch}"
        );
    }
}

#[test]
fn smp_set_element_order_with_null_list() {
    check_smp(
        "Service",
        json!({"spec": {"ports": [{"port": 1}]}}),
        json!({"spec": {"$setElementOrder/ports": [], "ports": null}}),
        json!({"spec": {}}),
    );
}

mod prop {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::super::*;

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (0i64..5).prop_map(|n| json!(n)),
            "[xy]{0,2}".prop_map(Value::String),
            proptest::collection::vec((0i64..3).prop_map(|n| json!(n)), 0..3)
                .prop_map(Value::Array),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 24, 3, |inner| {
            proptest::collection::btree_map("[abc]", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        })
    }

    fn object() -> impl Strategy<Value = Value> {
        proptest::collection::btree_map("[abc]", value(), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest! {
        /// Without directives or list metadata, a strategic merge patch is a JSON merge patch.
        #[test]
        fn smp_without_metadata_is_merge_patch(target in object(), patch in object()) {
            let mut expected = target.clone();
            merge_patch(&mut expected, &patch);
            let got = strategic_merge_patch(&target, &patch, &patch_meta("", "Widget")).unwrap();
            prop_assert_eq!(got, expected);
        }

        /// Applying the same merge patch twice changes nothing the second time.
        #[test]
        fn merge_patch_is_idempotent(target in object(), patch in object()) {
            let mut once = target.clone();
            merge_patch(&mut once, &patch);
            let mut twice = once.clone();
            merge_patch(&mut twice, &patch);
            prop_assert_eq!(once, twice);
        }
    }
}
