//! Skiff's node agent (being assembled).

pub mod pods;
pub mod runtime;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::pods::Backoff;

/// What `skiff-node-agent` is started with (DESIGN.md §10).
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory for images, container state and logs.
    pub data_dir: PathBuf,
    /// The control plane's URL.
    pub server: String,
    /// The join token.
    pub token: Option<String>,
    /// The node's name (default: the host name).
    pub node_name: Option<String>,
    /// The node's IP (default: the local address that reaches the control plane).
    pub node_ip: Option<IpAddr>,
    /// Where the agent serves logs and exec to the control plane.
    pub listen: SocketAddr,
    /// Labels for the Node object, beside the well-known ones.
    pub node_labels: BTreeMap<String, String>,
    /// Registries (`host:port`) spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Host directories hostPath volumes may use.
    pub allowed_host_paths: Vec<PathBuf>,
    /// The executable started for the agent's helper processes (shims, exec,
    /// sandboxes); default: this process's executable.
    pub helper_binary: Option<PathBuf>,
    /// The restart back-off (kubelet's 10 s doubling to 5 min by default).
    pub backoff: Backoff,
}

impl Config {
    /// A configuration with Kubernetes' defaults for everything but the data
    /// directory and the control plane's URL.
    pub fn new(data_dir: PathBuf, server: String) -> Self {
        Self {
            data_dir,
            server,
            token: None,
            node_name: None,
            node_ip: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 10250)),
            node_labels: BTreeMap::new(),
            insecure_registries: Vec::new(),
            allowed_host_paths: Vec::new(),
            helper_binary: None,
            backoff: Backoff::default(),
        }
    }
}

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The data directory or the image store could not be opened.
    #[error("failed to open {what}: {message}")]
    Open {
        /// What could not be opened.
        what: String,
        /// Why.
        message: String,
    },
    /// The agent's own service could not listen.
    #[error("failed to listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the agent until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let _ = (config, shutdown);
    Err(Error::Config("not assembled yet".into()))
}
