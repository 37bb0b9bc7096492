//! The agent's side of the control plane's `Node` service: the Node object it registers
//! (capacity, addresses, conditions, nodeInfo, daemon endpoint), heartbeats, the watch
//! of the pods bound to it, and status reports.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
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
use tonic::transport::Channel;

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

/// The local address this host uses to reach `server` (`http://HOST:PORT`).
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

/// The control plane, as the agent talks to it.
#[derive(Clone)]
pub struct ControlPlane {
    client: NodeClient<Channel>,
    node_name: String,
}

impl ControlPlane {
    /// A client of the control plane at `server`; connects lazily and reconnects.
    pub fn new(server: &str, node_name: &str) -> Result<Self, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(server.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .connect_lazy();
        Ok(Self {
            client: NodeClient::new(channel),
            node_name: node_name.to_owned(),
        })
    }

    /// Registers (creates or updates) the Node; returns what the control plane
    /// answered: the stored Node, the heartbeat interval and the cluster's network.
    pub async fn register(&self, node: &Node) -> Result<Registration, tonic::Status> {
        let node_json =
            serde_json::to_vec(node).map_err(|e| tonic::Status::internal(e.to_string()))?;
        let reply = self
            .client
            .clone()
            .register(RegisterRequest { node_json })
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
            match self.client.clone().heartbeat(request).await {
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
        let open = |revision: String| {
            let mut client = self.client.clone();
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
        let open = |revision: String| {
            let mut client = self.client.clone();
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
        Open: Fn(String) -> Opened,
        Opened: Future<
            Output = Result<tonic::Response<tonic::codec::Streaming<ObjectEvent>>, tonic::Status>,
        >,
    {
        let mut revision = String::new();
        let mut delay = Duration::from_millis(100);
        loop {
            let stream = tokio::select! {
                () = shutdown.cancelled() => return,
                stream = open(revision.clone()) => stream,
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
            self.client
                .clone()
                .report_pod_status(report)
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
            match self.client.clone().finish_pod_deletion(reference).await {
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

    #[test]
    fn the_local_address_towards_loopback_is_loopback() {
        let ip = local_ip_towards("http://127.0.0.1:6443").expect("an address");
        assert!(ip.is_loopback());
        assert_eq!(local_ip_towards("not a url"), None);
    }
}
