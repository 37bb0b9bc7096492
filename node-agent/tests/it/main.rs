//! Integration tests of the node agent against the real kernel and a real local registry.

#![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

mod dns;
mod image;
mod network;
mod probe;
mod proxy;
mod runtime;
