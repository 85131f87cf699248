//! The report form and the reports search as the browser sends them: the
//! registration form's fields (all text) turned into a `ReportForm` and back, and
//! the reports search into the `ListReports` filter and back into a query string.

use chrono::{Local, TimeZone};
use serde::{Deserialize, Serialize};

use crate::contract::pb::{ReportFilter, ReportForm, ReportHandling, ReportKind, ReportStatus};
use crate::records::query::parse_time;
use crate::records::reports::workflow::{
    handling_name, kind_name, parse_handling, parse_kind, parse_status, status_name,
};

/// The kinds of interference, in the form's order.
pub const KINDS: [ReportKind; 5] = [
    ReportKind::Inquiry,
    ReportKind::Interference,
    ReportKind::Intercession,
    ReportKind::Probing,
    ReportKind::Other,
];
/// The ways of handling a request, in the form's order.
pub const HANDLINGS: [ReportHandling; 3] = [
    ReportHandling::Refused,
    ReportHandling::ExplainedRules,
    ReportHandling::Escalated,
];
/// The workflow's states, in order.
pub const STATUSES: [ReportStatus; 3] = [
    ReportStatus::Draft,
    ReportStatus::Submitted,
    ReportStatus::Reviewed,
];

/// The registration form's fields as the browser sends them (all text; empty =
/// not filled in). Kept as typed when the service refuses a change, so nothing
/// typed is lost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct ReportFields {
    /// The staff member who took the call.
    pub staff_name: String,
    /// Their staff id (工号).
    pub staff_id: String,
    /// When it happened, `YYYY-MM-DDTHH:MM` local (`datetime-local`); empty = the call's time.
    pub occurred_at: String,
    /// The caller's name as stated.
    pub caller_name: String,
    /// The caller's organisation (单位).
    pub caller_organisation: String,
    /// The caller's relationship to the case.
    pub caller_relationship: String,
    /// The caller's phone as stated.
    pub caller_phone: String,
    /// Case numbers, one per line.
    pub case_numbers: String,
    /// Kind name (`inquiry`, …), empty when not chosen yet.
    pub kind: String,
    /// What was asked for (请托事项).
    pub asked: String,
    /// Handling name (`refused`, …), empty when not chosen yet.
    pub handling: String,
    /// How it was handled, in the staff member's words.
    pub handling_note: String,
}

impl ReportFields {
    /// The fields of a stored form.
    pub fn from_form(form: &ReportForm) -> ReportFields {
        ReportFields {
            staff_name: form.staff_name.clone(),
            staff_id: form.staff_id.clone(),
            occurred_at: local_input_time(form.occurred_at_ms),
            caller_name: form.caller_name.clone(),
            caller_organisation: form.caller_organisation.clone(),
            caller_relationship: form.caller_relationship.clone(),
            caller_phone: form.caller_phone.clone(),
            case_numbers: form.case_numbers.join("\n"),
            kind: kind_name(form.kind()).to_owned(),
            asked: form.asked.clone(),
            handling: handling_name(form.handling()).to_owned(),
            handling_note: form.handling_note.clone(),
        }
    }

    /// The form to store; `Err` names the field (a translation key) and its value.
    /// Lengths and the loose case-number check are the service's.
    pub fn to_form(&self) -> Result<ReportForm, (&'static str, String)> {
        let occurred_at_ms = match self.occurred_at.trim() {
            "" => 0,
            text => parse_time(text).map_err(|_| ("error-occurred-at", text.to_owned()))?,
        };
        let kind = match self.kind.trim() {
            "" => ReportKind::Unspecified,
            text => parse_kind(text).ok_or(("error-kind", text.to_owned()))?,
        };
        let handling = match self.handling.trim() {
            "" => ReportHandling::Unspecified,
            text => parse_handling(text).ok_or(("error-handling", text.to_owned()))?,
        };
        Ok(ReportForm {
            staff_name: self.staff_name.trim().to_owned(),
            staff_id: self.staff_id.trim().to_owned(),
            occurred_at_ms,
            caller_name: self.caller_name.trim().to_owned(),
            caller_organisation: self.caller_organisation.trim().to_owned(),
            caller_relationship: self.caller_relationship.trim().to_owned(),
            caller_phone: self.caller_phone.trim().to_owned(),
            case_numbers: self
                .case_numbers
                .lines()
                .map(str::trim)
                .filter(|number| !number.is_empty())
                .map(str::to_owned)
                .collect(),
            kind: kind as i32,
            asked: self.asked.trim().to_owned(),
            handling: handling as i32,
            handling_note: self.handling_note.trim().to_owned(),
        })
    }
}

/// Unix ms as the `datetime-local` input shows it; empty for 0.
fn local_input_time(ms: i64) -> String {
    if ms == 0 {
        return String::new();
    }
    Local
        .timestamp_millis_opt(ms)
        .earliest()
        .map(|time| time.format("%Y-%m-%dT%H:%M").to_string())
        .unwrap_or_default()
}

/// The reports search's fields (all text, as a form sends them; empty = not set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct ReportsSearch {
    /// Opened at or after, `YYYY-MM-DDTHH:MM` local.
    pub since: String,
    /// Opened before.
    pub until: String,
    /// Court name, exact.
    pub court: String,
    /// Line number, exact.
    pub line: String,
    /// Kind name, empty for any.
    pub kind: String,
    /// Status name, empty for any.
    pub status: String,
    /// Staff name, staff id or opener.
    pub staff: String,
    /// Part of a case number.
    pub case_number: String,
    /// Cursor of the page to show.
    pub page: String,
}

impl ReportsSearch {
    /// The `ListReports` filter; `Err` names the field (a translation key) and its value.
    pub fn filter(&self) -> Result<ReportFilter, (&'static str, String)> {
        let mut filter = ReportFilter::default();
        for (field, text, target) in [
            ("error-since", &self.since, &mut filter.since_ms),
            ("error-until", &self.until, &mut filter.until_ms),
        ] {
            if !text.trim().is_empty() {
                *target = parse_time(text).map_err(|_| (field, text.clone()))?;
            }
        }
        filter.court_name = self.court.trim().to_owned();
        filter.line_number = self.line.trim().to_owned();
        filter.staff = self.staff.trim().to_owned();
        filter.case_number_contains = self.case_number.trim().to_owned();
        if !self.kind.is_empty() {
            filter.kind = parse_kind(&self.kind).ok_or(("error-kind", self.kind.clone()))? as i32;
        }
        if !self.status.is_empty() {
            filter.status =
                parse_status(&self.status).ok_or(("error-status", self.status.clone()))? as i32;
        }
        Ok(filter)
    }

    /// The search as a query string without the page cursor (page links add their own).
    pub fn query(&self) -> String {
        let search = ReportsSearch {
            page: String::new(),
            ..self.clone()
        };
        serde_urlencoded::to_string(&search).unwrap_or_default()
    }
}

/// The names of [`KINDS`], [`HANDLINGS`] and [`STATUSES`], as the forms' options use them.
pub fn option_names() -> ([&'static str; 5], [&'static str; 3], [&'static str; 3]) {
    (
        KINDS.map(kind_name),
        HANDLINGS.map(handling_name),
        STATUSES.map(status_name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed() -> ReportFields {
        ReportFields {
            staff_name: " 李娜 ".into(),
            staff_id: "op-li".into(),
            occurred_at: "2026-03-18T09:30".into(),
            caller_name: "王某".into(),
            caller_organisation: "某区人大办公室".into(),
            caller_relationship: "被告亲属".into(),
            caller_phone: "13900000001".into(),
            case_numbers: "(2024)沪01民初123号\r\n\n 上周那个案子 \n".into(),
            kind: "intercession".into(),
            asked: "请法官\"多关照\"被告".into(),
            handling: "explained_rules".into(),
            handling_note: "告知其\"三个规定\"".into(),
        }
    }

    #[test]
    fn typed_fields_become_the_form_and_come_back() {
        let form = typed().to_form().unwrap();
        assert_eq!(form.staff_name, "李娜");
        assert_eq!(
            form.case_numbers,
            vec!["(2024)沪01民初123号".to_owned(), "上周那个案子".to_owned()]
        );
        assert_eq!(form.kind(), ReportKind::Intercession);
        assert_eq!(form.handling(), ReportHandling::ExplainedRules);
        assert_eq!(form.occurred_at_ms, parse_time("2026-03-18T09:30").unwrap());
        let back = ReportFields::from_form(&form);
        assert_eq!(back.occurred_at, "2026-03-18T09:30");
        assert_eq!(back.case_numbers, "(2024)沪01民初123号\n上周那个案子");
        assert_eq!(back.to_form().unwrap(), form);
    }

    #[test]
    fn an_empty_form_is_a_draft_with_nothing_chosen() {
        let form = ReportFields::default().to_form().unwrap();
        assert_eq!(form, ReportForm::default());
        assert_eq!(ReportFields::from_form(&form), ReportFields::default());
    }

    #[test]
    fn unknown_choices_and_times_are_named() {
        let bad = |fields: ReportFields| fields.to_form().unwrap_err();
        assert_eq!(
            bad(ReportFields {
                kind: "bribe".into(),
                ..typed()
            }),
            ("error-kind", "bribe".to_owned())
        );
        assert_eq!(
            bad(ReportFields {
                handling: "ignored".into(),
                ..typed()
            })
            .0,
            "error-handling"
        );
        assert_eq!(
            bad(ReportFields {
                occurred_at: "昨天".into(),
                ..typed()
            }),
            ("error-occurred-at", "昨天".to_owned())
        );
    }

    #[test]
    fn the_search_reaches_the_filter_and_round_trips() {
        let search = ReportsSearch {
            since: "2026-03-01".into(),
            court: "上海市高级人民法院".into(),
            kind: "probing".into(),
            status: "submitted".into(),
            staff: "1001".into(),
            case_number: "沪01".into(),
            page: "cursor".into(),
            ..ReportsSearch::default()
        };
        let filter = search.filter().unwrap();
        assert_eq!(filter.since_ms, parse_time("2026-03-01").unwrap());
        assert_eq!(filter.kind(), ReportKind::Probing);
        assert_eq!(filter.status(), ReportStatus::Submitted);
        assert_eq!(filter.staff, "1001");
        assert_eq!(filter.case_number_contains, "沪01");
        let query = search.query();
        assert!(!query.contains("cursor"), "{query}");
        let back: ReportsSearch = serde_urlencoded::from_str(&query).unwrap();
        assert_eq!(
            back,
            ReportsSearch {
                page: String::new(),
                ..search
            }
        );
        assert_eq!(
            ReportsSearch {
                status: "lost".into(),
                ..ReportsSearch::default()
            }
            .filter()
            .unwrap_err()
            .0,
            "error-status"
        );
        assert_eq!(
            ReportsSearch::default().filter().unwrap(),
            ReportFilter::default()
        );
    }
}
