//! Errors of the API server: `Error` for start-up (the library boundary) and `ApiError`, every
//! failure of a request, rendered as a `metav1.Status` in exactly one place (`ApiError::status`).
//!
//! The mapping follows apimachinery's `k8s.io/apimachinery/pkg/api/errors`: NotFound 404,
//! AlreadyExists/Conflict 409, Invalid 422 with `details.causes`, Expired 410, BadRequest 400.

use serde_json::{Value, json};
use svcnet_api::{FieldError, FieldErrorKind};

use crate::registry::Resource;

/// Start-up failures. None is retryable without operator action except `Store`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot prepare the data directory {path}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create or load the TLS material")]
    Tls(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the store failed")]
    Store(#[from] svcnet_store::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The message of an `ApiError` made from a store precondition failure; callers turn it into
/// the right 409 (AlreadyExists or Conflict) or retry.
pub const PRECONDITION: &str = "store precondition failed";

/// A request failure as Kubernetes reports it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn is_precondition(&self) -> bool {
        self.message == PRECONDITION
    }

    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn not_found(resource: &Resource, name: &str) -> Self {
        ApiError::new(404, "NotFound", format!("{} \"{}\" not found", resource.qualified(), name))
            .with_details(name_details(resource, name))
    }

    pub fn namespace_not_found(name: &str) -> Self {
        ApiError::new(404, "NotFound", format!("namespaces \"{name}\" not found"))
            .with_details(json!({"name": name, "kind": "namespaces"}))
    }

    pub fn path_not_found() -> Self {
        ApiError::new(404, "NotFound", "the server could not find the requested resource")
            .with_details(json!({}))
    }

    pub fn already_exists(resource: &Resource, name: &str) -> Self {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", resource.qualified(), name),
        )
        .with_details(name_details(resource, name))
    }

    pub fn conflict(resource: &Resource, name: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                resource.qualified(),
                name
            ),
        )
        .with_details(name_details(resource, name))
    }

    pub fn conflict_msg(resource: &Resource, name: &str, msg: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                resource.qualified(),
                name,
                msg
            ),
        )
        .with_details(name_details(resource, name))
    }

    pub fn invalid(resource: &Resource, name: &str, errors: &[FieldError]) -> Self {
        // An internal failure (e.g. "failed to allocate a serviceIP: range is full") is not the
        // client's fault: kube-apiserver answers it with a 500, not a 422.
        if let Some(internal) = errors.iter().find(|e| e.kind == FieldErrorKind::Internal) {
            return ApiError::internal(&internal.detail)
                .with_details(json!({"causes": [{"message": internal.detail}]}));
        }
        let list = if errors.len() == 1 {
            errors[0].to_string()
        } else {
            format!("[{}]", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "))
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.kind.reason(), "message": e.body(), "field": e.field.as_str()}))
            .collect();
        let mut details = json!({"name": name, "kind": resource.kind, "causes": causes});
        if !resource.group.is_empty() {
            details["group"] = json!(resource.group);
        }
        ApiError::new(
            422,
            "Invalid",
            format!("{} \"{}\" is invalid: {}", resource.kind, name, list),
        )
        .with_details(details)
    }

    /// A 422 about request options (kind `PatchOptions`, `ListOptions`, …), as apimachinery does.
    pub fn invalid_options(kind: &str, errors: &[FieldError]) -> Self {
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.kind.reason(), "message": e.body(), "field": e.field.as_str()}))
            .collect();
        let list = errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ");
        ApiError::new(422, "Invalid", format!("{kind}.meta.k8s.io \"\" is invalid: {list}"))
            .with_details(json!({"group": "meta.k8s.io", "kind": kind, "causes": causes}))
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", msg)
    }

    pub fn forbidden(msg: impl Into<String>) -> Self {
        ApiError::new(403, "Forbidden", msg)
    }

    pub fn method_not_allowed() -> Self {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn unsupported_media_type(ct: &str) -> Self {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {ct:?})"
            ),
        )
    }

    pub fn too_large() -> Self {
        ApiError::new(413, "RequestEntityTooLarge", "the request body is too large")
    }

    pub fn unauthorized() -> Self {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn expired(msg: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", msg)
    }

    pub fn gone(msg: impl Into<String>) -> Self {
        ApiError::new(410, "Gone", msg)
    }

    pub fn internal(msg: impl std::fmt::Display) -> Self {
        ApiError::new(500, "InternalError", format!("Internal error occurred: {msg}"))
    }

    pub fn unavailable(msg: impl std::fmt::Display) -> Self {
        ApiError::new(503, "ServiceUnavailable", format!("{msg}"))
    }

    pub fn timeout(msg: impl Into<String>) -> Self {
        ApiError::new(504, "Timeout", msg)
    }

    /// The `metav1.Status` body.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            status["details"] = d.clone();
        }
        status
    }
}

fn name_details(resource: &Resource, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": resource.plural});
    if !resource.group.is_empty() {
        d["group"] = json!(resource.group);
    }
    d
}

impl From<svcnet_store::Error> for ApiError {
    fn from(e: svcnet_store::Error) -> Self {
        match e {
            svcnet_store::Error::Compacted { requested, oldest } => {
                ApiError::expired(format!("too old resource version: {requested} ({oldest})"))
            }
            svcnet_store::Error::PreconditionFailed { .. } => {
                ApiError::new(409, "Conflict", PRECONDITION)
            }
            svcnet_store::Error::Unavailable(src) => {
                ApiError::unavailable(format!("storage is unavailable: {src}"))
            }
            svcnet_store::Error::TooLarge(msg) => {
                ApiError::new(413, "RequestEntityTooLarge", format!("request is too large: {msg}"))
            }
            other => ApiError::internal(other),
        }
    }
}
