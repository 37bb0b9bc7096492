//! [`Store`]: one member of the replicated store, and the API the rest of the control
//! plane (and the gRPC `Kv` service) uses: reads, transactions, watches, membership.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    ChangeMembershipError, CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError,
};
use openraft::{BasicNode, ChangeMembers, SnapshotPolicy};
use redb::{Durability, ReadableTable};
use skiff_proto::store::{JoinRequest, ReadIndexRequest};
use tokio::net::TcpListener;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::db::{self, Db, RAFT_META};
use super::log_store::LogStore;
use super::network::{NetworkFactory, Peers};
use super::propose::{Proposed, Proposer};
use super::state_machine::{RangeResult, Reader, StateMachine};
use super::tls::{self, PeerAuth};
use super::watch::{WatchHub, WatchStream};
use super::{
    Config, Error, KeyValue, NodeId, Op, Raft, Result, Tuning, Txn, TxnOutcome, service, snapshot,
};

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read began (read-index).
    #[default]
    Linearizable,
    /// Whatever this member has applied: fast, possibly behind the leader.
    Stale,
}

/// One member of the Raft group, as membership lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's id.
    pub node_id: NodeId,
    /// Its peer address.
    pub address: String,
    /// Whether it votes (learners do not).
    pub voter: bool,
}

/// A handle on this process's store member; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    address: String,
    raft: Raft,
    reader: Reader,
    hub: WatchHub,
    peers: Peers,
    proposer: Proposer,
    tuning: Tuning,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

const NODE_ID: &str = "node_id";
/// How long to wait between attempts while no leader is known.
const LEADER_POLL: Duration = Duration::from_millis(50);
/// How long a joining member keeps asking to be added.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Metadata marking a write already forwarded once, so it is never forwarded again.
pub(super) const FORWARDED: &str = "x-skiff-forwarded";

impl Store {
    /// Opens the member in `config.data_dir`, starts its peer server, and either
    /// starts a new cluster (first start without `join`), rejoins the one on disk
    /// (restart), or joins the cluster through `config.join` (first start with `join`).
    /// With `config.tls`, peer traffic both ways is mutual TLS.
    pub async fn open(config: Config) -> Result<Self> {
        // Bad TLS material fails here, before anything listens.
        let server = service::server(config.tls.as_ref())?;
        let listener = TcpListener::bind(config.listen_peer)
            .await
            .map_err(|source| Error::Server {
                address: config.listen_peer,
                source,
            })?;
        let bound = listener.local_addr().map_err(|source| Error::Server {
            address: config.listen_peer,
            source,
        })?;
        let address = config
            .advertise_peer
            .clone()
            .unwrap_or_else(|| bound.to_string());
        let log_db = Db::open_log(&config.data_dir)?;
        let state_db = Db::open_state(&config.data_dir)?;
        let node_id = load_or_create_node_id(&log_db)?;
        if let Some(restored) = snapshot::import_pending(
            &config.data_dir,
            &log_db,
            &state_db,
            node_id,
            &address,
            config.join.first().map(String::as_str),
        )
        .map_err(|e| Error::database("importing the restored snapshot", e))?
        {
            tracing::info!(
                revision = restored.revision,
                keys = restored.keys,
                "restored the store from a snapshot; this member founds a new cluster"
            );
        }

        let tuning = config.tuning.clone();
        let raft_config = openraft::Config {
            cluster_name: "skiff".to_owned(),
            heartbeat_interval: millis(tuning.heartbeat_interval),
            election_timeout_min: millis(tuning.election_timeout_min),
            election_timeout_max: millis(tuning.election_timeout_max),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_after_logs),
            max_in_snapshot_log_to_keep: tuning.logs_kept_after_snapshot,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::InvalidRequest(format!("raft configuration: {e}")))?;
        let hub = WatchHub::new();
        let (durable_snapshot, durable_snapshot_mark) = tokio::sync::watch::channel(None);
        let state_machine = StateMachine::open(
            state_db,
            hub.clone(),
            tuning.history_revisions,
            durable_snapshot,
        )?;
        let reader = state_machine.reader();
        let peers = Peers::new(config.tls.clone());
        let network = NetworkFactory {
            peers: peers.clone(),
        };
        let raft = Raft::new(
            node_id,
            Arc::new(raft_config),
            network,
            LogStore::new(log_db, durable_snapshot_mark),
            state_machine,
        )
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;

        let tasks = TaskTracker::new();
        let cancel = CancellationToken::new();
        let proposer =
            Proposer::start(raft.clone(), tuning.request_timeout, &tasks, cancel.clone());
        let store = Self {
            inner: Arc::new(Inner {
                node_id,
                address,
                raft,
                reader,
                hub,
                peers,
                proposer,
                tuning,
                tasks,
                cancel,
            }),
        };
        store.inner.tasks.spawn(service::serve(
            store.clone(),
            server,
            listener,
            PeerAuth {
                required: config.tls.is_some(),
            },
            store.inner.cancel.clone(),
        ));
        if let Err(error) = store.bootstrap(&config.join).await {
            store.shutdown().await;
            return Err(error);
        }
        tracing::info!(node_id, address = %store.inner.address, "store member started");
        Ok(store)
    }

    async fn bootstrap(&self, join: &[String]) -> Result<()> {
        let raft = &self.inner.raft;
        if raft
            .is_initialized()
            .await
            .map_err(|e| Error::Raft(e.to_string()))?
        {
            return Ok(());
        }
        if join.is_empty() {
            let members =
                BTreeMap::from([(self.inner.node_id, BasicNode::new(&self.inner.address))]);
            return raft
                .initialize(members)
                .await
                .map_err(|e| Error::Raft(e.to_string()));
        }
        self.join(join).await
    }

    /// Asks the members at `existing`, in order, to add this one; retries the list until
    /// one accepts or the join timeout passes. A TLS failure or a refused certificate
    /// ends the join at once: it is a misconfiguration that waiting cannot fix.
    async fn join(&self, existing: &[String]) -> Result<()> {
        let deadline = Instant::now() + JOIN_TIMEOUT;
        loop {
            let mut last_message = String::new();
            for address in existing {
                let request = JoinRequest {
                    node_id: self.inner.node_id,
                    address: self.inner.address.clone(),
                };
                let mut request = tonic::Request::new(request);
                // Joining waits for this member to catch up as a learner: bounded by the
                // overall join timeout.
                request.set_timeout(deadline.saturating_duration_since(Instant::now()));
                let mut client =
                    self.inner.peers.raft(address).map_err(|e| {
                        Error::InvalidRequest(format!("peer address {address}: {e}"))
                    })?;
                let status = match client.join(request).await {
                    Ok(_) => return Ok(()),
                    Err(status) => status,
                };
                if let Some(message) = tls::auth_failure(&status) {
                    return Err(Error::PeerAuth {
                        address: address.clone(),
                        message,
                    });
                }
                tracing::info!(%address, message = %status.message(), "join not accepted");
                last_message = format!("{address}: {}", status.message());
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "could not join the cluster through {}: {last_message}",
                    existing.join(", ")
                )));
            }
            sleep(Duration::from_millis(500)).await;
        }
    }

    /// This member's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// This member's peer address.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// The openraft handle, for the gRPC service.
    pub(super) fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// Clients of other members.
    pub(super) fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    /// The current leader's id, if one is known.
    pub fn leader(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow().current_leader
    }

    /// Whether this member is the leader.
    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.inner.node_id)
    }

    /// The revision this member has applied up to.
    pub fn revision(&self) -> u64 {
        self.inner.reader.revision()
    }

    /// Reads one key.
    pub async fn get(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<(Option<KeyValue>, u64)> {
        self.read_barrier(consistency).await?;
        Ok(self.inner.reader.get(key))
    }

    /// Reads keys under `prefix` in key order, after `start_after`, at most `limit`
    /// (0 = no limit).
    pub async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        consistency: Consistency,
    ) -> Result<RangeResult> {
        self.read_barrier(consistency).await?;
        Ok(self.inner.reader.range(prefix, start_after, limit))
    }

    /// A snapshot file (see `snapshot`) of the whole keyspace at one revision that
    /// reflects every write acknowledged before the call (read-index first).
    pub async fn snapshot(&self) -> Result<Vec<u8>> {
        self.read_barrier(Consistency::Linearizable).await?;
        let reader = self.inner.reader.clone();
        // Copying and hashing a large keyspace must not hold up the runtime's workers.
        tokio::task::spawn_blocking(move || snapshot::encode(&reader.export()))
            .await
            .map_err(|e| Error::Raft(format!("snapshot task failed: {e}")))
    }

    /// Applies `txn` through Raft (forwarding to the leader if needed) and returns its
    /// outcome once it is committed and applied.
    pub async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        self.write(txn, true).await
    }

    /// Creates `key`; the outcome says `AlreadyExists` if it exists.
    pub async fn create(&self, key: &str, value: Vec<u8>) -> Result<TxnOutcome> {
        self.txn(Txn {
            ops: vec![Op::Create {
                key: key.to_owned(),
                value,
            }],
        })
        .await
    }

    /// Replaces `key`'s value, if its revision is `expected_revision` (when given).
    pub async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_revision: Option<u64>,
    ) -> Result<TxnOutcome> {
        self.txn(Txn {
            ops: vec![Op::Update {
                key: key.to_owned(),
                value,
                expected_revision,
            }],
        })
        .await
    }

    /// Deletes `key`, if its revision is `expected_revision` (when given).
    pub async fn delete(&self, key: &str, expected_revision: Option<u64>) -> Result<TxnOutcome> {
        self.txn(Txn {
            ops: vec![Op::Delete {
                key: key.to_owned(),
                expected_revision,
            }],
        })
        .await
    }

    /// The write path. `may_forward` is false for writes that were already forwarded.
    pub(super) async fn write(&self, txn: Txn, may_forward: bool) -> Result<TxnOutcome> {
        if txn.ops.is_empty() {
            return Err(Error::InvalidRequest(
                "a transaction needs at least one operation".to_owned(),
            ));
        }
        let deadline = Instant::now() + self.inner.tuning.request_timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match (
                self.inner.proposer.propose(txn.clone(), remaining).await?,
                may_forward,
            ) {
                (Proposed::Applied(outcome), _) => return Ok(outcome),
                (Proposed::NotLeader(Some(leader)), true) => {
                    if let Some(outcome) = self.forward_write(&leader, &txn, remaining).await? {
                        return Ok(outcome);
                    }
                    self.wait_for_leader(deadline).await?;
                }
                (Proposed::NotLeader(Some(leader)), false) => {
                    return Err(Error::Unavailable(format!(
                        "this member is not the leader; the leader is at {leader}"
                    )));
                }
                (Proposed::NotLeader(None), _) => self.wait_for_leader(deadline).await?,
            }
        }
    }

    /// Sends a write to the leader. A leader that cannot be connected to never saw the
    /// request, so the caller may wait for a new leader and retry (`Ok(None)`).
    async fn forward_write(
        &self,
        leader: &str,
        txn: &Txn,
        remaining: Duration,
    ) -> Result<Option<TxnOutcome>> {
        let mut client = self
            .inner
            .peers
            .kv(leader)
            .map_err(|e| Error::Unavailable(format!("leader at {leader}: {e}")))?;
        let mut request = tonic::Request::new(service::txn_to_proto(txn));
        request.set_timeout(remaining);
        request
            .metadata_mut()
            .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
        match client.txn(request).await {
            Ok(reply) => service::outcome_from_proto(reply.into_inner()).map(Some),
            Err(status) if is_connect_error(&status) => Ok(None),
            Err(status)
                if status.code() == tonic::Code::Unavailable
                    && status.message().starts_with("no raft leader is available") =>
            {
                Ok(None)
            }
            // The request may have reached the leader before the failure.
            Err(status) => Err(Error::Indeterminate(format!(
                "forwarding to the leader at {leader} failed: {}",
                status.message()
            ))),
        }
    }

    async fn wait_for_leader(&self, deadline: Instant) -> Result<()> {
        if Instant::now() + LEADER_POLL > deadline {
            return Err(Error::Unavailable(
                "no leader was elected within the request timeout".to_owned(),
            ));
        }
        sleep(LEADER_POLL).await;
        Ok(())
    }

    /// Waits until this member has applied everything committed before the call
    /// (read-index through the leader), unless the read may be stale.
    async fn read_barrier(&self, consistency: Consistency) -> Result<()> {
        if consistency == Consistency::Stale {
            return Ok(());
        }
        let deadline = Instant::now() + self.inner.tuning.request_timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = timeout(remaining, self.inner.raft.ensure_linearizable())
                .await
                .map_err(|_| {
                    Error::Unavailable(
                        "leadership could not be confirmed within the request timeout".to_owned(),
                    )
                })?;
            let forward = match result {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => forward,
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                    return Err(Error::Unavailable(e.to_string()));
                }
                Err(RaftError::Fatal(e)) => return Err(Error::Raft(e.to_string())),
            };
            match forward_address(&forward) {
                Some(leader) => match self.follower_read_index(&leader, remaining).await {
                    Err(Error::Unavailable(_)) if Instant::now() < deadline => {
                        self.wait_for_leader(deadline).await?
                    }
                    result => return result,
                },
                None => self.wait_for_leader(deadline).await?,
            }
        }
    }

    async fn follower_read_index(&self, leader: &str, remaining: Duration) -> Result<()> {
        let mut client = self
            .inner
            .peers
            .raft(leader)
            .map_err(|e| Error::Unavailable(format!("leader at {leader}: {e}")))?;
        let mut request = tonic::Request::new(ReadIndexRequest {});
        request.set_timeout(remaining);
        let index = client
            .read_index(request)
            .await
            .map_err(|s| {
                Error::Unavailable(format!(
                    "read index from the leader at {leader}: {}",
                    s.message()
                ))
            })?
            .into_inner()
            .index;
        self.inner
            .raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|e| Error::Unavailable(format!("waiting to apply index {index}: {e}")))?;
        Ok(())
    }

    /// Watches changes under `prefix` after `after_revision` (0 = from now on), with a
    /// progress notification after each `progress_interval` without events.
    pub fn watch(
        &self,
        prefix: &str,
        after_revision: u64,
        progress_interval: Option<Duration>,
    ) -> Result<WatchStream> {
        self.inner.hub.watch(
            &self.inner.reader,
            prefix,
            after_revision,
            progress_interval,
            &self.inner.tasks,
            self.inner.cancel.clone(),
        )
    }

    /// The current members.
    pub fn members(&self) -> Vec<Member> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| Member {
                node_id: *id,
                address: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect()
    }

    /// Adds `node_id` at `address` as a learner, waits for it to catch up, and promotes
    /// it to voter. Must run on the leader.
    pub(super) async fn add_member(
        &self,
        node_id: NodeId,
        address: &str,
    ) -> Result<(), RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>> {
        let raft = &self.inner.raft;
        let node = BasicNode::new(address);
        self.change_membership(|| raft.add_learner(node_id, node.clone(), true))
            .await?;
        self.change_membership(|| {
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), false)
        })
        .await
    }

    /// Removes a member from the voters and learners. Must run on the leader.
    pub(super) async fn remove_member(
        &self,
        node_id: NodeId,
    ) -> Result<(), RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>> {
        let raft = &self.inner.raft;
        let is_voter = || {
            raft.metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .any(|id| id == node_id)
        };
        if is_voter() {
            self.change_membership(|| {
                raft.change_membership(
                    ChangeMembers::RemoveVoters(BTreeSet::from([node_id])),
                    false,
                )
            })
            .await?;
        }
        let is_known = || {
            raft.metrics()
                .borrow()
                .membership_config
                .membership()
                .nodes()
                .any(|(id, _)| *id == node_id)
        };
        if is_known() {
            self.change_membership(|| {
                raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node_id])), false)
            })
            .await?;
        }
        Ok(())
    }

    /// Runs one membership change, waiting (within the join timeout) while another is
    /// still in progress: membership changes are one at a time.
    async fn change_membership<F, Fut>(
        &self,
        change: F,
    ) -> Result<(), RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>
    where
        F: Fn() -> Fut,
        Fut: Future<
            Output = Result<
                openraft::raft::ClientWriteResponse<super::TypeConfig>,
                RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
            >,
        >,
    {
        let deadline = Instant::now() + JOIN_TIMEOUT;
        loop {
            match change().await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) if Instant::now() < deadline => {
                    sleep(LEADER_POLL).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Removes a member, forwarding to the leader when needed.
    pub async fn remove(&self, node_id: NodeId) -> Result<()> {
        match self.remove_member(node_id).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                let leader = forward_address(&forward)
                    .ok_or_else(|| Error::Unavailable("no leader is known".to_owned()))?;
                let mut client = self
                    .inner
                    .peers
                    .raft(&leader)
                    .map_err(|e| Error::Unavailable(e.to_string()))?;
                client
                    .remove_member(skiff_proto::store::RemoveMemberRequest { node_id })
                    .await
                    .map_err(|s| Error::Unavailable(s.message().to_owned()))?;
                Ok(())
            }
            Err(e) => Err(Error::Raft(e.to_string())),
        }
    }

    /// Stops the peer server, watches and Raft; waits for them to finish.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        if let Err(error) = self.inner.raft.shutdown().await {
            tracing::warn!(%error, "raft did not shut down cleanly");
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

/// Whether a call failed because the connection could not be established, so the
/// request was never sent.
fn is_connect_error(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            );
        }
        source = error.source();
    }
    false
}

/// The leader's address from a `ForwardToLeader` hint.
fn forward_address(forward: &ForwardToLeader<NodeId, BasicNode>) -> Option<String> {
    forward.leader_node.as_ref().map(|node| node.addr.clone())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Reads the member's id from the database, or picks a random one on first start.
fn load_or_create_node_id(db: &Db) -> Result<NodeId> {
    db.write(Durability::Immediate, |txn| {
        let mut table = txn.open_table(RAFT_META)?;
        if let Some(existing) = table.get(NODE_ID)? {
            return db::decode(existing.value());
        }
        // Zero is reserved so "no leader" can never be confused with a member.
        let node_id: NodeId = rand::random::<NodeId>().max(1);
        table.insert(NODE_ID, db::encode(&node_id).as_slice())?;
        Ok(node_id)
    })
}
