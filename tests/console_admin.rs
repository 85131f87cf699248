//! Administration and integrity in a real browser (Chromium over WebDriver, as in
//! `console_browser`) against a records service holding 10,000 generated calls: the
//! loopback admin issues the first token and sees it once, signs in with it and
//! issues an auditor's; an auditor runs verification, watches its progress until the
//! findings (a call row changed behind the service's back) appear by kind, and
//! uploads a file the console exported and sees it verified. Screenshots go to
//! `target/console-screenshots/admin-*` and `integrity-*`.

mod console_common;
mod records_common;

use console_common::{
    browser, browser_present, click_and_load, post_form, screenshot, sign_in, start_driver, text,
    ConsoleService, CALLS,
};
use courtline::contract::pb::Role;
use fantoccini::{Client, Locator};
use records_common::call_id;

/// Issues a token named `name` with `role` through the administration form; returns
/// the secret the result page shows.
async fn issue(chrome: &Client, base: &str, name: &str, role: &str) -> String {
    chrome.goto(&format!("{base}/admin")).await.unwrap();
    text(chrome, "#issue-form").await;
    chrome
        .find(Locator::Css("#token-name"))
        .await
        .unwrap()
        .send_keys(name)
        .await
        .unwrap();
    chrome
        .find(Locator::Css("#token-role"))
        .await
        .unwrap()
        .select_by_value(role)
        .await
        .unwrap();
    click_and_load(chrome, "#issue-button").await;
    assert_eq!(text(chrome, "#issued-name").await, name);
    assert!(!text(chrome, "#shown-once").await.is_empty());
    let secret = chrome
        .find(Locator::Css("#new-token"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert!(secret.starts_with("clt_"), "{secret}");
    secret
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_issues_a_token_and_an_auditor_verifies_the_chain_and_an_export_in_chromium() {
    if !browser_present() {
        return;
    }
    let service = ConsoleService::start().await;
    let base = service.base.clone();
    let driver = start_driver();
    let profiles = tempfile::tempdir().unwrap();

    // The loopback admin issues the first token: shown once, then never again.
    let chrome = browser(&driver, &profiles.path().join("admin")).await;
    chrome.goto(&format!("{base}/admin")).await.unwrap();
    text(&chrome, "#loopback-banner").await;
    screenshot(&chrome, "admin-loopback").await;
    let admin = issue(&chrome, &base, "admin-1", "admin").await;
    assert!(!text(&chrome, "#loopback-ended").await.is_empty());
    screenshot(&chrome, "admin-token-issued").await;
    sign_in(&chrome, &base, &admin).await;
    let auditor = issue(&chrome, &base, "auditor-1", "auditor").await;
    chrome.goto(&format!("{base}/admin")).await.unwrap();
    let tokens = text(&chrome, "#token-list").await;
    assert!(
        tokens.contains("admin-1") && tokens.contains("auditor-1"),
        "{tokens}"
    );
    let source = chrome.source().await.unwrap();
    assert!(!source.contains(&admin) && !source.contains(&auditor));
    assert_eq!(text(&chrome, "#retention-days").await, "180");
    screenshot(&chrome, "admin").await;
    chrome.close().await.unwrap();

    // A compliance user exports every call as signed CSV, as the calls page does.
    let compliance = service
        .token(Some(admin.clone()), "compliance-1", Role::Compliance)
        .await;
    let chrome = browser(&driver, &profiles.path().join("compliance")).await;
    sign_in(&chrome, &base, &compliance).await;
    let (status, csv) = post_form(
        &chrome,
        "/calls/export",
        &[("format", "csv"), ("reason", "审计抽查")],
    )
    .await;
    assert_eq!(status, 200, "{csv}");
    let export = profiles.path().join("calls.csv");
    std::fs::write(&export, &csv).unwrap();
    chrome.close().await.unwrap();

    // Someone edits a call row in the database behind the service's back.
    let pool = sqlx::sqlite::SqlitePool::connect(&format!("sqlite://{}", service.db.url))
        .await
        .unwrap();
    sqlx::query("UPDATE calls SET caller_number = '110' WHERE call_id = ?")
        .bind(call_id(7))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    // The auditor runs verification: progress while it runs, then findings by kind.
    let chrome = browser(&driver, &profiles.path().join("auditor")).await;
    sign_in(&chrome, &base, &auditor).await;
    chrome.goto(&format!("{base}/integrity")).await.unwrap();
    click_and_load(&chrome, "#verify-button").await;
    text(&chrome, "#verify-status").await;
    // Over 20,000 events the first view usually finds it running; a fast machine may
    // already have the result, which the steps below check either way.
    if let Ok(progress) = chrome.find(Locator::Css("#verify-progress")).await {
        let shown = progress.text().await.unwrap_or_default();
        eprintln!("verification progress shown: {shown}");
        screenshot(&chrome, "integrity-progress").await;
    }
    let kind = text(&chrome, ".finding-kind").await;
    assert!(kind.starts_with("projection"), "{kind}");
    let findings = text(&chrome, "#verify-result").await;
    assert!(findings.contains(&call_id(7)), "{findings}");
    assert!(
        findings.contains(&format!("/ {CALLS};")),
        "every call checked: {findings}"
    );
    let status = text(&chrome, "#verify-status").await;
    assert!(status.contains("auditor-1"), "{status}");
    screenshot(&chrome, "integrity-findings").await;

    // The exported file, uploaded, checks out against its manifest and the service key.
    chrome
        .find(Locator::Css("#export-file"))
        .await
        .unwrap()
        .send_keys(&export.display().to_string())
        .await
        .unwrap();
    click_and_load(&chrome, "#check-export").await;
    assert!(!text(&chrome, "#export-intact").await.is_empty());
    assert_eq!(text(&chrome, "#export-rows").await, CALLS.to_string());
    assert_eq!(text(&chrome, "#export-by").await, "compliance-1");
    screenshot(&chrome, "integrity-export-checked").await;
    chrome.close().await.unwrap();
    service.stop().await;
}
