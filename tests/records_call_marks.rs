//! The calls search's "has report" and "has recording" filters and its match count,
//! on SQLite and PostgreSQL, through the gRPC service: the marks follow reports and
//! kept recordings, a count comes with the first page only and stops at its cap, and
//! verify notices a mark changed behind the service's back.

mod records_common;

use courtline::contract::pb::node_event::Kind;
use courtline::contract::pb::{
    CallFilter, Choice, ListCallsRequest, NodeEvent, OpenReportRequest, RecordingFinished,
    ReportOpenedVia, VerifyRequest,
};
use courtline::records::store::{Backend, CallQuery, SqlStore, Store};
use records_common::{call_id, complete_calls, numbered, settings, short_ids, Db, Service};
use sha2::Digest;

/// The recording event of call `n`: a file in `dir` kept (`always`) or, for
/// `on_report` without a report or flag, deleted.
fn recording(n: u32, dir: &std::path::Path, policy: &str) -> NodeEvent {
    let audio = format!("RIFF audio of call {n}").into_bytes();
    let path = dir.join(format!("call-{n}.wav"));
    std::fs::write(&path, &audio).unwrap();
    NodeEvent {
        at_ms: 1_800_000_000_000,
        call_id: call_id(n),
        kind: Some(Kind::Recording(RecordingFinished {
            path: path.display().to_string(),
            sha256: hex::encode(sha2::Sha256::digest(&audio)),
            bytes: audio.len() as u64,
            sample_rate: 8000,
            channels: 2,
            format: "wav".into(),
            duration_ms: 1000,
            policy: policy.into(),
            ..RecordingFinished::default()
        })),
        ..NodeEvent::default()
    }
}

async fn marks_filter_and_the_count_is_capped(db: Db) {
    let service = Service::start(&settings(&db)).await;
    // The loopback rule: no token issued yet.
    let mut client = service.client(None).await;
    let mut events = complete_calls(1..=6);
    events.push(recording(2, db.dir.path(), "always"));
    events.push(recording(3, db.dir.path(), "on_report"));
    client
        .log_events(courtline::contract::pb::LogEventsRequest {
            events: numbered("sb-marks", 1, events),
        })
        .await
        .unwrap();
    client
        .open_report(OpenReportRequest {
            call_id: call_id(4),
            opened_via: ReportOpenedVia::Cli as i32,
            form: None,
        })
        .await
        .unwrap();

    let list = |filter: CallFilter, page_size: u32, page_token: String| {
        let mut client = client.clone();
        async move {
            client
                .list_calls(ListCallsRequest {
                    filter: Some(filter),
                    page_size,
                    page_token,
                    ..ListCallsRequest::default()
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let ids = |report: Choice, recorded: Choice| {
        let filter = CallFilter {
            has_report: report as i32,
            has_recording: recorded as i32,
            ..CallFilter::default()
        };
        let page = list(filter, 0, String::new());
        async move {
            let page = page.await;
            assert_eq!(page.total, page.records.len() as u64);
            short_ids(&page.records)
        }
    };
    assert_eq!(ids(Choice::Yes, Choice::Any).await, [4]);
    assert_eq!(ids(Choice::No, Choice::Any).await, [6, 5, 3, 2, 1]);
    // Call 3's on_report recording was deleted: nothing to play.
    assert_eq!(ids(Choice::Any, Choice::Yes).await, [2]);
    assert_eq!(ids(Choice::No, Choice::No).await, [6, 5, 3, 1]);

    // The count comes with the first page, not with the next.
    let first = list(CallFilter::default(), 2, String::new()).await;
    assert_eq!((first.total, first.total_capped), (6, false));
    let second = list(CallFilter::default(), 2, first.next_page_token).await;
    assert_eq!((second.records.len(), second.total), (2, 0));

    // The cap, at the store: counting stops one past it.
    let store = SqlStore::open(&db.url).await.unwrap();
    assert_eq!(
        store.count_calls(&CallFilter::default(), 3).await.unwrap(),
        4
    );
    assert_eq!(
        store.count_calls(&CallFilter::default(), 10).await.unwrap(),
        6
    );
    let name_search = CallFilter {
        caller_name_contains: "王五".into(),
        ..CallFilter::default()
    };
    assert_eq!(
        store.count_calls(&name_search, 10).await.unwrap(),
        1,
        "call 4 only"
    );
    // SQLite walks the partial indexes (PostgreSQL's planner scans a table this small).
    if store.backend() == Backend::Sqlite {
        for (filter, index) in [
            (
                CallFilter {
                    has_report: Choice::Yes as i32,
                    ..CallFilter::default()
                },
                "calls_reported",
            ),
            (
                CallFilter {
                    has_recording: Choice::Yes as i32,
                    ..CallFilter::default()
                },
                "calls_recorded",
            ),
        ] {
            let query = CallQuery {
                filter,
                ..CallQuery::default()
            };
            let plan = store.explain_list_calls(&query).await.unwrap();
            assert!(plan.iter().any(|step| step.contains(index)), "{plan:?}");
        }
    }

    let intact = client.verify(VerifyRequest {}).await.unwrap().into_inner();
    assert!(intact.findings.is_empty(), "{:?}", intact.findings);
    // Hiding the reported call from "has report" is found.
    sqlx::query("UPDATE calls SET has_report = 0 WHERE call_id = $1")
        .bind(call_id(4))
        .execute(store.pool())
        .await
        .unwrap();
    let tampered = client.verify(VerifyRequest {}).await.unwrap().into_inner();
    assert!(
        tampered
            .findings
            .iter()
            .any(|finding| finding.kind == "projection"
                && finding.call_id == call_id(4)
                && finding.detail.contains("has_report")),
        "{:?}",
        tampered.findings
    );
    store.close().await;
    service.stop().await;
}

on_both_backends!(marks_filter_and_the_count_is_capped);
