//! Bad input is refused with the exact field path, identically for YAML and JSON.

use serde_json::Value;
use skiff_api::ErrorType;
use skiff_api::codec::{self, Error, FieldValidation, Format, Limits};

use crate::decode_one;

const DEPLOYMENT_WITH_TYPO: &str = r"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicaz: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: httpd
          image: httpd:1
        - name: sidecar
          imagee: httpd:1
";

/// The same document as JSON, so both formats can be compared.
fn as_json(yaml: &str) -> String {
    let docs = codec::parse_documents(yaml.as_bytes(), Format::Yaml, &Limits::REQUEST).unwrap();
    serde_json::to_string(&docs[0]).unwrap()
}

fn field_errors(result: Result<impl std::fmt::Debug, Error>) -> Vec<(ErrorType, String)> {
    let error = result.expect_err("must be refused");
    error
        .field_errors()
        .iter()
        .map(|e| (e.error_type, e.field.as_str().to_owned()))
        .collect()
}

#[test]
fn unknown_fields_are_refused_with_their_paths_in_both_formats() {
    let expected = vec![
        (ErrorType::UnknownField, "spec.replicaz".to_owned()),
        (
            ErrorType::UnknownField,
            "spec.template.spec.containers[1].imagee".to_owned(),
        ),
    ];
    assert_eq!(
        field_errors(decode_one(DEPLOYMENT_WITH_TYPO, FieldValidation::Strict)),
        expected
    );
    assert_eq!(
        field_errors(decode_one(
            &as_json(DEPLOYMENT_WITH_TYPO),
            FieldValidation::Strict
        )),
        expected
    );
    let message = decode_one(DEPLOYMENT_WITH_TYPO, FieldValidation::Strict)
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.replicaz\", unknown field \"spec.template.spec.containers[1].imagee\""
    );
}

#[test]
fn warn_and_ignore_drop_unknown_fields() {
    let decoded = decode_one(DEPLOYMENT_WITH_TYPO, FieldValidation::Warn).unwrap();
    let warned: Vec<&str> = decoded.warnings.iter().map(|w| w.field.as_str()).collect();
    assert_eq!(
        warned,
        ["spec.replicaz", "spec.template.spec.containers[1].imagee"]
    );
    let decoded = decode_one(DEPLOYMENT_WITH_TYPO, FieldValidation::Ignore).unwrap();
    assert!(decoded.warnings.is_empty());
}

#[test]
fn unimplemented_kubernetes_fields_are_refused_in_every_mode() {
    let input = r"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  affinity: {}
  containers:
    - name: c
      image: i
      securityContext: {privileged: true}
      env:
        - name: FROM_SECRET
          valueFrom: {secretKeyRef: {name: s, key: k}}
";
    let expected = vec![
        (ErrorType::Unimplemented, "spec.affinity".to_owned()),
        (
            ErrorType::Unimplemented,
            "spec.containers[0].env[0].valueFrom".to_owned(),
        ),
        (
            ErrorType::Unimplemented,
            "spec.containers[0].securityContext".to_owned(),
        ),
    ];
    for validation in [
        FieldValidation::Strict,
        FieldValidation::Warn,
        FieldValidation::Ignore,
    ] {
        let mut errors = field_errors(decode_one(input, validation));
        errors.sort();
        assert_eq!(errors, expected, "{validation:?}");
    }
    let message = decode_one(input, FieldValidation::Strict)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(
            "spec.affinity: Not implemented: this Kubernetes field is not supported by Skiff yet"
        ),
        "{message}"
    );
}

#[test]
fn wrong_types_name_the_field() {
    let cases = [
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec: {replicas: three, selector: {}, template: {}}\n",
            "spec.replicas",
            "invalid type: string \"three\", expected i32",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {enabled: yes}}\nspec: {containers: []}\n",
            "metadata.labels.enabled",
            "invalid type: boolean `true`, expected a string",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: {name: c}}\n",
            "spec.containers",
            "invalid type: map, expected a sequence",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 99999999999}]}\n",
            "spec.ports[0].port",
            "invalid value: integer `99999999999`, expected i32",
        ),
    ];
    for (yaml, path, detail) in cases {
        for input in [yaml.to_owned(), as_json(yaml)] {
            let error = decode_one(&input, FieldValidation::Strict).expect_err(path);
            let errors = error.field_errors();
            assert_eq!(errors.len(), 1, "{input}");
            assert_eq!(
                (errors[0].error_type, errors[0].field.as_str()),
                (ErrorType::TypeInvalid, path),
                "{input}"
            );
            assert!(
                errors[0].detail.contains(detail),
                "{input}: {}",
                errors[0].detail
            );
        }
    }
}

#[test]
fn duplicate_keys_are_refused_with_their_path_in_both_formats() {
    let yaml =
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  name: b\nspec: {containers: []}\n";
    let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","name":"b"}}"#;
    for input in [yaml, json] {
        let error = codec::parse_documents(
            input.as_bytes(),
            Format::detect(input.as_bytes()),
            &Limits::REQUEST,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "metadata.name: Duplicate value: \"name\": field appears more than once",
            "{input}"
        );
    }
}

#[test]
fn documents_without_a_known_kind_are_refused() {
    let missing = decode_one("metadata: {name: x}\n", FieldValidation::Strict).unwrap_err();
    assert_eq!(missing, Error::MissingKind { document: 1 });
    let unknown = decode_one(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: x}\n",
        FieldValidation::Strict,
    )
    .unwrap_err();
    assert_eq!(
        unknown.to_string(),
        "no matches for kind \"CronJob\" in version \"batch/v1\""
    );
    let scalar =
        codec::parse_manifests(b"just a string\n", Format::Yaml, &Limits::MANIFEST).unwrap_err();
    assert_eq!(scalar, Error::MissingKind { document: 1 });
}

#[test]
fn syntax_errors_are_reported_not_panicked() {
    let yaml =
        codec::parse_documents(b"a: [1, 2\nb: 3\n", Format::Yaml, &Limits::REQUEST).unwrap_err();
    assert!(matches!(yaml, Error::Yaml(_)), "{yaml:?}");
    let json = codec::parse_documents(b"{\"a\": 1,}", Format::Json, &Limits::REQUEST).unwrap_err();
    assert!(matches!(json, Error::Json(_)), "{json:?}");
    let trailing = codec::parse_documents(b"{\"a\": 1} {\"b\": 2}", Format::Json, &Limits::REQUEST)
        .unwrap_err();
    assert!(matches!(trailing, Error::Json(_)), "{trailing:?}");
    let binary =
        codec::parse_documents(&[0xff, 0xfe, 0x00], Format::Yaml, &Limits::REQUEST).unwrap_err();
    assert!(matches!(binary, Error::Yaml(_)), "{binary:?}");
}

#[test]
fn billion_laughs_is_refused_without_expanding() {
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for level in 1..10 {
        let previous = (b'a' + level - 1) as char;
        let name = (b'a' + level) as char;
        let refs = vec![format!("*{previous}"); 9].join(",");
        bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    // Fully expanded this would be 9^10 ≈ 3.5 billion strings.
    let error =
        codec::parse_documents(bomb.as_bytes(), Format::Yaml, &Limits::REQUEST).unwrap_err();
    let Error::Yaml(message) = &error else {
        panic!("expected a yaml budget error, got {error:?}")
    };
    assert!(message.contains("alias replay limit exceeded"), "{message}");
}

#[test]
fn deep_nesting_is_refused_with_a_path_in_both_formats() {
    let depth = Limits::REQUEST.max_depth + 10;
    let json = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let yaml = format!("{}1{}", "[".repeat(depth), "]".repeat(depth)).replacen('[', "a: [", 1);
    for (input, format) in [(json, Format::Json), (yaml, Format::Yaml)] {
        let error = codec::parse_documents(input.as_bytes(), format, &Limits::REQUEST).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("nesting deeper than 64 levels is not allowed"),
            "{format:?}: {error}"
        );
    }
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let input = vec![b' '; Limits::REQUEST.max_bytes + 1];
    let error = codec::parse_documents(&input, Format::Yaml, &Limits::REQUEST).unwrap_err();
    assert_eq!(
        error,
        Error::TooLarge {
            size: Limits::REQUEST.max_bytes + 1,
            limit: Limits::REQUEST.max_bytes
        }
    );
}

#[test]
fn too_many_documents_are_refused() {
    let input = "a: 1\n---\n".repeat(Limits::REQUEST.max_documents + 1);
    assert!(matches!(
        codec::parse_documents(input.as_bytes(), Format::Yaml, &Limits::REQUEST),
        Err(Error::Yaml(_))
    ));
}

#[test]
fn empty_input_has_no_documents() {
    for input in ["", "\n", "---\n---\n", "# only a comment\n"] {
        assert_eq!(
            codec::parse_documents(input.as_bytes(), Format::Yaml, &Limits::MANIFEST).unwrap(),
            Vec::<Value>::new(),
            "{input:?}"
        );
    }
}

#[test]
fn unknown_fields_set_to_null_are_still_unknown() {
    let input = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec:\n  replicaz: null\n  nodeSelectr:\n  selector: {matchLabels: {a: b}}\n  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i}]}}\n";
    let errors = field_errors(decode_one(input, FieldValidation::Strict));
    assert_eq!(
        errors,
        vec![
            (ErrorType::UnknownField, "spec.nodeSelectr".to_owned()),
            (ErrorType::UnknownField, "spec.replicaz".to_owned())
        ]
    );
}

#[test]
fn long_keys_do_not_make_every_element_expensive() {
    // Paths are rendered only for errors: a huge key over a long array parses in one pass.
    let key = "k".repeat(1_000_000);
    let input = format!("{{\"{key}\":[{}0]}}", "0,".repeat(500_000));
    let docs = codec::parse_documents(input.as_bytes(), Format::Json, &Limits::REQUEST).unwrap();
    assert_eq!(
        docs[0][key.as_str()].as_array().map(Vec::len),
        Some(500_001)
    );
}
