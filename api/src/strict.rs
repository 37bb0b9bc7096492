//! Strict field validation: walks a request's JSON against the schema of its type, the
//! way kube-apiserver's `fieldValidation=Strict` does, because k8s-openapi's decoders
//! ignore unknown fields. The same walk rejects Kubernetes fields Skiff does not
//! implement yet and normalises numeric quantities (`memory: 128974848`) to strings.

use serde_json::Value;

use crate::error::FieldError;
use crate::path::FieldPath;
use crate::schema::Schemas;

/// The OpenAPI name of the quantity type, whose values may be written as numbers.
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// Fields Skiff implements, for the types where it implements only part of Kubernetes'
/// schema. Any other field of these types is rejected as not implemented rather than
/// being silently ignored. Types not listed here are implemented in full.
const IMPLEMENTED_FIELDS: &[(&str, &[&str])] = &[
    (
        "io.k8s.api.core.v1.PodSpec",
        &[
            "containers",
            "initContainers",
            "volumes",
            "restartPolicy",
            "dnsPolicy",
            "nodeName",
            "nodeSelector",
            "tolerations",
            "terminationGracePeriodSeconds",
            "hostNetwork",
        ],
    ),
    (
        "io.k8s.api.core.v1.Container",
        &[
            "name",
            "image",
            "command",
            "args",
            "env",
            "ports",
            "resources",
            "workingDir",
            "imagePullPolicy",
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
            "volumeMounts",
        ],
    ),
    ("io.k8s.api.core.v1.EnvVar", &["name", "value"]),
    (
        "io.k8s.api.core.v1.ContainerPort",
        &["containerPort", "hostPort", "protocol", "name"],
    ),
    (
        "io.k8s.api.core.v1.ResourceRequirements",
        &["requests", "limits"],
    ),
    (
        "io.k8s.api.core.v1.Probe",
        &[
            "exec",
            "httpGet",
            "tcpSocket",
            "initialDelaySeconds",
            "periodSeconds",
            "timeoutSeconds",
            "successThreshold",
            "failureThreshold",
        ],
    ),
    (
        "io.k8s.api.core.v1.Volume",
        &["name", "emptyDir", "hostPath"],
    ),
    (
        "io.k8s.api.core.v1.VolumeMount",
        &["name", "mountPath", "readOnly"],
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        &[
            "type",
            "selector",
            "ports",
            "clusterIP",
            "clusterIPs",
            "sessionAffinity",
            "sessionAffinityConfig",
            "publishNotReadyAddresses",
            "ipFamilies",
            "ipFamilyPolicy",
            "internalTrafficPolicy",
            "externalTrafficPolicy",
            "allocateLoadBalancerNodePorts",
        ],
    ),
    // Coordinated leader election (`strategy`, `preferredHolder`) is behind an alpha
    // feature gate in Kubernetes, which drops the fields while it is off.
    (
        "io.k8s.api.coordination.v1.LeaseSpec",
        &[
            "holderIdentity",
            "leaseDurationSeconds",
            "acquireTime",
            "renewTime",
            "leaseTransitions",
        ],
    ),
];

/// Walks `value` against `schema`, reporting unknown fields (into `unknown`) and
/// not-implemented fields (into `unimplemented`) with their paths.
pub(crate) struct Walk<'a> {
    schemas: &'a Schemas,
    /// Fields the schema does not define.
    pub unknown: Vec<FieldError>,
    /// Fields Kubernetes defines but Skiff does not implement.
    pub unimplemented: Vec<FieldError>,
}

impl<'a> Walk<'a> {
    pub(crate) fn new(schemas: &'a Schemas) -> Self {
        Self {
            schemas,
            unknown: Vec::new(),
            unimplemented: Vec::new(),
        }
    }

    pub(crate) fn check(&mut self, value: &mut Value, schema: &Value, path: &FieldPath) {
        let (definition_name, schema) = self.schemas.resolve(schema);
        if definition_name == Some(QUANTITY) {
            normalize_quantity(value);
            return;
        }
        match value {
            Value::Object(fields) => {
                let properties = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties").filter(|a| a.is_object());
                // An object schema with neither is free-form (FieldsV1, RawExtension).
                if properties.is_none() && additional.is_none() {
                    return;
                }
                let implemented = definition_name
                    .and_then(|name| {
                        IMPLEMENTED_FIELDS
                            .iter()
                            .find(|(type_name, _)| *type_name == name)
                    })
                    .map(|(_, fields)| *fields);
                for (key, field_value) in fields.iter_mut() {
                    if let Some(property) = properties.and_then(|p| p.get(key)) {
                        // `field: null` means unset, for known fields only.
                        if field_value.is_null() {
                            continue;
                        }
                        let field_path = path.child(key);
                        if implemented.is_some_and(|fields| !fields.contains(&key.as_str())) {
                            self.unimplemented
                                .push(FieldError::unimplemented(&field_path));
                            continue;
                        }
                        self.check(field_value, property, &field_path);
                    } else if let Some(additional) = additional {
                        self.check(field_value, additional, &path.key(key));
                    } else {
                        self.unknown
                            .push(FieldError::unknown_field(&path.child(key)));
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (idx, item) in items.iter_mut().enumerate() {
                        self.check(item, item_schema, &path.index(idx));
                    }
                }
            }
            // Scalars are type-checked by the typed decoder, which reports the path.
            _ => {}
        }
    }
}

/// Quantities may be written as YAML/JSON numbers (`memory: 128974848`, `cpu: 0.5`);
/// Kubernetes accepts them, so turn them into the equivalent string.
fn normalize_quantity(value: &mut Value) {
    if let Value::Number(number) = value {
        let text = match (number.as_i64(), number.as_u64(), number.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => f.to_string(),
            _ => number.to_string(),
        };
        *value = Value::String(text);
    }
}
