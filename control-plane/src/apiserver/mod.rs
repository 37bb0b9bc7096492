//! The Kubernetes-shaped REST API over the store.
//!
//! - `error`: [`ApiError`], the one place failures become `meta/v1 Status`.
//! - `registry`: [`Registry`], objects on the store with Kubernetes' metadata and
//!   resourceVersion rules.

mod error;
mod registry;

#[cfg(test)]
mod tests;

pub use error::ApiError;
pub use registry::{
    ListOptions, ListPage, Registry, field_value, kind_prefix, list_prefix, object_key,
};
