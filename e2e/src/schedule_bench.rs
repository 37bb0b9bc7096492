//! `skiff-bench schedule`: the scheduler inside one `skiff-control-plane`, placing many
//! pods on many hollow nodes (Node objects no agent runs), as kube-scheduler's
//! `scheduler_perf` does with fake nodes.
//!
//! The nodes are created through the API (Ready, 32 CPUs, 128 GiB, 110 pods), then the
//! pods (small requests, no node) from concurrent clients, while one WATCH on the pods
//! records when each one's `spec.nodeName` appears. Throughput is bound pods over the
//! time from the first create to the last binding; latency is per pod, from its create
//! request to its binding showing in the watch.
//!
//! Every phase has a deadline and every request a timeout, so the run is bounded.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};

use crate::api_bench::{Api, Reply, Server, rss_kib};
use crate::stats::Samples;

/// The namespace of the benchmark's pods.
const NAMESPACE: &str = "default";
/// Prefix of the pods' names (`sched-<index>`).
const POD_PREFIX: &str = "sched-";
/// Upper bound of the node creation phase.
const NODE_PHASE_LIMIT: Duration = Duration::from_secs(300);
/// Upper bound of the pod creation phase.
const CREATE_PHASE_LIMIT: Duration = Duration::from_secs(600);
/// How long after the last create every pod may take to be bound.
const BIND_GRACE: Duration = Duration::from_secs(120);
/// How many error messages the report keeps.
const KEPT_PROBLEMS: usize = 20;
/// The floor this benchmark holds the scheduler to, in pods per second.
pub const FLOOR_PODS_PER_S: f64 = 1000.0;
/// The reference peer figure: kube-scheduler's own `scheduler_perf` density tests hold
/// 680–1,100 pods/s with 5,000–15,000 fake nodes (no kube-scheduler runs here).
pub const PEER_REFERENCE: &str = "kube-scheduler scheduler_perf: 680-1100 pods/s with 5000-15000 fake nodes (reference, not run here)";

/// Workload sizes.
#[derive(Clone, Debug)]
pub struct Options {
    /// Hollow nodes created.
    pub nodes: usize,
    /// Pods created and placed.
    pub pods: usize,
    /// Concurrent clients creating nodes and pods.
    pub clients: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nodes: 1000,
            pods: 30_000,
            clients: 32,
        }
    }
}

/// The figures of one run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The sizes it ran with.
    pub options: Options,
    /// Node create latencies and the phase's duration.
    pub node_create: Samples,
    /// Pod create latencies and the phase's duration.
    pub pod_create: Samples,
    /// Per pod, create request → binding seen in the watch; elapsed is first create →
    /// last binding.
    pub bound: Samples,
    /// Pods never seen bound.
    pub unbound: usize,
    /// Server RSS in KiB once every pod is bound.
    pub rss_kib: u64,
    /// The first few error messages.
    pub problems: Vec<String>,
}

impl Report {
    /// Pods bound per second, first create to last binding.
    pub fn pods_per_second(&self) -> f64 {
        self.bound.ops_per_second()
    }

    /// Every failure: create errors and pods never bound.
    pub fn errors(&self) -> usize {
        self.node_create.errors + self.pod_create.errors + self.unbound
    }
}

/// Error messages, kept up to [`KEPT_PROBLEMS`].
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn note(&mut self, message: String) {
        if self.0.len() < KEPT_PROBLEMS {
            eprintln!("error: {message}");
            self.0.push(message);
        }
    }
}

fn describe(reply: &Reply) -> String {
    let body = String::from_utf8_lossy(&reply.body);
    let body: String = body.chars().take(200).collect();
    format!("{}: {body}", reply.status)
}

fn node_name(idx: usize) -> String {
    format!("hollow-{idx}")
}

fn node_json(idx: usize) -> Bytes {
    let name = node_name(idx);
    Bytes::from(
        serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "skiff.dev/hollow": "true"}},
            "spec": {"providerID": format!("hollow://{name}")},
            "status": node_status(),
        })
        .to_string(),
    )
}

fn node_status() -> Value {
    let resources = serde_json::json!({"cpu": "32", "memory": "128Gi", "pods": "110"});
    serde_json::json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [{"type": "Ready", "status": "True", "reason": "HollowReady", "message": "hollow node"}],
    })
}

fn pod_json(idx: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{POD_PREFIX}{idx}","labels":{{"app":"schedule-bench"}}}},"spec":{{"containers":[{{"name":"c","image":"registry.invalid/pause:1","resources":{{"requests":{{"cpu":"10m","memory":"16Mi"}}}}}}]}}}}"#
    ))
}

/// Runs `count` requests from `clients` concurrent clients until `deadline`;
/// `request(idx)` sends the idx-th and returns its reply. Returns per-request start times
/// (`None` if not sent or failed), the latencies, and the failures.
async fn run_clients<F, Fut>(
    count: usize,
    clients: usize,
    deadline: Instant,
    expected: StatusCode,
    request: F,
) -> (Vec<Option<Instant>>, Samples, Vec<String>)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<Reply>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let next = Arc::clone(&next);
        let request = request.clone();
        tasks.spawn(async move {
            let mut sent = Vec::new();
            let mut failures = Vec::new();
            loop {
                let idx = next.fetch_add(1, Ordering::Relaxed);
                if idx >= count {
                    break;
                }
                if Instant::now() > deadline {
                    failures.push(format!("request {idx} not started before the deadline"));
                    continue;
                }
                let begin = Instant::now();
                match request(idx).await {
                    Ok(reply) if reply.status == expected => {
                        sent.push((idx, begin, begin.elapsed()))
                    }
                    Ok(reply) => failures.push(format!("request {idx}: {}", describe(&reply))),
                    Err(error) => failures.push(format!("request {idx}: {error:#}")),
                }
            }
            (sent, failures)
        });
    }
    let mut starts = vec![None; count];
    let mut latencies = Vec::with_capacity(count);
    let mut all_failures = Vec::new();
    for (sent, mut failures) in tasks.join_all().await {
        for (idx, begin, latency) in sent {
            starts[idx] = Some(begin);
            latencies.push(latency);
        }
        all_failures.append(&mut failures);
    }
    let errors = all_failures.len();
    (
        starts,
        Samples::new(latencies, started.elapsed(), errors),
        all_failures,
    )
}

/// Creates the hollow nodes; fixes their status with `PUT …/status` if the create
/// dropped it.
async fn create_nodes(api: &Api, options: &Options, problems: &mut Problems) -> Samples {
    let deadline = Instant::now() + NODE_PHASE_LIMIT;
    let api_for_clients = api.clone();
    let (_, samples, failures) = run_clients(
        options.nodes,
        options.clients,
        deadline,
        StatusCode::CREATED,
        move |idx| {
            let api = api_for_clients.clone();
            async move {
                let reply = api
                    .send(
                        Method::POST,
                        "/api/v1/nodes",
                        Some("application/json"),
                        "application/json",
                        node_json(idx),
                    )
                    .await?;
                if reply.status != StatusCode::CREATED {
                    return Ok(reply);
                }
                let created: Value =
                    serde_json::from_slice(&reply.body).context("the created node is not JSON")?;
                if created["status"]["conditions"].is_array() {
                    return Ok(reply);
                }
                // The create reset the status: write it through /status.
                let mut node = created;
                node["status"] = node_status();
                let status = api
                    .send(
                        Method::PUT,
                        &format!("/api/v1/nodes/{}/status", node_name(idx)),
                        Some("application/json"),
                        "application/json",
                        Bytes::from(node.to_string()),
                    )
                    .await?;
                Ok(Reply {
                    status: if status.status == StatusCode::OK {
                        StatusCode::CREATED
                    } else {
                        status.status
                    },
                    body: status.body,
                })
            }
        },
    )
    .await;
    for failure in failures {
        problems.note(format!("node {failure}"));
    }
    samples
}

/// Watches the namespace's pods from `resource_version` and records when each
/// benchmark pod's `spec.nodeName` first appears, until all `pods` are bound or `stop`
/// is raised.
async fn watch_bindings(
    api: Api,
    resource_version: String,
    pods: usize,
    mut stop: watch::Receiver<bool>,
) -> (Vec<Option<Instant>>, Option<String>) {
    let mut bound: Vec<Option<Instant>> = vec![None; pods];
    let path = format!(
        "/api/v1/namespaces/{NAMESPACE}/pods?watch=true&resourceVersion={resource_version}"
    );
    let mut seen = 0;
    let streaming = async {
        let response = api.open(&path).await?;
        if response.status() != StatusCode::OK {
            bail!("watch: {}", response.status());
        }
        let mut body = response.into_body();
        let mut buffer: Vec<u8> = Vec::new();
        while seen < pods {
            let Some(frame) = body.frame().await else {
                bail!("the watch ended with {seen} of {pods} pods bound");
            };
            let arrived = Instant::now();
            let Ok(data) = frame.context("the watch broke")?.into_data() else {
                continue;
            };
            buffer.extend_from_slice(&data);
            let mut consumed = 0;
            while let Some(newline) = buffer[consumed..].iter().position(|&b| b == b'\n') {
                let line = &buffer[consumed..consumed + newline];
                consumed += newline + 1;
                // Only events of bound pods matter; skip parsing the rest.
                if !contains(line, b"\"nodeName\"") {
                    continue;
                }
                let Ok(event) = serde_json::from_slice::<Value>(line) else {
                    continue;
                };
                let object = &event["object"];
                let bound_to = object["spec"]["nodeName"].as_str().unwrap_or_default();
                let idx = object["metadata"]["name"]
                    .as_str()
                    .and_then(|name| name.strip_prefix(POD_PREFIX))
                    .and_then(|idx| idx.parse::<usize>().ok());
                if let Some(slot) = idx.and_then(|idx| bound.get_mut(idx))
                    && !bound_to.is_empty()
                    && slot.is_none()
                {
                    *slot = Some(arrived);
                    seen += 1;
                }
            }
            buffer.drain(..consumed);
        }
        Ok(())
    };
    let failure = tokio::select! {
        result = streaming => result.err().map(|e| format!("{e:#}")),
        _ = stop.wait_for(|stop| *stop) => None,
    };
    (bound, failure)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Runs the whole benchmark, printing progress to stderr.
pub async fn bench(options: &Options) -> anyhow::Result<Report> {
    if options.nodes == 0 || options.pods == 0 || options.clients == 0 {
        bail!("--nodes, --pods and --clients must be positive");
    }
    eprintln!("=== schedule: peer: {PEER_REFERENCE}");
    eprintln!("=== schedule: starting skiff-control-plane");
    let server = Server::start().await?;
    let result = measure(&server, options).await;
    drop(server);
    result
}

async fn measure(server: &Server, options: &Options) -> anyhow::Result<Report> {
    server.wait_ready().await?;
    let api = &server.api;
    let mut problems = Problems::default();

    eprintln!(
        "=== schedule: create {} hollow nodes from {} clients",
        options.nodes, options.clients
    );
    let node_create = create_nodes(api, options, &mut problems).await;

    let pods_path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    let list = api
        .send(
            Method::GET,
            &pods_path,
            None,
            "application/json",
            Bytes::new(),
        )
        .await?;
    if list.status != StatusCode::OK {
        bail!("LIST pods: {}", describe(&list));
    }
    let list: Value = serde_json::from_slice(&list.body).context("the pod list is not JSON")?;
    let resource_version = list["metadata"]["resourceVersion"]
        .as_str()
        .context("the pod list has no resourceVersion")?
        .to_owned();
    let (stop_tx, stop_rx) = watch::channel(false);
    let watcher = tokio::spawn(watch_bindings(
        api.clone(),
        resource_version,
        options.pods,
        stop_rx,
    ));

    eprintln!(
        "=== schedule: create {} pods from {} clients, watching for their bindings",
        options.pods, options.clients
    );
    let create_deadline = Instant::now() + CREATE_PHASE_LIMIT;
    let api_for_clients = api.clone();
    let path = pods_path.clone();
    let (sent, pod_create, failures) = run_clients(
        options.pods,
        options.clients,
        create_deadline,
        StatusCode::CREATED,
        move |idx| {
            let api = api_for_clients.clone();
            let path = path.clone();
            async move {
                api.send(
                    Method::POST,
                    &path,
                    Some("application/json"),
                    "application/json",
                    pod_json(idx),
                )
                .await
            }
        },
    )
    .await;
    for failure in failures {
        problems.note(format!("pod {failure}"));
    }
    eprintln!(
        "=== schedule: pods created in {:.1} s; waiting up to {BIND_GRACE:?} for the last bindings",
        pod_create.elapsed.as_secs_f64()
    );

    let watcher = async {
        let mut watcher = watcher;
        match timeout_at(Instant::now() + BIND_GRACE, &mut watcher).await {
            Ok(joined) => joined,
            Err(_) => {
                let _ = stop_tx.send(true);
                watcher.await
            }
        }
    };
    let (bound_at, failure) = watcher.await.context("the watcher panicked")?;
    if let Some(failure) = failure {
        problems.note(failure);
    }
    let rss_kib = rss_kib(server.pid).unwrap_or(0);

    let first_sent = sent.iter().flatten().min().copied();
    let last_bound = bound_at.iter().flatten().max().copied();
    let mut latencies = Vec::with_capacity(options.pods);
    let mut unbound = 0;
    for (sent, bound) in sent.iter().zip(&bound_at) {
        match (sent, bound) {
            (Some(sent), Some(bound)) => latencies.push(bound.saturating_duration_since(*sent)),
            (Some(_), None) => unbound += 1,
            // Never created: counted as a create error already.
            (None, _) => {}
        }
    }
    if unbound > 0 {
        problems.note(format!("{unbound} created pods were never seen bound"));
    }
    let elapsed = match (first_sent, last_bound) {
        (Some(first), Some(last)) => last.saturating_duration_since(first),
        _ => Duration::ZERO,
    };
    Ok(Report {
        options: options.clone(),
        node_create,
        pod_create,
        bound: Samples::new(latencies, elapsed, unbound),
        unbound,
        rss_kib,
        problems: problems.0,
    })
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The human-readable table.
pub fn table(report: &Report) -> String {
    let options = &report.options;
    let mut out =
        String::from("PHASE          COUNT    P50_MS    P99_MS     PER_S     WALL_S   ERRORS\n");
    let mut row = |phase: &str, count: usize, samples: &Samples, errors: usize| {
        let _ = writeln!(
            out,
            "{phase:<14} {count:<8} {:<9.1} {:<10.1} {:<9.0} {:<8.2} {errors}",
            ms(samples.percentile(0.5)),
            ms(samples.percentile(0.99)),
            samples.ops_per_second(),
            samples.elapsed.as_secs_f64(),
        );
    };
    row(
        "node_create",
        options.nodes,
        &report.node_create,
        report.node_create.errors,
    );
    row(
        "pod_create",
        options.pods,
        &report.pod_create,
        report.pod_create.errors,
    );
    row("create→bound", options.pods, &report.bound, report.unbound);
    let _ = writeln!(
        out,
        "schedule: {:.0} pods/s (first create → last binding, {:.2} s for all {} pods on {} nodes, {} clients); floor {FLOOR_PODS_PER_S:.0} pods/s: {}",
        report.pods_per_second(),
        report.bound.elapsed.as_secs_f64(),
        options.pods,
        options.nodes,
        options.clients,
        if report.pods_per_second() >= FLOOR_PODS_PER_S && report.unbound == 0 {
            "met"
        } else {
            "NOT met"
        },
    );
    #[expect(
        clippy::cast_precision_loss,
        reason = "memory sizes are far below 2^52"
    )]
    let rss_mb = report.rss_kib as f64 / 1024.0;
    let _ = writeln!(out, "RSS_MB: control plane after the run {rss_mb:.1}");
    let _ = writeln!(out, "peer: {PEER_REFERENCE}");
    for problem in &report.problems {
        let _ = writeln!(out, "error: {problem}");
    }
    out
}

/// The `RESULT schedule …` line.
pub fn result_line(report: &Report) -> String {
    format!(
        "RESULT schedule pods_per_s={:.0} p50_ms={:.1} p99_ms={:.1} nodes={} pods={} all_bound_s={:.2} create_per_s={:.0} errors={}",
        report.pods_per_second(),
        ms(report.bound.percentile(0.5)),
        ms(report.bound.percentile(0.99)),
        report.options.nodes,
        report.options.pods,
        report.bound.elapsed.as_secs_f64(),
        report.pod_create.ops_per_second(),
        report.errors(),
    )
}

/// The report as JSON, for `--json`.
pub fn to_json(report: &Report) -> Value {
    let summary = |samples: &Samples| {
        serde_json::json!({
            "p50_ms": ms(samples.percentile(0.5)),
            "p99_ms": ms(samples.percentile(0.99)),
            "per_second": samples.ops_per_second(),
            "elapsed_s": samples.elapsed.as_secs_f64(),
            "errors": samples.errors,
        })
    };
    let options = &report.options;
    serde_json::json!({
        "bench": "schedule",
        "options": {"nodes": options.nodes, "pods": options.pods, "clients": options.clients},
        "node_create": summary(&report.node_create),
        "pod_create": summary(&report.pod_create),
        "create_to_bound": summary(&report.bound),
        "pods_per_second": report.pods_per_second(),
        "floor_pods_per_second": FLOOR_PODS_PER_S,
        "unbound": report.unbound,
        "rss_mb": report.rss_kib / 1024,
        "peer_reference": PEER_REFERENCE,
        "errors": report.errors(),
        "problems": report.problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_are_valid_json() {
        let pod: Value = serde_json::from_slice(&pod_json(7)).unwrap();
        assert_eq!(pod["metadata"]["name"], "sched-7");
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "10m"
        );
        let node: Value = serde_json::from_slice(&node_json(3)).unwrap();
        assert_eq!(node["metadata"]["name"], "hollow-3");
        assert_eq!(node["status"]["allocatable"]["pods"], "110");
        assert!(contains(br#"{"nodeName":"x"}"#, b"\"nodeName\""));
        assert!(!contains(b"{}", b"\"nodeName\""));
    }
}
