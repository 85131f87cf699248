//! Never lost: real `courtline records serve` and `courtline serve` processes,
//! real SIP callers. The records service stopped during a stream of calls; the
//! switchboard killed with SIGKILL mid-call; a spool torn mid-entry; a spool that
//! cannot be written, refusing calls (the default) or taking them ("continue").

mod records_common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use courtline::contract::connect::RecordsClient;
use courtline::contract::pb::node_event::Kind;
use courtline::contract::pb::{
    CallFilter, CallRecord, CallState, GetCallRequest, ListCallsRequest, ListGapsRequest,
    VerifyRequest,
};
use courtline::switchboard::delivery::spool::{read_entries, Spool};
use records_common::*;
use support::{recv_rtp, write_test_prompt, Caller, Options, TestSwitchboard};
use tokio::time::{sleep, Instant};

/// A scratch directory with a config for a separate records service and switchboard.
struct Setup {
    /// Holds database, spool, prompt, logs.
    dir: tempfile::TempDir,
    /// The config file both processes use.
    config: PathBuf,
    /// The records service's port.
    records_port: u16,
}

impl Setup {
    fn new(rtp_ports: (u16, u16), extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("prompt.wav");
        // Long enough to still be playing when the switchboard is killed.
        write_test_prompt(&wav, 20_000);
        let records_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("courtline.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[sip]
listen = "127.0.0.1:0"
[media]
rtp_ports = "{lo}-{hi}"
[records]
endpoint = "http://127.0.0.1:{records_port}"
spool_dir = "{spool}"
{extra}
[records.service]
embedded = false
listen = "127.0.0.1:{records_port}"
database = "{db}"
[records.web]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[prompts.test]
file = "{wav}"
[[lines]]
number = "02112368"
court = "上海市第一中级人民法院"
prompt = "test"
operator = "sip:nobody@127.0.0.1:9"
# These tests count each call's events exactly; recordings have tests of their own.
record_audio = "never"
"#,
                lo = rtp_ports.0,
                hi = rtp_ports.1,
                spool = dir.path().join("spool").display(),
                db = dir.path().join("records.db").display(),
                wav = wav.display(),
            ),
        )
        .unwrap();
        Setup {
            dir,
            config,
            records_port,
        }
    }

    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// Starts `courtline <args>` with JSON logs to `<name>.log`; waits for `ready` in the log.
    async fn start(
        &self,
        name: &str,
        args: &[&str],
        ready: &str,
    ) -> (Process, PathBuf, serde_json::Value) {
        let log = self
            .dir
            .path()
            .join(format!("{name}-{}.log", rand::random::<u32>()));
        let child = Command::new(courtline_bin())
            .arg("--config")
            .arg(&self.config)
            .arg("--log-json")
            .args(args)
            .env("RUST_LOG", "info,rsipstack=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .map(Process)
            .unwrap();
        let line = wait_for_log(&log, ready).await;
        (child, log, line)
    }

    async fn records(&self) -> Process {
        self.start(
            "records",
            &["records", "serve"],
            "records service listening",
        )
        .await
        .0
    }

    /// Starts the switchboard; returns it, its log and its SIP address.
    async fn switchboard(&self) -> (Process, PathBuf, std::net::SocketAddr) {
        let (child, log, line) = self
            .start("switchboard", &["serve"], "courtline is up")
            .await;
        let sip = line["fields"]["sip"].as_str().unwrap().parse().unwrap();
        (child, log, sip)
    }

    async fn client(&self) -> RecordsClient {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let options = courtline::contract::connect::ClientOptions::new(format!(
                "http://127.0.0.1:{}",
                self.records_port
            ));
            match courtline::contract::connect::connect(&options).await {
                Ok(client) => return client,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "records service unreachable: {error}"
                    );
                    sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Waits up to 20 s for a log line containing `needle`; returns it parsed.
async fn wait_for_log(log: &Path, needle: &str) -> serde_json::Value {
    wait_for_nth_log(log, needle, 1).await
}

/// Waits up to 20 s for the `nth` log line containing `needle`; returns it parsed.
async fn wait_for_nth_log(log: &Path, needle: &str, nth: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .filter(|line| line.contains(needle))
            .nth(nth - 1)
        {
            return serde_json::from_str(line).unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "no {nth}. {needle:?} in {}:\n{text}",
            log.display()
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// A courtline process this test started; killed if the test fails before it
/// ends it, so a failed run leaves nothing behind.
struct Process(Child);

impl std::ops::Deref for Process {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Process {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn terminate(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exited with {exit}");
}

/// A call that hears the start of the warning and hangs up.
async fn short_call(target: std::net::SocketAddr) -> String {
    let mut caller = Caller::new(target).await;
    caller.call("0").await;
    recv_rtp(&caller.rtp, Duration::from_secs(5))
        .await
        .expect("prompt audio");
    caller.request("BYE").await;
    caller.sip.expect_status(200, Duration::from_secs(5)).await;
    caller.call_id.clone()
}

/// A call left up, mid-warning (its "prompt started" is durable once audio flows).
async fn open_call(target: std::net::SocketAddr) -> (Caller, String) {
    let mut caller = Caller::new(target).await;
    caller.call("0").await;
    recv_rtp(&caller.rtp, Duration::from_secs(5))
        .await
        .expect("prompt audio");
    let id = caller.call_id.clone();
    (caller, id)
}

/// Every call the service lists in `states`, waiting until `expected` SIP Call-IDs are there.
async fn wait_for_calls(
    client: &mut RecordsClient,
    states: &[CallState],
    expected: &[&str],
) -> Vec<CallRecord> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page = client
            .list_calls(ListCallsRequest {
                filter: Some(CallFilter {
                    states: states.iter().map(|s| *s as i32).collect(),
                    ..CallFilter::default()
                }),
                page_size: 1000,
                ..ListCallsRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        if expected
            .iter()
            .all(|id| page.records.iter().any(|r| r.sip_call_id == *id))
        {
            return page.records;
        }
        assert!(
            Instant::now() < deadline,
            "calls {expected:?} not all listed in {states:?}: {:?}",
            page.records
                .iter()
                .map(|r| &r.sip_call_id)
                .collect::<Vec<_>>()
        );
        sleep(Duration::from_millis(200)).await;
    }
}

async fn timeline(client: &mut RecordsClient, record: &CallRecord) -> Vec<String> {
    client
        .get_call(GetCallRequest {
            call_id: record.call_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .timeline
        .into_iter()
        .map(|event| event.kind)
        .collect()
}

async fn assert_intact(client: &mut RecordsClient) {
    let gaps = client
        .list_gaps(ListGapsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(gaps.gaps.is_empty(), "{gaps:?}");
    let report = client.verify(VerifyRequest {}).await.unwrap().into_inner();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_service_stopped_during_calls_then_started_every_call_arrives_once() {
    let setup = Setup::new((31100, 31199), "");
    let mut records = setup.records().await;
    let (mut switchboard, _, sip) = setup.switchboard().await;
    let first = short_call(sip).await;
    let mut client = setup.client().await;
    wait_for_calls(&mut client, &[CallState::Ended], &[&first]).await;

    // The records service goes away for a while; calls go on.
    records.kill().unwrap();
    records.wait().unwrap();
    let second = short_call(sip).await;
    let third = short_call(sip).await;
    sleep(Duration::from_secs(1)).await;
    let mut records = setup.records().await;
    let mut client = setup.client().await;
    let calls = wait_for_calls(&mut client, &[CallState::Ended], &[&first, &second, &third]).await;
    assert_eq!(calls.len(), 3, "exactly once");
    for call in &calls {
        let kinds = timeline(&mut client, call).await;
        assert_eq!(
            kinds,
            [
                "received",
                "answered",
                "prompt_started",
                "prompt_interrupted",
                "ended"
            ],
            "each event exactly once for {}",
            call.sip_call_id
        );
    }
    assert_intact(&mut client).await;
    terminate(&mut switchboard);
    terminate(&mut records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchboard_killed_mid_calls_then_restarted_completed_arrive_and_cut_ones_are_interrupted()
{
    let setup = Setup::new((31200, 31299), "");
    // The records service is down throughout the calls: everything sits in the spool.
    let (mut switchboard, _, sip) = setup.switchboard().await;
    let done = [short_call(sip).await, short_call(sip).await];
    let (_caller_a, cut_a) = open_call(sip).await;
    let (_caller_b, cut_b) = open_call(sip).await;
    // The completed calls' final records are on disk before the kill.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ended = spooled_calls(&setup.spool());
        if done.iter().all(|id| ended.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "final records never spooled: {ended:?}"
        );
        sleep(Duration::from_millis(50)).await;
    }
    switchboard.kill().unwrap(); // SIGKILL
    switchboard.wait().unwrap();

    let mut records = setup.records().await;
    let (mut switchboard, _, _) = setup.switchboard().await;
    let mut client = setup.client().await;
    let ended = wait_for_calls(&mut client, &[CallState::Ended], &[&done[0], &done[1]]).await;
    assert_eq!(ended.len(), 2);
    let cut = wait_for_calls(&mut client, &[CallState::Interrupted], &[&cut_a, &cut_b]).await;
    assert_eq!(cut.len(), 2);
    for call in &cut {
        assert_eq!(
            timeline(&mut client, call).await,
            ["received", "answered", "prompt_started", "interrupted"],
            "{}",
            call.sip_call_id
        );
        assert!(call.prompt_started_at_ms > 0);
        assert_eq!(call.ended_at_ms, 0);
    }
    assert_intact(&mut client).await;
    terminate(&mut switchboard);
    terminate(&mut records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_torn_mid_entry_is_recovered_with_a_warning_and_nothing_invented() {
    let setup = Setup::new((31300, 31399), "node_id = \"sb-torn\"");
    {
        let (mut spool, _) = Spool::open(&setup.spool(), Some("sb-torn")).unwrap();
        let mut events = vec![ended(1), ended(2), ended(3)];
        spool.assign(&mut events);
        spool.write(&events).unwrap();
    }
    let segment = std::fs::read_dir(setup.spool())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let length = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(length - 7)
        .unwrap();

    let mut records = setup.records().await;
    let (mut switchboard, log, _) = setup.switchboard().await;
    let warning = wait_for_log(&log, "torn or corrupt tail").await;
    assert_eq!(warning["level"], "WARN");
    let mut client = setup.client().await;
    let calls = wait_for_calls(
        &mut client,
        &[CallState::Ended],
        &["1@caller.test", "2@caller.test"],
    )
    .await;
    assert_eq!(short_ids(&calls), vec![2, 1]);
    // The node's restart event took sequence number 3 (and its start-up configuration
    // 4): the torn entry was never sent.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let gaps = client
            .list_gaps(ListGapsRequest {})
            .await
            .unwrap()
            .into_inner();
        if gaps
            .nodes
            .iter()
            .any(|node| node.node_id == "sb-torn" && node.highest_seq == 4)
        {
            assert!(gaps.gaps.is_empty(), "{gaps:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{gaps:?}");
        sleep(Duration::from_millis(100)).await;
    }
    let missing = client
        .get_call(GetCallRequest {
            call_id: call_id(3),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    terminate(&mut switchboard);
    terminate(&mut records);
}

/// Sends INVITEs until one gets `status` (answering and hanging up any that get 200).
async fn until_status(target: std::net::SocketAddr, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut caller = Caller::new(target).await;
        caller.invite("02112368", "0").await;
        let mut got = 0;
        while let Some(message) = caller.sip.recv(Duration::from_secs(5)).await {
            if message.status() >= 200 {
                got = message.status();
                if got == 200 {
                    caller.to = message.header("to").unwrap().to_string();
                    let to = caller.to.clone();
                    caller.ack(&to, "z9hG4bK-ack-1").await;
                    caller.request("BYE").await;
                } else {
                    caller
                        .ack(
                            &format!("<sip:02112368@{target}>"),
                            &format!("z9hG4bK-inv-{}", caller.call_id),
                        )
                        .await;
                }
                break;
            }
        }
        if got == status {
            return;
        }
        assert!(Instant::now() < deadline, "never got {status} (last {got})");
        sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_spool_refuses_calls_with_503_until_it_is_back() {
    let sb = TestSwitchboard::start(Options {
        rtp_ports: (31400, 31499),
        ..Options::default()
    })
    .await;
    let spool = sb.dir.path().join("spool");
    assert!(
        spool.join("node-id").exists(),
        "the embedded setup spools beside its database"
    );
    until_status(sb.sip, 200).await;
    // The spool cannot be written, so calls are refused.
    let moved = break_spool(&spool);
    until_status(sb.sip, 503).await;
    restore_spool(&spool, &moved);
    until_status(sb.sip, 200).await;
    sb.stop().await;
}

/// Makes `spool` unwritable as when its disk is unmounted: the directory goes away
/// and a file takes its place. Returns where the directory went.
fn break_spool(spool: &Path) -> PathBuf {
    let moved = spool.with_extension("moved");
    std::fs::rename(spool, &moved).unwrap();
    std::fs::write(spool, "not a directory").unwrap();
    moved
}

/// Puts the spool directory back.
fn restore_spool(spool: &Path, moved: &Path) {
    std::fs::remove_file(spool).unwrap();
    std::fs::rename(moved, spool).unwrap();
}

/// SIP Call-IDs of the calls whose final record is in the spool at `dir`.
fn spooled_calls(dir: &Path) -> Vec<String> {
    read_entries(dir)
        .unwrap()
        .into_iter()
        .filter_map(|event| match event.kind {
            Some(Kind::Ended(record)) => Some(record.sip_call_id),
            _ => None,
        })
        .collect()
}

/// `on_spool_failure = "continue"`: while the spool cannot be written, calls are
/// still taken (an error is logged once per failure) and their events go to the
/// records service from memory. Delivered, they are kept like any other (and written
/// to the spool late once it is back); but a call whose events are still only in
/// memory when the switchboard dies is lost without trace — what "continue" risks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_spool_with_continue_takes_calls_and_delivers_them_from_memory() {
    let setup = Setup::new((31500, 31599), "on_spool_failure = \"continue\"");
    let spool = setup.spool();
    let mut records = setup.records().await;
    let (mut switchboard, log, sip) = setup.switchboard().await;
    let mut client = setup.client().await;
    let before = short_call(sip).await;
    wait_for_calls(&mut client, &[CallState::Ended], &[&before]).await;
    let moved = break_spool(&spool);
    let error = wait_for_log(&log, "cannot write the records spool").await;
    assert_eq!(error["level"], "ERROR");
    // Taken (200), not refused with 503; its record is in no spool, yet it arrives.
    let during = short_call(sip).await;
    wait_for_calls(&mut client, &[CallState::Ended], &[&before, &during]).await;
    assert!(spooled_calls(&moved).contains(&before));
    assert!(!spooled_calls(&moved).contains(&during));
    restore_spool(&spool, &moved);
    wait_for_log(&log, "spool writable again").await;
    let after = short_call(sip).await;
    let calls = wait_for_calls(
        &mut client,
        &[CallState::Ended],
        &[&before, &during, &after],
    )
    .await;
    assert_eq!(calls.len(), 3, "each call exactly once");
    assert_intact(&mut client).await;

    // The risk: the records service is down too, so the call lives only in memory.
    records.kill().unwrap();
    records.wait().unwrap();
    let moved = break_spool(&spool);
    wait_for_nth_log(&log, "cannot write the records spool", 2).await;
    let lost = short_call(sip).await;
    switchboard.kill().unwrap(); // SIGKILL
    switchboard.wait().unwrap();
    restore_spool(&spool, &moved);
    assert!(!spooled_calls(&spool).contains(&lost));
    let mut records = setup.records().await;
    let (mut switchboard, _, sip) = setup.switchboard().await;
    let restarted = short_call(sip).await;
    let mut client = setup.client().await;
    let calls = wait_for_calls(
        &mut client,
        &[CallState::Ended],
        &[&before, &during, &after, &restarted],
    )
    .await;
    assert_eq!(calls.len(), 4, "{lost} is lost");
    // Its events were never stored, and their numbers were reused: no gap, a clean chain.
    assert_intact(&mut client).await;
    terminate(&mut switchboard);
    terminate(&mut records);
}
