//! `metadata.managedFields` and server-side apply, after Kubernetes' structured-merge-diff
//! (<https://kubernetes.io/docs/reference/using-api/server-side-apply/>), simplified.
//!
//! Every write records which manager owns which fields. A field set is a tree of path
//! elements serialized as `FieldsV1`: `f:<name>` for a field, `k:{"name":"x"}` for an
//! element of an associative list (its key fields as JSON, keys sorted), `v:<json>` for an
//! element of a set of primitives and `.` for "this node itself". Lists without keys and
//! maps or structs marked atomic are owned whole. The list keys and atomic maps come from
//! the table in [`crate::patch`].
//!
//! Simplifications, each one a deliberate gap: there is one API version per kind, so
//! nothing is converted; unions and the `before-first-apply` upgrade of client-side apply
//! ownership (`kubectl-client-side-apply`) are not modelled beyond what a plain field set
//! gives; `null` in an apply configuration is treated as an omitted field; the number of
//! `Update` entries is not capped.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde_json::{Map, Value};

use crate::kind::ResourceKind;
use crate::patch::{self, ListType};

/// Why an apply was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apply would change fields other managers own (HTTP 409 with
    /// `FieldManagerConflict` causes); retrying with `force` takes them over.
    #[error("{}", conflict_message(.0))]
    Conflict(Vec<Conflict>),
    /// The apply configuration is malformed at `path` (HTTP 422); not retryable.
    #[error("{}", invalid_message(.path, .message))]
    Invalid {
        /// Field path in structured-merge-diff's notation (`.spec.containers[name="a"]`),
        /// or empty for the whole object.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// The conflicting fields, for a `Status`'s `details.causes`; empty for other errors.
    pub fn conflicts(&self) -> &[Conflict] {
        match self {
            Error::Conflict(conflicts) => conflicts,
            Error::Invalid { .. } => &[],
        }
    }
}

type Result<T> = std::result::Result<T, Error>;

/// One field an apply would change although another manager owns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The owning manager's name (`kubectl-client-side-apply`).
    pub manager: String,
    /// The owner as Kubernetes describes it: `"kubectl" using apps/v1` for an update,
    /// `"kubectl"` for an apply, with `with subresource "scale"` when one was used.
    pub owner: String,
    /// The field in structured-merge-diff's notation: `.spec.replicas`,
    /// `.spec.template.spec.containers[name="nginx"].image`.
    pub field: String,
}

impl Conflict {
    /// The message of this conflict's `FieldManagerConflict` status cause.
    pub fn message(&self) -> String {
        format!("conflict with {}", self.owner)
    }
}

fn invalid_message(path: &str, message: &str) -> String {
    if path.is_empty() {
        message.to_owned()
    } else {
        format!("{path}: {message}")
    }
}

fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [conflict] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            conflict.owner, conflict.field
        );
    }
    // Conflicts arrive grouped by owner, owners in order.
    let mut lines = Vec::new();
    let mut previous_owner: Option<&str> = None;
    for conflict in conflicts {
        if previous_owner != Some(conflict.owner.as_str()) {
            lines.push(format!("conflicts with {}:", conflict.owner));
            previous_owner = Some(&conflict.owner);
        }
        lines.push(format!("- {}", conflict.field));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

// ---------------------------------------------------------------------------------------
// Field sets.
// ---------------------------------------------------------------------------------------

/// One step of a field path. The derived order (fields, keys, values, indexes) is
/// structured-merge-diff's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Element {
    /// A field of a map or struct.
    Field(String),
    /// An associative list element, by its key fields as canonical JSON (keys sorted).
    Key(String),
    /// A set element, as JSON.
    Value(String),
    /// A list element by position, for list elements that cannot be keyed.
    Index(usize),
}

impl Element {
    fn to_fields_v1_key(&self) -> String {
        match self {
            Element::Field(name) => format!("f:{name}"),
            Element::Key(key) => format!("k:{key}"),
            Element::Value(value) => format!("v:{value}"),
            Element::Index(index) => format!("i:{index}"),
        }
    }

    fn from_fields_v1_key(key: &str) -> Option<Element> {
        let (prefix, rest) = key.split_at_checked(2)?;
        match prefix {
            "f:" => Some(Element::Field(rest.to_owned())),
            "k:" => match serde_json::from_str::<Value>(rest).ok()? {
                Value::Object(fields) => Some(Element::Key(canonical_key(fields.iter()))),
                _ => None,
            },
            "v:" => serde_json::from_str::<Value>(rest)
                .ok()
                .map(|value| Element::Value(value.to_string())),
            "i:" => rest.parse().ok().map(Element::Index),
            _ => None,
        }
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Element::Field(name) => write!(f, ".{name}"),
            Element::Key(key) => {
                let fields = match serde_json::from_str::<Value>(key) {
                    Ok(Value::Object(fields)) => fields,
                    _ => Map::new(),
                };
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect();
                write!(f, "[{}]", parts.join(","))
            }
            Element::Value(value) => write!(f, "[={value}]"),
            Element::Index(index) => write!(f, "[{index}]"),
        }
    }
}

fn canonical_key<'a>(fields: impl Iterator<Item = (&'a String, &'a Value)>) -> String {
    let sorted: BTreeMap<&String, &Value> = fields.collect();
    let parts: Vec<String> = sorted
        .into_iter()
        .map(|(name, value)| format!("{}:{value}", Value::String(name.clone())))
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn display_path(path: &[Element]) -> String {
    path.iter().map(Element::to_string).collect()
}

/// A set of field paths, as structured-merge-diff's `fieldpath.Set`: the elements that
/// are members at this node, and the sets below elements that have descendants.
#[derive(Clone, Debug, Default, PartialEq)]
struct FieldSet {
    members: BTreeSet<Element>,
    children: BTreeMap<Element, FieldSet>,
}

impl FieldSet {
    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    fn insert(&mut self, path: &[Element]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    fn union(&mut self, other: &FieldSet) {
        self.members.extend(other.members.iter().cloned());
        for (element, child) in &other.children {
            self.children
                .entry(element.clone())
                .or_default()
                .union(child);
        }
    }

    fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut result = FieldSet {
            members: self.members.difference(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (element, child) in &self.children {
            let child = match other.children.get(element) {
                Some(other_child) => child.difference(other_child),
                None => child.clone(),
            };
            if !child.is_empty() {
                result.children.insert(element.clone(), child);
            }
        }
        result
    }

    fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut result = FieldSet {
            members: self.members.intersection(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (element, child) in &self.children {
            if let Some(other_child) = other.children.get(element) {
                let child = child.intersection(other_child);
                if !child.is_empty() {
                    result.children.insert(element.clone(), child);
                }
            }
        }
        result
    }

    /// Drops `path` and everything below it.
    fn remove(&mut self, path: &[Element]) {
        match path {
            [] => {}
            [last] => {
                self.members.remove(last);
                self.children.remove(last);
            }
            [first, rest @ ..] => {
                if let Some(child) = self.children.get_mut(first) {
                    child.remove(rest);
                    if child.is_empty() {
                        self.children.remove(first);
                    }
                }
            }
        }
    }

    /// Keeps only `path` and what is below it.
    fn keep_only(&self, path: &[Element]) -> FieldSet {
        let mut only = FieldSet::default();
        match path {
            [] => only = self.clone(),
            [first, rest @ ..] => {
                if rest.is_empty() && self.members.contains(first) {
                    only.members.insert(first.clone());
                }
                if let Some(child) = self.children.get(first) {
                    let child = child.keep_only(rest);
                    if !child.is_empty() {
                        only.children.insert(first.clone(), child);
                    }
                }
            }
        }
        only
    }

    /// `EnsureNamedFieldsAreMembers`: fields with descendants become members too, so
    /// that removing a set removes the structs that hold nothing else.
    fn with_field_ancestors(&self) -> FieldSet {
        let mut result = FieldSet {
            members: self.members.clone(),
            children: BTreeMap::new(),
        };
        for (element, child) in &self.children {
            if matches!(element, Element::Field(_)) {
                result.members.insert(element.clone());
            }
            result
                .children
                .insert(element.clone(), child.with_field_ancestors());
        }
        result
    }

    /// Every member path, members of a node before its descendants.
    fn paths(&self) -> Vec<Vec<Element>> {
        let mut paths = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut paths);
        paths
    }

    fn collect_paths(&self, prefix: &mut Vec<Element>, paths: &mut Vec<Vec<Element>>) {
        for member in &self.members {
            prefix.push(member.clone());
            paths.push(prefix.clone());
            prefix.pop();
        }
        for (element, child) in &self.children {
            prefix.push(element.clone());
            child.collect_paths(prefix, paths);
            prefix.pop();
        }
    }

    fn to_fields_v1(&self) -> Value {
        let mut object = Map::new();
        let elements: BTreeSet<&Element> =
            self.members.iter().chain(self.children.keys()).collect();
        for element in elements {
            let mut node = match self.children.get(element) {
                Some(child) => match child.to_fields_v1() {
                    Value::Object(node) => node,
                    _ => Map::new(),
                },
                None => Map::new(),
            };
            if self.children.contains_key(element) && self.members.contains(element) {
                node.insert(".".to_owned(), Value::Object(Map::new()));
            }
            object.insert(element.to_fields_v1_key(), Value::Object(node));
        }
        Value::Object(object)
    }

    /// Reads a `fieldsV1` object; `None` if it is malformed.
    fn from_fields_v1(value: &Value) -> Option<FieldSet> {
        let mut set = FieldSet::default();
        for (key, node) in value.as_object()? {
            let element = Element::from_fields_v1_key(key)?;
            let node_fields = node.as_object()?;
            if node_fields.is_empty() || node_fields.contains_key(".") {
                set.members.insert(element.clone());
            }
            let mut descendants = node_fields.clone();
            descendants.remove(".");
            if !descendants.is_empty() {
                let child = FieldSet::from_fields_v1(&Value::Object(descendants))?;
                set.children.insert(element, child);
            }
        }
        Some(set)
    }
}

/// Paths never recorded as owned: identity and server-maintained metadata.
const STRIPPED: &[&[&str]] = &[
    &["apiVersion"],
    &["kind"],
    &["metadata", "name"],
    &["metadata", "namespace"],
    &["metadata", "uid"],
    &["metadata", "resourceVersion"],
    &["metadata", "generation"],
    &["metadata", "creationTimestamp"],
    &["metadata", "selfLink"],
    &["metadata", "managedFields"],
];

fn field_path(names: &[&str]) -> Vec<Element> {
    names
        .iter()
        .map(|name| Element::Field((*name).to_owned()))
        .collect()
}

fn strip(mut set: FieldSet) -> FieldSet {
    for names in STRIPPED {
        set.remove(&field_path(names));
    }
    set
}

// ---------------------------------------------------------------------------------------
// Walking objects with the kind's schema table.
// ---------------------------------------------------------------------------------------

/// Associative-list key fields that Kubernetes' schema defaults, so an element that
/// omits them still has its full key (`protocol` of ports).
const KEY_DEFAULTS: &[(&str, &str)] = &[("protocol", "TCP")];

/// The versions of changes between two objects, as structured-merge-diff compares them.
#[derive(Default)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

struct Walker<'k> {
    kind: &'k ResourceKind,
}

impl Walker<'_> {
    /// The path element of `item`, element `index` of the list at `path`.
    fn element(
        &self,
        path: &str,
        item: &Value,
        index: usize,
    ) -> std::result::Result<Element, String> {
        match patch::list_field(self.kind, path).apply {
            ListType::Set => Ok(Element::Value(item.to_string())),
            ListType::Atomic => Ok(Element::Index(index)),
            ListType::Map(keys) => {
                let mut fields = Map::new();
                for key in keys {
                    let value = match item.get(*key) {
                        Some(value) if !value.is_null() => value.clone(),
                        _ => match KEY_DEFAULTS.iter().find(|(name, _)| name == key) {
                            Some((_, default)) => Value::String((*default).to_owned()),
                            None => {
                                return Err(format!(
                                    "associative list with keys has an element that omits key field {key:?} (and doesn't have default value)"
                                ));
                            }
                        },
                    };
                    fields.insert((*key).to_owned(), value);
                }
                Ok(Element::Key(canonical_key(fields.iter())))
            }
        }
    }

    /// Elements of a live list; elements that cannot be keyed fall back to positions.
    fn elements(&self, path: &str, items: &[Value]) -> Vec<Element> {
        items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                self.element(path, item, index)
                    .unwrap_or(Element::Index(index))
            })
            .collect()
    }

    fn is_atomic(&self, path: &str, value: &Value) -> bool {
        match value {
            Value::Object(_) => !path.is_empty() && patch::is_atomic_map(self.kind, path),
            Value::Array(_) => patch::list_field(self.kind, path).apply == ListType::Atomic,
            _ => true,
        }
    }

    /// `ToFieldSet`: leaves, atomic lists and maps, and the elements of keyed lists and
    /// sets that `value` sets. Refuses elements without keys and duplicate keys.
    fn field_set(
        &self,
        path: &str,
        prefix: &mut Vec<Element>,
        value: &Value,
        set: &mut FieldSet,
    ) -> Result<()> {
        if self.is_atomic(path, value) {
            set.insert(prefix);
            return Ok(());
        }
        match value {
            Value::Object(fields) => {
                for (name, child) in fields {
                    prefix.push(Element::Field(name.clone()));
                    let empty = child.is_null() || child.as_object().is_some_and(Map::is_empty);
                    if empty {
                        set.insert(prefix);
                    } else {
                        self.field_set(&patch::child_path(path, name), prefix, child, set)?;
                    }
                    prefix.pop();
                }
            }
            Value::Array(items) => {
                let item_path = patch::element_path(path);
                let mut seen = BTreeSet::new();
                for (index, item) in items.iter().enumerate() {
                    let element =
                        self.element(path, item, index)
                            .map_err(|message| Error::Invalid {
                                path: display_path(prefix),
                                message,
                            })?;
                    prefix.push(element.clone());
                    if !seen.insert(element.clone()) {
                        return Err(Error::Invalid {
                            path: display_path(&prefix[..prefix.len() - 1]),
                            message: format!("duplicate entries for key {element}"),
                        });
                    }
                    set.insert(prefix);
                    if item.is_object() && !self.is_atomic(&item_path, item) {
                        self.field_set(&item_path, prefix, item, set)?;
                    }
                    prefix.pop();
                }
            }
            _ => set.insert(prefix),
        }
        Ok(())
    }

    /// The lenient field set of a stored object: it never fails, and list elements a
    /// strict walk would refuse (no key, duplicate key) are left unowned.
    fn stored_field_set(&self, value: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        let mut lenient = value.clone();
        self.key_by_position_where_needed("", &mut lenient);
        // Keys are now unique or positional; a stored object cannot fail the walk.
        let _ = self.field_set("", &mut Vec::new(), &lenient, &mut set);
        set
    }

    /// Drops list elements a strict walk would refuse (unkeyable or duplicated), so a
    /// stored object always yields a field set.
    fn key_by_position_where_needed(&self, path: &str, value: &mut Value) {
        match value {
            Value::Object(fields) => {
                for (name, child) in fields.iter_mut() {
                    self.key_by_position_where_needed(&patch::child_path(path, name), child);
                }
            }
            Value::Array(items) if !self.is_atomic(path, &Value::Array(Vec::new())) => {
                let mut seen = BTreeSet::new();
                let mut index = 0;
                items.retain(|item| {
                    let keep = self
                        .element(path, item, index)
                        .is_ok_and(|element| seen.insert(element));
                    index += 1;
                    keep
                });
                let item_path = patch::element_path(path);
                for item in items {
                    self.key_by_position_where_needed(&item_path, item);
                }
            }
            _ => {}
        }
    }

    /// structured-merge-diff's `Merge`: `config` over `live`, maps field by field, keyed
    /// lists and sets element by element, atomic values replaced.
    fn merge(&self, path: &str, live: &Value, config: &Value) -> Value {
        if self.is_atomic(path, config) || self.is_atomic(path, live) {
            return config.clone();
        }
        match (live, config) {
            (Value::Object(live_fields), Value::Object(config_fields)) => {
                let mut merged = live_fields.clone();
                for (name, config_value) in config_fields {
                    let value = match live_fields.get(name) {
                        Some(live_value) => {
                            self.merge(&patch::child_path(path, name), live_value, config_value)
                        }
                        None => config_value.clone(),
                    };
                    merged.insert(name.clone(), value);
                }
                Value::Object(merged)
            }
            (Value::Array(live_items), Value::Array(config_items)) => {
                Value::Array(self.merge_list(path, live_items, config_items))
            }
            _ => config.clone(),
        }
    }

    /// structured-merge-diff's `visitListItems`: the configuration's order for the
    /// elements it names, live-only elements kept in place between them.
    fn merge_list(&self, path: &str, live: &[Value], config: &[Value]) -> Vec<Value> {
        let item_path = patch::element_path(path);
        let lhs = self.elements(path, live);
        let rhs = self.elements(path, config);
        let first_index = |elements: &[Element]| {
            let mut index = BTreeMap::new();
            for (position, element) in elements.iter().enumerate() {
                index.entry(element.clone()).or_insert(position);
            }
            index
        };
        let lhs_index = first_index(&lhs);
        let rhs_index = first_index(&rhs);
        let merge_item = |element: &Element| {
            let config_item = &config[rhs_index[element]];
            match lhs_index.get(element) {
                Some(live_position) => self.merge(&item_path, &live[*live_position], config_item),
                None => config_item.clone(),
            }
        };
        let mut shared: VecDeque<&Element> = rhs
            .iter()
            .filter(|element| lhs_index.contains_key(*element))
            .collect();
        let mut next_shared = shared.pop_front();
        let mut merged_rhs = BTreeSet::new();
        let mut out = Vec::with_capacity(live.len().max(config.len()));
        let (mut li, mut ri) = (0, 0);
        while li < lhs.len() || ri < rhs.len() {
            if li < lhs.len() && ri < rhs.len() {
                let element = &lhs[li];
                if *element == rhs[ri] {
                    merged_rhs.insert(element.clone());
                    out.push(merge_item(element));
                    li += 1;
                    ri += 1;
                    next_shared = shared.pop_front();
                    continue;
                }
                if rhs_index.contains_key(element) && next_shared.is_some_and(|n| n != element) {
                    li += 1;
                    continue;
                }
            }
            if li < lhs.len() {
                let element = &lhs[li];
                if !rhs_index.contains_key(element) {
                    out.push(live[li].clone());
                    li += 1;
                    continue;
                }
                if merged_rhs.contains(element) || ri >= rhs.len() {
                    li += 1;
                    continue;
                }
            }
            if ri < rhs.len() {
                let element = &rhs[ri];
                if merged_rhs.insert(element.clone()) {
                    out.push(merge_item(element));
                }
                ri += 1;
                if next_shared == Some(element) {
                    next_shared = shared.pop_front();
                }
            }
        }
        out
    }

    /// `RemoveItems`: drops from `value` every member of `set`, with what is below it.
    fn remove_items(&self, path: &str, value: &mut Value, set: &FieldSet) {
        match value {
            Value::Object(fields) => {
                fields.retain(|name, _| !set.members.contains(&Element::Field(name.clone())));
                for (name, child) in fields.iter_mut() {
                    if let Some(child_set) = set.children.get(&Element::Field(name.clone())) {
                        self.remove_items(&patch::child_path(path, name), child, child_set);
                    }
                }
            }
            Value::Array(items) => {
                let elements = self.elements(path, items);
                let item_path = patch::element_path(path);
                let mut kept = Vec::with_capacity(items.len());
                for (mut item, element) in std::mem::take(items).into_iter().zip(elements) {
                    if set.members.contains(&element) {
                        continue;
                    }
                    if let Some(child_set) = set.children.get(&element) {
                        self.remove_items(&item_path, &mut item, child_set);
                    }
                    kept.push(item);
                }
                *items = kept;
            }
            _ => {}
        }
    }

    /// structured-merge-diff's `Compare`: leaves added, modified and removed; list
    /// elements, non-atomic lists and maps with arbitrary keys also count as added or
    /// removed themselves (structs do not: Kubernetes' empty objects always have them).
    fn compare(
        &self,
        path: &str,
        prefix: &mut Vec<Element>,
        lhs: Option<&Value>,
        rhs: Option<&Value>,
        is_item: bool,
        comparison: &mut Comparison,
    ) {
        let lhs = lhs.filter(|value| !value.is_null());
        let rhs = rhs.filter(|value| !value.is_null());
        let same_shape = match (lhs, rhs) {
            (Some(l), Some(r)) => {
                l.is_object() == r.is_object()
                    && l.is_array() == r.is_array()
                    && !self.is_atomic(path, l)
                    && !self.is_atomic(path, r)
            }
            _ => true,
        };
        let leaf = lhs.or(rhs).is_none_or(|value| self.is_atomic(path, value)) || !same_shape;
        if leaf {
            match (lhs, rhs) {
                (None, Some(_)) => comparison.added.insert(prefix),
                (Some(_), None) => comparison.removed.insert(prefix),
                (Some(l), Some(r)) if !patch::json_eq(l, r) => comparison.modified.insert(prefix),
                _ => {}
            }
            return;
        }
        match lhs.or(rhs) {
            Some(Value::Object(_)) => {
                let empty = Map::new();
                let lhs_fields = lhs.and_then(Value::as_object).unwrap_or(&empty);
                let rhs_fields = rhs.and_then(Value::as_object).unwrap_or(&empty);
                let names: BTreeSet<&String> = lhs_fields.keys().chain(rhs_fields.keys()).collect();
                for name in names {
                    prefix.push(Element::Field(name.clone()));
                    self.compare(
                        &patch::child_path(path, name),
                        prefix,
                        lhs_fields.get(name),
                        rhs_fields.get(name),
                        false,
                        comparison,
                    );
                    prefix.pop();
                }
                if is_item || patch::is_map(self.kind, path) {
                    self.presence(prefix, lhs, rhs, comparison);
                }
            }
            Some(Value::Array(_)) => {
                let empty = Vec::new();
                let lhs_items = lhs.and_then(Value::as_array).unwrap_or(&empty);
                let rhs_items = rhs.and_then(Value::as_array).unwrap_or(&empty);
                let item_path = patch::element_path(path);
                let mut by_element: BTreeMap<Element, (Option<&Value>, Option<&Value>)> =
                    BTreeMap::new();
                for (element, item) in self.elements(path, lhs_items).into_iter().zip(lhs_items) {
                    by_element.entry(element).or_default().0.get_or_insert(item);
                }
                for (element, item) in self.elements(path, rhs_items).into_iter().zip(rhs_items) {
                    by_element.entry(element).or_default().1.get_or_insert(item);
                }
                for (element, (lhs_item, rhs_item)) in by_element {
                    prefix.push(element);
                    self.compare(&item_path, prefix, lhs_item, rhs_item, true, comparison);
                    prefix.pop();
                }
                self.presence(prefix, lhs, rhs, comparison);
            }
            _ => {}
        }
    }

    fn presence(
        &self,
        prefix: &[Element],
        lhs: Option<&Value>,
        rhs: Option<&Value>,
        comparison: &mut Comparison,
    ) {
        match (lhs, rhs) {
            (None, Some(_)) => comparison.added.insert(prefix),
            (Some(_), None) => comparison.removed.insert(prefix),
            _ => {}
        }
    }

    fn comparison(&self, old: &Value, new: &Value) -> Comparison {
        let mut comparison = Comparison::default();
        self.compare(
            "",
            &mut Vec::new(),
            Some(old),
            Some(new),
            false,
            &mut comparison,
        );
        Comparison {
            added: strip(comparison.added),
            modified: strip(comparison.modified),
            removed: strip(comparison.removed),
        }
    }
}

// ---------------------------------------------------------------------------------------
// managedFields entries.
// ---------------------------------------------------------------------------------------

const APPLY: &str = "Apply";
const UPDATE: &str = "Update";

/// One `managedFields` entry, decoded.
#[derive(Clone, Debug)]
struct ManagedEntry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    fields: FieldSet,
}

impl ManagedEntry {
    fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }

    /// The manager as Kubernetes' conflict messages print it.
    fn owner(&self) -> String {
        let mut owner = format!("{:?}", self.manager);
        if let Some(subresource) = &self.subresource {
            owner.push_str(&format!(" with subresource {subresource:?}"));
        }
        if self.operation == UPDATE {
            owner.push_str(&format!(" using {}", self.api_version));
        }
        owner
    }

    fn from_value(value: &Value) -> Option<ManagedEntry> {
        let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
        if text("fieldsType").is_some_and(|fields_type| fields_type != "FieldsV1") {
            return None;
        }
        let fields = match value.get("fieldsV1") {
            Some(fields) => FieldSet::from_fields_v1(fields)?,
            None => FieldSet::default(),
        };
        Some(ManagedEntry {
            manager: text("manager").unwrap_or_default(),
            operation: text("operation")?,
            api_version: text("apiVersion").unwrap_or_default(),
            time: text("time"),
            subresource: text("subresource").filter(|subresource| !subresource.is_empty()),
            fields,
        })
    }

    fn to_value(&self) -> Value {
        let mut entry = Map::new();
        entry.insert("manager".to_owned(), Value::String(self.manager.clone()));
        entry.insert(
            "operation".to_owned(),
            Value::String(self.operation.clone()),
        );
        entry.insert(
            "apiVersion".to_owned(),
            Value::String(self.api_version.clone()),
        );
        if let Some(time) = &self.time {
            entry.insert("time".to_owned(), Value::String(time.clone()));
        }
        entry.insert(
            "fieldsType".to_owned(),
            Value::String("FieldsV1".to_owned()),
        );
        entry.insert("fieldsV1".to_owned(), self.fields.to_fields_v1());
        if let Some(subresource) = &self.subresource {
            entry.insert("subresource".to_owned(), Value::String(subresource.clone()));
        }
        Value::Object(entry)
    }
}

fn managed_fields(object: &Value) -> Option<&Vec<Value>> {
    object.get("metadata")?.get("managedFields")?.as_array()
}

fn read_entries(object: &Value) -> Vec<ManagedEntry> {
    managed_fields(object)
        .map(|entries| {
            entries
                .iter()
                .filter_map(ManagedEntry::from_value)
                .collect()
        })
        .unwrap_or_default()
}

/// Stores `entries` in `object`, sorted as Kubernetes sorts them (applies first, then by
/// time, manager, API version and subresource), without empty ones.
fn write_entries(object: &mut Value, mut entries: Vec<ManagedEntry>) {
    entries.retain(|entry| !entry.fields.is_empty());
    entries.sort_by(|a, b| {
        (
            &a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let Some(fields) = object.as_object_mut() else {
        return;
    };
    let metadata = fields
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(metadata) = metadata.as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        metadata.remove("managedFields");
    } else {
        metadata.insert(
            "managedFields".to_owned(),
            Value::Array(entries.iter().map(ManagedEntry::to_value).collect()),
        );
    }
}

/// `object` without `metadata.managedFields`.
fn without_managed_fields(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    object
}

fn remove_nulls(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            fields.retain(|_, value| !value.is_null());
            fields.values_mut().for_each(remove_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(remove_nulls),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Apply and update.
// ---------------------------------------------------------------------------------------

/// Server-side apply of `applied` (a full or partial object of `kind`) by `manager` onto
/// `live` (`None` to create), at `now` (RFC 3339).
///
/// The result is `live` with the applied fields set and `metadata.managedFields`
/// updated: the manager's `Apply` entry owns exactly what it applied; fields it applied
/// before and no longer does are removed unless another manager owns them too. Setting
/// a field another manager owns to a different value is a [`Error::Conflict`] unless
/// `force`, which moves the field to `manager`. `status` in `applied` is ignored: the main
/// resource does not own status.
pub fn apply(
    kind: &ResourceKind,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value> {
    let walker = Walker { kind };
    if !applied.is_object() {
        return Err(Error::Invalid {
            path: String::new(),
            message: "the apply configuration must be a JSON object".to_owned(),
        });
    }
    if managed_fields(applied).is_some_and(|entries| !entries.is_empty()) {
        return Err(Error::Invalid {
            path: ".metadata.managedFields".to_owned(),
            message: "must be nil".to_owned(),
        });
    }
    let mut config = without_managed_fields(applied);
    remove_nulls(&mut config);
    if let Some(fields) = config.as_object_mut() {
        fields.remove("status");
    }
    let mut config_set = FieldSet::default();
    walker.field_set("", &mut Vec::new(), &config, &mut config_set)?;
    let config_set = strip(config_set);

    let base = live.map_or_else(|| Value::Object(Map::new()), without_managed_fields);
    let mut entries = live.map(read_entries).unwrap_or_default();
    if live.is_some() && entries.is_empty() {
        // Objects written before fields were tracked: their fields belong to a
        // placeholder manager, as Kubernetes does on the first apply.
        let mut unowned = base.clone();
        if let Some(fields) = unowned.as_object_mut() {
            fields.remove("status");
        }
        entries.push(ManagedEntry {
            manager: "before-first-apply".to_owned(),
            operation: UPDATE.to_owned(),
            api_version: kind.api_version.to_owned(),
            time: Some(now.to_owned()),
            subresource: None,
            fields: strip(walker.stored_field_set(&unowned)),
        });
    }
    let applier = entries
        .iter()
        .position(|entry| entry.is(manager, APPLY, None));
    let last_set = applier.map(|index| entries[index].fields.clone());

    let mut result = walker.merge("", &base, &config);

    // Prune what this manager applied last time and no longer applies, unless someone
    // (this apply included) still owns it.
    if let Some(last_set) = last_set.filter(|set| !set.is_empty()) {
        let mut owned = config_set.clone();
        for (index, entry) in entries.iter().enumerate() {
            if Some(index) != applier {
                owned.union(&entry.fields);
            }
        }
        let removed = last_set
            .with_field_ancestors()
            .difference(&owned.with_field_ancestors());
        walker.remove_items("", &mut result, &removed);
    }

    let comparison = walker.comparison(&base, &result);
    let mut changed = comparison.added.clone();
    changed.union(&comparison.modified);

    let mut conflicting: Vec<(usize, FieldSet)> = entries
        .iter()
        .enumerate()
        .filter(|(index, _)| Some(*index) != applier)
        .map(|(index, entry)| (index, entry.fields.intersection(&changed)))
        .filter(|(_, set)| !set.is_empty())
        .collect();
    if !force && !conflicting.is_empty() {
        conflicting.sort_by(|(a, _), (b, _)| {
            let (a, b) = (&entries[*a], &entries[*b]);
            (&a.manager, &a.operation, &a.api_version, &a.subresource).cmp(&(
                &b.manager,
                &b.operation,
                &b.api_version,
                &b.subresource,
            ))
        });
        let conflicts = conflicting
            .iter()
            .flat_map(|(index, set)| {
                let entry = &entries[*index];
                set.paths().into_iter().map(move |path| Conflict {
                    manager: entry.manager.clone(),
                    owner: entry.owner(),
                    field: display_path(&path),
                })
            })
            .collect();
        return Err(Error::Conflict(conflicts));
    }
    for (index, entry) in entries.iter_mut().enumerate() {
        if Some(index) != applier {
            entry.fields = entry
                .fields
                .difference(&changed)
                .difference(&comparison.removed);
        }
    }

    let object_changed = !patch::json_eq(&base, &result);
    match applier {
        Some(index) => {
            let entry = &mut entries[index];
            entry.fields = config_set;
            entry.api_version = kind.api_version.to_owned();
            if object_changed || entry.time.is_none() {
                entry.time = Some(now.to_owned());
            }
        }
        None => entries.push(ManagedEntry {
            manager: manager.to_owned(),
            operation: APPLY.to_owned(),
            api_version: kind.api_version.to_owned(),
            time: Some(now.to_owned()),
            subresource: None,
            fields: config_set,
        }),
    }
    write_entries(&mut result, entries);
    Ok(result)
}

/// Records a non-apply write (create, update, patch) of `new` over `old` (`None` on
/// create) by `manager` in `new`'s `metadata.managedFields`, at `now` (RFC 3339).
///
/// The fields that changed become owned by `manager`'s `Update` entry for `subresource`
/// (merged with what it owned before) and are taken from every other entry; removed
/// fields leave every entry; empty entries are dropped. A write through the main resource
/// does not own `status`; one through `status` owns nothing in `spec`.
///
/// As in Kubernetes, a `new` whose `managedFields` is absent or `[]` keeps `old`'s, one
/// that differs from `old`'s replaces them, and `[{}]` clears them altogether.
pub fn record_update(
    kind: &ResourceKind,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    now: &str,
) {
    let walker = Walker { kind };
    let old_entries = old.map(read_entries).unwrap_or_default();
    let mut entries = match managed_fields(new) {
        None => old_entries,
        Some(given) if given.is_empty() => old_entries,
        Some(given) if given.len() == 1 && given[0].as_object().is_some_and(Map::is_empty) => {
            write_entries(new, Vec::new());
            return;
        }
        Some(given) if old.and_then(managed_fields) == Some(given) => old_entries,
        Some(given) => given.iter().filter_map(ManagedEntry::from_value).collect(),
    };

    let old_base = old.map_or_else(|| Value::Object(Map::new()), without_managed_fields);
    let new_base = without_managed_fields(new);
    let comparison = walker.comparison(&old_base, &new_base);
    let mut changed = comparison.added.clone();
    changed.union(&comparison.modified);

    for entry in &mut entries {
        entry.fields = entry
            .fields
            .difference(&changed)
            .difference(&comparison.removed);
    }

    let status = field_path(&["status"]);
    let mut owned = changed;
    match subresource {
        Some("status") => owned.remove(&field_path(&["spec"])),
        _ => owned.remove(&status),
    }
    let owned = if subresource == Some("status") {
        let mut kept = owned.keep_only(&status);
        kept.union(&owned.keep_only(&field_path(&["metadata"])));
        kept
    } else {
        owned
    };
    if !owned.is_empty() {
        match entries
            .iter_mut()
            .find(|entry| entry.is(manager, UPDATE, subresource))
        {
            Some(entry) => {
                entry.fields.union(&owned);
                entry.api_version = kind.api_version.to_owned();
                entry.time = Some(now.to_owned());
            }
            None => entries.push(ManagedEntry {
                manager: manager.to_owned(),
                operation: UPDATE.to_owned(),
                api_version: kind.api_version.to_owned(),
                time: Some(now.to_owned()),
                subresource: subresource.map(str::to_owned),
                fields: owned,
            }),
        }
    }
    write_entries(new, entries);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kind::{DEPLOYMENT, POD, SERVICE};

    const T0: &str = "2025-01-01T00:00:00Z";
    const T1: &str = "2025-01-01T00:01:00Z";
    const T2: &str = "2025-01-01T00:02:00Z";

    fn deployment(replicas: i64, labels: Value, containers: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": containers},
                },
            },
        })
    }

    fn nginx(image: &str) -> Value {
        json!({"name": "nginx", "image": image})
    }

    fn entries_of(object: &Value) -> Vec<Value> {
        managed_fields(object).cloned().unwrap_or_default()
    }

    /// The `fieldsV1` of `manager`'s `operation` entry in `object`.
    fn fields_of(object: &Value, manager: &str, operation: &str) -> Option<Value> {
        entries_of(object)
            .into_iter()
            .find(|entry| entry["manager"] == manager && entry["operation"] == operation)
            .map(|entry| entry["fieldsV1"].clone())
    }

    /// One step of a scenario: what is done, and what must come of it.
    enum Step {
        Apply {
            manager: &'static str,
            config: Value,
            force: bool,
        },
        Update {
            manager: &'static str,
            subresource: Option<&'static str>,
            change: fn(&mut Value),
        },
    }

    /// What a step must yield: a check on the resulting object, or the exact error.
    type Expected = std::result::Result<fn(&Value), &'static str>;

    /// Runs `steps` from no object; each step's expectation is `Ok(check on the object)`
    /// or `Err(exact error message)`. Failed steps leave the object as it was.
    fn check(kind: &ResourceKind, steps: Vec<(Step, Expected)>) {
        let mut live: Option<Value> = None;
        let times = [T0, T1, T2, T2, T2, T2, T2, T2];
        for (number, (step, expected)) in steps.into_iter().enumerate() {
            let now = times[number.min(times.len() - 1)];
            let outcome = match step {
                Step::Apply {
                    manager,
                    config,
                    force,
                } => apply(kind, live.as_ref(), &config, manager, force, now),
                Step::Update {
                    manager,
                    subresource,
                    change,
                } => {
                    let mut new = live.clone().unwrap_or_else(|| json!({}));
                    change(&mut new);
                    record_update(kind, live.as_ref(), &mut new, manager, subresource, now);
                    Ok(new)
                }
            };
            match (outcome, expected) {
                (Ok(object), Ok(verify)) => {
                    verify(&object);
                    live = Some(object);
                }
                (Err(error), Err(message)) => {
                    assert_eq!(error.to_string(), message, "step {number}")
                }
                (outcome, expected) => {
                    panic!("step {number}: got {outcome:?}, expected {expected:?}")
                }
            }
        }
    }

    fn apply_step(manager: &'static str, config: Value, force: bool) -> Step {
        Step::Apply {
            manager,
            config,
            force,
        }
    }

    #[test]
    fn create_and_reapply() {
        check(
            &DEPLOYMENT,
            vec![
                (
                    apply_step(
                        "kubectl",
                        deployment(
                            3,
                            json!({"app": "web", "tier": "front"}),
                            json!([nginx("nginx:1.27")]),
                        ),
                        false,
                    ),
                    Ok(|object| {
                        assert_eq!(object["spec"]["replicas"], 3);
                        let entries = entries_of(object);
                        assert_eq!(entries.len(), 1);
                        assert_eq!(
                            entries[0],
                            json!({
                                "manager": "kubectl",
                                "operation": "Apply",
                                "apiVersion": "apps/v1",
                                "time": T0,
                                "fieldsType": "FieldsV1",
                                "fieldsV1": {
                                    "f:metadata": {"f:labels": {"f:app": {}, "f:tier": {}}},
                                    "f:spec": {
                                        "f:replicas": {},
                                        "f:selector": {},
                                        "f:template": {
                                            "f:metadata": {"f:labels": {"f:app": {}}},
                                            "f:spec": {"f:containers": {
                                                "k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}},
                                            }},
                                        },
                                    },
                                },
                            })
                        );
                    }),
                ),
                // Re-applying without `tier` removes the label and its ownership.
                (
                    apply_step(
                        "kubectl",
                        deployment(3, json!({"app": "web"}), json!([nginx("nginx:1.27")])),
                        false,
                    ),
                    Ok(|object| {
                        assert_eq!(object["metadata"]["labels"], json!({"app": "web"}));
                        assert_eq!(
                            fields_of(object, "kubectl", "Apply").unwrap()["f:metadata"],
                            json!({"f:labels": {"f:app": {}}})
                        );
                        // Nothing else changed, but the label did: the time moves.
                        assert_eq!(entries_of(object)[0]["time"], T1);
                    }),
                ),
                // A no-op apply keeps the time.
                (
                    apply_step(
                        "kubectl",
                        deployment(3, json!({"app": "web"}), json!([nginx("nginx:1.27")])),
                        false,
                    ),
                    Ok(|object| assert_eq!(entries_of(object)[0]["time"], T1)),
                ),
            ],
        );
    }

    #[test]
    fn conflicts_between_appliers() {
        let replicas = |count: i64| json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": count}});
        check(
            &DEPLOYMENT,
            vec![
                (
                    apply_step(
                        "alice",
                        deployment(3, json!({"app": "web"}), json!([nginx("a")])),
                        false,
                    ),
                    Ok(|_| {}),
                ),
                // Same value: shared ownership, no conflict.
                (
                    apply_step("bob", replicas(3), false),
                    Ok(|object| {
                        assert_eq!(
                            fields_of(object, "bob", "Apply").unwrap(),
                            json!({"f:spec": {"f:replicas": {}}})
                        );
                        assert!(
                            fields_of(object, "alice", "Apply").unwrap()["f:spec"]
                                .get("f:replicas")
                                .is_some()
                        );
                    }),
                ),
                (
                    apply_step("carol", replicas(5), false),
                    // Both owners of the field are named.
                    Err(
                        "Apply failed with 2 conflicts: conflicts with \"alice\":\n- .spec.replicas\nconflicts with \"bob\":\n- .spec.replicas",
                    ),
                ),
                // Forced: carol takes the field from both.
                (
                    apply_step("carol", replicas(5), true),
                    Ok(|object| {
                        assert_eq!(object["spec"]["replicas"], 5);
                        assert!(fields_of(object, "bob", "Apply").is_none());
                        assert!(
                            fields_of(object, "alice", "Apply").unwrap()["f:spec"]
                                .get("f:replicas")
                                .is_none()
                        );
                        assert_eq!(
                            object["spec"]["template"]["spec"]["containers"][0]["image"],
                            "a"
                        );
                    }),
                ),
                // Alice re-applies without replicas: carol owns them, so they stay.
                (
                    apply_step(
                        "alice",
                        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [nginx("a")]}}}}),
                        false,
                    ),
                    Ok(|object| assert_eq!(object["spec"]["replicas"], 5)),
                ),
            ],
        );
    }

    #[test]
    fn update_then_apply_conflicts() {
        check(
            &DEPLOYMENT,
            vec![
                (
                    Step::Update {
                        manager: "kubectl-client-side-apply",
                        subresource: None,
                        change: |object| {
                            *object = deployment(1, json!({"app": "web"}), json!([nginx("a")]));
                        },
                    },
                    Ok(|object| {
                        let fields =
                            fields_of(object, "kubectl-client-side-apply", "Update").unwrap();
                        assert_eq!(
                            fields["f:metadata"],
                            json!({"f:labels": {".": {}, "f:app": {}}})
                        );
                        assert_eq!(
                            fields["f:spec"]["f:template"]["f:spec"]["f:containers"],
                            json!({"k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}}, ".": {}})
                        );
                    }),
                ),
                // `kubectl scale` through the scale subresource.
                (
                    Step::Update {
                        manager: "kubectl",
                        subresource: Some("scale"),
                        change: |object| object["spec"]["replicas"] = json!(2),
                    },
                    Ok(|object| {
                        let entries = entries_of(object);
                        assert_eq!(entries.len(), 2);
                        assert_eq!(entries[1]["subresource"], "scale");
                        assert_eq!(
                            entries[1]["fieldsV1"],
                            json!({"f:spec": {"f:replicas": {}}})
                        );
                        assert!(fields_of(object, "kubectl-client-side-apply", "Update").unwrap()["f:spec"]
                            .get("f:replicas")
                            .is_none());
                    }),
                ),
                (
                    apply_step(
                        "m",
                        deployment(4, json!({"app": "web"}), json!([nginx("b")])),
                        false,
                    ),
                    Err(
                        "Apply failed with 2 conflicts: conflicts with \"kubectl\" with subresource \"scale\" using apps/v1:\n- .spec.replicas\nconflicts with \"kubectl-client-side-apply\" using apps/v1:\n- .spec.template.spec.containers[name=\"nginx\"].image",
                    ),
                ),
                (
                    apply_step(
                        "m",
                        deployment(4, json!({"app": "web"}), json!([nginx("a")])),
                        false,
                    ),
                    Err(
                        "Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas",
                    ),
                ),
            ],
        );
        // The conflicting fields are exposed for the status causes.
        let live = {
            let mut object = deployment(1, json!({}), json!([nginx("a")]));
            record_update(&DEPLOYMENT, None, &mut object, "m", None, T0);
            object
        };
        let error = apply(
            &DEPLOYMENT,
            Some(&live),
            &deployment(2, json!({}), json!([nginx("b")])),
            "x",
            false,
            T1,
        )
        .unwrap_err();
        assert_eq!(
            error
                .conflicts()
                .iter()
                .map(|c| (c.field.as_str(), c.message()))
                .collect::<Vec<_>>(),
            vec![
                (
                    ".spec.replicas",
                    r#"conflict with "m" using apps/v1"#.to_owned()
                ),
                (
                    r#".spec.template.spec.containers[name="nginx"].image"#,
                    r#"conflict with "m" using apps/v1"#.to_owned()
                ),
            ]
        );
        assert_eq!(
            error.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"m\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"nginx\"].image"
        );
    }

    #[test]
    fn containers_keyed_by_name() {
        check(
            &DEPLOYMENT,
            vec![
                (
                    apply_step(
                        "kubectl",
                        deployment(1, json!({}), json!([nginx("nginx:1.27")])),
                        false,
                    ),
                    Ok(|_| {}),
                ),
                // A controller-ish writer sets a field nobody applied.
                (
                    Step::Update {
                        manager: "defaulter",
                        subresource: None,
                        change: |object| {
                            object["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] =
                                json!("IfNotPresent");
                        },
                    },
                    Ok(|_| {}),
                ),
                // Change the image and add a sidecar.
                (
                    apply_step(
                        "kubectl",
                        deployment(
                            1,
                            json!({}),
                            json!([nginx("nginx:1.28"), {"name": "sidecar", "image": "envoy"}]),
                        ),
                        false,
                    ),
                    Ok(|object| {
                        assert_eq!(
                            object["spec"]["template"]["spec"]["containers"],
                            json!([
                                {"name": "nginx", "image": "nginx:1.28", "imagePullPolicy": "IfNotPresent"},
                                {"name": "sidecar", "image": "envoy"},
                            ])
                        );
                    }),
                ),
                // Drop nginx: the applier owned it, so it goes, even with a field another
                // manager owns inside (structured-merge-diff keeps only owned items).
                (
                    apply_step(
                        "kubectl",
                        deployment(1, json!({}), json!([{"name": "sidecar", "image": "envoy"}])),
                        false,
                    ),
                    Ok(|object| {
                        let containers = &object["spec"]["template"]["spec"]["containers"];
                        assert_eq!(containers[0], json!({"name": "sidecar", "image": "envoy"}));
                        let owned = fields_of(object, "kubectl", "Apply").unwrap();
                        assert_eq!(
                            owned["f:spec"]["f:template"]["f:spec"]["f:containers"],
                            json!({"k:{\"name\":\"sidecar\"}": {".": {}, "f:image": {}, "f:name": {}}})
                        );
                    }),
                ),
            ],
        );
    }

    #[test]
    fn keys_with_defaults_and_bad_configs() {
        let service = |ports: Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": ports}});
        let created = apply(
            &SERVICE,
            None,
            &service(json!([{"port": 80}])),
            "a",
            false,
            T0,
        )
        .unwrap();
        assert_eq!(
            fields_of(&created, "a", "Apply").unwrap(),
            json!({"f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}}}})
        );
        for (config, message) in [
            (
                service(json!([{"port": 80}, {"port": 80}])),
                r#".spec.ports: duplicate entries for key [port=80,protocol="TCP"]"#,
            ),
            (
                service(json!([{"name": "x"}])),
                r#".spec.ports: associative list with keys has an element that omits key field "port" (and doesn't have default value)"#,
            ),
            (
                json!({"metadata": {"managedFields": [{"manager": "x"}]}}),
                ".metadata.managedFields: must be nil",
            ),
            (
                json!("text"),
                "the apply configuration must be a JSON object",
            ),
        ] {
            let error = apply(&SERVICE, Some(&created), &config, "a", false, T1).unwrap_err();
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn status_and_managed_fields_resets() {
        // Status in an apply of the main resource is ignored.
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Running"}});
        let created = apply(&POD, None, &pod, "a", false, T0).unwrap();
        assert!(created.get("status").is_none());
        assert!(
            fields_of(&created, "a", "Apply")
                .unwrap()
                .get("f:status")
                .is_none()
        );

        // A status write owns status only, under its subresource.
        let mut with_status = created.clone();
        with_status["status"] =
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        record_update(
            &POD,
            Some(&created),
            &mut with_status,
            "kubelet",
            Some("status"),
            T1,
        );
        let entries = entries_of(&with_status);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1]["subresource"], "status");
        assert_eq!(
            entries[1]["fieldsV1"],
            json!({"f:status": {"f:phase": {}, "f:conditions": {".": {}, "k:{\"type\":\"Ready\"}": {".": {}, "f:type": {}, "f:status": {}}}}})
        );

        // A no-op update records nothing.
        let mut same = with_status.clone();
        record_update(&POD, Some(&with_status), &mut same, "other", None, T2);
        assert_eq!(same, with_status);

        // `[{}]` clears managedFields; `[]` keeps them.
        let mut cleared = with_status.clone();
        cleared["metadata"]["managedFields"] = json!([{}]);
        record_update(&POD, Some(&with_status), &mut cleared, "x", None, T2);
        assert!(cleared["metadata"].get("managedFields").is_none());
        let mut kept = with_status.clone();
        kept["metadata"]["managedFields"] = json!([]);
        record_update(&POD, Some(&with_status), &mut kept, "x", None, T2);
        assert_eq!(kept, with_status);

        // An object without managedFields hands its fields to `before-first-apply`.
        let mut untracked = with_status.clone();
        untracked["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        let error = apply(
            &POD,
            Some(&untracked),
            &json!({"spec": {"containers": [{"name": "c", "image": "j"}]}}),
            "a",
            false,
            T2,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"Apply failed with 1 conflict: conflict with "before-first-apply" using v1: .spec.containers[name="c"].image"#
        );
    }

    #[test]
    fn fields_v1_round_trip() {
        for fields in [
            json!({}),
            json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}),
            json!({"f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}}}}),
            json!({"f:metadata": {"f:finalizers": {"v:\"a\"": {}, ".": {}}}, "f:spec": {"f:x": {"i:0": {}}}}),
        ] {
            let set = FieldSet::from_fields_v1(&fields).unwrap();
            assert_eq!(set.to_fields_v1(), fields);
        }
        assert!(FieldSet::from_fields_v1(&json!({"x:y": {}})).is_none());
        assert!(FieldSet::from_fields_v1(&json!({"k:[1]": {}})).is_none());
        let set = FieldSet::from_fields_v1(&json!({"f:spec": {"f:ports": {"k:{\"protocol\":\"TCP\",\"port\":80}": {}}}, "f:metadata": {"f:finalizers": {"v:\"a\"": {}}}})).unwrap();
        let paths: Vec<String> = set.paths().iter().map(|path| display_path(path)).collect();
        assert_eq!(
            paths,
            vec![
                r#".metadata.finalizers[="a"]"#,
                r#".spec.ports[port=80,protocol="TCP"]"#
            ]
        );
    }
}
