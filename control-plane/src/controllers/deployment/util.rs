//! The pure parts of the Deployment controller, after kube's `deployment/util`: the
//! pod-template hash, `maxSurge`/`maxUnavailable` resolution, the rolling-update and
//! proportional-scaling arithmetic, revision bookkeeping in annotations, conditions and
//! the status computation. Nothing here does I/O.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;
use skiff_api::meta::jiff;
use skiff_api::types::{Deployment, IntOrString, PodTemplateSpec, ReplicaSet};

use crate::controllers::replicaset::nonzero;

/// The revision of a ReplicaSet (and the current one of its Deployment).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The earlier revisions of a ReplicaSet that was rolled back to.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's `replicas` when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// The Deployment's `replicas + maxSurge` when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The label telling a Deployment's ReplicaSets (and their pods) apart.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// kubectl's record of the last applied configuration (never copied to ReplicaSets).
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The extensions/v1beta1 rollback request (never copied).
pub const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
/// The longest `revision-history` annotation kept (kube's `maxRevHistoryLengthInChars`).
pub const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// `Progressing` condition reasons and the rest, as kube's `deployment/util`.
pub mod reason {
    /// A new ReplicaSet was created.
    pub const NEW_REPLICA_SET: &str = "NewReplicaSetCreated";
    /// The new ReplicaSet already existed.
    pub const FOUND_NEW_REPLICA_SET: &str = "FoundNewReplicaSet";
    /// The rollout made progress.
    pub const REPLICA_SET_UPDATED: &str = "ReplicaSetUpdated";
    /// The rollout completed.
    pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
    /// The rollout missed `progressDeadlineSeconds`.
    pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
    /// The Deployment is paused.
    pub const PAUSED: &str = "DeploymentPaused";
    /// The Deployment was resumed.
    pub const RESUMED: &str = "DeploymentResumed";
    /// The new ReplicaSet could not be created.
    pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
    /// Enough replicas are available.
    pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
    /// Too few replicas are available.
    pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
}

/// Annotations a ReplicaSet does not copy from its Deployment (and `rollout undo` does
/// not copy back), as kube's `annotationsToSkip`.
pub fn skip_copy_annotation(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | ROLLBACK_TO
    )
}

/// The Deployment's `spec.replicas` (1 when unset, as defaulted).
pub fn replicas(deployment: &Deployment) -> i32 {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1)
}

/// A ReplicaSet's `spec.replicas` (1 when unset, as defaulted).
pub fn rs_replicas(replica_set: &ReplicaSet) -> i32 {
    replica_set
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1)
}

/// A ReplicaSet's `status.replicas`.
pub fn rs_actual(replica_set: &ReplicaSet) -> i32 {
    replica_set
        .status
        .as_ref()
        .map_or(0, |status| status.replicas)
}

/// A ReplicaSet's `status.readyReplicas`.
pub fn rs_ready(replica_set: &ReplicaSet) -> i32 {
    replica_set
        .status
        .as_ref()
        .and_then(|status| status.ready_replicas)
        .unwrap_or(0)
}

/// A ReplicaSet's available replicas: `status.availableReplicas`, but never more than
/// `spec.replicas`. A ReplicaSet just scaled down still reports the pods it is about to
/// delete as available; counting them would let a rolling update scale old
/// ReplicaSets down twice for the same pods and break `maxUnavailable`.
pub fn rs_available(replica_set: &ReplicaSet) -> i32 {
    let available = replica_set
        .status
        .as_ref()
        .and_then(|status| status.available_replicas)
        .unwrap_or(0);
    available.min(rs_replicas(replica_set).max(0))
}

/// Whether the strategy is `RollingUpdate` (the default).
pub fn is_rolling_update(deployment: &Deployment) -> bool {
    strategy_type(deployment) != "Recreate"
}

/// `spec.strategy.type`, `RollingUpdate` when unset.
pub fn strategy_type(deployment: &Deployment) -> &str {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.strategy.as_ref())
        .and_then(|strategy| strategy.type_.as_deref())
        .unwrap_or("RollingUpdate")
}

/// Kube's `GetScaledValueFromIntOrPercent`: an int as is, a percent of `total` rounded
/// up or down. Malformed values (rejected by validation) count as 0.
pub fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> i32 {
    match value {
        IntOrString::Int(value) => *value,
        IntOrString::String(text) => {
            let Some(percent) = text
                .strip_suffix('%')
                .and_then(|digits| digits.parse::<i64>().ok())
            else {
                return 0;
            };
            let product = percent * i64::from(total);
            let value = if round_up {
                (product + 99).div_euclid(100)
            } else {
                product.div_euclid(100)
            };
            i32::try_from(value).unwrap_or(i32::MAX)
        }
    }
}

/// Kube's `ResolveFenceposts`: `maxSurge` rounded up and `maxUnavailable` rounded down
/// against `desired` (each 0 when unset); when both come to 0, `maxUnavailable` is 1.
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> (i32, i32) {
    let surge = max_surge.map_or(0, |value| scaled_value(value, desired, true));
    let unavailable = max_unavailable.map_or(0, |value| scaled_value(value, desired, false));
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn fenceposts(deployment: &Deployment) -> (i32, i32) {
    let rolling = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.strategy.as_ref())
        .and_then(|strategy| strategy.rolling_update.as_ref());
    resolve_fenceposts(
        rolling.and_then(|r| r.max_surge.as_ref()),
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        replicas(deployment),
    )
}

/// Kube's `MaxSurge`: 0 for `Recreate`.
pub fn max_surge(deployment: &Deployment) -> i32 {
    if !is_rolling_update(deployment) {
        return 0;
    }
    fenceposts(deployment).0
}

/// Kube's `MaxUnavailable`: 0 for `Recreate` or no replicas, at most `replicas`.
pub fn max_unavailable(deployment: &Deployment) -> i32 {
    let desired = replicas(deployment);
    if !is_rolling_update(deployment) || desired == 0 {
        return 0;
    }
    fenceposts(deployment).1.min(desired)
}

/// The template as compared and hashed: without the `pod-template-hash` label, and
/// with empty maps and lists dropped (Kubernetes' semantic equality treats nil and
/// empty alike).
fn canonical_template(template: &PodTemplateSpec) -> Value {
    let mut template = template.clone();
    if let Some(labels) = template
        .metadata
        .as_mut()
        .and_then(|metadata| metadata.labels.as_mut())
    {
        labels.remove(POD_TEMPLATE_HASH);
    }
    let mut value = serde_json::to_value(&template).unwrap_or(Value::Null);
    prune(&mut value);
    value
}

fn prune(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for child in map.values_mut() {
                prune(child);
            }
            map.retain(|_, child| match child {
                Value::Null => false,
                Value::Object(inner) => !inner.is_empty(),
                Value::Array(items) => !items.is_empty(),
                _ => true,
            });
        }
        Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}

/// Kube's `EqualIgnoreHash`: the templates are equal but for `pod-template-hash`.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    canonical_template(a) == canonical_template(b)
}

/// Kubernetes' alphabet for generated suffixes (no vowels, no 0, 1, 3).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The `pod-template-hash` of a template (kube's `ComputeHash`): 32-bit FNV-1a of the
/// canonical JSON of the template, then of `collisionCount` (little-endian) when set,
/// rendered as its decimal digits mapped into the safe alphabet (`SafeEncodeString`):
/// at most 10 characters of `bcdfghjklmnpqrstvwxz2456789`.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let json = canonical_template(template).to_string();
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u32::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    feed(json.as_bytes());
    if let Some(count) = collision_count {
        feed(&count.to_le_bytes());
    }
    hash.to_string()
        .bytes()
        .map(|digit| char::from(SAFE_ALPHABET[usize::from(digit) % SAFE_ALPHABET.len()]))
        .collect()
}

/// An annotation of a ReplicaSet.
fn annotation<'a>(replica_set: &'a ReplicaSet, key: &str) -> Option<&'a str> {
    replica_set
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(key))
        .map(String::as_str)
}

/// Kube's `Revision`: the revision annotation, 0 when missing, `None` when malformed.
pub fn revision(replica_set: &ReplicaSet) -> Option<i64> {
    match annotation(replica_set, REVISION) {
        None => Some(0),
        Some(text) => text.parse().ok(),
    }
}

/// Kube's `MaxRevision`: the highest revision among `replica_sets` (0 for none).
pub fn max_revision<'a>(replica_sets: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    replica_sets
        .into_iter()
        .filter_map(revision)
        .max()
        .unwrap_or(0)
}

/// The `desired-replicas` annotation.
pub fn desired_replicas_annotation(replica_set: &ReplicaSet) -> Option<i32> {
    annotation(replica_set, DESIRED_REPLICAS).and_then(|text| text.parse().ok())
}

/// The `max-replicas` annotation.
pub fn max_replicas_annotation(replica_set: &ReplicaSet) -> Option<i32> {
    annotation(replica_set, MAX_REPLICAS).and_then(|text| text.parse().ok())
}

/// Kube's `ReplicasAnnotationsNeedUpdate`.
pub fn replicas_annotations_need_update(
    replica_set: &ReplicaSet,
    desired: i32,
    max_replicas: i32,
) -> bool {
    annotation(replica_set, DESIRED_REPLICAS) != Some(desired.to_string().as_str())
        || annotation(replica_set, MAX_REPLICAS) != Some(max_replicas.to_string().as_str())
}

/// Kube's `SetReplicasAnnotations`: whether anything changed.
pub fn set_replicas_annotations(replica_set: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    if !replicas_annotations_need_update(replica_set, desired, max) {
        return false;
    }
    let annotations = replica_set
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new);
    annotations.insert(DESIRED_REPLICAS.to_owned(), desired.to_string());
    annotations.insert(MAX_REPLICAS.to_owned(), max.to_string());
    true
}

/// Kube's `SetNewReplicaSetAnnotations`: copies the Deployment's annotations (but
/// [`skip_copy_annotation`] ones), raises the revision to `new_revision` when lower
/// (appending the old one to `revision-history` when the ReplicaSet had one: a
/// rollback), and for a ReplicaSet about to be created sets the replicas annotations.
/// Returns whether anything changed.
pub fn set_new_replica_set_annotations(
    deployment: &Deployment,
    replica_set: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = false;
    let annotations = replica_set
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new);
    for (key, value) in deployment.metadata.annotations.iter().flatten() {
        if skip_copy_annotation(key) || annotations.get(key) == Some(value) {
            continue;
        }
        annotations.insert(key.clone(), value.clone());
        changed = true;
    }
    let old_revision = annotations.get(REVISION).cloned();
    let old_number = match old_revision.as_deref() {
        None | Some("") => 0,
        Some(text) => match text.parse::<i64>() {
            Ok(number) => number,
            Err(_) => return changed,
        },
    };
    if old_number < new_revision {
        annotations.insert(REVISION.to_owned(), new_revision.to_string());
        changed = true;
        if let Some(old) = old_revision {
            let history = annotations
                .get(REVISION_HISTORY)
                .cloned()
                .unwrap_or_default();
            if history.is_empty() {
                annotations.insert(REVISION_HISTORY.to_owned(), old);
            } else {
                let mut revisions: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_REVISION_HISTORY_CHARS && start < revisions.len() {
                    total -= revisions[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REVISION_HISTORY_CHARS {
                    revisions = revisions.split_off(start);
                    revisions.push(&old);
                    let joined = revisions.join(",");
                    annotations.insert(REVISION_HISTORY.to_owned(), joined);
                }
            }
        }
    }
    if !exists {
        let desired = replicas(deployment);
        changed |= set_replicas_annotations(replica_set, desired, desired + max_surge(deployment));
    }
    changed
}

/// Kube's `NewRSNewReplicas`: how many replicas the new ReplicaSet may have now.
pub fn new_rs_new_replicas(
    deployment: &Deployment,
    all: &[&ReplicaSet],
    new_rs: &ReplicaSet,
) -> i32 {
    let desired = replicas(deployment);
    if !is_rolling_update(deployment) {
        return desired;
    }
    let current: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
    let max_total = desired + max_surge(deployment);
    if current >= max_total {
        return rs_replicas(new_rs);
    }
    let scale_up = (max_total - current).min(desired - rs_replicas(new_rs));
    rs_replicas(new_rs) + scale_up
}

/// Kube's `IsSaturated`: the new ReplicaSet has all the Deployment's replicas, available.
pub fn is_saturated(deployment: &Deployment, new_rs: Option<&ReplicaSet>) -> bool {
    let Some(new_rs) = new_rs else {
        return false;
    };
    let desired = replicas(deployment);
    desired_replicas_annotation(new_rs) == Some(desired)
        && rs_replicas(new_rs) == desired
        && new_rs
            .status
            .as_ref()
            .and_then(|status| status.available_replicas)
            .unwrap_or(0)
            == desired
}

/// Kube's `getReplicaSetFraction`: this ReplicaSet's share of a resize of the
/// Deployment from the `max-replicas` it was last scaled for to its current
/// `replicas + maxSurge`.
fn replica_set_fraction(replica_set: &ReplicaSet, deployment: &Deployment) -> i32 {
    let desired = replicas(deployment);
    if desired == 0 {
        return -rs_replicas(replica_set);
    }
    let max_now = desired + max_surge(deployment);
    let max_before = match max_replicas_annotation(replica_set) {
        Some(max) if max != 0 => max,
        // Scaled by hand: fall back to the Deployment's current size.
        _ => deployment
            .status
            .as_ref()
            .and_then(|status| status.replicas)
            .unwrap_or(0),
    };
    if max_before == 0 {
        return 0;
    }
    let size = f64::from(rs_replicas(replica_set)) * f64::from(max_now) / f64::from(max_before);
    // Go's `math.Round`: half away from zero, as `f64::round`.
    let size = size.round();
    let size = if size >= f64::from(i32::MAX) {
        i32::MAX
    } else if size <= f64::from(i32::MIN) {
        i32::MIN
    } else {
        // In range, integral: the conversion is exact.
        size as i32
    };
    size - rs_replicas(replica_set)
}

/// Kube's `GetReplicaSetProportion`: how many of the `to_add` replicas (negative:
/// to remove) this ReplicaSet takes, `added` being already handed out.
pub fn replica_set_proportion(
    replica_set: &ReplicaSet,
    deployment: &Deployment,
    to_add: i32,
    added: i32,
) -> i32 {
    if rs_replicas(replica_set) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = replica_set_fraction(replica_set, deployment);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// The new size of each ReplicaSet after a proportional resize of the Deployment (kube's
/// `scale` for rolling updates), in `active`'s order; `active` holds the ReplicaSets
/// with replicas. The Deployment may have `replicas + maxSurge` in all: the difference
/// is shared in proportion to each ReplicaSet's size against the `max-replicas` it was
/// last scaled for, and what rounding leaves goes to the largest.
pub fn proportional_sizes(deployment: &Deployment, active: &[&ReplicaSet]) -> Vec<i32> {
    let desired = replicas(deployment);
    let allowed = if desired > 0 {
        desired + max_surge(deployment)
    } else {
        0
    };
    let current: i32 = active.iter().map(|rs| rs_replicas(rs)).sum();
    let to_add = allowed - current;
    // Bigger first; between equals, newer first when growing, older first when shrinking.
    let mut order: Vec<usize> = (0..active.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (active[a], active[b]);
        rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| {
            let by_age = by_creation(a, b);
            if to_add > 0 { by_age.reverse() } else { by_age }
        })
    });
    let mut sizes: Vec<i32> = active.iter().map(|rs| rs_replicas(rs)).collect();
    if to_add == 0 {
        return sizes;
    }
    let mut added = 0;
    for &index in &order {
        let proportion = replica_set_proportion(active[index], deployment, to_add, added);
        sizes[index] += proportion;
        added += proportion;
    }
    if let Some(&largest) = order.first() {
        sizes[largest] = (sizes[largest] + to_add - added).max(0);
    }
    sizes
}

/// Older first, then by name (kube's `ReplicaSetsByCreationTimestamp`).
pub fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let created = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
    created(a)
        .cmp(&created(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Lower revision first, then older (kube's `ReplicaSetsByRevision`).
pub fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    match (revision(a), revision(b)) {
        (Some(x), Some(y)) if x != y => x.cmp(&y),
        _ => by_creation(a, b),
    }
}

/// A condition with both times `now`.
pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// The condition of `type_`.
pub fn get_condition<'a>(
    status: &'a DeploymentStatus,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|condition| condition.type_ == type_)
}

/// Kube's `SetDeploymentCondition`: nothing if status and reason are unchanged; keeps
/// `lastTransitionTime` if only the reason changed; the condition goes last.
pub fn set_condition(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    if let Some(current) = get_condition(status, &condition.type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition
                .last_transition_time
                .clone_from(&current.last_transition_time);
        }
    }
    remove_condition(status, &condition.type_);
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(condition);
}

/// Removes the condition of `type_`.
pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|condition| condition.type_ != type_);
        if conditions.is_empty() {
            status.conditions = None;
        }
    }
}

fn count(value: Option<i32>) -> i32 {
    value.unwrap_or(0)
}

/// Kube's `DeploymentComplete`: every replica updated and available, no old ones, and
/// the latest generation observed.
pub fn deployment_complete(deployment: &Deployment, status: &DeploymentStatus) -> bool {
    let desired = replicas(deployment);
    count(status.updated_replicas) == desired
        && count(status.replicas) == desired
        && count(status.available_replicas) == desired
        && status.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0)
}

/// Kube's `DeploymentProgressing`: more updated, ready or available replicas, or fewer
/// old ones, than the stored status says.
pub fn deployment_progressing(deployment: &Deployment, new: &DeploymentStatus) -> bool {
    let old = deployment.status.clone().unwrap_or_default();
    let old_old = count(old.replicas) - count(old.updated_replicas);
    let new_old = count(new.replicas) - count(new.updated_replicas);
    count(new.updated_replicas) > count(old.updated_replicas)
        || new_old < old_old
        || count(new.ready_replicas) > count(old.ready_replicas)
        || count(new.available_replicas) > count(old.available_replicas)
}

/// `spec.progressDeadlineSeconds`, unless unset or "infinite" (`MaxInt32`).
pub fn progress_deadline(deployment: &Deployment) -> Option<i32> {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.progress_deadline_seconds)
        .filter(|deadline| *deadline != i32::MAX)
}

/// Kube's `DeploymentTimedOut`: no progress reported for `progressDeadlineSeconds`.
pub fn deployment_timed_out(
    deployment: &Deployment,
    new: &DeploymentStatus,
    now: jiff::Timestamp,
) -> bool {
    let Some(deadline) = progress_deadline(deployment) else {
        return false;
    };
    let Some(condition) = get_condition(new, "Progressing") else {
        return false;
    };
    match condition.reason.as_deref() {
        Some(reason::NEW_RS_AVAILABLE) => return false,
        Some(reason::TIMED_OUT) => return true,
        _ => {}
    }
    let Some(from) = condition.last_update_time.as_ref() else {
        return false;
    };
    from.0.as_second() + i64::from(deadline) < now.as_second()
}

/// Kube's `calculateStatus` for a Deployment: counts from its ReplicaSets, the stored
/// conditions, and `Available` from `replicas - maxUnavailable`.
pub fn calculate_status(
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    deployment: &Deployment,
    now: jiff::Timestamp,
) -> DeploymentStatus {
    let available: i32 = all.iter().map(|rs| rs_available(rs)).sum();
    let total: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
    let unavailable = (total - available).max(0);
    let actual: i32 = all.iter().map(|rs| rs_actual(rs)).sum();
    let updated = new_rs.map_or(0, rs_actual);
    let ready: i32 = all.iter().map(|rs| rs_ready(rs)).sum();
    let stored = deployment.status.clone().unwrap_or_default();
    let as_count = |n: i32| nonzero(usize::try_from(n).unwrap_or(0));
    let mut status = DeploymentStatus {
        observed_generation: deployment.metadata.generation,
        replicas: as_count(actual),
        updated_replicas: as_count(updated),
        ready_replicas: as_count(ready),
        available_replicas: as_count(available),
        unavailable_replicas: as_count(unavailable),
        collision_count: stored.collision_count,
        conditions: stored.conditions,
        terminating_replicas: None,
    };
    if available >= replicas(deployment) - max_unavailable(deployment) {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "True",
                reason::MINIMUM_REPLICAS_AVAILABLE,
                "Deployment has minimum availability.",
                now,
            ),
        );
    } else {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "False",
                reason::MINIMUM_REPLICAS_UNAVAILABLE,
                "Deployment does not have minimum availability.",
                now,
            ),
        );
    }
    status
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": 1},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}},
            },
        }))
        .unwrap()
    }

    fn percent(text: &str) -> IntOrString {
        IntOrString::String(text.to_owned())
    }

    fn replica_set(name: &str, created: i64, replicas: i32, available: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name,
                         "creationTimestamp": jiff::Timestamp::from_second(created).unwrap().to_string()},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": replicas, "availableReplicas": available},
        }))
        .unwrap()
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        let cases = [
            // (replicas, surge, unavailable) → (surge, unavailable)
            (10, percent("25%"), percent("25%"), (3, 2)),
            (3, percent("25%"), percent("25%"), (1, 0)),
            (1, percent("25%"), percent("25%"), (1, 0)),
            (4, IntOrString::Int(0), percent("10%"), (0, 1)),
            (5, IntOrString::Int(2), IntOrString::Int(1), (2, 1)),
            (100, percent("0%"), percent("100%"), (0, 100)),
        ];
        for (replicas, surge, unavailable, expected) in cases {
            let d = deployment(replicas, surge.clone(), unavailable.clone());
            assert_eq!(
                (max_surge(&d), max_unavailable(&d)),
                expected,
                "{replicas} {surge:?} {unavailable:?}"
            );
        }
        assert_eq!(
            resolve_fenceposts(Some(&IntOrString::Int(0)), Some(&percent("0%")), 5),
            (0, 1)
        );
        let zero = deployment(0, percent("25%"), percent("25%"));
        assert_eq!(max_unavailable(&zero), 0);
        let capped = deployment(2, IntOrString::Int(1), IntOrString::Int(5));
        assert_eq!(max_unavailable(&capped), 2);
    }

    #[test]
    fn hashes_are_stable_safe_and_ignore_the_hash_label() {
        let d = deployment(3, percent("25%"), percent("25%"));
        let template = d.spec.clone().unwrap().template;
        let hash = compute_hash(&template, None);
        assert!(!hash.is_empty() && hash.len() <= 10, "{hash}");
        assert!(hash.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{hash}");
        assert_eq!(compute_hash(&template, None), hash);
        assert_ne!(compute_hash(&template, Some(1)), hash);
        let mut labeled = template.clone();
        labeled
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(POD_TEMPLATE_HASH.to_owned(), hash.clone());
        assert_eq!(compute_hash(&labeled, None), hash);
        assert!(equal_ignore_hash(&template, &labeled));
        let mut changed = template.clone();
        changed.spec.as_mut().unwrap().containers[0].image = Some("nginx:2".to_owned());
        assert!(!equal_ignore_hash(&template, &changed));
        assert_ne!(compute_hash(&changed, None), hash);
        // Empty and missing maps are the same template.
        let mut empty = template.clone();
        empty.metadata.as_mut().unwrap().annotations = Some(BTreeMap::new());
        assert!(equal_ignore_hash(&template, &empty));
    }

    #[test]
    fn rolling_update_scale_up_respects_surge() {
        let d = deployment(10, percent("25%"), percent("25%"));
        let old = replica_set("old", 1, 10, 10);
        let new = replica_set("new", 2, 0, 0);
        // 10 + 3 surge: the new one gets 3.
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 3);
        let old = replica_set("old", 1, 8, 8);
        let new = replica_set("new", 2, 3, 0);
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 5);
        let new = replica_set("new", 2, 9, 0);
        let old = replica_set("old", 1, 1, 1);
        // Never beyond the desired count.
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 10);
    }

    #[test]
    fn proportional_scaling_spreads_by_size() {
        // Mid-rollout at 10 replicas (surge 3): old 8, new 5 (=13); scaled to 20 (surge 5).
        let mut d = deployment(20, percent("25%"), percent("25%"));
        let mut old = replica_set("old", 1, 8, 8);
        let mut new = replica_set("new", 2, 5, 0);
        set_replicas_annotations(&mut old, 10, 13);
        set_replicas_annotations(&mut new, 10, 13);
        d.status = Some(DeploymentStatus {
            replicas: Some(13),
            ..Default::default()
        });
        let sizes = proportional_sizes(&d, &[&old, &new]);
        assert_eq!(sizes.iter().sum::<i32>(), 25);
        // 8 * 25/13 = 15.4 → 15; 5 * 25/13 = 9.6 → 10.
        assert_eq!(sizes, [15, 10]);
        // And back down to 5 (surge 2): 7 in all.
        let mut d = deployment(5, percent("25%"), percent("25%"));
        d.status = Some(DeploymentStatus {
            replicas: Some(13),
            ..Default::default()
        });
        let sizes = proportional_sizes(&d, &[&old, &new]);
        assert_eq!(sizes.iter().sum::<i32>(), 7);
        assert_eq!(sizes, [4, 3]);
    }

    #[test]
    fn revisions_bump_and_remember_history_on_rollback() {
        let mut d = deployment(3, percent("25%"), percent("25%"));
        d.metadata.annotations = Some(BTreeMap::from([
            ("kubernetes.io/change-cause".to_owned(), "v2".to_owned()),
            (REVISION.to_owned(), "2".to_owned()),
            (LAST_APPLIED.to_owned(), "{}".to_owned()),
        ]));
        let mut rs = replica_set("web-a", 1, 0, 0);
        assert!(set_new_replica_set_annotations(&d, &mut rs, 1, false));
        let annotations = rs.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[REVISION], "1");
        assert_eq!(annotations["kubernetes.io/change-cause"], "v2");
        assert_eq!(annotations[DESIRED_REPLICAS], "3");
        assert_eq!(annotations[MAX_REPLICAS], "4");
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert!(!annotations.contains_key(REVISION_HISTORY));
        // Nothing new: no change.
        assert!(!set_new_replica_set_annotations(&d, &mut rs, 1, true));
        // Rolled back to (revision 3): the old revision goes to the history.
        assert!(set_new_replica_set_annotations(&d, &mut rs, 3, true));
        assert!(set_new_replica_set_annotations(&d, &mut rs, 5, true));
        let annotations = rs.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[REVISION], "5");
        assert_eq!(annotations[REVISION_HISTORY], "1,3");
        // A lower revision never goes back.
        assert!(!set_new_replica_set_annotations(&d, &mut rs, 4, true));
        assert_eq!(max_revision([&rs, &replica_set("x", 1, 0, 0)]), 5);
    }

    #[test]
    fn conditions_keep_transition_times_and_status_counts() {
        let t0 = jiff::Timestamp::from_second(1000).unwrap();
        let t1 = jiff::Timestamp::from_second(2000).unwrap();
        let mut status = DeploymentStatus::default();
        set_condition(
            &mut status,
            new_condition("Progressing", "True", reason::NEW_REPLICA_SET, "a", t0),
        );
        set_condition(
            &mut status,
            new_condition("Progressing", "True", reason::REPLICA_SET_UPDATED, "b", t1),
        );
        let condition = get_condition(&status, "Progressing").unwrap();
        assert_eq!(condition.last_transition_time, Some(Time(t0)));
        assert_eq!(condition.last_update_time, Some(Time(t1)));
        assert_eq!(condition.message.as_deref(), Some("b"));
        let d = deployment(3, percent("25%"), percent("25%"));
        let old = replica_set("old", 1, 1, 1);
        let new = replica_set("new", 2, 3, 2);
        let status = calculate_status(&[&old, &new], Some(&new), &d, t0);
        assert_eq!(status.replicas, Some(4));
        assert_eq!(status.updated_replicas, Some(3));
        assert_eq!(status.available_replicas, Some(3));
        assert_eq!(status.unavailable_replicas, Some(1));
        assert_eq!(
            get_condition(&status, "Available")
                .unwrap()
                .reason
                .as_deref(),
            Some(reason::MINIMUM_REPLICAS_AVAILABLE)
        );
        assert!(!deployment_complete(&d, &status));
        // Stale status right after a scale-down counts no more than spec.replicas.
        let shrunk = replica_set("old", 1, 1, 3);
        assert_eq!(rs_available(&shrunk), 1);
    }
}
