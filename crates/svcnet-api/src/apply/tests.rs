use serde_json::json;

use super::*;

const T1: &str = "2026-01-01T00:00:00Z";
const T2: &str = "2026-01-01T00:01:00Z";

fn svc(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, ApplyError> {
    server_side_apply(live, applied, manager, force, &patch_meta("", "Service"), T1)
}

fn managed(obj: &Value) -> Vec<(String, String, Value)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or("").to_string(),
                        e["operation"].as_str().unwrap_or("").to_string(),
                        e["fieldsV1"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn apply_create_records_fields_v1() {
    let applied =
        svc(json!({"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "web"}}));
    let out = apply(None, &applied, "kubectl", false).unwrap();
    assert_eq!(out["spec"], applied["spec"]);
    assert_eq!(
        managed(&out),
        vec![(
            "kubectl".to_string(),
            "Apply".to_string(),
            json!({"f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}, "f:targetPort": {}}}, "f:selector": {}}})
        )]
    );
    let entry = &out["metadata"]["managedFields"][0];
    assert_eq!(entry["apiVersion"], "v1");
    assert_eq!(entry["fieldsType"], "FieldsV1");
    assert_eq!(entry["time"], T1);
}

#[test]
fn fields_v1_round_trip() {
    let v1 = json!({"f:metadata": {"f:finalizers": {".": {}, "v:\"a\"": {}}, "f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}}}});
    let set = fields_from_v1(&v1);
    assert_eq!(set.len(), 6);
    assert_eq!(fields_to_v1(&set), v1);
    let display: Vec<String> = set.iter().map(|p| field_path_display(p)).collect();
    assert!(
        display.contains(&".spec.ports[port=80,protocol=\"TCP\"].port".to_string()),
        "{display:?}"
    );
    assert!(display.contains(&".metadata.finalizers[=\"a\"]".to_string()), "{display:?}");
}

#[test]
fn apply_removes_fields_it_stopped_applying() {
    let first = apply(None, &svc(json!({"ports": [{"port": 80}], "selector": {"app": "web"}, "externalIPs": ["1.2.3.4"]})), "kubectl", false).unwrap();
    let second = apply(
        Some(&first),
        &svc(json!({"ports": [{"port": 80}], "selector": {"app": "web"}})),
        "kubectl",
        false,
    )
    .unwrap();
    assert_eq!(second["spec"], json!({"ports": [{"port": 80}], "selector": {"app": "web"}}));
    // A removed list entry goes too; one owned by another manager stays.
    let shared = record_update(
        Some(&second),
        &{
            let mut v = second.clone();
            v["spec"]["ports"].as_array_mut().unwrap().push(json!({"port": 81, "protocol": "TCP"}));
            v
        },
        "kubectl-edit",
        "Update",
        T2,
    );
    let third =
        apply(Some(&shared), &svc(json!({"selector": {"app": "web"}})), "kubectl", false).unwrap();
    assert_eq!(
        third["spec"],
        json!({"ports": [{"port": 81, "protocol": "TCP"}], "selector": {"app": "web"}})
    );
}

#[test]
fn apply_conflicts_with_update_manager() {
    let created = record_update(
        None,
        &svc(
            json!({"type": "ClusterIP", "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]}),
        ),
        "kubectl-client-side-apply",
        "Update",
        T1,
    );
    assert_eq!(
        managed(&created)[0].2,
        json!({"f:spec": {"f:ports": {".": {}, "k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}}, "f:type": {}}})
    );
    // Same values: shared ownership, no conflict.
    let same = apply(Some(&created), &svc(json!({"type": "ClusterIP"})), "kubectl", false).unwrap();
    assert_eq!(managed(&same).len(), 2);
    // A different value: conflict with the Update manager, worded as kube-apiserver does.
    let err = apply(
        Some(&created),
        &svc(json!({"type": "NodePort", "ports": [{"port": 80, "targetPort": 8080}]})),
        "kubectl",
        false,
    )
    .unwrap_err();
    let ApplyError::Conflict(conflicts) = &err else { panic!("{err:?}") };
    let fields: Vec<&str> = conflicts.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, vec![".spec.ports[port=80,protocol=\"TCP\"].targetPort", ".spec.type"]);
    assert_eq!(
        conflicts[0].cause_message(),
        "conflict with \"kubectl-client-side-apply\" using v1"
    );
    assert_eq!(
        err.to_string(),
        "Apply failed with 2 conflicts: conflicts with \"kubectl-client-side-apply\" using v1:\n- .spec.ports[port=80,protocol=\"TCP\"].targetPort\n- .spec.type"
    );
    // Force moves the ownership.
    let forced = apply(Some(&created), &svc(json!({"type": "NodePort"})), "kubectl", true).unwrap();
    assert_eq!(forced["spec"]["type"], "NodePort");
    let entries = managed(&forced);
    assert_eq!(entries[0].0, "kubectl");
    assert_eq!(entries[0].2, json!({"f:spec": {"f:type": {}}}));
    assert!(entries[1].2["f:spec"].get("f:type").is_none(), "{:?}", entries[1]);
}

#[test]
fn apply_conflicts_between_appliers() {
    let a = apply(None, &svc(json!({"type": "NodePort"})), "alice", false).unwrap();
    let err = apply(Some(&a), &svc(json!({"type": "ClusterIP"})), "bob", false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"alice\": .spec.type"
    );
    // Alice can change her own field.
    let again = apply(Some(&a), &svc(json!({"type": "LoadBalancer"})), "alice", false).unwrap();
    assert_eq!(again["spec"]["type"], "LoadBalancer");
    assert_eq!(managed(&again).len(), 1);
}

#[test]
fn apply_rejects_managed_fields_and_non_objects() {
    let mut applied = svc(json!({}));
    applied["metadata"]["managedFields"] = json!([]);
    assert!(matches!(apply(None, &applied, "m", false), Err(ApplyError::Invalid(_))));
    assert!(matches!(apply(None, &json!([1]), "m", false), Err(ApplyError::Invalid(_))));
    let bad = svc(json!({"ports": [{"targetPort": 1}]}));
    assert!(matches!(apply(None, &bad, "m", false), Err(ApplyError::Invalid(_))));
}

#[test]
fn record_update_moves_ownership_and_keeps_time_on_noop() {
    let created =
        record_update(None, &svc(json!({"type": "ClusterIP"})), "kubectl-create", "Update", T1);
    let mut labelled = created.clone();
    labelled["metadata"]["labels"] = json!({"k": "v"});
    let labelled = record_update(Some(&created), &labelled, "kubectl-label", "Update", T2);
    let entries = managed(&labelled);
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries[1],
        (
            "kubectl-label".to_string(),
            "Update".to_string(),
            json!({"f:metadata": {"f:labels": {".": {}, "f:k": {}}}})
        )
    );
    // A no-op write changes nothing.
    let again =
        record_update(Some(&labelled), &labelled, "kubectl-edit", "Update", "2030-01-01T00:00:00Z");
    assert_eq!(again["metadata"]["managedFields"], labelled["metadata"]["managedFields"]);
    // An edit takes the field over; the old owner loses it and disappears when empty.
    let mut edited = labelled.clone();
    edited["spec"]["type"] = json!("NodePort");
    let edited = record_update(Some(&labelled), &edited, "kubectl-edit", "Update", T2);
    let names: Vec<String> = managed(&edited).into_iter().map(|e| e.0).collect();
    assert_eq!(names, vec!["kubectl-edit", "kubectl-label"]);
    // Status and system metadata are never tracked.
    let mut with_status = edited.clone();
    with_status["status"] = json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}});
    with_status["metadata"]["resourceVersion"] = json!("9");
    let after = record_update(Some(&edited), &with_status, "x", "Update", T2);
    assert_eq!(after["metadata"]["managedFields"], edited["metadata"]["managedFields"]);
}

#[test]
fn record_update_honours_sent_managed_fields() {
    let created = record_update(
        None,
        &svc(json!({"type": "ClusterIP"})),
        "kubectl-client-side-apply",
        "Update",
        T1,
    );
    // The CSA→SSA migration writes managedFields with a JSON patch.
    let mut migrated = created.clone();
    migrated["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1", "time": T1,
        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:type": {}}}}]);
    let out = record_update(Some(&created), &migrated, "kubectl", "Update", T2);
    assert_eq!(
        managed(&out),
        vec![("kubectl".to_string(), "Apply".to_string(), json!({"f:spec": {"f:type": {}}}))]
    );
    // A single empty entry resets them.
    let mut reset = created.clone();
    reset["metadata"]["managedFields"] = json!([{}]);
    let out = record_update(Some(&created), &reset, "x", "Update", T2);
    assert!(out["metadata"].get("managedFields").is_none());
}

#[test]
fn apply_sets_and_deployments() {
    let meta = patch_meta("apps", "Deployment");
    let d = |replicas: i64, image: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "finalizers": ["a"]},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "d"}},
                        "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": image}]}}}})
    };
    let out = server_side_apply(None, &d(1, "nginx"), "kubectl", false, &meta, T1).unwrap();
    let fields = &out["metadata"]["managedFields"][0]["fieldsV1"];
    assert_eq!(fields["f:metadata"], json!({"f:finalizers": {"v:\"a\"": {}}}));
    assert_eq!(fields["f:spec"]["f:selector"], json!({}));
    assert_eq!(
        fields["f:spec"]["f:template"]["f:spec"]["f:containers"],
        json!({"k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}})
    );
    let scaled = record_update(Some(&out), &d(3, "nginx"), "kube-controller-manager", "Update", T2);
    let err = server_side_apply(Some(&scaled), &d(1, "nginx:2"), "kubectl", false, &meta, T2)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kube-controller-manager\" using apps/v1: .spec.replicas"
    );
}

#[test]
fn status_subresource_writers_are_recorded_separately() {
    let created =
        record_update(None, &svc(json!({"type": "LoadBalancer"})), "kubectl-create", "Update", T1);
    let mut with_status = created.clone();
    with_status["status"] =
        json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.1", "ipMode": "VIP"}]}});
    let out = record_update_subresource(
        Some(&created),
        &with_status,
        "svcnet-lb",
        "Update",
        Some("status"),
        T2,
    );
    let entries = out["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["manager"], "svcnet-lb");
    assert_eq!(entries[1]["subresource"], "status");
    assert_eq!(entries[1]["fieldsV1"], json!({"f:status": {"f:loadBalancer": {"f:ingress": {}}}}));
}

#[test]
fn kubectl_csa_to_ssa_migration_flow() {
    // `kubectl apply` (client-side) creates a defaulted Service.
    let mut created =
        svc(json!({"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "web"}}));
    created["metadata"]["annotations"] =
        json!({"kubectl.kubernetes.io/last-applied-configuration": "{}"});
    crate::defaults::default_object("", "Service", &mut created).unwrap();
    let created = record_update(None, &created, "kubectl-client-side-apply", "Update", T1);
    // kubectl migrates the CSA entry to an Apply entry for "kubectl" with a JSON patch.
    let mut migrated = created.clone();
    let mut entry = created["metadata"]["managedFields"][0].clone();
    entry["manager"] = json!("kubectl");
    entry["operation"] = json!("Apply");
    migrated["metadata"]["managedFields"] = json!([entry]);
    let migrated = record_update(Some(&created), &migrated, "kubectl", "Update", T2);
    assert_eq!(migrated["metadata"]["managedFields"][0]["manager"], "kubectl");
    // kubectl-last-applied applies only the annotation, then kubectl applies the config.
    let annotation = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default",
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}}});
    let with_last = apply(Some(&migrated), &annotation, "kubectl-last-applied", false).unwrap();
    let config =
        svc(json!({"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "web"}}));
    let mut applied = apply(Some(&with_last), &config, "kubectl", false).unwrap();
    crate::defaults::default_object("", "Service", &mut applied).unwrap();
    assert_eq!(applied["spec"], created["spec"], "nothing changed for the user");
    assert_eq!(applied["metadata"]["annotations"], created["metadata"]["annotations"]);
    // Another manager then changes a field kubectl applied: the next apply with the old value
    // conflicts with it.
    let mut patched = applied.clone();
    patched["spec"]["ports"][0]["targetPort"] = json!(9090);
    let patched = record_update(Some(&applied), &patched, "kubectl-patch", "Update", T2);
    let err = apply(Some(&patched), &config, "kubectl", false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl-patch\" using v1: .spec.ports[port=80,protocol=\"TCP\"].targetPort"
    );
}
