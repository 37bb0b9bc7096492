//! openraft's log storage on redb, with group commit.
//!
//! `append` puts the entries in an in-memory pending map (so readers see them at once,
//! as openraft requires) and queues them for a dedicated writer thread. The writer
//! takes every append queued behind the one it is on, writes them in one transaction,
//! fsyncs once, and only then tells openraft (through each append's callback) that they
//! are durable. Concurrent client writes therefore share fsyncs, as in etcd's WAL.
//! Votes, truncations and purges go through the same queue, so they are ordered with
//! appends, and their callers wait for them.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogId, StorageError, StorageIOError, Vote,
};
use redb::{Durability, ReadableTable, WriteTransaction};
use tokio::sync::oneshot;

use super::db::{self, Db, LOG, RAFT_META};
use super::{Error, NodeId, TypeConfig};

pub(super) const VOTE: &str = "vote";
pub(super) const LAST_PURGED: &str = "last_purged";

/// An appended entry that may not be on disk yet.
struct Pending {
    entry: Entry<TypeConfig>,
    bytes: Vec<u8>,
}

/// One append's entries, by index.
type Rows = Vec<(u64, Arc<Pending>)>;

/// Entries appended but not yet written, by index.
type PendingMap = Arc<Mutex<BTreeMap<u64, Arc<Pending>>>>;

/// A write that is not an append, run by the writer thread in queue order.
type WriteBody = Box<dyn FnOnce(&WriteTransaction) -> Result<(), redb::Error> + Send>;

/// Work for the writer thread.
enum Job {
    Append {
        rows: Rows,
        callback: LogFlushed<TypeConfig>,
    },
    Write {
        body: WriteBody,
        done: oneshot::Sender<Result<(), Error>>,
    },
}

/// The Raft log and vote of one member.
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Db,
    pending: PendingMap,
    jobs: mpsc::Sender<Job>,
    /// The log index up to which a snapshot is on disk (see `state_machine`).
    durable_snapshot: tokio::sync::watch::Receiver<Option<u64>>,
}

impl LogStore {
    /// Opens the log over `db` and starts its writer thread, which ends when the last
    /// clone of the store is dropped.
    pub(super) fn new(db: Db, durable_snapshot: tokio::sync::watch::Receiver<Option<u64>>) -> Self {
        let (jobs, queue) = mpsc::channel();
        let pending: PendingMap = Arc::default();
        let writer = Writer {
            db: db.clone(),
            pending: pending.clone(),
            queue,
        };
        std::thread::Builder::new()
            .name("raft-log-writer".to_owned())
            .spawn(move || writer.run())
            .expect("spawning the log writer thread");
        Self {
            db,
            pending,
            jobs,
            durable_snapshot,
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Pending>>> {
        self.pending
            .lock()
            .expect("pending log map is never poisoned: no panics while held")
    }

    /// Runs a durable write in queue order and waits for it.
    async fn write(
        &self,
        body: impl FnOnce(&WriteTransaction) -> Result<(), redb::Error> + Send + 'static,
    ) -> Result<(), Error> {
        let (done, finished) = oneshot::channel();
        self.jobs
            .send(Job::Write {
                body: Box::new(body),
                done,
            })
            .map_err(|_| Error::Raft("the log writer has stopped".to_owned()))?;
        finished
            .await
            .map_err(|_| Error::Raft("the log writer has stopped".to_owned()))?
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        name: &'static str,
    ) -> Result<Option<T>, Error> {
        self.db.read(|txn| {
            let table = txn.open_table(RAFT_META)?;
            table
                .get(name)?
                .map(|value| db::decode(value.value()))
                .transpose()
        })
    }
}

struct Writer {
    db: Db,
    pending: PendingMap,
    queue: mpsc::Receiver<Job>,
}

impl Writer {
    fn run(self) {
        let mut backlog = VecDeque::new();
        while let Ok(job) = self.queue.recv() {
            backlog.push_back(job);
            // Everything queued meanwhile joins this round: that is the group commit.
            backlog.extend(self.queue.try_iter());
            while let Some(job) = backlog.pop_front() {
                match job {
                    Job::Append { rows, callback } => {
                        let mut group = vec![(rows, callback)];
                        while let Some(Job::Append { .. }) = backlog.front() {
                            let Some(Job::Append { rows, callback }) = backlog.pop_front() else {
                                unreachable!("checked above")
                            };
                            group.push((rows, callback));
                        }
                        self.append_group(group);
                    }
                    Job::Write { body, done } => {
                        let _ = done.send(self.db.write(Durability::Immediate, body));
                    }
                }
            }
        }
    }

    fn append_group(&self, group: Vec<(Rows, LogFlushed<TypeConfig>)>) {
        let result = self.db.write(Durability::Immediate, |txn| {
            let mut table = txn.open_table(LOG)?;
            for (rows, _) in &group {
                for (index, pending) in rows {
                    table.insert(*index, pending.bytes.as_slice())?;
                }
            }
            Ok(())
        });
        if result.is_ok() {
            let mut pending = self
                .pending
                .lock()
                .expect("pending log map is never poisoned: no panics while held");
            for (rows, _) in &group {
                for (index, written) in rows {
                    // A truncation may have replaced the entry meanwhile: keep the newer one.
                    if pending
                        .get(index)
                        .is_some_and(|current| Arc::ptr_eq(current, written))
                    {
                        pending.remove(index);
                    }
                }
            }
        }
        // The entries are on disk (fsynced) before openraft hears they are.
        for (_, callback) in group {
            callback.log_io_completed(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| std::io::Error::other(e.to_string())),
            );
        }
    }
}

fn read_error(e: &Error) -> StorageError<NodeId> {
    StorageIOError::read_logs(AnyError::new(e)).into()
}

fn write_error(e: &Error) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(e)).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(start) => *start,
            Bound::Excluded(start) => start.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(end) => *end,
            Bound::Excluded(0) => return Ok(Vec::new()),
            Bound::Excluded(end) => end - 1,
            Bound::Unbounded => u64::MAX,
        };
        if end < start {
            return Ok(Vec::new());
        }
        // Snapshot the pending entries first: anything that leaves the map after this
        // point is already in the database when it is read below.
        let pending: Vec<(u64, Entry<TypeConfig>)> = self
            .pending()
            .range(start..=end)
            .map(|(index, p)| (*index, p.entry.clone()))
            .collect();
        let mut entries: BTreeMap<u64, Entry<TypeConfig>> = self
            .db
            .read(|txn| {
                let table = txn.open_table(LOG)?;
                let mut entries = BTreeMap::new();
                for row in table.range(start..=end)? {
                    let (index, value) = row?;
                    entries.insert(index.value(), db::decode(value.value())?);
                }
                Ok(entries)
            })
            .map_err(|e| read_error(&e))?;
        entries.extend(pending);
        Ok(entries.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged: Option<LogId<NodeId>> =
            self.read_meta(LAST_PURGED).map_err(|e| read_error(&e))?;
        let last_pending = self
            .pending()
            .last_key_value()
            .map(|(_, p)| *p.entry.get_log_id());
        let last_written: Option<Entry<TypeConfig>> = self
            .db
            .read(|txn| {
                let table = txn.open_table(LOG)?;
                table
                    .last()?
                    .map(|(_, value)| db::decode(value.value()))
                    .transpose()
            })
            .map_err(|e| read_error(&e))?;
        let last_log_id = last_pending
            .or(last_written.map(|entry| *entry.get_log_id()))
            .or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let bytes = db::encode(vote);
        self.write(move |txn| {
            txn.open_table(RAFT_META)?.insert(VOTE, bytes.as_slice())?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read_meta(VOTE)
            .map_err(|e| StorageIOError::read_vote(AnyError::new(&e)).into())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let rows: Rows = entries
            .into_iter()
            .map(|entry| {
                (
                    entry.get_log_id().index,
                    Arc::new(Pending {
                        bytes: db::encode(&entry),
                        entry,
                    }),
                )
            })
            .collect();
        self.pending().extend(rows.iter().cloned());
        self.jobs
            .send(Job::Append { rows, callback })
            .map_err(|_| write_error(&Error::Raft("the log writer has stopped".to_owned())))
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.pending().retain(|index, _| *index < log_id.index);
        self.write(move |txn| {
            txn.open_table(LOG)?
                .retain_in(log_id.index.., |_, _| false)?;
            Ok(())
        })
        .await
        .map_err(|e| write_error(&e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // openraft may ask to purge behind an installed snapshot before that snapshot is
        // on disk; wait for it, so a crash never leaves the log purged past the snapshot.
        self.durable_snapshot
            .clone()
            .wait_for(|mark| mark.is_some_and(|index| index >= log_id.index))
            .await
            .map_err(|_| write_error(&Error::Raft("the state machine has stopped".to_owned())))?;
        let bytes = db::encode(&log_id);
        self.write(move |txn| {
            txn.open_table(RAFT_META)?
                .insert(LAST_PURGED, bytes.as_slice())?;
            txn.open_table(LOG)?
                .retain_in(..=log_id.index, |_, _| false)?;
            Ok(())
        })
        .await
        .map_err(|e| write_error(&e))
    }
}
