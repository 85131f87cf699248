//! What the records service's admin endpoint reads from the store when scraped or
//! asked for readiness: how far the chain and the derived tables have come (one
//! statement, three index lookups), and which migration the database is at. Never
//! a scan: a scrape every few seconds must cost the database next to nothing.

use sqlx::migrate::Migrator;

use super::{get, Backend, SqlStore, StoreError};

/// The SQLite schema this build creates and expects.
pub(super) static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
/// The PostgreSQL schema this build creates and expects.
pub(super) static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// How far the chain and the tables derived from it have come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainProgress {
    /// Position of the chain's last event (0 when empty).
    pub head: i64,
    /// The last position whose effects the derived tables hold (`derived_through`).
    pub derived_through: i64,
    /// When the first event past `derived_through` was chained (its `stored_at_ms`);
    /// `None` when the derived tables hold the head.
    pub oldest_underived_at_ms: Option<i64>,
}

/// The database's migration next to this build's, for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersion {
    /// The highest migration applied successfully to the database.
    pub applied: i64,
    /// The highest migration this build knows.
    pub known: i64,
}

impl SqlStore {
    /// [`super::Store::chain_progress`]. SQLite's appends write the derived tables in
    /// their own transaction, so there they always hold the head.
    pub(super) async fn read_chain_progress(&self) -> Result<ChainProgress, StoreError> {
        let operation = "read the chain's progress";
        let text = match self.backend {
            Backend::Sqlite => {
                "SELECT COALESCE(MAX(seq), 0) AS head, COALESCE(MAX(seq), 0) AS through_seq, \
                 NULL AS stored_at_ms FROM events"
            }
            Backend::Postgres => {
                "SELECT h.head, d.through_seq, e.stored_at_ms \
                 FROM (SELECT COALESCE(MAX(seq), 0) AS head FROM events) AS h \
                 CROSS JOIN derived_through AS d \
                 LEFT JOIN events AS e ON e.seq = d.through_seq + 1"
            }
        };
        let rows = self.sql(text).fetch_all(&self.pool, operation).await?;
        let Some(row) = rows.first() else {
            return Err(StoreError::Corrupt {
                key: "derived_through".into(),
                detail: "the derived tables' watermark row is missing (migration 0017 makes it)"
                    .into(),
            });
        };
        Ok(ChainProgress {
            head: get(row, "head", operation)?,
            derived_through: get(row, "through_seq", operation)?,
            oldest_underived_at_ms: get(row, "stored_at_ms", operation)?,
        })
    }

    /// [`super::Store::schema_version`].
    pub(super) async fn read_schema_version(&self) -> Result<SchemaVersion, StoreError> {
        let operation = "read the database's migration";
        let rows = self
            .sql("SELECT COALESCE(MAX(version), 0) AS version FROM _sqlx_migrations WHERE success")
            .fetch_all(&self.pool, operation)
            .await?;
        let applied = match rows.first() {
            Some(row) => get(row, "version", operation)?,
            None => 0,
        };
        let known = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
        .iter()
        .map(|migration| migration.version)
        .max()
        .unwrap_or(0);
        Ok(SchemaVersion { applied, known })
    }
}
