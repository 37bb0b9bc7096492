//! `skiff-control-plane`: parses flags, wires signals, and runs the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
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
    /// Peer address (host:port) of an existing member to join through; repeat it to
    /// try several in order. Used on first start only.
    // `--join` stays an alias until it becomes the API URL of the token join.
    #[arg(long = "join-peer", alias = "join", value_name = "HOST:PORT")]
    join_peer: Vec<String>,
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
    /// The pod network; each node gets a subnet of it as its podCIDR
    /// (kube-controller-manager's --cluster-cidr).
    #[arg(long, default_value = "10.244.0.0/16", value_name = "CIDR")]
    cluster_cidr: String,
    /// The prefix length of each node's podCIDR.
    #[arg(long, default_value_t = 24, value_name = "BITS")]
    node_cidr_mask_size: u8,
    /// The range Services' cluster IPs come from (kube-apiserver's
    /// --service-cluster-ip-range).
    #[arg(long, default_value = "10.96.0.0/12", value_name = "CIDR")]
    service_cluster_ip_range: String,
    /// The range NodePort and LoadBalancer Services' node ports come from.
    #[arg(long, default_value = "30000-32767", value_name = "FIRST-LAST")]
    service_node_port_range: String,
    /// The DNS domain of the cluster (`name.namespace.svc.<domain>`).
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    cluster_domain: String,
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
        /// The local member's data dir: its `pki/peer.crt` (if present) authenticates
        /// the call over mutual TLS.
        #[arg(long, default_value = "/var/lib/skiff/control-plane")]
        data_dir: PathBuf,
    },
    /// Remove a member by id.
    Remove {
        /// The member's id (from `member list`).
        node_id: u64,
        /// Peer address of any member.
        #[arg(long, default_value = "127.0.0.1:2380")]
        peer: String,
        /// The local member's data dir: its `pki/peer.crt` (if present) authenticates
        /// the call over mutual TLS.
        #[arg(long, default_value = "/var/lib/skiff/control-plane")]
        data_dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // One crypto backend everywhere; an error means one is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
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
            action: MemberAction::List { peer, data_dir },
        }) => print!(
            "{}",
            skiff_control_plane::admin::list_members(&peer, &data_dir).await?
        ),
        Some(Command::Member {
            action:
                MemberAction::Remove {
                    node_id,
                    peer,
                    data_dir,
                },
        }) => {
            print!(
                "{}",
                skiff_control_plane::admin::remove_member(&peer, &data_dir, node_id).await?
            );
        }
        None => {
            let network = skiff_control_plane::NetworkSettings::build(
                &flags.cluster_cidr,
                flags.node_cidr_mask_size,
                &flags.service_cluster_ip_range,
                &flags.service_node_port_range,
                &flags.cluster_domain,
            )
            .context("invalid network flags")?;
            let shutdown = CancellationToken::new();
            let signals = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                signals.cancel();
            });
            // Peer traffic is mutual TLS once the data dir holds a peer certificate.
            let tls = skiff_control_plane::store::PeerTls::load(&flags.data_dir.join("pki"))
                .context("failed to load the peer certificate")?;
            let store = skiff_control_plane::store::Config {
                data_dir: flags.data_dir,
                listen_peer: flags.listen_peer,
                advertise_peer: flags.advertise_peer,
                join: flags.join_peer,
                tls,
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
                network,
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
