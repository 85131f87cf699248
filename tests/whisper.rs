//! Issue #17, caller history at the moment of the call: a real `courtline serve`
//! child (embedded records service), callers played by SIPp (real SIP over UDP)
//! with their audio sent and heard by the test at the RTP port their SDP names,
//! and an operator played by the test. A call from a number is flagged through
//! `courtline calls flag`; the next call from that number on a `whisper_history`
//! line gives the operator three 800 Hz beeps (found in the operator's received
//! audio by Goertzel) mixed over the caller's voice, and the caller none; a number without history, and a line
//! without `whisper_history`, give no beeps; the records say what was known, and
//! `courtline records verify` finds it changed.
//!
//! `COURTLINE_WHISPER_BENCH=N` also times N calls with the whisper and N without
//! (BENCHMARKS.md, "Patterns across calls"): from the operator's 200 OK to its
//! first packet and to the caller's first audio, and the lookup's latency.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use courtline::contract::pb::records_service_client::RecordsServiceClient;
use courtline::contract::pb::{CallRecord, GetCallRequest};
use courtline::records::store::{SqlStore, Store};
use courtline::switchboard::media::codec::{Codec, Law};
use support::serve_child::{loopback_node, ServeChild};
use support::{
    record_of, recv_rtp, repo_path, rtp_packet, sdp, sipp_ports, write_test_prompt, Rtp, SipPeer,
    Sipp,
};
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// The line that whispers.
const WHISPER_LINE: &str = "02112368";
/// The line that does not (the default).
const PLAIN_LINE: &str = "02112369";
/// The number flagged after its first call.
const FLAGGED: &str = "13900001111";
/// A number never flagged.
const CLEAN: &str = "13900002222";
/// What the caller says: a 2 kHz tone (16 cycles a frame: on a Goertzel bin).
const CALLER_HZ: f64 = 2000.0;
/// What the operator says: 1.2 kHz.
const OPERATOR_HZ: f64 = 1200.0;
/// The whisper's beeps.
const WHISPER_HZ: f64 = 800.0;
/// A tone at -10 dBm0 is about 7,200 of 32,767 at its frequency; these tell
/// a tone in a 20 ms frame from its absence (the others leak nothing: every
/// frequency here is a whole number of cycles a frame).
const PRESENT: f64 = 3000.0;
const ABSENT: f64 = 1000.0;
/// How long the operator talks and listens after answering.
const LISTEN: Duration = Duration::from_millis(1500);
/// How long SIPp stays on after its ACK: lead-in, warning, dialling, `LISTEN`, margin.
const HOLD_MS: u64 = 3500;
const SEC: Duration = Duration::from_secs(1);

/// `courtline serve` with the two lines, both to `operator`.
async fn serve(operator: SocketAddr) -> ServeChild {
    let dir = tempfile::tempdir().unwrap();
    write_test_prompt(&dir.path().join("prompt.wav"), 500);
    let lines = [(WHISPER_LINE, "whisper_history = true"), (PLAIN_LINE, "")]
        .map(|(number, extra)| {
            format!(
                "[[lines]]\nnumber = \"{number}\"\ncourt = \"上海市第一中级人民法院\"\n\
                 prompt = \"warning\"\noperator = \"sip:operator@{operator}\"\n\
                 record_audio = \"never\"\n{extra}\n"
            )
        })
        .join("\n");
    let text = format!(
        r#"
[sip]
listen = "127.0.0.1:0"
qualify_interval_s = 0
{node}[prompts.warning]
file = "{wav}"
version = "1"
{lines}"#,
        node = loopback_node("45100-45199", &dir.path().join("records.db")),
        wav = dir.path().join("prompt.wav").display(),
    );
    let config = dir.path().join("courtline.toml");
    std::fs::write(&config, text).unwrap();
    ServeChild::start(dir, config).await
}

/// Frame `n` (20 ms of μ-law) of a `hz` tone.
fn tone_frame(hz: f64, n: u32) -> Vec<u8> {
    let law = Codec::Pcmu.law().unwrap();
    (0..160)
        .map(|i| {
            let t = f64::from(n * 160 + i) / 8000.0;
            law.encode(((2.0 * std::f64::consts::PI * hz * t).sin() * 7000.0) as i16)
        })
        .collect()
}

/// The strongest `frequency` in any of `packets`.
fn loudest_at(packets: &[Rtp], frequency: f64) -> f64 {
    packets
        .iter()
        .map(|p| amplitude_at(p, frequency))
        .fold(0.0, f64::max)
}

/// Amplitude of `frequency` in one μ-law packet (Goertzel).
fn amplitude_at(packet: &Rtp, frequency: f64) -> f64 {
    let law: Law = Codec::Pcmu.law().unwrap();
    let coefficient = 2.0 * (2.0 * std::f64::consts::PI * frequency / 8000.0).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &byte in &packet.payload {
        let s0 = f64::from(law.decode(byte)) + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coefficient * s1 * s2;
    2.0 * power.max(0.0).sqrt() / packet.payload.len().max(1) as f64
}

/// Talks a `hz` tone from `socket` every 20 ms (to `to`, or else to whoever sends
/// first) and keeps what it hears, for `listen`.
async fn talk_and_listen(
    socket: UdpSocket,
    mut to: Option<SocketAddr>,
    hz: f64,
    listen: Duration,
) -> Vec<Rtp> {
    let deadline = Instant::now() + listen;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (mut heard, mut n) = (Vec::new(), 0u32);
    while Instant::now() < deadline {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(to) = to {
                    let packet = rtp_packet(0, n as u16, n * 160, 0x5eed + hz as u32, n == 0, &tone_frame(hz, n));
                    socket.send_to(&packet, to).await.unwrap();
                    n += 1;
                }
            }
            got = recv_rtp(&socket, deadline.saturating_duration_since(Instant::now())) => {
                if let Some((packet, from)) = got {
                    to.get_or_insert(from);
                    heard.push(packet);
                }
            }
        }
    }
    heard
}

/// One call as both ends heard it.
struct Heard {
    /// When the operator sent its 200 OK.
    answered_at: Instant,
    /// Every packet the operator received (all after its answer).
    operator: Vec<Rtp>,
    /// What the caller received from the operator's answer on.
    caller: Vec<Rtp>,
    /// The call's record once it ended.
    record: CallRecord,
}

impl Heard {
    /// Lengths of the runs of operator packets carrying the 800 Hz whisper.
    fn beep_runs(&self) -> Vec<usize> {
        let mut runs = Vec::new();
        let mut run = 0;
        for packet in &self.operator {
            if amplitude_at(packet, WHISPER_HZ) > PRESENT {
                run += 1;
            } else if run > 0 {
                runs.push(run);
                run = 0;
            }
        }
        if run > 0 {
            runs.push(run);
        }
        runs
    }

    /// Checks that the operator heard no whisper, and the caller at once.
    fn assert_no_whisper(&self, what: &str) {
        let loudest = loudest_at(&self.operator, WHISPER_HZ);
        assert!(
            loudest < ABSENT,
            "{what}: 800 Hz at {loudest} to the operator"
        );
        let first = self
            .operator
            .iter()
            .position(|p| amplitude_at(p, CALLER_HZ) > PRESENT);
        assert!(
            first.is_some_and(|first| first < 3),
            "{what}: the caller's voice is not the operator's first audio ({first:?})"
        );
        self.assert_caller_heard_no_whisper(what);
    }

    /// Checks that the caller heard the operator and nothing of the whisper.
    fn assert_caller_heard_no_whisper(&self, what: &str) {
        let loudest = loudest_at(&self.caller, WHISPER_HZ);
        assert!(
            loudest < ABSENT,
            "{what}: 800 Hz at {loudest} to the caller"
        );
        assert!(
            self.caller
                .iter()
                .filter(|p| amplitude_at(p, OPERATOR_HZ) > PRESENT)
                .count()
                > 25,
            "{what}: the caller did not hear the operator"
        );
    }

    /// From the 200 OK to the operator's first packet, and to its first of the caller's voice.
    fn delays(&self) -> (Duration, Duration) {
        let first = self.operator.first().expect("the operator heard something");
        let voice = self
            .operator
            .iter()
            .find(|p| amplitude_at(p, CALLER_HZ) > PRESENT)
            .expect("the operator heard the caller");
        (
            first.at.duration_since(self.answered_at),
            voice.at.duration_since(self.answered_at),
        )
    }
}

/// A SIPp call from `number` to `line`, answered at once by the test's operator.
async fn call(serve: &ServeChild, operator: &SipPeer, line: &str, number: &str) -> Heard {
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let op_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // SIPp's Call-ID: the tag, then "-1" for its one call.
    let call_tag = format!("whisper-{}-%u", uuid::Uuid::new_v4());
    let (sip_port, media_port) = sipp_ports();
    let sipp_log = serve.dir.path().join("sipp.log");
    let mut sipp = Sipp(
        Command::new("sipp")
            .current_dir(serve.dir.path())
            .arg("-nostdin")
            .arg("-sf")
            .arg(repo_path("tests/sipp/caller_history.xml"))
            .args(["-s", line, "-i", "127.0.0.1"])
            .args(["-p", &sip_port.to_string()])
            .args(["-mp", &media_port.to_string()])
            .args(["-key", "caller", number, "-cid_str", &call_tag])
            .args([
                "-key",
                "rtp_port",
                &caller_rtp.local_addr().unwrap().port().to_string(),
            ])
            .args(["-d", &HOLD_MS.to_string(), "-m", "1"])
            .args(["-timeout", "30s", "-timeout_error"])
            .arg(serve.sip.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&sipp_log).unwrap())
            .spawn()
            .expect("sipp (apt-get install sip-tester)"),
    );
    // The caller talks from the first packet courtline sends it (the warning).
    let caller = tokio::spawn(talk_and_listen(
        caller_rtp,
        None,
        CALLER_HZ,
        Duration::from_millis(HOLD_MS),
    ));
    let invite = loop {
        match operator.recv(10 * SEC).await {
            Some(invite) if invite.method() == "INVITE" => break invite,
            Some(_) => continue,
            None => panic!(
                "no INVITE to the operator within 10 s of SIPp's call from {number}\n\
                 SIPp: {}\ncourtline: {}",
                std::fs::read_to_string(&sipp_log).unwrap_or_default(),
                std::fs::read_to_string(&serve.log).unwrap_or_default()
            ),
        }
    };
    let answered_at = Instant::now();
    operator
        .answer_invite(&invite, "op", &sdp(op_rtp.local_addr().unwrap(), "0"))
        .await;
    let heard_by_operator =
        talk_and_listen(op_rtp, Some(invite.sdp_rtp_addr()), OPERATOR_HZ, LISTEN).await;
    let bye = operator.expect_request("BYE", 10 * SEC).await;
    operator.respond(&bye, "200 OK", None, "", "").await;
    assert!(sipp.passed().await, "SIPp's call from {number} failed");
    let heard_by_caller = caller.await.unwrap();
    let records = serve.records.expect("the embedded records service");
    let record = record_of(records, &call_tag.replace("%u", "1"), 10 * SEC).await;
    Heard {
        answered_at,
        operator: heard_by_operator,
        caller: heard_by_caller
            .into_iter()
            .filter(|p| p.at >= answered_at)
            .collect(),
        record,
    }
}

/// Runs the courtline CLI against `serve`'s records service.
fn courtline_run(serve: &ServeChild, args: &[&str]) -> std::process::Output {
    let endpoint = format!("http://{}", serve.records.unwrap());
    Command::new(env!("CARGO_BIN_EXE_courtline"))
        .arg("--config")
        .arg(&serve.config)
        .args(args)
        .args(["--endpoint", &endpoint])
        .output()
        .unwrap()
}

/// Runs the courtline CLI against `serve`, which must succeed; its stdout.
fn courtline(serve: &ServeChild, args: &[&str]) -> String {
    let out = courtline_run(serve, args);
    assert!(
        out.status.success(),
        "courtline {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The record of call `call_id` as the records service answers it now.
async fn stored(serve: &ServeChild, call_id: &str) -> CallRecord {
    let mut client = RecordsServiceClient::connect(format!("http://{}", serve.records.unwrap()))
        .await
        .unwrap();
    client
        .get_call(GetCallRequest {
            call_id: call_id.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .record
        .unwrap()
}

/// The `lookup_us` of each caller-history lookup in the log so far.
fn lookups_us(log: &Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["fields"]["message"] == "caller history")
        .filter_map(|line| line["fields"]["lookup_us"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_hears_the_whisper_for_a_flagged_number_and_the_caller_does_not() {
    let operator = SipPeer::bind().await;
    let serve = serve(operator.addr).await;

    // Nothing known yet: no whisper, and the record says so.
    let first = call(&serve, &operator, WHISPER_LINE, FLAGGED).await;
    first.assert_no_whisper("the number's first call");
    assert_eq!(
        (first.record.prior_reports, first.record.prior_flags),
        (0, 0)
    );
    assert_eq!(first.record.caller_number, FLAGGED);
    courtline(
        &serve,
        &[
            "calls",
            "flag",
            &first.record.call_id,
            "--category",
            "intercession",
            "--note",
            "asked for the judge by name",
        ],
    );

    // The number's next call: three beeps to the operator, mixed over the caller's
    // voice (which is not held back); the caller hears only the operator.
    let again = call(&serve, &operator, WHISPER_LINE, FLAGGED).await;
    assert_eq!(
        again.beep_runs(),
        vec![5, 5, 5],
        "100 ms beeps, 100 ms apart"
    );
    let voiced = again.operator[..25]
        .iter()
        .filter(|p| amplitude_at(p, CALLER_HZ) > PRESENT)
        .count();
    assert!(
        voiced >= 20,
        "the caller's voice goes on under the whisper: {voiced} of its 25 frames"
    );
    let first_voice = again
        .operator
        .iter()
        .position(|p| amplitude_at(p, CALLER_HZ) > PRESENT);
    assert!(
        first_voice.is_some_and(|first| first < 3),
        "the operator hears the caller from the start: {first_voice:?}"
    );
    again.assert_caller_heard_no_whisper("the flagged number's next call");
    let record = stored(&serve, &again.record.call_id).await;
    assert_eq!((record.prior_reports, record.prior_flags), (0, 1));
    let detail: serde_json::Value = serde_json::from_str(&courtline(
        &serve,
        &["calls", "get", &again.record.call_id, "--format", "json"],
    ))
    .unwrap();
    assert_eq!(detail["prior_flags"], 1, "{detail}");
    assert_eq!(detail["prior_reports"], 0, "{detail}");

    // A number with no history, and the flagged number on a line without the whisper.
    let clean = call(&serve, &operator, WHISPER_LINE, CLEAN).await;
    clean.assert_no_whisper("a number without history");
    assert_eq!(
        (clean.record.prior_reports, clean.record.prior_flags),
        (0, 0)
    );
    let plain = call(&serve, &operator, PLAIN_LINE, FLAGGED).await;
    plain.assert_no_whisper("a line without whisper_history");
    assert_eq!(
        (plain.record.prior_reports, plain.record.prior_flags),
        (0, 0),
        "a line that does not whisper does not ask"
    );
    assert_eq!(
        lookups_us(&serve.log).len(),
        3,
        "one lookup per whisper-line call"
    );

    // What the operator was told is checked against the chain like any column.
    courtline(&serve, &["records", "verify"]);
    let store = SqlStore::open(&serve.dir.path().join("records.db").display().to_string())
        .await
        .unwrap();
    sqlx::query("UPDATE calls SET prior_flags = 0 WHERE call_id = $1")
        .bind(&again.record.call_id)
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    let tampered = courtline_run(&serve, &["records", "verify"]);
    let said = String::from_utf8_lossy(&tampered.stdout).into_owned()
        + &String::from_utf8_lossy(&tampered.stderr);
    assert!(
        !tampered.status.success() && said.contains("prior_flags is 0, its events say 1"),
        "{said}"
    );

    let Some(calls) = std::env::var("COURTLINE_WHISPER_BENCH")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return;
    };
    let mut table = Vec::new();
    for (label, line) in [("whisper", WHISPER_LINE), ("plain", PLAIN_LINE)] {
        let (mut first, mut voice) = (Vec::new(), Vec::new());
        for n in 0..calls {
            eprintln!("{label} call {n}");
            let heard = call(&serve, &operator, line, FLAGGED).await;
            let (to_first, to_voice) = heard.delays();
            first.push(to_first);
            voice.push(to_voice);
        }
        table.push((label, first, voice));
    }
    let lookups: Vec<Duration> = lookups_us(&serve.log)
        .into_iter()
        .map(Duration::from_micros)
        .collect();
    let summary = |mut values: Vec<Duration>| {
        values.sort();
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        format!(
            "median {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={}); raw ms: {:?}",
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            values.last().unwrap().as_secs_f64() * 1e3,
            values.len(),
            values
                .iter()
                .map(|v| (v.as_secs_f64() * 1e4).round() / 10.0)
                .collect::<Vec<_>>()
        )
    };
    for (label, first, voice) in table {
        eprintln!(
            "{label}: 200 OK to the operator's first packet: {}",
            summary(first)
        );
        eprintln!(
            "{label}: 200 OK to the caller's first audio at the operator: {}",
            summary(voice)
        );
    }
    eprintln!("caller-history lookup at admission: {}", summary(lookups));
}
