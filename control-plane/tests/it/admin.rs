//! `skiff-control-plane member list|remove` against a running cluster.

use std::process::Command;

use crate::cluster::{start_cluster, wait_for_leader};

fn member_command(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_skiff-control-plane"))
        .arg("member")
        .args(args)
        .output()
        .expect("run member command");
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
    let (ok, table, stderr) = member_command(&["list", "--peer", &members[0].address]);
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
    let (ok, table, stderr) =
        member_command(&["remove", victim[0], "--peer", &members[leader].address]);
    assert!(ok, "{stderr}");
    assert_eq!(
        table.lines().count(),
        3,
        "header and two members left: {table}"
    );
    assert!(!table.contains(victim[1]), "{table}");

    // A member that does not answer is a one-line error, not a panic.
    let (ok, _, stderr) = member_command(&["list", "--peer", "127.0.0.1:1"]);
    assert!(!ok);
    assert!(
        stderr.contains("failed to connect to the member at 127.0.0.1:1"),
        "{stderr}"
    );
}
