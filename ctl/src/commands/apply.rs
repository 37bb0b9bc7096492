//! `skiff apply -f`: client-side apply (GET, then create or a three-way merge patch
//! kept in the `last-applied-configuration` annotation) or `--server-side` apply.

use std::process::ExitCode;

use anyhow::bail;
use serde_json::Value;

use super::{Context, ManifestObject, finish, placed, read_manifests};
use crate::ApplyArgs;
use crate::client::{PatchType, ResourcePath};
use crate::printers;
use crate::three_way;

/// Where client-side apply keeps what it applied last.
pub(crate) const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// kubectl's field manager for client-side apply.
const CLIENT_SIDE_MANAGER: &str = "kubectl-client-side-apply";

/// The field manager of `--server-side` without `--field-manager`.
const SERVER_SIDE_MANAGER: &str = "skiff";

/// Runs `skiff apply`: one line per object as it goes, errors last.
pub(crate) async fn run(ctx: &Context, args: ApplyArgs) -> anyhow::Result<ExitCode> {
    if args.force_conflicts && !args.server_side {
        bail!("--force-conflicts only works with --server-side");
    }
    let objects = read_manifests(&args.filenames, args.recursive, "apply").await?;
    let mut errors = Vec::new();
    for object in objects {
        let applied = if args.server_side {
            server_side(ctx, &args, object).await
        } else {
            client_side(ctx, &args, object).await
        };
        match applied {
            Ok(line) => println!("{line}"),
            Err(error) => errors.push(error),
        }
    }
    Ok(finish(&errors))
}

/// Sets the last-applied annotation to `value` without the annotation itself, as
/// compact JSON with a trailing newline (what kubectl stores).
fn annotate(mut value: Value) -> Value {
    // kubectl serializes with the annotations map present (`"annotations":{}` when
    // the manifest has none), which keeps the stored text identical to its own.
    let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) else {
        return value;
    };
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if let Some(annotations) = annotations.as_object_mut() {
        annotations.remove(LAST_APPLIED);
    }
    let last_applied = format!("{value}\n");
    if let Some(annotations) = value
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.insert(LAST_APPLIED.to_owned(), Value::String(last_applied));
    }
    value
}

async fn client_side(
    ctx: &Context,
    args: &ApplyArgs,
    object: ManifestObject,
) -> anyhow::Result<String> {
    let (value, namespace) = placed(ctx, &object)?;
    let modified = annotate(value);
    let name = object.name();
    let reference = printers::value_reference(object.kind, &modified);
    let manager = args.field_manager.as_deref().unwrap_or(CLIENT_SIDE_MANAGER);
    let query = [("fieldManager", manager), ("fieldValidation", "Strict")];
    let path = ResourcePath::object(object.kind, namespace.as_deref(), name);
    let live = match ctx.client.get(&path.to_string(), &[]).await {
        Ok(live) => live,
        Err(error) if error.is_not_found() => {
            let collection = ResourcePath::collection(object.kind, namespace.as_deref());
            ctx.client
                .create(&collection.to_string(), &query, &modified)
                .await
                .map_err(|e| e.with_source("creating", &object.source))?;
            return Ok(format!("{reference} created"));
        }
        Err(error) => return Err(error.into()),
    };
    let original = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str::<Value>(text).ok());
    if original.is_none() {
        eprintln!(
            "Warning: resource {}/{name} is missing the {LAST_APPLIED} annotation which is required by skiff apply. skiff apply should only be used on resources created declaratively by skiff apply. The missing annotation will be patched automatically.",
            object.kind.plural
        );
    }
    let patch = three_way::patch(original.as_ref(), &modified, &live);
    if patch.as_object().is_some_and(serde_json::Map::is_empty) {
        return Ok(format!("{reference} unchanged"));
    }
    ctx.client
        .patch(&path.to_string(), &query, PatchType::Merge, &patch)
        .await
        .map_err(|e| e.with_source("patching", &object.source))?;
    Ok(format!("{reference} configured"))
}

async fn server_side(
    ctx: &Context,
    args: &ApplyArgs,
    object: ManifestObject,
) -> anyhow::Result<String> {
    let (value, namespace) = placed(ctx, &object)?;
    let reference = printers::value_reference(object.kind, &value);
    let manager = args.field_manager.as_deref().unwrap_or(SERVER_SIDE_MANAGER);
    let force = if args.force_conflicts {
        "true"
    } else {
        "false"
    };
    let query = [
        ("fieldManager", manager),
        ("force", force),
        ("fieldValidation", "Strict"),
    ];
    let path = ResourcePath::object(object.kind, namespace.as_deref(), object.name());
    match ctx
        .client
        .patch(&path.to_string(), &query, PatchType::Apply, &value)
        .await
    {
        Ok(_) => Ok(format!("{reference} serverside-applied")),
        // kubectl explains field conflicts instead of passing the Status on.
        Err(error) if error.reason() == Some("Conflict") => {
            let message = error.message().unwrap_or_default().to_owned();
            bail!("{message}\n{CONFLICT_HELP}")
        }
        Err(error) => Err(error.with_source("patching", &object.source).into()),
    }
}

/// What kubectl adds to a server-side apply conflict.
const CONFLICT_HELP: &str =
    "Please review the fields above--they currently have other managers. Here
are the ways you can resolve this warning:
* If you intend to manage all of these fields, please re-run the apply
  command with the `--force-conflicts` flag.
* If you do not intend to manage all of the fields, please edit your
  manifest to remove references to the fields that should keep their
  current managers.
* You may co-own fields by updating your manifest to match the existing
  value; in this case, you'll become the manager if the other manager(s)
  stop managing the field (remove it from their configuration).
See https://kubernetes.io/docs/reference/using-api/server-side-apply/#conflicts";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_applied_is_the_compact_manifest_without_itself() {
        let manifest = serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "a", "annotations": {LAST_APPLIED: "old"}},
        });
        let annotated = annotate(manifest);
        assert_eq!(
            annotated["metadata"]["annotations"][LAST_APPLIED],
            "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"annotations\":{},\"name\":\"a\"}}\n"
        );
        // Applying twice stores the same text.
        assert_eq!(annotate(annotated.clone()), annotated);
    }
}
