//! The ledger's part of pattern alerts: it tells the alert task which callers' calls
//! just finished (after the commit that stored them, never holding ingest up: a full
//! queue is noted and the task sweeps instead), and chains a rule's match at most
//! once per rule, caller and UTC day.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prost::Message;
use tokio::sync::mpsc;

use super::{now_ms, Ledger, LedgerError, Pending};
use crate::contract::pb::event_body::Kind;
use crate::contract::pb::{CallState, EventBody, PatternMatched};
use crate::records::dashboard::day_of;
use crate::records::store::{Change, PatternMatchRow};

/// Finished calls waiting for the alert task: beyond this, it sweeps.
const QUEUE: usize = 10_000;

/// A call whose final row was just stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedCall {
    /// The call.
    pub call_id: String,
    /// Its caller's number (never empty: anonymous calls are nobody's pattern).
    pub caller_number: String,
    /// When it was received.
    pub received_at_ms: i64,
}

/// The ledger's end of the queue to the alert task.
#[derive(Debug)]
pub struct FinishedCallSender {
    /// The queue.
    sender: mpsc::Sender<FinishedCall>,
    /// Set when a call did not fit: the task then looks at every caller of the window.
    overflowed: Arc<AtomicBool>,
}

/// The alert task's end: finished calls, and whether some did not fit.
#[derive(Debug)]
pub struct FinishedCalls {
    /// The queue.
    pub receiver: mpsc::Receiver<FinishedCall>,
    /// Set (and to be cleared by the task) when calls were left out.
    pub overflowed: Arc<AtomicBool>,
}

impl FinishedCallSender {
    /// Queues the finished calls among `changes` (just committed); never waits.
    pub(super) fn announce(&self, changes: &[Change]) {
        for change in changes {
            let Change::UpsertCall(row) = change else {
                continue;
            };
            if !matches!(row.state, CallState::Ended | CallState::Interrupted)
                || row.record.caller_number.is_empty()
            {
                continue;
            }
            let call = FinishedCall {
                call_id: row.record.call_id.clone(),
                caller_number: row.record.caller_number.clone(),
                received_at_ms: row.record.received_at_ms,
            };
            if self.sender.try_send(call).is_err() {
                self.overflowed.store(true, Ordering::Relaxed);
            }
        }
    }
}

impl FinishedCalls {
    /// Whether calls were left out since the last call, clearing the mark.
    pub fn take_overflow(&self) -> bool {
        self.overflowed.swap(false, Ordering::Relaxed)
    }
}

impl Ledger {
    /// Starts announcing finished calls; `None` when something watches already.
    pub fn watch_finished_calls(&self) -> Option<FinishedCalls> {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        self.inner
            .finished_calls
            .set(FinishedCallSender {
                sender,
                overflowed: overflowed.clone(),
            })
            .ok()?;
        Some(FinishedCalls {
            receiver,
            overflowed,
        })
    }

    /// Chains `matched` unless its rule matched its caller on the same UTC day already
    /// (checked under the chain lock, so two evaluations cannot both chain it). Returns
    /// the event's chain position, or `None` when it was a repeat.
    pub async fn record_pattern_match(
        &self,
        matched: PatternMatched,
    ) -> Result<Option<i64>, LedgerError> {
        let at_ms = now_ms();
        let day = day_of(at_ms);
        let caller = matched
            .hit
            .as_ref()
            .map(|hit| hit.caller_number.clone())
            .unwrap_or_default();
        let mut head = self.inner.head.lock().await;
        if self
            .inner
            .store
            .pattern_matched(&matched.rule, &caller, day)
            .await?
        {
            return Ok(None);
        }
        let row = PatternMatchRow {
            seq: 0,
            rule: matched.rule.clone(),
            caller_number: caller,
            day,
            at_ms,
            body: matched.encode_to_vec(),
        };
        let body = EventBody {
            kind: Some(Kind::PatternMatched(matched)),
        };
        let mut pending = Pending::new(None, at_ms, body);
        pending.change = Some(Change::PutPatternMatch(row));
        let seq = self
            .append_locked(&mut head, vec![pending], super::Sign::WhenDue)
            .await?;
        Ok(Some(seq))
    }
}
