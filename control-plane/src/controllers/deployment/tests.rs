//! The ReplicaSet and Deployment controllers against a real one-member store, with the
//! shared informers. No node agent runs: where a test needs pods to become Ready, a
//! small "fake kubelet" marks them Running and Ready through `/status`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use skiff_api::codec::{FieldValidation, decode_object};
use skiff_api::kind::{DEPLOYMENT, EVENT, POD, REPLICA_SET};
use skiff_api::{Object, ResourceKind};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use super::util::{POD_TEMPLATE_HASH, REVISION, REVISION_HISTORY};
use crate::apiserver::{ListOptions, Part, Registry, Writer, now_timestamp};
use crate::controllers::informer::{Informer, key_of};
use crate::controllers::{Informers, deployment, replicaset};

/// How long any one wait may take.
const DEADLINE: Duration = Duration::from_secs(30);
const NS: &str = "default";

struct Cluster {
    _dir: TempDir,
    registry: Registry,
    cancel: CancellationToken,
    /// Whether the fake kubelet marks pods Ready.
    kubelet: std::sync::Arc<AtomicBool>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A store, the informers, both controllers, and a fake kubelet (off until enabled).
async fn cluster() -> Cluster {
    let (dir, registry) = crate::testing::registry().await;
    let cancel = CancellationToken::new();
    let informers = Informers::start(&registry, &cancel);
    tokio::time::timeout(DEADLINE, informers.wait_synced())
        .await
        .expect("informers sync");
    replicaset::start(&registry, &informers, &cancel);
    deployment::start(&registry, &informers, &cancel);
    let kubelet = std::sync::Arc::new(AtomicBool::new(false));
    tokio::spawn(fake_kubelet(
        registry.clone(),
        kubelet.clone(),
        cancel.clone(),
    ));
    Cluster {
        _dir: dir,
        registry,
        cancel,
        kubelet,
    }
}

/// Marks every live pod Running and Ready (while `enabled`), as a kubelet would once
/// its containers pass their readiness probes.
async fn fake_kubelet(
    registry: Registry,
    enabled: std::sync::Arc<AtomicBool>,
    cancel: CancellationToken,
) {
    while !cancel.is_cancelled() {
        if enabled.load(Ordering::SeqCst)
            && let Ok(page) = registry.list(&POD, None, &ListOptions::default()).await
        {
            for object in page.items {
                let Object::Pod(pod) = &object else { continue };
                if pod.metadata.deletion_timestamp.is_some() || replicaset::is_pod_ready(pod) {
                    continue;
                }
                let writer = Writer {
                    part: Part::Status,
                    ..Writer::main("fake-kubelet")
                };
                let _ = registry
                    .write(&POD, object.namespace(), object.name(), writer, |current| {
                        let mut value = current.expect("pod").to_value();
                        value["metadata"]
                            .as_object_mut()
                            .map(|m| m.remove("resourceVersion"));
                        let now = jiff_now();
                        value["status"]["phase"] = json!("Running");
                        value["status"]["conditions"] = json!([
                            {"type": "Ready", "status": "True", "lastTransitionTime": now},
                            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                        ]);
                        Ok(Object::from_stored_value(&POD, value).expect("a pod"))
                    })
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn jiff_now() -> String {
    skiff_api::meta::jiff::Timestamp::from_second(now_timestamp().as_second())
        .unwrap()
        .to_string()
}

fn decode(value: Value) -> Object {
    decode_object(value, FieldValidation::Strict)
        .unwrap()
        .object
}

fn deployment_json(name: &str, replicas: i32, image: &str, strategy: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": image}]},
            },
        },
    })
}

fn rolling(surge: Value, unavailable: Value) -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

async fn create(registry: &Registry, value: Value) -> Object {
    registry
        .create(decode(value), Some(NS), Writer::main("test"))
        .await
        .unwrap()
}

/// Changes an object through the main resource (as `kubectl edit` would).
async fn edit(
    registry: &Registry,
    kind: &'static ResourceKind,
    name: &str,
    change: impl Fn(&mut Value),
) {
    registry
        .write(kind, Some(NS), name, Writer::main("test"), |current| {
            let mut value = current.expect("object").to_value();
            // Not pinned: a lost race re-reads and applies the change again.
            value["metadata"]
                .as_object_mut()
                .map(|m| m.remove("resourceVersion"));
            change(&mut value);
            Ok(Object::from_stored_value(kind, value).expect("a valid object"))
        })
        .await
        .unwrap();
}

async fn list(registry: &Registry, kind: &'static ResourceKind) -> Vec<Value> {
    registry
        .list(kind, Some(NS), &ListOptions::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(Object::to_value)
        .collect()
}

async fn get(registry: &Registry, kind: &'static ResourceKind, name: &str) -> Value {
    registry.get(kind, Some(NS), name).await.unwrap().to_value()
}

/// Polls `check` until it returns `Some`, failing after [`DEADLINE`] with `what`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = tokio::time::Instant::now();
    loop {
        match check().await {
            Ok(value) => return value,
            Err(state) if started.elapsed() > DEADLINE => {
                panic!("timed out waiting for {what}; last state: {state}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

fn int(value: &Value, pointer: &str) -> i64 {
    value.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The live pods of `app`.
fn live_pods<'a>(pods: &'a [Value], app: &str) -> Vec<&'a Value> {
    pods.iter()
        .filter(|pod| text(pod, "/metadata/labels/app") == app)
        .filter(|pod| pod.pointer("/metadata/deletionTimestamp").is_none())
        .collect()
}

/// The ReplicaSets of `app`, by name.
fn replica_sets_of(replica_sets: &[Value], app: &str) -> BTreeMap<String, Value> {
    replica_sets
        .iter()
        .filter(|rs| text(rs, "/metadata/labels/app") == app)
        .map(|rs| (text(rs, "/metadata/name").to_owned(), rs.clone()))
        .collect()
}

/// kubectl's `rollout status` rule: the rollout of `name` is complete.
async fn rolled_out(registry: &Registry, name: &str) -> Result<Value, String> {
    let d = get(registry, &DEPLOYMENT, name).await;
    let wanted = int(&d, "/spec/replicas");
    let done = int(&d, "/status/observedGeneration") >= int(&d, "/metadata/generation")
        && int(&d, "/status/updatedReplicas") == wanted
        && int(&d, "/status/replicas") == wanted
        && int(&d, "/status/availableReplicas") == wanted;
    if done { Ok(d) } else { Err(d.to_string()) }
}

fn condition<'a>(deployment: &'a Value, type_: &str) -> &'a Value {
    deployment
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|conditions| {
            conditions
                .iter()
                .find(|c| c["type"].as_str() == Some(type_))
        })
        .unwrap_or(&Value::Null)
}

/// Waits until `name` has `count` live pods, all from one ReplicaSet whose template has
/// `image`, and the Deployment says it is rolled out (when `ready`) or has all of them.
async fn settled(registry: &Registry, name: &str, count: usize, image: &str, ready: bool) -> Value {
    eventually(
        &format!("{name} to settle at {count} × {image}"),
        || async {
            let pods = list(registry, &POD).await;
            let live = live_pods(&pods, name);
            let images_ok = live
                .iter()
                .all(|pod| text(pod, "/spec/containers/0/image") == image);
            if live.len() != count || !images_ok {
                return Err(format!("{} live pods: {live:?}", live.len()));
            }
            if ready {
                rolled_out(registry, name).await
            } else {
                Ok(get(registry, &DEPLOYMENT, name).await)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deployment_creates_a_replica_set_and_pods_and_scales() {
    let cluster = cluster().await;
    let registry = &cluster.registry;
    cluster.kubelet.store(true, Ordering::SeqCst);
    create(
        registry,
        deployment_json("web", 3, "nginx:1", rolling(json!("25%"), json!("25%"))),
    )
    .await;
    let d = settled(registry, "web", 3, "nginx:1", true).await;
    let uid = text(&d, "/metadata/uid").to_owned();
    assert_eq!(
        text(
            &d,
            &format!("/metadata/annotations/{}", REVISION.replace('/', "~1"))
        ),
        "1"
    );
    let replica_sets = replica_sets_of(&list(registry, &REPLICA_SET).await, "web");
    assert_eq!(replica_sets.len(), 1, "{replica_sets:?}");
    let (rs_name, rs) = replica_sets.iter().next().unwrap();
    let hash = text(rs, "/metadata/labels/pod-template-hash");
    assert_eq!(rs_name, &format!("web-{hash}"));
    assert!(hash.len() <= 10 && !hash.is_empty());
    assert_eq!(
        text(rs, "/spec/selector/matchLabels/pod-template-hash"),
        hash
    );
    assert_eq!(
        text(rs, "/spec/template/metadata/labels/pod-template-hash"),
        hash
    );
    assert_eq!(rs["metadata"]["ownerReferences"][0]["uid"], json!(uid));
    assert_eq!(
        rs["metadata"]["ownerReferences"][0]["controller"],
        json!(true)
    );
    assert_eq!(rs["metadata"]["annotations"][REVISION], json!("1"));
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"],
        json!("3")
    );
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"],
        json!("4")
    );
    let rs_uid = text(rs, "/metadata/uid").to_owned();
    for pod in live_pods(&list(registry, &POD).await, "web") {
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], json!("ReplicaSet"));
        assert_eq!(owner["name"], json!(rs_name));
        assert_eq!(owner["uid"], json!(rs_uid));
        assert_eq!(owner["controller"], json!(true));
        assert_eq!(owner["blockOwnerDeletion"], json!(true));
        assert!(text(pod, "/metadata/name").starts_with(&format!("{rs_name}-")));
        assert_eq!(text(pod, "/metadata/labels/pod-template-hash"), hash);
    }
    assert_eq!(condition(&d, "Available")["status"], json!("True"));
    assert_eq!(
        condition(&d, "Available")["reason"],
        json!("MinimumReplicasAvailable")
    );
    assert_eq!(
        condition(&d, "Progressing")["reason"],
        json!("NewReplicaSetAvailable")
    );
    assert_eq!(
        condition(&d, "Progressing")["message"],
        json!(format!(
            "ReplicaSet \"{rs_name}\" has successfully progressed."
        ))
    );
    let rs = get(registry, &REPLICA_SET, rs_name).await;
    assert_eq!(int(&rs, "/status/readyReplicas"), 3);
    assert_eq!(int(&rs, "/status/fullyLabeledReplicas"), 3);
    assert_eq!(
        int(&rs, "/status/observedGeneration"),
        int(&rs, "/metadata/generation")
    );

    edit(registry, &DEPLOYMENT, "web", |d| {
        d["spec"]["replicas"] = json!(5)
    })
    .await;
    settled(registry, "web", 5, "nginx:1", true).await;
    edit(registry, &DEPLOYMENT, "web", |d| {
        d["spec"]["replicas"] = json!(2)
    })
    .await;
    let d = settled(registry, "web", 2, "nginx:1", true).await;
    assert_eq!(int(&d, "/status/availableReplicas"), 2);
    assert_eq!(
        replica_sets_of(&list(registry, &REPLICA_SET).await, "web").len(),
        1
    );
    let events = eventually("the controllers' events", || async {
        let events = list(registry, &EVENT).await;
        let reasons: Vec<(String, String)> = events
            .iter()
            .map(|e| {
                (
                    text(e, "/reason").to_owned(),
                    text(e, "/message").to_owned(),
                )
            })
            .collect();
        let has = |reason: &str, prefix: &str| {
            reasons
                .iter()
                .any(|(r, m)| r == reason && m.starts_with(prefix))
        };
        let all = has(
            "ScalingReplicaSet",
            &format!("Scaled up replica set {rs_name} to 3 from 0"),
        ) && has(
            "ScalingReplicaSet",
            &format!("Scaled up replica set {rs_name} to 5 from 3"),
        ) && has(
            "ScalingReplicaSet",
            &format!("Scaled down replica set {rs_name} to 2 from 5"),
        ) && has("SuccessfulCreate", &format!("Created pod: {rs_name}-"))
            && has("SuccessfulDelete", &format!("Deleted pod: {rs_name}-"));
        if all {
            Ok(reasons)
        } else {
            Err(format!("{reasons:?}"))
        }
    })
    .await;
    assert!(!events.is_empty());
}

/// Tracks, from the change streams, the fewest available pods and the most replicas
/// the ReplicaSets of `app` ask for, at every step.
struct Observer {
    min_available: std::sync::Arc<std::sync::atomic::AtomicI64>,
    max_spec_total: std::sync::Arc<std::sync::atomic::AtomicI64>,
    both_templates_live: std::sync::Arc<AtomicBool>,
}

fn observe(registry: &Registry, app: &str, cancel: &CancellationToken) -> Observer {
    use std::sync::atomic::AtomicI64;
    let observer = Observer {
        min_available: std::sync::Arc::new(AtomicI64::new(i64::MAX)),
        max_spec_total: std::sync::Arc::new(AtomicI64::new(0)),
        both_templates_live: std::sync::Arc::new(AtomicBool::new(false)),
    };
    let pods = Informer::start(registry.clone(), &POD, cancel.clone());
    let replica_sets = Informer::start(registry.clone(), &REPLICA_SET, cancel.clone());
    let app = app.to_owned();
    let (min_available, max_spec_total, both) = (
        observer.min_available.clone(),
        observer.max_spec_total.clone(),
        observer.both_templates_live.clone(),
    );
    let cancel = cancel.clone();
    tokio::spawn(async move {
        pods.wait_synced().await;
        replica_sets.wait_synced().await;
        let mut pod_changes = pods.subscribe();
        let mut rs_changes = replica_sets.subscribe();
        let mut pods: HashMap<String, Value> = HashMap::new();
        let mut specs: HashMap<String, i64> = HashMap::new();
        // The cache replayed as creations: the starting point, not steps.
        let mut recording = false;
        loop {
            if !recording && pod_changes.is_empty() && rs_changes.is_empty() {
                recording = true;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                Some(change) = pod_changes.recv() => {
                    let key = key_of(change.object());
                    match &change.new {
                        Some(pod) => pods.insert(key, pod.to_value()),
                        None => pods.remove(&key),
                    };
                    let values: Vec<Value> = pods.values().cloned().collect();
                    let live = live_pods(&values, &app);
                    let available = live
                        .iter()
                        .filter(|pod| {
                            pod.pointer("/status/conditions")
                                .and_then(Value::as_array)
                                .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
                        })
                        .count();
                    let hashes: std::collections::HashSet<&str> = live
                        .iter()
                        .map(|pod| text(pod, "/metadata/labels/pod-template-hash"))
                        .collect();
                    if recording {
                        min_available.fetch_min(i64::try_from(available).unwrap(), Ordering::SeqCst);
                        if hashes.len() > 1 {
                            both.store(true, Ordering::SeqCst);
                        }
                    }
                }
                Some(change) = rs_changes.recv() => {
                    let key = key_of(change.object());
                    match &change.new {
                        Some(rs) if text(&rs.to_value(), "/metadata/labels/app") == app => {
                            specs.insert(key, int(&rs.to_value(), "/spec/replicas"));
                        }
                        _ => { specs.remove(&key); }
                    }
                    if recording {
                        max_spec_total.fetch_max(specs.values().sum(), Ordering::SeqCst);
                    }
                }
            }
        }
    });
    observer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_update_keeps_max_unavailable_and_max_surge() {
    let cluster = cluster().await;
    let registry = &cluster.registry;
    cluster.kubelet.store(true, Ordering::SeqCst);
    create(
        registry,
        deployment_json("roll", 4, "nginx:1", rolling(json!(1), json!(1))),
    )
    .await;
    settled(registry, "roll", 4, "nginx:1", true).await;
    let old_rs = replica_sets_of(&list(registry, &REPLICA_SET).await, "roll");
    let old_name = old_rs.keys().next().unwrap().clone();
    let observer = observe(registry, "roll", &cluster.cancel);
    // Let the observer see the settled state first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    edit(registry, &DEPLOYMENT, "roll", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    })
    .await;
    let d = settled(registry, "roll", 4, "nginx:2", true).await;
    // The old ReplicaSet is kept (history), scaled to 0.
    let replica_sets = replica_sets_of(&list(registry, &REPLICA_SET).await, "roll");
    assert_eq!(replica_sets.len(), 2, "{replica_sets:?}");
    assert_eq!(int(&replica_sets[&old_name], "/spec/replicas"), 0);
    assert_eq!(
        replica_sets[&old_name]["metadata"]["annotations"][REVISION],
        json!("1")
    );
    let (new_name, new_rs) = replica_sets
        .iter()
        .find(|(name, _)| **name != old_name)
        .unwrap();
    assert_eq!(new_rs["metadata"]["annotations"][REVISION], json!("2"));
    assert_eq!(int(new_rs, "/spec/replicas"), 4);
    assert_eq!(d["metadata"]["annotations"][REVISION], json!("2"));
    assert_eq!(
        condition(&d, "Progressing")["message"],
        json!(format!(
            "ReplicaSet \"{new_name}\" has successfully progressed."
        ))
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let min_available = observer.min_available.load(Ordering::SeqCst);
    let max_total = observer.max_spec_total.load(Ordering::SeqCst);
    // replicas 4 - maxUnavailable 1; replicas 4 + maxSurge 1.
    assert!(min_available <= 4, "the observer saw no step");
    assert!(min_available >= 3, "available dropped to {min_available}");
    assert!(max_total <= 5, "ReplicaSets asked for {max_total} replicas");
    assert!(observer.both_templates_live.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recreate_removes_old_pods_before_creating_new_ones() {
    let cluster = cluster().await;
    let registry = &cluster.registry;
    cluster.kubelet.store(true, Ordering::SeqCst);
    create(
        registry,
        deployment_json("re", 3, "nginx:1", json!({"type": "Recreate"})),
    )
    .await;
    settled(registry, "re", 3, "nginx:1", true).await;
    let observer = observe(registry, "re", &cluster.cancel);
    tokio::time::sleep(Duration::from_millis(300)).await;
    edit(registry, &DEPLOYMENT, "re", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    })
    .await;
    let d = settled(registry, "re", 3, "nginx:2", true).await;
    assert_eq!(d["metadata"]["annotations"][REVISION], json!("2"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !observer.both_templates_live.load(Ordering::SeqCst),
        "old and new pods ran at the same time"
    );
    assert_eq!(observer.min_available.load(Ordering::SeqCst), 0);
    assert!(observer.max_spec_total.load(Ordering::SeqCst) <= 3);
}

/// What `skiff rollout undo` (and kubectl's) sends: the template of the ReplicaSet of
/// `revision` without its hash label, and the Deployment's annotations.
async fn undo(registry: &Registry, name: &str, revision: &str) {
    let replica_sets = replica_sets_of(&list(registry, &REPLICA_SET).await, name);
    let target = replica_sets
        .values()
        .find(|rs| rs["metadata"]["annotations"][REVISION] == json!(revision))
        .expect("the revision's ReplicaSet")
        .clone();
    let mut template = target["spec"]["template"].clone();
    template["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove(POD_TEMPLATE_HASH);
    edit(registry, &DEPLOYMENT, name, |d| {
        d["spec"]["template"] = template.clone();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_reuses_the_old_replica_set_with_a_new_revision() {
    let cluster = cluster().await;
    let registry = &cluster.registry;
    cluster.kubelet.store(true, Ordering::SeqCst);
    create(
        registry,
        deployment_json("back", 2, "nginx:1", rolling(json!("25%"), json!("25%"))),
    )
    .await;
    settled(registry, "back", 2, "nginx:1", true).await;
    let first = replica_sets_of(&list(registry, &REPLICA_SET).await, "back");
    let first_name = first.keys().next().unwrap().clone();
    edit(registry, &DEPLOYMENT, "back", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    })
    .await;
    settled(registry, "back", 2, "nginx:2", true).await;
    undo(registry, "back", "1").await;
    let d = settled(registry, "back", 2, "nginx:1", true).await;
    let replica_sets = replica_sets_of(&list(registry, &REPLICA_SET).await, "back");
    assert_eq!(replica_sets.len(), 2);
    let reused = &replica_sets[&first_name];
    assert_eq!(reused["metadata"]["annotations"][REVISION], json!("3"));
    assert_eq!(
        reused["metadata"]["annotations"][REVISION_HISTORY],
        json!("1")
    );
    assert_eq!(int(reused, "/spec/replicas"), 2);
    assert_eq!(d["metadata"]["annotations"][REVISION], json!("3"));
    // The pods are the first ReplicaSet's again.
    for pod in live_pods(&list(registry, &POD).await, "back") {
        assert_eq!(
            pod["metadata"]["ownerReferences"][0]["name"],
            json!(first_name)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revision_history_limit_deletes_the_oldest_replica_sets() {
    let cluster = cluster().await;
    let registry = &cluster.registry;
    cluster.kubelet.store(true, Ordering::SeqCst);
    let mut value = deployment_json("hist", 1, "nginx:1", rolling(json!(1), json!(0)));
    value["spec"]["revisionHistoryLimit"] = json!(1);
    create(registry, value).await;
    settled(registry, "hist", 1, "nginx:1", true).await;
    for image in ["nginx:2", "nginx:3", "nginx:4"] {
        edit(registry, &DEPLOYMENT, "hist", |d| {
            d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
        })
        .await;
        settled(registry, "hist", 1, image, true).await;
    }
    let revisions = eventually("old ReplicaSets to be deleted", || async {
        let replica_sets = replica_sets_of(&list(registry, &REPLICA_SET).await, "hist");
        let mut revisions: Vec<String> = replica_sets
            .values()
            .map(|rs| {
                text(
                    rs,
                    &format!("/metadata/annotations/{}", REVISION.replace('/', "~1")),
                )
                .to_owned()
            })
            .collect();
        revisions.sort();
        if revisions.len() == 2 {
            Ok(revisions)
        } else {
            Err(format!("{revisions:?}"))
        }
    })
    .await;
    assert_eq!(revisions, ["3", "4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_mid_rollout_is_proportional() {
    let cluster = cluster().await;
    let registry = &cluster.registry;
    // Pods never become ready: the rollout stalls at maxSurge / maxUnavailable.
    create(
        registry,
        deployment_json("prop", 10, "nginx:1", rolling(json!("25%"), json!("25%"))),
    )
    .await;
    settled(registry, "prop", 10, "nginx:1", false).await;
    edit(registry, &DEPLOYMENT, "prop", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    })
    .await;
    // 10 + 3 surge: the new ReplicaSet gets 3, then 2 unhealthy old replicas go
    // (25% of 10 unavailable) and the new one takes 2 more: 8 old, 5 new.
    let sizes = |wanted: [i64; 2]| async move {
        let replica_sets = replica_sets_of(&list(registry, &REPLICA_SET).await, "prop");
        let mut by_revision: Vec<(String, i64)> = replica_sets
            .values()
            .map(|rs| {
                (
                    text(
                        rs,
                        &format!("/metadata/annotations/{}", REVISION.replace('/', "~1")),
                    )
                    .to_owned(),
                    int(rs, "/spec/replicas"),
                )
            })
            .collect();
        by_revision.sort();
        let got: Vec<i64> = by_revision.iter().map(|(_, n)| *n).collect();
        if got == wanted {
            Ok(())
        } else {
            Err(format!("{by_revision:?}"))
        }
    };
    eventually("the stalled rollout", || sizes([8, 5])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    sizes([8, 5]).await.unwrap();
    // To 20 (25 with surge): 8·25/13 → 15, 5·25/13 → 10.
    edit(registry, &DEPLOYMENT, "prop", |d| {
        d["spec"]["replicas"] = json!(20)
    })
    .await;
    eventually("proportional scale-up", || sizes([15, 10])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    sizes([15, 10]).await.unwrap();
    // Paused: a new template does not roll, but scaling still applies.
    edit(registry, &DEPLOYMENT, "prop", |d| {
        d["spec"]["paused"] = json!(true)
    })
    .await;
    edit(registry, &DEPLOYMENT, "prop", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:3");
    })
    .await;
    // To 5 (7 with surge): 15·7/25 → 4, 10·7/25 → 3.
    edit(registry, &DEPLOYMENT, "prop", |d| {
        d["spec"]["replicas"] = json!(5)
    })
    .await;
    eventually("proportional scale-down while paused", || sizes([4, 3])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    sizes([4, 3]).await.unwrap();
    let d = get(registry, &DEPLOYMENT, "prop").await;
    assert_eq!(
        condition(&d, "Progressing")["reason"],
        json!("DeploymentPaused")
    );
    assert_eq!(condition(&d, "Available")["status"], json!("False"));
    assert_eq!(
        eventually("7 pods", || async {
            let pods = list(registry, &POD).await;
            let live = live_pods(&pods, "prop").len();
            if live == 7 {
                Ok(live)
            } else {
                Err(live.to_string())
            }
        })
        .await,
        7
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_sets_adopt_orphans_and_release_pods_that_stop_matching() {
    let cluster = cluster().await;
    let registry = &cluster.registry;
    let orphan = create(
        registry,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "orphan", "labels": {"app": "solo"}},
               "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
    )
    .await;
    create(
        registry,
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
               "metadata": {"name": "solo"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "solo"}},
                        "template": {"metadata": {"labels": {"app": "solo"}},
                                     "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    )
    .await;
    let rs = get(registry, &REPLICA_SET, "solo").await;
    eventually("adoption and one new pod", || async {
        let pods = list(registry, &POD).await;
        let live = live_pods(&pods, "solo");
        let adopted = live.iter().any(|pod| {
            text(pod, "/metadata/name") == "orphan"
                && pod["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
        });
        if live.len() == 2 && adopted {
            Ok(())
        } else {
            Err(format!("{live:?}"))
        }
    })
    .await;
    assert_eq!(orphan.name(), "orphan");
    // A pod relabelled out of the selector is released and replaced.
    edit(registry, &POD, "orphan", |pod| {
        pod["metadata"]["labels"]["app"] = json!("gone")
    })
    .await;
    eventually("release and replacement", || async {
        let pods = list(registry, &POD).await;
        let live = live_pods(&pods, "solo");
        let released = get(registry, &POD, "orphan").await;
        let free = released["metadata"].get("ownerReferences").is_none();
        if live.len() == 2 && free {
            Ok(())
        } else {
            Err(format!("{released}"))
        }
    })
    .await;
    let rs = eventually("the status", || async {
        let rs = get(registry, &REPLICA_SET, "solo").await;
        if int(&rs, "/status/replicas") == 2 {
            Ok(rs)
        } else {
            Err(rs.to_string())
        }
    })
    .await;
    assert_eq!(int(&rs, "/status/fullyLabeledReplicas"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_rollout_exceeds_its_progress_deadline() {
    let cluster = cluster().await;
    let registry = &cluster.registry;
    let mut value = deployment_json("stuck", 2, "nginx:1", rolling(json!(1), json!(0)));
    value["spec"]["progressDeadlineSeconds"] = json!(1);
    create(registry, value).await;
    // Nothing becomes ready: no progress after the pods appear.
    let d = eventually("the deadline to pass", || async {
        let d = get(registry, &DEPLOYMENT, "stuck").await;
        let progressing = condition(&d, "Progressing");
        if progressing["reason"] == json!("ProgressDeadlineExceeded") {
            Ok(d)
        } else {
            Err(d["status"].to_string())
        }
    })
    .await;
    let rs_name = replica_sets_of(&list(registry, &REPLICA_SET).await, "stuck")
        .into_keys()
        .next()
        .unwrap();
    let progressing = condition(&d, "Progressing");
    assert_eq!(progressing["status"], json!("False"));
    assert_eq!(
        progressing["message"],
        json!(format!(
            "ReplicaSet \"{rs_name}\" has timed out progressing."
        ))
    );
    assert_eq!(condition(&d, "Available")["status"], json!("False"));
    assert_eq!(
        condition(&d, "Available")["reason"],
        json!("MinimumReplicasUnavailable")
    );
    assert_eq!(int(&d, "/status/unavailableReplicas"), 2);
}
