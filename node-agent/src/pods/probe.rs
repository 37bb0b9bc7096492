//! Liveness, readiness and startup probes as kubelet runs them: `exec`, `httpGet`
//! (success is 200–399) and `tcpSocket`, with `initialDelaySeconds`,
//! `periodSeconds`, `timeoutSeconds` and the success/failure thresholds. Liveness and
//! readiness wait for the startup probe to succeed; a startup probe stops after its
//! first success. Each probe loop publishes its verdict on a watch channel.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// Restarts the container when it fails.
    Liveness,
    /// Gates the container's readiness.
    Readiness,
    /// Holds back the other probes until it succeeds; restarts when it fails.
    Startup,
}

impl ProbeKind {
    /// Kubernetes' name (`liveness`, `readiness`, `startup`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Liveness => "liveness",
            Self::Readiness => "readiness",
            Self::Startup => "startup",
        }
    }
}

/// The result of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    /// It passed.
    Success,
    /// It failed, for this reason.
    Failure(String),
    /// It could not be run (not the container's fault); the verdict stays.
    Unknown(String),
}

/// An exec probe's outcome, later: the command's exit code and (capped) output.
pub type ExecFuture<'a> =
    Pin<Box<dyn Future<Output = std::io::Result<(i32, Vec<u8>)>> + Send + 'a>>;

/// Runs exec probes in the container.
pub trait ExecProbe: Send + Sync {
    /// Runs `command` in the container within `timeout`; its exit code and (capped)
    /// output.
    fn exec(&self, command: Vec<String>, timeout: Duration) -> ExecFuture<'_>;
}

/// Where probes go.
#[derive(Clone)]
pub struct ProbeTarget {
    /// The pod's network namespace (nsfs file); `None` for the host's.
    pub netns: Option<PathBuf>,
    /// The pod's IP, once it has one (else 127.0.0.1 inside `netns`).
    pub pod_ip: Option<IpAddr>,
    /// The container, for exec probes.
    pub exec: Arc<dyn ExecProbe>,
}

/// A probe loop's current verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// `None` until the first threshold is reached.
    pub healthy: Option<bool>,
    /// Why it last failed.
    pub message: String,
}

/// A running probe loop; dropping it stops the loop.
pub struct ProbeHandle {
    verdict: watch::Receiver<Verdict>,
    task: tokio::task::JoinHandle<()>,
}

impl ProbeHandle {
    /// The verdict, as it changes.
    pub fn verdict(&self) -> watch::Receiver<Verdict> {
        self.verdict.clone()
    }
}

impl Drop for ProbeHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts probing: waits for `gate` (the startup probe's verdict) to be healthy if
/// given, then `initialDelaySeconds`, then probes every `periodSeconds`.
pub fn spawn_probe_loop(
    kind: ProbeKind,
    probe: Probe,
    container: Container,
    target: ProbeTarget,
    gate: Option<watch::Receiver<Verdict>>,
) -> ProbeHandle {
    let (sender, verdict) = watch::channel(Verdict::default());
    let task = tokio::spawn(async move {
        if let Some(mut gate) = gate
            && gate.wait_for(|v| v.healthy == Some(true)).await.is_err()
        {
            return;
        }
        let seconds = |value: Option<i32>, default: i32| {
            Duration::from_secs(u64::try_from(value.unwrap_or(default).max(0)).unwrap_or(0))
        };
        tokio::time::sleep(seconds(probe.initial_delay_seconds, 0)).await;
        let period = seconds(probe.period_seconds, 10).max(Duration::from_secs(1));
        let success_threshold =
            u32::try_from(probe.success_threshold.unwrap_or(1).max(1)).unwrap_or(1);
        let failure_threshold =
            u32::try_from(probe.failure_threshold.unwrap_or(3).max(1)).unwrap_or(3);
        let (mut successes, mut failures) = (0u32, 0u32);
        loop {
            match probe_once(&probe, &container, &target).await {
                ProbeResult::Success => {
                    successes += 1;
                    failures = 0;
                    if successes >= success_threshold {
                        sender.send_if_modified(|v| update(v, true, String::new()));
                        if kind == ProbeKind::Startup {
                            return;
                        }
                    }
                }
                ProbeResult::Failure(message) => {
                    failures += 1;
                    successes = 0;
                    if failures >= failure_threshold {
                        let message =
                            format!("{} probe failed: {message}", capitalized(kind.name()));
                        sender.send_if_modified(|v| update(v, false, message));
                    }
                }
                ProbeResult::Unknown(message) => {
                    tracing::debug!(container = %container.name, probe = kind.name(), %message, "probe could not run");
                }
            }
            tokio::time::sleep(period).await;
        }
    });
    ProbeHandle { verdict, task }
}

fn update(verdict: &mut Verdict, healthy: bool, message: String) -> bool {
    let new = Verdict {
        healthy: Some(healthy),
        message,
    };
    let changed = *verdict != new;
    *verdict = new;
    changed
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Runs the probe once.
pub async fn probe_once(probe: &Probe, container: &Container, target: &ProbeTarget) -> ProbeResult {
    let timeout =
        Duration::from_secs(u64::try_from(probe.timeout_seconds.unwrap_or(1).max(1)).unwrap_or(1));
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        return match target.exec.exec(command, timeout).await {
            Ok((0, _)) => ProbeResult::Success,
            Ok((code, output)) => ProbeResult::Failure(format!(
                "command exited with {code}: {}",
                String::from_utf8_lossy(&output).trim()
            )),
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
                ProbeResult::Failure(format!("command timed out after {timeout:?}"))
            }
            Err(error) => ProbeResult::Unknown(error.to_string()),
        };
    }
    if let Some(http) = &probe.http_get {
        let Some(port) = resolve_port(&http.port, container) else {
            return ProbeResult::Unknown(format!(
                "port {:?} not found in the container",
                http.port
            ));
        };
        if http
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"))
        {
            return ProbeResult::Unknown("HTTPS probes are not supported yet".into());
        }
        let host = http.host.as_deref().and_then(|h| h.parse().ok());
        let address = SocketAddr::new(
            host.or(target.pod_ip)
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            port,
        );
        let path = http.path.clone().unwrap_or_else(|| "/".to_owned());
        let headers: Vec<(String, String)> = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        return match tokio::time::timeout(
            timeout,
            http_get(target, address, &path, &headers, timeout),
        )
        .await
        {
            Ok(Ok(status)) if (200..400).contains(&status) => ProbeResult::Success,
            Ok(Ok(status)) => {
                ProbeResult::Failure(format!("HTTP probe failed with statuscode: {status}"))
            }
            Ok(Err(error)) => {
                ProbeResult::Failure(format!("Get \"http://{address}{path}\": {error}"))
            }
            Err(_) => ProbeResult::Failure(format!(
                "Get \"http://{address}{path}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )),
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = resolve_port(&tcp.port, container) else {
            return ProbeResult::Unknown(format!("port {:?} not found in the container", tcp.port));
        };
        let host = tcp.host.as_deref().and_then(|h| h.parse().ok());
        let address = SocketAddr::new(
            host.or(target.pod_ip)
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            port,
        );
        return match crate::runtime::netns::connect_tcp(netns(target, host), address, timeout).await
        {
            Ok(_) => ProbeResult::Success,
            Err(error) => ProbeResult::Failure(format!("dial tcp {address}: {error}")),
        };
    }
    ProbeResult::Unknown(
        "the probe has no handler Skiff supports (exec, httpGet, tcpSocket)".into(),
    )
}

/// The namespace to connect from: the pod's, unless an explicit host is given (that
/// is reached from the node, as kubelet does).
fn netns(target: &ProbeTarget, host: Option<IpAddr>) -> Option<&std::path::Path> {
    if host.is_some() || target.pod_ip.is_some() {
        None
    } else {
        target.netns.as_deref()
    }
}

/// A probe's port: a number, or the name of one of the container's ports.
fn resolve_port(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(number) => u16::try_from(*number).ok(),
        IntOrString::String(name) => match name.parse::<u16>() {
            Ok(number) => Some(number),
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok()),
        },
    }
}

/// One HTTP/1.1 GET; returns the status code.
async fn http_get(
    target: &ProbeTarget,
    address: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> std::io::Result<u16> {
    let host_override = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("host"));
    let mut stream =
        crate::runtime::netns::connect_tcp(netns(target, None), address, timeout).await?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n",
        host_override.map_or_else(|| address.to_string(), |(_, v)| v.clone())
    );
    for (name, value) in headers {
        if !name.eq_ignore_ascii_case("host") {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    // The status line is all we need; read at most 10 KiB.
    let mut response = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    while !response.windows(2).any(|w| w == b"\r\n") && response.len() < 10 * 1024 {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buffer[..n]);
    }
    let line = String::from_utf8_lossy(&response);
    line.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("malformed HTTP response"))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Exec probes answered from a script of exit codes.
    struct Scripted(Mutex<Vec<i32>>);

    impl ExecProbe for Scripted {
        fn exec(
            &self,
            _command: Vec<String>,
            _timeout: Duration,
        ) -> Pin<Box<dyn Future<Output = std::io::Result<(i32, Vec<u8>)>> + Send + '_>> {
            let code = self.0.lock().expect("lock").pop().unwrap_or(0);
            Box::pin(async move { Ok((code, b"out".to_vec())) })
        }
    }

    fn probe(value: serde_json::Value) -> Probe {
        serde_json::from_value(value).expect("probe")
    }

    fn container() -> Container {
        serde_json::from_value(
            serde_json::json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}),
        )
        .expect("container")
    }

    fn target(codes: Vec<i32>) -> ProbeTarget {
        ProbeTarget {
            netns: None,
            pod_ip: None,
            exec: Arc::new(Scripted(Mutex::new(codes.into_iter().rev().collect()))),
        }
    }

    #[test]
    fn named_ports_resolve_against_the_container() {
        let c = container();
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Some(8080)
        );
        assert_eq!(resolve_port(&IntOrString::Int(81), &c), Some(81));
        assert_eq!(resolve_port(&IntOrString::String("nope".into()), &c), None);
    }

    #[tokio::test]
    async fn exec_probes_pass_on_exit_zero() {
        let exec = probe(serde_json::json!({"exec": {"command": ["true"]}}));
        assert_eq!(
            probe_once(&exec, &container(), &target(vec![0])).await,
            ProbeResult::Success
        );
        let failed = probe_once(&exec, &container(), &target(vec![2])).await;
        assert_eq!(
            failed,
            ProbeResult::Failure("command exited with 2: out".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn thresholds_decide_the_verdict() {
        let exec = probe(
            serde_json::json!({"exec": {"command": ["x"]}, "periodSeconds": 1, "failureThreshold": 3}),
        );
        let handle = spawn_probe_loop(
            ProbeKind::Liveness,
            exec,
            container(),
            target(vec![0, 1, 1, 0, 1, 1, 1]),
            None,
        );
        let mut verdict = handle.verdict();
        verdict
            .wait_for(|v| v.healthy == Some(true))
            .await
            .expect("healthy");
        // Two failures, a success, then three failures: only then unhealthy.
        let unhealthy = verdict
            .wait_for(|v| v.healthy == Some(false))
            .await
            .expect("unhealthy")
            .clone();
        assert!(
            unhealthy
                .message
                .starts_with("Liveness probe failed: command exited with 1"),
            "{unhealthy:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_waits_for_the_startup_probe() {
        let (gate_sender, gate) = watch::channel(Verdict::default());
        let exec = probe(
            serde_json::json!({"exec": {"command": ["x"]}, "periodSeconds": 1, "failureThreshold": 1}),
        );
        let handle = spawn_probe_loop(
            ProbeKind::Liveness,
            exec,
            container(),
            target(vec![1]),
            Some(gate),
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            handle.verdict().borrow().healthy,
            None,
            "no probing before startup succeeds"
        );
        gate_sender.send_replace(Verdict {
            healthy: Some(true),
            message: String::new(),
        });
        let mut verdict = handle.verdict();
        verdict
            .wait_for(|v| v.healthy == Some(false))
            .await
            .expect("probed");
    }

    #[tokio::test]
    async fn tcp_and_http_probes_reach_a_real_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = vec![0u8; 4096];
                let n = socket.read(&mut request).await.unwrap_or(0);
                let text = String::from_utf8_lossy(&request[..n]).into_owned();
                let status = if text.starts_with("GET /healthz ") {
                    "200 OK"
                } else {
                    "404 Not Found"
                };
                let _ = socket
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let c = container();
        let t = target(vec![]);
        let ok = probe(serde_json::json!({"httpGet": {"path": "/healthz", "port": port}}));
        assert_eq!(probe_once(&ok, &c, &t).await, ProbeResult::Success);
        let missing = probe(serde_json::json!({"httpGet": {"path": "/nope", "port": port}}));
        assert_eq!(
            probe_once(&missing, &c, &t).await,
            ProbeResult::Failure("HTTP probe failed with statuscode: 404".into())
        );
        let tcp = probe(serde_json::json!({"tcpSocket": {"port": port}}));
        assert_eq!(probe_once(&tcp, &c, &t).await, ProbeResult::Success);
        server.abort();
        let closed = probe(serde_json::json!({"tcpSocket": {"port": port}}));
        let _ = server.await;
        assert!(matches!(
            probe_once(&closed, &c, &t).await,
            ProbeResult::Failure(_)
        ));
    }
}
