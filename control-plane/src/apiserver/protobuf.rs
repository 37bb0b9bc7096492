//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), which
//! typed `kubectl create` commands send: the `k8s\0` magic, then a `runtime.Unknown`
//! envelope `{1: TypeMeta {1: apiVersion, 2: kind}, 2: raw object}`.
//!
//! The raw object is decoded into JSON by a small table of message layouts (field
//! number → JSON name and type) taken from Kubernetes' `generated.proto`; fields not in
//! the table are refused rather than dropped, so nothing a client sent is silently
//! lost.

use serde_json::{Map, Value, json};
use skiff_api::ResourceKind;

use super::error::ApiError;

/// What a field holds.
#[derive(Clone, Copy)]
enum FieldType {
    String,
    Int,
    Bool,
    /// `map<string,string>` (repeated entries `{1: key, 2: value}`).
    StringMap,
    /// `repeated string`.
    Strings,
    /// A nested message.
    Message(&'static Layout),
    /// `repeated` nested messages.
    Messages(&'static Layout),
    /// `meta/v1 Time` `{1: seconds, 2: nanos}` → RFC 3339.
    Time,
}

/// One message layout: `(field number, JSON name, type)`.
type Layout = [(u64, &'static str, FieldType)];

const OWNER_REFERENCE: &Layout = &[
    (1, "kind", FieldType::String),
    (3, "name", FieldType::String),
    (4, "uid", FieldType::String),
    (5, "apiVersion", FieldType::String),
    (6, "controller", FieldType::Bool),
    (7, "blockOwnerDeletion", FieldType::Bool),
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
    (11, "labels", FieldType::StringMap),
    (12, "annotations", FieldType::StringMap),
    (13, "ownerReferences", FieldType::Messages(OWNER_REFERENCE)),
    (14, "finalizers", FieldType::Strings),
];

const NAMESPACE_SPEC: &Layout = &[(1, "finalizers", FieldType::Strings)];

const NAMESPACE_STATUS: &Layout = &[(1, "phase", FieldType::String)];

const NAMESPACE: &Layout = &[
    (1, "metadata", FieldType::Message(OBJECT_META)),
    (2, "spec", FieldType::Message(NAMESPACE_SPEC)),
    (3, "status", FieldType::Message(NAMESPACE_STATUS)),
];

/// The layout of a kind's top-level message, for the kinds decoded from protobuf.
fn layout_of(kind: &ResourceKind) -> Option<&'static Layout> {
    match kind.kind {
        "Namespace" => Some(NAMESPACE),
        _ => None,
    }
}

/// Decodes a protobuf body of `kind` into its JSON form (with apiVersion and kind).
pub fn decode(body: &[u8], kind: &'static ResourceKind) -> Result<Value, ApiError> {
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
    let layout = layout_of(kind).ok_or_else(|| {
        ApiError::unsupported_media_type(&format!(
            "application/vnd.kubernetes.protobuf for {}; send JSON or YAML",
            kind.plural
        ))
    })?;
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
            (FieldType::String, Wire::Bytes([])) | (FieldType::Int, Wire::Varint(0)) => {}
            (FieldType::String, Wire::Bytes(bytes)) => {
                object.insert(name, Value::String(text(bytes)?));
            }
            (FieldType::Int, Wire::Varint(value)) => {
                // int64 in two's complement.
                #[expect(
                    clippy::cast_possible_wrap,
                    reason = "protobuf int64 is two's complement"
                )]
                object.insert(name, json!(value as i64));
            }
            (FieldType::Bool, Wire::Varint(value)) => {
                object.insert(name, Value::Bool(value != 0));
            }
            (FieldType::StringMap, Wire::Bytes(bytes)) => {
                let (mut key, mut value) = (String::new(), String::new());
                for entry in Reader::new(bytes) {
                    match entry? {
                        (1, Wire::Bytes(b)) => key = text(b)?,
                        (2, Wire::Bytes(b)) => value = text(b)?,
                        _ => return Err(bad("malformed map entry")),
                    }
                }
                let map = object.entry(name).or_insert_with(|| json!({}));
                map[key] = Value::String(value);
            }
            (FieldType::Strings, Wire::Bytes(bytes)) => {
                let list = object.entry(name).or_insert_with(|| json!([]));
                if let Value::Array(items) = list {
                    items.push(Value::String(text(bytes)?));
                }
            }
            (FieldType::Message(inner), Wire::Bytes(bytes)) => {
                object.insert(name, Value::Object(message(bytes, inner)?));
            }
            (FieldType::Messages(inner), Wire::Bytes(bytes)) => {
                let item = Value::Object(message(bytes, inner)?);
                let list = object.entry(name).or_insert_with(|| json!([]));
                if let Value::Array(items) = list {
                    items.push(item);
                }
            }
            (FieldType::Time, Wire::Bytes(bytes)) => {
                let mut seconds = 0_i64;
                for part in Reader::new(bytes) {
                    if let (1, Wire::Varint(value)) = part? {
                        seconds = i64::try_from(value).map_err(|_| bad("time out of range"))?;
                    }
                }
                // Go's zero time is what an unset timestamp looks like.
                if seconds == 0 {
                    continue;
                }
                let time = skiff_api::meta::jiff::Timestamp::from_second(seconds)
                    .map_err(|_| bad("time out of range"))?;
                object.insert(
                    name,
                    Value::String(time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                );
            }
            _ => return Err(bad(&format!("field {number} has the wrong wire type"))),
        }
    }
    Ok(object)
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

    /// Encodes a length-delimited field.
    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2, u8::try_from(bytes.len()).unwrap()];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn decodes_what_kubectl_create_namespace_sends() {
        let type_meta = [field(1, b"v1"), field(2, b"Namespace")].concat();
        let label = [field(1, b"team"), field(2, b"a")].concat();
        let metadata = [field(1, b"shop"), field(11, &label)].concat();
        let raw = [field(1, &metadata), field(2, b""), field(3, b"")].concat();
        let body = [b"k8s\0".to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        let value = decode(&body, &kind::NAMESPACE).unwrap();
        assert_eq!(
            value,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "a"}}, "spec": {}, "status": {}})
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

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert_eq!(decode(b"{}", &kind::NAMESPACE).unwrap_err().code, 400);
        let truncated = [b"k8s\0".to_vec(), vec![0x0a, 0x20, 1]].concat();
        assert_eq!(decode(&truncated, &kind::NAMESPACE).unwrap_err().code, 400);
        let unknown = [b"k8s\0".to_vec(), field(2, &field(9, b"x"))].concat();
        assert_eq!(decode(&unknown, &kind::NAMESPACE).unwrap_err().code, 400);
        let pod = [b"k8s\0".to_vec(), field(2, b"")].concat();
        assert_eq!(decode(&pod, &kind::POD).unwrap_err().code, 415);
    }
}
