//! Start-up and the connection loop: TLS (h2 and HTTP/1.1 via ALPN), one hyper connection
//! task per client, graceful shutdown on cancellation.
//!
//! What it leaves out: request semantics (`handler`) and the bootstrap objects (`namespaces`,
//! `services`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use svcnet_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cache::WatchCache;
use crate::error::{Error, Result};
use crate::openapi::OpenApi;
use crate::{Config, ServerHandle, handler, namespaces, services, tls};

/// Shared state of all requests.
pub struct State {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub cache: Arc<WatchCache>,
    pub token: String,
    pub ipam: services::IpamHandle,
    pub openapi: OpenApi,
    pub cancel: CancellationToken,
    pub namespace_deleter: tokio::sync::mpsc::UnboundedSender<String>,
    /// The address published for the `kubernetes` Service.
    pub advertise: IpAddr,
    pub port: u16,
}

pub async fn start(config: Config, cancel: CancellationToken) -> Result<ServerHandle> {
    if config.service_cluster_ip_ranges.is_empty() || config.service_cluster_ip_ranges.len() > 2 {
        return Err(Error::Config("--service-cluster-ip-range takes one or two CIDRs".into()));
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| Error::DataDir { path: config.data_dir.display().to_string(), source })?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen { addr: config.listen.to_string(), source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| Error::Listen { addr: config.listen.to_string(), source })?;
    let advertise = config.advertise_address.unwrap_or(if addr.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        addr.ip()
    });
    let ipam = services::IpamHandle::new(&config)?;
    let mut extra_ips = vec![advertise];
    extra_ips.push(ipam.kubernetes_service_ip());
    let material = tls::prepare(&config.data_dir, addr, &extra_ips)?;

    let store = svcnet_store::open(&config.store, &config.data_dir).await?;
    let cache =
        WatchCache::start(store.clone(), config.watch_cache_events, cancel.child_token()).await?;
    let (ns_tx, ns_rx) = tokio::sync::mpsc::unbounded_channel();
    let state = Arc::new(State {
        config: config.clone(),
        store: store.clone(),
        cache,
        token: material.token.clone(),
        ipam,
        openapi: OpenApi::build(),
        cancel: cancel.clone(),
        namespace_deleter: ns_tx,
        advertise,
        port: addr.port(),
    });

    namespaces::bootstrap(&state).await?;
    services::bootstrap(&state).await?;
    tokio::spawn(namespaces::run_deleter(state.clone(), ns_rx));
    if !config.compaction_interval.is_zero() {
        let interval = config.compaction_interval;
        tokio::spawn(crate::compaction::run(store.clone(), interval, cancel.child_token()));
    }

    let host = if addr.ip().is_unspecified() { advertise } else { addr.ip() };
    let url = match host {
        IpAddr::V6(v6) => format!("https://[{v6}]:{}", addr.port()),
        IpAddr::V4(v4) => format!("https://{v4}:{}", addr.port()),
    };
    let kubeconfig =
        tls::write_kubeconfig(&config.data_dir, &url, &material.ca_pem, &material.token)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(material.server_config.clone());
    let done = tokio::spawn(accept_loop(listener, acceptor, state, cancel));
    tracing::info!(%addr, kubeconfig = %kubeconfig.display(), "API server ready");
    Ok(ServerHandle {
        addr,
        kubeconfig,
        url,
        token: material.token,
        ca_pem: material.ca_pem,
        store,
        done,
    })
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
    cancel: CancellationToken,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        let cancel = cancel.clone();
        connections
            .spawn(async move { serve_connection(tcp, peer, acceptor, state, cancel).await });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    // Give open requests a moment to finish; watches end on cancellation by themselves.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
    cancel: CancellationToken,
) {
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(handler::handle(state, req).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}
