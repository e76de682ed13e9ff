//! One request: authentication, routing of Kubernetes paths, body decoding and content
//! negotiation, and the rendering of every failure as a `Status` (the one place errors become
//! responses).
//!
//! Route parsing follows kubectl-api.md §4.1: after `…/namespaces/{x}`, a segment naming a
//! namespaced resource starts a namespaced collection; anything else is a subresource of
//! namespace `{x}`. The deprecated `/watch/` prefix is absent.

use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::query::{self, Format, Query};
use crate::registry::{self, Sub};
use crate::rest::{self, DeleteOptions, PatchType, Reply, ReplyBody, Target, WriteOptions};
use crate::server::State;
use crate::{discovery, logs, object, protobuf, watch};

const JSON: &str = "application/json";

fn json_response(code: u16, body: Bytes, content_type: &str) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}

fn value_response(code: u16, v: &Value) -> Response<Body> {
    json_response(code, Bytes::from(serde_json::to_vec(v).unwrap_or_default()), JSON)
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    value_response(e.code, &e.status())
}

fn text_response(code: u16, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn reply_response(reply: Reply, format: Format) -> Response<Body> {
    let mut resp = match reply.body {
        ReplyBody::Json(v) => value_response(reply.code, &v),
        ReplyBody::Raw(b) => json_response(reply.code, b, JSON),
    };
    if let Format::Table(_) = format {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io"),
        );
    }
    for w in reply.warnings {
        let text = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

pub fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0",
        "gitCommit": "svcnet",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn authorized(state: &State, req: &Request<hyper::body::Incoming>) -> bool {
    let Some(h) = req.headers().get(header::AUTHORIZATION).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Some(token) = h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")) else {
        return false;
    };
    constant_time_eq(token.trim().as_bytes(), state.token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn handle(state: Arc<State>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    // Health checks are anonymous, as the real server's are.
    match path.as_str() {
        "/healthz" | "/livez" | "/readyz" => return text_response(200, "ok"),
        p if p.starts_with("/healthz/")
            || p.starts_with("/livez/")
            || p.starts_with("/readyz/") =>
        {
            return text_response(200, "ok");
        }
        _ => {}
    }
    if !authorized(&state, &req) {
        // The body is not read from an unauthenticated client: close the connection, so that a
        // client reusing it does not race the unread bytes.
        return closing(error_response(&ApiError::unauthorized()));
    }
    // The body is read before routing, so that an early error still leaves the keep-alive
    // connection clean for the client's next request.
    let (parts, body) = req.into_parts();
    let body =
        if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
            match read_body(&state, body).await {
                Ok(b) => b,
                Err(e) => return closing(error_response(&e)),
            }
        } else {
            Bytes::new()
        };
    match route(&state, &parts, body).await {
        Ok(resp) => resp,
        Err(e) => {
            if e.code >= 500 {
                tracing::warn!(path, code = e.code, message = %e.message, "request failed");
            }
            error_response(&e)
        }
    }
}

/// Asks the client to close the connection after this answer.
fn closing(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Reads the whole body, up to the configured limit. A larger body is drained (up to a bound)
/// before the 413, so an HTTP/1.1 client still writing it can read the answer.
async fn read_body(state: &State, mut body: hyper::body::Incoming) -> Result<Bytes, ApiError> {
    const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
    let limit = state.config.max_body_bytes;
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                total += data.len();
                if total <= limit {
                    buf.extend_from_slice(&data);
                } else if total > DRAIN_LIMIT {
                    break;
                }
            }
        }
        Ok::<(), ApiError>(())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(30), read).await {
        Ok(r) => r?,
        Err(_) => return Err(ApiError::timeout("timed out reading the request body")),
    }
    if total > limit {
        return Err(ApiError::too_large());
    }
    Ok(buf.freeze())
}

/// Decodes an object body by its Content-Type.
fn decode_object(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media.as_str() {
        "application/vnd.kubernetes.protobuf" => protobuf::decode(body).map_err(|e| {
            if e.contains("supported for") {
                // Say which kinds protobuf covers, and what kubectl can do instead.
                ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "{e}; send JSON or YAML instead (e.g. `kubectl create … --dry-run=client -o yaml | kubectl apply -f -`)"
                    ),
                )
            } else {
                ApiError::bad_request(format!("cannot decode the protobuf body: {e}"))
            }
        }),
        "" | "application/json" | "application/yaml" | "application/x-yaml" | "text/yaml"
        | "*/*" => {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Err(ApiError::bad_request("the request body is empty"));
            }
            object::parse_body(body).map_err(|e| {
                ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
            })
        }
        _ => Err(ApiError::unsupported_media_type(content_type)),
    }
}

async fn route(
    state: &Arc<State>,
    req: &http::request::Parts,
    body_bytes: Bytes,
) -> Result<Response<Body>, ApiError> {
    let method = req.method.clone();
    let path = req.uri.path().trim_end_matches('/').to_string();
    let query = Query::parse(req.uri.query());
    let accept = req.headers.get(header::ACCEPT).and_then(|h| h.to_str().ok()).map(str::to_string);
    let content_type = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let user_agent =
        req.headers.get(header::USER_AGENT).and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();

    // Non-resource paths.
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["version"]) => return Ok(value_response(200, &version_info())),
        (Method::GET, ["api"]) => {
            return Ok(match discovery::aggregated_version(accept.as_deref()) {
                Some(v) => json_response(
                    200,
                    Bytes::from(discovery::aggregated(true, v).to_string()),
                    &discovery::aggregated_content_type(v),
                ),
                None => value_response(
                    200,
                    &discovery::api_versions(&format!("{}:{}", state.advertise, state.port)),
                ),
            });
        }
        (Method::GET, ["apis"]) => {
            return Ok(match discovery::aggregated_version(accept.as_deref()) {
                Some(v) => json_response(
                    200,
                    Bytes::from(discovery::aggregated(false, v).to_string()),
                    &discovery::aggregated_content_type(v),
                ),
                None => value_response(200, &discovery::api_group_list()),
            });
        }
        (Method::GET, ["api", v]) => {
            return discovery::resource_list("", v)
                .map(|d| value_response(200, &d))
                .ok_or_else(ApiError::path_not_found);
        }
        (Method::GET, ["apis", g]) => {
            return discovery::group(g)
                .map(|d| value_response(200, &d))
                .ok_or_else(ApiError::path_not_found);
        }
        (Method::GET, ["apis", g, v]) => {
            return discovery::resource_list(g, v)
                .map(|d| value_response(200, &d))
                .ok_or_else(ApiError::path_not_found);
        }
        (Method::GET, ["openapi", "v2"]) => {
            return if accept.as_deref().unwrap_or("").contains("protobuf") {
                Ok(json_response(200, state.openapi.v2(), crate::openapi_v2::MEDIA_TYPE))
            } else {
                Err(ApiError::new(
                    406,
                    "NotAcceptable",
                    format!(
                        "/openapi/v2 is served only as {}; use /openapi/v3 for JSON",
                        crate::openapi_v2::MEDIA_TYPE
                    ),
                ))
            };
        }
        (Method::GET, ["openapi", "v3"]) => {
            return Ok(json_response(200, state.openapi.index(), JSON));
        }
        (Method::GET, ["openapi", "v3", rest @ ..]) => {
            return state
                .openapi
                .document(&rest.join("/"))
                .map(|b| json_response(200, b, JSON))
                .ok_or_else(ApiError::path_not_found);
        }
        _ => {}
    }

    let (group, version, rest) = match segments.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::path_not_found()),
    };
    let target = parse_target(group, version, rest)?;
    let format = query::format(accept.as_deref(), &query);
    let resource = target.resource;

    match method {
        Method::GET => {
            if target.sub == Some(Sub::Log) {
                let stream = logs::logs(state, &target, &query).await?;
                let mut resp = Response::new(Body::from_stream(stream));
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                return Ok(resp);
            }
            let is_watch = query.flag("watch");
            if target.name.is_none() || (is_watch && target.sub.is_none()) {
                if is_watch {
                    let rx = watch::watch(state, &target, &query, format).await?;
                    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
                    let mut resp = Response::new(Body::from_stream(
                        stream.map(|r| r.map_err(|never| match never {})),
                    ));
                    let ct = match format {
                        Format::Table(_) => "application/json;as=Table;v=v1;g=meta.k8s.io",
                        Format::Json => JSON,
                    };
                    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
                    resp.headers_mut().insert(
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("no-cache, private"),
                    );
                    return Ok(resp);
                }
                return rest::list(state, &target, &query, format)
                    .await
                    .map(|r| reply_response(r, format));
            }
            rest::get(state, &target, &query, format).await.map(|r| reply_response(r, format))
        }
        Method::POST => {
            if target.name.is_some() && target.sub != Some(Sub::Binding) {
                return Err(ApiError::method_not_allowed());
            }
            let opts = WriteOptions::from_query(&query, &user_agent)?;
            let body = decode_object(&content_type, &body_bytes)?;
            if target.sub == Some(Sub::Binding) {
                return rest::create(state, &target, body, &opts)
                    .await
                    .map(|r| reply_response(r, Format::Json));
            }
            let _ = resource;
            rest::create(state, &target, body, &opts).await.map(|r| reply_response(r, Format::Json))
        }
        Method::PUT => {
            if target.name.is_none() {
                return Err(ApiError::method_not_allowed());
            }
            let opts = WriteOptions::from_query(&query, &user_agent)?;
            let body = decode_object(&content_type, &body_bytes)?;
            rest::update(state, &target, body, &opts).await.map(|r| reply_response(r, Format::Json))
        }
        Method::PATCH => {
            if target.name.is_none() {
                return Err(ApiError::method_not_allowed());
            }
            let patch_type = PatchType::from_content_type(&content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(&content_type))?;
            let opts = WriteOptions::from_query(&query, &user_agent)?;
            rest::patch(state, &target, patch_type, &body_bytes, &query, &opts)
                .await
                .map(|r| reply_response(r, Format::Json))
        }
        Method::DELETE => {
            let opts = DeleteOptions::parse(&body_bytes, &query)?;
            if target.name.is_none() {
                return rest::delete_collection(state, &target, &query, &opts)
                    .await
                    .map(|r| reply_response(r, Format::Json));
            }
            rest::delete(state, &target, &opts).await.map(|r| reply_response(r, Format::Json))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// Parses the part after `/api/v1` or `/apis/<g>/<v>`.
pub fn parse_target(group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let find =
        |plural: &str| registry::find(group, version, plural).ok_or_else(ApiError::path_not_found);
    let sub = |s: &str, r: &registry::Resource| {
        Sub::parse(s).filter(|s| r.has_sub(*s)).ok_or_else(ApiError::path_not_found)
    };
    match rest {
        ["namespaces", ns, plural, tail @ ..]
            if registry::find(group, version, plural).is_some_and(|r| r.namespaced) =>
        {
            let resource = find(plural)?;
            match tail {
                [] => {
                    Ok(Target { resource, namespace: Some(ns.to_string()), name: None, sub: None })
                }
                [name] => Ok(Target {
                    resource,
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    sub: None,
                }),
                [name, s] => Ok(Target {
                    resource,
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    sub: Some(sub(s, resource)?),
                }),
                _ => Err(ApiError::path_not_found()),
            }
        }
        [plural] => {
            let resource = find(plural)?;
            Ok(Target { resource, namespace: None, name: None, sub: None })
        }
        [plural, name] => {
            let resource = find(plural)?;
            if resource.namespaced {
                return Err(ApiError::path_not_found());
            }
            Ok(Target { resource, namespace: None, name: Some(name.to_string()), sub: None })
        }
        [plural, name, s] => {
            let resource = find(plural)?;
            if resource.namespaced {
                return Err(ApiError::path_not_found());
            }
            Ok(Target {
                resource,
                namespace: None,
                name: Some(name.to_string()),
                sub: Some(sub(s, resource)?),
            })
        }
        _ => Err(ApiError::path_not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let t = parse_target("", "v1", &["namespaces", "default", "services", "web", "status"])
            .expect("route");
        assert_eq!(
            (t.resource.plural, t.namespace.as_deref(), t.name.as_deref(), t.sub),
            ("services", Some("default"), Some("web"), Some(Sub::Status))
        );
        let t = parse_target("", "v1", &["namespaces", "x", "status"]).expect("route");
        assert_eq!(
            (t.resource.plural, t.name.as_deref(), t.sub),
            ("namespaces", Some("x"), Some(Sub::Status))
        );
        let t = parse_target("", "v1", &["namespaces", "x"]).expect("route");
        assert_eq!((t.resource.plural, t.name.as_deref()), ("namespaces", Some("x")));
        let t = parse_target("", "v1", &["services"]).expect("route");
        assert_eq!((t.resource.plural, t.namespace.as_deref()), ("services", None));
        assert!(parse_target("", "v1", &["services", "x"]).is_err());
        assert!(parse_target("", "v1", &["bogus"]).is_err());
        assert!(parse_target("", "v1", &["namespaces", "x", "services", "a", "bogus"]).is_err());
        let t = parse_target("apps", "v1", &["namespaces", "d", "deployments", "x", "scale"])
            .expect("route");
        assert_eq!(t.sub, Some(Sub::Scale));
    }
}
