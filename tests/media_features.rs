//! Media features of issue #4 against the real service on loopback, with
//! Rust test peers: RTP inactivity timeout, RTCP figures in the record, early
//! media, and DTMF (RFC 4733 and SIP INFO) during the prompt and in the bridge.

mod support;

use std::sync::Arc;
use std::time::Duration;

use courtline::contract::pb::{CallRecord, EndReason};
use courtline::switchboard::media::codec::Codec;
use support::*;
use tokio::net::UdpSocket;
use tokio::time::Instant;

const SEC: Duration = Duration::from_secs(1);

fn reason(r: &CallRecord) -> EndReason {
    EndReason::try_from(r.end_reason).unwrap()
}

/// Sends PCMU packets with sequence numbers `seqs` (timestamps 160 apart per
/// number) from `socket` to `to`, pausing `pause_ms(seq)` after each.
async fn send_stream(
    socket: &UdpSocket,
    to: std::net::SocketAddr,
    ssrc: u32,
    seqs: impl IntoIterator<Item = u16>,
    pause_ms: impl Fn(u16) -> u64,
) {
    for seq in seqs {
        let packet = rtp_packet(0, seq, u32::from(seq) * 160, ssrc, seq == 0, &[0x55; 160]);
        socket.send_to(&packet, to).await.unwrap();
        tokio::time::sleep(Duration::from_millis(pause_ms(seq))).await;
    }
}

/// The operator peer answers `invite` with 200 OK and the SDP `body`, and takes the ACK.
async fn operator_answers(operator: &SipPeer, invite: &Sip, body: &str) {
    operator.answer_invite(invite, "op1", body).await;
}

/// A line whose one operator is `operator`, with a `prompt_ms` warning, on its own RTP ports.
fn line_with_operator(operator: &SipPeer, prompt_ms: u32, rtp_ports: (u16, u16)) -> Options {
    Options {
        operators: vec![format!("sip:operator@{}", operator.addr)],
        prompt_ms,
        rtp_ports,
        ..Options::default()
    }
}

/// The caller hangs up a bridged call; the operator peer takes courtline's BYE.
async fn hang_up_bridged(caller: &mut Caller, operator: &SipPeer) {
    caller.request("BYE").await;
    let bye = operator.expect_request("BYE", 10 * SEC).await;
    operator.respond(&bye, "200 OK", None, "", "").await;
}

/// An operator peer that answers the next INVITE at once (PCMU,
/// telephone-event); returns the INVITE.
async fn answer_operator(operator: &SipPeer, op_rtp: &UdpSocket) -> Sip {
    let invite = operator.expect_request("INVITE", 5 * SEC).await;
    operator_answers(
        operator,
        &invite,
        &sdp(op_rtp.local_addr().unwrap(), "0 101"),
    )
    .await;
    invite
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_whose_media_stops_is_hung_up_as_media_timeout() {
    let operator = SipPeer::bind().await;
    let op_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sb = TestSwitchboard::start(Options {
        media_extra: "rtp_timeout_s = 2".into(),
        ..line_with_operator(&operator, 400, (36000, 36099))
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    let ok = caller.call("0 101").await;
    let courtline_rtp = ok.sdp_rtp_addr();
    let caller_rtp = Arc::new(std::mem::replace(
        &mut caller.rtp,
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    ));

    // The caller talks for 3.5 s, longer than the timeout: packets keep the call up.
    let talker = {
        let socket = caller_rtp.clone();
        tokio::spawn(async move { send_stream(&socket, courtline_rtp, 0x77, 0..175, |_| 20).await })
    };
    answer_operator(&operator, &op_rtp).await;
    talker.await.unwrap();
    if let Some(msg) = caller.sip.recv(Duration::ZERO).await {
        assert_ne!(msg.method(), "BYE", "hung up while the caller was talking");
    }

    // Then silence: a BYE to both legs after about 2 s.
    let record = expect_media_timeout(&sb, &caller, &operator, Instant::now(), 1800).await;
    assert!(record.prompt_completed);
    assert!(record.operator_answered_at_ms > 0);
    assert!(record.rtp_packets_received >= 100);
    sb.stop().await;
}

/// Both legs get a BYE no sooner than `at_least_ms` after `silent_since`, and the
/// call is recorded as `media_timeout`; returns the record.
async fn expect_media_timeout(
    sb: &TestSwitchboard,
    caller: &Caller,
    operator: &SipPeer,
    silent_since: Instant,
    at_least_ms: u64,
) -> CallRecord {
    let bye = caller.sip.expect_request("BYE", 4 * SEC).await;
    let waited = silent_since.elapsed();
    assert!(
        waited >= Duration::from_millis(at_least_ms),
        "BYE only {waited:?} after the caller went silent"
    );
    caller.sip.respond(&bye, "200 OK", None, "", "").await;
    let op_bye = operator.expect_request("BYE", 2 * SEC).await;
    operator.respond(&op_bye, "200 OK", None, "", "").await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::MediaTimeout);
    record
}

/// No BYE has reached `caller` so far.
async fn assert_not_hung_up(caller: &Caller, when: &str) {
    while let Some(msg) = caller.sip.recv(Duration::ZERO).await {
        assert_ne!(msg.method(), "BYE", "hung up {when}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_caller_hears_a_warning_longer_than_the_timeout_and_is_timed_out_only_once_bridged(
) {
    let operator = SipPeer::bind().await;
    let op_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // A 2.7 s warning (lead-in included) against a 1 s inactivity timeout.
    let sb = TestSwitchboard::start(Options {
        media_extra: "rtp_timeout_s = 1".into(),
        ..line_with_operator(&operator, 2500, (37400, 37449))
    })
    .await;
    // The caller listens like a phone that suppresses silence without comfort
    // noise: it never sends a packet.
    let mut caller = Caller::new(sb.sip).await;
    caller.call("0").await;
    let invite = operator.expect_request("INVITE", 6 * SEC).await;
    assert_not_hung_up(&caller, "during the warning").await;
    // The operator's phone rings for longer than the timeout too.
    operator
        .respond(&invite, "180 Ringing", Some("op1"), "", "")
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_not_hung_up(&caller, "during the ringback").await;

    operator_answers(&operator, &invite, &sdp(op_rtp.local_addr().unwrap(), "0")).await;
    // Silent in the bridge too: that is a dead line, hung up after about 1 s.
    let record = expect_media_timeout(&sb, &caller, &operator, Instant::now(), 800).await;
    assert!(record.prompt_completed);
    assert_eq!(record.prompt_ms_sent, record.prompt_length_ms);
    assert!(record.operator_answered_at_ms > 0);
    assert_eq!(record.rtp_packets_received, 0);
    sb.stop().await;
}

/// An RTCP receiver report from `ssrc` with one block about `about`
/// (RFC 3550 §6.4.2), written by hand: cumulative loss `lost`, LSR/DLSR as given.
fn receiver_report(ssrc: u32, about: u32, lost: u32, lsr: u32, dlsr: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&about.to_be_bytes());
    p.extend_from_slice(&(lost & 0x00ff_ffff).to_be_bytes());
    for word in [0u32, 0, lsr, dlsr] {
        p.extend_from_slice(&word.to_be_bytes());
    }
    p
}

/// Plays the RTCP side of a peer: reports about courtline's stream `about`
/// (which makes courtline latch our RTCP address), waits for courtline's
/// sender report, then answers it `hold` later while claiming only `claimed`
/// of that delay (DLSR), so courtline measures a round trip of about
/// `hold - claimed`.
async fn answer_sender_report(
    rtcp: &UdpSocket,
    courtline_rtcp: std::net::SocketAddr,
    ssrc: u32,
    about: u32,
    lost: u32,
    hold: Duration,
    claimed: Duration,
) {
    rtcp.send_to(&receiver_report(ssrc, about, lost, 0, 0), courtline_rtcp)
        .await
        .unwrap();
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + 8 * SEC;
    let lsr = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (n, _) = tokio::time::timeout(left, rtcp.recv_from(&mut buf))
            .await
            .expect("no sender report from courtline within 8 s")
            .unwrap();
        if n >= 28 && buf[1] == 200 && buf[4..8] == about.to_be_bytes() {
            // The middle 32 bits of the SR's 64-bit NTP timestamp.
            break u32::from_be_bytes([buf[10], buf[11], buf[12], buf[13]]);
        }
    };
    tokio::time::sleep(hold).await;
    let dlsr = (claimed.as_micros() * 65_536 / 1_000_000) as u32;
    rtcp.send_to(
        &receiver_report(ssrc, about, lost, lsr, dlsr),
        courtline_rtcp,
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtcp_figures_of_both_legs_are_in_the_record() {
    let operator = SipPeer::bind().await;
    let op_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let op_rtcp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sb = TestSwitchboard::start(line_with_operator(&operator, 400, (36100, 36199))).await;
    let mut caller = Caller::new(sb.sip).await;
    let caller_rtcp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ok = caller.call("0").await;
    let courtline_rtp = ok.sdp_rtp_addr();
    let mut courtline_rtcp = courtline_rtp;
    courtline_rtcp.set_port(courtline_rtp.port() + 1);
    let (first, _) = recv_rtp(&caller.rtp, SEC).await.expect("prompt");
    let caller_rtp = Arc::new(std::mem::replace(
        &mut caller.rtp,
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    ));

    // The caller sends 100 packets with sequence numbers 50-54 missing, at
    // uneven intervals (10 ms, 30 ms, ...) against a steady 20 ms timestamp.
    let caller_talk = {
        let socket = caller_rtp.clone();
        tokio::spawn(async move {
            let seqs = (0u16..105).filter(|s| !(50..55).contains(s));
            send_stream(&socket, courtline_rtp, 0xca11, seqs, |seq| {
                10 + u64::from(seq % 2) * 20
            })
            .await;
        })
    };
    let caller_reports = answer_sender_report(
        &caller_rtcp,
        courtline_rtcp,
        0xca11,
        first.ssrc,
        7,
        Duration::from_millis(80),
        Duration::from_millis(20),
    );
    let operator_side = async {
        let invite = answer_operator(&operator, &op_rtp).await;
        let courtline_op_rtp = invite.sdp_rtp_addr();
        let mut courtline_op_rtcp = courtline_op_rtp;
        courtline_op_rtcp.set_port(courtline_op_rtp.port() + 1);
        // Courtline's stream towards the operator: the relayed caller audio.
        let (relayed, _) = recv_rtp(&op_rtp, 2 * SEC).await.expect("relayed RTP");
        let talk = send_stream(&op_rtp, courtline_op_rtp, 0x0b, 0..50, |_| 20);
        let reports = answer_sender_report(
            &op_rtcp,
            courtline_op_rtcp,
            0x0b,
            relayed.ssrc,
            0,
            Duration::from_millis(50),
            Duration::ZERO,
        );
        tokio::join!(talk, reports);
    };
    tokio::join!(caller_reports, operator_side);
    caller_talk.await.unwrap();
    // Let the last report be taken in before hanging up.
    tokio::time::sleep(Duration::from_millis(100)).await;

    hang_up_bridged(&mut caller, &operator).await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::CallerHungUp);

    let caller_leg = record.caller_media.expect("caller leg figures");
    assert_eq!(caller_leg.packets_received, 100);
    assert_eq!(
        caller_leg.packets_lost, 5,
        "sequence numbers 50-54 never came"
    );
    assert!(
        caller_leg.jitter_us >= 2_000,
        "uneven arrival shows as jitter: {} µs",
        caller_leg.jitter_us
    );
    assert_eq!(caller_leg.peer_reported_lost, Some(7));
    let rtt = caller_leg.rtt_us.expect("caller round trip from its RTCP");
    assert!((55_000..1_000_000).contains(&rtt), "caller RTT {rtt} µs");
    assert!(
        caller_leg.packets_sent >= 30 + 10,
        "prompt, ringback, relay"
    );
    assert_eq!(caller_leg.packets_sent, record.rtp_packets_sent);
    assert_eq!(caller_leg.packets_received, record.rtp_packets_received);

    let operator_leg = record.operator_media.expect("operator leg figures");
    assert_eq!(operator_leg.packets_received, 50);
    assert_eq!(operator_leg.packets_lost, 0);
    assert!(operator_leg.packets_sent > 0, "caller audio relayed");
    assert_eq!(operator_leg.peer_reported_lost, Some(0));
    let rtt = operator_leg
        .rtt_us
        .expect("operator round trip from its RTCP");
    assert!((45_000..1_000_000).contains(&rtt), "operator RTT {rtt} µs");
    sb.stop().await;
}

/// Waits for 200 to CANCEL and 487 to the INVITE; ACKs the 487.
async fn expect_cancelled(caller: &Caller) {
    let mut cancel_ok = false;
    let mut terminated = None;
    while terminated.is_none() || !cancel_ok {
        let msg = caller.sip.recv(3 * SEC).await.expect("answers to CANCEL");
        match (msg.status(), msg.header("cseq").unwrap_or("")) {
            (200, cseq) if cseq.ends_with("CANCEL") => cancel_ok = true,
            (487, cseq) if cseq.ends_with("INVITE") => terminated = Some(msg),
            (status, _) => assert!(status < 200, "unexpected {}", msg.first_line),
        }
    }
    let to = terminated.unwrap().header("to").unwrap().to_string();
    caller
        .ack(&to, &format!("z9hG4bK-inv-{}", caller.call_id))
        .await;
}

fn early_media_line(operator: &SipPeer, rtp_ports: (u16, u16)) -> Options {
    Options {
        line_extra: "answer_mode = \"early_media\"".into(),
        ..line_with_operator(operator, 600, rtp_ports)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_media_line_plays_the_warning_before_answering_and_answers_with_the_operator() {
    let operator = SipPeer::bind().await;
    let op_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sb = TestSwitchboard::start(early_media_line(&operator, (36200, 36299))).await;
    let mut caller = Caller::new(sb.sip).await;
    caller.invite("02112368", "0 101").await;
    let progress = caller.sip.expect_status(183, 2 * SEC).await;
    assert_eq!(progress.header("content-type"), Some("application/sdp"));
    assert!(
        progress.body.contains(" RTP/AVP 0 101"),
        "{}",
        progress.body
    );
    let courtline_rtp = progress.sdp_rtp_addr();

    // The whole warning as early media, byte-exact, from the 183's address.
    let count = sb.playlist.frame_count();
    let mut prompt = Vec::with_capacity(count);
    for i in 0..count {
        let (p, from) = recv_rtp(&caller.rtp, SEC)
            .await
            .unwrap_or_else(|| panic!("early media packet {i} missing"));
        assert_eq!(from, courtline_rtp);
        assert_eq!(p.payload, sb.playlist.frame(Codec::Pcmu, i), "frame {i}");
        prompt.push(p);
    }
    assert!(prompt[0].marker);

    // Ringback while the operator rings; still no final response to the caller.
    let invite = operator.expect_request("INVITE", 2 * SEC).await;
    operator
        .respond(&invite, "180 Ringing", Some("op1"), "", "")
        .await;
    let mut ringback = 0;
    let mut last = prompt.last().unwrap().clone();
    while ringback < 10 {
        let (p, _) = recv_rtp(&caller.rtp, SEC).await.expect("ringback");
        assert_eq!(
            p.ssrc, prompt[0].ssrc,
            "one stream from warning to ringback"
        );
        assert_eq!(p.seq, last.seq.wrapping_add(1));
        if p.payload.iter().any(|&b| b != 0xff && b != 0x7f) {
            ringback += 1;
        }
        last = p;
    }
    assert!(
        caller.sip.recv(Duration::ZERO).await.is_none(),
        "the caller is not answered while the operator rings"
    );

    // The operator answers: now the caller gets its 200 OK, with the 183's SDP.
    operator_answers(
        &operator,
        &invite,
        &sdp(op_rtp.local_addr().unwrap(), "0 101"),
    )
    .await;
    let ok = caller.sip.expect_status(200, 2 * SEC).await;
    assert_eq!(
        ok.body, progress.body,
        "same SDP (address, port, o= version) in the 183 and the 200"
    );
    caller.to = ok.header("to").unwrap().to_string();
    let to = caller.to.clone();
    caller.ack(&to, "z9hG4bK-ack-1").await;

    // The operator's voice continues the caller's one stream.
    let courtline_op_rtp = invite.sdp_rtp_addr();
    send_stream(&op_rtp, courtline_op_rtp, 0x0b, 0..10, |_| 20).await;
    let mut relayed = 0;
    while let Some((p, _)) = recv_rtp(&caller.rtp, Duration::from_millis(300)).await {
        if p.payload == [0x55; 160] {
            assert_eq!(p.ssrc, prompt[0].ssrc);
            relayed += 1;
        }
    }
    assert!(relayed >= 8, "operator audio relayed: {relayed}");

    hang_up_bridged(&mut caller, &operator).await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::CallerHungUp);
    assert!(record.prompt_completed);
    assert_eq!(record.sip_final_status, 200);
    assert!(
        record.answered_at_ms >= record.prompt_ended_at_ms,
        "answered after the warning, not before: {record:?}"
    );
    assert!(record.answered_at_ms >= record.operator_answered_at_ms);
    assert!(record.prompt_started_at_ms < record.prompt_ended_at_ms);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_early_media_is_answered_487_and_recorded() {
    let operator = SipPeer::bind().await;
    let sb = TestSwitchboard::start(early_media_line(&operator, (36300, 36399))).await;

    // During the warning.
    let mut caller = Caller::new(sb.sip).await;
    caller.invite("02112368", "0").await;
    caller.sip.expect_status(183, 2 * SEC).await;
    for _ in 0..15 {
        recv_rtp(&caller.rtp, SEC).await.expect("early media");
    }
    caller.request("CANCEL").await;
    expect_cancelled(&caller).await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::CallerHungUpDuringPrompt);
    assert_eq!(record.sip_final_status, 487);
    assert_eq!(record.answered_at_ms, 0);
    assert!(!record.prompt_completed);
    assert!(
        (300..800).contains(&record.prompt_ms_sent),
        "{}",
        record.prompt_ms_sent
    );
    // The early media stops with the call.
    while recv_rtp(&caller.rtp, Duration::from_millis(300))
        .await
        .is_some()
    {}

    // During the ringback: the operator's INVITE is cancelled as well.
    let mut caller = Caller::new(sb.sip).await;
    caller.invite("02112368", "0").await;
    caller.sip.expect_status(183, 2 * SEC).await;
    let invite = operator.expect_request("INVITE", 10 * SEC).await;
    operator
        .respond(&invite, "180 Ringing", Some("op2"), "", "")
        .await;
    caller.request("CANCEL").await;
    expect_cancelled(&caller).await;
    let cancel = operator.expect_request("CANCEL", 2 * SEC).await;
    operator.respond(&cancel, "200 OK", None, "", "").await;
    operator
        .respond(&invite, "487 Request Terminated", Some("op2"), "", "")
        .await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::CallerHungUp);
    assert_eq!(record.sip_final_status, 487);
    assert_eq!(record.answered_at_ms, 0);
    assert!(record.prompt_completed);
    sb.stop().await;
}

/// An RFC 4733 payload: event, end bit with volume 10, duration.
fn key_payload(event: u8, end: bool, duration: u16) -> [u8; 4] {
    let [hi, lo] = duration.to_be_bytes();
    [event, if end { 0x8a } else { 0x0a }, hi, lo]
}

/// Sends key `event` as a phone does (RFC 4733): three updates, then the end
/// packet three times, all with timestamp `ts`; sequence numbers from `seq`.
async fn send_key(
    socket: &UdpSocket,
    to: std::net::SocketAddr,
    pt: u8,
    event: u8,
    seq: u16,
    ts: u32,
) {
    let steps = [
        (160, false),
        (320, false),
        (480, false),
        (640, true),
        (640, true),
        (640, true),
    ];
    for (i, (duration, end)) in steps.into_iter().enumerate() {
        let payload = key_payload(event, end, duration);
        let packet = rtp_packet(pt, seq + i as u16, ts, 0x4b, i == 0, &payload);
        socket.send_to(&packet, to).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The telephone-event packets (payload type `pt`) `socket` receives within `wait`.
async fn keys_received(socket: &UdpSocket, pt: u8, wait: Duration) -> Vec<Rtp> {
    let until = Instant::now() + wait;
    let mut keys = Vec::new();
    while let Some((p, _)) = recv_rtp(socket, until.saturating_duration_since(Instant::now())).await
    {
        if p.pt == pt {
            keys.push(p);
        }
    }
    keys
}

/// The operator peer sends an in-dialog request on the dialog `invite` opened.
async fn operator_info(
    operator: &SipPeer,
    invite: &Sip,
    cseq: u32,
    content_type: &str,
    body: &str,
) {
    let target = invite
        .header("contact")
        .unwrap()
        .trim_matches(|c| c == '<' || c == '>')
        .to_string();
    let text = format!(
        "INFO {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-opinfo-{cseq}\r\nMax-Forwards: 70\r\nFrom: {to};tag=op1\r\nTo: {from}\r\nCall-ID: {cid}\r\nCSeq: {cseq} INFO\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\r\n{body}",
        me = operator.addr,
        to = invite.header("to").unwrap(),
        from = invite.header("from").unwrap(),
        cid = invite.header("call-id").unwrap(),
        len = body.len(),
    );
    operator.send(invite.from, &text).await;
}

/// A call from a caller peer (PCMU and telephone-event) that reached its
/// operator peer: the INVITE is in, not yet answered.
struct OperatorInvited {
    /// The operator's SIP peer.
    operator: SipPeer,
    /// The operator's RTP socket.
    op_rtp: UdpSocket,
    /// The switchboard.
    sb: TestSwitchboard,
    /// The caller, answered.
    caller: Caller,
    /// Where courtline takes the caller's RTP.
    courtline_rtp: std::net::SocketAddr,
    /// courtline's INVITE to the operator.
    invite: Sip,
}

async fn call_until_operator_invited(rtp_ports: (u16, u16)) -> OperatorInvited {
    let operator = SipPeer::bind().await;
    let op_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sb = TestSwitchboard::start(line_with_operator(&operator, 200, rtp_ports)).await;
    let mut caller = Caller::new(sb.sip).await;
    let courtline_rtp = caller.call("0 101").await.sdp_rtp_addr();
    let invite = operator.expect_request("INVITE", 5 * SEC).await;
    OperatorInvited {
        operator,
        op_rtp,
        sb,
        caller,
        courtline_rtp,
        invite,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_in_the_bridge_reach_the_other_leg_in_its_own_payload_type() {
    let OperatorInvited {
        operator,
        op_rtp,
        sb,
        mut caller,
        courtline_rtp,
        invite,
    } = call_until_operator_invited((36400, 36499)).await;
    // The operator answers with telephone-event as 96: courtline must send it
    // keys as 96, and still take the operator's own as 101 (its offer).
    assert!(invite.body.contains("a=rtpmap:101 telephone-event/8000"));
    let body = format!(
        "v=0\r\no=op 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0 96\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\n",
        op_rtp.local_addr().unwrap().port()
    );
    operator_answers(&operator, &invite, &body).await;
    let courtline_op_rtp = invite.sdp_rtp_addr();
    // The operator's first packet latches courtline onto its address.
    send_stream(&op_rtp, courtline_op_rtp, 0x0b, 0..3, |_| 20).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // RFC 4733 from the caller: relayed to the operator as 96, payloads as sent.
    send_key(&caller.rtp, courtline_rtp, 101, 5, 500, 80_000).await;
    let keys = keys_received(&op_rtp, 96, Duration::from_millis(500)).await;
    assert_eq!(keys.len(), 6, "{keys:?}");
    let sent: Vec<[u8; 4]> = [
        (160, false),
        (320, false),
        (480, false),
        (640, true),
        (640, true),
        (640, true),
    ]
    .into_iter()
    .map(|(d, e)| key_payload(5, e, d))
    .collect();
    let got: Vec<Vec<u8>> = keys.iter().map(|k| k.payload.clone()).collect();
    assert_eq!(got, sent.iter().map(|p| p.to_vec()).collect::<Vec<_>>());
    assert!(
        keys.iter().all(|k| k.ts == keys[0].ts),
        "one timestamp per key"
    );
    assert!(keys[0].marker && keys[1..].iter().all(|k| !k.marker));
    assert!(keys
        .windows(2)
        .all(|w| w[1].seq == w[0].seq.wrapping_add(1)));

    // RFC 4733 from the operator (as 101, courtline's offer): to the caller as
    // 101, played anew once the report key matcher ([reports]) let it pass.
    send_key(&op_rtp, courtline_op_rtp, 101, 9, 900, 7_000).await;
    let keys = keys_received(&caller.rtp, 101, Duration::from_millis(500)).await;
    assert_eq!(keys.len(), 10, "{keys:?}");
    assert!(keys.iter().all(|k| k.payload[0] == 9 && k.ts == keys[0].ts));
    assert_eq!(keys[9].payload, key_payload(9, true, 1280));

    // SIP INFO from the caller: 200, and generated RFC 4733 packets to the operator.
    caller
        .request_with_body(
            "INFO",
            "application/dtmf-relay",
            "Signal=3\r\nDuration=160\r\n",
        )
        .await;
    caller.sip.expect_ok_to("INFO", 3 * SEC).await;
    let keys = keys_received(&op_rtp, 96, Duration::from_millis(600)).await;
    assert_eq!(keys.len(), 10, "{keys:?}");
    assert!(keys[0].marker);
    assert!(keys.iter().all(|k| k.payload[0] == 3 && k.ts == keys[0].ts));
    assert_eq!(keys[0].payload, key_payload(3, false, 160));
    assert!(keys[7..]
        .iter()
        .all(|k| k.payload == key_payload(3, true, 1280)));

    // SIP INFO from the operator (application/dtmf): to the caller as 101.
    operator_info(&operator, &invite, 10, "application/dtmf", "#").await;
    operator.expect_ok_to("INFO", 3 * SEC).await;
    let keys = keys_received(&caller.rtp, 101, Duration::from_millis(600)).await;
    assert_eq!(keys.len(), 10, "{keys:?}");
    assert!(keys.iter().all(|k| k.payload[0] == 11));

    hang_up_bridged(&mut caller, &operator).await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(
        record.dtmf_during_prompt, "",
        "keys in the bridge are not the prompt's"
    );
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_for_an_operator_without_telephone_event_are_dropped_and_the_call_goes_on() {
    let OperatorInvited {
        operator,
        op_rtp,
        sb,
        mut caller,
        courtline_rtp,
        invite,
    } = call_until_operator_invited((36500, 36599)).await;
    let body = sdp(op_rtp.local_addr().unwrap(), "0");
    operator_answers(&operator, &invite, &body).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    send_key(&caller.rtp, courtline_rtp, 101, 5, 500, 80_000).await;
    caller
        .request_with_body("INFO", "application/dtmf-relay", "Signal=7\r\n")
        .await;
    caller.sip.expect_ok_to("INFO", 3 * SEC).await;
    send_stream(&caller.rtp, courtline_rtp, 0x4b, 600..610, |_| 20).await;
    let until = Instant::now() + Duration::from_millis(600);
    let mut audio = 0;
    while let Some((p, _)) =
        recv_rtp(&op_rtp, until.saturating_duration_since(Instant::now())).await
    {
        assert_eq!(
            p.pt, 0,
            "only audio reaches an operator without telephone-event"
        );
        audio += 1;
    }
    assert!(audio >= 8, "the caller's audio still flows: {audio}");

    hang_up_bridged(&mut caller, &operator).await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::CallerHungUp);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_during_the_prompt_by_rtp_or_sip_info_are_recorded_and_do_not_skip_it() {
    let operator = SipPeer::bind().await;
    let sb = TestSwitchboard::start(line_with_operator(&operator, 1000, (36600, 36699))).await;
    let mut caller = Caller::new(sb.sip).await;
    let ok = caller.call("0 101").await;
    let courtline_rtp = ok.sdp_rtp_addr();
    let count = sb.playlist.frame_count();
    for i in 0..count {
        let (p, _) = recv_rtp(&caller.rtp, SEC).await.expect("prompt packet");
        assert_eq!(p.payload, sb.playlist.frame(Codec::Pcmu, i), "frame {i}");
        match i {
            10 => send_key(&caller.rtp, courtline_rtp, 101, 1, 10, 3_000).await,
            20 => {
                caller
                    .request_with_body(
                        "INFO",
                        "application/dtmf-relay",
                        "Signal=2\r\nDuration=200\r\n",
                    )
                    .await;
                caller.sip.expect_ok_to("INFO", 3 * SEC).await;
            }
            25 => {
                caller
                    .request_with_body("INFO", "application/dtmf", "#")
                    .await;
                caller.sip.expect_ok_to("INFO", 3 * SEC).await;
            }
            // The same key again: a new event timestamp, a second press.
            35 => send_key(&caller.rtp, courtline_rtp, 101, 1, 20, 3_000 + 160 * 30).await,
            40 => {
                // Not a key: answered 200, recorded nothing.
                caller
                    .request_with_body("INFO", "application/media_control+xml", "<media_control/>")
                    .await;
                caller.sip.expect_ok_to("INFO", 3 * SEC).await;
            }
            _ => {}
        }
    }
    let invite = operator.expect_request("INVITE", 2 * SEC).await;
    operator
        .respond(&invite, "486 Busy Here", Some("op"), "", "")
        .await;
    let bye = caller.sip.expect_request("BYE", 10 * SEC).await;
    caller.sip.respond(&bye, "200 OK", None, "", "").await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(record.dtmf_during_prompt, "12#1");
    assert!(record.prompt_completed, "keys never skip the warning");
    assert_eq!(reason(&record), EndReason::OperatorBusy);
    sb.stop().await;
}
