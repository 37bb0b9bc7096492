//! The garbage collector, as kube-controller-manager's: objects whose owners (by
//! `ownerReferences` uid) are gone are deleted, owners deleted with the `Foreground`
//! policy wait until their blocking dependents are gone, and owners deleted with the
//! `Orphan` policy release their dependents first.
//!
//! Every object of a watched kind is a queue item (`<plural>:<namespace>/<name>`). An
//! item is reconciled as kube's `attemptToDeleteItem` does:
//! - being deleted with the `orphan` finalizer: its ownerReferences are removed from
//!   every dependent, then the finalizer;
//! - being deleted with the `foregroundDeletion` finalizer: its dependents are queued
//!   (they find their owner waiting and delete themselves); once no dependent with
//!   `blockOwnerDeletion` remains (checked with a live list), the finalizer goes and the
//!   registry removes the object;
//! - otherwise its owners are classified as solid (exists), dangling (gone, or the same
//!   name with another uid — confirmed with a live GET, since a just-created owner may
//!   not be in the cache yet) or waiting (being deleted in the foreground): with a solid
//!   owner, the references to the others are dropped; without one, the item is deleted
//!   (`Foreground` when it has dependents and an owner waits, else `Background`).
//!
//! Changes feed the queue: every new or changed object is queued, a deleted object's
//! dependents are queued, and so are the deleting owners of every changed dependent.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use skiff_api::{Object, ResourceKind, kind};
use tokio_util::sync::CancellationToken;

use super::informer::{Change, key, key_of};
use super::{Informer, Informers, Reconciler, WorkQueue, run_workers};
use crate::apiserver::{ApiError, DeleteOptions, ListOptions, Registry, Writer};

/// The field manager of the garbage collector's writes.
const MANAGER: &str = "kube-controller-manager";
/// The finalizer of a deletion with `propagationPolicy=Foreground`.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// The finalizer of a deletion with `propagationPolicy=Orphan`.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// How many items are worked on at once.
const WORKERS: usize = 4;
/// How often an owner waiting for its dependents looks again even without a change.
const WAITING_RECHECK: Duration = Duration::from_secs(2);

/// Starts the garbage collector.
pub fn start(registry: &Registry, informers: &Informers, cancel: &CancellationToken) {
    let collector = Arc::new(GarbageCollector {
        registry: registry.clone(),
        informers: informers.clone(),
        queue: WorkQueue::new(),
    });
    for (_, informer) in collector.watched() {
        let mut changes = informer.subscribe();
        let collector = collector.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    change = changes.recv() => match change {
                        Some(change) => collector.observe(&change),
                        None => return,
                    },
                }
            }
        });
    }
    let queue = collector.queue.clone();
    run_workers(collector, queue, WORKERS, cancel.clone());
}

/// What became of one owner reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OwnerState {
    /// The owner exists and is not deleting its dependents.
    Solid,
    /// The owner is gone (or its name now belongs to another uid).
    Dangling,
    /// The owner is being deleted in the foreground: it waits for its dependents.
    Waiting,
}

struct GarbageCollector {
    registry: Registry,
    informers: Informers,
    queue: WorkQueue,
}

/// Whether `object` is being deleted and holds `finalizer`.
fn deleting_with(object: &Object, finalizer: &str) -> bool {
    let metadata = object.metadata();
    metadata.deletion_timestamp.is_some()
        && metadata.finalizers.iter().flatten().any(|f| f == finalizer)
}

/// The owner references of `object`.
fn owner_refs(object: &Object) -> &[OwnerReference] {
    object
        .metadata()
        .owner_references
        .as_deref()
        .unwrap_or_default()
}

/// Whether `object` names `uid` among its owners.
fn owned_by(object: &Object, uid: &str) -> bool {
    owner_refs(object).iter().any(|r| r.uid == uid)
}

/// The queue item of an object of `kind` with cache key `cache_key`.
fn item(kind: &ResourceKind, cache_key: &str) -> String {
    format!("{}:{cache_key}", kind.plural)
}

/// A 404 or a failed uid precondition (the object is gone or was replaced) is success
/// for a write that only mattered to the object that was there.
fn ignore_gone(result: Result<(), ApiError>) -> Result<(), ApiError> {
    match result {
        Err(error) if error.code == 404 || error.code == 409 => Ok(()),
        other => other,
    }
}

impl GarbageCollector {
    /// The kinds the collector watches, with their informers.
    fn watched(&self) -> [(&'static ResourceKind, &Informer); 5] {
        [
            (&kind::POD, &self.informers.pods),
            (&kind::REPLICA_SET, &self.informers.replica_sets),
            (&kind::DEPLOYMENT, &self.informers.deployments),
            (&kind::SERVICE, &self.informers.services),
            (&kind::ENDPOINTS, &self.informers.endpoints),
        ]
    }

    fn informer(&self, kind: &ResourceKind) -> Option<&Informer> {
        self.watched()
            .into_iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, informer)| informer)
    }

    fn enqueue(&self, object: &Object) {
        self.queue.add(item(object.kind(), &key_of(object)));
    }

    /// Queues what a change may affect.
    fn observe(&self, change: &Change) {
        let object = change.object();
        match &change.new {
            Some(new) => self.enqueue(new),
            None => {
                if let Some(uid) = object.metadata().uid.as_deref() {
                    for (_, dependent) in self.cached_dependents(object, uid) {
                        self.enqueue(&dependent);
                    }
                }
            }
        }
        // Owners deleting in the foreground wait for this dependent.
        for state in [&change.old, &change.new].into_iter().flatten() {
            for reference in owner_refs(state) {
                if let Some(owner) = self.cached_owner(state, reference)
                    && owner.metadata().deletion_timestamp.is_some()
                {
                    self.enqueue(&owner);
                }
            }
        }
    }

    /// The cached owner `reference` of `dependent` names, if cached with that uid.
    fn cached_owner(&self, dependent: &Object, reference: &OwnerReference) -> Option<Arc<Object>> {
        let owner_kind = kind::by_type(&reference.api_version, &reference.kind)?;
        let namespace = owner_kind
            .namespaced
            .then(|| dependent.namespace())
            .flatten();
        self.informer(owner_kind)?
            .get(&key(namespace, &reference.name))
            .filter(|owner| owner.metadata().uid.as_deref() == Some(reference.uid.as_str()))
    }

    /// The cached objects that name `uid` (of `owner`) among their owners.
    fn cached_dependents(
        &self,
        owner: &Object,
        uid: &str,
    ) -> Vec<(&'static ResourceKind, Arc<Object>)> {
        let namespace = owner.kind().namespaced.then(|| owner.namespace()).flatten();
        let mut found = Vec::new();
        for (kind, informer) in self.watched() {
            let objects = match namespace {
                Some(namespace) => informer.list_namespace(namespace),
                None => informer.list(),
            };
            found.extend(
                objects
                    .into_iter()
                    .filter(|o| owned_by(o, uid))
                    .map(|o| (kind, o)),
            );
        }
        found
    }

    /// The stored objects that name `uid` (of `owner`) among their owners, read live
    /// (the cache may lag behind a dependent created a moment ago).
    async fn live_dependents(
        &self,
        owner: &Object,
        uid: &str,
    ) -> Result<Vec<(&'static ResourceKind, Object)>, ApiError> {
        let namespace = owner.kind().namespaced.then(|| owner.namespace()).flatten();
        let mut found = Vec::new();
        for (kind, _) in self.watched() {
            let page = self
                .registry
                .list(kind, namespace, &ListOptions::default())
                .await?;
            found.extend(
                page.items
                    .into_iter()
                    .filter(|o| owned_by(o, uid))
                    .map(|o| (kind, o)),
            );
        }
        Ok(found)
    }

    /// Classifies one owner of `dependent`: the cache first, a live GET when the cache
    /// has no owner with that uid.
    async fn owner_state(
        &self,
        dependent: &Object,
        reference: &OwnerReference,
    ) -> Result<OwnerState, ApiError> {
        let Some(owner_kind) = kind::by_type(&reference.api_version, &reference.kind) else {
            // A kind Skiff does not serve cannot be checked: leave the dependent be.
            return Ok(OwnerState::Solid);
        };
        let namespace = owner_kind
            .namespaced
            .then(|| dependent.namespace())
            .flatten();
        let owner = match self.cached_owner(dependent, reference) {
            Some(owner) => Some(owner.as_ref().clone()),
            None => match self
                .registry
                .get(owner_kind, namespace, &reference.name)
                .await
            {
                Ok(owner) if owner.metadata().uid.as_deref() == Some(reference.uid.as_str()) => {
                    Some(owner)
                }
                Ok(_) => None,
                Err(error) if error.code == 404 => None,
                Err(error) => return Err(error),
            },
        };
        Ok(match owner {
            None => OwnerState::Dangling,
            Some(owner) if deleting_with(&owner, FOREGROUND_FINALIZER) => OwnerState::Waiting,
            Some(_) => OwnerState::Solid,
        })
    }

    /// Removes `finalizer` from the object (the registry deletes an object being
    /// deleted once its last finalizer is gone).
    async fn remove_finalizer(&self, object: &Object, finalizer: &str) -> Result<(), ApiError> {
        let kind = object.kind();
        let uid = object.metadata().uid.clone();
        let result = self
            .registry
            .write(
                kind,
                object.namespace(),
                object.name(),
                Writer::main(MANAGER),
                |current| {
                    let current =
                        current.ok_or_else(|| ApiError::not_found(kind, object.name()))?;
                    if current.metadata().uid != uid {
                        return Err(ApiError::conflict(kind, object.name()));
                    }
                    let mut updated = current.clone();
                    let metadata = updated.metadata_mut();
                    metadata.resource_version = None;
                    if let Some(finalizers) = metadata.finalizers.as_mut() {
                        finalizers.retain(|f| f != finalizer);
                    }
                    if metadata.finalizers.as_ref().is_some_and(Vec::is_empty) {
                        metadata.finalizers = None;
                    }
                    Ok(updated)
                },
            )
            .await
            .map(|_| ());
        ignore_gone(result)
    }

    /// Removes the owner references with one of `uids` from `dependent`.
    async fn remove_owner_refs(&self, dependent: &Object, uids: &[&str]) -> Result<(), ApiError> {
        let kind = dependent.kind();
        let uid = dependent.metadata().uid.clone();
        let result = self
            .registry
            .write(
                kind,
                dependent.namespace(),
                dependent.name(),
                Writer::main(MANAGER),
                |current| {
                    let current =
                        current.ok_or_else(|| ApiError::not_found(kind, dependent.name()))?;
                    if current.metadata().uid != uid {
                        return Err(ApiError::conflict(kind, dependent.name()));
                    }
                    let mut updated = current.clone();
                    let metadata = updated.metadata_mut();
                    metadata.resource_version = None;
                    if let Some(references) = metadata.owner_references.as_mut() {
                        references.retain(|r| !uids.contains(&r.uid.as_str()));
                    }
                    if metadata
                        .owner_references
                        .as_ref()
                        .is_some_and(Vec::is_empty)
                    {
                        metadata.owner_references = None;
                    }
                    Ok(updated)
                },
            )
            .await
            .map(|_| ());
        ignore_gone(result)
    }

    /// Deletes `object` (this very uid, at this very resourceVersion) with `policy`;
    /// a conflict is an error, so the item is looked at again.
    async fn delete(&self, object: &Object, policy: &str) -> Result<(), ApiError> {
        let options = DeleteOptions {
            uid: object.metadata().uid.clone(),
            resource_version: object.metadata().resource_version.clone(),
            propagation_policy: Some(policy.to_owned()),
            ..DeleteOptions::default()
        };
        tracing::debug!(
            kind = object.kind().kind,
            namespace = object.namespace().unwrap_or_default(),
            name = object.name(),
            policy,
            "garbage collecting"
        );
        match self
            .registry
            .delete(object.kind(), object.namespace(), object.name(), &options)
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if error.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// An owner deleted with `Orphan`: its dependents lose their references to it,
    /// then it loses the finalizer.
    async fn orphan_dependents(&self, owner: &Object) -> Result<Option<Duration>, ApiError> {
        let uid = owner.metadata().uid.clone().unwrap_or_default();
        for (_, dependent) in self.live_dependents(owner, &uid).await? {
            self.remove_owner_refs(&dependent, &[uid.as_str()]).await?;
        }
        self.remove_finalizer(owner, ORPHAN_FINALIZER).await?;
        Ok(None)
    }

    /// An owner deleted with `Foreground`: its dependents are deleted; once none that
    /// blocks it remains, it loses the finalizer.
    async fn delete_dependents(&self, owner: &Object) -> Result<Option<Duration>, ApiError> {
        let uid = owner.metadata().uid.clone().unwrap_or_default();
        let dependents = self.live_dependents(owner, &uid).await?;
        let mut blocking = 0usize;
        for (kind, dependent) in &dependents {
            let blocks = owner_refs(dependent)
                .iter()
                .any(|r| r.uid == uid && r.block_owner_deletion == Some(true));
            if blocks {
                blocking += 1;
            }
            if dependent.metadata().deletion_timestamp.is_none() {
                self.queue.add(item(kind, &key_of(dependent)));
            }
        }
        if blocking == 0 {
            self.remove_finalizer(owner, FOREGROUND_FINALIZER).await?;
            return Ok(None);
        }
        Ok(Some(WAITING_RECHECK))
    }

    /// A possible dependent: deleted when it has no solid owner left. The decision to
    /// delete is taken again on the stored object (the cache may miss an adoption),
    /// and the delete is conditional on its resourceVersion.
    async fn collect(&self, cached: &Object) -> Result<Option<Duration>, ApiError> {
        let mut object = cached.clone();
        let mut verified = false;
        loop {
            let references = owner_refs(&object);
            if references.is_empty() {
                return Ok(None);
            }
            let mut solid = false;
            let mut dangling: Vec<String> = Vec::new();
            let mut waiting: Vec<String> = Vec::new();
            for reference in references {
                match self.owner_state(&object, reference).await? {
                    OwnerState::Solid => solid = true,
                    OwnerState::Dangling => dangling.push(reference.uid.clone()),
                    OwnerState::Waiting => waiting.push(reference.uid.clone()),
                }
            }
            if solid {
                let gone: Vec<&str> = dangling
                    .iter()
                    .chain(&waiting)
                    .map(String::as_str)
                    .collect();
                if !gone.is_empty() {
                    self.remove_owner_refs(&object, &gone).await?;
                }
                return Ok(None);
            }
            if !verified {
                let latest = match self
                    .registry
                    .get(object.kind(), object.namespace(), object.name())
                    .await
                {
                    Ok(latest) => latest,
                    Err(error) if error.code == 404 => return Ok(None),
                    Err(error) => return Err(error),
                };
                // Replaced, or being deleted already: its own change queues it.
                if latest.metadata().uid != object.metadata().uid
                    || latest.metadata().deletion_timestamp.is_some()
                {
                    return Ok(None);
                }
                verified = true;
                let changed = owner_refs(&latest) != owner_refs(&object);
                object = latest;
                if changed {
                    continue;
                }
            }
            let uid = object.metadata().uid.clone().unwrap_or_default();
            let has = |finalizer: &str| {
                object
                    .metadata()
                    .finalizers
                    .iter()
                    .flatten()
                    .any(|f| f == finalizer)
            };
            let policy = if !waiting.is_empty() && !self.cached_dependents(&object, &uid).is_empty()
            {
                "Foreground"
            } else if has(ORPHAN_FINALIZER) {
                "Orphan"
            } else if has(FOREGROUND_FINALIZER) {
                "Foreground"
            } else {
                "Background"
            };
            self.delete(&object, policy).await?;
            return Ok(None);
        }
    }
}

impl Reconciler for GarbageCollector {
    fn name(&self) -> &'static str {
        "garbage-collector"
    }

    async fn reconcile(&self, item: &str) -> Result<Option<Duration>, ApiError> {
        let Some((plural, cache_key)) = item.split_once(':') else {
            return Ok(None);
        };
        let Some((_, informer)) = self.watched().into_iter().find(|(k, _)| k.plural == plural)
        else {
            return Ok(None);
        };
        let Some(object) = informer.get(cache_key) else {
            // Gone: its dependents were queued when the cache saw it go.
            return Ok(None);
        };
        if object.metadata().deletion_timestamp.is_some() {
            if deleting_with(&object, ORPHAN_FINALIZER) {
                return self.orphan_dependents(&object).await;
            }
            if deleting_with(&object, FOREGROUND_FINALIZER) {
                return self.delete_dependents(&object).await;
            }
            return Ok(None);
        }
        self.collect(&object).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use skiff_api::kind::{POD, REPLICA_SET};

    use super::*;
    use crate::apiserver::Deleted;
    use crate::testing::{create, eventually, registry};

    fn replica_set(name: &str) -> serde_json::Value {
        json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "i:1"}]}
                }
            }
        })
    }

    fn pod(name: &str, owner: &Object, node: Option<&str>) -> serde_json::Value {
        let mut spec = json!({"containers": [{"name": "c", "image": "i:1"}]});
        if let Some(node) = node {
            spec["nodeName"] = json!(node);
        }
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": {"app": owner.name()},
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": owner.name(),
                    "uid": owner.metadata().uid.clone().unwrap(),
                    "controller": true, "blockOwnerDeletion": true
                }]
            },
            "spec": spec
        })
    }

    async fn gone(registry: &Registry, kind: &'static ResourceKind, name: &str) -> Option<()> {
        match registry.get(kind, Some("default"), name).await {
            Err(error) if error.code == 404 => Some(()),
            _ => None,
        }
    }

    async fn started(registry: &Registry) -> CancellationToken {
        let cancel = CancellationToken::new();
        let informers = Informers::start(registry, &cancel);
        informers.wait_synced().await;
        start(registry, &informers, &cancel);
        cancel
    }

    #[tokio::test]
    async fn dependents_of_a_deleted_owner_are_collected() {
        let (_dir, registry) = registry().await;
        let cancel = started(&registry).await;
        let rs = create(&registry, Some("default"), replica_set("web")).await;
        create(&registry, Some("default"), pod("web-a", &rs, None)).await;
        create(&registry, Some("default"), pod("web-b", &rs, None)).await;
        // An owner reference to a name that now belongs to another uid is dangling.
        let other = create(&registry, Some("default"), replica_set("other")).await;
        let mut stale = pod("stale", &other, None);
        stale["metadata"]["ownerReferences"][0]["uid"] = json!("not-the-uid");
        create(&registry, Some("default"), stale).await;
        // A pod owned by a live RS survives.
        create(&registry, Some("default"), pod("kept", &other, None)).await;

        registry
            .delete(
                &REPLICA_SET,
                Some("default"),
                "web",
                &DeleteOptions::default(),
            )
            .await
            .unwrap();
        for name in ["web-a", "web-b", "stale"] {
            eventually(name, Duration::from_secs(10), || {
                gone(&registry, &POD, name)
            })
            .await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        registry.get(&POD, Some("default"), "kept").await.unwrap();
        cancel.cancel();
    }

    #[tokio::test]
    async fn background_deletion_cascades_through_generations() {
        let (_dir, registry) = registry().await;
        let cancel = started(&registry).await;
        let deployment = create(
            &registry,
            Some("default"),
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "c", "image": "i:1"}]}
                    }
                }
            }),
        )
        .await;
        let mut rs = replica_set("web-1");
        rs["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
            "uid": deployment.metadata().uid.clone().unwrap(),
            "controller": true, "blockOwnerDeletion": true
        }]);
        let rs = create(&registry, Some("default"), rs).await;
        create(&registry, Some("default"), pod("web-1-a", &rs, None)).await;
        registry
            .delete(
                &kind::DEPLOYMENT,
                Some("default"),
                "web",
                &DeleteOptions::default(),
            )
            .await
            .unwrap();
        eventually("the pod gone", Duration::from_secs(10), || {
            gone(&registry, &POD, "web-1-a")
        })
        .await;
        gone(&registry, &REPLICA_SET, "web-1").await.unwrap();
        cancel.cancel();
    }

    #[tokio::test]
    async fn foreground_deletion_waits_for_dependents() {
        let (_dir, registry) = registry().await;
        let cancel = started(&registry).await;
        let rs = create(&registry, Some("default"), replica_set("web")).await;
        // On a node: its deletion waits for the node (here: the test) to finish it.
        create(&registry, Some("default"), pod("web-a", &rs, Some("n1"))).await;
        let deleted = registry
            .delete(
                &REPLICA_SET,
                Some("default"),
                "web",
                &DeleteOptions {
                    propagation_policy: Some("Foreground".into()),
                    ..DeleteOptions::default()
                },
            )
            .await
            .unwrap();
        assert!(matches!(deleted, Deleted::Pending(_)));
        // The pod is marked for deletion; the owner waits for it.
        eventually("the pod terminating", Duration::from_secs(10), || async {
            let pod = registry.get(&POD, Some("default"), "web-a").await.ok()?;
            pod.metadata().deletion_timestamp.is_some().then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let owner = registry
            .get(&REPLICA_SET, Some("default"), "web")
            .await
            .unwrap();
        assert!(deleting_with(&owner, FOREGROUND_FINALIZER));
        // The node finishes the pod's deletion: the owner goes.
        registry
            .delete(
                &POD,
                Some("default"),
                "web-a",
                &DeleteOptions {
                    grace_period_seconds: Some(0),
                    ..DeleteOptions::default()
                },
            )
            .await
            .unwrap();
        eventually("the owner gone", Duration::from_secs(10), || {
            gone(&registry, &REPLICA_SET, "web")
        })
        .await;
        cancel.cancel();
    }

    #[tokio::test]
    async fn foreground_deletion_without_dependents_completes() {
        let (_dir, registry) = registry().await;
        let cancel = started(&registry).await;
        create(&registry, Some("default"), replica_set("lonely")).await;
        registry
            .delete(
                &REPLICA_SET,
                Some("default"),
                "lonely",
                &DeleteOptions {
                    propagation_policy: Some("Foreground".into()),
                    ..DeleteOptions::default()
                },
            )
            .await
            .unwrap();
        eventually("the owner gone", Duration::from_secs(10), || {
            gone(&registry, &REPLICA_SET, "lonely")
        })
        .await;
        cancel.cancel();
    }

    #[tokio::test]
    async fn orphaning_releases_dependents() {
        let (_dir, registry) = registry().await;
        let cancel = started(&registry).await;
        let rs = create(&registry, Some("default"), replica_set("web")).await;
        create(&registry, Some("default"), pod("web-a", &rs, None)).await;
        create(&registry, Some("default"), pod("web-b", &rs, None)).await;
        registry
            .delete(
                &REPLICA_SET,
                Some("default"),
                "web",
                &DeleteOptions {
                    propagation_policy: Some("Orphan".into()),
                    ..DeleteOptions::default()
                },
            )
            .await
            .unwrap();
        eventually("the owner gone", Duration::from_secs(10), || {
            gone(&registry, &REPLICA_SET, "web")
        })
        .await;
        for name in ["web-a", "web-b"] {
            let pod = registry.get(&POD, Some("default"), name).await.unwrap();
            assert!(pod.metadata().owner_references.is_none(), "{name}: {pod:?}");
            assert!(pod.metadata().deletion_timestamp.is_none());
        }
        // Nothing deletes them later either.
        tokio::time::sleep(Duration::from_millis(500)).await;
        registry.get(&POD, Some("default"), "web-a").await.unwrap();
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_dependent_created_before_its_owner_is_cached_survives() {
        // The owner exists in the store; the collector's cache may lag: the live GET
        // must keep the dependent.
        let (_dir, registry) = registry().await;
        let cancel = started(&registry).await;
        for i in 0..20 {
            let rs = create(&registry, Some("default"), replica_set(&format!("rs{i}"))).await;
            create(&registry, Some("default"), pod(&format!("p{i}"), &rs, None)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        for i in 0..20 {
            registry
                .get(&POD, Some("default"), &format!("p{i}"))
                .await
                .unwrap();
        }
        cancel.cancel();
    }
}
