//! `skiff rollout`, as kubectl's:
//! - `status deployment/NAME`: watches the deployment and prints kubectl's
//!   client-side verdict on every change until the rollout completes;
//! - `history deployment/NAME [--revision=N]`: the revisions recorded on the
//!   deployment's ReplicaSets, or one revision's pod template;
//! - `undo deployment/NAME [--to-revision=N]`: client-side, as kubectl ≥ 1.18 does it:
//!   finds the ReplicaSet of the revision and JSON-patches the deployment's template
//!   (without `pod-template-hash`) and annotations back to it; the deployment
//!   controller then finds that ReplicaSet as the new one and gives it a new revision.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use serde_json::{Map, Value, json};
use skiff_api::kind;

use super::{Context, finish, parse_duration};
use crate::client::{self, PatchType, ResourcePath};
use crate::resources;

/// A ReplicaSet's revision, and the deployment's current one.
const REVISION: &str = "deployment.kubernetes.io/revision";
/// The label that tells a deployment's ReplicaSets apart.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// What `kubectl rollout history` lists as the reason of a revision.
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// Annotations a rollback keeps from the deployment rather than taking from the
/// ReplicaSet (kubectl's `annotationsToSkip`).
const ANNOTATIONS_TO_SKIP: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

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

/// The deployments named by `resources`; `what` names the missing implementation
/// for other kinds, as kubectl does (`rollbacker`, `history viewer`).
fn deployment_names(resources: &[String], what: &str) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for selection in resources::parse(resources)? {
        if selection.kind != &kind::DEPLOYMENT {
            let kind = selection.kind;
            let group_kind = if kind.group.is_empty() {
                kind.kind.to_owned()
            } else {
                format!("{}.{}", kind.kind, kind.group)
            };
            bail!("no {what} has been implemented for {group_kind:?}");
        }
        if selection.names.is_empty() {
            bail!("resource(s) were provided, but no name was specified");
        }
        names.extend(selection.names);
    }
    Ok(names)
}

/// Reads the deployment and the ReplicaSets it controls (kubectl's
/// `GetAllReplicaSets`: those its selector matches with it as their controller).
async fn deployment_and_replica_sets(
    ctx: &Context,
    name: &str,
) -> anyhow::Result<(Value, Vec<Value>)> {
    let path = ResourcePath::object(&kind::DEPLOYMENT, Some(&ctx.namespace), name);
    let deployment = ctx.client.get(&path.to_string(), &[]).await?;
    let selector =
        resources::label_selector(deployment.pointer("/spec/selector").unwrap_or(&Value::Null));
    let list_path = ResourcePath::collection(&kind::REPLICA_SET, Some(&ctx.namespace));
    let list = ctx
        .client
        .get(
            &list_path.to_string(),
            &[("labelSelector", selector.as_str())],
        )
        .await
        .map_err(|e| anyhow!("failed to retrieve replica sets from deployment {name}: {e}"))?;
    let uid = deployment.pointer("/metadata/uid").cloned();
    let owned = client::items(&list)
        .into_iter()
        .filter(|rs| {
            rs.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|owner| {
                    owner.get("controller") == Some(&json!(true))
                        && owner.get("uid") == uid.as_ref()
                })
        })
        .collect();
    Ok((deployment, owned))
}

/// Runs `skiff rollout undo`.
pub(crate) async fn undo(
    ctx: &Context,
    resources: &[String],
    to_revision: i64,
) -> anyhow::Result<ExitCode> {
    let names = deployment_names(resources, "rollbacker")?;
    let mut errors = Vec::new();
    for name in &names {
        match undo_one(ctx, name, to_revision).await {
            Ok(result) => println!("{}/{name} {result}", kind::DEPLOYMENT.qualified_singular()),
            Err(error) => errors.push(error),
        }
    }
    Ok(finish(&errors))
}

/// kubectl's `DeploymentRollbacker.Rollback`; returns what happened (`rolled back`).
async fn undo_one(ctx: &Context, name: &str, to_revision: i64) -> anyhow::Result<String> {
    let (deployment, replica_sets) = deployment_and_replica_sets(ctx, name).await?;
    if to_revision < 0 {
        bail!("unable to find specified revision {to_revision} in history");
    }
    let target = revision_to_restore(&deployment, &replica_sets, to_revision)?;
    if deployment.pointer("/spec/paused") == Some(&json!(true)) {
        bail!(
            "you cannot rollback a paused deployment; resume it first with 'kubectl rollout resume' and try again"
        );
    }
    let current = deployment.pointer("/spec/template").unwrap_or(&Value::Null);
    let wanted = target.pointer("/spec/template").unwrap_or(&Value::Null);
    if equal_ignore_hash(wanted, current) {
        return Ok(format!(
            "skipped rollback (current template already matches revision {to_revision})"
        ));
    }
    let patch = undo_patch(&deployment, target);
    let path = ResourcePath::object(&kind::DEPLOYMENT, Some(&ctx.namespace), name);
    ctx.client
        .patch(&path.to_string(), &[], PatchType::Json, &patch)
        .await
        .map_err(|e| anyhow!("failed restoring revision {to_revision}: {e}"))?;
    Ok("rolled back".to_owned())
}

/// A ReplicaSet's revision: 0 without the annotation, `None` when it is malformed.
fn revision_of(replica_set: &Value) -> Option<i64> {
    match replica_set
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
    {
        None => Some(0),
        Some(value) => value.as_str()?.parse().ok(),
    }
}

/// kubectl's `deploymentRevision`: the ReplicaSet of `to_revision`, or for 0 the one
/// with the second-highest revision.
fn revision_to_restore<'a>(
    deployment: &Value,
    replica_sets: &'a [Value],
    to_revision: i64,
) -> anyhow::Result<&'a Value> {
    let mut latest: (i64, Option<&Value>) = (-1, None);
    let mut previous: (i64, Option<&Value>) = (-1, None);
    for replica_set in replica_sets {
        let Some(revision) = revision_of(replica_set) else {
            continue;
        };
        if to_revision == 0 {
            if latest.0 < revision {
                previous = latest;
                latest = (revision, Some(replica_set));
            } else if previous.0 < revision {
                previous = (revision, Some(replica_set));
            }
        } else if revision == to_revision {
            return Ok(replica_set);
        }
    }
    if to_revision > 0 {
        bail!("unable to find specified revision {to_revision} in history");
    }
    previous.1.ok_or_else(|| {
        anyhow!(
            "no rollout history found for deployment {:?}",
            crate::printers::object_name(deployment)
        )
    })
}

/// A template as compared: without `pod-template-hash`, nulls and empty maps and lists
/// (Kubernetes' semantic equality treats nil and empty alike).
fn comparable_template(template: &Value) -> Value {
    fn prune(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.values_mut().for_each(prune);
                map.retain(|_, child| match child {
                    Value::Null => false,
                    Value::Object(inner) => !inner.is_empty(),
                    Value::Array(items) => !items.is_empty(),
                    _ => true,
                });
            }
            Value::Array(items) => items.iter_mut().for_each(prune),
            _ => {}
        }
    }
    let mut template = template.clone();
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
    }
    prune(&mut template);
    template
}

/// kubectl's `equalIgnoreHash`.
fn equal_ignore_hash(a: &Value, b: &Value) -> bool {
    comparable_template(a) == comparable_template(b)
}

/// The JSON patch kubectl's `getDeploymentPatch` sends: the ReplicaSet's template
/// without `pod-template-hash`, and the ReplicaSet's annotations but for those the
/// deployment keeps.
fn undo_patch(deployment: &Value, replica_set: &Value) -> Value {
    let mut template = replica_set
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
    }
    let mut annotations = Map::new();
    let own = deployment.pointer("/metadata/annotations");
    for key in ANNOTATIONS_TO_SKIP {
        if let Some(value) = own.and_then(|a| a.get(key)) {
            annotations.insert(key.to_owned(), value.clone());
        }
    }
    let theirs = replica_set
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    for (key, value) in theirs.into_iter().flatten() {
        if !ANNOTATIONS_TO_SKIP.contains(&key.as_str()) {
            annotations.insert(key.clone(), value.clone());
        }
    }
    json!([
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ])
}

/// Runs `skiff rollout history`.
pub(crate) async fn history(
    ctx: &Context,
    resources: &[String],
    revision: i64,
) -> anyhow::Result<ExitCode> {
    if revision < 0 {
        bail!("revision must be a positive integer: {revision}");
    }
    let names = deployment_names(resources, "history viewer")?;
    let mut errors = Vec::new();
    for name in &names {
        let viewed = async {
            let (_, replica_sets) = deployment_and_replica_sets(ctx, name).await?;
            view_history(&replica_sets, revision, k8s_openapi::jiff::Timestamp::now())
        };
        match viewed.await {
            Ok(text) => {
                let with_revision = if revision > 0 {
                    format!("with revision #{revision}")
                } else {
                    String::new()
                };
                println!(
                    "{}/{name} {with_revision}\n{text}",
                    kind::DEPLOYMENT.qualified_singular()
                );
            }
            Err(error) => errors.push(error),
        }
    }
    Ok(finish(&errors))
}

/// kubectl's `DeploymentHistoryViewer.ViewHistory`: a `REVISION  CHANGE-CAUSE` table,
/// or the pod template of `revision` (with its change cause among the annotations).
fn view_history(
    replica_sets: &[Value],
    revision: i64,
    now: k8s_openapi::jiff::Timestamp,
) -> anyhow::Result<String> {
    let mut history: BTreeMap<i64, Value> = BTreeMap::new();
    for replica_set in replica_sets {
        let Some(number) = revision_of(replica_set) else {
            continue;
        };
        let mut template = replica_set
            .pointer("/spec/template")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let cause = replica_set
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(CHANGE_CAUSE))
            .and_then(Value::as_str)
            .filter(|cause| !cause.is_empty());
        if let (Some(cause), Some(object)) = (cause, template.as_object_mut()) {
            let metadata = object.entry("metadata").or_insert_with(|| json!({}));
            if let Some(metadata) = metadata.as_object_mut() {
                let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
                if let Some(annotations) = annotations.as_object_mut() {
                    annotations.insert(CHANGE_CAUSE.to_owned(), json!(cause));
                }
            }
        }
        history.insert(number, template);
    }
    if history.is_empty() {
        return Ok("No rollout history found.".to_owned());
    }
    if revision > 0 {
        let template = history
            .get(&revision)
            .ok_or_else(|| anyhow!("unable to find the specified revision"))?;
        return Ok(crate::describe::pod_template(template, now));
    }
    let rows: Vec<(String, String)> = history
        .iter()
        .map(|(number, template)| {
            let cause = template
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(CHANGE_CAUSE))
                .and_then(Value::as_str)
                .filter(|cause| !cause.is_empty())
                .unwrap_or("<none>");
            (number.to_string(), cause.to_owned())
        })
        .collect();
    // Go's tabwriter (padding 2): the first column is as wide as its widest cell + 2.
    let width = rows
        .iter()
        .map(|(number, _)| number.len())
        .chain(["REVISION".len()])
        .max()
        .unwrap_or(0)
        + 2;
    let mut table = format!("{:<width$}CHANGE-CAUSE\n", "REVISION");
    for (number, cause) in rows {
        table.push_str(&format!("{number:<width$}{cause}\n"));
    }
    Ok(table)
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

    fn replica_set(revision: &str, image: &str, hash: &str, cause: Option<&str>) -> Value {
        let mut annotations = json!({
            "deployment.kubernetes.io/revision": revision,
            "deployment.kubernetes.io/desired-replicas": "2",
            "deployment.kubernetes.io/max-replicas": "3",
        });
        if let Some(cause) = cause {
            annotations["kubernetes.io/change-cause"] = json!(cause);
        }
        json!({
            "metadata": {"name": format!("web-{hash}"), "annotations": annotations},
            "spec": {"template": {
                "metadata": {"labels": {"app": "web", "pod-template-hash": hash}},
                "spec": {"containers": [{"name": "web", "image": image}]},
            }},
        })
    }

    fn web_deployment(image: &str) -> Value {
        json!({
            "metadata": {"name": "web", "annotations": {
                "deployment.kubernetes.io/revision": "3",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "kubernetes.io/change-cause": "now",
            }},
            "spec": {"template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]},
            }},
        })
    }

    #[test]
    fn undo_picks_the_previous_or_the_named_revision() {
        let sets = [
            replica_set("1", "nginx:1", "aaa", Some("first")),
            replica_set("3", "nginx:3", "ccc", None),
            replica_set("2", "nginx:2", "bbb", None),
        ];
        let deployment = web_deployment("nginx:3");
        let previous = revision_to_restore(&deployment, &sets, 0).unwrap();
        assert_eq!(previous["metadata"]["name"], "web-bbb");
        let first = revision_to_restore(&deployment, &sets, 1).unwrap();
        assert_eq!(first["metadata"]["name"], "web-aaa");
        assert_eq!(
            revision_to_restore(&deployment, &sets, 7)
                .unwrap_err()
                .to_string(),
            "unable to find specified revision 7 in history"
        );
        assert_eq!(
            revision_to_restore(&deployment, &sets[1..2], 0)
                .unwrap_err()
                .to_string(),
            "no rollout history found for deployment \"web\""
        );
        assert!(equal_ignore_hash(
            &sets[1]["spec"]["template"],
            &deployment["spec"]["template"]
        ));
        assert!(!equal_ignore_hash(
            &sets[0]["spec"]["template"],
            &deployment["spec"]["template"]
        ));
        assert_eq!(
            undo_patch(&deployment, first),
            json!([
                {"op": "replace", "path": "/spec/template", "value": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}},
                {"op": "replace", "path": "/metadata/annotations", "value": {
                    "deployment.kubernetes.io/revision": "3",
                    "kubectl.kubernetes.io/last-applied-configuration": "{}",
                    "kubernetes.io/change-cause": "first"}},
            ])
        );
    }

    #[test]
    fn history_lists_revisions_like_kubectl() {
        let now = k8s_openapi::jiff::Timestamp::UNIX_EPOCH;
        let sets = [
            replica_set("10", "nginx:3", "ccc", None),
            replica_set(
                "2",
                "nginx:2",
                "bbb",
                Some("kubectl set image deployment/web web=nginx:2"),
            ),
        ];
        assert_eq!(
            view_history(&sets, 0, now).unwrap(),
            "REVISION  CHANGE-CAUSE\n2         kubectl set image deployment/web web=nginx:2\n10        <none>\n"
        );
        assert_eq!(
            view_history(&[], 0, now).unwrap(),
            "No rollout history found."
        );
        let template = view_history(&sets, 2, now).unwrap();
        assert!(
            template.starts_with("Pod Template:\n  Labels:\tapp=web\n"),
            "{template}"
        );
        assert!(
            template.contains("kubernetes.io/change-cause: kubectl set image"),
            "{template}"
        );
        assert!(template.contains("nginx:2"), "{template}");
        assert_eq!(
            view_history(&sets, 5, now).unwrap_err().to_string(),
            "unable to find the specified revision"
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
