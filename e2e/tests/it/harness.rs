//! A control plane per test, a kubeconfig pointing at it, and the clients that talk to
//! it: `kubectl`, `skiff`, and raw HTTPS for inputs no client would send; and a
//! [`Cluster`]: a control plane, a registry and node agents, each node in its own
//! network namespace on a test fabric, so no agent touches the host's network.
//!
//! The API is HTTPS only: clients use the control plane's admin kubeconfig (its client
//! certificate and CA), agents join with its agent token.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::agent::NodeAgent;
use skiff_e2e::netns::{Fabric, Forwarder};
use skiff_e2e::process::{Process, free_port, sibling_binary};
use skiff_e2e::registry::TestRegistry;
use skiff_pki::KeyPair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

/// The workspace root: manifests are addressed from here.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A running single-member control plane and a client setup for it. It runs on the
/// host's loopback ([`ControlPlane::start`]) or inside a test fabric
/// ([`ControlPlane::start_in`]); either way `address` and the kubeconfig name a port
/// on the host's 127.0.0.1, so clients are the same.
pub struct ControlPlane {
    /// `127.0.0.1:PORT` of the API, on the host (forwarded into the fabric if it runs
    /// there).
    pub address: String,
    /// The API's URL as nodes see it: `https://10.77.0.1:PORT` in a fabric, otherwise
    /// `https://{address}`.
    pub server: String,
    /// The admin kubeconfig (in `scratch`): the control plane's, naming
    /// `https://{address}` (its serving certificate always names 127.0.0.1).
    pub kubeconfig: PathBuf,
    /// The control plane's data directory (`pki/`, `admin.kubeconfig`, tokens).
    pub data_dir: PathBuf,
    /// The cluster CA (PEM).
    pub ca_pem: String,
    /// The admin's client certificate (`system:masters`).
    pub admin: KeyPair,
    /// The token agents join with (`DATA/agent-token`).
    pub agent_token: String,
    /// Files a test writes (kubectl's cache, edited manifests).
    pub scratch: tempfile::TempDir,
    process: Process,
    /// Relays `address` to the API inside the fabric; `None` on the host.
    _forwarder: Option<Forwarder>,
}

impl ControlPlane {
    /// Starts `skiff-control-plane` on free ports and waits until it serves.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts `skiff-control-plane` with `extra` flags (e.g. shorter node timeouts).
    pub async fn start_with(extra: &[&str]) -> Self {
        Self::start_at(None, extra).await
    }

    /// Starts `skiff-control-plane` with `extra` flags inside `fabric`, serving the API
    /// on [`Fabric::IP`] (where nodes reach it) and forwarded to the host's loopback.
    pub async fn start_in(fabric: &Fabric, extra: &[&str]) -> Self {
        Self::start_at(Some(fabric), extra).await
    }

    async fn start_at(fabric: Option<&Fabric>, extra: &[&str]) -> Self {
        let binary = sibling_binary("skiff-control-plane").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (listen_peer, listen_api) = match fabric {
            Some(fabric) => (
                format!(
                    "127.0.0.1:{}",
                    fabric.ns.free_port(Ipv4Addr::LOCALHOST.into()).unwrap()
                ),
                format!("{}:0", Fabric::IP),
            ),
            None => (
                format!("127.0.0.1:{}", free_port().unwrap()),
                "127.0.0.1:0".to_owned(),
            ),
        };
        let data_dir = dir.path().to_owned();
        let mut args = vec![
            "--data-dir".to_owned(),
            data_dir.display().to_string(),
            "--listen-peer".to_owned(),
            listen_peer,
            "--listen-api".to_owned(),
            listen_api,
        ];
        if fabric.is_some() {
            // Nodes reach the API on the fabric's bridge; the certificate names it (and
            // 127.0.0.1, where the host's forwarder connects).
            args.extend(["--advertise-address".to_owned(), Fabric::IP.to_string()]);
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let mut process = Process::spawn_in(
            fabric.map(|fabric| &fabric.ns),
            "skiff-control-plane",
            &binary,
            &args,
            dir,
        )
        .unwrap();
        let line = process
            .wait_for_line("serving the API on", Duration::from_secs(60))
            .await
            .unwrap();
        // `… serving the API on https://BOUND as https://ADVERTISED`
        let server = line.rsplit(' ').next().unwrap().to_owned();
        assert!(server.starts_with("https://"), "{line}");
        let (address, forwarder) = match fabric {
            Some(fabric) => {
                let target: SocketAddr = server.trim_start_matches("https://").parse().unwrap();
                let forwarder = fabric.ns.forward(target).unwrap();
                (forwarder.address().to_string(), Some(forwarder))
            }
            None => (server.trim_start_matches("https://").to_owned(), None),
        };
        let pki = data_dir.join("pki");
        let ca_pem = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
        let admin = KeyPair::load(&pki, "admin").unwrap();
        let agent_token = std::fs::read_to_string(data_dir.join("agent-token"))
            .unwrap()
            .trim()
            .to_owned();
        let scratch = tempfile::tempdir().unwrap();
        let kubeconfig = scratch.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            host_kubeconfig(&data_dir.join("admin.kubeconfig"), &address),
        )
        .unwrap();
        let plane = Self {
            address,
            server,
            kubeconfig,
            data_dir,
            ca_pem,
            admin,
            agent_token,
            scratch,
            process,
            _forwarder: forwarder,
        };
        // The system namespaces and then the join tokens' Secrets are created in the
        // background; wait for `default` and for the agent token to work.
        let token_id = skiff_pki::Token::parse(&plane.agent_token).unwrap().id;
        for path in [
            "/api/v1/namespaces/default".to_owned(),
            format!("/api/v1/namespaces/kube-system/secrets/bootstrap-token-{token_id}"),
        ] {
            let mut found = false;
            for _ in 0..200 {
                if plane.http("GET", &path, "", b"").await.0 == 200 {
                    found = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(found, "{path} was not created");
        }
        plane
    }

    /// The control plane's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid().unwrap()
    }

    /// TLS for calling a node agent's own server (logs, exec) from the host as the
    /// admin (`system:masters`, which the agent requires). The agent's certificate is
    /// checked for `node_name`, its DNS name: the host reaches it through a forwarder.
    pub fn agent_tls(&self, node_name: &str) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(
                &self.admin.cert_pem,
                &self.admin.key_pem,
            ))
            .domain_name(node_name)
    }

    /// Runs the real kubectl against this control plane.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.run("kubectl", args, None)
    }

    /// Runs `skiff` against this control plane.
    pub fn skiff(&self, args: &[&str]) -> Output {
        let binary = sibling_binary("skiff").unwrap();
        self.run(binary.to_str().unwrap(), args, None)
    }

    /// Runs a client with `stdin` as its input.
    pub fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = Command::new(program);
        // kubectl's own flags go first: after `exec POD --` everything is the command's.
        if program == "kubectl" {
            command
                .arg("--cache-dir")
                .arg(self.scratch.path().join("kube-cache"));
        }
        command
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.scratch.path())
            .current_dir(workspace())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut input, stdin.unwrap_or_default().as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// Writes `text` to a scratch file and returns its path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.scratch.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// One raw HTTP/1.1 request as the admin; returns the status code and the body as
    /// JSON (or as a JSON string when it is not JSON).
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> (u16, Value) {
        self.http_as(Some(&self.admin), method, path, content_type, body)
            .await
    }

    /// One raw HTTP/1.1 request over TLS presenting `identity`'s client certificate
    /// (`None`: anonymous); returns the status code and the body as JSON (or as a JSON
    /// string when it is not JSON).
    pub async fn http_as(
        &self,
        identity: Option<&KeyPair>,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> (u16, Value) {
        let mut tls =
            rustls::ClientConfig::clone(&skiff_pki::client_config(&self.ca_pem, identity).unwrap());
        // The request below is written as HTTP/1.1.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(&self.address).await.unwrap();
        let server_name = rustls::pki_types::ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let mut stream = TlsConnector::from(Arc::new(tls))
            .connect(server_name, tcp)
            .await
            .unwrap();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.address,
            body.len()
        );
        if !content_type.is_empty() {
            request.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        // The server may answer (413) before reading a large body; a failed write of
        // the rest is expected then.
        let _ = stream.write_all(body).await;
        let mut response = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
            .await
            .expect("the server answers within 30 s");
        // A server closing without TLS close_notify has still sent the whole reply.
        if let Err(error) = read {
            assert_eq!(
                error.kind(),
                std::io::ErrorKind::UnexpectedEof,
                "reading the reply: {error}"
            );
        }
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
        (code, body)
    }
}

/// A whole cluster on one test fabric: the control plane and a registry inside the
/// fabric's namespace (on [`Fabric::IP`]), and one agent per node, each in its own
/// namespace plugged into the fabric. The host reaches the API through the plane's
/// forwarded `address`; nothing runs in the host's network namespace.
///
/// Fields drop in order: the agents (killed, reset inside their namespaces, which are
/// then deleted), the control plane, the registry, and last the fabric.
pub struct Cluster {
    /// One agent per node, in the order the nodes were named.
    pub agents: Vec<NodeAgent>,
    /// The control plane (inside the fabric).
    pub plane: ControlPlane,
    /// A registry the agents trust over plain HTTP (inside the fabric).
    pub registry: TestRegistry,
    /// The fabric joining the nodes.
    pub fabric: Fabric,
}

impl Cluster {
    /// Starts a fabric, a registry, a control plane with `plane_flags`, and an agent
    /// per name in `nodes`, each registered before this returns.
    pub async fn start(nodes: &[&str], plane_flags: &[&str]) -> Self {
        let fabric = Fabric::create().unwrap();
        let registry = TestRegistry::start_in(&fabric).unwrap();
        let plane = ControlPlane::start_in(&fabric, plane_flags).await;
        let mut agents = Vec::new();
        for node in nodes {
            let agent = NodeAgent::start_on(
                &fabric,
                node,
                &plane.server,
                &plane.agent_token,
                &registry.address(),
            )
            .await
            .unwrap();
            agents.push(agent);
        }
        Self {
            agents,
            plane,
            registry,
            fabric,
        }
    }
}

/// The admin kubeconfig at `path` (JSON) for a client on the host: its cluster names
/// `https://{address}` (the forwarder, or the API itself on the host's loopback) and
/// nothing else to fail over to.
fn host_kubeconfig(path: &Path, address: &str) -> String {
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for cluster in config["clusters"].as_array_mut().unwrap() {
        let cluster = cluster["cluster"].as_object_mut().unwrap();
        cluster.insert(
            "server".to_owned(),
            Value::String(format!("https://{address}")),
        );
        cluster.remove("extensions");
    }
    serde_json::to_string_pretty(&config).unwrap()
}

/// A client's stdout.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A client's stderr.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the command succeeded and returns its stdout.
#[track_caller]
pub fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}\n{}",
        stderr(output),
        stdout(output)
    );
    stdout(output)
}

/// Asserts the command failed and returns its stderr.
#[track_caller]
pub fn fails(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "command succeeded unexpectedly: {}",
        stdout(output)
    );
    stderr(output)
}
