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
    #[arg(long, global = true, default_value = "/var/lib/skiff/control-plane")]
    data_dir: PathBuf,
    /// Address for Raft traffic between members and the Kv API.
    #[arg(long, default_value = "127.0.0.1:2380")]
    listen_peer: SocketAddr,
    /// Address other members reach this one at (default: the listen address).
    #[arg(long)]
    advertise_peer: Option<String>,
    /// The API URL (`https://HOST:6443`) of an existing member to join, with --token.
    #[arg(long, requires = "token")]
    join: Option<String>,
    /// The server token of the cluster to join (`K10<ca-hash>::<id>.<secret>`, from
    /// the first member's `DATA/token`).
    #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Peer address (host:port) of an existing member to join through directly, when
    /// this data dir already holds the cluster's PKI; repeatable, tried in order.
    #[arg(long = "join-peer", value_name = "HOST:PORT")]
    join_peer: Vec<String>,
    /// Address of the Kubernetes API (HTTPS).
    #[arg(long, default_value = "0.0.0.0:6443")]
    listen_api: SocketAddr,
    /// The IP clients, agents and other members reach the API at (default: the listen
    /// IP, or 127.0.0.1 when it is unspecified).
    #[arg(long)]
    advertise_address: Option<std::net::IpAddr>,
    /// An extra DNS name or IP for the API's certificate; repeatable.
    #[arg(long = "tls-san")]
    tls_sans: Vec<String>,
    /// This member's name (default: the host name).
    #[arg(long)]
    name: Option<String>,
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
    /// Create, list or revoke join and API tokens through a running member.
    Token {
        #[command(subcommand)]
        action: TokenAction,
        /// The member's API (accepted before or after the action).
        #[arg(long, global = true, default_value = "https://127.0.0.1:6443")]
        server: String,
    },
    /// Inspect or change the store's membership through a running member.
    Member {
        #[command(subcommand)]
        action: MemberAction,
    },
    /// Back up the store through a running member, or restore a backup into a new data
    /// directory (like `etcdctl snapshot save` and `etcdutl snapshot restore`).
    Snapshot {
        #[command(subcommand)]
        action: SnapshotAction,
    },
}

#[derive(Debug, Subcommand)]
enum SnapshotAction {
    /// Save a consistent copy of the whole keyspace, taken by a running member.
    Save {
        /// The snapshot file to write.
        file: PathBuf,
        /// Peer address of any member.
        #[arg(long, default_value = "127.0.0.1:2380")]
        peer: String,
    },
    /// Create a new data directory (--data-dir, which must not exist or be empty)
    /// from a snapshot, for a new one-member cluster.
    Restore {
        /// The snapshot file to read.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Creates a token and prints it.
    Create {
        /// What the token may do.
        #[arg(long, value_enum, default_value = "agent")]
        kind: skiff_control_plane::tokens::TokenKind,
        /// How long it lives (`24h`, `90m`; `0` for ever).
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// The user an api token authenticates as.
        #[arg(long)]
        user: Option<String>,
        /// A group an api token authenticates in; repeatable (`system:masters`,
        /// `skiff:view`).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Shown by `token list`.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Lists the tokens.
    List,
    /// Revokes a token by id (the 6 characters after `::`).
    Revoke {
        /// The token's id.
        id: String,
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
    let _ = rustls::crypto::ring::default_provider().install_default();
    let flags = Flags::parse();
    match flags.command {
        Some(Command::Token { action, server }) => {
            let client = skiff_control_plane::tokens::AdminClient::new(&flags.data_dir, &server)?;
            match action {
                TokenAction::Create {
                    kind,
                    ttl,
                    user,
                    groups,
                    description,
                } => {
                    let new = skiff_control_plane::tokens::NewToken {
                        kind,
                        ttl: skiff_control_plane::tokens::parse_ttl(&ttl)?,
                        user,
                        groups,
                        description,
                    };
                    println!("{}", client.create(&new).await?);
                }
                TokenAction::List => print!("{}", client.list().await?),
                TokenAction::Revoke { id } => {
                    client.revoke(&id).await?;
                    println!("token {id} revoked");
                }
            }
        }
        Some(Command::Member {
            action: MemberAction::List { peer },
        }) => print!(
            "{}",
            skiff_control_plane::admin::list_members(&peer, &flags.data_dir).await?
        ),
        Some(Command::Member {
            action: MemberAction::Remove { node_id, peer },
        }) => {
            print!(
                "{}",
                skiff_control_plane::admin::remove_member(&peer, &flags.data_dir, node_id).await?
            );
        }
        Some(Command::Snapshot {
            action: SnapshotAction::Save { file, peer },
        }) => print!(
            "{}",
            skiff_control_plane::admin::save_snapshot(&peer, &flags.data_dir, &file).await?
        ),
        Some(Command::Snapshot {
            action: SnapshotAction::Restore { file },
        }) => print!(
            "{}",
            skiff_control_plane::admin::restore_snapshot(&file, &flags.data_dir)?
        ),
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
            // Peer traffic is mutual TLS with the member's peer certificate, which
            // `run` loads or creates under the data dir.
            let store = skiff_control_plane::store::Config {
                data_dir: flags.data_dir,
                listen_peer: flags.listen_peer,
                advertise_peer: flags.advertise_peer,
                join: flags.join_peer,
                tls: None,
                tuning: skiff_control_plane::store::Tuning::default(),
            };
            let mut controllers = skiff_control_plane::controllers::Settings::default();
            controllers.node_lifecycle.grace =
                std::time::Duration::from_secs(flags.node_monitor_grace_period);
            controllers.node_lifecycle.eviction_timeout =
                std::time::Duration::from_secs(flags.pod_eviction_timeout);
            let security = skiff_control_plane::SecurityConfig {
                member_name: flags.name,
                advertise_address: flags.advertise_address,
                tls_sans: flags.tls_sans,
                join: flags.join.map(|server| skiff_control_plane::Join {
                    server,
                    token: flags.token.unwrap_or_default(),
                }),
            };
            let config = skiff_control_plane::Config {
                store,
                listen_api: flags.listen_api,
                security,
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
