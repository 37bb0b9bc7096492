//! The replicated state machine: an in-memory MVCC keyspace with a bounded change
//! history, made durable by the Raft log plus snapshots on disk (as etcd's state is
//! made durable by its WAL plus backend snapshots).
//!
//! Applying is pure computation under a lock, so it never waits for the disk. On
//! start, the keyspace is loaded from the latest snapshot in `state.redb`, and openraft
//! replays the log entries after it.
//!
//! Invariants:
//! - every committed non-empty [`Txn`] advances the revision by exactly one, and all
//!   its operations carry that revision;
//! - a transaction is all-or-nothing: preconditions are checked for every operation
//!   (seeing the effects of earlier operations in the same transaction) before any is
//!   applied;
//! - the history holds the events of revisions `(compacted, revision]`; a snapshot
//!   (loaded or installed) empties it, so watches from before then expire;
//! - a snapshot is fsynced before openraft learns of it, so the log is only ever
//!   purged behind state that is on disk;
//! - events are published to watchers only after the apply is visible to readers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageError,
    StorageIOError, StoredMembership,
};
use redb::{Durability, ReadableTable};
use serde::{Deserialize, Serialize};

use super::db::{self, Db, SNAPSHOT};
use super::watch::WatchHub;
use super::{
    Batch, Error, Event, EventKind, KeyValue, NodeId, Op, Precondition, Result, Txn, TxnOutcome,
    TypeConfig,
};

const SNAPSHOT_META: &str = "meta";
const SNAPSHOT_DATA: &str = "data";

/// One key's state in memory.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    value: Vec<u8>,
    create_revision: u64,
    mod_revision: u64,
}

impl Record {
    fn to_kv(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        }
    }
}

/// Everything the state machine holds.
#[derive(Debug, Default)]
struct Keyspace {
    records: BTreeMap<String, Record>,
    revision: u64,
    /// Events of revisions up to this one were dropped from the history.
    compacted: u64,
    history: VecDeque<Event>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
}

/// What a snapshot carries: the whole keyspace at one revision.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    revision: u64,
    records: Vec<(String, Record)>,
}

type Shared = Arc<RwLock<Keyspace>>;

/// The keyspace at one revision, encoded as a snapshot body.
pub(super) struct Exported {
    /// The revision of the copy.
    pub revision: u64,
    /// How many keys it holds.
    pub keys: u64,
    /// The encoded [`SnapshotBody`].
    pub body: Vec<u8>,
}

/// The revision and number of keys of an encoded snapshot body, or why it does not
/// decode.
pub(super) fn inspect_body(body: &[u8]) -> Result<(u64, u64), redb::Error> {
    let body: SnapshotBody = db::decode(body)?;
    Ok((body.revision, body.records.len() as u64))
}

/// The state machine openraft drives.
pub(crate) struct StateMachine {
    state: Shared,
    db: Db,
    durable: DurableSnapshot,
    hub: WatchHub,
    history_revisions: u64,
    snapshot_counter: Arc<AtomicU64>,
}

/// Read access to the keyspace and history, shared with the [`super::Store`] handle.
#[derive(Clone)]
pub(crate) struct Reader {
    state: Shared,
}

/// A page of keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResult {
    /// The keys, in key order.
    pub kvs: Vec<KeyValue>,
    /// The revision the read observed.
    pub revision: u64,
    /// Whether more keys follow.
    pub more: bool,
}

fn read(state: &Shared) -> RwLockReadGuard<'_, Keyspace> {
    state
        .read()
        .expect("keyspace lock is never poisoned: applies do not panic")
}

fn write(state: &Shared) -> RwLockWriteGuard<'_, Keyspace> {
    state
        .write()
        .expect("keyspace lock is never poisoned: applies do not panic")
}

impl Reader {
    /// The current revision.
    pub fn revision(&self) -> u64 {
        read(&self.state).revision
    }

    /// One key and the revision the read observed.
    pub fn get(&self, key: &str) -> (Option<KeyValue>, u64) {
        let state = read(&self.state);
        (
            state.records.get(key).map(|record| record.to_kv(key)),
            state.revision,
        )
    }

    /// Keys starting with `prefix`, after `start_after`, at most `limit` (0 = all).
    pub fn range(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> RangeResult {
        let state = read(&self.state);
        let rows = match start_after {
            Some(after) if after >= prefix => state
                .records
                .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            _ => state.records.range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            )),
        };
        let mut kvs = Vec::new();
        let mut more = false;
        for (key, record) in rows.take_while(|(key, _)| key.starts_with(prefix)) {
            if limit != 0 && kvs.len() == limit {
                more = true;
                break;
            }
            kvs.push(record.to_kv(key));
        }
        RangeResult {
            kvs,
            revision: state.revision,
            more,
        }
    }

    /// The whole keyspace at the current revision, for a backup: the revision, the
    /// number of keys, and the snapshot body encoded as Raft snapshots encode it.
    pub(super) fn export(&self) -> Exported {
        // Copy under the lock, encode after it: applies wait only for the copy.
        let (revision, records) = {
            let state = read(&self.state);
            let records: Vec<(String, Record)> = state
                .records
                .iter()
                .map(|(key, record)| (key.clone(), record.clone()))
                .collect();
            (state.revision, records)
        };
        Exported {
            revision,
            keys: records.len() as u64,
            body: db::encode(&SnapshotBody { revision, records }),
        }
    }

    /// Events under `prefix` with revisions after `after`, and the revision they run up
    /// to; [`Error::Compacted`] if some were already dropped.
    pub fn history(&self, prefix: &str, after: u64) -> Result<(Vec<Event>, u64)> {
        let state = read(&self.state);
        if after < state.compacted {
            return Err(Error::Compacted {
                requested: after,
                oldest: state.compacted + 1,
            });
        }
        let start = state
            .history
            .partition_point(|event| event.revision() <= after);
        let events = state
            .history
            .range(start..)
            .filter(|event| event.kv.key.starts_with(prefix))
            .cloned()
            .collect();
        Ok((events, state.revision))
    }
}

impl StateMachine {
    /// Opens the state machine over `db` (`state.redb`), loading the latest snapshot.
    pub(super) fn open(
        db: Db,
        hub: WatchHub,
        history_revisions: u64,
        durable: DurableSnapshot,
    ) -> Result<Self> {
        let mut keyspace = Keyspace::default();
        if let Some((meta, data)) = load_snapshot(&db)? {
            let body: SnapshotBody =
                db::decode(&data).map_err(|e| Error::database("decoding the snapshot", e))?;
            keyspace = Keyspace::from_snapshot(&meta, body);
            durable.send_replace(meta.last_log_id.map(|id| id.index));
        }
        Ok(Self {
            state: Arc::new(RwLock::new(keyspace)),
            db,
            durable,
            hub,
            history_revisions,
            snapshot_counter: Arc::new(AtomicU64::new(0)),
        })
    }

    /// A reader sharing this state machine's keyspace.
    pub(super) fn reader(&self) -> Reader {
        Reader {
            state: self.state.clone(),
        }
    }

    /// Stores a snapshot durably in `state.redb`.
    async fn persist_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        data: Vec<u8>,
    ) -> Result<Vec<u8>> {
        persist_snapshot(self.db.clone(), &self.durable, meta.clone(), data).await
    }
}

/// The log index up to which a snapshot is on disk: the log store purges only behind
/// it, so a crash can never leave the log purged past the stored snapshot.
pub(crate) type DurableSnapshot = watch::Sender<Option<u64>>;

/// Stores a snapshot durably, unless a newer one is already stored (a snapshot build
/// that finishes after a newer snapshot was installed must not replace it), then
/// advances the durable-snapshot mark.
pub(super) async fn persist_snapshot(
    db: Db,
    durable: &DurableSnapshot,
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
) -> Result<Vec<u8>> {
    let index = meta.last_log_id.map(|id| id.index);
    let data = tokio::task::spawn_blocking(move || {
        db.write(Durability::Immediate, |txn| {
            let mut table = txn.open_table(SNAPSHOT)?;
            let stored: Option<SnapshotMeta<NodeId, BasicNode>> = table
                .get(SNAPSHOT_META)?
                .map(|m| db::decode(m.value()))
                .transpose()?;
            if stored.is_some_and(|stored| stored.last_log_id > meta.last_log_id) {
                return Ok(());
            }
            table.insert(SNAPSHOT_META, db::encode(&meta).as_slice())?;
            table.insert(SNAPSHOT_DATA, data.as_slice())?;
            Ok(())
        })?;
        Ok::<_, Error>(data)
    })
    .await
    .map_err(|e| Error::Raft(format!("snapshot write task failed: {e}")))??;
    durable.send_modify(|mark| *mark = (*mark).max(index));
    Ok(data)
}

/// Replaces the stored snapshot with `meta` and `body` (fsynced), before the state
/// machine is opened: how a restored backup becomes a member's starting state.
pub(super) fn replace_snapshot(
    db: &Db,
    meta: &SnapshotMeta<NodeId, BasicNode>,
    body: &[u8],
) -> Result<()> {
    db.write(Durability::Immediate, |txn| {
        let mut table = txn.open_table(SNAPSHOT)?;
        table.insert(SNAPSHOT_META, db::encode(meta).as_slice())?;
        table.insert(SNAPSHOT_DATA, body)?;
        Ok(())
    })
}

/// A snapshot as stored: its metadata and its encoded body.
type StoredSnapshot = (SnapshotMeta<NodeId, BasicNode>, Vec<u8>);

pub(super) fn load_snapshot(db: &Db) -> Result<Option<StoredSnapshot>> {
    db.read(|txn| {
        let table = txn.open_table(SNAPSHOT)?;
        let (Some(meta), Some(data)) = (table.get(SNAPSHOT_META)?, table.get(SNAPSHOT_DATA)?)
        else {
            return Ok(None);
        };
        Ok(Some((db::decode(meta.value())?, data.value().to_vec())))
    })
}

impl Keyspace {
    fn from_snapshot(meta: &SnapshotMeta<NodeId, BasicNode>, body: SnapshotBody) -> Self {
        Self {
            records: body.records.into_iter().collect(),
            revision: body.revision,
            compacted: body.revision,
            history: VecDeque::new(),
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        }
    }

    /// Checks every operation's precondition against the keyspace as changed by the
    /// earlier operations of the same transaction.
    fn check_preconditions(&self, ops: &[Op]) -> Option<(usize, Precondition)> {
        // key → mod revision after the earlier operations (None = absent).
        let mut staged: HashMap<&str, Option<u64>> = HashMap::new();
        for (op_index, op) in ops.iter().enumerate() {
            let key = op.key();
            let current = match staged.get(key) {
                Some(state) => *state,
                None => self.records.get(key).map(|record| record.mod_revision),
            };
            let failure = match (op, current) {
                (Op::Create { .. }, Some(_)) => Some(Precondition::AlreadyExists),
                (Op::Update { .. } | Op::Delete { .. }, None) => Some(Precondition::NotFound),
                (
                    Op::Update {
                        expected_revision: Some(expected),
                        ..
                    }
                    | Op::Delete {
                        expected_revision: Some(expected),
                        ..
                    },
                    Some(actual),
                ) if *expected != actual => Some(Precondition::RevisionMismatch { actual }),
                _ => None,
            };
            if let Some(precondition) = failure {
                return Some((op_index, precondition));
            }
            // Later operations see this one's effect: the key's revision is then the
            // transaction's own, which no caller can have read yet.
            staged.insert(
                key,
                if matches!(op, Op::Delete { .. }) {
                    None
                } else {
                    Some(self.revision + 1)
                },
            );
        }
        None
    }

    /// Applies a transaction whose preconditions hold, at the next revision.
    fn apply_ops(&mut self, ops: Vec<Op>, events: &mut Vec<Event>) -> TxnOutcome {
        self.revision += 1;
        let revision = self.revision;
        let mut prev_values = Vec::with_capacity(ops.len());
        for op in ops {
            let event = match op {
                Op::Create { key, value } | Op::Update { key, value, .. } => {
                    let prev = self.records.get(&key).map(|record| record.to_kv(&key));
                    let create_revision = prev.as_ref().map_or(revision, |p| p.create_revision);
                    self.records.insert(
                        key.clone(),
                        Record {
                            value: value.clone(),
                            create_revision,
                            mod_revision: revision,
                        },
                    );
                    let kind = if prev.is_some() {
                        EventKind::Updated
                    } else {
                        EventKind::Created
                    };
                    Event {
                        kind,
                        kv: KeyValue {
                            key,
                            value,
                            create_revision,
                            mod_revision: revision,
                        },
                        prev,
                    }
                }
                Op::Delete { key, .. } => {
                    let record = self
                        .records
                        .remove(&key)
                        .expect("preconditions guarantee the key exists");
                    let prev = record.to_kv(&key);
                    Event {
                        kind: EventKind::Deleted,
                        kv: KeyValue {
                            mod_revision: revision,
                            ..prev.clone()
                        },
                        prev: Some(prev),
                    }
                }
            };
            prev_values.push(event.prev.clone());
            events.push(event);
        }
        TxnOutcome::Committed {
            revision,
            prev: prev_values,
        }
    }

    /// Applies one entry, appending its events; one outcome per transaction.
    fn apply_entry(
        &mut self,
        entry: Entry<TypeConfig>,
        events: &mut Vec<Event>,
    ) -> Vec<TxnOutcome> {
        self.last_applied = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Blank => Vec::new(),
            EntryPayload::Membership(membership) => {
                self.membership = StoredMembership::new(Some(entry.log_id), membership);
                Vec::new()
            }
            EntryPayload::Normal(Batch { txns }) => txns
                .into_iter()
                .map(|txn| self.apply_txn(txn, events))
                .collect(),
        }
    }

    fn apply_txn(&mut self, Txn { ops }: Txn, events: &mut Vec<Event>) -> TxnOutcome {
        if ops.is_empty() {
            return TxnOutcome::Committed {
                revision: self.revision,
                prev: Vec::new(),
            };
        }
        match self.check_preconditions(&ops) {
            Some((op_index, precondition)) => TxnOutcome::Failed {
                op_index,
                precondition,
            },
            None => self.apply_ops(ops, events),
        }
    }

    /// Records events in the history and drops those older than the window.
    fn record_history(&mut self, events: &[Event], history_revisions: u64) {
        self.history.extend(events.iter().cloned());
        let floor = self.revision.saturating_sub(history_revisions);
        if floor > self.compacted {
            let keep_from = self
                .history
                .partition_point(|event| event.revision() <= floor);
            self.history.drain(..keep_from);
            self.compacted = floor;
        }
    }
}

fn snapshot_error(e: &Error) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, AnyError::new(e)).into()
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let state = read(&self.state);
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<TxnOutcome>>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut events = Vec::new();
        let (outcomes, revision) = {
            let mut state = write(&self.state);
            let outcomes: Vec<Vec<TxnOutcome>> = entries
                .into_iter()
                .map(|entry| state.apply_entry(entry, &mut events))
                .collect();
            state.record_history(&events, self.history_revisions);
            (outcomes, state.revision)
        };
        if !events.is_empty() {
            self.hub.publish(events, revision);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            state: self.state.clone(),
            db: self.db.clone(),
            durable: self.durable.clone(),
            counter: self.snapshot_counter.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let body: SnapshotBody = db::decode(&data)
            .map_err(|e| snapshot_error(&Error::database("decode snapshot", e)))?;
        // On disk first: the log behind it may be purged as soon as this returns.
        self.persist_snapshot(meta, data)
            .await
            .map_err(|e| snapshot_error(&e))?;
        let revision = body.revision;
        *write(&self.state) = Keyspace::from_snapshot(meta, body);
        // Watchers cannot be told what changed across a snapshot: they must relist.
        self.hub.reset(revision);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let snapshot = load_snapshot(&self.db)
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?;
        Ok(snapshot.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Builds snapshots from a consistent copy of the keyspace.
pub(crate) struct SnapshotBuilder {
    state: Shared,
    db: Db,
    durable: DurableSnapshot,
    counter: Arc<AtomicU64>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (meta, body) = {
            let state = read(&self.state);
            let counter = self.counter.fetch_add(1, Ordering::Relaxed);
            let snapshot_id = match state.last_applied {
                Some(log_id) => format!("{}-{}-{counter}", log_id.leader_id, log_id.index),
                None => format!("empty-{counter}"),
            };
            let meta = SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.membership.clone(),
                snapshot_id,
            };
            let records: Vec<(String, Record)> = state
                .records
                .iter()
                .map(|(k, r)| (k.clone(), r.clone()))
                .collect();
            (
                meta,
                SnapshotBody {
                    revision: state.revision,
                    records,
                },
            )
        };
        let data = persist_snapshot(
            self.db.clone(),
            &self.durable,
            meta.clone(),
            db::encode(&body),
        )
        .await
        .map_err(|e| snapshot_error(&e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
