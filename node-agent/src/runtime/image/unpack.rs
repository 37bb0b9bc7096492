//! Unpacking a layer tarball (gzip or plain) into a directory overlayfs can stack:
//! OCI whiteouts become overlayfs ones (`.wh.NAME` → a 0/0 character device `NAME`;
//! `.wh..wh..opq` → the `trusted.overlay.opaque=y` xattr on its directory). Entries
//! that would land outside the directory (absolute paths, `..`, links leading out)
//! are refused by `tar`'s `unpack_in` or by the checks here.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path};

use nix::sys::stat::{Mode, SFlag, makedev, mknod};

/// OCI's prefix for whiteout files.
const WHITEOUT: &str = ".wh.";
/// OCI's opaque-directory marker.
const OPAQUE: &str = ".wh..wh..opq";

/// Unpacks the layer blob at `blob` (of `media_type`) into `dest`.
pub fn unpack(blob: &Path, media_type: &str, dest: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dest)?;
    let file = File::open(blob)?;
    let reader: Box<dyn Read> = if media_type.ends_with("gzip") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else if media_type.ends_with("zstd") {
        return Err(std::io::Error::other(format!(
            "unsupported layer media type {media_type}"
        )));
    } else {
        Box::new(file)
    };
    unpack_from(reader, dest)
}

/// Unpacks a tar stream into `dest`.
fn unpack_from(reader: impl Read, dest: &Path) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        if !is_relative_inside(&path) {
            return Err(std::io::Error::other(format!(
                "layer entry {} escapes the layer",
                path.display()
            )));
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let parent = dest.join(path.parent().unwrap_or(Path::new("")));
        if name == OPAQUE {
            std::fs::create_dir_all(&parent)?;
            rustix::fs::setxattr(
                &parent,
                "trusted.overlay.opaque",
                b"y",
                rustix::fs::XattrFlags::empty(),
            )?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            std::fs::create_dir_all(&parent)?;
            let target = parent.join(hidden);
            let _ = std::fs::remove_file(&target);
            mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                .map_err(std::io::Error::from)?;
            continue;
        }
        if !entry.unpack_in(dest)? {
            return Err(std::io::Error::other(format!(
                "layer entry {} escapes the layer",
                path.display()
            )));
        }
    }
    Ok(())
}

/// A tar path that stays inside the layer: relative, no `..`.
fn is_relative_inside(path: &Path) -> bool {
    path.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            // Raw names: set_path would refuse the malicious ones.
            let name = header.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).expect("append");
        }
        builder.into_inner().expect("tar")
    }

    #[test]
    fn whiteouts_become_overlayfs_markers() {
        let dest = tempfile::tempdir().expect("tempdir");
        let layer = tar_of(&[
            ("etc/kept", b"x"),
            ("etc/.wh.gone", b""),
            ("var/cache/.wh..wh..opq", b""),
        ]);
        unpack_from(layer.as_slice(), dest.path()).expect("unpacked");
        use std::os::unix::fs::FileTypeExt;
        let gone = std::fs::metadata(dest.path().join("etc/gone")).expect("whiteout");
        assert!(gone.file_type().is_char_device());
        assert!(!dest.path().join("etc/.wh.gone").exists());
        let mut value = [0u8; 8];
        let n = rustix::fs::getxattr(
            dest.path().join("var/cache"),
            "trusted.overlay.opaque",
            &mut value,
        )
        .expect("xattr");
        assert_eq!(&value[..n], b"y");
        assert_eq!(
            std::fs::read(dest.path().join("etc/kept")).expect("file"),
            b"x"
        );
    }

    #[test]
    fn entries_escaping_the_layer_are_refused() {
        for path in ["../evil", "/abs/evil", "a/../../evil", "../.wh.passwd"] {
            let dest = tempfile::tempdir().expect("tempdir");
            let layer = tar_of(&[(path, b"x")]);
            let error = unpack_from(layer.as_slice(), &dest.path().join("layer")).expect_err(path);
            assert!(error.to_string().contains("escapes"), "{path}: {error}");
            assert!(!dest.path().join("evil").exists());
        }
    }
}
