//! Operator commands: `skiff-control-plane member list|remove` and `snapshot save` talk
//! to a running member over its peer port; `snapshot restore` works offline.
//!
//! When the data dir holds the member's peer certificate (`pki/peer.crt`, `pki/peer.key`,
//! `pki/ca.crt`), they speak mutual TLS with it, exactly like another member.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use skiff_proto::store::raft_client::RaftClient;
use skiff_proto::store::{MembersReply, MembersRequest, RemoveMemberRequest, SnapshotRequest};
use tonic::transport::Channel;

use crate::store::snapshot::{self, SnapshotWriter};
use crate::store::{PeerTls, peer_endpoint};

/// A connection to the member at `peer`, over mutual TLS when `data_dir/pki` holds a peer
/// certificate, plain HTTP/2 otherwise.
pub async fn connect(peer: &str, data_dir: &Path) -> anyhow::Result<Channel> {
    let tls = PeerTls::load(&data_dir.join("pki")).with_context(|| {
        format!(
            "failed to load the peer certificate of {}",
            data_dir.display()
        )
    })?;
    peer_endpoint(peer, tls.as_ref())
        .with_context(|| format!("invalid peer address {peer}"))?
        .connect()
        .await
        .with_context(|| format!("failed to connect to the member at {peer}"))
}

async fn client(peer: &str, data_dir: &Path) -> anyhow::Result<RaftClient<Channel>> {
    Ok(RaftClient::new(connect(peer, data_dir).await?))
}

/// The members as a table: id, address, role, and which one leads.
pub async fn list_members(peer: &str, data_dir: &Path) -> anyhow::Result<String> {
    let reply = client(peer, data_dir)
        .await?
        .members(MembersRequest {})
        .await
        .with_context(|| format!("failed to list members via {peer}"))?;
    Ok(render_members(&reply.into_inner()))
}

/// Removes member `node_id` (through the leader), then lists the members left.
pub async fn remove_member(peer: &str, data_dir: &Path, node_id: u64) -> anyhow::Result<String> {
    let reply = client(peer, data_dir)
        .await?
        .remove_member(RemoveMemberRequest { node_id })
        .await
        .with_context(|| format!("failed to remove member {node_id} via {peer}"))?;
    Ok(render_members(&reply.into_inner()))
}

/// Saves a linearizable copy of the whole keyspace, taken by the member at `peer`, to
/// `path` (atomically), and says what it holds.
pub async fn save_snapshot(peer: &str, data_dir: &Path, path: &Path) -> anyhow::Result<String> {
    let mut chunks = client(peer, data_dir)
        .await?
        .snapshot(SnapshotRequest {})
        .await
        .with_context(|| format!("failed to take a snapshot via {peer}"))?
        .into_inner();
    let mut file = SnapshotWriter::create(path)?;
    while let Some(chunk) = chunks
        .message()
        .await
        .with_context(|| format!("failed to receive the snapshot from {peer}"))?
    {
        file.write(&chunk.data)?;
    }
    let info = file.commit()?;
    Ok(format!(
        "Snapshot saved at {} (revision {}, {} keys, {} bytes)\n",
        path.display(),
        info.revision,
        info.keys,
        info.bytes
    ))
}

/// Verifies the snapshot at `file` and creates `data_dir` from it, for a new
/// one-member cluster; says what it holds and how to start it.
pub fn restore_snapshot(file: &Path, data_dir: &Path) -> anyhow::Result<String> {
    let info = snapshot::restore(file, data_dir)?;
    Ok(format!(
        "Restored {} (revision {}, {} keys) into {}; start it with \
         `skiff-control-plane --data-dir {}` to run a new one-member cluster\n",
        file.display(),
        info.revision,
        info.keys,
        data_dir.display(),
        data_dir.display()
    ))
}

fn render_members(reply: &MembersReply) -> String {
    let mut out = String::from("ID                     ADDRESS                ROLE\n");
    for member in &reply.members {
        let role = match (
            reply.has_leader && reply.leader_id == member.node_id,
            member.voter,
        ) {
            (true, _) => "leader",
            (false, true) => "voter",
            (false, false) => "learner",
        };
        let _ = writeln!(out, "{:<22} {:<22} {role}", member.node_id, member.address);
    }
    out
}

#[cfg(test)]
mod tests {
    use skiff_proto::store::Member;

    use super::*;
    use crate::store::{Config, PEER_GROUP, Store, Tuning};

    fn peer_certificate(ca: &skiff_pki::Ca, name: &str) -> skiff_pki::KeyPair {
        ca.issue(&skiff_pki::Issue {
            common_name: format!("system:skiff-peer:{name}"),
            organizations: vec![PEER_GROUP.to_owned()],
            dns_names: Vec::new(),
            ips: vec!["127.0.0.1".parse().unwrap()],
            usage: skiff_pki::Usage::ServerAndClient,
            validity_days: 1,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn member_commands_use_the_data_dirs_peer_certificate() {
        let ca = skiff_pki::Ca::generate("skiff-test-ca").unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(Config {
            data_dir: store_dir.path().to_owned(),
            listen_peer: "127.0.0.1:0".parse().unwrap(),
            advertise_peer: None,
            join: Vec::new(),
            tls: Some(PeerTls {
                ca_pem: ca.cert_pem.clone(),
                identity: peer_certificate(&ca, "a"),
            }),
            tuning: Tuning::default(),
        })
        .await
        .unwrap();
        // The membership is known once the new cluster has elected its first leader.
        for _ in 0..200 {
            if store.is_leader() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }

        let data_dir = tempfile::tempdir().unwrap();
        let pki_dir = data_dir.path().join("pki");
        peer_certificate(&ca, "b").save(&pki_dir, "peer").unwrap();
        std::fs::write(pki_dir.join("ca.crt"), &ca.cert_pem).unwrap();
        let table = list_members(store.address(), data_dir.path())
            .await
            .unwrap();
        assert!(table.contains(store.address()), "{table}");

        // Without a peer certificate the command speaks plain HTTP/2 and is refused.
        let bare = tempfile::tempdir().unwrap();
        assert!(list_members(store.address(), bare.path()).await.is_err());
        store.shutdown().await;
    }

    #[test]
    fn renders_roles() {
        let reply = MembersReply {
            members: vec![
                Member {
                    node_id: 1,
                    address: "127.0.0.1:2380".into(),
                    voter: true,
                },
                Member {
                    node_id: 2,
                    address: "127.0.0.1:2381".into(),
                    voter: true,
                },
                Member {
                    node_id: 3,
                    address: "127.0.0.1:2382".into(),
                    voter: false,
                },
            ],
            leader_id: 2,
            has_leader: true,
        };
        let table = render_members(&reply);
        let roles: Vec<&str> = table
            .lines()
            .skip(1)
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect();
        assert_eq!(roles, ["voter", "leader", "learner"]);
    }
}
