//! IPv6: SIP and RTP on `[::1]`, `c=IN IP6` in both legs' SDP, an operator at
//! an IPv6 address (`sip:operator@[::1]:port`), and the IPv6 caller's record.
//! (tests/sipp/run.sh's `ipv6` case does the same with SIPp on both sides.)

mod support;

use std::time::Duration;

use courtline::contract::pb::EndReason;
use support::{recv_rtp, rtp_packet, sdp, Caller, Options, SipPeer, TestSwitchboard};
use tokio::net::UdpSocket;

/// Sends μ-law packets from `from` to `to` until one arrives at `at` (10 s at most).
async fn relayed(from: &UdpSocket, to: std::net::SocketAddr, at: &UdpSocket, ssrc: u32) {
    for seq in 0..500u16 {
        let packet = rtp_packet(0, seq, 160 * u32::from(seq), ssrc, seq == 0, &[0x55; 160]);
        from.send_to(&packet, to).await.unwrap();
        if let Some((rtp, _)) = recv_rtp(at, Duration::from_millis(20)).await {
            if rtp.payload == [0x55; 160] {
                return;
            }
        }
    }
    panic!(
        "no RTP relayed from {} over {to}",
        from.local_addr().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_and_an_operator_on_ipv6_are_bridged_and_recorded() {
    let operator = SipPeer::bind_on("::1").await;
    let op_rtp = UdpSocket::bind("[::1]:0").await.unwrap();
    let sb = TestSwitchboard::start(Options {
        sip_listen: "[::1]:0".into(),
        operators: vec![format!("sip:operator@{}", operator.addr)],
        prompt_ms: 200,
        rtp_ports: (46700, 46749),
        ..Options::default()
    })
    .await;
    assert!(sb.sip.is_ipv6(), "{}", sb.sip);

    let mut caller = Caller::new(sb.sip).await;
    let ok = caller.call("0").await;
    assert!(ok.body.contains("\r\nc=IN IP6 ::1\r\n"), "{}", ok.body);
    let toward_caller = ok.sdp_rtp_addr();
    // The warning, from the address the answer gave.
    let (_, from) = recv_rtp(&caller.rtp, Duration::from_secs(10))
        .await
        .expect("the warning over IPv6");
    assert_eq!(from, toward_caller);

    // The operator is called over IPv6, with an IPv6 offer.
    let invite = operator
        .expect_request("INVITE", Duration::from_secs(10))
        .await;
    assert!(
        invite
            .first_line
            .starts_with(&format!("INVITE sip:operator@{} ", operator.addr)),
        "{}",
        invite.first_line
    );
    assert!(
        invite.body.contains("\r\nc=IN IP6 ::1\r\n"),
        "{}",
        invite.body
    );
    let toward_operator = invite.sdp_rtp_addr();
    assert!(toward_operator.is_ipv6());
    operator
        .answer_invite(&invite, "op", &sdp(op_rtp.local_addr().unwrap(), "0"))
        .await;

    // Bridged: audio both ways over IPv6.
    relayed(&caller.rtp, toward_caller, &op_rtp, 0xc0ffee).await;
    relayed(&op_rtp, toward_operator, &caller.rtp, 0x0be7a7).await;

    caller.hang_up().await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(record.caller_source, caller.sip.addr.to_string());
    assert!(
        record.caller_source.starts_with("[::1]:"),
        "{}",
        record.caller_source
    );
    assert_eq!(record.caller_number, "13800138000");
    assert_eq!(
        EndReason::try_from(record.end_reason),
        Ok(EndReason::CallerHungUp)
    );
    assert!(record.prompt_completed);
    assert!(record.operator_answered_at_ms > 0);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_listen_address_takes_ipv4_and_ipv6_callers_to_an_ipv4_operator() {
    let operator = SipPeer::bind().await;
    let op_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sb = TestSwitchboard::start(Options {
        sip_listen: "[::]:0".into(),
        operators: vec![format!("sip:operator@{}", operator.addr)],
        prompt_ms: 200,
        rtp_ports: (46750, 46799),
        ..Options::default()
    })
    .await;
    let port = sb.sip.port();
    for target in [
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
    ] {
        let mut caller = Caller::new(target).await;
        let ok = caller.call("0").await;
        let connection = if target.is_ipv4() {
            "\r\nc=IN IP4 127.0.0.1\r\n"
        } else {
            "\r\nc=IN IP6 ::1\r\n"
        };
        assert!(ok.body.contains(connection), "{target}: {}", ok.body);
        let toward_caller = ok.sdp_rtp_addr();
        let (_, from) = recv_rtp(&caller.rtp, Duration::from_secs(10))
            .await
            .expect("the warning");
        assert_eq!(from, toward_caller);

        let invite = operator
            .expect_request("INVITE", Duration::from_secs(10))
            .await;
        assert!(
            invite.body.contains("\r\nc=IN IP4 127.0.0.1\r\n"),
            "{target}: {}",
            invite.body
        );
        let toward_operator = invite.sdp_rtp_addr();
        operator
            .answer_invite(&invite, "op", &sdp(op_rtp.local_addr().unwrap(), "0"))
            .await;
        relayed(&caller.rtp, toward_caller, &op_rtp, 0xc0ffee).await;
        relayed(&op_rtp, toward_operator, &caller.rtp, 0x0be7a7).await;

        caller.hang_up().await;
        operator
            .expect_request("BYE", Duration::from_secs(10))
            .await;
        let record = sb.record(&caller.call_id).await;
        // An IPv4 caller is recorded as such, not as ::ffff:127.0.0.1.
        assert_eq!(record.caller_source, caller.sip.addr.to_string());
    }
    sb.stop().await;
}
