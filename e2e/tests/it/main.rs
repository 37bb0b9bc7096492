//! End-to-end tests: the real binaries (`skiff-control-plane`, `skiff`) driven as a
//! user drives them, with the real `/usr/bin/kubectl` beside `skiff`.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers fail the test by panicking"
)]

mod agent;
mod api;
mod cluster;
mod exec;
mod harness;
