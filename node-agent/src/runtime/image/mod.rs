//! The image store: pulls images from OCI / Docker v2 registries, keeps blobs
//! content-addressed, unpacks each layer once, and answers what a container needs to
//! start: its layers (bottom first) and its image config.
//!
//! Layout under `images/`: `blobs/sha256/<hex>` (verified, fsynced, renamed into
//! place), `layers/sha256/<hex of the layer blob>/` (unpacked into a temp dir, renamed
//! when complete, so a crash never leaves a half layer that looks whole) and
//! `index.json` (references → images, replaced atomically). Concurrent pulls of one
//! reference share a single download.

pub mod import;
pub mod reference;
mod unpack;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// When to pull (`imagePullPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull every time a container starts.
    Always,
    /// Pull only when the image is not on the node.
    IfNotPresent,
    /// Never pull: the image must be on the node.
    Never,
}

impl PullPolicy {
    /// The container's policy, or Kubernetes' default for `image`: `Always` for a
    /// `:latest` or untagged image without a digest, `IfNotPresent` otherwise.
    pub fn from_kubernetes(policy: Option<&str>, image: &str) -> Self {
        match policy {
            Some("Always") => Self::Always,
            Some("Never") => Self::Never,
            Some("IfNotPresent") => Self::IfNotPresent,
            _ => {
                let name = image.rsplit('/').next().unwrap_or(image);
                let tag = name.split_once(':').map(|(_, tag)| tag);
                if image.contains('@') || tag.is_some_and(|t| t != "latest") {
                    Self::IfNotPresent
                } else {
                    Self::Always
                }
            }
        }
    }
}

/// Registries reached over plain HTTP.
#[derive(Clone, Debug, Default)]
pub struct RegistryConfig {
    /// `host:port` of registries spoken to over plain HTTP (Docker's
    /// `insecure-registries`); every other registry is HTTPS.
    pub insecure: Vec<String>,
}

/// Why an image is not available; [`ImageError::reason`] is kubelet's waiting reason.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference does not parse.
    #[error(
        "Failed to apply default image tag {reference:?}: couldn't parse image name {reference:?}: {message}"
    )]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it does not parse.
        message: String,
    },
    /// Policy Never and the image is not on the node.
    #[error("Container image {0:?} is not present with pull policy of Never")]
    NeverPull(String),
    /// The registry refused or failed, or the content did not verify.
    #[error("failed to pull image {reference:?}: {message}")]
    Pull {
        /// The reference.
        reference: String,
        /// Why.
        message: String,
    },
    /// The store on disk failed.
    #[error("image store: {0}")]
    Store(String),
}

impl ImageError {
    /// kubelet's container waiting reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidReference { .. } => "InvalidImageName",
            Self::NeverPull(_) => "ErrImageNeverPull",
            Self::Pull { .. } | Self::Store(_) => "ErrImagePull",
        }
    }
}

/// What garbage collection freed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Images whose references were dropped.
    pub images: usize,
    /// Bytes of blobs and layers deleted (blobs counted by size on disk).
    pub bytes: u64,
}

/// One image in the index.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    id: String,
    repo_digest: String,
    /// Layer blob digests, bottom first.
    layers: Vec<String>,
    config: ImageConfig,
    size: u64,
}

/// `index.json`: references → manifest digest → image.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Index {
    references: BTreeMap<String, String>,
    images: BTreeMap<String, Record>,
}

/// The node's images.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

/// The outcome of a pull in flight, once known.
type PullResult = watch::Receiver<Option<Result<Image, ImageError>>>;

struct Inner {
    dir: PathBuf,
    client: Client,
    index: Mutex<Index>,
    /// Pulls in flight by reference; later callers wait for the first one's result.
    pulls: Mutex<HashMap<String, PullResult>>,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `dir`.
    pub fn open(dir: &Path, registries: RegistryConfig) -> Result<Self, ImageError> {
        let store = |e: std::io::Error| ImageError::Store(format!("{}: {e}", dir.display()));
        for sub in ["blobs/sha256", "layers/sha256", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(store)?;
        }
        // Leftovers of interrupted pulls.
        let _ = std::fs::remove_dir_all(dir.join("tmp"));
        std::fs::create_dir_all(dir.join("tmp")).map_err(store)?;
        let index = match std::fs::read(dir.join("index.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ImageError::Store(format!("index.json is corrupt: {e}")))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Index::default(),
            Err(error) => return Err(store(error)),
        };
        // reqwest (under oci-client) needs a process-wide rustls provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(registries.insecure),
            ..ClientConfig::default()
        });
        Ok(Self {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                client,
                index: Mutex::new(index),
                pulls: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The image for `reference`, pulled if `policy` says so.
    pub async fn ensure(&self, reference: &str, policy: PullPolicy) -> Result<Image, ImageError> {
        let parsed = parse(reference)?;
        let name = parsed.whole();
        if policy != PullPolicy::Always
            && let Some(image) = self.get(&name)
        {
            return Ok(image);
        }
        if policy == PullPolicy::Never {
            return Err(ImageError::NeverPull(reference.to_owned()));
        }
        // One pull per reference at a time.
        let (sender, waiting) = {
            let mut pulls = self.inner.pulls.lock().map_err(|_| poisoned())?;
            match pulls.get(&name) {
                Some(receiver) => (None, Some(receiver.clone())),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    pulls.insert(name.clone(), receiver);
                    (Some(sender), None)
                }
            }
        };
        if let Some(mut receiver) = waiting {
            let result = receiver
                .wait_for(Option::is_some)
                .await
                .map(|r| r.clone())
                .map_err(|_| ImageError::Store("a concurrent pull was abandoned".into()))?;
            return result.unwrap_or_else(|| Err(ImageError::Store("no pull result".into())));
        }
        let result = self.pull(reference, &parsed).await;
        if let Ok(mut pulls) = self.inner.pulls.lock() {
            pulls.remove(&name);
        }
        if let Some(sender) = sender {
            let _ = sender.send(Some(result.clone()));
        }
        result
    }

    /// The local image for `reference`, if present and intact. A miss re-reads
    /// `index.json`, so images imported meanwhile by another process (`skiff images
    /// import` on a running node) are found.
    pub fn get(&self, reference: &str) -> Option<Image> {
        let name = parse(reference).ok()?.whole();
        let mut index = self.inner.index.lock().ok()?;
        if !index.references.contains_key(&name)
            && let Ok(bytes) = std::fs::read(self.inner.dir.join("index.json"))
            && let Ok(on_disk) = serde_json::from_slice::<Index>(&bytes)
        {
            index.images.extend(on_disk.images);
            index.references.extend(on_disk.references);
        }
        let digest = index.references.get(&name)?;
        let record = index.images.get(digest)?;
        let image = self.image(&name, record);
        image.layers.iter().all(|l| l.is_dir()).then_some(image)
    }

    /// Every image on the node (one per reference).
    pub fn list(&self) -> Vec<Image> {
        let Ok(index) = self.inner.index.lock() else {
            return Vec::new();
        };
        index
            .references
            .iter()
            .filter_map(|(name, digest)| Some(self.image(name, index.images.get(digest)?)))
            .collect()
    }

    /// Drops every image whose ID is not in `in_use`, then deletes the blobs and
    /// layers no remaining image needs.
    pub async fn remove_unused(&self, in_use: &HashSet<String>) -> Result<GcReport, ImageError> {
        let (report, keep) = {
            let mut index = self.inner.index.lock().map_err(|_| poisoned())?;
            let unused: Vec<String> = index
                .images
                .iter()
                .filter(|(_, record)| !in_use.contains(&record.id))
                .map(|(digest, _)| digest.clone())
                .collect();
            for digest in &unused {
                index.images.remove(digest);
            }
            let remaining: HashSet<String> = index.images.keys().cloned().collect();
            index
                .references
                .retain(|_, digest| remaining.contains(digest));
            self.save(&index)?;
            let keep: HashSet<String> = index
                .images
                .values()
                .flat_map(|r| r.layers.iter().cloned().chain([r.id.clone()]))
                .collect();
            (
                GcReport {
                    images: unused.len(),
                    bytes: 0,
                },
                keep,
            )
        };
        let dir = self.inner.dir.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            let mut freed = 0;
            for kind in ["blobs/sha256", "layers/sha256"] {
                let Ok(entries) = std::fs::read_dir(dir.join(kind)) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
                    if keep.contains(&digest) {
                        continue;
                    }
                    let path = entry.path();
                    if path.is_dir() {
                        freed += dir_size(&path);
                        let _ = std::fs::remove_dir_all(&path);
                    } else {
                        freed += entry.metadata().map(|m| m.len()).unwrap_or(0);
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            freed
        })
        .await
        .map_err(|e| ImageError::Store(e.to_string()))?;
        Ok(GcReport { bytes, ..report })
    }

    /// Pulls `reference`: manifest and config, then every layer blob not yet stored,
    /// verified, then unpacked once.
    async fn pull(&self, original: &str, reference: &Reference) -> Result<Image, ImageError> {
        let failed = |message: String| ImageError::Pull {
            reference: original.to_owned(),
            message,
        };
        let started = std::time::Instant::now();
        let (manifest, manifest_digest, config) = self
            .inner
            .client
            .pull_manifest_and_config(reference, &RegistryAuth::Anonymous)
            .await
            .map_err(|e| failed(e.to_string()))?;
        if let Some(wanted) = reference.digest()
            && wanted != manifest_digest
        {
            return Err(failed(format!(
                "manifest digest {manifest_digest} does not match the requested {wanted}"
            )));
        }
        let config_digest = manifest.config.digest.clone();
        if sha256(config.as_bytes()) != config_digest {
            return Err(failed(format!(
                "config blob does not match its digest {config_digest}"
            )));
        }
        self.store_blob(&config_digest, config.as_bytes())
            .await
            .map_err(|e| ImageError::Store(e.to_string()))?;
        let mut size = 0;
        for layer in &manifest.layers {
            size += u64::try_from(layer.size).unwrap_or(0);
            self.fetch_layer(reference, layer).await.map_err(failed)?;
        }
        let record = Record {
            id: config_digest,
            repo_digest: format!(
                "{}/{}@{manifest_digest}",
                reference.resolve_registry(),
                reference.repository()
            ),
            layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
            config: image_config(&config).map_err(failed)?,
            size,
        };
        let name = reference.whole();
        let image = self.image(&name, &record);
        {
            let mut index = self.inner.index.lock().map_err(|_| poisoned())?;
            index
                .references
                .insert(name.clone(), manifest_digest.clone());
            index.images.insert(manifest_digest, record);
            self.save(&index)?;
        }
        tracing::info!(image = %name, elapsed = ?started.elapsed(), "pulled");
        Ok(image)
    }

    /// Downloads (unless stored) and unpacks (unless unpacked) one layer.
    async fn fetch_layer(
        &self,
        reference: &Reference,
        layer: &oci_client::manifest::OciDescriptor,
    ) -> Result<(), String> {
        let hex = digest_hex(&layer.digest)?;
        let unpacked = self.inner.dir.join("layers/sha256").join(&hex);
        if unpacked.is_dir() {
            return Ok(());
        }
        let blob = self.inner.dir.join("blobs/sha256").join(&hex);
        if !blob.is_file() || !verify_file(&blob, &layer.digest).await {
            let temp = self.temp_path();
            let file = tokio::fs::File::create(&temp)
                .await
                .map_err(|e| e.to_string())?;
            let pulled = self.inner.client.pull_blob(reference, layer, file).await;
            if let Err(error) = pulled {
                let _ = tokio::fs::remove_file(&temp).await;
                return Err(format!("layer {}: {error}", layer.digest));
            }
            if !verify_file(&temp, &layer.digest).await {
                let _ = tokio::fs::remove_file(&temp).await;
                return Err(format!("layer {} does not match its digest", layer.digest));
            }
            sync_and_rename(&temp, &blob)
                .await
                .map_err(|e| e.to_string())?;
        }
        let target = self.temp_path();
        let media_type = layer.media_type.clone();
        let (source, work) = (blob.clone(), target.clone());
        tokio::task::spawn_blocking(move || unpack::unpack(&source, &media_type, &work))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(&target);
                format!("unpacking layer {}: {e}", layer.digest)
            })?;
        match std::fs::rename(&target, &unpacked) {
            Ok(()) => Ok(()),
            // Another pull of an image sharing this layer got there first.
            Err(_) if unpacked.is_dir() => {
                let _ = std::fs::remove_dir_all(&target);
                Ok(())
            }
            Err(error) => Err(error.to_string()),
        }
    }

    async fn store_blob(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        let hex = digest_hex(digest).map_err(std::io::Error::other)?;
        let path = self.inner.dir.join("blobs/sha256").join(hex);
        if path.is_file() {
            return Ok(());
        }
        let temp = self.temp_path();
        tokio::fs::write(&temp, bytes).await?;
        sync_and_rename(&temp, &path).await
    }

    fn image(&self, name: &str, record: &Record) -> Image {
        Image {
            reference: name.to_owned(),
            id: record.id.clone(),
            repo_digest: record.repo_digest.clone(),
            layers: record
                .layers
                .iter()
                .map(|d| {
                    self.inner
                        .dir
                        .join("layers/sha256")
                        .join(d.trim_start_matches("sha256:"))
                })
                .collect(),
            config: record.config.clone(),
            size: record.size,
        }
    }

    fn temp_path(&self) -> PathBuf {
        self.inner
            .dir
            .join("tmp")
            .join(format!("{:016x}", rand::random::<u64>()))
    }

    /// Replaces index.json atomically.
    fn save(&self, index: &Index) -> Result<(), ImageError> {
        let path = self.inner.dir.join("index.json");
        crate::runtime::container::write_durably(&path, index)
            .map_err(|e| ImageError::Store(format!("writing index.json: {e}")))
    }
}

/// Parses a reference like Docker does (`busybox` → `docker.io/library/busybox:latest`).
fn parse(reference: &str) -> Result<Reference, ImageError> {
    reference::parse(reference).map_err(|message| ImageError::InvalidReference {
        reference: reference.to_owned(),
        message,
    })
}

/// The run-time config from an image config blob.
fn image_config(json: &str) -> Result<ImageConfig, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("image config: {e}"))?;
    let config = &value["config"];
    let strings = |key: &str| -> Vec<String> {
        config[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let text = |key: &str| {
        config[key]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Ok(ImageConfig {
        entrypoint: strings("Entrypoint"),
        cmd: strings("Cmd"),
        env: strings("Env"),
        working_dir: text("WorkingDir"),
        user: text("User"),
    })
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a `sha256:` digest (other algorithms are refused).
fn digest_hex(digest: &str) -> Result<String, String> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(hex.to_owned())
        }
        _ => Err(format!("unsupported digest {digest:?}")),
    }
}

/// Whether the file's sha256 is `digest`.
async fn verify_file(path: &Path, digest: &str) -> bool {
    let (path, digest) = (path.to_owned(), digest.to_owned());
    tokio::task::spawn_blocking(move || {
        let Ok(mut file) = std::fs::File::open(&path) else {
            return false;
        };
        let mut hasher = Sha256::new();
        if std::io::copy(&mut file, &mut hasher).is_err() {
            return false;
        }
        format!("sha256:{}", hex::encode(hasher.finalize())) == digest
    })
    .await
    .unwrap_or(false)
}

async fn sync_and_rename(temp: &Path, path: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(temp).await?.sync_all().await?;
    tokio::fs::rename(temp, path).await
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_size(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}

fn poisoned() -> ImageError {
    ImageError::Store("the image index lock is poisoned".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalise_like_docker() {
        assert_eq!(
            parse("busybox").expect("ok").whole(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            parse("127.0.0.1:5055/skiff/httpd:1").expect("ok").whole(),
            "127.0.0.1:5055/skiff/httpd:1"
        );
        let digest = format!("registry.example/app@sha256:{}", "a".repeat(64));
        assert_eq!(
            parse(&digest).expect("ok").digest(),
            Some(format!("sha256:{}", "a".repeat(64)).as_str())
        );
        for bad in ["", " busybox", "UPPER/case", "a:b:c", "x@sha256:short"] {
            let error = parse(bad).expect_err(bad);
            assert_eq!(error.reason(), "InvalidImageName", "{bad}");
        }
    }

    #[test]
    fn pull_policy_defaults_follow_kubernetes() {
        use PullPolicy::*;
        assert_eq!(PullPolicy::from_kubernetes(None, "busybox"), Always);
        assert_eq!(PullPolicy::from_kubernetes(None, "busybox:latest"), Always);
        assert_eq!(
            PullPolicy::from_kubernetes(None, "busybox:1.36"),
            IfNotPresent
        );
        assert_eq!(
            PullPolicy::from_kubernetes(None, "127.0.0.1:5055/skiff/httpd"),
            Always
        );
        assert_eq!(
            PullPolicy::from_kubernetes(None, "127.0.0.1:5055/skiff/httpd:1"),
            IfNotPresent
        );
        assert_eq!(
            PullPolicy::from_kubernetes(None, &format!("b@sha256:{}", "a".repeat(64))),
            IfNotPresent
        );
        assert_eq!(PullPolicy::from_kubernetes(Some("Never"), "busybox"), Never);
        assert_eq!(
            PullPolicy::from_kubernetes(Some("Always"), "busybox:1"),
            Always
        );
    }

    #[test]
    fn image_configs_are_read_from_the_config_blob() {
        let config = image_config(
            r#"{"config": {"Entrypoint": ["/bin/httpd"], "Cmd": ["-f"], "Env": ["PATH=/bin"], "WorkingDir": "/www", "User": "1000"}}"#,
        )
        .expect("config");
        assert_eq!(config.entrypoint, ["/bin/httpd"]);
        assert_eq!(config.working_dir.as_deref(), Some("/www"));
        assert_eq!(config.user.as_deref(), Some("1000"));
        assert_eq!(image_config("{}").expect("empty"), ImageConfig::default());
        assert!(image_config("not json").is_err());
    }

    #[test]
    fn digests_must_be_sha256_hex() {
        assert!(digest_hex(&format!("sha256:{}", "0".repeat(64))).is_ok());
        assert!(digest_hex("sha256:../../etc").is_err());
        assert!(digest_hex(&format!("sha512:{}", "0".repeat(128))).is_err());
    }
}
