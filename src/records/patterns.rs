//! Patterns across calls, sans-IO: what one finished call adds to its caller's day
//! ([`CallerDay::of_call`], which the store adds up in `caller_days` as calls are
//! stored), and which callers the stored rows show a pattern for ([`find`]): several
//! courts or lines within a few days, many calls to one court, repeated hang-ups
//! during the warning, repeated calls outside office hours. "Reported, then called
//! again" needs the order of calls within a day, so [`reported_again`] reads the
//! calls of the (few) callers with a flag or report instead.
//!
//! Windows are whole UTC days, as the dashboard's: `window_days` consecutive days
//! ([`super::dashboard::day_of`]) inside the range asked for.

use std::collections::{BTreeMap, BTreeSet};

use super::dashboard::{day_of, DAY_MS};
use crate::contract::pb::{CallFilter, CallRecord, CallState, EndReason, PatternHit, PatternKind};

/// Most callers a query looks at closely (and most hits it returns): a threshold so
/// low that more match says nothing about any one of them.
pub const MAX_HITS: usize = 1000;
/// Longest window, days: patterns are about days and weeks, not years.
pub const MAX_WINDOW_DAYS: u32 = 366;
/// Longest gap, days, between a caller's `caller_days` row and their previous one
/// (`since_previous_days`) that still puts the row in the `caller_days_repeats`
/// index (migration 0015): queries with windows up to one day longer find their
/// candidates among those few rows; longer windows read the whole range.
pub const MAX_REPEAT_GAP_DAYS: i64 = 90;

/// One `caller_days` row: what a caller's finished calls to one line did on one UTC day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerDay {
    /// The caller's number (the From user part).
    pub caller_number: String,
    /// UTC day (days since 1970-01-01).
    pub day: i64,
    /// The court of the line.
    pub court_name: String,
    /// The dialled line.
    pub line_number: String,
    /// The counts.
    pub counts: DayCounts,
}

/// What a caller's calls to one line on one day add up to (the columns of `caller_days`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayCounts {
    /// Finished calls.
    pub calls: i64,
    /// Of those, hung up while the warning played (end reason 1).
    pub hung_up_in_warning: i64,
    /// Of those, outside office hours (end reason 13, after_hours).
    pub after_hours: i64,
    /// Flags set on them.
    pub flags: i64,
    /// Reports opened on them.
    pub reports: i64,
}

impl DayCounts {
    /// Adds `other` (`sign` 1) or takes it away (`sign` -1).
    pub fn add(&mut self, other: &DayCounts, sign: i64) {
        self.calls += sign * other.calls;
        self.hung_up_in_warning += sign * other.hung_up_in_warning;
        self.after_hours += sign * other.after_hours;
        self.flags += sign * other.flags;
        self.reports += sign * other.reports;
    }

    /// Whether it changes nothing when added.
    pub fn is_zero(&self) -> bool {
        *self == DayCounts::default()
    }

    /// One flag.
    pub fn flag() -> DayCounts {
        DayCounts {
            flags: 1,
            ..DayCounts::default()
        }
    }

    /// One report.
    pub fn report() -> DayCounts {
        DayCounts {
            reports: 1,
            ..DayCounts::default()
        }
    }
}

/// The `caller_days` key of a call: (caller, day, court, line).
pub type CallerDayKey = (String, i64, String, String);

impl CallerDay {
    /// The key of `record`'s row, or `None` for a call without a caller number
    /// (anonymous calls are nobody's pattern).
    pub fn key_of(record: &CallRecord) -> Option<CallerDayKey> {
        (!record.caller_number.is_empty()).then(|| {
            (
                record.caller_number.clone(),
                day_of(record.received_at_ms),
                record.court_name.clone(),
                record.line_number.clone(),
            )
        })
    }

    /// What a call's final row adds; `None` while in progress (as the dashboard, only
    /// finished calls count) or without a caller number.
    pub fn of_call(record: &CallRecord) -> Option<(CallerDayKey, DayCounts)> {
        let finished = matches!(
            CallState::try_from(record.state),
            Ok(CallState::Ended | CallState::Interrupted)
        );
        if !finished {
            return None;
        }
        let key = CallerDay::key_of(record)?;
        let ended = |reason: EndReason| i64::from(record.end_reason == reason as i32);
        Some((
            key,
            DayCounts {
                calls: 1,
                hung_up_in_warning: ended(EndReason::CallerHungUpDuringPrompt),
                after_hours: ended(EndReason::AfterHours),
                flags: 0,
                reports: 0,
            },
        ))
    }
}

/// What a pattern query asks: which pattern, its threshold and window, over which days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternQuery {
    /// Which pattern.
    pub kind: PatternKind,
    /// At least this many (courts, lines, calls, hang-ups, after-hours calls, calls
    /// after a report).
    pub threshold: u32,
    /// Within this many consecutive UTC days.
    pub window_days: u32,
    /// First UTC day of the range.
    pub first_day: i64,
    /// Last UTC day of the range (inclusive).
    pub last_day: i64,
}

/// The largest `since_previous_days` a row of a caller with a hit of `query` can
/// have, when the query may find its candidates among the repeat rows only: any
/// count of 2 or more within `window_days` days needs two calls within them, and
/// the later one's row (or one row of 2 calls) lies within `window_days - 1` days of
/// the row before it. In such a window every row with calls but the first is such a
/// repeat row, and the first adds at most 1 (or is a repeat row itself, with 2
/// calls), so a hit's repeat rows in the range count at least `threshold - 1`.
/// `None` (read the whole range): a threshold of 1, which any one call reaches, a
/// window longer than the index keeps gaps for, or a pattern not counted per day.
pub fn repeat_gap_days(query: &PatternQuery) -> Option<i64> {
    let gap = i64::from(query.window_days.max(1)) - 1;
    let counted_per_day = !matches!(
        query.kind,
        PatternKind::ReportedAgain | PatternKind::Unspecified
    );
    (counted_per_day && query.threshold >= 2 && gap <= MAX_REPEAT_GAP_DAYS).then_some(gap)
}

/// The documented defaults of each pattern: (threshold, window days). README
/// "Patterns across calls" lists them; the planted-history test holds ordinary
/// callers under them.
pub fn defaults(kind: PatternKind) -> (u32, u32) {
    match kind {
        PatternKind::Courts => (4, 7),
        PatternKind::Lines => (4, 7),
        PatternKind::RepeatedCalls => (8, 7),
        PatternKind::WarningHangUps => (3, 7),
        PatternKind::AfterHours => (3, 7),
        PatternKind::ReportedAgain => (1, 30),
        PatternKind::Unspecified => (0, 0),
    }
}

/// The pattern's name as the CLI, the console and the configuration spell it.
pub fn kind_name(kind: PatternKind) -> &'static str {
    match kind {
        PatternKind::Unspecified => "unspecified",
        PatternKind::Courts => "courts",
        PatternKind::Lines => "lines",
        PatternKind::RepeatedCalls => "repeated_calls",
        PatternKind::ReportedAgain => "reported_again",
        PatternKind::WarningHangUps => "warning_hang_ups",
        PatternKind::AfterHours => "after_hours",
    }
}

/// Every pattern, in the order pages list them.
pub const KINDS: [PatternKind; 6] = [
    PatternKind::Courts,
    PatternKind::Lines,
    PatternKind::RepeatedCalls,
    PatternKind::ReportedAgain,
    PatternKind::WarningHangUps,
    PatternKind::AfterHours,
];

/// The pattern named `name` ([`kind_name`], `-` for `_`, any case).
pub fn parse_kind(name: &str) -> Option<PatternKind> {
    let name = name.trim().to_ascii_lowercase().replace('-', "_");
    KINDS.into_iter().find(|kind| kind_name(*kind) == name)
}

/// What is counted of a group of rows (one caller, or one caller and court).
fn measure(kind: PatternKind, rows: &[&CallerDay]) -> u64 {
    let sum = |field: fn(&DayCounts) -> i64| {
        rows.iter()
            .map(|row| field(&row.counts))
            .sum::<i64>()
            .max(0) as u64
    };
    let distinct = |field: fn(&CallerDay) -> &str| {
        rows.iter()
            .filter(|row| row.counts.calls > 0)
            .map(|row| field(row))
            .collect::<BTreeSet<_>>()
            .len() as u64
    };
    match kind {
        PatternKind::Courts => distinct(|row| &row.court_name),
        PatternKind::Lines => distinct(|row| &row.line_number),
        PatternKind::RepeatedCalls => sum(|counts| counts.calls),
        PatternKind::WarningHangUps => sum(|counts| counts.hung_up_in_warning),
        PatternKind::AfterHours => sum(|counts| counts.after_hours),
        PatternKind::ReportedAgain | PatternKind::Unspecified => 0,
    }
}

/// The calls filter that lists the calls behind a hit: the caller's calls in the
/// window, of the court (repeated calls) or the end reason (hang-ups, after hours)
/// counted.
pub fn drill_down(
    kind: PatternKind,
    caller: &str,
    court: &str,
    since_ms: i64,
    until_ms: i64,
) -> CallFilter {
    let end_reason = match kind {
        PatternKind::WarningHangUps => EndReason::CallerHungUpDuringPrompt as i32,
        PatternKind::AfterHours => EndReason::AfterHours as i32,
        _ => 0,
    };
    CallFilter {
        since_ms,
        until_ms,
        caller_prefix: caller.to_owned(),
        caller_exact: true,
        court_name: if kind == PatternKind::RepeatedCalls {
            court.to_owned()
        } else {
            String::new()
        },
        end_reason,
        ..CallFilter::default()
    }
}

/// The callers (or caller and court, for repeated calls) whose rows reach the
/// query's threshold within `window_days` consecutive days of the range: for each,
/// the window with the highest count (the earliest of equals). `rows` may hold rows
/// outside the range and of callers below the threshold; they are ignored. Hits
/// come most first, then by caller.
pub fn find(query: &PatternQuery, rows: &[CallerDay]) -> Vec<PatternHit> {
    let window = i64::from(query.window_days.max(1));
    let per_court = query.kind == PatternKind::RepeatedCalls;
    let mut groups: BTreeMap<(&str, &str), Vec<&CallerDay>> = BTreeMap::new();
    for row in rows
        .iter()
        .filter(|row| (query.first_day..=query.last_day).contains(&row.day))
    {
        let court = if per_court {
            row.court_name.as_str()
        } else {
            ""
        };
        groups
            .entry((row.caller_number.as_str(), court))
            .or_default()
            .push(row);
    }
    let mut hits = Vec::new();
    for ((caller, court), rows) in groups {
        let days: BTreeSet<i64> = rows.iter().map(|row| row.day).collect();
        // A best window starts on a day with calls.
        let mut best: Option<(u64, i64)> = None;
        for start in days {
            let end = (start + window - 1).min(query.last_day);
            let inside: Vec<&CallerDay> = rows
                .iter()
                .copied()
                .filter(|row| (start..=end).contains(&row.day))
                .collect();
            let count = measure(query.kind, &inside);
            if best.is_none_or(|(most, _)| count > most) {
                best = Some((count, start));
            }
        }
        let Some((count, start)) = best else { continue };
        if count < u64::from(query.threshold.max(1)) {
            continue;
        }
        let end = (start + window - 1).min(query.last_day);
        let inside: Vec<&CallerDay> = rows
            .iter()
            .copied()
            .filter(|row| (start..=end).contains(&row.day))
            .collect();
        let courts: BTreeSet<&str> = inside.iter().map(|row| row.court_name.as_str()).collect();
        let calls: i64 = inside.iter().map(|row| row.counts.calls).sum();
        let (since_ms, until_ms) = (start * DAY_MS, (end + 1) * DAY_MS);
        hits.push(PatternHit {
            kind: query.kind as i32,
            caller_number: caller.to_owned(),
            court_name: court.to_owned(),
            count,
            calls: calls.max(0) as u64,
            since_ms,
            until_ms,
            courts: courts.into_iter().map(str::to_owned).collect(),
            calls_filter: Some(drill_down(query.kind, caller, court, since_ms, until_ms)),
            masked: false,
        });
    }
    hits.sort_by(|a, b| {
        (b.count, &a.caller_number, &a.court_name).cmp(&(a.count, &b.caller_number, &b.court_name))
    });
    hits
}

/// "Reported, then called again" for one caller: the calls after the first call of
/// theirs that has a flag or report (`calls` are the caller's calls, any order,
/// with `flagged` set for a flagged or reported call). A hit when at least
/// `threshold` of those later calls were received within the range
/// (`since_ms`..`until_ms`) and within `window_days` of the reported call.
pub fn reported_again(
    calls: &[CallRecord],
    threshold: u32,
    window_days: u32,
    since_ms: i64,
    until_ms: i64,
) -> Option<PatternHit> {
    let reported = calls
        .iter()
        .filter(|call| call.flagged)
        .min_by_key(|call| (call.received_at_ms, call.call_id.clone()))?;
    let window_end = reported
        .received_at_ms
        .saturating_add(i64::from(window_days.max(1)) * DAY_MS);
    let until = until_ms.min(window_end);
    let again: Vec<&CallRecord> = calls
        .iter()
        .filter(|call| {
            call.received_at_ms > reported.received_at_ms
                && call.received_at_ms >= since_ms
                && call.received_at_ms < until
        })
        .collect();
    if (again.len() as u64) < u64::from(threshold.max(1)) {
        return None;
    }
    let courts: BTreeSet<&str> = again.iter().map(|call| call.court_name.as_str()).collect();
    let kind = PatternKind::ReportedAgain;
    // From the reported call on: the drill-down shows it first, then the calls after it.
    let since = reported.received_at_ms;
    Some(PatternHit {
        kind: kind as i32,
        caller_number: reported.caller_number.clone(),
        court_name: String::new(),
        count: again.len() as u64,
        calls: again.len() as u64 + 1,
        since_ms: since,
        until_ms: until,
        courts: courts.into_iter().map(str::to_owned).collect(),
        calls_filter: Some(drill_down(kind, &reported.caller_number, "", since, until)),
        masked: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(caller: &str, day: i64, court: &str, line: &str, calls: i64) -> CallerDay {
        CallerDay {
            caller_number: caller.into(),
            day,
            court_name: court.into(),
            line_number: line.into(),
            counts: DayCounts {
                calls,
                ..DayCounts::default()
            },
        }
    }

    fn query(kind: PatternKind, threshold: u32, window_days: u32) -> PatternQuery {
        PatternQuery {
            kind,
            threshold,
            window_days,
            first_day: 100,
            last_day: 130,
        }
    }

    #[test]
    fn only_thresholds_of_two_within_the_kept_gaps_prune() {
        assert_eq!(repeat_gap_days(&query(PatternKind::Courts, 4, 7)), Some(6));
        assert_eq!(repeat_gap_days(&query(PatternKind::Lines, 2, 1)), Some(0));
        let longest = MAX_REPEAT_GAP_DAYS as u32 + 1;
        assert_eq!(
            repeat_gap_days(&query(PatternKind::RepeatedCalls, 8, longest)),
            Some(MAX_REPEAT_GAP_DAYS)
        );
        assert_eq!(
            repeat_gap_days(&query(PatternKind::AfterHours, 3, longest + 1)),
            None
        );
        assert_eq!(
            repeat_gap_days(&query(PatternKind::WarningHangUps, 1, 7)),
            None
        );
        assert_eq!(
            repeat_gap_days(&query(PatternKind::ReportedAgain, 2, 7)),
            None
        );
    }

    #[test]
    fn courts_count_within_the_window_only() {
        let mut rows: Vec<CallerDay> = (0..6)
            .map(|n| {
                row(
                    "broker",
                    110 + n / 2,
                    &format!("court{n}"),
                    &format!("l{n}"),
                    1,
                )
            })
            .collect();
        // Four courts, but over ten days: never four within three.
        rows.extend((0..4).map(|n| row("slow", 100 + 3 * n, &format!("court{n}"), "x", 1)));
        // Before the range: ignored.
        rows.extend((0..6).map(|n| row("old", 90, &format!("court{n}"), "x", 1)));
        let hits = find(&query(PatternKind::Courts, 4, 3), &rows);
        assert_eq!(hits.len(), 1, "{hits:?}");
        let hit = &hits[0];
        assert_eq!(
            (hit.caller_number.as_str(), hit.count, hit.calls),
            ("broker", 6, 6)
        );
        assert_eq!((hit.since_ms, hit.until_ms), (110 * DAY_MS, 113 * DAY_MS));
        assert_eq!(hit.courts.len(), 6);
        let filter = hit.calls_filter.as_ref().unwrap();
        assert!(filter.caller_exact);
        assert_eq!(filter.caller_prefix, "broker");
        // A longer window finds the slow one too; lines count lines.
        assert_eq!(find(&query(PatternKind::Courts, 4, 10), &rows).len(), 2);
        assert_eq!(find(&query(PatternKind::Lines, 6, 3), &rows).len(), 1);
        assert_eq!(find(&query(PatternKind::Lines, 2, 10), &rows).len(), 1);
    }

    #[test]
    fn repeated_calls_count_per_court_and_pick_the_busiest_window() {
        let rows = vec![
            row("a", 100, "甲", "1", 2),
            row("a", 101, "甲", "2", 3),
            row("a", 101, "乙", "3", 4),
            row("a", 120, "甲", "1", 1),
        ];
        let hits = find(&query(PatternKind::RepeatedCalls, 5, 2), &rows);
        assert_eq!(hits.len(), 1);
        assert_eq!((hits[0].court_name.as_str(), hits[0].count), ("甲", 5));
        let filter = hits[0].calls_filter.clone().unwrap();
        assert_eq!(filter.court_name, "甲");
        assert_eq!(
            (filter.since_ms, filter.until_ms),
            (100 * DAY_MS, 102 * DAY_MS)
        );
        assert!(find(&query(PatternKind::RepeatedCalls, 6, 2), &rows).is_empty());
        // Two courts, each its own hit, most first.
        let both = find(&query(PatternKind::RepeatedCalls, 4, 2), &rows);
        let found: Vec<_> = both
            .iter()
            .map(|hit| (hit.court_name.as_str(), hit.count))
            .collect();
        assert_eq!(found, [("甲", 5), ("乙", 4)]);
    }

    #[test]
    fn hang_ups_and_after_hours_sum_their_counts() {
        let mut hung = row("h", 105, "甲", "1", 3);
        hung.counts.hung_up_in_warning = 3;
        let mut late = row("n", 105, "甲", "1", 2);
        late.counts.after_hours = 2;
        let rows = [hung, late];
        let hits = find(&query(PatternKind::WarningHangUps, 3, 7), &rows);
        assert_eq!(hits.len(), 1);
        let filter = hits[0].calls_filter.clone().unwrap();
        assert_eq!(
            filter.end_reason,
            EndReason::CallerHungUpDuringPrompt as i32
        );
        assert!(find(&query(PatternKind::AfterHours, 3, 7), &rows).is_empty());
        let late = find(&query(PatternKind::AfterHours, 2, 7), &rows);
        assert_eq!(late[0].caller_number, "n");
        assert_eq!(
            late[0].calls_filter.as_ref().unwrap().end_reason,
            EndReason::AfterHours as i32
        );
    }

    #[test]
    fn a_call_counts_once_finished_and_only_with_a_number() {
        let call = CallRecord {
            caller_number: "139".into(),
            court_name: "甲".into(),
            line_number: "1".into(),
            received_at_ms: 3 * DAY_MS + 5,
            end_reason: EndReason::AfterHours as i32,
            state: CallState::Ended as i32,
            ..CallRecord::default()
        };
        let (key, counts) = CallerDay::of_call(&call).unwrap();
        assert_eq!(key, ("139".into(), 3, "甲".into(), "1".into()));
        assert_eq!(
            (counts.calls, counts.after_hours, counts.hung_up_in_warning),
            (1, 1, 0)
        );
        let open = CallRecord {
            state: CallState::InProgress as i32,
            ..call.clone()
        };
        assert_eq!(CallerDay::of_call(&open), None);
        let anonymous = CallRecord {
            caller_number: String::new(),
            ..call
        };
        assert_eq!(CallerDay::of_call(&anonymous), None);
        let mut sum = DayCounts::flag();
        sum.add(&DayCounts::report(), 1);
        sum.add(&DayCounts::flag(), -1);
        sum.add(&DayCounts::report(), -1);
        assert!(sum.is_zero());
    }

    #[test]
    fn reported_callers_who_call_again() {
        let call = |id: &str, at: i64, flagged: bool| CallRecord {
            call_id: id.into(),
            caller_number: "139".into(),
            court_name: "甲".into(),
            received_at_ms: at,
            flagged,
            ..CallRecord::default()
        };
        let calls = [
            call("a", 10 * DAY_MS, false),
            call("b", 11 * DAY_MS, true),
            call("c", 11 * DAY_MS + 5, false),
            call("d", 15 * DAY_MS, false),
        ];
        let hit = reported_again(&calls, 1, 30, 0, 100 * DAY_MS).unwrap();
        assert_eq!((hit.count, hit.since_ms), (2, 11 * DAY_MS));
        assert_eq!(hit.calls_filter.unwrap().since_ms, 11 * DAY_MS);
        assert!(reported_again(&calls, 3, 30, 0, 100 * DAY_MS).is_none());
        // Only the calls within the window after the report.
        assert_eq!(
            reported_again(&calls, 1, 2, 0, 100 * DAY_MS).unwrap().count,
            1
        );
        // Nobody reported: nothing.
        assert!(reported_again(&calls[..1], 1, 30, 0, 100 * DAY_MS).is_none());
        assert_eq!(
            parse_kind("Repeated-Calls"),
            Some(PatternKind::RepeatedCalls)
        );
        assert_eq!(parse_kind("nonsense"), None);
    }
}
