//! Defaulting, as Kubernetes applies it when an object is created: only fields the
//! user left unset are filled in, so applying defaults twice changes nothing.

use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, Probe, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::object::Object;

/// Default `terminationGracePeriodSeconds`.
pub const TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
/// Default Deployment `revisionHistoryLimit`.
pub const REVISION_HISTORY_LIMIT: i32 = 10;
/// Default Deployment `progressDeadlineSeconds`.
pub const PROGRESS_DEADLINE_SECONDS: i32 = 600;
/// Default `maxSurge` and `maxUnavailable` of a rolling update.
pub const ROLLING_UPDATE_PERCENT: &str = "25%";

/// Kubernetes treats the zero value as unset: defaults fill `None` and `""`.
fn default_text(field: &mut Option<String>, value: &str) {
    if field.as_deref().is_none_or(str::is_empty) {
        *field = Some(value.to_owned());
    }
}

/// Defaults fill `None` and `0`, as Kubernetes' `SetDefaults_*` do for int fields.
fn default_number<T: Copy + PartialEq + Default>(field: &mut Option<T>, value: T) {
    if field.is_none_or(|current| current == T::default()) {
        *field = Some(value);
    }
}

/// Applies every default for the object's kind.
pub fn apply(object: &mut Object) {
    match object {
        Object::Pod(pod) => {
            let spec = pod.spec.get_or_insert_with(Default::default);
            pod_spec(spec);
            // Only pods, not templates ("not a v1.PodTemplate" in Kubernetes' defaults).
            for container in spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten())
            {
                requests_from_limits(container);
            }
        }
        Object::Deployment(deployment) => {
            deployment_spec(deployment.spec.get_or_insert_with(Default::default))
        }
        Object::ReplicaSet(replica_set) => {
            let spec = replica_set.spec.get_or_insert_with(Default::default);
            spec.replicas.get_or_insert(1);
            if let Some(template) = &mut spec.template {
                pod_template(template);
            }
        }
        Object::Service(service) => service_spec(service.spec.get_or_insert_with(Default::default)),
        Object::Endpoints(endpoints) => {
            for subset in endpoints.subsets.iter_mut().flatten() {
                for port in subset.ports.iter_mut().flatten() {
                    default_text(&mut port.protocol, "TCP");
                }
            }
        }
        // kube's `SetDefaults_Secret`.
        Object::Secret(secret) => default_text(&mut secret.type_, "Opaque"),
        Object::Namespace(_) | Object::Node(_) | Object::Event(_) | Object::Lease(_) => {}
    }
}

fn deployment_spec(spec: &mut DeploymentSpec) {
    spec.replicas.get_or_insert(1);
    spec.revision_history_limit
        .get_or_insert(REVISION_HISTORY_LIMIT);
    spec.progress_deadline_seconds
        .get_or_insert(PROGRESS_DEADLINE_SECONDS);
    let strategy = spec
        .strategy
        .get_or_insert_with(DeploymentStrategy::default);
    default_text(&mut strategy.type_, "RollingUpdate");
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let rolling = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDeployment::default);
        rolling
            .max_surge
            .get_or_insert_with(|| IntOrString::String(ROLLING_UPDATE_PERCENT.to_owned()));
        rolling
            .max_unavailable
            .get_or_insert_with(|| IntOrString::String(ROLLING_UPDATE_PERCENT.to_owned()));
    }
    pod_template(&mut spec.template);
}

fn pod_template(template: &mut PodTemplateSpec) {
    pod_spec(template.spec.get_or_insert_with(Default::default));
}

/// Pod spec defaults (also for templates): restart and DNS policy, grace period, and
/// per-container defaults.
pub fn pod_spec(spec: &mut PodSpec) {
    default_text(&mut spec.restart_policy, "Always");
    default_text(&mut spec.dns_policy, "ClusterFirst");
    spec.termination_grace_period_seconds
        .get_or_insert(TERMINATION_GRACE_PERIOD_SECONDS);
    let host_network = spec.host_network.unwrap_or(false);
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        container_defaults(container, host_network);
    }
    for volume in spec.volumes.iter_mut().flatten() {
        if let Some(host_path) = &mut volume.host_path {
            host_path.type_.get_or_insert_with(String::new);
        }
    }
}

fn container_defaults(container: &mut Container, host_network: bool) {
    let policy = default_pull_policy(container.image.as_deref().unwrap_or_default());
    default_text(&mut container.image_pull_policy, policy);
    for port in container.ports.iter_mut().flatten() {
        default_text(&mut port.protocol, "TCP");
        // On the host's network a container port is a host port.
        if host_network {
            default_number(&mut port.host_port, port.container_port);
        }
    }
    for probe in [
        &mut container.liveness_probe,
        &mut container.readiness_probe,
        &mut container.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        probe_defaults(probe);
    }
}

/// Requests default to limits for resources that have only a limit (pods only).
fn requests_from_limits(container: &mut Container) {
    if let Some(resources) = &mut container.resources
        && let Some(limits) = &resources.limits
    {
        let requests = resources.requests.get_or_insert_with(Default::default);
        for (name, limit) in limits {
            requests
                .entry(name.clone())
                .or_insert_with(|| limit.clone());
        }
    }
}

fn probe_defaults(probe: &mut Probe) {
    default_number(&mut probe.timeout_seconds, 1);
    default_number(&mut probe.period_seconds, 10);
    default_number(&mut probe.success_threshold, 1);
    default_number(&mut probe.failure_threshold, 3);
    if let Some(http_get) = &mut probe.http_get {
        default_text(&mut http_get.path, "/");
        default_text(&mut http_get.scheme, "HTTP");
    }
}

/// `Always` for `:latest` and for untagged images without a digest, `IfNotPresent`
/// otherwise (Kubernetes' rule, via its `ParseImageName`).
pub fn default_pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((name, _)) => (name, true),
        None => (image, false),
    };
    // The tag follows the last ':' after the last '/' (a ':' before it is a registry port).
    let last_component = name.rsplit('/').next().unwrap_or(name);
    match last_component.split_once(':') {
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
        None if digest => "IfNotPresent",
        None => "Always",
    }
}

fn service_spec(spec: &mut ServiceSpec) {
    default_text(&mut spec.type_, "ClusterIP");
    default_text(&mut spec.session_affinity, "None");
    for port in spec.ports.iter_mut().flatten() {
        default_text(&mut port.protocol, "TCP");
        let unset = match &port.target_port {
            None | Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(name)) => name.is_empty(),
            Some(IntOrString::Int(_)) => false,
        };
        if unset {
            port.target_port = Some(IntOrString::Int(port.port));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_follows_the_tag() {
        for (image, policy) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.27", "IfNotPresent"),
            ("127.0.0.1:5055/skiff/httpd", "Always"),
            ("127.0.0.1:5055/skiff/httpd:1", "IfNotPresent"),
            ("busybox@sha256:abcd", "IfNotPresent"),
            ("nginx:latest@sha256:abcd", "Always"),
            ("nginx:1.27@sha256:abcd", "IfNotPresent"),
        ] {
            assert_eq!(default_pull_policy(image), policy, "{image}");
        }
    }
}
