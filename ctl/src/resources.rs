//! What the user means by `TYPE[,TYPE…] [NAME…]` or `TYPE/NAME…`: kinds resolved
//! through `skiff_api::kind`, with every alias kubectl accepts.

use anyhow::bail;
use serde_json::Value;
use skiff_api::{ResourceKind, kind};

/// One kind and the objects of it the user named (none: the whole collection).
#[derive(Debug, PartialEq)]
pub(crate) struct Selection {
    /// The kind.
    pub kind: &'static ResourceKind,
    /// The names, in the order given; empty selects every object.
    pub names: Vec<String>,
}

/// The kinds kubectl's `all` category expands to, among those Skiff serves.
const ALL_CATEGORY: [&ResourceKind; 4] = [
    &kind::POD,
    &kind::SERVICE,
    &kind::DEPLOYMENT,
    &kind::REPLICA_SET,
];

/// Resolves one resource type name (`po`, `deployments.apps`).
pub(crate) fn kind_named(name: &str) -> anyhow::Result<&'static ResourceKind> {
    match kind::by_name(name) {
        Some(kind) => Ok(kind),
        None => bail!("the server doesn't have a resource type {name:?}"),
    }
}

/// Parses `TYPE[,TYPE…] [NAME…]` or `TYPE/NAME [TYPE/NAME…]`.
pub(crate) fn parse(args: &[String]) -> anyhow::Result<Vec<Selection>> {
    let Some(first) = args.first() else {
        bail!("you must specify the type of resource to get");
    };
    if first.contains('/') {
        let mut selections: Vec<Selection> = Vec::new();
        for arg in args {
            let Some((type_name, name)) = arg.split_once('/') else {
                bail!(
                    "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'skiff get resource/<resource_name>' instead of 'skiff get resource resource/<resource_name>'"
                );
            };
            if name.is_empty() || type_name.is_empty() {
                bail!("arguments in resource/name form must have a single resource and name");
            }
            let kind = kind_named(type_name)?;
            match selections.last_mut() {
                Some(last) if last.kind == kind => last.names.push(name.to_owned()),
                _ => selections.push(Selection {
                    kind,
                    names: vec![name.to_owned()],
                }),
            }
        }
        return Ok(selections);
    }
    let names: Vec<String> = args[1..].to_vec();
    if let Some(slashed) = names.iter().find(|n| n.contains('/')) {
        bail!(
            "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'skiff get resource/<resource_name>' instead of 'skiff get resource {slashed}')"
        );
    }
    let mut kinds: Vec<&'static ResourceKind> = Vec::new();
    for type_name in first.split(',').filter(|t| !t.is_empty()) {
        let expanded: Vec<&'static ResourceKind> = if type_name == "all" {
            ALL_CATEGORY.to_vec()
        } else {
            vec![kind_named(type_name)?]
        };
        for kind in expanded {
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
    }
    if kinds.is_empty() {
        bail!("you must specify the type of resource to get");
    }
    // With several kinds and names, kubectl fetches every name of every kind.
    Ok(kinds
        .into_iter()
        .map(|kind| Selection {
            kind,
            names: names.clone(),
        })
        .collect())
}

/// A `metav1.LabelSelector` (`matchLabels`, `matchExpressions`) as the
/// `labelSelector` query string: `app=web,tier in (a,b),!legacy`.
pub(crate) fn label_selector(selector: &Value) -> String {
    let mut terms: Vec<String> = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let expressions = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for expression in expressions {
        let key = expression
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let values: Vec<&str> = expression
            .get("values")
            .and_then(Value::as_array)
            .map(|values| values.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let values = values.join(",");
        match expression.get("operator").and_then(Value::as_str) {
            Some("In") => terms.push(format!("{key} in ({values})")),
            Some("NotIn") => terms.push(format!("{key} notin ({values})")),
            Some("Exists") => terms.push(key.to_owned()),
            Some("DoesNotExist") => terms.push(format!("!{key}")),
            _ => {}
        }
    }
    terms.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &[&str], expected: &[(&ResourceKind, &[&str])]) {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let selections = parse(&args).unwrap();
        let got: Vec<(&ResourceKind, Vec<&str>)> = selections
            .iter()
            .map(|s| (s.kind, s.names.iter().map(String::as_str).collect()))
            .collect();
        let expected: Vec<(&ResourceKind, Vec<&str>)> =
            expected.iter().map(|(k, n)| (*k, n.to_vec())).collect();
        assert_eq!(got, expected, "{args:?}");
    }

    #[test]
    fn types_names_and_slashes() {
        check(&["po"], &[(&kind::POD, &[])]);
        check(&["pods", "a", "b"], &[(&kind::POD, &["a", "b"])]);
        check(
            &["deploy,svc"],
            &[(&kind::DEPLOYMENT, &[]), (&kind::SERVICE, &[])],
        );
        check(
            &["deployment/web", "deploy/api", "svc/web"],
            &[
                (&kind::DEPLOYMENT, &["web", "api"]),
                (&kind::SERVICE, &["web"]),
            ],
        );
        check(
            &["all"],
            &[
                (&kind::POD, &[]),
                (&kind::SERVICE, &[]),
                (&kind::DEPLOYMENT, &[]),
                (&kind::REPLICA_SET, &[]),
            ],
        );
    }

    #[test]
    fn label_selectors_as_query_strings() {
        let selector = serde_json::json!({
            "matchLabels": {"tier": "web", "app": "shop"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["a", "b"]},
                {"key": "x", "operator": "NotIn", "values": ["c"]},
                {"key": "y", "operator": "Exists"},
                {"key": "z", "operator": "DoesNotExist"},
            ],
        });
        assert_eq!(
            label_selector(&selector),
            "app=shop,tier=web,env in (a,b),x notin (c),y,!z"
        );
        assert_eq!(label_selector(&serde_json::json!({})), "");
    }

    #[test]
    fn unknown_types_and_mixed_forms_fail() {
        let error = parse(&["cronjobs".to_owned()]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the server doesn't have a resource type \"cronjobs\""
        );
        assert!(parse(&["pods".to_owned(), "deploy/web".to_owned()]).is_err());
        assert!(parse(&["deploy/web".to_owned(), "web".to_owned()]).is_err());
        assert!(parse(&[]).is_err());
    }
}
