//! Atomic, durable file writes: a crash leaves either the old file or the new one, never half.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::{Error, Result};

/// Mode of private key files: owner read/write only.
pub(crate) const KEY_MODE: u32 = 0o600;
/// Mode of certificate files: public.
pub(crate) const CERT_MODE: u32 = 0o644;

/// Creates `dir` (and parents) if needed and makes it `0700`: it holds private keys.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    let io_error = |action| {
        move |source| Error::Io {
            action,
            path: dir.to_path_buf(),
            source,
        }
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error("create directory"))?;
    // `mode` only applies to directories created now; an existing one is tightened too.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_error("set the mode of"))
}

/// Writes `contents` to `dir/name` with `mode` via a synced temp file, rename and directory
/// sync: a crash leaves the old file or the new one, never a torn one.
pub fn write_atomic(dir: &Path, name: &str, contents: &[u8], mode: u32) -> Result<()> {
    let path = dir.join(name);
    let temp_path = dir.join(format!(".{name}.tmp"));
    let io_error = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    };
    // A temp file left by a crash may have another mode; start from scratch.
    match fs::remove_file(&temp_path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            return Err(io_error("remove", &temp_path)(error));
        }
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp_path)
        .map_err(io_error("create", &temp_path))?;
    file.write_all(contents)
        .map_err(io_error("write", &temp_path))?;
    file.sync_all().map_err(io_error("sync", &temp_path))?;
    drop(file);
    fs::rename(&temp_path, &path).map_err(io_error("rename into place", &path))?;
    File::open(dir)
        .and_then(|dir_file| dir_file.sync_all())
        .map_err(io_error("sync directory", dir))
}

/// Reads `dir/name` as UTF-8.
pub(crate) fn read(dir: &Path, name: &str) -> Result<String> {
    let path = dir.join(name);
    fs::read_to_string(&path).map_err(|source| Error::Io {
        action: "read",
        path,
        source,
    })
}
