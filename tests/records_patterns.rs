//! Patterns across calls on both backends, through a real records service: a
//! generated history across 25 courts (100,000 ordinary calls by default,
//! `COURTLINE_PATTERN_CALLS` to change it) with planted patterns — a broker calling
//! 6 courts in 3 days, a caller reported and calling again, a serial hang-up caller,
//! a repeated caller, a caller after hours — and near misses (the same behaviours
//! spread too thin or stopping short). Every planted pattern is found at the
//! documented thresholds with exactly its calls behind it, nothing else is. The
//! configured alert rules chain `PatternMatched` events and post them, signed, to a
//! webhook receiver the test runs on 127.0.0.1 (which fails the first delivery, so
//! the retry is exercised). Roles: operators are refused, auditors see numbers
//! masked; every query is in the access log; the chain verifies.

mod records_common;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use courtline::contract::connect::RecordsClient;
use courtline::contract::pb::node_event::Kind;
use courtline::contract::pb::{
    AddTokenRequest, CallFilter, CallRecord, CallerHistoryRequest, EndReason, FlagCallRequest,
    FlagCategory, ListCallsRequest, ListPatternsRequest, LogEventsRequest, NodeEvent, PatternHit,
    PatternKind, PatternMatched, PurgeRequest, Role, SortOrder, VerifyRequest,
};
use courtline::records::alerts::{
    signature, PatternRule, PatternSettings, Webhook, SIGNATURE_HEADER,
};
use courtline::records::dashboard::DAY_MS;
use courtline::records::pattern_search::search;
use courtline::records::patterns::{
    defaults, find, CallerDay, CallerDayKey, DayCounts, PatternQuery,
};
use courtline::records::service::OpenedService;
use courtline::records::store::{CallerDays, SqlStore, Store};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use prost::Message;
use records_common::*;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::Code;

/// First day of the history: 2026-09-01 (UTC), day 20,697.
const FIRST_DAY: i64 = 20_697;
/// Days of history.
const DAYS: i64 = 60;
/// Courts.
const COURTS: u32 = 25;
/// The webhook's shared secret.
const SECRET: &[u8] = b"case-management-shared-secret";

/// The planted callers.
const BROKER: &str = "13700000001";
const REPORTED: &str = "13700000002";
const HANG_UP: &str = "13700000003";
const AFTER_HOURS: &str = "13700000004";
const REPEATER: &str = "13700000005";
/// Near misses: 6 courts over 20 days; 3 courts in 3 days; 2 hang-ups; reported
/// and never called again; 7 calls to one court in 7 days; 2 calls after hours.
const SLOW_BROKER: &str = "13700000011";
const THREE_COURTS: &str = "13700000012";
const TWO_HANG_UPS: &str = "13700000013";
const REPORTED_ONCE: &str = "13700000014";
const SEVEN_CALLS: &str = "13700000015";
const TWO_LATE: &str = "13700000016";

/// A tiny deterministic generator (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn court(index: u32) -> String {
    format!("第{:02}法院", index % COURTS + 1)
}

fn line(court_index: u32, which: u32) -> String {
    format!("12{:02}{}", court_index % COURTS + 1, which % 2)
}

/// The history being built: calls in order, each a final record.
#[derive(Default)]
struct History {
    calls: Vec<CallRecord>,
}

impl History {
    /// Adds a call; returns its id.
    fn call(
        &mut self,
        caller: &str,
        court_index: u32,
        line_which: u32,
        at_ms: i64,
        end_reason: EndReason,
    ) -> String {
        let n = self.calls.len() as u64 + 1;
        let call_id = format!("7d9e4c1a-0000-4000-8000-{n:012}");
        self.calls.push(CallRecord {
            call_id: call_id.clone(),
            sip_call_id: format!("{n}@trunk.test"),
            line_number: line(court_index, line_which),
            court_name: court(court_index),
            caller_number: caller.to_owned(),
            received_at_ms: at_ms,
            answered_at_ms: at_ms + 100,
            ended_at_ms: at_ms + 30_000,
            end_reason: end_reason as i32,
            sip_final_status: 200,
            ..CallRecord::default()
        });
        call_id
    }
}

/// Unix ms of `hour` o'clock (UTC) on history day `day`, plus `minute`.
fn at(day: i64, hour: i64, minute: i64) -> i64 {
    (FIRST_DAY + day) * DAY_MS + hour * 3_600_000 + minute * 60_000
}

/// Ordinary traffic: callers who call one court (now and then a second), one to
/// three times over the two months, with now and then a hang-up during the warning
/// or a call after hours — at most one of each per caller, as people who misdial or
/// call late once do.
fn ordinary(history: &mut History, calls: usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut caller = 0u64;
    while history.calls.len() < calls {
        caller += 1;
        let number = format!("138{:08}", caller);
        let home = rng.below(u64::from(COURTS)) as u32;
        let count = 1 + rng.below(3);
        let first_day = rng.below(DAYS as u64) as i64;
        for index in 0..count {
            let day = (first_day + index as i64 * (1 + rng.below(20) as i64)).min(DAYS - 1);
            let court_index = if rng.below(20) == 0 {
                rng.below(u64::from(COURTS)) as u32
            } else {
                home
            };
            let end_reason = match (index, rng.below(100)) {
                (0, 0..=7) => EndReason::CallerHungUpDuringPrompt,
                (0, 8..=12) => EndReason::AfterHours,
                (_, 13..=60) => EndReason::OperatorHungUp,
                _ => EndReason::CallerHungUp,
            };
            let hour = 1 + rng.below(9) as i64;
            history.call(
                &number,
                court_index,
                rng.below(2) as u32,
                at(day, hour, rng.below(60) as i64),
                end_reason,
            );
        }
    }
}

/// What the planted callers made: caller → their calls' ids (the ones a hit's
/// drill-down must list).
struct Planted {
    broker: Vec<String>,
    reported_first: String,
    reported_again: Vec<String>,
    hang_ups: Vec<String>,
    after_hours: Vec<String>,
    repeats: Vec<String>,
    reported_once: String,
}

/// The planted patterns and near misses that go before the reported caller's flag.
fn plant_before_flag(history: &mut History) -> Planted {
    use EndReason::*;
    // 6 courts in 3 days (days 20-22), two a day, each on a line of its own.
    let broker = (0..6)
        .map(|n| {
            history.call(
                BROKER,
                3 + n,
                n,
                at(20 + i64::from(n / 2), 2 + i64::from(n), 5),
                OperatorHungUp,
            )
        })
        .collect();
    // 6 courts over 20 days: never more than 2 in a week.
    for n in 0..6 {
        history.call(
            SLOW_BROKER,
            10 + n,
            0,
            at(5 + 4 * i64::from(n), 3, 0),
            CallerHungUp,
        );
    }
    for n in 0..3 {
        history.call(
            THREE_COURTS,
            15 + n,
            0,
            at(30 + i64::from(n), 3, 0),
            CallerHungUp,
        );
    }
    for n in 0..2 {
        history.call(
            TWO_HANG_UPS,
            4,
            0,
            at(40 + i64::from(n), 4, 0),
            CallerHungUpDuringPrompt,
        );
    }
    let reported_once = history.call(REPORTED_ONCE, 6, 1, at(12, 2, 0), OperatorHungUp);
    let reported_first = history.call(REPORTED, 8, 0, at(10, 2, 0), OperatorHungUp);
    // 7 calls to one court within 7 days: one short of the threshold.
    for n in 0..7 {
        history.call(
            SEVEN_CALLS,
            11,
            n,
            at(45 + i64::from(n), 2, 0),
            CallerHungUp,
        );
    }
    for n in 0..2 {
        history.call(TWO_LATE, 12, 0, at(50 + i64::from(n), 4, 0), AfterHours);
    }
    Planted {
        broker,
        reported_first,
        reported_again: Vec::new(),
        hang_ups: Vec::new(),
        after_hours: Vec::new(),
        repeats: Vec::new(),
        reported_once,
    }
}

/// The patterns recorded after the flag: their calls make the alerts go off.
fn plant_after_flag(history: &mut History, planted: &mut Planted) {
    use EndReason::*;
    planted.reported_again = vec![
        history.call(REPORTED, 8, 0, at(15, 3, 0), OperatorHungUp),
        history.call(REPORTED, 9, 1, at(16, 3, 0), CallerHungUp),
    ];
    // 5 hang-ups during the warning in two days.
    planted.hang_ups = (0..5)
        .map(|n| {
            history.call(
                HANG_UP,
                7,
                n,
                at(33 + i64::from(n / 3), 2, i64::from(n)),
                CallerHungUpDuringPrompt,
            )
        })
        .collect();
    planted.after_hours = (0..4)
        .map(|n| history.call(AFTER_HOURS, 13, 0, at(25 + i64::from(n), 5, 0), AfterHours))
        .collect();
    // 9 calls to one court within 6 days.
    planted.repeats = (0..9)
        .map(|n| {
            history.call(
                REPEATER,
                9,
                n,
                at(50 + i64::from(n) * 2 / 3, 1, i64::from(n)),
                CallerHungUp,
            )
        })
        .collect();
}

/// Sends `calls` as node `node`'s final events from `first_seq` on, 1,000 a request.
async fn send(client: &mut RecordsClient, node: &str, first_seq: u64, calls: &[CallRecord]) -> u64 {
    let mut seq = first_seq;
    for chunk in calls.chunks(1000) {
        let events: Vec<NodeEvent> = chunk
            .iter()
            .map(|record| NodeEvent {
                at_ms: record.ended_at_ms,
                call_id: record.call_id.clone(),
                kind: Some(Kind::Ended(record.clone())),
                ..NodeEvent::default()
            })
            .collect();
        let events = numbered(node, seq, events);
        seq += events.len() as u64;
        client
            .log_events(LogEventsRequest { events })
            .await
            .unwrap();
    }
    seq
}

/// One request the webhook receiver got: signature header and body.
type Delivery = (String, Bytes);

/// A webhook receiver on 127.0.0.1: answers 500 to the first request (so the
/// sender must retry), 204 after; returns its URL, what it received, and its stop.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<Delivery>>>, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/courtline/alerts", listener.local_addr().unwrap());
    let received: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let store = received.clone();
    tokio::spawn(async move {
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => accepted.unwrap(),
                _ = &mut stopped => break,
            };
            let (store, requests) = (store.clone(), requests.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let (store, requests) = (store.clone(), requests.clone());
                        async move {
                            let signed = request
                                .headers()
                                .get(SIGNATURE_HEADER)
                                .and_then(|value| value.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let n = requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let status = if n == 0 { 500 } else { 204 };
                            if status == 204 {
                                store.lock().unwrap().push((signed, body));
                            }
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, received, stop)
}

/// A records service with `patterns`, on a free port; returns its address and stop.
async fn start(
    db: &Db,
    patterns: PatternSettings,
) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let opened = OpenedService::open(&settings(db))
        .await
        .unwrap()
        .with_patterns(patterns);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        opened
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (endpoint, stop, task)
}

async fn client(endpoint: &str, token: Option<&str>) -> RecordsClient {
    courtline::contract::connect::connect(&courtline::contract::connect::ClientOptions {
        endpoint: endpoint.to_owned(),
        token: token.map(str::to_owned),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// The history's whole range.
fn whole_range(kind: PatternKind) -> ListPatternsRequest {
    ListPatternsRequest {
        kind: kind as i32,
        since_ms: FIRST_DAY * DAY_MS,
        until_ms: (FIRST_DAY + DAYS) * DAY_MS,
        ..ListPatternsRequest::default()
    }
}

/// The ids of the calls `filter` lists (all of them).
async fn calls_behind(client: &mut RecordsClient, filter: &CallFilter) -> BTreeSet<String> {
    client
        .list_calls(ListCallsRequest {
            filter: Some(filter.clone()),
            sort: SortOrder::OldestFirst as i32,
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .records
        .into_iter()
        .map(|record| record.call_id)
        .collect()
}

fn set(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}

async fn hits(client: &mut RecordsClient, request: ListPatternsRequest) -> Vec<PatternHit> {
    client
        .list_patterns(request)
        .await
        .unwrap()
        .into_inner()
        .hits
}

async fn planted_patterns_are_found(db: Db) {
    let ordinary_calls: usize = std::env::var("COURTLINE_PATTERN_CALLS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(100_000);
    let (url, received, stop_receiver) = webhook_receiver().await;
    let rule = |name: &str, kind, threshold, window_days| PatternRule {
        name: name.into(),
        kind,
        threshold,
        window_days,
    };
    let patterns = PatternSettings {
        rules: vec![
            rule("broker", PatternKind::Courts, 6, 3),
            rule("reported-again", PatternKind::ReportedAgain, 1, 30),
            rule("hang-ups", PatternKind::WarningHangUps, 3, 7),
        ],
        webhook: Some(Webhook {
            url: url.parse().unwrap(),
            secret: SECRET.to_vec(),
            attempts: 4,
        }),
        ..PatternSettings::default()
    };
    let (endpoint, stop, task) = start(&db, patterns).await;
    let admin_token = client(&endpoint, None)
        .await
        .add_token(AddTokenRequest {
            name: "admin-1".into(),
            role: Role::Admin as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let admin = client(&endpoint, Some(&admin_token)).await;
    let token = |name: &str, role: Role| {
        let request = AddTokenRequest {
            name: name.into(),
            role: role as i32,
        };
        let mut admin = admin.clone();
        async move { admin.add_token(request).await.unwrap().into_inner().token }
    };
    let switchboard_token = token("sb-1", Role::Switchboard).await;
    let compliance_token = token("comp-wang", Role::Compliance).await;
    let auditor_token = token("audit-chen", Role::Auditor).await;
    let operator_token = token("op-li", Role::Operator).await;
    let mut switchboard = client(&endpoint, Some(&switchboard_token)).await;
    let mut compliance = client(&endpoint, Some(&compliance_token)).await;

    let mut history = History::default();
    ordinary(&mut history, ordinary_calls);
    let mut planted = plant_before_flag(&mut history);
    let started = std::time::Instant::now();
    let seq = send(&mut switchboard, "sb-1", 1, &history.calls).await;
    for call_id in [&planted.reported_first, &planted.reported_once] {
        compliance
            .flag_call(FlagCallRequest {
                call_id: call_id.clone(),
                category: FlagCategory::Intercession as i32,
                note: "说情".into(),
            })
            .await
            .unwrap();
    }
    let before = history.calls.len();
    plant_after_flag(&mut history, &mut planted);
    send(&mut switchboard, "sb-1", seq, &history.calls[before..]).await;
    eprintln!(
        "stored {} calls in {:.1} s",
        history.calls.len(),
        started.elapsed().as_secs_f64()
    );

    // Every pattern at its documented defaults over the whole history: exactly the
    // planted callers, each with exactly its calls behind it.
    let expected: [(PatternKind, &str, Vec<String>); 6] = [
        (PatternKind::Courts, BROKER, planted.broker.clone()),
        (PatternKind::Lines, BROKER, planted.broker.clone()),
        (
            PatternKind::RepeatedCalls,
            REPEATER,
            planted.repeats.clone(),
        ),
        (
            PatternKind::ReportedAgain,
            REPORTED,
            [
                vec![planted.reported_first.clone()],
                planted.reported_again.clone(),
            ]
            .concat(),
        ),
        (
            PatternKind::WarningHangUps,
            HANG_UP,
            planted.hang_ups.clone(),
        ),
        (
            PatternKind::AfterHours,
            AFTER_HOURS,
            planted.after_hours.clone(),
        ),
    ];
    for (kind, caller, calls) in &expected {
        let found = hits(&mut compliance, whole_range(*kind)).await;
        let callers: Vec<&str> = found.iter().map(|hit| hit.caller_number.as_str()).collect();
        assert_eq!(callers, [*caller], "{kind:?} at {:?}", defaults(*kind));
        let filter = found[0].calls_filter.clone().unwrap();
        assert_eq!(
            calls_behind(&mut compliance, &filter).await,
            set(calls),
            "{kind:?}"
        );
    }
    // The switchboard's lookup for the whisper: one flag on the reported caller's
    // calls, none on the broker's; the switchboard's role only.
    let history_of = |number: &str| CallerHistoryRequest {
        caller_number: number.into(),
    };
    for (number, expected) in [
        (REPORTED, (0, 1)),
        (REPORTED_ONCE, (0, 1)),
        (BROKER, (0, 0)),
    ] {
        let answer = switchboard
            .caller_history(history_of(number))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (answer.prior_reports, answer.prior_flags),
            expected,
            "{number}"
        );
    }
    let refused = compliance
        .caller_history(history_of(REPORTED))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // The broker at the numbers: 6 courts in 3 days.
    let broker = hits(
        &mut compliance,
        ListPatternsRequest {
            threshold: 6,
            window_days: 3,
            ..whole_range(PatternKind::Courts)
        },
    )
    .await;
    assert_eq!(broker.len(), 1);
    assert_eq!(
        (broker[0].count, broker[0].calls, broker[0].courts.len()),
        (6, 6, 6)
    );
    // Longer windows and lower thresholds find the near misses: they are in the data.
    let slow = hits(
        &mut compliance,
        ListPatternsRequest {
            window_days: 21,
            caller_number: SLOW_BROKER.into(),
            ..whole_range(PatternKind::Courts)
        },
    )
    .await;
    assert_eq!(slow.len(), 1, "{slow:?}");
    let two = hits(
        &mut compliance,
        ListPatternsRequest {
            threshold: 2,
            caller_number: TWO_HANG_UPS.into(),
            ..whole_range(PatternKind::WarningHangUps)
        },
    )
    .await;
    assert_eq!(two.len(), 1);
    let _ = (THREE_COURTS, SEVEN_CALLS, TWO_LATE);

    // Roles: operators are refused; auditors see masked numbers and no drill-down.
    let mut operator = client(&endpoint, Some(&operator_token)).await;
    let refused = operator
        .list_patterns(whole_range(PatternKind::Courts))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut auditor = client(&endpoint, Some(&auditor_token)).await;
    let masked = hits(&mut auditor, whole_range(PatternKind::Courts)).await;
    assert_eq!(masked.len(), 1);
    assert_eq!(masked[0].caller_number, "137****0001");
    assert!(masked[0].masked && masked[0].calls_filter.is_none());
    let log = access_log(&mut auditor).await;
    let queries = log
        .iter()
        .filter(|entry| entry.operation == "ListPatterns")
        .count();
    assert_eq!(queries, expected.len() + 4, "every pattern query is logged");
    assert!(log
        .iter()
        .any(|entry| entry.operation == "ListPatterns" && entry.actor == "audit-chen"));

    // Alerts: each rule chained once for its planted caller, with its calls, and
    // the webhook got each, signed, after a failed first delivery.
    let store = SqlStore::open(&db.url).await.unwrap();
    let mut alerts: BTreeMap<String, PatternMatched> = BTreeMap::new();
    for _ in 0..100 {
        alerts = store
            .pattern_matches(0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|row| {
                (
                    row.rule,
                    PatternMatched::decode(row.body.as_slice()).unwrap(),
                )
            })
            .collect();
        if alerts.len() >= 3 && received.lock().unwrap().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("alerts after {:.1} s", started.elapsed().as_secs_f64());
    let rules: Vec<&str> = alerts.keys().map(String::as_str).collect();
    assert_eq!(rules, ["broker", "hang-ups", "reported-again"]);
    let caller_of = |rule: &str| alerts[rule].hit.clone().unwrap().caller_number;
    assert_eq!(caller_of("broker"), BROKER);
    assert_eq!(caller_of("hang-ups"), HANG_UP);
    assert_eq!(caller_of("reported-again"), REPORTED);
    assert_eq!(set(&alerts["broker"].call_ids), set(&planted.broker));
    let matches = store.pattern_matches(0, 100).await.unwrap();
    assert_eq!(matches.len(), 3, "one match per rule and caller a day");
    store.close().await;
    let deliveries = received.lock().unwrap().clone();
    assert_eq!(
        deliveries.len(),
        3,
        "each match delivered once after the retry"
    );
    let mut delivered = BTreeSet::new();
    for (signed, body) in &deliveries {
        assert_eq!(
            signed,
            &signature(SECRET, body),
            "the signature covers the body"
        );
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        delivered.insert(json["rule"].as_str().unwrap().to_owned());
        assert_eq!(json["event"], "pattern_matched");
    }
    assert_eq!(delivered.len(), 3);

    // The chain with its new events verifies.
    let verified = auditor.verify(VerifyRequest {}).await.unwrap().into_inner();
    assert!(verified.findings.is_empty(), "{:?}", verified.findings);

    stop.send(()).unwrap();
    task.await.unwrap();
    let _ = stop_receiver.send(());
}

/// Every caller's stored `caller_days` rows (all-zero rows left out).
async fn stored_days(store: &SqlStore, callers: &[String]) -> BTreeMap<CallerDayKey, DayCounts> {
    store
        .caller_day_rows(callers, i64::MIN / 2, i64::MAX / 2)
        .await
        .unwrap()
        .into_iter()
        .filter(|row| !row.counts.is_zero())
        .map(|row| {
            (
                (row.caller_number, row.day, row.court_name, row.line_number),
                row.counts,
            )
        })
        .collect()
}

/// The same rows from a scan of every call, flag event and report.
async fn scanned_days(store: &SqlStore) -> BTreeMap<CallerDayKey, DayCounts> {
    let mut days: BTreeMap<CallerDayKey, DayCounts> = BTreeMap::new();
    let mut calls = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.calls_after(after.as_deref(), 100).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.call_id.clone());
        for call in page {
            if let Some((key, counts)) = CallerDay::of_call(&call) {
                days.entry(key).or_default().add(&counts, 1);
            }
            calls.insert(call.call_id.clone(), call);
        }
    }
    let mut seq = 0;
    loop {
        let events = store.events_after(seq, 500).await.unwrap();
        let Some(last) = events.last() else { break };
        seq = last.seq;
        for event in events.iter().filter(|event| event.header.kind == "flagged") {
            let call = &calls[event.header.call_id.as_deref().unwrap()];
            let key = CallerDay::key_of(call).unwrap();
            days.entry(key).or_default().add(&DayCounts::flag(), 1);
        }
    }
    for report in store.reports_after(None, 1000).await.unwrap() {
        let key = CallerDay::key_of(&calls[&report.call_id]).unwrap();
        days.entry(key).or_default().add(&DayCounts::report(), 1);
    }
    days
}

/// Every stored `caller_days` row's `since_previous_days`.
async fn stored_gaps(store: &SqlStore) -> BTreeMap<CallerDayKey, Option<i64>> {
    use sqlx::Row;
    sqlx::query(
        "SELECT caller_number, day, court_name, line_number, since_previous_days \
         FROM caller_days",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
    .iter()
    .map(|row| {
        (
            (
                row.get("caller_number"),
                row.get("day"),
                row.get("court_name"),
                row.get("line_number"),
            ),
            row.get("since_previous_days"),
        )
    })
    .collect()
}

/// What `since_previous_days` should be for rows `gaps` has: days since the
/// caller's previous row in key order, `None` for their first.
fn expected_gaps(
    gaps: &BTreeMap<CallerDayKey, Option<i64>>,
) -> BTreeMap<CallerDayKey, Option<i64>> {
    let mut previous: Option<&CallerDayKey> = None;
    let mut expected = BTreeMap::new();
    for key in gaps.keys() {
        let gap = previous
            .filter(|before| before.0 == key.0)
            .map(|before| key.1 - before.1);
        expected.insert(key.clone(), gap);
        previous = Some(key);
    }
    expected
}

/// `caller_days` as kept at ingest equals a scan: calls over two UTC days, several
/// from one caller, one interrupted by a switchboard restart and then ended after
/// all, flags and a report; and after a purge past retention, the scan of what is
/// left (the flagged and reported calls, on legal hold): nothing of a purged call.
/// Each row's `since_previous_days`, kept as rows come (also before and between a
/// caller's rows) and go, is what migration 0015 computes from the rows.
async fn caller_days_match_a_scan(db: Db) {
    let service = Service::start(&settings(&db)).await;
    let mut loopback = service.client(None).await;
    // Calls 1–40 from callers of their own; 41–60 from one caller, across midnight.
    let regular = |n: u32| {
        let mut record = record(n);
        if n > 40 {
            record.caller_number = "13955550000".into();
            record.received_at_ms += i64::from(n - 40) * 3_600_000;
        }
        record
    };
    let mut events = vec![node_started()];
    for n in 1..=60 {
        events.push(NodeEvent {
            at_ms: regular(n).ended_at_ms,
            call_id: call_id(n),
            kind: Some(Kind::Ended(regular(n))),
            ..NodeEvent::default()
        });
    }
    // Call 61 is up when the switchboard restarts (interrupted), then ends after all.
    events.push(milestone(61, courtline::contract::pb::Milestone::Received));
    events.push(node_started());
    events.push(ended(61));
    loopback
        .log_events(LogEventsRequest {
            events: numbered("sb-1", 1, events),
        })
        .await
        .unwrap();
    // Late records of the same caller: one before all their rows (the first row
    // changes), one between them (a new court on their first day).
    let late = |n: u32, hours: i64, court: &str| {
        let mut record = regular(41);
        record.call_id = call_id(n);
        record.sip_call_id = format!("{n}@caller.test");
        record.received_at_ms += hours * 3_600_000;
        record.ended_at_ms += hours * 3_600_000;
        record.court_name = court.into();
        NodeEvent {
            at_ms: record.ended_at_ms,
            call_id: record.call_id.clone(),
            kind: Some(Kind::Ended(record)),
            ..NodeEvent::default()
        }
    };
    loopback
        .log_events(LogEventsRequest {
            events: numbered(
                "sb-2",
                1,
                vec![
                    late(62, -72, "上海市第一中级人民法院"),
                    late(63, 0, "上海市第二中级人民法院"),
                ],
            ),
        })
        .await
        .unwrap();
    for n in [3, 45, 45] {
        loopback
            .flag_call(FlagCallRequest {
                call_id: call_id(n),
                category: FlagCategory::Other as i32,
                note: "复核".into(),
            })
            .await
            .unwrap();
    }
    loopback
        .open_report(courtline::contract::pb::OpenReportRequest {
            call_id: call_id(50),
            opened_via: courtline::contract::pb::ReportOpenedVia::Cli as i32,
            form: None,
        })
        .await
        .unwrap();
    let store = SqlStore::open(&db.url).await.unwrap();
    let scanned = scanned_days(&store).await;
    let callers: Vec<String> = scanned
        .keys()
        .map(|key| key.0.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(stored_days(&store, &callers).await, scanned);
    let together: i64 = scanned
        .iter()
        .filter(|(key, _)| key.0 == "13955550000")
        .map(|(_, counts)| counts.calls)
        .sum();
    assert_eq!(
        together, 22,
        "one caller's calls over three days and three courts"
    );
    let gaps = stored_gaps(&store).await;
    assert_eq!(gaps, expected_gaps(&gaps));
    assert!(gaps.values().any(|gap| *gap == Some(0)) && gaps.values().any(|gap| *gap == Some(3)));
    // The calls of 2023 are past retention: a purge leaves the held ones.
    loopback
        .purge(PurgeRequest { dry_run: false })
        .await
        .unwrap();
    let left = scanned_days(&store).await;
    assert!(left.len() < scanned.len() && !left.is_empty(), "{left:?}");
    assert_eq!(stored_days(&store, &callers).await, left);
    let gaps = stored_gaps(&store).await;
    assert_eq!(gaps, expected_gaps(&gaps));
    service.stop().await;
    // The backfill: migrations 0011 and 0015 run again on the filled store rebuild
    // the same rows, with the same gaps.
    for statement in [
        "DROP TABLE caller_days",
        "DROP TABLE pattern_matches",
        "DELETE FROM _sqlx_migrations WHERE version IN (11, 15)",
    ] {
        sqlx::query(statement).execute(store.pool()).await.unwrap();
    }
    store.close().await;
    let reopened = SqlStore::open(&db.url).await.unwrap();
    assert_eq!(stored_days(&reopened, &callers).await, left);
    assert_eq!(stored_gaps(&reopened).await, gaps);
    reopened.close().await;
}

/// Finding candidates among the repeat rows (`repeat_gap_days`) finds what reading
/// every row finds: random callers' calls stored out of order in small batches,
/// every pattern at thresholds 1–3 (1 and a 92-day window read the whole range),
/// windows of 1–7 days, over ranges that cut callers' calls off. Planted: a caller
/// whose previous call lies before the range (found on the calls inside it only),
/// one with one call inside the range and one the day before it (not found), two
/// calls 3 days apart (found in a 4-day window, not a 3-day one), and two hang-ups
/// on one line in one day (one row of 2 calls).
async fn repeat_rows_find_what_a_full_read_finds(db: Db) {
    let service = Service::start(&settings(&db)).await;
    let mut loopback = service.client(None).await;
    let mut history = History::default();
    let ordinary = EndReason::CallerHungUp;
    let day = |day: i64| at(day, 10, 0);
    history.call("13600000001", 1, 0, day(7), ordinary);
    history.call("13600000001", 2, 0, day(10), ordinary);
    history.call("13600000001", 3, 0, day(11), ordinary);
    history.call("13600000002", 1, 0, day(9), ordinary);
    history.call("13600000002", 2, 0, day(10), ordinary);
    history.call("13600000003", 1, 0, day(12), ordinary);
    history.call("13600000003", 2, 0, day(15), ordinary);
    let hung_up = EndReason::CallerHungUpDuringPrompt;
    history.call("13600000004", 1, 0, at(13, 9, 0), hung_up);
    history.call("13600000004", 1, 0, at(13, 9, 5), hung_up);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for caller in 0..80u64 {
        for _ in 0..=rng.below(8) {
            let end_reason = match rng.below(5) {
                0 => hung_up,
                1 => EndReason::AfterHours,
                _ => ordinary,
            };
            history.call(
                &format!("1350000{caller:04}"),
                rng.below(5) as u32,
                rng.below(2) as u32,
                at(rng.below(40) as i64, 8 + rng.below(10) as i64, 0),
                end_reason,
            );
        }
    }
    // Out of order, so rows arrive before and between a caller's rows.
    let mut calls = history.calls.clone();
    for n in (1..calls.len()).rev() {
        calls.swap(n, rng.below(n as u64 + 1) as usize);
    }
    let mut seq = 1;
    for batch in calls.chunks(23) {
        seq = send(&mut loopback, "sb-1", seq, batch).await;
    }
    let store = SqlStore::open(&db.url).await.unwrap();
    let gaps = stored_gaps(&store).await;
    assert_eq!(gaps, expected_gaps(&gaps));
    let callers: Vec<String> = gaps
        .keys()
        .map(|key| key.0.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let rows = store
        .caller_day_rows(&callers, i64::MIN / 2, i64::MAX / 2)
        .await
        .unwrap();
    let query = |kind, threshold, window_days, first: i64, last: i64| PatternQuery {
        kind,
        threshold,
        window_days,
        first_day: FIRST_DAY + first,
        last_day: FIRST_DAY + last,
    };
    let mut found = 0;
    for kind in [
        PatternKind::Courts,
        PatternKind::Lines,
        PatternKind::RepeatedCalls,
        PatternKind::WarningHangUps,
        PatternKind::AfterHours,
    ] {
        for threshold in 1..=3 {
            for window_days in [1, 2, 4, 7, 92] {
                for (first, last) in [(0, 40), (10, 20), (15, 16)] {
                    let query = query(kind, threshold, window_days, first, last);
                    let hits = search(&store, &query, None).await.unwrap().hits;
                    assert_eq!(hits, find(&query, &rows), "{query:?}");
                    found += hits.len();
                }
            }
        }
    }
    assert!(found > 100, "only {found} hits: the comparison says little");
    let callers_of = |query: PatternQuery| {
        let store = &store;
        async move {
            search(store, &query, None)
                .await
                .unwrap()
                .hits
                .into_iter()
                .map(|hit| hit.caller_number)
                .filter(|caller| caller.starts_with("136"))
                .collect::<BTreeSet<String>>()
        }
    };
    let courts = PatternKind::Courts;
    assert_eq!(
        callers_of(query(courts, 2, 2, 10, 20)).await,
        set(&["13600000001".to_owned()]),
        "two courts on days 10 and 11; the earlier call before the range does not count"
    );
    assert!(callers_of(query(courts, 3, 7, 10, 20)).await.is_empty());
    assert_eq!(
        callers_of(query(courts, 3, 7, 7, 20)).await,
        set(&["13600000001".to_owned()])
    );
    assert_eq!(
        callers_of(query(courts, 2, 7, 9, 20)).await,
        set(&[
            "13600000001".to_owned(),
            "13600000002".to_owned(),
            "13600000003".to_owned()
        ])
    );
    assert_eq!(
        callers_of(query(courts, 2, 3, 12, 20)).await,
        BTreeSet::new(),
        "days 12 and 15 are not within 3 days"
    );
    assert_eq!(
        callers_of(query(courts, 2, 4, 12, 20)).await,
        set(&["13600000003".to_owned()])
    );
    assert_eq!(
        callers_of(query(PatternKind::WarningHangUps, 2, 1, 13, 13)).await,
        set(&["13600000004".to_owned()])
    );
    service.stop().await;
    store.close().await;
}

/// `courtline patterns` as a child process against a real service (the loopback
/// rule): the broker in JSON, CSV and table form, and the table's drill-down
/// arguments given to `courtline calls list` list exactly the broker's calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_hits_with_their_drill_down() {
    let db = sqlite_db();
    let service = Service::start(&settings(&db)).await;
    let mut history = History::default();
    let broker = plant_before_flag(&mut history).broker;
    let mut loopback = service.client(None).await;
    send(&mut loopback, "sb-1", 1, &history.calls).await;
    let endpoint = service.endpoint();
    let run = |args: Vec<String>| {
        let endpoint = endpoint.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let output = std::process::Command::new(courtline_bin())
                    .args(&args)
                    .args(["--endpoint", &endpoint])
                    .env_remove("RUST_LOG")
                    .env("TZ", "UTC")
                    .output()
                    .unwrap();
                assert!(
                    output.status.success(),
                    "{args:?}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                String::from_utf8(output.stdout).unwrap()
            })
            .await
            .unwrap()
        }
    };
    let search = |format: &str| -> Vec<String> {
        [
            "patterns",
            "courts",
            "--threshold",
            "6",
            "--window-days",
            "3",
            "--since",
            "2026-09-01",
            "--until",
            "2026-11-01",
            "--format",
            format,
        ]
        .map(String::from)
        .to_vec()
    };
    let json: serde_json::Value = serde_json::from_str(&run(search("json")).await).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1, "{json}");
    assert_eq!(json[0]["caller_number"], BROKER);
    assert_eq!(json[0]["count"], 6);
    let csv = run(search("csv")).await;
    assert!(
        csv.starts_with("pattern,caller_number,court_name,count,"),
        "{csv}"
    );
    let table = run(search("table")).await;
    let drill_down = table
        .lines()
        .find_map(|line| line.trim().strip_prefix("courtline calls list "))
        .unwrap_or_else(|| panic!("no drill-down in {table}"))
        .to_owned();
    let mut args: Vec<String> = ["calls", "list", "--format", "json"]
        .map(String::from)
        .to_vec();
    args.extend(drill_down.split(' ').map(str::to_owned));
    let calls: serde_json::Value = serde_json::from_str(&run(args).await).unwrap();
    let listed: BTreeSet<String> = calls
        .as_array()
        .unwrap()
        .iter()
        .map(|call| call["call_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, set(&broker));
    service.stop().await;
}

on_both_backends!(
    planted_patterns_are_found,
    caller_days_match_a_scan,
    repeat_rows_find_what_a_full_read_finds
);
