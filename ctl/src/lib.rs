//! The `skiff` command-line client.
//!
//! - [`Cli`]: the command line (clap).
//! - `commands`: one module per verb (`version`, `validate`, `explain`).
//! - `manifests`: reading `-f FILE|DIR|-` inputs.
//! - `printers`: everything printed for humans.

mod commands;
mod describe;
mod jsonpath;
mod manifests;
mod printers;
mod three_way;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Skiff's kubectl-like client.
#[derive(Debug, Parser)]
#[command(
    name = "skiff",
    version,
    about = "Skiff: a small Kubernetes-style container orchestrator",
    propagate_version = true
)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs `skiff` understands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the client version.
    Version,
    /// Parse, default and validate manifests offline; exit non-zero on any error.
    Validate {
        /// Files, directories (their .yaml, .yml and .json files) or `-` for stdin.
        #[arg(short = 'f', long = "filename", required = true)]
        filenames: Vec<PathBuf>,
        /// Descend into sub-directories of directories given with -f.
        #[arg(short = 'R', long)]
        recursive: bool,
    },
    /// Describe the fields of a resource: `skiff explain deployment.spec.strategy`.
    Explain {
        /// `KIND[.field.field…]`, with any name kubectl accepts (`deploy`, `pods`).
        path: String,
    },
}

/// Runs one command, returning the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Version => commands::version::run(),
        Command::Validate {
            filenames,
            recursive,
        } => commands::validate::run(&filenames, recursive),
        Command::Explain { path } => commands::explain::run(&path),
    }
}
