//! `skiff drain NODE`: kubectl drain. Cordon the node, pick its pods with kubectl's
//! filters (DaemonSet-managed, mirror, local storage, unreplicated), evict each through
//! `POST pods/NAME/eviction` (policy/v1), and wait until each is gone.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};
use skiff_api::kind;
use tokio::time::Instant;

use super::{Context, cordon, parse_duration};
use crate::DrainArgs;
use crate::client::{self, ResourcePath};

/// kubectl's messages for pods it refuses to delete, and for those it deletes or
/// skips anyway (`k8s.io/kubectl/pkg/drain/filters.go`).
const DAEMON_SET_FATAL: &str = "DaemonSet-managed Pods (use --ignore-daemonsets to ignore)";
const DAEMON_SET_WARNING: &str = "ignoring DaemonSet-managed Pods";
const LOCAL_STORAGE_FATAL: &str =
    "Pods with local storage (use --delete-emptydir-data to override)";
const LOCAL_STORAGE_WARNING: &str = "deleting Pods with local storage";
const UNMANAGED_FATAL: &str = "Pods declare no controller (use --force to override)";
const UNMANAGED_WARNING: &str = "deleting Pods that declare no controller";

/// The annotation of a mirror pod (a static pod's API copy), which drain never evicts.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// How often drain looks whether evicted pods are gone (kubectl's interval).
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How long to wait before retrying an eviction the server refused with 429.
const EVICTION_RETRY: Duration = Duration::from_secs(5);

/// The drain flags the filters look at.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Filters {
    /// `--force`: delete pods without a controller.
    pub force: bool,
    /// `--ignore-daemonsets`: leave DaemonSet-managed pods alone instead of failing.
    pub ignore_daemonsets: bool,
    /// `--delete-emptydir-data`: delete pods with emptyDir volumes.
    pub delete_emptydir_data: bool,
}

/// What drain does with one pod (kubectl's `PodDeleteStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Evict it, with a warning to print about it, if any.
    Evict(Option<&'static str>),
    /// Leave it on the node, with a warning, if any.
    Skip(Option<&'static str>),
    /// Refuse to drain the node because of it.
    Refuse(&'static str),
}

impl Decision {
    fn deletes(self) -> bool {
        matches!(self, Self::Evict(_))
    }
}

/// kubectl's filter chain: each filter in turn until one does not delete; the last
/// filter's decision counts (so an earlier warning may be dropped, as in kubectl).
pub(crate) fn decide(pod: &Value, filters: Filters) -> Decision {
    let chain: [fn(&Value, Filters) -> Decision; 4] = [
        daemon_set_filter,
        mirror_filter,
        local_storage_filter,
        unreplicated_filter,
    ];
    let mut decision = Decision::Evict(None);
    for filter in chain {
        decision = filter(pod, filters);
        if !decision.deletes() {
            break;
        }
    }
    decision
}

fn is_finished(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// The ownerReference marked `controller: true`, if any.
fn controller_of(pod: &Value) -> Option<&Value> {
    pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|owner| owner["controller"] == true)
}

/// DaemonSet-managed pods need `--ignore-daemonsets`, and are then left alone. kubectl
/// also GETs the DaemonSet (a missing one with `--force` is deleted); Skiff serves no
/// DaemonSets, so the controller reference alone decides.
fn daemon_set_filter(pod: &Value, filters: Filters) -> Decision {
    let Some(controller) = controller_of(pod) else {
        return Decision::Evict(None);
    };
    if controller["kind"] != "DaemonSet" || is_finished(pod) {
        return Decision::Evict(None);
    }
    if filters.ignore_daemonsets {
        Decision::Skip(Some(DAEMON_SET_WARNING))
    } else {
        Decision::Refuse(DAEMON_SET_FATAL)
    }
}

fn mirror_filter(pod: &Value, _: Filters) -> Decision {
    if pod["metadata"]["annotations"]
        .get(MIRROR_ANNOTATION)
        .is_some()
    {
        Decision::Skip(None)
    } else {
        Decision::Evict(None)
    }
}

fn local_storage_filter(pod: &Value, filters: Filters) -> Decision {
    let has_empty_dir = pod["spec"]["volumes"]
        .as_array()
        .is_some_and(|volumes| volumes.iter().any(|v| v.get("emptyDir").is_some()));
    if !has_empty_dir || is_finished(pod) {
        return Decision::Evict(None);
    }
    if filters.delete_emptydir_data {
        Decision::Evict(Some(LOCAL_STORAGE_WARNING))
    } else {
        Decision::Refuse(LOCAL_STORAGE_FATAL)
    }
}

fn unreplicated_filter(pod: &Value, filters: Filters) -> Decision {
    if is_finished(pod) || controller_of(pod).is_some() {
        return Decision::Evict(None);
    }
    if filters.force {
        Decision::Evict(Some(UNMANAGED_WARNING))
    } else {
        Decision::Refuse(UNMANAGED_FATAL)
    }
}

/// `NAMESPACE/NAME` of a pod.
fn pod_key(pod: &Value) -> String {
    format!(
        "{}/{}",
        pod["metadata"]["namespace"].as_str().unwrap_or_default(),
        pod["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// Groups `(message, pod)` pairs by message, in first-seen order, as
/// `message: ns/a, ns/b`.
fn grouped(pairs: &[(&'static str, String)]) -> Vec<String> {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for (message, pod) in pairs {
        match groups.iter_mut().find(|(m, _)| m == message) {
            Some((_, pods)) => pods.push(pod),
            None => groups.push((message, vec![pod])),
        }
    }
    groups
        .into_iter()
        .map(|(message, pods)| format!("{message}: {}", pods.join(", ")))
        .collect()
}

/// The pods of a node sorted out: those to evict, kubectl's warning line, and its
/// error (one line) when some pod may not be deleted.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The pods to evict, in list order.
    pub evict: Vec<Value>,
    /// `Warning: …` without the prefix: `message: pods; message: pods`.
    pub warning: Option<String>,
    /// `cannot delete message: pods` for each refusal, kubectl's aggregate of them.
    pub error: Option<String>,
}

/// Runs the filters over a node's pods.
pub(crate) fn plan(pods: &[Value], filters: Filters) -> Plan {
    let mut evict = Vec::new();
    let mut warnings = Vec::new();
    let mut refusals = Vec::new();
    for pod in pods {
        match decide(pod, filters) {
            Decision::Evict(warning) => {
                evict.push(pod.clone());
                warnings.extend(warning.map(|w| (w, pod_key(pod))));
            }
            Decision::Skip(warning) => warnings.extend(warning.map(|w| (w, pod_key(pod)))),
            Decision::Refuse(message) => refusals.push((message, pod_key(pod))),
        }
    }
    let errors: Vec<String> = grouped(&refusals)
        .into_iter()
        .map(|group| format!("cannot delete {group}"))
        .collect();
    let error = match errors.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        // client-go's aggregate error.
        many => Some(format!("[{}]", many.join(", "))),
    };
    let warnings = grouped(&warnings);
    Plan {
        evict,
        warning: (!warnings.is_empty()).then(|| warnings.join("; ")),
        error,
    }
}

/// The Eviction kubectl posts: the pod's name and namespace, and the grace period
/// when one was given (negative: the pod's own).
pub(crate) fn eviction(namespace: &str, name: &str, grace_period: i64) -> Value {
    let mut options = json!({});
    if grace_period >= 0 {
        options["gracePeriodSeconds"] = json!(grace_period);
    }
    json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": namespace},
        "deleteOptions": options,
    })
}

/// Runs `skiff drain`.
pub(crate) async fn run(ctx: &Context, args: DrainArgs) -> anyhow::Result<ExitCode> {
    let node = args.node.as_str();
    let timeout = parse_duration(&args.timeout)?;
    let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
    let changed = cordon::set_unschedulable(ctx, node, true).await?;
    println!("{}", cordon::line(node, true, changed));

    let field_selector = format!("spec.nodeName={node}");
    let pods = ctx
        .client
        .get(
            &ResourcePath::collection(&kind::POD, None).to_string(),
            &[("fieldSelector", &field_selector)],
        )
        .await?;
    let filters = Filters {
        force: args.force,
        ignore_daemonsets: args.ignore_daemonsets,
        delete_emptydir_data: args.delete_emptydir_data,
    };
    let plan = plan(&client::items(&pods), filters);
    if let Some(error) = plan.error {
        bail!("unable to drain node {node:?} due to error:{error}");
    }
    if let Some(warning) = plan.warning {
        eprintln!("Warning: {warning}");
    }

    // Evict everything first, then wait for all of it, as kubectl's goroutines do.
    let mut pending = Vec::new();
    for pod in plan.evict {
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        println!("evicting pod {namespace}/{name}");
        if evict(ctx, namespace, name, args.grace_period, deadline).await? {
            pending.push(pod);
        } else {
            println!("pod/{name} evicted");
        }
    }
    wait_until_gone(ctx, pending, &args.timeout, deadline).await?;
    println!("node/{node} drained");
    Ok(ExitCode::SUCCESS)
}

/// POSTs one eviction, retrying while the server answers 429 (a disruption budget
/// in Kubernetes); `false` when the pod is already gone.
async fn evict(
    ctx: &Context,
    namespace: &str,
    name: &str,
    grace_period: i64,
    deadline: Option<Instant>,
) -> anyhow::Result<bool> {
    let path = ResourcePath::object(&kind::POD, Some(namespace), name)
        .subresource("eviction")
        .to_string();
    let body = eviction(namespace, name, grace_period);
    loop {
        match ctx.client.create(&path, &[], &body).await {
            Ok(_) => return Ok(true),
            Err(error) if error.is_not_found() => return Ok(false),
            Err(error)
                if error.code() == Some(429)
                    && deadline.is_none_or(|d| Instant::now() + EVICTION_RETRY < d) =>
            {
                eprintln!(
                    "error when evicting pods/{name:?} -n {namespace:?} (will retry after 5s): {error}"
                );
                tokio::time::sleep(EVICTION_RETRY).await;
            }
            Err(error) => {
                return Err(anyhow::Error::new(error).context(format!(
                    "error when evicting pods/{name:?} -n {namespace:?}"
                )));
            }
        }
    }
}

/// Polls each evicted pod until it is gone (404, or replaced by a pod of another uid),
/// printing `pod/NAME evicted`; fails at the deadline.
async fn wait_until_gone(
    ctx: &Context,
    mut pending: Vec<Value>,
    timeout_text: &str,
    deadline: Option<Instant>,
) -> anyhow::Result<()> {
    while !pending.is_empty() {
        let mut still_there = Vec::new();
        for pod in pending {
            let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = pod["metadata"]["name"].as_str().unwrap_or_default();
            let path = ResourcePath::object(&kind::POD, Some(namespace), name).to_string();
            match ctx.client.get(&path, &[]).await {
                Err(error) if error.is_not_found() => println!("pod/{name} evicted"),
                Err(error) => return Err(error.into()),
                Ok(live) if live["metadata"]["uid"] != pod["metadata"]["uid"] => {
                    println!("pod/{name} evicted");
                }
                Ok(_) => still_there.push(pod),
            }
        }
        pending = still_there;
        if pending.is_empty() {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() + POLL_INTERVAL > d) {
            let names: Vec<String> = pending.iter().map(pod_key).collect();
            bail!(
                "drain did not complete within {timeout_text} (still terminating: {})",
                names.join(", ")
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, extra: Value) -> Value {
        let mut pod = json!({"metadata": {"name": name, "namespace": "default"}, "spec": {}, "status": {"phase": "Running"}});
        merge(&mut pod, extra);
        pod
    }

    fn merge(target: &mut Value, patch: Value) {
        match (target, patch) {
            (Value::Object(target), Value::Object(patch)) => {
                for (key, value) in patch {
                    merge(target.entry(key).or_insert(Value::Null), value);
                }
            }
            (target, patch) => *target = patch,
        }
    }

    fn owned_by(kind: &str) -> Value {
        json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": "x", "uid": "u", "controller": true}]}})
    }

    fn check(pod: &Value, filters: Filters, expected: Decision) {
        assert_eq!(decide(pod, filters), expected, "{pod} {filters:?}");
    }

    #[test]
    fn filters_decide_like_kubectl() {
        let none = Filters::default();
        let all = Filters {
            force: true,
            ignore_daemonsets: true,
            delete_emptydir_data: true,
        };
        let replicated = pod("web", owned_by("ReplicaSet"));
        check(&replicated, none, Decision::Evict(None));

        let bare = pod("bare", json!({}));
        check(&bare, none, Decision::Refuse(UNMANAGED_FATAL));
        check(&bare, all, Decision::Evict(Some(UNMANAGED_WARNING)));
        // A controller reference that is not marked controller does not count.
        let loosely_owned = pod(
            "loose",
            json!({"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "name": "x", "uid": "u"}]}}),
        );
        check(&loosely_owned, none, Decision::Refuse(UNMANAGED_FATAL));

        let daemon = pod("agent", owned_by("DaemonSet"));
        check(&daemon, none, Decision::Refuse(DAEMON_SET_FATAL));
        check(&daemon, all, Decision::Skip(Some(DAEMON_SET_WARNING)));

        let mirror = pod(
            "static",
            json!({"metadata": {"annotations": {MIRROR_ANNOTATION: "abc"}}}),
        );
        check(&mirror, none, Decision::Skip(None));

        let scratch = json!({"spec": {"volumes": [{"name": "tmp", "emptyDir": {}}]}});
        let mut cached = pod("cache", owned_by("ReplicaSet"));
        merge(&mut cached, scratch.clone());
        check(&cached, none, Decision::Refuse(LOCAL_STORAGE_FATAL));
        // kubectl's unreplicated filter comes last and drops the local storage warning
        // (a TODO in kubectl's filters.go); so does Skiff, to print what kubectl prints.
        check(
            &cached,
            Filters {
                delete_emptydir_data: true,
                ..none
            },
            Decision::Evict(None),
        );
        // A bare pod with emptyDir: the last filter's decision counts.
        let mut bare_cached = pod("bare-cache", scratch);
        merge(&mut bare_cached, json!({}));
        check(&bare_cached, all, Decision::Evict(Some(UNMANAGED_WARNING)));
        check(
            &bare_cached,
            Filters {
                delete_emptydir_data: true,
                ..none
            },
            Decision::Refuse(UNMANAGED_FATAL),
        );

        // Finished pods go, whatever owns them.
        let mut done = pod("job-1", json!({"status": {"phase": "Succeeded"}}));
        check(&done, none, Decision::Evict(None));
        merge(&mut done, owned_by("DaemonSet"));
        check(&done, none, Decision::Evict(None));
    }

    #[test]
    fn plans_group_pods_by_message() {
        let pods = [
            pod("web", owned_by("ReplicaSet")),
            pod("bare-1", json!({})),
            pod("agent", owned_by("DaemonSet")),
            pod("bare-2", json!({})),
        ];
        let refused = plan(&pods, Filters::default());
        assert_eq!(
            refused.error.as_deref(),
            Some(
                "[cannot delete Pods declare no controller (use --force to override): default/bare-1, default/bare-2, cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): default/agent]"
            )
        );
        let forced = plan(
            &pods,
            Filters {
                force: true,
                ignore_daemonsets: true,
                delete_emptydir_data: false,
            },
        );
        assert_eq!(forced.error, None);
        let evicted: Vec<&str> = forced
            .evict
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(evicted, ["web", "bare-1", "bare-2"]);
        assert_eq!(
            forced.warning.as_deref(),
            Some(
                "deleting Pods that declare no controller: default/bare-1, default/bare-2; ignoring DaemonSet-managed Pods: default/agent"
            )
        );
        let only_bare = plan(&pods[1..2], Filters::default());
        assert_eq!(
            only_bare.error.as_deref(),
            Some(
                "cannot delete Pods declare no controller (use --force to override): default/bare-1"
            )
        );
        assert_eq!(plan(&[], Filters::default()), Plan::default());
    }

    #[test]
    fn evictions_carry_the_grace_period_when_given() {
        assert_eq!(
            eviction("shop", "web", -1),
            json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "web", "namespace": "shop"}, "deleteOptions": {}})
        );
        assert_eq!(
            eviction("shop", "web", 0)["deleteOptions"],
            json!({"gracePeriodSeconds": 0})
        );
    }
}
