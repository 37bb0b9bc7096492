//! Registry tests against a real single-member store.

use std::time::Duration;

use serde_json::json;
use skiff_api::codec::{FieldValidation, decode_object};
use skiff_api::kind::{DEPLOYMENT, NAMESPACE, POD};
use skiff_api::{Object, Selector};
use tempfile::TempDir;

use super::*;
use crate::store::{Config, Store, Tuning};

async fn registry() -> (TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let tuning = Tuning {
        election_timeout_min: Duration::from_millis(150),
        election_timeout_max: Duration::from_millis(300),
        heartbeat_interval: Duration::from_millis(50),
        ..Tuning::default()
    };
    let store = Store::open(Config {
        data_dir: dir.path().to_owned(),
        listen_peer: "127.0.0.1:0".parse().unwrap(),
        advertise_peer: None,
        join: None,
        tuning,
    })
    .await
    .unwrap();
    (dir, Registry::new(store))
}

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
    let created = registry.create(object(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})), Some("default"), "test").await.unwrap();
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
        .create(pod(&name, json!({})), Some("default"), "test")
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
            "test",
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
    let error = registry.create(object(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad"}, "spec": {"containers": [{"name": "c"}]}})), Some("default"), "test").await.unwrap_err();
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
                "test",
            )
            .await
            .unwrap();
    }
    registry
        .create(pod("other", json!({"tier": "fe"})), Some("b"), "test")
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
        .create(deployment, Some("default"), "test")
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
        .create(pod("p", json!({})), Some("default"), "test")
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
        .create(pod("p", json!({})), Some("default"), "test")
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
        .create(bound, Some("default"), "test")
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
        .create(held, Some("default"), "test")
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
