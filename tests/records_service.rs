//! The records service end to end: a real gRPC server on loopback over a temporary
//! SQLite file, fed by the switchboard's `RecordSender` and read with the query client.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use courtline::records::client::{connect, RecordSender};
use courtline::records::pb::{
    CallRecord, EndReason, GetCallRequest, ListCallsRequest, LogCallRequest,
};
use courtline::records::service::{serve, serve_with_listener};
use courtline::records::store::CallStore;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

fn record(n: u32) -> CallRecord {
    CallRecord {
        call_id: format!("7d9e4c1a-0000-4000-8000-{n:012}"),
        sip_call_id: format!("{n}@caller.test"),
        line_number: if n % 2 == 0 { "12368" } else { "12345" }.to_owned(),
        court_name: "上海市高级人民法院".to_owned(),
        caller_number: format!("13900000{n:03}"),
        caller_display_name: "王五".to_owned(),
        caller_source: "127.0.0.1:5070".to_owned(),
        user_agent: "test".to_owned(),
        codec: "PCMU".to_owned(),
        received_at_ms: 1_700_000_000_000 + i64::from(n) * 1_000,
        answered_at_ms: 1_700_000_000_100 + i64::from(n) * 1_000,
        ended_at_ms: 1_700_000_030_000 + i64::from(n) * 1_000,
        prompt_completed: n % 3 != 0,
        end_reason: if n % 3 == 0 {
            EndReason::CallerHungUpDuringPrompt
        } else {
            EndReason::CallerHungUp
        } as i32,
        sip_final_status: 200,
        ..CallRecord::default()
    }
}

/// A running server and the means to stop it.
struct RunningServer {
    address: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningServer {
    async fn start_on(listener: TcpListener, database: &Path) -> RunningServer {
        let address = listener.local_addr().unwrap();
        let store = CallStore::open(database.to_str().unwrap()).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve_with_listener(listener, store, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        RunningServer {
            address,
            stop,
            task,
        }
    }

    async fn start(database: &Path) -> RunningServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        RunningServer::start_on(listener, database).await
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap();
    }
}

fn short_ids(records: &[CallRecord]) -> Vec<u32> {
    records
        .iter()
        .map(|r| r.call_id[24..].parse().unwrap())
        .collect()
}

#[tokio::test]
async fn records_sent_by_the_switchboard_can_be_queried() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningServer::start(&dir.path().join("var/courtline.db")).await;

    let (sender, delivery) = RecordSender::spawn(server.endpoint());
    for n in 1..=7 {
        sender.clone().send(record(n));
    }
    let stats = delivery.finish(Duration::from_secs(10)).await;
    assert_eq!(stats.delivered, 7, "{stats:?}");
    assert_eq!(stats.undelivered, 0);

    let mut client = connect(&server.endpoint()).await.unwrap();

    // Three pages of 3, 3, 1, newest first, no gaps or duplicates.
    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_calls(ListCallsRequest {
                page_size: 3,
                page_token: page_token.clone(),
                ..ListCallsRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        seen.extend(short_ids(&page.records));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, vec![7, 6, 5, 4, 3, 2, 1]);

    // Filters travel over the wire.
    let filtered = client
        .list_calls(ListCallsRequest {
            line_number: "12368".to_owned(),
            end_reason: EndReason::CallerHungUpDuringPrompt as i32,
            since_ms: record(2).received_at_ms,
            until_ms: record(7).received_at_ms,
            ..ListCallsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(short_ids(&filtered.records), vec![6]);
    let by_caller = client
        .list_calls(ListCallsRequest {
            caller_prefix: "13900000005".to_owned(),
            ..ListCallsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(short_ids(&by_caller.records), vec![5]);

    // GetCall returns the record exactly as sent, Chinese included.
    let got = client
        .get_call(GetCallRequest {
            call_id: record(4).call_id,
        })
        .await
        .unwrap()
        .into_inner()
        .record
        .unwrap();
    assert_eq!(got, record(4));
    assert_eq!(got.court_name, "上海市高级人民法院");

    let missing = client
        .get_call(GetCallRequest {
            call_id: "7d9e4c1a-0000-4000-8000-999999999999".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // A retried LogCall is a success that inserts nothing.
    let again = client
        .log_call(LogCallRequest {
            record: Some(record(1)),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.inserted);

    server.stop().await;
}

#[tokio::test]
async fn invalid_requests_are_rejected_with_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningServer::start(&dir.path().join("courtline.db")).await;
    let mut client = connect(&server.endpoint()).await.unwrap();

    let no_record = client
        .log_call(LogCallRequest { record: None })
        .await
        .unwrap_err();
    assert_eq!(no_record.code(), tonic::Code::InvalidArgument);

    for call_id in ["", "not-a-uuid"] {
        let status = client
            .log_call(LogCallRequest {
                record: Some(CallRecord {
                    call_id: call_id.to_owned(),
                    ..record(1)
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{call_id:?}");
        assert!(status.message().contains("call_id"), "{}", status.message());
    }

    let bad_token = client
        .list_calls(ListCallsRequest {
            page_token: "garbage!".to_owned(),
            ..ListCallsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), tonic::Code::InvalidArgument);
    assert!(bad_token.message().contains("page token"));

    server.stop().await;
}

#[tokio::test]
async fn records_queued_before_the_service_starts_arrive_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("courtline.db");
    // Learn a free port, then leave it closed so the first deliveries fail.
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        probe.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");

    let (sender, delivery) = RecordSender::spawn(endpoint.clone());
    for n in 1..=3 {
        sender.send(record(n));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let server = RunningServer::start_on(listener, &database).await;

    let stats = delivery.finish(Duration::from_secs(20)).await;
    assert_eq!(stats.delivered, 3, "{stats:?}");
    assert_eq!(stats.already_stored, 0, "{stats:?}");
    assert_eq!(stats.undelivered, 0, "{stats:?}");

    let mut client = connect(&endpoint).await.unwrap();
    let all = client
        .list_calls(ListCallsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(short_ids(&all.records), vec![3, 2, 1]);

    server.stop().await;
}

#[tokio::test]
async fn records_survive_a_service_restart() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("courtline.db");

    let first = RunningServer::start(&database).await;
    let (sender, delivery) = RecordSender::spawn(first.endpoint());
    sender.send(record(1));
    sender.send(record(2));
    assert_eq!(delivery.finish(Duration::from_secs(10)).await.delivered, 2);
    first.stop().await;

    // Second run through the public `serve`, as `courtline records serve` does.
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        probe.local_addr().unwrap().port()
    };
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let (stop, stopped) = oneshot::channel::<()>();
    let database_text = database.to_str().unwrap().to_owned();
    let task = tokio::spawn(async move {
        serve(address, &database_text, async {
            let _ = stopped.await;
        })
        .await
    });

    let endpoint = format!("http://{address}");
    let mut client = None;
    for _ in 0..50 {
        match connect(&endpoint).await {
            Ok(connected) => {
                client = Some(connected);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let mut client = client.expect("restarted service never came up");
    for n in [1, 2] {
        let got = client
            .get_call(GetCallRequest {
                call_id: record(n).call_id,
            })
            .await
            .unwrap()
            .into_inner()
            .record;
        assert_eq!(got, Some(record(n)));
    }

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
