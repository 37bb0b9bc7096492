//! Helpers shared by the control plane's tests: a registry over a fresh one-member
//! store, objects from JSON, polling with a deadline.

#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    reason = "test helpers fail the test by panicking"
)]

use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use skiff_api::Object;
use skiff_api::codec::{FieldValidation, decode_object};
use tempfile::TempDir;

use crate::apiserver::{Registry, Writer};
use crate::store::{Config, Store, Tuning};

/// A registry over a fresh single-member store.
pub async fn registry() -> (TempDir, Registry) {
    registry_keeping(Tuning::default().history_revisions).await
}

/// A registry whose fresh single-member store keeps `history_revisions` revisions of
/// watch history (elections tuned to be quick).
pub async fn registry_keeping(history_revisions: u64) -> (TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let tuning = Tuning {
        election_timeout_min: Duration::from_millis(150),
        election_timeout_max: Duration::from_millis(300),
        heartbeat_interval: Duration::from_millis(50),
        history_revisions,
        ..Tuning::default()
    };
    let store = Store::open(Config {
        data_dir: dir.path().to_owned(),
        listen_peer: "127.0.0.1:0".parse().unwrap(),
        advertise_peer: None,
        join: Vec::new(),
        tls: None,
        tuning,
    })
    .await
    .unwrap();
    (dir, Registry::new(store))
}

/// A registry over a fresh single-member store, allocating from `network`'s ranges.
pub async fn registry_with_network(network: crate::NetworkSettings) -> (TempDir, Registry) {
    let (dir, registry) = registry().await;
    (dir, registry.with_network(network))
}

/// An object decoded from a manifest.
pub fn object(value: Value) -> Object {
    decode_object(value, FieldValidation::Strict)
        .unwrap()
        .object
}

/// Creates `value` in `namespace`.
pub async fn create(registry: &Registry, namespace: Option<&str>, value: Value) -> Object {
    registry
        .create(object(value), namespace, Writer::main("test"))
        .await
        .unwrap()
}

/// Polls `check` every 50 ms until it yields a value, failing after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
