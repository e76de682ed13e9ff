//! The workload controllers' error type; every variant is retryable on the next pass.

/// What went wrong in a workload controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("kubernetes api call failed: {what}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// An object cannot be turned into JSON (never expected for Kubernetes types).
    #[error("cannot encode {what}")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The workload controllers' result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube { what: what.into(), source }
    }
}
