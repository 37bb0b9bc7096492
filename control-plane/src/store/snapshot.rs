//! Backups of the keyspace (`skiff-control-plane snapshot save|restore`), like
//! `etcdctl snapshot save` and `etcdutl snapshot restore`.
//!
//! A snapshot file is, in order:
//!
//! | bytes | content |
//! |---|---|
//! | 10 | magic `SKIFFSNAP1` |
//! | 4 | format version, little-endian `u32` (1) |
//! | 8 | revision of the copy, little-endian `u64` |
//! | 8 | number of keys, little-endian `u64` |
//! | 8 | payload length, little-endian `u64` |
//! | n | payload: the state machine's snapshot body (postcard), as Raft snapshots carry it |
//! | 32 | sha256 of everything before it |
//!
//! Saving asks a running member for a linearizable copy (the `Snapshot` RPC) and writes
//! the file atomically. Restoring is offline: it verifies the file and creates a new
//! data directory holding it as [`RESTORE_FILE`]. The first `Store::open` of that
//! directory imports it (`import_pending`) as the state machine's stored snapshot,
//! with a membership of just the new member at log id 0, and removes the file; openraft
//! then purges its (empty) log up to that snapshot and the member elects itself. The
//! revision carries over, and the history before it is compacted, so watches from older
//! revisions expire.
//!
//! Invariants:
//! - nothing is written from a file that fails verification (magic, version, length,
//!   checksum, decodable payload whose revision and key count match the header);
//! - a saved file or a restored data directory appears whole (temp + fsync + rename)
//!   or not at all;
//! - a snapshot is imported only into a member that has never run Raft, and the import
//!   is idempotent, so a crash half-way is finished by the next start.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use openraft::storage::SnapshotMeta;
use openraft::{BasicNode, LogId, Membership, StoredMembership};
use redb::ReadableTableMetadata;
use sha2::{Digest, Sha256};

use super::NodeId;
use super::db::{Db, LOG, RAFT_META};
use super::log_store::{LAST_PURGED, VOTE};
use super::state_machine::{self, Exported};

/// The first bytes of every snapshot file.
pub const MAGIC: &[u8; 10] = b"SKIFFSNAP1";
/// The file format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The file in a data directory that the member's first start imports.
pub const RESTORE_FILE: &str = "restore.snap";

const HEADER_LEN: usize = MAGIC.len() + 4 + 8 + 8 + 8;
const CHECKSUM_LEN: usize = 32;

/// What a verified snapshot file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The revision the copy was taken at; a restored store continues after it.
    pub revision: u64,
    /// How many keys it holds.
    pub keys: u64,
    /// The file's size.
    pub bytes: u64,
}

/// Errors of saving, verifying, restoring and importing snapshots.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("failed to {operation} {}", path.display())]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the snapshot magic.
    #[error("{} is not a skiff snapshot (no {} header)", path.display(), String::from_utf8_lossy(MAGIC))]
    NotASnapshot {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by a newer (or unknown) format.
    #[error("{} has snapshot format version {version}; this build reads version {FORMAT_VERSION}", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in its header.
        version: u32,
    },
    /// The file ends before its header says it does.
    #[error("{} is truncated: it has {actual} bytes, its header promises {expected}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The size the header implies.
        expected: u64,
        /// The size found.
        actual: u64,
    },
    /// The file is damaged: checksum mismatch, extra bytes, undecodable payload.
    #[error("{} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// `restore` only creates a new data directory.
    #[error("restore target {} exists and is not an empty directory", path.display())]
    TargetNotEmpty {
        /// The data directory asked for.
        path: PathBuf,
    },
    /// A data directory holds a snapshot to import but its member has already run.
    #[error(
        "{} holds {RESTORE_FILE} but its member has already run; restore into a new data directory",
        path.display()
    )]
    MemberAlreadyRan {
        /// The data directory.
        path: PathBuf,
    },
    /// A restored member founds a new cluster; it cannot join another.
    #[error(
        "{} holds a restored snapshot: start it without --join (it founds a new cluster)",
        path.display()
    )]
    RestoreWithJoin {
        /// The data directory.
        path: PathBuf,
    },
    /// The member's database could not be read or written during an import.
    #[error("importing {} failed", path.display())]
    Import {
        /// The data directory.
        path: PathBuf,
        /// The database error.
        #[source]
        source: Box<super::Error>,
    },
}

type Result<T, E = Error> = std::result::Result<T, E>;

fn io(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io {
        operation,
        path,
        source,
    }
}

/// Encodes an exported keyspace as a snapshot file.
pub(super) fn encode(exported: &Exported) -> Vec<u8> {
    let mut file = Vec::with_capacity(HEADER_LEN + exported.body.len() + CHECKSUM_LEN);
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    file.extend_from_slice(&exported.revision.to_le_bytes());
    file.extend_from_slice(&exported.keys.to_le_bytes());
    file.extend_from_slice(&(exported.body.len() as u64).to_le_bytes());
    file.extend_from_slice(&exported.body);
    let checksum = Sha256::digest(&file);
    file.extend_from_slice(&checksum);
    file
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Verifies a whole snapshot file (`path` only names it in errors) and returns what it
/// holds and its payload.
fn parse<'a>(bytes: &'a [u8], path: &Path) -> Result<(SnapshotInfo, &'a [u8])> {
    if !bytes.starts_with(MAGIC) {
        // A file cut inside the magic is still recognizably ours.
        return Err(if MAGIC.starts_with(bytes) && !bytes.is_empty() {
            Error::Truncated {
                path: path.to_owned(),
                expected: (HEADER_LEN + CHECKSUM_LEN) as u64,
                actual: bytes.len() as u64,
            }
        } else {
            Error::NotASnapshot {
                path: path.to_owned(),
            }
        });
    }
    if bytes.len() < HEADER_LEN {
        return Err(Error::Truncated {
            path: path.to_owned(),
            expected: (HEADER_LEN + CHECKSUM_LEN) as u64,
            actual: bytes.len() as u64,
        });
    }
    let mut version = [0; 4];
    version.copy_from_slice(&bytes[MAGIC.len()..MAGIC.len() + 4]);
    let version = u32::from_le_bytes(version);
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_owned(),
            version,
        });
    }
    let revision = le_u64(bytes, MAGIC.len() + 4);
    let keys = le_u64(bytes, MAGIC.len() + 12);
    let payload_len = le_u64(bytes, MAGIC.len() + 20);
    let expected = payload_len
        .checked_add((HEADER_LEN + CHECKSUM_LEN) as u64)
        .ok_or_else(|| Error::Corrupt {
            path: path.to_owned(),
            reason: format!("impossible payload length {payload_len}"),
        })?;
    let actual = bytes.len() as u64;
    if actual < expected {
        return Err(Error::Truncated {
            path: path.to_owned(),
            expected,
            actual,
        });
    }
    if actual > expected {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            reason: format!("{} unexpected bytes after the checksum", actual - expected),
        });
    }
    let (content, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if Sha256::digest(content).as_slice() != checksum {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            reason: "sha256 checksum mismatch".to_owned(),
        });
    }
    let payload = &content[HEADER_LEN..];
    let (body_revision, body_keys) =
        state_machine::inspect_body(payload).map_err(|e| Error::Corrupt {
            path: path.to_owned(),
            reason: format!("undecodable payload: {e}"),
        })?;
    if (body_revision, body_keys) != (revision, keys) {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            reason: format!(
                "the header says revision {revision} with {keys} keys, the payload revision \
                 {body_revision} with {body_keys}"
            ),
        });
    }
    Ok((
        SnapshotInfo {
            revision,
            keys,
            bytes: actual,
        },
        payload,
    ))
}

/// Reads and verifies a snapshot file.
pub fn verify(path: &Path) -> Result<SnapshotInfo> {
    let bytes = fs::read(path).map_err(io("read", path))?;
    parse(&bytes, path).map(|(info, _)| info)
}

/// Flushes a directory, so that entries created or renamed in it survive a crash.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory", dir))
}

/// The directory a path's file lives in (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// A temporary name beside `path`: `.<name>.<suffix>-<pid>`.
fn temp_beside(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "snapshot".into(), |n| n.to_string_lossy());
    parent_of(path).join(format!(".{name}.{suffix}-{}", std::process::id()))
}

/// A snapshot file being received: written to a temporary file beside its final path,
/// verified, fsynced, and renamed into place by [`SnapshotWriter::commit`]; removed if
/// dropped before that.
#[derive(Debug)]
pub struct SnapshotWriter {
    path: PathBuf,
    temp: PathBuf,
    file: Option<File>,
    committed: bool,
}

impl SnapshotWriter {
    /// Starts writing the snapshot that will be at `path` (mode 0600: it holds Secrets).
    pub fn create(path: &Path) -> Result<Self> {
        let temp = temp_beside(path, "part");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io("create", &temp))?;
        Ok(Self {
            path: path.to_owned(),
            temp,
            file: Some(file),
            committed: false,
        })
    }

    /// Appends the next bytes of the file.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let file = self
            .file
            .as_mut()
            .expect("a writer is only used until commit");
        file.write_all(bytes).map_err(io("write", &self.temp))
    }

    /// Verifies what was written, makes it durable and moves it into place.
    pub fn commit(mut self) -> Result<SnapshotInfo> {
        let file = self.file.take().expect("a writer is committed once");
        file.sync_all().map_err(io("sync", &self.temp))?;
        drop(file);
        // Verify what is on disk, not what was received: that is what restore will read.
        let info = verify(&self.temp).map_err(|error| match error {
            Error::Io { .. } => error,
            // Name the snapshot, not the temporary file, in what the user reads.
            _ => Error::Corrupt {
                path: self.path.clone(),
                reason: format!("the member sent an invalid snapshot: {error}"),
            },
        })?;
        fs::rename(&self.temp, &self.path).map_err(io("rename into place", &self.path))?;
        self.committed = true;
        sync_dir(parent_of(&self.path))?;
        Ok(info)
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Verifies `file` and creates `data_dir` holding it, ready for a member's first start
/// to import. `data_dir` must not exist or be an empty directory; on any error nothing
/// is left behind.
pub fn restore(file: &Path, data_dir: &Path) -> Result<SnapshotInfo> {
    let bytes = fs::read(file).map_err(io("read", file))?;
    let (info, _) = parse(&bytes, file)?;
    match fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::TargetNotEmpty {
                    path: data_dir.to_owned(),
                });
            }
            // An existing empty directory (a mount point, a prepared directory): put
            // the file in atomically.
            let target = data_dir.join(RESTORE_FILE);
            let temp = temp_beside(&target, "part");
            let written = write_synced(&temp, &bytes)
                .and_then(|()| fs::rename(&temp, &target).map_err(io("rename into place", &target)))
                .and_then(|()| sync_dir(data_dir));
            if written.is_err() {
                let _ = fs::remove_file(&temp);
            }
            written?;
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            // Build the directory under a temporary name and rename it into place.
            let parent = parent_of(data_dir);
            fs::create_dir_all(parent).map_err(io("create directory", parent))?;
            let temp_dir = temp_beside(data_dir, "restoring");
            let built = fs::DirBuilder::new()
                .mode(0o700)
                .create(&temp_dir)
                .map_err(io("create directory", &temp_dir))
                .and_then(|()| write_synced(&temp_dir.join(RESTORE_FILE), &bytes))
                .and_then(|()| sync_dir(&temp_dir))
                .and_then(|()| {
                    fs::rename(&temp_dir, data_dir).map_err(io("rename into place", data_dir))
                })
                .and_then(|()| sync_dir(parent));
            if built.is_err() {
                let _ = fs::remove_dir_all(&temp_dir);
            }
            built?;
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(Error::TargetNotEmpty {
                path: data_dir.to_owned(),
            });
        }
        Err(error) => return Err(io("read directory", data_dir)(error)),
    }
    Ok(info)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("create", path))?;
    file.write_all(bytes).map_err(io("write", path))?;
    file.sync_all().map_err(io("sync", path))
}

/// If `data_dir` holds a [`RESTORE_FILE`], makes it the state machine's stored snapshot
/// (the member `node_id` at `address` as the only voter) and removes the file. Runs in
/// `Store::open` before the state machine and Raft start.
pub(super) fn import_pending(
    data_dir: &Path,
    log_db: &Db,
    state_db: &Db,
    node_id: NodeId,
    address: &str,
    join: Option<&str>,
) -> Result<Option<SnapshotInfo>> {
    let path = data_dir.join(RESTORE_FILE);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io("open", &path)(error)),
    };
    if join.is_some() {
        return Err(Error::RestoreWithJoin {
            path: data_dir.to_owned(),
        });
    }
    let import_error = |source: super::Error| Error::Import {
        path: data_dir.to_owned(),
        source: Box::new(source),
    };
    if has_run(log_db).map_err(import_error)? {
        return Err(Error::MemberAlreadyRan {
            path: data_dir.to_owned(),
        });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io("read", &path))?;
    let (info, payload) = parse(&bytes, &path)?;
    // The same first log id `Raft::initialize` uses: the log is empty, and openraft
    // purges it up to the snapshot when it starts.
    let log_id = LogId::default();
    let membership = Membership::new(
        vec![BTreeSet::from([node_id])],
        BTreeMap::from([(node_id, BasicNode::new(address))]),
    );
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), membership),
        snapshot_id: format!("restored-{}", info.revision),
    };
    state_machine::replace_snapshot(state_db, &meta, payload).map_err(import_error)?;
    // Only once the snapshot is durable: a crash before this repeats the import.
    fs::remove_file(&path).map_err(io("remove", &path))?;
    sync_dir(data_dir)?;
    Ok(Some(info))
}

/// Whether Raft has ever run on this log: a vote, a purge or an entry.
fn has_run(log_db: &Db) -> super::Result<bool> {
    log_db.read(|txn| {
        let meta = txn.open_table(RAFT_META)?;
        let log = txn.open_table(LOG)?;
        Ok(meta.get(VOTE)?.is_some() || meta.get(LAST_PURGED)?.is_some() || !log.is_empty()?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::state_machine::StateMachine;
    use crate::store::watch::WatchHub;

    /// A valid file: an empty keyspace exported by a real state machine.
    fn sample() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let state_machine = StateMachine::open(
            Db::open_state(dir.path()).unwrap(),
            WatchHub::new(),
            100,
            tokio::sync::watch::channel(None).0,
        )
        .unwrap();
        encode(&state_machine.reader().export())
    }

    fn check(bytes: &[u8], expected: &str) {
        let error = parse(bytes, Path::new("backup.snap"))
            .unwrap_err()
            .to_string();
        assert_eq!(error, expected);
    }

    #[test]
    fn a_valid_file_parses() {
        let (info, _) = parse(&sample(), Path::new("backup.snap")).unwrap();
        assert_eq!(
            info,
            SnapshotInfo {
                revision: 0,
                keys: 0,
                bytes: sample().len() as u64
            }
        );
    }

    #[test]
    fn damaged_files_are_named_and_explained() {
        let good = sample();
        let len = good.len();
        let mut flipped = good.clone();
        flipped[HEADER_LEN] ^= 0x01;
        let mut wrong_version = good.clone();
        wrong_version[MAGIC.len()] = 9;
        let mut extra = good.clone();
        extra.push(0);
        check(
            b"",
            "backup.snap is not a skiff snapshot (no SKIFFSNAP1 header)",
        );
        check(
            b"PK\x03\x04 a zip file",
            "backup.snap is not a skiff snapshot (no SKIFFSNAP1 header)",
        );
        check(
            &good[..5],
            &format!(
                "backup.snap is truncated: it has 5 bytes, its header promises {}",
                HEADER_LEN + CHECKSUM_LEN
            ),
        );
        check(
            &good[..len - 1],
            &format!(
                "backup.snap is truncated: it has {} bytes, its header promises {len}",
                len - 1
            ),
        );
        check(&flipped, "backup.snap is corrupt: sha256 checksum mismatch");
        check(
            &wrong_version,
            "backup.snap has snapshot format version 9; this build reads version 1",
        );
        check(
            &extra,
            "backup.snap is corrupt: 1 unexpected bytes after the checksum",
        );
    }
}
