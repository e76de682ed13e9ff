//! Runs the API server alone for manual experiments: `cargo run -p svcnet-apiserver --example
//! serve -- DATA_DIR [LISTEN]`. It prints the kubeconfig path and serves until killed.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let data_dir = args.next().unwrap_or_else(|| "/tmp/svcnet-serve".into());
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let config = svcnet_apiserver::Config {
        data_dir: data_dir.into(),
        listen: listen.parse()?,
        ..Default::default()
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let handle = svcnet_apiserver::start(config, cancel.clone()).await?;
    println!("{} {}", handle.url, handle.kubeconfig.display());
    tokio::signal::ctrl_c().await?;
    cancel.cancel();
    handle.stopped().await;
    Ok(())
}
