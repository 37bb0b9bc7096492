//! A real `skiff-node-agent` process for end-to-end runs. Its containers outlive it by
//! design (a restarted agent adopts them), so dropping a [`NodeAgent`] kills the agent
//! and then runs `skiff-node-agent reset`, which stops and removes every container,
//! sandbox, mount and cgroup under its data directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::process::{Process, sibling_binary};

/// A running node agent and its data directory.
pub struct NodeAgent {
    /// The node's name.
    pub name: String,
    /// The agent's data directory (images, pods, containers).
    pub data_dir: PathBuf,
    args: Vec<String>,
    process: Option<Process>,
    /// Owns the data directory; removed after the reset on drop.
    dir: Option<tempfile::TempDir>,
}

impl NodeAgent {
    /// Starts an agent named `name` against the control plane at `server`
    /// (`http://127.0.0.1:PORT`), trusting `insecure_registry` over plain HTTP, and
    /// waits until it has registered.
    pub async fn start(name: &str, server: &str, insecure_registry: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating the agent's data dir")?;
        let data_dir = dir.path().to_owned();
        let args = vec![
            "--data-dir".to_owned(),
            data_dir.display().to_string(),
            "--server".to_owned(),
            server.to_owned(),
            "--node-name".to_owned(),
            name.to_owned(),
            "--node-ip".to_owned(),
            "127.0.0.1".to_owned(),
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--insecure-registry".to_owned(),
            insecure_registry.to_owned(),
        ];
        let mut agent = Self {
            name: name.to_owned(),
            data_dir,
            args,
            process: None,
            dir: Some(dir),
        };
        agent.restart().await?;
        Ok(agent)
    }

    /// Starts the agent process again (after [`NodeAgent::kill`]) on the same data
    /// directory, and waits until it has registered.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let binary = sibling_binary("skiff-node-agent")?;
        // The process gets a throwaway dir: the data dir outlives agent processes.
        let scratch = tempfile::tempdir().context("creating a scratch dir")?;
        let mut process = Process::spawn("skiff-node-agent", &binary, &self.args, scratch)?;
        process
            .wait_for_line("registered", Duration::from_secs(60))
            .await?;
        self.process = Some(process);
        Ok(())
    }

    /// The agent's process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Process::pid)
    }

    /// SIGKILLs the agent (its containers keep running).
    pub async fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill().await;
        }
    }

    /// A container's directory under the agent (`containers/<id>`).
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("containers").join(id)
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        if let Some(process) = self.process.take()
            && let Some(pid) = process.pid()
        {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
        reset(&self.data_dir);
        drop(self.dir.take());
    }
}

/// Runs `skiff-node-agent reset` on `data_dir`: every container and sandbox under it
/// is stopped and removed.
pub fn reset(data_dir: &Path) {
    let Ok(binary) = sibling_binary("skiff-node-agent") else {
        return;
    };
    let status = std::process::Command::new(binary)
        .arg("reset")
        .arg("--data-dir")
        .arg(data_dir)
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!(
            "skiff-node-agent reset {} failed: {status:?}",
            data_dir.display()
        );
    }
}
