//! The three-way merge patch of client-side `skiff apply`.
//!
//! kubectl computes it for types without strategic-merge metadata with
//! `jsonmergepatch.CreateThreeWayJSONMergePatch`: the changes from the live object
//! (`current`) to the manifest (`modified`), keeping only additions and changes,
//! merged with the deletions from the last-applied configuration (`original`) to
//! the manifest. The result is an RFC 7396 JSON merge patch.

use serde_json::{Map, Value};

/// The JSON merge patch that makes `current` match `modified` without touching
/// fields that only others (the server, other clients) set.
///
/// - A field of `original` (the last-applied configuration) that `modified` no
///   longer has becomes `null`, a deletion; fields that are in neither are never
///   deleted, so defaults and `status` survive. Without `original` (no
///   annotation) nothing is deleted.
/// - A field of `modified` that differs from `current` is set; maps recurse,
///   lists and scalars are replaced whole.
/// - A list the manifest did not change since the last apply is left alone when
///   the live list still holds everything it says: the server defaults fields
///   inside list items (a container's `imagePullPolicy`), which must not count as
///   a change, or every re-apply would resend the list.
///
/// The patch is `{}` when nothing is to change. Deletions of fields `current`
/// does not have any more are left out, as applying them would change nothing.
pub fn patch(original: Option<&Value>, modified: &Value, current: &Value) -> Value {
    let Some(modified) = modified.as_object() else {
        return modified.clone();
    };
    let empty = Map::new();
    let current = current.as_object().unwrap_or(&empty);
    let original = original.and_then(Value::as_object);
    let mut patch = Map::new();
    for key in original.into_iter().flat_map(Map::keys) {
        if !modified.contains_key(key) && current.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    for (key, wanted) in modified {
        let last_applied = original.and_then(|original| original.get(key));
        match (wanted, current.get(key)) {
            (Value::Object(_), Some(live @ Value::Object(_))) => {
                let nested = self::patch(last_applied, wanted, live);
                if nested.as_object().is_none_or(|nested| !nested.is_empty()) {
                    patch.insert(key.clone(), nested);
                }
            }
            (wanted, Some(live)) if live == wanted => {}
            (Value::Array(_), Some(live @ Value::Array(_)))
                if subsumes(live, wanted) && last_applied.is_none_or(|last| last == wanted) => {}
            (wanted, _) => {
                patch.insert(key.clone(), wanted.clone());
            }
        }
    }
    Value::Object(patch)
}

/// Whether `live` says everything `wanted` says, allowing extra map fields (the
/// server's defaults) at any depth but not extra or missing list items.
fn subsumes(live: &Value, wanted: &Value) -> bool {
    match (live, wanted) {
        (Value::Object(live), Value::Object(wanted)) => wanted
            .iter()
            .all(|(key, value)| live.get(key).is_some_and(|live| subsumes(live, value))),
        (Value::Array(live), Value::Array(wanted)) => {
            live.len() == wanted.len()
                && live
                    .iter()
                    .zip(wanted)
                    .all(|(live, wanted)| subsumes(live, wanted))
        }
        (live, wanted) => live == wanted,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(original: Option<Value>, modified: Value, current: Value, expected: Value) {
        let actual = patch(original.as_ref(), &modified, &current);
        assert_eq!(
            actual, expected,
            "original {original:?}\nmodified {modified}\ncurrent {current}"
        );
    }

    fn deployment(image: &str, labels: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": labels},
            "spec": {
                "replicas": 2,
                "template": {"spec": {"containers": [{"name": "web", "image": image}]}},
            },
        })
    }

    /// `deployment` as the server returns it: defaults, status and metadata added.
    fn live(image: &str, labels: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "default",
                "uid": "1234",
                "resourceVersion": "7",
                "labels": labels,
            },
            "spec": {
                "replicas": 2,
                "revisionHistoryLimit": 10,
                "template": {"spec": {
                    "containers": [{
                        "name": "web",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "terminationMessagePath": "/dev/termination-log",
                    }],
                    "restartPolicy": "Always",
                }},
            },
            "status": {"replicas": 2, "readyReplicas": 2},
        })
    }

    #[test]
    fn patches() {
        let labels = json!({"app": "web", "tier": "front"});
        let app_only = json!({"app": "web"});
        let cases = [
            // A label dropped from the manifest is deleted.
            (
                Some(deployment("nginx:1", labels.clone())),
                deployment("nginx:1", app_only.clone()),
                live("nginx:1", labels.clone()),
                json!({"metadata": {"labels": {"tier": null}}}),
            ),
            // Re-applying the same manifest changes nothing, defaults and status included.
            (
                Some(deployment("nginx:1", labels.clone())),
                deployment("nginx:1", labels.clone()),
                live("nginx:1", labels.clone()),
                json!({}),
            ),
            // A changed image inside a list item replaces the whole list.
            (
                Some(deployment("nginx:1", labels.clone())),
                deployment("nginx:2", labels.clone()),
                live("nginx:1", labels.clone()),
                json!({"spec": {"template": {"spec": {
                    "containers": [{"name": "web", "image": "nginx:2"}],
                }}}}),
            ),
            // Labels someone else added stay: only last-applied fields are deleted.
            (
                Some(deployment("nginx:1", app_only.clone())),
                deployment("nginx:1", app_only.clone()),
                live("nginx:1", labels.clone()),
                json!({}),
            ),
            // Without the annotation nothing is deleted, changes are still sent.
            (
                None,
                json!({"metadata": {"name": "web"}, "spec": {"replicas": 3}}),
                json!({"metadata": {"name": "web", "labels": {"x": "y"}},
                       "spec": {"replicas": 1, "paused": false}}),
                json!({"spec": {"replicas": 3}}),
            ),
            // A field added to the manifest is set; a new map is set whole.
            (
                Some(json!({"metadata": {"name": "web"}})),
                json!({"metadata": {"name": "web", "annotations": {"a": "b"}}, "data": {"k": "v"}}),
                json!({"metadata": {"name": "web", "uid": "1"}}),
                json!({"metadata": {"annotations": {"a": "b"}}, "data": {"k": "v"}}),
            ),
            // A list edited since the last apply is sent even if live already covers it.
            (
                Some(
                    json!({"spec": {"args": ["a", "b"], "ports": [{"port": 80, "name": "http"}]}}),
                ),
                json!({"spec": {"args": ["a", "b"], "ports": [{"port": 80}]}}),
                json!({"spec": {"args": ["a", "b"], "ports": [{"port": 80, "name": "http"}]}}),
                json!({"spec": {"ports": [{"port": 80}]}}),
            ),
            // A list that lost an item is sent.
            (
                Some(json!({"args": ["a", "b"]})),
                json!({"args": ["a"]}),
                json!({"args": ["a", "b"]}),
                json!({"args": ["a"]}),
            ),
            // A scalar changing type, a map becoming a scalar and the reverse.
            (
                Some(json!({"a": 1, "b": {"c": 1}, "d": "x"})),
                json!({"a": "1", "b": 2, "d": {"e": 1}}),
                json!({"a": 1, "b": {"c": 1}, "d": "x"}),
                json!({"a": "1", "b": 2, "d": {"e": 1}}),
            ),
            // Deleting a field that is already gone is left out; a whole map is deleted.
            (
                Some(json!({"a": 1, "b": {"c": 1}, "keep": true})),
                json!({"keep": true}),
                json!({"b": {"c": 1, "server": 2}, "keep": true}),
                json!({"b": null}),
            ),
            // A deletion nested in a map the live object lacks entirely sets the map.
            (
                Some(json!({"m": {"a": 1, "b": 2}})),
                json!({"m": {"a": 1}}),
                json!({}),
                json!({"m": {"a": 1}}),
            ),
            // Null in the manifest is sent as is: it asks for a deletion.
            (
                Some(json!({"a": 1})),
                json!({"a": null}),
                json!({"a": 1}),
                json!({"a": null}),
            ),
        ];
        for (original, modified, current, expected) in cases {
            check(original, modified, current, expected);
        }
    }
}
