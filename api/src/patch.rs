//! PATCH bodies as kube-apiserver applies them: JSON patch (RFC 6902), JSON merge patch
//! (RFC 7396) and strategic merge patch, plus the per-kind table of list strategies that
//! strategic merge and server-side apply (see [`crate::managed`]) share.
//!
//! Strategic merge follows apimachinery's `strategicpatch` package: maps merge recursively
//! and `null` deletes a key; lists tagged `patchStrategy:"merge"` in Kubernetes' Go types
//! merge by their `patchMergeKey` (or as sets, for lists of primitives) and every other list
//! is replaced. The directives `$patch` (`replace`, `delete`), `$retainKeys`,
//! `$setElementOrder/<field>` and `$deleteFromPrimitiveList/<field>` are honoured and never
//! left in the result. As in Kubernetes, `$patch: merge` is refused: maps merge anyway and
//! lists cannot be told to merge.

use serde_json::{Map, Value};

use crate::kind::{self, ResourceKind};

/// The body formats a PATCH request may carry, named by its `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// RFC 6902 JSON patch: a list of operations (`application/json-patch+json`).
    Json,
    /// RFC 7396 JSON merge patch (`application/merge-patch+json`).
    Merge,
    /// Kubernetes' strategic merge patch (`application/strategic-merge-patch+json`).
    StrategicMerge,
    /// Server-side apply (`application/apply-patch+yaml`), handled by [`crate::managed`].
    Apply,
}

impl PatchType {
    /// The patch type a `Content-Type` header names, ignoring parameters after `;`, or
    /// `None` for any other media type.
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        match media_type.to_ascii_lowercase().as_str() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/apply-patch+yaml" => Some(PatchType::Apply),
            _ => None,
        }
    }

    /// The media type of this patch type, as a `Content-Type` header carries it.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Why a patch could not be applied. Every variant is the client's fault (HTTP 422 or
/// 400); none is worth retrying unchanged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An apply patch was given to [`patch`]; server-side apply lives in
    /// [`crate::managed::apply`].
    #[error("apply patches are handled by server-side apply")]
    ApplyNotSupported,
    /// The object or the patch is not a JSON object where one is required.
    #[error("invalid JSON document: the {what} must be a JSON object")]
    NotAnObject {
        /// `patch` or `object`.
        what: &'static str,
    },
    /// The body is not a list of RFC 6902 operations.
    #[error("invalid JSON patch: {0}")]
    InvalidJsonPatch(String),
    /// A JSON patch operation does not apply to the object.
    #[error("{message}")]
    JsonPatchFailed {
        /// Zero-based index of the failing operation.
        operation: usize,
        /// The operation's JSON pointer.
        path: String,
        /// What went wrong, worded like Kubernetes' JSON patch library.
        message: String,
    },
    /// A strategic merge patch is malformed at `path` (a bad directive, a list element
    /// without its merge key, mixed element types).
    #[error("{message}")]
    StrategicMerge {
        /// Dotted path of the offending field from the object root, `[]` marking list
        /// elements (`spec.template.spec.containers`).
        path: String,
        /// What is wrong, worded like apimachinery's `strategicpatch`.
        message: String,
    },
}

type Result<T> = std::result::Result<T, Error>;

/// Applies `patch` of `patch_type` to `current`, an object of `kind`, and returns the
/// patched object. Server-side apply is not a patch in this sense: [`PatchType::Apply`]
/// is refused with [`Error::ApplyNotSupported`].
pub fn patch(
    kind: &ResourceKind,
    current: &Value,
    patch: &Value,
    patch_type: PatchType,
) -> Result<Value> {
    match patch_type {
        PatchType::Json => json_patch_apply(current, patch),
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(Error::NotAnObject { what: "patch" });
            }
            let mut patched = current.clone();
            json_patch::merge(&mut patched, patch);
            Ok(patched)
        }
        PatchType::StrategicMerge => strategic_merge(kind, current, patch),
        PatchType::Apply => Err(Error::ApplyNotSupported),
    }
}

fn json_patch_apply(current: &Value, patch: &Value) -> Result<Value> {
    let operations: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|error| Error::InvalidJsonPatch(error.to_string()))?;
    let mut patched = current.clone();
    json_patch::patch(&mut patched, &operations).map_err(|error| {
        let path = error.path.to_string();
        let operation = operations.0.get(error.operation);
        let (op_name, from) = match operation {
            Some(json_patch::PatchOperation::Add(_)) => ("add", None),
            Some(json_patch::PatchOperation::Remove(_)) => ("remove", None),
            Some(json_patch::PatchOperation::Replace(_)) => ("replace", None),
            Some(json_patch::PatchOperation::Move(op)) => ("move", Some(op.from.to_string())),
            Some(json_patch::PatchOperation::Copy(op)) => ("copy", Some(op.from.to_string())),
            Some(json_patch::PatchOperation::Test(_)) | None => ("test", None),
        };
        let message = match error.kind {
            json_patch::PatchErrorKind::TestFailed => {
                format!("testing value {path} failed: test failed")
            }
            json_patch::PatchErrorKind::InvalidFromPointer => format!(
                "{op_name} operation does not apply: doc is missing from path: {:?}: missing value",
                from.unwrap_or_default()
            ),
            json_patch::PatchErrorKind::CannotMoveInsideItself => {
                format!("{op_name} operation does not apply: cannot move {path:?} inside itself")
            }
            _ => format!(
                "{op_name} operation does not apply: doc is missing path: {path:?}: missing value"
            ),
        };
        Error::JsonPatchFailed {
            operation: error.operation,
            path,
            message,
        }
    })?;
    Ok(patched)
}

// ---------------------------------------------------------------------------------------
// The list strategy table.
// ---------------------------------------------------------------------------------------

/// How strategic merge patch treats a list field (`patchStrategy` in the Go struct tags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatchStrategy {
    /// The patch's list replaces the object's (no tag).
    Replace,
    /// `patchStrategy:"merge"`: elements merge by the merge key, or as a set of primitives
    /// when there is no key.
    Merge(Option<&'static str>),
}

/// How server-side apply treats a list field (`+listType` in the Go types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListType {
    /// Owned and replaced as a whole.
    Atomic,
    /// A set of primitives; each value is owned on its own.
    Set,
    /// An associative list keyed by these fields; each element is owned on its own.
    Map(&'static [&'static str]),
}

/// The strategies of one list field for both kinds of merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ListField {
    /// Strategic merge patch strategy.
    pub(crate) patch: PatchStrategy,
    /// Server-side apply list type.
    pub(crate) apply: ListType,
}

impl ListField {
    /// A list neither merge sees inside: the default for any list not in the table.
    const ATOMIC: ListField = ListField {
        patch: PatchStrategy::Replace,
        apply: ListType::Atomic,
    };
}

/// One row of the field table; paths are relative to where the table is mounted and use
/// `[]` for "any element of this list" (`containers[].ports`).
enum Entry {
    /// A list with its strategies.
    List(&'static str, ListField),
    /// A map or struct that server-side apply owns as a whole (`+mapType=atomic`,
    /// `+structType=atomic`).
    AtomicMap(&'static str),
    /// A map with arbitrary keys (labels, resource lists): when one appears, its
    /// presence is owned as well as its keys, as Kubernetes records it.
    Map(&'static str),
    /// Another table mounted under a prefix that ends in `.`.
    Nested(&'static str, &'static [Entry]),
}

const fn merge_by(key: &'static str, apply_keys: &'static [&'static str]) -> ListField {
    ListField {
        patch: PatchStrategy::Merge(Some(key)),
        apply: ListType::Map(apply_keys),
    }
}

const PRIMITIVE_SET: ListField = ListField {
    patch: PatchStrategy::Merge(None),
    apply: ListType::Set,
};

const CONDITIONS: ListField = merge_by("type", &["type"]);

/// `ObjectMeta` (apimachinery meta/v1 types.go).
const OBJECT_META: &[Entry] = &[
    Entry::List("ownerReferences", merge_by("uid", &["uid"])),
    Entry::AtomicMap("ownerReferences[]"),
    Entry::List("finalizers", PRIMITIVE_SET),
    Entry::Map("labels"),
    Entry::Map("annotations"),
];

/// `Container` and `EphemeralContainerCommon` (core/v1 types.go).
const CONTAINER: &[Entry] = &[
    Entry::List(
        "ports",
        merge_by("containerPort", &["containerPort", "protocol"]),
    ),
    Entry::List("env", merge_by("name", &["name"])),
    Entry::AtomicMap("env[].valueFrom.configMapKeyRef"),
    Entry::AtomicMap("env[].valueFrom.secretKeyRef"),
    Entry::AtomicMap("env[].valueFrom.fieldRef"),
    Entry::AtomicMap("env[].valueFrom.resourceFieldRef"),
    Entry::AtomicMap("env[].valueFrom.fileKeyRef"),
    Entry::List("volumeMounts", merge_by("mountPath", &["mountPath"])),
    Entry::List("volumeDevices", merge_by("devicePath", &["devicePath"])),
    Entry::List(
        "resources.claims",
        ListField {
            patch: PatchStrategy::Replace,
            apply: ListType::Map(&["name"]),
        },
    ),
    Entry::Map("resources.limits"),
    Entry::Map("resources.requests"),
];

/// `PodSpec` (core/v1 types.go).
const POD_SPEC: &[Entry] = &[
    Entry::List("containers", merge_by("name", &["name"])),
    Entry::Nested("containers[].", CONTAINER),
    Entry::List("initContainers", merge_by("name", &["name"])),
    Entry::Nested("initContainers[].", CONTAINER),
    Entry::List("ephemeralContainers", merge_by("name", &["name"])),
    Entry::Nested("ephemeralContainers[].", CONTAINER),
    Entry::List("volumes", merge_by("name", &["name"])),
    Entry::List("imagePullSecrets", merge_by("name", &["name"])),
    Entry::AtomicMap("imagePullSecrets[]"),
    Entry::List("hostAliases", merge_by("ip", &["ip"])),
    Entry::List(
        "topologySpreadConstraints",
        merge_by("topologyKey", &["topologyKey", "whenUnsatisfiable"]),
    ),
    Entry::AtomicMap("topologySpreadConstraints[].labelSelector"),
    Entry::List("schedulingGates", merge_by("name", &["name"])),
    Entry::List("resourceClaims", merge_by("name", &["name"])),
    Entry::AtomicMap("nodeSelector"),
    Entry::AtomicMap("affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"),
    Entry::Map("overhead"),
];

/// `PodStatus` (core/v1 types.go).
const POD_STATUS: &[Entry] = &[
    Entry::List("conditions", CONDITIONS),
    Entry::List("podIPs", merge_by("ip", &["ip"])),
    Entry::List(
        "hostIPs",
        ListField {
            patch: PatchStrategy::Merge(Some("ip")),
            apply: ListType::Atomic,
        },
    ),
    Entry::List("resourceClaimStatuses", merge_by("name", &["name"])),
    Entry::List(
        "containerStatuses[].volumeMounts",
        merge_by("mountPath", &["mountPath"]),
    ),
    Entry::List(
        "containerStatuses[].allocatedResourcesStatus",
        merge_by("name", &["name"]),
    ),
];

/// A `PodTemplateSpec` (Deployment and ReplicaSet `spec.template`).
const POD_TEMPLATE: &[Entry] = &[
    Entry::Nested("metadata.", OBJECT_META),
    Entry::Nested("spec.", POD_SPEC),
];

const POD: &[Entry] = &[
    Entry::Nested("spec.", POD_SPEC),
    Entry::Nested("status.", POD_STATUS),
];

const WORKLOAD: &[Entry] = &[
    Entry::AtomicMap("spec.selector"),
    Entry::Nested("spec.template.", POD_TEMPLATE),
    Entry::List("status.conditions", CONDITIONS),
];

const SERVICE: &[Entry] = &[
    Entry::List("spec.ports", merge_by("port", &["port", "protocol"])),
    Entry::AtomicMap("spec.selector"),
    Entry::List("status.conditions", CONDITIONS),
];

const NODE: &[Entry] = &[
    Entry::List("spec.podCIDRs", PRIMITIVE_SET),
    Entry::List("status.conditions", CONDITIONS),
    Entry::List("status.addresses", merge_by("type", &["type"])),
    Entry::Map("status.capacity"),
    Entry::Map("status.allocatable"),
];

const NAMESPACE: &[Entry] = &[Entry::List("status.conditions", CONDITIONS)];

const EVENT: &[Entry] = &[
    Entry::AtomicMap("involvedObject"),
    Entry::AtomicMap("related"),
];

/// Secrets' `data` and `stringData` are maps with arbitrary keys.
const SECRET: &[Entry] = &[Entry::Map("data"), Entry::Map("stringData")];

/// The table of `kind`, beyond `metadata`.
fn kind_table(kind: &ResourceKind) -> &'static [Entry] {
    if *kind == kind::POD {
        POD
    } else if *kind == kind::DEPLOYMENT || *kind == kind::REPLICA_SET {
        WORKLOAD
    } else if *kind == kind::SERVICE {
        SERVICE
    } else if *kind == kind::NODE {
        NODE
    } else if *kind == kind::NAMESPACE {
        NAMESPACE
    } else if *kind == kind::EVENT {
        EVENT
    } else if *kind == kind::SECRET {
        SECRET
    } else {
        // Endpoints' lists (`subsets` and everything in them) are all atomic; Leases
        // have neither lists nor maps.
        &[]
    }
}

fn find_in<'a>(table: &'a [Entry], path: &str, found: &mut impl FnMut(&'a Entry) -> bool) -> bool {
    table.iter().any(|entry| match entry {
        Entry::Nested(prefix, nested) => path
            .strip_prefix(prefix)
            .is_some_and(|rest| find_in(nested, rest, found)),
        Entry::List(entry_path, _) | Entry::AtomicMap(entry_path) | Entry::Map(entry_path) => {
            *entry_path == path && found(entry)
        }
    })
}

fn find(kind: &ResourceKind, path: &str, mut found: impl FnMut(&'static Entry) -> bool) -> bool {
    if let Some(rest) = path.strip_prefix("metadata.") {
        return find_in(OBJECT_META, rest, &mut found);
    }
    find_in(kind_table(kind), path, &mut found)
}

/// The strategies of the list at `path` (dotted from the object root, `[]` for list
/// elements) in objects of `kind`; lists not in the table are atomic.
pub(crate) fn list_field(kind: &ResourceKind, path: &str) -> ListField {
    let mut field = ListField::ATOMIC;
    find(kind, path, |entry| match entry {
        Entry::List(_, list) => {
            field = *list;
            true
        }
        _ => false,
    });
    field
}

/// Whether server-side apply owns the map or struct at `path` as a whole.
pub(crate) fn is_atomic_map(kind: &ResourceKind, path: &str) -> bool {
    find(kind, path, |entry| matches!(entry, Entry::AtomicMap(_)))
}

/// Whether `path` holds a map with arbitrary keys (as opposed to a struct).
pub(crate) fn is_map(kind: &ResourceKind, path: &str) -> bool {
    find(kind, path, |entry| matches!(entry, Entry::Map(_)))
}

/// `path` extended by the field `name`.
pub(crate) fn child_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// `path` extended to "any element of this list".
pub(crate) fn element_path(path: &str) -> String {
    format!("{path}[]")
}

/// JSON equality as Go sees decoded JSON: all numbers are `float64`, so `80` equals
/// `80.0`.
pub(crate) fn json_eq(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(l), Value::Number(r)) => l == r || l.as_f64() == r.as_f64(),
        (Value::Array(l), Value::Array(r)) => {
            l.len() == r.len() && l.iter().zip(r).all(|(l, r)| json_eq(l, r))
        }
        (Value::Object(l), Value::Object(r)) => {
            l.len() == r.len()
                && l.iter()
                    .all(|(key, l)| r.get(key).is_some_and(|r| json_eq(l, r)))
        }
        _ => left == right,
    }
}

// ---------------------------------------------------------------------------------------
// Strategic merge patch.
// ---------------------------------------------------------------------------------------

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

fn smp_error(path: &str, message: impl Into<String>) -> Error {
    Error::StrategicMerge {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn strategic_merge(kind: &ResourceKind, current: &Value, patch: &Value) -> Result<Value> {
    let Value::Object(patch) = patch else {
        return Err(Error::NotAnObject { what: "patch" });
    };
    let Value::Object(current) = current else {
        return Err(Error::NotAnObject { what: "object" });
    };
    let merger = Merger { kind };
    Ok(Value::Object(merger.merge_map(
        "",
        current.clone(),
        patch.clone(),
    )?))
}

/// Removes directives and `null` values from a patch value that is copied into the
/// object without merging. As apimachinery's `removeDirectives` does, a map carrying a
/// `$patch` directive is dropped altogether (`None`).
fn clean(value: Value) -> Option<Value> {
    match value {
        Value::Object(map) => {
            if map.contains_key(DIRECTIVE) {
                return None;
            }
            let cleaned = map
                .into_iter()
                .filter(|(key, value)| !key.starts_with('$') && !value.is_null())
                .filter_map(|(key, value)| clean(value).map(|value| (key, value)))
                .collect();
            Some(Value::Object(cleaned))
        }
        Value::Array(items) => Some(Value::Array(items.into_iter().filter_map(clean).collect())),
        other => Some(other),
    }
}

fn clean_map(map: Map<String, Value>) -> Map<String, Value> {
    match clean(Value::Object(map)) {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

/// Element kind of a list (or of two lists together), as `sliceElementType` checks it:
/// all elements alike and no lists of lists.
fn element_type(path: &str, lists: &[&[Value]]) -> Result<Option<&'static str>> {
    let mut seen: Option<&'static str> = None;
    for item in lists.iter().flat_map(|list| list.iter()) {
        let this = type_name(item);
        if this == "list" {
            return Err(smp_error(path, "lists of lists are not supported"));
        }
        match seen {
            None => seen = Some(this),
            Some(previous) if previous != this => {
                return Err(smp_error(path, "list element types are not identical"));
            }
            Some(_) => {}
        }
    }
    Ok(seen)
}

fn no_merge_key(path: &str, item: &Value, key: &str) -> Error {
    smp_error(
        path,
        format!("map: {item} does not contain declared merge key: {key}"),
    )
}

/// The merge key's value of a list element, or the element itself for primitives.
fn identity<'v>(item: &'v Value, key: Option<&str>) -> Option<&'v Value> {
    match key {
        Some(key) => item.get(key),
        None => Some(item),
    }
}

fn position(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    let wanted = identity(item, key);
    list.iter().position(|candidate| {
        let candidate = identity(candidate, key);
        match (wanted, candidate) {
            (Some(w), Some(c)) => json_eq(w, c),
            (None, None) => true,
            _ => false,
        }
    })
}

/// Sorts `items` by their position in `order`, keeping items not in it where they are
/// relative to each other (after the ordered ones).
fn sort_by_order(items: &mut [Value], order: &[Value], key: Option<&str>) {
    items.sort_by_key(|item| position(order, item, key).unwrap_or(usize::MAX));
}

/// `mergeSortedSlice`: interleaves `server_only` into `patch_items`, both already sorted,
/// using `server_order` (the live list) to place each server-only item before the first
/// patch item that follows it there.
fn merge_sorted(
    server_only: Vec<Value>,
    patch_items: Vec<Value>,
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let mut merged = Vec::with_capacity(server_only.len() + patch_items.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => {
                match (
                    position(server_order, l, key),
                    position(server_order, r, key),
                ) {
                    (Some(li), Some(ri)) => li < ri,
                    _ => false,
                }
            }
        };
        let next = if take_left { left.next() } else { right.next() };
        merged.extend(next);
    }
    merged
}

/// `normalizeElementOrder`: patch items in the patch's order, server-only items in the
/// server's order, interleaved.
fn normalize_order(
    merged: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let (mut patch_items, mut server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|item| position(patch_order, item, key).is_some());
    sort_by_order(&mut patch_items, patch_order, key);
    sort_by_order(&mut server_only, server_order, key);
    merge_sorted(server_only, patch_items, server_order, key)
}

struct Merger<'k> {
    kind: &'k ResourceKind,
}

impl Merger<'_> {
    /// `mergeMap` with `MergeParallelList` and `IgnoreUnmatchedNulls`, as the API server
    /// applies a strategic merge patch.
    fn merge_map(
        &self,
        path: &str,
        mut original: Map<String, Value>,
        mut patch: Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        if let Some(directive) = patch.remove(DIRECTIVE) {
            return match directive.as_str() {
                Some("replace") => Ok(clean_map(patch)),
                Some("delete") => Ok(Map::new()),
                _ => Err(smp_error(
                    path,
                    format!(
                        "unknown patch type: {} in map: {}",
                        directive_text(&directive),
                        Value::Object(patch)
                    ),
                )),
            };
        }

        if let Some(retain) = patch.remove(RETAIN_KEYS) {
            self.retain_keys(path, &mut original, &patch, &retain)?;
        }

        // `$setElementOrder/<field>` lists first: they merge their field's list themselves.
        let order_keys: Vec<String> = patch
            .keys()
            .filter(|key| key.starts_with(SET_ELEMENT_ORDER))
            .cloned()
            .collect();
        for order_key in order_keys {
            let order = patch.remove(&order_key).unwrap_or(Value::Null);
            let field = directive_field(path, &order_key, SET_ELEMENT_ORDER)?;
            self.set_element_order(path, field, &order, &mut original, &mut patch)?;
        }

        // Deletions from primitive lists, then every ordinary key.
        let mut deletions = Vec::new();
        for (key, patch_value) in patch {
            if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
                let field = directive_field(path, &key, DELETE_FROM_PRIMITIVE_LIST)?;
                deletions.push((field.to_owned(), patch_value));
                continue;
            }
            if key.starts_with('$') {
                return Err(smp_error(path, format!("unknown patch directive: {key}")));
            }
            let field_path = child_path(path, &key);
            if patch_value.is_null() {
                original.remove(&key);
                continue;
            }
            let merged = match (original.remove(&key), patch_value) {
                (Some(Value::Object(original_map)), Value::Object(patch_map)) => Some(
                    Value::Object(self.merge_map(&field_path, original_map, patch_map)?),
                ),
                (Some(Value::Array(original_list)), Value::Array(patch_list)) => Some(
                    Value::Array(self.merge_list(&field_path, original_list, patch_list)?),
                ),
                (_, patch_value) => clean(patch_value),
            };
            if let Some(merged) = merged {
                original.insert(key, merged);
            }
        }
        for (field, deleted) in deletions {
            let field_path = child_path(path, &field);
            if deleted.is_null() {
                original.remove(&field);
                continue;
            }
            let Some(current) = original.get_mut(&field) else {
                continue;
            };
            let (Value::Array(list), Value::Array(deleted)) = (current, &deleted) else {
                return Err(smp_error(
                    &field_path,
                    "invalid patch format of primitive list",
                ));
            };
            if element_type(&field_path, &[list, deleted])? == Some("map") {
                return Err(smp_error(
                    &field_path,
                    "invalid patch format of primitive list",
                ));
            }
            list.retain(|item| !deleted.iter().any(|gone| json_eq(gone, item)));
        }
        Ok(original)
    }

    /// `applyRetainKeysDirective`: drops the keys of `original` not listed, after checking
    /// the patch sets only listed keys.
    fn retain_keys(
        &self,
        path: &str,
        original: &mut Map<String, Value>,
        patch: &Map<String, Value>,
        retain: &Value,
    ) -> Result<()> {
        let bad = || smp_error(path, "invalid patch format of retainKeys");
        let Value::Array(retained) = retain else {
            return Err(bad());
        };
        let is_retained = |key: &str| retained.iter().any(|kept| kept.as_str() == Some(key));
        for (key, value) in patch {
            if value.is_null()
                || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
                || key.starts_with(SET_ELEMENT_ORDER)
            {
                continue;
            }
            if !is_retained(key) {
                return Err(bad());
            }
        }
        original.retain(|key, _| is_retained(key));
        Ok(())
    }

    /// `mergePatchIntoOriginal` for one `$setElementOrder/<field>` directive: merges the
    /// field's list (if the patch has one) and orders the result by the directive.
    fn set_element_order(
        &self,
        path: &str,
        field: &str,
        order: &Value,
        original: &mut Map<String, Value>,
        patch: &mut Map<String, Value>,
    ) -> Result<()> {
        let field_path = child_path(path, field);
        let bad = || smp_error(&field_path, "invalid patch format of setElementOrder list");
        let Value::Array(order) = order else {
            return Err(bad());
        };
        let original_list = match original.remove(field) {
            Some(Value::Array(list)) => Some(list),
            Some(other) => {
                original.insert(field.to_owned(), other);
                return Err(bad());
            }
            None => None,
        };
        let patch_list = match patch.remove(field) {
            Some(Value::Array(list)) => Some(list),
            Some(_) => return Err(bad()),
            None => None,
        };
        let key = match list_field(self.kind, &field_path).patch {
            PatchStrategy::Merge(key) => key,
            PatchStrategy::Replace => None,
        };
        if let Some(patch_list) = &patch_list {
            validate_order(&field_path, patch_list, order, key)?;
        }
        let server_order = original_list.clone().unwrap_or_default();
        let merged = match (original_list, patch_list) {
            (Some(original_list), None) => original_list,
            (None, Some(patch_list)) => patch_list.into_iter().filter_map(clean).collect(),
            (Some(original_list), Some(patch_list)) => {
                self.merge_list(&field_path, original_list, patch_list)?
            }
            (None, None) => return Ok(()),
        };
        if let Some(key) = key
            && let Some(item) = merged
                .iter()
                .chain(order.iter())
                .find(|item| item.get(key).is_none())
        {
            return Err(no_merge_key(&field_path, item, key));
        }
        let ordered = normalize_order(merged, order, &server_order, key);
        original.insert(field.to_owned(), Value::Array(ordered));
        Ok(())
    }

    /// `mergeSliceHandler`: merges lists tagged `merge`, replaces the others.
    fn merge_list(
        &self,
        path: &str,
        original: Vec<Value>,
        patch: Vec<Value>,
    ) -> Result<Vec<Value>> {
        match list_field(self.kind, path).patch {
            PatchStrategy::Replace => Ok(patch.into_iter().filter_map(clean).collect()),
            PatchStrategy::Merge(key) => self.merge_slice(path, original, patch, key),
        }
    }

    /// `mergeSlice`: merges two lists of a `merge` list field.
    fn merge_slice(
        &self,
        path: &str,
        original: Vec<Value>,
        patch: Vec<Value>,
        key: Option<&'static str>,
    ) -> Result<Vec<Value>> {
        if original.is_empty() && patch.is_empty() {
            return Ok(original);
        }
        let element_kind = element_type(path, &[&original, &patch])?;
        if element_kind != Some("map") {
            // Lists of primitives are sets: union, first occurrence wins.
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for item in original.iter().chain(patch.iter()) {
                if !merged.iter().any(|seen| json_eq(seen, item)) {
                    merged.push(item.clone());
                }
            }
            return Ok(normalize_order(merged, &patch, &original, None));
        }
        let Some(key) = key else {
            return Err(smp_error(
                path,
                format!("cannot merge lists without merge key for {path}"),
            ));
        };
        let item_path = element_path(path);

        // `$patch` elements: deletions by key, or one `replace` for the whole list.
        let mut original = original;
        let mut plain_patch = Vec::with_capacity(patch.len());
        let mut replace = false;
        for item in patch {
            let Some(directive) = item.get(DIRECTIVE) else {
                plain_patch.push(item);
                continue;
            };
            match directive.as_str() {
                Some("delete") => {
                    let Some(gone) = item.get(key) else {
                        return Err(no_merge_key(path, &item, key));
                    };
                    original.retain(|candidate| {
                        !candidate.get(key).is_some_and(|value| json_eq(value, gone))
                    });
                }
                Some("replace") => replace = true,
                Some("merge") => {
                    return Err(smp_error(
                        path,
                        "merging lists cannot yet be specified in the patch",
                    ));
                }
                _ => {
                    return Err(smp_error(
                        path,
                        format!(
                            "unknown patch type: {} in map: {item}",
                            directive_text(directive)
                        ),
                    ));
                }
            }
        }
        let (mut merged, plain_patch) = if replace {
            let replacement: Vec<Value> = plain_patch.into_iter().filter_map(clean).collect();
            (replacement, Vec::new())
        } else {
            (original, plain_patch)
        };
        let server_order = merged.clone();

        for item in plain_patch.iter().cloned() {
            let Some(value) = item.get(key) else {
                return Err(no_merge_key(path, &item, key));
            };
            let found = merged.iter().position(|candidate| {
                candidate
                    .get(key)
                    .is_some_and(|candidate| json_eq(candidate, value))
            });
            match (found, item) {
                (Some(index), Value::Object(patch_map)) => {
                    let current = std::mem::take(&mut merged[index]);
                    let current = match current {
                        Value::Object(map) => map,
                        _ => Map::new(),
                    };
                    merged[index] = Value::Object(self.merge_map(&item_path, current, patch_map)?);
                }
                (_, item) => merged.extend(clean(item)),
            }
        }
        Ok(normalize_order(
            merged,
            &plain_patch,
            &server_order,
            Some(key),
        ))
    }
}

/// A directive's value as Go's `%s` prints it: strings bare, anything else as JSON.
fn directive_text(directive: &Value) -> String {
    match directive {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The field a `$setElementOrder/<field>` or `$deleteFromPrimitiveList/<field>` key names.
fn directive_field<'k>(path: &str, key: &'k str, prefix: &str) -> Result<&'k str> {
    match key.split_once('/') {
        Some((head, field)) if head == prefix && !field.is_empty() => Ok(field),
        _ if prefix == SET_ELEMENT_ORDER => Err(smp_error(
            path,
            "invalid patch format of setElementOrder list",
        )),
        _ => Err(smp_error(path, "invalid patch format of primitive list")),
    }
}

/// `validatePatchWithSetOrderList`: the patch list's elements appear in the order list,
/// in the same relative order.
fn validate_order(
    path: &str,
    patch_list: &[Value],
    order: &[Value],
    key: Option<&str>,
) -> Result<()> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let kept: Vec<&Value> = patch_list
        .iter()
        .filter(|item| {
            key.is_none() || item.get(DIRECTIVE).and_then(Value::as_str) != Some("delete")
        })
        .collect();
    let (mut patch_index, mut order_index) = (0, 0);
    while let (Some(item), Some(ordered)) = (kept.get(patch_index), order.get(order_index)) {
        if item.get(DIRECTIVE).is_some() {
            patch_index += 1;
            continue;
        }
        let equal = match key {
            None => json_eq(item, ordered),
            Some(key) => {
                let item_key = item.get(key).ok_or_else(|| no_merge_key(path, item, key))?;
                let ordered_key = ordered
                    .get(key)
                    .ok_or_else(|| no_merge_key(path, ordered, key))?;
                json_eq(item_key, ordered_key)
            }
        };
        if equal {
            patch_index += 1;
        }
        order_index += 1;
    }
    if patch_index < kept.len() {
        return Err(smp_error(
            path,
            format!(
                "the order in patch list {} doesn't match $setElementOrder list {}",
                Value::Array(patch_list.to_vec()),
                Value::Array(order.to_vec())
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kind::{DEPLOYMENT, NODE, POD, SERVICE};

    /// Applies `patch` of `patch_type` to `current` and compares with `expected`, which is
    /// either the patched object or `Err(substring of the error message)`.
    fn check(
        kind: &ResourceKind,
        patch_type: PatchType,
        current: Value,
        patch_body: Value,
        expected: std::result::Result<Value, &str>,
    ) {
        let got = patch(kind, &current, &patch_body, patch_type);
        match (got, expected) {
            (Ok(got), Ok(expected)) => assert_eq!(
                got, expected,
                "patch {patch_body} on {current}: got {got}, expected {expected}"
            ),
            (Err(error), Err(fragment)) => assert!(
                error.to_string().contains(fragment),
                "patch {patch_body}: error {error:?} does not mention {fragment:?}"
            ),
            (got, expected) => {
                panic!("patch {patch_body} on {current}: got {got:?}, expected {expected:?}")
            }
        }
    }

    fn smp(kind: &ResourceKind, current: Value, patch_body: Value, expected: Value) {
        check(
            kind,
            PatchType::StrategicMerge,
            current,
            patch_body,
            Ok(expected),
        );
    }

    fn smp_err(kind: &ResourceKind, current: Value, patch_body: Value, fragment: &str) {
        check(
            kind,
            PatchType::StrategicMerge,
            current,
            patch_body,
            Err(fragment),
        );
    }

    fn deployment(containers: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": containers}}},
        })
    }

    #[test]
    fn content_types() {
        for (header, expected) in [
            ("application/json-patch+json", Some(PatchType::Json)),
            ("application/merge-patch+json", Some(PatchType::Merge)),
            (
                "application/strategic-merge-patch+json; charset=utf-8",
                Some(PatchType::StrategicMerge),
            ),
            ("application/apply-patch+yaml", Some(PatchType::Apply)),
            (
                "Application/Apply-Patch+YAML ;charset=utf-8",
                Some(PatchType::Apply),
            ),
            ("application/json", None),
            ("", None),
        ] {
            assert_eq!(PatchType::from_content_type(header), expected, "{header}");
            if let Some(patch_type) = expected {
                assert_eq!(
                    PatchType::from_content_type(patch_type.content_type()),
                    Some(patch_type)
                );
            }
        }
    }

    #[test]
    fn json_patch() {
        let current = json!({"spec": {"replicas": 1, "ports": [{"port": 80}]}});
        for (patch_body, expected) in [
            (
                json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
                Ok(json!({"spec": {"replicas": 3, "ports": [{"port": 80}]}})),
            ),
            (
                json!([
                    {"op": "test", "path": "/spec/replicas", "value": 1},
                    {"op": "add", "path": "/spec/ports/-", "value": {"port": 443}},
                    {"op": "remove", "path": "/spec/replicas"},
                ]),
                Ok(json!({"spec": {"ports": [{"port": 80}, {"port": 443}]}})),
            ),
            (
                json!([{"op": "test", "path": "/spec/replicas", "value": 2}]),
                Err("testing value /spec/replicas failed: test failed"),
            ),
            (
                json!([{"op": "replace", "path": "/spec/missing/x", "value": 2}]),
                Err("replace operation does not apply: doc is missing path: \"/spec/missing/x\""),
            ),
            (
                json!([{"op": "remove", "path": "/spec/nothing"}]),
                Err("remove operation does not apply"),
            ),
            (
                json!([{"op": "move", "from": "/spec/nope", "path": "/spec/x"}]),
                Err("move operation does not apply: doc is missing from path: \"/spec/nope\""),
            ),
            (
                json!([{"op": "frobnicate", "path": "/x"}]),
                Err("invalid JSON patch"),
            ),
            (json!({"op": "add"}), Err("invalid JSON patch")),
        ] {
            check(&POD, PatchType::Json, current.clone(), patch_body, expected);
        }
    }

    #[test]
    fn merge_patch() {
        let current = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b"}]}});
        for (patch_body, expected) in [
            (
                json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
                Ok(
                    json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b"}]}}),
                ),
            ),
            // RFC 7396 replaces lists whole, merge keys or not.
            (
                json!({"spec": {"containers": [{"name": "a", "image": "y"}]}}),
                Ok(
                    json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"containers": [{"name": "a", "image": "y"}]}}),
                ),
            ),
            (json!(["not", "an", "object"]), Err("must be a JSON object")),
        ] {
            check(
                &POD,
                PatchType::Merge,
                current.clone(),
                patch_body,
                expected,
            );
        }
        check(
            &POD,
            PatchType::Apply,
            current,
            json!({}),
            Err("server-side apply"),
        );
    }

    #[test]
    fn kubectl_client_side_apply_patches() {
        let last_applied = r#"{"apiVersion":"apps/v1","kind":"Deployment"}"#;
        // Exactly what `kubectl apply` sends after changing an image and the replicas.
        smp(
            &DEPLOYMENT,
            deployment(
                json!([{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]),
            ),
            json!({"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration": last_applied}},"spec":{"replicas":3,"template":{"spec":{"$setElementOrder/containers":[{"name":"nginx"}],"containers":[{"image":"nginx:1.28","name":"nginx"}]}}}}),
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": "web",
                    "labels": {"app": "web", "tier": "front"},
                    "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied},
                },
                "spec": {"replicas": 3, "template": {"spec": {"containers": [
                    {"name": "nginx", "image": "nginx:1.28", "ports": [{"containerPort": 80}]},
                ]}}},
            }),
        );
        // And after removing a label from the manifest.
        smp(
            &DEPLOYMENT,
            deployment(json!([{"name": "nginx"}])),
            json!({"metadata":{"labels":{"tier":null}}}),
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "nginx"}]}}},
            }),
        );
    }

    #[test]
    fn merge_lists_by_key() {
        let pod = |containers: Value| json!({"spec": {"containers": containers}});
        // A new container, with `$setElementOrder` placing it first.
        smp(
            &POD,
            pod(json!([{"name": "a", "image": "x"}])),
            json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}], "containers": [{"name": "b", "image": "y"}]}}),
            pod(json!([{"name": "b", "image": "y"}, {"name": "a", "image": "x"}])),
        );
        // Nested merge lists: env by name, ports by containerPort; a null deletes a key.
        smp(
            &POD,
            pod(
                json!([{"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}], "ports": [{"containerPort": 80, "name": "http"}]}]),
            ),
            json!({"spec": {"containers": [{"name": "a", "env": [{"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}], "ports": [{"containerPort": 80, "name": null, "protocol": "TCP"}]}]}}),
            pod(
                json!([{"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}], "ports": [{"containerPort": 80, "protocol": "TCP"}]}]),
            ),
        );
        // `$patch: delete` removes every element with the key; `$patch: replace` swaps the list.
        smp(
            &POD,
            pod(json!([{"name": "a"}, {"name": "b"}, {"name": "a"}])),
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
            pod(json!([{"name": "b"}])),
        );
        smp(
            &POD,
            pod(json!([{"name": "a"}, {"name": "b"}])),
            json!({"spec": {"containers": [{"name": "c"}, {"$patch": "replace"}]}}),
            pod(json!([{"name": "c"}])),
        );
        // Patch order wins for the elements it names; the others keep their place.
        smp(
            &POD,
            pod(json!([{"name": "1"}, {"name": "2", "image": "b"}, {"name": "3"}])),
            json!({"spec": {"containers": [{"name": "3", "image": "c"}, {"name": "1", "image": "a"}]}}),
            pod(
                json!([{"name": "2", "image": "b"}, {"name": "3", "image": "c"}, {"name": "1", "image": "a"}]),
            ),
        );
        // Lists without a merge strategy are replaced (tolerations, command).
        smp(
            &POD,
            json!({"spec": {"tolerations": [{"key": "a"}], "containers": [{"name": "a", "command": ["x", "y"]}]}}),
            json!({"spec": {"tolerations": [{"key": "b"}], "containers": [{"name": "a", "command": ["z"]}]}}),
            json!({"spec": {"tolerations": [{"key": "b"}], "containers": [{"name": "a", "command": ["z"]}]}}),
        );
    }

    #[test]
    fn merge_keys_follow_the_field_path() {
        // Service ports merge by `port`; container ports by `containerPort`.
        smp(
            &SERVICE,
            json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}),
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 443}]}}),
        );
        smp_err(
            &SERVICE,
            json!({"spec": {"ports": [{"port": 80}]}}),
            json!({"spec": {"ports": [{"containerPort": 80}]}}),
            "does not contain declared merge key: port",
        );
        smp(
            &POD,
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}}),
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]}}),
        );
        smp(
            &NODE,
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n1"}]}, "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}}),
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}, "spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]}}),
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "n1"}]}, "spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]}}),
        );
        smp(
            &DEPLOYMENT,
            json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]}, "spec": {"template": {"metadata": {"finalizers": ["x"]}}}}),
            json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]}, "spec": {"template": {"metadata": {"finalizers": ["y"]}}}}),
            json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}, {"uid": "1", "name": "a"}]}, "spec": {"template": {"metadata": {"finalizers": ["y", "x"]}}}}),
        );
    }

    #[test]
    fn primitive_lists() {
        let meta = |finalizers: Value| json!({"metadata": {"finalizers": finalizers}});
        for (current, patch_body, expected) in [
            // Union without duplicates.
            (
                json!(["a", "b"]),
                json!({"metadata": {"finalizers": ["b", "c"]}}),
                json!(["a", "b", "c"]),
            ),
            // `$deleteFromPrimitiveList` removes; `$setElementOrder` orders.
            (
                json!(["a", "b", "c"]),
                json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"], "$setElementOrder/finalizers": ["c", "a", "d"], "finalizers": ["d"]}}),
                json!(["c", "a", "d"]),
            ),
            (
                json!(["a", "b", "c"]),
                json!({"metadata": {"finalizers": ["c", "a"]}}),
                json!(["b", "c", "a"]),
            ),
        ] {
            smp(&POD, meta(current), patch_body, meta(expected));
        }
    }

    #[test]
    fn map_directives() {
        let current = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"nodeSelector": {"disk": "ssd"}}});
        for (patch_body, expected) in [
            (
                json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}),
                json!({"metadata": {"labels": {"c": "3"}}, "spec": {"nodeSelector": {"disk": "ssd"}}}),
            ),
            (
                json!({"metadata": {"labels": {"$patch": "delete"}}}),
                json!({"metadata": {"labels": {}}, "spec": {"nodeSelector": {"disk": "ssd"}}}),
            ),
            (
                json!({"$patch": "replace", "spec": {"x": 1}}),
                json!({"spec": {"x": 1}}),
            ),
            // A new field with nulls and directives inside arrives without them.
            (
                json!({"spec": {"affinity": {"nodeAffinity": null, "podAffinity": {"$retainKeys": ["x"], "x": 1}}}}),
                json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"nodeSelector": {"disk": "ssd"}, "affinity": {"podAffinity": {"x": 1}}}}),
            ),
        ] {
            smp(&POD, current.clone(), patch_body, expected);
        }
    }

    #[test]
    fn retain_keys() {
        let current = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        smp(
            &DEPLOYMENT,
            current.clone(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
        smp(
            &DEPLOYMENT,
            current.clone(),
            json!({"spec": {"strategy": {"$retainKeys": ["type", "rollingUpdate"], "rollingUpdate": {"maxSurge": 2}}}}),
            json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2}}}}),
        );
        smp_err(
            &DEPLOYMENT,
            current,
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 2}}}}),
            "invalid patch format of retainKeys",
        );
    }

    #[test]
    fn malformed_patches() {
        let pod =
            json!({"spec": {"containers": [{"name": "a"}]}, "metadata": {"labels": {"a": "b"}}});
        for (patch_body, fragment) in [
            (
                json!({"metadata": {"labels": {"$patch": "merge"}}}),
                "unknown patch type: merge in map",
            ),
            (
                json!({"metadata": {"labels": {"$patch": "sideways"}}}),
                "unknown patch type",
            ),
            (
                json!({"spec": {"containers": [{"$patch": "merge"}]}}),
                "merging lists cannot yet be specified in the patch",
            ),
            (
                json!({"spec": {"containers": [{"image": "x"}]}}),
                "map: {\"image\":\"x\"} does not contain declared merge key: name",
            ),
            (
                json!({"spec": {"containers": [{"$patch": "delete"}]}}),
                "does not contain declared merge key: name",
            ),
            (
                json!({"spec": {"$setElementOrder/containers": [{"name": "a"}], "containers": [{"name": "b"}]}}),
                "doesn't match $setElementOrder list",
            ),
            (
                json!({"spec": {"$setElementOrder": []}}),
                "invalid patch format of setElementOrder list",
            ),
            (
                json!({"metadata": {"$deleteFromPrimitiveList": ["a"]}}),
                "invalid patch format of primitive list",
            ),
            (
                json!({"spec": {"$frobnicate": 1}}),
                "unknown patch directive: $frobnicate",
            ),
            (
                json!({"spec": {"containers": [{"name": "a"}, "b"]}}),
                "list element types are not identical",
            ),
            (json!([1]), "must be a JSON object"),
        ] {
            smp_err(&POD, pod.clone(), patch_body, fragment);
        }
    }

    #[test]
    fn table_lookups() {
        for (kind, path, expected) in [
            (&POD, "spec.containers", PatchStrategy::Merge(Some("name"))),
            (
                &POD,
                "spec.containers[].ports",
                PatchStrategy::Merge(Some("containerPort")),
            ),
            (
                &POD,
                "spec.initContainers[].env",
                PatchStrategy::Merge(Some("name")),
            ),
            (
                &DEPLOYMENT,
                "spec.template.spec.volumes",
                PatchStrategy::Merge(Some("name")),
            ),
            (
                &DEPLOYMENT,
                "spec.template.metadata.finalizers",
                PatchStrategy::Merge(None),
            ),
            (&DEPLOYMENT, "spec.containers", PatchStrategy::Replace),
            (&SERVICE, "spec.ports", PatchStrategy::Merge(Some("port"))),
            (&NODE, "spec.taints", PatchStrategy::Replace),
            (
                &NODE,
                "metadata.ownerReferences",
                PatchStrategy::Merge(Some("uid")),
            ),
            (&POD, "spec.tolerations", PatchStrategy::Replace),
        ] {
            assert_eq!(list_field(kind, path).patch, expected, "{path}");
        }
        assert_eq!(
            list_field(&SERVICE, "spec.ports").apply,
            ListType::Map(&["port", "protocol"])
        );
        assert!(is_atomic_map(&DEPLOYMENT, "spec.selector"));
        assert!(is_atomic_map(
            &POD,
            "spec.containers[].env[].valueFrom.fieldRef"
        ));
        assert!(!is_atomic_map(&POD, "spec.selector"));
        assert!(is_map(&DEPLOYMENT, "spec.template.metadata.labels"));
    }
}
