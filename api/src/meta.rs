//! meta/v1 types: re-exported from k8s-openapi where it has them (`ObjectMeta`,
//! `Status`, `List`, `WatchEvent`, `LabelSelector`), hand-written where it does not
//! (`Table`, which kubectl asks for with `Accept: …;as=Table`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use k8s_openapi::List;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ListMeta, ObjectMeta, OwnerReference, Status,
    StatusCause, StatusDetails, Time, WatchEvent,
};
/// The time library of k8s-openapi's `Time`, re-exported so callers use the same version.
pub use k8s_openapi::jiff;

/// A server-side rendered table of objects, as `kubectl get` prints it
/// (`meta.k8s.io/v1 Table`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    /// Always `meta.k8s.io/v1`.
    pub api_version: String,
    /// Always `Table`.
    pub kind: String,
    /// List metadata: resourceVersion and continue token.
    #[serde(default)]
    pub metadata: ListMeta,
    /// The columns, in display order.
    pub column_definitions: Vec<TableColumnDefinition>,
    /// One row per object.
    pub rows: Vec<TableRow>,
}

impl Table {
    /// An empty table with the given columns.
    pub fn new(column_definitions: Vec<TableColumnDefinition>) -> Self {
        Self {
            api_version: "meta.k8s.io/v1".to_owned(),
            kind: "Table".to_owned(),
            metadata: ListMeta::default(),
            column_definitions,
            rows: Vec::new(),
        }
    }
}

/// One column of a [`Table`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TableColumnDefinition {
    /// Column header (`NAME`, `READY`).
    pub name: String,
    /// OpenAPI type of the cells: `string`, `integer`, `number`, `boolean`.
    #[serde(rename = "type")]
    pub type_: String,
    /// OpenAPI format hint (`name`, `date`).
    #[serde(default)]
    pub format: String,
    /// What the column shows.
    #[serde(default)]
    pub description: String,
    /// 0 for default columns, 1 and up for `-o wide` only.
    #[serde(default)]
    pub priority: i32,
}

/// One row of a [`Table`]: its cells and, optionally, the object it renders.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TableRow {
    /// Cell values, one per column definition.
    pub cells: Vec<Value>,
    /// The object (full, or `PartialObjectMetadata`) the row was rendered from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
}
