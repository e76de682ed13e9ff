//! The UDP answer cache: encoded replies from the current zone snapshot, keyed by the question,
//! so a repeated question costs one hash lookup and two byte patches (the ID and the asker's
//! spelling of the name) instead of a parse, a zone lookup and an encode.
//!
//! Each UDP worker owns one cache: no locks and no sharing between cores. Entries belong to the
//! zone snapshot they were built from: the cache holds that snapshot's `Arc` and empties itself
//! as soon as the handler loads a different one, so an answer never outlives the zone swap that
//! changed it (the swap is the invalidation; there is no TTL here).
//! Only the common shape of query is cached: QUERY opcode, one question written without
//! compression, no answer or authority records and at most one OPT record. Anything else takes
//! the full path, and so does every miss, whose reply then fills the cache.
//! Left out: forwarded answers (the forwarder has its own cache) and answers that depend on the
//! client beyond the recursion flag (autopath answers to pods are never cached).

use std::collections::HashMap;
use std::sync::Arc;

use crate::zone::Zone;

/// Per-worker budget: keys and replies above this many bytes empty the cache first.
const MAX_BYTES: usize = 8 << 20;
/// Rough per-entry overhead of the map (two boxes and a bucket), counted against the budget.
const ENTRY_OVERHEAD: usize = 64;

/// One worker's cache of encoded replies.
pub struct AnswerCache {
    zone: Option<Arc<Zone>>,
    entries: HashMap<Box<[u8]>, Box<[u8]>>,
    bytes: usize,
    /// The key of the current question (reused: no allocation per query).
    key: Vec<u8>,
    hits: u64,
    misses: u64,
}

impl Default for AnswerCache {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the question's name ends in a packet the cache understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Question {
    /// Offset just past the question name (the name starts at 12).
    pub name_end: usize,
    /// The question type.
    pub qtype: u16,
}

impl AnswerCache {
    /// An empty cache.
    pub fn new() -> AnswerCache {
        AnswerCache {
            zone: None,
            entries: HashMap::new(),
            bytes: 0,
            key: Vec::with_capacity(300),
            hits: 0,
            misses: 0,
        }
    }

    /// Makes the cache follow `zone`: entries built from any other snapshot are dropped.
    pub fn follow(&mut self, zone: &Arc<Zone>) {
        if self.zone.as_ref().is_some_and(|cached| Arc::ptr_eq(cached, zone)) {
            return;
        }
        self.clear();
        self.zone = Some(zone.clone());
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Parses `packet` into the current key. `None` means the packet is not of the cacheable
    /// shape (the full path decides what it is).
    pub fn key(&mut self, packet: &[u8], recursion: bool) -> Option<Question> {
        question_key(packet, recursion, &mut self.key)
    }

    /// Writes the cached reply to the current key into `out`, patched for `packet`.
    pub fn reply(&mut self, packet: &[u8], question: Question, out: &mut Vec<u8>) -> bool {
        let Some(reply) = self.entries.get(self.key.as_slice()) else {
            self.misses += 1;
            return false;
        };
        self.hits += 1;
        out.clear();
        out.extend_from_slice(reply);
        patch(out, packet, question);
        true
    }

    /// Stores `reply` (the full path's answer to `packet`) under the current key.
    pub fn insert(&mut self, packet: &[u8], question: Question, reply: &[u8]) {
        // The reply must echo the question at the same place, differing at most in case, so
        // that patching it reproduces what the full path would have sent.
        let name = 12..question.name_end;
        if reply.len() < question.name_end + 4
            || reply.get(4..6) != Some(&[0, 1])
            || !reply[name.clone()].eq_ignore_ascii_case(&packet[name])
        {
            return;
        }
        let size = self.key.len() + reply.len() + ENTRY_OVERHEAD;
        if self.bytes + size > MAX_BYTES {
            self.clear();
        }
        self.bytes += size;
        self.entries.insert(self.key.as_slice().into(), reply.into());
    }

    /// Hits and misses since the last call (for metrics, read in batches).
    pub fn take_counts(&mut self) -> (u64, u64) {
        (std::mem::take(&mut self.hits), std::mem::take(&mut self.misses))
    }

    /// Number of cached replies.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Sets the reply's ID and question name to the request's.
fn patch(reply: &mut [u8], packet: &[u8], question: Question) {
    reply[..2].copy_from_slice(&packet[..2]);
    reply[12..question.name_end].copy_from_slice(&packet[12..question.name_end]);
}

/// Builds the cache key of `packet` into `key`: the lowercased question name, type and class,
/// the request flags the reply echoes, the EDNS0 fields it depends on (payload size, version)
/// and whether the client may recurse. Returns `None` unless the packet is exactly a header,
/// one uncompressed question and optionally one well-formed OPT record.
pub fn question_key(packet: &[u8], recursion: bool, key: &mut Vec<u8>) -> Option<Question> {
    key.clear();
    let header = packet.get(..12)?;
    // QR = 0 and OPCODE = QUERY.
    if header[2] & 0xf8 != 0 {
        return None;
    }
    let count = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
    let (qdcount, ancount, nscount, arcount) = (count(4), count(6), count(8), count(10));
    if qdcount != 1 || ancount != 0 || nscount != 0 || arcount > 1 {
        return None;
    }
    // The name: plain labels only (a pointer in a question is legal but rare).
    let mut at = 12;
    loop {
        let len = usize::from(*packet.get(at)?);
        if len == 0 {
            key.push(0);
            at += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        let label = packet.get(at + 1..at + 1 + len)?;
        key.push(len as u8);
        key.extend(label.iter().map(u8::to_ascii_lowercase));
        at += 1 + len;
        if at - 12 > 255 {
            return None;
        }
    }
    let name_end = at;
    let fixed = packet.get(at..at + 4)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    key.extend_from_slice(fixed);
    at += 4;
    // AA, TC and RD; then Z, AD and CD (RCODE must be 0 in a query but is kept as it is).
    key.push(header[2] & 0x07);
    key.push(header[3]);
    key.push(u8::from(recursion));
    if arcount == 1 {
        // OPT: root owner, type 41, class = payload size, TTL = extended RCODE, version, flags.
        let opt = packet.get(at..at + 11)?;
        if opt[0] != 0 || opt[1..3] != [0, 41] {
            return None;
        }
        key.push(1);
        key.extend_from_slice(&opt[3..9]);
        let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
        at += 11;
        let options = packet.get(at..at + rdlen)?;
        // Options are not echoed, but must be well-formed (code, length, data)*.
        let mut option_at = 0;
        while option_at < options.len() {
            let head = options.get(option_at..option_at + 4)?;
            option_at += 4 + usize::from(u16::from_be_bytes([head[2], head[3]]));
        }
        if option_at != options.len() {
            return None;
        }
        at += rdlen;
    } else {
        key.push(0);
    }
    (at == packet.len()).then_some(Question { name_end, qtype })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[&str], qtype: u16, opt: Option<&[u8]>) -> Vec<u8> {
        let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(opt.is_some())];
        for label in name {
            packet.push(label.len() as u8);
            packet.extend_from_slice(label.as_bytes());
        }
        packet.push(0);
        packet.extend_from_slice(&qtype.to_be_bytes());
        packet.extend_from_slice(&[0, 1]);
        if let Some(options) = opt {
            packet.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
            packet.extend_from_slice(&(options.len() as u16).to_be_bytes());
            packet.extend_from_slice(options);
        }
        packet
    }

    #[test]
    fn keys_ignore_case_and_id_but_not_type_flags_or_edns() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        let lower = query(&["svc", "ns", "svc", "cluster", "local"], 1, None);
        let mut upper = query(&["SvC", "ns", "svc", "CLUSTER", "local"], 1, None);
        upper[0] = 0x99;
        let qa = question_key(&lower, true, &mut a).expect("test");
        let qb = question_key(&upper, true, &mut b).expect("test");
        assert_eq!((a.clone(), qa), (b.clone(), qb));
        assert_eq!(qa.name_end, 12 + 1 + 3 + 1 + 2 + 1 + 3 + 1 + 7 + 1 + 5 + 1);
        question_key(&lower, false, &mut b).expect("test");
        assert_ne!(a, b, "the recursion flag is part of the key");
        question_key(&query(&["svc", "ns"], 28, None), true, &mut b).expect("test");
        assert_ne!(a, b);
        let mut no_rd = lower.clone();
        no_rd[2] = 0;
        question_key(&no_rd, true, &mut b).expect("test");
        assert_ne!(a, b);
        question_key(&query(&["svc", "ns", "svc", "cluster", "local"], 1, Some(&[])), true, &mut b)
            .expect("test");
        assert_ne!(a, b);
    }

    #[test]
    fn odd_shapes_take_the_full_path() {
        let mut key = Vec::new();
        let good = query(&["a", "b"], 1, Some(&[0, 10, 0, 2, 1, 2]));
        assert!(question_key(&good, true, &mut key).is_some());
        // Truncated anywhere, a trailing byte, a broken option, a response, another opcode,
        // a compression pointer, two questions.
        for cut in 0..good.len() {
            assert_eq!(question_key(&good[..cut], true, &mut key), None, "cut at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(question_key(&trailing, true, &mut key), None);
        let bad_option = query(&["a", "b"], 1, Some(&[0, 10, 0, 3, 1, 2]));
        assert_eq!(question_key(&bad_option, true, &mut key), None);
        for (at, value) in [(2, 0x81), (2, 0x28), (12, 0xc0), (5, 2)] {
            let mut odd = good.clone();
            odd[at] = value;
            assert_eq!(question_key(&odd, true, &mut key), None, "byte {at} = {value:#x}");
        }
    }

    #[test]
    fn a_hit_is_patched_with_the_askers_id_and_spelling() {
        let mut cache = AnswerCache::new();
        let first = query(&["web", "demo"], 1, None);
        let question = cache.key(&first, true).expect("test");
        let mut out = Vec::new();
        assert!(!cache.reply(&first, question, &mut out));
        let mut reply = first.clone();
        reply[2] |= 0x80;
        reply[7] = 1;
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 0, 0, 1]);
        cache.insert(&first, question, &reply);
        assert_eq!(cache.len(), 1);

        let mut second = query(&["WeB", "dEmo"], 1, None);
        second[..2].copy_from_slice(&[0xab, 0xcd]);
        let question = cache.key(&second, true).expect("test");
        assert!(cache.reply(&second, question, &mut out));
        assert_eq!(out[..2], [0xab, 0xcd]);
        assert_eq!(&out[12..question.name_end], &second[12..question.name_end]);
        assert_eq!(out[question.name_end..], reply[question.name_end..]);
        assert_eq!(cache.take_counts(), (1, 1));
    }

    #[test]
    fn another_snapshot_empties_the_cache() {
        let mut cache = AnswerCache::new();
        let zone = Arc::new(Zone::empty(&crate::ZoneConfig::default()));
        cache.follow(&zone);
        let packet = query(&["x"], 1, None);
        let question = cache.key(&packet, true).expect("test");
        let mut reply = packet.clone();
        reply[2] |= 0x80;
        cache.insert(&packet, question, &reply);
        cache.follow(&zone);
        assert_eq!(cache.len(), 1);
        cache.follow(&Arc::new(Zone::empty(&crate::ZoneConfig::default())));
        assert!(cache.is_empty());
    }
}
