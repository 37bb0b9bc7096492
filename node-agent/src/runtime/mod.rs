//! The container runtime: images, pod sandboxes, containers and their supervisors.
//!
//! On-disk layout under the agent's data directory (`Paths`):
//! - `images/`: the image store ([`image`]): content-addressed blobs, unpacked layers,
//!   an index of references.
//! - `pods/<pod-uid>/`: a pod's sandbox ([`sandbox`]: the bind-mounted net, ipc and uts
//!   namespaces) and its volumes (`volumes/<name>/` for emptyDir).
//! - `containers/<id>/`: one container ([`container`]): `labels.json` (who it belongs
//!   to), `config.json` + `rootfs/` (the OCI bundle; rootfs is an overlayfs of the image
//!   layers and `upper/`), `state.json` and `exit.json` (written by its supervisor,
//!   [`shim`]), `log` (CRI log format, [`logs`]).
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
