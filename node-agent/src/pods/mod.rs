//! Pod workers: the agent's kubelet loop (being written).

pub mod backoff;
pub use backoff::Backoff;
pub mod probe;
pub mod status;
pub mod volumes;
