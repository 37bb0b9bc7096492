//! The image store: pulls images from OCI / Docker v2 registries, keeps blobs
//! content-addressed, unpacks each layer once, and answers what a container needs to
//! start: its layers (bottom first) and its image config.
//!
//! (Being written: `ImageStore`, `PullPolicy`, `RegistryConfig`, `ImageError`.)

use std::path::PathBuf;

/// A pulled image, ready to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The reference as normalised (`docker.io/library/busybox:latest`,
    /// `127.0.0.1:5055/skiff/httpd:1`, or with `@sha256:…`).
    pub reference: String,
    /// `sha256:<hex>` of the image config: the image ID (`containerStatuses[].imageID`
    /// shows it).
    pub id: String,
    /// `<repository>@sha256:<manifest digest>`.
    pub repo_digest: String,
    /// Unpacked layer directories, bottom layer first (overlayfs lowerdirs in reverse).
    pub layers: Vec<PathBuf>,
    /// What the image says about how to run it.
    pub config: ImageConfig,
    /// Bytes of the compressed layers.
    pub size: u64,
}

/// The run-time part of an OCI image config (`config` in the image config JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, as `NAME=value`.
    pub env: Vec<String>,
    /// `WorkingDir`, if set.
    pub working_dir: Option<String>,
    /// `User` (`uid`, `uid:gid`, or names resolved against the image's /etc/passwd).
    pub user: Option<String>,
}
