//! Strict field validation (`fieldValidation=Strict|Warn`): which fields of a request body the
//! typed k8s-openapi struct does not know. The real server reports these as
//! `unknown field "spec.bogusField"`.
//!
//! Leaves out duplicate-field detection: the body is already a `serde_json::Value`, where
//! duplicates have collapsed.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Paths present in `input` but dropped by a round trip through `T`, e.g. `spec.bogusField`,
/// `spec.ports[0].bogus`. Input values that are `null` are ignored. If `input` does not
/// deserialize at all, the result is empty (the caller reports the decode error).
pub fn unknown_fields<T: DeserializeOwned + Serialize>(input: &Value) -> Vec<String> {
    let Ok(typed) = serde_json::from_value::<T>(input.clone()) else { return Vec::new() };
    let Ok(round_trip) = serde_json::to_value(&typed) else { return Vec::new() };
    let mut out = Vec::new();
    diff("", input, &round_trip, &mut out);
    out
}

fn diff(path: &str, input: &Value, round_trip: &Value, out: &mut Vec<String>) {
    match (input, round_trip) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                let child = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match b.get(k) {
                    Some(bv) => diff(&child, v, bv, out),
                    None => out.push(child),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (av, bv)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), av, bv, out);
            }
        }
        _ => {}
    }
}

/// [`unknown_fields`] for every kind the API server serves; an unknown kind yields nothing.
pub fn unknown_fields_for_kind(
    group: &str,
    version: &str,
    kind: &str,
    input: &Value,
) -> Vec<String> {
    use k8s_openapi::api::{
        apps::v1 as apps, coordination::v1 as coordination, core::v1 as core,
        discovery::v1 as discovery, events::v1 as events,
    };
    match (group, version, kind) {
        ("", "v1", "Service") => unknown_fields::<core::Service>(input),
        ("", "v1", "Pod") => unknown_fields::<core::Pod>(input),
        ("", "v1", "Namespace") => unknown_fields::<core::Namespace>(input),
        ("", "v1", "Node") => unknown_fields::<core::Node>(input),
        ("", "v1", "Endpoints") => unknown_fields::<core::Endpoints>(input),
        ("", "v1", "Event") => unknown_fields::<core::Event>(input),
        ("", "v1", "ConfigMap") => unknown_fields::<core::ConfigMap>(input),
        ("", "v1", "Secret") => unknown_fields::<core::Secret>(input),
        ("discovery.k8s.io", "v1", "EndpointSlice") => {
            unknown_fields::<discovery::EndpointSlice>(input)
        }
        ("coordination.k8s.io", "v1", "Lease") => unknown_fields::<coordination::Lease>(input),
        ("events.k8s.io", "v1", "Event") => unknown_fields::<events::Event>(input),
        ("apps", "v1", "Deployment") => unknown_fields::<apps::Deployment>(input),
        ("apps", "v1", "ReplicaSet") => unknown_fields::<apps::ReplicaSet>(input),
        _ => Vec::new(),
    }
}

/// The warning (Warn) or cause text for one unknown field: `unknown field "spec.bogusField"`.
pub fn unknown_field_message(path: &str) -> String {
    format!("unknown field {}", crate::names::quote(path))
}

/// The 400 message for a strict create/update:
/// `Service in version "v1" cannot be handled as a Service: strict decoding error: unknown field "spec.bogusField"`.
pub fn strict_decoding_message(kind: &str, version: &str, unknown: &[String]) -> String {
    let fields: Vec<String> = unknown.iter().map(|p| unknown_field_message(p)).collect();
    format!(
        "{kind} in version {} cannot be handled as a {kind}: strict decoding error: {}",
        crate::names::quote(version),
        fields.join(", ")
    )
}

/// The 400 message for an apply with a field the schema lacks:
/// `failed to create typed patch object (default/bad; /v1, Kind=Service): .spec.bogusField: field not declared in schema`.
pub fn apply_unknown_field_message(
    namespace: &str,
    name: &str,
    group: &str,
    version: &str,
    kind: &str,
    unknown: &[String],
) -> String {
    let first = unknown.first().map(String::as_str).unwrap_or("");
    // Unknown-field paths use `[i]` for list indexes; structured-merge-diff prints the same.
    format!(
        "failed to create typed patch object ({namespace}/{name}; {group}/{version}, Kind={kind}): .{first}: field not declared in schema"
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(group: &str, kind: &str, input: Value, expected: &[&str]) {
        assert_eq!(unknown_fields_for_kind(group, "v1", kind, &input), expected, "{input}");
    }

    #[test]
    fn unknown_fields_are_reported_with_paths() {
        let svc = |spec: Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"any": "x"}}, "spec": spec});
        check("", "Service", svc(json!({"ports": [{"port": 80}], "selector": {"app": "x"}})), &[]);
        check("", "Service", svc(json!({"bogusField": 1})), &["spec.bogusField"]);
        check(
            "",
            "Service",
            svc(json!({"ports": [{"port": 80}, {"port": 81, "bogus": true}]})),
            &["spec.ports[1].bogus"],
        );
        check("", "Service", svc(json!({"clusterIP": null, "nested": {"a": 1}})), &["spec.nested"]);
        check(
            "",
            "Service",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x", "bogus": "y"}, "extra": 1}),
            &["metadata.bogus", "extra"],
        );
        check(
            "",
            "Pod",
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicy": "Always", "bad": 1}]}}),
            &["spec.containers[0].bad"],
        );
        check(
            "discovery.k8s.io",
            "EndpointSlice",
            json!({"metadata": {"name": "s"}, "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"], "zone": "a", "what": 1}]}),
            &["endpoints[0].what"],
        );
        check(
            "apps",
            "Deployment",
            json!({"metadata": {"name": "d"}, "spec": {"selector": {}, "template": {"spec": {"containers": []}}, "paused": false, "x": 1}}),
            &["spec.x"],
        );
        check("", "Widget", json!({"anything": 1}), &[]);
        // Input that does not decode at all is left to the decoder's error.
        check("", "Service", json!({"spec": {"ports": "nope"}}), &[]);
    }

    #[test]
    fn messages() {
        let unknown = vec!["spec.bogusField".to_string()];
        assert_eq!(
            strict_decoding_message("Service", "v1", &unknown),
            "Service in version \"v1\" cannot be handled as a Service: strict decoding error: unknown field \"spec.bogusField\""
        );
        assert_eq!(unknown_field_message("spec.x"), "unknown field \"spec.x\"");
        assert_eq!(
            apply_unknown_field_message("default", "bad", "", "v1", "Service", &unknown),
            "failed to create typed patch object (default/bad; /v1, Kind=Service): .spec.bogusField: field not declared in schema"
        );
    }
}
