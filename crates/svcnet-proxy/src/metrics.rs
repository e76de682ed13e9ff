//! Prometheus metrics: kube-proxy's names for sync and programming latency, svcnet's own
//! per-backend counters for the userspace data plane.
//!
//! The registry is private to a `Metrics` value (no global state), served as OpenMetrics text
//! on `/metrics`. Per-backend counters are read from the data plane at scrape time rather
//! than copied on every connection.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::dataplane::userspace::Stats;

/// The proxy's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub sync_proxy_rules_duration_seconds: Histogram,
    pub network_programming_duration_seconds: Histogram,
    pub sync_proxy_rules_last_timestamp_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub sync_proxy_rules_last_queued_timestamp_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub sync_proxy_rules_service_changes_total: Counter,
    pub sync_proxy_rules_endpoint_changes_total: Counter,
    pub sync_proxy_rules_no_local_endpoints_total: Family<Vec<(String, String)>, Gauge>,
    pub sync_errors_total: Counter,
    pub service_ports: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        // kube-proxy: exponential buckets from 1 ms, factor 2, 15 buckets (sync duration).
        let sync_proxy_rules_duration_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let network_programming_duration_seconds = Histogram::new([
            0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0,
        ]);
        let metrics = Metrics {
            sync_proxy_rules_duration_seconds,
            network_programming_duration_seconds,
            sync_proxy_rules_last_timestamp_seconds: Gauge::default(),
            sync_proxy_rules_last_queued_timestamp_seconds: Gauge::default(),
            sync_proxy_rules_service_changes_total: Counter::default(),
            sync_proxy_rules_endpoint_changes_total: Counter::default(),
            sync_proxy_rules_no_local_endpoints_total: Family::default(),
            sync_errors_total: Counter::default(),
            service_ports: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            metrics.sync_proxy_rules_duration_seconds.clone(),
        );
        registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            metrics.network_programming_duration_seconds.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            metrics.sync_proxy_rules_last_timestamp_seconds.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            metrics.sync_proxy_rules_last_queued_timestamp_seconds.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            metrics.sync_proxy_rules_service_changes_total.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            metrics.sync_proxy_rules_endpoint_changes_total.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            metrics.sync_proxy_rules_no_local_endpoints_total.clone(),
        );
        registry.register(
            "svcnet_proxy_sync_errors",
            "Syncs whose data plane apply failed",
            metrics.sync_errors_total.clone(),
        );
        registry.register(
            "svcnet_proxy_service_ports",
            "Service ports (per IP family) in the current plan",
            metrics.service_ports.clone(),
        );
        Metrics { registry, ..metrics }
    }

    /// Adds the userspace data plane's per-backend counters.
    pub fn register_backend_stats(&mut self, stats: Arc<Stats>) {
        self.registry.register_collector(Box::new(BackendCollector { stats }));
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[derive(Debug)]
struct BackendCollector {
    stats: Arc<Stats>,
}

impl Collector for BackendCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.stats.snapshot();
        let labels = |row: &crate::dataplane::userspace::BackendStat| -> Vec<(String, String)> {
            vec![
                ("namespace".to_string(), row.service.namespace.clone()),
                ("service".to_string(), row.service.name.clone()),
                ("port".to_string(), row.service.port_name.clone()),
                ("protocol".to_string(), row.service.protocol.to_string()),
                ("backend".to_string(), row.backend.to_string()),
            ]
        };
        {
            let mut family = encoder.encode_descriptor(
                "svcnet_proxy_backend_active_connections",
                "Connections (TCP) or flows (UDP) open to a backend now",
                None,
                MetricType::Gauge,
            )?;
            for row in &snapshot {
                let labels = labels(row);
                ConstGauge::new(row.active as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "svcnet_proxy_backend_connections",
                "Connections (TCP) or flows (UDP) ever opened to a backend",
                None,
                MetricType::Counter,
            )?;
            for row in &snapshot {
                let labels = labels(row);
                ConstCounter::new(row.total).encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "svcnet_proxy_backend_connect_failures",
                "Failed connect attempts to a backend (the connection was retried on another)",
                None,
                MetricType::Counter,
            )?;
            for row in &snapshot {
                let labels = labels(row);
                ConstCounter::new(row.failed).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
