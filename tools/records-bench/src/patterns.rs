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

/// Calls each repeat caller of [`synthesize`] makes, about 5 days apart.
const REPEAT_CALLS: u64 = 6;

/// Fills `caller_days` directly with the rows `calls` calls leave, without storing
/// the calls (10 M through the ledger take ~25 min here): what the pattern queries
/// read at that many stored calls. A `repeat_share` of them come from callers who
/// call one court 6 times within a month (3 or 8 days apart, a fresh month each,
/// anywhere in the year); the rest from one-time callers (one row each, the worst
/// case for reading a whole range). All spread over the year before `end_ms`, 20
/// lines of 5 courts, one in ten a hang-up in the warning, one in twenty after
/// hours, one in 100,000 flagged; and the planted broker's six rows.
pub async fn synthesize(
    store: &SqlStore,
    calls: u64,
    repeat_share: f64,
    end_ms: i64,
) -> anyhow::Result<()> {
    let first_day = end_ms / DAY_MS - 365;
    let repeat_calls = ((calls as f64 * repeat_share.clamp(0.0, 1.0)) as u64).min(calls);
    let once = calls - repeat_calls;
    let (numbers, number, repeat_number) = match store.backend() {
        Backend::Sqlite => (
            "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) SELECT i FROM n)",
            "printf('1%010d', i * 997)",
            "printf('2%010d', c * 997)",
        ),
        Backend::Postgres => (
            "(SELECT generate_series(1::bigint, {count}) AS i)",
            "'1' || lpad((i * 997)::text, 10, '0')",
            "'2' || lpad((c * 997)::text, 10, '0')",
        ),
    };
    let numbers = |count: u64| numbers.replace("{count}", &count.to_string());
    let columns = "caller_number, day, court_name, line_number, calls, hung_up_in_warning, \
        after_hours, flags, reports, since_previous_days";
    let started = Instant::now();
    if once > 0 {
        sqlx::query(&format!(
            "INSERT INTO caller_days ({columns}) \
             SELECT {number}, {first_day} + (i * 365) / {once}, \
             '上海市第' || (i % 5 + 1) || '中级人民法院', '021' || (12000 + i % 20), 1, \
             CASE WHEN i % 10 = 0 THEN 1 ELSE 0 END, CASE WHEN i % 20 = 7 THEN 1 ELSE 0 END, \
             CASE WHEN i % 100000 = 0 THEN 1 ELSE 0 END, 0, NULL FROM {} AS numbers",
            numbers(once)
        ))
        .execute(store.pool())
        .await?;
    }
    if repeat_calls > 0 {
        // Caller c's call j on day start(c) + 5j + (c + 3j) % 5: one court (c % 5),
        // its four lines in turn; the gap to call j - 1 is 3 or 8 days.
        let offset = "((c + 3 * j) % 5)";
        let previous_offset = "((c + 3 * j - 3) % 5)";
        sqlx::query(&format!(
            "INSERT INTO caller_days ({columns}) \
             SELECT {repeat_number}, {first_day} + (c * 7919) % 335 + 5 * j + {offset}, \
             '上海市第' || (c % 5 + 1) || '中级人民法院', '021' || (12000 + c % 5 + 5 * (j % 4)), 1, \
             CASE WHEN i % 10 = 0 THEN 1 ELSE 0 END, CASE WHEN i % 20 = 7 THEN 1 ELSE 0 END, \
             CASE WHEN i % 100000 = 0 THEN 1 ELSE 0 END, 0, \
             CASE WHEN j = 0 THEN NULL ELSE 5 + {offset} - {previous_offset} END \
             FROM (SELECT i, (i - 1) / {REPEAT_CALLS} AS c, (i - 1) % {REPEAT_CALLS} AS j \
                   FROM {} AS numbers) AS calls",
            numbers(repeat_calls)
        ))
        .execute(store.pool())
        .await?;
    }
    for n in 0..6i64 {
        // Two courts a day; `since_previous_days` as the store keeps it.
        let since_previous = match n {
            0 => "NULL",
            _ if n % 2 == 1 => "0",
            _ => "1",
        };
        sqlx::query(&format!(
            "INSERT INTO caller_days ({columns}) VALUES ('13700000001', {}, \
             '掮客测试法院{n}', '02113{n:03}', 1, 0, 0, 0, 0, {since_previous})",
            end_ms / DAY_MS - 3 + n / 2
        ))
        .execute(store.pool())
        .await?;
    }
    // PostgreSQL: as autovacuum leaves a table written long ago (the visibility map
    // set, so the covering indexes are read alone).
    let analyze = match store.backend() {
        Backend::Sqlite => "ANALYZE",
        Backend::Postgres => "VACUUM ANALYZE caller_days",
    };
    sqlx::query(analyze).execute(store.pool()).await?;
    println!(
        "caller_days filled with the rows of {calls} calls ({repeat_calls} from callers \
         calling {REPEAT_CALLS} times a month) in {:.0} s",
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
