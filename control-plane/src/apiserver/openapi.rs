//! OpenAPI documents generated from the schemars schemas of the served kinds.
//!
//! - `/openapi/v3`: the index of group versions, each with a `serverRelativeURL`.
//! - `/openapi/v3/api/v1`, `/openapi/v3/apis/apps/v1`: paths with every operation (each
//!   tagged with `x-kubernetes-group-version-kind` and the `fieldValidation` parameter,
//!   which is what `kubectl apply` looks for) and `components.schemas` (kinds tagged with
//!   `x-kubernetes-group-version-kind`, which is what `kubectl explain` looks for).
//! - `/openapi/v2` (Swagger 2.0) in JSON, for clients that accept JSON; kubectl asks for
//!   protobuf only, gets a 404 and falls back to its built-in types.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};
use skiff_api::ResourceKind;
use skiff_api::kind;
use skiff_api::schema::{Schemas, schemas};

/// The group versions served, as `(group, version)`.
fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut list: Vec<(&str, &str)> = kind::ALL.iter().map(|k| (k.group, k.version)).collect();
    list.sort_unstable();
    list.dedup();
    list
}

/// The path of a group version in the index: `api/v1`, `apis/apps/v1`.
fn index_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`.
pub fn index() -> Value {
    let paths: Map<String, Value> = group_versions()
        .into_iter()
        .map(|(group, version)| {
            let key = index_key(group, version);
            let hash = document_hash(group, version);
            let url = format!("/openapi/v3/{key}?hash={hash}");
            (key, json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({ "paths": paths })
}

/// A stable hash of a group version's document, so clients can cache it by URL.
fn document_hash(group: &str, version: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    group.hash(&mut hasher);
    version.hash(&mut hasher);
    format!("{:016X}", hasher.finish())
}

/// `GET /openapi/v3/{api/v1 | apis/group/version}`; `None` for unknown ones.
pub fn group_version(group: &str, version: &str) -> Option<Value> {
    static DOCUMENTS: OnceLock<Vec<((String, String), Value)>> = OnceLock::new();
    let documents = DOCUMENTS.get_or_init(|| {
        group_versions()
            .into_iter()
            .map(|(g, v)| ((g.to_owned(), v.to_owned()), build_v3(g, v)))
            .collect()
    });
    documents
        .iter()
        .find(|((g, v), _)| g == group && v == version)
        .map(|(_, document)| document.clone())
}

/// Rewrites schemars' `#/$defs/X` references to `prefix + X`.
fn rewrite_refs(value: &mut Value, prefix: &str) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get_mut("$ref") {
                let name = reference.rsplit('/').next().unwrap_or_default().to_owned();
                *reference = format!("{prefix}{name}");
            }
            for child in map.values_mut() {
                rewrite_refs(child, prefix);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rewrite_refs(item, prefix)),
        _ => {}
    }
}

/// Every definition, with `$ref`s under `prefix` and kinds tagged with their
/// group/version/kind.
fn definitions(prefix: &str) -> Map<String, Value> {
    let mut definitions = schemas().definitions().clone();
    for (_, definition) in definitions.iter_mut() {
        rewrite_refs(definition, prefix);
    }
    for kind in kind::ALL {
        if let Some(Value::Object(definition)) =
            definitions.get_mut(&Schemas::kind_definition_name(kind))
        {
            definition.insert("x-kubernetes-group-version-kind".to_owned(), gvk(kind));
        }
    }
    definitions
}

fn gvk(kind: &ResourceKind) -> Value {
    json!([{"group": kind.group, "version": kind.version, "kind": kind.kind}])
}

/// The collection and item paths of a kind: namespaced kinds also have the
/// all-namespaces list.
fn kind_paths(kind: &ResourceKind) -> (String, String, Option<String>) {
    let root = if kind.group.is_empty() {
        format!("/api/{}", kind.version)
    } else {
        format!("/apis/{}/{}", kind.group, kind.version)
    };
    if kind.namespaced {
        let collection = format!("{root}/namespaces/{{namespace}}/{}", kind.plural);
        let item = format!("{collection}/{{name}}");
        (collection, item, Some(format!("{root}/{}", kind.plural)))
    } else {
        let collection = format!("{root}/{}", kind.plural);
        let item = format!("{collection}/{{name}}");
        (collection, item, None)
    }
}

fn query(name: &str, description: &str, schema_type: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": schema_type, "uniqueItems": true}})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

/// One operation object, in the v3 or v2 shape.
fn operation(kind: &ResourceKind, action: &str, schema_ref: &str, v3: bool) -> Value {
    let write = matches!(action, "post" | "put" | "patch");
    let mut parameters = vec![];
    if write {
        parameters.push(query("dryRun", "not supported by Skiff", "string"));
        parameters.push(query(
            "fieldManager",
            "the name of the actor making the change",
            "string",
        ));
        parameters.push(query(
            "fieldValidation",
            "Strict, Warn or Ignore: what to do with unknown fields",
            "string",
        ));
    }
    if action == "patch" {
        parameters.push(query(
            "force",
            "take over fields other managers own (apply only)",
            "boolean",
        ));
    }
    if action == "list" {
        for (name, description) in [
            ("labelSelector", "a selector on labels"),
            ("fieldSelector", "a selector on fields"),
            ("limit", "the page size"),
            ("continue", "the token of the next page"),
            ("resourceVersion", "the revision to list or watch from"),
            ("timeoutSeconds", "when a watch ends"),
            ("watch", "stream changes"),
            ("allowWatchBookmarks", "send BOOKMARK events"),
        ] {
            parameters.push(query(name, description, "string"));
        }
    }
    let response = if v3 {
        json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": schema_ref}}}})
    } else {
        json!({"description": "OK", "schema": {"$ref": schema_ref}})
    };
    let mut operation = json!({
        "operationId": format!("{action}{}", kind.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": kind.group, "version": kind.version, "kind": kind.kind},
        "parameters": parameters,
        "responses": {"200": response},
    });
    if v3 && matches!(action, "post" | "put") {
        operation["requestBody"] = json!({"content": {"application/json": {"schema": {"$ref": schema_ref}}}, "required": true});
    }
    operation
}

/// The paths of every kind in one group version.
fn paths(group: &str, version: &str, prefix: &str, v3: bool) -> Map<String, Value> {
    let mut paths = Map::new();
    for kind in kind::ALL
        .into_iter()
        .filter(|k| k.group == group && k.version == version)
    {
        let schema_ref = format!("{prefix}{}", Schemas::kind_definition_name(kind));
        let (collection, item, all) = kind_paths(kind);
        let namespace = kind.namespaced.then(|| path_param("namespace"));
        let with = |extra: Option<Value>| -> Vec<Value> {
            namespace.iter().cloned().chain(extra).collect()
        };
        paths.insert(
            collection,
            json!({
                "get": operation(kind, "list", &schema_ref, v3),
                "post": operation(kind, "post", &schema_ref, v3),
                "delete": operation(kind, "deletecollection", &schema_ref, v3),
                "parameters": with(None),
            }),
        );
        paths.insert(
            item.clone(),
            json!({
                "get": operation(kind, "get", &schema_ref, v3),
                "put": operation(kind, "put", &schema_ref, v3),
                "patch": operation(kind, "patch", &schema_ref, v3),
                "delete": operation(kind, "delete", &schema_ref, v3),
                "parameters": with(Some(path_param("name"))),
            }),
        );
        if kind.has_status() {
            paths.insert(
                format!("{item}/status"),
                json!({
                    "get": operation(kind, "get", &schema_ref, v3),
                    "put": operation(kind, "put", &schema_ref, v3),
                    "patch": operation(kind, "patch", &schema_ref, v3),
                    "parameters": with(Some(path_param("name"))),
                }),
            );
        }
        if let Some(all) = all {
            paths.insert(
                all,
                json!({"get": operation(kind, "list", &schema_ref, v3)}),
            );
        }
    }
    paths
}

fn build_v3(group: &str, version: &str) -> Value {
    let prefix = "#/components/schemas/";
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": concat!("v1.32.0-skiff.", env!("CARGO_PKG_VERSION"))},
        "paths": paths(group, version, prefix, true),
        "components": {"schemas": definitions(prefix)},
    })
}

/// `GET /openapi/v2` as JSON: Swagger 2.0 with every path and definition.
pub fn v2() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let prefix = "#/definitions/";
        let mut all_paths = Map::new();
        for (group, version) in group_versions() {
            all_paths.extend(paths(group, version, prefix, false));
        }
        json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": concat!("v1.32.0-skiff.", env!("CARGO_PKG_VERSION"))},
            "paths": all_paths,
            "definitions": definitions(prefix),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_has_what_kubectl_apply_and_explain_look_for() {
        let index = index();
        let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
        let apps = group_version("apps", "v1").unwrap();
        let patch =
            &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"],
            json!({"group": "apps", "version": "v1", "kind": "Deployment"})
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        let deployment = &apps["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        let text = serde_json::to_string(&apps).unwrap();
        assert!(!text.contains("#/$defs/"), "every $ref is rewritten");
        assert!(group_version("batch", "v1").is_none());
        let core = group_version("", "v1").unwrap();
        assert!(core["paths"]["/api/v1/pods"]["get"].is_object());
        assert!(core["paths"]["/api/v1/nodes/{name}/status"]["patch"].is_object());
    }

    #[test]
    fn v2_uses_definitions_references() {
        let document = v2();
        assert_eq!(document["swagger"], "2.0");
        let text = serde_json::to_string(document).unwrap();
        assert!(text.contains("#/definitions/io.k8s.api.core.v1.Pod"));
        assert!(!text.contains("#/components/"));
    }
}
