//! The registry of resource kinds Skiff serves: names, group/version, scope and the
//! aliases the CLI and discovery use.

use k8s_openapi::Resource;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Event, Namespace, Node, Pod, Secret, Service};

/// Static description of one stored resource kind, as discovery presents it.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceKind {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version within the group (`v1`).
    pub version: &'static str,
    /// `apiVersion` as written in manifests (`apps/v1`, `v1`).
    pub api_version: &'static str,
    /// `kind` as written in manifests (`Deployment`).
    pub kind: &'static str,
    /// Plural resource name used in URLs (`deployments`).
    pub plural: &'static str,
    /// Singular resource name (`deployment`).
    pub singular: &'static str,
    /// Short names accepted by the CLI (`deploy`).
    pub short_names: &'static [&'static str],
    /// Whether objects live inside a namespace.
    pub namespaced: bool,
}

impl ResourceKind {
    /// `plural.group` as kubectl prints it in `deployment.apps/web`-style names, with the
    /// singular form: `deployment.apps`, or just `pod` for the core group.
    pub fn qualified_singular(&self) -> String {
        if self.group.is_empty() {
            self.singular.to_owned()
        } else {
            format!("{}.{}", self.singular, self.group)
        }
    }

    /// Whether `name` refers to this kind: plural, singular, short name or kind, in any
    /// case, optionally qualified by the group (`deployments.apps`).
    pub fn is_named(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        let (base, group) = match name.split_once('.') {
            Some((base, group)) => (base.to_owned(), Some(group.to_owned())),
            None => (name, None),
        };
        if group.is_some_and(|g| g != self.group) {
            return false;
        }
        base == self.plural
            || base == self.singular
            || base == self.kind.to_ascii_lowercase()
            || self.short_names.contains(&base.as_str())
    }

    /// Whether the kind has a `/status` subresource; Kubernetes serves none for the
    /// kinds without a status (Events, Endpoints, Secrets, Leases).
    pub fn has_status(&self) -> bool {
        ![&EVENT, &ENDPOINTS, &SECRET, &LEASE].contains(&self)
    }
}

macro_rules! resource_kind {
    ($ty:ty, $singular:literal, [$($short:literal),*], $namespaced:literal) => {
        ResourceKind {
            group: <$ty as Resource>::GROUP,
            version: <$ty as Resource>::VERSION,
            api_version: <$ty as Resource>::API_VERSION,
            kind: <$ty as Resource>::KIND,
            plural: <$ty as Resource>::URL_PATH_SEGMENT,
            singular: $singular,
            short_names: &[$($short),*],
            namespaced: $namespaced,
        }
    };
}

/// core/v1 Namespace.
pub const NAMESPACE: ResourceKind = resource_kind!(Namespace, "namespace", ["ns"], false);
/// core/v1 Pod.
pub const POD: ResourceKind = resource_kind!(Pod, "pod", ["po"], true);
/// core/v1 Service.
pub const SERVICE: ResourceKind = resource_kind!(Service, "service", ["svc"], true);
/// core/v1 Endpoints.
pub const ENDPOINTS: ResourceKind = resource_kind!(Endpoints, "endpoints", ["ep"], true);
/// core/v1 Node.
pub const NODE: ResourceKind = resource_kind!(Node, "node", ["no"], false);
/// core/v1 Event.
pub const EVENT: ResourceKind = resource_kind!(Event, "event", ["ev"], true);
/// core/v1 Secret.
pub const SECRET: ResourceKind = resource_kind!(Secret, "secret", [], true);
/// coordination.k8s.io/v1 Lease.
pub const LEASE: ResourceKind = resource_kind!(Lease, "lease", [], true);
/// apps/v1 Deployment.
pub const DEPLOYMENT: ResourceKind = resource_kind!(Deployment, "deployment", ["deploy"], true);
/// apps/v1 ReplicaSet.
pub const REPLICA_SET: ResourceKind = resource_kind!(ReplicaSet, "replicaset", ["rs"], true);

/// Every stored kind, in discovery order.
pub const ALL: [&ResourceKind; 10] = [
    &NAMESPACE,
    &POD,
    &SERVICE,
    &ENDPOINTS,
    &NODE,
    &EVENT,
    &SECRET,
    &DEPLOYMENT,
    &REPLICA_SET,
    &LEASE,
];

/// Finds the kind for a manifest's `apiVersion` and `kind`.
pub fn by_type(api_version: &str, kind: &str) -> Option<&'static ResourceKind> {
    ALL.into_iter()
        .find(|k| k.api_version == api_version && k.kind == kind)
}

/// Finds the kind a user means by `name` (`po`, `pods`, `Pod`, `deployments.apps`).
pub fn by_name(name: &str) -> Option<&'static ResourceKind> {
    ALL.into_iter().find(|k| k.is_named(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_carry_kubernetes_names() {
        assert_eq!(DEPLOYMENT.api_version, "apps/v1");
        assert_eq!(DEPLOYMENT.plural, "deployments");
        assert_eq!(ENDPOINTS.plural, "endpoints");
        assert_eq!(POD.api_version, "v1");
        assert_eq!(POD.group, "");
        assert_eq!(DEPLOYMENT.qualified_singular(), "deployment.apps");
        assert_eq!(POD.qualified_singular(), "pod");
    }

    #[test]
    fn lookup_by_any_alias() {
        for (name, kind) in [
            ("po", &POD),
            ("pods", &POD),
            ("Pod", &POD),
            ("deploy", &DEPLOYMENT),
            ("deployments.apps", &DEPLOYMENT),
            ("svc", &SERVICE),
            ("ns", &NAMESPACE),
            ("rs", &REPLICA_SET),
            ("no", &NODE),
            ("ev", &EVENT),
            ("secrets", &SECRET),
            ("Secret", &SECRET),
            ("leases", &LEASE),
            ("leases.coordination.k8s.io", &LEASE),
        ] {
            assert_eq!(by_name(name), Some(kind), "{name}");
        }
        assert_eq!(by_name("deployments.batch"), None);
        assert_eq!(by_name("cronjobs"), None);
        assert_eq!(by_type("apps/v1", "Deployment"), Some(&DEPLOYMENT));
        assert_eq!(by_type("v1", "Deployment"), None);
        assert_eq!(by_type("coordination.k8s.io/v1", "Lease"), Some(&LEASE));
        assert!(!SECRET.has_status() && !LEASE.has_status() && POD.has_status());
    }
}
