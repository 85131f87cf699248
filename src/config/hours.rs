//! Office hours: when a line is staffed. Weekly hours in the line's own time
//! zone, bent by a holiday calendar: public holidays are days off even on a
//! weekday, and make-up working days (调休) are working days even on a
//! weekend, as the State Council publishes them each year.
//!
//! Everything here is pure: the caller passes the instant, and the time zone
//! is the configured one, never the machine's.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::Deserialize;

/// `[hours.<name>]` as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoursConfig {
    /// IANA time zone the hours are read in (`Asia/Shanghai`).
    pub zone: String,
    /// Open intervals, `"mon-fri 09:00-12:00"`, `"sat 09:00-11:30"`; end may be `24:00`.
    #[serde(default)]
    pub weekly: Vec<String>,
    /// Holiday calendar files (days off and make-up working days), read in order.
    #[serde(default)]
    pub calendars: Vec<String>,
}

/// Why office hours could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoursError {
    /// The zone is not an IANA zone name.
    #[error("unknown time zone {0:?}: use an IANA name such as \"Asia/Shanghai\"")]
    Zone(String),
    /// A weekly entry is malformed.
    #[error("weekly entry {entry:?}: {problem} (write it like \"mon-fri 09:00-12:00\")")]
    Weekly {
        /// The entry as written.
        entry: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A calendar file could not be read.
    #[error("calendar {file}: {problem}")]
    CalendarFile {
        /// The file.
        file: String,
        /// The OS error.
        problem: String,
    },
    /// A calendar line is malformed or contradicts another.
    #[error("calendar {file}, line {line}: {problem} (write `2026-10-01..2026-10-08 off 国庆节` or `2026-09-27 work 国庆节调休`)")]
    CalendarLine {
        /// The file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
}

/// What the calendar says about one date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DayKind {
    /// A public holiday: closed all day.
    Off(String),
    /// A make-up working day (调休): open with the hours of `as_weekday`.
    Work {
        /// Name of the holiday it makes up for.
        name: String,
        /// Whose weekly hours apply (Monday unless the entry says `as fri`).
        as_weekday: Weekday,
    },
}

/// Dates the calendar changes from the weekly rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calendar {
    /// Each listed date and what it is.
    days: BTreeMap<NaiveDate, DayKind>,
}

/// Longest date range one calendar line may cover (a holiday is days, not months).
const MAX_RANGE_DAYS: i64 = 31;

impl Calendar {
    /// Parses calendar text (`file` names it in errors). One entry per line:
    /// a date or an inclusive range `A..B`, `off` or `work`, then the name;
    /// `work` may be followed by `as <weekday>`. `#` starts a comment.
    pub fn parse(&mut self, file: &str, text: &str) -> Result<(), HoursError> {
        for (index, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let problem = |problem: String| HoursError::CalendarLine {
                file: file.to_owned(),
                line: index + 1,
                problem,
            };
            let mut words = line.split_whitespace();
            let dates = words.next().unwrap_or_default();
            let (first, last) = match dates.split_once("..") {
                Some((a, b)) => (date(a).map_err(&problem)?, date(b).map_err(&problem)?),
                None => {
                    let day = date(dates).map_err(&problem)?;
                    (day, day)
                }
            };
            let span = (last - first).num_days();
            if !(0..MAX_RANGE_DAYS).contains(&span) {
                return Err(problem(format!(
                    "the range {dates} must run forwards and cover at most {MAX_RANGE_DAYS} days"
                )));
            }
            let kind = words.next().unwrap_or_default();
            let rest: Vec<&str> = words.collect();
            let entry = match kind {
                "off" => DayKind::Off(rest.join(" ")),
                "work" => {
                    let (as_weekday, name) = match rest.as_slice() {
                        ["as", day, name @ ..] => (weekday(day).map_err(&problem)?, name.join(" ")),
                        name => (Weekday::Mon, name.join(" ")),
                    };
                    DayKind::Work { name, as_weekday }
                }
                other => {
                    return Err(problem(format!(
                        "{other:?} is neither `off` (a holiday) nor `work` (a make-up working day)"
                    )))
                }
            };
            for day in first.iter_days().take(span as usize + 1) {
                if let Some(existing) = self.days.get(&day).filter(|known| **known != entry) {
                    return Err(problem(format!("{day} is already listed as {existing:?}")));
                }
                self.days.insert(day, entry.clone());
            }
        }
        Ok(())
    }

    /// What the calendar says about `day`, if anything.
    pub fn day(&self, day: NaiveDate) -> Option<&DayKind> {
        self.days.get(&day)
    }

    /// The first and last date listed, to warn when the calendar runs out.
    pub fn span(&self) -> Option<(NaiveDate, NaiveDate)> {
        Some((*self.days.keys().next()?, *self.days.keys().next_back()?))
    }
}

/// A line's office hours: weekly intervals in a zone, with a calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfficeHours {
    /// The zone hours are read in.
    zone: Tz,
    /// Open intervals per weekday (Monday first), as minutes of the day, end exclusive.
    weekly: [Vec<(u32, u32)>; 7],
    /// Holidays and make-up working days.
    calendar: Calendar,
}

impl OfficeHours {
    /// Builds the hours from their configuration; calendar paths are read
    /// relative to `base` (the configuration file's directory).
    pub fn load(config: &HoursConfig, base: &Path) -> Result<OfficeHours, HoursError> {
        let mut calendar = Calendar::default();
        for file in &config.calendars {
            let path = base.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| HoursError::CalendarFile {
                file: path.display().to_string(),
                problem: e.to_string(),
            })?;
            calendar.parse(&path.display().to_string(), &text)?;
        }
        OfficeHours::new(&config.zone, &config.weekly, calendar)
    }

    /// Hours from a zone name, weekly entries and a parsed calendar.
    pub fn new(
        zone: &str,
        weekly: &[String],
        calendar: Calendar,
    ) -> Result<OfficeHours, HoursError> {
        let zone: Tz = zone.parse().map_err(|_| HoursError::Zone(zone.into()))?;
        let mut days: [Vec<(u32, u32)>; 7] = Default::default();
        for entry in weekly {
            let problem = |problem: &str| HoursError::Weekly {
                entry: entry.clone(),
                problem: problem.into(),
            };
            let (which, times) = entry
                .trim()
                .split_once(' ')
                .ok_or_else(|| problem("days and times are separated by a space"))?;
            let (from, to) = times
                .trim()
                .split_once('-')
                .ok_or_else(|| problem("the times are HH:MM-HH:MM"))?;
            let (from, to) = (
                minutes(from).ok_or_else(|| problem("the start is not HH:MM"))?,
                minutes(to).ok_or_else(|| problem("the end is not HH:MM (24:00 ends the day)"))?,
            );
            if from >= to {
                return Err(problem("the end must come after the start"));
            }
            let (first, last) = match which.split_once('-') {
                Some((a, b)) => (weekday(a), weekday(b)),
                None => (weekday(which), weekday(which)),
            };
            let (first, last) = (
                first.map_err(|e| problem(&e))?.num_days_from_monday() as usize,
                last.map_err(|e| problem(&e))?.num_days_from_monday() as usize,
            );
            if first > last {
                return Err(problem("days run forwards, Monday to Sunday"));
            }
            for day in &mut days[first..=last] {
                day.push((from, to));
            }
        }
        Ok(OfficeHours {
            zone,
            weekly: days,
            calendar,
        })
    }

    /// Whether the line is staffed at `at`.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.zone);
        let hours_of = match self.calendar.day(local.date_naive()) {
            Some(DayKind::Off(_)) => return false,
            Some(DayKind::Work { as_weekday, .. }) => *as_weekday,
            None => local.weekday(),
        };
        let minute = local.hour() * 60 + local.minute();
        self.weekly[hours_of.num_days_from_monday() as usize]
            .iter()
            .any(|(from, to)| (*from..*to).contains(&minute))
    }

    /// The zone's name, for logs and `courtline check`.
    pub fn zone(&self) -> &str {
        self.zone.name()
    }

    /// The calendar, for `courtline check`'s coverage warning.
    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }
}

fn date(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| format!("{text:?} is not a date (YYYY-MM-DD)"))
}

fn weekday(text: &str) -> Result<Weekday, String> {
    text.trim()
        .parse::<Weekday>()
        .map_err(|_| format!("{text:?} is not a weekday (mon, tue, … sun)"))
}

/// Minutes of the day of `HH:MM`; `24:00` is the end of the day.
fn minutes(text: &str) -> Option<u32> {
    if text.trim() == "24:00" {
        return Some(24 * 60);
    }
    let time = NaiveTime::parse_from_str(text.trim(), "%H:%M").ok()?;
    Some(time.hour() * 60 + time.minute())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// 2026's Spring Festival as published: 15–23 Feb off, Sat 14 and Sat 28 Feb worked.
    const SPRING_2026: &str = "\
# 春节 2026
2026-02-15..2026-02-23 off 春节
2026-02-14 work 春节调休
2026-02-28 work as fri 春节调休   # hours of a Friday
";

    fn office() -> OfficeHours {
        let mut calendar = Calendar::default();
        calendar.parse("cn.txt", SPRING_2026).unwrap();
        OfficeHours::new(
            "Asia/Shanghai",
            &[
                "mon-fri 09:00-12:00".into(),
                "mon-thu 13:30-17:30".into(),
                "fri 13:30-16:00".into(),
            ],
            calendar,
        )
        .unwrap()
    }

    /// An instant given as Shanghai wall-clock time.
    fn shanghai(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        chrono_tz::Asia::Shanghai
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn weekdays_follow_the_weekly_hours_in_the_zone() {
        let hours = office();
        // Tuesday 3 Feb 2026.
        assert!(!hours.is_open(shanghai(2026, 2, 3, 8, 59)));
        assert!(hours.is_open(shanghai(2026, 2, 3, 9, 0)));
        assert!(
            !hours.is_open(shanghai(2026, 2, 3, 12, 0)),
            "end is exclusive"
        );
        assert!(hours.is_open(shanghai(2026, 2, 3, 17, 29)));
        // Friday afternoon is shorter.
        assert!(!hours.is_open(shanghai(2026, 2, 6, 16, 30)));
        // A Sunday without a calendar entry.
        assert!(!hours.is_open(shanghai(2026, 2, 8, 10, 0)));
        // 01:30 UTC is 09:30 in Shanghai: the instant, not the machine's clock, counts.
        assert!(hours.is_open(Utc.with_ymd_and_hms(2026, 2, 3, 1, 30, 0).unwrap()));
    }

    #[test]
    fn holidays_close_and_make_up_days_open_across_the_festival() {
        let hours = office();
        // Saturday 14 Feb: a make-up working day with Monday's hours.
        assert!(hours.is_open(shanghai(2026, 2, 14, 15, 0)));
        // Sunday 15 to Monday 23 Feb: the holiday, weekdays included.
        for day in 15..=23 {
            assert!(
                !hours.is_open(shanghai(2026, 2, day, 10, 0)),
                "2026-02-{day}"
            );
        }
        // Tuesday 24 Feb: back to normal.
        assert!(hours.is_open(shanghai(2026, 2, 24, 10, 0)));
        // Saturday 28 Feb works with a Friday's shorter afternoon.
        assert!(hours.is_open(shanghai(2026, 2, 28, 15, 0)));
        assert!(!hours.is_open(shanghai(2026, 2, 28, 16, 30)));
    }

    #[test]
    fn a_day_can_run_to_midnight() {
        let hours = OfficeHours::new(
            "Asia/Shanghai",
            &["mon-sun 00:00-24:00".into()],
            Calendar::default(),
        )
        .unwrap();
        assert!(hours.is_open(shanghai(2026, 3, 1, 23, 59)));
        assert!(hours.is_open(shanghai(2026, 3, 2, 0, 0)));
    }

    #[test]
    fn mistakes_are_named_with_the_fix() {
        let weekly = |entry: &str| {
            OfficeHours::new("Asia/Shanghai", &[entry.into()], Calendar::default()).unwrap_err()
        };
        for (entry, problem) in [
            ("mon-fri", "separated by a space"),
            ("mon-fri 9-12", "HH:MM"),
            ("mon-fri 12:00-09:00", "after the start"),
            ("fri-mon 09:00-12:00", "run forwards"),
            ("weekdays 09:00-12:00", "not a weekday"),
        ] {
            let error = weekly(entry).to_string();
            assert!(
                error.contains(problem) && error.contains("mon-fri 09:00-12:00"),
                "{error}"
            );
        }
        assert_eq!(
            OfficeHours::new("Shanghai", &[], Calendar::default()),
            Err(HoursError::Zone("Shanghai".into()))
        );
        let calendar = |text: &str| {
            Calendar::default()
                .parse("cn.txt", text)
                .unwrap_err()
                .to_string()
        };
        assert!(calendar("2026-02-30 off x").contains("line 1"));
        assert!(calendar("\n2026-02-20..2026-02-10 off x").contains("line 2"));
        assert!(calendar("2026-01-01 holiday 元旦").contains("neither `off`"));
        assert!(calendar("2026-01-01 off 元旦\n2026-01-01 work 调休").contains("already listed"));
        assert!(calendar("2026-01-04 work as someday 调休").contains("not a weekday"));
    }

    #[test]
    fn the_shipped_calendars_parse_and_cover_their_years() {
        for (file, year) in [("cn-2026.txt", 2026), ("cn-2027.txt", 2027)] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config/calendars")
                .join(file);
            let mut calendar = Calendar::default();
            calendar
                .parse(file, &std::fs::read_to_string(&path).unwrap())
                .unwrap();
            let (first, last) = calendar.span().unwrap();
            assert_eq!((first.year(), last.year()), (year, year), "{file}");
            // National Day is a holiday every year.
            assert_eq!(
                calendar
                    .day(NaiveDate::from_ymd_opt(year, 10, 2).unwrap())
                    .map(|d| matches!(d, DayKind::Off(_))),
                Some(true),
                "{file}"
            );
        }
    }
}
