//! The web console in a real browser: Debian's chromium driven over WebDriver
//! (fantoccini and chromedriver, started here on a free port) against a records
//! service holding 10,000 generated calls. Screenshots of every page go to
//! `target/console-screenshots/`. Without /usr/bin/chromium the test says so and
//! skips, unless `CI` is set: then a missing browser fails.

mod records_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use courtline::contract::pb::node_event::Kind;
use courtline::contract::pb::{
    AddTokenRequest, CallMilestone, LogEventsRequest, Milestone, NodeEvent, Role,
};
use courtline::records::service::OpenedService;
use courtline::records::web::WebSettings;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use records_common::{courtline_bin, node_started, numbered, record, settings, sqlite_db};
use tokio::net::TcpListener;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Calls generated for the browser to search through.
const CALLS: u32 = 10_000;
const COURTS: [&str; 4] = [
    "上海市高级人民法院",
    "上海市第一中级人民法院",
    "北京市朝阳区人民法院",
    "广州互联网法院",
];
const NAMES: [&str; 5] = ["李四", "王五（律师）", "张伟", "陈静", "欧阳娜娜"];

/// Whether to run: the browser is there, or CI demands it.
fn browser_present() -> bool {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {CHROMIUM} or {CHROMEDRIVER} is missing: apt-get install chromium chromium-driver fonts-noto-cjk (.ci/run does)"
    );
    eprintln!(
        "SKIPPED console_browser: {CHROMIUM} or {CHROMEDRIVER} is not installed \
         (apt-get install chromium chromium-driver fonts-noto-cjk); set CI=true to make this a failure"
    );
    false
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_driver() -> Driver {
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    Driver { child, port }
}

/// A browser with a fresh profile.
async fn browser(driver: &Driver, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            // A Chinese browser: Accept-Language zh-CN.
            "prefs": { "intl.accept_languages": "zh-CN,zh" },
            "args": [
                "--headless", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1366,900", "--lang=zh-CN",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let url = format!("http://127.0.0.1:{}", driver.port);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match ClientBuilder::new(HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return client,
            Err(error) if std::time::Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("cannot start chromium through chromedriver: {error}"),
        }
    }
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// Calls 1..=CALLS over four courts and five Chinese names, each received and ended.
fn generated_calls() -> Vec<NodeEvent> {
    let mut events = vec![node_started()];
    for n in 1..=CALLS {
        let mut full = record(n);
        full.court_name = COURTS[n as usize % COURTS.len()].to_owned();
        full.caller_display_name = NAMES[n as usize % NAMES.len()].to_owned();
        // Every call played the two-prompt playlist.
        full.prompts = record(2).prompts;
        full.dtmf_during_prompt = if n % 7 == 0 {
            "1#".into()
        } else {
            String::new()
        };
        let snapshot = courtline::contract::pb::CallRecord {
            ended_at_ms: 0,
            end_reason: 0,
            ..full.clone()
        };
        events.push(NodeEvent {
            at_ms: full.received_at_ms,
            call_id: full.call_id.clone(),
            kind: Some(Kind::Milestone(CallMilestone {
                milestone: Milestone::Received as i32,
                snapshot: Some(snapshot),
                ..CallMilestone::default()
            })),
            ..NodeEvent::default()
        });
        events.push(NodeEvent {
            at_ms: full.ended_at_ms,
            call_id: full.call_id.clone(),
            kind: Some(Kind::Ended(full)),
            ..NodeEvent::default()
        });
    }
    numbered("sb-console", 1, events)
}

/// How long a step waits for an element to appear: a form post (verify over
/// 20,000 events, an export) can take seconds on a loaded CI machine, and
/// WebDriver's find does not wait for the page by itself.
const WAIT: Duration = Duration::from_secs(60);

async fn text(client: &Client, css: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let Ok(found) = client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
        else {
            panic!(
                "{css} not on {:?}:\n{}",
                client.current_url().await,
                client.source().await.unwrap_or_default()
            );
        };
        // A partial update (htmx) can replace the element between the two calls.
        match found.text().await {
            Ok(text) => return text,
            Err(error) if std::time::Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("{css}: {error}"),
        }
    }
}

/// Clicks `css` and waits until the page it was on has been replaced by the next
/// one (a form post or a link): WebDriver's click returns before the browser has
/// loaded the next page, and reading at once finds the old page's elements.
async fn click_and_load(client: &Client, css: &str) {
    let old_page = client.find(Locator::Css("html")).await.unwrap();
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    // The old document's root goes stale once the new document is in.
    while old_page.tag_name().await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "clicking {css} loaded no new page"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sign_in(client: &Client, base: &str, token: &str) {
    client.goto(&format!("{base}/login")).await.unwrap();
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    click_and_load(client, "#sign-in").await;
}

/// `fetch` from the page: status and body (the export download, a forbidden page).
async fn fetch(client: &Client, path: &str) -> (u64, String) {
    let result = client
        .execute_async(
            "const [path, done] = arguments; fetch(path).then(async r => done([r.status, await r.text()]));",
            vec![serde_json::json!(path)],
        )
        .await
        .unwrap();
    (
        result[0].as_u64().unwrap(),
        result[1].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_and_auditor_work_through_the_console_in_chromium() {
    if !browser_present() {
        return;
    }
    // fantoccini's rustls client needs a process-wide crypto provider; ring is the tree's.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let db = sqlite_db();
    let settings = settings(&db);
    let opened = OpenedService::open(&settings).await.unwrap();
    let server = opened.server.clone();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    let web = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let web_addr: SocketAddr = web.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut stopped_grpc = stopped.clone();
    let grpc_task = tokio::spawn(opened.serve(grpc, async move {
        let _ = stopped_grpc.changed().await;
    }));
    let mut stopped_web = stopped.clone();
    let web_task = tokio::spawn(courtline::records::web::serve(
        web,
        server,
        WebSettings {
            hosts: vec![web_addr.to_string(), "127.0.0.1".into(), "localhost".into()],
            session_idle: Duration::from_secs(1800),
            tls: false,
        },
        async move {
            let _ = stopped_web.changed().await;
        },
    ));
    let base = format!("http://{web_addr}");

    // 10,000 calls through the service's normal ingest (loopback rule: no token yet).
    let endpoint = format!("http://{grpc_addr}");
    let client = |token: Option<String>| {
        let endpoint = endpoint.clone();
        async move {
            courtline::contract::connect::connect(&courtline::contract::connect::ClientOptions {
                endpoint,
                token,
                ..Default::default()
            })
            .await
            .unwrap()
        }
    };
    let mut loopback = client(None).await;
    for batch in generated_calls().chunks(courtline::contract::MAX_BATCH) {
        loopback
            .log_events(LogEventsRequest {
                events: batch.to_vec(),
            })
            .await
            .unwrap();
    }

    let driver = start_driver();
    let profiles = tempfile::tempdir().unwrap();

    // Before any token: the loopback rule lets this machine's browser in as admin, with a banner.
    let chrome = browser(&driver, &profiles.path().join("loopback")).await;
    chrome.goto(&format!("{base}/calls")).await.unwrap();
    let banner = text(&chrome, "#loopback-banner").await;
    assert!(banner.contains("courtline records token add"), "{banner}");
    screenshot(&chrome, "loopback-calls").await;
    chrome.close().await.unwrap();

    let add = |name: &str, role: Role| AddTokenRequest {
        name: name.into(),
        role: role as i32,
    };
    let admin = loopback
        .add_token(add("admin-1", Role::Admin))
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut admin_client = client(Some(admin.clone())).await;
    let compliance = admin_client
        .add_token(add("compliance-1", Role::Compliance))
        .await
        .unwrap()
        .into_inner()
        .token;
    let auditor = admin_client
        .add_token(add("auditor-1", Role::Auditor))
        .await
        .unwrap()
        .into_inner()
        .token;

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

    // Open the newest match and check its timeline.
    click_and_load(&chrome, "#calls tbody a").await;
    let timeline = text(&chrome, "#timeline").await;
    assert!(
        timeline.contains("received") && timeline.contains("ended"),
        "{timeline}"
    );
    let call_path = chrome.current_url().await.unwrap().path().to_owned();
    let call_id = call_path.trim_start_matches("/calls/").to_owned();
    assert_eq!(
        call_id,
        records_common::call_id(CALLS - 1),
        "newest 欧阳娜娜: n % 5 == 4"
    );
    assert!(text(&chrome, "#prompts").await.contains(&"e5".repeat(32)));
    screenshot(&chrome, "call").await;

    // Flag it: "other" without a note is refused, with one it is recorded.
    chrome
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#category"))
        .await
        .unwrap()
        .select_by_value("other")
        .await
        .unwrap();
    click_and_load(&chrome, "#flag-button").await;
    assert!(text(&chrome, "#error").await.contains("必须填写说明"));
    chrome
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#category"))
        .await
        .unwrap()
        .select_by_value("other")
        .await
        .unwrap();
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

    // Export the search and verify the file with the CLI.
    let (status, csv) = fetch(
        &chrome,
        "/export.csv?name=%E6%AC%A7%E9%98%B3&reason=%E5%A4%8D%E6%A0%B8",
    )
    .await;
    assert_eq!(status, 200, "{csv}");
    let file = db.dir.path().join("export.csv");
    std::fs::write(&file, &csv).unwrap();
    let (public_key, _) = opened_public_key(&db);
    let verified = Command::new(courtline_bin())
        .args(["records", "verify-export"])
        .arg(&file)
        .args(["--public-key", &public_key])
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    assert_eq!(
        csv.lines().filter(|line| line.contains("欧阳娜娜")).count(),
        2_000
    );

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
    stop.send(true).unwrap();
    grpc_task.await.unwrap().unwrap();
    web_task.await.unwrap().unwrap();
}

/// The service's public key (hex), read from its key file with the CLI-independent loader.
fn opened_public_key(db: &records_common::Db) -> (String, ()) {
    let key =
        courtline::records::ledger::signing::RecordsKey::load(&db.dir.path().join("signing.key"))
            .unwrap();
    (key.public_key_hex(), ())
}
