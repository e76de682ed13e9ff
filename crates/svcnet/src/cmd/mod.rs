//! One module per subcommand. Shared helpers for all of them live here.

pub mod controllers;
pub mod dns;
pub mod echo;
pub mod lab;
pub mod node;
pub mod proxy;
pub mod server;
pub mod trace;
pub mod up;

/// Returned by a subcommand that is not built yet: the binary prints a one-line message and
/// exits with status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not built yet")]
pub struct NotBuilt(pub &'static str);

/// Installs the one tracing subscriber of the process (libraries never do).
pub fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
