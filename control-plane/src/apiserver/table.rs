//! `meta/v1 Table` rendering: the columns kubectl prints for each kind.
//!
//! kube-apiserver answers `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` with
//! rows its printers (`pkg/printers/internalversion/printers.go`) compute on the server;
//! kubectl only lays them out. This module translates those printers for the kinds
//! Skiff serves, so `kubectl get` prints what it prints against Kubernetes 1.32.
//!
//! As in Kubernetes, the server always renders the wide form: every column, with the
//! `-o wide` ones at priority 1, which kubectl hides unless asked for them.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use skiff_api::kind::{self, ResourceKind};
use skiff_api::meta::jiff::Timestamp;
use skiff_api::meta::{LabelSelector, ObjectMeta, Table, TableColumnDefinition, TableRow, Time};
use skiff_api::types::{
    Deployment, Endpoints, Event, Lease, Namespace, Node, Pod, ReplicaSet, Secret, Service,
};
use skiff_api::{Object, Selector};

/// What each row's `object` carries: kube's `includeObject` query parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object: rows carry cells only.
    None,
    /// A `PartialObjectMetadata` with the object's full `metadata`; kubectl reads the
    /// namespace of `-A` listings and the name of `-o name` from it.
    #[default]
    Metadata,
    /// The whole object, with `apiVersion` and `kind`.
    Object,
}

/// Parses the `includeObject` query value (`None`, `Metadata` or `Object`, case as
/// Kubernetes spells them). An empty value means the default, `Metadata`, as in
/// Kubernetes; anything else is `None` here and a 400 for the caller.
pub fn parse_include(value: &str) -> Option<IncludeObject> {
    match value {
        "None" => Some(IncludeObject::None),
        "" | "Metadata" => Some(IncludeObject::Metadata),
        "Object" => Some(IncludeObject::Object),
        _ => None,
    }
}

/// Renders `objects` of `kind` as a `meta.k8s.io/v1 Table` with Kubernetes' columns,
/// computing ages against `now`.
///
/// Objects of another kind are left out: their cells would not fit the columns. The
/// table's `metadata` is left empty; the caller sets `resourceVersion` (the list's, or
/// the object's for a single GET) as Kubernetes does.
pub fn render(
    kind: &'static ResourceKind,
    objects: &[Object],
    now: Timestamp,
    include: IncludeObject,
) -> Table {
    let mut table = Table::new(columns(kind));
    table.rows = objects
        .iter()
        .filter(|object| object.kind() == kind)
        .map(|object| TableRow {
            cells: cells(object, now),
            object: row_object(object, include),
        })
        .collect();
    table
}

/// The object a row carries, as `include` asks.
fn row_object(object: &Object, include: IncludeObject) -> Option<Value> {
    match include {
        IncludeObject::None => None,
        IncludeObject::Metadata => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": serde_json::to_value(object.metadata())
                .expect("ObjectMeta always serializes to JSON"),
        })),
        IncludeObject::Object => Some(object.to_value()),
    }
}

// Column descriptions: the Go printers take them from the types' swagger docs.
const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS_DOC: &str = "Names of each container in the template.";
const IMAGES_DOC: &str = "Images referenced by each container in the template.";
const NODE_ADDRESSES_DOC: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";

/// One column definition.
fn column(
    name: &str,
    type_: &str,
    format: &str,
    priority: i32,
    description: &str,
) -> TableColumnDefinition {
    TableColumnDefinition {
        name: name.to_owned(),
        type_: type_.to_owned(),
        format: format.to_owned(),
        description: description.to_owned(),
        priority,
    }
}

/// The `Name` column every kind but Event starts with.
fn name_column() -> TableColumnDefinition {
    column("Name", "string", "name", 0, NAME_DOC)
}

/// The `Age` column.
fn age_column() -> TableColumnDefinition {
    column("Age", "string", "", 0, AGE_DOC)
}

/// The columns for `kind`, in display order, as `AddHandlers` in printers.go sets them.
fn columns(kind: &ResourceKind) -> Vec<TableColumnDefinition> {
    if kind == &kind::POD {
        vec![
            name_column(),
            column(
                "Ready",
                "string",
                "",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            column(
                "Status",
                "string",
                "",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            column(
                "Restarts",
                "string",
                "",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            age_column(),
            column(
                "IP",
                "string",
                "",
                1,
                "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
            ),
            column(
                "Node",
                "string",
                "",
                1,
                "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename",
            ),
            column(
                "Nominated Node",
                "string",
                "",
                1,
                "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.",
            ),
            column(
                "Readiness Gates",
                "string",
                "",
                1,
                "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates",
            ),
        ]
    } else if kind == &kind::NAMESPACE {
        vec![
            name_column(),
            column("Status", "string", "", 0, "The status of the namespace"),
            age_column(),
        ]
    } else if kind == &kind::SERVICE {
        vec![
            name_column(),
            column(
                "Type",
                "string",
                "",
                0,
                "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types",
            ),
            column(
                "Cluster-IP",
                "string",
                "",
                0,
                "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
            ),
            column(
                "External-IP",
                "string",
                "",
                0,
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.",
            ),
            column(
                "Port(s)",
                "string",
                "",
                0,
                "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
            ),
            age_column(),
            column(
                "Selector",
                "string",
                "",
                1,
                "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/",
            ),
        ]
    } else if kind == &kind::ENDPOINTS {
        vec![
            name_column(),
            column(
                "Endpoints",
                "string",
                "",
                0,
                "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.",
            ),
            age_column(),
        ]
    } else if kind == &kind::NODE {
        vec![
            name_column(),
            column("Status", "string", "", 0, "The status of the node"),
            column("Roles", "string", "", 0, "The roles of the node"),
            age_column(),
            column(
                "Version",
                "string",
                "",
                0,
                "Kubelet Version reported by the node.",
            ),
            column("Internal-IP", "string", "", 1, NODE_ADDRESSES_DOC),
            column("External-IP", "string", "", 1, NODE_ADDRESSES_DOC),
            column(
                "OS-Image",
                "string",
                "",
                1,
                "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            ),
            column(
                "Kernel-Version",
                "string",
                "",
                1,
                "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            ),
            column(
                "Container-Runtime",
                "string",
                "",
                1,
                "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            ),
        ]
    } else if kind == &kind::EVENT {
        vec![
            column(
                "Last Seen",
                "string",
                "",
                0,
                "The time at which the most recent occurrence of this event was recorded.",
            ),
            column(
                "Type",
                "string",
                "",
                0,
                "Type of this event (Normal, Warning), new types could be added in the future",
            ),
            column(
                "Reason",
                "string",
                "",
                0,
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            column(
                "Object",
                "string",
                "",
                0,
                "The object that this event is about.",
            ),
            column(
                "Subobject",
                "string",
                "",
                1,
                "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.",
            ),
            column(
                "Source",
                "string",
                "",
                1,
                "The component reporting this event. Should be a short machine understandable string.",
            ),
            column(
                "Message",
                "string",
                "",
                0,
                "A human-readable description of the status of this operation.",
            ),
            column(
                "First Seen",
                "string",
                "",
                1,
                "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
            ),
            column(
                "Count",
                "string",
                "",
                1,
                "The number of times this event has occurred.",
            ),
            column("Name", "string", "name", 1, NAME_DOC),
        ]
    } else if kind == &kind::SECRET {
        vec![
            name_column(),
            column(
                "Type",
                "string",
                "",
                0,
                "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
            ),
            column(
                "Data",
                "string",
                "",
                0,
                "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4",
            ),
            age_column(),
        ]
    } else if kind == &kind::LEASE {
        vec![
            name_column(),
            column(
                "Holder",
                "string",
                "",
                0,
                "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.",
            ),
            age_column(),
        ]
    } else if kind == &kind::DEPLOYMENT {
        vec![
            name_column(),
            column(
                "Ready",
                "string",
                "",
                0,
                "Number of the pod with ready state",
            ),
            column(
                "Up-to-date",
                "string",
                "",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            column(
                "Available",
                "string",
                "",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            age_column(),
            column("Containers", "string", "", 1, CONTAINERS_DOC),
            column("Images", "string", "", 1, IMAGES_DOC),
            column(
                "Selector",
                "string",
                "",
                1,
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
            ),
        ]
    } else if kind == &kind::REPLICA_SET {
        vec![
            name_column(),
            column(
                "Desired",
                "integer",
                "",
                0,
                "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller/#what-is-a-replicationcontroller",
            ),
            column(
                "Current",
                "integer",
                "",
                0,
                "Replicas is the most recently observed number of replicas. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller/#what-is-a-replicationcontroller",
            ),
            column(
                "Ready",
                "integer",
                "",
                0,
                "The number of ready replicas for this replica set.",
            ),
            age_column(),
            column("Containers", "string", "", 1, CONTAINERS_DOC),
            column("Images", "string", "", 1, IMAGES_DOC),
            column(
                "Selector",
                "string",
                "",
                1,
                "Selector is a label query over pods that should match the replica count. If the selector is empty, it is defaulted to the labels present on the pod template. Label keys and values that must match in order to be controlled by this replica set. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
            ),
        ]
    } else {
        // Kubernetes' default table convertor, for kinds without a printer. No stored
        // object has such a kind, so these tables have no rows.
        vec![name_column(), column("Created At", "date", "", 0, AGE_DOC)]
    }
}

/// The cells of one object's row, one per column of its kind.
fn cells(object: &Object, now: Timestamp) -> Vec<Value> {
    match object {
        Object::Namespace(namespace) => namespace_cells(namespace, now),
        Object::Pod(pod) => pod_cells(pod, now),
        Object::Service(service) => service_cells(service, now),
        Object::Endpoints(endpoints) => endpoints_cells(endpoints, now),
        Object::Node(node) => node_cells(node, now),
        Object::Event(event) => event_cells(event, now),
        Object::Deployment(deployment) => deployment_cells(deployment, now),
        Object::ReplicaSet(replica_set) => replica_set_cells(replica_set, now),
        Object::Secret(secret) => secret_cells(secret, now),
        Object::Lease(lease) => lease_cells(lease, now),
    }
}

/// `printSecret`: the type and how many keys `data` has.
fn secret_cells(secret: &Secret, now: Timestamp) -> Vec<Value> {
    let n_keys = secret.data.as_ref().map_or(0, |data| data.len());
    vec![
        name_of(&secret.metadata).into(),
        secret.type_.as_deref().unwrap_or_default().into(),
        n_keys.into(),
        age(&secret.metadata, now).into(),
    ]
}

/// `printLease`: the holder, empty when there is none.
fn lease_cells(lease: &Lease, now: Timestamp) -> Vec<Value> {
    let holder = lease
        .spec
        .as_ref()
        .and_then(|spec| spec.holder_identity.as_deref())
        .unwrap_or_default();
    vec![
        name_of(&lease.metadata).into(),
        holder.into(),
        age(&lease.metadata, now).into(),
    ]
}

/// `metadata.name`, or empty.
fn name_of(metadata: &ObjectMeta) -> &str {
    metadata.name.as_deref().unwrap_or_default()
}

/// The age cell: time since `metadata.creationTimestamp`.
fn age(metadata: &ObjectMeta, now: Timestamp) -> String {
    since(time_of(metadata.creation_timestamp.as_ref()), now)
}

/// A `Time` as a timestamp; absent and Go's zero time (`0001-01-01T00:00:00Z`, which
/// Go clients write for unset times) are both `None`, as `metav1.Time.IsZero` says.
fn time_of(time: Option<&Time>) -> Option<Timestamp> {
    time.map(|time| time.0)
        .filter(|timestamp| !is_go_zero(*timestamp))
}

/// Whether `timestamp` is Go's zero `time.Time`.
fn is_go_zero(timestamp: Timestamp) -> bool {
    const GO_ZERO_SECONDS: i64 = -62_135_596_800;
    timestamp.as_second() == GO_ZERO_SECONDS && timestamp.subsec_nanosecond() == 0
}

/// `translateTimestampSince`: the human duration from `timestamp` to `now`, or
/// `<unknown>` for an unset timestamp.
fn since(timestamp: Option<Timestamp>, now: Timestamp) -> String {
    match timestamp {
        None => "<unknown>".to_owned(),
        Some(timestamp) => {
            let nanos = now.as_nanosecond() - timestamp.as_nanosecond();
            // Go's `time.Since` saturates at the limits of `time.Duration` (±292 years).
            let nanos = nanos.clamp(i128::from(i64::MIN), i128::from(i64::MAX));
            human_duration(nanos as i64)
        }
    }
}

/// Kubernetes' `duration.HumanDuration` (apimachinery `pkg/util/duration`): about two
/// or three significant figures, such as `45s`, `3m2s`, `2d3h` or `3y20d`.
fn human_duration(nanos: i64) -> String {
    const SECOND: i64 = 1_000_000_000;
    const MINUTE: i64 = 60 * SECOND;
    const HOUR: i64 = 60 * MINUTE;
    // Integer division truncates toward zero here as Go's does.
    let seconds = nanos / SECOND;
    // A deviation of less than two seconds is clock skew: it reads as now.
    if seconds < -1 {
        return "<invalid>".to_owned();
    } else if seconds < 0 {
        return "0s".to_owned();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = nanos / MINUTE;
    if minutes < 10 {
        let rest = seconds % 60;
        if rest == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{rest}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = nanos / HOUR;
    if hours < 8 {
        let rest = minutes % 60;
        if rest == 0 {
            return format!("{hours}h");
        }
        format!("{hours}h{rest}m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let rest = hours % 24;
        if rest == 0 {
            return format!("{}d", hours / 24);
        }
        format!("{}d{rest}h", hours / 24)
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        if days == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        format!("{}y{days}d", hours / 24 / 365)
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// `printNamespace`: name, phase, age.
fn namespace_cells(namespace: &Namespace, now: Timestamp) -> Vec<Value> {
    let phase = namespace
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or_default();
    vec![
        name_of(&namespace.metadata).into(),
        phase.into(),
        age(&namespace.metadata, now).into(),
    ]
}

/// The later of `latest` and a container's last termination time; a container that
/// never terminated (or whose time is unset) leaves `latest` as it is.
fn later(latest: Option<Timestamp>, finished_at: Option<&Time>) -> Option<Timestamp> {
    match (latest, time_of(finished_at)) {
        (Some(latest), Some(finished)) => Some(latest.max(finished)),
        (latest, finished) => latest.or(finished),
    }
}

/// `printPod`: the readiness count, the aggregate status (the first failing init
/// container, else the first container with a waiting or terminated reason, else the
/// pod's phase or reason), the restarts with the time of the last one, and the wide
/// columns.
fn pod_cells(pod: &Pod, now: Timestamp) -> Vec<Value> {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let containers = spec
        .map(|spec| spec.containers.as_slice())
        .unwrap_or_default();
    let init_containers = spec
        .and_then(|spec| spec.init_containers.as_deref())
        .unwrap_or_default();
    let conditions = status
        .and_then(|status| status.conditions.as_deref())
        .unwrap_or_default();
    let init_statuses = status
        .and_then(|status| status.init_container_statuses.as_deref())
        .unwrap_or_default();
    let container_statuses = status
        .and_then(|status| status.container_statuses.as_deref())
        .unwrap_or_default();
    let phase = status
        .and_then(|status| status.phase.as_deref())
        .unwrap_or_default();
    let pod_reason = status
        .and_then(|status| status.reason.as_deref())
        .unwrap_or_default();

    // Sidecars (init containers that restart always) count as containers of the pod.
    let is_restartable = |name: &str| {
        init_containers
            .iter()
            .find(|container| container.name == name)
            .is_some_and(|container| container.restart_policy.as_deref() == Some("Always"))
    };
    let mut n_restarts: i64 = 0;
    let mut n_sidecar_restarts: i64 = 0;
    let n_sidecars = init_containers
        .iter()
        .filter(|container| container.restart_policy.as_deref() == Some("Always"))
        .count();
    let n_containers = containers.len() + n_sidecars;
    let mut n_ready = 0usize;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_sidecar_restart: Option<Timestamp> = None;

    let mut reason = if pod_reason.is_empty() {
        phase.to_owned()
    } else {
        pod_reason.to_owned()
    };
    if conditions.iter().any(|condition| {
        condition.type_ == "PodScheduled" && condition.reason.as_deref() == Some("SchedulingGated")
    }) {
        reason = "SchedulingGated".to_owned();
    }

    // `isPodInitializedConditionTrue`: the first `Initialized` condition is true.
    let is_initialized = conditions
        .iter()
        .find(|condition| condition.type_ == "Initialized")
        .is_some_and(|condition| condition.status == "True");
    // `hasPodReadyCondition`: some `Ready` condition is true.
    let is_ready = conditions
        .iter()
        .any(|condition| condition.type_ == "Ready" && condition.status == "True");

    let mut initializing = false;
    for (init_idx, container_status) in init_statuses.iter().enumerate() {
        let last_terminated = container_status
            .last_state
            .as_ref()
            .and_then(|state| state.terminated.as_ref());
        let finished_at = last_terminated.and_then(|terminated| terminated.finished_at.as_ref());
        n_restarts += i64::from(container_status.restart_count);
        last_restart = later(last_restart, finished_at);
        let restartable = is_restartable(&container_status.name);
        if restartable {
            n_sidecar_restarts += i64::from(container_status.restart_count);
            last_sidecar_restart = later(last_sidecar_restart, finished_at);
        }
        let state = container_status.state.as_ref();
        let terminated = state.and_then(|state| state.terminated.as_ref());
        let waiting_reason = state
            .and_then(|state| state.waiting.as_ref())
            .and_then(|waiting| waiting.reason.as_deref())
            .unwrap_or_default();
        if terminated.is_some_and(|terminated| terminated.exit_code == 0) {
            continue;
        }
        if restartable && container_status.started == Some(true) {
            if container_status.ready {
                n_ready += 1;
            }
            continue;
        }
        reason = if let Some(terminated) = terminated {
            // The init container failed.
            match terminated.reason.as_deref().unwrap_or_default() {
                "" => match terminated.signal.unwrap_or_default() {
                    0 => format!("Init:ExitCode:{}", terminated.exit_code),
                    signal => format!("Init:Signal:{signal}"),
                },
                terminated_reason => format!("Init:{terminated_reason}"),
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{init_idx}/{}", init_containers.len())
        };
        initializing = true;
        break;
    }

    if !initializing || is_initialized {
        n_restarts = n_sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        // Backwards, so that the first container with a reason sets the status.
        for container_status in container_statuses.iter().rev() {
            n_restarts += i64::from(container_status.restart_count);
            let finished_at = container_status
                .last_state
                .as_ref()
                .and_then(|state| state.terminated.as_ref())
                .and_then(|terminated| terminated.finished_at.as_ref());
            last_restart = later(last_restart, finished_at);
            let state = container_status.state.as_ref();
            let waiting_reason = state
                .and_then(|state| state.waiting.as_ref())
                .and_then(|waiting| waiting.reason.as_deref())
                .unwrap_or_default();
            let terminated = state.and_then(|state| state.terminated.as_ref());
            let running = state.is_some_and(|state| state.running.is_some());
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_owned();
            } else if let Some(terminated) = terminated {
                reason = match terminated.reason.as_deref().unwrap_or_default() {
                    "" => match terminated.signal.unwrap_or_default() {
                        0 => format!("ExitCode:{}", terminated.exit_code),
                        signal => format!("Signal:{signal}"),
                    },
                    terminated_reason => terminated_reason.to_owned(),
                };
            } else if container_status.ready && running {
                has_running = true;
                n_ready += 1;
            }
        }
        // A pod with one container completed and another still running is running.
        if reason == "Completed" && has_running {
            reason = if is_ready {
                "Running".to_owned()
            } else {
                "NotReady".to_owned()
            };
        }
    }

    if pod.metadata.deletion_timestamp.is_some() && pod_reason == "NodeLost" {
        reason = "Unknown".to_owned();
    } else if pod.metadata.deletion_timestamp.is_some() && phase != "Succeeded" && phase != "Failed"
    {
        reason = "Terminating".to_owned();
    }

    let restarts = match last_restart {
        Some(last_restart) if n_restarts != 0 => {
            format!("{n_restarts} ({} ago)", since(Some(last_restart), now))
        }
        _ => n_restarts.to_string(),
    };

    // Kubernetes' conversion makes `podIP` the first of `podIPs` when both are set.
    let pod_ip = status
        .and_then(|status| status.pod_ip.as_deref())
        .filter(|ip| !ip.is_empty())
        .or_else(|| {
            status
                .and_then(|status| status.pod_ips.as_deref())
                .and_then(|ips| ips.first())
                .map(|ip| ip.ip.as_str())
        });
    let node_name = spec.and_then(|spec| spec.node_name.as_deref());
    let nominated_node_name = status.and_then(|status| status.nominated_node_name.as_deref());
    let readiness_gates = spec
        .and_then(|spec| spec.readiness_gates.as_deref())
        .unwrap_or_default();
    let gates = if readiness_gates.is_empty() {
        "<none>".to_owned()
    } else {
        let n_true = readiness_gates
            .iter()
            .filter(|gate| {
                conditions
                    .iter()
                    .find(|condition| condition.type_ == gate.condition_type)
                    .is_some_and(|condition| condition.status == "True")
            })
            .count();
        format!("{n_true}/{}", readiness_gates.len())
    };

    vec![
        name_of(&pod.metadata).into(),
        format!("{n_ready}/{n_containers}").into(),
        reason.into(),
        restarts.into(),
        age(&pod.metadata, now).into(),
        or_none(pod_ip).into(),
        or_none(node_name).into(),
        or_none(nominated_node_name).into(),
        gates.into(),
    ]
}

/// The value, or `<none>` when it is absent or empty.
fn or_none(value: Option<&str>) -> String {
    match value {
        Some(value) if !value.is_empty() => value.to_owned(),
        _ => "<none>".to_owned(),
    }
}

/// `printService`: type, cluster IP, external IPs, ports, age and selector.
fn service_cells(service: &Service, now: Timestamp) -> Vec<Value> {
    let spec = service.spec.as_ref();
    let service_type = spec
        .and_then(|spec| spec.type_.as_deref())
        .unwrap_or_default();
    // Kubernetes' defaulting copies `clusterIP` into an empty `clusterIPs`.
    let cluster_ip = spec
        .and_then(|spec| spec.cluster_ips.as_deref())
        .and_then(|ips| ips.first())
        .map(String::as_str)
        .or_else(|| {
            spec.and_then(|spec| spec.cluster_ip.as_deref())
                .filter(|ip| !ip.is_empty())
        })
        .unwrap_or("<none>");
    let ports = spec
        .and_then(|spec| spec.ports.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|port| {
            let protocol = port.protocol.as_deref().unwrap_or_default();
            match port.node_port {
                Some(node_port) if node_port > 0 => {
                    format!("{}:{node_port}/{protocol}", port.port)
                }
                _ => format!("{}/{protocol}", port.port),
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    let selector = spec
        .and_then(|spec| spec.selector.as_ref())
        .map(|selector| {
            selector
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|selector| !selector.is_empty())
        .unwrap_or_else(|| "<none>".to_owned());
    vec![
        name_of(&service.metadata).into(),
        service_type.into(),
        cluster_ip.into(),
        external_ip(service, service_type).into(),
        (if ports.is_empty() {
            "<none>".to_owned()
        } else {
            ports
        })
        .into(),
        age(&service.metadata, now).into(),
        selector.into(),
    ]
}

/// `getServiceExternalIP`, in its wide form (the server never clips the load balancer
/// addresses).
fn external_ip(service: &Service, service_type: &str) -> String {
    let external_ips = service
        .spec
        .as_ref()
        .and_then(|spec| spec.external_ips.as_deref())
        .unwrap_or_default();
    match service_type {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_owned()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            // A sorted set, as Go's `sets.String` lists it.
            let ingress_addresses: BTreeSet<&str> = service
                .status
                .as_ref()
                .and_then(|status| status.load_balancer.as_ref())
                .and_then(|load_balancer| load_balancer.ingress.as_deref())
                .unwrap_or_default()
                .iter()
                .filter_map(|ingress| {
                    ingress
                        .ip
                        .as_deref()
                        .filter(|ip| !ip.is_empty())
                        .or(ingress.hostname.as_deref().filter(|host| !host.is_empty()))
                })
                .collect();
            let mut addresses: Vec<&str> = ingress_addresses.into_iter().collect();
            if addresses.is_empty() && external_ips.is_empty() {
                return "<pending>".to_owned();
            }
            addresses.extend(external_ips.iter().map(String::as_str));
            addresses.join(",")
        }
        "ExternalName" => service
            .spec
            .as_ref()
            .and_then(|spec| spec.external_name.clone())
            .unwrap_or_default(),
        _ => "<unknown>".to_owned(),
    }
}

/// `printEndpoints`: name, `formatEndpoints` and age.
fn endpoints_cells(endpoints: &Endpoints, now: Timestamp) -> Vec<Value> {
    vec![
        name_of(&endpoints.metadata).into(),
        format_endpoints(endpoints).into(),
        age(&endpoints.metadata, now).into(),
    ]
}

/// `formatEndpoints`: the first three `ip:port` pairs (or bare IPs for port-less
/// subsets) and how many more there are.
fn format_endpoints(endpoints: &Endpoints) -> String {
    const MAX: usize = 3;
    let subsets = endpoints.subsets.as_deref().unwrap_or_default();
    if subsets.is_empty() {
        return "<none>".to_owned();
    }
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for subset in subsets {
        let addresses = subset.addresses.as_deref().unwrap_or_default();
        let ports = subset.ports.as_deref().unwrap_or_default();
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(address.ip.clone());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(&address.ip, port.port));
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

/// Go's `net.JoinHostPort`: IPv6 addresses are bracketed.
fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `printNode`: readiness (and `SchedulingDisabled`), roles, age, kubelet version and
/// the wide addresses and system info.
fn node_cells(node: &Node, now: Timestamp) -> Vec<Value> {
    let status = node.status.as_ref();
    // The last `Ready` condition wins, as in the Go printer's map.
    let ready = status
        .and_then(|status| status.conditions.as_deref())
        .unwrap_or_default()
        .iter()
        .rev()
        .find(|condition| condition.type_ == "Ready");
    let mut states = vec![match ready {
        Some(condition) if condition.status == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if node
        .spec
        .as_ref()
        .and_then(|spec| spec.unschedulable)
        .unwrap_or_default()
    {
        states.push("SchedulingDisabled");
    }

    let roles: BTreeSet<&str> = node
        .metadata
        .labels
        .iter()
        .flatten()
        .filter_map(|(key, value)| {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                (!role.is_empty()).then_some(role)
            } else if key == "kubernetes.io/role" && !value.is_empty() {
                Some(value.as_str())
            } else {
                None
            }
        })
        .collect();
    let roles = roles.into_iter().collect::<Vec<_>>().join(",");

    let info = status.and_then(|status| status.node_info.as_ref());
    let addresses = status
        .and_then(|status| status.addresses.as_deref())
        .unwrap_or_default();
    let address = |address_type: &str| {
        addresses
            .iter()
            .find(|address| address.type_ == address_type)
            .map_or_else(|| "<none>".to_owned(), |address| address.address.clone())
    };
    let or_unknown = |value: Option<&String>| match value {
        Some(value) if !value.is_empty() => value.clone(),
        _ => "<unknown>".to_owned(),
    };

    vec![
        name_of(&node.metadata).into(),
        states.join(",").into(),
        (if roles.is_empty() {
            "<none>".to_owned()
        } else {
            roles
        })
        .into(),
        age(&node.metadata, now).into(),
        info.map(|info| info.kubelet_version.clone())
            .unwrap_or_default()
            .into(),
        address("InternalIP").into(),
        address("ExternalIP").into(),
        or_unknown(info.map(|info| &info.os_image)).into(),
        or_unknown(info.map(|info| &info.kernel_version)).into(),
        or_unknown(info.map(|info| &info.container_runtime_version)).into(),
    ]
}

/// `printEvent`: last seen, type, reason, `kind/name` of the object, subobject, source,
/// message, first seen, count and name.
fn event_cells(event: &Event, now: Timestamp) -> Vec<Value> {
    let first_timestamp = match time_of(event.first_timestamp.as_ref()) {
        Some(first) => since(Some(first), now),
        // Events of the events.k8s.io API only set `eventTime`.
        None => since(
            event
                .event_time
                .as_ref()
                .map(|time| time.0)
                .filter(|time| !is_go_zero(*time)),
            now,
        ),
    };
    let mut last_timestamp = match time_of(event.last_timestamp.as_ref()) {
        Some(last) => since(Some(last), now),
        None => first_timestamp.clone(),
    };
    let mut count = i64::from(event.count.unwrap_or_default());
    if let Some(series) = &event.series {
        last_timestamp = since(
            series
                .last_observed_time
                .as_ref()
                .map(|time| time.0)
                .filter(|time| !is_go_zero(*time)),
            now,
        );
        count = i64::from(series.count.unwrap_or_default());
    } else if count == 0 {
        // Singleton events of the new API do not set a count.
        count = 1;
    }

    let involved = &event.involved_object;
    let involved_kind = involved.kind.as_deref().unwrap_or_default().to_lowercase();
    let target = match involved.name.as_deref() {
        Some(name) if !name.is_empty() => format!("{involved_kind}/{name}"),
        _ => involved_kind,
    };

    let first_non_empty = |first: Option<&str>, second: Option<&str>| {
        first
            .filter(|value| !value.is_empty())
            .or(second)
            .unwrap_or_default()
            .to_owned()
    };
    let source = event.source.as_ref();
    let component = first_non_empty(
        source.and_then(|source| source.component.as_deref()),
        event.reporting_component.as_deref(),
    );
    let instance = first_non_empty(
        source.and_then(|source| source.host.as_deref()),
        event.reporting_instance.as_deref(),
    );
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };

    vec![
        last_timestamp.into(),
        event.type_.as_deref().unwrap_or_default().into(),
        event.reason.as_deref().unwrap_or_default().into(),
        target.into(),
        involved.field_path.as_deref().unwrap_or_default().into(),
        source.into(),
        event.message.as_deref().unwrap_or_default().trim().into(),
        first_timestamp.into(),
        count.into(),
        name_of(&event.metadata).into(),
    ]
}

/// `layoutContainerCells`: container names and images, comma-separated.
fn container_cells(spec: Option<&skiff_api::types::PodSpec>) -> (String, String) {
    let containers = spec
        .map(|spec| spec.containers.as_slice())
        .unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = containers
        .iter()
        .map(|c| c.image.as_deref().unwrap_or_default())
        .collect();
    (names.join(","), images.join(","))
}

/// `LabelSelectorAsSelector(…).String()`: requirements sorted by key, `k=v` for
/// `matchLabels`, `k in (a,b)`, `k notin (a,b)`, `k` and `!k` for expressions, values
/// sorted. `None` for a selector Kubernetes would reject.
fn selector_string(selector: &LabelSelector) -> Option<String> {
    // Validate as Kubernetes does before printing; the printing differs from
    // `Selector`'s, which writes a one-value `In` as `k=v`.
    Selector::from_label_selector(Some(selector)).ok()?;
    let mut requirements: Vec<(&str, String)> = Vec::new();
    for (key, value) in selector.match_labels.iter().flatten() {
        requirements.push((key, format!("{key}={value}")));
    }
    for expression in selector.match_expressions.iter().flatten() {
        let key = expression.key.as_str();
        let mut values: Vec<&str> = expression
            .values
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        values.sort_unstable();
        let values = values.join(",");
        let text = match expression.operator.as_str() {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        };
        requirements.push((key, text));
    }
    requirements.sort_by(|a, b| a.0.cmp(b.0));
    Some(
        requirements
            .into_iter()
            .map(|(_, text)| text)
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// `printDeployment`: `ready/desired`, up-to-date, available, age, containers, images,
/// selector.
fn deployment_cells(deployment: &Deployment, now: Timestamp) -> Vec<Value> {
    let spec = deployment.spec.as_ref();
    let status = deployment.status.as_ref();
    // Kubernetes defaults `replicas` to 1 before any printer sees it.
    let desired = spec.and_then(|spec| spec.replicas).unwrap_or(1);
    let ready = status
        .and_then(|status| status.ready_replicas)
        .unwrap_or_default();
    let updated = status
        .and_then(|status| status.updated_replicas)
        .unwrap_or_default();
    let available = status
        .and_then(|status| status.available_replicas)
        .unwrap_or_default();
    let (containers, images) = container_cells(spec.and_then(|spec| spec.template.spec.as_ref()));
    let selector = match spec {
        Some(spec) => selector_string(&spec.selector).unwrap_or_else(|| "<invalid>".to_owned()),
        // Without a spec there is no selector: Kubernetes prints `labels.Nothing()`.
        None => String::new(),
    };
    vec![
        name_of(&deployment.metadata).into(),
        format!("{ready}/{desired}").into(),
        i64::from(updated).into(),
        i64::from(available).into(),
        age(&deployment.metadata, now).into(),
        containers.into(),
        images.into(),
        selector.into(),
    ]
}

/// `printReplicaSet`: desired, current, ready, age, containers, images, selector.
fn replica_set_cells(replica_set: &ReplicaSet, now: Timestamp) -> Vec<Value> {
    let spec = replica_set.spec.as_ref();
    let status = replica_set.status.as_ref();
    // Kubernetes defaults `replicas` to 1 before any printer sees it.
    let desired = spec.and_then(|spec| spec.replicas).unwrap_or(1);
    let current = status.map(|status| status.replicas).unwrap_or_default();
    let ready = status
        .and_then(|status| status.ready_replicas)
        .unwrap_or_default();
    let (containers, images) = container_cells(
        spec.and_then(|spec| spec.template.as_ref())
            .and_then(|template| template.spec.as_ref()),
    );
    // `metav1.FormatLabelSelector`: `<none>` when empty, `<error>` when invalid.
    let selector = match spec {
        Some(spec) => match selector_string(&spec.selector) {
            Some(selector) if selector.is_empty() => "<none>".to_owned(),
            Some(selector) => selector,
            None => "<error>".to_owned(),
        },
        None => "<none>".to_owned(),
    };
    vec![
        name_of(&replica_set.metadata).into(),
        i64::from(desired).into(),
        i64::from(current).into(),
        i64::from(ready).into(),
        age(&replica_set.metadata, now).into(),
        containers.into(),
        images.into(),
        selector.into(),
    ]
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use skiff_api::meta::jiff::{SignedDuration, Timestamp};
    use skiff_api::types::{
        Deployment, Endpoints, Event, Namespace, Node, Pod, ReplicaSet, Service,
    };

    use super::*;

    const NOW: &str = "2025-01-01T00:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    /// The RFC 3339 time `secs` seconds before [`NOW`].
    fn ago(secs: i64) -> String {
        (now() - SignedDuration::from_secs(secs)).to_string()
    }

    /// Renders one object of `kind` and returns its cells.
    fn row_cells(kind: &'static ResourceKind, object: Object) -> Vec<Value> {
        let table = render(kind, &[object], now(), IncludeObject::None);
        assert_eq!(table.rows.len(), 1);
        let row = &table.rows[0];
        assert_eq!(
            row.cells.len(),
            table.column_definitions.len(),
            "one cell per column"
        );
        row.cells.clone()
    }

    fn strings(cells: &[&str]) -> Vec<Value> {
        cells.iter().map(|cell| Value::from(*cell)).collect()
    }

    fn check_age(nanos: i64, expected: &str) {
        assert_eq!(human_duration(nanos), expected, "{nanos}ns");
    }

    #[test]
    fn human_duration_matches_kubernetes_at_its_boundaries() {
        const S: i64 = 1_000_000_000;
        const M: i64 = 60 * S;
        const H: i64 = 60 * M;
        const D: i64 = 24 * H;
        for (nanos, expected) in [
            (-3 * S, "<invalid>"),
            (-2 * S, "<invalid>"),
            (-2 * S + 1, "0s"),
            (-S, "0s"),
            (0, "0s"),
            (S - 1, "0s"),
            (5 * S, "5s"),
            (119 * S, "119s"),
            (120 * S, "2m"),
            (121 * S, "2m1s"),
            (3 * M + 2 * S, "3m2s"),
            (10 * M - S, "9m59s"),
            (10 * M, "10m"),
            (10 * M + 30 * S, "10m"),
            (3 * H - S, "179m"),
            (3 * H, "3h"),
            (3 * H + M, "3h1m"),
            (8 * H - M, "7h59m"),
            (8 * H, "8h"),
            (48 * H - S, "47h"),
            (48 * H, "2d"),
            (2 * D + 3 * H, "2d3h"),
            (8 * D - S, "7d23h"),
            (8 * D, "8d"),
            (729 * D, "729d"),
            (730 * D, "2y"),
            (731 * D, "2y1d"),
            (8 * 365 * D - S, "7y364d"),
            (8 * 365 * D, "8y"),
            (i64::MAX, "292y"),
        ] {
            check_age(nanos, expected);
        }
    }

    #[test]
    fn unset_and_go_zero_times_are_unknown() {
        assert_eq!(since(None, now()), "<unknown>");
        let go_zero: Time = serde_json::from_value(json!("0001-01-01T00:00:00Z")).unwrap();
        assert_eq!(since(time_of(Some(&go_zero)), now()), "<unknown>");
        let recent: Time = serde_json::from_value(json!(ago(62))).unwrap();
        assert_eq!(since(time_of(Some(&recent)), now()), "62s");
        // A clock far behind the object saturates like Go's `time.Since`.
        let early: Time = serde_json::from_value(json!("1600-01-01T00:00:00Z")).unwrap();
        assert_eq!(since(time_of(Some(&early)), now()), "292y");
    }

    fn check_pod(pod: Value, expected: [&str; 9]) {
        let name = pod["metadata"]["name"].clone();
        let pod: Pod = serde_json::from_value(pod).unwrap();
        assert_eq!(
            row_cells(&kind::POD, pod.into()),
            strings(&expected),
            "pod {name}"
        );
    }

    fn running(name: &str, restarts: i32) -> Value {
        json!({"name": name, "image": "x", "imageID": "", "ready": true, "restartCount": restarts,
               "started": true, "state": {"running": {"startedAt": ago(300)}}})
    }

    fn terminated_at(secs_ago: i64, reason: &str, exit_code: i32) -> Value {
        json!({"terminated": {"exitCode": exit_code, "reason": reason, "finishedAt": ago(secs_ago)}})
    }

    #[test]
    fn pods() {
        let containers =
            json!([{"name": "web", "image": "nginx"}, {"name": "log", "image": "busybox"}]);
        let ready =
            json!([{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}]);
        // A healthy pod, with the wide columns.
        check_pod(
            json!({"metadata": {"name": "web", "creationTimestamp": ago(300)},
                   "spec": {"containers": containers, "nodeName": "node-a"},
                   "status": {"phase": "Running", "podIP": "10.0.0.7", "conditions": ready,
                              "containerStatuses": [running("web", 0), running("log", 0)]}}),
            [
                "web", "2/2", "Running", "0", "5m", "10.0.0.7", "node-a", "<none>", "<none>",
            ],
        );
        // Crash-looping: the waiting reason, and the restarts with the last one's age.
        check_pod(
            json!({"metadata": {"name": "crash", "creationTimestamp": ago(600)},
                   "spec": {"containers": [{"name": "app"}], "nodeName": "node-a"},
                   "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.8"}],
                              "containerStatuses": [{"name": "app", "image": "x", "imageID": "",
                                  "ready": false, "restartCount": 5,
                                  "lastState": terminated_at(182, "Error", 1),
                                  "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}),
            [
                "crash",
                "0/1",
                "CrashLoopBackOff",
                "5 (3m2s ago)",
                "10m",
                "10.0.0.8",
                "node-a",
                "<none>",
                "<none>",
            ],
        );
        // Restarts without a recorded termination time show the count alone.
        check_pod(
            json!({"metadata": {"name": "r"}, "spec": {"containers": [{"name": "app"}]},
                   "status": {"phase": "Running", "conditions": ready,
                              "containerStatuses": [running("app", 2)]}}),
            [
                "r",
                "1/1",
                "Running",
                "2",
                "<unknown>",
                "<none>",
                "<none>",
                "<none>",
                "<none>",
            ],
        );
        // The first container with a reason sets the status.
        check_pod(
            json!({"metadata": {"name": "two", "creationTimestamp": ago(5)},
                   "spec": {"containers": containers},
                   "status": {"phase": "Pending", "containerStatuses": [
                       {"name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                        "state": {"waiting": {"reason": "ImagePullBackOff"}}},
                       {"name": "log", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                        "state": {"waiting": {"reason": "ContainerCreating"}}}]}}),
            [
                "two",
                "0/2",
                "ImagePullBackOff",
                "0",
                "5s",
                "<none>",
                "<none>",
                "<none>",
                "<none>",
            ],
        );
        // Terminated containers without a reason: exit code, then signal.
        check_pod(
            json!({"metadata": {"name": "exit"}, "spec": {"containers": [{"name": "app"}]},
                   "status": {"phase": "Failed", "containerStatuses": [{"name": "app", "image": "x",
                       "imageID": "", "ready": false, "restartCount": 0,
                       "state": {"terminated": {"exitCode": 137}}}]}}),
            [
                "exit",
                "0/1",
                "ExitCode:137",
                "0",
                "<unknown>",
                "<none>",
                "<none>",
                "<none>",
                "<none>",
            ],
        );
        check_pod(
            json!({"metadata": {"name": "sig"}, "spec": {"containers": [{"name": "app"}]},
                   "status": {"phase": "Failed", "containerStatuses": [{"name": "app", "image": "x",
                       "imageID": "", "ready": false, "restartCount": 0,
                       "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}}),
            [
                "sig",
                "0/1",
                "Signal:9",
                "0",
                "<unknown>",
                "<none>",
                "<none>",
                "<none>",
                "<none>",
            ],
        );
        // Completed.
        check_pod(
            json!({"metadata": {"name": "job", "creationTimestamp": ago(7200)},
                   "spec": {"containers": [{"name": "app"}]},
                   "status": {"phase": "Succeeded", "containerStatuses": [{"name": "app", "image": "x",
                       "imageID": "", "ready": false, "restartCount": 0,
                       "state": terminated_at(60, "Completed", 0)}]}}),
            [
                "job",
                "0/1",
                "Completed",
                "0",
                "120m",
                "<none>",
                "<none>",
                "<none>",
                "<none>",
            ],
        );
        // One container completed while another still runs: Running if the pod is ready.
        let completed_and_running = |conditions: Value| {
            json!({"metadata": {"name": "mixed"}, "spec": {"containers": containers},
                   "status": {"phase": "Running", "conditions": conditions, "containerStatuses": [
                       {"name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                        "state": terminated_at(60, "Completed", 0)},
                       running("log", 0)]}})
        };
        check_pod(
            completed_and_running(ready.clone()),
            [
                "mixed",
                "1/2",
                "Running",
                "0",
                "<unknown>",
                "<none>",
                "<none>",
                "<none>",
                "<none>",
            ],
        );
        check_pod(
            completed_and_running(json!([])),
            [
                "mixed",
                "1/2",
                "NotReady",
                "0",
                "<unknown>",
                "<none>",
                "<none>",
                "<none>",
                "<none>",
            ],
        );
        // Terminating, unless the phase is terminal; NodeLost reads Unknown.
        check_pod(
            json!({"metadata": {"name": "bye", "creationTimestamp": ago(60), "deletionTimestamp": ago(-30)},
                   "spec": {"containers": [{"name": "app"}]},
                   "status": {"phase": "Running", "conditions": ready, "containerStatuses": [running("app", 0)]}}),
            [
                "bye",
                "1/1",
                "Terminating",
                "0",
                "60s",
                "<none>",
                "<none>",
                "<none>",
                "<none>",
            ],
        );
        check_pod(
            json!({"metadata": {"name": "done", "deletionTimestamp": ago(0)},
                   "spec": {"containers": [{"name": "app"}]},
                   "status": {"phase": "Succeeded", "containerStatuses": [{"name": "app", "image": "x",
                       "imageID": "", "ready": false, "restartCount": 0,
                       "state": terminated_at(60, "Completed", 0)}]}}),
            [
                "done",
                "0/1",
                "Completed",
                "0",
                "<unknown>",
                "<none>",
                "<none>",
                "<none>",
                "<none>",
            ],
        );
        check_pod(
            json!({"metadata": {"name": "lost", "deletionTimestamp": ago(0)},
                   "spec": {"containers": [{"name": "app"}]},
                   "status": {"phase": "Running", "reason": "NodeLost"}}),
            [
                "lost",
                "0/1",
                "Unknown",
                "0",
                "<unknown>",
                "<none>",
                "<none>",
                "<none>",
                "<none>",
            ],
        );
        check_pod(
            json!({"metadata": {"name": "lost"}, "spec": {"containers": [{"name": "app"}]},
                   "status": {"phase": "Running", "reason": "NodeLost"}}),
            [
                "lost",
                "0/1",
                "NodeLost",
                "0",
                "<unknown>",
                "<none>",
                "<none>",
                "<none>",
                "<none>",
            ],
        );
        // Not scheduled yet, scheduling gates, and no status at all.
        check_pod(
            json!({"metadata": {"name": "new"}, "spec": {"containers": [{"name": "app"}]},
                   "status": {"phase": "Pending"}}),
            [
                "new",
                "0/1",
                "Pending",
                "0",
                "<unknown>",
                "<none>",
                "<none>",
                "<none>",
                "<none>",
            ],
        );
        check_pod(
            json!({"metadata": {"name": "gated"}, "spec": {"containers": [{"name": "app"}]},
                   "status": {"phase": "Pending", "conditions": [
                       {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}}),
            [
                "gated",
                "0/1",
                "SchedulingGated",
                "0",
                "<unknown>",
                "<none>",
                "<none>",
                "<none>",
                "<none>",
            ],
        );
        check_pod(
            json!({"metadata": {"name": "bare"}, "spec": {"containers": [{"name": "app"}]}}),
            [
                "bare",
                "0/1",
                "",
                "0",
                "<unknown>",
                "<none>",
                "<none>",
                "<none>",
                "<none>",
            ],
        );
        // Nominated node and readiness gates.
        check_pod(
            json!({"metadata": {"name": "gates"},
                   "spec": {"containers": [{"name": "app"}], "readinessGates": [
                       {"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]},
                   "status": {"phase": "Pending", "nominatedNodeName": "node-b", "conditions": [
                       {"type": "example.com/lb", "status": "True"},
                       {"type": "example.com/dns", "status": "False"}]}}),
            [
                "gates",
                "0/1",
                "Pending",
                "0",
                "<unknown>",
                "<none>",
                "<none>",
                "node-b",
                "1/2",
            ],
        );
    }

    #[test]
    fn pods_with_init_containers() {
        let init = json!([{"name": "migrate"}, {"name": "seed"}]);
        let init_status = |name: &str, state: Value, restarts: i32, last: Value| {
            json!({"name": name, "image": "x", "imageID": "", "ready": false,
                   "restartCount": restarts, "state": state, "lastState": last})
        };
        let pod = |name: &str, init_statuses: Value| {
            json!({"metadata": {"name": name, "creationTimestamp": ago(90)},
                   "spec": {"initContainers": init, "containers": [{"name": "app"}]},
                   "status": {"phase": "Pending", "initContainerStatuses": init_statuses,
                              "containerStatuses": [{"name": "app", "image": "x", "imageID": "",
                                  "ready": false, "restartCount": 0,
                                  "state": {"waiting": {"reason": "PodInitializing"}}}]}})
        };
        let done = init_status("migrate", terminated_at(100, "Completed", 0), 0, json!({}));
        // The second init container runs: Init:1/2.
        check_pod(
            pod(
                "init",
                json!([
                    done,
                    init_status("seed", json!({"running": {}}), 0, json!({}))
                ]),
            ),
            [
                "init", "0/1", "Init:1/2", "0", "90s", "<none>", "<none>", "<none>", "<none>",
            ],
        );
        // Still waiting for its first init container: Init:0/2.
        check_pod(
            pod(
                "init",
                json!([
                    init_status(
                        "migrate",
                        json!({"waiting": {"reason": "PodInitializing"}}),
                        0,
                        json!({})
                    ),
                    init_status(
                        "seed",
                        json!({"waiting": {"reason": "PodInitializing"}}),
                        0,
                        json!({})
                    )
                ]),
            ),
            [
                "init", "0/1", "Init:0/2", "0", "90s", "<none>", "<none>", "<none>", "<none>",
            ],
        );
        // A crash-looping init container, with the init restarts.
        check_pod(
            pod(
                "init",
                json!([
                    done,
                    init_status(
                        "seed",
                        json!({"waiting": {"reason": "CrashLoopBackOff"}}),
                        3,
                        terminated_at(60, "Error", 1)
                    )
                ]),
            ),
            [
                "init",
                "0/1",
                "Init:CrashLoopBackOff",
                "3 (60s ago)",
                "90s",
                "<none>",
                "<none>",
                "<none>",
                "<none>",
            ],
        );
        // A failed init container: its reason, else its exit code or signal.
        for (state, expected) in [
            (terminated_at(5, "Error", 1), "Init:Error"),
            (json!({"terminated": {"exitCode": 2}}), "Init:ExitCode:2"),
            (
                json!({"terminated": {"exitCode": 143, "signal": 15}}),
                "Init:Signal:15",
            ),
        ] {
            check_pod(
                pod(
                    "init",
                    json!([done, init_status("seed", state, 0, json!({}))]),
                ),
                [
                    "init", "0/1", expected, "0", "90s", "<none>", "<none>", "<none>", "<none>",
                ],
            );
        }
        // Once initialized, init restarts no longer count and the containers decide.
        check_pod(
            json!({"metadata": {"name": "up", "creationTimestamp": ago(90)},
                   "spec": {"initContainers": init, "containers": [{"name": "app"}]},
                   "status": {"phase": "Running",
                              "conditions": [{"type": "Initialized", "status": "True"}],
                              "initContainerStatuses": [
                                  init_status("migrate", terminated_at(80, "Completed", 0), 4, terminated_at(85, "Error", 1)),
                                  init_status("seed", terminated_at(70, "Completed", 0), 0, json!({}))],
                              "containerStatuses": [running("app", 0)]}}),
            [
                "up", "1/1", "Running", "0", "90s", "<none>", "<none>", "<none>", "<none>",
            ],
        );
    }

    #[test]
    fn pods_with_sidecars() {
        // Restartable init containers count as containers, and their restarts stay.
        let sidecar_status = json!({"name": "proxy", "image": "x", "imageID": "", "ready": true,
            "started": true, "restartCount": 1, "state": {"running": {}},
            "lastState": terminated_at(30, "Error", 1)});
        check_pod(
            json!({"metadata": {"name": "mesh", "creationTimestamp": ago(400)},
                   "spec": {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                            "containers": [{"name": "app"}]},
                   "status": {"phase": "Running",
                              "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
                              "initContainerStatuses": [sidecar_status],
                              "containerStatuses": [running("app", 0)]}}),
            [
                "mesh",
                "2/2",
                "Running",
                "1 (30s ago)",
                "6m40s",
                "<none>",
                "<none>",
                "<none>",
                "<none>",
            ],
        );
    }

    fn check_service(service: Value, expected: [&str; 7]) {
        let service: Service = serde_json::from_value(service).unwrap();
        assert_eq!(
            row_cells(&kind::SERVICE, service.into()),
            strings(&expected)
        );
    }

    #[test]
    fn services() {
        let meta = json!({"name": "web", "creationTimestamp": ago(5)});
        check_service(
            json!({"metadata": meta, "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10",
                   "clusterIPs": ["10.96.0.10"], "selector": {"tier": "front", "app": "web"},
                   "ports": [{"port": 80, "protocol": "TCP"}]}}),
            [
                "web",
                "ClusterIP",
                "10.96.0.10",
                "<none>",
                "80/TCP",
                "5s",
                "app=web,tier=front",
            ],
        );
        // Only `clusterIP` set, and external IPs.
        check_service(
            json!({"metadata": meta, "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.11",
                   "externalIPs": ["192.0.2.1", "192.0.2.2"],
                   "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}}),
            [
                "web",
                "ClusterIP",
                "10.96.0.11",
                "192.0.2.1,192.0.2.2",
                "53/UDP,53/TCP",
                "5s",
                "<none>",
            ],
        );
        check_service(
            json!({"metadata": meta, "spec": {"type": "ClusterIP", "clusterIP": "None",
                   "clusterIPs": ["None"], "selector": {"app": "db"}}}),
            [
                "web",
                "ClusterIP",
                "None",
                "<none>",
                "<none>",
                "5s",
                "app=db",
            ],
        );
        check_service(
            json!({"metadata": meta, "spec": {"type": "NodePort", "clusterIPs": ["10.96.0.12"],
                   "selector": {"app": "web"}, "ports": [
                       {"port": 80, "nodePort": 30080, "protocol": "TCP"},
                       {"port": 443, "nodePort": 30443, "protocol": "TCP"}]}}),
            [
                "web",
                "NodePort",
                "10.96.0.12",
                "<none>",
                "80:30080/TCP,443:30443/TCP",
                "5s",
                "app=web",
            ],
        );
        let load_balancer = |status: Value, external_ips: Value| {
            json!({"metadata": meta, "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.13"],
                   "externalIPs": external_ips, "selector": {"app": "web"},
                   "ports": [{"port": 80, "nodePort": 31000, "protocol": "TCP"}]},
                   "status": status})
        };
        check_service(
            load_balancer(json!({}), json!([])),
            [
                "web",
                "LoadBalancer",
                "10.96.0.13",
                "<pending>",
                "80:31000/TCP",
                "5s",
                "app=web",
            ],
        );
        check_service(
            load_balancer(
                json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example.com"},
                                                    {"ip": "203.0.113.1"}, {"ip": "203.0.113.9"}]}}),
                json!(["198.51.100.1"]),
            ),
            [
                "web",
                "LoadBalancer",
                "10.96.0.13",
                "203.0.113.1,203.0.113.9,lb.example.com,198.51.100.1",
                "80:31000/TCP",
                "5s",
                "app=web",
            ],
        );
        // Long load balancer names are not clipped: the server renders the wide form.
        check_service(
            load_balancer(
                json!({"loadBalancer": {"ingress": [{"hostname": "a-very-long-load-balancer.example.com"}]}}),
                json!(null),
            ),
            [
                "web",
                "LoadBalancer",
                "10.96.0.13",
                "a-very-long-load-balancer.example.com",
                "80:31000/TCP",
                "5s",
                "app=web",
            ],
        );
        check_service(
            json!({"metadata": meta, "spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
            [
                "web",
                "ExternalName",
                "<none>",
                "db.example.com",
                "<none>",
                "5s",
                "<none>",
            ],
        );
        check_service(
            json!({"metadata": meta, "spec": {}}),
            ["web", "", "<none>", "<unknown>", "<none>", "5s", "<none>"],
        );
    }

    fn check_endpoints(subsets: Value, expected: &str) {
        let endpoints: Endpoints = serde_json::from_value(
            json!({"metadata": {"name": "web", "creationTimestamp": ago(3600)}, "subsets": subsets}),
        )
        .unwrap();
        assert_eq!(
            row_cells(&kind::ENDPOINTS, endpoints.into()),
            vec![json!("web"), json!(expected), json!("60m")]
        );
    }

    #[test]
    fn endpoints() {
        let addresses = |n: usize| -> Value {
            (1..=n)
                .map(|i| json!({"ip": format!("10.0.0.{i}")}))
                .collect()
        };
        check_endpoints(json!(null), "<none>");
        check_endpoints(json!([]), "<none>");
        check_endpoints(
            json!([{"addresses": addresses(2), "ports": [{"port": 80}]}]),
            "10.0.0.1:80,10.0.0.2:80",
        );
        check_endpoints(
            json!([{"addresses": addresses(3), "ports": [{"port": 80}]}]),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80",
        );
        check_endpoints(
            json!([{"addresses": addresses(6), "ports": [{"port": 80}]}]),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 3 more...",
        );
        check_endpoints(
            json!([{"addresses": addresses(2), "ports": [{"port": 80}, {"port": 443}]}]),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more...",
        );
        // Headless services without ports list bare addresses.
        check_endpoints(json!([{"addresses": addresses(2)}]), "10.0.0.1,10.0.0.2");
        check_endpoints(
            json!([{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 8080}]},
                   {"addresses": addresses(1), "ports": [{"port": 80}]}]),
            "[fd00::1]:8080,10.0.0.1:80",
        );
        // Not-ready addresses are not shown; a subset with only those leaves it empty.
        check_endpoints(
            json!([{"notReadyAddresses": addresses(1), "ports": [{"port": 80}]}]),
            "",
        );
    }

    #[test]
    fn secrets_and_leases() {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "db", "creationTimestamp": ago(3600)},
            "type": "Opaque", "data": {"user": "YQ==", "password": "Yg=="}}))
        .unwrap();
        assert_eq!(
            row_cells(&kind::SECRET, secret.into()),
            [json!("db"), json!("Opaque"), json!(2), json!("60m")]
        );
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": "skiff-controller-manager", "creationTimestamp": ago(90)},
            "spec": {"holderIdentity": "host_1"}}))
        .unwrap();
        assert_eq!(
            row_cells(&kind::LEASE, lease.into()),
            strings(&["skiff-controller-manager", "host_1", "90s"])
        );
        let free: Lease =
            serde_json::from_value(json!({"metadata": {"name": "free"}, "spec": {}})).unwrap();
        assert_eq!(
            row_cells(&kind::LEASE, free.into()),
            strings(&["free", "", "<unknown>"])
        );
    }

    fn check_node(node: Value, expected: [&str; 10]) {
        let node: Node = serde_json::from_value(node).unwrap();
        assert_eq!(row_cells(&kind::NODE, node.into()), strings(&expected));
    }

    #[test]
    fn nodes() {
        let info = json!({"architecture": "amd64", "bootID": "", "containerRuntimeVersion": "skiff://0.1.0",
            "kernelVersion": "6.8.0", "kubeProxyVersion": "", "kubeletVersion": "v1.32.4-skiff",
            "machineID": "", "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)",
            "systemUUID": ""});
        check_node(
            json!({"metadata": {"name": "node-a", "creationTimestamp": ago(2 * 86400 + 3 * 3600),
                                "labels": {"node-role.kubernetes.io/control-plane": ""}},
                   "spec": {"unschedulable": true},
                   "status": {"nodeInfo": info,
                              "conditions": [{"type": "MemoryPressure", "status": "False"},
                                             {"type": "Ready", "status": "True"}],
                              "addresses": [{"type": "Hostname", "address": "node-a"},
                                            {"type": "InternalIP", "address": "192.168.1.10"}]}}),
            [
                "node-a",
                "Ready,SchedulingDisabled",
                "control-plane",
                "2d3h",
                "v1.32.4-skiff",
                "192.168.1.10",
                "<none>",
                "Debian GNU/Linux 12 (bookworm)",
                "6.8.0",
                "skiff://0.1.0",
            ],
        );
        check_node(
            json!({"metadata": {"name": "node-b", "labels": {"kubernetes.io/role": "worker",
                                "node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/": ""}},
                   "status": {"conditions": [{"type": "Ready", "status": "Unknown"}],
                              "addresses": [{"type": "ExternalIP", "address": "203.0.113.5"},
                                            {"type": "InternalIP", "address": "10.1.0.5"}]}}),
            [
                "node-b",
                "NotReady",
                "control-plane,worker",
                "<unknown>",
                "",
                "10.1.0.5",
                "203.0.113.5",
                "<unknown>",
                "<unknown>",
                "<unknown>",
            ],
        );
        check_node(
            json!({"metadata": {"name": "node-c", "creationTimestamp": ago(30)}}),
            [
                "node-c",
                "Unknown",
                "<none>",
                "30s",
                "",
                "<none>",
                "<none>",
                "<unknown>",
                "<unknown>",
                "<unknown>",
            ],
        );
    }

    fn check_event(event: Value, expected: Vec<Value>) {
        let event: Event = serde_json::from_value(event).unwrap();
        assert_eq!(row_cells(&kind::EVENT, event.into()), expected);
    }

    #[test]
    fn events() {
        check_event(
            json!({"metadata": {"name": "web.17a", "namespace": "default"},
                   "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{web}"},
                   "reason": "BackOff", "message": "Back-off restarting failed container\n",
                   "type": "Warning", "count": 6,
                   "firstTimestamp": ago(3 * 86400), "lastTimestamp": ago(2 * 86400),
                   "source": {"component": "kubelet", "host": "node-a"}}),
            vec![
                json!("2d"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web"),
                json!("spec.containers{web}"),
                json!("kubelet, node-a"),
                json!("Back-off restarting failed container"),
                json!("3d"),
                json!(6),
                json!("web.17a"),
            ],
        );
        // An events.k8s.io event: eventTime only, no count, reporting fields as source.
        check_event(
            json!({"metadata": {"name": "web.17b"},
                   "involvedObject": {"kind": "Deployment", "name": "web"},
                   "reason": "ScalingReplicaSet", "message": "Scaled up", "type": "Normal",
                   "eventTime": "2024-12-31T23:58:59.500000Z",
                   "reportingComponent": "deployment-controller"}),
            vec![
                json!("60s"),
                json!("Normal"),
                json!("ScalingReplicaSet"),
                json!("deployment/web"),
                json!(""),
                json!("deployment-controller"),
                json!("Scaled up"),
                json!("60s"),
                json!(1),
                json!("web.17b"),
            ],
        );
        // A series: its last observation and count win.
        check_event(
            json!({"metadata": {"name": "n.1"}, "involvedObject": {"kind": "Node"},
                   "reason": "Rebooted", "type": "Warning", "count": 2,
                   "firstTimestamp": ago(600), "lastTimestamp": ago(500),
                   "series": {"count": 9, "lastObservedTime": "2024-12-31T23:58:00.000000Z"},
                   "source": {"component": "kubelet"}, "reportingInstance": "node-a"}),
            vec![
                json!("2m"),
                json!("Warning"),
                json!("Rebooted"),
                json!("node"),
                json!(""),
                json!("kubelet, node-a"),
                json!(""),
                json!("10m"),
                json!(9),
                json!("n.1"),
            ],
        );
        // No times at all.
        check_event(
            json!({"metadata": {"name": "x"}, "involvedObject": {}}),
            vec![
                json!("<unknown>"),
                json!(""),
                json!(""),
                json!(""),
                json!(""),
                json!(""),
                json!(""),
                json!("<unknown>"),
                json!(1),
                json!("x"),
            ],
        );
    }

    #[test]
    fn namespaces() {
        for (namespace, expected) in [
            (
                json!({"metadata": {"name": "default", "creationTimestamp": ago(10 * 86400)},
                    "status": {"phase": "Active"}}),
                ["default", "Active", "10d"],
            ),
            (
                json!({"metadata": {"name": "old", "creationTimestamp": ago(3 * 365 * 86400 + 20 * 86400)},
                    "status": {"phase": "Terminating"}}),
                ["old", "Terminating", "3y20d"],
            ),
            (
                json!({"metadata": {"name": "new"}}),
                ["new", "", "<unknown>"],
            ),
        ] {
            let namespace: Namespace = serde_json::from_value(namespace).unwrap();
            assert_eq!(
                row_cells(&kind::NAMESPACE, namespace.into()),
                strings(&expected)
            );
        }
    }

    fn check_deployment(deployment: Value, expected: Vec<Value>) {
        let deployment: Deployment = serde_json::from_value(deployment).unwrap();
        assert_eq!(row_cells(&kind::DEPLOYMENT, deployment.into()), expected);
    }

    #[test]
    fn deployments() {
        let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
            {"name": "nginx", "image": "nginx:1.27"}, {"name": "sidecar", "image": "busybox"}]}});
        check_deployment(
            json!({"metadata": {"name": "web", "creationTimestamp": ago(300)},
                   "spec": {"replicas": 3, "template": template, "selector": {
                       "matchLabels": {"app": "web"},
                       "matchExpressions": [
                           {"key": "tier", "operator": "In", "values": ["front", "back"]},
                           {"key": "env", "operator": "In", "values": ["prod"]},
                           {"key": "canary", "operator": "DoesNotExist"},
                           {"key": "zone", "operator": "Exists"},
                           {"key": "arch", "operator": "NotIn", "values": ["s390x", "arm"]}]}},
                   "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("5m"),
                json!("nginx,sidecar"),
                json!("nginx:1.27,busybox"),
                json!(
                    "app=web,arch notin (arm,s390x),!canary,env in (prod),tier in (back,front),zone"
                ),
            ],
        );
        // Fresh: no status yet, an empty selector prints as nothing.
        check_deployment(
            json!({"metadata": {"name": "new"}, "spec": {"replicas": 0, "template": template, "selector": {}}}),
            vec![
                json!("new"),
                json!("0/0"),
                json!(0),
                json!(0),
                json!("<unknown>"),
                json!("nginx,sidecar"),
                json!("nginx:1.27,busybox"),
                json!(""),
            ],
        );
        check_deployment(
            json!({"metadata": {"name": "bad"}, "spec": {"template": {}, "selector": {
                "matchExpressions": [{"key": "app", "operator": "In", "values": []}]}}}),
            vec![
                json!("bad"),
                json!("0/1"),
                json!(0),
                json!(0),
                json!("<unknown>"),
                json!(""),
                json!(""),
                json!("<invalid>"),
            ],
        );
    }

    fn check_replica_set(replica_set: Value, expected: Vec<Value>) {
        let replica_set: ReplicaSet = serde_json::from_value(replica_set).unwrap();
        assert_eq!(row_cells(&kind::REPLICA_SET, replica_set.into()), expected);
    }

    #[test]
    fn replica_sets() {
        check_replica_set(
            json!({"metadata": {"name": "web-5d9c", "creationTimestamp": ago(300)},
                   "spec": {"replicas": 3, "selector": {"matchLabels": {"pod-template-hash": "5d9c", "app": "web"}},
                            "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}},
                   "status": {"replicas": 3, "readyReplicas": 2}}),
            vec![
                json!("web-5d9c"),
                json!(3),
                json!(3),
                json!(2),
                json!("5m"),
                json!("nginx"),
                json!("nginx:1.27"),
                json!("app=web,pod-template-hash=5d9c"),
            ],
        );
        check_replica_set(
            json!({"metadata": {"name": "empty"}, "spec": {"selector": {}}}),
            vec![
                json!("empty"),
                json!(1),
                json!(0),
                json!(0),
                json!("<unknown>"),
                json!(""),
                json!(""),
                json!("<none>"),
            ],
        );
        check_replica_set(
            json!({"metadata": {"name": "bad"}, "spec": {"replicas": 1, "selector": {
                "matchExpressions": [{"key": "app", "operator": "Near", "values": ["x"]}]}}}),
            vec![
                json!("bad"),
                json!(1),
                json!(0),
                json!(0),
                json!("<unknown>"),
                json!(""),
                json!(""),
                json!("<error>"),
            ],
        );
    }

    /// Column names, and which of them are wide-only, for `kind`.
    fn check_columns(kind: &'static ResourceKind, default: &[&str], wide: &[&str]) {
        let table = render(kind, &[], now(), IncludeObject::Metadata);
        let names_at = |priority: i32| -> Vec<&str> {
            table
                .column_definitions
                .iter()
                .filter(|column| column.priority == priority)
                .map(|column| column.name.as_str())
                .collect()
        };
        assert_eq!(names_at(0), default, "{}", kind.plural);
        assert_eq!(names_at(1), wide, "{}", kind.plural);
        for column in &table.column_definitions {
            let expected_format = if column.name == "Name" { "name" } else { "" };
            assert_eq!(
                column.format, expected_format,
                "{} {}",
                kind.plural, column.name
            );
            assert!(
                !column.description.is_empty(),
                "{} {}",
                kind.plural,
                column.name
            );
        }
        assert!(table.rows.is_empty());
    }

    #[test]
    fn columns_match_kubernetes() {
        check_columns(
            &kind::POD,
            &["Name", "Ready", "Status", "Restarts", "Age"],
            &["IP", "Node", "Nominated Node", "Readiness Gates"],
        );
        check_columns(&kind::NAMESPACE, &["Name", "Status", "Age"], &[]);
        check_columns(
            &kind::SERVICE,
            &[
                "Name",
                "Type",
                "Cluster-IP",
                "External-IP",
                "Port(s)",
                "Age",
            ],
            &["Selector"],
        );
        check_columns(&kind::ENDPOINTS, &["Name", "Endpoints", "Age"], &[]);
        check_columns(&kind::SECRET, &["Name", "Type", "Data", "Age"], &[]);
        check_columns(&kind::LEASE, &["Name", "Holder", "Age"], &[]);
        check_columns(
            &kind::NODE,
            &["Name", "Status", "Roles", "Age", "Version"],
            &[
                "Internal-IP",
                "External-IP",
                "OS-Image",
                "Kernel-Version",
                "Container-Runtime",
            ],
        );
        check_columns(
            &kind::EVENT,
            &["Last Seen", "Type", "Reason", "Object", "Message"],
            &["Subobject", "Source", "First Seen", "Count", "Name"],
        );
        check_columns(
            &kind::DEPLOYMENT,
            &["Name", "Ready", "Up-to-date", "Available", "Age"],
            &["Containers", "Images", "Selector"],
        );
        check_columns(
            &kind::REPLICA_SET,
            &["Name", "Desired", "Current", "Ready", "Age"],
            &["Containers", "Images", "Selector"],
        );
        // The Event columns interleave wide ones in Kubernetes' order.
        let events = render(&kind::EVENT, &[], now(), IncludeObject::None);
        let order: Vec<&str> = events
            .column_definitions
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            order,
            [
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name"
            ]
        );
        // Integer cells are typed so.
        let replica_sets = render(&kind::REPLICA_SET, &[], now(), IncludeObject::None);
        let types: Vec<&str> = replica_sets
            .column_definitions
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(
            types,
            [
                "string", "integer", "integer", "integer", "string", "string", "string", "string"
            ]
        );
    }

    #[test]
    fn kinds_without_a_printer_get_the_default_columns() {
        static WIDGET: ResourceKind = ResourceKind {
            group: "example.com",
            version: "v1",
            api_version: "example.com/v1",
            kind: "Widget",
            plural: "widgets",
            singular: "widget",
            short_names: &[],
            namespaced: true,
        };
        let table = render(&WIDGET, &[], now(), IncludeObject::Metadata);
        let columns: Vec<(&str, &str)> = table
            .column_definitions
            .iter()
            .map(|c| (c.name.as_str(), c.type_.as_str()))
            .collect();
        assert_eq!(columns, [("Name", "string"), ("Created At", "date")]);
    }

    fn sample_pod() -> Object {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "prod", "uid": "u-1", "resourceVersion": "42",
                         "labels": {"app": "web"}, "creationTimestamp": ago(10)},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}}))
        .unwrap();
        pod.into()
    }

    #[test]
    fn rows_carry_the_object_includeobject_asks_for() {
        let table = render(&kind::POD, &[sample_pod()], now(), IncludeObject::Metadata);
        assert_eq!(
            table.rows[0].object,
            Some(
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                        "metadata": {"name": "web", "namespace": "prod", "uid": "u-1",
                                     "resourceVersion": "42", "labels": {"app": "web"},
                                     "creationTimestamp": ago(10)}})
            )
        );

        let table = render(&kind::POD, &[sample_pod()], now(), IncludeObject::Object);
        let object = table.rows[0].object.clone().unwrap();
        assert_eq!(object["kind"], "Pod");
        assert_eq!(object["apiVersion"], "v1");
        assert_eq!(object["spec"]["containers"][0]["image"], "nginx");

        let table = render(&kind::POD, &[sample_pod()], now(), IncludeObject::None);
        assert_eq!(table.rows[0].object, None);
    }

    #[test]
    fn table_serializes_as_kubectl_reads_it() {
        let table = render(&kind::POD, &[sample_pod()], now(), IncludeObject::Metadata);
        let value = serde_json::to_value(&table).unwrap();
        assert_eq!(value["kind"], "Table");
        assert_eq!(value["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            value["columnDefinitions"][0],
            json!({"name": "Name", "type": "string", "format": "name", "description": NAME_DOC, "priority": 0})
        );
        assert_eq!(value["columnDefinitions"][5]["name"], "IP");
        assert_eq!(value["columnDefinitions"][5]["priority"], 1);
        assert_eq!(
            value["rows"][0]["cells"],
            json!([
                "web", "0/1", "", "0", "10s", "<none>", "<none>", "<none>", "<none>"
            ])
        );
        assert_eq!(value["rows"][0]["object"]["metadata"]["namespace"], "prod");
    }

    #[test]
    fn objects_of_other_kinds_are_left_out() {
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
        let table = render(
            &kind::POD,
            &[sample_pod(), namespace.into(), sample_pod()],
            now(),
            IncludeObject::None,
        );
        assert_eq!(table.rows.len(), 2);
    }

    #[test]
    fn include_object_values() {
        for (value, expected) in [
            ("None", Some(IncludeObject::None)),
            ("Metadata", Some(IncludeObject::Metadata)),
            ("Object", Some(IncludeObject::Object)),
            ("", Some(IncludeObject::Metadata)),
            ("object", None),
            ("All", None),
        ] {
            assert_eq!(parse_include(value), expected, "{value:?}");
        }
        assert_eq!(IncludeObject::default(), IncludeObject::Metadata);
    }
}
