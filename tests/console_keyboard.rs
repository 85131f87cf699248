//! The console without a mouse, in Chromium: sign in, search by a Chinese caller name,
//! open a call, reach the export's reason form, with nothing but Tab, typing and Enter
//! (WebDriver key actions with `fantoccini::key::Key`), every element the focus stops
//! on showing a visible outline. And every form field of the calls pages has a label. Screenshots go to
//! `target/console-screenshots/keyboard-*.png`. Skips without /usr/bin/chromium
//! unless `CI` is set, like the other browser tests.

mod console_common;
mod records_common;

use std::time::Duration;

use console_common::{
    browser, browser_present, choose, click_and_load, screenshot, start_driver, text,
    ConsoleService, WAIT,
};
use courtline::contract::pb::Role;
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, Locator};

/// Most Tab presses to reach any element of a page (the search form has about 20 fields).
const MAX_TABS: usize = 60;

/// What has the focus: tag, id, text, the outline drawn round it, and whether it is a
/// link inside the calls table.
async fn focused(client: &Client) -> serde_json::Value {
    client
        .execute(
            "const e = document.activeElement; const s = getComputedStyle(e); \
             return {tag: e.tagName.toLowerCase(), id: e.id, text: (e.innerText || '').slice(0, 40), \
                     outline: s.outlineStyle, width: parseFloat(s.outlineWidth) || 0, \
                     row_link: e.tagName === 'A' && e.closest('#calls tbody') !== null};",
            vec![],
        )
        .await
        .unwrap()
}

/// Types `text` into the field that has the focus.
async fn type_text(client: &Client, text: &str) {
    client
        .active_element()
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

/// Presses and releases `key` on the keyboard, wherever the focus is. A key action,
/// not an element's send-keys: that focuses the element first, which puts the focus
/// back on a date field's first part and never lets Tab leave it.
async fn press(client: &Client, key: Key) {
    let value: char = key.into();
    let actions = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value })
        .then(KeyAction::Up { value });
    client.perform_actions(actions).await.unwrap();
}

/// Presses Tab until `wanted` holds for the focused element, checking that each
/// element the focus passes shows a visible outline; returns the Tabs pressed.
async fn tab_to(client: &Client, what: &str, wanted: impl Fn(&serde_json::Value) -> bool) -> usize {
    let mut passed = Vec::new();
    for tabs in 1..=MAX_TABS {
        press(client, Key::Tab).await;
        let now = focused(client).await;
        passed.push(format!("{}#{}", now["tag"], now["id"]));
        assert!(
            now["tag"] != "body",
            "focus fell off the page looking for {what}"
        );
        assert!(
            now["outline"] != "none" && now["width"].as_f64().unwrap_or(0.0) >= 2.0,
            "no visible focus on {now}"
        );
        if wanted(&now) {
            return tabs;
        }
    }
    panic!("{what} not reached with {MAX_TABS} Tabs: {passed:?}");
}

/// Presses Enter on the focused element and waits for the next page to be in.
async fn enter_and_load(client: &Client) {
    let old_page = client.find(Locator::Css("html")).await.unwrap();
    press(client, Key::Enter).await;
    let deadline = std::time::Instant::now() + WAIT;
    while old_page.tag_name().await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "Enter loaded no new page"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn signed_in_compliance(service: &ConsoleService) -> String {
    let admin = service.token(None, "admin-1", Role::Admin).await;
    service
        .token(Some(admin), "compliance-1", Role::Compliance)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_main_flow_works_with_the_keyboard_alone() {
    if !browser_present() {
        return;
    }
    let service = ConsoleService::start().await;
    let base = service.base.clone();
    let compliance = signed_in_compliance(&service).await;
    let driver = start_driver();
    let profiles = tempfile::tempdir().unwrap();
    let chrome = browser(&driver, &profiles.path().join("keyboard")).await;

    // Sign in: the token field has the focus; type, Enter.
    chrome.goto(&format!("{base}/login")).await.unwrap();
    text(&chrome, "#token").await;
    assert_eq!(focused(&chrome).await["id"], "token");
    type_text(&chrome, &compliance).await;
    enter_and_load(&chrome).await;
    assert_eq!(chrome.current_url().await.unwrap().path(), "/calls");

    // The skip link comes first and is visible when focused.
    press(&chrome, Key::Tab).await;
    let skip = focused(&chrome).await;
    assert_eq!(skip["tag"], "a", "{skip}");
    assert!(
        skip["text"].as_str().unwrap().contains("跳到正文"),
        "{skip}"
    );

    // Search: Tab to the name field, type, Enter (the form's submit).
    tab_to(&chrome, "the caller name field", |now| now["id"] == "name").await;
    type_text(&chrome, "欧阳").await;
    screenshot(&chrome, "keyboard-search-typed").await;
    press(&chrome, Key::Enter).await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let query = chrome
            .current_url()
            .await
            .unwrap()
            .query()
            .map(str::to_owned);
        // htmx may swap the results between finding the count and reading it.
        let total = match chrome.find(Locator::Css("#total")).await {
            Ok(total) => total.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if query.as_ref().is_some_and(|q| q.contains("name=")) && total.contains("2,000") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the search did not run: {query:?} {total:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    screenshot(&chrome, "keyboard-search-results").await;

    // Open a call: Tab on from the name field to the first row's link, Enter.
    tab_to(&chrome, "the first call", |now| now["row_link"] == true).await;
    screenshot(&chrome, "keyboard-row-focused").await;
    enter_and_load(&chrome).await;
    assert!(chrome
        .current_url()
        .await
        .unwrap()
        .path()
        .starts_with("/calls/"));
    assert!(text(&chrome, "#timeline").await.contains("通话结束"));

    // The flag form is reachable too: Tab to its category.
    tab_to(&chrome, "the flag category", |now| now["id"] == "category").await;
    screenshot(&chrome, "keyboard-call").await;

    // Back on the list, the export link leads to the reason field by keyboard.
    chrome
        .goto(&format!("{base}/calls?name=%E6%AC%A7%E9%98%B3"))
        .await
        .unwrap();
    text(&chrome, "#total").await;
    tab_to(&chrome, "the export link", |now| now["id"] == "export-link").await;
    enter_and_load(&chrome).await;
    tab_to(&chrome, "the export reason", |now| now["id"] == "reason").await;
    screenshot(&chrome, "keyboard-export-reason").await;

    chrome.close().await.unwrap();
    drop(driver);
    service.stop().await;
}

/// Every visible form field of the page, without a label that names it: by
/// `<label for>` (or around it), `aria-label` or `aria-labelledby`.
async fn unlabelled(client: &Client) -> Vec<String> {
    let found = client
        .execute(
            "return [...document.querySelectorAll('input, select, textarea')] \
               .filter(e => e.type !== 'hidden') \
               .filter(e => { \
                 const labels = [...(e.labels || [])].map(l => l.innerText.trim()).filter(t => t); \
                 const aria = (e.getAttribute('aria-label') || '').trim(); \
                 const by = (e.getAttribute('aria-labelledby') || '').split(' ') \
                   .map(id => document.getElementById(id)).filter(l => l && l.innerText.trim()); \
                 return labels.length === 0 && !aria && by.length === 0; }) \
               .map(e => e.outerHTML);",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(found).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_field_of_the_calls_pages_has_a_label() {
    if !browser_present() {
        return;
    }
    let service = ConsoleService::start().await;
    let base = service.base.clone();
    let compliance = signed_in_compliance(&service).await;
    let driver = start_driver();
    let profiles = tempfile::tempdir().unwrap();
    let chrome = browser(&driver, &profiles.path().join("labels")).await;

    chrome.goto(&format!("{base}/login")).await.unwrap();
    text(&chrome, "#token").await;
    let mut checked = vec![("/login".to_owned(), unlabelled(&chrome).await)];
    console_common::sign_in(&chrome, &base, &compliance).await;
    let call = format!("/calls/{}", records_common::call_id(42));
    for path in [
        "/calls".to_owned(),
        "/calls?range=7d&flagged=no&has_report=no".to_owned(),
        call.clone(),
        "/calls/export?name=%E6%AC%A7%E9%98%B3".to_owned(),
    ] {
        chrome.goto(&format!("{base}{path}")).await.unwrap();
        text(&chrome, "main h1").await;
        checked.push((path, unlabelled(&chrome).await));
    }
    // A refused flag ("other" without a note) shows the form again, with its error.
    chrome.goto(&format!("{base}{call}")).await.unwrap();
    choose(&chrome, "#category", "other").await;
    click_and_load(&chrome, "#flag-button").await;
    text(&chrome, "#error").await;
    checked.push((format!("{call} (refused flag)"), unlabelled(&chrome).await));
    let missing: Vec<_> = checked
        .iter()
        .filter(|(_, fields)| !fields.is_empty())
        .collect();
    assert!(missing.is_empty(), "fields without a label: {missing:#?}");

    chrome.close().await.unwrap();
    drop(driver);
    service.stop().await;
}
