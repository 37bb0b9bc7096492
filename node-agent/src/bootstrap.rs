//! The node's TLS credentials: loaded from `DATA/pki/` when it has joined before,
//! otherwise obtained by joining with the bootstrap token (k3s/kubeadm TLS bootstrap):
//! fetch the CA pinned by the token's hash, send a CSR for `system:node:<name>` with
//! the token as bearer to `POST /skiff/v1/join/agent`, keep the signed certificate.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skiff_pki::{KeyPair, Token};
use tokio_util::sync::CancellationToken;

use crate::control::CONNECT_TIMEOUT;

/// The CA certificate's file name under the pki directory.
pub const CA_FILE: &str = "ca.crt";
/// The node key pair's name under the pki directory (`node.crt`, `node.key`).
pub const NODE_PAIR: &str = "node";
/// The group every node certificate carries.
pub const NODES_GROUP: &str = "system:nodes";

/// The node's TLS identity: the cluster CA (to verify servers and callers) and the
/// node's own certificate and key (to present to both).
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The cluster CA certificate (PEM).
    pub ca_pem: String,
    /// The node certificate (CN `system:node:<name>`, O `system:nodes`) and its key.
    pub node: KeyPair,
}

/// Errors getting the node's credentials. [`Error::is_retryable`] tells the ones
/// another attempt (or the next server) may fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node has no credentials yet and no token to join with.
    #[error("--token is required to join {server} for the first time")]
    TokenRequired {
        /// The first server.
        server: String,
    },
    /// The token does not parse.
    #[error("--token: {source}")]
    InvalidToken {
        /// Why.
        #[source]
        source: skiff_pki::Error,
    },
    /// The token lacks the CA hash needed to trust the server on first contact.
    #[error(
        "--token has no CA hash (K10<hash>::<id>.<secret> is required to join {server} for the first time)"
    )]
    NoCaHash {
        /// The first server.
        server: String,
    },
    /// The CA this node already trusts is not the one the token names.
    #[error("{path}: the token's CA hash does not match the CA this node joined with")]
    StoredCaMismatch {
        /// The stored CA file.
        path: PathBuf,
    },
    /// A file under the pki directory could not be read or written.
    #[error("{action} {path}: {message}")]
    Files {
        /// `reading` or `writing`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The CSR could not be made.
    #[error("creating the node's certificate request: {source}")]
    Csr {
        /// Why.
        #[source]
        source: skiff_pki::Error,
    },
    /// The server answered, and its answer means joining cannot succeed (a bad token,
    /// a CA that does not match the token's hash, a malformed answer).
    #[error("joining {server} failed: {message}")]
    Rejected {
        /// The server.
        server: String,
        /// Why (for a bad token the server's Status message, `invalid bootstrap token`).
        message: String,
    },
    /// The server could not be reached or was not ready; the next one may do.
    #[error("joining {server} failed: {message}")]
    Unreachable {
        /// The server.
        server: String,
        /// Why.
        message: String,
    },
}

impl Error {
    /// Whether trying again (or another server) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }
}

/// What the agent does about its credentials at start.
pub enum Plan {
    /// Use the files under the pki directory.
    Load,
    /// Join with this token (its CA hash present).
    Join(Token),
}

impl std::fmt::Debug for Plan {
    /// Names the token by its id only: the secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Plan::Load => f.write_str("Load"),
            Plan::Join(token) => write!(f, "Join({})", token.id),
        }
    }
}

/// Decides between loading and joining: `stored_ca` is the stored CA when all of
/// `ca.crt`, `node.crt` and `node.key` exist. A token given beside stored credentials
/// must name the stored CA (when it names one at all).
pub fn plan(
    stored_ca: Option<(&Path, &str)>,
    token: Option<&str>,
    first_server: &str,
) -> Result<Plan, Error> {
    let token = token
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(|text| Token::parse(text).map_err(|source| Error::InvalidToken { source }))
        .transpose()?;
    match (stored_ca, token) {
        (Some((path, ca_pem)), Some(token)) => match &token.ca_hash {
            Some(hash) if !hash.eq_ignore_ascii_case(&skiff_pki::ca_hash(ca_pem)) => {
                Err(Error::StoredCaMismatch {
                    path: path.to_owned(),
                })
            }
            _ => Ok(Plan::Load),
        },
        (Some(_), None) => Ok(Plan::Load),
        (None, None) => Err(Error::TokenRequired {
            server: first_server.to_owned(),
        }),
        (None, Some(token)) if token.ca_hash.is_none() => Err(Error::NoCaHash {
            server: first_server.to_owned(),
        }),
        (None, Some(token)) => Ok(Plan::Join(token)),
    }
}

/// What joining needs to know.
#[derive(Clone, Debug)]
pub struct JoinConfig {
    /// Where the credentials live (`DATA/pki`).
    pub pki_dir: PathBuf,
    /// The control plane's `https://` URLs, tried in order.
    pub servers: Vec<String>,
    /// The bootstrap token (`--token`).
    pub token: Option<String>,
    /// The node's name: the certificate's CN becomes `system:node:<name>`.
    pub node_name: String,
    /// The node's addresses, for the certificate's IP SANs (the control plane reaches
    /// the agent's own service on them).
    pub addresses: Vec<IpAddr>,
}

/// The node's credentials: loaded when the pki directory has them, else obtained by
/// joining (each server in order; when none can be reached, again with back-off until
/// `shutdown`, which returns `None`).
pub async fn credentials(
    config: &JoinConfig,
    shutdown: &CancellationToken,
) -> Result<Option<Credentials>, Error> {
    let first_server = config.servers.first().map_or("the control plane", |s| s);
    let ca_path = config.pki_dir.join(CA_FILE);
    let stored_ca = if [
        ca_path.clone(),
        config.pki_dir.join(format!("{NODE_PAIR}.crt")),
        config.pki_dir.join(format!("{NODE_PAIR}.key")),
    ]
    .iter()
    .all(|path| path.exists())
    {
        Some(read(&ca_path)?)
    } else {
        None
    };
    let plan = plan(
        stored_ca.as_deref().map(|pem| (ca_path.as_path(), pem)),
        config.token.as_deref(),
        first_server,
    )?;
    let token = match plan {
        Plan::Load => {
            let node = KeyPair::load(&config.pki_dir, NODE_PAIR).map_err(|error| Error::Files {
                action: "reading",
                path: config.pki_dir.join(format!("{NODE_PAIR}.crt")),
                message: error.to_string(),
            })?;
            let ca_pem = stored_ca.expect("Plan::Load is only chosen with a stored CA");
            return Ok(Some(Credentials { ca_pem, node }));
        }
        Plan::Join(token) => token,
    };
    let mut delay = Duration::from_secs(1);
    loop {
        let mut last_error = None;
        for server in &config.servers {
            match join(server, &token, config).await {
                Ok(credentials) => {
                    save(&config.pki_dir, &credentials)?;
                    tracing::info!(%server, node = %config.node_name, "joined the cluster");
                    return Ok(Some(credentials));
                }
                Err(error) if error.is_retryable() => {
                    tracing::warn!(%error, "joining failed; trying the next server");
                    last_error = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        if let Some(error) = last_error {
            tracing::warn!(%error, retry_in = ?delay, "no server could be joined");
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// The join request's body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinRequest<'a> {
    node_name: &'a str,
    csr: &'a str,
    addresses: Vec<String>,
}

/// The join answer's body.
#[derive(Deserialize)]
struct JoinResponse {
    certificate: String,
    ca: String,
}

/// The part of a meta/v1 Status the agent reports.
#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    message: String,
}

/// One join attempt against `server`.
async fn join(server: &str, token: &Token, config: &JoinConfig) -> Result<Credentials, Error> {
    let expected_hash = token
        .ca_hash
        .as_deref()
        .expect("Plan::Join is only chosen for a token with a CA hash");
    let unreachable = |message: String| Error::Unreachable {
        server: server.to_owned(),
        message,
    };
    let rejected = |message: String| Error::Rejected {
        server: server.to_owned(),
        message,
    };
    let ca_pem = skiff_pki::fetch_pinned_ca(server, expected_hash)
        .await
        .map_err(|error| match error {
            skiff_pki::Error::CaHashMismatch { .. } => {
                rejected("the server's CA does not match the token's CA hash".to_owned())
            }
            // A server that answers without a CA may be starting; the next may do.
            skiff_pki::Error::FetchResponse { .. } => unreachable(error_chain(&error)),
            error if error.is_retryable() => unreachable(error_chain(&error)),
            error => rejected(error_chain(&error)),
        })?;
    let user = format!("system:node:{}", config.node_name);
    let (csr, key_pem) = skiff_pki::generate_csr(&user, &[NODES_GROUP.to_owned()])
        .map_err(|source| Error::Csr { source })?;
    let tls = skiff_pki::client_config(&ca_pem, None)
        .map_err(|error| rejected(format!("its CA is unusable: {error}")))?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(rustls::ClientConfig::clone(&tls))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|error| unreachable(error_chain(&error)))?;
    let body = JoinRequest {
        node_name: &config.node_name,
        csr: &csr,
        addresses: config.addresses.iter().map(IpAddr::to_string).collect(),
    };
    let response = client
        .post(format!("{server}/skiff/v1/join/agent"))
        .bearer_auth(token.bearer())
        .json(&body)
        .send()
        .await
        .map_err(|error| unreachable(error_chain(&error)))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|error| unreachable(error_chain(&error)))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<Status>(&bytes)
            .ok()
            .map(|status| status.message)
            .filter(|message| !message.is_empty());
        let message = match status.as_u16() {
            401 | 403 => message.unwrap_or_else(|| "invalid bootstrap token".to_owned()),
            _ => message.unwrap_or_else(|| format!("HTTP {status}")),
        };
        // A server that is starting, has no leader or is overloaded may do later.
        return Err(if status.is_server_error() || status.as_u16() == 429 {
            unreachable(message)
        } else {
            rejected(message)
        });
    }
    let answer: JoinResponse = serde_json::from_slice(&bytes)
        .map_err(|error| rejected(format!("its answer does not decode: {error}")))?;
    if !skiff_pki::ca_hash(&answer.ca).eq_ignore_ascii_case(expected_hash) {
        return Err(rejected(
            "the server's CA does not match the token's CA hash".to_owned(),
        ));
    }
    Ok(Credentials {
        ca_pem: answer.ca,
        node: KeyPair {
            cert_pem: answer.certificate,
            key_pem,
        },
    })
}

/// An error and its sources, `: `-separated (reqwest's own message hides the cause).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads a PEM file.
fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|error| Error::Files {
        action: "reading",
        path: path.to_owned(),
        message: error.to_string(),
    })
}

/// Saves the credentials: the CA first (0644, written atomically), then the node's
/// key pair (atomically, by `KeyPair::save`); only once all three exist does the next
/// start load them rather than join.
fn save(pki_dir: &Path, credentials: &Credentials) -> Result<(), Error> {
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |error: std::io::Error| Error::Files {
            action: "writing",
            path,
            message: error.to_string(),
        }
    };
    std::fs::create_dir_all(pki_dir).map_err(failed(pki_dir))?;
    let ca_path = pki_dir.join(CA_FILE);
    skiff_pki::write_atomic(pki_dir, CA_FILE, credentials.ca_pem.as_bytes(), 0o644).map_err(
        |error| Error::Files {
            action: "writing",
            path: ca_path.clone(),
            message: error.to_string(),
        },
    )?;
    credentials
        .node
        .save(pki_dir, NODE_PAIR)
        .map_err(|error| Error::Files {
            action: "writing",
            path: pki_dir.join(format!("{NODE_PAIR}.crt")),
            message: error.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::{Request, Response};
    use skiff_pki::{Ca, ClientAuth, Issue, Usage};

    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    const SERVER: &str = "https://10.0.0.1:6443";

    /// `plan`'s answer, as text: `Load`, `Join(<id>)` or the error message.
    fn check(stored_ca: Option<&str>, token: Option<&str>, expected: &str) {
        let path = Path::new("/data/pki/ca.crt");
        let answer = match plan(stored_ca.map(|pem| (path, pem)), token, SERVER) {
            Ok(plan) => format!("{plan:?}"),
            Err(error) => error.to_string(),
        };
        assert_eq!(answer, expected, "stored {stored_ca:?}, token {token:?}");
    }

    #[test]
    fn stored_credentials_are_loaded_and_a_token_must_name_their_ca() {
        let ca = Ca::generate("skiff-ca").expect("a CA");
        let other = Ca::generate("other-ca").expect("another CA");
        let token = Token::generate(&ca.hash()).to_string();
        let foreign = Token::generate(&other.hash()).to_string();
        let bare = "abcdef.0123456789abcdef";
        check(Some(&ca.cert_pem), None, "Load");
        check(Some(&ca.cert_pem), Some(""), "Load");
        check(Some(&ca.cert_pem), Some(&token), "Load");
        check(Some(&ca.cert_pem), Some(bare), "Load");
        check(
            Some(&ca.cert_pem),
            Some(&foreign),
            "/data/pki/ca.crt: the token's CA hash does not match the CA this node joined with",
        );
    }

    #[test]
    fn without_stored_credentials_a_token_with_a_ca_hash_is_required() {
        let ca = Ca::generate("skiff-ca").expect("a CA");
        let token = Token::generate(&ca.hash());
        check(
            None,
            None,
            "--token is required to join https://10.0.0.1:6443 for the first time",
        );
        check(
            None,
            Some(" "),
            "--token is required to join https://10.0.0.1:6443 for the first time",
        );
        check(
            None,
            Some(&token.to_string()),
            &format!("Join({})", token.id),
        );
        check(
            None,
            Some("abcdef.0123456789abcdef"),
            "--token has no CA hash (K10<hash>::<id>.<secret> is required to join \
             https://10.0.0.1:6443 for the first time)",
        );
        let invalid = match plan(None, Some("not-a-token"), SERVER) {
            Err(error @ Error::InvalidToken { .. }) => error.to_string(),
            other => panic!("expected InvalidToken, got {other:?}"),
        };
        assert!(invalid.starts_with("--token: "), "{invalid}");
    }

    /// An HTTPS server emulating the control plane's `/cacerts` and
    /// `/skiff/v1/join/agent` for one CA and one valid token.
    struct FakeControlPlane {
        url: String,
        ca: Arc<Ca>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for FakeControlPlane {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl FakeControlPlane {
        async fn start(ca: Ca, token: &Token) -> FakeControlPlane {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let serving = ca
                .issue(&Issue {
                    common_name: "skiff-apiserver".to_owned(),
                    organizations: Vec::new(),
                    dns_names: vec!["localhost".to_owned()],
                    ips: vec!["127.0.0.1".parse().expect("ip")],
                    usage: Usage::Server,
                    validity_days: 1,
                })
                .expect("a serving certificate");
            let tls = skiff_pki::server_config(&ca.cert_pem, &serving, ClientAuth::Optional)
                .expect("a server config");
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("https://{}", listener.local_addr().expect("address"));
            let ca = Arc::new(ca);
            let bearer = format!("Bearer {}", token.bearer());
            let task = tokio::spawn({
                let ca = ca.clone();
                async move {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            return;
                        };
                        let acceptor = acceptor.clone();
                        let ca = ca.clone();
                        let bearer = bearer.clone();
                        tokio::spawn(async move {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let service = hyper::service::service_fn(move |request| {
                                let ca = ca.clone();
                                let bearer = bearer.clone();
                                async move { Ok::<_, Infallible>(answer(request, &ca, &bearer).await) }
                            });
                            let _ = hyper_util::server::conn::auto::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            )
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                        });
                    }
                }
            });
            FakeControlPlane { url, ca, task }
        }
    }

    /// The fake control plane's answer to one request.
    async fn answer(
        request: Request<hyper::body::Incoming>,
        ca: &Ca,
        bearer: &str,
    ) -> Response<Full<Bytes>> {
        let reply = |code: u16, body: String| {
            Response::builder()
                .status(code)
                .body(Full::new(Bytes::from(body)))
                .expect("a response")
        };
        match (request.method().as_str(), request.uri().path()) {
            ("GET", "/cacerts") => reply(200, ca.cert_pem.clone()),
            ("POST", "/skiff/v1/join/agent") => {
                let authorized = request
                    .headers()
                    .get("authorization")
                    .is_some_and(|value| value == bearer);
                if !authorized {
                    let status = serde_json::json!({
                        "kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "message": "invalid bootstrap token", "reason": "Unauthorized", "code": 401,
                    });
                    return reply(401, status.to_string());
                }
                let body = request
                    .into_body()
                    .collect()
                    .await
                    .expect("a body")
                    .to_bytes();
                let join: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
                let node_name = join["nodeName"].as_str().expect("nodeName");
                let ips = join["addresses"]
                    .as_array()
                    .expect("addresses")
                    .iter()
                    .map(|ip| ip.as_str().expect("a string").parse().expect("an IP"))
                    .collect();
                let certificate = ca
                    .sign_csr(
                        join["csr"].as_str().expect("csr"),
                        &Issue {
                            common_name: format!("system:node:{node_name}"),
                            organizations: vec![NODES_GROUP.to_owned()],
                            dns_names: vec![node_name.to_owned()],
                            ips,
                            usage: Usage::ServerAndClient,
                            validity_days: 365,
                        },
                    )
                    .expect("a signed certificate");
                let answer = serde_json::json!({ "certificate": certificate, "ca": ca.cert_pem });
                reply(200, answer.to_string())
            }
            _ => reply(404, String::new()),
        }
    }

    /// A URL nothing listens on.
    async fn closed_server() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("https://{}", listener.local_addr().expect("address"));
        drop(listener);
        url
    }

    fn join_config(pki_dir: &Path, servers: Vec<String>, token: Option<String>) -> JoinConfig {
        JoinConfig {
            pki_dir: pki_dir.to_owned(),
            servers,
            token,
            node_name: "n1".to_owned(),
            addresses: vec!["127.0.0.1".parse().expect("ip")],
        }
    }

    #[tokio::test]
    async fn joining_fails_over_to_the_second_server_saves_and_later_loads() {
        let ca = Ca::generate("skiff-ca").expect("a CA");
        let token = Token::generate(&ca.hash());
        let plane = FakeControlPlane::start(ca, &token).await;
        let down = closed_server().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let pki_dir = dir.path().join("pki");
        let config = join_config(
            &pki_dir,
            vec![down.clone(), plane.url.clone()],
            Some(token.to_string()),
        );
        let shutdown = CancellationToken::new();
        let joined = credentials(&config, &shutdown)
            .await
            .expect("joined")
            .expect("not shut down");
        assert_eq!(joined.ca_pem, plane.ca.cert_pem);
        let leaf = skiff_pki::certs_from_pem(&joined.node.cert_pem).expect("a certificate");
        let identity = skiff_pki::identity_of(leaf[0].as_ref()).expect("an identity");
        assert_eq!(identity.user, "system:node:n1");
        assert_eq!(identity.groups, [NODES_GROUP]);
        for file in ["ca.crt", "node.crt", "node.key"] {
            assert!(pki_dir.join(file).exists(), "{file}");
        }
        let mode = std::fs::metadata(pki_dir.join("ca.crt"))
            .expect("ca.crt")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);

        // The next start loads the files: no server is needed, and neither is the token.
        drop(plane);
        for token in [None, Some(token.to_string())] {
            let config = join_config(&pki_dir, vec![down.clone()], token);
            let loaded = credentials(&config, &shutdown)
                .await
                .expect("loaded")
                .expect("not shut down");
            assert_eq!(loaded.ca_pem, joined.ca_pem);
            assert_eq!(loaded.node, joined.node);
        }
        // A token of another cluster is refused.
        let other = Token::generate(&Ca::generate("other").expect("a CA").hash());
        let config = join_config(&pki_dir, vec![down], Some(other.to_string()));
        let error = credentials(&config, &shutdown).await.expect_err("refused");
        assert!(matches!(error, Error::StoredCaMismatch { .. }), "{error}");
    }

    #[tokio::test]
    async fn a_bad_token_is_refused_with_the_servers_message() {
        let ca = Ca::generate("skiff-ca").expect("a CA");
        let hash = ca.hash();
        let plane = FakeControlPlane::start(ca, &Token::generate(&hash)).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let wrong = Token::generate(&hash);
        let config = join_config(dir.path(), vec![plane.url.clone()], Some(wrong.to_string()));
        let error = credentials(&config, &CancellationToken::new())
            .await
            .expect_err("refused");
        assert!(!error.is_retryable());
        assert_eq!(
            error.to_string(),
            format!("joining {} failed: invalid bootstrap token", plane.url)
        );
        assert!(!dir.path().join("node.crt").exists());
    }

    #[tokio::test]
    async fn a_server_with_another_ca_is_refused() {
        let ca = Ca::generate("skiff-ca").expect("a CA");
        let impostor = Ca::generate("impostor").expect("a CA");
        let token = Token::generate(&ca.hash());
        let plane = FakeControlPlane::start(impostor, &token).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = join_config(dir.path(), vec![plane.url.clone()], Some(token.to_string()));
        let error = credentials(&config, &CancellationToken::new())
            .await
            .expect_err("refused");
        assert_eq!(
            error.to_string(),
            format!(
                "joining {} failed: the server's CA does not match the token's CA hash",
                plane.url
            )
        );
    }

    #[tokio::test]
    async fn without_a_reachable_server_joining_retries_until_shutdown() {
        let ca = Ca::generate("skiff-ca").expect("a CA");
        let token = Token::generate(&ca.hash());
        let dir = tempfile::tempdir().expect("tempdir");
        let config = join_config(
            dir.path(),
            vec![closed_server().await],
            Some(token.to_string()),
        );
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.cancel();
        });
        let outcome = credentials(&config, &shutdown).await.expect("no error");
        assert!(outcome.is_none());
        stopper.await.expect("the stopper");
    }
}
