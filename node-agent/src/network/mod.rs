//! The node's share of the cluster network (DESIGN.md §7): the pod bridge, one veth
//! pair and IP per pod sandbox (`ipam`, `bridge`), routes to other nodes' podCIDRs
//! (`routes`), the service proxy that programs nftables from Services and Endpoints
//! (`proxy`), and the node-local cluster DNS (`dns`).
//!
//! Everything here talks to the kernel through netlink (rtnetlink) and nftables (one
//! `nft -f -` transaction per sync, as kube-proxy's nftables mode does); nothing shells
//! out to `ip`.

pub mod dns;
pub mod proxy;
pub mod sync;

/// A failure to set up or update the node's network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A setting the network cannot work with (a bad CIDR, an exhausted range).
    #[error("invalid network configuration: {0}")]
    Config(String),
    /// A netlink request failed.
    #[error("netlink: {what}: {message}")]
    Netlink {
        /// What was being done.
        what: String,
        /// The kernel's answer.
        message: String,
    },
    /// `nft` refused a ruleset or could not run.
    #[error("nftables: {0}")]
    Nft(String),
    /// The DNS server failed.
    #[error("dns: {0}")]
    Dns(String),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl NetworkError {
    /// An I/O failure while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

pub mod ipam;
pub mod link;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Mutex;

use ipnet::Ipv4Net;

use self::ipam::Ipam;
use self::link::Route;

/// The default name of the node's pod bridge (also the nftables table's name).
pub const BRIDGE: &str = "skiff0";

/// What the node's network is built from: the control plane's answer to `Register`
/// plus the node's own address.
#[derive(Clone, Debug)]
pub struct NetworkSettings {
    /// This node's share of the pod network (the Node's `spec.podCIDR`).
    pub pod_cidr: Ipv4Net,
    /// The whole pod network.
    pub cluster_cidr: Ipv4Net,
    /// Where ClusterIPs come from.
    pub service_cidr: Ipv4Net,
    /// The cluster's DNS domain (`cluster.local`).
    pub cluster_domain: String,
    /// The node's InternalIP.
    pub node_ip: Ipv4Addr,
    /// The pod bridge's name (and the nftables table's).
    pub bridge: String,
}

/// One node's pod network: the bridge, the pods' addresses and veth pairs, and the
/// routes to the other nodes' pods.
pub struct NodeNetwork {
    settings: NetworkSettings,
    ipam: Ipam,
    handle: rtnetlink::Handle,
    bridge_index: u32,
    /// hostPort mappings of the local pods, by pod uid.
    host_ports: Mutex<BTreeMap<String, Vec<proxy::HostPort>>>,
    /// Bumped whenever `host_ports` changes (the service proxy re-syncs).
    changes: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for NodeNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeNetwork")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl NodeNetwork {
    /// Sets up the node's side: the bridge with the podCIDR's gateway address, up,
    /// forwarding on it; pod addresses recorded under `data_dir/network/ipam`.
    pub async fn start(settings: NetworkSettings, data_dir: &Path) -> Result<Self, NetworkError> {
        if !settings.cluster_cidr.contains(&settings.pod_cidr) {
            return Err(NetworkError::Config(format!(
                "podCIDR {} is not inside the cluster CIDR {}",
                settings.pod_cidr, settings.cluster_cidr
            )));
        }
        let ipam = Ipam::open(&data_dir.join("network").join("ipam"), settings.pod_cidr)?;
        let handle = link::connect()?;
        let gateway = Ipv4Net::new(ipam.gateway(), settings.pod_cidr.prefix_len())
            .map_err(|e| NetworkError::Config(e.to_string()))?;
        let bridge_index = link::ensure_bridge(&handle, &settings.bridge, gateway).await?;
        write_sysctl(
            &format!("net/ipv4/conf/{}/forwarding", settings.bridge),
            "1",
        )?;
        if std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "0") {
            tracing::warn!(
                "net.ipv4.ip_forward is 0: pods can reach each other and services on this node, \
                 but not pods on other nodes or the outside; set it to 1 as Kubernetes requires"
            );
        }
        let (changes, _) = tokio::sync::watch::channel(0);
        Ok(Self {
            settings,
            ipam,
            handle,
            bridge_index,
            host_ports: Mutex::new(BTreeMap::new()),
            changes,
        })
    }

    /// The settings the network was built from.
    pub fn settings(&self) -> &NetworkSettings {
        &self.settings
    }

    /// The bridge's address: pods' default gateway and their DNS server.
    pub fn gateway(&self) -> Ipv4Addr {
        self.ipam.gateway()
    }

    /// Gives the pod `uid` (whose network namespace is at `netns`) its address: a
    /// veth pair to the bridge, `eth0` with an address from the podCIDR and a default
    /// route. Idempotent: the pod keeps its address; a half-made attachment is redone.
    pub async fn attach(&self, uid: &str, netns: &Path) -> Result<Ipv4Addr, NetworkError> {
        let ip = self.ipam.allocate(uid)?;
        let address = Ipv4Net::new(ip, self.settings.pod_cidr.prefix_len())
            .map_err(|e| NetworkError::Config(e.to_string()))?;
        let attached = link::attach_veth(
            &self.handle,
            &host_veth_name(uid),
            self.bridge_index,
            netns,
            address,
            self.gateway(),
        )
        .await;
        if let Err(error) = attached {
            let _ = link::delete_link(&self.handle, &host_veth_name(uid)).await;
            return Err(error);
        }
        Ok(ip)
    }

    /// Whether pod `uid`'s veth pair exists (its address alone may be a leftover of
    /// an attachment that did not finish).
    pub fn is_attached(&self, uid: &str) -> bool {
        Path::new("/proc/sys/net/ipv4/conf")
            .join(host_veth_name(uid))
            .exists()
    }

    /// The address of pod `uid`, if it has one (also after an agent restart).
    pub fn pod_ip(&self, uid: &str) -> Option<Ipv4Addr> {
        self.ipam.lookup(uid)
    }

    /// Removes the pod's veth pair and frees its address.
    pub async fn detach(&self, uid: &str) -> Result<(), NetworkError> {
        self.set_host_ports(uid, Vec::new());
        link::delete_link(&self.handle, &host_veth_name(uid)).await?;
        self.ipam.release(uid)
    }

    /// Records the hostPort mappings of pod `uid` (empty to remove them).
    pub fn set_host_ports(&self, uid: &str, ports: Vec<proxy::HostPort>) {
        let mut all = self.host_ports.lock().unwrap_or_else(|e| e.into_inner());
        let changed = if ports.is_empty() {
            all.remove(uid).is_some()
        } else {
            all.insert(uid.to_owned(), ports.clone()).as_ref() != Some(&ports)
        };
        drop(all);
        if changed {
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// Every local pod's hostPort mapping.
    pub fn host_ports(&self) -> Vec<proxy::HostPort> {
        let all = self.host_ports.lock().unwrap_or_else(|e| e.into_inner());
        all.values().flatten().cloned().collect()
    }

    /// Notified when the hostPort mappings change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The `/etc/resolv.conf` of a pod in `namespace` (kubelet's `ClusterFirst`).
    pub fn resolv_conf(&self, namespace: &str) -> String {
        dns::resolv_conf(
            self.gateway().into(),
            namespace,
            &self.settings.cluster_domain,
        )
    }

    /// Makes the routes to other nodes' pods match `nodes` (name → (podCIDR,
    /// InternalIP)): host-gw, i.e. `podCIDR via nodeIP`, for every node on one of this
    /// node's directly attached networks. Nodes elsewhere are reported (VXLAN is not
    /// built yet). Removes routes of nodes that are gone.
    pub async fn sync_routes(
        &self,
        nodes: &BTreeMap<String, (Ipv4Net, Ipv4Addr)>,
    ) -> Result<(), NetworkError> {
        let local = link::local_networks(&self.handle).await?;
        let mut wanted = BTreeSet::new();
        for (name, (pod_cidr, ip)) in nodes {
            if *ip == self.settings.node_ip || *pod_cidr == self.settings.pod_cidr {
                continue;
            }
            if local.iter().any(|net| net.contains(ip)) {
                wanted.insert(Route {
                    destination: *pod_cidr,
                    gateway: *ip,
                });
            } else {
                tracing::warn!(node = %name, %ip, "node is not on a directly attached network; its pods are unreachable from here (no overlay)");
            }
        }
        let present: BTreeSet<Route> = link::own_routes(&self.handle).await?.into_iter().collect();
        for route in present.difference(&wanted) {
            link::delete_route(&self.handle, route).await?;
        }
        for route in wanted.difference(&present) {
            link::add_route(&self.handle, route).await?;
        }
        Ok(())
    }
}

/// The host end of pod `uid`'s veth pair: `veth` + 11 hex digits of a hash of the
/// uid (interface names are at most 15 bytes).
pub fn host_veth_name(uid: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(uid.as_bytes());
    format!("veth{}", &hex::encode(digest)[..11])
}

/// Writes `value` to `/proc/sys/<key>` (of this network namespace).
fn write_sysctl(key: &str, value: &str) -> Result<(), NetworkError> {
    let path = Path::new("/proc/sys").join(key);
    std::fs::write(&path, value)
        .map_err(|e| NetworkError::io(format!("writing {}", path.display()), e))
}

/// Removes everything the network put on this node: the bridge, Skiff's routes, the
/// service proxy's nftables table and the address records under `data_dir`. Used by
/// `skiff-node-agent reset` after the pods' sandboxes are gone (their veth pairs die
/// with their namespaces).
pub async fn reset(data_dir: &Path, bridge: &str) -> Result<(), NetworkError> {
    let handle = link::connect()?;
    for route in link::own_routes(&handle).await? {
        link::delete_route(&handle, &route).await?;
    }
    link::delete_link(&handle, bridge).await?;
    let mut proxy = proxy::ProxyConfig::new(Vec::new(), Ipv4Net::default(), Ipv4Net::default());
    proxy.table = bridge.to_owned();
    proxy::ServiceProxy::remove(&proxy).await?;
    match std::fs::remove_dir_all(data_dir.join("network")) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(NetworkError::io("removing the network records", error))
        }
        _ => Ok(()),
    }
}
