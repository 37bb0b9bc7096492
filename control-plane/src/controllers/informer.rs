//! Informers, as client-go's: one list + watch per kind kept in a local cache, and
//! every change fanned out to subscribers. Controllers and the scheduler read the
//! cache (never the store) and react to changes.
//!
//! The watch resumes from the list's revision, so no change is missed; when its history
//! is gone (`Expired`), the informer lists again and reports the difference as changes.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use skiff_api::{Object, ResourceKind};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::apiserver::{ListOptions, Registry, decode_stored, list_prefix};
use crate::store::{EventKind, WatchMessage};

/// One change of one object: `old` is `None` on creation, `new` on deletion.
#[derive(Clone, Debug)]
pub struct Change {
    /// The state before.
    pub old: Option<Arc<Object>>,
    /// The state after.
    pub new: Option<Arc<Object>>,
}

impl Change {
    /// The object's latest known state.
    pub fn object(&self) -> &Arc<Object> {
        match (&self.new, &self.old) {
            (Some(object), _) | (None, Some(object)) => object,
            (None, None) => unreachable!("a change has an old or a new state"),
        }
    }
}

/// The cache key of an object: `namespace/name`, or `name` for cluster-scoped kinds.
pub fn key_of(object: &Object) -> String {
    key(object.namespace(), object.name())
}

/// The cache key of `name` in `namespace`.
pub fn key(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(namespace) if !namespace.is_empty() => format!("{namespace}/{name}"),
        _ => name.to_owned(),
    }
}

/// Splits a cache key into namespace and name.
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((namespace, name)) => (Some(namespace), name),
        None => (None, key),
    }
}

type Cache = Arc<RwLock<BTreeMap<String, Arc<Object>>>>;

/// A kind's cache, kept current by a background list + watch.
#[derive(Clone)]
pub struct Informer {
    kind: &'static ResourceKind,
    cache: Cache,
    synced: watch::Receiver<bool>,
    subscribers: Arc<RwLock<Vec<mpsc::UnboundedSender<Change>>>>,
}

impl Informer {
    /// Starts informing on `kind` (every namespace) until `cancel` fires.
    pub fn start(
        registry: Registry,
        kind: &'static ResourceKind,
        cancel: CancellationToken,
    ) -> Self {
        let (synced_tx, synced) = watch::channel(false);
        let informer = Self {
            kind,
            cache: Arc::default(),
            synced,
            subscribers: Arc::default(),
        };
        let runner = informer.clone();
        tokio::spawn(async move { runner.run(registry, synced_tx, cancel).await });
        informer
    }

    /// A stream of every change from now on. Subscribe before [`Informer::wait_synced`]
    /// returns to see the initial objects as creations.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Change> {
        let (sender, receiver) = mpsc::unbounded_channel();
        // Objects already cached reach a late subscriber as creations; holding the
        // subscriber list meanwhile means no change falls between (some may come twice,
        // which level-triggered consumers do not mind).
        let mut subscribers = self
            .subscribers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for object in self.list() {
            let _ = sender.send(Change {
                old: None,
                new: Some(object),
            });
        }
        subscribers.push(sender);
        receiver
    }

    /// Waits until the first list is in the cache (or the informer stopped).
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.clone();
        let _ = synced.wait_for(|synced| *synced).await;
    }

    /// The cached object with `key` (see [`key`]).
    pub fn get(&self, key: &str) -> Option<Arc<Object>> {
        self.read().get(key).cloned()
    }

    /// Every cached object, in key order.
    pub fn list(&self) -> Vec<Arc<Object>> {
        self.read().values().cloned().collect()
    }

    /// The cached objects of one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<Object>> {
        let prefix = format!("{namespace}/");
        self.read()
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Object>>> {
        self.cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies a change to the cache and tells the subscribers.
    fn apply(&self, key: String, new: Option<Arc<Object>>) {
        let old = {
            let mut cache = self
                .cache
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match &new {
                Some(object) => cache.insert(key, object.clone()),
                None => cache.remove(&key),
            }
        };
        if old.is_none() && new.is_none() {
            return;
        }
        let change = Change { old, new };
        self.subscribers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|subscriber| subscriber.send(change.clone()).is_ok());
    }

    /// Lists, then watches from the list's revision; lists again when the watch
    /// expires or breaks.
    async fn run(
        &self,
        registry: Registry,
        synced: watch::Sender<bool>,
        cancel: CancellationToken,
    ) {
        let prefix = list_prefix(self.kind, None);
        let mut delay = Duration::from_millis(50);
        while !cancel.is_cancelled() {
            let options = ListOptions::default();
            let page = tokio::select! {
                () = cancel.cancelled() => return,
                page = registry.list(self.kind, None, &options) => page,
            };
            let page = match page {
                Ok(page) => page,
                Err(error) => {
                    tracing::debug!(kind = self.kind.kind, %error, "informer list failed; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            delay = Duration::from_millis(50);
            // Replace the cache with the list, reporting the difference.
            let listed: BTreeMap<String, Arc<Object>> = page
                .items
                .into_iter()
                .map(|object| (key_of(&object), Arc::new(object)))
                .collect();
            let gone: Vec<String> = self
                .read()
                .keys()
                .filter(|key| !listed.contains_key(*key))
                .cloned()
                .collect();
            for key in gone {
                self.apply(key, None);
            }
            for (key, object) in listed {
                let unchanged = self.get(&key).is_some_and(|cached| {
                    cached.metadata().resource_version == object.metadata().resource_version
                });
                if !unchanged {
                    self.apply(key, Some(object));
                }
            }
            synced.send_replace(true);
            let mut stream = match registry.store().watch(&prefix, page.revision, None) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(kind = self.kind.kind, %error, "informer watch failed; listing again");
                    continue;
                }
            };
            loop {
                let message = tokio::select! {
                    () = cancel.cancelled() => return,
                    message = stream.next() => message,
                };
                match message {
                    Some(WatchMessage::Events(events)) => {
                        for event in events {
                            let key_path = event.kv.key.clone();
                            match event.kind {
                                EventKind::Deleted => {
                                    if let Ok(object) = decode_stored(self.kind, event.kv) {
                                        self.apply(key_of(&object), None);
                                    }
                                }
                                EventKind::Created | EventKind::Updated => {
                                    match decode_stored(self.kind, event.kv) {
                                        Ok(object) => {
                                            self.apply(key_of(&object), Some(Arc::new(object)));
                                        }
                                        Err(error) => {
                                            tracing::warn!(key = %key_path, %error, "undecodable object");
                                        }
                                    }
                                }
                            }
                        }
                    }
                    Some(WatchMessage::Progress(_)) => {}
                    Some(WatchMessage::Expired) | None => break,
                }
            }
        }
    }
}
