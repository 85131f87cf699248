//! An operator nobody can reach fails at once, not after its ring timeout:
//! a closed UDP port (ICMP port unreachable), a refused TCP connection, or a
//! target marked down by OPTIONS. The hunt list moves on to the next target,
//! or the call ends as `operator_unreachable`. Every ring timeout here is
//! 30 s; the tests finish far sooner only because the failure is immediate.

mod support;

use std::time::Duration;

use courtline::contract::pb::records_service_client::RecordsServiceClient;
use courtline::contract::pb::{CallRecord, EndReason, GetCallRequest};
use support::*;
use tokio::net::UdpSocket;

const SEC: Duration = Duration::from_secs(1);

fn reason(r: &CallRecord) -> EndReason {
    EndReason::try_from(r.end_reason).unwrap()
}

/// A loopback UDP port nothing listens on (bound, then closed).
fn closed_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// A loopback TCP port nothing listens on (bound, then closed).
fn closed_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The operator milestones of a call's timeline: (kind, detail).
async fn operator_attempts(sb: &TestSwitchboard, record: &CallRecord) -> Vec<(String, String)> {
    let mut client = RecordsServiceClient::connect(format!("http://{}", sb.records))
        .await
        .unwrap();
    // The record arrives with the call's last event; the milestones came before it.
    client
        .get_call(GetCallRequest {
            call_id: record.call_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .timeline
        .into_iter()
        .filter(|e| e.kind == "operator_dialed" || e.kind == "operator_failed")
        .map(|e| (e.kind, e.detail))
        .collect()
}

/// A line whose hunt list is `dead`, then a live operator: the live one is
/// dialled long before `dead`'s ring timeout, answers, and the caller hangs
/// up; the timeline shows `dead` failed as unreachable.
async fn dead_then_live(dead: &str, rtp_ports: (u16, u16)) {
    let live = SipPeer::bind().await;
    let live_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let live_uri = format!("sip:desk2@{}", live.addr);
    let sb = TestSwitchboard::start(Options {
        operators: vec![dead.to_string(), live_uri.clone()],
        prompt_ms: 200,
        ring_timeout_s: 30,
        rtp_ports,
        ..Options::default()
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    caller.call("0").await;
    // Well inside the dead target's 30 s ring timeout.
    let invite = live.expect_request("INVITE", 5 * SEC).await;
    let contact = format!(
        "Contact: <sip:desk2@{}>\r\nContent-Type: application/sdp\r\n",
        live.addr
    );
    live.respond(
        &invite,
        "200 OK",
        Some("live"),
        &contact,
        &sdp(live_rtp.local_addr().unwrap(), "0"),
    )
    .await;
    live.expect_request("ACK", 2 * SEC).await;
    relayed(&live_rtp, invite.sdp_rtp_addr(), &caller.rtp, 5 * SEC).await;
    caller.hang_up().await;
    let bye = live.expect_request("BYE", 3 * SEC).await;
    live.respond(&bye, "200 OK", None, "", "").await;

    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::CallerHungUp);
    assert_eq!(record.operator_uri, live_uri);
    assert!(record.operator_answered_at_ms > 0);
    assert_eq!(
        operator_attempts(&sb, &record).await,
        vec![
            ("operator_dialed".to_string(), dead.to_string()),
            (
                "operator_failed".to_string(),
                "operator_unreachable".to_string()
            ),
            ("operator_dialed".to_string(), live_uri),
        ]
    );
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_udp_port_fails_at_once_and_the_next_operator_is_dialled() {
    let dead = format!("sip:desk1@127.0.0.1:{}", closed_udp_port());
    dead_then_live(&dead, (37450, 37499)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_tcp_connection_fails_at_once_and_the_next_operator_is_dialled() {
    let dead = format!("sip:desk1@127.0.0.1:{};transport=tcp", closed_tcp_port());
    dead_then_live(&dead, (37500, 37549)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_operator_left_the_caller_is_hung_up_at_once_as_unreachable() {
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:desk1@127.0.0.1:{}", closed_udp_port())],
        prompt_ms: 200,
        ring_timeout_s: 30,
        rtp_ports: (37550, 37599),
        ..Options::default()
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    caller.call("0").await;
    let bye = caller.sip.expect_request("BYE", 5 * SEC).await;
    caller.sip.respond(&bye, "200 OK", None, "", "").await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::OperatorUnreachable);
    assert!(record.prompt_completed);
    let rang_ms = record.ended_at_ms - record.prompt_ended_at_ms;
    assert!(rang_ms < 2000, "rang {rang_ms} ms");
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_marked_down_by_options_is_not_rung() {
    // It swallows everything: after two unanswered OPTIONS (64·T1 = 3.2 s
    // each) it is down. Being the only target, admission keeps it; dialling
    // it fails at once. (Without that, its INVITE would run to Timer B.)
    let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:desk1@{}", dead.local_addr().unwrap())],
        prompt_ms: 200,
        t1_ms: 50,
        ring_timeout_s: 30,
        rtp_ports: (37600, 37649),
        sip_extra: "qualify_interval_s = 1\n".into(),
        ..Options::default()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(7500)).await;
    let mut caller = Caller::new(sb.sip).await;
    caller.call("0").await;
    let bye = caller.sip.expect_request("BYE", 5 * SEC).await;
    caller.sip.respond(&bye, "200 OK", None, "", "").await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::OperatorUnreachable);
    let rang_ms = record.ended_at_ms - record.prompt_ended_at_ms;
    assert!(rang_ms < 1000, "rang {rang_ms} ms");
    // Only OPTIONS ever reached it.
    let mut buf = vec![0u8; 65535];
    while let Ok((n, from)) = dead.try_recv_from(&mut buf) {
        let message = Sip::parse(&buf[..n], from);
        assert_ne!(message.method(), "INVITE", "a down operator was rung");
    }
    sb.stop().await;
}
