//! Skiff's gRPC schemas and the tonic/prost code generated from them. No logic lives
//! here; conversions to domain types live beside those types.
//!
//! - [`store`]: Raft traffic between control-plane members and the key-value API
//!   (`skiff/raft.proto`, `skiff/kv.proto`).
//! - [`node`]: node agents and the control plane (`skiff/node.proto`).

/// `skiff.store.v1`: the Raft and Kv services of the control-plane store.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    unused_qualifications,
    reason = "generated code"
)]
pub mod store {
    tonic::include_proto!("skiff.store.v1");
}

/// `skiff.node.v1`: the Node service (control plane, for agents) and the Agent service
/// (node agents, for the control plane).
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    unused_qualifications,
    reason = "generated code"
)]
pub mod node {
    tonic::include_proto!("skiff.node.v1");
}
