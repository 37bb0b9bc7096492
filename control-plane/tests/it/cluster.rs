//! A harness that runs `skiff-control-plane` members as child processes.
//!
//! Members are secured as in production: the first creates the cluster's PKI and join
//! token, the others join it with `--join https://… --token …`; the harness calls the
//! peer port over mutual TLS with a member's peer certificate, and the API over HTTPS
//! with its admin certificate.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use skiff_control_plane::store::{PeerTls, peer_endpoint};
use skiff_proto::store::kv_client::KvClient;
use skiff_proto::store::raft_client::RaftClient;
use skiff_proto::store::{MembersRequest, RangeRequest};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::{Instant, sleep, timeout};
use tonic::transport::Channel;

/// A member's peer address and the peer certificate to call it with (any member's
/// does: they share the CA).
#[derive(Clone, Debug)]
pub struct Peer {
    pub address: String,
    pub tls: PeerTls,
}

impl Peer {
    /// A connection over mutual TLS.
    async fn channel(&self) -> Result<Channel, tonic::Status> {
        peer_endpoint(&self.address, Some(&self.tls))
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))
    }
}

/// One member process, killed when dropped.
pub struct Member {
    pub dir: TempDir,
    pub address: String,
    /// The API's base URL (`https://127.0.0.1:PORT`).
    pub api: String,
    /// The member's peer certificate (from `DATA/pki`).
    pub tls: PeerTls,
    child: Option<Child>,
    #[allow(
        dead_code,
        reason = "held open so the member can keep writing to stdout"
    )]
    stdout: Option<Lines<BufReader<ChildStdout>>>,
}

impl Member {
    /// Starts a member in a new data dir, joining `join`'s cluster (through its API,
    /// with its server token) if given.
    pub async fn start(join: Option<&Member>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        if let Some(member) = join {
            member.wait_for_token().await;
        }
        let join = join.map(|member| (member.api.clone(), member.token()));
        let spawned = spawn(&dir, "127.0.0.1:0", join.as_ref()).await;
        Self {
            dir,
            address: spawned.address,
            api: spawned.api,
            tls: spawned.tls,
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
            tls: spawned.tls,
            child: Some(spawned.child),
            stdout: Some(spawned.stdout),
        }
    }

    /// The server join token (`DATA/token`).
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("token"))
            .expect("the member wrote its join token")
            .trim()
            .to_owned()
    }

    /// Waits up to 30 s until the server token is stored as its bootstrap-token Secret:
    /// a first member writes it in the background once it leads, and a member joining
    /// before that is refused.
    pub async fn wait_for_token(&self) {
        let token = skiff_pki::Token::parse(&self.token()).expect("a valid token");
        let url = format!(
            "{}/api/v1/namespaces/kube-system/secrets/bootstrap-token-{}",
            self.api, token.id
        );
        let client = self.admin_client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the join token was not stored within 30 s"
            );
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// An HTTPS client of the API trusting the member's CA and presenting its admin
    /// certificate (`DATA/pki/admin.{crt,key}`).
    pub fn admin_client(&self) -> reqwest::Client {
        let pki = self.dir.path().join("pki");
        let ca = std::fs::read_to_string(pki.join("ca.crt")).expect("read the CA");
        let admin = skiff_pki::KeyPair::load(&pki, "admin").expect("the admin certificate");
        let tls = skiff_pki::client_config(&ca, Some(&admin)).expect("a TLS client config");
        reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTPS client")
    }

    /// `DATA/admin.kubeconfig`.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// Its peer address with its peer certificate.
    pub fn peer(&self) -> Peer {
        Peer {
            address: self.address.clone(),
            tls: self.tls.clone(),
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
        self.tls = spawned.tls;
        self.child = Some(spawned.child);
        self.stdout = Some(spawned.stdout);
    }

    /// A Raft client over mutual TLS.
    pub async fn raft(&self) -> Result<RaftClient<Channel>, tonic::Status> {
        Ok(RaftClient::new(self.peer().channel().await?))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// A started member: its process, peer address, API URL, peer certificate, and its
/// stdout (kept open: the member would fail writing to a closed pipe).
struct Spawned {
    child: Child,
    address: String,
    api: String,
    tls: PeerTls,
    stdout: Lines<BufReader<ChildStdout>>,
}

/// Spawns the binary and waits for the lines announcing its peer address and API;
/// `join` is an API URL and a server token.
async fn spawn(dir: &TempDir, listen: &str, join: Option<&(String, String)>) -> Spawned {
    let mut command = Command::new(env!("CARGO_BIN_EXE_skiff-control-plane"));
    command
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--listen-peer")
        .arg(listen)
        .arg("--listen-api")
        .arg("127.0.0.1:0")
        .env("RUST_LOG", "warn,openraft=error");
    if let Some((server, token)) = join {
        command.arg("--join").arg(server).arg("--token").arg(token);
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
    // `… serving the API on https://BOUND as https://ADVERTISE:PORT`.
    let api = next_word_after("serving the API on").await;
    let tls = PeerTls::load(&dir.path().join("pki"))
        .expect("load the peer certificate")
        .expect("the member created its peer certificate");
    Spawned {
        child,
        address,
        api,
        tls,
        stdout,
    }
}

/// Starts a cluster of `n` members: the first initializes, the rest join it through
/// its API with its server token.
pub async fn start_cluster(n: usize) -> Vec<Member> {
    let mut members = vec![Member::start(None).await];
    for _ in 1..n {
        let joined = Member::start(Some(&members[0])).await;
        members.push(joined);
    }
    members
}

/// The index of the member that leads, as the members report it.
pub async fn leader_index(members: &[Member]) -> Option<usize> {
    for member in members.iter().filter(|m| m.pid().is_some()) {
        let ask = async { member.raft().await?.members(MembersRequest {}).await };
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

/// A Kv client for `peer`, over mutual TLS.
pub async fn kv(peer: &Peer) -> Result<KvClient<Channel>, tonic::Status> {
    Ok(KvClient::new(peer.channel().await?))
}

/// Every key under `prefix` with its mod revision, read through `peer`.
pub async fn read_prefix(
    peer: &Peer,
    prefix: &str,
    stale: bool,
) -> Result<Vec<(String, u64)>, tonic::Status> {
    let reply = kv(peer)
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
