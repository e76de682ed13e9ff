//! Per-kind behaviour: the typed k8s-openapi struct of each kind (for decoding, dropping unknown
//! fields and schemas), defaulting, status handling and validation on writes.
//!
//! Defaulting and validation themselves live in `svcnet_api` (pure); this module only decides
//! which of them runs for which kind. What it leaves out: IPAM (`services`), namespaces
//! (`namespaces`), and anything transport-related.

use serde_json::{Value, json};
use svcnet_api::FieldError;

use crate::error::ApiError;
use crate::registry::Resource;

/// What the server needs of a kind's typed struct.
pub trait Kind: serde::Serialize + serde::de::DeserializeOwned + schemars::JsonSchema {}
impl<T: serde::Serialize + serde::de::DeserializeOwned + schemars::JsonSchema> Kind for T {}

/// A generic operation over a kind's typed struct.
pub trait KindVisitor {
    type Out;
    fn visit<T: Kind>(self) -> Self::Out;
}

/// Calls `v` with the typed struct of (`group`, `kind`); None for an unknown kind.
pub fn visit<V: KindVisitor>(group: &str, kind: &str, v: V) -> Option<V::Out> {
    use k8s_openapi::api::{
        apps::v1 as apps, autoscaling::v1 as autoscaling, coordination::v1 as coordination,
        core::v1 as core, discovery::v1 as discovery, events::v1 as events,
    };
    Some(match (group, kind) {
        ("", "Namespace") => v.visit::<core::Namespace>(),
        ("", "Service") => v.visit::<core::Service>(),
        ("", "Endpoints") => v.visit::<core::Endpoints>(),
        ("", "Pod") => v.visit::<core::Pod>(),
        ("", "Node") => v.visit::<core::Node>(),
        ("", "Event") => v.visit::<core::Event>(),
        ("", "ConfigMap") => v.visit::<core::ConfigMap>(),
        ("", "Binding") => v.visit::<core::Binding>(),
        ("discovery.k8s.io", "EndpointSlice") => v.visit::<discovery::EndpointSlice>(),
        ("coordination.k8s.io", "Lease") => v.visit::<coordination::Lease>(),
        ("events.k8s.io", "Event") => v.visit::<events::Event>(),
        ("apps", "Deployment") => v.visit::<apps::Deployment>(),
        ("apps", "ReplicaSet") => v.visit::<apps::ReplicaSet>(),
        ("autoscaling", "Scale") => v.visit::<autoscaling::Scale>(),
        _ => return None,
    })
}

struct SchemaName;
impl KindVisitor for SchemaName {
    type Out = String;
    fn visit<T: Kind>(self) -> String {
        T::schema_name().into_owned()
    }
}

/// The OpenAPI schema name of a kind (`io.k8s.api.core.v1.Service`).
pub fn schema_name(group: &str, kind: &str) -> Option<String> {
    visit(group, kind, SchemaName)
}

struct RoundTrip(Value);
impl KindVisitor for RoundTrip {
    type Out = Result<Value, String>;
    fn visit<T: Kind>(self) -> Result<Value, String> {
        let typed: T = serde_json::from_value(self.0).map_err(|e| e.to_string())?;
        serde_json::to_value(&typed).map_err(|e| e.to_string())
    }
}

/// Decodes `value` as the kind's struct and encodes it again: unknown fields are dropped and
/// wrong types are rejected with the real server's message.
pub fn normalize(resource: &Resource, value: Value) -> Result<Value, ApiError> {
    normalize_kind(resource.group, resource.version, resource.kind, value)
}

pub fn normalize_kind(
    group: &str,
    version: &str,
    kind: &str,
    value: Value,
) -> Result<Value, ApiError> {
    match visit(group, kind, RoundTrip(value)) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: {e}"
        ))),
        None => Err(ApiError::internal(format!("no type for kind {kind}"))),
    }
}

/// Unknown fields of a request body (for fieldValidation), as `spec.bogusField` paths.
pub fn unknown_fields(resource: &Resource, body: &Value) -> Vec<String> {
    let mut out = svcnet_api::strict::unknown_fields_for_kind(
        resource.group,
        resource.version,
        resource.kind,
        body,
    );
    // `$setElementOrder/…` and other patch directives are never fields; they cannot reach here
    // (the patched result is checked), but an apply body may not carry them either.
    out.retain(|f| !f.contains('$'));
    out
}

/// Server-side defaults applied on every create and update (after the merge with the old
/// object), as the real defaulting functions do.
pub fn apply_defaults(resource: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    if resource.group.is_empty() && resource.kind == "Namespace" {
        if obj.pointer("/status/phase").is_none() {
            obj["status"] = json!({"phase": "Active"});
        }
        if obj.pointer("/spec/finalizers").is_none() {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
        }
    }
    svcnet_api::defaults::default_object(resource.group, resource.kind, obj)
        .map_err(ApiError::bad_request)?;
    crate::object::strip_nulls(obj);
    Ok(())
}

/// Resets fields a create may not set, as each kind's `PrepareForCreate` does.
pub fn prepare_create(resource: &Resource, obj: &mut Value) {
    match (resource.group, resource.kind) {
        ("", "Service") => {
            obj["status"] = json!({"loadBalancer": {}});
        }
        ("", "Pod") if obj.pointer("/status/phase").is_none() => {
            let status =
                obj.as_object_mut().map(|m| m.entry("status").or_insert_with(|| json!({})));
            if let Some(Value::Object(s)) = status {
                s.insert("phase".into(), json!("Pending"));
            }
        }
        ("apps", "Deployment") | ("apps", "ReplicaSet") => {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        _ => {}
    }
}

/// Validates an object for create (`old` = None) or update.
pub fn validate(resource: &Resource, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    svcnet_api::validation::validate_object(resource.group, resource.kind, obj, old)
}

/// Whether a change from `old` to `new` bumps `metadata.generation`.
pub fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
            m.remove("kind");
            m.remove("apiVersion");
        }
        v
    };
    strip(old) != strip(new)
}

/// Whether the kind tracks `metadata.generation`.
pub fn has_generation(resource: &Resource) -> bool {
    matches!(
        resource.kind,
        "Service" | "Pod" | "Deployment" | "ReplicaSet" | "EndpointSlice" | "Node" | "Lease"
    )
}
