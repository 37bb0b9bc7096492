//! Secret rules (Kubernetes' `ValidateSecret` and `ValidateSecretUpdate`).

use k8s_openapi::api::core::v1::Secret;

use super::{immutable, names, push_invalid};
use crate::error::FieldError;
use crate::path::FieldPath;

/// Largest total size of a Secret's `data` values (kube's `MaxSecretSize`).
pub const MAX_SECRET_SIZE: usize = 1024 * 1024;

/// Data keys, total size, and the keys the well-known types require.
pub(super) fn validate_secret(secret: &Secret, errors: &mut Vec<FieldError>) {
    let data_path = FieldPath::new("data");
    let data = secret.data.as_ref();
    let mut total_size = 0;
    for (key, value) in data.into_iter().flatten() {
        push_invalid(errors, &data_path.key(key), key, names::config_map_key(key));
        total_size += value.0.len();
    }
    if total_size > MAX_SECRET_SIZE {
        errors.push(FieldError::too_long(&data_path, MAX_SECRET_SIZE));
    }
    let has = |key: &str| data.is_some_and(|data| data.contains_key(key));
    let value_of = |key: &str| data.and_then(|data| data.get(key)).map(|v| v.0.as_slice());
    let required = |errors: &mut Vec<FieldError>, key: &str| {
        errors.push(FieldError::required(&data_path.key(key), ""));
    };
    match secret.type_.as_deref().unwrap_or_default() {
        "kubernetes.io/service-account-token" => {
            let annotation = "kubernetes.io/service-account.name";
            let named = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(annotation))
                .is_some_and(|name| !name.is_empty());
            if !named {
                let path = FieldPath::new("metadata")
                    .child("annotations")
                    .key(annotation);
                errors.push(FieldError::required(&path, ""));
            }
        }
        kind @ ("kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson") => {
            let key = if kind == "kubernetes.io/dockercfg" {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            match value_of(key) {
                None => required(errors, key),
                Some(bytes) => {
                    if let Err(error) =
                        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes)
                    {
                        errors.push(FieldError::invalid(
                            &data_path.key(key),
                            "<secret contents redacted>",
                            error.to_string(),
                        ));
                    }
                }
            }
        }
        // Either may be empty, but one of them must be present.
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            required(errors, "username");
            required(errors, "password");
        }
        "kubernetes.io/ssh-auth" if value_of("ssh-privatekey").is_none_or(<[u8]>::is_empty) => {
            required(errors, "ssh-privatekey");
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !has(key) {
                    required(errors, key);
                }
            }
        }
        // Opaque, bootstrap tokens and any other type: no extra rules.
        _ => {}
    }
}

/// `type` never changes; an immutable Secret keeps its data and stays immutable.
pub(super) fn validate_secret_update(old: &Secret, new: &Secret, errors: &mut Vec<FieldError>) {
    immutable(&old.type_, &new.type_, &FieldPath::new("type"), errors);
    if old.immutable == Some(true) {
        let detail = "field is immutable when `immutable` is set";
        if new.immutable != Some(true) {
            errors.push(FieldError::forbidden(&FieldPath::new("immutable"), detail));
        }
        if old.data != new.data {
            errors.push(FieldError::forbidden(&FieldPath::new("data"), detail));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn secret(type_: &str, data: &[(&str, &str)]) -> Secret {
        let data: BTreeMap<String, ByteString> = data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect();
        Secret {
            type_: Some(type_.to_owned()),
            data: Some(data),
            ..Default::default()
        }
    }

    fn check(secret: &Secret, expected: &[&str]) {
        let mut errors = Vec::new();
        validate_secret(secret, &mut errors);
        let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn data_keys_and_size() {
        check(&secret("Opaque", &[("a.b_c-D", "x"), (".hidden", "")]), &[]);
        check(
            &secret("Opaque", &[("a/b", "x")]),
            &[
                "data[a/b]: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            ],
        );
        check(
            &secret("Opaque", &[("..x", "")]),
            &["data[..x]: Invalid value: \"..x\": must not start with '..'"],
        );
        let big = "x".repeat(MAX_SECRET_SIZE / 2 + 1);
        check(
            &secret("Opaque", &[("a", &big), ("b", &big)]),
            &["data: Too long: may not be more than 1048576 bytes"],
        );
        check(
            &secret("bootstrap.kubernetes.io/token", &[("token-id", "abcdef")]),
            &[],
        );
    }

    #[test]
    fn well_known_types_need_their_keys() {
        check(
            &secret("kubernetes.io/tls", &[("tls.crt", "")]),
            &["data[tls.key]: Required value"],
        );
        check(
            &secret("kubernetes.io/basic-auth", &[]),
            &[
                "data[username]: Required value",
                "data[password]: Required value",
            ],
        );
        check(
            &secret("kubernetes.io/basic-auth", &[("password", "")]),
            &[],
        );
        check(
            &secret(
                "kubernetes.io/dockerconfigjson",
                &[(".dockerconfigjson", "{}")],
            ),
            &[],
        );
        check(
            &secret("kubernetes.io/service-account-token", &[]),
            &["metadata.annotations[kubernetes.io/service-account.name]: Required value"],
        );
    }

    #[test]
    fn updates_keep_type_and_immutable_data() {
        let old = Secret {
            immutable: Some(true),
            ..secret("Opaque", &[("a", "1")])
        };
        let mut errors = Vec::new();
        validate_secret_update(&old, &old.clone(), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let new = Secret {
            immutable: None,
            ..secret("kubernetes.io/tls", &[("a", "2")])
        };
        validate_secret_update(&old, &new, &mut errors);
        let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "type: Invalid value: \"kubernetes.io/tls\": field is immutable",
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set",
            ]
        );
    }
}
