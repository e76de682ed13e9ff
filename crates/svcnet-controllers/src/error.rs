//! Errors of the controllers crate.
//!
//! Allocation conflicts are not errors here: they are `FieldError`s returned to the API server
//! (see `ipam`) or Events on the Service (see `lb`). This enum covers what makes a controller
//! loop or its configuration fail.

/// What failed in a controller. Every variant produced by a running loop is retryable: the
/// loops log it and try again; only `Config` and `Ipam` stop `run` at start-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work (for example an empty service CIDR list).
    #[error("invalid controller configuration: {0}")]
    Config(String),
    /// The IPAM configuration was rejected.
    #[error("invalid ipam configuration")]
    Ipam(#[from] crate::ipam::IpamError),
    /// A request to the API server failed.
    #[error("kubernetes api request failed: {context}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    /// A watch stream ended with an error.
    #[error("watch failed: {context}")]
    Watch {
        context: String,
        #[source]
        source: kube::runtime::watcher::Error,
    },
    /// The LoadBalancer pool ConfigMap could not be parsed.
    #[error("invalid load balancer pool configuration: {0}")]
    Pools(String),
}

/// `Result` with this crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
