//! `--shared`: two records services on one PostgreSQL database (`shared_database`),
//! served on loopback in this process, with switchboard clients split between them
//! (BENCHMARKS.md, "Several records services on one PostgreSQL"). Measures the
//! combined ingest (events acknowledged, i.e. committed to staging, per second), the
//! sequencer's chaining rate behind it, and how long a batch sent to an idle pair
//! takes from acknowledgement to the chain.

use std::time::{Duration, Instant};

use courtline::contract::connect::{connect, ClientOptions};
use courtline::contract::pb::{LogEventsRequest, NodeEvent};
use courtline::records::service::{OpenedService, ServiceSettings};
use sqlx::postgres::PgPool;

use super::{call, call_event, Args, Rng, CALL_EVENTS};

/// Staged events not chained yet.
async fn backlog(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM staged_events")
        .fetch_one(pool)
        .await?)
}

/// Waits until staging is empty; returns when it was seen so (polled every 2 ms, by
/// the oldest staged row's index entry: counting the staging table every 2 ms kept one
/// of the two cores busy reading it, and slowed the sequencer being measured).
async fn chained(pool: &PgPool) -> anyhow::Result<Instant> {
    loop {
        let waiting: Option<i64> =
            sqlx::query_scalar("SELECT arrival FROM staged_events ORDER BY arrival LIMIT 1")
                .fetch_optional(pool)
                .await?;
        if waiting.is_none() {
            return Ok(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Switchboard `node`'s events: `calls` calls, seven events each, `concurrent` at a time.
fn node_events(node: u64, calls: u64, args: &Args) -> Vec<NodeEvent> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ node);
    let mut events = Vec::new();
    let mut first = 0;
    while first < calls {
        let last = (first + args.concurrent_calls.max(1)).min(calls);
        let group: Vec<_> = (first..last)
            .map(|n| {
                call(
                    node * 10_000_000 + n,
                    args.calls,
                    args.v4_call_ids,
                    &mut rng,
                )
            })
            .collect();
        first = last;
        for step in CALL_EVENTS {
            for record in &group {
                let mut event = call_event(record, step, events.len() as u64 + 1);
                event.node_id = format!("bench-{node}");
                events.push(event);
            }
        }
    }
    events
}

/// Runs the measurement with `settings` (a new PostgreSQL database).
pub async fn measure(settings: &ServiceSettings, args: &Args) -> anyhow::Result<()> {
    let mut stops = Vec::new();
    let mut servers = Vec::new();
    let mut endpoints = Vec::new();
    for _ in 0..2 {
        let mut opened = OpenedService::open(settings).await?;
        opened.share_database(&settings.database).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        endpoints.push(format!("http://{}", listener.local_addr()?));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        servers.push(tokio::spawn(opened.serve(listener, async {
            let _ = stopped.await;
        })));
    }
    let pool = PgPool::connect(&settings.database).await?;
    let switchboards = args.switchboards.max(2);
    let calls = args.ingest_events / CALL_EVENTS.len() as u64 / switchboards;
    let total = calls * CALL_EVENTS.len() as u64 * switchboards;
    let batches: Vec<Vec<Vec<NodeEvent>>> = (0..switchboards)
        .map(|node| {
            node_events(node, calls, args)
                .chunks(args.batch)
                .map(<[NodeEvent]>::to_vec)
                .collect()
        })
        .collect();

    // 1. Combined ingest: every switchboard sends its batches one after another.
    let started = Instant::now();
    let mut senders = Vec::new();
    for (node, batches) in batches.into_iter().enumerate() {
        let endpoint = endpoints[node % 2].clone();
        senders.push(tokio::spawn(async move {
            let mut client = connect(&ClientOptions::new(endpoint)).await?;
            for events in batches {
                client.log_events(LogEventsRequest { events }).await?;
            }
            anyhow::Ok(())
        }));
    }
    for sender in senders {
        sender.await??;
    }
    let acknowledged = started.elapsed();
    let waiting = backlog(&pool).await?;
    let all_chained = chained(&pool).await?.duration_since(started);
    println!(
        "shared ingest: {total} events from {switchboards} switchboards (batch {}) over 2 services: \
         acknowledged in {:.2} s = {:.0} events/s together; {waiting} still staged then; \
         all chained after {:.2} s = {:.0} events/s through the sequencer",
        args.batch,
        acknowledged.as_secs_f64(),
        total as f64 / acknowledged.as_secs_f64(),
        all_chained.as_secs_f64(),
        total as f64 / all_chained.as_secs_f64(),
    );

    // 2. Latency on an idle pair: one switchboard's batch, acknowledged, then chained.
    let mut client = connect(&ClientOptions::new(endpoints[0].clone())).await?;
    let node = switchboards + 1;
    let events = node_events(node, (args.repeat as u64 * 1000).div_ceil(7), args);
    let mut samples = Vec::new();
    for batch in events.chunks(1000).take(args.repeat) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client
            .log_events(LogEventsRequest {
                events: batch.to_vec(),
            })
            .await?;
        let acked = Instant::now();
        samples.push(chained(&pool).await?.duration_since(acked));
    }
    samples.sort();
    println!(
        "sequencer latency, acknowledged to chained, batches of 1000 on an idle pair: median {:.1} ms, max {:.1} ms ({} batches)",
        samples[samples.len() / 2].as_secs_f64() * 1000.0,
        samples[samples.len() - 1].as_secs_f64() * 1000.0,
        samples.len()
    );
    for stop in stops {
        let _ = stop.send(());
    }
    for server in servers {
        server.await??;
    }
    pool.close().await;
    Ok(())
}
