//! The gRPC services of a member: `Raft` (peer traffic, read-index, membership) and
//! `Kv` (transactions, ranges, watches), plus their proto conversions.

use std::pin::Pin;
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{CheckIsLeaderError, ClientWriteError, InstallSnapshotError, RaftError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use skiff_proto::store as pb;
use skiff_proto::store::kv_server::{Kv, KvServer};
use skiff_proto::store::raft_server::{Raft as RaftRpc, RaftServer};
use tokio::net::TcpListener;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use super::handle::FORWARDED;
use super::network::MAX_MESSAGE_BYTES;
use super::tls::{PeerAuth, PeerTls};
use super::{
    Consistency, Error, Event, EventKind, KeyValue, NodeId, Op, Precondition, Store, Txn,
    TxnOutcome, WatchMessage, db,
};

/// The peer server: over mutual TLS when `tls` is given.
pub(super) fn server(tls: Option<&PeerTls>) -> Result<Server, Error> {
    let server = Server::builder();
    match tls {
        Some(tls) => server
            .tls_config(tls.server_config())
            .map_err(|source| Error::Tls {
                context: "configuring the peer server's TLS".to_owned(),
                source: Box::new(source),
            }),
        None => Ok(server),
    }
}

/// Serves `Raft` and `Kv` with `server` on `listener` until `cancel` fires; with TLS,
/// only callers presenting a peer certificate get through.
pub(super) async fn serve(
    store: Store,
    mut server: Server,
    listener: TcpListener,
    auth: PeerAuth,
    cancel: CancellationToken,
) {
    // Small request/response pairs must not wait for Nagle's algorithm.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let raft = RaftServer::new(RaftService {
        store: store.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let kv = KvServer::new(KvService { store })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let result = server
        .add_service(InterceptedService::new(raft, auth))
        .add_service(InterceptedService::new(kv, auth))
        .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "store peer server failed");
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::Unavailable(_) => Status::unavailable(message),
            Error::Indeterminate(_) => Status::unknown(message),
            Error::Compacted { .. } => Status::out_of_range(message),
            Error::InvalidRequest(_) => Status::invalid_argument(message),
            // A member that cannot reach another over TLS is degraded, not the caller's
            // fault; another member may serve the caller.
            Error::PeerAuth { .. } => Status::unavailable(message),
            Error::Database { .. } | Error::Raft(_) | Error::Server { .. } | Error::Tls { .. } => {
                Status::internal(message)
            }
        }
    }
}

struct RaftService {
    store: Store,
}

fn decode_payload<T: DeserializeOwned>(request: Request<pb::RaftPayload>) -> Result<T, Status> {
    postcard::from_bytes(&request.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn encode_payload<T: Serialize>(value: &T) -> Response<pb::RaftPayload> {
    Response::new(pb::RaftPayload {
        data: db::encode(value),
    })
}

fn leader_status(error: &RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Status {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            Status::failed_precondition(format!(
                "not the leader; forward to {:?}",
                forward.leader_node.as_ref().map(|n| &n.addr)
            ))
        }
        other => Status::internal(other.to_string()),
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let result = self
            .store
            .raft()
            .append_entries(decode_payload(request)?)
            .await;
        Ok(encode_payload(&result))
    }

    async fn vote(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let result = self.store.raft().vote(decode_payload(request)?).await;
        Ok(encode_payload(&result))
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let result: Result<_, RaftError<NodeId, InstallSnapshotError>> = self
            .store
            .raft()
            .install_snapshot(decode_payload(request)?)
            .await;
        Ok(encode_payload(&result))
    }

    async fn read_index(
        &self,
        _request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexReply>, Status> {
        match self.store.raft().get_read_log_id().await {
            Ok((read_log_id, _)) => Ok(Response::new(pb::ReadIndexReply {
                index: read_log_id.map_or(0, |id| id.index),
            })),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {
                Err(Status::failed_precondition("not the leader"))
            }
            Err(error) => Err(Status::unavailable(error.to_string())),
        }
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinReply>, Status> {
        let request = request.into_inner();
        if request.address.is_empty() || request.node_id == 0 {
            return Err(Status::invalid_argument(
                "join needs a node id and an address",
            ));
        }
        // A learner that never catches up must not hold this call forever.
        let added = tokio::time::timeout(
            Duration::from_secs(60),
            self.store.add_member(request.node_id, &request.address),
        )
        .await
        .map_err(|_| Status::deadline_exceeded("the new member did not catch up within 60 s"))?;
        match added {
            Ok(()) => Ok(Response::new(pb::JoinReply {
                leader_id: self.store.node_id(),
            })),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                let Some(leader) = forward.leader_node else {
                    return Err(Status::unavailable("no raft leader is known yet"));
                };
                let mut client = self
                    .store
                    .peers()
                    .raft(&leader.addr)
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                client.join(request).await
            }
            Err(error) => Err(leader_status(&error)),
        }
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembersReply>, Status> {
        self.store.remove(request.into_inner().node_id).await?;
        Ok(Response::new(self.members_reply()))
    }

    async fn members(
        &self,
        _request: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersReply>, Status> {
        Ok(Response::new(self.members_reply()))
    }

    type SnapshotStream = SnapshotChunks;

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let file = self.store.snapshot().await?;
        let n_chunks = file.len().div_ceil(SNAPSHOT_CHUNK_BYTES);
        let chunks = (0..n_chunks).map(move |chunk_idx| {
            let start = chunk_idx * SNAPSHOT_CHUNK_BYTES;
            let end = (start + SNAPSHOT_CHUNK_BYTES).min(file.len());
            Ok(pb::SnapshotChunk {
                data: file[start..end].to_vec(),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

/// Size of the chunks a snapshot file is streamed in: far below the message limits of
/// any client (tonic's default is 4 MiB).
const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

type SnapshotChunks = Pin<Box<dyn Stream<Item = Result<pb::SnapshotChunk, Status>> + Send>>;

impl RaftService {
    fn members_reply(&self) -> pb::MembersReply {
        let members = self
            .store
            .members()
            .into_iter()
            .map(|m| pb::Member {
                node_id: m.node_id,
                address: m.address,
                voter: m.voter,
            })
            .collect();
        let leader = self.store.leader();
        pb::MembersReply {
            members,
            leader_id: leader.unwrap_or(0),
            has_leader: leader.is_some(),
        }
    }
}

struct KvService {
    store: Store,
}

type WatchReplies = Pin<Box<dyn Stream<Item = Result<pb::WatchReply, Status>> + Send>>;

#[tonic::async_trait]
impl Kv for KvService {
    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnReply>, Status> {
        let may_forward = request.metadata().get(FORWARDED).is_none();
        let txn = txn_from_proto(request.into_inner())?;
        let outcome = self.store.write(txn, may_forward).await?;
        Ok(Response::new(outcome_to_proto(outcome)))
    }

    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeReply>, Status> {
        let request = request.into_inner();
        let consistency = if request.stale {
            Consistency::Stale
        } else {
            Consistency::Linearizable
        };
        if !request.prefix {
            let (kv, revision) = self.store.get(&request.key, consistency).await?;
            return Ok(Response::new(pb::RangeReply {
                kvs: kv.into_iter().map(kv_to_proto).collect(),
                revision,
                more: false,
            }));
        }
        let start_after = Some(request.start_after.as_str()).filter(|s| !s.is_empty());
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        let page = self
            .store
            .range(&request.key, start_after, limit, consistency)
            .await?;
        Ok(Response::new(pb::RangeReply {
            kvs: page.kvs.into_iter().map(kv_to_proto).collect(),
            revision: page.revision,
            more: page.more,
        }))
    }

    type WatchStream = WatchReplies;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let request = request.into_inner();
        let interval = (request.progress_interval_ms > 0)
            .then(|| Duration::from_millis(u64::from(request.progress_interval_ms)));
        let stream = self
            .store
            .watch(&request.prefix, request.after_revision, interval)?;
        let replies = stream.map(|message| match message {
            WatchMessage::Events(events) => Ok(pb::WatchReply {
                events: events.into_iter().map(event_to_proto).collect(),
                progress_revision: 0,
            }),
            WatchMessage::Progress(revision) => Ok(pb::WatchReply {
                events: Vec::new(),
                progress_revision: revision,
            }),
            WatchMessage::Expired => Err(Status::out_of_range(
                "the watch's history was compacted; relist and watch again",
            )),
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

/// A domain key-value as protobuf.
pub(crate) fn kv_to_proto(kv: KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
    }
}

fn kv_from_proto(kv: pb::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
    }
}

fn event_to_proto(event: Event) -> pb::Event {
    let kind = match event.kind {
        EventKind::Created => pb::EventKind::Created,
        EventKind::Updated => pb::EventKind::Updated,
        EventKind::Deleted => pb::EventKind::Deleted,
    };
    pb::Event {
        kind: kind.into(),
        kv: Some(kv_to_proto(event.kv)),
        prev: event.prev.map(kv_to_proto),
    }
}

/// A transaction as protobuf.
pub(crate) fn txn_to_proto(txn: &Txn) -> pb::TxnRequest {
    let ops = txn
        .ops
        .iter()
        .map(|op| {
            let op = match op {
                Op::Create { key, value } => pb::op::Op::Create(pb::CreateOp {
                    key: key.clone(),
                    value: value.clone(),
                }),
                Op::Update {
                    key,
                    value,
                    expected_revision,
                } => pb::op::Op::Update(pb::UpdateOp {
                    key: key.clone(),
                    value: value.clone(),
                    expected_revision: *expected_revision,
                }),
                Op::Delete {
                    key,
                    expected_revision,
                } => pb::op::Op::Delete(pb::DeleteOp {
                    key: key.clone(),
                    expected_revision: *expected_revision,
                }),
            };
            pb::Op { op: Some(op) }
        })
        .collect();
    pb::TxnRequest { ops }
}

fn txn_from_proto(request: pb::TxnRequest) -> Result<Txn, Status> {
    let ops = request
        .ops
        .into_iter()
        .enumerate()
        .map(|(idx, op)| match op.op {
            Some(pb::op::Op::Create(c)) => Ok(Op::Create {
                key: c.key,
                value: c.value,
            }),
            Some(pb::op::Op::Update(u)) => Ok(Op::Update {
                key: u.key,
                value: u.value,
                expected_revision: u.expected_revision,
            }),
            Some(pb::op::Op::Delete(d)) => Ok(Op::Delete {
                key: d.key,
                expected_revision: d.expected_revision,
            }),
            None => Err(Status::invalid_argument(format!(
                "ops[{idx}] has no operation"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(idx) = ops.iter().position(|op| op.key().is_empty()) {
        return Err(Status::invalid_argument(format!(
            "ops[{idx}] has an empty key"
        )));
    }
    Ok(Txn { ops })
}

fn outcome_to_proto(outcome: TxnOutcome) -> pb::TxnReply {
    match outcome {
        TxnOutcome::Committed { revision, prev } => pb::TxnReply {
            succeeded: true,
            revision,
            prev: prev
                .into_iter()
                .map(|kv| pb::PrevValue {
                    kv: kv.map(kv_to_proto),
                })
                .collect(),
            ..Default::default()
        },
        TxnOutcome::Failed {
            op_index,
            precondition,
        } => {
            let (failure, actual_revision) = match precondition {
                Precondition::AlreadyExists => (pb::Failure::AlreadyExists, 0),
                Precondition::NotFound => (pb::Failure::NotFound, 0),
                Precondition::RevisionMismatch { actual } => {
                    (pb::Failure::RevisionMismatch, actual)
                }
            };
            pb::TxnReply {
                failed_op: u32::try_from(op_index).unwrap_or(u32::MAX),
                failure: failure.into(),
                actual_revision,
                ..Default::default()
            }
        }
    }
}

/// A protobuf reply as the domain outcome (for forwarded writes).
pub(crate) fn outcome_from_proto(reply: pb::TxnReply) -> Result<TxnOutcome, Error> {
    if reply.succeeded {
        let prev = reply
            .prev
            .into_iter()
            .map(|p| p.kv.map(kv_from_proto))
            .collect();
        return Ok(TxnOutcome::Committed {
            revision: reply.revision,
            prev,
        });
    }
    let precondition = match pb::Failure::try_from(reply.failure) {
        Ok(pb::Failure::AlreadyExists) => Precondition::AlreadyExists,
        Ok(pb::Failure::NotFound) => Precondition::NotFound,
        Ok(pb::Failure::RevisionMismatch) => Precondition::RevisionMismatch {
            actual: reply.actual_revision,
        },
        Ok(pb::Failure::None) | Err(_) => {
            return Err(Error::Raft(format!(
                "the leader sent an unknown failure {}",
                reply.failure
            )));
        }
    };
    Ok(TxnOutcome::Failed {
        op_index: reply.failed_op as usize,
        precondition,
    })
}
