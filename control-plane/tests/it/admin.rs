//! `skiff-control-plane member list|remove` against a running cluster, and
//! `snapshot save|restore`.

use std::process::Command;

use skiff_proto::store::{CreateOp, Op, TxnRequest, op};

use crate::cluster::{Member, kv, read_prefix, start_cluster, wait_for_leader};

/// `skiff-control-plane member ARGS --data-dir DATA`: the data dir's peer certificate
/// authenticates the command to the member.
fn member_command(member: &Member, args: &[&str]) -> (bool, String, String) {
    let data_dir = member.dir.path().to_str().unwrap();
    control_plane(&[&["member"], args, &["--data-dir", data_dir]].concat())
}

fn control_plane(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_skiff-control-plane"))
        .args(args)
        .output()
        .expect("run skiff-control-plane");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_listed_and_removed_from_the_command_line() {
    let members = start_cluster(3).await;
    let leader = wait_for_leader(&members).await;
    let (ok, table, stderr) = member_command(&members[0], &["list", "--peer", &members[0].address]);
    assert!(ok, "{stderr}");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert_eq!(
        rows.iter().filter(|r| r[2] == "leader").count(),
        1,
        "{table}"
    );
    let leader_row = rows.iter().find(|r| r[2] == "leader").unwrap();
    assert_eq!(leader_row[1], members[leader].address);

    // Remove a follower through another member.
    let victim = rows.iter().find(|r| r[2] == "voter").unwrap();
    let (ok, table, stderr) = member_command(
        &members[leader],
        &["remove", victim[0], "--peer", &members[leader].address],
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        table.lines().count(),
        3,
        "header and two members left: {table}"
    );
    assert!(!table.contains(victim[1]), "{table}");

    // A member that does not answer is a one-line error, not a panic.
    let (ok, _, stderr) = member_command(&members[0], &["list", "--peer", "127.0.0.1:1"]);
    assert!(!ok);
    assert!(
        stderr.contains("failed to connect to the member at 127.0.0.1:1"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_saved_from_the_command_line_restores_into_a_new_member() {
    let members = start_cluster(1).await;
    wait_for_leader(&members).await;
    let mut client = kv(&members[0].peer()).await.unwrap();
    for idx in 0..50 {
        let op = op::Op::Create(CreateOp {
            key: format!("/cli/{idx:02}"),
            value: vec![idx],
        });
        let reply = client
            .txn(TxnRequest {
                ops: vec![Op { op: Some(op) }],
            })
            .await
            .unwrap();
        assert!(reply.into_inner().succeeded);
    }
    let before = read_prefix(&members[0].peer(), "/cli/", false)
        .await
        .unwrap();

    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("backup.snap");
    let file_arg = file.to_str().unwrap();
    let (ok, stdout, stderr) = control_plane(&[
        "snapshot",
        "save",
        file_arg,
        "--peer",
        &members[0].address,
        "--data-dir",
        members[0].dir.path().to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with(&format!("Snapshot saved at {file_arg} (revision ")),
        "{stdout}"
    );
    drop(members);

    // A damaged copy is refused with one line, and creates nothing.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.truncate(bytes.len() - 1);
    let damaged = backups.path().join("damaged.snap");
    std::fs::write(&damaged, bytes).unwrap();
    let targets = tempfile::tempdir().unwrap();
    let refused = targets.path().join("refused");
    let (ok, _, stderr) = control_plane(&[
        "snapshot",
        "restore",
        damaged.to_str().unwrap(),
        "--data-dir",
        refused.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("is truncated"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(!refused.exists());

    let data_dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = control_plane(&[
        "snapshot",
        "restore",
        file_arg,
        "--data-dir",
        data_dir.path().to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("revision "), "{stdout}");
    let restored = Member::start_in(data_dir).await;
    wait_for_leader(std::slice::from_ref(&restored)).await;
    let after = read_prefix(&restored.peer(), "/cli/", false).await.unwrap();
    assert_eq!(after, before);
}
