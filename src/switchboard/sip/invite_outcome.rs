//! The outcome of an INVITE courtline sends (to an operator), and the end of
//! its transaction once it is answered.
//!
//! After a 2xx, rsipstack's `DialogLayer::do_invite_async` leaves a task that
//! owns the whole client INVITE transaction for 64·T1 (32 s; RFC 6026
//! Accepted state) to ACK retransmitted 2xx again: ~15 KiB a call with the
//! transaction's channel block and its parsed INVITE, 2xx and ACK, ~19,000 of
//! them at 600 calls/s (#16). The endpoint itself can do that job with far
//! less: a client INVITE transaction dropped after its ACK leaves that ACK in
//! `EndpointInner::finished_transactions` for 64·T1, and the endpoint sends it
//! again for every 2xx retransmission with the transaction's key. So once the
//! outcome is a 2xx, [`InviteOutcome`] tells the transaction to end; the task
//! drops it and only the ACK stays.
//!
//! What the transaction would have done beyond that: a 2xx from another fork
//! (another To tag) is ACKed by the endpoint too but not ended with a BYE, so
//! a forking proxy's second phone stays up until it gives up on its own ACK
//! (it went to the answering phone's target; RFC 3261 §13.3.1.4: after 64·T1
//! without one the phone ends the call with a BYE).

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

/// `do_invite_async`'s outcome; awaiting it ends the transaction of a 2xx.
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

impl Future for InviteOutcome {
    type Output = Result<InviteAsyncResult, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = ready!(Pin::new(&mut self.invite).poll(cx));
        if let Ok(Ok((_, Some(response)))) = &outcome {
            end_accepted(&self.endpoint, response);
        }
        Poll::Ready(outcome)
    }
}

/// Ends the client INVITE transaction `response` (a 2xx) was the answer to,
/// if it is still running: the endpoint keeps its ACK and re-sends it for a
/// retransmitted 2xx, instead of the transaction doing it for 64·T1.
fn end_accepted(endpoint: &EndpointInnerRef, response: &Response) {
    if response.status_code.kind() != StatusCodeKind::Successful {
        return;
    }
    // The key the endpoint finds the transaction by when a response comes in.
    let Ok(key) = TransactionKey::from_response(response, TransactionRole::Client) else {
        return;
    };
    if let Some(transaction) = endpoint.transactions.get(&key) {
        // Queued behind any 2xx retransmission already received, which the
        // transaction still ACKs; it then returns and is dropped.
        let _ = transaction.send(TransactionEvent::Terminate(key.clone()));
        debug!(%key, "answered INVITE: its ACK kept by the endpoint, the transaction ended");
    }
}
