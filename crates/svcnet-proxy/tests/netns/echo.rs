//! Echo backends: a TCP and a UDP server in a pod namespace that answer with the pod's name.
//! TCP: the name on accept, then every line echoed. UDP: the name for every datagram.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use svcnet_testkit::{NetnsGuard, anyhow};

pub const TCP_PORT: u16 = 8080;
pub const UDP_PORT: u16 = 5353;

/// Stops the servers on drop.
pub struct Echo {
    stop: Arc<AtomicBool>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub fn start(pod: &NetnsGuard, name: String) -> anyhow::Result<Echo> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tcp, udp) = pod
        .thread(|| {
            let tcp = TcpListener::bind(("0.0.0.0", TCP_PORT))?;
            let udp = UdpSocket::bind(("0.0.0.0", UDP_PORT))?;
            Ok((tcp, udp))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("echo thread panicked"))??;
    tcp.set_nonblocking(true)?;
    udp.set_read_timeout(Some(Duration::from_millis(50)))?;
    let (s1, s2) = (stop.clone(), stop.clone());
    let n1 = name.clone();
    std::thread::spawn(move || {
        while !s1.load(Ordering::Relaxed) {
            match tcp.accept() {
                Ok((conn, _)) => {
                    let name = n1.clone();
                    let stop = s1.clone();
                    std::thread::spawn(move || serve(conn, &name, &stop));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !s2.load(Ordering::Relaxed) {
            if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(name.as_bytes(), peer);
            }
        }
    });
    Ok(Echo { stop })
}

fn serve(conn: TcpStream, name: &str, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let mut writer = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    if writer.write_all(format!("{name}\n").as_bytes()).is_err() {
        return;
    }
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                if writer.write_all(line.as_bytes()).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Connects and returns the backend's name, or the connect error kind.
pub fn who(addr: SocketAddr, timeout: Duration) -> Result<String, std::io::ErrorKind> {
    let conn = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.kind())?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.kind())?;
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.kind())?;
    Ok(line.trim().to_string())
}

/// Sends one datagram from `sock` and returns the answering backend's name.
pub fn udp_who(sock: &UdpSocket, addr: SocketAddr) -> Option<String> {
    sock.send_to(b"who", addr).ok()?;
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).to_string())
}

/// A long-lived connection: the backend name it reached, and a ping over it.
pub struct Held {
    pub backend: String,
    reader: BufReader<TcpStream>,
}

impl Held {
    pub fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        Ok(Self { backend: line.trim().to_string(), reader })
    }

    pub fn ping(&mut self) -> anyhow::Result<()> {
        self.reader.get_mut().write_all(b"ping\n")?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        anyhow::ensure!(line == "ping\n", "unexpected echo {line:?}");
        Ok(())
    }
}

#[allow(dead_code)]
fn drain(mut r: impl Read) {
    let mut buf = [0u8; 256];
    while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
}
