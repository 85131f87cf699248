//! Routing as RFC 3261 has it, against hand-written peers on loopback:
//! responses follow the Via stack, in-dialog requests follow the route set
//! (Record-Route) on both legs, and an operator INVITE too large for UDP goes
//! over TCP (§18.1.1), back to UDP when the operator has no TCP.

mod support;

use std::time::Duration;

use support::*;
use tokio::net::{TcpListener, UdpSocket};

const SEC: Duration = Duration::from_secs(1);

/// The URI inside the first `<…>` of a header value.
fn uri_in(value: &str) -> &str {
    value
        .split('<')
        .nth(1)
        .and_then(|v| v.split('>').next())
        .unwrap_or(value)
}

/// `request` (received by `proxy`) is addressed to the remote target and
/// routed through `proxy` (a loose router, RFC 3261 §16.12).
fn assert_routed(request: &Sip, start: &str, proxy: std::net::SocketAddr) {
    assert_eq!(request.first_line, format!("{start} SIP/2.0"));
    assert_eq!(
        request.header("route").map(uri_in),
        Some(format!("sip:{proxy};lr").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vias_and_record_routes_are_honoured_on_both_legs() {
    let operator = SipPeer::bind().await;
    let operator_proxy = SipPeer::bind().await;
    let op_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:operator@{}", operator.addr)],
        prompt_ms: 200,
        rtp_ports: (32500, 32549),
        ..Options::default()
    })
    .await;
    // The caller's INVITE reaches courtline through a proxy that records the route.
    let proxy = SipPeer::bind().await;
    let ua = SipPeer::bind().await;
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let offer = sdp(rtp.local_addr().unwrap(), "0");
    let dialog = format!(
        "From: <sip:13800138000@{ua}>;tag=rr1\r\nCall-ID: rr@test\r\nMax-Forwards: 69\r\n",
        ua = ua.addr
    );
    let invite = format!(
        "INVITE sip:02112368@{sb} SIP/2.0\r\nVia: SIP/2.0/UDP {proxy};branch=z9hG4bK-proxy-inv\r\nVia: SIP/2.0/UDP {ua};branch=z9hG4bK-ua-inv;received=127.0.0.1\r\nRecord-Route: <sip:{proxy};lr>\r\n{dialog}To: <sip:02112368@{sb}>\r\nCSeq: 1 INVITE\r\nContact: <sip:13800138000@{ua}>\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{offer}",
        sb = sb.sip,
        proxy = proxy.addr,
        ua = ua.addr,
        len = offer.len()
    );
    proxy.send(sb.sip, &invite).await;
    let ok = proxy.expect_status(200, 10 * SEC).await;
    // The response went to the top Via and carries the whole Via stack, in
    // order, and the Record-Route.
    let vias = ok.headers_named("via");
    assert_eq!(vias.len(), 2, "{vias:?}");
    assert!(vias[0].contains("z9hG4bK-proxy-inv") && vias[1].contains("z9hG4bK-ua-inv"));
    assert_eq!(
        ok.header("record-route").map(uri_in),
        Some(format!("sip:{};lr", proxy.addr).as_str())
    );
    let to = ok.header("to").unwrap().to_string();
    let courtline_contact = uri_in(ok.header("contact").unwrap()).to_string();
    let in_dialog = |method: &str, cseq: u32, branch: &str, extra: &str, body: &str| {
        format!(
            "{method} {courtline_contact} SIP/2.0\r\nVia: SIP/2.0/UDP {proxy};branch={branch}\r\n{dialog}To: {to}\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: {len}\r\n\r\n{body}",
            proxy = proxy.addr,
            len = body.len()
        )
    };
    proxy
        .send(sb.sip, &in_dialog("ACK", 1, "z9hG4bK-proxy-ack", "", ""))
        .await;

    // The operator answers through its own record-routing proxy.
    let op_invite = operator.expect_request("INVITE", 10 * SEC).await;
    let operator_headers = format!(
        "Record-Route: <sip:{};lr>\r\nContact: <sip:operator@{}>\r\nContent-Type: application/sdp\r\n",
        operator_proxy.addr, operator.addr
    );
    operator
        .respond(
            &op_invite,
            "200 OK",
            Some("op"),
            &operator_headers,
            &sdp(op_rtp.local_addr().unwrap(), "0"),
        )
        .await;
    // The ACK follows the operator's route set.
    let ack = operator_proxy.expect_request("ACK", 3 * SEC).await;
    assert_eq!(
        ack.first_line,
        format!("ACK sip:operator@{} SIP/2.0", operator.addr)
    );

    // The caller holds: courtline's re-INVITE to the operator goes to the operator's proxy.
    let hold = offer.clone() + "a=sendonly\r\n";
    proxy
        .send(
            sb.sip,
            &in_dialog(
                "INVITE",
                2,
                "z9hG4bK-proxy-re",
                "Content-Type: application/sdp\r\n",
                &hold,
            ),
        )
        .await;
    let reinvite = operator_proxy.expect_request("INVITE", 10 * SEC).await;
    assert_routed(
        &reinvite,
        &format!("INVITE sip:operator@{}", operator.addr),
        operator_proxy.addr,
    );
    operator_proxy
        .respond(
            &reinvite,
            "200 OK",
            None,
            &operator_headers,
            &(sdp(op_rtp.local_addr().unwrap(), "0") + "a=recvonly\r\n"),
        )
        .await;
    let held = proxy.expect_status(200, 10 * SEC).await;
    assert_eq!(held.header("cseq"), Some("2 INVITE"));
    proxy
        .send(sb.sip, &in_dialog("ACK", 2, "z9hG4bK-proxy-reack", "", ""))
        .await;

    // The operator hangs up: courtline's BYE to the caller follows the caller's route set.
    let bye = format!(
        "BYE {courtline} SIP/2.0\r\nVia: SIP/2.0/UDP {op};branch=z9hG4bK-op-bye\r\nFrom: {to};tag=op\r\nTo: {from}\r\nCall-ID: {cid}\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        courtline = uri_in(op_invite.header("contact").unwrap()),
        op = operator.addr,
        to = op_invite.header("to").unwrap(),
        from = op_invite.header("from").unwrap(),
        cid = op_invite.header("call-id").unwrap(),
    );
    operator.send(sb.sip, &bye).await;
    operator.expect_status(200, 10 * SEC).await;
    let caller_bye = proxy.expect_request("BYE", 3 * SEC).await;
    assert_routed(
        &caller_bye,
        &format!("BYE sip:13800138000@{}", ua.addr),
        proxy.addr,
    );
    proxy.respond(&caller_bye, "200 OK", None, "", "").await;
    assert!(
        ua.recv(Duration::from_millis(300)).await.is_none(),
        "nothing bypassed the proxy"
    );
    sb.stop().await;
}

/// A caller whose display name makes courtline's INVITE to the operator
/// larger than 1300 bytes.
async fn caller_with_a_long_name(target: std::net::SocketAddr) -> Caller {
    let mut caller = Caller::new(target).await;
    caller.from = format!(
        "\"{}\" <sip:13800138000@{}>;tag=caller1",
        "上海市第一中级人民法院来电".repeat(30),
        caller.sip.addr
    );
    caller
}

/// `caller` calls; the operator gets the INVITE over UDP and answers busy, so
/// the caller is hung up on.
async fn busy_over_udp(mut caller: Caller, operator: &SipPeer) {
    caller.call("0").await;
    let invite = operator.expect_request("INVITE", 5 * SEC).await;
    assert!(invite.header("via").unwrap().starts_with("SIP/2.0/UDP"));
    operator
        .respond(&invite, "486 Busy Here", Some("op"), "", "")
        .await;
    let bye = caller.sip.expect_request("BYE", 3 * SEC).await;
    caller.sip.respond(&bye, "200 OK", None, "", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_invites_too_large_for_udp_go_over_tcp() {
    // An operator listening on UDP and TCP at the same port.
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let udp = UdpSocket::bind(("127.0.0.1", port)).await.unwrap();
    let operator = SipPeer {
        addr: udp.local_addr().unwrap(),
        socket: udp,
    };
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:operator@127.0.0.1:{port}")],
        prompt_ms: 200,
        rtp_ports: (32550, 32599),
        ..Options::default()
    })
    .await;

    // An ordinary INVITE goes over UDP.
    busy_over_udp(Caller::new(sb.sip).await, &operator).await;

    // One over 1300 bytes comes over TCP.
    let mut caller = caller_with_a_long_name(sb.sip).await;
    caller.call("0").await;
    let (stream, from) = tokio::time::timeout(3 * SEC, tcp.accept())
        .await
        .unwrap()
        .unwrap();
    let mut over_tcp = StreamPeer::new(stream, from);
    let invite = over_tcp.expect_request("INVITE", 10 * SEC).await;
    assert!(
        invite.header("via").unwrap().starts_with("SIP/2.0/TCP"),
        "{:?}",
        invite.header("via")
    );
    assert!(invite
        .header("contact")
        .unwrap()
        .to_ascii_lowercase()
        .contains("transport=tcp"));
    let size: usize = invite.first_line.len()
        + invite
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum::<usize>()
        + invite.body.len();
    assert!(size > 1300, "{size} bytes");
    over_tcp
        .send(&response_text(&invite, "486 Busy Here", Some("op"), "", ""))
        .await;
    over_tcp.expect_request("ACK", 3 * SEC).await;
    let bye = caller.sip.expect_request("BYE", 3 * SEC).await;
    caller.sip.respond(&bye, "200 OK", None, "", "").await;
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_invite_falls_back_to_udp_when_the_operator_has_no_tcp() {
    let operator = SipPeer::bind().await;
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:operator@{}", operator.addr)],
        prompt_ms: 200,
        rtp_ports: (32600, 32649),
        ..Options::default()
    })
    .await;
    busy_over_udp(caller_with_a_long_name(sb.sip).await, &operator).await;
    sb.stop().await;
}
