//! The HTTP server: hyper (HTTP/1.1 and HTTP/2), routing, metrics, and the handlers
//! for discovery, version, health, OpenAPI and `/metrics` (objects are in `objects`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::codegen::Service as _;
use tonic::service::Routes;

use super::auth::{self, Special, TokenAuthenticator, UserInfo};
use super::error::ApiError;
use super::metrics::Metrics;
use super::registry::Registry;
use super::request::{Route, route};
use super::{discovery, join, objects, openapi};
use crate::nodes::NodeService;
use crate::security::Pki;

/// Response bodies: whole (most replies) or streamed (watches).
pub type Body = BoxBody<Bytes, Infallible>;

/// What every handler shares.
pub struct Context {
    /// Objects on the store.
    pub registry: Registry,
    /// Fires on shutdown: ends watches.
    pub cancel: CancellationToken,
    /// Request, watch and store metrics.
    pub metrics: Metrics,
    /// TLS, authentication and authorization; `None` serves plain HTTP to anyone
    /// (in-process tests only).
    pub security: Option<Arc<Security>>,
}

/// The API's TLS and its callers' credentials.
pub struct Security {
    /// The cluster PKI: the CA (for `/cacerts` and joins) and this member's certificates.
    pub pki: Pki,
    /// The TLS server configuration: the serving certificate, client certificates
    /// verified against the CA when presented.
    pub tls: Arc<rustls::ServerConfig>,
    /// Bearer tokens.
    pub tokens: TokenAuthenticator,
    /// The TLS client configuration node agents are called with (logs, exec).
    pub agent_tls: tonic::transport::ClientTlsConfig,
}

impl Security {
    /// Security from a member's PKI, tokens looked up through `registry`.
    pub fn new(pki: Pki, registry: Registry) -> anyhow::Result<Self> {
        let tls = skiff_pki::server_config(
            &pki.ca.cert_pem,
            &pki.server,
            skiff_pki::ClientAuth::Optional,
        )?;
        let agent_tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&pki.ca.cert_pem))
            .identity(tonic::transport::Identity::from_pem(
                &pki.kubelet_client.cert_pem,
                &pki.kubelet_client.key_pem,
            ));
        Ok(Security {
            pki,
            tls,
            tokens: TokenAuthenticator::new(registry),
            agent_tls,
        })
    }
}

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A whole body.
pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).boxed()
}

/// What `/version` reports: kubectl's dispatcher picks the kubectl matching `minor`.
fn version_info() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": concat!("v1.32.0-skiff.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "", "compiler": "rustc",
        "platform": format!("linux/{}", std::env::consts::ARCH),
    })
}

/// Serves the API on `listener` until `cancel` fires; connections in flight finish.
/// Requests with a `content-type` of `application/grpc…` go to the gRPC services
/// (the `Node` service of node agents) on the same listener.
pub async fn serve(registry: Registry, listener: TcpListener, cancel: CancellationToken) {
    serve_with(
        registry,
        listener,
        cancel,
        crate::nodes::HEARTBEAT_INTERVAL_SECONDS,
        None,
    )
    .await;
}

/// [`serve`], telling node agents to heartbeat every `heartbeat_seconds`, over TLS
/// with authentication and authorization when `security` is given.
pub async fn serve_with(
    registry: Registry,
    listener: TcpListener,
    cancel: CancellationToken,
    heartbeat_seconds: u32,
    security: Option<Security>,
) {
    let security = security.map(Arc::new);
    let nodes = NodeService::new(registry.clone(), cancel.clone())
        .with_heartbeat_interval(heartbeat_seconds)
        .with_node_restriction(security.is_some());
    let grpc = Routes::new(nodes.into_server()).prepare();
    let acceptor = security
        .as_ref()
        .map(|s| tokio_rustls::TlsAcceptor::from(s.tls.clone()));
    let context = Arc::new(Context {
        metrics: Metrics::new(registry.store().clone(), registry.store_latency()),
        registry,
        cancel: cancel.clone(),
        security,
    });
    let connections = TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting an API connection failed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let context = context.clone();
        let grpc = grpc.clone();
        let cancel = cancel.clone();
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            let Some(acceptor) = acceptor else {
                serve_connection(context, grpc, cancel, None, stream).await;
                return;
            };
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "an API client's TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            // rustls verified any client certificate against the CA already.
            let user = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| UserInfo::from_certificate(leaf));
            serve_connection(context, grpc, cancel, user, stream).await;
        });
    }
    connections.close();
    connections.wait().await;
}

/// The user a connection's client certificate named, kept on each of its requests.
#[derive(Clone, Debug)]
pub struct CertificateUser(pub UserInfo);

/// Serves HTTP on one (plain or TLS) connection until it ends or `cancel` fires.
async fn serve_connection<S>(
    context: Arc<Context>,
    grpc: Routes,
    cancel: CancellationToken,
    user: Option<UserInfo>,
    stream: S,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let context = context.clone();
        let grpc = grpc.clone();
        if let Some(user) = &user {
            request
                .extensions_mut()
                .insert(CertificateUser(user.clone()));
        }
        async move {
            if is_grpc(&request) {
                return Ok::<_, Infallible>(handle_grpc(grpc, request).await);
            }
            Ok(handle(&context, request).await)
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "API connection ended with an error");
            }
        }
        () = cancel.cancelled() => connection.as_mut().graceful_shutdown(),
    }
}

/// Whether a request is a gRPC call (`content-type: application/grpc[+proto…]`).
fn is_grpc(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/grpc"))
}

/// Hands a gRPC call to tonic and streams its reply, trailers included (they carry
/// `grpc-status`); a body error ends the stream.
async fn handle_grpc(mut grpc: Routes, request: Request<Incoming>) -> Response<Body> {
    let response = match std::future::poll_fn(|cx| {
        tonic::codegen::Service::<Request<Incoming>>::poll_ready(&mut grpc, cx)
    })
    .await
    {
        Ok(()) => grpc.call(request).await,
        Err(never) => match never {},
    };
    let response = match response {
        Ok(response) => response,
        Err(never) => match never {},
    };
    response.map(|body| {
        GrpcBody {
            body: std::sync::Mutex::new(body),
            ended: false,
        }
        .boxed()
    })
}

/// A tonic reply body as one of ours: its data and trailer frames as they come, the
/// end at the first error. (The mutex makes it `Sync`, as [`Body`] needs; polling has
/// `&mut` access, so it is never locked.)
struct GrpcBody {
    body: std::sync::Mutex<tonic::body::Body>,
    ended: bool,
}

impl hyper::body::Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.ended {
            return std::task::Poll::Ready(None);
        }
        let body = this
            .body
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match std::pin::Pin::new(body).poll_frame(cx) {
            std::task::Poll::Ready(Some(Ok(frame))) => std::task::Poll::Ready(Some(Ok(frame))),
            std::task::Poll::Ready(Some(Err(status))) => {
                tracing::debug!(%status, "a gRPC reply body failed");
                this.ended = true;
                std::task::Poll::Ready(None)
            }
            std::task::Poll::Ready(None) => {
                this.ended = true;
                std::task::Poll::Ready(None)
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

/// A JSON reply.
pub fn json_response(status: StatusCode, body: &Value, content_type: &str) -> Response<Body> {
    let bytes = serde_json::to_vec(body).expect("a JSON value always serializes");
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .body(full(Bytes::from(bytes)))
        .expect("static headers are valid")
}

fn ok(body: &Value) -> Response<Body> {
    json_response(StatusCode::OK, body, "application/json")
}

fn text(status: StatusCode, body: impl Into<Bytes>, content_type: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .body(full(body.into()))
        .expect("static headers are valid")
}

fn error_response(error: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_value(error.to_status()).expect("Status serializes");
    json_response(status, &body, "application/json")
}

/// Handles one request; every failure becomes a `Status` reply.
pub async fn handle(context: &Context, request: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let watch = request.uri().query().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
    });
    let special = Special::of(&path);
    let parsed = route(&path);
    if let Some(security) = &context.security {
        let user = match authenticate(security, &request).await {
            Ok(user) => user,
            Err(error) => return error_response(&error),
        };
        let allowed = match (special, &parsed) {
            (Some(special), _) => auth::authorize_special(&user, special),
            (None, Some(parsed)) => {
                let field_selector = query_value(request.uri().query(), "fieldSelector");
                auth::authorize(
                    &context.registry,
                    &user,
                    &method,
                    parsed,
                    watch,
                    field_selector.as_deref(),
                )
                .await
            }
            (None, None) if user.is_anonymous() => Err(ApiError::unauthorized("Unauthorized")),
            (None, None) => Ok(()),
        };
        if let Err(error) = allowed {
            tracing::debug!(user = %user.name, %method, %path, code = error.code, "request refused");
            return error_response(&error);
        }
    }
    if let Some(special) = special {
        return join::handle(context, special, request)
            .await
            .unwrap_or_else(|error| error_response(&error));
    }
    let (resource, has_name) = match &parsed {
        Some(Route::Resource(r)) => match &r.subresource {
            Some(sub) => (format!("{}/{sub}", r.kind.plural), r.name.is_some()),
            None => (r.kind.plural.to_owned(), r.name.is_some()),
        },
        _ => (String::new(), false),
    };
    let result = match parsed {
        Some(parsed) => dispatch(context, parsed, request).await,
        None => Err(ApiError::no_route(&path)),
    };
    let response = result.unwrap_or_else(|error| error_response(&error));
    let verb = super::metrics::verb(&method, has_name, watch);
    context.metrics.observe_request(
        verb,
        &resource,
        response.status().as_u16(),
        started.elapsed(),
    );
    tracing::debug!(%method, %path, status = response.status().as_u16(), "api request");
    response
}

/// Who made `request`: its connection's certificate, else its bearer token, else
/// anonymous; 401 for a bearer token that is not a live one.
async fn authenticate(
    security: &Security,
    request: &Request<Incoming>,
) -> Result<UserInfo, ApiError> {
    if let Some(CertificateUser(user)) = request.extensions().get::<CertificateUser>() {
        return Ok(user.clone());
    }
    let bearer = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match bearer {
        Some(token) => security.tokens.authenticate(token).await,
        None => Ok(UserInfo::anonymous()),
    }
}

/// One query parameter's value.
fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn dispatch(
    context: &Context,
    route: Route,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().to_owned();
    let accept = request
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let is_get = request.method() == Method::GET;
    match route {
        Route::Version if is_get => Ok(ok(&version_info())),
        Route::Health if is_get => Ok(text(StatusCode::OK, "ok", "text/plain; charset=utf-8")),
        Route::Metrics if is_get => Ok(text(
            StatusCode::OK,
            context.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )),
        // kubectl asks for protobuf only; a 404 makes it use its built-in types.
        Route::OpenApiV2 if is_get && accept.contains("application/json") => Ok(ok(openapi::v2())),
        Route::OpenApiV2 => Err(ApiError::no_route(&path)),
        Route::OpenApiV3 if is_get => Ok(ok(&openapi::index())),
        Route::OpenApiV3GroupVersion { group, version } if is_get => {
            openapi::group_version(&group, &version)
                .map(|body| ok(&body))
                .ok_or_else(|| ApiError::no_route(&path))
        }
        Route::CoreVersions if is_get && discovery::wants_aggregated(&accept) => Ok(json_response(
            StatusCode::OK,
            &discovery::aggregated(true),
            discovery::AGGREGATED_CONTENT_TYPE,
        )),
        Route::Groups if is_get && discovery::wants_aggregated(&accept) => Ok(json_response(
            StatusCode::OK,
            &discovery::aggregated(false),
            discovery::AGGREGATED_CONTENT_TYPE,
        )),
        Route::CoreVersions if is_get => Ok(ok(&discovery::core_versions())),
        Route::Groups if is_get => Ok(ok(&discovery::group_list())),
        Route::GroupVersion { group, version } if is_get => {
            discovery::resource_list(&group, &version)
                .map(|body| ok(&body))
                .ok_or_else(|| ApiError::no_route(&path))
        }
        Route::Resource(resource) => objects::handle(context, resource, request).await,
        _ => Err(ApiError::method_not_allowed(request.method().as_str())),
    }
}
