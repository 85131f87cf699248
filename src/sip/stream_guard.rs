//! The shield on SIP over TCP and TLS: a connection from a banned source, or
//! from an untrusted one that is dropped silently, is closed at accept (before
//! any TLS handshake); every message on an accepted connection then passes the
//! same per-source rate limit, scanner check and ACL as a UDP datagram.
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
        let TransportEvent::Incoming(message, connection, from) = &event else {
            return Some(event);
        };
        if !connection.is_reliable() {
            return Some(event);
        }
        let Ok(source) = from.get_socketaddr() else {
            return Some(event);
        };
        let text = message.to_string();
        let response = match self.shield.check(source.ip(), text.as_bytes()) {
            Decision::Allow => return Some(event),
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
