//! Request routing: what a Kubernetes API path asks for (like kube-apiserver's
//! `RequestInfo`).

use skiff_api::ResourceKind;
use skiff_api::kind;

/// What a request path addresses.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `/version`.
    Version,
    /// `/healthz`, `/readyz`, `/livez` (and their `/…/` sub-checks).
    Health,
    /// `/metrics`: Prometheus metrics.
    Metrics,
    /// `/openapi/v2`: not served (kubectl falls back to its built-in types).
    OpenApiV2,
    /// `/openapi/v3`: the index of group versions.
    OpenApiV3,
    /// `/openapi/v3/api/v1`, `/openapi/v3/apis/{group}/{version}`.
    OpenApiV3GroupVersion {
        /// The group (empty for core).
        group: String,
        /// The version.
        version: String,
    },
    /// `/api`: the legacy core group's versions.
    CoreVersions,
    /// `/apis`: the named groups.
    Groups,
    /// `/api/v1` or `/apis/{group}/{version}`: the resources of one group version.
    GroupVersion {
        /// The group (empty for core).
        group: String,
        /// The version.
        version: String,
    },
    /// A resource collection or object.
    Resource(ResourceRequest),
}

/// A request for objects of one kind.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceRequest {
    /// The kind.
    pub kind: &'static ResourceKind,
    /// The namespace from the path, when namespaced.
    pub namespace: Option<String>,
    /// The object's name, for single-object requests.
    pub name: Option<String>,
    /// A subresource (`status`, `scale`), if any.
    pub subresource: Option<String>,
}

/// Parses a path (without the query); `None` for paths that name nothing.
pub fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segments.as_slice() {
        ["version"] => Some(Route::Version),
        ["healthz" | "readyz" | "livez", ..] => Some(Route::Health),
        ["metrics"] => Some(Route::Metrics),
        ["openapi", "v2"] => Some(Route::OpenApiV2),
        ["openapi", "v3"] => Some(Route::OpenApiV3),
        ["openapi", "v3", "api", version] => Some(Route::OpenApiV3GroupVersion {
            group: String::new(),
            version: (*version).to_owned(),
        }),
        ["openapi", "v3", "apis", group, version] => Some(Route::OpenApiV3GroupVersion {
            group: (*group).to_owned(),
            version: (*version).to_owned(),
        }),
        ["api"] => Some(Route::CoreVersions),
        ["apis"] => Some(Route::Groups),
        ["api", version] => Some(Route::GroupVersion {
            group: String::new(),
            version: (*version).to_owned(),
        }),
        ["apis", group, version] => Some(Route::GroupVersion {
            group: (*group).to_owned(),
            version: (*version).to_owned(),
        }),
        ["api", version, rest @ ..] => resource_route("", version, rest),
        ["apis", group, version, rest @ ..] => resource_route(group, version, rest),
        _ => None,
    }
}

fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceKind> {
    kind::ALL
        .into_iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Option<Route> {
    let owned = |s: &&str| (*s).to_owned();
    let request = match rest {
        // /namespaces/{ns}/{resource}[/{name}[/{subresource}]] for namespaced kinds.
        ["namespaces", namespace, plural, tail @ ..]
            if find(group, version, plural).is_some_and(|k| k.namespaced) =>
        {
            ResourceRequest {
                kind: find(group, version, plural)?,
                namespace: Some((*namespace).to_owned()),
                name: tail.first().map(owned),
                subresource: match tail {
                    [_, sub] => Some((*sub).to_owned()),
                    [] | [_] => None,
                    _ => return None,
                },
            }
        }
        // /{resource}[/{name}[/{subresource}]]: cluster-scoped kinds, or all namespaces.
        [plural, tail @ ..] => {
            let kind = find(group, version, plural)?;
            if kind.namespaced && !tail.is_empty() {
                return None;
            }
            ResourceRequest {
                kind,
                namespace: None,
                name: tail.first().map(owned),
                subresource: match tail {
                    [_, sub] => Some((*sub).to_owned()),
                    [] | [_] => None,
                    _ => return None,
                },
            }
        }
        [] => return None,
    };
    Some(Route::Resource(request))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(path: &str) -> ResourceRequest {
        match route(path) {
            Some(Route::Resource(request)) => request,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn parses_kubernetes_paths() {
        let pods = resource("/api/v1/namespaces/default/pods");
        assert_eq!(
            (pods.kind, pods.namespace.as_deref(), pods.name.as_deref()),
            (&kind::POD, Some("default"), None)
        );
        let pod = resource("/api/v1/namespaces/default/pods/web-1");
        assert_eq!(pod.name.as_deref(), Some("web-1"));
        let scale = resource("/apis/apps/v1/namespaces/shop/deployments/web/scale");
        assert_eq!(
            (scale.kind, scale.subresource.as_deref()),
            (&kind::DEPLOYMENT, Some("scale"))
        );
        let all = resource("/apis/apps/v1/deployments");
        assert_eq!((all.kind, all.namespace), (&kind::DEPLOYMENT, None));
        let namespace = resource("/api/v1/namespaces/shop");
        assert_eq!(
            (namespace.kind, namespace.name.as_deref()),
            (&kind::NAMESPACE, Some("shop"))
        );
        let namespace_status = resource("/api/v1/namespaces/shop/status");
        assert_eq!(
            (
                namespace_status.kind,
                namespace_status.subresource.as_deref()
            ),
            (&kind::NAMESPACE, Some("status"))
        );
        let finalize = resource("/api/v1/namespaces/shop/finalize");
        assert_eq!(
            (
                finalize.kind,
                finalize.name.as_deref(),
                finalize.subresource.as_deref()
            ),
            (&kind::NAMESPACE, Some("shop"), Some("finalize"))
        );
        let node = resource("/api/v1/nodes/n1");
        assert_eq!((node.kind, node.name.as_deref()), (&kind::NODE, Some("n1")));
        assert_eq!(route("/version"), Some(Route::Version));
        assert_eq!(route("/readyz/ping"), Some(Route::Health));
        assert_eq!(
            route("/apis/apps/v1"),
            Some(Route::GroupVersion {
                group: "apps".into(),
                version: "v1".into()
            })
        );
        for nothing in [
            "/api/v1/cronjobs",
            "/apis/batch/v1/jobs",
            "/api/v1/pods/x",
            "/api/v1/namespaces/a/pods/b/c/d",
            "/nope",
            "/apis/apps/v2/deployments",
        ] {
            assert_eq!(route(nothing), None, "{nothing}");
        }
    }
}
