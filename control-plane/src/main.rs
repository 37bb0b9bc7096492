//! `skiff-control-plane`: parses flags, wires signals, and runs the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Skiff's control plane: the replicated store, the Kubernetes API, the scheduler and
/// the controllers.
#[derive(Debug, Parser)]
#[command(
    name = "skiff-control-plane",
    version,
    args_conflicts_with_subcommands = true
)]
struct Flags {
    #[command(subcommand)]
    command: Option<Command>,
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
    /// Address of the Kubernetes API (plain HTTP; keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen_api: SocketAddr,
    /// Seconds a node may go without a heartbeat before it is marked `Unknown` and
    /// tainted unreachable (kube-controller-manager's --node-monitor-grace-period).
    #[arg(long, default_value_t = 40, value_name = "SECONDS")]
    node_monitor_grace_period: u64,
    /// Seconds pods without their own toleration stay on a not-ready or unreachable
    /// node before they are evicted (kube's default tolerationSeconds).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pod_eviction_timeout: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect or change the store's membership through a running member.
    Member {
        #[command(subcommand)]
        action: MemberAction,
    },
}

#[derive(Debug, Subcommand)]
enum MemberAction {
    /// List the members and which one leads.
    List {
        /// Peer address of any member.
        #[arg(long, default_value = "127.0.0.1:2380")]
        peer: String,
    },
    /// Remove a member by id.
    Remove {
        /// The member's id (from `member list`).
        node_id: u64,
        /// Peer address of any member.
        #[arg(long, default_value = "127.0.0.1:2380")]
        peer: String,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,openraft=warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let flags = Flags::parse();
    match flags.command {
        Some(Command::Member {
            action: MemberAction::List { peer },
        }) => print!("{}", skiff_control_plane::admin::list_members(&peer).await?),
        Some(Command::Member {
            action: MemberAction::Remove { node_id, peer },
        }) => {
            print!(
                "{}",
                skiff_control_plane::admin::remove_member(&peer, node_id).await?
            );
        }
        None => {
            let shutdown = CancellationToken::new();
            let signals = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                signals.cancel();
            });
            let store = skiff_control_plane::store::Config {
                data_dir: flags.data_dir,
                listen_peer: flags.listen_peer,
                advertise_peer: flags.advertise_peer,
                join: flags.join,
                tuning: skiff_control_plane::store::Tuning::default(),
            };
            let mut controllers = skiff_control_plane::controllers::Settings::default();
            controllers.node_lifecycle.grace =
                std::time::Duration::from_secs(flags.node_monitor_grace_period);
            controllers.node_lifecycle.eviction_timeout =
                std::time::Duration::from_secs(flags.pod_eviction_timeout);
            let config = skiff_control_plane::Config {
                store,
                listen_api: flags.listen_api,
                controllers,
            };
            skiff_control_plane::run(config, shutdown).await?;
        }
    }
    Ok(())
}

async fn wait_for_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
