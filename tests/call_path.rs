//! The whole call path against the real service on loopback: SIP over UDP,
//! RTP on real sockets, records through gRPC into SQLite.

mod support;

use std::time::Duration;

use courtline::contract::pb::{CallRecord, EndReason};
use courtline::switchboard::media::codec::{Codec, Law};
use support::*;
use tokio::net::UdpSocket;

const SEC: Duration = Duration::from_secs(1);

fn reason(r: &CallRecord) -> EndReason {
    EndReason::try_from(r.end_reason).unwrap()
}

/// 20 packets of μ-law `byte` from `socket` to `to`, one every 20 ms, as one
/// talkspurt of stream `ssrc` starting at sequence number `first_seq`.
async fn talk(socket: &UdpSocket, to: std::net::SocketAddr, ssrc: u32, first_seq: u16, byte: u8) {
    for i in 0..20u16 {
        let packet = rtp_packet(
            0,
            first_seq + i,
            160 * u32::from(first_seq + i),
            ssrc,
            i == 0,
            &[byte; 160],
        );
        socket.send_to(&packet, to).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_hears_whole_prompt_then_ringback_then_operator_and_call_is_recorded() {
    let operator = SipPeer::bind().await;
    let op_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:operator@{}", operator.addr)],
        rtp_ports: (30000, 30099),
        ..Options::default()
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    caller.invite("02112368", "0 8 101").await;
    let trying = caller.sip.recv(SEC).await.expect("100 Trying");
    assert_eq!(trying.status(), 100, "{}", trying.first_line);
    let ok = caller.sip.expect_status(200, 2 * SEC).await;
    assert!(
        ok.body.contains("m=audio ") && ok.body.contains(" RTP/AVP 0 101"),
        "PCMU chosen (caller's first), telephone-event kept:\n{}",
        ok.body
    );
    assert_eq!(ok.header("content-type"), Some("application/sdp"));
    let courtline_rtp = ok.sdp_rtp_addr();
    caller.to = ok.header("to").unwrap().to_string();
    let to = caller.to.clone();
    caller.ack(&to, "z9hG4bK-ack-1").await;

    // The prompt: every frame, byte-exact, in order, one stream.
    let frames = &sb.playlist;
    let count = frames.frame_count();
    assert_eq!(count, (200 + 1000) / 20);
    let mut prompt_packets = Vec::with_capacity(count);
    for i in 0..count {
        let (p, from) = recv_rtp(&caller.rtp, SEC)
            .await
            .unwrap_or_else(|| panic!("prompt packet {i} missing"));
        assert_eq!(
            from, courtline_rtp,
            "symmetric RTP: sent from the port in the SDP"
        );
        assert_eq!(p.pt, 0);
        assert_eq!(
            p.payload,
            frames.frame(Codec::Pcmu, i),
            "prompt frame {i} differs"
        );
        prompt_packets.push(p);
    }
    let first = &prompt_packets[0];
    assert!(first.marker, "first prompt packet starts a talkspurt");
    for (i, p) in prompt_packets.iter().enumerate().skip(1) {
        assert!(!p.marker);
        assert_eq!(p.ssrc, first.ssrc);
        assert_eq!(
            p.seq,
            first.seq.wrapping_add(i as u16),
            "no gaps in sequence"
        );
        // +160 per 20 ms packet; on a machine so loaded that the pacer wakes a
        // whole slot late, the skipped slot shows as +320 (never a burst).
        let step = p.ts.wrapping_sub(prompt_packets[i - 1].ts);
        assert!(
            step >= 160 && step % 160 == 0,
            "timestamp step {step} at packet {i}"
        );
    }
    // Paced over the prompt's 1.2 s, not sent in a burst. Only a lower bound,
    // and a loose one: packets that queue while this test is descheduled are
    // read together, which shortens the spread seen here by that delay.
    let spread = prompt_packets[count - 1].at - first.at;
    assert!(
        spread >= Duration::from_millis(20 * (count as u64 - 1) / 2),
        "paced, not burst: {spread:?}"
    );

    // The operator is called only now; the caller hears ringback meanwhile.
    let invite = operator.expect_request("INVITE", 2 * SEC).await;
    assert!(
        invite.header("from").unwrap().contains("13800138000"),
        "operator sees the caller's number"
    );
    operator
        .respond(&invite, "180 Ringing", Some("op1"), "", "")
        .await;
    let last_prompt = prompt_packets.last().unwrap().clone();
    let mut ringback = Vec::new();
    while ringback.len() < 10 {
        let (p, _) = recv_rtp(&caller.rtp, SEC).await.expect("ringback packets");
        assert_eq!(p.ssrc, first.ssrc, "one stream across prompt and ringback");
        if p.payload.iter().any(|&b| b != 0xff && b != 0x7f) {
            ringback.push(p);
        }
    }
    // Ringback is the very next packet after the prompt's last, tone from its
    // first frame: the engine switches at the next pacer slot, without waiting
    // for the call task. (Arrival times would measure this test's own delay in
    // answering the INVITE, since the packets queue in the socket meanwhile.)
    assert_eq!(
        ringback[0].seq,
        last_prompt.seq.wrapping_add(1),
        "no packet, silent or otherwise, between prompt and ringback"
    );
    let step = ringback[0].ts.wrapping_sub(last_prompt.ts);
    // In the stream's own clock (the engine's pacer slots): at most 100 ms.
    assert!(
        (160..=800).contains(&step) && step % 160 == 0,
        "ringback timestamp step {step} after the prompt"
    );
    assert!(ringback
        .windows(2)
        .all(|w| w[1].seq == w[0].seq.wrapping_add(1)));

    // The operator answers: audio flows both ways through the relay.
    let op_sdp = sdp(op_rtp.local_addr().unwrap(), "0");
    let contact = format!(
        "Contact: <sip:operator@{}>\r\nContent-Type: application/sdp\r\n",
        operator.addr
    );
    operator
        .respond(&invite, "200 OK", Some("op1"), &contact, &op_sdp)
        .await;
    operator.expect_request("ACK", 2 * SEC).await;
    let courtline_op_rtp = invite.sdp_rtp_addr();
    // The operator speaks first: its packets wait in courtline's operator
    // socket until the bridge is up, so all of them reach the caller however
    // late the call task gets to the 200.
    talk(&op_rtp, courtline_op_rtp, 0xabcdef, 1000, 0x11).await;
    let mut relayed_to_caller = Vec::new();
    while let Some((p, _)) = recv_rtp(&caller.rtp, Duration::from_millis(500)).await {
        if p.payload == [0x11; 160] {
            relayed_to_caller.push(p);
        }
    }
    assert_eq!(
        relayed_to_caller.len(),
        20,
        "operator audio reached the caller"
    );
    assert!(
        relayed_to_caller.iter().all(|p| p.ssrc == first.ssrc),
        "caller keeps hearing one SSRC"
    );
    assert!(
        relayed_to_caller[0].marker,
        "marker bit at the source switch"
    );
    // Now that the bridge is known to be up, the caller answers.
    talk(&caller.rtp, courtline_rtp, 0x123456, 7000, 0x22).await;
    let mut relayed_to_operator = 0;
    while let Some((p, _)) = recv_rtp(&op_rtp, Duration::from_millis(500)).await {
        if p.payload == [0x22; 160] {
            relayed_to_operator += 1;
        }
    }
    assert_eq!(relayed_to_operator, 20, "caller audio reached the operator");

    // Caller hangs up: both legs end.
    caller.hang_up().await;
    let bye = operator.expect_request("BYE", 2 * SEC).await;
    operator.respond(&bye, "200 OK", None, "", "").await;

    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::CallerHungUp);
    assert!(record.prompt_completed);
    assert_eq!(record.prompt_sha256, sb.playlist.prompts()[0].sha256);
    assert_eq!(record.prompt_id, "test");
    assert_eq!(record.prompt_length_ms, 1200);
    assert_eq!(record.prompt_ms_sent, 1200);
    assert_eq!(record.caller_display_name, "张三");
    assert_eq!(record.caller_number, "13800138000");
    assert_eq!(record.court_name, "上海市第一中级人民法院");
    assert_eq!(record.line_number, "02112368");
    assert_eq!(record.codec, "PCMU");
    assert_eq!(record.user_agent, "courtline-test-caller");
    assert_eq!(record.caller_source, caller.sip.addr.to_string());
    assert_eq!(record.sip_final_status, 200);
    assert_eq!(
        record.operator_uri,
        format!("sip:operator@{}", operator.addr)
    );
    assert!(record.operator_answered_at_ms >= record.prompt_ended_at_ms);
    assert!(record.prompt_ended_at_ms - record.prompt_started_at_ms >= 1100);
    assert!(record.ended_at_ms >= record.operator_answered_at_ms);
    assert!(record.rtp_packets_sent >= count as u64 + 10 + 18);
    assert!(record.rtp_packets_received >= 20);
    uuid::Uuid::parse_str(&record.call_id).unwrap();
    sb.stop().await;
}

/// Once the caller ACKed the 200 OK, the endpoint keeps only a short copy of
/// it for the rest of 64·T1 (`sip/caller_invites`): the INVITE sent again
/// (same branch) gets that 200 again, without SDP but with its Contact, and
/// starts no second call; an INVITE with the call's Call-ID on another
/// branch (a merged request) gets 482; the call goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_again_after_the_ack_starts_no_second_call() {
    let operator = SipPeer::bind().await;
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:operator@{}", operator.addr)],
        prompt_ms: 3000,
        rtp_ports: (30200, 30299),
        ..Options::default()
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    caller.call("0").await;
    for _ in 0..10 {
        recv_rtp(&caller.rtp, SEC).await.expect("prompt packet");
    }

    caller.invite("02112368", "0").await;
    let again = caller.sip.expect_status(200, 2 * SEC).await;
    assert_eq!(again.header("content-length"), Some("0"), "{again:?}");
    assert!(again.header("contact").is_some(), "{again:?}");
    assert_eq!(again.header("to"), Some(caller.to.as_str()));

    let line = format!("<sip:02112368@{}>", sb.sip);
    let merged = RawRequest::new(
        "INVITE",
        format_args!("sip:02112368@{}", sb.sip),
        caller.sip.addr,
        "z9hG4bK-merged",
    )
    .dialog(&caller.from, &line, &caller.call_id)
    .cseq(1)
    .header(
        "Contact",
        format_args!("<sip:13800138000@{}>", caller.sip.addr),
    )
    .body(
        "application/sdp",
        &sdp(caller.rtp.local_addr().unwrap(), "0"),
    )
    .text();
    caller.sip.send(sb.sip, &merged).await;
    let refused = caller.sip.expect_status(482, 2 * SEC).await;
    assert_eq!(refused.header("call-id"), Some(caller.call_id.as_str()));

    for _ in 0..10 {
        recv_rtp(&caller.rtp, SEC)
            .await
            .expect("the prompt goes on");
    }
    caller.hang_up().await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::CallerHungUpDuringPrompt);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_up_during_prompt_never_calls_the_operator() {
    let operator = SipPeer::bind().await;
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:operator@{}", operator.addr)],
        prompt_ms: 3000,
        rtp_ports: (30100, 30199),
        ..Options::default()
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    caller.call("8 0 101").await;
    let mut received = 0;
    while received < 25 {
        let (p, _) = recv_rtp(&caller.rtp, SEC).await.expect("prompt packet");
        assert_eq!(p.pt, 8, "PCMA, the caller's first choice");
        received += 1;
    }
    caller.hang_up().await;
    // (OPTIONS keep-alives may arrive; an INVITE must not.)
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Some(msg) = operator
        .recv(quiet_until.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        assert_ne!(msg.method(), "INVITE", "no INVITE to the operator");
    }
    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::CallerHungUpDuringPrompt);
    assert!(!record.prompt_completed);
    let heard_ms = received * 20;
    assert!(
        record.prompt_ms_sent >= heard_ms && record.prompt_ms_sent <= heard_ms + 200,
        "prompt_ms_sent {} vs {} ms heard",
        record.prompt_ms_sent,
        heard_ms
    );
    assert_eq!(record.operator_uri, "");
    assert_eq!(record.codec, "PCMA");
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_answer_gets_487_and_is_recorded_as_abandoned() {
    let sb = TestSwitchboard::start(Options {
        answer_delay_ms: 3000,
        rtp_ports: (30300, 30399),
        ..Options::default()
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    caller.invite("02112368", "0").await;
    caller.sip.expect_status(180, 2 * SEC).await;
    caller.request("CANCEL").await;
    let mut got_cancel_ok = false;
    let mut got_487 = None;
    while got_487.is_none() || !got_cancel_ok {
        let msg = caller.sip.recv(2 * SEC).await.expect("CANCEL answers");
        match (msg.status(), msg.header("cseq").unwrap_or("")) {
            (200, c) if c.ends_with("CANCEL") => got_cancel_ok = true,
            (487, c) if c.ends_with("INVITE") => got_487 = Some(msg),
            (s, _) => assert!(s < 200, "unexpected {}", msg.first_line),
        }
    }
    let to = got_487.unwrap().header("to").unwrap().to_string();
    let branch = format!("z9hG4bK-inv-{}", caller.call_id);
    caller.ack(&to, &branch).await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::CancelledBeforeAnswer);
    assert_eq!(record.sip_final_status, 487);
    assert_eq!(record.answered_at_ms, 0);
    assert!(!record.prompt_completed);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_line_and_no_common_codec_are_refused_and_recorded() {
    let sb = TestSwitchboard::start(Options {
        rtp_ports: (30400, 30499),
        ..Options::default()
    })
    .await;
    let caller = Caller::new(sb.sip).await;
    caller.invite("99999999", "0").await;
    caller.sip.expect_status(404, 2 * SEC).await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::Rejected);
    assert_eq!(record.sip_final_status, 404);
    assert_eq!(record.line_number, "99999999");

    let caller = Caller::new(sb.sip).await;
    caller.invite("02112368", "18").await;
    let refused = caller.sip.expect_status(488, 2 * SEC).await;
    assert!(refused
        .header("warning")
        .is_some_and(|w| w.starts_with("305")));
    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::Rejected);
    assert_eq!(record.sip_final_status, 488);
    assert_eq!(record.court_name, "上海市第一中级人民法院");
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_that_never_answers_times_out_and_caller_gets_bye() {
    let operator = SipPeer::bind().await;
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:operator@{}", operator.addr)],
        ring_timeout_s: 1,
        prompt_ms: 200,
        rtp_ports: (30500, 30599),
        ..Options::default()
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    caller.call("0").await;
    let invite = operator.expect_request("INVITE", 10 * SEC).await;
    operator
        .respond(&invite, "180 Ringing", Some("op"), "", "")
        .await;
    let cancel = operator.expect_request("CANCEL", 10 * SEC).await;
    operator
        .respond(&cancel, "200 OK", Some("op"), "", "")
        .await;
    operator
        .respond(&invite, "487 Request Terminated", Some("op"), "", "")
        .await;
    let bye = caller.sip.expect_request("BYE", 10 * SEC).await;
    caller.sip.respond(&bye, "200 OK", None, "", "").await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::NoAnswer);
    assert!(record.prompt_completed);
    assert_eq!(record.operator_answered_at_ms, 0);
    let rang_ms = record.ended_at_ms - record.prompt_ended_at_ms;
    assert!((900..3000).contains(&rang_ms), "rang {rang_ms} ms");
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hunt_list_moves_on_from_a_busy_operator() {
    let busy = SipPeer::bind().await;
    let second = SipPeer::bind().await;
    let second_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sb = TestSwitchboard::start(Options {
        operators: vec![
            format!("sip:desk1@{}", busy.addr),
            format!("sip:desk2@{}", second.addr),
        ],
        prompt_ms: 200,
        rtp_ports: (30600, 30699),
        ..Options::default()
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    caller.call("0").await;
    let invite = busy.expect_request("INVITE", 10 * SEC).await;
    busy.respond(&invite, "486 Busy Here", Some("b"), "", "")
        .await;
    let invite = second.expect_request("INVITE", 10 * SEC).await;
    let contact = format!(
        "Contact: <sip:desk2@{}>\r\nContent-Type: application/sdp\r\n",
        second.addr
    );
    second
        .respond(
            &invite,
            "200 OK",
            Some("s"),
            &contact,
            &sdp(second_rtp.local_addr().unwrap(), "8"),
        )
        .await;
    second.expect_request("ACK", 2 * SEC).await;
    // The operator (PCMA) talks to a PCMU caller: courtline transcodes.
    let target = invite.sdp_rtp_addr();
    let alaw = Law::A.encode(1000);
    for i in 0..10u16 {
        second_rtp
            .send_to(
                &rtp_packet(8, i, 160 * u32::from(i), 9, false, &[alaw; 160]),
                target,
            )
            .await
            .unwrap();
    }
    let mut transcoded = 0;
    while let Some((p, _)) = recv_rtp(&caller.rtp, Duration::from_millis(500)).await {
        if p.pt == 0 && p.payload == [Law::Mu.encode(Law::A.decode(alaw)); 160] {
            transcoded += 1;
        }
    }
    assert_eq!(transcoded, 10);
    // The operator hangs up.
    let bye = RawRequest::new(
        "BYE",
        format_args!("sip:courtline@{}", sb.sip),
        second.addr,
        "z9hG4bK-opbye",
    )
    .dialog(
        &format!("{};tag=s", invite.header("to").unwrap()),
        invite.header("from").unwrap(),
        invite.header("call-id").unwrap(),
    )
    .cseq(2)
    .text();
    second.send(sb.sip, &bye).await;
    let ok = second.expect_status(200, 2 * SEC).await;
    assert!(ok.header("cseq").unwrap().ends_with("BYE"));
    let caller_bye = caller.sip.expect_request("BYE", 10 * SEC).await;
    caller
        .sip
        .respond(&caller_bye, "200 OK", None, "", "")
        .await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::OperatorHungUp);
    assert_eq!(record.operator_uri, format!("sip:desk2@{}", second.addr));
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_capacity_gets_503_with_retry_after() {
    let operator = SipPeer::bind().await;
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:operator@{}", operator.addr)],
        max_calls: 1,
        prompt_ms: 3000,
        rtp_ports: (30700, 30799),
        ..Options::default()
    })
    .await;
    let mut first = Caller::new(sb.sip).await;
    first.call("0").await;
    let second = Caller::new(sb.sip).await;
    second.invite("02112368", "0").await;
    let busy = second.sip.expect_status(503, 2 * SEC).await;
    assert_eq!(busy.header("retry-after"), Some("7"));
    let record = sb.record(&second.call_id).await;
    assert_eq!(record.sip_final_status, 503);
    // A load balancer's (Kamailio's) OPTIONS probe: 503 while full, so new
    // calls go to other nodes; 200 again once a call has ended.
    let prober = SipPeer::bind().await;
    let probe = |cid: &str| {
        RawRequest::new(
            "OPTIONS",
            format_args!("sip:{}", sb.sip),
            prober.addr,
            &format!("z9hG4bK-{cid}"),
        )
        .dialog(
            &format!("<sip:kamailio@{}>;tag=k", prober.addr),
            &format!("<sip:{}>", sb.sip),
            cid,
        )
        .cseq(1)
        .text()
    };
    prober.send(sb.sip, &probe("full")).await;
    prober.expect_status(503, 2 * SEC).await;
    first.hang_up().await;
    // The call's slot is freed as its task ends, a moment after the BYE's 200.
    let deadline = std::time::Instant::now() + 10 * SEC;
    for n in 0.. {
        prober.send(sb.sip, &probe(&format!("free{n}"))).await;
        let answer = prober.recv(2 * SEC).await.expect("an answer to OPTIONS");
        if answer.status() == 200 {
            break;
        }
        assert_eq!(answer.status(), 503, "{}", answer.first_line);
        assert!(
            std::time::Instant::now() < deadline,
            "OPTIONS still 503 after 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_malformed_and_unsupported_requests() {
    let sb = TestSwitchboard::start(Options {
        rtp_ports: (30800, 30899),
        ..Options::default()
    })
    .await;
    let peer = SipPeer::bind().await;
    let options = |cid: &str| {
        let (sip, me) = (sb.sip, peer.addr);
        RawRequest::new(
            "OPTIONS",
            format_args!("sip:02112368@{sip}"),
            me,
            &format!("z9hG4bK-{cid}"),
        )
        .dialog(
            &format!("<sip:probe@{me}>;tag=p"),
            &format!("<sip:02112368@{sip}>"),
            cid,
        )
        .cseq(1)
        .text()
    };
    peer.send(sb.sip, &options("o1")).await;
    let ok = peer.expect_status(200, 2 * SEC).await;
    assert!(ok.header("allow").unwrap().contains("INVITE"));

    // Content-Length beyond the datagram: 400, and the service goes on.
    peer.send(
        sb.sip,
        &options("o2").replace("Content-Length: 0", "Content-Length: 400"),
    )
    .await;
    peer.expect_status(400, 2 * SEC).await;
    // Garbage: dropped, no crash.
    peer.send(sb.sip, "\u{0}\u{1}garbage\r\n\r\n").await;
    peer.send(sb.sip, "INVITE sip:x SIP/2.0\r\n\r\n").await;
    // Compact header forms are understood.
    let compact = options("o3")
        .replace("Via:", "v:")
        .replace("From:", "f:")
        .replace("To:", "t:")
        .replace("Call-ID:", "i:")
        .replace("Content-Length:", "l:");
    peer.send(sb.sip, &compact).await;
    peer.expect_status(200, 2 * SEC).await;
    // REGISTER is not ours: 405 with Allow.
    peer.send(sb.sip, &options("o4").replace("OPTIONS", "REGISTER"))
        .await;
    let refused = peer.expect_status(405, 2 * SEC).await;
    assert!(refused.header("allow").is_some());
    // BYE for no dialog: 481.
    peer.send(
        sb.sip,
        &options("o5")
            .replace("OPTIONS", "BYE")
            .replace("<sip:02112368@", "<sip:x@")
            .replace(">\r\nCall-ID", ">;tag=nope\r\nCall-ID"),
    )
    .await;
    peer.expect_status(481, 2 * SEC).await;
    peer.send(sb.sip, &options("o6")).await;
    peer.expect_status(200, 2 * SEC).await;
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_goes_where_the_caller_really_sends_from() {
    let sb = TestSwitchboard::start(Options {
        prompt_ms: 2000,
        rtp_ports: (31000, 31099),
        ..Options::default()
    })
    .await;
    // The SDP names one port, but behind NAT the caller's RTP comes from another.
    let mut caller = Caller::new(sb.sip).await;
    let ok = caller.call("0").await;
    let natted = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (first, _) = recv_rtp(&caller.rtp, SEC)
        .await
        .expect("prompt starts at the SDP address");
    natted
        .send_to(
            &rtp_packet(0, 1, 160, 0x77, true, &[0xff; 160]),
            ok.sdp_rtp_addr(),
        )
        .await
        .unwrap();
    let (p, _) = recv_rtp(&natted, SEC)
        .await
        .expect("prompt follows the caller's real address");
    assert_eq!(p.ssrc, first.ssrc);
    assert!(
        p.seq.wrapping_sub(first.seq) < 100,
        "same stream, continued"
    );
    caller.hang_up().await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(record.rtp_packets_received, 1);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_offer_gets_our_offer_in_the_200_and_the_answer_from_the_ack() {
    let sb = TestSwitchboard::start(Options {
        prompt_ms: 200,
        rtp_ports: (31100, 31199),
        ..Options::default()
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    let t = sb.sip;
    let invite = caller
        .initial(
            "INVITE",
            &format!("sip:02112368@{t}"),
            &format!("<sip:02112368@{t}>"),
        )
        .header("Contact", format_args!("<sip:c@{}>", caller.sip.addr))
        .text();
    caller.sip.send(sb.sip, &invite).await;
    let ok = caller.sip.expect_status(200, 2 * SEC).await;
    assert!(
        ok.body.contains("RTP/AVP 9 0 8 101"),
        "our offer: G.722 (the test prompt is 16 kHz), both laws and telephone-event:\n{}",
        ok.body
    );
    caller.to = ok.header("to").unwrap().to_string();
    // The ACK answers with PCMA.
    let answer = sdp(caller.rtp.local_addr().unwrap(), "8");
    let ack = RawRequest::new(
        "ACK",
        format_args!("sip:02112368@{t}"),
        caller.sip.addr,
        "z9hG4bK-ack",
    )
    .dialog(&caller.from, &caller.to, &caller.call_id)
    .cseq(1)
    .body("application/sdp", &answer)
    .text();
    caller.sip.send(sb.sip, &ack).await;
    for i in 0..sb.playlist.frame_count() {
        let (p, _) = recv_rtp(&caller.rtp, SEC)
            .await
            .expect("prompt after the ACK's answer");
        assert_eq!(p.pt, 8);
        assert_eq!(p.payload, sb.playlist.frame(Codec::Pcma, i));
    }
    // Hang up after the ringback that follows the prompt, not on its last
    // frame: the call must have heard that the prompt finished before the BYE.
    recv_rtp(&caller.rtp, SEC)
        .await
        .expect("ringback after the prompt");
    caller.hang_up().await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(record.codec, "PCMA");
    assert!(record.prompt_completed);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_ack_ends_the_call_with_bye_and_no_ack_record() {
    let sb = TestSwitchboard::start(Options {
        t1_ms: 50,
        rtp_ports: (31200, 31299),
        ..Options::default()
    })
    .await;
    let caller = Caller::new(sb.sip).await;
    caller.invite("02112368", "0").await;
    let first = caller.sip.expect_status(200, 2 * SEC).await;
    // No ACK: the 200 is retransmitted (T1 doubling), then BYE after 64·T1 = 3.2 s.
    let mut retransmits = 0;
    let bye = loop {
        let msg = caller
            .sip
            .recv(6 * SEC)
            .await
            .expect("200 retransmissions, then BYE");
        if msg.status() == 200 {
            assert_eq!(msg.body, first.body);
            retransmits += 1;
        } else if msg.method() == "BYE" {
            break msg;
        }
    };
    assert!(
        retransmits >= 3,
        "200 OK retransmitted until given up: {retransmits}"
    );
    caller.sip.respond(&bye, "200 OK", None, "", "").await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::NoAck);
    assert_eq!(record.prompt_started_at_ms, 0);
    assert!(
        recv_rtp(&caller.rtp, Duration::from_millis(200))
            .await
            .is_none(),
        "no prompt without ACK"
    );
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_timer_is_negotiated_and_too_small_gets_422() {
    let sb = TestSwitchboard::start(Options {
        prompt_ms: 200,
        rtp_ports: (31500, 31599),
        ..Options::default()
    })
    .await;
    let body = |c: &Caller| sdp(c.rtp.local_addr().unwrap(), "0");
    let t = sb.sip;
    // The session-timer headers a test adds: (Session-Expires value).
    let invite = |c: &Caller, session_expires: &str| {
        c.initial(
            "INVITE",
            &format!("sip:02112368@{t}"),
            &format!("<sip:02112368@{t}>"),
        )
        .header("Contact", format_args!("<sip:c@{}>", c.sip.addr))
        .header("Supported", "timer")
        .header("Session-Expires", session_expires)
        .body("application/sdp", &body(c))
        .text()
    };
    let small = Caller::new(sb.sip).await;
    small.sip.send(sb.sip, &invite(&small, "30")).await;
    let refused = small.sip.expect_status(422, 2 * SEC).await;
    assert_eq!(refused.header("min-se"), Some("90"));

    let mut caller = Caller::new(sb.sip).await;
    caller
        .sip
        .send(sb.sip, &invite(&caller, "600;refresher=uac"))
        .await;
    let ok = caller.sip.expect_status(200, 2 * SEC).await;
    assert_eq!(ok.header("session-expires"), Some("600;refresher=uac"));
    assert_eq!(ok.header("require"), Some("timer"));
    caller.to = ok.header("to").unwrap().to_string();
    let to = caller.to.clone();
    caller.ack(&to, "z9hG4bK-ack-st").await;
    caller.hang_up().await;
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_unhold_are_forwarded_between_the_legs() {
    let BridgedCall {
        sb,
        mut caller,
        operator,
        op_rtp,
        invite,
        operator_headers: contact,
        ..
    } = BridgedCall::start((31600, 31699)).await;
    let first_version = invite
        .body
        .lines()
        .find_map(|l| l.strip_prefix("o=courtline "))
        .and_then(|o| o.split(' ').nth(1))
        .unwrap()
        .to_string();

    // The caller puts courtline on hold, then takes it back.
    for (attribute, expected_answer) in [("sendonly", "recvonly"), ("sendrecv", "sendrecv")] {
        let offer = sdp(caller.rtp.local_addr().unwrap(), "0") + &format!("a={attribute}\r\n");
        let cseq = caller.reinvite(&offer).await;
        let forwarded = operator.expect_request("INVITE", 10 * SEC).await;
        assert!(
            forwarded.body.contains(&format!("a={attribute}\r\n")),
            "forwarded offer:\n{}",
            forwarded.body
        );
        let version = forwarded
            .body
            .lines()
            .find_map(|l| l.strip_prefix("o=courtline "))
            .and_then(|o| o.split(' ').nth(1))
            .unwrap();
        assert_ne!(
            version, first_version,
            "a changed description gets a new o= version"
        );
        let answer = sdp(op_rtp.local_addr().unwrap(), "0") + &format!("a={expected_answer}\r\n");
        operator
            .respond(&forwarded, "200 OK", None, &contact, &answer)
            .await;
        operator.expect_request("ACK", 2 * SEC).await;
        let ok = caller.reinvite_answered(cseq).await;
        assert!(
            ok.body.contains(&format!("a={expected_answer}\r\n")),
            "answer to the caller:\n{}",
            ok.body
        );
    }
    caller.hang_up().await;
    let bye = operator.expect_request("BYE", 2 * SEC).await;
    operator.respond(&bye, "200 OK", None, "", "").await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::CallerHungUp);
    sb.stop().await;
}

/// Calls an operator played by SIPp running `scenario`, which ends the call
/// with its own BYE: SIPp must pass, the caller get a BYE, and the record say
/// the operator answered and hung up.
async fn call_an_operator_who_hangs_up(scenario: &str, rtp_ports: (u16, u16)) {
    let (sip_port, media_port) = sipp_ports();
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:operator@127.0.0.1:{sip_port}")],
        prompt_ms: 200,
        rtp_ports,
        // The scenario expects an INVITE first: an OPTIONS probe of the
        // operator sent late enough (a busy machine) to find SIPp listening
        // aborted it (CI, 2026-12-07).
        sip_extra: "qualify_interval_s = 0\n".into(),
        ..Options::default()
    })
    .await;
    let log = sb.dir.path().join("sipp.log");
    let mut operator = Sipp(
        std::process::Command::new("sipp")
            .arg("-sf")
            .arg(repo_path(scenario))
            .args(["-i", "127.0.0.1", "-p", &sip_port.to_string()])
            .args(["-mp", &media_port.to_string(), "-m", "1", "-nostdin"])
            // -nr: see tests/sipp/operator_200_again.xml (SIPp would answer a repeated ACK).
            .args(["-timeout", "20s", "-timeout_error", "-nr"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("sipp (apt-get install sip-tester)"),
    );
    let mut caller = Caller::new(sb.sip).await;
    caller.call("0").await;
    let bye = caller.sip.expect_request("BYE", 10 * SEC).await;
    caller.sip.respond(&bye, "200 OK", None, "", "").await;
    assert!(
        operator.passed().await,
        "SIPp's operator ({scenario}) failed: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::OperatorHungUp);
    assert!(record.operator_answered_at_ms > 0);
    sb.stop().await;
}

/// An operator whose 200 OK comes again after courtline's ACK (as when the
/// ACK is lost on UDP), 3 s later: courtline ACKs it again although the
/// INVITE transaction has ended by then (`sip::invite_outcome`: the endpoint
/// keeps the ACK), and the call stays bridged until the operator's BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_200_sent_again_after_the_ack_is_acked_again_and_the_call_stays_up() {
    call_an_operator_who_hangs_up("tests/sipp/operator_200_again.xml", (33600, 33649)).await;
}

/// A second 200 OK from another fork (another To tag) 300 ms after the
/// first: courtline ACKs it and ends it with a BYE, and keeps the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_fork_answering_is_acked_and_ended_and_the_first_stays_up() {
    call_an_operator_who_hangs_up("tests/sipp/operator_forked_200.xml", (33650, 33699)).await;
}
