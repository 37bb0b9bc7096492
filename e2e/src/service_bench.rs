//! `skiff-bench service`: the service proxy, measured on the real kernel inside a
//! network namespace this benchmark creates (and removes).
//!
//! 1. Rule programming: 1,000 Services × 10 endpoints synced into an empty table (full
//!    sync), then single-service changes (incremental syncs), as the agent does them.
//! 2. Request throughput through a ClusterIP vs straight to the pod address: a node
//!    namespace with the pod bridge, a "server" pod sandbox answering HTTP and a
//!    "client" pod sandbox; each request is a new connection (so every one goes through
//!    the DNAT path, as `ab` without keep-alive does). The peer is the direct path.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use skiff_node_agent::network::proxy::{self, ProxyConfig, ServiceProxy};
use skiff_node_agent::network::{self, NetworkSettings, NodeNetwork};
use skiff_node_agent::runtime::sandbox::Sandbox;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// Services in the big ruleset.
    pub services: usize,
    /// Ready endpoints per service.
    pub endpoints: usize,
    /// Single-service incremental syncs timed.
    pub updates: usize,
    /// Requests per throughput round.
    pub requests: usize,
    /// Concurrent client connections.
    pub concurrency: usize,
    /// Rounds per path (alternating; medians reported).
    pub rounds: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            services: 1000,
            endpoints: 10,
            updates: 50,
            requests: 4000,
            concurrency: 8,
            rounds: 3,
        }
    }
}

/// What was measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// The options measured with.
    pub options: Options,
    /// Full sync of the big ruleset: generation + `nft -f`.
    pub full_sync: Duration,
    /// Lines of the full sync's nft script.
    pub full_script_lines: usize,
    /// Incremental single-service syncs: p50 and max.
    pub update_p50: Duration,
    /// Slowest incremental sync.
    pub update_max: Duration,
    /// Requests per second through the ClusterIP (median of rounds).
    pub cluster_ip_rps: f64,
    /// Requests per second straight to the pod address (median of rounds).
    pub direct_rps: f64,
}

/// Runs the benchmark (root: it creates namespaces, links and nftables rules).
pub async fn bench(options: &Options) -> anyhow::Result<Report> {
    let options = options.clone();
    let scratch = tempfile::tempdir().context("creating a scratch dir")?;
    let node = PinnedNetns::new(&scratch.path().join("node-net"))?;
    let dir = scratch.path().to_owned();
    let result = node.run(move || async move { measure(&options, &dir).await });
    drop(node);
    result
}

async fn measure(options: &Options, dir: &Path) -> anyhow::Result<Report> {
    let table = "skiffbench";
    let pod_cidr: ipnet::Ipv4Net = "10.244.0.0/24".parse()?;
    let mut config = ProxyConfig::new(
        vec![Ipv4Addr::new(10, 77, 0, 10)],
        "10.244.0.0/16".parse()?,
        pod_cidr,
    );
    config.table = table.to_owned();

    // 1. Rule programming.
    eprintln!(
        "service: programming {} services x {} endpoints",
        options.services, options.endpoints
    );
    let (mut services, mut endpoints) =
        proxy::benchmark_objects(options.services, options.endpoints);
    let mut big = ServiceProxy::new(config.clone());
    let started = Instant::now();
    let report = big.sync(&services, &endpoints, &[]).await?;
    let full_sync = started.elapsed();
    let mut updates = Vec::with_capacity(options.updates);
    for round in 0..options.updates {
        // One service loses its last endpoint or gets it back (a scale step).
        let target = &mut endpoints[round % options.services.max(1)];
        let addresses = target
            .subsets
            .as_mut()
            .and_then(|s| s.first_mut())
            .and_then(|s| s.addresses.as_mut())
            .context("benchmark endpoints have addresses")?;
        if round % 2 == 0 {
            addresses.pop();
        } else {
            let mut extra = addresses[0].clone();
            extra.ip = format!("10.244.250.{}", round % 250);
            addresses.push(extra);
        }
        let started = Instant::now();
        big.sync(&services, &endpoints, &[]).await?;
        updates.push(started.elapsed());
    }
    updates.sort();
    services.clear();
    endpoints.clear();
    ServiceProxy::remove(&config).await?;

    // 2. Throughput: ClusterIP vs pod IP.
    eprintln!("service: request throughput, ClusterIP vs pod IP");
    let settings = NetworkSettings {
        pod_cidr,
        cluster_cidr: "10.244.0.0/16".parse()?,
        service_cidr: "10.96.0.0/12".parse()?,
        cluster_domain: "cluster.local".to_owned(),
        node_ip: Ipv4Addr::new(10, 77, 0, 10),
        bridge: network::BRIDGE.to_owned(),
    };
    let net = NodeNetwork::start(settings, dir).await?;
    let server = Sandbox::create(&dir.join("server"), "server", false).await?;
    let client = Sandbox::create(&dir.join("client"), "client", false).await?;
    let server_ns = server.namespace_path("network").context("server netns")?;
    let client_ns = client.namespace_path("network").context("client netns")?;
    let server_ip = net.attach("server", &server_ns).await?;
    net.attach("client", &client_ns).await?;
    let cluster_ip = Ipv4Addr::new(10, 96, 0, 100);
    let (service, service_endpoints) = one_service(cluster_ip, server_ip);
    let mut small = ServiceProxy::new(config.clone());
    small.sync(&[service], &[service_endpoints], &[]).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = serve_http(&server_ns, 8080, stop.clone())?;
    let mut cluster_rounds = Vec::new();
    let mut direct_rounds = Vec::new();
    for _ in 0..options.rounds {
        direct_rounds.push(load(
            &client_ns,
            SocketAddr::from((server_ip, 8080)),
            options,
        )?);
        cluster_rounds.push(load(
            &client_ns,
            SocketAddr::from((cluster_ip, 80)),
            options,
        )?);
    }
    stop.cancel();
    let _ = serving.join();
    ServiceProxy::remove(&config).await?;
    net.detach("server").await?;
    net.detach("client").await?;
    server.remove().await?;
    client.remove().await?;
    network::reset(dir, network::BRIDGE).await?;

    Ok(Report {
        options: options.clone(),
        full_sync,
        full_script_lines: report.script_lines,
        update_p50: updates.get(updates.len() / 2).copied().unwrap_or_default(),
        update_max: updates.last().copied().unwrap_or_default(),
        cluster_ip_rps: median(cluster_rounds),
        direct_rps: median(direct_rounds),
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// A ClusterIP service `bench/web` (80 → 8080) with `pod` as its one endpoint.
fn one_service(
    cluster_ip: Ipv4Addr,
    pod: Ipv4Addr,
) -> (
    k8s_openapi::api::core::v1::Service,
    k8s_openapi::api::core::v1::Endpoints,
) {
    let service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "bench"},
        "spec": {"clusterIP": cluster_ip.to_string(), "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}
    }))
    .unwrap_or_default();
    let endpoints = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "bench"},
        "subsets": [{"addresses": [{"ip": pod.to_string()}], "ports": [{"port": 8080, "protocol": "TCP"}]}]
    }))
    .unwrap_or_default();
    (service, endpoints)
}

/// An HTTP/1.0 responder inside the namespace at `netns`, until `stop`.
fn serve_http(
    netns: &Path,
    port: u16,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let netns = netns.to_owned();
    let (ready, readied) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let run = || -> anyhow::Result<()> {
            enter(&netns)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
                let _ = ready.send(());
                loop {
                    let (mut stream, _) = tokio::select! {
                        () = stop.cancelled() => return Ok(()),
                        accepted = listener.accept() => accepted?,
                    };
                    tokio::spawn(async move {
                        let mut request = [0u8; 1024];
                        let _ = stream.read(&mut request).await;
                        let _ = stream
                            .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                    });
                }
            })
        };
        if let Err(error) = run() {
            eprintln!("service: the bench server failed: {error:#}");
        }
    });
    readied
        .recv_timeout(Duration::from_secs(5))
        .context("the bench server did not start")?;
    Ok(thread)
}

/// Requests/s of `options.requests` new-connection GETs to `target` from inside
/// `netns`, `options.concurrency` at a time.
fn load(netns: &Path, target: SocketAddr, options: &Options) -> anyhow::Result<f64> {
    let netns = netns.to_owned();
    let requests = options.requests;
    let concurrency = options.concurrency.max(1);
    std::thread::spawn(move || -> anyhow::Result<f64> {
        enter(&netns)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let started = Instant::now();
            let mut tasks = Vec::new();
            for worker in 0..concurrency {
                let share = requests / concurrency + usize::from(worker < requests % concurrency);
                tasks.push(tokio::spawn(async move {
                    for _ in 0..share {
                        let mut stream = tokio::net::TcpStream::connect(target).await?;
                        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
                        let mut answer = Vec::new();
                        stream.read_to_end(&mut answer).await?;
                        anyhow::ensure!(answer.ends_with(b"ok"), "bad answer from {target}");
                    }
                    anyhow::Ok(())
                }));
            }
            for task in tasks {
                task.await??;
            }
            Ok(requests as f64 / started.elapsed().as_secs_f64())
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the load thread panicked"))?
}

/// Moves the calling thread into the network namespace at `netns`.
fn enter(netns: &Path) -> anyhow::Result<()> {
    let file =
        std::fs::File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
    Ok(())
}

/// A new network namespace pinned by a bind mount at a path; unmounted on drop.
struct PinnedNetns {
    path: PathBuf,
}

impl PinnedNetns {
    fn new(path: &Path) -> anyhow::Result<Self> {
        let target = path.to_owned();
        std::thread::spawn(move || -> anyhow::Result<()> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare")?;
            std::fs::File::create(&target)?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .context("pinning the namespace")?;
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))??;
        Ok(Self {
            path: path.to_owned(),
        })
    }

    /// Runs `work` on a runtime on a thread inside the namespace.
    fn run<T, F, Fut>(&self, work: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let path = self.path.clone();
        std::thread::spawn(move || -> anyhow::Result<T> {
            enter(&path)?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(work())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the benchmark thread panicked"))?
    }
}

impl Drop for PinnedNetns {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The human-readable table.
pub fn table(report: &Report) -> String {
    let o = &report.options;
    format!(
        "service proxy (nftables, one transaction per sync)\n\
         full sync {} services x {} endpoints   {:>9.1} ms  ({} script lines)\n\
         one-service update p50 / max           {:>9.2} / {:.2} ms  ({} updates)\n\
         requests/s via ClusterIP               {:>9.0}\n\
         requests/s direct to pod IP (peer)     {:>9.0}\n\
         ClusterIP / direct                     {:>9.2}\n",
        o.services,
        o.endpoints,
        report.full_sync.as_secs_f64() * 1e3,
        report.full_script_lines,
        report.update_p50.as_secs_f64() * 1e3,
        report.update_max.as_secs_f64() * 1e3,
        o.updates,
        report.cluster_ip_rps,
        report.direct_rps,
        ratio(report),
    )
}

/// ClusterIP throughput over direct throughput (higher is better; 1.0 = free).
pub fn ratio(report: &Report) -> f64 {
    if report.direct_rps > 0.0 {
        report.cluster_ip_rps / report.direct_rps
    } else {
        0.0
    }
}

/// The `RESULT` line.
pub fn result_line(report: &Report) -> String {
    format!(
        "RESULT service services={} endpoints={} full_sync_ms={:.1} update_p50_ms={:.2} update_max_ms={:.2} cluster_ip_rps={:.0} direct_rps={:.0} vs_peer={:.2}",
        report.options.services,
        report.options.endpoints,
        report.full_sync.as_secs_f64() * 1e3,
        report.update_p50.as_secs_f64() * 1e3,
        report.update_max.as_secs_f64() * 1e3,
        report.cluster_ip_rps,
        report.direct_rps,
        ratio(report),
    )
}

/// The JSON report.
pub fn to_json(report: &Report) -> Value {
    json!({
        "services": report.options.services,
        "endpoints": report.options.endpoints,
        "full_sync_ms": report.full_sync.as_secs_f64() * 1e3,
        "full_script_lines": report.full_script_lines,
        "update_p50_ms": report.update_p50.as_secs_f64() * 1e3,
        "update_max_ms": report.update_max.as_secs_f64() * 1e3,
        "cluster_ip_rps": report.cluster_ip_rps,
        "direct_rps": report.direct_rps,
        "vs_peer": ratio(report),
    })
}
