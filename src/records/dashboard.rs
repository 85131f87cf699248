//! The dashboard's figures, sans-IO: what one call adds to its day and court
//! ([`Tally::of_call`], which the store adds up as calls finish, in the transaction
//! that stores them), and how the stored per-day-per-court rows become the figures
//! a page shows ([`Figures::of_rows`]).
//!
//! Days are UTC days (`at_ms / DAY_MS`, days since 1970-01-01): the counters are
//! written once and never re-bucketed, so they cannot follow a zone setting that
//! may change; the console says "UTC" beside every date.

use crate::contract::pb::{CallRecord, CallState, EndReason};

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;
/// Upper bounds of the operator answer-time buckets: answered within 5, 10, 20, 30 s.
pub const ANSWER_WITHIN_MS: [i64; 4] = [5_000, 10_000, 20_000, 30_000];

/// The UTC day (days since 1970-01-01) of Unix ms `at_ms`.
pub fn day_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(DAY_MS)
}

/// What a set of calls, flags and reports adds up to: the columns of
/// `daily_court_figures` (see its migration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Finished calls (ended or interrupted).
    pub calls: i64,
    /// Of those, the callers who heard the whole warning.
    pub warning_completed: i64,
    /// Of those, the callers who hung up while it played.
    pub hung_up_in_warning: i64,
    /// Of those, the calls an operator answered.
    pub connected: i64,
    /// Sum of the operator answer times (end of warning to answer) measured.
    pub answer_ms_sum: i64,
    /// How many answer times were measured (connected calls with both times).
    pub answered: i64,
    /// How many of those were within each of [`ANSWER_WITHIN_MS`].
    pub answered_within: [i64; 4],
    /// Flags set.
    pub flags: i64,
    /// Reports opened.
    pub reports: i64,
}

impl Tally {
    /// What a call's final row adds; nothing (`None`) while the call is in progress,
    /// since the figures count finished calls only, as the calls list does by default,
    /// and nothing for a synthetic probe: it tests the line, nobody called the court.
    pub fn of_call(record: &CallRecord) -> Option<Tally> {
        let finished = matches!(
            CallState::try_from(record.state),
            Ok(CallState::Ended | CallState::Interrupted)
        );
        if !finished || record.probe {
            return None;
        }
        let wait = (record.operator_answered_at_ms != 0
            && record.prompt_ended_at_ms != 0
            && record.operator_answered_at_ms >= record.prompt_ended_at_ms)
            .then(|| record.operator_answered_at_ms - record.prompt_ended_at_ms);
        Some(Tally {
            calls: 1,
            warning_completed: i64::from(record.prompt_completed),
            hung_up_in_warning: i64::from(
                record.end_reason == EndReason::CallerHungUpDuringPrompt as i32,
            ),
            connected: i64::from(record.operator_answered_at_ms != 0),
            answer_ms_sum: wait.unwrap_or(0),
            answered: i64::from(wait.is_some()),
            answered_within: ANSWER_WITHIN_MS
                .map(|bound| i64::from(wait.is_some_and(|w| w <= bound))),
            flags: 0,
            reports: 0,
        })
    }

    /// One flag.
    pub fn flag() -> Tally {
        Tally {
            flags: 1,
            ..Tally::default()
        }
    }

    /// One report.
    pub fn report() -> Tally {
        Tally {
            reports: 1,
            ..Tally::default()
        }
    }

    /// Adds `other` (`sign` 1) or takes it away (`sign` -1).
    pub fn add(&mut self, other: &Tally, sign: i64) {
        self.calls += sign * other.calls;
        self.warning_completed += sign * other.warning_completed;
        self.hung_up_in_warning += sign * other.hung_up_in_warning;
        self.connected += sign * other.connected;
        self.answer_ms_sum += sign * other.answer_ms_sum;
        self.answered += sign * other.answered;
        for (mine, theirs) in self.answered_within.iter_mut().zip(other.answered_within) {
            *mine += sign * theirs;
        }
        self.flags += sign * other.flags;
        self.reports += sign * other.reports;
    }

    /// Whether it changes nothing when added.
    pub fn is_zero(&self) -> bool {
        *self == Tally::default()
    }

    /// `part` of the calls in per cent, `None` without calls.
    pub fn percent_of_calls(&self, part: i64) -> Option<f64> {
        (self.calls > 0).then(|| 100.0 * part as f64 / self.calls as f64)
    }

    /// Mean operator answer time in ms, `None` when none was measured.
    pub fn mean_answer_ms(&self) -> Option<i64> {
        (self.answered > 0).then(|| self.answer_ms_sum / self.answered)
    }
}

/// One stored row: a day's figures for one court.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCourtTally {
    /// UTC day ([`day_of`]).
    pub day: i64,
    /// The court.
    pub court_name: String,
    /// The day's figures.
    pub tally: Tally,
}

/// One day of the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayFigures {
    /// UTC day.
    pub day: i64,
    /// Finished calls per court, in [`Figures::courts`] order.
    pub calls_per_court: Vec<i64>,
    /// All courts together.
    pub total: Tally,
}

/// Seven days of the range (the first may be shorter): flags and reports per week.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeekFigures {
    /// First UTC day of the week within the range.
    pub first_day: i64,
    /// Last UTC day of the week.
    pub last_day: i64,
    /// Flags set in it.
    pub flags: i64,
    /// Reports opened in it.
    pub reports: i64,
}

/// Everything the dashboard shows of a range of days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figures {
    /// Courts with any figure in the range, by name.
    pub courts: Vec<String>,
    /// Every day of the range, oldest first (days without calls included).
    pub days: Vec<DayFigures>,
    /// Weeks counted back from the last day, oldest first.
    pub weeks: Vec<WeekFigures>,
    /// The whole range.
    pub total: Tally,
}

impl Figures {
    /// The figures of the `days` days ending with `last_day` (UTC days) from the
    /// stored rows; rows outside the range are ignored.
    pub fn of_rows(rows: &[DayCourtTally], last_day: i64, days: u32) -> Figures {
        let first_day = last_day - i64::from(days.max(1)) + 1;
        let in_range: Vec<&DayCourtTally> = rows
            .iter()
            .filter(|row| (first_day..=last_day).contains(&row.day))
            .collect();
        let mut courts: Vec<String> = in_range.iter().map(|row| row.court_name.clone()).collect();
        courts.sort();
        courts.dedup();
        let mut day_figures: Vec<DayFigures> = (first_day..=last_day)
            .map(|day| DayFigures {
                day,
                calls_per_court: vec![0; courts.len()],
                total: Tally::default(),
            })
            .collect();
        let mut total = Tally::default();
        for row in in_range {
            let figures = &mut day_figures[(row.day - first_day) as usize];
            if let Ok(court) = courts.binary_search(&row.court_name) {
                figures.calls_per_court[court] += row.tally.calls;
            }
            figures.total.add(&row.tally, 1);
            total.add(&row.tally, 1);
        }
        let mut weeks: Vec<WeekFigures> = Vec::new();
        let mut last = last_day;
        while last >= first_day {
            let first = (last - 6).max(first_day);
            let days = &day_figures[(first - first_day) as usize..=(last - first_day) as usize];
            weeks.push(WeekFigures {
                first_day: first,
                last_day: last,
                flags: days.iter().map(|day| day.total.flags).sum(),
                reports: days.iter().map(|day| day.total.reports).sum(),
            });
            last = first - 1;
        }
        weeks.reverse();
        Figures {
            courts,
            days: day_figures,
            weeks,
            total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(end_reason: EndReason) -> CallRecord {
        CallRecord {
            state: CallState::Ended as i32,
            end_reason: end_reason as i32,
            ..CallRecord::default()
        }
    }

    #[test]
    fn a_call_counts_once_finished() {
        let in_progress = CallRecord {
            state: CallState::InProgress as i32,
            ..CallRecord::default()
        };
        assert_eq!(Tally::of_call(&in_progress), None);
        let hung_up = Tally::of_call(&finished(EndReason::CallerHungUpDuringPrompt)).unwrap();
        assert_eq!(
            (
                hung_up.calls,
                hung_up.hung_up_in_warning,
                hung_up.connected,
                hung_up.answered
            ),
            (1, 1, 0, 0)
        );
        let connected = CallRecord {
            prompt_completed: true,
            prompt_ended_at_ms: 10_000,
            operator_answered_at_ms: 22_000,
            ..finished(EndReason::OperatorHungUp)
        };
        let tally = Tally::of_call(&connected).unwrap();
        assert_eq!(tally.warning_completed, 1);
        assert_eq!(tally.connected, 1);
        assert_eq!((tally.answer_ms_sum, tally.answered), (12_000, 1));
        assert_eq!(tally.answered_within, [0, 0, 1, 1]);
        // Answered, but the warning's end is not on record: connected, no time.
        let untimed = CallRecord {
            prompt_ended_at_ms: 0,
            ..connected
        };
        let tally = Tally::of_call(&untimed).unwrap();
        assert_eq!((tally.connected, tally.answered), (1, 0));
        let interrupted = CallRecord {
            state: CallState::Interrupted as i32,
            ..CallRecord::default()
        };
        assert_eq!(Tally::of_call(&interrupted).unwrap().calls, 1);
        // A synthetic probe tests the line: nobody called the court.
        let probe = CallRecord {
            probe: true,
            ..finished(EndReason::CallerHungUp)
        };
        assert_eq!(Tally::of_call(&probe), None);
    }

    #[test]
    fn tallies_add_and_take_away() {
        let call = Tally::of_call(&CallRecord {
            prompt_ended_at_ms: 1,
            operator_answered_at_ms: 4_001,
            ..finished(EndReason::CallerHungUp)
        })
        .unwrap();
        let mut sum = Tally::flag();
        sum.add(&call, 1);
        sum.add(&call, 1);
        assert_eq!((sum.calls, sum.answer_ms_sum, sum.flags), (2, 8_000, 1));
        assert_eq!(sum.mean_answer_ms(), Some(4_000));
        assert_eq!(sum.percent_of_calls(sum.connected), Some(100.0));
        sum.add(&call, -1);
        sum.add(&call, -1);
        sum.add(&Tally::flag(), -1);
        assert!(sum.is_zero());
        assert_eq!(sum.percent_of_calls(0), None);
        assert_eq!(sum.mean_answer_ms(), None);
    }

    #[test]
    fn rows_become_days_courts_and_weeks() {
        let row = |day, court: &str, calls, flags, reports| DayCourtTally {
            day,
            court_name: court.into(),
            tally: Tally {
                calls,
                flags,
                reports,
                ..Tally::default()
            },
        };
        let rows = [
            row(100, "乙", 5, 1, 0),
            row(100, "甲", 3, 0, 2),
            row(95, "甲", 1, 1, 0),
            // Before the range: ignored, and its court is not listed.
            row(89, "丙", 7, 7, 7),
            row(91, "甲", 2, 0, 1),
        ];
        let figures = Figures::of_rows(&rows, 100, 10);
        assert_eq!(figures.courts, ["乙", "甲"]);
        assert_eq!(figures.days.len(), 10);
        assert_eq!(figures.days[0].day, 91);
        assert_eq!(figures.days[0].calls_per_court, [0, 2]);
        assert_eq!(figures.days[9].calls_per_court, [5, 3]);
        assert_eq!(figures.days[9].total.calls, 8);
        assert_eq!(figures.days[5].total, Tally::default());
        assert_eq!(figures.total.calls, 11);
        // Weeks end with the last day: 94–100, then what is left, 91–93.
        let weeks: Vec<_> = figures
            .weeks
            .iter()
            .map(|week| (week.first_day, week.last_day, week.flags, week.reports))
            .collect();
        assert_eq!(weeks, [(91, 93, 0, 1), (94, 100, 2, 2)]);
        assert_eq!(day_of(DAY_MS * 3 - 1), 2);
        assert_eq!(day_of(-1), -1);
    }
}
