//! WATCH: a chunked stream of `{"type":…,"object":…}` JSON lines over a store watch,
//! with Kubernetes' resourceVersion semantics.
//!
//! - `resourceVersion` unset or `0`: the current objects first, as `ADDED`, then every
//!   change after the revision they were read at.
//! - `resourceVersion=N`: every change after `N`; if the history no longer reaches back
//!   to `N`, one `ERROR` event carrying a 410 `Expired` Status, then the end.
//! - Label and field selectors apply to both the old and new state of each change, as
//!   kube-apiserver's cacher does: an object that stops matching is `DELETED`, one that
//!   starts matching is `ADDED`.
//! - `allowWatchBookmarks=true`: `BOOKMARK` events carrying only the revision all
//!   events up to which were sent, from the store's progress notifications.
//! - The stream ends after `timeoutSeconds` (default: a random 30–60 minutes, as
//!   kube-apiserver), when the server shuts down, or when the client goes away.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use skiff_api::ResourceKind;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::registry::{ListOptions, Registry, decode_value, list_prefix, now_timestamp};
use super::table::{self, IncludeObject};
use crate::store::{self, EventKind, KeyValue, WatchMessage, WatchStream};

/// How often the store reports progress to a watch that asked for bookmarks.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);

/// What a watch request asked for.
#[derive(Debug)]
pub struct WatchParams {
    /// `resourceVersion`: `None` (or `0`) for "current state, then changes".
    pub resource_version: Option<u64>,
    /// When the stream ends.
    pub timeout: Duration,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `sendInitialEvents`: the current state first even with a resourceVersion, ended
    /// by a bookmark annotated `k8s.io/initial-events-end`.
    pub send_initial_events: bool,
    /// Events carry one-row Tables instead of objects.
    pub table: Option<IncludeObject>,
}

impl WatchParams {
    /// The default timeout: kube-apiserver picks one between 30 and 60 minutes so that
    /// clients do not reconnect in lockstep.
    pub fn default_timeout() -> Duration {
        Duration::from_secs(rand::random_range(1800..3600))
    }
}

/// A watch in progress: yields chunks of JSON lines until it ends.
pub struct Watch {
    kind: &'static ResourceKind,
    options: ListOptions,
    params: WatchParams,
    stream: Option<WatchStream>,
    pending: VecDeque<Bytes>,
    deadline: Instant,
    cancel: CancellationToken,
    /// Whether a Table event has carried the column definitions yet.
    columns_sent: bool,
}

impl Watch {
    /// Starts a watch of `kind` in `namespace` (all namespaces if `None`).
    pub async fn start(
        registry: &Registry,
        kind: &'static ResourceKind,
        namespace: Option<&str>,
        options: ListOptions,
        params: WatchParams,
        cancel: CancellationToken,
    ) -> Result<Self, ApiError> {
        let mut watch = Self {
            kind,
            deadline: Instant::now() + params.timeout,
            options,
            params,
            stream: None,
            pending: VecDeque::new(),
            cancel,
            columns_sent: false,
        };
        let progress = watch.params.bookmarks.then_some(BOOKMARK_INTERVAL);
        let prefix = list_prefix(kind, namespace);
        let initial = watch.params.resource_version.is_none() || watch.params.send_initial_events;
        let after = if initial {
            // The current state, read at one revision, then changes after it.
            let list_options = ListOptions {
                labels: watch.options.labels.clone(),
                fields: watch.options.fields.clone(),
                ..Default::default()
            };
            let page = registry.list(kind, namespace, &list_options).await?;
            for object in &page.items {
                let line = watch.event_line("ADDED", object.to_value())?;
                watch.pending.push_back(line);
            }
            if watch.params.send_initial_events && watch.params.bookmarks {
                let line = watch.bookmark(page.revision, true);
                watch.pending.push_back(line);
            }
            page.revision
        } else {
            watch.params.resource_version.unwrap_or(0)
        };
        match registry.store().watch(&prefix, after, progress) {
            Ok(stream) => watch.stream = Some(stream),
            Err(error @ store::Error::Compacted { .. }) => {
                let expired = ApiError::gone(format!("too old resource version: {error}"));
                watch.pending.push_back(expired_line(&expired));
            }
            Err(error) => return Err(error.into()),
        }
        Ok(watch)
    }

    /// The next chunk of the stream, or `None` once it has ended.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(chunk);
            }
            let stream = self.stream.as_mut()?;
            let message = tokio::select! {
                () = tokio::time::sleep_until(self.deadline) => None,
                () = self.cancel.cancelled() => None,
                message = stream.next() => message,
            };
            match message {
                None => self.stream = None,
                Some(WatchMessage::Events(events)) => {
                    let mut chunk = Vec::new();
                    for event in events {
                        match self.convert(event.kind, event.kv, event.prev) {
                            Ok(Some(line)) => chunk.extend_from_slice(&line),
                            Ok(None) => {}
                            Err(error) => {
                                tracing::warn!(%error, "a watched object does not decode");
                            }
                        }
                    }
                    if !chunk.is_empty() {
                        return Some(Bytes::from(chunk));
                    }
                }
                Some(WatchMessage::Progress(revision)) => {
                    if self.params.bookmarks {
                        return Some(self.bookmark(revision, false));
                    }
                }
                Some(WatchMessage::Expired) => {
                    self.stream = None;
                    let expired = ApiError::gone(
                        "the watch's history was compacted; list again to resume".to_owned(),
                    );
                    return Some(expired_line(&expired));
                }
            }
        }
    }

    /// The event line for one store change, if the change is visible through the
    /// selectors.
    fn convert(
        &mut self,
        kind: EventKind,
        kv: KeyValue,
        prev: Option<KeyValue>,
    ) -> Result<Option<Bytes>, ApiError> {
        let revision = kv.mod_revision;
        let value = |kv: &KeyValue| -> Result<Value, ApiError> {
            let mut value: Value = serde_json::from_slice(&kv.value)
                .map_err(|e| ApiError::internal(format!("stored {} is not JSON: {e}", kv.key)))?;
            value["metadata"]["resourceVersion"] = Value::String(revision.to_string());
            Ok(value)
        };
        let current = value(&kv)?;
        let filtered = self.options.labels.is_some() || !self.options.fields.is_empty();
        let (event_type, object) = match kind {
            EventKind::Deleted => {
                if filtered && !self.options.matches(&current) {
                    return Ok(None);
                }
                ("DELETED", current)
            }
            EventKind::Created | EventKind::Updated => {
                let now_matches = !filtered || self.options.matches(&current);
                let before = match (&prev, filtered) {
                    (Some(prev), true) => Some(value(prev)?),
                    _ => None,
                };
                let was_matching = match kind {
                    EventKind::Created => false,
                    _ => before.as_ref().is_none_or(|b| self.options.matches(b)),
                };
                match (was_matching, now_matches) {
                    (true, true) => ("MODIFIED", current),
                    (false, true) => ("ADDED", current),
                    // Stopped matching: its last matching state, at this revision.
                    (true, false) => ("DELETED", before.unwrap_or(current)),
                    (false, false) => return Ok(None),
                }
            }
        };
        self.event_line(event_type, object).map(Some)
    }

    /// One JSON line: the object itself, or a one-row Table for `kubectl get -w`.
    fn event_line(&mut self, event_type: &str, object: Value) -> Result<Bytes, ApiError> {
        let object = match self.params.table {
            None => object,
            Some(include) => {
                let decoded = decode_value(self.kind, object)?;
                let mut rendered = table::render(
                    self.kind,
                    std::slice::from_ref(&decoded),
                    now_timestamp(),
                    include,
                );
                if self.columns_sent {
                    rendered.column_definitions.clear();
                }
                self.columns_sent = true;
                rendered.metadata.resource_version = decoded.metadata().resource_version.clone();
                serde_json::to_value(rendered).expect("a Table serializes")
            }
        };
        Ok(line(&json!({"type": event_type, "object": object})))
    }

    fn bookmark(&self, revision: u64, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({
            "kind": self.kind.kind,
            "apiVersion": self.kind.api_version,
            "metadata": metadata,
        });
        line(&json!({"type": "BOOKMARK", "object": object}))
    }
}

fn line(value: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(value).expect("a JSON value serializes");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn expired_line(error: &ApiError) -> Bytes {
    let status = serde_json::to_value(error.to_status()).expect("a Status serializes");
    line(&json!({"type": "ERROR", "object": status}))
}
