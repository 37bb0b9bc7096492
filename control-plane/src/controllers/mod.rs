//! Controllers: the loops that make the cluster match what users declared, as
//! kube-controller-manager's. Each follows the informer pattern: shared [`Informers`]
//! (list + watch into caches) feed keys into a [`WorkQueue`]; workers reconcile one key
//! at a time, level-triggered and idempotently, reading the caches and writing through
//! the [`Registry`] with resourceVersion preconditions; a failed key is retried with
//! back-off.
//!
//! Controllers run only on the member that holds the `kube-system/skiff-controller-manager`
//! Lease ([`leader`], client-go's leader election), so exactly one instance acts at a
//! time.

pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod gc;
pub mod informer;
pub mod leader;
pub mod namespace;
pub mod node_lifecycle;
pub mod queue;
pub mod replicaset;
pub mod service_lb;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use skiff_api::kind;
use tokio_util::sync::CancellationToken;

pub use informer::{Change, Informer};
pub use leader::{LeaderElection, run_while_leader};
pub use queue::WorkQueue;

use crate::apiserver::{ApiError, Registry};

/// The informers every controller shares: one list + watch per kind.
#[derive(Clone)]
pub struct Informers {
    /// Pods.
    pub pods: Informer,
    /// Nodes.
    pub nodes: Informer,
    /// Namespaces.
    pub namespaces: Informer,
    /// ReplicaSets.
    pub replica_sets: Informer,
    /// Deployments.
    pub deployments: Informer,
    /// Services.
    pub services: Informer,
    /// Endpoints.
    pub endpoints: Informer,
}

impl Informers {
    /// Starts every informer; they stop when `cancel` fires.
    pub fn start(registry: &Registry, cancel: &CancellationToken) -> Self {
        let start = |kind| Informer::start(registry.clone(), kind, cancel.clone());
        Self {
            pods: start(&kind::POD),
            nodes: start(&kind::NODE),
            namespaces: start(&kind::NAMESPACE),
            replica_sets: start(&kind::REPLICA_SET),
            deployments: start(&kind::DEPLOYMENT),
            services: start(&kind::SERVICE),
            endpoints: start(&kind::ENDPOINTS),
        }
    }

    /// Waits until every cache holds its first list.
    pub async fn wait_synced(&self) {
        for informer in [
            &self.pods,
            &self.nodes,
            &self.namespaces,
            &self.replica_sets,
            &self.deployments,
            &self.services,
            &self.endpoints,
        ] {
            informer.wait_synced().await;
        }
    }
}

/// What reconciles one key of a controller's queue.
pub trait Reconciler: Send + Sync + 'static {
    /// The controller's name, for logs.
    fn name(&self) -> &'static str;

    /// Makes the object with `key` (`namespace/name` or `name`) match its desired
    /// state. `Ok(Some(d))` asks to look again after `d`; an error retries with back-off.
    fn reconcile(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Duration>, ApiError>> + Send;
}

/// Runs `workers` workers taking keys from `queue` into `reconciler` until `cancel`
/// fires.
pub fn run_workers<R: Reconciler>(
    reconciler: Arc<R>,
    queue: WorkQueue,
    workers: usize,
    cancel: CancellationToken,
) {
    {
        let queue = queue.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            queue.shut_down();
        });
    }
    for _ in 0..workers.max(1) {
        let reconciler = reconciler.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            while let Some(key) = queue.get().await {
                match reconciler.reconcile(&key).await {
                    Ok(again) => {
                        queue.forget(&key);
                        if let Some(delay) = again {
                            queue.add_after(key.clone(), delay);
                        }
                    }
                    Err(error) => {
                        tracing::debug!(controller = reconciler.name(), %key, %error, "reconcile failed; retrying");
                        queue.retry(&key);
                    }
                }
                queue.done(&key);
            }
        });
    }
}

/// Knobs of the controllers (kube-controller-manager's flags).
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// The node lifecycle controller's timings.
    pub node_lifecycle: node_lifecycle::Settings,
    /// Timings of the Lease election that decides which member runs the controllers.
    pub leader_election: LeaderElection,
}

/// Starts the informers, then (once they have synced) the scheduler and every
/// controller; all stop when `cancel` fires.
pub fn start_all(registry: Registry, cancel: CancellationToken, settings: &Settings) {
    let informers = Informers::start(&registry, &cancel);
    let settings = settings.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = informers.wait_synced() => {}
        }
        crate::scheduler::start(&registry, &informers, &cancel);
        replicaset::start(&registry, &informers, &cancel);
        deployment::start(&registry, &informers, &cancel);
        gc::start(&registry, &informers, &cancel);
        namespace::start(&registry, &informers, &cancel);
        node_lifecycle::start_with(&registry, &informers, &cancel, settings.node_lifecycle);
        endpoints::start(&registry, &informers, &cancel);
        service_lb::start(&registry, &informers, &cancel);
    });
}
