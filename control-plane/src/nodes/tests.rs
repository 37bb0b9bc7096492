//! Tests of the Node service against a real single-member store: through the trait
//! directly, and over TCP beside the REST API.

use std::time::Duration;

use serde_json::{Value, json};
use skiff_api::codec::{FieldValidation, decode_object};
use skiff_api::kind::{NODE, POD};
use skiff_proto::node::node_client::NodeClient;
use skiff_proto::node::node_server::Node as _;
use tempfile::TempDir;
use tokio_stream::StreamExt as _;
use tonic::{Code, Request};

use super::*;
use crate::apiserver::{Deleted, Writer};
use crate::store::Tuning;

use crate::testing::registry_keeping;

async fn service() -> (TempDir, Registry, NodeService) {
    let (dir, registry) = registry_keeping(Tuning::default().history_revisions).await;
    let service = NodeService::new(registry.clone(), CancellationToken::new());
    (dir, registry, service)
}

fn object(value: Value) -> Object {
    decode_object(value, FieldValidation::Strict)
        .unwrap()
        .object
}

/// A node as an agent describes itself.
fn node_json(name: &str, labels: Value, ready: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"providerID": format!("skiff://{name}")},
        "status": {
            "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "conditions": [{"type": "Ready", "status": ready, "reason": "AgentReady", "message": "ok"}],
            "nodeInfo": {"machineID": "m", "systemUUID": "s", "bootID": "b", "kernelVersion": "6", "osImage": "linux", "containerRuntimeVersion": "skiff://0.1", "kubeletVersion": "v1.32.0", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
        },
    }))
    .unwrap()
}

async fn register(service: &NodeService, json: Vec<u8>) -> Value {
    let reply = service
        .register(Request::new(RegisterRequest { node_json: json }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.heartbeat_interval_seconds, 10);
    serde_json::from_slice(&reply.node_json).unwrap()
}

async fn stored_node(registry: &Registry, name: &str) -> Value {
    registry.get(&NODE, None, name).await.unwrap().to_value()
}

fn pod(name: &str, node: Option<&str>) -> Object {
    let mut spec = json!({"containers": [{"name": "c", "image": "i:1"}]});
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    object(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}))
}

async fn create_pod(registry: &Registry, name: &str, node: Option<&str>) -> Object {
    registry
        .create(pod(name, node), Some("default"), Writer::main("test"))
        .await
        .unwrap()
}

/// Sets a pod's label through the registry (a change the node's watch sees).
async fn relabel(registry: &Registry, name: &str, value: &str) {
    registry
        .write(
            &POD,
            Some("default"),
            name,
            Writer::main("test"),
            |current| {
                let mut object = current.unwrap().clone();
                object.metadata_mut().resource_version = None;
                object
                    .metadata_mut()
                    .labels
                    .get_or_insert_default()
                    .insert("v".into(), value.into());
                Ok(object)
            },
        )
        .await
        .unwrap();
}

/// The next `count` events of a pod stream as `(type, pod name, resourceVersion)`.
async fn next_events<S>(stream: &mut S, count: usize) -> Vec<(EventType, String, String)>
where
    S: tokio_stream::Stream<Item = Result<ObjectEvent, Status>> + Unpin,
{
    let mut events = Vec::new();
    while events.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {events:?} within 5 s"))
            .unwrap_or_else(|| panic!("the stream ended after {events:?}"))
            .unwrap();
        let event_type = EventType::try_from(event.r#type).unwrap();
        if event_type == EventType::Bookmark {
            continue;
        }
        let name = if event.object_json.is_empty() {
            String::new()
        } else {
            let pod: Value = serde_json::from_slice(&event.object_json).unwrap();
            assert_eq!(
                pod["metadata"]["resourceVersion"], event.resource_version,
                "events carry the pod's version"
            );
            pod["metadata"]["name"].as_str().unwrap().to_owned()
        };
        events.push((event_type, name, event.resource_version));
    }
    events
}

fn kinds(events: &[(EventType, String, String)]) -> Vec<(EventType, &str)> {
    events.iter().map(|(t, n, _)| (*t, n.as_str())).collect()
}

#[tokio::test]
async fn register_creates_the_node_with_its_status() {
    let (_dir, registry, service) = service().await;
    let reply = register(&service, node_json("n1", json!({"zone": "a"}), "True")).await;
    assert_eq!(reply["metadata"]["name"], "n1");
    assert!(reply["metadata"]["uid"].is_string());
    let stored = stored_node(&registry, "n1").await;
    assert_eq!(stored, reply, "the reply is the stored node");
    assert_eq!(stored["metadata"]["labels"]["zone"], "a");
    assert_eq!(stored["spec"]["providerID"], "skiff://n1");
    assert_eq!(
        stored["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
        10250
    );
    assert_eq!(stored["status"]["capacity"]["cpu"], "2");
    let ready = &stored["status"]["conditions"][0];
    assert_eq!(
        (&ready["type"], &ready["status"]),
        (&json!("Ready"), &json!("True"))
    );
    assert!(ready["lastHeartbeatTime"].is_string());
    assert!(ready["lastTransitionTime"].is_string());

    let missing = service
        .register(Request::new(RegisterRequest {
            node_json: b"{\"kind\":\"Node\",\"metadata\":{}}".to_vec(),
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    let garbage = service
        .register(Request::new(RegisterRequest {
            node_json: b"not json".to_vec(),
        }))
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn registering_again_updates_the_node() {
    let (_dir, registry, service) = service().await;
    let first = register(
        &service,
        node_json("n1", json!({"zone": "a", "disk": "ssd"}), "True"),
    )
    .await;
    assert_eq!(
        first["spec"]["podCIDR"], "10.244.0.0/24",
        "the first subnet"
    );
    assert_eq!(first["spec"]["podCIDRs"], json!(["10.244.0.0/24"]));
    // The cluster assigned a pod CIDR and an admin adds a label; neither is the agent's.
    registry
        .write(&NODE, None, "n1", Writer::main("admin"), |current| {
            let mut object = current.unwrap().clone();
            object.metadata_mut().resource_version = None;
            object
                .metadata_mut()
                .labels
                .get_or_insert_default()
                .insert("team".into(), "infra".into());
            Ok(object)
        })
        .await
        .unwrap();
    let before = stored_node(&registry, "n1").await;
    // Put the stored transition time in the past, to see it kept.
    let past = "2020-01-01T00:00:00Z";
    registry
        .write(
            &NODE,
            None,
            "n1",
            Writer {
                manager: "test",
                part: Part::Status,
                apply: false,
                dry_run: false,
            },
            |current| {
                let mut value = current.unwrap().to_value();
                value["metadata"]["resourceVersion"] = Value::Null;
                value["status"]["conditions"][0]["lastTransitionTime"] = json!(past);
                Ok(Object::from_stored_value(&NODE, value).unwrap())
            },
        )
        .await
        .unwrap();

    let mut again: Value =
        serde_json::from_slice(&node_json("n1", json!({"zone": "b"}), "True")).unwrap();
    again["status"]["capacity"]["cpu"] = json!("4");
    let reply = register(&service, serde_json::to_vec(&again).unwrap()).await;
    assert_eq!(
        reply["metadata"]["uid"], before["metadata"]["uid"],
        "the same object"
    );
    assert_eq!(
        reply["metadata"]["labels"],
        json!({"zone": "b", "disk": "ssd", "team": "infra"}),
        "labels merge, the agent's win"
    );
    assert_eq!(
        reply["spec"]["podCIDR"], "10.244.0.0/24",
        "podCIDR kept on re-registration"
    );
    assert_eq!(reply["status"]["capacity"]["cpu"], "4", "status replaced");
    assert_eq!(
        reply["status"]["conditions"][0]["lastTransitionTime"], past,
        "an unchanged condition keeps its transition time"
    );
    assert_eq!(stored_node(&registry, "n1").await, reply);

    // A condition that changes status moves its transition time.
    let reply = register(&service, node_json("n1", json!({}), "False")).await;
    let ready = &reply["status"]["conditions"][0];
    assert_eq!(ready["status"], "False");
    assert_ne!(ready["lastTransitionTime"], past);
}

#[tokio::test]
async fn heartbeats_renew_conditions_and_keep_transition_times() {
    let (_dir, registry, service) = service().await;
    let missing = service
        .heartbeat(Request::new(HeartbeatRequest {
            node_name: "n1".into(),
            conditions_json: Vec::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    register(&service, node_json("n1", json!({}), "True")).await;
    let past = "2020-01-01T00:00:00Z";
    let set_past = |current: Option<&Object>| {
        let mut value = current.unwrap().to_value();
        value["metadata"]["resourceVersion"] = Value::Null;
        value["status"]["conditions"][0]["lastTransitionTime"] = json!(past);
        value["status"]["conditions"][0]["lastHeartbeatTime"] = json!(past);
        Ok(Object::from_stored_value(&NODE, value).unwrap())
    };
    let status_writer = Writer {
        manager: "test",
        part: Part::Status,
        apply: false,
        dry_run: false,
    };
    registry
        .write(&NODE, None, "n1", status_writer, set_past)
        .await
        .unwrap();

    // The same conditions: heartbeat renewed, transition kept.
    let conditions =
        json!([{"type": "Ready", "status": "True", "reason": "AgentReady", "message": "still ok"}]);
    service
        .heartbeat(Request::new(HeartbeatRequest {
            node_name: "n1".into(),
            conditions_json: serde_json::to_vec(&conditions).unwrap(),
        }))
        .await
        .unwrap();
    let stored = stored_node(&registry, "n1").await;
    let ready = &stored["status"]["conditions"][0];
    assert_eq!(ready["message"], "still ok");
    assert_eq!(ready["lastTransitionTime"], past);
    assert_ne!(ready["lastHeartbeatTime"], past);
    assert!(ready["lastHeartbeatTime"].as_str().unwrap() > past);
    assert_eq!(
        stored["status"]["capacity"]["cpu"], "2",
        "the rest of the status stays"
    );

    // No conditions: the stored ones are renewed.
    registry
        .write(&NODE, None, "n1", status_writer, set_past)
        .await
        .unwrap();
    service
        .heartbeat(Request::new(HeartbeatRequest {
            node_name: "n1".into(),
            conditions_json: Vec::new(),
        }))
        .await
        .unwrap();
    let ready = stored_node(&registry, "n1").await["status"]["conditions"][0].clone();
    assert_eq!(ready["lastTransitionTime"], past);
    assert_ne!(ready["lastHeartbeatTime"], past);

    // A changed status is a transition.
    let conditions = json!([{"type": "Ready", "status": "False", "reason": "Broken"}]);
    service
        .heartbeat(Request::new(HeartbeatRequest {
            node_name: "n1".into(),
            conditions_json: serde_json::to_vec(&conditions).unwrap(),
        }))
        .await
        .unwrap();
    let ready = stored_node(&registry, "n1").await["status"]["conditions"][0].clone();
    assert_eq!(ready["status"], "False");
    assert_ne!(ready["lastTransitionTime"], past);

    let garbage = service
        .heartbeat(Request::new(HeartbeatRequest {
            node_name: "n1".into(),
            conditions_json: b"{".to_vec(),
        }))
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn pod_watches_send_the_nodes_pods_then_synced_then_changes() {
    let (_dir, registry, service) = service().await;
    create_pod(&registry, "mine", Some("n1")).await;
    create_pod(&registry, "theirs", Some("n2")).await;
    create_pod(&registry, "unbound", None).await;
    let mut stream = service
        .watch_pods(Request::new(WatchPodsRequest {
            node_name: "n1".into(),
            resource_version: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let initial = next_events(&mut stream, 2).await;
    assert_eq!(
        kinds(&initial),
        [(EventType::Added, "mine"), (EventType::Synced, "")]
    );
    let synced_at = initial[1].2.clone();
    assert!(synced_at.parse::<u64>().unwrap() >= initial[0].2.parse::<u64>().unwrap());

    relabel(&registry, "theirs", "1").await;
    relabel(&registry, "mine", "1").await;
    // Binding a pod to the node adds it to the node's view.
    registry
        .write(
            &POD,
            Some("default"),
            "unbound",
            Writer {
                manager: "test",
                part: Part::Binding,
                apply: false,
                dry_run: false,
            },
            |current| {
                let Some(Object::Pod(pod)) = current else {
                    unreachable!()
                };
                let mut pod = pod.as_ref().clone();
                pod.spec.as_mut().unwrap().node_name = Some("n1".into());
                Ok(Object::from(pod))
            },
        )
        .await
        .unwrap();
    registry
        .delete(&POD, Some("default"), "mine", &DeleteOptions::default())
        .await
        .unwrap();
    let changes = next_events(&mut stream, 3).await;
    assert_eq!(
        kinds(&changes),
        [
            (EventType::Modified, "mine"),
            (EventType::Added, "unbound"),
            (EventType::Modified, "mine"),
        ],
        "a graceful deletion is a modification (deletionTimestamp)"
    );
    let pod: Value = serde_json::from_slice(
        &registry
            .get(&POD, Some("default"), "mine")
            .await
            .unwrap()
            .to_value()
            .to_string()
            .into_bytes(),
    )
    .unwrap();
    assert!(pod["metadata"]["deletionTimestamp"].is_string());

    // Resuming after the first change replays only what came after it.
    let mut resumed = service
        .watch_pods(Request::new(WatchPodsRequest {
            node_name: "n1".into(),
            resource_version: changes[0].2.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let replayed = next_events(&mut resumed, 2).await;
    assert_eq!(
        kinds(&replayed),
        [(EventType::Added, "unbound"), (EventType::Modified, "mine")]
    );
    assert_eq!(replayed, changes[1..]);

    let bad = service
        .watch_pods(Request::new(WatchPodsRequest {
            node_name: "n1".into(),
            resource_version: "abc".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn pod_watches_from_a_compacted_version_fail_out_of_range() {
    let (_dir, registry) = registry_keeping(3).await;
    let service = NodeService::new(registry.clone(), CancellationToken::new());
    for idx in 0..8 {
        create_pod(&registry, &format!("p{idx}"), Some("n1")).await;
    }
    let mut stream = service
        .watch_pods(Request::new(WatchPodsRequest {
            node_name: "n1".into(),
            resource_version: "1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap();
    let error = first.unwrap_err();
    assert_eq!(error.code(), Code::OutOfRange, "{error:?}");
    assert!(error.message().contains("too old"), "{error:?}");
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap();
    assert!(end.is_none(), "then the stream ends");
}

#[tokio::test]
async fn pod_watches_end_when_the_server_shuts_down() {
    let (_dir, registry) = registry_keeping(Tuning::default().history_revisions).await;
    let cancel = CancellationToken::new();
    let service = NodeService::new(registry.clone(), cancel.clone());
    let mut stream = service
        .watch_pods(Request::new(WatchPodsRequest {
            node_name: "n1".into(),
            resource_version: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        kinds(&next_events(&mut stream, 1).await),
        [(EventType::Synced, "")]
    );
    cancel.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap();
    assert!(end.is_none());
}

#[tokio::test]
async fn pod_status_reports_write_the_status_of_the_right_pod() {
    let (_dir, registry, service) = service().await;
    let created = create_pod(&registry, "web", Some("n1")).await;
    let uid = created.metadata().uid.clone().unwrap();
    let status = json!({"phase": "Running", "podIP": "10.244.1.5", "conditions": [{"type": "Ready", "status": "True"}]});
    let report = |uid: &str| PodStatusReport {
        namespace: "default".into(),
        name: "web".into(),
        uid: uid.into(),
        status_json: serde_json::to_vec(&status).unwrap(),
    };
    let wrong = service
        .report_pod_status(Request::new(report("another-uid")))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::FailedPrecondition, "{wrong:?}");
    assert_eq!(
        registry
            .get(&POD, Some("default"), "web")
            .await
            .unwrap()
            .to_value()["status"]["phase"],
        "Pending",
        "untouched"
    );

    let reply = service
        .report_pod_status(Request::new(report(&uid)))
        .await
        .unwrap()
        .into_inner();
    let stored = registry.get(&POD, Some("default"), "web").await.unwrap();
    assert_eq!(
        stored.metadata().resource_version.as_deref(),
        Some(reply.resource_version.as_str())
    );
    let value = stored.to_value();
    assert_eq!(value["status"]["phase"], "Running");
    assert_eq!(value["status"]["podIP"], "10.244.1.5");
    assert_eq!(value["spec"], created.to_value()["spec"], "only the status");

    let missing = service
        .report_pod_status(Request::new(PodStatusReport {
            name: "gone".into(),
            ..report(&uid)
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn finishing_a_deletion_removes_the_terminating_pod() {
    let (_dir, registry, service) = service().await;
    let created = create_pod(&registry, "web", Some("n1")).await;
    let uid = created.metadata().uid.clone().unwrap();
    let pending = registry
        .delete(&POD, Some("default"), "web", &DeleteOptions::default())
        .await
        .unwrap();
    assert!(matches!(pending, Deleted::Pending(_)), "{pending:?}");
    let pod_ref = |uid: &str| PodRef {
        namespace: "default".into(),
        name: "web".into(),
        uid: uid.into(),
    };
    service
        .finish_pod_deletion(Request::new(pod_ref(&uid)))
        .await
        .unwrap();
    let gone = registry
        .get(&POD, Some("default"), "web")
        .await
        .unwrap_err();
    assert_eq!(gone.code, 404);
    // Again: already gone is fine.
    service
        .finish_pod_deletion(Request::new(pod_ref(&uid)))
        .await
        .unwrap();

    // A pod recreated under the name is not the agent's to remove.
    create_pod(&registry, "web", Some("n1")).await;
    service
        .finish_pod_deletion(Request::new(pod_ref(&uid)))
        .await
        .unwrap();
    assert!(registry.get(&POD, Some("default"), "web").await.is_ok());

    // A terminating pod with a finalizer waits for it, then goes.
    let mut held = pod("held", Some("n1"));
    held.metadata_mut().finalizers = Some(vec!["example.com/hold".into()]);
    let held = registry
        .create(held, Some("default"), Writer::main("test"))
        .await
        .unwrap();
    let held_uid = held.metadata().uid.clone().unwrap();
    registry
        .delete(&POD, Some("default"), "held", &DeleteOptions::default())
        .await
        .unwrap();
    service
        .finish_pod_deletion(Request::new(PodRef {
            name: "held".into(),
            ..pod_ref(&held_uid)
        }))
        .await
        .unwrap();
    let waiting = registry.get(&POD, Some("default"), "held").await.unwrap();
    assert_eq!(waiting.metadata().deletion_grace_period_seconds, Some(0));
    registry
        .write(
            &POD,
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
    assert_eq!(
        registry
            .get(&POD, Some("default"), "held")
            .await
            .unwrap_err()
            .code,
        404
    );
}

#[test]
fn api_errors_map_to_grpc_codes() {
    let cases = [
        (ApiError::not_found(&POD, "x"), Code::NotFound),
        (ApiError::conflict(&POD, "x"), Code::Aborted),
        (ApiError::already_exists(&POD, "x"), Code::AlreadyExists),
        (ApiError::bad_request("bad"), Code::InvalidArgument),
        (ApiError::invalid(&POD, "x", &[]), Code::InvalidArgument),
        (ApiError::unavailable("no leader"), Code::Unavailable),
        (ApiError::timeout("unknown"), Code::Unavailable),
        (ApiError::gone("old"), Code::OutOfRange),
        (ApiError::internal("boom"), Code::Internal),
    ];
    for (error, code) in cases {
        let status = status_of(&error);
        assert_eq!(status.code(), code, "{error:?}");
        assert_eq!(status.message(), error.message);
    }
}

#[test]
fn watch_lines_become_object_events() {
    let added = object_event(br#"{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"a","resourceVersion":"7"}}}"#)
        .unwrap()
        .unwrap();
    assert_eq!(added.r#type, i32::from(EventType::Added));
    assert_eq!(added.resource_version, "7");
    let pod: Value = serde_json::from_slice(&added.object_json).unwrap();
    assert_eq!(pod["metadata"]["name"], "a");
    let synced = object_event(br#"{"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"9","annotations":{"k8s.io/initial-events-end":"true"}}}}"#)
        .unwrap()
        .unwrap();
    assert_eq!(synced.r#type, i32::from(EventType::Synced));
    assert_eq!(synced.resource_version, "9");
    assert!(synced.object_json.is_empty());
    let bookmark = object_event(
        br#"{"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"12"}}}"#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(bookmark.r#type, i32::from(EventType::Bookmark));
    let expired = object_event(
        br#"{"type":"ERROR","object":{"kind":"Status","code":410,"message":"too old resource version"}}"#,
    )
    .unwrap_err();
    assert_eq!(expired.code(), Code::OutOfRange);
    assert_eq!(expired.message(), "too old resource version");
}

/// gRPC and REST share the API listener: `content-type: application/grpc` goes to
/// tonic, everything else to the REST handlers.
#[tokio::test]
async fn the_node_service_is_served_beside_the_rest_api() {
    let (_dir, registry) = registry_keeping(Tuning::default().history_revisions).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let server = tokio::spawn(crate::apiserver::serve(
        registry.clone(),
        listener,
        cancel.clone(),
    ));

    let mut client = NodeClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let reply = client
        .register(RegisterRequest {
            node_json: node_json("n1", json!({}), "True"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.heartbeat_interval_seconds, 10);
    create_pod(&registry, "web", Some("n1")).await;
    let mut stream = client
        .watch_pods(WatchPodsRequest {
            node_name: "n1".into(),
            resource_version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let initial = next_events(&mut stream, 2).await;
    assert_eq!(
        kinds(&initial),
        [(EventType::Added, "web"), (EventType::Synced, "")]
    );
    // Errors travel as gRPC statuses (in the trailers).
    let missing = client
        .heartbeat(HeartbeatRequest {
            node_name: "nope".into(),
            conditions_json: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(missing.message(), "nodes \"nope\" not found");

    // REST on the same port.
    let body = http_get(address, "/api/v1/nodes/n1").await;
    assert!(body.contains("\"name\":\"n1\""), "{body}");

    // Shutting down ends the pod stream and the server.
    cancel.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap();
    assert!(end.as_ref().is_none_or(Result::is_err), "{end:?}");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
}

/// A plain HTTP/1.1 GET; the whole response as text.
pub(crate) async fn http_get(address: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// An agent that serves two log chunks and remembers what it was asked.
#[derive(Clone, Default)]
struct FakeAgent {
    asked: std::sync::Arc<std::sync::Mutex<Vec<skiff_proto::node::LogsRequest>>>,
}

#[tonic::async_trait]
impl skiff_proto::node::agent_server::Agent for FakeAgent {
    type LogsStream = ReceiverStream<Result<skiff_proto::node::LogChunk, Status>>;
    type ExecStream = ReceiverStream<Result<skiff_proto::node::ExecOutput, Status>>;

    async fn logs(
        &self,
        request: Request<skiff_proto::node::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let request = request.into_inner();
        self.asked.lock().unwrap().push(request.clone());
        if request.previous {
            return Err(Status::not_found(format!(
                "previous terminated container \"{}\" in pod \"web\" not found",
                request.container
            )));
        }
        let (sender, receiver) = mpsc::channel(4);
        for line in ["hello\n", "world\n"] {
            sender
                .send(Ok(skiff_proto::node::LogChunk {
                    data: line.as_bytes().to_vec(),
                }))
                .await
                .unwrap();
        }
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn exec(
        &self,
        _request: Request<tonic::Streaming<skiff_proto::node::ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        Err(Status::unimplemented("exec"))
    }
}

/// A registered node whose agent listens on `port` of 127.0.0.1.
async fn node_at(registry: &Registry, name: &str, port: u16) {
    let service = NodeService::new(registry.clone(), CancellationToken::new());
    let mut node: Value = serde_json::from_slice(&node_json(name, json!({}), "True")).unwrap();
    node["status"]["addresses"][0]["address"] = json!("127.0.0.1");
    node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] = json!(port);
    register(&service, serde_json::to_vec(&node).unwrap()).await;
}

/// `pods/{name}/log` is proxied to the agent of the pod's node and streamed back.
#[tokio::test]
async fn pod_logs_come_from_the_nodes_agent() {
    let (_dir, registry) = registry_keeping(Tuning::default().history_revisions).await;
    let agent = FakeAgent::default();
    let agent_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_port = agent_listener.local_addr().unwrap().port();
    let agent_cancel = CancellationToken::new();
    let agent_server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(skiff_proto::node::agent_server::AgentServer::new(
                agent.clone(),
            ))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(agent_listener),
                agent_cancel.clone().cancelled_owned(),
            ),
    );
    node_at(&registry, "n1", agent_port).await;
    // A node whose agent is not listening.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    node_at(&registry, "n2", closed_port).await;
    let web = create_pod(&registry, "web", Some("n1")).await;
    create_pod(&registry, "away", Some("n2")).await;
    create_pod(&registry, "unbound", None).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let server = tokio::spawn(crate::apiserver::serve(
        registry.clone(),
        listener,
        cancel.clone(),
    ));

    let response = http_get(
        address,
        "/api/v1/namespaces/default/pods/web/log?tailLines=5&timestamps=true",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{response}"
    );
    assert!(
        response.contains("hello\n") && response.contains("world\n"),
        "{response}"
    );
    let asked = agent.asked.lock().unwrap().last().cloned().unwrap();
    assert_eq!(asked.pod_uid, web.metadata().uid.clone().unwrap());
    assert_eq!(asked.container, "c", "the only container");
    assert_eq!((asked.tail_lines, asked.timestamps), (5, true));
    assert_eq!((asked.since_seconds, asked.limit_bytes), (0, 0));

    let previous = http_get(
        address,
        "/api/v1/namespaces/default/pods/web/log?previous=true",
    )
    .await;
    assert!(previous.starts_with("HTTP/1.1 400"), "{previous}");
    assert!(
        previous.contains("previous terminated container \\\"c\\\" in pod \\\"web\\\" not found"),
        "{previous}"
    );
    let wrong = http_get(
        address,
        "/api/v1/namespaces/default/pods/web/log?container=nope",
    )
    .await;
    assert!(wrong.starts_with("HTTP/1.1 400"), "{wrong}");
    assert!(
        wrong.contains("container nope is not valid for pod web"),
        "{wrong}"
    );
    let away = http_get(address, "/api/v1/namespaces/default/pods/away/log").await;
    assert!(away.starts_with("HTTP/1.1 503"), "{away}");
    assert!(
        away.contains("no connection to node n2 to read the logs of pod away"),
        "{away}"
    );
    let unbound = http_get(address, "/api/v1/namespaces/default/pods/unbound/log").await;
    assert!(unbound.starts_with("HTTP/1.1 400"), "{unbound}");
    assert!(
        unbound.contains("pod unbound does not have a host assigned"),
        "{unbound}"
    );

    cancel.cancel();
    agent_cancel.cancel();
    server.await.unwrap();
    agent_server.await.unwrap().unwrap();
}

/// The reply to a registration, whole.
async fn register_reply(service: &NodeService, name: &str) -> Result<RegisterReply, Status> {
    service
        .register(Request::new(RegisterRequest {
            node_json: node_json(name, json!({}), "True"),
        }))
        .await
        .map(Response::into_inner)
}

fn pod_cidr_of(reply: &RegisterReply) -> String {
    let node: Value = serde_json::from_slice(&reply.node_json).unwrap();
    node["spec"]["podCIDR"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn registration_tells_the_agent_the_cluster_network() {
    let (_dir, _registry, service) = service().await;
    let reply = register_reply(&service, "n1").await.unwrap();
    assert_eq!(reply.cluster_cidr, "10.244.0.0/16");
    assert_eq!(reply.service_cidr, "10.96.0.0/12");
    assert_eq!(reply.cluster_domain, "cluster.local");
    assert_eq!(reply.node_port_range, "30000-32767");
    assert_eq!(pod_cidr_of(&reply), "10.244.0.0/24");

    // Other settings flow through the registry to the reply.
    let network = crate::NetworkSettings::build(
        "172.16.0.0/20",
        26,
        "10.32.0.0/16",
        "31000-31999",
        "skiff.internal",
    )
    .unwrap();
    let (_dir, registry) = crate::testing::registry_with_network(network).await;
    let service = NodeService::new(registry, CancellationToken::new());
    let reply = register_reply(&service, "n1").await.unwrap();
    assert_eq!(
        (
            reply.cluster_cidr.as_str(),
            reply.service_cidr.as_str(),
            reply.cluster_domain.as_str(),
            reply.node_port_range.as_str()
        ),
        (
            "172.16.0.0/20",
            "10.32.0.0/16",
            "skiff.internal",
            "31000-31999"
        )
    );
    assert_eq!(pod_cidr_of(&reply), "172.16.0.0/26");
}

#[tokio::test]
async fn concurrent_registrations_get_distinct_pod_cidrs_kept_until_deletion() {
    let (_dir, registry, service) = service().await;
    let mut registrations = tokio::task::JoinSet::new();
    for idx in 0..12 {
        let service = service.clone();
        registrations.spawn(async move {
            let name = format!("n{idx}");
            let reply = register_reply(&service, &name).await.unwrap();
            (name, pod_cidr_of(&reply))
        });
    }
    let mut by_node = BTreeMap::new();
    while let Some(registered) = registrations.join_next().await {
        let (name, cidr) = registered.unwrap();
        by_node.insert(name, cidr);
    }
    let mut cidrs: Vec<&String> = by_node.values().collect();
    cidrs.sort();
    cidrs.dedup();
    assert_eq!(cidrs.len(), 12, "distinct: {by_node:?}");
    let expected: Vec<String> = (0..12).map(|i| format!("10.244.{i}.0/24")).collect();
    let mut got: Vec<String> = by_node.values().cloned().collect();
    got.sort_by_key(|c| c.split('.').nth(2).unwrap().parse::<u32>().unwrap());
    assert_eq!(got, expected, "the first free subnets, none skipped");

    // Re-registration (an agent restart) keeps the node's CIDR.
    let again = register_reply(&service, "n5").await.unwrap();
    assert_eq!(pod_cidr_of(&again), by_node["n5"]);
    assert_eq!(
        stored_node(&registry, "n5").await["spec"]["podCIDRs"],
        json!([by_node["n5"]])
    );
    // An admin cannot move it.
    let moved = registry
        .write(&NODE, None, "n5", Writer::main("admin"), |current| {
            let mut value = current.unwrap().to_value();
            value["metadata"]["resourceVersion"] = Value::Null;
            value["spec"]["podCIDR"] = json!("10.244.200.0/24");
            value["spec"]["podCIDRs"] = json!(["10.244.200.0/24"]);
            Ok(Object::from_stored_value(&NODE, value).unwrap())
        })
        .await
        .unwrap_err();
    assert_eq!(
        moved.message,
        r#"Node "n5" is invalid: spec.podCIDRs: Forbidden: node updates may not change podCIDR except from "" to valid"#
    );

    // Deleting the node frees its subnet for the next node.
    registry
        .delete(&NODE, None, "n5", &DeleteOptions::default())
        .await
        .unwrap();
    let next = register_reply(&service, "n12").await.unwrap();
    assert_eq!(pod_cidr_of(&next), by_node["n5"]);
    // A node created through the API gets one too; a given one that is taken is refused.
    let created = registry
        .create(
            object(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "manual"}})),
            None,
            Writer::main("kubectl"),
        )
        .await
        .unwrap();
    assert_eq!(created.to_value()["spec"]["podCIDR"], "10.244.12.0/24");
    let taken = registry
        .create(
            object(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "dup"}, "spec": {"podCIDR": "10.244.3.0/24"}})),
            None,
            Writer::main("kubectl"),
        )
        .await
        .unwrap_err();
    assert_eq!(
        taken.message,
        r#"Node "dup" is invalid: spec.podCIDR: Invalid value: "10.244.3.0/24": provided CIDR is already allocated to another node"#
    );
}

#[tokio::test]
async fn an_exhausted_cluster_cidr_fails_registration_until_a_node_goes() {
    let network = crate::NetworkSettings {
        cluster_cidr: "10.244.0.0/23".parse().unwrap(),
        ..crate::NetworkSettings::default()
    };
    let (_dir, registry) = crate::testing::registry_with_network(network).await;
    let service = NodeService::new(registry.clone(), CancellationToken::new());
    assert_eq!(
        pod_cidr_of(&register_reply(&service, "a").await.unwrap()),
        "10.244.0.0/24"
    );
    assert_eq!(
        pod_cidr_of(&register_reply(&service, "b").await.unwrap()),
        "10.244.1.0/24"
    );
    let full = register_reply(&service, "c").await.unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted);
    assert_eq!(
        full.message(),
        "no pod CIDR is free for node c: every /24 of the cluster CIDR 10.244.0.0/23 is allocated"
    );
    // As kube's node IPAM, the node exists without one; its retry after a node is
    // deleted gets the freed subnet.
    assert_eq!(
        stored_node(&registry, "c").await["spec"].get("podCIDR"),
        None
    );
    registry
        .delete(&NODE, None, "a", &DeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(
        pod_cidr_of(&register_reply(&service, "c").await.unwrap()),
        "10.244.0.0/24"
    );
}

/// The next `count` events of an object stream as `(type, name)`, bookmarks skipped.
async fn next_objects<S>(stream: &mut S, count: usize) -> Vec<(EventType, String)>
where
    S: tokio_stream::Stream<Item = Result<ObjectEvent, Status>> + Unpin,
{
    let mut events = Vec::new();
    while events.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {events:?} within 5 s"))
            .unwrap_or_else(|| panic!("the stream ended after {events:?}"))
            .unwrap();
        let event_type = EventType::try_from(event.r#type).unwrap();
        if event_type == EventType::Bookmark {
            continue;
        }
        let name = if event.object_json.is_empty() {
            String::new()
        } else {
            let object: Value = serde_json::from_slice(&event.object_json).unwrap();
            assert_eq!(
                object["metadata"]["resourceVersion"],
                event.resource_version
            );
            object["metadata"]["name"].as_str().unwrap().to_owned()
        };
        events.push((event_type, name));
    }
    events
}

#[tokio::test]
async fn object_watches_stream_services_and_refuse_other_resources() {
    let (_dir, registry, service) = service().await;
    let svc = |name: &str| {
        object(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}
        }))
    };
    for (namespace, name) in [("default", "web"), ("kube-system", "kube-dns")] {
        registry
            .create(svc(name), Some(namespace), Writer::main("test"))
            .await
            .unwrap();
    }
    let mut stream = service
        .watch_objects(Request::new(WatchObjectsRequest {
            resource: "services".into(),
            resource_version: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let initial = next_objects(&mut stream, 3).await;
    let mut added: Vec<&str> = initial[..2].iter().map(|(_, n)| n.as_str()).collect();
    added.sort_unstable();
    assert_eq!(added, ["kube-dns", "web"], "every namespace: {initial:?}");
    assert!(initial[..2].iter().all(|(t, _)| *t == EventType::Added));
    assert_eq!(initial[2], (EventType::Synced, String::new()));

    registry
        .create(svc("api"), Some("default"), Writer::main("test"))
        .await
        .unwrap();
    registry
        .write(
            &SERVICE,
            Some("default"),
            "web",
            Writer::main("test"),
            |current| {
                let mut value = current.unwrap().to_value();
                value["metadata"]["resourceVersion"] = Value::Null;
                value["spec"]["type"] = json!("NodePort");
                Ok(Object::from_stored_value(&SERVICE, value).unwrap())
            },
        )
        .await
        .unwrap();
    registry
        .delete(
            &SERVICE,
            Some("kube-system"),
            "kube-dns",
            &DeleteOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        next_objects(&mut stream, 3).await,
        [
            (EventType::Added, "api".to_owned()),
            (EventType::Modified, "web".to_owned()),
            (EventType::Deleted, "kube-dns".to_owned()),
        ]
    );

    // Resuming after a version sends only what came later.
    let resumed_from = registry.store().revision().to_string();
    registry
        .create(svc("late"), Some("default"), Writer::main("test"))
        .await
        .unwrap();
    let mut resumed = service
        .watch_objects(Request::new(WatchObjectsRequest {
            resource: "services".into(),
            resource_version: resumed_from,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next_objects(&mut resumed, 1).await,
        [(EventType::Added, "late".to_owned())]
    );

    for resource in ["pods", "secrets", ""] {
        let refused = service
            .watch_objects(Request::new(WatchObjectsRequest {
                resource: resource.into(),
                resource_version: String::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{resource}");
        assert!(
            refused.message().contains("cannot be watched by agents"),
            "{}",
            refused.message()
        );
    }
    let bad_version = service
        .watch_objects(Request::new(WatchObjectsRequest {
            resource: "endpoints".into(),
            resource_version: "abc".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_version.code(), Code::InvalidArgument);
}
