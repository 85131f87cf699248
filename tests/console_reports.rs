//! Reports and recordings in the web console, in a real browser (Debian's chromium
//! over WebDriver) against a records service holding 10,000 generated calls and a
//! few recorded ones: an operator fills in and submits the report it opened with
//! keys during its call, a compliance officer reviews it, prints it and files one
//! of their own; the operator is refused another operator's report and an
//! unrelated call without a trace of them in the page; the recording plays with
//! its length and seeks, and downloads with its SHA-256; the access log shows it
//! all. Screenshots of every page go to `target/console-screenshots/`.

mod console_common;
mod records_common;

use std::f64::consts::PI;

use console_common::{
    browser, browser_present, choose, click_and_load, fetch, screenshot, screenshots, sign_in,
    start_driver, text, ConsoleService, WAIT,
};
use courtline::contract::pb::node_event::Kind;
use courtline::contract::pb::{
    LogEventsRequest, Milestone, NodeEvent, OpenReportRequest, RecordingFinished, ReportForm,
    ReportOpenedVia, Role,
};
use fantoccini::{Client, Locator};
use records_common::{call_id, ended, milestone, numbered, record};
use sha2::{Digest, Sha256};

/// The operator's call (opened by keys, recorded), an unrelated recorded call,
/// and a call another operator reports on: numbers past the generated ones.
const OWN: u32 = console_common::CALLS + 1;
const UNRELATED: u32 = console_common::CALLS + 2;
const OTHERS: u32 = console_common::CALLS + 3;
/// Length of the operator's call's recording: ten minutes, 19 MB, more than the
/// player buffers at once, so seeking near its end needs a range request.
const OWN_MS: u32 = 600_000;
/// Where the player seeks to, in seconds.
const SEEK_TO: f64 = 590.0;
/// Length of the unrelated call's recording.
const UNRELATED_MS: u32 = 2_500;
const RATE: u32 = 8_000;

/// A two-channel 16-bit 8 kHz WAV: a 440 Hz tone on channel 1, silence on 2.
fn wav(ms: u32) -> Vec<u8> {
    let frames = (u64::from(RATE) * u64::from(ms) / 1000) as u32;
    let data = frames * 4;
    let mut file = Vec::new();
    file.extend_from_slice(b"RIFF");
    file.extend_from_slice(&(36 + data).to_le_bytes());
    file.extend_from_slice(b"WAVEfmt ");
    file.extend_from_slice(&16u32.to_le_bytes());
    for value in [1u16, 2] {
        file.extend_from_slice(&value.to_le_bytes());
    }
    file.extend_from_slice(&RATE.to_le_bytes());
    file.extend_from_slice(&(RATE * 4).to_le_bytes());
    for value in [4u16, 16] {
        file.extend_from_slice(&value.to_le_bytes());
    }
    file.extend_from_slice(b"data");
    file.extend_from_slice(&data.to_le_bytes());
    for n in 0..frames {
        let sample = (8_000.0 * (2.0 * PI * 440.0 * f64::from(n) / f64::from(RATE)).sin()) as i16;
        file.extend_from_slice(&sample.to_le_bytes());
        file.extend_from_slice(&0i16.to_le_bytes());
    }
    file
}

/// The switchboard's recording event for call `n`, its file written where the
/// switchboard would leave it (the embedded records service takes it over).
fn recording(dir: &std::path::Path, n: u32, policy: &str, ms: u32) -> (NodeEvent, String) {
    let file = wav(ms);
    let path = dir.join(format!("{}.wav", call_id(n)));
    std::fs::write(&path, &file).unwrap();
    let sha256 = hex::encode(Sha256::digest(&file));
    let event = NodeEvent {
        at_ms: record(n).ended_at_ms,
        call_id: call_id(n),
        kind: Some(Kind::Recording(RecordingFinished {
            path: path.display().to_string(),
            sha256: sha256.clone(),
            bytes: file.len() as u64,
            sample_rate: RATE,
            channels: 2,
            format: "wav".into(),
            started_at_ms: record(n).answered_at_ms,
            duration_ms: ms,
            policy: policy.into(),
            failure: String::new(),
        })),
        ..NodeEvent::default()
    };
    (event, sha256)
}

/// Call `n`'s operator pressing the report keys.
fn report_requested(n: u32, operator: &str) -> NodeEvent {
    let mut event = milestone(n, Milestone::ReportRequested);
    if let Some(Kind::Milestone(milestone)) = &mut event.kind {
        milestone.operator_uri = operator.into();
        milestone.report_via = "rfc4733".into();
    }
    event
}

async fn type_into(client: &Client, css: &str, text: &str) {
    let field = client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn value(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
}

/// `fetch` from the page: status, a header, and the body's SHA-256 (hex).
async fn fetch_digest(
    client: &Client,
    path: &str,
    range: Option<&str>,
    header: &str,
) -> (u64, String, String, u64) {
    let result = client
        .execute_async(
            "const [path, range, header, done] = arguments;
             const headers = range ? { Range: range } : {};
             fetch(path, { headers }).then(async r => {
               const body = await r.arrayBuffer();
               const hash = await crypto.subtle.digest('SHA-256', body);
               const hex = [...new Uint8Array(hash)].map(b => b.toString(16).padStart(2, '0')).join('');
               done([r.status, r.headers.get(header) || '', hex, body.byteLength]);
             });",
            vec![
                serde_json::json!(path),
                serde_json::json!(range),
                serde_json::json!(header),
            ],
        )
        .await
        .unwrap();
    (
        result[0].as_u64().unwrap(),
        result[1].as_str().unwrap().to_owned(),
        result[2].as_str().unwrap().to_owned(),
        result[3].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_filed_reviewed_printed_and_recordings_heard_in_chromium() {
    if !browser_present() {
        return;
    }
    let service = ConsoleService::start().await;
    let base = service.base.clone();

    // The switchboard's side: the operator's call with `*7` pressed and its
    // on_report recording; an unrelated call recorded always; another call.
    let spool = service.db.dir.path().join("switchboard-recordings");
    std::fs::create_dir_all(&spool).unwrap();
    let (own_recording, own_sha) = recording(&spool, OWN, "on_report", OWN_MS);
    let (unrelated_recording, unrelated_sha) = recording(&spool, UNRELATED, "always", UNRELATED_MS);
    let mut events = vec![
        milestone(OWN, Milestone::Received),
        milestone(OWN, Milestone::Answered),
        report_requested(OWN, "sip:1001@pbx.court.test"),
        ended(OWN),
        own_recording,
    ];
    for n in [UNRELATED, OTHERS] {
        events.extend([milestone(n, Milestone::Received), ended(n)]);
    }
    // Operator 1002 took the other call: an operator reports only calls it took.
    if let Some(Kind::Ended(record)) = &mut events.last_mut().and_then(|e| e.kind.as_mut()) {
        record.operator_uri = "sip:1002@pbx.court.test".into();
    }
    events.push(unrelated_recording);
    let first = console_common::generated_calls().len() as u64 + 1;
    service
        .client(None)
        .await
        .log_events(LogEventsRequest {
            events: numbered("sb-console", first, events),
        })
        .await
        .unwrap();

    let admin = service.token(None, "admin-1", Role::Admin).await;
    let operator = service
        .token(Some(admin.clone()), "1001", Role::Operator)
        .await;
    let other_operator = service
        .token(Some(admin.clone()), "1002", Role::Operator)
        .await;
    let compliance = service
        .token(Some(admin.clone()), "compliance-1", Role::Compliance)
        .await;
    let auditor = service
        .token(Some(admin.clone()), "auditor-1", Role::Auditor)
        .await;
    // Another operator's report, with words that must not reach operator 1001.
    let secret = "秘密请托内容不得外泄";
    let others_report = service
        .client(Some(other_operator))
        .await
        .open_report(OpenReportRequest {
            call_id: call_id(OTHERS),
            opened_via: ReportOpenedVia::Cli as i32,
            form: Some(ReportForm {
                staff_name: "赵六".into(),
                asked: secret.into(),
                ..ReportForm::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap()
        .report_id;

    let driver = start_driver();
    let profiles = tempfile::tempdir().unwrap();

    // The operator: its keys-opened draft waits in "my drafts".
    let chrome = browser(&driver, &profiles.path().join("operator")).await;
    sign_in(&chrome, &base, &operator).await;
    assert_eq!(chrome.current_url().await.unwrap().path(), "/reports");
    let drafts = text(&chrome, "#queue").await;
    assert!(
        drafts.contains("草稿") && drafts.contains(&call_id(OWN)),
        "{drafts}"
    );
    assert!(!text(&chrome, "#reports").await.contains(&call_id(OTHERS)));
    screenshot(&chrome, "reports-operator").await;
    click_and_load(&chrome, "#queue a.report-link").await;
    let report_path = chrome.current_url().await.unwrap().path().to_owned();
    assert!(text(&chrome, "#report-status").await.contains("草稿"));
    // Every field has its label.
    for field in [
        "staff_name",
        "staff_id",
        "occurred_at",
        "caller_name",
        "caller_organisation",
        "caller_relationship",
        "caller_phone",
        "case_numbers",
        "kind",
        "asked",
        "handling",
        "handling_note",
    ] {
        assert!(
            chrome
                .find(Locator::Css(&format!("label[for={field}]")))
                .await
                .is_ok(),
            "{field} has no label"
        );
    }
    type_into(&chrome, "#staff_name", "李娜").await;
    type_into(&chrome, "#staff_id", "1001").await;
    type_into(&chrome, "#caller_name", "王某").await;
    type_into(&chrome, "#caller_organisation", "某区人大办公室").await;
    type_into(&chrome, "#caller_relationship", "被告亲属").await;
    type_into(&chrome, "#caller_phone", "13900000001").await;
    type_into(&chrome, "#case_numbers", "(2024)沪01民初123号").await;
    choose(&chrome, "#kind", "intercession").await;
    choose(&chrome, "#handling", "explained_rules").await;
    type_into(&chrome, "#handling_note", "告知其“三个规定”，已拒绝").await;
    // Submitting without "what was asked" is refused; nothing typed is lost.
    click_and_load(&chrome, "#submit-button").await;
    let error = text(&chrome, "#error").await;
    assert!(error.contains("asked"), "{error}");
    assert_eq!(
        value(&chrome, "#caller_organisation").await,
        "某区人大办公室"
    );
    assert_eq!(value(&chrome, "#kind").await, "intercession");
    screenshot(&chrome, "report-refused").await;
    type_into(&chrome, "#asked", "请法官“多关照”被告，尽快结案").await;
    click_and_load(&chrome, "#submit-button").await;
    assert!(text(&chrome, "#report-status").await.contains("已提交"));
    assert!(chrome.find(Locator::Css("#submit-button")).await.is_err());
    let history = text(&chrome, "#history").await;
    assert!(
        history.contains("v4") && history.contains("v1"),
        "{history}"
    );
    screenshot(&chrome, "report-submitted").await;

    // Its call: the report and the recording's facts, but no player for an operator.
    click_and_load(&chrome, "#call-link").await;
    assert!(text(&chrome, "#call-reports").await.contains("已提交"));
    assert_eq!(text(&chrome, "#recording-sha256").await, own_sha);
    assert!(chrome.find(Locator::Css("#listen-form")).await.is_err());
    screenshot(&chrome, "call-operator").await;

    // Another operator's report, an unrelated call and recordings: 403, nothing leaks.
    for path in [
        format!("/reports/{others_report}"),
        format!("/reports/{others_report}/print"),
        format!("/calls/{}", call_id(UNRELATED)),
        format!("/calls/{}/audio?reason=x", call_id(OWN)),
    ] {
        let (status, html) = fetch(&chrome, &path).await;
        assert_eq!(status, 403, "{path}: {html}");
        for leak in [
            secret,
            "赵六",
            "1002",
            &record(UNRELATED).caller_number,
            &unrelated_sha,
            "RIFF",
        ] {
            assert!(!html.contains(leak), "{path} shows {leak}: {html}");
        }
    }
    chrome
        .goto(&format!("{base}/reports/{others_report}"))
        .await
        .unwrap();
    screenshot(&chrome, "report-forbidden").await;
    chrome.close().await.unwrap();

    // Compliance: the queue, the search, the review.
    let chrome = browser(&driver, &profiles.path().join("compliance")).await;
    sign_in(&chrome, &base, &compliance).await;
    chrome.goto(&format!("{base}/reports")).await.unwrap();
    let queue = text(&chrome, "#queue").await;
    assert!(
        queue.contains("李娜") && queue.contains("说情打招呼"),
        "{queue}"
    );
    screenshot(&chrome, "reports-queue").await;
    type_into(&chrome, "#case_number", "沪01民初").await;
    click_and_load(&chrome, "#report-search-button").await;
    let found = text(&chrome, "#reports").await;
    assert!(
        found.contains("(2024)沪01民初123号") && !found.contains("赵六"),
        "{found}"
    );
    screenshot(&chrome, "reports-search").await;
    chrome.goto(&format!("{base}{report_path}")).await.unwrap();
    type_into(&chrome, "#conclusion", "已核实，转纪检组备案").await;
    click_and_load(&chrome, "#review-button").await;
    assert!(text(&chrome, "#report-status").await.contains("已审核"));
    assert_eq!(
        text(&chrome, "#review-conclusion").await,
        "已核实，转纪检组备案"
    );
    assert!(text(&chrome, "#reviewed-by").await.contains("compliance-1"));
    screenshot(&chrome, "report-reviewed").await;

    // The paper sheet: A4, Chinese, system CJK fonts; printed to PDF.
    click_and_load(&chrome, "#print-link").await;
    assert_eq!(
        text(&chrome, "#print-heading").await,
        "防止干预司法“三个规定”记录报告"
    );
    let sheet = text(&chrome, "#print-table").await;
    assert!(
        sheet.contains("☑ 说情打招呼") && sheet.contains("已核实，转纪检组备案"),
        "{sheet}"
    );
    let font = chrome
        .execute(
            "return getComputedStyle(document.body).fontFamily",
            Vec::new(),
        )
        .await
        .unwrap();
    assert!(
        font.as_str().unwrap().contains("Noto Serif CJK SC"),
        "{font}"
    );
    let (status, css) = fetch(&chrome, "/assets/print.css").await;
    assert!(status == 200 && css.contains("size: A4"), "{css}");
    screenshot(&chrome, "report-print").await;
    let pdf = chrome.print(Default::default()).await.unwrap();
    assert!(pdf.starts_with(b"%PDF") && pdf.len() > 10_000);
    std::fs::write(screenshots().join("report-print.pdf"), pdf).unwrap();

    // The recording: a reason first, then the player (its length, seeking) and the download.
    chrome
        .goto(&format!("{base}/calls/{}", call_id(OWN)))
        .await
        .unwrap();
    assert!(chrome.find(Locator::Css("#player")).await.is_err());
    type_into(&chrome, "#listen-reason", "复核录音").await;
    click_and_load(&chrome, "#listen-button").await;
    let played = chrome
        .execute_async(
            "const [to, done] = arguments;
             const audio = document.getElementById('player');
             const seek = () => {
               audio.addEventListener('seeked', () => done([audio.duration, audio.currentTime, audio.seekable.length ? audio.seekable.end(0) : 0]), { once: true });
               audio.currentTime = to;
             };
             audio.addEventListener('error', () => done(['error', String(audio.error && audio.error.code)]));
             if (audio.readyState >= 1) seek(); else audio.addEventListener('loadedmetadata', seek, { once: true });",
            vec![serde_json::json!(SEEK_TO)],
        )
        .await
        .unwrap();
    let duration = played[0].as_f64().unwrap_or_else(|| panic!("{played:?}"));
    assert!(
        (duration - f64::from(OWN_MS) / 1000.0).abs() < 0.01,
        "{played:?}"
    );
    assert!(
        (played[1].as_f64().unwrap() - SEEK_TO).abs() < 0.01,
        "{played:?}"
    );
    assert!(
        (played[2].as_f64().unwrap() - duration).abs() < 0.01,
        "{played:?}"
    );
    screenshot(&chrome, "call-recording").await;
    let download = chrome
        .find(Locator::Css("#download-recording"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let (status, digest, body_sha, _) = fetch_digest(&chrome, &download, None, "repr-digest").await;
    assert_eq!(status, 200);
    assert_eq!(body_sha, own_sha);
    use base64::Engine;
    assert_eq!(
        digest,
        format!(
            "sha-256=:{}:",
            base64::engine::general_purpose::STANDARD.encode(hex::decode(&own_sha).unwrap())
        )
    );
    let (status, range, _, length) =
        fetch_digest(&chrome, &download, Some("bytes=44-143"), "content-range").await;
    assert_eq!((status, length), (206, 100));
    assert_eq!(range, format!("bytes 44-143/{}", wav(OWN_MS).len()));
    let (status, _) = fetch(&chrome, &format!("/calls/{}/audio", call_id(OWN))).await;
    assert_eq!(status, 400, "no reason, no audio");

    // Compliance files a report of its own from a call page.
    chrome
        .goto(&format!("{base}/calls/{}", call_id(UNRELATED)))
        .await
        .unwrap();
    click_and_load(&chrome, "#file-report").await;
    assert_eq!(text(&chrome, "#new-call-id").await, call_id(UNRELATED));
    screenshot(&chrome, "report-new").await;
    type_into(&chrome, "#staff_name", "孙七").await;
    type_into(&chrome, "#case_numbers", "上周那个案子").await;
    click_and_load(&chrome, "#save-button").await;
    assert!(text(&chrome, "#report-status").await.contains("草稿"));
    let warnings = text(&chrome, "#warnings").await;
    assert!(warnings.contains("上周那个案子"), "{warnings}");
    click_and_load(&chrome, "a.lang").await;
    assert!(text(&chrome, "h1").await.contains("Three rules"));
    screenshot(&chrome, "report-english").await;
    chrome.close().await.unwrap();

    // The auditor: each of these views is in the access log.
    let chrome = browser(&driver, &profiles.path().join("auditor")).await;
    sign_in(&chrome, &base, &auditor).await;
    let log = text(&chrome, "#access").await;
    for (operation, actor) in [
        ("ListReports", "1001"),
        ("GetReport", "1001"),
        ("UpdateReport", "1001"),
        ("SubmitReport", "1001"),
        ("GetCall", "1001"),
        ("ListReports", "compliance-1"),
        ("ReviewReport", "compliance-1"),
        ("GetRecording", "compliance-1"),
        ("OpenReport", "compliance-1"),
    ] {
        assert!(
            log.lines()
                .any(|line| line.contains(operation) && line.contains(actor)),
            "{operation} by {actor} missing:\n{log}"
        );
    }
    assert!(
        log.lines()
            .any(|line| line.contains("GetRecording") && line.contains("复核录音")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|line| line.contains("GetReport") && line.contains("refused")),
        "{log}"
    );
    screenshot(&chrome, "access-log-reports").await;
    chrome.close().await.unwrap();

    drop(driver);
    service.stop().await;
}
