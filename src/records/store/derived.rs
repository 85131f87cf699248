//! The store's part of the derived tables' watermark (`derived_through`, PostgreSQL):
//! the last chain position whose effects `calls`, the dashboard figures, `caller_days`
//! and the caller-name index hold. A lone service's appends write them and move it to
//! their last event; in a shared database the sequencer's follower writes them after
//! the chain ([`crate::records::ledger::follower`]), moving it in the same transaction,
//! so a crash or a takeover resumes exactly where the last commit left them.

use std::sync::atomic::Ordering;

use super::{get, Backend, Change, SqlStore, StoreError, Writer, NAME_INDEX_EVENTS};

/// The watermark, locked to the end of the transaction that reads it.
const LOCK_WATERMARK: &str = "SELECT through_seq FROM derived_through WHERE one = 1 FOR UPDATE";

impl SqlStore {
    /// Reads the watermark in `tx`, locking it (PostgreSQL).
    async fn lock_watermark(&self, tx: &mut Writer, operation: &str) -> Result<i64, StoreError> {
        let rows = self.sql(LOCK_WATERMARK).fetch_in(tx, operation).await?;
        match rows.first() {
            Some(row) => get(row, "through_seq", operation),
            None => Err(StoreError::Corrupt {
                key: "derived_through".into(),
                detail: "the derived tables' watermark row is missing (migration 0017 makes it)"
                    .into(),
            }),
        }
    }

    /// Moves the watermark to `through` in `tx`.
    async fn move_watermark(
        &self,
        tx: &mut Writer,
        through: i64,
        operation: &str,
    ) -> Result<(), StoreError> {
        let mut sql = self.sql("UPDATE derived_through SET through_seq = ");
        sql.bind(through).push(" WHERE one = 1");
        sql.execute(tx, operation).await?;
        Ok(())
    }

    /// Whether the append in `tx` (onto `head_before`, ending at `tail`) writes the
    /// derived tables itself: not while a follower writes them, nor while they are
    /// behind the chain (a follower's work left for the next to catch up, in order);
    /// when it does, the watermark moves to its last event with it.
    pub(super) async fn derive_in_append(
        &self,
        tx: &mut Writer,
        head_before: i64,
        tail: &Option<(i64, Vec<u8>)>,
    ) -> Result<bool, StoreError> {
        if self.derived_by_follower.load(Ordering::Relaxed) {
            return Ok(false);
        }
        if self.backend == Backend::Sqlite {
            return Ok(true);
        }
        let operation = "move the derived tables' watermark";
        if self.lock_watermark(tx, operation).await? != head_before {
            return Ok(false);
        }
        if let Some((seq, _)) = tail {
            self.move_watermark(tx, *seq, operation).await?;
        }
        Ok(true)
    }

    /// [`super::Store::derived_through`]: SQLite's appends always write the derived
    /// tables, so there it is the head.
    pub(super) async fn read_derived_through(&self) -> Result<i64, StoreError> {
        let operation = "read the derived tables' watermark";
        let text = match self.backend {
            Backend::Sqlite => "SELECT COALESCE(MAX(seq), 0) AS through_seq FROM events",
            Backend::Postgres => "SELECT through_seq FROM derived_through WHERE one = 1",
        };
        let rows = self.sql(text).fetch_all(&self.pool, operation).await?;
        match rows.first() {
            Some(row) => get(row, "through_seq", operation),
            None => Ok(0),
        }
    }

    /// [`super::Store::apply_derived`].
    pub(super) async fn apply_derived_changes(
        &self,
        from: i64,
        through: i64,
        changes: &[Change],
    ) -> Result<bool, StoreError> {
        let operation = "write the derived tables";
        if self.backend == Backend::Sqlite {
            // Its appends write them: there is nothing to follow.
            return Ok(false);
        }
        let mut tx = self.begin(operation).await?;
        if self.lock_watermark(&mut tx, operation).await? != from {
            // Dropping the transaction rolls it back.
            return Ok(false);
        }
        self.apply_changes(&mut tx, changes.iter()).await?;
        self.index_names(&mut tx, through, NAME_INDEX_EVENTS)
            .await?;
        self.move_watermark(&mut tx, through, operation).await?;
        tx.commit(operation).await?;
        Ok(true)
    }
}
