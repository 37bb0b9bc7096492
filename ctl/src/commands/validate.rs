//! `skiff validate -f PATH`: offline parsing, defaulting and validation.

use std::path::PathBuf;
use std::process::ExitCode;

use skiff_api::codec::{self, FieldValidation, Limits};
use skiff_api::{Format, Object};

use crate::manifests::{self, Source};
use crate::printers;

/// Validates every object in every input; prints one line per object, or one line
/// per error, and fails if anything is wrong.
pub(crate) fn run(filenames: &[PathBuf], recursive: bool) -> anyhow::Result<ExitCode> {
    let sources = manifests::read_sources(filenames, recursive)?;
    let mut failed = false;
    for source in &sources {
        for line in validate_source(source) {
            match line {
                Ok(line) => println!("{line}"),
                Err(line) => {
                    failed = true;
                    eprintln!("{line}");
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One result line per object (`Ok`) or per problem (`Err`).
fn validate_source(source: &Source) -> Vec<Result<String, String>> {
    let name = source.name();
    let format = Format::detect(&source.content);
    let manifests = match codec::parse_manifests(&source.content, format, &Limits::MANIFEST) {
        Ok(manifests) => manifests,
        Err(error) => return vec![Err(format!("{name}: {error}"))],
    };
    if manifests.is_empty() {
        return vec![Err(format!("{name}: no objects found"))];
    }
    let mut lines = Vec::new();
    for manifest in manifests {
        let location = format!("{name} ({})", manifest.location());
        let mut object: Object = match codec::decode_object(manifest.value, FieldValidation::Strict)
        {
            Ok(decoded) => decoded.object,
            Err(error) => {
                let field_errors = error.field_errors();
                if field_errors.is_empty() {
                    lines.push(Err(format!("{location}: {error}")));
                } else {
                    lines.extend(field_errors.iter().map(|e| Err(format!("{location}: {e}"))));
                }
                continue;
            }
        };
        object.apply_defaults();
        let errors = object.validate();
        if errors.is_empty() {
            lines.push(Ok(format!("{} valid", printers::object_reference(&object))));
        } else {
            let reference = printers::object_reference(&object);
            lines.extend(
                errors
                    .iter()
                    .map(|e| Err(format!("{location}: {reference}: {e}"))),
            );
        }
    }
    lines
}
