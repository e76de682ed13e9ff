//! kube-proxy's health endpoints: the proxy's own `/healthz` and one server per
//! `healthCheckNodePort` that load balancers probe.
//!
//! `/healthz` answers 200 while no change has waited unapplied longer than the timeout (and
//! 503 before the first sync), with kube-proxy's JSON body. A healthCheckNodePort answers 200
//! when the Service has a ready endpoint on this node, else 503, with
//! `{"service":{"namespace":…,"name":…},"localEndpoints":N,"serviceProxyHealthy":…}`.
//! `localEndpoints` counts distinct ready local endpoint addresses across the Service's ports.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::plan::types::ProxyPlan;

/// The proxy's sync health, shared by the sync loop and the HTTP servers.
#[derive(Debug)]
pub struct ProxyHealth {
    timeout: Duration,
    state: Mutex<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    last_updated: Option<SystemTime>,
    /// When the oldest change that is not yet applied was queued.
    oldest_queued: Option<Instant>,
}

impl ProxyHealth {
    pub fn new(timeout: Duration) -> Self {
        ProxyHealth { timeout, state: Mutex::new(HealthState::default()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A change was seen and a sync queued.
    pub fn queued(&self) {
        let mut state = self.state();
        state.oldest_queued.get_or_insert_with(Instant::now);
    }

    /// A sync applied everything queued before it started.
    pub fn updated(&self) {
        let mut state = self.state();
        state.last_updated = Some(SystemTime::now());
        state.oldest_queued = None;
    }

    /// Healthy: synced at least once and nothing has waited longer than the timeout.
    pub fn is_healthy(&self) -> bool {
        let state = self.state();
        state.last_updated.is_some()
            && state.oldest_queued.is_none_or(|queued| queued.elapsed() < self.timeout)
    }

    fn last_updated(&self) -> Option<SystemTime> {
        self.state().last_updated
    }
}

fn rfc3339(time: SystemTime) -> String {
    jiff::Timestamp::try_from(time).map(|t| t.to_string()).unwrap_or_default()
}

async fn healthz(State(health): State<Arc<ProxyHealth>>) -> Response {
    let healthy = health.is_healthy();
    let body = serde_json::json!({
        "lastUpdated": health.last_updated().map(rfc3339).unwrap_or_default(),
        "currentTime": rfc3339(SystemTime::now()),
        "nodeEligible": true,
    });
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Serves `/healthz` and `/livez` (and `/metrics` when `metrics` is given) on `listener`.
pub async fn serve_healthz(
    listener: tokio::net::TcpListener,
    health: Arc<ProxyHealth>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    cancel: CancellationToken,
) {
    let mut router = Router::new()
        .route("/healthz", axum::routing::get(healthz))
        .route("/livez", axum::routing::get(healthz))
        .with_state(health);
    if let Some(metrics) = metrics {
        router = router.route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        );
    }
    if let Err(error) =
        axum::serve(listener, router).with_graceful_shutdown(cancel.cancelled_owned()).await
    {
        tracing::warn!(%error, "health server stopped");
    }
}

/// Binds `address` for an HTTP server.
pub async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| Error::Listen { address: address.to_string(), source })
}

/// What one healthCheckNodePort reports.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceHealth {
    namespace: String,
    name: String,
    local_endpoints: usize,
}

type SharedServiceHealth = Arc<Mutex<ServiceHealth>>;

struct HealthCheckServer {
    state: SharedServiceHealth,
    cancel: CancellationToken,
}

/// The healthCheckNodePort servers of the current plan.
pub struct HealthCheckServers {
    health: Arc<ProxyHealth>,
    bind_addresses: Vec<IpAddr>,
    servers: HashMap<u16, HealthCheckServer>,
    cancel: CancellationToken,
}

impl HealthCheckServers {
    /// Servers bind every address in `bind_addresses` (typically `0.0.0.0`).
    pub fn new(
        health: Arc<ProxyHealth>,
        bind_addresses: Vec<IpAddr>,
        cancel: CancellationToken,
    ) -> Self {
        HealthCheckServers { health, bind_addresses, servers: HashMap::new(), cancel }
    }

    /// Starts, updates and stops servers to match `plan`.
    pub async fn sync(&mut self, plan: &ProxyPlan) {
        let mut wanted: BTreeMap<u16, ServiceHealth> = BTreeMap::new();
        let mut local: BTreeMap<u16, std::collections::BTreeSet<IpAddr>> = BTreeMap::new();
        for (key, port) in &plan.service_ports {
            let Some(health_port) = port.health_check_node_port else { continue };
            wanted.entry(health_port).or_insert_with(|| ServiceHealth {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                local_endpoints: 0,
            });
            local
                .entry(health_port)
                .or_default()
                .extend(port.local_backends.iter().filter(|b| b.ready).map(|b| b.ip));
        }
        for (port, health) in wanted.iter_mut() {
            health.local_endpoints = local.get(port).map_or(0, |set| set.len());
        }
        self.servers.retain(|port, server| {
            let keep = wanted.contains_key(port);
            if !keep {
                server.cancel.cancel();
            }
            keep
        });
        for (port, health) in wanted {
            if let Some(server) = self.servers.get(&port) {
                *server.state.lock().unwrap_or_else(|p| p.into_inner()) = health;
                continue;
            }
            let state = Arc::new(Mutex::new(health));
            let cancel = self.cancel.child_token();
            let mut bound_any = false;
            for address in &self.bind_addresses {
                let address = SocketAddr::new(*address, port);
                match tokio::net::TcpListener::bind(address).await {
                    Ok(listener) => {
                        bound_any = true;
                        let router = Router::new()
                            .fallback(service_health)
                            .with_state((state.clone(), self.health.clone()));
                        let cancel = cancel.clone();
                        tokio::spawn(async move {
                            let _ = axum::serve(listener, router)
                                .with_graceful_shutdown(cancel.cancelled_owned())
                                .await;
                        });
                    }
                    Err(error) => {
                        tracing::warn!(%address, %error, "cannot serve healthCheckNodePort")
                    }
                }
            }
            if bound_any {
                self.servers.insert(port, HealthCheckServer { state, cancel });
            }
        }
    }
}

async fn service_health(
    State((state, health)): State<(SharedServiceHealth, Arc<ProxyHealth>)>,
) -> Response {
    let service = state.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let body = serde_json::json!({
        "service": {"namespace": service.namespace, "name": service.name},
        "localEndpoints": service.local_endpoints,
        "serviceProxyHealthy": health.is_healthy(),
    });
    let status =
        if service.local_endpoints > 0 { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut response =
        (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    response.headers_mut().insert("X-Content-Type-Options", HeaderValue::from_static("nosniff"));
    if let Ok(weight) = HeaderValue::from_str(&service.local_endpoints.to_string()) {
        response.headers_mut().insert("X-Load-Balancing-Endpoint-Weight", weight);
    }
    response
}
