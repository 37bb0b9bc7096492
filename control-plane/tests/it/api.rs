//! The API server driven by the real `kubectl` (`/usr/bin/kubectl`, v1.32).

use std::process::{Command, Output};

use crate::cluster::Member;

/// Runs kubectl against `member`'s API (HTTPS, as the admin of its
/// `DATA/admin.kubeconfig`) with a private cache.
fn kubectl(member: &Member, cache: &tempfile::TempDir, args: &[&str]) -> Output {
    kubectl_command(member, cache)
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("kubectl is installed at /usr/bin/kubectl")
}

/// `kubectl --kubeconfig DATA/admin.kubeconfig --server API --cache-dir CACHE`.
fn kubectl_command(member: &Member, cache: &tempfile::TempDir) -> Command {
    let mut command = Command::new("kubectl");
    command
        .arg("--kubeconfig")
        .arg(member.kubeconfig())
        .args(["--server", &member.api, "--cache-dir"])
        .arg(cache.path())
        .env_remove("KUBECONFIG");
    command
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_lists_reads_and_deletes_objects() {
    let member = Member::start(None).await;
    let cache = tempfile::tempdir().unwrap();

    let version = kubectl(&member, &cache, &["version", "-o", "json"]);
    assert!(version.status.success(), "{}", stderr(&version));
    let version: serde_json::Value = serde_json::from_slice(&version.stdout).unwrap();
    assert_eq!(version["serverVersion"]["minor"], "32");

    let namespaces = kubectl(&member, &cache, &["get", "namespaces", "-o", "name"]);
    assert_eq!(
        stdout(&namespaces),
        "namespace/default\nnamespace/kube-node-lease\nnamespace/kube-public\nnamespace/kube-system\n",
        "{}",
        stderr(&namespaces)
    );

    let created = kubectl(
        &member,
        &cache,
        &["create", "-f", "manifests/", "--validate=false"],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    assert_eq!(
        stdout(&created),
        "namespace/demo created\ndeployment.apps/web created\nservice/web created\npod/clock created\ndeployment.apps/api created\n"
    );

    let deployments = kubectl(&member, &cache, &["get", "deploy", "-A", "-o", "name"]);
    assert_eq!(
        stdout(&deployments),
        "deployment.apps/api\ndeployment.apps/web\n",
        "{}",
        stderr(&deployments)
    );
    let pod = kubectl(
        &member,
        &cache,
        &["get", "pod", "clock", "-n", "demo", "-o", "json"],
    );
    let pod: serde_json::Value = serde_json::from_slice(&pod.stdout).unwrap();
    assert_eq!(
        pod["spec"]["restartPolicy"], "Always",
        "defaults were applied"
    );
    assert!(
        pod["metadata"]["uid"]
            .as_str()
            .is_some_and(|uid| uid.len() == 36)
    );
    let labelled = kubectl(
        &member,
        &cache,
        &[
            "get",
            "deploy",
            "-n",
            "demo",
            "-l",
            "app in (web)",
            "-o",
            "name",
        ],
    );
    assert_eq!(
        stdout(&labelled),
        "deployment.apps/web\n",
        "{}",
        stderr(&labelled)
    );

    let again = kubectl(
        &member,
        &cache,
        &[
            "create",
            "-f",
            "manifests/00-namespace.yaml",
            "--validate=false",
        ],
    );
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("Error from server (AlreadyExists)"),
        "{}",
        stderr(&again)
    );
    let missing = kubectl(&member, &cache, &["get", "pod", "nope", "-n", "demo"]);
    assert_eq!(
        stderr(&missing).trim(),
        "Error from server (NotFound): pods \"nope\" not found"
    );
    let bad_selector = kubectl(&member, &cache, &["get", "pods", "-A", "-l", "a in (b"]);
    assert!(!bad_selector.status.success());

    let deleted = kubectl(&member, &cache, &["delete", "pod", "clock", "-n", "demo"]);
    assert_eq!(
        stdout(&deleted),
        "pod \"clock\" deleted\n",
        "{}",
        stderr(&deleted)
    );
    // The deployments' pods (made by the controllers) remain; the clock pod is gone.
    let pods = kubectl(
        &member,
        &cache,
        &["get", "pods", "-n", "demo", "-o", "name"],
    );
    assert!(!stdout(&pods).contains("pod/clock\n"), "{}", stdout(&pods));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_kubernetes_statuses() {
    let member = Member::start(None).await;
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    };

    // Strict field validation over the wire, with the path.
    let typo = write(
        "typo.json",
        r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"replicaz":3,"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}"#,
    );
    let output = kubectl(
        &member,
        &cache,
        &[
            "create",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments",
            "-f",
            &typo,
        ],
    );
    assert!(!output.status.success());
    assert!(stderr(&output).contains("Error from server (BadRequest): Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.replicaz\""), "{}", stderr(&output));

    // Validation errors are 422 Invalid with the field path.
    let invalid = write(
        "invalid.json",
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"Bad"},"spec":{"containers":[{"name":"c"}]}}"#,
    );
    let output = kubectl(
        &member,
        &cache,
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods",
            "-f",
            &invalid,
        ],
    );
    assert!(
        stderr(&output).contains("spec.containers[0].image: Required value"),
        "{}",
        stderr(&output)
    );

    // Objects go only into namespaces that exist.
    let pod = write(
        "pod.json",
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#,
    );
    let output = kubectl(
        &member,
        &cache,
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/nowhere/pods",
            "-f",
            &pod,
        ],
    );
    assert!(
        stderr(&output).contains("Error from server (NotFound): namespaces \"nowhere\" not found"),
        "{}",
        stderr(&output)
    );

    // A YAML bomb is refused, and the server keeps serving.
    let mut bomb = String::from(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bomb}\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for level in 1..10u8 {
        let refs = vec![format!("*{}", char::from(b'a' + level - 1)); 9].join(",");
        bomb.push_str(&format!("{0}: &{0} [{refs}]\n", char::from(b'a' + level)));
    }
    let bomb_path = write("bomb.yaml", &bomb);
    let output = kubectl_command(&member, &cache)
        .args([
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods",
            "-f",
            &bomb_path,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let healthz = kubectl(&member, &cache, &["get", "--raw", "/healthz"]);
    assert_eq!(stdout(&healthz), "ok");
    let unknown = kubectl(
        &member,
        &cache,
        &["get", "--raw", "/apis/batch/v1/namespaces/default/jobs"],
    );
    assert!(
        stderr(&unknown).contains("NotFound")
            || stderr(&unknown).contains("the server could not find the requested resource"),
        "{}",
        stderr(&unknown)
    );
}

/// `kubectl cordon`, `drain` (which finds `pods/eviction` in discovery and POSTs a
/// protobuf policy/v1 Eviction) and `uncordon` against the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drains_a_node_through_evictions() {
    let member = Member::start(None).await;
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    };
    let node = write(
        "node.json",
        r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"}}"#,
    );
    let output = kubectl(
        &member,
        &cache,
        &["create", "--raw", "/api/v1/nodes", "-f", &node],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    // A pod whose controller Skiff does not serve (the garbage collector leaves it).
    let pod = write(
        "pod.json",
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","ownerReferences":[{"apiVersion":"batch/v1","kind":"Job","name":"j","uid":"6f1c0d3e-0000-4000-8000-000000000001","controller":true}]},"spec":{"nodeName":"n1","containers":[{"name":"c","image":"i"}]}}"#,
    );
    let output = kubectl(
        &member,
        &cache,
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods",
            "-f",
            &pod,
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));

    let output = kubectl(&member, &cache, &["drain", "n1", "--grace-period=0"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "node/n1 cordoned\nevicting pod default/p\npod/p evicted\nnode/n1 drained\n",
        "{}",
        stderr(&output)
    );
    let output = kubectl(&member, &cache, &["get", "pods", "-o", "name"]);
    assert_eq!(stdout(&output), "", "{}", stderr(&output));
    let output = kubectl(&member, &cache, &["uncordon", "n1"]);
    assert_eq!(
        stdout(&output),
        "node/n1 uncordoned\n",
        "{}",
        stderr(&output)
    );
}
