//! The one place errors become `meta/v1 Status`: every failure of the API carries an
//! HTTP code, a Kubernetes reason, a message, and (for field problems) the causes with
//! their field paths.

use skiff_api::meta::{Status, StatusCause, StatusDetails};
use skiff_api::{FieldError, ResourceKind};

use crate::store;

/// A failed API request, as Kubernetes reports it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason` (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, …).
    pub reason: &'static str,
    /// Human-readable message, as kubectl prints it after `Error from server (<reason>):`.
    pub message: String,
    /// The object the error is about, and field causes (boxed: errors travel in
    /// `Result`s and should stay small).
    pub details: Option<Box<StatusDetails>>,
}

fn details(
    kind: &ResourceKind,
    name: &str,
    causes: Vec<StatusCause>,
) -> Option<Box<StatusDetails>> {
    Some(Box::new(StatusDetails {
        name: Some(name.to_owned()).filter(|n| !n.is_empty()),
        group: Some(kind.group.to_owned()).filter(|g| !g.is_empty()),
        kind: Some(kind.plural.to_owned()),
        causes: Some(causes).filter(|c| !c.is_empty()),
        ..Default::default()
    }))
}

/// `deployments.apps` or `pods`: how Kubernetes names a resource in messages.
fn qualified_resource(kind: &ResourceKind) -> String {
    if kind.group.is_empty() {
        kind.plural.to_owned()
    } else {
        format!("{}.{}", kind.plural, kind.group)
    }
}

fn causes(errors: &[FieldError]) -> Vec<StatusCause> {
    errors
        .iter()
        .map(|e| StatusCause {
            reason: Some(e.error_type.as_cause_reason().to_owned()),
            message: Some(e.message()),
            field: Some(e.field.as_str().to_owned()),
        })
        .collect()
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 404: `pods "x" not found`.
    pub fn not_found(kind: &ResourceKind, name: &str) -> Self {
        Self {
            details: details(kind, name, Vec::new()),
            ..Self::new(
                404,
                "NotFound",
                format!("{} {name:?} not found", qualified_resource(kind)),
            )
        }
    }

    /// 404 for a namespace that does not exist (admission).
    pub fn namespace_not_found(namespace: &str) -> Self {
        Self::not_found(&skiff_api::kind::NAMESPACE, namespace)
    }

    /// 404 for a path that names no resource.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 409: `pods "x" already exists`.
    pub fn already_exists(kind: &ResourceKind, name: &str) -> Self {
        Self {
            details: details(kind, name, Vec::new()),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} {name:?} already exists", qualified_resource(kind)),
            )
        }
    }

    /// 409: the object changed since the client read it.
    pub fn conflict(kind: &ResourceKind, name: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
            qualified_resource(kind)
        );
        Self {
            details: details(kind, name, Vec::new()),
            ..Self::new(409, "Conflict", message)
        }
    }

    /// 409 with a custom message (precondition failures).
    pub fn conflict_with(kind: &ResourceKind, name: &str, why: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} {name:?}: {why}",
            qualified_resource(kind)
        );
        Self {
            details: details(kind, name, Vec::new()),
            ..Self::new(409, "Conflict", message)
        }
    }

    /// 422: validation failed; every field error becomes a cause.
    pub fn invalid(kind: &ResourceKind, name: &str, errors: &[FieldError]) -> Self {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let message = format!("{} {name:?} is invalid: {}", kind.kind, list.join(", "));
        // Unlike the other reasons, Invalid names the kind (`Pod`), not the resource:
        // kubectl prints `The Pod "x" is invalid`.
        let mut details = details(kind, name, causes(errors));
        if let Some(details) = details.as_mut() {
            details.kind = Some(kind.kind.to_owned());
        }
        Self {
            details,
            ..Self::new(422, "Invalid", message)
        }
    }

    /// 422 on something that is not a stored kind (`Scale.autoscaling`,
    /// `PatchOptions.meta.k8s.io`): `<label> "<name>" is invalid: …`.
    pub fn invalid_other(label: &str, name: &str, errors: &[FieldError]) -> Self {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let message = format!("{label} {name:?} is invalid: {}", list.join(", "));
        Self {
            details: Some(Box::new(StatusDetails {
                name: Some(name.to_owned()).filter(|n| !n.is_empty()),
                causes: Some(causes(errors)).filter(|c| !c.is_empty()),
                ..Default::default()
            })),
            ..Self::new(422, "Invalid", message)
        }
    }

    /// 409 from server-side apply: fields owned by other managers would change
    /// (causes `FieldManagerConflict` with the field paths); 422 for an invalid apply.
    pub fn apply_conflict(
        kind: &ResourceKind,
        name: &str,
        error: &skiff_api::managed::Error,
    ) -> Self {
        match error {
            skiff_api::managed::Error::Conflict(conflicts) => {
                let causes = conflicts
                    .iter()
                    .map(|c| StatusCause {
                        reason: Some("FieldManagerConflict".to_owned()),
                        message: Some(c.message()),
                        field: Some(c.field.clone()),
                    })
                    .collect();
                Self {
                    details: details(kind, name, causes),
                    ..Self::new(409, "Conflict", error.to_string())
                }
            }
            skiff_api::managed::Error::Invalid { .. } => Self {
                details: details(kind, name, Vec::new()),
                ..Self::new(
                    422,
                    "Invalid",
                    format!("{} {name:?} is invalid: {error}", kind.kind),
                )
            },
        }
    }

    /// 401: the caller could not be authenticated.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "Unauthorized", message)
    }

    /// 403: the request is refused (e.g. new objects in a terminating namespace).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 400 from a decoding failure, with field causes when there are any.
    pub fn decode(error: &skiff_api::codec::Error) -> Self {
        let causes = causes(error.field_errors());
        let details = (!causes.is_empty()).then(|| {
            Box::new(StatusDetails {
                causes: Some(causes),
                ..Default::default()
            })
        });
        match error {
            skiff_api::codec::Error::TooLarge { .. } => Self::new(
                413,
                "RequestEntityTooLarge",
                format!("the request is too large: {error}"),
            ),
            _ => Self {
                details,
                ..Self::bad_request(error.to_string())
            },
        }
    }

    /// 405.
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    /// 415.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml ({content_type})"
            ),
        )
    }

    /// 410: the requested resourceVersion was compacted.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    /// 503: the store has no leader right now (retryable).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// 504: the write's outcome is unknown.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message)
    }

    /// The `meta/v1 Status` body.
    pub fn to_status(&self) -> Status {
        Status {
            code: Some(i32::from(self.code)),
            details: self.details.as_deref().cloned(),
            message: Some(self.message.clone()),
            reason: Some(self.reason.to_owned()),
            status: Some("Failure".to_owned()),
            metadata: Default::default(),
        }
    }
}

impl From<store::Error> for ApiError {
    fn from(error: store::Error) -> Self {
        match &error {
            store::Error::Unavailable(_) => Self::unavailable(error.to_string()),
            store::Error::Indeterminate(_) => Self::timeout(error.to_string()),
            store::Error::Compacted { .. } => {
                Self::gone(format!("too old resource version: {error}"))
            }
            store::Error::InvalidRequest(_) => Self::bad_request(error.to_string()),
            // This member cannot reach the leader; another member may serve the request.
            store::Error::PeerAuth { .. } => Self::unavailable(error.to_string()),
            store::Error::Database { .. }
            | store::Error::Raft(_)
            | store::Error::Server { .. }
            | store::Error::Tls { .. } => Self::internal(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use skiff_api::FieldPath;
    use skiff_api::kind::{DEPLOYMENT, POD};

    use super::*;

    #[test]
    fn statuses_match_kubernetes_shapes() {
        let status = serde_json::to_value(ApiError::not_found(&POD, "x").to_status()).unwrap();
        assert_eq!(
            status,
            serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"pods"},"code":404})
        );
        let conflict = ApiError::conflict(&DEPLOYMENT, "web");
        assert_eq!(
            conflict.message,
            "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again"
        );
        let invalid = ApiError::invalid(
            &DEPLOYMENT,
            "web",
            &[FieldError::required(
                &FieldPath::new("spec").child("selector"),
                "",
            )],
        );
        assert_eq!(invalid.code, 422);
        assert_eq!(
            invalid.message,
            "Deployment \"web\" is invalid: spec.selector: Required value"
        );
        let causes = invalid.details.unwrap().causes.unwrap();
        assert_eq!(causes[0].field.as_deref(), Some("spec.selector"));
        assert_eq!(causes[0].reason.as_deref(), Some("FieldValueRequired"));
    }
}
