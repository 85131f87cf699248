//! One channel through which every caller dialog answers its INVITE, routed
//! to the INVITE's server transaction while that transaction runs.
//!
//! rsipstack's server dialog keeps a clone of its INVITE transaction's event
//! sender for the dialog's whole life (for its 180, 183, 200 OK or rejection,
//! and the ACK it passes on). That keeps the transaction's tokio channel
//! alive after the transaction has ended, and tokio allocates such a
//! channel's first block of 32 `TransactionEvent`s (344 bytes each) when it
//! is made: ~11 KiB of every call in progress, ~65 MiB at the peak of 600
//! calls/s (#16). Here every caller dialog gets one shared sender instead,
//! and a router task moves each event to its transaction's own sender, held
//! only while the transaction runs ([`RunningInvite`]). When it ends after
//! the caller's ACK, what the endpoint keeps 32 s of the 2xx is made small
//! ([`RunningInvite::ended`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rsipstack::dialog::dialog::{DialogState, DialogStateSender};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::dialog::DialogId;
use rsipstack::sip::{Header, Response, SipMessage, StatusCodeKind, Uri};
use rsipstack::transaction::key::TransactionRole;
use rsipstack::transaction::transaction::{Transaction, TransactionEvent, TransactionEventSender};
use tokio::sync::mpsc;
use tracing::debug;

use crate::switchboard::burst::ShrinkAfterBurst;

/// Transactions the table keeps room for however few are running; above it,
/// it shrinks once three quarters stand empty, as after a burst of calls.
const RUNNING_FLOOR: usize = 64;

/// Each running caller INVITE's own event sender, by its dialog.
type Running = Arc<Mutex<HashMap<DialogId, TransactionEventSender>>>;

fn lock(running: &Running) -> MutexGuard<'_, HashMap<DialogId, TransactionEventSender>> {
    // A panic elsewhere poisoned the lock; the map itself is still consistent.
    running
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The shared sender given to caller dialogs, and the transactions it reaches.
pub(crate) struct CallerInvites {
    /// Handed to rsipstack as every caller dialog's transaction sender.
    sender: TransactionEventSender,
    /// Where each dialog's events go while its INVITE runs.
    running: Running,
}

impl CallerInvites {
    /// Starts the router task; call from within the tokio runtime.
    pub fn start() -> CallerInvites {
        let (sender, mut receiver) = mpsc::unbounded_channel::<TransactionEvent>();
        let running: Running = Arc::default();
        let table = running.clone();
        tokio::spawn(async move {
            while let Some(event) = receiver.recv().await {
                // A dialog sends its INVITE only responses and the ACK.
                let id = match &event {
                    TransactionEvent::Respond(response) => {
                        DialogId::try_from((response, TransactionRole::Server))
                    }
                    TransactionEvent::Received(SipMessage::Request(request), _) => {
                        DialogId::try_from((request, TransactionRole::Server))
                    }
                    _ => continue,
                };
                let id = match id {
                    Ok(id) => id,
                    Err(e) => {
                        debug!(error = %e, "caller dialog event without a dialog id: dropped");
                        continue;
                    }
                };
                let transaction = lock(&table).get(&id).cloned();
                match transaction {
                    // The transaction may end between the lookup and the send.
                    Some(transaction) => {
                        let _ = transaction.send(event);
                    }
                    None => debug!(%id, "caller dialog event after its INVITE ended: dropped"),
                }
            }
        });
        CallerInvites { sender, running }
    }

    /// Makes the caller's dialog for the INVITE `tx` (as
    /// `DialogLayer::get_or_create_server_invite`), answering through the
    /// shared sender; the transaction is reached until the returned
    /// [`RunningInvite`] drops, which the task driving `tx` holds.
    pub fn dialog(
        &self,
        layer: &DialogLayer,
        tx: &mut Transaction,
        states: DialogStateSender,
        contact: Uri,
    ) -> Result<(InviteDialog, RunningInvite), Box<rsipstack::Error>> {
        // The dialog clones `tx.tu_sender`: it gets the shared one.
        let own = std::mem::replace(&mut tx.tu_sender, self.sender.clone());
        let dialog = layer.get_or_create_server_invite(tx, states, None, Some(contact));
        tx.tu_sender = own.clone();
        let dialog = dialog.map_err(Box::new)?;
        let id = dialog.id();
        lock(&self.running).insert(id.clone(), own);
        Ok((
            dialog,
            RunningInvite {
                id,
                running: self.running.clone(),
            },
        ))
    }
}

/// A caller INVITE's place in the routing table; dropped when its
/// transaction ends, which frees the transaction's channel.
pub(crate) struct RunningInvite {
    /// The caller's dialog.
    id: DialogId,
    /// The routing table, to leave on drop.
    running: Running,
}

impl RunningInvite {
    /// The INVITE `tx` of `dialog` has ended: it leaves the routing table,
    /// and if the caller ACKed our 2xx, what the endpoint keeps of that 2xx
    /// is made small.
    ///
    /// rsipstack keeps a server INVITE's last response 64·T1 (32 s) after
    /// the transaction (RFC 6026's Accepted state): to answer a CANCEL 200
    /// with the 2xx's To tag (RFC 3261 §9.2), and to send the response again
    /// for a retransmitted INVITE. A parsed 200 OK with its SDP is ~1 KiB,
    /// ~19,000 of them at 600 calls/s (#16). Once the caller has ACKed it,
    /// the SDP and the headers a CANCEL's answer does not need are dropped:
    /// a caller stops retransmitting its INVITE at the first provisional
    /// response (our 100 Trying, sent at once), so only a stray datagram
    /// delayed past the ACK still gets that shorter 200 (a retransmission
    /// for the caller, which ACKs it again; its Contact is kept). A non-2xx
    /// keeps its whole response.
    pub fn ended(self, tx: Transaction, dialog: &InviteDialog) {
        let answered = tx
            .last_response
            .as_ref()
            .is_some_and(|r| r.status_code.kind() == StatusCodeKind::Successful);
        let acked = answered && matches!(dialog.state(), DialogState::Confirmed(..));
        let (key, endpoint) = (tx.key.clone(), tx.endpoint_inner.clone());
        // Dropping the transaction hands its last response to the endpoint.
        drop(tx);
        drop(self);
        if acked {
            endpoint.finished_transactions.with_mut(|kept| {
                if let Some(Some(SipMessage::Response(answer))) = kept.get_mut(&key) {
                    keep_for_cancel(answer);
                }
            });
        }
    }
}

/// Reduces an ACKed 2xx to what a CANCEL's answer takes from it (the To tag)
/// and what makes it still a 2xx to an INVITE if sent again (RFC 3261 §8.1.1,
/// §12.1.1: Via, From, To, Call-ID, CSeq, Contact), without a body.
fn keep_for_cancel(answer: &mut Response) {
    answer.headers.retain(|h| {
        matches!(
            h,
            Header::Via(_)
                | Header::From(_)
                | Header::To(_)
                | Header::CallId(_)
                | Header::CSeq(_)
                | Header::Contact(_)
        )
    });
    answer.headers.push(Header::ContentLength(0u32.into()));
    answer.headers.0.shrink_to_fit();
    answer.body = Vec::new();
}

impl Drop for RunningInvite {
    fn drop(&mut self) {
        let mut running = lock(&self.running);
        running.remove(&self.id);
        running.shrink_after_burst(RUNNING_FLOOR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::sip::{Method, Request, StatusCode};
    use rsipstack::transaction::endpoint::EndpointInnerRef;
    use rsipstack::transaction::key::TransactionKey;
    use rsipstack::EndpointBuilder;

    fn request(text: &str) -> Request {
        match SipMessage::try_from(text) {
            Ok(SipMessage::Request(request)) => request,
            other => panic!("not a request: {other:?}"),
        }
    }

    fn server_transaction(request: Request, endpoint: &EndpointInnerRef) -> Transaction {
        let key = TransactionKey::from_request(&request, TransactionRole::Server).unwrap();
        Transaction::new_server(key, request, endpoint.clone(), None)
    }

    const INVITE: &str = "INVITE sip:court@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-invite-1\r\n\
        From: <sip:caller@127.0.0.1>;tag=caller-tag\r\n\
        To: <sip:court@127.0.0.1>\r\n\
        Call-ID: caller-invites-1\r\n\
        CSeq: 1 INVITE\r\n\
        Contact: <sip:caller@127.0.0.1:5070>\r\n\
        Max-Forwards: 70\r\n\
        Content-Length: 0\r\n\r\n";

    /// The dialog's 200 OK and the caller's ACK reach the INVITE's
    /// transaction through the shared channel; once the transaction has
    /// ended, its own channel is freed although the dialog lives on.
    #[tokio::test]
    async fn a_caller_dialog_answers_through_the_router_and_does_not_keep_its_invite() {
        let endpoint = EndpointBuilder::new().build();
        let layer = DialogLayer::new(endpoint.inner.clone());
        let invites = CallerInvites::start();
        let mut invite = server_transaction(request(INVITE), &endpoint.inner);
        let own = invite.tu_sender.downgrade();
        let (states, mut state_events) = layer.new_dialog_state_channel();
        let contact = Uri::try_from("sip:courtline@127.0.0.1").unwrap();
        let (dialog, running) = invites
            .dialog(&layer, &mut invite, states, contact)
            .unwrap();

        dialog.accept(None, None).unwrap();
        let answer = match invite.tu_receiver.recv().await {
            Some(TransactionEvent::Respond(response)) => response,
            _ => panic!("the INVITE got something else than the 200 OK"),
        };
        assert_eq!(answer.status_code, StatusCode::OK);

        let to_tag = &dialog.id().local_tag;
        let ack = INVITE
            .replace("INVITE sip", "ACK sip")
            .replace("z9hG4bK-invite-1", "z9hG4bK-ack-1")
            .replace(
                "<sip:court@127.0.0.1>\r\n",
                &format!("<sip:court@127.0.0.1>;tag={to_tag}\r\n"),
            )
            .replace("1 INVITE", "1 ACK");
        let mut ack = server_transaction(request(&ack), &endpoint.inner);
        let mut handler = dialog.clone();
        handler.handle(&mut ack).await.unwrap();
        match invite.tu_receiver.recv().await {
            Some(TransactionEvent::Received(SipMessage::Request(ack), _)) => {
                assert_eq!(ack.method, Method::Ack)
            }
            _ => panic!("the INVITE got something else than the ACK"),
        }

        drop(running);
        drop(invite);
        drop(ack);
        assert!(
            own.upgrade().is_none(),
            "the INVITE's channel outlives its transaction"
        );
        assert!(lock(&invites.running).is_empty());
        // The dialog is still there for the call, and a late event for its
        // ended INVITE is dropped.
        dialog.accept(None, None).unwrap();
        while let Ok(state) = state_events.try_recv() {
            assert!(!matches!(state, DialogState::Terminated(..)), "{state:?}");
        }
    }
}
