//! The pod network against the kernel: a node's bridge, pods' veth pairs and
//! addresses, pod-to-pod traffic over the bridge, idempotent re-attachment, routes to
//! another node's podCIDR, and a reset that leaves nothing. Each test runs its "node"
//! in a network namespace it creates (a thread enters it), so the host is untouched.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use skiff_node_agent::network::{self, NetworkSettings, NodeNetwork};
use skiff_node_agent::runtime::netns::connect_tcp;
use skiff_node_agent::runtime::sandbox::Sandbox;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A network namespace for a test node, pinned by a bind mount and removed on drop.
struct NodeNs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl NodeNs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net");
        let target = path.clone();
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            std::fs::File::create(&target).unwrap();
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .unwrap();
        })
        .join()
        .unwrap();
        Self { path, _dir: dir }
    }

    /// Runs `work` on a current-thread runtime inside the namespace.
    fn run<T: Send + 'static>(&self, work: impl AsyncFnOnce() -> T + Send + 'static) -> T {
        let path = self.path.clone();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(work())
        })
        .join()
        .unwrap()
    }
}

impl Drop for NodeNs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn settings(pod_cidr: &str, node_ip: Ipv4Addr) -> NetworkSettings {
    NetworkSettings {
        pod_cidr: pod_cidr.parse().unwrap(),
        cluster_cidr: "10.244.0.0/16".parse().unwrap(),
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        cluster_domain: "cluster.local".to_owned(),
        node_ip,
        bridge: network::BRIDGE.to_owned(),
    }
}

/// Serves one connection in `netns` on `port`: answers "hello from NAME".
async fn serve_once(netns: &Path, port: u16, name: &'static str) -> tokio::task::JoinHandle<()> {
    let path = netns.to_owned();
    let listener = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let listener = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        listener
    })
    .join()
    .unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream
            .write_all(format!("hello from {name}").as_bytes())
            .await
            .unwrap();
    })
}

#[test]
fn pods_get_addresses_reach_each_other_and_reset_leaves_nothing() {
    let node = NodeNs::new();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_owned();
    let pods = tempfile::tempdir().unwrap();
    let pods_dir = pods.path().to_owned();
    node.run(async move || {
        let net = NodeNetwork::start(
            settings("10.244.3.0/24", Ipv4Addr::new(10, 77, 0, 10)),
            &data_dir,
        )
        .await
        .unwrap();
        assert_eq!(net.gateway(), Ipv4Addr::new(10, 244, 3, 1));
        // Starting again (agent restart) is idempotent.
        let net_again = NodeNetwork::start(
            settings("10.244.3.0/24", Ipv4Addr::new(10, 77, 0, 10)),
            &data_dir,
        )
        .await
        .unwrap();
        drop(net_again);
        let forwarding =
            std::fs::read_to_string("/proc/sys/net/ipv4/conf/skiff0/forwarding").unwrap();
        assert_eq!(forwarding.trim(), "1");

        let a = Sandbox::create(&pods_dir.join("a"), "a", false)
            .await
            .unwrap();
        let b = Sandbox::create(&pods_dir.join("b"), "b", false)
            .await
            .unwrap();
        let a_ns = a.namespace_path("network").unwrap();
        let b_ns = b.namespace_path("network").unwrap();
        let a_ip = net.attach("uid-a", &a_ns).await.unwrap();
        let b_ip = net.attach("uid-b", &b_ns).await.unwrap();
        assert_eq!(a_ip, Ipv4Addr::new(10, 244, 3, 2));
        assert_eq!(b_ip, Ipv4Addr::new(10, 244, 3, 3));
        assert!(net.is_attached("uid-a"));
        // Re-attaching (a half-made attachment) keeps the address and still works.
        assert_eq!(net.attach("uid-a", &a_ns).await.unwrap(), a_ip);

        // a → b over the bridge; and the node → a (probes, the proxy's DNAT).
        let served = serve_once(&b_ns, 8080, "b").await;
        let mut stream = connect_tcp(
            Some(&a_ns),
            SocketAddr::from((b_ip, 8080)),
            Duration::from_secs(3),
        )
        .await
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "hello from b");
        served.await.unwrap();
        let served = serve_once(&a_ns, 8081, "a").await;
        let mut stream = tokio::net::TcpStream::connect((a_ip, 8081)).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "hello from a");
        served.await.unwrap();

        // Routes to another node's pods: host-gw over a directly attached network.
        let mut nodes = BTreeMap::new();
        nodes.insert(
            "self".to_owned(),
            (
                "10.244.3.0/24".parse().unwrap(),
                Ipv4Addr::new(10, 77, 0, 10),
            ),
        );
        nodes.insert(
            "far".to_owned(),
            (
                "10.244.9.0/24".parse().unwrap(),
                Ipv4Addr::new(192, 0, 2, 1),
            ),
        );
        nodes.insert(
            "near".to_owned(),
            (
                "10.244.4.0/24".parse().unwrap(),
                Ipv4Addr::new(10, 244, 3, 200),
            ),
        );
        net.sync_routes(&nodes).await.unwrap();
        let handle = network::link::connect().unwrap();
        let routes = network::link::own_routes(&handle).await.unwrap();
        assert_eq!(
            routes,
            vec![network::link::Route {
                destination: "10.244.4.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 244, 3, 200),
            }],
            "only the node on an attached network gets a route"
        );
        nodes.remove("near");
        net.sync_routes(&nodes).await.unwrap();
        assert!(network::link::own_routes(&handle).await.unwrap().is_empty());

        // Detach frees the address and removes the host end.
        net.detach("uid-b").await.unwrap();
        assert_eq!(net.pod_ip("uid-b"), None);
        assert!(!net.is_attached("uid-b"));
        a.remove().await.unwrap();
        b.remove().await.unwrap();
        network::reset(&data_dir, network::BRIDGE).await.unwrap();
        assert!(
            network::link::index_of(&handle, network::BRIDGE)
                .await
                .unwrap()
                .is_none()
        );
        assert!(!data_dir.join("network").exists());
    });
}
