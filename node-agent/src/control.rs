//! The agent's side of the control plane's `Node` service: the Node object it registers
//! (capacity, addresses, conditions, nodeInfo, daemon endpoint), heartbeats, the watch
//! of the pods bound to it, and status reports; and the ordered failover between the
//! `--server` URLs (mTLS with the node's certificate for `https://`).

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo, Pod, PodStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use skiff_proto::node::node_client::NodeClient;
use skiff_proto::node::{
    HeartbeatRequest, ObjectEvent, PodRef, PodStatusReport, RegisterRequest, WatchObjectsRequest,
    WatchPodsRequest, object_event,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity as TlsIdentity};

use crate::bootstrap::Credentials;
use crate::pods::{PodManager, ReportFuture, StatusSink};
use crate::runtime::container::timestamp;

/// What the agent says about itself when it registers.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    /// The node's name.
    pub name: String,
    /// Its IP.
    pub ip: IpAddr,
    /// The port the agent's gRPC service listens on.
    pub port: u16,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
}

/// The agent's version, as `kubeletVersion` (`kubectl get nodes` shows it).
pub const VERSION: &str = concat!("v1.32.0-skiff.", env!("CARGO_PKG_VERSION"));

/// The Node object the agent registers: capacity from the machine, InternalIP and
/// Hostname addresses, Ready and the pressure conditions, nodeInfo and the daemon
/// endpoint the control plane reaches the agent on.
pub fn node_object(identity: &NodeIdentity, data_dir: &Path) -> Node {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_owned(), identity.name.clone()),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("kubernetes.io/arch".to_owned(), arch.to_owned()),
        ("beta.kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("beta.kubernetes.io/arch".to_owned(), arch.to_owned()),
    ]);
    labels.extend(identity.labels.clone());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory_kib = meminfo_kib("MemTotal").unwrap_or(0);
    let storage = nix::sys::statvfs::statvfs(data_dir)
        .map(|s| s.blocks() * s.fragment_size())
        .unwrap_or(0);
    let capacity = BTreeMap::from([
        ("cpu".to_owned(), Quantity(cpus.to_string())),
        ("memory".to_owned(), Quantity(format!("{memory_kib}Ki"))),
        ("pods".to_owned(), Quantity("110".to_owned())),
        (
            "ephemeral-storage".to_owned(),
            Quantity(storage.to_string()),
        ),
    ]);
    let uname = nix::sys::utsname::uname().ok();
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let os_image = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "Linux".to_owned());
    Node {
        metadata: ObjectMeta {
            name: Some(identity.name.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(NodeStatus {
            allocatable: Some(capacity.clone()),
            capacity: Some(capacity),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".to_owned(),
                    address: identity.ip.to_string(),
                },
                NodeAddress {
                    type_: "Hostname".to_owned(),
                    address: identity.name.clone(),
                },
            ]),
            conditions: Some(conditions()),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: i32::from(identity.port),
                }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: arch.to_owned(),
                boot_id: read("/proc/sys/kernel/random/boot_id"),
                container_runtime_version: concat!("skiff://", env!("CARGO_PKG_VERSION"))
                    .to_owned(),
                kernel_version: uname
                    .as_ref()
                    .map(|u| u.release().to_string_lossy().into_owned())
                    .unwrap_or_default(),
                kube_proxy_version: String::new(),
                kubelet_version: VERSION.to_owned(),
                machine_id: read("/etc/machine-id"),
                operating_system: "linux".to_owned(),
                os_image,
                system_uuid: read("/sys/class/dmi/id/product_uuid"),
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        }),
    }
}

/// A `/proc/meminfo` field in KiB.
fn meminfo_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// The node's conditions now: Ready, and no memory, disk or PID pressure.
pub fn conditions() -> Vec<NodeCondition> {
    let now = Some(Time(timestamp(std::time::SystemTime::now())));
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: now.clone(),
        last_transition_time: now.clone(),
    };
    vec![
        condition(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        condition(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        condition(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        condition(
            "Ready",
            "True",
            "KubeletReady",
            "skiff-node-agent is posting ready status",
        ),
    ]
}

/// The local address this host uses to reach `server` (`https://HOST:PORT`).
pub fn local_ip_towards(server: &str) -> Option<IpAddr> {
    let authority = server.split("://").nth(1).unwrap_or(server);
    let host_port = authority.split('/').next()?;
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    let target = std::net::ToSocketAddrs::to_socket_addrs(host_port)
        .ok()?
        .next()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// What `Register` answered.
#[derive(Clone, Debug)]
pub struct Registration {
    /// The Node as stored (with `spec.podCIDR`).
    pub node: Node,
    /// How often to heartbeat.
    pub heartbeat_interval: Duration,
    /// The cluster's pod network.
    pub cluster_cidr: String,
    /// The ClusterIP range.
    pub service_cidr: String,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
}

/// How long connecting to one server may take before the agent moves on to the next.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors in the control plane's settings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `--server` was given.
    #[error("--server is required (the control plane's URL, e.g. https://10.0.0.1:6443)")]
    NoServers,
    /// A `--server` value is not an `http(s)://HOST:PORT` URL.
    #[error("--server {url:?}: {reason}")]
    InvalidServer {
        /// The value as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Both `http://` and `https://` servers were given.
    #[error("--server: {first} and {other} mix http:// and https:// (use https:// everywhere)")]
    MixedSchemes {
        /// The first server.
        first: String,
        /// The first one with the other scheme.
        other: String,
    },
    /// An `https://` server without the node's TLS credentials.
    #[error("{url}: https:// needs the node's TLS credentials (join with --token first)")]
    NoCredentials {
        /// The server.
        url: String,
    },
    /// tonic refused the endpoint or its TLS settings.
    #[error("--server {url}: {source}")]
    Endpoint {
        /// The server.
        url: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
}

/// The `--server` values (each repeatable and comma separated) as the ordered list of
/// control plane URLs the agent fails over between: blanks dropped, trailing slashes
/// removed, duplicates dropped (the first one keeps its place). Every URL must be
/// `https://HOST:PORT` (production) or, for in-process tests, `http://HOST:PORT`;
/// one list never mixes the two.
pub fn parse_servers(values: &[String]) -> Result<Vec<String>, Error> {
    let mut servers: Vec<String> = Vec::new();
    for value in values.iter().flat_map(|value| value.split(',')) {
        let url = value.trim().trim_end_matches('/');
        if url.is_empty() {
            continue;
        }
        let invalid = |reason: &str| Error::InvalidServer {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: tonic::codegen::http::Uri = url
            .parse()
            .map_err(|_| invalid("not a URL (expected https://HOST:PORT)"))?;
        if !matches!(uri.scheme_str(), Some("https" | "http")) {
            return Err(invalid(
                "the scheme must be https:// (or http:// without TLS)",
            ));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("a host is required (expected https://HOST:PORT)"));
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(invalid(
                "a path is not allowed (expected https://HOST:PORT)",
            ));
        }
        if let Some(first) = servers.first()
            && is_https(first) != is_https(url)
        {
            return Err(Error::MixedSchemes {
                first: first.clone(),
                other: url.to_owned(),
            });
        }
        if !servers.iter().any(|known| known == url) {
            servers.push(url.to_owned());
        }
    }
    if servers.is_empty() {
        return Err(Error::NoServers);
    }
    Ok(servers)
}

/// Whether `url` is an `https://` URL (the agent then speaks mTLS).
pub fn is_https(url: &str) -> bool {
    url.starts_with("https://")
}

/// Whether a failed call says the server could not be reached (connection refused or
/// reset, connect timeout, the server going away): the agent then moves on to the next
/// server. Statuses a server sent (NotFound, PermissionDenied, ...) are answers, not
/// reasons to fail over, except `UNAVAILABLE`.
pub fn is_connection_failure(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => true,
        // A status made from a local error (rather than sent by the server) carries it
        // as its source: a broken HTTP/2 connection shows up this way.
        tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::Internal => {
            std::error::Error::source(status).is_some()
        }
        _ => false,
    }
}

/// The control plane, as the agent talks to it: one server at a time, in the order
/// given, moving on to the next when a connection fails. Every call (Register,
/// Heartbeat, WatchPods, WatchObjects, ReportPodStatus, FinishPodDeletion) goes through
/// the current server's channel.
#[derive(Clone)]
pub struct ControlPlane {
    servers: Arc<Servers>,
    node_name: String,
}

/// The servers and the one in use.
struct Servers {
    /// The URLs and their endpoints, in failover order.
    endpoints: Vec<(String, Endpoint)>,
    /// The server in use; the lock is never held across an await.
    current: Mutex<Current>,
}

/// The server in use.
struct Current {
    /// Its index in `Servers::endpoints`.
    index: usize,
    /// Counts failovers, so that several calls failing on the same channel move on
    /// only once.
    generation: u64,
    /// A client on its (lazily connected, self-reconnecting) channel.
    client: NodeClient<Channel>,
}

impl Servers {
    /// The client in use and its generation.
    fn current(&self) -> (u64, NodeClient<Channel>) {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        (current.generation, current.client.clone())
    }

    /// Moves on to the next server after a connection failure on the channel of
    /// `generation` (unless another call already did).
    fn fail_over(&self, generation: u64, status: &tonic::Status) {
        if self.endpoints.len() < 2 {
            // The lone channel reconnects by itself.
            return;
        }
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.generation != generation {
            return;
        }
        let from = current.index;
        current.index = (from + 1) % self.endpoints.len();
        current.generation += 1;
        let (url, endpoint) = &self.endpoints[current.index];
        current.client = NodeClient::new(endpoint.connect_lazy());
        tracing::warn!(
            from = %self.endpoints[from].0,
            to = %url,
            error = %status.message(),
            "the control plane is unreachable; failing over"
        );
    }

    /// The URL in use.
    fn url(&self) -> String {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        self.endpoints[current.index].0.clone()
    }
}

/// A lazily connecting endpoint for `url`, over mTLS with `credentials` when it is
/// `https://`.
fn endpoint(url: &str, credentials: Option<&Credentials>) -> Result<Endpoint, Error> {
    let invalid = |source| Error::Endpoint {
        url: url.to_owned(),
        source,
    };
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(invalid)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        // Notices a server that vanished without closing its connections (a crashed
        // host) within 15 s, so the watches fail over.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    if is_https(url) {
        let credentials = credentials.ok_or_else(|| Error::NoCredentials {
            url: url.to_owned(),
        })?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&credentials.ca_pem))
            .identity(TlsIdentity::from_pem(
                &credentials.node.cert_pem,
                &credentials.node.key_pem,
            ));
        endpoint = endpoint.tls_config(tls).map_err(invalid)?;
    }
    Ok(endpoint)
}

impl ControlPlane {
    /// A client of the control plane at `servers` (in failover order, as
    /// [`parse_servers`] gives them), speaking mTLS with `credentials` to `https://`
    /// servers; connects lazily and reconnects. Call it inside a Tokio runtime.
    pub fn try_new(
        servers: &[String],
        node_name: &str,
        credentials: Option<&Credentials>,
    ) -> Result<Self, Error> {
        let endpoints = servers
            .iter()
            .map(|url| Ok((url.clone(), endpoint(url, credentials)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        let Some((_, first)) = endpoints.first() else {
            return Err(Error::NoServers);
        };
        let current = Current {
            index: 0,
            generation: 0,
            client: NodeClient::new(first.connect_lazy()),
        };
        Ok(Self {
            servers: Arc::new(Servers {
                endpoints,
                current: Mutex::new(current),
            }),
            node_name: node_name.to_owned(),
        })
    }

    /// The URL of the server in use.
    pub fn server(&self) -> String {
        self.servers.url()
    }

    /// Runs `rpc` on the current server's client; when the server cannot be reached,
    /// fails over and tries the next, each server once. Returns the generation of the
    /// channel the last attempt used.
    async fn call_tracked<T, Rpc, Called>(&self, rpc: Rpc) -> (Result<T, tonic::Status>, u64)
    where
        Rpc: Fn(NodeClient<Channel>) -> Called,
        Called: Future<Output = Result<T, tonic::Status>>,
    {
        let mut attempts_left = self.servers.endpoints.len();
        loop {
            let (generation, client) = self.servers.current();
            let result = rpc(client).await;
            match result {
                Err(status) if is_connection_failure(&status) => {
                    self.servers.fail_over(generation, &status);
                    attempts_left -= 1;
                    if attempts_left == 0 {
                        return (Err(status), generation);
                    }
                }
                result => return (result, generation),
            }
        }
    }

    /// [`ControlPlane::call_tracked`] without the generation.
    async fn call<T, Rpc, Called>(&self, rpc: Rpc) -> Result<T, tonic::Status>
    where
        Rpc: Fn(NodeClient<Channel>) -> Called,
        Called: Future<Output = Result<T, tonic::Status>>,
    {
        self.call_tracked(rpc).await.0
    }

    /// Registers (creates or updates) the Node; returns what the control plane
    /// answered: the stored Node, the heartbeat interval and the cluster's network.
    pub async fn register(&self, node: &Node) -> Result<Registration, tonic::Status> {
        let node_json =
            serde_json::to_vec(node).map_err(|e| tonic::Status::internal(e.to_string()))?;
        let request = RegisterRequest { node_json };
        let reply = self
            .call(|mut client| {
                let request = request.clone();
                async move { client.register(request).await }
            })
            .await?
            .into_inner();
        let stored: Node = serde_json::from_slice(&reply.node_json).map_err(|e| {
            tonic::Status::internal(format!("the stored Node does not decode: {e}"))
        })?;
        Ok(Registration {
            node: stored,
            heartbeat_interval: Duration::from_secs(u64::from(
                reply.heartbeat_interval_seconds.max(1),
            )),
            cluster_cidr: reply.cluster_cidr,
            service_cidr: reply.service_cidr,
            cluster_domain: reply.cluster_domain,
        })
    }

    /// Registers until it succeeds (the control plane may still be starting) or
    /// `shutdown` fires.
    pub async fn register_until_done(
        &self,
        node: &Node,
        shutdown: &CancellationToken,
    ) -> Option<Registration> {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.register(node).await {
                Ok(registration) => return Some(registration),
                Err(status) => {
                    tracing::warn!(error = %status.message(), "registration failed; retrying");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Sends heartbeats every `interval` until `shutdown`; re-registers when the
    /// control plane lost the Node.
    pub async fn heartbeats(
        &self,
        node: Node,
        mut interval: Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let conditions_json = serde_json::to_vec(&conditions()).unwrap_or_default();
            let request = HeartbeatRequest {
                node_name: self.node_name.clone(),
                conditions_json,
            };
            let reply = self
                .call(|mut client| {
                    let request = request.clone();
                    async move { client.heartbeat(request).await }
                })
                .await;
            match reply {
                Ok(_) => {}
                Err(status) if status.code() == tonic::Code::NotFound => {
                    if let Ok(Registration {
                        heartbeat_interval: new_interval,
                        ..
                    }) = self.register(&node).await
                    {
                        interval = new_interval;
                    }
                }
                Err(status) => tracing::warn!(error = %status.message(), "heartbeat failed"),
            }
        }
    }

    /// Feeds the pods bound to this node into `manager` until `shutdown`: the full list
    /// first (then `sync` removes what is no longer bound), then changes; resumes after
    /// a broken stream from the last revision seen, or from scratch when that is too
    /// old.
    pub async fn watch_pods(&self, manager: &mut PodManager, shutdown: CancellationToken) {
        let node_name = self.node_name.clone();
        let mut listed: Option<HashSet<String>> = None;
        let open = |mut client: NodeClient<Channel>, revision: String| {
            let request = WatchPodsRequest {
                node_name: node_name.clone(),
                resource_version: revision,
            };
            async move { client.watch_pods(request).await }
        };
        self.watch("pods", open, &shutdown, |change| match change {
            WatchChange::Listing => listed = Some(HashSet::new()),
            WatchChange::Applied(json) => {
                if let Ok(pod) = serde_json::from_slice::<Pod>(&json) {
                    if let (Some(listed), Some(uid)) = (&mut listed, &pod.metadata.uid) {
                        listed.insert(uid.clone());
                    }
                    manager.upsert(pod);
                }
            }
            WatchChange::Deleted(json) => {
                if let Some(uid) = serde_json::from_slice::<Pod>(&json)
                    .ok()
                    .and_then(|p| p.metadata.uid)
                {
                    manager.remove(&uid);
                }
            }
            WatchChange::Synced => {
                if let Some(listed) = listed.take() {
                    manager.sync(&listed);
                }
            }
        })
        .await;
    }

    /// Feeds every object of `resource` (`services`, `endpoints`, `nodes`) into
    /// `on_change` until `shutdown`, with the same list/resume rules as
    /// [`ControlPlane::watch_pods`].
    pub async fn watch_objects(
        &self,
        resource: &str,
        shutdown: CancellationToken,
        on_change: impl FnMut(WatchChange),
    ) {
        let open = |mut client: NodeClient<Channel>, revision: String| {
            let request = WatchObjectsRequest {
                resource: resource.to_owned(),
                resource_version: revision,
            };
            async move { client.watch_objects(request).await }
        };
        self.watch(resource, open, &shutdown, on_change).await;
    }

    /// The watch loop behind both: opens a stream from the last revision seen (none:
    /// a full list, announced by `Listing`), feeds its events, and reopens after a
    /// break, with back-off; `OUT_OF_RANGE` restarts from scratch.
    async fn watch<Open, Opened>(
        &self,
        what: &str,
        open: Open,
        shutdown: &CancellationToken,
        mut on_change: impl FnMut(WatchChange),
    ) where
        Open: Fn(NodeClient<Channel>, String) -> Opened,
        Opened: Future<
            Output = Result<tonic::Response<tonic::codec::Streaming<ObjectEvent>>, tonic::Status>,
        >,
    {
        let mut revision = String::new();
        let mut delay = Duration::from_millis(100);
        loop {
            let opened = self.call_tracked(|client| open(client, revision.clone()));
            let (stream, generation) = tokio::select! {
                () = shutdown.cancelled() => return,
                opened = opened => opened,
            };
            let mut stream = match stream {
                Ok(stream) => stream.into_inner(),
                Err(status) => {
                    tracing::warn!(error = %status.message(), what, "watching failed; retrying");
                    if status.code() == tonic::Code::OutOfRange {
                        revision.clear();
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if revision.is_empty() {
                on_change(WatchChange::Listing);
            }
            loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => return,
                    message = stream.message() => message,
                };
                let event = match message {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    Err(status) => {
                        if status.code() == tonic::Code::OutOfRange {
                            revision.clear();
                        }
                        if is_connection_failure(&status) {
                            self.servers.fail_over(generation, &status);
                        }
                        tracing::warn!(error = %status.message(), what, "the watch broke; resuming");
                        break;
                    }
                };
                delay = Duration::from_millis(100);
                if !event.resource_version.is_empty() {
                    revision.clone_from(&event.resource_version);
                }
                match object_event::Type::try_from(event.r#type).unwrap_or_default() {
                    object_event::Type::Added | object_event::Type::Modified => {
                        on_change(WatchChange::Applied(event.object_json));
                    }
                    object_event::Type::Deleted => {
                        on_change(WatchChange::Deleted(event.object_json))
                    }
                    object_event::Type::Synced => on_change(WatchChange::Synced),
                    object_event::Type::Bookmark | object_event::Type::Unspecified => {}
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// One step of a watched kind, as [`ControlPlane::watch_objects`] reports it.
#[derive(Debug)]
pub enum WatchChange {
    /// A full list starts: whatever it does not name before `Synced` is gone.
    Listing,
    /// An object (JSON) was added or changed.
    Applied(Vec<u8>),
    /// An object (JSON, its last state) was deleted.
    Deleted(Vec<u8>),
    /// The full list is complete.
    Synced,
}

impl StatusSink for ControlPlane {
    fn report(&self, pod: &Pod, status: PodStatus) -> ReportFuture<'_> {
        let report = PodStatusReport {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            status_json: serde_json::to_vec(&status).unwrap_or_default(),
        };
        Box::pin(async move {
            self.call(|mut client| {
                let report = report.clone();
                async move { client.report_pod_status(report).await }
            })
            .await
            .map(drop)
            .map_err(|status| status.message().to_owned())
        })
    }

    fn finish_deletion(&self, pod: &Pod) -> ReportFuture<'_> {
        let reference = PodRef {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        };
        Box::pin(async move {
            let reply = self
                .call(|mut client| {
                    let reference = reference.clone();
                    async move { client.finish_pod_deletion(reference).await }
                })
                .await;
            match reply {
                Ok(_) => Ok(()),
                Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
                Err(status) => Err(status.message().to_owned()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_object_describes_this_machine_and_the_agent() {
        let identity = NodeIdentity {
            name: "n1".to_owned(),
            ip: "10.0.0.7".parse().expect("ip"),
            port: 10250,
            labels: BTreeMap::from([("zone".to_owned(), "a".to_owned())]),
        };
        let node = node_object(&identity, Path::new("/"));
        let labels = node.metadata.labels.expect("labels");
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["zone"], "a");
        let status = node.status.expect("status");
        let addresses = status.addresses.expect("addresses");
        assert_eq!(addresses[0].type_, "InternalIP");
        assert_eq!(addresses[0].address, "10.0.0.7");
        let capacity = status.capacity.expect("capacity");
        assert!(capacity["cpu"].0.parse::<u32>().expect("cpu") >= 1);
        assert!(capacity["memory"].0.ends_with("Ki") && capacity["memory"].0 != "0Ki");
        assert_eq!(capacity["pods"].0, "110");
        assert_eq!(status.allocatable.expect("allocatable"), capacity);
        let port = status
            .daemon_endpoints
            .and_then(|d| d.kubelet_endpoint)
            .map(|e| e.port);
        assert_eq!(port, Some(10250));
        let info = status.node_info.expect("nodeInfo");
        assert_eq!(info.kubelet_version, VERSION);
        assert!(!info.kernel_version.is_empty());
        let conditions = status.conditions.expect("conditions");
        let ready = conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(ready.status, "True");
        assert!(ready.last_heartbeat_time.is_some());
    }

    fn check_servers(values: &[&str], expected: Result<&[&str], &str>) {
        let values: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        let got = parse_servers(&values).map_err(|error| error.to_string());
        let expected = expected
            .map(|servers| servers.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .map_err(str::to_owned);
        assert_eq!(got, expected, "{values:?}");
    }

    #[test]
    fn servers_keep_their_order_and_must_be_http_urls_of_one_scheme() {
        check_servers(&["https://a:6443"], Ok(&["https://a:6443"]));
        check_servers(
            &[
                "https://b:6443, https://a:6443/",
                "https://c:6443,,https://b:6443",
            ],
            Ok(&["https://b:6443", "https://a:6443", "https://c:6443"]),
        );
        check_servers(&["https://[::1]:6443"], Ok(&["https://[::1]:6443"]));
        check_servers(&["http://127.0.0.1:8080"], Ok(&["http://127.0.0.1:8080"]));
        check_servers(
            &[],
            Err("--server is required (the control plane's URL, e.g. https://10.0.0.1:6443)"),
        );
        check_servers(
            &[" , "],
            Err("--server is required (the control plane's URL, e.g. https://10.0.0.1:6443)"),
        );
        check_servers(
            &["10.0.0.1:6443"],
            Err("--server \"10.0.0.1:6443\": the scheme must be https:// (or http:// without TLS)"),
        );
        check_servers(
            &["ftp://a:21"],
            Err("--server \"ftp://a:21\": the scheme must be https:// (or http:// without TLS)"),
        );
        check_servers(
            &["https://a:6443/api"],
            Err(
                "--server \"https://a:6443/api\": a path is not allowed (expected https://HOST:PORT)",
            ),
        );
        check_servers(
            &["https://a:6443,http://b:6443"],
            Err(
                "--server: https://a:6443 and http://b:6443 mix http:// and https:// (use https:// everywhere)",
            ),
        );
    }

    #[test]
    fn only_failures_to_reach_a_server_fail_over() {
        assert!(is_connection_failure(&tonic::Status::unavailable("down")));
        assert!(is_connection_failure(&tonic::Status::deadline_exceeded(
            "slow"
        )));
        assert!(!is_connection_failure(&tonic::Status::not_found("no node")));
        assert!(!is_connection_failure(&tonic::Status::permission_denied(
            "no"
        )));
        // Sent by a server: an answer.
        assert!(!is_connection_failure(&tonic::Status::unknown("odd")));
        // Made from a local error: the connection broke.
        let broken = tonic::Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert!(is_connection_failure(&broken), "{broken:?}");
    }

    #[tokio::test]
    async fn https_servers_need_the_nodes_credentials() {
        let error = ControlPlane::try_new(&["https://a:6443".to_owned()], "n1", None)
            .err()
            .map(|error| error.to_string());
        assert_eq!(
            error.as_deref(),
            Some(
                "https://a:6443: https:// needs the node's TLS credentials (join with --token first)"
            )
        );
        let plane = ControlPlane::try_new(
            &["http://a:1".to_owned(), "http://b:2".to_owned()],
            "n1",
            None,
        )
        .expect("a client");
        assert_eq!(plane.server(), "http://a:1");
    }

    /// A control plane's `Node` service that answers Register and Heartbeat, and
    /// records who called (the caller's certificate CN).
    #[derive(Clone, Default)]
    struct FakeNodeService {
        callers: Arc<Mutex<Vec<String>>>,
    }

    type EventStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<ObjectEvent, tonic::Status>> + Send>,
    >;

    impl FakeNodeService {
        fn record<T>(&self, request: &tonic::Request<T>) {
            let user = request
                .peer_certs()
                .and_then(|certs| {
                    let leaf = certs.first()?;
                    skiff_pki::identity_of(leaf.as_ref()).ok()
                })
                .map_or_else(|| "anonymous".to_owned(), |identity| identity.user);
            self.callers.lock().expect("callers").push(user);
        }

        fn callers(&self) -> Vec<String> {
            self.callers.lock().expect("callers").clone()
        }
    }

    #[tonic::async_trait]
    impl skiff_proto::node::node_server::Node for FakeNodeService {
        async fn register(
            &self,
            request: tonic::Request<RegisterRequest>,
        ) -> Result<tonic::Response<skiff_proto::node::RegisterReply>, tonic::Status> {
            self.record(&request);
            Ok(tonic::Response::new(skiff_proto::node::RegisterReply {
                node_json: request.into_inner().node_json,
                heartbeat_interval_seconds: 10,
                ..Default::default()
            }))
        }

        async fn heartbeat(
            &self,
            request: tonic::Request<HeartbeatRequest>,
        ) -> Result<tonic::Response<skiff_proto::node::HeartbeatReply>, tonic::Status> {
            self.record(&request);
            Ok(tonic::Response::new(skiff_proto::node::HeartbeatReply {}))
        }

        type WatchPodsStream = EventStream;

        async fn watch_pods(
            &self,
            _: tonic::Request<WatchPodsRequest>,
        ) -> Result<tonic::Response<EventStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("watch_pods"))
        }

        type WatchObjectsStream = EventStream;

        async fn watch_objects(
            &self,
            _: tonic::Request<WatchObjectsRequest>,
        ) -> Result<tonic::Response<EventStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("watch_objects"))
        }

        async fn report_pod_status(
            &self,
            _: tonic::Request<PodStatusReport>,
        ) -> Result<tonic::Response<skiff_proto::node::ReportPodStatusReply>, tonic::Status>
        {
            Err(tonic::Status::unimplemented("report_pod_status"))
        }

        async fn finish_pod_deletion(
            &self,
            _: tonic::Request<PodRef>,
        ) -> Result<tonic::Response<skiff_proto::node::FinishPodDeletionReply>, tonic::Status>
        {
            Err(tonic::Status::unimplemented("finish_pod_deletion"))
        }
    }

    /// A fake control plane serving mTLS on 127.0.0.1 with a certificate from `ca`.
    struct FakeServer {
        url: String,
        service: FakeNodeService,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl FakeServer {
        async fn start(ca: &skiff_pki::Ca) -> FakeServer {
            let serving = ca
                .issue(&skiff_pki::Issue {
                    common_name: "skiff-apiserver".to_owned(),
                    organizations: Vec::new(),
                    dns_names: Vec::new(),
                    ips: vec!["127.0.0.1".parse().expect("ip")],
                    usage: skiff_pki::Usage::Server,
                    validity_days: 1,
                })
                .expect("a serving certificate");
            let tls = tonic::transport::ServerTlsConfig::new()
                .identity(TlsIdentity::from_pem(&serving.cert_pem, &serving.key_pem))
                .client_ca_root(Certificate::from_pem(&ca.cert_pem));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("https://{}", listener.local_addr().expect("address"));
            let service = FakeNodeService::default();
            let stop = CancellationToken::new();
            let server = tonic::transport::Server::builder()
                .tls_config(tls)
                .expect("a TLS config")
                .add_service(skiff_proto::node::node_server::NodeServer::new(
                    service.clone(),
                ))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.clone().cancelled_owned(),
                );
            let task = tokio::spawn(async move {
                server.await.expect("served");
            });
            FakeServer {
                url,
                service,
                stop,
                task,
            }
        }

        async fn stop(self) {
            self.stop.cancel();
            self.task.await.expect("the server task");
        }
    }

    #[tokio::test]
    async fn calls_fail_over_in_order_over_mtls() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = skiff_pki::Ca::generate("skiff-ca").expect("a CA");
        let node = ca
            .issue(&skiff_pki::Issue {
                common_name: "system:node:n1".to_owned(),
                organizations: vec!["system:nodes".to_owned()],
                dns_names: Vec::new(),
                ips: Vec::new(),
                usage: skiff_pki::Usage::ServerAndClient,
                validity_days: 1,
            })
            .expect("a node certificate");
        let credentials = Credentials {
            ca_pem: ca.cert_pem.clone(),
            node,
        };
        let first = FakeServer::start(&ca).await;
        let second = FakeServer::start(&ca).await;
        let down = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            format!("https://{}", listener.local_addr().expect("address"))
        };
        let servers = vec![down, first.url.clone(), second.url.clone()];
        let plane = ControlPlane::try_new(&servers, "n1", Some(&credentials)).expect("a client");
        let node = Node {
            metadata: ObjectMeta {
                name: Some("n1".to_owned()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };

        // The first server is down: Register moves on to the second, over mTLS.
        let registration = plane.register(&node).await.expect("registered");
        assert_eq!(registration.node.metadata.name.as_deref(), Some("n1"));
        assert_eq!(plane.server(), first.url);
        assert_eq!(first.service.callers(), ["system:node:n1"]);

        // It stays there while it answers.
        plane.register(&node).await.expect("registered again");
        assert_eq!(first.service.callers().len(), 2);

        // When it goes away, the next call moves on to the third.
        let first_callers = first.service.clone();
        first.stop().await;
        plane
            .register(&node)
            .await
            .expect("registered with the third");
        assert_eq!(plane.server(), second.url);
        assert_eq!(first_callers.callers().len(), 2);
        assert_eq!(second.service.callers(), ["system:node:n1"]);
        second.stop().await;
    }

    #[test]
    fn the_local_address_towards_loopback_is_loopback() {
        let ip = local_ip_towards("http://127.0.0.1:6443").expect("an address");
        assert!(ip.is_loopback());
        assert_eq!(local_ip_towards("not a url"), None);
    }
}
