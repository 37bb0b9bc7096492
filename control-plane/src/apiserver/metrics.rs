//! `/metrics`: Prometheus text with kube-apiserver's metric names where one exists.
//!
//! - `apiserver_request_total{verb,resource,code}` and
//!   `apiserver_request_duration_seconds{verb,resource}` (a watch counts when its stream
//!   opens; its length shows in the watcher gauge);
//! - `apiserver_registered_watchers{kind}`: open watches;
//! - `skiff_store_request_duration_seconds{operation}`: store calls made by the API;
//! - `skiff_store_revision`, `skiff_store_is_leader`: the store's state at scrape time.

use std::time::Duration;

use http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry as MetricRegistry;
use skiff_api::ResourceKind;

use crate::store::Store;

/// Labels of request counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: &'static str,
    resource: String,
    code: u16,
}

/// Labels of request latencies.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    verb: &'static str,
    resource: String,
}

/// Labels of watch gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabels {
    kind: &'static str,
}

/// Labels of store latencies.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// `get`, `list`, `create`, `update`, `delete`.
    pub operation: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms to ~8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Store call latencies, recorded by the registry and exported here.
#[derive(Clone, Debug)]
pub struct StoreLatency(HistogramFamily<StoreLabels>);

impl Default for StoreLatency {
    fn default() -> Self {
        Self(Family::new_with_constructor(latency_histogram))
    }
}

impl StoreLatency {
    /// Records one store call.
    pub fn observe(&self, operation: &'static str, elapsed: Duration) {
        self.0
            .get_or_create(&StoreLabels { operation })
            .observe(elapsed.as_secs_f64());
    }
}

/// The API server's metrics (one registry per control plane: `skiff up` runs several
/// components in one process).
pub struct Metrics {
    registry: MetricRegistry,
    requests: Family<RequestLabels, Counter>,
    latencies: HistogramFamily<LatencyLabels>,
    watchers: Family<WatchLabels, Gauge>,
    revision: Gauge,
    is_leader: Gauge,
    store: Store,
}

/// Decrements the open-watch gauge when the watch ends.
pub struct WatchGuard(Gauge);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Metrics over `store`, exporting `store_latency` too.
    pub fn new(store: Store, store_latency: &StoreLatency) -> Self {
        let mut registry = MetricRegistry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "apiserver_request",
            "Requests by verb, resource and HTTP code",
            requests.clone(),
        );
        let latencies: HistogramFamily<LatencyLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "apiserver_request_duration_seconds",
            "Request latency by verb and resource",
            latencies.clone(),
        );
        let watchers = Family::<WatchLabels, Gauge>::default();
        registry.register(
            "apiserver_registered_watchers",
            "Open watches by kind",
            watchers.clone(),
        );
        registry.register(
            "skiff_store_request_duration_seconds",
            "Latency of the store calls the API makes",
            store_latency.0.clone(),
        );
        let revision = Gauge::default();
        registry.register(
            "skiff_store_revision",
            "The store's last applied revision",
            revision.clone(),
        );
        let is_leader = Gauge::default();
        registry.register(
            "skiff_store_is_leader",
            "1 if this member is the store's Raft leader",
            is_leader.clone(),
        );
        Self {
            registry,
            requests,
            latencies,
            watchers,
            revision,
            is_leader,
            store,
        }
    }

    /// Records one finished request.
    pub fn observe_request(
        &self,
        verb: &'static str,
        resource: &str,
        code: u16,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                verb,
                resource: resource.to_owned(),
                code,
            })
            .inc();
        self.latencies
            .get_or_create(&LatencyLabels {
                verb,
                resource: resource.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts an open watch until the guard is dropped.
    pub fn watch_started(&self, kind: &ResourceKind) -> WatchGuard {
        let gauge = self
            .watchers
            .get_or_create(&WatchLabels { kind: kind.kind })
            .clone();
        gauge.inc();
        WatchGuard(gauge)
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        self.revision
            .set(i64::try_from(self.store.revision()).unwrap_or(i64::MAX));
        self.is_leader.set(i64::from(self.store.is_leader()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Kubernetes' verb for a request: `list`/`get`/`watch`, `create`, `update`, `patch`,
/// `delete`, `deletecollection`.
pub fn verb(method: &Method, has_name: bool, watch: bool) -> &'static str {
    match *method {
        Method::GET if watch => "watch",
        Method::GET if has_name => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if has_name => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}
