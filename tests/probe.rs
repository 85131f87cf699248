//! Synthetic probes against a real `courtline serve` process: `courtline probe`
//! passes on a good line and its call is recorded as a probe, left out of the
//! dashboard's figures and the call metrics; it fails naming the line and what
//! was wrong when the line plays another recording than configured, and on an
//! unknown line; a forged probe header makes an ordinary, counted call; a
//! probe is put through to `[probe] target` only; a scheduled probe sets
//! `courtline_probe_success`.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use courtline::contract::pb::records_service_client::RecordsServiceClient;
use courtline::contract::pb::{CallFilter, CallRecord, Choice, ListCallsRequest};
use courtline::records::store::{SqlStore, Store};
use courtline::switchboard::sip::probe_header::{ProbeKey, HEADER};
use support::serve_child::{
    metric_value, one_line_config, prompt_file, promtool, run_promtool, wait_for_log, ServeChild,
};
use support::{recv_rtp, sdp, write_test_prompt, Caller, SipPeer};
use tokio::time::{sleep, Instant};

const LINE: &str = "02112368";

/// The configuration: one line playing `wav`, plus `extra` TOML.
fn config_text(dir: &Path, wav: &str, rtp_ports: (u16, u16), extra: &str) -> String {
    let ports = format!("{}-{}", rtp_ports.0, rtp_ports.1);
    one_line_config(
        dir,
        &ports,
        "",
        "warning",
        &prompt_file(&dir.join(wav)),
        extra,
    )
}

impl ServeChild {
    /// Starts `courtline serve` with a 1.5 s warning and `extra` configuration.
    async fn with_probes(rtp_ports: (u16, u16), extra: &str) -> ServeChild {
        let dir = tempfile::tempdir().unwrap();
        write_test_prompt(&dir.path().join("prompt.wav"), 1_500);
        let config = dir.path().join("courtline.toml");
        std::fs::write(
            &config,
            config_text(dir.path(), "prompt.wav", rtp_ports, extra),
        )
        .unwrap();
        ServeChild::start(dir, config).await
    }

    /// Runs `courtline probe` with `config` and `args`, to this switchboard.
    fn probe(&self, config: &Path, args: &[&str]) -> Output {
        let out = probe_command(self.sip, config, args).output().unwrap();
        eprintln!(
            "courtline probe {args:?}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Finished calls matching `filter`, waiting up to 10 s for `count` of them.
    async fn calls(&self, filter: CallFilter, count: usize) -> Vec<CallRecord> {
        let mut client = RecordsServiceClient::connect(format!("http://{}", self.records.unwrap()))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let records = client
                .list_calls(ListCallsRequest {
                    filter: Some(filter.clone()),
                    page_size: 100,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .records;
            if records.len() >= count || Instant::now() > deadline {
                return records;
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Finished probe calls, waiting up to 10 s for `count` of them.
    async fn probe_calls(&self, count: usize) -> Vec<CallRecord> {
        let filter = CallFilter {
            probe: Choice::Yes as i32,
            ..CallFilter::default()
        };
        self.calls(filter, count).await
    }

    /// The dashboard's figures of every day: finished calls counted.
    async fn counted_calls(&self) -> i64 {
        let store = SqlStore::open(&self.dir.path().join("records.db").display().to_string())
            .await
            .unwrap();
        let rows = store
            .daily_figures(i64::MIN / 2, i64::MAX / 2)
            .await
            .unwrap();
        rows.iter().map(|row| row.tally.calls).sum()
    }
}

/// `courtline probe` with `config` and `args`, to the switchboard at `sip`.
fn probe_command(sip: SocketAddr, config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_courtline"));
    command
        .arg("--config")
        .arg(config)
        .arg("probe")
        .arg("--to")
        .arg(sip.to_string())
        .args(args)
        .env("RUST_LOG", "warn");
    command
}

/// Another recording of the same length: two alternating tones, nothing like a sweep.
fn write_other_recording(path: &Path, ms: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..16 * ms {
        let t = f64::from(i) / 16_000.0;
        let f = if (i / 1_600) % 2 == 0 { 440.0 } else { 660.0 };
        w.write_sample(((std::f64::consts::TAU * f * t).sin() * 12_000.0) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
}

/// A caller whose INVITE carries a probe header signed with the wrong key.
async fn forged_probe_call(sip: SocketAddr) {
    let mut caller = Caller::new(sip).await;
    let forged =
        ProbeKey::new(b"a guess at the switchboard's key").sign(&caller.call_id, SystemTime::now());
    let me = caller.sip.addr;
    let text = caller
        .initial(
            "INVITE",
            &format!("sip:{LINE}@{sip}"),
            &format!("<sip:{LINE}@{sip}>"),
        )
        .header("Contact", format_args!("<sip:13800138000@{me}>"))
        .header(HEADER, forged)
        .body(
            "application/sdp",
            &sdp(caller.rtp.local_addr().unwrap(), "8"),
        )
        .text();
    caller.sip.send(sip, &text).await;
    let ok = caller.sip.expect_status(200, Duration::from_secs(10)).await;
    caller.to = ok.header("to").unwrap().to_string();
    let to = caller.to.clone();
    caller.ack(&to, "z9hG4bK-ack-1").await;
    recv_rtp(&caller.rtp, Duration::from_secs(5))
        .await
        .expect("the warning");
    caller.hang_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_passes_on_a_good_line_is_recorded_as_one_and_left_out_of_the_statistics() {
    let serve = ServeChild::with_probes((39100, 39199), "").await;
    let out = serve.probe(&serve.config, &["--line", LINE]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("✓ line {LINE}: heard the warning whole"))
            && stdout.contains("warning version \"2026-01\""),
        "{stdout}"
    );
    // Nobody but the probe was called: the operator's target is never dialled.
    let probes = serve.probe_calls(1).await;
    assert_eq!(probes.len(), 1, "{probes:?}");
    let probe = &probes[0];
    assert!(probe.probe && probe.prompt_completed, "{probe:?}");
    assert_eq!(probe.operator_uri, "", "no operator was dialled");

    // A caller who copies the header with a guessed key makes an ordinary call.
    forged_probe_call(serve.sip).await;
    let ordinary = serve
        .calls(
            CallFilter {
                probe: Choice::No as i32,
                ..CallFilter::default()
            },
            1,
        )
        .await;
    assert_eq!(ordinary.len(), 1, "{ordinary:?}");
    assert!(!ordinary[0].probe);
    wait_for_log(&serve.log, "probe header not accepted", 1).await;
    // Both are listed; only the ordinary call is counted, in the dashboard and the metrics.
    assert_eq!(serve.calls(CallFilter::default(), 2).await.len(), 2);
    assert_eq!(serve.counted_calls().await, 1);
    let text = serve.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            &format!(
                r#"courtline_calls_total{{end_reason="caller_hung_up_during_prompt",line="{LINE}"}}"#
            )
        ),
        Some("1"),
        "{text}"
    );
    assert!(!text.contains(r#"courtline_calls_total{end_reason="caller_hung_up""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_fails_naming_the_line_on_another_recording_and_on_an_unknown_line() {
    let serve = ServeChild::with_probes((39200, 39299), "").await;
    // The probe expects another recording than the switchboard plays (a new
    // version went live on the probe's side only).
    write_other_recording(&serve.dir.path().join("other.wav"), 1_500);
    let other = serve.dir.path().join("other.toml");
    std::fs::write(
        &other,
        config_text(serve.dir.path(), "other.wav", (39200, 39299), ""),
    )
    .unwrap();
    let out = serve.probe(&other, &["--line", LINE]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("✗ line {LINE}: wrong prompt version")),
        "{stderr}"
    );

    let out = serve.probe(&serve.config, &["--line", "02199999"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("✗ line 02199999: no answer: 404"),
        "{stderr}"
    );
    // Both calls are probes on record, and neither is counted.
    let probes = serve.probe_calls(2).await;
    assert_eq!(probes.len(), 2, "{probes:?}");
    assert_eq!(serve.counted_calls().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_probes_set_the_success_metric_per_line() {
    let serve = ServeChild::with_probes((39300, 39399), "[probe]\nevery_minutes = 60\n").await;
    let success = format!(r#"courtline_probe_success{{line="{LINE}"}}"#);
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = serve.metrics().await;
        if metric_value(&text, &success).is_some() {
            break text;
        }
        assert!(Instant::now() < deadline, "no {success} in:\n{text}");
        sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(metric_value(&text, &success), Some("1"), "{text}");
    let ran: f64 = metric_value(
        &text,
        &format!(r#"courtline_probe_last_run_timestamp_seconds{{line="{LINE}"}}"#),
    )
    .unwrap()
    .parse()
    .unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - 60.0..=now).contains(&ran), "{ran} vs {now}");
    wait_for_log(&serve.log, "synthetic probe passed", 1).await;
    if let Some(promtool) = promtool() {
        run_promtool(promtool, &["check", "metrics"], &text);
    }
    // The key the switchboard made is its owner's only.
    assert!(serve.dir.path().join("probe.key").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_is_put_through_to_the_probe_target_not_to_the_operators() {
    let target = SipPeer::bind().await;
    let target_uri = format!("sip:probe@{}", target.addr);
    let serve = ServeChild::with_probes(
        (39400, 39499),
        &format!("[probe]\ntarget = \"{target_uri}\"\n"),
    )
    .await;
    let mut probe = probe_command(serve.sip, &serve.config, &["--line", LINE]);
    let probe = tokio::task::spawn_blocking(move || probe.output().unwrap());
    // After the warning the switchboard calls the test extension, which answers.
    let invite = target
        .expect_request("INVITE", Duration::from_secs(10))
        .await;
    let target_rtp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    target
        .answer_invite(
            &invite,
            "probe-target",
            &sdp(target_rtp.local_addr().unwrap(), "8"),
        )
        .await;
    let out = probe.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The probe hangs up: the switchboard ends the target's leg too.
    let bye = target.expect_request("BYE", Duration::from_secs(10)).await;
    target.respond(&bye, "200 OK", None, "", "").await;
    let probes = serve.probe_calls(1).await;
    assert_eq!(probes.len(), 1, "{probes:?}");
    assert_eq!(probes[0].operator_uri, target_uri);
    assert!(probes[0].operator_answered_at_ms > 0);
    assert_eq!(serve.counted_calls().await, 0);
}
