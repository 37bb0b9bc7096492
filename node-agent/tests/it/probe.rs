//! Probes and connections into a pod's network namespace, against a real sandbox and
//! a real busybox httpd listening only inside it.

use std::sync::Arc;
use std::time::Duration;

use skiff_node_agent::pods::probe::{ExecProbe, ProbeResult, ProbeTarget, probe_once};
use skiff_node_agent::runtime::netns::connect_tcp;
use skiff_node_agent::runtime::sandbox::Sandbox;

/// Exec probes are not under test here.
struct NoExec;

impl ExecProbe for NoExec {
    fn exec(
        &self,
        _command: Vec<String>,
        _timeout: Duration,
    ) -> skiff_node_agent::pods::probe::ExecFuture<'_> {
        Box::pin(async { Err(std::io::Error::other("no exec")) })
    }
}

/// Kills the server by PID on drop.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_reach_ports_inside_the_pod_network_namespace_only() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::create(&dir.path().join("pod"), "probed", false)
        .await
        .unwrap();
    let netns = sandbox.namespace_path("network").unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("healthz"), "ok").unwrap();
    let port = 40000 + u16::try_from(rand::random::<u32>() % 20000).unwrap();
    let server = Server(
        std::process::Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args([
                "busybox",
                "httpd",
                "-f",
                "-p",
                &format!("127.0.0.1:{port}"),
                "-h",
            ])
            .arg(&www)
            .spawn()
            .unwrap(),
    );
    let address = format!("127.0.0.1:{port}").parse().unwrap();
    let mut connected = false;
    for _ in 0..100 {
        if connect_tcp(Some(&netns), address, Duration::from_secs(1))
            .await
            .is_ok()
        {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(connected, "httpd inside the namespace answers");
    assert!(
        connect_tcp(None, address, Duration::from_secs(1))
            .await
            .is_err(),
        "nothing listens on the host"
    );

    let target = ProbeTarget {
        netns: Some(netns.clone()),
        pod_ip: None,
        exec: Arc::new(NoExec),
    };
    let container = serde_json::from_value(serde_json::json!({"name": "c"})).unwrap();
    let probe = |value: serde_json::Value| serde_json::from_value(value).unwrap();
    let ok = probe(serde_json::json!({"httpGet": {"path": "/healthz", "port": port}}));
    assert_eq!(
        probe_once(&ok, &container, &target).await,
        ProbeResult::Success
    );
    let missing = probe(serde_json::json!({"httpGet": {"path": "/missing", "port": port}}));
    assert_eq!(
        probe_once(&missing, &container, &target).await,
        ProbeResult::Failure("HTTP probe failed with statuscode: 404".into())
    );
    let tcp = probe(serde_json::json!({"tcpSocket": {"port": port}}));
    assert_eq!(
        probe_once(&tcp, &container, &target).await,
        ProbeResult::Success
    );
    drop(server);
    let closed = probe(serde_json::json!({"tcpSocket": {"port": port}}));
    assert!(matches!(
        probe_once(&closed, &container, &target).await,
        ProbeResult::Failure(_)
    ));
    sandbox.remove().await.unwrap();
}
