//! JSON schemas of every served type, generated once from k8s-openapi's schemars
//! implementations. They drive strict field validation, `skiff explain`, and (later)
//! `/openapi/v2` and `/openapi/v3`.

use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Event, Namespace, Node, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value};

use crate::kind::ResourceKind;

/// Every schema definition, keyed by its OpenAPI name (`io.k8s.api.core.v1.Pod`).
#[derive(Debug)]
pub struct Schemas {
    definitions: Map<String, Value>,
}

impl Schemas {
    fn generate() -> Self {
        let mut generator = SchemaGenerator::default();
        // Each call registers the type and everything it references under `$defs`.
        let _ = (
            generator.subschema_for::<Namespace>(),
            generator.subschema_for::<Pod>(),
            generator.subschema_for::<Service>(),
            generator.subschema_for::<Endpoints>(),
            generator.subschema_for::<Node>(),
            generator.subschema_for::<Event>(),
            generator.subschema_for::<Secret>(),
            generator.subschema_for::<Deployment>(),
            generator.subschema_for::<ReplicaSet>(),
            generator.subschema_for::<Lease>(),
            generator.subschema_for::<Scale>(),
            generator.subschema_for::<Status>(),
        );
        let definitions = generator.take_definitions(true);
        Self { definitions }
    }

    /// All definitions, for serving OpenAPI documents.
    pub fn definitions(&self) -> &Map<String, Value> {
        &self.definitions
    }

    /// The definition named `name`, if any.
    pub fn definition(&self, name: &str) -> Option<&Value> {
        self.definitions.get(name)
    }

    /// The definition of type `T`.
    pub fn definition_of<T: JsonSchema>(&self) -> Option<&Value> {
        self.definition(&T::schema_name())
    }

    /// Follows `$ref` (any prefix: `#/$defs/`, `#/definitions/`, `#/components/schemas/`)
    /// to the referenced definition, returning the definition's name too.
    pub fn resolve<'a>(&'a self, schema: &'a Value) -> (Option<&'a str>, &'a Value) {
        let Some(reference) = schema.get("$ref").and_then(Value::as_str) else {
            return (None, schema);
        };
        let name = reference.rsplit('/').next().unwrap_or(reference);
        match self.definitions.get_key_value(name) {
            Some((name, definition)) => (Some(name.as_str()), definition),
            None => (None, schema),
        }
    }

    /// The definition name of a stored kind (`io.k8s.api.apps.v1.Deployment`).
    pub fn kind_definition_name(kind: &ResourceKind) -> String {
        let group = match kind.group {
            "" => "core",
            group => group.split('.').next().unwrap_or(group),
        };
        format!("io.k8s.api.{group}.{}.{}", kind.version, kind.kind)
    }
}

/// The process-wide schema set, generated on first use.
pub fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(Schemas::generate)
}

/// Why a field path could not be explained.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    /// The path names a field the schema does not have.
    #[error("field {field:?} does not exist")]
    NoSuchField {
        /// The path up to and including the missing field.
        field: String,
    },
    /// The kind has no schema (a bug: every served kind is generated).
    #[error("no schema for kind {0}")]
    NoSchema(String),
}

/// One field listed under `FIELDS:` in an explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExplainedField {
    /// JSON field name.
    pub name: String,
    /// Type as kubectl shows it: `string`, `integer`, `[]Container`, `map[string]string`.
    pub type_name: String,
    /// Whether the field is required.
    pub required: bool,
    /// The field's description.
    pub description: String,
    /// Allowed values, when the schema enumerates them.
    pub enum_values: Vec<String>,
}

/// What `explain KIND.a.b` shows: the addressed field's type, description and sub-fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The kind being explained.
    pub kind: &'static ResourceKind,
    /// The addressed field (`strategy`) and its type, or `None` for the kind itself.
    pub field: Option<(String, String)>,
    /// The description of the field, or of the kind.
    pub description: String,
    /// Sub-fields when the addressed type is an object, sorted by name.
    pub fields: Vec<ExplainedField>,
}

/// Explains `kind` at `field_path` (`["spec", "strategy"]`) from the generated schemas.
pub fn explain(
    kind: &'static ResourceKind,
    field_path: &[&str],
) -> Result<Explanation, ExplainError> {
    let schemas = schemas();
    let root_name = Schemas::kind_definition_name(kind);
    let mut current = schemas
        .definition(&root_name)
        .ok_or_else(|| ExplainError::NoSchema(root_name.clone()))?;
    let mut description = description_of(current);
    let mut field = None;
    for (depth, segment) in field_path.iter().enumerate() {
        let object = element_schema(schemas, current);
        let Some(property) = object.get("properties").and_then(|p| p.get(*segment)) else {
            return Err(ExplainError::NoSuchField {
                field: field_path[..=depth].join("."),
            });
        };
        // The property's own description comes first, then its type's.
        let (_, resolved) = schemas.resolve(property);
        description = join_descriptions(&description_of(property), &description_of(resolved));
        field = Some(((*segment).to_owned(), type_name(schemas, property)));
        current = property;
    }
    let object = element_schema(schemas, current);
    let required: Vec<&str> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut fields: Vec<ExplainedField> = object
        .get("properties")
        .and_then(Value::as_object)
        .map(|properties| {
            properties
                .iter()
                .map(|(name, property)| ExplainedField {
                    name: name.clone(),
                    type_name: type_name(schemas, property),
                    required: required.contains(&name.as_str()),
                    description: description_of(property),
                    enum_values: enum_values(schemas.resolve(property).1),
                })
                .collect()
        })
        .unwrap_or_default();
    fields.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Explanation {
        kind,
        field,
        description,
        fields,
    })
}

/// The object schema behind a property: resolves `$ref` and looks through arrays and maps.
fn element_schema<'a>(schemas: &'a Schemas, schema: &'a Value) -> &'a Value {
    let (_, resolved) = schemas.resolve(schema);
    if let Some(items) = resolved.get("items") {
        return element_schema(schemas, items);
    }
    match resolved.get("additionalProperties") {
        Some(values) if values.is_object() && resolved.get("properties").is_none() => {
            element_schema(schemas, values)
        }
        _ => resolved,
    }
}

/// Type names as kubectl's explain prints them.
pub fn type_name(schemas: &Schemas, schema: &Value) -> String {
    let (name, resolved) = schemas.resolve(schema);
    if let Some(name) = name {
        let short = name.rsplit('.').next().unwrap_or(name);
        return match short {
            "Time" | "MicroTime" => "string".to_owned(),
            other => other.to_owned(),
        };
    }
    match resolved.get("type").and_then(Value::as_str) {
        Some("array") => {
            let items = resolved
                .get("items")
                .map(|i| type_name(schemas, i))
                .unwrap_or_default();
            format!("[]{items}")
        }
        Some("object") => match resolved.get("additionalProperties") {
            Some(values) if values.is_object() => {
                format!("map[string]{}", type_name(schemas, values))
            }
            _ => "Object".to_owned(),
        },
        Some(other) => other.to_owned(),
        None if resolved.get("x-kubernetes-int-or-string").is_some() => "IntOrString".to_owned(),
        None => "Object".to_owned(),
    }
}

fn description_of(schema: &Value) -> String {
    schema
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn join_descriptions(first: &str, second: &str) -> String {
    match (first.is_empty(), second.is_empty() || first == second) {
        (true, _) => second.to_owned(),
        (false, true) => first.to_owned(),
        (false, false) => format!("{first}\n\n{second}"),
    }
}

fn enum_values(schema: &Value) -> Vec<String> {
    schema
        .get("enum")
        .and_then(Value::as_array)
        .map(|values| {
            values
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind;

    #[test]
    fn every_kind_has_a_definition() {
        for kind in kind::ALL {
            let name = Schemas::kind_definition_name(kind);
            assert!(schemas().definition(&name).is_some(), "{name}");
        }
        assert!(schemas().definition_of::<Scale>().is_some());
        assert!(schemas().definition_of::<Status>().is_some());
    }

    #[test]
    fn explains_deployment_strategy() {
        let explanation = explain(&kind::DEPLOYMENT, &["spec", "strategy"]).unwrap();
        assert_eq!(
            explanation.field,
            Some(("strategy".to_owned(), "DeploymentStrategy".to_owned()))
        );
        assert!(
            explanation
                .description
                .contains("The deployment strategy to use"),
            "{}",
            explanation.description
        );
        let names: Vec<&str> = explanation.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["rollingUpdate", "type"]);
        assert_eq!(explanation.fields[0].type_name, "RollingUpdateDeployment");
        assert_eq!(explanation.fields[1].type_name, "string");

        let rolling = explain(&kind::DEPLOYMENT, &["spec", "strategy", "rollingUpdate"]).unwrap();
        let max_surge = rolling
            .fields
            .iter()
            .find(|f| f.name == "maxSurge")
            .unwrap();
        assert_eq!(max_surge.type_name, "IntOrString");
    }

    #[test]
    fn explains_lists_maps_and_required_fields() {
        let containers = explain(&kind::POD, &["spec", "containers"]).unwrap();
        assert_eq!(
            containers.field,
            Some(("containers".to_owned(), "[]Container".to_owned()))
        );
        let name = containers.fields.iter().find(|f| f.name == "name").unwrap();
        assert!(name.required);
        let labels = explain(&kind::POD, &["metadata"]).unwrap();
        let labels = labels.fields.iter().find(|f| f.name == "labels").unwrap();
        assert_eq!(labels.type_name, "map[string]string");
        let error = explain(&kind::DEPLOYMENT, &["spec", "replicaz"]).unwrap_err();
        assert_eq!(
            error,
            ExplainError::NoSuchField {
                field: "spec.replicaz".to_owned()
            }
        );
    }
}
