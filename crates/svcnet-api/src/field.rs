//! Field errors as Kubernetes reports them (`k8s.io/apimachinery/pkg/util/validation/field`).
//!
//! Validation collects every error, never only the first; the API server turns the list into
//! a 422 `Status` whose `details.causes` carry the field paths (`spec.ports[0].nodePort`).

use std::fmt;

/// A path to a field, rendered as Kubernetes does: `spec.ports[0].port`, `metadata.labels[app]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn new(root: &str) -> Self {
        FieldPath(root.to_string())
    }
    /// `spec` → `spec.ports`.
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            FieldPath(name.to_string())
        } else {
            FieldPath(format!("{}.{}", self.0, name))
        }
    }
    /// `spec.ports` → `spec.ports[0]`.
    pub fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{}]", self.0, i))
    }
    /// `metadata.labels` → `metadata.labels[app]`.
    pub fn key(&self, k: &str) -> Self {
        FieldPath(format!("{}[{}]", self.0, k))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The error types of apimachinery's `field.ErrorType`, with their `StatusCause.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    NotFound,
    Required,
    Duplicate,
    Invalid,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
    Internal,
}

impl FieldErrorKind {
    /// `StatusCause.reason` (`FieldValueInvalid`, …).
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::NotFound => "FieldValueNotFound",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
            FieldErrorKind::Internal => "InternalError",
        }
    }
}

/// One field error. `Display` renders the message as `kubectl` prints it after the path,
/// e.g. `Invalid value: 0: must be between 1 and 65535, inclusive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    pub field: FieldPath,
    /// The offending value rendered as Kubernetes renders it (`"foo"`, `0`), if any.
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    pub fn invalid(field: FieldPath, value: impl fmt::Display, detail: impl Into<String>) -> Self {
        FieldError {
            kind: FieldErrorKind::Invalid,
            field,
            value: Some(value.to_string()),
            detail: detail.into(),
        }
    }
    pub fn required(field: FieldPath, detail: impl Into<String>) -> Self {
        FieldError { kind: FieldErrorKind::Required, field, value: None, detail: detail.into() }
    }
    pub fn forbidden(field: FieldPath, detail: impl Into<String>) -> Self {
        FieldError { kind: FieldErrorKind::Forbidden, field, value: None, detail: detail.into() }
    }
    pub fn duplicate(field: FieldPath, value: impl fmt::Display) -> Self {
        FieldError {
            kind: FieldErrorKind::Duplicate,
            field,
            value: Some(value.to_string()),
            detail: String::new(),
        }
    }
    pub fn not_supported(field: FieldPath, value: impl fmt::Display, supported: &[&str]) -> Self {
        let list = supported.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
        FieldError {
            kind: FieldErrorKind::NotSupported,
            field,
            value: Some(value.to_string()),
            detail: format!("supported values: {list}"),
        }
    }
    /// `field.TooLong`: the detail says the limit (`may not be more than 262144 bytes`).
    pub fn too_long(field: FieldPath, detail: impl Into<String>) -> Self {
        FieldError { kind: FieldErrorKind::TooLong, field, value: None, detail: detail.into() }
    }
    /// `field.TooMany`: `Too many: 1001: must have at most 1000 items`. The count is part of the
    /// detail because `body` shows values only for the kinds upstream shows them with.
    pub fn too_many(field: FieldPath, actual: usize, max: usize) -> Self {
        FieldError {
            kind: FieldErrorKind::TooMany,
            field,
            value: None,
            detail: format!("{actual}: must have at most {max} items"),
        }
    }
    /// `field.NotFound`.
    pub fn not_found(field: FieldPath, value: impl fmt::Display) -> Self {
        FieldError {
            kind: FieldErrorKind::NotFound,
            field,
            value: Some(value.to_string()),
            detail: String::new(),
        }
    }
    /// `field.InternalError`.
    pub fn internal(field: FieldPath, detail: impl Into<String>) -> Self {
        FieldError { kind: FieldErrorKind::Internal, field, value: None, detail: detail.into() }
    }
    /// The message as apimachinery's `field.Error.ErrorBody()` renders it (without the path).
    pub fn body(&self) -> String {
        let head = match self.kind {
            FieldErrorKind::NotFound => "Not found",
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
            FieldErrorKind::Internal => "Internal error",
        };
        let mut out = head.to_string();
        if let Some(value) = &self.value
            && matches!(
                self.kind,
                FieldErrorKind::Invalid
                    | FieldErrorKind::NotSupported
                    | FieldErrorKind::Duplicate
                    | FieldErrorKind::NotFound
            )
        {
            out.push_str(": ");
            out.push_str(value);
        }
        if !self.detail.is_empty() {
            out.push_str(": ");
            out.push_str(&self.detail);
        }
        out
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}
