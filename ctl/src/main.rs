//! `skiff`: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = skiff_ctl::Cli::parse();
    match skiff_ctl::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("{}", skiff_ctl::report(&error));
            ExitCode::FAILURE
        }
    }
}
