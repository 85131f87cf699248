//! Storage for the records service behind the [`Store`] trait.
//!
//! [`SqlStore`] implements it for SQLite (default, embedded, WAL,
//! `synchronous=FULL`) and PostgreSQL, chosen by the database location: a path
//! or `sqlite:` URL, or a `postgres://` URL. Both run the same SQL through
//! sqlx's `Any` driver and differ only where [`Backend`] says so (connection
//! set-up, migrations, placeholders — `$n` or `?` — one string function and one
//! index hint). All SQL lives in this file, but for the pattern tables
//! (`store/caller_days.rs`) and the staging of a database several services share
//! (PostgreSQL only, `super::staging`).
//!
//! "Caller name contains" has an index of its own, `caller_name_grams`: every
//! character and character pair of each caller name, written in bulk every
//! `NAME_INDEX_EVENTS` events for the calls since the last run (`first_seq` past
//! `caller_name_index.through_seq`); a search merges a walk of the pattern's
//! rarest gram with a direct search of the calls not indexed yet.
//!
//! The store knows nothing of hashing or signing: the ledger
//! ([`super::ledger`]) decides what to append and hands over finished rows; the
//! store writes them and their effect on the per-call rows in one transaction.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyArguments, AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Arguments, Executor, Row};

mod bulk;
mod caller_days;
mod derived;
mod progress;

use self::bulk::{RowSink, TableRow, Writer};
pub use self::caller_days::{CallerDays, PatternMatchRow};
pub use self::progress::{ChainProgress, SchemaVersion};
use super::chain::{EventHeader, StoredEvent, CONFIG_APPLIED};
use super::dashboard::{day_of, DayCourtTally, Tally};
use super::patterns::DayCounts;
use super::reports::workflow::owners;
use crate::contract::pb::{
    CallFilter, CallRecord, CallState, Choice, EndReason, Gap, NodeSummary, Report, ReportFilter,
    SortOrder,
};
use crate::contract::row::{media_json, parse_media_json, parse_prompts_json, prompts_json};

/// Page size used when a query asks for 0 (the proto's "server default").
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page a query may return, so one request cannot pull the whole table into memory.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Most matches [`Store::count_calls`] counts: a count then reads at most this many
/// index entries (plus the rows a filter without an index skips, as a list does), so
/// the first page of a search costs a bounded amount more than the page itself.
pub const COUNT_CAP: u32 = 10_000;

/// How long a SQLite statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections in the pool; writes are serialised by the ledger, this lets reads overlap.
const MAX_CONNECTIONS: u32 = 4;
/// A SQLite file's pooled connection unused this long is closed, which frees its page
/// cache (up to ~2 MB each, full after a busy hour) and its thread; the next statement
/// opens a fresh one in a few milliseconds. sqlx checks every this long, so a quiet
/// service is back to its idle memory within twice it (#16: a minute after a burst,
/// counted from the last call, while the service may still be catching up; at 20 s
/// two connections were often still open then).
const SQLITE_IDLE_CLOSE: Duration = Duration::from_secs(10);
/// Most calls counted per gram when choosing which gram a name search walks: enough
/// to tell a rare gram from a common one, cheap (an index range read) either way.
const GRAM_PROBE_LIMIT: u32 = 10_000;
/// Events stored between two runs of the name index: calls are searched directly until
/// then (at most this many rows; 20,000 took 8 ms on SQLite, 16 ms on PostgreSQL in
/// BENCHMARKS.md), and each run writes the grams of some thousands of calls sorted, a
/// page for many rows instead of a page per row.
const NAME_INDEX_EVENTS: i64 = 50_000;
/// Tag inside page tokens, so a future token format can be told apart.
const PAGE_TOKEN_VERSION: &str = "c2";
/// Most rows per multi-row statement (and ids per `IN` list): few round trips, well
/// under both backends' parameter limits (64 × 32 calls columns = 2,048).
const MAX_ROWS_PER_STATEMENT: usize = 64;

/// Every calls column in [`CallRecord`] field order, then the service's own columns.
const CALL_COLUMNS: &str = "call_id, sip_call_id, line_number, court_name, caller_number, \
    caller_display_name, caller_source, user_agent, codec, received_at_ms, answered_at_ms, \
    prompt_started_at_ms, prompt_ended_at_ms, operator_answered_at_ms, ended_at_ms, prompt_id, \
    prompt_sha256, prompt_length_ms, prompt_ms_sent, prompt_completed, dtmf_during_prompt, \
    prompts, operator_uri, end_reason, sip_final_status, rtp_packets_sent, rtp_packets_received, \
    media, probe, proxy_source, prior_reports, prior_flags, state, flagged, node_id, last_seq, \
    first_seq";
/// Columns of `call_recordings`, in [`RecordingRow`] order.
const RECORDING_COLUMNS: &str =
    "call_id, sha256, bytes, sample_rate, channels, duration_ms, state, detail, last_seq";
/// Number of names in [`CALL_COLUMNS`].
const CALL_COLUMN_COUNT: usize = 37;
/// Every events column.
const EVENT_COLUMNS: &str =
    "seq, kind, node_id, node_seq, call_id, at_ms, stored_at_ms, body, body_digest, prev_hash, hash";
/// Every reports column.
const REPORT_COLUMNS: &str = "report_id, call_id, version, status, kind, opened_by, opened_at_ms, \
    court_name, line_number, staff_name, staff_id, owners, case_numbers, report, last_seq";
/// Number of names in [`REPORT_COLUMNS`].
const REPORT_COLUMN_COUNT: usize = 15;
/// Number of names in [`EVENT_COLUMNS`].
const EVENT_COLUMN_COUNT: usize = 11;
/// `INSERT INTO events (...)`, the head of every events insert.
static INSERT_EVENTS: LazyLock<String> =
    LazyLock::new(|| format!("INSERT INTO events ({EVENT_COLUMNS})"));

/// Per node: events stored (`a`) and the highest sequence number (`b`).
const NODE_SUMMARY: &str = "SELECT node_id, COUNT(*) AS a, MAX(node_seq) AS b FROM events \
    WHERE node_id IS NOT NULL GROUP BY node_id ORDER BY node_id";
/// Every run of missing sequence numbers: node, first (`a`) and last (`b`) missing.
const NODE_GAPS: &str = "SELECT node_id, COALESCE(previous, 0) + 1 AS a, node_seq - 1 AS b FROM (\
      SELECT node_id, node_seq, \
        LAG(node_seq) OVER (PARTITION BY node_id ORDER BY node_seq) AS previous \
      FROM events WHERE node_id IS NOT NULL) AS numbered \
    WHERE node_seq > COALESCE(previous, 0) + 1 ORDER BY node_id, a";

/// Which database engine a [`SqlStore`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (or `sqlite::memory:`).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Why a store operation failed; callers need to tell bad input from a broken database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database location was not a usable path or URL.
    #[error("invalid database location {database:?}: {detail}")]
    InvalidLocation {
        /// The location as given, for the operator to fix.
        database: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The directory that should hold the SQLite file could not be created.
    #[error("cannot create directory {path} for the records database: {source}")]
    CreateDirectory {
        /// The directory we tried to create.
        path: PathBuf,
        /// The underlying I/O failure.
        source: std::io::Error,
    },
    /// The database could not be opened (permissions, corrupt file, server down ...).
    #[error("cannot open records database {database:?}: {source}")]
    Open {
        /// The location as given.
        database: String,
        /// The underlying failure.
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error(
        "cannot migrate records database {database:?}: {source} (a database made by a \
         pre-release courtline must be moved aside: the schema was rebuilt for the hash chain)"
    )]
    Migrate {
        /// The location as given.
        database: String,
        /// The underlying failure.
        source: sqlx::migrate::MigrateError,
    },
    /// A statement failed; `operation` says which one, for the logs.
    #[error("records database {operation} failed: {source}")]
    Query {
        /// What we were doing ("append events", "list calls").
        operation: String,
        /// The underlying failure.
        source: sqlx::Error,
    },
    /// A stored row holds a value no record can carry (edited by hand, or a bug).
    #[error("stored row {key} is corrupt: {detail}")]
    Corrupt {
        /// The row's key (call id or chain position).
        key: String,
        /// Which column is wrong and how.
        detail: String,
    },
    /// The page token did not come from this store's `list_calls` with the same sort.
    #[error("invalid page token: {0}")]
    InvalidPageToken(String),
}

impl StoreError {
    /// True when retrying later may succeed (database busy or locked, pool exhausted,
    /// I/O, server gone), so the service can answer `Unavailable` instead of `Internal`.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Query { source, .. } | StoreError::Open { source, .. } => {
                is_transient_sqlx(source)
            }
            _ => false,
        }
    }
}

fn is_transient_sqlx(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // SQLite: extended codes, low byte 5 = BUSY, 6 = LOCKED.
            // PostgreSQL: class 08 connection exceptions, 40001 serialization, 57P0x shutdown.
            code.parse::<i32>()
                .is_ok_and(|code| matches!(code & 0xff, 5 | 6))
                || code.starts_with("08")
                || code == "40001"
                || code.starts_with("57P")
        }
        _ => false,
    }
}

/// A compliance query: filter, sort, page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallQuery {
    /// Which calls (zero values: no filter).
    pub filter: CallFilter,
    /// Newest or oldest first.
    pub sort: SortOrder,
    /// Rows per page (0 = default).
    pub page_size: u32,
    /// Where the previous page ended.
    pub page_token: Option<String>,
}

impl CallQuery {
    /// The page size after applying the default and the cap.
    pub fn effective_page_size(&self) -> u32 {
        page_size_or_default(self.page_size)
    }
}

/// What [`Store::append`] hands the stored head (position and hash; `None`: empty chain)
/// to get the events that follow it and what they change.
pub type ChainOnto<'a> = Box<
    dyn FnOnce(Option<(i64, Vec<u8>)>) -> Result<(Vec<StoredEvent>, Vec<Change>), StoreError>
        + Send
        + 'a,
>;

/// The PostgreSQL advisory lock every append takes for its transaction: chain writes of
/// all services on one database queue on it (ASCII "courtlnA"). Public for the tests
/// that hold appends up by holding it.
pub const APPEND_LOCK: i64 = 0x636f_7572_746c_6e41;

/// A change to the per-call rows or the token table that goes with appended events.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Write the call's record and state (keeps `flagged`).
    UpsertCall(CallRow),
    /// Mark a call flagged.
    FlagCall {
        /// The call.
        call_id: String,
        /// The flag event.
        last_seq: i64,
        /// When it was flagged (the day the dashboard counts it on).
        at_ms: i64,
    },
    /// Clear these calls' event bodies and delete their rows (retention).
    PurgeCalls {
        /// The calls past retention, none flagged.
        call_ids: Vec<String>,
    },
    /// Store a new token (hashed).
    AddToken(TokenRow),
    /// Write what became of a call's recording (the recording event's projection).
    RecordRecording(RecordingRow),
    /// A recording its switchboard uploaded is in the evidence store (RecordingStored).
    RecordingUploaded {
        /// The call.
        call_id: String,
    },
    /// Revoke a token by name.
    RevokeToken {
        /// The token's name.
        name: String,
        /// When.
        at_ms: i64,
    },
    /// Write a report's new version (its row and its place in `report_versions`).
    PutReport(ReportRow),
    /// Write a chained `PatternMatched` event's row (`pattern_matches`).
    PutPatternMatch(PatternMatchRow),
    /// Mark a report's call reported (`has_report`), and count its first version in the
    /// dashboard figures and `caller_days`: the report's effect on the call's row.
    MarkReported(ReportRow),
    /// Mark a call as having a recording kept in the evidence store (`has_recording`),
    /// if its recording row says it is stored by now.
    MarkRecorded {
        /// The call.
        call_id: String,
    },
    /// Delete switchboard events from staging (a shared PostgreSQL database,
    /// `super::ledger::staging`) in the transaction that chains them, so an event
    /// leaves staging exactly when it is on the chain, in one commit.
    Unstage(Vec<StagedRun>),
}

impl Change {
    /// Whether it writes the tables derived from the chain (calls, the dashboard
    /// figures, `caller_days`): in a shared database the follower writes those, after
    /// the chain, in chain order ([`Store::apply_derived`]).
    pub fn is_derived(&self) -> bool {
        matches!(
            self,
            Change::UpsertCall(_)
                | Change::FlagCall { .. }
                | Change::MarkReported(_)
                | Change::MarkRecorded { .. }
        )
    }
}

/// Consecutive sequence numbers of one switchboard, every one of them taken from
/// staging together: a range that holds no other staged event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedRun {
    /// The switchboard.
    pub node_id: String,
    /// Its first sequence number in the run.
    pub first: i64,
    /// Its last.
    pub last: i64,
}

/// A report's row as stored: the latest version and the columns derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    /// Report id.
    pub report_id: String,
    /// The call.
    pub call_id: String,
    /// Latest version number.
    pub version: i64,
    /// `ReportStatus` number.
    pub status: i64,
    /// `ReportKind` number.
    pub kind: i64,
    /// Who opened it.
    pub opened_by: String,
    /// When.
    pub opened_at_ms: i64,
    /// The call's court.
    pub court_name: String,
    /// The call's line.
    pub line_number: String,
    /// Form: staff name.
    pub staff_name: String,
    /// Form: staff id.
    pub staff_id: String,
    /// Every owner between newlines (`\na\nb\n`).
    pub owners: String,
    /// Case numbers, one per line.
    pub case_numbers: String,
    /// Protobuf `Report` of the latest version.
    pub report: Vec<u8>,
    /// Chain position of that version's event.
    pub last_seq: i64,
}

impl ReportRow {
    /// The row `report`, chained at `seq`, must leave.
    pub fn of(report: &Report, seq: i64) -> ReportRow {
        let form = report.form.clone().unwrap_or_default();
        ReportRow {
            report_id: report.report_id.clone(),
            call_id: report.call_id.clone(),
            version: i64::from(report.version),
            status: i64::from(report.status),
            kind: i64::from(form.kind),
            opened_by: report.opened_by.clone(),
            opened_at_ms: report.opened_at_ms,
            court_name: report.court_name.clone(),
            line_number: report.line_number.clone(),
            staff_name: form.staff_name.clone(),
            staff_id: form.staff_id.clone(),
            owners: format!("\n{}\n", owners(report).join("\n")),
            case_numbers: form.case_numbers.join("\n"),
            report: prost::Message::encode_to_vec(report),
            last_seq: seq,
        }
    }

    /// The report the row holds.
    pub fn decode(&self) -> Result<Report, StoreError> {
        prost::Message::decode(self.report.as_slice()).map_err(|error| StoreError::Corrupt {
            key: format!("report {}", self.report_id),
            detail: format!("report: {error}"),
        })
    }
}

/// A reports query: filter, sort, page, and whose reports (an operator's own).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportQuery {
    /// Which reports (zero values: no filter).
    pub filter: ReportFilter,
    /// Only reports this name owns; `None`: anyone's.
    pub owner: Option<String>,
    /// Newest or oldest first (by when opened).
    pub sort: SortOrder,
    /// Rows per page (0 = default).
    pub page_size: u32,
    /// Where the previous page ended.
    pub page_token: Option<String>,
}

/// A call's row as an event leaves it (all but `flagged`, which only a flag sets).
#[derive(Debug, Clone, PartialEq)]
pub struct CallRow {
    /// The record as of the event.
    pub record: Box<CallRecord>,
    /// Where the call stands now.
    pub state: CallState,
    /// The reporting switchboard.
    pub node_id: String,
    /// The event that produced this state.
    pub last_seq: i64,
}

/// A call's recording as its chained event and the flags before it leave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingRow {
    /// The call.
    pub call_id: String,
    /// SHA-256 (hex) of the file as the switchboard closed it.
    pub sha256: String,
    /// File length.
    pub bytes: i64,
    /// Samples per second.
    pub sample_rate: i64,
    /// Channels (2).
    pub channels: i64,
    /// Length of the audio.
    pub duration_ms: i64,
    /// What became of the file.
    pub state: RecordingState,
    /// Why it failed or was not transferred; empty otherwise.
    pub detail: String,
    /// The recording event.
    pub last_seq: i64,
}

/// What became of a call's recording file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingState {
    /// In the evidence store as `<call_id>.wav`.
    Stored,
    /// Deleted: `on_report` and the call had no flag or report.
    Deleted,
    /// The switchboard could not record the call (detail: why).
    Failed,
    /// The file is still where the switchboard wrote it (detail: why): a remote
    /// records service waits for the switchboard's upload.
    NotTransferred,
}

impl RecordingState {
    /// The name stored in `call_recordings.state` and shown by `calls get`.
    pub fn name(self) -> &'static str {
        match self {
            RecordingState::Stored => "stored",
            RecordingState::Deleted => "deleted",
            RecordingState::Failed => "failed",
            RecordingState::NotTransferred => "not_transferred",
        }
    }

    /// The state named `name`.
    pub fn from_name(name: &str) -> Option<RecordingState> {
        [
            RecordingState::Stored,
            RecordingState::Deleted,
            RecordingState::Failed,
            RecordingState::NotTransferred,
        ]
        .into_iter()
        .find(|state| state.name() == name)
    }
}

/// A call kept past retention because it is flagged or reported (legal hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldCall {
    /// The call.
    pub call_id: String,
    /// When it came in (Unix ms).
    pub received_at_ms: i64,
    /// Whether it carries a flag.
    pub flagged: bool,
    /// How many reports are about it.
    pub reports: u64,
}

/// One row of the token table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Unique name, shown in the access log.
    pub name: String,
    /// `pb::Role` number.
    pub role: i32,
    /// SHA-256 of the secret.
    pub token_hash: Vec<u8>,
    /// When it was made.
    pub created_at_ms: i64,
    /// Who made it.
    pub created_by: String,
    /// When it was revoked; 0 while valid.
    pub revoked_at_ms: i64,
}

/// The records service's storage.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + CallerDays {
    /// Where the data lives (for logs; passwords are not included).
    fn location(&self) -> &str;
    /// The last event of the chain, if any.
    async fn head(&self) -> Result<Option<StoredEvent>, StoreError>;
    /// The event at chain position `seq`.
    async fn event(&self, seq: i64) -> Result<Option<StoredEvent>, StoreError>;
    /// `(node_seq, body_digest)` of this node's stored events with `first <= node_seq <= last`.
    async fn node_event_digests(
        &self,
        node_id: &str,
        first: i64,
        last: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError>;
    /// The in-progress calls this node reported.
    async fn open_calls(&self, node_id: &str) -> Result<Vec<CallRecord>, StoreError>;
    /// Appends `events` (already chained) and applies `changes`, all or nothing.
    /// Reads the chain head under the store's append lock, has `chain` make the events
    /// that follow it (and their changes), and commits them in one transaction; returns
    /// the last committed event's position and hash (`None`: `chain` made nothing).
    /// The head is read where it is written, so several services never fork the chain.
    async fn append(&self, chain: ChainOnto<'_>) -> Result<Option<(i64, Vec<u8>)>, StoreError>;
    /// From now on appends leave the derived tables ([`Change::is_derived`], the name
    /// index) to [`Store::apply_derived`]: a shared database's follower writes them.
    fn derive_by_follower(&self);
    /// The last chain position whose effects the derived tables hold.
    async fn derived_through(&self) -> Result<i64, StoreError>;
    /// The chain's head and the derived tables' watermark, read together (metrics).
    async fn chain_progress(&self) -> Result<ChainProgress, StoreError>;
    /// The database's migration and this build's (readiness).
    async fn schema_version(&self) -> Result<SchemaVersion, StoreError>;
    /// Applies `changes`, the derived effects of the events after `from` through
    /// `through`, and moves the watermark to `through`, in one transaction — if it is
    /// still at `from` (`false`: another writer moved it; nothing was written).
    async fn apply_derived(
        &self,
        from: i64,
        through: i64,
        changes: &[Change],
    ) -> Result<bool, StoreError>;
    /// One page of calls matching `query`, and the token for the next page.
    async fn list_calls(
        &self,
        query: &CallQuery,
    ) -> Result<(Vec<CallRecord>, Option<String>), StoreError>;
    /// How many calls match `filter`, counting no further than `cap`: `cap + 1` means more.
    async fn count_calls(&self, filter: &CallFilter, cap: u32) -> Result<u64, StoreError>;
    /// Calls whose `has_report` or `has_recording` column disagrees with the reports and
    /// recordings tables they follow from: (call id, column).
    async fn mismatched_call_marks(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// One call's row.
    async fn get_call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError>;
    /// One call's events in chain order.
    async fn call_events(&self, call_id: &str) -> Result<Vec<StoredEvent>, StoreError>;
    /// Up to `limit` events after chain position `after`, in chain-position order.
    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError>;
    /// Up to `limit` call events ordered by (call id, position), after `after`.
    async fn call_events_after(
        &self,
        after: Option<(&str, i64)>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// Up to `limit` call rows ordered by call id, after `after`.
    async fn calls_after(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<CallRecord>, StoreError>;
    /// Per node: events and highest sequence number; and every run of missing numbers.
    async fn node_gaps(&self) -> Result<(Vec<NodeSummary>, Vec<Gap>), StoreError>;
    /// Up to `limit` access events before chain position `before` (0 = newest), newest
    /// first, received in `[since_ms, until_ms)` (0 = unbounded).
    async fn access_events(
        &self,
        before: i64,
        since_ms: i64,
        until_ms: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// Up to `limit` applied configurations (`config_applied` events) before chain
    /// position `before` (0 = newest), newest first.
    async fn config_events(&self, before: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError>;
    /// Every token ever issued, revoked ones included.
    async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError>;
    /// The caller-name index's mark: a call none of whose events lies past it is indexed.
    async fn name_index_mark(&self) -> Result<i64, StoreError>;
    /// The grams (see [`name_grams`]) the name index lacks for these calls' names as
    /// given, as (call id, gram): a call missing some would escape name searches.
    async fn missing_name_grams(
        &self,
        calls: &[CallRecord],
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// Calls received before `cutoff_ms` that are finished: (neither flagged nor
    /// reported, the count of those flagged or reported: on legal hold).
    async fn expired_calls(&self, cutoff_ms: i64) -> Result<(Vec<String>, u64), StoreError>;
    /// The newest `limit` calls on legal hold (flagged or reported), newest first.
    async fn held_calls(&self, limit: u32) -> Result<Vec<HeldCall>, StoreError>;
    /// Events stored for these calls.
    async fn count_call_events(&self, call_ids: &[String]) -> Result<u64, StoreError>;
    /// A call's recording row, if it has one.
    async fn recording(&self, call_id: &str) -> Result<Option<RecordingRow>, StoreError>;
    /// Recording rows after call id `after` (`""`: from the start), by call id.
    async fn recordings_after(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<Vec<RecordingRow>, StoreError>;
    /// One report's row.
    async fn get_report(&self, report_id: &str) -> Result<Option<ReportRow>, StoreError>;
    /// Every report on a call, oldest first.
    async fn reports_of_call(&self, call_id: &str) -> Result<Vec<ReportRow>, StoreError>;
    /// Whether a call has a report or a flag: it is on legal hold, and its recording
    /// (`record_audio = "on_report"`) is kept.
    async fn call_has_report_or_flag(&self, call_id: &str) -> Result<bool, StoreError>;
    /// One page of reports matching `query`, and the token for the next page.
    async fn list_reports(
        &self,
        query: &ReportQuery,
    ) -> Result<(Vec<ReportRow>, Option<String>), StoreError>;
    /// Chain positions of a report's versions, as (version, seq), oldest first.
    async fn report_versions(&self, report_id: &str) -> Result<Vec<(i64, i64)>, StoreError>;
    /// Up to `limit` report rows ordered by id, after `after` (for verify).
    async fn reports_after(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ReportRow>, StoreError>;
    /// Up to `limit` `(report id, version, seq)` rows of `report_versions` in that
    /// order, after `after` (for verify).
    async fn report_versions_after(
        &self,
        after: Option<(&str, i64)>,
        limit: u32,
    ) -> Result<Vec<(String, i64, i64)>, StoreError>;
    /// The dashboard's rows for UTC days `first_day..=last_day`, by day and court.
    async fn daily_figures(
        &self,
        first_day: i64,
        last_day: i64,
    ) -> Result<Vec<DayCourtTally>, StoreError>;
    /// The last signed checkpoint, each switchboard's last event, the last verification.
    async fn records_health(&self) -> Result<RecordsHealth, StoreError>;
    /// Keeps `run` as the last verification, replacing the one before.
    async fn record_verification(&self, run: &VerificationRow) -> Result<(), StoreError>;
    /// Finishes in-flight statements and closes the database.
    async fn close(&self);
}

/// How the records stand, for the dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordsHealth {
    /// Chain position and time of the last signed checkpoint.
    pub last_checkpoint: Option<(i64, i64)>,
    /// Each switchboard's last stored event, by node id.
    pub nodes: Vec<NodeDelivery>,
    /// The last verification the service ran.
    pub last_verification: Option<VerificationRow>,
}

/// A switchboard's last stored event: how far behind its deliveries are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDelivery {
    /// The switchboard's node id.
    pub node_id: String,
    /// Its highest sequence number stored.
    pub node_seq: i64,
    /// When that event happened (the switchboard's clock).
    pub at_ms: i64,
    /// When the service stored it.
    pub stored_at_ms: i64,
}

/// A verification run as `last_verification` keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationRow {
    /// When it finished.
    pub finished_at_ms: i64,
    /// Who ran it.
    pub actor: String,
    /// Events, checkpoints and calls it checked.
    pub events_checked: i64,
    /// Checkpoints it checked.
    pub checkpoints_checked: i64,
    /// Calls it checked.
    pub calls_checked: i64,
    /// Its findings (0: intact).
    pub findings: i64,
    /// Events after the last checkpoint.
    pub unsigned_tail: i64,
}

/// A [`Store`] on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct SqlStore {
    /// The connection pool.
    pool: AnyPool,
    /// Which engine, for the few places SQL differs.
    backend: Backend,
    /// PostgreSQL: the native driver's pool that appends write through, for the typed
    /// arrays `Any` cannot bind (`bulk`); `None` on SQLite.
    writer_pool: Option<sqlx::PgPool>,
    /// The location as given (without password), for logs and errors.
    location: String,
    /// Whether a follower writes the derived tables ([`Store::derive_by_follower`]).
    derived_by_follower: Arc<AtomicBool>,
}

/// Turns a configured location into (backend, URL sqlx understands).
fn resolve_location(database: &str) -> Result<(Backend, String), StoreError> {
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        return Ok((Backend::Postgres, database.to_owned()));
    }
    if database.contains("://") && !database.starts_with("sqlite://") {
        return Err(StoreError::InvalidLocation {
            database: database.to_owned(),
            detail: "only SQLite paths, sqlite: URLs and postgres:// URLs are supported".into(),
        });
    }
    let path = database
        .strip_prefix("sqlite://")
        .or_else(|| database.strip_prefix("sqlite:"))
        .unwrap_or(database);
    if path.is_empty() {
        return Err(StoreError::InvalidLocation {
            database: database.to_owned(),
            detail: "empty path".into(),
        });
    }
    if path == ":memory:" {
        return Ok((Backend::Sqlite, "sqlite::memory:".to_owned()));
    }
    let path = path.split('?').next().unwrap_or(path);
    create_parent_directory(Path::new(path))?;
    Ok((Backend::Sqlite, format!("sqlite://{path}?mode=rwc")))
}

/// The database location without a password, for logs.
fn redact(database: &str) -> String {
    match (database.find("://"), database.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &database[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    format!("{}{user}:***{}", &database[..scheme + 3], &database[at..])
                }
                None => database.to_owned(),
            }
        }
        _ => database.to_owned(),
    }
}

impl SqlStore {
    /// Opens (creating if needed) and migrates the database at `database`: a SQLite path
    /// or `sqlite:` URL, or a `postgres://` URL.
    pub async fn open(database: &str) -> Result<SqlStore, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = resolve_location(database)?;
        let location = redact(database);
        let options =
            AnyConnectOptions::from_str(&url).map_err(|source| StoreError::InvalidLocation {
                database: location.clone(),
                detail: source.to_string(),
            })?;
        let in_memory = url == "sqlite::memory:";
        let pool_options = match (backend, in_memory) {
            // Every connection to an in-memory SQLite database is a different database,
            // so its one connection is never closed for age or idleness.
            (Backend::Sqlite, true) => AnyPoolOptions::new()
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None),
            (Backend::Sqlite, false) => AnyPoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .idle_timeout(SQLITE_IDLE_CLOSE),
            (Backend::Postgres, _) => AnyPoolOptions::new().max_connections(MAX_CONNECTIONS),
        };
        let pool = pool_options
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // FULL: a committed event survives power loss, not just a crash.
                        connection
                            .execute(
                                format!(
                                    "PRAGMA busy_timeout = {}; PRAGMA synchronous = FULL;",
                                    BUSY_TIMEOUT.as_millis()
                                )
                                .as_str(),
                            )
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                database: location.clone(),
                source,
            })?;
        if backend == Backend::Sqlite && !in_memory {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(|source| StoreError::Open {
                    database: location.clone(),
                    source,
                })?;
        }
        let migrated = match backend {
            Backend::Sqlite => progress::SQLITE_MIGRATIONS.run(&pool).await,
            Backend::Postgres => progress::POSTGRES_MIGRATIONS.run(&pool).await,
        };
        migrated.map_err(|source| StoreError::Migrate {
            database: location.clone(),
            source,
        })?;
        let writer_pool = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                Some(
                    bulk::writer_pool(&url)
                        .await
                        .map_err(|source| StoreError::Open {
                            database: location.clone(),
                            source,
                        })?,
                )
            }
        };
        Ok(SqlStore {
            pool,
            backend,
            writer_pool,
            location,
            derived_by_follower: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Which engine this store uses.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for bulk loading in benchmarks and for tests that tamper with rows.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A statement starting with `text`, with this backend's placeholders.
    fn sql(&self, text: impl Into<String>) -> Sql {
        Sql {
            text: text.into(),
            args: AnyArguments::default(),
            count: 0,
            numbered: self.backend == Backend::Postgres,
        }
    }

    /// Runs `text`, whose rows are `node_id, a, b` (two counts), and makes a `T` of each.
    async fn node_numbers<T>(
        &self,
        text: &str,
        operation: &str,
        make: impl Fn(String, u64, u64) -> T,
    ) -> Result<Vec<T>, StoreError> {
        let rows = self.sql(text).fetch_all(&self.pool, operation).await?;
        let number = |row: &AnyRow, column| get::<i64>(row, column, operation).map(|n| n as u64);
        rows.iter()
            .map(|row| {
                Ok(make(
                    get(row, "node_id", operation)?,
                    number(row, "a")?,
                    number(row, "b")?,
                ))
            })
            .collect()
    }

    /// The statement behind [`Store::list_calls`]: one page of `query` and one row more.
    /// A name search walks the calls holding the pattern's rarest gram in sort order
    /// (`caller_name_grams`), so its cost follows that gram's calls, not the table.
    async fn list_calls_sql(&self, query: &CallQuery) -> Result<Sql, StoreError> {
        let oldest_first = query.sort == SortOrder::OldestFirst;
        let cursor = Cursor::resume(query.page_token.as_deref(), oldest_first)?;
        let page = Page {
            cursor: cursor.as_ref(),
            oldest_first,
            rows: query.effective_page_size() + 1,
        };
        self.matching_calls_sql(&query.filter, &page, CALL_COLUMNS)
            .await
    }

    /// `columns` of the calls matching `filter` on `page`, in its order (one statement;
    /// a name search is the union of two parts, see [`Store::list_calls`]).
    async fn matching_calls_sql(
        &self,
        filter: &CallFilter,
        page: &Page<'_>,
        columns: &str,
    ) -> Result<Sql, StoreError> {
        if filter.caller_name_contains.is_empty() {
            let mut sql = self.sql(format!("SELECT {columns} FROM calls WHERE 1 = 1"));
            self.push_filter(&mut sql, filter);
            page.push(&mut sql, "received_at_ms", "call_id");
            return Ok(sql);
        }
        // A name search: one page of the indexed calls holding the rarest gram (sorted by
        // the grams' copy of the sort key), and one of the calls not indexed yet; the
        // caller merges them. The index mark is read first and bound as a value, so the
        // planners see how few calls are past it; should the index run in between, the
        // calls it took come from both parts, and the merge drops the copies.
        let through = self.read_name_index_mark().await?;
        let gram = self.rarest_gram(&filter.caller_name_contains).await?;
        let mut sql = self.sql(format!(
            "SELECT {columns} FROM (SELECT {columns} FROM caller_name_grams \
             JOIN calls ON call_id = call_key WHERE gram = "
        ));
        sql.bind(gram);
        if filter.since_ms != 0 {
            sql.push(" AND call_time_ms >= ").bind(filter.since_ms);
        }
        if filter.until_ms != 0 {
            sql.push(" AND call_time_ms < ").bind(filter.until_ms);
        }
        self.push_filter(&mut sql, filter);
        page.push(&mut sql, "call_time_ms", "call_key");
        // SQLite would otherwise walk the sort index through every call for the page.
        let by_first_seq = match self.backend {
            Backend::Sqlite => " INDEXED BY calls_by_first_seq",
            Backend::Postgres => "",
        };
        sql.push(&format!(
            ") AS indexed UNION ALL SELECT {columns} FROM (SELECT {columns} \
             FROM calls{by_first_seq} WHERE first_seq > "
        ))
        .bind(through);
        self.push_filter(&mut sql, filter);
        // `+ 0`: an order no index gives, so PostgreSQL does not walk calls_by_received
        // through every call looking for a page of new ones.
        page.push(&mut sql, "received_at_ms + 0", "call_id");
        sql.push(") AS recent");
        Ok(sql)
    }

    /// The name index's mark: calls whose `first_seq` is past it are not indexed yet.
    async fn read_name_index_mark(&self) -> Result<i64, StoreError> {
        let operation = "read name index mark";
        name_index_mark_of(
            self.sql(NAME_INDEX_MARK)
                .fetch_all(&self.pool, operation)
                .await?,
        )
    }

    /// Of the grams a search for `pattern` can walk ([`search_grams`]), the one the
    /// fewest calls hold, counting at most [`GRAM_PROBE_LIMIT`] calls each: one
    /// statement of a few index range reads.
    async fn rarest_gram(&self, pattern: &str) -> Result<String, StoreError> {
        let mut grams = search_grams(pattern);
        if grams.len() < 2 {
            return Ok(grams.pop().unwrap_or_default());
        }
        let mut sql = self.sql("");
        for (index, gram) in grams.iter().enumerate() {
            if index > 0 {
                sql.push(" UNION ALL ");
            }
            sql.push("SELECT ")
                .bind(gram.clone())
                .push(" AS gram, COUNT(*) AS n FROM (SELECT 1 AS one FROM caller_name_grams WHERE gram = ")
                .bind(gram.clone())
                .push(&format!(" LIMIT {GRAM_PROBE_LIMIT}) AS probe{index}"));
        }
        let operation = "count name grams";
        let rows = sql.fetch_all(&self.pool, operation).await?;
        let mut rarest: Option<(i64, String)> = None;
        for row in &rows {
            let count: i64 = get(row, "n", operation)?;
            if rarest.as_ref().is_none_or(|(least, _)| count < *least) {
                rarest = Some((count, get(row, "gram", operation)?));
            }
        }
        Ok(rarest.map_or_else(|| grams.swap_remove(0), |(_, gram)| gram))
    }

    /// How the database runs [`Store::list_calls`] for `query` — SQLite's `EXPLAIN
    /// QUERY PLAN`, PostgreSQL's `EXPLAIN` — one line per step, to check that every
    /// filter finds an index (used by the records benchmark).
    pub async fn explain_list_calls(&self, query: &CallQuery) -> Result<Vec<String>, StoreError> {
        let mut sql = self.list_calls_sql(query).await?;
        let (explain, column) = match self.backend {
            Backend::Sqlite => ("EXPLAIN QUERY PLAN ", "detail"),
            Backend::Postgres => ("EXPLAIN ", "QUERY PLAN"),
        };
        sql.text.insert_str(0, explain);
        let rows = sql.fetch_all(&self.pool, "explain list calls").await?;
        rows.iter().map(|row| get(row, column, "plan")).collect()
    }

    /// Indexes the names of every call stored so far now, rather than when
    /// [`NAME_INDEX_EVENTS`] more events have arrived; returns the calls indexed.
    pub async fn index_caller_names(&self) -> Result<u64, StoreError> {
        let operation = "index caller names";
        let mut tx = self.begin(operation).await?;
        // A write first: it takes the write lock (SQLite) or the row lock (PostgreSQL)
        // before anything is read, so a concurrent ingest waits rather than interleaves.
        self.sql("UPDATE caller_name_index SET through_seq = through_seq")
            .execute(&mut tx, operation)
            .await?;
        // The calls stored so far: on PostgreSQL those of the events up to the derived
        // tables' watermark (a shared database's follower may not have written the rest).
        let head = self
            .sql(match self.backend {
                Backend::Sqlite => "SELECT COALESCE(MAX(seq), 0) AS head FROM events",
                Backend::Postgres => "SELECT through_seq AS head FROM derived_through",
            })
            .fetch_in(&mut tx, operation)
            .await?;
        let head: i64 = match head.first() {
            Some(row) => get(row, "head", operation)?,
            None => 0,
        };
        let calls = self.index_names(&mut tx, head, 1).await?;
        tx.commit(operation).await?;
        Ok(calls)
    }

    async fn fetch_events(
        &self,
        sql: Sql,
        operation: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sql.fetch_all(&self.pool, operation).await?;
        rows.iter().map(event_from_row).collect()
    }
}

/// A statement under construction: text with placeholders and their values.
struct Sql {
    /// The SQL text so far.
    text: String,
    /// Bound values in placeholder order.
    args: AnyArguments<'static>,
    /// Placeholders issued so far.
    count: usize,
    /// Whether placeholders are numbered (`$1`, PostgreSQL) or anonymous (`?`, SQLite).
    numbered: bool,
}

impl Sql {
    fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    /// Appends the next placeholder, for a value added to `args` in the same order.
    /// SQLite gets `?`: sqlx looks each numbered SQLite parameter's name up in a list
    /// as long as the parameter count, which made a 2,000-value INSERT cost more than
    /// executing it.
    fn placeholder(&mut self) -> &mut Sql {
        self.count += 1;
        if self.numbered {
            self.text.push('$');
            self.text.push_str(&self.count.to_string());
        } else {
            self.text.push('?');
        }
        self
    }

    /// Appends a placeholder for `value`.
    fn bind<T>(&mut self, value: T) -> &mut Sql
    where
        T: sqlx::Encode<'static, sqlx::Any> + sqlx::Type<sqlx::Any> + Send + 'static,
    {
        self.placeholder();
        // Encoding plain integers, strings and bytes into an in-memory buffer cannot fail.
        let _ = self.args.add(value);
        self
    }

    /// Appends `(?, ?, ...), (...)`: `rows` groups of `columns` placeholders, whose
    /// values the caller adds to `args` row by row.
    fn value_groups(&mut self, rows: usize, columns: usize) -> &mut Sql {
        for row in 0..rows {
            self.push(if row == 0 { "(" } else { ", (" });
            for column in 0..columns {
                if column > 0 {
                    self.push(", ");
                }
                self.placeholder();
            }
            self.push(")");
        }
        self
    }

    async fn fetch_all<'c>(
        self,
        executor: impl Executor<'c, Database = sqlx::Any>,
        operation: &str,
    ) -> Result<Vec<AnyRow>, StoreError> {
        sqlx::query_with(&self.text, self.args)
            .fetch_all(executor)
            .await
            .map_err(|source| query_error(operation, source))
    }
}

/// The name index's mark (see [`name_index_mark_of`]).
const NAME_INDEX_MARK: &str = "SELECT through_seq FROM caller_name_index";

/// The mark [`NAME_INDEX_MARK`] read: calls whose `first_seq` is past it are not indexed yet.
fn name_index_mark_of(rows: Vec<AnyRow>) -> Result<i64, StoreError> {
    match rows.first() {
        Some(row) => get(row, "through_seq", "read name index mark"),
        None => Ok(0),
    }
}

fn query_error(operation: &str, source: sqlx::Error) -> StoreError {
    StoreError::Query {
        operation: operation.to_owned(),
        source,
    }
}

impl TableRow for StoredEvent {
    const COLUMNS: usize = EVENT_COLUMN_COUNT;

    fn put(&self, sink: &mut impl RowSink) {
        let event = self;
        let header = &event.header;
        sink.add(event.seq);
        sink.add(header.kind.clone());
        sink.add(header.node_id.clone());
        sink.add(header.node_seq);
        sink.add(header.call_id.clone());
        sink.add(header.at_ms);
        sink.add(header.stored_at_ms);
        sink.add(event.body.clone());
        sink.add(event.body_digest.clone());
        sink.add(event.prev_hash.clone());
        sink.add(event.hash.clone());
    }
}

impl TableRow for CallRow {
    const COLUMNS: usize = CALL_COLUMN_COUNT;

    fn put(&self, sink: &mut impl RowSink) {
        let row = self;
        let r = &row.record;
        sink.add(r.call_id.clone());
        sink.add(r.sip_call_id.clone());
        sink.add(r.line_number.clone());
        sink.add(r.court_name.clone());
        sink.add(r.caller_number.clone());
        sink.add(r.caller_display_name.clone());
        sink.add(r.caller_source.clone());
        sink.add(r.user_agent.clone());
        sink.add(r.codec.clone());
        sink.add(r.received_at_ms);
        sink.add(r.answered_at_ms);
        sink.add(r.prompt_started_at_ms);
        sink.add(r.prompt_ended_at_ms);
        sink.add(r.operator_answered_at_ms);
        sink.add(r.ended_at_ms);
        sink.add(r.prompt_id.clone());
        sink.add(r.prompt_sha256.clone());
        sink.add(i64::from(r.prompt_length_ms));
        sink.add(i64::from(r.prompt_ms_sent));
        sink.add(i64::from(r.prompt_completed));
        sink.add(r.dtmf_during_prompt.clone());
        sink.add(prompts_json(&r.prompts));
        sink.add(r.operator_uri.clone());
        sink.add(i64::from(r.end_reason));
        sink.add(i64::from(r.sip_final_status));
        // Bit-for-bit: u64 counters round-trip through i64 unchanged.
        sink.add(r.rtp_packets_sent as i64);
        sink.add(r.rtp_packets_received as i64);
        sink.add(media_json(r));
        sink.add(i64::from(r.probe));
        sink.add(r.proxy_source.clone());
        sink.add(i64::from(r.prior_reports));
        sink.add(i64::from(r.prior_flags));
        sink.add(row.state as i64);
        // New rows start unflagged; the upsert never overwrites an existing flag.
        sink.add(0_i64);
        sink.add(row.node_id.clone());
        sink.add(row.last_seq);
        // first_seq: kept by the usual upsert, so it stays the event that made the row.
        sink.add(row.last_seq);
    }
}

/// Indexed calls columns that a call's first event sets for good: when it arrived, on
/// which line and court, from which caller (number, and the name the grams index).
const ARRIVAL_COLUMNS: [&str; 5] = [
    "received_at_ms",
    "line_number",
    "court_name",
    "caller_number",
    "caller_display_name",
];

/// Every `daily_court_figures` column, in [`DayCourtTally`]'s [`TableRow`] order.
const FIGURE_COLUMNS: &str = "day, court_name, calls, warning_completed, hung_up_in_warning, \
    connected, answer_ms_sum, answered, answered_5s, answered_10s, answered_20s, answered_30s, \
    flags, reports";
/// Number of names in [`FIGURE_COLUMNS`].
const FIGURE_COLUMN_COUNT: usize = 14;
/// The calls columns [`Tally::of_call`] reads.
const TALLY_CALL_COLUMNS: &str = "call_id, received_at_ms, court_name, state, prompt_completed, \
    end_reason, prompt_ended_at_ms, operator_answered_at_ms, probe";

/// `INSERT INTO daily_court_figures (...)`: the head of the figures' additions.
static INSERT_FIGURES: LazyLock<String> =
    LazyLock::new(|| format!("INSERT INTO daily_court_figures ({FIGURE_COLUMNS})"));

/// The tail that adds a new row's values to an existing one's.
static ADD_FIGURES: LazyLock<String> = LazyLock::new(|| {
    let sums: Vec<String> = FIGURE_COLUMNS
        .split(',')
        .map(str::trim)
        .skip(2)
        .map(|column| format!("{column} = daily_court_figures.{column} + excluded.{column}"))
        .collect();
    format!(
        " ON CONFLICT (day, court_name) DO UPDATE SET {}",
        sums.join(", ")
    )
});

impl TableRow for DayCourtTally {
    const COLUMNS: usize = FIGURE_COLUMN_COUNT;

    fn put(&self, sink: &mut impl RowSink) {
        let row = self;
        let t = &row.tally;
        sink.add(row.day);
        sink.add(row.court_name.clone());
        for value in [
            t.calls,
            t.warning_completed,
            t.hung_up_in_warning,
            t.connected,
            t.answer_ms_sum,
            t.answered,
        ]
        .into_iter()
        .chain(t.answered_within)
        .chain([t.flags, t.reports])
        {
            sink.add(value);
        }
    }
}

fn figures_from_row(row: &AnyRow) -> Result<DayCourtTally, StoreError> {
    let key = "daily_court_figures";
    let number = |name: &str| get::<i64>(row, name, key);
    Ok(DayCourtTally {
        day: number("day")?,
        court_name: get(row, "court_name", key)?,
        tally: Tally {
            calls: number("calls")?,
            warning_completed: number("warning_completed")?,
            hung_up_in_warning: number("hung_up_in_warning")?,
            connected: number("connected")?,
            answer_ms_sum: number("answer_ms_sum")?,
            answered: number("answered")?,
            answered_within: [
                number("answered_5s")?,
                number("answered_10s")?,
                number("answered_20s")?,
                number("answered_30s")?,
            ],
            flags: number("flags")?,
            reports: number("reports")?,
        },
    })
}

/// A record holding just the [`TALLY_CALL_COLUMNS`].
fn tally_call_from_row(row: &AnyRow, operation: &str) -> Result<CallRecord, StoreError> {
    let number = |name: &str| get::<i64>(row, name, operation);
    Ok(CallRecord {
        call_id: get(row, "call_id", operation)?,
        received_at_ms: number("received_at_ms")?,
        court_name: get(row, "court_name", operation)?,
        state: i32::try_from(number("state")?).unwrap_or_default(),
        prompt_completed: number("prompt_completed")? != 0,
        end_reason: i32::try_from(number("end_reason")?).unwrap_or_default(),
        prompt_ended_at_ms: number("prompt_ended_at_ms")?,
        operator_answered_at_ms: number("operator_answered_at_ms")?,
        probe: number("probe")? != 0,
        ..CallRecord::default()
    })
}

/// `INSERT INTO calls (...)`, the head of every calls upsert.
static INSERT_CALLS: LazyLock<String> =
    LazyLock::new(|| format!("INSERT INTO calls ({CALL_COLUMNS})"));

/// The usual tail of the calls upsert: an existing row gets every column but the key,
/// `flagged`, `first_seq` and [`ARRIVAL_COLUMNS`], and only if those are unchanged — so the indexes on
/// them are not rewritten for each of a call's events (SQLite rewrites an index whenever
/// one of its columns is assigned, whatever the value).
static UPDATE_PROGRESS: LazyLock<String> = LazyLock::new(|| {
    let unchanged: Vec<String> = ARRIVAL_COLUMNS
        .iter()
        .map(|column| format!("calls.{column} = excluded.{column}"))
        .collect();
    format!(
        " ON CONFLICT (call_id) DO UPDATE SET {} WHERE {}",
        upsert_assignments(&[&ARRIVAL_COLUMNS[..], &["first_seq"]].concat()),
        unchanged.join(" AND ")
    )
});

/// The tail for rows whose arrival columns did change: every column but the key and
/// `flagged`. `first_seq` moves to the event, so the name index picks the call up again.
static UPDATE_ALL: LazyLock<String> = LazyLock::new(|| {
    format!(
        " ON CONFLICT (call_id) DO UPDATE SET {}",
        upsert_assignments(&[])
    )
});

/// The `SET` list of the calls upsert: every column except the key, `flagged` and `kept`.
fn upsert_assignments(kept: &[&str]) -> String {
    CALL_COLUMNS
        .split(',')
        .map(str::trim)
        .filter(|column| *column != "call_id" && *column != "flagged" && !kept.contains(column))
        .map(|column| format!("{column} = excluded.{column}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `rows` cut into runs of power-of-two lengths, at most [`MAX_ROWS_PER_STATEMENT`]:
/// few round trips, and at most seven statement texts per kind, each parsed once per
/// connection and then taken from sqlx's statement cache (a text per row count meant
/// parsing a 2,000-placeholder statement for nearly every batch).
fn statement_chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let count = 1 << rows.len().min(MAX_ROWS_PER_STATEMENT).checked_ilog2()?;
        let (chunk, rest) = rows.split_at(count);
        rows = rest;
        Some(chunk)
    })
}

/// The grams `caller_name_grams` holds for a caller name: each character and each pair
/// of adjacent characters, once each. A search for one character walks that character;
/// a longer one walks one of its pairs, which every name containing it also holds.
pub fn name_grams(name: &str) -> BTreeSet<String> {
    let characters: Vec<char> = name.chars().collect();
    let singles = characters.iter().map(char::to_string);
    let pairs = characters.windows(2).map(|pair| pair.iter().collect());
    singles.chain(pairs).collect()
}

/// The grams a search for names containing `pattern` may walk: the pattern itself when
/// it is one character, else each of its character pairs.
fn search_grams(pattern: &str) -> Vec<String> {
    let characters: Vec<char> = pattern.chars().collect();
    if characters.len() < 2 {
        return vec![pattern.to_owned()];
    }
    let mut pairs: Vec<String> = characters
        .windows(2)
        .map(|pair| pair.iter().collect())
        .collect();
    pairs.sort();
    pairs.dedup();
    pairs
}

/// One `caller_name_grams` row: a gram of a call's caller name with the call's sort key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct NameGram {
    /// One character or two adjacent ones.
    gram: String,
    /// The call's `received_at_ms`.
    call_time_ms: i64,
    /// The call's `call_id`.
    call_key: String,
}

impl NameGram {
    /// The rows for `call`'s caller name.
    fn of_call(call: &CallRecord) -> impl Iterator<Item = NameGram> + '_ {
        name_grams(&call.caller_display_name)
            .into_iter()
            .map(|gram| NameGram {
                gram,
                call_time_ms: call.received_at_ms,
                call_key: call.call_id.clone(),
            })
    }
}

impl TableRow for NameGram {
    const COLUMNS: usize = 3;

    fn put(&self, sink: &mut impl RowSink) {
        sink.add(self.gram.clone());
        sink.add(self.call_time_ms);
        sink.add(self.call_key.clone());
    }
}

/// Where a page of calls starts and how many rows it takes.
struct Page<'a> {
    /// Where the previous page ended.
    cursor: Option<&'a Cursor>,
    /// Oldest first, else newest first.
    oldest_first: bool,
    /// Rows to fetch: the page size and one more, which tells whether another page
    /// exists without a second query.
    rows: u32,
}

impl Page<'_> {
    /// Appends the cursor condition, order and limit on sort columns `time` and `key`.
    fn push(&self, sql: &mut Sql, time: &str, key: &str) {
        let (compare, direction) = if self.oldest_first {
            (">", "ASC")
        } else {
            ("<", "DESC")
        };
        if let Some(cursor) = self.cursor {
            sql.push(&format!(" AND ({time}, {key}) {compare} ("))
                .bind(cursor.received_at_ms)
                .push(", ")
                .bind(cursor.call_id.clone())
                .push(")");
        }
        sql.push(&format!(
            " ORDER BY {time} {direction}, {key} {direction} LIMIT {}",
            self.rows
        ));
    }
}

/// Position of a page: the last row's sort key, and the sort it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    /// The sort the token was made for.
    oldest_first: bool,
    /// Last row's `received_at_ms`.
    received_at_ms: i64,
    /// Last row's `call_id` (tie-break).
    call_id: String,
}

/// A requested page size with the default for 0 and the cap applied.
fn page_size_or_default(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

impl Cursor {
    /// Where a list resumes: none for the first page, else the decoded token,
    /// which must have been made for the same sort order.
    fn resume(token: Option<&str>, oldest_first: bool) -> Result<Option<Cursor>, StoreError> {
        let Some(token) = token.filter(|token| !token.is_empty()) else {
            return Ok(None);
        };
        let cursor = Cursor::decode(token)?;
        if cursor.oldest_first != oldest_first {
            return Err(StoreError::InvalidPageToken(
                "the token was made for the other sort order".into(),
            ));
        }
        Ok(Some(cursor))
    }

    /// Cuts `rows`, fetched one beyond the page, to `page_size`; when there were
    /// more, the token that resumes after the last row kept, whose sort key (time,
    /// id) `key` gives.
    fn after_page<T>(
        rows: &mut Vec<T>,
        page_size: u32,
        oldest_first: bool,
        key: impl Fn(&T) -> (i64, String),
    ) -> Option<String> {
        if rows.len() <= page_size as usize {
            return None;
        }
        rows.truncate(page_size as usize);
        rows.last().map(|last| {
            let (received_at_ms, call_id) = key(last);
            Cursor {
                oldest_first,
                received_at_ms,
                call_id,
            }
            .encode()
        })
    }

    fn encode(&self) -> String {
        hex::encode(format!(
            "{PAGE_TOKEN_VERSION}:{}:{}:{}",
            u8::from(self.oldest_first),
            self.received_at_ms,
            self.call_id
        ))
    }

    fn decode(token: &str) -> Result<Cursor, StoreError> {
        let invalid = |why: &str| StoreError::InvalidPageToken(format!("{token:?}: {why}"));
        let bytes = hex::decode(token).map_err(|_| invalid("not hex"))?;
        let text = String::from_utf8(bytes).map_err(|_| invalid("not UTF-8"))?;
        let mut parts = text.splitn(4, ':');
        if parts.next() != Some(PAGE_TOKEN_VERSION) {
            return Err(invalid("unknown version"));
        }
        let oldest_first = match parts.next() {
            Some("0") => false,
            Some("1") => true,
            _ => return Err(invalid("bad sort")),
        };
        let received_at_ms = parts
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| invalid("bad time"))?;
        let call_id = parts
            .next()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| invalid("no call id"))?
            .to_owned();
        Ok(Cursor {
            oldest_first,
            received_at_ms,
            call_id,
        })
    }
}

impl SqlStore {
    /// Appends the WHERE conditions of `filter` (each starting with " AND ").
    fn push_filter(&self, sql: &mut Sql, filter: &CallFilter) {
        if filter.since_ms != 0 {
            sql.push(" AND received_at_ms >= ").bind(filter.since_ms);
        }
        if filter.until_ms != 0 {
            sql.push(" AND received_at_ms < ").bind(filter.until_ms);
        }
        if !filter.line_number.is_empty() {
            sql.push(" AND line_number = ")
                .bind(filter.line_number.clone());
        }
        if !filter.court_name.is_empty() {
            sql.push(" AND court_name = ")
                .bind(filter.court_name.clone());
        }
        if !filter.caller_prefix.is_empty() {
            if filter.caller_exact {
                sql.push(" AND caller_number = ")
                    .bind(filter.caller_prefix.clone());
            } else {
                // A range, so the caller index is used; both backends compare these columns
                // bytewise, and no phone number contains U+10FFFF (a noncharacter).
                sql.push(" AND caller_number >= ")
                    .bind(filter.caller_prefix.clone())
                    .push(" AND caller_number < ")
                    .bind(format!("{}\u{10FFFF}", filter.caller_prefix));
            }
        }
        if !filter.call_id_prefix.is_empty() {
            // A range on the primary key, as for caller prefixes: call ids are ASCII.
            sql.push(" AND call_id >= ")
                .bind(filter.call_id_prefix.clone())
                .push(" AND call_id < ")
                .bind(format!("{}\u{10FFFF}", filter.call_id_prefix));
        }
        if !filter.caller_name_contains.is_empty() {
            let function = match self.backend {
                Backend::Sqlite => " AND instr(caller_display_name, ",
                Backend::Postgres => " AND strpos(caller_display_name, ",
            };
            sql.push(function)
                .bind(filter.caller_name_contains.clone())
                .push(") > 0");
        }
        if filter.end_reason != EndReason::Unspecified as i32 {
            sql.push(" AND end_reason = ")
                .bind(i64::from(filter.end_reason));
        }
        // Literals, not placeholders, so SQLite can use the partial indexes on flagged,
        // reported and recorded calls.
        for (choice, yes, no) in [
            (
                filter.prompt_completed(),
                "prompt_completed = 1",
                "prompt_completed = 0",
            ),
            (
                filter.connected(),
                "operator_answered_at_ms <> 0",
                "operator_answered_at_ms = 0",
            ),
            (filter.flagged(), "flagged = 1", "flagged = 0"),
            (filter.has_report(), "has_report = 1", "has_report = 0"),
            (
                filter.has_recording(),
                "has_recording = 1",
                "has_recording = 0",
            ),
            (filter.probe(), "probe = 1", "probe = 0"),
        ] {
            match choice {
                Choice::Any => {}
                Choice::Yes => {
                    sql.push(" AND ").push(yes);
                }
                Choice::No => {
                    sql.push(" AND ").push(no);
                }
            }
        }
        let states: Vec<String> = if filter.states.is_empty() {
            vec![
                (CallState::Ended as i32).to_string(),
                (CallState::Interrupted as i32).to_string(),
            ]
        } else {
            filter.states.iter().map(i32::to_string).collect()
        };
        sql.push(&format!(" AND state IN ({})", states.join(", ")));
    }
}

#[async_trait]
impl Store for SqlStore {
    fn location(&self) -> &str {
        &self.location
    }

    async fn head(&self) -> Result<Option<StoredEvent>, StoreError> {
        let sql = self.sql(format!(
            "SELECT {EVENT_COLUMNS} FROM events ORDER BY seq DESC LIMIT 1"
        ));
        Ok(self.fetch_events(sql, "read chain head").await?.pop())
    }

    async fn event(&self, seq: i64) -> Result<Option<StoredEvent>, StoreError> {
        let mut sql = self.sql(format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq = "));
        sql.bind(seq);
        Ok(self.fetch_events(sql, "read event").await?.pop())
    }

    async fn node_event_digests(
        &self,
        node_id: &str,
        first: i64,
        last: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let mut sql = self.sql("SELECT node_seq, body_digest FROM events WHERE node_id = ");
        sql.bind(node_id.to_owned())
            .push(" AND node_seq >= ")
            .bind(first)
            .push(" AND node_seq <= ")
            .bind(last);
        let rows = sql.fetch_all(&self.pool, "look up node events").await?;
        rows.iter()
            .map(|row| {
                Ok((
                    get(row, "node_seq", "node event")?,
                    get(row, "body_digest", "node event")?,
                ))
            })
            .collect()
    }

    async fn open_calls(&self, node_id: &str) -> Result<Vec<CallRecord>, StoreError> {
        let mut sql = self.sql(format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE state = 1 AND node_id = "
        ));
        sql.bind(node_id.to_owned()).push(" ORDER BY call_id");
        let rows = sql.fetch_all(&self.pool, "list open calls").await?;
        rows.iter().map(record_from_row).collect()
    }

    async fn append(&self, chain: ChainOnto<'_>) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        let operation = "append events";
        let head_sql = "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1";
        let read_head = |rows: Vec<AnyRow>| -> Result<Option<(i64, Vec<u8>)>, StoreError> {
            rows.first()
                .map(|row| {
                    Ok((
                        get(row, "seq", "chain head")?,
                        get(row, "hash", "chain head")?,
                    ))
                })
                .transpose()
        };
        // SQLite: this process's ledger is the only writer, so the head read before the
        // (deferred) transaction is the one it writes after; reading inside it could fail
        // with SQLITE_BUSY_SNAPSHOT when another statement committed in between.
        let sqlite_head = match self.backend {
            Backend::Sqlite => {
                read_head(self.sql(head_sql).fetch_all(&self.pool, operation).await?)?
            }
            Backend::Postgres => None,
        };
        let mut tx = self.begin(operation).await?;
        let head = match self.backend {
            Backend::Sqlite => sqlite_head,
            Backend::Postgres => {
                // Held to the commit: whoever appends next reads the head this commit leaves.
                let mut lock =
                    self.sql("SELECT COUNT(*) AS locked FROM (SELECT pg_advisory_xact_lock(");
                lock.bind(APPEND_LOCK).push(")) AS appending");
                lock.fetch_in(&mut tx, operation).await?;
                read_head(self.sql(head_sql).fetch_in(&mut tx, operation).await?)?
            }
        };
        let head_before = head.as_ref().map_or(0, |(seq, _)| *seq);
        let (events, changes) = chain(head)?;
        let tail = events.last().map(|last| (last.seq, last.hash.clone()));
        if tail.is_none() && changes.is_empty() {
            return Ok(None);
        }
        self.write_rows(&mut tx, &INSERT_EVENTS, "", &events, operation)
            .await?;
        let derive_here = self.derive_in_append(&mut tx, head_before, &tail).await?;
        if derive_here {
            self.apply_changes(&mut tx, changes.iter()).await?;
            if let Some((seq, _)) = tail {
                self.index_names(&mut tx, seq, NAME_INDEX_EVENTS).await?;
            }
        } else {
            // A follower writes the derived tables after the chain (`derived`).
            self.apply_changes(
                &mut tx,
                changes.iter().filter(|change| !change.is_derived()),
            )
            .await?;
        }
        tx.commit(operation).await?;
        Ok(tail)
    }

    fn derive_by_follower(&self) {
        self.derived_by_follower.store(true, Ordering::Relaxed);
    }

    async fn derived_through(&self) -> Result<i64, StoreError> {
        self.read_derived_through().await
    }

    async fn chain_progress(&self) -> Result<ChainProgress, StoreError> {
        self.read_chain_progress().await
    }

    async fn schema_version(&self) -> Result<SchemaVersion, StoreError> {
        self.read_schema_version().await
    }

    async fn apply_derived(
        &self,
        from: i64,
        through: i64,
        changes: &[Change],
    ) -> Result<bool, StoreError> {
        self.apply_derived_changes(from, through, changes).await
    }

    async fn list_calls(
        &self,
        query: &CallQuery,
    ) -> Result<(Vec<CallRecord>, Option<String>), StoreError> {
        let oldest_first = query.sort == SortOrder::OldestFirst;
        let page_size = query.effective_page_size();
        let sql = self.list_calls_sql(query).await?;
        let rows = sql.fetch_all(&self.pool, "list calls").await?;
        let mut records = rows
            .iter()
            .map(record_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        if !query.filter.caller_name_contains.is_empty() {
            // Indexed and not-yet-indexed calls, in sort order; a call renamed since it
            // was indexed can be in both.
            records.sort_by(|a, b| {
                let order = (a.received_at_ms, &a.call_id).cmp(&(b.received_at_ms, &b.call_id));
                if oldest_first {
                    order
                } else {
                    order.reverse()
                }
            });
            records.dedup_by(|a, b| a.call_id == b.call_id);
        }
        let next = Cursor::after_page(&mut records, page_size, oldest_first, |last| {
            (last.received_at_ms, last.call_id.clone())
        });
        Ok((records, next))
    }

    async fn count_calls(&self, filter: &CallFilter, cap: u32) -> Result<u64, StoreError> {
        let page = Page {
            cursor: None,
            oldest_first: false,
            rows: cap.saturating_add(1),
        };
        let mut sql = self.matching_calls_sql(filter, &page, "call_id").await?;
        // A name search's two parts can both hold a call the index took in between.
        sql.text = format!(
            "SELECT COUNT(DISTINCT call_id) AS n FROM ({}) AS matches",
            sql.text
        );
        let operation = "count calls";
        let rows = sql.fetch_all(&self.pool, operation).await?;
        match rows.first() {
            Some(row) => Ok(get::<i64>(row, "n", operation)?.max(0) as u64),
            None => Ok(0),
        }
    }

    async fn mismatched_call_marks(&self) -> Result<Vec<(String, String)>, StoreError> {
        let operation = "check report and recording marks";
        let rows = self
            .sql(
                "SELECT call_id, 'has_report' AS mark FROM calls WHERE has_report <> \
                 (CASE WHEN EXISTS (SELECT 1 FROM reports WHERE reports.call_id = calls.call_id) \
                 THEN 1 ELSE 0 END) \
                 UNION ALL SELECT call_id, 'has_recording' AS mark FROM calls WHERE has_recording <> \
                 (CASE WHEN EXISTS (SELECT 1 FROM call_recordings AS r \
                 WHERE r.call_id = calls.call_id AND r.state = 'stored') THEN 1 ELSE 0 END) \
                 ORDER BY call_id",
            )
            .fetch_all(&self.pool, operation)
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    get(row, "call_id", operation)?,
                    get(row, "mark", operation)?,
                ))
            })
            .collect()
    }

    async fn get_call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        let mut sql = self.sql(format!("SELECT {CALL_COLUMNS} FROM calls WHERE call_id = "));
        sql.bind(call_id.to_owned());
        let rows = sql.fetch_all(&self.pool, "read call").await?;
        rows.first().map(record_from_row).transpose()
    }

    async fn call_events(&self, call_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let mut sql = self.sql(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE call_id = "
        ));
        sql.bind(call_id.to_owned()).push(" ORDER BY seq");
        self.fetch_events(sql, "read call events").await
    }

    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let mut sql = self.sql(format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > "));
        sql.bind(after)
            .push(&format!(" ORDER BY seq LIMIT {limit}"));
        self.fetch_events(sql, "scan events").await
    }

    async fn call_events_after(
        &self,
        after: Option<(&str, i64)>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut sql = self.sql(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE call_id IS NOT NULL"
        ));
        if let Some((call_id, seq)) = after {
            sql.push(" AND (call_id, seq) > (")
                .bind(call_id.to_owned())
                .push(", ")
                .bind(seq)
                .push(")");
        }
        sql.push(&format!(" ORDER BY call_id, seq LIMIT {limit}"));
        self.fetch_events(sql, "scan call events").await
    }

    async fn calls_after(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let mut sql = self.sql(format!("SELECT {CALL_COLUMNS} FROM calls"));
        if let Some(call_id) = after {
            sql.push(" WHERE call_id > ").bind(call_id.to_owned());
        }
        sql.push(&format!(" ORDER BY call_id LIMIT {limit}"));
        let rows = sql.fetch_all(&self.pool, "scan calls").await?;
        rows.iter().map(record_from_row).collect()
    }

    async fn node_gaps(&self) -> Result<(Vec<NodeSummary>, Vec<Gap>), StoreError> {
        let nodes = self
            .node_numbers(
                NODE_SUMMARY,
                "summarise nodes",
                |node_id, events, highest_seq| NodeSummary {
                    node_id,
                    events,
                    highest_seq,
                },
            )
            .await?;
        let gaps = self
            .node_numbers(NODE_GAPS, "find sequence gaps", |node_id, first, last| {
                Gap {
                    node_id,
                    first,
                    last,
                }
            })
            .await?;
        Ok((nodes, gaps))
    }

    async fn access_events(
        &self,
        before: i64,
        since_ms: i64,
        until_ms: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut sql = self.sql(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE kind = 'access'"
        ));
        if before > 0 {
            sql.push(" AND seq < ").bind(before);
        }
        if since_ms > 0 {
            sql.push(" AND at_ms >= ").bind(since_ms);
        }
        if until_ms > 0 {
            sql.push(" AND at_ms < ").bind(until_ms);
        }
        sql.push(&format!(" ORDER BY seq DESC LIMIT {limit}"));
        self.fetch_events(sql, "read access log").await
    }

    async fn config_events(&self, before: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        // The kind as a literal, so PostgreSQL's planner matches the partial index.
        let mut sql = self.sql(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE kind = '{CONFIG_APPLIED}'"
        ));
        if before > 0 {
            sql.push(" AND seq < ").bind(before);
        }
        sql.push(&format!(" ORDER BY seq DESC LIMIT {limit}"));
        self.fetch_events(sql, "read applied configurations").await
    }

    async fn name_index_mark(&self) -> Result<i64, StoreError> {
        self.read_name_index_mark().await
    }

    async fn missing_name_grams(
        &self,
        calls: &[CallRecord],
    ) -> Result<Vec<(String, String)>, StoreError> {
        let operation = "check name index";
        let expected: Vec<NameGram> = calls.iter().flat_map(NameGram::of_call).collect();
        let mut found = HashSet::new();
        for grams in statement_chunks(&expected) {
            let sql = self.name_gram_rows(
                "SELECT gram, call_time_ms, call_key FROM caller_name_grams WHERE ",
                grams,
            );
            for row in sql.fetch_all(&self.pool, operation).await? {
                found.insert(NameGram {
                    gram: get(&row, "gram", operation)?,
                    call_time_ms: get(&row, "call_time_ms", operation)?,
                    call_key: get(&row, "call_key", operation)?,
                });
            }
        }
        Ok(expected
            .into_iter()
            .filter(|gram| !found.contains(gram))
            .map(|gram| (gram.call_key, gram.gram))
            .collect())
    }

    async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let rows = self
            .sql(
                "SELECT name, role, token_hash, created_at_ms, created_by, revoked_at_ms \
             FROM tokens ORDER BY name",
            )
            .fetch_all(&self.pool, "read tokens")
            .await?;
        rows.iter()
            .map(|row| {
                Ok(TokenRow {
                    name: get(row, "name", "token")?,
                    role: i32::try_from(get::<i64>(row, "role", "token")?).unwrap_or_default(),
                    token_hash: get(row, "token_hash", "token")?,
                    created_at_ms: get(row, "created_at_ms", "token")?,
                    created_by: get(row, "created_by", "token")?,
                    revoked_at_ms: get(row, "revoked_at_ms", "token")?,
                })
            })
            .collect()
    }

    async fn expired_calls(&self, cutoff_ms: i64) -> Result<(Vec<String>, u64), StoreError> {
        // Reported calls are on legal hold like flagged ones.
        let mut sql = self.sql(
            "SELECT call_id, flagged + (SELECT COUNT(*) FROM reports \
             WHERE reports.call_id = calls.call_id) AS flagged FROM calls \
             WHERE state <> 1 AND received_at_ms < ",
        );
        sql.bind(cutoff_ms).push(" ORDER BY call_id");
        let rows = sql
            .fetch_all(&self.pool, "find calls past retention")
            .await?;
        let mut purgeable = Vec::new();
        let mut on_hold = 0;
        for row in &rows {
            if get::<i64>(row, "flagged", "call")? != 0 {
                on_hold += 1;
            } else {
                purgeable.push(get(row, "call_id", "call")?);
            }
        }
        Ok((purgeable, on_hold))
    }

    async fn held_calls(&self, limit: u32) -> Result<Vec<HeldCall>, StoreError> {
        let operation = "list calls on legal hold";
        // Held calls are few: collect them from the partial index on flagged calls (the
        // literal lets SQLite use it) and the reports, then sort those, rather than
        // walking every call in time order.
        let sql = self.sql(format!(
            "SELECT call_id, received_at_ms, flagged, \
             (SELECT COUNT(*) FROM reports WHERE reports.call_id = calls.call_id) AS reports \
             FROM calls WHERE call_id IN \
             (SELECT call_id FROM calls WHERE flagged = 1 UNION SELECT call_id FROM reports) \
             ORDER BY received_at_ms DESC, call_id DESC LIMIT {limit}"
        ));
        let rows = sql.fetch_all(&self.pool, operation).await?;
        rows.iter()
            .map(|row| {
                Ok(HeldCall {
                    call_id: get(row, "call_id", operation)?,
                    received_at_ms: get(row, "received_at_ms", operation)?,
                    flagged: get::<i64>(row, "flagged", operation)? != 0,
                    reports: get::<i64>(row, "reports", operation)?.max(0) as u64,
                })
            })
            .collect()
    }

    async fn count_call_events(&self, call_ids: &[String]) -> Result<u64, StoreError> {
        let mut total = 0;
        for chunk in call_ids.chunks(MAX_ROWS_PER_STATEMENT) {
            let mut sql = self.sql("SELECT COUNT(*) AS n FROM events WHERE call_id IN (");
            push_list(&mut sql, chunk);
            sql.push(")");
            let rows = sql.fetch_all(&self.pool, "count call events").await?;
            if let Some(row) = rows.first() {
                total += get::<i64>(row, "n", "count")? as u64;
            }
        }
        Ok(total)
    }

    async fn recording(&self, call_id: &str) -> Result<Option<RecordingRow>, StoreError> {
        let mut sql = self.sql(format!(
            "SELECT {RECORDING_COLUMNS} FROM call_recordings WHERE call_id = "
        ));
        sql.bind(call_id.to_owned());
        let rows = sql.fetch_all(&self.pool, "read recording").await?;
        rows.first().map(recording_from_row).transpose()
    }

    async fn recordings_after(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<Vec<RecordingRow>, StoreError> {
        let mut sql = self.sql(format!(
            "SELECT {RECORDING_COLUMNS} FROM call_recordings WHERE call_id > "
        ));
        sql.bind(after.to_owned())
            .push(&format!(" ORDER BY call_id LIMIT {limit}"));
        let rows = sql.fetch_all(&self.pool, "list recordings").await?;
        rows.iter().map(recording_from_row).collect()
    }

    async fn get_report(&self, report_id: &str) -> Result<Option<ReportRow>, StoreError> {
        let mut sql = self.sql(format!(
            "SELECT {REPORT_COLUMNS} FROM reports WHERE report_id = "
        ));
        sql.bind(report_id.to_owned());
        Ok(self.fetch_reports(sql, "read report").await?.pop())
    }

    async fn reports_of_call(&self, call_id: &str) -> Result<Vec<ReportRow>, StoreError> {
        let mut sql = self.sql(format!(
            "SELECT {REPORT_COLUMNS} FROM reports WHERE call_id = "
        ));
        sql.bind(call_id.to_owned())
            .push(" ORDER BY opened_at_ms, report_id");
        self.fetch_reports(sql, "read a call's reports").await
    }

    async fn call_has_report_or_flag(&self, call_id: &str) -> Result<bool, StoreError> {
        let operation = "check legal hold";
        let mut sql = self.sql("SELECT (SELECT COUNT(*) FROM reports WHERE call_id = ");
        sql.bind(call_id.to_owned())
            // From the chain, not `calls.flagged`: in a shared database a follower
            // writes that after the chain, and a recording's fate must not wait on it.
            .push(") + (SELECT COUNT(*) FROM events WHERE kind = 'flagged' AND call_id = ")
            .bind(call_id.to_owned())
            .push(") AS n");
        let rows = sql.fetch_all(&self.pool, operation).await?;
        match rows.first() {
            Some(row) => Ok(get::<i64>(row, "n", operation)? > 0),
            None => Ok(false),
        }
    }

    async fn list_reports(
        &self,
        query: &ReportQuery,
    ) -> Result<(Vec<ReportRow>, Option<String>), StoreError> {
        let oldest_first = query.sort == SortOrder::OldestFirst;
        let cursor = Cursor::resume(query.page_token.as_deref(), oldest_first)?;
        let page_size = page_size_or_default(query.page_size);
        let mut sql = self.sql(format!("SELECT {REPORT_COLUMNS} FROM reports WHERE 1 = 1"));
        self.push_report_filter(&mut sql, &query.filter, query.owner.as_deref());
        Page {
            cursor: cursor.as_ref(),
            oldest_first,
            rows: page_size + 1,
        }
        .push(&mut sql, "opened_at_ms", "report_id");
        let mut rows = self.fetch_reports(sql, "list reports").await?;
        let next = Cursor::after_page(&mut rows, page_size, oldest_first, |last| {
            (last.opened_at_ms, last.report_id.clone())
        });
        Ok((rows, next))
    }

    async fn report_versions(&self, report_id: &str) -> Result<Vec<(i64, i64)>, StoreError> {
        let operation = "read report versions";
        let mut sql = self.sql("SELECT version, seq FROM report_versions WHERE report_id = ");
        sql.bind(report_id.to_owned()).push(" ORDER BY version");
        let rows = sql.fetch_all(&self.pool, operation).await?;
        rows.iter()
            .map(|row| Ok((get(row, "version", operation)?, get(row, "seq", operation)?)))
            .collect()
    }

    async fn reports_after(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ReportRow>, StoreError> {
        let mut sql = self.sql(format!("SELECT {REPORT_COLUMNS} FROM reports"));
        if let Some(report_id) = after {
            sql.push(" WHERE report_id > ").bind(report_id.to_owned());
        }
        sql.push(&format!(" ORDER BY report_id LIMIT {limit}"));
        self.fetch_reports(sql, "scan reports").await
    }

    async fn report_versions_after(
        &self,
        after: Option<(&str, i64)>,
        limit: u32,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let operation = "scan report versions";
        let mut sql = self.sql("SELECT report_id, version, seq FROM report_versions");
        if let Some((report_id, version)) = after {
            sql.push(" WHERE (report_id, version) > (")
                .bind(report_id.to_owned())
                .push(", ")
                .bind(version)
                .push(")");
        }
        sql.push(&format!(" ORDER BY report_id, version LIMIT {limit}"));
        let rows = sql.fetch_all(&self.pool, operation).await?;
        rows.iter()
            .map(|row| {
                Ok((
                    get(row, "report_id", operation)?,
                    get(row, "version", operation)?,
                    get(row, "seq", operation)?,
                ))
            })
            .collect()
    }

    async fn daily_figures(
        &self,
        first_day: i64,
        last_day: i64,
    ) -> Result<Vec<DayCourtTally>, StoreError> {
        let mut sql = self.sql(format!(
            "SELECT {FIGURE_COLUMNS} FROM daily_court_figures WHERE day >= "
        ));
        sql.bind(first_day)
            .push(" AND day <= ")
            .bind(last_day)
            .push(" ORDER BY day, court_name");
        let rows = sql.fetch_all(&self.pool, "read dashboard figures").await?;
        rows.iter().map(figures_from_row).collect()
    }

    async fn records_health(&self) -> Result<RecordsHealth, StoreError> {
        let operation = "read records health";
        let checkpoint = self
            .sql(
                "SELECT seq, at_ms FROM events WHERE kind = 'checkpoint' ORDER BY seq DESC LIMIT 1",
            )
            .fetch_all(&self.pool, operation)
            .await?;
        let last_checkpoint = match checkpoint.first() {
            Some(row) => Some((get(row, "seq", operation)?, get(row, "at_ms", operation)?)),
            None => None,
        };
        // The node ids by a walk of the (node_id, node_seq) index from one id to the
        // next (a DISTINCT would read every switchboard event), then each one's last.
        let ids = self
            .sql(
                "WITH RECURSIVE nodes (node_id) AS (SELECT MIN(node_id) FROM events \
                 UNION ALL SELECT (SELECT MIN(node_id) FROM events WHERE node_id > nodes.node_id) \
                 FROM nodes WHERE nodes.node_id IS NOT NULL) \
                 SELECT node_id FROM nodes WHERE node_id IS NOT NULL",
            )
            .fetch_all(&self.pool, operation)
            .await?;
        let mut nodes = Vec::new();
        for id in &ids {
            let node_id: String = get(id, "node_id", operation)?;
            let mut sql =
                self.sql("SELECT node_seq, at_ms, stored_at_ms FROM events WHERE node_id = ");
            sql.bind(node_id.clone())
                .push(" ORDER BY node_seq DESC LIMIT 1");
            if let Some(row) = sql.fetch_all(&self.pool, operation).await?.first() {
                nodes.push(NodeDelivery {
                    node_seq: get(row, "node_seq", operation)?,
                    at_ms: get(row, "at_ms", operation)?,
                    stored_at_ms: get(row, "stored_at_ms", operation)?,
                    node_id,
                });
            }
        }
        let verification = self
            .sql(
                "SELECT finished_at_ms, actor, events_checked, checkpoints_checked, \
                 calls_checked, findings, unsigned_tail FROM last_verification",
            )
            .fetch_all(&self.pool, operation)
            .await?;
        let last_verification = match verification.first() {
            Some(row) => Some(VerificationRow {
                finished_at_ms: get(row, "finished_at_ms", operation)?,
                actor: get(row, "actor", operation)?,
                events_checked: get(row, "events_checked", operation)?,
                checkpoints_checked: get(row, "checkpoints_checked", operation)?,
                calls_checked: get(row, "calls_checked", operation)?,
                findings: get(row, "findings", operation)?,
                unsigned_tail: get(row, "unsigned_tail", operation)?,
            }),
            None => None,
        };
        Ok(RecordsHealth {
            last_checkpoint,
            nodes,
            last_verification,
        })
    }

    async fn record_verification(&self, run: &VerificationRow) -> Result<(), StoreError> {
        let operation = "record the verification";
        let mut sql = self.sql(
            "INSERT INTO last_verification (id, finished_at_ms, actor, events_checked, \
             checkpoints_checked, calls_checked, findings, unsigned_tail) VALUES (1",
        );
        sql.push(", ")
            .bind(run.finished_at_ms)
            .push(", ")
            .bind(run.actor.clone());
        for value in [
            run.events_checked,
            run.checkpoints_checked,
            run.calls_checked,
            run.findings,
            run.unsigned_tail,
        ] {
            sql.push(", ").bind(value);
        }
        sql.push(
            ") ON CONFLICT (id) DO UPDATE SET finished_at_ms = excluded.finished_at_ms, \
             actor = excluded.actor, events_checked = excluded.events_checked, \
             checkpoints_checked = excluded.checkpoints_checked, \
             calls_checked = excluded.calls_checked, findings = excluded.findings, \
             unsigned_tail = excluded.unsigned_tail",
        );
        sql.fetch_all(&self.pool, operation).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
        if let Some(writer_pool) = &self.writer_pool {
            writer_pool.close().await;
        }
    }
}

/// `$a, $b, ...` binding each of `values`.
fn push_list(sql: &mut Sql, values: &[String]) {
    for (index, value) in values.iter().enumerate() {
        if index > 0 {
            sql.push(", ");
        }
        sql.bind(value.clone());
    }
}

impl SqlStore {
    async fn upsert_calls(&self, tx: &mut Writer, rows: &[&CallRow]) -> Result<(), StoreError> {
        let operation = "store call rows";
        self.tally_calls(tx, rows).await?;
        self.count_caller_days(tx, rows).await?;
        let written = self
            .write_rows(tx, &INSERT_CALLS, &UPDATE_PROGRESS, rows, operation)
            .await?;
        if written < rows.len() as u64 {
            // An event changed a call's arrival columns (a switchboard never does):
            // drop the grams of the names as stored and write the rows in full, which
            // puts them among the calls the name index has yet to take; rewriting the
            // others changes nothing.
            let call_ids: Vec<String> = rows.iter().map(|row| row.record.call_id.clone()).collect();
            self.delete_name_grams(tx, &call_ids).await?;
            self.write_rows(tx, &INSERT_CALLS, &UPDATE_ALL, rows, operation)
                .await?;
        }
        Ok(())
    }

    /// Adds to the dashboard's figures what the finished calls among `rows` (about to
    /// be written) add, after taking away what their rows as stored added if those
    /// were finished already: each finished call counts once, as its latest row says.
    /// Only finished rows are looked up, by key, so a milestone costs nothing here.
    async fn tally_calls(&self, tx: &mut Writer, rows: &[&CallRow]) -> Result<(), StoreError> {
        let mut tallies: HashMap<(i64, String), Tally> = HashMap::new();
        let mut finished: Vec<String> = Vec::new();
        for row in rows {
            // Most rows are milestones of calls in progress: nothing to copy or count.
            if !matches!(row.state, CallState::Ended | CallState::Interrupted) {
                continue;
            }
            let record = CallRecord {
                state: row.state as i32,
                ..CallRecord::clone(&row.record)
            };
            if let Some(tally) = Tally::of_call(&record) {
                let key = (day_of(record.received_at_ms), record.court_name.clone());
                tallies.entry(key).or_default().add(&tally, 1);
                finished.push(record.call_id);
            }
        }
        let operation = "read finished calls' figures";
        for chunk in finished.chunks(MAX_ROWS_PER_STATEMENT) {
            let mut sql = self.sql(format!(
                "SELECT {TALLY_CALL_COLUMNS} FROM calls WHERE state IN (2, 3) AND call_id IN ("
            ));
            push_list(&mut sql, chunk);
            sql.push(")");
            for row in sql.fetch_in(&mut *tx, operation).await? {
                let stored = tally_call_from_row(&row, operation)?;
                if let Some(tally) = Tally::of_call(&stored) {
                    let key = (day_of(stored.received_at_ms), stored.court_name);
                    tallies.entry(key).or_default().add(&tally, -1);
                }
            }
        }
        self.add_tallies(tx, &tallies).await
    }

    /// Adds `tallies` to the rows of `daily_court_figures`, making rows as needed.
    async fn add_tallies(
        &self,
        tx: &mut Writer,
        tallies: &HashMap<(i64, String), Tally>,
    ) -> Result<(), StoreError> {
        let mut rows: Vec<DayCourtTally> = tallies
            .iter()
            .filter(|(_, tally)| !tally.is_zero())
            .map(|((day, court_name), tally)| DayCourtTally {
                day: *day,
                court_name: court_name.clone(),
                tally: *tally,
            })
            .collect();
        // One order, so two writers lock the rows alike (PostgreSQL).
        rows.sort_by(|a, b| (a.day, &a.court_name).cmp(&(b.day, &b.court_name)));
        self.write_rows(
            tx,
            &INSERT_FIGURES,
            &ADD_FIGURES,
            &rows,
            "add dashboard figures",
        )
        .await?;
        Ok(())
    }

    /// Writes the grams of every call not in the name index yet (`first_seq` past
    /// `through_seq`), if at least `min_events` events were stored since the last time,
    /// and moves `through_seq` to `head_seq`. Sorted and in bulk, so each index page is
    /// written once for many calls. Returns how many calls it indexed.
    async fn index_names(
        &self,
        tx: &mut Writer,
        head_seq: i64,
        min_events: i64,
    ) -> Result<u64, StoreError> {
        let operation = "index caller names";
        let through = name_index_mark_of(
            self.sql(NAME_INDEX_MARK)
                .fetch_in(&mut *tx, operation)
                .await?,
        )?;
        if head_seq - through < min_events.max(1) {
            return Ok(0);
        }
        let mut sql = self.sql(
            "SELECT call_id, received_at_ms, caller_display_name FROM calls WHERE first_seq > ",
        );
        sql.bind(through).push(" AND caller_display_name <> ''");
        let mut grams = Vec::new();
        let mut calls = 0;
        for row in sql.fetch_in(&mut *tx, operation).await? {
            grams.extend(NameGram::of_call(&name_of_row(&row, operation)?));
            calls += 1;
        }
        grams.sort_by(|a, b| {
            (&a.gram, a.call_time_ms, &a.call_key).cmp(&(&b.gram, b.call_time_ms, &b.call_key))
        });
        self.write_rows(
            tx,
            "INSERT INTO caller_name_grams (gram, call_time_ms, call_key)",
            " ON CONFLICT DO NOTHING",
            &grams,
            operation,
        )
        .await?;
        let mut update = self.sql("UPDATE caller_name_index SET through_seq = ");
        update
            .bind(head_seq)
            .push(" WHERE through_seq < ")
            .bind(head_seq);
        update.execute(tx, operation).await?;
        Ok(calls)
    }

    /// Deletes the grams of these calls' names as stored (before their rows go or change).
    async fn delete_name_grams(
        &self,
        tx: &mut Writer,
        call_ids: &[String],
    ) -> Result<(), StoreError> {
        let operation = "read call names";
        for chunk in call_ids.chunks(MAX_ROWS_PER_STATEMENT) {
            let mut sql = self.sql(
                "SELECT call_id, received_at_ms, caller_display_name FROM calls WHERE call_id IN (",
            );
            push_list(&mut sql, chunk);
            sql.push(")");
            let mut grams = Vec::new();
            for row in sql.fetch_in(&mut *tx, operation).await? {
                grams.extend(NameGram::of_call(&name_of_row(&row, operation)?));
            }
            for grams in statement_chunks(&grams) {
                self.name_gram_rows("DELETE FROM caller_name_grams WHERE ", grams)
                    .execute(tx, "delete name grams")
                    .await?;
            }
        }
        Ok(())
    }

    /// `head` and a condition matching exactly the `caller_name_grams` rows `grams`:
    /// an OR of key lookups, which both planners answer from the primary key (SQLite
    /// scans the whole table for the row-value `IN (VALUES ...)` form).
    fn name_gram_rows(&self, head: &str, grams: &[NameGram]) -> Sql {
        let mut sql = self.sql(head);
        for (index, row) in grams.iter().enumerate() {
            sql.push(if index == 0 {
                "(gram = "
            } else {
                " OR (gram = "
            })
            .bind(row.gram.clone())
            .push(" AND call_time_ms = ")
            .bind(row.call_time_ms)
            .push(" AND call_key = ")
            .bind(row.call_key.clone())
            .push(")");
        }
        sql
    }

    /// `head (...), (...) tail` with every row of `rows` bound by `bind`.
    fn values<T>(
        &self,
        head: &str,
        tail: &str,
        columns: usize,
        rows: &[T],
        bind: impl Fn(&mut Sql, &T),
    ) -> Sql {
        let mut sql = self.sql(head);
        sql.value_groups(rows.len(), columns).push(tail);
        for row in rows {
            bind(&mut sql, row);
        }
        sql
    }

    /// Marks a call as having a recording kept in the evidence store (the
    /// `has_recording` search column), whichever way the file got there, once its
    /// recording row says so: a follower applies the mark after the chain, and reads
    /// what the recording event and any upload since left.
    async fn mark_recorded(&self, tx: &mut Writer, call_id: &str) -> Result<(), StoreError> {
        let mut mark = self.sql(
            "UPDATE calls SET has_recording = 1 WHERE has_recording = 0 AND EXISTS \
             (SELECT 1 FROM call_recordings WHERE call_recordings.call_id = calls.call_id \
             AND call_recordings.state = 'stored') AND call_id = ",
        );
        mark.bind(call_id.to_owned());
        mark.execute(tx, "mark recorded call").await?;
        Ok(())
    }

    /// Applies `changes` in order. Consecutive upserts go in multi-row statements; a
    /// call appears at most once in each (PostgreSQL refuses to update one row twice in
    /// a statement), keeping its last state.
    async fn apply_changes<'c>(
        &self,
        tx: &mut Writer,
        changes: impl Iterator<Item = &'c Change>,
    ) -> Result<(), StoreError> {
        let mut upserts: Vec<&CallRow> = Vec::new();
        let mut position: HashMap<&str, usize> = HashMap::new();
        for change in changes {
            match change {
                Change::UpsertCall(row) => match position.entry(&row.record.call_id) {
                    Entry::Occupied(held) => upserts[*held.get()] = row,
                    Entry::Vacant(slot) => {
                        slot.insert(upserts.len());
                        upserts.push(row);
                    }
                },
                other => {
                    self.upsert_calls(tx, &upserts).await?;
                    upserts.clear();
                    position.clear();
                    self.apply(tx, other).await?;
                }
            }
        }
        self.upsert_calls(tx, &upserts).await
    }

    async fn apply(&self, tx: &mut Writer, change: &Change) -> Result<(), StoreError> {
        match change {
            Change::UpsertCall(_) => {}
            Change::FlagCall {
                call_id,
                last_seq,
                at_ms,
            } => {
                let mut sql = self.sql("UPDATE calls SET flagged = 1, last_seq = ");
                sql.bind(*last_seq)
                    .push(" WHERE call_id = ")
                    .bind(call_id.clone());
                sql.execute(tx, "flag call").await?;
                let mut court = self.sql("SELECT court_name FROM calls WHERE call_id = ");
                court.bind(call_id.clone());
                let operation = "read a flagged call's court";
                if let Some(row) = court.fetch_in(&mut *tx, operation).await?.first() {
                    let court_name: String = get(row, "court_name", operation)?;
                    let mut tallies = HashMap::new();
                    tallies.insert((day_of(*at_ms), court_name), Tally::flag());
                    self.add_tallies(tx, &tallies).await?;
                }
                self.count_call_mark(tx, call_id, DayCounts::flag()).await?;
            }
            Change::PurgeCalls { call_ids } => {
                for chunk in call_ids.chunks(MAX_ROWS_PER_STATEMENT) {
                    let mut clear = self.sql("UPDATE events SET body = NULL WHERE call_id IN (");
                    push_list(&mut clear, chunk);
                    clear.push(")");
                    clear.execute(tx, "purge event bodies").await?;
                    self.delete_name_grams(tx, chunk).await?;
                    self.uncount_purged(tx, chunk).await?;
                    let mut delete = self.sql("DELETE FROM calls WHERE call_id IN (");
                    push_list(&mut delete, chunk);
                    delete.push(")");
                    delete.execute(tx, "purge calls").await?;
                    let mut audio = self.sql("DELETE FROM call_recordings WHERE call_id IN (");
                    push_list(&mut audio, chunk);
                    audio.push(")");
                    audio.execute(tx, "purge recordings").await?;
                }
            }
            Change::AddToken(token) => {
                let mut sql = self.sql(
                    "INSERT INTO tokens (name, role, token_hash, created_at_ms, created_by, revoked_at_ms) VALUES (",
                );
                sql.bind(token.name.clone())
                    .push(", ")
                    .bind(i64::from(token.role))
                    .push(", ")
                    .bind(token.token_hash.clone())
                    .push(", ")
                    .bind(token.created_at_ms)
                    .push(", ")
                    .bind(token.created_by.clone())
                    .push(", ")
                    .bind(token.revoked_at_ms)
                    .push(")");
                sql.execute(tx, "add token").await?;
            }
            Change::RecordRecording(row) => {
                let mut sql = self.sql(format!(
                    "INSERT INTO call_recordings ({RECORDING_COLUMNS}) VALUES ("
                ));
                sql.bind(row.call_id.clone())
                    .push(", ")
                    .bind(row.sha256.clone())
                    .push(", ")
                    .bind(row.bytes)
                    .push(", ")
                    .bind(row.sample_rate)
                    .push(", ")
                    .bind(row.channels)
                    .push(", ")
                    .bind(row.duration_ms)
                    .push(", ")
                    .bind(row.state.name().to_owned())
                    .push(", ")
                    .bind(row.detail.clone())
                    .push(", ")
                    .bind(row.last_seq)
                    .push(")");
                sql.execute(tx, "record recording").await?;
            }
            Change::PutReport(row) => {
                let assignments: Vec<String> = REPORT_COLUMNS
                    .split(',')
                    .map(str::trim)
                    .filter(|column| *column != "report_id")
                    .map(|column| format!("{column} = excluded.{column}"))
                    .collect();
                self.values(
                    &format!("INSERT INTO reports ({REPORT_COLUMNS}) VALUES "),
                    &format!(
                        " ON CONFLICT (report_id) DO UPDATE SET {}",
                        assignments.join(", ")
                    ),
                    REPORT_COLUMN_COUNT,
                    std::slice::from_ref(row),
                    bind_report,
                )
                .execute(tx, "store report")
                .await?;
                let mut version =
                    self.sql("INSERT INTO report_versions (report_id, version, seq) VALUES (");
                version
                    .bind(row.report_id.clone())
                    .push(", ")
                    .bind(row.version)
                    .push(", ")
                    .bind(row.last_seq)
                    .push(")");
                version.execute(tx, "store report version").await?;
            }
            Change::MarkReported(row) => {
                // Only the first version changes the row (and its partial index).
                let mut mark =
                    self.sql("UPDATE calls SET has_report = 1 WHERE has_report = 0 AND call_id = ");
                mark.bind(row.call_id.clone());
                mark.execute(tx, "mark reported call").await?;
                if row.version == 1 {
                    let mut tallies = HashMap::new();
                    tallies.insert(
                        (day_of(row.opened_at_ms), row.court_name.clone()),
                        Tally::report(),
                    );
                    self.add_tallies(tx, &tallies).await?;
                    self.count_call_mark(tx, &row.call_id, DayCounts::report())
                        .await?;
                }
            }
            Change::RecordingUploaded { call_id } => {
                let mut sql = self.sql("UPDATE call_recordings SET state = ");
                sql.bind(RecordingState::Stored.name().to_owned())
                    .push(", detail = '' WHERE call_id = ")
                    .bind(call_id.clone());
                sql.execute(tx, "record an uploaded recording").await?;
            }
            Change::MarkRecorded { call_id } => self.mark_recorded(tx, call_id).await?,
            Change::PutPatternMatch(row) => self.put_pattern_match(tx, row).await?,
            Change::Unstage(runs) => {
                for chunk in statement_chunks(runs) {
                    let mut sql = self.sql("DELETE FROM staged_events WHERE ");
                    for (index, run) in chunk.iter().enumerate() {
                        sql.push(if index == 0 {
                            "(node_id = "
                        } else {
                            " OR (node_id = "
                        })
                        .bind(run.node_id.clone())
                        .push(" AND node_seq BETWEEN ")
                        .bind(run.first)
                        .push(" AND ")
                        .bind(run.last)
                        .push(")");
                    }
                    sql.execute(tx, "delete chained staged events").await?;
                }
            }
            Change::RevokeToken { name, at_ms } => {
                let mut sql = self.sql("UPDATE tokens SET revoked_at_ms = ");
                sql.bind(*at_ms)
                    .push(" WHERE revoked_at_ms = 0 AND name = ")
                    .bind(name.clone());
                sql.execute(tx, "revoke token").await?;
            }
        }
        Ok(())
    }
}

fn recording_from_row(row: &AnyRow) -> Result<RecordingRow, StoreError> {
    let call_id: String = get(row, "call_id", "recording")?;
    let state: String = get(row, "state", &call_id)?;
    Ok(RecordingRow {
        state: RecordingState::from_name(&state).ok_or_else(|| StoreError::Corrupt {
            key: call_id.clone(),
            detail: format!("call_recordings.state {state:?} is not a recording state"),
        })?,
        sha256: get(row, "sha256", &call_id)?,
        bytes: get(row, "bytes", &call_id)?,
        sample_rate: get(row, "sample_rate", &call_id)?,
        channels: get(row, "channels", &call_id)?,
        duration_ms: get(row, "duration_ms", &call_id)?,
        detail: get(row, "detail", &call_id)?,
        last_seq: get(row, "last_seq", &call_id)?,
        call_id,
    })
}

fn create_parent_directory(file: &Path) -> Result<(), StoreError> {
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDirectory {
                path: parent.to_path_buf(),
                source,
            })
        }
        _ => Ok(()),
    }
}

fn get<'r, T>(row: &'r AnyRow, name: &str, key: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(name).map_err(|error| StoreError::Corrupt {
        key: key.to_owned(),
        detail: format!("column {name}: {error}"),
    })
}

fn event_from_row(row: &AnyRow) -> Result<StoredEvent, StoreError> {
    let seq: i64 = get(row, "seq", "event")?;
    let key = format!("event #{seq}");
    let key = key.as_str();
    Ok(StoredEvent {
        seq,
        header: EventHeader {
            kind: get(row, "kind", key)?,
            node_id: get(row, "node_id", key)?,
            node_seq: get(row, "node_seq", key)?,
            call_id: get(row, "call_id", key)?,
            at_ms: get(row, "at_ms", key)?,
            stored_at_ms: get(row, "stored_at_ms", key)?,
        },
        body: get(row, "body", key)?,
        body_digest: get(row, "body_digest", key)?,
        prev_hash: get(row, "prev_hash", key)?,
        hash: get(row, "hash", key)?,
    })
}

/// A record holding just the columns the name index needs: `call_id`,
/// `received_at_ms` and `caller_display_name`.
fn name_of_row(row: &AnyRow, operation: &str) -> Result<CallRecord, StoreError> {
    Ok(CallRecord {
        call_id: get(row, "call_id", operation)?,
        received_at_ms: get(row, "received_at_ms", operation)?,
        caller_display_name: get(row, "caller_display_name", operation)?,
        ..CallRecord::default()
    })
}

fn record_from_row(row: &AnyRow) -> Result<CallRecord, StoreError> {
    let call_id: String = get(row, "call_id", "call")?;
    let id = call_id.as_str();
    let small = |name: &str| -> Result<u32, StoreError> {
        let value: i64 = get(row, name, id)?;
        u32::try_from(value).map_err(|_| StoreError::Corrupt {
            key: id.to_owned(),
            detail: format!("{name} = {value} is not a u32"),
        })
    };
    let (caller_media, operator_media) = parse_media_json(&get::<String>(row, "media", id)?)
        .map_err(|detail| StoreError::Corrupt {
            key: id.to_owned(),
            detail: format!("media: {detail}"),
        })?;
    let enumeration = |name: &str| -> Result<i32, StoreError> {
        let value: i64 = get(row, name, id)?;
        i32::try_from(value).map_err(|_| StoreError::Corrupt {
            key: id.to_owned(),
            detail: format!("{name} = {value} is not an enum number"),
        })
    };
    Ok(CallRecord {
        sip_call_id: get(row, "sip_call_id", id)?,
        line_number: get(row, "line_number", id)?,
        court_name: get(row, "court_name", id)?,
        caller_number: get(row, "caller_number", id)?,
        caller_display_name: get(row, "caller_display_name", id)?,
        caller_source: get(row, "caller_source", id)?,
        proxy_source: get(row, "proxy_source", id)?,
        user_agent: get(row, "user_agent", id)?,
        codec: get(row, "codec", id)?,
        received_at_ms: get(row, "received_at_ms", id)?,
        answered_at_ms: get(row, "answered_at_ms", id)?,
        prompt_started_at_ms: get(row, "prompt_started_at_ms", id)?,
        prompt_ended_at_ms: get(row, "prompt_ended_at_ms", id)?,
        operator_answered_at_ms: get(row, "operator_answered_at_ms", id)?,
        ended_at_ms: get(row, "ended_at_ms", id)?,
        prompt_id: get(row, "prompt_id", id)?,
        prompt_sha256: get(row, "prompt_sha256", id)?,
        prompt_length_ms: small("prompt_length_ms")?,
        prompt_ms_sent: small("prompt_ms_sent")?,
        prompt_completed: get::<i64>(row, "prompt_completed", id)? != 0,
        dtmf_during_prompt: get(row, "dtmf_during_prompt", id)?,
        prompts: parse_prompts_json(&get::<String>(row, "prompts", id)?).map_err(|detail| {
            StoreError::Corrupt {
                key: id.to_owned(),
                detail: format!("prompts: {detail}"),
            }
        })?,
        operator_uri: get(row, "operator_uri", id)?,
        end_reason: enumeration("end_reason")?,
        sip_final_status: small("sip_final_status")?,
        rtp_packets_sent: get::<i64>(row, "rtp_packets_sent", id)? as u64,
        rtp_packets_received: get::<i64>(row, "rtp_packets_received", id)? as u64,
        caller_media,
        operator_media,
        probe: get::<i64>(row, "probe", id)? != 0,
        state: enumeration("state")?,
        flagged: get::<i64>(row, "flagged", id)? != 0,
        node_id: get(row, "node_id", id)?,
        // Flags live in the chain, not the row; the service adds them to answers.
        flags: Vec::new(),
        prior_reports: small("prior_reports")?,
        prior_flags: small("prior_flags")?,
        call_id,
    })
}

fn bind_report(sql: &mut Sql, row: &ReportRow) {
    let args = &mut sql.args;
    let _ = args.add(row.report_id.clone());
    let _ = args.add(row.call_id.clone());
    let _ = args.add(row.version);
    let _ = args.add(row.status);
    let _ = args.add(row.kind);
    let _ = args.add(row.opened_by.clone());
    let _ = args.add(row.opened_at_ms);
    let _ = args.add(row.court_name.clone());
    let _ = args.add(row.line_number.clone());
    let _ = args.add(row.staff_name.clone());
    let _ = args.add(row.staff_id.clone());
    let _ = args.add(row.owners.clone());
    let _ = args.add(row.case_numbers.clone());
    let _ = args.add(row.report.clone());
    let _ = args.add(row.last_seq);
}

fn report_from_row(row: &AnyRow) -> Result<ReportRow, StoreError> {
    let report_id: String = get(row, "report_id", "report")?;
    let key = format!("report {report_id}");
    let key = key.as_str();
    Ok(ReportRow {
        call_id: get(row, "call_id", key)?,
        version: get(row, "version", key)?,
        status: get(row, "status", key)?,
        kind: get(row, "kind", key)?,
        opened_by: get(row, "opened_by", key)?,
        opened_at_ms: get(row, "opened_at_ms", key)?,
        court_name: get(row, "court_name", key)?,
        line_number: get(row, "line_number", key)?,
        staff_name: get(row, "staff_name", key)?,
        staff_id: get(row, "staff_id", key)?,
        owners: get(row, "owners", key)?,
        case_numbers: get(row, "case_numbers", key)?,
        report: get(row, "report", key)?,
        last_seq: get(row, "last_seq", key)?,
        report_id,
    })
}

impl SqlStore {
    async fn fetch_reports(&self, sql: Sql, operation: &str) -> Result<Vec<ReportRow>, StoreError> {
        let rows = sql.fetch_all(&self.pool, operation).await?;
        rows.iter().map(report_from_row).collect()
    }

    /// `instr`/`strpos`: where `needle` (bound) starts in `column`, 0 when absent.
    fn contains(&self, sql: &mut Sql, column: &str, needle: String) {
        let function = match self.backend {
            Backend::Sqlite => "instr",
            Backend::Postgres => "strpos",
        };
        sql.push(&format!(" AND {function}({column}, "))
            .bind(needle)
            .push(") > 0");
    }

    /// Appends the WHERE conditions of a reports filter (each starting with " AND ").
    fn push_report_filter(&self, sql: &mut Sql, filter: &ReportFilter, owner: Option<&str>) {
        if filter.since_ms != 0 {
            sql.push(" AND opened_at_ms >= ").bind(filter.since_ms);
        }
        if filter.until_ms != 0 {
            sql.push(" AND opened_at_ms < ").bind(filter.until_ms);
        }
        for (column, value) in [
            ("court_name", &filter.court_name),
            ("line_number", &filter.line_number),
            ("call_id", &filter.call_id),
        ] {
            if !value.is_empty() {
                sql.push(&format!(" AND {column} = ")).bind(value.clone());
            }
        }
        if filter.kind != 0 {
            sql.push(" AND kind = ").bind(i64::from(filter.kind));
        }
        if filter.status != 0 {
            sql.push(" AND status = ").bind(i64::from(filter.status));
        }
        if !filter.staff.is_empty() {
            sql.push(" AND (staff_name = ")
                .bind(filter.staff.clone())
                .push(" OR staff_id = ")
                .bind(filter.staff.clone())
                .push(" OR opened_by = ")
                .bind(filter.staff.clone())
                .push(")");
        }
        if !filter.case_number_contains.is_empty() {
            self.contains(sql, "case_numbers", filter.case_number_contains.clone());
        }
        if let Some(owner) = owner {
            self.contains(sql, "owners", format!("\n{owner}\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_to_backends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b.db");
        let (backend, url) = resolve_location(path.to_str().unwrap()).unwrap();
        assert_eq!(backend, Backend::Sqlite);
        assert!(
            url.starts_with("sqlite://") && url.ends_with("?mode=rwc"),
            "{url}"
        );
        assert!(dir.path().join("a").is_dir());
        assert_eq!(
            resolve_location("postgres://u:p@h/db").unwrap().0,
            Backend::Postgres
        );
        assert_eq!(
            resolve_location("sqlite::memory:").unwrap().1,
            "sqlite::memory:"
        );
        assert!(resolve_location("mysql://x").is_err());
        assert!(resolve_location("").is_err());
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("var/x.db"), "var/x.db");
    }

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let cursor = Cursor {
            oldest_first: true,
            received_at_ms: 5,
            call_id: "a:b".into(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        for token in [
            "zz",
            "6869",
            &hex::encode("c2:0:abc:x"),
            &hex::encode("c2:0:5:"),
        ] {
            assert!(matches!(
                Cursor::decode(token),
                Err(StoreError::InvalidPageToken(_))
            ));
        }
    }

    #[test]
    fn placeholders_follow_the_backend() {
        let text = |numbered| {
            let mut sql = Sql {
                text: "VALUES ".into(),
                args: AnyArguments::default(),
                count: 0,
                numbered,
            };
            sql.value_groups(2, 2).push(" AND x = ").bind(5_i64);
            sql.text
        };
        assert_eq!(text(true), "VALUES ($1, $2), ($3, $4) AND x = $5");
        assert_eq!(text(false), "VALUES (?, ?), (?, ?) AND x = ?");
        assert_eq!(CALL_COLUMNS.split(',').count(), CALL_COLUMN_COUNT);
        assert_eq!(EVENT_COLUMNS.split(',').count(), EVENT_COLUMN_COUNT);
        assert!(!upsert_assignments(&[]).contains("flagged"));
        assert!(!UPDATE_PROGRESS.contains(" line_number = excluded"));
        assert!(UPDATE_PROGRESS.contains("calls.line_number = excluded.line_number"));
        assert!(UPDATE_ALL.contains("line_number = excluded.line_number"));
        let chunks: Vec<usize> = statement_chunks(&[0; 200]).map(<[_]>::len).collect();
        assert_eq!(chunks, [64, 64, 64, 8]);
        assert_eq!(statement_chunks::<u8>(&[]).count(), 0);
    }

    /// A SQLite file's pool closes connections left idle (their caches go with them);
    /// an in-memory database's one connection is the database, so it is never closed.
    #[tokio::test]
    async fn only_a_sqlite_files_idle_connections_are_closed() {
        let dir = tempfile::tempdir().unwrap();
        let file = SqlStore::open(dir.path().join("r.db").to_str().unwrap())
            .await
            .unwrap();
        let options = file.pool().options();
        assert_eq!(options.get_idle_timeout(), Some(SQLITE_IDLE_CLOSE));
        assert_eq!(options.get_max_connections(), MAX_CONNECTIONS);
        let memory = SqlStore::open("sqlite::memory:").await.unwrap();
        let options = memory.pool().options();
        assert_eq!(options.get_idle_timeout(), None);
        assert_eq!(options.get_max_lifetime(), None);
        assert_eq!(options.get_max_connections(), 1);
    }

    /// The name index runs once `min_events` events have arrived since its last run,
    /// indexes every call past its mark, and leaves nameless calls out.
    #[tokio::test]
    async fn name_index_runs_after_enough_events() {
        let store = SqlStore::open("sqlite::memory:").await.unwrap();
        let call = |id: &str, name: &str, seq: i64| CallRow {
            record: Box::new(CallRecord {
                call_id: id.into(),
                caller_display_name: name.into(),
                received_at_ms: seq * 1000,
                ..CallRecord::default()
            }),
            state: CallState::Ended,
            node_id: "sb".into(),
            last_seq: seq,
        };
        let rows = [call("a", "张三", 3), call("b", "", 4), call("c", "李四", 5)];
        let mut connection = store.begin("test").await.unwrap();
        store
            .upsert_calls(&mut connection, &rows.iter().collect::<Vec<_>>())
            .await
            .unwrap();
        async fn grams(store: &SqlStore, connection: &mut Writer) -> i64 {
            let sql = store.sql("SELECT COUNT(*) AS n FROM caller_name_grams");
            let rows = sql.fetch_in(connection, "count").await.unwrap();
            get::<i64>(&rows[0], "n", "count").unwrap()
        }
        // Events 1..=5 since the mark (0): fewer than 6.
        assert_eq!(store.index_names(&mut connection, 5, 6).await.unwrap(), 0);
        assert_eq!(grams(&store, &mut connection).await, 0);
        assert_eq!(store.index_names(&mut connection, 5, 5).await.unwrap(), 2);
        assert_eq!(grams(&store, &mut connection).await, 6);
        // Nothing new since the mark at 5.
        assert_eq!(store.index_names(&mut connection, 5, 1).await.unwrap(), 0);
        store
            .upsert_calls(&mut connection, &[&call("d", "王五", 6)])
            .await
            .unwrap();
        assert_eq!(store.index_names(&mut connection, 6, 1).await.unwrap(), 1);
        assert_eq!(grams(&store, &mut connection).await, 9);
    }

    /// Checking and deleting name index rows must look each up by the primary key: a
    /// scan per 64 rows would make `verify` and purges crawl on a large store.
    #[tokio::test]
    async fn name_index_rows_are_found_by_key() {
        let store = SqlStore::open("sqlite::memory:").await.unwrap();
        let row = |gram: &str, at: i64| NameGram {
            gram: gram.into(),
            call_time_ms: at,
            call_key: format!("call-{at}"),
        };
        let mut sql = store.name_gram_rows(
            "SELECT gram FROM caller_name_grams WHERE ",
            &[row("张", 1), row("张三", 2)],
        );
        sql.text.insert_str(0, "EXPLAIN QUERY PLAN ");
        let plan: Vec<String> = sql
            .fetch_all(&store.pool, "plan")
            .await
            .unwrap()
            .iter()
            .map(|line| get(line, "detail", "plan").unwrap())
            .collect();
        assert!(
            plan.iter().all(|step| !step.starts_with("SCAN"))
                && plan.iter().any(|step| step.contains("USING PRIMARY KEY")),
            "{plan:?}"
        );
    }

    #[test]
    fn page_size_defaults_and_caps() {
        let size = |page_size| {
            CallQuery {
                page_size,
                ..CallQuery::default()
            }
            .effective_page_size()
        };
        assert_eq!(size(0), DEFAULT_PAGE_SIZE);
        assert_eq!(size(7), 7);
        assert_eq!(size(5_000), MAX_PAGE_SIZE);
    }
}
