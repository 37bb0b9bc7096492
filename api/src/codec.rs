//! Decoding manifests and request bodies: multi-document YAML and JSON with budgets,
//! `List` expansion, strict field validation, and typed decoding with field paths.
//!
//! Both formats go through the same two steps, so they report identical paths:
//! 1. text → `serde_json::Value`, with duplicate keys, nesting depth and (for YAML)
//!    aliases, nodes and documents bounded;
//! 2. `Value` → typed object, after the schema walk of the private `strict` module.

use std::cell::RefCell;
use std::fmt;

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::FieldError;
use crate::kind::{self, ResourceKind};
use crate::object::Object;
use crate::path::FieldPath;
use crate::schema::{Schemas, schemas};
use crate::strict::Walk;

/// Why input could not be decoded.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Error {
    /// The input is larger than the configured limit.
    #[error("the input is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// Input size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The YAML is malformed or exceeds a budget (aliases, nodes, depth, documents).
    #[error("yaml: {0}")]
    Yaml(String),
    /// The JSON is malformed.
    #[error("json: {0}")]
    Json(String),
    /// The document's structure is refused (a duplicate key, nesting too deep, a
    /// non-finite number), at a known path.
    #[error("{0}")]
    Structure(FieldError),
    /// A document is not an object with `apiVersion` and `kind`.
    #[error("Object 'Kind' is missing in document {document}")]
    MissingKind {
        /// 1-based index of the document.
        document: usize,
    },
    /// The kind is not one Skiff serves.
    #[error("no matches for kind {kind:?} in version {api_version:?}")]
    UnknownKind {
        /// The document's `apiVersion`.
        api_version: String,
        /// The document's `kind`.
        kind: String,
    },
    /// Fields are unknown, not implemented, or of the wrong type.
    #[error(
        "{kind} in version {version:?} cannot be handled as a {kind}: {}",
        render_field_errors(errors)
    )]
    Fields {
        /// The kind being decoded.
        kind: String,
        /// Its version.
        version: String,
        /// Every problem found, each with its path.
        errors: Vec<FieldError>,
    },
}

fn render_field_errors(errors: &[FieldError]) -> String {
    let unknown = errors
        .iter()
        .all(|e| e.error_type == crate::error::ErrorType::UnknownField);
    let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let prefix = if unknown {
        "strict decoding error: "
    } else {
        ""
    };
    format!("{prefix}{}", rendered.join(", "))
}

impl Error {
    /// The field errors carried by this error, for `Status.details.causes`.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            Self::Fields { errors, .. } => errors,
            Self::Structure(error) => std::slice::from_ref(error),
            _ => &[],
        }
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// The text format of an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JSON: one value (an object, or a `List` of objects).
    Json,
    /// YAML: one or more documents separated by `---`.
    Yaml,
}

impl Format {
    /// Sniffs the format as kubectl does: JSON if the first non-blank byte opens an
    /// object or array, YAML otherwise.
    pub fn detect(input: &[u8]) -> Self {
        match input.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{' | b'[') => Self::Json,
            _ => Self::Yaml,
        }
    }
}

/// Bounds on what one input may make the decoder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest input in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of objects and arrays.
    pub max_depth: usize,
    /// Most YAML nodes (scalars, sequences, mappings), counting alias expansions.
    pub max_nodes: usize,
    /// Most YAML alias uses (`*name`).
    pub max_aliases: usize,
    /// Most YAML events (scalars, sequence and mapping starts and ends) replayed by
    /// alias uses in total: what stops a "billion laughs" document early.
    pub max_alias_events: usize,
    /// Most YAML documents in one input.
    pub max_documents: usize,
}

impl Limits {
    /// Limits for API request bodies: Kubernetes' 3 MiB cap (CVE-2019-11253).
    pub const REQUEST: Self = Self {
        max_bytes: 3 * 1024 * 1024,
        max_depth: 64,
        max_nodes: 100_000,
        max_aliases: 1_000,
        max_alias_events: 10_000,
        max_documents: 1,
    };
    /// Limits for manifest files read by the CLI: larger, many documents.
    pub const MANIFEST: Self = Self {
        max_bytes: 16 * 1024 * 1024,
        max_depth: 64,
        max_nodes: 1_000_000,
        max_aliases: 1_000,
        max_alias_events: 10_000,
        max_documents: 1_000,
    };
}

/// One object found in an input, with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// 1-based index of the (non-empty) document it came from.
    pub document: usize,
    /// Index inside the document's `items` when the document was a `List`.
    pub item: Option<usize>,
    /// The object, still untyped.
    pub value: Value,
}

impl Manifest {
    /// Where the manifest came from, for messages: `document 2` or `document 1, items[3]`.
    pub fn location(&self) -> String {
        match self.item {
            Some(idx) => format!("document {}, items[{idx}]", self.document),
            None => format!("document {}", self.document),
        }
    }

    /// `apiVersion` and `kind`, when present.
    pub fn type_meta(&self) -> (Option<&str>, Option<&str>) {
        (
            self.value.get("apiVersion").and_then(Value::as_str),
            self.value.get("kind").and_then(Value::as_str),
        )
    }
}

/// Parses every document of `input` into untyped values, expanding `List` kinds into
/// their items. Empty documents are skipped.
pub fn parse_manifests(input: &[u8], format: Format, limits: &Limits) -> Result<Vec<Manifest>> {
    let documents = parse_documents(input, format, limits)?;
    let mut manifests = Vec::new();
    for (idx, value) in documents.into_iter().enumerate() {
        let document = idx + 1;
        let Value::Object(mut fields) = value else {
            return Err(Error::MissingKind { document });
        };
        let is_list = fields
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k.ends_with("List"))
            && matches!(fields.get("items"), Some(Value::Array(_)));
        if is_list {
            let Some(Value::Array(items)) = fields.remove("items") else {
                unreachable!("checked above")
            };
            for (item, value) in items.into_iter().enumerate() {
                manifests.push(Manifest {
                    document,
                    item: Some(item),
                    value,
                });
            }
        } else {
            manifests.push(Manifest {
                document,
                item: None,
                value: Value::Object(fields),
            });
        }
    }
    Ok(manifests)
}

/// Parses every document of `input` into untyped values, without interpreting them.
pub fn parse_documents(input: &[u8], format: Format, limits: &Limits) -> Result<Vec<Value>> {
    if input.len() > limits.max_bytes {
        return Err(Error::TooLarge {
            size: input.len(),
            limit: limits.max_bytes,
        });
    }
    let context = Context {
        max_depth: limits.max_depth,
        failure: RefCell::new(None),
    };
    let (result, context) = match format {
        Format::Json => (parse_json(input, &context), context),
        Format::Yaml => parse_yaml(input, context, limits),
    };
    // A structural failure inside the value builder is more precise than the
    // parser's wrapping of it.
    match context.failure.into_inner() {
        Some(failure) => Err(Error::Structure(failure)),
        None => result,
    }
}

fn parse_json(input: &[u8], context: &Context) -> Result<Vec<Value>> {
    let mut deserializer = serde_json::Deserializer::from_slice(input);
    let seed = ValueSeed {
        context,
        path: &PathNode::ROOT,
        depth: 0,
    };
    let value = seed
        .deserialize(&mut deserializer)
        .map_err(|e| Error::Json(e.to_string()))?;
    deserializer.end().map_err(|e| Error::Json(e.to_string()))?;
    Ok(if value.is_null() {
        Vec::new()
    } else {
        vec![value]
    })
}

fn parse_yaml(input: &[u8], context: Context, limits: &Limits) -> (Result<Vec<Value>>, Context) {
    let text = match std::str::from_utf8(input) {
        Ok(text) => text,
        Err(e) => {
            return (
                Err(Error::Yaml(format!("input is not UTF-8: {e}"))),
                context,
            );
        }
    };
    let mut budget = serde_saphyr::Budget::default();
    // The value builder enforces the depth limit itself, with a path; the parser's
    // own limit is one level beyond so that ours fires first.
    budget.max_depth = limits.max_depth + 2;
    budget.max_nodes = limits.max_nodes;
    budget.max_aliases = limits.max_aliases;
    budget.max_documents = limits.max_documents;
    budget.max_events = limits.max_nodes.saturating_mul(2);
    budget.max_total_scalar_bytes = limits.max_bytes;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = limits.max_alias_events;
    // Duplicate keys reach our value builder, which reports them with their path
    // exactly as it does for JSON.
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    // Kubernetes decodes YAML 1.1 style (`0755` is octal), as go-yaml v2 does.
    options.legacy_octal_numbers = true;
    options.with_snippet = false;

    YAML_CONTEXT.with(|slot| *slot.borrow_mut() = Some(context));
    let result = serde_saphyr::from_multiple_with_options::<Document>(text, options);
    let context = YAML_CONTEXT
        .with(|slot| slot.borrow_mut().take())
        .expect("installed above and only taken here");
    let result = result
        .map(|documents| {
            documents
                .into_iter()
                .map(|d| d.0)
                .filter(|v| !v.is_null())
                .collect()
        })
        .map_err(|e| Error::Yaml(e.to_string()));
    (result, context)
}

/// Shared state of one parse: the depth limit, and the first structural failure with
/// its path (parsers only carry a message through their error type).
struct Context {
    max_depth: usize,
    failure: RefCell<Option<FieldError>>,
}

impl Context {
    fn fail<E: de::Error>(&self, error: FieldError) -> E {
        let message = error.to_string();
        self.failure.borrow_mut().get_or_insert(error);
        E::custom(message)
    }
}

thread_local! {
    /// serde-saphyr builds each document through `Deserialize`, not a seed, so the
    /// parse's [`Context`] reaches [`Document`] through this slot.
    static YAML_CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// One YAML document's value, built with the same rules as JSON values.
struct Document(Value);

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        YAML_CONTEXT.with(|slot| {
            let slot = slot.borrow();
            let Some(context) = slot.as_ref() else {
                return Err(de::Error::custom(
                    "yaml documents are decoded only through codec::parse_documents",
                ));
            };
            ValueSeed {
                context,
                path: &PathNode::ROOT,
                depth: 0,
            }
            .deserialize(deserializer)
            .map(Document)
        })
    }
}

/// Where the value being built sits: a chain of borrowed segments up to the root,
/// rendered into a [`FieldPath`] only when an error is reported, so building a value
/// costs nothing per element however long its keys are.
struct PathNode<'p> {
    parent: Option<&'p PathNode<'p>>,
    segment: Segment<'p>,
}

enum Segment<'p> {
    Root,
    Field(&'p str),
    Index(usize),
}

impl PathNode<'_> {
    const ROOT: PathNode<'static> = PathNode {
        parent: None,
        segment: Segment::Root,
    };

    fn render(&self) -> FieldPath {
        let base = self.parent.map_or_else(FieldPath::root, PathNode::render);
        match self.segment {
            Segment::Root => base,
            Segment::Field(name) => base.child(name),
            Segment::Index(idx) => base.index(idx),
        }
    }
}

/// Builds a `serde_json::Value` while tracking the path, so duplicate keys and
/// excessive nesting are reported where they happen.
struct ValueSeed<'c, 'p> {
    context: &'c Context,
    path: &'p PathNode<'p>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'c> ValueSeed<'c, '_> {
    fn nested<'n, E: de::Error>(&self, node: &'n PathNode<'n>) -> Result<ValueSeed<'c, 'n>, E> {
        if self.depth >= self.context.max_depth {
            let detail = format!(
                "nesting deeper than {} levels is not allowed",
                self.context.max_depth
            );
            return Err(self
                .context
                .fail(FieldError::forbidden(&node.render(), detail)));
        }
        Ok(ValueSeed {
            context: self.context,
            path: node,
            depth: self.depth + 1,
        })
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-compatible value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        match serde_json::Number::from_f64(v) {
            Some(number) => Ok(Value::Number(number)),
            None => Err(self.context.fail(FieldError::invalid(
                &self.path.render(),
                v.to_string(),
                "non-finite numbers are not allowed",
            ))),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let node = PathNode {
                parent: Some(self.path),
                segment: Segment::Index(items.len()),
            };
            match seq.next_element_seed(self.nested(&node)?)? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Map::new();
        while let Some(MapKey(key)) = map.next_key::<MapKey>()? {
            let node = PathNode {
                parent: Some(self.path),
                segment: Segment::Field(&key),
            };
            if fields.contains_key(&key) {
                let error = FieldError::duplicate(&node.render(), key.clone());
                return Err(self.context.fail(FieldError {
                    detail: "field appears more than once".to_owned(),
                    ..error
                }));
            }
            let value = map.next_value_seed(self.nested(&node)?)?;
            fields.insert(key, value);
        }
        Ok(Value::Object(fields))
    }
}

/// A mapping key: strings as-is; YAML integer and boolean keys become their text, as
/// Kubernetes' YAML-to-JSON conversion does.
struct MapKey(String);

impl<'de> Deserialize<'de> for MapKey {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = MapKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, integer or boolean map key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MapKey, E> {
                Ok(MapKey(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MapKey, E> {
                Ok(MapKey(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MapKey, E> {
                Ok(MapKey(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<MapKey, E> {
                Ok(MapKey(v.to_string()))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

/// How unknown fields are treated, as Kubernetes' `fieldValidation` query parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Unknown fields are errors (kubectl's default).
    #[default]
    Strict,
    /// Unknown fields are dropped and reported as warnings.
    Warn,
    /// Unknown fields are dropped silently.
    Ignore,
}

impl FieldValidation {
    /// Parses the query parameter value (`Strict`, `Warn`, `Ignore`; empty → `Strict`).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "" | "Strict" => Some(Self::Strict),
            "Warn" => Some(Self::Warn),
            "Ignore" => Some(Self::Ignore),
            _ => None,
        }
    }
}

/// A decoded object and the warnings decoding produced (unknown fields under `Warn`).
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded<T> {
    /// The typed object.
    pub object: T,
    /// Unknown fields that were dropped, under [`FieldValidation::Warn`].
    pub warnings: Vec<FieldError>,
}

/// Decodes one untyped value into `T`: strict field check, then typed decoding with the
/// path of any type error. Fields Skiff does not implement are always errors.
pub fn decode<T: DeserializeOwned + JsonSchema>(
    mut value: Value,
    validation: FieldValidation,
) -> Result<Decoded<T>> {
    let name = T::schema_name();
    let schemas = schemas();
    let schema = schemas.definition(&name).unwrap_or(&ACCEPT_ALL);
    let warnings = check_fields(&mut value, schema, schemas, validation)?;
    let object = serde_path_to_error::deserialize::<_, T>(&value).map_err(|error| {
        let path = if error.path().iter().next().is_none() {
            FieldPath::root()
        } else {
            FieldPath::new(&error.path().to_string())
        };
        let (kind, version) = type_of(&value);
        Error::Fields {
            kind,
            version,
            errors: vec![FieldError::type_invalid(&path, error.inner().to_string())],
        }
    })?;
    Ok(Decoded { object, warnings })
}

/// The schema of a type that has none: anything goes.
static ACCEPT_ALL: Value = Value::Bool(true);

/// One schema walk: fails on unimplemented fields (always) and unknown fields
/// (`Strict`); returns the unknown fields as warnings under `Warn`.
fn check_fields(
    value: &mut Value,
    schema: &Value,
    schemas: &Schemas,
    validation: FieldValidation,
) -> Result<Vec<FieldError>> {
    let mut walk = Walk::new(schemas);
    walk.check(value, schema, &FieldPath::root());
    let mut errors = walk.unimplemented;
    if validation == FieldValidation::Strict {
        errors.splice(0..0, walk.unknown.drain(..));
    }
    if !errors.is_empty() {
        let (kind, version) = type_of(value);
        return Err(Error::Fields {
            kind,
            version,
            errors,
        });
    }
    Ok(if validation == FieldValidation::Warn {
        walk.unknown
    } else {
        Vec::new()
    })
}

fn type_of(value: &Value) -> (String, String) {
    let text = |field: &str| {
        value
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let api_version = text("apiVersion");
    let version = api_version
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    (text("kind"), version)
}

/// Decodes one manifest into the served kind its `apiVersion`/`kind` name.
pub fn decode_object(value: Value, validation: FieldValidation) -> Result<Decoded<Object>> {
    let (api_version, kind_name) = match (
        value.get("apiVersion").and_then(Value::as_str),
        value.get("kind").and_then(Value::as_str),
    ) {
        (Some(api_version), Some(kind)) => (api_version.to_owned(), kind.to_owned()),
        _ => return Err(Error::MissingKind { document: 1 }),
    };
    let Some(kind) = kind::by_type(&api_version, &kind_name) else {
        return Err(Error::UnknownKind {
            api_version,
            kind: kind_name,
        });
    };
    Object::decode(kind, value, validation)
}

/// The kind a decoded value claims to be, for callers that route before decoding.
pub fn kind_of(value: &Value) -> Option<&'static ResourceKind> {
    kind::by_type(
        value.get("apiVersion")?.as_str()?,
        value.get("kind")?.as_str()?,
    )
}
