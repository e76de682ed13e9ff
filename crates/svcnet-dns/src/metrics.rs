//! Prometheus metrics of the DNS server, named after CoreDNS's (`coredns_dns_requests_total`,
//! `coredns_dns_responses_total{rcode}`, `coredns_dns_request_duration_seconds`,
//! `coredns_cache_{hits,misses}_total`) with the `svcnet_dns_` prefix.
//!
//! Labels are static strings so the hot path never allocates. Left out: per-zone and per-server
//! labels (there is one zone and one server).

use std::time::Instant;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = [(&'static str, &'static str); 2];
type Label = [(&'static str, &'static str); 1];

/// Every metric the server exports.
pub struct Metrics {
    requests: Family<Labels, Counter>,
    responses: Family<Label, Counter>,
    duration: Histogram,
    malformed: Family<Label, Counter>,
    /// Forwarder cache hits.
    pub cache_hits: Counter,
    /// Forwarder cache misses.
    pub cache_misses: Counter,
    /// UDP answers served from the per-worker answer cache.
    pub answer_cache_hits: Counter,
    /// UDP questions of the cacheable shape that missed the answer cache.
    pub answer_cache_misses: Counter,
    /// Upstream exchanges that failed (timeout, error).
    pub forward_failures: Counter,
    /// Zone snapshots swapped in.
    pub zone_builds: Counter,
    /// Services in the current zone.
    pub zone_services: Gauge,
    /// Time to rebuild the zone after a change, in seconds.
    pub programming_duration: Histogram,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> Metrics {
        let metrics = Metrics {
            requests: Family::default(),
            responses: Family::default(),
            duration: Histogram::new(exponential_buckets(0.000_025, 2.0, 16)),
            malformed: Family::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            answer_cache_hits: Counter::default(),
            answer_cache_misses: Counter::default(),
            forward_failures: Counter::default(),
            zone_builds: Counter::default(),
            zone_services: Gauge::default(),
            programming_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
        };
        let registry = registry.sub_registry_with_prefix("svcnet_dns");
        registry.register(
            "requests",
            "DNS requests by transport and type",
            metrics.requests.clone(),
        );
        registry.register("responses", "DNS responses by rcode", metrics.responses.clone());
        registry.register(
            "request_duration_seconds",
            "Time to answer a request (including upstream time when forwarded)",
            metrics.duration.clone(),
        );
        registry.register(
            "malformed_requests",
            "Packets that were not a parseable DNS query",
            metrics.malformed.clone(),
        );
        registry.register("cache_hits", "Forwarder cache hits", metrics.cache_hits.clone());
        registry.register("cache_misses", "Forwarder cache misses", metrics.cache_misses.clone());
        registry.register(
            "answer_cache_hits",
            "UDP answers served from the encoded-answer cache",
            metrics.answer_cache_hits.clone(),
        );
        registry.register(
            "answer_cache_misses",
            "UDP questions that missed the encoded-answer cache",
            metrics.answer_cache_misses.clone(),
        );
        registry.register(
            "forward_failures",
            "Upstream exchanges that failed",
            metrics.forward_failures.clone(),
        );
        registry.register("zone_builds", "Zone snapshots swapped in", metrics.zone_builds.clone());
        registry.register(
            "zone_services",
            "Services in the current zone",
            metrics.zone_services.clone(),
        );
        registry.register(
            "programming_duration_seconds",
            "Time from a watch event to the new zone being served",
            metrics.programming_duration.clone(),
        );
        metrics
    }

    /// Counts one answered request.
    pub fn request(
        &self,
        proto: &'static str,
        qtype: RecordType,
        rcode: ResponseCode,
        start: Instant,
    ) {
        self.requests.get_or_create(&[("proto", proto), ("type", type_label(qtype))]).inc();
        self.responses.get_or_create(&[("rcode", rcode_label(rcode))]).inc();
        self.duration.observe(start.elapsed().as_secs_f64());
    }

    /// Counts one packet that was dropped or answered FORMERR.
    pub fn malformed(&self, proto: &'static str) {
        self.malformed.get_or_create(&[("proto", proto)]).inc();
    }
}

fn type_label(qtype: RecordType) -> &'static str {
    match qtype {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::SRV => "SRV",
        RecordType::PTR => "PTR",
        RecordType::TXT => "TXT",
        RecordType::CNAME => "CNAME",
        RecordType::SOA => "SOA",
        RecordType::NS => "NS",
        RecordType::MX => "MX",
        RecordType::ANY => "ANY",
        RecordType::AXFR => "AXFR",
        RecordType::IXFR => "IXFR",
        RecordType::HTTPS => "HTTPS",
        _ => "other",
    }
}

fn rcode_label(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::BADVERS => "BADVERS",
        _ => "other",
    }
}
