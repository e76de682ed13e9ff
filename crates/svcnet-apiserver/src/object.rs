//! Small helpers over objects held as `serde_json::Value`.
//!
//! The server stores and serves every kind as JSON, so one generic code path handles all of
//! them; typed `k8s_openapi` structs appear only where a kind needs its own semantics
//! (`kinds.rs`). What is absent here: anything that knows a particular kind.

use serde_json::{Map, Value, json};

/// `metadata` of an object, created if missing or not an object.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let map = obj.as_object_mut().expect("just made an object");
    let m = map.entry("metadata").or_insert_with(|| json!({}));
    if !m.is_object() {
        *m = json!({});
    }
    m.as_object_mut().expect("just made an object")
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}

pub fn namespace(obj: &Value) -> Option<&str> {
    meta_str(obj, "namespace")
}

pub fn resource_version(obj: &Value) -> Option<&str> {
    meta_str(obj, "resourceVersion").filter(|s| !s.is_empty())
}

pub fn uid(obj: &Value) -> Option<&str> {
    meta_str(obj, "uid").filter(|s| !s.is_empty())
}

pub fn set_resource_version(obj: &mut Value, rev: u64) {
    meta_mut(obj).insert("resourceVersion".into(), Value::String(rev.to_string()));
}

pub fn remove_resource_version(obj: &mut Value) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
}

pub fn labels(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.get("labels")?.as_object()
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

pub fn deletion_timestamp(obj: &Value) -> Option<&str> {
    meta_str(obj, "deletionTimestamp")
}

/// RFC 3339 with seconds, as Kubernetes renders `metav1.Time`.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Removes empty maps and nulls the way a typed round trip would, so that comparing two
/// objects for a no-op update is not fooled by `{}` versus absent.
pub fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, x| !x.is_null());
            for x in map.values_mut() {
                strip_nulls(x);
            }
        }
        Value::Array(items) => {
            for x in items {
                strip_nulls(x);
            }
        }
        _ => {}
    }
}

/// Parses a JSON or YAML body into a value.
pub fn parse_body(body: &[u8]) -> Result<Value, String> {
    let trimmed =
        body.iter().position(|b| !b.is_ascii_whitespace()).map(|i| &body[i..]).unwrap_or(&[]);
    if trimmed.first() == Some(&b'{') || trimmed.first() == Some(&b'[') {
        serde_json::from_slice(trimmed).map_err(|e| e.to_string())
    } else {
        let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
        serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_helpers() {
        let mut v = json!({"metadata": {"name": "a", "resourceVersion": "3"}});
        assert_eq!(name(&v), "a");
        assert_eq!(resource_version(&v), Some("3"));
        set_resource_version(&mut v, 9);
        assert_eq!(resource_version(&v), Some("9"));
        remove_resource_version(&mut v);
        assert_eq!(resource_version(&v), None);
        let mut x = json!(5);
        meta_mut(&mut x).insert("name".into(), json!("b"));
        assert_eq!(name(&x), "b");
    }

    #[test]
    fn bodies() {
        assert_eq!(parse_body(b" {\"a\":1}").expect("json"), json!({"a":1}));
        assert_eq!(parse_body(b"a: 1\nb: [x]\n").expect("yaml"), json!({"a":1,"b":["x"]}));
        assert!(parse_body(b"{not json").is_err());
    }
}
