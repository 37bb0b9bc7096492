//! The scheduler, as kube-scheduler: places pods that name no node on one.
//!
//! One task owns the state. The pod and node informers feed it changes; it keeps a
//! [`cache::Cache`] of every node with the resources, host ports and controllers of the
//! pods on it (updated incrementally, including pods it has just placed — *assumed* —
//! until the informer shows them bound), and an active queue of pods to place. Each
//! decision filters and scores nodes in memory ([`score::schedule`]); the bindings are
//! written concurrently (up to [`MAX_IN_FLIGHT`]) so the store can batch them, and a
//! failed binding forgets its assumption and retries the pod after a back-off.
//!
//! A pod no node fits gets `PodScheduled=False` (`Unschedulable`, with kube-scheduler's
//! `0/N nodes are available: …` message) and a `FailedScheduling` event, and waits until
//! a node is added or changes, a placed pod goes away, or [`UNSCHEDULABLE_RETRY`]
//! passes — and, as kube's back-off queue, no sooner than 1–10 s (doubling per failed
//! attempt) after its last attempt.
//!
//! Files: [`cache`] (node and pod accounting), [`filter`] (may a pod run on a node, and
//! why not), [`score`] (which feasible node is best); this module is the I/O loop.

pub mod cache;
pub mod filter;
pub mod score;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::PodCondition;
use rand::SeedableRng;
use rand::rngs::StdRng;
use skiff_api::meta::{Time, jiff};
use skiff_api::types::Pod;
use skiff_api::{Object, kind};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::apiserver::{ApiError, Part, Registry, Writer, now_timestamp};
use crate::controllers::events::{EventType, Recorder};
use crate::controllers::informer::key_of;
use crate::controllers::{Change, Informers};

use cache::{Cache, NodeFacts, PodInfo};

/// The scheduler's name: pods with this `spec.schedulerName` (or none) are its, and it
/// writes and reports as this component.
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// Bindings (and unschedulable reports) written at once.
pub const MAX_IN_FLIGHT: usize = 256;
/// Decisions made between two looks at the informers' changes.
const BATCH: usize = 128;
/// How often pods no node fit are tried again even if nothing seems to have changed
/// (kube's `podMaxInUnschedulablePodsDuration` is 5 minutes; changes it does not
/// watch, such as a pod's deletion grace period ending, make a shorter one worthwhile).
pub const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(30);
/// The least time between two retries of every unschedulable pod prompted by cluster
/// changes, so a burst of node updates or pod deletions retries them once.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// The first retry delay of a pod whose binding failed (kube's
/// `podInitialBackoffDuration`).
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest retry delay (kube's `podMaxBackoffDuration`).
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long an unchanged `FailedScheduling` reason goes unrepeated.
const REPORT_REPEAT: Duration = Duration::from_secs(300);
/// Changes taken from each informer per turn of the loop, so decisions keep flowing
/// under a flood of changes.
const DRAIN: usize = 4096;

/// Starts the scheduler; it stops when `cancel` fires.
pub fn start(registry: &Registry, informers: &Informers, cancel: &CancellationToken) {
    // Subscribing replays the cached objects as creations: nodes first, so the first
    // decisions see them.
    let nodes = informers.nodes.subscribe();
    let pods = informers.pods.subscribe();
    let scheduler = Scheduler::new(registry.clone());
    let cancel = cancel.clone();
    tokio::spawn(async move { scheduler.run(pods, nodes, cancel).await });
}

/// Where a pod waiting for a node stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In the active queue.
    Active,
    /// Placed; the binding is being written.
    Binding,
    /// No node fit; waits for a change or the periodic retry.
    Unschedulable,
    /// Waits out its back-off: its binding failed, or it was unschedulable and a
    /// change came sooner than its back-off allows a retry.
    BackingOff,
}

/// A pod waiting for a node.
struct Pending {
    /// Its latest state from the informer.
    pod: Arc<Object>,
    state: State,
    /// Failed attempts, for the back-off.
    attempts: u32,
    /// When it was last tried.
    last_attempt: Instant,
    /// The last `FailedScheduling` message recorded for it, and when.
    reported: Option<(String, Instant)>,
}

/// What a write task reports back to the loop.
struct Outcome {
    key: String,
    uid: String,
    write: Write,
    result: Result<(), ApiError>,
}

/// What a write task wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    /// The binding (then `PodScheduled=True` and the `Scheduled` event).
    Binding,
    /// The unschedulable status (and the `FailedScheduling` event).
    Unschedulable,
}

struct Scheduler {
    registry: Registry,
    recorder: Recorder,
    cache: Cache,
    pending: HashMap<String, Pending>,
    active: VecDeque<String>,
    backoff: BinaryHeap<Reverse<(Instant, String)>>,
    unschedulable: HashSet<String>,
    /// A change may have made unschedulable pods fit.
    flush_requested: bool,
    last_flush: Instant,
    next_periodic_flush: Instant,
    /// Where the next search over the nodes starts (kube's `nextStartNodeIndex`).
    next_start: usize,
    in_flight: usize,
    outcomes_tx: mpsc::UnboundedSender<Outcome>,
    outcomes_rx: mpsc::UnboundedReceiver<Outcome>,
    rng: StdRng,
}

impl Scheduler {
    fn new(registry: Registry) -> Self {
        let (outcomes_tx, outcomes_rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        Self {
            recorder: Recorder::new(registry.clone(), SCHEDULER_NAME),
            registry,
            cache: Cache::default(),
            pending: HashMap::new(),
            active: VecDeque::new(),
            backoff: BinaryHeap::new(),
            unschedulable: HashSet::new(),
            flush_requested: false,
            last_flush: now,
            next_periodic_flush: now + UNSCHEDULABLE_RETRY,
            next_start: 0,
            in_flight: 0,
            outcomes_tx,
            outcomes_rx,
            rng: StdRng::from_rng(&mut rand::rng()),
        }
    }

    async fn run(
        mut self,
        mut pods: mpsc::UnboundedReceiver<Change>,
        mut nodes: mpsc::UnboundedReceiver<Change>,
        cancel: CancellationToken,
    ) {
        tracing::info!("scheduler started");
        // Take the informers' replay of what they hold before deciding anything, so no
        // decision misses a pod already bound (kube-scheduler waits for its cache too).
        while let Ok(change) = nodes.try_recv() {
            self.on_node(&change);
        }
        while let Ok(change) = pods.try_recv() {
            self.on_pod(&change);
        }
        loop {
            if cancel.is_cancelled() {
                return;
            }
            // Take what has arrived: nodes first, so pods see them.
            for _ in 0..DRAIN {
                match nodes.try_recv() {
                    Ok(change) => self.on_node(&change),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            for _ in 0..DRAIN {
                match pods.try_recv() {
                    Ok(change) => self.on_pod(&change),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            while let Ok(outcome) = self.outcomes_rx.try_recv() {
                self.on_outcome(outcome);
            }
            let now = Instant::now();
            self.requeue(now);
            let mut decided = 0;
            while self.in_flight < MAX_IN_FLIGHT && decided < BATCH {
                let Some(key) = self.active.pop_front() else {
                    break;
                };
                decided += usize::from(self.schedule_one(key));
            }
            if decided > 0 {
                // Let the API server and the write tasks run between batches.
                tokio::task::yield_now().await;
                continue;
            }
            let wake = self.next_wake();
            tokio::select! {
                () = cancel.cancelled() => return,
                change = nodes.recv() => match change {
                    Some(change) => self.on_node(&change),
                    None => return,
                },
                change = pods.recv() => match change {
                    Some(change) => self.on_pod(&change),
                    None => return,
                },
                Some(outcome) = self.outcomes_rx.recv() => self.on_outcome(outcome),
                () = sleep_until(wake) => {}
            }
        }
    }

    /// When the loop must look again without a change arriving.
    fn next_wake(&self) -> Instant {
        let mut wake = self.next_periodic_flush;
        if self.flush_requested {
            wake = wake.min(self.last_flush + FLUSH_INTERVAL);
        }
        if let Some(Reverse((due, _))) = self.backoff.peek() {
            wake = wake.min(*due);
        }
        wake
    }

    /// Moves pods whose back-off is over, and (when due) the unschedulable ones, to the
    /// active queue.
    fn requeue(&mut self, now: Instant) {
        while let Some(Reverse((due, _))) = self.backoff.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((_, key))) = self.backoff.pop() else {
                break;
            };
            if let Some(pending) = self.pending.get_mut(&key)
                && pending.state == State::BackingOff
            {
                pending.state = State::Active;
                self.active.push_back(key);
            }
        }
        let periodic = now >= self.next_periodic_flush;
        let prompted = self.flush_requested && now >= self.last_flush + FLUSH_INTERVAL;
        if periodic || prompted {
            self.flush_requested = false;
            self.last_flush = now;
            self.next_periodic_flush = now + UNSCHEDULABLE_RETRY;
            // Each goes back after its own back-off from its last attempt (as kube's
            // backoffQ), so a large backlog is not re-examined on every change.
            for key in self.unschedulable.drain() {
                let Some(pending) = self.pending.get_mut(&key) else {
                    continue;
                };
                if pending.state != State::Unschedulable {
                    continue;
                }
                let due = pending.last_attempt + backoff(pending.attempts);
                if due <= now {
                    pending.state = State::Active;
                    self.active.push_back(key);
                } else {
                    pending.state = State::BackingOff;
                    self.backoff.push(Reverse((due, key)));
                }
            }
        }
    }

    fn on_node(&mut self, change: &Change) {
        match &change.new {
            Some(object) => {
                let Object::Node(node) = &**object else {
                    return;
                };
                if self.cache.set_node(object.name(), NodeFacts::of(node)) {
                    // Added, or its readiness, capacity, labels or taints changed.
                    self.flush_requested = true;
                }
            }
            None => self.cache.remove_node(change.object().name()),
        }
    }

    fn on_pod(&mut self, change: &Change) {
        let object = change.object();
        let key = key_of(object);
        let Some(new) = &change.new else {
            self.forget_pending(&key);
            if self.cache.remove_pod(&key) {
                self.flush_requested = true;
            }
            return;
        };
        let Object::Pod(pod) = &**new else {
            return;
        };
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        if let Some(node) = node_name(pod) {
            self.forget_pending(&key);
            if is_terminal(pod) {
                // A finished pod holds no resources (kube-scheduler drops it too).
                if self.cache.remove_pod(&key) {
                    self.flush_requested = true;
                }
            } else if !self.cache.confirm(&key, uid, node) {
                self.cache.add_pod(&key, uid, node, PodInfo::of(pod), false);
            }
            return;
        }
        if self.cache.is_assumed(&key) {
            // Placed by us; the informer has not caught up with the binding yet.
            if let Some(pending) = self.pending.get_mut(&key) {
                pending.pod = new.clone();
            }
            return;
        }
        if !is_ours(pod) {
            self.forget_pending(&key);
            return;
        }
        match self.pending.entry(key) {
            Entry::Vacant(vacant) => {
                self.active.push_back(vacant.key().clone());
                vacant.insert(Pending {
                    pod: new.clone(),
                    state: State::Active,
                    attempts: 0,
                    last_attempt: Instant::now(),
                    reported: None,
                });
            }
            Entry::Occupied(mut occupied) => {
                let pending = occupied.get_mut();
                let respecified = match &*pending.pod {
                    Object::Pod(old) => {
                        old.spec != pod.spec || old.metadata.uid != pod.metadata.uid
                    }
                    _ => true,
                };
                pending.pod = new.clone();
                // Its own unschedulable status is no reason to try again; a new spec is.
                if respecified && pending.state == State::Unschedulable {
                    pending.state = State::Active;
                    let key = occupied.key().clone();
                    self.unschedulable.remove(&key);
                    self.active.push_back(key);
                }
            }
        }
    }

    /// Stops trying to place `key`.
    fn forget_pending(&mut self, key: &str) {
        if self.pending.remove(key).is_some() {
            self.unschedulable.remove(key);
        }
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        self.in_flight -= 1;
        let Outcome {
            key,
            uid,
            write,
            result,
        } = outcome;
        let ours = |pending: &Pending| pending.pod.metadata().uid.as_deref() == Some(uid.as_str());
        match (write, result) {
            (Write::Binding, Ok(())) => {
                // The assumption stays until the informer shows the pod bound.
                if self.pending.get(&key).is_some_and(ours) {
                    self.pending.remove(&key);
                }
            }
            (Write::Binding, Err(error)) => {
                self.cache.forget(&key, &uid);
                let Some(pending) = self
                    .pending
                    .get_mut(&key)
                    .filter(|p| ours(p) && p.state == State::Binding)
                else {
                    return;
                };
                if error.code == 404 {
                    self.pending.remove(&key);
                    return;
                }
                tracing::debug!(pod = %key, %error, "binding failed; retrying after a back-off");
                pending.attempts = pending.attempts.saturating_add(1);
                pending.state = State::BackingOff;
                let delay = backoff(pending.attempts);
                self.backoff.push(Reverse((Instant::now() + delay, key)));
            }
            (Write::Unschedulable, Ok(())) => {}
            (Write::Unschedulable, Err(error)) => {
                tracing::debug!(pod = %key, %error, "failed to report an unschedulable pod");
            }
        }
    }

    /// Tries to place pod `key`; returns whether it was a decision (the key was still
    /// active).
    fn schedule_one(&mut self, key: String) -> bool {
        let Some(pending) = self.pending.get_mut(&key) else {
            return false;
        };
        if pending.state != State::Active {
            return false;
        }
        let object = pending.pod.clone();
        let Object::Pod(pod) = &*object else {
            self.pending.remove(&key);
            return false;
        };
        if !is_ours(pod) || node_name(pod).is_some() {
            // Changed while its binding was in flight (being deleted, say).
            self.forget_pending(&key);
            return false;
        }
        pending.last_attempt = Instant::now();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let info = PodInfo::of(pod);
        let nodes = self.cache.nodes();
        let decision = score::schedule(
            &info,
            nodes,
            self.cache.node_count(),
            self.next_start,
            &mut self.rng,
        );
        match decision {
            Ok(choice) => {
                self.next_start = (self.next_start + choice.processed) % nodes.len().max(1);
                let node = nodes[choice.node].name.clone();
                tracing::debug!(pod = %key, %node, "placing pod");
                pending.state = State::Binding;
                self.cache.add_pod(&key, &uid, &node, info, true);
                self.spawn_bind(key, uid, object, node);
            }
            Err(message) => {
                tracing::debug!(pod = %key, %message, "pod is unschedulable");
                pending.state = State::Unschedulable;
                pending.attempts = pending.attempts.saturating_add(1);
                self.unschedulable.insert(key.clone());
                let status_current = has_condition(pod, "False", Some(&message));
                let report = !pending
                    .reported
                    .as_ref()
                    .is_some_and(|(last, at)| *last == message && at.elapsed() < REPORT_REPEAT);
                if report {
                    pending.reported = Some((message.clone(), Instant::now()));
                }
                if report || !status_current {
                    self.spawn_unschedulable(key, uid, object, message, report, !status_current);
                }
            }
        }
        true
    }

    fn spawn_bind(&mut self, key: String, uid: String, pod: Arc<Object>, node: String) {
        self.in_flight += 1;
        let registry = self.registry.clone();
        let recorder = self.recorder.clone();
        let outcomes = self.outcomes_tx.clone();
        tokio::spawn(async move {
            let result = bind(&registry, &recorder, &pod, &uid, &node).await;
            let _ = outcomes.send(Outcome {
                key,
                uid,
                write: Write::Binding,
                result,
            });
        });
    }

    fn spawn_unschedulable(
        &mut self,
        key: String,
        uid: String,
        pod: Arc<Object>,
        message: String,
        record: bool,
        write_status: bool,
    ) {
        self.in_flight += 1;
        let registry = self.registry.clone();
        let recorder = self.recorder.clone();
        let outcomes = self.outcomes_tx.clone();
        tokio::spawn(async move {
            if record {
                recorder.record(&pod, EventType::Warning, "FailedScheduling", &message);
            }
            let result = if write_status {
                let condition = pod_scheduled("False", Some("Unschedulable"), Some(&message));
                set_condition(&registry, &pod, &uid, condition, true).await
            } else {
                Ok(())
            };
            let _ = outcomes.send(Outcome {
                key,
                uid,
                write: Write::Unschedulable,
                result,
            });
        });
    }
}

/// The retry delay after `attempts` failures: 1 s doubling to 10 s.
fn backoff(attempts: u32) -> Duration {
    INITIAL_BACKOFF
        .checked_mul(1 << attempts.saturating_sub(1).min(8))
        .map_or(MAX_BACKOFF, |delay| delay.min(MAX_BACKOFF))
}

/// The pod's `spec.nodeName`, if set.
fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.node_name.as_deref())
        .filter(|name| !name.is_empty())
}

/// Whether the pod has finished (`Succeeded` or `Failed`).
fn is_terminal(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .is_some_and(|phase| phase == "Succeeded" || phase == "Failed")
}

/// Whether this scheduler should place the (unbound) pod: it is not being deleted, has
/// not finished, and names this scheduler or none.
fn is_ours(pod: &Pod) -> bool {
    let scheduler = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.scheduler_name.as_deref())
        .unwrap_or_default();
    pod.metadata.deletion_timestamp.is_none()
        && !is_terminal(pod)
        && (scheduler.is_empty() || scheduler == SCHEDULER_NAME)
}

/// Whether the pod's `PodScheduled` condition has `status` (and `message`, if given).
fn has_condition(pod: &Pod, status: &str, message: Option<&str>) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|c| c.type_ == "PodScheduled"))
        .is_some_and(|c| {
            c.status == status && message.is_none_or(|m| c.message.as_deref() == Some(m))
        })
}

/// A `PodScheduled` condition (its transition time is set when written).
fn pod_scheduled(status: &str, reason: Option<&str>, message: Option<&str>) -> PodCondition {
    PodCondition {
        type_: "PodScheduled".to_owned(),
        status: status.to_owned(),
        reason: reason.map(str::to_owned),
        message: message.map(str::to_owned),
        ..PodCondition::default()
    }
}

/// Now, at the second precision Kubernetes stores.
fn now() -> Time {
    let seconds = now_timestamp().as_second();
    Time(jiff::Timestamp::from_second(seconds).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
}

/// Puts `condition` into the pod's status as kube's `UpdatePodCondition`: the
/// transition time moves only when the status changes.
fn put_condition(pod: &mut Pod, mut condition: PodCondition) {
    let conditions = pod
        .status
        .get_or_insert_default()
        .conditions
        .get_or_insert_default();
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            condition.last_transition_time = if existing.status == condition.status {
                existing.last_transition_time.clone()
            } else {
                Some(now())
            };
            *existing = condition;
        }
        None => {
            condition.last_transition_time = Some(now());
            conditions.push(condition);
        }
    }
}

/// Binds the pod to `node` through `pods/binding`'s write path (only if it is still the
/// same pod, unbound and not being deleted — the binding endpoint's rules), marks it
/// `PodScheduled=True` and records `Scheduled`.
async fn bind(
    registry: &Registry,
    recorder: &Recorder,
    pod: &Object,
    uid: &str,
    node: &str,
) -> Result<(), ApiError> {
    let namespace = pod.namespace();
    let name = pod.name();
    let writer = Writer {
        manager: SCHEDULER_NAME,
        part: Part::Binding,
        apply: false,
        dry_run: false,
    };
    let written = registry
        .write(&kind::POD, namespace, name, writer, |current| {
            let current = current_pod(current, name, uid)?;
            let mut bound = current.clone();
            let spec = bound.spec.get_or_insert_default();
            if let Some(assigned) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
                return Err(ApiError::conflict_with(
                    &kind::POD,
                    name,
                    &format!("pod {name} is already assigned to node \"{assigned}\""),
                ));
            }
            if bound.metadata.deletion_timestamp.is_some() {
                return Err(ApiError::conflict_with(
                    &kind::POD,
                    name,
                    &format!("pod {name} is being deleted, cannot be assigned to a host"),
                ));
            }
            spec.node_name = Some(node.to_owned());
            // Unpinned: a concurrent status write makes the registry re-read and retry.
            bound.metadata.resource_version = None;
            Ok(Object::Pod(Box::new(bound)))
        })
        .await?;
    let bound = match &written.object {
        Object::Pod(bound) => !has_condition(bound, "True", None),
        _ => false,
    };
    if bound
        && let Err(error) = set_condition(
            registry,
            &written.object,
            uid,
            pod_scheduled("True", None, None),
            false,
        )
        .await
    {
        tracing::debug!(pod = %key_of(pod), %error, "failed to set PodScheduled");
    }
    let namespace = namespace.unwrap_or_default();
    recorder.record(
        &written.object,
        EventType::Normal,
        "Scheduled",
        &format!("Successfully assigned {namespace}/{name} to {node}"),
    );
    Ok(())
}

/// The pod in `current` if it is the one with `uid`.
fn current_pod<'a>(
    current: Option<&'a Object>,
    name: &str,
    uid: &str,
) -> Result<&'a Pod, ApiError> {
    let Some(Object::Pod(pod)) = current else {
        return Err(ApiError::not_found(&kind::POD, name));
    };
    let stored = pod.metadata.uid.as_deref().unwrap_or_default();
    if stored != uid {
        return Err(ApiError::conflict_with(
            &kind::POD,
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {stored}"
            ),
        ));
    }
    Ok(pod)
}

/// Writes the pod's `PodScheduled` condition through `/status` (a no-op if it is already
/// so); `unbound_only` leaves a pod bound meanwhile alone.
async fn set_condition(
    registry: &Registry,
    pod: &Object,
    uid: &str,
    condition: PodCondition,
    unbound_only: bool,
) -> Result<(), ApiError> {
    let name = pod.name();
    let writer = Writer {
        manager: SCHEDULER_NAME,
        part: Part::Status,
        apply: false,
        dry_run: false,
    };
    registry
        .write(&kind::POD, pod.namespace(), name, writer, |current| {
            let current = current_pod(current, name, uid)?;
            let mut updated = current.clone();
            if !(unbound_only && node_name(current).is_some()) {
                put_condition(&mut updated, condition.clone());
            }
            updated.metadata.resource_version = None;
            Ok(Object::Pod(Box::new(updated)))
        })
        .await?;
    Ok(())
}
