//! The metrics address: `/healthz` (the process serves), `/ready` (the initial watch sync is
//! done and the zone is built) and `/metrics` (Prometheus text). Left out: CoreDNS's lameduck.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

#[derive(Clone)]
struct HttpState {
    ready: Arc<AtomicBool>,
    registry: Arc<Registry>,
}

/// Binds the metrics address and serves it until `cancel`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    registry: Arc<Registry>,
    cancel: CancellationToken,
) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Metrics { addr, source })?;
    let bound = listener.local_addr().map_err(|source| Error::Metrics { addr, source })?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/ready", get(ready_handler))
        .route("/metrics", get(metrics_handler))
        .with_state(HttpState { ready, registry });
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(err) = served {
            tracing::warn!(error = %err, "metrics server stopped");
        }
    });
    Ok(bound)
}

async fn ready_handler(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "initial sync not done")
    }
}

async fn metrics_handler(State(state): State<HttpState>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            text,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            String::from("encoding failed"),
        ),
    }
}
