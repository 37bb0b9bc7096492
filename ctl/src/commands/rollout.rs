//! `skiff rollout status deployment/NAME`: watches the deployment and prints
//! kubectl's client-side verdict on every change until the rollout completes.

use std::process::ExitCode;

use anyhow::bail;
use serde_json::Value;
use skiff_api::kind;

use super::{Context, parse_duration};
use crate::client::{self, ResourcePath};
use crate::resources;

/// How long each watch request asks the server to keep the stream open.
const WATCH_TIMEOUT_SECONDS: &str = "300";

/// Runs `skiff rollout status`.
pub(crate) async fn status(
    ctx: &Context,
    resources: &[String],
    timeout: &str,
) -> anyhow::Result<ExitCode> {
    let timeout = parse_duration(timeout)?;
    let selections = resources::parse(resources)?;
    let [selection] = selections.as_slice() else {
        bail!("rollout status takes exactly one resource");
    };
    let [name] = selection.names.as_slice() else {
        bail!("rollout status takes exactly one resource name, as TYPE/NAME or TYPE NAME");
    };
    if selection.kind != &kind::DEPLOYMENT {
        bail!(
            "no status viewer has been implemented for {}",
            selection.kind.kind
        );
    }
    let path = ResourcePath::object(selection.kind, Some(&ctx.namespace), name);
    ctx.client.get(&path.to_string(), &[]).await?;
    let watched = watch_until_done(ctx, name);
    if timeout.is_zero() {
        watched.await?;
    } else {
        match tokio::time::timeout(timeout, watched).await {
            Ok(result) => result?,
            Err(_) => bail!("timed out waiting for the condition"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Lists the deployment by name, then watches it from the list's resourceVersion;
/// a closed stream is re-watched from the last version seen, a 410 re-lists.
async fn watch_until_done(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let path = ResourcePath::collection(&kind::DEPLOYMENT, Some(&ctx.namespace)).to_string();
    let field_selector = format!("metadata.name={name}");
    'list: loop {
        let list = ctx
            .client
            .get(
                &path,
                &[("fieldSelector", &field_selector), ("resourceVersion", "0")],
            )
            .await?;
        let mut resource_version = list
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let items = client::items(&list);
        for deployment in &items {
            if report(deployment)? {
                return Ok(());
            }
        }
        loop {
            let query = [
                ("allowWatchBookmarks", "true"),
                ("fieldSelector", field_selector.as_str()),
                ("resourceVersion", resource_version.as_str()),
                ("timeoutSeconds", WATCH_TIMEOUT_SECONDS),
            ];
            let mut events = match ctx.client.watch(&path, &query, false).await {
                Ok(events) => events,
                Err(error) if error.code() == Some(410) => continue 'list,
                Err(error) => return Err(error.into()),
            };
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    // A broken stream is re-watched from the last version seen.
                    Err(client::Error::Other(_)) => break,
                    Err(error) => return Err(error.into()),
                };
                let object = event.get("object").cloned().unwrap_or(Value::Null);
                if let Some(version) = object
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                {
                    resource_version = version.to_owned();
                }
                match event.get("type").and_then(Value::as_str) {
                    Some("ADDED" | "MODIFIED") => {
                        if report(&object)? {
                            return Ok(());
                        }
                    }
                    Some("DELETED") => bail!("object has been deleted"),
                    Some("BOOKMARK") => {}
                    Some("ERROR") if object.get("code").and_then(Value::as_u64) == Some(410) => {
                        continue 'list;
                    }
                    Some("ERROR") => return Err(client::Error::Status(Box::new(object)).into()),
                    other => bail!("internal error: unexpected event type {other:?}"),
                }
            }
        }
    }
}

/// Prints the verdict on one version of the deployment; true once rolled out.
fn report(deployment: &Value) -> anyhow::Result<bool> {
    let (message, done) = verdict(deployment)?;
    print!("{message}");
    Ok(done)
}

/// kubectl's `DeploymentStatusViewer.Status`, message for message.
fn verdict(deployment: &Value) -> anyhow::Result<(String, bool)> {
    let int = |pointer: &str| {
        deployment
            .pointer(pointer)
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let name = crate::printers::object_name(deployment);
    if int("/metadata/generation") > int("/status/observedGeneration") {
        return Ok((
            "Waiting for deployment spec update to be observed...\n".to_owned(),
            false,
        ));
    }
    let timed_out = deployment
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|condition| {
            condition.get("type").and_then(Value::as_str) == Some("Progressing")
                && condition.get("reason").and_then(Value::as_str)
                    == Some("ProgressDeadlineExceeded")
        });
    if timed_out {
        bail!("deployment {name:?} exceeded its progress deadline");
    }
    let updated = int("/status/updatedReplicas");
    let replicas = int("/status/replicas");
    let available = int("/status/availableReplicas");
    if let Some(wanted) = deployment.pointer("/spec/replicas").and_then(Value::as_i64)
        && updated < wanted
    {
        return Ok((
            format!(
                "Waiting for deployment {name:?} rollout to finish: {updated} out of {wanted} new replicas have been updated...\n"
            ),
            false,
        ));
    }
    if replicas > updated {
        return Ok((
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...\n",
                replicas - updated
            ),
            false,
        ));
    }
    if available < updated {
        return Ok((
            format!(
                "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available...\n"
            ),
            false,
        ));
    }
    Ok((
        format!("deployment {name:?} successfully rolled out\n"),
        true,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(deployment: Value, expected: &str, done: bool) {
        let (message, is_done) = verdict(&deployment).unwrap();
        assert_eq!((message.as_str(), is_done), (expected, done));
    }

    fn deployment(generation: i64, observed: i64, spec: i64, status: [i64; 3]) -> Value {
        let [replicas, updated, available] = status;
        json!({
            "metadata": {"name": "web", "generation": generation},
            "spec": {"replicas": spec},
            "status": {"observedGeneration": observed, "replicas": replicas,
                       "updatedReplicas": updated, "availableReplicas": available},
        })
    }

    #[test]
    fn verdicts_match_kubectl() {
        check(
            deployment(2, 1, 3, [3, 3, 3]),
            "Waiting for deployment spec update to be observed...\n",
            false,
        );
        check(
            deployment(2, 2, 3, [3, 1, 1]),
            "Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated...\n",
            false,
        );
        check(
            deployment(2, 2, 3, [4, 3, 3]),
            "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination...\n",
            false,
        );
        check(
            deployment(2, 2, 3, [3, 3, 2]),
            "Waiting for deployment \"web\" rollout to finish: 2 of 3 updated replicas are available...\n",
            false,
        );
        check(
            deployment(2, 2, 3, [3, 3, 3]),
            "deployment \"web\" successfully rolled out\n",
            true,
        );
    }

    #[test]
    fn a_missed_deadline_fails() {
        let mut stuck = deployment(1, 1, 3, [3, 1, 1]);
        stuck["status"]["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]);
        let error = verdict(&stuck).unwrap_err();
        assert_eq!(
            error.to_string(),
            "deployment \"web\" exceeded its progress deadline"
        );
    }
}
