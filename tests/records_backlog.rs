//! A records service away for longer than the switchboard keeps events in
//! memory: later events wait in the spool only, are read back as the service
//! acknowledges, and every event arrives exactly once.
//! Runs on SQLite and on PostgreSQL (see `records_common::postgres_db`).

mod records_common;

use std::time::Duration;

use courtline::contract::connect::ClientOptions;
use courtline::contract::pb::ListGapsRequest;
use courtline::switchboard::delivery::sender::{RecordDelivery, RecordSender};
use courtline::switchboard::delivery::spool::{read_entries, Spool};
use records_common::*;
use tokio::net::TcpListener;

/// Delivery may hold this many events in memory in this test.
const IN_MEMORY: usize = 8;

/// A switchboard's records delivery from the spool at `dir` to `endpoint`,
/// holding at most [`IN_MEMORY`] events in memory.
fn start_delivery(dir: &std::path::Path, endpoint: String) -> (RecordSender, RecordDelivery) {
    let (spool, recovered) = Spool::open(dir, Some("sb-backlog")).unwrap();
    RecordSender::spawn_bounded(spool, recovered, ClientOptions::new(endpoint), IN_MEMORY)
}

async fn backlog_beyond_memory_is_read_back_from_the_spool(db: Db) {
    // The service's port is taken now; the service starts on it only later,
    // so the switchboard's first attempts wait in the listen backlog.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let spool_dir = db.dir.path().join("spool");
    let (sender, delivery) = start_delivery(&spool_dir, format!("http://{address}"));
    for n in 1..=60 {
        sender.send(record(n));
    }
    // All on disk (the start-up event and 60 records) before the service starts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while read_entries(&spool_dir).unwrap().len() < 61 {
        assert!(tokio::time::Instant::now() < deadline, "never spooled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let service = Service::start_on(listener, &settings(&db)).await;
    drop(sender);
    let stats = delivery.finish(Duration::from_secs(30)).await;
    assert_eq!(
        (stats.delivered, stats.left_in_spool),
        (61, 0),
        "every event once: {stats:?}"
    );
    assert!(
        stats.read_back >= (61 - IN_MEMORY) as u64,
        "all but the first {IN_MEMORY} waited on disk: {stats:?}"
    );
    let mut client = service.client(None).await;
    for n in 1..=60 {
        client
            .get_call(courtline::contract::pb::GetCallRequest {
                call_id: call_id(n),
            })
            .await
            .unwrap_or_else(|status| panic!("call {n}: {status}"));
    }
    let gaps = client
        .list_gaps(ListGapsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(gaps.gaps.is_empty(), "{:?}", gaps.gaps);
    // Everything acknowledged: nothing left to send after a restart.
    let (_, recovered) = Spool::open(&spool_dir, Some("sb-backlog")).unwrap();
    assert!(recovered.unacked.is_empty(), "{}", recovered.unacked.len());
    service.stop().await;
}

/// Stopped before the service ever came: what waited on disk only is counted
/// as left in the spool, and the next start finds all of it.
async fn backlog_left_at_shutdown_is_counted_and_recovered(db: Db) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let spool_dir = db.dir.path().join("spool");
    let (sender, delivery) = start_delivery(&spool_dir, format!("http://{address}"));
    for n in 1..=30 {
        sender.send(record(n));
    }
    drop(sender);
    let stats = delivery.finish(Duration::from_millis(500)).await;
    assert_eq!((stats.delivered, stats.left_in_spool), (0, 31), "{stats:?}");
    assert_eq!(read_entries(&spool_dir).unwrap().len(), 31);

    // The next start hands only IN_MEMORY of them to delivery at first, and
    // still delivers all of them once the service is there.
    let service = Service::start(&settings(&db)).await;
    let (sender, delivery) = start_delivery(&spool_dir, service.endpoint());
    drop(sender);
    let stats = delivery.finish(Duration::from_secs(30)).await;
    // The 31 from before and this start's own start-up event.
    assert_eq!((stats.delivered, stats.left_in_spool), (32, 0), "{stats:?}");
    assert!(stats.read_back >= (32 - IN_MEMORY) as u64, "{stats:?}");
    service.stop().await;
}

on_both_backends!(
    backlog_beyond_memory_is_read_back_from_the_spool,
    backlog_left_at_shutdown_is_counted_and_recovered,
);
