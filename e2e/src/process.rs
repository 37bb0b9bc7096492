//! Child processes for end-to-end runs: each owns a temp data dir and is killed (and
//! reaped) when dropped, so nothing outlives the run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::{Instant, sleep, timeout};

use crate::netns::NetNs;

/// A running child process and its data directory.
pub struct Process {
    /// What it is, for messages.
    pub name: String,
    /// Its data directory (removed on drop).
    pub dir: tempfile::TempDir,
    child: Child,
    /// Stdout, kept open for the process's whole life: a closed pipe would make its
    /// next write fail.
    stdout: Option<Lines<BufReader<ChildStdout>>>,
}

impl Process {
    /// Spawns `program` with `args`; stdout is piped for [`Process::wait_for_line`],
    /// stderr discarded unless `SKIFF_E2E_VERBOSE` is set.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        dir: tempfile::TempDir,
    ) -> anyhow::Result<Self> {
        Self::spawn_in(None, name, program, args, dir)
    }

    /// As [`Process::spawn`], inside `netns` when given (through `nsenter --net=`,
    /// which execs `program`: the recorded PID is the program's own, and the process
    /// shares the host's mount namespace).
    pub fn spawn_in(
        netns: Option<&NetNs>,
        name: &str,
        program: &Path,
        args: &[String],
        dir: tempfile::TempDir,
    ) -> anyhow::Result<Self> {
        let stderr = if std::env::var_os("SKIFF_E2E_VERBOSE").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let mut command = match netns {
            Some(netns) => Command::from(netns.command(program)),
            None => Command::new(program),
        };
        let mut child = command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("failed to start {name} ({})", program.display()))?;
        let stdout = child
            .stdout
            .take()
            .map(|stdout| BufReader::new(stdout).lines());
        Ok(Self {
            name: name.to_owned(),
            dir,
            child,
            stdout,
        })
    }

    /// Reads stdout until a line containing `needle` appears (within `limit`) and
    /// returns it.
    pub async fn wait_for_line(&mut self, needle: &str, limit: Duration) -> anyhow::Result<String> {
        let lines = self.stdout.as_mut().context("stdout is not piped")?;
        let found = timeout(limit, async {
            while let Some(line) = lines.next_line().await? {
                if line.contains(needle) {
                    return Ok::<_, std::io::Error>(Some(line));
                }
            }
            Ok(None)
        })
        .await
        .with_context(|| format!("{} did not print {needle:?} within {limit:?}", self.name))??;
        found.with_context(|| format!("{} exited before printing {needle:?}", self.name))
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the process and waits for it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Waits until something accepts TCP connections on `address`.
pub async fn wait_for_port(address: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while TcpStream::connect(address).await.is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {address} after {limit:?}");
        }
        sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("binding an ephemeral port")?;
    Ok(listener.local_addr()?.port())
}

/// The path of a binary built into the same target directory as the running one.
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let current = std::env::current_exe().context("locating the running binary")?;
    for dir in current.ancestors().skip(1).take(2) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} is not built next to {}; run `cargo build --release --workspace` first",
        current.display()
    )
}

/// Finds `name` on `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}
