//! Skiff's node agent. It will register with the control plane over gRPC, receive the
//! pods bound to its node and run them as native containers (see DESIGN.md §5).
//!
//! Today it holds only its [`Config`]: the runtime, pod workers and networking arrive
//! with the node-agent issue, and [`run`] says so instead of pretending to work.

pub mod pods;
pub mod runtime;

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

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
}

/// Errors of the node agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The agent's runtime is not part of this build yet.
    #[error(
        "the node agent cannot run pods yet: its container runtime is not implemented in this version"
    )]
    NotImplemented,
}

/// Runs the agent until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let _ = (config, shutdown);
    Err(Error::NotImplemented)
}
