//! Table responses (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`) for `kubectl get`.
//!
//! The columns and cells come from `svcnet_api::table` (pure); this module adds the list
//! metadata, drops the column definitions where the real server does (watch events after the
//! first), and falls back to the real server's default `Name`/`Age` table for a kind the
//! printer does not know.

use serde_json::{Value, json};

use crate::object;
use crate::query::IncludeObject;
use crate::registry::Resource;

fn row_object(obj: &Value, include: IncludeObject) -> Option<Value> {
    match include {
        IncludeObject::None => None,
        IncludeObject::Object => Some(obj.clone()),
        IncludeObject::Metadata => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
        })),
    }
}

fn age(obj: &Value, now: jiff::Timestamp) -> String {
    let Some(created) =
        object::meta_str(obj, "creationTimestamp").and_then(|t| t.parse::<jiff::Timestamp>().ok())
    else {
        return "<unknown>".into();
    };
    let secs = now.as_second().saturating_sub(created.as_second()).max(0) as u64;
    svcnet_api::human_duration(std::time::Duration::from_secs(secs))
}

/// The default table of the real server (`Name`, `Age`), used for kinds without a printer.
fn generic(objects: &[&Value], include: IncludeObject, now: jiff::Timestamp) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": [object::name(o), age(o, now)]});
            if let Some(obj) = row_object(o, include) {
                row["object"] = obj;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "columnDefinitions": [
            {"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0},
            {"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0},
        ],
        "rows": rows,
    })
}

/// A Table of `objects`, with `metadata.resourceVersion = rev`.
pub fn render(
    resource: &Resource,
    objects: &[&Value],
    include: IncludeObject,
    rev: &str,
    with_columns: bool,
) -> Value {
    let now = jiff::Timestamp::now();
    let mut t = svcnet_api::table(resource.kind, objects, now, include);
    let usable = t.get("rows").and_then(Value::as_array).is_some_and(|r| r.len() == objects.len())
        && t.get("columnDefinitions").and_then(Value::as_array).is_some_and(|c| !c.is_empty());
    if !usable {
        t = generic(objects, include, now);
    }
    t["kind"] = json!("Table");
    t["apiVersion"] = json!("meta.k8s.io/v1");
    t["metadata"] = json!({"resourceVersion": rev});
    if !with_columns && let Some(m) = t.as_object_mut() {
        m.remove("columnDefinitions");
    }
    t
}
