//! `courtline calls ...` and `courtline records access-log|verify-export` as
//! compliance staff type them: the real binary against a records service on
//! loopback, on SQLite and on PostgreSQL.

mod records_common;

use std::process::{Command, Output};

use courtline::contract::pb::node_event::Kind;
use courtline::contract::pb::{LogEventsRequest, NodeEvent};
use records_common::*;

/// A call whose id shares no prefix with [`call_id`]'s.
const LONE_ID: &str = "c0ffee00-1234-4abc-8def-000000000006";

/// `events` with their call id (and their records') replaced by `id`.
fn renamed(events: Vec<NodeEvent>, id: &str) -> Vec<NodeEvent> {
    events
        .into_iter()
        .map(|mut event| {
            event.call_id = id.to_owned();
            match event.kind.as_mut() {
                Some(Kind::Milestone(milestone)) => {
                    if let Some(snapshot) = milestone.snapshot.as_mut() {
                        snapshot.call_id = id.to_owned();
                    }
                }
                Some(Kind::Ended(record)) => record.call_id = id.to_owned(),
                _ => {}
            }
            event
        })
        .collect()
}

/// Runs `courtline ARGS --endpoint ENDPOINT` (when `endpoint` is given).
fn courtline(args: &[&str], endpoint: Option<&str>) -> Output {
    let mut command = Command::new(courtline_bin());
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env("TZ", "Asia/Shanghai");
    if let Some(endpoint) = endpoint {
        command.args(["--endpoint", endpoint]);
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Stdout of a run that must succeed.
fn ok(args: &[&str], endpoint: &str) -> (String, String) {
    let out = courtline(args, Some(endpoint));
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    (text(&out.stdout), text(&out.stderr))
}

/// Stderr of a run that must fail.
fn fails(args: &[&str], endpoint: Option<&str>) -> String {
    let out = courtline(args, endpoint);
    assert!(!out.status.success(), "{args:?}: {}", text(&out.stdout));
    text(&out.stderr)
}

/// Call ids in a `calls list --format json` output.
fn listed_ids(json: &str) -> Vec<String> {
    let rows: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
    rows.iter()
        .map(|row| row["call_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn list_pages_short_ids_flags_and_excel_exports(db: Db) {
    let service = Service::start(&settings(&db)).await;
    let mut client = service.client(None).await;
    let mut events = numbered("sb-1", 1, complete_calls(1..=5));
    events.extend(numbered("sb-1", 21, renamed(complete_calls([6]), LONE_ID)));
    client
        .log_events(LogEventsRequest { events })
        .await
        .unwrap();
    let endpoint = service.endpoint();
    let endpoint = endpoint.as_str();

    // The table shows a short id and whether a call is flagged; times in local time.
    let (table, _) = ok(&["calls", "list"], endpoint);
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("ID "), "{table}");
    assert!(header.contains("FLAGGED"), "{table}");
    assert!(
        table.contains("c0ffee00-1234  2023-11-15T06:13:26+08:00"),
        "{table}"
    );

    // Pages: a notice on stderr only (stdout stays JSON), and --after continues.
    let (first, notice) = ok(
        &["calls", "list", "--format", "json", "--limit", "2"],
        endpoint,
    );
    let first = listed_ids(&first);
    assert_eq!(first.len(), 2);
    let cursor = notice
        .split("--after ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no next-page cursor in {notice:?}"));
    assert!(
        notice.starts_with("showing 2 calls; more match"),
        "{notice}"
    );
    let (rest, notice) = ok(
        &["calls", "list", "--format", "json", "--after", cursor],
        endpoint,
    );
    assert!(notice.is_empty(), "the last page has no notice: {notice}");
    let rest = listed_ids(&rest);
    assert_eq!(rest.len(), 4);
    let (all, _) = ok(&["calls", "list", "--format", "json", "--all"], endpoint);
    assert_eq!(listed_ids(&all), [first, rest].concat());
    let error = fails(&["calls", "list", "--limit", "0"], Some(endpoint));
    assert!(
        error.contains("--limit 0") && error.contains("--all"),
        "{error}"
    );

    // A short id from the table is enough for `calls get`, whose JSON is one object.
    let (json, _) = ok(
        &["calls", "get", "c0ffee00-1234", "--format", "json"],
        endpoint,
    );
    let call: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(call["call_id"], LONE_ID);
    assert!(
        call["prompts"].is_array() && call["media"].is_object(),
        "{json}"
    );
    assert!(call["timeline"].as_array().unwrap().len() >= 4, "{json}");
    let (detail, _) = ok(&["calls", "get", "c0ffee00", "--utc"], endpoint);
    assert!(detail.starts_with(&format!("call {LONE_ID}\n")), "{detail}");
    assert!(detail.contains("2023-11-14T22:13:26.000Z"), "{detail}");
    let error = fails(&["calls", "get", "7d9e4c1a"], Some(endpoint));
    assert!(error.contains("ambiguous"), "{error}");
    let error = fails(&["calls", "get", "deadbeef"], Some(endpoint));
    assert!(
        error.contains("no call id starts with \"deadbeef\""),
        "{error}"
    );

    // The README's spelling of a category works, and "other" needs a note.
    let (flagged, _) = ok(
        &[
            "calls",
            "flag",
            "c0ffee00",
            "--category",
            "improper_inquiry",
            "--note",
            "问了案件进展",
        ],
        endpoint,
    );
    assert!(flagged.contains(LONE_ID), "{flagged}");
    let error = fails(
        &["calls", "flag", "c0ffee00", "--category", "other"],
        Some(endpoint),
    );
    assert!(error.contains("--note"), "{error}");
    let (table, _) = ok(&["calls", "list", "--flagged", "yes"], endpoint);
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(table.lines().nth(1).unwrap().contains(" yes "), "{table}");
    let (detail, _) = ok(&["calls", "get", "c0ffee00"], endpoint);
    assert!(
        detail.contains("1. improper_inquiry by loopback:"),
        "{detail}"
    );

    // An Excel export keeps the caller number as text and verifies; the flag is in it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("calls.csv");
    let file = file.to_str().unwrap();
    ok(&["calls", "export", "--excel", "--output", file], endpoint);
    let bytes = std::fs::read(file).unwrap();
    assert!(bytes.starts_with(b"\xEF\xBB\xBF"), "no byte-order mark");
    let csv = String::from_utf8(bytes).unwrap();
    assert!(csv.contains("\"=\"\"13900000006\"\"\""), "{csv}");
    assert!(csv.contains("上海市高级人民法院"), "{csv}");
    assert!(csv.contains("improper_inquiry"), "{csv}");
    let out = courtline(&["records", "verify-export", file], None);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}{}", text(&out.stderr));
    assert!(report.contains("OK: the export is intact"), "{report}");
    // Times as times, not epoch milliseconds.
    assert!(report.contains("+08:00"), "{report}");
    let altered = csv.replacen("问了案件进展", "问了天气", 1);
    std::fs::write(file, altered).unwrap();
    let out = courtline(&["records", "verify-export", file], None);
    assert!(!out.status.success());
    assert!(text(&out.stdout).contains(LONE_ID), "{}", text(&out.stdout));

    let (log, _) = ok(&["records", "access-log", "--limit", "3"], endpoint);
    let first = log.lines().next().unwrap();
    assert!(first.contains("+08:00"), "{log}");
    assert!(
        !first
            .split_whitespace()
            .any(|word| word.len() == 13 && word.bytes().all(|b| b.is_ascii_digit())),
        "{log}"
    );
    service.stop().await;
}

on_both_backends!(list_pages_short_ids_flags_and_excel_exports);
