//! `/openapi/v2` as protobuf, only as far as kubectl 1.27 and 1.28 need it.
//!
//! Those versions download the OpenAPI v2 document (gnostic's `openapi.v2.Document`, the only
//! encoding they accept) before `kubectl apply`/`create` with the default `--validate=strict`,
//! to learn whether the server validates fields itself: they look for a PATCH operation tagged
//! with the kind's `x-kubernetes-group-version-kind` that has a `fieldValidation` query
//! parameter. Without the document they fail with 404 instead of applying. This module writes
//! exactly that: one path per resource with its PATCH operation and the parameter. Schemas
//! (`definitions`) are left out: kubectl then falls back to its built-in patch strategies, and
//! `kubectl explain` uses OpenAPI v3 (served by `openapi`).
//!
//! Field numbers are from gnostic's `openapiv2/OpenAPIv2.proto`.

use crate::registry::{self, Resource};

/// The media type kubectl asks for (`…v2@v1.0+protobuf`) in the form that Go's
/// `mime.ParseMediaType` accepts in a `Content-Type` (no `@`), as kube-openapi answers.
pub const MEDIA_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited field (strings and messages).
fn field(number: u64, data: &[u8], out: &mut Vec<u8>) {
    varint(number << 3 | 2, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

fn message(build: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    build(&mut out);
    out
}

/// The resource's item path, e.g. `/apis/apps/v1/namespaces/{namespace}/deployments/{name}`.
fn item_path(r: &Resource) -> String {
    let root = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    if r.namespaced {
        format!("{root}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
    } else {
        format!("{root}/{}/{{name}}", r.plural)
    }
}

/// `PathItem { patch: Operation { parameters: [fieldValidation], x-kubernetes-group-version-kind } }`.
fn path_item(r: &Resource) -> Vec<u8> {
    // QueryParameterSubSchema: in = 2, name = 4, type = 6.
    let query = message(|m| {
        field(2, b"query", m);
        field(4, b"fieldValidation", m);
        field(6, b"string", m);
    });
    // NonBodyParameter.query_parameter_sub_schema = 3; Parameter.non_body_parameter = 2;
    // ParametersItem.parameter = 1.
    let non_body = message(|m| field(3, &query, m));
    let parameter = message(|m| field(2, &non_body, m));
    let item = message(|m| field(1, &parameter, m));
    // NamedAny { name = 1, value = 2: Any { yaml = 2 } }.
    let gvk = format!("group: \"{}\"\nkind: {}\nversion: {}\n", r.group, r.kind, r.version);
    let any = message(|m| field(2, gvk.as_bytes(), m));
    let extension = message(|m| {
        field(1, b"x-kubernetes-group-version-kind", m);
        field(2, &any, m);
    });
    // Operation: parameters = 8, vendor_extension = 13; PathItem.patch = 8.
    let operation = message(|m| {
        field(8, &item, m);
        field(13, &extension, m);
    });
    message(|m| field(8, &operation, m))
}

/// The whole document, built once at start.
pub fn document() -> Vec<u8> {
    let info = message(|m| {
        field(1, b"svcnet", m);
        field(2, b"v1.32.0", m);
    });
    let paths = message(|m| {
        for r in registry::RESOURCES {
            let named = message(|n| {
                field(1, item_path(r).as_bytes(), n);
                field(2, &path_item(r), n);
            });
            field(2, &named, m);
        }
    });
    // Document: swagger = 1, info = 2, paths = 8.
    message(|m| {
        field(1, b"2.0", m);
        field(2, &info, m);
        field(8, &paths, m);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_has_a_patch_path_with_field_validation() {
        let doc = document();
        let text = String::from_utf8_lossy(&doc);
        for r in registry::RESOURCES {
            assert!(text.contains(&item_path(r)), "{} missing", r.kind);
        }
        assert!(text.contains("/api/v1/namespaces/{namespace}/services/{name}"));
        assert!(text.contains("group: \"\"\nkind: Service\nversion: v1\n"));
        assert_eq!(doc[..5], [0x0a, 0x03, b'2', b'.', b'0']);
    }
}
