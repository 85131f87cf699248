//! The shield on SIP over TCP and TLS: a connection from a banned source, or
//! from an untrusted one that is dropped silently, is closed at accept (before
//! any TLS handshake); every new connection and every message on it then
//! passes the same per-source rate limit, scanner check and ACL as a UDP
//! datagram.
//! A message the shield refuses is answered 403 (untrusted, `reject`) or not
//! at all, and courtline closes its side of the connection.

use rsipstack::sip::SipMessage;
use rsipstack::transaction::endpoint::TransportEventInspector;
use rsipstack::transport::TransportEvent;

use super::guard::{forbidden, SharedShield, Verdict};
use super::shield::Decision;

/// Runs the shield on messages from stream connections (UDP datagrams have
/// passed it in [`GuardedUdpSocket`](super::guard::GuardedUdpSocket) already).
pub struct StreamGuard {
    /// The shield shared with the UDP socket.
    shield: SharedShield,
}

impl StreamGuard {
    /// A guard over `shield`.
    pub fn new(shield: SharedShield) -> StreamGuard {
        StreamGuard { shield }
    }
}

#[async_trait::async_trait]
impl TransportEventInspector for StreamGuard {
    async fn handle(&self, event: TransportEvent) -> Option<TransportEvent> {
        let (connection, source, text) = match &event {
            // UDP was judged by the datagram guard already; only a stream's
            // messages are serialized for the shield here (not every one).
            TransportEvent::Incoming(_, connection, _) if !connection.is_reliable() => {
                return Some(event)
            }
            TransportEvent::Incoming(message, connection, from) => {
                (connection, from.get_socketaddr().ok(), message.to_string())
            }
            // Each new connection costs its source a token too, so a flood of
            // connections is cut off like a flood of messages.
            TransportEvent::New(connection) => (
                connection,
                connection
                    .get_remote_addr()
                    .and_then(|a| a.get_socketaddr().ok()),
                String::new(),
            ),
            TransportEvent::Closed(_) => return Some(event),
        };
        let Some(source) = source.filter(|_| connection.is_reliable()) else {
            return Some(event);
        };
        let is_new = matches!(event, TransportEvent::New(_));
        let response = match self.shield.check(source.ip(), text.as_bytes()) {
            Decision::Allow => return Some(event),
            // An untrusted source that is answered 403 keeps its connection
            // until it sends a request to answer.
            Decision::Forbid if is_new => return Some(event),
            Decision::Drop => None,
            Decision::Forbid => match forbidden(text.as_bytes()) {
                Verdict::Reject(response) => {
                    tracing::info!(%source, "request from an untrusted source over a stream: 403");
                    SipMessage::try_from(String::from_utf8_lossy(&response).as_ref()).ok()
                }
                _ => None,
            },
        };
        // Off the endpoint's event loop: a peer that does not read must not stall it.
        let connection = connection.clone();
        tokio::spawn(async move {
            if let Some(response) = response {
                let _ = connection.send(response, None).await;
            }
            let _ = connection.close().await;
        });
        None
    }
}
