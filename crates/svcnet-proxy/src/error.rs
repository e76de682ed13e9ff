//! Errors of the proxy. Planning cannot fail; these come from watching and from data planes.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or parsing `--objects FILE` failed. Not retryable.
    #[error("cannot read objects from {path}: {message}")]
    ObjectsFile { path: String, message: String },
    /// Watching the API server failed. Retryable.
    #[error("watching {resource} failed")]
    Watch {
        resource: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `nft -f -` rejected a transaction. Retryable with a full sync.
    #[error("nft failed: {stderr}")]
    NftApplyFailed { stderr: String },
    /// `iptables-restore` rejected its input. Retryable with a full sync.
    #[error("{tool} failed: {stderr}")]
    IptablesRestoreFailed { tool: String, stderr: String },
    /// A userspace listener could not be bound. Retryable.
    #[error("cannot listen on {address}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    /// Running an external tool failed (not found, killed). Retryable.
    #[error("cannot run {tool}")]
    Tool {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
