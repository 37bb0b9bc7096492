//! The Deployment controller (being written).

use tokio_util::sync::CancellationToken;

use super::Informers;
use crate::apiserver::Registry;

/// Starts the Deployment controller.
pub fn start(registry: &Registry, informers: &Informers, cancel: &CancellationToken) {
    let _ = (registry, informers, cancel);
}
