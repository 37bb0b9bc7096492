//! A small client for the Kubernetes-shaped HTTP API: JSON CRUD, patches, Tables,
//! watches and byte streams, with server errors reported the way kubectl does.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use skiff_api::ResourceKind;

use crate::kubeconfig::{Connection, Credentials};

/// The `Accept` kubectl sends to get a `meta.k8s.io/v1 Table` instead of a list.
pub(crate) const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

/// How long to wait for a TCP (and TLS) connection before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The `Content-Type` of a PATCH, naming how the server applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatchType {
    /// RFC 6902 JSON patch (a list of operations).
    Json,
    /// RFC 7386 JSON merge patch.
    Merge,
    /// Server-side apply: the body is the whole desired object.
    Apply,
}

impl PatchType {
    fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json-patch+json",
            Self::Merge => "application/merge-patch+json",
            Self::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Where an object or collection lives: `/apis/apps/v1/namespaces/ns/deployments/web/scale`.
#[derive(Clone, Debug)]
pub(crate) struct ResourcePath<'a> {
    /// The kind, which picks the group prefix and plural.
    pub kind: &'static ResourceKind,
    /// The namespace, for namespaced kinds; `None` lists across all namespaces.
    pub namespace: Option<&'a str>,
    /// The object; `None` addresses the collection.
    pub name: Option<&'a str>,
    /// `scale`, `status`, `log`…
    pub subresource: Option<&'a str>,
}

impl<'a> ResourcePath<'a> {
    /// The collection of `kind` in `namespace` (ignored for cluster-scoped kinds).
    pub fn collection(kind: &'static ResourceKind, namespace: Option<&'a str>) -> Self {
        Self {
            kind,
            namespace: namespace.filter(|_| kind.namespaced),
            name: None,
            subresource: None,
        }
    }

    /// One object of `kind`.
    pub fn object(kind: &'static ResourceKind, namespace: Option<&'a str>, name: &'a str) -> Self {
        Self {
            name: Some(name),
            ..Self::collection(kind, namespace)
        }
    }

    /// A subresource of this object.
    pub fn subresource(self, subresource: &'a str) -> Self {
        Self {
            subresource: Some(subresource),
            ..self
        }
    }
}

impl fmt::Display for ResourcePath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind.group.is_empty() {
            write!(f, "/api/{}", self.kind.version)?;
        } else {
            write!(f, "/apis/{}/{}", self.kind.group, self.kind.version)?;
        }
        if let Some(namespace) = self.namespace {
            write!(f, "/namespaces/{namespace}")?;
        }
        write!(f, "/{}", self.kind.plural)?;
        if let Some(name) = self.name {
            write!(f, "/{name}")?;
        }
        if let Some(subresource) = self.subresource {
            write!(f, "/{subresource}")?;
        }
        Ok(())
    }
}

/// A request that failed, in the words kubectl uses.
#[derive(Debug)]
pub(crate) enum Error {
    /// The server answered with a non-2xx status (a `meta/v1 Status`, or one made up
    /// from the HTTP code like client-go does).
    Status(Box<Value>),
    /// The server could not be reached.
    Connect {
        /// `host:port` of the server.
        host: String,
        /// Whether the connection was actively refused.
        refused: bool,
        /// What went wrong, one line.
        message: String,
    },
    /// Anything else: a reply that is not JSON, a stream cut short.
    Other(String),
}

impl Error {
    /// The `meta/v1 Status` `reason`, for servers' errors.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Status(status) => status.get("reason").and_then(Value::as_str),
            _ => None,
        }
    }

    /// The `meta/v1 Status` `message`, for servers' errors.
    pub fn message(&self) -> Option<&str> {
        match self {
            Self::Status(status) => status.get("message").and_then(Value::as_str),
            _ => None,
        }
    }

    /// The HTTP code a server error carried.
    pub fn code(&self) -> Option<u64> {
        match self {
            Self::Status(status) => status.get("code").and_then(Value::as_u64),
            _ => None,
        }
    }

    /// Whether this is the server saying the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.reason() == Some("NotFound") || self.code() == Some(404)
    }

    /// Prefixes the server's message with where the object came from, as kubectl does
    /// for `-f` inputs: `error when creating "web.yaml": …`.
    pub fn with_source(self, verb: &str, source: &str) -> Self {
        match self {
            Self::Status(mut status) => {
                let message = status
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                status["message"] =
                    Value::String(format!("error when {verb} {source:?}: {message}"));
                Self::Status(status)
            }
            other => other,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(status) => write_status(f, status),
            Self::Connect {
                host,
                refused: true,
                ..
            } => write!(
                f,
                "The connection to the server {host} was refused - did you specify the right host or port?"
            ),
            Self::Connect { message, .. } => {
                write!(f, "Unable to connect to the server: {message}")
            }
            Self::Other(message) => write!(f, "error: {message}"),
        }
    }
}

/// kubectl's `StandardErrorMessage`, with its special case for `Invalid`.
fn write_status(f: &mut fmt::Formatter<'_>, status: &Value) -> fmt::Result {
    let text = |value: Option<&Value>| value.and_then(Value::as_str).unwrap_or_default().to_owned();
    let reason = text(status.get("reason"));
    let message = text(status.get("message"));
    let details = status.get("details");
    if reason == "Invalid"
        && let Some(details) = details
    {
        let kind = text(details.get("kind"));
        let name = text(details.get("name"));
        let causes: Vec<String> = details
            .get("causes")
            .and_then(Value::as_array)
            .map(|causes| {
                causes
                    .iter()
                    .map(|cause| {
                        let field = text(cause.get("field"));
                        let message = text(cause.get("message"));
                        if field.is_empty() {
                            message
                        } else {
                            format!("{field}: {message}")
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let subject = if kind.is_empty() && name.is_empty() {
            "The request is invalid".to_owned()
        } else {
            format!("The {kind} {name:?} is invalid")
        };
        return match causes.as_slice() {
            [] => write!(f, "{subject}"),
            [one] => write!(f, "{subject}: {one}"),
            many => {
                write!(f, "{subject}: ")?;
                for cause in many {
                    write!(f, "\n* {cause}")?;
                }
                Ok(())
            }
        };
    }
    match reason.as_str() {
        "Unauthorized" => write!(f, "error: You must be logged in to the server ({message})"),
        "" => write!(f, "Error from server: {message}"),
        reason => write!(f, "Error from server ({reason}): {message}"),
    }
}

impl std::error::Error for Error {}

/// A `Status` for a reply that did not carry one, as client-go makes it up.
fn status_from_code(code: StatusCode, body: &[u8]) -> Value {
    let (reason, message) = match code.as_u16() {
        400 => (
            "BadRequest",
            "the server rejected our request for an unknown reason",
        ),
        401 => (
            "Unauthorized",
            "the server has asked for the client to provide credentials",
        ),
        403 => (
            "Forbidden",
            "the server does not allow access to the requested resource",
        ),
        404 => (
            "NotFound",
            "the server could not find the requested resource",
        ),
        405 => (
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ),
        409 => ("Conflict", "the server reported a conflict"),
        410 => (
            "Expired",
            "the server could not find the requested resource",
        ),
        422 => (
            "Invalid",
            "the server rejected our request due to an error in our request",
        ),
        429 => (
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
        504 => (
            "Timeout",
            "the server was unable to return a response in the time allotted, but may still be processing the request",
        ),
        _ => ("InternalError", ""),
    };
    let message = if message.is_empty() {
        let body = String::from_utf8_lossy(body);
        format!(
            "an error on the server ({:?}) has prevented the request from succeeding",
            body.trim()
        )
    } else {
        message.to_owned()
    };
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": reason, "message": message, "code": code.as_u16(),
    })
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// Query parameters, in the order they are sent.
pub(crate) type Query<'a> = [(&'a str, &'a str)];

/// The API client: one connection pool, one set of credentials, and the servers of
/// one cluster, tried in order when one cannot be reached.
pub(crate) struct Client {
    http: reqwest::Client,
    /// Base URLs in failover order (the kubeconfig's `server` first), normalized as
    /// `reqwest::Url` prints them, without a trailing `/`. Never empty.
    servers: Vec<String>,
    /// The index in `servers` of the last one that answered: later requests of this
    /// process start there instead of waiting on a dead server again.
    preferred: AtomicUsize,
    credentials: Credentials,
    /// `--request-timeout`: bounds each request; watches ask the server to end then.
    request_timeout: Option<Duration>,
}

impl Client {
    /// Builds a client for `connection`; fails on unusable TLS material.
    pub fn try_new(connection: Connection) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        // reqwest is built without a default crypto provider; installing fails only
        // when one is installed already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("skiff/v", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            // The API server never redirects; a proxy in between must not either.
            .redirect(reqwest::redirect::Policy::none());
        if connection.insecure_skip_tls_verify && connection.certificate_authority.is_some() {
            anyhow::bail!(
                "specifying a root certificates file with the insecure flag is not allowed"
            );
        }
        if let Some(pem) = &connection.certificate_authority {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .context("failed to parse the certificate authority")?;
            builder = builder.tls_certs_only(certificates);
        }
        if connection.insecure_skip_tls_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        if let Some(pem) = &connection.identity {
            let identity = reqwest::Identity::from_pem(pem)
                .context("failed to parse the client certificate and key")?;
            builder = builder.identity(identity);
        }
        let http = builder.build().context("failed to build the HTTP client")?;
        // Requests are built on the first server and moved to another by swapping this
        // prefix, so every prefix is written the way `Url` writes it back.
        let servers = std::iter::once(&connection.server)
            .chain(&connection.servers)
            .map(|server| {
                reqwest::Url::parse(server)
                    .map(|url| url.as_str().trim_end_matches('/').to_owned())
                    .with_context(|| format!("invalid server address {server:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut unique: Vec<String> = Vec::with_capacity(servers.len());
        for server in servers {
            if !unique.contains(&server) {
                unique.push(server);
            }
        }
        Ok(Self {
            http,
            servers: unique,
            preferred: AtomicUsize::new(0),
            credentials: connection.credentials,
            request_timeout: None,
        })
    }

    /// Bounds every request by `timeout` (kubectl's `--request-timeout`).
    pub fn with_request_timeout(self, timeout: Option<Duration>) -> Self {
        Self {
            request_timeout: timeout,
            ..self
        }
    }

    fn request(&self, method: Method, path: &str, query: &Query<'_>) -> RequestBuilder {
        let mut url = format!("{}{path}", self.servers[0]);
        if !query.is_empty() {
            url.push('?');
            url.push_str(
                &form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(query)
                    .finish(),
            );
        }
        let builder = self.http.request(method, url);
        match &self.credentials {
            Credentials::None => builder,
            Credentials::Bearer(token) => match HeaderValue::from_str(&format!("Bearer {token}")) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    builder.header(AUTHORIZATION, value)
                }
                Err(_) => builder,
            },
            Credentials::Basic { username, password } => {
                builder.basic_auth(username, Some(password))
            }
        }
    }

    /// Sends a request; a non-2xx reply becomes [`Error::Status`]. A server that
    /// cannot be reached (no connection or no TLS session) is skipped for the next one
    /// in order; once a request went out its outcome is final, as it may have been
    /// applied. When none can be reached, the first server's error is returned.
    async fn send(&self, builder: RequestBuilder) -> Result<reqwest::Response> {
        let request = builder
            .build()
            .map_err(|e| Self::transport_error(&e, &self.servers[0]))?;
        let n_servers = self.servers.len();
        let start = self.preferred.load(Ordering::Relaxed) % n_servers;
        let mut first_error = None;
        let mut pending = Some(request);
        for attempt in 0..n_servers {
            let Some(request) = pending.take() else {
                break;
            };
            let server_idx = (start + attempt) % n_servers;
            // A copy for the next server, before this attempt consumes the request.
            if attempt + 1 < n_servers {
                pending = request.try_clone();
            }
            let request = self.on_server(request, server_idx);
            match self.http.execute(request).await {
                Ok(response) => {
                    self.preferred.store(server_idx, Ordering::Relaxed);
                    return Self::check(response).await;
                }
                Err(error) if error.is_connect() && attempt + 1 < n_servers => {
                    tracing::debug!(server = %self.servers[server_idx], error = %error_chain(&error), "trying the next server");
                    first_error.get_or_insert_with(|| {
                        Self::transport_error(&error, &self.servers[server_idx])
                    });
                }
                Err(error) => {
                    let error = Self::transport_error(&error, &self.servers[server_idx]);
                    return Err(first_error.unwrap_or(error));
                }
            }
        }
        Err(first_error
            .unwrap_or_else(|| Error::Other("no server to send the request to".to_owned())))
    }

    /// `request`, built on the first server, addressed to `servers[server_idx]`.
    fn on_server(&self, mut request: reqwest::Request, server_idx: usize) -> reqwest::Request {
        if server_idx == 0 {
            return request;
        }
        let moved = request
            .url()
            .as_str()
            .strip_prefix(self.servers[0].as_str())
            .and_then(|rest| {
                reqwest::Url::parse(&format!("{}{rest}", self.servers[server_idx])).ok()
            });
        if let Some(url) = moved {
            *request.url_mut() = url;
        }
        request
    }

    /// A non-2xx reply becomes [`Error::Status`].
    async fn check(response: reqwest::Response) -> Result<reqwest::Response> {
        let code = response.status();
        if code.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        let status = serde_json::from_slice::<Value>(&body)
            .ok()
            .filter(|v| v.get("kind").and_then(Value::as_str) == Some("Status"))
            .unwrap_or_else(|| status_from_code(code, &body));
        Err(Error::Status(Box::new(status)))
    }

    fn transport_error(error: &reqwest::Error, server: &str) -> Error {
        let host = reqwest::Url::parse(server)
            .ok()
            .map(|url| match (url.host_str(), url.port_or_known_default()) {
                (Some(host), Some(port)) => format!("{host}:{port}"),
                (Some(host), None) => host.to_owned(),
                _ => server.to_owned(),
            })
            .unwrap_or_else(|| server.to_owned());
        // The innermost cause says what went wrong ("invalid peer certificate:
        // UnknownIssuer"); the layers above it only repeat the URL.
        let mut cause: &dyn std::error::Error = error;
        while let Some(source) = cause.source() {
            cause = source;
        }
        let message = cause.to_string();
        Error::Connect {
            refused: message.contains("Connection refused")
                || message.contains("connection refused"),
            message,
            host,
        }
    }

    async fn json(&self, builder: RequestBuilder) -> Result<Value> {
        let builder = match self.request_timeout {
            Some(timeout) => builder.timeout(timeout),
            None => builder,
        };
        let response = self.send(builder).await?;
        let body = response
            .bytes()
            .await
            .map_err(|e| Error::Other(format!("failed to read the reply: {}", error_chain(&e))))?;
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body)
            .map_err(|e| Error::Other(format!("the server's reply is not JSON: {e}")))
    }

    /// `GET` a path as JSON.
    pub async fn get(&self, path: &str, query: &Query<'_>) -> Result<Value> {
        let builder = self
            .request(Method::GET, path, query)
            .header(ACCEPT, "application/json");
        self.json(builder).await
    }

    /// `GET` a path as a `meta/v1 Table` (one row for an object).
    pub async fn get_table(&self, path: &str, query: &Query<'_>) -> Result<Value> {
        let builder = self
            .request(Method::GET, path, query)
            .header(ACCEPT, TABLE_ACCEPT);
        self.json(builder).await
    }

    /// `POST` a new object to a collection.
    pub async fn create(&self, path: &str, query: &Query<'_>, object: &Value) -> Result<Value> {
        let builder = self
            .request(Method::POST, path, query)
            .header(ACCEPT, "application/json")
            .json(object);
        self.json(builder).await
    }

    /// `PATCH` an object.
    pub async fn patch(
        &self,
        path: &str,
        query: &Query<'_>,
        patch_type: PatchType,
        patch: &Value,
    ) -> Result<Value> {
        let builder = self
            .request(Method::PATCH, path, query)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, patch_type.content_type())
            .body(patch.to_string());
        self.json(builder).await
    }

    /// `DELETE` an object with `DeleteOptions` in the body.
    pub async fn delete(&self, path: &str, query: &Query<'_>, options: &Value) -> Result<Value> {
        let builder = self
            .request(Method::DELETE, path, query)
            .header(ACCEPT, "application/json")
            .json(options);
        self.json(builder).await
    }

    /// Starts a watch (`watch=true` is added); `table` asks for one-row Tables.
    pub async fn watch(&self, path: &str, query: &Query<'_>, table: bool) -> Result<Watch> {
        let mut query = query.to_vec();
        query.push(("watch", "true"));
        // The server ends the stream at the request timeout, so the watch ends cleanly.
        let timeout_seconds = self
            .request_timeout
            .map(|timeout| timeout.as_secs().max(1).to_string());
        if let Some(seconds) = &timeout_seconds
            && !query.iter().any(|(name, _)| *name == "timeoutSeconds")
        {
            query.push(("timeoutSeconds", seconds));
        }
        let accept = if table {
            TABLE_ACCEPT
        } else {
            "application/json"
        };
        let builder = self
            .request(Method::GET, path, &query)
            .header(ACCEPT, accept);
        let response = self.send(builder).await?;
        Ok(Watch {
            stream: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
        })
    }

    /// `GET` a path and hand back its body as it arrives (pod logs).
    pub async fn stream(
        &self,
        path: &str,
        query: &Query<'_>,
    ) -> Result<impl Stream<Item = Result<Bytes>> + use<>> {
        let response = self.send(self.request(Method::GET, path, query)).await?;
        Ok(response.bytes_stream().map(|chunk| {
            chunk.map_err(|e| Error::Other(format!("the stream broke: {}", error_chain(&e))))
        }))
    }
}

/// The causes of a reqwest error on one line (its `Display` hides them).
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A running watch: `{"type": …, "object": …}` events, one JSON value each.
pub(crate) struct Watch {
    stream: std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buffer: Vec<u8>,
}

impl Watch {
    /// The next event, or `None` when the server ends the stream.
    pub async fn next(&mut self) -> Option<Result<Value>> {
        loop {
            if let Some(event) = self.take_event() {
                return Some(event);
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(error)) => {
                    return Some(Err(Error::Other(format!(
                        "the watch broke: {}",
                        error_chain(&error)
                    ))));
                }
                None => {
                    let rest = String::from_utf8_lossy(&self.buffer).trim().to_owned();
                    self.buffer.clear();
                    if rest.is_empty() {
                        return None;
                    }
                    return Some(Err(Error::Other(format!(
                        "the watch ended inside an event: {rest:?}"
                    ))));
                }
            }
        }
    }

    /// One complete JSON value from the front of the buffer, if there is one; events
    /// may be newline-separated or simply concatenated.
    fn take_event(&mut self) -> Option<Result<Value>> {
        let mut values = serde_json::Deserializer::from_slice(&self.buffer).into_iter::<Value>();
        match values.next() {
            Some(Ok(value)) => {
                let used = values.byte_offset();
                self.buffer.drain(..used);
                Some(Ok(value))
            }
            Some(Err(error)) if error.is_eof() => None,
            None => {
                self.buffer.clear();
                None
            }
            Some(Err(error)) => {
                self.buffer.clear();
                Some(Err(Error::Other(format!("malformed watch event: {error}"))))
            }
        }
    }
}

/// The `items` of a list reply (none if it has none).
pub fn items(list: &Value) -> Vec<Value> {
    list.get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::sync::Arc;

    use super::*;
    use skiff_api::kind;

    /// A plain-HTTP server on 127.0.0.1 answering every request with `code` and a
    /// small JSON body naming `name`; counts the requests it answered.
    struct Server {
        url: String,
        served: Arc<AtomicUsize>,
    }

    impl Server {
        fn start(name: &'static str, code: u16) -> Self {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let served = Arc::new(AtomicUsize::new(0));
            let counter = served.clone();
            // Serves until the test process exits.
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                        line.clear();
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let body = format!(r#"{{"kind":"Namespace","metadata":{{"name":"{name}"}}}}"#);
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
            });
            Self { url, served }
        }
    }

    /// A URL on 127.0.0.1 where nothing listens (the port was bound, then closed).
    fn closed_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    fn client_for(servers: &[&str]) -> Client {
        Client::try_new(Connection {
            server: servers[0].to_owned(),
            servers: servers.iter().map(|s| (*s).to_owned()).collect(),
            ..Connection::default()
        })
        .unwrap()
    }

    async fn get_name(client: &Client) -> Result<String> {
        let namespace = client.get("/api/v1/namespaces/default", &[]).await?;
        Ok(namespace["metadata"]["name"].as_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn a_server_that_cannot_be_reached_fails_over_to_the_next_in_order() {
        let closed = closed_url();
        let second = Server::start("second", 200);
        let third = Server::start("third", 200);
        let client = client_for(&[&closed, &second.url, &third.url]);
        assert_eq!(get_name(&client).await.unwrap(), "second");
        // Later requests start at the server that answered.
        assert_eq!(get_name(&client).await.unwrap(), "second");
        assert_eq!(second.served.load(Ordering::SeqCst), 2);
        assert_eq!(third.served.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_http_error_is_final_and_no_server_reachable_names_the_first() {
        let failing = Server::start("failing", 503);
        let healthy = Server::start("healthy", 200);
        let client = client_for(&[&failing.url, &healthy.url]);
        let error = get_name(&client).await.unwrap_err();
        assert_eq!(error.code(), Some(503));
        assert_eq!(healthy.served.load(Ordering::SeqCst), 0);

        let first = closed_url();
        let client = client_for(&[&first, &closed_url()]);
        let error = get_name(&client).await.unwrap_err();
        let host = first.trim_start_matches("http://");
        assert_eq!(
            error.to_string(),
            format!(
                "The connection to the server {host} was refused - did you specify the right host or port?"
            )
        );
    }

    #[test]
    fn paths_for_core_and_grouped_kinds() {
        let check = |path: ResourcePath<'_>, expected: &str| assert_eq!(path.to_string(), expected);
        check(
            ResourcePath::collection(&kind::POD, Some("default")),
            "/api/v1/namespaces/default/pods",
        );
        check(ResourcePath::collection(&kind::POD, None), "/api/v1/pods");
        check(
            ResourcePath::collection(&kind::NAMESPACE, Some("default")),
            "/api/v1/namespaces",
        );
        check(
            ResourcePath::object(&kind::NODE, Some("default"), "n1"),
            "/api/v1/nodes/n1",
        );
        check(
            ResourcePath::object(&kind::DEPLOYMENT, Some("ns"), "web").subresource("scale"),
            "/apis/apps/v1/namespaces/ns/deployments/web/scale",
        );
        check(
            ResourcePath::collection(&kind::DEPLOYMENT, None),
            "/apis/apps/v1/deployments",
        );
    }

    #[test]
    fn statuses_print_like_kubectl() {
        let check = |status: Value, expected: &str| {
            assert_eq!(Error::Status(Box::new(status)).to_string(), expected);
        };
        check(
            serde_json::json!({"kind":"Status","status":"Failure","message":"pods \"x\" not found","reason":"NotFound","code":404}),
            "Error from server (NotFound): pods \"x\" not found",
        );
        check(
            serde_json::json!({"kind":"Status","message":"boom","code":500}),
            "Error from server: boom",
        );
        check(
            serde_json::json!({"kind":"Status","reason":"Invalid","message":"…","details":{"kind":"Deployment","name":"web","causes":[{"field":"spec.replicas","message":"Invalid value: -1: must be greater than or equal to 0"}]}}),
            "The Deployment \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        );
        check(
            status_from_code(StatusCode::NOT_FOUND, b"404 page not found"),
            "Error from server (NotFound): the server could not find the requested resource",
        );
        let sourced = Error::Status(Box::new(serde_json::json!({"reason":"AlreadyExists","message":"namespaces \"a\" already exists"})))
            .with_source("creating", "ns.yaml");
        assert_eq!(
            sourced.to_string(),
            "Error from server (AlreadyExists): error when creating \"ns.yaml\": namespaces \"a\" already exists"
        );
    }

    #[test]
    fn watch_events_split_across_chunks() {
        let chunks: Vec<reqwest::Result<Bytes>> = vec![
            Ok(Bytes::from_static(
                b"{\"type\":\"ADDED\",\"object\":{\"a\":",
            )),
            Ok(Bytes::from_static(
                b"1}}\n{\"type\":\"DELETED\",\"object\":{}}{\"type\"",
            )),
            Ok(Bytes::from_static(b":\"MODIFIED\",\"object\":{}}\n")),
        ];
        let mut watch = Watch {
            stream: Box::pin(futures_util::stream::iter(chunks)),
            buffer: Vec::new(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let types: Vec<String> = runtime.block_on(async {
            let mut types = Vec::new();
            while let Some(event) = watch.next().await {
                types.push(event.unwrap()["type"].as_str().unwrap().to_owned());
            }
            types
        });
        assert_eq!(types, ["ADDED", "DELETED", "MODIFIED"]);
    }
}
