//! The Kubernetes-shaped REST API over the store.
//!
//! - `error`: [`ApiError`], the one place failures become `meta/v1 Status`.
//! - `registry`: [`Registry`], objects on the store with Kubernetes' metadata and
//!   resourceVersion rules.
//! - `request`: routing of Kubernetes paths; `discovery`: discovery documents.
//! - `server`: the hyper server and handlers ([`serve`]).
//! - [`table`]: `meta/v1 Table` rendering with kubectl's columns.

mod discovery;
mod error;
mod registry;
mod request;
mod server;
pub mod table;

#[cfg(test)]
mod tests;

pub use error::ApiError;
pub use registry::{
    ListOptions, ListPage, Registry, field_value, kind_prefix, list_prefix, object_key,
};
pub use server::{MAX_BODY_BYTES, handle, serve};
