//! Desired state reconciled end to end: a control plane (scheduler and controllers
//! inside, in a test fabric's network namespace) and two real node agents (each in its
//! node's namespace) run `manifests/`, driven once by `skiff` and once
//! by the real `kubectl`: scale, rolling update, rollback, self-healing, an
//! unschedulable pod, a lost node's pods rescheduled, namespace deletion.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_e2e::agent::NodeAgent;
use skiff_e2e::netns::Fabric;
use skiff_e2e::registry::TestRegistry;

use crate::harness::{self, ControlPlane, ok, stdout};

/// A control plane with short node timeouts and two agents holding the demo images,
/// on a test fabric: each agent runs in its own node's network namespace.
///
/// Fields drop in order: the agents (reset inside their namespaces), the control
/// plane, the rest.
struct Cluster {
    agents: Vec<NodeAgent>,
    plane: ControlPlane,
    _registry: TestRegistry,
    _fabric: Fabric,
}

impl Cluster {
    async fn start(nodes: &[&str]) -> Self {
        // Lost nodes: Unknown after 4 s without heartbeats, their pods evicted 2 s later.
        let harness::Cluster {
            agents,
            plane,
            registry,
            fabric,
        } = harness::Cluster::start(
            nodes,
            &[
                "--node-monitor-grace-period",
                "4",
                "--pod-eviction-timeout",
                "2",
            ],
        )
        .await;
        let mut archives = Vec::new();
        for tag in ["1", "2"] {
            let path = plane.write(&format!("httpd-{tag}.tar"), "");
            ok(&plane.skiff(&[
                "images",
                "build-demo",
                "-o",
                &path,
                "--name",
                &format!("skiff.local/httpd:{tag}"),
            ]));
            archives.push(path);
        }
        // The images go straight into each node's store (no registry involved).
        for agent in &agents {
            let data_dir = agent.data_dir.display().to_string();
            let mut args = vec!["images", "import", "--data-dir", &data_dir];
            args.extend(archives.iter().map(String::as_str));
            ok(&plane.skiff(&args));
        }
        Self {
            agents,
            plane,
            _registry: registry,
            _fabric: fabric,
        }
    }

    /// Runs `client` (`skiff` or `kubectl`) with `args`.
    fn client(&self, client: &str, args: &[&str]) -> std::process::Output {
        if client == "skiff" {
            self.plane.skiff(args)
        } else {
            self.plane.kubectl(args)
        }
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&ok(&self.plane.kubectl(&args))).unwrap()
    }

    /// The demo namespace's pods with `app=label`, not being deleted.
    fn pods(&self, app: &str) -> Vec<Value> {
        let list = self.json(&["get", "pods", "-n", "demo", "-l", &format!("app={app}")]);
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .cloned()
            .collect()
    }

    /// Polls `check` every 200 ms until it holds, up to `limit`.
    async fn wait(&self, what: &str, limit: Duration, check: impl Fn(&Self) -> Result<(), String>) {
        let deadline = Instant::now() + limit;
        loop {
            match check(self) {
                Ok(()) => return,
                Err(why) if Instant::now() > deadline => {
                    let pods = stdout(&self.plane.kubectl(&["get", "pods", "-A", "-o", "wide"]));
                    panic!("{what} not reached within {limit:?}: {why}\n{pods}");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Waits until `app` has exactly `count` ready pods (and no others).
    async fn wait_ready(&self, app: &str, count: usize) {
        self.wait(
            &format!("{count} ready {app} pods"),
            Duration::from_secs(90),
            |c| {
                let pods = c.pods(app);
                let ready = pods.iter().filter(|p| is_ready(p)).count();
                if pods.len() == count && ready == count {
                    Ok(())
                } else {
                    Err(format!("{} pods, {ready} ready", pods.len()))
                }
            },
        )
        .await;
    }
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn node_of(pod: &Value) -> String {
    pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The scenario every client must pass.
async fn scenario(cluster: &Cluster, client: &str) {
    // Apply the manifests: everything runs on the agents.
    ok(&cluster.client(client, &["apply", "-f", "manifests/"]));
    cluster.wait_ready("web", 3).await;
    cluster.wait_ready("api", 2).await;
    cluster
        .wait("the clock pod Running", Duration::from_secs(60), |c| {
            let pod = c.json(&["get", "pod", "clock", "-n", "demo"]);
            (pod["status"]["phase"] == "Running")
                .then_some(())
                .ok_or_else(|| pod["status"].to_string())
        })
        .await;
    let nodes: BTreeSet<String> = cluster.pods("web").iter().map(node_of).collect();
    assert!(
        nodes.len() >= 2,
        "web's replicas spread over the nodes: {nodes:?}"
    );
    let rollout = ok(&cluster.client(
        client,
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            "demo",
            "--timeout=60s",
        ],
    ));
    assert!(rollout.contains("successfully rolled out"), "{rollout}");

    // Scale up and down.
    ok(&cluster.client(
        client,
        &["scale", "deployment/web", "-n", "demo", "--replicas=6"],
    ));
    cluster.wait_ready("web", 6).await;
    ok(&cluster.client(
        client,
        &["scale", "deployment/web", "-n", "demo", "--replicas=2"],
    ));
    cluster.wait_ready("web", 2).await;
    let original_rs: BTreeSet<String> = cluster
        .pods("web")
        .iter()
        .map(|p| {
            p["metadata"]["labels"]["pod-template-hash"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();

    // A new image rolls one pod at a time (maxSurge 1, maxUnavailable 0): a watcher
    // sees never fewer than 2 ready pods.
    let watcher = {
        let kubeconfig = cluster.plane.kubeconfig.clone();
        tokio::spawn(async move {
            let mut fewest = usize::MAX;
            let mut worst = String::new();
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let output = std::process::Command::new("kubectl")
                    .args(["get", "pods", "-n", "demo", "-l", "app=web", "-o", "json"])
                    .env("KUBECONFIG", &kubeconfig)
                    .output()
                    .unwrap();
                let list: Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
                let pods = list["items"].as_array().cloned().unwrap_or_default();
                let ready = pods.iter().filter(|p| is_ready(p)).count();
                if ready < fewest {
                    fewest = ready;
                    worst = pods
                        .iter()
                        .map(|p| {
                            format!(
                                "{} ready={} deleting={} phase={}",
                                p["metadata"]["name"],
                                is_ready(p),
                                !p["metadata"]["deletionTimestamp"].is_null(),
                                p["status"]["phase"]
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                }
                let done = pods.len() == 2
                    && pods.iter().all(|p| {
                        is_ready(p) && p["spec"]["containers"][0]["image"] == "skiff.local/httpd:2"
                    });
                if done || Instant::now() > deadline {
                    return (fewest, done, worst);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    ok(&cluster.plane.kubectl(&[
        "set",
        "image",
        "deployment/web",
        "-n",
        "demo",
        "httpd=skiff.local/httpd:2",
    ]));
    let (fewest, done, worst) = watcher.await.unwrap();
    assert!(done, "the rolling update finished");
    assert!(
        fewest >= 2,
        "maxUnavailable 0 held: as few as {fewest} ready pods were seen: {worst}"
    );
    ok(&cluster.client(
        client,
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            "demo",
            "--timeout=60s",
        ],
    ));

    // Rollback returns to the first ReplicaSet.
    ok(&cluster.client(client, &["rollout", "undo", "deployment/web", "-n", "demo"]));
    cluster
        .wait("the rollback", Duration::from_secs(90), |c| {
            let pods = c.pods("web");
            let hashes: BTreeSet<String> = pods
                .iter()
                .map(|p| {
                    p["metadata"]["labels"]["pod-template-hash"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect();
            (pods.len() == 2 && pods.iter().all(is_ready) && hashes == original_rs)
                .then_some(())
                .ok_or_else(|| format!("{hashes:?} vs {original_rs:?}"))
        })
        .await;

    // A deleted pod is replaced.
    let victim = cluster.pods("web")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(&cluster.client(client, &["delete", "pod", &victim, "-n", "demo"]));
    cluster
        .wait("a replacement pod", Duration::from_secs(60), |c| {
            let pods = c.pods("web");
            let replaced = pods.len() == 2
                && pods.iter().all(is_ready)
                && pods
                    .iter()
                    .all(|p| p["metadata"]["name"] != victim.as_str());
            replaced
                .then_some(())
                .ok_or_else(|| format!("{} pods", pods.len()))
        })
        .await;

    // A pod no node can hold says why.
    let huge = cluster.plane.write(
        &format!("huge-{client}.json"),
        &serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "huge", "namespace": "demo"},
            "spec": {"containers": [{"name": "c", "image": "skiff.local/httpd:1",
                "resources": {"requests": {"cpu": "1000"}}}]},
        })
        .to_string(),
    );
    ok(&cluster.client(client, &["apply", "-f", &huge]));
    cluster
        .wait(
            "the unschedulable pod's reason",
            Duration::from_secs(30),
            |c| {
                let pod = c.json(&["get", "pod", "huge", "-n", "demo"]);
                let scheduled = pod["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled").cloned())
                    .unwrap_or_default();
                let message = scheduled["message"].as_str().unwrap_or_default();
                (scheduled["status"] == "False"
                    && scheduled["reason"] == "Unschedulable"
                    && message.contains("Insufficient cpu"))
                .then_some(())
                .ok_or_else(|| scheduled.to_string())
            },
        )
        .await;
    let events = ok(&cluster.plane.kubectl(&[
        "get",
        "events",
        "-n",
        "demo",
        "--field-selector",
        "involvedObject.name=huge",
    ]));
    assert!(events.contains("FailedScheduling"), "{events}");
}

/// Deletes the demo namespace and waits until it and its pods are gone.
async fn delete_demo(cluster: &Cluster, client: &str) {
    ok(&cluster.client(client, &["delete", "namespace", "demo"]));
    cluster
        .wait("the demo namespace gone", Duration::from_secs(90), |c| {
            let output = c.plane.kubectl(&["get", "namespace", "demo"]);
            let pods = c
                .plane
                .kubectl(&["get", "pods", "-n", "demo", "-o", "name"]);
            (!output.status.success() && stdout(&pods).trim().is_empty())
                .then_some(())
                .ok_or_else(|| stdout(&output))
        })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn skiff_runs_the_manifests_and_a_lost_nodes_pods_move() {
    let mut cluster = Cluster::start(&["node-a", "node-b"]).await;
    scenario(&cluster, "skiff").await;

    // Kill node-b's agent: after the grace period it is tainted unreachable
    // and its pods move to node-a. (The scheduler may already have put both
    // replicas on node-a, so the taint is awaited rather than assumed.)
    cluster.agents[1].kill().await;
    cluster
        .wait("node-b tainted unreachable", Duration::from_secs(60), |c| {
            let taints = c.json(&["get", "node", "node-b"])["spec"]["taints"].to_string();
            taints
                .contains("node.kubernetes.io/unreachable")
                .then_some(())
                .ok_or(taints)
        })
        .await;
    cluster
        .wait("web's pods all on node-a", Duration::from_secs(60), |c| {
            let pods = c.pods("web");
            let moved =
                pods.len() == 2 && pods.iter().all(|p| is_ready(p) && node_of(p) == "node-a");
            moved
                .then_some(())
                .ok_or_else(|| format!("{:?}", pods.iter().map(node_of).collect::<Vec<_>>()))
        })
        .await;

    delete_demo(&cluster, "skiff").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_runs_the_same_scenario() {
    let cluster = Cluster::start(&["node-c", "node-d"]).await;
    scenario(&cluster, "kubectl").await;
    delete_demo(&cluster, "kubectl").await;
}
