//! Offline input: a file of Services, EndpointSlices and Nodes → a `Model`.
//!
//! Used by `svcnet proxy --objects FILE`, golden tests and benchmarks. Accepts YAML (one or
//! more documents) or JSON, where each document is one object or a `List` of them. Other kinds
//! are skipped silently, so a whole `kubectl get -o yaml` dump can be fed in.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::Model;

/// Reads `path` into a `Model`.
pub fn load(path: &Path) -> Result<Model> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ObjectsFile {
        path: path.display().to_string(),
        message: source.to_string(),
    })?;
    parse(&text).map_err(|message| Error::ObjectsFile { path: path.display().to_string(), message })
}

/// Parses YAML or JSON text into a `Model`.
pub fn parse(text: &str) -> Result<Model, String> {
    let documents: Vec<Value> = if text.trim_start().starts_with(['{', '[']) {
        let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        match value {
            Value::Array(items) => items,
            value => vec![value],
        }
    } else {
        serde_saphyr::from_multiple::<Value>(text).map_err(|e| e.to_string())?
    };
    let mut model = Model::default();
    for document in documents {
        add(&mut model, document)?;
    }
    Ok(model)
}

fn add(model: &mut Model, document: Value) -> Result<(), String> {
    if document.is_null() {
        return Ok(());
    }
    let kind = document.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    let name = || {
        document
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>")
            .to_string()
    };
    let bad = |e: serde_json::Error, name: String| format!("{kind} {name}: {e}");
    match kind.as_str() {
        "List" | "ServiceList" | "EndpointSliceList" | "NodeList" => {
            let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty()).map(str::to_string);
            if let Some(Value::Array(items)) = document.get("items") {
                for item in items {
                    let mut item = item.clone();
                    if let (Some(item_kind), Some(object)) = (&item_kind, item.as_object_mut()) {
                        object.entry("kind").or_insert_with(|| Value::String(item_kind.clone()));
                    }
                    add(model, item)?;
                }
            }
        }
        "Service" => {
            let name = name();
            let mut service: k8s_openapi::api::core::v1::Service =
                serde_json::from_value(document).map_err(|e| bad(e, name))?;
            default_namespace(&mut service.metadata);
            model.insert_service(service);
        }
        "EndpointSlice" => {
            let name = name();
            let mut slice: k8s_openapi::api::discovery::v1::EndpointSlice =
                serde_json::from_value(document).map_err(|e| bad(e, name))?;
            default_namespace(&mut slice.metadata);
            model.insert_endpoint_slice(slice);
        }
        "Node" => {
            let name = name();
            let node: k8s_openapi::api::core::v1::Node =
                serde_json::from_value(document).map_err(|e| bad(e, name))?;
            model.insert_node(node);
        }
        _ => {}
    }
    Ok(())
}

fn default_namespace(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    if meta.namespace.as_deref().unwrap_or_default().is_empty() {
        meta.namespace = Some("default".to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_list_and_typed_lists_load() {
        let json = r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"Service","metadata":{"name":"a"},"spec":{"clusterIP":"10.96.0.1","ports":[{"port":80}]}},
            {"apiVersion":"v1","kind":"NodeList","items":[{"metadata":{"name":"n1"}}]}
        ]}"#;
        let model = parse(json).unwrap();
        assert_eq!(
            model.services.keys().map(ToString::to_string).collect::<Vec<_>>(),
            ["default/a"]
        );
        assert!(model.node("n1").is_some());
    }

    #[test]
    fn bad_objects_are_errors_not_panics() {
        assert!(parse("kind: Service\nmetadata: {name: x}\nspec: {ports: 7}\n").is_err());
        assert!(parse("{not json").is_err());
        assert!(parse("").unwrap().services.is_empty());
    }
}
