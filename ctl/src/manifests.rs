//! Reading `-f` inputs: files, directories of manifests, and standard input.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// One input's bytes and where they came from.
pub(crate) struct Source {
    /// The file path, or `None` for standard input and URLs.
    pub path: Option<PathBuf>,
    /// The URL it was fetched from.
    pub url: Option<String>,
    /// The raw content.
    pub content: Vec<u8>,
}

impl Source {
    /// A name for messages: the path, the URL, or `<stdin>`.
    pub fn name(&self) -> String {
        match (&self.path, &self.url) {
            (Some(path), _) => path.display().to_string(),
            (None, Some(url)) => url.clone(),
            (None, None) => "<stdin>".to_owned(),
        }
    }
}

/// Extensions kubectl reads from directories.
const MANIFEST_EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// Reads every `-f` argument: `-` is stdin, a directory contributes its manifest files
/// in name order (descending only with `recursive`), anything else is read as a file.
pub(crate) fn read_sources(filenames: &[PathBuf], recursive: bool) -> anyhow::Result<Vec<Source>> {
    let mut sources = Vec::new();
    for filename in filenames {
        if filename.as_os_str() == "-" {
            let mut content = Vec::new();
            std::io::stdin()
                .read_to_end(&mut content)
                .context("failed to read standard input")?;
            sources.push(Source {
                path: None,
                url: None,
                content,
            });
        } else if filename.is_dir() {
            let mut files = Vec::new();
            collect_directory(filename, recursive, &mut files)?;
            if files.is_empty() {
                bail!(
                    "no .yaml, .yml or .json files in directory {}",
                    filename.display()
                );
            }
            for path in files {
                sources.push(read_file(path)?);
            }
        } else {
            sources.push(read_file(filename.clone())?);
        }
    }
    Ok(sources)
}

/// Reads `-f` arguments that may also be `http://` or `https://` URLs, fetched as
/// kubectl does (one GET, any 2xx body).
pub(crate) async fn read_inputs(
    filenames: &[String],
    recursive: bool,
) -> anyhow::Result<Vec<Source>> {
    let mut sources = Vec::new();
    for filename in filenames {
        if filename.starts_with("http://") || filename.starts_with("https://") {
            sources.push(fetch(filename).await?);
        } else {
            sources.extend(read_sources(&[PathBuf::from(filename)], recursive)?);
        }
    }
    Ok(sources)
}

async fn fetch(url: &str) -> anyhow::Result<Source> {
    // reqwest is built without a default crypto provider; installing fails only when
    // one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .user_agent(concat!("skiff/v", env!("CARGO_PKG_VERSION")))
        .build()
        .context("failed to build the HTTP client")?;
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("unable to read URL {url:?}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("unable to read URL {url:?}, server reported {status}");
    }
    let content = response
        .bytes()
        .await
        .with_context(|| format!("unable to read URL {url:?}"))?;
    Ok(Source {
        path: None,
        url: Some(url.to_owned()),
        content: content.to_vec(),
    })
}

fn read_file(path: PathBuf) -> anyhow::Result<Source> {
    let content =
        std::fs::read(&path).with_context(|| format!("failed to read {}", path.display()))?;
    Ok(Source {
        path: Some(path),
        url: None,
        content,
    })
}

fn collect_directory(dir: &Path, recursive: bool, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("failed to read directory {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("failed to read directory {}", dir.display()))?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if recursive {
                collect_directory(&path, recursive, files)?;
            }
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| MANIFEST_EXTENSIONS.contains(&e))
        {
            files.push(path);
        }
    }
    Ok(())
}
