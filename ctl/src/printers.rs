//! Everything `skiff` prints for humans, in kubectl's shapes.

use std::fmt::Write as _;
use std::io::Write as _;

use serde::Serialize as _;
use serde_json::Value;
use skiff_api::schema::Explanation;
use skiff_api::{Object, ResourceKind};

/// `deployment.apps/web` or `pod/web-1`, as kubectl names objects.
pub(crate) fn object_reference(object: &Object) -> String {
    format!("{}/{}", object.kind().qualified_singular(), object.name())
}

/// Width kubectl wraps explain descriptions at.
const WRAP_WIDTH: usize = 80;

/// Renders an explanation like `kubectl explain` (v1.27+ plaintext template).
pub(crate) fn explanation(explanation: &Explanation) -> String {
    let kind = explanation.kind;
    let mut out = String::new();
    if !kind.group.is_empty() {
        let _ = writeln!(out, "GROUP:      {}", kind.group);
    }
    let _ = writeln!(out, "KIND:       {}", kind.kind);
    let _ = writeln!(out, "VERSION:    {}\n", kind.version);
    if let Some((name, type_name)) = &explanation.field {
        let _ = writeln!(out, "FIELD: {name} <{type_name}>\n");
    }
    let _ = writeln!(out, "DESCRIPTION:");
    out.push_str(&wrap(&explanation.description, 4));
    if !explanation.fields.is_empty() {
        let _ = writeln!(out, "\nFIELDS:");
        for field in &explanation.fields {
            let required = if field.required { " -required-" } else { "" };
            let _ = writeln!(out, "  {}\t<{}>{required}", field.name, field.type_name);
            if !field.enum_values.is_empty() {
                let _ = writeln!(out, "  enum: {}", field.enum_values.join(", "));
            }
            out.push_str(&wrap(&field.description, 4));
            out.push('\n');
        }
    }
    out
}

/// Word-wraps each paragraph of `text` to [`WRAP_WIDTH`], indented by `indent` spaces.
fn wrap(text: &str, indent: usize) -> String {
    let prefix = " ".repeat(indent);
    let mut out = String::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && indent + line.len() + 1 + word.len() > WRAP_WIDTH {
                let _ = writeln!(out, "{prefix}{line}");
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if line.is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "{prefix}{line}");
        }
    }
    out
}

/// kubectl's tabwriter settings: cells padded by 3, at least 6 wide.
const MIN_WIDTH: usize = 6;
const PADDING: usize = 3;

/// Aligns rows of cells into columns exactly as kubectl's tabwriter does: every cell
/// but the last of a line is padded to its column's width.
pub(crate) fn tabulate(rows: &[Vec<String>]) -> String {
    // Go's tabwriter pads first and then applies the minimum (max(len + 3, 6)); this
    // crate applies the minimum first (max(len, min) + 3), so the minimum is shifted.
    let mut writer = tabwriter::TabWriter::new(Vec::new())
        .minwidth(MIN_WIDTH - PADDING)
        .padding(PADDING);
    for row in rows {
        // Writing to a Vec cannot fail.
        let _ = writeln!(writer, "{}", row.join("\t"));
    }
    match writer.into_inner() {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    }
}

/// The aligner of `get -w`: like [`tabulate`], but column widths only grow from one
/// batch of rows to the next, so rows printed as they arrive stay in line.
#[derive(Debug, Default)]
pub(crate) struct Aligner {
    widths: Vec<usize>,
}

impl Aligner {
    /// Formats `rows`, widening the remembered columns as needed.
    pub fn format(&mut self, rows: &[Vec<String>]) -> String {
        for row in rows {
            let Some((_, padded)) = row.split_last() else {
                continue;
            };
            for (idx, cell) in padded.iter().enumerate() {
                let width = (cell.chars().count() + PADDING).max(MIN_WIDTH);
                if idx == self.widths.len() {
                    self.widths.push(width);
                } else if self.widths[idx] < width {
                    self.widths[idx] = width;
                }
            }
        }
        let mut out = String::new();
        for row in rows {
            if let Some((last, padded)) = row.split_last() {
                for (idx, cell) in padded.iter().enumerate() {
                    let _ = write!(out, "{cell:<width$}", width = self.widths[idx]);
                }
                out.push_str(last);
            }
            out.push('\n');
        }
        out
    }
}

/// How `get` turns Tables into rows.
#[derive(Clone, Debug, Default)]
pub(crate) struct TableOptions {
    /// Show `priority > 0` columns (`-o wide`).
    pub wide: bool,
    /// Start each row with the object's namespace (`-A` on a namespaced kind).
    pub with_namespace: bool,
    /// Prefix names with `deployment.apps/` (several kinds listed at once).
    pub kind_prefix: Option<String>,
    /// End each row with the object's labels.
    pub show_labels: bool,
}

/// The columns of one kind's Table, chosen from the server's `columnDefinitions`.
#[derive(Clone, Debug)]
pub(crate) struct TableFormat {
    options: TableOptions,
    /// Index into the row's cells, column name, whether it holds the object's name.
    columns: Vec<(usize, String, bool)>,
}

impl TableFormat {
    /// Picks the columns of `table` (a `meta/v1 Table`).
    pub fn new(table: &Value, options: TableOptions) -> Self {
        let definitions = table
            .get("columnDefinitions")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let columns = definitions
            .iter()
            .enumerate()
            .filter(|(_, column)| {
                options.wide || column.get("priority").and_then(Value::as_i64).unwrap_or(0) == 0
            })
            .map(|(idx, column)| {
                let name = column
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let is_name = column.get("format").and_then(Value::as_str) == Some("name");
                (idx, name.to_owned(), is_name)
            })
            .collect();
        Self { options, columns }
    }

    /// Whether the server sent no column definitions (later watch events).
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The header row: upper-cased column names, as kubectl prints them.
    pub fn header(&self) -> Vec<String> {
        let mut header = Vec::new();
        if self.options.with_namespace {
            header.push("NAMESPACE".to_owned());
        }
        header.extend(self.columns.iter().map(|(_, name, _)| name.to_uppercase()));
        if self.options.show_labels {
            header.push("LABELS".to_owned());
        }
        header
    }

    /// The rows of `table`.
    pub fn rows(&self, table: &Value) -> Vec<Vec<String>> {
        let rows = table
            .get("rows")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        rows.iter().map(|row| self.row(row)).collect()
    }

    fn row(&self, row: &Value) -> Vec<String> {
        let cells = row
            .get("cells")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let metadata = row.pointer("/object/metadata");
        let mut out = Vec::new();
        if self.options.with_namespace {
            let namespace = metadata
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            out.push(namespace.to_owned());
        }
        for (idx, _, is_name) in &self.columns {
            let cell = cells.get(*idx).map(cell_text).unwrap_or_default();
            match (&self.options.kind_prefix, is_name) {
                (Some(prefix), true) => out.push(format!("{prefix}/{cell}")),
                _ => out.push(cell),
            }
        }
        if self.options.show_labels {
            out.push(labels(metadata.and_then(|m| m.get("labels"))));
        }
        out
    }
}

/// One Table cell as kubectl prints it.
fn cell_text(cell: &Value) -> String {
    match cell {
        Value::String(text) => text.clone(),
        Value::Null => "<none>".to_owned(),
        other => other.to_string(),
    }
}

/// `k=v,k2=v2` in key order, or `<none>`.
pub(crate) fn labels(labels: Option<&Value>) -> String {
    let text = labels
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    if text.is_empty() {
        "<none>".to_owned()
    } else {
        text
    }
}

/// `deployment.apps/web`, from an untyped object of a known kind.
pub(crate) fn value_reference(kind: &ResourceKind, object: &Value) -> String {
    format!("{}/{}", kind.qualified_singular(), object_name(object))
}

/// `metadata.name`, or empty.
pub(crate) fn object_name(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// JSON the way kubectl prints it: keys sorted, four-space indent, trailing newline.
pub(crate) fn json(value: &Value) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    // Serializing a Value into a Vec cannot fail.
    let _ = value.serialize(&mut serializer);
    out.push(b'\n');
    String::from_utf8_lossy(&out).into_owned()
}

/// YAML the way kubectl prints it: block style, keys sorted, lists not indented.
pub(crate) fn yaml(value: &Value) -> anyhow::Result<String> {
    let text =
        serde_saphyr::to_string(value).map_err(|e| anyhow::anyhow!("failed to print YAML: {e}"))?;
    Ok(if text.ends_with('\n') {
        text
    } else {
        text + "\n"
    })
}

/// The `v1 List` kubectl prints when `-o json|yaml` covers several objects.
pub(crate) fn list(items: Vec<Value>) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "items": items,
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    })
}

/// kubectl's `HumanDuration`: `45s`, `3m20s`, `12m`, `5h10m`, `3d4h`, `2y30d`.
pub(crate) fn human_duration(elapsed: k8s_openapi::jiff::SignedDuration) -> String {
    let seconds = elapsed.as_secs();
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            rest => format!("{minutes}m{rest}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            rest => format!("{hours}h{rest}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            rest => format!("{days}d{rest}h"),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{years}y"),
            rest => format!("{years}y{rest}d"),
        };
    }
    format!("{years}y")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        let check = |seconds: i64, expected: &str| {
            let elapsed = k8s_openapi::jiff::SignedDuration::from_secs(seconds);
            assert_eq!(human_duration(elapsed), expected, "{seconds}");
        };
        check(-5, "<invalid>");
        check(-1, "0s");
        check(0, "0s");
        check(119, "119s");
        check(200, "3m20s");
        check(540, "9m");
        check(720, "12m");
        check(179 * 60, "179m");
        check(5 * 3600 + 600, "5h10m");
        check(30 * 3600, "30h");
        check(3 * 86400 + 4 * 3600, "3d4h");
        check(100 * 86400, "100d");
        check(2 * 365 * 86400 + 30 * 86400, "2y30d");
        check(10 * 365 * 86400, "10y");
    }

    #[test]
    fn tables_align_like_kubectl() {
        let rows: Vec<Vec<String>> = vec![
            vec!["NAME".into(), "READY".into(), "AGE".into()],
            vec!["web-1".into(), "1/1".into(), "5s".into()],
            vec!["a".into(), "0/1".into(), "".into()],
        ];
        let expected = "NAME    READY   AGE\nweb-1   1/1     5s\na       0/1     \n";
        assert_eq!(tabulate(&rows), expected);
        let mut aligner = Aligner::default();
        assert_eq!(aligner.format(&rows), expected);
        // A later, longer name widens the column; earlier widths are never lost.
        let later = vec![vec!["a-much-longer-name".into(), "1/1".into(), "1s".into()]];
        assert_eq!(aligner.format(&later), "a-much-longer-name   1/1     1s\n");
        let short = vec![vec!["b".into(), "1/1".into(), "1s".into()]];
        assert_eq!(aligner.format(&short), "b                    1/1     1s\n");
    }

    #[test]
    fn table_columns_follow_priority_and_options() {
        let table = serde_json::json!({
            "columnDefinitions": [
                {"name": "Name", "format": "name", "priority": 0},
                {"name": "Up-to-date", "priority": 0},
                {"name": "Images", "priority": 1},
            ],
            "rows": [{"cells": ["web", 3, "nginx"],
                      "object": {"metadata": {"name": "web", "namespace": "team", "labels": {"b": "2", "a": "1"}}}}],
        });
        let narrow = TableFormat::new(&table, TableOptions::default());
        assert_eq!(narrow.header(), ["NAME", "UP-TO-DATE"]);
        assert_eq!(narrow.rows(&table), [["web", "3"]]);
        let options = TableOptions {
            wide: true,
            with_namespace: true,
            kind_prefix: Some("deployment.apps".into()),
            show_labels: true,
        };
        let wide = TableFormat::new(&table, options);
        assert_eq!(
            wide.header(),
            ["NAMESPACE", "NAME", "UP-TO-DATE", "IMAGES", "LABELS"]
        );
        assert_eq!(
            wide.rows(&table),
            [["team", "deployment.apps/web", "3", "nginx", "a=1,b=2"]]
        );
    }

    #[test]
    fn json_and_yaml_look_like_kubectl() {
        let value = serde_json::json!({"kind": "List", "items": [{"a": 1}], "apiVersion": "v1"});
        assert_eq!(
            json(&value),
            "{\n    \"apiVersion\": \"v1\",\n    \"items\": [\n        {\n            \"a\": 1\n        }\n    ],\n    \"kind\": \"List\"\n}\n"
        );
        assert_eq!(
            yaml(&value).unwrap(),
            "apiVersion: v1\nitems:\n- a: 1\nkind: List\n"
        );
    }

    #[test]
    fn wraps_at_eighty_columns_with_indent() {
        let text = "word ".repeat(40);
        let wrapped = wrap(&text, 4);
        assert!(
            wrapped
                .lines()
                .all(|l| l.len() <= WRAP_WIDTH && l.starts_with("    ")),
            "{wrapped}"
        );
        assert_eq!(wrapped.split_whitespace().count(), 40);
        assert_eq!(wrap("a\nb", 2), "  a\n  b\n");
    }
}
