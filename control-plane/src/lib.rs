//! Skiff's control plane.
//!
//! - [`store`]: the Raft-replicated key-value store, the source of truth.
//! - [`apiserver`]: the Kubernetes-shaped REST API over the store (in progress).
//! - [`admin`]: operator commands against a running member (`member list|remove`).
//! - [`Config`] and [`run`]: what `skiff-control-plane` starts.

pub mod admin;
pub mod apiserver;
pub mod store;

use tokio_util::sync::CancellationToken;

/// What the `skiff-control-plane` process runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The store member: data directory, peer address, cluster to join.
    pub store: store::Config,
}

/// Runs the control plane until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = store::Store::open(config.store).await?;
    println!(
        "skiff-control-plane: member {} serving peers on {}",
        store.node_id(),
        store.address()
    );
    shutdown.cancelled().await;
    store.shutdown().await;
    Ok(())
}
