//! Objects on the store: keys, create/get/list/update/delete with Kubernetes'
//! metadata rules (uid, creationTimestamp, generation, generateName) and
//! resourceVersion semantics (the store revision; updates compare-and-swap on it).
//!
//! Objects are stored as JSON without `resourceVersion`: it is the key's
//! `mod_revision`, filled in on every read, as kube-apiserver does over etcd.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use skiff_api::codec::FieldValidation;
use skiff_api::meta::{Time, jiff};
use skiff_api::{Object, ResourceKind, Selector};

use super::error::ApiError;
use crate::store::{Consistency, KeyValue, Precondition, Store, TxnOutcome};

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
fn decode_stored(kind: &'static ResourceKind, kv: KeyValue) -> Result<Object, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::internal(format!(
            "stored {} {} is not JSON: {e}",
            kind.plural, kv.key
        ))
    })?;
    let mut object = Object::decode(kind, value, FieldValidation::Ignore)
        .map_err(|e| ApiError::internal(format!("stored object {} does not decode: {e}", kv.key)))?
        .object;
    object.metadata_mut().resource_version = Some(kv.mod_revision.to_string());
    Ok(object)
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
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
    Time(jiff::Timestamp::from_second(seconds).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
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

/// Object storage for the API server.
#[derive(Clone)]
pub struct Registry {
    store: Store,
}

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The store underneath.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates an object: fills in name (from generateName), uid, creationTimestamp and
    /// generation, applies defaults, validates, and stores it if the name is free.
    pub async fn create(
        &self,
        mut object: Object,
        namespace: Option<&str>,
    ) -> Result<Object, ApiError> {
        let kind = object.kind();
        let metadata = object.metadata_mut();
        if kind.namespaced {
            metadata.namespace = namespace.map(str::to_owned);
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
        object.apply_defaults();
        let name = object.name().to_owned();
        let errors = object.validate();
        if !errors.is_empty() {
            return Err(ApiError::invalid(kind, &name, &errors));
        }
        let key = object_key(kind, object.namespace(), &name);
        match self.store.create(&key, encode_stored(&object)).await? {
            TxnOutcome::Committed { revision, .. } => {
                object.metadata_mut().resource_version = Some(revision.to_string());
                Ok(object)
            }
            TxnOutcome::Failed { .. } => Err(ApiError::already_exists(kind, &name)),
        }
    }

    /// Reads one object.
    pub async fn get(
        &self,
        kind: &'static ResourceKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Object, ApiError> {
        let (kv, _) = self
            .store
            .get(
                &object_key(kind, namespace, name),
                Consistency::Linearizable,
            )
            .await?;
        decode_stored(kind, kv.ok_or_else(|| ApiError::not_found(kind, name))?)
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
            let page = self
                .store
                .range(
                    &prefix,
                    start_after.as_deref(),
                    wanted,
                    Consistency::Linearizable,
                )
                .await?;
            revision.get_or_insert(page.revision);
            let last_key = page.kvs.last().map(|kv| kv.key.clone());
            for kv in page.kvs {
                let object = decode_stored(kind, kv)?;
                if matches_options(&object, options) {
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

    /// Replaces an object. With `resourceVersion` set in `object`, only if it is still
    /// current (409 otherwise); without, unconditionally. Server-owned metadata (uid,
    /// creationTimestamp) is kept; generation advances when the spec changes.
    pub async fn update(
        &self,
        mut object: Object,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Object, ApiError> {
        let kind = object.kind();
        let key = object_key(kind, namespace, name);
        let (current, _) = self.store.get(&key, Consistency::Linearizable).await?;
        let current = current.ok_or_else(|| ApiError::not_found(kind, name))?;
        let current_revision = current.mod_revision;
        let old = decode_stored(kind, current)?;
        let expected =
            match object
                .metadata()
                .resource_version
                .as_deref()
                .filter(|rv| !rv.is_empty())
            {
                Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?),
                None => None,
            };
        if expected.is_some_and(|rv| rv != current_revision) {
            return Err(ApiError::conflict(kind, name));
        }
        {
            let old_meta = old.metadata();
            let metadata = object.metadata_mut();
            if kind.namespaced {
                metadata.namespace = namespace.map(str::to_owned);
            }
            metadata.uid.clone_from(&old_meta.uid);
            metadata
                .creation_timestamp
                .clone_from(&old_meta.creation_timestamp);
            metadata
                .deletion_timestamp
                .clone_from(&old_meta.deletion_timestamp);
            metadata.generation = old_meta.generation;
        }
        object.apply_defaults();
        if spec_of(&object) != spec_of(&old) {
            let metadata = object.metadata_mut();
            metadata.generation = Some(metadata.generation.unwrap_or(0) + 1);
        }
        let errors = object.validate_update(&old);
        if !errors.is_empty() {
            return Err(ApiError::invalid(kind, name, &errors));
        }
        match self
            .store
            .update(&key, encode_stored(&object), Some(current_revision))
            .await?
        {
            TxnOutcome::Committed { revision, .. } => {
                object.metadata_mut().resource_version = Some(revision.to_string());
                Ok(object)
            }
            TxnOutcome::Failed {
                precondition: Precondition::NotFound,
                ..
            } => Err(ApiError::not_found(kind, name)),
            TxnOutcome::Failed { .. } => Err(ApiError::conflict(kind, name)),
        }
    }

    /// Deletes an object, optionally only if its uid and/or resourceVersion match;
    /// returns its last state.
    pub async fn delete(
        &self,
        kind: &'static ResourceKind,
        namespace: Option<&str>,
        name: &str,
        precondition_uid: Option<&str>,
        precondition_rv: Option<&str>,
    ) -> Result<Object, ApiError> {
        let key = object_key(kind, namespace, name);
        let (current, _) = self.store.get(&key, Consistency::Linearizable).await?;
        let current = current.ok_or_else(|| ApiError::not_found(kind, name))?;
        let revision = current.mod_revision;
        let object = decode_stored(kind, current)?;
        if let Some(uid) = precondition_uid.filter(|u| object.metadata().uid.as_deref() != Some(*u))
        {
            let why = format!(
                "the UID in the precondition ({uid}) does not match the UID in record ({}). The object might have been deleted and then recreated",
                object.metadata().uid.as_deref().unwrap_or_default()
            );
            return Err(ApiError::conflict_with(kind, name, &why));
        }
        if let Some(rv) = precondition_rv.filter(|rv| *rv != revision.to_string()) {
            let why = format!(
                "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({revision}). The object might have been modified"
            );
            return Err(ApiError::conflict_with(kind, name, &why));
        }
        match self.store.delete(&key, Some(revision)).await? {
            TxnOutcome::Committed { .. } => Ok(object),
            TxnOutcome::Failed {
                precondition: Precondition::NotFound,
                ..
            } => Err(ApiError::not_found(kind, name)),
            TxnOutcome::Failed { .. } => Err(ApiError::conflict(kind, name)),
        }
    }
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

/// Label and field selector filtering.
fn matches_options(object: &Object, options: &ListOptions) -> bool {
    let metadata = object.metadata();
    if let Some(selector) = &options.labels {
        let labels = metadata.labels.clone().unwrap_or_default();
        if !selector.matches(&labels) {
            return false;
        }
    }
    options.fields.iter().all(|(field, value, equal)| {
        let actual = field_value(object, field);
        (actual.as_deref() == Some(value.as_str())) == *equal
    })
}

/// The fields a field selector may name (Kubernetes' supported set for our kinds).
pub fn field_value(object: &Object, field: &str) -> Option<String> {
    let metadata = object.metadata();
    match field {
        "metadata.name" => metadata.name.clone(),
        "metadata.namespace" => Some(metadata.namespace.clone().unwrap_or_default()),
        _ => {
            let value = object.to_value();
            let mut current = &value;
            for part in field.split('.') {
                current = current.get(part)?;
            }
            match current {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Null => Some(String::new()),
                other => Some(other.to_string()),
            }
        }
    }
}
