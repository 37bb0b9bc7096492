//! `skiff-node-agent`: parses flags and runs the library.

use std::path::PathBuf;

use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Skiff's node agent.
#[derive(Debug, Parser)]
#[command(name = "skiff-node-agent", version)]
struct Flags {
    /// Directory for images, container state and logs.
    #[arg(long, default_value = "/var/lib/skiff/node-agent")]
    data_dir: PathBuf,
    /// The control plane's URL.
    #[arg(long)]
    server: String,
    /// The join token.
    #[arg(long)]
    token: Option<String>,
    /// The node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let config = skiff_node_agent::Config {
        data_dir: flags.data_dir,
        server: flags.server,
        token: flags.token,
        node_name: flags.node_name,
    };
    skiff_node_agent::run(config, CancellationToken::new()).await?;
    Ok(())
}
