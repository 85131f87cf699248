//! SIP over TCP and TLS, both legs: the caller on a stream transport, the
//! operator reached over the transport its URI names.

mod support;

use std::time::Duration;

use courtline::switchboard::media::codec::Codec;
use support::*;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const SEC: Duration = Duration::from_secs(1);

fn invite(
    transport: &str,
    me: std::net::SocketAddr,
    target: std::net::SocketAddr,
    call_id: &str,
    body: &str,
) -> String {
    format!(
        "INVITE sip:02112368@{target};transport={t} SIP/2.0\r\nVia: SIP/2.0/{T} {me};branch=z9hG4bK-{call_id}\r\nMax-Forwards: 70\r\nFrom: \"李四\" <sip:13900139000@{me}>;tag=c1\r\nTo: <sip:02112368@{target}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:13900139000@{me};transport={t}>\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{body}",
        t = transport.to_lowercase(),
        T = transport,
        len = body.len()
    )
}

fn in_dialog(
    method: &str,
    transport: &str,
    me: std::net::SocketAddr,
    target: std::net::SocketAddr,
    call_id: &str,
    to: &str,
    cseq: u32,
) -> String {
    format!(
        "{method} sip:02112368@{target};transport={t} SIP/2.0\r\nVia: SIP/2.0/{T} {me};branch=z9hG4bK-{method}-{cseq}\r\nMax-Forwards: 70\r\nFrom: \"李四\" <sip:13900139000@{me}>;tag=c1\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        t = transport.to_lowercase(),
        T = transport,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_over_tcp_with_the_operator_on_tcp_too() {
    let operator_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let operator_addr = operator_listener.local_addr().unwrap();
    let operator_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:operator@{operator_addr};transport=tcp")],
        prompt_ms: 200,
        rtp_ports: (31300, 31399),
        ..Options::default()
    })
    .await;
    let stream = TcpStream::connect(sb.sip).await.unwrap();
    let me = stream.local_addr().unwrap();
    let mut caller = StreamPeer::new(stream, sb.sip);
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let call_id = format!("{}@tcp-test", uuid::Uuid::new_v4());
    caller
        .send(&invite(
            "TCP",
            me,
            sb.sip,
            &call_id,
            &sdp(rtp.local_addr().unwrap(), "0"),
        ))
        .await;
    let ok = caller.expect_response(200, "INVITE", 3 * SEC).await;
    let contact = ok.header("contact").unwrap().to_ascii_lowercase();
    assert!(contact.contains("transport=tcp"), "{contact}");
    let to = ok.header("to").unwrap().to_string();
    caller
        .send(&in_dialog("ACK", "TCP", me, sb.sip, &call_id, &to, 1))
        .await;
    for i in 0..sb.playlist.frame_count() {
        let (p, _) = recv_rtp(&rtp, SEC).await.expect("prompt over RTP/UDP");
        assert_eq!(p.payload, sb.playlist.frame(Codec::Pcmu, i));
    }
    // courtline connects to the operator over TCP.
    let (op_stream, op_remote) = tokio::time::timeout(3 * SEC, operator_listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut operator = StreamPeer::new(op_stream, op_remote);
    let inv = operator.expect_request("INVITE", 3 * SEC).await;
    assert!(
        inv.header("via").unwrap().starts_with("SIP/2.0/TCP"),
        "{:?}",
        inv.header("via")
    );
    let contact = format!("Contact: <sip:operator@{operator_addr};transport=tcp>\r\nContent-Type: application/sdp\r\n");
    operator
        .send(&response_text(
            &inv,
            "200 OK",
            Some("op"),
            &contact,
            &sdp(operator_rtp.local_addr().unwrap(), "0"),
        ))
        .await;
    operator.expect_request("ACK", 3 * SEC).await;
    // Bridged once the operator's audio reaches the caller.
    let courtline_op_rtp = inv.sdp_rtp_addr();
    let mut bridged = false;
    for seq in 0..50u16 {
        let packet = rtp_packet(0, seq, 160 * u32::from(seq), 7, seq == 0, &[0x33; 160]);
        operator_rtp
            .send_to(&packet, courtline_op_rtp)
            .await
            .unwrap();
        if let Some((p, _)) = recv_rtp(&rtp, Duration::from_millis(100)).await {
            if p.payload == [0x33; 160] {
                bridged = true;
                break;
            }
        }
    }
    assert!(bridged, "operator audio relayed to the TCP caller");
    caller
        .send(&in_dialog("BYE", "TCP", me, sb.sip, &call_id, &to, 2))
        .await;
    caller.expect_response(200, "BYE", 3 * SEC).await;
    let bye = operator.expect_request("BYE", 3 * SEC).await;
    operator
        .send(&response_text(&bye, "200 OK", None, "", ""))
        .await;
    let record = sb.record(&call_id).await;
    assert!(record.prompt_completed);
    assert_eq!(record.caller_display_name, "李四");
    assert!(record.operator_answered_at_ms > 0);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_over_tls_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = self_signed(dir.path());
    let operator = SipPeer::bind().await;
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:operator@{}", operator.addr)],
        prompt_ms: 200,
        rtp_ports: (31400, 31499),
        sip_extra: format!(
            "tls_certificate = \"{}\"\ntls_private_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        ..Options::default()
    })
    .await;
    let tls_addr = sb.tls.expect("TLS listener");
    assert_eq!(
        tls_addr.port(),
        sb.sip.port() + 1,
        "TLS on the next port by default"
    );

    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    let me = tcp.local_addr().unwrap();
    let tls = tls_handshake(tcp, der)
        .await
        .expect("TLS handshake with courtline");
    let mut caller = StreamPeer::new(tls, tls_addr);
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let call_id = format!("{}@tls-test", uuid::Uuid::new_v4());
    caller
        .send(&invite(
            "TLS",
            me,
            tls_addr,
            &call_id,
            &sdp(rtp.local_addr().unwrap(), "8"),
        ))
        .await;
    let ok = caller.expect_response(200, "INVITE", 3 * SEC).await;
    let contact = ok.header("contact").unwrap().to_ascii_lowercase();
    assert!(
        contact.contains("transport=tls") && contact.contains(&format!(":{}", tls_addr.port())),
        "{contact}"
    );
    let to = ok.header("to").unwrap().to_string();
    caller
        .send(&in_dialog("ACK", "TLS", me, tls_addr, &call_id, &to, 1))
        .await;
    let (p, _) = recv_rtp(&rtp, SEC).await.expect("prompt");
    assert_eq!(p.pt, 8);
    caller
        .send(&in_dialog("BYE", "TLS", me, tls_addr, &call_id, &to, 2))
        .await;
    caller.expect_response(200, "BYE", 3 * SEC).await;
    let record = sb.record(&call_id).await;
    assert_eq!(record.codec, "PCMA");
    assert!(!record.prompt_completed);
    sb.stop().await;
}
