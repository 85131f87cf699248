//! Media features of issue #4 against the real service on loopback, with
//! Rust test peers: RTP inactivity timeout, RTCP figures in the record, early
//! media, and DTMF (RFC 4733 and SIP INFO) during the prompt and in the bridge.

mod support;

use std::sync::Arc;
use std::time::Duration;

use courtline::records::pb::{CallRecord, EndReason};
use support::*;
use tokio::net::UdpSocket;
use tokio::time::Instant;

const SEC: Duration = Duration::from_secs(1);

fn reason(r: &CallRecord) -> EndReason {
    EndReason::try_from(r.end_reason).unwrap()
}

/// Sends 20 ms RTP packets from `socket` to `to` until `until`.
async fn send_rtp_until(socket: &UdpSocket, to: std::net::SocketAddr, ssrc: u32, until: Instant) {
    let mut seq = 0u16;
    while Instant::now() < until {
        let packet = rtp_packet(0, seq, u32::from(seq) * 160, ssrc, seq == 0, &[0x55; 160]);
        socket.send_to(&packet, to).await.unwrap();
        seq = seq.wrapping_add(1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An operator peer that answers the INVITE with 200 OK (PCMU) and takes the ACK.
async fn answer_operator(operator: &SipPeer, op_rtp: &UdpSocket) -> Sip {
    let invite = operator.expect_request("INVITE", 5 * SEC).await;
    let body = sdp(op_rtp.local_addr().unwrap(), "0 101");
    let contact = format!(
        "Contact: <sip:operator@{}>\r\nContent-Type: application/sdp\r\n",
        operator.addr
    );
    operator
        .respond(&invite, "200 OK", Some("op1"), &contact, &body)
        .await;
    operator.expect_request("ACK", 2 * SEC).await;
    invite
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_whose_media_stops_is_hung_up_as_media_timeout() {
    let operator = SipPeer::bind().await;
    let op_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:operator@{}", operator.addr)],
        prompt_ms: 400,
        rtp_ports: (36000, 36099),
        media_extra: "rtp_timeout_s = 2".into(),
        ..Options::default()
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
    let talking_until = Instant::now() + Duration::from_millis(3500);
    let talker = {
        let socket = caller_rtp.clone();
        tokio::spawn(
            async move { send_rtp_until(&socket, courtline_rtp, 0x77, talking_until).await },
        )
    };
    answer_operator(&operator, &op_rtp).await;
    talker.await.unwrap();
    if let Some(msg) = caller.sip.recv(Duration::ZERO).await {
        assert_ne!(msg.method(), "BYE", "hung up while the caller was talking");
    }

    // Then silence: a BYE to both legs after about 2 s.
    let stopped = Instant::now();
    let bye = caller.sip.expect_request("BYE", 4 * SEC).await;
    let waited = stopped.elapsed();
    assert!(
        waited >= Duration::from_millis(1800),
        "BYE only {waited:?} after the caller went silent"
    );
    caller.sip.respond(&bye, "200 OK", None, "", "").await;
    let op_bye = operator.expect_request("BYE", 2 * SEC).await;
    operator.respond(&op_bye, "200 OK", None, "", "").await;

    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::MediaTimeout);
    assert!(record.prompt_completed);
    assert!(record.operator_answered_at_ms > 0);
    assert!(record.rtp_packets_received >= 100);
    sb.stop().await;
}

