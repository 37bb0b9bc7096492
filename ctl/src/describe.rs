//! `skiff describe`: kubectl-style descriptions of objects.
//!
//! A port of the layouts of `k8s.io/kubectl/pkg/describe` (v1.32) for the kinds
//! Skiff serves, working on objects as the API returns them. Lines are written
//! through the same two layers kubectl uses: a prefix writer (two spaces per
//! level, terminal escapes defused) and Go's `tabwriter` (`minwidth 0, tabwidth
//! 8, padding 2`), whose column blocks give describe its alignment.
//!
//! Timestamps print in UTC with their offset (`Mon, 02 Jan 2006 15:04:05 +0000`):
//! kubectl uses the local zone, which a pure function cannot know.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::{Map, Value};
use skiff_api::kind::ResourceKind;
use skiff_api::meta::jiff;

use crate::printers::human_duration;

/// The annotation kubectl hides from descriptions.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Annotations longer than this are wrapped and shortened.
const MAX_ANNOTATION_LEN: usize = 140;

/// Describes `object` of `kind` as `kubectl describe` does.
///
/// `events` are the events about the object (any order: they are sorted by
/// their last timestamp). `related` are the objects the description needs
/// besides the object itself:
/// - Deployment: its ReplicaSets (for `OldReplicaSets` and `NewReplicaSet`);
/// - ReplicaSet: its pods (for `Pods Status`);
/// - Service: its Endpoints (or EndpointSlices), for `Endpoints`;
/// - Node: the pods bound to it (for `Non-terminated Pods` and `Allocated resources`);
/// - anything else: ignored.
///
/// `now` is the reference for ages (`5s`, `3m20s`).
pub fn describe(
    kind: &ResourceKind,
    object: &Value,
    events: &[Value],
    related: &[Value],
    now: jiff::Timestamp,
) -> String {
    let mut describer = Describer {
        out: Writer::default(),
        now,
    };
    match kind.kind {
        "Pod" => describer.pod(object, events),
        "Deployment" => describer.deployment(object, events, related),
        "ReplicaSet" => describer.replica_set(object, events, related),
        "Service" => describer.service(object, events, related),
        "Namespace" => describer.namespace(object),
        "Node" => describer.node(object, events, related),
        "Endpoints" => describer.endpoints(object, events),
        "Secret" => describer.secret(object),
        _ => describer.generic(object, events),
    }
    describer.out.finish()
}

/// kubectl's `DescribePodTemplate` through a bare prefix writer, with no column
/// alignment (the tabs stay), as `rollout history --revision=N` prints a revision.
pub fn pod_template(template: &Value, now: jiff::Timestamp) -> String {
    let mut describer = Describer {
        out: Writer::default(),
        now,
    };
    describer.pod_template(Some(template));
    describer.out.pending
}

/// Levels of indentation, two spaces each, as kubectl names them.
const LEVEL_0: usize = 0;
const LEVEL_1: usize = 1;
const LEVEL_2: usize = 2;
const LEVEL_3: usize = 3;

/// kubectl's prefix writer feeding Go's tabwriter.
#[derive(Default)]
struct Writer {
    /// Text since the last flush, still to be aligned.
    pending: String,
    /// Aligned text.
    done: String,
}

impl Writer {
    /// Writes `text` indented by `level`, with terminal escapes made visible.
    fn write(&mut self, level: usize, text: &str) {
        for _ in 0..level {
            self.pending.push_str("  ");
        }
        for c in text.chars() {
            match c {
                '\u{1b}' => self.pending.push_str("^["),
                '\r' => self.pending.push_str("\\r"),
                c => self.pending.push(c),
            }
        }
    }

    /// Aligns everything written so far; later text forms new column blocks.
    fn flush(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.done.push_str(&tabwrite(&pending));
    }

    fn finish(mut self) -> String {
        self.flush();
        self.done
    }
}

/// Go's `text/tabwriter` with kubectl's settings (padding 2, spaces, no flags):
/// tab-terminated cells of consecutive lines form a column as wide as its
/// widest cell plus two; the text after a line's last tab is not in a column.
fn tabwrite(text: &str) -> String {
    let ends_with_newline = text.ends_with('\n');
    let body = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return String::new();
    }
    let lines: Vec<Vec<&str>> = body
        .split('\n')
        .map(|line| line.split('\t').collect())
        .collect();
    let mut out = String::with_capacity(text.len() * 2);
    let mut widths = Vec::new();
    format_columns(&lines, &mut widths, &mut out);
    if !ends_with_newline {
        out.pop();
    }
    out
}

/// The recursive column-block pass of Go's `tabwriter.format`.
fn format_columns(lines: &[Vec<&str>], widths: &mut Vec<usize>, out: &mut String) {
    let column = widths.len();
    let has_cell = |line: &Vec<&str>| column + 1 < line.len();
    let mut block_start = 0;
    let mut idx = 0;
    while idx < lines.len() {
        if !has_cell(&lines[idx]) {
            idx += 1;
            continue;
        }
        write_lines(&lines[block_start..idx], widths, out);
        block_start = idx;
        let mut width = 0;
        while idx < lines.len() && has_cell(&lines[idx]) {
            width = width.max(lines[idx][column].chars().count() + 2);
            idx += 1;
        }
        widths.push(width);
        format_columns(&lines[block_start..idx], widths, out);
        widths.pop();
        block_start = idx;
    }
    write_lines(&lines[block_start..], widths, out);
}

/// Writes whole lines, padding each cell that has a column width.
fn write_lines(lines: &[Vec<&str>], widths: &[usize], out: &mut String) {
    for line in lines {
        for (idx, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if let Some(width) = widths.get(idx) {
                let padding = width.saturating_sub(cell.chars().count());
                out.extend(std::iter::repeat_n(' ', padding));
            }
        }
        out.push('\n');
    }
}

/// One description being written.
struct Describer {
    out: Writer,
    now: jiff::Timestamp,
}

impl Describer {
    fn write(&mut self, level: usize, text: &str) {
        self.out.write(level, text);
    }

    fn pod(&mut self, pod: &Value, events: &[Value]) {
        let spec = field(pod, "spec");
        let status = field(pod, "status");
        self.write(
            LEVEL_0,
            &format!("Name:\t{}\n", text(pod, "/metadata/name")),
        );
        self.write(
            LEVEL_0,
            &format!("Namespace:\t{}\n", text(pod, "/metadata/namespace")),
        );
        if let Some(priority) = spec.get("priority").and_then(Value::as_i64) {
            self.write(LEVEL_0, &format!("Priority:\t{priority}\n"));
        }
        if let Some(class) = non_empty(spec, "/priorityClassName") {
            self.write(LEVEL_0, &format!("Priority Class Name:\t{class}\n"));
        }
        if let Some(class) = non_empty(spec, "/runtimeClassName") {
            self.write(LEVEL_0, &format!("Runtime Class Name:\t{class}\n"));
        }
        if let Some(account) = non_empty(spec, "/serviceAccountName") {
            self.write(LEVEL_0, &format!("Service Account:\t{account}\n"));
        }
        match non_empty(spec, "/nodeName") {
            None => self.write(LEVEL_0, "Node:\t<none>\n"),
            Some(node) => self.write(
                LEVEL_0,
                &format!("Node:\t{node}/{}\n", text(status, "/hostIP")),
            ),
        }
        if let Some(start) = status.get("startTime") {
            self.write(LEVEL_0, &format!("Start Time:\t{}\n", rfc1123z(start)));
        }
        self.labels("", "Labels", "\t", pod.pointer("/metadata/labels"));
        self.annotations("Annotations", pod.pointer("/metadata/annotations"));
        let phase = text(status, "/phase");
        match pod.pointer("/metadata/deletionTimestamp") {
            Some(deleted) if phase != "Failed" && phase != "Succeeded" => {
                self.write(
                    LEVEL_0,
                    &format!("Status:\tTerminating (lasts {})\n", self.since(deleted)),
                );
                let grace = pod
                    .pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                self.write(LEVEL_0, &format!("Termination Grace Period:\t{grace}s\n"));
            }
            _ => self.write(LEVEL_0, &format!("Status:\t{phase}\n")),
        }
        if let Some(reason) = non_empty(status, "/reason") {
            self.write(LEVEL_0, &format!("Reason:\t{reason}\n"));
        }
        if let Some(message) = non_empty(status, "/message") {
            self.write(LEVEL_0, &format!("Message:\t{message}\n"));
        }
        if let Some(profile) = spec.pointer("/securityContext/seccompProfile") {
            self.seccomp(LEVEL_0, LEVEL_0, profile);
        }
        self.write(LEVEL_0, &format!("IP:\t{}\n", text(status, "/podIP")));
        let pod_ips = items(status, "/podIPs");
        if pod_ips.is_empty() {
            self.write(LEVEL_0, "IPs:\t<none>\n");
        } else {
            self.write(LEVEL_0, "IPs:\n");
            for ip in pod_ips {
                self.write(LEVEL_1, &format!("IP:\t{}\n", text(ip, "/ip")));
            }
        }
        if let Some(controller) = controller_of(pod) {
            self.write(LEVEL_0, &format!("Controlled By:\t{controller}\n"));
        }
        if let Some(nominated) = non_empty(status, "/nominatedNodeName") {
            self.write(LEVEL_0, &format!("NominatedNodeName:\t{nominated}\n"));
        }
        if let Some(resources) = spec.get("resources") {
            self.write(LEVEL_0, "Resources:\n");
            self.resources(resources, LEVEL_1);
        }
        let context = Some(pod);
        let init_containers = items(spec, "/initContainers");
        if !init_containers.is_empty() {
            let statuses = items(status, "/initContainerStatuses");
            self.containers(
                "Init Containers",
                &init_containers,
                Some(&statuses),
                context,
                "",
            );
        }
        let statuses = items(status, "/containerStatuses");
        let containers = items(spec, "/containers");
        self.containers("Containers", &containers, Some(&statuses), context, "");
        let ephemeral = items(spec, "/ephemeralContainers");
        if !ephemeral.is_empty() {
            let statuses = items(status, "/ephemeralContainerStatuses");
            self.containers(
                "Ephemeral Containers",
                &ephemeral,
                Some(&statuses),
                context,
                "",
            );
        }
        let conditions = items(status, "/conditions");
        let gates = items(spec, "/readinessGates");
        if !gates.is_empty() {
            self.write(LEVEL_0, "Readiness Gates:\n  Type\tStatus\n");
            for gate in gates {
                let gate_type = text(gate, "/conditionType");
                let gate_status = conditions
                    .iter()
                    .find(|condition| text(condition, "/type") == gate_type)
                    .map_or("<none>", |condition| text(condition, "/status"));
                self.write(LEVEL_1, &format!("{gate_type} \t{gate_status} \n"));
            }
        }
        if !conditions.is_empty() {
            self.write(LEVEL_0, "Conditions:\n  Type\tStatus\n");
            for condition in conditions {
                self.write(
                    LEVEL_1,
                    &format!(
                        "{} \t{} \n",
                        text(condition, "/type"),
                        text(condition, "/status")
                    ),
                );
            }
        }
        self.volumes(&items(spec, "/volumes"), "");
        self.write(LEVEL_0, &format!("QoS Class:\t{}\n", qos_class(pod)));
        self.labels("", "Node-Selectors", "\t", spec.get("nodeSelector"));
        self.tolerations("", "Tolerations", &items(spec, "/tolerations"));
        self.topology_spread(&items(spec, "/topologySpreadConstraints"), "");
        self.events(events);
    }

    fn deployment(&mut self, deployment: &Value, events: &[Value], replica_sets: &[Value]) {
        let spec = field(deployment, "spec");
        let status = field(deployment, "status");
        self.write(
            LEVEL_0,
            &format!("Name:\t{}\n", text(deployment, "/metadata/name")),
        );
        self.write(
            LEVEL_0,
            &format!("Namespace:\t{}\n", text(deployment, "/metadata/namespace")),
        );
        self.write(
            LEVEL_0,
            &format!(
                "CreationTimestamp:\t{}\n",
                rfc1123z(
                    deployment
                        .pointer("/metadata/creationTimestamp")
                        .unwrap_or(&Value::Null)
                )
            ),
        );
        self.labels("", "Labels", "\t", deployment.pointer("/metadata/labels"));
        self.annotations("Annotations", deployment.pointer("/metadata/annotations"));
        self.write(
            LEVEL_0,
            &format!("Selector:\t{}\n", label_selector(spec.get("selector"))),
        );
        let count = |value: &Value, pointer: &str| {
            value.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
        };
        let desired = spec.get("replicas").and_then(Value::as_i64).unwrap_or(1);
        self.write(
            LEVEL_0,
            &format!(
                "Replicas:\t{desired} desired | {} updated | {} total | {} available | {} unavailable\n",
                count(status, "/updatedReplicas"),
                count(status, "/replicas"),
                count(status, "/availableReplicas"),
                count(status, "/unavailableReplicas"),
            ),
        );
        self.write(
            LEVEL_0,
            &format!("StrategyType:\t{}\n", text(spec, "/strategy/type")),
        );
        self.write(
            LEVEL_0,
            &format!("MinReadySeconds:\t{}\n", count(spec, "/minReadySeconds")),
        );
        if let Some(rolling) = spec.pointer("/strategy/rollingUpdate") {
            self.write(
                LEVEL_0,
                &format!(
                    "RollingUpdateStrategy:\t{} max unavailable, {} max surge\n",
                    int_or_string(rolling.get("maxUnavailable")),
                    int_or_string(rolling.get("maxSurge")),
                ),
            );
        }
        self.pod_template(spec.get("template"));
        self.controller_conditions(&items(status, "/conditions"));
        let (old, new) = split_replica_sets(deployment, replica_sets);
        if !old.is_empty() || !new.is_empty() {
            self.write(
                LEVEL_0,
                &format!("OldReplicaSets:\t{}\n", replica_sets_created(&old)),
            );
            self.write(
                LEVEL_0,
                &format!("NewReplicaSet:\t{}\n", replica_sets_created(&new)),
            );
        }
        self.events(events);
    }

    fn replica_set(&mut self, replica_set: &Value, events: &[Value], pods: &[Value]) {
        let spec = field(replica_set, "spec");
        self.write(
            LEVEL_0,
            &format!("Name:\t{}\n", text(replica_set, "/metadata/name")),
        );
        self.write(
            LEVEL_0,
            &format!("Namespace:\t{}\n", text(replica_set, "/metadata/namespace")),
        );
        let selector = label_selector(spec.get("selector"));
        let selector = if selector.is_empty() {
            "<none>".to_owned()
        } else {
            selector
        };
        self.write(LEVEL_0, &format!("Selector:\t{selector}\n"));
        self.labels("", "Labels", "\t", replica_set.pointer("/metadata/labels"));
        self.annotations("Annotations", replica_set.pointer("/metadata/annotations"));
        if let Some(controller) = controller_of(replica_set) {
            self.write(LEVEL_0, &format!("Controlled By:\t{controller}\n"));
        }
        self.write(
            LEVEL_0,
            &format!(
                "Replicas:\t{} current / {} desired\n",
                replica_set
                    .pointer("/status/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                spec.get("replicas").and_then(Value::as_i64).unwrap_or(1),
            ),
        );
        let uid = text(replica_set, "/metadata/uid");
        let mut phases = [0usize; 4];
        for pod in pods {
            let owned = uid.is_empty()
                || items(pod, "/metadata/ownerReferences").iter().any(|owner| {
                    owner.get("controller").and_then(Value::as_bool) == Some(true)
                        && text(owner, "/uid") == uid
                });
            if !owned {
                continue;
            }
            match text(pod, "/status/phase") {
                "Running" => phases[0] += 1,
                "Pending" => phases[1] += 1,
                "Succeeded" => phases[2] += 1,
                "Failed" => phases[3] += 1,
                _ => {}
            }
        }
        self.write(LEVEL_0, "Pods Status:\t");
        self.write(
            LEVEL_0,
            &format!(
                "{} Running / {} Waiting / {} Succeeded / {} Failed\n",
                phases[0], phases[1], phases[2], phases[3]
            ),
        );
        self.pod_template(spec.get("template"));
        self.controller_conditions(&items(replica_set, "/status/conditions"));
        self.events(events);
    }

    fn service(&mut self, service: &Value, events: &[Value], endpoints: &[Value]) {
        let spec = field(service, "spec");
        self.write(
            LEVEL_0,
            &format!("Name:\t{}\n", text(service, "/metadata/name")),
        );
        self.write(
            LEVEL_0,
            &format!("Namespace:\t{}\n", text(service, "/metadata/namespace")),
        );
        self.labels("", "Labels", "\t", service.pointer("/metadata/labels"));
        self.annotations("Annotations", service.pointer("/metadata/annotations"));
        let selector = string_map(spec.get("selector"))
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(",");
        let selector = if selector.is_empty() {
            "<none>".to_owned()
        } else {
            selector
        };
        self.write(LEVEL_0, &format!("Selector:\t{selector}\n"));
        self.write(LEVEL_0, &format!("Type:\t{}\n", text(spec, "/type")));
        if let Some(policy) = spec.get("ipFamilyPolicy").and_then(Value::as_str) {
            self.write(LEVEL_0, &format!("IP Family Policy:\t{policy}\n"));
        }
        let families = strings(spec, "/ipFamilies");
        let families = if families.is_empty() {
            "<none>".to_owned()
        } else {
            families.join(",")
        };
        self.write(LEVEL_0, &format!("IP Families:\t{families}\n"));
        self.write(LEVEL_0, &format!("IP:\t{}\n", text(spec, "/clusterIP")));
        let cluster_ips = strings(spec, "/clusterIPs");
        let cluster_ips = if cluster_ips.is_empty() {
            "<none>".to_owned()
        } else {
            cluster_ips.join(",")
        };
        self.write(LEVEL_0, &format!("IPs:\t{cluster_ips}\n"));
        let external_ips = strings(spec, "/externalIPs");
        if !external_ips.is_empty() {
            self.write(
                LEVEL_0,
                &format!("External IPs:\t{}\n", external_ips.join(",")),
            );
        }
        if let Some(ip) = non_empty(spec, "/loadBalancerIP") {
            self.write(LEVEL_0, &format!("Desired LoadBalancer IP:\t{ip}\n"));
        }
        if let Some(name) = non_empty(spec, "/externalName") {
            self.write(LEVEL_0, &format!("External Name:\t{name}\n"));
        }
        let ingress = items(service, "/status/loadBalancer/ingress");
        if !ingress.is_empty() {
            let list: Vec<String> = ingress
                .iter()
                .map(|entry| match non_empty(entry, "/ip") {
                    Some(ip) => match non_empty(entry, "/ipMode") {
                        Some(mode) => format!("{ip} ({mode})"),
                        None => ip.to_owned(),
                    },
                    None => text(entry, "/hostname").to_owned(),
                })
                .collect();
            self.write(
                LEVEL_0,
                &format!("LoadBalancer Ingress:\t{}\n", list.join(", ")),
            );
        }
        for port in items(spec, "/ports") {
            let port_name = text(port, "/name");
            let name = if port_name.is_empty() {
                "<unset>"
            } else {
                port_name
            };
            let protocol = text(port, "/protocol");
            let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
            self.write(LEVEL_0, &format!("Port:\t{name}\t{number}/{protocol}\n"));
            let target = int_or_string(port.get("targetPort"));
            self.write(LEVEL_0, &format!("TargetPort:\t{target}/{protocol}\n"));
            if let Some(node_port) = port
                .get("nodePort")
                .and_then(Value::as_i64)
                .filter(|&p| p != 0)
            {
                self.write(
                    LEVEL_0,
                    &format!("NodePort:\t{name}\t{node_port}/{protocol}\n"),
                );
            }
            self.write(
                LEVEL_0,
                &format!("Endpoints:\t{}\n", format_endpoints(endpoints, port_name)),
            );
        }
        self.write(
            LEVEL_0,
            &format!("Session Affinity:\t{}\n", text(spec, "/sessionAffinity")),
        );
        if let Some(policy) = non_empty(spec, "/externalTrafficPolicy") {
            self.write(LEVEL_0, &format!("External Traffic Policy:\t{policy}\n"));
        }
        if let Some(policy) = spec.get("internalTrafficPolicy").and_then(Value::as_str) {
            self.write(LEVEL_0, &format!("Internal Traffic Policy:\t{policy}\n"));
        }
        if let Some(port) = spec
            .get("healthCheckNodePort")
            .and_then(Value::as_i64)
            .filter(|&p| p != 0)
        {
            self.write(LEVEL_0, &format!("HealthCheck NodePort:\t{port}\n"));
        }
        let ranges = strings(spec, "/loadBalancerSourceRanges");
        if !ranges.is_empty() {
            self.write(
                LEVEL_0,
                &format!("LoadBalancer Source Ranges:\t{}\n", ranges.join(",")),
            );
        }
        self.events(events);
    }

    fn namespace(&mut self, namespace: &Value) {
        self.write(
            LEVEL_0,
            &format!("Name:\t{}\n", text(namespace, "/metadata/name")),
        );
        self.labels("", "Labels", "\t", namespace.pointer("/metadata/labels"));
        self.annotations("Annotations", namespace.pointer("/metadata/annotations"));
        self.write(
            LEVEL_0,
            &format!("Status:\t{}\n", text(namespace, "/status/phase")),
        );
        let conditions = items(namespace, "/status/conditions");
        if !conditions.is_empty() {
            self.write(LEVEL_0, "Conditions:\n");
            self.write(
                LEVEL_1,
                "Type\tStatus\tLastTransitionTime\tReason\tMessage\n",
            );
            self.write(
                LEVEL_1,
                "----\t------\t------------------\t------\t-------\n",
            );
            for condition in conditions {
                self.write(
                    LEVEL_1,
                    &format!(
                        "{}\t{}\t{}\t{}\t{}\n",
                        text(condition, "/type"),
                        text(condition, "/status"),
                        rfc1123z(condition.get("lastTransitionTime").unwrap_or(&Value::Null)),
                        text(condition, "/reason"),
                        text(condition, "/message"),
                    ),
                );
            }
        }
        // Skiff serves neither ResourceQuotas nor LimitRanges: a namespace has none.
        self.write(LEVEL_0, "\n");
        self.write(LEVEL_0, "No resource quota.\n");
        self.write(LEVEL_0, "\n");
        self.write(LEVEL_0, "No LimitRange resource.\n");
    }

    fn node(&mut self, node: &Value, events: &[Value], pods: &[Value]) {
        let spec = field(node, "spec");
        let status = field(node, "status");
        let name = text(node, "/metadata/name");
        self.write(LEVEL_0, &format!("Name:\t{name}\n"));
        let labels = string_map(node.pointer("/metadata/labels"));
        let mut roles: Vec<&str> = labels
            .iter()
            .filter_map(
                |(key, value)| match key.strip_prefix("node-role.kubernetes.io/") {
                    Some(role) if !role.is_empty() => Some(role),
                    Some(_) => None,
                    None if key == "kubernetes.io/role" && !value.is_empty() => {
                        Some(value.as_str())
                    }
                    None => None,
                },
            )
            .collect();
        roles.sort_unstable();
        roles.dedup();
        let roles = if roles.is_empty() {
            "<none>".to_owned()
        } else {
            roles.join(",")
        };
        self.write(LEVEL_0, &format!("Roles:\t{roles}\n"));
        self.labels("", "Labels", "\t", node.pointer("/metadata/labels"));
        self.annotations("Annotations", node.pointer("/metadata/annotations"));
        self.write(
            LEVEL_0,
            &format!(
                "CreationTimestamp:\t{}\n",
                rfc1123z(
                    node.pointer("/metadata/creationTimestamp")
                        .unwrap_or(&Value::Null)
                )
            ),
        );
        self.taints(&items(spec, "/taints"));
        let unschedulable = spec
            .get("unschedulable")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        self.write(LEVEL_0, &format!("Unschedulable:\t{unschedulable}\n"));
        let conditions = items(status, "/conditions");
        if !conditions.is_empty() {
            self.write(
                LEVEL_0,
                "Conditions:\n  Type\tStatus\tLastHeartbeatTime\tLastTransitionTime\tReason\tMessage\n",
            );
            self.write(
                LEVEL_1,
                "----\t------\t-----------------\t------------------\t------\t-------\n",
            );
            for condition in conditions {
                self.write(
                    LEVEL_1,
                    &format!(
                        "{} \t{} \t{} \t{} \t{} \t{}\n",
                        text(condition, "/type"),
                        text(condition, "/status"),
                        rfc1123z(condition.get("lastHeartbeatTime").unwrap_or(&Value::Null)),
                        rfc1123z(condition.get("lastTransitionTime").unwrap_or(&Value::Null)),
                        text(condition, "/reason"),
                        text(condition, "/message"),
                    ),
                );
            }
        }
        self.write(LEVEL_0, "Addresses:\n");
        for address in items(status, "/addresses") {
            self.write(
                LEVEL_1,
                &format!(
                    "{}:\t{}\n",
                    text(address, "/type"),
                    text(address, "/address")
                ),
            );
        }
        let capacity = string_map(status.get("capacity"));
        let allocatable = string_map(status.get("allocatable"));
        for (title, resources) in [("Capacity", &capacity), ("Allocatable", &allocatable)] {
            if !resources.is_empty() {
                self.write(LEVEL_0, &format!("{title}:\n"));
                for (resource, quantity) in resources {
                    self.write(LEVEL_0, &format!("  {resource}:\t{quantity}\n"));
                }
            }
        }
        self.write(LEVEL_0, "System Info:\n");
        for (title, key) in [
            ("Machine ID", "machineID"),
            ("System UUID", "systemUUID"),
            ("Boot ID", "bootID"),
            ("Kernel Version", "kernelVersion"),
            ("OS Image", "osImage"),
            ("Operating System", "operatingSystem"),
            ("Architecture", "architecture"),
            ("Container Runtime Version", "containerRuntimeVersion"),
            ("Kubelet Version", "kubeletVersion"),
            ("Kube-Proxy Version", "kubeProxyVersion"),
        ] {
            let value = status
                .pointer(&format!("/nodeInfo/{key}"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            self.write(LEVEL_0, &format!("  {title}:\t{value}\n"));
        }
        if let Some(cidr) = non_empty(spec, "/podCIDR") {
            self.write(LEVEL_0, &format!("PodCIDR:\t{cidr}\n"));
        }
        let cidrs = strings(spec, "/podCIDRs");
        if !cidrs.is_empty() {
            self.write(LEVEL_0, &format!("PodCIDRs:\t{}\n", cidrs.join(",")));
        }
        if let Some(provider) = non_empty(spec, "/providerID") {
            self.write(LEVEL_0, &format!("ProviderID:\t{provider}\n"));
        }
        let allocatable = if allocatable.is_empty() {
            capacity
        } else {
            allocatable
        };
        let pods: Vec<&Value> = pods
            .iter()
            .filter(|pod| {
                let phase = text(pod, "/status/phase");
                let bound = text(pod, "/spec/nodeName");
                (bound.is_empty() || bound == name) && phase != "Succeeded" && phase != "Failed"
            })
            .collect();
        self.node_resources(&pods, &allocatable);
        self.events(events);
    }

    /// `Non-terminated Pods` and `Allocated resources` of a node.
    fn node_resources(&mut self, pods: &[&Value], allocatable: &BTreeMap<String, String>) {
        self.write(
            LEVEL_0,
            &format!("Non-terminated Pods:\t({} in total)\n", pods.len()),
        );
        self.write(
            LEVEL_1,
            "Namespace\tName\t\tCPU Requests\tCPU Limits\tMemory Requests\tMemory Limits\tAge\n",
        );
        self.write(
            LEVEL_1,
            "---------\t----\t\t------------\t----------\t---------------\t-------------\t---\n",
        );
        let allocatable_of = |name: &str| {
            allocatable
                .get(name)
                .and_then(|quantity| Quantity::parse(quantity))
                .unwrap_or_default()
        };
        let cpu_total = allocatable_of("cpu").milli();
        let memory_total = allocatable_of("memory").value();
        let storage_total = allocatable_of("ephemeral-storage").value();
        let percent = |part: i128, total: i128| {
            if total == 0 {
                0
            } else {
                // Truncates like Go's int64(float64 / float64 * 100).
                (part as f64 / total as f64 * 100.0) as i64
            }
        };
        let mut requests_total: BTreeMap<String, Quantity> = BTreeMap::new();
        let mut limits_total: BTreeMap<String, Quantity> = BTreeMap::new();
        for pod in pods {
            let (requests, limits) = pod_requests_and_limits(pod);
            let get = |map: &BTreeMap<String, Quantity>, name: &str| {
                map.get(name).copied().unwrap_or_default()
            };
            let (cpu_request, cpu_limit) = (get(&requests, "cpu"), get(&limits, "cpu"));
            let (memory_request, memory_limit) = (get(&requests, "memory"), get(&limits, "memory"));
            self.write(
                LEVEL_1,
                &format!(
                    "{}\t{}\t\t{} ({}%)\t{} ({}%)\t{} ({}%)\t{} ({}%)\t{}\n",
                    text(pod, "/metadata/namespace"),
                    text(pod, "/metadata/name"),
                    cpu_request,
                    percent(cpu_request.milli(), cpu_total),
                    cpu_limit,
                    percent(cpu_limit.milli(), cpu_total),
                    memory_request,
                    percent(memory_request.value(), memory_total),
                    memory_limit,
                    percent(memory_limit.value(), memory_total),
                    self.since(
                        pod.pointer("/metadata/creationTimestamp")
                            .unwrap_or(&Value::Null)
                    ),
                ),
            );
            for (name, quantity) in requests {
                requests_total
                    .entry(name)
                    .or_insert_with(|| quantity.zero())
                    .add(quantity);
            }
            for (name, quantity) in limits {
                limits_total
                    .entry(name)
                    .or_insert_with(|| quantity.zero())
                    .add(quantity);
            }
        }
        self.write(
            LEVEL_0,
            "Allocated resources:\n  (Total limits may be over 100 percent, i.e., overcommitted.)\n",
        );
        self.write(LEVEL_1, "Resource\tRequests\tLimits\n");
        self.write(LEVEL_1, "--------\t--------\t------\n");
        let get = |map: &BTreeMap<String, Quantity>, name: &str| {
            map.get(name).copied().unwrap_or_default()
        };
        let cpu = (get(&requests_total, "cpu"), get(&limits_total, "cpu"));
        self.write(
            LEVEL_1,
            &format!(
                "cpu\t{} ({}%)\t{} ({}%)\n",
                cpu.0,
                percent(cpu.0.milli(), cpu_total),
                cpu.1,
                percent(cpu.1.milli(), cpu_total)
            ),
        );
        for (name, total) in [
            ("memory", memory_total),
            ("ephemeral-storage", storage_total),
        ] {
            let (requests, limits) = (get(&requests_total, name), get(&limits_total, name));
            self.write(
                LEVEL_1,
                &format!(
                    "{name}\t{requests} ({}%)\t{limits} ({}%)\n",
                    percent(requests.value(), total),
                    percent(limits.value(), total)
                ),
            );
        }
        let standard = |name: &str| {
            matches!(
                name,
                "cpu" | "memory" | "ephemeral-storage" | "storage" | "pods"
            ) || name.starts_with("requests.")
                || name.starts_with("limits.")
        };
        let huge_pages: Vec<&String> = allocatable
            .keys()
            .filter(|name| name.starts_with("hugepages-"))
            .collect();
        for name in huge_pages {
            let (requests, limits) = (get(&requests_total, name), get(&limits_total, name));
            let total = allocatable_of(name).value();
            self.write(
                LEVEL_1,
                &format!(
                    "{name}\t{requests} ({}%)\t{limits} ({}%)\n",
                    percent(requests.value(), total),
                    percent(limits.value(), total)
                ),
            );
        }
        let extended: Vec<&String> = allocatable
            .keys()
            .filter(|name| !name.starts_with("hugepages-") && !standard(name))
            .collect();
        for name in extended {
            let (requests, limits) = (get(&requests_total, name), get(&limits_total, name));
            self.write(LEVEL_1, &format!("{name}\t{requests}\t{limits}\n"));
        }
    }

    fn endpoints(&mut self, endpoints: &Value, events: &[Value]) {
        self.write(
            LEVEL_0,
            &format!("Name:\t{}\n", text(endpoints, "/metadata/name")),
        );
        self.write(
            LEVEL_0,
            &format!("Namespace:\t{}\n", text(endpoints, "/metadata/namespace")),
        );
        self.labels("", "Labels", "\t", endpoints.pointer("/metadata/labels"));
        self.annotations("Annotations", endpoints.pointer("/metadata/annotations"));
        self.write(LEVEL_0, "Subsets:\n");
        for subset in items(endpoints, "/subsets") {
            for (title, key) in [
                ("Addresses", "/addresses"),
                ("NotReadyAddresses", "/notReadyAddresses"),
            ] {
                let addresses: Vec<&str> = items(subset, key)
                    .iter()
                    .map(|address| text(address, "/ip"))
                    .collect();
                let addresses = if addresses.is_empty() {
                    "<none>".to_owned()
                } else {
                    addresses.join(",")
                };
                self.write(LEVEL_1, &format!("{title}:\t{addresses}\n"));
            }
            let ports = items(subset, "/ports");
            if !ports.is_empty() {
                self.write(LEVEL_1, "Ports:\n");
                self.write(LEVEL_2, "Name\tPort\tProtocol\n");
                self.write(LEVEL_2, "----\t----\t--------\n");
                for port in ports {
                    let name = non_empty(port, "/name").unwrap_or("<unset>");
                    self.write(
                        LEVEL_2,
                        &format!(
                            "{name}\t{}\t{}\n",
                            port.get("port").and_then(Value::as_i64).unwrap_or(0),
                            text(port, "/protocol")
                        ),
                    );
                }
            }
            self.write(LEVEL_0, "\n");
        }
        self.events(events);
    }

    /// kubectl's `describeSecret`: sizes, never values (except a service account's
    /// token), and no events.
    fn secret(&mut self, secret: &Value) {
        use base64::Engine as _;
        self.write(
            LEVEL_0,
            &format!("Name:\t{}\n", text(secret, "/metadata/name")),
        );
        self.write(
            LEVEL_0,
            &format!("Namespace:\t{}\n", text(secret, "/metadata/namespace")),
        );
        self.labels("", "Labels", "\t", secret.pointer("/metadata/labels"));
        self.annotations("Annotations", secret.pointer("/metadata/annotations"));
        let type_ = text(secret, "/type");
        self.write(LEVEL_0, &format!("\nType:\t{type_}\n"));
        self.write(LEVEL_0, "\nData\n====\n");
        let Some(data) = secret.get("data").and_then(Value::as_object) else {
            return;
        };
        for (key, value) in data {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.as_str().unwrap_or_default())
                .unwrap_or_default();
            let shown = if key == "token" && type_ == "kubernetes.io/service-account-token" {
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                format!("{} bytes", bytes.len())
            };
            self.write(LEVEL_0, &format!("{key}:\t{shown}\n"));
        }
    }

    /// kubectl's generic describer: metadata, then every other field sorted,
    /// with labels made of the field names (`involvedObject` → `Involved Object`).
    fn generic(&mut self, object: &Value, events: &[Value]) {
        self.write(
            LEVEL_0,
            &format!("Name:\t{}\n", text(object, "/metadata/name")),
        );
        self.write(
            LEVEL_0,
            &format!("Namespace:\t{}\n", text(object, "/metadata/namespace")),
        );
        self.labels("", "Labels", "\t", object.pointer("/metadata/labels"));
        self.annotations("Annotations", object.pointer("/metadata/annotations"));
        if let Some(content) = object.as_object() {
            let skip = [
                ".metadata.managedFields",
                ".metadata.name",
                ".metadata.namespace",
                ".metadata.labels",
                ".metadata.annotations",
            ];
            self.unstructured(LEVEL_0, content, "", &skip);
        }
        self.events(events);
    }

    fn unstructured(
        &mut self,
        level: usize,
        content: &Map<String, Value>,
        prefix: &str,
        skip: &[&str],
    ) {
        let mut keys: Vec<&String> = content.keys().collect();
        keys.sort();
        for key in keys {
            let path = format!("{prefix}.{key}");
            if skip.contains(&path.as_str()) {
                continue;
            }
            match &content[key] {
                Value::Object(map) => {
                    self.write(level, &format!("{}:\n", smart_label(key)));
                    self.unstructured(level + 1, map, &path, skip);
                }
                Value::Array(values) => {
                    self.write(level, &format!("{}:\n", smart_label(key)));
                    for value in values {
                        match value {
                            Value::Object(map) => self.unstructured(level + 1, map, &path, skip),
                            other => self.write(level + 1, &format!("{}\n", go_value(other))),
                        }
                    }
                }
                other => self.write(
                    level,
                    &format!("{}:\t{}\n", smart_label(key), go_value(other)),
                ),
            }
        }
    }

    /// `Pod Template:` of deployments and replica sets.
    fn pod_template(&mut self, template: Option<&Value>) {
        self.write(LEVEL_0, "Pod Template:\n");
        let Some(template) = template else {
            self.write(LEVEL_1, "<unset>");
            return;
        };
        let spec = field(template, "spec");
        self.labels("", "  Labels", "\t", template.pointer("/metadata/labels"));
        if template
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .is_some_and(|annotations| !annotations.is_empty())
        {
            self.annotations("  Annotations", template.pointer("/metadata/annotations"));
        }
        if let Some(account) = non_empty(spec, "/serviceAccountName") {
            self.write(LEVEL_1, &format!("Service Account:\t{account}\n"));
        }
        let init_containers = items(spec, "/initContainers");
        if !init_containers.is_empty() {
            self.containers("Init Containers", &init_containers, None, None, "  ");
        }
        self.containers("Containers", &items(spec, "/containers"), None, None, "  ");
        self.volumes(&items(spec, "/volumes"), "  ");
        self.topology_spread(&items(spec, "/topologySpreadConstraints"), "  ");
        if let Some(class) = non_empty(spec, "/priorityClassName") {
            self.write(LEVEL_1, &format!("Priority Class Name:\t{class}\n"));
        }
        self.labels("", "  Node-Selectors", "\t", spec.get("nodeSelector"));
        self.tolerations("", "  Tolerations", &items(spec, "/tolerations"));
    }

    /// The `Type / Status / Reason` conditions table of deployments and replica sets.
    fn controller_conditions(&mut self, conditions: &[&Value]) {
        if conditions.is_empty() {
            return;
        }
        self.write(LEVEL_0, "Conditions:\n  Type\tStatus\tReason\n");
        self.write(LEVEL_1, "----\t------\t------\n");
        for condition in conditions {
            self.write(
                LEVEL_1,
                &format!(
                    "{} \t{}\t{}\n",
                    text(condition, "/type"),
                    text(condition, "/status"),
                    text(condition, "/reason")
                ),
            );
        }
    }

    /// `Containers:` and each container; `statuses` and `pod` are absent for templates.
    fn containers(
        &mut self,
        label: &str,
        containers: &[&Value],
        statuses: Option<&[&Value]>,
        pod: Option<&Value>,
        space: &str,
    ) {
        let none = if containers.is_empty() { " <none>" } else { "" };
        self.write(LEVEL_0, &format!("{space}{label}:{none}\n"));
        let name_indent = if space.is_empty() { "" } else { " " };
        for container in containers {
            let name = text(container, "/name");
            let status = statuses.and_then(|statuses| {
                statuses
                    .iter()
                    .copied()
                    .find(|status| text(status, "/name") == name)
            });
            self.write(LEVEL_1, &format!("{name_indent}{name}:\n"));
            if let Some(status) = status {
                self.write(
                    LEVEL_2,
                    &format!("Container ID:\t{}\n", text(status, "/containerID")),
                );
            }
            self.write(LEVEL_2, &format!("Image:\t{}\n", text(container, "/image")));
            if let Some(status) = status {
                self.write(
                    LEVEL_2,
                    &format!("Image ID:\t{}\n", text(status, "/imageID")),
                );
            }
            let ports = items(container, "/ports");
            let port_list = |key: &str| {
                ports
                    .iter()
                    .map(|port| {
                        format!(
                            "{}/{}",
                            port.get(key).and_then(Value::as_i64).unwrap_or(0),
                            text(port, "/protocol")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            for (single, plural, list) in [
                ("Port", "Ports", port_list("containerPort")),
                ("Host Port", "Host Ports", port_list("hostPort")),
            ] {
                if list.contains(',') {
                    self.write(LEVEL_2, &format!("{plural}:\t{list}\n"));
                } else {
                    let list = if list.is_empty() {
                        "<none>".to_owned()
                    } else {
                        list
                    };
                    self.write(LEVEL_2, &format!("{single}:\t{list}\n"));
                }
            }
            if let Some(profile) = container.pointer("/securityContext/seccompProfile") {
                self.seccomp(LEVEL_2, LEVEL_3, profile);
            }
            for (title, key) in [("Command", "/command"), ("Args", "/args")] {
                let lines = strings(container, key);
                if !lines.is_empty() {
                    self.write(LEVEL_2, &format!("{title}:\n"));
                    for line in lines.iter().flat_map(|line| line.split('\n')) {
                        self.write(LEVEL_3, &format!("{line}\n"));
                    }
                }
            }
            if let Some(status) = status {
                self.container_state("State", field(status, "state"));
                if status.pointer("/lastState/terminated").is_some() {
                    self.container_state("Last State", field(status, "lastState"));
                }
                let ready = status
                    .get("ready")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                self.write(
                    LEVEL_2,
                    &format!("Ready:\t{}\n", if ready { "True" } else { "False" }),
                );
                self.write(
                    LEVEL_2,
                    &format!(
                        "Restart Count:\t{}\n",
                        status
                            .get("restartCount")
                            .and_then(Value::as_i64)
                            .unwrap_or(0)
                    ),
                );
            }
            if let Some(resources) = container.get("resources") {
                self.resources(resources, LEVEL_2);
            }
            for (title, key) in [
                ("Liveness", "livenessProbe"),
                ("Readiness", "readinessProbe"),
                ("Startup", "startupProbe"),
            ] {
                if let Some(probe) = container.get(key) {
                    self.write(LEVEL_2, &format!("{title}:\t{}\n", describe_probe(probe)));
                }
            }
            let env_from = items(container, "/envFrom");
            if !env_from.is_empty() {
                self.write(LEVEL_2, "Environment Variables from:\n");
                for source in env_from {
                    let (from, reference) =
                        match (source.get("configMapRef"), source.get("secretRef")) {
                            (Some(reference), _) => ("ConfigMap", reference),
                            (None, Some(reference)) => ("Secret", reference),
                            (None, None) => ("", &Value::Null),
                        };
                    let optional = reference
                        .get("optional")
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    let name = text(reference, "/name");
                    match non_empty(source, "/prefix") {
                        None => {
                            self.write(LEVEL_3, &format!("{name}\t{from}\tOptional: {optional}\n"))
                        }
                        Some(prefix) => self.write(
                            LEVEL_3,
                            &format!(
                                "{name}\t{from} with prefix '{prefix}'\tOptional: {optional}\n"
                            ),
                        ),
                    }
                }
            }
            self.environment(container, pod);
            self.mounts(container);
        }
    }

    fn environment(&mut self, container: &Value, pod: Option<&Value>) {
        let env = items(container, "/env");
        let none = if env.is_empty() { "\t<none>" } else { "" };
        self.write(LEVEL_2, &format!("Environment:{none}\n"));
        for variable in env {
            let name = text(variable, "/name");
            let Some(source) = variable.get("valueFrom") else {
                for (idx, line) in text(variable, "/value").split('\n').enumerate() {
                    if idx == 0 {
                        self.write(LEVEL_3, &format!("{name}:\t{line}\n"));
                    } else {
                        self.write(LEVEL_3, &format!("\t{line}\n"));
                    }
                }
                continue;
            };
            if let Some(field_ref) = source.get("fieldRef") {
                let path = text(field_ref, "/fieldPath");
                let value = pod.map(|pod| pod_field(pod, path)).unwrap_or_default();
                self.write(
                    LEVEL_3,
                    &format!(
                        "{name}:\t{value} ({}:{path})\n",
                        text(field_ref, "/apiVersion")
                    ),
                );
            } else if let Some(resource_ref) = source.get("resourceFieldRef") {
                let resource = text(resource_ref, "/resource");
                let mut value = container_resource(container, resource);
                if value == "0" && (resource == "limits.cpu" || resource == "limits.memory") {
                    value = "node allocatable".to_owned();
                }
                self.write(LEVEL_3, &format!("{name}:\t{value} ({resource})\n"));
            } else if let Some(key_ref) = source.get("secretKeyRef") {
                let optional = key_ref
                    .get("optional")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                self.write(
                    LEVEL_3,
                    &format!(
                        "{name}:\t<set to the key '{}' in secret '{}'>\tOptional: {optional}\n",
                        text(key_ref, "/key"),
                        text(key_ref, "/name")
                    ),
                );
            } else if let Some(key_ref) = source.get("configMapKeyRef") {
                let optional = key_ref
                    .get("optional")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                self.write(
                    LEVEL_3,
                    &format!(
                        "{name}:\t<set to the key '{}' of config map '{}'>\tOptional: {optional}\n",
                        text(key_ref, "/key"),
                        text(key_ref, "/name")
                    ),
                );
            }
        }
    }

    fn mounts(&mut self, container: &Value) {
        let mut mounts = items(container, "/volumeMounts");
        let none = if mounts.is_empty() { "\t<none>" } else { "" };
        self.write(LEVEL_2, &format!("Mounts:{none}\n"));
        mounts.sort_by(|a, b| text(a, "/mountPath").cmp(text(b, "/mountPath")));
        for mount in mounts {
            let read_only = mount
                .get("readOnly")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let mut flags = vec![if read_only {
                "ro".to_owned()
            } else {
                "rw".to_owned()
            }];
            if let Some(sub_path) = non_empty(mount, "/subPath") {
                flags.push(format!("path={sub_path:?}"));
            }
            self.write(
                LEVEL_3,
                &format!(
                    "{} from {} ({})\n",
                    text(mount, "/mountPath"),
                    text(mount, "/name"),
                    flags.join(",")
                ),
            );
        }
        let mut devices = items(container, "/volumeDevices");
        if !devices.is_empty() {
            self.write(LEVEL_2, &format!("Devices:{none}\n"));
            devices.sort_by(|a, b| text(a, "/devicePath").cmp(text(b, "/devicePath")));
            for device in devices {
                self.write(
                    LEVEL_3,
                    &format!(
                        "{} from {}\n",
                        text(device, "/devicePath"),
                        text(device, "/name")
                    ),
                );
            }
        }
    }

    fn container_state(&mut self, title: &str, state: &Value) {
        if let Some(running) = state.get("running") {
            self.write(LEVEL_2, &format!("{title}:\tRunning\n"));
            self.write(
                LEVEL_3,
                &format!(
                    "Started:\t{}\n",
                    rfc1123z(running.get("startedAt").unwrap_or(&Value::Null))
                ),
            );
        } else if let Some(waiting) = state.get("waiting") {
            self.write(LEVEL_2, &format!("{title}:\tWaiting\n"));
            if let Some(reason) = non_empty(waiting, "/reason") {
                self.write(LEVEL_3, &format!("Reason:\t{reason}\n"));
            }
        } else if let Some(terminated) = state.get("terminated") {
            self.write(LEVEL_2, &format!("{title}:\tTerminated\n"));
            if let Some(reason) = non_empty(terminated, "/reason") {
                self.write(LEVEL_3, &format!("Reason:\t{reason}\n"));
            }
            if let Some(message) = non_empty(terminated, "/message") {
                self.write(LEVEL_3, &format!("Message:\t{message}\n"));
            }
            let number = |key: &str| terminated.get(key).and_then(Value::as_i64).unwrap_or(0);
            self.write(LEVEL_3, &format!("Exit Code:\t{}\n", number("exitCode")));
            if number("signal") > 0 {
                self.write(LEVEL_3, &format!("Signal:\t{}\n", number("signal")));
            }
            for (label, key) in [("Started", "startedAt"), ("Finished", "finishedAt")] {
                self.write(
                    LEVEL_3,
                    &format!(
                        "{label}:\t{}\n",
                        rfc1123z(terminated.get(key).unwrap_or(&Value::Null))
                    ),
                );
            }
        } else {
            self.write(LEVEL_2, &format!("{title}:\tWaiting\n"));
        }
    }

    fn resources(&mut self, resources: &Value, level: usize) {
        for (title, key) in [("Limits", "limits"), ("Requests", "requests")] {
            let quantities = string_map(resources.get(key));
            if !quantities.is_empty() {
                self.write(level, &format!("{title}:\n"));
            }
            for (name, quantity) in quantities {
                self.write(level + 1, &format!("{name}:\t{quantity}\n"));
            }
        }
    }

    fn seccomp(&mut self, level: usize, localhost_level: usize, profile: &Value) {
        let profile_type = text(profile, "/type");
        self.write(level, &format!("SeccompProfile:\t{profile_type}\n"));
        if profile_type == "Localhost" {
            self.write(
                localhost_level,
                &format!(
                    "LocalhostProfile:\t{}\n",
                    text(profile, "/localhostProfile")
                ),
            );
        }
    }

    fn volumes(&mut self, volumes: &[&Value], space: &str) {
        if volumes.is_empty() {
            self.write(LEVEL_0, &format!("{space}Volumes:\t<none>\n"));
            return;
        }
        self.write(LEVEL_0, &format!("{space}Volumes:\n"));
        let name_indent = if space.is_empty() { "" } else { " " };
        for volume in volumes {
            self.write(
                LEVEL_1,
                &format!("{name_indent}{}:\n", text(volume, "/name")),
            );
            let flag =
                |value: &Value, key: &str| value.get(key).and_then(Value::as_bool).unwrap_or(false);
            if let Some(host_path) = volume.get("hostPath") {
                let host_path_type = non_empty(host_path, "/type").unwrap_or("<none>");
                self.write(
                    LEVEL_2,
                    &format!(
                        "Type:\tHostPath (bare host directory volume)\n    Path:\t{}\n    HostPathType:\t{host_path_type}\n",
                        text(host_path, "/path")
                    ),
                );
            } else if let Some(empty_dir) = volume.get("emptyDir") {
                let size_limit = non_empty(empty_dir, "/sizeLimit")
                    .filter(|limit| Quantity::parse(limit).is_some_and(|q| q.nano > 0))
                    .unwrap_or("<unset>");
                self.write(
                    LEVEL_2,
                    &format!(
                        "Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)\n    Medium:\t{}\n    SizeLimit:\t{size_limit}\n",
                        text(empty_dir, "/medium")
                    ),
                );
            } else if let Some(secret) = volume.get("secret") {
                self.write(
                    LEVEL_2,
                    &format!(
                        "Type:\tSecret (a volume populated by a Secret)\n    SecretName:\t{}\n    Optional:\t{}\n",
                        text(secret, "/secretName"),
                        flag(secret, "optional")
                    ),
                );
            } else if let Some(config_map) = volume.get("configMap") {
                self.write(
                    LEVEL_2,
                    &format!(
                        "Type:\tConfigMap (a volume populated by a ConfigMap)\n    Name:\t{}\n    Optional:\t{}\n",
                        text(config_map, "/name"),
                        flag(config_map, "optional")
                    ),
                );
            } else if let Some(claim) = volume.get("persistentVolumeClaim") {
                self.write(
                    LEVEL_2,
                    &format!(
                        "Type:\tPersistentVolumeClaim (a reference to a PersistentVolumeClaim in the same namespace)\n    ClaimName:\t{}\n    ReadOnly:\t{}\n",
                        text(claim, "/claimName"),
                        flag(claim, "readOnly")
                    ),
                );
            } else if let Some(projected) = volume.get("projected") {
                self.write(
                    LEVEL_2,
                    "Type:\tProjected (a volume that contains injected data from multiple sources)\n",
                );
                let optional = |value: &Value| match value.get("optional").and_then(Value::as_bool)
                {
                    Some(optional) => optional.to_string(),
                    None => "<nil>".to_owned(),
                };
                for source in items(projected, "/sources") {
                    if let Some(secret) = source.get("secret") {
                        self.write(
                            LEVEL_2,
                            &format!(
                                "SecretName:\t{}\n    SecretOptionalName:\t{}\n",
                                text(secret, "/name"),
                                optional(secret)
                            ),
                        );
                    } else if source.get("downwardAPI").is_some() {
                        self.write(LEVEL_2, "DownwardAPI:\ttrue\n");
                    } else if let Some(config_map) = source.get("configMap") {
                        self.write(
                            LEVEL_2,
                            &format!(
                                "ConfigMapName:\t{}\n    ConfigMapOptional:\t{}\n",
                                text(config_map, "/name"),
                                optional(config_map)
                            ),
                        );
                    } else if let Some(token) = source.get("serviceAccountToken") {
                        self.write(
                            LEVEL_2,
                            &format!(
                                "TokenExpirationSeconds:\t{}\n",
                                token
                                    .get("expirationSeconds")
                                    .and_then(Value::as_i64)
                                    .unwrap_or(0)
                            ),
                        );
                    }
                }
            } else if let Some(downward) = volume.get("downwardAPI") {
                self.write(
                    LEVEL_2,
                    "Type:\tDownwardAPI (a volume populated by information about the pod)\n    Items:\n",
                );
                for item in items(downward, "/items") {
                    let path = text(item, "/path");
                    if let Some(field_ref) = item.get("fieldRef") {
                        self.write(
                            LEVEL_3,
                            &format!("{} -> {path}\n", text(field_ref, "/fieldPath")),
                        );
                    }
                    if let Some(resource_ref) = item.get("resourceFieldRef") {
                        self.write(
                            LEVEL_3,
                            &format!("{} -> {path}\n", text(resource_ref, "/resource")),
                        );
                    }
                }
            } else if let Some(image) = volume.get("image") {
                self.write(
                    LEVEL_2,
                    &format!(
                        "Type:\tImage (a container image or OCI artifact)\n    Reference:\t{}\n    PullPolicy:\t{}\n",
                        text(image, "/reference"),
                        text(image, "/pullPolicy")
                    ),
                );
            } else {
                self.write(LEVEL_1, "<unknown>\n");
            }
        }
    }

    fn topology_spread(&mut self, constraints: &[&Value], space: &str) {
        if constraints.is_empty() {
            return;
        }
        let mut constraints = constraints.to_vec();
        constraints.sort_by(|a, b| text(a, "/topologyKey").cmp(text(b, "/topologyKey")));
        self.write(LEVEL_0, &format!("{space}Topology Spread Constraints:\t"));
        for (idx, constraint) in constraints.iter().enumerate() {
            if idx != 0 {
                self.write(LEVEL_0, &format!("{space}\t"));
            }
            let mut line = format!(
                "{}:{} when max skew {} is exceeded",
                text(constraint, "/topologyKey"),
                text(constraint, "/whenUnsatisfiable"),
                constraint
                    .get("maxSkew")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
            );
            if let Some(selector) = constraint.get("labelSelector") {
                let selector = label_selector(Some(selector));
                let selector = if selector.is_empty() {
                    "<none>".to_owned()
                } else {
                    selector
                };
                line.push_str(&format!(" for selector {selector}"));
            }
            line.push('\n');
            self.write(LEVEL_0, &line);
        }
    }

    /// `Labels:` and the like: `key=value` lines, sorted, aligned after `title`.
    fn labels(
        &mut self,
        initial_indent: &str,
        title: &str,
        inner_indent: &str,
        labels: Option<&Value>,
    ) {
        self.write(LEVEL_0, &format!("{initial_indent}{title}:{inner_indent}"));
        let labels = string_map(labels);
        if labels.is_empty() {
            self.write(LEVEL_0, "<none>\n");
            return;
        }
        for (idx, (key, value)) in labels.iter().enumerate() {
            if idx != 0 {
                self.write(LEVEL_0, initial_indent);
                self.write(LEVEL_0, inner_indent);
            }
            self.write(LEVEL_0, &format!("{key}={value}\n"));
        }
    }

    /// `Annotations:`: like labels, without the last-applied configuration, long
    /// or multi-line values on lines of their own.
    fn annotations(&mut self, title: &str, annotations: Option<&Value>) {
        self.write(LEVEL_0, &format!("{title}:\t"));
        let mut annotations = string_map(annotations);
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            self.write(LEVEL_0, "<none>\n");
            return;
        }
        let indent = "\t";
        for (idx, (key, value)) in annotations.iter().enumerate() {
            if idx != 0 {
                self.write(LEVEL_0, indent);
            }
            let value = value.strip_suffix('\n').unwrap_or(value);
            if value.len() + key.len() + 2 > MAX_ANNOTATION_LEN || value.contains('\n') {
                self.write(LEVEL_0, &format!("{key}:\n"));
                for line in value.split('\n') {
                    self.write(
                        LEVEL_0,
                        &format!("{indent}  {}\n", shorten(line, MAX_ANNOTATION_LEN - 2)),
                    );
                }
            } else {
                self.write(LEVEL_0, &format!("{key}: {value}\n"));
            }
        }
    }

    fn tolerations(&mut self, initial_indent: &str, title: &str, tolerations: &[&Value]) {
        self.write(LEVEL_0, &format!("{initial_indent}{title}:\t"));
        if tolerations.is_empty() {
            self.write(LEVEL_0, "<none>\n");
            return;
        }
        let mut tolerations = tolerations.to_vec();
        tolerations.sort_by(|a, b| text(a, "/key").cmp(text(b, "/key")));
        for (idx, toleration) in tolerations.iter().enumerate() {
            if idx != 0 {
                self.write(LEVEL_0, initial_indent);
                self.write(LEVEL_0, "\t");
            }
            let key = text(toleration, "/key");
            let value = text(toleration, "/value");
            let effect = text(toleration, "/effect");
            let mut line = key.to_owned();
            if !value.is_empty() {
                line.push_str(&format!("={value}"));
            }
            if !effect.is_empty() {
                line.push_str(&format!(":{effect}"));
            }
            if text(toleration, "/operator") == "Exists" && value.is_empty() {
                if !key.is_empty() || !effect.is_empty() {
                    line.push_str(" op=Exists");
                } else {
                    line.push_str("op=Exists");
                }
            }
            if let Some(seconds) = toleration.get("tolerationSeconds").and_then(Value::as_i64) {
                line.push_str(&format!(" for {seconds}s"));
            }
            line.push('\n');
            self.write(LEVEL_0, &line);
        }
    }

    fn taints(&mut self, taints: &[&Value]) {
        self.write(LEVEL_0, "Taints:\t");
        if taints.is_empty() {
            self.write(LEVEL_0, "<none>\n");
            return;
        }
        let sort_key =
            |taint: &Value| format!("{},{}", text(taint, "/effect"), text(taint, "/key"));
        let mut taints = taints.to_vec();
        taints.sort_by_key(|taint| sort_key(taint));
        for (idx, taint) in taints.iter().enumerate() {
            if idx != 0 {
                self.write(LEVEL_0, "\t");
            }
            let (key, value, effect) = (
                text(taint, "/key"),
                text(taint, "/value"),
                text(taint, "/effect"),
            );
            let line = match (value.is_empty(), effect.is_empty()) {
                (true, true) => key.to_owned(),
                (false, true) => format!("{key}={value}:"),
                (true, false) => format!("{key}:{effect}"),
                (false, false) => format!("{key}={value}:{effect}"),
            };
            self.write(LEVEL_0, &format!("{line}\n"));
        }
    }

    /// The `Events:` table, oldest first by last timestamp, or `<none>`.
    fn events(&mut self, events: &[Value]) {
        if events.is_empty() {
            self.write(LEVEL_0, "Events:\t<none>\n");
            return;
        }
        // kubectl flushes here, so the table's columns are its own.
        self.out.flush();
        let mut events: Vec<&Value> = events.iter().collect();
        events.sort_by(|a, b| compare_times(a.get("lastTimestamp"), b.get("lastTimestamp")));
        self.write(LEVEL_0, "Events:\n  Type\tReason\tAge\tFrom\tMessage\n");
        self.write(LEVEL_1, "----\t------\t----\t----\t-------\n");
        for event in events {
            let first = match event.get("eventTime").filter(|time| !time.is_null()) {
                Some(time) => self.since(time),
                None => self.since(event.get("firstTimestamp").unwrap_or(&Value::Null)),
            };
            let count = event.get("count").and_then(Value::as_i64).unwrap_or(0);
            let interval = if let Some(series) = event.get("series").filter(|s| !s.is_null()) {
                format!(
                    "{} (x{} over {first})",
                    self.since(series.get("lastObservedTime").unwrap_or(&Value::Null)),
                    series.get("count").and_then(Value::as_i64).unwrap_or(0)
                )
            } else if count > 1 {
                format!(
                    "{} (x{count} over {first})",
                    self.since(event.get("lastTimestamp").unwrap_or(&Value::Null))
                )
            } else {
                first
            };
            let source = non_empty(event, "/source/component")
                .unwrap_or_else(|| text(event, "/reportingComponent"));
            self.write(
                LEVEL_1,
                &format!(
                    "{}\t{}\t{interval}\t{source}\t{}\n",
                    text(event, "/type"),
                    text(event, "/reason"),
                    text(event, "/message").trim()
                ),
            );
        }
    }

    /// kubectl's `translateTimestampSince`: the age of `time`, or `<unknown>`.
    fn since(&self, time: &Value) -> String {
        match parse_time(time) {
            Some(time) => human_duration(self.now.duration_since(time)),
            None => "<unknown>".to_owned(),
        }
    }
}

/// A member of `value` that is absent or null reads as `null`.
fn field<'a>(value: &'a Value, key: &str) -> &'a Value {
    value.get(key).unwrap_or(&Value::Null)
}

/// The string at `pointer`, or `""`.
fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The string at `pointer` unless absent or empty.
fn non_empty<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    Some(text(value, pointer)).filter(|text| !text.is_empty())
}

/// The items of the list at `pointer`, or none.
fn items<'a>(value: &'a Value, pointer: &str) -> Vec<&'a Value> {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(|items| items.iter().collect())
        .unwrap_or_default()
}

/// The strings of the list at `pointer`.
fn strings<'a>(value: &'a Value, pointer: &str) -> Vec<&'a str> {
    items(value, pointer)
        .into_iter()
        .filter_map(Value::as_str)
        .collect()
}

/// A map of strings (labels, quantities), sorted by key; other values print as Go would.
fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .map(|(key, value)| (key.clone(), go_value(value)))
                .collect()
        })
        .unwrap_or_default()
}

/// A scalar as Go's `%v` prints a decoded JSON value.
fn go_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "<nil>".to_owned(),
        Value::Number(number) => match (number.as_i64(), number.as_f64()) {
            (Some(integer), _) => integer.to_string(),
            (None, Some(float)) => float.to_string(),
            (None, None) => number.to_string(),
        },
        other => other.to_string(),
    }
}

/// An `IntOrString` as its `String()`.
fn int_or_string(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Number(number)) => number.to_string(),
        _ => "0".to_owned(),
    }
}

/// `Kind/name` of the owner marked as controller.
fn controller_of(object: &Value) -> Option<String> {
    items(object, "/metadata/ownerReferences")
        .into_iter()
        .find(|owner| owner.get("controller").and_then(Value::as_bool) == Some(true))
        .map(|owner| format!("{}/{}", text(owner, "/kind"), text(owner, "/name")))
}

/// A `metav1.LabelSelector` as `labels.Selector.String()`: requirements sorted
/// by key, `""` when it selects everything.
fn label_selector(selector: Option<&Value>) -> String {
    let Some(selector) = selector else {
        return String::new();
    };
    let mut requirements: Vec<(String, String)> = string_map(selector.get("matchLabels"))
        .into_iter()
        .map(|(key, value)| (key.clone(), format!("{key}={value}")))
        .collect();
    for expression in items(selector, "/matchExpressions") {
        let key = text(expression, "/key");
        let mut values = strings(expression, "/values");
        values.sort_unstable();
        let values = values.join(",");
        let requirement = match text(expression, "/operator") {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        };
        requirements.push((key.to_owned(), requirement));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    requirements
        .into_iter()
        .map(|(_, requirement)| requirement)
        .collect::<Vec<_>>()
        .join(",")
}

/// A field of a pod as the downward API resolves it for `fieldRef`.
fn pod_field(pod: &Value, path: &str) -> String {
    let bracketed = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
            .map(str::to_owned)
    };
    if let Some(key) = bracketed("metadata.labels['") {
        return text(
            field(field(pod, "metadata"), "labels"),
            &format!("/{}", key.replace('~', "~0").replace('/', "~1")),
        )
        .to_owned();
    }
    if let Some(key) = bracketed("metadata.annotations['") {
        return text(
            field(field(pod, "metadata"), "annotations"),
            &format!("/{}", key.replace('~', "~0").replace('/', "~1")),
        )
        .to_owned();
    }
    match path {
        "metadata.labels" | "metadata.annotations" => {
            string_map(pod.pointer(&format!("/{}", path.replace('.', "/"))))
                .iter()
                .map(|(key, value)| format!("{key}={value:?}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        "status.podIPs" => items(pod, "/status/podIPs")
            .iter()
            .map(|ip| text(ip, "/ip"))
            .collect::<Vec<_>>()
            .join(","),
        _ => text(pod, &format!("/{}", path.replace('.', "/"))).to_owned(),
    }
}

/// The value a `resourceFieldRef` without a divisor exposes: whole cores
/// (rounded up) for CPU, bytes otherwise.
fn container_resource(container: &Value, resource: &str) -> String {
    let Some((section, name)) = resource.split_once('.') else {
        return String::new();
    };
    let quantity = container
        .pointer(&format!("/resources/{section}/{name}"))
        .and_then(Value::as_str)
        .and_then(Quantity::parse)
        .unwrap_or_default();
    if name == "cpu" {
        let nano_per_core = 1_000_000_000;
        ((quantity.nano + nano_per_core - 1).div_euclid(nano_per_core)).to_string()
    } else {
        quantity.value().to_string()
    }
}

/// kubectl's `DescribeProbe`.
fn describe_probe(probe: &Value) -> String {
    let number = |key: &str| probe.get(key).and_then(Value::as_i64).unwrap_or(0);
    let attributes = format!(
        "delay={}s timeout={}s period={}s #success={} #failure={}",
        number("initialDelaySeconds"),
        number("timeoutSeconds"),
        number("periodSeconds"),
        number("successThreshold"),
        number("failureThreshold")
    );
    if let Some(exec) = probe.get("exec") {
        return format!(
            "exec [{}] {attributes}",
            strings(exec, "/command").join(" ")
        );
    }
    if let Some(http) = probe.get("httpGet") {
        let scheme = text(http, "/scheme").to_ascii_lowercase();
        let port = int_or_string(http.get("port"));
        let host = join_host_port(text(http, "/host"), &port);
        return format!(
            "http-get {scheme}://{host}{} {attributes}",
            text(http, "/path")
        );
    }
    if let Some(tcp) = probe.get("tcpSocket") {
        return format!(
            "tcp-socket {}:{} {attributes}",
            text(tcp, "/host"),
            int_or_string(tcp.get("port"))
        );
    }
    if let Some(grpc) = probe.get("grpc") {
        return format!(
            "grpc <pod>:{} {} {attributes}",
            grpc.get("port").and_then(Value::as_i64).unwrap_or(0),
            text(grpc, "/service")
        );
    }
    format!("unknown {attributes}")
}

/// Go's `net.JoinHostPort`.
fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The endpoints of a service port, as `formatEndpoints` (Endpoints) or
/// `formatEndpointSlices` (EndpointSlices) print them: at most three.
fn format_endpoints(related: &[Value], port_name: &str) -> String {
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut count = 0;
    let mut found_any = false;
    let mut push = |address: String, list: &mut Vec<String>| {
        if list.len() < MAX {
            list.push(address);
        }
        count += 1;
    };
    for object in related {
        if text(object, "/kind") == "EndpointSlice" {
            found_any = true;
            let endpoints = items(object, "/endpoints");
            let ready = |endpoint: &Value| {
                endpoint
                    .pointer("/conditions/ready")
                    .and_then(Value::as_bool)
                    != Some(false)
            };
            let first_address = |endpoint: &Value| {
                strings(endpoint, "/addresses")
                    .first()
                    .map(|a| (*a).to_owned())
                    .unwrap_or_default()
            };
            let ports = items(object, "/ports");
            if ports.is_empty() {
                for endpoint in endpoints.iter().filter(|endpoint| ready(endpoint)) {
                    push(first_address(endpoint), &mut list);
                }
            } else {
                for port in ports.iter().filter(|port| text(port, "/name") == port_name) {
                    let number = port
                        .get("port")
                        .and_then(Value::as_i64)
                        .unwrap_or(0)
                        .to_string();
                    for endpoint in endpoints.iter().filter(|endpoint| ready(endpoint)) {
                        push(join_host_port(&first_address(endpoint), &number), &mut list);
                    }
                }
            }
            continue;
        }
        for subset in items(object, "/subsets") {
            found_any = true;
            let addresses = items(subset, "/addresses");
            let ports = items(subset, "/ports");
            if ports.is_empty() {
                for address in addresses {
                    push(text(address, "/ip").to_owned(), &mut list);
                }
            } else {
                for port in ports.iter().filter(|port| text(port, "/name") == port_name) {
                    let number = port
                        .get("port")
                        .and_then(Value::as_i64)
                        .unwrap_or(0)
                        .to_string();
                    for address in &addresses {
                        push(join_host_port(text(address, "/ip"), &number), &mut list);
                    }
                }
            }
        }
    }
    if !found_any {
        return "<none>".to_owned();
    }
    let joined = list.join(",");
    if count > MAX {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

/// Splits a deployment's replica sets into old ones and the new one (whose pod
/// template is the deployment's, but for the `pod-template-hash` label).
fn split_replica_sets<'a>(
    deployment: &Value,
    replica_sets: &'a [Value],
) -> (Vec<&'a Value>, Vec<&'a Value>) {
    let uid = text(deployment, "/metadata/uid");
    let owned: Vec<&Value> = replica_sets
        .iter()
        .filter(|replica_set| {
            uid.is_empty()
                || items(replica_set, "/metadata/ownerReferences")
                    .iter()
                    .any(|owner| {
                        owner.get("controller").and_then(Value::as_bool) == Some(true)
                            && text(owner, "/uid") == uid
                    })
        })
        .collect();
    let without_hash = |template: Option<&Value>| {
        let mut template = template.cloned().unwrap_or(Value::Null);
        if let Some(labels) = template
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            labels.remove("pod-template-hash");
        }
        template
    };
    let wanted = without_hash(deployment.pointer("/spec/template"));
    let mut matching: Vec<&Value> = owned
        .iter()
        .copied()
        .filter(|replica_set| without_hash(replica_set.pointer("/spec/template")) == wanted)
        .collect();
    // Several equal templates (an old API server): the oldest is the new one.
    matching.sort_by(|a, b| {
        compare_times(
            a.pointer("/metadata/creationTimestamp"),
            b.pointer("/metadata/creationTimestamp"),
        )
    });
    let new = matching.first().copied();
    let old = owned
        .into_iter()
        .filter(|replica_set| new.is_none_or(|new| !std::ptr::eq(*replica_set, new)))
        .collect();
    (old, new.into_iter().collect())
}

/// `web-5d9c (3/3 replicas created), …` or `<none>`.
fn replica_sets_created(replica_sets: &[&Value]) -> String {
    if replica_sets.is_empty() {
        return "<none>".to_owned();
    }
    replica_sets
        .iter()
        .map(|replica_set| {
            format!(
                "{} ({}/{} replicas created)",
                text(replica_set, "/metadata/name"),
                replica_set
                    .pointer("/status/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                replica_set
                    .pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1),
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The pod's QoS class: `status.qosClass`, else computed as the kubelet does.
fn qos_class(pod: &Value) -> String {
    if let Some(class) = non_empty(pod, "/status/qosClass") {
        return class.to_owned();
    }
    let mut requests: BTreeMap<String, Quantity> = BTreeMap::new();
    let mut limits: BTreeMap<String, Quantity> = BTreeMap::new();
    let mut guaranteed = true;
    let containers = items(pod, "/spec/containers")
        .into_iter()
        .chain(items(pod, "/spec/initContainers"));
    for container in containers {
        let mut limits_found = Vec::new();
        for (section, totals) in [("requests", &mut requests), ("limits", &mut limits)] {
            let quantities = container
                .pointer(&format!("/resources/{section}"))
                .and_then(Value::as_object);
            for (name, quantity) in quantities.into_iter().flatten() {
                if name != "cpu" && name != "memory" {
                    continue;
                }
                let Some(quantity) = quantity.as_str().and_then(Quantity::parse) else {
                    continue;
                };
                if quantity.nano > 0 {
                    totals
                        .entry(name.clone())
                        .or_insert_with(|| quantity.zero())
                        .add(quantity);
                    if section == "limits" {
                        limits_found.push(name.as_str());
                    }
                }
            }
        }
        if !(limits_found.contains(&"cpu") && limits_found.contains(&"memory")) {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort".to_owned();
    }
    let requests_match = requests.iter().all(|(name, request)| {
        limits
            .get(name)
            .is_some_and(|limit| limit.nano == request.nano)
    });
    if guaranteed && requests_match && requests.len() == limits.len() {
        "Guaranteed".to_owned()
    } else {
        "Burstable".to_owned()
    }
}

/// Requests and limits of a pod: its containers summed, raised to any larger
/// init container, plus the pod overhead.
fn pod_requests_and_limits(
    pod: &Value,
) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let mut totals = (BTreeMap::new(), BTreeMap::new());
    let sections = |container: &Value, section: &str| -> Vec<(String, Quantity)> {
        container
            .pointer(&format!("/resources/{section}"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(name, quantity)| {
                Some((name.clone(), quantity.as_str().and_then(Quantity::parse)?))
            })
            .collect()
    };
    for (section, totals) in [("requests", &mut totals.0), ("limits", &mut totals.1)] {
        for container in items(pod, "/spec/containers") {
            for (name, quantity) in sections(container, section) {
                totals
                    .entry(name)
                    .or_insert_with(|| quantity.zero())
                    .add(quantity);
            }
        }
        for container in items(pod, "/spec/initContainers") {
            for (name, quantity) in sections(container, section) {
                let total: &mut Quantity = totals.entry(name).or_insert_with(|| quantity.zero());
                if quantity.nano > total.nano {
                    *total = quantity;
                }
            }
        }
        for (name, quantity) in sections(field(pod, "spec"), "overhead") {
            totals
                .entry(name)
                .or_insert_with(|| quantity.zero())
                .add(quantity);
        }
    }
    totals
}

/// A resource quantity (`250m`, `128Mi`, `2`), precise to the nano unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Quantity {
    /// The amount in billionths.
    nano: i128,
    /// Whether it was written with a binary suffix (`Ki`, `Mi`), which the
    /// canonical form keeps.
    binary: bool,
}

impl Quantity {
    /// Parses a Kubernetes quantity; `None` if it is not one.
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(split);
        let (binary, multiplier_nano, exponent): (bool, i128, i32) = match suffix {
            "Ki" => (true, 1 << 10, 9),
            "Mi" => (true, 1 << 20, 9),
            "Gi" => (true, 1 << 30, 9),
            "Ti" => (true, 1 << 40, 9),
            "Pi" => (true, 1 << 50, 9),
            "Ei" => (true, 1 << 60, 9),
            "n" => (false, 1, 0),
            "u" => (false, 1, 3),
            "m" => (false, 1, 6),
            "" => (false, 1, 9),
            "k" => (false, 1, 12),
            "M" => (false, 1, 15),
            "G" => (false, 1, 18),
            "T" => (false, 1, 21),
            "P" => (false, 1, 24),
            "E" => (false, 1, 27),
            other => {
                let exponent: i32 = other.strip_prefix(['e', 'E'])?.parse().ok()?;
                (false, 1, exponent + 9)
            }
        };
        let (negative, digits) = match number.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, number.strip_prefix('+').unwrap_or(number)),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let all_digits = |part: &str| part.chars().all(|c| c.is_ascii_digit());
        if !all_digits(whole) || !all_digits(fraction) {
            return None;
        }
        let mantissa: i128 = format!("{whole}{fraction}").parse().ok()?;
        let scale = exponent - i32::try_from(fraction.len()).ok()?;
        let mut nano = mantissa.checked_mul(multiplier_nano)?;
        if scale >= 0 {
            nano = nano.checked_mul(10i128.checked_pow(scale.unsigned_abs())?)?;
        } else {
            // Below a nano unit: round up, as Kubernetes does.
            let divisor = 10i128.checked_pow(scale.unsigned_abs())?;
            nano = (nano + divisor - 1) / divisor;
        }
        Some(Self {
            nano: if negative { -nano } else { nano },
            binary,
        })
    }

    /// Zero in the same notation.
    fn zero(self) -> Self {
        Self {
            nano: 0,
            binary: self.binary,
        }
    }

    fn add(&mut self, other: Self) {
        self.nano += other.nano;
    }

    /// Thousandths, rounded up (`MilliValue`).
    fn milli(self) -> i128 {
        (self.nano + 999_999).div_euclid(1_000_000)
    }

    /// Whole units, rounded up (`Value`).
    fn value(self) -> i128 {
        (self.nano + 999_999_999).div_euclid(1_000_000_000)
    }
}

impl std::fmt::Display for Quantity {
    /// The canonical form Kubernetes prints: the largest suffix that keeps the
    /// number whole, binary suffixes for binary quantities of at least 1Ki.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.nano == 0 {
            return f.write_str("0");
        }
        let giga = 1_000_000_000;
        if self.binary && self.nano % giga == 0 && (self.nano / giga).abs() >= 1024 {
            let mut units = self.nano / giga;
            let mut suffix = "";
            for next in ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"] {
                if units % 1024 != 0 {
                    break;
                }
                units /= 1024;
                suffix = next;
            }
            return write!(f, "{units}{suffix}");
        }
        let mut mantissa = self.nano;
        let mut suffix_idx = 0;
        let suffixes = ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"];
        while suffix_idx + 1 < suffixes.len() && mantissa % 1000 == 0 {
            mantissa /= 1000;
            suffix_idx += 1;
        }
        write!(f, "{mantissa}{}", suffixes[suffix_idx])
    }
}

/// Parses an RFC 3339 timestamp value.
fn parse_time(value: &Value) -> Option<jiff::Timestamp> {
    value.as_str()?.parse().ok()
}

/// Orders optional timestamps, missing ones first.
fn compare_times(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    a.and_then(parse_time).cmp(&b.and_then(parse_time))
}

/// Go's `time.RFC1123Z` (`Mon, 02 Jan 2006 15:04:05 -0700`), in UTC; the zero
/// time when absent, as Go prints it.
fn rfc1123z(value: &Value) -> String {
    match parse_time(value) {
        Some(time) => time.strftime("%a, %d %b %Y %H:%M:%S %z").to_string(),
        None => "Mon, 01 Jan 0001 00:00:00 +0000".to_owned(),
    }
}

/// Cuts `text` to `max` bytes (on a character boundary) with `...`.
fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// kubectl's `smartLabelFor`: `involvedObject` → `Involved Object`, `apiVersion`
/// → `API Version`; names with other than letters and `-` are kept as they are.
fn smart_label(field: &str) -> String {
    if field.chars().any(|c| !c.is_alphabetic() && c != '-') {
        return field.to_owned();
    }
    let acronyms = ["API", "URL", "UID", "OSB", "GUID"];
    camel_case_split(field)
        .into_iter()
        .map(|part| {
            let upper = part.to_uppercase();
            if acronyms.contains(&upper.as_str()) {
                upper
            } else {
                let mut chars = part.chars();
                chars
                    .next()
                    .map(|first| first.to_uppercase().chain(chars).collect())
                    .unwrap_or_default()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `github.com/fatih/camelcase.Split`: runs of lower case, upper case, digits
/// and other characters, an upper-case run giving its last letter to a
/// following lower-case run (`HTTPServer` → `HTTP`, `Server`).
fn camel_case_split(text: &str) -> Vec<String> {
    let class = |c: char| {
        if c.is_lowercase() {
            1
        } else if c.is_uppercase() {
            2
        } else if c.is_numeric() {
            3
        } else {
            4
        }
    };
    let mut runs: Vec<Vec<char>> = Vec::new();
    let mut last_class = 0;
    for c in text.chars() {
        let current = class(c);
        match runs.last_mut() {
            Some(run) if current == last_class => run.push(c),
            _ => runs.push(vec![c]),
        }
        last_class = current;
    }
    for idx in 0..runs.len().saturating_sub(1) {
        let (upper, lower) = (runs[idx].first().copied(), runs[idx + 1].first().copied());
        if upper.is_some_and(char::is_uppercase)
            && lower.is_some_and(char::is_lowercase)
            && let Some(moved) = runs[idx].pop()
        {
            runs[idx + 1].insert(0, moved);
        }
    }
    runs.into_iter()
        .filter(|run| !run.is_empty())
        .map(|run| run.into_iter().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use skiff_api::kind;

    use super::*;

    /// Describes `object` at 2024-05-01T10:05:00Z and compares with `expected`
    /// (written after a leading newline).
    fn check(
        kind: &ResourceKind,
        object: Value,
        events: &[Value],
        related: &[Value],
        expected: &str,
    ) {
        let now: jiff::Timestamp = "2024-05-01T10:05:00Z".parse().expect("valid timestamp");
        let actual = describe(kind, &object, events, related, now);
        let expected = expected.strip_prefix('\n').unwrap_or(expected);
        assert_eq!(
            actual, expected,
            "\nactual:\n{actual}\nexpected:\n{expected}"
        );
    }

    fn event(reason: &str, from: &str, first: &str, count: i64, message: &str) -> Value {
        json!({
            "kind": "Event",
            "type": "Normal",
            "reason": reason,
            "source": {"component": from},
            "firstTimestamp": first,
            "lastTimestamp": first,
            "count": count,
            "message": message,
        })
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-5d9c-abcde",
                "namespace": "default",
                "uid": "pod-uid",
                "creationTimestamp": "2024-05-01T10:00:00Z",
                "labels": {"app": "web", "pod-template-hash": "5d9c"},
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9c",
                    "uid": "rs-uid", "controller": true,
                }],
            },
            "spec": {
                "nodeName": "node-1",
                "serviceAccountName": "default",
                "priority": 0,
                "containers": [{
                    "name": "web",
                    "image": "nginx:1.27",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "env": [{"name": "MODE", "value": "prod"}],
                    "resources": {
                        "limits": {"cpu": "500m", "memory": "128Mi"},
                        "requests": {"cpu": "250m", "memory": "64Mi"},
                    },
                    "readinessProbe": {
                        "httpGet": {"path": "/", "port": 80, "scheme": "HTTP"},
                        "timeoutSeconds": 1, "periodSeconds": 10,
                        "successThreshold": 1, "failureThreshold": 3,
                    },
                    "volumeMounts": [{
                        "name": "kube-api-access-x",
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                        "readOnly": true,
                    }],
                }],
                "volumes": [{
                    "name": "kube-api-access-x",
                    "projected": {"sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt"}},
                        {"downwardAPI": {"items": []}},
                    ]},
                }],
                "tolerations": [
                    {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                     "effect": "NoExecute", "tolerationSeconds": 300},
                    {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                     "effect": "NoExecute", "tolerationSeconds": 300},
                ],
            },
            "status": {
                "phase": "Running",
                "hostIP": "10.0.0.5",
                "podIP": "10.244.1.7",
                "podIPs": [{"ip": "10.244.1.7"}],
                "startTime": "2024-05-01T10:00:00Z",
                "conditions": [
                    {"type": "PodReadyToStartContainers", "status": "True"},
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": "True"},
                    {"type": "ContainersReady", "status": "True"},
                    {"type": "PodScheduled", "status": "True"},
                ],
                "containerStatuses": [{
                    "name": "web",
                    "containerID": "containerd://abc",
                    "image": "nginx:1.27",
                    "imageID": "docker.io/library/nginx@sha256:123",
                    "ready": true,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": "2024-05-01T10:00:02Z"}},
                }],
            },
        })
    }

    #[test]
    fn pod_is_described_like_kubectl() {
        let events = [
            event(
                "Pulled",
                "kubelet",
                "2024-05-01T10:00:01Z",
                1,
                "Container image \"nginx:1.27\" already present on machine",
            ),
            event(
                "Scheduled",
                "default-scheduler",
                "2024-05-01T10:00:00Z",
                1,
                "Successfully assigned default/web-5d9c-abcde to node-1",
            ),
        ];
        check(
            &kind::POD,
            pod(),
            &events,
            &[],
            r#"
Name:             web-5d9c-abcde
Namespace:        default
Priority:         0
Service Account:  default
Node:             node-1/10.0.0.5
Start Time:       Wed, 01 May 2024 10:00:00 +0000
Labels:           app=web
                  pod-template-hash=5d9c
Annotations:      <none>
Status:           Running
IP:               10.244.1.7
IPs:
  IP:           10.244.1.7
Controlled By:  ReplicaSet/web-5d9c
Containers:
  web:
    Container ID:   containerd://abc
    Image:          nginx:1.27
    Image ID:       docker.io/library/nginx@sha256:123
    Port:           80/TCP
    Host Port:      0/TCP
    State:          Running
      Started:      Wed, 01 May 2024 10:00:02 +0000
    Ready:          True
    Restart Count:  0
    Limits:
      cpu:     500m
      memory:  128Mi
    Requests:
      cpu:      250m
      memory:   64Mi
    Readiness:  http-get http://:80/ delay=0s timeout=1s period=10s #success=1 #failure=3
    Environment:
      MODE:  prod
    Mounts:
      /var/run/secrets/kubernetes.io/serviceaccount from kube-api-access-x (ro)
Conditions:
  Type                        Status
  PodReadyToStartContainers   True 
  Initialized                 True 
  Ready                       True 
  ContainersReady             True 
  PodScheduled                True 
Volumes:
  kube-api-access-x:
    Type:                    Projected (a volume that contains injected data from multiple sources)
    TokenExpirationSeconds:  3607
    ConfigMapName:           kube-root-ca.crt
    ConfigMapOptional:       <nil>
    DownwardAPI:             true
QoS Class:                   Burstable
Node-Selectors:              <none>
Tolerations:                 node.kubernetes.io/not-ready:NoExecute op=Exists for 300s
                             node.kubernetes.io/unreachable:NoExecute op=Exists for 300s
Events:
  Type    Reason     Age    From               Message
  ----    ------     ----   ----               -------
  Normal  Scheduled  5m     default-scheduler  Successfully assigned default/web-5d9c-abcde to node-1
  Normal  Pulled     4m59s  kubelet            Container image "nginx:1.27" already present on machine
"#,
        );
    }

    fn template(image: &str, hash: Option<&str>) -> Value {
        let mut labels = json!({"app": "web"});
        if let Some(hash) = hash {
            labels["pod-template-hash"] = json!(hash);
        }
        json!({
            "metadata": {"labels": labels},
            "spec": {"containers": [{
                "name": "web",
                "image": image,
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
            }]},
        })
    }

    fn replica_set(name: &str, image: &str, replicas: i64) -> Value {
        json!({
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": "default",
                "creationTimestamp": "2024-05-01T10:00:00Z",
                "ownerReferences": [{"kind": "Deployment", "name": "web", "uid": "deploy-uid", "controller": true}],
            },
            "spec": {"replicas": replicas, "template": template(image, Some(name))},
            "status": {"replicas": replicas},
        })
    }

    #[test]
    fn deployment_is_described_with_its_replica_sets() {
        let deployment = json!({
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "default",
                "uid": "deploy-uid",
                "creationTimestamp": "2024-05-01T10:00:00Z",
                "labels": {"app": "web"},
                "annotations": {
                    "deployment.kubernetes.io/revision": "2",
                    "kubectl.kubernetes.io/last-applied-configuration": "{}",
                },
            },
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                "template": template("nginx:1.27", None),
            },
            "status": {
                "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                ],
            },
        });
        let related = [
            replica_set("web-5d9c", "nginx:1.27", 3),
            replica_set("web-7f4b", "nginx:1.26", 0),
            // Matched by the selector but not the deployment's.
            json!({"kind": "ReplicaSet", "metadata": {"name": "stray"}, "spec": {"replicas": 1}}),
        ];
        let events = [event(
            "ScalingReplicaSet",
            "deployment-controller",
            "2024-05-01T10:00:00Z",
            1,
            "Scaled up replica set web-5d9c to 3",
        )];
        check(
            &kind::DEPLOYMENT,
            deployment,
            &events,
            &related,
            r#"
Name:                   web
Namespace:              default
CreationTimestamp:      Wed, 01 May 2024 10:00:00 +0000
Labels:                 app=web
Annotations:            deployment.kubernetes.io/revision: 2
Selector:               app=web
Replicas:               3 desired | 3 updated | 3 total | 3 available | 0 unavailable
StrategyType:           RollingUpdate
MinReadySeconds:        0
RollingUpdateStrategy:  25% max unavailable, 25% max surge
Pod Template:
  Labels:  app=web
  Containers:
   web:
    Image:         nginx:1.27
    Port:          80/TCP
    Host Port:     0/TCP
    Environment:   <none>
    Mounts:        <none>
  Volumes:         <none>
  Node-Selectors:  <none>
  Tolerations:     <none>
Conditions:
  Type           Status  Reason
  ----           ------  ------
  Available      True    MinimumReplicasAvailable
  Progressing    True    NewReplicaSetAvailable
OldReplicaSets:  web-7f4b (0/0 replicas created)
NewReplicaSet:   web-5d9c (3/3 replicas created)
Events:
  Type    Reason             Age   From                   Message
  ----    ------             ----  ----                   -------
  Normal  ScalingReplicaSet  5m    deployment-controller  Scaled up replica set web-5d9c to 3
"#,
        );
    }

    #[test]
    fn service_is_described_with_its_endpoints() {
        let service = json!({
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "type": "ClusterIP",
                "selector": {"app": "web"},
                "ipFamilyPolicy": "SingleStack",
                "ipFamilies": ["IPv4"],
                "clusterIP": "10.96.12.34",
                "clusterIPs": ["10.96.12.34"],
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
                "sessionAffinity": "None",
                "internalTrafficPolicy": "Cluster",
            },
        });
        let endpoints = json!({
            "kind": "Endpoints",
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": [{
                "addresses": [{"ip": "10.244.1.7"}, {"ip": "10.244.2.9"}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            }],
        });
        check(
            &kind::SERVICE,
            service,
            &[],
            &[endpoints],
            "
Name:                     web
Namespace:                default
Labels:                   app=web
Annotations:              <none>
Selector:                 app=web
Type:                     ClusterIP
IP Family Policy:         SingleStack
IP Families:              IPv4
IP:                       10.96.12.34
IPs:                      10.96.12.34
Port:                     http  80/TCP
TargetPort:               8080/TCP
Endpoints:                10.244.1.7:8080,10.244.2.9:8080
Session Affinity:         None
Internal Traffic Policy:  Cluster
Events:                   <none>
",
        );
    }

    #[test]
    fn secret_is_described_without_its_values() {
        let secret = json!({
            "kind": "Secret",
            "metadata": {"name": "db", "namespace": "default"},
            "type": "Opaque",
            "data": {"password": "czNjcjN0", "user": "YWRtaW4="},
        });
        check(
            &kind::SECRET,
            secret,
            &[],
            &[],
            "
Name:         db
Namespace:    default
Labels:       <none>
Annotations:  <none>

Type:  Opaque

Data
====
password:  6 bytes
user:      5 bytes
",
        );
    }

    #[test]
    fn namespace_is_described_without_quotas() {
        let namespace = json!({
            "kind": "Namespace",
            "metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "team-a"}},
            "status": {"phase": "Active"},
        });
        check(
            &kind::NAMESPACE,
            namespace,
            &[],
            &[],
            "
Name:         team-a
Labels:       kubernetes.io/metadata.name=team-a
Annotations:  <none>
Status:       Active

No resource quota.

No LimitRange resource.
",
        );
    }

    #[test]
    fn node_is_described_with_its_pods() {
        let node = json!({
            "kind": "Node",
            "metadata": {
                "name": "node-1",
                "creationTimestamp": "2024-05-01T09:00:00Z",
                "labels": {"kubernetes.io/hostname": "node-1", "node-role.kubernetes.io/control-plane": ""},
            },
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
            "status": {
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "conditions": [{
                    "type": "Ready", "status": "True",
                    "lastHeartbeatTime": "2024-05-01T10:04:00Z",
                    "lastTransitionTime": "2024-05-01T09:00:30Z",
                    "reason": "KubeletReady", "message": "kubelet is posting ready status",
                }],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}, {"type": "Hostname", "address": "node-1"}],
                "nodeInfo": {
                    "machineID": "m", "systemUUID": "s", "bootID": "b", "kernelVersion": "6.1.0",
                    "osImage": "Debian GNU/Linux 12", "operatingSystem": "linux", "architecture": "amd64",
                    "containerRuntimeVersion": "skiff://0.1.0", "kubeletVersion": "v1.32.0", "kubeProxyVersion": "",
                },
            },
        });
        let mut finished = pod();
        finished["metadata"]["name"] = json!("done");
        finished["status"]["phase"] = json!("Succeeded");
        check(
            &kind::NODE,
            node,
            &[],
            &[pod(), finished],
            "
Name:               node-1
Roles:              control-plane
Labels:             kubernetes.io/hostname=node-1
                    node-role.kubernetes.io/control-plane=
Annotations:        <none>
CreationTimestamp:  Wed, 01 May 2024 09:00:00 +0000
Taints:             <none>
Unschedulable:      false
Conditions:
  Type    Status  LastHeartbeatTime                 LastTransitionTime                Reason         Message
  ----    ------  -----------------                 ------------------                ------         -------
  Ready   True    Wed, 01 May 2024 10:04:00 +0000   Wed, 01 May 2024 09:00:30 +0000   KubeletReady   kubelet is posting ready status
Addresses:
  InternalIP:  10.0.0.5
  Hostname:    node-1
Capacity:
  cpu:     4
  memory:  8Gi
  pods:    110
Allocatable:
  cpu:     4
  memory:  8Gi
  pods:    110
System Info:
  Machine ID:                 m
  System UUID:                s
  Boot ID:                    b
  Kernel Version:             6.1.0
  OS Image:                   Debian GNU/Linux 12
  Operating System:           linux
  Architecture:               amd64
  Container Runtime Version:  skiff://0.1.0
  Kubelet Version:            v1.32.0
  Kube-Proxy Version:         
PodCIDR:                      10.244.1.0/24
PodCIDRs:                     10.244.1.0/24
Non-terminated Pods:          (1 in total)
  Namespace                   Name              CPU Requests  CPU Limits  Memory Requests  Memory Limits  Age
  ---------                   ----              ------------  ----------  ---------------  -------------  ---
  default                     web-5d9c-abcde    250m (6%)     500m (12%)  64Mi (0%)        128Mi (1%)     5m
Allocated resources:
  (Total limits may be over 100 percent, i.e., overcommitted.)
  Resource           Requests   Limits
  --------           --------   ------
  cpu                250m (6%)  500m (12%)
  memory             64Mi (0%)  128Mi (1%)
  ephemeral-storage  0 (0%)     0 (0%)
Events:              <none>
",
        );
    }

    #[test]
    fn other_kinds_get_the_generic_description() {
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": "web.17c",
                "namespace": "default",
                "uid": "e1",
                "creationTimestamp": "2024-05-01T10:00:00Z",
                "managedFields": [{"manager": "skiff"}],
            },
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
            "reason": "Scheduled",
            "message": "Successfully assigned default/web to node-1",
            "type": "Normal",
            "count": 1,
            "source": {"component": "default-scheduler"},
            "firstTimestamp": "2024-05-01T10:00:00Z",
            "lastTimestamp": "2024-05-01T10:00:00Z",
        });
        check(
            &kind::EVENT,
            event,
            &[],
            &[],
            "
Name:             web.17c
Namespace:        default
Labels:           <none>
Annotations:      <none>
API Version:      v1
Count:            1
First Timestamp:  2024-05-01T10:00:00Z
Involved Object:
  Kind:          Pod
  Name:          web
  Namespace:     default
Kind:            Event
Last Timestamp:  2024-05-01T10:00:00Z
Message:         Successfully assigned default/web to node-1
Metadata:
  Creation Timestamp:  2024-05-01T10:00:00Z
  UID:                 e1
Reason:                Scheduled
Source:
  Component:  default-scheduler
Type:         Normal
Events:       <none>
",
        );
    }

    #[test]
    fn helpers_match_kubectl() {
        let labels = [
            ("involvedObject", "Involved Object"),
            ("apiVersion", "API Version"),
            ("uid", "UID"),
            ("HTTPServer", "HTTP Server"),
            ("ipv4", "ipv4"),
            ("pod-template-hash", "Pod - Template - Hash"),
        ];
        for (field, label) in labels {
            assert_eq!(smart_label(field), label, "{field}");
        }
        let quantities = [
            ("250m", "250m", 250),
            ("0.5", "500m", 500),
            ("2", "2", 2000),
            ("128Mi", "128Mi", 134_217_728_000),
            ("1.5Gi", "1536Mi", 1_610_612_736_000),
            ("1000Ki", "1000Ki", 1_024_000_000),
            ("1k", "1k", 1_000_000),
            ("1e3", "1k", 1_000_000),
        ];
        for (text, canonical, milli) in quantities {
            let quantity = Quantity::parse(text).expect("a quantity");
            assert_eq!(quantity.to_string(), canonical, "{text}");
            assert_eq!(quantity.milli(), milli, "{text}");
        }
        assert_eq!(
            tabwrite("a:\tb\nlonger:\tc\nno tab\nx:\ty"),
            "a:       b\nlonger:  c\nno tab\nx:  y"
        );
    }
}
