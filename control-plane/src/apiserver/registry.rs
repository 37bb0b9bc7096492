//! Objects on the store: keys, create/get/list/update/delete with Kubernetes'
//! metadata rules (uid, creationTimestamp, generation, generateName) and
//! resourceVersion semantics (the store revision; updates compare-and-swap on it).
//!
//! Objects are stored as JSON without `resourceVersion`: it is the key's
//! `mod_revision`, filled in on every read, as kube-apiserver does over etcd.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use skiff_api::meta::{StatusCause, StatusDetails, Time, jiff};
use skiff_api::{FieldError, FieldPath, Object, ResourceKind, Selector};

use super::allocation::{self, Changes, Reservation};
use super::error::ApiError;
use super::managed;
use super::metrics::StoreLatency;
use super::strategy::{self, Part};
use crate::network::NetworkSettings;
use crate::store::{Consistency, KeyValue, Op, Precondition, Store, Txn, TxnOutcome};

/// The store key prefix of a kind: `/registry/<group>/<resource>/`.
pub fn kind_prefix(kind: &ResourceKind) -> String {
    let group = if kind.group.is_empty() {
        "core"
    } else {
        kind.group
    };
    format!("/registry/{group}/{}/", kind.plural)
}

/// The store key prefix of a list: all namespaces, one namespace, or a cluster-scoped kind.
pub fn list_prefix(kind: &ResourceKind, namespace: Option<&str>) -> String {
    match namespace {
        Some(namespace) if kind.namespaced => format!("{}{namespace}/", kind_prefix(kind)),
        _ => kind_prefix(kind),
    }
}

/// The store key of one object.
pub fn object_key(kind: &ResourceKind, namespace: Option<&str>, name: &str) -> String {
    format!("{}{name}", list_prefix(kind, namespace))
}

/// A decoded stored object with its revision filled in.
pub(crate) fn decode_stored(kind: &'static ResourceKind, kv: KeyValue) -> Result<Object, ApiError> {
    let mut object = Object::from_stored_json(kind, &kv.value).map_err(|e| {
        ApiError::internal(format!("stored object {} does not decode: {e}", kv.key))
    })?;
    object.metadata_mut().resource_version = Some(kv.mod_revision.to_string());
    Ok(object)
}

/// Decodes a stored object (as JSON, resourceVersion included).
pub(super) fn decode_value(
    kind: &'static ResourceKind,
    value: serde_json::Value,
) -> Result<Object, ApiError> {
    Object::from_stored_value(kind, value)
        .map_err(|e| ApiError::internal(format!("a stored {} does not decode: {e}", kind.kind)))
}

/// Encodes an object for storage, without its resourceVersion.
fn encode_stored(object: &Object) -> Vec<u8> {
    let mut value = object.to_value();
    if let Some(metadata) = value
        .get_mut("metadata")
        .and_then(serde_json::Value::as_object_mut)
    {
        metadata.remove("resourceVersion");
    }
    serde_json::to_vec(&value).expect("a JSON value always serializes")
}

/// Characters of generated name suffixes (Kubernetes' alphabet: no vowels, no 0/1/3).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generated_name(prefix: &str) -> String {
    let suffix: String = (0..5)
        .map(|_| char::from(SUFFIX_ALPHABET[rand::random_range(0..SUFFIX_ALPHABET.len())]))
        .collect();
    format!("{prefix}{suffix}")
}

/// The current time at second precision, as Kubernetes stores timestamps.
fn now() -> Time {
    now_plus(0)
}

/// The current time plus `seconds_to_add`, at second precision.
fn now_plus(seconds_to_add: i64) -> Time {
    let seconds = now_timestamp().as_second().saturating_add(seconds_to_add);
    Time(jiff::Timestamp::from_second(seconds).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
}

/// The current time (k8s-openapi's jiff is built without its clock).
pub(crate) fn now_timestamp() -> jiff::Timestamp {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
    let nanos = i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0);
    jiff::Timestamp::new(seconds, nanos).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// A page of a list, and where to continue.
#[derive(Debug)]
pub struct ListPage {
    /// The objects, in key order.
    pub items: Vec<Object>,
    /// The store revision the list reflects (`ListMeta.resourceVersion`).
    pub revision: u64,
    /// Opaque token for the next page, when there is one.
    pub continue_token: Option<String>,
}

/// What a continue token carries.
#[derive(Serialize, Deserialize)]
struct ContinueToken {
    /// The last key returned.
    start_after: String,
}

/// Options of a list.
#[derive(Debug, Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub labels: Option<Selector>,
    /// `fieldSelector` requirements as `(field, value, equal)`.
    pub fields: Vec<(String, String, bool)>,
    /// Page size; 0 for everything.
    pub limit: usize,
    /// `continue` token from a previous page.
    pub continue_token: Option<String>,
}

/// Who writes, and through which endpoint.
#[derive(Clone, Copy, Debug)]
pub struct Writer<'a> {
    /// The field manager recorded in `metadata.managedFields` (empty: none recorded).
    pub manager: &'a str,
    /// The main resource or `/status`.
    pub part: Part,
    /// Server-side apply: the change already carries its managedFields, and a missing
    /// object is created.
    pub apply: bool,
    /// `dryRun=All`: everything but the store write.
    pub dry_run: bool,
}

impl<'a> Writer<'a> {
    /// A plain write through the main resource by `manager`.
    pub fn main(manager: &'a str) -> Self {
        Self {
            manager,
            part: Part::Main,
            apply: false,
            dry_run: false,
        }
    }
}

/// The outcome of [`Registry::write`].
#[derive(Debug)]
pub struct Written {
    /// The object as stored.
    pub object: Object,
    /// Whether the write created it (server-side apply of a new object).
    pub created: bool,
}

/// How many times a write re-reads and retries after losing a race with another
/// writer, when the client did not pin a resourceVersion.
const WRITE_ATTEMPTS: usize = 16;

/// How many times a create picks again after another writer took a value it picked
/// (concurrent creates that pick the same cluster IP, node port or pod CIDR).
const ALLOCATION_ATTEMPTS: usize = 64;

/// How a deletion proceeds (`DeleteOptions`).
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `gracePeriodSeconds`; `None` for the object's default.
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy`: `Orphan`, `Background` or `Foreground`.
    pub propagation_policy: Option<String>,
    /// `dryRun=All`: report what would happen, change nothing.
    pub dry_run: bool,
}

/// What a deletion did.
#[derive(Debug)]
pub enum Deleted {
    /// The object is gone; this was its last state.
    Gone(Object),
    /// The object is being deleted gracefully or waits for finalizers; this is its
    /// state with `deletionTimestamp` set.
    Pending(Object),
}

/// Object storage for the API server.
#[derive(Clone)]
pub struct Registry {
    store: Store,
    latency: StoreLatency,
    /// The ranges cluster IPs, node ports and pod CIDRs are allocated from.
    network: Arc<NetworkSettings>,
}

impl Registry {
    /// A registry over `store`, allocating from the default network ranges.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            latency: StoreLatency::default(),
            network: Arc::new(NetworkSettings::default()),
        }
    }

    /// The registry allocating from `network`'s ranges instead.
    pub fn with_network(mut self, network: NetworkSettings) -> Self {
        self.network = Arc::new(network);
        self
    }

    /// The network ranges the registry allocates from.
    pub fn network(&self) -> &NetworkSettings {
        &self.network
    }

    /// The store underneath.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The latencies of the store calls this registry made.
    pub fn store_latency(&self) -> &StoreLatency {
        &self.latency
    }

    /// Runs one store call, recording its latency under `operation`.
    async fn timed<T>(&self, operation: &'static str, call: impl Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let result = call.await;
        self.latency.observe(operation, started.elapsed());
        result
    }

    /// Creates an object: fills in name (from generateName), uid, creationTimestamp and
    /// generation, resets the status, applies defaults, validates, records `manager`'s
    /// fields, and stores it if the name is free.
    pub async fn create(
        &self,
        object: Object,
        namespace: Option<&str>,
        writer: Writer<'_>,
    ) -> Result<Object, ApiError> {
        let (object, key) = prepare_create(object, namespace, writer.manager, false)?;
        self.commit_create(object, &key, writer.dry_run).await
    }

    /// Stores a prepared new object with what it needs allocated, its reservations in
    /// the same transaction; picks again when another writer took a value it picked.
    /// 409 `AlreadyExists` when the name is taken.
    async fn commit_create(
        &self,
        prepared: Object,
        key: &str,
        dry_run: bool,
    ) -> Result<Object, ApiError> {
        for _ in 0..ALLOCATION_ATTEMPTS {
            let mut object = prepared.clone();
            let picked =
                allocation::allocate(&self.store, &self.network, None, &mut object, true).await?;
            if dry_run {
                let (existing, _) = self
                    .timed("get", self.store.get(key, Consistency::Linearizable))
                    .await?;
                if existing.is_some() {
                    return Err(ApiError::already_exists(object.kind(), object.name()));
                }
                let asked = allocation::held(&object, &self.network)
                    .into_iter()
                    .filter(|r| !picked.contains(r));
                allocation::check_free(&self.store, &object, asked).await?;
                return Ok(object);
            }
            let changes =
                allocation::changes(&self.store, &self.network, None, Some(&object)).await?;
            let create = Op::Create {
                key: key.to_owned(),
                value: encode_stored(&object),
            };
            match self.timed("create", self.commit(create, &changes)).await? {
                TxnOutcome::Committed { revision, .. } => {
                    return Ok(with_revision(object, revision));
                }
                TxnOutcome::Failed { op_index: 0, .. } => {
                    return Err(ApiError::already_exists(object.kind(), object.name()));
                }
                TxnOutcome::Failed { op_index, .. } => {
                    check_lost_reservation(&object, &changes, &picked, op_index)?;
                }
            }
        }
        Err(ApiError::conflict(prepared.kind(), prepared.name()))
    }

    /// Commits an object's own operation with its reservation changes, in one
    /// transaction (operation 0 is the object's).
    async fn commit(&self, op: Op, changes: &Changes) -> crate::store::Result<TxnOutcome> {
        let mut ops = Vec::with_capacity(1 + changes.ops.len());
        ops.push(op);
        ops.extend(changes.ops.iter().cloned());
        self.store.txn(Txn { ops }).await
    }

    /// Reads one object.
    pub async fn get(
        &self,
        kind: &'static ResourceKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Object, ApiError> {
        self.get_stored(kind, namespace, name)
            .await?
            .map(|(object, _)| object)
            .ok_or_else(|| ApiError::not_found(kind, name))
    }

    /// Reads one object and its revision, if it exists.
    async fn get_stored(
        &self,
        kind: &'static ResourceKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<(Object, u64)>, ApiError> {
        let key = object_key(kind, namespace, name);
        let (kv, _) = self
            .timed("get", self.store.get(&key, Consistency::Linearizable))
            .await?;
        kv.map(|kv| {
            let revision = kv.mod_revision;
            decode_stored(kind, kv).map(|object| (object, revision))
        })
        .transpose()
    }

    /// Lists objects of a kind (in one namespace, or all), filtered by selectors,
    /// one page at a time.
    pub async fn list(
        &self,
        kind: &'static ResourceKind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ListPage, ApiError> {
        let prefix = list_prefix(kind, namespace);
        let mut start_after = match &options.continue_token {
            Some(token) => Some(decode_continue(token)?.start_after),
            None => None,
        };
        let mut items = Vec::new();
        let mut revision = None;
        loop {
            let wanted = if options.limit == 0 {
                0
            } else {
                options.limit - items.len()
            };
            let range = self.store.range(
                &prefix,
                start_after.as_deref(),
                wanted,
                Consistency::Linearizable,
            );
            let page = self.timed("list", range).await?;
            revision.get_or_insert(page.revision);
            let last_key = page.kvs.last().map(|kv| kv.key.clone());
            for kv in page.kvs {
                let object = decode_stored(kind, kv)?;
                if options.is_everything() || options.matches(&object.to_value()) {
                    items.push(object);
                }
            }
            let full = options.limit != 0 && items.len() >= options.limit;
            if !page.more || full {
                let continue_token = page
                    .more
                    .then(|| encode_continue(last_key.as_deref().unwrap_or_default()));
                return Ok(ListPage {
                    items,
                    revision: revision.unwrap_or(page.revision),
                    continue_token,
                });
            }
            start_after = last_key;
        }
    }

    /// Replaces an object with `object` (PUT). With `resourceVersion` set, only if it is
    /// still current (409 otherwise); without, unconditionally.
    pub async fn update(
        &self,
        object: Object,
        namespace: Option<&str>,
        name: &str,
        writer: Writer<'_>,
    ) -> Result<Object, ApiError> {
        let kind = object.kind();
        let written = self
            .write(kind, namespace, name, writer, |_| Ok(object.clone()))
            .await?;
        Ok(written.object)
    }

    /// Changes an object as kube-apiserver's `GuaranteedUpdate` does: reads it, lets
    /// `change` compute the new state from the current one (`None` if missing, only
    /// with `writer.apply`), keeps server-owned metadata, the status or spec per
    /// `writer.part`, defaults, advances `generation` on spec changes, validates, records
    /// managed fields, and compare-and-swaps on the revision read. A `resourceVersion`
    /// in the new state that is not the current one is a 409; losing a race without one
    /// re-reads and retries. A write that changes nothing stores nothing. Removing the
    /// last finalizer of an object being deleted (for a Namespace, the last of its
    /// `metadata.finalizers` and `spec.finalizers`) deletes it.
    pub async fn write<F>(
        &self,
        kind: &'static ResourceKind,
        namespace: Option<&str>,
        name: &str,
        writer: Writer<'_>,
        mut change: F,
    ) -> Result<Written, ApiError>
    where
        F: FnMut(Option<&Object>) -> Result<Object, ApiError>,
    {
        let key = object_key(kind, namespace, name);
        for _ in 0..WRITE_ATTEMPTS {
            let (current, _) = self
                .timed("get", self.store.get(&key, Consistency::Linearizable))
                .await?;
            let Some(current) = current else {
                if !writer.apply {
                    return Err(ApiError::not_found(kind, name));
                }
                let mut object = change(None)?;
                object.metadata_mut().name = Some(name.to_owned());
                let (object, key) = prepare_create(object, namespace, writer.manager, true)?;
                match self.commit_create(object, &key, writer.dry_run).await {
                    Ok(object) => {
                        return Ok(Written {
                            object,
                            created: true,
                        });
                    }
                    // Created meanwhile: apply to it instead.
                    Err(error) if error.reason == "AlreadyExists" => continue,
                    Err(error) => return Err(error),
                }
            };
            let current_revision = current.mod_revision;
            let stored_bytes = current.value.clone();
            let old = decode_stored(kind, current)?;
            let new = change(Some(&old))?;
            if new.kind() != kind {
                return Err(ApiError::bad_request(format!(
                    "the kind of the object ({}) does not match the kind of the request ({})",
                    new.kind().kind,
                    kind.kind
                )));
            }
            let pinned = new
                .metadata()
                .resource_version
                .as_deref()
                .filter(|rv| !rv.is_empty())
                .map(|rv| {
                    rv.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                    })
                })
                .transpose()?;
            if pinned.is_some_and(|rv| rv != current_revision) {
                return Err(ApiError::conflict(kind, name));
            }
            let mut object = prepare_update(&old, new, namespace, name, writer)?;
            let assign_pod_cidr = writer.part == Part::Main;
            let picked = allocation::allocate(
                &self.store,
                &self.network,
                Some(&old),
                &mut object,
                assign_pod_cidr,
            )
            .await?;
            let value = encode_stored(&object);
            if value == stored_bytes.as_slice() {
                return Ok(Written {
                    object: old,
                    created: false,
                });
            }
            if writer.dry_run {
                let old_held = allocation::held(&old, &self.network);
                let asked = allocation::held(&object, &self.network)
                    .into_iter()
                    .filter(|r| !picked.contains(r) && !old_held.contains(r));
                allocation::check_free(&self.store, &object, asked).await?;
                return Ok(Written {
                    object,
                    created: false,
                });
            }
            let finalized = object.metadata().deletion_timestamp.is_some()
                && !holds_deletion(&object)
                && !is_graceful_pending(&object);
            let (operation, op, kept) = if finalized {
                let delete = Op::Delete {
                    key: key.clone(),
                    expected_revision: Some(current_revision),
                };
                ("delete", delete, None)
            } else {
                let update = Op::Update {
                    key: key.clone(),
                    value,
                    expected_revision: Some(current_revision),
                };
                ("update", update, Some(&object))
            };
            let changes = allocation::changes(&self.store, &self.network, Some(&old), kept).await?;
            match self.timed(operation, self.commit(op, &changes)).await? {
                TxnOutcome::Committed { revision, .. } => {
                    return Ok(Written {
                        object: with_revision(object, revision),
                        created: false,
                    });
                }
                TxnOutcome::Failed { op_index: 0, .. } if pinned.is_some() => {
                    return Err(ApiError::conflict(kind, name));
                }
                // Lost a race for the object or a value picked here: read again.
                TxnOutcome::Failed { op_index, .. } => {
                    check_lost_reservation(&object, &changes, &picked, op_index)?;
                }
            }
        }
        Err(ApiError::conflict(kind, name))
    }

    /// Deletes an object as Kubernetes does: checks the preconditions; a pod on a node
    /// with a grace period, or an object with finalizers (including the one the
    /// propagation policy asks for), is marked with `deletionTimestamp` and stays until
    /// its node or finalizers let it go; anything else is removed now.
    ///
    /// Namespaces follow kube's namespace storage and NamespaceLifecycle admission: the
    /// system namespaces may not be deleted (403); a namespace is marked with
    /// `deletionTimestamp` and phase `Terminating` and stays while its `spec.finalizers`
    /// (or `metadata.finalizers`) hold it; deleting it again while `spec.finalizers`
    /// hold it changes nothing.
    pub async fn delete(
        &self,
        kind: &'static ResourceKind,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        let key = object_key(kind, namespace, name);
        for _ in 0..WRITE_ATTEMPTS {
            let (current, _) = self
                .timed("get", self.store.get(&key, Consistency::Linearizable))
                .await?;
            let current = current.ok_or_else(|| ApiError::not_found(kind, name))?;
            let revision = current.mod_revision;
            let mut object = decode_stored(kind, current)?;
            check_preconditions(&object, revision, options)?;
            let is_namespace = matches!(object, Object::Namespace(_));
            if is_namespace && IMMORTAL_NAMESPACES.contains(&name) {
                return Err(forbidden(
                    kind,
                    name,
                    "this namespace may not be deleted",
                    Vec::new(),
                ));
            }
            let spec_held = !strategy::spec_finalizers(&object).is_empty();
            let metadata = object.metadata_mut();
            let already = metadata.deletion_timestamp.is_some();
            if already && spec_held {
                // Kubernetes returns a namespace being finalized as it is.
                return Ok(Deleted::Pending(with_revision(object, revision)));
            }
            let mut finalizers = metadata.finalizers.clone().unwrap_or_default();
            let policy_finalizer = match options.propagation_policy.as_deref() {
                Some("Foreground") => Some("foregroundDeletion"),
                Some("Orphan") => Some("orphan"),
                Some("Background") | None => None,
                Some(other) => {
                    return Err(ApiError::invalid(
                        kind,
                        name,
                        &[FieldError::not_supported(
                            &FieldPath::new("propagationPolicy"),
                            other,
                            &["Foreground", "Background", "Orphan"],
                        )],
                    ));
                }
            };
            // The policy's finalizer matters only for objects with dependents; Kubernetes
            // adds it to every object and its garbage collector removes it.
            if let Some(finalizer) = policy_finalizer
                && !finalizers.iter().any(|f| f == finalizer)
            {
                finalizers.push(finalizer.to_owned());
            }
            let grace = match &object {
                Object::Pod(pod) => pod_grace(pod, options.grace_period_seconds),
                _ => 0,
            };
            if finalizers.is_empty() && grace == 0 && !spec_held {
                if options.dry_run {
                    return Ok(Deleted::Gone(with_revision(object, revision)));
                }
                // Whatever the object holds is released with it.
                let changes =
                    allocation::changes(&self.store, &self.network, Some(&object), None).await?;
                let delete = Op::Delete {
                    key: key.clone(),
                    expected_revision: Some(revision),
                };
                match self.timed("delete", self.commit(delete, &changes)).await? {
                    TxnOutcome::Committed { revision, .. } => {
                        return Ok(Deleted::Gone(with_revision(object, revision)));
                    }
                    TxnOutcome::Failed {
                        op_index: 0,
                        precondition: Precondition::NotFound,
                    } => return Err(ApiError::not_found(kind, name)),
                    TxnOutcome::Failed { .. } => continue,
                }
            }
            let metadata = object.metadata_mut();
            if already && metadata.finalizers.as_ref() == Some(&finalizers) {
                // A second delete only shortens a pod's grace period.
                let shorter = metadata
                    .deletion_grace_period_seconds
                    .is_some_and(|current| grace < current);
                if !shorter {
                    return Ok(Deleted::Pending(with_revision(object, revision)));
                }
            }
            if !already || grace < metadata.deletion_grace_period_seconds.unwrap_or(0) {
                metadata.deletion_timestamp = Some(now_plus(grace));
                // Kubernetes' namespace storage sets no grace period.
                if !is_namespace {
                    metadata.deletion_grace_period_seconds = Some(grace);
                }
            }
            metadata.finalizers = Some(finalizers).filter(|f| !f.is_empty());
            if let Object::Namespace(namespace) = &mut object {
                namespace.status.get_or_insert_default().phase = Some("Terminating".to_owned());
            }
            if options.dry_run {
                return Ok(Deleted::Pending(with_revision(object, revision)));
            }
            let update = self
                .store
                .update(&key, encode_stored(&object), Some(revision));
            match self.timed("update", update).await? {
                TxnOutcome::Committed { revision, .. } => {
                    return Ok(Deleted::Pending(with_revision(object, revision)));
                }
                TxnOutcome::Failed {
                    precondition: Precondition::NotFound,
                    ..
                } => return Err(ApiError::not_found(kind, name)),
                TxnOutcome::Failed { .. } => {}
            }
        }
        Err(ApiError::conflict(kind, name))
    }
}

/// The namespaces kube's NamespaceLifecycle admission never lets anyone delete
/// (`kube-node-lease` is not among them: kube-apiserver recreates it).
const IMMORTAL_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

/// 403 as kube's `NewForbidden`: `namespaces "default" is forbidden: <why>` (without
/// the quoted name when there is none), with the object and `causes` in the details.
pub(super) fn forbidden(
    kind: &ResourceKind,
    name: &str,
    why: &str,
    causes: Vec<StatusCause>,
) -> ApiError {
    let resource = if kind.group.is_empty() {
        kind.plural.to_owned()
    } else {
        format!("{}.{}", kind.plural, kind.group)
    };
    let message = if name.is_empty() {
        format!("{resource} is forbidden: {why}")
    } else {
        format!("{resource} {name:?} is forbidden: {why}")
    };
    ApiError {
        details: Some(Box::new(StatusDetails {
            name: Some(name.to_owned()).filter(|n| !n.is_empty()),
            group: Some(kind.group.to_owned()).filter(|g| !g.is_empty()),
            kind: Some(kind.plural.to_owned()),
            causes: Some(causes).filter(|c| !c.is_empty()),
            ..Default::default()
        })),
        ..ApiError::forbidden(message)
    }
}

/// Whether finalizers hold an object being deleted: its `metadata.finalizers`, or a
/// Namespace's `spec.finalizers` (kube's `ShouldDeleteNamespaceDuringUpdate`).
fn holds_deletion(object: &Object) -> bool {
    object
        .metadata()
        .finalizers
        .as_ref()
        .is_some_and(|f| !f.is_empty())
        || !strategy::spec_finalizers(object).is_empty()
}

/// The grace period of a pod's deletion: none for a pod no node runs (nothing to stop),
/// else the request's, else the pod's `terminationGracePeriodSeconds` (default 30).
fn pod_grace(pod: &skiff_api::types::Pod, requested: Option<i64>) -> i64 {
    let spec = pod.spec.as_ref();
    let on_node = spec
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    if !on_node || finished {
        return 0;
    }
    requested
        .or_else(|| spec.and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30)
        .max(0)
}

/// A pod being deleted gracefully stays until its node removes it (a zero-grace delete).
fn is_graceful_pending(object: &Object) -> bool {
    matches!(object, Object::Pod(_))
        && object
            .metadata()
            .deletion_grace_period_seconds
            .is_some_and(|g| g > 0)
}

fn check_preconditions(
    object: &Object,
    revision: u64,
    options: &DeleteOptions,
) -> Result<(), ApiError> {
    let (kind, name) = (object.kind(), object.name());
    let uid = object.metadata().uid.as_deref().unwrap_or_default();
    if let Some(wanted) = options.uid.as_deref().filter(|u| *u != uid) {
        let why = format!(
            "the UID in the precondition ({wanted}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"
        );
        return Err(ApiError::conflict_with(kind, name, &why));
    }
    if let Some(wanted) = options
        .resource_version
        .as_deref()
        .filter(|rv| *rv != revision.to_string())
    {
        let why = format!(
            "the ResourceVersion in the precondition ({wanted}) does not match the ResourceVersion in record ({revision}). The object might have been modified"
        );
        return Err(ApiError::conflict_with(kind, name, &why));
    }
    Ok(())
}

fn with_revision(mut object: Object, revision: u64) -> Object {
    object.metadata_mut().resource_version = Some(revision.to_string());
    object
}

/// Everything a create does before allocation and the store write: the object and
/// its key.
fn prepare_create(
    mut object: Object,
    namespace: Option<&str>,
    manager: &str,
    applied: bool,
) -> Result<(Object, String), ApiError> {
    let kind = object.kind();
    let metadata = object.metadata_mut();
    if kind.namespaced {
        metadata.namespace = namespace.map(str::to_owned);
    } else {
        metadata.namespace = None;
    }
    if metadata.name.as_deref().unwrap_or_default().is_empty()
        && let Some(prefix) = metadata.generate_name.as_deref().filter(|p| !p.is_empty())
    {
        metadata.name = Some(generated_name(prefix));
    }
    metadata.uid = Some(uuid::Uuid::new_v4().to_string());
    metadata.creation_timestamp = Some(now());
    metadata.resource_version = None;
    metadata.generation = Some(1);
    metadata.deletion_timestamp = None;
    metadata.deletion_grace_period_seconds = None;
    strategy::prepare_for_create(&mut object);
    strategy::prepare_for_write(&mut object);
    object.apply_defaults();
    let name = object.name().to_owned();
    let prepare_errors = allocation::prepare(None, &mut object);
    let mut errors = object.validate();
    errors.extend(prepare_errors);
    if !errors.is_empty() {
        return Err(ApiError::invalid(kind, &name, &errors));
    }
    if !applied {
        managed::record(None, &mut object, manager, None);
    }
    let key = object_key(kind, object.namespace(), &name);
    Ok((object, key))
}

/// After a failed transaction at `op_index`: `Ok` to try again when the object
/// changed meanwhile, a released reservation changed, or another writer took a value
/// this write picked; 422 when the value taken is one the user asked for.
fn check_lost_reservation(
    object: &Object,
    changes: &Changes,
    picked: &std::collections::BTreeSet<Reservation>,
    op_index: usize,
) -> Result<(), ApiError> {
    match changes.created_at(op_index) {
        Some(reservation) if !picked.contains(&reservation) => {
            Err(allocation::taken_error(object, reservation))
        }
        _ => Ok(()),
    }
}

/// Everything an update does to the new state before the store write.
fn prepare_update(
    old: &Object,
    new: Object,
    namespace: Option<&str>,
    name: &str,
    writer: Writer<'_>,
) -> Result<Object, ApiError> {
    let kind = old.kind();
    let mut object = if strategy::has_status(old) || writer.part != Part::Main {
        strategy::merge_part(writer.part, old, new)
    } else {
        new
    };
    if object.name() != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            object.name()
        )));
    }
    {
        let old_meta = old.metadata();
        let metadata = object.metadata_mut();
        if kind.namespaced {
            metadata.namespace = namespace.map(str::to_owned);
        }
        metadata.name = Some(name.to_owned());
        metadata.uid.clone_from(&old_meta.uid);
        metadata
            .creation_timestamp
            .clone_from(&old_meta.creation_timestamp);
        metadata
            .deletion_timestamp
            .clone_from(&old_meta.deletion_timestamp);
        metadata
            .deletion_grace_period_seconds
            .clone_from(&old_meta.deletion_grace_period_seconds);
        metadata.generation = old_meta.generation;
        metadata
            .resource_version
            .clone_from(&old_meta.resource_version);
        if old_meta.deletion_timestamp.is_some() {
            // Kubernetes refuses new finalizers on an object being deleted.
            let old_finalizers = old_meta.finalizers.clone().unwrap_or_default();
            let added = metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| !old_finalizers.contains(f));
            if added {
                return Err(ApiError::invalid(
                    kind,
                    name,
                    &[FieldError::forbidden(
                        &FieldPath::new("metadata").child("finalizers"),
                        "no new finalizers can be added if the object is being deleted",
                    )],
                ));
            }
        }
    }
    strategy::prepare_for_write(&mut object);
    object.apply_defaults();
    let prepare_errors = allocation::prepare(Some(old), &mut object);
    if spec_of(&object) != spec_of(old) {
        let metadata = object.metadata_mut();
        metadata.generation = Some(metadata.generation.unwrap_or(0) + 1);
    }
    // A binding sets the node name, which pod updates may not change; nothing else
    // differs from the stored pod.
    let mut errors = if writer.part == Part::Binding {
        object.validate()
    } else {
        object.validate_update(old)
    };
    errors.extend(prepare_errors);
    if !errors.is_empty() {
        return Err(ApiError::invalid(kind, name, &errors));
    }
    if !writer.apply {
        managed::record(
            Some(old),
            &mut object,
            writer.manager,
            writer.part.subresource(),
        );
    }
    Ok(object)
}

/// The `spec` part of an object (or everything but metadata/status for kinds without
/// one), to decide whether generation advances.
fn spec_of(object: &Object) -> serde_json::Value {
    let mut value = object.to_value();
    if let Some(map) = value.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    value
}

fn encode_continue(start_after: &str) -> String {
    URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&ContinueToken {
            start_after: start_after.to_owned(),
        })
        .expect("token serializes"),
    )
}

fn decode_continue(token: &str) -> Result<ContinueToken, ApiError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| ApiError::bad_request("continue key is not valid: illegal base64 data"))?;
    serde_json::from_slice(&bytes).map_err(|_| ApiError::bad_request("continue key is not valid"))
}

/// The fields a field selector may name for `kind`, as Kubernetes supports them.
pub fn supported_field(kind: &ResourceKind, field: &str) -> bool {
    if matches!(field, "metadata.name" | "metadata.namespace") {
        return true;
    }
    let fields: &[&str] = match kind.kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "Namespace" => &["status.phase"],
        "Node" => &["spec.unschedulable"],
        "Service" => &["spec.clusterIP", "spec.type"],
        "ReplicaSet" => &["status.replicas"],
        "Secret" => &["type"],
        _ => &[],
    };
    fields.contains(&field)
}

/// The value of a selectable field of an object (as JSON), as Kubernetes renders it
/// for field selectors: missing strings are empty, booleans `true`/`false`.
pub fn field_value(object: &serde_json::Value, field: &str) -> String {
    let path = match field {
        // `source` selects `source.component`.
        "source" => "source.component",
        other => other,
    };
    let mut current = object;
    for part in path.split('.') {
        match current.get(part) {
            Some(next) => current = next,
            None => {
                return match field {
                    "spec.hostNetwork" | "spec.unschedulable" => "false".to_owned(),
                    "status.replicas" => "0".to_owned(),
                    _ => String::new(),
                };
            }
        }
    }
    match current {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl ListOptions {
    /// Whether the options select every object (no selectors).
    pub fn is_everything(&self) -> bool {
        self.labels.as_ref().is_none_or(Selector::is_everything) && self.fields.is_empty()
    }

    /// Whether an object (as JSON) passes the label and field selectors.
    pub fn matches(&self, object: &serde_json::Value) -> bool {
        if let Some(selector) = &self.labels {
            let labels: std::collections::BTreeMap<String, String> = object["metadata"]
                .get("labels")
                .and_then(serde_json::Value::as_object)
                .map(|map| {
                    map.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default();
            if !selector.matches(&labels) {
                return false;
            }
        }
        self.fields
            .iter()
            .all(|(field, value, equal)| (field_value(object, field) == *value) == *equal)
    }
}
