//! Store tests: openraft's storage conformance suite, then single- and multi-member
//! behaviour with real members (in-process, on 127.0.0.1) over real files.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;
use tokio::time::{Instant, sleep};

use super::db::Db;
use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::watch::WatchHub;
use super::*;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_db = Db::open_log(dir.path()).expect("open log db");
        let state_db = Db::open_state(dir.path()).expect("open state db");
        Ok((
            dir,
            // The conformance suite purges logs without snapshots: open the gate fully.
            LogStore::new(log_db, tokio::sync::watch::channel(Some(u64::MAX)).1),
            StateMachine::open(
                state_db,
                WatchHub::new(),
                1000,
                tokio::sync::watch::channel(None).0,
            )
            .expect("open state machine"),
        ))
    }
}

#[test]
fn openraft_storage_conformance_suite() {
    Suite::test_all(Builder).expect("openraft storage suite");
}

/// Fast timings for tests on one machine.
fn test_tuning() -> Tuning {
    Tuning {
        heartbeat_interval: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(300),
        election_timeout_max: Duration::from_millis(600),
        snapshot_after_logs: 10_000,
        logs_kept_after_snapshot: 100,
        history_revisions: 100_000,
        request_timeout: Duration::from_secs(5),
    }
}

/// Starts a member in `dir`, joining `join` if given.
async fn member(dir: &TempDir, join: Option<&Store>, tuning: Tuning) -> Store {
    let config = Config {
        data_dir: dir.path().to_owned(),
        listen_peer: "127.0.0.1:0".parse().unwrap(),
        advertise_peer: None,
        join: join
            .map(|store| store.address().to_owned())
            .into_iter()
            .collect(),
        tls: None,
        tuning,
    };
    Store::open(config).await.expect("open member")
}

/// Reopens a member from its data dir, reusing its address so the others find it.
async fn reopen(dir: &TempDir, address: &str, tuning: Tuning) -> Store {
    let config = Config {
        data_dir: dir.path().to_owned(),
        listen_peer: address.parse().unwrap(),
        advertise_peer: None,
        join: Vec::new(),
        tls: None,
        tuning,
    };
    Store::open(config).await.expect("reopen member")
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

fn committed_revision(outcome: &TxnOutcome) -> u64 {
    match outcome {
        TxnOutcome::Committed { revision, .. } => *revision,
        TxnOutcome::Failed { .. } => panic!("expected a commit, got {outcome:?}"),
    }
}

/// The next watch message, failing the test after 10 s of silence.
async fn next_message(watch: &mut WatchStream) -> WatchMessage {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a watch message within 10 s")
        .expect("the watch is open")
}

async fn value(store: &Store, key: &str, consistency: Consistency) -> Option<Vec<u8>> {
    store
        .get(key, consistency)
        .await
        .expect("get")
        .0
        .map(|kv| kv.value)
}

#[tokio::test]
async fn single_member_crud_with_compare_and_swap() {
    let dir = tempfile::tempdir().unwrap();
    let store = member(&dir, None, test_tuning()).await;
    wait_until("leadership", || store.is_leader()).await;

    let created = committed_revision(
        &store
            .create("/registry/pods/default/a", b"one".to_vec())
            .await
            .unwrap(),
    );
    assert_eq!(
        store
            .create("/registry/pods/default/a", b"dup".to_vec())
            .await
            .unwrap(),
        TxnOutcome::Failed {
            op_index: 0,
            precondition: Precondition::AlreadyExists
        }
    );
    let (kv, revision) = store
        .get("/registry/pods/default/a", Consistency::Linearizable)
        .await
        .unwrap();
    let kv = kv.unwrap();
    assert_eq!(
        (
            kv.value.as_slice(),
            kv.create_revision,
            kv.mod_revision,
            revision
        ),
        (b"one".as_slice(), created, created, created)
    );

    let stale = store
        .update(
            "/registry/pods/default/a",
            b"two".to_vec(),
            Some(created - 1),
        )
        .await
        .unwrap();
    assert_eq!(
        stale,
        TxnOutcome::Failed {
            op_index: 0,
            precondition: Precondition::RevisionMismatch { actual: created }
        }
    );
    let updated = store
        .update("/registry/pods/default/a", b"two".to_vec(), Some(created))
        .await
        .unwrap();
    let TxnOutcome::Committed {
        revision: updated_revision,
        prev,
    } = updated
    else {
        panic!("update failed")
    };
    assert_eq!(updated_revision, created + 1);
    assert_eq!(prev[0].as_ref().unwrap().value, b"one");
    let kv = store
        .get("/registry/pods/default/a", Consistency::Linearizable)
        .await
        .unwrap()
        .0
        .unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (created, created + 1)
    );

    assert_eq!(
        store
            .update("/registry/pods/default/missing", b"x".to_vec(), None)
            .await
            .unwrap(),
        TxnOutcome::Failed {
            op_index: 0,
            precondition: Precondition::NotFound
        }
    );
    assert_eq!(
        store
            .delete("/registry/pods/default/a", Some(created))
            .await
            .unwrap(),
        TxnOutcome::Failed {
            op_index: 0,
            precondition: Precondition::RevisionMismatch {
                actual: created + 1
            }
        }
    );
    committed_revision(
        &store
            .delete("/registry/pods/default/a", Some(created + 1))
            .await
            .unwrap(),
    );
    assert_eq!(
        value(
            &store,
            "/registry/pods/default/a",
            Consistency::Linearizable
        )
        .await,
        None
    );
    assert!(matches!(
        store.txn(Txn::default()).await,
        Err(Error::InvalidRequest(_))
    ));
    store.shutdown().await;
}

#[tokio::test]
async fn transactions_are_all_or_nothing_at_one_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = member(&dir, None, test_tuning()).await;
    store.create("/k/existing", b"e".to_vec()).await.unwrap();
    let before = store.revision();
    let failing = Txn {
        ops: vec![
            Op::Create {
                key: "/k/new".into(),
                value: b"n".to_vec(),
            },
            Op::Create {
                key: "/k/existing".into(),
                value: b"again".to_vec(),
            },
        ],
    };
    assert_eq!(
        store.txn(failing).await.unwrap(),
        TxnOutcome::Failed {
            op_index: 1,
            precondition: Precondition::AlreadyExists
        }
    );
    assert_eq!(
        value(&store, "/k/new", Consistency::Linearizable).await,
        None,
        "nothing of a failed txn applies"
    );
    assert_eq!(
        store.revision(),
        before,
        "a failed txn does not advance the revision"
    );

    // Later operations see earlier ones: create then update the same key.
    let chained = Txn {
        ops: vec![
            Op::Create {
                key: "/k/new".into(),
                value: b"n1".to_vec(),
            },
            Op::Update {
                key: "/k/new".into(),
                value: b"n2".to_vec(),
                expected_revision: None,
            },
            Op::Delete {
                key: "/k/existing".into(),
                expected_revision: None,
            },
        ],
    };
    let revision = committed_revision(&store.txn(chained).await.unwrap());
    assert_eq!(revision, before + 1, "one revision per transaction");
    let kv = store
        .get("/k/new", Consistency::Linearizable)
        .await
        .unwrap()
        .0
        .unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.mod_revision),
        (b"n2".as_slice(), revision)
    );
    assert_eq!(
        value(&store, "/k/existing", Consistency::Linearizable).await,
        None
    );
    store.shutdown().await;
}

#[tokio::test]
async fn range_pages_through_a_prefix_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = member(&dir, None, test_tuning()).await;
    for name in ["c", "a", "e", "b", "d"] {
        store
            .create(
                &format!("/registry/pods/ns1/{name}"),
                name.as_bytes().to_vec(),
            )
            .await
            .unwrap();
    }
    store
        .create("/registry/pods/ns10/x", b"x".to_vec())
        .await
        .unwrap();
    store
        .create("/registry/services/ns1/s", b"s".to_vec())
        .await
        .unwrap();
    let mut keys = Vec::new();
    let mut start_after: Option<String> = None;
    loop {
        let page = store
            .range(
                "/registry/pods/ns1/",
                start_after.as_deref(),
                2,
                Consistency::Linearizable,
            )
            .await
            .unwrap();
        keys.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        if !page.more {
            break;
        }
        start_after = page.kvs.last().map(|kv| kv.key.clone());
    }
    assert_eq!(
        keys,
        ["a", "b", "c", "d", "e"].map(|n| format!("/registry/pods/ns1/{n}"))
    );
    let all = store
        .range("/registry/pods/", None, 0, Consistency::Stale)
        .await
        .unwrap();
    assert_eq!(all.kvs.len(), 6);
    assert!(!all.more);
    store.shutdown().await;
}

#[tokio::test]
async fn watch_replays_history_in_order_then_follows_live_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = member(&dir, None, test_tuning()).await;
    // Revision 0 means "from now on", so start the history at a later revision.
    store.create("/unwatched", b"0".to_vec()).await.unwrap();
    let first = committed_revision(&store.create("/w/a", b"1".to_vec()).await.unwrap());
    store.update("/w/a", b"2".to_vec(), None).await.unwrap();
    store.create("/other/x", b"x".to_vec()).await.unwrap();
    store.delete("/w/a", None).await.unwrap();

    let mut watch = store
        .watch("/w/", first - 1, Some(Duration::from_millis(100)))
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match next_message(&mut watch).await {
            WatchMessage::Events(events) => seen.extend(events),
            WatchMessage::Progress(_) => {}
            WatchMessage::Expired => panic!("unexpected expiry"),
        }
    }
    let kinds: Vec<EventKind> = seen.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::Created, EventKind::Updated, EventKind::Deleted]
    );
    let revisions: Vec<u64> = seen.iter().map(Event::revision).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    assert_eq!(seen[2].kv.value, b"2", "a deletion carries the last value");

    // Live changes follow, each exactly once, with progress notifications between.
    let live = committed_revision(&store.create("/w/b", b"b".to_vec()).await.unwrap());
    let mut live_events = Vec::new();
    let mut progress = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while progress.is_none_or(|p| p < live) {
        assert!(Instant::now() < deadline, "no progress notification");
        match next_message(&mut watch).await {
            WatchMessage::Events(events) => live_events.extend(events),
            WatchMessage::Progress(revision) => progress = Some(revision),
            WatchMessage::Expired => panic!("unexpected expiry"),
        }
    }
    assert_eq!(live_events.len(), 1);
    assert_eq!(live_events[0].kv.key, "/w/b");
    store.shutdown().await;
}

#[tokio::test]
async fn watch_from_a_compacted_revision_expires() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = Tuning {
        history_revisions: 5,
        ..test_tuning()
    };
    let store = member(&dir, None, tuning).await;
    let first = committed_revision(&store.create("/c/0", b"0".to_vec()).await.unwrap());
    for idx in 1..20 {
        store
            .create(&format!("/c/{idx}"), b"v".to_vec())
            .await
            .unwrap();
    }
    match store.watch("/c/", first, None) {
        Err(Error::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (first, first + 20 - 5))
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    let recent = store.revision() - 2;
    let mut watch = store.watch("/c/", recent, None).unwrap();
    let WatchMessage::Events(events) = next_message(&mut watch).await else {
        panic!("expected events")
    };
    assert_eq!(events.len(), 2);
    store.shutdown().await;
}

#[tokio::test]
async fn concurrent_compare_and_swap_has_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store = member(&dir, None, test_tuning()).await;
    store.create("/cas/counter", b"0".to_vec()).await.unwrap();
    for round in 0..5 {
        let (kv, _) = store
            .get("/cas/counter", Consistency::Linearizable)
            .await
            .unwrap();
        let revision = kv.unwrap().mod_revision;
        let mut writers = tokio::task::JoinSet::new();
        for writer in 0..8 {
            let store = store.clone();
            writers.spawn(async move {
                store
                    .update(
                        "/cas/counter",
                        format!("{round}-{writer}").into_bytes(),
                        Some(revision),
                    )
                    .await
                    .unwrap()
            });
        }
        let outcomes = writers.join_all().await;
        let winners = outcomes
            .iter()
            .filter(|o| matches!(o, TxnOutcome::Committed { .. }))
            .count();
        assert_eq!(winners, 1, "round {round}: {outcomes:?}");
        assert!(outcomes.iter().all(|o| matches!(
            o,
            TxnOutcome::Committed { .. }
                | TxnOutcome::Failed {
                    precondition: Precondition::RevisionMismatch { .. },
                    ..
                }
        )));
    }
    store.shutdown().await;
}

#[tokio::test]
async fn restart_recovers_log_state_and_membership() {
    let dir = tempfile::tempdir().unwrap();
    let store = member(&dir, None, test_tuning()).await;
    let node_id = store.node_id();
    let address = store.address().to_owned();
    for idx in 0..50 {
        store
            .create(&format!("/r/{idx:02}"), vec![idx])
            .await
            .unwrap();
    }
    let revision = store.revision();
    store.shutdown().await;
    drop(store);

    let store = reopen(&dir, &address, test_tuning()).await;
    assert_eq!(store.node_id(), node_id, "the member keeps its identity");
    wait_until("leadership after restart", || store.is_leader()).await;
    let all = store
        .range("/r/", None, 0, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(all.kvs.len(), 50);
    assert_eq!(all.kvs[7].value, vec![7]);
    assert!(all.revision >= revision);
    assert_eq!(
        store.members(),
        vec![Member {
            node_id,
            address,
            voter: true
        }]
    );
    committed_revision(&store.create("/r/after", b"x".to_vec()).await.unwrap());
    store.shutdown().await;
}

/// Data directories for three members.
fn three_dirs() -> [TempDir; 3] {
    [
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    ]
}

/// Starts three members: the first initializes, the others join it.
async fn three_members(dirs: &[TempDir; 3], tuning: &Tuning) -> Vec<Store> {
    let first = member(&dirs[0], None, tuning.clone()).await;
    wait_until("first leader", || first.is_leader()).await;
    let second = member(&dirs[1], Some(&first), tuning.clone()).await;
    let third = member(&dirs[2], Some(&second), tuning.clone()).await;
    let stores = vec![first, second, third];
    wait_until("three voters", || {
        stores[0].members().iter().filter(|m| m.voter).count() == 3
    })
    .await;
    stores
}

fn leader_of(stores: &[Store]) -> Option<usize> {
    stores.iter().position(Store::is_leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_forward_and_fail_over() {
    let dirs = three_dirs();
    let tuning = test_tuning();
    let mut stores = three_members(&dirs, &tuning).await;
    let ids: BTreeSet<NodeId> = stores.iter().map(Store::node_id).collect();
    assert_eq!(ids.len(), 3);

    // Writes through any member; linearizable reads on any member see them.
    for (idx, store) in stores.iter().enumerate() {
        committed_revision(
            &store
                .create(&format!("/m/{idx}"), vec![u8::try_from(idx).unwrap()])
                .await
                .unwrap(),
        );
        for reader in &stores {
            assert_eq!(
                value(reader, &format!("/m/{idx}"), Consistency::Linearizable).await,
                Some(vec![u8::try_from(idx).unwrap()])
            );
        }
    }

    // Stop the leader: the other two elect a new one and keep accepting writes.
    let old_leader = leader_of(&stores).expect("a leader");
    let stopped = stores.remove(old_leader);
    stopped.shutdown().await;
    wait_until("a new leader", || leader_of(&stores).is_some()).await;
    for store in &stores {
        committed_revision(
            &store
                .create(&format!("/m/after-{}", store.node_id()), b"x".to_vec())
                .await
                .unwrap(),
        );
    }
    for store in &stores {
        assert_eq!(
            store
                .range("/m/", None, 0, Consistency::Linearizable)
                .await
                .unwrap()
                .kvs
                .len(),
            5
        );
    }
    for store in &stores {
        store.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_a_snapshot_catches_up_after_restart() {
    let dirs = three_dirs();
    let tuning = Tuning {
        snapshot_after_logs: 50,
        logs_kept_after_snapshot: 5,
        ..test_tuning()
    };
    let mut stores = three_members(&dirs, &tuning).await;

    // Stop a follower, write enough for snapshots and log purges, restart it.
    let follower = (0..3).find(|idx| !stores[*idx].is_leader()).unwrap();
    let follower_address = stores[follower].address().to_owned();
    let stopped = stores.remove(follower);
    stopped.shutdown().await;
    drop(stopped);
    for idx in 0..300 {
        stores[0]
            .create(&format!("/s/{idx:03}"), format!("v{idx}").into_bytes())
            .await
            .unwrap();
    }
    let target = stores[0].revision();
    let restarted = reopen(&dirs[follower], &follower_address, tuning.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while restarted.revision() < target {
        assert!(
            Instant::now() < deadline,
            "follower stuck at {} of {target}",
            restarted.revision()
        );
        sleep(Duration::from_millis(50)).await;
    }
    let page = restarted
        .range("/s/", None, 0, Consistency::Stale)
        .await
        .unwrap();
    assert_eq!(page.kvs.len(), 300);
    assert_eq!(page.kvs[299].value, b"v299");
    stores.push(restarted);
    for store in &stores {
        store.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_can_be_removed() {
    let dirs = three_dirs();
    let tuning = test_tuning();
    let stores = three_members(&dirs, &tuning).await;
    let leader = leader_of(&stores).unwrap();
    let victim = (leader + 1) % 3;
    let victim_id = stores[victim].node_id();
    // Ask a member that is not the leader: it forwards.
    stores[victim].remove(victim_id).await.unwrap();
    wait_until("two members", || stores[leader].members().len() == 2).await;
    assert!(
        stores[leader]
            .members()
            .iter()
            .all(|m| m.node_id != victim_id)
    );
    committed_revision(
        &stores[leader]
            .create("/rm/after", b"x".to_vec())
            .await
            .unwrap(),
    );
    for store in &stores {
        store.shutdown().await;
    }
}

#[tokio::test]
async fn restart_loads_the_snapshot_and_replays_the_log_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = Tuning {
        snapshot_after_logs: 20,
        logs_kept_after_snapshot: 2,
        ..test_tuning()
    };
    let store = member(&dir, None, tuning.clone()).await;
    let address = store.address().to_owned();
    for idx in 0..105u8 {
        store
            .create(&format!("/snap/{idx:03}"), vec![idx])
            .await
            .unwrap();
    }
    store.delete("/snap/000", None).await.unwrap();
    let revision = store.revision();
    store.shutdown().await;
    drop(store);
    assert!(dir.path().join("state.redb").metadata().unwrap().len() > 0);

    let store = reopen(&dir, &address, tuning).await;
    wait_until("leadership after restart", || store.is_leader()).await;
    let page = store
        .range("/snap/", None, 0, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(page.kvs.len(), 104);
    assert_eq!(page.kvs[0].key, "/snap/001");
    assert_eq!(page.kvs[103].value, vec![104]);
    assert_eq!(
        store.revision(),
        revision,
        "the revision survives, no entry applied twice"
    );
    // Watches from before the snapshot expire; from now on they work.
    assert!(matches!(
        store.watch("/snap/", 1, None),
        Err(Error::Compacted { .. })
    ));
    store.shutdown().await;
}

#[tokio::test]
async fn a_stale_snapshot_never_replaces_a_newer_one_and_gates_purges() {
    use openraft::storage::SnapshotMeta;
    use openraft::{CommittedLeaderId, LogId};

    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_state(dir.path()).unwrap();
    let (durable, mut mark) = tokio::sync::watch::channel(None);
    let meta = |index: u64| SnapshotMeta::<NodeId, openraft::BasicNode> {
        last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
        last_membership: Default::default(),
        snapshot_id: format!("s{index}"),
    };
    state_machine::persist_snapshot(db.clone(), &durable, meta(10), b"ten".to_vec())
        .await
        .unwrap();
    assert_eq!(*mark.borrow_and_update(), Some(10));
    // A build that started before the newer snapshot was installed finishes late.
    state_machine::persist_snapshot(db.clone(), &durable, meta(5), b"five".to_vec())
        .await
        .unwrap();
    let (stored, data) = state_machine::load_snapshot(&db).unwrap().unwrap();
    assert_eq!(
        (stored.snapshot_id.as_str(), data.as_slice()),
        ("s10", b"ten".as_slice())
    );
    assert_eq!(
        *mark.borrow(),
        Some(10),
        "the durable mark never moves back"
    );
}

#[tokio::test]
async fn a_snapshot_install_expires_only_watches_from_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let hub = WatchHub::new();
    let machine = StateMachine::open(
        Db::open_state(dir.path()).unwrap(),
        hub.clone(),
        100,
        tokio::sync::watch::channel(None).0,
    )
    .unwrap();
    let reader = machine.reader();
    let tasks = tokio_util::task::TaskTracker::new();
    let cancel = tokio_util::sync::CancellationToken::new();
    // Both watches stand at revision 0; a snapshot at 0 loses them nothing, one at 5 does.
    let mut current = hub
        .watch(&reader, "/", 0, None, &tasks, cancel.clone())
        .unwrap();
    hub.reset(0);
    let event = Event {
        kind: EventKind::Created,
        kv: KeyValue {
            key: "/a".into(),
            value: b"v".to_vec(),
            create_revision: 1,
            mod_revision: 1,
        },
        prev: None,
    };
    hub.publish(vec![event.clone()], 1);
    assert_eq!(
        next_message(&mut current).await,
        WatchMessage::Events(vec![event])
    );
    hub.reset(5);
    assert_eq!(next_message(&mut current).await, WatchMessage::Expired);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), current.next())
            .await
            .unwrap()
            .is_none(),
        "an expired watch ends"
    );
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
}

/// Every key under `/` as it is stored, with the revision the read observed.
async fn everything(store: &Store) -> (Vec<KeyValue>, u64) {
    let all = store
        .range("/", None, 0, Consistency::Linearizable)
        .await
        .unwrap();
    (all.kvs, all.revision)
}

fn revision_of(kvs: &[KeyValue], key: &str) -> u64 {
    kvs.iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.mod_revision)
        .unwrap()
}

/// Fills a store with 300 keys, then updates some and deletes others.
async fn fill(store: &Store) {
    for idx in 0..300 {
        store
            .create(&format!("/b/{idx:03}"), format!("v{idx}").into_bytes())
            .await
            .unwrap();
    }
    for idx in (0..300).step_by(7) {
        store
            .update(&format!("/b/{idx:03}"), b"updated".to_vec(), None)
            .await
            .unwrap();
    }
    for idx in (0..300).step_by(5) {
        store.delete(&format!("/b/{idx:03}"), None).await.unwrap();
    }
}

/// The entries of a directory, for checking nothing was left behind.
fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_snapshot_restores_into_a_new_cluster_at_the_same_revision() {
    let source_dir = tempfile::tempdir().unwrap();
    let source = member(&source_dir, None, test_tuning()).await;
    wait_until("leadership", || source.is_leader()).await;
    fill(&source).await;
    let (kvs, revision) = everything(&source).await;
    assert_eq!(kvs.len(), 300 - 60);

    // Save through the peer port, as `snapshot save` does.
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("backup.snap");
    let printed = crate::admin::save_snapshot(
        source.address(),
        std::path::Path::new("/nonexistent"),
        &file,
    )
    .await
    .unwrap();
    let size = std::fs::metadata(&file).unwrap().len();
    assert_eq!(
        printed,
        format!(
            "Snapshot saved at {} (revision {revision}, 240 keys, {size} bytes)\n",
            file.display()
        )
    );
    assert_eq!(
        entries(backups.path()),
        ["backup.snap"],
        "no temp file left"
    );
    source.shutdown().await;

    let targets = tempfile::tempdir().unwrap();
    let data_dir = targets.path().join("restored");
    let info = snapshot::restore(&file, &data_dir).unwrap();
    assert_eq!(
        (info.revision, info.keys, info.bytes),
        (revision, 240, size)
    );
    assert_eq!(entries(&data_dir), [snapshot::RESTORE_FILE]);

    let config = Config {
        data_dir: data_dir.clone(),
        listen_peer: "127.0.0.1:0".parse().unwrap(),
        advertise_peer: None,
        join: Vec::new(),
        tls: None,
        tuning: test_tuning(),
    };
    let restored = Store::open(config.clone()).await.unwrap();
    wait_until("leadership of the restored member", || restored.is_leader()).await;
    assert!(
        !data_dir.join(snapshot::RESTORE_FILE).exists(),
        "the import consumes the file"
    );
    assert_eq!(
        restored.members(),
        vec![Member {
            node_id: restored.node_id(),
            address: restored.address().to_owned(),
            voter: true
        }],
        "membership is reset to the new member"
    );
    assert_eq!(everything(&restored).await, (kvs.clone(), revision));
    assert_eq!(
        restored
            .get("/b/000", Consistency::Linearizable)
            .await
            .unwrap(),
        (None, revision),
        "deleted keys stay deleted"
    );

    // History before the snapshot is gone; watches from its revision on work.
    match restored.watch("/b/", revision - 1, None) {
        Err(Error::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (revision - 1, revision + 1))
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    let mut watch = restored.watch("/b/", revision, None).unwrap();
    let after = committed_revision(&restored.create("/b/new", b"n".to_vec()).await.unwrap());
    assert_eq!(after, revision + 1, "writes continue after the snapshot");
    let WatchMessage::Events(events) = next_message(&mut watch).await else {
        panic!("expected events")
    };
    assert_eq!(events[0].kv.key, "/b/new");
    assert_eq!(
        committed_revision(
            &restored
                .update(
                    "/b/001",
                    b"again".to_vec(),
                    Some(revision_of(&kvs, "/b/001"))
                )
                .await
                .unwrap()
        ),
        revision + 2,
        "compare-and-swap sees the restored revisions"
    );
    let address = restored.address().to_owned();
    let node_id = restored.node_id();
    drop(watch);
    restored.shutdown().await;
    drop(restored);

    // The restored data survives a restart.
    let restarted = Store::open(Config {
        listen_peer: address.parse().unwrap(),
        ..config
    })
    .await
    .unwrap();
    assert_eq!(restarted.node_id(), node_id);
    wait_until("leadership after restart", || restarted.is_leader()).await;
    let (after_restart, revision_after_restart) = everything(&restarted).await;
    assert_eq!(revision_after_restart, revision + 2);
    assert_eq!(after_restart.len(), 241);
    assert_eq!(
        value(&restarted, "/b/001", Consistency::Linearizable).await,
        Some(b"again".to_vec())
    );
    assert_eq!(
        committed_revision(&restarted.create("/b/later", b"l".to_vec()).await.unwrap()),
        revision + 3
    );

    // The restored cluster takes new members, which catch up from its snapshot.
    let joiner_dir = tempfile::tempdir().unwrap();
    let joiner = member(&joiner_dir, Some(&restarted), test_tuning()).await;
    wait_until("two voters", || {
        restarted.members().iter().filter(|m| m.voter).count() == 2
    })
    .await;
    let (on_joiner, _) = everything(&joiner).await;
    assert_eq!(on_joiner.len(), 242);
    assert_eq!(
        value(&joiner, "/b/002", Consistency::Linearizable).await,
        Some(b"v2".to_vec())
    );
    joiner.shutdown().await;
    restarted.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_saves_a_linearizable_snapshot() {
    let dirs = three_dirs();
    let stores = three_members(&dirs, &test_tuning()).await;
    let leader = leader_of(&stores).unwrap();
    let follower = &stores[(leader + 1) % 3];
    for idx in 0..20 {
        stores[leader]
            .create(&format!("/f/{idx}"), vec![idx])
            .await
            .unwrap();
    }
    // Acknowledged by the leader just now; the follower's copy must include it.
    let last = committed_revision(
        &stores[leader]
            .create("/f/last", b"x".to_vec())
            .await
            .unwrap(),
    );
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("f.snap");
    crate::admin::save_snapshot(
        follower.address(),
        std::path::Path::new("/nonexistent"),
        &file,
    )
    .await
    .unwrap();
    let info = snapshot::verify(&file).unwrap();
    assert!(info.revision >= last, "{} < {last}", info.revision);
    assert_eq!(info.keys, 21);
    for store in &stores {
        store.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_snapshots_and_used_targets_are_refused_without_leftovers() {
    let source_dir = tempfile::tempdir().unwrap();
    let source = member(&source_dir, None, test_tuning()).await;
    wait_until("leadership", || source.is_leader()).await;
    fill(&source).await;
    let backups = tempfile::tempdir().unwrap();
    let good = backups.path().join("good.snap");
    crate::admin::save_snapshot(
        source.address(),
        std::path::Path::new("/nonexistent"),
        &good,
    )
    .await
    .unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let damaged = [
        (
            "flipped.snap",
            flipped,
            "is corrupt: sha256 checksum mismatch",
        ),
        (
            "truncated.snap",
            bytes[..bytes.len() - 100].to_vec(),
            "is truncated",
        ),
        (
            "foreign.snap",
            b"{\"not\": \"a snapshot\"}".to_vec(),
            "is not a skiff snapshot (no SKIFFSNAP1 header)",
        ),
    ];
    let targets = tempfile::tempdir().unwrap();
    for (name, content, expected) in damaged {
        let file = backups.path().join(name);
        std::fs::write(&file, content).unwrap();
        let error = snapshot::restore(&file, &targets.path().join(name))
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{name}: {error}");
        assert!(error.starts_with(&file.display().to_string()), "{error}");
        assert_eq!(error.lines().count(), 1, "{error}");
    }
    assert!(entries(targets.path()).is_empty(), "no partial data dir");

    // A target that is not empty is left alone.
    let used = targets.path().join("used");
    std::fs::create_dir(&used).unwrap();
    std::fs::write(used.join("keep"), b"k").unwrap();
    let error = snapshot::restore(&good, &used).unwrap_err().to_string();
    assert_eq!(
        error,
        format!(
            "restore target {} exists and is not an empty directory",
            used.display()
        )
    );
    assert_eq!(entries(&used), ["keep"]);
    // An empty one is filled.
    let empty = targets.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    snapshot::restore(&good, &empty).unwrap();
    assert_eq!(entries(&empty), [snapshot::RESTORE_FILE]);

    // A restore file in a member that already ran, or with --join, is refused at start.
    std::fs::copy(&good, source_dir.path().join(snapshot::RESTORE_FILE)).unwrap();
    let address = source.address().to_owned();
    source.shutdown().await;
    drop(source);
    let config = Config {
        data_dir: source_dir.path().to_owned(),
        listen_peer: address.parse().unwrap(),
        advertise_peer: None,
        join: Vec::new(),
        tls: None,
        tuning: test_tuning(),
    };
    let Err(error) = Store::open(config.clone()).await else {
        panic!("a member that already ran must not import a snapshot")
    };
    assert!(format!("{:#}", anyhow::Error::from(error)).contains("its member has already run"),);
    let Err(error) = Store::open(Config {
        data_dir: empty.clone(),
        join: vec![address],
        ..config
    })
    .await
    else {
        panic!("a restored member must not join another cluster")
    };
    assert!(format!("{:#}", anyhow::Error::from(error)).contains("start it without --join"));
    assert!(
        empty.join(snapshot::RESTORE_FILE).exists(),
        "the import is left for a later start"
    );
}

// Mutual TLS between members: certificates from a test CA, with IP SANs for 127.0.0.1.

/// A certificate for 127.0.0.1 signed by `ca`, naming `common_name` in `group`.
fn certificate(ca: &skiff_pki::Ca, common_name: &str, group: &str) -> skiff_pki::KeyPair {
    ca.issue(&skiff_pki::Issue {
        common_name: common_name.to_owned(),
        organizations: vec![group.to_owned()],
        dns_names: Vec::new(),
        ips: vec!["127.0.0.1".parse().unwrap()],
        usage: skiff_pki::Usage::ServerAndClient,
        validity_days: 1,
    })
    .expect("issue a certificate")
}

/// What a member named `name` of the cluster under `ca` gets: the CA and its peer
/// certificate.
fn peer_tls(ca: &skiff_pki::Ca, name: &str) -> PeerTls {
    PeerTls {
        ca_pem: ca.cert_pem.clone(),
        identity: certificate(ca, &format!("system:skiff-peer:{name}"), PEER_GROUP),
    }
}

/// Opens a member with `tls`, joining through `join` (empty: a new cluster).
async fn tls_member(dir: &TempDir, tls: PeerTls, join: Vec<String>) -> Result<Store> {
    Store::open(Config {
        data_dir: dir.path().to_owned(),
        listen_peer: "127.0.0.1:0".parse().unwrap(),
        advertise_peer: None,
        join,
        tls: Some(tls),
        tuning: test_tuning(),
    })
    .await
}

/// Calls `Members` on the member at `address` as a client with `tls`.
async fn members_as(tls: Option<PeerTls>, address: &str) -> Result<(), tonic::Status> {
    let peers = network::Peers::new(tls);
    let mut client = peers.raft(address).expect("a valid address");
    let request = tonic::Request::new(skiff_proto::store::MembersRequest {});
    tokio::time::timeout(Duration::from_secs(10), client.members(request))
        .await
        .expect("an answer within 10 s")
        .map(|_| ())
}

#[test]
fn peer_urls_use_https_with_tls() {
    assert_eq!(peer_url("10.0.0.1:2380", true), "https://10.0.0.1:2380");
    assert_eq!(peer_url("10.0.0.1:2380", false), "http://10.0.0.1:2380");
    assert_eq!(peer_url("https://a:2380", false), "https://a:2380");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_over_mutual_tls_elect_replicate_and_forward() {
    let ca = skiff_pki::Ca::generate("skiff-test-ca").unwrap();
    let dirs = three_dirs();
    let first = tls_member(&dirs[0], peer_tls(&ca, "a"), Vec::new())
        .await
        .unwrap();
    wait_until("first leader", || first.is_leader()).await;
    let second = tls_member(
        &dirs[1],
        peer_tls(&ca, "b"),
        vec![first.address().to_owned()],
    )
    .await
    .unwrap();
    // The join list is tried in order: a dead address first is skipped.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_address = dead.local_addr().unwrap().to_string();
    drop(dead);
    let third = tls_member(
        &dirs[2],
        peer_tls(&ca, "c"),
        vec![dead_address, second.address().to_owned()],
    )
    .await
    .unwrap();
    let stores = [first, second, third];
    wait_until("three voters", || {
        stores[0].members().iter().filter(|m| m.voter).count() == 3
    })
    .await;
    let leader = leader_of(&stores).expect("a leader");

    // A transaction on the leader replicates to every member.
    let revision = committed_revision(
        &stores[leader]
            .txn(Txn {
                ops: vec![
                    Op::Create {
                        key: "/tls/a".to_owned(),
                        value: b"1".to_vec(),
                    },
                    Op::Create {
                        key: "/tls/b".to_owned(),
                        value: b"2".to_vec(),
                    },
                ],
            })
            .await
            .unwrap(),
    );
    for store in &stores {
        wait_until("replication", || store.revision() >= revision).await;
        assert_eq!(
            value(store, "/tls/b", Consistency::Stale).await,
            Some(b"2".to_vec())
        );
    }

    // A follower forwards a write to the leader and reads it back linearizably.
    let follower = (0..3).find(|idx| *idx != leader).unwrap();
    committed_revision(
        &stores[follower]
            .create("/tls/forwarded", b"f".to_vec())
            .await
            .unwrap(),
    );
    for store in &stores {
        assert_eq!(
            value(store, "/tls/forwarded", Consistency::Linearizable).await,
            Some(b"f".to_vec())
        );
    }
    for store in &stores {
        store.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_port_admits_only_peer_certificates_from_the_cluster_ca() {
    let ca = skiff_pki::Ca::generate("skiff-test-ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = tls_member(&dir, peer_tls(&ca, "a"), Vec::new())
        .await
        .unwrap();
    let address = store.address().to_owned();

    // Another peer certificate from the CA is admitted.
    members_as(Some(peer_tls(&ca, "ops")), &address)
        .await
        .expect("a peer certificate is admitted");

    // A node certificate from the same CA passes the handshake but is no peer.
    let node = PeerTls {
        ca_pem: ca.cert_pem.clone(),
        identity: certificate(&ca, "system:node:n1", "system:nodes"),
    };
    let refused = members_as(Some(node.clone()), &address).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert_eq!(refused.message(), "peer certificate required");
    let mut kv = network::Peers::new(Some(node)).kv(&address).unwrap();
    let write = kv
        .txn(service::txn_to_proto(&Txn {
            ops: vec![Op::Create {
                key: "/tls/node".to_owned(),
                value: Vec::new(),
            }],
        }))
        .await
        .unwrap_err();
    assert_eq!(write.code(), tonic::Code::PermissionDenied, "{write:?}");

    // A peer certificate from another CA fails the handshake.
    let other_ca = skiff_pki::Ca::generate("other-ca").unwrap();
    let stranger = PeerTls {
        ca_pem: ca.cert_pem.clone(),
        identity: certificate(&other_ca, "system:skiff-peer:x", PEER_GROUP),
    };
    let refused = members_as(Some(stranger), &address).await.unwrap_err();
    assert_ne!(refused.code(), tonic::Code::Ok, "{refused:?}");

    // Plain HTTP/2 gets no answer either.
    let refused = members_as(None, &address).await.unwrap_err();
    assert_ne!(refused.code(), tonic::Code::Ok, "{refused:?}");

    assert_eq!(
        value(&store, "/tls/node", Consistency::Linearizable).await,
        None
    );
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_with_the_wrong_ca_or_a_non_peer_certificate_fails_at_once() {
    let ca = skiff_pki::Ca::generate("skiff-test-ca").unwrap();
    let dirs = three_dirs();
    let first = tls_member(&dirs[0], peer_tls(&ca, "a"), Vec::new())
        .await
        .unwrap();
    wait_until("first leader", || first.is_leader()).await;
    let join = vec![first.address().to_owned()];

    // The joiner does not trust the cluster's certificates (nor the cluster its).
    let started = Instant::now();
    let other_ca = skiff_pki::Ca::generate("other-ca").unwrap();
    let error = tls_member(&dirs[1], peer_tls(&other_ca, "b"), join.clone())
        .await
        .err()
        .expect("joining with another CA fails");
    let message = error.to_string();
    assert!(matches!(error, Error::PeerAuth { .. }), "{error:?}");
    assert!(
        message.starts_with(&format!("mutual TLS with the member at {}", join[0]))
            && message.contains("certificate"),
        "{message}"
    );
    assert!(!error.is_retryable());

    // The joiner trusts the CA but holds a node certificate: the cluster refuses it.
    let node = PeerTls {
        ca_pem: ca.cert_pem.clone(),
        identity: certificate(&ca, "system:node:n1", "system:nodes"),
    };
    let error = tls_member(&dirs[2], node, join)
        .await
        .err()
        .expect("joining with a node certificate fails");
    assert!(
        error.to_string().ends_with("peer certificate required"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the failures were not retried until the join timeout"
    );
    assert_eq!(first.members().len(), 1);
    first.shutdown().await;
}
