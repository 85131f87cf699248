//! Operating courtline: the admin endpoint (`/metrics` checked by `promtool`,
//! `/healthz`, `/readyz`), the README's alert rules, and draining on SIGTERM
//! against a real `courtline serve` process.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use courtline::switchboard::priority::{
    nice_of_threads, policy_of_threads, run_media_realtime, BELOW_CALLS,
};
use support::serve_child::{
    http_get, loopback_node, metric_value, one_line_config, prompt_file, promtool, run_promtool,
    wait_for_log, ServeChild,
};
use support::{recv_rtp, write_test_prompt, Caller, Options, RawRequest, SipPeer, TestSwitchboard};
use tokio::time::{sleep, Instant};

/// Polls `/readyz` until it answers `status`; returns the body.
async fn until_ready_is(admin: SocketAddr, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (got, body) = http_get(admin, "/readyz").await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never answered {status} (last {got}: {body})"
        );
        sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_real_call_are_counted_and_pass_promtool() {
    let sb = TestSwitchboard::start(Options {
        rtp_ports: (38100, 38199),
        prompt_ms: 5_000,
        ..Options::default()
    })
    .await;
    assert_eq!(
        http_get(sb.admin, "/healthz").await,
        (200, "ok\n".to_string())
    );
    assert_eq!(until_ready_is(sb.admin, 200).await, "ready\n");

    // A caller hears the start of the warning and hangs up.
    let mut caller = Caller::new(sb.sip).await;
    caller.call("0").await;
    recv_rtp(&caller.rtp, Duration::from_secs(5))
        .await
        .expect("prompt audio");
    caller.hang_up().await;
    let record = sb.record(&caller.call_id).await;
    assert!(record.caller_media.is_some());

    let (status, metrics) = http_get(sb.admin, "/metrics").await;
    assert_eq!(status, 200);
    let line = r#"line="02112368""#;
    assert_eq!(
        metric_value(
            &metrics,
            &format!(
                r#"courtline_calls_total{{end_reason="caller_hung_up_during_prompt",{line}}}"#
            )
        ),
        Some("1"),
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            &format!("courtline_warning_started_total{{{line}}}")
        ),
        Some("1")
    );
    assert_eq!(
        metric_value(
            &metrics,
            &format!("courtline_warning_hangups_total{{{line}}}")
        ),
        Some("1")
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"courtline_calls_in_progress{phase="prompting"}"#
        ),
        Some("0")
    );
    let sent: u64 = metric_value(
        &metrics,
        r#"courtline_rtp_packets_total{direction="sent",leg="caller"}"#,
    )
    .unwrap()
    .parse()
    .unwrap();
    assert!(sent > 0, "{metrics}");
    assert_eq!(
        metric_value(
            &metrics,
            r#"courtline_operator_target_up{target="sip:nobody@127.0.0.1:9"}"#
        ),
        Some("1")
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"courtline_config_reloads_total{result="applied"}"#
        ),
        Some("0")
    );
    // The embedded records service has stored the call's events.
    let ingested: u64 = metric_value(&metrics, "courtline_records_events_ingested_total")
        .unwrap()
        .parse()
        .unwrap();
    assert!(ingested > 0, "{metrics}");
    // Alone on its database, the embedded service chains what it takes.
    assert_eq!(
        metric_value(&metrics, "courtline_records_sequencer"),
        Some("1")
    );
    assert_eq!(
        metric_value(&metrics, "courtline_records_derived_lag_events"),
        Some("0")
    );
    // Bounded labels: the caller's number is in the record, never in a metric.
    assert!(!metrics.contains("13800138000"));
    if let Some(promtool) = promtool() {
        run_promtool(promtool, &["check", "metrics"], &metrics);
    }
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_naming_the_spool_while_it_cannot_be_written() {
    let sb = TestSwitchboard::start(Options {
        rtp_ports: (38200, 38299),
        ..Options::default()
    })
    .await;
    until_ready_is(sb.admin, 200).await;
    // As when its disk is unmounted: the directory goes, a file takes its place.
    let spool = sb.dir.path().join("spool");
    let moved = spool.with_extension("moved");
    std::fs::rename(&spool, &moved).unwrap();
    std::fs::write(&spool, "not a directory").unwrap();
    let body = until_ready_is(sb.admin, 503).await;
    assert_eq!(body, "spool: the records spool cannot be written\n");
    // Alive all the same.
    assert_eq!(http_get(sb.admin, "/healthz").await.0, 200);
    std::fs::remove_file(&spool).unwrap();
    std::fs::rename(&moved, &spool).unwrap();
    until_ready_is(sb.admin, 200).await;
    sb.stop().await;
}

#[test]
fn the_readme_alert_rules_pass_promtool() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let (_, after) = readme
        .split_once("<!-- alert rules: checked by tests/operations.rs -->\n```yaml\n")
        .expect("the README's alert rules block");
    let (rules, _) = after.split_once("```").unwrap();
    assert!(rules.contains("courtline_"));
    let Some(promtool) = promtool() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("courtline.rules.yml");
    std::fs::write(&file, rules).unwrap();
    run_promtool(promtool, &["check", "rules", file.to_str().unwrap()], "");
}

impl ServeChild {
    /// Starts `courtline serve` with an embedded records service, a 20 s
    /// warning and `drain_timeout_s`.
    async fn draining_in(rtp_ports: (u16, u16), drain_timeout_s: u32) -> ServeChild {
        ServeChild::with_sip(rtp_ports, &format!("drain_timeout_s = {drain_timeout_s}")).await
    }

    /// Starts `courtline serve` with an embedded records service, a 20 s
    /// warning and `sip` added to its `[sip]` section.
    async fn with_sip(rtp_ports: (u16, u16), sip: &str) -> ServeChild {
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("prompt.wav");
        write_test_prompt(&wav, 20_000);
        let config = dir.path().join("courtline.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[sip]
listen = "127.0.0.1:0"
retry_after_s = 7
{sip}
{node}[prompts.test]
file = "{wav}"
[[lines]]
number = "02112368"
court = "上海市第一中级人民法院"
prompt = "test"
operator = "sip:nobody@127.0.0.1:9"
record_audio = "never"
"#,
                node = loopback_node(
                    &format!("{}-{}", rtp_ports.0, rtp_ports.1),
                    &dir.path().join("records.db")
                ),
                wav = wav.display(),
            ),
        )
        .unwrap();
        ServeChild::start(dir, config).await
    }

    /// The end reason of every call logged as ended.
    fn end_reasons(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["fields"]["state"] == "ended")
            .map(|line| {
                line["fields"]["end_reason"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }
}

/// A load balancer's OPTIONS probe number `n`, from `prober` to courtline at `sip`.
fn options_probe(prober: &SipPeer, sip: SocketAddr, n: u32) -> String {
    RawRequest::new(
        "OPTIONS",
        format_args!("sip:courtline@{sip}"),
        prober.addr,
        &format!("z9hG4bK-lb-{n}"),
    )
    .dialog(
        &format!("<sip:lb@{}>;tag=lb", prober.addr),
        &format!("<sip:courtline@{sip}>"),
        &format!("lb-probe-{n}@test"),
    )
    .cseq(1)
    .text()
}

/// A caller in the middle of the warning.
async fn caller_hearing_the_warning(sip: SocketAddr) -> Caller {
    let mut caller = Caller::new(sip).await;
    caller.call("0").await;
    recv_rtp(&caller.rtp, Duration::from_secs(5))
        .await
        .expect("prompt audio");
    caller
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_new_calls_go_elsewhere_the_call_in_progress_ends_normally() {
    let mut serve = ServeChild::draining_in((38300, 38399), 60).await;
    let mut in_progress = caller_hearing_the_warning(serve.sip).await;
    serve.signal("TERM");
    wait_for_log(&serve.log, "draining", 1).await;

    // A new call: 503 with Retry-After.
    let late = Caller::new(serve.sip).await;
    late.invite("02112368", "0").await;
    let refused = late.sip.expect_status(503, Duration::from_secs(5)).await;
    assert_eq!(refused.header("retry-after"), Some("7"));
    // A load balancer's OPTIONS: 503.
    let prober = SipPeer::bind().await;
    prober
        .send(serve.sip, &options_probe(&prober, serve.sip, 0))
        .await;
    prober.expect_status(503, Duration::from_secs(5)).await;
    assert!(until_ready_is(serve.admin, 503)
        .await
        .starts_with("draining: "));

    // The call in progress is still up, and ends as its caller ends it.
    assert!(serve.child.try_wait().unwrap().is_none());
    recv_rtp(&in_progress.rtp, Duration::from_secs(2))
        .await
        .expect("the warning goes on while draining");
    in_progress.hang_up().await;
    assert!(serve.exited().await.success());
    let reasons = serve.end_reasons();
    assert!(
        reasons.contains(&"caller_hung_up_during_prompt".to_string()),
        "{reasons:?}"
    );
    // The refusal is logged (and recorded) as such.
    wait_for_log(&serve.log, "switchboard draining for shutdown", 1).await;
    assert!(!reasons.contains(&"shutdown".to_string()), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_that_waited_past_max_setup_wait_is_shed_with_503() {
    // The default [sip] max_setup_wait_ms (300 ms).
    let serve = ServeChild::with_sip((38600, 38699), "").await;
    // A stalled switchboard (here stopped outright) finds the INVITE queued for
    // a second when it reads it: far too late to answer it with a call.
    serve.signal("STOP");
    let stale = Caller::new(serve.sip).await;
    stale.invite("02112368", "0").await;
    sleep(Duration::from_secs(1)).await;
    serve.signal("CONT");
    let shed = stale.sip.expect_status(503, Duration::from_secs(5)).await;
    assert_eq!(shed.header("retry-after"), Some("7"));
    wait_for_log(&serve.log, "switchboard overloaded", 1).await;
    // A load balancer's OPTIONS probe hears of it (503), until the node has
    // kept up for a while (200).
    let prober = SipPeer::bind().await;
    prober
        .send(serve.sip, &options_probe(&prober, serve.sip, 0))
        .await;
    prober.expect_status(503, Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in 1.. {
        prober
            .send(serve.sip, &options_probe(&prober, serve.sip, n))
            .await;
        let answer = prober
            .recv(Duration::from_secs(5))
            .await
            .expect("an answer to OPTIONS");
        if answer.status() == 200 {
            break;
        }
        assert_eq!(answer.status(), 503, "OPTIONS while shedding");
        assert!(Instant::now() < deadline, "OPTIONS never came back to 200");
        sleep(Duration::from_millis(500)).await;
    }

    // Caught up, the next caller is answered and hears the warning.
    let mut fresh = caller_hearing_the_warning(serve.sip).await;
    fresh.hang_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_ends_calls_at_once_recorded_as_shutdown() {
    let mut serve = ServeChild::draining_in((38400, 38499), 60).await;
    let in_progress = caller_hearing_the_warning(serve.sip).await;
    serve.signal("TERM");
    wait_for_log(&serve.log, "draining", 1).await;
    serve.signal("TERM");
    // The caller is hung up on, and the process ends without waiting for the drain timeout.
    in_progress
        .sip
        .expect_request("BYE", Duration::from_secs(10))
        .await;
    assert!(serve.exited().await.success());
    assert_eq!(serve.end_reasons(), ["shutdown"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_ends_the_calls_left_recorded_as_shutdown() {
    let mut serve = ServeChild::draining_in((38500, 38599), 1).await;
    let in_progress = caller_hearing_the_warning(serve.sip).await;
    serve.signal("TERM");
    // The 20 s warning outlasts the 1 s drain: the call is ended, not waited for.
    in_progress
        .sip
        .expect_request("BYE", Duration::from_secs(10))
        .await;
    assert!(serve.exited().await.success());
    assert_eq!(serve.end_reasons(), ["shutdown"]);
    wait_for_log(&serve.log, "drain timeout", 1).await;
}

/// `courtline serve` with its embedded records service after one call, once
/// that call's events have gone through the records service's ingest and
/// database threads.
async fn serve_after_a_stored_call(ports: (u16, u16)) -> ServeChild {
    let serve = ServeChild::with_sip(ports, "").await;
    let mut caller = caller_hearing_the_warning(serve.sip).await;
    caller.hang_up().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = http_get(serve.admin, "/metrics").await.1;
        let ingested = metric_value(&metrics, "courtline_records_events_ingested_total")
            .and_then(|n| n.parse::<u64>().ok());
        if ingested.is_some_and(|n| n > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "no event ingested: {metrics}");
        sleep(Duration::from_millis(100)).await;
    }
    serve
}

/// The nice value of process `pid`'s main thread (the calls' level) and the
/// level its work that can wait runs at.
fn calls_and_below(pid: &str) -> (i32, i32) {
    let main_thread = nice_of_threads(pid, "courtline");
    let [ours] = main_thread[..] else {
        panic!("one main thread expected: {main_thread:?}");
    };
    (ours, (ours + BELOW_CALLS).min(19))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_records_service_runs_below_the_calls() {
    let serve = serve_after_a_stored_call((38700, 38799)).await;
    let pid = serve.child.id().to_string();
    let (ours, below) = calls_and_below(&pid);
    let switchboard = nice_of_threads(&pid, "tokio-rt-worker");
    let records = nice_of_threads(&pid, "records");
    let sqlite = nice_of_threads(&pid, "sqlx-sqlite-wor");
    assert!(
        !switchboard.is_empty() && switchboard.iter().all(|&nice| nice == ours),
        "switchboard workers {switchboard:?} at the process's nice {ours}"
    );
    assert!(
        !records.is_empty() && records.iter().all(|&nice| nice == below),
        "records threads {records:?} at {below}"
    );
    assert!(
        !sqlite.is_empty() && sqlite.iter().all(|&nice| nice == below),
        "SQLite's threads {sqlite:?} at {below}"
    );
}

/// Once calls stop, the records database's connections close after a while,
/// and their threads and page caches go with them (#16: memory back near idle
/// a minute after a burst). sqlx closes a connection idle for 10 s on a check
/// every 10 s, so within 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_records_service_closes_its_database_connections() {
    let serve = serve_after_a_stored_call((38800, 38899)).await;
    let pid = serve.child.id().to_string();
    assert!(
        !nice_of_threads(&pid, "sqlx-sqlite-wor").is_empty(),
        "the call's events were stored through SQLite's connection threads"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !nice_of_threads(&pid, "sqlx-sqlite-wor").is_empty() {
        assert!(
            Instant::now() < deadline,
            "SQLite's connections were still open a minute after the last call"
        );
        sleep(Duration::from_secs(1)).await;
    }
    // A scrape of the admin endpoint (the switchboard's threads) reads the
    // database through a freshly opened connection, whose thread is the
    // records service's, below the calls.
    let metrics = http_get(serve.admin, "/metrics").await.1;
    assert_eq!(
        metric_value(&metrics, "courtline_records_database_up"),
        Some("1"),
        "{metrics}"
    );
    let (_, below) = calls_and_below(&pid);
    let reopened = nice_of_threads(&pid, "sqlx-sqlite-wor");
    assert!(
        !reopened.is_empty() && reopened.iter().all(|&nice| nice == below),
        "SQLite's threads {reopened:?} after a scrape, not at {below}"
    );
    // A later call is stored, through the pool's connections.
    let mut caller = caller_hearing_the_warning(serve.sip).await;
    caller.hang_up().await;
}

/// The allocator hands freed memory back to the system by itself, so RSS
/// falls after a burst of calls with no allocation to prompt it (#16): the
/// settings `src/main.rs` gives jemalloc start its background purge threads,
/// which jemalloc's defaults would not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allocator_purges_freed_memory_in_the_background() {
    let serve = serve_after_a_stored_call((39000, 39099)).await;
    let pid = serve.child.id().to_string();
    assert!(
        !nice_of_threads(&pid, "jemalloc_bg_thd").is_empty(),
        "no jemalloc background thread in courtline (pid {pid}): were src/main.rs's settings read?"
    );
}

/// `[media] realtime = true` puts the media engine's thread under SCHED_RR
/// where the process may (root here, as in CI), and says in the log how to
/// allow it where it may not; without it the thread runs as every other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_threads_run_real_time_when_asked() {
    for (ports, realtime) in [((38900, 38949), true), ((38950, 38999), false)] {
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("prompt.wav");
        write_test_prompt(&wav, 20_000);
        let config = one_line_config(
            dir.path(),
            &format!("{}-{}", ports.0, ports.1),
            "",
            "test",
            &prompt_file(&wav),
            "",
        )
        .replace("[media]\n", &format!("[media]\nrealtime = {realtime}\n"));
        let file = dir.path().join("courtline.toml");
        std::fs::write(&file, config).unwrap();
        let serve = ServeChild::start(dir, file).await;
        // The engine starts with the first call.
        let mut caller = caller_hearing_the_warning(serve.sip).await;
        let pid = serve.child.id().to_string();
        let policies = policy_of_threads(&pid, "media-");
        caller.hang_up().await;
        let may = allowed_real_time();
        let expected = if realtime && may {
            libc::SCHED_RR
        } else {
            libc::SCHED_OTHER
        };
        assert!(
            !policies.is_empty() && policies.iter().all(|&p| p == expected),
            "realtime = {realtime}, allowed = {may}: media threads' policies {policies:?}"
        );
        if realtime && !may {
            wait_for_log(&serve.log, "LimitRTPRIO=", 1).await;
        }
    }
}

/// Whether this process may use real-time scheduling, found on a scratch thread.
fn allowed_real_time() -> bool {
    std::thread::spawn(|| run_media_realtime().is_ok())
        .join()
        .unwrap()
}
