//! The API server driven by the real kubectl and by `skiff`: the workflow a user goes
//! through with a Deployment and a Service, and every class of bad input, after which
//! the server still answers and the stored objects are intact.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{ControlPlane, fails, ok, stdout};

const DEPLOYMENT: &str = "manifests/10-web-deployment.yaml";

/// The web Deployment manifest with extra metadata labels.
fn web_with_labels(labels: &str) -> String {
    std::fs::read_to_string(crate::harness::workspace().join(DEPLOYMENT))
        .unwrap()
        .replacen(
            "  labels:\n    app: web\n",
            &format!("  labels:\n    app: web\n{labels}"),
            1,
        )
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Starts a `get … -w` of kubectl (`skiff` false) or skiff and collects its lines on a
/// channel.
fn watch(
    plane: &ControlPlane,
    skiff: bool,
    args: &[&str],
) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut command = if skiff {
        Command::new(skiff_e2e::process::sibling_binary("skiff").unwrap())
    } else {
        let mut kubectl = Command::new("kubectl");
        kubectl
            .arg("--cache-dir")
            .arg(plane.scratch.path().join("kube-cache"));
        kubectl
    };
    let mut child = command
        .args(args)
        .env("KUBECONFIG", &plane.kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for a watch line containing every needle.
fn expect_line(lines: &mpsc::Receiver<String>, needles: &[&str], seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = needles.iter().all(|n| line.contains(n));
                seen.push(line);
                if found {
                    return;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no watch line with {needles:?}; saw {seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_workflow_against_skiff() {
    let plane = ControlPlane::start().await;
    let kubectl = |args: &[&str]| plane.kubectl(args);

    // === apply a namespace, a deployment and a service
    let applied = ok(&kubectl(&[
        "apply",
        "-f",
        "manifests/00-namespace.yaml",
        "-f",
        DEPLOYMENT,
        "-f",
        "manifests/11-web-service.yaml",
    ]));
    assert_eq!(
        applied,
        "namespace/demo created\ndeployment.apps/web created\nservice/web created\n"
    );
    let again = ok(&kubectl(&["apply", "-f", DEPLOYMENT]));
    assert_eq!(again, "deployment.apps/web unchanged\n");

    // === get: table, wide, yaml, json, jsonpath, name
    let table = ok(&kubectl(&["get", "deploy", "-n", "demo"]));
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!((row[0], row[1], row[3]), ("web", "0/3", "0"), "{table}");
    let wide = ok(&kubectl(&["get", "deploy", "-n", "demo", "-o", "wide"]));
    assert!(
        wide.contains("CONTAINERS") && wide.contains("SELECTOR"),
        "{wide}"
    );
    assert!(wide.contains("httpd") && wide.contains("app=web"), "{wide}");
    let services = ok(&kubectl(&["get", "svc", "-n", "demo"]));
    assert!(services.starts_with("NAME"), "{services}");
    assert!(
        services.contains("ClusterIP") && services.contains("80/TCP"),
        "{services}"
    );
    let yaml = ok(&kubectl(&[
        "get", "deploy", "web", "-n", "demo", "-o", "yaml",
    ]));
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("replicas: 3"),
        "{yaml}"
    );
    let object = json_of(&ok(&kubectl(&[
        "get", "deploy", "web", "-n", "demo", "-o", "json",
    ])));
    assert_eq!(object["metadata"]["generation"], 1);
    assert!(
        object["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    assert!(
        object["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    let replicas = ok(&kubectl(&[
        "get",
        "deploy",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.spec.replicas}",
    ]));
    assert_eq!(replicas, "3");
    let names = ok(&kubectl(&["get", "deploy,svc", "-A", "-o", "name"]));
    assert_eq!(
        names,
        "deployment.apps/web\nservice/kubernetes\nservice/web\n"
    );

    // === describe
    let described = ok(&kubectl(&["describe", "deployment", "web", "-n", "demo"]));
    assert!(
        described.contains("Name:") && described.contains("web"),
        "{described}"
    );
    assert!(described.contains("3 desired"), "{described}");

    // === watch sees ADDED, MODIFIED and DELETED while we scale, patch and delete
    let (mut watcher, events) = watch(
        &plane,
        false,
        &["get", "deploy", "-n", "demo", "-w", "--output-watch-events"],
    );
    let mut seen = Vec::new();
    expect_line(&events, &["ADDED", "web"], &mut seen);

    // === scale to 5 and back
    let scaled = ok(&kubectl(&[
        "scale",
        "deployment",
        "web",
        "-n",
        "demo",
        "--replicas=5",
    ]));
    assert_eq!(scaled, "deployment.apps/web scaled\n");
    let object = json_of(&ok(&kubectl(&[
        "get", "deploy", "web", "-n", "demo", "-o", "json",
    ])));
    assert_eq!(object["spec"]["replicas"], 5);
    assert_eq!(
        object["metadata"]["generation"], 2,
        "a spec change bumps generation"
    );
    expect_line(&events, &["MODIFIED", "web"], &mut seen);
    ok(&kubectl(&[
        "scale",
        "deployment/web",
        "-n",
        "demo",
        "--replicas=3",
    ]));

    // === patch: strategic merge keeps the other container fields, merge and json work
    let patched = ok(&kubectl(&[
        "patch",
        "deployment",
        "web",
        "-n",
        "demo",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"httpd","image":"127.0.0.1:5055/skiff/httpd:2"}]}}}}"#,
    ]));
    assert_eq!(patched, "deployment.apps/web patched\n");
    let object = json_of(&ok(&kubectl(&[
        "get", "deploy", "web", "-n", "demo", "-o", "json",
    ])));
    let container = &object["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "127.0.0.1:5055/skiff/httpd:2");
    assert_eq!(
        container["ports"][0]["name"], "http",
        "merged by name, not replaced"
    );
    ok(&kubectl(&[
        "patch",
        "deployment",
        "web",
        "-n",
        "demo",
        "--type=merge",
        "-p",
        r#"{"metadata":{"annotations":{"team":"web"}}}"#,
    ]));
    ok(&kubectl(&[
        "patch",
        "deployment",
        "web",
        "-n",
        "demo",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/minReadySeconds","value":2}]"#,
    ]));
    let object = json_of(&ok(&kubectl(&[
        "get", "deploy", "web", "-n", "demo", "-o", "json",
    ])));
    assert_eq!(object["metadata"]["annotations"]["team"], "web");
    assert_eq!(object["spec"]["minReadySeconds"], 2);

    // === apply after editing: the three-way merge removes a label the file dropped
    let with_tier = plane.write("web-tier.yaml", &web_with_labels("    tier: frontend\n"));
    assert_eq!(
        ok(&kubectl(&["apply", "-f", &with_tier])),
        "deployment.apps/web configured\n"
    );
    let labels = ok(&kubectl(&[
        "get",
        "deploy",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.metadata.labels}",
    ]));
    assert_eq!(json_of(&labels), json!({"app": "web", "tier": "frontend"}));
    assert_eq!(
        ok(&kubectl(&["apply", "-f", DEPLOYMENT])),
        "deployment.apps/web configured\n"
    );
    let labels = ok(&kubectl(&[
        "get",
        "deploy",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.metadata.labels}",
    ]));
    assert_eq!(json_of(&labels), json!({"app": "web"}), "tier was removed");

    // === dry run: the answer without the write
    let dry = ok(&kubectl(&["apply", "--dry-run=server", "-f", &with_tier]));
    assert_eq!(dry, "deployment.apps/web configured (server dry run)\n");
    let dry = ok(&kubectl(&[
        "delete",
        "deploy",
        "web",
        "-n",
        "demo",
        "--dry-run=server",
    ]));
    assert_eq!(dry, "deployment.apps \"web\" deleted (server dry run)\n");
    let labels = ok(&kubectl(&[
        "get",
        "deploy",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.metadata.labels}",
    ]));
    assert_eq!(
        json_of(&labels),
        json!({"app": "web"}),
        "dry runs change nothing"
    );

    // === server-side apply: create, update, conflict, force
    let api = plane.write(
        "api.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: api\n  namespace: demo\nspec:\n  selector:\n    app: api\n  ports:\n  - port: 8080\n",
    );
    assert_eq!(
        ok(&kubectl(&["apply", "--server-side", "-f", &api])),
        "service/api serverside-applied\n"
    );
    assert_eq!(
        ok(&kubectl(&["apply", "--server-side", "-f", &api])),
        "service/api serverside-applied\n"
    );
    let object = json_of(&ok(&kubectl(&[
        "get",
        "svc",
        "api",
        "-n",
        "demo",
        "-o",
        "json",
        "--show-managed-fields",
    ])));
    assert_eq!(object["metadata"]["managedFields"][0]["manager"], "kubectl");
    assert_eq!(object["metadata"]["managedFields"][0]["operation"], "Apply");
    let five = plane.write(
        "web-5.yaml",
        &std::fs::read_to_string(crate::harness::workspace().join(DEPLOYMENT))
            .unwrap()
            .replace("replicas: 3", "replicas: 5"),
    );
    let conflict = fails(&kubectl(&[
        "apply",
        "--server-side",
        "--field-manager=ops",
        "-f",
        &five,
    ]));
    assert!(
        conflict.contains("conflict") && conflict.contains(".spec.replicas"),
        "{conflict}"
    );
    ok(&kubectl(&[
        "apply",
        "--server-side",
        "--field-manager=ops",
        "--force-conflicts",
        "-f",
        &five,
    ]));
    let replicas = ok(&kubectl(&[
        "get",
        "deploy",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.spec.replicas}",
    ]));
    assert_eq!(replicas, "5");

    // === delete, seen by the watch; api-resources
    assert_eq!(
        ok(&kubectl(&["delete", "-f", DEPLOYMENT])),
        "deployment.apps \"web\" deleted\n"
    );
    expect_line(&events, &["DELETED", "web"], &mut seen);
    let _ = watcher.kill();
    let _ = watcher.wait();
    let missing = fails(&kubectl(&["get", "deploy", "web", "-n", "demo"]));
    assert!(missing.contains("NotFound"), "{missing}");
    let resources = ok(&kubectl(&["api-resources"]));
    let deployments = resources
        .lines()
        .find(|l| l.starts_with("deployments"))
        .unwrap_or_else(|| panic!("{resources}"));
    let columns: Vec<&str> = deployments.split_whitespace().collect();
    assert_eq!(
        columns,
        ["deployments", "deploy", "apps/v1", "true", "Deployment"]
    );

    // === typed create sends protobuf
    assert_eq!(
        ok(&kubectl(&["create", "namespace", "shop"])),
        "namespace/shop created\n"
    );
    let exists = fails(&kubectl(&["create", "namespace", "shop"]));
    assert!(exists.contains("AlreadyExists"), "{exists}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_clear_errors_and_change_nothing() {
    let plane = ControlPlane::start().await;
    let kubectl = |args: &[&str]| plane.kubectl(args);
    ok(&kubectl(&[
        "apply",
        "-f",
        "manifests/00-namespace.yaml",
        "-f",
        DEPLOYMENT,
    ]));
    let path = "/apis/apps/v1/namespaces/demo/deployments/web";
    let (_, before) = plane.http("GET", path, "", b"").await;

    // Unknown field: kubectl asks for strict validation and shows the path.
    let typo = plane.write(
        "typo.yaml",
        &std::fs::read_to_string(crate::harness::workspace().join(DEPLOYMENT))
            .unwrap()
            .replace("replicas: 3", "replicaz: 3"),
    );
    let error = fails(&kubectl(&["apply", "-f", &typo]));
    assert!(
        error.contains(r#"unknown field "spec.replicaz""#),
        "{error}"
    );

    // Invalid name: 422 with the field.
    let bad_name = plane.write(
        "bad-name.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\n  namespace: demo\nspec:\n  containers:\n  - name: c\n    image: i\n",
    );
    let error = fails(&kubectl(&["create", "-f", &bad_name]));
    assert!(
        error.contains("Invalid") && error.contains("metadata.name"),
        "{error}"
    );

    // Stale resourceVersion: 409.
    let mut stale = before.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    stale["spec"]["replicas"] = json!(9);
    let (code, status) = plane
        .http(
            "PUT",
            path,
            "application/json",
            stale.to_string().as_bytes(),
        )
        .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (409, Some("Conflict")),
        "{status}"
    );

    // Oversized body: 413.
    let huge = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","data":"{}"}}"#,
        "x".repeat(4 << 20)
    );
    let (code, _) = plane
        .http(
            "POST",
            "/api/v1/namespaces/demo/pods",
            "application/json",
            huge.as_bytes(),
        )
        .await;
    assert_eq!(code, 413);

    // Alias bomb: refused quickly with a 4xx.
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (i, previous) in ('b'..='j').zip('a'..) {
        bomb.push_str(&format!(
            "{i}: &{i} [*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous}]\n"
        ));
    }
    let started = Instant::now();
    let (code, status) = plane
        .http(
            "POST",
            "/api/v1/namespaces/demo/pods",
            "application/yaml",
            bomb.as_bytes(),
        )
        .await;
    assert!((400..500).contains(&code), "{code} {status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Missing namespace: 404 Status.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let (code, status) = plane
        .http(
            "POST",
            "/api/v1/namespaces/nope/pods",
            "application/json",
            pod.to_string().as_bytes(),
        )
        .await;
    assert_eq!(code, 404);
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["message"], "namespaces \"nope\" not found");

    // Bad selectors and patches.
    let (code, _) = plane
        .http("GET", "/api/v1/pods?fieldSelector=spec.bogus%3Dx", "", b"")
        .await;
    assert_eq!(code, 400);
    let (code, _) = plane
        .http(
            "PATCH",
            path,
            "application/json-patch+json",
            br#"[{"op":"replace","path":"/spec/nope/x","value":1}]"#,
        )
        .await;
    assert!((400..500).contains(&code), "{code}");

    // The server still answers, and the deployment's spec is exactly as it was (its
    // status and revision annotation are the deployment controller's).
    let (code, _) = plane.http("GET", "/readyz", "", b"").await;
    assert_eq!(code, 200);
    let (_, after) = plane.http("GET", path, "", b"").await;
    assert_eq!(after["spec"], before["spec"]);
    assert_eq!(
        after["metadata"]["generation"],
        before["metadata"]["generation"]
    );
    assert_eq!(after["metadata"]["labels"], before["metadata"]["labels"]);
    // The refusals are counted in the metrics, by verb, resource and code.
    let (code, metrics) = plane.http("GET", "/metrics", "", b"").await;
    assert_eq!(code, 200);
    let metrics = metrics.as_str().unwrap().to_owned();
    for needle in [
        r#"apiserver_request_total{verb="update",resource="deployments",code="409"} 1"#,
        r#"apiserver_request_total{verb="create",resource="pods",code="413"} 1"#,
        r#"apiserver_request_total{verb="create",resource="pods",code="404"} 1"#,
        "skiff_store_request_duration_seconds_count",
        "skiff_store_is_leader 1",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
    let listed = stdout(&kubectl(&["get", "deploy", "-n", "demo", "-o", "name"]));
    assert_eq!(listed, "deployment.apps/web\n");
    assert!(plane.pid() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiff_workflow_against_skiff() {
    let plane = ControlPlane::start().await;
    let skiff = |args: &[&str]| plane.skiff(args);

    // === apply, then apply again unchanged
    let applied = ok(&skiff(&[
        "apply",
        "-f",
        "manifests/00-namespace.yaml",
        "-f",
        DEPLOYMENT,
        "-f",
        "manifests/11-web-service.yaml",
    ]));
    assert_eq!(
        applied,
        "namespace/demo created\ndeployment.apps/web created\nservice/web created\n"
    );
    assert_eq!(
        ok(&skiff(&["apply", "-f", DEPLOYMENT])),
        "deployment.apps/web unchanged\n"
    );

    // === get in every format
    let table = ok(&skiff(&["get", "deploy", "-n", "demo"]));
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    let wide = ok(&skiff(&["get", "deploy", "-n", "demo", "-o", "wide"]));
    assert!(
        wide.contains("SELECTOR") && wide.contains("app=web"),
        "{wide}"
    );
    let yaml = ok(&skiff(&[
        "get", "deploy", "web", "-n", "demo", "-o", "yaml",
    ]));
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("replicas: 3"),
        "{yaml}"
    );
    let object = json_of(&ok(&skiff(&[
        "get", "deploy", "web", "-n", "demo", "-o", "json",
    ])));
    assert_eq!(object["spec"]["replicas"], 3);
    let replicas = ok(&skiff(&[
        "get",
        "deploy",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.spec.replicas}",
    ]));
    assert_eq!(replicas, "3");
    assert_eq!(
        ok(&skiff(&["get", "deploy,svc", "-A", "-o", "name"])),
        "deployment.apps/web\nservice/kubernetes\nservice/web\n"
    );
    let selected = ok(&skiff(&["get", "svc", "-A", "-l", "app=web", "-o", "name"]));
    assert_eq!(selected, "service/web\n");
    let by_field = ok(&skiff(&[
        "get",
        "ns",
        "--field-selector",
        "metadata.name=demo",
        "-o",
        "name",
    ]));
    assert_eq!(by_field, "namespace/demo\n");
    let described = ok(&skiff(&["describe", "deployment", "web", "-n", "demo"]));
    assert!(described.contains("3 desired"), "{described}");

    // === watch, scale to 5 and back
    let (mut watcher, rows) = watch(&plane, true, &["get", "deploy", "-n", "demo", "-w"]);
    let mut seen = Vec::new();
    expect_line(&rows, &["web", "0/3"], &mut seen);
    assert_eq!(
        ok(&skiff(&[
            "scale",
            "deployment/web",
            "-n",
            "demo",
            "--replicas=5"
        ])),
        "deployment.apps/web scaled\n"
    );
    expect_line(&rows, &["web", "0/5"], &mut seen);
    ok(&skiff(&[
        "scale",
        "deploy",
        "web",
        "-n",
        "demo",
        "--replicas=3",
    ]));
    expect_line(&rows, &["web", "0/3"], &mut seen);
    let _ = watcher.kill();
    let _ = watcher.wait();

    // === apply after editing: a dropped label is removed
    let with_tier = plane.write("web-tier.yaml", &web_with_labels("    tier: frontend\n"));
    assert_eq!(
        ok(&skiff(&["apply", "-f", &with_tier])),
        "deployment.apps/web configured\n"
    );
    assert_eq!(
        ok(&skiff(&["apply", "-f", DEPLOYMENT])),
        "deployment.apps/web configured\n"
    );
    let labels = ok(&skiff(&[
        "get",
        "deploy",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.metadata.labels}",
    ]));
    assert_eq!(json_of(&labels), json!({"app": "web"}));

    // === server-side apply
    let api = plane.write(
        "api.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: api\n  namespace: demo\nspec:\n  selector:\n    app: api\n  ports:\n  - port: 8080\n",
    );
    assert_eq!(
        ok(&skiff(&["apply", "--server-side", "-f", &api])),
        "service/api serverside-applied\n"
    );

    // === errors are one line
    let typo = plane.write(
        "typo.yaml",
        &std::fs::read_to_string(crate::harness::workspace().join(DEPLOYMENT))
            .unwrap()
            .replace("replicas: 3", "replicaz: 3"),
    );
    let error = fails(&skiff(&["apply", "-f", &typo]));
    assert!(error.contains("spec.replicaz"), "{error}");
    assert_eq!(error.trim_end().lines().count(), 1, "{error}");
    let error = fails(&skiff(&["get", "deploy", "nope", "-n", "demo"]));
    assert!(error.contains("NotFound"), "{error}");
    let error = fails(&skiff(&["create", "namespace", "Bad_Name"]));
    assert!(error.contains("Invalid"), "{error}");

    // === delete, api-resources, create namespace
    assert_eq!(
        ok(&skiff(&["delete", "-f", DEPLOYMENT])),
        "deployment.apps \"web\" deleted\n"
    );
    fails(&skiff(&["get", "deploy", "web", "-n", "demo"]));
    let resources = ok(&skiff(&["api-resources"]));
    assert!(
        resources
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["deployments", "deploy", "apps/v1", "true", "Deployment"]),
        "{resources}"
    );
    assert_eq!(
        ok(&skiff(&["create", "namespace", "shop"])),
        "namespace/shop created\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subresources_and_collections_over_http() {
    let plane = ControlPlane::start().await;
    let pods = "/api/v1/namespaces/default/pods";
    for (name, app) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": app}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let (code, _) = plane
            .http("POST", pods, "application/json", pod.to_string().as_bytes())
            .await;
        assert_eq!(code, 201);
    }

    // /status changes the status and nothing else; the main resource cannot.
    let (_, mut pod) = plane.http("GET", &format!("{pods}/a"), "", b"").await;
    // The scheduler writes these unbound pods' status too: update unconditionally.
    pod["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    pod["status"]["phase"] = json!("Running");
    pod["metadata"]["labels"]["app"] = json!("changed");
    let (code, updated) = plane
        .http(
            "PUT",
            &format!("{pods}/a/status"),
            "application/json",
            pod.to_string().as_bytes(),
        )
        .await;
    assert_eq!(code, 200, "{updated}");
    assert_eq!(updated["status"]["phase"], "Running");
    assert_eq!(updated["metadata"]["labels"]["app"], "x");
    let (code, patched) = plane
        .http(
            "PATCH",
            &format!("{pods}/a"),
            "application/merge-patch+json",
            br#"{"status":{"phase":"Failed"}}"#,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        patched["status"]["phase"], "Running",
        "main resource keeps status"
    );

    // Binding assigns a node once.
    let binding = br#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"b"},"target":{"kind":"Node","name":"n1"}}"#;
    let (code, _) = plane
        .http(
            "POST",
            &format!("{pods}/b/binding"),
            "application/json",
            binding,
        )
        .await;
    assert_eq!(code, 201);
    let (code, status) = plane
        .http(
            "POST",
            &format!("{pods}/b/binding"),
            "application/json",
            binding,
        )
        .await;
    assert_eq!(code, 409, "{status}");
    let (_, bound) = plane.http("GET", &format!("{pods}/b"), "", b"").await;
    assert_eq!(bound["spec"]["nodeName"], "n1");

    // A pod on a node is deleted gracefully: 202 and a deletionTimestamp.
    let (code, deleting) = plane.http("DELETE", &format!("{pods}/b"), "", b"").await;
    assert_eq!(code, 202, "{deleting}");
    assert_eq!(deleting["metadata"]["deletionGracePeriodSeconds"], 30);
    let (code, _) = plane
        .http(
            "DELETE",
            &format!("{pods}/b"),
            "application/json",
            br#"{"gracePeriodSeconds":0}"#,
        )
        .await;
    assert_eq!(code, 200);

    // deletecollection with a selector removes only what matches.
    let (code, deleted) = plane
        .http("DELETE", &format!("{pods}?labelSelector=app%3Dx"), "", b"")
        .await;
    assert_eq!(code, 200, "{deleted}");
    assert_eq!(deleted["kind"], "PodList");
    assert_eq!(deleted["items"].as_array().unwrap().len(), 1);
    let (_, left) = plane.http("GET", pods, "", b"").await;
    let names: Vec<&str> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c"]);

    // OpenAPI: v3 for kubectl, v2 only as JSON.
    let (code, index) = plane.http("GET", "/openapi/v3", "", b"").await;
    assert_eq!(code, 200);
    assert!(index["paths"]["apis/apps/v1"]["serverRelativeURL"].is_string());
    let (code, _) = plane.http("GET", "/openapi/v2", "", b"").await;
    assert_eq!(code, 404, "kubectl asks for protobuf; it must get a 404");
}

/// A client certificate from the cluster's CA for `user` in `groups`.
fn certificate(plane: &ControlPlane, user: &str, groups: &[&str]) -> skiff_pki::KeyPair {
    let ca = skiff_pki::Ca::load(&plane.data_dir.join("pki")).unwrap();
    ca.issue(&skiff_pki::Issue {
        common_name: user.to_owned(),
        organizations: groups.iter().map(|g| (*g).to_owned()).collect(),
        dns_names: Vec::new(),
        ips: Vec::new(),
        usage: skiff_pki::Usage::Client,
        validity_days: 1,
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clients_see_health_alone_and_certificates_name_who_may_do_what() {
    let plane = ControlPlane::start().await;
    for path in ["/healthz", "/readyz", "/livez", "/version"] {
        let (code, body) = plane.http_as(None, "GET", path, "", b"").await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (code, ca) = plane.http_as(None, "GET", "/cacerts", "", b"").await;
    assert_eq!(code, 200);
    assert_eq!(ca.as_str().unwrap().trim(), plane.ca_pem.trim());
    let (code, status) = plane
        .http_as(None, "GET", "/api/v1/namespaces", "", b"")
        .await;
    assert_eq!(code, 401, "{status}");
    assert_eq!(status["reason"], "Unauthorized");

    // The admin may do anything; a node only what concerns its own pods.
    let pods = "/api/v1/namespaces/default/pods";
    let (code, created) = plane
        .http(
            "POST",
            pods,
            "application/json",
            br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"nodeName":"n1","containers":[{"name":"c","image":"x"}]}}"#,
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let node = certificate(&plane, "system:node:n1", &["system:nodes"]);
    let (code, status) = plane
        .http_as(Some(&node), "GET", "/api/v1/pods", "", b"")
        .await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(status["reason"], "Forbidden");
    let (code, list) = plane
        .http_as(
            Some(&node),
            "GET",
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1",
            "",
            b"",
        )
        .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["items"][0]["metadata"]["name"], "a");
    let (code, _) = plane
        .http_as(Some(&node), "GET", &format!("{pods}/a"), "", b"")
        .await;
    assert_eq!(code, 200);

    // A user outside every group is authenticated but may do nothing.
    let nobody = certificate(&plane, "jane", &[]);
    let (code, status) = plane
        .http_as(Some(&nobody), "GET", "/api/v1/namespaces", "", b"")
        .await;
    assert_eq!(code, 403, "{status}");
}
