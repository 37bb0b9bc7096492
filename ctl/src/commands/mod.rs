//! One module per verb; each exposes `run`. Verbs that talk to the API server get a
//! [`Context`]: the client and the namespace the flags chose.

pub(crate) mod api_resources;
pub(crate) mod apply;
pub(crate) mod cordon;
pub(crate) mod create;
pub(crate) mod delete;
pub(crate) mod describe;
pub(crate) mod drain;
pub(crate) mod explain;
pub(crate) mod get;
pub(crate) mod images;
pub(crate) mod logs;
pub(crate) mod rollout;
pub(crate) mod scale;
pub(crate) mod up;
pub(crate) mod validate;
pub(crate) mod version;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use serde_json::Value;
use skiff_api::ResourceKind;
use skiff_api::codec::{self, Format, Limits};

use crate::client::Client;
use crate::manifests;
use crate::{GlobalFlags, RemoteCommand, RolloutCommand, kubeconfig};

/// What every API command needs.
pub(crate) struct Context {
    /// The API client.
    pub client: Client,
    /// The namespace from `-n`, else the kubeconfig context, else `default`.
    pub namespace: String,
    /// Whether `-n` was given explicitly.
    pub namespace_explicit: bool,
    /// `-A`: list across all namespaces.
    pub all_namespaces: bool,
}

impl Context {
    /// The namespace to list in: `None` with `-A`.
    pub fn list_namespace(&self) -> Option<&str> {
        (!self.all_namespaces).then_some(self.namespace.as_str())
    }
}

/// Connects and runs one API command.
pub(crate) async fn run_remote(
    global: &GlobalFlags,
    command: RemoteCommand,
) -> anyhow::Result<ExitCode> {
    let flags = kubeconfig::Flags {
        kubeconfig: global.kubeconfig.clone(),
        context: global.context.clone(),
        server: global.server.clone(),
        namespace: global.namespace.clone(),
    };
    let request_timeout = match parse_duration(&global.request_timeout)? {
        timeout if timeout.is_zero() => None,
        timeout => Some(timeout),
    };
    let connection = kubeconfig::resolve(&flags)?;
    let ctx = Context {
        namespace: connection.namespace.clone(),
        namespace_explicit: connection.namespace_explicit,
        all_namespaces: global.all_namespaces,
        client: Client::try_new(connection)?.with_request_timeout(request_timeout),
    };
    match command {
        RemoteCommand::Get(args) => get::run(&ctx, args).await,
        RemoteCommand::Apply(args) => apply::run(&ctx, args).await,
        RemoteCommand::Create(args) => create::run(&ctx, args).await,
        RemoteCommand::Delete(args) => delete::run(&ctx, args).await,
        RemoteCommand::Scale(args) => scale::run(&ctx, args).await,
        RemoteCommand::Logs(args) => logs::run(&ctx, args).await,
        RemoteCommand::Rollout { command } => match command {
            RolloutCommand::Status { resources, timeout } => {
                rollout::status(&ctx, &resources, &timeout).await
            }
            RolloutCommand::Undo {
                resources,
                to_revision,
            } => rollout::undo(&ctx, &resources, to_revision).await,
            RolloutCommand::History {
                resources,
                revision,
            } => rollout::history(&ctx, &resources, revision).await,
        },
        RemoteCommand::Describe(args) => describe::run(&ctx, args).await,
        RemoteCommand::ApiResources(args) => api_resources::run(&ctx, args).await,
        RemoteCommand::Cordon { nodes } => cordon::run(&ctx, &nodes, true).await,
        RemoteCommand::Uncordon { nodes } => cordon::run(&ctx, &nodes, false).await,
        RemoteCommand::Drain(args) => drain::run(&ctx, args).await,
    }
}

/// One object read from a manifest, with where it came from.
pub(crate) struct ManifestObject {
    /// The input's name for messages (`web.yaml`, `<stdin>`, a URL).
    pub source: String,
    /// The object's kind.
    pub kind: &'static ResourceKind,
    /// The object as written.
    pub value: Value,
}

impl ManifestObject {
    /// `metadata.name`.
    pub fn name(&self) -> &str {
        crate::printers::object_name(&self.value)
    }
}

/// Reads every object of every `-f` input; an unknown kind or a missing name fails
/// the whole command before anything is sent, as kubectl does.
pub(crate) async fn read_manifests(
    filenames: &[String],
    recursive: bool,
    verb: &str,
) -> anyhow::Result<Vec<ManifestObject>> {
    let sources = manifests::read_inputs(filenames, recursive).await?;
    let mut objects = Vec::new();
    for source in &sources {
        // kubectl calls standard input `STDIN` in its errors.
        let name = match (&source.path, &source.url) {
            (None, None) => "STDIN".to_owned(),
            _ => source.name(),
        };
        let format = Format::detect(&source.content);
        let parsed = codec::parse_manifests(&source.content, format, &Limits::MANIFEST)
            .map_err(|e| anyhow::anyhow!("error parsing {name}: {e}"))?;
        for manifest in parsed {
            let (api_version, kind_name) = manifest.type_meta();
            let (Some(api_version), Some(kind_name)) = (api_version, kind_name) else {
                bail!(
                    "error validating {name:?} ({}): apiVersion and kind must be set",
                    manifest.location()
                );
            };
            let Some(kind) = skiff_api::kind::by_type(api_version, kind_name) else {
                bail!(
                    "resource mapping not found for name: {:?} namespace: {:?} from {name:?}: no matches for kind {kind_name:?} in version {api_version:?}",
                    crate::printers::object_name(&manifest.value),
                    manifest
                        .value
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                );
            };
            if crate::printers::object_name(&manifest.value).is_empty() {
                bail!("error when reading {name:?}: resource name may not be empty");
            }
            objects.push(ManifestObject {
                source: name.clone(),
                kind,
                value: manifest.value,
            });
        }
    }
    if objects.is_empty() {
        bail!("no objects passed to {verb}");
    }
    Ok(objects)
}

/// The namespace a manifest's object goes to: its own, else the context's; with an
/// explicit `-n`, a different one is refused like kubectl does.
pub(crate) fn manifest_namespace(
    ctx: &Context,
    object: &ManifestObject,
) -> anyhow::Result<Option<String>> {
    if !object.kind.namespaced {
        return Ok(None);
    }
    let own = object
        .value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty());
    match own {
        Some(own) if ctx.namespace_explicit && own != ctx.namespace => bail!(
            "the namespace from the provided object {own:?} does not match the namespace {:?}. You must pass '--namespace={own}' to perform this operation.",
            ctx.namespace
        ),
        Some(own) => Ok(Some(own.to_owned())),
        None => Ok(Some(ctx.namespace.clone())),
    }
}

/// The object with its namespace filled in (see [`manifest_namespace`]), and that
/// namespace.
pub(crate) fn placed(
    ctx: &Context,
    object: &ManifestObject,
) -> anyhow::Result<(Value, Option<String>)> {
    let namespace = manifest_namespace(ctx, object)?;
    let mut value = object.value.clone();
    if let (Some(namespace), Some(metadata)) = (
        &namespace,
        value.get_mut("metadata").and_then(Value::as_object_mut),
    ) {
        metadata
            .entry("namespace")
            .or_insert_with(|| Value::String(namespace.clone()));
    }
    Ok((value, namespace))
}

/// Parses a Go duration (`300ms`, `1.5s`, `2m`, `1h30m`, `0`).
pub(crate) fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let invalid = || anyhow::anyhow!("invalid duration {text:?}");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// Prints each error of a multi-object command the way kubectl does and returns
/// the exit code: failure if there were any.
pub(crate) fn finish(errors: &[anyhow::Error]) -> ExitCode {
    for error in errors {
        eprintln!("{}", crate::report(error));
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let check = |text: &str, expected: Duration| {
            assert_eq!(parse_duration(text).unwrap(), expected, "{text}");
        };
        check("0", Duration::ZERO);
        check("0s", Duration::ZERO);
        check("30s", Duration::from_secs(30));
        check("1h30m", Duration::from_secs(5400));
        check("1.5s", Duration::from_millis(1500));
        check("250ms", Duration::from_millis(250));
        for bad in ["", "5", "s", "5x", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
