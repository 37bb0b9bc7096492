//! `skiff-node-agent`: parses flags and runs the library (or one of its helper
//! processes, or `reset`).

use std::collections::BTreeMap;
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
    /// Labels for the Node, as kubelet's flag: `k=v,k2=v2` (an empty value is
    /// allowed); repeatable. They win over the agent's own labels.
    #[arg(long, value_name = "LABELS", value_parser = parse_node_labels)]
    node_labels: Vec<BTreeMap<String, String>>,
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

/// Parses `--node-labels`: comma-separated `key=value` pairs with Kubernetes' label
/// key and value syntax. Unlike kubelet, which refuses to set `node-role.kubernetes.io/*`
/// (and other `kubernetes.io` labels outside its allow-list) on its own Node, any key is
/// accepted, as k3s does for `node-role.kubernetes.io/control-plane` and friends: a
/// Skiff node agent is trusted to name its roles.
fn parse_node_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("{pair:?} is not a key=value label"));
        };
        let (key, value) = (key.trim(), value.trim());
        let mut errors = skiff_api::validation::names::qualified_name(key);
        errors.extend(skiff_api::validation::names::label_value(value));
        if !errors.is_empty() {
            return Err(format!("invalid label {pair:?}: {}", errors.join("; ")));
        }
        labels.insert(key.to_owned(), value.to_owned());
    }
    Ok(labels)
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
    config.node_labels = flags.node_labels.into_iter().flatten().collect();
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

    fn check_labels(text: &str, expected: Result<&[(&str, &str)], &str>) {
        let parsed = parse_node_labels(text);
        match expected {
            Ok(pairs) => {
                let pairs: BTreeMap<String, String> = pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                assert_eq!(parsed, Ok(pairs), "{text}");
            }
            Err(start) => {
                let error = parsed.expect_err(text);
                assert!(error.starts_with(start), "{text}: {error}");
                assert!(!error.contains('\n'), "one line: {error}");
            }
        }
    }

    #[test]
    fn node_labels_parse_like_kubelets() {
        check_labels("zone=a", Ok(&[("zone", "a")]));
        check_labels(
            "zone=a, node-role.kubernetes.io/control-plane=,example.com/tier=db",
            Ok(&[
                ("example.com/tier", "db"),
                ("node-role.kubernetes.io/control-plane", ""),
                ("zone", "a"),
            ]),
        );
        check_labels("", Ok(&[]));
        check_labels("zone", Err("\"zone\" is not a key=value label"));
        check_labels("Bad Key=x", Err("invalid label \"Bad Key=x\""));
        check_labels("zone=a b", Err("invalid label \"zone=a b\""));
        check_labels("a/b/c=x", Err("invalid label"));
        check_labels("/x=y", Err("invalid label"));
    }

    #[test]
    fn node_labels_flags_repeat() {
        let flags = Flags::try_parse_from([
            "skiff-node-agent",
            "--node-labels",
            "a=1,b=2",
            "--node-labels=c=3",
        ])
        .unwrap();
        let merged: BTreeMap<String, String> = flags.node_labels.into_iter().flatten().collect();
        assert_eq!(merged.len(), 3);
        let error = Flags::try_parse_from(["skiff-node-agent", "--node-labels", "x"]).unwrap_err();
        assert!(
            error.to_string().contains("\"x\" is not a key=value label"),
            "{error}"
        );
    }
}
