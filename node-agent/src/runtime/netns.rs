//! Connecting to a port inside a pod's network namespace. Until pods get routable
//! addresses (pod networking), the agent reaches them — for probes and port checks —
//! by creating the socket inside the pod's namespace: a short-lived thread enters it
//! (setns only moves the calling thread), connects, and hands the socket back; the
//! socket stays in that namespace. The thread ends right after, so no pool thread is
//! ever left in a pod's namespace.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use nix::sched::CloneFlags;

/// Connects to `addr` from inside the network namespace at `netns` (an nsfs file),
/// or from the host's namespace when `netns` is `None`.
pub async fn connect_tcp(
    netns: Option<&Path>,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let Some(netns) = netns else {
        return tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?;
    };
    let netns = netns.to_owned();
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("skiff-netns-connect".to_owned())
        .spawn(move || {
            let result = (|| -> std::io::Result<std::net::TcpStream> {
                let namespace = std::fs::File::open(&netns)?;
                nix::sched::setns(namespace, CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
                stream.set_nonblocking(true)?;
                Ok(stream)
            })();
            let _ = sender.send(result);
        })?;
    let stream = receiver
        .await
        .map_err(|_| std::io::Error::other("the connecting thread ended without a result"))??;
    tokio::net::TcpStream::from_std(stream)
}
