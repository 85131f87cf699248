//! "Three rules" reports through a real records service on both backends: the
//! workflow by the right roles, what an operator may not see, the access log, a
//! report opened by the operator's keys (via LogEvents) holding its call through a
//! purge, and a tampered report row named by verify.

mod records_common;

use courtline::contract::connect::RecordsClient;
use courtline::contract::pb::node_event::Kind;
use courtline::contract::pb::{
    AddTokenRequest, GetCallRequest, GetReportRequest, ListReportsRequest, LogEventsRequest,
    Milestone, OpenReportRequest, PurgeRequest, Report, ReportFilter, ReportForm, ReportHandling,
    ReportKind, ReportOpenedVia, ReportStatus, ReviewReportRequest, Role, SubmitReportRequest,
    UpdateReportRequest, VerifyRequest,
};
use courtline::records::store::{SqlStore, Store};
use records_common::*;
use tonic::Code;

/// Issues a token named `name` with `role`; returns a client using it.
async fn client_as(
    service: &Service,
    admin: &mut RecordsClient,
    name: &str,
    role: Role,
) -> RecordsClient {
    let token = admin
        .add_token(AddTokenRequest {
            name: name.into(),
            role: role as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    service.client(Some(&token)).await
}

fn form() -> ReportForm {
    ReportForm {
        staff_name: "李娜".into(),
        staff_id: "op-li".into(),
        caller_name: "王某".into(),
        caller_organisation: "某区人大办公室".into(),
        caller_relationship: "被告亲属".into(),
        caller_phone: "13900000001".into(),
        case_numbers: vec!["(2024)沪01民初123号".into(), "上周那个案子".into()],
        kind: ReportKind::Intercession as i32,
        asked: "请法官\"多关照\"被告，尽快结案".into(),
        handling: ReportHandling::ExplainedRules as i32,
        handling_note: "告知其\"三个规定\"，已拒绝".into(),
        ..ReportForm::default()
    }
}

/// A REPORT_REQUESTED milestone of call `n` from operator `operator`.
fn report_requested(n: u32, operator: &str, via: &str) -> courtline::contract::pb::NodeEvent {
    let mut event = milestone(n, Milestone::ReportRequested);
    if let Some(Kind::Milestone(milestone)) = &mut event.kind {
        milestone.operator_uri = operator.into();
        milestone.report_via = via.into();
    }
    event
}

/// `events` with call 1 answered by operator `op-li` (an operator reports only
/// calls it took).
fn taken_by_li(
    mut events: Vec<courtline::contract::pb::NodeEvent>,
) -> Vec<courtline::contract::pb::NodeEvent> {
    for event in &mut events {
        if let Some(Kind::Ended(record)) = &mut event.kind {
            if record.call_id == call_id(1) {
                record.operator_uri = "sip:op-li@pbx.court.test".into();
            }
        }
    }
    events
}

async fn reports_draft_submitted_reviewed_keys_hold_and_tamper(db: Db) {
    let service = Service::start(&settings(&db)).await;
    let mut anonymous = service.client(None).await;
    let admin_token = anonymous
        .add_token(AddTokenRequest {
            name: "admin-1".into(),
            role: Role::Admin as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut admin = service.client(Some(&admin_token)).await;
    let mut switchboard = client_as(&service, &mut admin, "sb-1", Role::Switchboard).await;
    let mut li = client_as(&service, &mut admin, "op-li", Role::Operator).await;
    let mut zhao = client_as(&service, &mut admin, "op-zhao", Role::Operator).await;
    let mut wang = client_as(&service, &mut admin, "comp-wang", Role::Compliance).await;
    let mut chen = client_as(&service, &mut admin, "audit-chen", Role::Auditor).await;
    let mut extension = client_as(&service, &mut admin, "1001", Role::Operator).await;
    switchboard
        .log_events(LogEventsRequest {
            events: numbered("sb-1", 1, taken_by_li(complete_calls([1, 2]))),
        })
        .await
        .unwrap();

    // The operator opens, fills in and submits a report after the call.
    let opened = li
        .open_report(OpenReportRequest {
            call_id: call_id(1),
            opened_via: ReportOpenedVia::Cli as i32,
            form: None,
        })
        .await
        .unwrap()
        .into_inner();
    let draft = opened.report.unwrap();
    let id = draft.report_id.clone();
    assert_eq!(
        (draft.version, draft.status(), draft.opened_by.as_str()),
        (1, ReportStatus::Draft, "op-li")
    );
    assert_eq!(draft.court_name, record(1).court_name);
    // Another operator cannot open one on li's call (and so cannot come to read it).
    let not_theirs = zhao
        .open_report(OpenReportRequest {
            call_id: call_id(1),
            opened_via: ReportOpenedVia::Cli as i32,
            form: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        not_theirs.code(),
        tonic::Code::PermissionDenied,
        "{not_theirs:?}"
    );
    let incomplete = li
        .submit_report(SubmitReportRequest {
            report_id: id.clone(),
            version: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(incomplete.code(), Code::InvalidArgument, "{incomplete:?}");
    let updated = li
        .update_report(UpdateReportRequest {
            report_id: id.clone(),
            version: 1,
            form: Some(form()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.report.as_ref().unwrap().version, 2);
    assert_eq!(updated.warnings.len(), 1, "{:?}", updated.warnings);
    assert!(updated.warnings[0].contains("上周那个案子"));
    // A change built on an old version is refused.
    let stale = li
        .update_report(UpdateReportRequest {
            report_id: id.clone(),
            version: 1,
            form: Some(form()),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);

    // Another operator sees neither the report nor unrelated calls.
    for refused in [
        zhao.get_report(GetReportRequest {
            report_id: id.clone(),
        })
        .await
        .map(|_| ()),
        zhao.update_report(UpdateReportRequest {
            report_id: id.clone(),
            version: 2,
            form: Some(ReportForm::default()),
        })
        .await
        .map(|_| ()),
        zhao.get_call(GetCallRequest {
            call_id: call_id(1),
        })
        .await
        .map(|_| ()),
        li.get_call(GetCallRequest {
            call_id: call_id(2),
        })
        .await
        .map(|_| ()),
        li.list_calls(courtline::contract::pb::ListCallsRequest::default())
            .await
            .map(|_| ()),
    ] {
        assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
    }
    let listed = zhao
        .list_reports(ListReportsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.reports.is_empty(), "{:?}", listed.reports);
    // The owner reads the call its report is about.
    let call = li
        .get_call(GetCallRequest {
            call_id: call_id(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(call
        .timeline
        .iter()
        .any(|event| event.kind == "report_opened"));

    li.submit_report(SubmitReportRequest {
        report_id: id.clone(),
        version: 2,
    })
    .await
    .unwrap();
    // Operators do not review; compliance does.
    let review = |by: &str| ReviewReportRequest {
        report_id: id.clone(),
        version: 3,
        conclusion: format!("属实，已登记备案（{by}）"),
    };
    assert_eq!(
        li.review_report(review("li")).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let reviewed = wang
        .review_report(review("王"))
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    assert_eq!(reviewed.status(), ReportStatus::Reviewed);
    assert_eq!(reviewed.reviewed_by, "comp-wang");
    assert_eq!(reviewed.review_conclusion, "属实，已登记备案（王）");

    // Auditors read everything, with every version.
    let full = chen
        .get_report(GetReportRequest {
            report_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let statuses: Vec<ReportStatus> = full.versions.iter().map(Report::status).collect();
    assert_eq!(
        statuses,
        [
            ReportStatus::Draft,
            ReportStatus::Draft,
            ReportStatus::Submitted,
            ReportStatus::Reviewed
        ]
    );
    assert_eq!(full.report.unwrap().form.unwrap(), form());

    // Every step is in the access log, refusals included.
    let log = access_log(&mut chen).await;
    for (actor, operation) in [
        ("op-li", "OpenReport"),
        ("op-li", "UpdateReport"),
        ("op-li", "SubmitReport"),
        ("op-li", "GetCall"),
        ("comp-wang", "ReviewReport"),
        ("op-zhao", "GetReport"),
        ("op-zhao", "UpdateReport"),
        ("op-zhao", "GetCall"),
        ("op-zhao", "ListReports"),
        ("audit-chen", "GetReport"),
    ] {
        assert!(
            log.iter()
                .any(|entry| entry.actor == actor && entry.operation == operation),
            "{actor} {operation} missing from the access log"
        );
    }
    let refusal = log
        .iter()
        .find(|entry| entry.actor == "op-zhao" && entry.operation == "GetReport")
        .unwrap();
    assert!(refusal.parameters.contains("refused"), "{refusal:?}");

    // The operator presses the keys during call 3: a report opens, once per operator.
    let mut events = vec![
        milestone(3, Milestone::Received),
        milestone(3, Milestone::OperatorAnswered),
        report_requested(3, "sip:1001@pbx.court.test", "rfc4733"),
        report_requested(3, "sip:1001@pbx.court.test", "rfc4733"),
    ];
    events.push(ended(3));
    switchboard
        .log_events(LogEventsRequest {
            events: numbered("sb-1", 9, events),
        })
        .await
        .unwrap();
    let keyed = wang
        .list_reports(ListReportsRequest {
            filter: Some(ReportFilter {
                call_id: call_id(3),
                ..ReportFilter::default()
            }),
            ..ListReportsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .reports;
    assert_eq!(keyed.len(), 1, "{keyed:?}");
    let keyed = &keyed[0];
    assert_eq!(
        (
            keyed.opened_via(),
            keyed.opened_by.as_str(),
            keyed.keys_via.as_str(),
            keyed.status()
        ),
        (
            ReportOpenedVia::Keys,
            "sip:1001@pbx.court.test",
            "rfc4733",
            ReportStatus::Draft
        )
    );
    assert_eq!(keyed.opened_at_ms, record(3).received_at_ms);
    // The operator at extension 1001 owns it, and may read its call.
    extension
        .get_report(GetReportRequest {
            report_id: keyed.report_id.clone(),
        })
        .await
        .unwrap();
    extension
        .get_call(GetCallRequest {
            call_id: call_id(3),
        })
        .await
        .unwrap();

    // Filters: kind, status, staff, case number, court.
    let count = |filter: ReportFilter| {
        let mut wang = wang.clone();
        async move {
            wang.list_reports(ListReportsRequest {
                filter: Some(filter),
                ..ListReportsRequest::default()
            })
            .await
            .unwrap()
            .into_inner()
            .reports
            .len()
        }
    };
    assert_eq!(count(ReportFilter::default()).await, 2);
    assert_eq!(
        count(ReportFilter {
            case_number_contains: "沪01民初".into(),
            ..ReportFilter::default()
        })
        .await,
        1
    );
    assert_eq!(
        count(ReportFilter {
            staff: "李娜".into(),
            status: ReportStatus::Reviewed as i32,
            kind: ReportKind::Intercession as i32,
            court_name: record(1).court_name,
            ..ReportFilter::default()
        })
        .await,
        1
    );
    assert_eq!(
        count(ReportFilter {
            status: ReportStatus::Draft as i32,
            ..ReportFilter::default()
        })
        .await,
        1
    );
    // Paging: one per page, then the rest.
    let first = wang
        .list_reports(ListReportsRequest {
            page_size: 1,
            ..ListReportsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.reports.len(), 1);
    let second = wang
        .list_reports(ListReportsRequest {
            page_size: 1,
            page_token: first.next_page_token,
            ..ListReportsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.reports.len(), 1);
    assert_ne!(first.reports[0].report_id, second.reports[0].report_id);

    // Retention: everything is from 2023. Call 2 goes; the reported calls 1 and 3 stay.
    let purged = admin
        .purge(PurgeRequest { dry_run: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((purged.calls_purged, purged.calls_on_hold), (1, 2));
    wang.get_call(GetCallRequest {
        call_id: call_id(3),
    })
    .await
    .unwrap();
    let clean = chen.verify(VerifyRequest {}).await.unwrap().into_inner();
    assert!(clean.findings.is_empty(), "{:?}", clean.findings);

    // A report row changed behind the service's back is named.
    let store = SqlStore::open(&db.url).await.unwrap();
    sqlx::query(&format!(
        "UPDATE reports SET staff_name = '张三', status = 1 WHERE report_id = '{id}'"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    store.close().await;
    let tampered = chen.verify(VerifyRequest {}).await.unwrap().into_inner();
    let finding = tampered
        .findings
        .iter()
        .find(|finding| finding.detail.contains(&id))
        .unwrap_or_else(|| panic!("{:?}", tampered.findings));
    assert_eq!(finding.kind, "projection");
    assert_eq!(finding.call_id, call_id(1));
    assert!(
        finding.detail.contains("status") && finding.detail.contains("staff_name"),
        "{finding:?}"
    );
    service.stop().await;
}

/// Runs `courtline ARGS --endpoint ENDPOINT --token TOKEN`; stdout of a run that must succeed.
fn courtline(args: &[&str], endpoint: &str, token: &str) -> String {
    let output = std::process::Command::new(courtline_bin())
        .args(args)
        .args(["--endpoint", endpoint, "--token", token])
        .env_remove("RUST_LOG")
        .env_remove("COURTLINE_TOKEN")
        .env("TZ", "Asia/Shanghai")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

async fn cli_round_trip_keeps_chinese_text(db: Db) {
    let service = Service::start(&settings(&db)).await;
    let mut anonymous = service.client(None).await;
    anonymous
        .log_events(LogEventsRequest {
            events: numbered("sb-1", 1, taken_by_li(complete_calls([1]))),
        })
        .await
        .unwrap();
    let admin_token = anonymous
        .add_token(AddTokenRequest {
            name: "admin-1".into(),
            role: Role::Admin as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut admin = service.client(Some(&admin_token)).await;
    let mut tokens = Vec::new();
    for (name, role) in [("op-li", Role::Operator), ("comp-wang", Role::Compliance)] {
        tokens.push(
            admin
                .add_token(AddTokenRequest {
                    name: name.into(),
                    role: role as i32,
                })
                .await
                .unwrap()
                .into_inner()
                .token,
        );
    }
    let (operator, officer) = (&tokens[0], &tokens[1]);
    let endpoint = service.endpoint();
    let asked = "请法官\"多关照\"被告, 尽快结案";
    let opened = courtline(
        &[
            "reports",
            "open",
            &call_id(1),
            "--staff-name",
            "李娜",
            "--staff-id",
            "op-li",
            "--case-number",
            "(2024)沪01民初123号",
            "--case-number",
            "（2023）京0105民初4567号",
            "--kind",
            "说情打招呼",
            "--asked",
            asked,
            "--handling",
            "explained-rules",
        ],
        &endpoint,
        operator,
    );
    let id = opened
        .strip_prefix("report ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{opened}"))
        .to_owned();
    assert!(opened.contains("version 1, draft"), "{opened}");
    courtline(
        &[
            "reports",
            "update",
            &id,
            "--caller-name",
            "王某",
            "--caller-organisation",
            "某区人大办公室",
            "--caller-relationship",
            "被告亲属",
        ],
        &endpoint,
        operator,
    );
    courtline(&["reports", "submit", &id], &endpoint, operator);
    let reviewed = courtline(
        &["reports", "review", &id, "--conclusion", "属实，已登记备案"],
        &endpoint,
        officer,
    );
    assert!(reviewed.contains("version 4, reviewed"), "{reviewed}");

    let json: serde_json::Value = serde_json::from_str(&courtline(
        &["reports", "get", &id, "--format", "json"],
        &endpoint,
        officer,
    ))
    .unwrap();
    let report = &json["report"];
    assert_eq!(report["asked"], asked);
    assert_eq!(report["staff_name"], "李娜");
    assert_eq!(report["caller_organisation"], "某区人大办公室");
    assert_eq!(report["kind"], "intercession");
    assert_eq!(report["kind_zh"], "说情打招呼");
    assert_eq!(report["handling"], "explained_rules");
    assert_eq!(report["status"], "reviewed");
    assert_eq!(report["review_conclusion"], "属实，已登记备案");
    assert_eq!(
        report["case_numbers"],
        "(2024)沪01民初123号; （2023）京0105民初4567号"
    );
    assert_eq!(json["versions"].as_array().unwrap().len(), 4);

    let text = courtline(&["reports", "get", &id], &endpoint, operator);
    assert!(text.contains("填报人") && text.contains("李娜"), "{text}");
    let table = courtline(&["reports", "list", "--utc"], &endpoint, operator);
    assert!(
        table.contains("说情打招呼") && table.contains("李娜 (op-li)"),
        "{table}"
    );

    let csv = courtline(
        &[
            "reports",
            "list",
            "--format",
            "csv",
            "--case-number",
            "沪01",
        ],
        &endpoint,
        officer,
    );
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1, "{csv}");
    let cell = |name: &str| rows[0][header.iter().position(|h| h == name).unwrap()].to_owned();
    assert_eq!(cell("asked"), asked);
    assert_eq!(cell("caller_relationship"), "被告亲属");
    assert_eq!(cell("reviewed_by"), "comp-wang");

    let file = db.dir.path().join("reports.json");
    courtline(
        &[
            "reports",
            "export",
            "--format",
            "json",
            "-o",
            file.to_str().unwrap(),
            "--status",
            "reviewed",
        ],
        &endpoint,
        officer,
    );
    let exported: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(exported["reports"][0]["caller_name"], "王某");
    assert!(exported["courtline_export_manifest"]["signature"].is_string());
    service.stop().await;
}

on_both_backends!(
    reports_draft_submitted_reviewed_keys_hold_and_tamper,
    cli_round_trip_keeps_chinese_text,
);
