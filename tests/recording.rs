//! Call audio as evidence (#12): a real call over loopback sockets, recorded
//! by the switchboard into a real two-channel WAV file.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use courtline::contract::pb::records_service_client::RecordsServiceClient;
use courtline::contract::pb::{
    CallFilter, CallRecord, CallState, FlagCallRequest, FlagCategory, ListCallsRequest,
    OpenReportRequest, PurgeRequest, ReportForm, VerifyRequest,
};
use courtline::switchboard::media::codec::{ulaw_to_linear, Codec};
use sha2::Digest;
use support::*;
use tokio::net::UdpSocket;
use tokio::time::Instant;

const SEC: Duration = Duration::from_secs(1);

/// `count` packets of μ-law `byte` to `to`, one every 20 ms.
async fn talk(socket: &UdpSocket, to: std::net::SocketAddr, ssrc: u32, count: u16, byte: u8) {
    for i in 0..count {
        let packet = rtp_packet(0, i, 160 * u32::from(i), ssrc, i == 0, &[byte; 160]);
        socket.send_to(&packet, to).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits up to 5 s for `path` to exist.
async fn wait_for(path: &Path) -> bool {
    let deadline = Instant::now() + 5 * SEC;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Where a call's recording lands in the switchboard's temporary area.
fn recording_of(sb: &TestSwitchboard, dir: Option<&Path>, call_id: &str) -> PathBuf {
    dir.map(Path::to_path_buf)
        .unwrap_or_else(|| sb.dir.path().join("recordings"))
        .join(format!("{call_id}.wav"))
}

/// First index from which `samples` holds `run` copies of `value`.
fn find_run(samples: &[i16], value: i16, run: usize) -> Option<usize> {
    samples
        .windows(run)
        .position(|w| w.iter().all(|&s| s == value))
}

/// A call through a recorded line: the warning, ringback, the operator, the
/// caller; the call ends and its record is complete. Returns the switchboard,
/// the call's id, when the first warning packet arrived and when the caller
/// started talking.
/// The evidence store's file for `call_id` (`[records.service] recordings_dir` default).
fn evidence_of(sb: &TestSwitchboard, call_id: &str) -> PathBuf {
    sb.dir
        .path()
        .join("evidence")
        .join(format!("{call_id}.wav"))
}

async fn records_client(sb: &TestSwitchboard) -> RecordsServiceClient<tonic::transport::Channel> {
    RecordsServiceClient::connect(format!("http://{}", sb.records))
        .await
        .unwrap()
}

/// What is done to the call on the records service while the operator is on it.
#[derive(Clone, Copy, PartialEq)]
enum Hold {
    /// Nothing: an `on_report` recording is deleted.
    None,
    /// `FlagCall`.
    Flag,
    /// `OpenReport` (a "three rules" report, no flag).
    Report,
}

/// A bridged call on a recorded line; with `hold`, the call is flagged or reported (on the
/// embedded records service) while the operator is on it, before the hang-up.
async fn recorded_call(
    ports: (u16, u16),
    line_extra: &str,
    hold: Hold,
) -> (TestSwitchboard, CallRecord, Duration) {
    let operator = SipPeer::bind().await;
    let op_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:operator@{}", operator.addr)],
        prompt_ms: 400,
        rtp_ports: ports,
        line_extra: line_extra.into(),
        ..Options::default()
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    let ok = caller.call("0").await;
    let courtline_rtp = ok.sdp_rtp_addr();
    let (_, _) = recv_rtp(&caller.rtp, SEC)
        .await
        .expect("first warning packet");
    let first_packet = Instant::now();

    let invite = operator.expect_request("INVITE", 10 * SEC).await;
    operator
        .respond(&invite, "180 Ringing", Some("op"), "", "")
        .await;
    // Let the caller hear ringback for a while.
    tokio::time::sleep(Duration::from_millis(400)).await;
    operator
        .answer_invite(&invite, "op", &sdp(op_rtp.local_addr().unwrap(), "0"))
        .await;
    if hold != Hold::None {
        let mut client = records_client(&sb).await;
        let in_progress = client
            .list_calls(ListCallsRequest {
                filter: Some(CallFilter {
                    states: vec![CallState::InProgress as i32],
                    ..CallFilter::default()
                }),
                ..ListCallsRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        let call_id = in_progress
            .records
            .into_iter()
            .find(|r| r.sip_call_id == caller.call_id)
            .expect("the call is on record while it lasts")
            .call_id;
        if hold == Hold::Flag {
            client
                .flag_call(FlagCallRequest {
                    call_id,
                    category: FlagCategory::Intercession as i32,
                    note: "说情打招呼".into(),
                })
                .await
                .unwrap();
        } else {
            client
                .open_report(OpenReportRequest {
                    call_id,
                    opened_via: 0,
                    form: Some(ReportForm {
                        staff_name: "李娜".into(),
                        asked: "请法官多关照被告".into(),
                        ..ReportForm::default()
                    }),
                })
                .await
                .unwrap();
        }
    }
    let courtline_op_rtp = invite.sdp_rtp_addr();
    // The operator's test tone, then the caller's.
    talk(&op_rtp, courtline_op_rtp, 0x0bad_cafe, 25, 0x1f).await;
    let caller_talks = first_packet.elapsed();
    talk(&caller.rtp, courtline_rtp, 0x1234_5678, 20, 0x2a).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    caller.hang_up().await;
    let record = sb.record(&caller.call_id).await;
    (sb, record, caller_talks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_call_holds_the_warning_exactly_then_ringback_operator_and_caller_in_time() {
    let (sb, record, caller_talks) =
        recorded_call((41200, 41299), "record_audio = \"always\"", Hold::None).await;
    let call_id = record.call_id;
    // "always": the embedded records service has taken the file into the evidence store.
    let path = evidence_of(&sb, &call_id);
    assert!(wait_for(&path).await, "no recording at {}", path.display());
    let mut reader = hound::WavReader::open(&path).unwrap();
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8000, 16)
    );
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let to_caller: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let from_caller: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();

    // Channel 1 starts with the warning, frame for frame, sample for sample.
    let frames = sb.playlist.frame_count();
    let warning: Vec<i16> = (0..frames)
        .flat_map(|i| sb.playlist.frame(Codec::Pcmu, i).to_vec())
        .map(ulaw_to_linear)
        .collect();
    assert!(to_caller.len() > warning.len());
    assert_eq!(
        &to_caller[..warning.len()],
        &warning[..],
        "channel 1 begins with the whole warning"
    );
    // Then ringback (a tone), then the operator's test tone.
    let operator_at = find_run(&to_caller, ulaw_to_linear(0x1f), 160 * 20)
        .expect("the operator's tone on channel 1");
    assert!(
        operator_at > warning.len() + 8 * 300,
        "ringback between warning and operator"
    );
    let ringback = &to_caller[warning.len()..warning.len() + 8 * 300];
    assert!(
        ringback.iter().filter(|s| s.unsigned_abs() > 1000).count() > 8 * 100,
        "ringback tone after the warning"
    );

    // Channel 2: silence while the caller listened, then its tone when it spoke.
    let caller_at = find_run(&from_caller, ulaw_to_linear(0x2a), 160 * 20)
        .expect("the caller's tone on channel 2");
    assert!(
        from_caller[..caller_at].iter().all(|&s| s == 0),
        "nothing but silence before"
    );
    let expected = caller_talks.as_millis() as i64 * 8;
    assert!(
        (caller_at as i64 - expected).abs() < 8 * 200,
        "caller's tone at {} ms, sent at {} ms",
        caller_at / 8,
        expected / 8
    );
    assert!(
        caller_at > operator_at,
        "the caller spoke after the operator"
    );
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_that_never_records_leaves_no_file() {
    let (sb, record, _) =
        recorded_call((41300, 41349), "record_audio = \"never\"", Hold::None).await;
    let call_id = record.call_id;
    tokio::time::sleep(SEC).await;
    assert!(!recording_of(&sb, None, &call_id).exists());
    assert!(
        !sb.dir.path().join("recordings").exists(),
        "no recording area at all"
    );
    sb.stop().await;
}

/// Unmounts the test's tmpfs however the test ends.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_drops_the_recording_and_never_the_call() {
    let area = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=32k", "tmpfs"])
        .arg(area.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let _mount = Mount(area.path().to_path_buf());
    let line_extra = format!(
        "record_audio = \"always\"\n[recording]\ndir = \"{}\"",
        area.path().display()
    );
    // 32 KiB hold about a second of two-channel 8 kHz audio; the call lasts longer.
    let (sb, record, _) = recorded_call((41350, 41399), &line_extra, Hold::None).await;
    let call_id = record.call_id.clone();
    assert!(
        record.prompt_completed,
        "the call went on through the warning"
    );
    assert!(record.operator_answered_at_ms > 0, "and was bridged");
    tokio::time::sleep(SEC).await;
    assert!(
        !recording_of(&sb, Some(area.path()), &call_id).exists(),
        "the partial file is removed"
    );
    sb.stop().await;
}

async fn wait_gone(path: &Path) -> bool {
    let deadline = Instant::now() + 5 * SEC;
    while Instant::now() < deadline {
        if !path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The `recording` findings of `records verify` (the Verify RPC).
async fn recording_findings(sb: &TestSwitchboard) -> Vec<String> {
    let report = records_client(sb)
        .await
        .verify(VerifyRequest {})
        .await
        .unwrap()
        .into_inner();
    report
        .findings
        .into_iter()
        .filter(|finding| finding.kind == "recording")
        .map(|finding| format!("{} {}", finding.call_id, finding.detail))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_report_without_a_flag_leaves_no_file_anywhere() {
    let (sb, record, _) = recorded_call((41400, 41449), "", Hold::None).await;
    let call_id = record.call_id;
    assert!(
        wait_gone(&recording_of(&sb, None, &call_id)).await,
        "the temporary file is deleted after the call"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!evidence_of(&sb, &call_id).exists(), "nothing is kept");
    assert!(!recording_of(&sb, None, &call_id).exists());
    // The file is kept for the next call's recording, cut to its 44-byte
    // WAV header: the audio is gone.
    let spares = sb.dir.path().join("recordings").join(".spare");
    let deadline = Instant::now() + 10 * SEC;
    let sizes = loop {
        let sizes: Vec<u64> = std::fs::read_dir(&spares)
            .unwrap()
            .map(|entry| entry.unwrap().metadata().unwrap().len())
            .collect();
        if sizes.iter().all(|&len| len <= 44) || Instant::now() > deadline {
            break sizes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(sizes, vec![44], "one spare file, only a header left");
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_during_the_call_keeps_the_recording_and_verify_names_a_changed_or_missing_file() {
    let (sb, record, _) = recorded_call((41450, 41499), "", Hold::Flag).await;
    let call_id = record.call_id;
    let kept = evidence_of(&sb, &call_id);
    assert!(
        wait_for(&kept).await,
        "no kept recording at {}",
        kept.display()
    );
    assert!(wait_gone(&recording_of(&sb, None, &call_id)).await);
    let report = records_client(&sb)
        .await
        .verify(VerifyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(report.findings.is_empty(), "{:?}", report.findings);

    let mut bytes = std::fs::read(&kept).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&kept, &bytes).unwrap();
    let findings = recording_findings(&sb).await;
    assert!(
        findings.len() == 1 && findings[0].contains(&call_id) && findings[0].contains("SHA-256"),
        "{findings:?}"
    );

    std::fs::remove_file(&kept).unwrap();
    let findings = recording_findings(&sb).await;
    assert!(
        findings.len() == 1 && findings[0].contains(&call_id) && findings[0].contains("missing"),
        "{findings:?}"
    );
    sb.stop().await;
}

/// Runs the real `courtline` binary against the switchboard's embedded records service.
fn courtline(sb: &TestSwitchboard, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_courtline"))
        .args(args)
        .args(["--endpoint", &format!("http://{}", sb.records)])
        .current_dir(sb.dir.path())
        .output()
        .unwrap()
}

/// Makes call `call_id` older than any retention, then runs a purge.
async fn age_and_purge(sb: &TestSwitchboard, call_id: &str) {
    let status = std::process::Command::new("sqlite3")
        .arg(sb.dir.path().join("records.db"))
        .arg(format!(
            "UPDATE calls SET received_at_ms = 1000 WHERE call_id = '{call_id}'"
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let response = records_client(sb)
        .await
        .purge(PurgeRequest { dry_run: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.calls_purged + response.calls_on_hold, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_recording_is_fetched_and_checked_and_held_by_its_flag() {
    let (sb, record, _) = recorded_call((41500, 41549), "", Hold::Flag).await;
    let call_id = record.call_id;
    let kept = evidence_of(&sb, &call_id);
    assert!(
        wait_for(&kept).await,
        "no kept recording at {}",
        kept.display()
    );

    let got = courtline(&sb, &["calls", "get", &call_id]);
    let text = String::from_utf8_lossy(&got.stdout);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    let sha = hex::encode(sha2::Sha256::digest(std::fs::read(&kept).unwrap()));
    assert!(
        text.contains("recording: kept") && text.contains(&sha),
        "{text}"
    );

    let fetched = sb.dir.path().join("fetched.wav");
    let audio = courtline(
        &sb,
        &["calls", "audio", &call_id, "-o", fetched.to_str().unwrap()],
    );
    assert!(
        audio.status.success(),
        "{}",
        String::from_utf8_lossy(&audio.stderr)
    );
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(&kept).unwrap()
    );

    // One byte changed in the store: the fetch says so and fails.
    let mut bytes = std::fs::read(&kept).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&kept, &bytes).unwrap();
    let audio = courtline(
        &sb,
        &["calls", "audio", &call_id, "-o", fetched.to_str().unwrap()],
    );
    assert!(!audio.status.success());
    assert!(String::from_utf8_lossy(&audio.stderr).contains("not the recording as made"));

    // Legal hold: the flagged call and its audio survive a purge past retention.
    age_and_purge(&sb, &call_id).await;
    assert!(kept.exists(), "a flagged call's recording is on legal hold");
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_without_a_flag_keeps_the_recording_through_verify_and_purge() {
    let (sb, record, _) = recorded_call((41600, 41649), "", Hold::Report).await;
    let call_id = record.call_id;
    let kept = evidence_of(&sb, &call_id);
    assert!(
        wait_for(&kept).await,
        "a reported call's on_report recording is kept at {}",
        kept.display()
    );
    // Verify agrees that the report, chained before the recording, kept it.
    let report = records_client(&sb)
        .await
        .verify(VerifyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    // Legal hold: the reported call and its audio survive a purge past retention.
    age_and_purge(&sb, &call_id).await;
    assert!(
        kept.exists(),
        "a reported call's recording is on legal hold"
    );
    let findings = recording_findings(&sb).await;
    assert!(findings.is_empty(), "{findings:?}");
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_an_unflagged_calls_recording() {
    let (sb, record, _) =
        recorded_call((41550, 41599), "record_audio = \"always\"", Hold::None).await;
    let call_id = record.call_id;
    let kept = evidence_of(&sb, &call_id);
    assert!(wait_for(&kept).await, "always keeps the recording");
    age_and_purge(&sb, &call_id).await;
    assert!(!kept.exists(), "purge removes the audio with the call");
    let findings = recording_findings(&sb).await;
    assert!(findings.is_empty(), "{findings:?}");
    let audio = courtline(&sb, &["calls", "audio", &call_id, "-o", "x.wav"]);
    assert!(!audio.status.success());
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_g722_call_is_recorded_at_16_khz_with_the_warning_in_place() {
    let sb = TestSwitchboard::start(Options {
        prompt_ms: 400,
        rtp_ports: (41650, 41699),
        line_extra: "record_audio = \"always\"".into(),
        ..Options::default()
    })
    .await;
    assert!(sb.playlist.supports(Codec::G722), "a 16 kHz prompt");
    let mut caller = Caller::new(sb.sip).await;
    let ok = caller.call("9").await;
    assert!(ok.body.contains("RTP/AVP 9"), "{}", ok.body);
    let frames = sb.playlist.frame_count();
    for i in 0..frames {
        recv_rtp(&caller.rtp, SEC)
            .await
            .unwrap_or_else(|| panic!("warning packet {i} missing"));
    }
    caller.hang_up().await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(record.codec, "G722");
    let path = evidence_of(&sb, &record.call_id);
    assert!(wait_for(&path).await, "no recording at {}", path.display());
    let mut reader = hound::WavReader::open(&path).unwrap();
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 16000, 16),
        "G.722 calls are kept at 16 kHz"
    );
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let to_caller: Vec<i16> = samples.iter().step_by(2).copied().collect();
    // Channel 1 is the pre-encoded warning as a G.722 decoder hears it. The
    // recording's decoder starts at the first warning packet, which may come after
    // a lead-in frame or two, so its state differs by a few units at first (ADPCM):
    // compared by signal-to-noise ratio, not sample for sample.
    let codes: Vec<u8> = (0..frames)
        .flat_map(|i| sb.playlist.frame(Codec::G722, i).to_vec())
        .collect();
    let mut warning = vec![0i16; codes.len() * 2];
    courtline::switchboard::media::g722::Decoder::new().decode(&codes, &mut warning);
    assert!(to_caller.len() >= warning.len());
    let (mut signal, mut noise) = (0.0f64, 0.0f64);
    for (heard, sent) in to_caller.iter().zip(&warning) {
        signal += f64::from(*sent).powi(2);
        noise += (f64::from(*sent) - f64::from(*heard)).powi(2);
    }
    let snr = 10.0 * (signal / noise.max(1.0)).log10();
    // The tolerance tests/g722.rs gives the codec itself.
    assert!(snr > 30.0, "channel 1 against the warning: {snr:.1} dB");
    sb.stop().await;
}
