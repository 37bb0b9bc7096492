//! The gRPC `Node` service (`skiff.node.v1.Node`): what node agents call on the
//! control plane to register, heartbeat, learn their pods and report on them. Every
//! call goes through the [`Registry`], with the same metadata, validation and
//! resourceVersion rules as the REST API.
//!
//! Registration also hands the node its network: the Node's `spec.podCIDR` (assigned
//! by the registry from the cluster CIDR when the Node is created, or on this write for
//! a node without one; `RESOURCE_EXHAUSTED` when none is free) and the cluster's ranges
//! and DNS domain in `RegisterReply`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::NodeCondition;
use serde_json::Value;
use skiff_api::Object;
use skiff_api::kind::{ENDPOINTS, NODE, POD, SERVICE};
use skiff_api::meta::{Time, jiff};
use skiff_api::types::{Node, NodeStatus, PodStatus};
use skiff_proto::node::node_server::{self, NodeServer};
use skiff_proto::node::object_event::Type as EventType;
use skiff_proto::node::{
    FinishPodDeletionReply, HeartbeatReply, HeartbeatRequest, ObjectEvent, PodRef, PodStatusReport,
    RegisterReply, RegisterRequest, ReportPodStatusReply, WatchObjectsRequest, WatchPodsRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::apiserver::{
    ApiError, CertificateUser, DeleteOptions, ListOptions, Part, Registry, Watch, WatchParams,
    Writer, now_timestamp,
};

/// The field manager of every write the service makes for an agent.
pub const MANAGER: &str = "skiff-node-agent";

/// How often agents are told to heartbeat by default (kubelet's node status update
/// frequency).
pub const HEARTBEAT_INTERVAL_SECONDS: u32 = 10;

/// How long one `WatchPods` stream may last (agents reconnect after it ends).
const WATCH_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Events buffered per `WatchPods` stream before the watch waits for the agent.
const WATCH_BUFFER: usize = 64;

/// The annotation on the bookmark that ends a watch's initial events.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// The `Node` gRPC service over the registry.
#[derive(Clone)]
pub struct NodeService {
    registry: Registry,
    cancel: CancellationToken,
    heartbeat_interval_seconds: u32,
    node_restriction: bool,
}

/// The node a call may act for: `Ok(None)` when unrestricted (an admin, or a server
/// without authentication), `Ok(Some(node))` for a node's certificate, an error for
/// anyone else (kube's Node authorizer + NodeRestriction for the agent's calls).
fn caller_node<T>(restricted: bool, request: &Request<T>) -> Result<Option<String>, Status> {
    if !restricted {
        return Ok(None);
    }
    let Some(CertificateUser(user)) = request.extensions().get::<CertificateUser>() else {
        return Err(Status::unauthenticated(
            "a node certificate is required (join with a token first)",
        ));
    };
    if user.in_group(crate::security::MASTERS_GROUP) {
        return Ok(None);
    }
    match user.node_name() {
        Some(node) => Ok(Some(node.to_owned())),
        None => Err(Status::permission_denied(format!(
            "User \"{}\" is not a node",
            user.name
        ))),
    }
}

/// Refuses a node acting for another.
fn require_same_node(caller: Option<&str>, node: &str) -> Result<(), Status> {
    match caller {
        Some(caller) if caller != node => Err(Status::permission_denied(format!(
            "node \"{caller}\" may not act for node \"{node}\""
        ))),
        _ => Ok(()),
    }
}

impl NodeService {
    /// A service writing through `registry`; its pod watches end when `cancel` fires.
    pub fn new(registry: Registry, cancel: CancellationToken) -> Self {
        Self {
            registry,
            cancel,
            heartbeat_interval_seconds: HEARTBEAT_INTERVAL_SECONDS,
            node_restriction: false,
        }
    }

    /// Requires node certificates and holds each node to its own Node and pods.
    pub fn with_node_restriction(mut self, on: bool) -> Self {
        self.node_restriction = on;
        self
    }

    /// Tells agents to heartbeat every `seconds` (at least 1).
    pub fn with_heartbeat_interval(mut self, seconds: u32) -> Self {
        self.heartbeat_interval_seconds = seconds.max(1);
        self
    }

    /// The service wrapped for a tonic server or `Routes`.
    pub fn into_server(self) -> NodeServer<Self> {
        NodeServer::new(self)
    }
}

/// An API error as a gRPC status carrying Kubernetes' message.
pub fn status_of(error: &ApiError) -> Status {
    let message = error.message.clone();
    match (error.code, error.reason) {
        (404, _) => Status::not_found(message),
        (409, "AlreadyExists") => Status::already_exists(message),
        (409, _) => Status::aborted(message),
        (400 | 413 | 415 | 422, _) => Status::invalid_argument(message),
        (403, _) => Status::permission_denied(message),
        (410, _) => Status::out_of_range(message),
        (503 | 504, _) => Status::unavailable(message),
        _ => Status::internal(message),
    }
}

/// The current time at second precision, as Kubernetes stores timestamps.
fn now() -> Time {
    let seconds = now_timestamp().as_second();
    Time(jiff::Timestamp::from_second(seconds).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
}

/// `conditions` with `lastHeartbeatTime` set to `now`, and `lastTransitionTime` kept
/// from the `stored` condition of the same type when its status did not change (set to
/// `now` when it changed and the agent gave none).
fn reconcile_conditions(
    conditions: Vec<NodeCondition>,
    stored: &[NodeCondition],
    now: &Time,
) -> Vec<NodeCondition> {
    conditions
        .into_iter()
        .map(|mut condition| {
            condition.last_heartbeat_time = Some(now.clone());
            match stored.iter().find(|s| s.type_ == condition.type_) {
                Some(previous) if previous.status == condition.status => {
                    condition
                        .last_transition_time
                        .clone_from(&previous.last_transition_time);
                    if condition.last_transition_time.is_none() {
                        condition.last_transition_time = Some(now.clone());
                    }
                }
                Some(_) => condition.last_transition_time = Some(now.clone()),
                None => {
                    if condition.last_transition_time.is_none() {
                        condition.last_transition_time = Some(now.clone());
                    }
                }
            }
            condition
        })
        .collect()
}

/// The agent's status, with its conditions reconciled against the stored ones.
fn reconcile_status(mut status: NodeStatus, stored: Option<&NodeStatus>) -> NodeStatus {
    let now = now();
    let stored_conditions = stored
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    if let Some(conditions) = status.conditions.take() {
        status.conditions = Some(reconcile_conditions(conditions, stored_conditions, &now));
    }
    status
}

/// The stored node updated with what a re-registering agent says about itself:
/// labels and annotations merged (the agent's keys win), the spec fields the agent
/// sets (never `podCIDR`/`podCIDRs`, which the registry assigns on the Node's creation
/// — or on this write, for a node without one — nor `unschedulable` unless the agent
/// asks to be cordoned), taints merged by key and effect.
fn merge_registration(stored: &Node, agent: &Node) -> Node {
    let mut node = stored.clone();
    node.metadata.resource_version = None;
    let merge = |into: &mut Option<BTreeMap<String, String>>,
                 from: &Option<BTreeMap<String, String>>| {
        if let Some(from) = from.as_ref().filter(|m| !m.is_empty()) {
            let into = into.get_or_insert_default();
            for (key, value) in from {
                into.insert(key.clone(), value.clone());
            }
        }
    };
    merge(&mut node.metadata.labels, &agent.metadata.labels);
    merge(&mut node.metadata.annotations, &agent.metadata.annotations);
    if let Some(agent_spec) = &agent.spec {
        let spec = node.spec.get_or_insert_default();
        if agent_spec.provider_id.is_some() {
            spec.provider_id.clone_from(&agent_spec.provider_id);
        }
        if agent_spec.external_id.is_some() {
            spec.external_id.clone_from(&agent_spec.external_id);
        }
        if agent_spec.config_source.is_some() {
            spec.config_source.clone_from(&agent_spec.config_source);
        }
        if agent_spec.unschedulable == Some(true) {
            spec.unschedulable = Some(true);
        }
        for taint in agent_spec.taints.iter().flatten() {
            let taints = spec.taints.get_or_insert_default();
            match taints
                .iter_mut()
                .find(|t| t.key == taint.key && t.effect == taint.effect)
            {
                Some(existing) => *existing = taint.clone(),
                None => taints.push(taint.clone()),
            }
        }
    }
    node
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(bytes)
        .map_err(|e| Status::invalid_argument(format!("the {what} is not valid JSON: {e}")))
}

fn encode(object: &Object) -> Vec<u8> {
    serde_json::to_vec(&object.to_value()).unwrap_or_default()
}

fn as_node(object: Option<&Object>, name: &str) -> Result<Node, ApiError> {
    match object {
        Some(Object::Node(node)) => Ok(node.as_ref().clone()),
        _ => Err(ApiError::not_found(&NODE, name)),
    }
}

impl NodeService {
    /// A watch of `kind` (all namespaces) as an `ObjectEvent` stream: everything
    /// current then `SYNCED` when `resource_version` is empty or "0", else the changes
    /// after it.
    async fn stream(
        &self,
        kind: &'static skiff_api::kind::ResourceKind,
        options: ListOptions,
        resource_version: &str,
    ) -> Result<Response<ReceiverStream<Result<ObjectEvent, Status>>>, Status> {
        let resource_version = match resource_version {
            "" | "0" => None,
            rv => Some(rv.parse::<u64>().map_err(|_| {
                Status::invalid_argument(format!("invalid resource version {rv:?}"))
            })?),
        };
        let params = WatchParams {
            resource_version,
            timeout: WATCH_TIMEOUT,
            bookmarks: true,
            send_initial_events: resource_version.is_none(),
            table: None,
        };
        let watch = Watch::start(
            &self.registry,
            kind,
            None,
            options,
            params,
            self.cancel.clone(),
        )
        .await
        .map_err(|e| status_of(&e))?;
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(forward(watch, sender, self.cancel.clone()));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    /// Replaces the node's status with `status` (conditions reconciled).
    async fn write_node_status(&self, name: &str, status: &NodeStatus) -> Result<Object, Status> {
        let writer = Writer {
            manager: MANAGER,
            part: Part::Status,
            apply: false,
            dry_run: false,
        };
        let written = self
            .registry
            .write(&NODE, None, name, writer, |current| {
                let mut node = as_node(current, name)?;
                node.metadata.resource_version = None;
                node.status = Some(reconcile_status(status.clone(), node.status.as_ref()));
                Ok(Object::from(node))
            })
            .await
            .map_err(|e| status_of(&e))?;
        Ok(written.object)
    }

    /// Applies an agent's re-registration to an existing node (main resource only).
    async fn update_node(&self, name: &str, agent: &Node) -> Result<(), Status> {
        self.registry
            .write(&NODE, None, name, Writer::main(MANAGER), |current| {
                let stored = as_node(current, name)?;
                Ok(Object::from(merge_registration(&stored, agent)))
            })
            .await
            .map_err(|e| status_of(&e))?;
        Ok(())
    }
}

#[tonic::async_trait]
impl node_server::Node for NodeService {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let caller = caller_node(self.node_restriction, &request)?;
        let mut node: Node = decode("Node", &request.get_ref().node_json)?;
        let name = node
            .metadata
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Status::invalid_argument("the Node has no metadata.name"))?;
        require_same_node(caller.as_deref(), &name)?;
        let status = node.status.take().unwrap_or_default();
        let mut created = false;
        match self.registry.get(&NODE, None, &name).await {
            Ok(_) => {}
            Err(error) if error.code == 404 => {
                let mut new = node.clone();
                new.status = Some(reconcile_status(status.clone(), None));
                match self
                    .registry
                    .create(Object::from(new), None, Writer::main(MANAGER))
                    .await
                {
                    Ok(_) => created = true,
                    // Registered meanwhile: update it as if it had been there.
                    Err(error) if error.code == 409 => {}
                    Err(error) => return Err(status_of(&error)),
                }
            }
            Err(error) => return Err(status_of(&error)),
        }
        if !created {
            self.update_node(&name, &node).await?;
        }
        let stored = self.write_node_status(&name, &status).await?;
        let network = self.registry.network();
        let pod_cidr = match &stored {
            Object::Node(node) => node.spec.as_ref().and_then(|s| s.pod_cidr.clone()),
            _ => None,
        };
        let Some(pod_cidr) = pod_cidr.filter(|c| !c.is_empty()) else {
            // The Node is stored without one, as kube keeps it; the agent retries, and
            // a later registration takes the first subnet a deleted node freed.
            return Err(Status::resource_exhausted(format!(
                "no pod CIDR is free for node {name}: every /{} of the cluster CIDR {} is allocated",
                network.node_cidr_mask_size, network.cluster_cidr
            )));
        };
        tracing::info!(node = %name, created, %pod_cidr, "node registered");
        Ok(Response::new(RegisterReply {
            node_json: encode(&stored),
            heartbeat_interval_seconds: self.heartbeat_interval_seconds,
            cluster_cidr: network.cluster_cidr.to_string(),
            service_cidr: network.service_cidr.to_string(),
            cluster_domain: network.cluster_domain.clone(),
            node_port_range: network.node_port_range.to_string(),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let caller = caller_node(self.node_restriction, &request)?;
        let request = request.into_inner();
        let name = request.node_name.as_str();
        require_same_node(caller.as_deref(), name)?;
        let given: Option<Vec<NodeCondition>> =
            if request.conditions_json.iter().all(u8::is_ascii_whitespace) {
                None
            } else {
                Some(decode("conditions", &request.conditions_json)?)
            };
        let writer = Writer {
            manager: MANAGER,
            part: Part::Status,
            apply: false,
            dry_run: false,
        };
        self.registry
            .write(&NODE, None, name, writer, |current| {
                let mut node = as_node(current, name)?;
                node.metadata.resource_version = None;
                let status = node.status.get_or_insert_default();
                let stored = status.conditions.clone().unwrap_or_default();
                // Without new conditions the stored ones are renewed.
                let conditions = given.clone().unwrap_or_else(|| stored.clone());
                status.conditions = Some(reconcile_conditions(conditions, &stored, &now()));
                Ok(Object::from(node))
            })
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(HeartbeatReply {}))
    }

    type WatchPodsStream = ReceiverStream<Result<ObjectEvent, Status>>;

    async fn watch_pods(
        &self,
        request: Request<WatchPodsRequest>,
    ) -> Result<Response<Self::WatchPodsStream>, Status> {
        let caller = caller_node(self.node_restriction, &request)?;
        let request = request.into_inner();
        if request.node_name.is_empty() {
            return Err(Status::invalid_argument("node_name is required"));
        }
        require_same_node(caller.as_deref(), &request.node_name)?;
        let options = ListOptions {
            fields: vec![("spec.nodeName".to_owned(), request.node_name.clone(), true)],
            ..Default::default()
        };
        self.stream(&POD, options, &request.resource_version).await
    }

    type WatchObjectsStream = ReceiverStream<Result<ObjectEvent, Status>>;

    async fn watch_objects(
        &self,
        request: Request<WatchObjectsRequest>,
    ) -> Result<Response<Self::WatchObjectsStream>, Status> {
        caller_node(self.node_restriction, &request)?;
        let request = request.into_inner();
        let kind = match request.resource.as_str() {
            "services" => &SERVICE,
            "endpoints" => &ENDPOINTS,
            "nodes" => &NODE,
            other => {
                return Err(Status::invalid_argument(format!(
                    "resource {other:?} cannot be watched by agents (services, endpoints, nodes)"
                )));
            }
        };
        self.stream(kind, ListOptions::default(), &request.resource_version)
            .await
    }

    async fn report_pod_status(
        &self,
        request: Request<PodStatusReport>,
    ) -> Result<Response<ReportPodStatusReply>, Status> {
        let caller = caller_node(self.node_restriction, &request)?;
        let report = request.into_inner();
        let status: PodStatus = decode("PodStatus", &report.status_json)?;
        let name = report.name.as_str();
        let mut foreign = None;
        let writer = Writer {
            manager: MANAGER,
            part: Part::Status,
            apply: false,
            dry_run: false,
        };
        let mut other_uid = None;
        let written = self
            .registry
            .write(&POD, Some(&report.namespace), name, writer, |current| {
                let Some(Object::Pod(pod)) = current else {
                    return Err(ApiError::not_found(&POD, name));
                };
                let uid = pod.metadata.uid.as_deref().unwrap_or_default();
                if uid != report.uid {
                    other_uid = Some(uid.to_owned());
                    return Err(ApiError::conflict(&POD, name));
                }
                let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
                if let Some(caller) = caller.as_deref().filter(|c| bound != Some(*c)) {
                    foreign = Some(caller.to_owned());
                    return Err(ApiError::forbidden("not bound to the calling node"));
                }
                let mut pod = pod.as_ref().clone();
                pod.metadata.resource_version = None;
                pod.status = Some(status.clone());
                Ok(Object::from(pod))
            })
            .await;
        if let Some(caller) = foreign {
            return Err(Status::permission_denied(format!(
                "node \"{caller}\" may not write the status of pod {}/{name}: it is not bound to it",
                report.namespace
            )));
        }
        let written = match written {
            Ok(written) => written,
            Err(_) if other_uid.is_some() => {
                return Err(Status::failed_precondition(format!(
                    "pod {}/{name} has uid {}, not {}",
                    report.namespace,
                    other_uid.unwrap_or_default(),
                    report.uid
                )));
            }
            Err(error) => return Err(status_of(&error)),
        };
        Ok(Response::new(ReportPodStatusReply {
            resource_version: written
                .object
                .metadata()
                .resource_version
                .clone()
                .unwrap_or_default(),
        }))
    }

    async fn finish_pod_deletion(
        &self,
        request: Request<PodRef>,
    ) -> Result<Response<FinishPodDeletionReply>, Status> {
        let caller = caller_node(self.node_restriction, &request)?;
        let pod = request.into_inner();
        if let Some(caller) = caller.as_deref() {
            match self
                .registry
                .get(&POD, Some(&pod.namespace), &pod.name)
                .await
            {
                Ok(Object::Pod(found)) => {
                    let bound = found.spec.as_ref().and_then(|s| s.node_name.as_deref());
                    if bound != Some(caller) {
                        return Err(Status::permission_denied(format!(
                            "node \"{caller}\" may not delete pod {}/{}: it is not bound to it",
                            pod.namespace, pod.name
                        )));
                    }
                }
                Ok(_) => {}
                Err(error) if error.code == 404 => {
                    return Ok(Response::new(FinishPodDeletionReply {}));
                }
                Err(error) => return Err(status_of(&error)),
            }
        }
        let options = DeleteOptions {
            uid: Some(pod.uid.clone()).filter(|u| !u.is_empty()),
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        match self
            .registry
            .delete(&POD, Some(&pod.namespace), &pod.name, &options)
            .await
        {
            Ok(_) => {}
            Err(error) if error.code == 404 => {}
            Err(error) if error.code == 409 && options.uid.is_some() => {
                // The uid precondition failed: the pod the agent ran is gone and another
                // took its name; that one is not the agent's to delete.
                match self
                    .registry
                    .get(&POD, Some(&pod.namespace), &pod.name)
                    .await
                {
                    Ok(current) if current.metadata().uid.as_deref() != Some(pod.uid.as_str()) => {}
                    Err(error) if error.code == 404 => {}
                    _ => return Err(status_of(&error)),
                }
            }
            Err(error) => return Err(status_of(&error)),
        }
        Ok(Response::new(FinishPodDeletionReply {}))
    }
}

/// Sends a watch's events to a `WatchPods` stream until the watch ends, the agent
/// hangs up or the server shuts down.
async fn forward(
    mut watch: Watch,
    sender: mpsc::Sender<Result<ObjectEvent, Status>>,
    cancel: CancellationToken,
) {
    loop {
        let chunk = tokio::select! {
            () = cancel.cancelled() => return,
            () = sender.closed() => return,
            chunk = watch.next_chunk() => chunk,
        };
        let Some(chunk) = chunk else { return };
        for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let event = match object_event(line) {
                Ok(Some(event)) => Ok(event),
                Ok(None) => continue,
                Err(status) => Err(status),
            };
            let last = event.is_err();
            if sender.send(event).await.is_err() || last {
                return;
            }
        }
    }
}

/// One watch line as an `ObjectEvent`; `Err` for an error event (which ends the stream),
/// `None` for a line that carries nothing for the agent.
fn object_event(line: &[u8]) -> Result<Option<ObjectEvent>, Status> {
    let event: Value = serde_json::from_slice(line)
        .map_err(|e| Status::internal(format!("a watch event is not JSON: {e}")))?;
    let object = &event["object"];
    let resource_version = object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let event_type = match event["type"].as_str().unwrap_or_default() {
        "ADDED" => EventType::Added,
        "MODIFIED" => EventType::Modified,
        "DELETED" => EventType::Deleted,
        "BOOKMARK" => {
            let end = object["metadata"]["annotations"][INITIAL_EVENTS_END] == "true";
            let event_type = if end {
                EventType::Synced
            } else {
                EventType::Bookmark
            };
            return Ok(Some(ObjectEvent {
                r#type: event_type.into(),
                object_json: Vec::new(),
                resource_version,
            }));
        }
        "ERROR" => {
            let message = object["message"]
                .as_str()
                .unwrap_or("the watch failed")
                .to_owned();
            return Err(match object["code"].as_u64() {
                Some(410) => Status::out_of_range(message),
                _ => Status::internal(message),
            });
        }
        other => {
            tracing::debug!(event_type = other, "ignoring an unknown watch event");
            return Ok(None);
        }
    };
    let object_json = serde_json::to_vec(object)
        .map_err(|e| Status::internal(format!("a pod does not encode: {e}")))?;
    Ok(Some(ObjectEvent {
        r#type: event_type.into(),
        object_json,
        resource_version,
    }))
}

#[cfg(test)]
mod tests;
