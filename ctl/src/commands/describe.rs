//! `skiff describe TYPE NAME`: the object, its events and related objects, rendered
//! by the `describe` module.

use std::io::Write as _;
use std::process::ExitCode;

use serde_json::Value;
use skiff_api::{ResourceKind, kind};

use super::{Context, finish};
use crate::DescribeArgs;
use crate::client::{self, ResourcePath};
use crate::describe;
use crate::printers;
use crate::resources;

/// Runs `skiff describe`: one description per object, separated by blank lines.
pub(crate) async fn run(ctx: &Context, args: DescribeArgs) -> anyhow::Result<ExitCode> {
    let selections = resources::parse(&args.resources)?;
    let mut errors = Vec::new();
    let mut printed = false;
    let mut stdout = std::io::stdout().lock();
    for selection in &selections {
        let objects = if selection.names.is_empty() {
            let path = ResourcePath::collection(selection.kind, ctx.list_namespace());
            let query: Vec<(&str, &str)> = args
                .selector
                .as_deref()
                .map(|s| ("labelSelector", s))
                .into_iter()
                .collect();
            match ctx.client.get(&path.to_string(), &query).await {
                Ok(list) => client::items(&list),
                Err(error) => {
                    errors.push(error.into());
                    continue;
                }
            }
        } else {
            let mut objects = Vec::new();
            for name in &selection.names {
                let path = ResourcePath::object(selection.kind, Some(&ctx.namespace), name);
                match ctx.client.get(&path.to_string(), &[]).await {
                    Ok(object) => objects.push(object),
                    Err(error) => errors.push(error.into()),
                }
            }
            objects
        };
        for object in objects {
            let text = match description(ctx, selection.kind, &object).await {
                Ok(text) => text,
                Err(error) => {
                    errors.push(error);
                    continue;
                }
            };
            if printed {
                write!(stdout, "\n\n")?;
            }
            write!(stdout, "{text}")?;
            printed = true;
        }
    }
    stdout.flush()?;
    if !printed && errors.is_empty() {
        eprintln!("No resources found in {} namespace.", ctx.namespace);
    }
    Ok(finish(&errors))
}

/// Fetches what the description shows besides the object and renders it.
async fn description(
    ctx: &Context,
    kind: &'static ResourceKind,
    object: &Value,
) -> anyhow::Result<String> {
    let name = printers::object_name(object);
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let uid = object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut about = events(ctx, kind, name, namespace, uid).await?;
    if kind == &kind::NODE {
        // The kubelet names its node by name where controllers use the uid; kubectl
        // asks for both.
        about.extend(events(ctx, kind, name, namespace, name).await?);
    }
    let selector =
        || resources::label_selector(object.pointer("/spec/selector").unwrap_or(&Value::Null));
    let related = if kind == &kind::DEPLOYMENT {
        list(
            ctx,
            &kind::REPLICA_SET,
            Some(namespace),
            &[("labelSelector", &selector())],
        )
        .await?
    } else if kind == &kind::REPLICA_SET {
        list(
            ctx,
            &kind::POD,
            Some(namespace),
            &[("labelSelector", &selector())],
        )
        .await?
    } else if kind == &kind::SERVICE {
        let path = ResourcePath::object(&kind::ENDPOINTS, Some(namespace), name);
        match ctx.client.get(&path.to_string(), &[]).await {
            Ok(endpoints) => vec![endpoints],
            Err(error) if error.is_not_found() => Vec::new(),
            Err(error) => return Err(error.into()),
        }
    } else if kind == &kind::NODE {
        let on_node = format!("spec.nodeName={name},status.phase!=Succeeded,status.phase!=Failed");
        list(ctx, &kind::POD, None, &[("fieldSelector", &on_node)]).await?
    } else {
        Vec::new()
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    Ok(describe::describe(kind, object, &about, &related, now))
}

/// The events about one object, as kubectl selects them.
async fn events(
    ctx: &Context,
    kind: &ResourceKind,
    name: &str,
    namespace: &str,
    uid: &str,
) -> anyhow::Result<Vec<Value>> {
    let mut selector = Vec::new();
    if kind == &kind::DEPLOYMENT {
        selector.push(format!("involvedObject.kind={}", kind.kind));
    }
    selector.push(format!("involvedObject.name={name}"));
    selector.push(format!("involvedObject.namespace={namespace}"));
    selector.push(format!("involvedObject.uid={uid}"));
    let selector = selector.join(",");
    let namespace = Some(namespace).filter(|n| !n.is_empty());
    match list(
        ctx,
        &kind::EVENT,
        namespace,
        &[("fieldSelector", &selector)],
    )
    .await
    {
        Ok(events) => Ok(events),
        // kubectl shows `Events: <none>` when it cannot read events.
        Err(error)
            if error
                .downcast_ref::<client::Error>()
                .is_some_and(client::Error::is_not_found) =>
        {
            Ok(Vec::new())
        }
        Err(error) => Err(error),
    }
}

/// The items of a list of `kind` in `namespace` (all namespaces for `None`).
async fn list(
    ctx: &Context,
    kind: &'static ResourceKind,
    namespace: Option<&str>,
    query: &[(&str, &str)],
) -> anyhow::Result<Vec<Value>> {
    let path = ResourcePath::collection(kind, namespace);
    let list = ctx.client.get(&path.to_string(), query).await?;
    Ok(client::items(&list))
}
