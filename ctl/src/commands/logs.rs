//! `skiff logs POD [-c C] [-f]`: the container's log bytes, streamed to stdout.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::bail;
use futures_util::StreamExt as _;
use serde_json::Value;
use skiff_api::kind;

use super::{Context, parse_duration};
use crate::LogsArgs;
use crate::client::{self, ResourcePath};
use crate::printers;
use crate::resources;

/// The annotation naming the container `logs` and `exec` default to.
const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// Runs `skiff logs`.
pub(crate) async fn run(ctx: &Context, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let pod = pod(ctx, &args.pod).await?;
    let pod_name = printers::object_name(&pod).to_owned();
    let container = match args.container.clone().or(args.container_arg.clone()) {
        Some(container) => container,
        None => default_container(&pod)?,
    };
    let tail = args.tail.to_string();
    let since = match &args.since {
        Some(since) => Some(parse_duration(since)?.as_secs_f64().ceil().to_string()),
        None => None,
    };
    let mut query = vec![("container", container.as_str())];
    if args.follow {
        query.push(("follow", "true"));
    }
    if let Some(since) = &since {
        query.push(("sinceSeconds", since));
    }
    if args.tail >= 0 {
        query.push(("tailLines", &tail));
    }
    if args.timestamps {
        query.push(("timestamps", "true"));
    }
    let path = ResourcePath::object(&kind::POD, Some(&ctx.namespace), &pod_name).subresource("log");
    let mut stream = Box::pin(ctx.client.stream(&path.to_string(), &query).await?);
    let mut stdout = std::io::stdout().lock();
    while let Some(chunk) = stream.next().await {
        stdout.write_all(&chunk?)?;
        stdout.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The pod named by `POD`, `pod/POD`, or one of a deployment's or replica set's pods.
async fn pod(ctx: &Context, target: &str) -> anyhow::Result<Value> {
    let (kind, name) = match target.split_once('/') {
        Some((type_name, name)) => (resources::kind_named(type_name)?, name),
        None => (&kind::POD, target),
    };
    let path = ResourcePath::object(kind, Some(&ctx.namespace), name);
    let object = ctx.client.get(&path.to_string(), &[]).await?;
    if kind == &kind::POD {
        return Ok(object);
    }
    if kind != &kind::DEPLOYMENT && kind != &kind::REPLICA_SET {
        bail!("cannot get the logs from {}", kind.qualified_singular());
    }
    let selector =
        resources::label_selector(object.pointer("/spec/selector").unwrap_or(&Value::Null));
    let pods_path = ResourcePath::collection(&kind::POD, Some(&ctx.namespace));
    let list = ctx
        .client
        .get(&pods_path.to_string(), &[("labelSelector", &selector)])
        .await?;
    let mut pods = client::items(&list);
    if pods.is_empty() {
        bail!("no pods found for {}/{name}", kind.qualified_singular());
    }
    // Like kubectl, prefer a running pod; among equals, the oldest.
    pods.sort_by_key(|pod| {
        let running = pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running");
        let created = pod
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        (!running, created, printers::object_name(pod).to_owned())
    });
    let chosen = pods.swap_remove(0);
    if !pods.is_empty() {
        eprintln!(
            "Found {} pods, using pod/{}",
            pods.len() + 1,
            printers::object_name(&chosen)
        );
    }
    Ok(chosen)
}

/// The annotated default container, else the first (saying so when there are more).
fn default_container(pod: &Value) -> anyhow::Result<String> {
    if let Some(annotated) = pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(DEFAULT_CONTAINER))
        .and_then(Value::as_str)
    {
        return Ok(annotated.to_owned());
    }
    let names_in = |pointer: &str| -> Vec<&str> {
        pod.pointer(pointer)
            .and_then(Value::as_array)
            .map(|containers| {
                containers
                    .iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default()
    };
    let names = names_in("/spec/containers");
    // kubectl lists every container it could have picked, init ones marked.
    let mut choices: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    choices.extend(
        names_in("/spec/initContainers")
            .iter()
            .map(|n| format!("{n} (init)")),
    );
    choices.extend(
        names_in("/spec/ephemeralContainers")
            .iter()
            .map(|n| format!("{n} (ephem)")),
    );
    match names.as_slice() {
        [] => bail!("pod {:?} has no containers", printers::object_name(pod)),
        [only] => Ok((*only).to_owned()),
        [first, ..] => {
            eprintln!(
                "Defaulted container {first:?} out of: {}",
                choices.join(", ")
            );
            Ok((*first).to_owned())
        }
    }
}
