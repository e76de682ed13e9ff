//! A loopback port forward into a network namespace: the host reaches the lab's API server
//! through `127.0.0.1:PORT` without any route or address in its own namespace.
//!
//! Sockets keep the namespace they were created in, so one dedicated thread enters the target
//! namespace (`setns`) and creates every outgoing connection there; the async side accepts on
//! host loopback and copies bytes both ways.

use std::net::SocketAddr;
use std::os::fd::AsFd;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

type ConnectRequest = (SocketAddr, oneshot::Sender<std::io::Result<std::net::TcpStream>>);

/// Starts the thread that lives in `netns` and connects on request.
fn spawn_connector(netns: &str) -> Result<mpsc::UnboundedSender<ConnectRequest>> {
    let path = format!("/run/netns/{netns}");
    let file =
        std::fs::File::open(&path).map_err(|source| Error::State { path: path.clone(), source })?;
    let (tx, mut rx) = mpsc::unbounded_channel::<ConnectRequest>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("netns-{netns}"))
        .spawn(move || {
            let entered = nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET);
            let _ = ready_tx.send(entered.map_err(|e| e.to_string()));
            if entered.is_err() {
                return;
            }
            while let Some((addr, reply)) = rx.blocking_recv() {
                let stream =
                    std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5));
                let _ = reply.send(stream);
            }
        })
        .map_err(|source| Error::Spawn { program: "netns thread".into(), source })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(tx),
        Ok(Err(e)) => Err(Error::Internal(format!("cannot enter network namespace {netns}: {e}"))),
        Err(_) => Err(Error::Internal(format!("the thread for {netns} died"))),
    }
}

/// Forwards connections accepted on `listener` (host namespace) to `target` inside `netns`,
/// until `cancel` fires.
pub async fn forward(
    listener: TcpListener,
    netns: &str,
    target: SocketAddr,
    cancel: CancellationToken,
) -> Result<()> {
    let connector = spawn_connector(netns)?;
    loop {
        let (mut inbound, _) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    continue;
                }
            },
        };
        let connector = connector.clone();
        tokio::spawn(async move {
            let (reply_tx, reply_rx) = oneshot::channel();
            if connector.send((target, reply_tx)).is_err() {
                return;
            }
            let outbound = match reply_rx.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    tracing::debug!(%err, %target, "connect into the lab failed");
                    return;
                }
                Err(_) => return,
            };
            if outbound.set_nonblocking(true).is_err() {
                return;
            }
            let Ok(mut outbound) = TcpStream::from_std(outbound) else { return };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}
