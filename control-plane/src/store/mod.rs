//! The control plane's source of truth: a key-value store replicated with Raft.
//!
//! - `db`: the redb database files (`log.redb`, `state.redb`) and their tables.
//! - `log_store`: openraft's log storage, group-committed (fsync before acknowledging).
//! - `state_machine`: the in-memory MVCC keyspace, the bounded event history, and
//!   snapshots fsynced to `state.redb`.
//! - `watch`: ordered, exactly-once change streams with progress notifications.
//! - `propose`: batches concurrent transactions into one log entry (group commit).
//! - `network`: openraft's network over tonic, and clients of other members.
//! - `service`: the gRPC `Raft` and `Kv` services members and clients call.
//! - `tls`: mutual TLS between members ([`PeerTls`]) and the peer-certificate check.
//! - `handle`: [`Store`], the API the rest of the control plane uses.
//! - `snapshot`: backup files of the keyspace (`snapshot save|restore`) and their import
//!   into a new member.
//!
//! Keys are `/registry/<group>/<resource>/<namespace>/<name>`; every committed
//! transaction gets the next global revision, which objects carry as
//! `metadata.resourceVersion`.

mod db;
mod handle;
mod log_store;
mod network;
mod propose;
mod service;
pub mod snapshot;
mod state_machine;
mod tls;
mod watch;

#[cfg(test)]
mod tests;

use std::io::Cursor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use handle::{Consistency, Member, Store};
pub use network::{peer_endpoint, peer_url};
pub use propose::Batch;
pub use tls::{PEER_GROUP, PeerTls};
pub use watch::{WatchMessage, WatchStream};

/// A member's identity in the Raft group.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// openraft's type configuration for the store.
    pub TypeConfig:
        D = Batch,
        R = Vec<TxnOutcome>,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle type.
pub(crate) type Raft = openraft::Raft<TypeConfig>;

/// One key's current state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value (JSON for Kubernetes objects).
    pub value: Vec<u8>,
    /// The revision that created the key.
    pub create_revision: u64,
    /// The revision that last changed the key: the object's `resourceVersion`.
    pub mod_revision: u64,
}

/// One operation of a [`Txn`], with its precondition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Create the key; fails if it exists.
    Create {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Replace the value; fails if the key is absent or (when given) its revision differs.
    Update {
        /// The key.
        key: String,
        /// The new value.
        value: Vec<u8>,
        /// Compare-and-swap: the `mod_revision` the key must have.
        expected_revision: Option<u64>,
    },
    /// Delete the key; fails if it is absent or (when given) its revision differs.
    Delete {
        /// The key.
        key: String,
        /// Compare-and-swap: the `mod_revision` the key must have.
        expected_revision: Option<u64>,
    },
}

impl Op {
    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            Self::Create { key, .. } | Self::Update { key, .. } | Self::Delete { key, .. } => key,
        }
    }
}

/// An all-or-nothing group of operations, applied at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    /// Applied in order at one revision if every precondition holds.
    pub ops: Vec<Op>,
}

/// Why an operation's precondition failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precondition {
    /// `Create` of a key that exists.
    AlreadyExists,
    /// `Update`/`Delete` of a key that does not exist.
    NotFound,
    /// The key's `mod_revision` is not the expected one.
    RevisionMismatch {
        /// The key's current revision.
        actual: u64,
    },
}

/// What applying a [`Txn`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOutcome {
    /// Every operation was applied at `revision`.
    Committed {
        /// The transaction's revision.
        revision: u64,
        /// The value each operation replaced, in operation order.
        prev: Vec<Option<KeyValue>>,
    },
    /// Operation `op_index` failed its precondition; nothing was applied.
    Failed {
        /// Index of the failing operation.
        op_index: usize,
        /// Why it failed.
        precondition: Precondition,
    },
}

/// What kind of change an [`Event`] records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The key was created.
    Created,
    /// The key's value was replaced.
    Updated,
    /// The key was deleted.
    Deleted,
}

/// One change to one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The change.
    pub kind: EventKind,
    /// The key's new state; for deletions its last state with `mod_revision` set to the
    /// deletion's revision.
    pub kv: KeyValue,
    /// The state before an update or deletion.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> u64 {
        self.kv.mod_revision
    }
}

/// Timing and size knobs; the defaults suit a LAN, tests shrink them.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// How often the leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min: Duration,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max: Duration,
    /// Build a snapshot (and purge the log) after this many entries.
    pub snapshot_after_logs: u64,
    /// Log entries kept behind the snapshot for followers slightly behind.
    pub logs_kept_after_snapshot: u64,
    /// Revisions of change history kept for watches; older ones are compacted.
    pub history_revisions: u64,
    /// How long writes and reads wait for a leader before failing.
    pub request_timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(500),
            election_timeout_max: Duration::from_millis(1000),
            snapshot_after_logs: 10_000,
            logs_kept_after_snapshot: 1_000,
            history_revisions: 10_000,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// How to open a store member.
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory holding the database file; created if missing.
    pub data_dir: PathBuf,
    /// Address the peer gRPC server (Raft + Kv) listens on.
    pub listen_peer: SocketAddr,
    /// Address other members reach this one at; defaults to the bound listen address.
    pub advertise_peer: Option<String>,
    /// Peer addresses (`host:port` or URLs) of existing members to join through, tried
    /// in order (the leader's first saves a forward); empty starts a cluster of its own.
    /// Ignored on restart: the member rejoins the cluster on disk.
    pub join: Vec<String>,
    /// Mutual TLS for peer traffic, both served and used towards other members; `None`
    /// speaks plain HTTP/2 (tests, benches, `skiff up`).
    pub tls: Option<PeerTls>,
    /// Timing and size knobs.
    pub tuning: Tuning,
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database file could not be opened, read or written.
    #[error("store database {operation} failed")]
    Database {
        /// What was being done.
        operation: &'static str,
        /// The engine's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No leader is known or reachable within the request timeout (retryable).
    #[error("no raft leader is available: {0}")]
    Unavailable(String),
    /// The outcome of a write forwarded to the leader is unknown (the connection
    /// broke): it may or may not have been applied.
    #[error("the write's outcome is unknown: {0}")]
    Indeterminate(String),
    /// A watch asked for revisions that were compacted away.
    #[error(
        "the requested revision {requested} has been compacted; the oldest available is {oldest}"
    )]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The oldest revision whose events are still kept.
        oldest: u64,
    },
    /// Raft reported a fatal error (the member is shutting down or broken).
    #[error("raft failed: {0}")]
    Raft(String),
    /// The request is invalid (an empty transaction, an unknown member).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// TLS with another member failed in a way retrying cannot fix: its certificate is
    /// not from our CA or names another host, or it refused ours.
    #[error("mutual TLS with the member at {address} failed: {message}")]
    PeerAuth {
        /// The member's peer address.
        address: String,
        /// What failed.
        message: String,
    },
    /// The peer TLS material could not be loaded or used.
    #[error("peer TLS failed: {context}")]
    Tls {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The peer server could not start.
    #[error("peer server on {address} failed")]
    Server {
        /// The listen address.
        address: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    fn database(
        operation: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Database {
            operation,
            source: Box::new(source),
        }
    }
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
