//! `skiff`: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // `skiff up` runs a node agent, whose container supervisors, exec and sandbox
    // helpers are this same executable.
    if let Some(code) = skiff_node_agent::runtime::helper::run_helper_if_requested() {
        return code;
    }
    let cli = skiff_ctl::Cli::parse();
    match skiff_ctl::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("{}", skiff_ctl::report(&error));
            ExitCode::FAILURE
        }
    }
}
