//! A pod's sandbox: the network, IPC and UTS namespaces its containers share (as the
//! pause container holds them in Kubernetes). Skiff needs no pause process: a
//! short-lived helper unshares the namespaces, sets the hostname, brings `lo` up and
//! bind-mounts the namespace files under `pods/<uid>/ns/`, which keeps them alive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::RuntimeError;

/// The namespaces a sandbox holds: OCI name → file name under `ns/`.
const NAMESPACES: &[(&str, &str)] = &[("network", "net"), ("ipc", "ipc"), ("uts", "uts")];

/// A pod sandbox on disk.
#[derive(Clone, Debug)]
pub struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    /// Creates the sandbox under `pod_dir`: new ipc and uts namespaces (and a new
    /// network namespace with loopback up, unless `host_network`) with `hostname`,
    /// pinned by bind mounts. A dedicated thread unshares them (namespaces are per
    /// thread), so no process is started; the thread ends right after.
    pub async fn create(
        pod_dir: &Path,
        hostname: &str,
        host_network: bool,
    ) -> Result<Self, RuntimeError> {
        let sandbox = Self {
            dir: pod_dir.to_owned(),
        };
        let ns = sandbox.dir.join("ns");
        tokio::fs::create_dir_all(&ns)
            .await
            .map_err(|e| RuntimeError::io("creating the sandbox dir", e))?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let hostname = hostname.to_owned();
        let spawned = std::thread::Builder::new()
            .name("sandbox".to_owned())
            .spawn(move || {
                let _ = sender.send(make(&ns, &hostname, host_network));
            });
        let made = match spawned {
            Ok(_) => receiver
                .await
                .unwrap_or_else(|_| Err("the sandbox thread ended without a result".to_owned())),
            Err(error) => Err(format!("starting the sandbox thread: {error}")),
        };
        if let Err(message) = made {
            let _ = sandbox.clone().remove().await;
            return Err(RuntimeError::Sandbox(message));
        }
        Ok(sandbox)
    }

    /// The sandbox already under `pod_dir` (after an agent restart).
    pub fn open(pod_dir: &Path) -> Result<Self, RuntimeError> {
        let sandbox = Self {
            dir: pod_dir.to_owned(),
        };
        if sandbox.namespace_path("ipc").is_none() {
            return Err(RuntimeError::NotFound(format!(
                "sandbox in {}",
                pod_dir.display()
            )));
        }
        Ok(sandbox)
    }

    /// The nsfs file holding the namespace of OCI type `kind` (`network`, `ipc`,
    /// `uts`), when the sandbox has its own.
    pub fn namespace_path(&self, kind: &str) -> Option<PathBuf> {
        let (_, file) = NAMESPACES.iter().find(|(k, f)| *k == kind || *f == kind)?;
        let path = self.dir.join("ns").join(file);
        is_mount_point(&path).then_some(path)
    }

    /// Every namespace the containers join: OCI type → nsfs file.
    pub fn namespaces(&self) -> BTreeMap<String, PathBuf> {
        NAMESPACES
            .iter()
            .filter_map(|(kind, _)| Some(((*kind).to_owned(), self.namespace_path(kind)?)))
            .collect()
    }

    /// Unmounts the namespace files (the namespaces die with their last process) and
    /// removes `ns/`. Idempotent; works on a half-made sandbox.
    pub async fn remove(self) -> Result<(), RuntimeError> {
        let ns = self.dir.join("ns");
        for (_, file) in NAMESPACES {
            let path = ns.join(file);
            if is_mount_point(&path) {
                nix::mount::umount2(&path, MntFlags::MNT_DETACH)
                    .map_err(|e| RuntimeError::io("unmounting a namespace", e.into()))?;
            }
        }
        match tokio::fs::remove_dir_all(&ns).await {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(RuntimeError::io("removing the sandbox dir", error))
            }
            _ => Ok(()),
        }
    }
}

/// Whether `path` is mounted on (nsfs files are: their device differs from the dir's).
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) {
        (Ok(own), Some(Ok(parent))) => own.dev() != parent.dev(),
        _ => false,
    }
}

/// Unshares the namespaces in the calling thread (which must end afterwards, never
/// to be reused), brings loopback up and bind-mounts the namespaces under `ns_dir`.
fn make(ns_dir: &Path, hostname: &str, host_network: bool) -> Result<(), String> {
    let mut flags = CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
    if !host_network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    nix::sched::unshare(flags).map_err(|e| format!("unshare: {e}"))?;
    nix::unistd::sethostname(hostname).map_err(|e| format!("sethostname {hostname:?}: {e}"))?;
    if !host_network {
        loopback_up()?;
    }
    for (kind, file) in NAMESPACES {
        if *kind == "network" && host_network {
            continue;
        }
        let target = ns_dir.join(file);
        std::fs::File::create(&target)
            .map_err(|e| format!("creating {}: {e}", target.display()))?;
        let source = format!("/proc/thread-self/ns/{file}");
        nix::mount::mount(
            Some(source.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind-mounting {source}: {e}"))?;
    }
    Ok(())
}

/// Sets `lo` (interface 1 in a new network namespace) up through netlink, from the
/// calling thread's network namespace.
fn loopback_up() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("netlink runtime: {e}"))?;
    runtime.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| format!("netlink socket: {e}"))?;
        let task = tokio::spawn(connection);
        let result = handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(1).up().build())
            .execute()
            .await
            .map_err(|e| format!("setting lo up: {e}"));
        task.abort();
        result
    })
}
