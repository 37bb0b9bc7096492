//! Multi-process store tests: real `skiff-control-plane` processes on 127.0.0.1,
//! killed with SIGKILL and restarted from their data directories.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers fail the test by panicking"
)]

mod admin;
mod api;
mod cluster;
mod faults;
mod security;
