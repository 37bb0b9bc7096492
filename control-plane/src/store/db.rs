//! The database files: each member has two redb databases, so that fsyncs of the log
//! never hold up applies to the state machine (redb has one writer per database).
//!
//! - `log.redb`: the Raft log and Raft metadata (vote, last purged id, node id);
//! - `state.redb`: the keyspace, state-machine metadata, the event history and the
//!   latest snapshot.
//!
//! Invariants:
//! - log appends and vote writes commit with `Durability::Immediate` (fsync) before
//!   openraft is told they are done;
//! - state-machine applies commit with `Durability::None` (cheap); storing a snapshot
//!   commits durably and so persists every apply before it, and the log is only purged
//!   behind a snapshot, so after a crash the log still holds every apply that was lost.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Error, KeyValue, Result};

/// Raft log: index → postcard-encoded entry.
pub(super) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Raft metadata: `vote`, `committed`, `last_purged`, `node_id` → postcard.
pub(super) const RAFT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// The keyspace: key → [`encode_record`].
pub(super) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// State-machine metadata: `last_applied`, `membership`, `revision`, `compacted` → postcard.
pub(super) const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
/// Change history: revision → postcard-encoded `Vec<Event>`.
pub(super) const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
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
            txn.open_table(KV)?;
            txn.open_table(SM_META)?;
            txn.open_table(HISTORY)?;
            txn.open_table(SNAPSHOT)?;
            Ok(())
        })?;
        Ok(db)
    }

    fn open(dir: &Path, file: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::database("creating the data directory", e))?;
        let database = Database::create(dir.join(file)).map_err(|e| Error::database("open", e))?;
        Ok(Self(Arc::new(database)))
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

/// Encodes a keyspace record: create revision, mod revision (8 bytes each, big
/// endian), then the value bytes.
pub(super) fn encode_record(create_revision: u64, mod_revision: u64, value: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(16 + value.len());
    record.extend_from_slice(&create_revision.to_be_bytes());
    record.extend_from_slice(&mod_revision.to_be_bytes());
    record.extend_from_slice(value);
    record
}

/// Decodes a keyspace record for `key`.
pub(super) fn decode_record(key: &str, record: &[u8]) -> Result<KeyValue, redb::Error> {
    let corrupt =
        || redb::Error::Corrupted(format!("record of key {key:?} is shorter than its header"));
    let create = record
        .get(0..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    let modified = record
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: record[16..].to_vec(),
        create_revision: u64::from_be_bytes(create),
        mod_revision: u64::from_be_bytes(modified),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_short_ones_are_corrupt() {
        let record = encode_record(3, 7, b"{\"a\":1}");
        let kv = decode_record("/k", &record).unwrap();
        assert_eq!(
            kv,
            KeyValue {
                key: "/k".into(),
                value: b"{\"a\":1}".to_vec(),
                create_revision: 3,
                mod_revision: 7
            }
        );
        assert!(decode_record("/k", &record[..10]).is_err());
    }
}
