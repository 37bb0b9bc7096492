//! The agent's executable doubles as its helper processes: `__shim` (a container's
//! supervisor) and `__exec` (a process joined into a running container). Each is
//! single-threaded and runs without tokio, because libcontainer clone(2)s its caller.
//!
//! Any binary that embeds the agent (`skiff-node-agent`, `skiff up`) calls
//! [`run_helper_if_requested`] first thing in `main`.

use std::process::ExitCode;

/// `argv[1]` of the container supervisor.
pub const SHIM: &str = "__shim";
/// `argv[1]` of the exec helper.
pub const EXEC: &str = "__exec";

/// Runs the helper named by `argv[1]`, if it names one, and returns its exit code.
pub fn run_helper_if_requested() -> Option<ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1)?;
    let rest = &args[2..];
    match name.as_str() {
        SHIM => Some(super::shim::main(rest)),
        EXEC => Some(super::shim::exec_main(rest)),
        _ => None,
    }
}
