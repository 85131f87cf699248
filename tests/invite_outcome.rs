//! The operator INVITE's transaction against a real operator (SIPp): once
//! answered, it ends `FORK_WINDOW_T1`·T1 later and only its ACK stays with
//! the endpoint (`switchboard/sip/invite_outcome.rs`).

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use courtline::switchboard::sip::invite_outcome::InviteOutcome;
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::sip::{Method, SipMessage, StatusCode, Uri};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::TransportLayer;
use rsipstack::EndpointBuilder;
use support::{sipp_ports, Sipp};
use tokio_util::sync::CancellationToken;

/// An operator played by SIPp (`tests/sipp/operator.xml`: 180, then a
/// 200 OK sent until ACKed, then our BYE): `FORK_WINDOW_T1`·T1 (2 s)
/// after the outcome, the INVITE's transaction is gone from the endpoint
/// (rsipstack alone keeps it 64·T1 = 32 s) and the endpoint holds its
/// ACK; the dialog lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_invite_leaves_only_its_ack_with_the_endpoint() {
    let (sip_port, media_port) = sipp_ports();
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/operator.xml");
    let mut sipp = Sipp(
        Command::new("sipp")
            .args([
                "-sf",
                scenario,
                "-i",
                "127.0.0.1",
                "-p",
                &sip_port.to_string(),
            ])
            .args(["-mp", &media_port.to_string(), "-m", "1", "-nostdin"])
            .args(["-timeout", "20s", "-timeout_error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp (apt-get install sip-tester)"),
    );

    let stop = CancellationToken::new();
    let _stop_on_drop = stop.clone().drop_guard();
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let udp = UdpConnection::create_connection(local, None, Some(stop.child_token()))
        .await
        .unwrap();
    let local = udp.get_addr().get_socketaddr().unwrap();
    let transport = TransportLayer::new(stop.clone());
    transport.add_transport(udp.into());
    let endpoint = EndpointBuilder::new()
        .with_cancel_token(stop.clone())
        .with_transport_layer(transport)
        .build();
    let inner = endpoint.inner.clone();
    tokio::spawn(async move { endpoint.serve().await });
    let layer = Arc::new(DialogLayer::new(inner.clone()));

    let uri = |text: String| Uri::try_from(text.as_str()).unwrap();
    let option = InviteOption {
        caller: uri(format!("sip:courtline@{local}")),
        callee: uri(format!("sip:operator@127.0.0.1:{sip_port}")),
        contact: uri(format!("sip:courtline@{local}")),
        content_type: Some("application/sdp".into()),
        offer: Some(
            format!(
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                 m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
                sipp_ports().1
            )
            .into_bytes(),
        ),
        ..InviteOption::default()
    };
    let (states, _states) = layer.new_dialog_state_channel();
    let (dialog, invite) = layer.do_invite_async(option, states).unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        InviteOutcome::new(invite, inner.clone()),
    )
    .await
    .expect("SIPp answers within 10 s");
    let Ok(Ok((_, Some(response)))) = outcome else {
        panic!("no final response: {outcome:?}");
    };
    assert_eq!(response.status_code, StatusCode::OK);

    let key = TransactionKey::from_response(&response, TransactionRole::Client).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while inner.transactions.get(&key).is_some() {
        assert!(
            Instant::now() < deadline,
            "the answered INVITE's transaction is still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match inner.finished_transactions.get(&key) {
        Some(Some(SipMessage::Request(ack))) => assert_eq!(ack.method, Method::Ack),
        other => panic!("the endpoint keeps no ACK for the INVITE: {other:?}"),
    }

    dialog.bye().await.unwrap();
    assert!(sipp.passed().await, "SIPp's operator failed");
}
