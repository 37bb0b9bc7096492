//! A pod's volumes on the node: `emptyDir` (a directory under the pod's dir, or a
//! tmpfs for `medium: Memory`) and `hostPath` (only under the paths the agent allows;
//! Kubernetes' `type` checks), and the bind mounts each container gets from them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use nix::mount::{MntFlags, MsFlags};

use crate::runtime::spec::VolumeMount;

/// Why a pod's volumes could not be set up; shown as the containers' waiting message
/// (`CreateContainerConfigError`).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A hostPath outside the agent's allow-list.
    #[error(
        "hostPath volume {name:?}: path {path:?} is not allowed on this node (allowed: {allowed:?})"
    )]
    HostPathNotAllowed {
        /// The volume's name.
        name: String,
        /// The path asked for.
        path: String,
        /// The node's allow-list.
        allowed: Vec<PathBuf>,
    },
    /// A hostPath whose `type` check failed.
    #[error("hostPath volume {name:?}: {message}")]
    HostPathType {
        /// The volume's name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A volume kind Skiff does not run.
    #[error("volume {0:?}: only emptyDir and hostPath volumes are supported")]
    Unsupported(String),
    /// A container mounts a volume the pod does not define.
    #[error("container {container:?}: volumeMount {name:?} names no volume of the pod")]
    UnknownVolume {
        /// The container.
        container: String,
        /// The missing volume.
        name: String,
    },
    /// The node failed to create or mount something.
    #[error("volume {name:?}: {source}")]
    Io {
        /// The volume's name.
        name: String,
        /// The failure.
        source: std::io::Error,
    },
}

/// The pod's volumes, prepared on the node: volume name → host directory or file.
#[derive(Clone, Debug, Default)]
pub struct Volumes {
    paths: BTreeMap<String, PathBuf>,
}

impl Volumes {
    /// Creates the pod's emptyDirs under `pod_dir/volumes/` and checks its hostPaths.
    /// Idempotent: an agent restart prepares the same volumes again.
    pub fn prepare(pod_dir: &Path, pod: &Pod, allowed: &[PathBuf]) -> Result<Self, VolumeError> {
        let mut paths = BTreeMap::new();
        let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
        for volume in volumes {
            let path = prepare_one(pod_dir, volume, allowed)?;
            paths.insert(volume.name.clone(), path);
        }
        Ok(Self { paths })
    }

    /// The bind mounts of `container`, in its volumeMounts' order.
    pub fn mounts(&self, container: &Container) -> Result<Vec<VolumeMount>, VolumeError> {
        container
            .volume_mounts
            .iter()
            .flatten()
            .map(|mount| {
                let host_path =
                    self.paths
                        .get(&mount.name)
                        .ok_or_else(|| VolumeError::UnknownVolume {
                            container: container.name.clone(),
                            name: mount.name.clone(),
                        })?;
                Ok(VolumeMount {
                    host_path: host_path.clone(),
                    container_path: PathBuf::from(&mount.mount_path),
                    read_only: mount.read_only.unwrap_or(false),
                })
            })
            .collect()
    }
}

/// Removes what [`Volumes::prepare`] made for the pod (unmounting memory-backed
/// emptyDirs first). Idempotent.
pub fn remove(pod_dir: &Path) -> std::io::Result<()> {
    let dir = pod_dir.join("volumes");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        // A tmpfs emptyDir is a mount point; a plain one is not: both unmount quietly.
        let _ = nix::mount::umount2(&entry.path(), MntFlags::MNT_DETACH);
    }
    match std::fs::remove_dir_all(&dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// One volume's host path.
fn prepare_one(
    pod_dir: &Path,
    volume: &Volume,
    allowed: &[PathBuf],
) -> Result<PathBuf, VolumeError> {
    let io = |source| VolumeError::Io {
        name: volume.name.clone(),
        source,
    };
    if let Some(empty_dir) = &volume.empty_dir {
        let path = pod_dir.join("volumes").join(&volume.name);
        std::fs::create_dir_all(&path).map_err(io)?;
        if empty_dir.medium.as_deref() == Some("Memory") && !is_mount_point(&path) {
            let size = empty_dir
                .size_limit
                .as_ref()
                .and_then(|q| skiff_api::Quantity::parse(&q.0).ok())
                .map(|q| format!("size={}", q.nano_value() / 1_000_000_000));
            nix::mount::mount(
                Some("tmpfs"),
                &path,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                size.as_deref(),
            )
            .map_err(|errno| io(errno.into()))?;
        }
        return Ok(path);
    }
    if let Some(host_path) = &volume.host_path {
        let path = PathBuf::from(&host_path.path);
        check_host_path(
            &volume.name,
            &path,
            host_path.type_.as_deref().unwrap_or(""),
            allowed,
        )?;
        return Ok(path);
    }
    Err(VolumeError::Unsupported(volume.name.clone()))
}

/// Kubernetes' hostPath `type` checks, after the allow-list (checked on the path with
/// symlinks resolved, so a link cannot lead out of an allowed directory).
fn check_host_path(
    name: &str,
    path: &Path,
    kind: &str,
    allowed: &[PathBuf],
) -> Result<(), VolumeError> {
    let type_error = |message: String| VolumeError::HostPathType {
        name: name.to_owned(),
        message,
    };
    let io = |source| VolumeError::Io {
        name: name.to_owned(),
        source,
    };
    let not_allowed = || VolumeError::HostPathNotAllowed {
        name: name.to_owned(),
        path: path.display().to_string(),
        allowed: allowed.to_vec(),
    };
    // The allow-list is checked on the path with its nearest existing ancestor resolved
    // and the rest (which must be plain names) appended; allowed prefixes resolve too.
    if !path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(not_allowed());
    }
    let mut existing = path;
    while !existing.exists() {
        existing = existing.parent().ok_or_else(not_allowed)?;
    }
    let rest = path.strip_prefix(existing).map_err(|_| not_allowed())?;
    let resolved = existing.canonicalize().map_err(io)?.join(rest);
    let inside = |prefix: &PathBuf| {
        let prefix = prefix.canonicalize().unwrap_or_else(|_| prefix.clone());
        resolved.starts_with(prefix)
    };
    if !allowed.iter().any(inside) {
        return Err(not_allowed());
    }
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => std::fs::create_dir_all(path).map_err(io),
        "FileOrCreate" => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(drop)
                .map_err(io)
        }
        "Directory" if path.is_dir() => Ok(()),
        "File" if path.is_file() => Ok(()),
        "Directory" | "File" | "Socket" | "CharDevice" | "BlockDevice" => {
            use std::os::unix::fs::FileTypeExt;
            let file_type = std::fs::metadata(path).map(|m| m.file_type());
            let ok = match (kind, &file_type) {
                ("Socket", Ok(t)) => t.is_socket(),
                ("CharDevice", Ok(t)) => t.is_char_device(),
                ("BlockDevice", Ok(t)) => t.is_block_device(),
                _ => false,
            };
            if ok {
                Ok(())
            } else {
                Err(type_error(format!(
                    "hostPath type check failed: {} is not a {kind}",
                    path.display()
                )))
            }
        }
        other => Err(type_error(format!("unknown hostPath type {other:?}"))),
    }
}

/// Whether `path` is a mount point (its device differs from its parent's).
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(own), Some(Ok(parent))) = (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    own.dev() != parent.dev()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(volumes: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i", "volumeMounts": [
                {"name": "scratch", "mountPath": "/scratch"},
                {"name": "host", "mountPath": "/host", "readOnly": true},
            ]}], "volumes": volumes},
        }))
        .expect("pod")
    }

    #[test]
    fn empty_dirs_and_allowed_host_paths_become_mounts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let allowed = dir.path().join("shared");
        let pod = pod(serde_json::json!([
            {"name": "scratch", "emptyDir": {}},
            {"name": "host", "hostPath": {"path": allowed.join("data"), "type": "DirectoryOrCreate"}},
        ]));
        let pod_dir = dir.path().join("pod");
        let volumes =
            Volumes::prepare(&pod_dir, &pod, std::slice::from_ref(&allowed)).expect("prepared");
        let container = &pod.spec.as_ref().expect("spec").containers[0];
        let mounts = volumes.mounts(container).expect("mounts");
        assert_eq!(mounts.len(), 2);
        assert!(mounts[0].host_path.is_dir());
        assert_eq!(mounts[0].container_path, PathBuf::from("/scratch"));
        assert!(!mounts[0].read_only);
        assert!(allowed.join("data").is_dir());
        assert!(mounts[1].read_only);
        remove(&pod_dir).expect("removed");
        assert!(!pod_dir.join("volumes").exists());
        remove(&pod_dir).expect("idempotent");
    }

    #[test]
    fn host_paths_outside_the_allow_list_or_through_links_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let allowed = dir.path().join("shared");
        std::fs::create_dir_all(&allowed).expect("mkdir");
        std::os::unix::fs::symlink("/etc", allowed.join("escape")).expect("symlink");
        for path in ["/etc", &format!("{}/escape", allowed.display())] {
            let pod = pod(serde_json::json!([{"name": "host", "hostPath": {"path": path}}]));
            let error = Volumes::prepare(dir.path(), &pod, std::slice::from_ref(&allowed))
                .expect_err("refused");
            assert!(
                matches!(error, VolumeError::HostPathNotAllowed { .. }),
                "{error}"
            );
        }
        let pod = pod(serde_json::json!([
            {"name": "host", "hostPath": {"path": allowed.join("missing"), "type": "Directory"}}
        ]));
        let error = Volumes::prepare(dir.path(), &pod, std::slice::from_ref(&allowed))
            .expect_err("refused");
        assert!(error.to_string().contains("is not a Directory"), "{error}");
    }

    #[test]
    fn a_mount_of_an_undefined_volume_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pod = pod(serde_json::json!([{"name": "scratch", "emptyDir": {}}]));
        let volumes = Volumes::prepare(dir.path(), &pod, &[]).expect("prepared");
        let container = &pod.spec.as_ref().expect("spec").containers[0];
        let error = volumes.mounts(container).expect_err("unknown volume");
        assert!(error.to_string().contains("\"host\""), "{error}");
    }
}
