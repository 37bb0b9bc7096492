//! `skiff get TYPE[,TYPE…] [NAME…]`: Tables from the server printed like kubectl,
//! or the objects as YAML, JSON, names or a JSONPath template; `-w` keeps watching.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::bail;
use serde_json::Value;
use skiff_api::ResourceKind;

use super::{Context, finish};
use crate::GetArgs;
use crate::client::{self, ResourcePath};
use crate::jsonpath;
use crate::printers::{self, Aligner, TableFormat, TableOptions};
use crate::resources::{self, Selection};

/// The `-o` formats.
enum Output {
    /// The server's Table; `wide` adds the `priority > 0` columns.
    Table { wide: bool },
    /// The objects themselves.
    Objects(ObjectFormat),
}

/// The `-o` formats that print objects rather than Tables.
enum ObjectFormat {
    /// `kind.group/name` per object.
    Name,
    /// The objects as JSON.
    Json,
    /// The objects as YAML.
    Yaml,
    /// A JSONPath template over the object (or the `List`).
    JsonPath(jsonpath::Template),
    /// The same, each action's results printed as a JSON array.
    JsonPathAsJson(jsonpath::Template),
}

impl Output {
    fn parse(output: Option<&str>) -> anyhow::Result<Self> {
        Ok(match output {
            None | Some("") => Self::Table { wide: false },
            Some("wide") => Self::Table { wide: true },
            Some("name") => Self::Objects(ObjectFormat::Name),
            Some("json") => Self::Objects(ObjectFormat::Json),
            Some("yaml") => Self::Objects(ObjectFormat::Yaml),
            Some(other) => {
                if let Some(template) = other.strip_prefix("jsonpath=") {
                    Self::Objects(ObjectFormat::JsonPath(jsonpath::Template::parse(template)?))
                } else if let Some(template) = other.strip_prefix("jsonpath-as-json=") {
                    Self::Objects(ObjectFormat::JsonPathAsJson(jsonpath::Template::parse(
                        template,
                    )?))
                } else {
                    bail!(
                        "unable to match a printer suitable for the output format {other:?}, allowed formats are: json,jsonpath,jsonpath-as-json,name,wide,yaml"
                    )
                }
            }
        })
    }
}

impl ObjectFormat {
    /// One document (an object of `kind`, or a `List`) in this format.
    fn render(
        &self,
        kind: &ResourceKind,
        document: &Value,
        show_managed_fields: bool,
    ) -> anyhow::Result<String> {
        Ok(match self {
            Self::Name => format!("{}\n", printers::value_reference(kind, document)),
            Self::Json => printers::json(&without_managed_fields(document, show_managed_fields)),
            Self::Yaml => printers::yaml(&without_managed_fields(document, show_managed_fields))?,
            Self::JsonPath(template) => template.render(document)?,
            Self::JsonPathAsJson(template) => template.render_as_json(document)?,
        })
    }
}

/// kubectl hides `metadata.managedFields` (of the object, or of a List's items)
/// unless asked to show them.
fn without_managed_fields(document: &Value, show: bool) -> std::borrow::Cow<'_, Value> {
    let has_managed_fields = |object: &Value| object.pointer("/metadata/managedFields").is_some();
    let items = document.get("items").and_then(Value::as_array);
    if show
        || !(has_managed_fields(document)
            || items.is_some_and(|i| i.iter().any(has_managed_fields)))
    {
        return std::borrow::Cow::Borrowed(document);
    }
    let strip = |object: &mut Value| {
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("managedFields");
        }
    };
    let mut document = document.clone();
    strip(&mut document);
    if let Some(items) = document.get_mut("items").and_then(Value::as_array_mut) {
        items.iter_mut().for_each(strip);
    }
    std::borrow::Cow::Owned(document)
}

/// Runs `skiff get`.
pub(crate) async fn run(ctx: &Context, args: GetArgs) -> anyhow::Result<ExitCode> {
    let selections = resources::parse(&args.resources)?;
    let output = Output::parse(args.output.as_deref())?;
    let named = selections.iter().any(|s| !s.names.is_empty());
    if ctx.all_namespaces
        && selections
            .iter()
            .any(|s| !s.names.is_empty() && s.kind.namespaced)
    {
        bail!("a resource cannot be retrieved by name across all namespaces");
    }
    if named && (args.selector.is_some() || args.field_selector.is_some()) {
        bail!("name cannot be provided when a selector is specified");
    }
    if args.watch {
        let [selection] = selections.as_slice() else {
            bail!("you may only specify a single resource type");
        };
        return watch(ctx, &args, selection, &output).await;
    }
    match output {
        Output::Table { wide } => tables(ctx, &args, &selections, wide).await,
        Output::Objects(format) => objects(ctx, &args, &selections, &format).await,
    }
}

/// `labelSelector` and `fieldSelector` from the flags.
fn selector_query(args: &GetArgs) -> Vec<(&str, &str)> {
    let mut query = Vec::new();
    if let Some(selector) = &args.selector {
        query.push(("labelSelector", selector.as_str()));
    }
    if let Some(selector) = &args.field_selector {
        query.push(("fieldSelector", selector.as_str()));
    }
    query
}

/// The Tables answering one selection: the collection's, or one per named object.
async fn fetch_tables(
    ctx: &Context,
    args: &GetArgs,
    selection: &Selection,
    errors: &mut Vec<anyhow::Error>,
) -> Vec<Value> {
    let mut tables = Vec::new();
    if selection.names.is_empty() {
        let path = ResourcePath::collection(selection.kind, ctx.list_namespace());
        match ctx
            .client
            .get_table(&path.to_string(), &selector_query(args))
            .await
        {
            Ok(reply) => tables.push(as_table(reply)),
            Err(error) => errors.push(error.into()),
        }
    } else {
        for name in &selection.names {
            let path = ResourcePath::object(selection.kind, Some(&ctx.namespace), name);
            match ctx.client.get_table(&path.to_string(), &[]).await {
                Ok(reply) => tables.push(as_table(reply)),
                Err(error) => errors.push(error.into()),
            }
        }
    }
    tables
}

/// A `meta/v1 Table` as is; a plain object or list becomes the NAME and AGE Table
/// kubectl prints for servers without Table support.
fn as_table(reply: Value) -> Value {
    if reply.get("kind").and_then(Value::as_str) == Some("Table") {
        return reply;
    }
    let objects: Vec<&Value> = match reply.get("items").and_then(Value::as_array) {
        Some(items) => items.iter().collect(),
        None => vec![&reply],
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let age = object
                .pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                .map(|created| printers::human_duration(now.duration_since(created)))
                .unwrap_or_else(|| "<unknown>".to_owned());
            serde_json::json!({
                "cells": [printers::object_name(object), age],
                "object": {"metadata": object.get("metadata").cloned().unwrap_or(Value::Null)},
            })
        })
        .collect();
    serde_json::json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": reply.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null)},
        "columnDefinitions": [
            {"name": "Name", "type": "string", "format": "name", "priority": 0},
            {"name": "Age", "type": "string", "format": "", "priority": 0},
        ],
        "rows": rows,
    })
}

fn row_count(table: &Value) -> usize {
    table
        .get("rows")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

fn table_options(
    ctx: &Context,
    args: &GetArgs,
    kind: &ResourceKind,
    wide: bool,
    several: bool,
) -> TableOptions {
    TableOptions {
        wide,
        with_namespace: ctx.all_namespaces && kind.namespaced,
        kind_prefix: several.then(|| kind.qualified_singular()),
        show_labels: args.show_labels,
    }
}

/// Prints one table per kind, a blank line between kinds, errors last.
async fn tables(
    ctx: &Context,
    args: &GetArgs,
    selections: &[Selection],
    wide: bool,
) -> anyhow::Result<ExitCode> {
    let several = selections.len() > 1;
    let mut errors = Vec::new();
    let mut printed_any = false;
    let mut stdout = std::io::stdout().lock();
    for selection in selections {
        let tables = fetch_tables(ctx, args, selection, &mut errors).await;
        if tables.iter().all(|t| row_count(t) == 0) {
            continue;
        }
        let options = table_options(ctx, args, selection.kind, wide, several);
        let format = TableFormat::new(&tables[0], options);
        let mut rows = Vec::new();
        if !args.no_headers {
            rows.push(format.header());
        }
        for table in &tables {
            rows.extend(format.rows(table));
        }
        if printed_any && !args.no_headers {
            writeln!(stdout)?;
        }
        write!(stdout, "{}", printers::tabulate(&rows))?;
        printed_any = true;
    }
    stdout.flush()?;
    if !printed_any && errors.is_empty() {
        eprintln!("{}", no_resources_found(ctx, selections));
    }
    Ok(finish(&errors))
}

/// kubectl's message for an empty result.
fn no_resources_found(ctx: &Context, selections: &[Selection]) -> String {
    if !ctx.all_namespaces && selections.iter().all(|s| s.kind.namespaced) {
        format!("No resources found in {} namespace.", ctx.namespace)
    } else {
        "No resources found".to_owned()
    }
}

/// Fills in `apiVersion` and `kind`, which list items may leave out.
fn with_type_meta(kind: &ResourceKind, mut object: Value) -> Value {
    if let Some(fields) = object.as_object_mut() {
        fields
            .entry("apiVersion")
            .or_insert_with(|| Value::String(kind.api_version.to_owned()));
        fields
            .entry("kind")
            .or_insert_with(|| Value::String(kind.kind.to_owned()));
    }
    object
}

/// `-o name|json|yaml|jsonpath`: the objects themselves.
async fn objects(
    ctx: &Context,
    args: &GetArgs,
    selections: &[Selection],
    format: &ObjectFormat,
) -> anyhow::Result<ExitCode> {
    let mut errors = Vec::new();
    let mut found: Vec<(&'static ResourceKind, Value)> = Vec::new();
    for selection in selections {
        if selection.names.is_empty() {
            let path = ResourcePath::collection(selection.kind, ctx.list_namespace());
            match ctx
                .client
                .get(&path.to_string(), &selector_query(args))
                .await
            {
                Ok(list) => {
                    let items = match list {
                        Value::Object(mut fields) => match fields.remove("items") {
                            Some(Value::Array(items)) => items,
                            _ => Vec::new(),
                        },
                        _ => Vec::new(),
                    };
                    found.extend(
                        items
                            .into_iter()
                            .map(|item| (selection.kind, with_type_meta(selection.kind, item))),
                    );
                }
                Err(error) => errors.push(error.into()),
            }
        } else {
            for name in &selection.names {
                let path = ResourcePath::object(selection.kind, Some(&ctx.namespace), name);
                match ctx.client.get(&path.to_string(), &[]).await {
                    Ok(object) => {
                        found.push((selection.kind, with_type_meta(selection.kind, object)))
                    }
                    Err(error) => errors.push(error.into()),
                }
            }
        }
    }
    // One named object prints as itself; anything else as a List, even if empty.
    let single = selections.len() == 1 && selections[0].names.len() == 1;
    let mut stdout = std::io::stdout().lock();
    if let ObjectFormat::Name = format {
        for (kind, object) in &found {
            write!(
                stdout,
                "{}",
                format.render(kind, object, args.show_managed_fields)?
            )?;
        }
    } else {
        let kind = selections[0].kind;
        let document = if single {
            found.pop().map(|(_, object)| object)
        } else {
            Some(printers::list(found.into_iter().map(|(_, o)| o).collect()))
        };
        if let Some(document) = document {
            write!(
                stdout,
                "{}",
                format.render(kind, &document, args.show_managed_fields)?
            )?;
        }
    }
    stdout.flush()?;
    Ok(finish(&errors))
}

/// `-w`: the list, then every change from its resourceVersion on, until the server
/// ends the stream.
async fn watch(
    ctx: &Context,
    args: &GetArgs,
    selection: &Selection,
    output: &Output,
) -> anyhow::Result<ExitCode> {
    let kind = selection.kind;
    let field_selector = match (selection.names.as_slice(), &args.field_selector) {
        ([], selector) => selector.clone(),
        ([name], None) => Some(format!("metadata.name={name}")),
        _ => bail!(
            "watch is only supported on individual resources and resource collections, but 2 resources were found"
        ),
    };
    let namespace = if selection.names.is_empty() {
        ctx.list_namespace()
    } else {
        Some(ctx.namespace.as_str())
    };
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(selector) = &args.selector {
        query.push(("labelSelector", selector));
    }
    if let Some(selector) = &field_selector {
        query.push(("fieldSelector", selector));
    }
    let path = ResourcePath::collection(kind, namespace).to_string();
    let (table_output, wide) = match output {
        Output::Table { wide } => (true, *wide),
        Output::Objects(_) => (false, false),
    };
    let list = if table_output {
        as_table(ctx.client.get_table(&path, &query).await?)
    } else {
        ctx.client.get(&path, &query).await?
    };
    let resource_version = list
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();

    let mut printer = WatchPrinter {
        format: None,
        aligner: Aligner::default(),
        header_printed: false,
        options: table_options(ctx, args, kind, wide, false),
        no_headers: args.no_headers,
    };
    match output {
        Output::Table { .. } => printer.table(&list)?,
        Output::Objects(format) => {
            let items = client::items(&list);
            for item in items {
                print_object(
                    kind,
                    &with_type_meta(kind, item),
                    format,
                    args.show_managed_fields,
                )?;
            }
        }
    }

    query.push(("resourceVersion", &resource_version));
    let mut events = ctx.client.watch(&path, &query, table_output).await?;
    while let Some(event) = events.next().await {
        let event = event?;
        let object = event.get("object").cloned().unwrap_or(Value::Null);
        match event.get("type").and_then(Value::as_str) {
            Some("ERROR") => {
                return Err(client::Error::Status(Box::new(object)).into());
            }
            Some("BOOKMARK") => {}
            _ => match output {
                Output::Table { .. } => printer.table(&as_table(object))?,
                Output::Objects(format) => {
                    print_object(
                        kind,
                        &with_type_meta(kind, object),
                        format,
                        args.show_managed_fields,
                    )?;
                }
            },
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints one watched object; YAML documents are separated by `---`.
fn print_object(
    kind: &ResourceKind,
    object: &Value,
    format: &ObjectFormat,
    show_managed_fields: bool,
) -> anyhow::Result<()> {
    let mut text = format.render(kind, object, show_managed_fields)?;
    if let ObjectFormat::Yaml = format {
        text.insert_str(0, "---\n");
    }
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{text}")?;
    stdout.flush()?;
    Ok(())
}

/// Table rows of a watch, printed as they arrive and kept in line.
struct WatchPrinter {
    /// The columns, from the first Table that defined them.
    format: Option<TableFormat>,
    aligner: Aligner,
    header_printed: bool,
    options: TableOptions,
    no_headers: bool,
}

impl WatchPrinter {
    fn table(&mut self, table: &Value) -> anyhow::Result<()> {
        let candidate = TableFormat::new(table, self.options.clone());
        if self.format.is_none() && !candidate.is_empty() {
            self.format = Some(candidate);
        }
        let Some(format) = &self.format else {
            return Ok(());
        };
        let mut rows = format.rows(table);
        if rows.is_empty() {
            return Ok(());
        }
        if !self.header_printed && !self.no_headers {
            rows.insert(0, format.header());
        }
        self.header_printed = true;
        let mut stdout = std::io::stdout().lock();
        write!(stdout, "{}", self.aligner.format(&rows))?;
        stdout.flush()?;
        Ok(())
    }
}
