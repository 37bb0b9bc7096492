//! Field paths in Kubernetes' notation: `spec.template.spec.containers[0].image`,
//! `metadata.labels[app]`.

use std::fmt;

/// A path to a field inside an object, rendered exactly as Kubernetes' `field.Path`.
///
/// Paths are built by appending to a parent (`child`, `index`, `key`), so every error
/// the validators return can name the field it is about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(String);

impl FieldPath {
    /// The empty path: the object itself.
    pub fn root() -> Self {
        Self(String::new())
    }

    /// A path starting at the top-level field `name` (`FieldPath::new("spec")`).
    pub fn new(name: &str) -> Self {
        Self(name.to_owned())
    }

    /// The path of the struct field `name` under this one (`spec` → `spec.replicas`).
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_owned())
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    /// The path of list element `idx` (`containers` → `containers[0]`).
    pub fn index(&self, idx: usize) -> Self {
        Self(format!("{}[{idx}]", self.0))
    }

    /// The path of map entry `key` (`labels` → `labels[app]`).
    pub fn key(&self, key: &str) -> Self {
        Self(format!("{}[{key}]", self.0))
    }

    /// Whether this is the root path.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("<root>")
        } else {
            f.write_str(&self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_kubernetes_field_path() {
        let containers = FieldPath::new("spec")
            .child("template")
            .child("spec")
            .child("containers");
        assert_eq!(
            containers.index(0).child("image").as_str(),
            "spec.template.spec.containers[0].image"
        );
        assert_eq!(
            FieldPath::new("metadata")
                .child("labels")
                .key("app")
                .as_str(),
            "metadata.labels[app]"
        );
        assert_eq!(FieldPath::root().child("kind").as_str(), "kind");
        assert_eq!(FieldPath::root().to_string(), "<root>");
        assert_eq!(
            FieldPath::root().index(2).child("spec").as_str(),
            "[2].spec"
        );
    }
}
