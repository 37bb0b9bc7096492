//! `skiff-node-agent`: parses flags and runs the library (or one of its helper
//! processes, or `reset`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Skiff's node agent.
#[derive(Debug, Parser)]
#[command(name = "skiff-node-agent", version)]
struct Flags {
    /// Directory for images, container state and logs.
    #[arg(long, global = true, default_value = "/var/lib/skiff/node-agent")]
    data_dir: PathBuf,
    /// The control plane's URL, `https://HOST:6443`; repeatable or comma separated:
    /// the agent uses the first reachable one and fails over in this order.
    /// (`http://` speaks without TLS, for in-process tests only.)
    #[arg(long = "server", value_name = "URL", value_delimiter = ',')]
    servers: Vec<String>,
    /// The bootstrap token (`K10<ca hash>::<id>.<secret>`), needed to join the first
    /// time (`skiff-control-plane token create --kind agent`).
    #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The node's IP (default: the local address that reaches the control plane).
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// Where to serve logs and exec to the control plane.
    #[arg(long, default_value = "0.0.0.0:10250")]
    listen: SocketAddr,
    /// A registry (`host:port`) to reach over plain HTTP; repeatable.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// A host directory hostPath volumes may use; repeatable (default: none).
    #[arg(long = "allow-host-path")]
    allowed_host_paths: Vec<PathBuf>,
    /// The pod bridge's name (also the name of the service proxy's nftables table).
    #[arg(long, global = true, default_value = skiff_node_agent::network::BRIDGE)]
    bridge: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stops and removes every container and pod sandbox under --data-dir (images
    /// stay), then the pod network: the bridge, routes and nftables table.
    Reset,
}

fn main() -> ExitCode {
    // Shims, exec and sandbox helpers are this same executable; they run before any
    // thread exists.
    if let Some(code) = skiff_node_agent::runtime::helper::run_helper_if_requested() {
        return code;
    }
    let flags = Flags::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("skiff-node-agent: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(flags)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("skiff-node-agent: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(flags: Flags) -> anyhow::Result<()> {
    if let Some(Command::Reset) = flags.command {
        let config =
            skiff_node_agent::runtime::container::RuntimeConfig::new(flags.data_dir, None)?;
        skiff_node_agent::runtime::reset(&config).await?;
        skiff_node_agent::network::reset(&config.data_dir, &flags.bridge).await?;
        return Ok(());
    }
    let servers = skiff_node_agent::control::parse_servers(&flags.servers)?;
    let mut config = skiff_node_agent::Config::new(flags.data_dir, String::new());
    config.servers = servers;
    config.token = flags.token;
    config.node_name = flags.node_name;
    config.node_ip = flags.node_ip;
    config.listen = flags.listen;
    config.insecure_registries = flags.insecure_registries;
    config.allowed_host_paths = flags.allowed_host_paths;
    config.bridge = flags.bridge;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        stop.cancel();
    });
    skiff_node_agent::run(config, shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &[&str], servers: &[&str], token: Option<&str>) {
        let flags =
            Flags::try_parse_from(std::iter::once("skiff-node-agent").chain(args.iter().copied()))
                .expect("the flags parse");
        let parsed = skiff_node_agent::control::parse_servers(&flags.servers).expect("servers");
        assert_eq!(parsed, servers, "{args:?}");
        assert_eq!(flags.token.as_deref(), token, "{args:?}");
    }

    #[test]
    fn servers_are_repeatable_and_comma_separated_in_order() {
        check(&["--server", "https://a:6443"], &["https://a:6443"], None);
        check(
            &[
                "--server",
                "https://b:6443,https://a:6443",
                "--server",
                "https://c:6443",
            ],
            &["https://b:6443", "https://a:6443", "https://c:6443"],
            None,
        );
        check(
            &[
                "--server=https://a:6443",
                "--token",
                "K10abc::abcdef.0123456789abcdef",
            ],
            &["https://a:6443"],
            Some("K10abc::abcdef.0123456789abcdef"),
        );
    }
}
