//! `skiff create -f FILE` and `skiff create namespace NAME`.

use std::process::ExitCode;

use anyhow::bail;
use serde_json::json;
use skiff_api::kind;

use super::{Context, finish, placed, read_manifests};
use crate::client::ResourcePath;
use crate::printers;
use crate::{CreateArgs, CreateCommand};

/// kubectl's field manager for `create`.
const MANAGER: &str = "kubectl-create";

/// Runs `skiff create`.
pub(crate) async fn run(ctx: &Context, args: CreateArgs) -> anyhow::Result<ExitCode> {
    let query = [("fieldManager", MANAGER), ("fieldValidation", "Strict")];
    if let Some(CreateCommand::Namespace { name }) = args.command {
        let namespace =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        let path = ResourcePath::collection(&kind::NAMESPACE, None);
        ctx.client
            .create(&path.to_string(), &query, &namespace)
            .await?;
        println!("namespace/{name} created");
        return Ok(ExitCode::SUCCESS);
    }
    if args.filenames.is_empty() {
        bail!("must specify one of -f and -k");
    }
    let objects = read_manifests(&args.filenames, args.recursive, "create").await?;
    let mut errors = Vec::new();
    for object in objects {
        let created = async {
            let (value, namespace) = placed(ctx, &object)?;
            let path = ResourcePath::collection(object.kind, namespace.as_deref());
            ctx.client
                .create(&path.to_string(), &query, &value)
                .await
                .map_err(|e| e.with_source("creating", &object.source))?;
            anyhow::Ok(format!(
                "{} created",
                printers::value_reference(object.kind, &value)
            ))
        };
        match created.await {
            Ok(line) => println!("{line}"),
            Err(error) => errors.push(error),
        }
    }
    Ok(finish(&errors))
}
