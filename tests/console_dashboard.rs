//! The dashboard in a real browser (chromium over WebDriver, as in
//! `console_browser.rs`) against a records service holding 10,000 generated calls
//! over four courts, received on 2023-11-14 and 2023-11-15 (UTC): a compliance
//! user opens it, reads the figures of a range that holds them, switches range,
//! sees the records' health after a verification; the view is on the access log;
//! an operator gets 403 and none of the figures. Screenshots:
//! `target/console-screenshots/dashboard.png` and `dashboard-health.png`.

mod console_common;
mod records_common;

use console_common::{
    browser, browser_present, click_and_load, fetch, screenshot, sign_in, start_driver, text,
    ConsoleService, CALLS, COURTS,
};
use courtline::contract::pb::{Role, VerifyRequest};
use records_common::access_log;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_reads_the_dashboard_and_an_operator_may_not() {
    if !browser_present() {
        return;
    }
    let service = ConsoleService::start().await;
    let base = service.base.clone();
    let admin = service.token(None, "admin-1", Role::Admin).await;
    let compliance = service
        .token(Some(admin.clone()), "compliance-1", Role::Compliance)
        .await;
    let operator = service
        .token(Some(admin.clone()), "op-li", Role::Operator)
        .await;
    let auditor = service
        .token(Some(admin.clone()), "auditor-1", Role::Auditor)
        .await;
    service
        .client(Some(auditor.clone()))
        .await
        .verify(VerifyRequest {})
        .await
        .unwrap();
    let driver = start_driver();
    let profiles = tempfile::tempdir().unwrap();

    let chrome = browser(&driver, &profiles.path().join("compliance")).await;
    sign_in(&chrome, &base, &compliance).await;
    // Today's 30 days hold none of the generated calls (they are from 2023).
    click_and_load(&chrome, "header nav a[href='/dashboard']").await;
    assert_eq!(text(&chrome, "h1").await, "概览");
    assert_eq!(text(&chrome, "#total-calls").await, "0");
    assert!(text(&chrome, "#range").await.contains("UTC"));

    // The week ending 2023-11-15 holds every call: a third hung up in the warning
    // (call numbers divisible by 3), the rest heard it all.
    chrome
        .goto(&format!("{base}/dashboard?days=7&until=2023-11-15"))
        .await
        .unwrap();
    assert_eq!(text(&chrome, "#total-calls").await, CALLS.to_string());
    assert_eq!(text(&chrome, "#share-completed").await, "66.7%");
    assert_eq!(text(&chrome, "#hung-up").await, (CALLS / 3).to_string());
    let legend = text(&chrome, ".legend").await;
    assert!(
        COURTS.iter().all(|court| legend.contains(court)),
        "{legend}"
    );
    // Calls 1–6399 arrived before midnight UTC (1,700,000,000 s is 22:13:20).
    let (_, html) = fetch(&chrome, "/dashboard?days=7&until=2023-11-15").await;
    let row = html
        .split("<tr>")
        .find(|row| row.contains("<th scope=\"row\">2023-11-14</th>"))
        .unwrap_or_else(|| panic!("no row for 2023-11-14:\n{html}"));
    assert!(row.contains("<td>6399</td>"), "{row}");
    assert!(html.contains("<title id=\"calls-chart-title\">"), "{html}");
    assert!(html.contains("<path d=\"M"), "bars are drawn");
    let health = text(&chrome, "#health").await;
    assert!(
        health.contains("完好") && health.contains("auditor-1"),
        "{health}"
    );
    assert!(text(&chrome, "#checkpoint").await.starts_with('#'));
    assert!(text(&chrome, "#deliveries").await.contains("sb-console"));
    screenshot(&chrome, "dashboard").await;
    chrome
        .execute("document.getElementById('health').scrollIntoView()", vec![])
        .await
        .unwrap();
    screenshot(&chrome, "dashboard-health").await;

    // Another range keeps the end date.
    click_and_load(&chrome, "#range-90").await;
    let url = chrome.current_url().await.unwrap();
    assert_eq!(url.query(), Some("days=90&until=2023-11-15"));
    assert_eq!(text(&chrome, "#total-calls").await, CALLS.to_string());
    let (status, _) = fetch(&chrome, "/dashboard?days=12").await;
    assert_eq!(status, 400, "only the offered ranges");
    chrome.close().await.unwrap();

    // Each view is an access event.
    let log = access_log(&mut service.client(Some(auditor)).await).await;
    let views = log
        .iter()
        .filter(|entry| entry.operation == "Dashboard" && entry.actor == "compliance-1")
        .count();
    assert_eq!(views, 4, "{log:?}");

    // An operator may not see the dashboard, and the 403 shows none of it.
    let chrome = browser(&driver, &profiles.path().join("operator")).await;
    sign_in(&chrome, &base, &operator).await;
    chrome.goto(&format!("{base}/dashboard")).await.unwrap();
    assert_eq!(text(&chrome, "h1").await, "无权访问");
    assert!(!text(&chrome, "header nav").await.contains("概览"));
    let (status, html) = fetch(&chrome, "/dashboard?days=7&until=2023-11-15").await;
    assert_eq!(status, 403);
    assert!(
        !html.contains("total-calls") && !COURTS.iter().any(|court| html.contains(court)),
        "{html}"
    );
    chrome.close().await.unwrap();

    drop(driver);
    service.stop().await;
}
