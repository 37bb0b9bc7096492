//! Discovery documents: legacy (`APIVersions`, `APIGroupList`, `APIResourceList`) and
//! aggregated (`apidiscovery.k8s.io/v2`), built from the kind registry.

use serde_json::{Value, json};
use skiff_api::ResourceKind;
use skiff_api::kind;

/// The Content-Type kubectl requires on aggregated discovery replies.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Verbs served for every kind.
const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The subresources of a kind, as aggregated discovery lists them.
fn subresources(kind: &ResourceKind) -> Vec<Value> {
    let mut list = Vec::new();
    let own = json!({"group": kind.group, "version": kind.version, "kind": kind.kind});
    if kind.has_status() {
        list.push(json!({"subresource": "status", "responseKind": own, "verbs": ["get", "patch", "update"]}));
    }
    if kind == &kind::DEPLOYMENT || kind == &kind::REPLICA_SET {
        list.push(json!({"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"}, "verbs": ["get", "patch", "update"]}));
    }
    if kind == &kind::POD {
        list.push(json!({"subresource": "binding", "responseKind": {"group": "", "version": "v1", "kind": "Binding"}, "verbs": ["create"]}));
        list.push(json!({"subresource": "log", "responseKind": {"group": "", "version": "v1", "kind": "Pod"}, "verbs": ["get"]}));
    }
    list
}

/// Whether the client asked for aggregated discovery.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.contains("as=APIGroupDiscoveryList")
}

fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&str> = kind::ALL
        .iter()
        .map(|k| k.group)
        .filter(|g| !g.is_empty())
        .collect();
    groups.dedup();
    groups
}

fn kinds_of(group: &str, version: &str) -> impl Iterator<Item = &'static ResourceKind> {
    kind::ALL
        .into_iter()
        .filter(move |k| k.group == group && k.version == version)
}

/// `GET /api`.
pub fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
}

/// `GET /apis`.
pub fn group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .map(|group| {
            let version = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
            json!({"name": group, "versions": [version], "preferredVersion": version})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /api/v1`, `GET /apis/{group}/{version}`; `None` for unknown group versions.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = kinds_of(group, version)
        .flat_map(|k| {
            let main = json!({
                "name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
                "kind": k.kind, "verbs": VERBS, "shortNames": k.short_names,
            });
            let subresources = subresources(k).into_iter().map(move |sub| {
                let response = &sub["responseKind"];
                json!({
                    "name": format!("{}/{}", k.plural, sub["subresource"].as_str().unwrap_or_default()),
                    "singularName": "", "namespaced": k.namespaced,
                    "group": response["group"], "version": response["version"],
                    "kind": response["kind"], "verbs": sub["verbs"],
                })
            });
            std::iter::once(main).chain(subresources)
        })
        .collect();
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

/// Aggregated discovery for `/api` (core) or `/apis` (named groups).
pub fn aggregated(core: bool) -> Value {
    let group_names: Vec<&str> = if core { vec![""] } else { groups() };
    let items: Vec<Value> = group_names
        .into_iter()
        .map(|group| {
            let resources: Vec<Value> = kinds_of(group, "v1")
                .map(|k| {
                    json!({
                        "resource": k.plural, "singularResource": k.singular,
                        "scope": if k.namespaced { "Namespaced" } else { "Cluster" },
                        "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
                        "verbs": VERBS, "shortNames": k.short_names,
                        "subresources": subresources(k),
                    })
                })
                .collect();
            json!({"metadata": {"name": group}, "versions": [{"version": "v1", "freshness": "Current", "resources": resources}]})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_lists_every_kind_once() {
        let core = resource_list("", "v1").unwrap();
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "namespaces",
                "namespaces/status",
                "pods",
                "pods/status",
                "pods/binding",
                "pods/log",
                "services",
                "services/status",
                "endpoints",
                "nodes",
                "nodes/status",
                "events",
                "secrets"
            ]
        );
        let apps = resource_list("apps", "v1").unwrap();
        assert_eq!(apps["groupVersion"], "apps/v1");
        assert!(resource_list("batch", "v1").is_none());
        assert_eq!(group_list()["groups"][0]["name"], "apps");
        assert_eq!(group_list()["groups"][1]["name"], "coordination.k8s.io");
        let coordination = resource_list("coordination.k8s.io", "v1").unwrap();
        assert_eq!(coordination["groupVersion"], "coordination.k8s.io/v1");
        assert_eq!(coordination["resources"][0]["name"], "leases");
        assert_eq!(coordination["resources"].as_array().unwrap().len(), 1);
        assert_eq!(
            aggregated(false)["items"][1]["metadata"]["name"],
            "coordination.k8s.io"
        );
        let aggregated_apps = aggregated(false);
        let deployments = &aggregated_apps["items"][0]["versions"][0]["resources"][0];
        assert_eq!(deployments["responseKind"]["kind"], "Deployment");
        assert_eq!(deployments["shortNames"][0], "deploy");
        assert_eq!(aggregated(true)["items"][0]["metadata"]["name"], "");
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
    }
}
