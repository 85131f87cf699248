//! The calls search form: its fields as the browser sends them, turned into the
//! `ListCalls` filter (every filter the gRPC call has), and back into a query
//! string for the next page and the export link.

use chrono::{DateTime, Datelike, Duration, Local, NaiveTime, TimeZone};
use serde::{Deserialize, Serialize};

use crate::contract::pb::{CallFilter, Choice};
use crate::records::query::{parse_end_reason, parse_time};

/// The search form's fields (all text, as a form sends them; empty = not set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct CallsForm {
    /// Preset time range: `today`, `7d`, `month`, or empty for `since`/`until`.
    pub range: String,
    /// Start, `YYYY-MM-DDTHH:MM` local time (the `datetime-local` input).
    pub since: String,
    /// End, exclusive.
    pub until: String,
    /// Court name, exact.
    pub court: String,
    /// Line number, exact.
    pub line: String,
    /// Caller number prefix (or the exact number with `caller_exact`).
    pub caller: String,
    /// `on` when `caller` is the exact number.
    pub caller_exact: String,
    /// Part of the caller's display name (Chinese works).
    pub name: String,
    /// End reason name (`caller_hung_up`), empty for any.
    pub end_reason: String,
    /// Heard the whole warning: `yes`, `no` or empty.
    pub warning: String,
    /// Reached an operator.
    pub connected: String,
    /// Flagged.
    pub flagged: String,
    /// A "three rules" report was opened on the call.
    pub has_report: String,
    /// The call's recording is kept (can be played).
    pub has_recording: String,
    /// A synthetic probe call (`courtline probe`): `yes` to see only probes, `no` to hide them.
    pub probe: String,
    /// Cursor of the page to show (from the previous page's link).
    pub page: String,
}

/// The time-range presets offered beside the explicit range.
pub const RANGES: [&str; 3] = ["today", "7d", "month"];
/// The tri-state choices of the yes/no filters.
pub const CHOICES: [&str; 2] = ["yes", "no"];

impl CallsForm {
    /// The `ListCalls` filter; `Err` names the field and what is wrong with it
    /// (as a translation key and the value).
    pub fn filter(&self, now: DateTime<Local>) -> Result<CallFilter, (&'static str, String)> {
        let mut filter = CallFilter::default();
        match self.range.as_str() {
            "" => {
                for (field, text, target) in [
                    ("error-since", &self.since, &mut filter.since_ms),
                    ("error-until", &self.until, &mut filter.until_ms),
                ] {
                    if !text.trim().is_empty() {
                        *target = parse_time(text).map_err(|_| (field, text.clone()))?;
                    }
                }
            }
            preset => {
                let (since, until) =
                    preset_range(preset, now).ok_or(("error-range", preset.to_owned()))?;
                filter.since_ms = since;
                filter.until_ms = until;
            }
        }
        filter.court_name = self.court.trim().to_owned();
        filter.line_number = self.line.trim().to_owned();
        filter.caller_prefix = self.caller.trim().to_owned();
        filter.caller_exact = self.caller_exact == "on" && !filter.caller_prefix.is_empty();
        filter.caller_name_contains = self.name.trim().to_owned();
        if !self.end_reason.is_empty() {
            let reason = parse_end_reason(&self.end_reason)
                .ok_or(("error-end-reason", self.end_reason.clone()))?;
            filter.end_reason = reason as i32;
        }
        for (field, text, target) in [
            ("error-choice", &self.warning, &mut filter.prompt_completed),
            ("error-choice", &self.connected, &mut filter.connected),
            ("error-choice", &self.flagged, &mut filter.flagged),
            ("error-choice", &self.has_report, &mut filter.has_report),
            (
                "error-choice",
                &self.has_recording,
                &mut filter.has_recording,
            ),
            ("error-choice", &self.probe, &mut filter.probe),
        ] {
            *target = match text.as_str() {
                "" => Choice::Any,
                "yes" => Choice::Yes,
                "no" => Choice::No,
                other => return Err((field, other.to_owned())),
            } as i32;
        }
        Ok(filter)
    }

    /// The form as a query string, without the page cursor (for the export link and
    /// page links, which add their own).
    pub fn query(&self) -> String {
        serde_urlencoded::to_string(self.fields()).unwrap_or_default()
    }

    /// The fields that are set, without the page cursor, as (name, value): what the
    /// export form carries along as hidden fields.
    pub fn fields(&self) -> Vec<(String, String)> {
        let search = CallsForm {
            page: String::new(),
            ..self.clone()
        };
        serde_urlencoded::to_string(&search)
            .ok()
            .and_then(|query| serde_urlencoded::from_str::<Vec<(String, String)>>(&query).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .collect()
    }
}

/// `[since, until)` in Unix ms of a preset range in local time: today, the last 7
/// days (today and the 6 before), or this calendar month; both ends day boundaries.
pub fn preset_range(preset: &str, now: DateTime<Local>) -> Option<(i64, i64)> {
    let today = now.date_naive();
    let first = match preset {
        "today" => today,
        "7d" => today - Duration::days(6),
        "month" => today.with_day(1)?,
        _ => return None,
    };
    let midnight = |date: chrono::NaiveDate| {
        Local
            .from_local_datetime(&date.and_time(NaiveTime::MIN))
            .earliest()
            .map(|time| time.timestamp_millis())
    };
    Some((midnight(first)?, midnight(today + Duration::days(1))?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::pb::EndReason;

    fn noon() -> DateTime<Local> {
        Local.with_ymd_and_hms(2026, 3, 18, 12, 0, 0).unwrap()
    }

    fn ms(y: i32, m: u32, d: u32) -> i64 {
        Local
            .with_ymd_and_hms(y, m, d, 0, 0, 0)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn presets_cover_whole_local_days() {
        assert_eq!(
            preset_range("today", noon()),
            Some((ms(2026, 3, 18), ms(2026, 3, 19)))
        );
        assert_eq!(
            preset_range("7d", noon()),
            Some((ms(2026, 3, 12), ms(2026, 3, 19)))
        );
        assert_eq!(
            preset_range("month", noon()),
            Some((ms(2026, 3, 1), ms(2026, 3, 19)))
        );
        assert_eq!(preset_range("year", noon()), None);
    }

    #[test]
    fn every_field_reaches_the_filter() {
        let form = CallsForm {
            since: "2026-03-01T08:30".into(),
            until: "2026-03-02".into(),
            court: " 上海市高级人民法院 ".into(),
            line: "12368".into(),
            caller: "139".into(),
            caller_exact: "on".into(),
            name: "王五".into(),
            end_reason: "caller_hung_up".into(),
            warning: "yes".into(),
            connected: "no".into(),
            flagged: "yes".into(),
            has_report: "yes".into(),
            has_recording: "no".into(),
            probe: "yes".into(),
            ..CallsForm::default()
        };
        let filter = form.filter(noon()).unwrap();
        assert_eq!(
            filter.since_ms,
            ms(2026, 3, 1) + 8 * 3_600_000 + 30 * 60_000
        );
        assert_eq!(filter.until_ms, ms(2026, 3, 2));
        assert_eq!(filter.court_name, "上海市高级人民法院");
        assert_eq!(filter.line_number, "12368");
        assert_eq!(filter.caller_prefix, "139");
        assert!(filter.caller_exact);
        assert_eq!(filter.caller_name_contains, "王五");
        assert_eq!(filter.end_reason(), EndReason::CallerHungUp);
        assert_eq!(filter.prompt_completed(), Choice::Yes);
        assert_eq!(filter.connected(), Choice::No);
        assert_eq!(filter.flagged(), Choice::Yes);
        assert_eq!(filter.has_report(), Choice::Yes);
        assert_eq!(filter.has_recording(), Choice::No);
        assert_eq!(filter.probe(), Choice::Yes);
        assert_eq!(
            CallsForm::default().filter(noon()).unwrap(),
            CallFilter::default()
        );
    }

    #[test]
    fn a_preset_overrides_the_explicit_range() {
        let form = CallsForm {
            range: "today".into(),
            since: "not a time".into(),
            ..CallsForm::default()
        };
        assert_eq!(form.filter(noon()).unwrap().since_ms, ms(2026, 3, 18));
    }

    #[test]
    fn bad_fields_are_named_with_their_value() {
        let bad = |form: CallsForm| form.filter(noon()).unwrap_err();
        assert_eq!(
            bad(CallsForm {
                since: "yesterday".into(),
                ..CallsForm::default()
            }),
            ("error-since", "yesterday".to_owned())
        );
        assert_eq!(
            bad(CallsForm {
                end_reason: "hung".into(),
                ..CallsForm::default()
            })
            .0,
            "error-end-reason"
        );
        assert_eq!(
            bad(CallsForm {
                flagged: "maybe".into(),
                ..CallsForm::default()
            })
            .0,
            "error-choice"
        );
    }

    #[test]
    fn the_query_string_round_trips_without_cursor() {
        let form = CallsForm {
            name: "王五（律师）".into(),
            caller: "+86 139".into(),
            page: "cursor".into(),
            ..CallsForm::default()
        };
        let query = form.query();
        assert!(
            !query.contains("cursor") && !query.contains("court="),
            "{query}"
        );
        let back: CallsForm = serde_urlencoded::from_str(&query).unwrap();
        assert_eq!(back.name, "王五（律师）");
        assert_eq!(back.caller, "+86 139");
        assert!(back.page.is_empty());
        assert_eq!(
            form.fields(),
            vec![
                ("caller".to_owned(), "+86 139".to_owned()),
                ("name".to_owned(), "王五（律师）".to_owned())
            ]
        );
    }
}
