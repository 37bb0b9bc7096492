//! The Deployment controller, as kube-controller-manager's: each Deployment owns one
//! ReplicaSet per pod template (named `NAME-HASH`, labelled and selecting
//! `pod-template-hash=HASH`) and moves replicas from the old ones to the new one.
//!
//! A sync claims the ReplicaSets (adopting matching orphans, releasing owned ones that
//! stopped matching), then, as kube's `syncDeployment`:
//! - a Deployment being deleted only gets its status;
//! - a paused Deployment, or a *scaling event* (an active ReplicaSet's
//!   `desired-replicas` annotation differs from `spec.replicas`), is resized without
//!   rollout progress: one active ReplicaSet takes the new size; during a rolling update
//!   the change is shared in proportion to each ReplicaSet's size (kube's proportional
//!   scaling, see [`util::proportional_sizes`]);
//! - `RollingUpdate` scales the new ReplicaSet up to `replicas + maxSurge` pods in all,
//!   then scales old ones down while `replicas - maxUnavailable` stay available (unhealthy
//!   old replicas first), as kube's `reconcileNewReplicaSet`/`reconcileOldReplicaSets`;
//! - `Recreate` scales the old ReplicaSets to 0, waits until their pods are gone, then
//!   creates and scales up the new one.
//!
//! Revisions live in the `deployment.kubernetes.io/revision` annotations; a rollback
//! (`rollout undo`, done by the client by patching the template back) finds the old
//! ReplicaSet as the new one and bumps its revision, remembering the old one in
//! `revision-history`. Once a rollout is complete, old ReplicaSets with no replicas
//! beyond `revisionHistoryLimit` are deleted. The status carries kube's counters and
//! its `Available` and `Progressing` conditions (with `progressDeadlineSeconds`).
//!
//! Every write is pinned to the resourceVersion the decision was based on, so a sync
//! acting on a stale cache fails with a conflict and runs again on fresher state.

pub mod util;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use skiff_api::meta::jiff;
use skiff_api::types::{Deployment, ReplicaSet, ReplicaSetSpec};
use skiff_api::{Object, Selector, kind};
use tokio_util::sync::CancellationToken;

use self::util::{
    POD_TEMPLATE_HASH, REVISION, by_creation, by_revision, calculate_status, compute_hash,
    deployment_complete, deployment_progressing, deployment_timed_out, equal_ignore_hash,
    get_condition, is_rolling_update, is_saturated, max_revision, max_surge, max_unavailable,
    new_condition, new_rs_new_replicas, progress_deadline, proportional_sizes, reason,
    remove_condition, replicas, replicas_annotations_need_update, rs_actual, rs_available,
    rs_replicas, set_condition, set_new_replica_set_annotations, set_replicas_annotations,
    strategy_type,
};
use super::events::{EventType, Recorder};
use super::informer::{Change, key, key_of};
use super::replicaset::{
    FIELD_MANAGER, adopt, as_pod, as_replica_set, controller_of, controller_ref, labels_of,
    release, still_current,
};
use super::{Informers, Reconciler, WorkQueue, run_workers};
use crate::apiserver::{ApiError, DeleteOptions, Part, Registry, Writer, now_timestamp};

/// The component named in this controller's events.
const COMPONENT: &str = "deployment-controller";
/// Concurrent syncs (kube's `--concurrent-deployment-syncs`).
const WORKERS: usize = 5;

/// Starts the Deployment controller.
pub fn start(registry: &Registry, informers: &Informers, cancel: &CancellationToken) {
    let controller = Arc::new(DeploymentController {
        registry: registry.clone(),
        informers: informers.clone(),
        queue: WorkQueue::new(),
        recorder: Recorder::new(registry.clone(), COMPONENT),
    });
    let mut deployments = informers.deployments.subscribe();
    let mut replica_sets = informers.replica_sets.subscribe();
    let mut pods = informers.pods.subscribe();
    {
        let controller = controller.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    change = deployments.recv() => match change {
                        Some(change) => controller.queue.add(key_of(change.object())),
                        None => return,
                    },
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

struct DeploymentController {
    registry: Registry,
    informers: Informers,
    queue: WorkQueue,
    recorder: Recorder,
}

impl Reconciler for DeploymentController {
    fn name(&self) -> &'static str {
        "deployment"
    }

    fn reconcile(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Duration>, ApiError>> + Send {
        self.sync(key)
    }
}

fn as_deployment(object: &Object) -> Option<&Deployment> {
    match object {
        Object::Deployment(deployment) => Some(deployment),
        _ => None,
    }
}

/// The current time at second precision, as stored timestamps have it.
fn now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(now_timestamp().as_second()).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn name_of(metadata: &ObjectMeta) -> &str {
    metadata.name.as_deref().unwrap_or_default()
}

impl DeploymentController {
    /// The key of the Deployment `owner` names, if the cache holds it with that uid.
    fn resolve(&self, namespace: Option<&str>, owner: &OwnerReference) -> Option<String> {
        if owner.kind != "Deployment" || owner.api_version.split('/').next() != Some("apps") {
            return None;
        }
        let key = key(namespace, &owner.name);
        let cached = self.informers.deployments.get(&key)?;
        (cached.metadata().uid.as_deref() == Some(owner.uid.as_str())).then_some(key)
    }

    /// A ReplicaSet changed: its controlling Deployment (before and after) looks again;
    /// an orphan is offered to every Deployment selecting it.
    fn on_replica_set(&self, change: &Change) {
        let mut keys = HashSet::new();
        for state in [&change.old, &change.new].into_iter().flatten() {
            if let Some(owner) = controller_of(state.metadata())
                && let Some(key) = self.resolve(state.namespace(), owner)
            {
                keys.insert(key);
            }
        }
        if let Some(new) = change.new.as_deref().and_then(as_replica_set)
            && controller_of(&new.metadata).is_none()
            && new.metadata.deletion_timestamp.is_none()
        {
            let labels = labels_of(&new.metadata);
            let namespace = new.metadata.namespace.clone().unwrap_or_default();
            for object in self.informers.deployments.list_namespace(&namespace) {
                let selects = as_deployment(&object)
                    .and_then(|d| d.spec.as_ref())
                    .and_then(|spec| Selector::from_label_selector(Some(&spec.selector)).ok())
                    .is_some_and(|s| !s.is_everything() && s.matches(labels));
                if selects {
                    keys.insert(key_of(&object));
                }
            }
        }
        for key in keys {
            self.queue.add(key);
        }
    }

    /// A pod went away or finished: a `Recreate` Deployment waiting for its old pods
    /// looks again.
    fn on_pod(&self, change: &Change) {
        let finished = match (
            change.old.as_deref().and_then(as_pod),
            change.new.as_deref().and_then(as_pod),
        ) {
            (Some(_), None) => true,
            (Some(old), Some(new)) => {
                super::replicaset::is_pod_active(old) && !super::replicaset::is_pod_active(new)
            }
            _ => false,
        };
        if !finished {
            return;
        }
        let pod = change.object();
        let Some(owner) = controller_of(pod.metadata()) else {
            return;
        };
        let rs_key = key(pod.namespace(), &owner.name);
        let Some(replica_set) = self.informers.replica_sets.get(&rs_key) else {
            return;
        };
        if replica_set.metadata().uid.as_deref() != Some(owner.uid.as_str()) {
            return;
        }
        let Some(deployment_owner) = controller_of(replica_set.metadata()) else {
            return;
        };
        if let Some(key) = self.resolve(replica_set.namespace(), deployment_owner) {
            let recreate = self
                .informers
                .deployments
                .get(&key)
                .as_deref()
                .and_then(as_deployment)
                .is_some_and(|d| strategy_type(d) == "Recreate");
            if recreate {
                self.queue.add(key);
            }
        }
    }

    async fn sync(&self, key: &str) -> Result<Option<Duration>, ApiError> {
        let Some(object) = self.informers.deployments.get(key) else {
            return Ok(None);
        };
        let Some(deployment) = as_deployment(&object) else {
            return Ok(None);
        };
        let mut run = Sync {
            controller: self,
            deployment: deployment.clone(),
            object: object.clone(),
        };
        run.sync().await
    }
}

/// A Deployment's ReplicaSets: the new one (its template is the Deployment's) and the
/// old ones.
#[derive(Debug, Default)]
struct Sets {
    new: Option<ReplicaSet>,
    old: Vec<ReplicaSet>,
}

impl Sets {
    /// Old ones first, then the new one.
    fn all(&self) -> Vec<&ReplicaSet> {
        self.old.iter().chain(self.new.as_ref()).collect()
    }

    /// Swaps in the stored state of a ReplicaSet after a write.
    fn replace(&mut self, updated: ReplicaSet) {
        let name = updated.metadata.name.clone();
        if let Some(new) = self.new.as_mut().filter(|rs| rs.metadata.name == name) {
            *new = updated;
            return;
        }
        if let Some(old) = self.old.iter_mut().find(|rs| rs.metadata.name == name) {
            *old = updated;
        }
    }
}

/// One sync of one Deployment: the controller, and the Deployment as this sync knows
/// it (its resourceVersion follows this sync's own writes).
struct Sync<'a> {
    controller: &'a DeploymentController,
    deployment: Deployment,
    /// The cached object, for events.
    object: Arc<Object>,
}

impl Sync<'_> {
    fn registry(&self) -> &Registry {
        &self.controller.registry
    }

    fn namespace(&self) -> Option<&str> {
        self.deployment.metadata.namespace.as_deref()
    }

    fn name(&self) -> &str {
        name_of(&self.deployment.metadata)
    }

    fn event(&self, event_type: EventType, reason: &str, message: &str) {
        self.controller
            .recorder
            .record(&self.object, event_type, reason, message);
    }

    /// The stored condition of `type_`, as this sync knows it.
    fn condition(&self, type_: &str) -> Option<&DeploymentCondition> {
        self.deployment
            .status
            .as_ref()
            .and_then(|status| get_condition(status, type_))
    }

    /// Kube's `syncDeployment`.
    async fn sync(&mut self) -> Result<Option<Duration>, ApiError> {
        let Some(spec) = self.deployment.spec.as_ref() else {
            return Ok(None);
        };
        let Ok(selector) = Selector::from_label_selector(Some(&spec.selector)) else {
            return Ok(None);
        };
        if selector.is_everything() {
            self.event(
                EventType::Warning,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            );
            return Ok(None);
        }
        let mut rs_list = self.claim_replica_sets(&selector).await?;
        if self.deployment.metadata.deletion_timestamp.is_some() {
            let sets = self.get_all_and_sync_revision(&mut rs_list, false).await?;
            self.sync_deployment_status(&sets).await?;
            return Ok(None);
        }
        self.check_paused_conditions().await?;
        let paused = self
            .deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.paused)
            .unwrap_or(false);
        if paused || self.is_scaling_event(&mut rs_list).await? {
            self.sync_scale(&mut rs_list).await?;
            return Ok(None);
        }
        if is_rolling_update(&self.deployment) {
            self.rollout_rolling(&mut rs_list).await
        } else {
            self.rollout_recreate(&mut rs_list, &selector).await
        }
    }

    /// Kube's `getReplicaSetsForDeployment`: the ReplicaSets this Deployment controls
    /// and selects, after adopting orphans and releasing the ones it no longer selects.
    async fn claim_replica_sets(&self, selector: &Selector) -> Result<Vec<ReplicaSet>, ApiError> {
        let uid = self.deployment.metadata.uid.clone().unwrap_or_default();
        let deleting = self.deployment.metadata.deletion_timestamp.is_some();
        let namespace = self.namespace().unwrap_or_default().to_owned();
        let mut claimed = Vec::new();
        let mut can_adopt = None;
        for object in self
            .controller
            .informers
            .replica_sets
            .list_namespace(&namespace)
        {
            let Some(replica_set) = as_replica_set(&object) else {
                continue;
            };
            let matches = selector.matches(labels_of(&replica_set.metadata));
            match controller_of(&replica_set.metadata) {
                Some(owner) if owner.uid == uid => {
                    if matches {
                        claimed.push(replica_set.clone());
                    } else if !deleting {
                        release(
                            self.registry(),
                            &kind::REPLICA_SET,
                            &replica_set.metadata,
                            &uid,
                        )
                        .await?;
                    }
                }
                Some(_) => {}
                None => {
                    if deleting || !matches || replica_set.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    if can_adopt.is_none() {
                        let fresh = still_current(
                            self.registry(),
                            &kind::DEPLOYMENT,
                            &self.deployment.metadata,
                        );
                        can_adopt = Some(fresh.await?);
                    }
                    if can_adopt != Some(true) {
                        continue;
                    }
                    let reference = controller_ref(&self.deployment.metadata, "Deployment");
                    let adopted = adopt(
                        self.registry(),
                        &kind::REPLICA_SET,
                        &replica_set.metadata,
                        &reference,
                    );
                    if let Some(Object::ReplicaSet(adopted)) = adopted.await? {
                        claimed.push(*adopted);
                    }
                }
            }
        }
        Ok(claimed)
    }

    /// Kube's `getAllReplicaSetsAndSyncRevision`: the new ReplicaSet (created when
    /// `create` and missing) with its annotations synced, and the old ones.
    /// `rs_list` takes the new ReplicaSet as written, so later steps of this sync build
    /// on it rather than on the cached state.
    async fn get_all_and_sync_revision(
        &mut self,
        rs_list: &mut Vec<ReplicaSet>,
        create: bool,
    ) -> Result<Sets, ApiError> {
        let template = self
            .deployment
            .spec
            .as_ref()
            .map(|spec| spec.template.clone())
            .unwrap_or_default();
        // The oldest ReplicaSet with the Deployment's template is the new one.
        let mut sorted: Vec<&ReplicaSet> = rs_list.iter().collect();
        sorted.sort_by(|a, b| by_creation(a, b));
        let existing = sorted.into_iter().find(|rs| {
            rs.spec
                .as_ref()
                .and_then(|spec| spec.template.as_ref())
                .is_some_and(|t| equal_ignore_hash(t, &template))
        });
        let old: Vec<ReplicaSet> = rs_list
            .iter()
            .filter(|rs| existing.is_none_or(|new| new.metadata.uid != rs.metadata.uid))
            .cloned()
            .collect();
        let new = self
            .get_new_replica_set(existing.cloned(), &old, create)
            .await?;
        if let Some(new) = &new {
            match rs_list
                .iter_mut()
                .find(|rs| rs.metadata.name == new.metadata.name)
            {
                Some(listed) => listed.clone_from(new),
                None => rs_list.push(new.clone()),
            }
        }
        Ok(Sets { new, old })
    }

    /// Kube's `getNewReplicaSet`.
    async fn get_new_replica_set(
        &mut self,
        existing: Option<ReplicaSet>,
        old: &[ReplicaSet],
        create: bool,
    ) -> Result<Option<ReplicaSet>, ApiError> {
        let new_revision = max_revision(old) + 1;
        if let Some(existing) = existing {
            let mut copy = existing.clone();
            let annotations_changed =
                set_new_replica_set_annotations(&self.deployment, &mut copy, new_revision, true);
            let min_ready = self.min_ready_seconds();
            let spec = copy.spec.get_or_insert_with(ReplicaSetSpec::default);
            let min_ready_changed = spec.min_ready_seconds.unwrap_or(0) != min_ready.unwrap_or(0);
            if annotations_changed || min_ready_changed {
                spec.min_ready_seconds = min_ready;
                return self.update_replica_set(copy).await.map(Some);
            }
            let revision = copy
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                .cloned()
                .unwrap_or_default();
            if self.set_deployment_revision(&revision) {
                self.write_deployment_annotations().await?;
            }
            if progress_deadline(&self.deployment).is_some()
                && self.condition("Progressing").is_none()
            {
                let message = format!("Found new replica set \"{}\"", name_of(&copy.metadata));
                let mut status = self.deployment.status.clone().unwrap_or_default();
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "True",
                        reason::FOUND_NEW_REPLICA_SET,
                        &message,
                        now(),
                    ),
                );
                self.write_deployment_status(status).await?;
            }
            return Ok(Some(copy));
        }
        if !create {
            return Ok(None);
        }
        let created = self.create_new_replica_set(old, new_revision).await?;
        Ok(Some(created))
    }

    fn min_ready_seconds(&self) -> Option<i32> {
        self.deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.min_ready_seconds)
    }

    /// The new ReplicaSet for the Deployment's template, as kube's `getNewReplicaSet`
    /// builds it; an existing one of the same name that is the Deployment's with the same
    /// template is taken as is, anything else there is a hash collision
    /// (`collisionCount` goes up and the next sync tries another name).
    async fn create_new_replica_set(
        &mut self,
        old: &[ReplicaSet],
        new_revision: i64,
    ) -> Result<ReplicaSet, ApiError> {
        let spec = self.deployment.spec.clone().unwrap_or_default();
        let collision_count = self
            .deployment
            .status
            .as_ref()
            .and_then(|status| status.collision_count);
        let hash = compute_hash(&spec.template, collision_count);
        let mut template = spec.template.clone();
        let template_labels = {
            let metadata = template.metadata.get_or_insert_with(ObjectMeta::default);
            let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
            labels.insert(POD_TEMPLATE_HASH.to_owned(), hash.clone());
            labels.clone()
        };
        let mut selector: LabelSelector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.to_owned(), hash.clone());
        let name = format!("{}-{hash}", self.name());
        let mut new_rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.deployment.metadata.namespace.clone(),
                owner_references: Some(vec![controller_ref(
                    &self.deployment.metadata,
                    "Deployment",
                )]),
                labels: Some(template_labels),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let all: Vec<&ReplicaSet> = old.iter().chain([&new_rs]).collect();
        let count = new_rs_new_replicas(&self.deployment, &all, &new_rs);
        if let Some(spec) = new_rs.spec.as_mut() {
            spec.replicas = Some(count);
        }
        set_new_replica_set_annotations(&self.deployment, &mut new_rs, new_revision, false);
        let created = self
            .registry()
            .create(
                Object::from(new_rs),
                self.namespace(),
                Writer::main(FIELD_MANAGER),
            )
            .await;
        let (created, already_existed) = match created {
            Ok(Object::ReplicaSet(created)) => (*created, false),
            Ok(_) => return Err(ApiError::internal("created a ReplicaSet of another kind")),
            Err(error) if error.reason == "AlreadyExists" => {
                let existing = self
                    .registry()
                    .get(&kind::REPLICA_SET, self.namespace(), &name)
                    .await?;
                let Object::ReplicaSet(existing) = existing else {
                    return Err(error);
                };
                let ours = controller_of(&existing.metadata)
                    .is_some_and(|owner| Some(&owner.uid) == self.deployment.metadata.uid.as_ref());
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.template.as_ref())
                    .is_some_and(|t| equal_ignore_hash(t, &spec.template));
                if !(ours && same) {
                    // A hash collision: try another name next time.
                    let mut status = self.deployment.status.clone().unwrap_or_default();
                    status.collision_count = Some(collision_count.unwrap_or(0) + 1);
                    self.write_deployment_status(status).await?;
                    return Err(error);
                }
                (*existing, true)
            }
            Err(error) => {
                let message = format!("Failed to create new replica set \"{name}\": {error}");
                if progress_deadline(&self.deployment).is_some() {
                    let mut status = self.deployment.status.clone().unwrap_or_default();
                    set_condition(
                        &mut status,
                        new_condition(
                            "Progressing",
                            "False",
                            reason::FAILED_RS_CREATE,
                            &message,
                            now(),
                        ),
                    );
                    // The creation error is the one to report.
                    let _ = self.write_deployment_status(status).await;
                }
                self.event(EventType::Warning, reason::FAILED_RS_CREATE, &message);
                return Err(error);
            }
        };
        if !already_existed && count > 0 {
            self.event(
                EventType::Normal,
                "ScalingReplicaSet",
                &format!("Scaled up replica set {name} to {count} from 0"),
            );
        }
        if self.set_deployment_revision(&new_revision.to_string()) {
            self.write_deployment_annotations().await?;
        }
        if !already_existed && progress_deadline(&self.deployment).is_some() {
            let message = format!("Created new replica set \"{name}\"");
            let mut status = self.deployment.status.clone().unwrap_or_default();
            set_condition(
                &mut status,
                new_condition(
                    "Progressing",
                    "True",
                    reason::NEW_REPLICA_SET,
                    &message,
                    now(),
                ),
            );
            self.write_deployment_status(status).await?;
        }
        Ok(created)
    }

    /// Kube's `SetDeploymentRevision`: whether the annotation changed.
    fn set_deployment_revision(&mut self, revision: &str) -> bool {
        let annotations = self
            .deployment
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        if annotations.get(REVISION).map(String::as_str) == Some(revision) {
            return false;
        }
        annotations.insert(REVISION.to_owned(), revision.to_owned());
        true
    }

    /// Writes the Deployment's annotations (pinned to the version this sync knows).
    async fn write_deployment_annotations(&mut self) -> Result<(), ApiError> {
        let annotations = self.deployment.metadata.annotations.clone();
        let pinned = self.deployment.metadata.resource_version.clone();
        let name = self.name().to_owned();
        let written = self
            .registry()
            .write(
                &kind::DEPLOYMENT,
                self.namespace(),
                &name,
                Writer::main(FIELD_MANAGER),
                |current| {
                    let mut current = current
                        .cloned()
                        .ok_or_else(|| ApiError::not_found(&kind::DEPLOYMENT, &name))?;
                    let metadata = current.metadata_mut();
                    metadata.annotations.clone_from(&annotations);
                    metadata.resource_version.clone_from(&pinned);
                    Ok(current)
                },
            )
            .await?;
        self.deployment.metadata.resource_version =
            written.object.metadata().resource_version.clone();
        Ok(())
    }

    /// Writes the Deployment's status (pinned to the version this sync knows).
    async fn write_deployment_status(&mut self, status: DeploymentStatus) -> Result<(), ApiError> {
        let pinned = self.deployment.metadata.resource_version.clone();
        let name = self.name().to_owned();
        let writer = Writer {
            part: Part::Status,
            ..Writer::main(FIELD_MANAGER)
        };
        let written = self
            .registry()
            .write(
                &kind::DEPLOYMENT,
                self.namespace(),
                &name,
                writer,
                |current| {
                    let Some(Object::Deployment(current)) = current else {
                        return Err(ApiError::not_found(&kind::DEPLOYMENT, &name));
                    };
                    let mut deployment = (**current).clone();
                    deployment.status = Some(status.clone());
                    deployment.metadata.resource_version.clone_from(&pinned);
                    Ok(Object::from(deployment))
                },
            )
            .await?;
        self.deployment.metadata.resource_version =
            written.object.metadata().resource_version.clone();
        self.deployment.status = Some(status);
        Ok(())
    }

    /// Writes a ReplicaSet's replicas, minReadySeconds and annotations, pinned to the
    /// version `desired` was computed from; returns it as stored.
    async fn update_replica_set(&self, desired: ReplicaSet) -> Result<ReplicaSet, ApiError> {
        let name = name_of(&desired.metadata).to_owned();
        let written = self
            .registry()
            .write(
                &kind::REPLICA_SET,
                desired.metadata.namespace.as_deref(),
                &name,
                Writer::main(FIELD_MANAGER),
                |current| {
                    let Some(Object::ReplicaSet(current)) = current else {
                        return Err(ApiError::not_found(&kind::REPLICA_SET, &name));
                    };
                    let mut replica_set = (**current).clone();
                    replica_set
                        .metadata
                        .annotations
                        .clone_from(&desired.metadata.annotations);
                    replica_set
                        .metadata
                        .resource_version
                        .clone_from(&desired.metadata.resource_version);
                    let spec = replica_set.spec.get_or_insert_with(ReplicaSetSpec::default);
                    let wanted = desired.spec.clone().unwrap_or_default();
                    spec.replicas = wanted.replicas;
                    spec.min_ready_seconds = wanted.min_ready_seconds;
                    Ok(Object::from(replica_set))
                },
            )
            .await?;
        match written.object {
            Object::ReplicaSet(replica_set) => Ok(*replica_set),
            _ => Err(ApiError::internal("wrote a ReplicaSet of another kind")),
        }
    }

    /// Kube's `scaleReplicaSetAndRecordEvent`: scales only if the size differs.
    async fn scale_and_record(
        &self,
        sets: &mut Sets,
        replica_set: &ReplicaSet,
        new_scale: i32,
    ) -> Result<bool, ApiError> {
        if rs_replicas(replica_set) == new_scale {
            return Ok(false);
        }
        self.scale_replica_set(sets, replica_set, new_scale).await
    }

    /// Kube's `scaleReplicaSet`: sets the size and the replicas annotations, records
    /// `ScalingReplicaSet` when the size changed; returns whether it did.
    async fn scale_replica_set(
        &self,
        sets: &mut Sets,
        replica_set: &ReplicaSet,
        new_scale: i32,
    ) -> Result<bool, ApiError> {
        let desired = replicas(&self.deployment);
        let max = desired + max_surge(&self.deployment);
        let old_scale = rs_replicas(replica_set);
        let size_changes = old_scale != new_scale;
        if !size_changes && !replicas_annotations_need_update(replica_set, desired, max) {
            return Ok(false);
        }
        let mut copy = replica_set.clone();
        copy.spec
            .get_or_insert_with(ReplicaSetSpec::default)
            .replicas = Some(new_scale);
        set_replicas_annotations(&mut copy, desired, max);
        let updated = self.update_replica_set(copy).await?;
        if size_changes {
            let direction = if old_scale < new_scale { "up" } else { "down" };
            self.event(
                EventType::Normal,
                "ScalingReplicaSet",
                &format!(
                    "Scaled {direction} replica set {} to {new_scale} from {old_scale}",
                    name_of(&updated.metadata)
                ),
            );
        }
        sets.replace(updated);
        Ok(size_changes)
    }

    /// Kube's `isScalingEvent`: an active ReplicaSet was last scaled for another size.
    async fn is_scaling_event(&mut self, rs_list: &mut Vec<ReplicaSet>) -> Result<bool, ApiError> {
        let sets = self.get_all_and_sync_revision(rs_list, false).await?;
        let desired = replicas(&self.deployment);
        Ok(sets
            .all()
            .into_iter()
            .filter(|rs| rs_replicas(rs) > 0)
            .any(|rs| util::desired_replicas_annotation(rs).is_some_and(|d| d != desired)))
    }

    /// Kube's `sync`: scaling (and history cleanup when paused), then the status.
    async fn sync_scale(&mut self, rs_list: &mut Vec<ReplicaSet>) -> Result<(), ApiError> {
        let mut sets = self.get_all_and_sync_revision(rs_list, false).await?;
        self.scale(&mut sets).await?;
        let paused = self
            .deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.paused)
            .unwrap_or(false);
        if paused {
            self.cleanup(&sets.old).await?;
        }
        self.sync_deployment_status(&sets).await
    }

    /// Kube's `scale`: a resize outside of rollout progress.
    async fn scale(&self, sets: &mut Sets) -> Result<(), ApiError> {
        let desired = replicas(&self.deployment);
        if let Some(target) = find_active_or_latest(sets) {
            if rs_replicas(&target) != desired {
                self.scale_and_record(sets, &target, desired).await?;
            }
            return Ok(());
        }
        if is_saturated(&self.deployment, sets.new.as_ref()) {
            let active: Vec<ReplicaSet> = sets
                .old
                .iter()
                .filter(|rs| rs_replicas(rs) > 0)
                .cloned()
                .collect();
            for old in active {
                self.scale_and_record(sets, &old, 0).await?;
            }
            return Ok(());
        }
        if is_rolling_update(&self.deployment) {
            let active: Vec<ReplicaSet> = sets
                .all()
                .into_iter()
                .filter(|rs| rs_replicas(rs) > 0)
                .cloned()
                .collect();
            let refs: Vec<&ReplicaSet> = active.iter().collect();
            let sizes = proportional_sizes(&self.deployment, &refs);
            for (replica_set, size) in active.iter().zip(sizes) {
                self.scale_replica_set(sets, replica_set, size).await?;
            }
        }
        Ok(())
    }

    /// Kube's `rolloutRolling`.
    async fn rollout_rolling(
        &mut self,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<Option<Duration>, ApiError> {
        let mut sets = self.get_all_and_sync_revision(rs_list, true).await?;
        if self.reconcile_new_replica_set(&mut sets).await? {
            return self.sync_rollout_status(&sets).await;
        }
        if self.reconcile_old_replica_sets(&mut sets).await? {
            return self.sync_rollout_status(&sets).await;
        }
        let stored = self.deployment.status.clone().unwrap_or_default();
        if deployment_complete(&self.deployment, &stored) {
            self.cleanup(&sets.old).await?;
        }
        self.sync_rollout_status(&sets).await
    }

    /// Kube's `reconcileNewReplicaSet`: scales the new ReplicaSet up within
    /// `maxSurge` (or down to `replicas`).
    async fn reconcile_new_replica_set(&self, sets: &mut Sets) -> Result<bool, ApiError> {
        let Some(new_rs) = sets.new.clone() else {
            return Ok(false);
        };
        let desired = replicas(&self.deployment);
        let current = rs_replicas(&new_rs);
        if current == desired {
            return Ok(false);
        }
        if current > desired {
            return self.scale_and_record(sets, &new_rs, desired).await;
        }
        let count = new_rs_new_replicas(&self.deployment, &sets.all(), &new_rs);
        self.scale_and_record(sets, &new_rs, count).await
    }

    /// Kube's `reconcileOldReplicaSets`: scales old ReplicaSets down as far as
    /// `maxUnavailable` allows, unhealthy replicas first.
    async fn reconcile_old_replica_sets(&self, sets: &mut Sets) -> Result<bool, ApiError> {
        let old_count: i32 = sets.old.iter().map(rs_replicas).sum();
        if old_count == 0 {
            return Ok(false);
        }
        let all_count: i32 = sets.all().into_iter().map(rs_replicas).sum();
        let min_available = replicas(&self.deployment) - max_unavailable(&self.deployment);
        let new_unavailable = sets
            .new
            .as_ref()
            .map_or(0, |new| rs_replicas(new) - rs_available(new));
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let cleaned = self
            .cleanup_unhealthy_replicas(sets, max_scaled_down)
            .await?;
        let scaled = self.scale_down_old_for_rolling_update(sets).await?;
        Ok(cleaned + scaled > 0)
    }

    /// Old ReplicaSets, oldest first.
    fn old_by_age(sets: &Sets) -> Vec<ReplicaSet> {
        let mut old = sets.old.clone();
        old.sort_by(by_creation);
        old
    }

    /// Kube's `cleanupUnhealthyReplicas`: removes up to `max_cleanup` replicas that are
    /// not available from old ReplicaSets, oldest first.
    async fn cleanup_unhealthy_replicas(
        &self,
        sets: &mut Sets,
        max_cleanup: i32,
    ) -> Result<i32, ApiError> {
        let mut total = 0;
        for target in Self::old_by_age(sets) {
            if total >= max_cleanup {
                break;
            }
            let size = rs_replicas(&target);
            let available = rs_available(&target);
            if size == 0 || size == available {
                continue;
            }
            let count = (max_cleanup - total).min(size - available);
            self.scale_and_record(sets, &target, size - count).await?;
            total += count;
        }
        Ok(total)
    }

    /// Kube's `scaleDownOldReplicaSetsForRollingUpdate`: scales old ReplicaSets down,
    /// oldest first, by as many replicas as are available beyond `replicas -
    /// maxUnavailable`.
    async fn scale_down_old_for_rolling_update(&self, sets: &mut Sets) -> Result<i32, ApiError> {
        let min_available = replicas(&self.deployment) - max_unavailable(&self.deployment);
        let available: i32 = sets.all().into_iter().map(rs_available).sum();
        if available <= min_available {
            return Ok(0);
        }
        let wanted = available - min_available;
        let mut total = 0;
        for target in Self::old_by_age(sets) {
            if total >= wanted {
                break;
            }
            let size = rs_replicas(&target);
            if size == 0 {
                continue;
            }
            let count = size.min(wanted - total);
            self.scale_and_record(sets, &target, size - count).await?;
            total += count;
        }
        Ok(total)
    }

    /// Kube's `rolloutRecreate`.
    async fn rollout_recreate(
        &mut self,
        rs_list: &mut Vec<ReplicaSet>,
        selector: &Selector,
    ) -> Result<Option<Duration>, ApiError> {
        let mut sets = self.get_all_and_sync_revision(rs_list, false).await?;
        let mut scaled_down = false;
        for old in sets.old.clone() {
            if rs_replicas(&old) > 0 {
                scaled_down |= self.scale_and_record(&mut sets, &old, 0).await?;
            }
        }
        if scaled_down || self.old_pods_running(&sets, rs_list, selector) {
            return self.sync_rollout_status(&sets).await;
        }
        if sets.new.is_none() {
            sets = self.get_all_and_sync_revision(rs_list, true).await?;
        }
        if let Some(new_rs) = sets.new.clone() {
            let desired = replicas(&self.deployment);
            self.scale_and_record(&mut sets, &new_rs, desired).await?;
        }
        let stored = self.deployment.status.clone().unwrap_or_default();
        if deployment_complete(&self.deployment, &stored) {
            self.cleanup(&sets.old).await?;
        }
        self.sync_rollout_status(&sets).await
    }

    /// Kube's `oldPodsRunning`: old ReplicaSets still report pods, or a pod they control
    /// (even one being deleted) has not finished.
    fn old_pods_running(&self, sets: &Sets, rs_list: &[ReplicaSet], selector: &Selector) -> bool {
        if sets.old.iter().map(rs_actual).sum::<i32>() > 0 {
            return true;
        }
        let new_uid = sets.new.as_ref().and_then(|rs| rs.metadata.uid.clone());
        let old_uids: HashSet<&str> = rs_list
            .iter()
            .filter_map(|rs| rs.metadata.uid.as_deref())
            .filter(|uid| new_uid.as_deref() != Some(*uid))
            .collect();
        let namespace = self.namespace().unwrap_or_default();
        self.controller
            .informers
            .pods
            .list_namespace(namespace)
            .iter()
            .filter_map(|object| as_pod(object))
            .filter(|pod| selector.matches(labels_of(&pod.metadata)))
            .filter(|pod| {
                controller_of(&pod.metadata)
                    .is_some_and(|owner| old_uids.contains(owner.uid.as_str()))
            })
            .any(|pod| {
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded" | "Failed"))
            })
    }

    /// Kube's `cleanupDeployment`: deletes the oldest old ReplicaSets beyond
    /// `revisionHistoryLimit` that have no replicas.
    async fn cleanup(&self, old: &[ReplicaSet]) -> Result<(), ApiError> {
        let Some(limit) = self
            .deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.revision_history_limit)
            .filter(|limit| *limit != i32::MAX)
        else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = old
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = cleanable
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        if excess == 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| by_revision(a, b));
        for replica_set in cleanable.into_iter().take(excess) {
            let observed = replica_set
                .status
                .as_ref()
                .and_then(|status| status.observed_generation)
                .unwrap_or(0);
            if rs_actual(replica_set) != 0
                || rs_replicas(replica_set) != 0
                || replica_set.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            let options = DeleteOptions {
                uid: replica_set.metadata.uid.clone(),
                ..DeleteOptions::default()
            };
            let deleted = self
                .registry()
                .delete(
                    &kind::REPLICA_SET,
                    replica_set.metadata.namespace.as_deref(),
                    name_of(&replica_set.metadata),
                    &options,
                )
                .await;
            match deleted {
                Ok(_) => {}
                Err(error) if error.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Kube's `checkPausedConditions`: `Progressing` is `Unknown` with
    /// `DeploymentPaused`/`DeploymentResumed` when the Deployment is paused or resumed
    /// (unless it already timed out).
    async fn check_paused_conditions(&mut self) -> Result<(), ApiError> {
        if progress_deadline(&self.deployment).is_none() {
            return Ok(());
        }
        let condition = self.condition("Progressing");
        let current_reason = condition.and_then(|c| c.reason.clone());
        if current_reason.as_deref() == Some(reason::TIMED_OUT) {
            return Ok(());
        }
        let paused_recorded = current_reason.as_deref() == Some(reason::PAUSED);
        let paused = self
            .deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.paused)
            .unwrap_or(false);
        let (reason, message) = match (paused, paused_recorded) {
            (true, false) => (reason::PAUSED, "Deployment is paused"),
            (false, true) => (reason::RESUMED, "Deployment is resumed"),
            _ => return Ok(()),
        };
        let mut status = self.deployment.status.clone().unwrap_or_default();
        set_condition(
            &mut status,
            new_condition("Progressing", "Unknown", reason, message, now()),
        );
        self.write_deployment_status(status).await
    }

    /// Kube's `syncDeploymentStatus`: the counters and `Available`, written if changed.
    async fn sync_deployment_status(&mut self, sets: &Sets) -> Result<(), ApiError> {
        let status = calculate_status(&sets.all(), sets.new.as_ref(), &self.deployment, now());
        if self.deployment.status.as_ref() == Some(&status) {
            return Ok(());
        }
        self.write_deployment_status(status).await
    }

    /// Kube's `syncRolloutStatus`: the status with the `Progressing` condition updated
    /// (complete, progressing, or past its deadline); asks to look again when the
    /// deadline would pass.
    async fn sync_rollout_status(&mut self, sets: &Sets) -> Result<Option<Duration>, ApiError> {
        let now = now();
        let mut status = calculate_status(&sets.all(), sets.new.as_ref(), &self.deployment, now);
        let deadline = progress_deadline(&self.deployment);
        if deadline.is_none() {
            remove_condition(&mut status, "Progressing");
        }
        let current = self.condition("Progressing").cloned();
        let complete_before = count(status.replicas) == count(status.updated_replicas)
            && current
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some(reason::NEW_RS_AVAILABLE));
        let new_name = sets.new.as_ref().map(|rs| name_of(&rs.metadata).to_owned());
        if deadline.is_some() && !complete_before {
            let subject = |what: &str| match &new_name {
                Some(name) => format!("ReplicaSet \"{name}\" {what}"),
                None => format!("Deployment \"{}\" {what}", self.name()),
            };
            if deployment_complete(&self.deployment, &status) {
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "True",
                        reason::NEW_RS_AVAILABLE,
                        &subject("has successfully progressed."),
                        now,
                    ),
                );
            } else if deployment_progressing(&self.deployment, &status) {
                let mut condition = new_condition(
                    "Progressing",
                    "True",
                    reason::REPLICA_SET_UPDATED,
                    &subject("is progressing."),
                    now,
                );
                if let Some(current) = &current {
                    if current.status == "True" {
                        condition
                            .last_transition_time
                            .clone_from(&current.last_transition_time);
                    }
                    remove_condition(&mut status, "Progressing");
                }
                set_condition(&mut status, condition);
            } else if deployment_timed_out(&self.deployment, &status, now) {
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "False",
                        reason::TIMED_OUT,
                        &subject("has timed out progressing."),
                        now,
                    ),
                );
            }
        }
        // A ReplicaSet's failure to create or delete pods shows on the Deployment.
        let failure = sets
            .new
            .iter()
            .chain(sets.old.iter())
            .filter_map(|rs| rs.status.as_ref())
            .flat_map(|s| s.conditions.iter().flatten())
            .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
            .cloned();
        match failure {
            Some(failure) => set_condition(
                &mut status,
                DeploymentCondition {
                    type_: "ReplicaFailure".to_owned(),
                    status: failure.status,
                    reason: failure.reason,
                    message: failure.message,
                    last_update_time: failure.last_transition_time.clone(),
                    last_transition_time: failure.last_transition_time,
                },
            ),
            None => remove_condition(&mut status, "ReplicaFailure"),
        }
        if self.deployment.status.as_ref() == Some(&status) {
            return Ok(self.requeue_stuck(&status, now));
        }
        self.write_deployment_status(status).await?;
        Ok(None)
    }

    /// Kube's `requeueStuckDeployment`: when to look again to notice a missed deadline.
    fn requeue_stuck(&self, status: &DeploymentStatus, now: jiff::Timestamp) -> Option<Duration> {
        let deadline = progress_deadline(&self.deployment)?;
        let current = self.condition("Progressing")?;
        if deployment_complete(&self.deployment, status)
            || current.reason.as_deref() == Some(reason::TIMED_OUT)
        {
            return None;
        }
        let updated = current.last_update_time.as_ref()?.0.as_second();
        let after = updated + i64::from(deadline) - now.as_second();
        Some(Duration::from_secs(
            u64::try_from(after.max(0)).unwrap_or(0) + 1,
        ))
    }
}

fn count(value: Option<i32>) -> i32 {
    value.unwrap_or(0)
}

/// Kube's `FindActiveOrLatest`: the one ReplicaSet with replicas; with none, the new
/// one or else the newest old one; with several, none.
fn find_active_or_latest(sets: &Sets) -> Option<ReplicaSet> {
    let active: Vec<&ReplicaSet> = sets
        .all()
        .into_iter()
        .filter(|rs| rs_replicas(rs) > 0)
        .collect();
    match active.as_slice() {
        [] => sets
            .new
            .clone()
            .or_else(|| sets.old.iter().max_by(|a, b| by_creation(a, b)).cloned()),
        [only] => Some((*only).clone()),
        _ => None,
    }
}
