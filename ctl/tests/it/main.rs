//! Runs the real `skiff` binary the way a user does.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers fail the test by panicking"
)]

mod cluster;
mod remote;
mod tls;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn skiff(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(args)
        .current_dir(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("workspace root"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn skiff");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait for skiff")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn validates_the_shipped_manifests() {
    let output = skiff(&["validate", "-f", "manifests/"], None);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "namespace/demo valid\ndeployment.apps/web valid\nservice/web valid\npod/clock valid\ndeployment.apps/api valid\n"
    );
}

#[test]
fn a_misspelt_field_fails_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.yaml");
    std::fs::write(
        &file,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicaz: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, image: i}]}\n",
    )
    .unwrap();
    let output = skiff(&["validate", "-f", file.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert_eq!(
        stderr,
        format!(
            "{} (document 1): unknown field \"spec.replicaz\"\n",
            file.display()
        )
    );
}

#[test]
fn every_error_of_every_document_is_reported() {
    let input = "apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: [{name: c}]}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: fine}\n";
    let output = skiff(&["validate", "-f", "-"], Some(input));
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output.stdout), "namespace/fine valid\n");
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].starts_with("<stdin> (document 1): pod/Bad_Name: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{stderr}");
    assert_eq!(
        lines[1],
        "<stdin> (document 1): pod/Bad_Name: spec.containers[0].image: Required value"
    );
}

#[test]
fn unreadable_and_malformed_inputs_fail_with_one_line() {
    let missing = skiff(&["validate", "-f", "/nonexistent/x.yaml"], None);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(text(&missing.stderr).lines().count(), 1);
    assert!(text(&missing.stderr).starts_with("error: failed to read /nonexistent/x.yaml"));

    let malformed = skiff(&["validate", "-f", "-"], Some("a: [1, 2\n"));
    assert_eq!(malformed.status.code(), Some(1));
    assert!(
        text(&malformed.stderr).starts_with("<stdin>: yaml: "),
        "{}",
        text(&malformed.stderr)
    );

    let empty = skiff(&["validate", "-f", "-"], Some(""));
    assert_eq!(empty.status.code(), Some(1));
    assert_eq!(text(&empty.stderr), "<stdin>: no objects found\n");
}

#[test]
fn explains_deployment_strategy_from_the_schema() {
    let output = skiff(&["explain", "deployment.spec.strategy"], None);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.starts_with("GROUP:      apps\nKIND:       Deployment\nVERSION:    v1\n\nFIELD: strategy <DeploymentStrategy>\n"), "{stdout}");
    assert!(
        stdout.contains("\n  rollingUpdate\t<RollingUpdateDeployment>\n"),
        "{stdout}"
    );
    assert!(stdout.contains("\n  type\t<string>\n"), "{stdout}");

    let unknown = skiff(&["explain", "deploy.spec.replicaz"], None);
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(
        text(&unknown.stderr),
        "error: cannot explain \"deploy.spec.replicaz\": field \"spec.replicaz\" does not exist\n"
    );
    let no_kind = skiff(&["explain", "cronjobs"], None);
    assert_eq!(
        text(&no_kind.stderr),
        "error: the server doesn't have a resource type \"cronjobs\"\n"
    );
}

#[test]
fn prints_its_version() {
    let output = skiff(&["version"], None);
    assert!(output.status.success());
    assert_eq!(
        text(&output.stdout),
        format!("Client Version: v{}\n", env!("CARGO_PKG_VERSION"))
    );
}
