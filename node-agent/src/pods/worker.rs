//! One pod's worker, kubelet's `syncPod` loop: it makes the node match the pod (sandbox,
//! volumes, init containers in order, then the app containers, restarted per
//! `restartPolicy` with the crash-loop back-off, probed), reports the status whenever it
//! changes, and on deletion stops everything gracefully and removes it.
//!
//! Level-triggered: every pass looks at what runs and what is wanted and takes the next
//! step; a pass is triggered by a pod change, a container exit, a probe verdict or a
//! back-off deadline.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container as ContainerSpec, Pod, PodStatus};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::probe::{
    ExecFuture, ExecProbe, ProbeHandle, ProbeKind, ProbeTarget, Verdict, spawn_probe_loop,
};
use super::status::{self, ContainerView, PodView, State, Terminated};
use super::volumes::Volumes;
use super::{NodeContext, container_labels, remove_pod, restart_count_of};
use crate::network::NetworkError;
use crate::network::proxy::{HostPort, Protocol};
use crate::runtime::cgroups;
use crate::runtime::container::{Container, ContainerState, Exited, timestamp};
use crate::runtime::image::PullPolicy;
use crate::runtime::sandbox::Sandbox;
use crate::runtime::spec::{self, SpecInput, VolumeMount};

/// The pod-dir files mounted over the containers' `/etc/resolv.conf` and `/etc/hosts`.
const RESOLV_CONF: &str = "resolv.conf";
const HOSTS: &str = "hosts";

/// The hostPort mappings of `pod` (its containers' ports with a `hostPort`) to `ip`.
fn host_ports(pod: &Pod, ip: Ipv4Addr) -> Vec<HostPort> {
    let containers = pod.spec.iter().flat_map(|s| &s.containers);
    containers
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|port| {
            let host_port = u16::try_from(port.host_port?).ok().filter(|p| *p != 0)?;
            Some(HostPort {
                protocol: Protocol::from_kubernetes(port.protocol.as_deref())?,
                host_ip: port.host_ip.as_deref().and_then(|h| h.parse().ok()),
                host_port,
                pod_ip: ip,
                container_port: u16::try_from(port.container_port).ok()?,
            })
        })
        .collect()
}

/// How often a worker looks again even when nothing woke it.
const RESYNC: Duration = Duration::from_secs(10);

/// Kubernetes' default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// One container of the pod, across its instances.
#[derive(Default)]
struct Slot {
    /// The current instance.
    current: Option<Arc<Container>>,
    /// The instance before it (kept for `logs --previous`).
    previous: Option<Arc<Container>>,
    /// How often the container was restarted.
    restart_count: i32,
    /// How the previous instance ended.
    last_terminated: Option<Terminated>,
    /// Consecutive failures to run (or to pull its image), for the back-off.
    failures: u32,
    /// No new attempt before this.
    not_before: Option<Instant>,
    /// Why the container is not running, while it waits.
    waiting: Option<(String, String)>,
    /// The current instance's exit has been accounted for.
    exit_handled: bool,
    /// A stop (liveness failure) is in progress.
    killing: bool,
    /// The image ID of the current instance.
    image_id: Option<String>,
    /// Probe loops of the current instance.
    probes: Probes,
}

/// The probe loops of one running instance.
#[derive(Default)]
struct Probes {
    startup: Option<ProbeHandle>,
    liveness: Option<ProbeHandle>,
    readiness: Option<ProbeHandle>,
}

impl Probes {
    fn verdict(handle: Option<&ProbeHandle>) -> Option<bool> {
        handle.and_then(|h| h.verdict().borrow().healthy)
    }
}

/// Where an init container stands.
enum Progress {
    /// Finished successfully (or, for app containers, nothing more to do).
    Done,
    /// Running, starting or waiting to be restarted.
    Busy,
    /// Failed for good (restartPolicy Never).
    Failed,
}

/// A pod's worker.
pub struct Worker {
    context: Arc<NodeContext>,
    pod: Pod,
    uid: String,
    sandbox: Option<Sandbox>,
    /// The pod's address (none for hostNetwork pods, which use the node's).
    pod_ip: Option<Ipv4Addr>,
    volumes: Option<Volumes>,
    /// Why the pod cannot run at all right now (sandbox or volume failure).
    setup_error: Option<(String, String)>,
    slots: BTreeMap<String, Slot>,
    start_time: SystemTime,
    reported: Option<PodStatus>,
    wake: Arc<Notify>,
}

impl Worker {
    /// A worker for `pod`, taking over `adopted`, its containers already on the node.
    pub fn new(context: Arc<NodeContext>, pod: Pod, adopted: Vec<Container>) -> Self {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map_or_else(SystemTime::now, |t| {
                SystemTime::UNIX_EPOCH
                    + Duration::from_nanos(
                        u64::try_from(t.0.as_nanosecond().max(0)).unwrap_or_default(),
                    )
            });
        let wake = Arc::new(Notify::new());
        let mut worker = Self {
            context,
            pod,
            uid,
            sandbox: None,
            pod_ip: None,
            volumes: None,
            setup_error: None,
            slots: BTreeMap::new(),
            start_time,
            reported: None,
            wake,
        };
        worker.adopt(adopted);
        worker
    }

    /// Takes over the instances on disk: per container, the newest is current, the one
    /// before is previous, older ones are removed.
    fn adopt(&mut self, mut adopted: Vec<Container>) {
        adopted.sort_by_key(restart_count_of);
        for container in adopted {
            let Some(name) = container
                .labels()
                .get(super::labels::CONTAINER_NAME)
                .cloned()
            else {
                continue;
            };
            let slot = self.slots.entry(name).or_default();
            if let Some(older) = slot.current.take() {
                slot.last_terminated = Some(terminated_of(&older));
                if let Some(old) = slot.previous.replace(older) {
                    remove_instance(&self.context, &old);
                }
            }
            slot.restart_count = restart_count_of(&container);
            slot.image_id = container.labels().get(super::labels::IMAGE_ID).cloned();
            let container = Arc::new(container);
            watch_exit(&container, &self.wake);
            // An adopted instance that has ended counts as handled when it was
            // restarted already; otherwise its exit is handled by the next pass.
            slot.current = Some(container);
        }
    }

    /// Runs until the pod is deleted and removed (or the agent stops: `updates` closed).
    pub async fn run(mut self, mut updates: watch::Receiver<Option<Pod>>) {
        loop {
            let desired = updates.borrow_and_update().clone();
            let Some(pod) = desired else {
                self.terminate(false).await;
                return;
            };
            self.pod = pod;
            if self.pod.metadata.deletion_timestamp.is_some() {
                self.terminate(true).await;
                return;
            }
            let next = self.sync().await;
            self.report().await;
            let deadline = next.map_or(Instant::now() + RESYNC, |n| n.min(Instant::now() + RESYNC));
            tokio::select! {
                changed = updates.changed() => if changed.is_err() { return },
                () = self.wake.notified() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    fn spec_containers(&self, init: bool) -> Vec<ContainerSpec> {
        let spec = self.pod.spec.as_ref();
        if init {
            spec.and_then(|s| s.init_containers.clone())
                .unwrap_or_default()
        } else {
            spec.map(|s| s.containers.clone()).unwrap_or_default()
        }
    }

    fn restart_policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".to_owned())
    }

    fn host_network(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
    }

    fn grace(&self) -> Duration {
        let seconds = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        Duration::from_secs(u64::try_from(seconds.max(0)).unwrap_or(0))
    }

    /// Whether the pod reached Succeeded or Failed (nothing more runs).
    fn terminal(&self) -> bool {
        let phase = self.reported.as_ref().or(self.pod.status.as_ref());
        matches!(
            phase.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
    }

    /// One pass; returns when it next needs to look (a back-off deadline).
    async fn sync(&mut self) -> Option<Instant> {
        if self.terminal() {
            return None;
        }
        let pod_dir = self.context.pod_dir(&self.uid);
        if self.sandbox.is_none() {
            let sandbox = match Sandbox::open(&pod_dir) {
                Ok(sandbox) => Ok(sandbox),
                Err(_) => {
                    let hostname = self.hostname();
                    Sandbox::create(&pod_dir, &hostname, self.host_network()).await
                }
            };
            match sandbox {
                Ok(sandbox) => self.sandbox = Some(sandbox),
                Err(error) => {
                    tracing::warn!(%error, "failed to create the pod sandbox");
                    self.setup_error = Some((
                        "ContainerCreating".to_owned(),
                        format!("failed to create pod sandbox: {error}"),
                    ));
                    return Some(Instant::now() + Duration::from_secs(5));
                }
            }
        }
        if let Err(error) = self.set_up_network(&pod_dir).await {
            tracing::warn!(%error, "failed to set up the pod's network");
            self.setup_error = Some((
                "ContainerCreating".to_owned(),
                format!("failed to set up pod network: {error}"),
            ));
            return Some(Instant::now() + Duration::from_secs(5));
        }
        if self.volumes.is_none() {
            match Volumes::prepare(&pod_dir, &self.pod, &self.context.allowed_host_paths) {
                Ok(volumes) => self.volumes = Some(volumes),
                Err(error) => {
                    self.setup_error =
                        Some(("CreateContainerConfigError".to_owned(), error.to_string()));
                    return Some(Instant::now() + RESYNC);
                }
            }
        }
        self.setup_error = None;
        let mut next = None;
        for container in self.spec_containers(true) {
            match self.step(&container, true, &mut next).await {
                Progress::Done => {}
                Progress::Busy | Progress::Failed => return next,
            }
        }
        for container in self.spec_containers(false) {
            self.step(&container, false, &mut next).await;
        }
        next
    }

    /// The pod's hostname: `spec.hostname` or its name (at most 63 characters).
    /// Gives the pod its address (once; an adopted pod keeps the one it has), its
    /// hostPorts, and the `/etc/resolv.conf` and `/etc/hosts` its containers mount.
    async fn set_up_network(&mut self, pod_dir: &Path) -> Result<(), NetworkError> {
        let network = &self.context.network;
        if self.host_network() || self.pod_ip.is_some() {
            return Ok(());
        }
        let netns = self
            .sandbox
            .as_ref()
            .and_then(|s| s.namespace_path("network"))
            .ok_or_else(|| {
                NetworkError::Config("the sandbox has no network namespace".to_owned())
            })?;
        let ip = match network.pod_ip(&self.uid) {
            Some(ip) if network.is_attached(&self.uid) => ip,
            _ => network.attach(&self.uid, &netns).await?,
        };
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let hostname = self.hostname();
        let files = [
            (RESOLV_CONF, network.resolv_conf(&namespace)),
            (
                HOSTS,
                format!(
                    "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{hostname}\n"
                ),
            ),
        ];
        for (name, text) in files {
            let path = pod_dir.join(name);
            let temp = path.with_extension("tmp");
            std::fs::write(&temp, text)
                .and_then(|()| std::fs::rename(&temp, &path))
                .map_err(|e| NetworkError::io(format!("writing the pod's {name}"), e))?;
        }
        network.set_host_ports(&self.uid, host_ports(&self.pod, ip));
        self.pod_ip = Some(ip);
        Ok(())
    }

    fn hostname(&self) -> String {
        let spec_name = self.pod.spec.as_ref().and_then(|s| s.hostname.clone());
        let name = spec_name.unwrap_or_else(|| self.pod.metadata.name.clone().unwrap_or_default());
        name.chars().take(63).collect()
    }

    /// Takes the next step for one container.
    async fn step(
        &mut self,
        spec: &ContainerSpec,
        init: bool,
        next: &mut Option<Instant>,
    ) -> Progress {
        let policy = self.restart_policy();
        let backoff = self.context.backoff;
        let pod_label = format!(
            "{}_{}({})",
            self.pod.metadata.name.as_deref().unwrap_or_default(),
            self.pod.metadata.namespace.as_deref().unwrap_or_default(),
            self.uid
        );
        let grace = self.liveness_grace(spec);
        let slot = self.slots.entry(spec.name.clone()).or_default();
        let mut wanted_restart = false;
        if let Some(current) = slot.current.clone() {
            match current.state() {
                ContainerState::Created => return Progress::Busy,
                ContainerState::Running { .. } => {
                    if init {
                        return Progress::Busy;
                    }
                    let live = Probes::verdict(slot.probes.liveness.as_ref());
                    let started = Probes::verdict(slot.probes.startup.as_ref());
                    if (live == Some(false) || started == Some(false)) && !slot.killing {
                        let which = if live == Some(false) {
                            "liveness"
                        } else {
                            "startup"
                        };
                        tracing::info!(container = %spec.name, "container failed its {which} probe, will be restarted");
                        slot.killing = true;
                        let container = current.clone();
                        tokio::spawn(async move {
                            let _ = container.stop(grace).await;
                        });
                    }
                    let unprobed = slot.probes.startup.is_none()
                        && slot.probes.liveness.is_none()
                        && slot.probes.readiness.is_none();
                    if unprobed && has_probes(spec) {
                        // Adopted: probes start again with the agent.
                        self.start_probes(spec);
                    }
                    return Progress::Busy;
                }
                ContainerState::Exited(exited) => {
                    if !slot.exit_handled {
                        slot.exit_handled = true;
                        slot.killing = false;
                        slot.probes = Probes::default();
                        let ran = exited
                            .finished_at
                            .duration_since(exited.started_at)
                            .unwrap_or_default();
                        if ran >= backoff.reset_after() {
                            slot.failures = 0;
                        }
                        slot.failures += 1;
                        slot.not_before = Some(Instant::now() + backoff.delay(slot.failures));
                    }
                    let succeeded = exited.exit_code == 0;
                    let restart = match policy.as_str() {
                        "Never" => false,
                        "OnFailure" => !succeeded,
                        _ => !(init && succeeded),
                    };
                    if !restart {
                        slot.waiting = None;
                        return if succeeded || !init {
                            Progress::Done
                        } else {
                            Progress::Failed
                        };
                    }
                    wanted_restart = true;
                    if let Some(not_before) = slot.not_before
                        && not_before > Instant::now()
                    {
                        let delay = backoff.delay(slot.failures).as_secs();
                        slot.waiting = Some((
                            "CrashLoopBackOff".to_owned(),
                            format!(
                                "back-off {delay}s restarting failed container={} pod={pod_label}",
                                spec.name
                            ),
                        ));
                        *next = Some(next.map_or(not_before, |n| n.min(not_before)));
                        return Progress::Busy;
                    }
                }
            }
        } else if let Some(not_before) = slot.not_before
            && not_before > Instant::now()
        {
            // An image pull or creation failed: wait it out.
            if slot
                .waiting
                .as_ref()
                .is_some_and(|(reason, _)| reason == "ErrImagePull")
            {
                slot.waiting = Some((
                    "ImagePullBackOff".to_owned(),
                    format!(
                        "Back-off pulling image {:?}",
                        spec.image.as_deref().unwrap_or("")
                    ),
                ));
            }
            *next = Some(next.map_or(not_before, |n| n.min(not_before)));
            return Progress::Busy;
        }
        self.start(spec, wanted_restart, next).await;
        Progress::Busy
    }

    /// The grace period of a kill after a failed liveness probe.
    fn liveness_grace(&self, spec: &ContainerSpec) -> Duration {
        let probe_grace = spec
            .liveness_probe
            .as_ref()
            .and_then(|p| p.termination_grace_period_seconds);
        let seconds = probe_grace
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        Duration::from_secs(u64::try_from(seconds.max(0)).unwrap_or(0))
    }

    /// Pulls the image and starts a new instance of the container.
    async fn start(&mut self, spec: &ContainerSpec, restart: bool, next: &mut Option<Instant>) {
        let image_name = spec.image.clone().unwrap_or_default();
        let policy = PullPolicy::from_kubernetes(spec.image_pull_policy.as_deref(), &image_name);
        let backoff = self.context.backoff;
        let image = match self.context.images.ensure(&image_name, policy).await {
            Ok(image) => image,
            Err(error) => {
                let slot = self.slots.entry(spec.name.clone()).or_default();
                slot.failures += 1;
                let not_before = Instant::now() + backoff.delay(slot.failures + 1);
                slot.not_before = Some(not_before);
                slot.waiting = Some((
                    error.reason().to_owned(),
                    format!("failed to pull image {image_name:?}: {error}"),
                ));
                *next = Some(next.map_or(not_before, |n| n.min(not_before)));
                return;
            }
        };
        let host_network = self.host_network();
        let slot = self.slots.entry(spec.name.clone()).or_default();
        let restart_count = if restart {
            slot.restart_count + 1
        } else {
            slot.restart_count
        };
        let id = format!("{}-{}-{restart_count}", self.uid, spec.name);
        let (Some(sandbox), Some(volumes)) = (&self.sandbox, &self.volumes) else {
            return;
        };
        let mounts = match volumes.mounts(spec) {
            Ok(mut mounts) => {
                if self.pod_ip.is_some() {
                    let pod_dir = self.context.pod_dir(&self.uid);
                    for (name, target) in [(RESOLV_CONF, "/etc/resolv.conf"), (HOSTS, "/etc/hosts")]
                    {
                        mounts.push(VolumeMount {
                            host_path: pod_dir.join(name),
                            container_path: target.into(),
                            read_only: false,
                        });
                    }
                }
                mounts
            }
            Err(error) => {
                slot.waiting = Some(("CreateContainerConfigError".to_owned(), error.to_string()));
                return;
            }
        };
        let input = SpecInput {
            container: spec.clone(),
            image_config: image.config.clone(),
            layers: &image.layers,
            namespaces: sandbox.namespaces(),
            host_network,
            cgroups_path: cgroups::container_path(&self.uid, &id),
            mounts,
            pids_limit: self.context.runtime.pids_limit,
        };
        let oci = match spec::build(&input) {
            Ok(oci) => oci,
            Err(error) => {
                slot.waiting = Some(("CreateContainerConfigError".to_owned(), error.to_string()));
                return;
            }
        };
        // A failed earlier attempt under the same id left a directory.
        if let Ok(stale) = Container::adopt(&self.context.runtime, &id) {
            let _ = stale.remove().await;
        }
        let labels = container_labels(&self.pod, &spec.name, restart_count, &image.id);
        match Container::create(&self.context.runtime, &id, labels, oci, &image.layers).await {
            Ok(container) => {
                let container = Arc::new(container);
                watch_exit(&container, &self.wake);
                let slot = self.slots.entry(spec.name.clone()).or_default();
                if let Some(old) = slot.current.replace(container) {
                    slot.last_terminated = Some(terminated_of(&old));
                    if let Some(older) = slot.previous.replace(old) {
                        remove_instance(&self.context, &older);
                    }
                }
                slot.restart_count = restart_count;
                slot.image_id = Some(image.id.clone());
                slot.exit_handled = false;
                slot.killing = false;
                slot.waiting = None;
                self.start_probes(spec);
            }
            Err(error) => {
                tracing::warn!(container = %spec.name, %error, "failed to start a container");
                slot_failed(
                    self.slots.entry(spec.name.clone()).or_default(),
                    backoff,
                    "RunContainerError",
                    error.to_string(),
                    next,
                );
            }
        }
    }

    /// Starts the probe loops of the current instance of `spec`.
    fn start_probes(&mut self, spec: &ContainerSpec) {
        let netns = if self.host_network() {
            None
        } else {
            self.sandbox
                .as_ref()
                .and_then(|s| s.namespace_path("network"))
        };
        let Some(slot) = self.slots.get_mut(&spec.name) else {
            return;
        };
        let Some(current) = slot.current.clone() else {
            return;
        };
        let target = ProbeTarget {
            netns,
            pod_ip: self.pod_ip.map(IpAddr::from),
            exec: Arc::new(ContainerExec(current)),
        };
        let startup = spec.startup_probe.clone().map(|probe| {
            spawn_probe_loop(
                ProbeKind::Startup,
                probe,
                spec.clone(),
                target.clone(),
                None,
            )
        });
        let gate = startup.as_ref().map(ProbeHandle::verdict);
        let liveness = spec.liveness_probe.clone().map(|probe| {
            spawn_probe_loop(
                ProbeKind::Liveness,
                probe,
                spec.clone(),
                target.clone(),
                gate.clone(),
            )
        });
        let readiness = spec.readiness_probe.clone().map(|probe| {
            spawn_probe_loop(
                ProbeKind::Readiness,
                probe,
                spec.clone(),
                target.clone(),
                gate.clone(),
            )
        });
        for handle in [&startup, &liveness, &readiness].into_iter().flatten() {
            watch_verdict(handle.verdict(), &self.wake);
        }
        slot.probes = Probes {
            startup,
            liveness,
            readiness,
        };
    }

    /// What the pod looks like now.
    fn view(&self) -> PodView {
        let inits = self.spec_containers(true);
        let inits_done = inits.iter().all(|c| {
            self.slots.get(&c.name).is_some_and(|slot| {
                slot.current.as_ref().is_some_and(|current| {
                    matches!(current.state(), ContainerState::Exited(e) if e.exit_code == 0)
                })
            })
        });
        let waiting_reason = if inits_done {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let view_of =
            |spec: &ContainerSpec, default_reason: &str| self.container_view(spec, default_reason);
        let host_ip = self.context.node_ip.map(|ip| ip.to_string());
        PodView {
            sandbox_ready: self.sandbox.is_some(),
            init_containers: inits
                .iter()
                .map(|c| view_of(c, "PodInitializing"))
                .collect(),
            containers: self
                .spec_containers(false)
                .iter()
                .map(|c| view_of(c, waiting_reason))
                .collect(),
            restart_policy: self.restart_policy(),
            pod_ip: if self.host_network() {
                host_ip.clone()
            } else {
                self.pod_ip.map(|ip| ip.to_string())
            },
            host_ip,
            start_time: Some(timestamp(self.start_time)),
        }
    }

    fn container_view(&self, spec: &ContainerSpec, default_reason: &str) -> ContainerView {
        let slot = self.slots.get(&spec.name);
        let waiting = |slot: Option<&Slot>| {
            let (reason, message) = self
                .setup_error
                .clone()
                .or_else(|| slot.and_then(|s| s.waiting.clone()))
                .unwrap_or_else(|| (default_reason.to_owned(), String::new()));
            State::Waiting { reason, message }
        };
        let mut view = ContainerView {
            name: spec.name.clone(),
            image: spec.image.clone().unwrap_or_default(),
            image_id: slot.and_then(|s| s.image_id.clone()),
            container_id: None,
            restart_count: slot.map_or(0, |s| s.restart_count),
            state: waiting(slot),
            last_terminated: slot.and_then(|s| s.last_terminated.clone()),
            ready: false,
            started: false,
        };
        let Some(slot) = slot else {
            return view;
        };
        let Some(current) = &slot.current else {
            return view;
        };
        view.container_id = Some(format!("skiff://{}", current.id()));
        match current.state() {
            ContainerState::Created => {}
            ContainerState::Running { started_at, .. } => {
                view.state = State::Running {
                    started_at: timestamp(started_at),
                };
                let started = Probes::verdict(slot.probes.startup.as_ref());
                view.started = slot.probes.startup.is_none() || started == Some(true);
                let ready = Probes::verdict(slot.probes.readiness.as_ref());
                view.ready =
                    view.started && (slot.probes.readiness.is_none() || ready == Some(true));
            }
            ContainerState::Exited(exited) => {
                let terminated = terminated(&exited, current.id());
                if slot.waiting.is_some() {
                    view.state = waiting(Some(slot));
                    view.last_terminated = Some(terminated);
                } else {
                    view.state = State::Terminated(terminated);
                }
            }
        }
        view
    }

    /// Reports the status if it changed since the last report.
    async fn report(&mut self) {
        let previous = self.pod.status.clone().unwrap_or_default();
        let status = status::build(&previous, &self.view(), timestamp(SystemTime::now()));
        if self.reported.as_ref() == Some(&status) {
            return;
        }
        match self.context.sink.report(&self.pod, status.clone()).await {
            Ok(()) => self.reported = Some(status),
            Err(error) => tracing::warn!(%error, "failed to report the pod's status"),
        }
    }

    /// Stops every container (SIGTERM, the grace period, SIGKILL), removes the pod from
    /// the node, and with `finish` tells the control plane it may forget the pod.
    async fn terminate(&mut self, finish: bool) {
        let grace = self.grace();
        tracing::info!(?grace, "stopping the pod");
        let mut stops = Vec::new();
        for slot in self.slots.values_mut() {
            slot.probes = Probes::default();
            slot.previous = None;
            stops.extend(slot.current.take());
        }
        let stopping = stops.iter().map(|c| c.stop(grace));
        for result in futures_util::future::join_all(stopping).await {
            if let Err(error) = result {
                tracing::warn!(%error, "failed to stop a container");
            }
        }
        self.sandbox = None;
        self.volumes = None;
        // `remove_pod` finds every instance by its labels.
        if let Err(error) = remove_pod(&self.context, &self.uid, Vec::new()).await {
            tracing::warn!(%error, "failed to remove the pod from the node");
        }
        if finish {
            for attempt in 0..10u64 {
                match self.context.sink.finish_deletion(&self.pod).await {
                    Ok(()) => break,
                    Err(error) => {
                        tracing::warn!(%error, "failed to finish the pod's deletion");
                        tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                    }
                }
            }
        }
        tracing::info!("pod removed");
    }
}

/// Records a failed attempt: waiting with `reason`, back-off before the next.
fn slot_failed(
    slot: &mut Slot,
    backoff: super::Backoff,
    reason: &str,
    message: String,
    next: &mut Option<Instant>,
) {
    slot.failures += 1;
    let not_before = Instant::now() + backoff.delay(slot.failures + 1);
    slot.not_before = Some(not_before);
    slot.waiting = Some((reason.to_owned(), message));
    *next = Some(next.map_or(not_before, |n| n.min(not_before)));
}

/// How `container` ended (it is assumed to have ended; a running one reads as unknown).
fn terminated_of(container: &Container) -> Terminated {
    match container.state() {
        ContainerState::Exited(exited) => terminated(&exited, container.id()),
        _ => Terminated {
            exit_code: 137,
            signal: None,
            reason: "ContainerStatusUnknown".to_owned(),
            message: String::new(),
            started_at: None,
            finished_at: None,
            container_id: Some(format!("skiff://{}", container.id())),
        },
    }
}

fn terminated(exited: &Exited, id: &str) -> Terminated {
    Terminated {
        exit_code: exited.exit_code,
        signal: exited.signal,
        reason: exited.reason.clone(),
        message: exited.message.clone(),
        started_at: Some(timestamp(exited.started_at)),
        finished_at: Some(timestamp(exited.finished_at)),
        container_id: Some(format!("skiff://{id}")),
    }
}

/// Wakes the worker when `container` ends.
fn watch_exit(container: &Arc<Container>, wake: &Arc<Notify>) {
    let container = container.clone();
    let wake = wake.clone();
    tokio::spawn(async move {
        container.wait().await;
        wake.notify_one();
    });
}

/// Removes an old instance in the background (a fresh handle: others may still hold
/// this one).
fn remove_instance(context: &NodeContext, container: &Container) {
    if let Ok(handle) = Container::adopt(&context.runtime, container.id()) {
        tokio::spawn(async move {
            if let Err(error) = handle.remove().await {
                tracing::warn!(%error, "failed to remove an old container instance");
            }
        });
    }
}

/// Whether the container has any probe.
fn has_probes(spec: &ContainerSpec) -> bool {
    spec.startup_probe.is_some() || spec.liveness_probe.is_some() || spec.readiness_probe.is_some()
}

/// Wakes the worker when a probe's verdict changes.
fn watch_verdict(mut verdict: watch::Receiver<Verdict>, wake: &Arc<Notify>) {
    let wake = wake.clone();
    tokio::spawn(async move {
        while verdict.changed().await.is_ok() {
            wake.notify_one();
        }
    });
}

/// Exec probes run in the container through the `__exec` helper.
struct ContainerExec(Arc<Container>);

impl ExecProbe for ContainerExec {
    fn exec(&self, command: Vec<String>, timeout: Duration) -> ExecFuture<'_> {
        Box::pin(async move {
            let child = self.0.exec(command, false)?;
            match tokio::time::timeout(timeout, child.wait_with_output()).await {
                Ok(output) => {
                    let output = output?;
                    let mut text = output.stdout;
                    text.extend_from_slice(&output.stderr);
                    text.truncate(10 * 1024);
                    Ok((output.status.code().unwrap_or(-1), text))
                }
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "probe timed out",
                )),
            }
        })
    }
}
