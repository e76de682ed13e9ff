//! The node's log endpoint: `GET /containerLogs/{namespace}/{pod}/{container}`.
//!
//! The API server proxies `pods/log` here (as it does to the kubelet). Files are in the CRI
//! log format (`<RFC 3339 time> <stream> <F|P> <text>`), which [`render_line`] turns back into
//! the process's output, with the time in front when `timestamps=true`. Supports `tailLines`
//! and `follow` (the response stays open and new lines are sent until the file goes away);
//! `previous`, `sinceSeconds` and `limitBytes` are left out. Also answers `GET /healthz`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::sync::CancellationToken;

use super::runner::log_path;
use crate::error::{Error, Result};

/// Query parameters the kubelet's endpoint takes (the subset svcnet honours).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    pub follow: Option<bool>,
    pub tail_lines: Option<usize>,
    pub timestamps: Option<bool>,
}

/// One CRI log record rendered for the client, or `None` when malformed.
pub fn render_line(record: &str, timestamps: bool) -> Option<String> {
    let mut parts = record.splitn(4, ' ');
    let time = parts.next()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or("");
    let end = if tag == "P" { "" } else { "\n" };
    Some(if timestamps { format!("{time} {text}{end}") } else { format!("{text}{end}") })
}

/// Renders a whole log file's text, keeping the last `tail` records.
pub fn render(text: &str, tail: Option<usize>, timestamps: bool) -> String {
    let records: Vec<&str> = text.lines().collect();
    let skip = tail.map_or(0, |tail| records.len().saturating_sub(tail));
    records[skip..].iter().filter_map(|record| render_line(record, timestamps)).collect()
}

#[derive(Clone)]
struct LogState {
    data_dir: Arc<PathBuf>,
    cancel: CancellationToken,
}

fn valid_segment(segment: &str) -> bool {
    !segment.is_empty() && segment != "." && segment != ".." && !segment.contains('/')
}

async fn container_logs(
    State(state): State<LogState>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    Query(query): Query<LogQuery>,
) -> Response {
    if ![&namespace, &pod, &container].iter().all(|s| valid_segment(s)) {
        return (StatusCode::BAD_REQUEST, "invalid path\n").into_response();
    }
    let path = log_path(&state.data_dir, &namespace, &pod, &container);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(_) => {
            let message = format!(
                "container {container:?} in pod {namespace}/{pod} has no logs on this node\n"
            );
            return (StatusCode::NOT_FOUND, message).into_response();
        }
    };
    let mut text = String::new();
    if let Err(err) = file.read_to_string(&mut text).await {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("reading logs: {err}\n"))
            .into_response();
    }
    let timestamps = query.timestamps.unwrap_or(false);
    // Only whole records are sent; a record still being written is sent on the next poll.
    let complete = text.rfind('\n').map_or(0, |idx| idx + 1);
    let first = render(&text[..complete], query.tail_lines, timestamps);
    if !query.follow.unwrap_or(false) {
        return ([(axum::http::header::CONTENT_TYPE, "text/plain")], first).into_response();
    }
    let offset = u64::try_from(complete).unwrap_or(u64::MAX);
    let follow = FollowState {
        path,
        offset,
        cancel: state.cancel.clone(),
        timestamps,
        pending: String::new(),
    };
    let head =
        futures::stream::once(async move { Ok::<Bytes, std::io::Error>(Bytes::from(first)) });
    let tail = futures::stream::unfold(follow, |mut follow| async move {
        let chunk = follow.next_chunk().await?;
        Some((Ok::<Bytes, std::io::Error>(chunk), follow))
    });
    let body = Body::from_stream(futures::StreamExt::chain(head, tail));
    ([(axum::http::header::CONTENT_TYPE, "text/plain")], body).into_response()
}

struct FollowState {
    path: PathBuf,
    offset: u64,
    cancel: CancellationToken,
    timestamps: bool,
    pending: String,
}

impl FollowState {
    /// Waits for new whole records; `None` ends the stream (file gone or agent stopping).
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if self.cancel.is_cancelled() {
                return None;
            }
            let mut file = tokio::fs::File::open(&self.path).await.ok()?;
            let len = file.metadata().await.ok()?.len();
            if len < self.offset {
                self.offset = 0;
            }
            if len > self.offset {
                file.seek(std::io::SeekFrom::Start(self.offset)).await.ok()?;
                let mut buf = Vec::new();
                file.read_to_end(&mut buf).await.ok()?;
                self.offset += u64::try_from(buf.len()).unwrap_or(0);
                self.pending.push_str(&String::from_utf8_lossy(&buf));
                if let Some(idx) = self.pending.rfind('\n') {
                    let complete: String = self.pending.drain(..=idx).collect();
                    let out = render(&complete, None, self.timestamps);
                    if !out.is_empty() {
                        return Some(Bytes::from(out));
                    }
                }
            }
            tokio::select! {
                () = self.cancel.cancelled() => return None,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
}

/// A bound log server.
pub struct LogServer {
    listener: tokio::net::TcpListener,
    data_dir: PathBuf,
}

impl LogServer {
    pub async fn bind(addr: SocketAddr, data_dir: PathBuf) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        Ok(LogServer { listener, data_dir })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(|e| Error::io("reading the log server address", e))
    }

    /// Serves until `cancel` fires.
    pub async fn serve(self, cancel: CancellationToken) -> Result<()> {
        let state = LogState { data_dir: Arc::new(self.data_dir), cancel: cancel.clone() };
        let app = axum::Router::new()
            .route("/containerLogs/{namespace}/{pod}/{container}", get(container_logs))
            .route("/healthz", get(|| async { "ok\n" }))
            .with_state(state);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
            .map_err(|e| Error::io("serving container logs", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cri_records() {
        let text = "2026-01-01T00:00:00Z stdout F one\n2026-01-01T00:00:01Z stderr F two words\n2026-01-01T00:00:02Z stdout P par\n2026-01-01T00:00:02Z stdout F tial\n";
        assert_eq!(render(text, None, false), "one\ntwo words\npartial\n");
        assert_eq!(render(text, Some(2), false), "partial\n");
        assert_eq!(render(text, Some(1), true), "2026-01-01T00:00:02Z tial\n");
        assert_eq!(render("", Some(3), false), "");
    }
}
