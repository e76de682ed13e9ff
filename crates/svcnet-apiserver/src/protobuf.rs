//! Decoding of Kubernetes protobuf request bodies, only as far as kubectl needs it.
//!
//! `kubectl create namespace X` and `kubectl create service clusterip|nodeport|loadbalancer`
//! POST `application/vnd.kubernetes.protobuf` bodies and do not retry with JSON (kubectl-api.md
//! §4.2). A body is the magic `k8s\0` followed by a `runtime.Unknown` (typeMeta = 1, raw = 2)
//! whose `raw` is the object. This reader knows the fields of Namespace, Service and ConfigMap those
//! generators set (field numbers from k8s.io/api/core/v1/generated.proto); other kinds and
//! fields are deliberately absent and rejected with 415 by the caller.

use serde_json::{Map, Value, json};

/// One decoded protobuf field.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut out = 0u64;
        for shift in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            out |= u64::from(b & 0x7f) << (7 * shift);
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err("varint too long".into())
    }

    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let number = tag >> 3;
        let field = match tag & 7 {
            0 => Field::Varint(self.varint()?),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
                if len > self.buf.len() {
                    return Err("truncated field".into());
                }
                let (data, rest) = self.buf.split_at(len);
                self.buf = rest;
                Field::Bytes(data)
            }
            1 => {
                if self.buf.len() < 8 {
                    return Err("truncated fixed64".into());
                }
                self.buf = &self.buf[8..];
                Field::Varint(0)
            }
            5 => {
                if self.buf.len() < 4 {
                    return Err("truncated fixed32".into());
                }
                self.buf = &self.buf[4..];
                Field::Varint(0)
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok(Some((number, field)))
    }
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut r = Reader { buf };
    let mut out = Vec::new();
    while let Some(f) = r.next()? {
        out.push(f);
    }
    Ok(out)
}

fn string(f: &Field<'_>) -> Result<String, String> {
    match f {
        Field::Bytes(b) => String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8".to_string()),
        Field::Varint(_) => Err("expected a string".into()),
    }
}

fn bytes<'a>(f: &Field<'a>) -> Result<&'a [u8], String> {
    match f {
        Field::Bytes(b) => Ok(b),
        Field::Varint(_) => Err("expected a message".into()),
    }
}

fn int(f: &Field<'_>) -> Result<i64, String> {
    match f {
        // int32 fields are sign-extended to 64 bits on the wire.
        Field::Varint(v) => Ok(*v as i64),
        Field::Bytes(_) => Err("expected an integer".into()),
    }
}

fn map_entry(buf: &[u8]) -> Result<(String, String), String> {
    let mut k = String::new();
    let mut v = String::new();
    for (n, f) in fields(buf)? {
        match n {
            1 => k = string(&f)?,
            2 => v = string(&f)?,
            _ => {}
        }
    }
    Ok((k, v))
}

/// Go's generated marshallers write every scalar, so "unset" arrives as `""` or `0`; drop those
/// before the object meets defaulting, which treats absent and empty alike in Go.
fn prune_zero(v: &mut Value) {
    if let Value::Object(m) = v {
        m.retain(|_, x| !(x.as_str() == Some("") || x.as_i64() == Some(0) && !x.is_boolean()));
        for x in m.values_mut() {
            prune_zero(x);
        }
    } else if let Value::Array(a) = v {
        for x in a {
            prune_zero(x);
        }
    }
}

fn insert_map(obj: &mut Map<String, Value>, key: &str, entry: (String, String)) {
    let m = obj.entry(key).or_insert_with(|| json!({}));
    if let Some(m) = m.as_object_mut() {
        m.insert(entry.0, Value::String(entry.1));
    }
}

fn push(obj: &mut Map<String, Value>, key: &str, v: Value) {
    let a = obj.entry(key).or_insert_with(|| json!([]));
    if let Some(a) = a.as_array_mut() {
        a.push(v);
    }
}

fn object_meta(buf: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    for (n, f) in fields(buf)? {
        match n {
            1 => {
                m.insert("name".into(), json!(string(&f)?));
            }
            2 => {
                m.insert("generateName".into(), json!(string(&f)?));
            }
            3 => {
                m.insert("namespace".into(), json!(string(&f)?));
            }
            11 => insert_map(&mut m, "labels", map_entry(bytes(&f)?)?),
            12 => insert_map(&mut m, "annotations", map_entry(bytes(&f)?)?),
            14 => push(&mut m, "finalizers", json!(string(&f)?)),
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

fn int_or_string(buf: &[u8]) -> Result<Value, String> {
    let mut kind = 0;
    let mut i = 0;
    let mut s = String::new();
    for (n, f) in fields(buf)? {
        match n {
            1 => kind = int(&f)?,
            2 => i = int(&f)?,
            3 => s = string(&f)?,
            _ => {}
        }
    }
    Ok(if kind == 1 { json!(s) } else { json!(i) })
}

fn service_port(buf: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    for (n, f) in fields(buf)? {
        match n {
            1 => {
                m.insert("name".into(), json!(string(&f)?));
            }
            2 => {
                m.insert("protocol".into(), json!(string(&f)?));
            }
            3 => {
                m.insert("port".into(), json!(int(&f)?));
            }
            4 => {
                m.insert("targetPort".into(), int_or_string(bytes(&f)?)?);
            }
            5 => {
                m.insert("nodePort".into(), json!(int(&f)?));
            }
            6 => {
                m.insert("appProtocol".into(), json!(string(&f)?));
            }
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

fn service_spec(buf: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    for (n, f) in fields(buf)? {
        match n {
            1 => push(&mut m, "ports", service_port(bytes(&f)?)?),
            2 => insert_map(&mut m, "selector", map_entry(bytes(&f)?)?),
            3 => {
                m.insert("clusterIP".into(), json!(string(&f)?));
            }
            4 => {
                m.insert("type".into(), json!(string(&f)?));
            }
            5 => push(&mut m, "externalIPs", json!(string(&f)?)),
            7 => {
                m.insert("sessionAffinity".into(), json!(string(&f)?));
            }
            8 => {
                m.insert("loadBalancerIP".into(), json!(string(&f)?));
            }
            9 => push(&mut m, "loadBalancerSourceRanges", json!(string(&f)?)),
            10 => {
                m.insert("externalName".into(), json!(string(&f)?));
            }
            11 => {
                m.insert("externalTrafficPolicy".into(), json!(string(&f)?));
            }
            12 => {
                m.insert("healthCheckNodePort".into(), json!(int(&f)?));
            }
            13 => {
                m.insert("publishNotReadyAddresses".into(), json!(int(&f)? != 0));
            }
            17 => {
                m.insert("ipFamilyPolicy".into(), json!(string(&f)?));
            }
            18 => push(&mut m, "clusterIPs", json!(string(&f)?)),
            19 => push(&mut m, "ipFamilies", json!(string(&f)?)),
            20 => {
                m.insert("allocateLoadBalancerNodePorts".into(), json!(int(&f)? != 0));
            }
            21 => {
                m.insert("loadBalancerClass".into(), json!(string(&f)?));
            }
            22 => {
                m.insert("internalTrafficPolicy".into(), json!(string(&f)?));
            }
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

fn namespace_spec(buf: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    for (n, f) in fields(buf)? {
        if n == 1 {
            push(&mut m, "finalizers", json!(string(&f)?));
        }
    }
    Ok(Value::Object(m))
}

/// Decodes a `k8s\0`-framed body into a JSON object, or says why not.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let raw = body.strip_prefix(b"k8s\0").ok_or("missing the k8s protobuf magic prefix")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut object: &[u8] = &[];
    for (n, f) in fields(raw)? {
        match n {
            1 => {
                for (tn, tf) in fields(bytes(&f)?)? {
                    match tn {
                        1 => api_version = string(&tf)?,
                        2 => kind = string(&tf)?,
                        _ => {}
                    }
                }
            }
            2 => object = bytes(&f)?,
            _ => {}
        }
    }
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!(kind));
    if (api_version.as_str(), kind.as_str()) == ("v1", "ConfigMap") {
        // ConfigMap: metadata = 1, data = 2 (map), immutable = 4 (binaryData is left out).
        for (n, f) in fields(object)? {
            match n {
                1 => {
                    out.insert("metadata".into(), object_meta(bytes(&f)?)?);
                }
                2 => insert_map(&mut out, "data", map_entry(bytes(&f)?)?),
                4 => {
                    out.insert("immutable".into(), json!(int(&f)? != 0));
                }
                _ => {}
            }
        }
        return Ok(Value::Object(out));
    }
    let spec_decoder: fn(&[u8]) -> Result<Value, String> = match (
        api_version.as_str(),
        kind.as_str(),
    ) {
        ("v1", "Service") => service_spec,
        ("v1", "Namespace") => namespace_spec,
        _ => {
            return Err(format!(
                "protobuf bodies are supported for v1 Service, Namespace and ConfigMap only, not {api_version} {kind}"
            ));
        }
    };
    for (n, f) in fields(object)? {
        match n {
            1 => {
                out.insert("metadata".into(), object_meta(bytes(&f)?)?);
            }
            2 => {
                out.insert("spec".into(), spec_decoder(bytes(&f)?)?);
            }
            _ => {}
        }
    }
    let mut out = Value::Object(out);
    prune_zero(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn field_bytes(n: u64, data: &[u8], out: &mut Vec<u8>) {
        varint(n << 3 | 2, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    fn field_int(n: u64, v: u64, out: &mut Vec<u8>) {
        varint(n << 3, out);
        varint(v, out);
    }

    #[test]
    fn decodes_a_service() {
        let mut meta = Vec::new();
        field_bytes(1, b"web", &mut meta);
        let mut label = Vec::new();
        field_bytes(1, b"app", &mut label);
        field_bytes(2, b"web", &mut label);
        field_bytes(11, &label, &mut meta);
        let mut target = Vec::new();
        field_int(1, 0, &mut target);
        field_int(2, 8080, &mut target);
        let mut port = Vec::new();
        field_bytes(1, b"5678-8080", &mut port);
        field_bytes(2, b"TCP", &mut port);
        field_int(3, 5678, &mut port);
        field_bytes(4, &target, &mut port);
        let mut spec = Vec::new();
        field_bytes(1, &port, &mut spec);
        field_bytes(2, &label, &mut spec);
        field_bytes(4, b"NodePort", &mut spec);
        let mut svc = Vec::new();
        field_bytes(1, &meta, &mut svc);
        field_bytes(2, &spec, &mut svc);
        let mut tm = Vec::new();
        field_bytes(1, b"v1", &mut tm);
        field_bytes(2, b"Service", &mut tm);
        let mut body = b"k8s\0".to_vec();
        field_bytes(1, &tm, &mut body);
        field_bytes(2, &svc, &mut body);
        let v = decode(&body).expect("decodes");
        assert_eq!(v["metadata"]["name"], "web");
        assert_eq!(v["metadata"]["labels"]["app"], "web");
        assert_eq!(v["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(v["spec"]["ports"][0]["port"], 5678);
        assert_eq!(v["spec"]["type"], "NodePort");
        assert_eq!(v["spec"]["selector"]["app"], "web");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode(b"nope").is_err());
        assert!(decode(b"k8s\0\xff\xff\xff").is_err());
        assert!(decode(b"k8s\0\x0a\x05ab").is_err());
    }
}
