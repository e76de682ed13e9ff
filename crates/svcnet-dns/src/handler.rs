//! The request handler: wire bytes in, wire bytes (or a forwarding job) out.
//!
//! It sits between the transports (`server.rs`, which only moves packets) and the data (`Zone`,
//! `Forwarder`). It decides FORMERR, NOTIMP, REFUSED and SERVFAIL, who may recurse, EDNS0 sizes
//! and truncation. It never panics on input and never answers a packet that is itself a response.
//! UDP questions of the common shape are first looked up in the worker's answer cache
//! (`cache.rs`); a miss takes the full path and its authoritative reply fills the cache.
//! Left out: DNSSEC, DNS cookies, zone transfers (refused), UPDATE and NOTIFY (NOTIMP).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use ipnet::IpNet;

use crate::cache::AnswerCache;
use crate::forward::Forwarder;
use crate::metrics::Metrics;
use crate::zone::{Answer, Zone, ZoneAnswer};

/// The UDP payload size this server advertises in its own OPT record.
pub const ADVERTISED_UDP_PAYLOAD: u16 = 1232;

/// Which transport a request came on (sets the size limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP: 512 bytes without EDNS0, else the client's advertised size.
    Udp,
    /// TCP: up to 65535 bytes.
    Tcp,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// What to do with one packet.
#[derive(Debug)]
pub enum Outcome {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Resolve upstream, then send the result of [`Handler::forward`].
    Forward(Box<ForwardJob>),
    /// Send nothing (a response, or too short to carry an ID).
    Drop,
}

/// What to do with one UDP packet; a reply is in the caller's buffer.
#[derive(Debug)]
pub enum UdpOutcome {
    /// Send the buffer back.
    Reply,
    /// Resolve upstream, then send the result of [`Handler::forward`].
    Forward(Box<ForwardJob>),
    /// Send nothing.
    Drop,
}

/// A question that needs the upstream resolvers.
#[derive(Debug)]
pub struct ForwardJob {
    request: Message,
    target: Name,
    prefix: Vec<Record>,
    max_size: usize,
    transport: Transport,
    start: Instant,
}

/// Everything a request needs; shared by every transport worker.
pub struct Handler {
    zone: Arc<ArcSwap<Zone>>,
    ready: Arc<AtomicBool>,
    allow_recursion: Vec<IpNet>,
    forwarder: Option<Arc<Forwarder>>,
    metrics: Arc<Metrics>,
    answer_cache: bool,
}

impl Handler {
    /// A handler over a zone snapshot. Until `ready` is set, questions inside the cluster zone
    /// get SERVFAIL (so clients do not cache NXDOMAIN for names not yet synced).
    pub fn new(
        zone: Arc<ArcSwap<Zone>>,
        ready: Arc<AtomicBool>,
        allow_recursion: Vec<IpNet>,
        forwarder: Option<Arc<Forwarder>>,
        metrics: Arc<Metrics>,
    ) -> Handler {
        Handler { zone, ready, allow_recursion, forwarder, metrics, answer_cache: true }
    }

    /// Turns the UDP answer cache on (the default) or off.
    pub fn with_answer_cache(mut self, enabled: bool) -> Handler {
        self.answer_cache = enabled;
        self
    }

    /// The zone snapshot being served.
    pub fn zone(&self) -> Arc<Zone> {
        self.zone.load_full()
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether `client` may have names outside the cluster zone resolved.
    pub fn recursion_allowed(&self, client: IpAddr) -> bool {
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        self.allow_recursion.iter().any(|net| net.contains(&client))
    }

    /// Handles one request packet.
    pub fn handle(&self, packet: &[u8], client: IpAddr, transport: Transport) -> Outcome {
        let start = Instant::now();
        let zone = self.zone.load();
        self.handle_full(packet, client, transport, start, &zone).0
    }

    /// Handles one UDP request, answering repeated questions from the worker's `cache` of
    /// encoded replies. A reply is left in `out` (reused across calls: no allocation on a hit).
    pub fn handle_udp(
        &self,
        packet: &[u8],
        client: IpAddr,
        cache: &mut AnswerCache,
        out: &mut Vec<u8>,
    ) -> UdpOutcome {
        let start = Instant::now();
        let zone = self.zone.load();
        // Not ready (SERVFAIL) and autopath answers to pods depend on more than the question.
        let cacheable = self.answer_cache
            && self.ready.load(Ordering::Acquire)
            && (!zone.autopath_enabled() || zone.pod_namespaces(client).is_empty());
        let question = if cacheable {
            cache.follow(&zone);
            cache.key(packet, self.recursion_allowed(client))
        } else {
            None
        };
        if let Some(question) = question
            && cache.reply(packet, question, out)
        {
            let rcode = ResponseCode::from(0, out[3] & 0x0f);
            self.metrics.request(
                Transport::Udp.label(),
                RecordType::from(question.qtype),
                rcode,
                start,
            );
            return UdpOutcome::Reply;
        }
        match self.handle_full(packet, client, Transport::Udp, start, &zone) {
            (Outcome::Reply(bytes), from_zone) => {
                if from_zone && let Some(question) = question {
                    cache.insert(packet, question, &bytes);
                }
                out.clear();
                out.extend_from_slice(&bytes);
                UdpOutcome::Reply
            }
            (Outcome::Forward(job), _) => UdpOutcome::Forward(job),
            (Outcome::Drop, _) => UdpOutcome::Drop,
        }
    }

    /// A UDP datagram longer than the receive buffer: FORMERR if it looks like a query.
    pub fn handle_oversized(&self, packet: &[u8], out: &mut Vec<u8>) -> UdpOutcome {
        self.metrics.malformed(Transport::Udp.label());
        if packet.len() < 12 || packet[2] & 0x80 != 0 {
            return UdpOutcome::Drop;
        }
        out.clear();
        out.extend_from_slice(&formerr(packet));
        UdpOutcome::Reply
    }

    /// The full path: parse, decide, encode. The flag says whether the reply is an
    /// authoritative answer from `zone` that depends only on the question (cacheable).
    fn handle_full(
        &self,
        packet: &[u8],
        client: IpAddr,
        transport: Transport,
        start: Instant,
        zone: &Zone,
    ) -> (Outcome, bool) {
        // Too short for a header, or a response (never answer those: reflection loops).
        if packet.len() < 12 || packet[2] & 0x80 != 0 {
            self.metrics.malformed(transport.label());
            return (Outcome::Drop, false);
        }
        let request = match Message::from_vec(packet) {
            Ok(request) => request,
            Err(_) => {
                self.metrics.malformed(transport.label());
                self.metrics.request(
                    transport.label(),
                    RecordType::Unknown(0),
                    ResponseCode::FormErr,
                    start,
                );
                return (Outcome::Reply(formerr(packet)), false);
            }
        };
        let qtype = request.queries.first().map_or(RecordType::Unknown(0), Query::query_type);
        let (outcome, from_zone) = self.handle_message(request, client, transport, start, zone);
        if let Outcome::Reply(bytes) = &outcome {
            let rcode =
                bytes.get(3).map_or(ResponseCode::ServFail, |b| ResponseCode::from(0, b & 0x0f));
            self.metrics.request(transport.label(), qtype, rcode, start);
        }
        (outcome, from_zone)
    }

    fn handle_message(
        &self,
        request: Message,
        client: IpAddr,
        transport: Transport,
        start: Instant,
        zone: &Zone,
    ) -> (Outcome, bool) {
        let max_size = match transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => usize::from(request.max_payload()),
        };
        let recursion = self.recursion_allowed(client);
        let reply = |rcode: ResponseCode| {
            (
                Outcome::Reply(respond(
                    &request,
                    rcode,
                    ZoneAnswer::default(),
                    false,
                    recursion,
                    max_size,
                )),
                false,
            )
        };
        if request.metadata.op_code != OpCode::Query {
            return reply(ResponseCode::NotImp);
        }
        if request.queries.len() != 1 {
            return reply(ResponseCode::FormErr);
        }
        if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
            return reply(ResponseCode::BADVERS);
        }
        let query = &request.queries[0];
        if query.query_class() != DNSClass::IN {
            return reply(ResponseCode::Refused);
        }
        if matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR) {
            return reply(ResponseCode::Refused);
        }
        if !self.ready.load(Ordering::Acquire) && zone.origin().zone_of(query.name()) {
            return reply(ResponseCode::ServFail);
        }
        match zone.answer(query, client) {
            Answer::Zone(answer) => (
                Outcome::Reply(respond(&request, answer.rcode, answer, true, recursion, max_size)),
                true,
            ),
            Answer::OutOfZone => {
                if query.query_type() == RecordType::ANY {
                    // RFC 8482: no ANY through the forwarder.
                    return reply(ResponseCode::NotImp);
                }
                if !recursion {
                    return reply(ResponseCode::Refused);
                }
                if self.forwarder.is_none() {
                    return reply(ResponseCode::ServFail);
                }
                let target = query.name().clone();
                let job =
                    ForwardJob { request, target, prefix: Vec::new(), max_size, transport, start };
                (Outcome::Forward(Box::new(job)), false)
            }
            Answer::Autopath { cname, target } => {
                if !recursion || self.forwarder.is_none() {
                    let answer = ZoneAnswer {
                        rcode: ResponseCode::NXDomain,
                        authorities: vec![zone.soa().clone()],
                        ..ZoneAnswer::default()
                    };
                    let bytes = respond(
                        &request,
                        ResponseCode::NXDomain,
                        answer,
                        true,
                        recursion,
                        max_size,
                    );
                    return (Outcome::Reply(bytes), false);
                }
                let job = ForwardJob {
                    request,
                    target,
                    prefix: vec![*cname],
                    max_size,
                    transport,
                    start,
                };
                (Outcome::Forward(Box::new(job)), false)
            }
        }
    }

    /// Resolves a forwarding job upstream and returns the reply bytes (SERVFAIL on failure).
    pub async fn forward(&self, job: Box<ForwardJob>) -> Vec<u8> {
        let job = *job;
        let Some(query) = job.request.queries.first() else {
            return formerr(&[]);
        };
        let qtype = query.query_type();
        let upstream = match &self.forwarder {
            Some(forwarder) => {
                forwarder.resolve(&job.target, qtype, job.request.metadata.checking_disabled).await
            }
            None => None,
        };
        let bytes = match upstream {
            Some(upstream) => {
                let mut answers = job.prefix;
                answers.extend(upstream.answers);
                let answer = ZoneAnswer {
                    rcode: upstream.metadata.response_code,
                    answers,
                    authorities: upstream.authorities,
                    additionals: upstream.additionals,
                };
                respond(&job.request, answer.rcode, answer, false, true, job.max_size)
            }
            None => respond(
                &job.request,
                ResponseCode::ServFail,
                ZoneAnswer::default(),
                false,
                true,
                job.max_size,
            ),
        };
        let rcode =
            bytes.get(3).map_or(ResponseCode::ServFail, |b| ResponseCode::from(0, b & 0x0f));
        self.metrics.request(job.transport.label(), qtype, rcode, job.start);
        bytes
    }
}

/// A FORMERR reply built from the raw header of a request that did not parse.
fn formerr(packet: &[u8]) -> Vec<u8> {
    let mut reply = vec![0u8; 12];
    if packet.len() >= 4 {
        reply[0] = packet[0];
        reply[1] = packet[1];
        // QR, the request's opcode and RD; RCODE 1.
        reply[2] = 0x80 | (packet[2] & 0x79);
        reply[3] = 0x01;
    }
    reply
}

/// Builds the response bytes, fitting them into `max_size`: first without the additional
/// section, then with as many answers as fit and TC set (RFC 2181 §9, as CoreDNS does).
fn respond(
    request: &Message,
    rcode: ResponseCode,
    answer: ZoneAnswer,
    authoritative: bool,
    recursion_available: bool,
    max_size: usize,
) -> Vec<u8> {
    let mut message = Message::response(request.metadata.id, OpCode::Query);
    message.metadata.op_code = request.metadata.op_code;
    message.metadata.recursion_desired = request.metadata.recursion_desired;
    message.metadata.checking_disabled = request.metadata.checking_disabled;
    message.metadata.authoritative = authoritative && rcode != ResponseCode::Refused;
    message.metadata.recursion_available = recursion_available;
    message.metadata.response_code = rcode;
    message.queries = request.queries.clone();
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(ADVERTISED_UDP_PAYLOAD);
        message.edns = Some(edns);
    }
    // Keep the asker's spelling of the name (0x20 case randomisation) on matching owners.
    let qname = request.queries.first().map(Query::name);
    let mut answers = answer.answers;
    if let Some(qname) = qname {
        for record in &mut answers {
            if record.name == *qname {
                record.name = qname.clone();
            }
        }
    }
    message.answers = answers;
    message.authorities = answer.authorities;
    message.additionals = answer.additionals;

    let encode = |message: &Message| message.to_vec().ok();
    match encode(&message) {
        Some(bytes) if bytes.len() <= max_size => return bytes,
        None => {
            let mut failed =
                Message::error_msg(request.metadata.id, OpCode::Query, ResponseCode::ServFail);
            failed.queries = request.queries.clone();
            return encode(&failed).unwrap_or_else(|| formerr(&[]));
        }
        Some(_) => {}
    }
    // Dropping the additional section needs no TC bit.
    message.additionals.clear();
    if let Some(bytes) = encode(&message).filter(|bytes| bytes.len() <= max_size) {
        return bytes;
    }
    message.metadata.truncation = true;
    message.authorities.clear();
    let all_answers = std::mem::take(&mut message.answers);
    // Binary search for the largest prefix of answers that fits.
    let (mut fits, mut too_big) = (0usize, all_answers.len());
    while fits + 1 < too_big {
        let middle = (fits + too_big) / 2;
        message.answers = all_answers[..middle].to_vec();
        match encode(&message) {
            Some(bytes) if bytes.len() <= max_size => fits = middle,
            _ => too_big = middle,
        }
    }
    message.answers = all_answers[..fits].to_vec();
    match encode(&message) {
        Some(bytes) if bytes.len() <= max_size => bytes,
        _ => {
            // Even the question does not fit (a huge name in 512 bytes cannot happen, but the
            // header alone always does).
            message.answers.clear();
            message.queries.clear();
            encode(&message).unwrap_or_else(|| formerr(&[]))
        }
    }
}
