//! The agent's handle on a container: create it (overlayfs rootfs, OCI bundle, a
//! supervisor process), read its state from what the supervisor wrote, wait for it,
//! signal, stop, exec into and remove it — also for containers adopted after an agent
//! restart, which are not the agent's children.
//!
//! The supervisor ([`super::shim`]) writes `state.json` once the container runs and
//! `exit.json` when it ended; both carry process start times, so a reused PID is
//! never mistaken for the container.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

use super::RuntimeError;

/// The runtime's settings and directories.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// The agent's data directory (absolute).
    pub data_dir: PathBuf,
    /// The executable started for helpers (`__shim`, `__exec`, `__sandbox`).
    pub helper_binary: PathBuf,
    /// `pids.max` of each container.
    pub pids_limit: Option<i64>,
}

impl RuntimeConfig {
    /// Settings for `data_dir` (created if missing); the helper defaults to this
    /// process's executable.
    pub fn new(data_dir: PathBuf, helper_binary: Option<PathBuf>) -> Result<Self, RuntimeError> {
        for sub in ["containers", "pods", "state"] {
            std::fs::create_dir_all(data_dir.join(sub))
                .map_err(|e| RuntimeError::io("creating the data dir", e))?;
        }
        let data_dir = data_dir
            .canonicalize()
            .map_err(|e| RuntimeError::io("resolving the data dir", e))?;
        let helper_binary = match helper_binary {
            Some(path) => path,
            None => std::env::current_exe()
                .map_err(|e| RuntimeError::io("locating the agent's executable", e))?,
        };
        Ok(Self {
            data_dir,
            helper_binary,
            pids_limit: Some(4096),
        })
    }

    /// `containers/`.
    pub fn containers_dir(&self) -> PathBuf {
        self.data_dir.join("containers")
    }

    /// libcontainer's state root.
    pub fn state_root(&self) -> PathBuf {
        self.data_dir.join("state")
    }
}

/// What the supervisor records once the container runs (`state.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StartRecord {
    /// The supervisor's pid.
    pub shim_pid: u32,
    /// The supervisor's start time in clock ticks since boot (/proc/PID/stat).
    pub shim_start: u64,
    /// The container's init pid (host pid namespace).
    pub pid: u32,
    /// Its start time in clock ticks since boot.
    pub pid_start: u64,
    /// When it started, in nanoseconds since the epoch.
    pub started_at_ns: u64,
}

/// What the supervisor records when the container ended (`exit.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitRecord {
    /// The exit code (128 + signal when killed; 128 when it never started).
    pub exit_code: i32,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// The kernel's OOM killer fired in its cgroup.
    pub oom_killed: bool,
    /// `Completed`, `Error`, `OOMKilled` or `StartError`.
    pub reason: String,
    /// Details (why it could not start).
    pub message: String,
    /// When it started, in nanoseconds since the epoch.
    pub started_at_ns: u64,
    /// When it ended.
    pub finished_at_ns: u64,
}

/// A container's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    /// Being created: the supervisor has not reported yet.
    Created,
    /// Running.
    Running {
        /// Its init's pid.
        pid: u32,
        /// When it started.
        started_at: SystemTime,
    },
    /// Ended.
    Exited(Exited),
}

/// How a container ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exited {
    /// The exit code (128 + signal when killed).
    pub exit_code: i32,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled`, `StartError`, `ContainerStatusUnknown`.
    pub reason: String,
    /// Details.
    pub message: String,
    /// It was OOM-killed.
    pub oom_killed: bool,
    /// When it started.
    pub started_at: SystemTime,
    /// When it ended.
    pub finished_at: SystemTime,
}

/// A container on this node.
#[derive(Debug)]
pub struct Container {
    config: RuntimeConfig,
    id: String,
    dir: PathBuf,
    labels: BTreeMap<String, String>,
}

impl Container {
    /// Creates and starts a container: mounts an overlayfs of `layers` (bottom first)
    /// with a fresh upper dir at `rootfs/`, writes `config.json`, starts its
    /// supervisor and waits (up to 30 s) until the container runs or failed to start.
    pub async fn create(
        config: &RuntimeConfig,
        id: &str,
        labels: BTreeMap<String, String>,
        spec: oci_spec::runtime::Spec,
        layers: &[PathBuf],
    ) -> Result<Self, RuntimeError> {
        let dir = config.containers_dir().join(id);
        let container = Self {
            config: config.clone(),
            id: id.to_owned(),
            dir: dir.clone(),
            labels,
        };
        let prepared = {
            let dir = dir.clone();
            let layers = layers.to_vec();
            let labels = container.labels.clone();
            tokio::task::spawn_blocking(move || prepare_bundle(&dir, &layers, &labels, &spec))
                .await
                .map_err(|e| RuntimeError::io("preparing the bundle", std::io::Error::other(e)))?
        };
        if let Err(error) = prepared {
            let _ = container.cleanup_files().await;
            return Err(error);
        }
        let spawned = tokio::process::Command::new(&config.helper_binary)
            .arg(super::helper::SHIM)
            .arg(&dir)
            .arg(config.state_root())
            .arg(id)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::File::create(dir.join("shim.log"))
                    .map(std::process::Stdio::from)
                    .unwrap_or_else(|_| std::process::Stdio::null()),
            )
            .process_group(0)
            .spawn();
        let mut shim = match spawned {
            Ok(shim) => shim,
            Err(error) => {
                let _ = container.cleanup_files().await;
                return Err(RuntimeError::io(
                    "starting the container's supervisor",
                    error,
                ));
            }
        };
        // The supervisor reports through files; its own exit means it failed to start
        // the container (or the container already ended).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while container.state() == ContainerState::Created {
            if let Ok(Some(_)) = shim.try_wait() {
                if matches!(container.state(), ContainerState::Created) {
                    let log = std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
                    return Err(RuntimeError::Start(format!(
                        "the supervisor exited without reporting: {}",
                        log.trim()
                    )));
                }
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(RuntimeError::Start(
                    "the container did not start within 30 s".to_owned(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The supervisor lives on detached; reap it in the background if it ends
        // while we run (adopted supervisors are reaped by init).
        tokio::spawn(async move {
            let _ = shim.wait().await;
        });
        if let ContainerState::Exited(exited) = container.state()
            && exited.reason == "StartError"
        {
            let mut message = exited.message.clone();
            // libcontainer explains itself in the supervisor's log.
            let log = std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
            let details: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
            if !details.is_empty() {
                message = format!("{message} ({})", details.join("; "));
            }
            container.remove().await?;
            return Err(RuntimeError::Start(message));
        }
        Ok(container)
    }

    /// Every container under the data directory (after an agent restart: adopted).
    pub async fn list(config: &RuntimeConfig) -> Result<Vec<Self>, RuntimeError> {
        let mut entries = match tokio::fs::read_dir(config.containers_dir()).await {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(RuntimeError::io("listing containers", error)),
        };
        let mut containers = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| RuntimeError::io("listing containers", e))?
        {
            let id = entry.file_name().to_string_lossy().into_owned();
            containers.push(Self::adopt(config, &id)?);
        }
        containers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(containers)
    }

    /// The container `id` from its directory.
    pub fn adopt(config: &RuntimeConfig, id: &str) -> Result<Self, RuntimeError> {
        let dir = config.containers_dir().join(id);
        let labels = std::fs::read(dir.join("labels.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Ok(Self {
            config: config.clone(),
            id: id.to_owned(),
            dir,
            labels,
        })
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its labels (who it belongs to).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// Its directory (`containers/<id>`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// Its state, from the supervisor's records. A running container whose
    /// supervisor vanished (killed) is reported ended with `ContainerStatusUnknown`.
    pub fn state(&self) -> ContainerState {
        if let Some(record) = read_json::<ExitRecord>(&self.dir.join("exit.json")) {
            return ContainerState::Exited(Exited {
                exit_code: record.exit_code,
                signal: record.signal,
                reason: record.reason,
                message: record.message,
                oom_killed: record.oom_killed,
                started_at: from_ns(record.started_at_ns),
                finished_at: from_ns(record.finished_at_ns),
            });
        }
        let Some(start) = read_json::<StartRecord>(&self.dir.join("state.json")) else {
            return ContainerState::Created;
        };
        if is_same_process(start.shim_pid, start.shim_start) {
            return ContainerState::Running {
                pid: start.pid,
                started_at: from_ns(start.started_at_ns),
            };
        }
        // The supervisor is gone without a record: it may have just written it.
        if let Some(_record) = read_json::<ExitRecord>(&self.dir.join("exit.json")) {
            return self.state();
        }
        ContainerState::Exited(Exited {
            exit_code: 137,
            signal: None,
            reason: "ContainerStatusUnknown".to_owned(),
            message: "the container's supervisor ended without recording how the container ended"
                .to_owned(),
            oom_killed: false,
            started_at: from_ns(start.started_at_ns),
            finished_at: SystemTime::now(),
        })
    }

    /// Waits until the container has ended (its supervisor exited) and returns how.
    pub async fn wait(&self) -> Exited {
        loop {
            match self.state() {
                ContainerState::Exited(exited) => return exited,
                ContainerState::Created => tokio::time::sleep(Duration::from_millis(10)).await,
                ContainerState::Running { .. } => {
                    let start = read_json::<StartRecord>(&self.dir.join("state.json"));
                    match start.and_then(|s| pidfd(s.shim_pid, s.shim_start)) {
                        Some(fd) => match watch_pidfd(fd) {
                            // A pidfd becomes readable when its process exits.
                            Ok(fd) => {
                                let _ = fd.readable().await.map(|mut guard| guard.retain_ready());
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        },
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            }
        }
    }

    /// Sends `signal` to the container's init (through a pidfd of the recorded
    /// process, so a reused pid is never signalled). A container that is not running
    /// is left alone.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<(), RuntimeError> {
        let Some(start) = read_json::<StartRecord>(&self.dir.join("state.json")) else {
            return Ok(());
        };
        let Some(fd) = pidfd(start.pid, start.pid_start) else {
            return Ok(());
        };
        let signal = rustix::process::Signal::from_named_raw(signal as i32)
            .ok_or_else(|| RuntimeError::Start(format!("unsupported signal {signal}")))?;
        match rustix::process::pidfd_send_signal(&fd, signal) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(error) => Err(RuntimeError::io("signalling the container", error.into())),
        }
    }

    /// Stops the container: SIGTERM, up to `grace` for it to end, then SIGKILL.
    pub async fn stop(&self, grace: Duration) -> Result<Exited, RuntimeError> {
        if !matches!(self.state(), ContainerState::Running { .. }) {
            return Ok(self.wait().await);
        }
        if !grace.is_zero() {
            self.signal(nix::sys::signal::Signal::SIGTERM)?;
            if let Ok(exited) = tokio::time::timeout(grace, self.wait()).await {
                return Ok(exited);
            }
        }
        self.signal(nix::sys::signal::Signal::SIGKILL)?;
        Ok(self.wait().await)
    }

    /// Runs `command` in the running container through the `__exec` helper, with
    /// piped stdin, stdout and stderr.
    pub fn exec(&self, command: Vec<String>, _tty: bool) -> std::io::Result<tokio::process::Child> {
        if !matches!(self.state(), ContainerState::Running { .. }) {
            return Err(std::io::Error::other(format!(
                "container {} is not running",
                self.id
            )));
        }
        tokio::process::Command::new(&self.config.helper_binary)
            .arg(super::helper::EXEC)
            .arg(self.config.state_root())
            .arg(&self.id)
            .args(command)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
    }

    /// Kills the container if it runs, then unmounts its rootfs and removes its
    /// directory, its libcontainer state and its cgroup. Idempotent.
    pub async fn remove(self) -> Result<(), RuntimeError> {
        if matches!(self.state(), ContainerState::Running { .. }) {
            self.signal(nix::sys::signal::Signal::SIGKILL)?;
            let _ = tokio::time::timeout(Duration::from_secs(10), self.wait()).await;
        }
        // A supervisor killed before it could clean up leaves libcontainer's state.
        let state = self.config.state_root().join(&self.id);
        if state.exists() {
            let _ = tokio::fs::remove_dir_all(&state).await;
        }
        self.cleanup_files().await
    }

    /// Unmounts the rootfs and removes the directory.
    async fn cleanup_files(&self) -> Result<(), RuntimeError> {
        let rootfs = self.dir.join("rootfs");
        let _ = nix::mount::umount2(&rootfs, MntFlags::MNT_DETACH);
        match tokio::fs::remove_dir_all(&self.dir).await {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(RuntimeError::io("removing the container dir", error))
            }
            _ => Ok(()),
        }
    }
}

/// Writes labels and config.json and mounts the overlayfs rootfs (blocking).
fn prepare_bundle(
    dir: &Path,
    layers: &[PathBuf],
    labels: &BTreeMap<String, String>,
    spec: &oci_spec::runtime::Spec,
) -> Result<(), RuntimeError> {
    let io = |what: &'static str| move |e| RuntimeError::io(what, e);
    for sub in ["rootfs", "upper", "work"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(io("creating the container dir"))?;
    }
    write_atomically(&dir.join("labels.json"), labels).map_err(io("writing labels.json"))?;
    if layers.is_empty() {
        return Err(RuntimeError::Start("the image has no layers".to_owned()));
    }
    // overlayfs wants the top layer first.
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    nix::mount::mount(
        Some("overlay"),
        &dir.join("rootfs"),
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| RuntimeError::io("mounting the overlay rootfs", e.into()))?;
    let json = serde_json::to_vec_pretty(spec)
        .map_err(|e| RuntimeError::io("encoding config.json", std::io::Error::other(e)))?;
    std::fs::write(dir.join("config.json"), json).map_err(io("writing config.json"))?;
    Ok(())
}

/// Writes `value` as JSON to `path` via a temp file and a rename: readers see the old
/// or the new record, never a torn one, even if this process dies mid-write. Not
/// fsynced — container records need only outlive processes (after a reboot, the
/// containers they describe are gone anyway); see [`write_durably`].
pub fn write_atomically<T: Serialize + ?Sized>(path: &Path, value: &T) -> std::io::Result<()> {
    write_json(path, value, false)
}

/// [`write_atomically`], fsynced before the rename: for what must survive a crash of
/// the machine (the image index).
pub fn write_durably<T: Serialize + ?Sized>(path: &Path, value: &T) -> std::io::Result<()> {
    write_json(path, value, true)
}

fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T, sync: bool) -> std::io::Result<()> {
    use std::io::Write;
    let temp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    if sync {
        file.sync_all()?;
    }
    std::fs::rename(&temp, path)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Now in nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `time` as a Kubernetes (jiff) timestamp.
pub fn timestamp(time: SystemTime) -> k8s_openapi::jiff::Timestamp {
    let ns = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i128::try_from(d.as_nanos()).unwrap_or(0))
        .unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_nanosecond(ns)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

/// Registers a pidfd with tokio (readable once the process exits).
#[allow(
    deprecated,
    reason = "the AsyncFd owns the OwnedFd, so the fd outlives its registration"
)]
fn watch_pidfd(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::new(fd)
}

fn from_ns(ns: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)
}

/// A process's start time in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

/// `pid` is alive and is the process that started at `start` (not a reuse).
fn is_same_process(pid: u32, start: u64) -> bool {
    process_start_ticks(pid) == Some(start) && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = &stat[stat.rfind(')')? + 2..];
            after.split(' ').next().map(|state| state == "Z")
        })
        .unwrap_or(false)
}

/// A pidfd of `pid` if it is still the process that started at `start`.
fn pidfd(pid: u32, start: u64) -> Option<OwnedFd> {
    let raw = i32::try_from(pid).ok()?;
    let fd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(raw)?,
        rustix::process::PidfdFlags::empty(),
    )
    .ok()?;
    // Checked after opening: the fd now pins this exact process.
    is_same_process(pid, start).then_some(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_identify_this_process() {
        let me = std::process::id();
        let ticks = process_start_ticks(me).expect("ticks");
        assert!(is_same_process(me, ticks));
        assert!(!is_same_process(me, ticks + 1));
        assert!(process_start_ticks(u32::MAX).is_none());
    }

    #[test]
    fn records_round_trip_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("exit.json");
        let record = ExitRecord {
            exit_code: 137,
            signal: Some(9),
            oom_killed: true,
            reason: "OOMKilled".into(),
            message: String::new(),
            started_at_ns: 1,
            finished_at_ns: 2,
        };
        write_atomically(&path, &record).expect("written");
        assert_eq!(read_json::<ExitRecord>(&path), Some(record));
        assert!(!path.with_extension("tmp").exists());
    }
}
