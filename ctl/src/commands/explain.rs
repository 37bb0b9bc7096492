//! `skiff explain KIND[.field…]`, from the schemas compiled into `skiff-api`.

use std::process::ExitCode;

use anyhow::{Context, bail};
use skiff_api::{kind, schema};

use crate::printers;

/// Explains a kind or one of its fields.
pub(crate) fn run(path: &str) -> anyhow::Result<ExitCode> {
    let mut segments = path.split('.');
    let kind_name = segments.next().unwrap_or_default();
    let Some(kind) = kind::by_name(kind_name) else {
        bail!("the server doesn't have a resource type {kind_name:?}");
    };
    let fields: Vec<&str> = segments.collect();
    let explanation =
        schema::explain(kind, &fields).with_context(|| format!("cannot explain {path:?}"))?;
    print!("{}", printers::explanation(&explanation));
    Ok(ExitCode::SUCCESS)
}
