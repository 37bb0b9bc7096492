//! `skiff` against a real `skiff-control-plane`, compared with what kubectl prints.

use std::io::{BufRead, BufReader};
use std::process::Output;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::ControlPlane;
use crate::{skiff, text};

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-1\n  labels: {app: web}\nspec:\n  containers: [{name: c, image: busybox}]\n";

fn pod_named(name: &str, label: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {label}}}\nspec:\n  containers: [{{name: c, image: busybox}}]\n"
    )
}

fn deployment(replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: httpd, image: 'busybox:1'}}]}}\n"
    )
}

#[track_caller]
fn success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

#[track_caller]
fn failure(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stderr)
}

fn json(output: &Output) -> Value {
    serde_json::from_str(&success(output)).expect("JSON output")
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[test]
fn get_prints_server_tables_like_kubectl() {
    let cp = ControlPlane::start();
    assert_eq!(
        success(&cp.skiff_with_stdin(&["apply", "-f", "-"], POD)),
        "pod/web-1 created\n"
    );

    let table = success(&cp.skiff(&["get", "pods"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert_eq!(
        lines[0], "NAME    READY   STATUS    RESTARTS   AGE",
        "{table}"
    );
    assert!(
        lines[1].starts_with("web-1   0/1     Pending   0          "),
        "{table}"
    );

    let wide = success(&cp.skiff(&["get", "pods", "-o", "wide"]));
    assert!(
        wide.starts_with("NAME    READY   STATUS    RESTARTS   AGE   IP  "),
        "{wide}"
    );
    assert!(
        wide.lines()
            .next()
            .unwrap()
            .ends_with("NOMINATED NODE   READINESS GATES"),
        "{wide}"
    );

    let labelled = success(&cp.skiff(&["get", "pods", "--show-labels", "--no-headers"]));
    assert_eq!(words(&labelled).first(), Some(&"web-1"), "{labelled}");
    assert_eq!(words(&labelled).last(), Some(&"app=web"), "{labelled}");

    // Several kinds: names carry the kind; empty kinds print nothing.
    let mixed = success(&cp.skiff(&["get", "po,deploy"]));
    assert_eq!(
        mixed.lines().nth(1).map(words).unwrap()[0],
        "pod/web-1",
        "{mixed}"
    );
    assert_eq!(mixed.lines().count(), 2, "{mixed}");
}

#[test]
fn get_prints_names_json_and_yaml() {
    let cp = ControlPlane::start();
    success(&cp.skiff_with_stdin(&["create", "-f", "-"], POD));
    assert_eq!(
        success(&cp.skiff(&["get", "pods", "-o", "name"])),
        "pod/web-1\n"
    );
    assert_eq!(
        success(&cp.skiff(&["get", "pod/web-1", "namespace/default", "-o", "name"])),
        "pod/web-1\nnamespace/default\n"
    );

    let object = json(&cp.skiff(&["get", "pod", "web-1", "-o", "json"]));
    assert_eq!(object["kind"], "Pod");
    assert_eq!(object["metadata"]["name"], "web-1");
    assert_eq!(object["metadata"]["namespace"], "default");

    let list = json(&cp.skiff(&["get", "po", "-o", "json"]));
    assert_eq!(list["kind"], "List");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(
        list["items"][0]["kind"], "Pod",
        "list items carry their kind"
    );
    assert_eq!(list["items"][0]["apiVersion"], "v1");

    let yaml = success(&cp.skiff(&["get", "pods", "-o", "yaml"]));
    assert!(
        yaml.starts_with("apiVersion: v1\nitems:\n- apiVersion: v1\n  kind: Pod\n"),
        "{yaml}"
    );
    assert!(
        yaml.ends_with("kind: List\nmetadata:\n  resourceVersion: \"\"\n"),
        "{yaml}"
    );

    let single_yaml = success(&cp.skiff(&["get", "pod", "web-1", "-o", "yaml"]));
    assert!(
        single_yaml.starts_with("apiVersion: v1\nkind: Pod\nmetadata:\n"),
        "{single_yaml}"
    );
}

#[test]
fn get_jsonpath_renders_templates() {
    let cp = ControlPlane::start();
    success(&cp.skiff_with_stdin(
        &["apply", "-f", "-"],
        &format!("{POD}---\n{}", pod_named("web-2", "web")),
    ));
    assert_eq!(
        success(&cp.skiff(&["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"])),
        "web-1 web-2"
    );
    assert_eq!(
        success(&cp.skiff(&[
            "get",
            "pod",
            "web-1",
            "-o",
            "jsonpath={.spec.containers[0].image}"
        ])),
        "busybox"
    );
}

#[test]
fn namespaces_come_from_flags_manifests_and_the_context() {
    let cp = ControlPlane::start();
    assert_eq!(
        success(&cp.skiff(&["create", "namespace", "team"])),
        "namespace/team created\n"
    );
    assert_eq!(
        success(&cp.skiff_with_stdin(&["apply", "-n", "team", "-f", "-"], POD)),
        "pod/web-1 created\n"
    );

    let empty = cp.skiff(&["get", "pods"]);
    assert_eq!(success(&empty), "");
    assert_eq!(
        text(&empty.stderr),
        "No resources found in default namespace.\n"
    );
    assert_eq!(
        success(&cp.skiff(&["get", "pods", "-n", "team", "-o", "name"])),
        "pod/web-1\n"
    );
    assert_eq!(
        success(&cp.skiff(&["get", "pods", "--namespace=team", "-o", "name"])),
        "pod/web-1\n"
    );

    let all = success(&cp.skiff(&["get", "pods", "-A"]));
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(words(lines[0])[..2], ["NAMESPACE", "NAME"], "{all}");
    assert_eq!(words(lines[1])[..2], ["team", "web-1"], "{all}");
    let cluster_scoped = success(&cp.skiff(&["get", "ns", "-A", "-o", "name"]));
    assert!(
        cluster_scoped.contains("namespace/team\n"),
        "{cluster_scoped}"
    );

    // A manifest naming another namespace than an explicit -n is refused, as kubectl does.
    let manifest = POD.replace("name: web-1\n", "name: web-1\n  namespace: team\n");
    let refused = cp.skiff_with_stdin(&["apply", "-n", "default", "-f", "-"], &manifest);
    assert_eq!(
        failure(&refused),
        "error: the namespace from the provided object \"team\" does not match the namespace \"default\". You must pass '--namespace=team' to perform this operation.\n"
    );
    // Without -n, the manifest's namespace wins.
    assert_eq!(
        success(&cp.skiff_with_stdin(&["apply", "-f", "-"], &manifest)),
        "pod/web-1 unchanged\n"
    );

    // The context's namespace is the default for every command.
    let mut kubeconfig: Value =
        serde_json::from_str(&std::fs::read_to_string(&cp.kubeconfig).unwrap()).unwrap();
    kubeconfig["contexts"][0]["context"]["namespace"] = "team".into();
    std::fs::write(&cp.kubeconfig, kubeconfig.to_string()).unwrap();
    assert_eq!(
        success(&cp.skiff(&["get", "pods", "-o", "name"])),
        "pod/web-1\n"
    );
}

#[test]
fn server_errors_print_like_kubectl() {
    let cp = ControlPlane::start();
    let missing = cp.skiff(&["get", "pods", "nope"]);
    assert_eq!(
        failure(&missing),
        "Error from server (NotFound): pods \"nope\" not found\n"
    );

    success(&cp.skiff(&["create", "namespace", "twice"]));
    assert_eq!(
        failure(&cp.skiff(&["create", "namespace", "twice"])),
        "Error from server (AlreadyExists): namespaces \"twice\" already exists\n"
    );
    success(&cp.skiff_with_stdin(&["create", "-f", "-"], POD));
    assert_eq!(
        failure(&cp.skiff_with_stdin(&["create", "-f", "-"], POD)),
        "Error from server (AlreadyExists): error when creating \"STDIN\": pods \"web-1\" already exists\n"
    );

    // Found objects print, missing ones are reported after them.
    let partly = cp.skiff(&["get", "pods", "web-1", "nope", "-o", "name"]);
    assert_eq!(text(&partly.stdout), "pod/web-1\n");
    assert_eq!(
        failure(&partly),
        "Error from server (NotFound): pods \"nope\" not found\n"
    );

    let invalid =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec: {containers: [{name: c}]}\n";
    let rejected = failure(&cp.skiff_with_stdin(&["apply", "-f", "-"], invalid));
    assert!(
        rejected
            .starts_with("The Pod \"bad\" is invalid: spec.containers[0].image: Required value"),
        "{rejected}"
    );

    assert_eq!(
        failure(&cp.skiff(&["get", "cronjobs"])),
        "error: the server doesn't have a resource type \"cronjobs\"\n"
    );
}

#[test]
fn bad_kubeconfigs_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = skiff(
        &["--kubeconfig", "/nonexistent/config", "get", "pods"],
        None,
    );
    assert_eq!(
        failure(&missing),
        "error: stat /nonexistent/config: no such file or directory\n"
    );

    let malformed = dir.path().join("malformed");
    std::fs::write(&malformed, "clusters: [\n  - {name: x\n").unwrap();
    let output = skiff(
        &["--kubeconfig", malformed.to_str().unwrap(), "get", "pods"],
        None,
    );
    let stderr = failure(&output);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: error loading config file \"{}\": ",
            malformed.display()
        )),
        "{stderr}"
    );

    let refused = dir.path().join("refused");
    std::fs::write(
        &refused,
        "current-context: c\nclusters: [{name: k, cluster: {server: 'http://127.0.0.1:1'}}]\ncontexts: [{name: c, context: {cluster: k}}]\n",
    )
    .unwrap();
    let output = skiff(
        &["--kubeconfig", refused.to_str().unwrap(), "get", "pods"],
        None,
    );
    assert_eq!(
        failure(&output),
        "The connection to the server 127.0.0.1:1 was refused - did you specify the right host or port?\n"
    );
    let output = skiff(
        &[
            "--kubeconfig",
            refused.to_str().unwrap(),
            "--context",
            "nope",
            "get",
            "pods",
        ],
        None,
    );
    assert_eq!(
        failure(&output),
        "error: context was not found for specified context: nope\n"
    );
}

#[test]
fn kubeconfig_env_list_and_server_flag() {
    let cp = ControlPlane::start();
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    // Its server is wrong, its authority and user are the admin's.
    let admin: Value =
        serde_json::from_str(&std::fs::read_to_string(&cp.kubeconfig).unwrap()).unwrap();
    let broken_config = serde_json::json!({
        "current-context": "broken",
        "clusters": [{"name": "b", "cluster": {
            "server": "http://127.0.0.1:1",
            "certificate-authority-data": admin["clusters"][0]["cluster"]["certificate-authority-data"],
        }}],
        "contexts": [{"name": "broken", "context": {"cluster": "b", "user": "u"}}],
        "users": [{"name": "u", "user": admin["users"][0]["user"]}],
    });
    std::fs::write(&broken, broken_config.to_string()).unwrap();
    // KUBECONFIG lists are merged; the first file's current-context wins, missing files are skipped.
    let list = format!(
        "{}:{}:{}",
        dir.path().join("missing").display(),
        cp.kubeconfig.display(),
        broken.display()
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["get", "ns", "default", "-o", "name"])
        .env("KUBECONFIG", &list)
        .output()
        .unwrap();
    assert_eq!(success(&output), "namespace/default\n");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["--context", "broken", "get", "ns", "default", "-o", "name"])
        .env("KUBECONFIG", &list)
        .output()
        .unwrap();
    assert!(failure(&output).contains("127.0.0.1:1 was refused"));
    // --server overrides the context's cluster.
    let output = skiff(
        &[
            "--kubeconfig",
            broken.to_str().unwrap(),
            "--server",
            &cp.api,
            "get",
            "ns",
            "default",
            "-o",
            "name",
        ],
        None,
    );
    assert_eq!(success(&output), "namespace/default\n");
}

#[test]
fn client_side_apply_creates_configures_and_leaves_alone() {
    let cp = ControlPlane::start();
    let created = success(&cp.skiff(&["apply", "-f", "manifests/"]));
    assert_eq!(
        created,
        "namespace/demo created\ndeployment.apps/web created\nservice/web created\npod/clock created\ndeployment.apps/api created\n"
    );
    let live = json(&cp.skiff(&["get", "deploy", "web", "-n", "demo", "-o", "json"]));
    let last_applied =
        live["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .expect("the annotation is kept");
    let last_applied: Value = serde_json::from_str(last_applied).unwrap();
    assert_eq!(last_applied["spec"]["replicas"], 3);
    assert_eq!(last_applied["metadata"]["namespace"], "demo");

    let again = success(&cp.skiff(&["apply", "-f", "manifests/"]));
    assert_eq!(
        again,
        "namespace/demo unchanged\ndeployment.apps/web unchanged\nservice/web unchanged\npod/clock unchanged\ndeployment.apps/api unchanged\n"
    );

    let changed = deployment(5);
    assert_eq!(
        success(&cp.skiff_with_stdin(&["apply", "-f", "-"], &changed)),
        "deployment.apps/web created\n"
    );
    let changed = deployment(2);
    assert_eq!(
        success(&cp.skiff_with_stdin(&["apply", "-f", "-"], &changed)),
        "deployment.apps/web configured\n"
    );
    let live = json(&cp.skiff(&["get", "deploy", "web", "-o", "json"]));
    assert_eq!(live["spec"]["replicas"], 2);
    assert_eq!(
        success(&cp.skiff_with_stdin(&["apply", "-f", "-"], &changed)),
        "deployment.apps/web unchanged\n"
    );
}

#[test]
fn server_side_apply_creates_and_updates() {
    let cp = ControlPlane::start();
    let first = cp.skiff_with_stdin(&["apply", "--server-side", "-f", "-"], &deployment(1));
    assert_eq!(success(&first), "deployment.apps/web serverside-applied\n");
    let second = cp.skiff_with_stdin(&["apply", "--server-side", "-f", "-"], &deployment(4));
    assert_eq!(success(&second), "deployment.apps/web serverside-applied\n");
    let live = json(&cp.skiff(&["get", "deploy", "web", "-o", "json"]));
    assert_eq!(live["spec"]["replicas"], 4);
    assert_eq!(
        failure(&cp.skiff_with_stdin(&["apply", "--force-conflicts", "-f", "-"], &deployment(1))),
        "error: --force-conflicts only works with --server-side\n"
    );
}

#[test]
fn delete_by_name_selector_and_file() {
    let cp = ControlPlane::start();
    let pods = format!(
        "{}---\n{}---\n{}",
        pod_named("a", "one"),
        pod_named("b", "two"),
        pod_named("c", "two")
    );
    success(&cp.skiff_with_stdin(&["apply", "-f", "-"], &pods));

    assert_eq!(
        success(&cp.skiff(&["delete", "pod", "a"])),
        "pod \"a\" deleted\n"
    );
    assert_eq!(
        failure(&cp.skiff(&["get", "pod", "a"])),
        "Error from server (NotFound): pods \"a\" not found\n"
    );
    assert_eq!(
        failure(&cp.skiff(&["delete", "pod", "a"])),
        "Error from server (NotFound): pods \"a\" not found\n"
    );
    assert_eq!(
        success(&cp.skiff(&["delete", "pod", "a", "--ignore-not-found"])),
        ""
    );

    assert_eq!(
        success(&cp.skiff(&["delete", "pods", "-l", "app=two"])),
        "pod \"b\" deleted\npod \"c\" deleted\n"
    );
    assert_eq!(
        text(&cp.skiff(&["delete", "pods", "-l", "app=two"]).stderr),
        "No resources found\n"
    );
    assert_eq!(
        failure(&cp.skiff(&["delete", "pods"])),
        "error: resource(s) were provided, but no name was specified\n"
    );

    success(&cp.skiff(&["apply", "-f", "manifests/"]));
    let deleted = success(&cp.skiff(&[
        "delete",
        "-f",
        "manifests/30-api-deployment.yaml",
        "-f",
        "manifests/20-multi-container-pod.yaml",
    ]));
    assert_eq!(
        deleted,
        "deployment.apps \"api\" deleted\npod \"clock\" deleted\n"
    );
    let left = success(&cp.skiff(&["get", "deploy,po", "-n", "demo", "-o", "name"]));
    // The web deployment stays, with the pods its ReplicaSet made; the rest is gone.
    assert!(left.starts_with("deployment.apps/web\n"), "{left}");
    assert!(
        !left.contains("deployment.apps/api") && !left.contains("pod/clock"),
        "{left}"
    );
    let all = success(&cp.skiff(&["delete", "deploy", "--all", "-n", "demo", "--wait=false"]));
    assert_eq!(all, "deployment.apps \"web\" deleted\n");
}

#[test]
fn scale_patches_the_scale_subresource() {
    let cp = ControlPlane::start();
    success(&cp.skiff_with_stdin(&["apply", "-f", "-"], &deployment(1)));
    assert_eq!(
        success(&cp.skiff(&["scale", "deploy/web", "--replicas=5"])),
        "deployment.apps/web scaled\n"
    );
    let live = json(&cp.skiff(&["get", "deployment", "web", "-o", "json"]));
    assert_eq!(live["spec"]["replicas"], 5);
    assert_eq!(
        failure(&cp.skiff(&["scale", "deployment", "nope", "--replicas=1"])),
        "Error from server (NotFound): deployments.apps \"nope\" not found\n"
    );
}

#[test]
fn get_watch_prints_rows_as_objects_change() {
    let cp = ControlPlane::start();
    success(&cp.skiff_with_stdin(&["apply", "-f", "-"], POD));
    let mut child = cp.skiff_command(&["get", "pods", "-w"]).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("a watch line")
    };
    assert_eq!(words(&next())[..3], ["NAME", "READY", "STATUS"]);
    assert_eq!(words(&next())[0], "web-1");
    // The scheduler updates web-1's status (no node fits): rows for it may come first.
    let next_about = |name: &str| loop {
        let line = next();
        if words(&line)[0] == name {
            return line;
        }
        assert_eq!(words(&line)[0], "web-1", "unexpected row {line:?}");
    };
    success(&cp.skiff_with_stdin(&["apply", "-f", "-"], &pod_named("web-2", "web")));
    next_about("web-2");
    success(&cp.skiff(&["delete", "pod", "web-2", "--wait=false"]));
    next_about("web-2");
    let _ = child.kill();
    let _ = child.wait();

    // The server ends the watch at the request timeout; like kubectl, that is success.
    let ended = success(&cp.skiff(&["get", "pods", "-w", "--request-timeout=1s", "-o", "name"]));
    assert_eq!(ended, "pod/web-1\n");
}

#[test]
fn rollout_status_waits_for_the_controller() {
    let cp = ControlPlane::start();
    success(&cp.skiff_with_stdin(&["apply", "-f", "-"], &deployment(1)));
    // Nothing runs the pods here, so the rollout cannot finish: the command reports
    // what it waits for and gives up at the timeout, as kubectl does.
    let output = cp.skiff(&["rollout", "status", "deployment/web", "--timeout=2s"]);
    assert_eq!(
        failure(&output),
        "error: timed out waiting for the condition\n"
    );
    let stdout = text(&output.stdout);
    assert!(stdout.starts_with("Waiting for deployment "), "{stdout}");
    assert_eq!(
        failure(&cp.skiff(&["rollout", "status", "deploy", "nope"])),
        "Error from server (NotFound): deployments.apps \"nope\" not found\n"
    );
}

/// Plays the kubelet (no node agent runs here): marks every live pod of the default
/// namespace Running and Ready through `/status`.
fn mark_pods_ready(cp: &ControlPlane) {
    let pods = json(&cp.skiff(&["get", "pods", "-o", "json"]));
    for pod in pods["items"].as_array().into_iter().flatten() {
        if pod["metadata"].get("deletionTimestamp").is_some() {
            continue;
        }
        let name = pod["metadata"]["name"].as_str().unwrap();
        let (code, body) = cp.http(
            "PATCH",
            &format!("/api/v1/namespaces/default/pods/{name}/status"),
            "application/merge-patch+json",
            r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
        );
        // A pod deleted meanwhile is fine.
        assert!(code == 200 || code == 404, "{code} {body}");
    }
}

/// Marks pods ready until `rollout status` says the rollout of `web` is done.
#[track_caller]
fn roll_out(cp: &ControlPlane) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        mark_pods_ready(cp);
        let output = cp.skiff(&["rollout", "status", "deployment/web", "--timeout=1s"]);
        if output.status.success() {
            return text(&output.stdout);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never rolled out: {}",
            text(&output.stdout)
        );
    }
}

#[test]
fn rollout_status_follows_the_controllers_until_rolled_out() {
    let cp = ControlPlane::start();
    success(&cp.skiff_with_stdin(&["apply", "-f", "-"], &deployment(2)));
    let mut child = cp
        .skiff_command(&["rollout", "status", "deploy/web"])
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a status line");
    assert!(first.starts_with("Waiting for deployment"), "{first}");
    // The controllers create the ReplicaSet and its pods; once the pods are Ready,
    // the deployment's status says so and the watch ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let last = loop {
        mark_pods_ready(&cp);
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.starts_with("Waiting for deployment") => {}
            Ok(line) => break line,
            Err(_) => assert!(std::time::Instant::now() < deadline, "no verdict"),
        }
    };
    assert_eq!(last, "deployment \"web\" successfully rolled out");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn rollout_history_and_undo_work_like_kubectl() {
    let cp = ControlPlane::start();
    success(&cp.skiff_with_stdin(&["apply", "-f", "-"], &deployment(1)));
    roll_out(&cp);
    let updated = deployment(1).replace("busybox:1", "busybox:2");
    success(&cp.skiff_with_stdin(&["apply", "-f", "-"], &updated));
    roll_out(&cp);
    assert_eq!(
        success(&cp.skiff(&["rollout", "history", "deployment/web"])),
        "deployment.apps/web \nREVISION  CHANGE-CAUSE\n1         <none>\n2         <none>\n\n"
    );
    let revision = success(&cp.skiff(&["rollout", "history", "deploy/web", "--revision=1"]));
    assert!(
        revision.starts_with(
            "deployment.apps/web with revision #1\nPod Template:\n  Labels:\tapp=web\n"
        ),
        "{revision}"
    );
    assert!(revision.contains("busybox:1"), "{revision}");
    assert_eq!(
        failure(&cp.skiff(&["rollout", "history", "deploy/web", "--revision=9"])),
        "error: unable to find the specified revision\n"
    );
    assert_eq!(
        success(&cp.skiff(&["rollout", "undo", "deployment/web"])),
        "deployment.apps/web rolled back\n"
    );
    roll_out(&cp);
    let image = success(&cp.skiff(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]));
    assert_eq!(image, "busybox:1");
    // Revision 1 became revision 3.
    let history = success(&cp.skiff(&["rollout", "history", "deployment/web"]));
    assert_eq!(
        history,
        "deployment.apps/web \nREVISION  CHANGE-CAUSE\n2         <none>\n3         <none>\n\n"
    );
    assert_eq!(
        success(&cp.skiff(&["rollout", "undo", "deployment/web", "--to-revision=3"])),
        "deployment.apps/web skipped rollback (current template already matches revision 3)\n"
    );
    assert_eq!(
        failure(&cp.skiff(&["rollout", "undo", "deployment/web", "--to-revision=7"])),
        "error: unable to find specified revision 7 in history\n"
    );
    assert_eq!(
        failure(&cp.skiff(&["rollout", "undo", "rs/web"])),
        "error: no rollbacker has been implemented for \"ReplicaSet.apps\"\n"
    );
}

#[test]
fn api_resources_lists_discovery() {
    let cp = ControlPlane::start();
    let output = success(&cp.skiff(&["api-resources"]));
    let lines: Vec<Vec<&str>> = output.lines().map(words).collect();
    assert_eq!(
        lines[0],
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    );
    assert!(
        lines.contains(&vec!["pods", "po", "v1", "true", "Pod"]),
        "{output}"
    );
    assert!(
        lines.contains(&vec!["namespaces", "ns", "v1", "false", "Namespace"]),
        "{output}"
    );
    assert!(
        lines.contains(&vec![
            "deployments",
            "deploy",
            "apps/v1",
            "true",
            "Deployment"
        ]),
        "{output}"
    );
    let core_before_apps = output.find("pods").unwrap() < output.find("deployments").unwrap();
    assert!(core_before_apps, "{output}");
    let names = success(&cp.skiff(&["api-resources", "-o", "name"]));
    assert!(names.lines().any(|l| l == "deployments.apps"), "{names}");
}

#[test]
fn describe_shows_the_object() {
    let cp = ControlPlane::start();
    success(&cp.skiff_with_stdin(&["apply", "-f", "-"], POD));
    let described = success(&cp.skiff(&["describe", "pod", "web-1"]));
    assert!(described.starts_with("Name:"), "{described}");
    assert!(
        described.lines().next().unwrap().ends_with("web-1"),
        "{described}"
    );
    assert!(described.contains("Events:"), "{described}");
    assert_eq!(
        failure(&cp.skiff(&["describe", "pod", "nope"])),
        "Error from server (NotFound): pods \"nope\" not found\n"
    );
}

#[test]
fn logs_of_a_missing_pod_fail_like_kubectl() {
    let cp = ControlPlane::start();
    assert_eq!(
        failure(&cp.skiff(&["logs", "nope"])),
        "Error from server (NotFound): pods \"nope\" not found\n"
    );
}

/// A pod bound to `node` with `metadata` merged in (owner references, annotations).
fn bound_pod(name: &str, node: &str, metadata: &str, volumes: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}{metadata}}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, image: busybox}}]\n{volumes}"
    )
}

/// An ownerReference to a controller of `kind` (Skiff serves neither Jobs nor
/// DaemonSets, so its garbage collector leaves such pods alone).
fn controlled_by(api_version: &str, kind: &str) -> String {
    format!(
        ", ownerReferences: [{{apiVersion: {api_version}, kind: {kind}, name: x, uid: 6f1c0d3e-0000-4000-8000-000000000001, controller: true}}]"
    )
}

#[test]
fn cordon_uncordon_and_drain_a_node() {
    let cp = ControlPlane::start();
    for node in ["n1", "n2"] {
        let (code, body) = cp.http(
            "POST",
            "/api/v1/nodes",
            "application/json",
            &format!(r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{node}","labels":{{"node-role.kubernetes.io/worker":""}}}}}}"#),
        );
        assert_eq!(code, 201, "{body}");
    }
    assert_eq!(success(&cp.skiff(&["cordon", "n1"])), "node/n1 cordoned\n");
    assert_eq!(
        success(&cp.skiff(&["cordon", "n1"])),
        "node/n1 already cordoned\n"
    );
    let nodes = success(&cp.skiff(&["get", "nodes"]));
    let lines: Vec<&str> = nodes.lines().collect();
    assert_eq!(
        words(lines[0]),
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    );
    assert_eq!(
        words(lines[1])[..3],
        ["n1", "Unknown,SchedulingDisabled", "worker"]
    );
    assert_eq!(words(lines[2])[..3], ["n2", "Unknown", "worker"]);
    assert_eq!(
        success(&cp.skiff(&["uncordon", "n1"])),
        "node/n1 uncordoned\n"
    );
    assert_eq!(
        success(&cp.skiff(&["uncordon", "n1"])),
        "node/n1 already uncordoned\n"
    );
    let live = json(&cp.skiff(&["get", "node", "n1", "-o", "json"]));
    assert_eq!(live["spec"].get("unschedulable"), None, "{live}");
    assert_eq!(
        failure(&cp.skiff(&["cordon", "nope"])),
        "Error from server (NotFound): nodes \"nope\" not found\n"
    );

    let scratch = "  volumes: [{name: tmp, emptyDir: {}}]\n";
    let mirror = ", annotations: {kubernetes.io/config.mirror: abc}";
    let pods = [
        bound_pod("bare", "n1", "", ""),
        bound_pod("job-1", "n1", &controlled_by("batch/v1", "Job"), scratch),
        bound_pod("agent", "n1", &controlled_by("apps/v1", "DaemonSet"), ""),
        bound_pod("static", "n1", mirror, ""),
        bound_pod("elsewhere", "n2", "", ""),
    ]
    .join("---\n");
    success(&cp.skiff_with_stdin(&["apply", "-f", "-"], &pods));

    // Refused: the node stays cordoned, nothing is evicted.
    let output = cp.skiff(&["drain", "n1"]);
    assert_eq!(
        failure(&output),
        "error: unable to drain node \"n1\" due to error:[cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): default/agent, cannot delete Pods declare no controller (use --force to override): default/bare, cannot delete Pods with local storage (use --delete-emptydir-data to override): default/job-1]\n"
    );
    assert_eq!(text(&output.stdout), "node/n1 cordoned\n");

    let output = cp.skiff(&[
        "drain",
        "n1",
        "--force",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--grace-period=0",
    ]);
    assert_eq!(
        success(&output),
        "node/n1 already cordoned\nevicting pod default/bare\nevicting pod default/job-1\npod/bare evicted\npod/job-1 evicted\nnode/n1 drained\n"
    );
    assert_eq!(
        text(&output.stderr),
        "Warning: ignoring DaemonSet-managed Pods: default/agent; deleting Pods that declare no controller: default/bare\n"
    );
    let left = success(&cp.skiff(&["get", "pods", "-o", "name"]));
    assert_eq!(left, "pod/agent\npod/elsewhere\npod/static\n");

    // Without a grace period the pod terminates gracefully: drain waits for it (no
    // agent runs here, so it gives up at the timeout) …
    success(&cp.skiff_with_stdin(
        &["apply", "-f", "-"],
        &bound_pod("slow", "n1", &controlled_by("batch/v1", "Job"), ""),
    ));
    let output = cp.skiff(&["drain", "n1", "--ignore-daemonsets", "--timeout=2s"]);
    assert_eq!(
        failure(&output),
        "Warning: ignoring DaemonSet-managed Pods: default/agent\nerror: drain did not complete within 2s (still terminating: default/slow)\n"
    );
    assert_eq!(
        text(&output.stdout),
        "node/n1 already cordoned\nevicting pod default/slow\n"
    );
    let slow = json(&cp.skiff(&["get", "pod", "slow", "-o", "json"]));
    assert!(slow["metadata"]["deletionTimestamp"].is_string(), "{slow}");
    let conditions = slow["status"]["conditions"].as_array().unwrap();
    assert!(
        conditions.iter().any(|c| c["type"] == "DisruptionTarget"),
        "{slow}"
    );
    // … until the node confirms the deletion, as an agent does.
    let drain = cp
        .skiff_command(&["drain", "n1", "--ignore-daemonsets"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (code, body) = cp.http(
        "DELETE",
        "/api/v1/namespaces/default/pods/slow",
        "application/json",
        r#"{"gracePeriodSeconds":0}"#,
    );
    assert_eq!(code, 200, "{body}");
    let output = drain.wait_with_output().unwrap();
    assert_eq!(
        success(&output),
        "node/n1 already cordoned\nevicting pod default/slow\npod/slow evicted\nnode/n1 drained\n"
    );
}
