//! Pod networking, Services and DNS end to end (issue 8): a control plane and two node
//! agents, each in its own network namespace on a test fabric (one L2 segment, so
//! routes between nodes are host-gw). Pods talk across nodes, a ClusterIP spreads over
//! every ready replica, a NodePort answers from the "outside" (the fabric namespace),
//! cluster DNS resolves service names from a pod, scaling reprograms the rules within a
//! second, a failing readiness probe takes a pod out of the service, and an agent
//! restart keeps established connections working. All traffic stays inside the test's
//! namespaces; everything is removed on drop.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_e2e::netns::NetNs;
use skiff_e2e::registry::ImageSpec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Cluster, ok, stdout};

/// A deployment whose replicas answer HTTP on 8080 with their own name, a ClusterIP
/// and a NodePort service over it, and a client pod.
fn manifests(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: httpd
        image: {image}
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe:
          httpGet: {{path: /index.html, port: http}}
          periodSeconds: 1
          failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-np}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080, nodePort: 30080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  containers:
  - name: client
    image: {image}
    command: ["sleep", "3600"]
"#
    )
}

fn json(output: &std::process::Output) -> Value {
    serde_json::from_str(&ok(output)).expect("kubectl printed JSON")
}

/// The ready web pods: name → (pod IP, node).
fn ready_web_pods(cluster: &Cluster) -> Vec<(String, String, String)> {
    let pods = json(
        &cluster
            .plane
            .kubectl(&["get", "pods", "-l", "app=web", "-o", "json"]),
    );
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pod| pod["metadata"]["deletionTimestamp"].is_null())
        .filter(|pod| {
            pod["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .map(|pod| {
            (
                pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                pod["status"]["podIP"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                pod["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

async fn wait_until<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An HTTP GET of `host:port` `times` times from the client pod (busybox `nc`: the
/// static busybox `wget` crashes in glibc's NSS); the answers' bodies, one per line.
fn fetch_from_client(cluster: &Cluster, url: &str, times: usize) -> Vec<String> {
    let (host, port) = url.rsplit_once(':').unwrap();
    let script = format!(
        "for i in $(seq 1 {times}); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {host} {port} | tail -n 1; echo; done"
    );
    let output = cluster
        .plane
        .kubectl(&["exec", "client", "--", "sh", "-c", &script]);
    if !output.status.success() || output.stdout.is_empty() {
        eprintln!(
            "exec wget {url}: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    stdout(&output)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// One HTTP/1.0 GET over `stream`; the body.
async fn get(mut stream: tokio::net::TcpStream) -> String {
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
        .await
        .expect("the answer came in time")
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    answer
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Asks `server` for the A record of `name` from inside the network namespace at
/// `netns` (a hand-made DNS query over UDP); the first address, `None` for NXDOMAIN.
fn resolve_in(netns: &std::path::Path, server: std::net::Ipv4Addr, name: &str) -> Option<String> {
    let netns = netns.to_owned();
    let name = name.to_owned();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&netns).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            query.push(u8::try_from(label.len()).unwrap());
            query.extend_from_slice(label.as_bytes());
        }
        query.extend_from_slice(&[0, 0, 1, 0, 1]);
        socket.send_to(&query, (server, 53)).unwrap();
        let mut reply = [0u8; 512];
        let (len, _) = socket.recv_from(&mut reply).unwrap();
        let reply = &reply[..len];
        assert_eq!(&reply[..2], &[0x12, 0x34], "the reply answers our query");
        let answers = u16::from_be_bytes([reply[6], reply[7]]);
        if reply[3] & 0x0f == 3 || answers == 0 {
            return None;
        }
        // The first answer: its owner name (a pointer or labels), type, class, TTL,
        // then RDATA (the A record's 4 bytes).
        let mut at = query.len();
        if reply[at] & 0xc0 == 0xc0 {
            at += 2;
        } else {
            while reply[at] != 0 {
                at += usize::from(reply[at]) + 1;
            }
            at += 1;
        }
        at += 2 + 2 + 4;
        let length = usize::from(u16::from_be_bytes([reply[at], reply[at + 1]]));
        let data = &reply[at + 2..at + 2 + length];
        Some(format!("{}.{}.{}.{}", data[0], data[1], data[2], data[3]))
    })
    .join()
    .unwrap()
}

/// The nftables table of a node's service proxy.
fn rules(ns: &NetNs) -> String {
    let output = ns
        .command("nft")
        .args(["list", "table", "ip", "skiff0"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_services_and_dns_work_across_nodes() {
    let cluster = Cluster::start(&["node-a", "node-b"], &[]).await;
    let image = cluster
        .registry
        .push_busybox_image("skiff/busybox:net", &ImageSpec::default())
        .unwrap();
    let file = cluster.plane.write("net.yaml", &manifests(&image));
    ok(&cluster.plane.kubectl(&["apply", "-f", &file]));

    // Every node got its own podCIDR; pods get addresses from their node's.
    let nodes = json(&cluster.plane.kubectl(&["get", "nodes", "-o", "json"]));
    let cidrs: BTreeSet<String> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["spec"]["podCIDR"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(cidrs.len(), 2, "{cidrs:?}");

    let web = wait_until("3 ready web pods", Duration::from_secs(90), || {
        let pods = ready_web_pods(&cluster);
        (pods.len() == 3).then_some(pods)
    })
    .await;
    let client = wait_until("the client pod", Duration::from_secs(60), || {
        let pod = json(
            &cluster
                .plane
                .kubectl(&["get", "pod", "client", "-o", "json"]),
        );
        (pod["status"]["phase"] == "Running")
            .then(|| pod["spec"]["nodeName"].as_str().unwrap().to_owned())
    })
    .await;
    let nodes_used: BTreeSet<&str> = web.iter().map(|(_, _, node)| node.as_str()).collect();
    assert_eq!(
        nodes_used.len(),
        2,
        "replicas spread over both nodes: {web:?}"
    );

    // Pod to pod across nodes.
    let (remote_name, remote_ip, _) = web.iter().find(|(_, _, node)| *node != client).unwrap();
    let answers = fetch_from_client(&cluster, &format!("{remote_ip}:8080"), 1);
    let debug = || {
        let mut text = String::new();
        for agent in &cluster.agents {
            text += &format!(
                "{} routes:\n{}\n",
                agent.name,
                agent.netns().ip(&["route"]).unwrap_or_default()
            );
        }
        text += &stdout(&cluster.plane.kubectl(&["get", "pods", "-o", "wide"]));
        for agent in &cluster.agents {
            let sysctl = agent
                .netns()
                .command("sysctl")
                .args([
                    "net.ipv4.ip_forward",
                    "net.ipv4.conf.eth0.forwarding",
                    "net.ipv4.conf.skiff0.forwarding",
                    "net.ipv4.conf.all.rp_filter",
                    "net.ipv4.conf.eth0.rp_filter",
                ])
                .output()
                .unwrap();
            text += &String::from_utf8_lossy(&sysctl.stdout);
        }
        text += &stdout(
            &cluster
                .plane
                .kubectl(&["exec", "client", "--", "ip", "route"]),
        );
        text += &stdout(
            &cluster
                .plane
                .kubectl(&["exec", "client", "--", "ip", "addr"]),
        );
        text += &stdout(&cluster.plane.kubectl(&[
            "exec",
            "client",
            "--",
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "10.244.1.1",
        ]));
        text += &stdout(&cluster.plane.kubectl(&[
            "exec",
            "client",
            "--",
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "10.77.0.10",
        ]));
        text
    };
    assert_eq!(
        answers,
        vec![remote_name.clone()],
        "pod → pod on the other node\n{}",
        debug()
    );

    // ClusterIP spreads over every replica; the endpoints list the three.
    let service = json(&cluster.plane.kubectl(&["get", "svc", "web", "-o", "json"]));
    let cluster_ip = service["spec"]["clusterIP"].as_str().unwrap().to_owned();
    let octets: Vec<u8> = cluster_ip.split('.').map(|o| o.parse().unwrap()).collect();
    assert!(
        octets[0] == 10 && (96..112).contains(&octets[1]),
        "{cluster_ip} in 10.96.0.0/12"
    );
    let answers = fetch_from_client(&cluster, &format!("{cluster_ip}:80"), 40);
    let seen: BTreeSet<String> = answers.iter().cloned().collect();
    let expected: BTreeSet<String> = web.iter().map(|(name, _, _)| name.clone()).collect();
    assert_eq!(
        seen,
        expected,
        "every replica answers through the ClusterIP ({} answers)",
        answers.len()
    );

    // Cluster DNS: from inside the client pod's network namespace, its nameserver
    // (the one in its resolv.conf) answers the services' names with their ClusterIPs.
    let resolv =
        stdout(
            &cluster
                .plane
                .kubectl(&["exec", "client", "--", "cat", "/etc/resolv.conf"]),
        );
    let nameserver: std::net::Ipv4Addr = resolv
        .lines()
        .find_map(|l| l.strip_prefix("nameserver "))
        .unwrap_or_else(|| panic!("the pod's resolv.conf: {resolv:?}"))
        .trim()
        .parse()
        .unwrap();
    let client_pod = json(
        &cluster
            .plane
            .kubectl(&["get", "pod", "client", "-o", "json"]),
    );
    let uid = client_pod["metadata"]["uid"].as_str().unwrap();
    let agent = cluster.agents.iter().find(|a| a.name == client).unwrap();
    let pod_netns = agent.data_dir.join("pods").join(uid).join("ns").join("net");
    let node_port_ip = json(
        &cluster
            .plane
            .kubectl(&["get", "svc", "web-np", "-o", "json"]),
    )["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_owned();
    for (name, ip) in [
        ("web.default.svc.cluster.local", &cluster_ip),
        ("web-np.default.svc.cluster.local", &node_port_ip),
    ] {
        let answer = resolve_in(&pod_netns, nameserver, name);
        assert_eq!(answer.as_deref(), Some(ip.as_str()), "{name} from the pod");
    }
    assert_eq!(
        resolve_in(&pod_netns, nameserver, "nope.default.svc.cluster.local"),
        None
    );
    let resolv =
        stdout(
            &cluster
                .plane
                .kubectl(&["exec", "client", "--", "cat", "/etc/resolv.conf"]),
        );
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );

    // NodePort from outside the nodes (the fabric namespace), on each node's address.
    for agent in &cluster.agents {
        let target = SocketAddr::from((agent.node.ip, 30080));
        let stream = cluster.fabric.ns.connect(target).await.unwrap();
        let name = get(stream).await;
        assert!(
            expected.contains(&name),
            "NodePort {target} answered {name:?}"
        );
    }

    // A failing readiness probe takes the pod out of the service.
    let (unready, unready_ip, _) = web[0].clone();
    ok(&cluster
        .plane
        .kubectl(&["exec", &unready, "--", "rm", "/www/index.html"]));
    wait_until(
        "the endpoints to drop the unready pod",
        Duration::from_secs(30),
        || {
            let endpoints =
                json(
                    &cluster
                        .plane
                        .kubectl(&["get", "endpoints", "web", "-o", "json"]),
                );
            let ready: Vec<&str> = endpoints["subsets"][0]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["ip"].as_str())
                .collect();
            (ready.len() == 2 && !ready.contains(&unready_ip.as_str())).then_some(())
        },
    )
    .await;
    let node_a = cluster.agents[0].netns();
    wait_until(
        "node-a's rules to drop the unready pod",
        Duration::from_secs(5),
        || (!rules(node_a).contains(&format!("{unready_ip}:8080"))).then_some(()),
    )
    .await;
    let answers = fetch_from_client(&cluster, &format!("{cluster_ip}:80"), 20);
    assert_eq!(answers.len(), 20, "{answers:?}");
    assert!(
        !answers.contains(&unready),
        "the unready pod still got traffic: {answers:?}"
    );

    // Scaling reprograms the rules within a second of the endpoints changing.
    ok(&cluster
        .plane
        .kubectl(&["scale", "deployment", "web", "--replicas=1"]));
    let remaining = wait_until(
        "the endpoints to shrink to 1",
        Duration::from_secs(30),
        || {
            let endpoints =
                json(
                    &cluster
                        .plane
                        .kubectl(&["get", "endpoints", "web", "-o", "json"]),
                );
            let ready: Vec<String> = endpoints["subsets"][0]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["ip"].as_str().map(str::to_owned))
                .collect();
            (ready.len() == 1).then(|| ready[0].clone())
        },
    )
    .await;
    let changed = Instant::now();
    let gone: Vec<String> = web
        .iter()
        .map(|(_, ip, _)| ip.clone())
        .filter(|ip| *ip != remaining && *ip != unready_ip)
        .collect();
    for agent in &cluster.agents {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let table = rules(agent.netns());
            if gone.iter().all(|ip| !table.contains(&format!("{ip}:8080")))
                && table.contains(&format!("{remaining}:8080"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never dropped {gone:?}:\n{table}",
                agent.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let elapsed = changed.elapsed();
    eprintln!("rules updated {elapsed:?} after the endpoints changed");
    assert!(elapsed < Duration::from_secs(1), "rules took {elapsed:?}");

    // An agent restart keeps established connections: open one through the NodePort,
    // kill -9 and restart node-a's agent (which re-syncs its table), then use it.
    let target = SocketAddr::from((cluster.agents[0].node.ip, 30080));
    let held = cluster.fabric.ns.connect(target).await.unwrap();
    let mut cluster = cluster;
    cluster.agents[0].kill().await;
    cluster.agents[0].restart().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let name = get(held).await;
    assert!(
        !name.is_empty(),
        "the held connection answered after the restart"
    );
    let fresh = cluster.fabric.ns.connect(target).await.unwrap();
    assert_eq!(
        get(fresh).await,
        name,
        "one replica left: the same pod answers"
    );
    ok(&cluster
        .plane
        .kubectl(&["delete", "-f", &file, "--wait=false"]));
}
