//! The agent's error type.
//!
//! Every variant is retryable by the caller unless its doc says otherwise: the agent keeps
//! running and tries again on the next watch event or tick.

use std::net::SocketAddr;

/// What went wrong in the node agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding a listening socket failed (address in use, no permission); not retryable as is.
    #[error("cannot bind {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A call to the Kubernetes API failed.
    #[error("kubernetes api call failed: {what}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// A file or process operation under the data dir failed.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// An external tool (`ip`) exited with an error.
    #[error("{command} failed: {stderr}")]
    Command { command: String, stderr: String },
    /// The pod address range is used up; not retryable until a pod goes away.
    #[error("no free pod address in {range}")]
    NoPodAddress { range: String },
    /// The configuration is not usable; not retryable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// The agent's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }

    pub(crate) fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube { what: what.into(), source }
    }
}
