//! `kubectl exec` end to end: the real kubectl opens a WebSocket (v5.channel.k8s.io)
//! to the control plane (in the test fabric's network namespace, reached through a
//! forwarded port), which relays it to the `Exec` call of the node agent that runs the
//! pod (in its node's namespace).

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_e2e::agent::NodeAgent;
use skiff_e2e::netns::Fabric;
use skiff_e2e::registry::{ImageSpec, TestRegistry};
use tokio::io::AsyncWriteExt;

use crate::harness::{self, ControlPlane, fails, ok, stderr, stdout, workspace};

/// A control plane, one agent, and a registry holding `skiff/busybox:1`, on a test
/// fabric: the agent runs in its node's network namespace.
///
/// Fields drop in order: the agent (reset inside its namespace), the control plane,
/// the registry (kept alive: the agent pulls from it), the fabric.
struct Cluster {
    agent: NodeAgent,
    plane: ControlPlane,
    _registry: TestRegistry,
    _fabric: Fabric,
    busybox: String,
}

impl Cluster {
    async fn start(node: &str) -> Self {
        let harness::Cluster {
            mut agents,
            plane,
            registry,
            fabric,
        } = harness::Cluster::start(&[node], &[]).await;
        let busybox = registry
            .push_busybox_image("skiff/busybox:1", &ImageSpec::default())
            .unwrap();
        Self {
            agent: agents.pop().unwrap(),
            plane,
            _registry: registry,
            _fabric: fabric,
            busybox,
        }
    }

    /// Applies a pod bound to the agent's node and waits until it runs.
    async fn running_pod(&self, name: &str, mut spec: Value) {
        spec["nodeName"] = Value::String(self.agent.name.clone());
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        });
        let file = self.plane.write(&format!("{name}.json"), &pod.to_string());
        ok(&self.plane.kubectl(&["apply", "-f", &file]));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let pod: Value = serde_json::from_str(&ok(&self
                .plane
                .kubectl(&["get", "pod", name, "-o", "json"])))
            .unwrap();
            if pod["status"]["phase"] == "Running" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pod {name} not Running: {}",
                pod["status"]
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `kubectl <args>` with `stdin` (the harness's `run` appends `--cache-dir` last,
    /// which would land in the command after `--`); killed after 60 s.
    async fn kubectl(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = tokio::process::Command::new("kubectl")
            .arg("--cache-dir")
            .arg(self.plane.scratch.path().join("kube-cache"))
            .args(args)
            .env("KUBECONFIG", &self.plane.kubeconfig)
            .env("HOME", self.plane.scratch.path())
            .current_dir(workspace())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish in 60 s"))
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_exec_runs_commands_with_stdio_and_exit_codes() {
    let cluster = Cluster::start("node-exec").await;
    cluster
        .running_pod(
            "shell",
            serde_json::json!({
                "terminationGracePeriodSeconds": 1,
                "initContainers": [{"name": "setup", "image": cluster.busybox,
                    "command": ["true"]}],
                "containers": [{"name": "main", "image": cluster.busybox,
                    "command": ["sleep", "3600"]}],
            }),
        )
        .await;

    // The hostname is the pod's name.
    let output = cluster
        .kubectl(&["exec", "shell", "--", "hostname"], "")
        .await;
    assert_eq!(ok(&output), "shell\n");

    // stdout and stderr stay apart; the exit code comes through.
    let output = cluster
        .kubectl(
            &[
                "exec",
                "shell",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 7",
            ],
            "",
        )
        .await;
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
    assert_eq!(stdout(&output), "out\n");
    assert!(stderr(&output).contains("err\n"), "{}", stderr(&output));

    // Stdin reaches the command and ends (v5's close signal), so `cat` ends.
    let output = cluster
        .kubectl(&["exec", "-i", "shell", "--", "cat"], "hello\nworld\n")
        .await;
    assert_eq!(ok(&output), "hello\nworld\n");
    // A larger stdin passes through whole while the output flows back.
    let big: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let output = cluster
        .kubectl(
            &[
                "exec", "-i", "shell", "-c", "main", "--", "busybox", "wc", "-l",
            ],
            &big,
        )
        .await;
    assert_eq!(ok(&output).trim(), "20000");

    // An unknown container is named in the error (kubectl's SPDY fallback gets the
    // same 400 as the WebSocket did).
    let output = cluster
        .kubectl(&["exec", "shell", "-c", "nope", "--", "true"], "")
        .await;
    let error = fails(&output);
    assert!(
        error.contains("container nope is not valid for pod shell"),
        "{error}"
    );

    // A container that has exited: the agent's refusal comes on the error channel.
    let output = cluster
        .kubectl(&["exec", "shell", "-c", "setup", "--", "true"], "")
        .await;
    let error = fails(&output);
    assert!(
        error.contains("cannot run a command in container setup") && error.contains("not running"),
        "{error}"
    );

    // A pod that does not exist.
    let output = cluster.kubectl(&["exec", "ghost", "--", "true"], "").await;
    let error = fails(&output);
    assert!(
        error.contains("NotFound") && error.contains("pods \"ghost\" not found"),
        "{error}"
    );
    let (code, status) = cluster
        .plane
        .http(
            "GET",
            "/api/v1/namespaces/default/pods/ghost/exec?command=true&stdout=true",
            "",
            b"",
        )
        .await;
    assert_eq!((code, &status["reason"]), (404, &Value::from("NotFound")));

    // Without a WebSocket upgrade (SPDY, plain requests): a 400 that says why.
    let (code, status) = cluster
        .plane
        .http(
            "POST",
            "/api/v1/namespaces/default/pods/shell/exec?command=true&stdout=true",
            "",
            b"",
        )
        .await;
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("Upgrade request required"),
        "{status}"
    );
    let (code, status) = cluster
        .plane
        .http(
            "POST",
            "/api/v1/namespaces/default/pods/shell/exec?stdout=true",
            "",
            b"",
        )
        .await;
    assert_eq!(
        (code, status["message"].as_str()),
        (
            400,
            Some("you must specify at least one command for the container")
        )
    );

    ok(&cluster
        .plane
        .kubectl(&["delete", "pod", "shell", "--wait=true", "--timeout=60s"]));
}
