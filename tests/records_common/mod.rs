//! Shared by the records tests: databases on both backends, an in-process records
//! service on loopback, and call events as a switchboard sends them.
#![allow(dead_code)]

pub mod child;

use std::net::SocketAddr;
use std::time::Duration;

use courtline::contract::connect::{connect, ClientOptions, RecordsClient};
use courtline::contract::pb::node_event::Kind;
use courtline::contract::pb::{
    AccessEntry, CallMilestone, CallRecord, EndReason, ExportCallsRequest, FlagCallRequest,
    FlagCategory, GetCallRequest, LegMedia, ListAccessRequest, ListCallsRequest, ListGapsRequest,
    ListTokensRequest, LogEventsRequest, Milestone, NodeEvent, NodeStarted, PlayedPrompt,
    PurgeRequest, Role, VerifyRequest,
};
use courtline::records::chain::HashAlgorithm;
use courtline::records::ledger::CheckpointPolicy;
use courtline::records::service::{OpenedService, ServiceSettings};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;

/// A database for one test: a SQLite file in a temp dir, or a fresh PostgreSQL database.
pub struct Db {
    /// The location to open.
    pub url: String,
    /// Keeps the SQLite file (and the signing key) alive.
    pub dir: tempfile::TempDir,
    /// PostgreSQL: the server's admin URL and this test's database, dropped with
    /// it so a developer's own server does not fill up with test databases.
    pub postgres: Option<(String, String)>,
}

impl Drop for Db {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // a thread of its own with a runtime of its own does the work.
        let drop_sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let admin = sqlx::postgres::PgPoolOptions::new()
                    .acquire_timeout(Duration::from_secs(3))
                    .connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                // FORCE: a service the test left running may still hold connections.
                sqlx::query(&drop_sql)
                    .execute(&admin)
                    .await
                    .map_err(|e| e.to_string())?;
                admin.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("test database {name} left behind: {error}");
        }
    }
}

/// A new SQLite database.
pub fn sqlite_db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    Db {
        url: dir.path().join("records.db").display().to_string(),
        dir,
        postgres: None,
    }
}

/// The PostgreSQL server to test against: `COURTLINE_TEST_POSTGRES_URL`, else a local
/// default. `None` (test skipped, with a message) only when the variable is unset and
/// nothing answers; when it is set, an unreachable server fails the test.
pub async fn postgres_db() -> Option<Db> {
    let configured = std::env::var("COURTLINE_TEST_POSTGRES_URL").ok();
    let base = configured
        .clone()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let admin = match sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(3))
        .connect(&base)
        .await
    {
        Ok(pool) => pool,
        Err(error) if configured.is_none() => {
            eprintln!(
                "SKIPPED (PostgreSQL): no server at {base} ({error}); set COURTLINE_TEST_POSTGRES_URL to run the PostgreSQL suite"
            );
            return None;
        }
        Err(error) => panic!("COURTLINE_TEST_POSTGRES_URL={base} is set but unreachable: {error}"),
    };
    let name = format!("courtline_test_{}", hex::encode(rand::random::<[u8; 6]>()));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let (prefix, _) = base.rsplit_once('/').unwrap();
    Some(Db {
        url: format!("{prefix}/{name}"),
        dir: tempfile::tempdir().unwrap(),
        postgres: Some((base, name)),
    })
}

/// Runs `$body` (an async fn taking a [`Db`]) on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::records_common::sqlite_db()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = super::records_common::postgres_db().await {
                        super::$name(db).await
                    }
                }
            )*
        }
    };
}

/// Service settings for `db` (checkpoint every 50 events).
pub fn settings(db: &Db) -> ServiceSettings {
    ServiceSettings {
        database: db.url.clone(),
        hash_algorithm: HashAlgorithm::Sha256,
        signing_key_file: db.dir.path().join("signing.key"),
        checkpoints: CheckpointPolicy {
            every_events: 50,
            every: Duration::from_secs(600),
        },
        retention_days: 180,
        tls: None,
        client_certificates: None,
        recordings_dir: db.dir.path().join("recordings"),
        takes_local_recordings: true,
    }
}

/// An in-process records service on 127.0.0.1.
pub struct Service {
    /// Where it listens.
    pub address: SocketAddr,
    /// Stops it.
    stop: oneshot::Sender<()>,
    /// The server task.
    task: JoinHandle<()>,
}

impl Service {
    /// Starts a service with `settings` on a free port.
    pub async fn start(settings: &ServiceSettings) -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Service::start_on(listener, settings).await
    }

    /// Starts a service on `listener`.
    pub async fn start_on(listener: TcpListener, settings: &ServiceSettings) -> Service {
        let address = listener.local_addr().unwrap();
        let opened = OpenedService::open(settings).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            opened
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Service {
            address,
            stop,
            task,
        }
    }

    /// `http://address`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A client with `token` (none: the loopback rule).
    pub async fn client(&self, token: Option<&str>) -> RecordsClient {
        connect(&ClientOptions {
            endpoint: self.endpoint(),
            token: token.map(str::to_owned),
            ..ClientOptions::default()
        })
        .await
        .unwrap()
    }

    /// Stops and waits.
    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap();
    }
}

/// Call id number `n`.
pub fn call_id(n: u32) -> String {
    format!("7d9e4c1a-0000-4000-8000-{n:012}")
}

/// A finished call's record.
pub fn record(n: u32) -> CallRecord {
    CallRecord {
        call_id: call_id(n),
        sip_call_id: format!("{n}@caller.test"),
        line_number: if n % 2 == 0 { "12368" } else { "12345" }.to_owned(),
        court_name: if n % 2 == 0 {
            "上海市高级人民法院"
        } else {
            "上海市第一中级人民法院"
        }
        .to_owned(),
        caller_number: format!("13900000{n:03}"),
        caller_display_name: if n % 4 == 0 {
            "王五（律师）"
        } else {
            "李四"
        }
        .to_owned(),
        caller_source: "127.0.0.1:5070".to_owned(),
        user_agent: "test".to_owned(),
        codec: "PCMU".to_owned(),
        received_at_ms: 1_700_000_000_000 + i64::from(n) * 1_000,
        answered_at_ms: 1_700_000_000_100 + i64::from(n) * 1_000,
        operator_answered_at_ms: if n % 3 == 1 {
            1_700_000_010_000 + i64::from(n) * 1_000
        } else {
            0
        },
        ended_at_ms: 1_700_000_030_000 + i64::from(n) * 1_000,
        prompt_completed: n % 3 != 0,
        end_reason: if n % 3 == 0 {
            EndReason::CallerHungUpDuringPrompt
        } else {
            EndReason::CallerHungUp
        } as i32,
        sip_final_status: 200,
        // Even calls played a two-prompt playlist (the second cut short when
        // the caller hung up in it); odd ones predate playlists and list none.
        prompts: if n % 2 == 0 {
            vec![
                PlayedPrompt {
                    id: "three_rules_zh".to_owned(),
                    version: "审定 2024-05".to_owned(),
                    sha256: "e5".repeat(32),
                    length_ms: 18_100,
                    ms_sent: 18_100,
                },
                PlayedPrompt {
                    id: "three_rules_en".to_owned(),
                    version: String::new(),
                    sha256: "a9".repeat(32),
                    length_ms: 16_600,
                    ms_sent: if n % 3 == 0 { 4_000 } else { 16_600 },
                },
            ]
        } else {
            Vec::new()
        },
        caller_media: Some(LegMedia {
            packets_sent: 1_500 + u64::from(n),
            packets_received: 1_490,
            packets_lost: 3,
            jitter_us: 2_375,
            rtt_us: (n % 2 == 0).then_some(48_250),
            peer_reported_lost: Some(-1),
        }),
        // Bridged calls have the operator leg's figures too.
        operator_media: (n % 3 == 1).then_some(LegMedia {
            packets_sent: 900,
            packets_received: 905,
            packets_lost: 0,
            jitter_us: 125,
            rtt_us: None,
            peer_reported_lost: None,
        }),
        ..CallRecord::default()
    }
}

/// A milestone event of call `n` (its record as received so far).
pub fn milestone(n: u32, milestone: Milestone) -> NodeEvent {
    let full = record(n);
    let snapshot = CallRecord {
        ended_at_ms: 0,
        end_reason: 0,
        ..full
    };
    NodeEvent {
        at_ms: snapshot.received_at_ms,
        call_id: call_id(n),
        kind: Some(Kind::Milestone(CallMilestone {
            milestone: milestone as i32,
            snapshot: Some(snapshot),
            ..CallMilestone::default()
        })),
        ..NodeEvent::default()
    }
}

/// Call `n`'s final event.
pub fn ended(n: u32) -> NodeEvent {
    NodeEvent {
        at_ms: record(n).ended_at_ms,
        call_id: call_id(n),
        kind: Some(Kind::Ended(record(n))),
        ..NodeEvent::default()
    }
}

/// A switchboard (re)start.
pub fn node_started() -> NodeEvent {
    NodeEvent {
        at_ms: 1_700_000_000_000,
        kind: Some(Kind::NodeStarted(NodeStarted::default())),
        ..NodeEvent::default()
    }
}

/// Numbers `events` as node `node` from `first` on.
pub fn numbered(node: &str, first: u64, events: Vec<NodeEvent>) -> Vec<NodeEvent> {
    events
        .into_iter()
        .enumerate()
        .map(|(index, event)| NodeEvent {
            node_id: node.to_owned(),
            node_seq: first + index as u64,
            ..event
        })
        .collect()
}

/// The full life of calls `numbers`: received, answered, prompt started, ended.
pub fn complete_calls(numbers: impl IntoIterator<Item = u32>) -> Vec<NodeEvent> {
    numbers
        .into_iter()
        .flat_map(|n| {
            [
                milestone(n, Milestone::Received),
                milestone(n, Milestone::Answered),
                milestone(n, Milestone::PromptStarted),
                ended(n),
            ]
        })
        .collect()
}

/// The number part of call ids.
pub fn short_ids(records: &[CallRecord]) -> Vec<u32> {
    records
        .iter()
        .map(|r| r.call_id[24..].parse().unwrap())
        .collect()
}

/// Path of the courtline binary under test.
pub fn courtline_bin() -> &'static str {
    env!("CARGO_BIN_EXE_courtline")
}

/// Every RPC once, by name; `Ok(())` when allowed.
pub async fn attempt(
    client: &mut RecordsClient,
    operation: &str,
    node_seq: u64,
) -> Result<(), Code> {
    let result = match operation {
        "LogEvents" => client
            .log_events(LogEventsRequest {
                events: numbered(
                    "sb-roles",
                    node_seq,
                    vec![milestone(50 + node_seq as u32, Milestone::Received)],
                ),
            })
            .await
            .map(|_| ()),
        "ListCalls" => client
            .list_calls(ListCallsRequest::default())
            .await
            .map(|_| ()),
        "GetCall" => client
            .get_call(GetCallRequest {
                call_id: call_id(1),
            })
            .await
            .map(|_| ()),
        "ExportCalls" => client
            .export_calls(ExportCallsRequest::default())
            .await
            .map(|_| ()),
        "FlagCall" => client
            .flag_call(FlagCallRequest {
                call_id: call_id(1),
                category: FlagCategory::ImproperInquiry as i32,
                note: "问案情".into(),
            })
            .await
            .map(|_| ()),
        "Verify" => client.verify(VerifyRequest {}).await.map(|_| ()),
        "ListGaps" => client.list_gaps(ListGapsRequest {}).await.map(|_| ()),
        "ListAccess" => client
            .list_access(ListAccessRequest::default())
            .await
            .map(|_| ()),
        "ListTokens" => client.list_tokens(ListTokensRequest {}).await.map(|_| ()),
        "Purge" => client
            .purge(PurgeRequest { dry_run: true })
            .await
            .map(|_| ()),
        other => panic!("unknown operation {other}"),
    };
    result.map_err(|status| status.code())
}

/// Every RPC [`attempt`] knows.
pub const OPERATIONS: [&str; 10] = [
    "LogEvents",
    "ListCalls",
    "GetCall",
    "ExportCalls",
    "FlagCall",
    "Verify",
    "ListGaps",
    "ListAccess",
    "ListTokens",
    "Purge",
];

/// Whether `role` may call `operation`.
pub fn allowed(role: Role, operation: &str) -> bool {
    match role {
        Role::Switchboard => operation == "LogEvents",
        Role::Compliance => {
            ["ListCalls", "GetCall", "ExportCalls", "FlagCall"].contains(&operation)
        }
        Role::Auditor => ["Verify", "ListGaps", "ListAccess"].contains(&operation),
        Role::Admin => ["ListTokens", "Purge"].contains(&operation),
        // GetCall only on the calls of its own reports: none here.
        Role::Operator | Role::Unspecified => false,
    }
}

/// The whole access log (up to 1,000 entries), newest first.
pub async fn access_log(client: &mut RecordsClient) -> Vec<AccessEntry> {
    client
        .list_access(ListAccessRequest {
            page_size: 1000,
            ..ListAccessRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
}
