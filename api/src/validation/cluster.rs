//! Namespace, Node and Event rules.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Event, Namespace, Node};

use super::{names, one_of, push_invalid};
use crate::error::FieldError;
use crate::path::FieldPath;

/// Finalizer names without a prefix that Kubernetes knows.
const STANDARD_FINALIZERS: [&str; 3] = ["kubernetes", "orphan", "foregroundDeletion"];

/// `spec.finalizers`: qualified names, and those without a prefix standard ones
/// (kube's `validateFinalizerName`).
pub(super) fn validate_namespace(namespace: &Namespace, errors: &mut Vec<FieldError>) {
    let path = FieldPath::new("spec").child("finalizers");
    let finalizers = namespace.spec.as_ref().and_then(|s| s.finalizers.as_ref());
    for (idx, finalizer) in finalizers.into_iter().flatten().enumerate() {
        let path = path.index(idx);
        push_invalid(errors, &path, finalizer, names::qualified_name(finalizer));
        if !finalizer.contains('/') && !STANDARD_FINALIZERS.contains(&finalizer.as_str()) {
            errors.push(FieldError::invalid(
                &path,
                finalizer.as_str(),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
}

pub(super) fn validate_node(node: &Node, errors: &mut Vec<FieldError>) {
    let path = FieldPath::new("spec");
    let Some(spec) = &node.spec else { return };
    if let Some(cidr) = &spec.pod_cidr {
        validate_cidr(cidr, &path.child("podCIDR"), errors);
    }
    for (idx, cidr) in spec.pod_cidrs.iter().flatten().enumerate() {
        validate_cidr(cidr, &path.child("podCIDRs").index(idx), errors);
    }
    let mut seen = HashSet::new();
    for (idx, taint) in spec.taints.iter().flatten().enumerate() {
        let taint_path = path.child("taints").index(idx);
        push_invalid(
            errors,
            &taint_path.child("key"),
            &taint.key,
            names::qualified_name(&taint.key),
        );
        if let Some(value) = &taint.value {
            push_invalid(
                errors,
                &taint_path.child("value"),
                value,
                names::label_value(value),
            );
        }
        one_of(
            Some(&taint.effect),
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            &taint_path.child("effect"),
            errors,
        );
        if !seen.insert((taint.key.as_str(), taint.effect.as_str())) {
            let detail = "taints must be unique by key and effect pair";
            errors.push(FieldError {
                detail: detail.to_owned(),
                ..FieldError::duplicate(&taint_path, format!("{}:{}", taint.key, taint.effect))
            });
        }
    }
}

/// `10.244.1.0/24`: an address and a prefix length that fits it.
fn validate_cidr(cidr: &str, path: &FieldPath, errors: &mut Vec<FieldError>) {
    let valid = cidr.split_once('/').is_some_and(|(address, prefix)| {
        match (address.parse::<std::net::IpAddr>(), prefix.parse::<u8>()) {
            (Ok(std::net::IpAddr::V4(_)), Ok(bits)) => bits <= 32,
            (Ok(std::net::IpAddr::V6(_)), Ok(bits)) => bits <= 128,
            _ => false,
        }
    });
    if !valid {
        errors.push(FieldError::invalid(
            path,
            cidr,
            "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        ));
    }
}

pub(super) fn validate_event(event: &Event, errors: &mut Vec<FieldError>) {
    let involved = &event.involved_object;
    let path = FieldPath::new("involvedObject");
    let event_namespace = event.metadata.namespace.as_deref().unwrap_or_default();
    if let Some(namespace) = involved.namespace.as_deref().filter(|n| !n.is_empty())
        && !event_namespace.is_empty()
        && namespace != event_namespace
    {
        errors.push(FieldError::invalid(
            &path.child("namespace"),
            namespace,
            "does not match event.namespace",
        ));
    }
    one_of(
        event.type_.as_deref().filter(|t| !t.is_empty()),
        &["Normal", "Warning"],
        &FieldPath::new("type"),
        errors,
    );
}
