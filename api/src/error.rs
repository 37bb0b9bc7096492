//! Field errors: what is wrong with which field, in Kubernetes' `field.Error` shape.

use std::fmt;

use serde_json::Value;

use crate::path::FieldPath;

/// The kind of problem a [`FieldError`] reports, mirroring Kubernetes' `field.ErrorType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorType {
    /// A value refers to something that does not exist (a volume mount naming no volume).
    NotFound,
    /// A required field is missing or empty.
    Required,
    /// A value must be unique but appears twice (container names, port names).
    Duplicate,
    /// A value is syntactically or semantically wrong.
    Invalid,
    /// A value is not one of an enumerated set.
    NotSupported,
    /// A value is well formed but not allowed here.
    Forbidden,
    /// A value is longer than allowed.
    TooLong,
    /// A list has more items than allowed.
    TooMany,
    /// A value has the wrong JSON type (a string where an integer is expected).
    TypeInvalid,
    /// The field is not part of the schema (strict field validation).
    UnknownField,
    /// The field is part of the Kubernetes schema but Skiff does not implement it yet.
    Unimplemented,
}

impl ErrorType {
    /// The human-readable prefix Kubernetes prints for this type.
    pub fn as_message(self) -> &'static str {
        match self {
            Self::NotFound => "Not found",
            Self::Required => "Required value",
            Self::Duplicate => "Duplicate value",
            Self::Invalid | Self::TypeInvalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
            Self::UnknownField => "Unknown field",
            Self::Unimplemented => "Not implemented",
        }
    }

    /// The `meta/v1 StatusCause.reason` for this type (`FieldValueRequired`, …).
    pub fn as_cause_reason(self) -> &'static str {
        match self {
            Self::NotFound => "FieldValueNotFound",
            Self::Required => "FieldValueRequired",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported | Self::Unimplemented => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::TypeInvalid => "FieldValueTypeInvalid",
            Self::UnknownField => "FieldValueUnknown",
        }
    }
}

/// One problem with one field: the unit every parser and validator in this crate reports.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    /// What kind of problem it is.
    pub error_type: ErrorType,
    /// Which field it is about.
    pub field: FieldPath,
    /// The offending value, when showing it helps (omitted for `Required`, `Forbidden`).
    pub bad_value: Option<Value>,
    /// Further explanation, in Kubernetes' wording where Kubernetes has one.
    pub detail: String,
}

impl FieldError {
    fn build(
        error_type: ErrorType,
        field: &FieldPath,
        bad_value: Option<Value>,
        detail: String,
    ) -> Self {
        Self {
            error_type,
            field: field.clone(),
            bad_value,
            detail,
        }
    }

    /// `Required value`, with an optional detail (empty for none).
    pub fn required(field: &FieldPath, detail: impl Into<String>) -> Self {
        Self::build(ErrorType::Required, field, None, detail.into())
    }

    /// `Invalid value: <value>: <detail>`.
    pub fn invalid(field: &FieldPath, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self::build(ErrorType::Invalid, field, Some(value.into()), detail.into())
    }

    /// `Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(field: &FieldPath, value: impl Into<Value>, supported: &[&str]) -> Self {
        let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        let detail = format!("supported values: {}", quoted.join(", "));
        Self::build(ErrorType::NotSupported, field, Some(value.into()), detail)
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(field: &FieldPath, value: impl Into<Value>) -> Self {
        Self::build(
            ErrorType::Duplicate,
            field,
            Some(value.into()),
            String::new(),
        )
    }

    /// `Not found: <value>`.
    pub fn not_found(field: &FieldPath, value: impl Into<Value>) -> Self {
        Self::build(
            ErrorType::NotFound,
            field,
            Some(value.into()),
            String::new(),
        )
    }

    /// `Forbidden: <detail>`.
    pub fn forbidden(field: &FieldPath, detail: impl Into<String>) -> Self {
        Self::build(ErrorType::Forbidden, field, None, detail.into())
    }

    /// `Too long: may not be more than <max> bytes`.
    pub fn too_long(field: &FieldPath, max: usize) -> Self {
        let detail = format!("may not be more than {max} bytes");
        Self::build(ErrorType::TooLong, field, None, detail)
    }

    /// `Too many: <count>: must have at most <max> items`.
    pub fn too_many(field: &FieldPath, count: usize, max: usize) -> Self {
        let detail = format!("must have at most {max} items");
        Self::build(ErrorType::TooMany, field, Some(count.into()), detail)
    }

    /// A JSON type mismatch, with the decoder's explanation.
    pub fn type_invalid(field: &FieldPath, detail: impl Into<String>) -> Self {
        Self::build(ErrorType::TypeInvalid, field, None, detail.into())
    }

    /// A field that the schema does not define (`unknown field "spec.replicaz"`).
    pub fn unknown_field(field: &FieldPath) -> Self {
        Self::build(ErrorType::UnknownField, field, None, String::new())
    }

    /// A Kubernetes field Skiff does not implement yet, rejected rather than ignored.
    pub fn unimplemented(field: &FieldPath) -> Self {
        let detail = "this Kubernetes field is not supported by Skiff yet".to_owned();
        Self::build(ErrorType::Unimplemented, field, None, detail)
    }

    /// The message without the field path, as used in `meta/v1 StatusCause.message`.
    pub fn message(&self) -> String {
        if self.error_type == ErrorType::UnknownField {
            return format!("unknown field {:?}", self.field.as_str());
        }
        let mut out = self.error_type.as_message().to_owned();
        if let Some(value) = &self.bad_value {
            out.push_str(": ");
            out.push_str(&render_value(value));
        }
        if !self.detail.is_empty() {
            out.push_str(": ");
            out.push_str(&self.detail);
        }
        out
    }
}

/// Renders a bad value like Kubernetes does: strings quoted, numbers and booleans bare.
fn render_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.error_type == ErrorType::UnknownField {
            return f.write_str(&self.message());
        }
        write!(f, "{}: {}", self.field, self.message())
    }
}

impl std::error::Error for FieldError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> FieldPath {
        FieldPath::new(s)
    }

    #[test]
    fn messages_match_kubernetes_wording() {
        let cases = [
            (
                FieldError::required(&path("spec.containers[0].image"), ""),
                "spec.containers[0].image: Required value",
            ),
            (
                FieldError::invalid(
                    &path("spec.replicas"),
                    -1,
                    "must be greater than or equal to 0",
                ),
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            ),
            (
                FieldError::not_supported(
                    &path("spec.restartPolicy"),
                    "Sometimes",
                    &["Always", "OnFailure", "Never"],
                ),
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            ),
            (
                FieldError::duplicate(&path("spec.containers[1].name"), "web"),
                "spec.containers[1].name: Duplicate value: \"web\"",
            ),
            (
                FieldError::unknown_field(&path("spec.replicaz")),
                "unknown field \"spec.replicaz\"",
            ),
            (
                FieldError::too_long(&path("metadata.name"), 63),
                "metadata.name: Too long: may not be more than 63 bytes",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected);
        }
    }
}
