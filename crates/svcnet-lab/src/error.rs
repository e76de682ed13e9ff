//! Errors of the lab. All are reported to the user as one line by the binary.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Every built-in layout overlaps a route of this machine; the lab refuses to start.
    #[error("no free subnets for the lab: {clashes}")]
    NoFreeSubnets { clashes: String },
    /// A tool (`ip`, `nft`) exited non-zero.
    #[error("`{command}` failed: {stderr}")]
    CommandFailed { command: String, stderr: String },
    /// A tool could not be started.
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The lab is not up (no state in the data dir).
    #[error("the lab is not up (no state in {0})")]
    NotUp(String),
    /// A lab already exists.
    #[error("a lab is already up (state in {0}); run `svcnet lab down` first")]
    AlreadyUp(String),
    /// An unknown host name was given.
    #[error(
        "unknown lab host {0:?} (hosts: internet, router, control-plane, node-1, node-2, vm-1, pod/NAME[.NAMESPACE])"
    )]
    UnknownHost(String),
    /// Reading or writing the lab's state failed.
    #[error("lab state {path}")]
    State {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A request to the lab's API server failed (retryable while the cluster starts).
    #[error("{what}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// Something did not happen within its deadline; the message names it.
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
