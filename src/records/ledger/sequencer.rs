//! The sequencer of a database several records services share: of all of them,
//! the one holding [`super::staging::SEQUENCER_LOCK`] chains the staged switchboard
//! events through its [`Ledger`] (the same ingest as a lone service's: duplicates,
//! interrupted calls on a restart, reports opened by keys, recordings), deleting
//! them from staging in the commit that chains them; its [`follower`] writes the
//! derived tables after the chain.
//!
//! [`Turns`] decides, sans-IO on virtual time, when to try for the lock and when
//! to drain; [`plan`] cuts staged rows into ingest batches. [`run`] carries them out.

use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::follower;
use super::staging::{self, StagedRow, Staging};
use super::{Ledger, LedgerError};
use crate::contract::MAX_BATCH;

/// How often a service that is not the sequencer tries for the lock: how long a
/// takeover takes at most after the sequencer's connection is gone.
pub const LOCK_RETRY: Duration = Duration::from_secs(1);

/// How long the sequencer waits after a drain that left staging empty: the longest an
/// event waits before its batch is chained, and what lets batches grow under load.
pub const IDLE_POLL: Duration = Duration::from_millis(20);

/// Most staged events one drain takes (several ingest batches).
pub const DRAIN_LIMIT: usize = 5 * MAX_BATCH;

/// What the sequencer task does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Try to take the sequencer's lock.
    TryLock,
    /// Chain what is staged (holding the lock).
    Drain,
}

/// What came of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The lock is ours.
    LockTaken,
    /// Another service holds the lock, or the database cannot be reached.
    LockNotTaken,
    /// A drain chained what it took; `full`: it took as much as it may (more is waiting).
    Drained {
        /// Whether the drain was as large as allowed.
        full: bool,
    },
    /// A drain failed, or the lock is no longer held: the lock is given up.
    Lost,
}

/// When the sequencer task tries for the lock and drains (sans-IO).
#[derive(Debug, Clone)]
pub struct Turns {
    /// Whether this service holds the lock.
    leading: bool,
    /// When the next step is due.
    due: Instant,
}

impl Turns {
    /// A service that has just started: it tries for the lock at once.
    pub fn new(now: Instant) -> Turns {
        Turns {
            leading: false,
            due: now,
        }
    }

    /// Takes the outcome of the last step, at `now`.
    pub fn handle_outcome(&mut self, outcome: Outcome, now: Instant) {
        (self.leading, self.due) = match outcome {
            Outcome::LockTaken => (true, now),
            Outcome::LockNotTaken | Outcome::Lost => (false, now + LOCK_RETRY),
            Outcome::Drained { full: true } => (true, now),
            Outcome::Drained { full: false } => (true, now + IDLE_POLL),
        };
    }

    /// The step due next.
    pub fn poll_step(&self) -> Step {
        if self.leading {
            Step::Drain
        } else {
            Step::TryLock
        }
    }

    /// When the next step is due.
    pub fn poll_timeout(&self) -> Instant {
        self.due
    }

    /// Whether this service is the sequencer.
    pub fn leading(&self) -> bool {
        self.leading
    }
}

/// Cuts staged rows (oldest first) into ingest batches: one node's events each, in
/// its sequence order, at most [`MAX_BATCH`]; nodes in the order of their oldest row.
pub fn plan(rows: Vec<StagedRow>) -> Vec<Vec<StagedRow>> {
    let mut nodes: Vec<Vec<StagedRow>> = Vec::new();
    for row in rows {
        match nodes.iter_mut().find(|node| node[0].node_id == row.node_id) {
            Some(node) => node.push(row),
            None => nodes.push(vec![row]),
        }
    }
    let mut batches = Vec::new();
    for mut node in nodes {
        node.sort_by_key(|row| row.node_seq);
        while node.len() > MAX_BATCH {
            let rest = node.split_off(MAX_BATCH);
            batches.push(node);
            node = rest;
        }
        batches.push(node);
    }
    batches
}

/// The follower task the sequencer runs while it holds the lock, and its stop.
struct Following {
    /// Completes the follower's stop future.
    stop: tokio::sync::oneshot::Sender<()>,
    /// The task.
    task: tokio::task::JoinHandle<()>,
}

impl Following {
    /// Starts the follower of `ledger` (the derived tables, on a connection of its own).
    fn start(ledger: &Ledger) -> Following {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(follower::run(ledger.clone(), async {
            let _ = stopped.await;
        }));
        Following { stop, task }
    }

    /// Stops the follower between two of its transactions.
    async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(join) = self.task.await {
            error!(error = %join, "the follower task failed");
        }
    }
}

/// Tries for the sequencer's lock every [`LOCK_RETRY`]; while it holds it, chains what
/// is staged, and its follower writes the derived tables. Until `stop` completes; then
/// gives the lock up.
pub async fn run(ledger: Ledger, staging: Staging, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut turns = Turns::new(Instant::now());
    let mut lock = None;
    let mut following: Option<Following> = None;
    loop {
        let due = tokio::time::Instant::from_std(turns.poll_timeout());
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            () = &mut stop => break,
        }
        let outcome = match turns.poll_step() {
            Step::TryLock => match staging.try_lead().await {
                Ok(Some(taken)) => {
                    lock = Some(taken);
                    staging.set_sequencing(true);
                    following = Some(Following::start(&ledger));
                    let waiting = staging.backlog().await.unwrap_or_default();
                    info!(waiting, "this records service is now the sequencer");
                    Outcome::LockTaken
                }
                Ok(None) => Outcome::LockNotTaken,
                Err(error) => {
                    debug!(%error, "cannot try for the sequencer's lock");
                    Outcome::LockNotTaken
                }
            },
            Step::Drain => {
                let held = match lock.as_mut() {
                    Some(lock) => lock.held().await,
                    None => false,
                };
                let drained = if held {
                    drain(&ledger, &staging).await
                } else {
                    Err(LedgerError::Invalid(
                        "the sequencer's database session ended".into(),
                    ))
                };
                match drained {
                    Ok(full) => Outcome::Drained { full },
                    Err(error) => {
                        warn!(%error, "the sequencer stops; a service (perhaps this one) takes over");
                        if let Some(following) = following.take() {
                            following.stop().await;
                        }
                        staging.set_sequencing(false);
                        if let Some(lock) = lock.take() {
                            lock.release().await;
                        }
                        Outcome::Lost
                    }
                }
            }
        };
        turns.handle_outcome(outcome, Instant::now());
    }
    if let Some(following) = following.take() {
        following.stop().await;
    }
    staging.set_sequencing(false);
    if let Some(lock) = lock.take() {
        lock.release().await;
        info!("gave the sequencer's lock up");
    }
}

/// Chains the oldest staged events and deletes them from staging, in one commit;
/// returns whether it took as many as it may. A batch the ledger refuses (a
/// conflicting redelivery) stays staged and is logged: records are never dropped.
async fn drain(ledger: &Ledger, staging: &Staging) -> Result<bool, LedgerError> {
    let started = Instant::now();
    let rows = staging.oldest(DRAIN_LIMIT as i64).await?;
    let full = rows.len() >= DRAIN_LIMIT;
    let taken = rows.len();
    let mut nodes = Vec::new();
    let mut batches = Vec::new();
    for batch in plan(rows) {
        let node_id = batch[0].node_id.clone();
        match batch.iter().map(StagedRow::event).collect() {
            Ok(events) => {
                nodes.push(node_id);
                batches.push(events);
            }
            Err(error) => {
                error!(node = %node_id, %error, "staged events cannot be chained; they stay staged");
            }
        }
    }
    let outcomes = ledger.ingest_batches(batches, staging::unstage).await?;
    for (node_id, outcome) in nodes.iter().zip(outcomes) {
        if let Err(error) = outcome {
            error!(node = %node_id, %error, "staged events cannot be chained; they stay staged");
        }
    }
    if taken > 0 {
        debug!(
            events = taken,
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "sequenced staged events"
        );
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(node: &str, seq: i64) -> StagedRow {
        StagedRow {
            node_id: node.into(),
            node_seq: seq,
            body: Vec::new(),
        }
    }

    fn keys(batches: &[Vec<StagedRow>]) -> Vec<(String, Vec<i64>)> {
        batches
            .iter()
            .map(|batch| {
                (
                    batch[0].node_id.clone(),
                    batch.iter().map(|row| row.node_seq).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn batches_are_one_node_each_in_sequence_order_oldest_node_first() {
        let rows = vec![
            row("b", 7),
            row("a", 2),
            row("b", 5),
            row("a", 1),
            row("b", 6),
        ];
        assert_eq!(
            keys(&plan(rows)),
            vec![("b".into(), vec![5, 6, 7]), ("a".into(), vec![1, 2])]
        );
        assert!(plan(Vec::new()).is_empty());
    }

    #[test]
    fn a_node_with_more_than_a_batch_is_cut_at_max_batch() {
        let rows = (1..=(2 * MAX_BATCH as i64 + 1))
            .map(|seq| row("a", seq))
            .collect();
        let batches = plan(rows);
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![MAX_BATCH, MAX_BATCH, 1]);
        assert_eq!(batches[1][0].node_seq, MAX_BATCH as i64 + 1);
    }

    #[test]
    fn a_standby_tries_for_the_lock_every_second_and_leads_once_it_has_it() {
        let start = Instant::now();
        let mut turns = Turns::new(start);
        assert_eq!(
            (turns.poll_step(), turns.poll_timeout()),
            (Step::TryLock, start)
        );
        turns.handle_outcome(Outcome::LockNotTaken, start);
        assert_eq!(turns.poll_step(), Step::TryLock);
        assert_eq!(turns.poll_timeout(), start + LOCK_RETRY);
        let later = start + LOCK_RETRY;
        turns.handle_outcome(Outcome::LockTaken, later);
        assert!(turns.leading());
        assert_eq!(
            (turns.poll_step(), turns.poll_timeout()),
            (Step::Drain, later)
        );
    }

    #[test]
    fn the_sequencer_drains_at_once_while_full_and_waits_when_idle() {
        let start = Instant::now();
        let mut turns = Turns::new(start);
        turns.handle_outcome(Outcome::LockTaken, start);
        turns.handle_outcome(Outcome::Drained { full: true }, start);
        assert_eq!(
            (turns.poll_step(), turns.poll_timeout()),
            (Step::Drain, start)
        );
        turns.handle_outcome(Outcome::Drained { full: false }, start);
        assert_eq!(turns.poll_step(), Step::Drain);
        assert_eq!(turns.poll_timeout(), start + IDLE_POLL);
    }

    #[test]
    fn a_lost_lock_makes_the_service_a_standby_again() {
        let start = Instant::now();
        let mut turns = Turns::new(start);
        turns.handle_outcome(Outcome::LockTaken, start);
        turns.handle_outcome(Outcome::Lost, start);
        assert!(!turns.leading());
        assert_eq!(turns.poll_step(), Step::TryLock);
        assert_eq!(turns.poll_timeout(), start + LOCK_RETRY);
    }
}
