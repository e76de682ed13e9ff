//! OpenAPI v3: the index and one document per group-version, built once at start-up.
//!
//! kubectl needs, per kind, a PATCH operation carrying `x-kubernetes-group-version-kind` and a
//! `fieldValidation` query parameter (or it refuses to apply), and `kubectl explain` needs
//! `components.schemas`, generated here from k8s-openapi's schemars implementations. The PATCH
//! operations deliberately advertise no `requestBody` content types: with strategic-merge-patch
//! advertised, kubectl would compute patches from these schemas instead of its compiled-in types
//! (kubectl-api.md §3.2). OpenAPI v2 is absent (404), which kubectl 1.29+ tolerates.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::kinds::{self, KindVisitor};
use crate::registry::{self, RESOURCES, Resource, Sub};

/// The prepared documents.
pub struct OpenApi {
    /// `api/v1` → (hash, serialized document).
    docs: BTreeMap<String, (String, bytes::Bytes)>,
    index: bytes::Bytes,
    /// `/openapi/v2` as protobuf (see `openapi_v2`).
    v2: bytes::Bytes,
}

struct SchemaOf<'a>(&'a mut schemars::SchemaGenerator);

impl KindVisitor for SchemaOf<'_> {
    type Out = ();
    fn visit<T: kinds::Kind>(self) {
        let _ = self.0.subschema_for::<T>();
    }
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

fn param(name: &str, location: &str, required: bool) -> Value {
    json!({"name": name, "in": location, "required": required, "schema": {"type": "string", "uniqueItems": true}})
}

fn op(kind_gvk: &Value, action: &str, id: &str, params: Vec<Value>) -> Value {
    json!({
        "operationId": id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": kind_gvk,
        "parameters": params,
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
    })
}

fn write_params() -> Vec<Value> {
    vec![
        param("dryRun", "query", false),
        param("fieldManager", "query", false),
        param("fieldValidation", "query", false),
    ]
}

fn item_paths(r: &Resource, paths: &mut Map<String, Value>) {
    let base = r.path_prefix();
    let (collection, item) = if r.namespaced {
        (
            format!("{base}/namespaces/{{namespace}}/{}", r.plural),
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
        )
    } else {
        (format!("{base}/{}", r.plural), format!("{base}/{}/{{name}}", r.plural))
    };
    let g = gvk(r.group, r.version, r.kind);
    let id = format!("{}{}", r.plural, r.kind);
    let mut patch_params = write_params();
    patch_params.push(param("force", "query", false));
    paths.insert(
        collection,
        json!({
            "get": op(&g, "list", &format!("list{id}"), vec![param("labelSelector", "query", false), param("fieldSelector", "query", false), param("limit", "query", false), param("continue", "query", false), param("watch", "query", false), param("resourceVersion", "query", false)]),
            "post": op(&g, "post", &format!("create{id}"), write_params()),
            "delete": op(&g, "deletecollection", &format!("deletecollection{id}"), vec![param("labelSelector", "query", false)]),
        }),
    );
    paths.insert(
        item,
        json!({
            "get": op(&g, "get", &format!("read{id}"), vec![]),
            "put": op(&g, "put", &format!("replace{id}"), write_params()),
            "patch": op(&g, "patch", &format!("patch{id}"), patch_params.clone()),
            "delete": op(&g, "delete", &format!("delete{id}"), vec![param("dryRun", "query", false), param("gracePeriodSeconds", "query", false)]),
        }),
    );
    for sub in r.subresources {
        let sub_path = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}/{}", r.plural, sub.name())
        } else {
            format!("{base}/{}/{{name}}/{}", r.plural, sub.name())
        };
        let ((sg, sv, sk), _) = sub.describe(r);
        let sg = gvk(sg, sv, sk);
        let sid = format!("{id}{}", sub.name());
        let value = match sub {
            Sub::Status | Sub::Scale => json!({
                "get": op(&sg, "get", &format!("read{sid}"), vec![]),
                "put": op(&sg, "put", &format!("replace{sid}"), write_params()),
                "patch": op(&sg, "patch", &format!("patch{sid}"), patch_params.clone()),
            }),
            Sub::Binding => {
                json!({"post": op(&sg, "post", &format!("create{sid}"), write_params())})
            }
            Sub::Log => {
                json!({"get": op(&sg, "get", &format!("read{sid}"), vec![param("container", "query", false), param("follow", "query", false)])})
            }
            Sub::Finalize => {
                json!({"put": op(&sg, "put", &format!("replace{sid}"), write_params())})
            }
        };
        paths.insert(sub_path, value);
    }
}

fn document(group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut gvks: Vec<(String, Value)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        item_paths(r, &mut paths);
        if let Some(name) = kinds::visit(r.group, r.kind, SchemaOf(&mut generator))
            .and(kinds::schema_name(r.group, r.kind))
        {
            gvks.push((name, gvk(r.group, r.version, r.kind)));
        }
        if r.has_sub(Sub::Scale) {
            let _ = generator.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
            gvks.push((
                "io.k8s.api.autoscaling.v1.Scale".into(),
                gvk("autoscaling", "v1", "Scale"),
            ));
        }
    }
    let _ = generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>();
    let _ =
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>();
    let mut schemas = generator.take_definitions(true);
    for (name, g) in gvks {
        if let Some(Value::Object(schema)) = schemas.get_mut(&name) {
            schema.insert("x-kubernetes-group-version-kind".into(), json!([g]));
        }
    }
    let title = "Kubernetes";
    json!({
        "openapi": "3.0.0",
        "info": {"title": title, "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn doc_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

impl OpenApi {
    pub fn build() -> OpenApi {
        let mut docs = BTreeMap::new();
        let mut index = Map::new();
        for (group, version) in registry::group_versions() {
            let doc = document(group, version);
            let bytes = serde_json::to_vec(&doc).unwrap_or_default();
            let hash: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02X}")).collect();
            let path = doc_path(group, version);
            index.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            );
            docs.insert(path, (hash, bytes::Bytes::from(bytes)));
        }
        let index =
            bytes::Bytes::from(serde_json::to_vec(&json!({"paths": index})).unwrap_or_default());
        OpenApi { docs, index, v2: bytes::Bytes::from(crate::openapi_v2::document()) }
    }

    pub fn index(&self) -> bytes::Bytes {
        self.index.clone()
    }

    /// The OpenAPI v2 document kubectl 1.27–1.28 download (protobuf).
    pub fn v2(&self) -> bytes::Bytes {
        self.v2.clone()
    }

    /// The document at `api/v1`, `apis/apps/v1`, …
    pub fn document(&self, path: &str) -> Option<bytes::Bytes> {
        self.docs.get(path).map(|(_, b)| b.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_document_has_patch_gvk_and_schemas() {
        let api = OpenApi::build();
        let index: Value = serde_json::from_slice(&api.index()).expect("index");
        for (g, v) in registry::group_versions() {
            assert!(index["paths"].get(doc_path(g, v)).is_some(), "{g}/{v} missing from index");
        }
        let doc: Value =
            serde_json::from_slice(&api.document("api/v1").expect("api/v1")).expect("doc");
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/services/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Service");
        assert!(
            patch["parameters"]
                .as_array()
                .expect("params")
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        let svc = &doc["components"]["schemas"]["io.k8s.api.core.v1.Service"];
        assert_eq!(svc["x-kubernetes-group-version-kind"][0]["kind"], "Service");
        let spec_ref = svc["properties"]["spec"].to_string();
        assert!(
            spec_ref.contains("#/components/schemas/io.k8s.api.core.v1.ServiceSpec"),
            "{spec_ref}"
        );
        assert!(doc["components"]["schemas"]["io.k8s.api.core.v1.ServiceSpec"].is_object());
    }
}
