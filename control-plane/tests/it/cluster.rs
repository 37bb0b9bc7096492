//! A harness that runs `skiff-control-plane` members as child processes.

use std::process::Stdio;
use std::time::Duration;

use skiff_proto::store::kv_client::KvClient;
use skiff_proto::store::raft_client::RaftClient;
use skiff_proto::store::{MembersRequest, RangeRequest};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::{Instant, sleep, timeout};
use tonic::transport::Channel;

/// One member process, killed when dropped.
pub struct Member {
    pub dir: TempDir,
    pub address: String,
    /// The API's base URL (`http://127.0.0.1:PORT`).
    pub api: String,
    child: Option<Child>,
    #[allow(
        dead_code,
        reason = "held open so the member can keep writing to stdout"
    )]
    stdout: Option<Lines<BufReader<ChildStdout>>>,
}

impl Member {
    /// Starts a member in a new data dir, joining `join` if given.
    pub async fn start(join: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let spawned = spawn(&dir, "127.0.0.1:0", join).await;
        Self {
            dir,
            address: spawned.address,
            api: spawned.api,
            child: Some(spawned.child),
            stdout: Some(spawned.stdout),
        }
    }

    /// Starts a member from an existing data dir (a restored snapshot).
    pub async fn start_in(dir: TempDir) -> Self {
        let spawned = spawn(&dir, "127.0.0.1:0", None).await;
        Self {
            dir,
            address: spawned.address,
            api: spawned.api,
            child: Some(spawned.child),
            stdout: Some(spawned.stdout),
        }
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// SIGKILL, and reap.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill member");
        }
    }

    /// SIGTERM, and wait for a clean exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().expect("running child has a pid");
            let status = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .expect("send SIGTERM");
            assert!(status.success());
            let exit = timeout(Duration::from_secs(10), child.wait())
                .await
                .expect("member exits after SIGTERM")
                .expect("wait");
            assert!(exit.success(), "member exited with {exit}");
        }
    }

    /// Starts the member again from its data dir on its old address.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "member is still running");
        let spawned = spawn(&self.dir, &self.address, None).await;
        assert_eq!(spawned.address, self.address);
        self.api = spawned.api;
        self.child = Some(spawned.child);
        self.stdout = Some(spawned.stdout);
    }

    pub async fn raft(&self) -> Result<RaftClient<Channel>, tonic::transport::Error> {
        RaftClient::connect(format!("http://{}", self.address)).await
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// A started member: its process, peer address, API URL, and its stdout (kept open:
/// the member would fail writing to a closed pipe).
struct Spawned {
    child: Child,
    address: String,
    api: String,
    stdout: Lines<BufReader<ChildStdout>>,
}

/// Spawns the binary and waits for the lines announcing its peer address and API.
async fn spawn(dir: &TempDir, listen: &str, join: Option<&str>) -> Spawned {
    let mut command = Command::new(env!("CARGO_BIN_EXE_skiff-control-plane"));
    command
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--listen-peer")
        .arg(listen)
        .arg("--listen-api")
        .arg("127.0.0.1:0")
        .env("RUST_LOG", "warn,openraft=error");
    if let Some(join) = join {
        command.arg("--join").arg(join);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn skiff-control-plane");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut next_word_after = async |needle: &str| {
        let line = timeout(Duration::from_secs(60), stdout.next_line())
            .await
            .expect("member announces itself within 60 s")
            .expect("read stdout")
            .expect("a line");
        assert!(line.contains(needle), "expected {needle:?}, got {line:?}");
        line.rsplit(' ')
            .next()
            .expect("address at the end")
            .to_owned()
    };
    let address = next_word_after("serving peers on").await;
    let api = next_word_after("serving the API on").await;
    Spawned {
        child,
        address,
        api,
        stdout,
    }
}

/// Starts a cluster of `n` members: the first initializes, the rest join it.
pub async fn start_cluster(n: usize) -> Vec<Member> {
    let first = Member::start(None).await;
    let mut members = vec![];
    let join = first.address.clone();
    members.push(first);
    for _ in 1..n {
        members.push(Member::start(Some(&join)).await);
    }
    members
}

/// The index of the member that leads, as the members report it.
pub async fn leader_index(members: &[Member]) -> Option<usize> {
    for member in members.iter().filter(|m| m.pid().is_some()) {
        let ask = async {
            member
                .raft()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?
                .members(MembersRequest {})
                .await
        };
        let Ok(Ok(reply)) = timeout(Duration::from_secs(1), ask).await else {
            continue;
        };
        let reply = reply.into_inner();
        if !reply.has_leader {
            continue;
        }
        let leader_address = reply
            .members
            .iter()
            .find(|m| m.node_id == reply.leader_id)
            .map(|m| m.address.clone());
        if let Some(idx) = members
            .iter()
            .position(|m| Some(&m.address) == leader_address.as_ref())
        {
            return Some(idx);
        }
    }
    None
}

/// Waits up to 20 s for a leader among the running members.
pub async fn wait_for_leader(members: &[Member]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(idx) = leader_index(members).await
            && members[idx].pid().is_some()
        {
            return idx;
        }
        assert!(Instant::now() < deadline, "no leader within 20 s");
        sleep(Duration::from_millis(100)).await;
    }
}

/// A Kv client for the member at `address`.
pub async fn kv(address: &str) -> Result<KvClient<Channel>, tonic::Status> {
    KvClient::connect(format!("http://{address}"))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))
}

/// Every key under `prefix` with its mod revision, read through the member at `address`.
pub async fn read_prefix(
    address: &str,
    prefix: &str,
    stale: bool,
) -> Result<Vec<(String, u64)>, tonic::Status> {
    let reply = kv(address)
        .await?
        .range(RangeRequest {
            key: prefix.to_owned(),
            prefix: true,
            stale,
            ..Default::default()
        })
        .await?;
    Ok(reply
        .into_inner()
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.mod_revision))
        .collect())
}
