//! Errors of the DNS server. Every variant is fatal for `run`/`serve_static` (startup problems);
//! per-query problems are answered on the wire (FORMERR, SERVFAIL, REFUSED) and never become
//! an `Error`.

/// What failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listening socket could not be set up.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The metrics/health HTTP server could not be set up.
    #[error("cannot serve metrics on {addr}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A JSON list of objects did not parse.
    #[error("invalid objects")]
    InvalidObjects(#[source] serde_json::Error),
    /// A background task panicked or was aborted.
    #[error("task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
