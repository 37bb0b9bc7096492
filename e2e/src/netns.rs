//! Network namespaces for end-to-end runs, so that no node agent (and nothing it sets
//! up: bridges, veths, routes, nftables, DNS) ever touches the host's network.
//!
//! - [`NetNs`]: a named namespace (`/run/netns/skiff-e2e-<pid>-<n>`) with `lo` up,
//!   deleted on drop. Commands run inside it through `nsenter --net=…`, which enters
//!   only the network namespace: the host's mount namespace stays, so an agent's bind
//!   and overlay mounts are visible to the test and survive agent restarts (`ip netns
//!   exec` would give each command a private mount namespace).
//! - [`Fabric`]: the "outside" L2 segment, a namespace holding the bridge `fabric0`
//!   with [`Fabric::IP`]; [`Fabric::add_node`] plugs a node namespace into it with a
//!   veth pair (`eth0`, `10.77.0.(10+i)/24`, default route via the bridge, IP
//!   forwarding on inside the node only).
//! - [`Forwarder`]: a TCP port on the host's loopback that leads to an address inside a
//!   namespace, so host clients (`kubectl`, `skiff`, raw HTTP) reach a control plane
//!   living in the fabric.
//!
//! Everything here uses `ip`/`nsenter` (the tests may; the product may not) and
//! `setns(2)` on short-lived or dedicated threads: `setns` moves only the calling
//! thread, and a socket stays in the namespace it was created in.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sched::CloneFlags;
use tokio::task::JoinSet;

/// Numbers the namespaces of this process.
static NEXT_NETNS: AtomicU32 = AtomicU32::new(0);

/// How long a connection into a namespace may take to be established.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A named network namespace created for the test (`ip netns add`), with `lo` up.
/// Dropping it deletes the name; the kernel frees the namespace once no process or
/// socket uses it any more.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
}

impl NetNs {
    /// Creates `skiff-e2e-<pid>-<n>` and brings its loopback up.
    pub fn create() -> anyhow::Result<Self> {
        let name = format!(
            "skiff-e2e-{}-{}",
            std::process::id(),
            NEXT_NETNS.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]))
            .context("creating a network namespace (needs root and iproute2)")?;
        let netns = Self {
            path: Path::new("/run/netns").join(&name),
            name,
        };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// The namespace's name (`skiff-e2e-<pid>-<n>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its nsfs file, `/run/netns/NAME` (for `nsenter --net=` and `setns`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's inode, as `/proc/PID/ns/net` of a process inside it names it
    /// (`net:[INODE]`).
    pub fn inode(&self) -> anyhow::Result<u64> {
        let metadata = std::fs::metadata(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?;
        Ok(std::os::unix::fs::MetadataExt::ino(&metadata))
    }

    /// Whether process `pid` runs in this namespace.
    pub fn contains(&self, pid: u32) -> anyhow::Result<bool> {
        let link = std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .with_context(|| format!("reading the network namespace of process {pid}"))?;
        Ok(link.to_string_lossy() == format!("net:[{}]", self.inode()?))
    }

    /// A command running `program` inside the namespace: `nsenter --net=PATH --
    /// program`. nsenter execs `program`, so the child's PID is the program's own.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        command_in(&self.path, program)
    }

    /// Runs `ip -n NAME args…` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs `f` on a short-lived thread inside the namespace.
    pub fn run_inside<T: Send>(
        &self,
        f: impl FnOnce() -> std::io::Result<T> + Send,
    ) -> std::io::Result<T> {
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("skiff-e2e-netns".to_owned())
                .spawn_scoped(scope, || {
                    enter(&self.path)?;
                    f()
                })?
                .join()
                .map_err(|_| std::io::Error::other("the thread inside the namespace panicked"))?
        })
    }

    /// Connects to `address` from inside the namespace, blocking; the socket stays in
    /// the namespace.
    pub fn connect_blocking(
        &self,
        address: SocketAddr,
        timeout: Duration,
    ) -> std::io::Result<std::net::TcpStream> {
        self.run_inside(|| std::net::TcpStream::connect_timeout(&address, timeout))
    }

    /// Connects to `address` from inside the namespace (within 10 s).
    pub async fn connect(&self, address: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let path = self.path.clone();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("skiff-e2e-connect".to_owned())
            .spawn(move || {
                let result = enter(&path).and_then(|()| {
                    let stream = std::net::TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)?;
                    stream.set_nonblocking(true)?;
                    Ok(stream)
                });
                let _ = sender.send(result);
            })?;
        let stream = receiver
            .await
            .map_err(|_| std::io::Error::other("the connecting thread ended without a result"))??;
        tokio::net::TcpStream::from_std(stream)
    }

    /// A free TCP port on `ip` inside the namespace (bound and released; good enough for
    /// tests).
    pub fn free_port(&self, ip: IpAddr) -> anyhow::Result<u16> {
        let port = self
            .run_inside(|| Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port()))
            .with_context(|| format!("binding an ephemeral port on {ip} in {}", self.name))?;
        Ok(port)
    }

    /// Waits until something inside the namespace accepts TCP connections on
    /// `address`.
    pub async fn wait_for_port(&self, address: SocketAddr, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        while self.connect(address).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "nothing listens on {address} in {} after {limit:?}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Forwards a new port on the host's 127.0.0.1 to `target` inside the namespace.
    pub fn forward(&self, target: SocketAddr) -> anyhow::Result<Forwarder> {
        Forwarder::start(&self.path, target)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(error) = run(Command::new("ip").args(["netns", "delete", &self.name])) {
            eprintln!("skiff-e2e: {error:#}");
        }
    }
}

/// The test's "outside" network: a namespace with a Linux bridge holding
/// [`Fabric::IP`]/24, where the control plane and the registry listen, and to which
/// every node namespace is plugged. Nodes reach each other over it at L2.
#[derive(Debug)]
pub struct Fabric {
    /// The fabric's namespace (the control plane and the registry run in it).
    pub ns: NetNs,
    /// Numbers the nodes, for their addresses and veth names.
    next_node: AtomicU8,
}

impl Fabric {
    /// The bridge's address: what nodes use to reach the control plane and registry.
    pub const IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    /// The bridge's name inside the fabric namespace.
    pub const BRIDGE: &str = "fabric0";

    /// Creates the fabric namespace and its bridge.
    pub fn create() -> anyhow::Result<Self> {
        let ns = NetNs::create()?;
        ns.ip(&["link", "add", Self::BRIDGE, "type", "bridge"])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/24", Self::IP),
            "dev",
            Self::BRIDGE,
        ])?;
        ns.ip(&["link", "set", Self::BRIDGE, "up"])?;
        Ok(Self {
            ns,
            next_node: AtomicU8::new(0),
        })
    }

    /// Creates node `name`'s namespace and plugs it into the bridge: a veth pair
    /// (`eth0` inside the node, `10.77.0.(10+i)/24`, default route via [`Fabric::IP`])
    /// and `net.ipv4.ip_forward=1` inside the node only (its pods' traffic is routed).
    pub fn add_node(&self, name: &str) -> anyhow::Result<NodeNet> {
        let index = self.next_node.fetch_add(1, Ordering::Relaxed);
        let host = index
            .checked_add(10)
            .filter(|host| *host < 255)
            .context("the fabric holds at most 244 nodes")?;
        let ip = Ipv4Addr::new(10, 77, 0, host);
        let ns = NetNs::create()?;
        let port = format!("node{index}");
        self.ns.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ])?;
        self.ns
            .ip(&["link", "set", &port, "master", Self::BRIDGE, "up"])?;
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&["route", "add", "default", "via", &Self::IP.to_string()])?;
        run(ns
            .command("sysctl")
            .args(["-q", "-w", "net.ipv4.ip_forward=1"]))
        .with_context(|| format!("enabling IP forwarding in node {name}'s namespace"))?;
        Ok(NodeNet {
            name: name.to_owned(),
            ns,
            ip,
        })
    }
}

/// A node's network: its namespace, plugged into a [`Fabric`], and its address there.
#[derive(Debug)]
pub struct NodeNet {
    /// The node's name (the agent's `--node-name`).
    pub name: String,
    /// The node's namespace; its agent and hostNetwork pods run in it.
    pub ns: NetNs,
    /// The node's address on the fabric (`eth0`), the agent's `--node-ip`.
    pub ip: Ipv4Addr,
}

/// A port on the host's 127.0.0.1 whose connections are relayed to an address inside
/// a namespace. It runs on its own thread (a single-threaded runtime that entered the
/// namespace after binding the host-side listener), so it keeps relaying while the
/// test blocks its own runtime's threads on clients. Dropping it closes the port and
/// every relayed connection.
#[derive(Debug)]
pub struct Forwarder {
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    fn start(netns: &Path, target: SocketAddr) -> anyhow::Result<Self> {
        // Bound before the thread enters the namespace: the listener stays on the host.
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding the forwarder's port")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_netns = netns.to_owned();
        let thread = std::thread::Builder::new()
            .name("skiff-e2e-forward".to_owned())
            .spawn(move || {
                let runtime = enter(&thread_netns).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                });
                let runtime = match runtime {
                    Ok(runtime) => {
                        let _ = ready_tx.send(Ok(()));
                        runtime
                    }
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                runtime.block_on(relay(listener, target, stopped));
            })
            .context("starting the forwarder's thread")?;
        ready_rx
            .recv()
            .context("the forwarder's thread ended at once")?
            .with_context(|| format!("entering {} for the forwarder", netns.display()))?;
        Ok(Self {
            address,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `127.0.0.1:PORT` on the host.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts on `listener` (host side) and relays each connection to `target` (connected
/// from this thread, so inside the namespace) until `stopped`.
async fn relay(
    listener: std::net::TcpListener,
    target: SocketAddr,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                if let Ok((inbound, _)) = accepted {
                    connections.spawn(pipe(inbound, target));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Dropping the set aborts the relayed connections; both ends see them close.
}

/// Relays one connection both ways until both directions end.
async fn pipe(mut inbound: tokio::net::TcpStream, target: SocketAddr) {
    let Ok(Ok(mut outbound)) =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target)).await
    else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
}

/// A command running `program` inside the network namespace at `netns` (an nsfs
/// file): `nsenter --net=NETNS -- program`, in the host's mount namespace.
pub fn command_in(netns: &Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net={}", netns.display()))
        .arg("--")
        .arg(program);
    command
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &Path) -> std::io::Result<()> {
    let namespace = std::fs::File::open(path)?;
    nix::sched::setns(namespace, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// Runs a command; its stdout, or an error with its stderr.
fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
