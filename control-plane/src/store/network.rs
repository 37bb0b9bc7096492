//! openraft's network over tonic, and the connection pool every member uses to reach
//! the others (Raft RPCs, forwarded writes, read-index requests, joins).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use skiff_proto::store::RaftPayload;
use skiff_proto::store::kv_client::KvClient;
use skiff_proto::store::raft_client::RaftClient;
use tonic::transport::{Channel, Endpoint};

use super::tls::PeerTls;
use super::{NodeId, TypeConfig, db};

/// Largest gRPC message members exchange (snapshot chunks are smaller).
pub(super) const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Lazily connected channels to other members, keyed by address.
#[derive(Clone)]
pub(crate) struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Mutual TLS towards other members; `None` speaks plain HTTP/2.
    tls: Option<Arc<PeerTls>>,
}

/// `host:port` → `http://host:port`, or `https://host:port` when `tls` is on; full URLs
/// pass through.
pub fn peer_url(address: &str, tls: bool) -> String {
    if address.contains("://") {
        address.to_owned()
    } else if tls {
        format!("https://{address}")
    } else {
        format!("http://{address}")
    }
}

/// An endpoint for the member at `address` (`host:port` or a URL), over mutual TLS when
/// `tls` is given: the one place peer connections are configured (members and the
/// `member` commands alike).
pub fn peer_endpoint(
    address: &str,
    tls: Option<&PeerTls>,
) -> Result<Endpoint, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(peer_url(address, tls.is_some()))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    match tls {
        Some(tls) => {
            let host = endpoint.uri().host().unwrap_or_default().to_owned();
            endpoint.tls_config(tls.client_config(&host))
        }
        None => Ok(endpoint),
    }
}

impl Peers {
    /// A pool whose connections use `tls` (`None`: plain HTTP/2).
    pub fn new(tls: Option<PeerTls>) -> Self {
        Self {
            channels: Arc::default(),
            tls: tls.map(Arc::new),
        }
    }

    fn channel(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self
            .channels
            .lock()
            .expect("peer channel map is never poisoned: no panics while held");
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = peer_endpoint(address, self.tls.as_deref())?.connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    /// A Raft-service client for the member at `address`.
    pub fn raft(&self, address: &str) -> Result<RaftClient<Channel>, tonic::transport::Error> {
        Ok(RaftClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A Kv-service client for the member at `address`.
    pub fn kv(&self, address: &str) -> Result<KvClient<Channel>, tonic::transport::Error> {
        Ok(KvClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// Creates one [`PeerNetwork`] per replication target.
pub(crate) struct NetworkFactory {
    pub peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerNetwork {
            target,
            address: node.addr.clone(),
            peers: self.peers.clone(),
        }
    }
}

/// Raft RPCs to one member.
pub(crate) struct PeerNetwork {
    target: NodeId,
    address: String,
    peers: Peers,
}

/// Which Raft RPC to make.
#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl PeerNetwork {
    /// Sends one postcard-encoded request; the reply is the remote `Result` encoded the
    /// same way.
    async fn call<
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    >(
        &self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>> {
        let mut client = self
            .peers
            .raft(&self.address)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut request = tonic::Request::new(RaftPayload {
            data: db::encode(request),
        });
        request.set_timeout(option.hard_ttl());
        let reply = match rpc {
            Rpc::AppendEntries => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                RPCError::Unreachable(Unreachable::new(&status))
            }
            _ => RPCError::Network(NetworkError::new(&status)),
        })?;
        let result: Result<Resp, E> = postcard::from_bytes(&reply.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::from(AnyError::new(&e))))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}
