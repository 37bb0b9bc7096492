//! Deployment and ReplicaSet rules (Kubernetes' apps/v1 validation).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::pod::validate_pod_template;
use super::{non_negative, one_of, to_json, validate_label_selector};
use crate::error::FieldError;
use crate::path::FieldPath;
use crate::selector::Selector;

const PERCENT_MSG: &str = "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')";

pub(super) fn validate_deployment(deployment: &Deployment, errors: &mut Vec<FieldError>) {
    let path = FieldPath::new("spec");
    let Some(spec) = &deployment.spec else {
        errors.push(FieldError::required(&path, ""));
        return;
    };
    non_negative(
        spec.replicas.map(i64::from),
        &path.child("replicas"),
        errors,
    );
    validate_selector_and_template(&spec.selector, &spec.template, &path, "deployment", errors);
    if let Some(strategy) = &spec.strategy {
        validate_strategy(strategy, &path.child("strategy"), errors);
    }
    non_negative(
        spec.revision_history_limit.map(i64::from),
        &path.child("revisionHistoryLimit"),
        errors,
    );
    non_negative(
        spec.min_ready_seconds.map(i64::from),
        &path.child("minReadySeconds"),
        errors,
    );
    if let Some(deadline) = spec.progress_deadline_seconds {
        non_negative(
            Some(i64::from(deadline)),
            &path.child("progressDeadlineSeconds"),
            errors,
        );
        if deadline <= spec.min_ready_seconds.unwrap_or(0) {
            errors.push(FieldError::invalid(
                &path.child("progressDeadlineSeconds"),
                deadline,
                "must be greater than minReadySeconds",
            ));
        }
    }
}

pub(super) fn validate_replica_set(replica_set: &ReplicaSet, errors: &mut Vec<FieldError>) {
    let path = FieldPath::new("spec");
    let Some(spec) = &replica_set.spec else {
        errors.push(FieldError::required(&path, ""));
        return;
    };
    non_negative(
        spec.replicas.map(i64::from),
        &path.child("replicas"),
        errors,
    );
    non_negative(
        spec.min_ready_seconds.map(i64::from),
        &path.child("minReadySeconds"),
        errors,
    );
    match &spec.template {
        Some(template) => {
            validate_selector_and_template(&spec.selector, template, &path, "replicaset", errors)
        }
        None => errors.push(FieldError::required(&path.child("template"), "")),
    }
}

/// The selector must be non-empty and valid, and must select the template's labels;
/// the template must be a valid pod template that always restarts.
fn validate_selector_and_template(
    selector: &LabelSelector,
    template: &PodTemplateSpec,
    path: &FieldPath,
    noun: &str,
    errors: &mut Vec<FieldError>,
) {
    let selector_path = path.child("selector");
    let is_empty = selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty);
    if is_empty {
        errors.push(FieldError::invalid(
            &selector_path,
            to_json(selector),
            format!("empty selector is invalid for {noun}"),
        ));
    } else {
        validate_label_selector(selector, &selector_path, errors);
    }
    let template_path = path.child("template");
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    match Selector::from_label_selector(Some(selector)) {
        Err(_) => errors.push(FieldError::invalid(
            &selector_path,
            to_json(selector),
            "invalid label selector",
        )),
        Ok(parsed) if !is_empty && !parsed.matches(&labels) => {
            let labels_path = template_path.child("metadata").child("labels");
            errors.push(FieldError::invalid(
                &labels_path,
                to_json(&labels),
                "`selector` does not match template `labels`",
            ));
        }
        Ok(_) => {}
    }
    validate_pod_template(template, &template_path, errors);
    if let Some(policy) = template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
    {
        one_of(
            Some(policy),
            &["Always"],
            &template_path.child("spec").child("restartPolicy"),
            errors,
        );
    }
}

fn validate_strategy(
    strategy: &DeploymentStrategy,
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    let strategy_type = strategy.type_.as_deref().unwrap_or("RollingUpdate");
    one_of(
        Some(strategy_type),
        &["Recreate", "RollingUpdate"],
        &path.child("type"),
        errors,
    );
    let Some(rolling) = &strategy.rolling_update else {
        return;
    };
    let rolling_path = path.child("rollingUpdate");
    if strategy_type == "Recreate" {
        errors.push(FieldError::forbidden(
            &rolling_path,
            "may not be specified when strategy `type` is 'Recreate'",
        ));
        return;
    }
    let surge = rolling.max_surge.as_ref();
    let unavailable = rolling.max_unavailable.as_ref();
    let surge_path = rolling_path.child("maxSurge");
    let unavailable_path = rolling_path.child("maxUnavailable");
    let surge_value = surge.and_then(|v| int_or_percent(v, &surge_path, errors));
    let unavailable_value = unavailable.and_then(|v| int_or_percent(v, &unavailable_path, errors));
    if let (Some(IntOrString::String(text)), Some(percent)) = (unavailable, unavailable_value)
        && percent > 100
    {
        errors.push(FieldError::invalid(
            &unavailable_path,
            text.as_str(),
            "must not be greater than 100%",
        ));
    }
    if surge_value == Some(0) && unavailable_value == Some(0) {
        errors.push(FieldError::invalid(
            &unavailable_path,
            to_json(&unavailable),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

/// The numeric part of an int-or-percent value, reporting malformed or negative ones.
fn int_or_percent(
    value: &IntOrString,
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) -> Option<i64> {
    let number = match value {
        IntOrString::Int(number) => i64::from(*number),
        IntOrString::String(text) => {
            let Some(number) = text
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse().ok())
            else {
                errors.push(FieldError::invalid(path, text.as_str(), PERCENT_MSG));
                return None;
            };
            number
        }
    };
    if number < 0 {
        errors.push(FieldError::invalid(
            path,
            number,
            "must be greater than or equal to 0",
        ));
        return None;
    }
    Some(number)
}
