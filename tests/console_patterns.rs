//! The patterns page in a real browser (chromium over WebDriver, as in
//! `console_dashboard.rs`) against a records service holding the 10,000 generated
//! calls plus a broker who called 6 courts in 2 days: a compliance user finds the
//! broker with the numbers and follows the link to exactly the broker's
//! calls; an auditor sees the number masked and no link; an operator gets 403; each
//! query is on the access log. Screenshot: `target/console-screenshots/patterns.png`.

mod console_common;
mod records_common;

use console_common::{
    browser, browser_present, click_and_load, fetch, screenshot, sign_in, start_driver, text,
    ConsoleService,
};
use courtline::contract::pb::node_event::Kind;
use courtline::contract::pb::{CallRecord, EndReason, LogEventsRequest, NodeEvent, Role};
use records_common::{access_log, numbered};

/// The broker's number.
const BROKER: &str = "13711112222";

/// The broker's six calls: courts A–F, on 2023-11-20 and 2023-11-21 (UTC).
fn broker_calls() -> Vec<NodeEvent> {
    let events = (0..6u32)
        .map(|n| {
            let record = CallRecord {
                call_id: format!("0b0b0b0b-0000-4000-8000-{n:012}"),
                sip_call_id: format!("broker-{n}@trunk.test"),
                line_number: format!("1290{n}"),
                court_name: format!(
                    "{}区人民法院",
                    ["甲", "乙", "丙", "丁", "戊", "己"][n as usize]
                ),
                caller_number: BROKER.into(),
                received_at_ms: 1_700_438_400_000 + i64::from(n) * 8 * 3_600_000,
                ended_at_ms: 1_700_438_460_000 + i64::from(n) * 8 * 3_600_000,
                end_reason: EndReason::OperatorHungUp as i32,
                sip_final_status: 200,
                ..CallRecord::default()
            };
            NodeEvent {
                at_ms: record.ended_at_ms,
                call_id: record.call_id.clone(),
                kind: Some(Kind::Ended(record)),
                ..NodeEvent::default()
            }
        })
        .collect();
    numbered("sb-broker", 1, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_finds_the_broker_and_others_may_not_see_them() {
    if !browser_present() {
        return;
    }
    let service = ConsoleService::start().await;
    let base = service.base.clone();
    let admin = service.token(None, "admin-1", Role::Admin).await;
    let token = |name: &'static str, role| service.token(Some(admin.clone()), name, role);
    let compliance = token("compliance-1", Role::Compliance).await;
    let auditor = token("auditor-1", Role::Auditor).await;
    let operator = token("op-li", Role::Operator).await;
    let switchboard = token("sb-broker", Role::Switchboard).await;
    service
        .client(Some(switchboard))
        .await
        .log_events(LogEventsRequest {
            events: broker_calls(),
        })
        .await
        .unwrap();
    let driver = start_driver();
    let profiles = tempfile::tempdir().unwrap();
    let search =
        "/patterns?pattern=courts&threshold=6&window_days=3&since=2023-11-01&until=2023-12-01";

    let chrome = browser(&driver, &profiles.path().join("compliance")).await;
    sign_in(&chrome, &base, &compliance).await;
    click_and_load(&chrome, "header nav a[href='/patterns']").await;
    assert_eq!(text(&chrome, "h1").await, "跨通话模式");
    chrome.goto(&format!("{base}{search}")).await.unwrap();
    let hits = text(&chrome, "#pattern-hits").await;
    assert!(
        hits.contains(BROKER) && hits.contains("2023-11-20 – 2023-11-22"),
        "{hits}"
    );
    assert!(text(&chrome, "#patterns-summary").await.contains("阈值 6"));
    screenshot(&chrome, "patterns").await;
    // The link lists exactly the broker's six calls.
    click_and_load(&chrome, "#pattern-hits a").await;
    assert_eq!(text(&chrome, "#total strong").await, "6");
    let calls = text(&chrome, "#calls tbody").await;
    assert_eq!(calls.matches(BROKER).count(), 6, "{calls}");
    // The generated callers called once each: nobody else at the defaults either.
    let (_, html) = fetch(
        &chrome,
        "/patterns?pattern=courts&since=2023-11-01&until=2023-12-01",
    )
    .await;
    assert_eq!(html.matches("<td class=\"caller\">").count(), 1, "{html}");
    // The review queue has its pattern alerts section (no rules: empty).
    chrome.goto(&format!("{base}/reports")).await.unwrap();
    assert!(!text(&chrome, "#alerts-empty").await.is_empty());
    chrome.close().await.unwrap();

    // An auditor sees the number masked, without a link, and cannot search by it.
    let chrome = browser(&driver, &profiles.path().join("auditor")).await;
    sign_in(&chrome, &base, &auditor).await;
    let (status, html) = fetch(&chrome, search).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("137****2222") && !html.contains(BROKER),
        "{html}"
    );
    assert!(!html.contains("/calls?"), "{html}");
    let (status, _) = fetch(&chrome, &format!("{search}&caller={BROKER}")).await;
    assert_eq!(status, 403);
    chrome.close().await.unwrap();

    // An operator may not see the page, and the 403 shows none of it.
    let chrome = browser(&driver, &profiles.path().join("operator")).await;
    sign_in(&chrome, &base, &operator).await;
    let (status, html) = fetch(&chrome, search).await;
    assert_eq!(status, 403);
    assert!(
        !html.contains("2222") && !html.contains("pattern-hits"),
        "{html}"
    );
    assert!(!text(&chrome, "header nav").await.contains("通话模式"));
    chrome.close().await.unwrap();

    let log = access_log(&mut service.client(Some(auditor)).await).await;
    let by = |actor: &str| {
        log.iter()
            .filter(|entry| entry.operation == "ListPatterns" && entry.actor == actor)
            .count()
    };
    assert_eq!((by("compliance-1"), by("auditor-1")), (3, 1), "{log:?}");
    drop(driver);
    service.stop().await;
}
