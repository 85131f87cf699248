//! Runs a pattern query against the store: the callers whose per-day counts over
//! the whole range reach the threshold (an index range read of `caller_days`: of
//! its repeat rows only for thresholds of 2 or more within up to 91 days, see
//! [`super::patterns::repeat_gap_days`]), then their rows, then the windows
//! ([`super::patterns::find`]). "Reported, then called
//! again" starts from the callers with a flag or report (a partial index) and reads
//! their calls by the caller index. Neither scans the calls table. Used by
//! `ListPatterns` and by the alert rules.

use std::collections::BTreeMap;

use super::dashboard::DAY_MS;
use super::patterns::{find, reported_again, PatternQuery, MAX_HITS};
use super::store::{Store, StoreError};
use crate::contract::pb::{CallRecord, PatternHit, PatternKind};

/// What a search found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    /// Most first, at most [`MAX_HITS`].
    pub hits: Vec<PatternHit>,
    /// More callers reached the threshold than were looked at.
    pub truncated: bool,
}

/// The hits of `query`, optionally for one `caller` only.
pub async fn search(
    store: &dyn Store,
    query: &PatternQuery,
    caller: Option<&str>,
) -> Result<Found, StoreError> {
    if let Some(caller) = caller {
        let hits = search_caller(store, std::slice::from_ref(query), caller).await?;
        return Ok(Found {
            hits: hits.into_iter().flatten().collect(),
            truncated: false,
        });
    }
    let limit = MAX_HITS as u32 + 1;
    let (mut hits, looked_at) = if query.kind == PatternKind::ReportedAgain {
        let callers = store.reported_callers(limit).await?;
        let since_ms = query.first_day * DAY_MS;
        let until_ms = (query.last_day + 1) * DAY_MS;
        let calls = store
            .calls_of_callers(&callers[..callers.len().min(MAX_HITS)], until_ms)
            .await?;
        let mut by_caller: BTreeMap<String, Vec<CallRecord>> = BTreeMap::new();
        for call in calls {
            by_caller
                .entry(call.caller_number.clone())
                .or_default()
                .push(call);
        }
        let mut hits: Vec<PatternHit> = by_caller
            .values()
            .filter_map(|calls| {
                reported_again(
                    calls,
                    query.threshold,
                    query.window_days,
                    since_ms,
                    until_ms,
                )
            })
            .collect();
        hits.sort_by(|a, b| (b.count, &a.caller_number).cmp(&(a.count, &b.caller_number)));
        (hits, callers.len())
    } else {
        let callers = store.pattern_candidates(query, limit).await?;
        let rows = store
            .caller_day_rows(
                &callers[..callers.len().min(MAX_HITS)],
                query.first_day,
                query.last_day,
            )
            .await?;
        (find(query, &rows), callers.len())
    };
    let truncated = looked_at > MAX_HITS || hits.len() > MAX_HITS;
    hits.truncate(MAX_HITS);
    Ok(Found { hits, truncated })
}

/// The hits of each of `queries` for one caller, from one read of the caller's rows
/// (a key range) and, only when the caller has a flag or report and a query asks
/// for "reported, then called again", one read of their calls: what the alerts
/// run for each caller whose call was just recorded.
pub async fn search_caller(
    store: &dyn Store,
    queries: &[PatternQuery],
    caller: &str,
) -> Result<Vec<Vec<PatternHit>>, StoreError> {
    let callers = [caller.to_owned()];
    let rows = store
        .caller_day_rows(&callers, i64::MIN / 2, i64::MAX / 2)
        .await?;
    let reported = rows
        .iter()
        .any(|row| row.counts.flags > 0 || row.counts.reports > 0);
    let until_day = queries.iter().map(|query| query.last_day).max();
    let calls = match until_day {
        Some(last_day)
            if reported
                && queries
                    .iter()
                    .any(|query| query.kind == PatternKind::ReportedAgain) =>
        {
            store
                .calls_of_callers(&callers, (last_day + 1) * DAY_MS)
                .await?
        }
        _ => Vec::new(),
    };
    Ok(queries
        .iter()
        .map(|query| match query.kind {
            PatternKind::ReportedAgain => reported_again(
                &calls,
                query.threshold,
                query.window_days,
                query.first_day * DAY_MS,
                (query.last_day + 1) * DAY_MS,
            )
            .into_iter()
            .collect(),
            _ => find(query, &rows),
        })
        .collect())
}
