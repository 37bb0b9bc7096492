//! openraft's log storage on redb: every append and vote is fsynced before openraft
//! is told it is done.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogId, StorageError, StorageIOError, Vote,
};
use redb::{Durability, ReadableTable};

use super::db::{self, Db, LOG, RAFT_META};
use super::{Error, NodeId, TypeConfig};

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// The Raft log and vote of one member.
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Db,
}

impl LogStore {
    pub(super) fn new(db: Db) -> Self {
        Self { db }
    }

    /// Runs a write on the blocking pool: redb commits fsync and block the thread.
    async fn write<T: Send + 'static>(
        &self,
        durability: Durability,
        body: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error> + Send + 'static,
    ) -> Result<T, Error> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.write(durability, body))
            .await
            .map_err(|e| Error::Raft(format!("log write task failed: {e}")))?
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
            Bound::Included(end) => Some(*end),
            Bound::Excluded(0) => return Ok(Vec::new()),
            Bound::Excluded(end) => Some(end - 1),
            Bound::Unbounded => None,
        };
        if end.is_some_and(|end| end < start) {
            return Ok(Vec::new());
        }
        self.db
            .read(|txn| {
                let table = txn.open_table(LOG)?;
                let rows = match end {
                    Some(end) => table.range(start..=end)?,
                    None => table.range(start..)?,
                };
                rows.map(|row| db::decode(row?.1.value())).collect()
            })
            .map_err(|e| read_error(&e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged: Option<LogId<NodeId>> =
            self.read_meta(LAST_PURGED).map_err(|e| read_error(&e))?;
        let last_entry: Option<Entry<TypeConfig>> = self
            .db
            .read(|txn| {
                let table = txn.open_table(LOG)?;
                table
                    .last()?
                    .map(|(_, value)| db::decode(value.value()))
                    .transpose()
            })
            .map_err(|e| read_error(&e))?;
        let last_log_id = last_entry.map(|entry| *entry.get_log_id()).or(last_purged);
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
        self.write(Durability::Immediate, move |txn| {
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

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Only an optimisation for restarts (openraft re-applies up to it), so it
        // rides along with the next durable commit instead of forcing an fsync.
        let bytes = db::encode(&committed);
        self.write(Durability::None, move |txn| {
            txn.open_table(RAFT_META)?
                .insert(COMMITTED, bytes.as_slice())?;
            Ok(())
        })
        .await
        .map_err(|e| write_error(&e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self
            .read_meta::<Option<LogId<NodeId>>>(COMMITTED)
            .map_err(|e| read_error(&e))?
            .flatten())
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
        let rows: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|entry| (entry.get_log_id().index, db::encode(&entry)))
            .collect();
        let result = self
            .write(Durability::Immediate, move |txn| {
                let mut table = txn.open_table(LOG)?;
                for (index, bytes) in &rows {
                    table.insert(*index, bytes.as_slice())?;
                }
                Ok(())
            })
            .await;
        // The entries are on disk (fsynced) before openraft hears they are.
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_error(&e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write(Durability::Immediate, move |txn| {
            let mut table = txn.open_table(LOG)?;
            table.retain_in(log_id.index.., |_, _| false)?;
            Ok(())
        })
        .await
        .map_err(|e| write_error(&e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let bytes = db::encode(&log_id);
        // Purging is only ever behind a durable snapshot; losing an unflushed purge
        // on a crash merely keeps a few more entries.
        self.write(Durability::None, move |txn| {
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
