//! `--shared`: two records services on one PostgreSQL database (`shared_database`),
//! served on loopback in this process, with switchboard clients split between them
//! (BENCHMARKS.md, "Several records services on one PostgreSQL"). Measures the
//! combined ingest (events acknowledged, i.e. committed to staging, per second), the
//! sequencer's chaining rate behind it, and how long a batch sent to an idle pair
//! takes from acknowledgement to the chain.
//!
//! With `--rate EVENTS_PER_S` (and `--duration-s`), the switchboards instead offer a
//! steady rate — their batches spread evenly in time, not a burst — and the measure is
//! whether the pair keeps up: offered, acknowledged and chained rates, the staging
//! backlog over the window, and each batch's time from acknowledgement to the chain
//! (BENCHMARKS.md, "Sustained rate through two services").

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courtline::contract::connect::{connect, ClientOptions};
use courtline::contract::pb::{LogEventsRequest, NodeEvent};
use courtline::records::service::{OpenedService, ServiceSettings};
use sqlx::postgres::PgPool;
use tokio::task::JoinHandle;

use super::{call, call_event, percentile, Args, Rng, CALL_EVENTS};

/// How often the paced mode looks for chained batches: the resolution of its latencies.
const CHAINED_POLL: Duration = Duration::from_millis(10);

/// How often the paced mode keeps a sample of the backlog, for its listing per second.
const BACKLOG_POLL: Duration = Duration::from_millis(500);

/// A send later than this after its slot counts as late (the pair did not keep up).
const LATE: Duration = Duration::from_millis(100);

/// Longest the paced mode waits, once all is chained, for the derived tables to hold it.
const DERIVED_WAIT: Duration = Duration::from_secs(60);

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

/// Two records services sharing one database, served on loopback in this process.
struct Pair {
    /// Their `http://` endpoints.
    endpoints: Vec<String>,
    /// Ends each server.
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    /// The servers' tasks.
    servers: Vec<JoinHandle<Result<(), courtline::records::service::ServiceError>>>,
}

impl Pair {
    /// Opens both services on `settings.database` and serves them.
    async fn start(settings: &ServiceSettings) -> anyhow::Result<Pair> {
        let mut pair = Pair {
            endpoints: Vec::new(),
            stops: Vec::new(),
            servers: Vec::new(),
        };
        for _ in 0..2 {
            let mut opened = OpenedService::open(settings).await?;
            opened.share_database(&settings.database).await?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            pair.endpoints
                .push(format!("http://{}", listener.local_addr()?));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            pair.stops.push(stop);
            pair.servers
                .push(tokio::spawn(opened.serve(listener, async {
                    let _ = stopped.await;
                })));
        }
        Ok(pair)
    }

    /// Stops both services and waits for them.
    async fn stop(self) -> anyhow::Result<()> {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for server in self.servers {
            server.await??;
        }
        Ok(())
    }
}

/// Every switchboard's first `events_per_node` events (the last calls may be left
/// unfinished), in batches of `--batch`.
fn switchboard_batches(args: &Args, events_per_node: u64) -> Vec<Vec<Vec<NodeEvent>>> {
    let calls = events_per_node.div_ceil(CALL_EVENTS.len() as u64);
    (0..args.switchboards.max(2))
        .map(|node| {
            let mut events = node_events(node, calls, args);
            events.truncate(events_per_node as usize);
            events
                .chunks(args.batch)
                .map(<[NodeEvent]>::to_vec)
                .collect()
        })
        .collect()
}

/// Runs the measurement with `settings` (a new PostgreSQL database): the burst, or
/// with `--rate` the paced mode.
pub async fn measure(settings: &ServiceSettings, args: &Args) -> anyhow::Result<()> {
    let pair = Pair::start(settings).await?;
    let pool = PgPool::connect(&settings.database).await?;
    match args.rate {
        Some(rate) => paced(&pair, &pool, args, rate).await?,
        None => burst(&pair, &pool, args).await?,
    }
    pair.stop().await?;
    pool.close().await;
    Ok(())
}

/// One burst of `--ingest-events`, then `--repeat` batches on the idle pair.
async fn burst(pair: &Pair, pool: &PgPool, args: &Args) -> anyhow::Result<()> {
    let switchboards = args.switchboards.max(2);
    let calls = args.ingest_events / CALL_EVENTS.len() as u64 / switchboards;
    let total = calls * CALL_EVENTS.len() as u64 * switchboards;
    let batches = switchboard_batches(args, calls * CALL_EVENTS.len() as u64);

    // 1. Combined ingest: every switchboard sends its batches one after another.
    let started = Instant::now();
    let mut senders = Vec::new();
    for (node, batches) in batches.into_iter().enumerate() {
        let endpoint = pair.endpoints[node % 2].clone();
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
    let waiting = backlog(pool).await?;
    let all_chained = chained(pool).await?.duration_since(started);
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
    let mut client = connect(&ClientOptions::new(pair.endpoints[0].clone())).await?;
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
        samples.push(chained(pool).await?.duration_since(acked));
    }
    samples.sort();
    println!(
        "sequencer latency, acknowledged to chained, batches of 1000 on an idle pair: median {:.1} ms, max {:.1} ms ({} batches)",
        samples[samples.len() / 2].as_secs_f64() * 1000.0,
        samples[samples.len() - 1].as_secs_f64() * 1000.0,
        samples.len()
    );
    Ok(())
}

/// The paced mode's shared view of the batches acknowledged and not yet seen chained.
#[derive(Default)]
struct Progress {
    /// Per switchboard, its acknowledged batches not seen chained yet: their last
    /// sequence number and when they were acknowledged, oldest first.
    waiting: Vec<VecDeque<(i64, Instant)>>,
    /// Events acknowledged so far.
    acknowledged: u64,
    /// When the last acknowledgement came.
    last_acknowledged: Option<Instant>,
    /// Switchboards that sent all their batches.
    finished: u64,
}

/// What one switchboard of the paced mode did.
struct Sent {
    /// Batches sent later than [`LATE`] after their slot.
    late: u64,
    /// The latest of them, after its slot.
    latest: Duration,
    /// When its last batch was sent.
    last_sent: Instant,
}

/// `--rate` events/s offered for `--duration-s` seconds: each of the switchboards sends
/// its batches at fixed slots (the switchboards' slots interleaved evenly), one request
/// at a time, as a switchboard does; a batch whose slot passed while the previous one
/// waited for its acknowledgement goes at once and counts as late.
async fn paced(pair: &Pair, pool: &PgPool, args: &Args, rate: u64) -> anyhow::Result<()> {
    let switchboards = args.switchboards.max(2);
    let window = Duration::from_secs(args.duration_s);
    let per_node = rate * args.duration_s / switchboards;
    anyhow::ensure!(
        per_node > 0,
        "--rate {rate} for --duration-s {} is less than one event per switchboard ({switchboards})",
        args.duration_s
    );
    let batches = switchboard_batches(args, per_node);
    let total: u64 = batches
        .iter()
        .flatten()
        .map(|batch| batch.len() as u64)
        .sum();
    let nodes: Vec<String> = (0..switchboards)
        .map(|node| format!("bench-{node}"))
        .collect();
    // A switchboard's batches follow one another at `period`; switchboard n starts n/N
    // of a period in, so the pair sees a batch every period/N.
    let period = Duration::from_secs_f64(args.batch as f64 * switchboards as f64 / rate as f64);
    let progress = Arc::new(Mutex::new(Progress {
        waiting: vec![VecDeque::new(); nodes.len()],
        ..Progress::default()
    }));
    let mut clients = Vec::new();
    for node in 0..nodes.len() {
        clients.push(connect(&ClientOptions::new(pair.endpoints[node % 2].clone())).await?);
    }

    let started = Instant::now();
    let mut senders = Vec::new();
    for (node, (batches, mut client)) in batches.into_iter().zip(clients).enumerate() {
        let progress = progress.clone();
        let first = started + period.mul_f64(node as f64 / switchboards as f64);
        senders.push(tokio::spawn(async move {
            let mut sent = Sent {
                late: 0,
                latest: Duration::ZERO,
                last_sent: started,
            };
            for (slot, events) in batches.into_iter().enumerate() {
                let due = first + period * slot as u32;
                tokio::time::sleep_until(due.into()).await;
                sent.last_sent = Instant::now();
                let behind = sent.last_sent.saturating_duration_since(due);
                if behind > LATE {
                    sent.late += 1;
                    sent.latest = sent.latest.max(behind);
                }
                let count = events.len() as u64;
                let last_seq = events.last().map_or(0, |event| event.node_seq as i64);
                client.log_events(LogEventsRequest { events }).await?;
                let acknowledged = Instant::now();
                let mut progress = progress.lock().expect("progress lock");
                progress.waiting[node].push_back((last_seq, acknowledged));
                progress.acknowledged += count;
                progress.last_acknowledged = Some(acknowledged);
            }
            progress.lock().expect("progress lock").finished += 1;
            anyhow::Ok(sent)
        }));
    }

    // Watch the chain until every batch is acknowledged and seen chained. The backlog
    // is what was acknowledged less what is chained: counting the staging table, or
    // finding its oldest rows past the index entries of rows chained since the last
    // vacuum, cost PostgreSQL a fifth of its CPU at 20,000 events/s.
    let mut latencies = Vec::new();
    let mut backlogs: Vec<(Duration, u64)> = Vec::new();
    let mut max_backlog = (Duration::ZERO, 0);
    let mut at_window_end = None;
    let mut next_sample = started;
    // The follower's lag: each chain head seen (position, when), until the derived
    // tables' watermark is seen at or past it.
    let mut heads: VecDeque<(i64, Instant)> = VecDeque::new();
    let mut lags = Vec::new();
    let mut all_chained = None;
    let all_chained = loop {
        tokio::time::sleep(CHAINED_POLL).await;
        let polled = Instant::now();
        let acknowledged = progress.lock().expect("progress lock").acknowledged;
        let newest = newest_chained(pool, &nodes).await?;
        let seen = Instant::now();
        let (head, derived) = head_and_derived(pool).await?;
        let derived_seen = Instant::now();
        if heads.back().is_none_or(|&(last, _)| last < head) {
            heads.push_back((head, derived_seen));
        }
        while let Some(&(position, chained_at)) = heads.front() {
            if derived < position {
                break;
            }
            lags.push(derived_seen.duration_since(chained_at));
            heads.pop_front();
        }
        if let Some(all_chained) = all_chained {
            if heads.is_empty() || seen.duration_since(all_chained) > DERIVED_WAIT {
                break all_chained;
            }
            continue;
        }
        let chained: u64 = newest.iter().map(|seq| seq.unwrap_or(0) as u64).sum();
        let waiting = acknowledged.saturating_sub(chained);
        let at = polled.duration_since(started);
        if waiting > max_backlog.1 {
            max_backlog = (at, waiting);
        }
        if polled >= next_sample {
            backlogs.push((next_sample.duration_since(started), waiting));
            if at_window_end.is_none() && at >= window {
                at_window_end = Some((at, waiting, acknowledged));
            }
            next_sample += BACKLOG_POLL;
        }
        let mut progress = progress.lock().expect("progress lock");
        for (waiting, newest) in progress.waiting.iter_mut().zip(newest) {
            // Only batches acknowledged before the query began: its snapshot holds them.
            while let Some(&(last_seq, acknowledged)) = waiting.front() {
                if acknowledged >= polled || newest.is_none_or(|newest| newest < last_seq) {
                    break;
                }
                latencies.push(seen.duration_since(acknowledged));
                waiting.pop_front();
            }
        }
        if progress.finished == switchboards && progress.waiting.iter().all(VecDeque::is_empty) {
            all_chained = Some(seen);
        }
    };
    let mut late = 0;
    let mut latest = Duration::ZERO;
    let mut last_sent = started;
    for sender in senders {
        let sent = sender.await??;
        late += sent.late;
        latest = latest.max(sent.latest);
        last_sent = last_sent.max(sent.last_sent);
    }
    let last_acknowledged = progress
        .lock()
        .expect("progress lock")
        .last_acknowledged
        .unwrap_or(started);
    let (window_at, window_backlog, window_acknowledged) =
        at_window_end.unwrap_or((all_chained.duration_since(started), 0, total));
    let rate_of = |events: u64, over: Duration| events as f64 / over.as_secs_f64();
    let offered_for = last_sent.duration_since(started).max(window);
    let window_chained = window_acknowledged.saturating_sub(window_backlog);
    let (max_at, max_backlog) = max_backlog;
    println!(
        "paced shared ingest: {rate} events/s for {} s from {switchboards} switchboards (batch {}) over 2 services",
        args.duration_s, args.batch
    );
    println!(
        "offered {total} events in {:.2} s = {:.0} events/s ({late} batches late by over {} ms, at most {:.0} ms); \
         acknowledged, last after {:.2} s = {:.0} events/s",
        offered_for.as_secs_f64(),
        rate_of(total, offered_for),
        LATE.as_millis(),
        latest.as_secs_f64() * 1000.0,
        last_acknowledged.duration_since(started).as_secs_f64(),
        rate_of(total, last_acknowledged.duration_since(started)),
    );
    println!(
        "chained {window_chained} in the first {:.1} s = {:.0} events/s; all {total} chained after {:.2} s = {:.0} events/s, \
         {:.2} s after the last acknowledgement",
        window_at.as_secs_f64(),
        rate_of(window_chained, window_at),
        all_chained.duration_since(started).as_secs_f64(),
        rate_of(total, all_chained.duration_since(started)),
        all_chained.duration_since(last_acknowledged).as_secs_f64(),
    );
    let each_second: Vec<String> = backlogs
        .iter()
        .filter(|(at, _)| at.subsec_millis() == 0)
        .map(|(_, count)| count.to_string())
        .collect();
    println!(
        "backlog (acknowledged, not chained): max {max_backlog} events (at {:.1} s), {window_backlog} at {:.1} s; each second: {}",
        max_at.as_secs_f64(),
        window_at.as_secs_f64(),
        each_second.join(" ")
    );
    latencies.sort();
    let ms = |p: f64| percentile(&latencies, p).as_secs_f64() * 1000.0;
    println!(
        "acknowledged to chained, {} batches (seen within {} ms): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        latencies.len(),
        CHAINED_POLL.as_millis(),
        ms(50.0),
        ms(99.0),
        ms(100.0),
    );
    lags.sort();
    let lag_ms = |p: f64| percentile(&lags, p).as_secs_f64() * 1000.0;
    anyhow::ensure!(
        heads.is_empty() && !lags.is_empty(),
        "the derived tables did not reach the chain's head within {} s of the last event chained",
        DERIVED_WAIT.as_secs()
    );
    println!(
        "chained to derived (the follower's lag), {} chain heads (seen within {} ms): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        lags.len(),
        CHAINED_POLL.as_millis(),
        lag_ms(50.0),
        lag_ms(99.0),
        lag_ms(100.0),
    );
    Ok(())
}

/// The chain's head and the derived tables' watermark (`derived_through`): both one
/// index or row read.
async fn head_and_derived(pool: &PgPool) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT COALESCE((SELECT MAX(seq) FROM events), 0), \
                (SELECT through_seq FROM derived_through WHERE one = 1)",
    )
    .fetch_one(pool)
    .await?)
}

/// Each switchboard's newest chained sequence number (`None`: none yet), by the chain's
/// unique (node, sequence) index: cheap enough to ask every [`CHAINED_POLL`]. A
/// switchboard's events are chained in its order (its batches are staged one after
/// another, and drains take the oldest staged first), so this is also how many of its
/// events are chained, and a batch is chained once its last event is.
async fn newest_chained(pool: &PgPool, nodes: &[String]) -> anyhow::Result<Vec<Option<i64>>> {
    Ok(sqlx::query_scalar(
        "SELECT (SELECT e.node_seq FROM events e WHERE e.node_id = n.node_id \
                 ORDER BY e.node_seq DESC LIMIT 1) \
         FROM UNNEST($1::TEXT[]) WITH ORDINALITY AS n(node_id, position) ORDER BY n.position",
    )
    .bind(nodes)
    .fetch_all(pool)
    .await?)
}
