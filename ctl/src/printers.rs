//! Everything `skiff` prints for humans, in kubectl's shapes.

use std::fmt::Write as _;

use skiff_api::Object;
use skiff_api::schema::Explanation;

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

#[cfg(test)]
mod tests {
    use super::*;

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
