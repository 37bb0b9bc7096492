//! A highly available cluster end to end (issue 9): three control-plane members and
//! two node agents, each in its own network namespace on a test fabric, everything
//! over TLS, joined with tokens as on three VMs. The leader is SIGKILLed during a
//! rolling update (the update finishes, no acknowledged write is lost, controllers
//! resume under a new Lease holder); a follower is partitioned with nftables (the
//! majority serves, the minority refuses writes, it catches up once healed); a lost
//! node's pods move; a restarted agent adopts its containers; credentials are checked
//! (401 without, 403 for a node reading another's pods, a wrong join token refused).
//! Prints the failover figures the closing note reports.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff_e2e::agent::NodeAgent;
use skiff_e2e::netns::{Fabric, Forwarder, NodeNet};
use skiff_e2e::process::{Process, sibling_binary};
use skiff_e2e::registry::{ImageSpec, TestRegistry};
use skiff_e2e::stats::Samples;
use skiff_pki::KeyPair;

/// The API and peer ports every member uses on its own address.
const API_PORT: u16 = 6443;
const PEER_PORT: u16 = 2380;

/// One control-plane member in its own namespace; its data dir outlives its process.
struct Member {
    name: String,
    net: NodeNet,
    data: tempfile::TempDir,
    args: Vec<String>,
    process: Option<Process>,
    /// Host-side port relayed to the member's API.
    forwarder: Forwarder,
}

impl Member {
    async fn start(fabric: &Fabric, name: &str, join: Option<(&str, &str)>) -> Member {
        let net = fabric.add_node(name).unwrap();
        let data = tempfile::tempdir().unwrap();
        let ip = net.ip.to_string();
        let mut args: Vec<String> = [
            "--data-dir",
            &data.path().display().to_string(),
            "--name",
            name,
            "--listen-api",
            &format!("{ip}:{API_PORT}"),
            "--listen-peer",
            &format!("{ip}:{PEER_PORT}"),
            "--advertise-address",
            &ip,
            // Short enough for a test; the defaults are measured in the closing note.
            "--node-monitor-grace-period",
            "8",
            "--pod-eviction-timeout",
            "2",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if let Some((server, token)) = join {
            args.extend([
                "--join".to_owned(),
                server.to_owned(),
                "--token".to_owned(),
                token.to_owned(),
            ]);
        }
        let forwarder = net
            .ns
            .forward(SocketAddr::from((net.ip, API_PORT)))
            .unwrap();
        let mut member = Member {
            name: name.to_owned(),
            net,
            data,
            args,
            process: None,
            forwarder,
        };
        member.launch().await;
        member
    }

    /// Starts the process (again) on the same data dir and waits until it serves.
    async fn launch(&mut self) {
        let binary = sibling_binary("skiff-control-plane").unwrap();
        let mut process = Process::spawn_in(
            Some(&self.net.ns),
            &format!("skiff-control-plane {}", self.name),
            &binary,
            &self.args,
            tempfile::tempdir().unwrap(),
        )
        .unwrap();
        process
            .wait_for_line("serving the API on", Duration::from_secs(90))
            .await
            .unwrap();
        self.process = Some(process);
    }

    /// SIGKILL.
    async fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill().await;
        }
    }

    /// The URL nodes and members use.
    fn url(&self) -> String {
        format!("https://{}:{API_PORT}", self.net.ip)
    }

    /// The URL host-side clients use (the forwarder).
    fn host_url(&self) -> String {
        format!("https://{}", self.forwarder.address())
    }

    fn peer(&self) -> String {
        format!("{}:{PEER_PORT}", self.net.ip)
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.data.path().join(name))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// `member list` through this member's peer port (mTLS with its peer certificate):
    /// the leader's peer address.
    fn raft_leader(&self) -> Option<String> {
        let binary = sibling_binary("skiff-control-plane").unwrap();
        let output = self
            .net
            .ns
            .command(&binary)
            .args(["member", "list", "--peer", &self.peer(), "--data-dir"])
            .arg(self.data.path())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.lines()
            .find(|line| line.trim_end().ends_with("leader"))
            .and_then(|line| line.split_whitespace().nth(1).map(str::to_owned))
    }

    /// Drops all traffic between this member and `others` (both directions), inside
    /// this member's namespace.
    fn partition_from(&self, others: &[Ipv4Addr]) {
        let set = others
            .iter()
            .map(Ipv4Addr::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let script = format!(
            "table inet skiff-partition {{\n chain input {{ type filter hook input priority -10; ip saddr {{ {set} }} drop; }}\n chain output {{ type filter hook output priority -10; ip daddr {{ {set} }} drop; }}\n}}\n"
        );
        let path = self.data.path().join("partition.nft");
        std::fs::write(&path, script).unwrap();
        let status = self
            .net
            .ns
            .command("nft")
            .arg("-f")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "nft -f partition");
    }

    fn heal(&self) {
        let status = self
            .net
            .ns
            .command("nft")
            .args(["delete", "table", "inet", "skiff-partition"])
            .status()
            .unwrap();
        assert!(status.success(), "nft delete table");
    }
}

/// A host-side API client with the admin's certificate (or none).
fn client(ca_pem: &str, identity: Option<&KeyPair>, timeout: Duration) -> reqwest::Client {
    let tls = skiff_pki::client_config(ca_pem, identity).unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .timeout(timeout)
        .build()
        .unwrap()
}

/// A kubeconfig for the admin naming `server`, for kubectl.
fn kubeconfig(dir: &std::path::Path, member: &Member, server: &str) -> String {
    let mut config: Value = serde_json::from_str(
        &std::fs::read_to_string(member.data.path().join("admin.kubeconfig")).unwrap(),
    )
    .unwrap();
    config["clusters"][0]["cluster"]["server"] = json!(server);
    let path = dir.join(format!("kubeconfig-{}", server.rsplit(':').next().unwrap()));
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    path.display().to_string()
}

fn kubectl(kubeconfig: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--request-timeout", "10s"])
        .args(args)
        .output()
        .unwrap()
}

async fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Writes one Secret through the first member in `urls` that answers; `Ok` only for
/// an acknowledged create.
async fn write_secret(client: &reqwest::Client, urls: &[String], name: &str) -> Result<(), String> {
    let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                      "stringData": {"n": name}});
    let mut last = String::new();
    for url in urls {
        let response = client
            .post(format!("{url}/api/v1/namespaces/default/secrets"))
            .json(&body)
            .send()
            .await;
        match response {
            Ok(response) if response.status().as_u16() == 201 => return Ok(()),
            // Created by an attempt whose answer was lost: acknowledged now.
            Ok(response) if response.status().as_u16() == 409 => return Ok(()),
            Ok(response) => last = format!("{url}: {}", response.status()),
            Err(error) => last = format!("{url}: {error}"),
        }
    }
    Err(last)
}

/// The ready, current pods of the `web` deployment and their nodes.
fn web_pods(kubeconfig: &str) -> Vec<(String, String, String)> {
    let output = kubectl(kubeconfig, &["get", "pods", "-l", "app=web", "-o", "json"]);
    let pods: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .map(|p| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (
                text(&p["metadata"]["name"]),
                text(&p["spec"]["nodeName"]),
                text(&p["spec"]["containers"][0]["env"][0]["value"]),
            )
        })
        .collect()
}

fn deployment(image: &str, version: &str) -> String {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "httpd", "image": image,
                        "env": [{"name": "VERSION", "value": version}],
                        "command": ["sh", "-c", "mkdir -p /www && echo $VERSION > /www/index.html && exec httpd -f -p 8080 -h /www"],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1},
                    }],
                },
            },
        },
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_survive_leader_loss_partition_and_node_loss() {
    let fabric = Fabric::create().unwrap();
    let registry = TestRegistry::start_in(&fabric).unwrap();
    let scratch = tempfile::tempdir().unwrap();

    // Bootstrap: the first member, then two more joining with its server token.
    let first = Member::start(&fabric, "cp-1", None).await;
    let server_token = first.file("token");
    let agent_token = first.file("agent-token");
    assert!(server_token.starts_with("K10"), "{server_token}");
    let first_url = first.url();
    let mut members = vec![first];
    for name in ["cp-2", "cp-3"] {
        members.push(Member::start(&fabric, name, Some((&first_url, &server_token))).await);
    }
    let ca_pem = std::fs::read_to_string(members[0].data.path().join("pki/ca.crt")).unwrap();
    let admin = KeyPair::load(&members[0].data.path().join("pki"), "admin").unwrap();
    let http = client(&ca_pem, Some(&admin), Duration::from_secs(5));
    let host_urls: Vec<String> = members.iter().map(Member::host_url).collect();
    let kubeconfigs: Vec<String> = members
        .iter()
        .map(|m| kubeconfig(scratch.path(), &members[0], &m.host_url()))
        .collect();

    // A wrong join token (right CA hash, unknown id) is refused with a clear message.
    {
        let wrong = skiff_pki::Token::generate(&skiff_pki::ca_hash(&ca_pem)).to_string();
        let net = fabric.add_node("cp-bad").unwrap();
        let data = tempfile::tempdir().unwrap();
        let output = net
            .ns
            .command(sibling_binary("skiff-control-plane").unwrap())
            .arg("--data-dir")
            .arg(data.path())
            .args([
                "--listen-api",
                &format!("{}:{API_PORT}", net.ip),
                "--listen-peer",
            ])
            .arg(format!("{}:{PEER_PORT}", net.ip))
            .args(["--join", &first_url, "--token", &wrong])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains("invalid bearer token"), "{stderr}");
        // An agent with it is refused the same way.
        let node = fabric.add_node("node-bad").unwrap();
        let output = node
            .ns
            .command(sibling_binary("skiff-node-agent").unwrap())
            .arg("--data-dir")
            .arg(data.path())
            .args([
                "--server",
                &first_url,
                "--token",
                &wrong,
                "--node-name",
                "node-bad",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains("invalid bearer token"), "{stderr}");
    }

    // Two agents, each told all three servers.
    let servers = members
        .iter()
        .map(Member::url)
        .collect::<Vec<_>>()
        .join(",");
    let mut agents = Vec::new();
    for node in ["node-a", "node-b"] {
        agents.push(
            NodeAgent::start_on(&fabric, node, &servers, &agent_token, &registry.address())
                .await
                .unwrap(),
        );
    }
    let nodes = kubectl(&kubeconfigs[1], &["get", "nodes"]);
    assert!(
        nodes.status.success(),
        "{}",
        String::from_utf8_lossy(&nodes.stderr)
    );

    // Credentials: none → 401; node-a's certificate listing node-b's pods → 403, its
    // own → 200.
    let anonymous = client(&ca_pem, None, Duration::from_secs(5));
    let response = anonymous
        .get(format!("{}/api/v1/pods", host_urls[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let node_a = KeyPair::load(&agents[0].data_dir.join("pki"), "node").unwrap();
    let as_node_a = client(&ca_pem, Some(&node_a), Duration::from_secs(5));
    let pods_of = |node: &str| {
        format!(
            "{}/api/v1/pods?fieldSelector=spec.nodeName%3D{node}",
            host_urls[0]
        )
    };
    let response = as_node_a.get(pods_of("node-b")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let response = as_node_a.get(pods_of("node-a")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);

    // A deployment of 4 replicas over both nodes.
    let image = registry
        .push_busybox_image("skiff/busybox:ha", &ImageSpec::default())
        .unwrap();
    let file = scratch.path().join("web.json");
    std::fs::write(&file, deployment(&image, "v1")).unwrap();
    let applied = kubectl(
        &kubeconfigs[0],
        &["apply", "-f", &file.display().to_string()],
    );
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    wait_until("4 ready v1 pods", Duration::from_secs(120), async || {
        let pods = web_pods(&kubeconfigs[0]);
        (pods.len() == 4 && pods.iter().all(|p| p.2 == "v1")).then_some(())
    })
    .await;

    // Writers keep writing through whichever member answers; each acknowledged name
    // is recorded with its latency.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let latencies = Arc::new(Mutex::new(Vec::<(Instant, Duration, bool)>::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn({
        let (http, urls, acknowledged, latencies, stop) = (
            http.clone(),
            host_urls.clone(),
            acknowledged.clone(),
            latencies.clone(),
            stop.clone(),
        );
        async move {
            let mut n = 0u32;
            while !stop.is_cancelled() {
                n += 1;
                let name = format!("ack-{n}");
                let started = Instant::now();
                let result = write_secret(&http, &urls, &name).await;
                latencies
                    .lock()
                    .unwrap()
                    .push((started, started.elapsed(), result.is_ok()));
                if result.is_ok() {
                    acknowledged.lock().unwrap().push(name);
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Start a rolling update, then SIGKILL the Raft leader.
    std::fs::write(&file, deployment(&image, "v2")).unwrap();
    let applied = kubectl(
        &kubeconfigs[0],
        &["apply", "-f", &file.display().to_string()],
    );
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let leader_peer = wait_until("a Raft leader", Duration::from_secs(20), async || {
        members[0].raft_leader()
    })
    .await;
    let leader = members
        .iter()
        .position(|m| m.peer() == leader_peer)
        .unwrap();
    let lease_before = lease_holder(&http, &host_urls).await;
    let killed_at = Instant::now();
    members[leader].kill().await;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let survivor_urls: Vec<String> = survivors.iter().map(|i| host_urls[*i].clone()).collect();

    // Writes succeed again: the first acknowledged write that started after the kill.
    let failover = wait_until(
        "a write after the kill",
        Duration::from_secs(30),
        async || {
            let samples = latencies.lock().unwrap();
            samples
                .iter()
                .find(|(started, _, ok)| *started >= killed_at && *ok)
                .map(|(started, took, _)| (*started + *took).duration_since(killed_at))
        },
    )
    .await;
    // Controllers resume under a new Lease holder (the killed member's Lease expires).
    let new_holder = wait_until("a new Lease holder", Duration::from_secs(40), async || {
        let holder = lease_holder(&http, &survivor_urls).await?;
        (Some(&holder) != lease_before.as_ref()
            && !holder.starts_with(&format!("{}_", members[leader].name)))
        .then_some(holder)
    })
    .await;
    let controllers_back = killed_at.elapsed();
    let survivor_config = &kubeconfigs[survivors[0]];
    wait_until(
        "the rollout to v2 finished",
        Duration::from_secs(120),
        async || {
            let pods = web_pods(survivor_config);
            (pods.len() == 4 && pods.iter().all(|p| p.2 == "v2")).then_some(())
        },
    )
    .await;
    let rollout_done = killed_at.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    writer.await.unwrap();

    // No acknowledged write is lost.
    let stored = http
        .get(format!(
            "{}/api/v1/namespaces/default/secrets",
            survivor_urls[0]
        ))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let names: std::collections::BTreeSet<String> = stored["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !names.contains(*n))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    // Every write that ended within 10 s after the kill, in flight at the kill included.
    let (window, failed): (Vec<_>, Vec<_>) = latencies
        .lock()
        .unwrap()
        .iter()
        .filter(|(started, took, _)| {
            let ended = *started + *took;
            ended >= killed_at && ended.duration_since(killed_at) < Duration::from_secs(10)
        })
        .copied()
        .partition(|(_, _, ok)| *ok);
    let window: Vec<Duration> = window.into_iter().map(|(_, took, _)| took).collect();
    let samples = Samples::new(window.clone(), Duration::from_secs(10), failed.len());

    // The killed member comes back and catches up; then partition a follower.
    members[leader].launch().await;
    wait_until(
        "three voters with a leader",
        Duration::from_secs(30),
        async || members[leader].raft_leader(),
    )
    .await;
    let leader_peer = wait_until("a Raft leader", Duration::from_secs(20), async || {
        members[survivors[0]].raft_leader()
    })
    .await;
    let follower = (0..3).find(|i| members[*i].peer() != leader_peer).unwrap();
    let others: Vec<Ipv4Addr> = (0..3)
        .filter(|i| *i != follower)
        .map(|i| members[i].net.ip)
        .collect();
    members[follower].partition_from(&others);
    let majority_urls: Vec<String> = (0..3)
        .filter(|i| *i != follower)
        .map(|i| host_urls[i].clone())
        .collect();
    write_secret(&http, &majority_urls, "during-partition")
        .await
        .expect("the majority serves writes");
    let slow = client(&ca_pem, Some(&admin), Duration::from_secs(8));
    let refused = write_secret(&slow, &host_urls[follower..=follower], "on-the-minority").await;
    assert!(refused.is_err(), "the minority acknowledged a write");
    members[follower].heal();
    let minority = host_urls[follower].clone();
    wait_until(
        "the healed member catches up",
        Duration::from_secs(30),
        async || {
            let response = http
                .get(format!(
                    "{minority}/api/v1/namespaces/default/secrets/during-partition"
                ))
                .send()
                .await
                .ok()?;
            (response.status().as_u16() == 200).then_some(())
        },
    )
    .await;

    // A lost node: node-b's agent is killed; its pods move to node-a.
    let lost_at = Instant::now();
    agents[1].kill().await;
    let config = kubeconfigs[survivors[0]].clone();
    wait_until(
        "web's pods all on node-a",
        Duration::from_secs(90),
        async || {
            let pods = web_pods(&config);
            (pods.len() == 4 && pods.iter().all(|p| p.1 == "node-a")).then_some(())
        },
    )
    .await;
    let rescheduled = lost_at.elapsed();

    // A restarted agent adopts its running containers: same pods, no restarts.
    let before = kubectl(&config, &["get", "pods", "-l", "app=web", "-o", "json"]);
    let before: Value = serde_json::from_slice(&before.stdout).unwrap();
    let restarts = |pods: &Value| -> Vec<(String, i64, String)> {
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["spec"]["nodeName"] == "node-a")
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap().to_owned(),
                    p["status"]["containerStatuses"][0]["restartCount"]
                        .as_i64()
                        .unwrap_or(-1),
                    p["status"]["containerStatuses"][0]["containerID"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    };
    agents[0].kill().await;
    agents[0].restart().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = kubectl(&config, &["get", "pods", "-l", "app=web", "-o", "json"]);
    let after: Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(
        restarts(&before),
        restarts(&after),
        "the restarted agent adopted its containers"
    );

    println!(
        "RESULT ha leader_failover_ms={} write_p99_during_failover_ms={:.1} writes_in_window={} failed_attempts={} \
         controllers_resumed_ms={} new_lease_holder={new_holder} rollout_done_ms={} \
         acknowledged_writes={} lost_writes=0 node_reschedule_ms={} (grace 8 s, eviction 2 s)",
        failover.as_millis(),
        samples.percentile(0.99).as_secs_f64() * 1000.0,
        window.len(),
        samples.errors,
        controllers_back.as_millis(),
        rollout_done.as_millis(),
        acknowledged.len(),
        rescheduled.as_millis(),
    );
    drop(agents);
}

/// The holder of the controllers' Lease, read through the first member that answers.
async fn lease_holder(http: &reqwest::Client, urls: &[String]) -> Option<String> {
    for url in urls {
        let Ok(response) = http
            .get(format!("{url}/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/skiff-controller-manager"))
            .send()
            .await
        else {
            continue;
        };
        if let Ok(lease) = response.json::<Value>().await {
            return lease["spec"]["holderIdentity"].as_str().map(str::to_owned);
        }
    }
    None
}
