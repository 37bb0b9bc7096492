//! `skiff` over https: certificate authorities, client certificates and bearer tokens
//! from the kubeconfig, against a minimal TLS server that requires a client certificate.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{skiff, text};

const CA: &[u8] = include_bytes!("testdata/ca.crt");
const SERVER_CERT: &[u8] = include_bytes!("testdata/server.crt");
const SERVER_KEY: &[u8] = include_bytes!("testdata/server.key");
const CLIENT_CERT: &[u8] = include_bytes!("testdata/client.crt");
const CLIENT_KEY: &[u8] = include_bytes!("testdata/client.key");

const POD_LIST: &str = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[{"metadata":{"name":"tls-pod","namespace":"default"}}]}"#;

/// An https server answering every request with [`POD_LIST`]; it records request heads.
struct TlsServer {
    url: String,
    heads: Arc<Mutex<Vec<String>>>,
}

impl TlsServer {
    fn start() -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(CA) {
            roots.add(certificate.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let certificates: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(SERVER_CERT)
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_slice(SERVER_KEY).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certificates, key)
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = heads.clone();
        // Serves until the test process exits; a failed handshake just drops the connection.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let connection = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(connection, stream);
                let mut head = String::new();
                let mut reader = BufReader::new(&mut tls);
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => head.push_str(&line),
                    }
                }
                if head.is_empty() {
                    continue;
                }
                recorded.lock().unwrap().push(head);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{POD_LIST}",
                    POD_LIST.len()
                );
                let _ = tls.write_all(reply.as_bytes());
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        Self { url, heads }
    }
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Writes a kubeconfig with the given cluster and user fields (YAML flow maps).
fn kubeconfig(dir: &Path, cluster: &str, user: &str) -> String {
    let path = dir.join("config");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters: [{{name: k, cluster: {{{cluster}}}}}]\nusers: [{{name: u, user: {{{user}}}}}]\ncontexts: [{{name: c, context: {{cluster: k, user: u}}}}]\n"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

fn get_pods(kubeconfig: &str) -> std::process::Output {
    skiff(
        &["--kubeconfig", kubeconfig, "get", "pods", "-o", "name"],
        None,
    )
}

#[test]
fn https_with_inline_authority_client_certificate_and_token() {
    let server = TlsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(
        dir.path(),
        &format!(
            "server: '{}', certificate-authority-data: {}",
            server.url,
            base64(CA)
        ),
        &format!(
            "client-certificate-data: {}, client-key-data: {}, token: s3cret",
            base64(CLIENT_CERT),
            base64(CLIENT_KEY)
        ),
    );
    let output = get_pods(&config);
    assert_eq!(
        text(&output.stdout),
        "pod/tls-pod\n",
        "{}",
        text(&output.stderr)
    );
    let heads = server.heads.lock().unwrap();
    let head = heads.last().unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("get /api/v1/namespaces/default/pods "),
        "{head}"
    );
    assert!(
        head.contains("\r\nauthorization: bearer s3cret\r\n"),
        "{head}"
    );
}

#[test]
fn https_with_files_relative_to_the_kubeconfig() {
    let server = TlsServer::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crt"), CA).unwrap();
    std::fs::write(dir.path().join("client.crt"), CLIENT_CERT).unwrap();
    std::fs::write(dir.path().join("client.key"), CLIENT_KEY).unwrap();
    let config = kubeconfig(
        dir.path(),
        &format!("server: '{}', certificate-authority: ca.crt", server.url),
        "client-certificate: client.crt, client-key: client.key",
    );
    let output = get_pods(&config);
    assert_eq!(
        text(&output.stdout),
        "pod/tls-pod\n",
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn https_insecure_skip_verify_accepts_an_unknown_authority() {
    let server = TlsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let client = format!(
        "client-certificate-data: {}, client-key-data: {}",
        base64(CLIENT_CERT),
        base64(CLIENT_KEY)
    );
    let config = kubeconfig(
        dir.path(),
        &format!("server: '{}', insecure-skip-tls-verify: true", server.url),
        &client,
    );
    assert_eq!(text(&get_pods(&config).stdout), "pod/tls-pod\n");

    // Without the authority or the flag, the server's certificate is rejected.
    let config = kubeconfig(dir.path(), &format!("server: '{}'", server.url), &client);
    let output = get_pods(&config);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("Unable to connect to the server: "),
        "{stderr}"
    );
    assert!(stderr.contains("certificate"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn https_without_a_client_certificate_is_refused_by_the_server() {
    let server = TlsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(
        dir.path(),
        &format!(
            "server: '{}', certificate-authority-data: {}",
            server.url,
            base64(CA)
        ),
        "token: s3cret",
    );
    let output = get_pods(&config);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("Unable to connect to the server: "),
        "{stderr}"
    );

    let config = kubeconfig(
        dir.path(),
        &format!(
            "server: '{}', certificate-authority-data: {}, insecure-skip-tls-verify: true",
            server.url,
            base64(CA)
        ),
        "token: s3cret",
    );
    assert_eq!(
        text(&get_pods(&config).stderr),
        "error: specifying a root certificates file with the insecure flag is not allowed\n"
    );
}

#[test]
fn https_fails_over_to_the_next_server_of_the_servers_extension() {
    let server = TlsServer::start();
    // A port that was bound and closed again: connecting is refused.
    let closed = format!(
        "https://{}",
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    let client = format!(
        "client-certificate-data: {}, client-key-data: {}",
        base64(CLIENT_CERT),
        base64(CLIENT_KEY)
    );
    let config = kubeconfig(
        dir.path(),
        &format!(
            "server: '{closed}', certificate-authority-data: {}, extensions: [{{name: skiff.io/servers, extension: {{servers: ['{closed}', '{}']}}}}]",
            base64(CA),
            server.url
        ),
        &client,
    );
    let output = get_pods(&config);
    assert_eq!(
        text(&output.stdout),
        "pod/tls-pod\n",
        "{}",
        text(&output.stderr)
    );

    // Without the extension the closed server is the only one.
    let config = kubeconfig(
        dir.path(),
        &format!(
            "server: '{closed}', certificate-authority-data: {}",
            base64(CA)
        ),
        &client,
    );
    let output = get_pods(&config);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("was refused"),
        "{}",
        text(&output.stderr)
    );
}
