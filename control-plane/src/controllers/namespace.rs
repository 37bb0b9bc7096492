//! The Namespace controller, as kube-controller-manager's: a namespace being deleted
//! (`deletionTimestamp` set) is marked `Terminating`, every namespaced object in it is
//! deleted, its status conditions say what remains (`NamespaceContentRemaining`,
//! `NamespaceFinalizersRemaining`, `NamespaceDeletionContentFailure`, …), and once
//! nothing remains the `kubernetes` finalizer leaves `spec.finalizers`.
//!
//! Skiff's registry removes a namespace at once unless `metadata.finalizers` hold it
//! (it neither defaults `spec.finalizers: [kubernetes]` nor keeps a namespace for them),
//! so the controller also cleans up after a namespace that vanished with content in it:
//! once a live GET confirms it is gone, its content is deleted the same way, looking
//! again until none remains.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{NamespaceCondition, NamespaceStatus};
use skiff_api::meta::Time;
use skiff_api::types::Namespace;
use skiff_api::{Object, kind};
use tokio_util::sync::CancellationToken;

use super::informer::Change;
use super::{Informers, Reconciler, WorkQueue, run_workers};
use crate::apiserver::{
    ApiError, DeleteOptions, Deleted, ListOptions, Part, Registry, Writer, now_timestamp,
};

/// The field manager of the controller's writes.
const MANAGER: &str = "kube-controller-manager";
/// The finalizer in `spec.finalizers` the controller removes once the namespace is empty.
pub const KUBERNETES_FINALIZER: &str = "kubernetes";
/// How many namespaces are worked on at once.
const WORKERS: usize = 2;
/// How soon a namespace whose content is still going is looked at again.
const CONTENT_RECHECK: Duration = Duration::from_secs(2);

/// The condition types kube's namespace deleter maintains, with their reasons and
/// messages when all is well.
const CONDITIONS: [(&str, &str, &str); 5] = [
    (
        "NamespaceDeletionDiscoveryFailure",
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    (
        "NamespaceDeletionGroupVersionParsingFailure",
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    (
        "NamespaceDeletionContentFailure",
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    (
        "NamespaceContentRemaining",
        "ContentRemoved",
        "All content successfully removed",
    ),
    (
        "NamespaceFinalizersRemaining",
        "ContentHasNoFinalizers",
        "All content-preserving finalizers finished",
    ),
];

/// Starts the Namespace controller.
pub fn start(registry: &Registry, informers: &Informers, cancel: &CancellationToken) {
    let controller = Arc::new(NamespaceController {
        registry: registry.clone(),
        informers: informers.clone(),
        queue: WorkQueue::new(),
    });
    let mut changes = informers.namespaces.subscribe();
    {
        let controller = controller.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    change = changes.recv() => match change {
                        Some(change) => controller.observe(&change),
                        None => return,
                    },
                }
            }
        });
    }
    let queue = controller.queue.clone();
    run_workers(controller, queue, WORKERS, cancel.clone());
}

struct NamespaceController {
    registry: Registry,
    informers: Informers,
    queue: WorkQueue,
}

/// What deleting a namespace's content left behind.
#[derive(Debug, Default)]
pub struct Remaining {
    /// Objects still there, by `resource.group`.
    pub by_resource: BTreeMap<String, usize>,
    /// Objects still there, by the finalizers holding them.
    pub by_finalizer: BTreeMap<String, usize>,
    /// Deletions that failed.
    pub errors: Vec<String>,
}

impl Remaining {
    /// Whether nothing remains and nothing failed.
    pub fn is_empty(&self) -> bool {
        self.by_resource.values().all(|n| *n == 0) && self.errors.is_empty()
    }

    /// The conditions kube's namespace deleter reports for this outcome, failures
    /// first filled in, the rest with their "all is well" variants.
    pub fn conditions(&self) -> Vec<(&'static str, &'static str, &'static str, String)> {
        CONDITIONS
            .iter()
            .map(|&(type_, ok_reason, ok_message)| {
                let failing = match type_ {
                    "NamespaceDeletionContentFailure" if !self.errors.is_empty() => Some((
                        "ContentDeletionFailed",
                        format!(
                            "Failed to delete all resource types, {} remaining: {}",
                            self.errors.len(),
                            self.errors.join(", ")
                        ),
                    )),
                    "NamespaceContentRemaining" if self.by_resource.values().any(|n| *n > 0) => {
                        let remaining: Vec<String> = self
                            .by_resource
                            .iter()
                            .filter(|(_, n)| **n > 0)
                            .map(|(resource, n)| format!("{resource} has {n} resource instances"))
                            .collect();
                        Some((
                            "SomeResourcesRemain",
                            format!("Some resources are remaining: {}", remaining.join(", ")),
                        ))
                    }
                    "NamespaceFinalizersRemaining"
                        if self.by_finalizer.values().any(|n| *n > 0) =>
                    {
                        let remaining: Vec<String> = self
                            .by_finalizer
                            .iter()
                            .filter(|(_, n)| **n > 0)
                            .map(|(finalizer, n)| format!("{finalizer} in {n} resource instances"))
                            .collect();
                        Some((
                            "SomeFinalizersRemain",
                            format!(
                                "Some content in the namespace has finalizers remaining: {}",
                                remaining.join(", ")
                            ),
                        ))
                    }
                    _ => None,
                };
                match failing {
                    Some((reason, message)) => (type_, "True", reason, message),
                    None => (type_, "False", ok_reason, ok_message.to_owned()),
                }
            })
            .collect()
    }
}

/// `status` with the deleter's conditions for `remaining` (a condition's transition
/// time changes only when its status does) and phase `Terminating`; whether it changed.
pub fn update_status(status: &mut NamespaceStatus, remaining: &Remaining, now: &Time) -> bool {
    let mut changed = false;
    if status.phase.as_deref() != Some("Terminating") {
        status.phase = Some("Terminating".to_owned());
        changed = true;
    }
    let conditions = status.conditions.get_or_insert_default();
    for (type_, state, reason, message) in remaining.conditions() {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            None => {
                conditions.push(NamespaceCondition {
                    type_: type_.to_owned(),
                    status: state.to_owned(),
                    reason: Some(reason.to_owned()),
                    message: Some(message),
                    last_transition_time: Some(now.clone()),
                });
                changed = true;
            }
            Some(old) => {
                let same = old.status == state
                    && old.reason.as_deref() == Some(reason)
                    && old.message.as_deref() == Some(message.as_str());
                if !same {
                    if old.status != state {
                        old.last_transition_time = Some(now.clone());
                    }
                    old.status = state.to_owned();
                    old.reason = Some(reason.to_owned());
                    old.message = Some(message);
                    changed = true;
                }
            }
        }
    }
    changed
}

/// `resource.group`, as kube names content in its messages (`pods.`, `deployments.apps`).
fn resource_name(kind: &skiff_api::ResourceKind) -> String {
    format!("{}.{}", kind.plural, kind.group)
}

impl NamespaceController {
    fn observe(&self, change: &Change) {
        match &change.new {
            Some(namespace) if namespace.metadata().deletion_timestamp.is_some() => {
                self.queue.add(namespace.name().to_owned());
            }
            Some(_) => {}
            // Gone: whatever it held goes too.
            None => self.queue.add(change.object().name().to_owned()),
        }
    }

    /// Deletes every namespaced object in `namespace` and reports what remains.
    async fn delete_content(&self, namespace: &str) -> Result<Remaining, ApiError> {
        let mut remaining = Remaining::default();
        for kind in kind::ALL.into_iter().filter(|k| k.namespaced) {
            let page = self
                .registry
                .list(kind, Some(namespace), &ListOptions::default())
                .await?;
            let mut left = 0usize;
            for object in page.items {
                let still_there = if object.metadata().deletion_timestamp.is_some() {
                    Some(object)
                } else {
                    let options = DeleteOptions {
                        uid: object.metadata().uid.clone(),
                        propagation_policy: Some("Background".to_owned()),
                        ..DeleteOptions::default()
                    };
                    match self
                        .registry
                        .delete(kind, Some(namespace), object.name(), &options)
                        .await
                    {
                        Ok(Deleted::Gone(_)) => None,
                        Ok(Deleted::Pending(object)) => Some(object),
                        Err(error) if error.code == 404 || error.code == 409 => None,
                        Err(error) => {
                            remaining.errors.push(format!(
                                "{} {}/{}: {}",
                                resource_name(kind),
                                namespace,
                                object.name(),
                                error.message
                            ));
                            Some(object)
                        }
                    }
                };
                if let Some(object) = still_there {
                    left += 1;
                    for finalizer in object.metadata().finalizers.iter().flatten() {
                        *remaining.by_finalizer.entry(finalizer.clone()).or_default() += 1;
                    }
                }
            }
            if left > 0 {
                remaining.by_resource.insert(resource_name(kind), left);
            }
        }
        Ok(remaining)
    }

    /// Writes the namespace's status for `remaining` (phase and conditions).
    async fn write_status(&self, name: &str, remaining: &Remaining) -> Result<(), ApiError> {
        let writer = Writer {
            part: Part::Status,
            ..Writer::main(MANAGER)
        };
        let now = Time(now_timestamp());
        let result = self
            .registry
            .write(&kind::NAMESPACE, None, name, writer, |current| {
                let Some(Object::Namespace(namespace)) = current else {
                    return Err(ApiError::not_found(&kind::NAMESPACE, name));
                };
                let mut namespace: Namespace = namespace.as_ref().clone();
                namespace.metadata.resource_version = None;
                let status = namespace.status.get_or_insert_default();
                update_status(status, remaining, &now);
                Ok(Object::from(namespace))
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if error.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Removes `kubernetes` from `spec.finalizers`.
    async fn finalize(&self, name: &str) -> Result<(), ApiError> {
        let result = self
            .registry
            .write(
                &kind::NAMESPACE,
                None,
                name,
                Writer {
                    part: Part::Finalize,
                    ..Writer::main(MANAGER)
                },
                |current| {
                    let Some(Object::Namespace(namespace)) = current else {
                        return Err(ApiError::not_found(&kind::NAMESPACE, name));
                    };
                    let mut namespace: Namespace = namespace.as_ref().clone();
                    namespace.metadata.resource_version = None;
                    if let Some(spec) = namespace.spec.as_mut() {
                        if let Some(finalizers) = spec.finalizers.as_mut() {
                            finalizers.retain(|f| f != KUBERNETES_FINALIZER);
                        }
                        if spec.finalizers.as_ref().is_some_and(Vec::is_empty) {
                            spec.finalizers = None;
                        }
                    }
                    Ok(Object::from(namespace))
                },
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if error.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }
}

impl Reconciler for NamespaceController {
    fn name(&self) -> &'static str {
        "namespace-controller"
    }

    async fn reconcile(&self, name: &str) -> Result<Option<Duration>, ApiError> {
        let cached = self.informers.namespaces.get(name);
        let terminating = cached
            .as_ref()
            .is_some_and(|ns| ns.metadata().deletion_timestamp.is_some());
        if !terminating {
            // Not in the cache as terminating: look at the store (the cache may lag).
            match self.registry.get(&kind::NAMESPACE, None, name).await {
                Ok(namespace) if namespace.metadata().deletion_timestamp.is_none() => {
                    return Ok(None);
                }
                Ok(_) => {}
                Err(error) if error.code == 404 => {
                    // Vanished with whatever it held: remove that.
                    let remaining = self.delete_content(name).await?;
                    if !remaining.is_empty() {
                        tracing::debug!(
                            namespace = name,
                            ?remaining,
                            "content of a deleted namespace remains"
                        );
                        return Ok(Some(CONTENT_RECHECK));
                    }
                    return Ok(None);
                }
                Err(error) => return Err(error),
            }
        }
        let remaining = self.delete_content(name).await?;
        self.write_status(name, &remaining).await?;
        if !remaining.is_empty() {
            return Ok(Some(CONTENT_RECHECK));
        }
        self.finalize(name).await?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use skiff_api::kind::{DEPLOYMENT, ENDPOINTS, EVENT, NAMESPACE, POD, REPLICA_SET, SERVICE};

    use super::*;
    use crate::testing::{create, eventually, registry};

    #[test]
    fn conditions_report_what_remains() {
        let mut remaining = Remaining::default();
        remaining.by_resource.insert("pods.".into(), 2);
        remaining.by_finalizer.insert("example.com/x".into(), 1);
        let mut status = NamespaceStatus::default();
        let then = Time(skiff_api::meta::jiff::Timestamp::UNIX_EPOCH);
        assert!(update_status(&mut status, &remaining, &then));
        assert_eq!(status.phase.as_deref(), Some("Terminating"));
        let find = |status: &NamespaceStatus, t: &str| {
            status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == t)
                .cloned()
                .unwrap()
        };
        let content = find(&status, "NamespaceContentRemaining");
        assert_eq!(content.status, "True");
        assert_eq!(content.reason.as_deref(), Some("SomeResourcesRemain"));
        assert_eq!(
            content.message.as_deref(),
            Some("Some resources are remaining: pods. has 2 resource instances")
        );
        let finalizers = find(&status, "NamespaceFinalizersRemaining");
        assert_eq!(
            finalizers.message.as_deref(),
            Some(
                "Some content in the namespace has finalizers remaining: example.com/x in 1 resource instances"
            )
        );
        assert_eq!(
            find(&status, "NamespaceDeletionContentFailure").status,
            "False"
        );
        // Same outcome: no change.
        assert!(!update_status(&mut status, &remaining, &then));
        // All gone: conditions flip with a new transition time.
        let now = Time(now_timestamp());
        assert!(update_status(&mut status, &Remaining::default(), &now));
        let content = find(&status, "NamespaceContentRemaining");
        assert_eq!(
            (content.status.as_str(), content.reason.as_deref()),
            ("False", Some("ContentRemoved"))
        );
        assert_eq!(content.last_transition_time, Some(now));
        assert_eq!(status.conditions.as_ref().map(Vec::len), Some(5));
    }

    fn pod(name: &str, node: Option<&str>) -> serde_json::Value {
        let mut spec = json!({"containers": [{"name": "c", "image": "i:1"}]});
        if let Some(node) = node {
            spec["nodeName"] = json!(node);
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
    }

    async fn fill(registry: &Registry, namespace: &str) {
        create(registry, Some(namespace), pod("loose", None)).await;
        create(registry, Some(namespace), pod("bound", Some("n1"))).await;
        create(
            registry,
            Some(namespace),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                   "spec": {"ports": [{"port": 80}]}}),
        )
        .await;
        create(
            registry,
            Some(namespace),
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"}}),
        )
        .await;
        create(
            registry,
            Some(namespace),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                   "spec": {"replicas": 0, "selector": {"matchLabels": {"a": "b"}},
                            "template": {"metadata": {"labels": {"a": "b"}},
                                         "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}}),
        )
        .await;
        create(
            registry,
            Some(namespace),
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web"},
                   "spec": {"replicas": 0, "selector": {"matchLabels": {"a": "b"}},
                            "template": {"metadata": {"labels": {"a": "b"}},
                                         "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}}),
        )
        .await;
        create(
            registry,
            Some(namespace),
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
                   "involvedObject": {"kind": "Pod", "name": "loose", "namespace": namespace},
                   "reason": "Test", "message": "m"}),
        )
        .await;
    }

    async fn count(registry: &Registry, namespace: &str) -> usize {
        let mut total = 0;
        for kind in [
            &POD,
            &SERVICE,
            &ENDPOINTS,
            &DEPLOYMENT,
            &REPLICA_SET,
            &EVENT,
        ] {
            total += registry
                .list(kind, Some(namespace), &ListOptions::default())
                .await
                .unwrap()
                .items
                .len();
        }
        total
    }

    /// Plays the node agent: finishes the deletion of the bound pod once it is marked.
    async fn finish_bound_pod(registry: &Registry, namespace: &str) {
        eventually(
            "the bound pod terminating",
            Duration::from_secs(10),
            || async {
                let pod = registry.get(&POD, Some(namespace), "bound").await.ok()?;
                pod.metadata().deletion_timestamp.is_some().then_some(())
            },
        )
        .await;
        let options = DeleteOptions {
            grace_period_seconds: Some(0),
            ..DeleteOptions::default()
        };
        registry
            .delete(&POD, Some(namespace), "bound", &options)
            .await
            .unwrap();
    }

    async fn started(registry: &Registry) -> CancellationToken {
        let cancel = CancellationToken::new();
        let informers = Informers::start(registry, &cancel);
        informers.wait_synced().await;
        start(registry, &informers, &cancel);
        cancel
    }

    #[tokio::test]
    async fn a_terminating_namespace_is_emptied_then_finalized() {
        let (_dir, registry) = registry().await;
        let cancel = started(&registry).await;
        create(
            &registry,
            None,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "team", "finalizers": ["example.com/hold"]},
                   "spec": {"finalizers": ["kubernetes"]}}),
        )
        .await;
        fill(&registry, "team").await;
        create(&registry, Some("default"), pod("elsewhere", None)).await;
        let deleted = registry
            .delete(&NAMESPACE, None, "team", &DeleteOptions::default())
            .await
            .unwrap();
        assert!(matches!(deleted, Deleted::Pending(_)));

        // Terminating, with the bound pod reported as remaining.
        eventually(
            "content remaining reported",
            Duration::from_secs(10),
            || async {
                let ns = registry.get(&NAMESPACE, None, "team").await.ok()?;
                let Object::Namespace(ns) = ns else {
                    return None;
                };
                let status = ns.status?;
                let remaining = status
                    .conditions?
                    .into_iter()
                    .find(|c| c.type_ == "NamespaceContentRemaining")?;
                (status.phase.as_deref() == Some("Terminating")
                    && remaining.message.as_deref()
                        == Some("Some resources are remaining: pods. has 1 resource instances"))
                .then_some(())
            },
        )
        .await;
        finish_bound_pod(&registry, "team").await;
        // Emptied and finalized; the namespace waits for the other finalizer only.
        let finalized = eventually("finalized", Duration::from_secs(15), || async {
            let ns = registry.get(&NAMESPACE, None, "team").await.ok()?;
            let Object::Namespace(ns) = ns else {
                return None;
            };
            ns.spec
                .as_ref()
                .is_none_or(|s| s.finalizers.as_ref().is_none_or(Vec::is_empty))
                .then_some(ns)
        })
        .await;
        assert_eq!(count(&registry, "team").await, 0);
        let conditions = finalized.status.unwrap().conditions.unwrap();
        let remaining = conditions
            .iter()
            .find(|c| c.type_ == "NamespaceContentRemaining")
            .unwrap();
        assert_eq!(remaining.status, "False");
        registry
            .write(&NAMESPACE, None, "team", Writer::main("test"), |current| {
                let mut ns = current.unwrap().clone();
                ns.metadata_mut().resource_version = None;
                ns.metadata_mut().finalizers = None;
                Ok(ns)
            })
            .await
            .unwrap();
        assert_eq!(
            registry
                .get(&NAMESPACE, None, "team")
                .await
                .unwrap_err()
                .code,
            404
        );
        registry
            .get(&POD, Some("default"), "elsewhere")
            .await
            .unwrap();
        cancel.cancel();
    }

    #[tokio::test]
    async fn the_content_of_a_vanished_namespace_is_deleted() {
        let (_dir, registry) = registry().await;
        let cancel = started(&registry).await;
        create(
            &registry,
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
        )
        .await;
        fill(&registry, "team").await;
        create(&registry, Some("default"), pod("elsewhere", None)).await;
        registry
            .delete(&NAMESPACE, None, "team", &DeleteOptions::default())
            .await
            .unwrap();
        finish_bound_pod(&registry, "team").await;
        eventually("content gone", Duration::from_secs(15), || async {
            (count(&registry, "team").await == 0).then_some(())
        })
        .await;
        registry
            .get(&POD, Some("default"), "elsewhere")
            .await
            .unwrap();
        cancel.cancel();
    }
}
