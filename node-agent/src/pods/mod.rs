//! Pod workers: the agent's kubelet loop. [`PodManager`] keeps one [`worker`] per pod
//! bound to this node, adopts the containers already on disk when the agent starts, and
//! removes what belongs to pods the control plane no longer has.

pub mod backoff;
pub use backoff::Backoff;
pub mod probe;
pub mod status;
pub mod volumes;
pub mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::watch;

use crate::network::NodeNetwork;
use crate::runtime::container::{Container, RuntimeConfig};
use crate::runtime::image::ImageStore;
use crate::runtime::sandbox::Sandbox;
use crate::runtime::{RuntimeError, cgroups};

/// Container labels (on disk, in `labels.json`) that tie a container to its pod; the
/// names are the ones kubelet gives its containers in CRI runtimes.
pub mod labels {
    /// The pod's uid.
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    /// The pod's name.
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    /// The pod's namespace.
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    /// The container's name in the pod spec.
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    /// How many times the container had been restarted when this instance started.
    pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
    /// The image ID (`sha256:…`) the instance runs.
    pub const IMAGE_ID: &str = "skiff.image.id";
}

/// A boxed future of a status report.
pub type ReportFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Where pod workers send what they observe: the control plane (or a test double).
pub trait StatusSink: Send + Sync {
    /// Stores `status` as the pod's status.
    fn report(&self, pod: &Pod, status: PodStatus) -> ReportFuture<'_>;
    /// The pod's containers are stopped and removed: the control plane may forget it.
    fn finish_deletion(&self, pod: &Pod) -> ReportFuture<'_>;
}

/// What every pod worker shares.
pub struct NodeContext {
    /// The container runtime's settings.
    pub runtime: RuntimeConfig,
    /// The node's images.
    pub images: ImageStore,
    /// The restart and image-pull back-off.
    pub backoff: Backoff,
    /// The node's IP (`status.hostIP`).
    pub node_ip: Option<IpAddr>,
    /// Host directories hostPath volumes may use.
    pub allowed_host_paths: Vec<PathBuf>,
    /// Where statuses go.
    pub sink: Arc<dyn StatusSink>,
    /// The pod network: addresses, veth pairs, hostPorts, resolv.conf.
    pub network: Arc<NodeNetwork>,
}

impl NodeContext {
    /// The directory of the pod with `uid`: sandbox namespaces and volumes.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.runtime.data_dir.join("pods").join(uid)
    }
}

/// One worker per pod uid.
pub struct PodManager {
    context: Arc<NodeContext>,
    workers: HashMap<String, WorkerHandle>,
    /// Containers found on disk at start, by pod uid, until their pod's worker takes
    /// them.
    adopted: HashMap<String, Vec<Container>>,
}

/// A running worker.
struct WorkerHandle {
    updates: watch::Sender<Option<Pod>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodManager {
    /// A manager that adopts the containers already under the data directory.
    pub async fn new(context: Arc<NodeContext>) -> Result<Self, RuntimeError> {
        let mut adopted: HashMap<String, Vec<Container>> = HashMap::new();
        for container in Container::list(&context.runtime).await? {
            let uid = container.labels().get(labels::POD_UID).cloned();
            adopted
                .entry(uid.unwrap_or_default())
                .or_default()
                .push(container);
        }
        Ok(Self {
            context,
            workers: HashMap::new(),
            adopted,
        })
    }

    /// The pod was added or changed: its worker (started if needed) sees the new state.
    pub fn upsert(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if let Some(worker) = self.workers.get(&uid)
            && !worker.task.is_finished()
        {
            worker.updates.send_replace(Some(pod));
            return;
        }
        let adopted = self.adopted.remove(&uid).unwrap_or_default();
        let (updates, receiver) = watch::channel(Some(pod.clone()));
        let name = pod.metadata.name.clone().unwrap_or_default();
        let worker = worker::Worker::new(self.context.clone(), pod, adopted);
        let span = tracing::info_span!(
            "pod",
            pod = %name,
            uid = %uid
        );
        let task = tokio::spawn(tracing::Instrument::instrument(worker.run(receiver), span));
        self.workers.insert(uid, WorkerHandle { updates, task });
    }

    /// The pod is gone from the control plane: its worker stops and removes it.
    pub fn remove(&self, uid: &str) {
        if let Some(worker) = self.workers.get(uid) {
            worker.updates.send_replace(None);
        }
    }

    /// The control plane's list of this node's pods is complete (`bound` are their
    /// uids): whatever else is on disk belongs to pods deleted while the agent was away,
    /// and is removed.
    pub fn sync(&mut self, bound: &HashSet<String>) {
        for uid in self.workers.keys() {
            if !bound.contains(uid) {
                self.remove(uid);
            }
        }
        let mut orphans: HashSet<String> = self
            .adopted
            .keys()
            .filter(|uid| !bound.contains(*uid))
            .cloned()
            .collect();
        if let Ok(entries) = std::fs::read_dir(self.context.runtime.data_dir.join("pods")) {
            for entry in entries.flatten() {
                let uid = entry.file_name().to_string_lossy().into_owned();
                if !bound.contains(&uid) && !self.workers.contains_key(&uid) {
                    orphans.insert(uid);
                }
            }
        }
        for uid in orphans {
            let containers = self.adopted.remove(&uid).unwrap_or_default();
            let context = self.context.clone();
            tokio::spawn(async move {
                tracing::info!(pod_uid = %uid, "removing a pod the control plane no longer has");
                if let Err(error) = remove_pod(&context, &uid, containers).await {
                    tracing::warn!(pod_uid = %uid, %error, "failed to remove an orphaned pod");
                }
            });
        }
        self.workers.retain(|_, worker| !worker.task.is_finished());
    }

    /// How many pods have a worker.
    pub fn len(&self) -> usize {
        self.workers
            .values()
            .filter(|worker| !worker.task.is_finished())
            .count()
    }

    /// Whether no pod has a worker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes everything of the pod with `uid` from the node: `containers` (stopped if they
/// run) and any other container labelled with it, the sandbox, volumes, cgroups and
/// the pod's directory. Idempotent.
pub async fn remove_pod(
    context: &NodeContext,
    uid: &str,
    containers: Vec<Container>,
) -> Result<(), RuntimeError> {
    let mut ids: HashSet<String> = HashSet::new();
    for container in containers {
        ids.insert(container.id().to_owned());
        container.remove().await?;
    }
    for container in Container::list(&context.runtime).await? {
        if container.labels().get(labels::POD_UID).map(String::as_str) == Some(uid)
            && !ids.contains(container.id())
        {
            container.remove().await?;
        }
    }
    let pod_dir = context.pod_dir(uid);
    context
        .network
        .detach(uid)
        .await
        .map_err(|e| RuntimeError::Sandbox(format!("detaching the pod's network: {e}")))?;
    if let Ok(sandbox) = Sandbox::open(&pod_dir) {
        sandbox.remove().await?;
    }
    volumes::remove(&pod_dir).map_err(|e| RuntimeError::io("removing the pod's volumes", e))?;
    cgroups::remove_pod_cgroups(uid).map_err(|e| RuntimeError::io("removing pod cgroups", e))?;
    match tokio::fs::remove_dir_all(&pod_dir).await {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(RuntimeError::io("removing the pod dir", error))
        }
        _ => Ok(()),
    }
}

/// The labels of a container instance of `pod`.
pub fn container_labels(
    pod: &Pod,
    container: &str,
    restart_count: i32,
    image_id: &str,
) -> BTreeMap<String, String> {
    let metadata = &pod.metadata;
    BTreeMap::from([
        (
            labels::POD_UID.to_owned(),
            metadata.uid.clone().unwrap_or_default(),
        ),
        (
            labels::POD_NAME.to_owned(),
            metadata.name.clone().unwrap_or_default(),
        ),
        (
            labels::POD_NAMESPACE.to_owned(),
            metadata.namespace.clone().unwrap_or_default(),
        ),
        (labels::CONTAINER_NAME.to_owned(), container.to_owned()),
        (labels::RESTART_COUNT.to_owned(), restart_count.to_string()),
        (labels::IMAGE_ID.to_owned(), image_id.to_owned()),
    ])
}

/// The restart count a container instance was started with (its label).
pub fn restart_count_of(container: &Container) -> i32 {
    container
        .labels()
        .get(labels::RESTART_COUNT)
        .and_then(|count| count.parse().ok())
        .unwrap_or(0)
}

/// The instances of container `name` of the pod `uid` on disk, oldest first.
pub async fn instances(
    runtime: &RuntimeConfig,
    uid: &str,
    name: &str,
) -> Result<Vec<Container>, RuntimeError> {
    let mut found: Vec<Container> = Container::list(runtime)
        .await?
        .into_iter()
        .filter(|c| {
            c.labels().get(labels::POD_UID).map(String::as_str) == Some(uid)
                && c.labels().get(labels::CONTAINER_NAME).map(String::as_str) == Some(name)
        })
        .collect();
    found.sort_by_key(restart_count_of);
    Ok(found)
}
