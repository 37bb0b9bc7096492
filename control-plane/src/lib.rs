//! Skiff's control plane.
//!
//! - [`store`]: the Raft-replicated key-value store, the source of truth.
//! - [`apiserver`]: the Kubernetes-shaped REST API over the store (in progress).
//! - [`admin`]: operator commands against a running member (`member list|remove`).
//! - [`Config`] and [`run`]: what `skiff-control-plane` starts.

pub mod admin;
pub mod apiserver;
pub mod store;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use skiff_api::Object;
use skiff_api::types::Namespace;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the `skiff-control-plane` process runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The store member: data directory, peer address, cluster to join.
    pub store: store::Config,
    /// Address of the Kubernetes API (plain HTTP: loopback only until TLS lands).
    pub listen_api: SocketAddr,
}

/// Namespaces every cluster has, created at start as Kubernetes does.
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Runs the control plane until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
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
    let registry = apiserver::Registry::new(store.clone());
    ensure_system_namespaces(&registry).await;
    println!("skiff-control-plane: serving the API on http://{api_address}");
    apiserver::serve(registry, listener, shutdown).await;
    store.shutdown().await;
    Ok(())
}

/// Creates the system namespaces if they are missing; retries while the store has no
/// leader yet (a joining member may wait for one).
async fn ensure_system_namespaces(registry: &apiserver::Registry) {
    for name in SYSTEM_NAMESPACES {
        let namespace = Namespace {
            metadata: skiff_api::meta::ObjectMeta {
                name: Some((*name).to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        for attempt in 0..50 {
            match registry.create(Object::from(namespace.clone()), None).await {
                Ok(_) => break,
                Err(error) if error.code == 409 => break,
                Err(error) if attempt < 49 && (error.code == 503 || error.code == 504) => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(error) => {
                    tracing::warn!(namespace = %name, %error, "could not create a system namespace");
                    break;
                }
            }
        }
    }
}
