//! The follower of a shared database: it writes the tables derived from the chain
//! (`calls`, the dashboard figures, `caller_days`, the caller-name index, the search
//! marks) after the chain, on a connection of its own, so that the sequencer's
//! transaction writes only the chain and staging (BENCHMARKS.md, "Derived tables off
//! the chain"). It reads the chained events past the watermark (`derived_through`) in
//! chain order, derives their changes exactly as an append does ([`derived_changes`])
//! and writes them and the new watermark in one transaction: a crash or a takeover
//! resumes where the last commit left off, and no event is applied twice or skipped.
//! Only the sequencer runs it (started and stopped with the lock); what the chaining
//! itself decides from `calls` (a restarted switchboard's open calls) first brings the
//! derived tables up to the head ([`Ledger::apply_derived_through`]).
//!
//! [`pause_after`] decides, sans-IO, how long to wait between pages; [`run`] carries
//! them out.

use std::time::Duration;

use prost::Message;
use tracing::{debug, warn};

use super::{derived_changes, patterns, Ledger, LedgerError};
use crate::contract::pb::EventBody;
use crate::records::store::StoreError;

/// Most chained events one transaction of the follower applies.
pub const PAGE: u32 = 5_000;

/// Longest the follower waits for a commit of this service before it looks anyway:
/// how late it sees what another service sharing the database chains (accesses,
/// flags, reports), or a takeover's backlog.
pub const IDLE_LOOK: Duration = Duration::from_millis(100);

/// How long the follower waits after a failed page (the database is unreachable,
/// or a deadlock with a purge) before it tries again.
pub const RETRY: Duration = Duration::from_secs(1);

/// What came of one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// This many events were applied (0: the derived tables hold the head).
    Events(usize),
    /// Another writer moved the watermark first; nothing was written.
    Raced,
    /// The page failed.
    Failed,
}

/// How long to wait before the next page after `applied`: none while there is more
/// (a full page, or a race whose winner may have stopped short), until the next
/// commit or [`IDLE_LOOK`] once caught up, [`RETRY`] after a failure.
pub fn pause_after(applied: Applied) -> Duration {
    match applied {
        Applied::Events(events) if events >= PAGE as usize => Duration::ZERO,
        Applied::Raced => Duration::ZERO,
        Applied::Events(_) => IDLE_LOOK,
        Applied::Failed => RETRY,
    }
}

impl Ledger {
    /// From now on this ledger's appends leave the derived tables to the follower
    /// (a shared database, every service of it alike), and finished calls are
    /// announced to the pattern alerts once the follower has written them.
    pub fn derive_by_follower(&self) {
        self.inner
            .derived_by_follower
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.inner.store.derive_by_follower();
    }

    /// Whether a follower writes the derived tables.
    pub fn derived_by_follower(&self) -> bool {
        self.inner
            .derived_by_follower
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Applies the derived changes of the next `limit` chained events past the
    /// watermark, with the new watermark, in one transaction.
    pub async fn apply_derived_page(&self, limit: u32) -> Result<Applied, LedgerError> {
        let store = &self.inner.store;
        let from = store.derived_through().await?;
        let events = store.events_after(from, limit).await?;
        let Some(through) = events.last().map(|event| event.seq) else {
            return Ok(Applied::Events(0));
        };
        let mut changes = Vec::new();
        for event in &events {
            // A purged event has no body: its call's row went with the purge.
            let Some(body) = event.body.as_deref() else {
                continue;
            };
            let body = EventBody::decode(body).map_err(|error| {
                LedgerError::Store(StoreError::Corrupt {
                    key: format!("event #{}", event.seq),
                    detail: format!("its body cannot be decoded for the derived tables: {error}"),
                })
            })?;
            changes.extend(derived_changes(event.seq, &event.header, &body));
        }
        if !store.apply_derived(from, through, &changes).await? {
            return Ok(Applied::Raced);
        }
        if let Some(watcher) = self.inner.finished_calls.get() {
            watcher.announce(patterns::FinishedCallSender::finished(&changes));
        }
        Ok(Applied::Events(events.len()))
    }

    /// Applies pages until the derived tables hold chain position `through` (at once
    /// when they do): for what is decided from them as of the chain's head.
    pub async fn apply_derived_through(&self, through: i64) -> Result<(), LedgerError> {
        while self.inner.store.derived_through().await? < through {
            if self.apply_derived_page(PAGE).await? == Applied::Events(0) {
                break;
            }
        }
        Ok(())
    }
}

/// Applies chained events to the derived tables until `stop` completes: after each
/// commit of this service's ledger (the sequencer's drains), at least every
/// [`IDLE_LOOK`].
pub async fn run(ledger: Ledger, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        let applied = match ledger.apply_derived_page(PAGE).await {
            Ok(applied) => applied,
            Err(error) => {
                warn!(%error, "the follower could not write the derived tables; retrying");
                Applied::Failed
            }
        };
        if let Applied::Events(events @ 1..) = applied {
            debug!(events, "the follower wrote the derived tables");
        }
        let pause = pause_after(applied);
        if pause.is_zero() {
            // Still yield, so that a stop is seen between pages.
            tokio::select! {
                biased;
                () = &mut stop => break,
                () = tokio::task::yield_now() => continue,
            }
        }
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(pause) => {}
            () = ledger.inner.appended.notified(), if applied != Applied::Failed => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_follower_goes_on_at_once_while_there_is_more_and_waits_once_caught_up() {
        assert_eq!(pause_after(Applied::Events(PAGE as usize)), Duration::ZERO);
        assert_eq!(pause_after(Applied::Raced), Duration::ZERO);
        assert_eq!(pause_after(Applied::Events(PAGE as usize - 1)), IDLE_LOOK);
        assert_eq!(pause_after(Applied::Events(0)), IDLE_LOOK);
        assert_eq!(pause_after(Applied::Failed), RETRY);
    }
}
