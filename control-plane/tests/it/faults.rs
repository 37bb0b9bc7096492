//! Faults: SIGKILL of the leader under concurrent writes, restarts of everything.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use skiff_proto::store::{CreateOp, Op, TxnRequest, op};
use tokio::sync::Mutex;
use tokio::time::{Instant, sleep, timeout};

use crate::cluster::{Peer, kv, read_prefix, start_cluster, wait_for_leader};

/// What one write did, as the client saw it.
#[derive(Debug)]
enum Outcome {
    /// Acknowledged at this revision.
    Acked(u64),
    /// Refused or failed: may or may not have been applied.
    Unknown(String),
}

/// A write's history entry: what was invoked when, and how it ended.
#[derive(Debug)]
struct Record {
    key: String,
    invoked_at: Instant,
    outcome: Outcome,
}

async fn create(peer: &Peer, key: &str) -> Outcome {
    let request = TxnRequest {
        ops: vec![Op {
            op: Some(op::Op::Create(CreateOp {
                key: key.to_owned(),
                value: key.as_bytes().to_vec(),
            })),
        }],
    };
    match timeout(Duration::from_secs(6), async {
        kv(peer).await?.txn(request).await
    })
    .await
    {
        Ok(Ok(reply)) if reply.get_ref().succeeded => Outcome::Acked(reply.into_inner().revision),
        Ok(Ok(reply)) => Outcome::Unknown(format!("precondition failed: {:?}", reply.into_inner())),
        Ok(Err(status)) => Outcome::Unknown(status.to_string()),
        Err(_) => Outcome::Unknown("client timeout".to_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_under_load_loses_no_acknowledged_write() {
    let mut members = start_cluster(3).await;
    let peers: Vec<Peer> = members.iter().map(crate::cluster::Member::peer).collect();
    wait_for_leader(&members).await;

    // Eight writers, each creating unique keys through every member in turn, while a
    // checker reads each acknowledged key back linearizably through another member.
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(Vec::<Record>::new()));
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..8 {
        let (stop, history, peers) = (stop.clone(), history.clone(), peers.clone());
        writers.spawn(async move {
            let mut seq = 0usize;
            let mut stale_reads = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("/h/{writer}/{seq:05}");
                let invoked_at = Instant::now();
                let outcome = create(&peers[(writer + seq) % 3], &key).await;
                if let Outcome::Acked(revision) = outcome {
                    // A completed write is visible to every later linearizable read.
                    if let Ok(keys) = read_prefix(&peers[(writer + seq + 1) % 3], &key, false).await
                        && keys != vec![(key.clone(), revision)]
                    {
                        stale_reads += 1;
                    }
                }
                history.lock().await.push(Record {
                    key,
                    invoked_at,
                    outcome,
                });
                seq += 1;
            }
            stale_reads
        });
    }

    sleep(Duration::from_millis(1500)).await;
    let killed = wait_for_leader(&members).await;
    members[killed].kill().await;
    let killed_at = Instant::now();
    // Writes resume under a new leader.
    let new_leader = wait_for_leader(&members).await;
    assert_ne!(new_leader, killed);
    let failover = killed_at.elapsed();
    sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let stale_reads: usize = writers.join_all().await.into_iter().sum();
    assert_eq!(
        stale_reads, 0,
        "a linearizable read missed an acknowledged write"
    );

    let history = history.lock().await;
    let acked: BTreeMap<&str, u64> = history
        .iter()
        .filter_map(|r| match r.outcome {
            Outcome::Acked(rev) => Some((r.key.as_str(), rev)),
            Outcome::Unknown(_) => None,
        })
        .collect();
    let invoked: HashSet<&str> = history.iter().map(|r| r.key.as_str()).collect();
    let acked_after_kill = history
        .iter()
        .filter(|r| r.invoked_at > killed_at && matches!(r.outcome, Outcome::Acked(_)))
        .count();
    assert!(
        acked.len() > 50,
        "too few acknowledged writes: {}",
        acked.len()
    );
    assert!(
        acked_after_kill > 0,
        "no write was acknowledged after the leader was killed"
    );
    let mut failures: BTreeMap<&str, usize> = BTreeMap::new();
    for record in history.iter() {
        if let Outcome::Unknown(reason) = &record.outcome {
            *failures.entry(reason.as_str()).or_default() += 1;
        }
    }
    println!(
        "failover in {failover:?}; {} writes, {} acknowledged; failures: {failures:?}",
        history.len(),
        acked.len()
    );

    // Every acknowledged write is present at its acknowledged revision, nothing that
    // was never invoked appears, and no two writes share a revision.
    let check = |stored: Vec<(String, u64)>| {
        let stored_map: BTreeMap<&str, u64> =
            stored.iter().map(|(k, r)| (k.as_str(), *r)).collect();
        for (key, revision) in &acked {
            assert_eq!(
                stored_map.get(key),
                Some(revision),
                "acknowledged write {key} lost or changed"
            );
        }
        for (key, _) in &stored {
            assert!(invoked.contains(key.as_str()), "{key} was never written");
        }
        let revisions: HashSet<u64> = stored.iter().map(|(_, r)| *r).collect();
        assert_eq!(revisions.len(), stored.len(), "two writes share a revision");
    };
    let survivor = (0..3).find(|idx| *idx != killed).unwrap();
    check(
        read_prefix(&members[survivor].peer(), "/h/", false)
            .await
            .expect("read after failover"),
    );

    // The killed member restarts from disk and catches up.
    members[killed].restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stored = read_prefix(&members[killed].peer(), "/h/", true)
            .await
            .unwrap_or_default();
        if acked.keys().all(|k| stored.iter().any(|(s, _)| s == k)) {
            check(stored);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted member did not catch up"
        );
        sleep(Duration::from_millis(200)).await;
    }

    // Restart the whole cluster: everything acknowledged is still there.
    for member in &mut members {
        member.stop().await;
    }
    for member in &mut members {
        member.restart().await;
    }
    wait_for_leader(&members).await;
    for member in &members {
        check(
            read_prefix(&member.peer(), "/h/", false)
                .await
                .expect("read after full restart"),
        );
    }
}
