//! The `svcnet echo` test backend: one port answering raw TCP, UDP and HTTP/1.1.
//!
//! Every answer names the pod (`POD_NAME`), its address (`POD_IP`) and the client address the
//! server saw, so a test can tell which replica answered and whether the source address was kept.
//! A TCP connection is HTTP when its first bytes are an HTTP method; a client that sends nothing
//! within [`SNIFF_TIMEOUT`] or sends anything else gets the raw line and then its own bytes back.
//! TLS, HTTP/2 and request bodies are deliberately left out.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// How long a TCP connection may stay silent before it is treated as raw TCP.
pub const SNIFF_TIMEOUT: Duration = Duration::from_millis(200);

/// One answered request, handed to [`EchoConfig::on_request`] (the binary prints it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EchoRequest {
    /// `tcp`, `udp` or `http`.
    pub protocol: &'static str,
    pub client: SocketAddr,
    /// The HTTP path, or empty.
    pub path: String,
}

/// A callback seeing every request (for the pod's log).
pub type OnRequest = Arc<dyn Fn(&EchoRequest) + Send + Sync>;

/// What the echo server listens on and says about itself.
#[derive(Clone)]
pub struct EchoConfig {
    pub listen: SocketAddr,
    pub pod_name: String,
    pub pod_ip: String,
    pub on_request: Option<OnRequest>,
}

impl EchoConfig {
    /// Takes the pod name and address from `POD_NAME` / `POD_IP`, else the host name and the
    /// listen address.
    pub fn from_env(listen: SocketAddr) -> Self {
        let pod_name = std::env::var("POD_NAME")
            .ok()
            .filter(|name| !name.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        let pod_ip = std::env::var("POD_IP")
            .ok()
            .filter(|ip| !ip.is_empty())
            .unwrap_or_else(|| listen.ip().to_string());
        EchoConfig { listen, pod_name, pod_ip, on_request: None }
    }
}

/// The raw TCP and UDP answer: one line of `key=value` pairs.
pub fn line(pod_name: &str, pod_ip: &str, client: SocketAddr) -> String {
    format!("pod={pod_name} podIP={pod_ip} client={client}\n")
}

/// The HTTP answer body.
pub fn json_body(pod_name: &str, pod_ip: &str, client: SocketAddr, path: &str) -> String {
    let body = serde_json::json!({
        "pod": pod_name,
        "podIP": pod_ip,
        "client": client.to_string(),
        "path": path,
    });
    format!("{body}\n")
}

/// Whether the first bytes of a connection start an HTTP/1.x request.
pub fn looks_like_http(first: &[u8]) -> bool {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"HEAD ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"TRACE ",
        b"CONNECT ",
    ];
    METHODS.iter().any(|method| {
        let n = method.len().min(first.len());
        n >= 4 && first[..n] == method[..n]
    })
}

/// A bound echo server (TCP and UDP on the same address).
pub struct EchoServer {
    tcp: TcpListener,
    udp: UdpSocket,
    info: Arc<EchoConfig>,
}

impl EchoServer {
    /// Binds TCP and UDP; with port 0, UDP takes the port TCP got.
    pub async fn bind(config: EchoConfig) -> Result<Self> {
        let tcp = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind { addr: config.listen, source })?;
        let addr = tcp.local_addr().map_err(|e| Error::io("reading the listen address", e))?;
        let udp = UdpSocket::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
        Ok(EchoServer { tcp, udp, info: Arc::new(config) })
    }

    /// The bound address (TCP and UDP).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.tcp.local_addr().map_err(|e| Error::io("reading the listen address", e))
    }

    /// Answers until `cancel` fires.
    pub async fn serve(self, cancel: CancellationToken) -> Result<()> {
        let EchoServer { tcp, udp, info } = self;
        let udp_info = info.clone();
        let udp_cancel = cancel.clone();
        let udp_task = tokio::spawn(async move { serve_udp(udp, udp_info, udp_cancel).await });
        loop {
            let accepted = tokio::select! {
                () = cancel.cancelled() => break,
                accepted = tcp.accept() => accepted,
            };
            match accepted {
                Ok((stream, client)) => {
                    let info = info.clone();
                    let cancel = cancel.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            () = cancel.cancelled() => {}
                            result = serve_tcp(stream, client, info) => {
                                if let Err(err) = result {
                                    tracing::debug!(%client, error = %err, "echo connection ended");
                                }
                            }
                        }
                    });
                }
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        udp_task.abort();
        Ok(())
    }
}

fn report(info: &EchoConfig, request: EchoRequest) {
    if let Some(on_request) = &info.on_request {
        on_request(&request);
    }
}

async fn serve_udp(udp: UdpSocket, info: Arc<EchoConfig>, cancel: CancellationToken) {
    let mut buf = vec![0u8; 65536];
    loop {
        let received = tokio::select! {
            () = cancel.cancelled() => return,
            received = udp.recv_from(&mut buf) => received,
        };
        match received {
            Ok((_, client)) => {
                report(&info, EchoRequest { protocol: "udp", client, path: String::new() });
                let answer = line(&info.pod_name, &info.pod_ip, client);
                if let Err(err) = udp.send_to(answer.as_bytes(), client).await {
                    tracing::debug!(%client, error = %err, "udp answer failed");
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, "udp receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_tcp(
    mut stream: TcpStream,
    client: SocketAddr,
    info: Arc<EchoConfig>,
) -> std::io::Result<()> {
    let mut first = [0u8; 8];
    let peeked = match tokio::time::timeout(SNIFF_TIMEOUT, stream.peek(&mut first)).await {
        Ok(result) => result?,
        Err(_elapsed) => 0,
    };
    if peeked > 0 && looks_like_http(&first[..peeked]) {
        return serve_http(stream, client, info).await;
    }
    report(&info, EchoRequest { protocol: "tcp", client, path: String::new() });
    stream.write_all(line(&info.pod_name, &info.pod_ip, client).as_bytes()).await?;
    let mut buf = vec![0u8; 16384];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}

async fn serve_http(
    stream: TcpStream,
    client: SocketAddr,
    info: Arc<EchoConfig>,
) -> std::io::Result<()> {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let info = info.clone();
        async move {
            let path = request.uri().path().to_string();
            let body = json_body(&info.pod_name, &info.pod_ip, client, &path);
            report(&info, EchoRequest { protocol: "http", client, path });
            let response = Response::builder()
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
            Ok::<_, Infallible>(response)
        }
    });
    hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_http_methods() {
        assert!(looks_like_http(b"GET / HT"));
        assert!(looks_like_http(b"POST /x"));
        assert!(looks_like_http(b"DELE"));
        assert!(!looks_like_http(b"hello"));
        assert!(!looks_like_http(b"GE"));
        assert!(!looks_like_http(b""));
    }

    #[test]
    fn answers_name_the_pod_and_client() {
        let client: SocketAddr = "127.0.0.9:4000".parse().unwrap();
        assert_eq!(
            line("web-1", "127.1.0.2", client),
            "pod=web-1 podIP=127.1.0.2 client=127.0.0.9:4000\n"
        );
        let body: serde_json::Value =
            serde_json::from_str(&json_body("web-1", "127.1.0.2", client, "/a")).unwrap();
        assert_eq!(body["pod"], "web-1");
        assert_eq!(body["client"], "127.0.0.9:4000");
        assert_eq!(body["path"], "/a");
    }
}
