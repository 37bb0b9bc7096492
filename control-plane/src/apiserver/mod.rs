//! The Kubernetes-shaped REST API over the store.
//!
//! - `error`: [`ApiError`], the one place failures become `meta/v1 Status`.
//! - `registry`: [`Registry`], objects on the store with Kubernetes' metadata,
//!   resourceVersion, graceful-deletion and finalizer rules.
//! - `strategy`: what a write through the main resource or `/status` may change.
//! - `allocation`: cluster IPs, node ports and pod CIDRs, reserved by keys written in
//!   the same transaction as the object holding them.
//! - `managed`: `metadata.managedFields` on every write.
//! - `request`: routing of Kubernetes paths; `discovery`, `openapi`: discovery and
//!   OpenAPI documents.
//! - `objects`: handlers for objects and their subresources; `exec`: `pods/exec` over
//!   WebSocket, relayed to the node's agent; `watch`: WATCH streams;
//!   `protobuf`: the protobuf bodies typed `kubectl create` sends.
//! - [`table`]: `meta/v1 Table` rendering with kubectl's columns.
//! - `metrics`: `/metrics`.
//! - `auth`: who a caller is (client certificate, bearer token, anonymous) and what
//!   they may do (masters, nodes under kube's node restriction, joiners, viewers).
//! - `join`: `/cacerts` and the join handshake of agents and control-plane members.
//! - `server`: the hyper server ([`serve`]); gRPC calls on the same port go to
//!   [`crate::nodes`].

mod allocation;
pub mod auth;
mod discovery;
mod error;
mod exec;
mod join;
mod managed;
mod metrics;
mod objects;
mod openapi;
mod protobuf;
mod registry;
mod request;
mod server;
mod strategy;
pub mod table;
mod watch;

#[cfg(test)]
mod secure_tests;
#[cfg(test)]
mod tests;

pub use error::ApiError;
pub use objects::MAX_BODY_BYTES;
pub use registry::{
    DeleteOptions, Deleted, ListOptions, ListPage, Registry, Writer, Written, field_value,
    kind_prefix, list_prefix, object_key,
};
pub(crate) use registry::{decode_stored, now_timestamp};
pub use server::{CertificateUser, Context, Security, handle, serve, serve_with};
pub use strategy::Part;
pub(crate) use watch::{Watch, WatchParams};
