//! Two real `courtline records serve` processes on one PostgreSQL database
//! (`[records.service] shared_database`): switchboard clients spread their events
//! over both, the service holding the sequencer's lock is killed with SIGKILL mid-run,
//! the other takes over, and in the end every node's sequence is whole, nothing is
//! chained twice, and the one chain verifies from its first event with every
//! checkpoint signature checked — from either service, and by `records verify`.
//! Skipped (with a message) without PostgreSQL, like the other PostgreSQL tests.

mod records_common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use courtline::contract::connect::{connect, ClientOptions, RecordsClient};
use courtline::contract::pb::node_event::Kind;
use courtline::contract::pb::{
    AccessEntry, ListCallsRequest, ListGapsRequest, LogEventsRequest, VerifyRequest,
};
use courtline::contract::pb::{CallState, Milestone};
use courtline::records::chain::HashAlgorithm;
use courtline::records::ledger::follower::{self, Applied};
use courtline::records::ledger::sequencer::plan;
use courtline::records::ledger::signing::RecordsKey;
use courtline::records::ledger::staging::{self, Staging};
use courtline::records::ledger::{CheckpointPolicy, IngestOutcome, Ledger, LedgerError};
use courtline::records::store::{SqlStore, Store};
use courtline::records::verify::verify;
use records_common::child::SharedPair;
use records_common::*;
use tokio::time::{sleep, Instant};

/// Switchboards sending events.
const NODES: u32 = 4;
/// Calls per switchboard (four events each, after its start event).
const CALLS: u32 = 400;
/// Events per `LogEvents`, as a switchboard's sender batches them.
const BATCH: usize = 50;

/// What one switchboard sends: its start, then `CALLS` complete calls.
fn node_events(node: u32) -> Vec<courtline::contract::pb::NodeEvent> {
    let first_call = node * 10_000;
    let mut events = vec![node_started()];
    events.extend(complete_calls(first_call..first_call + CALLS));
    numbered(&format!("sb-{node}"), 1, events)
}

/// Sends node `node`'s events in batches, at least once each, as the spool's sender
/// does: to `endpoints[0]` first, to the other one whenever a request fails.
async fn switchboard(node: u32, endpoints: [String; 2], acked: Arc<AtomicU64>) {
    let mut which = 0;
    let mut client: Option<RecordsClient> = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    for batch in node_events(node).chunks(BATCH) {
        loop {
            assert!(Instant::now() < deadline, "sb-{node} cannot deliver");
            if client.is_none() {
                client = connect(&ClientOptions::new(endpoints[which].clone()))
                    .await
                    .ok();
            }
            let sent = match client.as_mut() {
                Some(client) => client
                    .log_events(LogEventsRequest {
                        events: batch.to_vec(),
                    })
                    .await
                    .is_ok(),
                None => false,
            };
            if sent {
                break;
            }
            client = None;
            which = 1 - which;
            sleep(Duration::from_millis(100)).await;
        }
        acked.fetch_add(batch.len() as u64, Ordering::Relaxed);
        sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_one_chain_sequencer_killed_nothing_lost_or_doubled() {
    let Some(db) = postgres_db().await else {
        return;
    };
    let SharedPair {
        a,
        b,
        mut first,
        second: _second,
    } = SharedPair::start(db.dir.path(), &db.url).await;

    // Switchboards 0 and 1 deliver to A, 2 and 3 to B; each moves when its service fails.
    let acked = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = (0..NODES)
        .map(|node| {
            let endpoints = if node < NODES / 2 {
                [a.endpoint(), b.endpoint()]
            } else {
                [b.endpoint(), a.endpoint()]
            };
            tokio::spawn(switchboard(node, endpoints, acked.clone()))
        })
        .collect();
    // Both services record their own events meanwhile (every query is an access event).
    let (endpoint_a, endpoint_b) = (a.endpoint(), b.endpoint());
    let readers = tokio::spawn(async move {
        for round in 0..40 {
            let endpoint = if round % 2 == 0 {
                &endpoint_a
            } else {
                &endpoint_b
            };
            if let Ok(mut client) = connect(&ClientOptions::new(endpoint.clone())).await {
                let _ = client.list_calls(ListCallsRequest::default()).await;
            }
            sleep(Duration::from_millis(50)).await;
        }
    });

    // SIGKILL the sequencer a third of the way in.
    let total = u64::from(NODES) * (1 + 4 * u64::from(CALLS));
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::Relaxed) < total / 3 {
        assert!(
            Instant::now() < deadline,
            "the switchboards made no progress"
        );
        sleep(Duration::from_millis(10)).await;
    }
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "A died by itself"
    );
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let killed_at = Instant::now();
    b.wait_for_log("now the sequencer", 1).await;
    eprintln!("B took over {:?} after A was killed", killed_at.elapsed());

    for sender in senders {
        sender.await.unwrap();
    }
    readers.await.unwrap();
    assert_eq!(acked.load(Ordering::Relaxed), total);

    // A comes back as a standby; both answer from the one chain.
    let _first = a.start().await;
    let mut client_b = b.client().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let nodes = loop {
        let gaps = client_b
            .list_gaps(ListGapsRequest {})
            .await
            .unwrap()
            .into_inner();
        let chained: u64 = gaps.nodes.iter().map(|node| node.events).sum();
        if chained == total {
            assert!(gaps.gaps.is_empty(), "{:?}", gaps.gaps);
            break gaps.nodes;
        }
        assert!(
            Instant::now() < deadline,
            "{chained} of {total} events chained: {:?}",
            gaps.nodes
        );
        sleep(Duration::from_millis(200)).await;
    };
    // Every node whole, each event once: count and highest sequence number agree.
    assert_eq!(nodes.len(), NODES as usize);
    for node in &nodes {
        assert_eq!(node.events, 1 + 4 * u64::from(CALLS), "{node:?}");
        assert_eq!(node.highest_seq, node.events, "{node:?}");
    }
    // B's follower took over from A's watermark: every call's row once, each ended.
    let store = SqlStore::open(&db.url).await.unwrap();
    derived_at_head(&store).await;
    let states = table_rows(&db, "calls", &["state"], "call_id").await;
    assert_eq!(states.len(), (NODES * CALLS) as usize);
    let ended = (CallState::Ended as i32).to_string();
    assert!(states.iter().all(|state| *state == ended), "{states:?}");
    store.close().await;
    for service in [&a, &b] {
        let report = service
            .client()
            .await
            .verify(VerifyRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert!(report.events_checked > total, "{report:?}");
        assert!(report.checkpoints_checked >= 2, "{report:?}");
    }
    // The command line, straight on the database, trusting the deployment's key.
    let out = Command::new(courtline_bin())
        .arg("--config")
        .arg(&b.config)
        .args(["records", "verify", "--database", &db.url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A ledger on `db` as one service opens it, with the deployment's key.
async fn ledger(db: &Db, key: &Path) -> (Ledger, Arc<SqlStore>) {
    let store = Arc::new(SqlStore::open(&db.url).await.unwrap());
    let policy = CheckpointPolicy {
        every_events: 40,
        every: Duration::from_secs(600),
    };
    let shared: Arc<dyn Store> = store.clone();
    let key = RecordsKey::load_or_create(key).unwrap();
    let ledger = Ledger::open(shared, HashAlgorithm::Sha256, key, policy, None)
        .await
        .unwrap();
    (ledger, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_own_events_join_one_chain_and_the_schema_refuses_a_fork() {
    let Some(db) = postgres_db().await else {
        return;
    };
    let key = db.dir.path().join("deployment-signing.key");
    RecordsKey::load_or_create(&key).unwrap();
    // Both open the empty database at once: one of them starts the chain.
    let ((a, store), (b, _)) = tokio::join!(ledger(&db, &key), ledger(&db, &key));
    // Each service records its own accesses, at the same time as the other.
    let accesses = |ledger: Ledger, name: &'static str| async move {
        for n in 0..150 {
            ledger
                .record_access(AccessEntry {
                    at_ms: 1_700_000_000_000 + n,
                    actor: name.into(),
                    operation: "ListCalls".into(),
                    ..AccessEntry::default()
                })
                .await
                .unwrap();
        }
        ledger.checkpoint_if_due().await.unwrap();
    };
    tokio::join!(accesses(a.clone(), "a"), accesses(b.clone(), "b"));
    let pool = store.pool();
    let count = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM events WHERE kind = 'chain_started'").await,
        1
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM events WHERE kind = 'access'").await,
        300
    );
    let trusted = [a.key().public_key().to_bytes()];
    let report = courtline::records::verify::verify(store.as_ref(), &trusted, None)
        .await
        .unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert!(report.checkpoints_checked >= 2, "{report:?}");
    assert_eq!(b.head().await, a.head().await);

    // A second event after the head's predecessor, at a free position: a fork, refused.
    let fork = sqlx::query(
        "INSERT INTO events (seq, kind, node_id, node_seq, call_id, at_ms, stored_at_ms, body, body_digest, prev_hash, hash) \
         SELECT seq + 1, kind, node_id, node_seq, call_id, at_ms, stored_at_ms, body, body_digest, prev_hash, hash \
         FROM events ORDER BY seq DESC LIMIT 1",
    )
    .execute(pool)
    .await
    .unwrap_err();
    assert!(fork.to_string().contains("events_one_successor"), "{fork}");
    // One at a position taken: refused too.
    let taken = sqlx::query(
        "INSERT INTO events (seq, kind, at_ms, stored_at_ms, body_digest, prev_hash, hash) \
         SELECT seq, kind, at_ms, stored_at_ms, body_digest, hash, hash FROM events ORDER BY seq DESC LIMIT 1",
    )
    .execute(pool)
    .await
    .unwrap_err();
    assert!(taken.to_string().contains("events_pkey"), "{taken}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_is_idempotent_across_services_and_refuses_a_different_event_under_a_key() {
    let Some(db) = postgres_db().await else {
        return;
    };
    let key = db.dir.path().join("deployment-signing.key");
    let (ledger, _store) = ledger(&db, &key).await;
    let a = Staging::open(&db.url, HashAlgorithm::Sha256).await.unwrap();
    let b = Staging::open(&db.url, HashAlgorithm::Sha256).await.unwrap();
    let outcome = |stored, duplicates| IngestOutcome { stored, duplicates };
    let batch = numbered("sb-1", 1, complete_calls([1, 2]));
    assert_eq!(a.stage(batch.clone()).await.unwrap(), outcome(8, 0));
    // The switchboard failed over and sent it again, to the other service.
    assert_eq!(b.stage(batch.clone()).await.unwrap(), outcome(0, 8));
    // A different event under a key already staged: refused, like the ledger refuses it.
    let other = numbered("sb-1", 2, vec![milestone(9, Milestone::Answered)]);
    assert!(matches!(
        b.stage(other.clone()).await,
        Err(LedgerError::Conflict { node_seq: 2, .. })
    ));
    // Chained and taken out of staging: a late redelivery is still a duplicate.
    let staged = a.oldest(100).await.unwrap();
    assert_eq!(staged.len(), 8);
    let events = staged.iter().map(|row| row.event().unwrap()).collect();
    let outcomes = ledger
        .ingest_batches(vec![events], staging::unstage)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].as_ref().unwrap(), &outcome(8, 0));
    assert_eq!(a.backlog().await.unwrap(), 0);
    assert_eq!(b.stage(batch).await.unwrap(), outcome(0, 8));
    assert!(matches!(
        a.stage(other).await,
        Err(LedgerError::Conflict { node_seq: 2, .. })
    ));
    assert_eq!(a.backlog().await.unwrap(), 0);
}

/// Staging looks a dense batch's keys up by one range from its least to its greatest
/// key, and a sparse one key by key: either way the events in the gaps between them,
/// staged or chained, are no part of the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_gaps_in_its_keys_is_judged_by_its_own_keys_only() {
    let Some(db) = postgres_db().await else {
        return;
    };
    let key = db.dir.path().join("deployment-signing.key");
    let (ledger, _store) = ledger(&db, &key).await;
    let staging = Staging::open(&db.url, HashAlgorithm::Sha256).await.unwrap();
    let outcome = |stored, duplicates| IngestOutcome { stored, duplicates };
    let first = numbered("sb-1", 1, complete_calls([1, 2]));
    // #1 to #8 staged; later events with gaps: #10 and #12 (#9 and #11 not sent yet).
    let later = numbered("sb-1", 9, complete_calls([3]));
    let gapped = |events: &[courtline::contract::pb::NodeEvent], keys: &[u64]| {
        events
            .iter()
            .filter(|event| keys.contains(&event.node_seq))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(staging.stage(first.clone()).await.unwrap(), outcome(8, 0));
    for chained in [false, true] {
        // Staged, then chained: #1 and #8 again are duplicates, #2 to #7 between them
        // in the range are not compared with anything sent.
        assert_eq!(
            staging.stage(gapped(&first, &[1, 8])).await.unwrap(),
            outcome(0, 2)
        );
        let mut changed = first[7].clone();
        changed.at_ms += 1;
        assert!(matches!(
            staging.stage(vec![first[0].clone(), changed]).await,
            Err(LedgerError::Conflict { node_seq: 8, .. })
        ));
        if !chained {
            let staged = staging.oldest(100).await.unwrap();
            assert_eq!(staged.len(), 8);
            let events = staged.iter().map(|row| row.event().unwrap()).collect();
            ledger
                .ingest_batches(vec![events], staging::unstage)
                .await
                .unwrap();
            assert_eq!(staging.backlog().await.unwrap(), 0);
        }
    }
    let mut batch = gapped(&first, &[8]);
    batch.extend(gapped(&later, &[10, 12]));
    assert_eq!(staging.stage(batch).await.unwrap(), outcome(2, 1));
    // #9 and #11 come late, in one batch whose range holds #10, staged.
    assert_eq!(
        staging.stage(gapped(&later, &[9, 11])).await.unwrap(),
        outcome(2, 0)
    );
    assert_eq!(staging.backlog().await.unwrap(), 4);
    // Two far-apart numbers in one batch (looked up key by key, not by the range
    // between them): #1 again is a duplicate, #1,000,000 is new.
    let far = numbered("sb-1", 1_000_000, complete_calls([4]));
    assert_eq!(
        staging
            .stage(vec![first[0].clone(), far[0].clone()])
            .await
            .unwrap(),
        outcome(1, 1)
    );
    assert_eq!(staging.backlog().await.unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_unstages_exactly_what_it_chained_and_leaves_a_refused_batch_staged() {
    let Some(db) = postgres_db().await else {
        return;
    };
    let key = db.dir.path().join("deployment-signing.key");
    let (ledger, store) = ledger(&db, &key).await;
    let staging = Staging::open(&db.url, HashAlgorithm::Sha256).await.unwrap();
    // sb-1 staged whole; sb-2 staged, then a different sb-2 #1 chained directly (a
    // switchboard whose spool was wiped, delivering to a lone service by mistake);
    // sb-3's #2 and #4 staged, #3 not yet: its runs must not take #3 when it comes.
    staging
        .stage(numbered("sb-1", 1, complete_calls([1, 2])))
        .await
        .unwrap();
    staging
        .stage(numbered("sb-2", 1, complete_calls([3])))
        .await
        .unwrap();
    let wiped = numbered("sb-2", 1, vec![milestone(9, Milestone::Answered)]);
    ledger.ingest(wiped).await.unwrap();
    let sb3 = numbered("sb-3", 1, complete_calls([4]));
    staging
        .stage(vec![sb3[1].clone(), sb3[3].clone()])
        .await
        .unwrap();
    let batches: Vec<_> = plan(staging.oldest(100).await.unwrap())
        .iter()
        .map(|batch| batch.iter().map(|row| row.event().unwrap()).collect())
        .collect();
    assert_eq!(batches.len(), 3);
    let head = ledger.head().await.0;
    let outcomes = ledger
        .ingest_batches(batches, staging::unstage)
        .await
        .unwrap();
    assert_eq!(
        outcomes[0].as_ref().unwrap(),
        &IngestOutcome {
            stored: 8,
            duplicates: 0
        }
    );
    assert!(
        matches!(&outcomes[1], Err(LedgerError::Conflict { node_seq: 1, .. })),
        "{:?}",
        outcomes[1]
    );
    assert_eq!(
        outcomes[2].as_ref().unwrap(),
        &IngestOutcome {
            stored: 2,
            duplicates: 0
        }
    );
    // The ten events follow the head, stored together; only sb-2's four wait.
    let chained = store.events_after(head, 100).await.unwrap();
    assert_eq!(chained.len(), 10, "{chained:?}");
    assert!(chained
        .iter()
        .all(|event| event.header.stored_at_ms == chained[0].header.stored_at_ms));
    assert_eq!(staging.backlog().await.unwrap(), 4);
    // sb-3 #3 arrives late and is staged; a redelivery of sb-1 is a duplicate.
    staging.stage(vec![sb3[2].clone()]).await.unwrap();
    assert_eq!(staging.backlog().await.unwrap(), 5);
    assert_eq!(
        staging
            .stage(numbered("sb-1", 1, complete_calls([1, 2])))
            .await
            .unwrap(),
        IngestOutcome {
            stored: 0,
            duplicates: 8
        }
    );
}

/// Every row of `table` (`columns`, each as text, NULL as `NULL`), in `order`: what a
/// drain and one-at-a-time ingest must leave alike, `since_previous_days` included.
async fn table_rows(db: &Db, table: &str, columns: &[&str], order: &str) -> Vec<String> {
    sqlx::any::install_default_drivers();
    let url = if db.postgres.is_some() {
        db.url.clone()
    } else {
        format!("sqlite://{}", db.url)
    };
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let row: Vec<String> = columns
        .iter()
        .map(|column| format!("COALESCE(CAST({column} AS TEXT), 'NULL')"))
        .collect();
    let sql = format!(
        "SELECT {} AS row FROM {table} ORDER BY {order}",
        row.join(" || '|' || ")
    );
    let rows = sqlx::query_scalar(&sql).fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows
}

/// The call rows, dashboard figures and `caller_days` of `db`, compared as text.
async fn projections(db: &Db) -> Vec<Vec<String>> {
    let calls = [
        "call_id",
        "caller_display_name",
        "received_at_ms",
        "prompt_started_at_ms",
        "ended_at_ms",
        "end_reason",
        "prompts",
        "media",
        "state",
        "flagged",
        "node_id",
        "last_seq",
        // Not `first_seq`: a drain writes a call's row once, at its last event in the
        // commit, and the name index only compares it with marks set at commits.
    ];
    let figures = [
        "day",
        "court_name",
        "calls",
        "warning_completed",
        "hung_up_in_warning",
        "connected",
        "answer_ms_sum",
        "answered",
        "answered_5s",
        "answered_30s",
    ];
    let caller_days = [
        "caller_number",
        "day",
        "court_name",
        "line_number",
        "calls",
        "hung_up_in_warning",
        "after_hours",
        "since_previous_days",
    ];
    vec![
        table_rows(db, "calls", &calls, "call_id").await,
        table_rows(db, "daily_court_figures", &figures, "day, court_name").await,
        table_rows(
            db,
            "caller_days",
            &caller_days,
            "caller_number, day, court_name, line_number",
        )
        .await,
    ]
}

/// A drain chains several events of one call in one commit and writes the call's row
/// once (its last state), with the dashboard figures and `caller_days` summed per key:
/// it must leave exactly what chaining the same events one at a time leaves — with a
/// call's events in one drain, calls spanning two drains, a switchboard's later events
/// chained before its earlier ones, a caller calling twice, and a caller name with a
/// quote, a backslash and a tab.
async fn a_drain_leaves_what_one_event_at_a_time_leaves(db: Db) {
    let other = match db.postgres {
        Some(_) => postgres_db().await.unwrap(),
        None => sqlite_db(),
    };
    drain_against_one_at_a_time(db, other).await;
}

on_both_backends!(a_drain_leaves_what_one_event_at_a_time_leaves);

/// PostgreSQL writes an append's rows as one `UNNEST` of typed arrays per table, SQLite
/// as multi-row `VALUES`: drains on PostgreSQL leave what one event at a time leaves
/// on SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_arrays_on_postgres_leave_what_values_on_sqlite_leave() {
    if let Some(db) = postgres_db().await {
        drain_against_one_at_a_time(db, sqlite_db()).await;
    }
}

/// Chains the same events into `db` in two drains and into `other` one at a time, and
/// compares the call rows, figures and `caller_days` they leave; both chains verify.
async fn drain_against_one_at_a_time(db: Db, other: Db) {
    let interleaved = |numbers: std::ops::RangeInclusive<u32>| -> Vec<_> {
        let calls: Vec<_> = numbers
            .map(|n| {
                complete_calls([n])
                    .into_iter()
                    .map(|mut event| {
                        // Calls 3 and 5 come from one caller; call 4's name has a quote, a backslash, a tab.
                        let record = match &mut event.kind {
                            Some(Kind::Milestone(m)) => m.snapshot.as_mut(),
                            Some(Kind::Ended(record)) => Some(record),
                            _ => None,
                        };
                        if let Some(record) = record {
                            if n == 5 {
                                record.caller_number = record_number(3);
                            }
                            if n == 4 {
                                record.caller_display_name = "王\"五\\\t（律师）".into();
                            }
                        }
                        event
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        // Step by step across the calls, as a busy switchboard sends them.
        (0..4)
            .flat_map(|step| calls.iter().map(move |call| call[step].clone()))
            .collect()
    };
    let sb1 = numbered("sb-1", 1, interleaved(1..=6));
    let sb2 = numbered("sb-2", 1, interleaved(7..=9));
    // Drain 1: sb-1's first 14 events and sb-2's last 6; drain 2: the rest.
    let drains = [
        vec![sb1[..14].to_vec(), sb2[6..].to_vec()],
        vec![sb1[14..].to_vec(), sb2[..6].to_vec()],
    ];
    let key = db.dir.path().join("deployment-signing.key");
    let (drained, drained_store) = ledger(&db, &key).await;
    let (one_by_one, one_by_one_store) = ledger(&other, &key).await;
    for drain in &drains {
        let outcomes = drained
            .ingest_batches(drain.clone(), |_| None)
            .await
            .unwrap();
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        for event in drain.iter().flatten() {
            one_by_one.ingest(vec![event.clone()]).await.unwrap();
        }
    }
    assert_eq!(drained.head().await.0, one_by_one.head().await.0);
    let (left, right) = (projections(&db).await, projections(&other).await);
    assert_eq!(left, right);
    assert_eq!(left[0].len(), 9, "{:?}", left[0]);
    assert!(left[0].iter().any(|row| row.contains("王\"五\\\t（律师）")));
    assert!(!left[1].is_empty() && !left[2].is_empty());
    let trusted = [RecordsKey::load_or_create(&key)
        .unwrap()
        .public_key()
        .to_bytes()];
    for store in [drained_store, one_by_one_store] {
        let report = verify(store.as_ref(), &trusted, None).await.unwrap();
        assert!(report.findings.is_empty(), "{:?}", report.findings);
    }
}

/// Call `n`'s caller number as [`record`] makes it.
fn record_number(n: u32) -> String {
    record(n).caller_number
}

/// Waits (10 s at most) until the derived tables of `store` hold its chain's head: what a
/// reader of a shared database sees a moment after the events are chained.
async fn derived_at_head(store: &dyn Store) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let head = store.head().await.unwrap().map_or(0, |event| event.seq);
        let derived = store.derived_through().await.unwrap();
        if derived >= head {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the derived tables hold #{derived}, the chain is at #{head}"
        );
        sleep(Duration::from_millis(10)).await;
    }
}

/// In a shared database the follower writes calls, the dashboard figures and
/// `caller_days` after the chain. Stopped between two of its transactions, raced by a
/// second service's, and taken over by that one's follower task, it leaves exactly what
/// the chaining transaction of a lone service leaves for the same events (each call
/// once), and a switchboard's restart still marks the calls it left open interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_leaves_what_the_chaining_transaction_leaves_after_a_stop_and_a_takeover() {
    let Some(db) = postgres_db().await else {
        return;
    };
    let other = postgres_db().await.unwrap();
    let key = db.dir.path().join("deployment-signing.key");
    let (sequencer, store) = ledger(&db, &key).await;
    let (standby, _) = ledger(&db, &key).await;
    for service in [&sequencer, &standby] {
        service.derive_by_follower();
    }
    let (lone, lone_store) = ledger(&other, &key).await;
    // sb-1: six whole calls; sb-2: calls 7 and 8 left open by a restart.
    let sb1 = numbered("sb-1", 1, complete_calls(1..=6));
    let mut sb2 = vec![
        milestone(7, Milestone::Received),
        milestone(7, Milestone::Answered),
        milestone(8, Milestone::Received),
        node_started(),
    ];
    sb2 = numbered("sb-2", 1, sb2);
    let drains = [
        vec![sb1[..10].to_vec(), sb2[..3].to_vec()],
        vec![sb1[10..].to_vec(), sb2[3..].to_vec()],
    ];
    let ingest = |ledger: &Ledger, drain: &[Vec<_>]| {
        let (ledger, drain) = (ledger.clone(), drain.to_vec());
        async move {
            let outcomes = ledger.ingest_batches(drain, |_| None).await.unwrap();
            assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        }
    };

    ingest(&sequencer, &drains[0]).await;
    ingest(&lone, &drains[0]).await;
    // Chained, not derived yet: no call row.
    let head = sequencer.head().await.0;
    let from = store.derived_through().await.unwrap();
    assert!(from < head, "derived #{from}, head #{head}");
    assert!(table_rows(&db, "calls", &["call_id"], "call_id")
        .await
        .is_empty());
    // The follower stops after one transaction of five events ...
    assert_eq!(
        sequencer.apply_derived_page(5).await.unwrap(),
        Applied::Events(5)
    );
    assert_eq!(store.derived_through().await.unwrap(), from + 5);
    // ... two services then apply the next pages at once: each page is written once.
    let (a, b) = tokio::join!(
        sequencer.apply_derived_page(3),
        standby.apply_derived_page(3)
    );
    let moved = [a.unwrap(), b.unwrap()]
        .iter()
        .map(|applied| match applied {
            Applied::Events(events) => *events as i64,
            _ => 0,
        })
        .sum::<i64>();
    assert_eq!(store.derived_through().await.unwrap(), from + 5 + moved);
    // The restart is decided from rows that hold the chain up to it.
    ingest(&sequencer, &drains[1]).await;
    ingest(&lone, &drains[1]).await;
    // The standby takes over: its follower resumes from the watermark.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let following = tokio::spawn(follower::run(standby.clone(), async {
        let _ = stopped.await;
    }));
    derived_at_head(store.as_ref()).await;
    let _ = stop.send(());
    following.await.unwrap();

    // A lone service's appends keep the watermark at their head.
    assert_eq!(
        lone_store.derived_through().await.unwrap(),
        lone.head().await.0
    );
    let (left, right) = (projections(&db).await, projections(&other).await);
    assert_eq!(left, right);
    assert_eq!(left[0].len(), 8, "{:?}", left[0]);
    for n in [7, 8] {
        let call = store.get_call(&call_id(n)).await.unwrap().unwrap();
        assert_eq!(call.state, CallState::Interrupted as i32, "call {n}");
    }
    let trusted = [RecordsKey::load_or_create(&key)
        .unwrap()
        .public_key()
        .to_bytes()];
    for store in [store, lone_store] {
        let report = verify(store.as_ref(), &trusted, None).await.unwrap();
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert_eq!(report.calls_checked, 8, "{report:?}");
    }
}
