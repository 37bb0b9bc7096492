//! The node agent end to end: a real control plane, a real `skiff-node-agent` in its
//! node's network namespace, a real local registry serving images built from busybox,
//! and pods bound to the node run as containers in kernel namespaces and cgroups.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_e2e::agent::NodeAgent;
use skiff_e2e::netns::Fabric;
use skiff_e2e::registry::{ImageSpec, TestRegistry};
use skiff_proto::node::agent_client::AgentClient;
use skiff_proto::node::{ExecInput, ExecStart, exec_input, exec_output};

use crate::harness::{self, ControlPlane, ok, stdout};

/// A control plane, one agent and a registry holding `skiff/httpd:1` (busybox httpd
/// serving /www on port 80) and `skiff/busybox:1` (a shell), on a test fabric: the
/// agent runs in its node's network namespace.
///
/// Fields drop in order: the agent (reset inside its namespace), the control plane,
/// the registry, the fabric.
struct Cluster {
    agent: NodeAgent,
    plane: ControlPlane,
    registry: TestRegistry,
    _fabric: Fabric,
    httpd: String,
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
        let httpd = registry
            .push_busybox_image(
                "skiff/httpd:1",
                &ImageSpec {
                    entrypoint: vec!["/bin/httpd".into()],
                    cmd: vec![
                        "-f".into(),
                        "-vv".into(),
                        "-p".into(),
                        "80".into(),
                        "-h".into(),
                        "/www".into(),
                    ],
                    ..ImageSpec::default()
                },
            )
            .unwrap();
        let busybox = registry
            .push_busybox_image("skiff/busybox:1", &ImageSpec::default())
            .unwrap();
        Self {
            agent: agents.pop().unwrap(),
            plane,
            registry,
            _fabric: fabric,
            httpd,
            busybox,
        }
    }

    /// Applies a pod bound to the agent's node.
    fn pod(&self, name: &str, spec: Value) -> Value {
        let mut spec = spec;
        spec["nodeName"] = Value::String(self.agent.name.clone());
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        });
        let file = self.plane.write(&format!("{name}.json"), &pod.to_string());
        ok(&self.plane.kubectl(&["apply", "-f", &file]));
        self.get(name)
    }

    fn get(&self, name: &str) -> Value {
        serde_json::from_str(&ok(&self
            .plane
            .kubectl(&["get", "pod", name, "-o", "json"])))
        .unwrap()
    }

    /// Polls the pod until `check` holds (up to `limit`); returns it.
    async fn wait_for(
        &self,
        name: &str,
        limit: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let pod = self.get(name);
            if check(&pod) {
                return pod;
            }
            assert!(
                Instant::now() < deadline,
                "pod {name} not {what} after {limit:?}: {}",
                serde_json::to_string_pretty(&pod["status"]).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_running(&self, name: &str) -> Value {
        self.wait_for(name, Duration::from_secs(60), "Running and Ready", |pod| {
            pod["status"]["phase"] == "Running"
                && pod["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
        .await
    }

    /// The agent's gRPC address inside its node's namespace (the Node's InternalIP
    /// and daemon endpoint port).
    fn agent_address(&self) -> SocketAddr {
        let node: Value = serde_json::from_str(&ok(&self.plane.kubectl(&[
            "get",
            "node",
            &self.agent.name,
            "-o",
            "json",
        ])))
        .unwrap();
        let address = node["status"]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["type"] == "InternalIP")
            .unwrap()["address"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(address, self.agent.node.ip.to_string(), "{node}");
        let port = &node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"];
        format!("{address}:{port}").parse().unwrap()
    }

    /// Runs `command` in a container through the agent's Exec service, reached from
    /// the host over TLS through a port forwarded into the node's namespace.
    async fn exec(&self, pod: &Value, container: &str, command: &[&str]) -> (i32, String) {
        let forwarder = self.agent.netns().forward(self.agent_address()).unwrap();
        // The agent serves TLS to system:masters only; the admin is one.
        let channel =
            tonic::transport::Endpoint::from_shared(format!("https://{}", forwarder.address()))
                .unwrap()
                .tls_config(self.plane.agent_tls(&self.agent.name))
                .unwrap()
                .connect()
                .await
                .unwrap();
        let mut client = AgentClient::new(channel);
        let start = ExecInput {
            input: Some(exec_input::Input::Start(ExecStart {
                pod_uid: pod["metadata"]["uid"].as_str().unwrap().to_owned(),
                container: container.to_owned(),
                command: command.iter().map(|s| (*s).to_owned()).collect(),
                stdin: false,
            })),
        };
        let mut outputs = client
            .exec(tokio_stream::iter(vec![start]))
            .await
            .unwrap()
            .into_inner();
        let mut text = String::new();
        while let Some(output) = outputs.message().await.unwrap() {
            match output.output {
                Some(exec_output::Output::Stdout(b) | exec_output::Output::Stderr(b)) => {
                    text.push_str(&String::from_utf8_lossy(&b));
                }
                Some(exec_output::Output::ExitCode(code)) => return (code, text),
                None => {}
            }
        }
        panic!("exec ended without an exit code: {text}");
    }

    /// The pid of a container's process, from its supervisor's state file.
    fn container_pid(&self, pod: &Value, container: &str) -> u32 {
        let status = pod["status"]["containerStatuses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == container)
            .unwrap();
        let id = status["containerID"]
            .as_str()
            .unwrap()
            .trim_start_matches("skiff://");
        let state: Value = serde_json::from_slice(
            &std::fs::read(self.agent.container_dir(id).join("state.json")).unwrap(),
        )
        .unwrap();
        u32::try_from(state["pid"].as_u64().unwrap()).unwrap()
    }

    /// Deletes pods and waits until they are gone from the API.
    fn delete(&self, names: &[&str]) {
        let mut args = vec!["delete", "pod", "--wait=true", "--timeout=60s"];
        args.extend_from_slice(names);
        ok(&self.plane.kubectl(&args));
    }

    /// Asserts the agent left nothing of its pods behind: no mounts under its data
    /// dir, no pod cgroups, no sandboxes, no container processes.
    fn assert_clean(&self, uids: &[String], pids: &[u32]) {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let data = self.agent.data_dir.display().to_string();
        let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(&data)).collect();
        assert!(leaked.is_empty(), "mounts left behind: {leaked:#?}");
        for uid in uids {
            for controller in ["memory", "cpu", "pids"] {
                let dir = format!("/sys/fs/cgroup/{controller}/skiff/pod{uid}");
                assert!(
                    !std::path::Path::new(&dir).exists(),
                    "cgroup left behind: {dir}"
                );
            }
            let pod_dir = self.agent.data_dir.join("pods").join(uid);
            assert!(
                !pod_dir.exists(),
                "pod dir left behind: {}",
                pod_dir.display()
            );
        }
        for pid in pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "container process {pid} still runs"
            );
        }
        let containers = std::fs::read_dir(self.agent.data_dir.join("containers"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(containers, 0, "container dirs left behind");
    }
}

fn uid(pod: &Value) -> String {
    pod["metadata"]["uid"].as_str().unwrap().to_owned()
}

fn container_status<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_run_serve_http_log_exec_and_leave_nothing_behind() {
    let cluster = Cluster::start("node-web").await;
    // The node registered with its capacity and is Ready.
    let nodes = ok(&cluster.plane.kubectl(&["get", "nodes"]));
    assert!(
        nodes.contains("node-web") && nodes.contains("Ready"),
        "{nodes}"
    );

    cluster.pod(
        "web",
        serde_json::json!({
            // httpd as its pid namespace's init ignores SIGTERM (no handler): the
            // grace period runs out and SIGKILL ends it, as under Kubernetes.
            "terminationGracePeriodSeconds": 3,
            "containers": [{"name": "httpd", "image": cluster.httpd}],
        }),
    );
    let port = skiff_e2e::process::free_port().unwrap();
    cluster.pod(
        "hostweb",
        serde_json::json!({
            "hostNetwork": true,
            "terminationGracePeriodSeconds": 3,
            "containers": [{"name": "httpd", "image": cluster.httpd,
                "args": ["-f", "-p", format!("127.0.0.1:{port}"), "-h", "/www"]}],
        }),
    );
    // Init containers run first, in order, sharing an emptyDir with the app.
    cluster.pod(
        "staged",
        serde_json::json!({
            "terminationGracePeriodSeconds": 1,
            "initContainers": [
                {"name": "first", "image": cluster.busybox,
                    "command": ["sh", "-c", "echo one > /work/log"],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
                {"name": "second", "image": cluster.busybox,
                    "command": ["sh", "-c", "echo two >> /work/log"],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
            ],
            "containers": [{"name": "main", "image": cluster.busybox,
                "command": ["sh", "-c", "cat /work/log; exec sleep 3600"],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
            "volumes": [{"name": "work", "emptyDir": {}}],
        }),
    );
    let web = cluster.wait_running("web").await;
    let host = cluster.wait_running("hostweb").await;
    let staged = cluster.wait_running("staged").await;
    for init in staged["status"]["initContainerStatuses"]
        .as_array()
        .unwrap()
    {
        assert_eq!(init["state"]["terminated"]["reason"], "Completed", "{init}");
    }
    let logs = ok(&cluster.plane.kubectl(&["logs", "staged"]));
    assert_eq!(logs, "one\ntwo\n");
    let logs = ok(&cluster.plane.kubectl(&["logs", "staged", "-c", "second"]));
    assert_eq!(logs, "");
    let status = container_status(&web, "httpd");
    assert_eq!(status["restartCount"], 0);
    assert!(
        status["imageID"].as_str().unwrap().starts_with("sha256:"),
        "{status}"
    );
    assert!(
        status["containerID"]
            .as_str()
            .unwrap()
            .starts_with("skiff://"),
        "{status}"
    );

    // The pod's own network namespace: reach its port 80 from inside it.
    let netns = cluster
        .agent
        .data_dir
        .join("pods")
        .join(uid(&web))
        .join("ns/net");
    let fetched = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["busybox", "wget", "-qO-", "http://127.0.0.1:80/"])
        .output()
        .unwrap();
    assert_eq!(stdout(&fetched).trim(), "hello", "{fetched:?}");
    // The hostNetwork pod answers in the node's network namespace (where its agent
    // runs), not in the host's.
    let stream = cluster
        .agent
        .netns()
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .unwrap();
    let body = http_get(stream, &format!("127.0.0.1:{port}")).await;
    assert_eq!(body.trim(), "hello");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "the hostNetwork pod listens in the node's namespace only"
    );

    // Logs: httpd -vv logs each request to stderr.
    let logs = ok(&cluster.plane.kubectl(&["logs", "web"]));
    assert!(
        logs.contains("url:/") && logs.contains("response:200"),
        "{logs}"
    );

    // Exec: the hostname is the pod's name; the process sees its own pid namespace.
    let (code, out) = cluster.exec(&web, "httpd", &["hostname"]).await;
    assert_eq!((code, out.trim()), (0, "web"));
    let (code, _) = cluster.exec(&web, "httpd", &["sh", "-c", "exit 7"]).await;
    assert_eq!(code, 7);
    let pid = cluster.container_pid(&web, "httpd");
    let host_pid = cluster.container_pid(&host, "httpd");
    assert!(
        cluster.agent.netns().contains(host_pid).unwrap(),
        "the hostNetwork pod shares its node's network namespace"
    );
    assert!(
        !cluster.agent.netns().contains(pid).unwrap(),
        "a pod has its own network namespace"
    );
    let ours = std::fs::read_link("/proc/self/ns/pid").unwrap();
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap(),
        ours
    );
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cgroup.contains(&format!("/skiff/pod{}", uid(&web))),
        "{cgroup}"
    );

    // Deletion stops the containers (SIGTERM, the 3 s grace period, SIGKILL) and
    // removes everything.
    let started = Instant::now();
    cluster.delete(&["web", "hostweb", "staged"]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(20),
        "deletion took {took:?}, not the grace period"
    );
    cluster.assert_clean(&[uid(&web), uid(&host), uid(&staged)], &[pid, host_pid]);
    drop(cluster.registry);
}

#[tokio::test(flavor = "multi_thread")]
async fn crashes_back_off_oom_is_reported_and_liveness_restarts() {
    let cluster = Cluster::start("node-faults").await;
    cluster.pod(
        "crash",
        serde_json::json!({
            "containers": [{"name": "main", "image": cluster.busybox,
                "command": ["sh", "-c", "echo crashing; exit 3"]}],
        }),
    );
    cluster.pod(
        "oom",
        serde_json::json!({
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": cluster.busybox,
                "command": ["sh", "-c", "head -c 200m /dev/zero | tail"],
                "resources": {"limits": {"memory": "32Mi"}}}],
        }),
    );
    cluster.pod(
        "unhealthy",
        serde_json::json!({
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": cluster.busybox,
                "command": ["sleep", "3600"],
                "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]},
                    "periodSeconds": 1, "failureThreshold": 2}}],
        }),
    );
    cluster.pod("badimage", serde_json::json!({
        "containers": [{"name": "main", "image": format!("{}/skiff/missing:1", cluster.registry.address())}],
    }));

    // Exit 3 under restartPolicy Always: restarted at once, then back-off (10 s).
    let crash = cluster
        .wait_for("crash", Duration::from_secs(60), "crash-looping", |pod| {
            let s = container_status(pod, "main");
            s["restartCount"].as_i64() >= Some(1)
                && s["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        })
        .await;
    let status = container_status(&crash, "main");
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 3, "{status}");
    assert_eq!(status["lastState"]["terminated"]["reason"], "Error");
    assert!(
        status["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .starts_with("back-off 10s restarting failed container=main pod=crash_default"),
        "{status}"
    );
    assert_eq!(crash["status"]["phase"], "Running");
    let logs = ok(&cluster.plane.kubectl(&["logs", "crash", "--previous"]));
    assert_eq!(logs.trim(), "crashing");

    let oom = cluster
        .wait_for("oom", Duration::from_secs(60), "OOM-killed", |pod| {
            pod["status"]["phase"] == "Failed"
        })
        .await;
    let terminated = &container_status(&oom, "main")["state"]["terminated"];
    assert_eq!(terminated["reason"], "OOMKilled", "{terminated}");
    assert_eq!(terminated["exitCode"], 137);

    let unhealthy = cluster
        .wait_for(
            "unhealthy",
            Duration::from_secs(60),
            "restarted by its liveness probe",
            |pod| container_status(pod, "main")["restartCount"].as_i64() >= Some(1),
        )
        .await;
    let last = &container_status(&unhealthy, "main")["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 137, "{last}");

    let bad = cluster
        .wait_for(
            "badimage",
            Duration::from_secs(60),
            "failing to pull",
            |pod| {
                let reason = &container_status(pod, "main")["state"]["waiting"]["reason"];
                reason == "ErrImagePull" || reason == "ImagePullBackOff"
            },
        )
        .await;
    let message = container_status(&bad, "main")["state"]["waiting"]["message"].to_string();
    assert!(message.contains("skiff/missing"), "{message}");
    assert_eq!(bad["status"]["phase"], "Pending");

    let pods = ["crash", "oom", "unhealthy", "badimage"];
    let uids: Vec<String> = pods.iter().map(|p| uid(&cluster.get(p))).collect();
    cluster.delete(&pods);
    cluster.assert_clean(&uids, &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_agent_adopts_its_running_containers() {
    let mut cluster = Cluster::start("node-adopt").await;
    cluster.pod("steady", serde_json::json!({
        "containers": [{"name": "main", "image": cluster.busybox,
            "command": ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"]}],
    }));
    let before = cluster.wait_running("steady").await;
    let pid = cluster.container_pid(&before, "main");
    let started_at = container_status(&before, "main")["state"]["running"]["startedAt"].clone();

    cluster.agent.kill().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the container outlives its agent"
    );
    cluster.agent.restart().await.unwrap();

    // Same process, same status: adopted, not restarted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = cluster.wait_running("steady").await;
    assert_eq!(cluster.container_pid(&after, "main"), pid);
    let status = container_status(&after, "main");
    assert_eq!(status["restartCount"], 0);
    assert_eq!(status["state"]["running"]["startedAt"], started_at);
    assert_eq!(
        status["containerID"],
        container_status(&before, "main")["containerID"]
    );
    // Its log kept flowing while the agent was away.
    let logs = ok(&cluster.plane.kubectl(&["logs", "steady", "--tail", "3"]));
    assert_eq!(logs.lines().count(), 3, "{logs}");

    let uid = uid(&after);
    cluster.delete(&["steady"]);
    cluster.assert_clean(&[uid], &[pid]);
}

/// One plain HTTP GET of `/` over `stream` (already connected to `host`); the body.
async fn http_get(mut stream: tokio::net::TcpStream, host: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}
