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
