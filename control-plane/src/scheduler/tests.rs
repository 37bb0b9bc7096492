//! The scheduler against a real one-member store: informers, decisions, bindings,
//! unschedulable reports and retries, end to end through the registry.

use std::future::Future;
use std::time::Duration;

use serde_json::{Value, json};
use skiff_api::codec::{FieldValidation, decode_object};
use skiff_api::kind::{EVENT, NODE, POD};

use super::*;
use crate::apiserver::ListOptions;

use crate::testing::registry;

fn object(value: Value) -> Object {
    decode_object(value, FieldValidation::Strict)
        .unwrap()
        .object
}

async fn create_node(registry: &Registry, name: &str, cpu: &str, labels: Value, cordoned: bool) {
    let node = object(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"unschedulable": cordoned},
        "status": {
            "capacity": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady", "message": "ok"}],
        },
    }));
    registry
        .create(node, None, Writer::main("test"))
        .await
        .unwrap();
}

async fn create_pod(registry: &Registry, name: &str, cpu: &str, node_selector: Value) {
    let pod = object(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": node_selector,
            "containers": [{"name": "c", "image": "i:1", "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}],
        },
    }));
    registry
        .create(pod, Some("default"), Writer::main("test"))
        .await
        .unwrap();
}

async fn pod_json(registry: &Registry, name: &str) -> Value {
    registry
        .get(&POD, Some("default"), name)
        .await
        .unwrap()
        .to_value()
}

/// Polls `check` until it returns `Some` (within 10 s).
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until pod `name` is bound and returns its node.
async fn bound_node(registry: &Registry, name: &str) -> String {
    eventually(&format!("{name} to be bound"), || async {
        pod_json(registry, name).await["spec"]["nodeName"]
            .as_str()
            .map(str::to_owned)
    })
    .await
}

fn condition(pod: &Value) -> Option<Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .cloned()
}

/// The (reason, message) of every event about pod `name`.
async fn events_of(registry: &Registry, name: &str) -> Vec<(String, String, String)> {
    let page = registry
        .list(&EVENT, Some("default"), &ListOptions::default())
        .await
        .unwrap();
    page.items
        .iter()
        .map(Object::to_value)
        .filter(|event| event["involvedObject"]["name"] == name)
        .map(|event| {
            let text = |field: &str| event[field].as_str().unwrap_or_default().to_owned();
            (text("type"), text("reason"), text("message"))
        })
        .collect()
}

#[tokio::test]
async fn pods_are_placed_reported_and_retried() {
    let (_dir, registry) = registry().await;
    let cancel = CancellationToken::new();
    create_node(&registry, "n1", "2", json!({}), false).await;
    create_node(&registry, "n2", "2", json!({"disk": "ssd"}), false).await;
    // Cordoned: the largest node, and yet it gets nothing.
    create_node(&registry, "cordoned", "64", json!({"disk": "ssd"}), true).await;
    let informers = Informers::start(&registry, &cancel);
    informers.wait_synced().await;
    start(&registry, &informers, &cancel);

    // Pods that fit are bound, marked scheduled, and reported.
    for idx in 0..4 {
        create_pod(&registry, &format!("small-{idx}"), "500m", json!({})).await;
    }
    let mut placed = Vec::new();
    for idx in 0..4 {
        let name = format!("small-{idx}");
        let node = bound_node(&registry, &name).await;
        assert!(node == "n1" || node == "n2", "{name} on {node}");
        placed.push(node);
    }
    // Least allocated spreads them: two on each node.
    assert_eq!(
        placed.iter().filter(|n| *n == "n1").count(),
        2,
        "{placed:?}"
    );
    let pod = pod_json(&registry, "small-0").await;
    let scheduled = condition(&pod).expect("a PodScheduled condition");
    assert_eq!(scheduled["status"], "True");
    assert!(scheduled["lastTransitionTime"].is_string());
    let node = &placed[0];
    let events = eventually("the Scheduled event", || async {
        let events = events_of(&registry, "small-0").await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(
        events,
        [(
            "Normal".to_owned(),
            "Scheduled".to_owned(),
            format!("Successfully assigned default/small-0 to {node}")
        )]
    );

    // Too big for every schedulable node: PodScheduled=False, Unschedulable.
    create_pod(&registry, "big", "3", json!({})).await;
    let expected = "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu.";
    let unschedulable = eventually("big to be unschedulable", || async {
        condition(&pod_json(&registry, "big").await).filter(|c| c["status"] == "False")
    })
    .await;
    assert_eq!(unschedulable["reason"], "Unschedulable");
    assert_eq!(unschedulable["message"], expected);
    let events = eventually("the FailedScheduling event", || async {
        let events = events_of(&registry, "big").await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(
        events,
        [(
            "Warning".to_owned(),
            "FailedScheduling".to_owned(),
            expected.to_owned()
        )]
    );

    // The node selector is honoured, including when nothing matches.
    create_pod(&registry, "ssd", "100m", json!({"disk": "ssd"})).await;
    assert_eq!(bound_node(&registry, "ssd").await, "n2");
    create_pod(&registry, "gpu", "100m", json!({"gpu": "yes"})).await;
    let unmatched = eventually("gpu to be unschedulable", || async {
        condition(&pod_json(&registry, "gpu").await).filter(|c| c["status"] == "False")
    })
    .await;
    assert_eq!(
        unmatched["message"],
        "0/3 nodes are available: 1 node(s) were unschedulable, 2 node(s) didn't match Pod's node affinity/selector."
    );

    // A node big enough arrives: the waiting pod is placed on it, without waiting for
    // the periodic retry.
    create_node(&registry, "big-node", "8", json!({}), false).await;
    let started = Instant::now();
    assert_eq!(bound_node(&registry, "big").await, "big-node");
    assert!(started.elapsed() < UNSCHEDULABLE_RETRY);
    let rescheduled = condition(&pod_json(&registry, "big").await).unwrap();
    assert_eq!(rescheduled["status"], "True");

    // Nothing went to the cordoned node.
    let Object::Node(cordoned) = registry.get(&NODE, None, "cordoned").await.unwrap() else {
        panic!("not a node");
    };
    assert_eq!(cordoned.spec.unwrap().unschedulable, Some(true));
    let page = registry
        .list(&POD, Some("default"), &ListOptions::default())
        .await
        .unwrap();
    for pod in page.items {
        let pod = pod.to_value();
        assert_ne!(
            pod["spec"]["nodeName"], "cordoned",
            "{}",
            pod["metadata"]["name"]
        );
    }
    cancel.cancel();
    registry.store().shutdown().await;
}

#[tokio::test]
async fn deleted_pods_free_their_resources() {
    let (_dir, registry) = registry().await;
    let cancel = CancellationToken::new();
    create_node(&registry, "only", "1", json!({}), false).await;
    let informers = Informers::start(&registry, &cancel);
    informers.wait_synced().await;
    start(&registry, &informers, &cancel);

    create_pod(&registry, "first", "800m", json!({})).await;
    assert_eq!(bound_node(&registry, "first").await, "only");
    create_pod(&registry, "second", "800m", json!({})).await;
    let waiting = eventually("second to be unschedulable", || async {
        condition(&pod_json(&registry, "second").await).filter(|c| c["status"] == "False")
    })
    .await;
    assert_eq!(
        waiting["message"],
        "0/1 nodes are available: 1 Insufficient cpu."
    );
    // A bound pod's deletion waits for its node; gone, it frees the CPU.
    registry
        .delete(
            &POD,
            Some("default"),
            "first",
            &crate::apiserver::DeleteOptions {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(bound_node(&registry, "second").await, "only");
    cancel.cancel();
    registry.store().shutdown().await;
}
