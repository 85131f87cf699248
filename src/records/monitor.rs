//! What the admin endpoint (`cli/admin.rs`) asks a records service: its metrics and
//! its readiness. The adapter between the pure parts ([`super::metrics`],
//! [`super::health`]) and what they are read from: the ledger's counts, the staging's,
//! and at most three small reads of the database per scrape (the chain's progress,
//! one statement; the staging backlog, counted up to a limit; the migration). Each
//! read is bounded in time, so a hung database makes a scrape say so, not hang.
//! The reads run on the records service's own runtime, whichever runtime serves the
//! admin endpoint: a connection the pool opens for one starts its SQLite thread from
//! there, at the records service's priority, not the calls' (`switchboard/priority.rs`).

use std::sync::Arc;
use std::time::Duration;

use super::health::Readiness;
use super::ledger::staging::Staging;
use super::ledger::{now_ms, Ledger};
use super::metrics::{Metrics, SharedSnapshot, Snapshot};

/// Longest one read of the database may take for a scrape or a readiness check:
/// within Prometheus' default scrape timeout (10 s), and an answer well before it.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The records service as the admin endpoint sees it; cheap to clone.
#[derive(Debug, Clone)]
pub struct RecordsMonitor {
    /// The chain writer: its ingest count and its store.
    ledger: Ledger,
    /// The shared database's staging; `None` for a service alone on its database.
    staging: Option<Staging>,
    /// The `courtline_records_*` metrics.
    metrics: Arc<Metrics>,
    /// The runtime the service was opened on, where its database reads run;
    /// `None` when opened outside one (they then run where they are asked).
    runtime: Option<tokio::runtime::Handle>,
}

impl RecordsMonitor {
    /// The monitor of the service whose ledger is `ledger` (and staging `staging`,
    /// when it shares its database).
    pub fn new(ledger: Ledger, staging: Option<Staging>) -> RecordsMonitor {
        RecordsMonitor {
            metrics: Arc::new(Metrics::new(staging.is_some())),
            ledger,
            staging,
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Runs `read` on the service's runtime; `None` when that runtime has shut down.
    async fn on_records_runtime<T: Send + 'static>(
        &self,
        read: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        match &self.runtime {
            Some(runtime) => runtime.spawn(read).await.ok(),
            None => Some(read.await),
        }
    }

    /// `/metrics`: every `courtline_records_*` metric in the Prometheus text format.
    pub async fn metrics_text(&self) -> String {
        let store = self.ledger.store().clone();
        let progress = self
            .on_records_runtime(async move { bounded(store.chain_progress()).await })
            .await
            .flatten();
        let shared = match &self.staging {
            Some(staging) => {
                let counted = staging.clone();
                let backlog = self
                    .on_records_runtime(async move { bounded(counted.backlog()).await })
                    .await
                    .flatten();
                Some(SharedSnapshot {
                    sequencing: staging.sequencing(),
                    events_staged: staging.events_staged(),
                    backlog,
                })
            }
            None => None,
        };
        self.metrics.render(&Snapshot {
            events_ingested: self.ledger.events_ingested(),
            progress,
            shared,
            now_ms: now_ms(),
        })
    }

    /// `/readyz`: the database answers, at this build's migration.
    pub async fn readiness(&self) -> Readiness {
        let store = self.ledger.store().clone();
        let schema = self
            .on_records_runtime(async move {
                match tokio::time::timeout(READ_TIMEOUT, store.schema_version()).await {
                    Ok(Ok(version)) => Ok(version),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!("no answer within {} s", READ_TIMEOUT.as_secs())),
                }
            })
            .await
            .unwrap_or_else(|| Err("the records service has stopped".into()));
        Readiness { schema }
    }
}

/// What `read` gives within [`READ_TIMEOUT`]; `None` when it failed (logged at debug:
/// the scrape says so with `courtline_records_database_up`) or took longer.
async fn bounded<T, E: std::fmt::Display>(
    read: impl std::future::Future<Output = Result<T, E>>,
) -> Option<T> {
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(error)) => {
            tracing::debug!(%error, "metrics: cannot read the records database");
            None
        }
        Err(_) => {
            tracing::debug!("metrics: the records database did not answer in time");
            None
        }
    }
}
