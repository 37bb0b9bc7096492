//! Keeps the node's network in step with the cluster: mirrors Services, Endpoints and
//! Nodes from the control plane (`WatchObjects`) and, after each burst of changes,
//! re-syncs the service proxy (nftables), the cluster DNS records and the routes to
//! other nodes' pods. Everything is level-triggered: a failed sync is retried with
//! the then-current state.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::Metadata;
use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::dns::{self, ClusterDns};
use super::proxy::{ProxyConfig, ServiceProxy};
use super::{NetworkError, NodeNetwork};
use crate::control::{ControlPlane, WatchChange};

/// How long changes are gathered before one sync (a rollout changes many objects).
const BATCH: Duration = Duration::from_millis(20);

/// How long to wait before retrying a failed sync.
const RETRY: Duration = Duration::from_secs(1);

/// The local copy of one kind, keyed `namespace/name`.
struct Mirror<T> {
    objects: BTreeMap<String, T>,
    /// Keys seen since a full list started (what is not seen by `Synced` is gone).
    listing: Option<BTreeSet<String>>,
    /// Changed since the last sync.
    dirty: bool,
    /// A full list has been received.
    synced: bool,
}

impl<T: DeserializeOwned + Metadata<Ty = ObjectMeta>> Mirror<T> {
    fn new() -> Self {
        Self {
            objects: BTreeMap::new(),
            listing: None,
            dirty: false,
            synced: false,
        }
    }

    fn apply(&mut self, change: WatchChange) {
        let key = |object: &T| {
            let meta = object.metadata();
            format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default()
            )
        };
        match change {
            WatchChange::Listing => self.listing = Some(BTreeSet::new()),
            WatchChange::Applied(json) => {
                if let Ok(object) = serde_json::from_slice::<T>(&json) {
                    let key = key(&object);
                    if let Some(listing) = &mut self.listing {
                        listing.insert(key.clone());
                    }
                    self.objects.insert(key, object);
                    self.dirty = true;
                }
            }
            WatchChange::Deleted(json) => {
                if let Ok(object) = serde_json::from_slice::<T>(&json) {
                    self.dirty |= self.objects.remove(&key(&object)).is_some();
                }
            }
            WatchChange::Synced => {
                if let Some(listing) = self.listing.take() {
                    self.objects.retain(|key, _| listing.contains(key));
                }
                // A completed list always counts as a change (the first sync waits for it).
                self.dirty = true;
                self.synced = true;
            }
        }
    }
}

/// Everything the sync reads.
struct Cluster {
    services: Mirror<Service>,
    endpoints: Mirror<Endpoints>,
    nodes: Mirror<Node>,
}

/// Runs until `shutdown`: serves the cluster DNS on the bridge address and keeps the
/// service proxy, DNS records and routes in step with the cluster.
pub async fn run(network: Arc<NodeNetwork>, control: ControlPlane, shutdown: CancellationToken) {
    let cluster = Arc::new(Mutex::new(Cluster {
        services: Mirror::new(),
        endpoints: Mirror::new(),
        nodes: Mirror::new(),
    }));
    let wake = Arc::new(Notify::new());
    for resource in ["services", "endpoints", "nodes"] {
        let control = control.clone();
        let cluster = cluster.clone();
        let wake = wake.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            control
                .watch_objects(resource, shutdown, |change| {
                    let mut cluster = cluster.lock().unwrap_or_else(|e| e.into_inner());
                    match resource {
                        "services" => cluster.services.apply(change),
                        "endpoints" => cluster.endpoints.apply(change),
                        _ => cluster.nodes.apply(change),
                    }
                    wake.notify_one();
                })
                .await;
        });
    }

    let settings = network.settings().clone();
    let upstreams =
        dns::host_upstreams(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    let dns = ClusterDns::new(&settings.cluster_domain, upstreams);
    match bind_dns(network.gateway()) {
        Ok((udp, tcp)) => {
            let dns = dns.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                if let Err(error) = dns.serve(udp, tcp, shutdown).await {
                    tracing::error!(%error, "the cluster DNS server stopped");
                }
            });
        }
        Err(error) => tracing::error!(%error, "cannot serve the cluster DNS"),
    }
    let mut config = ProxyConfig::new(
        vec![settings.node_ip],
        settings.cluster_cidr,
        settings.pod_cidr,
    );
    config.table.clone_from(&settings.bridge);
    config.bridge.clone_from(&settings.bridge);
    let mut proxy = ServiceProxy::new(config);
    let mut host_ports = network.subscribe();
    let mut services_dirty = true;
    let mut nodes_dirty = true;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
            changed = host_ports.changed() => {
                if changed.is_err() { return; }
                services_dirty = true;
            }
        }
        tokio::time::sleep(BATCH).await;
        let (services, endpoints, nodes) = {
            let mut cluster = cluster.lock().unwrap_or_else(|e| e.into_inner());
            services_dirty |= std::mem::take(&mut cluster.services.dirty);
            services_dirty |= std::mem::take(&mut cluster.endpoints.dirty);
            nodes_dirty |= std::mem::take(&mut cluster.nodes.dirty);
            // Sync only once every kind has been listed completely.
            if !(cluster.services.synced && cluster.endpoints.synced && cluster.nodes.synced) {
                continue;
            }
            (
                cluster
                    .services
                    .objects
                    .values()
                    .cloned()
                    .collect::<Vec<_>>(),
                cluster
                    .endpoints
                    .objects
                    .values()
                    .cloned()
                    .collect::<Vec<_>>(),
                node_routes(cluster.nodes.objects.values()),
            )
        };
        if services_dirty {
            dns.update(&services, &endpoints);
            match proxy
                .sync(&services, &endpoints, &network.host_ports())
                .await
            {
                Ok(report) => {
                    services_dirty = false;
                    tracing::debug!(?report, "service rules synced");
                }
                Err(error) => tracing::warn!(%error, "syncing the service rules failed; retrying"),
            }
        }
        if nodes_dirty {
            match network.sync_routes(&nodes).await {
                Ok(()) => nodes_dirty = false,
                Err(error) => {
                    tracing::warn!(%error, "syncing the routes to other nodes failed; retrying")
                }
            }
        }
        if services_dirty || nodes_dirty {
            let wake = wake.clone();
            tokio::spawn(async move {
                tokio::time::sleep(RETRY).await;
                wake.notify_one();
            });
        }
    }
}

/// Every node's (podCIDR, InternalIP), by name.
fn node_routes<'a>(nodes: impl Iterator<Item = &'a Node>) -> BTreeMap<String, (Ipv4Net, Ipv4Addr)> {
    nodes
        .filter_map(|node| {
            let cidr = node.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()?;
            let ip = node
                .status
                .as_ref()?
                .addresses
                .iter()
                .flatten()
                .find(|a| a.type_ == "InternalIP")?
                .address
                .parse()
                .ok()?;
            Some((node.metadata.name.clone()?, (cidr, ip)))
        })
        .collect()
}

/// The DNS server's sockets on the bridge address, port 53.
fn bind_dns(
    address: Ipv4Addr,
) -> Result<(std::net::UdpSocket, std::net::TcpListener), NetworkError> {
    let address = SocketAddr::from((address, 53));
    let udp = std::net::UdpSocket::bind(address)
        .map_err(|e| NetworkError::io(format!("binding the DNS server to udp {address}"), e))?;
    let tcp = std::net::TcpListener::bind(address)
        .map_err(|e| NetworkError::io(format!("binding the DNS server to tcp {address}"), e))?;
    for result in [udp.set_nonblocking(true), tcp.set_nonblocking(true)] {
        result.map_err(|e| NetworkError::io("configuring the DNS sockets", e))?;
    }
    Ok((udp, tcp))
}
