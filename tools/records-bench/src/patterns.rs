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
