//! The node lifecycle controller (being written).

use tokio_util::sync::CancellationToken;

use super::Informers;
use crate::apiserver::Registry;

/// Starts the node lifecycle controller.
pub fn start(registry: &Registry, informers: &Informers, cancel: &CancellationToken) {
    let _ = (registry, informers, cancel);
}
