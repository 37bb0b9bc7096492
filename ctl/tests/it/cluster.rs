//! A `skiff-control-plane` child process and its admin kubeconfig (HTTPS, the admin's
//! client certificate).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// One control plane, killed (by PID) when dropped.
pub struct ControlPlane {
    /// Holds the data dir and the kubeconfig; removed on drop.
    _dir: TempDir,
    /// `https://127.0.0.1:PORT`.
    pub api: String,
    /// A copy of the control plane's admin kubeconfig, whose current context points at
    /// `api`.
    pub kubeconfig: PathBuf,
    /// TLS for raw requests: the cluster CA, the admin's certificate, HTTP/1.1 only.
    tls: Arc<rustls::ClientConfig>,
    child: Child,
}

/// `target/debug/skiff-control-plane`, next to this test binary (`target/debug/deps/`).
fn control_plane_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .map(|dir| dir.join("skiff-control-plane"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no skiff-control-plane binary above {}: run `cargo build -p skiff-control-plane` first",
                exe.display()
            )
        })
}

impl ControlPlane {
    /// Starts a single-member control plane on ephemeral ports and waits for its API.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(control_plane_binary())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--listen-peer",
                "127.0.0.1:0",
                "--listen-api",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "warn,openraft=error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn skiff-control-plane");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // The reader keeps draining stdout so the member never blocks or fails on a
        // closed pipe; it ends when the process does.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more; keep reading to keep the pipe open.
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let api = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("the control plane announces its API within 60 s");
            if line.contains("serving the API on") {
                break line
                    .rsplit(' ')
                    .next()
                    .expect("address at the end")
                    .to_owned();
            }
        };
        let data = dir.path().join("data");
        // A copy tests may edit.
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::copy(data.join("admin.kubeconfig"), &kubeconfig).expect("copy the kubeconfig");
        let pki = data.join("pki");
        let ca = std::fs::read_to_string(pki.join("ca.crt")).expect("the cluster CA");
        let admin = skiff_pki::KeyPair::load(&pki, "admin").expect("the admin's certificate");
        let mut tls = rustls::ClientConfig::clone(
            &skiff_pki::client_config(&ca, Some(&admin)).expect("a TLS client config"),
        );
        // The raw requests below speak HTTP/1.1.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let control_plane = Self {
            _dir: dir,
            api,
            kubeconfig,
            tls: Arc::new(tls),
            child,
        };
        control_plane.wait_for_namespace("default");
        control_plane
    }

    /// Runs `skiff --kubeconfig <ours> ARGS`.
    pub fn skiff(&self, args: &[&str]) -> Output {
        self.skiff_with_stdin(args, "")
    }

    /// Runs `skiff --kubeconfig <ours> ARGS` with `stdin` as standard input.
    pub fn skiff_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut full = vec![
            "--kubeconfig",
            self.kubeconfig.to_str().expect("utf-8 path"),
        ];
        full.extend_from_slice(args);
        crate::skiff(&full, Some(stdin))
    }

    /// A `skiff` command ready to spawn (for watches), stdout piped.
    pub fn skiff_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_skiff"));
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Sends one raw HTTP/1.1 request to the API as the admin (what the tests do that
    /// `skiff` has no verb for, like writing `/status`); returns the code and the body.
    pub fn http(&self, method: &str, path: &str, content_type: &str, body: &str) -> (u16, String) {
        let address = self.api.trim_start_matches("https://");
        let tcp = std::net::TcpStream::connect(address).expect("connect to the API");
        let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
        let server_name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .expect("the API's host is a server name");
        let session =
            rustls::ClientConnection::new(self.tls.clone(), server_name).expect("a TLS session");
        let mut stream = rustls::StreamOwned::new(session, tcp);
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: {content_type}\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send the request");
        let mut reply = Vec::new();
        // A server that closes without TLS close_notify still sent the whole reply.
        match stream.read_to_end(&mut reply) {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(error) => panic!("reading the reply: {error}"),
        }
        let reply = String::from_utf8_lossy(&reply).into_owned();
        let code = reply
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("an HTTP status line");
        let body = reply
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        (code, body.to_owned())
    }

    /// The system namespaces are created in the background; wait for one.
    fn wait_for_namespace(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let output = self.skiff(&["get", "namespace", name, "-o", "name"]);
            if output.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "namespace {name} never appeared: {}",
                crate::text(&output.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
