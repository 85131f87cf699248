//! The admin endpoint of `courtline records serve` (`[admin] listen`), scraped over
//! HTTP from real child processes: a service alone on its database, SQLite or
//! PostgreSQL (its own sequencer, derived tables never behind, readiness following
//! the database's migration),
//! and two services on one PostgreSQL database (exactly one sequencer, staged
//! events seen while appends are held up, the derived tables' lag while the
//! follower is held up, both back to 0, the standby taking over when the
//! sequencer is killed). `promtool check metrics` accepts every scrape.
//! The PostgreSQL tests are skipped (with a message) without PostgreSQL.

mod records_common;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use courtline::contract::pb::{LogEventsRequest, NodeEvent};
use courtline::records::store::{Backend, SqlStore, Store, APPEND_LOCK};
use records_common::child::{ServiceChild, SharedPair};
use records_common::*;
use sqlx::Connection;
use support::serve_child::{http_get, metric_value, promtool, run_promtool};
use tokio::time::{sleep, Instant};

/// `/metrics` of the admin endpoint at `admin`, checked by `promtool`.
async fn scrape(admin: SocketAddr) -> String {
    let (status, text) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    if let Some(promtool) = promtool() {
        run_promtool(promtool, &["check", "metrics"], &text);
    }
    text
}

/// The value of the unlabelled metric `name` in `text` (it must be there).
fn value(text: &str, name: &str) -> f64 {
    metric_value(text, name)
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .parse()
        .unwrap()
}

/// Scrapes `admin` until `done` holds for the metrics (up to 10 s); the last scrape.
async fn scrape_until(admin: SocketAddr, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, text) = http_get(admin, "/metrics").await;
        if status == 200 && done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "never {what}; last scrape:\n{text}"
        );
        sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `events` as one switchboard batch; returns once the service acknowledged them.
async fn log_events(service: &ServiceChild, events: Vec<NodeEvent>) {
    service
        .client()
        .await
        .log_events(LogEventsRequest { events })
        .await
        .unwrap();
}

async fn a_lone_service_shows_its_chain_and_its_readiness_follows_the_migration(db: Db) {
    let dir = db.dir.path();
    let service = ServiceChild::alone(dir, "r", &db.url, &dir.join("signing.key"));
    let process = service.start().await;
    let admin = process.admin;

    assert_eq!(http_get(admin, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(http_get(admin, "/readyz").await, (200, "ready\n".into()));
    // Nothing to reload in a records service: the route is not there.
    assert_eq!(http_get(admin, "/reload").await.0, 404);

    let before = scrape(admin).await;
    assert_eq!(value(&before, "courtline_records_sequencer"), 1.0);
    assert_eq!(value(&before, "courtline_records_database_up"), 1.0);
    assert_eq!(
        value(&before, "courtline_records_events_ingested_total"),
        0.0
    );
    assert_eq!(value(&before, "courtline_records_derived_lag_events"), 0.0);
    assert_eq!(value(&before, "courtline_records_derived_lag_seconds"), 0.0);
    // Staging belongs to a shared database.
    assert!(
        !before.contains("courtline_records_staged_events"),
        "{before}"
    );
    let head = value(&before, "courtline_records_chain_head");
    assert!(head >= 1.0, "{before}");

    let mut events = vec![node_started()];
    events.extend(complete_calls(0..5));
    log_events(&service, numbered("sb-1", 1, events)).await;
    let after = scrape(admin).await;
    assert_eq!(
        value(&after, "courtline_records_events_ingested_total"),
        21.0
    );
    assert!(
        value(&after, "courtline_records_chain_head") >= head + 21.0,
        "{after}"
    );
    assert_eq!(value(&after, "courtline_records_derived_lag_events"), 0.0);

    // A newer courtline migrated the database: this one is not ready, and says why.
    let store = SqlStore::open(&db.url).await.unwrap();
    let checksum = match store.backend() {
        Backend::Sqlite => "x'00'",
        Backend::Postgres => "'\\x00'::BYTEA",
    };
    sqlx::query(&format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from a newer courtline', TRUE, {checksum}, 0)"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    let (status, text) = http_get(admin, "/readyz").await;
    assert_eq!(status, 503, "{text}");
    assert!(
        text.starts_with("schema: ") && text.contains("9999"),
        "{text}"
    );
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 9999")
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    assert_eq!(http_get(admin, "/readyz").await, (200, "ready\n".into()));
}

on_both_backends!(a_lone_service_shows_its_chain_and_its_readiness_follows_the_migration);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_show_one_sequencer_the_staged_events_and_the_followers_lag() {
    let Some(db) = postgres_db().await else {
        return;
    };
    let SharedPair {
        b,
        mut first,
        second,
        ..
    } = SharedPair::start(db.dir.path(), &db.url).await;
    let sequencer_of = |text: &str| value(text, "courtline_records_sequencer");

    // A holds the sequencer's lock; B cannot have it.
    let (text_a, text_b) = (scrape(first.admin).await, scrape(second.admin).await);
    assert_eq!((sequencer_of(&text_a), sequencer_of(&text_b)), (1.0, 0.0));
    for admin in [first.admin, second.admin] {
        assert_eq!(http_get(admin, "/readyz").await, (200, "ready\n".into()));
    }

    // A switchboard's start, through B: staged there, chained by A, derived by A's
    // follower. (A restart makes the chaining bring the derived tables up first.)
    log_events(&b, numbered("sb-1", 1, vec![node_started()])).await;
    let caught_up = |text: &str| {
        value(text, "courtline_records_staged_events") == 0.0
            && value(text, "courtline_records_derived_lag_events") == 0.0
    };
    let text = scrape_until(first.admin, "chained and derived the start", |text| {
        value(text, "courtline_records_events_ingested_total") == 1.0 && caught_up(text)
    })
    .await;
    let head = value(&text, "courtline_records_chain_head");

    // Appends held up (the test holds the chain's append lock): events are
    // acknowledged and staged, and wait.
    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(APPEND_LOCK)
        .execute(&mut holder)
        .await
        .unwrap();
    log_events(&b, numbered("sb-1", 2, complete_calls(0..10))).await;
    for admin in [first.admin, second.admin] {
        let text = scrape(admin).await;
        assert_eq!(value(&text, "courtline_records_staged_events"), 40.0);
        assert_eq!(value(&text, "courtline_records_chain_head"), head);
    }
    let text_b = scrape(second.admin).await;
    assert_eq!(
        value(&text_b, "courtline_records_events_staged_total"),
        41.0
    );
    assert_eq!(
        value(&text_b, "courtline_records_events_ingested_total"),
        0.0
    );

    // The follower held up (the test holds the watermark's row), appends let go:
    // the events are chained, the derived tables stay behind, and say so.
    let mut watermark = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut watermark).await.unwrap();
    sqlx::query("SELECT through_seq FROM derived_through WHERE one = 1 FOR UPDATE")
        .execute(&mut watermark)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(APPEND_LOCK)
        .execute(&mut holder)
        .await
        .unwrap();
    // (A scrape's reads are not one snapshot: the head may be read just before the
    // commit that empties staging.)
    let text = scrape_until(first.admin, "chained the staged events", |text| {
        value(text, "courtline_records_staged_events") == 0.0
            && value(text, "courtline_records_events_ingested_total") == 41.0
            && value(text, "courtline_records_chain_head") >= head + 40.0
    })
    .await;
    let chained = value(&text, "courtline_records_chain_head");
    for admin in [first.admin, second.admin] {
        let text = scrape_until(admin, "saw the lag grow old", |text| {
            value(text, "courtline_records_derived_lag_seconds") > 0.0
        })
        .await;
        assert!(
            value(&text, "courtline_records_derived_lag_events") >= 40.0,
            "{text}"
        );
    }
    sqlx::query("ROLLBACK")
        .execute(&mut watermark)
        .await
        .unwrap();
    for admin in [first.admin, second.admin] {
        let text = scrape_until(admin, "caught up", caught_up).await;
        assert_eq!(value(&text, "courtline_records_derived_lag_seconds"), 0.0);
        assert!(value(&text, "courtline_records_chain_head") >= chained);
    }

    // The sequencer killed: B takes the lock over, and says so.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let text = scrape_until(second.admin, "took the sequencer over", |text| {
        sequencer_of(text) == 1.0
    })
    .await;
    assert_eq!(value(&text, "courtline_records_database_up"), 1.0);
    scrape(second.admin).await;
}
