//! The outcome of an INVITE courtline sends (to an operator), and the early
//! end of its transaction once it is answered.
//!
//! After a 2xx, rsipstack's `DialogLayer::do_invite_async` leaves a task that
//! owns the whole client INVITE transaction for 64·T1 (32 s; RFC 6026
//! Accepted state): ~15 KiB a call with the transaction's channel block and
//! its parsed INVITE, 2xx and ACK, ~19,000 of them at 600 calls/s (#16). It
//! does two things there. It ACKs retransmitted 2xx again; the endpoint can
//! do that with far less, because a client INVITE transaction dropped after
//! its ACK leaves that ACK in `EndpointInner::finished_transactions` for
//! 64·T1, and the endpoint sends it again for every 2xx with the
//! transaction's key. And it ACKs and ends with a BYE the 2xx of another
//! fork (another To tag: a forking proxy's second phone answered too); the
//! endpoint would only send that fork the first phone's ACK, leaving the
//! second phone up until it gives up waiting for an ACK (64·T1 later, RFC
//! 3261 §13.3.1.4). A forking proxy cancels the other branches when the
//! first 2xx passes it, so another fork's 2xx can only cross that CANCEL: it
//! comes within a round trip, or a retransmission or two later. So
//! [`InviteOutcome`] ends the transaction [`FORK_WINDOW_T1`]·T1 after the 2xx:
//! forks up to then are ended as before, and only the ACK stays after.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rsipstack::dialog::invitation::InviteAsyncResult;
use rsipstack::sip::{Response, StatusCodeKind};
use rsipstack::transaction::endpoint::EndpointInnerRef;
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::transaction::TransactionEvent;
use tokio::task::{JoinError, JoinHandle};
use tracing::debug;

/// `do_invite_async`'s outcome; once that is a 2xx, the INVITE's transaction
/// is ended [`FORK_WINDOW_T1`]·T1 later.
pub struct InviteOutcome {
    /// The task `do_invite_async` runs the INVITE in.
    invite: JoinHandle<InviteAsyncResult>,
    /// The endpoint whose transaction table holds the INVITE's transaction.
    endpoint: EndpointInnerRef,
}

impl InviteOutcome {
    /// Wraps the handle `do_invite_async` returned, for an INVITE sent by `endpoint`.
    pub fn new(invite: JoinHandle<InviteAsyncResult>, endpoint: EndpointInnerRef) -> InviteOutcome {
        InviteOutcome { invite, endpoint }
    }
}

/// How long after a 2xx the transaction still runs, for another fork's 2xx,
/// in T1s: the first one and two retransmissions (at T1 and 3·T1) of a 2xx
/// that crossed the proxy's CANCEL.
pub const FORK_WINDOW_T1: u32 = 4;

impl Future for InviteOutcome {
    type Output = Result<InviteAsyncResult, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = ready!(Pin::new(&mut self.invite).poll(cx));
        if let Ok(Ok((_, Some(response)))) = &outcome {
            end_accepted_later(&self.endpoint, response);
        }
        Poll::Ready(outcome)
    }
}

/// Ends the client INVITE transaction `response` answered, if it is a 2xx,
/// [`FORK_WINDOW_T1`]·T1 from now: the endpoint then keeps its ACK and sends
/// it again for a retransmitted 2xx, instead of the transaction doing it for
/// 64·T1.
fn end_accepted_later(endpoint: &EndpointInnerRef, response: &Response) {
    if response.status_code.kind() != StatusCodeKind::Successful {
        return;
    }
    // The key the endpoint finds the transaction by when a response comes in.
    let Ok(key) = TransactionKey::from_response(response, TransactionRole::Client) else {
        return;
    };
    let endpoint = endpoint.clone();
    tokio::spawn(async move {
        tokio::time::sleep(endpoint.option.t1 * FORK_WINDOW_T1).await;
        if let Some(transaction) = endpoint.transactions.get(&key) {
            // Queued behind any 2xx already received, which the transaction
            // still handles; it then returns and is dropped.
            let _ = transaction.send(TransactionEvent::Terminate(key.clone()));
            debug!(%key, "answered INVITE: its ACK kept by the endpoint, the transaction ended");
        }
    });
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use rsipstack::dialog::dialog_layer::DialogLayer;
    use rsipstack::dialog::invitation::InviteOption;
    use rsipstack::sip::{Method, SipMessage, StatusCode, Uri};
    use rsipstack::transport::udp::UdpConnection;
    use rsipstack::transport::TransportLayer;
    use rsipstack::EndpointBuilder;
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// SIPp, killed by its PID when dropped (a failing test leaves none).
    struct Sipp(Child);

    impl Drop for Sipp {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }

    /// A UDP port free on loopback just now.
    fn free_port() -> u16 {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        socket.local_addr().unwrap().port()
    }

    /// An operator played by SIPp (`tests/sipp/operator.xml`: 180, then a
    /// 200 OK sent until ACKed, then our BYE): [`FORK_WINDOW_T1`]·T1 (2 s)
    /// after the outcome, the INVITE's transaction is gone from the endpoint
    /// (rsipstack alone keeps it 64·T1 = 32 s) and the endpoint holds its
    /// ACK; the dialog lives on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answered_invite_leaves_only_its_ack_with_the_endpoint() {
        let (sip_port, media_port) = (free_port(), free_port());
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
                    free_port()
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
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = sipp.0.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "SIPp did not finish its call");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "SIPp's operator failed");
    }
}
