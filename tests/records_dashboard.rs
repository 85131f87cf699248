//! The dashboard's per-day-per-court figures against a scan, on both backends:
//! after calls (over two UTC days, some interrupted and then ended after all),
//! flags and reports through a real records service, the counters kept at ingest
//! equal what a scan of the calls, flag events and reports adds up to; so does the
//! migration's backfill of an existing store. Also the records' health: the last
//! checkpoint, each switchboard's last event, the last verification kept.

mod records_common;

use std::collections::BTreeMap;

use courtline::contract::pb::node_event::Kind;
use courtline::contract::pb::{
    AddTokenRequest, FlagCallRequest, FlagCategory, LogEventsRequest, Milestone, NodeEvent,
    OpenReportRequest, ReportOpenedVia, Role, VerifyRequest,
};
use courtline::records::dashboard::{day_of, Tally};
use courtline::records::store::{SqlStore, Store};
use records_common::*;

/// Call `n`'s final event; every third call was connected after a wait of
/// `n % 40` seconds from the end of the warning.
fn finished(n: u32) -> NodeEvent {
    let mut full = record(n);
    // Operator op-li took every call (an operator reports only calls it took).
    full.operator_uri = "sip:op-li@pbx.court.test".into();
    if full.operator_answered_at_ms != 0 {
        full.prompt_ended_at_ms = full.operator_answered_at_ms - i64::from(n % 40) * 1_000;
    }
    NodeEvent {
        kind: Some(Kind::Ended(full)),
        ..ended(n)
    }
}

/// Figures by (day, court), all-zero rows left out, as the store keeps them.
async fn stored(store: &SqlStore) -> BTreeMap<(i64, String), Tally> {
    store
        .daily_figures(i64::MIN / 2, i64::MAX / 2)
        .await
        .unwrap()
        .into_iter()
        .filter(|row| !row.tally.is_zero())
        .map(|row| ((row.day, row.court_name), row.tally))
        .collect()
}

/// The same figures from a scan of every call, flag event and report.
async fn scanned(store: &SqlStore) -> BTreeMap<(i64, String), Tally> {
    let mut figures: BTreeMap<(i64, String), Tally> = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let calls = store.calls_after(after.as_deref(), 100).await.unwrap();
        let Some(last) = calls.last() else { break };
        after = Some(last.call_id.clone());
        for call in &calls {
            if let Some(tally) = Tally::of_call(call) {
                let key = (day_of(call.received_at_ms), call.court_name.clone());
                figures.entry(key).or_default().add(&tally, 1);
            }
        }
    }
    let mut seq = 0;
    loop {
        let events = store.events_after(seq, 500).await.unwrap();
        let Some(last) = events.last() else { break };
        seq = last.seq;
        for event in events.iter().filter(|event| event.header.kind == "flagged") {
            let call_id = event.header.call_id.as_deref().unwrap();
            let call = store.get_call(call_id).await.unwrap().unwrap();
            let key = (day_of(event.header.at_ms), call.court_name);
            figures.entry(key).or_default().add(&Tally::flag(), 1);
        }
    }
    for report in store.reports_after(None, 1000).await.unwrap() {
        let key = (day_of(report.opened_at_ms), report.court_name.clone());
        figures.entry(key).or_default().add(&Tally::report(), 1);
    }
    figures
}

async fn counters_match_a_scan(db: Db) {
    let service = Service::start(&settings(&db)).await;
    let admin_token = service
        .client(None)
        .await
        .add_token(AddTokenRequest {
            name: "admin-1".into(),
            role: Role::Admin as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let admin = service.client(Some(&admin_token)).await;
    let token = |name: &str, role: Role| {
        let request = AddTokenRequest {
            name: name.into(),
            role: role as i32,
        };
        let mut admin = admin.clone();
        async move { admin.add_token(request).await.unwrap().into_inner().token }
    };
    let switchboard = service
        .client(Some(&token("sb-1", Role::Switchboard).await))
        .await;
    let operator = service
        .client(Some(&token("op-li", Role::Operator).await))
        .await;
    let compliance = service
        .client(Some(&token("comp-wang", Role::Compliance).await))
        .await;
    let auditor = service
        .client(Some(&token("audit-chen", Role::Auditor).await))
        .await;

    // Calls 1–30 on 2023-11-14 (UTC), 6390–6420 across midnight; 100 and 101 are
    // received, interrupted by a switchboard restart, and 100 ends after all.
    let mut events = Vec::new();
    for n in (1..=30).chain(6390..=6420) {
        events.push(milestone(n, Milestone::Received));
        events.push(milestone(n, Milestone::PromptStarted));
        events.push(finished(n));
    }
    let restart = events.len() + 3;
    events.extend([
        milestone(100, Milestone::Received),
        milestone(101, Milestone::Received),
        node_started(),
        finished(100),
    ]);
    let events = numbered("sb-1", 1, events);
    // Batches of 40 (a call's events land in one commit or in several); call 100
    // ends in a commit after the one that interrupted it.
    let (before, after) = events.split_at(restart);
    for batch in before.chunks(40).chain([after]) {
        switchboard
            .clone()
            .log_events(LogEventsRequest {
                events: batch.to_vec(),
            })
            .await
            .unwrap();
    }
    for n in [1, 6400, 6400] {
        compliance
            .clone()
            .flag_call(FlagCallRequest {
                call_id: call_id(n),
                category: FlagCategory::Intercession as i32,
                note: "说情打招呼".into(),
            })
            .await
            .unwrap();
    }
    for n in [2, 6401] {
        operator
            .clone()
            .open_report(OpenReportRequest {
                call_id: call_id(n),
                opened_via: ReportOpenedVia::Cli as i32,
                form: None,
            })
            .await
            .unwrap();
    }
    auditor.clone().verify(VerifyRequest {}).await.unwrap();

    let store = SqlStore::open(&db.url).await.unwrap();
    let kept = stored(&store).await;
    let scan = scanned(&store).await;
    assert_eq!(kept, scan);
    // The scan is not empty or trivial: both days, both courts, every kind of figure.
    let calls: i64 = kept.values().map(|tally| tally.calls).sum();
    assert_eq!(calls, 30 + 31 + 2);
    let total = kept.values().fold(Tally::default(), |mut sum, tally| {
        sum.add(tally, 1);
        sum
    });
    assert_eq!((total.flags, total.reports), (3, 2));
    assert!(total.answered > 0 && total.answered_within[0] > 0 && total.hung_up_in_warning > 0);
    let days: std::collections::BTreeSet<i64> = kept
        .iter()
        .filter(|(_, tally)| tally.calls > 0)
        .map(|((day, _), _)| *day)
        .collect();
    assert_eq!(days.len(), 2, "{kept:?}");

    // Health: a checkpoint, the switchboard's last event, the verification.
    let health = store.records_health().await.unwrap();
    assert!(health.last_checkpoint.is_some_and(|(seq, _)| seq > 0));
    assert_eq!(health.nodes.len(), 1);
    assert_eq!(health.nodes[0].node_id, "sb-1");
    assert_eq!(health.nodes[0].node_seq, events.len() as i64);
    let verification = health.last_verification.unwrap();
    assert_eq!(
        (verification.actor.as_str(), verification.findings),
        ("audit-chen", 0)
    );
    assert!(verification.events_checked > events.len() as i64);
    service.stop().await;

    // The backfill: migration 0007 run again on the filled store rebuilds the same figures.
    sqlx::query("DROP TABLE daily_court_figures")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("DROP TABLE last_verification")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 7")
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    let reopened = SqlStore::open(&db.url).await.unwrap();
    assert_eq!(stored(&reopened).await, scan);
    reopened.close().await;
}

on_both_backends!(counters_match_a_scan);
