//! Errors of the store. `PreconditionFailed` and `Compacted` are expected outcomes the caller
//! handles (409 Conflict, 410 Expired); `Unavailable` is retryable; `Corrupt` is not.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An op's precondition did not hold; nothing was applied. Not retryable as is.
    #[error("precondition failed for key {key} (op {index})")]
    PreconditionFailed { index: usize, key: String, current: Option<Box<crate::KeyValue>> },
    /// The requested revision is older than the retained history. Re-list.
    #[error("revision {requested} has been compacted (oldest retained is {oldest})")]
    Compacted { requested: u64, oldest: u64 },
    /// The backend could not be reached or failed transiently. Retryable.
    #[error("store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The request is malformed (an unknown store spec, the same key twice in one
    /// transaction). Not retryable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The request is over the backend's size limit (etcd's `--max-request-bytes`). Not
    /// retryable; the API answers 413 as kube-apiserver does.
    #[error("request too large: {0}")]
    TooLarge(String),
    /// The data on disk is not what this version of svcnet wrote. Not retryable.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
