//! `skiff delete`: by type and names, label selector, `--all` or manifests; with
//! `--wait` (the default) it returns once the objects are gone.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};
use skiff_api::ResourceKind;
use tokio::time::{Instant, sleep};

use super::{Context, finish, manifest_namespace, parse_duration, read_manifests};
use crate::DeleteArgs;
use crate::client::{self, ResourcePath};
use crate::resources;

/// One object to delete.
struct Target {
    kind: &'static ResourceKind,
    namespace: Option<String>,
    name: String,
    /// Where it was named, for error messages (`-f` inputs).
    source: Option<String>,
}

/// A deleted object, waited for until it is gone.
struct Deleted {
    kind: &'static ResourceKind,
    namespace: Option<String>,
    name: String,
    uid: Option<String>,
}

/// Runs `skiff delete`.
pub(crate) async fn run(ctx: &Context, args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let timeout = parse_duration(&args.timeout)?;
    let mut errors = Vec::new();
    // A selector or --all deletes what it finds: something vanishing in between is fine.
    let ignore_not_found = args.ignore_not_found || args.selector.is_some() || args.all;
    let targets = targets(ctx, &args, &mut errors).await?;
    if targets.is_empty() && errors.is_empty() {
        eprintln!("No resources found");
        return Ok(ExitCode::SUCCESS);
    }
    let options = json!({"propagationPolicy": "Background"});
    let mut deleted = Vec::new();
    for target in targets {
        let path = ResourcePath::object(target.kind, target.namespace.as_deref(), &target.name);
        match ctx.client.delete(&path.to_string(), &[], &options).await {
            Ok(reply) => {
                println!(
                    "{} {:?} deleted",
                    target.kind.qualified_singular(),
                    target.name
                );
                // The reply is the object (graceful deletion) or a Success Status.
                let uid = (reply.get("kind").and_then(Value::as_str) != Some("Status"))
                    .then(|| reply.pointer("/metadata/uid").and_then(Value::as_str))
                    .flatten()
                    .map(str::to_owned);
                deleted.push(Deleted {
                    kind: target.kind,
                    namespace: target.namespace,
                    name: target.name,
                    uid,
                });
            }
            Err(error) if error.is_not_found() && ignore_not_found => {}
            Err(error) => errors.push(match target.source {
                Some(source) => error.with_source("deleting", &source).into(),
                None => error.into(),
            }),
        }
    }
    if args.wait {
        let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
        for object in &deleted {
            if let Err(error) = wait_gone(ctx, object, deadline).await {
                errors.push(error);
                break;
            }
        }
    }
    Ok(finish(&errors))
}

/// Every object the arguments name; lookup failures of named types go to `errors`.
async fn targets(
    ctx: &Context,
    args: &DeleteArgs,
    errors: &mut Vec<anyhow::Error>,
) -> anyhow::Result<Vec<Target>> {
    if !args.filenames.is_empty() {
        if !args.resources.is_empty() {
            bail!("cannot specify both resource arguments and -f");
        }
        let objects = read_manifests(&args.filenames, args.recursive, "delete").await?;
        return objects
            .into_iter()
            .map(|object| {
                Ok(Target {
                    namespace: manifest_namespace(ctx, &object)?,
                    kind: object.kind,
                    name: object.name().to_owned(),
                    source: Some(object.source),
                })
            })
            .collect();
    }
    if args.resources.is_empty() {
        bail!("You must provide one or more resources by argument or filename.");
    }
    let selections = resources::parse(&args.resources)?;
    let by_selector = args.selector.is_some() || args.all;
    let mut targets = Vec::new();
    for selection in selections {
        if !selection.names.is_empty() {
            if by_selector {
                bail!("name cannot be provided when a selector is specified");
            }
            let namespace = selection.kind.namespaced.then(|| ctx.namespace.clone());
            targets.extend(selection.names.into_iter().map(|name| Target {
                kind: selection.kind,
                namespace: namespace.clone(),
                name,
                source: None,
            }));
            continue;
        }
        if !by_selector {
            bail!("resource(s) were provided, but no name was specified");
        }
        let path = ResourcePath::collection(selection.kind, ctx.list_namespace());
        let query: Vec<(&str, &str)> = args
            .selector
            .as_deref()
            .map(|s| ("labelSelector", s))
            .into_iter()
            .collect();
        let list = match ctx.client.get(&path.to_string(), &query).await {
            Ok(list) => list,
            Err(error) => {
                errors.push(error.into());
                continue;
            }
        };
        let items = client::items(&list);
        for item in items {
            let name = crate::printers::object_name(&item).to_owned();
            let namespace = item
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| selection.kind.namespaced.then(|| ctx.namespace.clone()));
            targets.push(Target {
                kind: selection.kind,
                namespace,
                name,
                source: None,
            });
        }
    }
    Ok(targets)
}

/// Polls until GET answers 404 (or finds a new object of the same name).
async fn wait_gone(
    ctx: &Context,
    object: &Deleted,
    deadline: Option<Instant>,
) -> anyhow::Result<()> {
    let path =
        ResourcePath::object(object.kind, object.namespace.as_deref(), &object.name).to_string();
    let mut interval = Duration::from_millis(50);
    loop {
        match ctx.client.get(&path, &[]).await {
            Err(error) if error.is_not_found() => return Ok(()),
            Err(error) => return Err(error.into()),
            Ok(live) => {
                let live_uid = live.pointer("/metadata/uid").and_then(Value::as_str);
                if object.uid.is_some() && live_uid != object.uid.as_deref() {
                    return Ok(());
                }
            }
        }
        if deadline.is_some_and(|deadline| Instant::now() + interval > deadline) {
            bail!(
                "timed out waiting for the condition on {}/{}",
                object.kind.plural,
                object.name
            );
        }
        sleep(interval).await;
        interval = (interval * 2).min(Duration::from_secs(1));
    }
}
