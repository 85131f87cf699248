//! What the console's browser tests share: chromedriver and Chromium started for
//! the test, a records service with its console holding 10,000 generated calls,
//! and waits that survive page loads and partial updates. Each page area has its
//! own test file (`tests/console_*.rs`) using these.

#![allow(dead_code)] // each test file uses a part

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use courtline::contract::connect::RecordsClient;
use courtline::contract::pb::node_event::Kind;
use courtline::contract::pb::{
    AddTokenRequest, CallMilestone, LogEventsRequest, Milestone, NodeEvent, Role,
};
use courtline::records::service::OpenedService;
use courtline::records::web::WebSettings;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::records_common::{node_started, numbered, record, settings, sqlite_db, Db};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Calls generated for the browser to search through.
pub const CALLS: u32 = 10_000;
pub const COURTS: [&str; 4] = [
    "上海市高级人民法院",
    "上海市第一中级人民法院",
    "北京市朝阳区人民法院",
    "广州互联网法院",
];
pub const NAMES: [&str; 5] = ["李四", "王五（律师）", "张伟", "陈静", "欧阳娜娜"];

/// Whether to run: the browser is there, or CI demands it.
pub fn browser_present() -> bool {
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
pub struct Driver {
    child: Child,
    /// Port chromedriver listens on.
    pub port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn start_driver() -> Driver {
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
pub async fn browser(driver: &Driver, profile: &Path) -> Client {
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

pub fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// Calls 1..=CALLS over four courts and five Chinese names, each received and ended.
pub fn generated_calls() -> Vec<NodeEvent> {
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
pub const WAIT: Duration = Duration::from_secs(60);

pub async fn text(client: &Client, css: &str) -> String {
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
pub async fn click_and_load(client: &Client, css: &str) {
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

/// Chooses `value` in the select `css` once it is there.
pub async fn choose(client: &Client, css: &str, value: &str) {
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap()
        .select_by_value(value)
        .await
        .unwrap();
}

pub async fn sign_in(client: &Client, base: &str, token: &str) {
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
pub async fn fetch(client: &Client, path: &str) -> (u64, String) {
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

/// A form POST from the page, with the page's CSRF token added: status and body
/// (the export download).
pub async fn post_form(client: &Client, path: &str, fields: &[(&str, &str)]) -> (u64, String) {
    let result = client
        .execute_async(
            "const [path, fields, done] = arguments; \
             const body = new URLSearchParams(fields); \
             body.append('csrf', document.querySelector('input[name=csrf]').value); \
             fetch(path, {method: 'POST', body}).then(async r => done([r.status, await r.text()]));",
            vec![serde_json::json!(path), serde_json::json!(fields)],
        )
        .await
        .unwrap();
    (
        result[0].as_u64().unwrap(),
        result[1].as_str().unwrap().to_owned(),
    )
}

/// A records service with its console on loopback, holding the generated calls.
pub struct ConsoleService {
    /// The database (kept alive for the test).
    pub db: Db,
    /// `http://127.0.0.1:PORT` of the console.
    pub base: String,
    /// `http://127.0.0.1:PORT` of the gRPC service.
    pub endpoint: String,
    stop: tokio::sync::watch::Sender<bool>,
    grpc_task: JoinHandle<Result<(), courtline::records::service::ServiceError>>,
    web_task: JoinHandle<std::io::Result<()>>,
}

impl ConsoleService {
    /// Starts the service and its console and logs the generated calls through the
    /// normal ingest (the loopback rule: no token yet).
    pub async fn start() -> ConsoleService {
        // fantoccini's HTTP client and tonic share the process; ring is the tree's provider.
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
                tls: None,
                masked_roles: vec![Role::Auditor, Role::Admin],
            },
            async move {
                let _ = stopped_web.changed().await;
            },
        ));
        let service = ConsoleService {
            db,
            base: format!("http://{web_addr}"),
            endpoint: format!("http://{grpc_addr}"),
            stop,
            grpc_task,
            web_task,
        };
        let mut loopback = service.client(None).await;
        for batch in generated_calls().chunks(courtline::contract::MAX_BATCH) {
            loopback
                .log_events(LogEventsRequest {
                    events: batch.to_vec(),
                })
                .await
                .unwrap();
        }
        service
    }

    /// A gRPC client with `token` (none: the loopback rule).
    pub async fn client(&self, token: Option<String>) -> RecordsClient {
        courtline::contract::connect::connect(&courtline::contract::connect::ClientOptions {
            endpoint: self.endpoint.clone(),
            token,
            ..Default::default()
        })
        .await
        .unwrap()
    }

    /// Issues a token for `name` with `role` using `admin` (none: the loopback rule,
    /// which lets only a first `admin` token through).
    pub async fn token(&self, admin: Option<String>, name: &str, role: Role) -> String {
        self.client(admin)
            .await
            .add_token(AddTokenRequest {
                name: name.into(),
                role: role as i32,
            })
            .await
            .unwrap()
            .into_inner()
            .token
    }

    /// Stops the console and the service and checks both ended cleanly.
    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        self.grpc_task.await.unwrap().unwrap();
        self.web_task.await.unwrap().unwrap();
    }
}
