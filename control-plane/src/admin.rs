//! Operator commands: `skiff-control-plane member list|remove` and `snapshot save` talk
//! to a running member over its peer port; `snapshot restore` works offline.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use skiff_proto::store::raft_client::RaftClient;
use skiff_proto::store::{MembersReply, MembersRequest, RemoveMemberRequest, SnapshotRequest};

use crate::store::peer_url;
use crate::store::snapshot::{self, SnapshotWriter};

async fn client(peer: &str) -> anyhow::Result<RaftClient<tonic::transport::Channel>> {
    RaftClient::connect(peer_url(peer))
        .await
        .with_context(|| format!("failed to connect to the member at {peer}"))
}

/// The members as a table: id, address, role, and which one leads.
pub async fn list_members(peer: &str) -> anyhow::Result<String> {
    let reply = client(peer)
        .await?
        .members(MembersRequest {})
        .await
        .with_context(|| format!("failed to list members via {peer}"))?;
    Ok(render_members(&reply.into_inner()))
}

/// Removes member `node_id` (through the leader), then lists the members left.
pub async fn remove_member(peer: &str, node_id: u64) -> anyhow::Result<String> {
    let reply = client(peer)
        .await?
        .remove_member(RemoveMemberRequest { node_id })
        .await
        .with_context(|| format!("failed to remove member {node_id} via {peer}"))?;
    Ok(render_members(&reply.into_inner()))
}

/// Saves a linearizable copy of the whole keyspace, taken by the member at `peer`, to
/// `path` (atomically), and says what it holds.
pub async fn save_snapshot(peer: &str, path: &Path) -> anyhow::Result<String> {
    let mut chunks = client(peer)
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
