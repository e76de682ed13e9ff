//! Restarting `svcnet proxy --dataplane userspace` without losing a connection: a successor
//! started with `--userspace-take-over` joins the running proxy's ports, the old proxy gets
//! SIGTERM, stops accepting and drains (`--userspace-drain-timeout`). A client loop runs
//! throughout and a long-lived connection through the old proxy keeps working until it closes.
//!
//! Runs in a network namespace the test creates (its loopback only), where it may set
//! `net.ipv4.tcp_migrate_req`; skips itself when namespaces cannot be created (not root).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use svcnet_testkit::{NetnsGuard, can_create_netns};

const SERVICE: &str = "127.0.0.50:80";
const BACKEND_PORT: u16 = 18080;

const OBJECTS: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {clusterIP: 127.0.0.50, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{port: 18080}]
endpoints: [{addresses: [127.0.0.1]}]
";

/// A `svcnet proxy` process: killed on drop; its stderr lines arrive on a channel.
struct Proxy {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proxy {
    fn start(ns: &NetnsGuard, objects: &str, extra: &[&str]) -> Proxy {
        let mut args = vec![
            env!("CARGO_BIN_EXE_svcnet"),
            "proxy",
            "--objects",
            objects,
            "--node-name",
            "node",
            "--dataplane",
            "userspace",
            "--once",
            "--metrics-bind-address",
            "",
            "--healthz-bind-address",
            "",
        ];
        args.extend_from_slice(extra);
        let mut child = ns
            .command(&args)
            .env("SVCNET_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("svcnet proxy");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("proxy {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proxy { child, lines }
    }

    /// Waits for a log line containing `text`.
    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return,
                Ok(_) => {}
                Err(e) => panic!("no log line with {text:?}: {e}"),
            }
        }
    }

    fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    }

    /// Waits (bounded) for the process to exit on its own.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the old proxy did not exit after draining");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A backend that greets with "hello" and echoes lines; stops on drop.
struct Backend(Arc<AtomicBool>);

impl Drop for Backend {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn backend(ns: &NetnsGuard) -> Backend {
    let listener = ns
        .thread(|| Ok(TcpListener::bind(("127.0.0.1", BACKEND_PORT))?))
        .join()
        .expect("bind thread")
        .expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::spawn(move || {
        while !stopped.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((conn, _)) => {
                    std::thread::spawn(move || echo(conn));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    Backend(stop)
}

fn echo(conn: TcpStream) {
    let _ = conn.set_nonblocking(false);
    let Ok(mut writer) = conn.try_clone() else { return };
    if writer.write_all(b"hello\n").is_err() {
        return;
    }
    for line in BufReader::new(conn).lines().map_while(Result::ok) {
        if writer.write_all(format!("{line}\n").as_bytes()).is_err() {
            return;
        }
    }
}

/// Connects to the Service and reads the greeting.
fn greet(addr: SocketAddr) -> std::io::Result<BufReader<TcpStream>> {
    let conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line != "hello\n" {
        return Err(std::io::Error::other(format!("greeting {line:?}")));
    }
    Ok(reader)
}

fn ping(conn: &mut BufReader<TcpStream>) -> std::io::Result<()> {
    conn.get_mut().write_all(b"ping\n")?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    if line != "ping\n" {
        return Err(std::io::Error::other(format!("echo {line:?}")));
    }
    Ok(())
}

#[test]
fn userspace_proxy_restarts_without_losing_a_connection() {
    if !can_create_netns() {
        eprintln!("skipping: cannot create network namespaces");
        return;
    }
    let ns = NetnsGuard::new("prestart").expect("namespace");
    ns.exec(&["sysctl", "-qw", "net.ipv4.tcp_migrate_req=1"]).expect("sysctl");
    let dir = tempfile::tempdir().expect("tempdir");
    let objects = dir.path().join("objects.yaml");
    std::fs::write(&objects, OBJECTS).expect("objects");
    let objects = objects.to_str().expect("utf-8 path");
    let _backend = backend(&ns);
    let service: SocketAddr = SERVICE.parse().expect("address");

    let mut old = Proxy::start(&ns, objects, &["--userspace-drain-timeout", "30"]);
    old.wait_for("serving the plan in user space");
    let mut held = ns
        .thread(move || Ok(greet(service)?))
        .join()
        .expect("connect thread")
        .expect("a connection through the first proxy");
    ping(&mut held).expect("ping before the restart");

    // A bounded client loop runs through the whole hand-over.
    let done = Arc::new(AtomicUsize::new(0));
    let counter = done.clone();
    let load = ns.thread(move || {
        let mut failures = Vec::new();
        for i in 0..300 {
            if let Err(e) = greet(service).and_then(|mut c| ping(&mut c)) {
                failures.push(format!("connection {i}: {e}"));
            }
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(failures)
    });
    let wait_done = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while done.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "the client loop is stuck");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_done(50);
    let new = Proxy::start(&ns, objects, &["--userspace-take-over"]);
    new.wait_for("serving the plan in user space");
    wait_done(100);
    old.terminate();
    old.wait_for("draining");

    let failures = load.join().expect("load thread").expect("load loop");
    assert_eq!(done.load(Ordering::SeqCst), 300);
    assert!(failures.is_empty(), "connections failed during the restart: {failures:?}");
    ping(&mut held).expect("the held connection survives the restart");
    drop(held);
    let status = old.wait_exit();
    assert!(status.success(), "the old proxy exited with {status}");
    // The successor serves alone now.
    ns.thread(move || Ok(greet(service)?))
        .join()
        .expect("connect thread")
        .expect("a connection through the new proxy");
    // Without --userspace-take-over a third proxy is refused the port, with a clear message.
    let third = Proxy::start(&ns, objects, &[]);
    third.wait_for("could not be served");
}
