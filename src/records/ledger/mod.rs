//! The ledger: the one writer of the hash chain (records service process).
//!
//! Everything the records service stores goes through [`Ledger`]: switchboard
//! events ([`Ledger::ingest`], idempotent on node id + sequence number), flags,
//! access-log entries, token changes, purges and signed checkpoints. It holds the
//! chain head under a lock, hashes each new event onto it, and commits the
//! events together with their effect on the per-call rows ([`call_effect`], the
//! same function `verify` replays) in one store transaction.
//!
//! When several services share one PostgreSQL database, switchboard events are
//! staged by any of them ([`staging`]) and chained by the one [`sequencer`] through
//! this same ingest; the events a service makes itself (accesses, flags, reports,
//! tokens, purges) it appends directly. Every append reads the head under the
//! store's append lock ([`Store::append`]), so all of them extend one chain.

pub mod follower;
pub mod patterns;
pub mod sequencer;
pub mod signing;
pub mod staging;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::Mutex;
use tracing::{info, warn};

use self::signing::RecordsKey;
use super::chain::{
    event_hash, EventHeader, Hash, HashAlgorithm, StoredEvent, CONFIG_APPLIED, GENESIS_PREV,
};
use super::evidence::{self, Evidence, Fate};
use super::reports::workflow::{next_version, Action, Actor, Refusal};
use super::store::{
    CallRow, ChainOnto, Change, PatternMatchRow, RecordingRow, RecordingState, ReportRow, Store,
    StoreError, TokenRow,
};
use crate::contract::pb::event_body::Kind;
use crate::contract::pb::node_event::Kind as NodeKind;
use crate::contract::pb::{
    AccessEntry, CallFlagged, CallInterrupted, CallMilestone, CallRecord, CallState, ChainStarted,
    Checkpoint, EventBody, Flag, Milestone, NodeEvent, PurgeResponse, Purged, RecordingFinished,
    RecordingStored, Report, ReportChanged, ReportForm, ReportOpenedVia, Role, TokenChanged,
};
use crate::contract::MAX_BATCH;

/// Longest retention a purge ever uses as a floor: PRC Cybersecurity Law Art. 21 (six months).
pub const MIN_RETENTION_DAYS: u32 = 180;

/// Why the ledger refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request itself is wrong (bad ids, sequence out of order ...).
    #[error("{0}")]
    Invalid(String),
    /// A different event is already stored under the same node id and sequence number.
    #[error(
        "node {node_id} sequence {node_seq}: a different event is already stored under this key \
         (was the switchboard's spool wiped while keeping its node id?)"
    )]
    Conflict {
        /// The node.
        node_id: String,
        /// The sequence number.
        node_seq: u64,
    },
    /// The named call does not exist.
    #[error("no call with id {0}")]
    NoSuchCall(String),
    /// A token with that name exists already.
    #[error("a token named {0:?} already exists (revoked ones keep their name)")]
    TokenExists(String),
    /// No valid token has that name.
    #[error("no valid token named {0:?}")]
    NoSuchToken(String),
    /// The stored chain was made with another hash algorithm than configured.
    #[error(
        "the records chain uses {stored}, but [records.service] hash_algorithm is {configured}; \
         a chain keeps the algorithm it started with — set hash_algorithm = \"{stored}\""
    )]
    AlgorithmMismatch {
        /// What the chain's first event says.
        stored: String,
        /// What the configuration says.
        configured: String,
    },
    /// No report has that id.
    #[error("no report with id {0}")]
    NoSuchReport(String),
    /// The report changed since the version the request was based on.
    #[error("report {report_id} is at version {current}, not {requested}: read it again and redo the change")]
    StaleReport {
        /// The report.
        report_id: String,
        /// Its version now.
        current: u32,
        /// The version the request named.
        requested: u32,
    },
    /// The report workflow refused the change.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A stored body could not be decoded.
    #[error("event #{seq} cannot be decoded: {detail}")]
    Corrupt {
        /// Chain position.
        seq: i64,
        /// What failed.
        detail: String,
    },
}

/// When checkpoints are signed.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    /// After this many events since the last checkpoint.
    pub every_events: u64,
    /// At least this often while events keep arriving.
    pub every: Duration,
}

/// What an ingest stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Newly stored events.
    pub stored: u32,
    /// Events already stored, identical.
    pub duplicates: u32,
}

/// The head of the chain as the ledger knows it.
#[derive(Debug)]
struct ChainHead {
    /// Position of the last event (0 when empty).
    seq: i64,
    /// Hash of the last event.
    hash: Hash,
    /// Events appended since the last checkpoint.
    since_checkpoint: u64,
}

/// The chain writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct Ledger {
    /// Inner state shared by clones.
    inner: Arc<LedgerInner>,
}

/// What the clones of a [`Ledger`] share.
#[derive(Debug)]
struct LedgerInner {
    /// Where events go.
    store: Arc<dyn Store>,
    /// The chain's hash function.
    algorithm: HashAlgorithm,
    /// Signs checkpoints and manifests.
    key: RecordsKey,
    /// When to sign checkpoints.
    policy: CheckpointPolicy,
    /// The head; held while appending so the chain has one writer.
    head: Mutex<ChainHead>,
    /// Where kept call recordings go; `None`: recordings are only chained.
    evidence: Option<Evidence>,
    /// Switchboard events stored since the service started, for the ingest-rate metric.
    ingested: AtomicU64,
    /// Where finished calls are announced for the pattern alerts, once they watch.
    finished_calls: std::sync::OnceLock<patterns::FinishedCallSender>,
    /// Whether a follower writes the derived tables (a shared database): appends
    /// leave them out, and finished calls are announced once the follower wrote them.
    derived_by_follower: AtomicBool,
    /// Woken after each commit of this ledger's: the follower's cue to look.
    appended: tokio::sync::Notify,
}

/// The kind name stored (and hashed) with an event body.
pub fn kind_of(body: &EventBody) -> &'static str {
    match &body.kind {
        None => "empty",
        Some(Kind::ChainStarted(_)) => "chain_started",
        Some(Kind::NodeEvent(event)) => match &event.kind {
            Some(NodeKind::Milestone(_)) => "milestone",
            Some(NodeKind::Ended(_)) => "ended",
            Some(NodeKind::NodeStarted(_)) => "node_started",
            Some(NodeKind::Recording(_)) => "recording",
            Some(NodeKind::ConfigApplied(_)) => CONFIG_APPLIED,
            None => "node_empty",
        },
        Some(Kind::Interrupted(_)) => "interrupted",
        Some(Kind::Flagged(_)) => "flagged",
        Some(Kind::Access(_)) => "access",
        Some(Kind::Checkpoint(_)) => "checkpoint",
        Some(Kind::Purged(_)) => "purged",
        Some(Kind::Token(_)) => "token",
        Some(Kind::Report(_)) => "report",
        Some(Kind::RecordingStored(_)) => "recording_stored",
        Some(Kind::PatternMatched(_)) => "pattern_matched",
    }
}

/// The report version `body` chains, if it is one. Appends write its row; verify replays it.
pub fn report_effect(body: &EventBody) -> Option<&Report> {
    match &body.kind {
        Some(Kind::Report(changed)) => changed.report.as_ref(),
        _ => None,
    }
}

/// The operator and mechanism of a switchboard's report request, when `milestone` is one.
fn report_request(milestone: &CallMilestone) -> Option<(String, String)> {
    if milestone.milestone() != Milestone::ReportRequested {
        return None;
    }
    let operator = [
        milestone.operator_uri.as_str(),
        milestone
            .snapshot
            .as_ref()
            .map_or("", |snapshot| snapshot.operator_uri.as_str()),
    ]
    .into_iter()
    .find(|uri| !uri.is_empty())
    .unwrap_or("operator")
    .to_owned();
    Some((operator, milestone.report_via.clone()))
}

/// What an event does to its call's row.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEffect {
    /// The row becomes this record in this state.
    Upsert {
        /// The record.
        record: Box<CallRecord>,
        /// The call's state after the event.
        state: CallState,
        /// The reporting switchboard.
        node_id: String,
    },
    /// The row gets flagged.
    Flag,
}

/// The effect of `body` on its call's row, if any. Ingest writes it; verify replays it.
pub fn call_effect(body: &EventBody) -> Option<CallEffect> {
    match body.kind.as_ref()? {
        Kind::NodeEvent(event) => {
            let (record, state) = match event.kind.as_ref()? {
                NodeKind::Milestone(milestone) => {
                    (Box::new(milestone.snapshot.clone()?), CallState::InProgress)
                }
                NodeKind::Ended(record) => (Box::new(record.clone()), CallState::Ended),
                NodeKind::NodeStarted(_) | NodeKind::Recording(_) | NodeKind::ConfigApplied(_) => {
                    return None
                }
            };
            Some(CallEffect::Upsert {
                record,
                state,
                node_id: event.node_id.clone(),
            })
        }
        Kind::Interrupted(interrupted) => {
            let record = Box::new(interrupted.snapshot.clone()?);
            let node_id = record.node_id.clone();
            Some(CallEffect::Upsert {
                record,
                state: CallState::Interrupted,
                node_id,
            })
        }
        Kind::Flagged(_) => Some(CallEffect::Flag),
        _ => None,
    }
}

/// What the event at chain position `seq` (`header`, `body`) does to the tables derived
/// from the chain ([`Change::is_derived`]): its call's row, a report's or a kept
/// recording's mark on it. Every append writes them with its events in a lone service;
/// in a shared database the follower ([`follower`]) applies them to the chained events
/// after the chain, the same changes in the same order.
pub fn derived_changes(seq: i64, header: &EventHeader, body: &EventBody) -> Vec<Change> {
    let mut changes = Vec::new();
    match call_effect(body) {
        Some(CallEffect::Upsert {
            record,
            state,
            node_id,
        }) => changes.push(Change::UpsertCall(CallRow {
            record,
            state,
            node_id,
            last_seq: seq,
        })),
        Some(CallEffect::Flag) => changes.push(Change::FlagCall {
            call_id: header.call_id.clone().unwrap_or_default(),
            last_seq: seq,
            at_ms: header.at_ms,
        }),
        None => {}
    }
    if let Some(report) = report_effect(body) {
        changes.push(Change::MarkReported(ReportRow::of(report, seq)));
    }
    let recorded = match &body.kind {
        Some(Kind::NodeEvent(event)) if matches!(event.kind, Some(NodeKind::Recording(_))) => {
            Some(event.call_id.clone())
        }
        Some(Kind::RecordingStored(_)) => header.call_id.clone(),
        _ => None,
    };
    changes.extend(
        recorded
            .filter(|call_id| !call_id.is_empty())
            .map(|call_id| Change::MarkRecorded { call_id }),
    );
    changes
}

/// The row `effect` leaves, given the row before (`None`: no row yet).
pub fn apply_effect(before: Option<CallRecord>, effect: CallEffect) -> Option<CallRecord> {
    match effect {
        CallEffect::Upsert {
            record,
            state,
            node_id,
        } => Some(CallRecord {
            state: state as i32,
            flagged: before.is_some_and(|row| row.flagged),
            node_id,
            ..*record
        }),
        CallEffect::Flag => before.map(|row| CallRecord {
            flagged: true,
            ..row
        }),
    }
}

/// Starts the chain in `store` with `algorithm` unless it has a first event already —
/// decided under the store's append lock, so two services opening one empty database
/// start one chain.
async fn start_chain(store: &dyn Store, algorithm: HashAlgorithm) -> Result<(), LedgerError> {
    if store.head().await?.is_some() {
        return Ok(());
    }
    let started: ChainOnto<'_> = Box::new(move |stored| {
        if stored.is_some() {
            return Ok((Vec::new(), Vec::new()));
        }
        let body = EventBody {
            kind: Some(Kind::ChainStarted(ChainStarted {
                hash_algorithm: algorithm.name().to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })),
        };
        let mut batch = Batch {
            algorithm,
            stored_at_ms: now_ms(),
            seq: 0,
            hash: GENESIS_PREV,
            events: Vec::new(),
            changes: Vec::new(),
        };
        batch.chain(Pending::new(None, now_ms(), body));
        Ok((batch.events, batch.changes))
    });
    if store.append(started).await?.is_some() {
        info!(algorithm = algorithm.name(), "started a new records chain");
    }
    Ok(())
}

/// A stored event's hash as a chain hash; anything but 32 bytes means a corrupt row.
fn stored_hash(seq: i64, hash: &[u8]) -> Result<Hash, StoreError> {
    hash.try_into().map_err(|_| StoreError::Corrupt {
        key: format!("event #{seq}"),
        detail: "hash is not 32 bytes".into(),
    })
}

/// A switchboard's sequence number as stored (a column of signed integers).
fn key_of(node_seq: u64) -> i64 {
    i64::try_from(node_seq).unwrap_or(i64::MAX)
}

/// Wall-clock now, Unix ms.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Whether an append ends with a signed checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sign {
    /// When the events since the last checkpoint reach the policy's count.
    WhenDue,
    /// Always (the timer, shutdown).
    Now,
}

/// Events being hashed onto the chain for one commit.
struct Batch {
    /// The chain's hash function.
    algorithm: HashAlgorithm,
    /// When the service stores them (the same for the whole commit).
    stored_at_ms: i64,
    /// Position of the last event chained so far.
    seq: i64,
    /// Hash of the last event chained so far.
    hash: Hash,
    /// The chained events.
    events: Vec<StoredEvent>,
    /// What they do to call rows and tokens.
    changes: Vec<Change>,
}

impl Batch {
    /// Hashes `item` onto the chain after the last event.
    fn chain(&mut self, item: Pending) {
        self.seq += 1;
        let seq = self.seq;
        let body = item.body.encode_to_vec();
        let digest = self.algorithm.digest(&body);
        let header = EventHeader {
            stored_at_ms: self.stored_at_ms,
            ..item.header
        };
        let hash = event_hash(self.algorithm, &self.hash, &header, &digest);
        if let Some(report) = report_effect(&item.body) {
            self.changes
                .push(Change::PutReport(ReportRow::of(report, seq)));
        }
        self.changes.extend(item.change.map(|change| match change {
            Change::RecordRecording(row) => Change::RecordRecording(RecordingRow {
                last_seq: seq,
                ..row
            }),
            Change::PutPatternMatch(row) => Change::PutPatternMatch(PatternMatchRow { seq, ..row }),
            other => other,
        }));
        self.changes
            .extend(derived_changes(seq, &header, &item.body));
        self.events.push(StoredEvent {
            seq,
            header,
            body: Some(body),
            body_digest: digest.to_vec(),
            prev_hash: self.hash.to_vec(),
            hash: hash.to_vec(),
        });
        self.hash = hash;
    }
}

/// An event not yet on the chain.
struct Pending {
    /// Header without `stored_at_ms` (set at commit).
    header: EventHeader,
    /// The body to store.
    body: EventBody,
    /// A change to tokens or retention that goes with it.
    change: Option<Change>,
}

impl Pending {
    fn new(call_id: Option<String>, at_ms: i64, body: EventBody) -> Pending {
        let (node_id, node_seq) = match &body.kind {
            Some(Kind::NodeEvent(event)) => {
                (Some(event.node_id.clone()), Some(key_of(event.node_seq)))
            }
            _ => (None, None),
        };
        Pending {
            header: EventHeader {
                kind: kind_of(&body).to_owned(),
                node_id,
                node_seq,
                call_id,
                at_ms,
                stored_at_ms: 0,
            },
            body,
            change: None,
        }
    }
}

impl Ledger {
    /// Opens the chain in `store`, starting it (with `algorithm`) if it is empty.
    pub async fn open(
        store: Arc<dyn Store>,
        algorithm: HashAlgorithm,
        key: RecordsKey,
        policy: CheckpointPolicy,
        evidence: Option<Evidence>,
    ) -> Result<Ledger, LedgerError> {
        start_chain(store.as_ref(), algorithm).await?;
        let last = store.head().await?.ok_or_else(|| LedgerError::Corrupt {
            seq: 1,
            detail: "the chain was started but its head cannot be read".into(),
        })?;
        let first = store.event(1).await?;
        let stored = first
            .as_ref()
            .and_then(|event| event.body.as_deref())
            .and_then(|body| EventBody::decode(body).ok())
            .and_then(|body| match body.kind {
                Some(Kind::ChainStarted(started)) => Some(started.hash_algorithm),
                _ => None,
            })
            .ok_or_else(|| LedgerError::Corrupt {
                seq: 1,
                detail: "the first event does not start a chain".into(),
            })?;
        if stored != algorithm.name() {
            return Err(LedgerError::AlgorithmMismatch {
                stored,
                configured: algorithm.name().to_owned(),
            });
        }
        let head = ChainHead {
            seq: last.seq,
            hash: stored_hash(last.seq, &last.hash)?,
            // Sign the head (a new chain's first event too) soon after start.
            since_checkpoint: 1,
        };
        let ledger = Ledger {
            inner: Arc::new(LedgerInner {
                store,
                algorithm,
                key,
                policy,
                head: Mutex::new(head),
                evidence,
                ingested: AtomicU64::new(0),
                finished_calls: std::sync::OnceLock::new(),
                derived_by_follower: AtomicBool::new(false),
                appended: tokio::sync::Notify::new(),
            }),
        };
        // A shared database's follower may have stopped short of the head: an append
        // that writes the derived tables itself needs them at the head it extends.
        ledger.apply_derived_through(last.seq).await?;
        Ok(ledger)
    }

    /// The store behind the ledger (for reads).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The evidence store, if recordings are kept.
    pub fn evidence(&self) -> Option<&Evidence> {
        self.inner.evidence.as_ref()
    }

    /// Whether call `call_id` is reported or flagged by now (stored, or a report opening
    /// earlier in this batch, `pending`): what keeps an `on_report` recording.
    async fn call_has_report_or_flag(
        &self,
        pending: &[Pending],
        call_id: &str,
    ) -> Result<bool, LedgerError> {
        let reported_in_batch = pending
            .iter()
            .filter_map(|item| report_effect(&item.body))
            .any(|report| report.call_id == call_id);
        Ok(reported_in_batch || self.inner.store.call_has_report_or_flag(call_id).await?)
    }

    /// Carries out what becomes of a finished recording (before its event is committed:
    /// a retried ingest finds the file moved or deleted already, and does the same) and
    /// returns the row it leaves. File trouble is recorded in the row, never refused:
    /// the switchboard's later events must not wait behind one file.
    async fn settle_recording(
        &self,
        pending: &[Pending],
        call_id: &str,
        recording: &RecordingFinished,
    ) -> Result<RecordingRow, LedgerError> {
        let on_hold = self.call_has_report_or_flag(pending, call_id).await?;
        let evidence = self.inner.evidence.clone();
        let local = evidence.as_ref().is_some_and(Evidence::local);
        let fate = evidence::fate(recording, on_hold, local);
        let source = std::path::PathBuf::from(&recording.path);
        let (id, sha256, bytes) = (
            call_id.to_owned(),
            recording.sha256.clone(),
            recording.bytes,
        );
        let outcome = match (&fate, evidence) {
            (Fate::Keep, Some(evidence)) => {
                tokio::task::spawn_blocking(move || {
                    evidence.take_over(&id, &source, &sha256, bytes)
                })
                .await
            }
            // A remote service's switchboard deletes its own copy (told on upload).
            (Fate::Delete, Some(evidence)) if !evidence.local() => Ok(Ok(())),
            (Fate::Delete, _) => {
                tokio::task::spawn_blocking(move || evidence::discard(&source)).await
            }
            _ => Ok(Ok(())),
        };
        let problem = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(error) => Some(error.to_string()),
        };
        let (state, detail) = match (fate, problem) {
            (Fate::Failed(why), _) => (RecordingState::Failed, why),
            (Fate::NotTransferred, _) => (
                RecordingState::NotTransferred,
                evidence::NOT_TRANSFERRED.to_owned(),
            ),
            (Fate::Keep, Some(problem)) => {
                warn!(call = call_id, %problem, "could not take a call recording over");
                (
                    RecordingState::Failed,
                    format!(
                        "the records service could not take {} over: {problem}",
                        recording.path
                    ),
                )
            }
            (Fate::Delete, None) if !local => (
                RecordingState::Deleted,
                evidence::DELETED_BY_SWITCHBOARD.to_owned(),
            ),
            (Fate::Delete, Some(problem)) => {
                warn!(call = call_id, %problem, "could not delete an unreported call recording");
                (
                    RecordingState::Deleted,
                    format!("could not delete {}: {problem}", recording.path),
                )
            }
            (fate, None) => (fate.state(), String::new()),
        };
        Ok(RecordingRow {
            call_id: call_id.to_owned(),
            sha256: recording.sha256.clone(),
            bytes: i64::try_from(recording.bytes).unwrap_or(i64::MAX),
            sample_rate: i64::from(recording.sample_rate),
            channels: i64::from(recording.channels),
            duration_ms: i64::from(recording.duration_ms),
            state,
            detail,
            last_seq: 0,
        })
    }

    /// The chain's hash function.
    pub fn algorithm(&self) -> HashAlgorithm {
        self.inner.algorithm
    }

    /// The signing key.
    pub fn key(&self) -> &RecordsKey {
        &self.inner.key
    }

    /// The current head: (position, hash). Read from the store, which another service
    /// sharing the database may have moved; this service's last append if it cannot be.
    pub async fn head(&self) -> (i64, Hash) {
        if let Ok(Some(last)) = self.inner.store.head().await {
            if let Ok(hash) = stored_hash(last.seq, &last.hash) {
                return (last.seq, hash);
            }
        }
        let head = self.inner.head.lock().await;
        (head.seq, head.hash)
    }

    /// Hashes `pending` onto the chain and commits it; returns the last position.
    /// The caller must not hold the head lock.
    async fn append(&self, pending: Vec<Pending>) -> Result<i64, LedgerError> {
        let mut head = self.inner.head.lock().await;
        self.append_locked(&mut head, pending, Sign::WhenDue).await
    }

    /// Hashes `pending` onto the chain and commits it in one transaction — with a
    /// signed checkpoint after each event that makes `every_events` since the last
    /// one (`Sign::WhenDue`), or of the new head as the last event (`Sign::Now`), so
    /// a checkpoint costs no commit (and no fsync) of its own. Returns the last
    /// position of `pending`.
    async fn append_locked(
        &self,
        head: &mut ChainHead,
        pending: Vec<Pending>,
        sign: Sign,
    ) -> Result<i64, LedgerError> {
        self.append_settling(head, pending, sign, None).await
    }

    /// [`Ledger::append_locked`], with `settle` applied in the same transaction (even
    /// when nothing is chained).
    async fn append_settling(
        &self,
        head: &mut ChainHead,
        pending: Vec<Pending>,
        sign: Sign,
        settle: Option<Change>,
    ) -> Result<i64, LedgerError> {
        if pending.is_empty() && sign == Sign::WhenDue && settle.is_none() {
            return Ok(head.seq);
        }
        let every = self.inner.policy.every_events.max(1);
        let since_before = head.since_checkpoint;
        // After the commit: events since the last checkpoint, and whether one ends it.
        let signed = std::sync::Mutex::new((since_before, false));
        let signed_out = &signed;
        // The finished calls among the changes, for the pattern alerts once committed.
        let finished = std::sync::Mutex::new(Vec::new());
        let watching = self.inner.finished_calls.get().is_some() && !self.derived_by_follower();
        let finished_out = &finished;
        // Chained onto the head as stored, which another service sharing the database
        // may have moved since this one last appended.
        let chain: ChainOnto<'_> = Box::new(move |stored| {
            let (seq, hash) = match stored {
                None => (0, GENESIS_PREV),
                Some((seq, hash)) => (seq, stored_hash(seq, &hash)?),
            };
            let mut batch = Batch {
                algorithm: self.inner.algorithm,
                stored_at_ms: now_ms(),
                seq,
                hash,
                events: Vec::with_capacity(pending.len() + 1),
                changes: Vec::new(),
            };
            let (mut since, mut ends_signed) = (since_before, false);
            for item in pending {
                batch.chain(item);
                since += 1;
                ends_signed = sign == Sign::WhenDue && since >= every;
                if ends_signed {
                    batch.chain(self.checkpoint(batch.seq, &batch.hash));
                    since = 0;
                }
            }
            if sign == Sign::Now {
                batch.chain(self.checkpoint(batch.seq, &batch.hash));
                (since, ends_signed) = (0, true);
            }
            *signed_out.lock().unwrap_or_else(|p| p.into_inner()) = (since, ends_signed);
            batch.changes.extend(settle);
            if watching {
                *finished_out.lock().unwrap_or_else(|p| p.into_inner()) =
                    patterns::FinishedCallSender::finished(&batch.changes);
            }
            Ok((batch.events, batch.changes))
        });
        let Some((seq, hash)) = self.inner.store.append(chain).await? else {
            return Ok(head.seq);
        };
        self.inner.appended.notify_one();
        if let Some(watcher) = self.inner.finished_calls.get() {
            let finished = finished.into_inner().unwrap_or_else(|p| p.into_inner());
            watcher.announce(finished);
        }
        let (since, ends_signed) = signed.into_inner().unwrap_or_else(|p| p.into_inner());
        head.seq = seq;
        head.hash = stored_hash(seq, &hash)?;
        head.since_checkpoint = since;
        Ok(if ends_signed { seq - 1 } else { seq })
    }

    /// A checkpoint event signing the chain head (`seq`, `hash`).
    fn checkpoint(&self, seq: i64, hash: &Hash) -> Pending {
        let signed_at_ms = now_ms();
        let covers_seq = u64::try_from(seq).unwrap_or_default();
        let key = &self.inner.key;
        let signature = key.sign_checkpoint(covers_seq, hash, signed_at_ms);
        let body = EventBody {
            kind: Some(Kind::Checkpoint(Checkpoint {
                covers_seq,
                covers_hash: hash.to_vec(),
                signed_at_ms,
                public_key: key.public_key().to_bytes().to_vec(),
                signature: signature.to_bytes().to_vec(),
            })),
        };
        Pending::new(None, signed_at_ms, body)
    }

    /// Signs a checkpoint if any event arrived since the last one (timer and shutdown).
    pub async fn checkpoint_if_due(&self) -> Result<(), LedgerError> {
        let mut head = self.inner.head.lock().await;
        if head.since_checkpoint > 0 {
            self.append_locked(&mut head, Vec::new(), Sign::Now).await?;
        }
        Ok(())
    }

    /// Signs checkpoints every `policy.every` until `stop` completes, then once more.
    pub async fn run_checkpoints(&self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(self.inner.policy.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = &mut stop => break,
            }
            if let Err(error) = self.checkpoint_if_due().await {
                warn!(%error, "could not sign a records checkpoint; will retry");
            }
        }
        if let Err(error) = self.checkpoint_if_due().await {
            warn!(%error, "could not sign the final records checkpoint");
        }
    }

    /// Stores a batch of one switchboard's events. Events already stored identically
    /// are counted as duplicates; a node restart marks that node's open calls interrupted.
    pub async fn ingest(&self, events: Vec<NodeEvent>) -> Result<IngestOutcome, LedgerError> {
        let mut outcomes = self.ingest_batches(vec![events], |_| None).await?;
        outcomes.pop().unwrap_or(Ok(IngestOutcome::default()))
    }

    /// Stores several batches (each one switchboard's, as [`Ledger::ingest`] stores one)
    /// in one commit — more only when a switchboard restarted in them — with
    /// `settle(accepted)` applied in the last: the sequencer deletes the staged events
    /// it chains (each accepted batch's node and sequence numbers, duplicates included)
    /// in the very transaction that chains them. A batch that is invalid or holds a
    /// different event under a stored key is left out whole, its error in its place
    /// of the answer; the others are stored. Fails only when the store does.
    pub async fn ingest_batches(
        &self,
        batches: Vec<Vec<NodeEvent>>,
        settle: impl FnOnce(Vec<(String, Vec<i64>)>) -> Option<Change>,
    ) -> Result<Vec<Result<IngestOutcome, LedgerError>>, LedgerError> {
        let mut head = self.inner.head.lock().await;
        let mut outcomes = Vec::with_capacity(batches.len());
        let mut settled = Vec::new();
        let mut pending = Vec::new();
        let mut stored = 0;
        for events in batches {
            // Looked up under the lock: no concurrent ingest can store them in between.
            let fresh = match self.fresh_events(&events).await {
                Ok(fresh) => fresh,
                Err(error @ LedgerError::Store(_)) => return Err(error),
                Err(refused) => {
                    outcomes.push(Err(refused));
                    continue;
                }
            };
            let mut outcome = IngestOutcome::default();
            if let Some(first) = events.first() {
                let keys = events.iter().map(|event| key_of(event.node_seq)).collect();
                settled.push((first.node_id.clone(), keys));
            }
            for (event, fresh) in events.into_iter().zip(fresh) {
                if !fresh {
                    outcome.duplicates += 1;
                    continue;
                }
                outcome.stored += 1;
                self.chain_node_event(&mut head, &mut pending, event)
                    .await?;
            }
            stored += u64::from(outcome.stored);
            outcomes.push(Ok(outcome));
        }
        self.append_settling(&mut head, pending, Sign::WhenDue, settle(settled))
            .await?;
        self.inner.ingested.fetch_add(stored, Ordering::Relaxed);
        Ok(outcomes)
    }

    /// Which of one switchboard's `events` are new; `Invalid` or `Conflict` when the
    /// batch is refused. The caller holds the head lock.
    async fn fresh_events(&self, events: &[NodeEvent]) -> Result<Vec<bool>, LedgerError> {
        validate_batch(events)?;
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(Vec::new());
        };
        let existing = self
            .inner
            .store
            .node_event_digests(
                &first.node_id,
                key_of(first.node_seq),
                key_of(last.node_seq),
            )
            .await?;
        let mut fresh = Vec::with_capacity(events.len());
        for event in events {
            let seq = key_of(event.node_seq);
            let Some((_, digest)) = existing.iter().find(|(stored, _)| *stored == seq) else {
                fresh.push(true);
                continue;
            };
            let body = EventBody {
                kind: Some(Kind::NodeEvent(event.clone())),
            };
            if digest.as_slice()
                != self
                    .inner
                    .algorithm
                    .digest(&body.encode_to_vec())
                    .as_slice()
            {
                return Err(LedgerError::Conflict {
                    node_id: first.node_id.clone(),
                    node_seq: event.node_seq,
                });
            }
            fresh.push(false);
        }
        Ok(fresh)
    }

    /// Adds a new switchboard event to `pending`, with the report its operator's keys
    /// open and what becomes of its recording; on a switchboard's restart, commits
    /// what is pending and adds the calls it left open, marked interrupted.
    async fn chain_node_event(
        &self,
        head: &mut ChainHead,
        pending: &mut Vec<Pending>,
        event: NodeEvent,
    ) -> Result<(), LedgerError> {
        let node_id = event.node_id.clone();
        let call_id = (!event.call_id.is_empty()).then(|| event.call_id.clone());
        let at_ms = event.at_ms;
        let restart_seq = event.node_seq;
        let restart = matches!(event.kind, Some(NodeKind::NodeStarted(_)));
        let requested = match &event.kind {
            Some(NodeKind::Milestone(milestone)) => report_request(milestone)
                .map(|(operator, via)| (operator, via, milestone.snapshot.clone())),
            _ => None,
        };
        let recording = match (&event.kind, &call_id) {
            (Some(NodeKind::Recording(recording)), Some(call_id)) => {
                Some(self.settle_recording(pending, call_id, recording).await?)
            }
            _ => None,
        };
        let body = EventBody {
            kind: Some(Kind::NodeEvent(event)),
        };
        let mut item = Pending::new(call_id, at_ms, body);
        item.change = recording.map(Change::RecordRecording);
        pending.push(item);
        if let Some((operator, via, Some(snapshot))) = requested {
            if let Some(opening) = self
                .open_by_keys(pending, &operator, &via, &snapshot, at_ms)
                .await?
            {
                pending.push(opening);
            }
        }
        if restart {
            // Calls reported open before this restart (some perhaps in this very batch)
            // can no longer end normally: store what is pending, then mark them, as
            // their rows say once they hold the chain up to here.
            self.append_locked(head, std::mem::take(pending), Sign::WhenDue)
                .await?;
            self.apply_derived_through(head.seq).await?;
            for call in self.inner.store.open_calls(&node_id).await? {
                let call_id = call.call_id.clone();
                let body = EventBody {
                    kind: Some(Kind::Interrupted(CallInterrupted {
                        node_restart_seq: restart_seq,
                        snapshot: Some(call),
                    })),
                };
                pending.push(Pending::new(Some(call_id), at_ms, body));
            }
            if !pending.is_empty() {
                warn!(node = %node_id, calls = pending.len(), "switchboard restarted with calls up: marked interrupted");
            }
        }
        Ok(())
    }

    /// Chains that call `call_id`'s uploaded recording is in the evidence store and
    /// marks its row stored; returns the event's position, or 0 when the row is not
    /// waiting for an upload (a concurrent upload stored it first). Read and written
    /// under the chain lock, so one upload is chained once.
    pub async fn recording_stored(
        &self,
        call_id: &str,
        stored: RecordingStored,
    ) -> Result<i64, LedgerError> {
        let mut head = self.inner.head.lock().await;
        let waiting = self
            .inner
            .store
            .recording(call_id)
            .await?
            .is_some_and(|row| row.state == RecordingState::NotTransferred);
        if !waiting {
            return Ok(0);
        }
        let mut pending = Pending::new(
            Some(call_id.to_owned()),
            now_ms(),
            EventBody {
                kind: Some(Kind::RecordingStored(stored)),
            },
        );
        pending.change = Some(Change::RecordingUploaded {
            call_id: call_id.to_owned(),
        });
        self.append_locked(&mut head, vec![pending], Sign::WhenDue)
            .await
    }

    /// Switchboard events stored since the service started (any switchboard's).
    pub fn events_ingested(&self) -> u64 {
        self.inner.ingested.load(Ordering::Relaxed)
    }

    /// Records one access (query, export, flag, verify, admin action) in the chain.
    pub async fn record_access(&self, entry: AccessEntry) -> Result<i64, LedgerError> {
        let at_ms = entry.at_ms;
        let body = EventBody {
            kind: Some(Kind::Access(entry)),
        };
        self.append(vec![Pending::new(None, at_ms, body)]).await
    }

    /// Flags a call; returns the flag event's chain position.
    pub async fn flag(&self, call_id: &str, flag: Flag) -> Result<i64, LedgerError> {
        if self.inner.store.get_call(call_id).await?.is_none() {
            return Err(LedgerError::NoSuchCall(call_id.to_owned()));
        }
        let at_ms = flag.flagged_at_ms;
        let body = EventBody {
            kind: Some(Kind::Flagged(CallFlagged { flag: Some(flag) })),
        };
        self.append(vec![Pending::new(Some(call_id.to_owned()), at_ms, body)])
            .await
    }

    /// The report a switchboard's key sequence opens, or `None` when this operator has
    /// a report on the call already (stored, or opening in `pending`): a second press
    /// is on the chain as its milestone, and does not make a second form to fill in.
    async fn open_by_keys(
        &self,
        pending: &[Pending],
        operator: &str,
        via: &str,
        call: &CallRecord,
        at_ms: i64,
    ) -> Result<Option<Pending>, LedgerError> {
        let opened_by_operator = |report: &Report| {
            report.opened_by == operator && report.opened_via() == ReportOpenedVia::Keys
        };
        let mut existing = self.inner.store.reports_of_call(&call.call_id).await?;
        let stored = existing
            .drain(..)
            .filter_map(|row| row.decode().ok())
            .any(|report| opened_by_operator(&report));
        let in_batch = pending
            .iter()
            .filter_map(|item| report_effect(&item.body))
            .any(|report| report.call_id == call.call_id && opened_by_operator(report));
        if stored || in_batch {
            return Ok(None);
        }
        let actor = Actor {
            name: operator.to_owned(),
            role: Role::Switchboard,
        };
        let action = Action::Open {
            report_id: uuid::Uuid::new_v4().to_string(),
            call_id: call.call_id.clone(),
            via: ReportOpenedVia::Keys,
            keys_via: via.to_owned(),
            form: ReportForm::default(),
            court_name: call.court_name.clone(),
            line_number: call.line_number.clone(),
            call_operator: call.operator_uri.clone(),
        };
        let report = next_version(None, action, &actor, at_ms)?;
        info!(call = %call.call_id, report = %report.report_id, operator, via, "the operator's keys opened a report");
        Ok(Some(report_pending(report, "opened")))
    }

    /// Opens a report on `call_id` for `actor` (console or CLI); returns it and the
    /// chain position of its first version.
    pub async fn open_report(
        &self,
        call_id: &str,
        via: ReportOpenedVia,
        form: ReportForm,
        actor: &Actor,
    ) -> Result<(Report, i64), LedgerError> {
        let call = self
            .inner
            .store
            .get_call(call_id)
            .await?
            .ok_or_else(|| LedgerError::NoSuchCall(call_id.to_owned()))?;
        let action = Action::Open {
            report_id: uuid::Uuid::new_v4().to_string(),
            call_id: call_id.to_owned(),
            via,
            keys_via: String::new(),
            form,
            court_name: call.court_name,
            line_number: call.line_number,
            call_operator: call.operator_uri,
        };
        let report = next_version(None, action, actor, now_ms())?;
        let seq = self
            .append(vec![report_pending(report.clone(), "opened")])
            .await?;
        Ok((report, seq))
    }

    /// Chains the next version of report `report_id` after `action` by `actor`, if the
    /// workflow allows it and the report is still at `version` (0: whatever it is at).
    /// Read and written under the chain lock, so two changes cannot both build on one version.
    pub async fn change_report(
        &self,
        report_id: &str,
        version: u32,
        action: Action,
        actor: &Actor,
    ) -> Result<(Report, i64), LedgerError> {
        let name = action.name();
        let mut head = self.inner.head.lock().await;
        let current = self
            .inner
            .store
            .get_report(report_id)
            .await?
            .ok_or_else(|| LedgerError::NoSuchReport(report_id.to_owned()))?
            .decode()?;
        if version != 0 && version != current.version {
            return Err(LedgerError::StaleReport {
                report_id: report_id.to_owned(),
                current: current.version,
                requested: version,
            });
        }
        let report = next_version(Some(&current), action, actor, now_ms())?;
        let seq = self
            .append_locked(
                &mut head,
                vec![report_pending(report.clone(), name)],
                Sign::WhenDue,
            )
            .await?;
        Ok((report, seq))
    }

    /// Issues a token; returns the secret (shown once).
    pub async fn add_token(&self, name: &str, role: Role, by: &str) -> Result<String, LedgerError> {
        if name.trim().is_empty() || name.len() > 100 {
            return Err(LedgerError::Invalid(
                "a token needs a name of 1-100 characters".into(),
            ));
        }
        if role == Role::Unspecified {
            return Err(LedgerError::Invalid(
                "a token needs a role: switchboard, compliance, auditor, admin or operator".into(),
            ));
        }
        if self
            .inner
            .store
            .tokens()
            .await?
            .iter()
            .any(|t| t.name == name)
        {
            return Err(LedgerError::TokenExists(name.to_owned()));
        }
        let secret = super::auth::new_secret();
        let at_ms = now_ms();
        let mut pending = Pending::new(
            None,
            at_ms,
            EventBody {
                kind: Some(Kind::Token(TokenChanged {
                    name: name.to_owned(),
                    role: role as i32,
                    revoked: false,
                    changed_by: by.to_owned(),
                })),
            },
        );
        pending.change = Some(Change::AddToken(TokenRow {
            name: name.to_owned(),
            role: role as i32,
            token_hash: super::auth::secret_hash(&secret).to_vec(),
            created_at_ms: at_ms,
            created_by: by.to_owned(),
            revoked_at_ms: 0,
        }));
        self.append(vec![pending]).await?;
        Ok(secret)
    }

    /// Revokes a token by name.
    pub async fn revoke_token(&self, name: &str, by: &str) -> Result<(), LedgerError> {
        let tokens = self.inner.store.tokens().await?;
        let Some(token) = tokens
            .iter()
            .find(|t| t.name == name && t.revoked_at_ms == 0)
        else {
            return Err(LedgerError::NoSuchToken(name.to_owned()));
        };
        let at_ms = now_ms();
        let mut pending = Pending::new(
            None,
            at_ms,
            EventBody {
                kind: Some(Kind::Token(TokenChanged {
                    name: name.to_owned(),
                    role: token.role,
                    revoked: true,
                    changed_by: by.to_owned(),
                })),
            },
        );
        pending.change = Some(Change::RevokeToken {
            name: name.to_owned(),
            at_ms,
        });
        self.append(vec![pending]).await?;
        Ok(())
    }

    /// Purges finished calls received more than `retention_days` ago: their rows go and
    /// their event bodies are cleared (hashes stay), then a chained "purged up to" event
    /// records it. Flagged and reported calls are on legal hold and stay.
    pub async fn purge(
        &self,
        retention_days: u32,
        dry_run: bool,
        by: &str,
    ) -> Result<PurgeResponse, LedgerError> {
        let days = i64::from(retention_days.max(MIN_RETENTION_DAYS));
        let cutoff_ms = now_ms() - days * 24 * 3600 * 1000;
        let store = &self.inner.store;
        // The rows it reads must hold the chain up to now: a later row of a call
        // would otherwise come back after its purge.
        self.apply_derived_through(self.head().await.0).await?;
        let (call_ids, on_hold) = store.expired_calls(cutoff_ms).await?;
        let events = store.count_call_events(&call_ids).await?;
        let mut response = PurgeResponse {
            cutoff_ms,
            calls_purged: call_ids.len() as u64,
            events_purged: events,
            calls_on_hold: on_hold,
            seq: 0,
        };
        if dry_run {
            return Ok(response);
        }
        let mut pending = Pending::new(
            None,
            now_ms(),
            EventBody {
                kind: Some(Kind::Purged(Purged {
                    cutoff_ms,
                    calls_purged: response.calls_purged,
                    events_purged: events,
                    calls_on_hold: on_hold,
                    purged_by: by.to_owned(),
                })),
            },
        );
        let mut stored_audio = Vec::new();
        for call_id in &call_ids {
            if let Some(row) = store.recording(call_id).await? {
                if row.state == RecordingState::Stored {
                    stored_audio.push(row.call_id);
                }
            }
        }
        pending.change = Some(Change::PurgeCalls { call_ids });
        response.seq = self.append(vec![pending]).await? as u64;
        // After the commit: a crash in between leaves a file without a row, never a row without a file.
        if let Some(evidence) = &self.inner.evidence {
            for call_id in stored_audio {
                if let Err(error) = evidence.remove(&call_id) {
                    warn!(call = %call_id, %error, "purged a call but could not remove its recording");
                }
            }
        }
        info!(
            cutoff_ms,
            calls = response.calls_purged,
            events,
            on_hold,
            "purged call records past retention"
        );
        Ok(response)
    }
}

/// The chained event of one report version.
fn report_pending(report: Report, action: &str) -> Pending {
    let call_id = report.call_id.clone();
    let at_ms = report.changed_at_ms;
    Pending::new(
        Some(call_id),
        at_ms,
        EventBody {
            kind: Some(Kind::Report(ReportChanged {
                action: action.to_owned(),
                report: Some(report),
            })),
        },
    )
}

/// Checks what a switchboard sent before anything is stored.
fn validate_batch(events: &[NodeEvent]) -> Result<(), LedgerError> {
    let invalid = |text: String| Err(LedgerError::Invalid(text));
    if events.len() > MAX_BATCH {
        return invalid(format!("at most {MAX_BATCH} events per request"));
    }
    let Some(first) = events.first() else {
        return Ok(());
    };
    if first.node_id.is_empty() || first.node_id.len() > 200 {
        return invalid("node_id must be 1-200 characters".into());
    }
    let mut previous = 0;
    for event in events {
        if event.node_id != first.node_id {
            return invalid("all events of a request must come from one node".into());
        }
        if event.node_seq <= previous {
            return invalid(format!(
                "node_seq must start at 1 and increase within a request ({} after {previous})",
                event.node_seq
            ));
        }
        previous = event.node_seq;
        let call_record = match &event.kind {
            None => return invalid(format!("event {} has no kind", event.node_seq)),
            Some(NodeKind::NodeStarted(_) | NodeKind::ConfigApplied(_)) => {
                if !event.call_id.is_empty() {
                    return invalid(format!(
                        "{} event {} names a call",
                        if matches!(event.kind, Some(NodeKind::NodeStarted(_))) {
                            "node_started"
                        } else {
                            CONFIG_APPLIED
                        },
                        event.node_seq
                    ));
                }
                continue;
            }
            Some(NodeKind::Recording(_)) => {
                // A recording belongs to a call but carries no record of it.
                validate_call_id(&event.call_id)?;
                continue;
            }
            Some(NodeKind::Milestone(milestone)) => milestone.snapshot.as_ref(),
            Some(NodeKind::Ended(record)) => Some(record),
        };
        validate_call_id(&event.call_id)?;
        match call_record {
            Some(record) if record.call_id == event.call_id => {}
            _ => {
                return invalid(format!(
                    "event {} carries no record of call {}",
                    event.node_seq, event.call_id
                ))
            }
        }
    }
    Ok(())
}

/// Checks a call id is a UUID; records are keyed on it and the switchboard always
/// generates one, so anything else is a bug worth rejecting loudly.
pub fn validate_call_id(call_id: &str) -> Result<(), LedgerError> {
    if call_id.is_empty() {
        return Err(LedgerError::Invalid("call_id is empty".into()));
    }
    uuid::Uuid::parse_str(call_id).map(|_| ()).map_err(|error| {
        LedgerError::Invalid(format!("call_id {call_id:?} is not a UUID: {error}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::pb::{CallMilestone, ConfigApplied, Milestone, NodeStarted};

    fn milestone(seq: u64, call_id: &str) -> NodeEvent {
        NodeEvent {
            node_id: "n".into(),
            node_seq: seq,
            at_ms: 1,
            call_id: call_id.into(),
            kind: Some(NodeKind::Milestone(CallMilestone {
                milestone: Milestone::Received as i32,
                snapshot: Some(CallRecord {
                    call_id: call_id.into(),
                    ..CallRecord::default()
                }),
                ..CallMilestone::default()
            })),
        }
    }

    #[test]
    fn batches_are_validated() {
        let id = "6f1c2a9e-3b7d-4c1e-9a55-0d2f4e8b7c61";
        assert!(validate_batch(&[milestone(1, id), milestone(2, id)]).is_ok());
        assert!(validate_batch(&[milestone(2, id), milestone(2, id)]).is_err());
        assert!(validate_batch(&[milestone(0, id)]).is_err());
        assert!(validate_batch(&[milestone(1, "x")]).is_err());
        let mut other = milestone(2, id);
        other.node_id = "m".into();
        assert!(validate_batch(&[milestone(1, id), other]).is_err());
        let mut mismatched = milestone(1, id);
        if let Some(NodeKind::Milestone(m)) = &mut mismatched.kind {
            m.snapshot = None;
        }
        assert!(validate_batch(&[mismatched]).is_err());
        let started = NodeEvent {
            node_id: "n".into(),
            node_seq: 1,
            kind: Some(NodeKind::NodeStarted(NodeStarted::default())),
            ..NodeEvent::default()
        };
        assert!(validate_batch(&[started]).is_ok());
        let applied = NodeEvent {
            node_id: "n".into(),
            node_seq: 1,
            kind: Some(NodeKind::ConfigApplied(ConfigApplied::default())),
            ..NodeEvent::default()
        };
        assert!(validate_batch(std::slice::from_ref(&applied)).is_ok());
        let body = EventBody {
            kind: Some(Kind::NodeEvent(applied.clone())),
        };
        assert_eq!(kind_of(&body), CONFIG_APPLIED);
        assert_eq!(call_effect(&body), None);
        let naming_a_call = NodeEvent {
            call_id: id.into(),
            ..applied
        };
        let refused = validate_batch(&[naming_a_call]).unwrap_err().to_string();
        assert!(
            refused.contains("config_applied event 1 names a call"),
            "{refused}"
        );
    }

    #[test]
    fn effects_keep_flags_and_set_states() {
        let record = CallRecord {
            call_id: "c".into(),
            caller_number: "1".into(),
            ..CallRecord::default()
        };
        let upsert = |state| CallEffect::Upsert {
            record: Box::new(record.clone()),
            state,
            node_id: "n".into(),
        };
        let row = apply_effect(None, upsert(CallState::InProgress)).unwrap();
        assert_eq!(row.state, CallState::InProgress as i32);
        assert!(!row.flagged);
        let flagged = apply_effect(Some(row), CallEffect::Flag).unwrap();
        assert!(flagged.flagged);
        let ended = apply_effect(Some(flagged), upsert(CallState::Ended)).unwrap();
        assert!(ended.flagged);
        assert_eq!(ended.state, CallState::Ended as i32);
        assert_eq!(ended.node_id, "n");
        assert_eq!(apply_effect(None, CallEffect::Flag), None);
    }
}
