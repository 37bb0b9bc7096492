//! Filters: whether a pod may run on a node, and if not, why — in kube-scheduler's
//! words, so the `FailedScheduling` message reads as Kubernetes' does. Pure functions
//! over the cache's [`NodeInfo`] and a pod's [`PodInfo`].

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Taint;
use skiff_api::types::Toleration;

use super::cache::{NodeFacts, NodeInfo, PodInfo};

/// The taint a cordoned node is treated as having (kube's `TaintNodeUnschedulable`).
pub const TAINT_NODE_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Why a node cannot take a pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The node's `Ready` condition is not `True`.
    NotReady,
    /// The node is cordoned (`spec.unschedulable`).
    Unschedulable,
    /// A `NoSchedule`/`NoExecute` taint the pod does not tolerate: key and value.
    UntoleratedTaint(String, String),
    /// `spec.nodeSelector` does not match the node's labels.
    NodeSelector,
    /// A host port the pod wants is taken.
    HostPorts,
    /// Not enough CPU left.
    InsufficientCpu,
    /// Not enough memory left.
    InsufficientMemory,
    /// The node holds its allocatable number of pods.
    TooManyPods,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotReady => f.write_str("node(s) were not ready"),
            Self::Unschedulable => f.write_str("node(s) were unschedulable"),
            Self::UntoleratedTaint(key, value) => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Self::NodeSelector => f.write_str("node(s) didn't match Pod's node affinity/selector"),
            Self::HostPorts => {
                f.write_str("node(s) didn't have free ports for the requested pod ports")
            }
            Self::InsufficientCpu => f.write_str("Insufficient cpu"),
            Self::InsufficientMemory => f.write_str("Insufficient memory"),
            Self::TooManyPods => f.write_str("Too many pods"),
        }
    }
}

/// Runs every filter, in kube-scheduler's order, stopping at the first that fails (as
/// its framework does); the resource fit reports every resource short. Returns whether
/// the node fits; reasons it does not are pushed onto `reasons`.
pub fn fits(pod: &PodInfo, node: &NodeInfo, reasons: &mut Vec<Reason>) -> bool {
    let Some(facts) = &node.facts else {
        // Not a node (only its pods are known): never a candidate.
        reasons.push(Reason::NotReady);
        return false;
    };
    if !facts.ready {
        reasons.push(Reason::NotReady);
        return false;
    }
    if !schedulable(facts, &pod.tolerations) {
        reasons.push(Reason::Unschedulable);
        return false;
    }
    if let Some(taint) = untolerated_taint(&facts.taints, &pod.tolerations) {
        reasons.push(Reason::UntoleratedTaint(
            taint.key.clone(),
            taint.value.clone().unwrap_or_default(),
        ));
        return false;
    }
    if !selector_matches(&pod.node_selector, &facts.labels) {
        reasons.push(Reason::NodeSelector);
        return false;
    }
    if !ports_free(pod, node) {
        reasons.push(Reason::HostPorts);
        return false;
    }
    let before = reasons.len();
    resources_fit(pod, node, facts, reasons);
    reasons.len() == before
}

/// Kube's NodeUnschedulable: a cordoned node takes only pods tolerating its
/// `node.kubernetes.io/unschedulable:NoSchedule` taint.
pub fn schedulable(facts: &NodeFacts, tolerations: &[Toleration]) -> bool {
    if !facts.unschedulable {
        return true;
    }
    let taint = Taint {
        key: TAINT_NODE_UNSCHEDULABLE.to_owned(),
        effect: "NoSchedule".to_owned(),
        ..Taint::default()
    };
    tolerations.iter().any(|t| tolerates(t, &taint))
}

/// Kube's `Toleration.ToleratesTaint`: the effect matches (or the toleration names
/// none), the key matches (an empty key with `Exists` matches every key), and the value
/// is equal (`Equal`, the default) or anything (`Exists`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        "Exists" => true,
        _ => false,
    }
}

/// The first `NoSchedule` or `NoExecute` taint no toleration tolerates
/// (`PreferNoSchedule` only affects scoring in Kubernetes).
pub fn untolerated_taint<'a>(taints: &'a [Taint], tolerations: &[Toleration]) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|taint| taint.effect == "NoSchedule" || taint.effect == "NoExecute")
        .find(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

/// Whether every `nodeSelector` entry is among the node's labels.
pub fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

/// Kube's NodePorts: none of the pod's host ports collides with one taken on the node.
pub fn ports_free(pod: &PodInfo, node: &NodeInfo) -> bool {
    pod.host_ports.iter().all(|wanted| {
        !node
            .host_ports
            .iter()
            .any(|taken| taken.conflicts_with(wanted))
    })
}

/// Kube's NodeResourcesFit: one more pod fits the allocatable pod count, and the pod's
/// non-zero CPU and memory requests fit what the node's pods leave free.
pub fn resources_fit(pod: &PodInfo, node: &NodeInfo, facts: &NodeFacts, reasons: &mut Vec<Reason>) {
    if node.pods + 1 > facts.allowed_pods {
        reasons.push(Reason::TooManyPods);
    }
    let wanted = pod.requests;
    if wanted.milli_cpu > 0
        && wanted.milli_cpu > facts.allocatable.milli_cpu - node.requested.milli_cpu
    {
        reasons.push(Reason::InsufficientCpu);
    }
    if wanted.memory > 0 && wanted.memory > facts.allocatable.memory - node.requested.memory {
        reasons.push(Reason::InsufficientMemory);
    }
}

/// Why no node fits, as kube-scheduler's `FitError` reads: `0/3 nodes are available: 1
/// node(s) didn't match Pod's node affinity/selector, 2 Insufficient cpu.` — each
/// reason with the number of nodes it ruled out, sorted as strings.
pub fn fit_error_message(nodes: usize, reasons: &BTreeMap<Reason, usize>) -> String {
    let mut counted: Vec<String> = reasons
        .iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    counted.sort();
    let mut message = format!("0/{nodes} nodes are available:");
    if !counted.is_empty() {
        message.push(' ');
        message.push_str(&counted.join(", "));
        message.push('.');
    }
    message
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::scheduler::cache::{HostPort, Resources};

    fn toleration(value: serde_json::Value) -> Toleration {
        serde_json::from_value(value).unwrap()
    }

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.to_owned(),
            value: value.map(str::to_owned),
            effect: effect.to_owned(),
            time_added: None,
        }
    }

    #[test]
    fn tolerations_match_as_kubernetes() {
        let t = taint("dedicated", Some("gpu"), "NoSchedule");
        let check = |toleration_json: serde_json::Value, expected: bool| {
            assert_eq!(
                tolerates(&toleration(toleration_json.clone()), &t),
                expected,
                "{toleration_json}"
            );
        };
        check(
            json!({"key": "dedicated", "operator": "Equal", "value": "gpu"}),
            true,
        );
        check(json!({"key": "dedicated", "value": "gpu"}), true);
        check(json!({"key": "dedicated", "value": "cpu"}), false);
        check(json!({"key": "dedicated", "operator": "Exists"}), true);
        check(json!({"key": "other", "operator": "Exists"}), false);
        check(json!({"operator": "Exists"}), true);
        check(json!({"operator": "Exists", "effect": "NoSchedule"}), true);
        check(json!({"operator": "Exists", "effect": "NoExecute"}), false);
        check(
            json!({"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}),
            true,
        );
        check(json!({"key": "dedicated", "operator": "Bogus"}), false);
    }

    #[test]
    fn only_hard_taints_filter() {
        let taints = vec![
            taint("soft", None, "PreferNoSchedule"),
            taint("a", Some("1"), "NoSchedule"),
            taint("b", None, "NoExecute"),
        ];
        let found = untolerated_taint(&taints, &[]).unwrap();
        assert_eq!(found.key, "a");
        let tolerate_a = [toleration(json!({"key": "a", "value": "1"}))];
        assert_eq!(untolerated_taint(&taints, &tolerate_a).unwrap().key, "b");
        let all = [toleration(json!({"operator": "Exists"}))];
        assert!(untolerated_taint(&taints, &all).is_none());
    }

    #[test]
    fn selectors_need_every_label() {
        let labels: BTreeMap<String, String> =
            [("disk".into(), "ssd".into()), ("zone".into(), "a".into())].into();
        let check = |pairs: &[(&str, &str)], expected: bool| {
            let selector = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            assert_eq!(selector_matches(&selector, &labels), expected, "{pairs:?}");
        };
        check(&[], true);
        check(&[("disk", "ssd")], true);
        check(&[("disk", "ssd"), ("zone", "a")], true);
        check(&[("disk", "hdd")], false);
        check(&[("disk", "ssd"), ("gpu", "yes")], false);
    }

    fn port(ip: &str, protocol: &str, port: i32) -> HostPort {
        HostPort {
            ip: ip.to_owned(),
            protocol: protocol.to_owned(),
            port,
        }
    }

    #[test]
    fn host_ports_conflict_by_ip_protocol_and_port() {
        let mut node = NodeInfo::new("n", Some(ready_node(4000, 1 << 30, 10)));
        node.host_ports = vec![port("0.0.0.0", "TCP", 80), port("10.0.0.1", "UDP", 53)];
        let check = |wanted: HostPort, expected: bool| {
            let pod = PodInfo {
                host_ports: vec![wanted.clone()],
                ..PodInfo::default()
            };
            assert_eq!(ports_free(&pod, &node), expected, "{wanted:?}");
        };
        check(port("0.0.0.0", "TCP", 80), false);
        check(port("10.0.0.9", "TCP", 80), false);
        check(port("0.0.0.0", "UDP", 80), true);
        check(port("0.0.0.0", "TCP", 81), true);
        check(port("10.0.0.1", "UDP", 53), false);
        check(port("10.0.0.2", "UDP", 53), true);
        check(port("0.0.0.0", "UDP", 53), false);
    }

    fn ready_node(milli_cpu: i64, memory: i64, pods: i64) -> NodeFacts {
        NodeFacts {
            ready: true,
            allocatable: Resources { milli_cpu, memory },
            allowed_pods: pods,
            ..NodeFacts::default()
        }
    }

    fn requesting(milli_cpu: i64, memory: i64) -> PodInfo {
        PodInfo {
            requests: Resources { milli_cpu, memory },
            ..PodInfo::default()
        }
    }

    #[test]
    fn resources_fit_what_the_node_has_left() {
        let mut node = NodeInfo::new("n", Some(ready_node(2000, 1000, 3)));
        node.add_pod(&requesting(1500, 400));
        let check = |pod: PodInfo, node: &NodeInfo, expected: &[Reason]| {
            let mut reasons = Vec::new();
            assert_eq!(fits(&pod, node, &mut reasons), expected.is_empty());
            assert_eq!(reasons, expected);
        };
        check(requesting(500, 600), &node, &[]);
        check(requesting(501, 600), &node, &[Reason::InsufficientCpu]);
        check(
            requesting(501, 601),
            &node,
            &[Reason::InsufficientCpu, Reason::InsufficientMemory],
        );
        // Best-effort pods only need a pod slot.
        check(requesting(0, 0), &node, &[]);
        node.add_pod(&requesting(0, 0));
        node.add_pod(&requesting(0, 0));
        check(requesting(0, 0), &node, &[Reason::TooManyPods]);
    }

    #[test]
    fn filters_stop_at_the_first_failure() {
        let check = |facts: NodeFacts, pod: PodInfo, expected: Option<Reason>| {
            let node = NodeInfo::new("n", Some(facts));
            let mut reasons = Vec::new();
            assert_eq!(fits(&pod, &node, &mut reasons), expected.is_none());
            assert_eq!(reasons, expected.into_iter().collect::<Vec<_>>());
        };
        let huge = requesting(1_000_000, 0);
        let mut not_ready = ready_node(1000, 1000, 10);
        not_ready.ready = false;
        check(not_ready, huge.clone(), Some(Reason::NotReady));
        let mut cordoned = ready_node(1000, 1000, 10);
        cordoned.unschedulable = true;
        check(cordoned.clone(), huge.clone(), Some(Reason::Unschedulable));
        let tolerating = PodInfo {
            tolerations: vec![toleration(
                json!({"key": TAINT_NODE_UNSCHEDULABLE, "operator": "Exists", "effect": "NoSchedule"}),
            )],
            ..PodInfo::default()
        };
        check(cordoned, tolerating, None);
        let mut tainted = ready_node(1000, 1000, 10);
        tainted.taints = vec![taint("k", Some("v"), "NoExecute")];
        check(
            tainted,
            huge.clone(),
            Some(Reason::UntoleratedTaint("k".into(), "v".into())),
        );
        let selective = PodInfo {
            node_selector: [("disk".into(), "ssd".into())].into(),
            ..huge
        };
        check(
            ready_node(1000, 1000, 10),
            selective,
            Some(Reason::NodeSelector),
        );
        check(
            NodeFacts::default(),
            requesting(0, 0),
            Some(Reason::NotReady),
        );
    }

    #[test]
    fn fit_errors_read_as_kube_schedulers() {
        let reasons: BTreeMap<Reason, usize> =
            [(Reason::InsufficientCpu, 2), (Reason::NodeSelector, 1)].into();
        assert_eq!(
            fit_error_message(3, &reasons),
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient cpu."
        );
        let reasons: BTreeMap<Reason, usize> = [
            (
                Reason::UntoleratedTaint("dedicated".into(), String::new()),
                1,
            ),
            (Reason::Unschedulable, 1),
        ]
        .into();
        assert_eq!(
            fit_error_message(2, &reasons),
            "0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: }, 1 node(s) were unschedulable."
        );
    }
}
