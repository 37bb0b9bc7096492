//! Importing images from archives, for nodes without a registry (k3s' `ctr images
//! import`): an OCI image layout in a tar (`skopeo copy … oci-archive:F:NAME`) or a
//! `docker save` tar. Every blob is verified against its digest, stored
//! content-addressed and its layers unpacked, exactly as a pull does.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Image, ImageError, ImageStore, Record, digest_hex, image_config, parse, sha256};

/// One image found in an archive, ready to store.
struct Found {
    /// The full reference it is tagged with.
    name: String,
    /// The manifest digest (for OCI layouts) or the config digest (docker archives).
    manifest_digest: String,
    /// The config blob.
    config: Vec<u8>,
    /// Layer blobs (paths in the extracted archive), media types and digests, bottom
    /// first.
    layers: Vec<(PathBuf, String, String)>,
}

impl ImageStore {
    /// Imports every tagged image of the archive at `path`; returns them.
    pub async fn import_archive(&self, path: &Path) -> Result<Vec<Image>, ImageError> {
        let store_error = |message: String| ImageError::Store(message);
        let work = self.temp_path();
        let (archive, dir) = (path.to_owned(), work.clone());
        let found = tokio::task::spawn_blocking(move || read_archive(&archive, &dir))
            .await
            .map_err(|e| store_error(e.to_string()))?;
        let result = match found {
            Ok(found) => self.store_found(found).await,
            Err(message) => Err(store_error(format!("{}: {message}", path.display()))),
        };
        let _ = tokio::fs::remove_dir_all(&work).await;
        result
    }

    /// Stores the blobs and layers of `found` and indexes the images.
    async fn store_found(&self, found: Vec<Found>) -> Result<Vec<Image>, ImageError> {
        let store_error = |message: String| ImageError::Store(message);
        let mut images = Vec::new();
        for image in found {
            let config_digest = sha256(&image.config);
            self.store_blob(&config_digest, &image.config)
                .await
                .map_err(|e| store_error(e.to_string()))?;
            let config_text = String::from_utf8_lossy(&image.config).into_owned();
            let mut size = 0;
            for (blob, media_type, digest) in &image.layers {
                size += std::fs::metadata(blob).map(|m| m.len()).unwrap_or(0);
                self.store_layer(blob, media_type, digest)
                    .await
                    .map_err(store_error)?;
            }
            let reference = parse(&image.name)?;
            let name = reference.whole();
            let record = Record {
                id: config_digest,
                repo_digest: format!(
                    "{}/{}@{}",
                    reference.resolve_registry(),
                    reference.repository(),
                    image.manifest_digest
                ),
                layers: image.layers.iter().map(|(_, _, d)| d.clone()).collect(),
                config: image_config(&config_text).map_err(store_error)?,
                size,
            };
            images.push(self.image(&name, &record));
            let mut index = self.inner.index.lock().map_err(|_| super::poisoned())?;
            index
                .references
                .insert(name.clone(), image.manifest_digest.clone());
            index.images.insert(image.manifest_digest, record);
            self.save(&index)?;
            tracing::info!(image = %name, "imported");
        }
        Ok(images)
    }

    /// Verifies one layer blob, keeps it and unpacks it (unless already unpacked).
    async fn store_layer(&self, blob: &Path, media_type: &str, digest: &str) -> Result<(), String> {
        let hex = digest_hex(digest)?;
        if !super::verify_file(blob, digest).await {
            return Err(format!("layer {digest} does not match its digest"));
        }
        let stored = self.inner.dir.join("blobs/sha256").join(&hex);
        if !stored.is_file() {
            super::sync_and_rename(blob, &stored)
                .await
                .map_err(|e| e.to_string())?;
        }
        let unpacked = self.inner.dir.join("layers/sha256").join(&hex);
        if unpacked.is_dir() {
            return Ok(());
        }
        let target = self.temp_path();
        let (source, work, media_type) = (stored.clone(), target.clone(), media_type.to_owned());
        tokio::task::spawn_blocking(move || super::unpack::unpack(&source, &media_type, &work))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(&target);
                format!("unpacking layer {digest}: {e}")
            })?;
        match std::fs::rename(&target, &unpacked) {
            Err(_) if unpacked.is_dir() => {
                let _ = std::fs::remove_dir_all(&target);
                Ok(())
            }
            other => other.map_err(|e| e.to_string()),
        }
    }
}

/// Extracts the archive into `dir` and finds its images.
fn read_archive(archive: &Path, dir: &Path) -> Result<Vec<Found>, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let file = std::fs::File::open(archive).map_err(|e| e.to_string())?;
    let mut tar = tar::Archive::new(file);
    for entry in tar.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        // `unpack_in` refuses entries that would land outside `dir`.
        entry.unpack_in(dir).map_err(|e| e.to_string())?;
    }
    if dir.join("index.json").is_file() {
        read_oci_layout(dir)
    } else if dir.join("manifest.json").is_file() {
        read_docker_archive(dir)
    } else {
        Err(
            "neither an OCI image layout (index.json) nor a docker save archive (manifest.json)"
                .into(),
        )
    }
}

fn read_json(path: &Path) -> Result<Value, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The blob file of `digest` in an OCI layout.
fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf, String> {
    Ok(dir.join("blobs/sha256").join(digest_hex(digest)?))
}

/// Reads a blob and checks it against its digest.
fn verified_blob(dir: &Path, digest: &str) -> Result<Vec<u8>, String> {
    let bytes =
        std::fs::read(blob_path(dir, digest)?).map_err(|e| format!("blob {digest}: {e}"))?;
    if sha256(&bytes) != digest {
        return Err(format!("blob {digest} does not match its digest"));
    }
    Ok(bytes)
}

/// The images of an OCI image layout: each manifest of `index.json` named by its
/// `io.containerd.image.name` or `org.opencontainers.image.ref.name` annotation.
fn read_oci_layout(dir: &Path) -> Result<Vec<Found>, String> {
    let index = read_json(&dir.join("index.json"))?;
    let mut found = Vec::new();
    for descriptor in index["manifests"].as_array().into_iter().flatten() {
        let annotations = &descriptor["annotations"];
        let Some(name) = annotations["io.containerd.image.name"]
            .as_str()
            .or_else(|| annotations["org.opencontainers.image.ref.name"].as_str())
        else {
            continue;
        };
        if !name.contains('/') && !name.contains(':') {
            return Err(format!(
                "the image named {name:?} has no repository; name it in full (e.g. skopeo copy … oci-archive:FILE:example.com/app:1)"
            ));
        }
        let digest = descriptor["digest"]
            .as_str()
            .ok_or("a manifest without a digest")?;
        let manifest: Value = serde_json::from_slice(&verified_blob(dir, digest)?)
            .map_err(|e| format!("manifest {digest}: {e}"))?;
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .ok_or_else(|| format!("manifest {digest} has no config"))?;
        let config = verified_blob(dir, config_digest)?;
        let mut layers = Vec::new();
        for layer in manifest["layers"].as_array().into_iter().flatten() {
            let layer_digest = layer["digest"].as_str().ok_or("a layer without a digest")?;
            let media_type = layer["mediaType"]
                .as_str()
                .unwrap_or("application/vnd.oci.image.layer.v1.tar")
                .to_owned();
            layers.push((
                blob_path(dir, layer_digest)?,
                media_type,
                layer_digest.to_owned(),
            ));
        }
        found.push(Found {
            name: name.to_owned(),
            manifest_digest: digest.to_owned(),
            config,
            layers,
        });
    }
    if found.is_empty() {
        return Err("the OCI layout names no image (no ref.name annotation)".into());
    }
    Ok(found)
}

/// The images of a `docker save` archive: `manifest.json` lists config, layers and
/// `RepoTags`.
fn read_docker_archive(dir: &Path) -> Result<Vec<Found>, String> {
    let manifest = read_json(&dir.join("manifest.json"))?;
    let mut found = Vec::new();
    for entry in manifest.as_array().into_iter().flatten() {
        let inside = |key: &str| -> Result<PathBuf, String> {
            let relative = entry[key]
                .as_str()
                .ok_or_else(|| format!("manifest.json: no {key}"))?;
            if Path::new(relative)
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(format!("manifest.json: bad path {relative:?}"));
            }
            Ok(dir.join(relative))
        };
        let config = std::fs::read(inside("Config")?).map_err(|e| format!("config: {e}"))?;
        let config_digest = sha256(&config);
        let mut layers = Vec::new();
        for layer in entry["Layers"].as_array().into_iter().flatten() {
            let relative = layer
                .as_str()
                .ok_or("manifest.json: a layer is not a path")?;
            if Path::new(relative)
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(format!("manifest.json: bad layer path {relative:?}"));
            }
            let path = dir.join(relative);
            let bytes = std::fs::read(&path).map_err(|e| format!("{relative}: {e}"))?;
            let media_type = if bytes.starts_with(&[0x1f, 0x8b]) {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            } else {
                "application/vnd.oci.image.layer.v1.tar"
            };
            layers.push((path, media_type.to_owned(), sha256(&bytes)));
        }
        for tag in entry["RepoTags"].as_array().into_iter().flatten() {
            let Some(name) = tag.as_str() else { continue };
            found.push(Found {
                name: name.to_owned(),
                manifest_digest: config_digest.clone(),
                config: config.clone(),
                layers: layers.clone(),
            });
        }
    }
    if found.is_empty() {
        return Err("the archive has no tagged image (RepoTags)".into());
    }
    Ok(found)
}

/// Writes an OCI archive (a tar of an OCI image layout) holding one image named
/// `name`: one uncompressed layer with `files` (path in the image → contents, mode)
/// and `symlinks` (path → target), and `config` as the image's run-time config.
pub fn write_archive(
    path: &Path,
    name: &str,
    files: &[(&str, Vec<u8>, u32)],
    symlinks: &[(String, String)],
    config: &super::ImageConfig,
) -> std::io::Result<()> {
    let mut layer = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = files
        .iter()
        .map(|(p, _, _)| *p)
        .chain(symlinks.iter().map(|(p, _)| p.as_str()))
        .flat_map(|file| {
            Path::new(file)
                .ancestors()
                .skip(1)
                .filter(|d| !d.as_os_str().is_empty())
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    dirs.dedup();
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        let mut header = header();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        layer.append_data(&mut header, format!("{dir}/"), std::io::empty())?;
    }
    for (file, contents, mode) in files {
        let mut header = header();
        header.set_mode(*mode);
        header.set_size(contents.len() as u64);
        layer.append_data(&mut header, file, contents.as_slice())?;
    }
    for (link, target) in symlinks {
        let mut header = header();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        layer.append_link(&mut header, link, target)?;
    }
    let layer = layer.into_inner()?;
    let layer_digest = sha256(&layer);
    let config_json = serde_json::json!({
        "architecture": match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", other => other },
        "os": "linux",
        "config": {
            "Entrypoint": config.entrypoint, "Cmd": config.cmd, "Env": config.env,
            "WorkingDir": config.working_dir.clone().unwrap_or_default(),
            "User": config.user.clone().unwrap_or_default(),
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    })
    .to_string()
    .into_bytes();
    let config_digest = sha256(&config_json);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_json.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    let manifest_digest = sha256(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
            "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": name}}],
    })
    .to_string()
    .into_bytes();
    let mut archive = tar::Builder::new(std::fs::File::create(path)?);
    let mut add = |name: String, bytes: &[u8]| {
        let mut header = header();
        header.set_mode(0o644);
        header.set_size(bytes.len() as u64);
        archive.append_data(&mut header, name, bytes)
    };
    add(
        "oci-layout".to_owned(),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    add("index.json".to_owned(), &index)?;
    for (digest, bytes) in [
        (&manifest_digest, &manifest),
        (&config_digest, &config_json),
        (&layer_digest, &layer),
    ] {
        add(
            format!("blobs/sha256/{}", digest.trim_start_matches("sha256:")),
            bytes,
        )?;
    }
    archive.finish()
}

/// A tar header owned by root with a fixed time (empty numeric fields do not parse).
fn header() -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}
