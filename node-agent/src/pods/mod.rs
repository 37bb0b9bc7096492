//! Pod workers: the agent's kubelet loop (being written).

pub mod backoff;
pub mod probe;
pub mod status;
