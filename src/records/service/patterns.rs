//! `ListPatterns` and the pattern alerts of the review queue: compliance and
//! auditors only (the handler checks), every query an access event, callers'
//! numbers masked for the roles of `[records.web] mask_callers_for`.

use prost::Message;
use tonic::Status;

use super::{store_status, RecordsServer, MAX_DASHBOARD_DAYS};
use crate::contract::pb::{
    CallerHistoryRequest, CallerHistoryResponse, ListPatternsRequest, ListPatternsResponse,
    PatternHit, PatternKind, PatternMatched,
};
use crate::records::auth::Caller;
use crate::records::dashboard::{day_of, DAY_MS};
use crate::records::ledger::now_ms;
use crate::records::mask::{mask_number, masks_callers};
use crate::records::pattern_search::search;
use crate::records::patterns::{defaults, kind_name, PatternQuery, MAX_WINDOW_DAYS};

/// Most alerts the review queue shows.
pub const MAX_ALERTS: u32 = 200;

/// One chained pattern match, for the review queue.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternAlert {
    /// Chain position of the `PatternMatched` event.
    pub seq: i64,
    /// When it matched.
    pub at_ms: i64,
    /// The event's body (caller masked when the viewer's role is).
    pub matched: PatternMatched,
}

/// `hit` as `caller` may see it: number masked and no drill-down for masked roles.
fn shown(hit: PatternHit, masked: bool) -> PatternHit {
    if !masked {
        return hit;
    }
    PatternHit {
        caller_number: mask_number(&hit.caller_number),
        calls_filter: None,
        masked: true,
        ..hit
    }
}

/// The query `request` asks for, defaults applied, with its range in UTC days.
pub fn pattern_query(request: &ListPatternsRequest, now_ms: i64) -> Result<PatternQuery, Status> {
    let kind = request.kind();
    if kind == PatternKind::Unspecified {
        return Err(Status::invalid_argument(
            "say which pattern: courts, lines, repeated_calls, reported_again, warning_hang_ups or after_hours",
        ));
    }
    let (threshold, window_days) = defaults(kind);
    let threshold = if request.threshold == 0 {
        threshold
    } else {
        request.threshold
    };
    let window_days = if request.window_days == 0 {
        window_days
    } else {
        request.window_days
    };
    if window_days > MAX_WINDOW_DAYS {
        return Err(Status::invalid_argument(format!(
            "a pattern window is at most {MAX_WINDOW_DAYS} days, not {window_days}"
        )));
    }
    let until_ms = if request.until_ms == 0 {
        now_ms
    } else {
        request.until_ms
    };
    let last_day = day_of(until_ms - 1);
    let first_day = if request.since_ms == 0 {
        last_day - i64::from(window_days) + 1
    } else {
        day_of(request.since_ms)
    };
    if first_day > last_day {
        return Err(Status::invalid_argument(
            "the range is empty: since must be before until",
        ));
    }
    if last_day - first_day >= i64::from(MAX_DASHBOARD_DAYS) {
        return Err(Status::invalid_argument(format!(
            "a pattern search covers at most {MAX_DASHBOARD_DAYS} days; narrow --since/--until"
        )));
    }
    Ok(PatternQuery {
        kind,
        threshold,
        window_days,
        first_day,
        last_day,
    })
}

impl RecordsServer {
    /// Whether `caller` sees callers' numbers masked.
    fn masks(&self, caller: &Caller) -> bool {
        masks_callers(
            caller.role,
            caller.under_loopback_rule,
            &self.patterns.masked_roles,
        )
    }

    /// `ListPatterns` for `caller` (the role was checked by the handler or the page).
    pub async fn list_patterns_as(
        &self,
        caller: &Caller,
        request: ListPatternsRequest,
    ) -> Result<ListPatternsResponse, Status> {
        let query = pattern_query(&request, now_ms())?;
        let only = request.caller_number.trim();
        let masked = self.masks(caller);
        if masked && !only.is_empty() {
            // As on the calls page: a role that sees numbers masked cannot test one.
            return Err(Status::permission_denied(
                "your role sees callers masked: searching patterns by caller number is for compliance staff",
            ));
        }
        let found = search(
            self.ledger.store().as_ref(),
            &query,
            (!only.is_empty()).then_some(only),
        )
        .await
        .map_err(|error| store_status("searching for patterns", error))?;
        let parameters = serde_json::json!({
            "kind": kind_name(query.kind),
            "threshold": query.threshold,
            "window_days": query.window_days,
            "since_ms": query.first_day * DAY_MS,
            "until_ms": (query.last_day + 1) * DAY_MS,
            "caller_number": only,
        });
        self.log_access(caller, "ListPatterns", parameters, found.hits.len() as u64)
            .await?;
        Ok(ListPatternsResponse {
            hits: found
                .hits
                .into_iter()
                .map(|hit| shown(hit, masked))
                .collect(),
            truncated: found.truncated,
            threshold: query.threshold,
            window_days: query.window_days,
            since_ms: query.first_day * DAY_MS,
            until_ms: (query.last_day + 1) * DAY_MS,
        })
    }

    /// The pattern alerts chained since `since_ms`, newest first (at most
    /// [`MAX_ALERTS`]): the review queue's. Logged as a `ListPatternAlerts` access.
    pub async fn pattern_alerts_as(
        &self,
        caller: &Caller,
        since_ms: i64,
    ) -> Result<Vec<PatternAlert>, Status> {
        let rows = self
            .ledger
            .store()
            .pattern_matches(since_ms, MAX_ALERTS)
            .await
            .map_err(|error| store_status("reading pattern alerts", error))?;
        self.log_access(
            caller,
            "ListPatternAlerts",
            serde_json::json!({ "since_ms": since_ms }),
            rows.len() as u64,
        )
        .await?;
        let masked = self.masks(caller);
        rows.into_iter()
            .map(|row| {
                let mut matched = PatternMatched::decode(row.body.as_slice()).map_err(|error| {
                    Status::data_loss(format!(
                        "pattern match #{} cannot be decoded: {error}",
                        row.seq
                    ))
                })?;
                matched.hit = matched.hit.map(|hit| shown(hit, masked));
                Ok(PatternAlert {
                    seq: row.seq,
                    at_ms: row.at_ms,
                    matched,
                })
            })
            .collect()
    }

    /// `CallerHistory` (the switchboard's role was checked by the handler): not an
    /// access event, it is asked on every call and answers counts only.
    pub async fn caller_history_of(
        &self,
        request: CallerHistoryRequest,
    ) -> Result<CallerHistoryResponse, Status> {
        let number = request.caller_number.trim();
        if number.is_empty() {
            // An anonymous caller has no history to tell.
            return Ok(CallerHistoryResponse::default());
        }
        let (prior_reports, prior_flags) = self
            .ledger
            .store()
            .caller_history(number)
            .await
            .map_err(|error| store_status("reading the caller's history", error))?;
        Ok(CallerHistoryResponse {
            prior_reports,
            prior_flags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_take_defaults_and_refuse_nonsense() {
        let now = 100 * DAY_MS + 5;
        let request = ListPatternsRequest {
            kind: PatternKind::Courts as i32,
            ..ListPatternsRequest::default()
        };
        let query = pattern_query(&request, now).unwrap();
        assert_eq!(
            (query.threshold, query.window_days),
            defaults(PatternKind::Courts)
        );
        assert_eq!(query.last_day, 100);
        assert_eq!(query.first_day, 100 - i64::from(query.window_days) + 1);
        let ranged = ListPatternsRequest {
            since_ms: 10 * DAY_MS,
            until_ms: 20 * DAY_MS,
            threshold: 6,
            window_days: 3,
            ..request.clone()
        };
        let query = pattern_query(&ranged, now).unwrap();
        assert_eq!(
            (query.first_day, query.last_day, query.threshold),
            (10, 19, 6)
        );
        assert!(pattern_query(&ListPatternsRequest::default(), now).is_err());
        let backwards = ListPatternsRequest {
            since_ms: 20 * DAY_MS,
            until_ms: 10 * DAY_MS,
            ..request.clone()
        };
        assert!(pattern_query(&backwards, now).is_err());
        let wide = ListPatternsRequest {
            window_days: MAX_WINDOW_DAYS + 1,
            ..request
        };
        assert!(pattern_query(&wide, now).is_err());
        let hit = shown(
            PatternHit {
                caller_number: "13912345678".into(),
                calls_filter: Some(Default::default()),
                ..PatternHit::default()
            },
            true,
        );
        assert_eq!(hit.caller_number, "139****5678");
        assert!(hit.calls_filter.is_none() && hit.masked);
    }
}
