//! Issue #12, part 1: the bridged operator asks for a report by pressing
//! `[reports] operator_keys` (`*7`) on the phone, by RFC 4733 or SIP INFO.
//! Real switchboard and records service on loopback, Rust SIP/RTP peers: the
//! request reaches the call's timeline, the operator hears the 1,400 Hz
//! confirmation, and the caller gets neither the keys nor the tone; other
//! keys still reach the caller, held back only while they could start the
//! sequence.

mod support;

use std::time::Duration;

use courtline::contract::pb::records_service_client::RecordsServiceClient;
use courtline::contract::pb::GetCallRequest;
use courtline::switchboard::media::codec::Codec;
use courtline::switchboard::media::dtmf::DtmfDetector;
use support::*;
use tokio::net::UdpSocket;
use tokio::time::Instant;

const SEC: Duration = Duration::from_secs(1);
/// `[reports] key_timeout_ms` in these tests: short, so a held key's release is quick to see.
const KEY_TIMEOUT_MS: u64 = 300;
/// Telephone-event payload type both peers declare.
const TE: u8 = 101;

/// A call bridged to an operator peer (PCMU and telephone-event on both legs).
struct Bridged {
    sb: TestSwitchboard,
    caller: Caller,
    operator: SipPeer,
    op_rtp: UdpSocket,
    /// courtline's INVITE to the operator.
    invite: Sip,
    /// Where courtline takes the operator's RTP.
    courtline_op_rtp: std::net::SocketAddr,
}

async fn bridged(rtp_ports: (u16, u16)) -> Bridged {
    let operator = SipPeer::bind().await;
    let op_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:operator@{}", operator.addr)],
        prompt_ms: 200,
        rtp_ports,
        // The line's keys end its table; `[reports]` starts a new one.
        line_extra: format!(
            "\n[reports]\noperator_keys = \"*7\"\nkey_timeout_ms = {KEY_TIMEOUT_MS}\n"
        ),
        ..Options::default()
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    caller.call("0 101").await;
    let invite = operator.expect_request("INVITE", 5 * SEC).await;
    operator
        .answer_invite(&invite, "op1", &sdp(op_rtp.local_addr().unwrap(), "0 101"))
        .await;
    let courtline_op_rtp = invite.sdp_rtp_addr();
    // Let the bridge settle and the ringback stop before listening.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drain(&caller.rtp).await;
    drain(&op_rtp).await;
    Bridged {
        sb,
        caller,
        operator,
        op_rtp,
        invite,
        courtline_op_rtp,
    }
}

/// Discards whatever `socket` has queued.
async fn drain(socket: &UdpSocket) {
    while recv_rtp(socket, Duration::from_millis(1)).await.is_some() {}
}

/// Sends key `event` as a phone does (RFC 4733): three updates, then the end
/// packet three times, one timestamp, 20 ms apart.
async fn send_key(socket: &UdpSocket, to: std::net::SocketAddr, event: u8, seq: u16, ts: u32) {
    let steps = [
        (160u16, false),
        (320, false),
        (480, false),
        (640, true),
        (640, true),
        (640, true),
    ];
    for (i, (duration, end)) in steps.into_iter().enumerate() {
        let [hi, lo] = duration.to_be_bytes();
        let payload = [event, if end { 0x8a } else { 0x0a }, hi, lo];
        let packet = rtp_packet(TE, seq + i as u16, ts, 0x0bad, i == 0, &payload);
        socket.send_to(&packet, to).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The operator sends an in-dialog INFO carrying `key` as `application/dtmf-relay`.
async fn operator_info(b: &Bridged, cseq: u32, key: char) {
    let target = b
        .invite
        .header("contact")
        .unwrap()
        .trim_matches(|c| c == '<' || c == '>')
        .to_string();
    let body = format!("Signal={key}\r\nDuration=160\r\n");
    let text = format!(
        "INFO {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-opinfo-{cseq}\r\nMax-Forwards: 70\r\nFrom: {to};tag=op1\r\nTo: {from}\r\nCall-ID: {cid}\r\nCSeq: {cseq} INFO\r\nContent-Type: application/dtmf-relay\r\nContent-Length: {len}\r\n\r\n{body}",
        me = b.operator.addr,
        to = b.invite.header("to").unwrap(),
        from = b.invite.header("from").unwrap(),
        cid = b.invite.header("call-id").unwrap(),
        len = body.len(),
    );
    b.operator.send(b.invite.from, &text).await;
    b.operator.expect_ok_to("INFO", 3 * SEC).await;
}

/// Everything `socket` receives within `wait`.
async fn received(socket: &UdpSocket, wait: Duration) -> Vec<Rtp> {
    let until = Instant::now() + wait;
    let mut packets = Vec::new();
    while let Some((p, _)) = recv_rtp(socket, until.saturating_duration_since(Instant::now())).await
    {
        packets.push(p);
    }
    packets
}

/// The keys in the telephone-event packets among `packets`.
fn keys_in(packets: &[Rtp]) -> String {
    let mut detector = DtmfDetector::default();
    packets
        .iter()
        .filter(|p| p.pt == TE)
        .filter_map(|p| detector.on_packet(p.ts, &p.payload))
        .collect()
}

/// The μ-law audio among `packets`, decoded.
fn audio_in(packets: &[Rtp]) -> Vec<f64> {
    let law = Codec::Pcmu.law().unwrap();
    packets
        .iter()
        .filter(|p| p.pt == 0)
        .flat_map(|p| p.payload.iter().map(|&b| f64::from(law.decode(b))))
        .collect()
}

/// Amplitude of the `frequency` component of 8 kHz `samples` (Goertzel).
fn amplitude_at(samples: &[f64], frequency: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let coefficient = 2.0 * (2.0 * std::f64::consts::PI * frequency / 8000.0).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = x + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coefficient * s1 * s2;
    2.0 * power.max(0.0).sqrt() / samples.len() as f64
}

/// Whether the operator heard the confirmation: two 100 ms beeps at 1,400 Hz
/// with 100 ms of silence between them, in 15 frames.
fn assert_confirmation(packets: &[Rtp]) {
    let audio: Vec<&Rtp> = packets.iter().filter(|p| p.pt == 0).collect();
    assert_eq!(audio.len(), 15, "300 ms of tone: {audio:?}");
    let samples = audio_in(packets);
    let beep = |from_ms: usize| amplitude_at(&samples[from_ms * 8 + 80..from_ms * 8 + 720], 1400.0);
    // -10 dBm0 is about 7,200 of 32,767.
    assert!(beep(0) > 5000.0, "first beep: {}", beep(0));
    assert!(beep(100) < 100.0, "pause: {}", beep(100));
    assert!(beep(200) > 5000.0, "second beep: {}", beep(200));
    assert!(amplitude_at(&samples, 450.0) < 200.0, "not ringback");
}

/// Ends the call and returns the details (operator URIs) of its timeline's `report_requested` events.
async fn report_requests(mut b: Bridged) -> Vec<String> {
    b.caller.request("BYE").await;
    let bye = b.operator.expect_request("BYE", 10 * SEC).await;
    b.operator.respond(&bye, "200 OK", None, "", "").await;
    let record = b.sb.record(&b.caller.call_id).await;
    let mut client = RecordsServiceClient::connect(format!("http://{}", b.sb.records))
        .await
        .unwrap();
    let call = client
        .get_call(GetCallRequest {
            call_id: record.call_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    b.sb.stop().await;
    call.timeline
        .into_iter()
        .filter(|e| e.kind == "report_requested")
        .map(|e| e.detail)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_seven_by_rfc4733_requests_a_report_and_only_the_operator_hears_it() {
    let b = bridged((38100, 38199)).await;
    let operator_uri = format!("sip:operator@{}", b.operator.addr);
    send_key(&b.op_rtp, b.courtline_op_rtp, 10, 100, 8_000).await; // '*'
    send_key(&b.op_rtp, b.courtline_op_rtp, 7, 106, 9_600).await;
    let (at_operator, at_caller) = tokio::join!(
        received(&b.op_rtp, Duration::from_millis(800)),
        received(&b.caller.rtp, Duration::from_millis(1500)),
    );
    assert_confirmation(&at_operator);
    assert!(
        at_caller.iter().all(|p| p.pt != TE),
        "no key reaches the caller: {at_caller:?}"
    );
    assert!(
        amplitude_at(&audio_in(&at_caller), 1400.0) < 100.0,
        "no tone to the caller"
    );

    // A second request in the same call is recorded too.
    send_key(&b.op_rtp, b.courtline_op_rtp, 10, 200, 20_000).await;
    send_key(&b.op_rtp, b.courtline_op_rtp, 7, 206, 21_600).await;
    assert_confirmation(&received(&b.op_rtp, Duration::from_millis(800)).await);
    assert_eq!(
        report_requests(b).await,
        vec![operator_uri.clone(), operator_uri]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_seven_by_sip_info_requests_a_report_and_only_the_operator_hears_it() {
    let b = bridged((38200, 38299)).await;
    let operator_uri = format!("sip:operator@{}", b.operator.addr);
    operator_info(&b, 10, '*').await;
    operator_info(&b, 11, '7').await;
    let (at_operator, at_caller) = tokio::join!(
        received(&b.op_rtp, Duration::from_millis(800)),
        received(&b.caller.rtp, Duration::from_millis(1500)),
    );
    assert_confirmation(&at_operator);
    assert!(at_caller.iter().all(|p| p.pt != TE), "{at_caller:?}");
    assert!(amplitude_at(&audio_in(&at_caller), 1400.0) < 100.0);
    assert_eq!(report_requests(b).await, vec![operator_uri]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_keys_reach_the_caller_in_order_held_only_while_they_could_match() {
    let b = bridged((38300, 38399)).await;

    // A plain '5' passes at once.
    let sent = Instant::now();
    send_key(&b.op_rtp, b.courtline_op_rtp, 5, 100, 8_000).await;
    let at_caller = received(&b.caller.rtp, Duration::from_millis(600)).await;
    assert_eq!(keys_in(&at_caller), "5");
    let first = at_caller.iter().find(|p| p.pt == TE).unwrap();
    assert!(
        first.at - sent < Duration::from_millis(150),
        "{:?}",
        first.at - sent
    );

    // A lone '*' is held for key_timeout_ms, then passed on; the '5' after it at once.
    let sent = Instant::now();
    send_key(&b.op_rtp, b.courtline_op_rtp, 10, 200, 16_000).await;
    let at_caller = received(&b.caller.rtp, Duration::from_millis(800)).await;
    assert_eq!(keys_in(&at_caller), "*");
    let first = at_caller.iter().find(|p| p.pt == TE).unwrap();
    let held = first.at - sent;
    assert!(
        held >= Duration::from_millis(KEY_TIMEOUT_MS - 30)
            && held < Duration::from_millis(KEY_TIMEOUT_MS + 200),
        "'*' held {held:?}"
    );
    send_key(&b.op_rtp, b.courtline_op_rtp, 5, 300, 24_000).await;
    assert_eq!(
        keys_in(&received(&b.caller.rtp, Duration::from_millis(600)).await),
        "5"
    );

    // '*' then '5' before the timeout: both, in order, as soon as '5' comes.
    send_key(&b.op_rtp, b.courtline_op_rtp, 10, 400, 32_000).await;
    send_key(&b.op_rtp, b.courtline_op_rtp, 5, 406, 33_600).await;
    assert_eq!(
        keys_in(&received(&b.caller.rtp, Duration::from_millis(800)).await),
        "*5"
    );

    // The same by SIP INFO.
    operator_info(&b, 10, '*').await;
    operator_info(&b, 11, '5').await;
    assert_eq!(
        keys_in(&received(&b.caller.rtp, Duration::from_millis(800)).await),
        "*5"
    );

    // None of it was a report request.
    assert!(report_requests(b).await.is_empty());
}
