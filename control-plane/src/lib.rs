//! Skiff's control plane.
//!
//! - [`store`]: the Raft-replicated key-value store, the source of truth.
//! - [`apiserver`]: the Kubernetes-shaped REST API over the store (in progress).
//! - [`controllers`]: informers, work queues, the reconcile loops, and the Lease election
//!   that runs them (and the scheduler) on one member.
//! - [`scheduler`]: places pending pods on nodes (on the elected member).
//! - [`nodes`]: the gRPC `Node` service node agents call (served beside the API).
//! - [`network`]: [`NetworkSettings`], the cluster's pod, service and node port ranges.
//! - [`admin`]: operator commands against a running member (`member list|remove`).
//! - [`Config`] and [`run`]: what `skiff-control-plane` starts.

pub mod admin;
pub mod apiserver;
pub mod controllers;
pub mod network;
pub mod nodes;
pub mod scheduler;
pub mod store;
#[cfg(test)]
pub(crate) mod testing;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use skiff_api::Object;
use skiff_api::types::{Namespace, Service};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use network::NetworkSettings;

/// What the `skiff-control-plane` process runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The store member: data directory, peer address, cluster to join.
    pub store: store::Config,
    /// Address of the Kubernetes API (plain HTTP: loopback only until TLS lands).
    pub listen_api: SocketAddr,
    /// The controllers' knobs.
    pub controllers: controllers::Settings,
    /// The pod, service and node port ranges and the cluster domain (shared by the
    /// API's allocators and what agents are told at registration).
    pub network: NetworkSettings,
}

/// Namespaces every cluster has, created at start as Kubernetes does.
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Runs the control plane until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config
        .network
        .validate()
        .context("invalid network settings")?;
    let store = store::Store::open(config.store).await?;
    println!(
        "skiff-control-plane: member {} serving peers on {}",
        store.node_id(),
        store.address()
    );
    let listener = TcpListener::bind(config.listen_api)
        .await
        .with_context(|| format!("failed to listen for the API on {}", config.listen_api))?;
    let api_address = listener.local_addr()?;
    let registry = apiserver::Registry::new(store.clone()).with_network(config.network.clone());
    // The namespaces and the `kubernetes` Service need a leader, which a restarting
    // member may wait for: create them in the background and serve meanwhile.
    let tasks = TaskTracker::new();
    tasks.spawn({
        let registry = registry.clone();
        let shutdown = shutdown.clone();
        async move {
            ensure_system_namespaces(registry.clone(), shutdown.clone()).await;
            ensure_kubernetes_service(registry, shutdown, api_address.port()).await;
        }
    });
    let settings = config.controllers.clone();
    let identity = format!("{}_{}", hostname(), store.node_id());
    tasks.spawn(controllers::run_while_leader(
        registry.clone(),
        shutdown.clone(),
        identity,
        settings.leader_election,
        move |registry, cancel| controllers::start_all(registry, cancel, &settings),
    ));
    println!("skiff-control-plane: serving the API on http://{api_address}");
    // Heartbeats come four times per grace period, as kubelet's 10 s to the
    // controller manager's 40 s.
    let grace = config.controllers.node_lifecycle.grace.as_secs();
    let heartbeat = u32::try_from((grace / 4).clamp(1, 10)).unwrap_or(10);
    apiserver::serve_with(registry, listener, shutdown, heartbeat).await;
    tasks.close();
    tasks.wait().await;
    store.shutdown().await;
    Ok(())
}

/// The machine's host name, the first part of this member's Lease holder identity (as
/// kube-controller-manager's `<hostname>_<uuid>`).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Creates the system namespaces that are missing, retrying while the store has no
/// leader, until done or `shutdown` fires.
async fn ensure_system_namespaces(registry: apiserver::Registry, shutdown: CancellationToken) {
    for name in SYSTEM_NAMESPACES {
        let namespace = Namespace {
            metadata: skiff_api::meta::ObjectMeta {
                name: Some((*name).to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        let what = format!("namespace {name}");
        if !ensure(&registry, &shutdown, Object::from(namespace), None, &what).await {
            return;
        }
    }
}

/// Creates the `default/kubernetes` Service as kube-apiserver does: the first IP of
/// the service range, port 443 (`https`) to the API's port, no selector (its
/// endpoints are the API servers', which Skiff does not publish yet).
async fn ensure_kubernetes_service(
    registry: apiserver::Registry,
    shutdown: CancellationToken,
    api_port: u16,
) {
    let cluster_ip = registry.network().kubernetes_service_ip().to_string();
    let service: Service = match serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "kubernetes",
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api_port}],
            "sessionAffinity": "None",
        },
    })) {
        Ok(service) => service,
        Err(error) => {
            tracing::error!(%error, "the kubernetes Service does not decode");
            return;
        }
    };
    let what = "service default/kubernetes";
    ensure(
        &registry,
        &shutdown,
        Object::from(service),
        Some("default"),
        what,
    )
    .await;
}

/// Creates `object` unless it exists, retrying while the store has no leader; false
/// when `shutdown` fired first.
async fn ensure(
    registry: &apiserver::Registry,
    shutdown: &CancellationToken,
    object: Object,
    namespace: Option<&str>,
    what: &str,
) -> bool {
    loop {
        let writer = apiserver::Writer::main("skiff-control-plane");
        let created = tokio::select! {
            () = shutdown.cancelled() => return false,
            created = registry.create(object.clone(), namespace, writer) => created,
        };
        match created {
            Ok(_) => return true,
            Err(error) if error.code == 409 => return true,
            Err(error) if error.code == 503 || error.code == 504 => {
                tracing::debug!(object = %what, %error, "no leader yet to create a system object");
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
            Err(error) => {
                tracing::warn!(object = %what, %error, "could not create a system object");
                return true;
            }
        }
    }
}
