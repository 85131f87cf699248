//! The ledger's part of pattern alerts: it tells the alert task which callers' calls
//! just finished (after the commit that stored them, never holding ingest up: a full
//! queue is noted and the task sweeps instead), and chains a rule's match at most
//! once per rule, caller and UTC day.

use std::sync::atomic::{AtomicI64, Ordering};
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
    /// The days of the calls that did not fit: the task then looks at every caller
    /// of those days.
    overflowed: Arc<DroppedDays>,
}

/// The first and last UTC day of the calls left out of the queue ([`i64::MAX`] and
/// [`i64::MIN`] while none were).
#[derive(Debug)]
pub struct DroppedDays {
    /// Earliest day left out.
    first: AtomicI64,
    /// Latest day left out.
    last: AtomicI64,
}

impl DroppedDays {
    fn new() -> DroppedDays {
        DroppedDays {
            first: AtomicI64::new(i64::MAX),
            last: AtomicI64::new(i64::MIN),
        }
    }

    /// Notes a call of `day` left out.
    fn note(&self, day: i64) {
        self.first.fetch_min(day, Ordering::Relaxed);
        self.last.fetch_max(day, Ordering::Relaxed);
    }

    /// The days left out since the last call, clearing them.
    fn take(&self) -> Option<(i64, i64)> {
        let first = self.first.swap(i64::MAX, Ordering::Relaxed);
        let last = self.last.swap(i64::MIN, Ordering::Relaxed);
        (first <= last).then_some((first, last))
    }
}

/// The alert task's end: finished calls, and whether some did not fit.
#[derive(Debug)]
pub struct FinishedCalls {
    /// The queue.
    pub receiver: mpsc::Receiver<FinishedCall>,
    /// The days of calls left out.
    overflowed: Arc<DroppedDays>,
}

impl FinishedCallSender {
    /// The finished calls among `changes`, taken while they are chained, so that
    /// they can be announced once the commit has made them visible.
    pub(super) fn finished(changes: &[Change]) -> Vec<FinishedCall> {
        changes
            .iter()
            .filter_map(|change| match change {
                Change::UpsertCall(row)
                    if matches!(row.state, CallState::Ended | CallState::Interrupted)
                        && !row.record.caller_number.is_empty() =>
                {
                    Some(FinishedCall {
                        call_id: row.record.call_id.clone(),
                        caller_number: row.record.caller_number.clone(),
                        received_at_ms: row.record.received_at_ms,
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// Queues `calls` (just committed); never waits.
    pub(super) fn announce(&self, calls: Vec<FinishedCall>) {
        for call in calls {
            let day = day_of(call.received_at_ms);
            if self.sender.try_send(call).is_err() {
                self.overflowed.note(day);
            }
        }
    }
}

impl FinishedCalls {
    /// The first and last day of the calls left out since the last call, if any.
    pub fn take_overflow(&self) -> Option<(i64, i64)> {
        self.overflowed.take()
    }
}

impl Ledger {
    /// Starts announcing finished calls; `None` when something watches already.
    pub fn watch_finished_calls(&self) -> Option<FinishedCalls> {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let overflowed = Arc::new(DroppedDays::new());
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
