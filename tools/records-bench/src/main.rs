//! Records benchmarks (see BENCHMARKS.md, "Records"): sustained ingest through the
//! ledger, then first-page ListCalls latency and a full ExportCalls over gRPC on a
//! store filled with generated calls; or, with `--console`, the web console's
//! server time and weight per page on that store (BENCHMARKS.md, "Web console");
//! or, with `--shared`, two services sharing one PostgreSQL database (`shared.rs`):
//! one burst of events, or with `--rate EVENTS_PER_S --duration-s S` a steady rate
//! offered for S seconds (whether the pair acknowledges and chains it all, the backlog
//! not yet chained, and each batch's time from acknowledgement to the chain).
//!
//! ```sh
//! cargo run --release -p courtline-records-bench -- --database /tmp/bench.db --calls 1000000
//! cargo run --release -p courtline-records-bench -- --database postgres://postgres@127.0.0.1:55432/bench --calls 1000000
//! cargo run --release -p courtline-records-bench -- --database /tmp/bench.db --calls 1000000 --console
//! cargo run --release -p courtline-records-bench -- --database postgres://postgres@127.0.0.1:55432/shared --shared
//! cargo run --release -p courtline-records-bench -- --database postgres://postgres@127.0.0.1:55432/paced --shared --rate 20000 --duration-s 30
//! ```
//!
//! The database must be new (or made by an earlier run of this tool with the same
//! `--calls`, which then skips generation).

mod console;
mod patterns;
mod shared;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use courtline::contract::connect::{connect, ClientOptions};
use courtline::contract::pb::node_event::Kind;
use courtline::contract::pb::{
    CallFilter, CallMilestone, CallRecord, Choice, EndReason, ExportCallsRequest, ListCallsRequest,
    Milestone, NodeEvent,
};
use courtline::contract::MAX_BATCH;
use courtline::records::chain::HashAlgorithm;
use courtline::records::ledger::signing::RecordsKey;
use courtline::records::ledger::{CheckpointPolicy, Ledger};
use courtline::records::service::{OpenedService, ServiceSettings};
use courtline::records::store::{Backend, CallQuery, SqlStore, Store};
use sqlx::{Executor, Row};

/// Benchmark options.
#[derive(Debug, Parser)]
struct Args {
    /// SQLite path or postgres:// URL of a new database.
    #[arg(long)]
    database: String,
    /// Calls to generate for the query and export benchmarks.
    #[arg(long, default_value_t = 1_000_000)]
    calls: u64,
    /// Events ingested in the sustained-ingest measurement (7 per call).
    #[arg(long, default_value_t = 140_000)]
    ingest_events: u64,
    /// Events per ingest request (the switchboard sends up to 1,000).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Calls in progress at once during the ingest: their events interleave, so each
    /// event updates a different call's row (1 = each call's events back to back).
    #[arg(long, default_value_t = 500)]
    concurrent_calls: u64,
    /// Repetitions of each query; the median is reported.
    #[arg(long, default_value_t = 9)]
    repeat: usize,
    /// Random (UUIDv4) call ids, as switchboards made before UUIDv7.
    #[arg(long)]
    v4_call_ids: bool,
    /// Skip the full export.
    #[arg(long)]
    no_export: bool,
    /// Measure the web console's pages instead of ListCalls and the export.
    #[arg(long)]
    console: bool,
    /// Requests per page in the console measurement (p50 and p99 over them).
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Measure two services sharing one PostgreSQL database instead (`--ingest-events`
    /// split over `--switchboards`; `--repeat` latency samples).
    #[arg(long)]
    shared: bool,
    /// Switchboards sending at once in the `--shared` measurement, half to each service.
    #[arg(long, default_value_t = 8)]
    switchboards: u64,
    /// With --shared: instead of one burst, the switchboards together offer this many
    /// events per second, their batches spread evenly in time, for `--duration-s`.
    #[arg(long, requires = "shared", value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// With --rate: how long the rate is offered, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    duration_s: u64,
    /// Measure the pattern queries (ListPatterns) instead of ListCalls and the export.
    #[arg(long)]
    patterns: bool,
    /// With --patterns: fill `caller_days` directly with the rows of this many
    /// calls (no calls stored), then measure; the database must be new.
    #[arg(long)]
    synthetic_caller_days: Option<u64>,
    /// With --synthetic-caller-days: the share (0–1) of those calls made by callers
    /// who call one court 6 times a month; the rest are one-time callers.
    #[arg(long, default_value_t = 0.0)]
    repeat_share: f64,
}

/// Unix ms of the generated calls' start: 2025-01-01.
const START_MS: i64 = 1_735_660_800_000;
/// Generated calls spread over this many ms (one year).
const SPAN_MS: i64 = 365 * 24 * 3600 * 1000;

/// A deterministic pseudo-random generator (xorshift), so runs are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Common surnames, one of which starts every generated caller name.
const SURNAMES: &str = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹";
/// Characters of generated given names.
const GIVEN: &str = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建国志文斌波辉鹏";

/// A caller's display name as trunks deliver them: none for a tenth of calls, a
/// lawyer ("王律师") for one in fifty, else a surname and a one- or two-character
/// given name — so "name contains" searches have common and rare grams to walk.
fn caller_name(rng: &mut Rng) -> String {
    let pick = |rng: &mut Rng, from: &str| {
        let characters: Vec<char> = from.chars().collect();
        characters[(rng.next() % characters.len() as u64) as usize]
    };
    match rng.next() % 50 {
        0..=4 => String::new(),
        5 => format!("{}律师", pick(rng, SURNAMES)),
        kind => {
            let mut name = String::from(pick(rng, SURNAMES));
            name.push(pick(rng, GIVEN));
            if kind % 2 == 0 {
                name.push(pick(rng, GIVEN));
            }
            name
        }
    }
}

/// Call number `n` of `total`, spread evenly over the year.
fn call(n: u64, total: u64, v4_call_ids: bool, rng: &mut Rng) -> CallRecord {
    let offset = i128::from(n) * i128::from(SPAN_MS) / i128::from(total.max(1));
    let received = START_MS + offset as i64 + (rng.next() % 1000) as i64;
    let reason = match rng.next() % 10 {
        0 => EndReason::CallerHungUpDuringPrompt,
        1 => EndReason::NoAnswer,
        2 => EndReason::OperatorBusy,
        3 => EndReason::Rejected,
        4..=6 => EndReason::CallerHungUp,
        _ => EndReason::OperatorHungUp,
    };
    let connected = matches!(reason, EndReason::CallerHungUp | EndReason::OperatorHungUp);
    let line = rng.next() % 20;
    let mut random = [0; 16];
    random[..8].copy_from_slice(&rng.next().to_le_bytes());
    random[8..].copy_from_slice(&rng.next().to_le_bytes());
    let call_id = if v4_call_ids {
        uuid::Builder::from_random_bytes(random).into_uuid()
    } else {
        // Like the switchboard's: UUIDv7, time-ordered.
        let mut tail = [0; 10];
        tail.copy_from_slice(&random[..10]);
        uuid::Builder::from_unix_timestamp_millis(received as u64, &tail).into_uuid()
    };
    CallRecord {
        call_id: call_id.to_string(),
        sip_call_id: format!("{n}@bench"),
        line_number: format!("021{:05}", 12_000 + line),
        court_name: format!("上海市第{}中级人民法院", line % 5 + 1),
        caller_number: format!("1{:010}", rng.next() % 10_000_000_000),
        caller_display_name: caller_name(rng),
        caller_source: "10.0.0.1:5060".into(),
        user_agent: "bench".into(),
        codec: "PCMA".into(),
        received_at_ms: received,
        answered_at_ms: received + 10,
        prompt_started_at_ms: received + 50,
        prompt_ended_at_ms: received + 20_050,
        operator_answered_at_ms: if connected { received + 25_000 } else { 0 },
        ended_at_ms: received + 90_000,
        prompt_id: "three_rules_zh".into(),
        prompt_sha256: "ab".repeat(32),
        prompt_length_ms: 20_000,
        prompt_ms_sent: if reason == EndReason::CallerHungUpDuringPrompt {
            5_000
        } else {
            20_000
        },
        prompt_completed: reason != EndReason::CallerHungUpDuringPrompt,
        operator_uri: "sip:operator@10.0.0.2".into(),
        end_reason: reason as i32,
        sip_final_status: 200,
        rtp_packets_sent: 4_500,
        rtp_packets_received: 4_400,
        ..CallRecord::default()
    }
}

fn event(node_seq: u64, record: &CallRecord, kind: Kind) -> NodeEvent {
    NodeEvent {
        node_id: "bench-1".into(),
        node_seq,
        at_ms: record.received_at_ms,
        call_id: record.call_id.clone(),
        kind: Some(kind),
    }
}

/// What a switchboard reports about a call, in order: six milestones, then the end.
const CALL_EVENTS: [Option<Milestone>; 7] = [
    Some(Milestone::Received),
    Some(Milestone::Answered),
    Some(Milestone::PromptStarted),
    Some(Milestone::PromptFinished),
    Some(Milestone::OperatorDialed),
    Some(Milestone::OperatorAnswered),
    None,
];

/// A call's event `step` (a milestone, or `None` for the end), as a switchboard sends it.
fn call_event(record: &CallRecord, step: Option<Milestone>, node_seq: u64) -> NodeEvent {
    let kind = match step {
        Some(milestone) => Kind::Milestone(CallMilestone {
            milestone: milestone as i32,
            snapshot: Some(record.clone()),
            ..CallMilestone::default()
        }),
        None => Kind::Ended(record.clone()),
    };
    event(node_seq, record, kind)
}

/// The `p`-th percentile (0–100) of sorted `samples`, nearest rank.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let key_dir = tempfile_dir()?;
    let key_file = key_dir.join("bench-signing.key");
    let settings = ServiceSettings {
        database: args.database.clone(),
        hash_algorithm: HashAlgorithm::Sha256,
        signing_key_file: key_file.clone(),
        checkpoints: CheckpointPolicy {
            every_events: 1000,
            every: Duration::from_secs(600),
        },
        retention_days: 3650,
        tls: None,
        client_certificates: None,
        recordings_dir: key_dir.join("recordings"),
        takes_local_recordings: false,
    };
    if args.shared {
        return shared::measure(&settings, &args).await;
    }
    let sql_store = Arc::new(SqlStore::open(&args.database).await?);
    let store: Arc<dyn Store> = sql_store.clone();
    let ledger = Ledger::open(
        store.clone(),
        HashAlgorithm::Sha256,
        RecordsKey::load_or_create(&key_file)?,
        settings.checkpoints,
        None,
    )
    .await?;
    let existing = store
        .list_calls(&CallQuery {
            page_size: 1,
            ..CallQuery::default()
        })
        .await?
        .0
        .len();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut node_seq = 1;
    if let Some(calls) = args.synthetic_caller_days {
        patterns::synthesize(&sql_store, calls, args.repeat_share, START_MS + SPAN_MS).await?;
    } else if existing == 0 {
        // 1. Sustained ingest: realistic calls, 7 events each, in switchboard-sized batches.
        let calls_for_ingest = args.ingest_events / CALL_EVENTS.len() as u64;
        let mut pending = Vec::new();
        let mut samples = Vec::new();
        let mut sample_events = 0;
        let mut sample_start = Instant::now();
        let started = Instant::now();
        let mut first = 0;
        while first < calls_for_ingest {
            let last = (first + args.concurrent_calls.max(1)).min(calls_for_ingest);
            let group: Vec<CallRecord> = (first..last)
                .map(|n| call(n, args.calls, args.v4_call_ids, &mut rng))
                .collect();
            first = last;
            for step in CALL_EVENTS {
                for record in &group {
                    pending.push(call_event(record, step, node_seq));
                    node_seq += 1;
                    if pending.len() >= args.batch {
                        let batch: Vec<NodeEvent> = std::mem::take(&mut pending);
                        sample_events += batch.len();
                        ledger.ingest(batch).await?;
                        if sample_events >= 10_000 {
                            samples
                                .push(sample_events as f64 / sample_start.elapsed().as_secs_f64());
                            sample_events = 0;
                            sample_start = Instant::now();
                        }
                    }
                }
            }
        }
        ledger.ingest(pending).await?;
        let total = started.elapsed();
        samples.sort_by(f64::total_cmp);
        println!(
            "ingest: {} events in {:.1} s = {:.0} events/s overall; median of {} windows of 10k events: {:.0} events/s (batch {}, {} calls in progress)",
            calls_for_ingest * 7,
            total.as_secs_f64(),
            (calls_for_ingest * 7) as f64 / total.as_secs_f64(),
            samples.len(),
            samples.get(samples.len() / 2).copied().unwrap_or_default(),
            args.batch,
            args.concurrent_calls
        );

        // 2. The query population: one final event per call through the same ledger
        // (so the chain, checkpoints and call rows are what the service would store), in
        // the largest batches it takes, with the secondary indexes built once at the end.
        let started = Instant::now();
        let indexes = secondary_indexes(&sql_store).await?;
        for (name, _) in &indexes {
            sqlx::query(&format!("DROP INDEX {name}"))
                .execute(sql_store.pool())
                .await?;
        }
        let mut pending = Vec::new();
        for n in calls_for_ingest..args.calls {
            let record = call(n, args.calls, args.v4_call_ids, &mut rng);
            pending.push(event(node_seq, &record, Kind::Ended(record.clone())));
            node_seq += 1;
            if pending.len() >= MAX_BATCH {
                ledger.ingest(std::mem::take(&mut pending)).await?;
            }
            if n % 1_000_000 == 0 && n > 0 {
                eprintln!(
                    "  generated {n} calls ({:.0} s)",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        ledger.ingest(pending).await?;
        if args.patterns {
            patterns::plant_broker(&ledger, START_MS + SPAN_MS).await?;
        }
        ledger.checkpoint_if_due().await?;
        let loaded = started.elapsed();
        let mut connection = sql_store.pool().acquire().await?;
        if sql_store.backend() == Backend::Postgres {
            // Index builds sort in memory up to this, instead of the 64 MB default.
            connection
                .execute("SET maintenance_work_mem = '512MB'")
                .await?;
        }
        for (_, create) in &indexes {
            connection.execute(create.as_str()).await?;
        }
        drop(connection);
        println!(
            "generated {} calls in {:.0} s: {:.0} s through the ledger, {:.0} s building {} indexes",
            args.calls,
            started.elapsed().as_secs_f64(),
            loaded.as_secs_f64(),
            (started.elapsed() - loaded).as_secs_f64(),
            indexes.len()
        );
    } else {
        println!("database already filled; skipping ingest and generation");
    }
    // Planner statistics, as an operator would keep them (SQLite `ANALYZE`, PostgreSQL autovacuum).
    sqlx::query("ANALYZE").execute(sql_store.pool()).await?;
    // The name index runs every so many events; the calls since its last run are
    // searched directly, and name searches below pay for that.
    let waiting = sqlx::query(
        "SELECT COUNT(*) AS n FROM calls WHERE first_seq > (SELECT through_seq FROM caller_name_index)",
    )
    .fetch_one(sql_store.pool())
    .await?;
    println!(
        "calls not in the name index yet: {}",
        waiting.try_get::<i64, _>("n")?
    );
    println!(
        "database size: {:.2} GB; checkpoint key {}",
        database_bytes(&sql_store, &args.database).await? as f64 / 1e9,
        ledger.key().public_key_hex()
    );
    // Fresh connections for the query plans: a SQLite connection keeps the planner
    // statistics it read when it last loaded the schema.
    store.close().await;
    let sql_store = SqlStore::open(&args.database).await?;

    // 3. Queries and export over gRPC, through the real service (access logging
    // included); or the console's pages.
    let opened = OpenedService::open(&settings).await?;
    if args.console {
        console::measure(
            opened,
            &sql_store,
            START_MS,
            START_MS + SPAN_MS,
            args.requests,
        )
        .await?;
        sql_store.close().await;
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(opened.serve(listener, async {
        let _ = stopped.await;
    }));
    let mut client = connect(&ClientOptions::new(format!("http://{address}"))).await?;
    if args.patterns {
        patterns::measure(&mut client, START_MS + SPAN_MS, args.repeat).await?;
        let _ = stop.send(());
        server.await??;
        sql_store.close().await;
        return Ok(());
    }
    let last_month = START_MS + SPAN_MS - 30 * 24 * 3600 * 1000;
    let queries: Vec<(&str, CallFilter)> = vec![
        ("no filter", CallFilter::default()),
        (
            "line + last 30 days",
            CallFilter {
                line_number: "02112007".into(),
                since_ms: last_month,
                ..CallFilter::default()
            },
        ),
        (
            "court",
            CallFilter {
                court_name: "上海市第3中级人民法院".into(),
                ..CallFilter::default()
            },
        ),
        (
            "caller prefix (5 digits)",
            CallFilter {
                caller_prefix: "13456".into(),
                ..CallFilter::default()
            },
        ),
        (
            "caller prefix (2 digits, a tenth of all calls)",
            CallFilter {
                caller_prefix: "13".into(),
                ..CallFilter::default()
            },
        ),
        (
            "caller exact (no match)",
            CallFilter {
                caller_prefix: "13800138000".into(),
                caller_exact: true,
                ..CallFilter::default()
            },
        ),
        (
            "court + end reason + last 30 days",
            CallFilter {
                court_name: "上海市第3中级人民法院".into(),
                end_reason: EndReason::OperatorBusy as i32,
                since_ms: last_month,
                ..CallFilter::default()
            },
        ),
        (
            "one day, 90 days ago",
            CallFilter {
                since_ms: last_month - 60 * 24 * 3600 * 1000,
                until_ms: last_month - 59 * 24 * 3600 * 1000,
                ..CallFilter::default()
            },
        ),
        (
            "end reason no_answer",
            CallFilter {
                end_reason: EndReason::NoAnswer as i32,
                ..CallFilter::default()
            },
        ),
        (
            "prompt not completed + not connected",
            CallFilter {
                prompt_completed: Choice::No as i32,
                connected: Choice::No as i32,
                ..CallFilter::default()
            },
        ),
        (
            "caller name contains 律师",
            CallFilter {
                caller_name_contains: "律师".into(),
                ..CallFilter::default()
            },
        ),
        (
            "caller name contains 曹 (a surname, 1 in 33)",
            CallFilter {
                caller_name_contains: "曹".into(),
                ..CallFilter::default()
            },
        ),
        (
            "caller name contains 王伟明 (about 1 in 110,000)",
            CallFilter {
                caller_name_contains: "王伟明".into(),
                ..CallFilter::default()
            },
        ),
        (
            "caller name contains a name nobody has",
            CallFilter {
                caller_name_contains: "无此人".into(),
                ..CallFilter::default()
            },
        ),
        (
            "flagged (none)",
            CallFilter {
                flagged: Choice::Yes as i32,
                ..CallFilter::default()
            },
        ),
        (
            "has report (none)",
            CallFilter {
                has_report: Choice::Yes as i32,
                ..CallFilter::default()
            },
        ),
        (
            "has recording (none)",
            CallFilter {
                has_recording: Choice::Yes as i32,
                ..CallFilter::default()
            },
        ),
    ];
    for (name, filter) in queries {
        let plan = sql_store
            .explain_list_calls(&CallQuery {
                filter: filter.clone(),
                page_size: 100,
                ..CallQuery::default()
            })
            .await?;
        let mut samples = Vec::new();
        let mut rows = 0;
        // The first page carries the capped count of matches: part of what is timed.
        let mut matching = String::new();
        for _ in 0..args.repeat {
            let started = Instant::now();
            let page = client
                .list_calls(ListCallsRequest {
                    filter: Some(filter.clone()),
                    page_size: 100,
                    ..ListCallsRequest::default()
                })
                .await
                .context(name)?
                .into_inner();
            samples.push(started.elapsed());
            rows = page.records.len();
            matching = format!("{}{}", page.total, if page.total_capped { "+" } else { "" });
        }
        println!(
            "ListCalls first page ({name}): median {:.1} ms over {} runs, {rows} rows of {matching}; plan: {}",
            median(samples).as_secs_f64() * 1000.0,
            args.repeat,
            plan.join(" | ")
        );
    }
    if !args.no_export {
        let rss_before = peak_rss_mib();
        let started = Instant::now();
        let mut stream = client
            .export_calls(ExportCallsRequest::default())
            .await?
            .into_inner();
        let mut rows = 0_u64;
        while let Some(message) = stream.message().await? {
            if let Some(courtline::contract::pb::export_calls_response::Item::Record(_)) =
                message.item
            {
                rows += 1;
            }
        }
        let elapsed = started.elapsed();
        println!(
            "ExportCalls: {rows} calls in {:.1} s ({:.0} calls/s); peak RSS {:.0} MiB before, {:.0} MiB after",
            elapsed.as_secs_f64(),
            rows as f64 / elapsed.as_secs_f64(),
            rss_before,
            peak_rss_mib()
        );
    }
    let _ = stop.send(());
    server.await??;
    sql_store.close().await;
    Ok(())
}

/// The store's secondary (non-unique) indexes as (name, statement that makes it):
/// dropped while generating and built afterwards, which is much faster than keeping
/// them up to date row by row. Unique ones stay: the ledger looks events up by them;
/// so does `calls_by_first_seq`: the name index reads the newest calls by it.
async fn secondary_indexes(store: &SqlStore) -> anyhow::Result<Vec<(String, String)>> {
    let query = match store.backend() {
        Backend::Sqlite => {
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL \
             AND sql NOT LIKE 'CREATE UNIQUE%' AND name <> 'calls_by_first_seq'"
        }
        Backend::Postgres => {
            "SELECT indexname::text AS name, indexdef AS sql FROM pg_indexes \
             WHERE schemaname = current_schema() AND indexdef NOT LIKE 'CREATE UNIQUE%' \
             AND indexname <> 'calls_by_first_seq'"
        }
    };
    let rows = sqlx::query(query).fetch_all(store.pool()).await?;
    rows.iter()
        .map(|row| Ok((row.try_get("name")?, row.try_get("sql")?)))
        .collect()
}

/// Bytes the database takes on disk (SQLite: the file and its WAL).
async fn database_bytes(store: &SqlStore, database: &str) -> anyhow::Result<u64> {
    match store.backend() {
        Backend::Sqlite => {
            let path = database
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let size = |path: String| std::fs::metadata(path).map_or(0, |meta| meta.len());
            Ok(size(path.to_owned()) + size(format!("{path}-wal")))
        }
        Backend::Postgres => {
            let row = sqlx::query("SELECT pg_database_size(current_database()) AS bytes")
                .fetch_one(store.pool())
                .await?;
            Ok(u64::try_from(row.try_get::<i64, _>("bytes")?)?)
        }
    }
}

/// A directory for the benchmark's signing key.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join("courtline-records-bench");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
