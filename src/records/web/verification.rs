//! The console's chain verification: it runs in the background, one at a time per
//! service, and any integrity page view shows its progress and then its findings.
//! This is the bookkeeping only (sans-IO); the integrity page starts the task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::contract::pb::VerifyResponse;

/// The latest verification started from the console.
#[derive(Debug)]
struct Run {
    /// Who started it (the access log names them too).
    started_by: String,
    /// When it started (Unix ms).
    started_at_ms: i64,
    /// Events in the chain when it started: what it will check.
    total: u64,
    /// Events checked so far, updated by the verification as it goes.
    checked: Arc<AtomicU64>,
    /// `None` while it runs; then its report, or why it could not run.
    outcome: Option<Result<VerifyResponse, String>>,
}

/// Where the latest verification stands, for a page.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Who started it.
    pub started_by: String,
    /// When (Unix ms).
    pub started_at_ms: i64,
    /// Events checked so far.
    pub checked: u64,
    /// Events to check.
    pub total: u64,
    /// Whole percent done, 0..=100.
    pub percent: u64,
    /// `None` while running; then the report or the failure.
    pub outcome: Option<Result<VerifyResponse, String>>,
}

/// The console's verifications: at most one runs; the last one's result stays.
#[derive(Debug, Default)]
pub struct Verifications {
    /// The latest run, running or done.
    latest: Option<Run>,
}

impl Verifications {
    /// Starts a run by `by` over `total` events unless one is running; returns the
    /// counter the verification must update, or `None` when one is already running.
    pub fn start(&mut self, by: &str, at_ms: i64, total: u64) -> Option<Arc<AtomicU64>> {
        if self.running() {
            return None;
        }
        let checked = Arc::new(AtomicU64::new(0));
        self.latest = Some(Run {
            started_by: by.to_owned(),
            started_at_ms: at_ms,
            total,
            checked: checked.clone(),
            outcome: None,
        });
        Some(checked)
    }

    /// Whether a run is under way.
    pub fn running(&self) -> bool {
        self.latest
            .as_ref()
            .is_some_and(|run| run.outcome.is_none())
    }

    /// Records how the running verification ended.
    pub fn finish(&mut self, outcome: Result<VerifyResponse, String>) {
        if let Some(run) = self.latest.as_mut() {
            run.outcome = Some(outcome);
        }
    }

    /// The latest run's progress or result; `None` before the first.
    pub fn progress(&self) -> Option<Progress> {
        let run = self.latest.as_ref()?;
        let checked = match &run.outcome {
            Some(Ok(report)) => report.events_checked,
            _ => run.checked.load(Ordering::Relaxed),
        };
        // Events appended while it runs can take it past the count it started with.
        let total = run.total.max(checked);
        let percent = match (&run.outcome, total) {
            (Some(_), _) | (None, 0) => 100,
            (None, total) => (checked * 100 / total).min(99),
        };
        Some(Progress {
            started_by: run.started_by.clone(),
            started_at_ms: run.started_at_ms,
            checked,
            total,
            percent,
            outcome: run.outcome.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_verification_runs_at_a_time_and_its_progress_shows() {
        let mut verifications = Verifications::default();
        assert_eq!(verifications.progress(), None);
        let checked = verifications.start("auditor-1", 1, 20_000).unwrap();
        assert!(verifications.running());
        assert!(
            verifications.start("admin-1", 2, 20_000).is_none(),
            "a second waits for the first"
        );
        checked.store(5_000, Ordering::Relaxed);
        let progress = verifications.progress().unwrap();
        assert_eq!(
            (progress.checked, progress.total, progress.percent),
            (5_000, 20_000, 25)
        );
        assert_eq!(progress.started_by, "auditor-1");
        assert_eq!(progress.outcome, None);
        // Past the starting count (events arrived meanwhile) it does not claim 100 %.
        checked.store(20_500, Ordering::Relaxed);
        let progress = verifications.progress().unwrap();
        assert_eq!((progress.total, progress.percent), (20_500, 99));
        let report = VerifyResponse {
            events_checked: 20_600,
            ..VerifyResponse::default()
        };
        verifications.finish(Ok(report.clone()));
        assert!(!verifications.running());
        let done = verifications.progress().unwrap();
        assert_eq!((done.checked, done.percent), (20_600, 100));
        assert_eq!(done.outcome, Some(Ok(report)));
        // Once done, the next may start; the old result gives way to it.
        assert!(verifications.start("admin-1", 3, 10).is_some());
        assert_eq!(verifications.progress().unwrap().outcome, None);
        verifications.finish(Err("database unavailable".into()));
        assert_eq!(
            verifications.progress().unwrap().outcome,
            Some(Err("database unavailable".into()))
        );
    }
}
