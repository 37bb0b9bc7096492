//! Values objects hold exclusively — a Service's cluster IP and node ports, a Node's
//! pod CIDR — as kube-apiserver's service REST storage and kube-controller-manager's
//! node IPAM allocate them.
//!
//! Each held value is a reservation key in the store (`/registry/ranges/serviceips/<ip>`,
//! `/registry/ranges/servicenodeports/<port>`, `/registry/ranges/podcidrs/<cidr>`, as
//! Kubernetes' IPAddress objects), whose value names the holder. The [`Registry`]
//! creates the keys an object starts holding and deletes those it stops holding in the
//! same transaction as the object's own write, with a create precondition, so two
//! objects never hold one value, a failed write leaks nothing and a deletion (by any
//! path: the API, a namespace's deletion, the garbage collector, a finalizer's removal)
//! releases everything at once.
//!
//! Order of work on a write: [`prepare`] (pure, before validation) normalises linked
//! fields and keeps values already allocated; [`allocate`] fills in what is missing
//! from the free values it reads; [`changes`] turns the difference between the old and
//! new holdings into store operations.
//!
//! [`Registry`]: super::Registry

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use skiff_api::types::{Node, Service, ServiceSpec};
use skiff_api::{FieldError, FieldPath, Object};

use super::error::ApiError;
use crate::network::{Ipv4Cidr, NetworkSettings, node_port_static_band, pick_free};
use crate::store::{Consistency, Op, Store};

/// Where service IP reservations live.
const SERVICE_IPS: &str = "/registry/ranges/serviceips/";
/// Where node port reservations live.
const NODE_PORTS: &str = "/registry/ranges/servicenodeports/";
/// Where pod CIDR reservations live.
const POD_CIDRS: &str = "/registry/ranges/podcidrs/";

/// One value an object holds exclusively.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reservation {
    /// A Service's cluster IP.
    ServiceIp(Ipv4Addr),
    /// A NodePort or LoadBalancer Service's node port.
    NodePort(u16),
    /// A Node's pod CIDR.
    PodCidr(Ipv4Cidr),
}

impl Reservation {
    /// The store key of the reservation.
    pub fn key(&self) -> String {
        match self {
            Self::ServiceIp(ip) => format!("{SERVICE_IPS}{ip}"),
            Self::NodePort(port) => format!("{NODE_PORTS}{port}"),
            Self::PodCidr(cidr) => format!("{POD_CIDRS}{cidr}"),
        }
    }
}

/// What a reservation key holds: who holds the value.
#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    name: String,
    uid: String,
}

impl Holder {
    fn of(object: &Object) -> Self {
        Self {
            kind: object.kind().kind.to_owned(),
            namespace: object.namespace().map(str::to_owned),
            name: object.name().to_owned(),
            uid: object.metadata().uid.clone().unwrap_or_default(),
        }
    }
}

fn service_type(spec: &ServiceSpec) -> &str {
    spec.type_.as_deref().unwrap_or("ClusterIP")
}

/// Whether the service needs node ports (kube's `needsNodePort`): NodePort, and
/// LoadBalancer unless `allocateLoadBalancerNodePorts` is false.
fn needs_node_ports(spec: &ServiceSpec) -> bool {
    match service_type(spec) {
        "NodePort" => true,
        "LoadBalancer" => spec.allocate_load_balancer_node_ports != Some(false),
        _ => false,
    }
}

/// The node ports a service's ports name (0 is none).
fn node_ports(spec: &ServiceSpec) -> HashSet<i32> {
    spec.ports
        .iter()
        .flatten()
        .filter_map(|port| port.node_port.filter(|p| *p != 0))
        .collect()
}

fn cluster_ip(spec: &ServiceSpec) -> &str {
    spec.cluster_ip.as_deref().unwrap_or_default()
}

fn has_selector(spec: &ServiceSpec) -> bool {
    spec.selector.as_ref().is_some_and(|s| !s.is_empty())
}

/// What a write does to the linked and already-allocated fields before validation
/// (kube's service strategy `PrepareForUpdate` — `patchAllocatedValues`,
/// `NormalizeClusterIPs`, `dropTypeDependentFields` — and its single-stack IP family
/// defaulting; the node strategy's pod CIDR rules). Returns the field errors found.
pub fn prepare(old: Option<&Object>, object: &mut Object) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match (old, object) {
        (None, Object::Service(service)) => prepare_service(None, service, &mut errors),
        (Some(Object::Service(old)), Object::Service(service)) => {
            prepare_service(Some(old), service, &mut errors);
        }
        (None, Object::Node(node)) => prepare_node(None, node, &mut errors),
        (Some(Object::Node(old)), Object::Node(node)) => {
            prepare_node(Some(old), node, &mut errors);
        }
        _ => {}
    }
    errors
}

fn prepare_service(old: Option<&Service>, service: &mut Service, errors: &mut Vec<FieldError>) {
    let Some(spec) = service.spec.as_mut() else {
        return;
    };
    let old_spec = old.and_then(|old| old.spec.as_ref());
    if let Some(old_spec) = old_spec {
        // What the server allocated is kept when a write leaves it out (a PUT of the
        // manifest the user wrote).
        if cluster_ip(spec).is_empty() {
            spec.cluster_ip.clone_from(&old_spec.cluster_ip);
        }
        if spec.cluster_ips.as_ref().is_none_or(Vec::is_empty) {
            spec.cluster_ips.clone_from(&old_spec.cluster_ips);
        } else if cluster_ip(spec) != cluster_ip(old_spec)
            && spec.cluster_ips == old_spec.cluster_ips
            && let Some(first) = spec.cluster_ips.as_mut().and_then(|ips| ips.first_mut())
        {
            // The user changed clusterIP only: clusterIPs follows, and validation
            // reports the change.
            if let Some(ip) = spec.cluster_ip.clone() {
                *first = ip;
            }
        }
        if needs_node_ports(old_spec) && needs_node_ports(spec) {
            let used: HashSet<i32> = node_ports(old_spec)
                .intersection(&node_ports(spec))
                .copied()
                .collect();
            let by_name: HashMap<Option<&str>, i32> = old_spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| Some((p.name.as_deref(), p.node_port.filter(|n| *n != 0)?)))
                .collect();
            let by_name: HashMap<Option<String>, i32> = by_name
                .into_iter()
                .map(|(name, port)| (name.map(str::to_owned), port))
                .collect();
            for port in spec.ports.iter_mut().flatten() {
                if port.node_port.unwrap_or(0) == 0
                    && let Some(previous) = by_name.get(&port.name)
                    && !used.contains(previous)
                {
                    port.node_port = Some(*previous);
                }
            }
        }
        // A service that no longer needs node ports drops them, unless the write
        // asks for new ones (which validation then rejects).
        if needs_node_ports(old_spec)
            && !needs_node_ports(spec)
            && node_ports(old_spec).is_superset(&node_ports(spec))
        {
            for port in spec.ports.iter_mut().flatten() {
                port.node_port = None;
            }
        }
        if spec.ip_family_policy.is_none() {
            spec.ip_family_policy.clone_from(&old_spec.ip_family_policy);
        }
        if spec.ip_families.as_ref().is_none_or(Vec::is_empty) {
            spec.ip_families.clone_from(&old_spec.ip_families);
        }
    }
    // clusterIP and clusterIPs[0] are the same value.
    let clusters_path = FieldPath::new("spec").child("clusterIPs");
    match spec.cluster_ips.as_deref() {
        None | Some([]) => {
            if !cluster_ip(spec).is_empty() {
                spec.cluster_ips = Some(vec![cluster_ip(spec).to_owned()]);
            }
        }
        Some([first, ..]) => {
            if cluster_ip(spec).is_empty() {
                spec.cluster_ip = Some(first.clone());
            } else if first != cluster_ip(spec) {
                errors.push(FieldError::invalid(
                    &clusters_path,
                    list_value(spec.cluster_ips.as_deref()),
                    "first value must match `clusterIP`",
                ));
            }
        }
    }
    let headless = cluster_ip(spec) == "None";
    let policy_path = FieldPath::new("spec").child("ipFamilyPolicy");
    if headless && !has_selector(spec) {
        // kube's special case: a headless service without a selector defaults to
        // both families (its endpoints are someone else's).
        if spec.ip_family_policy.is_none() {
            spec.ip_family_policy = Some("RequireDualStack".to_owned());
        }
        let families = spec.ip_families.get_or_insert_default();
        if families.is_empty() {
            families.push("IPv4".to_owned());
        }
        if spec.ip_family_policy.as_deref() != Some("SingleStack") && families.len() < 2 {
            let other = if families[0] == "IPv4" {
                "IPv6"
            } else {
                "IPv4"
            };
            families.push(other.to_owned());
        }
        return;
    }
    let policy = spec
        .ip_family_policy
        .get_or_insert_with(|| "SingleStack".to_owned());
    if policy == "RequireDualStack" {
        errors.push(FieldError::invalid(
            &policy_path,
            policy.as_str(),
            "this cluster is not configured for dual-stack services",
        ));
    }
    for (idx, ip) in spec.cluster_ips.iter().flatten().enumerate() {
        if headless {
            break;
        }
        let detail = if ip.contains(':') {
            "IPv6 is not configured on this cluster"
        } else if idx > 0 {
            "this cluster is not configured for dual-stack services"
        } else {
            continue;
        };
        errors.push(FieldError::invalid(
            &clusters_path.index(idx),
            list_value(spec.cluster_ips.as_deref()),
            detail,
        ));
    }
    let families = spec.ip_families.get_or_insert_default();
    for (idx, family) in families.iter().enumerate() {
        if family == "IPv6" {
            errors.push(FieldError::invalid(
                &FieldPath::new("spec").child("ipFamilies").index(idx),
                family.as_str(),
                "not configured on this cluster",
            ));
        }
    }
    if families.is_empty() {
        families.push("IPv4".to_owned());
    }
}

/// A list of strings as a bad value (kube prints the whole `clusterIPs`).
fn list_value(values: Option<&[String]>) -> Value {
    Value::from(values.unwrap_or_default().to_vec())
}

fn pod_cidr(node: &Node) -> Option<&str> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidr
        .as_deref()
        .or_else(|| spec.pod_cidrs.as_ref()?.first().map(String::as_str))
        .filter(|cidr| !cidr.is_empty())
}

fn prepare_node(old: Option<&Node>, node: &mut Node, errors: &mut Vec<FieldError>) {
    let new_cidr = pod_cidr(node).map(str::to_owned);
    let old_cidr = old.and_then(pod_cidr).map(str::to_owned);
    match (old_cidr, new_cidr) {
        (Some(old_cidr), None) => {
            // Assigned once, kept: a write that leaves it out does not clear it.
            let spec = node.spec.get_or_insert_default();
            spec.pod_cidr = Some(old_cidr.clone());
            spec.pod_cidrs = Some(vec![old_cidr]);
        }
        (Some(old_cidr), Some(new_cidr)) if old_cidr != new_cidr => {
            errors.push(FieldError::forbidden(
                &FieldPath::new("spec").child("podCIDRs"),
                "node updates may not change podCIDR except from \"\" to valid",
            ));
        }
        (_, Some(new_cidr)) => {
            let spec = node.spec.get_or_insert_default();
            spec.pod_cidr = Some(new_cidr.clone());
            if spec.pod_cidrs.as_ref().is_none_or(Vec::is_empty) {
                spec.pod_cidrs = Some(vec![new_cidr]);
            }
        }
        (None, None) => {}
    }
}

/// The values `object` holds: a Service's cluster IP (when in the service range) and
/// node ports (when in the node port range), a Node's pod CIDR (when it is one of the
/// cluster CIDR's node subnets). Values outside the ranges (from before the ranges
/// changed) hold nothing.
pub fn held(object: &Object, settings: &NetworkSettings) -> BTreeSet<Reservation> {
    let mut held = BTreeSet::new();
    match object {
        Object::Service(service) => {
            let Some(spec) = &service.spec else {
                return held;
            };
            if let Ok(ip) = cluster_ip(spec).parse::<Ipv4Addr>()
                && settings.service_ips().index(ip).is_some()
            {
                held.insert(Reservation::ServiceIp(ip));
            }
            for port in node_ports(spec) {
                if settings.node_port_range.contains(i64::from(port))
                    && let Ok(port) = u16::try_from(port)
                {
                    held.insert(Reservation::NodePort(port));
                }
            }
        }
        Object::Node(node) => {
            if let Some(cidr) = pod_cidr(node).and_then(|c| c.parse::<Ipv4Cidr>().ok())
                && settings.pod_cidr_index(&cidr).is_some()
            {
                held.insert(Reservation::PodCidr(cidr));
            }
        }
        _ => {}
    }
    held
}

/// The indexes of the reserved values under `prefix`, as `index` maps each key's last
/// part.
async fn taken(
    store: &Store,
    prefix: &str,
    index: impl Fn(&str) -> Option<u64>,
) -> Result<HashSet<u64>, ApiError> {
    let page = store
        .range(prefix, None, 0, Consistency::Linearizable)
        .await?;
    Ok(page
        .kvs
        .iter()
        .filter_map(|kv| index(kv.key.strip_prefix(prefix)?))
        .collect())
}

/// Fills in what `object` needs allocated, reading what is taken: a Service's cluster
/// IP (random in the range, the static band last) unless headless, and a node port for
/// each port of a NodePort/LoadBalancer service (ports with the same number share one);
/// a Node's pod CIDR (the first free subnet) when `assign_pod_cidr` and it has none.
/// Values the user gave are checked against the ranges (422 with kube's messages);
/// that they are free is the transaction's business. Returns what was picked here.
pub async fn allocate(
    store: &Store,
    settings: &NetworkSettings,
    old: Option<&Object>,
    object: &mut Object,
    assign_pod_cidr: bool,
) -> Result<BTreeSet<Reservation>, ApiError> {
    let mut picked = BTreeSet::new();
    let kind = object.kind();
    let name = object.name().to_owned();
    match object {
        Object::Service(service) => {
            let old_spec = match old {
                Some(Object::Service(old)) => old.spec.as_ref(),
                _ => None,
            };
            let Some(spec) = service.spec.as_mut() else {
                return Ok(picked);
            };
            let errors = allocate_service(store, settings, old_spec, spec, &mut picked).await?;
            if !errors.is_empty() {
                return Err(ApiError::invalid(kind, &name, &errors));
            }
        }
        Object::Node(node) if assign_pod_cidr && pod_cidr(node).is_none() => {
            let taken = taken(store, POD_CIDRS, |suffix| {
                settings.pod_cidr_index(&suffix.parse().ok()?)
            })
            .await?;
            match settings.free_pod_cidr(|index| taken.contains(&index)) {
                Some(cidr) => {
                    let spec = node.spec.get_or_insert_default();
                    spec.pod_cidr = Some(cidr.to_string());
                    spec.pod_cidrs = Some(vec![cidr.to_string()]);
                    picked.insert(Reservation::PodCidr(cidr));
                }
                // As kube's node IPAM, the node is kept without one (and gets one
                // when a later write finds a subnet free).
                None => tracing::warn!(
                    node = %name,
                    cluster_cidr = %settings.cluster_cidr,
                    "no pod CIDR is free for the node"
                ),
            }
        }
        _ => {}
    }
    Ok(picked)
}

async fn allocate_service(
    store: &Store,
    settings: &NetworkSettings,
    old: Option<&ServiceSpec>,
    spec: &mut ServiceSpec,
    picked: &mut BTreeSet<Reservation>,
) -> Result<Vec<FieldError>, ApiError> {
    let mut errors = Vec::new();
    let range = settings.service_ips();
    let ip = cluster_ip(spec).to_owned();
    if ip.is_empty() {
        let taken = taken(store, SERVICE_IPS, |suffix| {
            range.index(suffix.parse().ok()?)
        })
        .await?;
        let index = pick_free(range.size(), range.static_band(), rand::random(), |index| {
            taken.contains(&index)
        })
        .ok_or_else(|| ApiError::internal("failed to allocate a serviceIP: range is full"))?;
        let ip = range.ip(index);
        spec.cluster_ip = Some(ip.to_string());
        spec.cluster_ips = Some(vec![ip.to_string()]);
        picked.insert(Reservation::ServiceIp(ip));
    } else if ip != "None" && old.is_none_or(|old| cluster_ip(old) != ip) {
        let in_range = ip
            .parse::<Ipv4Addr>()
            .is_ok_and(|ip| range.index(ip).is_some());
        if !in_range {
            errors.push(FieldError::invalid(
                &FieldPath::new("spec").child("clusterIPs"),
                list_value(spec.cluster_ips.as_deref()),
                format!(
                    "failed to allocate IP {ip}: provided IP is not in the valid range. The range of valid IPs is {}",
                    settings.service_cidr
                ),
            ));
        }
    }
    if !needs_node_ports(spec) {
        return Ok(errors);
    }
    let ports = &settings.node_port_range;
    let kept = old.map(node_ports).unwrap_or_default();
    let mut wanted = false;
    for (idx, port) in spec.ports.iter().flatten().enumerate() {
        match port.node_port.filter(|p| *p != 0) {
            None => wanted = true,
            Some(node_port) if !kept.contains(&node_port) && !ports.contains(node_port.into()) => {
                errors.push(FieldError::invalid(
                    &FieldPath::new("spec")
                        .child("ports")
                        .index(idx)
                        .child("nodePort"),
                    node_port,
                    format!(
                        "provided port is not in the valid range. The range of valid ports is {ports}"
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    if !wanted || !errors.is_empty() {
        return Ok(errors);
    }
    let first = i64::from(ports.first());
    let index_of = |port: i64| u64::try_from(port - first).ok();
    let mut taken = taken(store, NODE_PORTS, |suffix| index_of(suffix.parse().ok()?)).await?;
    taken.extend(
        node_ports(spec)
            .into_iter()
            .filter_map(|p| index_of(p.into())),
    );
    // Ports of one number (TCP and UDP 53) share a node port, as kube's allocator does.
    let mut by_port: HashMap<i32, i32> = HashMap::new();
    for port in spec.ports.iter_mut().flatten() {
        if port.node_port.unwrap_or(0) != 0 {
            continue;
        }
        if let Some(node_port) = by_port.get(&port.port) {
            port.node_port = Some(*node_port);
            continue;
        }
        let index = pick_free(
            ports.size(),
            node_port_static_band(ports),
            rand::random(),
            |index| taken.contains(&index),
        )
        .ok_or_else(|| ApiError::internal("failed to allocate a nodePort: range is full"))?;
        taken.insert(index);
        let node_port = ports.port(index);
        port.node_port = Some(i32::from(node_port));
        by_port.insert(port.port, i32::from(node_port));
        picked.insert(Reservation::NodePort(node_port));
    }
    Ok(errors)
}

/// The store operations that move the reservations from what `old` holds to what `new`
/// holds (either may be absent: a create, a deletion).
#[derive(Debug, Default)]
pub struct Changes {
    /// The reservations created, in the order of the first operations.
    pub created: Vec<Reservation>,
    /// Creates (with the holder) for the new reservations, then deletes of the
    /// released ones (compare-and-swap on the revision read).
    pub ops: Vec<Op>,
}

impl Changes {
    /// The reservation whose create is the transaction's operation `op_index`, when
    /// the object's own operation comes first.
    pub fn created_at(&self, op_index: usize) -> Option<Reservation> {
        op_index
            .checked_sub(1)
            .and_then(|idx| self.created.get(idx))
            .copied()
    }
}

/// The operations that reserve what `new` holds and `old` does not, and release what
/// `old` holds and `new` does not. A released key is deleted only if it exists and
/// names `old` as its holder (values from before reservations existed hold no key).
pub async fn changes(
    store: &Store,
    settings: &NetworkSettings,
    old: Option<&Object>,
    new: Option<&Object>,
) -> Result<Changes, ApiError> {
    let old_held = old.map(|o| held(o, settings)).unwrap_or_default();
    let new_held = new.map(|n| held(n, settings)).unwrap_or_default();
    let mut changes = Changes::default();
    if let Some(new) = new {
        let holder = serde_json::to_vec(&Holder::of(new)).expect("a holder always serializes");
        for reservation in new_held.difference(&old_held) {
            changes.created.push(*reservation);
            changes.ops.push(Op::Create {
                key: reservation.key(),
                value: holder.clone(),
            });
        }
    }
    let Some(old) = old else {
        return Ok(changes);
    };
    let uid = old.metadata().uid.as_deref().unwrap_or_default();
    for reservation in old_held.difference(&new_held) {
        let key = reservation.key();
        // The object was just read linearizably on this member, so what this member
        // has applied already includes its reservations; the delete is
        // compare-and-swap, so a later change fails the transaction.
        let (kv, _) = store.get(&key, Consistency::Stale).await?;
        let Some(kv) = kv else { continue };
        let ours = serde_json::from_slice::<Holder>(&kv.value).is_ok_and(|h| h.uid == uid);
        if ours {
            changes.ops.push(Op::Delete {
                key,
                expected_revision: Some(kv.mod_revision),
            });
        }
    }
    Ok(changes)
}

/// For a dry run: fails as the transaction would if a reservation in `reservations`
/// is held already.
pub async fn check_free(
    store: &Store,
    object: &Object,
    reservations: impl IntoIterator<Item = Reservation>,
) -> Result<(), ApiError> {
    for reservation in reservations {
        let (kv, _) = store
            .get(&reservation.key(), Consistency::Linearizable)
            .await?;
        if kv.is_some() {
            return Err(taken_error(object, reservation));
        }
    }
    Ok(())
}

/// 422 for a value the user asked for that another object holds, in kube's words.
pub fn taken_error(object: &Object, reservation: Reservation) -> ApiError {
    let error = match (reservation, object) {
        (Reservation::ServiceIp(ip), Object::Service(service)) => FieldError::invalid(
            &FieldPath::new("spec").child("clusterIPs"),
            list_value(service.spec.as_ref().and_then(|s| s.cluster_ips.as_deref())),
            format!("failed to allocate IP {ip}: provided IP is already allocated"),
        ),
        (Reservation::NodePort(node_port), Object::Service(service)) => {
            let idx = service
                .spec
                .iter()
                .flat_map(|s| s.ports.iter().flatten())
                .position(|p| p.node_port == Some(i32::from(node_port)))
                .unwrap_or(0);
            FieldError::invalid(
                &FieldPath::new("spec")
                    .child("ports")
                    .index(idx)
                    .child("nodePort"),
                node_port,
                "provided port is already allocated",
            )
        }
        (reservation, _) => {
            let value = match reservation {
                Reservation::PodCidr(cidr) => cidr.to_string(),
                Reservation::ServiceIp(ip) => ip.to_string(),
                Reservation::NodePort(port) => port.to_string(),
            };
            FieldError::invalid(
                &FieldPath::new("spec").child("podCIDR"),
                value,
                "provided CIDR is already allocated to another node",
            )
        }
    };
    ApiError::invalid(object.kind(), object.name(), &[error])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::object;

    fn service(spec: Value) -> Object {
        object(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": spec,
        }))
    }

    fn spec_of(object: &Object) -> Value {
        object.to_value()["spec"].clone()
    }

    #[test]
    fn prepare_links_cluster_ip_fields_and_defaults_single_stack() {
        let mut given = service(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 53}]}));
        assert!(prepare(None, &mut given).is_empty());
        let spec = spec_of(&given);
        assert_eq!(spec["clusterIPs"], json!(["10.96.0.10"]));
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");

        let mut from_list = service(json!({"clusterIPs": ["10.96.0.11"], "ports": [{"port": 53}]}));
        assert!(prepare(None, &mut from_list).is_empty());
        assert_eq!(spec_of(&from_list)["clusterIP"], "10.96.0.11");

        let mut mismatch = service(json!({
            "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.11"], "ports": [{"port": 53}]
        }));
        let errors: Vec<String> = prepare(None, &mut mismatch)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                r#"spec.clusterIPs: Invalid value: ["10.96.0.11"]: first value must match `clusterIP`"#
            ]
        );

        let mut dual = service(json!({
            "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 80}]
        }));
        let errors: Vec<String> = prepare(None, &mut dual)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                r#"spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services"#,
                r#"spec.ipFamilies[1]: Invalid value: "IPv6": not configured on this cluster"#,
            ]
        );

        let mut headless = service(json!({"clusterIP": "None"}));
        assert!(prepare(None, &mut headless).is_empty());
        let spec = spec_of(&headless);
        assert_eq!(spec["clusterIPs"], json!(["None"]));
        assert_eq!(
            spec["ipFamilyPolicy"], "RequireDualStack",
            "kube's headless default"
        );
        assert_eq!(spec["ipFamilies"], json!(["IPv4", "IPv6"]));
    }

    #[test]
    fn prepare_keeps_allocated_values_and_drops_node_ports_with_the_type() {
        let old = service(json!({
            "type": "NodePort", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}, {"name": "https", "port": 443, "nodePort": 30443}]
        }));
        // A PUT of the user's manifest: the allocated values come back.
        let mut put = service(json!({
            "type": "NodePort", "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]
        }));
        assert!(prepare(Some(&old), &mut put).is_empty());
        let spec = spec_of(&put);
        assert_eq!(spec["clusterIP"], "10.96.0.20");
        assert_eq!(spec["clusterIPs"], json!(["10.96.0.20"]));
        assert_eq!(spec["ports"][0]["nodePort"], 30080);
        assert_eq!(spec["ports"][1]["nodePort"], 30443);
        // A node port another port now uses is not handed back.
        let mut moved = service(json!({
            "type": "NodePort", "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443, "nodePort": 30080}]
        }));
        assert!(prepare(Some(&old), &mut moved).is_empty());
        let spec = spec_of(&moved);
        assert_eq!(spec["ports"][0].get("nodePort"), None);
        assert_eq!(spec["ports"][1]["nodePort"], 30080);
        // NodePort → ClusterIP drops the node ports the service had.
        let mut cluster = old.clone();
        if let Object::Service(service) = &mut cluster {
            service.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        }
        assert!(prepare(Some(&old), &mut cluster).is_empty());
        let spec = spec_of(&cluster);
        assert_eq!(spec["ports"][0].get("nodePort"), None);
        assert_eq!(spec["ports"][1].get("nodePort"), None);
        // ... unless the write asks for a new one (validation rejects it).
        let mut new_port = cluster.clone();
        if let Object::Service(service) = &mut new_port {
            service.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(31000);
        }
        assert!(prepare(Some(&old), &mut new_port).is_empty());
        assert_eq!(spec_of(&new_port)["ports"][0]["nodePort"], 31000);
    }

    #[test]
    fn node_pod_cidrs_are_kept_and_immutable() {
        let node = |spec: Value| {
            object(
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": spec}),
            )
        };
        let old = node(json!({"podCIDR": "10.244.3.0/24", "podCIDRs": ["10.244.3.0/24"]}));
        let mut put = node(json!({}));
        assert!(prepare(Some(&old), &mut put).is_empty());
        assert_eq!(spec_of(&put), spec_of(&old));
        let mut changed = node(json!({"podCIDR": "10.244.4.0/24"}));
        let errors: Vec<String> = prepare(Some(&old), &mut changed)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                r#"spec.podCIDRs: Forbidden: node updates may not change podCIDR except from "" to valid"#
            ]
        );
        let mut given = node(json!({"podCIDRs": ["10.244.5.0/24"]}));
        assert!(prepare(None, &mut given).is_empty());
        assert_eq!(spec_of(&given)["podCIDR"], "10.244.5.0/24");
        let settings = NetworkSettings::default();
        assert_eq!(
            held(&given, &settings),
            [Reservation::PodCidr("10.244.5.0/24".parse().unwrap())].into()
        );
        // Not one of the cluster's node subnets: held by nobody.
        let foreign = node(json!({"podCIDR": "192.168.0.0/24"}));
        assert!(held(&foreign, &settings).is_empty());
    }

    #[test]
    fn services_hold_their_in_range_ip_and_node_ports() {
        let settings = NetworkSettings::default();
        let nodeport = service(json!({
            "type": "NodePort", "clusterIP": "10.96.0.20",
            "ports": [{"name": "a", "port": 53, "protocol": "TCP", "nodePort": 30053},
                      {"name": "b", "port": 53, "protocol": "UDP", "nodePort": 30053},
                      {"name": "c", "port": 80, "nodePort": 80}]
        }));
        assert_eq!(
            held(&nodeport, &settings),
            [
                Reservation::ServiceIp(Ipv4Addr::new(10, 96, 0, 20)),
                Reservation::NodePort(30053)
            ]
            .into()
        );
        let headless = service(json!({"clusterIP": "None"}));
        assert!(held(&headless, &settings).is_empty());
        assert_eq!(
            Reservation::ServiceIp(Ipv4Addr::new(10, 96, 0, 1)).key(),
            "/registry/ranges/serviceips/10.96.0.1"
        );
        assert_eq!(
            Reservation::NodePort(30080).key(),
            "/registry/ranges/servicenodeports/30080"
        );
        assert_eq!(
            Reservation::PodCidr("10.244.1.0/24".parse().unwrap()).key(),
            "/registry/ranges/podcidrs/10.244.1.0/24"
        );
    }
}
