//! The scheduler (being written).

use tokio_util::sync::CancellationToken;

use crate::apiserver::Registry;
use crate::controllers::Informers;

/// Starts the scheduler.
pub fn start(registry: &Registry, informers: &Informers, cancel: &CancellationToken) {
    let _ = (registry, informers, cancel);
}
