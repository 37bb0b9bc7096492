//! `skiff version`.

use std::process::ExitCode;

/// Prints the client version in kubectl's shape.
pub(crate) fn run() -> anyhow::Result<ExitCode> {
    println!("Client Version: v{}", env!("CARGO_PKG_VERSION"));
    Ok(ExitCode::SUCCESS)
}
