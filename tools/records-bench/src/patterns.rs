//! `--patterns`: how long each pattern query (`ListPatterns` over gRPC, access event
//! included) takes on the generated store, at its documented defaults, over the last
//! 7, 30 and 90 days of the data; with one planted broker (6 courts in 3 days) so
//! the answers are not all empty.

use std::time::{Duration, Instant};

use courtline::contract::connect::RecordsClient;
use courtline::contract::pb::node_event::Kind;
use courtline::contract::pb::{CallRecord, EndReason, ListPatternsRequest, NodeEvent};
use courtline::records::ledger::Ledger;
use courtline::records::patterns::{defaults, kind_name, KINDS};
use courtline::records::store::{Backend, SqlStore};

/// Ranges measured, days before the end of the data.
const RANGES: [i64; 3] = [7, 30, 90];
/// A day in ms.
const DAY_MS: i64 = 86_400_000;

/// Stores the planted broker's six calls through `ledger`, as a switchboard of its own.
pub async fn plant_broker(ledger: &Ledger, end_ms: i64) -> anyhow::Result<()> {
    let events = (0..6u64)
        .map(|n| {
            let received = end_ms - 3 * DAY_MS + n as i64 * 8 * 3_600_000;
            let record = CallRecord {
                call_id: uuid::Uuid::new_v4().to_string(),
                sip_call_id: format!("broker-{n}@bench"),
                line_number: format!("021{:05}", 13_000 + n),
                court_name: format!("掮客测试法院{n}"),
                caller_number: "13700000001".into(),
                received_at_ms: received,
                ended_at_ms: received + 60_000,
                end_reason: EndReason::OperatorHungUp as i32,
                ..CallRecord::default()
            };
            NodeEvent {
                node_id: "bench-broker".into(),
                node_seq: 1 + n,
                at_ms: received,
                call_id: record.call_id.clone(),
                kind: Some(Kind::Ended(record)),
            }
        })
        .collect();
    ledger.ingest(events).await?;
    Ok(())
}

/// Fills `caller_days` directly with the rows `calls` one-time callers leave (one
/// row each, spread over the year before `end_ms`, 20 lines of 5 courts, one in ten
/// a hang-up in the warning, one in twenty after hours, one in 100,000 flagged) and
/// the planted broker's six: what the pattern queries read at that many stored
/// calls, without storing the calls (10 M through the ledger take ~25 min here).
pub async fn synthesize(store: &SqlStore, calls: u64, end_ms: i64) -> anyhow::Result<()> {
    let first_day = end_ms / DAY_MS - 365;
    let (rows, number) = match store.backend() {
        Backend::Sqlite => (
            format!("(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {calls}) SELECT i FROM n)"),
            "printf('1%010d', i * 997)",
        ),
        Backend::Postgres => (
            format!("(SELECT generate_series(1::bigint, {calls}) AS i)"),
            "'1' || lpad((i * 997)::text, 10, '0')",
        ),
    };
    let started = Instant::now();
    sqlx::query(&format!(
        "INSERT INTO caller_days (caller_number, day, court_name, line_number, calls, \
         hung_up_in_warning, after_hours, flags, reports) \
         SELECT {number}, {first_day} + (i * 365) / {calls}, \
         '上海市第' || (i % 5 + 1) || '中级人民法院', '021' || (12000 + i % 20), 1, \
         CASE WHEN i % 10 = 0 THEN 1 ELSE 0 END, CASE WHEN i % 20 = 7 THEN 1 ELSE 0 END, \
         CASE WHEN i % 100000 = 0 THEN 1 ELSE 0 END, 0 FROM {rows} AS numbers"
    ))
    .execute(store.pool())
    .await?;
    for n in 0..6i64 {
        sqlx::query(&format!(
            "INSERT INTO caller_days (caller_number, day, court_name, line_number, calls, \
             hung_up_in_warning, after_hours, flags, reports) VALUES ('13700000001', {}, \
             '掮客测试法院{n}', '02113{n:03}', 1, 0, 0, 0, 0)",
            end_ms / DAY_MS - 3 + n / 2
        ))
        .execute(store.pool())
        .await?;
    }
    sqlx::query("ANALYZE").execute(store.pool()).await?;
    println!(
        "caller_days filled with the rows of {calls} calls in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Measures every pattern over each range ending `end_ms`, `repeat` times each.
pub async fn measure(client: &mut RecordsClient, end_ms: i64, repeat: usize) -> anyhow::Result<()> {
    for days in RANGES {
        for kind in KINDS {
            let request = ListPatternsRequest {
                kind: kind as i32,
                since_ms: end_ms - days * DAY_MS,
                until_ms: end_ms,
                ..ListPatternsRequest::default()
            };
            let mut samples = Vec::new();
            let mut hits = 0;
            for _ in 0..repeat.max(1) {
                let started = Instant::now();
                hits = client
                    .list_patterns(request.clone())
                    .await?
                    .into_inner()
                    .hits
                    .len();
                samples.push(started.elapsed());
            }
            samples.sort();
            let median: Duration = samples[samples.len() / 2];
            let (threshold, window) = defaults(kind);
            println!(
                "ListPatterns {} (threshold {threshold}, window {window} days) over the last {days} days: median {:.1} ms, max {:.1} ms over {} runs, {hits} hits",
                kind_name(kind),
                median.as_secs_f64() * 1000.0,
                samples.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
                samples.len()
            );
        }
    }
    Ok(())
}
