//! Registry tests against a real single-member store.

use std::time::Duration;

use serde_json::json;
use skiff_api::codec::{FieldValidation, decode_object};
use skiff_api::kind::{DEPLOYMENT, NAMESPACE, POD};
use skiff_api::{Object, Selector};
use tempfile::TempDir;

use super::*;
use crate::store::Tuning;

async fn registry() -> (TempDir, Registry) {
    registry_keeping(Tuning::default().history_revisions).await
}

use crate::testing::registry_keeping;

fn object(value: serde_json::Value) -> Object {
    decode_object(value, FieldValidation::Strict)
        .unwrap()
        .object
}

fn pod(name: &str, labels: serde_json::Value) -> Object {
    object(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}),
    )
}

#[tokio::test]
async fn create_fills_server_metadata_and_defaults() {
    let (_dir, registry) = registry().await;
    let created = registry.create(object(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})), Some("default"), Writer::main("test")).await.unwrap();
    let metadata = created.metadata();
    let name = metadata.name.clone().unwrap();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    assert_eq!(metadata.namespace.as_deref(), Some("default"));
    assert_eq!(metadata.uid.as_ref().unwrap().len(), 36);
    assert!(metadata.creation_timestamp.is_some());
    assert_eq!(metadata.generation, Some(1));
    let rv = metadata.resource_version.clone().unwrap();
    assert_eq!(
        created.to_value()["spec"]["restartPolicy"],
        "Always",
        "defaults applied"
    );

    let fetched = registry.get(&POD, Some("default"), &name).await.unwrap();
    assert_eq!(fetched, created);
    assert_eq!(
        fetched.metadata().resource_version.as_deref(),
        Some(rv.as_str())
    );

    let again = registry
        .create(pod(&name, json!({})), Some("default"), Writer::main("test"))
        .await
        .unwrap_err();
    assert_eq!((again.code, again.reason), (409, "AlreadyExists"));
    let missing = registry
        .get(&POD, Some("default"), "nope")
        .await
        .unwrap_err();
    assert_eq!(
        (missing.code, missing.message.as_str()),
        (404, "pods \"nope\" not found")
    );
    let namespace = registry
        .create(
            object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})),
            Some("ignored"),
            Writer::main("test"),
        )
        .await
        .unwrap();
    assert_eq!(
        namespace.metadata().namespace,
        None,
        "cluster-scoped objects have no namespace"
    );
    assert!(registry.get(&NAMESPACE, None, "shop").await.is_ok());
}

#[tokio::test]
async fn invalid_objects_are_refused_with_causes() {
    let (_dir, registry) = registry().await;
    let error = registry.create(object(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad"}, "spec": {"containers": [{"name": "c"}]}})), Some("default"), Writer::main("test")).await.unwrap_err();
    assert_eq!((error.code, error.reason), (422, "Invalid"));
    let causes = error.details.unwrap().causes.unwrap();
    let fields: Vec<&str> = causes.iter().filter_map(|c| c.field.as_deref()).collect();
    assert_eq!(fields, ["metadata.name", "spec.containers[0].image"]);
    assert!(
        registry
            .list(&POD, Some("default"), &ListOptions::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing stored"
    );
}

#[tokio::test]
async fn list_filters_by_labels_and_fields_and_pages() {
    let (_dir, registry) = registry().await;
    for (idx, tier) in ["fe", "be", "fe", "fe", "be"].iter().enumerate() {
        registry
            .create(
                pod(&format!("p{idx}"), json!({"tier": tier})),
                Some("a"),
                Writer::main("test"),
            )
            .await
            .unwrap();
    }
    registry
        .create(
            pod("other", json!({"tier": "fe"})),
            Some("b"),
            Writer::main("test"),
        )
        .await
        .unwrap();
    let names = |page: &ListPage| {
        page.items
            .iter()
            .map(|o| o.name().to_owned())
            .collect::<Vec<_>>()
    };

    let all = registry
        .list(&POD, None, &ListOptions::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 6);
    assert!(all.continue_token.is_none());
    let fe = ListOptions {
        labels: Some(Selector::parse("tier=fe").unwrap()),
        ..Default::default()
    };
    assert_eq!(
        names(&registry.list(&POD, Some("a"), &fe).await.unwrap()),
        ["p0", "p2", "p3"]
    );
    let by_name = ListOptions {
        fields: vec![("metadata.name".into(), "p4".into(), true)],
        ..Default::default()
    };
    assert_eq!(
        names(&registry.list(&POD, None, &by_name).await.unwrap()),
        ["p4"]
    );
    let by_namespace = ListOptions {
        fields: vec![("metadata.namespace".into(), "a".into(), false)],
        ..Default::default()
    };
    assert_eq!(
        names(&registry.list(&POD, None, &by_namespace).await.unwrap()),
        ["other"]
    );

    // Pages of two with a label filter: p0 p2 | p3 (fe only).
    let mut options = ListOptions {
        labels: Some(Selector::parse("tier=fe").unwrap()),
        limit: 2,
        ..Default::default()
    };
    let first = registry.list(&POD, Some("a"), &options).await.unwrap();
    assert_eq!(names(&first), ["p0", "p2"]);
    options.continue_token = first.continue_token.clone();
    assert!(options.continue_token.is_some());
    let second = registry.list(&POD, Some("a"), &options).await.unwrap();
    assert_eq!(names(&second), ["p3"]);
    assert!(second.continue_token.is_none());
    options.continue_token = Some("!!".into());
    assert_eq!(
        registry
            .list(&POD, Some("a"), &options)
            .await
            .unwrap_err()
            .code,
        400
    );
}

#[tokio::test]
async fn updates_compare_and_swap_on_resource_version() {
    let (_dir, registry) = registry().await;
    let deployment = object(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}
    }));
    let created = registry
        .create(deployment, Some("default"), Writer::main("test"))
        .await
        .unwrap();
    let created_rv = created.metadata().resource_version.clone().unwrap();

    // A label change does not advance the generation; a spec change does.
    let mut relabelled = created.clone();
    relabelled.metadata_mut().labels = Some([("team".to_owned(), "shop".to_owned())].into());
    let relabelled = registry
        .update(relabelled, Some("default"), "web", Writer::main("test"))
        .await
        .unwrap();
    assert_eq!(relabelled.metadata().generation, Some(1));
    assert_eq!(
        relabelled.metadata().uid,
        created.metadata().uid,
        "uid is server-owned"
    );

    let mut scaled = relabelled.clone();
    let Object::Deployment(ref mut d) = scaled else {
        unreachable!()
    };
    d.spec.as_mut().unwrap().replicas = Some(3);
    let scaled = registry
        .update(scaled, Some("default"), "web", Writer::main("test"))
        .await
        .unwrap();
    assert_eq!(scaled.metadata().generation, Some(2));

    // Writing over a stale resourceVersion conflicts.
    let mut stale = created.clone();
    stale.metadata_mut().resource_version = Some(created_rv);
    let conflict = registry
        .update(stale, Some("default"), "web", Writer::main("test"))
        .await
        .unwrap_err();
    assert_eq!((conflict.code, conflict.reason), (409, "Conflict"));

    // Immutable fields are refused.
    let mut reselected = scaled.clone();
    let Object::Deployment(ref mut d) = reselected else {
        unreachable!()
    };
    d.spec.as_mut().unwrap().selector.match_labels =
        Some([("app".to_owned(), "db".to_owned())].into());
    d.spec
        .as_mut()
        .unwrap()
        .template
        .metadata
        .as_mut()
        .unwrap()
        .labels = Some([("app".to_owned(), "db".to_owned())].into());
    let invalid = registry
        .update(reselected, Some("default"), "web", Writer::main("test"))
        .await
        .unwrap_err();
    assert_eq!(invalid.code, 422, "{}", invalid.message);
    assert!(
        invalid.message.contains("spec.selector"),
        "{}",
        invalid.message
    );
    let current = registry
        .get(&DEPLOYMENT, Some("default"), "web")
        .await
        .unwrap();
    assert_eq!(current, scaled, "refused updates change nothing");
}

#[tokio::test]
async fn delete_honours_preconditions() {
    let (_dir, registry) = registry().await;
    let created = registry
        .create(pod("p", json!({})), Some("default"), Writer::main("test"))
        .await
        .unwrap();
    let uid = created.metadata().uid.clone().unwrap();
    let wrong_uid = registry
        .delete(
            &POD,
            Some("default"),
            "p",
            &DeleteOptions {
                uid: Some("other-uid".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(wrong_uid.code, 409);
    assert!(
        wrong_uid
            .message
            .contains("the UID in the precondition (other-uid) does not match"),
        "{}",
        wrong_uid.message
    );
    let wrong_rv = registry
        .delete(
            &POD,
            Some("default"),
            "p",
            &DeleteOptions {
                resource_version: Some("999".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(wrong_rv.code, 409);
    let deleted = registry
        .delete(
            &POD,
            Some("default"),
            "p",
            &DeleteOptions {
                uid: Some(uid.clone()),
                resource_version: created.metadata().resource_version.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let Deleted::Gone(deleted) = deleted else {
        panic!("an unscheduled pod goes at once: {deleted:?}")
    };
    assert_eq!(deleted.metadata().uid.as_deref(), Some(uid.as_str()));
    assert_eq!(
        registry
            .get(&POD, Some("default"), "p")
            .await
            .unwrap_err()
            .code,
        404
    );
    assert_eq!(
        registry
            .delete(&POD, Some("default"), "p", &DeleteOptions::default())
            .await
            .unwrap_err()
            .code,
        404
    );
}

#[test]
fn keys_follow_the_registry_layout() {
    assert_eq!(
        object_key(&POD, Some("default"), "web"),
        "/registry/core/pods/default/web"
    );
    assert_eq!(
        object_key(&DEPLOYMENT, Some("shop"), "web"),
        "/registry/apps/deployments/shop/web"
    );
    assert_eq!(
        object_key(&NAMESPACE, None, "shop"),
        "/registry/core/namespaces/shop"
    );
    assert_eq!(list_prefix(&POD, None), "/registry/core/pods/");
    assert_eq!(
        list_prefix(&NAMESPACE, Some("x")),
        "/registry/core/namespaces/"
    );
}

#[tokio::test]
async fn status_and_main_resource_writes_keep_to_their_part() {
    let (_dir, registry) = registry().await;
    let created = registry
        .create(pod("p", json!({})), Some("default"), Writer::main("test"))
        .await
        .unwrap();
    assert_eq!(
        created.to_value()["status"],
        json!({"phase": "Pending", "qosClass": "BestEffort"}),
        "a new pod's status is the server's"
    );
    // A main-resource write cannot change the status.
    let mut value = created.to_value();
    value["status"]["phase"] = json!("Running");
    value["metadata"]["labels"] = json!({"a": "b"});
    let updated = registry
        .update(
            object(value.clone()),
            Some("default"),
            "p",
            Writer::main("test"),
        )
        .await
        .unwrap();
    assert_eq!(updated.to_value()["status"]["phase"], "Pending");
    assert_eq!(updated.to_value()["metadata"]["labels"], json!({"a": "b"}));
    // A status write changes only the status.
    value["metadata"]["labels"] = json!({"a": "c"});
    value["metadata"]["resourceVersion"] = json!(null);
    let writer = Writer {
        manager: "kubelet",
        part: Part::Status,
        apply: false,
        dry_run: false,
    };
    let updated = registry
        .update(object(value), Some("default"), "p", writer)
        .await
        .unwrap();
    assert_eq!(updated.to_value()["status"]["phase"], "Running");
    assert_eq!(updated.to_value()["metadata"]["labels"], json!({"a": "b"}));
    // Writing the same object again stores nothing.
    let again = registry
        .update(updated.clone(), Some("default"), "p", writer)
        .await
        .unwrap();
    assert_eq!(
        again.metadata().resource_version,
        updated.metadata().resource_version
    );
}

#[tokio::test]
async fn bound_pods_and_finalizers_delete_gracefully() {
    let (_dir, registry) = registry().await;
    let mut bound = pod("bound", json!({}));
    let Object::Pod(ref mut p) = bound else {
        unreachable!()
    };
    p.spec.as_mut().unwrap().node_name = Some("n1".into());
    registry
        .create(bound, Some("default"), Writer::main("test"))
        .await
        .unwrap();
    let pending = registry
        .delete(&POD, Some("default"), "bound", &DeleteOptions::default())
        .await
        .unwrap();
    let Deleted::Pending(pending) = pending else {
        panic!("a pod on a node waits for its node: {pending:?}")
    };
    assert_eq!(pending.metadata().deletion_grace_period_seconds, Some(30));
    assert!(pending.metadata().deletion_timestamp.is_some());
    // The node confirms with a zero grace period.
    let gone = registry
        .delete(
            &POD,
            Some("default"),
            "bound",
            &DeleteOptions {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(gone, Deleted::Gone(_)), "{gone:?}");

    // An object with a finalizer stays until the finalizer is removed.
    let mut held = pod("held", json!({}));
    held.metadata_mut().finalizers = Some(vec!["example.com/hold".into()]);
    registry
        .create(held, Some("default"), Writer::main("test"))
        .await
        .unwrap();
    let pending = registry
        .delete(&POD, Some("default"), "held", &DeleteOptions::default())
        .await
        .unwrap();
    let Deleted::Pending(mut pending) = pending else {
        panic!("finalizers hold deletion")
    };
    pending.metadata_mut().finalizers = Some(vec!["example.com/other".into()]);
    let refused = registry
        .update(
            pending.clone(),
            Some("default"),
            "held",
            Writer::main("test"),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code, 422, "{}", refused.message);
    pending.metadata_mut().finalizers = None;
    registry
        .update(pending, Some("default"), "held", Writer::main("test"))
        .await
        .unwrap();
    assert_eq!(
        registry
            .get(&POD, Some("default"), "held")
            .await
            .unwrap_err()
            .code,
        404,
        "removing the last finalizer deletes"
    );
}

/// Reads watch lines until `count` events have arrived (or 5 s pass).
async fn events(watch: &mut Watch, count: usize) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen.len() < count {
        let chunk = tokio::time::timeout_at(deadline, watch.next_chunk())
            .await
            .unwrap_or_else(|_| panic!("only {seen:?} within 5 s"))
            .unwrap_or_else(|| panic!("the watch ended after {seen:?}"));
        for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let event: serde_json::Value = serde_json::from_slice(line).unwrap();
            let name = event["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            seen.push((event["type"].as_str().unwrap().to_owned(), name));
        }
    }
    seen
}

fn watch_params(resource_version: Option<u64>) -> WatchParams {
    WatchParams {
        resource_version,
        timeout: Duration::from_secs(30),
        bookmarks: false,
        send_initial_events: false,
        table: None,
    }
}

fn pair(event: &str, name: &str) -> (String, String) {
    (event.to_owned(), name.to_owned())
}

#[tokio::test]
async fn watch_sends_current_state_then_changes_in_order() {
    let (_dir, registry) = registry().await;
    let first = registry
        .create(pod("a", json!({})), Some("default"), Writer::main("test"))
        .await
        .unwrap();
    registry
        .create(pod("b", json!({})), Some("default"), Writer::main("test"))
        .await
        .unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut from_now = Watch::start(
        &registry,
        &POD,
        Some("default"),
        ListOptions::default(),
        watch_params(None),
        cancel.clone(),
    )
    .await
    .unwrap();
    let first_rv: u64 = first
        .metadata()
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    let mut from_first = Watch::start(
        &registry,
        &POD,
        Some("default"),
        ListOptions::default(),
        watch_params(Some(first_rv)),
        cancel.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        events(&mut from_now, 2).await,
        [pair("ADDED", "a"), pair("ADDED", "b")]
    );
    let mut relabelled = registry.get(&POD, Some("default"), "a").await.unwrap();
    relabelled.metadata_mut().labels = Some([("x".to_owned(), "y".to_owned())].into());
    registry
        .update(relabelled, Some("default"), "a", Writer::main("test"))
        .await
        .unwrap();
    registry
        .delete(&POD, Some("default"), "b", &DeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(
        events(&mut from_now, 2).await,
        [pair("MODIFIED", "a"), pair("DELETED", "b")]
    );
    assert_eq!(
        events(&mut from_first, 3).await,
        [
            pair("ADDED", "b"),
            pair("MODIFIED", "a"),
            pair("DELETED", "b")
        ],
        "a watch from a revision starts right after it"
    );
    cancel.cancel();
    assert!(
        from_now.next_chunk().await.is_none(),
        "shutdown ends watches"
    );
}

#[tokio::test]
async fn watch_selectors_turn_transitions_into_added_and_deleted() {
    let (_dir, registry) = registry().await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let options = ListOptions {
        labels: Some(Selector::parse("app=web").unwrap()),
        ..Default::default()
    };
    let mut params = watch_params(None);
    params.timeout = Duration::from_secs(3);
    let mut web = Watch::start(&registry, &POD, None, options, params, cancel)
        .await
        .unwrap();
    registry
        .create(
            pod("p", json!({"app": "db"})),
            Some("default"),
            Writer::main("test"),
        )
        .await
        .unwrap();
    for app in ["web", "db"] {
        let mut changed = registry.get(&POD, Some("default"), "p").await.unwrap();
        changed.metadata_mut().labels = Some([("app".to_owned(), app.to_owned())].into());
        registry
            .update(changed, Some("default"), "p", Writer::main("test"))
            .await
            .unwrap();
    }
    assert_eq!(
        events(&mut web, 2).await,
        [pair("ADDED", "p"), pair("DELETED", "p")],
        "the db pod is invisible until it matches, and leaves when it stops"
    );
    let started = std::time::Instant::now();
    assert!(
        web.next_chunk().await.is_none(),
        "timeoutSeconds ends the watch"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn watch_from_a_compacted_revision_is_a_410_error_event() {
    let (_dir, registry) = registry_keeping(3).await;
    for idx in 0..8 {
        registry
            .create(
                pod(&format!("p{idx}"), json!({})),
                Some("default"),
                Writer::main("test"),
            )
            .await
            .unwrap();
    }
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut old = Watch::start(
        &registry,
        &POD,
        None,
        ListOptions::default(),
        watch_params(Some(1)),
        cancel,
    )
    .await
    .unwrap();
    let chunk = old.next_chunk().await.unwrap();
    let event: serde_json::Value = serde_json::from_slice(&chunk).unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
    assert!(old.next_chunk().await.is_none(), "then the watch ends");
}

/// One HTTP/1.1 request with a JSON body to the API at `address`: the status code and
/// the JSON reply.
async fn http(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    http_as(address, method, path, "application/json", body).await
}

/// [`http`] with the body sent as `content_type`.
async fn http_as(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nUser-Agent: test/1\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, serde_json::from_str(body).unwrap())
}

/// The API served over `registry` on a free port, until the token is cancelled.
async fn api(registry: &Registry) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(serve(registry.clone(), listener, cancel.clone()));
    (address, cancel)
}

fn namespace_body(name: &str, finalizers: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
           "spec": {"finalizers": finalizers}})
}

fn pod_body(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "c", "image": "i:1"}]}})
}

/// Kubernetes' namespace lifecycle: `spec.finalizers: [kubernetes]` from creation,
/// deletion marks the namespace Terminating while a finalizer holds it, no new content
/// goes into it, and the `finalize` subresource lets it go.
#[tokio::test]
async fn namespaces_terminate_until_finalized() {
    let (_dir, registry) = registry().await;
    let (address, cancel) = api(&registry).await;
    let namespaces = "/api/v1/namespaces";

    let (code, created) = http(
        address,
        "POST",
        namespaces,
        Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(created["status"]["phase"], "Active");

    // The main resource cannot drop spec.finalizers (PUT, PATCH and apply alike).
    let mut changed = created.clone();
    changed["spec"]["finalizers"] = json!([]);
    changed["metadata"]["labels"] = json!({"team": "a"});
    let (code, updated) = http(address, "PUT", "/api/v1/namespaces/demo", Some(changed)).await;
    assert_eq!(code, 200, "{updated}");
    assert_eq!(updated["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(updated["metadata"]["labels"], json!({"team": "a"}));
    let (code, patched) = http_as(
        address,
        "PATCH",
        "/api/v1/namespaces/demo",
        "application/merge-patch+json",
        Some(json!({"spec": {"finalizers": null}})),
    )
    .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["spec"]["finalizers"], json!(["kubernetes"]));
    let (code, applied) = http_as(
        address,
        "PATCH",
        "/api/v1/namespaces/demo?fieldManager=applier&force=true",
        "application/apply-patch+yaml",
        Some(namespace_body("demo", json!([]))),
    )
    .await;
    assert_eq!(code, 200, "{applied}");
    assert_eq!(applied["spec"]["finalizers"], json!(["kubernetes"]));
    // Nor can a status write change the spec.
    let mut status = updated.clone();
    status["spec"]["finalizers"] = json!([]);
    status["metadata"]["resourceVersion"] = json!(null);
    let (code, written) = http(
        address,
        "PUT",
        "/api/v1/namespaces/demo/status",
        Some(status),
    )
    .await;
    assert_eq!(code, 200, "{written}");
    assert_eq!(written["spec"]["finalizers"], json!(["kubernetes"]));

    let (code, pod) = http(
        address,
        "POST",
        "/api/v1/namespaces/demo/pods",
        Some(pod_body("before")),
    )
    .await;
    assert_eq!(code, 201, "{pod}");

    // Deleting marks the namespace Terminating; it stays while finalizers hold it.
    let (code, deleted) = http(address, "DELETE", "/api/v1/namespaces/demo", None).await;
    assert_eq!(code, 200, "{deleted}");
    assert!(
        deleted["metadata"]["deletionTimestamp"].is_string(),
        "{deleted}"
    );
    assert_eq!(deleted["status"]["phase"], "Terminating");
    assert_eq!(deleted["spec"]["finalizers"], json!(["kubernetes"]));
    let (code, fetched) = http(address, "GET", "/api/v1/namespaces/demo", None).await;
    assert_eq!(code, 200, "{fetched}");
    assert_eq!(fetched["status"]["phase"], "Terminating");
    // Deleting again changes nothing.
    let (code, again) = http(address, "DELETE", "/api/v1/namespaces/demo", None).await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(
        again["metadata"]["resourceVersion"],
        fetched["metadata"]["resourceVersion"]
    );

    // No new content goes into it.
    let (code, refused) = http(
        address,
        "POST",
        "/api/v1/namespaces/demo/pods",
        Some(pod_body("after")),
    )
    .await;
    assert_eq!(code, 403, "{refused}");
    assert_eq!(refused["reason"], "Forbidden");
    assert_eq!(
        refused["message"],
        "pods \"after\" is forbidden: unable to create new content in namespace demo because it is being terminated"
    );
    assert_eq!(
        refused["details"]["causes"][0]["reason"],
        "NamespaceTerminating"
    );

    // finalize takes only spec.finalizers, with Kubernetes' finalizer name rules.
    let (code, invalid) = http(
        address,
        "PUT",
        "/api/v1/namespaces/demo/finalize",
        Some(namespace_body("demo", json!(["kubernetes", "nope"]))),
    )
    .await;
    assert_eq!(code, 422, "{invalid}");
    assert!(
        invalid["message"]
            .as_str()
            .unwrap()
            .contains("spec.finalizers[1]: Invalid value: \"nope\""),
        "{invalid}"
    );
    let (code, not_allowed) = http(address, "GET", "/api/v1/namespaces/demo/finalize", None).await;
    assert_eq!(code, 405, "{not_allowed}");
    let mut finalized = namespace_body("demo", json!([]));
    finalized["metadata"]["labels"] = json!({"team": "b"});
    let (code, last) = http(
        address,
        "PUT",
        "/api/v1/namespaces/demo/finalize",
        Some(finalized),
    )
    .await;
    assert_eq!(code, 200, "{last}");
    assert_eq!(last["metadata"]["labels"], json!({"team": "a"}));
    let (code, gone) = http(address, "GET", "/api/v1/namespaces/demo", None).await;
    assert_eq!(code, 404, "{gone}");

    // A namespace finalized before its deletion goes at once.
    let (code, _) = http(
        address,
        "POST",
        namespaces,
        Some(namespace_body("quick", json!([]))),
    )
    .await;
    assert_eq!(code, 201);
    let (code, finalized) = http(
        address,
        "PUT",
        "/api/v1/namespaces/quick/finalize",
        Some(namespace_body("quick", json!([]))),
    )
    .await;
    assert_eq!(code, 200, "{finalized}");
    assert_eq!(finalized["status"]["phase"], "Active", "not deleted yet");
    assert!(
        finalized["spec"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{finalized}"
    );
    let (code, deleted) = http(address, "DELETE", "/api/v1/namespaces/quick", None).await;
    assert_eq!(code, 200, "{deleted}");
    let (code, _) = http(address, "GET", "/api/v1/namespaces/quick", None).await;
    assert_eq!(code, 404);

    // The system namespaces stay.
    for name in ["default", "kube-system", "kube-public"] {
        let (code, _) = http(
            address,
            "POST",
            namespaces,
            Some(namespace_body(name, json!([]))),
        )
        .await;
        assert_eq!(code, 201);
        let path = format!("/api/v1/namespaces/{name}");
        let (code, refused) = http(address, "DELETE", &path, None).await;
        assert_eq!(code, 403, "{refused}");
        assert_eq!(refused["reason"], "Forbidden");
        assert_eq!(
            refused["message"],
            format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted")
        );
        let (code, kept) = http(address, "GET", &path, None).await;
        assert_eq!(code, 200);
        assert!(kept["metadata"]["deletionTimestamp"].is_null(), "{kept}");
    }
    cancel.cancel();
}

/// `metadata.finalizers` and `spec.finalizers` both hold a terminating namespace; a
/// main-resource write that removes the last of them deletes it.
#[tokio::test]
async fn both_finalizer_lists_hold_a_terminating_namespace() {
    let (_dir, registry) = registry().await;
    let mut namespace = object(namespace_body("team", json!([])));
    namespace.metadata_mut().finalizers = Some(vec!["example.com/hold".into()]);
    let created = registry
        .create(namespace, None, Writer::main("test"))
        .await
        .unwrap();
    assert_eq!(
        created.to_value()["spec"]["finalizers"],
        json!(["kubernetes"])
    );
    let Deleted::Pending(pending) = registry
        .delete(&NAMESPACE, None, "team", &DeleteOptions::default())
        .await
        .unwrap()
    else {
        panic!("finalizers hold a namespace")
    };
    assert_eq!(pending.to_value()["status"]["phase"], "Terminating");
    assert_eq!(
        pending.metadata().deletion_grace_period_seconds,
        None,
        "as Kubernetes' namespace storage"
    );
    // Without metadata.finalizers, spec.finalizers still hold it.
    registry
        .write(&NAMESPACE, None, "team", Writer::main("test"), |current| {
            let mut ns = current.unwrap().clone();
            ns.metadata_mut().resource_version = None;
            ns.metadata_mut().finalizers = None;
            Ok(ns)
        })
        .await
        .unwrap();
    let held = registry.get(&NAMESPACE, None, "team").await.unwrap();
    assert_eq!(held.to_value()["spec"]["finalizers"], json!(["kubernetes"]));
    // A dry-run finalize changes nothing; a real one deletes.
    let finalize = |dry_run| Writer {
        part: Part::Finalize,
        dry_run,
        ..Writer::main("test")
    };
    for dry_run in [true, false] {
        registry
            .update(
                object(namespace_body("team", json!([]))),
                None,
                "team",
                finalize(dry_run),
            )
            .await
            .unwrap();
        let found = registry.get(&NAMESPACE, None, "team").await;
        assert_eq!(found.is_ok(), dry_run, "{found:?}");
    }
}

mod allocation {
    //! Cluster IPs and node ports through the registry and the HTTP API: allocation,
    //! Kubernetes' errors, release on every deletion path, dry runs, races.

    use std::collections::HashSet;

    use serde_json::{Value, json};
    use skiff_api::kind::SERVICE;

    use super::{api, http, registry};
    use crate::apiserver::{DeleteOptions, Deleted, Registry, Writer};
    use crate::network::NetworkSettings;
    use crate::store::Consistency;
    use crate::testing::{object, registry_with_network};

    fn service(name: &str, spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
    }

    fn cluster_ip_spec(ip: Option<&str>) -> Value {
        let mut spec = json!({"selector": {"app": "web"}, "ports": [{"port": 80}]});
        if let Some(ip) = ip {
            spec["clusterIP"] = json!(ip);
        }
        spec
    }

    async fn try_create(
        registry: &Registry,
        value: Value,
    ) -> Result<Value, crate::apiserver::ApiError> {
        registry
            .create(object(value), Some("default"), Writer::main("test"))
            .await
            .map(|o| o.to_value())
    }

    /// The reservation keys under `/registry/ranges/<range>/`, as their last parts.
    async fn reserved(registry: &Registry, range: &str) -> Vec<String> {
        let prefix = format!("/registry/ranges/{range}/");
        let page = registry
            .store()
            .range(&prefix, None, 0, Consistency::Linearizable)
            .await
            .unwrap();
        page.kvs
            .into_iter()
            .map(|kv| kv.key.strip_prefix(&prefix).unwrap().to_owned())
            .collect()
    }

    async fn delete(registry: &Registry, name: &str) {
        registry
            .delete(&SERVICE, Some("default"), name, &DeleteOptions::default())
            .await
            .unwrap();
    }

    async fn set_spec(
        registry: &Registry,
        name: &str,
        change: impl Fn(&mut Value),
    ) -> Result<Value, crate::apiserver::ApiError> {
        registry
            .write(
                &SERVICE,
                Some("default"),
                name,
                Writer::main("test"),
                |current| {
                    let mut value = current.unwrap().to_value();
                    value["metadata"]["resourceVersion"] = Value::Null;
                    change(&mut value["spec"]);
                    Ok(skiff_api::Object::from_stored_value(&SERVICE, value).unwrap())
                },
            )
            .await
            .map(|w| w.object.to_value())
    }

    /// GETs `path` as `kubectl get` does: a `meta/v1 Table`.
    async fn get_table(address: std::net::SocketAddr, path: &str) -> (u16, Value) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nAccept: application/json;as=Table;v=v1;g=meta.k8s.io\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let response = String::from_utf8(response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let code = head.split(' ').nth(1).unwrap().parse().unwrap();
        (code, serde_json::from_str(body).unwrap())
    }

    fn small_ranges(service_cidr: &str, node_ports: &str) -> NetworkSettings {
        NetworkSettings {
            service_cidr: service_cidr.parse().unwrap(),
            node_port_range: node_ports.parse().unwrap(),
            ..NetworkSettings::default()
        }
    }

    #[tokio::test]
    async fn concurrent_creates_get_distinct_ips_outside_the_static_band() {
        let (_dir, registry) = registry().await;
        let mut creates = tokio::task::JoinSet::new();
        for idx in 0..100 {
            let registry = registry.clone();
            creates.spawn(async move {
                try_create(
                    &registry,
                    service(&format!("s{idx}"), cluster_ip_spec(None)),
                )
                .await
                .unwrap()
            });
        }
        let mut ips = HashSet::new();
        while let Some(created) = creates.join_next().await {
            let spec = created.unwrap()["spec"].clone();
            let ip: std::net::Ipv4Addr = spec["clusterIP"].as_str().unwrap().parse().unwrap();
            assert_eq!(spec["clusterIPs"], json!([ip.to_string()]));
            assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
            assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
            let octets = ip.octets();
            assert!(
                (96..112).contains(&octets[1]) && octets[0] == 10,
                "{ip} in 10.96.0.0/12"
            );
            assert!(
                !(octets[1] == 96 && octets[2] == 0),
                "{ip} is in the static band"
            );
            assert!(ips.insert(ip), "{ip} twice");
        }
        assert_eq!(ips.len(), 100);
        let keys: HashSet<String> = reserved(&registry, "serviceips")
            .await
            .into_iter()
            .collect();
        let allocated: HashSet<String> = ips.iter().map(ToString::to_string).collect();
        assert_eq!(keys, allocated, "one reservation per service, no more");
        // The allocated IP is what `kubectl get svc` shows.
        let (address, cancel) = api(&registry).await;
        let (code, table) = get_table(address, "/api/v1/namespaces/default/services/s7").await;
        assert_eq!(code, 200, "{table}");
        let stored = registry
            .get(&SERVICE, Some("default"), "s7")
            .await
            .unwrap()
            .to_value();
        assert_eq!(table["columnDefinitions"][2]["name"], "Cluster-IP");
        assert_eq!(table["rows"][0]["cells"][2], stored["spec"]["clusterIP"]);
        cancel.cancel();
    }

    #[tokio::test]
    async fn given_ips_must_be_free_and_in_range() {
        let (_dir, registry) = registry().await;
        let created = try_create(
            &registry,
            service("dns", cluster_ip_spec(Some("10.96.0.10"))),
        )
        .await
        .unwrap();
        assert_eq!(created["spec"]["clusterIPs"], json!(["10.96.0.10"]));
        let taken = try_create(
            &registry,
            service("other", cluster_ip_spec(Some("10.96.0.10"))),
        )
        .await
        .unwrap_err();
        assert_eq!(taken.code, 422);
        assert_eq!(
            taken.message,
            r#"Service "other" is invalid: spec.clusterIPs: Invalid value: ["10.96.0.10"]: failed to allocate IP 10.96.0.10: provided IP is already allocated"#
        );
        let cause = &taken.details.as_ref().unwrap().causes.as_ref().unwrap()[0];
        assert_eq!(cause.field.as_deref(), Some("spec.clusterIPs"));
        assert_eq!(cause.reason.as_deref(), Some("FieldValueInvalid"));
        for outside in ["10.200.0.1", "10.96.0.0", "10.111.255.255"] {
            let error = try_create(&registry, service("out", cluster_ip_spec(Some(outside))))
                .await
                .unwrap_err();
            assert_eq!(
                error.message,
                format!(
                    r#"Service "out" is invalid: spec.clusterIPs: Invalid value: ["{outside}"]: failed to allocate IP {outside}: provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"#
                ),
            );
        }
        assert!(
            registry
                .get(&SERVICE, Some("default"), "other")
                .await
                .is_err(),
            "nothing stored"
        );
        assert_eq!(
            reserved(&registry, "serviceips").await,
            ["10.96.0.10"],
            "failed creates leak nothing"
        );
        // Released with its service, the IP can be had again.
        delete(&registry, "dns").await;
        assert!(reserved(&registry, "serviceips").await.is_empty());
        try_create(
            &registry,
            service("other", cluster_ip_spec(Some("10.96.0.10"))),
        )
        .await
        .unwrap();
        // Headless services hold nothing.
        let headless = try_create(
            &registry,
            service(
                "db",
                json!({"clusterIP": "None", "selector": {"app": "db"}}),
            ),
        )
        .await
        .unwrap();
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
        assert_eq!(reserved(&registry, "serviceips").await, ["10.96.0.10"]);
        // The cluster IP is immutable, and a PUT without it keeps it.
        let kept = set_spec(&registry, "other", |spec| {
            spec.as_object_mut().unwrap().remove("clusterIP");
            spec.as_object_mut().unwrap().remove("clusterIPs");
        })
        .await
        .unwrap();
        assert_eq!(kept["spec"]["clusterIP"], "10.96.0.10");
        let changed = set_spec(&registry, "other", |spec| {
            spec["clusterIP"] = json!("10.96.0.11")
        })
        .await
        .unwrap_err();
        assert_eq!(changed.code, 422, "{}", changed.message);
        assert!(
            changed
                .message
                .contains("spec.clusterIP: Invalid value: \"10.96.0.11\": field is immutable"),
            "{}",
            changed.message
        );
    }

    #[tokio::test]
    async fn a_full_range_is_an_internal_error_until_an_ip_is_released() {
        let (_dir, registry) =
            registry_with_network(small_ranges("10.96.0.0/29", "30000-32767")).await;
        let mut ips = HashSet::new();
        for idx in 0..6 {
            let created = try_create(
                &registry,
                service(&format!("s{idx}"), cluster_ip_spec(None)),
            )
            .await
            .unwrap();
            ips.insert(created["spec"]["clusterIP"].as_str().unwrap().to_owned());
        }
        let all: HashSet<String> = (1..=6).map(|host| format!("10.96.0.{host}")).collect();
        assert_eq!(ips, all, "every host address, not the network or broadcast");
        let full = try_create(&registry, service("s6", cluster_ip_spec(None)))
            .await
            .unwrap_err();
        assert_eq!(
            (full.code, full.message.as_str()),
            (
                500,
                "Internal error occurred: failed to allocate a serviceIP: range is full"
            )
        );
        try_create(
            &registry,
            service(
                "headless",
                json!({"clusterIP": "None", "selector": {"app": "x"}}),
            ),
        )
        .await
        .unwrap();
        let freed = registry
            .get(&SERVICE, Some("default"), "s3")
            .await
            .unwrap()
            .to_value()["spec"]["clusterIP"]
            .clone();
        delete(&registry, "s3").await;
        let again = try_create(&registry, service("s6", cluster_ip_spec(None)))
            .await
            .unwrap();
        assert_eq!(
            again["spec"]["clusterIP"], freed,
            "the released IP is the free one"
        );
    }

    #[tokio::test]
    async fn node_ports_are_allocated_checked_and_released_with_the_type() {
        let (_dir, registry) = registry().await;
        let node_port = |name: &str, ports: Value| {
            service(
                name,
                json!({"type": "NodePort", "selector": {"app": "web"}, "ports": ports}),
            )
        };
        let created = try_create(
            &registry,
            node_port(
                "dns",
                json!([
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                    {"name": "dns-udp", "port": 53, "protocol": "UDP"},
                    {"name": "metrics", "port": 9153, "protocol": "TCP"},
                ]),
            ),
        )
        .await
        .unwrap();
        let ports = &created["spec"]["ports"];
        let tcp = ports[0]["nodePort"].as_i64().unwrap();
        assert!(
            (30086..=32767).contains(&tcp),
            "{tcp} outside the dynamic band"
        );
        assert_eq!(
            ports[1]["nodePort"].as_i64(),
            Some(tcp),
            "one number, one node port"
        );
        assert_ne!(ports[2]["nodePort"].as_i64(), Some(tcp));
        assert_eq!(reserved(&registry, "servicenodeports").await.len(), 2);

        try_create(
            &registry,
            node_port("web", json!([{"port": 80, "nodePort": 30080}])),
        )
        .await
        .unwrap();
        let taken = try_create(
            &registry,
            node_port(
                "web2",
                json!([{"name": "a", "port": 81}, {"name": "b", "port": 80, "nodePort": 30080}]),
            ),
        )
        .await
        .unwrap_err();
        assert_eq!(taken.code, 422);
        assert_eq!(
            taken.message,
            r#"Service "web2" is invalid: spec.ports[1].nodePort: Invalid value: 30080: provided port is already allocated"#
        );
        let outside = try_create(
            &registry,
            node_port("web3", json!([{"port": 80, "nodePort": 80}])),
        )
        .await
        .unwrap_err();
        assert_eq!(
            outside.message,
            r#"Service "web3" is invalid: spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"#
        );
        assert_eq!(
            reserved(&registry, "servicenodeports").await.len(),
            3,
            "failed creates leak nothing"
        );

        // ClusterIP → NodePort allocates; NodePort → ClusterIP releases.
        try_create(&registry, service("plain", cluster_ip_spec(None)))
            .await
            .unwrap();
        let promoted = set_spec(&registry, "plain", |spec| spec["type"] = json!("NodePort"))
            .await
            .unwrap();
        let plain_port = promoted["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
        assert!(
            reserved(&registry, "servicenodeports")
                .await
                .contains(&plain_port.to_string())
        );
        let demoted = set_spec(&registry, "plain", |spec| spec["type"] = json!("ClusterIP"))
            .await
            .unwrap();
        assert_eq!(demoted["spec"]["ports"][0].get("nodePort"), None);
        assert!(
            !reserved(&registry, "servicenodeports")
                .await
                .contains(&plain_port.to_string())
        );
        assert_eq!(
            demoted["spec"]["clusterIP"], promoted["spec"]["clusterIP"],
            "the IP stays"
        );

        // Released with the service, 30080 can be had again.
        delete(&registry, "web").await;
        try_create(
            &registry,
            node_port("web2", json!([{"port": 80, "nodePort": 30080}])),
        )
        .await
        .unwrap();

        // LoadBalancers get node ports too, unless they ask not to.
        let lb = try_create(&registry, service("lb", json!({"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]}))).await.unwrap();
        assert!(lb["spec"]["ports"][0]["nodePort"].as_i64().is_some());
        let bare = try_create(&registry, service("lb2", json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "selector": {"app": "web"}, "ports": [{"port": 80}]}))).await.unwrap();
        assert_eq!(bare["spec"]["ports"][0].get("nodePort"), None);
    }

    #[tokio::test]
    async fn a_full_node_port_range_is_an_internal_error() {
        let (_dir, registry) =
            registry_with_network(small_ranges("10.96.0.0/12", "30000-30001")).await;
        let spec = json!({"type": "NodePort", "selector": {"app": "web"}, "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]});
        let created = try_create(&registry, service("two", spec.clone()))
            .await
            .unwrap();
        let mut ports: Vec<i64> = created["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["nodePort"].as_i64().unwrap())
            .collect();
        ports.sort_unstable();
        assert_eq!(ports, [30000, 30001]);
        let full = try_create(&registry, service("three", spec))
            .await
            .unwrap_err();
        assert_eq!(
            (full.code, full.message.as_str()),
            (
                500,
                "Internal error occurred: failed to allocate a nodePort: range is full"
            )
        );
        assert_eq!(
            reserved(&registry, "serviceips").await.len(),
            1,
            "the failed create's IP was never reserved"
        );
    }

    #[tokio::test]
    async fn dry_runs_allocate_nothing_but_report_conflicts() {
        let (_dir, registry) = registry().await;
        let dry = Writer {
            dry_run: true,
            ..Writer::main("test")
        };
        let preview = registry
            .create(object(service("web", json!({"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]}))), Some("default"), dry)
            .await
            .unwrap()
            .to_value();
        assert!(
            preview["spec"]["clusterIP"]
                .as_str()
                .is_some_and(|ip| ip.starts_with("10."))
        );
        assert!(preview["spec"]["ports"][0]["nodePort"].as_i64().is_some());
        assert!(reserved(&registry, "serviceips").await.is_empty());
        assert!(reserved(&registry, "servicenodeports").await.is_empty());
        assert!(
            registry
                .get(&SERVICE, Some("default"), "web")
                .await
                .is_err()
        );

        try_create(
            &registry,
            service("dns", cluster_ip_spec(Some("10.96.0.10"))),
        )
        .await
        .unwrap();
        let conflict = registry
            .create(
                object(service("dns2", cluster_ip_spec(Some("10.96.0.10")))),
                Some("default"),
                dry,
            )
            .await
            .unwrap_err();
        assert_eq!(conflict.code, 422, "{}", conflict.message);
        // Over HTTP, as `kubectl create --dry-run=server` sends it.
        crate::testing::create(
            &registry,
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        )
        .await;
        let (address, cancel) = api(&registry).await;
        let (code, status) = http(
            address,
            "POST",
            "/api/v1/namespaces/default/services?dryRun=All",
            Some(service("dns3", cluster_ip_spec(Some("10.96.0.10")))),
        )
        .await;
        assert_eq!(code, 422, "{status}");
        assert_eq!(status["details"]["causes"][0]["field"], "spec.clusterIPs");
        assert_eq!(
            status["details"]["causes"][0]["message"],
            r#"Invalid value: ["10.96.0.10"]: failed to allocate IP 10.96.0.10: provided IP is already allocated"#
        );
        let (code, _) = http(
            address,
            "POST",
            "/api/v1/namespaces/default/services?dryRun=All",
            Some(service("ok", cluster_ip_spec(None))),
        )
        .await;
        assert_eq!(code, 201);
        assert_eq!(reserved(&registry, "serviceips").await, ["10.96.0.10"]);
        // A dry-run type change allocates nothing either.
        let before = reserved(&registry, "servicenodeports").await;
        registry
            .write(&SERVICE, Some("default"), "dns", dry, |current| {
                let mut value = current.unwrap().to_value();
                value["metadata"]["resourceVersion"] = Value::Null;
                value["spec"]["type"] = json!("NodePort");
                Ok(skiff_api::Object::from_stored_value(&SERVICE, value).unwrap())
            })
            .await
            .unwrap();
        assert_eq!(reserved(&registry, "servicenodeports").await, before);
        cancel.cancel();
    }

    #[tokio::test]
    async fn finalized_and_collected_services_release_what_they_hold() {
        let (_dir, registry) = registry().await;
        let mut held = service(
            "held",
            json!({"type": "NodePort", "clusterIP": "10.96.0.30", "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": 30030}]}),
        );
        held["metadata"]["finalizers"] = json!(["example.com/hold"]);
        try_create(&registry, held).await.unwrap();
        let pending = registry
            .delete(&SERVICE, Some("default"), "held", &DeleteOptions::default())
            .await
            .unwrap();
        assert!(matches!(pending, Deleted::Pending(_)));
        assert_eq!(
            reserved(&registry, "serviceips").await,
            ["10.96.0.30"],
            "held while finalizers hold it"
        );
        registry
            .write(
                &SERVICE,
                Some("default"),
                "held",
                Writer::main("test"),
                |current| {
                    let mut object = current.unwrap().clone();
                    object.metadata_mut().resource_version = None;
                    object.metadata_mut().finalizers = None;
                    Ok(object)
                },
            )
            .await
            .unwrap();
        assert!(
            registry
                .get(&SERVICE, Some("default"), "held")
                .await
                .is_err()
        );
        assert!(reserved(&registry, "serviceips").await.is_empty());
        assert!(reserved(&registry, "servicenodeports").await.is_empty());

        // deletecollection over HTTP (kubectl delete svc --all) releases each.
        for name in ["a", "b"] {
            try_create(&registry, service(name, cluster_ip_spec(None)))
                .await
                .unwrap();
        }
        let (address, cancel) = api(&registry).await;
        let (code, body) = http(
            address,
            "DELETE",
            "/api/v1/namespaces/default/services",
            None,
        )
        .await;
        assert_eq!(code, 200, "{body}");
        assert!(reserved(&registry, "serviceips").await.is_empty());
        cancel.cancel();
    }
}

/// Secrets as kube-apiserver serves them: `stringData` merged into `data`, the type
/// defaulted and selectable, immutability, no `/status`.
#[tokio::test]
async fn secrets_merge_string_data_and_guard_immutability() {
    let (_dir, registry) = registry().await;
    let (address, cancel) = api(&registry).await;
    http(
        address,
        "POST",
        "/api/v1/namespaces",
        Some(namespace_body("a", json!([]))),
    )
    .await;
    let base = "/api/v1/namespaces/a/secrets";
    let (code, created) = http(
        address,
        "POST",
        base,
        Some(
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                    "data": {"user": "b2xk", "keep": "eA=="}, "stringData": {"user": "admin"}}),
        ),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["type"], "Opaque");
    assert_eq!(created["data"], json!({"user": "YWRtaW4=", "keep": "eA=="}));
    assert!(created.get("stringData").is_none());

    let (code, bad) = http(
        address,
        "POST",
        base,
        Some(
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad"},
                    "type": "kubernetes.io/tls", "stringData": {"a/b": "x"}}),
        ),
    )
    .await;
    assert_eq!(code, 422, "{bad}");
    let causes: Vec<&str> = bad["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(causes, ["data[a/b]", "data[tls.crt]", "data[tls.key]"]);

    http(
        address,
        "POST",
        base,
        Some(
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "frozen"},
                    "type": "skiff.io/api-token", "immutable": true, "stringData": {"k": "v"}}),
        ),
    )
    .await;
    let (code, list) = http(
        address,
        "GET",
        &format!("{base}?fieldSelector=type%3DOpaque"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["metadata"]["name"], "db");

    let merge = "application/merge-patch+json";
    let (code, error) = http_as(
        address,
        "PATCH",
        &format!("{base}/frozen"),
        merge,
        Some(json!({"stringData": {"k": "w"}})),
    )
    .await;
    assert_eq!(code, 422, "{error}");
    assert_eq!(error["details"]["causes"][0]["field"], "data");
    let (code, error) = http_as(
        address,
        "PATCH",
        &format!("{base}/db"),
        merge,
        Some(json!({"type": "example.com/other"})),
    )
    .await;
    assert_eq!(code, 422, "{error}");
    assert_eq!(error["details"]["causes"][0]["field"], "type");
    let (code, patched) = http_as(
        address,
        "PATCH",
        &format!("{base}/db"),
        merge,
        Some(json!({"stringData": {"extra": "1"}})),
    )
    .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["data"]["extra"], "MQ==");
    assert!(patched.get("stringData").is_none());
    let (code, _) = http(address, "GET", &format!("{base}/db/status"), None).await;
    assert_eq!(code, 404);
    cancel.cancel();
}

/// Leases are served under coordination.k8s.io/v1, listed across namespaces and
/// validated.
#[tokio::test]
async fn leases_are_served_in_their_group() {
    let (_dir, registry) = registry().await;
    let (address, cancel) = api(&registry).await;
    http(
        address,
        "POST",
        "/api/v1/namespaces",
        Some(namespace_body("kube-system", json!([]))),
    )
    .await;
    let base = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";
    let lease = |duration: i64| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
               "spec": {"holderIdentity": "me", "leaseDurationSeconds": duration,
                        "renewTime": "2025-01-01T00:00:00.123456Z"}})
    };
    let (code, error) = http(address, "POST", base, Some(lease(0))).await;
    assert_eq!(code, 422, "{error}");
    assert_eq!(
        error["details"]["causes"][0]["field"],
        "spec.leaseDurationSeconds"
    );
    let (code, created) = http(address, "POST", base, Some(lease(15))).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["renewTime"], "2025-01-01T00:00:00.123456Z");
    let (code, list) = http(
        address,
        "GET",
        "/apis/coordination.k8s.io/v1/leases?fieldSelector=metadata.namespace%3Dkube-system",
        None,
    )
    .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["items"][0]["spec"]["holderIdentity"], "me");
    let (code, groups) = http(address, "GET", "/apis", None).await;
    assert_eq!(code, 200);
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "coordination.k8s.io")
    );
    cancel.cancel();
}
