//! A real `skiff-node-agent` process for end-to-end runs, inside its node's network
//! namespace (a [`NodeNet`] on a test [`Fabric`]), never in the host's. Its containers
//! outlive it by design (a restarted agent adopts them), so dropping a [`NodeAgent`]
//! kills the agent, runs `skiff-node-agent reset` inside the node's namespace (which
//! stops and removes every container, sandbox, mount and cgroup under its data
//! directory, and the node's network set-up), and then deletes the namespace.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::netns::{Fabric, NetNs, NodeNet};
use crate::process::{Process, sibling_binary};

/// A running node agent, its data directory and its node's network.
pub struct NodeAgent {
    /// The node's name.
    pub name: String,
    /// The agent's data directory (images, pods, containers).
    pub data_dir: PathBuf,
    /// The node's namespace and address; the agent and hostNetwork pods run there.
    pub node: NodeNet,
    args: Vec<String>,
    process: Option<Process>,
    /// Owns the data directory; removed after the reset on drop.
    dir: Option<tempfile::TempDir>,
}

impl NodeAgent {
    /// Starts an agent for `node` inside its namespace against the control plane at
    /// `server` (`https://10.77.0.1:PORT`, as the node sees it), joining with `token`
    /// (the control plane's `agent-token`), trusting `insecure_registry` over plain
    /// HTTP, and waits until it has registered. The agent's node IP is the node's
    /// fabric address; it serves logs and exec there on an ephemeral port.
    pub async fn start(
        node: NodeNet,
        server: &str,
        token: &str,
        insecure_registry: &str,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating the agent's data dir")?;
        let data_dir = dir.path().to_owned();
        let args = vec![
            "--data-dir".to_owned(),
            data_dir.display().to_string(),
            "--server".to_owned(),
            server.to_owned(),
            "--token".to_owned(),
            token.to_owned(),
            "--node-name".to_owned(),
            node.name.clone(),
            "--node-ip".to_owned(),
            node.ip.to_string(),
            "--listen".to_owned(),
            SocketAddr::from((node.ip, 0)).to_string(),
            "--insecure-registry".to_owned(),
            insecure_registry.to_owned(),
        ];
        let mut agent = Self {
            name: node.name.clone(),
            data_dir,
            node,
            args,
            process: None,
            dir: Some(dir),
        };
        agent.restart().await?;
        Ok(agent)
    }

    /// Creates node `name` on `fabric` and starts its agent there (see
    /// [`NodeAgent::start`]).
    pub async fn start_on(
        fabric: &Fabric,
        name: &str,
        server: &str,
        token: &str,
        insecure_registry: &str,
    ) -> anyhow::Result<Self> {
        let node = fabric
            .add_node(name)
            .with_context(|| format!("creating node {name}'s network"))?;
        Self::start(node, server, token, insecure_registry).await
    }

    /// Starts the agent process again (after [`NodeAgent::kill`]) on the same data
    /// directory in the same namespace, and waits until it has registered.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let binary = sibling_binary("skiff-node-agent")?;
        // The process gets a throwaway dir: the data dir outlives agent processes.
        let scratch = tempfile::tempdir().context("creating a scratch dir")?;
        let mut process = Process::spawn_in(
            Some(&self.node.ns),
            "skiff-node-agent",
            &binary,
            &self.args,
            scratch,
        )?;
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

    /// The node's namespace.
    pub fn netns(&self) -> &NetNs {
        &self.node.ns
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
        reset(&self.node.ns, &self.data_dir);
        drop(self.dir.take());
        // `self.node` is dropped next, deleting the namespace (and its veth pair).
    }
}

/// Runs `skiff-node-agent reset` on `data_dir` inside `netns`: every container and
/// sandbox under it is stopped and removed, and the node's network set-up with them.
pub fn reset(netns: &NetNs, data_dir: &Path) {
    let Ok(binary) = sibling_binary("skiff-node-agent") else {
        return;
    };
    let status = netns
        .command(binary)
        .arg("reset")
        .arg("--data-dir")
        .arg(data_dir)
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!(
            "skiff-node-agent reset {} in {} failed: {status:?}",
            data_dir.display(),
            netns.name()
        );
    }
}
