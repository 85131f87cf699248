//! SQLite storage for call records.
//!
//! All SQL lives in this file behind [`CallStore`], so that issue #5 can turn it
//! into a `Store` trait (tamper-evident events, a PostgreSQL backend) without
//! touching the service or its callers.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::pb::{CallRecord, EndReason};

/// Page size used when a query asks for 0 (the proto's "server default").
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page a query may return, so one request cannot pull the whole table into memory.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections in the pool; SQLite serialises writers anyway, this only lets reads overlap.
const MAX_CONNECTIONS: u32 = 4;
/// Tag inside page tokens, so a future token format can be told apart.
const PAGE_TOKEN_VERSION: &str = "c1";

/// Every column, in [`CallRecord`] field order; shared by INSERT and SELECT so they cannot drift.
const COLUMNS: &str = "call_id, sip_call_id, line_number, court_name, caller_number, \
    caller_display_name, caller_source, user_agent, codec, received_at_ms, answered_at_ms, \
    prompt_started_at_ms, prompt_ended_at_ms, operator_answered_at_ms, ended_at_ms, prompt_id, \
    prompt_sha256, prompt_length_ms, prompt_ms_sent, prompt_completed, dtmf_during_prompt, \
    operator_uri, end_reason, sip_final_status, rtp_packets_sent, rtp_packets_received";

/// Why a store operation failed; callers need to tell bad input from a broken database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database location was not a usable path or `sqlite:` URL.
    #[error("invalid database location {database:?}: {source}")]
    InvalidLocation {
        /// The location as given, for the operator to fix.
        database: String,
        /// What sqlx objected to.
        source: sqlx::Error,
    },
    /// The directory that should hold the database file could not be created.
    #[error("cannot create directory {path} for the records database: {source}")]
    CreateDirectory {
        /// The directory we tried to create.
        path: PathBuf,
        /// The underlying I/O failure.
        source: std::io::Error,
    },
    /// The database could not be opened (permissions, corrupt file, locked ...).
    #[error("cannot open records database {database:?}: {source}")]
    Open {
        /// The location as given.
        database: String,
        /// The underlying failure.
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate records database {database:?}: {source}")]
    Migrate {
        /// The location as given.
        database: String,
        /// The underlying failure.
        source: sqlx::migrate::MigrateError,
    },
    /// A statement failed; `operation` says which one, for the logs.
    #[error("records database {operation} failed: {source}")]
    Query {
        /// What we were doing ("insert call 1234...", "list calls").
        operation: String,
        /// The underlying failure.
        source: sqlx::Error,
    },
    /// A stored row holds a value no [`CallRecord`] can carry (edited by hand, or a bug).
    #[error("stored call {call_id} is corrupt: {detail}")]
    Corrupt {
        /// The row's call id.
        call_id: String,
        /// Which column is wrong and how.
        detail: String,
    },
    /// The page token did not come from this store's `list`.
    #[error("invalid page token: {0}")]
    InvalidPageToken(String),
}

impl StoreError {
    /// True when retrying later may succeed (database busy or locked, pool exhausted, I/O),
    /// so the service can answer `Unavailable` instead of `Internal`.
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
            // SQLite reports extended codes; the low byte is the primary code.
            // 5 = SQLITE_BUSY, 6 = SQLITE_LOCKED.
            db.code()
                .and_then(|code| code.parse::<i32>().ok())
                .is_some_and(|code| matches!(code & 0xff, 5 | 6))
        }
        _ => false,
    }
}

/// Which records `CallStore::list` returns; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallQuery {
    /// Only calls received at or after this Unix time in ms (inclusive).
    pub since_ms: Option<i64>,
    /// Only calls received before this Unix time in ms (exclusive), so ranges tile without overlap.
    pub until_ms: Option<i64>,
    /// Only calls to exactly this line.
    pub line_number: Option<String>,
    /// Only callers whose number starts with this (case-sensitive, no wildcards).
    pub caller_prefix: Option<String>,
    /// Only calls that ended this way.
    pub end_reason: Option<EndReason>,
    /// Records per page; 0 means [`DEFAULT_PAGE_SIZE`], capped at [`MAX_PAGE_SIZE`].
    pub page_size: u32,
    /// Continue after the page that returned this token.
    pub page_token: Option<String>,
}

impl CallQuery {
    /// The page size actually used, so callers and the store agree on defaults and caps.
    pub fn effective_page_size(&self) -> u32 {
        match self.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        }
    }
}

/// Position of the last record on a page; listing continues strictly after it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    received_at_ms: i64,
    call_id: String,
}

impl Cursor {
    /// Opaque to clients: hex of `c1:<received_at_ms>:<call_id>`.
    fn encode(&self) -> String {
        hex::encode(format!(
            "{PAGE_TOKEN_VERSION}:{}:{}",
            self.received_at_ms, self.call_id
        ))
    }

    fn decode(token: &str) -> Result<Cursor, StoreError> {
        let invalid = |why: &str| StoreError::InvalidPageToken(format!("{why} (token {token:?})"));
        let bytes = hex::decode(token).map_err(|_| invalid("not hex"))?;
        let text = String::from_utf8(bytes).map_err(|_| invalid("not UTF-8"))?;
        let mut parts = text.splitn(3, ':');
        if parts.next() != Some(PAGE_TOKEN_VERSION) {
            return Err(invalid("unknown version"));
        }
        let received_at_ms = parts
            .next()
            .and_then(|ms| ms.parse::<i64>().ok())
            .ok_or_else(|| invalid("bad timestamp"))?;
        let call_id = parts
            .next()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| invalid("missing call id"))?;
        Ok(Cursor {
            received_at_ms,
            call_id: call_id.to_owned(),
        })
    }
}

/// The call records database. Cheap to clone (shares one connection pool).
#[derive(Debug, Clone)]
pub struct CallStore {
    pool: SqlitePool,
    /// Where the database is, for log lines and error messages.
    location: String,
}

impl CallStore {
    /// Opens (creating if needed) the database at `database`: a file path such as
    /// `var/courtline.db`, or a `sqlite:` URL. Applies pending migrations.
    pub async fn open(database: &str) -> Result<CallStore, StoreError> {
        let in_memory = database == ":memory:"
            || database == "sqlite::memory:"
            || database.contains("mode=memory");
        let base = if database.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(database).map_err(|source| {
                StoreError::InvalidLocation {
                    database: database.to_owned(),
                    source,
                }
            })?
        } else if in_memory {
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(|source| {
                StoreError::InvalidLocation {
                    database: database.to_owned(),
                    source,
                }
            })?
        } else {
            SqliteConnectOptions::new().filename(database)
        };
        let options = base
            .create_if_missing(true)
            // WAL lets the CLI read while the service writes; FULL fsyncs every commit,
            // because a record acknowledged to the switchboard must survive a power cut.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);

        if !in_memory {
            create_parent_directory(options.get_filename())?;
        }

        let pool_options = if in_memory {
            // An in-memory database lives only while a connection holds it: keep exactly one.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(MAX_CONNECTIONS)
        };
        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                database: database.to_owned(),
                source,
            })?;

        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                database: database.to_owned(),
                source,
            })?;

        Ok(CallStore {
            pool,
            location: database.to_owned(),
        })
    }

    /// Where this store's database is, as given to [`CallStore::open`].
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Stores `record`. Returns `false` (and changes nothing) when a record with the
    /// same `call_id` is already stored, so a retried delivery is harmless.
    pub async fn insert(&self, record: &CallRecord) -> Result<bool, StoreError> {
        let sql = format!(
            "INSERT INTO calls ({COLUMNS}, stored_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (call_id) DO NOTHING"
        );
        let result = sqlx::query(&sql)
            .bind(&record.call_id)
            .bind(&record.sip_call_id)
            .bind(&record.line_number)
            .bind(&record.court_name)
            .bind(&record.caller_number)
            .bind(&record.caller_display_name)
            .bind(&record.caller_source)
            .bind(&record.user_agent)
            .bind(&record.codec)
            .bind(record.received_at_ms)
            .bind(record.answered_at_ms)
            .bind(record.prompt_started_at_ms)
            .bind(record.prompt_ended_at_ms)
            .bind(record.operator_answered_at_ms)
            .bind(record.ended_at_ms)
            .bind(&record.prompt_id)
            .bind(&record.prompt_sha256)
            .bind(i64::from(record.prompt_length_ms))
            .bind(i64::from(record.prompt_ms_sent))
            .bind(record.prompt_completed)
            .bind(&record.dtmf_during_prompt)
            .bind(&record.operator_uri)
            .bind(record.end_reason)
            .bind(i64::from(record.sip_final_status))
            // Bit-for-bit, so every u64 round-trips exactly.
            .bind(record.rtp_packets_sent as i64)
            .bind(record.rtp_packets_received as i64)
            .bind(chrono::Utc::now().timestamp_millis())
            .execute(&self.pool)
            .await
            .map_err(|source| StoreError::Query {
                operation: format!("insert of call {}", record.call_id),
                source,
            })?;
        Ok(result.rows_affected() == 1)
    }

    /// The record with this `call_id`, if stored.
    pub async fn get(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM calls WHERE call_id = ?");
        let row = sqlx::query(&sql)
            .bind(call_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|source| StoreError::Query {
                operation: format!("lookup of call {call_id}"),
                source,
            })?;
        row.as_ref().map(record_from_row).transpose()
    }

    /// One page of records matching `query`, newest first (by `received_at_ms`, then
    /// `call_id`), and the token for the next page when there may be more.
    pub async fn list(
        &self,
        query: &CallQuery,
    ) -> Result<(Vec<CallRecord>, Option<String>), StoreError> {
        let cursor = match query.page_token.as_deref() {
            Some(token) if !token.is_empty() => Some(Cursor::decode(token)?),
            _ => None,
        };
        let page_size = query.effective_page_size();

        let mut sql: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {COLUMNS} FROM calls WHERE 1 = 1"));
        if let Some(since) = query.since_ms {
            sql.push(" AND received_at_ms >= ").push_bind(since);
        }
        if let Some(until) = query.until_ms {
            sql.push(" AND received_at_ms < ").push_bind(until);
        }
        if let Some(line) = &query.line_number {
            sql.push(" AND line_number = ").push_bind(line.clone());
        }
        if let Some(prefix) = &query.caller_prefix {
            // substr compares exactly: no LIKE wildcards to escape, and case-sensitive.
            // Both substr and chars() count Unicode characters.
            let length = i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX);
            sql.push(" AND substr(caller_number, 1, ")
                .push_bind(length)
                .push(") = ")
                .push_bind(prefix.clone());
        }
        if let Some(reason) = query.end_reason {
            sql.push(" AND end_reason = ").push_bind(reason as i32);
        }
        if let Some(cursor) = &cursor {
            sql.push(" AND (received_at_ms, call_id) < (")
                .push_bind(cursor.received_at_ms)
                .push(", ")
                .push_bind(cursor.call_id.clone())
                .push(")");
        }
        // One extra row tells whether another page exists without a second query.
        sql.push(" ORDER BY received_at_ms DESC, call_id DESC LIMIT ")
            .push_bind(i64::from(page_size) + 1);

        let rows = sql
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|source| StoreError::Query {
                operation: "list of calls".to_owned(),
                source,
            })?;

        let mut records = rows
            .iter()
            .map(record_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_token = if records.len() > page_size as usize {
            records.truncate(page_size as usize);
            records.last().map(|last| {
                Cursor {
                    received_at_ms: last.received_at_ms,
                    call_id: last.call_id.clone(),
                }
                .encode()
            })
        } else {
            None
        };
        Ok((records, next_token))
    }

    /// Waits for in-flight statements and closes the database cleanly (checkpoints the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
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

fn record_from_row(row: &SqliteRow) -> Result<CallRecord, StoreError> {
    let call_id: String = column(row, "call_id", "?")?;
    let id = call_id.as_str();
    let unsigned = |name: &str| -> Result<u32, StoreError> {
        let value: i64 = column(row, name, id)?;
        u32::try_from(value).map_err(|_| StoreError::Corrupt {
            call_id: id.to_owned(),
            detail: format!("{name} = {value} is not a u32"),
        })
    };
    Ok(CallRecord {
        sip_call_id: column(row, "sip_call_id", id)?,
        line_number: column(row, "line_number", id)?,
        court_name: column(row, "court_name", id)?,
        caller_number: column(row, "caller_number", id)?,
        caller_display_name: column(row, "caller_display_name", id)?,
        caller_source: column(row, "caller_source", id)?,
        user_agent: column(row, "user_agent", id)?,
        codec: column(row, "codec", id)?,
        received_at_ms: column(row, "received_at_ms", id)?,
        answered_at_ms: column(row, "answered_at_ms", id)?,
        prompt_started_at_ms: column(row, "prompt_started_at_ms", id)?,
        prompt_ended_at_ms: column(row, "prompt_ended_at_ms", id)?,
        operator_answered_at_ms: column(row, "operator_answered_at_ms", id)?,
        ended_at_ms: column(row, "ended_at_ms", id)?,
        prompt_id: column(row, "prompt_id", id)?,
        prompt_sha256: column(row, "prompt_sha256", id)?,
        prompt_length_ms: unsigned("prompt_length_ms")?,
        prompt_ms_sent: unsigned("prompt_ms_sent")?,
        prompt_completed: column(row, "prompt_completed", id)?,
        dtmf_during_prompt: column(row, "dtmf_during_prompt", id)?,
        operator_uri: column(row, "operator_uri", id)?,
        end_reason: column(row, "end_reason", id)?,
        sip_final_status: unsigned("sip_final_status")?,
        rtp_packets_sent: column::<i64>(row, "rtp_packets_sent", id)? as u64,
        rtp_packets_received: column::<i64>(row, "rtp_packets_received", id)? as u64,
        call_id,
    })
}

fn column<'r, T>(row: &'r SqliteRow, name: &str, call_id: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(name).map_err(|error| StoreError::Corrupt {
        call_id: call_id.to_owned(),
        detail: format!("column {name}: {error}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u32, received_at_ms: i64) -> CallRecord {
        CallRecord {
            call_id: format!("00000000-0000-4000-8000-{n:012}"),
            sip_call_id: format!("sip-{n}@example.test"),
            line_number: if n % 2 == 0 { "12368" } else { "12345" }.to_owned(),
            court_name: "北京市第一中级人民法院".to_owned(),
            caller_number: format!("1380013{n:04}"),
            caller_display_name: "张三".to_owned(),
            caller_source: "127.0.0.1:5070".to_owned(),
            user_agent: "sipp".to_owned(),
            codec: "PCMA".to_owned(),
            received_at_ms,
            answered_at_ms: received_at_ms + 10,
            prompt_started_at_ms: received_at_ms + 20,
            prompt_ended_at_ms: received_at_ms + 8_020,
            operator_answered_at_ms: received_at_ms + 9_000,
            ended_at_ms: received_at_ms + 60_000,
            prompt_id: "three-rules".to_owned(),
            prompt_sha256: "ab".repeat(32),
            prompt_length_ms: 8_000,
            prompt_ms_sent: 8_000,
            prompt_completed: true,
            dtmf_during_prompt: "1#".to_owned(),
            operator_uri: "sip:op1@127.0.0.1:5080".to_owned(),
            end_reason: if n % 3 == 0 {
                EndReason::CallerHungUpDuringPrompt
            } else {
                EndReason::OperatorHungUp
            } as i32,
            sip_final_status: 200,
            rtp_packets_sent: u64::MAX - u64::from(n),
            rtp_packets_received: u64::from(n),
        }
    }

    async fn temp_store() -> (tempfile::TempDir, CallStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/courtline.db");
        let store = CallStore::open(path.to_str().unwrap()).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn insert_is_idempotent_on_call_id() {
        let (_dir, store) = temp_store().await;
        let first = record(1, 1_000);
        assert!(store.insert(&first).await.unwrap());
        let mut changed = first.clone();
        changed.caller_number = "999".to_owned();
        assert!(!store.insert(&changed).await.unwrap());
        assert_eq!(store.get(&first.call_id).await.unwrap(), Some(first));
        let (all, token) = store.list(&CallQuery::default()).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(token, None);
    }

    #[tokio::test]
    async fn every_field_and_chinese_text_round_trip() {
        let (_dir, store) = temp_store().await;
        let mut original = record(7, 1_700_000_000_000);
        original.caller_display_name = "李四（代理人）😀".to_owned();
        original.dtmf_during_prompt = "*0".to_owned();
        original.prompt_completed = false;
        original.sip_final_status = u32::MAX;
        store.insert(&original).await.unwrap();
        assert_eq!(
            store.get(&original.call_id).await.unwrap(),
            Some(original.clone())
        );
        let (listed, _) = store.list(&CallQuery::default()).await.unwrap();
        assert_eq!(listed, vec![original]);
        assert_eq!(store.get("no-such-call").await.unwrap(), None);
    }

    #[tokio::test]
    async fn sqlite_url_and_in_memory_locations_open() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("sub/x.db").display());
        let store = CallStore::open(&url).await.unwrap();
        assert!(store.insert(&record(1, 1)).await.unwrap());
        assert!(dir.path().join("sub/x.db").exists());

        let memory = CallStore::open("sqlite::memory:").await.unwrap();
        assert!(memory.insert(&record(1, 1)).await.unwrap());
        assert!(memory.get(&record(1, 1).call_id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn reopening_keeps_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("courtline.db");
        let path = path.to_str().unwrap();
        let store = CallStore::open(path).await.unwrap();
        store.insert(&record(1, 5)).await.unwrap();
        store.close().await;
        let again = CallStore::open(path).await.unwrap();
        assert!(again.get(&record(1, 5).call_id).await.unwrap().is_some());
    }

    async fn filled_store() -> (tempfile::TempDir, CallStore) {
        let (dir, store) = temp_store().await;
        for n in 0..10 {
            store
                .insert(&record(n, 1_000 * i64::from(n)))
                .await
                .unwrap();
        }
        (dir, store)
    }

    fn ids(records: &[CallRecord]) -> Vec<u32> {
        records
            .iter()
            .map(|r| r.call_id[24..].parse().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn time_filters_are_inclusive_then_exclusive() {
        let (_dir, store) = filled_store().await;
        let query = CallQuery {
            since_ms: Some(3_000),
            until_ms: Some(6_000),
            ..CallQuery::default()
        };
        let (records, _) = store.list(&query).await.unwrap();
        assert_eq!(ids(&records), vec![5, 4, 3]);
    }

    #[tokio::test]
    async fn line_filter_is_exact() {
        let (_dir, store) = filled_store().await;
        let query = CallQuery {
            line_number: Some("12368".to_owned()),
            ..CallQuery::default()
        };
        let (records, _) = store.list(&query).await.unwrap();
        assert_eq!(ids(&records), vec![8, 6, 4, 2, 0]);
        let query = CallQuery {
            line_number: Some("1236".to_owned()),
            ..CallQuery::default()
        };
        assert!(store.list(&query).await.unwrap().0.is_empty());
    }

    #[tokio::test]
    async fn caller_prefix_filter_treats_wildcards_literally() {
        let (_dir, store) = filled_store().await;
        let mut odd = record(42, 50_000);
        odd.caller_number = "1%_x".to_owned();
        store.insert(&odd).await.unwrap();
        let mut chinese = record(43, 51_000);
        chinese.caller_number = "号码123".to_owned();
        store.insert(&chinese).await.unwrap();

        let by_prefix = |prefix: &str| CallQuery {
            caller_prefix: Some(prefix.to_owned()),
            ..CallQuery::default()
        };
        let (records, _) = store.list(&by_prefix("13800130007")).await.unwrap();
        assert_eq!(ids(&records), vec![7]);
        let (records, _) = store.list(&by_prefix("1380013000")).await.unwrap();
        assert_eq!(records.len(), 10);
        let (records, _) = store.list(&by_prefix("1%")).await.unwrap();
        assert_eq!(ids(&records), vec![42]);
        let (records, _) = store.list(&by_prefix("1_")).await.unwrap();
        assert!(records.is_empty());
        let (records, _) = store.list(&by_prefix("号码")).await.unwrap();
        assert_eq!(ids(&records), vec![43]);
    }

    #[tokio::test]
    async fn end_reason_filter() {
        let (_dir, store) = filled_store().await;
        let query = CallQuery {
            end_reason: Some(EndReason::CallerHungUpDuringPrompt),
            ..CallQuery::default()
        };
        let (records, _) = store.list(&query).await.unwrap();
        assert_eq!(ids(&records), vec![9, 6, 3, 0]);
    }

    #[tokio::test]
    async fn pagination_covers_everything_once() {
        let (_dir, store) = filled_store().await;
        // Two records share a timestamp so the call_id tie-break is exercised across a page edge.
        store.insert(&record(100, 6_000)).await.unwrap();
        let mut query = CallQuery {
            page_size: 4,
            ..CallQuery::default()
        };
        let mut pages = Vec::new();
        loop {
            let (records, token) = store.list(&query).await.unwrap();
            pages.push(ids(&records));
            match token {
                Some(token) => query.page_token = Some(token),
                None => break,
            }
        }
        assert_eq!(
            pages,
            vec![vec![9, 8, 7, 100], vec![6, 5, 4, 3], vec![2, 1, 0]]
        );
    }

    #[tokio::test]
    async fn exact_last_page_has_no_token() {
        let (_dir, store) = filled_store().await;
        let query = CallQuery {
            page_size: 10,
            ..CallQuery::default()
        };
        let (records, token) = store.list(&query).await.unwrap();
        assert_eq!(records.len(), 10);
        assert_eq!(token, None);
    }

    #[tokio::test]
    async fn bad_page_token_is_a_clear_error() {
        let (_dir, store) = filled_store().await;
        for token in [
            "zz",
            "6869",
            &hex::encode("c1:abc:x"),
            &hex::encode("c1:5:"),
        ] {
            let query = CallQuery {
                page_token: Some(token.to_owned()),
                ..CallQuery::default()
            };
            let error = store.list(&query).await.unwrap_err();
            assert!(
                matches!(error, StoreError::InvalidPageToken(_)),
                "{token}: {error}"
            );
            assert!(error.to_string().contains("invalid page token"));
        }
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
