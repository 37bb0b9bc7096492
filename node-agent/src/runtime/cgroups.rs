//! Cgroups as the agent sees them: where a container's cgroup lives
//! (`/skiff/pod<uid>/<container-id>`, like kubelet's `kubepods/pod<uid>`), whether the
//! kernel OOM-killed in it, and removing a pod's cgroups after its containers.
//! libcontainer (libcgroups) creates the cgroups and applies limits from the OCI spec;
//! it detects v1, hybrid and v2 layouts itself.
//!
//! Everything takes the cgroup filesystem's root as a parameter, so the v2 logic is
//! tested against a fixture directory on this v1 machine.

use std::path::{Path, PathBuf};

/// The root of the cgroup filesystems.
pub const ROOT: &str = "/sys/fs/cgroup";

/// The top-level cgroup every pod lives under.
const PARENT: &str = "skiff";

/// How the cgroup filesystems are mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One v1 hierarchy per controller (`/sys/fs/cgroup/memory`, …), possibly with an
    /// empty cgroup2 at `unified` (hybrid).
    V1,
    /// The unified cgroup2 hierarchy at the root.
    V2,
}

impl Layout {
    /// The layout under `root`: v2 when `root` itself is cgroup2 (it has
    /// `cgroup.controllers`), v1 otherwise.
    pub fn detect(root: &Path) -> Self {
        if root.join("cgroup.controllers").exists() {
            Self::V2
        } else {
            Self::V1
        }
    }
}

/// The cgroups path of a container, as the OCI spec's `linux.cgroupsPath`.
pub fn container_path(pod_uid: &str, container_id: &str) -> String {
    format!("/{PARENT}/pod{pod_uid}/{container_id}")
}

/// The directories of a pod's cgroup under `root`: one per v1 controller hierarchy,
/// or the single v2 directory.
pub fn pod_dirs(root: &Path, pod_uid: &str) -> Vec<PathBuf> {
    let relative = format!("{PARENT}/pod{pod_uid}");
    match Layout::detect(root) {
        Layout::V2 => vec![root.join(relative)],
        Layout::V1 => std::fs::read_dir(root)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name() != "unified")
                    .map(|e| e.path().join(&relative))
                    .filter(|p| p.exists())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Removes a pod's cgroups (after its containers are gone): children first, then the
/// pod's directory, in every hierarchy. Cgroup directories are removed with rmdir
/// (their files are virtual). Missing directories are fine.
pub fn remove_pod_cgroups(pod_uid: &str) -> std::io::Result<()> {
    remove_pod_cgroups_under(Path::new(ROOT), pod_uid)
}

/// [`remove_pod_cgroups`] under another root (tests).
pub fn remove_pod_cgroups_under(root: &Path, pod_uid: &str) -> std::io::Result<()> {
    let mut first_error = None;
    for dir in pod_dirs(root, pod_uid) {
        if let Err(error) = remove_tree(&dir) {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// rmdir of a cgroup and its child cgroups, deepest first; a cgroup still busy with
/// exiting processes is retried for up to a second.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path())?;
            }
        }
    }
    let mut attempts = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) if error.raw_os_error() == Some(nix::libc::EBUSY) && attempts < 50 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            // A fixture tree (tests) holds regular files: remove them too.
            Err(_) if dir.read_dir().is_ok_and(|mut d| d.next().is_some()) => {
                for entry in std::fs::read_dir(dir)?.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_file()) {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
                match std::fs::remove_dir(dir) {
                    Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                        return Err(error);
                    }
                    _ => return Ok(()),
                }
            }
            Err(error) => return Err(error),
        }
    }
}

/// How many times the kernel's OOM killer killed a process in the cgroup at
/// `cgroups_path` (the spec's `linux.cgroupsPath`) under `root`: v1 reads the memory
/// controller's `memory.oom_control` (`oom_kill N`), v2 reads `memory.events`
/// (`oom_kill N`). 0 when the files are missing.
pub fn oom_kills(root: &Path, cgroups_path: &str) -> u64 {
    let relative = cgroups_path.trim_start_matches('/');
    let (file, key) = match Layout::detect(root) {
        Layout::V1 => (
            root.join("memory")
                .join(relative)
                .join("memory.oom_control"),
            "oom_kill",
        ),
        Layout::V2 => (root.join(relative).join("memory.events"), "oom_kill"),
    };
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let (name, value) = line.split_once(' ')?;
                (name == key).then(|| value.trim().parse().ok())?
            })
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn container_paths_nest_under_the_pod() {
        assert_eq!(container_path("u1", "c1"), "/skiff/podu1/c1");
    }

    #[test]
    fn v2_oom_kills_come_from_memory_events() {
        let root = tempfile::tempdir().expect("tempdir");
        write(&root.path().join("cgroup.controllers"), "cpu memory pids\n");
        assert_eq!(Layout::detect(root.path()), Layout::V2);
        let path = container_path("u1", "c1");
        assert_eq!(oom_kills(root.path(), &path), 0);
        write(
            &root.path().join("skiff/podu1/c1/memory.events"),
            "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n",
        );
        assert_eq!(oom_kills(root.path(), &path), 1);
        assert_eq!(
            pod_dirs(root.path(), "u1"),
            vec![root.path().join("skiff/podu1")]
        );
        remove_pod_cgroups_under(root.path(), "u1").expect("removed");
        assert!(!root.path().join("skiff/podu1").exists());
        remove_pod_cgroups_under(root.path(), "u1").expect("idempotent");
    }

    #[test]
    fn v1_oom_kills_come_from_the_memory_controller() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("unified")).expect("mkdir");
        write(
            &root.path().join("memory/skiff/podu1/c1/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        );
        std::fs::create_dir_all(root.path().join("pids/skiff/podu1/c1")).expect("mkdir");
        assert_eq!(Layout::detect(root.path()), Layout::V1);
        assert_eq!(oom_kills(root.path(), "/skiff/podu1/c1"), 3);
        let mut dirs = pod_dirs(root.path(), "u1");
        dirs.sort();
        assert_eq!(
            dirs,
            vec![
                root.path().join("memory/skiff/podu1"),
                root.path().join("pids/skiff/podu1")
            ]
        );
    }

    #[test]
    fn this_machine_is_detected() {
        // The machine this runs on has v1 controllers (hybrid) or cgroup2; either way
        // detection must not panic and must match what is mounted.
        let layout = Layout::detect(Path::new(ROOT));
        let v2 = Path::new(ROOT).join("cgroup.controllers").exists();
        assert_eq!(layout == Layout::V2, v2);
    }
}
