//! Errors of the pure API functions. None of them is retryable as is: each one describes bad
//! input (a malformed patch, a conflicting apply), so the API server maps it to a 4xx `Status`.

use crate::apply::ApplyError;

/// Any error this crate returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Patch(#[from] PatchError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A patch that could not be applied. The API server answers 422 (`Invalid`) for
/// [`PatchError::Invalid`] and [`PatchError::Test`] as kube-apiserver does, and 500 never.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document itself is malformed (wrong JSON shape, unknown directive).
    #[error("{0}")]
    Invalid(String),
    /// A JSON patch operation failed (missing path, bad index).
    #[error("{0}")]
    Apply(String),
    /// A JSON patch `test` operation did not match.
    #[error("{0}")]
    Test(String),
}
