//! The Endpoints controller, as kube-controller-manager's: for every Service with a
//! selector, an Endpoints object of the same name lists the pods the selector matches
//! that have an IP — ready pods in `addresses`, the others in `notReadyAddresses` —
//! with the service's ports resolved against each pod's container ports (`targetPort`
//! by number, or by name to the container port of that name and protocol). Pods that
//! resolve to the same ports share a subset, as kube's `RepackSubsets` groups them.
//!
//! A deleted Service's Endpoints are deleted; a Service without a selector (or of type
//! `ExternalName`) is left alone, its Endpoints being someone else's. Writes happen only
//! when the subsets or labels change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use skiff_api::meta::ObjectMeta;
use skiff_api::types::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, IntOrString, Pod, Service,
    ServicePort,
};
use skiff_api::{Object, kind};
use tokio_util::sync::CancellationToken;

use super::events::{EventType, Recorder};
use super::informer::{Change, key, key_of, split_key};
use super::{Informers, Reconciler, WorkQueue, run_workers};
use crate::apiserver::{ApiError, DeleteOptions, Registry, Writer, now_timestamp};

/// The field manager of the controller's writes.
const MANAGER: &str = "kube-controller-manager";
/// The component its events name.
const COMPONENT: &str = "endpoint-controller";
/// How many services are worked on at once.
const WORKERS: usize = 4;
/// The annotation with the time of the last change the endpoints reflect.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// The annotation of Endpoints used for leader election, which are no service's.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";
/// The label on the Endpoints of a headless service.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// Starts the Endpoints controller.
pub fn start(registry: &Registry, informers: &Informers, cancel: &CancellationToken) {
    let controller = Arc::new(EndpointsController {
        registry: registry.clone(),
        informers: informers.clone(),
        queue: WorkQueue::new(),
        recorder: Recorder::new(registry.clone(), COMPONENT),
    });
    let subscriptions = [
        (Source::Service, informers.services.subscribe()),
        (Source::Pod, informers.pods.subscribe()),
        (Source::Endpoints, informers.endpoints.subscribe()),
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
    // Leftovers: Endpoints whose service is gone are deleted (those of leader
    // election, marked by their annotation, are not Service endpoints).
    for endpoints in informers.endpoints.list() {
        let leader = endpoints
            .metadata()
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(LEADER_ANNOTATION));
        if !leader {
            controller.queue.add(key_of(&endpoints));
        }
    }
    let queue = controller.queue.clone();
    run_workers(controller, queue, WORKERS, cancel.clone());
}

/// Which informer a change came from.
#[derive(Clone, Copy, Debug)]
enum Source {
    Service,
    Pod,
    Endpoints,
}

struct EndpointsController {
    registry: Registry,
    informers: Informers,
    queue: WorkQueue,
    recorder: Recorder,
}

/// The selector of a service that selects pods (`None` without one, or when empty).
pub fn service_selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.selector.as_ref())
        .filter(|selector| !selector.is_empty())
}

/// Whether `selector` (a service's, all `key=value`) matches the pod's labels.
pub fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(key, value)| labels.and_then(|l| l.get(key)) == Some(value))
}

/// Whether the pod's `Ready` condition is `True`.
pub fn pod_is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|condition| condition.status == "True")
}

/// The pod's IP: `status.podIP`, else the first of `status.podIPs`.
fn pod_ip(pod: &Pod) -> Option<&str> {
    let status = pod.status.as_ref()?;
    status
        .pod_ip
        .as_deref()
        .filter(|ip| !ip.is_empty())
        .or_else(|| {
            status
                .pod_ips
                .iter()
                .flatten()
                .map(|ip| ip.ip.as_str())
                .find(|ip| !ip.is_empty())
        })
}

/// Whether the pod belongs in a service's endpoints at all (kube's
/// `ShouldPodBeInEndpoints`): not finished, with an IP, and not terminating unless
/// `include_terminating`.
fn should_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    let terminal = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
    if terminal || pod_ip(pod).is_none() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

fn protocol(protocol: Option<&str>) -> &str {
    protocol.unwrap_or("TCP")
}

/// The pod's port a service port sends to (kube's `FindPort`): a numeric `targetPort`
/// as is (`port` when unset), a named one as the container port with that name and the
/// service port's protocol (in app containers, then sidecar init containers).
pub fn find_port(pod: &Pod, service_port: &ServicePort) -> Option<i32> {
    match &service_port.target_port {
        None => Some(service_port.port),
        Some(IntOrString::Int(0)) => Some(service_port.port),
        Some(IntOrString::Int(port)) => Some(*port),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|container| container.ports.iter().flatten())
                .find(|port| {
                    port.name.as_deref() == Some(name.as_str())
                        && protocol(port.protocol.as_deref())
                            == protocol(service_port.protocol.as_deref())
                })
                .map(|port| port.container_port)
        }
    }
}

/// The endpoint address of a pod.
fn address(service: &Service, pod: &Pod, ip: &str) -> EndpointAddress {
    let spec = pod.spec.as_ref();
    let hostname = spec
        .and_then(|s| s.hostname.as_deref())
        .filter(|h| !h.is_empty())
        .filter(|_| {
            spec.and_then(|s| s.subdomain.as_deref()) == service.metadata.name.as_deref()
                && pod.metadata.namespace == service.metadata.namespace
        })
        .map(str::to_owned);
    EndpointAddress {
        hostname,
        ip: ip.to_owned(),
        node_name: spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".to_owned()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
    }
}

/// An endpoint port as an ordered key: (name, port, protocol, appProtocol); the port is
/// -1 for "no ports" (a headless service without ports).
type PortKey = (Option<String>, i32, String, Option<String>);
/// An address as an ordered key: (ip, target uid).
type AddressKey = (String, String);

fn port_key(port: &EndpointPort) -> PortKey {
    (
        port.name.clone(),
        port.port,
        protocol(port.protocol.as_deref()).to_owned(),
        port.app_protocol.clone(),
    )
}

fn address_key(address: &EndpointAddress) -> AddressKey {
    let uid = address
        .target_ref
        .as_ref()
        .and_then(|r| r.uid.clone())
        .unwrap_or_default();
    (address.ip.clone(), uid)
}

/// The subsets of a service's endpoints over `pods` (those its selector matches, in its
/// namespace), as kube's endpoints controller builds and repacks them: each address
/// with each port it offers, then addresses grouped by the set of ports they share,
/// sorted.
pub fn build_subsets(service: &Service, pods: &[&Pod]) -> Vec<EndpointSubset> {
    let spec = service.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let ports = spec.ports.unwrap_or_default();
    // Port → address → (address, ready); a ready entry wins over a not-ready one.
    let mut by_port: BTreeMap<PortKey, BTreeMap<AddressKey, (EndpointAddress, bool)>> =
        BTreeMap::new();
    let mut add = |port: PortKey, address: &EndpointAddress, ready: bool| {
        let entry = by_port
            .entry(port)
            .or_default()
            .entry(address_key(address))
            .or_insert_with(|| (address.clone(), ready));
        entry.1 |= ready;
    };
    for pod in pods {
        if !should_be_in_endpoints(pod, publish_not_ready) {
            continue;
        }
        let Some(ip) = pod_ip(pod) else { continue };
        let address = address(service, pod, ip);
        let ready = publish_not_ready || pod_is_ready(pod);
        if ports.is_empty() {
            if headless {
                add((None, -1, String::new(), None), &address, ready);
            }
            continue;
        }
        for service_port in &ports {
            let Some(number) = find_port(pod, service_port) else {
                continue;
            };
            let port = EndpointPort {
                name: service_port.name.clone().filter(|n| !n.is_empty()),
                port: number,
                protocol: Some(protocol(service_port.protocol.as_deref()).to_owned()),
                app_protocol: service_port.app_protocol.clone(),
            };
            add(port_key(&port), &address, ready);
        }
    }
    // Address sets → the ports they offer.
    type AddressSet = Vec<(AddressKey, bool)>;
    // (ready, not ready, ports) of each address set.
    type Group = (Vec<EndpointAddress>, Vec<EndpointAddress>, Vec<PortKey>);
    let mut by_addresses: BTreeMap<AddressSet, Group> = BTreeMap::new();
    for (port, addresses) in by_port {
        let set: AddressSet = addresses
            .iter()
            .map(|(key, (_, ready))| (key.clone(), *ready))
            .collect();
        let group = by_addresses.entry(set).or_insert_with(|| {
            let mut ready = Vec::new();
            let mut not_ready = Vec::new();
            for (address, is_ready) in addresses.into_values() {
                if is_ready {
                    ready.push(address);
                } else {
                    not_ready.push(address);
                }
            }
            (ready, not_ready, Vec::new())
        });
        if port.1 >= 0 {
            group.2.push(port);
        }
    }
    by_addresses
        .into_values()
        .map(|(ready, not_ready, ports)| EndpointSubset {
            addresses: Some(ready).filter(|a| !a.is_empty()),
            not_ready_addresses: Some(not_ready).filter(|a| !a.is_empty()),
            ports: Some(
                ports
                    .into_iter()
                    .map(|(name, port, protocol, app_protocol)| EndpointPort {
                        name,
                        port,
                        protocol: Some(protocol),
                        app_protocol,
                    })
                    .collect::<Vec<_>>(),
            )
            .filter(|p| !p.is_empty()),
        })
        .collect()
}

/// The labels of a service's Endpoints: the service's, plus the headless label.
fn endpoints_labels(service: &Service) -> Option<BTreeMap<String, String>> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    let headless = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    if headless {
        labels.insert(HEADLESS_LABEL.to_owned(), String::new());
    }
    Some(labels).filter(|l| !l.is_empty())
}

/// Whether the stored endpoints already say what `desired` says.
fn up_to_date(current: &Endpoints, desired: &Endpoints) -> bool {
    let subsets = |e: &Endpoints| e.subsets.clone().unwrap_or_default();
    let labels = |e: &Endpoints| e.metadata.labels.clone().unwrap_or_default();
    subsets(current) == subsets(desired) && labels(current) == labels(desired)
}

impl EndpointsController {
    /// Queues the services a change may affect.
    fn observe(&self, source: Source, change: &Change) {
        match source {
            Source::Service => self.queue.add(key_of(change.object())),
            // As kube: a deleted Endpoints object is recreated, a changed one of a
            // service in the cache is put right; one without a service is left to the
            // start-up check for leftovers (it may be created before its service).
            Source::Endpoints => {
                let key = key_of(change.object());
                if change.new.is_none() || self.informers.services.get(&key).is_some() {
                    self.queue.add(key);
                }
            }
            Source::Pod => {
                let namespace = change.object().namespace().unwrap_or_default();
                for service in self.informers.services.list_namespace(namespace) {
                    let Object::Service(service) = service.as_ref() else {
                        continue;
                    };
                    let Some(selector) = service_selector(service) else {
                        continue;
                    };
                    let matched = [&change.old, &change.new].into_iter().flatten().any(
                        |pod| matches!(pod.as_ref(), Object::Pod(pod) if selects(selector, pod)),
                    );
                    if matched {
                        self.queue.add(key(
                            service.metadata.namespace.as_deref(),
                            service.metadata.name.as_deref().unwrap_or_default(),
                        ));
                    }
                }
            }
        }
    }

    /// The service is gone: so are its endpoints (after a live check that it is gone
    /// and not just missing from the cache).
    async fn delete_endpoints(&self, namespace: &str, name: &str) -> Result<(), ApiError> {
        if self
            .informers
            .endpoints
            .get(&key(Some(namespace), name))
            .is_none()
        {
            return Ok(());
        }
        match self
            .registry
            .get(&kind::SERVICE, Some(namespace), name)
            .await
        {
            Ok(_) => return Ok(()),
            Err(error) if error.code == 404 => {}
            Err(error) => return Err(error),
        }
        match self
            .registry
            .delete(
                &kind::ENDPOINTS,
                Some(namespace),
                name,
                &DeleteOptions::default(),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if error.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn sync(&self, service: &Service, namespace: &str, name: &str) -> Result<(), ApiError> {
        let spec = service.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            return Ok(());
        }
        let Some(selector) = service_selector(service) else {
            return Ok(());
        };
        let pods: Vec<Arc<Object>> = self.informers.pods.list_namespace(namespace);
        let selected: Vec<&Pod> = pods
            .iter()
            .filter_map(|pod| match pod.as_ref() {
                Object::Pod(pod) if selects(selector, pod) => Some(pod.as_ref()),
                _ => None,
            })
            .collect();
        let mut desired = Object::from(Endpoints {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: endpoints_labels(service),
                ..ObjectMeta::default()
            },
            subsets: Some(build_subsets(service, &selected)).filter(|s| !s.is_empty()),
        });
        desired.apply_defaults();
        let Object::Endpoints(desired) = desired else {
            return Err(ApiError::internal("defaulting changed the kind"));
        };
        let cached = self.informers.endpoints.get(&key(Some(namespace), name));
        if let Some(Object::Endpoints(current)) = cached.as_deref()
            && up_to_date(current, &desired)
        {
            return Ok(());
        }
        let trigger_time = now_timestamp().to_string();
        if cached.is_none() {
            let mut new = desired.as_ref().clone();
            new.metadata
                .annotations
                .get_or_insert_default()
                .insert(LAST_CHANGE_TRIGGER_TIME.to_owned(), trigger_time.clone());
            match self
                .registry
                .create(Object::from(new), Some(namespace), Writer::main(MANAGER))
                .await
            {
                Ok(_) => return Ok(()),
                // Created meanwhile (or the cache lags): update it below.
                Err(error) if error.code == 409 => {}
                Err(error) => {
                    self.recorder.record(
                        &Object::from(service.clone()),
                        EventType::Warning,
                        "FailedToCreateEndpoint",
                        &format!(
                            "Failed to create endpoint for service {namespace}/{name}: {}",
                            error.message
                        ),
                    );
                    return Err(error);
                }
            }
        }
        let written = self
            .registry
            .write(
                &kind::ENDPOINTS,
                Some(namespace),
                name,
                Writer::main(MANAGER),
                |current| {
                    let Some(Object::Endpoints(current)) = current else {
                        return Err(ApiError::not_found(&kind::ENDPOINTS, name));
                    };
                    let mut updated = current.as_ref().clone();
                    if up_to_date(&updated, &desired) {
                        return Ok(Object::from(updated));
                    }
                    updated.metadata.resource_version = None;
                    updated.subsets.clone_from(&desired.subsets);
                    updated.metadata.labels.clone_from(&desired.metadata.labels);
                    updated
                        .metadata
                        .annotations
                        .get_or_insert_default()
                        .insert(LAST_CHANGE_TRIGGER_TIME.to_owned(), trigger_time.clone());
                    Ok(Object::from(updated))
                },
            )
            .await;
        match written {
            Ok(_) => Ok(()),
            Err(error) => {
                if error.code != 404 && error.code != 409 {
                    self.recorder.record(
                        &Object::from(service.clone()),
                        EventType::Warning,
                        "FailedToUpdateEndpoint",
                        &format!(
                            "Failed to update endpoint {namespace}/{name}: {}",
                            error.message
                        ),
                    );
                }
                Err(error)
            }
        }
    }
}

impl Reconciler for EndpointsController {
    fn name(&self) -> &'static str {
        "endpoint-controller"
    }

    async fn reconcile(&self, service_key: &str) -> Result<Option<Duration>, ApiError> {
        let (Some(namespace), name) = split_key(service_key) else {
            return Ok(None);
        };
        match self.informers.services.get(service_key).as_deref() {
            Some(Object::Service(service)) => self.sync(service, namespace, name).await?,
            _ => self.delete_endpoints(namespace, name).await?,
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use skiff_api::kind::{ENDPOINTS, POD};

    use super::*;
    use crate::apiserver::Part;
    use crate::testing::{create, eventually, object, registry};

    fn service(value: Value) -> Service {
        match object(value) {
            Object::Service(mut service) => {
                service.metadata.namespace = Some("default".into());
                let mut o = Object::from(*service);
                o.apply_defaults();
                match o {
                    Object::Service(service) => *service,
                    _ => unreachable!(),
                }
            }
            other => panic!("not a service: {other:?}"),
        }
    }

    fn pod_json(name: &str, ip: Option<&str>, ready: bool) -> Value {
        let mut status = json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
        });
        if let Some(ip) = ip {
            status["podIP"] = json!(ip);
        }
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {
                "nodeName": "n1",
                "containers": [{"name": "c", "image": "i:1", "ports": [
                    {"name": "http", "containerPort": 8080},
                    {"name": "metrics", "containerPort": 9090},
                ]}]
            },
            "status": status,
        })
    }

    fn pod(name: &str, ip: Option<&str>, ready: bool) -> Pod {
        let value = pod_json(name, ip, ready);
        serde_json::from_value(value).unwrap()
    }

    fn web_service() -> Service {
        service(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "labels": {"tier": "fe"}},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "admin", "port": 81, "targetPort": 7000},
            ]}
        }))
    }

    fn ips(addresses: Option<&Vec<EndpointAddress>>) -> Vec<&str> {
        addresses
            .into_iter()
            .flatten()
            .map(|a| a.ip.as_str())
            .collect()
    }

    #[test]
    fn ready_and_not_ready_pods_share_a_subset_with_resolved_ports() {
        let pods = [
            pod("b", Some("10.0.0.2"), true),
            pod("a", Some("10.0.0.1"), true),
            pod("c", Some("10.0.0.3"), false),
            pod("no-ip", None, true),
        ];
        let pods: Vec<&Pod> = pods.iter().collect();
        let subsets = build_subsets(&web_service(), &pods);
        assert_eq!(subsets.len(), 1, "{subsets:#?}");
        let subset = &subsets[0];
        assert_eq!(ips(subset.addresses.as_ref()), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(ips(subset.not_ready_addresses.as_ref()), ["10.0.0.3"]);
        let ports: Vec<(Option<&str>, i32)> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref(), p.port))
            .collect();
        assert_eq!(ports, [(Some("admin"), 7000), (Some("http"), 8080)]);
        let first = &subset.addresses.as_ref().unwrap()[0];
        assert_eq!(first.node_name.as_deref(), Some("n1"));
        let target = first.target_ref.as_ref().unwrap();
        assert_eq!(target.kind.as_deref(), Some("Pod"));
        assert_eq!(target.name.as_deref(), Some("a"));
        assert_eq!(target.uid.as_deref(), Some("uid-a"));
    }

    #[test]
    fn pods_resolving_a_named_port_differently_get_their_own_subsets() {
        let mut other = pod_json("other", Some("10.0.0.9"), true);
        other["spec"]["containers"][0]["ports"] = json!([{"name": "http", "containerPort": 3000}]);
        let other: Pod = serde_json::from_value(other).unwrap();
        let same = pod("same", Some("10.0.0.1"), true);
        let service = service(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
        }));
        let subsets = build_subsets(&service, &[&same, &other]);
        assert_eq!(subsets.len(), 2, "{subsets:#?}");
        let mut found: Vec<(Vec<&str>, i32)> = subsets
            .iter()
            .map(|s| (ips(s.addresses.as_ref()), s.ports.as_ref().unwrap()[0].port))
            .collect();
        found.sort();
        assert_eq!(found, [(vec!["10.0.0.1"], 8080), (vec!["10.0.0.9"], 3000)]);
        // A pod without the named port is not an endpoint of that port.
        let mut unnamed = pod_json("unnamed", Some("10.0.0.5"), true);
        unnamed["spec"]["containers"][0]["ports"] = json!([]);
        let unnamed: Pod = serde_json::from_value(unnamed).unwrap();
        assert!(build_subsets(&service, &[&unnamed]).is_empty());
    }

    #[test]
    fn terminating_and_finished_pods_are_left_out_unless_published() {
        let mut terminating = pod_json("t", Some("10.0.0.1"), true);
        terminating["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        let terminating: Pod = serde_json::from_value(terminating).unwrap();
        let mut done = pod_json("d", Some("10.0.0.2"), false);
        done["status"]["phase"] = json!("Succeeded");
        let done: Pod = serde_json::from_value(done).unwrap();
        assert!(build_subsets(&web_service(), &[&terminating, &done]).is_empty());
        let mut published = web_service();
        published.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let not_ready = pod("n", Some("10.0.0.3"), false);
        let subsets = build_subsets(&published, &[&terminating, &not_ready]);
        assert_eq!(ips(subsets[0].addresses.as_ref()), ["10.0.0.1", "10.0.0.3"]);
        assert!(subsets[0].not_ready_addresses.is_none());
    }

    #[test]
    fn headless_services_without_ports_list_addresses() {
        let headless = service(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "selector": {"app": "web"}}
        }));
        let a = pod("a", Some("10.0.0.1"), true);
        let subsets = build_subsets(&headless, &[&a]);
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(subsets[0].addresses.as_ref()), ["10.0.0.1"]);
        assert!(subsets[0].ports.is_none());
        assert_eq!(
            endpoints_labels(&headless)
                .unwrap()
                .get(HEADLESS_LABEL)
                .map(String::as_str),
            Some("")
        );
    }

    /// Writes a pod's IP and readiness through `/status`.
    async fn set_status(registry: &Registry, name: &str, ip: &str, ready: bool) {
        let writer = Writer {
            part: Part::Status,
            ..Writer::main("test")
        };
        registry
            .write(&POD, Some("default"), name, writer, |current| {
                let Some(Object::Pod(pod)) = current else {
                    panic!("no pod")
                };
                let mut pod = pod.as_ref().clone();
                pod.metadata.resource_version = None;
                let status = pod.status.get_or_insert_default();
                status.phase = Some("Running".into());
                status.pod_ip = Some(ip.into());
                status.conditions = Some(vec![k8s_openapi::api::core::v1::PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]);
                Ok(Object::from(pod))
            })
            .await
            .unwrap();
    }

    async fn endpoints(registry: &Registry) -> Option<Endpoints> {
        match registry
            .get(&ENDPOINTS, Some("default"), "web")
            .await
            .ok()?
        {
            Object::Endpoints(endpoints) => Some(*endpoints),
            _ => None,
        }
    }

    #[tokio::test]
    async fn endpoints_follow_services_and_pods() {
        let (_dir, registry) = registry().await;
        let cancel = CancellationToken::new();
        let informers = Informers::start(&registry, &cancel);
        informers.wait_synced().await;
        start(&registry, &informers, &cancel);

        for name in ["a", "b"] {
            let mut pod = pod_json(name, None, false);
            pod["metadata"].as_object_mut().unwrap().remove("uid");
            pod.as_object_mut().unwrap().remove("status");
            create(&registry, Some("default"), pod).await;
        }
        create(
            &registry,
            Some("default"),
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "labels": {"tier": "fe"}},
                "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
            }),
        )
        .await;
        // Without IPs: an Endpoints object without subsets.
        let empty = eventually("empty endpoints", Duration::from_secs(10), || {
            endpoints(&registry)
        })
        .await;
        assert!(empty.subsets.is_none(), "{empty:?}");
        assert_eq!(
            empty
                .metadata
                .labels
                .unwrap()
                .get("tier")
                .map(String::as_str),
            Some("fe")
        );

        set_status(&registry, "a", "10.1.0.1", true).await;
        set_status(&registry, "b", "10.1.0.2", false).await;
        let filled = eventually("addresses", Duration::from_secs(10), || async {
            let endpoints = endpoints(&registry).await?;
            let subset = endpoints.subsets.as_ref()?.first()?.clone();
            (ips(subset.addresses.as_ref()) == ["10.1.0.1"]
                && ips(subset.not_ready_addresses.as_ref()) == ["10.1.0.2"])
            .then_some(subset)
        })
        .await;
        let port = &filled.ports.unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));

        // Unready: moves to notReadyAddresses.
        set_status(&registry, "a", "10.1.0.1", false).await;
        eventually("a not ready", Duration::from_secs(10), || async {
            let endpoints = endpoints(&registry).await?;
            let subset = endpoints.subsets.as_ref()?.first()?.clone();
            (subset.addresses.is_none()
                && ips(subset.not_ready_addresses.as_ref()) == ["10.1.0.1", "10.1.0.2"])
            .then_some(())
        })
        .await;

        // No write when nothing changed.
        let before = endpoints(&registry)
            .await
            .unwrap()
            .metadata
            .resource_version;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = endpoints(&registry)
            .await
            .unwrap()
            .metadata
            .resource_version;
        assert_eq!(before, after);

        registry
            .delete(
                &kind::SERVICE,
                Some("default"),
                "web",
                &DeleteOptions::default(),
            )
            .await
            .unwrap();
        eventually("endpoints deleted", Duration::from_secs(10), || async {
            endpoints(&registry).await.is_none().then_some(())
        })
        .await;
        cancel.cancel();
    }

    #[tokio::test]
    async fn leftover_endpoints_go_at_start_but_not_while_running() {
        let (_dir, registry) = registry().await;
        let manual = |name: &str| {
            json!({
                "apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": name},
                "subsets": [{"addresses": [{"ip": "192.168.1.1"}], "ports": [{"port": 80}]}]
            })
        };
        create(&registry, Some("default"), manual("leftover")).await;
        let cancel = CancellationToken::new();
        let informers = Informers::start(&registry, &cancel);
        informers.wait_synced().await;
        start(&registry, &informers, &cancel);
        eventually("the leftover deleted", Duration::from_secs(10), || async {
            let gone = registry
                .get(&ENDPOINTS, Some("default"), "leftover")
                .await
                .is_err_and(|e| e.code == 404);
            gone.then_some(())
        })
        .await;
        // Created before its service (as `kubectl apply` may): kept.
        create(&registry, Some("default"), manual("early")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        registry
            .get(&ENDPOINTS, Some("default"), "early")
            .await
            .unwrap();
        cancel.cancel();
    }

    #[tokio::test]
    async fn services_without_selectors_keep_their_endpoints() {
        let (_dir, registry) = registry().await;
        let cancel = CancellationToken::new();
        let informers = Informers::start(&registry, &cancel);
        informers.wait_synced().await;
        start(&registry, &informers, &cancel);
        create(
            &registry,
            Some("default"),
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {"ports": [{"port": 80}]}
            }),
        )
        .await;
        create(
            &registry,
            Some("default"),
            json!({
                "apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": "web"},
                "subsets": [{"addresses": [{"ip": "192.168.1.1"}], "ports": [{"port": 80}]}]
            }),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let kept = endpoints(&registry).await.unwrap();
        assert_eq!(
            ips(kept.subsets.unwrap()[0].addresses.as_ref()),
            ["192.168.1.1"]
        );
        cancel.cancel();
    }
}
