//! Query strings and content negotiation.
//!
//! kube-rs sends `?&watch=true…` (an empty first pair) and kubectl percent-encodes selectors;
//! both parse here. The output formats are JSON objects or `meta.k8s.io/v1` Tables; protobuf
//! responses are deliberately absent (every client accepts JSON).

use std::collections::HashMap;

/// Decoded query parameters; the last value of a repeated key wins.
#[derive(Debug, Default, Clone)]
pub struct Query(HashMap<String, String>);

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let mut map = HashMap::new();
        for pair in raw.unwrap_or("").split('&') {
            if pair.is_empty() {
                continue;
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(percent_decode(k), percent_decode(v));
        }
        Query(map)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A non-empty value.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|s| !s.is_empty())
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1" | "True"))
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }
}

/// The response shape a GET asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    /// `as=Table`, with the `includeObject` choice.
    Table(IncludeObject),
}

pub use svcnet_api::IncludeObject;

/// Picks the format from the Accept header (the first acceptable entry wins, as the real
/// server does) and `includeObject`.
pub fn format(accept: Option<&str>, query: &Query) -> Format {
    let Some(accept) = accept else { return Format::Json };
    for part in accept.split(',') {
        let part = part.trim();
        let mut pieces = part.split(';').map(str::trim);
        let media = pieces.next().unwrap_or("");
        let params: Vec<&str> = pieces.collect();
        let is_table = params.iter().any(|p| p.replace(' ', "") == "as=Table");
        if media == "application/json" && is_table {
            let g_ok = params.iter().any(|p| p.replace(' ', "") == "g=meta.k8s.io");
            if !g_ok {
                continue;
            }
            let include = match query.get("includeObject") {
                Some("None") => IncludeObject::None,
                Some("Object") => IncludeObject::Object,
                _ => IncludeObject::Metadata,
            };
            return Format::Table(include);
        }
        if media == "application/json"
            || media == "*/*"
            || media == "application/*"
            || media == "application/yaml"
        {
            return Format::Json;
        }
    }
    Format::Json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kube_rs_queries() {
        let q = Query::parse(Some(
            "&watch=true&timeoutSeconds=290&labelSelector=app%3Dx%2Cb+in+%28c%29",
        ));
        assert!(q.flag("watch"));
        assert_eq!(q.get("timeoutSeconds"), Some("290"));
        assert_eq!(q.get("labelSelector"), Some("app=x,b in (c)"));
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn negotiates_tables() {
        let q = Query::default();
        let t = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(format(Some(t), &q), Format::Table(IncludeObject::Metadata));
        assert_eq!(format(Some("application/json"), &q), Format::Json);
        assert_eq!(
            format(Some("application/vnd.kubernetes.protobuf,application/json"), &q),
            Format::Json
        );
        assert_eq!(format(None, &q), Format::Json);
    }
}
