//! `skiff-control-plane`: parses flags, wires signals, and runs the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Skiff's control plane: the replicated store and (soon) the API server.
#[derive(Debug, Parser)]
#[command(name = "skiff-control-plane", version)]
struct Flags {
    /// Directory for the store's database.
    #[arg(long, default_value = "/var/lib/skiff/control-plane")]
    data_dir: PathBuf,
    /// Address for Raft traffic between members and the Kv API.
    #[arg(long, default_value = "127.0.0.1:2380")]
    listen_peer: SocketAddr,
    /// Address other members reach this one at (default: the listen address).
    #[arg(long)]
    advertise_peer: Option<String>,
    /// Peer address (host:port) of an existing member to join.
    #[arg(long)]
    join: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let flags = Flags::parse();
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signals.cancel();
    });
    let config = skiff_control_plane::Config {
        data_dir: flags.data_dir,
        listen_peer: flags.listen_peer,
        advertise_peer: flags.advertise_peer,
        join: flags.join,
    };
    skiff_control_plane::run(config, shutdown).await
}

async fn wait_for_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
