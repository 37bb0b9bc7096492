//! `skiff images`: the images of a node, read and imported on the node itself (for
//! air-gapped machines, as k3s' `ctr images import`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use skiff_node_agent::runtime::image::{ImageStore, RegistryConfig};

use crate::ImagesCommand;

/// Runs `skiff images …`.
pub(crate) fn run(command: &ImagesCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match command {
            ImagesCommand::Import { files, data_dir } => {
                let store = open(data_dir)?;
                for file in files {
                    let images = store.import_archive(file).await?;
                    for image in images {
                        println!("imported {} ({})", image.reference, short(&image.id));
                    }
                }
            }
            ImagesCommand::List { data_dir } => {
                let store = open(data_dir)?;
                let mut rows = vec![vec![
                    "IMAGE".to_owned(),
                    "IMAGE ID".to_owned(),
                    "SIZE".to_owned(),
                ]];
                for image in store.list() {
                    rows.push(vec![
                        image.reference.clone(),
                        short(&image.id).to_owned(),
                        format!("{:.1}MB", image.size as f64 / 1e6),
                    ]);
                }
                print!("{}", crate::printers::tabulate(&rows));
            }
            ImagesCommand::BuildDemo { output, name } => {
                super::up::write_demo_archive(output, name)?;
                println!("wrote {} ({name})", output.display());
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn open(data_dir: &Path) -> anyhow::Result<ImageStore> {
    Ok(ImageStore::open(
        &data_dir.join("images"),
        RegistryConfig::default(),
    )?)
}

/// The first 12 hex digits of an image ID, as Docker prints it.
fn short(id: &str) -> &str {
    let hex = id.trim_start_matches("sha256:");
    &hex[..hex.len().min(12)]
}

/// The node agent's default data directory.
pub(crate) fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/skiff/node-agent")
}
