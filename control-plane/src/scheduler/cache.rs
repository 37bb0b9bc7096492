//! The scheduler's view of the cluster, as kube-scheduler's cache: per node, what it
//! offers (allocatable resources, labels, taints, readiness) and what the pods already
//! on it (bound, or assumed while their binding is in flight) take. Pods are added and
//! removed incrementally, so a scheduling decision never rescans the cluster's pods.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Taint;
use skiff_api::Quantity;
use skiff_api::types::{Container, Node, Pod, QuantityString, Toleration};

/// CPU a container without a CPU request counts as when scoring (kube's
/// `DefaultMilliCPURequest`), so such pods still spread.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory a container without a memory request counts as when scoring (kube's
/// `DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// The resources the scheduler accounts for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
}

impl Resources {
    fn add(&mut self, other: Self) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
    }

    fn sub(&mut self, other: Self) {
        self.milli_cpu = self.milli_cpu.saturating_sub(other.milli_cpu);
        self.memory = self.memory.saturating_sub(other.memory);
    }

    fn max(self, other: Self) -> Self {
        Self {
            milli_cpu: self.milli_cpu.max(other.milli_cpu),
            memory: self.memory.max(other.memory),
        }
    }
}

/// A host port a pod's container claims: `(hostIP, protocol, hostPort)`, with an empty
/// host IP read as `0.0.0.0` (every address), as kube's `HostPortInfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// The address, `0.0.0.0` for all.
    pub ip: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The port.
    pub port: i32,
}

impl HostPort {
    /// Whether two claims collide: same protocol and port, and the same address or
    /// either on every address.
    pub fn conflicts_with(&self, other: &Self) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == ANY_IP || other.ip == ANY_IP)
    }
}

/// The wildcard host IP.
const ANY_IP: &str = "0.0.0.0";

/// What scheduling needs to know of a pod, computed once from its spec.
#[derive(Clone, Debug, Default)]
pub struct PodInfo {
    /// Requests as the fit filter counts them (kube's `PodRequests`).
    pub requests: Resources,
    /// Requests with defaults for unset ones, as scoring counts them.
    pub non_zero_requests: Resources,
    /// The uid of the pod's controller (`ownerReferences` with `controller: true`).
    pub owner: Option<Arc<str>>,
    /// Host ports its containers claim.
    pub host_ports: Vec<HostPort>,
    /// `spec.nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
    /// `spec.tolerations`.
    pub tolerations: Vec<Toleration>,
}

impl PodInfo {
    /// Everything scheduling needs of `pod`.
    pub fn of(pod: &Pod) -> Self {
        let Some(spec) = pod.spec.as_ref() else {
            return Self::default();
        };
        let (requests, non_zero_requests) =
            pod_requests(&spec.containers, spec.init_containers.as_deref());
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|reference| reference.controller == Some(true))
            .map(|reference| Arc::from(reference.uid.as_str()));
        let host_ports = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .flat_map(|container| container.ports.iter().flatten())
            .filter(|port| port.host_port.is_some_and(|p| p > 0))
            .map(|port| HostPort {
                ip: port
                    .host_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| ANY_IP.to_owned()),
                protocol: port.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                port: port.host_port.unwrap_or_default(),
            })
            .collect();
        Self {
            requests,
            non_zero_requests,
            owner,
            host_ports,
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            tolerations: spec.tolerations.clone().unwrap_or_default(),
        }
    }
}

/// A pod's requests as Kubernetes computes them: the sum over its containers, raised
/// per resource to the largest init container's (init containers run one at a time,
/// before the others). The second value counts unset requests as the scoring defaults.
pub fn pod_requests(
    containers: &[Container],
    init_containers: Option<&[Container]>,
) -> (Resources, Resources) {
    let mut requests = Resources::default();
    let mut non_zero = Resources::default();
    for container in containers {
        let (exact, defaulted) = container_requests(container);
        requests.add(exact);
        non_zero.add(defaulted);
    }
    for container in init_containers.into_iter().flatten() {
        let (exact, defaulted) = container_requests(container);
        requests = requests.max(exact);
        non_zero = non_zero.max(defaulted);
    }
    (requests, non_zero)
}

/// One container's requests, exact and with scoring defaults for unset ones.
fn container_requests(container: &Container) -> (Resources, Resources) {
    let requests = container
        .resources
        .as_ref()
        .and_then(|resources| resources.requests.as_ref());
    let cpu = requests.and_then(|r| r.get("cpu")).map(milli_value);
    let memory = requests.and_then(|r| r.get("memory")).map(value);
    (
        Resources {
            milli_cpu: cpu.unwrap_or(0),
            memory: memory.unwrap_or(0),
        },
        Resources {
            milli_cpu: cpu.unwrap_or(DEFAULT_MILLI_CPU_REQUEST),
            memory: memory.unwrap_or(DEFAULT_MEMORY_REQUEST),
        },
    )
}

/// A quantity in milli-units (0 if unparsable: validation has already refused those).
fn milli_value(quantity: &QuantityString) -> i64 {
    Quantity::parse(&quantity.0)
        .map(|q| i64::try_from(q.milli_value()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A quantity in whole units (0 if unparsable).
fn value(quantity: &QuantityString) -> i64 {
    Quantity::parse(&quantity.0)
        .map(|q| i64::try_from(q.value()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What a node offers, from its Node object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeFacts {
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// `status.allocatable` cpu and memory (`capacity` when allocatable is unset).
    pub allocatable: Resources,
    /// `status.allocatable` pods.
    pub allowed_pods: i64,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.taints`.
    pub taints: Vec<Taint>,
}

impl NodeFacts {
    /// What `node` offers.
    pub fn of(node: &Node) -> Self {
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|conditions| conditions.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        let allocatable = status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
        let resource = |name: &str| allocatable.and_then(|a| a.get(name));
        let spec = node.spec.as_ref();
        Self {
            ready,
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            allocatable: Resources {
                milli_cpu: resource("cpu").map_or(0, milli_value),
                memory: resource("memory").map_or(0, value),
            },
            allowed_pods: resource("pods").map_or(0, value),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
        }
    }
}

/// One node and the pods on it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The node's name.
    pub name: String,
    /// What it offers; `None` while only its pods are known (no Node object).
    pub facts: Option<NodeFacts>,
    /// The sum of its pods' requests.
    pub requested: Resources,
    /// The same with scoring defaults.
    pub non_zero_requested: Resources,
    /// How many pods it holds.
    pub pods: i64,
    /// The host ports its pods claim.
    pub host_ports: Vec<HostPort>,
    /// Its pods per controller uid, for spreading.
    pub owners: HashMap<Arc<str>, u32>,
}

impl NodeInfo {
    /// An empty node named `name`.
    pub fn new(name: &str, facts: Option<NodeFacts>) -> Self {
        Self {
            name: name.to_owned(),
            facts,
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            pods: 0,
            host_ports: Vec::new(),
            owners: HashMap::new(),
        }
    }

    /// Accounts for `pod` running here.
    pub fn add_pod(&mut self, pod: &PodInfo) {
        self.requested.add(pod.requests);
        self.non_zero_requested.add(pod.non_zero_requests);
        self.pods += 1;
        self.host_ports.extend(pod.host_ports.iter().cloned());
        if let Some(owner) = &pod.owner {
            *self.owners.entry(owner.clone()).or_insert(0) += 1;
        }
    }

    /// Stops accounting for `pod` (which [`NodeInfo::add_pod`] added).
    pub fn remove_pod(&mut self, pod: &PodInfo) {
        self.requested.sub(pod.requests);
        self.non_zero_requested.sub(pod.non_zero_requests);
        self.pods -= 1;
        for port in &pod.host_ports {
            if let Some(idx) = self.host_ports.iter().position(|p| p == port) {
                self.host_ports.swap_remove(idx);
            }
        }
        if let Some(owner) = &pod.owner
            && let Some(count) = self.owners.get_mut(owner)
        {
            *count -= 1;
            if *count == 0 {
                self.owners.remove(owner);
            }
        }
    }

    /// How many of its pods `owner` controls.
    pub fn owned_by(&self, owner: Option<&Arc<str>>) -> u32 {
        owner.and_then(|o| self.owners.get(o)).copied().unwrap_or(0)
    }
}

/// A pod the cache accounts for on a node.
#[derive(Clone, Debug)]
struct CachedPod {
    uid: String,
    node: String,
    info: PodInfo,
    /// Placed by this scheduler, not yet seen bound through the informer.
    assumed: bool,
}

/// Every node and every pod placed on one (bound or assumed).
#[derive(Default)]
pub struct Cache {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    pods: HashMap<String, CachedPod>,
    /// Nodes with a Node object (the ones scheduling considers).
    known_nodes: usize,
}

impl Cache {
    /// The nodes, in a stable order (some without a Node object: skip those).
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// How many nodes have a Node object.
    pub fn node_count(&self) -> usize {
        self.known_nodes
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|&idx| &self.nodes[idx])
    }

    fn slot(&mut self, name: &str) -> usize {
        if let Some(&idx) = self.index.get(name) {
            return idx;
        }
        self.nodes.push(NodeInfo::new(name, None));
        let idx = self.nodes.len() - 1;
        self.index.insert(name.to_owned(), idx);
        idx
    }

    /// Drops the slot at `idx` if nothing refers to it any more.
    fn release(&mut self, idx: usize) {
        let node = &self.nodes[idx];
        if node.facts.is_some() || node.pods > 0 {
            return;
        }
        self.index.remove(&node.name);
        self.nodes.swap_remove(idx);
        if let Some(moved) = self.nodes.get(idx) {
            self.index.insert(moved.name.clone(), idx);
        }
    }

    /// Records a node's facts (added or changed); returns whether they changed.
    pub fn set_node(&mut self, name: &str, facts: NodeFacts) -> bool {
        let idx = self.slot(name);
        let node = &mut self.nodes[idx];
        if node.facts.as_ref() == Some(&facts) {
            return false;
        }
        if node.facts.is_none() {
            self.known_nodes += 1;
        }
        node.facts = Some(facts);
        true
    }

    /// Forgets a deleted node (its pods stay accounted until they go).
    pub fn remove_node(&mut self, name: &str) {
        let Some(&idx) = self.index.get(name) else {
            return;
        };
        if self.nodes[idx].facts.take().is_some() {
            self.known_nodes -= 1;
        }
        self.release(idx);
    }

    /// Whether `key` is placed by this scheduler and not yet seen bound.
    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|pod| pod.assumed)
    }

    /// Whether `key` is accounted on some node.
    pub fn contains(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// Accounts for pod `key` on `node`: bound (`assumed` false) or placed by this
    /// scheduler with its binding in flight. Replaces what was accounted for it before.
    pub fn add_pod(&mut self, key: &str, uid: &str, node: &str, info: PodInfo, assumed: bool) {
        self.remove_pod(key);
        let idx = self.slot(node);
        self.nodes[idx].add_pod(&info);
        self.pods.insert(
            key.to_owned(),
            CachedPod {
                uid: uid.to_owned(),
                node: node.to_owned(),
                info,
                assumed,
            },
        );
    }

    /// Marks an assumed pod as bound on `node` (the informer saw the binding), keeping
    /// its accounting; returns false when it is not assumed there, so the caller adds it.
    pub fn confirm(&mut self, key: &str, uid: &str, node: &str) -> bool {
        match self.pods.get_mut(key) {
            Some(pod) if pod.uid == uid && pod.node == node => {
                pod.assumed = false;
                true
            }
            _ => false,
        }
    }

    /// Stops accounting for pod `key` (deleted, finished, or its binding failed);
    /// returns whether it was accounted.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        let Some(pod) = self.pods.remove(key) else {
            return false;
        };
        if let Some(&idx) = self.index.get(&pod.node) {
            self.nodes[idx].remove_pod(&pod.info);
            self.release(idx);
        }
        true
    }

    /// Forgets an assumption of pod `key` with `uid` (its binding failed).
    pub fn forget(&mut self, key: &str, uid: &str) {
        if self
            .pods
            .get(key)
            .is_some_and(|pod| pod.assumed && pod.uid == uid)
        {
            self.remove_pod(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn container(requests: serde_json::Value) -> serde_json::Value {
        json!({"name": "c", "image": "i", "resources": {"requests": requests}})
    }

    #[test]
    fn requests_sum_containers_and_take_the_largest_init_container() {
        let info = PodInfo::of(&pod(json!({
            "containers": [container(json!({"cpu": "250m", "memory": "64Mi"})), container(json!({"cpu": "0.5"}))],
            "initContainers": [container(json!({"cpu": "1", "memory": "1Mi"})), container(json!({"memory": "32Mi"}))],
        })));
        assert_eq!(
            info.requests,
            Resources {
                milli_cpu: 1000,
                memory: 64 * 1024 * 1024
            }
        );
        // The second container has no memory request: scoring counts 200 MiB for it.
        assert_eq!(
            info.non_zero_requests,
            Resources {
                milli_cpu: 1000,
                memory: (64 + 200) * 1024 * 1024
            }
        );
        let empty = PodInfo::of(&pod(json!({"containers": [{"name": "c", "image": "i"}]})));
        assert_eq!(empty.requests, Resources::default());
        assert_eq!(
            empty.non_zero_requests,
            Resources {
                milli_cpu: DEFAULT_MILLI_CPU_REQUEST,
                memory: DEFAULT_MEMORY_REQUEST
            }
        );
    }

    #[test]
    fn pods_are_accounted_incrementally() {
        let mut cache = Cache::default();
        assert!(cache.set_node("n1", NodeFacts::default()));
        assert!(!cache.set_node("n1", NodeFacts::default()));
        let mut info = PodInfo::of(&pod(json!({
            "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}},
                            "ports": [{"containerPort": 80, "hostPort": 8080}]}],
        })));
        info.owner = Some(Arc::from("rs-1"));
        cache.add_pod("ns/a", "u1", "n1", info.clone(), true);
        cache.add_pod("ns/b", "u2", "n1", info.clone(), false);
        let node = cache.node("n1").unwrap();
        assert_eq!((node.pods, node.requested.milli_cpu), (2, 2000));
        assert_eq!(node.owned_by(info.owner.as_ref()), 2);
        assert_eq!(node.host_ports.len(), 2);
        assert!(cache.is_assumed("ns/a"));
        assert!(cache.confirm("ns/a", "u1", "n1"));
        assert!(!cache.is_assumed("ns/a"));
        // A forget only undoes an assumption.
        cache.forget("ns/a", "u1");
        assert!(cache.contains("ns/a"));
        assert!(cache.remove_pod("ns/a"));
        let node = cache.node("n1").unwrap();
        assert_eq!((node.pods, node.requested.milli_cpu), (1, 1000));
        assert_eq!(node.host_ports.len(), 1);
        // A pod on a node not (yet) known keeps a slot that scheduling skips.
        cache.add_pod("ns/c", "u3", "n2", info, false);
        assert_eq!(cache.node_count(), 1);
        assert_eq!(cache.nodes().len(), 2);
        cache.remove_pod("ns/c");
        assert_eq!(cache.nodes().len(), 1);
        cache.remove_node("n1");
        assert_eq!((cache.node_count(), cache.nodes().len()), (0, 1));
        cache.remove_pod("ns/b");
        assert!(cache.nodes().is_empty());
    }
}
