//! End-to-end support: running Skiff's binaries and peer systems as real processes,
//! and the measurement code of `skiff-bench`.
//!
//! - [`agent`]: a real node agent process in its node's network namespace, reset
//!   (containers removed) on drop.
//! - [`netns`]: network namespaces (one per node, plus the "fabric" bridge joining them,
//!   where the control plane and registry live) and a host-side port forwarder into them.
//! - [`process`]: child processes with temp data dirs, killed on drop.
//! - [`registry`]: a real local OCI registry (on loopback or in a fabric) and busybox
//!   test images.
//! - [`stats`]: latency samples, percentiles and throughput.
//! - [`api_bench`]: the `skiff-bench api` workload against the Kubernetes API.
//! - [`pod_start_bench`]: `skiff-bench pod-start`, pod start vs `crun run`, agent memory.
//! - [`schedule_bench`]: `skiff-bench schedule`, pods placed per second on hollow nodes.
//! - [`store_bench`]: the `skiff-bench store` workload against Skiff and etcd.
//! - [`etcd`]: the generated client for etcd's KV API.

pub mod agent;
pub mod api_bench;
pub mod netns;
pub mod pod_start_bench;
pub mod process;
pub mod registry;
pub mod schedule_bench;
pub mod service_bench;
pub mod stats;
pub mod store_bench;

/// etcd's KV API (subset), generated from `proto/etcd.proto`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    unused_qualifications,
    reason = "generated code"
)]
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}
