//! The service proxy against the real kernel: rules applied inside throwaway network
//! namespaces, then real connections through them.
//!
//! Topology: a "node" namespace holding the proxy's table, joined by a veth pair
//! (`skiff-n` / `skiff-p`, 10.244.1.0/24) to a "pods" namespace where every endpoint
//! address is a listener that answers with its own address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use skiff_api::types::{Endpoints, Service};
use skiff_node_agent::network::proxy::{
    ProxyConfig, ServiceProxy, benchmark_objects,
    test_objects::{endpoints, service},
};
use skiff_node_agent::runtime::netns::connect_tcp;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A network namespace made with `ip netns add`, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// A new, empty namespace with `lo` up.
    pub fn new(role: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "skiff-test-{}-{role}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let netns = Self { name };
        netns.exec(&["ip", "link", "set", "lo", "up"]);
        netns
    }

    /// The namespace's nsfs file.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// Runs a command inside the namespace and panics if it fails.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// The `nft` command of a proxy working inside this namespace.
    pub fn nft_command(&self) -> Vec<String> {
        vec![
            "nsenter".to_owned(),
            format!("--net={}", self.path().display()),
            "nft".to_owned(),
        ]
    }

    /// Runs `f` on a thread inside the namespace (sockets made there stay there).
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        std::thread::spawn(move || {
            let namespace = std::fs::File::open(&path).unwrap();
            nix::sched::setns(namespace, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A node namespace and a pods namespace joined by a veth pair.
struct Topology {
    node: Netns,
    pods: Netns,
}

const NODE_IP: &str = "10.244.1.1";

impl Topology {
    fn new(pod_ips: &[Ipv4Addr]) -> Self {
        let node = Netns::new("node");
        let pods = Netns::new("pods");
        node.exec(&[
            "ip", "link", "add", "skiff-n", "type", "veth", "peer", "name", "skiff-p",
        ]);
        node.exec(&[
            "ip",
            "link",
            "set",
            "skiff-p",
            "netns",
            &pods.path().display().to_string(),
        ]);
        node.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{NODE_IP}/24"),
            "dev",
            "skiff-n",
        ]);
        node.exec(&["ip", "link", "set", "skiff-n", "up"]);
        // Service addresses need a route before the nat hook rewrites them.
        node.exec(&["ip", "route", "add", "default", "dev", "skiff-n"]);
        node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        pods.exec(&["ip", "link", "set", "skiff-p", "up"]);
        // The pods namespace's own address, so it has a source for its default route.
        pods.exec(&["ip", "addr", "add", "10.244.1.2/24", "dev", "skiff-p"]);
        for ip in pod_ips {
            pods.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "skiff-p"]);
        }
        pods.exec(&["ip", "route", "add", "default", "via", NODE_IP]);
        Self { node, pods }
    }

    fn config(&self) -> ProxyConfig {
        let mut config = ProxyConfig::new(
            vec![NODE_IP.parse().unwrap()],
            "10.244.0.0/16".parse().unwrap(),
            "10.244.1.0/24".parse().unwrap(),
        );
        config.table = "skiff-test".to_owned();
        // The veth plays the pod bridge: hairpin traffic leaves through it.
        config.bridge = "skiff-n".to_owned();
        config.nft = self.node.nft_command();
        config
    }
}

/// Listeners inside the pods namespace that answer every connection with their address.
struct Echoes {
    _tasks: tokio::task::JoinSet<()>,
}

impl Echoes {
    fn start(pods: &Netns, addresses: &[SocketAddr]) -> Self {
        let mut tasks = tokio::task::JoinSet::new();
        for address in addresses.iter().copied() {
            let listener = pods.enter(move || {
                let listener = std::net::TcpListener::bind(address).unwrap();
                listener.set_nonblocking(true).unwrap();
                listener
            });
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tasks.spawn(async move {
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        return;
                    };
                    let _ = stream.write_all(address.ip().to_string().as_bytes()).await;
                }
            });
        }
        Self { _tasks: tasks }
    }
}

/// Connects from inside `netns` and returns what the server said.
async fn ask(netns: &Netns, address: &str) -> std::io::Result<String> {
    let address: SocketAddr = address.parse().unwrap();
    let mut stream = connect_tcp(Some(&netns.path()), address, Duration::from_secs(3)).await?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(3), stream.read_to_string(&mut answer))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out"))??;
    Ok(answer)
}

fn ips(texts: &[&str]) -> Vec<Ipv4Addr> {
    texts.iter().map(|text| text.parse().unwrap()).collect()
}

/// Chain name → rule handles, from `nft -j list table`.
fn rule_handles(node: &Netns, table: &str) -> BTreeMap<String, Vec<u64>> {
    let json: serde_json::Value =
        serde_json::from_str(&node.exec(&["nft", "-j", "list", "table", "ip", table])).unwrap();
    let mut chains: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for object in json["nftables"].as_array().unwrap() {
        if let Some(chain) = object.get("chain") {
            chains
                .entry(chain["name"].as_str().unwrap().to_owned())
                .or_default();
        }
        if let Some(rule) = object.get("rule") {
            chains
                .entry(rule["chain"].as_str().unwrap().to_owned())
                .or_default()
                .push(rule["handle"].as_u64().unwrap());
        }
    }
    chains
}

fn objects(api_ips: &[Ipv4Addr]) -> (Vec<Service>, Vec<Endpoints>) {
    (
        vec![
            service("default", "web", "10.96.0.10", &[(None, 80, "TCP")]),
            service(
                "default",
                "api",
                "10.96.0.20",
                &[(Some("http"), 443, "TCP")],
            ),
            service("default", "none", "10.96.0.30", &[(None, 80, "TCP")]),
        ],
        vec![
            endpoints(
                "default",
                "web",
                &ips(&["10.244.1.10"]),
                &[(None, 8080, "TCP")],
            ),
            endpoints("default", "api", api_ips, &[(Some("http"), 8443, "TCP")]),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_ips_reach_every_ready_endpoint_and_syncs_are_incremental() {
    let pod_ips = ips(&["10.244.1.10", "10.244.1.11", "10.244.1.12", "10.244.1.13"]);
    let topology = Topology::new(&pod_ips);
    let config = topology.config();
    let table = config.table.clone();
    let _echoes = Echoes::start(
        &topology.pods,
        &[
            "10.244.1.10:8080".parse().unwrap(),
            "10.244.1.11:8443".parse().unwrap(),
            "10.244.1.12:8443".parse().unwrap(),
            "10.244.1.13:8443".parse().unwrap(),
        ],
    );
    let mut proxy = ServiceProxy::new(config.clone());

    // A table left by an earlier agent run: its stale chains go, the table stays.
    topology.node.exec(&["nft", "add", "table", "ip", &table]);
    topology.node.exec(&[
        "nft",
        "add",
        "chain",
        "ip",
        &table,
        "service-STALE-old/svc/tcp/p1",
    ]);

    let api_ips = ips(&["10.244.1.11", "10.244.1.12", "10.244.1.13"]);
    let (services, all_endpoints) = objects(&api_ips);
    let report = proxy.sync(&services, &all_endpoints, &[]).await.unwrap();
    assert!(report.full);
    assert_eq!((report.service_ports, report.endpoints), (3, 4));
    assert_eq!(report.chains_deleted, 1);

    let chains = rule_handles(&topology.node, &table);
    assert!(!chains.contains_key("service-STALE-old/svc/tcp/p1"));
    let service_chains: Vec<&String> = chains
        .keys()
        .filter(|name| name.starts_with("service-") && name.contains("default/"))
        .collect();
    assert_eq!(service_chains.len(), 2, "{chains:?}");
    assert_eq!(
        chains
            .keys()
            .filter(|name| name.starts_with("endpoint-"))
            .count(),
        4
    );
    let listing = topology
        .node
        .exec(&["nft", "list", "map", "ip", &table, "service-ips"]);
    assert!(
        listing.contains("10.96.0.10 . tcp . 80 : goto service-"),
        "{listing}"
    );
    assert!(
        listing.contains("10.96.0.20 . tcp . 443 : goto service-"),
        "{listing}"
    );

    // From the node (output hook) to a single-endpoint service.
    assert_eq!(
        ask(&topology.node, "10.96.0.10:80").await.unwrap(),
        "10.244.1.10"
    );
    // Spread: every endpoint of the three gets some of 60 connections.
    let mut hits: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..60 {
        *hits
            .entry(ask(&topology.node, "10.96.0.20:443").await.unwrap())
            .or_default() += 1;
    }
    assert_eq!(
        hits.keys().cloned().collect::<BTreeSet<_>>(),
        ["10.244.1.11", "10.244.1.12", "10.244.1.13"]
            .map(str::to_owned)
            .into(),
        "{hits:?}"
    );
    // From a pod (prerouting, forward) to a service whose endpoint is on the same link:
    // the hairpin masquerade brings the reply back through the node's conntrack.
    assert_eq!(
        ask(&topology.pods, "10.96.0.10:80").await.unwrap(),
        "10.244.1.10"
    );
    // No endpoints: rejected at once, not left to time out.
    let error = ask(&topology.node, "10.96.0.30:80").await.unwrap_err();
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{error}"
    );

    // Scale api 3 → 1: only its chains change; web's rules keep their handles.
    let before = rule_handles(&topology.node, &table);
    let (services, all_endpoints) = objects(&ips(&["10.244.1.12"]));
    let report = proxy.sync(&services, &all_endpoints, &[]).await.unwrap();
    assert!(!report.full);
    assert_eq!(
        (
            report.chains_added,
            report.chains_changed,
            report.chains_deleted
        ),
        (0, 1, 2),
        "{report:?}"
    );
    let after = rule_handles(&topology.node, &table);
    for (chain, handles) in &before {
        if chain.contains("default/api/") {
            continue;
        }
        assert_eq!(after.get(chain), Some(handles), "{chain} was touched");
    }
    assert_eq!(
        after
            .keys()
            .filter(|name| name.contains("default/api/"))
            .count(),
        2
    );
    for _ in 0..10 {
        assert_eq!(
            ask(&topology.node, "10.96.0.20:443").await.unwrap(),
            "10.244.1.12"
        );
    }

    // Nothing changed: nothing is sent.
    let report = proxy.sync(&services, &all_endpoints, &[]).await.unwrap();
    assert_eq!(report.script_lines, 0);

    // A fresh proxy (agent restart) rewrites the table in place and gets the same rules.
    let mut restarted = ServiceProxy::new(config.clone());
    let report = restarted
        .sync(&services, &all_endpoints, &[])
        .await
        .unwrap();
    assert!(report.full);
    assert_eq!(
        rule_handles(&topology.node, &table)
            .keys()
            .collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        ask(&topology.node, "10.96.0.20:443").await.unwrap(),
        "10.244.1.12"
    );

    ServiceProxy::remove(&config).await.unwrap();
    let tables = topology.node.exec(&["nft", "list", "tables"]);
    assert!(!tables.contains(&table), "{tables}");
    // Removing a missing table is fine.
    ServiceProxy::remove(&config).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_sync_is_retried_in_full() {
    let topology = Topology::new(&[]);
    let mut config = topology.config();
    let mut broken = config.clone();
    broken.nft = vec!["false".to_owned()];
    let (services, all_endpoints) = objects(&ips(&["10.244.1.11"]));
    let mut proxy = ServiceProxy::new(broken);
    assert!(proxy.sync(&services, &all_endpoints, &[]).await.is_err());

    config.nft = topology.node.nft_command();
    let mut proxy = ServiceProxy::new(config.clone());
    proxy.sync(&services, &all_endpoints, &[]).await.unwrap();
    // The kernel loses the table behind the proxy's back; the next incremental sync
    // fails, and the one after it rewrites everything.
    ServiceProxy::remove(&config).await.unwrap();
    let (services, all_endpoints) = objects(&ips(&["10.244.1.12"]));
    assert!(proxy.sync(&services, &all_endpoints, &[]).await.is_err());
    let report = proxy.sync(&services, &all_endpoints, &[]).await.unwrap();
    assert!(report.full);
    let chains = rule_handles(&topology.node, &config.table);
    assert!(
        chains
            .keys()
            .any(|name| name.ends_with("__10.244.1.12/8443"))
    );
}

/// Rule programming time for 1,000 services × 10 endpoints, printed for the benchmark
/// report (`cargo test … -- --nocapture`).
#[tokio::test(flavor = "multi_thread")]
async fn thousand_services_sync_within_budget() {
    let topology = Topology::new(&[]);
    let config = topology.config();
    let (mut services, mut all_endpoints) = benchmark_objects(1000, 10);
    let mut proxy = ServiceProxy::new(config.clone());

    let started = Instant::now();
    let full = proxy.sync(&services, &all_endpoints, &[]).await.unwrap();
    let full_time = started.elapsed();
    assert_eq!((full.service_ports, full.endpoints), (1000, 10_000));

    // One service scales 10 → 9.
    let subset = &mut all_endpoints[500].subsets.as_mut().unwrap()[0];
    subset.addresses.as_mut().unwrap().pop();
    let started = Instant::now();
    let one = proxy.sync(&services, &all_endpoints, &[]).await.unwrap();
    let one_time = started.elapsed();
    assert_eq!((one.chains_changed, one.chains_deleted), (1, 1), "{one:?}");

    // One service is added.
    let (extra_services, extra_endpoints) = benchmark_objects(1001, 10);
    services.push(extra_services[1000].clone());
    all_endpoints.push(extra_endpoints[1000].clone());
    let started = Instant::now();
    let added = proxy.sync(&services, &all_endpoints, &[]).await.unwrap();
    let added_time = started.elapsed();
    assert_eq!(added.chains_added, 11, "{added:?}");

    println!(
        "proxy sync 1000 services x 10 endpoints: full {full_time:?} ({} lines, generate {:?}, nft {:?}); \
         one service scaled: {one_time:?} ({} lines, generate {:?}, nft {:?}); \
         one service added: {added_time:?} ({} lines, generate {:?}, nft {:?})",
        full.script_lines,
        full.generate,
        full.apply,
        one.script_lines,
        one.generate,
        one.apply,
        added.script_lines,
        added.generate,
        added.apply,
    );

    assert!(
        full_time < Duration::from_secs(30),
        "full sync took {full_time:?}"
    );
    assert!(
        one_time < Duration::from_secs(5),
        "incremental sync took {one_time:?}"
    );
}
