//! Skiff's control plane.
//!
//! - [`store`]: the Raft-replicated key-value store, the source of truth.
//! - [`admin`]: operator commands against a running member (`member list|remove`).
//! - [`Config`] and [`run`]: what `skiff-control-plane` starts.

pub mod admin;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

/// What the `skiff-control-plane` process runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory for the store's database.
    pub data_dir: PathBuf,
    /// Address of the peer gRPC server (Raft between members, and the Kv API).
    pub listen_peer: SocketAddr,
    /// Address other members use to reach this one (default: the bound address).
    pub advertise_peer: Option<String>,
    /// Peer address of an existing member to join.
    pub join: Option<String>,
}

/// Runs the control plane until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = store::Store::open(store::Config {
        data_dir: config.data_dir,
        listen_peer: config.listen_peer,
        advertise_peer: config.advertise_peer,
        join: config.join,
        tuning: store::Tuning::default(),
    })
    .await?;
    println!(
        "skiff-control-plane: member {} serving peers on {}",
        store.node_id(),
        store.address()
    );
    shutdown.cancelled().await;
    store.shutdown().await;
    Ok(())
}
