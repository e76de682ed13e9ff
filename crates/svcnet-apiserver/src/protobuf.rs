//! Decoding of Kubernetes protobuf request bodies, only as far as kubectl needs it.
//!
//! `kubectl create namespace X` and `kubectl create service clusterip|nodeport|loadbalancer`
//! POST `application/vnd.kubernetes.protobuf` bodies and do not retry with JSON (kubectl-api.md
//! §4.2). A body is the magic `k8s\0` followed by a `runtime.Unknown` (typeMeta = 1, raw = 2)
//! whose `raw` is the object. This reader knows the fields of Namespace, Service and ConfigMap those
//! generators set, and of apps/v1 Deployment as `kubectl create deployment` sends it (field
//! numbers from k8s.io/api/{core,apps}/v1/generated.proto, checked against the bodies kubectl
//! 1.32 sends, seen with `-v=9`); other kinds are rejected with 415 by the caller.

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

/// How one protobuf field of a message becomes JSON.
#[derive(Clone, Copy)]
enum As {
    Str,
    Int,
    Bool,
    /// A repeated string: a JSON array.
    Strs,
    /// One entry of a `map<string, string>`.
    Map,
    /// An embedded message.
    Msg(fn(&[u8]) -> Result<Value, String>),
    /// A repeated embedded message: a JSON array.
    Msgs(fn(&[u8]) -> Result<Value, String>),
    /// A field this reader refuses rather than drop silently.
    Reject(&'static str),
}

/// Decodes a message by its table of (field number, JSON key, how); fields not in the table are
/// skipped (the generators send them empty).
fn message(buf: &[u8], table: &[(u64, &str, As)]) -> Result<Value, String> {
    let mut m = Map::new();
    for (n, f) in fields(buf)? {
        let Some(&(_, key, how)) = table.iter().find(|(number, ..)| *number == n) else {
            continue;
        };
        let value = match how {
            As::Str => json!(string(&f)?),
            As::Int => json!(int(&f)?),
            As::Bool => json!(int(&f)? != 0),
            As::Msg(decode) => decode(bytes(&f)?)?,
            As::Strs => {
                push(&mut m, key, json!(string(&f)?));
                continue;
            }
            As::Msgs(decode) => {
                push(&mut m, key, decode(bytes(&f)?)?);
                continue;
            }
            As::Map => {
                insert_map(&mut m, key, map_entry(bytes(&f)?)?);
                continue;
            }
            As::Reject(why) => return Err(why.into()),
        };
        m.insert(key.into(), value);
    }
    Ok(Value::Object(m))
}

fn object_meta(buf: &[u8]) -> Result<Value, String> {
    use As::*;
    let table = [
        (1, "name", Str),
        (2, "generateName", Str),
        (3, "namespace", Str),
        (11, "labels", Map),
        (12, "annotations", Map),
        (14, "finalizers", Strs),
    ];
    message(buf, &table)
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
    use As::*;
    let table = [
        (1, "name", Str),
        (2, "protocol", Str),
        (3, "port", Int),
        (4, "targetPort", Msg(int_or_string)),
        (5, "nodePort", Int),
        (6, "appProtocol", Str),
    ];
    message(buf, &table)
}

fn service_spec(buf: &[u8]) -> Result<Value, String> {
    use As::*;
    let table = [
        (1, "ports", Msgs(service_port)),
        (2, "selector", Map),
        (3, "clusterIP", Str),
        (4, "type", Str),
        (5, "externalIPs", Strs),
        (7, "sessionAffinity", Str),
        (8, "loadBalancerIP", Str),
        (9, "loadBalancerSourceRanges", Strs),
        (10, "externalName", Str),
        (11, "externalTrafficPolicy", Str),
        (12, "healthCheckNodePort", Int),
        (13, "publishNotReadyAddresses", Bool),
        (17, "ipFamilyPolicy", Str),
        (18, "clusterIPs", Strs),
        (19, "ipFamilies", Strs),
        (20, "allocateLoadBalancerNodePorts", Bool),
        (21, "loadBalancerClass", Str),
        (22, "internalTrafficPolicy", Str),
    ];
    message(buf, &table)
}

fn namespace_spec(buf: &[u8]) -> Result<Value, String> {
    message(buf, &[(1, "finalizers", As::Strs)])
}

fn label_selector(buf: &[u8]) -> Result<Value, String> {
    let unsupported = "matchExpressions in protobuf bodies are not supported";
    message(buf, &[(1, "matchLabels", As::Map), (2, "matchExpressions", As::Reject(unsupported))])
}

fn container_port(buf: &[u8]) -> Result<Value, String> {
    use As::*;
    let table = [
        (1, "name", Str),
        (2, "hostPort", Int),
        (3, "containerPort", Int),
        (4, "protocol", Str),
        (5, "hostIP", Str),
    ];
    message(buf, &table)
}

fn env_var(buf: &[u8]) -> Result<Value, String> {
    let unsupported = "env valueFrom in protobuf bodies is not supported";
    message(
        buf,
        &[(1, "name", As::Str), (2, "value", As::Str), (3, "valueFrom", As::Reject(unsupported))],
    )
}

/// Resources (8), terminationMessagePath (13), stdin/tty (16–18) and terminationMessagePolicy
/// (20) arrive empty from the generators and stay defaults.
fn container(buf: &[u8]) -> Result<Value, String> {
    use As::*;
    let table = [
        (1, "name", Str),
        (2, "image", Str),
        (3, "command", Strs),
        (4, "args", Strs),
        (5, "workingDir", Str),
        (6, "ports", Msgs(container_port)),
        (7, "env", Msgs(env_var)),
        (14, "imagePullPolicy", Str),
    ];
    message(buf, &table)
}

fn pod_spec(buf: &[u8]) -> Result<Value, String> {
    use As::*;
    let table = [
        (2, "containers", Msgs(container)),
        (3, "restartPolicy", Str),
        (4, "terminationGracePeriodSeconds", Int),
        (7, "nodeSelector", Map),
        (8, "serviceAccountName", Str),
        (16, "hostname", Str),
        (17, "subdomain", Str),
    ];
    message(buf, &table)
}

fn pod_template(buf: &[u8]) -> Result<Value, String> {
    message(buf, &[(1, "metadata", As::Msg(object_meta)), (2, "spec", As::Msg(pod_spec))])
}

fn deployment_strategy(buf: &[u8]) -> Result<Value, String> {
    message(buf, &[(1, "type", As::Str)])
}

/// The spec of an apps/v1 Deployment and its `replicas` (a pointer in Go: an explicit 0 must
/// survive the pruning of zero values).
fn deployment_spec(buf: &[u8]) -> Result<(Value, Option<i64>), String> {
    use As::*;
    let replicas = fields(buf)?.iter().find(|(n, _)| *n == 1).map(|(_, f)| int(f)).transpose()?;
    let table = [
        (2, "selector", Msg(label_selector)),
        (3, "template", Msg(pod_template)),
        (4, "strategy", Msg(deployment_strategy)),
        (5, "minReadySeconds", Int),
    ];
    Ok((message(buf, &table)?, replicas))
}

fn pruned(mut v: Value) -> Value {
    prune_zero(&mut v);
    v
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
    let mut object = match (api_version.as_str(), kind.as_str()) {
        // ConfigMap: metadata = 1, data = 2 (map), immutable = 4 (binaryData is left out). Not
        // pruned: an empty value in `data` is data.
        ("v1", "ConfigMap") => {
            let table = [
                (1, "metadata", As::Msg(object_meta)),
                (2, "data", As::Map),
                (4, "immutable", As::Bool),
            ];
            message(object, &table)?
        }
        ("v1", "Service") => pruned(message(
            object,
            &[(1, "metadata", As::Msg(object_meta)), (2, "spec", As::Msg(service_spec))],
        )?),
        ("v1", "Namespace") => pruned(message(
            object,
            &[(1, "metadata", As::Msg(object_meta)), (2, "spec", As::Msg(namespace_spec))],
        )?),
        ("apps/v1", "Deployment") => {
            let mut out = pruned(message(object, &[(1, "metadata", As::Msg(object_meta))])?);
            if let Some((_, spec)) = fields(object)?.iter().find(|(n, _)| *n == 2) {
                let (mut spec, replicas) = deployment_spec(bytes(spec)?)?;
                prune_zero(&mut spec);
                if let (Some(r), Some(m)) = (replicas, spec.as_object_mut()) {
                    m.insert("replicas".into(), json!(r));
                }
                out["spec"] = spec;
            }
            out
        }
        _ => {
            return Err(format!(
                "protobuf bodies are supported for v1 Service, Namespace, ConfigMap and apps/v1 Deployment only, not {api_version} {kind}"
            ));
        }
    };
    if let Some(m) = object.as_object_mut() {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
    }
    Ok(object)
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

    /// The body kubectl 1.32 sends for
    /// `kubectl create deployment web2 --image=nginx:1.25 --port=8080 --replicas=3 -- /bin/echo hi there`
    /// (from its `-v=9` log).
    #[test]
    fn decodes_kubectls_deployment() {
        let hex: String = [
            "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412d9010a210a047765623212001a0022002a003200",
            "380042005a0b0a0361707012047765623212a5010803120d0a0b0a036170701204776562321a89010a1d0a0012001a00",
            "22002a003200380042005a0b0a036170701204776562321268124a0a056e67696e78120a6e67696e783a312e32351a09",
            "2f62696e2f6563686f1a0268691a0574686572652a00320b0a00100018903f22002a0042006a00720080010088010090",
            "0100a201001a00320042004a0052005800600068008201008a01009a0100c2010022020a00280038001a0c0800100018",
            "002000280038001a002200",
        ]
        .concat();
        let body: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        let object = decode(&body).expect("decodes");
        assert_eq!(
            object,
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web2", "labels": {"app": "web2"}},
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "web2"}},
                    "template": {
                        "metadata": {"labels": {"app": "web2"}},
                        "spec": {"containers": [{
                            "name": "nginx",
                            "image": "nginx:1.25",
                            "command": ["/bin/echo", "hi", "there"],
                            "ports": [{"containerPort": 8080}]
                        }]}
                    },
                    "strategy": {}
                }
            })
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode(b"nope").is_err());
        assert!(decode(b"k8s\0\xff\xff\xff").is_err());
        assert!(decode(b"k8s\0\x0a\x05ab").is_err());
    }
}
