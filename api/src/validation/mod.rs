//! Validation with Kubernetes' rules and messages. Every function appends to a list
//! of [`FieldError`]s so one pass reports every problem, each with its field path.
//!
//! - [`names`]: string formats (DNS labels, qualified names, ports, env names).
//! - `meta`: object metadata shared by every kind.
//! - `pod`: pod specs and templates; `apps`: Deployments and ReplicaSets;
//!   `service`: Services and Endpoints; `cluster`: Namespaces, Nodes and Events;
//!   `config`: Secrets; `coordination`: Leases.

mod apps;
mod cluster;
mod config;
mod coordination;
mod meta;
pub mod names;
mod pod;
mod service;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::error::FieldError;
use crate::object::Object;
use crate::path::FieldPath;

pub use config::MAX_SECRET_SIZE;
pub use pod::validate_pod_spec;

/// Validates an object for creation: metadata, then the kind's own rules.
pub fn validate(object: &Object) -> Vec<FieldError> {
    let mut errors = Vec::new();
    meta::validate_object_meta(
        object.metadata(),
        object.kind(),
        &FieldPath::new("metadata"),
        &mut errors,
    );
    let spec = FieldPath::new("spec");
    match object {
        Object::Pod(pod) => match &pod.spec {
            Some(pod_spec) => validate_pod_spec(pod_spec, &spec, &mut errors),
            None => errors.push(FieldError::required(&spec, "")),
        },
        Object::Deployment(deployment) => apps::validate_deployment(deployment, &mut errors),
        Object::ReplicaSet(replica_set) => apps::validate_replica_set(replica_set, &mut errors),
        Object::Service(service) => service::validate_service(service, &mut errors),
        Object::Endpoints(endpoints) => service::validate_endpoints(endpoints, &mut errors),
        Object::Namespace(namespace) => cluster::validate_namespace(namespace, &mut errors),
        Object::Node(node) => cluster::validate_node(node, &mut errors),
        Object::Event(event) => cluster::validate_event(event, &mut errors),
        Object::Secret(secret) => config::validate_secret(secret, &mut errors),
        Object::Lease(lease) => coordination::validate_lease(lease, &mut errors),
    }
    errors
}

/// Checks that an update does not change immutable fields.
pub fn validate_immutable(old: &Object, new: &Object) -> Vec<FieldError> {
    let mut errors = Vec::new();
    meta::validate_metadata_update(
        old.metadata(),
        new.metadata(),
        &FieldPath::new("metadata"),
        &mut errors,
    );
    let spec = FieldPath::new("spec");
    // apps/v1 workload selectors are immutable.
    if let (Some(old_selector), Some(new_selector)) =
        (workload_selector(old), workload_selector(new))
    {
        immutable(
            &old_selector,
            &new_selector,
            &spec.child("selector"),
            &mut errors,
        );
    }
    match (old, new) {
        (Object::Pod(old), Object::Pod(new)) => {
            pod::validate_pod_spec_update(old.spec.as_ref(), new.spec.as_ref(), &spec, &mut errors)
        }
        (Object::Service(old), Object::Service(new)) => {
            service::validate_service_update(old, new, &mut errors)
        }
        (Object::Secret(old), Object::Secret(new)) => {
            config::validate_secret_update(old, new, &mut errors)
        }
        _ => {}
    }
    errors
}

/// The selector of a Deployment or ReplicaSet (`None` for other kinds).
fn workload_selector(object: &Object) -> Option<Option<LabelSelector>> {
    match object {
        Object::Deployment(deployment) => {
            Some(deployment.spec.as_ref().map(|s| s.selector.clone()))
        }
        Object::ReplicaSet(replica_set) => {
            Some(replica_set.spec.as_ref().map(|s| s.selector.clone()))
        }
        _ => None,
    }
}

/// `field is immutable` when a value changed.
fn immutable<T: PartialEq + serde::Serialize>(
    old: &T,
    new: &T,
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    if old != new {
        errors.push(FieldError::invalid(
            path,
            to_json(new),
            "field is immutable",
        ));
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// Turns a checker's messages into `Invalid value` errors at `path`.
fn push_invalid(
    errors: &mut Vec<FieldError>,
    path: &FieldPath,
    value: &str,
    messages: Vec<String>,
) {
    errors.extend(
        messages
            .into_iter()
            .map(|msg| FieldError::invalid(path, value, msg)),
    );
}

/// `must be greater than or equal to 0` for negative numbers.
fn non_negative(value: Option<i64>, path: &FieldPath, errors: &mut Vec<FieldError>) {
    if let Some(value) = value.filter(|v| *v < 0) {
        errors.push(FieldError::invalid(
            path,
            value,
            "must be greater than or equal to 0",
        ));
    }
}

/// An optional string restricted to an enumerated set.
fn one_of(value: Option<&str>, supported: &[&str], path: &FieldPath, errors: &mut Vec<FieldError>) {
    if let Some(value) = value.filter(|v| !supported.contains(v)) {
        errors.push(FieldError::not_supported(path, value, supported));
    }
}

/// Label maps: qualified-name keys and label values (Kubernetes' `ValidateLabels`).
fn validate_labels<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    for (key, value) in labels {
        push_invalid(errors, path, key, names::qualified_name(key));
        push_invalid(errors, path, value, names::label_value(value));
    }
}

/// `LabelSelector` structure (Kubernetes' `ValidateLabelSelector`).
fn validate_label_selector(
    selector: &LabelSelector,
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    validate_labels(
        selector.match_labels.iter().flatten(),
        &path.child("matchLabels"),
        errors,
    );
    for (idx, expression) in selector.match_expressions.iter().flatten().enumerate() {
        let expr_path = path.child("matchExpressions").index(idx);
        let values = expression.values.as_deref().unwrap_or_default();
        match expression.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => errors.push(FieldError::required(
                &expr_path.child("values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => errors.push(FieldError::forbidden(
                &expr_path.child("values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errors.push(FieldError::invalid(
                &expr_path.child("operator"),
                other,
                "not a valid selector operator",
            )),
        }
        push_invalid(
            errors,
            &expr_path.child("key"),
            &expression.key,
            names::qualified_name(&expression.key),
        );
        for (value_idx, value) in values.iter().enumerate() {
            push_invalid(
                errors,
                &expr_path.child("values").index(value_idx),
                value,
                names::label_value(value),
            );
        }
    }
}

/// A port given as a number (1–65535) or an IANA service name.
fn validate_port_number_or_name(
    port: &IntOrString,
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    match port {
        IntOrString::Int(number) => {
            for msg in names::port_number(i64::from(*number)) {
                errors.push(FieldError::invalid(path, *number, msg));
            }
        }
        IntOrString::String(name) if name.is_empty() => errors.push(FieldError::required(path, "")),
        IntOrString::String(name) => push_invalid(errors, path, name, names::port_name(name)),
    }
}
