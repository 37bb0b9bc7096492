//! The replicated state machine: the MVCC keyspace, the bounded change history, and
//! snapshots of both.
//!
//! Invariants:
//! - every committed non-empty [`Txn`] advances the revision by exactly one, and all
//!   its operations carry that revision;
//! - a transaction is all-or-nothing: preconditions are checked for every operation
//!   (seeing the effects of earlier operations in the same transaction) before any is
//!   applied;
//! - the history holds the events of revisions `(compacted, revision]`; installing a
//!   snapshot empties it (`compacted = revision`), so watches from before then expire;
//! - events are published to watchers only after the apply has committed.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageError,
    StorageIOError, StoredMembership,
};
use redb::{Durability, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::db::{self, Db, HISTORY, KV, SM_META, SNAPSHOT};
use super::watch::WatchHub;
use super::{
    Error, Event, EventKind, KeyValue, NodeId, Op, Precondition, Result, Txn, TxnOutcome,
    TypeConfig,
};

const LAST_APPLIED: &str = "last_applied";
const MEMBERSHIP: &str = "membership";
const REVISION: &str = "revision";
const COMPACTED: &str = "compacted";
const SNAPSHOT_META: &str = "meta";
const SNAPSHOT_DATA: &str = "data";

/// The state machine openraft drives.
pub(crate) struct StateMachine {
    reader: Reader,
    hub: WatchHub,
    history_revisions: u64,
    snapshot_counter: Arc<AtomicU64>,
}

/// Read access to the keyspace and history, shared with the [`super::Store`] handle.
#[derive(Clone)]
pub(crate) struct Reader {
    db: Db,
}

/// What a snapshot carries: the whole keyspace at one revision.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    revision: u64,
    /// `(key, encoded record)` pairs in key order.
    records: Vec<(String, Vec<u8>)>,
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

fn meta<T: serde::de::DeserializeOwned>(
    txn: &impl MetaSource,
    name: &str,
) -> Result<Option<T>, redb::Error> {
    txn.meta_bytes(name)?
        .map(|bytes| db::decode(&bytes))
        .transpose()
}

/// Reading `SM_META` from either kind of transaction.
trait MetaSource {
    fn meta_bytes(&self, name: &str) -> Result<Option<Vec<u8>>, redb::Error>;
}

impl MetaSource for redb::ReadTransaction {
    fn meta_bytes(&self, name: &str) -> Result<Option<Vec<u8>>, redb::Error> {
        Ok(self
            .open_table(SM_META)?
            .get(name)?
            .map(|v| v.value().to_vec()))
    }
}

impl MetaSource for WriteTransaction {
    fn meta_bytes(&self, name: &str) -> Result<Option<Vec<u8>>, redb::Error> {
        Ok(self
            .open_table(SM_META)?
            .get(name)?
            .map(|v| v.value().to_vec()))
    }
}

fn set_meta<T: Serialize>(
    txn: &WriteTransaction,
    name: &str,
    value: &T,
) -> Result<(), redb::Error> {
    txn.open_table(SM_META)?
        .insert(name, db::encode(value).as_slice())?;
    Ok(())
}

impl Reader {
    /// The current revision.
    pub fn revision(&self) -> Result<u64> {
        self.db.read(|txn| Ok(meta(txn, REVISION)?.unwrap_or(0)))
    }

    /// One key and the revision the read observed.
    pub fn get(&self, key: &str) -> Result<(Option<KeyValue>, u64)> {
        self.db.read(|txn| {
            let revision = meta(txn, REVISION)?.unwrap_or(0);
            let table = txn.open_table(KV)?;
            let kv = table
                .get(key)?
                .map(|record| db::decode_record(key, record.value()))
                .transpose()?;
            Ok((kv, revision))
        })
    }

    /// Keys starting with `prefix`, after `start_after`, at most `limit` (0 = all).
    pub fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<RangeResult> {
        self.db.read(|txn| {
            let revision = meta(txn, REVISION)?.unwrap_or(0);
            let table = txn.open_table(KV)?;
            let start = match start_after {
                Some(after) if after >= prefix => after,
                _ => prefix,
            };
            let mut kvs = Vec::new();
            let mut more = false;
            for row in table.range(start..)? {
                let (key, record) = row?;
                let key = key.value();
                if !key.starts_with(prefix) {
                    break;
                }
                if Some(key) == start_after {
                    continue;
                }
                if limit != 0 && kvs.len() == limit {
                    more = true;
                    break;
                }
                kvs.push(db::decode_record(key, record.value())?);
            }
            Ok(RangeResult {
                kvs,
                revision,
                more,
            })
        })
    }

    /// Events under `prefix` with revisions after `after`, and the revision they run up
    /// to; [`Error::Compacted`] if some were already compacted away.
    pub fn history(&self, prefix: &str, after: u64) -> Result<(Vec<Event>, u64)> {
        let result = self.db.read(|txn| {
            let revision: u64 = meta(txn, REVISION)?.unwrap_or(0);
            let compacted: u64 = meta(txn, COMPACTED)?.unwrap_or(0);
            if after < compacted {
                return Ok(Err(Error::Compacted {
                    requested: after,
                    oldest: compacted + 1,
                }));
            }
            let table = txn.open_table(HISTORY)?;
            let mut events = Vec::new();
            for row in table.range(after.saturating_add(1)..)? {
                let batch: Vec<Event> = db::decode(row?.1.value())?;
                events.extend(
                    batch
                        .into_iter()
                        .filter(|event| event.kv.key.starts_with(prefix)),
                );
            }
            Ok(Ok((events, revision)))
        })?;
        result
    }
}

impl StateMachine {
    pub(super) fn new(db: Db, hub: WatchHub, history_revisions: u64) -> Self {
        Self {
            reader: Reader { db },
            hub,
            history_revisions,
            snapshot_counter: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A reader sharing this state machine's database.
    pub(super) fn reader(&self) -> Reader {
        self.reader.clone()
    }

    fn db(&self) -> &Db {
        &self.reader.db
    }
}

/// Checks every operation's precondition against the table as changed by the earlier
/// operations of the same transaction.
fn check_preconditions(
    txn: &WriteTransaction,
    ops: &[Op],
) -> Result<Option<(usize, Precondition)>, redb::Error> {
    let table = txn.open_table(KV)?;
    // key → mod revision after the earlier operations (None = absent).
    let mut staged: HashMap<&str, Option<u64>> = HashMap::new();
    for (op_index, op) in ops.iter().enumerate() {
        let key = op.key();
        let current = match staged.get(key) {
            Some(state) => *state,
            None => table
                .get(key)?
                .map(|record| db::decode_record(key, record.value()))
                .transpose()?
                .map(|kv| kv.mod_revision),
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
            return Ok(Some((op_index, precondition)));
        }
        // Later operations see this one's effect; the exact revision does not matter
        // for them beyond presence, since CAS against an in-flight revision cannot match.
        staged.insert(
            key,
            if matches!(op, Op::Delete { .. }) {
                None
            } else {
                Some(u64::MAX)
            },
        );
    }
    Ok(None)
}

/// Applies a transaction whose preconditions hold at `revision`; returns the previous
/// values and the events.
fn apply_ops(
    txn: &WriteTransaction,
    ops: Vec<Op>,
    revision: u64,
) -> Result<(Vec<Option<KeyValue>>, Vec<Event>), redb::Error> {
    let mut table = txn.open_table(KV)?;
    let mut prev_values = Vec::with_capacity(ops.len());
    let mut events = Vec::with_capacity(ops.len());
    for op in ops {
        let key = op.key().to_owned();
        let prev = table
            .get(key.as_str())?
            .map(|record| db::decode_record(&key, record.value()))
            .transpose()?;
        let event = match op {
            Op::Create { value, .. } | Op::Update { value, .. } => {
                let create_revision = prev.as_ref().map_or(revision, |p| p.create_revision);
                table.insert(
                    key.as_str(),
                    db::encode_record(create_revision, revision, &value).as_slice(),
                )?;
                let kind = if prev.is_some() {
                    EventKind::Updated
                } else {
                    EventKind::Created
                };
                let kv = KeyValue {
                    key,
                    value,
                    create_revision,
                    mod_revision: revision,
                };
                Event {
                    kind,
                    kv,
                    prev: prev.clone(),
                }
            }
            Op::Delete { .. } => {
                table.remove(key.as_str())?;
                let last = prev
                    .clone()
                    .expect("preconditions guarantee the key exists");
                Event {
                    kind: EventKind::Deleted,
                    kv: KeyValue {
                        mod_revision: revision,
                        ..last
                    },
                    prev: prev.clone(),
                }
            }
        };
        prev_values.push(prev);
        events.push(event);
    }
    Ok((prev_values, events))
}

impl StateMachine {
    /// Applies a batch of entries in one write transaction; returns one outcome per
    /// entry and the events produced.
    fn apply_batch(
        txn: &WriteTransaction,
        entries: Vec<Entry<TypeConfig>>,
        history_revisions: u64,
    ) -> Result<(Vec<TxnOutcome>, Vec<Event>, u64), redb::Error> {
        let mut revision: u64 = meta(txn, REVISION)?.unwrap_or(0);
        let start_revision = revision;
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut all_events = Vec::new();
        let mut last_applied = None;
        for entry in entries {
            last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => TxnOutcome::Committed {
                    revision,
                    prev: Vec::new(),
                },
                EntryPayload::Membership(membership) => {
                    set_meta(
                        txn,
                        MEMBERSHIP,
                        &StoredMembership::new(Some(entry.log_id), membership),
                    )?;
                    TxnOutcome::Committed {
                        revision,
                        prev: Vec::new(),
                    }
                }
                EntryPayload::Normal(Txn { ops }) if ops.is_empty() => TxnOutcome::Committed {
                    revision,
                    prev: Vec::new(),
                },
                EntryPayload::Normal(Txn { ops }) => match check_preconditions(txn, &ops)? {
                    Some((op_index, precondition)) => TxnOutcome::Failed {
                        op_index,
                        precondition,
                    },
                    None => {
                        revision += 1;
                        let (prev, events) = apply_ops(txn, ops, revision)?;
                        txn.open_table(HISTORY)?
                            .insert(revision, db::encode(&events).as_slice())?;
                        all_events.extend(events);
                        TxnOutcome::Committed { revision, prev }
                    }
                },
            };
            outcomes.push(outcome);
        }
        set_meta(txn, LAST_APPLIED, &last_applied)?;
        if revision != start_revision {
            set_meta(txn, REVISION, &revision)?;
            // Keep the last `history_revisions` revisions of events.
            if revision > history_revisions {
                let floor = revision - history_revisions;
                txn.open_table(HISTORY)?.retain_in(..=floor, |_, _| false)?;
                set_meta(txn, COMPACTED, &floor)?;
            }
        }
        Ok((outcomes, all_events, revision))
    }
}

fn sm_error(e: &Error) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(AnyError::new(e)).into()
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
        self.db()
            .read(|txn| {
                let last_applied: Option<LogId<NodeId>> = meta(txn, LAST_APPLIED)?.flatten();
                let membership = meta(txn, MEMBERSHIP)?.unwrap_or_default();
                Ok((last_applied, membership))
            })
            .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)).into())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<TxnOutcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let db = self.db().clone();
        let history_revisions = self.history_revisions;
        // Applies are not fsynced: the log is, and replays them after a crash.
        let (outcomes, events, revision) = tokio::task::spawn_blocking(move || {
            db.write(Durability::None, |txn| {
                Self::apply_batch(txn, entries, history_revisions)
            })
        })
        .await
        .map_err(|e| sm_error(&Error::Raft(format!("apply task failed: {e}"))))?
        .map_err(|e| sm_error(&e))?;
        if !events.is_empty() {
            self.hub.publish(events, revision);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            reader: self.reader.clone(),
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
        snapshot_meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let body: SnapshotBody = db::decode(&data)
            .map_err(|e| snapshot_error(&Error::database("decode snapshot", e)))?;
        let revision = body.revision;
        let snapshot_meta = snapshot_meta.clone();
        let db = self.db().clone();
        tokio::task::spawn_blocking(move || {
            db.write(Durability::Immediate, |txn| {
                let mut kv = txn.open_table(KV)?;
                kv.retain(|_, _| false)?;
                for (key, record) in &body.records {
                    kv.insert(key.as_str(), record.as_slice())?;
                }
                drop(kv);
                txn.open_table(HISTORY)?.retain(|_, _| false)?;
                set_meta(txn, REVISION, &revision)?;
                set_meta(txn, COMPACTED, &revision)?;
                set_meta(txn, LAST_APPLIED, &snapshot_meta.last_log_id)?;
                set_meta(txn, MEMBERSHIP, &snapshot_meta.last_membership)?;
                let mut snapshots = txn.open_table(SNAPSHOT)?;
                snapshots.insert(SNAPSHOT_META, db::encode(&snapshot_meta).as_slice())?;
                snapshots.insert(SNAPSHOT_DATA, data.as_slice())?;
                Ok(())
            })
        })
        .await
        .map_err(|e| snapshot_error(&Error::Raft(format!("snapshot install task failed: {e}"))))?
        .map_err(|e| snapshot_error(&e))?;
        // Watchers cannot be told what changed across a snapshot: they must relist.
        self.hub.reset(revision);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        self.db()
            .read(|txn| {
                let table = txn.open_table(SNAPSHOT)?;
                let (Some(meta_bytes), Some(data)) =
                    (table.get(SNAPSHOT_META)?, table.get(SNAPSHOT_DATA)?)
                else {
                    return Ok(None);
                };
                let meta: SnapshotMeta<NodeId, BasicNode> = db::decode(meta_bytes.value())?;
                Ok(Some(Snapshot {
                    meta,
                    snapshot: Box::new(Cursor::new(data.value().to_vec())),
                }))
            })
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)).into())
    }
}

/// Builds snapshots from a consistent read of the keyspace.
pub(crate) struct SnapshotBuilder {
    reader: Reader,
    counter: Arc<AtomicU64>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let db = self.reader.db.clone();
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        let built = tokio::task::spawn_blocking(
            move || -> Result<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)> {
                let (snapshot_meta, data) = db.read(|txn| {
                    let last_applied: Option<LogId<NodeId>> = meta(txn, LAST_APPLIED)?.flatten();
                    let membership: StoredMembership<NodeId, BasicNode> =
                        meta(txn, MEMBERSHIP)?.unwrap_or_default();
                    let revision = meta(txn, REVISION)?.unwrap_or(0);
                    let table = txn.open_table(KV)?;
                    let records = table
                        .iter()?
                        .map(|row| {
                            row.map(|(key, record)| {
                                (key.value().to_owned(), record.value().to_vec())
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let snapshot_id = match last_applied {
                        Some(log_id) => format!("{}-{}-{counter}", log_id.leader_id, log_id.index),
                        None => format!("empty-{counter}"),
                    };
                    let snapshot_meta = SnapshotMeta {
                        last_log_id: last_applied,
                        last_membership: membership,
                        snapshot_id,
                    };
                    Ok((
                        snapshot_meta,
                        db::encode(&SnapshotBody { revision, records }),
                    ))
                })?;
                // Storing the snapshot durably also flushes every earlier apply, which is
                // what makes purging the log behind it safe.
                db.write(Durability::Immediate, |txn| {
                    let mut snapshots = txn.open_table(SNAPSHOT)?;
                    snapshots.insert(SNAPSHOT_META, db::encode(&snapshot_meta).as_slice())?;
                    snapshots.insert(SNAPSHOT_DATA, data.as_slice())?;
                    Ok(())
                })?;
                Ok((snapshot_meta, data))
            },
        )
        .await
        .map_err(|e| snapshot_error(&Error::Raft(format!("snapshot task failed: {e}"))))?
        .map_err(|e| snapshot_error(&e))?;
        let (meta, data) = built;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
