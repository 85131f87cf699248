//! The records service end to end over real gRPC on loopback: ingest, queries,
//! timelines, flags, gaps, interrupted calls, retention, exports and verification.
//! Every test runs on SQLite and on PostgreSQL (see `records_common::postgres_db`).

mod records_common;

use courtline::contract::pb::export_calls_response::Item;
use courtline::contract::pb::node_event::Kind;
use courtline::contract::pb::{
    CallFilter, CallState, Choice, ConfigApplied, EndReason, ExportCallsRequest, ExportFormat,
    FlagCallRequest, FlagCategory, GetCallRequest, ListCallsRequest, ListConfigChangesRequest,
    ListGapsRequest, LogEventsRequest, Milestone, NodeEvent, SortOrder, VerifyRequest,
};
use courtline::records::export::verify_export;
use courtline::records::store::{SqlStore, Store};
use records_common::*;

async fn log(
    client: &mut courtline::contract::connect::RecordsClient,
    events: Vec<courtline::contract::pb::NodeEvent>,
) -> (u32, u32) {
    let response = client
        .log_events(LogEventsRequest { events })
        .await
        .unwrap()
        .into_inner();
    (response.stored, response.duplicates)
}

/// Call `n`'s record as the service returns it.
async fn stored_call(
    client: &mut courtline::contract::connect::RecordsClient,
    n: u32,
) -> courtline::contract::pb::CallRecord {
    client
        .get_call(GetCallRequest {
            call_id: call_id(n),
        })
        .await
        .unwrap()
        .into_inner()
        .record
        .unwrap()
}

async fn list(
    client: &mut courtline::contract::connect::RecordsClient,
    filter: CallFilter,
) -> Vec<u32> {
    let page = client
        .list_calls(ListCallsRequest {
            filter: Some(filter),
            page_size: 1000,
            ..ListCallsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    short_ids(&page.records)
}

async fn events_are_idempotent_and_calls_are_projected(db: Db) {
    let service = Service::start(&settings(&db)).await;
    let mut client = service.client(None).await;
    let events = numbered("sb-1", 1, complete_calls(1..=3));
    assert_eq!(log(&mut client, events.clone()).await, (12, 0));
    // A retry after a lost acknowledgement stores nothing twice.
    assert_eq!(log(&mut client, events).await, (0, 12));
    // Half old, half new.
    let more = numbered("sb-1", 9, complete_calls(3..=4));
    assert_eq!(log(&mut client, more).await, (4, 4));
    // A call still in progress is listed only when asked for.
    let open = numbered("sb-1", 17, vec![milestone(5, Milestone::Received)]);
    assert_eq!(log(&mut client, open).await, (1, 0));
    assert_eq!(
        list(&mut client, CallFilter::default()).await,
        vec![4, 3, 2, 1]
    );
    let in_progress = CallFilter {
        states: vec![CallState::InProgress as i32],
        ..CallFilter::default()
    };
    assert_eq!(list(&mut client, in_progress).await, vec![5]);

    let call = client
        .get_call(GetCallRequest {
            call_id: call_id(2),
        })
        .await
        .unwrap()
        .into_inner();
    let record = call.record.unwrap();
    assert_eq!(record.state, CallState::Ended as i32);
    assert_eq!(record.node_id, "sb-1");
    assert_eq!(record.court_name, "上海市高级人民法院");
    // Each prompt of the playlist comes back as sent, in order.
    assert_eq!(record.prompts, records_common::record(2).prompts);
    assert_eq!(record.prompts.len(), 2);
    // Per-leg media figures come back exactly (RTT present for this one).
    assert_eq!(record.caller_media, records_common::record(2).caller_media);
    assert!(record.caller_media.unwrap().rtt_us.is_some());
    assert_eq!(record.operator_media, None);
    let bridged = stored_call(&mut client, 1).await;
    assert_eq!(
        bridged.operator_media,
        records_common::record(1).operator_media
    );
    assert_eq!(bridged.caller_media.unwrap().rtt_us, None);
    let kinds: Vec<&str> = call.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["received", "answered", "prompt_started", "ended"]);
    assert!(call
        .timeline
        .iter()
        .all(|e| e.node_id == "sb-1" && e.hash.len() == 64));

    // A different event under a used key is refused, never stored over the first.
    let mut forged = numbered("sb-1", 1, complete_calls([9]));
    forged.truncate(1);
    let status = client
        .log_events(LogEventsRequest { events: forged })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");

    let report = client.verify(VerifyRequest {}).await.unwrap().into_inner();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    service.stop().await;
}

/// The calls upsert leaves the indexed arrival columns (time, line, court, caller) alone
/// for a known call; an event that does change them must still rewrite the row.
async fn an_event_changing_a_calls_arrival_columns_rewrites_its_row(db: Db) {
    let service = Service::start(&settings(&db)).await;
    let mut client = service.client(None).await;
    let received = numbered("sb-1", 1, vec![milestone(1, Milestone::Received)]);
    assert_eq!(log(&mut client, received).await, (1, 0));
    let mut moved = ended(1);
    if let Some(Kind::Ended(record)) = &mut moved.kind {
        record.received_at_ms += 1;
        record.line_number = "12999".into();
        record.court_name = "上海海事法院".into();
        record.caller_number = "02100000000".into();
    }
    // With an unchanged call in the same statement, which must come out right too.
    let events = numbered("sb-1", 2, vec![moved, milestone(2, Milestone::Received)]);
    assert_eq!(log(&mut client, events).await, (2, 0));
    let row = stored_call(&mut client, 1).await;
    assert_eq!(
        (
            row.received_at_ms,
            row.line_number.as_str(),
            row.court_name.as_str(),
            row.caller_number.as_str(),
            row.state,
        ),
        (
            records_common::record(1).received_at_ms + 1,
            "12999",
            "上海海事法院",
            "02100000000",
            CallState::Ended as i32
        )
    );
    let by_line = CallFilter {
        line_number: "12999".into(),
        ..CallFilter::default()
    };
    assert_eq!(list(&mut client, by_line).await, vec![1]);
    let report = client.verify(VerifyRequest {}).await.unwrap().into_inner();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    service.stop().await;
}

async fn filters_sort_and_pagination(db: Db) {
    let service = Service::start(&settings(&db)).await;
    let mut client = service.client(None).await;
    log(&mut client, numbered("sb-1", 1, complete_calls(1..=12))).await;
    let all = list(&mut client, CallFilter::default()).await;
    assert_eq!(all, (1..=12).rev().collect::<Vec<_>>());
    let cases = [
        (
            CallFilter {
                since_ms: record(3).received_at_ms,
                until_ms: record(6).received_at_ms,
                ..CallFilter::default()
            },
            vec![5, 4, 3],
        ),
        (
            CallFilter {
                line_number: "12368".into(),
                ..CallFilter::default()
            },
            vec![12, 10, 8, 6, 4, 2],
        ),
        (
            CallFilter {
                court_name: "上海市第一中级人民法院".into(),
                ..CallFilter::default()
            },
            vec![11, 9, 7, 5, 3, 1],
        ),
        (
            CallFilter {
                caller_prefix: "1390000001".into(),
                ..CallFilter::default()
            },
            vec![12, 11, 10],
        ),
        (
            CallFilter {
                caller_prefix: "13900000010".into(),
                caller_exact: true,
                ..CallFilter::default()
            },
            vec![10],
        ),
        (
            CallFilter {
                caller_prefix: "1390000001".into(),
                caller_exact: true,
                ..CallFilter::default()
            },
            vec![],
        ),
        (
            CallFilter {
                caller_name_contains: "律师".into(),
                ..CallFilter::default()
            },
            vec![12, 8, 4],
        ),
        (
            CallFilter {
                end_reason: EndReason::CallerHungUpDuringPrompt as i32,
                ..CallFilter::default()
            },
            vec![12, 9, 6, 3],
        ),
        (
            CallFilter {
                prompt_completed: Choice::No as i32,
                ..CallFilter::default()
            },
            vec![12, 9, 6, 3],
        ),
        (
            CallFilter {
                connected: Choice::Yes as i32,
                ..CallFilter::default()
            },
            vec![10, 7, 4, 1],
        ),
        (
            CallFilter {
                connected: Choice::No as i32,
                line_number: "12345".into(),
                ..CallFilter::default()
            },
            vec![11, 9, 5, 3],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(
            list(&mut client, filter.clone()).await,
            expected,
            "{filter:?}"
        );
    }

    // Pages of 5, oldest first, cover everything once.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_calls(ListCallsRequest {
                sort: SortOrder::OldestFirst as i32,
                page_size: 5,
                page_token: token.clone(),
                ..ListCallsRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(short_ids(&page.records));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, (1..=12).collect::<Vec<_>>());
    let bad = client
        .list_calls(ListCallsRequest {
            page_token: "garbage!".into(),
            ..ListCallsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    service.stop().await;
}

async fn node_restart_marks_open_calls_interrupted_and_gaps_show(db: Db) {
    let service = Service::start(&settings(&db)).await;
    let mut client = service.client(None).await;
    // Call 1 completes, call 2 is cut mid-prompt, then the switchboard restarts (same batch).
    let mut events = complete_calls([1]);
    events.push(milestone(2, Milestone::Received));
    events.push(milestone(2, Milestone::PromptStarted));
    events.push(node_started());
    log(&mut client, numbered("sb-1", 1, events)).await;
    let interrupted = CallFilter {
        states: vec![CallState::Interrupted as i32],
        ..CallFilter::default()
    };
    assert_eq!(list(&mut client, interrupted).await, vec![2]);
    let call = client
        .get_call(GetCallRequest {
            call_id: call_id(2),
        })
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<&str> = call.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["received", "prompt_started", "interrupted"]);

    // Node sb-2 skips 3..=4.
    log(
        &mut client,
        numbered("sb-2", 1, complete_calls([7]).into_iter().take(2).collect()),
    )
    .await;
    log(&mut client, numbered("sb-2", 5, vec![node_started()])).await;
    let gaps = client
        .list_gaps(ListGapsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gaps.gaps.len(), 1, "{gaps:?}");
    assert_eq!(
        (
            gaps.gaps[0].node_id.as_str(),
            gaps.gaps[0].first,
            gaps.gaps[0].last
        ),
        ("sb-2", 3, 4)
    );
    let report = client.verify(VerifyRequest {}).await.unwrap().into_inner();
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    assert_eq!(report.findings[0].kind, "gap");
    service.stop().await;
}

async fn flags_exports_and_retention(db: Db) {
    let settings = settings(&db);
    let service = Service::start(&settings).await;
    let mut client = service.client(None).await;
    log(&mut client, numbered("sb-1", 1, complete_calls(1..=4))).await;
    let flag = client
        .flag_call(FlagCallRequest {
            call_id: call_id(2),
            category: FlagCategory::Intercession as i32,
            note: "asked to \"put in a word\" for the defendant".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(flag.seq > 0);
    let unknown = client
        .flag_call(FlagCallRequest {
            call_id: call_id(99),
            category: FlagCategory::Other as i32,
            note: "hung up when asked for a name".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    // "Other" says nothing by itself: the service wants a note with it.
    let unexplained = client
        .flag_call(FlagCallRequest {
            call_id: call_id(3),
            category: FlagCategory::Other as i32,
            note: "  ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unexplained.code(), tonic::Code::InvalidArgument);
    assert!(
        unexplained.message().contains("needs a note"),
        "{unexplained:?}"
    );
    let flagged = CallFilter {
        flagged: Choice::Yes as i32,
        ..CallFilter::default()
    };
    assert_eq!(list(&mut client, flagged.clone()).await, vec![2]);
    // Listings carry the flags themselves: category, note, who and when.
    let page = client
        .list_calls(ListCallsRequest {
            filter: Some(flagged),
            ..ListCallsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let listed = &page.records[0].flags;
    assert_eq!(listed.len(), 1, "{:?}", page.records[0]);
    assert_eq!(listed[0].category, FlagCategory::Intercession as i32);
    assert_eq!(listed[0].flagged_by, "loopback");
    assert!(listed[0].note.contains("put in a word"));
    assert!(listed[0].flagged_at_ms > 0);
    // A short id finds its call through the id-prefix filter, in any state.
    let by_prefix = |prefix: &str| CallFilter {
        call_id_prefix: prefix.to_owned(),
        states: vec![
            CallState::Ended as i32,
            CallState::Interrupted as i32,
            CallState::InProgress as i32,
        ],
        ..CallFilter::default()
    };
    assert_eq!(list(&mut client, by_prefix(&call_id(3))).await, vec![3]);
    assert_eq!(
        list(&mut client, by_prefix("7d9e4c1a-0000")).await,
        vec![4, 3, 2, 1]
    );
    assert!(list(&mut client, by_prefix("7d9e4c1b")).await.is_empty());
    let call = client
        .get_call(GetCallRequest {
            call_id: call_id(2),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(call.flags.len(), 1);
    assert_eq!(call.flags[0].flagged_by, "loopback");
    assert_eq!(call.timeline.last().unwrap().kind, "flagged");

    // Export streams every match and ends with a manifest that verifies on its own.
    let mut stream = client
        .export_calls(ExportCallsRequest {
            filter: Some(CallFilter::default()),
            format: ExportFormat::Jsonl as i32,
            ..ExportCallsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut writer = None;
    let mut file = None;
    while let Some(message) = stream.message().await.unwrap() {
        match message.item.unwrap() {
            Item::Header(header) => {
                let algorithm =
                    courtline::records::chain::HashAlgorithm::from_name(&header.hash_algorithm)
                        .unwrap();
                writer = Some(
                    courtline::records::export::ExportWriter::new(
                        ExportFormat::Jsonl,
                        algorithm,
                        Vec::new(),
                    )
                    .unwrap(),
                );
            }
            Item::Record(record) => writer.as_mut().unwrap().write(&record).unwrap(),
            Item::Manifest(manifest) => {
                file = Some(writer.take().unwrap().finish(&manifest).unwrap());
            }
        }
    }
    let file = file.expect("manifest");
    let check = verify_export(file.as_slice(), None).unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    assert_eq!(check.rows, 4);
    // The flag is in the export, and in its signed row digest.
    let text = String::from_utf8(file.clone()).unwrap();
    let row: serde_json::Value = text
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|row| row["call_id"] == call_id(2))
        .unwrap();
    assert_eq!(row["flags"][0]["category"], "intercession");
    assert_eq!(row["flags"][0]["flagged_by"], "loopback");
    let altered = text.replacen("put in a word", "say hello", 1);
    let check = verify_export(altered.as_bytes(), None).unwrap();
    assert!(
        check
            .problems
            .iter()
            .any(|p| p.contains(&format!("call {} was modified", call_id(2)))),
        "{:?}",
        check.problems
    );

    // Retention: everything here is from 2023, far past 180 days; the flagged call stays.
    let dry = client
        .purge(courtline::contract::pb::PurgeRequest { dry_run: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((dry.calls_purged, dry.calls_on_hold, dry.seq), (3, 1, 0));
    let purged = client
        .purge(courtline::contract::pb::PurgeRequest { dry_run: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            purged.calls_purged,
            purged.events_purged,
            purged.calls_on_hold
        ),
        (3, 12, 1)
    );
    assert_eq!(list(&mut client, CallFilter::default()).await, vec![2]);
    let report = client.verify(VerifyRequest {}).await.unwrap().into_inner();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    service.stop().await;

    // Reopening continues the same chain, and it still verifies offline.
    let store = SqlStore::open(&db.url).await.unwrap();
    let key =
        courtline::records::ledger::signing::public_key_of_key_file(&settings.signing_key_file)
            .unwrap();
    let report = courtline::records::verify::verify(&store, &[key], None)
        .await
        .unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    // The service signed a final checkpoint when it stopped.
    assert!(report.checkpoints_checked >= 1);
    assert_eq!(report.unsigned_tail, 0);
    store.close().await;
}

/// A switchboard's applied configuration, as it chains one.
fn config_applied(requested_by: &str, sha256: &str, previous: &str) -> NodeEvent {
    NodeEvent {
        at_ms: 1_700_000_000_000,
        kind: Some(Kind::ConfigApplied(ConfigApplied {
            requested_by: requested_by.into(),
            config_sha256: sha256.into(),
            previous_sha256: previous.into(),
            lines_added: vec!["02112369".into()],
            ..ConfigApplied::default()
        })),
        ..NodeEvent::default()
    }
}

async fn config_changes_are_chained_listed_newest_first_and_verified(db: Db) {
    let service = Service::start(&settings(&db)).await;
    let mut client = service.client(None).await;
    let mut events = vec![node_started(), config_applied("startup", "aa", "")];
    events.extend(complete_calls([1]));
    events.push(config_applied("sighup", "bb", "aa"));
    let count = events.len() as u32;
    assert_eq!(
        log(&mut client, numbered("sb-1", 1, events)).await,
        (count, 0)
    );
    // Another node's, and a page at a time, newest first.
    log(
        &mut client,
        numbered("sb-2", 1, vec![config_applied("startup", "cc", "")]),
    )
    .await;
    let page = |before_seq| ListConfigChangesRequest {
        page_size: 2,
        before_seq,
    };
    let first = client
        .list_config_changes(page(0))
        .await
        .unwrap()
        .into_inner();
    let seen: Vec<(&str, &str)> = first
        .changes
        .iter()
        .map(|c| {
            let applied = c.applied.as_ref().unwrap();
            (c.node_id.as_str(), applied.config_sha256.as_str())
        })
        .collect();
    assert_eq!(seen, [("sb-2", "cc"), ("sb-1", "bb")]);
    assert_eq!(
        first.changes[1].applied.as_ref().unwrap().previous_sha256,
        "aa"
    );
    assert_ne!(first.next_before_seq, 0);
    let second = client
        .list_config_changes(page(first.next_before_seq))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.changes.len(), 1);
    assert_eq!(
        second.changes[0].applied.as_ref().unwrap().requested_by,
        "startup"
    );
    assert_eq!(second.next_before_seq, 0);
    // A configuration belongs to the node, never to a call.
    let mut stray = config_applied("sighup", "dd", "bb");
    stray.call_id = call_id(1);
    let refused = client
        .log_events(LogEventsRequest {
            events: numbered("sb-1", count as u64 + 1, vec![stray]),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let report = client.verify(VerifyRequest {}).await.unwrap().into_inner();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    service.stop().await;
}

on_both_backends!(
    config_changes_are_chained_listed_newest_first_and_verified,
    events_are_idempotent_and_calls_are_projected,
    an_event_changing_a_calls_arrival_columns_rewrites_its_row,
    filters_sort_and_pagination,
    node_restart_marks_open_calls_interrupted_and_gaps_show,
    flags_exports_and_retention,
);
