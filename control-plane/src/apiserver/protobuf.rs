//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), which
//! typed `kubectl create` commands send: the `k8s\0` magic, then a `runtime.Unknown`
//! envelope `{1: TypeMeta {1: apiVersion, 2: kind}, 2: raw object}`.
//!
//! The raw object is decoded into JSON by a small table of message layouts (field
//! number → JSON name and type) taken from Kubernetes' `generated.proto`; fields not in
//! the table are refused rather than dropped, so nothing a client sent is silently
//! lost. The tables hold the fields Skiff implements plus those Go always writes (its
//! non-pointer fields, sent even when zero); a zero that Go's JSON would omit is skipped,
//! and a nonzero value of a field Skiff does not implement reaches strict decoding, which
//! names it.

use serde_json::{Map, Value, json};
use skiff_api::ResourceKind;

use super::error::ApiError;

/// What a field holds. Go writes every non-pointer field, zero or not, and a pointer
/// field whenever it is set, so the two are told apart: a zero in a plain field means
/// "unset" and is skipped the way Go's JSON (`omitempty`) skips it, while a zero in a
/// pointer field (`replicas: 0`) is a value and is kept.
#[derive(Clone, Copy)]
enum FieldType {
    /// `string`; empty is skipped.
    String,
    /// `int32`/`int64`; zero is skipped.
    Int,
    /// `*int32`/`*int64`: kept when zero.
    OptionalInt,
    /// `bool`; false is skipped.
    Bool,
    /// `*bool`: kept when false.
    OptionalBool,
    /// `map<string,string>` (repeated entries `{1: key, 2: value}`).
    StringMap,
    /// `map<string,Quantity>` → `{key: "quantity"}`.
    QuantityMap,
    /// `resource.Quantity` `{1: string}` → its string.
    Quantity,
    /// `intstr.IntOrString` `{1: type (0 int, 1 string), 2: intVal, 3: strVal}` → a JSON
    /// number or string. Kept even when zero: Kubernetes defaults a zero `targetPort`
    /// itself, and a pointer `maxUnavailable: 0` is a value.
    IntOrString,
    /// `repeated string`.
    Strings,
    /// A nested message. Kept even when empty: Go writes a non-pointer struct always and
    /// its JSON has it too (`strategy: {}`, `resources: {}`).
    Message(&'static Layout),
    /// `repeated` nested messages.
    Messages(&'static Layout),
    /// A nested message whose fields JSON inlines into this one (`json:",inline"`, as
    /// `Volume` does with `VolumeSource`).
    Inline(&'static Layout),
    /// `meta/v1 Time` `{1: seconds, 2: nanos}` → RFC 3339; Go's zero time is skipped.
    Time,
}

/// One message layout: `(field number, JSON name, type)`.
type Layout = [(u64, &'static str, FieldType)];

// meta/v1 (k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto).

const OWNER_REFERENCE: &Layout = &[
    (1, "kind", FieldType::String),
    (3, "name", FieldType::String),
    (4, "uid", FieldType::String),
    (5, "apiVersion", FieldType::String),
    (6, "controller", FieldType::OptionalBool),
    (7, "blockOwnerDeletion", FieldType::OptionalBool),
];

const OBJECT_META: &Layout = &[
    (1, "name", FieldType::String),
    (2, "generateName", FieldType::String),
    (3, "namespace", FieldType::String),
    (4, "selfLink", FieldType::String),
    (5, "uid", FieldType::String),
    (6, "resourceVersion", FieldType::String),
    (7, "generation", FieldType::Int),
    (8, "creationTimestamp", FieldType::Time),
    (9, "deletionTimestamp", FieldType::Time),
    (10, "deletionGracePeriodSeconds", FieldType::OptionalInt),
    (11, "labels", FieldType::StringMap),
    (12, "annotations", FieldType::StringMap),
    (13, "ownerReferences", FieldType::Messages(OWNER_REFERENCE)),
    (14, "finalizers", FieldType::Strings),
];

const LABEL_SELECTOR_REQUIREMENT: &Layout = &[
    (1, "key", FieldType::String),
    (2, "operator", FieldType::String),
    (3, "values", FieldType::Strings),
];

const LABEL_SELECTOR: &Layout = &[
    (1, "matchLabels", FieldType::StringMap),
    (
        2,
        "matchExpressions",
        FieldType::Messages(LABEL_SELECTOR_REQUIREMENT),
    ),
];

// core/v1 (k8s.io/api/core/v1/generated.proto).

const NAMESPACE_SPEC: &Layout = &[(1, "finalizers", FieldType::Strings)];

const NAMESPACE_STATUS: &Layout = &[(1, "phase", FieldType::String)];

const NAMESPACE: &Layout = &[
    (1, "metadata", FieldType::Message(OBJECT_META)),
    (2, "spec", FieldType::Message(NAMESPACE_SPEC)),
    (3, "status", FieldType::Message(NAMESPACE_STATUS)),
];

const CONTAINER_PORT: &Layout = &[
    (1, "name", FieldType::String),
    (2, "hostPort", FieldType::Int),
    (3, "containerPort", FieldType::Int),
    (4, "protocol", FieldType::String),
    (5, "hostIP", FieldType::String),
];

const ENV_VAR: &Layout = &[
    (1, "name", FieldType::String),
    (2, "value", FieldType::String),
];

const RESOURCE_REQUIREMENTS: &Layout = &[
    (1, "limits", FieldType::QuantityMap),
    (2, "requests", FieldType::QuantityMap),
];

const VOLUME_MOUNT: &Layout = &[
    (1, "name", FieldType::String),
    (2, "readOnly", FieldType::Bool),
    (3, "mountPath", FieldType::String),
    (4, "subPath", FieldType::String),
    (6, "subPathExpr", FieldType::String),
];

const EXEC_ACTION: &Layout = &[(1, "command", FieldType::Strings)];

const HTTP_HEADER: &Layout = &[
    (1, "name", FieldType::String),
    (2, "value", FieldType::String),
];

const HTTP_GET_ACTION: &Layout = &[
    (1, "path", FieldType::String),
    (2, "port", FieldType::IntOrString),
    (3, "host", FieldType::String),
    (4, "scheme", FieldType::String),
    (5, "httpHeaders", FieldType::Messages(HTTP_HEADER)),
];

const TCP_SOCKET_ACTION: &Layout = &[
    (1, "port", FieldType::IntOrString),
    (2, "host", FieldType::String),
];

const PROBE_HANDLER: &Layout = &[
    (1, "exec", FieldType::Message(EXEC_ACTION)),
    (2, "httpGet", FieldType::Message(HTTP_GET_ACTION)),
    (3, "tcpSocket", FieldType::Message(TCP_SOCKET_ACTION)),
];

const PROBE: &Layout = &[
    (1, "handler", FieldType::Inline(PROBE_HANDLER)),
    (2, "initialDelaySeconds", FieldType::Int),
    (3, "timeoutSeconds", FieldType::Int),
    (4, "periodSeconds", FieldType::Int),
    (5, "successThreshold", FieldType::Int),
    (6, "failureThreshold", FieldType::Int),
];

const CONTAINER: &Layout = &[
    (1, "name", FieldType::String),
    (2, "image", FieldType::String),
    (3, "command", FieldType::Strings),
    (4, "args", FieldType::Strings),
    (5, "workingDir", FieldType::String),
    (6, "ports", FieldType::Messages(CONTAINER_PORT)),
    (7, "env", FieldType::Messages(ENV_VAR)),
    (8, "resources", FieldType::Message(RESOURCE_REQUIREMENTS)),
    (9, "volumeMounts", FieldType::Messages(VOLUME_MOUNT)),
    (10, "livenessProbe", FieldType::Message(PROBE)),
    (11, "readinessProbe", FieldType::Message(PROBE)),
    (13, "terminationMessagePath", FieldType::String),
    (14, "imagePullPolicy", FieldType::String),
    (16, "stdin", FieldType::Bool),
    (17, "stdinOnce", FieldType::Bool),
    (18, "tty", FieldType::Bool),
    (20, "terminationMessagePolicy", FieldType::String),
    (22, "startupProbe", FieldType::Message(PROBE)),
];

const HOST_PATH_VOLUME_SOURCE: &Layout = &[
    (1, "path", FieldType::String),
    (2, "type", FieldType::String),
];

const EMPTY_DIR_VOLUME_SOURCE: &Layout = &[
    (1, "medium", FieldType::String),
    (2, "sizeLimit", FieldType::Quantity),
];

const VOLUME_SOURCE: &Layout = &[
    (1, "hostPath", FieldType::Message(HOST_PATH_VOLUME_SOURCE)),
    (2, "emptyDir", FieldType::Message(EMPTY_DIR_VOLUME_SOURCE)),
];

const VOLUME: &Layout = &[
    (1, "name", FieldType::String),
    (2, "volumeSource", FieldType::Inline(VOLUME_SOURCE)),
];

const TOLERATION: &Layout = &[
    (1, "key", FieldType::String),
    (2, "operator", FieldType::String),
    (3, "value", FieldType::String),
    (4, "effect", FieldType::String),
    (5, "tolerationSeconds", FieldType::OptionalInt),
];

const POD_SPEC: &Layout = &[
    (1, "volumes", FieldType::Messages(VOLUME)),
    (2, "containers", FieldType::Messages(CONTAINER)),
    (3, "restartPolicy", FieldType::String),
    (4, "terminationGracePeriodSeconds", FieldType::OptionalInt),
    (6, "dnsPolicy", FieldType::String),
    (7, "nodeSelector", FieldType::StringMap),
    (8, "serviceAccountName", FieldType::String),
    (9, "serviceAccount", FieldType::String),
    (10, "nodeName", FieldType::String),
    (11, "hostNetwork", FieldType::Bool),
    (12, "hostPID", FieldType::Bool),
    (13, "hostIPC", FieldType::Bool),
    (16, "hostname", FieldType::String),
    (17, "subdomain", FieldType::String),
    (19, "schedulerName", FieldType::String),
    (20, "initContainers", FieldType::Messages(CONTAINER)),
    (22, "tolerations", FieldType::Messages(TOLERATION)),
    (24, "priorityClassName", FieldType::String),
];

const POD_STATUS: &Layout = &[
    (1, "phase", FieldType::String),
    (3, "message", FieldType::String),
    (4, "reason", FieldType::String),
    (5, "hostIP", FieldType::String),
    (6, "podIP", FieldType::String),
    (7, "startTime", FieldType::Time),
    (9, "qosClass", FieldType::String),
    (11, "nominatedNodeName", FieldType::String),
    (14, "resize", FieldType::String),
    (17, "observedGeneration", FieldType::Int),
];

const POD: &Layout = &[
    (1, "metadata", FieldType::Message(OBJECT_META)),
    (2, "spec", FieldType::Message(POD_SPEC)),
    (3, "status", FieldType::Message(POD_STATUS)),
];

const POD_TEMPLATE_SPEC: &Layout = &[
    (1, "metadata", FieldType::Message(OBJECT_META)),
    (2, "spec", FieldType::Message(POD_SPEC)),
];

const SERVICE_PORT: &Layout = &[
    (1, "name", FieldType::String),
    (2, "protocol", FieldType::String),
    (3, "port", FieldType::Int),
    (4, "targetPort", FieldType::IntOrString),
    (5, "nodePort", FieldType::Int),
    (6, "appProtocol", FieldType::String),
];

const CLIENT_IP_CONFIG: &Layout = &[(1, "timeoutSeconds", FieldType::OptionalInt)];

const SESSION_AFFINITY_CONFIG: &Layout = &[(1, "clientIP", FieldType::Message(CLIENT_IP_CONFIG))];

const SERVICE_SPEC: &Layout = &[
    (1, "ports", FieldType::Messages(SERVICE_PORT)),
    (2, "selector", FieldType::StringMap),
    (3, "clusterIP", FieldType::String),
    (4, "type", FieldType::String),
    (7, "sessionAffinity", FieldType::String),
    (8, "loadBalancerIP", FieldType::String),
    (10, "externalName", FieldType::String),
    (11, "externalTrafficPolicy", FieldType::String),
    (12, "healthCheckNodePort", FieldType::Int),
    (13, "publishNotReadyAddresses", FieldType::Bool),
    (
        14,
        "sessionAffinityConfig",
        FieldType::Message(SESSION_AFFINITY_CONFIG),
    ),
    (17, "ipFamilyPolicy", FieldType::String),
    (18, "clusterIPs", FieldType::Strings),
    (19, "ipFamilies", FieldType::Strings),
    (20, "allocateLoadBalancerNodePorts", FieldType::OptionalBool),
    (22, "internalTrafficPolicy", FieldType::String),
];

/// `ingress` is left out: only a load balancer writes it.
const LOAD_BALANCER_STATUS: &Layout = &[];

const SERVICE_STATUS: &Layout = &[(1, "loadBalancer", FieldType::Message(LOAD_BALANCER_STATUS))];

const SERVICE: &Layout = &[
    (1, "metadata", FieldType::Message(OBJECT_META)),
    (2, "spec", FieldType::Message(SERVICE_SPEC)),
    (3, "status", FieldType::Message(SERVICE_STATUS)),
];

// apps/v1 (k8s.io/api/apps/v1/generated.proto).

const ROLLING_UPDATE_DEPLOYMENT: &Layout = &[
    (1, "maxUnavailable", FieldType::IntOrString),
    (2, "maxSurge", FieldType::IntOrString),
];

const DEPLOYMENT_STRATEGY: &Layout = &[
    (1, "type", FieldType::String),
    (
        2,
        "rollingUpdate",
        FieldType::Message(ROLLING_UPDATE_DEPLOYMENT),
    ),
];

const DEPLOYMENT_SPEC: &Layout = &[
    (1, "replicas", FieldType::OptionalInt),
    (2, "selector", FieldType::Message(LABEL_SELECTOR)),
    (3, "template", FieldType::Message(POD_TEMPLATE_SPEC)),
    (4, "strategy", FieldType::Message(DEPLOYMENT_STRATEGY)),
    (5, "minReadySeconds", FieldType::Int),
    (6, "revisionHistoryLimit", FieldType::OptionalInt),
    (7, "paused", FieldType::Bool),
    (9, "progressDeadlineSeconds", FieldType::OptionalInt),
];

const DEPLOYMENT_CONDITION: &Layout = &[
    (1, "type", FieldType::String),
    (2, "status", FieldType::String),
    (4, "reason", FieldType::String),
    (5, "message", FieldType::String),
    (6, "lastUpdateTime", FieldType::Time),
    (7, "lastTransitionTime", FieldType::Time),
];

const DEPLOYMENT_STATUS: &Layout = &[
    (1, "observedGeneration", FieldType::Int),
    (2, "replicas", FieldType::Int),
    (3, "updatedReplicas", FieldType::Int),
    (4, "availableReplicas", FieldType::Int),
    (5, "unavailableReplicas", FieldType::Int),
    (6, "conditions", FieldType::Messages(DEPLOYMENT_CONDITION)),
    (7, "readyReplicas", FieldType::Int),
    (8, "collisionCount", FieldType::OptionalInt),
    (9, "terminatingReplicas", FieldType::OptionalInt),
];

const DEPLOYMENT: &Layout = &[
    (1, "metadata", FieldType::Message(OBJECT_META)),
    (2, "spec", FieldType::Message(DEPLOYMENT_SPEC)),
    (3, "status", FieldType::Message(DEPLOYMENT_STATUS)),
];

// policy/v1 (k8s.io/api/policy/v1/generated.proto) and the meta/v1 messages it uses.

const PRECONDITIONS: &Layout = &[
    (1, "uid", FieldType::String),
    (2, "resourceVersion", FieldType::String),
];

const DELETE_OPTIONS: &Layout = &[
    (1, "gracePeriodSeconds", FieldType::OptionalInt),
    (2, "preconditions", FieldType::Message(PRECONDITIONS)),
    (3, "orphanDependents", FieldType::OptionalBool),
    (4, "propagationPolicy", FieldType::String),
    (5, "dryRun", FieldType::Strings),
];

const EVICTION: &Layout = &[
    (1, "metadata", FieldType::Message(OBJECT_META)),
    (2, "deleteOptions", FieldType::Message(DELETE_OPTIONS)),
];

/// The layout of a kind's top-level message, for the kinds decoded from protobuf.
fn layout_of(kind: &ResourceKind) -> Option<&'static Layout> {
    match (kind.api_version, kind.kind) {
        ("v1", "Namespace") => Some(NAMESPACE),
        ("v1", "Pod") => Some(POD),
        ("v1", "Service") => Some(SERVICE),
        ("apps/v1", "Deployment") => Some(DEPLOYMENT),
        _ => None,
    }
}

/// Decodes a protobuf body of `kind` into its JSON form (with apiVersion and kind).
pub fn decode(body: &[u8], kind: &'static ResourceKind) -> Result<Value, ApiError> {
    let layout = layout_of(kind).ok_or_else(|| {
        ApiError::unsupported_media_type(&format!(
            "application/vnd.kubernetes.protobuf for {}; send JSON or YAML",
            kind.plural
        ))
    })?;
    decode_with(body, layout)
}

/// Decodes a protobuf `policy/v1 Eviction` (what kubectl drain's typed client POSTs to
/// `pods/{name}/eviction`) into its JSON form.
pub fn decode_eviction(body: &[u8]) -> Result<Value, ApiError> {
    decode_with(body, EVICTION)
}

/// Decodes the `runtime.Unknown` envelope and its raw object by `layout`.
fn decode_with(body: &[u8], layout: &'static Layout) -> Result<Value, ApiError> {
    let envelope = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| bad("the body does not start with the k8s protobuf magic"))?;
    let mut type_meta = None;
    let mut raw = None;
    for field in Reader::new(envelope) {
        let (number, value) = field?;
        match (number, value) {
            (1, Wire::Bytes(bytes)) => type_meta = Some(bytes),
            (2, Wire::Bytes(bytes)) => raw = Some(bytes),
            // contentEncoding, contentType: empty for plain protobuf.
            (3 | 4, Wire::Bytes([])) => {}
            (number, _) => return Err(bad(&format!("unexpected envelope field {number}"))),
        }
    }
    let mut api_version = String::new();
    let mut body_kind = String::new();
    for field in Reader::new(type_meta.unwrap_or_default()) {
        match field? {
            (1, Wire::Bytes(bytes)) => api_version = text(bytes)?,
            (2, Wire::Bytes(bytes)) => body_kind = text(bytes)?,
            (number, _) => return Err(bad(&format!("unexpected TypeMeta field {number}"))),
        }
    }
    let mut object = message(raw.unwrap_or_default(), layout)?;
    object.insert("apiVersion".to_owned(), Value::String(api_version));
    object.insert("kind".to_owned(), Value::String(body_kind));
    Ok(Value::Object(object))
}

fn bad(message: &str) -> ApiError {
    ApiError::bad_request(format!("invalid protobuf body: {message}"))
}

fn text(bytes: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| bad("a string is not UTF-8"))
}

/// Decodes one message by its layout.
fn message(bytes: &[u8], layout: &'static Layout) -> Result<Map<String, Value>, ApiError> {
    let mut object = Map::new();
    fill(&mut object, bytes, layout)?;
    Ok(object)
}

/// Decodes the fields of one message into `object`.
fn fill(
    object: &mut Map<String, Value>,
    bytes: &[u8],
    layout: &'static Layout,
) -> Result<(), ApiError> {
    for field in Reader::new(bytes) {
        let (number, wire) = field?;
        let Some((_, name, field_type)) = layout.iter().find(|(n, _, _)| *n == number) else {
            return Err(bad(&format!(
                "field {number} is not supported in protobuf; send JSON or YAML"
            )));
        };
        let name = (*name).to_owned();
        match (field_type, wire) {
            // Go writes zero values that its JSON form omits (`omitempty`): skip them.
            (FieldType::String, Wire::Bytes([]))
            | (FieldType::Int | FieldType::Bool, Wire::Varint(0)) => {}
            (FieldType::String, Wire::Bytes(bytes)) => {
                object.insert(name, Value::String(text(bytes)?));
            }
            (FieldType::Int | FieldType::OptionalInt, Wire::Varint(value)) => {
                object.insert(name, json!(integer(value)));
            }
            (FieldType::Bool | FieldType::OptionalBool, Wire::Varint(value)) => {
                object.insert(name, Value::Bool(value != 0));
            }
            (FieldType::StringMap, Wire::Bytes(bytes)) => {
                let (key, value) = map_entry(bytes, text)?;
                insert_entry(object, name, key, Value::String(value));
            }
            (FieldType::QuantityMap, Wire::Bytes(bytes)) => {
                let (key, value) = map_entry(bytes, quantity)?;
                insert_entry(object, name, key, Value::String(value));
            }
            (FieldType::Quantity, Wire::Bytes(bytes)) => {
                object.insert(name, Value::String(quantity(bytes)?));
            }
            (FieldType::IntOrString, Wire::Bytes(bytes)) => {
                object.insert(name, int_or_string(bytes)?);
            }
            (FieldType::Strings, Wire::Bytes(bytes)) => {
                push(object, name, Value::String(text(bytes)?));
            }
            (FieldType::Message(inner), Wire::Bytes(bytes)) => {
                object.insert(name, Value::Object(message(bytes, inner)?));
            }
            (FieldType::Messages(inner), Wire::Bytes(bytes)) => {
                push(object, name, Value::Object(message(bytes, inner)?));
            }
            (FieldType::Inline(inner), Wire::Bytes(bytes)) => fill(object, bytes, inner)?,
            (FieldType::Time, Wire::Bytes(bytes)) => {
                if let Some(time) = time(bytes)? {
                    object.insert(name, Value::String(time));
                }
            }
            _ => return Err(bad(&format!("field {number} has the wrong wire type"))),
        }
    }
    Ok(())
}

/// A varint as the signed integer it encodes: int32 and int64 are both sent in 64-bit
/// two's complement.
fn integer(value: u64) -> i64 {
    #[expect(
        clippy::cast_possible_wrap,
        reason = "protobuf int32/int64 are two's complement"
    )]
    let signed = value as i64;
    signed
}

/// Appends to the JSON list `name`.
fn push(object: &mut Map<String, Value>, name: String, item: Value) {
    if let Value::Array(items) = object.entry(name).or_insert_with(|| json!([])) {
        items.push(item);
    }
}

/// Adds `key: value` to the JSON map `name`.
fn insert_entry(object: &mut Map<String, Value>, name: String, key: String, value: Value) {
    if let Value::Object(map) = object.entry(name).or_insert_with(|| json!({})) {
        map.insert(key, value);
    }
}

/// One entry `{1: key, 2: value}` of a protobuf map with string keys.
fn map_entry(
    bytes: &[u8],
    value_of: fn(&[u8]) -> Result<String, ApiError>,
) -> Result<(String, String), ApiError> {
    let (mut key, mut value) = (String::new(), String::new());
    for entry in Reader::new(bytes) {
        match entry? {
            (1, Wire::Bytes(b)) => key = text(b)?,
            (2, Wire::Bytes(b)) => value = value_of(b)?,
            _ => return Err(bad("malformed map entry")),
        }
    }
    Ok((key, value))
}

/// `resource.Quantity` `{1: string}`.
fn quantity(bytes: &[u8]) -> Result<String, ApiError> {
    let mut value = String::new();
    for field in Reader::new(bytes) {
        match field? {
            (1, Wire::Bytes(b)) => value = text(b)?,
            _ => return Err(bad("malformed quantity")),
        }
    }
    Ok(value)
}

/// `intstr.IntOrString` `{1: type, 2: intVal, 3: strVal}` → a JSON number or string.
fn int_or_string(bytes: &[u8]) -> Result<Value, ApiError> {
    let (mut is_string, mut int_value, mut string_value) = (false, 0, String::new());
    for field in Reader::new(bytes) {
        match field? {
            (1, Wire::Varint(value)) => is_string = value == 1,
            (2, Wire::Varint(value)) => int_value = integer(value),
            (3, Wire::Bytes(b)) => string_value = text(b)?,
            _ => return Err(bad("malformed IntOrString")),
        }
    }
    Ok(if is_string {
        Value::String(string_value)
    } else {
        json!(int_value)
    })
}

/// `meta/v1 Time` `{1: seconds, 2: nanos}` as RFC 3339 (whole seconds, as Kubernetes
/// writes it), or `None` for Go's zero time, which is what an unset timestamp looks like.
fn time(bytes: &[u8]) -> Result<Option<String>, ApiError> {
    let mut seconds = 0_i64;
    for part in Reader::new(bytes) {
        if let (1, Wire::Varint(value)) = part? {
            seconds = integer(value);
        }
    }
    if seconds == 0 {
        return Ok(None);
    }
    let time = skiff_api::meta::jiff::Timestamp::from_second(seconds)
        .map_err(|_| bad("time out of range"))?;
    Ok(Some(time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

/// One decoded wire value.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Iterates over `(field number, value)` pairs of a protobuf message.
struct Reader<'a> {
    bytes: &'a [u8],
    failed: bool,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            failed: false,
        }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0_u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.bytes.split_first()?;
            self.bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn field(&mut self) -> Option<(u64, Wire<'a>)> {
        let key = self.varint()?;
        let number = key >> 3;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            2 => {
                let length = usize::try_from(self.varint()?).ok()?;
                if length > self.bytes.len() {
                    return None;
                }
                let (value, rest) = self.bytes.split_at(length);
                self.bytes = rest;
                Wire::Bytes(value)
            }
            1 => {
                self.bytes = self.bytes.get(8..)?;
                Wire::Fixed
            }
            5 => {
                self.bytes = self.bytes.get(4..)?;
                Wire::Fixed
            }
            _ => return None,
        };
        Some((number, wire))
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<(u64, Wire<'a>), ApiError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.bytes.is_empty() || self.failed {
            return None;
        }
        match self.field() {
            Some(field) => Some(Ok(field)),
            None => {
                self.failed = true;
                Some(Err(bad("truncated or malformed message")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use skiff_api::kind;

    use super::*;

    /// Encodes a varint.
    fn varint(mut value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while value >= 0x80 {
            out.push(u8::try_from(value & 0x7f).unwrap() | 0x80);
            value >>= 7;
        }
        out.push(u8::try_from(value).unwrap());
        out
    }

    /// Encodes a length-delimited field.
    fn field(number: u64, bytes: &[u8]) -> Vec<u8> {
        let length = u64::try_from(bytes.len()).unwrap();
        [varint((number << 3) | 2), varint(length), bytes.to_vec()].concat()
    }

    /// Encodes a varint field (int32 sign-extended, as Go sends it).
    fn number(number: u64, value: i64) -> Vec<u8> {
        #[expect(clippy::cast_sign_loss, reason = "two's complement on the wire")]
        let value = value as u64;
        [varint(number << 3), varint(value)].concat()
    }

    /// A body of `api_version`/`kind` around the raw object.
    fn body(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [field(1, api_version.as_bytes()), field(2, kind.as_bytes())].concat();
        [b"k8s\0".to_vec(), field(1, &type_meta), field(2, raw)].concat()
    }

    fn hex(text: &str) -> Vec<u8> {
        let text = text.trim();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn decodes_what_kubectl_create_namespace_sends() {
        let label = [field(1, b"team"), field(2, b"a")].concat();
        let metadata = [field(1, b"shop"), field(11, &label)].concat();
        let raw = [field(1, &metadata), field(2, b""), field(3, b"")].concat();
        let value = decode(&body("v1", "Namespace", &raw), &kind::NAMESPACE).unwrap();
        assert_eq!(
            value,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "a"}}, "spec": {}, "status": {}})
        );
    }

    #[test]
    fn decodes_the_eviction_kubectl_drain_sends() {
        let preconditions = field(1, b"u1");
        let options = [number(1, 0), field(2, &preconditions), field(5, b"All")].concat();
        // Go writes the zero creationTimestamp as an empty Time.
        let metadata = [field(1, b"web"), field(3, b"shop"), field(8, b"")].concat();
        let raw = [field(1, &metadata), field(2, &options)].concat();
        let value = decode_eviction(&body("policy/v1", "Eviction", &raw)).unwrap();
        assert_eq!(
            value,
            json!({"apiVersion": "policy/v1", "kind": "Eviction",
                   "metadata": {"name": "web", "namespace": "shop"},
                   "deleteOptions": {"gracePeriodSeconds": 0, "preconditions": {"uid": "u1"}, "dryRun": ["All"]}})
        );
        let plain = [field(1, &field(1, b"web")), field(2, b"")].concat();
        assert_eq!(
            decode_eviction(&body("policy/v1", "Eviction", &plain)).unwrap()["deleteOptions"],
            json!({}),
            "no options: the pod's own grace period"
        );
    }

    #[test]
    fn decodes_the_bytes_kubectl_1_32_sent() {
        // `kubectl create namespace shop`, captured.
        let body = hex(
            "6b3873000a0f0a02763112094e616d657370616365121c0a140a0473686f7012001a0022002a0032003800420012001a020a001a002200",
        );
        let value = decode(&body, &kind::NAMESPACE).unwrap();
        assert_eq!(
            value,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}, "spec": {}, "status": {}})
        );
    }

    /// Each `testdata/<name>.hex` is the body kubectl 1.32 POSTed for a command, and
    /// `<name>.json` what the same command prints with `--dry-run=client -o json` (Go's
    /// JSON of the same object, `creationTimestamp: null` removed): decoding the one must
    /// give the other. `testdata/README.md` lists the commands.
    #[test]
    fn decodes_the_bodies_kubectl_create_sends_as_go_writes_their_json() {
        let check = |hex_text: &str, json_text: &str, kind: &'static ResourceKind| {
            let expected: Value = serde_json::from_str(json_text).unwrap();
            assert_eq!(decode(&hex(hex_text), kind).unwrap(), expected);
        };
        macro_rules! fixture {
            ($name:literal, $kind:expr) => {
                check(
                    include_str!(concat!("testdata/", $name, ".hex")),
                    include_str!(concat!("testdata/", $name, ".json")),
                    $kind,
                )
            };
        }
        fixture!("create-deployment-web", &kind::DEPLOYMENT);
        fixture!("create-deployment-zero-replicas", &kind::DEPLOYMENT);
        fixture!("create-deployment-two-images", &kind::DEPLOYMENT);
        fixture!("create-service-clusterip", &kind::SERVICE);
        fixture!("create-service-nodeport", &kind::SERVICE);
        fixture!("create-service-headless", &kind::SERVICE);
    }

    #[test]
    fn decodes_a_pod_with_every_container_field_skiff_implements() {
        let quantity = |value: &[u8]| field(2, &field(1, value));
        let limits = [field(1, b"memory"), quantity(b"128Mi")].concat();
        let requests = [field(1, b"cpu"), quantity(b"100m")].concat();
        let resources = [field(1, &limits), field(2, &requests)].concat();
        let port_name = [number(1, 1), field(3, b"http")].concat();
        let http_get = [field(1, b"/healthz"), field(2, &port_name)].concat();
        let liveness = [field(1, &field(2, &http_get)), number(4, 10)].concat();
        let tcp_port = [number(1, 0), number(2, 80), field(3, b"")].concat();
        let readiness = [field(1, &field(3, &field(1, &tcp_port))), number(2, 0)].concat();
        let startup = field(1, &field(1, &[field(1, b"true"), field(1, b"ok")].concat()));
        let container_port = [field(1, b"http"), number(2, 0), number(3, 80)].concat();
        let mount = [
            field(1, b"data"),
            number(2, 1),
            field(3, b"/data"),
            field(4, b""),
        ]
        .concat();
        let container = [
            field(1, b"web"),
            field(2, b"nginx"),
            field(3, b"nginx"),
            field(4, b"-g"),
            field(5, b"/srv"),
            field(6, &container_port),
            field(7, &[field(1, b"X"), field(2, b"1")].concat()),
            field(8, &resources),
            field(9, &mount),
            field(10, &liveness),
            field(11, &readiness),
            field(13, b""),
            field(14, b"IfNotPresent"),
            number(16, 0),
            number(17, 0),
            number(18, 0),
            field(20, b""),
            field(22, &startup),
        ]
        .concat();
        let empty_dir = field(2, &[field(1, b""), field(2, &field(1, b"1Gi"))].concat());
        let volume = [field(1, b"data"), field(2, &empty_dir)].concat();
        let host_path = field(1, &[field(1, b"/var/log"), field(2, b"")].concat());
        let logs = [field(1, b"logs"), field(2, &host_path)].concat();
        let toleration = [field(1, b"k"), field(2, b"Exists"), number(5, 0)].concat();
        let spec = [
            field(1, &volume),
            field(1, &logs),
            field(2, &container),
            field(20, &[field(1, b"init"), field(2, b"busybox")].concat()),
            field(3, b"Never"),
            number(4, 0),
            field(6, b"ClusterFirst"),
            field(7, &[field(1, b"disk"), field(2, b"ssd")].concat()),
            field(8, b""),
            field(10, b"n1"),
            number(11, 1),
            number(12, 0),
            field(22, &toleration),
            field(24, b""),
        ]
        .concat();
        let raw = [
            field(1, &field(1, b"web")),
            field(2, &spec),
            field(3, &field(1, b"")),
        ]
        .concat();
        let value = decode(&body("v1", "Pod", &raw), &kind::POD).unwrap();
        let expected = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web"},
            "spec": {
                "volumes": [
                    {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
                    {"name": "logs", "hostPath": {"path": "/var/log"}},
                ],
                "containers": [{
                    "name": "web",
                    "image": "nginx",
                    "command": ["nginx"],
                    "args": ["-g"],
                    "workingDir": "/srv",
                    "ports": [{"name": "http", "containerPort": 80}],
                    "env": [{"name": "X", "value": "1"}],
                    "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "100m"}},
                    "volumeMounts": [{"name": "data", "readOnly": true, "mountPath": "/data"}],
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
                    "readinessProbe": {"tcpSocket": {"port": 80}},
                    "startupProbe": {"exec": {"command": ["true", "ok"]}},
                    "imagePullPolicy": "IfNotPresent",
                }],
                "initContainers": [{"name": "init", "image": "busybox"}],
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 0,
                "dnsPolicy": "ClusterFirst",
                "nodeSelector": {"disk": "ssd"},
                "nodeName": "n1",
                "hostNetwork": true,
                "tolerations": [{"key": "k", "operator": "Exists", "tolerationSeconds": 0}],
            },
            "status": {},
        });
        assert_eq!(value, expected);
    }

    #[test]
    fn decodes_a_deployment_strategy_and_selector_expressions() {
        let max_unavailable = [number(1, 0), number(2, 0), field(3, b"")].concat();
        let max_surge = [number(1, 1), number(2, 0), field(3, b"25%")].concat();
        let rolling_update = [field(1, &max_unavailable), field(2, &max_surge)].concat();
        let strategy = [field(1, b"RollingUpdate"), field(2, &rolling_update)].concat();
        let expression = [field(1, b"tier"), field(2, b"In"), field(3, b"web")].concat();
        let selector = field(2, &expression);
        let spec = [
            number(1, 3),
            field(2, &selector),
            field(4, &strategy),
            number(5, 5),
            number(6, 0),
            number(7, 0),
            number(9, 600),
        ]
        .concat();
        let status = [number(1, 0), number(2, 0), number(7, 0)].concat();
        let raw = [
            field(1, &field(1, b"web")),
            field(2, &spec),
            field(3, &status),
        ]
        .concat();
        let value = decode(&body("apps/v1", "Deployment", &raw), &kind::DEPLOYMENT).unwrap();
        let expected = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
                "minReadySeconds": 5,
                "revisionHistoryLimit": 0,
                "progressDeadlineSeconds": 600,
            },
            "status": {},
        });
        assert_eq!(value, expected);
    }

    #[test]
    fn keeps_the_service_fields_go_sends_as_pointers() {
        let affinity = field(1, &number(1, 10800));
        let spec = [
            field(4, b"LoadBalancer"),
            field(7, b"ClientIP"),
            number(12, 0),
            number(13, 0),
            field(14, &affinity),
            field(17, b"SingleStack"),
            field(18, b"10.0.0.9"),
            field(19, b"IPv4"),
            number(20, 0),
        ]
        .concat();
        let raw = [field(1, &field(1, b"lb")), field(2, &spec)].concat();
        let value = decode(&body("v1", "Service", &raw), &kind::SERVICE).unwrap();
        let expected = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "lb"},
            "spec": {
                "type": "LoadBalancer",
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
                "ipFamilyPolicy": "SingleStack",
                "clusterIPs": ["10.0.0.9"],
                "ipFamilies": ["IPv4"],
                "allocateLoadBalancerNodePorts": false,
            },
        });
        assert_eq!(value, expected);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert_eq!(decode(b"{}", &kind::NAMESPACE).unwrap_err().code, 400);
        let truncated = [b"k8s\0".to_vec(), vec![0x0a, 0x20, 1]].concat();
        assert_eq!(decode(&truncated, &kind::NAMESPACE).unwrap_err().code, 400);
        let unknown = [b"k8s\0".to_vec(), field(2, &field(9, b"x"))].concat();
        assert_eq!(decode(&unknown, &kind::NAMESPACE).unwrap_err().code, 400);
        // A container's `lifecycle` (12) is not in the table: refused, not dropped.
        let lifecycle = field(2, &field(2, &field(12, b"")));
        let error = decode(&body("v1", "Pod", &lifecycle), &kind::POD).unwrap_err();
        assert_eq!(error.code, 400);
        assert!(
            error
                .message
                .contains("field 12 is not supported in protobuf"),
            "{}",
            error.message
        );
        let wrong_wire = field(2, &field(1, &number(1, 2)));
        let error = decode(&body("v1", "Service", &wrong_wire), &kind::SERVICE).unwrap_err();
        assert_eq!(error.code, 400);
        let node = [b"k8s\0".to_vec(), field(2, b"")].concat();
        assert_eq!(decode(&node, &kind::NODE).unwrap_err().code, 415);
    }
}
