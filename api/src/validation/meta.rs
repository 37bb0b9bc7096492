//! Object metadata rules shared by every kind (Kubernetes' `ValidateObjectMeta`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{immutable, names, push_invalid, validate_labels};
use crate::error::FieldError;
use crate::kind::{self, ResourceKind};
use crate::path::FieldPath;

/// Largest total size of an object's annotations (keys plus values).
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// The name rule of a kind: DNS labels for namespaces, DNS-1035 labels for services,
/// DNS subdomains for the rest.
fn name_rule(kind: &ResourceKind) -> fn(&str) -> Vec<String> {
    if kind == &kind::NAMESPACE {
        names::dns1123_label
    } else if kind == &kind::SERVICE {
        names::dns1035_label
    } else {
        names::dns1123_subdomain
    }
}

pub(super) fn validate_object_meta(
    meta: &ObjectMeta,
    kind: &ResourceKind,
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    let rule = name_rule(kind);
    let name = meta.name.as_deref().unwrap_or_default();
    let generate_name = meta.generate_name.as_deref().unwrap_or_default();
    if name.is_empty() {
        if generate_name.is_empty() {
            errors.push(FieldError::required(
                &path.child("name"),
                "name or generateName is required",
            ));
        } else {
            // A prefix may end in '-': the generated suffix follows it.
            let prefix = generate_name.strip_suffix('-').unwrap_or(generate_name);
            push_invalid(
                errors,
                &path.child("generateName"),
                generate_name,
                rule(prefix),
            );
        }
    } else {
        push_invalid(errors, &path.child("name"), name, rule(name));
    }
    match meta.namespace.as_deref() {
        Some(namespace) if !kind.namespaced && !namespace.is_empty() => {
            errors.push(FieldError::forbidden(
                &path.child("namespace"),
                "not allowed on this type",
            ));
        }
        Some(namespace) if kind.namespaced && !namespace.is_empty() => {
            push_invalid(
                errors,
                &path.child("namespace"),
                namespace,
                names::dns1123_label(namespace),
            );
        }
        _ => {}
    }
    validate_labels(meta.labels.iter().flatten(), &path.child("labels"), errors);
    let annotations_path = path.child("annotations");
    let mut total_size = 0;
    for (key, value) in meta.annotations.iter().flatten() {
        push_invalid(
            errors,
            &annotations_path,
            key,
            names::qualified_name(&key.to_ascii_lowercase()),
        );
        total_size += key.len() + value.len();
    }
    if total_size > TOTAL_ANNOTATION_SIZE_LIMIT {
        let detail = format!("must have at most {TOTAL_ANNOTATION_SIZE_LIMIT} bytes");
        errors.push(FieldError {
            detail,
            ..FieldError::too_long(&annotations_path, TOTAL_ANNOTATION_SIZE_LIMIT)
        });
    }
    for (idx, finalizer) in meta.finalizers.iter().flatten().enumerate() {
        push_invalid(
            errors,
            &path.child("finalizers").index(idx),
            finalizer,
            names::qualified_name(finalizer),
        );
    }
    for (idx, owner) in meta.owner_references.iter().flatten().enumerate() {
        let owner_path = path.child("ownerReferences").index(idx);
        for (field, value) in [
            ("apiVersion", &owner.api_version),
            ("kind", &owner.kind),
            ("name", &owner.name),
            ("uid", &owner.uid),
        ] {
            if value.is_empty() {
                errors.push(FieldError::required(&owner_path.child(field), ""));
            }
        }
    }
    let controllers = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.controller == Some(true))
        .count();
    if controllers > 1 {
        errors.push(FieldError::invalid(
            &path.child("ownerReferences"),
            controllers,
            "Only one reference can have Controller set to true",
        ));
    }
}

pub(super) fn validate_metadata_update(
    old: &ObjectMeta,
    new: &ObjectMeta,
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    immutable(&old.name, &new.name, &path.child("name"), errors);
    immutable(
        &old.namespace,
        &new.namespace,
        &path.child("namespace"),
        errors,
    );
    if new.uid.is_some() {
        immutable(&old.uid, &new.uid, &path.child("uid"), errors);
    }
    if new.creation_timestamp.is_some() {
        immutable(
            &old.creation_timestamp,
            &new.creation_timestamp,
            &path.child("creationTimestamp"),
            errors,
        );
    }
}
