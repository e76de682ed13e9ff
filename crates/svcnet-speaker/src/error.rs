//! Errors of the speaker. Every variant is retryable: the election loop logs it and tries
//! again on its next tick; only `run` returning ends the speaker.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool (`ip`, `arping`) exited non-zero.
    #[error("`{command}` failed: {stderr}")]
    CommandFailed { command: String, stderr: String },
    /// A tool could not be started (not installed, or no permission).
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The output of `ip -j addr` could not be parsed.
    #[error("cannot parse the output of `ip -j addr show`")]
    ParseAddresses(#[source] serde_json::Error),
    /// A Lease request failed (API unreachable, timeout, or rejected). `conflict` means
    /// another node wrote the Lease first (409): a lost race, not a fault.
    #[error("lease {name}: {message}")]
    Lease { name: String, message: String, conflict: bool },
    /// The state file of added addresses could not be read or written.
    #[error("state file {path}")]
    StateFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The configuration cannot work (for example a zero renew interval).
    #[error("invalid speaker configuration: {0}")]
    InvalidConfig(String),
}

impl Error {
    /// Whether this is a lost race for a Lease (409 Conflict or AlreadyExists).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Lease { conflict: true, .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
