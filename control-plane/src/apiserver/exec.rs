//! `pods/{name}/exec` over WebSocket, as kubectl (1.30+) speaks it: the Kubernetes
//! channel protocol (`v5.channel.k8s.io`, or `v4.channel.k8s.io`) on top of a
//! WebSocket, relayed to the `Exec` call of the node agent that runs the pod.
//!
//! Every binary message starts with a channel byte: 0 stdin (client to server), 1
//! stdout, 2 stderr, 3 the error channel (one `meta/v1 Status` at the end), 4 terminal
//! resizes (ignored: TTYs are not supported). v5 adds a close signal: `[255, channel]`
//! from the client closes that channel (`[255, 0]` is the end of stdin). The server
//! ends with the Status on channel 3, then a normal WebSocket close, which is what
//! makes the client's streams reach their end.
//!
//! SPDY (`Upgrade: SPDY/3.1`, kubectl's fallback) is not served: such requests are
//! checked like WebSocket ones (so kubectl's fallback prints the real problem, e.g.
//! an unknown container) and then answered with 400 "Upgrade request required".
//! TTYs (`tty=true`, `kubectl exec -t`) are rejected with a 400 that says so.

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, Stream, StreamExt};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use skiff_proto::node::agent_client::AgentClient;
use skiff_proto::node::{ExecInput, ExecOutput, ExecStart, exec_input, exec_output};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::error::ApiError;
use super::server::{Body, full};

/// The stdin channel (client to server).
const STDIN: u8 = 0;
/// The stdout channel.
const STDOUT: u8 = 1;
/// The stderr channel.
const STDERR: u8 = 2;
/// The error channel: the final `meta/v1 Status`.
const ERROR: u8 = 3;
/// The terminal resize channel (client to server; ignored).
const RESIZE: u8 = 4;
/// v5's close signal: `[255, channel]` closes `channel`.
const CLOSE: u8 = 255;

/// Stdin chunks buffered between the client and the node.
const INPUT_BUFFER: usize = 16;

/// How long to wait for the client's reply to our WebSocket close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// `Status.reason` of a command that exited non-zero (kubelet's `NonZeroExitCode`).
const NON_ZERO_EXIT_CODE: &str = "NonZeroExitCode";

/// The channel protocols served, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `v5.channel.k8s.io`: v4 plus the client's close signal.
    V5,
    /// `v4.channel.k8s.io`: channels 0–4, a JSON Status on the error channel.
    V4,
}

impl Protocol {
    /// The `Sec-WebSocket-Protocol` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::V5 => "v5.channel.k8s.io",
            Self::V4 => "v4.channel.k8s.io",
        }
    }

    /// The best protocol the client offers (`Sec-WebSocket-Protocol` values, each a
    /// comma-separated list), if any is served.
    pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let offered: Vec<&str> = offered
            .into_iter()
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        [Self::V5, Self::V4]
            .into_iter()
            .find(|protocol| offered.contains(&protocol.name()))
    }

    /// Whether the client may close single channels (`[255, channel]`).
    fn closes_channels(self) -> bool {
        self == Self::V5
    }
}

/// The query of an exec request (`PodExecOptions`), checked as Kubernetes checks it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// The command and its arguments (`command`, repeated).
    pub command: Vec<String>,
    /// The container (`container`); defaulted from the pod when absent.
    pub container: Option<String>,
    /// Whether the client sends stdin.
    pub stdin: bool,
    /// Whether the client wants stdout.
    pub stdout: bool,
    /// Whether the client wants stderr.
    pub stderr: bool,
}

impl ExecOptions {
    /// Parses a request's query string.
    pub fn parse(query: &str) -> Result<Self, ApiError> {
        let mut options = Self::default();
        let mut tty = false;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "command" => options.command.push(value.into_owned()),
                "container" if !value.is_empty() => options.container = Some(value.into_owned()),
                "stdin" => options.stdin = parse_bool(&key, &value)?,
                "stdout" => options.stdout = parse_bool(&key, &value)?,
                "stderr" => options.stderr = parse_bool(&key, &value)?,
                "tty" => tty = parse_bool(&key, &value)?,
                _ => {}
            }
        }
        if options.command.is_empty() {
            return Err(ApiError::bad_request(
                "you must specify at least one command for the container",
            ));
        }
        if !options.stdin && !options.stdout && !options.stderr {
            return Err(ApiError::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        if tty {
            return Err(ApiError::bad_request(
                "Skiff does not support a TTY for exec: run the command without -t/--tty",
            ));
        }
        Ok(options)
    }

    /// The agent's start message for a command in `container` of the pod `pod_uid`.
    pub fn start(&self, pod_uid: String, container: String) -> ExecStart {
        ExecStart {
            pod_uid,
            container,
            command: self.command.clone(),
            stdin: self.stdin,
        }
    }
}

/// A query boolean, as Go's `strconv.ParseBool` reads it.
fn parse_bool(key: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "{key}: Invalid value: {value:?}: must be a boolean"
        ))),
    }
}

/// An accepted WebSocket upgrade: what the 101 reply carries.
#[derive(Debug, PartialEq, Eq)]
struct Handshake {
    /// `Sec-WebSocket-Accept`.
    accept: String,
    /// The chosen channel protocol.
    protocol: Protocol,
}

/// Whether `name`'s comma-separated header values contain `token` (case-insensitive).
fn has_token<B>(request: &Request<B>, name: http::header::HeaderName, token: &str) -> bool {
    request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(token))
}

/// Checks that a request is a WebSocket upgrade offering a served protocol.
fn handshake<B>(request: &Request<B>) -> Result<Handshake, ApiError> {
    let key = request.headers().get("sec-websocket-key");
    let is_websocket = request.method() == Method::GET
        && has_token(request, CONNECTION, "upgrade")
        && has_token(request, UPGRADE, "websocket")
        && key.is_some();
    let Some(key) = key.filter(|_| is_websocket) else {
        return Err(ApiError::bad_request(
            "Upgrade request required: Skiff serves exec over WebSocket only \
             (v5.channel.k8s.io or v4.channel.k8s.io), not SPDY",
        ));
    };
    let offered = request
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let protocol = Protocol::negotiate(offered).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unable to upgrade: none of the offered subprotocols is supported: supported are {}, {}",
            Protocol::V5.name(),
            Protocol::V4.name()
        ))
    })?;
    Ok(Handshake {
        accept: derive_accept_key(key.as_bytes()),
        protocol,
    })
}

/// Answers an exec request: checks the upgrade, replies 101 and relays the session
/// between the client's WebSocket and the node's agent in a task of its own (it ends
/// when the command does, the client leaves, or `cancel` fires).
pub fn serve(
    request: Request<Incoming>,
    agent: AgentClient<Channel>,
    start: ExecStart,
    options: &ExecOptions,
    cancel: CancellationToken,
) -> Result<Response<Body>, ApiError> {
    let Handshake { accept, protocol } = handshake(&request)?;
    let session = Session {
        protocol,
        stdin: options.stdin,
        stdout: options.stdout,
        stderr: options.stderr,
        command: start.command.clone(),
        container: start.container.clone(),
    };
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "an exec WebSocket upgrade failed");
                return;
            }
        };
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        run(socket, &session, agent, start, cancel).await;
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "websocket")
        .header(SEC_WEBSOCKET_ACCEPT, accept)
        .header(SEC_WEBSOCKET_PROTOCOL, protocol.name())
        .body(full(Bytes::new()))
        .expect("static headers and an accept key are valid"))
}

/// What one exec session relays.
#[derive(Debug)]
struct Session {
    /// The negotiated channel protocol.
    protocol: Protocol,
    /// The streams the client asked for.
    stdin: bool,
    stdout: bool,
    stderr: bool,
    /// The command and the container, for messages.
    command: Vec<String>,
    container: String,
}

/// One session: starts the command on the agent, then relays.
async fn run<S>(
    socket: WebSocketStream<S>,
    session: &Session,
    mut agent: AgentClient<Channel>,
    start: ExecStart,
    cancel: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (input, inputs) = mpsc::channel(INPUT_BUFFER);
    let first = ExecInput {
        input: Some(exec_input::Input::Start(start)),
    };
    // The agent reads the start first; the channel is empty, so this cannot fail.
    let _ = input.try_send(first);
    let call = tokio::select! {
        () = cancel.cancelled() => return,
        call = agent.exec(tokio_stream::wrappers::ReceiverStream::new(inputs)) => call,
    };
    match call {
        Ok(outputs) => {
            relay(socket, session, input, outputs.into_inner(), cancel).await;
        }
        Err(status) => {
            let (mut sink, mut source) = socket.split();
            let status = failure_status(&agent_error(&status, &session.container));
            finish(&mut sink, &mut source, status).await;
        }
    }
}

/// How an agent's error about `container` reads to the client.
fn agent_error(status: &tonic::Status, container: &str) -> ApiError {
    let message = format!(
        "cannot run a command in container {container}: {}",
        status.message()
    );
    match status.code() {
        tonic::Code::NotFound => ApiError {
            code: 404,
            reason: "NotFound",
            message,
            details: None,
        },
        tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument => {
            ApiError::bad_request(message)
        }
        tonic::Code::Unavailable => {
            ApiError::unavailable(format!("{message} (the node's agent is unavailable)"))
        }
        _ => ApiError::internal(message),
    }
}

/// Relays stdin to the agent and its output to the client until the command ends
/// (then the Status and a close) or the client leaves.
async fn relay<S, O>(
    socket: WebSocketStream<S>,
    session: &Session,
    input: mpsc::Sender<ExecInput>,
    outputs: O,
    cancel: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    O: Stream<Item = Result<ExecOutput, tonic::Status>> + Unpin,
{
    let (mut sink, mut source) = socket.split();
    // Stdin and output run side by side, so a command that is busy writing never
    // waits on a client that is busy writing stdin.
    let status = {
        let reader = forward_input(&mut source, session.protocol, session.stdin, input);
        let writer = forward_output(&mut sink, session, outputs);
        tokio::select! {
            () = cancel.cancelled() => Some(failure_status(&ApiError::unavailable(
                "the API server is shutting down",
            ))),
            () = reader => None,
            status = writer => status,
        }
    };
    match status {
        Some(status) => finish(&mut sink, &mut source, status).await,
        None => tracing::debug!("an exec client left before its command ended"),
    }
}

/// Client messages to the agent's stdin; returns when the client leaves.
async fn forward_input<R>(
    source: &mut R,
    protocol: Protocol,
    stdin: bool,
    input: mpsc::Sender<ExecInput>,
) where
    R: Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut input = stdin.then_some(input);
    while let Some(message) = source.next().await {
        let data = match message {
            Ok(Message::Binary(data)) => data,
            Ok(Message::Close(_)) | Err(_) => return,
            // Pings are answered by the WebSocket layer; text (base64 protocols) is
            // not spoken.
            Ok(_) => continue,
        };
        match ClientFrame::parse(protocol, &data) {
            ClientFrame::Stdin(data) if !data.is_empty() => {
                let Some(sender) = &input else { continue };
                let chunk = ExecInput {
                    input: Some(exec_input::Input::Stdin(data.to_vec())),
                };
                if sender.send(chunk).await.is_err() {
                    input = None;
                }
            }
            ClientFrame::Close(STDIN) => {
                if let Some(sender) = input.take() {
                    let close = ExecInput {
                        input: Some(exec_input::Input::CloseStdin(true)),
                    };
                    let _ = sender.send(close).await;
                }
            }
            ClientFrame::Stdin(_) | ClientFrame::Close(_) | ClientFrame::Ignored => {}
        }
    }
}

/// The agent's output to the client; returns the final Status, or `None` when the
/// client is gone.
async fn forward_output<W, O>(sink: &mut W, session: &Session, mut outputs: O) -> Option<Value>
where
    W: futures_util::Sink<Message> + Unpin,
    O: Stream<Item = Result<ExecOutput, tonic::Status>> + Unpin,
{
    let mut exit_code = None;
    loop {
        let (channel, data) = match outputs.next().await {
            Some(Ok(ExecOutput {
                output: Some(output),
            })) => match output {
                exec_output::Output::Stdout(data) if session.stdout => (STDOUT, data),
                exec_output::Output::Stderr(data) if session.stderr => (STDERR, data),
                exec_output::Output::ExitCode(code) => {
                    exit_code = Some(code);
                    continue;
                }
                exec_output::Output::Stdout(_) | exec_output::Output::Stderr(_) => continue,
            },
            Some(Ok(ExecOutput { output: None })) => continue,
            Some(Err(status)) => {
                return Some(failure_status(&agent_error(&status, &session.container)));
            }
            None => {
                return Some(match exit_code {
                    Some(code) => exit_status(&session.command, code),
                    None => failure_status(&ApiError::internal(
                        "the node ended the command without an exit code",
                    )),
                });
            }
        };
        if data.is_empty() {
            continue;
        }
        if sink
            .send(Message::Binary(frame(channel, &data)))
            .await
            .is_err()
        {
            return None;
        }
    }
}

/// Sends the Status on the error channel, closes normally and waits (a little) for
/// the client's close reply.
async fn finish<W, R>(sink: &mut W, source: &mut R, status: Value)
where
    W: futures_util::Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let body = serde_json::to_vec(&status).unwrap_or_default();
    if sink
        .send(Message::Binary(frame(ERROR, &body)))
        .await
        .is_err()
    {
        return;
    }
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    if sink.send(Message::Close(Some(close))).await.is_err() {
        return;
    }
    let drained = async { while let Some(Ok(_)) = source.next().await {} };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, drained).await;
}

/// A message from the client.
#[derive(Debug, PartialEq, Eq)]
enum ClientFrame<'a> {
    /// Data for stdin.
    Stdin(&'a [u8]),
    /// v5: the client closes a channel.
    Close(u8),
    /// Resizes, empty messages, unknown channels.
    Ignored,
}

impl<'a> ClientFrame<'a> {
    fn parse(protocol: Protocol, message: &'a [u8]) -> Self {
        match message {
            [STDIN, data @ ..] => Self::Stdin(data),
            [CLOSE, channel] if protocol.closes_channels() => Self::Close(*channel),
            [RESIZE, ..] | [] | [_, ..] => Self::Ignored,
        }
    }
}

/// A message on `channel`.
fn frame(channel: u8, data: &[u8]) -> Bytes {
    let mut message = BytesMut::with_capacity(data.len() + 1);
    message.put_u8(channel);
    message.put_slice(data);
    message.freeze()
}

/// The error channel's Status for a command that exited with `code`, as kubelet
/// writes it (kubectl exits with the code of a `NonZeroExitCode` Status).
fn exit_status(command: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    // The client reads the code as a byte; exit codes are 1–255 anyway.
    let reported = if (1..=255).contains(&code) { code } else { 1 };
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            command.join(" ")
        ),
        "reason": NON_ZERO_EXIT_CODE,
        "details": {"causes": [{"reason": "ExitCode", "message": reported.to_string()}]},
    })
}

/// The error channel's Status for a failure other than an exit code (the client
/// prints its message).
fn failure_status(error: &ApiError) -> Value {
    serde_json::to_value(error.to_status()).unwrap_or_else(
        |_| json!({"metadata": {}, "status": "Failure", "message": error.message.clone()}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get("/api/v1/namespaces/default/pods/web/exec?command=true");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    const KUBECTL: &[(&str, &str)] = &[
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        (
            "Sec-WebSocket-Protocol",
            "v5.channel.k8s.io, v4.channel.k8s.io",
        ),
    ];

    #[test]
    fn options_follow_kubernetes() {
        let options = ExecOptions::parse(
            "command=sh&command=-c&command=echo%20hi&container=app&stdin=true&stdout=true&stderr=true&tty=false",
        )
        .unwrap();
        assert_eq!(
            options,
            ExecOptions {
                command: vec!["sh".into(), "-c".into(), "echo hi".into()],
                container: Some("app".into()),
                stdin: true,
                stdout: true,
                stderr: true,
            }
        );
        let start = options.start("uid-1".into(), "app".into());
        assert_eq!(start.command, ["sh", "-c", "echo hi"]);
        assert!(start.stdin);
        assert_eq!(
            ExecOptions::parse("command=true&stdout=1&container=")
                .unwrap()
                .container,
            None
        );
        let cases = [
            (
                "stdout=true",
                "you must specify at least one command for the container",
            ),
            (
                "command=ls",
                "you must specify at least 1 of stdin, stdout, stderr",
            ),
            ("command=ls&stdout=yes", "stdout: Invalid value: \"yes\""),
            ("command=sh&stdin=true&stdout=true&tty=true", "TTY"),
        ];
        for (query, message) in cases {
            let error = ExecOptions::parse(query).unwrap_err();
            assert_eq!(error.code, 400, "{query}");
            assert!(
                error.message.contains(message),
                "{query}: {}",
                error.message
            );
        }
    }

    #[test]
    fn v5_is_preferred_and_v4_accepted() {
        assert_eq!(
            Protocol::negotiate(["v4.channel.k8s.io, v5.channel.k8s.io"]),
            Some(Protocol::V5)
        );
        assert_eq!(
            Protocol::negotiate(["channel.k8s.io", "v4.channel.k8s.io"]),
            Some(Protocol::V4)
        );
        assert_eq!(
            Protocol::negotiate(["base64.channel.k8s.io, v3.channel.k8s.io"]),
            None
        );
    }

    #[test]
    fn handshakes_accept_websocket_upgrades_only() {
        let accepted = handshake(&request(KUBECTL)).unwrap();
        // RFC 6455's example key.
        assert_eq!(
            accepted,
            Handshake {
                accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into(),
                protocol: Protocol::V5
            }
        );
        let spdy = request(&[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
        ]);
        let error = handshake(&spdy).unwrap_err();
        assert_eq!(error.code, 400);
        assert!(error.message.starts_with("Upgrade request required"));
        assert!(handshake(&request(&[])).is_err());
        let old = request(&[
            ("Connection", "keep-alive, Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Protocol", "channel.k8s.io"),
        ]);
        let error = handshake(&old).unwrap_err();
        assert!(error.message.contains("v5.channel.k8s.io"), "{error}");
    }

    #[test]
    fn messages_carry_their_channel_first() {
        assert_eq!(&frame(STDOUT, b"out")[..], b"\x01out");
        assert_eq!(&frame(STDERR, b"")[..], b"\x02");
        assert_eq!(
            ClientFrame::parse(Protocol::V5, b"\x00hello"),
            ClientFrame::Stdin(b"hello")
        );
        assert_eq!(
            ClientFrame::parse(Protocol::V5, &[255, 0]),
            ClientFrame::Close(STDIN)
        );
        assert_eq!(
            ClientFrame::parse(Protocol::V4, &[255, 0]),
            ClientFrame::Ignored
        );
        assert_eq!(
            ClientFrame::parse(Protocol::V5, b"\x04{\"Width\":80,\"Height\":24}"),
            ClientFrame::Ignored
        );
        assert_eq!(ClientFrame::parse(Protocol::V5, b""), ClientFrame::Ignored);
    }

    #[test]
    fn statuses_match_kubelet() {
        let command = ["sh".to_owned(), "-c".to_owned(), "exit 7".to_owned()];
        assert_eq!(
            exit_status(&command, 0),
            json!({"metadata": {}, "status": "Success"})
        );
        assert_eq!(
            exit_status(&command, 7),
            json!({
                "metadata": {}, "status": "Failure",
                "message": "command terminated with non-zero exit code: error executing command [sh -c exit 7], exit code 7",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": "7"}]},
            })
        );
        let failure = failure_status(&agent_error(
            &tonic::Status::failed_precondition("container x-app-0 is not running"),
            "app",
        ));
        assert_eq!(failure["status"], "Failure");
        assert_eq!(failure["reason"], "BadRequest");
        assert_eq!(
            failure["message"],
            "cannot run a command in container app: container x-app-0 is not running"
        );
        let missing = failure_status(&agent_error(
            &tonic::Status::not_found("no container"),
            "app",
        ));
        assert_eq!(
            (missing["reason"].as_str(), missing["code"].as_i64()),
            (Some("NotFound"), Some(404))
        );
    }

    /// A whole session over an in-memory socket with a fake agent: stdin reaches the
    /// agent and closes, output is framed, the Status comes last, then a close.
    #[tokio::test]
    async fn sessions_relay_both_ways_and_end_with_the_status() {
        let (server, client) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let (input, mut inputs) = mpsc::channel(INPUT_BUFFER);
        let (outputs_tx, outputs_rx) = mpsc::channel(INPUT_BUFFER);
        let session = Session {
            protocol: Protocol::V5,
            stdin: true,
            stdout: true,
            stderr: true,
            command: vec!["cat".to_owned()],
            container: "app".to_owned(),
        };
        let relayed = tokio::spawn(async move {
            relay(
                server,
                &session,
                input,
                tokio_stream::wrappers::ReceiverStream::new(outputs_rx),
                CancellationToken::new(),
            )
            .await;
        });
        // The fake agent: echoes stdin to stdout until stdin closes, then exits 3.
        let agent = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(ExecInput { input }) = inputs.recv().await {
                match input {
                    Some(exec_input::Input::Stdin(data)) => {
                        got.extend_from_slice(&data);
                        let out = exec_output::Output::Stdout(data);
                        let _ = outputs_tx.send(Ok(ExecOutput { output: Some(out) })).await;
                    }
                    Some(exec_input::Input::CloseStdin(_)) => break,
                    _ => {}
                }
            }
            let err = exec_output::Output::Stderr(b"bye".to_vec());
            let _ = outputs_tx.send(Ok(ExecOutput { output: Some(err) })).await;
            let code = exec_output::Output::ExitCode(3);
            let _ = outputs_tx.send(Ok(ExecOutput { output: Some(code) })).await;
            got
        });
        client
            .send(Message::Binary(frame(STDIN, b"hello")))
            .await
            .unwrap();
        client
            .send(Message::Binary(Bytes::from_static(&[RESIZE, b'{', b'}'])))
            .await
            .unwrap();
        client
            .send(Message::Binary(Bytes::from_static(&[CLOSE, STDIN])))
            .await
            .unwrap();
        let mut messages = Vec::new();
        while let Some(message) = client.next().await {
            match message.unwrap() {
                Message::Binary(data) => messages.push(data.to_vec()),
                Message::Close(frame) => {
                    assert_eq!(frame.unwrap().code, CloseCode::Normal);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(agent.await.unwrap(), b"hello");
        relayed.await.unwrap();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert_eq!(messages[0], b"\x01hello");
        assert_eq!(messages[1], b"\x02bye");
        assert_eq!(messages[2][0], ERROR);
        let status: Value = serde_json::from_slice(&messages[2][1..]).unwrap();
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
    }
}
