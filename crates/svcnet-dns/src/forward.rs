//! Forwarding of names outside the cluster zone to upstream resolvers, with a small TTL cache.
//!
//! Plain DNS over UDP to each upstream in turn (TCP when the upstream truncates), a fresh
//! socket and random ID per exchange, answers checked against the question. The cache keeps
//! whole upstream responses for the smallest TTL they carry (negative answers: the SOA minimum),
//! capped at `MAX_CACHE_TTL`, and is bounded in entries. Who may use the forwarder is decided by
//! the handler, not here. Left out: DNS over TLS/HTTPS, upstream health checks, prefetching.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::metrics::Metrics;

/// The longest time an upstream answer is cached.
pub const MAX_CACHE_TTL: u32 = 3600;
/// How long a negative answer without an SOA is cached.
const DEFAULT_NEGATIVE_TTL: u32 = 30;
/// At most this many upstream exchanges run at once; more get SERVFAIL.
const MAX_IN_FLIGHT: usize = 1024;

struct CacheEntry {
    inserted: Instant,
    ttl: u32,
    response: Message,
}

/// Upstream resolvers plus the cache.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    cache: Mutex<HashMap<(Name, RecordType, bool), CacheEntry>>,
    cache_size: usize,
    in_flight: Semaphore,
    metrics: Arc<Metrics>,
}

/// Reads the `nameserver` lines of a resolv.conf (port 53).
pub fn read_resolv_conf(path: &Path) -> std::io::Result<Vec<SocketAddr>> {
    let text = std::fs::read_to_string(path)?;
    Ok(parse_resolv_conf(&text))
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            // A scoped IPv6 address (`fe80::1%eth0`) is not supported and skipped.
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

impl Forwarder {
    /// A forwarder over these upstreams.
    pub fn new(
        upstreams: Vec<SocketAddr>,
        timeout: Duration,
        cache_size: usize,
        metrics: Arc<Metrics>,
    ) -> Forwarder {
        Forwarder {
            upstreams,
            timeout,
            cache: Mutex::new(HashMap::new()),
            cache_size,
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
            metrics,
        }
    }

    /// The upstreams in the order they are tried.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Resolves `name`/`qtype` upstream (or from the cache). `None` when every upstream failed.
    pub async fn resolve(
        &self,
        name: &Name,
        qtype: RecordType,
        checking_disabled: bool,
    ) -> Option<Message> {
        let key = (name.to_lowercase(), qtype, checking_disabled);
        if let Some(cached) = self.cached(&key) {
            self.metrics.cache_hits.inc();
            return Some(cached);
        }
        self.metrics.cache_misses.inc();
        let _permit = self.in_flight.try_acquire().ok()?;
        for upstream in &self.upstreams {
            match self.exchange(*upstream, name, qtype, checking_disabled).await {
                Ok(response) => {
                    if let Some(ttl) = cache_ttl(&response) {
                        self.insert(key, ttl, &response);
                    }
                    return Some(response);
                }
                Err(err) => {
                    self.metrics.forward_failures.inc();
                    tracing::debug!(%upstream, %name, error = %err, "upstream exchange failed");
                }
            }
        }
        None
    }

    fn cached(&self, key: &(Name, RecordType, bool)) -> Option<Message> {
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = cache.get(key)?;
        let age = u32::try_from(entry.inserted.elapsed().as_secs()).unwrap_or(u32::MAX);
        if age >= entry.ttl {
            cache.remove(key);
            return None;
        }
        let mut response = entry.response.clone();
        for record in response
            .answers
            .iter_mut()
            .chain(response.authorities.iter_mut())
            .chain(response.additionals.iter_mut())
        {
            record.ttl = record.ttl.saturating_sub(age);
        }
        Some(response)
    }

    fn insert(&self, key: (Name, RecordType, bool), ttl: u32, response: &Message) {
        if ttl == 0 || self.cache_size == 0 {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.len() >= self.cache_size {
            cache.retain(|_, entry| entry.inserted.elapsed().as_secs() < u64::from(entry.ttl));
            if cache.len() >= self.cache_size {
                // Still full of live entries: start over rather than track recency.
                cache.clear();
            }
        }
        cache.insert(key, CacheEntry { inserted: Instant::now(), ttl, response: response.clone() });
    }

    async fn exchange(
        &self,
        upstream: SocketAddr,
        name: &Name,
        qtype: RecordType,
        checking_disabled: bool,
    ) -> std::io::Result<Message> {
        let mut request = Message::query();
        request.metadata.recursion_desired = true;
        request.metadata.checking_disabled = checking_disabled;
        request.add_query(Query::query(name.clone(), qtype));
        let bytes = request.to_vec().map_err(std::io::Error::other)?;
        let response = tokio::time::timeout(self.timeout, exchange_udp(upstream, &bytes, &request))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream timed out")
            })??;
        if !response.metadata.truncation {
            return Ok(response);
        }
        tokio::time::timeout(self.timeout, exchange_tcp(upstream, &bytes, &request))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream timed out"))?
    }
}

fn matches(request: &Message, response: &Message) -> bool {
    response.metadata.id == request.metadata.id && response.queries == request.queries
}

async fn exchange_udp(
    upstream: SocketAddr,
    bytes: &[u8],
    request: &Message,
) -> std::io::Result<Message> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = tokio::net::UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Ignore anything that is not the answer to this exact question (spoofing, stale).
        if let Ok(response) = Message::from_vec(&buf[..n])
            && matches(request, &response)
        {
            return Ok(response);
        }
    }
}

async fn exchange_tcp(
    upstream: SocketAddr,
    bytes: &[u8],
    request: &Message,
) -> std::io::Result<Message> {
    let mut stream = tokio::net::TcpStream::connect(upstream).await?;
    let length = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await?;
    let length = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(length)];
    stream.read_exact(&mut buf).await?;
    let response = Message::from_vec(&buf).map_err(std::io::Error::other)?;
    if !matches(request, &response) {
        return Err(std::io::Error::other("upstream answered another question"));
    }
    Ok(response)
}

/// How long a response may be cached: the smallest TTL of its records; for negative answers the
/// SOA minimum (RFC 2308). SERVFAIL and REFUSED are not cached.
fn cache_ttl(response: &Message) -> Option<u32> {
    match response.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        _ => return None,
    }
    if response.metadata.truncation {
        return None;
    }
    let ttl = if response.answers.is_empty() {
        response
            .authorities
            .iter()
            .find_map(|record| match &record.data {
                RData::SOA(soa) => Some(record.ttl.min(soa.minimum)),
                _ => None,
            })
            .unwrap_or(DEFAULT_NEGATIVE_TTL)
    } else {
        response.answers.iter().map(|record| record.ttl).min().unwrap_or(0)
    };
    Some(ttl.min(MAX_CACHE_TTL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf() {
        let text = "# comment\nsearch example.com\nnameserver 127.0.0.53\nnameserver ::1\nnameserver fe80::1%eth0\noptions edns0\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec!["127.0.0.53:53".parse().expect("addr"), "[::1]:53".parse().expect("addr")]
        );
    }
}
