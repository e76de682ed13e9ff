//! Kubernetes object semantics as pure functions: defaulting, validation, patching, selectors,
//! table printing. No I/O and no async: the API server, the controllers and the tests call
//! these with plain values and get plain values back.

// Tests may unwrap: a panic there is a test failure with a backtrace.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod apply;
pub mod defaults;
pub mod error;
pub mod field;
pub mod names;
pub mod patch;
pub mod selector;
pub mod strategy;
pub mod strict;
pub mod table;
pub mod validation;

pub use apply::{
    ApplyError, Conflict, field_path_display, record_update, record_update_subresource,
    server_side_apply,
};
pub use error::{Error, PatchError, Result};
pub use field::{FieldError, FieldErrorKind, FieldPath};
pub use patch::{PatchMeta, json_patch, merge_patch, patch_meta, strategic_merge_patch};
pub use selector::{FieldSelector, LabelSelector};
pub use table::{IncludeObject, human_duration, table, table_column_definitions};
