//! Integration tests of the object model: realistic manifests in, exact errors out.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers fail the test by panicking"
)]

mod decoding;
mod roundtrip;
mod validation;

use skiff_api::Object;
use skiff_api::codec::{self, Decoded, FieldValidation, Format, Limits};

/// Reads a fixture file from `api/tests/fixtures`.
fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Parses and strictly decodes every object of an input, panicking on any error.
fn decode_all(input: &[u8]) -> Vec<Object> {
    codec::parse_manifests(input, Format::detect(input), &Limits::MANIFEST)
        .expect("parse")
        .into_iter()
        .map(|manifest| {
            codec::decode_object(manifest.value, FieldValidation::Strict)
                .expect("decode")
                .object
        })
        .collect()
}

/// Parses one document and decodes it with the given field validation.
fn decode_one(input: &str, validation: FieldValidation) -> Result<Decoded<Object>, codec::Error> {
    let bytes = input.as_bytes();
    let mut manifests = codec::parse_manifests(bytes, Format::detect(bytes), &Limits::REQUEST)?;
    assert_eq!(manifests.len(), 1, "expected one document in {input}");
    codec::decode_object(manifests.remove(0).value, validation)
}

/// Decodes strictly, defaults, validates, and returns the validation messages.
fn validation_errors(input: &str) -> Vec<String> {
    let mut object = decode_one(input, FieldValidation::Strict)
        .expect("decodes")
        .object;
    object.apply_defaults();
    object.validate().iter().map(ToString::to_string).collect()
}
