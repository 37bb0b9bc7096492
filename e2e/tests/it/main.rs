//! End-to-end tests: the real binaries (`skiff-control-plane`, `skiff`) driven as a
//! user drives them, with the real `/usr/bin/kubectl` beside `skiff`. Tests that run
//! node agents run each in its own network namespace on a test fabric
//! (`harness::Cluster`); the clients reach the control plane through a port forwarded
//! from the host's loopback.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers fail the test by panicking"
)]

mod agent;
mod api;
mod cluster;
mod exec;
mod ha;
mod harness;
mod network;
