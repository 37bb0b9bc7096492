//! `skiff-bench api`: the Kubernetes-shaped HTTP API of one `skiff-control-plane`, in
//! one run: pod creation from concurrent clients, LIST as JSON and as a Table, WATCH
//! fan-out of updates to many watchers, and the server's resident memory.
//!
//! Every load is bounded in count and time: each request has a timeout, each phase a
//! deadline, and the watchers are stopped a grace period after the last write.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, Response, StatusCode, header};
use serde_json::Value;
use skiff_pki::KeyPair;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};
use tokio_rustls::rustls;

use crate::netns::{Fabric, Forwarder};
use crate::process::{Process, free_port, on_path, sibling_binary};
use crate::stats::Samples;

/// The namespace every pod of the benchmark lives in.
const NAMESPACE: &str = "default";
/// What `kubectl get` sends to receive a Table.
const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the control plane may take to serve its first LIST.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the watchers may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the watchers may take, after the last write's reply, to see it.
const WATCH_GRACE: Duration = Duration::from_secs(30);
/// Upper bound of each phase; operations not started by then count as errors.
const PHASE_LIMIT: Duration = Duration::from_secs(600);
/// How often the server's memory is sampled during the watch fan-out.
const RSS_INTERVAL: Duration = Duration::from_millis(10);
/// How many error messages the report keeps (the counts are always complete).
const KEPT_PROBLEMS: usize = 20;

/// Workload sizes.
#[derive(Clone, Debug)]
pub struct Options {
    /// Pods created (and then listed).
    pub pods: usize,
    /// Concurrent clients creating them.
    pub clients: usize,
    /// Concurrent watchers of the namespace's pods.
    pub watchers: usize,
    /// Updates made while they watch, one after the other.
    pub updates: usize,
    /// Repeats of each LIST (JSON and Table).
    pub list_repeats: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            pods: 1000,
            clients: 16,
            watchers: 100,
            updates: 200,
            list_repeats: 20,
        }
    }
}

/// How the updates of the watch phase were written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateMethod {
    /// `PATCH` with `application/merge-patch+json`.
    MergePatch,
    /// `GET` then `PUT`, for servers that do not serve PATCH.
    Put,
}

impl UpdateMethod {
    /// Short name for tables and keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::MergePatch => "merge-patch",
            Self::Put => "put",
        }
    }
}

/// What went wrong with the watches, by kind.
#[derive(Clone, Debug, Default)]
pub struct WatchErrors {
    /// (watcher, update) pairs never delivered.
    pub missing: usize,
    /// Deliveries of an update a watcher had already seen.
    pub duplicated: usize,
    /// Deliveries of an update older than one seen before it.
    pub out_of_order: usize,
    /// `ERROR` events, unparsable lines and events of a type other than `MODIFIED`.
    pub unexpected: usize,
    /// Watchers that failed to connect or whose stream broke.
    pub failed_watchers: usize,
}

impl WatchErrors {
    /// All of them.
    pub fn total(&self) -> usize {
        self.missing + self.duplicated + self.out_of_order + self.unexpected + self.failed_watchers
    }
}

/// The figures of one run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The sizes it ran with.
    pub options: Options,
    /// Create latencies (201 replies only) and the phase's duration.
    pub create: Samples,
    /// LIST latencies as JSON.
    pub list: Samples,
    /// Bytes of the last JSON LIST.
    pub list_bytes: usize,
    /// LIST latencies as a Table.
    pub table_list: Samples,
    /// Bytes of the last Table LIST.
    pub table_list_bytes: usize,
    /// How the updates were written.
    pub update_method: UpdateMethod,
    /// Update latencies.
    pub update: Samples,
    /// Delays from each update's reply to its arrival at each watcher.
    pub watch: Samples,
    /// Delays from each update's request to its arrival at each watcher: the events
    /// often arrive before the writer has its reply.
    pub watch_from_send: Samples,
    /// Deliveries that arrived before the writer had the reply (counted as zero delay).
    pub watch_early: usize,
    /// Events of writes not made by the benchmark (another writer in the server).
    pub watch_foreign: usize,
    /// Watchers connected before the first update.
    pub watchers_connected: usize,
    /// What went wrong with the watches.
    pub watch_errors: WatchErrors,
    /// Server RSS in KiB after start.
    pub rss_idle_kib: u64,
    /// Server RSS in KiB after creating the pods.
    pub rss_created_kib: u64,
    /// Peak server RSS in KiB during the watch fan-out.
    pub rss_peak_kib: u64,
    /// Why no peer ran.
    pub peer_note: String,
    /// The first few error messages.
    pub problems: Vec<String>,
}

impl Report {
    /// Errors of every phase.
    pub fn errors(&self) -> usize {
        self.create.errors
            + self.list.errors
            + self.table_list.errors
            + self.update.errors
            + self.watch_errors.total()
    }
}

/// An HTTPS client of the API server, authenticated as the admin.
#[derive(Clone)]
pub(crate) struct Api {
    client: reqwest::Client,
    pub(crate) base: String,
}

/// A complete reply.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

impl Api {
    /// A client of `base` (`https://HOST:PORT`) trusting `ca_pem` and presenting
    /// `identity`'s certificate. It speaks HTTP/1.1 with `TCP_NODELAY` on pooled
    /// connections, as the bench's clients always have.
    pub(crate) fn try_new(base: String, ca_pem: &str, identity: &KeyPair) -> anyhow::Result<Self> {
        let shared = skiff_pki::client_config(ca_pem, Some(identity))?;
        let mut tls = rustls::ClientConfig::clone(&shared);
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .http1_only()
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .context("building the API client")?;
        Ok(Self { client, base })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        accept: &str,
        body: Bytes,
    ) -> reqwest::RequestBuilder {
        let mut builder = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header(header::ACCEPT, accept);
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        builder.body(body)
    }

    /// Sends a request and reads the whole reply, within [`REQUEST_TIMEOUT`].
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        accept: &str,
        body: Bytes,
    ) -> anyhow::Result<Reply> {
        let request = self.request(method.clone(), path, content_type, accept, body);
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, anyhow::Error>(Reply { status, body })
        };
        timeout(REQUEST_TIMEOUT, exchange)
            .await
            .with_context(|| format!("{method} {path} took over {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("{method} {path} failed"))
    }

    /// Sends a request and returns once the reply's head arrived (for watches).
    pub(crate) async fn open(&self, path: &str) -> anyhow::Result<Response<reqwest::Body>> {
        let request = self.request(Method::GET, path, None, "application/json", Bytes::new());
        let response = timeout(REQUEST_TIMEOUT, request.send())
            .await
            .with_context(|| format!("GET {path} took over {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("GET {path} failed"))?;
        Ok(response.into())
    }

    /// Waits until `GET path` answers 200, within [`READY_TIMEOUT`].
    pub(crate) async fn wait_for(&self, path: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let reply = self
                .send(Method::GET, path, None, "application/json", Bytes::new())
                .await;
            match reply {
                Ok(reply) if reply.status == StatusCode::OK => return Ok(()),
                Ok(reply) if Instant::now() > deadline => {
                    bail!("GET {path} never succeeded: {}", describe(&reply))
                }
                Err(error) if Instant::now() > deadline => {
                    return Err(error.context(format!("GET {path} never succeeded")));
                }
                _ => sleep(Duration::from_millis(50)).await,
            }
        }
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

/// A failed reply as one line: status and the start of the body.
fn describe(reply: &Reply) -> String {
    let body = String::from_utf8_lossy(&reply.body);
    let body: String = body.chars().take(200).collect();
    format!("{}: {body}", reply.status)
}

fn pods_path() -> String {
    format!("/api/v1/namespaces/{NAMESPACE}/pods")
}

fn pod_name(idx: usize) -> String {
    format!("bench-{idx}")
}

fn pod_json(idx: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{}","labels":{{"app":"bench"}}}},"spec":{{"containers":[{{"name":"c","image":"127.0.0.1:5055/skiff/httpd:1"}}]}}}}"#,
        pod_name(idx)
    ))
}

/// The resident set size of process `pid`, in KiB.
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .with_context(|| format!("{path} has no VmRSS line"))?;
    line.split_whitespace()
        .nth(1)
        .and_then(|kib| kib.parse().ok())
        .with_context(|| format!("unreadable {line:?} in {path}"))
}

/// A running `skiff-control-plane` and its API's base URL.
pub(crate) struct Server {
    process: Process,
    pub(crate) pid: u32,
    /// The admin's client, on the host (through `forwarder` when the server is in a
    /// fabric).
    pub(crate) api: Api,
    /// The API's URL as nodes see it: the same as `api.base` on the host,
    /// `https://10.77.0.1:PORT` in a fabric.
    pub(crate) server_url: String,
    /// The token node agents join with (the control plane's `agent-token`).
    pub(crate) agent_token: String,
    /// Relays `api.base` into the fabric; `None` on the host.
    _forwarder: Option<Forwarder>,
}

impl Server {
    /// Starts a control plane on the host's loopback.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        Self::start_at(None).await
    }

    /// Starts a control plane inside `fabric` on [`Fabric::IP`]; the client reaches it
    /// through a port forwarded from the host's loopback.
    pub(crate) async fn start_in(fabric: &Fabric) -> anyhow::Result<Self> {
        Self::start_at(Some(fabric)).await
    }

    async fn start_at(fabric: Option<&Fabric>) -> anyhow::Result<Self> {
        let binary = sibling_binary("skiff-control-plane")?;
        let dir = tempfile::tempdir()?;
        let (listen_peer, listen_api) = match fabric {
            Some(fabric) => (
                format!(
                    "127.0.0.1:{}",
                    fabric.ns.free_port(Ipv4Addr::LOCALHOST.into())?
                ),
                format!("{}:{}", Fabric::IP, fabric.ns.free_port(Fabric::IP.into())?),
            ),
            None => (
                format!("127.0.0.1:{}", free_port()?),
                format!("127.0.0.1:{}", free_port()?),
            ),
        };
        let mut args = vec![
            "--data-dir".to_owned(),
            dir.path().display().to_string(),
            "--listen-peer".to_owned(),
            listen_peer,
            "--listen-api".to_owned(),
            listen_api,
        ];
        if fabric.is_some() {
            // Nodes reach the API on the fabric's bridge; the certificate names it (and
            // 127.0.0.1, where the host's forwarder connects).
            args.extend(["--advertise-address".to_owned(), Fabric::IP.to_string()]);
        }
        let mut process = Process::spawn_in(
            fabric.map(|fabric| &fabric.ns),
            "skiff-control-plane",
            &binary,
            &args,
            dir,
        )?;
        let line = process
            .wait_for_line("serving the API on", READY_TIMEOUT)
            .await?;
        // `… serving the API on https://BOUND as https://ADVERTISED`
        let server_url = line
            .rsplit(' ')
            .next()
            .filter(|url| url.starts_with("https://"))
            .with_context(|| format!("no API address in {line:?}"))?
            .to_owned();
        let (base, forwarder) = match fabric {
            Some(fabric) => {
                let target: SocketAddr = server_url
                    .trim_start_matches("https://")
                    .parse()
                    .with_context(|| format!("no API address in {line:?}"))?;
                let forwarder = fabric.ns.forward(target)?;
                // The serving certificate always names 127.0.0.1.
                (format!("https://{}", forwarder.address()), Some(forwarder))
            }
            None => (server_url.clone(), None),
        };
        let data_dir = process.dir.path().to_owned();
        let pki = data_dir.join("pki");
        let ca_path = pki.join("ca.crt");
        let ca_pem = std::fs::read_to_string(&ca_path)
            .with_context(|| format!("reading {}", ca_path.display()))?;
        let admin = KeyPair::load(&pki, "admin").context("loading the admin's certificate")?;
        let token_path = data_dir.join("agent-token");
        let agent_token = std::fs::read_to_string(&token_path)
            .with_context(|| format!("reading {}", token_path.display()))?
            .trim()
            .to_owned();
        let pid = process.pid().context("the control plane exited at once")?;
        Ok(Self {
            process,
            pid,
            api: Api::try_new(base, &ca_pem, &admin)?,
            server_url,
            agent_token,
            _forwarder: forwarder,
        })
    }

    /// Waits until a LIST succeeds (the store has a leader and serves) and agents can
    /// join: the control plane stores its join tokens' Secrets just after it starts
    /// serving.
    pub(crate) async fn wait_ready(&self) -> anyhow::Result<()> {
        self.api.wait_for(&pods_path()).await?;
        self.api
            .wait_for(&bootstrap_token_path(&self.agent_token)?)
            .await
    }
}

/// Where the Secret of bootstrap token `token` (`K10<hash>::<id>.<secret>`) lives.
pub(crate) fn bootstrap_token_path(token: &str) -> anyhow::Result<String> {
    let token = skiff_pki::Token::parse(token).context("an unreadable join token")?;
    Ok(format!(
        "/api/v1/namespaces/kube-system/secrets/bootstrap-token-{}",
        token.id
    ))
}

/// Creates `options.pods` pods from `options.clients` concurrent clients.
async fn create_pods(api: &Api, options: &Options, problems: &mut Problems) -> Samples {
    let next_pod = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + PHASE_LIMIT;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..options.clients {
        let api = api.clone();
        let next_pod = Arc::clone(&next_pod);
        let n_pods = options.pods;
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = Vec::new();
            loop {
                let pod_idx = next_pod.fetch_add(1, Ordering::Relaxed);
                if pod_idx >= n_pods {
                    break;
                }
                if Instant::now() > deadline {
                    failures.push(format!(
                        "create {} not started within {PHASE_LIMIT:?}",
                        pod_name(pod_idx)
                    ));
                    continue;
                }
                let begin = Instant::now();
                let reply = api
                    .send(
                        Method::POST,
                        &pods_path(),
                        Some("application/json"),
                        "application/json",
                        pod_json(pod_idx),
                    )
                    .await;
                match reply {
                    Ok(reply) if reply.status == StatusCode::CREATED => {
                        latencies.push(begin.elapsed());
                    }
                    Ok(reply) => {
                        failures.push(format!(
                            "create {}: {}",
                            pod_name(pod_idx),
                            describe(&reply)
                        ));
                    }
                    Err(error) => failures.push(format!("create {}: {error:#}", pod_name(pod_idx))),
                }
            }
            (latencies, failures)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for (mut task_latencies, failures) in tasks.join_all().await {
        latencies.append(&mut task_latencies);
        errors += failures.len();
        for failure in failures {
            problems.note(failure);
        }
    }
    Samples::new(latencies, started.elapsed(), errors)
}

/// LISTs every pod `repeats` times with `accept`; returns the samples, the last
/// reply's size and the last JSON reply's resourceVersion.
async fn list_pods(
    api: &Api,
    accept: &str,
    options: &Options,
    problems: &mut Problems,
) -> (Samples, usize, Option<String>) {
    let table = accept.contains("as=Table");
    let what = if table { "Table LIST" } else { "LIST" };
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut bytes = 0;
    let mut resource_version = None;
    let started = Instant::now();
    for _ in 0..options.list_repeats {
        let begin = Instant::now();
        let reply = api
            .send(Method::GET, &pods_path(), None, accept, Bytes::new())
            .await;
        let elapsed = begin.elapsed();
        let reply = match reply {
            Ok(reply) if reply.status == StatusCode::OK => reply,
            Ok(reply) => {
                errors += 1;
                problems.note(format!("{what}: {}", describe(&reply)));
                continue;
            }
            Err(error) => {
                errors += 1;
                problems.note(format!("{what}: {error:#}"));
                continue;
            }
        };
        bytes = reply.body.len();
        // Check that the reply is what was asked for and holds every pod.
        let checked = serde_json::from_slice::<Value>(&reply.body)
            .map_err(|e| format!("{what}: reply is not JSON: {e}"))
            .and_then(|list| {
                let (kind, rows) = if table {
                    (list["kind"].as_str(), list["rows"].as_array())
                } else {
                    (list["kind"].as_str(), list["items"].as_array())
                };
                let expected_kind = if table { "Table" } else { "PodList" };
                let count = rows.map_or(0, Vec::len);
                if kind != Some(expected_kind) || count != options.pods {
                    return Err(format!(
                        "{what}: expected a {expected_kind} of {} pods, got a {} of {count}",
                        options.pods,
                        kind.unwrap_or("reply without kind")
                    ));
                }
                Ok(list["metadata"]["resourceVersion"]
                    .as_str()
                    .map(str::to_owned))
            });
        match checked {
            Ok(version) => {
                latencies.push(elapsed);
                if !table {
                    resource_version = version;
                }
            }
            Err(message) => {
                errors += 1;
                problems.note(message);
            }
        }
    }
    (
        Samples::new(latencies, started.elapsed(), errors),
        bytes,
        resource_version,
    )
}

/// One event as a watcher saw it.
struct Delivery {
    arrived: Instant,
    event_type: String,
    resource_version: Option<u64>,
}

/// What one watcher saw, and how its stream ended.
struct WatcherLog {
    deliveries: Vec<Delivery>,
    unparsable: usize,
    failure: Option<String>,
}

/// Watches the namespace's pods from `resource_version` until it sees the event of
/// `last_version` (once known) or `stop` is raised.
async fn watch_pods(
    api: Api,
    resource_version: String,
    connected: mpsc::Sender<()>,
    mut last_version: watch::Receiver<Option<u64>>,
    mut stop: watch::Receiver<bool>,
) -> WatcherLog {
    let mut log = WatcherLog {
        deliveries: Vec::new(),
        unparsable: 0,
        failure: None,
    };
    let path = format!(
        "{}?watch=true&resourceVersion={resource_version}",
        pods_path()
    );
    let streaming = async {
        let response = api.open(&path).await?;
        if response.status() != StatusCode::OK {
            let status = response.status();
            let body = timeout(REQUEST_TIMEOUT, response.into_body().collect())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|body| body.to_bytes())
                .unwrap_or_default();
            bail!("watch: {}", describe(&Reply { status, body }));
        }
        // The bench stops counting connections once it starts writing; a watcher
        // connecting later still catches up from the resourceVersion.
        let _ = connected.send(()).await;
        let mut body = response.into_body();
        let mut buffer: Vec<u8> = Vec::new();
        let mut newest_version: Option<u64> = None;
        loop {
            let last = *last_version.borrow_and_update();
            if last.is_some() && newest_version >= last {
                return Ok(());
            }
            let frame = tokio::select! {
                frame = body.frame() => frame,
                Ok(()) = last_version.changed() => continue,
            };
            let arrived = Instant::now();
            let Some(frame) = frame else {
                bail!("the watch ended before the last update");
            };
            let Ok(data) = frame.context("the watch broke")?.into_data() else {
                continue;
            };
            buffer.extend_from_slice(&data);
            while let Some(newline) = buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=newline).collect();
                match serde_json::from_slice::<Value>(&line) {
                    Ok(event) => {
                        let resource_version = event["object"]["metadata"]["resourceVersion"]
                            .as_str()
                            .and_then(|v| v.parse().ok());
                        newest_version = newest_version.max(resource_version);
                        log.deliveries.push(Delivery {
                            arrived,
                            event_type: event["type"].as_str().unwrap_or_default().to_owned(),
                            resource_version,
                        });
                    }
                    Err(_) => log.unparsable += 1,
                }
            }
        }
    };
    tokio::select! {
        result = streaming => {
            if let Err(error) = result {
                log.failure = Some(format!("{error:#}"));
            }
        }
        _ = stop.wait_for(|stop| *stop) => {}
    }
    log
}

/// One update as the writer made it.
struct Write {
    sent: Instant,
    replied: Instant,
    resource_version: u64,
}

/// Makes `options.updates` updates one after the other, each setting label `gen` of
/// one pod; returns the samples and, per update, its times and revision (`None` when
/// it failed).
async fn update_pods(
    api: &Api,
    options: &Options,
    problems: &mut Problems,
) -> (Samples, UpdateMethod, Vec<Option<Write>>) {
    let mut method = UpdateMethod::MergePatch;
    let mut latencies = Vec::new();
    let mut writes = Vec::with_capacity(options.updates);
    let mut errors = 0;
    let deadline = Instant::now() + PHASE_LIMIT;
    let started = Instant::now();
    for generation in 0..options.updates {
        let name = pod_name(generation % options.pods.max(1));
        let path = format!("{}/{name}", pods_path());
        if Instant::now() > deadline {
            errors += 1;
            problems.note(format!(
                "update {generation} not started within {PHASE_LIMIT:?}"
            ));
            writes.push(None);
            continue;
        }
        let begin = Instant::now();
        let mut reply = update_pod(api, method, &path, generation).await;
        if generation == 0
            && method == UpdateMethod::MergePatch
            && let Ok(refused) = &reply
            && matches!(
                refused.status,
                StatusCode::METHOD_NOT_ALLOWED | StatusCode::UNSUPPORTED_MEDIA_TYPE
            )
        {
            eprintln!(
                "PATCH is not served ({}): updating with PUT",
                refused.status
            );
            method = UpdateMethod::Put;
            reply = update_pod(api, method, &path, generation).await;
        }
        let replied = Instant::now();
        let written = match reply {
            Ok(reply) if reply.status == StatusCode::OK => {
                serde_json::from_slice::<Value>(&reply.body)
                    .ok()
                    .and_then(|pod| {
                        pod["metadata"]["resourceVersion"]
                            .as_str()
                            .and_then(|v| v.parse().ok())
                    })
                    .with_context(|| format!("update of {name}: no resourceVersion in the reply"))
            }
            Ok(reply) => Err(anyhow::anyhow!("update of {name}: {}", describe(&reply))),
            Err(error) => Err(error.context(format!("update of {name}"))),
        };
        match written {
            Ok(resource_version) => {
                latencies.push(replied - begin);
                writes.push(Some(Write {
                    sent: begin,
                    replied,
                    resource_version,
                }));
            }
            Err(error) => {
                errors += 1;
                problems.note(format!("{error:#}"));
                writes.push(None);
            }
        }
    }
    (
        Samples::new(latencies, started.elapsed(), errors),
        method,
        writes,
    )
}

/// Sets label `gen` of the pod at `path`.
async fn update_pod(
    api: &Api,
    method: UpdateMethod,
    path: &str,
    generation: usize,
) -> anyhow::Result<Reply> {
    match method {
        UpdateMethod::MergePatch => {
            let patch = format!(r#"{{"metadata":{{"labels":{{"gen":"{generation}"}}}}}}"#);
            api.send(
                Method::PATCH,
                path,
                Some("application/merge-patch+json"),
                "application/json",
                Bytes::from(patch),
            )
            .await
        }
        UpdateMethod::Put => {
            let current = api
                .send(Method::GET, path, None, "application/json", Bytes::new())
                .await?;
            if current.status != StatusCode::OK {
                return Ok(current);
            }
            let mut pod: Value =
                serde_json::from_slice(&current.body).context("the pod is not JSON")?;
            pod["metadata"]["labels"]["gen"] = Value::String(generation.to_string());
            api.send(
                Method::PUT,
                path,
                Some("application/json"),
                "application/json",
                Bytes::from(serde_json::to_vec(&pod)?),
            )
            .await
        }
    }
}

/// The outcome of the watch phase.
struct FanOut {
    update: Samples,
    update_method: UpdateMethod,
    watch: Samples,
    watch_from_send: Samples,
    early: usize,
    foreign: usize,
    connected: usize,
    errors: WatchErrors,
    rss_peak_kib: u64,
}

/// Opens the watchers, makes the updates, and matches every delivery to its write.
async fn fan_out(
    server: &Server,
    resource_version: &str,
    options: &Options,
    problems: &mut Problems,
) -> anyhow::Result<FanOut> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (last_tx, last_rx) = watch::channel(None);
    let (connected_tx, mut connected_rx) = mpsc::channel(options.watchers.max(1));

    let pid = server.pid;
    let mut sampler_stop = stop_rx.clone();
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        loop {
            peak = peak.max(rss_kib(pid).unwrap_or(0));
            tokio::select! {
                () = sleep(RSS_INTERVAL) => {}
                _ = sampler_stop.wait_for(|stop| *stop) => return peak,
            }
        }
    });

    let mut watchers = JoinSet::new();
    for _ in 0..options.watchers {
        watchers.spawn(watch_pods(
            server.api.clone(),
            resource_version.to_owned(),
            connected_tx.clone(),
            last_rx.clone(),
            stop_rx.clone(),
        ));
    }
    drop(connected_tx);
    let mut connected = 0;
    let connect_deadline = Instant::now() + CONNECT_TIMEOUT;
    while connected < options.watchers {
        match tokio::time::timeout_at(connect_deadline, connected_rx.recv()).await {
            Ok(Some(())) => connected += 1,
            // Every watcher either connected or failed.
            Ok(None) => break,
            Err(_) => {
                eprintln!(
                    "only {connected} of {} watchers connected within {CONNECT_TIMEOUT:?}; writing anyway",
                    options.watchers
                );
                break;
            }
        }
    }
    drop(connected_rx);

    let fan_out_started = Instant::now();
    let (update, update_method, writes) = update_pods(&server.api, options, problems).await;
    let last_version = writes.iter().flatten().map(|w| w.resource_version).max();
    let _ = last_tx.send(last_version.or(Some(0)));

    // The watchers stop on their own once they saw the last write; stop the rest
    // after the grace period.
    let grace = sleep(WATCH_GRACE);
    tokio::pin!(grace);
    let mut logs = Vec::with_capacity(options.watchers);
    loop {
        tokio::select! {
            joined = watchers.join_next() => match joined {
                Some(log) => logs.push(log.context("a watcher panicked")?),
                None => break,
            },
            () = &mut grace, if !*stop_tx.borrow() => {
                eprintln!("stopping the watchers {WATCH_GRACE:?} after the last update");
                let _ = stop_tx.send(true);
            }
        }
    }
    // From the first write to the last delivery (or reply).
    let fan_out_end = logs
        .iter()
        .flat_map(|log| log.deliveries.iter().map(|d| d.arrived))
        .chain(writes.iter().flatten().map(|w| w.replied))
        .max()
        .unwrap_or(fan_out_started);
    let fan_out_elapsed = fan_out_end - fan_out_started;
    let _ = stop_tx.send(true);
    let rss_peak_kib = sampler.await.context("the memory sampler panicked")?;

    let checked = check_deliveries(&logs, &writes, problems);
    Ok(FanOut {
        update,
        update_method,
        watch: Samples::new(checked.from_reply, fan_out_elapsed, checked.errors.total()),
        watch_from_send: Samples::new(checked.from_send, fan_out_elapsed, checked.errors.total()),
        early: checked.early,
        foreign: checked.foreign,
        connected,
        errors: checked.errors,
        rss_peak_kib,
    })
}

/// Every delivery matched to its write.
struct CheckedDeliveries {
    /// Delays from the write's reply (zero when the event came first).
    from_reply: Vec<Duration>,
    /// Delays from the write's request.
    from_send: Vec<Duration>,
    early: usize,
    foreign: usize,
    errors: WatchErrors,
}

/// Matches each watcher's deliveries to the writes by resourceVersion, and checks
/// that every watcher saw every successful write exactly once, in order.
fn check_deliveries(
    logs: &[WatcherLog],
    writes: &[Option<Write>],
    problems: &mut Problems,
) -> CheckedDeliveries {
    let generation_of: HashMap<u64, usize> = writes
        .iter()
        .enumerate()
        .filter_map(|(generation, w)| w.as_ref().map(|w| (w.resource_version, generation)))
        .collect();
    let mut checked = CheckedDeliveries {
        from_reply: Vec::new(),
        from_send: Vec::new(),
        early: 0,
        foreign: 0,
        errors: WatchErrors::default(),
    };
    let errors = &mut checked.errors;
    for (watcher_idx, log) in logs.iter().enumerate() {
        if let Some(failure) = &log.failure {
            errors.failed_watchers += 1;
            problems.note(format!("watcher {watcher_idx}: {failure}"));
        }
        errors.unexpected += log.unparsable;
        let mut seen = HashSet::new();
        let mut newest: Option<usize> = None;
        for delivery in &log.deliveries {
            let write = delivery
                .resource_version
                .and_then(|v| generation_of.get(&v).copied())
                .and_then(|generation| Some((generation, writes[generation].as_ref()?)));
            let Some((generation, write)) = write else {
                // Another writer (a controller, say) changed a pod: not ours to time.
                if delivery.event_type == "MODIFIED" && delivery.resource_version.is_some() {
                    checked.foreign += 1;
                } else {
                    errors.unexpected += 1;
                    problems.note(format!(
                        "watcher {watcher_idx}: unexpected {} event",
                        delivery.event_type
                    ));
                }
                continue;
            };
            if delivery.event_type != "MODIFIED" {
                errors.unexpected += 1;
                problems.note(format!(
                    "watcher {watcher_idx}: update {generation} arrived as {}",
                    delivery.event_type
                ));
            }
            if !seen.insert(generation) {
                errors.duplicated += 1;
                problems.note(format!("watcher {watcher_idx}: update {generation} twice"));
                continue;
            }
            if newest.is_some_and(|newest| generation < newest) {
                errors.out_of_order += 1;
                problems.note(format!(
                    "watcher {watcher_idx}: update {generation} after a later one"
                ));
            }
            newest = newest.max(Some(generation));
            if delivery.arrived < write.replied {
                checked.early += 1;
            }
            checked
                .from_reply
                .push(delivery.arrived.saturating_duration_since(write.replied));
            checked
                .from_send
                .push(delivery.arrived.saturating_duration_since(write.sent));
        }
        let missing = generation_of.len() - seen.len();
        if missing > 0 {
            errors.missing += missing;
            problems.note(format!(
                "watcher {watcher_idx}: {missing} update(s) missing"
            ));
        }
    }
    checked
}

/// Why no peer API server runs next to Skiff.
fn peer_note() -> String {
    match ["kube-apiserver", "k3s"]
        .iter()
        .find_map(|name| on_path(name))
    {
        Some(path) => format!(
            "{} is installed but this bench does not run it yet: Skiff alone",
            path.display()
        ),
        None => "no kube-apiserver or k3s installed: Skiff alone, no vs_peer".to_owned(),
    }
}

/// Runs the whole benchmark, printing progress to stderr.
pub async fn bench(options: &Options) -> anyhow::Result<Report> {
    if options.pods == 0 || options.clients == 0 || options.list_repeats == 0 {
        bail!("--pods, --clients and --list-repeats must be positive");
    }
    let peer_note = peer_note();
    eprintln!("=== api: {peer_note}");
    eprintln!("=== api: starting skiff-control-plane");
    let server = Server::start().await?;
    let result = measure(&server, options, peer_note).await;
    server.process.kill().await;
    result
}

async fn measure(server: &Server, options: &Options, peer_note: String) -> anyhow::Result<Report> {
    server.wait_ready().await?;
    let rss_idle_kib = rss_kib(server.pid)?;
    let mut problems = Problems::default();

    eprintln!(
        "=== api: create {} pods from {} clients",
        options.pods, options.clients
    );
    let create = create_pods(&server.api, options, &mut problems).await;
    let rss_created_kib = rss_kib(server.pid)?;

    eprintln!(
        "=== api: LIST {} pods, {} times as JSON and as a Table",
        options.pods, options.list_repeats
    );
    let (list, list_bytes, resource_version) =
        list_pods(&server.api, "application/json", options, &mut problems).await;
    let (table_list, table_list_bytes, _) =
        list_pods(&server.api, TABLE_ACCEPT, options, &mut problems).await;
    let resource_version = resource_version
        .context("no LIST succeeded, so there is no resourceVersion to watch from")?;

    eprintln!(
        "=== api: {} watchers from resourceVersion {resource_version}, {} updates",
        options.watchers, options.updates
    );
    let fan_out = fan_out(server, &resource_version, options, &mut problems).await?;

    Ok(Report {
        options: options.clone(),
        create,
        list,
        list_bytes,
        table_list,
        table_list_bytes,
        update_method: fan_out.update_method,
        update: fan_out.update,
        watch: fan_out.watch,
        watch_from_send: fan_out.watch_from_send,
        watch_early: fan_out.early,
        watch_foreign: fan_out.foreign,
        watchers_connected: fan_out.connected,
        watch_errors: fan_out.errors,
        rss_idle_kib,
        rss_created_kib,
        rss_peak_kib: fan_out.rss_peak_kib,
        peer_note,
        problems: problems.0,
    })
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[expect(
    clippy::cast_precision_loss,
    reason = "memory sizes are far below 2^52"
)]
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The human-readable table.
pub fn table(report: &Report) -> String {
    let options = &report.options;
    let mut out =
        String::from("PHASE       COUNT      P50_MS   P99_MS    PER_S     BYTES     ERRORS\n");
    let mut row = |phase: &str, count: String, samples: &Samples, bytes: String, errors: usize| {
        let _ = writeln!(
            out,
            "{phase:<11} {count:<10} {:<8.3} {:<9.3} {:<9.0} {bytes:<9} {errors}",
            ms(samples.percentile(0.5)),
            ms(samples.percentile(0.99)),
            samples.ops_per_second(),
        );
    };
    row(
        "create",
        options.pods.to_string(),
        &report.create,
        "-".to_owned(),
        report.create.errors,
    );
    row(
        "list",
        options.list_repeats.to_string(),
        &report.list,
        report.list_bytes.to_string(),
        report.list.errors,
    );
    row(
        "list_table",
        options.list_repeats.to_string(),
        &report.table_list,
        report.table_list_bytes.to_string(),
        report.table_list.errors,
    );
    row(
        "update",
        options.updates.to_string(),
        &report.update,
        "-".to_owned(),
        report.update.errors,
    );
    row(
        "watch",
        format!("{}x{}", options.watchers, options.updates),
        &report.watch,
        "-".to_owned(),
        report.watch_errors.total(),
    );
    row(
        "watch_send",
        format!("{}x{}", options.watchers, options.updates),
        &report.watch_from_send,
        "-".to_owned(),
        report.watch_errors.total(),
    );
    let errors = &report.watch_errors;
    let _ = writeln!(
        out,
        "watch: updates by {}; {} of {} watchers connected before them; missing {}, duplicated {}, \
         out of order {}, unexpected {}, failed watchers {}; {} delivered before the write's \
         reply (counted as 0 ms); {} events of other writers",
        report.update_method.name(),
        report.watchers_connected,
        options.watchers,
        errors.missing,
        errors.duplicated,
        errors.out_of_order,
        errors.unexpected,
        errors.failed_watchers,
        report.watch_early,
        report.watch_foreign,
    );
    let _ = writeln!(
        out,
        "RSS_MB: idle {:.1}, after {} pods {:.1}, peak during the watch fan-out {:.1}",
        mib(report.rss_idle_kib),
        options.pods,
        mib(report.rss_created_kib),
        mib(report.rss_peak_kib),
    );
    let _ = writeln!(out, "peer: {}", report.peer_note);
    for problem in &report.problems {
        let _ = writeln!(out, "error: {problem}");
    }
    out
}

/// The `RESULT api …` line.
pub fn result_line(report: &Report) -> String {
    format!(
        "RESULT api create_per_s={:.0} create_p50_ms={:.3} create_p99_ms={:.3} \
         list_p50_ms={:.3} list_p99_ms={:.3} list_bytes={} table_list_p50_ms={:.3} \
         table_list_p99_ms={:.3} update_p50_ms={:.3} update_p99_ms={:.3} watch_p50_ms={:.3} \
         watch_p99_ms={:.3} watch_send_p50_ms={:.3} watch_send_p99_ms={:.3} rss_idle_mb={:.1} rss_pods_mb={:.1} rss_mb={:.1} errors={}",
        report.create.ops_per_second(),
        ms(report.create.percentile(0.5)),
        ms(report.create.percentile(0.99)),
        ms(report.list.percentile(0.5)),
        ms(report.list.percentile(0.99)),
        report.list_bytes,
        ms(report.table_list.percentile(0.5)),
        ms(report.table_list.percentile(0.99)),
        ms(report.update.percentile(0.5)),
        ms(report.update.percentile(0.99)),
        ms(report.watch.percentile(0.5)),
        ms(report.watch.percentile(0.99)),
        ms(report.watch_from_send.percentile(0.5)),
        ms(report.watch_from_send.percentile(0.99)),
        mib(report.rss_idle_kib),
        mib(report.rss_created_kib),
        mib(report.rss_peak_kib),
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
    let errors = &report.watch_errors;
    serde_json::json!({
        "bench": "api",
        "options": {
            "pods": options.pods, "clients": options.clients, "watchers": options.watchers,
            "updates": options.updates, "list_repeats": options.list_repeats,
        },
        "create": summary(&report.create),
        "list": summary(&report.list),
        "list_bytes": report.list_bytes,
        "table_list": summary(&report.table_list),
        "table_list_bytes": report.table_list_bytes,
        "update_method": report.update_method.name(),
        "update": summary(&report.update),
        "watch": summary(&report.watch),
        "watch_from_send": summary(&report.watch_from_send),
        "watch_errors": {
            "missing": errors.missing, "duplicated": errors.duplicated,
            "out_of_order": errors.out_of_order, "unexpected": errors.unexpected,
            "failed_watchers": errors.failed_watchers,
        },
        "watch_early": report.watch_early,
        "watch_foreign": report.watch_foreign,
        "watchers_connected": report.watchers_connected,
        "rss_mb": {
            "idle": mib(report.rss_idle_kib),
            "after_create": mib(report.rss_created_kib),
            "peak_watch": mib(report.rss_peak_kib),
        },
        "peer": report.peer_note,
        "errors": report.errors(),
        "problems": report.problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks one watcher that saw the events `seen` (type, resourceVersion) of writes
    /// at revisions 10, 11 and 12: `expected` is (missing, duplicated, out of order,
    /// unexpected, foreign, timed deliveries).
    fn check(seen: &[(&str, u64)], expected: (usize, usize, usize, usize, usize, usize)) {
        let start = Instant::now();
        let writes: Vec<Option<Write>> = (10..13)
            .map(|resource_version| {
                Some(Write {
                    sent: start,
                    replied: start,
                    resource_version,
                })
            })
            .collect();
        let log = WatcherLog {
            deliveries: seen
                .iter()
                .map(|(event_type, resource_version)| Delivery {
                    arrived: start + Duration::from_millis(1),
                    event_type: (*event_type).to_owned(),
                    resource_version: Some(*resource_version),
                })
                .collect(),
            unparsable: 0,
            failure: None,
        };
        let checked = check_deliveries(&[log], &writes, &mut Problems::default());
        let errors = &checked.errors;
        assert_eq!(
            (
                errors.missing,
                errors.duplicated,
                errors.out_of_order,
                errors.unexpected,
                checked.foreign,
                checked.from_reply.len(),
            ),
            expected,
            "{seen:?}"
        );
    }

    #[test]
    fn deliveries_are_matched_to_writes() {
        let m = "MODIFIED";
        check(&[(m, 10), (m, 11), (m, 12)], (0, 0, 0, 0, 0, 3));
        check(&[(m, 10), (m, 12)], (1, 0, 0, 0, 0, 2));
        check(&[(m, 10), (m, 10), (m, 11), (m, 12)], (0, 1, 0, 0, 0, 3));
        check(&[(m, 11), (m, 10), (m, 12)], (0, 0, 1, 0, 0, 3));
        check(&[(m, 10), (m, 99), (m, 11), (m, 12)], (0, 0, 0, 0, 1, 3));
        check(&[("ADDED", 10), (m, 11), (m, 12)], (0, 0, 0, 1, 0, 3));
        check(&[("ERROR", 0)], (3, 0, 0, 1, 0, 0));
    }
}
