//! An append's transaction, and the rows it writes in bulk. On PostgreSQL the
//! transaction runs on the native driver, so a table's rows go in one `INSERT …
//! SELECT * FROM UNNEST($1::BIGINT[], …)` with a typed array per column: one round
//! trip and one plan however many rows, where sqlx's `Any` driver (which cannot bind
//! arrays) needed a 64-row `VALUES` statement each (BENCHMARKS.md, "Typed arrays for
//! the sequencer"). The transaction's other statements run on that connection
//! through `Any`'s interface all the same. On SQLite rows go in multi-row `VALUES`
//! statements through `Any`, as before.

use futures::{future, TryStreamExt};
use sqlx::any::AnyRow;
use sqlx::postgres::{PgArguments, PgPool};
use sqlx::Arguments;
use sqlx_core::any::AnyConnectionBackend;
use sqlx_core::Either;

use super::{query_error, statement_chunks, Sql, SqlStore, StoreError};

/// Connections of the native PostgreSQL pool: appends are serialised (by the ledger in
/// a service, by the append lock across services), so one is busy at a time, beside
/// the follower's transaction writing the derived tables in a shared database.
pub(super) const WRITER_CONNECTIONS: u32 = 3;

/// The transaction an append (or the name index) writes in.
pub(super) enum Writer {
    /// SQLite, through `Any`.
    Any(sqlx::Transaction<'static, sqlx::Any>),
    /// PostgreSQL on the native driver: typed arrays for the bulk statements.
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Writer {
    /// Commits the transaction.
    pub(super) async fn commit(self, operation: &str) -> Result<(), StoreError> {
        match self {
            Writer::Any(tx) => tx.commit().await,
            Writer::Postgres(tx) => tx.commit().await,
        }
        .map_err(|source| query_error(operation, source))
    }
}

impl SqlStore {
    /// Begins a transaction to write in: on PostgreSQL's native pool when there is one.
    pub(super) async fn begin(&self, operation: &str) -> Result<Writer, StoreError> {
        match &self.writer_pool {
            Some(pool) => pool.begin().await.map(Writer::Postgres),
            None => self.pool.begin().await.map(Writer::Any),
        }
        .map_err(|source| query_error(operation, source))
    }

    /// Writes every row of `rows` with `head` (`INSERT INTO table (columns)`) and `tail`
    /// (an `ON CONFLICT` clause or nothing): one `UNNEST` statement on PostgreSQL,
    /// [`statement_chunks`] of `VALUES` on SQLite. Returns the rows written.
    pub(super) async fn write_rows<T: TableRow>(
        &self,
        writer: &mut Writer,
        head: &str,
        tail: &str,
        rows: &[T],
        operation: &str,
    ) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        if let Writer::Postgres(tx) = writer {
            let (text, args) = unnest_statement(head, tail, rows);
            return sqlx::query_with(&text, args)
                .execute(&mut **tx)
                .await
                .map(|done| done.rows_affected())
                .map_err(|source| query_error(operation, source));
        }
        let head = format!("{head} VALUES ");
        let mut written = 0;
        for chunk in statement_chunks(rows) {
            written += self
                .values(&head, tail, T::COLUMNS, chunk, |sql, row| row.put(sql))
                .execute(writer, operation)
                .await?;
        }
        Ok(written)
    }
}

/// `head SELECT * FROM UNNEST($1::BIGINT[], …) tail` and its arguments, one array per
/// column of `rows` (not empty). The text depends only on the column types, so the
/// connection prepares it once.
fn unnest_statement<T: TableRow>(head: &str, tail: &str, rows: &[T]) -> (String, PgArguments) {
    let mut arrays = ColumnArrays::default();
    for row in rows {
        arrays.next = 0;
        row.put(&mut arrays);
    }
    let mut text = format!("{head} SELECT * FROM UNNEST(");
    let mut args = PgArguments::default();
    for (index, column) in arrays.columns.into_iter().enumerate() {
        if index > 0 {
            text.push_str(", ");
        }
        text.push_str(&format!("${}::{}", index + 1, column.array_type()));
        column.bind(&mut args);
    }
    text.push(')');
    text.push_str(tail);
    (text, args)
}

impl Sql {
    /// Runs the statement in `writer`'s transaction; returns how many rows it changed.
    pub(super) async fn execute(
        self,
        writer: &mut Writer,
        operation: &str,
    ) -> Result<u64, StoreError> {
        let Sql { text, args, .. } = self;
        match writer {
            Writer::Any(tx) => sqlx::query_with(&text, args)
                .execute(&mut **tx)
                .await
                .map(|done| done.rows_affected()),
            Writer::Postgres(tx) => {
                AnyConnectionBackend::fetch_many(&mut **tx, &text, true, Some(args))
                    .try_fold(0, |changed, item| {
                        future::ready(Ok(match item {
                            Either::Left(done) => changed + done.rows_affected(),
                            Either::Right(_) => changed,
                        }))
                    })
                    .await
            }
        }
        .map_err(|source| query_error(operation, source))
    }

    /// The statement's rows, read in `writer`'s transaction.
    pub(super) async fn fetch_in(
        self,
        writer: &mut Writer,
        operation: &str,
    ) -> Result<Vec<AnyRow>, StoreError> {
        let Sql { text, args, .. } = self;
        match writer {
            Writer::Any(tx) => sqlx::query_with(&text, args).fetch_all(&mut **tx).await,
            Writer::Postgres(tx) => {
                AnyConnectionBackend::fetch_many(&mut **tx, &text, true, Some(args))
                    .try_filter_map(|item| future::ready(Ok(item.right())))
                    .try_collect()
                    .await
            }
        }
        .map_err(|source| query_error(operation, source))
    }
}

/// A stored table's row, its values in the statement's column order: one binder
/// serves both statement forms ([`SqlStore::write_rows`]).
pub(super) trait TableRow {
    /// Values per row.
    const COLUMNS: usize;

    /// Hands the row's values to `sink`, in column order.
    fn put(&self, sink: &mut impl RowSink);
}

impl<T: TableRow> TableRow for &T {
    const COLUMNS: usize = T::COLUMNS;

    fn put(&self, sink: &mut impl RowSink) {
        T::put(self, sink);
    }
}

/// Where a row's values go: a statement's arguments (`VALUES` rows), or one array per
/// column ([`ColumnArrays`]).
pub(super) trait RowSink {
    /// Adds the next column's value.
    fn add<V: Cell>(&mut self, value: V);
}

impl RowSink for Sql {
    fn add<V: Cell>(&mut self, value: V) {
        // Encoding plain integers, strings and bytes into an in-memory buffer cannot fail.
        let _ = self.args.add(value);
    }
}

/// A column value of a type both statement forms take.
pub(super) trait Cell:
    sqlx::Encode<'static, sqlx::Any> + sqlx::Type<sqlx::Any> + Send + 'static
{
    /// The value as an array element.
    fn into_value(self) -> Value;
}

/// One array element: the three column types the bulk-written tables use.
pub(super) enum Value {
    /// `BIGINT`.
    BigInt(Option<i64>),
    /// `TEXT`.
    Text(Option<String>),
    /// `BYTEA` (SQLite `BLOB`).
    Bytes(Option<Vec<u8>>),
}

impl Cell for i64 {
    fn into_value(self) -> Value {
        Value::BigInt(Some(self))
    }
}

impl Cell for Option<i64> {
    fn into_value(self) -> Value {
        Value::BigInt(self)
    }
}

impl Cell for String {
    fn into_value(self) -> Value {
        Value::Text(Some(self))
    }
}

impl Cell for Option<String> {
    fn into_value(self) -> Value {
        Value::Text(self)
    }
}

impl Cell for Vec<u8> {
    fn into_value(self) -> Value {
        Value::Bytes(Some(self))
    }
}

impl Cell for Option<Vec<u8>> {
    fn into_value(self) -> Value {
        Value::Bytes(self)
    }
}

/// A column's values over all rows, as one typed array.
enum Column {
    /// `BIGINT[]`.
    BigInt(Vec<Option<i64>>),
    /// `TEXT[]`.
    Text(Vec<Option<String>>),
    /// `BYTEA[]`.
    Bytes(Vec<Option<Vec<u8>>>),
}

impl Column {
    /// An empty column of `value`'s type.
    fn of(value: &Value) -> Column {
        match value {
            Value::BigInt(_) => Column::BigInt(Vec::new()),
            Value::Text(_) => Column::Text(Vec::new()),
            Value::Bytes(_) => Column::Bytes(Vec::new()),
        }
    }

    /// Appends `value`, which is of the column's type: a binder gives each column
    /// values of one Rust type.
    fn push(&mut self, value: Value) {
        match (self, value) {
            (Column::BigInt(values), Value::BigInt(value)) => values.push(value),
            (Column::Text(values), Value::Text(value)) => values.push(value),
            (Column::Bytes(values), Value::Bytes(value)) => values.push(value),
            _ => unreachable!("a row binder gave one column values of two types"),
        }
    }

    /// The cast of its parameter.
    fn array_type(&self) -> &'static str {
        match self {
            Column::BigInt(_) => "BIGINT[]",
            Column::Text(_) => "TEXT[]",
            Column::Bytes(_) => "BYTEA[]",
        }
    }

    /// Binds the array as the next parameter.
    fn bind(self, args: &mut PgArguments) {
        // Encoding arrays of integers, strings and bytes into a buffer cannot fail.
        let _ = match self {
            Column::BigInt(values) => args.add(values),
            Column::Text(values) => args.add(values),
            Column::Bytes(values) => args.add(values),
        };
    }
}

/// Rows as one array per column, filled row by row.
#[derive(Default)]
struct ColumnArrays {
    /// The columns so far.
    columns: Vec<Column>,
    /// The column the row being added fills next.
    next: usize,
}

impl RowSink for ColumnArrays {
    fn add<V: Cell>(&mut self, value: V) {
        let value = value.into_value();
        if self.next == self.columns.len() {
            self.columns.push(Column::of(&value));
        }
        self.columns[self.next].push(value);
        self.next += 1;
    }
}

/// The PostgreSQL pool an append's transaction runs on, for a `postgres://` URL.
pub(super) async fn writer_pool(url: &str) -> Result<PgPool, sqlx::Error> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(WRITER_CONNECTIONS)
        .connect(url)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row of a `BIGINT`, a nullable `TEXT` and a nullable `BYTEA` column.
    struct Row(i64, Option<String>, Option<Vec<u8>>);

    impl TableRow for Row {
        const COLUMNS: usize = 3;

        fn put(&self, sink: &mut impl RowSink) {
            sink.add(self.0);
            sink.add(self.1.clone());
            sink.add(self.2.clone());
        }
    }

    #[test]
    fn rows_become_one_typed_array_per_column_nulls_included() {
        let rows = [Row(1, Some("a".into()), None), Row(2, None, Some(vec![7]))];
        let mut arrays = ColumnArrays::default();
        for row in &rows {
            arrays.next = 0;
            row.put(&mut arrays);
        }
        let columns: Vec<&str> = arrays.columns.iter().map(Column::array_type).collect();
        assert_eq!(columns, ["BIGINT[]", "TEXT[]", "BYTEA[]"]);
        assert!(matches!(&arrays.columns[0], Column::BigInt(v) if *v == [Some(1), Some(2)]));
        assert!(
            matches!(&arrays.columns[1], Column::Text(v) if *v == [Some("a".to_owned()), None])
        );
        assert!(matches!(&arrays.columns[2], Column::Bytes(v) if *v == [None, Some(vec![7])]));
        let (text, _) =
            unnest_statement("INSERT INTO t (a, b, c)", " ON CONFLICT DO NOTHING", &rows);
        assert_eq!(
            text,
            "INSERT INTO t (a, b, c) SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BYTEA[]) \
             ON CONFLICT DO NOTHING"
        );
    }
}
