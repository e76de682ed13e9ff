//! `pods/log`: proxied to the node agent's `containerLogs` endpoint, streaming for `follow`.
//!
//! The agent serves plain HTTP `GET /containerLogs/{namespace}/{pod}/{container}` on the Node's
//! InternalIP and `status.daemonEndpoints.kubeletEndpoint.Port` (the brief's contract). What is
//! absent: `previous`, `sinceSeconds`/`sinceTime`, `limitBytes` (passed through if the agent
//! knows them).

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::error::ApiError;
use crate::query::{Query, percent_decode};
use crate::registry;
use crate::rest::Target;
use crate::server::State;

pub type LogBody = futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>>;

pub async fn logs(state: &Arc<State>, target: &Target, query: &Query) -> Result<LogBody, ApiError> {
    let name = target.name.clone().unwrap_or_default();
    let pods = target.resource;
    let ns = target.namespace.clone().unwrap_or_default();
    let kv = state
        .store
        .get(&pods.key(Some(&ns), &name))
        .await?
        .ok_or_else(|| ApiError::not_found(pods, &name))?;
    let pod: Value = serde_json::from_slice(&kv.value).map_err(ApiError::internal)?;
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let container = match query.value("container") {
        Some(c) => {
            if !containers.iter().any(|x| x == c) {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            c.to_string()
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    let node_name = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: pod is not scheduled"
        )));
    }
    let nodes = registry::find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes not registered"))?;
    let node_kv = state
        .store
        .get(&nodes.key(None, node_name))
        .await?
        .ok_or_else(|| ApiError::not_found(nodes, node_name))?;
    let node: Value = serde_json::from_slice(&node_kv.value).map_err(ApiError::internal)?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let ip = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter().find(|x| x.get("type").and_then(Value::as_str) == Some("InternalIP"))
        })
        .and_then(|x| x.get("address").and_then(Value::as_str))
        .unwrap_or("");
    if port <= 0 || ip.is_empty() {
        return Err(ApiError::bad_request(format!(
            "node {node_name} serves no logs (no agent endpoint)"
        )));
    }
    let addr = if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
    let mut path =
        format!("/containerLogs/{ns}/{name}/{container}?follow={}", query.flag("follow"));
    if let Some(t) = query.value("tailLines") {
        path.push_str(&format!("&tailLines={}", percent_decode(t).trim()));
    }
    if query.flag("timestamps") {
        path.push_str("&timestamps=true");
    }
    let tcp = tokio::net::TcpStream::connect(&addr).await.map_err(|e| {
        ApiError::new(502, "InternalError", format!("cannot reach the node agent at {addr}: {e}"))
    })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(tcp))
            .await
            .map_err(|e| {
                ApiError::new(502, "InternalError", format!("node agent handshake failed: {e}"))
            })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::get(path)
        .header("host", addr.clone())
        .body(http_body_util::Empty::new())
        .map_err(ApiError::internal)?;
    let resp = sender.send_request(req).await.map_err(|e| {
        ApiError::new(502, "InternalError", format!("node agent request failed: {e}"))
    })?;
    if !resp.status().is_success() {
        let code = resp.status().as_u16();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return Err(ApiError::new(
            if code == 404 { 404 } else { 400 },
            if code == 404 { "NotFound" } else { "BadRequest" },
            String::from_utf8_lossy(&body).trim().to_string(),
        ));
    }
    let stream = resp.into_body().into_data_stream().map(|r| r.map_err(std::io::Error::other));
    Ok(stream.boxed())
}
