//! Pod spec rules (Kubernetes' `ValidatePodSpec`), for pods and pod templates alike.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Toleration,
    Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as QuantityString;

use super::{
    names, non_negative, one_of, push_invalid, validate_labels, validate_port_number_or_name,
};
use crate::error::FieldError;
use crate::path::FieldPath;
use crate::quantity::Quantity;

/// Restart policies Kubernetes defines.
pub const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
/// Compute resources Skiff schedules and enforces.
const RESOURCE_NAMES: &[&str] = &["cpu", "memory", "ephemeral-storage"];
const HOST_PATH_TYPES: &[&str] = &[
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
];
const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// Which kind of container a spec entry is: rules differ for init containers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ContainerRole {
    Regular,
    Init,
}

/// Validates a pod template: its labels and its spec.
pub(super) fn validate_pod_template(
    template: &PodTemplateSpec,
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    if let Some(metadata) = &template.metadata {
        validate_labels(
            metadata.labels.iter().flatten(),
            &path.child("metadata").child("labels"),
            errors,
        );
    }
    match &template.spec {
        Some(spec) => validate_pod_spec(spec, &path.child("spec"), errors),
        None => errors.push(FieldError::required(&path.child("spec"), "")),
    }
}

/// Validates a pod spec found at `path` (`spec`, or `spec.template.spec`).
pub fn validate_pod_spec(spec: &PodSpec, path: &FieldPath, errors: &mut Vec<FieldError>) {
    let volume_names = validate_volumes(
        spec.volumes.as_deref().unwrap_or_default(),
        &path.child("volumes"),
        errors,
    );
    let host_network = spec.host_network.unwrap_or(false);
    let mut container_names = HashSet::new();
    let mut host_ports = HashSet::new();
    let init_containers = spec.init_containers.as_deref().unwrap_or_default();
    let groups = [
        (ContainerRole::Init, "initContainers", init_containers),
        (ContainerRole::Regular, "containers", &spec.containers),
    ];
    for (role, field, containers) in groups {
        for (idx, container) in containers.iter().enumerate() {
            let container_path = path.child(field).index(idx);
            validate_container(
                container,
                role,
                &container_path,
                &volume_names,
                host_network,
                errors,
            );
            if !container_names.insert(container.name.as_str()) {
                errors.push(FieldError::duplicate(
                    &container_path.child("name"),
                    container.name.as_str(),
                ));
            }
            for (port_idx, port) in container.ports.iter().flatten().enumerate() {
                let host_port = port.host_port.unwrap_or(0);
                let protocol = port.protocol.as_deref().unwrap_or("TCP");
                if host_port != 0 && !host_ports.insert((host_port, protocol)) {
                    let port_path = container_path
                        .child("ports")
                        .index(port_idx)
                        .child("hostPort");
                    errors.push(FieldError::duplicate(
                        &port_path,
                        format!("{host_port}/{protocol}"),
                    ));
                }
            }
        }
    }
    if spec.containers.is_empty() {
        errors.push(FieldError::required(&path.child("containers"), ""));
    }
    one_of(
        spec.restart_policy.as_deref(),
        RESTART_POLICIES,
        &path.child("restartPolicy"),
        errors,
    );
    one_of(
        spec.dns_policy.as_deref(),
        &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
        &path.child("dnsPolicy"),
        errors,
    );
    non_negative(
        spec.termination_grace_period_seconds,
        &path.child("terminationGracePeriodSeconds"),
        errors,
    );
    if let Some(node_name) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        push_invalid(
            errors,
            &path.child("nodeName"),
            node_name,
            names::dns1123_subdomain(node_name),
        );
    }
    validate_labels(
        spec.node_selector.iter().flatten(),
        &path.child("nodeSelector"),
        errors,
    );
    for (idx, toleration) in spec.tolerations.iter().flatten().enumerate() {
        validate_toleration(toleration, &path.child("tolerations").index(idx), errors);
    }
}

fn validate_container(
    container: &Container,
    role: ContainerRole,
    path: &FieldPath,
    volume_names: &HashSet<&str>,
    host_network: bool,
    errors: &mut Vec<FieldError>,
) {
    let name_path = path.child("name");
    if container.name.is_empty() {
        errors.push(FieldError::required(&name_path, ""));
    } else {
        push_invalid(
            errors,
            &name_path,
            &container.name,
            names::dns1123_label(&container.name),
        );
    }
    let image = container.image.as_deref().unwrap_or_default();
    if image.trim().is_empty() {
        errors.push(FieldError::required(&path.child("image"), ""));
    } else if image.trim() != image {
        errors.push(FieldError::invalid(
            &path.child("image"),
            image,
            "must not have leading or trailing whitespace",
        ));
    }
    one_of(
        container.image_pull_policy.as_deref(),
        PULL_POLICIES,
        &path.child("imagePullPolicy"),
        errors,
    );
    validate_ports(
        container.ports.as_deref().unwrap_or_default(),
        &path.child("ports"),
        host_network,
        errors,
    );
    for (idx, env) in container.env.iter().flatten().enumerate() {
        let env_path = path.child("env").index(idx).child("name");
        if env.name.is_empty() {
            errors.push(FieldError::required(&env_path, ""));
        } else {
            push_invalid(errors, &env_path, &env.name, names::env_var_name(&env.name));
        }
    }
    if let Some(resources) = &container.resources {
        validate_resources(resources, &path.child("resources"), errors);
    }
    let mut mount_paths = HashSet::new();
    for (idx, mount) in container.volume_mounts.iter().flatten().enumerate() {
        let mount_path = path.child("volumeMounts").index(idx);
        if mount.name.is_empty() {
            errors.push(FieldError::required(&mount_path.child("name"), ""));
        } else if !volume_names.contains(mount.name.as_str()) {
            errors.push(FieldError::not_found(
                &mount_path.child("name"),
                mount.name.as_str(),
            ));
        }
        if mount.mount_path.is_empty() {
            errors.push(FieldError::required(&mount_path.child("mountPath"), ""));
        } else if !mount_paths.insert(mount.mount_path.as_str()) {
            errors.push(FieldError::invalid(
                &mount_path.child("mountPath"),
                mount.mount_path.as_str(),
                "must be unique",
            ));
        }
    }
    let probes = [
        ("livenessProbe", &container.liveness_probe),
        ("readinessProbe", &container.readiness_probe),
        ("startupProbe", &container.startup_probe),
    ];
    for (field, probe) in probes {
        let Some(probe) = probe else { continue };
        let probe_path = path.child(field);
        if role == ContainerRole::Init {
            errors.push(FieldError::forbidden(
                &probe_path,
                "may not be set for init containers without restartPolicy=Always",
            ));
            continue;
        }
        validate_probe(probe, &probe_path, field != "readinessProbe", errors);
    }
}

fn validate_ports(
    ports: &[ContainerPort],
    path: &FieldPath,
    host_network: bool,
    errors: &mut Vec<FieldError>,
) {
    let mut port_names = HashSet::new();
    for (idx, port) in ports.iter().enumerate() {
        let port_path = path.index(idx);
        for msg in names::port_number(i64::from(port.container_port)) {
            errors.push(FieldError::invalid(
                &port_path.child("containerPort"),
                port.container_port,
                msg,
            ));
        }
        if let Some(host_port) = port.host_port.filter(|p| *p != 0) {
            for msg in names::port_number(i64::from(host_port)) {
                errors.push(FieldError::invalid(
                    &port_path.child("hostPort"),
                    host_port,
                    msg,
                ));
            }
            if host_network && host_port != port.container_port {
                errors.push(FieldError::invalid(
                    &port_path.child("hostPort"),
                    host_port,
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            push_invalid(
                errors,
                &port_path.child("name"),
                name,
                names::port_name(name),
            );
            if !port_names.insert(name) {
                errors.push(FieldError::duplicate(&port_path.child("name"), name));
            }
        }
        one_of(
            port.protocol.as_deref(),
            PROTOCOLS,
            &port_path.child("protocol"),
            errors,
        );
    }
}

/// Requests and limits: known resource names, valid non-negative quantities, and
/// requests no larger than limits.
fn validate_resources(
    resources: &ResourceRequirements,
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    let limits = parse_quantities(resources.limits.as_ref(), &path.child("limits"), errors);
    let requests = parse_quantities(resources.requests.as_ref(), &path.child("requests"), errors);
    for (name, (request, request_text)) in &requests {
        if let Some((limit, _)) = limits.get(name).filter(|(limit, _)| request > limit) {
            let detail = format!("must be less than or equal to {name} limit of {limit}");
            errors.push(FieldError::invalid(
                &path.child("requests").key(name),
                *request_text,
                detail,
            ));
        }
    }
}

/// Parses a resource map, reporting unknown resource names and bad or negative
/// quantities; returns the valid entries with their original text.
fn parse_quantities<'a>(
    map: Option<&'a BTreeMap<String, QuantityString>>,
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) -> BTreeMap<&'a str, (Quantity, &'a str)> {
    let mut parsed = BTreeMap::new();
    for (name, quantity) in map.into_iter().flatten() {
        let quantity_path = path.key(name);
        if !RESOURCE_NAMES.contains(&name.as_str()) {
            errors.push(FieldError::not_supported(
                &quantity_path,
                name.as_str(),
                RESOURCE_NAMES,
            ));
            continue;
        }
        if let Some(value) = check_quantity(&quantity.0, &quantity_path, errors) {
            parsed.insert(name.as_str(), (value, quantity.0.as_str()));
        }
    }
    parsed
}

/// Parses a non-negative quantity, reporting a malformed or negative one.
fn check_quantity(text: &str, path: &FieldPath, errors: &mut Vec<FieldError>) -> Option<Quantity> {
    match Quantity::parse(text) {
        Ok(value) if value.is_negative() => {
            errors.push(FieldError::invalid(
                path,
                text,
                "must be greater than or equal to 0",
            ));
            None
        }
        Ok(value) => Some(value),
        Err(error) => {
            errors.push(FieldError::invalid(path, text, error.to_string()));
            None
        }
    }
}

/// `requires_single_success`: liveness and startup probes must have successThreshold 1.
fn validate_probe(
    probe: &Probe,
    path: &FieldPath,
    requires_single_success: bool,
    errors: &mut Vec<FieldError>,
) {
    let handlers = [
        probe.exec.is_some(),
        probe.http_get.is_some(),
        probe.tcp_socket.is_some(),
    ];
    match handlers.iter().filter(|set| **set).count() {
        0 => errors.push(FieldError::required(path, "must specify a handler type")),
        1 => {}
        _ => errors.push(FieldError::forbidden(
            path,
            "may not specify more than 1 handler type",
        )),
    }
    if let Some(exec) = &probe.exec
        && exec.command.as_deref().unwrap_or_default().is_empty()
    {
        errors.push(FieldError::required(
            &path.child("exec").child("command"),
            "",
        ));
    }
    if let Some(http_get) = &probe.http_get {
        let http_path = path.child("httpGet");
        validate_port_number_or_name(&http_get.port, &http_path.child("port"), errors);
        one_of(
            http_get.scheme.as_deref(),
            &["HTTP", "HTTPS"],
            &http_path.child("scheme"),
            errors,
        );
    }
    if let Some(tcp) = &probe.tcp_socket {
        validate_port_number_or_name(&tcp.port, &path.child("tcpSocket").child("port"), errors);
    }
    for (field, value) in [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        non_negative(value.map(i64::from), &path.child(field), errors);
    }
    if requires_single_success && let Some(threshold) = probe.success_threshold.filter(|t| *t != 1)
    {
        errors.push(FieldError::invalid(
            &path.child("successThreshold"),
            threshold,
            "must be 1",
        ));
    }
}

/// Validates volumes and returns the set of their names for mount checks.
fn validate_volumes<'a>(
    volumes: &'a [Volume],
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) -> HashSet<&'a str> {
    let mut volume_names = HashSet::new();
    for (idx, volume) in volumes.iter().enumerate() {
        let volume_path = path.index(idx);
        if volume.name.is_empty() {
            errors.push(FieldError::required(&volume_path.child("name"), ""));
        } else {
            push_invalid(
                errors,
                &volume_path.child("name"),
                &volume.name,
                names::dns1123_label(&volume.name),
            );
            if !volume_names.insert(volume.name.as_str()) {
                errors.push(FieldError::duplicate(
                    &volume_path.child("name"),
                    volume.name.as_str(),
                ));
            }
        }
        match (&volume.empty_dir, &volume.host_path) {
            (None, None) => errors.push(FieldError::required(
                &volume_path,
                "must specify a volume type",
            )),
            (Some(_), Some(_)) => errors.push(FieldError::forbidden(
                &volume_path.child("hostPath"),
                "may not specify more than 1 volume type",
            )),
            (Some(empty_dir), None) => {
                one_of(
                    empty_dir.medium.as_deref(),
                    &["", "Memory"],
                    &volume_path.child("emptyDir").child("medium"),
                    errors,
                );
                if let Some(size) = &empty_dir.size_limit {
                    check_quantity(
                        &size.0,
                        &volume_path.child("emptyDir").child("sizeLimit"),
                        errors,
                    );
                }
            }
            (None, Some(host_path)) => {
                let host_path_path = volume_path.child("hostPath");
                if host_path.path.is_empty() {
                    errors.push(FieldError::required(&host_path_path.child("path"), ""));
                } else if host_path.path.split('/').any(|part| part == "..") {
                    errors.push(FieldError::invalid(
                        &host_path_path.child("path"),
                        host_path.path.as_str(),
                        "must not contain '..'",
                    ));
                }
                one_of(
                    host_path.type_.as_deref(),
                    HOST_PATH_TYPES,
                    &host_path_path.child("type"),
                    errors,
                );
            }
        }
    }
    volume_names
}

fn validate_toleration(toleration: &Toleration, path: &FieldPath, errors: &mut Vec<FieldError>) {
    let key = toleration.key.as_deref().unwrap_or_default();
    let operator = toleration
        .operator
        .as_deref()
        .filter(|o| !o.is_empty())
        .unwrap_or("Equal");
    if !key.is_empty() {
        push_invalid(errors, &path.child("key"), key, names::qualified_name(key));
    }
    if key.is_empty() && operator != "Exists" {
        let detail = "operator must be Exists when `key` is empty, which means \"match all values and all keys\"";
        errors.push(FieldError::invalid(
            &path.child("operator"),
            operator,
            detail,
        ));
    }
    match operator {
        "Equal" => {
            let value = toleration.value.as_deref().unwrap_or_default();
            push_invalid(
                errors,
                &path.child("value"),
                value,
                names::label_value(value),
            );
        }
        "Exists" => {
            if toleration.value.as_deref().is_some_and(|v| !v.is_empty()) {
                errors.push(FieldError::invalid(
                    &path.child("operator"),
                    toleration.value.as_deref().unwrap_or_default(),
                    "value must be empty when `operator` is 'Exists'",
                ));
            }
        }
        other => errors.push(FieldError::not_supported(
            &path.child("operator"),
            other,
            &["Equal", "Exists"],
        )),
    }
    let effect = toleration.effect.as_deref().filter(|e| !e.is_empty());
    one_of(effect, TAINT_EFFECTS, &path.child("effect"), errors);
    if toleration.toleration_seconds.is_some() && effect != Some("NoExecute") {
        errors.push(FieldError::invalid(
            &path.child("effect"),
            effect.unwrap_or_default(),
            "effect must be 'NoExecute' when `tolerationSeconds` is set",
        ));
    }
}

/// Pod specs are immutable except for container images, added tolerations and a
/// grace period; everything else must stay as it was.
pub(super) fn validate_pod_spec_update(
    old: Option<&PodSpec>,
    new: Option<&PodSpec>,
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    let (Some(old), Some(new)) = (old, new) else {
        return;
    };
    let mut masked = new.clone();
    // Take over from the old spec everything an update may change, then compare.
    for (masked_container, old_container) in masked.containers.iter_mut().zip(&old.containers) {
        masked_container.image.clone_from(&old_container.image);
    }
    for (masked_container, old_container) in masked
        .init_containers
        .iter_mut()
        .flatten()
        .zip(old.init_containers.iter().flatten())
    {
        masked_container.image.clone_from(&old_container.image);
    }
    let old_tolerations = old.tolerations.as_deref().unwrap_or_default();
    let new_tolerations = new.tolerations.as_deref().unwrap_or_default();
    if old_tolerations.iter().all(|t| new_tolerations.contains(t)) {
        masked.tolerations.clone_from(&old.tolerations);
    }
    masked.termination_grace_period_seconds = old.termination_grace_period_seconds;
    masked.active_deadline_seconds = old.active_deadline_seconds;
    if &masked != old {
        let detail = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds`";
        errors.push(FieldError::forbidden(path, detail));
    }
}
