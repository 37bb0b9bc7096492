//! The service proxy: Services + Endpoints → one nftables table.
//!
//! This is kube-proxy's nftables mode, simplified. Everything lives in one table (family
//! `ip`, named by [`ProxyConfig::table`]) that only the proxy writes:
//!
//! - `services` (jumped to from the `nat-prerouting` and `nat-output` hooks) dispatches on
//!   `ip daddr . meta l4proto . th dport` through the `service-ips` verdict map to one
//!   `service-…` chain per service port, and on `meta l4proto . th dport` of local
//!   addresses through `service-nodeports`; host ports have their own two maps.
//! - A `service-…` chain spreads new connections evenly over ready endpoints with
//!   `numgen random mod N vmap`, each `endpoint-…` chain DNATs to one `ip:port`. With
//!   `sessionAffinity: ClientIP`, each endpoint has an `affinity-…` set its chain updates
//!   with the client address, and the service chain looks those sets up first.
//! - Service ports without ready endpoints are in `no-endpoint-services` /
//!   `no-endpoint-nodeports`, which the filter hooks turn into rejects.
//! - `nat-postrouting` masquerades marked (NodePort/LoadBalancer, hairpin) traffic, pod
//!   traffic leaving the cluster, and DNATed traffic from a local pod going back out of the
//!   bridge (without `br_netfilter`, the reply would be bridged past conntrack otherwise).
//!
//! [`Ruleset::build`] turns the objects into a model (pure); [`Ruleset::full_script`] and
//! [`Ruleset::diff_script`] turn models into `nft -f -` text (pure); [`ServiceProxy`] keeps
//! the last synced model and applies one transaction per sync.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use sha2::{Digest as _, Sha256};
use skiff_api::types::{EndpointSubset, Endpoints, Service, ServicePort};
use tokio::io::AsyncWriteExt as _;

use super::NetworkError;

type Result<T> = std::result::Result<T, NetworkError>;

/// The mark that asks `nat-postrouting` to masquerade a connection (kube-proxy's value).
const MASQUERADE_MARK: &str = "0x4000";
/// kube-proxy's default `sessionAffinityConfig.clientIP.timeoutSeconds`.
const DEFAULT_AFFINITY_TIMEOUT_SECONDS: i32 = 10800;
/// nftables object names are at most 255 bytes; generated names stay well below.
const MAX_NAME_LEN: usize = 200;

/// Where and how the proxy programs the node.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The nftables table (family `ip`) the proxy owns; nothing else may write to it.
    pub table: String,
    /// The node's own addresses: a `LoadBalancer` service's `port` is served on them
    /// (k3s ServiceLB style, the load balancer address is the node address).
    pub node_ips: Vec<Ipv4Addr>,
    /// Every pod address in the cluster: pod traffic leaving it is masqueraded, and
    /// traffic from outside it to a ClusterIP is marked for masquerade.
    pub cluster_cidr: Ipv4Net,
    /// This node's pods: DNATed traffic from them back out of the bridge is masqueraded.
    pub pod_cidr: Ipv4Net,
    /// The pod bridge's interface name.
    pub bridge: String,
    /// The command that runs `nft` (`["nft"]`; tests prefix `nsenter --net=PATH`).
    pub nft: Vec<String>,
}

impl ProxyConfig {
    /// A configuration with the default table (`skiff`), bridge (`skiff0`) and `nft`.
    pub fn new(node_ips: Vec<Ipv4Addr>, cluster_cidr: Ipv4Net, pod_cidr: Ipv4Net) -> Self {
        Self {
            table: "skiff".to_owned(),
            node_ips,
            cluster_cidr,
            pod_cidr,
            bridge: "skiff0".to_owned(),
            nft: vec!["nft".to_owned()],
        }
    }
}

/// An IP protocol a service or host port is served on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP, the Kubernetes default.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The protocol of a Kubernetes `protocol` field (`None` means TCP).
    pub fn from_kubernetes(protocol: Option<&str>) -> Option<Self> {
        match protocol.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }

    /// The protocol's nftables keyword.
    pub fn as_nft(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// A pod's `hostPort`: connections to the node on `host_port` go to the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// The protocol of the port.
    pub protocol: Protocol,
    /// Only connections to this node address (`hostIP`), or to any of them.
    pub host_ip: Option<Ipv4Addr>,
    /// The port on the node.
    pub host_port: u16,
    /// The pod's address.
    pub pod_ip: Ipv4Addr,
    /// The port in the pod.
    pub container_port: u16,
}

/// What one [`ServiceProxy::sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Whether the whole table was rewritten (first sync, or after a failure).
    pub full: bool,
    /// Service ports programmed, with or without endpoints.
    pub service_ports: usize,
    /// Endpoint chains programmed.
    pub endpoints: usize,
    /// Chains created.
    pub chains_added: usize,
    /// Existing chains whose rules were replaced.
    pub chains_changed: usize,
    /// Chains deleted.
    pub chains_deleted: usize,
    /// Map elements added (a changed element counts as deleted and added).
    pub elements_added: usize,
    /// Map elements deleted.
    pub elements_deleted: usize,
    /// Lines of the `nft -f -` transaction (0: nothing changed, `nft` was not run).
    pub script_lines: usize,
    /// Building the model and the script.
    pub generate: Duration,
    /// Running `nft` (the kernel transaction included).
    pub apply: Duration,
}

/// One chain of the table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chain {
    /// The base chain's `{ type … hook … }` definition; `None` for regular chains.
    pub hook: Option<String>,
    /// The rules, in order, as `nft` text after `add rule ip TABLE CHAIN`.
    pub rules: Vec<String>,
}

/// One verdict map of the table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Map {
    /// The `type … : verdict` definition.
    pub definition: String,
    /// Key → verdict, as `nft` text.
    pub elements: BTreeMap<String, String>,
}

/// The proxy's whole table as a model: what the kernel should hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    /// Chains by name.
    pub chains: BTreeMap<String, Chain>,
    /// Sets (session affinity) by name → definition.
    pub sets: BTreeMap<String, String>,
    /// Verdict maps by name.
    pub maps: BTreeMap<String, Map>,
    /// Service ports in the model.
    pub service_ports: usize,
    /// Endpoint chains in the model.
    pub endpoints: usize,
}

/// The names of what a table already holds, read before the first sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// Chain names.
    pub chains: BTreeSet<String>,
    /// Set names.
    pub sets: BTreeSet<String>,
    /// Map names.
    pub maps: BTreeSet<String>,
}

/// One resolved service port: what its chains are built from.
struct ServicePortModel<'a> {
    namespace: &'a str,
    name: &'a str,
    port_name: String,
    protocol: Protocol,
    cluster_ip: Ipv4Addr,
    port: u16,
    node_port: Option<u16>,
    load_balancer: bool,
    affinity_timeout: Option<i32>,
    endpoints: Vec<(Ipv4Addr, u16)>,
}

impl Ruleset {
    /// Builds the table for these objects. Services without an IPv4 ClusterIP (headless,
    /// `ExternalName`, IPv6) and ports of unknown protocols are left out.
    pub fn build(
        config: &ProxyConfig,
        services: &[Service],
        endpoints: &[Endpoints],
        host_ports: &[HostPort],
    ) -> Self {
        let mut ruleset = Self::base(config);
        let endpoints_by_key: HashMap<(&str, &str), &Endpoints> = endpoints
            .iter()
            .filter_map(|endpoints| {
                let namespace = endpoints.metadata.namespace.as_deref().unwrap_or("default");
                Some(((namespace, endpoints.metadata.name.as_deref()?), endpoints))
            })
            .collect();
        for service in services {
            let Some(name) = service.metadata.name.as_deref() else {
                continue;
            };
            let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
            let subsets = endpoints_by_key
                .get(&(namespace, name))
                .and_then(|endpoints| endpoints.subsets.as_deref())
                .unwrap_or_default();
            for port in service_ports(service, namespace, name, subsets) {
                ruleset.add_service_port(config, &port);
            }
        }
        for host_port in host_ports {
            ruleset.add_host_port(host_port);
        }
        ruleset
    }

    /// The chains, maps and rules that do not depend on any object.
    fn base(config: &ProxyConfig) -> Self {
        let mut ruleset = Self::default();
        let hooks = [
            (
                "nat-prerouting",
                "type nat hook prerouting priority -100; policy accept;",
                vec!["jump services"],
            ),
            (
                "nat-output",
                "type nat hook output priority -100; policy accept;",
                vec!["jump services"],
            ),
            (
                "filter-input",
                "type filter hook input priority -110; policy accept;",
                vec![
                    "ct state new jump nodeport-endpoints-check",
                    "ct state new jump service-endpoints-check",
                ],
            ),
            (
                "filter-forward",
                "type filter hook forward priority -110; policy accept;",
                vec!["ct state new jump service-endpoints-check"],
            ),
            (
                "filter-output",
                "type filter hook output priority -110; policy accept;",
                vec!["ct state new jump service-endpoints-check"],
            ),
        ];
        for (name, hook, rules) in hooks {
            ruleset.chains.insert(
                name.to_owned(),
                Chain {
                    hook: Some(hook.to_owned()),
                    rules: rules.into_iter().map(str::to_owned).collect(),
                },
            );
        }
        let cluster_cidr = config.cluster_cidr.trunc();
        let pod_cidr = config.pod_cidr.trunc();
        ruleset.chains.insert(
            "nat-postrouting".to_owned(),
            Chain {
                hook: Some("type nat hook postrouting priority 100; policy accept;".to_owned()),
                rules: vec![
                    "jump masquerading".to_owned(),
                    format!(
                        "oifname {} ip saddr {pod_cidr} ct status dnat masquerade",
                        quote(&config.bridge)
                    ),
                    format!("ip saddr {cluster_cidr} ip daddr != {cluster_cidr} masquerade"),
                ],
            },
        );
        let regular = [
            ("services", vec![
                "ip daddr . meta l4proto . th dport vmap @service-ips".to_owned(),
                "ip daddr . meta l4proto . th dport vmap @hostports-ip".to_owned(),
                "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports".to_owned(),
                "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @hostports".to_owned(),
            ]),
            ("service-endpoints-check", vec![
                "ip daddr . meta l4proto . th dport vmap @no-endpoint-services".to_owned(),
            ]),
            ("nodeport-endpoints-check", vec![
                "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports".to_owned(),
            ]),
            ("reject-chain", vec!["reject".to_owned()]),
            ("mark-for-masquerade", vec![format!("meta mark set meta mark or {MASQUERADE_MARK}")]),
            ("masquerading", vec![
                format!("meta mark & {MASQUERADE_MARK} == 0 return"),
                format!("meta mark set meta mark xor {MASQUERADE_MARK}"),
                "masquerade fully-random".to_owned(),
            ]),
        ];
        for (name, rules) in regular {
            ruleset
                .chains
                .insert(name.to_owned(), Chain { hook: None, rules });
        }
        let address_key = "type ipv4_addr . inet_proto . inet_service : verdict;";
        let port_key = "type inet_proto . inet_service : verdict;";
        for (name, definition) in [
            ("service-ips", address_key),
            ("no-endpoint-services", address_key),
            ("hostports-ip", address_key),
            ("service-nodeports", port_key),
            ("no-endpoint-nodeports", port_key),
            ("hostports", port_key),
        ] {
            ruleset.maps.insert(
                name.to_owned(),
                Map {
                    definition: definition.to_owned(),
                    elements: BTreeMap::new(),
                },
            );
        }
        ruleset
    }

    fn add_element(&mut self, map: &str, key: String, verdict: String) {
        self.maps
            .get_mut(map)
            .expect("maps are created by Ruleset::base")
            .elements
            .insert(key, verdict);
    }

    fn add_service_port(&mut self, config: &ProxyConfig, port: &ServicePortModel<'_>) {
        self.service_ports += 1;
        let proto = port.protocol.as_nft();
        let base = format!(
            "{}/{}/{proto}/{}",
            port.namespace, port.name, port.port_name
        );
        let mut lb_addresses: Vec<Ipv4Addr> = Vec::new();
        if port.load_balancer {
            lb_addresses.extend(config.node_ips.iter().copied());
        }
        if port.endpoints.is_empty() {
            let reject = "goto reject-chain".to_owned();
            self.add_element(
                "no-endpoint-services",
                format!("{} . {proto} . {}", port.cluster_ip, port.port),
                reject.clone(),
            );
            for address in &lb_addresses {
                self.add_element(
                    "no-endpoint-services",
                    format!("{address} . {proto} . {}", port.port),
                    reject.clone(),
                );
            }
            if let Some(node_port) = port.node_port {
                self.add_element(
                    "no-endpoint-nodeports",
                    format!("{proto} . {node_port}"),
                    reject,
                );
            }
            return;
        }

        let service_chain = object_name("service", &base);
        let cluster_cidr = config.cluster_cidr.trunc();
        let mut service_rules = vec![format!(
            "ip daddr {} {proto} dport {} ip saddr != {cluster_cidr} jump mark-for-masquerade",
            port.cluster_ip, port.port
        )];
        let mut endpoint_chains = Vec::with_capacity(port.endpoints.len());
        for (ip, target_port) in &port.endpoints {
            self.endpoints += 1;
            let endpoint_base = format!("{base}__{ip}/{target_port}");
            let endpoint_chain = object_name("endpoint", &endpoint_base);
            let mut rules = vec![format!("ip saddr {ip} jump mark-for-masquerade")];
            if let Some(timeout) = port.affinity_timeout {
                let set = object_name("affinity", &endpoint_base);
                self.sets.insert(
                    set.clone(),
                    format!("type ipv4_addr; flags dynamic,timeout; timeout {timeout}s;"),
                );
                rules.push(format!("update @{set} {{ ip saddr }}"));
                service_rules.push(format!("ip saddr @{set} goto {endpoint_chain}"));
            }
            rules.push(format!("meta l4proto {proto} dnat to {ip}:{target_port}"));
            self.chains
                .insert(endpoint_chain.clone(), Chain { hook: None, rules });
            endpoint_chains.push(endpoint_chain);
        }
        let mut vmap = String::new();
        for (idx, chain) in endpoint_chains.iter().enumerate() {
            if idx > 0 {
                vmap.push_str(", ");
            }
            let _ = write!(vmap, "{idx} : goto {chain}");
        }
        service_rules.push(format!(
            "numgen random mod {} vmap {{ {vmap} }}",
            endpoint_chains.len()
        ));
        self.chains.insert(
            service_chain.clone(),
            Chain {
                hook: None,
                rules: service_rules,
            },
        );
        self.add_element(
            "service-ips",
            format!("{} . {proto} . {}", port.cluster_ip, port.port),
            format!("goto {service_chain}"),
        );

        if port.node_port.is_some() || !lb_addresses.is_empty() {
            // Traffic from outside the cluster is masqueraded (externalTrafficPolicy
            // Cluster), so the reply comes back through this node whichever node serves it.
            let external_chain = object_name("external", &base);
            self.chains.insert(
                external_chain.clone(),
                Chain {
                    hook: None,
                    rules: vec![
                        "jump mark-for-masquerade".to_owned(),
                        format!("goto {service_chain}"),
                    ],
                },
            );
            for address in &lb_addresses {
                self.add_element(
                    "service-ips",
                    format!("{address} . {proto} . {}", port.port),
                    format!("goto {external_chain}"),
                );
            }
            if let Some(node_port) = port.node_port {
                self.add_element(
                    "service-nodeports",
                    format!("{proto} . {node_port}"),
                    format!("goto {external_chain}"),
                );
            }
        }
    }

    fn add_host_port(&mut self, host_port: &HostPort) {
        let proto = host_port.protocol.as_nft();
        let host = host_port
            .host_ip
            .map_or_else(|| "any".to_owned(), |ip| ip.to_string());
        let chain = object_name(
            "hostport",
            &format!("{host}/{proto}/{}", host_port.host_port),
        );
        self.chains.insert(
            chain.clone(),
            Chain {
                hook: None,
                rules: vec![format!(
                    "meta l4proto {proto} dnat to {}:{}",
                    host_port.pod_ip, host_port.container_port
                )],
            },
        );
        match host_port.host_ip {
            Some(ip) => self.add_element(
                "hostports-ip",
                format!("{ip} . {proto} . {}", host_port.host_port),
                format!("goto {chain}"),
            ),
            None => self.add_element(
                "hostports",
                format!("{proto} . {}", host_port.host_port),
                format!("goto {chain}"),
            ),
        }
    }

    /// The transaction that makes a table holding `existing` equal to `self`: the table is
    /// kept (never deleted, so nothing is ever unfiltered), its rules and map elements
    /// are flushed, objects that are not wanted any more are deleted, and all is added.
    pub fn full_script(&self, table: &str, existing: &Existing) -> String {
        let mut script = Script::new(table);
        script.line(format_args!("add table ip {table}"));
        script.line(format_args!("flush table ip {table}"));
        for map in &existing.maps {
            script.object("flush map", map);
        }
        for map in existing
            .maps
            .iter()
            .filter(|map| !self.maps.contains_key(*map))
        {
            script.object("delete map", map);
        }
        // Sets are recreated: their contents were affinities of the old rules anyway, and
        // a set's definition (its timeout) cannot be changed by adding it again.
        for set in &existing.sets {
            script.object("delete set", set);
        }
        for chain in existing
            .chains
            .iter()
            .filter(|chain| !self.chains.contains_key(*chain))
        {
            script.object("delete chain", chain);
        }
        for (name, chain) in &self.chains {
            script.add_chain(name, chain);
        }
        for (name, definition) in &self.sets {
            script.add_set(name, definition);
        }
        for (name, map) in &self.maps {
            script.add_map(name, map);
        }
        for (name, chain) in &self.chains {
            script.add_rules(name, chain);
        }
        for (name, map) in &self.maps {
            script.add_elements(name, map.elements.iter());
        }
        script.text
    }

    /// The transaction that turns the table from `previous` (what the last successful sync
    /// applied) into `self`, touching only what changed; empty if nothing did.
    pub fn diff_script(&self, previous: &Self, table: &str) -> String {
        self.diff(previous, table).0
    }

    fn diff(&self, previous: &Self, table: &str) -> (String, DiffCounts) {
        let mut counts = DiffCounts::default();
        let mut script = Script::new(table);

        let added_sets: Vec<_> = self
            .sets
            .iter()
            .filter(|(name, _)| !previous.sets.contains_key(*name))
            .collect();
        let changed_sets: Vec<_> = self
            .sets
            .iter()
            .filter(|(name, definition)| {
                previous
                    .sets
                    .get(*name)
                    .is_some_and(|old| old != *definition)
            })
            .collect();
        let removed_sets: Vec<_> = previous
            .sets
            .keys()
            .filter(|name| !self.sets.contains_key(*name))
            .collect();
        // A set cannot be deleted while a rule refers to it, so the chains that refer to a
        // recreated set are rewritten even if their own text did not change.
        let recreated_references: Vec<String> = changed_sets
            .iter()
            .map(|(name, _)| format!("@{name} "))
            .collect();
        let refers_to_recreated = |chain: &Chain| {
            !recreated_references.is_empty()
                && chain.rules.iter().any(|rule| {
                    recreated_references
                        .iter()
                        .any(|reference| rule.contains(reference.as_str()))
                })
        };

        let mut added_chains = Vec::new();
        let mut changed_chains = Vec::new();
        for (name, chain) in &self.chains {
            match previous.chains.get(name) {
                None => added_chains.push((name, chain)),
                Some(old) if old != chain || refers_to_recreated(old) => {
                    changed_chains.push((name, chain));
                }
                Some(_) => {}
            }
        }
        let removed_chains: Vec<_> = previous
            .chains
            .keys()
            .filter(|name| !self.chains.contains_key(*name))
            .collect();

        // New objects first, so rules and elements below can refer to them.
        for (name, chain) in &added_chains {
            script.add_chain(name, chain);
        }
        for (name, definition) in &added_sets {
            script.add_set(name, definition);
        }
        for (name, map) in &self.maps {
            if !previous.maps.contains_key(name) {
                script.add_map(name, map);
            }
        }
        // Then drop references to what goes away: map elements, then rules.
        let empty = BTreeMap::new();
        let mut element_additions: Vec<(&String, Vec<(&String, &String)>)> = Vec::new();
        for (name, map) in &self.maps {
            let old_elements = previous.maps.get(name).map_or(&empty, |old| &old.elements);
            let removed: Vec<&String> = old_elements
                .iter()
                .filter(|(key, verdict)| map.elements.get(*key) != Some(verdict))
                .map(|(key, _)| key)
                .collect();
            if !removed.is_empty() {
                counts.elements_deleted += removed.len();
                script.delete_elements(name, &removed);
            }
            let added: Vec<(&String, &String)> = map
                .elements
                .iter()
                .filter(|(key, verdict)| old_elements.get(*key) != Some(verdict))
                .collect();
            if !added.is_empty() {
                counts.elements_added += added.len();
                element_additions.push((name, added));
            }
        }
        for (name, _) in &changed_chains {
            script.object("flush chain", name);
        }
        for name in &removed_chains {
            script.object("flush chain", name);
        }
        for name in &removed_sets {
            script.object("delete set", name);
        }
        for (name, definition) in &changed_sets {
            script.object("delete set", name);
            script.add_set(name, definition);
        }
        for (name, chain) in added_chains.iter().chain(&changed_chains) {
            script.add_rules(name, chain);
        }
        for (name, added) in element_additions {
            script.add_elements(name, added.into_iter());
        }
        for name in &removed_chains {
            script.object("delete chain", name);
        }
        for name in previous.maps.keys() {
            if !self.maps.contains_key(name) {
                script.object("delete map", name);
            }
        }
        counts.chains_added = added_chains.len();
        counts.chains_changed = changed_chains.len();
        counts.chains_deleted = removed_chains.len();
        (script.text, counts)
    }
}

#[derive(Debug, Default)]
struct DiffCounts {
    chains_added: usize,
    chains_changed: usize,
    chains_deleted: usize,
    elements_added: usize,
    elements_deleted: usize,
}

/// `nft -f` text being written.
struct Script<'a> {
    table: &'a str,
    text: String,
}

impl<'a> Script<'a> {
    fn new(table: &'a str) -> Self {
        Self {
            table,
            text: String::new(),
        }
    }

    fn line(&mut self, line: std::fmt::Arguments<'_>) {
        let _ = self.text.write_fmt(line);
        self.text.push('\n');
    }

    fn object(&mut self, verb: &str, name: &str) {
        let table = self.table;
        self.line(format_args!("{verb} ip {table} {name}"));
    }

    fn add_chain(&mut self, name: &str, chain: &Chain) {
        let table = self.table;
        match &chain.hook {
            Some(hook) => self.line(format_args!("add chain ip {table} {name} {{ {hook} }}")),
            None => self.line(format_args!("add chain ip {table} {name}")),
        }
    }

    fn add_set(&mut self, name: &str, definition: &str) {
        let table = self.table;
        self.line(format_args!("add set ip {table} {name} {{ {definition} }}"));
    }

    fn add_map(&mut self, name: &str, map: &Map) {
        let table = self.table;
        let definition = &map.definition;
        self.line(format_args!("add map ip {table} {name} {{ {definition} }}"));
    }

    fn add_rules(&mut self, name: &str, chain: &Chain) {
        let table = self.table;
        for rule in &chain.rules {
            self.line(format_args!("add rule ip {table} {name} {rule}"));
        }
    }

    fn add_elements<'e>(
        &mut self,
        name: &str,
        elements: impl Iterator<Item = (&'e String, &'e String)>,
    ) {
        let table = self.table;
        for (key, verdict) in elements {
            self.line(format_args!(
                "add element ip {table} {name} {{ {key} : {verdict} }}"
            ));
        }
    }

    fn delete_elements(&mut self, name: &str, keys: &[&String]) {
        let table = self.table;
        for key in keys {
            self.line(format_args!("delete element ip {table} {name} {{ {key} }}"));
        }
    }
}

/// The resolved ports of one service; empty if the proxy does not serve it.
fn service_ports<'a>(
    service: &'a Service,
    namespace: &'a str,
    name: &'a str,
    subsets: &[EndpointSubset],
) -> Vec<ServicePortModel<'a>> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let Some(cluster_ip) = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
    else {
        // Headless (`None`), ExternalName (no ClusterIP) and IPv6 services.
        return Vec::new();
    };
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    let load_balancer = service_type == "LoadBalancer";
    let node_ports_wanted = load_balancer || service_type == "NodePort";
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|config| config.client_ip.as_ref())
            .and_then(|client_ip| client_ip.timeout_seconds)
            .filter(|seconds| *seconds > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECONDS)
    });
    spec.ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|service_port| {
            let protocol = Protocol::from_kubernetes(service_port.protocol.as_deref())?;
            let port = u16::try_from(service_port.port)
                .ok()
                .filter(|port| *port > 0)?;
            let port_name = match service_port.name.as_deref() {
                Some(port_name) if !port_name.is_empty() => port_name.to_owned(),
                _ => format!("p{port}"),
            };
            let node_port = node_ports_wanted
                .then(|| {
                    service_port
                        .node_port
                        .and_then(|port| u16::try_from(port).ok())
                })
                .flatten()
                .filter(|port| *port > 0);
            Some(ServicePortModel {
                namespace,
                name,
                port_name,
                protocol,
                cluster_ip,
                port,
                node_port,
                load_balancer,
                affinity_timeout,
                endpoints: ready_endpoints(service_port, protocol, subsets),
            })
        })
        .collect()
}

/// The ready `ip:port`s of a service port, sorted and without duplicates. Endpoints ports
/// carry the service port's name (the endpoints controller has already resolved named
/// target ports to numbers), so they are matched by name and protocol.
fn ready_endpoints(
    service_port: &ServicePort,
    protocol: Protocol,
    subsets: &[EndpointSubset],
) -> Vec<(Ipv4Addr, u16)> {
    let wanted_name = service_port.name.as_deref().unwrap_or_default();
    let mut endpoints = BTreeSet::new();
    for subset in subsets {
        let ports = subset.ports.as_deref().unwrap_or_default();
        let Some(target_port) = ports
            .iter()
            .find(|port| {
                port.name.as_deref().unwrap_or_default() == wanted_name
                    && Protocol::from_kubernetes(port.protocol.as_deref()) == Some(protocol)
            })
            .and_then(|port| u16::try_from(port.port).ok())
            .filter(|port| *port > 0)
        else {
            continue;
        };
        for address in subset.addresses.as_deref().unwrap_or_default() {
            if let Ok(ip) = address.ip.parse::<Ipv4Addr>() {
                endpoints.insert((ip, target_port));
            }
        }
    }
    endpoints.into_iter().collect()
}

/// A stable, unique, valid nftables name: `PREFIX-HASH-BASE` as kube-proxy names them
/// (`service-ULMVA6XW-ns/name/tcp/http`); the hash keeps names unique when the readable
/// part is cut to fit.
fn object_name(prefix: &str, base: &str) -> String {
    let digest = Sha256::digest(base.as_bytes());
    let mut name = format!("{prefix}-{}-", base32_prefix(&digest));
    for character in base.chars() {
        if name.len() + character.len_utf8() > MAX_NAME_LEN {
            break;
        }
        // Kubernetes names are already within nft's identifier characters; anything else
        // is replaced rather than quoted.
        if character.is_ascii_alphanumeric() || "/-_.".contains(character) {
            name.push(character);
        } else {
            name.push('_');
        }
    }
    name
}

/// The first 8 characters of the RFC 4648 base32 encoding of the first 5 bytes.
fn base32_prefix(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut value: u64 = 0;
    for byte in bytes.iter().take(5) {
        value = (value << 8) | u64::from(*byte);
    }
    (0..8)
        .rev()
        .map(|idx| char::from(ALPHABET[((value >> (idx * 5)) & 31) as usize]))
        .collect()
}

/// An interface name as an nft string.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace(['"', '\\'], ""))
}

/// Programs the node's service rules: keeps the last synced model and sends the kernel
/// one transaction per sync.
#[derive(Debug)]
pub struct ServiceProxy {
    config: ProxyConfig,
    /// What the last successful sync applied; `None` before it or after a failure, so the
    /// next sync rewrites the whole table.
    synced: Option<Ruleset>,
}

impl ServiceProxy {
    /// A proxy that has not synced yet.
    pub fn new(config: ProxyConfig) -> Self {
        Self {
            config,
            synced: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// Makes the kernel match: the first call replaces the table's content in one
    /// transaction (without deleting the table, so conntrack-tracked connections survive
    /// an agent restart); later calls change only what changed since the last successful
    /// sync. After a failure the next call rewrites everything again.
    pub async fn sync(
        &mut self,
        services: &[Service],
        endpoints: &[Endpoints],
        host_ports: &[HostPort],
    ) -> Result<SyncReport> {
        let generate_started = Instant::now();
        let desired = Ruleset::build(&self.config, services, endpoints, host_ports);
        let mut report = SyncReport {
            service_ports: desired.service_ports,
            endpoints: desired.endpoints,
            ..SyncReport::default()
        };
        let script = match self.synced.take() {
            Some(previous) => {
                let (script, counts) = desired.diff(&previous, &self.config.table);
                report.chains_added = counts.chains_added;
                report.chains_changed = counts.chains_changed;
                report.chains_deleted = counts.chains_deleted;
                report.elements_added = counts.elements_added;
                report.elements_deleted = counts.elements_deleted;
                script
            }
            None => {
                let existing = list_existing(&self.config).await?;
                report.full = true;
                report.chains_added = desired.chains.len();
                report.chains_deleted = existing
                    .chains
                    .iter()
                    .filter(|chain| !desired.chains.contains_key(*chain))
                    .count();
                report.elements_added = desired.maps.values().map(|map| map.elements.len()).sum();
                desired.full_script(&self.config.table, &existing)
            }
        };
        report.generate = generate_started.elapsed();
        report.script_lines = script.lines().count();
        if !script.is_empty() {
            let apply_started = Instant::now();
            run_nft(&self.config.nft, &["-f", "-"], Some(&script)).await?;
            report.apply = apply_started.elapsed();
        }
        self.synced = Some(desired);
        Ok(report)
    }

    /// Deletes the proxy's table (agent reset); a missing table is not an error.
    pub async fn remove(config: &ProxyConfig) -> Result<()> {
        let script = format!(
            "add table ip {table}\ndelete table ip {table}\n",
            table = config.table
        );
        run_nft(&config.nft, &["-f", "-"], Some(&script)).await
    }
}

/// The names of what the table holds now (empty if there is no table).
async fn list_existing(config: &ProxyConfig) -> Result<Existing> {
    let output = nft_output(
        &config.nft,
        &["-j", "list", "table", "ip", &config.table],
        None,
    )
    .await?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("No such file or directory") {
            return Ok(Existing::default());
        }
        return Err(NetworkError::Nft(format!(
            "listing table {}: {}",
            config.table,
            stderr.trim()
        )));
    }
    parse_existing(&output.stdout)
}

/// The chains, sets and maps named in `nft -j list table` output.
fn parse_existing(json: &[u8]) -> Result<Existing> {
    let value: serde_json::Value = serde_json::from_slice(json)
        .map_err(|error| NetworkError::Nft(format!("reading nft -j output: {error}")))?;
    let mut existing = Existing::default();
    let objects = value
        .get("nftables")
        .and_then(serde_json::Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for object in objects {
        let Some(object) = object.as_object() else {
            continue;
        };
        for (kind, body) in object {
            let Some(name) = body.get("name").and_then(serde_json::Value::as_str) else {
                continue;
            };
            match kind.as_str() {
                "chain" => {
                    existing.chains.insert(name.to_owned());
                }
                "set" => {
                    existing.sets.insert(name.to_owned());
                }
                "map" => {
                    existing.maps.insert(name.to_owned());
                }
                _ => {}
            }
        }
    }
    Ok(existing)
}

async fn nft_output(
    command: &[String],
    args: &[&str],
    stdin: Option<&str>,
) -> Result<std::process::Output> {
    let (program, prefix) = command
        .split_first()
        .ok_or_else(|| NetworkError::Config("empty nft command".to_owned()))?;
    let mut child = tokio::process::Command::new(program)
        .args(prefix)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| NetworkError::io(format!("running {program}"), error))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|error| NetworkError::io("writing the nft transaction", error))?;
        drop(pipe);
    }
    child
        .wait_with_output()
        .await
        .map_err(|error| NetworkError::io(format!("waiting for {program}"), error))
}

async fn run_nft(command: &[String], args: &[&str], stdin: Option<&str>) -> Result<()> {
    let output = nft_output(command, args, stdin).await?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut message = stderr.trim().to_owned();
    if message.len() > 4000 {
        let mut cut = 4000;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(" …");
    }
    Err(NetworkError::Nft(format!(
        "nft {} failed ({}): {message}",
        args.join(" "),
        output.status
    )))
}

/// Generates `n_services` ClusterIP services (in `10.96.0.0/12`) with `n_endpoints` ready
/// endpoints each (in `10.244.0.0/16`), for benchmarking rule programming. Service `i` is
/// `bench/svc-i`, port 80 → 8080/TCP.
pub fn benchmark_objects(n_services: usize, n_endpoints: usize) -> (Vec<Service>, Vec<Endpoints>) {
    let mut services = Vec::with_capacity(n_services);
    let mut all_endpoints = Vec::with_capacity(n_services);
    let mut next_pod: u32 = 0;
    for service_idx in 0..n_services {
        let cluster_ip =
            Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 1, 0)) + service_idx as u32);
        let name = format!("svc-{service_idx}");
        let mut addresses = Vec::with_capacity(n_endpoints);
        for _ in 0..n_endpoints {
            next_pod += 1;
            let pod_ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + next_pod);
            addresses.push(pod_ip);
        }
        services.push(test_objects::service(
            "bench",
            &name,
            &cluster_ip.to_string(),
            &[(None, 80, "TCP")],
        ));
        all_endpoints.push(test_objects::endpoints(
            "bench",
            &name,
            &addresses,
            &[(None, 8080, "TCP")],
        ));
    }
    (services, all_endpoints)
}

/// Builders of Services and Endpoints for tests and benchmarks.
pub mod test_objects {
    use std::net::Ipv4Addr;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use skiff_api::types::{
        EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
    };

    /// A ClusterIP service with `(name, port, protocol)` ports.
    pub fn service(
        namespace: &str,
        name: &str,
        cluster_ip: &str,
        ports: &[(Option<&str>, i32, &str)],
    ) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(namespace.to_owned()),
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.to_owned()),
                type_: Some("ClusterIP".to_owned()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(port_name, port, protocol)| ServicePort {
                            name: port_name.map(str::to_owned),
                            port: *port,
                            protocol: Some((*protocol).to_owned()),
                            ..ServicePort::default()
                        })
                        .collect(),
                ),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    /// Endpoints with one subset: ready `addresses` on `(name, port, protocol)` ports.
    pub fn endpoints(
        namespace: &str,
        name: &str,
        addresses: &[Ipv4Addr],
        ports: &[(Option<&str>, i32, &str)],
    ) -> Endpoints {
        Endpoints {
            metadata: ObjectMeta {
                namespace: Some(namespace.to_owned()),
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            subsets: Some(vec![EndpointSubset {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|ip| EndpointAddress {
                            ip: ip.to_string(),
                            ..EndpointAddress::default()
                        })
                        .collect(),
                ),
                not_ready_addresses: None,
                ports: Some(
                    ports
                        .iter()
                        .map(|(port_name, port, protocol)| EndpointPort {
                            name: port_name.map(str::to_owned),
                            port: *port,
                            protocol: Some((*protocol).to_owned()),
                            ..EndpointPort::default()
                        })
                        .collect(),
                ),
            }]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_objects::{endpoints, service};
    use super::*;

    fn config() -> ProxyConfig {
        ProxyConfig::new(
            vec![Ipv4Addr::new(192, 168, 1, 10)],
            "10.244.0.0/16".parse().unwrap(),
            "10.244.1.0/24".parse().unwrap(),
        )
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    /// The rules of the one chain whose name starts with `prefix` and contains `part`.
    fn chain<'a>(ruleset: &'a Ruleset, prefix: &str, part: &str) -> (&'a String, &'a Chain) {
        let found: Vec<_> = ruleset
            .chains
            .iter()
            .filter(|(name, _)| name.starts_with(prefix) && name.contains(part))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one {prefix}…{part} chain in {:?}",
            ruleset.chains.keys()
        );
        found[0]
    }

    fn elements(ruleset: &Ruleset, map: &str) -> Vec<(String, String)> {
        ruleset.maps[map]
            .elements
            .iter()
            .map(|(key, verdict)| (key.clone(), verdict.clone()))
            .collect()
    }

    fn web() -> (Service, Endpoints) {
        (
            service("default", "web", "10.96.0.10", &[(None, 80, "TCP")]),
            endpoints(
                "default",
                "web",
                &[ip("10.244.1.5"), ip("10.244.2.7")],
                &[(None, 8080, "TCP")],
            ),
        )
    }

    #[test]
    fn names_are_stable_valid_and_bounded() {
        let name = object_name("service", "default/web/tcp/p80");
        assert_eq!(name, object_name("service", "default/web/tcp/p80"));
        assert!(name.starts_with("service-") && name.ends_with("-default/web/tcp/p80"));
        assert_eq!(
            name.len(),
            "service-".len() + 8 + 1 + "default/web/tcp/p80".len()
        );
        let long = object_name("endpoint", &"n".repeat(400));
        assert_eq!(long.len(), MAX_NAME_LEN);
        assert_ne!(long, object_name("endpoint", &"n".repeat(401)));
        assert_eq!(base32_prefix(&[0; 5]), "AAAAAAAA");
        assert_eq!(base32_prefix(&[0xff; 5]), "77777777");
    }

    #[test]
    fn cluster_ip_spreads_over_ready_endpoints() {
        let (service, mut endpoints) = web();
        // Not-ready addresses never receive traffic.
        endpoints.subsets.as_mut().unwrap()[0].not_ready_addresses =
            Some(vec![skiff_api::types::EndpointAddress {
                ip: "10.244.1.99".to_owned(),
                ..Default::default()
            }]);
        let ruleset = Ruleset::build(&config(), &[service], &[endpoints], &[]);
        let (service_chain, rules) = chain(&ruleset, "service-", "default/web/tcp/p80");
        let (first, _) = chain(&ruleset, "endpoint-", "__10.244.1.5/8080");
        let (second, endpoint) = chain(&ruleset, "endpoint-", "__10.244.2.7/8080");
        assert_eq!(
            rules.rules,
            vec![
                "ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade".to_owned(),
                format!("numgen random mod 2 vmap {{ 0 : goto {first}, 1 : goto {second} }}"),
            ]
        );
        assert_eq!(
            endpoint.rules,
            vec![
                "ip saddr 10.244.2.7 jump mark-for-masquerade".to_owned(),
                "meta l4proto tcp dnat to 10.244.2.7:8080".to_owned(),
            ]
        );
        assert_eq!(
            elements(&ruleset, "service-ips"),
            vec![(
                "10.96.0.10 . tcp . 80".to_owned(),
                format!("goto {service_chain}")
            )]
        );
        assert!(ruleset.maps["no-endpoint-services"].elements.is_empty());
        assert!(
            !ruleset
                .chains
                .keys()
                .any(|name| name.contains("10.244.1.99"))
        );
        assert_eq!((ruleset.service_ports, ruleset.endpoints), (1, 2));
    }

    #[test]
    fn a_service_without_endpoints_is_rejected() {
        let mut node_port = service("default", "empty", "10.96.0.11", &[(None, 53, "UDP")]);
        let spec = node_port.spec.as_mut().unwrap();
        spec.type_ = Some("NodePort".to_owned());
        spec.ports.as_mut().unwrap()[0].node_port = Some(30053);
        let ruleset = Ruleset::build(&config(), &[node_port], &[], &[]);
        assert!(
            !ruleset
                .chains
                .keys()
                .any(|name| name.contains("default/empty"))
        );
        assert!(ruleset.maps["service-ips"].elements.is_empty());
        assert_eq!(
            elements(&ruleset, "no-endpoint-services"),
            vec![(
                "10.96.0.11 . udp . 53".to_owned(),
                "goto reject-chain".to_owned()
            )]
        );
        assert_eq!(
            elements(&ruleset, "no-endpoint-nodeports"),
            vec![("udp . 30053".to_owned(), "goto reject-chain".to_owned())]
        );
        assert_eq!(
            ruleset.chains["reject-chain"].rules,
            vec!["reject".to_owned()]
        );
    }

    #[test]
    fn named_ports_use_the_endpoints_port_of_the_same_name() {
        let service = service(
            "shop",
            "api",
            "10.96.0.12",
            &[
                (Some("http"), 80, "TCP"),
                (Some("metrics"), 9090, "TCP"),
                (Some("dns"), 53, "UDP"),
            ],
        );
        let endpoints = endpoints(
            "shop",
            "api",
            &[ip("10.244.1.8")],
            &[
                (Some("metrics"), 9100, "TCP"),
                (Some("http"), 8080, "TCP"),
                (Some("dns"), 5353, "UDP"),
            ],
        );
        let ruleset = Ruleset::build(&config(), &[service], &[endpoints], &[]);
        let (_, http) = chain(&ruleset, "endpoint-", "shop/api/tcp/http__");
        assert_eq!(http.rules[1], "meta l4proto tcp dnat to 10.244.1.8:8080");
        let (_, metrics) = chain(&ruleset, "endpoint-", "shop/api/tcp/metrics__");
        assert_eq!(metrics.rules[1], "meta l4proto tcp dnat to 10.244.1.8:9100");
        let (_, dns) = chain(&ruleset, "endpoint-", "shop/api/udp/dns__");
        assert_eq!(dns.rules[1], "meta l4proto udp dnat to 10.244.1.8:5353");
        assert_eq!(ruleset.maps["service-ips"].elements.len(), 3);
    }

    #[test]
    fn client_ip_affinity_looks_up_sets_before_spreading() {
        let (mut service, endpoints) = web();
        service.spec.as_mut().unwrap().session_affinity = Some("ClientIP".to_owned());
        let ruleset = Ruleset::build(
            &config(),
            std::slice::from_ref(&service),
            std::slice::from_ref(&endpoints),
            &[],
        );
        let (endpoint_name, endpoint) = chain(&ruleset, "endpoint-", "__10.244.1.5/8080");
        let (set_name, definition) = ruleset
            .sets
            .iter()
            .find(|(name, _)| name.ends_with("__10.244.1.5/8080"))
            .unwrap();
        assert!(set_name.starts_with("affinity-"));
        assert_eq!(
            definition,
            "type ipv4_addr; flags dynamic,timeout; timeout 10800s;"
        );
        assert_eq!(
            endpoint.rules[1],
            format!("update @{set_name} {{ ip saddr }}")
        );
        let (_, service_chain) = chain(&ruleset, "service-", "default/web");
        assert_eq!(service_chain.rules.len(), 4);
        assert_eq!(
            service_chain.rules[1],
            format!("ip saddr @{set_name} goto {endpoint_name}")
        );
        assert!(service_chain.rules[3].starts_with("numgen random mod 2 vmap"));

        // A configured timeout is used; changing it recreates the sets and rewrites the
        // chains that use them.
        let spec = service.spec.as_mut().unwrap();
        spec.session_affinity_config = Some(k8s_openapi::api::core::v1::SessionAffinityConfig {
            client_ip: Some(k8s_openapi::api::core::v1::ClientIPConfig {
                timeout_seconds: Some(60),
            }),
        });
        let shorter = Ruleset::build(&config(), &[service], &[endpoints], &[]);
        assert!(
            shorter
                .sets
                .values()
                .all(|definition| definition.contains("timeout 60s;"))
        );
        let script = shorter.diff_script(&ruleset, "skiff");
        assert_eq!(
            script.matches("delete set ip skiff affinity-").count(),
            2,
            "{script}"
        );
        assert_eq!(
            script.matches("add set ip skiff affinity-").count(),
            2,
            "{script}"
        );
        assert_eq!(script.matches("flush chain").count(), 3, "{script}");
        let flush = script.find("flush chain").unwrap();
        let delete = script.find("delete set").unwrap();
        let add_rule = script.find("add rule").unwrap();
        assert!(flush < delete && delete < add_rule, "{script}");
    }

    #[test]
    fn node_ports_and_load_balancers_go_through_a_masquerading_external_chain() {
        let (mut service, endpoints) = web();
        let spec = service.spec.as_mut().unwrap();
        spec.type_ = Some("LoadBalancer".to_owned());
        spec.ports.as_mut().unwrap()[0].node_port = Some(30080);
        let mut config = config();
        config.node_ips.push(ip("192.168.2.10"));
        let ruleset = Ruleset::build(&config, &[service], &[endpoints], &[]);
        let (service_chain, _) = chain(&ruleset, "service-", "default/web");
        let (external_chain, external) = chain(&ruleset, "external-", "default/web/tcp/p80");
        assert_eq!(
            external.rules,
            vec![
                "jump mark-for-masquerade".to_owned(),
                format!("goto {service_chain}")
            ]
        );
        let to_external = format!("goto {external_chain}");
        assert_eq!(
            elements(&ruleset, "service-nodeports"),
            vec![("tcp . 30080".to_owned(), to_external.clone())]
        );
        assert_eq!(
            elements(&ruleset, "service-ips"),
            vec![
                (
                    "10.96.0.10 . tcp . 80".to_owned(),
                    format!("goto {service_chain}")
                ),
                ("192.168.1.10 . tcp . 80".to_owned(), to_external.clone()),
                ("192.168.2.10 . tcp . 80".to_owned(), to_external),
            ]
        );
        assert_eq!(
            ruleset.chains["masquerading"].rules,
            vec![
                "meta mark & 0x4000 == 0 return".to_owned(),
                "meta mark set meta mark xor 0x4000".to_owned(),
                "masquerade fully-random".to_owned(),
            ]
        );

        // A plain ClusterIP service's nodePort field is ignored.
        let (mut cluster_ip, endpoints) = web();
        cluster_ip.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(30080);
        let ruleset = Ruleset::build(&config, &[cluster_ip], &[endpoints], &[]);
        assert!(ruleset.maps["service-nodeports"].elements.is_empty());
        assert!(
            !ruleset
                .chains
                .keys()
                .any(|name| name.starts_with("external-"))
        );
    }

    #[test]
    fn node_port_type_does_not_serve_the_port_on_node_ips() {
        let (mut service, endpoints) = web();
        let spec = service.spec.as_mut().unwrap();
        spec.type_ = Some("NodePort".to_owned());
        spec.ports.as_mut().unwrap()[0].node_port = Some(30080);
        let ruleset = Ruleset::build(&config(), &[service], &[endpoints], &[]);
        assert_eq!(ruleset.maps["service-ips"].elements.len(), 1);
        assert_eq!(ruleset.maps["service-nodeports"].elements.len(), 1);
    }

    #[test]
    fn host_ports_dnat_to_the_pod() {
        let host_ports = [
            HostPort {
                protocol: Protocol::Tcp,
                host_ip: None,
                host_port: 8080,
                pod_ip: ip("10.244.1.5"),
                container_port: 80,
            },
            HostPort {
                protocol: Protocol::Udp,
                host_ip: Some(ip("192.168.1.10")),
                host_port: 5353,
                pod_ip: ip("10.244.1.6"),
                container_port: 53,
            },
        ];
        let ruleset = Ruleset::build(&config(), &[], &[], &host_ports);
        let (any_chain, any) = chain(&ruleset, "hostport-", "any/tcp/8080");
        assert_eq!(
            any.rules,
            vec!["meta l4proto tcp dnat to 10.244.1.5:80".to_owned()]
        );
        assert_eq!(
            elements(&ruleset, "hostports"),
            vec![("tcp . 8080".to_owned(), format!("goto {any_chain}"))]
        );
        let (ip_chain, _) = chain(&ruleset, "hostport-", "192.168.1.10/udp/5353");
        assert_eq!(
            elements(&ruleset, "hostports-ip"),
            vec![(
                "192.168.1.10 . udp . 5353".to_owned(),
                format!("goto {ip_chain}")
            )]
        );
    }

    #[test]
    fn hooks_dispatch_and_masquerade() {
        let ruleset = Ruleset::build(&config(), &[], &[], &[]);
        assert_eq!(
            ruleset.chains["nat-prerouting"].rules,
            vec!["jump services".to_owned()]
        );
        assert_eq!(
            ruleset.chains["nat-output"].rules,
            vec!["jump services".to_owned()]
        );
        assert_eq!(
            ruleset.chains["nat-postrouting"].rules,
            vec![
                "jump masquerading".to_owned(),
                "oifname \"skiff0\" ip saddr 10.244.1.0/24 ct status dnat masquerade".to_owned(),
                "ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade".to_owned(),
            ]
        );
        let script = ruleset.full_script("skiff", &Existing::default());
        assert!(
            script.starts_with("add table ip skiff\nflush table ip skiff\n"),
            "{script}"
        );
        assert!(script.contains(
            "add chain ip skiff nat-prerouting { type nat hook prerouting priority -100; policy accept; }\n"
        ));
        // Every chain is added before any rule refers to it.
        let last_chain = script.rfind("add chain").unwrap();
        let first_rule = script.find("add rule").unwrap();
        assert!(last_chain < first_rule);
    }

    #[test]
    fn a_full_sync_clears_what_the_table_held_before() {
        let (service, endpoints) = web();
        let ruleset = Ruleset::build(&config(), &[service], &[endpoints], &[]);
        let existing = Existing {
            chains: ["services".to_owned(), "service-OLD".to_owned()].into(),
            sets: ["affinity-OLD".to_owned()].into(),
            maps: ["service-ips".to_owned(), "old-map".to_owned()].into(),
        };
        let script = ruleset.full_script("skiff", &existing);
        for line in [
            "flush map ip skiff service-ips\n",
            "flush map ip skiff old-map\n",
            "delete map ip skiff old-map\n",
            "delete set ip skiff affinity-OLD\n",
            "delete chain ip skiff service-OLD\n",
        ] {
            assert!(script.contains(line), "{line} in {script}");
        }
        assert!(!script.contains("delete chain ip skiff services\n"));
        assert!(!script.contains("delete map ip skiff service-ips\n"));
    }

    #[test]
    fn an_incremental_sync_touches_only_the_changed_service() {
        let config = config();
        let (web, web_endpoints) = web();
        let api = service("default", "api", "10.96.0.20", &[(None, 443, "TCP")]);
        let api_endpoints = |ips: &[&str]| {
            let ips: Vec<Ipv4Addr> = ips.iter().map(|text| ip(text)).collect();
            endpoints("default", "api", &ips, &[(None, 8443, "TCP")])
        };
        let before = Ruleset::build(
            &config,
            &[web.clone(), api.clone()],
            &[
                web_endpoints.clone(),
                api_endpoints(&["10.244.1.20", "10.244.1.21", "10.244.1.22"]),
            ],
            &[],
        );
        let after = Ruleset::build(
            &config,
            &[web.clone(), api.clone()],
            &[web_endpoints.clone(), api_endpoints(&["10.244.1.21"])],
            &[],
        );
        let (script, counts) = after.diff(&before, "skiff");
        let (api_chain, _) = chain(&after, "service-", "default/api");
        // Chains are written in name order.
        let mut removed = [
            chain(&before, "endpoint-", "__10.244.1.20/").0,
            chain(&before, "endpoint-", "__10.244.1.22/").0,
        ];
        removed.sort();
        let [removed_a, removed_b] = removed;
        let kept = chain(&after, "endpoint-", "__10.244.1.21/").0;
        let expected = format!(
            "flush chain ip skiff {api_chain}\n\
             flush chain ip skiff {removed_a}\n\
             flush chain ip skiff {removed_b}\n\
             add rule ip skiff {api_chain} ip daddr 10.96.0.20 tcp dport 443 ip saddr != 10.244.0.0/16 jump mark-for-masquerade\n\
             add rule ip skiff {api_chain} numgen random mod 1 vmap {{ 0 : goto {kept} }}\n\
             delete chain ip skiff {removed_a}\n\
             delete chain ip skiff {removed_b}\n"
        );
        assert_eq!(script, expected);
        assert!(!script.contains("default/web"));
        assert_eq!(
            (
                counts.chains_changed,
                counts.chains_deleted,
                counts.chains_added
            ),
            (1, 2, 0)
        );

        assert_eq!(after.diff_script(&after, "skiff"), "");

        // Losing all endpoints moves the ClusterIP from service-ips to the reject map
        // before the chains its element pointed to are deleted.
        let empty = Ruleset::build(
            &config,
            &[web.clone(), api.clone()],
            &[web_endpoints.clone(), api_endpoints(&[])],
            &[],
        );
        let script = empty.diff_script(&after, "skiff");
        let expected = format!(
            "delete element ip skiff service-ips {{ 10.96.0.20 . tcp . 443 }}\n\
             flush chain ip skiff {kept}\n\
             flush chain ip skiff {api_chain}\n\
             add element ip skiff no-endpoint-services {{ 10.96.0.20 . tcp . 443 : goto reject-chain }}\n\
             delete chain ip skiff {kept}\n\
             delete chain ip skiff {api_chain}\n"
        );
        assert_eq!(script, expected);
    }

    #[test]
    fn deleting_a_service_removes_its_chains_and_elements() {
        let config = config();
        let (web, web_endpoints) = web();
        let before = Ruleset::build(&config, &[web], &[web_endpoints], &[]);
        let after = Ruleset::build(&config, &[], &[], &[]);
        let script = after.diff_script(&before, "skiff");
        let (service_chain, _) = chain(&before, "service-", "default/web");
        assert!(
            script.starts_with("delete element ip skiff service-ips { 10.96.0.10 . tcp . 80 }\n")
        );
        assert_eq!(script.matches("delete chain").count(), 3, "{script}");
        assert!(script.contains(&format!("delete chain ip skiff {service_chain}\n")));
        assert_eq!(after, Ruleset::base(&config));
    }

    #[test]
    fn services_the_proxy_does_not_serve_are_left_out() {
        let mut headless = service("default", "db", "None", &[(None, 5432, "TCP")]);
        let mut external = service("default", "ext", "", &[(None, 80, "TCP")]);
        external.spec.as_mut().unwrap().type_ = Some("ExternalName".to_owned());
        let ipv6 = service("default", "six", "fd00::10", &[(None, 80, "TCP")]);
        headless.spec.as_mut().unwrap().cluster_ip = Some("None".to_owned());
        let ruleset = Ruleset::build(&config(), &[headless, external, ipv6], &[], &[]);
        assert_eq!(ruleset, Ruleset::base(&config()));
    }

    #[test]
    fn existing_objects_are_read_from_nft_json() {
        let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "ip", "name": "skiff", "handle": 1}},
            {"map": {"family": "ip", "name": "service-ips", "table": "skiff", "type": ["ipv4_addr"], "map": "verdict"}},
            {"set": {"family": "ip", "name": "affinity-X", "table": "skiff", "type": "ipv4_addr"}},
            {"chain": {"family": "ip", "table": "skiff", "name": "services", "handle": 2}},
            {"rule": {"family": "ip", "table": "skiff", "chain": "services", "handle": 3, "expr": []}}]}"#;
        let existing = parse_existing(json).unwrap();
        assert_eq!(
            existing,
            Existing {
                chains: ["services".to_owned()].into(),
                sets: ["affinity-X".to_owned()].into(),
                maps: ["service-ips".to_owned()].into(),
            }
        );
    }

    #[test]
    fn benchmark_objects_are_distinct() {
        let (services, endpoints) = benchmark_objects(3, 4);
        let ruleset = Ruleset::build(&config(), &services, &endpoints, &[]);
        assert_eq!((ruleset.service_ports, ruleset.endpoints), (3, 12));
        assert_eq!(ruleset.maps["service-ips"].elements.len(), 3);
    }
}
