//! The echo server answers TCP, UDP and HTTP on one loopback port.

use std::sync::{Arc, Mutex};

use svcnet_agent::echo::{EchoConfig, EchoRequest, EchoServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn answers_tcp_udp_and_http() {
    let seen: Arc<Mutex<Vec<EchoRequest>>> = Arc::default();
    let seen_in_server = seen.clone();
    let config = EchoConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        pod_name: "echo-1".into(),
        pod_ip: "127.1.0.9".into(),
        on_request: Some(Arc::new(move |request| {
            seen_in_server.lock().unwrap().push(request.clone())
        })),
    };
    let server = EchoServer::bind(config).await.unwrap();
    let addr = server.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(server.serve(cancel.clone()));

    // Raw TCP: a silent client gets the line, then its own bytes back.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let mut buf = vec![0u8; 256];
    let n = tcp.read(&mut buf).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        format!("pod=echo-1 podIP=127.1.0.9 client={local}\n")
    );
    tcp.write_all(b"ping\n").await.unwrap();
    let n = tcp.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"ping\n");

    // UDP.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.send_to(b"x", addr).await.unwrap();
    let (n, _) = udp.recv_from(&mut buf).await.unwrap();
    let udp_local = udp.local_addr().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        format!("pod=echo-1 podIP=127.1.0.9 client={udp_local}\n")
    );

    // HTTP with keep-alive: two requests on one connection.
    let mut http = tokio::net::TcpStream::connect(addr).await.unwrap();
    let http_local = http.local_addr().unwrap();
    for path in ["/a", "/b"] {
        http.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut response = Vec::new();
        loop {
            let n = http.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed");
            response.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&response);
            if let Some((_, body)) = text.split_once("\r\n\r\n")
                && body.ends_with('\n')
            {
                let json: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
                assert_eq!(json["pod"], "echo-1");
                assert_eq!(json["podIP"], "127.1.0.9");
                assert_eq!(json["client"], http_local.to_string());
                assert_eq!(json["path"], path);
                break;
            }
        }
    }
    let protocols: Vec<&str> = seen.lock().unwrap().iter().map(|r| r.protocol).collect();
    assert_eq!(protocols, ["tcp", "udp", "http", "http"]);
    cancel.cancel();
    task.await.unwrap().unwrap();
}
