//! The ReplicaSet controller, as kube-controller-manager's: keeps `spec.replicas` active
//! pods that match each ReplicaSet's selector and are controlled by it.
//!
//! A sync of one ReplicaSet claims its pods (adopting matching orphans, releasing owned
//! pods that stopped matching, both through uid-checked writes), creates missing pods
//! from the template in slow-start batches (1, 2, 4, …, at most [`BURST_REPLICAS`] per
//! sync) or deletes the surplus in kube's order (unscheduled, pending, not ready, … go
//! first), and writes the status (`replicas`, `fullyLabeledReplicas`, `readyReplicas`,
//! `availableReplicas`, `observedGeneration`, the `ReplicaFailure` condition).
//!
//! Like kube's, it keeps *expectations* per ReplicaSet: after creating or deleting pods
//! it does not create or delete again until the informer has shown it every pod it
//! created and every deletion it asked for (or five minutes passed), so a sync running
//! before the cache caught up never doubles its work.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use skiff_api::meta::jiff;
use skiff_api::types::{Pod, ReplicaSet};
use skiff_api::{Object, ResourceKind, Selector, kind};
use tokio_util::sync::CancellationToken;

use super::events::{EventType, Recorder};
use super::informer::{Change, key, key_of};
use super::{Informers, Reconciler, WorkQueue, run_workers};
use crate::apiserver::{ApiError, DeleteOptions, Part, Registry, Writer, now_timestamp};

/// The most pods one sync creates or deletes (kube's `burstReplicas`).
pub const BURST_REPLICAS: usize = 500;
/// The first slow-start batch (kube's `SlowStartInitialBatchSize`).
pub const SLOW_START_INITIAL_BATCH: usize = 1;
/// How long unmet expectations hold back a sync (kube's `ExpectationsTimeout`).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);
/// The field manager of the controllers' writes, as kube-controller-manager's.
pub const FIELD_MANAGER: &str = "kube-controller-manager";
/// The component named in this controller's events.
const COMPONENT: &str = "replicaset-controller";
/// Concurrent syncs (kube's `--concurrent-replicaset-syncs`).
const WORKERS: usize = 5;
/// The annotation ranking pods for deletion (lower cost goes first).
const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Starts the ReplicaSet controller.
pub fn start(registry: &Registry, informers: &Informers, cancel: &CancellationToken) {
    let controller = Arc::new(ReplicaSetController {
        registry: registry.clone(),
        informers: informers.clone(),
        queue: WorkQueue::new(),
        recorder: Recorder::new(registry.clone(), COMPONENT),
        expectations: Expectations::default(),
    });
    let mut replica_sets = informers.replica_sets.subscribe();
    let mut pods = informers.pods.subscribe();
    {
        let controller = controller.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    change = replica_sets.recv() => match change {
                        Some(change) => controller.on_replica_set(&change),
                        None => return,
                    },
                    change = pods.recv() => match change {
                        Some(change) => controller.on_pod(&change),
                        None => return,
                    },
                }
            }
        });
    }
    let queue = controller.queue.clone();
    run_workers(controller, queue, WORKERS, cancel.clone());
}

/// Kube's `ControllerExpectations`: creations still to be seen (a count) and deletions
/// still to be seen (pod keys), per ReplicaSet key.
#[derive(Default)]
pub struct Expectations {
    records: Mutex<HashMap<String, Expected>>,
}

struct Expected {
    creations: i64,
    deletions: HashSet<String>,
    since: Instant,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expected>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `key` may create or delete: nothing is pending, or the pending record is
    /// older than [`EXPECTATIONS_TIMEOUT`].
    pub fn satisfied(&self, key: &str) -> bool {
        self.lock().get(key).is_none_or(|expected| {
            (expected.creations <= 0 && expected.deletions.is_empty())
                || expected.since.elapsed() > EXPECTATIONS_TIMEOUT
        })
    }

    /// Expects `creations` new pods and the deletion of `deletions` (pod keys).
    pub fn expect(&self, key: &str, creations: usize, deletions: HashSet<String>) {
        self.lock().insert(
            key.to_owned(),
            Expected {
                creations: i64::try_from(creations).unwrap_or(i64::MAX),
                deletions,
                since: Instant::now(),
            },
        );
    }

    /// One expected creation happened (or will never happen).
    pub fn creation_observed(&self, key: &str) {
        if let Some(expected) = self.lock().get_mut(key) {
            expected.creations -= 1;
        }
    }

    /// The deletion of `pod_key` was seen (or will never be).
    pub fn deletion_observed(&self, key: &str, pod_key: &str) {
        if let Some(expected) = self.lock().get_mut(key) {
            expected.deletions.remove(pod_key);
        }
    }

    /// Drops the record of a ReplicaSet that is gone.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

struct ReplicaSetController {
    registry: Registry,
    informers: Informers,
    queue: WorkQueue,
    recorder: Recorder,
    expectations: Expectations,
}

impl Reconciler for ReplicaSetController {
    fn name(&self) -> &'static str {
        "replicaset"
    }

    fn reconcile(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Duration>, ApiError>> + Send {
        self.sync(key)
    }
}

/// The pod inside an informer object.
pub(crate) fn as_pod(object: &Object) -> Option<&Pod> {
    match object {
        Object::Pod(pod) => Some(pod),
        _ => None,
    }
}

/// The ReplicaSet inside an informer object.
pub(crate) fn as_replica_set(object: &Object) -> Option<&ReplicaSet> {
    match object {
        Object::ReplicaSet(replica_set) => Some(replica_set),
        _ => None,
    }
}

/// The owner reference with `controller: true`, if any.
pub(crate) fn controller_of(metadata: &ObjectMeta) -> Option<&OwnerReference> {
    metadata
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true))
}

/// An object's labels (empty when it has none).
pub(crate) fn labels_of(metadata: &ObjectMeta) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    metadata.labels.as_ref().unwrap_or(&EMPTY)
}

/// A controller reference to an object of `kind` (`apps/v1`), as kube's
/// `NewControllerRef`.
pub(crate) fn controller_ref(metadata: &ObjectMeta, kind: &str) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".to_owned(),
        kind: kind.to_owned(),
        name: metadata.name.clone().unwrap_or_default(),
        uid: metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Kube's `RecheckDeletionTimestamp`: a fresh read says the controller is still the
/// object with this uid and is not being deleted, so it may adopt.
pub(crate) async fn still_current(
    registry: &Registry,
    kind: &'static ResourceKind,
    metadata: &ObjectMeta,
) -> Result<bool, ApiError> {
    let name = metadata.name.as_deref().unwrap_or_default();
    match registry
        .get(kind, metadata.namespace.as_deref(), name)
        .await
    {
        Ok(fresh) => {
            Ok(fresh.metadata().uid == metadata.uid
                && fresh.metadata().deletion_timestamp.is_none())
        }
        Err(error) if error.code == 404 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Adds `reference` as the controller of an orphan (the object with `metadata`'s uid);
/// `None` if it is gone or got a controller meanwhile.
pub(crate) async fn adopt(
    registry: &Registry,
    kind: &'static ResourceKind,
    metadata: &ObjectMeta,
    reference: &OwnerReference,
) -> Result<Option<Object>, ApiError> {
    let name = metadata.name.clone().unwrap_or_default();
    let uid = metadata.uid.clone();
    let written = registry
        .write(
            kind,
            metadata.namespace.as_deref(),
            &name,
            Writer::main(FIELD_MANAGER),
            |current| {
                let Some(current) = current.filter(|c| c.metadata().uid == uid) else {
                    return Err(ApiError::not_found(kind, &name));
                };
                if controller_of(current.metadata()).is_some()
                    || current.metadata().deletion_timestamp.is_some()
                {
                    return Err(ApiError::conflict(kind, &name));
                }
                let mut adopted = current.clone();
                // Not pinned: a lost race re-reads and checks again.
                adopted.metadata_mut().resource_version = None;
                adopted
                    .metadata_mut()
                    .owner_references
                    .get_or_insert_with(Vec::new)
                    .push(reference.clone());
                Ok(adopted)
            },
        )
        .await;
    match written {
        Ok(written) => Ok(Some(written.object)),
        // Gone, or someone else's now: its change requeues the owner anyway.
        Err(error) if error.code == 404 || error.code == 409 => Ok(None),
        Err(error) => Err(error),
    }
}

/// Removes the owner reference to `owner_uid` from the object with `metadata`'s uid.
pub(crate) async fn release(
    registry: &Registry,
    kind: &'static ResourceKind,
    metadata: &ObjectMeta,
    owner_uid: &str,
) -> Result<(), ApiError> {
    let name = metadata.name.clone().unwrap_or_default();
    let uid = metadata.uid.clone();
    let released = registry
        .write(
            kind,
            metadata.namespace.as_deref(),
            &name,
            Writer::main(FIELD_MANAGER),
            |current| {
                let Some(current) = current.filter(|c| c.metadata().uid == uid) else {
                    return Err(ApiError::not_found(kind, &name));
                };
                let mut released = current.clone();
                let metadata = released.metadata_mut();
                metadata.resource_version = None;
                if let Some(owners) = metadata.owner_references.as_mut() {
                    owners.retain(|owner| owner.uid != owner_uid);
                    if owners.is_empty() {
                        metadata.owner_references = None;
                    }
                }
                Ok(released)
            },
        )
        .await;
    match released {
        Ok(_) => Ok(()),
        Err(error) if error.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// A pod's phase (`Pending` when unset).
fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("Pending")
}

/// Kube's `IsPodActive`: not finished and not being deleted.
pub(crate) fn is_pod_active(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_none()
}

/// When the pod's `Ready` condition became true, if it is true.
fn ready_since(pod: &Pod) -> Option<Option<jiff::Timestamp>> {
    pod.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|condition| condition.type_ == "Ready" && condition.status == "True")
        .map(|condition| condition.last_transition_time.as_ref().map(|time| time.0))
}

/// Kube's `IsPodReady`: the `Ready` condition is `True`.
pub(crate) fn is_pod_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// How long until a ready pod becomes available: `Some(ZERO)` when it is, `None` when it
/// is not ready (kube's `IsPodAvailable`: ready for at least `min_ready_seconds`).
pub(crate) fn until_available(
    pod: &Pod,
    min_ready_seconds: i32,
    now: jiff::Timestamp,
) -> Option<Duration> {
    let since = ready_since(pod)?;
    if min_ready_seconds <= 0 {
        return Some(Duration::ZERO);
    }
    let Some(since) = since else {
        // Ready with no transition time: kube never counts it available.
        return None;
    };
    let available_at = since
        .as_second()
        .saturating_add(i64::from(min_ready_seconds));
    let now_seconds = now.as_second();
    if available_at < now_seconds {
        Some(Duration::ZERO)
    } else {
        let wait = u64::try_from(available_at - now_seconds).unwrap_or(0) + 1;
        Some(Duration::from_secs(wait))
    }
}

/// Kube's `IsPodAvailable`.
pub(crate) fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    until_available(pod, min_ready_seconds, now) == Some(Duration::ZERO)
}

/// `Some(n)`, or `None` for 0: the `omitempty` counters of a status.
pub(crate) fn nonzero(count: usize) -> Option<i32> {
    let count = i32::try_from(count).unwrap_or(i32::MAX);
    (count != 0).then_some(count)
}

/// Runs `count` calls of `call` in batches of 1, 2, 4, … (kube's `slowStartBatch`):
/// a batch runs concurrently, and the first batch with a failure ends the run. Returns
/// how many calls succeeded, and the first error.
pub async fn slow_start_batch<F, Fut>(
    count: usize,
    initial: usize,
    call: F,
) -> (usize, Option<ApiError>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), ApiError>>,
{
    let mut remaining = count;
    let mut successes = 0;
    let mut batch = remaining.min(initial.max(1));
    while batch > 0 {
        let results = futures_util::future::join_all((0..batch).map(|_| call())).await;
        let mut errors = results.into_iter().filter_map(Result::err);
        let first = errors.next();
        let failed = usize::from(first.is_some()) + errors.count();
        successes += batch - failed;
        if first.is_some() {
            return (successes, first);
        }
        remaining -= batch;
        batch = (2 * batch).min(remaining);
    }
    (successes, None)
}

/// The order in which kube's `ActivePodsWithRanks` deletes pods (`Less` first), `rank`
/// being how many related active pods share the pod's node:
/// unscheduled < scheduled; Pending < Unknown < Running; not ready < ready; lower
/// `pod-deletion-cost`; more pods doubled up on the node; ready more recently; more
/// container restarts; created more recently.
pub fn deletion_order(a: (&Pod, usize), b: (&Pod, usize)) -> Ordering {
    let ((a, rank_a), (b, rank_b)) = (a, b);
    let node = |pod: &Pod| {
        pod.spec
            .as_ref()
            .and_then(|spec| spec.node_name.clone())
            .unwrap_or_default()
    };
    let (node_a, node_b) = (node(a), node(b));
    if node_a != node_b && (node_a.is_empty() || node_b.is_empty()) {
        return if node_a.is_empty() {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    let ordinal = |pod: &Pod| match phase(pod) {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    };
    let by_phase = ordinal(a).cmp(&ordinal(b));
    if by_phase != Ordering::Equal {
        return by_phase;
    }
    let (ready_a, ready_b) = (is_pod_ready(a), is_pod_ready(b));
    if ready_a != ready_b {
        return if ready_a {
            Ordering::Greater
        } else {
            Ordering::Less
        };
    }
    let cost = |pod: &Pod| {
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(POD_DELETION_COST))
            .and_then(|cost| cost.parse::<i32>().ok())
            .unwrap_or(0)
    };
    let by_cost = cost(a).cmp(&cost(b));
    if by_cost != Ordering::Equal {
        return by_cost;
    }
    if rank_a != rank_b {
        // More doubled up goes first.
        return rank_b.cmp(&rank_a);
    }
    if ready_a && ready_b {
        let since = |pod: &Pod| ready_since(pod).flatten();
        let by_ready = after_or_zero(since(a), since(b));
        if by_ready != Ordering::Equal {
            return by_ready;
        }
    }
    let restarts = |pod: &Pod| {
        pod.status
            .as_ref()
            .and_then(|status| status.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .map(|status| status.restart_count)
            .max()
            .unwrap_or(0)
    };
    let by_restarts = restarts(b).cmp(&restarts(a));
    if by_restarts != Ordering::Equal {
        return by_restarts;
    }
    let created = |pod: &Pod| pod.metadata.creation_timestamp.as_ref().map(|time| time.0);
    after_or_zero(created(a), created(b))
}

/// Kube's `afterOrZero` as an ordering: a missing time first, then the later time.
fn after_or_zero(a: Option<jiff::Timestamp>, b: Option<jiff::Timestamp>) -> Ordering {
    match (a, b) {
        (a, b) if a == b => Ordering::Equal,
        (None, _) => Ordering::Less,
        (_, None) => Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(&a),
    }
}

/// The `diff` pods to delete first among `pods` (kube's `getPodsToDelete`), ranking by
/// how many `related` active pods share each one's node.
pub fn pods_to_delete<'a>(pods: &[&'a Pod], related: &[&Pod], diff: usize) -> Vec<&'a Pod> {
    let mut ranked: Vec<(&Pod, usize)> = {
        let mut on_node: HashMap<String, usize> = HashMap::new();
        for pod in related.iter().filter(|pod| is_pod_active(pod)) {
            *on_node.entry(node_name(pod)).or_default() += 1;
        }
        pods.iter()
            .map(|pod| (*pod, on_node.get(&node_name(pod)).copied().unwrap_or(0)))
            .collect()
    };
    if diff < ranked.len() {
        ranked.sort_by(|a, b| deletion_order(*a, *b));
    }
    ranked.into_iter().take(diff).map(|(pod, _)| pod).collect()
}

fn node_name(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.node_name.clone())
        .unwrap_or_default()
}

/// The pod a ReplicaSet creates from its template (kube's `GetPodFromTemplate`).
pub fn pod_from_template(replica_set: &ReplicaSet) -> Pod {
    let template = replica_set
        .spec
        .as_ref()
        .and_then(|spec| spec.template.clone())
        .unwrap_or_default();
    let template_meta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                replica_set.metadata.name.as_deref().unwrap_or_default()
            )),
            namespace: replica_set.metadata.namespace.clone(),
            labels: template_meta.labels,
            annotations: template_meta.annotations,
            finalizers: template_meta.finalizers,
            owner_references: Some(vec![controller_ref(&replica_set.metadata, "ReplicaSet")]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// The status of `replica_set` with `pods` (its active pods), as kube's
/// `calculateStatus`; `failure` is the error of creating or deleting pods, if any.
pub fn calculate_status(
    replica_set: &ReplicaSet,
    pods: &[&Pod],
    failure: Option<&ApiError>,
    now: jiff::Timestamp,
) -> ReplicaSetStatus {
    let spec = replica_set.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|template| template.metadata.as_ref())
        .and_then(|metadata| metadata.labels.clone())
        .unwrap_or_default();
    let fully_labeled = pods
        .iter()
        .filter(|pod| {
            let labels = labels_of(&pod.metadata);
            template_labels
                .iter()
                .all(|(key, value)| labels.get(key) == Some(value))
        })
        .count();
    let ready = pods.iter().filter(|pod| is_pod_ready(pod)).count();
    let available = pods
        .iter()
        .filter(|pod| is_pod_available(pod, min_ready, now))
        .count();
    let mut status = replica_set.status.clone().unwrap_or_default();
    let mut conditions = status.conditions.take().unwrap_or_default();
    let has_failure = conditions
        .iter()
        .any(|condition| condition.type_ == "ReplicaFailure");
    match failure {
        Some(error) if !has_failure => {
            let desired = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
            let reason = match pods.len().cmp(&desired) {
                Ordering::Less => "FailedCreate",
                Ordering::Greater => "FailedDelete",
                Ordering::Equal => "",
            };
            conditions.push(ReplicaSetCondition {
                type_: "ReplicaFailure".to_owned(),
                status: "True".to_owned(),
                reason: Some(reason.to_owned()),
                message: Some(error.message.clone()),
                last_transition_time: Some(Time(now)),
            });
        }
        None => conditions.retain(|condition| condition.type_ != "ReplicaFailure"),
        Some(_) => {}
    }
    status.conditions = Some(conditions).filter(|c| !c.is_empty());
    status.replicas = i32::try_from(pods.len()).unwrap_or(i32::MAX);
    status.fully_labeled_replicas = nonzero(fully_labeled);
    status.ready_replicas = nonzero(ready);
    status.available_replicas = nonzero(available);
    status.observed_generation = replica_set.metadata.generation;
    status
}

impl ReplicaSetController {
    fn on_replica_set(&self, change: &Change) {
        let key = key_of(change.object());
        if change.new.is_none() {
            self.expectations.forget(&key);
        }
        self.queue.add(key);
    }

    /// The key of the ReplicaSet `owner` names, if the cache holds it with that uid.
    fn resolve(&self, namespace: Option<&str>, owner: &OwnerReference) -> Option<String> {
        if owner.kind != "ReplicaSet" || owner.api_version.split('/').next() != Some("apps") {
            return None;
        }
        let key = key(namespace, &owner.name);
        let cached = self.informers.replica_sets.get(&key)?;
        (cached.metadata().uid.as_deref() == Some(owner.uid.as_str())).then_some(key)
    }

    /// The keys of the ReplicaSets whose selector matches an orphan pod.
    fn matching(&self, pod: &Pod) -> Vec<String> {
        let Some(namespace) = pod.metadata.namespace.as_deref() else {
            return Vec::new();
        };
        let labels = labels_of(&pod.metadata);
        self.informers
            .replica_sets
            .list_namespace(namespace)
            .iter()
            .filter(|object| {
                as_replica_set(object)
                    .and_then(|rs| rs.spec.as_ref())
                    .and_then(|spec| Selector::from_label_selector(Some(&spec.selector)).ok())
                    .is_some_and(|selector| !selector.is_everything() && selector.matches(labels))
            })
            .map(|object| key_of(object))
            .collect()
    }

    /// A pod was deleted or is being deleted: its ReplicaSet saw the deletion.
    fn pod_gone(&self, pod: &Pod) {
        if let Some(owner) = controller_of(&pod.metadata)
            && let Some(key) = self.resolve(pod.metadata.namespace.as_deref(), owner)
        {
            let pod_key = key_of_pod(pod);
            self.expectations.deletion_observed(&key, &pod_key);
            self.queue.add(key);
        }
    }

    fn on_pod(&self, change: &Change) {
        let old = change.old.as_deref().and_then(as_pod);
        let Some(new) = change.new.as_deref().and_then(as_pod) else {
            if let Some(old) = old {
                self.pod_gone(old);
            }
            return;
        };
        let Some(old) = old else {
            if new.metadata.deletion_timestamp.is_some() {
                self.pod_gone(new);
                return;
            }
            match controller_of(&new.metadata) {
                Some(owner) => {
                    if let Some(key) = self.resolve(new.metadata.namespace.as_deref(), owner) {
                        self.expectations.creation_observed(&key);
                        self.queue.add(key);
                    }
                }
                None => {
                    for key in self.matching(new) {
                        self.queue.add(key);
                    }
                }
            }
            return;
        };
        if old.metadata.resource_version == new.metadata.resource_version {
            return;
        }
        let labels_changed = old.metadata.labels != new.metadata.labels;
        if new.metadata.deletion_timestamp.is_some() {
            self.pod_gone(new);
            if labels_changed {
                self.pod_gone(old);
            }
            return;
        }
        let namespace = new.metadata.namespace.as_deref();
        let old_owner = controller_of(&old.metadata);
        let new_owner = controller_of(&new.metadata);
        let owner_changed = old_owner.map(|o| &o.uid) != new_owner.map(|o| &o.uid);
        if owner_changed
            && let Some(owner) = old_owner
            && let Some(key) = self.resolve(namespace, owner)
        {
            self.queue.add(key);
        }
        match new_owner {
            Some(owner) => {
                if let Some(key) = self.resolve(namespace, owner) {
                    self.queue.add(key);
                }
            }
            None if labels_changed || owner_changed => {
                for key in self.matching(new) {
                    self.queue.add(key);
                }
            }
            None => {}
        }
    }

    async fn sync(&self, rs_key: &str) -> Result<Option<Duration>, ApiError> {
        let Some(cached) = self.informers.replica_sets.get(rs_key) else {
            self.expectations.forget(rs_key);
            return Ok(None);
        };
        let Some(replica_set) = as_replica_set(&cached) else {
            return Ok(None);
        };
        let Some(spec) = replica_set.spec.as_ref() else {
            return Ok(None);
        };
        let Ok(selector) = Selector::from_label_selector(Some(&spec.selector)) else {
            // An invalid selector matches nothing; validation keeps them out.
            return Ok(None);
        };
        let needs_sync = self.expectations.satisfied(rs_key)
            && replica_set.metadata.deletion_timestamp.is_none();
        let namespace = replica_set.metadata.namespace.clone().unwrap_or_default();
        let all_pods = self.informers.pods.list_namespace(&namespace);
        let active: Vec<Arc<Object>> = all_pods
            .into_iter()
            .filter(|object| as_pod(object).is_some_and(is_pod_active))
            .collect();
        let claimed = self.claim_pods(replica_set, &selector, active).await?;
        let pods: Vec<&Pod> = claimed.iter().filter_map(|o| as_pod(o)).collect();
        let failure = if needs_sync {
            self.manage_replicas(rs_key, &cached, replica_set, &pods)
                .await
                .err()
        } else {
            None
        };
        let now = now_timestamp();
        let status = calculate_status(replica_set, &pods, failure.as_ref(), now);
        self.update_status(replica_set, status).await?;
        if let Some(error) = failure {
            return Err(error);
        }
        // Look again when the next ready pod becomes available.
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        Ok(pods
            .iter()
            .filter_map(|pod| until_available(pod, min_ready, now))
            .filter(|wait| !wait.is_zero())
            .min())
    }

    /// Kube's `claimPods`: the active pods this ReplicaSet controls and its selector
    /// matches, after adopting matching orphans and releasing owned pods that no longer
    /// match.
    async fn claim_pods(
        &self,
        replica_set: &ReplicaSet,
        selector: &Selector,
        pods: Vec<Arc<Object>>,
    ) -> Result<Vec<Arc<Object>>, ApiError> {
        let uid = replica_set.metadata.uid.clone().unwrap_or_default();
        let deleting = replica_set.metadata.deletion_timestamp.is_some();
        let mut claimed = Vec::new();
        let mut can_adopt = None;
        for object in pods {
            let Some(pod) = as_pod(&object) else {
                continue;
            };
            let matches = selector.matches(labels_of(&pod.metadata));
            match controller_of(&pod.metadata) {
                Some(owner) if owner.uid == uid => {
                    if matches {
                        claimed.push(object.clone());
                    } else if !deleting {
                        release(&self.registry, &kind::POD, &pod.metadata, &uid).await?;
                    }
                }
                Some(_) => {}
                None => {
                    if deleting || !matches || pod.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    if can_adopt.is_none() {
                        let fresh = still_current(
                            &self.registry,
                            &kind::REPLICA_SET,
                            &replica_set.metadata,
                        );
                        can_adopt = Some(fresh.await?);
                    }
                    if can_adopt != Some(true) {
                        continue;
                    }
                    let reference = controller_ref(&replica_set.metadata, "ReplicaSet");
                    let adopted = adopt(&self.registry, &kind::POD, &pod.metadata, &reference);
                    if let Some(adopted) = adopted.await? {
                        claimed.push(Arc::new(adopted));
                    }
                }
            }
        }
        Ok(claimed)
    }

    /// Kube's `manageReplicas`: creates or deletes pods to reach `spec.replicas`.
    async fn manage_replicas(
        &self,
        rs_key: &str,
        object: &Object,
        replica_set: &ReplicaSet,
        pods: &[&Pod],
    ) -> Result<(), ApiError> {
        let desired = replica_set
            .spec
            .as_ref()
            .and_then(|spec| spec.replicas)
            .unwrap_or(1);
        let desired = usize::try_from(desired).unwrap_or(0);
        match pods.len().cmp(&desired) {
            Ordering::Equal => Ok(()),
            Ordering::Less => {
                let count = (desired - pods.len()).min(BURST_REPLICAS);
                self.expectations.expect(rs_key, count, HashSet::new());
                let template = pod_from_template(replica_set);
                let namespace = replica_set.metadata.namespace.as_deref();
                let (created, error) = slow_start_batch(count, SLOW_START_INITIAL_BATCH, || {
                    let pod = template.clone();
                    async move {
                        match self
                            .registry
                            .create(Object::from(pod), namespace, Writer::main(FIELD_MANAGER))
                            .await
                        {
                            Ok(pod) => {
                                let message = format!("Created pod: {}", pod.name());
                                self.recorder.record(
                                    object,
                                    EventType::Normal,
                                    "SuccessfulCreate",
                                    &message,
                                );
                                Ok(())
                            }
                            Err(error) => {
                                let message = format!("Error creating: {error}");
                                self.recorder.record(
                                    object,
                                    EventType::Warning,
                                    "FailedCreate",
                                    &message,
                                );
                                // The informer will never see this pod.
                                self.expectations.creation_observed(rs_key);
                                Err(error)
                            }
                        }
                    }
                })
                .await;
                // Pods never attempted will not be seen either.
                let failed = usize::from(error.is_some());
                for _ in created + failed..count {
                    self.expectations.creation_observed(rs_key);
                }
                error.map_or(Ok(()), Err)
            }
            Ordering::Greater => {
                let count = (pods.len() - desired).min(BURST_REPLICAS);
                let related = self.related_pods(replica_set);
                let related: Vec<&Pod> = related.iter().filter_map(|o| as_pod(o)).collect();
                let doomed = pods_to_delete(pods, &related, count);
                let keys: HashSet<String> = doomed.iter().map(|pod| key_of_pod(pod)).collect();
                self.expectations.expect(rs_key, 0, keys);
                let results = futures_util::future::join_all(doomed.iter().map(|pod| async move {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let options = DeleteOptions {
                        uid: pod.metadata.uid.clone(),
                        ..DeleteOptions::default()
                    };
                    let deleted = self
                        .registry
                        .delete(
                            &kind::POD,
                            pod.metadata.namespace.as_deref(),
                            &name,
                            &options,
                        )
                        .await;
                    match deleted {
                        Ok(_) => {
                            let message = format!("Deleted pod: {name}");
                            self.recorder.record(
                                object,
                                EventType::Normal,
                                "SuccessfulDelete",
                                &message,
                            );
                            Ok(())
                        }
                        Err(error) => {
                            // The informer will not see this deletion (or already did).
                            self.expectations
                                .deletion_observed(rs_key, &key_of_pod(pod));
                            if error.code == 404 {
                                return Ok(());
                            }
                            let message = format!("Error deleting: {error}");
                            self.recorder.record(
                                object,
                                EventType::Warning,
                                "FailedDelete",
                                &message,
                            );
                            Err(error)
                        }
                    }
                }))
                .await;
                results
                    .into_iter()
                    .find_map(Result::err)
                    .map_or(Ok(()), Err)
            }
        }
    }

    /// Kube's `getIndirectlyRelatedPods`: the pods of every ReplicaSet with the same
    /// controller (the Deployment's other ReplicaSets), for the doubled-up ranking.
    fn related_pods(&self, replica_set: &ReplicaSet) -> Vec<Arc<Object>> {
        let Some(controller) = controller_of(&replica_set.metadata) else {
            return Vec::new();
        };
        let namespace = replica_set.metadata.namespace.clone().unwrap_or_default();
        let selectors: Vec<Selector> = self
            .informers
            .replica_sets
            .list_namespace(&namespace)
            .iter()
            .filter_map(|object| as_replica_set(object))
            .filter(|rs| controller_of(&rs.metadata).is_some_and(|c| c.uid == controller.uid))
            .filter_map(|rs| {
                Selector::from_label_selector(rs.spec.as_ref().map(|spec| &spec.selector)).ok()
            })
            .collect();
        self.informers
            .pods
            .list_namespace(&namespace)
            .into_iter()
            .filter(|object| {
                as_pod(object).is_some_and(|pod| {
                    let labels = labels_of(&pod.metadata);
                    selectors.iter().any(|selector| selector.matches(labels))
                })
            })
            .collect()
    }

    /// Writes the status if it changed.
    async fn update_status(
        &self,
        replica_set: &ReplicaSet,
        status: ReplicaSetStatus,
    ) -> Result<(), ApiError> {
        if replica_set.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let name = replica_set.metadata.name.clone().unwrap_or_default();
        let uid = replica_set.metadata.uid.clone();
        let writer = Writer {
            part: Part::Status,
            ..Writer::main(FIELD_MANAGER)
        };
        let written = self
            .registry
            .write(
                &kind::REPLICA_SET,
                replica_set.metadata.namespace.as_deref(),
                &name,
                writer,
                |current| {
                    let Some(Object::ReplicaSet(current)) = current else {
                        return Err(ApiError::not_found(&kind::REPLICA_SET, &name));
                    };
                    if current.metadata.uid != uid {
                        return Err(ApiError::not_found(&kind::REPLICA_SET, &name));
                    }
                    let mut replica_set = (**current).clone();
                    replica_set.status = Some(status.clone());
                    replica_set.metadata.resource_version = None;
                    Ok(Object::from(replica_set))
                },
            )
            .await;
        match written {
            Ok(_) => Ok(()),
            Err(error) if error.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// `namespace/name` of a pod.
fn key_of_pod(pod: &Pod) -> String {
    key(
        pod.metadata.namespace.as_deref(),
        pod.metadata.name.as_deref().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

    use serde_json::json;

    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn time(seconds: i64) -> String {
        jiff::Timestamp::from_second(seconds).unwrap().to_string()
    }

    /// A pod named `name` created at `created`, on `node` (empty: unscheduled), in
    /// `phase`, ready since `ready` (if set), with `restarts`.
    fn ranked_pod(
        name: &str,
        created: i64,
        node: &str,
        phase: &str,
        ready: Option<i64>,
        restarts: i32,
    ) -> Pod {
        let mut conditions = vec![];
        if let Some(since) = ready {
            conditions.push(
                json!({"type": "Ready", "status": "True", "lastTransitionTime": time(since)}),
            );
        }
        pod(json!({
            "metadata": {"name": name, "creationTimestamp": time(created)},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": phase, "conditions": conditions,
                       "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": ready.is_some(), "restartCount": restarts}]},
        }))
    }

    fn names(pods: &[&Pod]) -> Vec<String> {
        pods.iter()
            .map(|pod| pod.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn deletion_prefers_kubes_ranking() {
        let pods = [
            ranked_pod("running-ready-old", 100, "n1", "Running", Some(110), 0),
            ranked_pod("unscheduled", 100, "", "Pending", None, 0),
            ranked_pod("pending", 100, "n1", "Pending", None, 0),
            ranked_pod("unknown", 100, "n1", "Unknown", None, 0),
            ranked_pod("running-not-ready", 100, "n1", "Running", None, 0),
            ranked_pod("running-ready-new", 100, "n1", "Running", Some(200), 0),
            ranked_pod("running-ready-restarts", 100, "n1", "Running", Some(110), 3),
            ranked_pod("running-ready-younger", 150, "n1", "Running", Some(110), 0),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let order = pods_to_delete(&refs, &[], refs.len() - 1);
        assert_eq!(
            names(&order),
            [
                "unscheduled",
                "pending",
                "unknown",
                "running-not-ready",
                "running-ready-new",
                "running-ready-restarts",
                "running-ready-younger",
            ]
        );
        // Doubled-up pods go before lonely ones, other things equal.
        let a = ranked_pod("lonely", 100, "n1", "Running", Some(110), 0);
        let b = ranked_pod("crowded", 100, "n2", "Running", Some(110), 0);
        let crowd = [
            ranked_pod("x", 1, "n2", "Running", None, 0),
            ranked_pod("y", 1, "n2", "Running", None, 0),
        ];
        let related: Vec<&Pod> = crowd.iter().chain([&a, &b]).collect();
        assert_eq!(names(&pods_to_delete(&[&a, &b], &related, 1)), ["crowded"]);
        // Lower deletion cost first.
        let mut cheap = ranked_pod("cheap", 100, "n1", "Running", Some(110), 0);
        cheap.metadata.annotations = Some(BTreeMap::from([(
            POD_DELETION_COST.to_owned(),
            "-5".to_owned(),
        )]));
        let dear = ranked_pod("dear", 100, "n1", "Running", Some(300), 9);
        assert_eq!(names(&pods_to_delete(&[&dear, &cheap], &[], 1)), ["cheap"]);
    }

    #[tokio::test]
    async fn slow_start_doubles_and_stops_at_the_first_failing_batch() {
        let calls = AtomicUsize::new(0);
        let (done, error) = slow_start_batch(10, 1, || {
            calls.fetch_add(1, AtomicOrdering::SeqCst);
            async { Ok(()) }
        })
        .await;
        assert_eq!(
            (done, error, calls.load(AtomicOrdering::SeqCst)),
            (10, None, 10)
        );
        // Batches 1, 2, 4: the 5th call fails, so the batch of 4 ends the run.
        let calls = AtomicUsize::new(0);
        let (done, error) = slow_start_batch(20, 1, || {
            let call = calls.fetch_add(1, AtomicOrdering::SeqCst);
            async move {
                if call == 4 {
                    Err(ApiError::internal("boom"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(calls.load(AtomicOrdering::SeqCst), 7);
        assert_eq!(done, 6);
        assert_eq!(error.unwrap().message, ApiError::internal("boom").message);
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let ready = ranked_pod("p", 0, "n", "Running", Some(1000), 0);
        let at = |s| jiff::Timestamp::from_second(s).unwrap();
        assert!(is_pod_available(&ready, 0, at(1000)));
        assert!(!is_pod_available(&ready, 10, at(1005)));
        assert_eq!(
            until_available(&ready, 10, at(1005)),
            Some(Duration::from_secs(6))
        );
        assert!(is_pod_available(&ready, 10, at(1011)));
        let not_ready = ranked_pod("q", 0, "n", "Running", None, 0);
        assert_eq!(until_available(&not_ready, 0, at(1)), None);
    }

    #[test]
    fn expectations_hold_until_observed() {
        let expectations = Expectations::default();
        assert!(expectations.satisfied("ns/rs"));
        expectations.expect("ns/rs", 2, HashSet::new());
        assert!(!expectations.satisfied("ns/rs"));
        expectations.creation_observed("ns/rs");
        assert!(!expectations.satisfied("ns/rs"));
        expectations.creation_observed("ns/rs");
        assert!(expectations.satisfied("ns/rs"));
        expectations.expect("ns/rs", 0, HashSet::from(["ns/a".to_owned()]));
        assert!(!expectations.satisfied("ns/rs"));
        expectations.deletion_observed("ns/rs", "ns/b");
        assert!(!expectations.satisfied("ns/rs"));
        expectations.deletion_observed("ns/rs", "ns/a");
        assert!(expectations.satisfied("ns/rs"));
    }

    #[test]
    fn pods_come_from_the_template_with_a_controller_reference() {
        let replica_set: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "ns", "uid": "u1"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
        }))
        .unwrap();
        let pod = pod_from_template(&replica_set);
        let value = serde_json::to_value(&pod).unwrap();
        assert_eq!(
            value["metadata"],
            json!({"generateName": "web-abc-", "namespace": "ns", "labels": {"app": "web"},
                   "annotations": {"a": "b"},
                   "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc",
                                        "uid": "u1", "controller": true, "blockOwnerDeletion": true}]})
        );
        let status = calculate_status(&replica_set, &[&pod], None, now_timestamp());
        assert_eq!(status.replicas, 1);
        assert_eq!(status.fully_labeled_replicas, Some(1));
        assert_eq!(status.ready_replicas, None);
    }
}
