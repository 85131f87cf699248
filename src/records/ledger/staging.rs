//! Switchboard events staged in a PostgreSQL database that several records services
//! share, and the sequencer's advisory lock (the store's SQL for this one mode).
//!
//! Any service stages (`staged_events`, keyed by node id and sequence number, so a
//! redelivery lands once) and acknowledges `LogEvents` once its rows are committed;
//! the one service holding [`SEQUENCER_LOCK`] on a connection of its own takes them
//! oldest first and has its [`super::Ledger`] chain them and delete them in one commit.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Row};

use super::{validate_batch, IngestOutcome, LedgerError};
use crate::contract::pb::event_body::Kind;
use crate::contract::pb::{EventBody, NodeEvent};
use crate::records::chain::HashAlgorithm;
use crate::records::store::{Change, StagedRun, StoreError};

/// The session advisory lock whose holder is the sequencer (ASCII "courtlnS").
pub const SEQUENCER_LOCK: i64 = 0x636f_7572_746c_6e53;

/// Connections a service keeps for staging: one per concurrent `LogEvents`.
const STAGING_CONNECTIONS: u32 = 8;

/// How long a staging statement or lock check may wait for a connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most staged events [`Staging::backlog`] counts: a count reads every row it counts,
/// and it runs on every metrics scrape; past this many (seconds of the sequencer's
/// work) the figure says "at least".
pub const BACKLOG_COUNT_LIMIT: i64 = 100_000;

/// One staged switchboard event, as the sequencer takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedRow {
    /// The reporting switchboard.
    pub node_id: String,
    /// Its sequence number.
    pub node_seq: i64,
    /// Protobuf `EventBody` holding the `NodeEvent`.
    pub body: Vec<u8>,
}

impl StagedRow {
    /// The switchboard event it holds.
    pub fn event(&self) -> Result<NodeEvent, LedgerError> {
        let corrupt = |detail: String| {
            LedgerError::Invalid(format!(
                "staged event {} #{} cannot be decoded: {detail}",
                self.node_id, self.node_seq
            ))
        };
        match EventBody::decode(self.body.as_slice()) {
            Ok(EventBody {
                kind: Some(Kind::NodeEvent(event)),
            }) => Ok(event),
            Ok(_) => Err(corrupt("not a switchboard event".into())),
            Err(error) => Err(corrupt(error.to_string())),
        }
    }
}

/// What deletes the events of `taken` (node id, ascending sequence numbers of staged
/// events chained or found on the chain) from staging: exactly these keys, as runs of
/// consecutive numbers — never a wider range, which could take a late event staged
/// meanwhile. For [`super::Ledger::ingest_batches`], which applies it in the commit
/// that chains them.
pub fn unstage(taken: Vec<(String, Vec<i64>)>) -> Option<Change> {
    let mut runs: Vec<StagedRun> = Vec::new();
    for (node_id, keys) in taken {
        for key in keys {
            match runs.last_mut() {
                Some(run) if run.node_id == node_id && run.last.checked_add(1) == Some(key) => {
                    run.last = key;
                }
                _ => runs.push(StagedRun {
                    node_id: node_id.clone(),
                    first: key,
                    last: key,
                }),
            }
        }
    }
    (!runs.is_empty()).then_some(Change::Unstage(runs))
}

/// The staging table of a shared database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Staging {
    /// Connections for staging and draining.
    pool: PgPool,
    /// Where to open the sequencer's own connection.
    options: PgConnectOptions,
    /// The chain's hash function: a redelivery is compared by its body's digest.
    algorithm: HashAlgorithm,
    /// What this service's staging and sequencer did, for its metrics.
    activity: Arc<Activity>,
}

/// What one service's staging and sequencer did, shared by the clones of its [`Staging`].
#[derive(Debug, Default)]
struct Activity {
    /// Whether this service holds the sequencer's lock now.
    sequencing: AtomicBool,
    /// Switchboard events this service staged (new ones, not duplicates) since it started.
    staged: AtomicU64,
}

fn query_error(operation: &str, source: sqlx::Error) -> LedgerError {
    LedgerError::Store(StoreError::Query {
        operation: operation.to_owned(),
        source,
    })
}

impl Staging {
    /// Connects to `database`, a `postgres://` URL whose schema the store has migrated.
    pub async fn open(database: &str, algorithm: HashAlgorithm) -> Result<Staging, StoreError> {
        let invalid = |detail: String| StoreError::InvalidLocation {
            database: database
                .split('@')
                .next_back()
                .unwrap_or_default()
                .to_owned(),
            detail,
        };
        if !database.starts_with("postgres://") && !database.starts_with("postgresql://") {
            return Err(invalid(
                "several records services can share only a PostgreSQL database \
                 ([records.service] shared_database needs a postgres:// URL)"
                    .into(),
            ));
        }
        let options: PgConnectOptions = database
            .parse()
            .map_err(|error: sqlx::Error| invalid(error.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(STAGING_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(|source| StoreError::Open {
                database: database
                    .split('@')
                    .next_back()
                    .unwrap_or_default()
                    .to_owned(),
                source,
            })?;
        Ok(Staging {
            pool,
            options,
            algorithm,
            activity: Arc::default(),
        })
    }

    /// Stages one switchboard's batch; returns once it is committed. An event already
    /// staged or chained identically counts as a duplicate; a different one under the
    /// same key is refused, as the ledger refuses it.
    pub async fn stage(&self, events: Vec<NodeEvent>) -> Result<IngestOutcome, LedgerError> {
        validate_batch(&events)?;
        let Some(first) = events.first() else {
            return Ok(IngestOutcome::default());
        };
        let node_id = first.node_id.clone();
        let mut keys = Vec::with_capacity(events.len());
        let mut bodies = Vec::with_capacity(events.len());
        let mut digests = Vec::with_capacity(events.len());
        for event in events {
            keys.push(i64::try_from(event.node_seq).unwrap_or(i64::MAX));
            let body = EventBody {
                kind: Some(Kind::NodeEvent(event)),
            }
            .encode_to_vec();
            digests.push(self.algorithm.digest(&body).to_vec());
            bodies.push(body);
        }
        let known = self.known_digests(&node_id, &keys).await?;
        let mut outcome = IngestOutcome::default();
        let mut fresh = Vec::new();
        for (index, seq) in keys.iter().enumerate() {
            match known.iter().find(|(stored, _)| stored == seq) {
                Some((_, digest)) if *digest != digests[index] => {
                    return Err(LedgerError::Conflict {
                        node_id,
                        node_seq: *seq as u64,
                    })
                }
                Some(_) => outcome.duplicates += 1,
                None => fresh.push(index),
            }
        }
        if fresh.is_empty() {
            return Ok(outcome);
        }
        let pick = |column: &[Vec<u8>]| -> Vec<Vec<u8>> {
            fresh.iter().map(|&index| column[index].clone()).collect()
        };
        let fresh_keys: Vec<i64> = fresh.iter().map(|&index| keys[index]).collect();
        let inserted = sqlx::query(
            "INSERT INTO staged_events (node_id, node_seq, body, body_digest) \
             SELECT $1, * FROM UNNEST($2::BIGINT[], $3::BYTEA[], $4::BYTEA[]) \
             ON CONFLICT (node_id, node_seq) DO NOTHING",
        )
        .bind(&node_id)
        .bind(&fresh_keys)
        .bind(pick(&bodies))
        .bind(pick(&digests))
        .execute(&self.pool)
        .await
        .map_err(|source| query_error("stage events", source))?
        .rows_affected();
        outcome.stored = u32::try_from(inserted).unwrap_or(u32::MAX);
        self.activity.staged.fetch_add(inserted, Ordering::Relaxed);
        if inserted < fresh_keys.len() as u64 {
            // Another service staged some of them at the same moment: the same events
            // (a switchboard that failed over), or it is a conflict after all.
            let raced = self.known_digests(&node_id, &fresh_keys).await?;
            for (seq, digest) in raced {
                let index = keys.iter().position(|key| *key == seq);
                if index.is_some_and(|index| digests[index] != digest) {
                    return Err(LedgerError::Conflict {
                        node_id,
                        node_seq: seq as u64,
                    });
                }
            }
            outcome.duplicates += (fresh_keys.len() as u64 - inserted) as u32;
        }
        Ok(outcome)
    }

    /// Digests stored under `node_id` and `keys`, chained or staged; the callers
    /// look up the keys they sent. A switchboard's batch is a run of consecutive
    /// numbers, so a dense batch is read by one range scan of each index: looking up
    /// each of a 1,000-event batch's keys (`= ANY`) was 2,000 index descents and cost
    /// PostgreSQL some 4 ms a batch on a busy 2-core machine, for a batch that is almost
    /// always new (BENCHMARKS.md, "Sustained rate through two services"). A sparse
    /// batch (keys spread over more than twice their count) is looked up key by key,
    /// so that two far-apart numbers never make the service read all between them.
    async fn known_digests(
        &self,
        node_id: &str,
        keys: &[i64],
    ) -> Result<Vec<(i64, Vec<u8>)>, LedgerError> {
        let (Some(first), Some(last)) = (keys.iter().min(), keys.iter().max()) else {
            return Ok(Vec::new());
        };
        let dense = last.abs_diff(*first) < 2 * keys.len() as u64;
        let query = if dense {
            sqlx::query(
                "SELECT node_seq, body_digest FROM events \
                 WHERE node_id = $1 AND node_seq BETWEEN $2 AND $3 \
                 UNION ALL \
                 SELECT node_seq, body_digest FROM staged_events \
                 WHERE node_id = $1 AND node_seq BETWEEN $2 AND $3",
            )
            .bind(node_id)
            .bind(first)
            .bind(last)
        } else {
            sqlx::query(
                "SELECT node_seq, body_digest FROM events WHERE node_id = $1 AND node_seq = ANY($2) \
                 UNION ALL \
                 SELECT node_seq, body_digest FROM staged_events WHERE node_id = $1 AND node_seq = ANY($2)",
            )
            .bind(node_id)
            .bind(keys)
        };
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|source| query_error("look up staged events", source))?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|source| query_error("read staged events", source))
    }

    /// The `limit` oldest staged events.
    pub async fn oldest(&self, limit: i64) -> Result<Vec<StagedRow>, LedgerError> {
        let rows = sqlx::query(
            "SELECT node_id, node_seq, body FROM staged_events ORDER BY arrival LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|source| query_error("read staged events", source))?;
        rows.iter()
            .map(|row| {
                Ok(StagedRow {
                    node_id: row.try_get(0)?,
                    node_seq: row.try_get(1)?,
                    body: row.try_get(2)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|source| query_error("read staged events", source))
    }

    /// Events waiting to be chained (every service's), counted up to
    /// [`BACKLOG_COUNT_LIMIT`].
    pub async fn backlog(&self) -> Result<i64, LedgerError> {
        sqlx::query("SELECT COUNT(*) FROM (SELECT 1 FROM staged_events LIMIT $1) AS waiting")
            .bind(BACKLOG_COUNT_LIMIT)
            .fetch_one(&self.pool)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|source| query_error("count staged events", source))
    }

    /// Takes the sequencer's lock on a connection of its own, if no one holds it:
    /// `None` while another service is the sequencer.
    pub async fn try_lead(&self) -> Result<Option<SequencerLock>, LedgerError> {
        let mut connection = self
            .options
            .clone()
            .application_name("courtline records sequencer")
            .connect()
            .await
            .map_err(|source| query_error("connect for the sequencer's lock", source))?;
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(SEQUENCER_LOCK)
            .fetch_one(&mut connection)
            .await
            .map_err(|source| query_error("take the sequencer's lock", source))?;
        if !held {
            let _ = connection.close().await;
            return Ok(None);
        }
        Ok(Some(SequencerLock { connection }))
    }

    /// Switchboard events this service staged since it started (duplicates not counted).
    pub fn events_staged(&self) -> u64 {
        self.activity.staged.load(Ordering::Relaxed)
    }

    /// Whether this service holds the sequencer's lock now.
    pub fn sequencing(&self) -> bool {
        self.activity.sequencing.load(Ordering::Relaxed)
    }

    /// Notes that this service took (`true`) or gave up the sequencer's lock.
    pub(super) fn set_sequencing(&self, sequencing: bool) {
        self.activity
            .sequencing
            .store(sequencing, Ordering::Relaxed);
    }

    /// Closes the pool (service shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The sequencer's session lock: held while this connection lives. When the process
/// or its connection dies, PostgreSQL ends the session and frees the lock for another.
#[derive(Debug)]
pub struct SequencerLock {
    /// The connection holding the lock; used for nothing else.
    connection: PgConnection,
}

impl SequencerLock {
    /// Whether the lock is still held: the session is alive and holds it.
    pub async fn held(&mut self) -> bool {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
             AND pid = pg_backend_pid() AND granted \
             AND ((classid::BIGINT << 32) | objid::BIGINT) = $1)",
        )
        .bind(SEQUENCER_LOCK)
        .fetch_one(&mut self.connection)
        .await
        .unwrap_or(false)
    }

    /// Gives the lock up (service shutdown), so another service takes over at once.
    pub async fn release(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(SEQUENCER_LOCK)
            .execute(&mut self.connection)
            .await;
        let _ = self.connection.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(node_id: &str, first: i64, last: i64) -> StagedRun {
        StagedRun {
            node_id: node_id.into(),
            first,
            last,
        }
    }

    #[test]
    fn unstaging_takes_exactly_the_keys_taken_as_runs_of_consecutive_numbers() {
        let taken = vec![
            ("a".to_owned(), vec![1, 2, 3, 5, 6]),
            ("b".to_owned(), vec![7]),
            ("a".to_owned(), vec![7, 8]),
        ];
        assert_eq!(
            unstage(taken),
            Some(Change::Unstage(vec![
                run("a", 1, 3),
                run("a", 5, 6),
                run("b", 7, 7),
                run("a", 7, 8),
            ]))
        );
        assert_eq!(unstage(vec![("a".to_owned(), Vec::new())]), None);
        assert_eq!(unstage(Vec::new()), None);
    }
}
