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

/// Applies every default for the object's kind.
pub fn apply(object: &mut Object) {
    match object {
        Object::Pod(pod) => pod_spec(pod.spec.get_or_insert_with(Default::default)),
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
                    port.protocol.get_or_insert_with(|| "TCP".to_owned());
                }
            }
        }
        Object::Namespace(_) | Object::Node(_) | Object::Event(_) => {}
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
    let strategy_type = strategy
        .type_
        .get_or_insert_with(|| "RollingUpdate".to_owned());
    if strategy_type == "RollingUpdate" {
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

/// Pod spec defaults: restart policy, grace period, and per-container defaults.
pub fn pod_spec(spec: &mut PodSpec) {
    spec.restart_policy
        .get_or_insert_with(|| "Always".to_owned());
    spec.termination_grace_period_seconds
        .get_or_insert(TERMINATION_GRACE_PERIOD_SECONDS);
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        container_defaults(container);
    }
    for volume in spec.volumes.iter_mut().flatten() {
        if let Some(host_path) = &mut volume.host_path {
            host_path.type_.get_or_insert_with(String::new);
        }
    }
}

fn container_defaults(container: &mut Container) {
    if container.image_pull_policy.is_none() {
        let image = container.image.as_deref().unwrap_or_default();
        container.image_pull_policy = Some(default_pull_policy(image).to_owned());
    }
    for port in container.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".to_owned());
    }
    // Requests default to limits for resources that have only a limit.
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

fn probe_defaults(probe: &mut Probe) {
    probe.timeout_seconds.get_or_insert(1);
    probe.period_seconds.get_or_insert(10);
    probe.success_threshold.get_or_insert(1);
    probe.failure_threshold.get_or_insert(3);
    if let Some(http_get) = &mut probe.http_get {
        http_get.path.get_or_insert_with(|| "/".to_owned());
        http_get.scheme.get_or_insert_with(|| "HTTP".to_owned());
    }
}

/// `Always` for `:latest` or untagged images, `IfNotPresent` for other tags and digests.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    // The tag follows the last ':' after the last '/' (a ':' before it is a registry port).
    let last_component = image.rsplit('/').next().unwrap_or(image);
    match last_component.split_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn service_spec(spec: &mut ServiceSpec) {
    spec.type_.get_or_insert_with(|| "ClusterIP".to_owned());
    spec.session_affinity
        .get_or_insert_with(|| "None".to_owned());
    for port in spec.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".to_owned());
        port.target_port.get_or_insert(IntOrString::Int(port.port));
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
        ] {
            assert_eq!(default_pull_policy(image), policy, "{image}");
        }
    }
}
