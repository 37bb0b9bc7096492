//! The agent's own gRPC service (`Agent` in `proto/skiff/node.proto`): container logs and
//! exec, for the control plane to proxy `kubectl logs` and `kubectl exec` to; served
//! over TLS with the node's certificate, to callers presenting a certificate from the
//! cluster CA in group `system:masters` (the control plane's `kubelet-client`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use skiff_proto::node::agent_server::Agent;
use skiff_proto::node::{ExecInput, ExecOutput, LogChunk, LogsRequest, exec_input, exec_output};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use crate::pods::instances;
use crate::runtime::container::{Container, ContainerState, RuntimeConfig};
use crate::runtime::logs::{self, LogOptions};

/// The group a caller of the agent's service must be in (the control plane calls with
/// its `kubelet-client` certificate, CN `skiff-apiserver`, O `system:masters`).
pub const MASTERS_GROUP: &str = "system:masters";

/// How long a caller may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `service` on `listener` until `shutdown`: over TLS with `tls` (the node's
/// certificate, client certificates required, see [`skiff_pki::server_config`]) and
/// then only to callers in group `system:masters`; without `tls` in plain text to
/// anyone (in-process tests and `http://` clusters).
pub async fn serve(
    listener: TcpListener,
    service: AgentService,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let require_masters = tls.is_some();
    let agent = skiff_proto::node::agent_server::AgentServer::with_interceptor(
        service,
        move |request: Request<()>| {
            if require_masters {
                authorize(&request)?;
            }
            Ok(request)
        },
    );
    let mut server = tonic::transport::Server::builder().tcp_nodelay(true);
    let router = server.add_service(agent);
    match tls {
        None => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await
        }
        Some(tls) => {
            let (sender, receiver) = mpsc::channel(16);
            let handshakes = TaskTracker::new();
            let accepting = accept_tls(listener, tls, sender, handshakes.clone(), shutdown.clone());
            let serving = router.serve_with_incoming_shutdown(
                ReceiverStream::new(receiver),
                shutdown.cancelled_owned(),
            );
            let (_, served) = tokio::join!(accepting, serving);
            handshakes.close();
            handshakes.wait().await;
            served
        }
    }
}

/// Accepts connections until `shutdown` and hands each one, once its TLS handshake is
/// done, to `sender`; handshakes run concurrently so a slow caller blocks no other.
async fn accept_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    sender: mpsc::Sender<std::io::Result<tokio_rustls::server::TlsStream<TcpStream>>>,
    handshakes: TaskTracker,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let sender = sender.clone();
        handshakes.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = sender.send(Ok(stream)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Lets a call through only when the caller's client certificate (already verified
/// against the cluster CA by the TLS handshake) carries group `system:masters`.
fn authorize(request: &Request<()>) -> Result<(), Status> {
    let certificates = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let leaf = certificates
        .first()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let identity = skiff_pki::identity_of(leaf.as_ref())
        .map_err(|error| Status::unauthenticated(format!("the client certificate: {error}")))?;
    if identity.groups.iter().any(|group| group == MASTERS_GROUP) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "user {:?} (groups {:?}) cannot use the node agent's API (group {MASTERS_GROUP} is required)",
            identity.user, identity.groups
        )))
    }
}

/// A stream of replies.
type ReplyStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Serves logs and exec of this node's containers.
pub struct AgentService {
    runtime: RuntimeConfig,
}

impl AgentService {
    /// A service over the containers of `runtime`.
    pub fn new(runtime: RuntimeConfig) -> Self {
        Self { runtime }
    }

    /// The current (or, with `previous`, the one before) instance of `container` of the
    /// pod `uid`; an empty name means the pod's only container.
    async fn find(&self, uid: &str, container: &str, previous: bool) -> Result<Container, Status> {
        let name = if container.is_empty() {
            let mut names: Vec<String> = Container::list(&self.runtime)
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .iter()
                .filter(|c| {
                    c.labels()
                        .get(crate::pods::labels::POD_UID)
                        .map(String::as_str)
                        == Some(uid)
                })
                .filter_map(|c| c.labels().get(crate::pods::labels::CONTAINER_NAME).cloned())
                .collect();
            names.sort();
            names.dedup();
            match names.as_slice() {
                [only] => only.clone(),
                [] => {
                    return Err(Status::not_found(format!(
                        "pod {uid} has no containers on this node"
                    )));
                }
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "a container name must be specified, choose one of: [{}]",
                        names.join(" ")
                    )));
                }
            }
        } else {
            container.to_owned()
        };
        let mut found = instances(&self.runtime, uid, &name)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let current = found.pop();
        let wanted = if previous { found.pop() } else { current };
        wanted.ok_or_else(|| {
            if previous {
                Status::not_found(format!(
                    "previous terminated container {name:?} in pod {uid:?} not found"
                ))
            } else {
                Status::not_found(format!(
                    "container {name:?} in pod {uid:?} is not on this node"
                ))
            }
        })
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    type LogsStream = ReplyStream<LogChunk>;

    async fn logs(
        &self,
        request: Request<LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let request = request.into_inner();
        let container = self
            .find(&request.pod_uid, &request.container, request.previous)
            .await?;
        let options = LogOptions::from(&request);
        let path = container.log_path();
        // Following ends when the container does.
        let stop = async move {
            if matches!(container.state(), ContainerState::Exited(_)) {
                return;
            }
            container.wait().await;
        };
        let stream = logs::read(path, options, stop).map(|chunk| {
            chunk
                .map(|data| LogChunk {
                    data: data.to_vec(),
                })
                .map_err(|e| Status::internal(format!("reading the log: {e}")))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type ExecStream = ReplyStream<ExecOutput>;

    async fn exec(
        &self,
        request: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let mut inputs = request.into_inner();
        let Some(first) = inputs.message().await? else {
            return Err(Status::invalid_argument("exec: no start message"));
        };
        let Some(exec_input::Input::Start(start)) = first.input else {
            return Err(Status::invalid_argument(
                "exec: the first message must be a start",
            ));
        };
        if start.command.is_empty() {
            return Err(Status::invalid_argument("exec: a command is required"));
        }
        let container = self.find(&start.pod_uid, &start.container, false).await?;
        let mut child = container
            .exec(start.command.clone(), false)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let (sender, receiver) = mpsc::channel(16);
        let mut stdin = child.stdin.take();
        if !start.stdin {
            stdin = None;
        }
        tokio::spawn(async move {
            while let Ok(Some(input)) = inputs.message().await {
                let written = match (input.input, stdin.as_mut()) {
                    (Some(exec_input::Input::Stdin(data)), Some(pipe)) => {
                        pipe.write_all(&data).await.is_ok()
                    }
                    (Some(exec_input::Input::CloseStdin(_)), _) => false,
                    _ => true,
                };
                if !written {
                    break;
                }
            }
            drop(stdin);
        });
        let stdout = child
            .stdout
            .take()
            .map(|out| pump(out, sender.clone(), exec_output::Output::Stdout));
        let stderr = child
            .stderr
            .take()
            .map(|err| pump(err, sender.clone(), exec_output::Output::Stderr));
        tokio::spawn(async move {
            let status = child.wait().await;
            for pump in [stdout, stderr].into_iter().flatten() {
                let _ = pump.await;
            }
            let reply = match status {
                Ok(status) => Ok(ExecOutput {
                    output: Some(exec_output::Output::ExitCode(
                        status.code().unwrap_or(128 + 9),
                    )),
                }),
                Err(error) => Err(Status::internal(format!("exec: {error}"))),
            };
            let _ = sender.send(reply).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// Copies a pipe into the reply stream.
fn pump(
    mut pipe: impl AsyncRead + Unpin + Send + 'static,
    sender: mpsc::Sender<Result<ExecOutput, Status>>,
    wrap: fn(Vec<u8>) -> exec_output::Output,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match pipe.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let output = ExecOutput {
                        output: Some(wrap(buffer[..n].to_vec())),
                    };
                    if sender.send(Ok(output)).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use skiff_pki::{Ca, ClientAuth, Issue, KeyPair, Usage};
    use skiff_proto::node::agent_client::AgentClient;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

    use super::*;

    fn issue(ca: &Ca, user: &str, group: &str, usage: Usage) -> KeyPair {
        ca.issue(&Issue {
            common_name: user.to_owned(),
            organizations: vec![group.to_owned()],
            dns_names: Vec::new(),
            ips: vec!["127.0.0.1".parse().expect("ip")],
            usage,
            validity_days: 1,
        })
        .expect("a certificate")
    }

    /// Asks the agent at `url` for the logs of a pod it does not have, as `identity`.
    async fn ask(url: &str, ca: &Ca, identity: Option<&KeyPair>) -> Result<(), Status> {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.cert_pem));
        if let Some(pair) = identity {
            tls = tls.identity(Identity::from_pem(&pair.cert_pem, &pair.key_pem));
        }
        let channel = Endpoint::from_shared(url.to_owned())
            .expect("a URL")
            .tls_config(tls)
            .expect("a TLS config")
            .connect()
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        let request = LogsRequest {
            pod_uid: "no-such-pod".to_owned(),
            ..LogsRequest::default()
        };
        AgentClient::new(channel).logs(request).await.map(drop)
    }

    #[tokio::test]
    async fn over_tls_only_system_masters_may_call() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = Ca::generate("skiff-ca").expect("a CA");
        let node = issue(
            &ca,
            "system:node:n1",
            "system:nodes",
            Usage::ServerAndClient,
        );
        let masters = issue(&ca, "skiff-apiserver", MASTERS_GROUP, Usage::Client);
        let other_node = issue(
            &ca,
            "system:node:n2",
            "system:nodes",
            Usage::ServerAndClient,
        );
        let stranger_ca = Ca::generate("stranger").expect("a CA");
        let stranger = issue(
            &stranger_ca,
            "skiff-apiserver",
            MASTERS_GROUP,
            Usage::Client,
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = RuntimeConfig::new(dir.path().to_owned(), None).expect("a runtime");
        let tls = skiff_pki::server_config(&ca.cert_pem, &node, ClientAuth::Required)
            .expect("a server config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("https://{}", listener.local_addr().expect("address"));
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            AgentService::new(runtime),
            Some(tls),
            shutdown.clone(),
        ));

        // The control plane's kubelet-client certificate gets through to the service,
        // which answers that the pod is not here.
        let status = ask(&url, &ca, Some(&masters))
            .await
            .expect_err("no such pod");
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
        // Another node's certificate is valid but not allowed.
        let status = ask(&url, &ca, Some(&other_node))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("system:node:n2"), "{status:?}");
        // Without a certificate, or with one from another CA, the handshake fails.
        for identity in [None, Some(&stranger)] {
            let status = ask(&url, &ca, identity).await.expect_err("refused");
            assert!(
                !matches!(
                    status.code(),
                    tonic::Code::NotFound | tonic::Code::PermissionDenied
                ),
                "{status:?}"
            );
        }

        shutdown.cancel();
        server.await.expect("the server task").expect("served");
    }

    #[tokio::test]
    async fn without_tls_anyone_may_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = RuntimeConfig::new(dir.path().to_owned(), None).expect("a runtime");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            AgentService::new(runtime),
            None,
            shutdown.clone(),
        ));
        let mut client = AgentClient::connect(url).await.expect("connected");
        let status = client
            .logs(LogsRequest {
                pod_uid: "no-such-pod".to_owned(),
                ..LogsRequest::default()
            })
            .await
            .expect_err("no such pod");
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
        shutdown.cancel();
        server.await.expect("the server task").expect("served");
    }
}
