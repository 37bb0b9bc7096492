//! `skiff scale TYPE/NAME --replicas=N`: a merge patch on the `/scale` subresource.

use std::process::ExitCode;

use anyhow::bail;
use serde_json::json;
use skiff_api::kind;

use super::{Context, finish};
use crate::ScaleArgs;
use crate::client::{PatchType, ResourcePath};
use crate::resources;

/// Runs `skiff scale`.
pub(crate) async fn run(ctx: &Context, args: ScaleArgs) -> anyhow::Result<ExitCode> {
    if args.replicas < 0 {
        bail!(
            "The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0"
        );
    }
    let selections = resources::parse(&args.resources)?;
    let mut errors = Vec::new();
    for selection in &selections {
        let kind = selection.kind;
        if kind != &kind::DEPLOYMENT && kind != &kind::REPLICA_SET {
            bail!("cannot scale {}: it has no scale subresource", kind.plural);
        }
        if selection.names.is_empty() {
            bail!("resource(s) were provided, but no name was specified");
        }
        for name in &selection.names {
            let path = ResourcePath::object(kind, Some(&ctx.namespace), name);
            let patch = json!({"spec": {"replicas": args.replicas}});
            let scaled = async {
                // kubectl reads the object first: a missing one fails before the patch.
                ctx.client.get(&path.to_string(), &[]).await?;
                let scale = path.clone().subresource("scale");
                ctx.client
                    .patch(&scale.to_string(), &[], PatchType::Merge, &patch)
                    .await?;
                anyhow::Ok(())
            };
            match scaled.await {
                Ok(()) => println!("{}/{name} scaled", kind.qualified_singular()),
                Err(error) => errors.push(error),
            }
        }
    }
    Ok(finish(&errors))
}
