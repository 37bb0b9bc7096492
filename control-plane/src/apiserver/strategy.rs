//! Per-kind write strategy, as kube-apiserver's `PrepareForCreate`/`PrepareForUpdate`:
//! which part of an object a write through the main resource, `/status` or (for
//! Namespaces) `/finalize` may change, and the status a new object starts with.

use k8s_openapi::api::core::v1::{NamespaceStatus, PodCondition};
use skiff_api::Object;
use skiff_api::meta::{Time, jiff};
use skiff_api::quantity::Quantity;
use skiff_api::types::PodStatus;

/// Which endpoint a write comes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The object itself (`PUT/PATCH …/deployments/web`): `status` is kept as stored.
    Main,
    /// The `/status` subresource: only `status` changes.
    Status,
    /// `pods/binding`: only `spec.nodeName` changes (which a pod update may not do).
    Binding,
    /// `namespaces/finalize`: only a Namespace's `spec.finalizers` changes (which a
    /// main-resource write may not do).
    Finalize,
}

impl Part {
    /// The subresource name recorded in managedFields.
    pub fn subresource(self) -> Option<&'static str> {
        match self {
            Self::Main => None,
            Self::Status => Some("status"),
            Self::Binding => Some("binding"),
            Self::Finalize => Some("finalize"),
        }
    }
}

/// Whether the kind has a `/status` subresource (and so a status the main resource
/// cannot change).
pub fn has_status(object: &Object) -> bool {
    object.kind().has_status()
}

/// What every write through the main resource does before defaulting and validation,
/// as kube's v1 → internal conversion: a Secret's `stringData` entries overwrite the
/// same keys of `data`, and `stringData` itself is never stored.
pub fn prepare_for_write(object: &mut Object) {
    if let Object::Secret(secret) = object
        && let Some(string_data) = secret.string_data.take()
    {
        let data = secret.data.get_or_insert_default();
        for (key, value) in string_data {
            data.insert(key, skiff_api::types::ByteString(value.into_bytes()));
        }
    }
}

/// The finalizer in a Namespace's `spec.finalizers` that kube-controller-manager's
/// namespace controller removes once the namespace is empty.
pub const NAMESPACE_FINALIZER: &str = "kubernetes";

/// What a create does to a new object before defaulting, as kube's strategies'
/// `PrepareForCreate`: the status is the server's, and a Namespace's
/// `spec.finalizers` always holds `kubernetes`.
pub fn prepare_for_create(object: &mut Object) {
    reset_status_for_create(object);
    if let Object::Namespace(namespace) = object {
        let finalizers = namespace
            .spec
            .get_or_insert_default()
            .finalizers
            .get_or_insert_default();
        if !finalizers.iter().any(|f| f == NAMESPACE_FINALIZER) {
            finalizers.push(NAMESPACE_FINALIZER.to_owned());
        }
    }
}

/// A Namespace's `spec.finalizers` (empty for other kinds): while any remain, a
/// namespace being deleted stays.
pub fn spec_finalizers(object: &Object) -> &[String] {
    match object {
        Object::Namespace(namespace) => namespace
            .spec
            .as_ref()
            .and_then(|spec| spec.finalizers.as_deref())
            .unwrap_or_default(),
        _ => &[],
    }
}

/// The status a new object starts with: Kubernetes ignores what a client sends.
fn reset_status_for_create(object: &mut Object) {
    match object {
        Object::Pod(pod) => {
            let qos_class = pod.spec.as_ref().map(|spec| qos_class(spec).to_owned());
            pod.status = Some(PodStatus {
                phase: Some("Pending".to_owned()),
                qos_class,
                ..Default::default()
            });
        }
        Object::Namespace(namespace) => {
            namespace.status = Some(NamespaceStatus {
                phase: Some("Active".to_owned()),
                ..Default::default()
            });
        }
        Object::Deployment(deployment) => deployment.status = Some(Default::default()),
        Object::ReplicaSet(replica_set) => replica_set.status = Some(Default::default()),
        Object::Service(service) => service.status = Some(Default::default()),
        // Nodes register with their status; the other kinds have none.
        Object::Node(_)
        | Object::Event(_)
        | Object::Endpoints(_)
        | Object::Secret(_)
        | Object::Lease(_) => {}
    }
}

/// Merges a write into the stored object according to `part`: a main-resource write
/// keeps the stored status (and a Namespace's `spec.finalizers`); a status write keeps
/// everything but the status, a binding everything but the node name, a finalize
/// everything but `spec.finalizers` (the three keep the resourceVersion the write was
/// based on, for the conflict check).
pub fn merge_part(part: Part, old: &Object, new: Object) -> Object {
    match part {
        Part::Main => {
            let mut new = new;
            copy_status(old, &mut new);
            copy_spec_finalizers(old, &mut new);
            new
        }
        Part::Finalize => {
            let mut merged = old.clone();
            copy_spec_finalizers(&new, &mut merged);
            merged
                .metadata_mut()
                .resource_version
                .clone_from(&new.metadata().resource_version);
            merged
        }
        Part::Binding => {
            let mut merged = old.clone();
            if let (Object::Pod(from), Object::Pod(to)) = (&new, &mut merged) {
                let node_name = from.spec.as_ref().and_then(|s| s.node_name.clone());
                if node_name.as_deref().is_some_and(|n| !n.is_empty()) {
                    mark_scheduled(to);
                }
                to.spec.get_or_insert_default().node_name = node_name;
            }
            merged
                .metadata_mut()
                .resource_version
                .clone_from(&new.metadata().resource_version);
            merged
        }
        Part::Status => {
            let mut merged = old.clone();
            copy_status(&new, &mut merged);
            merged
                .metadata_mut()
                .resource_version
                .clone_from(&new.metadata().resource_version);
            merged
        }
    }
}

/// Copies a Namespace's `spec.finalizers` from `from` into `to` (an empty list is
/// stored as none).
fn copy_spec_finalizers(from: &Object, to: &mut Object) {
    if let (Object::Namespace(from), Object::Namespace(to)) = (from, to) {
        let finalizers = from
            .spec
            .as_ref()
            .and_then(|spec| spec.finalizers.clone())
            .filter(|f| !f.is_empty());
        match (to.spec.as_mut(), finalizers) {
            (Some(spec), finalizers) => spec.finalizers = finalizers,
            (None, None) => {}
            (None, Some(finalizers)) => {
                to.spec.get_or_insert_default().finalizers = Some(finalizers);
            }
        }
    }
}

/// Sets `PodScheduled=True`, as kube-apiserver's binding does (`setPodHostAndAnnotations`):
/// the transition time moves only if the condition was not already true.
fn mark_scheduled(pod: &mut skiff_api::types::Pod) {
    let conditions = pod
        .status
        .get_or_insert_default()
        .conditions
        .get_or_insert_default();
    let existing = conditions.iter().position(|c| c.type_ == "PodScheduled");
    if existing.is_some_and(|idx| conditions[idx].status == "True") {
        return;
    }
    let seconds = super::registry::now_timestamp().as_second();
    let now = jiff::Timestamp::from_second(seconds).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let scheduled = PodCondition {
        type_: "PodScheduled".to_owned(),
        status: "True".to_owned(),
        last_transition_time: Some(Time(now)),
        ..PodCondition::default()
    };
    match existing {
        Some(idx) => conditions[idx] = scheduled,
        None => conditions.push(scheduled),
    }
}

/// Copies `from`'s status into `to` (objects of the same kind).
fn copy_status(from: &Object, to: &mut Object) {
    match (from, to) {
        (Object::Pod(from), Object::Pod(to)) => to.status.clone_from(&from.status),
        (Object::Namespace(from), Object::Namespace(to)) => to.status.clone_from(&from.status),
        (Object::Service(from), Object::Service(to)) => to.status.clone_from(&from.status),
        (Object::Node(from), Object::Node(to)) => to.status.clone_from(&from.status),
        (Object::Deployment(from), Object::Deployment(to)) => to.status.clone_from(&from.status),
        (Object::ReplicaSet(from), Object::ReplicaSet(to)) => to.status.clone_from(&from.status),
        _ => {}
    }
}

/// The pod's QoS class, as Kubernetes computes it: `Guaranteed` when every container
/// limits CPU and memory with requests equal to limits, `BestEffort` when none requests
/// or limits anything, `Burstable` otherwise.
pub fn qos_class(spec: &skiff_api::types::PodSpec) -> &'static str {
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let mut any = false;
    let mut guaranteed = true;
    for container in containers {
        let resources = container.resources.as_ref();
        let requests = resources.and_then(|r| r.requests.as_ref());
        let limits = resources.and_then(|r| r.limits.as_ref());
        let set = |map: Option<&std::collections::BTreeMap<String, _>>, name: &str| {
            map.and_then(|m| m.get(name))
                .and_then(|q: &skiff_api::types::QuantityString| Quantity::parse(&q.0).ok())
                .filter(|q| q.nano_value() != 0)
        };
        for resource in ["cpu", "memory"] {
            let request = set(requests, resource);
            let limit = set(limits, resource);
            any |= request.is_some() || limit.is_some();
            match (request, limit) {
                (Some(request), Some(limit)) if request == limit => {}
                (None, Some(_)) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(resources: serde_json::Value, expected: &str) {
        let spec: skiff_api::types::PodSpec = serde_json::from_value(
            json!({"containers": [{"name": "a", "image": "i", "resources": resources}]}),
        )
        .unwrap();
        assert_eq!(qos_class(&spec), expected, "{resources}");
    }

    #[test]
    fn qos_classes_follow_kubernetes() {
        check(json!({}), "BestEffort");
        check(
            json!({"limits": {"cpu": "1", "memory": "1Gi"}}),
            "Guaranteed",
        );
        check(
            json!({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1Gi"}}),
            "Guaranteed",
        );
        check(json!({"requests": {"cpu": "100m"}}), "Burstable");
        check(json!({"limits": {"cpu": "1"}}), "Burstable");
    }
}
