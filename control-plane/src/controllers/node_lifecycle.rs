//! The node lifecycle controller, as kube-controller-manager's (with its taint-based
//! eviction manager and the orphan part of the pod garbage collector):
//!
//! - **Health.** Agents renew their node's conditions' `lastHeartbeatTime` every 10 s.
//!   When the controller has not seen the Ready heartbeat change for the grace period
//!   (`node-monitor-grace-period`, 40 s), Ready and the pressure conditions become
//!   `Unknown` (`NodeStatusUnknown`, "Kubelet stopped posting node status."), a
//!   `NodeNotReady` event is recorded and the node's pods lose their Ready condition.
//!   As kube does, staleness is judged by when *this controller* saw the heartbeat
//!   change, so clocks need not agree and a new leader gives every node a full grace.
//! - **Taints.** From the conditions: Ready `False` → `node.kubernetes.io/not-ready`,
//!   `Unknown` → `node.kubernetes.io/unreachable`, each `NoSchedule` and `NoExecute`
//!   (`timeAdded` on the latter); the pressure conditions and `spec.unschedulable` give
//!   their `NoSchedule` taints. Taints the conditions no longer call for are removed.
//! - **Eviction.** Pods on a node with `NoExecute` taints are deleted once the taints
//!   have been there for the shortest `tolerationSeconds` of the tolerations they use;
//!   at once when a taint is not tolerated at all. Pods without their own toleration of
//!   `not-ready`/`unreachable` get the eviction timeout (300 s), as kube's
//!   `DefaultTolerationSeconds` admission would give them. An evicted pod gets the
//!   `DisruptionTarget` condition, a `TaintManagerEviction` event and a graceful
//!   delete; on an unreachable node, whose agent cannot finish deletions, it is then
//!   force-deleted (grace 0) so its controller can replace it elsewhere (as are pods
//!   already terminating there past their deadline).
//! - **Gone nodes.** Pods bound to a node that was deleted are force-deleted at once;
//!   pods bound to a name that never was a node, after the grace period (kube's pod GC).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{NodeCondition, PodCondition, Taint};
use skiff_api::meta::{Time, jiff};
use skiff_api::types::{Node, Pod, Toleration};
use skiff_api::{Object, kind};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::events::{EventType, Recorder};
use super::informer::Change;
use super::{Informers, Reconciler, WorkQueue, run_workers};
use crate::apiserver::{ApiError, DeleteOptions, Part, Registry, Writer, now_timestamp};

/// kube's `node-monitor-grace-period`: how long a node may go without a heartbeat.
pub const NODE_MONITOR_GRACE_PERIOD: Duration = Duration::from_secs(40);
/// kube's `DefaultTolerationSeconds` for `not-ready`/`unreachable` (formerly
/// `pod-eviction-timeout`).
pub const POD_EVICTION_TIMEOUT: Duration = Duration::from_secs(300);
/// kube's `node-monitor-period`: how often every node is looked at.
pub const NODE_MONITOR_PERIOD: Duration = Duration::from_secs(5);

/// The taint of a node whose Ready condition is `False`.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose Ready condition is `Unknown`.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a cordoned node.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// The taint of a node under memory pressure.
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
/// The taint of a node under disk pressure.
pub const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
/// The taint of a node under PID pressure.
pub const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
/// The taint of a node whose network is not set up.
pub const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// The `NoSchedule` effect.
pub const NO_SCHEDULE: &str = "NoSchedule";
/// The `NoExecute` effect.
pub const NO_EXECUTE: &str = "NoExecute";

/// The field manager of the controller's writes.
const MANAGER: &str = "kube-controller-manager";
/// The component its events name.
const COMPONENT: &str = "node-controller";
/// How many nodes are worked on at once.
const WORKERS: usize = 2;
/// The conditions that become `Unknown` with Ready when a node stops posting.
const MONITORED_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Every taint this controller owns, as (key, effect).
const MANAGED_TAINTS: [(&str, &str); 9] = [
    (TAINT_NOT_READY, NO_SCHEDULE),
    (TAINT_UNREACHABLE, NO_SCHEDULE),
    (TAINT_NOT_READY, NO_EXECUTE),
    (TAINT_UNREACHABLE, NO_EXECUTE),
    (TAINT_UNSCHEDULABLE, NO_SCHEDULE),
    (TAINT_MEMORY_PRESSURE, NO_SCHEDULE),
    (TAINT_DISK_PRESSURE, NO_SCHEDULE),
    (TAINT_PID_PRESSURE, NO_SCHEDULE),
    (TAINT_NETWORK_UNAVAILABLE, NO_SCHEDULE),
];

/// The controller's timings.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// How long a node may go without a heartbeat before it is `Unknown`.
    pub grace: Duration,
    /// How long pods without their own toleration stay on a `not-ready` or
    /// `unreachable` node.
    pub eviction_timeout: Duration,
    /// How often every node is looked at.
    pub monitor_period: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            grace: NODE_MONITOR_GRACE_PERIOD,
            eviction_timeout: POD_EVICTION_TIMEOUT,
            monitor_period: NODE_MONITOR_PERIOD,
        }
    }
}

/// Starts the node lifecycle controller with kube's default timings.
pub fn start(registry: &Registry, informers: &Informers, cancel: &CancellationToken) {
    start_with(registry, informers, cancel, Settings::default());
}

/// Starts the node lifecycle controller with `settings`.
pub fn start_with(
    registry: &Registry,
    informers: &Informers,
    cancel: &CancellationToken,
    settings: Settings,
) {
    let controller = Arc::new(NodeLifecycle {
        registry: registry.clone(),
        informers: informers.clone(),
        queue: WorkQueue::new(),
        recorder: Recorder::new(registry.clone(), COMPONENT),
        settings,
        health: Mutex::default(),
        missing: Mutex::default(),
    });
    for (nodes, mut changes) in [
        (true, informers.nodes.subscribe()),
        (false, informers.pods.subscribe()),
    ] {
        let controller = controller.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    change = changes.recv() => match change {
                        Some(change) if nodes => controller.observe_node(&change),
                        Some(change) => controller.observe_pod(&change),
                        None => return,
                    },
                }
            }
        });
    }
    {
        let controller = controller.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut ticks =
                tokio::time::interval(settings.monitor_period.max(Duration::from_millis(10)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = ticks.tick() => controller.tick(),
                }
            }
        });
    }
    let queue = controller.queue.clone();
    run_workers(controller, queue, WORKERS, cancel.clone());
}

/// What the controller remembers of a node between looks.
#[derive(Debug)]
struct Health {
    /// The Ready condition's `lastHeartbeatTime` last seen.
    heartbeat: Option<Time>,
    /// When that heartbeat was first seen (kube's `probeTimestamp`).
    probed: Instant,
    /// When a `NoExecute` taint without `timeAdded` was first seen.
    no_execute_seen: Option<jiff::Timestamp>,
}

struct NodeLifecycle {
    registry: Registry,
    informers: Informers,
    queue: WorkQueue,
    recorder: Recorder,
    settings: Settings,
    health: Mutex<HashMap<String, Health>>,
    /// Node names pods are bound to that are not nodes, with when their pods go.
    missing: Mutex<HashMap<String, Instant>>,
}

/// A node's condition of `type_`.
fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == type_))
}

/// The status of a node's condition of `type_`, if it has one.
fn condition_status<'a>(node: &'a Node, type_: &str) -> Option<&'a str> {
    condition(node, type_).map(|c| c.status.as_str())
}

/// Marks a node that stopped posting as kube does: Ready and the pressure conditions
/// `Unknown` (added as never posted when missing), transition times `now`. Returns
/// whether anything changed.
pub fn mark_unknown(node: &mut Node, now: &Time) -> bool {
    let created = node.metadata.creation_timestamp.clone();
    let conditions = node
        .status
        .get_or_insert_default()
        .conditions
        .get_or_insert_default();
    let mut changed = false;
    for type_ in MONITORED_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(condition) => {
                if condition.status != "Unknown" {
                    condition.status = "Unknown".to_owned();
                    condition.reason = Some("NodeStatusUnknown".to_owned());
                    condition.message = Some("Kubelet stopped posting node status.".to_owned());
                    condition.last_transition_time = Some(now.clone());
                    changed = true;
                }
            }
            None => {
                conditions.push(NodeCondition {
                    type_: type_.to_owned(),
                    status: "Unknown".to_owned(),
                    reason: Some("NodeStatusNeverUpdated".to_owned()),
                    message: Some("Kubelet never posted node status.".to_owned()),
                    last_heartbeat_time: created.clone(),
                    last_transition_time: Some(now.clone()),
                });
                changed = true;
            }
        }
    }
    changed
}

/// The taints (key, effect) the node's conditions and `spec.unschedulable` call for.
pub fn desired_taints(node: &Node) -> Vec<(&'static str, &'static str)> {
    let mut taints = Vec::new();
    match condition_status(node, "Ready") {
        Some("False") => {
            taints.push((TAINT_NOT_READY, NO_SCHEDULE));
            taints.push((TAINT_NOT_READY, NO_EXECUTE));
        }
        Some("Unknown") => {
            taints.push((TAINT_UNREACHABLE, NO_SCHEDULE));
            taints.push((TAINT_UNREACHABLE, NO_EXECUTE));
        }
        _ => {}
    }
    for (type_, key) in [
        ("MemoryPressure", TAINT_MEMORY_PRESSURE),
        ("DiskPressure", TAINT_DISK_PRESSURE),
        ("PIDPressure", TAINT_PID_PRESSURE),
        ("NetworkUnavailable", TAINT_NETWORK_UNAVAILABLE),
    ] {
        if condition_status(node, type_) == Some("True") {
            taints.push((key, NO_SCHEDULE));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        taints.push((TAINT_UNSCHEDULABLE, NO_SCHEDULE));
    }
    taints
}

/// Brings the node's controller-owned taints in line with [`desired_taints`], keeping
/// every other taint and the `timeAdded` of those that stay; new `NoExecute` taints
/// get `timeAdded = now`. Returns whether anything changed.
pub fn reconcile_taints(node: &mut Node, now: &Time) -> bool {
    let desired = desired_taints(node);
    let spec = node.spec.get_or_insert_default();
    let taints = spec.taints.get_or_insert_default();
    let before = taints.len();
    taints.retain(|t| {
        let managed = MANAGED_TAINTS
            .iter()
            .any(|(k, e)| t.key == *k && t.effect == *e);
        !managed || desired.iter().any(|(k, e)| t.key == *k && t.effect == *e)
    });
    let mut changed = taints.len() != before;
    for (key, effect) in desired {
        if !taints.iter().any(|t| t.key == key && t.effect == effect) {
            taints.push(Taint {
                key: key.to_owned(),
                effect: effect.to_owned(),
                time_added: (effect == NO_EXECUTE).then(|| now.clone()),
                value: None,
            });
            changed = true;
        }
    }
    if spec.taints.as_ref().is_some_and(Vec::is_empty) {
        spec.taints = None;
    }
    changed
}

/// Whether `toleration` tolerates `taint` (kube's `ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = toleration.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        "Exists" => true,
        _ => false,
    }
}

/// How long a pod with `tolerations` may stay on a node with `no_execute` taints:
/// `None` for ever, `Some(ZERO)` not at all. As kube's taint manager: every taint must
/// be tolerated (by the first toleration that does), and the shortest
/// `tolerationSeconds` of those counts. As kube's `DefaultTolerationSeconds`
/// admission, a pod that tolerates neither `not-ready` nor `unreachable` itself
/// tolerates them for `default`.
pub fn eviction_delay(
    tolerations: &[Toleration],
    no_execute: &[&Taint],
    default: Duration,
) -> Option<Duration> {
    if no_execute.is_empty() {
        return None;
    }
    // A toleration's time: None for ever.
    let mut effective: Vec<(&Toleration, Option<Duration>)> = tolerations
        .iter()
        .map(|t| {
            let time = t
                .toleration_seconds
                .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
            (t, time)
        })
        .collect();
    let defaults: Vec<Toleration> = [TAINT_NOT_READY, TAINT_UNREACHABLE]
        .into_iter()
        .filter(|key| {
            let taint = Taint {
                key: (*key).to_owned(),
                effect: NO_EXECUTE.to_owned(),
                ..Taint::default()
            };
            !tolerations.iter().any(|t| tolerates(t, &taint))
        })
        .map(|key| Toleration {
            key: Some(key.to_owned()),
            operator: Some("Exists".to_owned()),
            effect: Some(NO_EXECUTE.to_owned()),
            ..Toleration::default()
        })
        .collect();
    effective.extend(defaults.iter().map(|t| (t, Some(default))));
    let mut shortest: Option<Duration> = None;
    for taint in no_execute {
        let (_, time) = effective
            .iter()
            .find(|(toleration, _)| tolerates(toleration, taint))?;
        if let Some(time) = time {
            shortest = Some(shortest.map_or(*time, |s| s.min(*time)));
        }
    }
    shortest
}

/// [`eviction_delay`] as a decision: not tolerated at all means now.
fn pod_eviction_delay(pod: &Pod, no_execute: &[&Taint], default: Duration) -> Option<Duration> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let tolerated_by = |taint: &&Taint| tolerations.iter().any(|t| tolerates(t, taint));
    let defaulted = |taint: &&Taint| taint.key == TAINT_NOT_READY || taint.key == TAINT_UNREACHABLE;
    if no_execute.iter().any(|t| !tolerated_by(t) && !defaulted(t)) {
        return Some(Duration::ZERO);
    }
    eviction_delay(tolerations, no_execute, default)
}

/// How long ago `time` was (zero if in the future).
fn since(time: &jiff::Timestamp, now: &jiff::Timestamp) -> Duration {
    let millis = now.as_millisecond().saturating_sub(time.as_millisecond());
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

fn is_bound_to(pod: &Pod, node: &str) -> bool {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn ignore_gone(result: Result<(), ApiError>) -> Result<(), ApiError> {
    match result {
        Err(error) if error.code == 404 || error.code == 409 => Ok(()),
        other => other,
    }
}

impl NodeLifecycle {
    fn observe_node(&self, change: &Change) {
        let name = change.object().name().to_owned();
        if change.new.is_none() {
            // Deleted: its pods go at once.
            lock(&self.missing).insert(name.clone(), Instant::now());
            if let Some(node) = &change.old {
                self.recorder.record(
                    node,
                    EventType::Normal,
                    "RemovingNode",
                    &format!("Node {name} event: Removing Node {name} from Controller"),
                );
            }
        } else if change.old.is_none() {
            let node = change.object();
            self.recorder.record(
                node,
                EventType::Normal,
                "RegisteredNode",
                &format!("Node {name} event: Registered Node {name} in Controller"),
            );
        }
        self.queue.add(name);
    }

    fn observe_pod(&self, change: &Change) {
        let Some(new) = &change.new else { return };
        let Object::Pod(pod) = new.as_ref() else {
            return;
        };
        let Some(node) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
        else {
            return;
        };
        // Only nodes that may evict it (or are not nodes) need a look.
        let interesting = match self.informers.nodes.get(node).as_deref() {
            Some(Object::Node(node)) => node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| t.iter().any(|t| t.effect == NO_EXECUTE)),
            _ => true,
        };
        if interesting {
            self.queue.add(node.to_owned());
        }
    }

    /// Every node, and every node name pods are bound to that is not a cached node.
    fn tick(&self) {
        for node in self.informers.nodes.list() {
            self.queue.add(node.name().to_owned());
        }
        for pod in self.informers.pods.list() {
            let Object::Pod(pod) = pod.as_ref() else {
                continue;
            };
            if let Some(node) = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .filter(|n| !n.is_empty())
                && self.informers.nodes.get(node).is_none()
            {
                self.queue.add(node.to_owned());
            }
        }
    }

    /// The cached pods bound to `node`.
    fn pods_on(&self, node: &str) -> Vec<Pod> {
        self.informers
            .pods
            .list()
            .into_iter()
            .filter_map(|pod| match pod.as_ref() {
                Object::Pod(pod) if is_bound_to(pod, node) => Some(pod.as_ref().clone()),
                _ => None,
            })
            .collect()
    }

    async fn delete_pod(&self, pod: &Pod, grace: Option<i64>) -> Result<(), ApiError> {
        let options = DeleteOptions {
            uid: pod.metadata.uid.clone(),
            grace_period_seconds: grace,
            ..DeleteOptions::default()
        };
        let result = self
            .registry
            .delete(
                &kind::POD,
                pod.metadata.namespace.as_deref(),
                pod.metadata.name.as_deref().unwrap_or_default(),
                &options,
            )
            .await
            .map(|_| ());
        ignore_gone(result)
    }

    /// Changes a pod's status through `/status` (this very uid).
    async fn write_pod_status<F>(&self, pod: &Pod, mut change: F) -> Result<(), ApiError>
    where
        F: FnMut(&mut Pod),
    {
        let writer = Writer {
            part: Part::Status,
            ..Writer::main(MANAGER)
        };
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let result = self
            .registry
            .write(
                &kind::POD,
                pod.metadata.namespace.as_deref(),
                name,
                writer,
                |current| {
                    let Some(Object::Pod(current)) = current else {
                        return Err(ApiError::not_found(&kind::POD, name));
                    };
                    if current.metadata.uid != pod.metadata.uid {
                        return Err(ApiError::conflict(&kind::POD, name));
                    }
                    let mut updated = current.as_ref().clone();
                    updated.metadata.resource_version = None;
                    change(&mut updated);
                    Ok(Object::from(updated))
                },
            )
            .await
            .map(|_| ());
        ignore_gone(result)
    }

    /// Sets a pod condition (kube's `UpdatePodCondition`: the transition time changes
    /// with the status).
    fn set_pod_condition(
        pod: &mut Pod,
        type_: &str,
        status: &str,
        reason: Option<&str>,
        message: Option<&str>,
    ) {
        let now = Time(now_timestamp());
        let conditions = pod
            .status
            .get_or_insert_default()
            .conditions
            .get_or_insert_default();
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(condition) => {
                if condition.status != status {
                    condition.last_transition_time = Some(now);
                }
                condition.status = status.to_owned();
                if reason.is_some() {
                    condition.reason = reason.map(str::to_owned);
                    condition.message = message.map(str::to_owned);
                }
            }
            None => conditions.push(PodCondition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: reason.map(str::to_owned),
                message: message.map(str::to_owned),
                last_transition_time: Some(now),
                ..PodCondition::default()
            }),
        }
    }

    /// kube's `MarkPodsNotReady`: the node's pods' Ready conditions become `False`.
    async fn mark_pods_not_ready(&self, node: &str) -> Result<(), ApiError> {
        for pod in self.pods_on(node) {
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
            if ready.is_none_or(|c| c.status == "False") {
                continue;
            }
            self.write_pod_status(&pod, |pod| {
                Self::set_pod_condition(pod, "Ready", "False", None, None);
            })
            .await?;
            self.recorder.record(
                &Object::from(pod),
                EventType::Warning,
                "NodeNotReady",
                "Node is not ready",
            );
        }
        Ok(())
    }

    /// Pods bound to `name`, which is not a node: force-deleted once it has been
    /// missing long enough (at once after a deletion).
    async fn collect_orphans(&self, name: &str) -> Result<Option<Duration>, ApiError> {
        lock(&self.health).remove(name);
        let pods = self.pods_on(name);
        if pods.is_empty() {
            lock(&self.missing).remove(name);
            return Ok(None);
        }
        let due = *lock(&self.missing)
            .entry(name.to_owned())
            .or_insert_with(|| Instant::now() + self.settings.grace);
        let now = Instant::now();
        if due > now {
            return Ok(Some(due - now));
        }
        for pod in pods {
            tracing::info!(
                node = name,
                pod = pod.metadata.name.as_deref().unwrap_or_default(),
                "force-deleting a pod of a node that is gone"
            );
            self.delete_pod(&pod, Some(0)).await?;
        }
        lock(&self.missing).remove(name);
        Ok(None)
    }

    /// Records the Ready heartbeat; true when it has not changed for the grace period.
    fn heartbeat_stale(&self, name: &str, node: &Node) -> bool {
        let heartbeat = condition(node, "Ready").and_then(|c| c.last_heartbeat_time.clone());
        let now = Instant::now();
        let mut health = lock(&self.health);
        let entry = health.entry(name.to_owned()).or_insert_with(|| Health {
            heartbeat: heartbeat.clone(),
            probed: now,
            no_execute_seen: None,
        });
        if entry.heartbeat != heartbeat {
            entry.heartbeat = heartbeat;
            entry.probed = now;
        }
        now.duration_since(entry.probed) > self.settings.grace
    }

    /// Sets the node's conditions to `Unknown` unless its heartbeat moved meanwhile;
    /// returns the node as stored.
    async fn mark_node_unknown(&self, name: &str, seen: &Node) -> Result<Node, ApiError> {
        let seen_heartbeat = condition(seen, "Ready").and_then(|c| c.last_heartbeat_time.clone());
        let writer = Writer {
            part: Part::Status,
            ..Writer::main(MANAGER)
        };
        let now = Time(now_timestamp());
        let written = self
            .registry
            .write(&kind::NODE, None, name, writer, |current| {
                let Some(Object::Node(current)) = current else {
                    return Err(ApiError::not_found(&kind::NODE, name));
                };
                let mut node = current.as_ref().clone();
                let heartbeat =
                    condition(&node, "Ready").and_then(|c| c.last_heartbeat_time.clone());
                if heartbeat == seen_heartbeat {
                    node.metadata.resource_version = None;
                    mark_unknown(&mut node, &now);
                }
                Ok(Object::from(node))
            })
            .await?;
        match written.object {
            Object::Node(node) => Ok(*node),
            _ => Err(ApiError::internal("a node write returned another kind")),
        }
    }

    /// Brings the node's taints in line with its conditions; returns the node as stored.
    async fn write_taints(&self, name: &str) -> Result<Node, ApiError> {
        let now = Time(now_timestamp());
        let written = self
            .registry
            .write(&kind::NODE, None, name, Writer::main(MANAGER), |current| {
                let Some(Object::Node(current)) = current else {
                    return Err(ApiError::not_found(&kind::NODE, name));
                };
                let mut node = current.as_ref().clone();
                node.metadata.resource_version = None;
                reconcile_taints(&mut node, &now);
                Ok(Object::from(node))
            })
            .await?;
        match written.object {
            Object::Node(node) => Ok(*node),
            _ => Err(ApiError::internal("a node write returned another kind")),
        }
    }

    /// The taint manager's pass over the node's pods; returns when to look again.
    async fn evict(&self, name: &str, node: &Node) -> Result<Option<Duration>, ApiError> {
        let no_execute: Vec<&Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter(|t| t.effect == NO_EXECUTE)
            .collect();
        let now = now_timestamp();
        let untimed_since = {
            let mut health = lock(&self.health);
            let entry = health.get_mut(name);
            let untimed = no_execute.iter().any(|t| t.time_added.is_none());
            match entry {
                Some(entry) if untimed => *entry.no_execute_seen.get_or_insert(now),
                Some(entry) => {
                    entry.no_execute_seen = None;
                    now
                }
                None => now,
            }
        };
        if no_execute.is_empty() {
            return Ok(None);
        }
        // Under eviction since the oldest NoExecute taint.
        let tainted_for = no_execute
            .iter()
            .map(|t| t.time_added.as_ref().map_or(untimed_since, |t| t.0))
            .map(|start| since(&start, &now))
            .max()
            .unwrap_or_default();
        let unreachable = condition_status(node, "Ready") == Some("Unknown");
        let mut next: Option<Duration> = None;
        for pod in self.pods_on(name) {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            if let Some(deleting) = &pod.metadata.deletion_timestamp {
                // Its agent cannot finish what it was asked to: finish it here.
                if unreachable && deleting.0 <= now {
                    self.delete_pod(&pod, Some(0)).await?;
                } else if unreachable {
                    let left = since(&now, &deleting.0);
                    next = Some(next.map_or(left, |n| n.min(left)));
                }
                continue;
            }
            let Some(delay) = pod_eviction_delay(&pod, &no_execute, self.settings.eviction_timeout)
            else {
                continue;
            };
            if tainted_for < delay {
                let left = delay - tainted_for;
                next = Some(next.map_or(left, |n| n.min(left)));
                continue;
            }
            tracing::info!(node = name, pod = %format!("{namespace}/{pod_name}"), "evicting a pod from a NoExecute-tainted node");
            self.write_pod_status(&pod, |pod| {
                Self::set_pod_condition(
                    pod,
                    "DisruptionTarget",
                    "True",
                    Some("DeletionByTaintManager"),
                    Some("Taint manager: deleting due to NoExecute taint"),
                );
            })
            .await?;
            self.recorder.record(
                &Object::from(pod.clone()),
                EventType::Normal,
                "TaintManagerEviction",
                &format!("Marking for deletion Pod {namespace}/{pod_name}"),
            );
            self.delete_pod(&pod, None).await?;
            if unreachable {
                self.delete_pod(&pod, Some(0)).await?;
            }
        }
        Ok(next)
    }

    async fn monitor(&self, name: &str, node: Node) -> Result<Option<Duration>, ApiError> {
        let mut node = node;
        if self.heartbeat_stale(name, &node) {
            let was_ready = condition_status(&node, "Ready") == Some("True");
            let needs_marking = MONITORED_CONDITIONS
                .iter()
                .any(|t| condition_status(&node, t) != Some("Unknown"));
            if needs_marking {
                node = self.mark_node_unknown(name, &node).await?;
                let now_unknown = condition_status(&node, "Ready") == Some("Unknown");
                if was_ready && now_unknown {
                    tracing::info!(node = name, "node stopped posting its status");
                    self.recorder.record(
                        &Object::from(node.clone()),
                        EventType::Normal,
                        "NodeNotReady",
                        &format!("Node {name} status is now: NodeNotReady"),
                    );
                    self.mark_pods_not_ready(name).await?;
                }
            }
        }
        let mut check = node.clone();
        if reconcile_taints(&mut check, &Time(now_timestamp())) {
            node = self.write_taints(name).await?;
        }
        let next = self.evict(name, &node).await?;
        Ok(next.filter(|d| *d < self.settings.monitor_period))
    }
}

impl Reconciler for NodeLifecycle {
    fn name(&self) -> &'static str {
        "node-lifecycle-controller"
    }

    async fn reconcile(&self, name: &str) -> Result<Option<Duration>, ApiError> {
        let node = match self.informers.nodes.get(name).as_deref() {
            Some(Object::Node(node)) => Some(node.as_ref().clone()),
            _ => match self.registry.get(&kind::NODE, None, name).await {
                Ok(Object::Node(node)) => Some(*node),
                Ok(_) => None,
                Err(error) if error.code == 404 => None,
                Err(error) => return Err(error),
            },
        };
        match node {
            Some(node) => {
                lock(&self.missing).remove(name);
                self.monitor(name, node).await
            }
            None => self.collect_orphans(name).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use skiff_api::kind::{EVENT, NODE, POD};
    use skiff_proto::node::HeartbeatRequest;
    use skiff_proto::node::node_server::Node as _;
    use tonic::Request;

    use super::*;
    use crate::apiserver::ListOptions;
    use crate::nodes::NodeService;
    use crate::testing::{create, eventually, object, registry};

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Taint::default()
        }
    }

    fn toleration(value: Value) -> Toleration {
        serde_json::from_value(value).unwrap()
    }

    const FIVE_MIN: Duration = Duration::from_secs(300);

    #[test]
    fn pods_without_tolerations_get_the_default_timeout() {
        let unreachable = taint(TAINT_UNREACHABLE, NO_EXECUTE);
        let not_ready = taint(TAINT_NOT_READY, NO_EXECUTE);
        assert_eq!(eviction_delay(&[], &[], FIVE_MIN), None);
        assert_eq!(
            eviction_delay(&[], &[&unreachable], FIVE_MIN),
            Some(FIVE_MIN)
        );
        assert_eq!(
            eviction_delay(&[], &[&unreachable, &not_ready], FIVE_MIN),
            Some(FIVE_MIN)
        );
    }

    #[test]
    fn tolerations_set_the_time_and_the_shortest_wins() {
        let unreachable = taint(TAINT_UNREACHABLE, NO_EXECUTE);
        let custom = Taint {
            value: Some("x".into()),
            ..taint("example.com/drain", NO_EXECUTE)
        };
        let own = toleration(
            json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}),
        );
        assert_eq!(
            eviction_delay(std::slice::from_ref(&own), &[&unreachable], FIVE_MIN),
            Some(Duration::from_secs(30))
        );
        // For ever: a toleration without tolerationSeconds.
        let forever = toleration(json!({"key": TAINT_UNREACHABLE, "operator": "Exists"}));
        assert_eq!(
            eviction_delay(std::slice::from_ref(&forever), &[&unreachable], FIVE_MIN),
            None
        );
        // Tolerate-everything.
        let everything = toleration(json!({"operator": "Exists"}));
        assert_eq!(
            eviction_delay(&[everything], &[&unreachable, &custom], FIVE_MIN),
            None
        );
        // A custom taint not tolerated at all: out now.
        let pod: Pod = serde_json::from_value(json!({"spec": {"containers": []}})).unwrap();
        assert_eq!(
            pod_eviction_delay(&pod, &[&unreachable, &custom], FIVE_MIN),
            Some(Duration::ZERO)
        );
        // Tolerated by value for 10 s, unreachable for 30 s: 10 s.
        let by_value = toleration(
            json!({"key": "example.com/drain", "operator": "Equal", "value": "x", "effect": "NoExecute", "tolerationSeconds": 10}),
        );
        assert_eq!(
            eviction_delay(&[own, by_value.clone()], &[&unreachable, &custom], FIVE_MIN),
            Some(Duration::from_secs(10))
        );
        // The wrong value does not tolerate.
        let wrong = toleration(json!({"key": "example.com/drain", "value": "y"}));
        assert!(!tolerates(&wrong, &custom));
        assert!(tolerates(&by_value, &custom));
        // Zero or negative seconds: at once.
        let zero = toleration(
            json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "tolerationSeconds": 0}),
        );
        assert_eq!(
            eviction_delay(&[zero], &[&unreachable], FIVE_MIN),
            Some(Duration::ZERO)
        );
        // Tolerating unreachable for ever leaves the not-ready default in place.
        let not_ready = taint(TAINT_NOT_READY, NO_EXECUTE);
        assert_eq!(
            eviction_delay(&[forever], &[&not_ready], FIVE_MIN),
            Some(FIVE_MIN)
        );
    }

    fn node_value(name: &str, ready: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"taints": [{"key": "example.com/keep", "effect": "NoSchedule"}]},
            "status": {"conditions": [
                {"type": "Ready", "status": ready, "reason": "KubeletReady", "lastHeartbeatTime": "2024-01-01T00:00:10Z"},
                {"type": "MemoryPressure", "status": "False"},
            ]}
        })
    }

    fn node(ready: &str) -> Node {
        serde_json::from_value(node_value("n1", ready)).unwrap()
    }

    fn taint_pairs(node: &Node) -> Vec<(String, String, bool)> {
        node.spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|t| (t.key, t.effect, t.time_added.is_some()))
            .collect()
    }

    #[test]
    fn conditions_become_unknown_and_taints_follow() {
        let now = Time(now_timestamp());
        let mut n = node("True");
        assert!(!reconcile_taints(&mut n, &now));
        assert!(mark_unknown(&mut n, &now));
        assert!(!mark_unknown(&mut n, &now));
        let ready = condition(&n, "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(
            ready.last_heartbeat_time.as_ref().unwrap().0.as_second(),
            1_704_067_210
        );
        assert_eq!(condition_status(&n, "MemoryPressure"), Some("Unknown"));
        let never = condition(&n, "DiskPressure").unwrap();
        assert_eq!(never.reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert!(reconcile_taints(&mut n, &now));
        assert_eq!(
            taint_pairs(&n),
            [
                ("example.com/keep".into(), NO_SCHEDULE.into(), false),
                (TAINT_UNREACHABLE.into(), NO_SCHEDULE.into(), false),
                (TAINT_UNREACHABLE.into(), NO_EXECUTE.into(), true),
            ]
        );
        assert!(!reconcile_taints(&mut n, &now));
        // Ready False from the agent: not-ready instead of unreachable.
        n.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
        assert!(reconcile_taints(&mut n, &now));
        assert_eq!(
            taint_pairs(&n),
            [
                ("example.com/keep".into(), NO_SCHEDULE.into(), false),
                (TAINT_NOT_READY.into(), NO_SCHEDULE.into(), false),
                (TAINT_NOT_READY.into(), NO_EXECUTE.into(), true),
            ]
        );
        // Ready again (and cordoned): only the cordon's taint and the user's.
        n.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into();
        n.spec.as_mut().unwrap().unschedulable = Some(true);
        assert!(reconcile_taints(&mut n, &now));
        assert_eq!(
            taint_pairs(&n),
            [
                ("example.com/keep".into(), NO_SCHEDULE.into(), false),
                (TAINT_UNSCHEDULABLE.into(), NO_SCHEDULE.into(), false),
            ]
        );
    }

    fn conditions_json(ready: &str) -> Vec<u8> {
        serde_json::to_vec(&json!([
            {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
            {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure"},
            {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID"},
            {"type": "Ready", "status": ready, "reason": "KubeletReady"},
        ]))
        .unwrap()
    }

    async fn heartbeat(service: &NodeService, ready: &str) {
        service
            .heartbeat(Request::new(HeartbeatRequest {
                node_name: "n1".into(),
                conditions_json: conditions_json(ready),
            }))
            .await
            .unwrap();
    }

    async fn stored_node(registry: &Registry) -> Node {
        match registry.get(&NODE, None, "n1").await.unwrap() {
            Object::Node(node) => *node,
            other => panic!("not a node: {other:?}"),
        }
    }

    fn has_taint(node: &Node, key: &str, effect: &str) -> bool {
        node.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key == key && t.effect == effect))
    }

    fn pod_value(name: &str, tolerations: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": "n1", "tolerations": tolerations,
                     "containers": [{"name": "c", "image": "i:1"}]}
        })
    }

    async fn set_ready(registry: &Registry, name: &str) {
        let writer = Writer {
            part: Part::Status,
            ..Writer::main("test")
        };
        registry
            .write(&POD, Some("default"), name, writer, |current| {
                let Some(Object::Pod(pod)) = current else {
                    panic!("no pod")
                };
                let mut pod = pod.as_ref().clone();
                pod.metadata.resource_version = None;
                pod.status.get_or_insert_default().conditions = Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..PodCondition::default()
                }]);
                Ok(Object::from(pod))
            })
            .await
            .unwrap();
    }

    fn fast() -> Settings {
        Settings {
            grace: Duration::from_secs(1),
            eviction_timeout: Duration::from_secs(1),
            monitor_period: Duration::from_millis(100),
        }
    }

    #[tokio::test]
    async fn a_silent_node_is_tainted_its_pods_evicted_and_it_recovers() {
        let (_dir, registry) = registry().await;
        let service = NodeService::new(registry.clone(), CancellationToken::new());
        let mut value = node_value("n1", "True");
        value["spec"] = json!({});
        registry
            .create(object(value), None, Writer::main("test"))
            .await
            .unwrap();
        heartbeat(&service, "True").await;
        create(&registry, Some("default"), pod_value("doomed", json!([]))).await;
        set_ready(&registry, "doomed").await;
        create(
            &registry,
            Some("default"),
            pod_value(
                "tolerant",
                json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]),
            ),
        )
        .await;

        let cancel = CancellationToken::new();
        let informers = Informers::start(&registry, &cancel);
        informers.wait_synced().await;
        start_with(&registry, &informers, &cancel, fast());

        // Heartbeats stop: Unknown and tainted after about a second.
        let silent = eventually(
            "the node unknown and tainted",
            Duration::from_secs(10),
            || async {
                let node = stored_node(&registry).await;
                (condition_status(&node, "Ready") == Some("Unknown")
                    && has_taint(&node, TAINT_UNREACHABLE, NO_EXECUTE)
                    && has_taint(&node, TAINT_UNREACHABLE, NO_SCHEDULE))
                .then_some(node)
            },
        )
        .await;
        let ready = condition(&silent, "Ready").unwrap();
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(condition_status(&silent, "MemoryPressure"), Some("Unknown"));

        // The pod without a toleration is evicted (force-deleted: the node is
        // unreachable); the tolerant one stays.
        eventually("the doomed pod gone", Duration::from_secs(10), || async {
            match registry.get(&POD, Some("default"), "doomed").await {
                Err(error) if error.code == 404 => Some(()),
                _ => None,
            }
        })
        .await;
        let tolerant = registry
            .get(&POD, Some("default"), "tolerant")
            .await
            .unwrap();
        assert!(tolerant.metadata().deletion_timestamp.is_none());
        let events = eventually("the events", Duration::from_secs(5), || async {
            let events = registry
                .list(&EVENT, Some("default"), &ListOptions::default())
                .await
                .unwrap()
                .items;
            let reasons: Vec<(String, String)> = events
                .iter()
                .map(|e| {
                    let v = e.to_value();
                    (
                        v["reason"].as_str().unwrap_or_default().to_owned(),
                        v["message"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            let has = |reason: &str, message: &str| {
                reasons.iter().any(|(r, m)| r == reason && m == message)
            };
            (has(
                "TaintManagerEviction",
                "Marking for deletion Pod default/doomed",
            ) && has("NodeNotReady", "Node n1 status is now: NodeNotReady"))
            .then_some(events)
        })
        .await;
        let eviction = events
            .iter()
            .map(Object::to_value)
            .find(|e| e["reason"] == "TaintManagerEviction")
            .unwrap();
        assert_eq!(eviction["source"]["component"], "node-controller");

        // Heartbeats resume: the taints go.
        let beating = {
            let service = service.clone();
            tokio::spawn(async move {
                loop {
                    heartbeat(&service, "True").await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        eventually("the taints removed", Duration::from_secs(10), || async {
            let node = stored_node(&registry).await;
            (condition_status(&node, "Ready") == Some("True")
                && !has_taint(&node, TAINT_UNREACHABLE, NO_EXECUTE)
                && !has_taint(&node, TAINT_UNREACHABLE, NO_SCHEDULE))
            .then_some(())
        })
        .await;
        beating.abort();

        // Ready False from the agent: not-ready.
        let beating = {
            let service = service.clone();
            tokio::spawn(async move {
                loop {
                    heartbeat(&service, "False").await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        eventually("not-ready taints", Duration::from_secs(10), || async {
            let node = stored_node(&registry).await;
            (has_taint(&node, TAINT_NOT_READY, NO_EXECUTE)
                && has_taint(&node, TAINT_NOT_READY, NO_SCHEDULE)
                && !has_taint(&node, TAINT_UNREACHABLE, NO_EXECUTE))
            .then_some(())
        })
        .await;
        beating.abort();
        cancel.cancel();
    }

    #[tokio::test]
    async fn pods_of_a_deleted_node_are_force_deleted() {
        let (_dir, registry) = registry().await;
        let service = NodeService::new(registry.clone(), CancellationToken::new());
        let mut value = node_value("n1", "True");
        value["spec"] = json!({});
        registry
            .create(object(value), None, Writer::main("test"))
            .await
            .unwrap();
        heartbeat(&service, "True").await;
        create(&registry, Some("default"), pod_value("p1", json!([]))).await;
        let cancel = CancellationToken::new();
        let informers = Informers::start(&registry, &cancel);
        informers.wait_synced().await;
        start_with(
            &registry,
            &informers,
            &cancel,
            Settings {
                grace: Duration::from_secs(30),
                ..fast()
            },
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        registry.get(&POD, Some("default"), "p1").await.unwrap();
        registry
            .delete(&NODE, None, "n1", &DeleteOptions::default())
            .await
            .unwrap();
        eventually("the pod gone", Duration::from_secs(10), || async {
            match registry.get(&POD, Some("default"), "p1").await {
                Err(error) if error.code == 404 => Some(()),
                _ => None,
            }
        })
        .await;
        cancel.cancel();
    }
}
