//! A re-INVITE that moves a peer's RTP address or changes its law re-points
//! courtline's media: during the prompt (answered locally) and once bridged
//! (forwarded to the other leg), on either leg. Real SIP and RTP on loopback.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use courtline::switchboard::media::codec::Law;
use support::{
    recv_rtp, rtp_packet, sdp, BridgedCall, Caller, Options, RawRequest, Rtp, TestSwitchboard,
};
use tokio::net::UdpSocket;

const SEC: Duration = Duration::from_secs(1);

/// The payload types an SDP body's audio line lists.
fn audio_formats(body: &str) -> String {
    body.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split_once(" RTP/AVP "))
        .map(|(_, pts)| pts.to_string())
        .unwrap_or_default()
}

/// Sends one 20 ms packet of `byte` from `from` to `to` every 20 ms until an
/// RTP packet carrying `want` (the same byte, possibly transcoded) arrives on
/// `at`; returns it. Panics after 3 s.
async fn relayed(
    from: &UdpSocket,
    to: SocketAddr,
    pt: u8,
    byte: u8,
    at: &UdpSocket,
    want: u8,
) -> Rtp {
    for i in 0..150u16 {
        let packet = rtp_packet(pt, i, 160 * u32::from(i), 0x5151, i == 0, &[byte; 160]);
        from.send_to(&packet, to).await.unwrap();
        if let Some((p, _)) = recv_rtp(at, Duration::from_millis(20)).await {
            if p.payload.first() == Some(&want) {
                return p;
            }
        }
    }
    panic!("no relayed RTP arrived at {}", at.local_addr().unwrap());
}

/// Nothing but stragglers arrive on `socket` once `settle` has passed.
async fn silent_after(socket: &UdpSocket, settle: Duration) -> bool {
    tokio::time::sleep(settle).await;
    let mut buf = [0u8; 1500];
    while socket.try_recv_from(&mut buf).is_ok() {}
    recv_rtp(socket, Duration::from_millis(300)).await.is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_moving_its_port_and_law_during_the_prompt_is_followed() {
    let sb = TestSwitchboard::start(Options {
        prompt_ms: 4000,
        rtp_ports: (32300, 32349),
        ..Options::default()
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    caller.call("0").await;
    let (first, _) = recv_rtp(&caller.rtp, 2 * SEC)
        .await
        .expect("prompt RTP at the first port");
    assert_eq!(first.pt, 0);

    // The caller moves to another port and offers A-law only.
    let moved = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cseq = caller
        .reinvite(&sdp(moved.local_addr().unwrap(), "8"))
        .await;
    let ok = caller.reinvite_answered(cseq).await;
    assert_eq!(audio_formats(&ok.body), "8", "answer:\n{}", ok.body);

    let (next, _) = recv_rtp(&moved, 2 * SEC)
        .await
        .expect("the prompt goes on at the new port");
    assert_eq!(next.pt, 8, "in the newly agreed law");
    assert_eq!(next.ssrc, first.ssrc, "one stream throughout");
    assert!(
        silent_after(&caller.rtp, Duration::from_millis(100)).await,
        "nothing more goes to the old port"
    );

    caller.request("BYE").await;
    caller.sip.expect_status(200, 2 * SEC).await;
    let record = sb.record(&caller.call_id).await;
    assert!(!record.prompt_completed);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_leg_moving_once_bridged_is_followed() {
    let BridgedCall {
        sb,
        mut caller,
        caller_ok,
        operator,
        op_rtp,
        invite,
        operator_headers: contact,
    } = BridgedCall::start((32350, 32399)).await;
    let courtline_caller_rtp = caller_ok.sdp_rtp_addr();
    let courtline_op_rtp = invite.sdp_rtp_addr();
    let p = relayed(&caller.rtp, courtline_caller_rtp, 0, 0x22, &op_rtp, 0x22).await;
    assert_eq!(p.pt, 0, "bridged in μ-law");

    // 1. The operator moves to another port and switches to A-law (a
    //    re-INVITE from its side, forwarded to the caller).
    let op_moved = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let offer = sdp(op_moved.local_addr().unwrap(), "8");
    let courtline_contact = invite
        .header("contact")
        .and_then(|c| c.split('<').nth(1))
        .and_then(|c| c.split('>').next())
        .unwrap()
        .to_string();
    let operator_from = format!("{};tag=op", invite.header("to").unwrap());
    let cid = invite.header("call-id").unwrap();
    let reinvite = RawRequest::new(
        "INVITE",
        &courtline_contact,
        operator.addr,
        "z9hG4bK-op-re1",
    )
    .dialog(&operator_from, invite.header("from").unwrap(), cid)
    .cseq(1)
    .header("Contact", format_args!("<sip:operator@{}>", operator.addr))
    .body("application/sdp", &offer)
    .text();
    operator.send(sb.sip, &reinvite).await;
    let forwarded = caller.sip.expect_request("INVITE", 10 * SEC).await;
    caller
        .sip
        .respond(
            &forwarded,
            "200 OK",
            None,
            "Content-Type: application/sdp\r\n",
            &sdp(caller.rtp.local_addr().unwrap(), "0"),
        )
        .await;
    let ok = operator.expect_status(200, 10 * SEC).await;
    assert_eq!(audio_formats(&ok.body), "8", "answer:\n{}", ok.body);
    let ack = RawRequest::new(
        "ACK",
        &courtline_contact,
        operator.addr,
        "z9hG4bK-op-reack1",
    )
    .dialog(&operator_from, ok.header("to").unwrap(), cid)
    .cseq(1)
    .text();
    operator.send(sb.sip, &ack).await;
    // The caller's μ-law 0x22 arrives at the new port as A-law.
    let alaw = Law::A.transcode_from(Law::Mu, 0x22);
    let p = relayed(&caller.rtp, courtline_caller_rtp, 0, 0x22, &op_moved, alaw).await;
    assert_eq!(p.pt, 8, "transcoded to the operator's new law");
    assert!(
        silent_after(&op_rtp, Duration::from_millis(100)).await,
        "nothing more goes to the operator's old port"
    );

    // 2. The caller moves (re-INVITE forwarded to the operator), and the
    //    operator's answer moves the operator once more.
    let caller_moved = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cseq = caller
        .reinvite(&sdp(caller_moved.local_addr().unwrap(), "0"))
        .await;
    let forwarded = operator.expect_request("INVITE", 10 * SEC).await;
    let op_moved_again = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    operator
        .respond(
            &forwarded,
            "200 OK",
            None,
            &contact,
            &sdp(op_moved_again.local_addr().unwrap(), "8"),
        )
        .await;
    caller.reinvite_answered(cseq).await;
    let back = Law::Mu.transcode_from(Law::A, alaw);
    let p = relayed(
        &op_moved_again,
        courtline_op_rtp,
        8,
        alaw,
        &caller_moved,
        back,
    )
    .await;
    assert_eq!(p.pt, 0, "the caller keeps μ-law");
    let p = relayed(
        &caller_moved,
        courtline_caller_rtp,
        0,
        0x22,
        &op_moved_again,
        alaw,
    )
    .await;
    assert_eq!(p.pt, 8);

    caller.request("BYE").await;
    caller.sip.expect_status(200, 2 * SEC).await;
    let bye = operator.expect_request("BYE", 2 * SEC).await;
    operator.respond(&bye, "200 OK", None, "", "").await;
    sb.stop().await;
}
