//! The store's part of patterns across calls: `caller_days` (what each caller did per
//! UTC day, court and line), kept in the transactions that store calls, flags,
//! reports and purges, and read by the pattern queries; and `pattern_matches`, the
//! rows of chained `PatternMatched` events. A file of its own so the pattern SQL
//! stays together; it is part of the store (its SQL is the store's).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use sqlx::any::AnyRow;

use super::{
    get, push_list, CallRow, RowSink, SqlStore, StoreError, TableRow, Writer,
    MAX_ROWS_PER_STATEMENT,
};
use crate::contract::pb::{CallRecord, CallState, PatternKind};
use crate::records::patterns::{
    repeat_gap_days, CallerDay, CallerDayKey, DayCounts, PatternQuery, MAX_REPEAT_GAP_DAYS,
};

/// Every `caller_days` column, in its [`TableRow`] order.
const CALLER_DAY_COLUMNS: &str = "caller_number, day, court_name, line_number, calls, \
    hung_up_in_warning, after_hours, flags, reports";
/// Callers one candidate statement looks at by key.
const CALLERS_PER_STATEMENT: usize = 500;
/// Number of names in [`CALLER_DAY_COLUMNS`].
const CALLER_DAY_COLUMN_COUNT: usize = 9;
/// The calls columns [`CallerDay::of_call`] reads.
const CALLER_CALL_COLUMNS: &str =
    "call_id, caller_number, received_at_ms, court_name, line_number, end_reason, state";
/// The condition of the `caller_days_reported` partial index, word for word (SQLite
/// uses a partial index only for a query that repeats its condition).
const REPORTED: &str = "(flags > 0 OR reports > 0)";
/// A row's `since_previous_days` from the rows stored: days since the caller's
/// previous row in key order (day, court, line), NULL for their first; one step
/// back on the primary key. As migration 0015 computes it.
const SINCE_PREVIOUS: &str = "caller_days.day - (SELECT previous.day FROM caller_days AS previous \
    WHERE previous.caller_number = caller_days.caller_number \
    AND (previous.day, previous.court_name, previous.line_number) \
    < (caller_days.day, caller_days.court_name, caller_days.line_number) \
    ORDER BY previous.day DESC, previous.court_name DESC, previous.line_number DESC LIMIT 1)";

/// The condition of the `caller_days_repeats` partial index (migration 0015), word
/// for word, for the same reason as [`REPORTED`].
fn repeats() -> String {
    format!("(since_previous_days <= {MAX_REPEAT_GAP_DAYS} OR calls >= 2)")
}

/// A `pattern_matches` row: one chained `PatternMatched` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternMatchRow {
    /// Chain position of the event.
    pub seq: i64,
    /// The configured rule's name.
    pub rule: String,
    /// The caller it matched.
    pub caller_number: String,
    /// UTC day of the match (one match per rule, caller and day).
    pub day: i64,
    /// When it matched.
    pub at_ms: i64,
    /// The `PatternMatched` body (protobuf).
    pub body: Vec<u8>,
}

/// What the pattern queries and alerts read; every [`super::Store`] has it.
#[async_trait]
pub trait CallerDays: Send + Sync {
    /// Callers (at most `limit`, by number) whose rows in `query`'s range reach its
    /// threshold over the whole range (the windows inside it can only count less);
    /// looked for among the repeat rows of the range when [`repeat_gap_days`] allows.
    async fn pattern_candidates(
        &self,
        query: &PatternQuery,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;
    /// The rows of `callers` from `first_day` to `last_day`.
    async fn caller_day_rows(
        &self,
        callers: &[String],
        first_day: i64,
        last_day: i64,
    ) -> Result<Vec<CallerDay>, StoreError>;
    /// Callers with a flag or report on any of their calls (at most `limit`, by number).
    async fn reported_callers(&self, limit: u32) -> Result<Vec<String>, StoreError>;
    /// How many reports, and how many flags, `caller`'s stored calls have.
    async fn caller_history(&self, caller: &str) -> Result<(u32, u32), StoreError>;
    /// The finished calls of `callers` received before `until_ms`: id, caller, court,
    /// line, time, and `flagged` set for a flagged or reported call.
    async fn calls_of_callers(
        &self,
        callers: &[String],
        until_ms: i64,
    ) -> Result<Vec<CallRecord>, StoreError>;
    /// Whether `rule` matched `caller` on `day` already.
    async fn pattern_matched(&self, rule: &str, caller: &str, day: i64)
        -> Result<bool, StoreError>;
    /// Pattern matches at or after `since_ms`, newest first, at most `limit`.
    async fn pattern_matches(
        &self,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<PatternMatchRow>, StoreError>;
}

impl TableRow for (CallerDayKey, DayCounts) {
    const COLUMNS: usize = CALLER_DAY_COLUMN_COUNT;

    fn put(&self, sink: &mut impl RowSink) {
        let row = self;
        let ((caller, day, court, line), counts) = row;
        sink.add(caller.clone());
        sink.add(*day);
        sink.add(court.clone());
        sink.add(line.clone());
        for value in [
            counts.calls,
            counts.hung_up_in_warning,
            counts.after_hours,
            counts.flags,
            counts.reports,
        ] {
            sink.add(value);
        }
    }
}

fn caller_day_from_row(row: &AnyRow) -> Result<CallerDay, StoreError> {
    let key = "caller_days";
    let number = |name: &str| get::<i64>(row, name, key);
    Ok(CallerDay {
        caller_number: get(row, "caller_number", key)?,
        day: number("day")?,
        court_name: get(row, "court_name", key)?,
        line_number: get(row, "line_number", key)?,
        counts: DayCounts {
            calls: number("calls")?,
            hung_up_in_warning: number("hung_up_in_warning")?,
            after_hours: number("after_hours")?,
            flags: number("flags")?,
            reports: number("reports")?,
        },
    })
}

/// A record holding the [`CALLER_CALL_COLUMNS`].
fn caller_call_from_row(row: &AnyRow, operation: &str) -> Result<CallRecord, StoreError> {
    let number = |name: &str| get::<i64>(row, name, operation);
    Ok(CallRecord {
        call_id: get(row, "call_id", operation)?,
        caller_number: get(row, "caller_number", operation)?,
        received_at_ms: number("received_at_ms")?,
        court_name: get(row, "court_name", operation)?,
        line_number: get(row, "line_number", operation)?,
        end_reason: i32::try_from(number("end_reason")?).unwrap_or_default(),
        state: i32::try_from(number("state")?).unwrap_or_default(),
        ..CallRecord::default()
    })
}

impl SqlStore {
    /// Adds to `caller_days` what the finished calls among `rows` (about to be
    /// written) add, after taking away what their rows as stored added if those were
    /// finished already: as the dashboard's figures, each call counts once, as its
    /// latest row says. Only finished rows are looked up, by key.
    pub(super) async fn count_caller_days(
        &self,
        tx: &mut Writer,
        rows: &[&CallRow],
    ) -> Result<(), StoreError> {
        let mut sums: HashMap<CallerDayKey, DayCounts> = HashMap::new();
        let mut finished: Vec<String> = Vec::new();
        for row in rows {
            if !matches!(row.state, CallState::Ended | CallState::Interrupted) {
                continue;
            }
            finished.push(row.record.call_id.clone());
            let record = CallRecord {
                state: row.state as i32,
                ..CallRecord::clone(&row.record)
            };
            if let Some((key, counts)) = CallerDay::of_call(&record) {
                sums.entry(key).or_default().add(&counts, 1);
            }
        }
        if finished.is_empty() {
            return Ok(());
        }
        self.take_stored_calls_away(tx, &finished, &mut sums)
            .await?;
        self.add_caller_days(tx, sums).await
    }

    /// Takes what the stored finished rows of `call_ids` added out of `sums`.
    async fn take_stored_calls_away(
        &self,
        tx: &mut Writer,
        call_ids: &[String],
        sums: &mut HashMap<CallerDayKey, DayCounts>,
    ) -> Result<(), StoreError> {
        let operation = "read finished calls' callers";
        for chunk in call_ids.chunks(MAX_ROWS_PER_STATEMENT) {
            let mut sql = self.sql(format!(
                "SELECT {CALLER_CALL_COLUMNS} FROM calls WHERE state IN (2, 3) AND call_id IN ("
            ));
            push_list(&mut sql, chunk);
            sql.push(")");
            for row in sql.fetch_in(&mut *tx, operation).await? {
                if let Some((key, counts)) =
                    CallerDay::of_call(&caller_call_from_row(&row, operation)?)
                {
                    sums.entry(key).or_default().add(&counts, -1);
                }
            }
        }
        Ok(())
    }

    /// Adds `sums` to the rows of `caller_days`, making rows as needed.
    async fn add_caller_days(
        &self,
        tx: &mut Writer,
        sums: HashMap<CallerDayKey, DayCounts>,
    ) -> Result<(), StoreError> {
        let mut rows: Vec<(CallerDayKey, DayCounts)> = sums
            .into_iter()
            .filter(|(_, counts)| !counts.is_zero())
            .collect();
        // One order, so two writers lock the rows alike (PostgreSQL).
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let head = format!("INSERT INTO caller_days ({CALLER_DAY_COLUMNS})");
        let sums: Vec<String> = CALLER_DAY_COLUMNS
            .split(',')
            .map(str::trim)
            .skip(4)
            .map(|column| format!("{column} = caller_days.{column} + excluded.{column}"))
            .collect();
        let tail = format!(
            " ON CONFLICT (caller_number, day, court_name, line_number) DO UPDATE SET {}",
            sums.join(", ")
        );
        self.write_rows(&mut *tx, &head, &tail, &rows, "add caller days")
            .await?;
        let changed: Vec<(&str, i64)> = rows
            .iter()
            .map(|((caller, day, _, _), _)| (caller.as_str(), *day))
            .collect();
        self.link_caller_days(tx, &changed).await
    }

    /// Brings `since_previous_days` up to date after rows of the `changed` callers
    /// were added or deleted on or after the given days: a new row, and the row after
    /// a new or deleted one, change; earlier rows cannot. Only rows whose value is
    /// wrong are written (mostly just the new ones).
    async fn link_caller_days(
        &self,
        tx: &mut Writer,
        changed: &[(&str, i64)],
    ) -> Result<(), StoreError> {
        for chunk in changed.chunks(MAX_ROWS_PER_STATEMENT) {
            let Some(first_day) = chunk.iter().map(|(_, day)| *day).min() else {
                continue;
            };
            let mut callers: Vec<String> = chunk
                .iter()
                .map(|(caller, _)| (*caller).to_owned())
                .collect();
            callers.sort();
            callers.dedup();
            let mut sql = self.sql(format!(
                "UPDATE caller_days SET since_previous_days = {SINCE_PREVIOUS} \
                 WHERE caller_number IN ("
            ));
            push_list(&mut sql, &callers);
            sql.push(") AND day >= ").bind(first_day).push(&format!(
                " AND since_previous_days IS DISTINCT FROM {SINCE_PREVIOUS}"
            ));
            sql.execute(&mut *tx, "link caller days").await?;
        }
        Ok(())
    }

    /// Adds a flag's or report's `counts` to the row of call `call_id`'s caller and day
    /// (no caller number: nothing).
    pub(super) async fn count_call_mark(
        &self,
        tx: &mut Writer,
        call_id: &str,
        counts: DayCounts,
    ) -> Result<(), StoreError> {
        let operation = "read a marked call's caller";
        let mut sql = self.sql(format!(
            "SELECT {CALLER_CALL_COLUMNS} FROM calls WHERE call_id = "
        ));
        sql.bind(call_id.to_owned());
        let mut sums = HashMap::new();
        for row in sql.fetch_in(&mut *tx, operation).await? {
            if let Some(key) = CallerDay::key_of(&caller_call_from_row(&row, operation)?) {
                sums.insert(key, counts);
            }
        }
        self.add_caller_days(tx, sums).await
    }

    /// Takes calls about to be purged out of `caller_days`, and deletes the rows left
    /// at nothing: the table keeps nothing of a call past retention.
    pub(super) async fn uncount_purged(
        &self,
        tx: &mut Writer,
        call_ids: &[String],
    ) -> Result<(), StoreError> {
        let mut sums = HashMap::new();
        self.take_stored_calls_away(tx, call_ids, &mut sums).await?;
        // Each caller, with the first day a row of theirs may be deleted on.
        let mut first_days: BTreeMap<String, i64> = BTreeMap::new();
        for (caller, day, _, _) in sums.keys() {
            let first = first_days.entry(caller.clone()).or_insert(*day);
            *first = (*first).min(*day);
        }
        let callers: Vec<String> = first_days.keys().cloned().collect();
        self.add_caller_days(tx, sums).await?;
        for chunk in callers.chunks(MAX_ROWS_PER_STATEMENT) {
            let mut sql = self.sql(
                "DELETE FROM caller_days WHERE calls = 0 AND flags = 0 AND reports = 0 \
                 AND caller_number IN (",
            );
            push_list(&mut sql, chunk);
            sql.push(")");
            sql.execute(&mut *tx, "delete emptied caller days").await?;
        }
        let changed: Vec<(&str, i64)> = first_days
            .iter()
            .map(|(caller, day)| (caller.as_str(), *day))
            .collect();
        self.link_caller_days(tx, &changed).await
    }

    /// Stores the row of a chained `PatternMatched` event.
    pub(super) async fn put_pattern_match(
        &self,
        tx: &mut Writer,
        row: &PatternMatchRow,
    ) -> Result<(), StoreError> {
        let mut sql = self.sql(
            "INSERT INTO pattern_matches (seq, rule, caller_number, day, at_ms, body) VALUES (",
        );
        sql.bind(row.seq)
            .push(", ")
            .bind(row.rule.clone())
            .push(", ")
            .bind(row.caller_number.clone())
            .push(", ")
            .bind(row.day)
            .push(", ")
            .bind(row.at_ms)
            .push(", ")
            .bind(row.body.clone())
            .push(")");
        sql.execute(tx, "store pattern match").await?;
        Ok(())
    }
}

#[async_trait]
impl CallerDays for SqlStore {
    async fn pattern_candidates(
        &self,
        query: &PatternQuery,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let (group, having) = match query.kind {
            PatternKind::Courts => ("caller_number", "COUNT(DISTINCT court_name)"),
            PatternKind::Lines => ("caller_number", "COUNT(DISTINCT line_number)"),
            PatternKind::RepeatedCalls => ("caller_number, court_name", "SUM(calls)"),
            PatternKind::WarningHangUps => ("caller_number", "SUM(hung_up_in_warning)"),
            PatternKind::AfterHours => ("caller_number", "SUM(after_hours)"),
            PatternKind::ReportedAgain | PatternKind::Unspecified => return Ok(Vec::new()),
        };
        let threshold = i64::from(query.threshold);
        let range = |sql: &mut super::Sql| {
            sql.push(" AND day >= ")
                .bind(query.first_day)
                .push(" AND day <= ")
                .bind(query.last_day)
                .push(" AND calls > 0");
        };
        let operation = "find pattern candidates";
        let callers_of = |rows: Vec<AnyRow>| -> Result<Vec<String>, StoreError> {
            rows.iter()
                .map(|row| get(row, "caller_number", operation))
                .collect()
        };
        let Some(gap) = repeat_gap_days(query) else {
            let mut sql = self.sql(format!(
                "SELECT DISTINCT caller_number FROM (SELECT {group} FROM caller_days WHERE 1 = 1"
            ));
            range(&mut sql);
            sql.push(&format!(" GROUP BY {group} HAVING {having} >= "))
                .bind(threshold)
                .push(") AS reached ORDER BY caller_number LIMIT ")
                .bind(i64::from(limit));
            return callers_of(sql.fetch_all(&self.pool, operation).await?);
        };
        // The callers whose repeat rows in the range count `threshold - 1` (see
        // `repeat_gap_days`), then, in number order, those whose rows of the range
        // reach `threshold`, read by key. Two statements, not one: PostgreSQL
        // guesses thousands of callers from the first and would read the range.
        let mut sql = self.sql(format!(
            "SELECT DISTINCT caller_number FROM (SELECT {group} FROM caller_days WHERE {}",
            repeats()
        ));
        range(&mut sql);
        sql.push(" AND (since_previous_days <= ")
            .bind(gap)
            .push(&format!(
                " OR calls >= 2) GROUP BY {group} HAVING {having} >= "
            ))
            .bind(threshold - 1)
            .push(") AS repeating ORDER BY caller_number");
        let repeating = callers_of(sql.fetch_all(&self.pool, operation).await?)?;
        let mut reached = Vec::new();
        for chunk in repeating.chunks(CALLERS_PER_STATEMENT) {
            if reached.len() >= limit as usize {
                break;
            }
            let mut sql = self.sql(format!(
                "SELECT DISTINCT caller_number FROM (SELECT {group} FROM caller_days \
                 WHERE caller_number IN ("
            ));
            push_list(&mut sql, chunk);
            sql.push(")");
            range(&mut sql);
            sql.push(&format!(" GROUP BY {group} HAVING {having} >= "))
                .bind(threshold)
                .push(") AS reached ORDER BY caller_number");
            reached.extend(callers_of(sql.fetch_all(&self.pool, operation).await?)?);
        }
        reached.truncate(limit as usize);
        Ok(reached)
    }

    async fn caller_day_rows(
        &self,
        callers: &[String],
        first_day: i64,
        last_day: i64,
    ) -> Result<Vec<CallerDay>, StoreError> {
        let mut rows = Vec::new();
        for chunk in callers.chunks(MAX_ROWS_PER_STATEMENT) {
            let mut sql = self.sql(format!(
                "SELECT {CALLER_DAY_COLUMNS} FROM caller_days WHERE caller_number IN ("
            ));
            push_list(&mut sql, chunk);
            sql.push(") AND day >= ")
                .bind(first_day)
                .push(" AND day <= ")
                .bind(last_day);
            for row in sql.fetch_all(&self.pool, "read caller days").await? {
                rows.push(caller_day_from_row(&row)?);
            }
        }
        Ok(rows)
    }

    async fn reported_callers(&self, limit: u32) -> Result<Vec<String>, StoreError> {
        let mut sql = self.sql(format!(
            "SELECT DISTINCT caller_number FROM caller_days WHERE {REPORTED}"
        ));
        sql.push(" ORDER BY caller_number LIMIT ")
            .bind(i64::from(limit));
        let operation = "find reported callers";
        sql.fetch_all(&self.pool, operation)
            .await?
            .iter()
            .map(|row| get(row, "caller_number", operation))
            .collect()
    }

    async fn caller_history(&self, caller: &str) -> Result<(u32, u32), StoreError> {
        // BIGINT: PostgreSQL sums integers into NUMERIC otherwise.
        let mut sql = self.sql(
            "SELECT CAST(COALESCE(SUM(reports), 0) AS BIGINT) AS reports, \
             CAST(COALESCE(SUM(flags), 0) AS BIGINT) AS flags \
             FROM caller_days WHERE caller_number = ",
        );
        sql.bind(caller.to_owned());
        let operation = "read a caller's history";
        let rows = sql.fetch_all(&self.pool, operation).await?;
        let count = |column: &str| -> Result<u32, StoreError> {
            let value: i64 = match rows.first() {
                Some(row) => get(row, column, operation)?,
                None => 0,
            };
            Ok(u32::try_from(value).unwrap_or(u32::MAX))
        };
        Ok((count("reports")?, count("flags")?))
    }

    async fn calls_of_callers(
        &self,
        callers: &[String],
        until_ms: i64,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let operation = "read callers' calls";
        let mut calls = Vec::new();
        for chunk in callers.chunks(MAX_ROWS_PER_STATEMENT) {
            let mut sql = self.sql(format!(
                "SELECT {CALLER_CALL_COLUMNS}, flagged, has_report FROM calls \
                 WHERE caller_number IN ("
            ));
            push_list(&mut sql, chunk);
            sql.push(") AND received_at_ms < ")
                .bind(until_ms)
                .push(" AND state IN (2, 3)");
            for row in sql.fetch_all(&self.pool, operation).await? {
                let marked = get::<i64>(&row, "flagged", operation)? != 0
                    || get::<i64>(&row, "has_report", operation)? != 0;
                calls.push(CallRecord {
                    flagged: marked,
                    ..caller_call_from_row(&row, operation)?
                });
            }
        }
        Ok(calls)
    }

    async fn pattern_matched(
        &self,
        rule: &str,
        caller: &str,
        day: i64,
    ) -> Result<bool, StoreError> {
        let mut sql = self.sql("SELECT seq FROM pattern_matches WHERE rule = ");
        sql.bind(rule.to_owned())
            .push(" AND caller_number = ")
            .bind(caller.to_owned())
            .push(" AND day = ")
            .bind(day);
        Ok(!sql
            .fetch_all(&self.pool, "look up a pattern match")
            .await?
            .is_empty())
    }

    async fn pattern_matches(
        &self,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<PatternMatchRow>, StoreError> {
        let operation = "read pattern matches";
        let mut sql = self.sql(
            "SELECT seq, rule, caller_number, day, at_ms, body FROM pattern_matches WHERE at_ms >= ",
        );
        sql.bind(since_ms)
            .push(" ORDER BY at_ms DESC, seq DESC LIMIT ")
            .bind(i64::from(limit));
        sql.fetch_all(&self.pool, operation)
            .await?
            .iter()
            .map(|row| {
                Ok(PatternMatchRow {
                    seq: get(row, "seq", operation)?,
                    rule: get(row, "rule", operation)?,
                    caller_number: get(row, "caller_number", operation)?,
                    day: get(row, "day", operation)?,
                    at_ms: get(row, "at_ms", operation)?,
                    body: get(row, "body", operation)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite uses the partial index only for a query that repeats its condition.
    #[test]
    fn the_repeats_condition_is_the_indexes_word_for_word() {
        let condition = repeats();
        let condition = &condition[1..condition.len() - 1];
        for migration in [
            include_str!("../../../migrations/sqlite/0015_caller_day_repeats.sql"),
            include_str!("../../../migrations/postgres/0015_caller_day_repeats.sql"),
        ] {
            assert!(
                migration.contains(&format!("WHERE {condition};")),
                "{condition}"
            );
        }
    }
}
