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

/// The API client every subcommand uses: from `kubeconfig` when given, else kube's defaults
/// (`KUBECONFIG`, `~/.kube/config`, or in-cluster credentials).
pub async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    use anyhow::Context;
    let Some(path) = kubeconfig else {
        return kube::Client::try_default().await.context("while loading the default kubeconfig");
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("while reading {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .with_context(|| format!("while loading {}", path.display()))?;
    kube::Client::try_from(config).context("while creating the API client")
}

/// A command-line number of seconds (fractions allowed) as a `Duration`.
pub fn seconds(value: f64, flag: &str) -> anyhow::Result<std::time::Duration> {
    seconds_at_least(value, 0.0, flag)
}

/// The same for a setting where zero makes no sense (a timeout).
pub fn positive_seconds(value: f64, flag: &str) -> anyhow::Result<std::time::Duration> {
    seconds_at_least(value, 0.001, flag)
}

fn seconds_at_least(value: f64, least: f64, flag: &str) -> anyhow::Result<std::time::Duration> {
    if !value.is_finite() || !(least..=1e9).contains(&value) {
        anyhow::bail!("{flag} must be a number of seconds from {least} on, not {value}");
    }
    Ok(std::time::Duration::from_secs_f64(value))
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM: how every long-running subcommand is asked to stop.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
