//! The agent's own gRPC service (`Agent` in `proto/skiff/node.proto`): container logs and
//! exec, for the control plane to proxy `kubectl logs` and `kubectl exec` to.

use std::pin::Pin;

use skiff_proto::node::agent_server::Agent;
use skiff_proto::node::{ExecInput, ExecOutput, LogChunk, LogsRequest, exec_input, exec_output};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::pods::instances;
use crate::runtime::container::{Container, ContainerState, RuntimeConfig};
use crate::runtime::logs::{self, LogOptions};

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
