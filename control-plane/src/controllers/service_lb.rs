//! ServiceLB, as k3s's: without a cloud load balancer, a `type: LoadBalancer` Service
//! is reachable on every node, so its `status.loadBalancer.ingress` lists the
//! InternalIP of every Ready node (in address order); a Service of another type has
//! its ingress cleared (after a type change). Node changes that move a node's
//! readiness or InternalIP requeue every LoadBalancer Service; heartbeats do not.
//! Writes go to `/status`, pinned to the resourceVersion the decision was made on,
//! and only when the ingress changes.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::LoadBalancerIngress;
use skiff_api::types::{Node, Service};
use skiff_api::{Object, kind};
use tokio_util::sync::CancellationToken;

use super::informer::{Change, key_of, split_key};
use super::{Informers, Reconciler, WorkQueue, run_workers};
use crate::apiserver::{ApiError, Part, Registry, Writer};

/// The field manager of the controller's writes.
const MANAGER: &str = "service-lb-controller";
/// How many services are worked on at once.
const WORKERS: usize = 2;

/// Starts the ServiceLB controller.
pub fn start(registry: &Registry, informers: &Informers, cancel: &CancellationToken) {
    let controller = Arc::new(ServiceLb {
        registry: registry.clone(),
        informers: informers.clone(),
        queue: WorkQueue::new(),
    });
    let subscriptions = [
        (Source::Service, informers.services.subscribe()),
        (Source::Node, informers.nodes.subscribe()),
    ];
    for (source, mut changes) in subscriptions {
        let controller = controller.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    change = changes.recv() => match change {
                        Some(change) => controller.observe(source, &change),
                        None => return,
                    },
                }
            }
        });
    }
    for service in informers.services.list() {
        controller.queue.add(key_of(&service));
    }
    let queue = controller.queue.clone();
    run_workers(controller, queue, WORKERS, cancel.clone());
}

/// Which informer a change came from.
#[derive(Clone, Copy, Debug)]
enum Source {
    Service,
    Node,
}

struct ServiceLb {
    registry: Registry,
    informers: Informers,
    queue: WorkQueue,
}

/// The address a node serves load-balanced traffic on: its InternalIP, when it is
/// Ready.
fn ingress_address(node: &Node) -> Option<Ipv4Addr> {
    let status = node.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return None;
    }
    status
        .addresses
        .iter()
        .flatten()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse().ok())
}

fn node_address(object: Option<&Arc<Object>>) -> Option<Ipv4Addr> {
    match object.map(AsRef::as_ref) {
        Some(Object::Node(node)) => ingress_address(node),
        _ => None,
    }
}

fn is_load_balancer(service: &Service) -> bool {
    service.spec.as_ref().and_then(|spec| spec.type_.as_deref()) == Some("LoadBalancer")
}

/// The ingress a service should have: every Ready node's InternalIP for a
/// LoadBalancer, nothing for the other types.
pub fn desired_ingress(service: &Service, nodes: &[Arc<Object>]) -> Vec<LoadBalancerIngress> {
    if !is_load_balancer(service) {
        return Vec::new();
    }
    let mut addresses: Vec<Ipv4Addr> = nodes.iter().filter_map(|n| node_address(Some(n))).collect();
    addresses.sort_unstable();
    addresses.dedup();
    addresses
        .into_iter()
        .map(|ip| LoadBalancerIngress {
            ip: Some(ip.to_string()),
            ..Default::default()
        })
        .collect()
}

fn current_ingress(service: &Service) -> &[LoadBalancerIngress] {
    service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default()
}

impl ServiceLb {
    fn observe(&self, source: Source, change: &Change) {
        match source {
            Source::Service => self.queue.add(key_of(change.object())),
            Source::Node => {
                if node_address(change.old.as_ref()) == node_address(change.new.as_ref()) {
                    return;
                }
                for service in self.informers.services.list() {
                    if matches!(service.as_ref(), Object::Service(s) if is_load_balancer(s)) {
                        self.queue.add(key_of(&service));
                    }
                }
            }
        }
    }

    async fn sync(&self, service: &Service, namespace: &str, name: &str) -> Result<(), ApiError> {
        if service.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let desired = desired_ingress(service, &self.informers.nodes.list());
        if current_ingress(service) == desired.as_slice() {
            return Ok(());
        }
        let decided_on = service.metadata.resource_version.clone();
        let writer = Writer {
            manager: MANAGER,
            part: Part::Status,
            apply: false,
            dry_run: false,
        };
        self.registry
            .write(&kind::SERVICE, Some(namespace), name, writer, |current| {
                let Some(Object::Service(current)) = current else {
                    return Err(ApiError::not_found(&kind::SERVICE, name));
                };
                let mut service = current.as_ref().clone();
                service.metadata.resource_version.clone_from(&decided_on);
                let load_balancer = service
                    .status
                    .get_or_insert_default()
                    .load_balancer
                    .get_or_insert_default();
                load_balancer.ingress = Some(desired.clone()).filter(|i| !i.is_empty());
                Ok(Object::from(service))
            })
            .await?;
        tracing::debug!(service = %format!("{namespace}/{name}"), ingress = desired.len(), "load balancer ingress updated");
        Ok(())
    }
}

impl Reconciler for ServiceLb {
    fn name(&self) -> &'static str {
        MANAGER
    }

    #[tracing::instrument(skip(self), fields(controller = MANAGER))]
    async fn reconcile(&self, service_key: &str) -> Result<Option<Duration>, ApiError> {
        let (Some(namespace), name) = split_key(service_key) else {
            return Ok(None);
        };
        if let Some(Object::Service(service)) = self.informers.services.get(service_key).as_deref()
        {
            self.sync(service, namespace, name).await?;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::apiserver::Writer;
    use crate::testing::{create, eventually, object, registry};

    fn node(name: &str, ip: &str, ready: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name},
            "status": {
                "addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}],
                "conditions": [{"type": "Ready", "status": ready}],
            },
        })
    }

    async fn set_ready(registry: &Registry, name: &str, ready: &str) {
        let writer = Writer {
            part: Part::Status,
            ..Writer::main("test")
        };
        registry
            .write(&kind::NODE, None, name, writer, |current| {
                let mut value = current.unwrap().to_value();
                value["metadata"]["resourceVersion"] = Value::Null;
                value["status"]["conditions"][0]["status"] = json!(ready);
                Ok(Object::from_stored_value(&kind::NODE, value).unwrap())
            })
            .await
            .unwrap();
    }

    async fn ingress(registry: &Registry, name: &str) -> Vec<String> {
        let service = registry
            .get(&kind::SERVICE, Some("default"), name)
            .await
            .unwrap()
            .to_value();
        service["status"]["loadBalancer"]["ingress"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|i| i["ip"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn wait_for_ingress(registry: &Registry, name: &str, expected: &[&str]) {
        let what = format!("ingress {expected:?} on {name}");
        eventually(&what, Duration::from_secs(10), || async {
            (ingress(registry, name).await == expected).then_some(())
        })
        .await;
    }

    #[test]
    fn only_ready_nodes_with_an_internal_ip_serve() {
        let lb: Service =
            serde_json::from_value(json!({"spec": {"type": "LoadBalancer"}})).unwrap();
        let plain: Service = serde_json::from_value(json!({"spec": {"type": "NodePort"}})).unwrap();
        let nodes: Vec<Arc<Object>> = [
            node("b", "10.0.0.2", "True"),
            node("a", "10.0.0.10", "True"),
            node("c", "10.0.0.3", "False"),
            node("d", "not-an-ip", "True"),
            node("e", "10.0.0.2", "True"),
        ]
        .into_iter()
        .map(|n| Arc::new(object(n)))
        .collect();
        let ips: Vec<String> = desired_ingress(&lb, &nodes)
            .into_iter()
            .map(|i| i.ip.unwrap())
            .collect();
        assert_eq!(
            ips,
            ["10.0.0.2", "10.0.0.10"],
            "address order, deduplicated"
        );
        assert!(desired_ingress(&plain, &nodes).is_empty());
    }

    #[tokio::test]
    async fn load_balancers_get_every_ready_node_and_lose_them_with_the_type() {
        let (_dir, registry) = registry().await;
        create(&registry, None, node("n1", "192.168.5.1", "True")).await;
        create(&registry, None, node("n2", "192.168.5.2", "False")).await;
        let cancel = CancellationToken::new();
        let informers = Informers::start(&registry, &cancel);
        informers.wait_synced().await;
        start(&registry, &informers, &cancel);

        create(
            &registry,
            Some("default"),
            json!({
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
                "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]}
            }),
        )
        .await;
        create(
            &registry,
            Some("default"),
            json!({
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "plain"},
                "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]}
            }),
        )
        .await;
        wait_for_ingress(&registry, "lb", &["192.168.5.1"]).await;

        // A node turning Ready joins; one turning NotReady leaves; a new node joins.
        set_ready(&registry, "n2", "True").await;
        wait_for_ingress(&registry, "lb", &["192.168.5.1", "192.168.5.2"]).await;
        set_ready(&registry, "n1", "False").await;
        wait_for_ingress(&registry, "lb", &["192.168.5.2"]).await;
        create(&registry, None, node("n3", "192.168.5.3", "True")).await;
        wait_for_ingress(&registry, "lb", &["192.168.5.2", "192.168.5.3"]).await;
        assert!(ingress(&registry, "plain").await.is_empty());

        // LoadBalancer → NodePort clears the ingress.
        registry
            .write(
                &kind::SERVICE,
                Some("default"),
                "lb",
                Writer::main("test"),
                |current| {
                    let mut value = current.unwrap().to_value();
                    value["metadata"]["resourceVersion"] = Value::Null;
                    value["spec"]["type"] = json!("NodePort");
                    Ok(Object::from_stored_value(&kind::SERVICE, value).unwrap())
                },
            )
            .await
            .unwrap();
        wait_for_ingress(&registry, "lb", &[]).await;
        let status = registry
            .get(&kind::SERVICE, Some("default"), "lb")
            .await
            .unwrap()
            .to_value()["status"]
            .clone();
        assert_eq!(status, json!({"loadBalancer": {}}));
        cancel.cancel();
    }
}
