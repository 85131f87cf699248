//! The web console in a real browser: Debian's chromium driven over WebDriver
//! (fantoccini and chromedriver, started here on a free port) against a records
//! service holding 10,000 generated calls: sign-in, the calls search, a call,
//! flagging, export, the language switch, the access log and verification.
//! Screenshots of every page go to `target/console-screenshots/`. Without
//! /usr/bin/chromium the test says so and skips, unless `CI` is set: then a
//! missing browser fails.

mod console_common;
mod records_common;

use std::process::Command;
use std::time::Duration;

use console_common::{
    browser, browser_present, choose, click_and_load, fetch, post_form, screenshot, sign_in,
    start_driver, text, ConsoleService, CALLS, WAIT,
};
use courtline::contract::pb::Role;
use fantoccini::Locator;
use records_common::courtline_bin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_and_auditor_work_through_the_console_in_chromium() {
    if !browser_present() {
        return;
    }
    let service = ConsoleService::start().await;
    let base = service.base.clone();
    let db = &service.db;
    let driver = start_driver();
    let profiles = tempfile::tempdir().unwrap();

    // Before any token: the loopback rule lets this machine's browser in as admin, with a banner.
    let chrome = browser(&driver, &profiles.path().join("loopback")).await;
    chrome.goto(&format!("{base}/calls")).await.unwrap();
    let banner = text(&chrome, "#loopback-banner").await;
    assert!(banner.contains("courtline records token add"), "{banner}");
    screenshot(&chrome, "loopback-calls").await;
    chrome.close().await.unwrap();

    let admin = service.token(None, "admin-1", Role::Admin).await;
    let compliance = service
        .token(Some(admin.clone()), "compliance-1", Role::Compliance)
        .await;
    let auditor = service
        .token(Some(admin.clone()), "auditor-1", Role::Auditor)
        .await;

    let chrome = browser(&driver, &profiles.path().join("compliance")).await;
    chrome.goto(&format!("{base}/calls")).await.unwrap();
    assert!(
        chrome.current_url().await.unwrap().path() == "/login",
        "the rule ended: sign in"
    );
    screenshot(&chrome, "login").await;
    sign_in(&chrome, &base, "clt_wrong").await;
    let error = text(&chrome, "#error").await;
    assert!(error.contains("令牌无效"), "{error}");
    sign_in(&chrome, &base, &compliance).await;
    assert_eq!(chrome.current_url().await.unwrap().path(), "/calls");
    assert_eq!(text(&chrome, "h1").await, "通话记录");
    assert!(chrome.find(Locator::Css("#loopback-banner")).await.is_err());

    // Search by a Chinese caller name.
    chrome
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#name"))
        .await
        .unwrap()
        .send_keys("欧阳")
        .await
        .unwrap();
    chrome
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#search-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let names = loop {
        let cells = chrome
            .find_all(Locator::Css("#calls td.caller-name"))
            .await
            .unwrap();
        let mut names = Vec::new();
        // htmx may swap the table between finding the cells and reading them: read again.
        for cell in cells {
            match cell.text().await {
                Ok(name) => names.push(name),
                Err(_) => names.clear(),
            }
        }
        if (!names.is_empty()
            && chrome
                .current_url()
                .await
                .unwrap()
                .query()
                .is_some_and(|q| q.contains("name=")))
            || std::time::Instant::now() > deadline
        {
            break names;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(names.len(), 50, "{names:?}");
    assert!(names.iter().all(|name| name == "欧阳娜娜"), "{names:?}");
    let total = text(&chrome, "#total").await;
    assert!(total.contains("2,000"), "{total}");
    screenshot(&chrome, "calls-search").await;
    assert!(
        chrome
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css("#next-page"))
            .await
            .is_ok(),
        "2,000 match: more pages"
    );

    // Open the newest match and check its timeline: received, answered, the
    // warning with its playlist, ended by the caller; times with their UTC offset.
    click_and_load(&chrome, "#calls tbody a").await;
    let timeline = text(&chrome, "#timeline").await;
    assert!(
        timeline.contains("来电")
            && timeline.contains("开始播放告知")
            && timeline.contains("通话结束")
            && timeline.contains("挂断方: 来电者"),
        "{timeline}"
    );
    let first_time = text(&chrome, "#timeline time").await;
    assert!(
        first_time.len() == "2023-11-15 06:13:20 +08:00".len()
            && first_time.chars().rev().nth(2) == Some(':'),
        "{first_time}"
    );
    let call_path = chrome.current_url().await.unwrap().path().to_owned();
    let call_id = call_path.trim_start_matches("/calls/").to_owned();
    assert_eq!(
        call_id,
        records_common::call_id(CALLS - 1),
        "newest 欧阳娜娜: n % 5 == 4"
    );
    let hash = chrome
        .find(Locator::Css("#prompts code"))
        .await
        .unwrap()
        .attr("title")
        .await
        .unwrap();
    assert_eq!(hash.as_deref(), Some("e5".repeat(32).as_str()));
    assert!(text(&chrome, "#prompts").await.contains("e5e5e5e5e5e5…"));
    screenshot(&chrome, "call").await;

    // Flag it: "other" without a note is refused, with one it is recorded.
    choose(&chrome, "#category", "other").await;
    click_and_load(&chrome, "#flag-button").await;
    assert!(text(&chrome, "#error").await.contains("必须填写说明"));
    choose(&chrome, "#category", "other").await;
    chrome
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#note"))
        .await
        .unwrap()
        .send_keys("来电者反复打听合议庭成员")
        .await
        .unwrap();
    click_and_load(&chrome, "#flag-button").await;
    let flags = text(&chrome, "#flags").await;
    assert!(
        flags.contains("来电者反复打听合议庭成员") && flags.contains("compliance-1"),
        "{flags}"
    );
    screenshot(&chrome, "call-flagged").await;

    // Export the search: the export button leads to the reason form; without a
    // reason nothing is exported; CSV and JSONL verify with the CLI.
    chrome
        .goto(&format!("{base}/calls?name=%E6%AC%A7%E9%98%B3"))
        .await
        .unwrap();
    click_and_load(&chrome, "#export-link").await;
    assert!(text(&chrome, "#export-search").await.contains("欧阳"));
    screenshot(&chrome, "export-reason").await;
    let search = [("name", "欧阳"), ("format", "csv")];
    let (status, refused) = post_form(&chrome, "/calls/export", &search).await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused.contains("请填写导出原因"), "{refused}");
    let (public_key, _) = opened_public_key(db);
    for format in ["csv", "jsonl"] {
        let (status, exported) = post_form(
            &chrome,
            "/calls/export",
            &[("name", "欧阳"), ("format", format), ("reason", "复核")],
        )
        .await;
        assert_eq!(status, 200, "{exported}");
        let file = db.dir.path().join(format!("export.{format}"));
        std::fs::write(&file, &exported).unwrap();
        let verified = Command::new(courtline_bin())
            .args(["records", "verify-export"])
            .arg(&file)
            .args(["--public-key", &public_key])
            .output()
            .unwrap();
        assert!(
            verified.status.success(),
            "{format}: {}{}",
            String::from_utf8_lossy(&verified.stdout),
            String::from_utf8_lossy(&verified.stderr)
        );
        assert_eq!(
            exported
                .lines()
                .filter(|line| line.contains("欧阳娜娜"))
                .count(),
            2_000,
            "{format}"
        );
    }

    // A compliance user may not see the integrity page, and it leaks nothing.
    let (status, html) = fetch(&chrome, "/integrity").await;
    assert_eq!(status, 403);
    assert!(
        !html.contains(&public_key) && !html.contains("SHA256:"),
        "{html}"
    );
    chrome.goto(&format!("{base}/integrity")).await.unwrap();
    screenshot(&chrome, "integrity-forbidden").await;

    // Switch language.
    chrome.goto(&format!("{base}/calls")).await.unwrap();
    click_and_load(&chrome, "a.lang").await;
    assert_eq!(text(&chrome, "h1").await, "Call records");
    screenshot(&chrome, "calls-english").await;
    chrome.close().await.unwrap();

    // The auditor sees each view in the access log, and verifies.
    let chrome = browser(&driver, &profiles.path().join("auditor")).await;
    sign_in(&chrome, &base, &auditor).await;
    assert_eq!(chrome.current_url().await.unwrap().path(), "/access");
    let log = text(&chrome, "#access").await;
    for operation in ["ListCalls", "GetCall", "FlagCall", "ExportCalls"] {
        assert!(
            log.lines()
                .any(|line| line.contains(operation) && line.contains("compliance-1")),
            "{operation} by compliance-1 missing:\n{log}"
        );
    }
    assert!(log.contains(&call_id) && log.contains("复核"), "{log}");
    screenshot(&chrome, "access-log").await;
    chrome.goto(&format!("{base}/integrity")).await.unwrap();
    click_and_load(&chrome, "#verify-button").await;
    assert!(!text(&chrome, "#intact").await.is_empty());
    screenshot(&chrome, "integrity").await;
    let (status, _) = fetch(&chrome, "/calls").await;
    assert_eq!(status, 403, "an auditor reads no call data");
    chrome.close().await.unwrap();

    drop(driver);
    service.stop().await;
}

/// The service's public key (hex), read from its key file with the CLI-independent loader.
fn opened_public_key(db: &records_common::Db) -> (String, ()) {
    let key =
        courtline::records::ledger::signing::RecordsKey::load(&db.dir.path().join("signing.key"))
            .unwrap();
    (key.public_key_hex(), ())
}
