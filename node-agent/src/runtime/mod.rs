//! The container runtime: images, pod sandboxes, containers and their supervisors.
//!
//! On-disk layout under the agent's data directory:
//! - `images/`: the image store ([`image`]): content-addressed blobs, unpacked layers,
//!   an index of references.
//! - `pods/<pod-uid>/`: a pod's sandbox ([`sandbox`]: the bind-mounted net, ipc and uts
//!   namespaces under `ns/`) and its volumes (`volumes/<name>/` for emptyDir).
//! - `containers/<id>/`: one container ([`container`]): `labels.json` (who it belongs
//!   to), `config.json` + `rootfs/` (the OCI bundle; rootfs is an overlayfs of the image
//!   layers and `upper/`), `state.json` and `exit.json` (written by its supervisor,
//!   [`shim`]), `log` (CRI log format, read by [`logs`]).
//! - `state/`: libcontainer's state root.
//!
//! Everything that must clone(2) or unshare(2) the calling process (libcontainer's
//! create and exec, sandbox creation) runs in a short-lived single-threaded helper
//! process started from the agent's own executable ([`helper`]), never inside tokio.

pub mod cgroups;
pub mod container;
pub mod helper;
pub mod image;
pub mod logs;
pub mod netns;
pub mod sandbox;
pub mod shim;
pub mod spec;

use std::path::Path;

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A file-system or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The failure.
        source: std::io::Error,
    },
    /// The pod sandbox could not be made.
    #[error("failed to create the pod sandbox: {0}")]
    Sandbox(String),
    /// The container could not be started.
    #[error("{0}")]
    Start(String),
    /// Something expected on disk is missing.
    #[error("{0} not found")]
    NotFound(String),
}

impl RuntimeError {
    /// An I/O failure while doing `what`.
    pub fn io(what: &'static str, source: std::io::Error) -> Self {
        Self::Io { what, source }
    }
}

/// Stops and removes every container, sandbox, volume and pod cgroup under
/// `config`'s data directory (`skiff-node-agent reset`, and test clean-up). Images
/// stay.
pub async fn reset(config: &container::RuntimeConfig) -> Result<(), RuntimeError> {
    for container in container::Container::list(config).await? {
        container.remove().await?;
    }
    let pods = config.data_dir.join("pods");
    if let Ok(entries) = std::fs::read_dir(&pods) {
        for entry in entries.flatten() {
            let dir = entry.path();
            if let Ok(sandbox) = sandbox::Sandbox::open(&dir) {
                sandbox.remove().await?;
            }
            let _ = crate::pods::volumes::remove(&dir);
            let uid = entry.file_name().to_string_lossy().into_owned();
            cgroups::remove_pod_cgroups(&uid)
                .map_err(|e| RuntimeError::io("removing pod cgroups", e))?;
            remove_dir(&dir)?;
        }
    }
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<(), RuntimeError> {
    match std::fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(RuntimeError::io("removing a pod dir", error))
        }
        _ => Ok(()),
    }
}
