//! The database files: each member has two redb databases, so that fsyncs of the log
//! never hold up applies to the state machine (redb has one writer per database).
//!
//! - `log.redb`: the Raft log and Raft metadata (vote, last purged id, node id);
//! - `state.redb`: the latest state-machine snapshot (the live keyspace is in memory).
//!
//! Invariants:
//! - log appends and vote writes commit with `Durability::Immediate` (fsync) before
//!   openraft is told they are done;
//! - a snapshot is stored with `Durability::Immediate` before openraft learns of it, and
//!   openraft only purges the log behind a snapshot, so snapshot + log always hold every
//!   committed entry.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Error, Result};

/// Raft log: index → postcard-encoded entry.
pub(super) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Raft metadata: `vote`, `committed`, `last_purged`, `node_id` → postcard.
pub(super) const RAFT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// The latest snapshot: `meta` and `data`.
pub(super) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

/// Shared handle to the member's database.
#[derive(Clone)]
pub(super) struct Db(Arc<Database>);

impl Db {
    /// Opens (or creates) `dir/log.redb` with the log tables.
    pub fn open_log(dir: &Path) -> Result<Self> {
        let db = Self::open(dir, "log.redb")?;
        db.write(Durability::Immediate, |txn| {
            txn.open_table(LOG)?;
            txn.open_table(RAFT_META)?;
            Ok(())
        })?;
        Ok(db)
    }

    /// Opens (or creates) `dir/state.redb` with the state-machine tables.
    pub fn open_state(dir: &Path) -> Result<Self> {
        let db = Self::open(dir, "state.redb")?;
        db.write(Durability::Immediate, |txn| {
            txn.open_table(SNAPSHOT)?;
            Ok(())
        })?;
        Ok(db)
    }

    fn open(dir: &Path, file: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::database("creating the data directory", e))?;
        let path = dir.join(file);
        // A member of this same process that was just shut down may still be releasing
        // the file (its last handles drop as its tasks finish): wait a little for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Database::create(&path) {
                Ok(database) => return Ok(Self(Arc::new(database))),
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(Error::database("open", e)),
            }
        }
    }

    /// Runs `body` in a write transaction and commits it with `durability`.
    pub fn write<T>(
        &self,
        durability: Durability,
        body: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T> {
        let mut txn = self
            .0
            .begin_write()
            .map_err(|e| Error::database("begin write", e))?;
        txn.set_durability(durability)
            .map_err(|e| Error::database("set durability", e))?;
        let value = body(&txn).map_err(|e| Error::database("write", e))?;
        txn.commit().map_err(|e| Error::database("commit", e))?;
        Ok(value)
    }

    /// Runs `body` on a consistent read snapshot of the database.
    pub fn read<T>(
        &self,
        body: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T> {
        let txn = self
            .0
            .begin_read()
            .map_err(|e| Error::database("begin read", e))?;
        body(&txn).map_err(|e| Error::database("read", e))
    }
}

/// Encodes a value with postcard.
pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("postcard encodes every store type")
}

/// Decodes a postcard value, reporting corruption as a storage error.
pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, redb::Error> {
    postcard::from_bytes(bytes)
        .map_err(|e| redb::Error::Corrupted(format!("undecodable record: {e}")))
}
