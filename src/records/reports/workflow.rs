//! The report workflow as a pure state machine: `draft → submitted → reviewed`.
//!
//! [`next_version`] takes the report as it stands (or nothing, to open one), the
//! actor and the [`Action`], and returns the next version or why not. Every change
//! is a new version (the ledger chains it); nothing is edited in place. The rules:
//!
//! | action | who | from |
//! | --- | --- | --- |
//! | open | operator, compliance, the switchboard's key sequence | — |
//! | update | the report's owner | draft |
//! | submit | the report's owner, with the form complete | draft |
//! | review | compliance, not the report's owner | submitted |
//! | read | the owner; compliance and auditors: all | any |
//!
//! The owner is whoever opened it; for a report opened by keys, also the user
//! part of the operator's SIP URI (`sip:1001@pbx` → `1001`); and the staff id on
//! the form. Form checks are loose where courts are loose: a case number that does
//! not look like `(2024)沪01民初123号` is a warning, never a refusal.

use crate::contract::pb::{
    Report, ReportForm, ReportHandling, ReportKind, ReportOpenedVia, ReportStatus, Role,
};

/// Longest free-text field, in characters: a form, not a document store.
pub const MAX_TEXT_CHARS: usize = 4000;
/// Most case numbers on one report.
pub const MAX_CASE_NUMBERS: usize = 20;

/// Who is acting: the authenticated name and the role it acts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Token name, `cert:` identity, or the operator URI for keys.
    pub name: String,
    /// The role the request was let in with (the switchboard for keys).
    pub role: Role,
}

/// What someone wants to do to a report.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Open a report on a call.
    Open {
        /// New report id.
        report_id: String,
        /// The call.
        call_id: String,
        /// Keys, console or CLI.
        via: ReportOpenedVia,
        /// For keys: "rfc4733" or "sip_info".
        keys_via: String,
        /// First fill of the form (may be empty).
        form: ReportForm,
        /// The call's court and line, for filtering.
        court_name: String,
        /// The call's line.
        line_number: String,
        /// The operator who took the call (its record's `operator_uri`): an
        /// operator may report only calls it took.
        call_operator: String,
    },
    /// Replace the form (a new version).
    Update(ReportForm),
    /// Hand it in for review.
    Submit,
    /// Review it with a conclusion.
    Review {
        /// The reviewer's conclusion (审核意见).
        conclusion: String,
    },
}

impl Action {
    /// The name stored with the chained version.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Open { .. } => "opened",
            Action::Update(_) => "updated",
            Action::Submit => "submitted",
            Action::Review { .. } => "reviewed",
        }
    }
}

/// Why an action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The actor's role or ownership does not allow it.
    #[error("{0}")]
    NotAllowed(String),
    /// The report is not in a state that allows it.
    #[error("{0}")]
    WrongState(String),
    /// The form or the request is incomplete or malformed.
    #[error("{0}")]
    Invalid(String),
}

/// The names that own `report` (see the module doc).
pub fn owners(report: &Report) -> Vec<String> {
    let mut names = vec![report.opened_by.clone()];
    if let Some(user) = sip_user(&report.opened_by) {
        names.push(user.to_owned());
    }
    if let Some(form) = &report.form {
        if !form.staff_id.trim().is_empty() {
            names.push(form.staff_id.trim().to_owned());
        }
    }
    names
}

/// Whether `name` owns `report`.
pub fn is_owner(report: &Report, name: &str) -> bool {
    !name.is_empty() && owners(report).iter().any(|owner| owner == name)
}

/// The user part of a SIP URI (`sip:1001@pbx;transport=tcp` → `1001`).
fn sip_user(uri: &str) -> Option<&str> {
    let rest = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))?;
    let user = rest.split('@').next()?;
    (rest.contains('@') && !user.is_empty()).then_some(user)
}

/// Whether `actor` may read `report`.
pub fn may_read(report: &Report, actor: &Actor) -> bool {
    match actor.role {
        Role::Compliance | Role::Auditor => true,
        Role::Operator => is_owner(report, &actor.name),
        _ => false,
    }
}

/// The next version of `current` after `action` by `actor` at `at_ms`.
pub fn next_version(
    current: Option<&Report>,
    action: Action,
    actor: &Actor,
    at_ms: i64,
) -> Result<Report, Refusal> {
    let name = action.name();
    let Some(current) = current else {
        let Action::Open {
            report_id,
            call_id,
            via,
            keys_via,
            form,
            court_name,
            line_number,
            call_operator,
        } = action
        else {
            return Err(Refusal::Invalid(format!(
                "a report must be opened before it can be {name}"
            )));
        };
        let allowed = match via {
            ReportOpenedVia::Keys => actor.role == Role::Switchboard,
            ReportOpenedVia::Console | ReportOpenedVia::Cli => {
                matches!(actor.role, Role::Operator | Role::Compliance)
            }
            ReportOpenedVia::Unspecified => false,
        };
        if !allowed {
            return Err(Refusal::NotAllowed(format!(
                "{} (role {}) may not open a report via {}",
                actor.name,
                role_label(actor.role),
                via.as_str_name()
            )));
        }
        // Opening a report makes its opener an owner, and owners read the call: an
        // operator who could open one on any call could read any call.
        let took_the_call = actor.name == call_operator
            || sip_user(&call_operator).is_some_and(|user| user == actor.name);
        if actor.role == Role::Operator && !took_the_call {
            return Err(Refusal::NotAllowed(format!(
                "{} may report only calls it took as the operator",
                actor.name
            )));
        }
        check_form(&form).map_err(Refusal::Invalid)?;
        return Ok(Report {
            report_id,
            call_id,
            version: 1,
            status: ReportStatus::Draft as i32,
            opened_by: actor.name.clone(),
            opened_via: via as i32,
            opened_at_ms: at_ms,
            keys_via,
            form: Some(form),
            changed_by: actor.name.clone(),
            changed_at_ms: at_ms,
            court_name,
            line_number,
            ..Report::default()
        });
    };
    let owner = is_owner(current, &actor.name);
    let status = current.status();
    let mut next = Report {
        version: current.version + 1,
        changed_by: actor.name.clone(),
        changed_at_ms: at_ms,
        ..current.clone()
    };
    match action {
        Action::Open { .. } => {
            return Err(Refusal::Invalid(format!(
                "report {} is open already",
                current.report_id
            )))
        }
        Action::Update(form) => {
            owner_in_draft(current, actor, owner, status, name)?;
            check_form(&form).map_err(Refusal::Invalid)?;
            next.form = Some(form);
        }
        Action::Submit => {
            owner_in_draft(current, actor, owner, status, name)?;
            let missing =
                missing_for_submit(current.form.as_ref().unwrap_or(&ReportForm::default()));
            if !missing.is_empty() {
                return Err(Refusal::Invalid(format!(
                    "report {} cannot be submitted yet: fill in {}",
                    current.report_id,
                    missing.join(", ")
                )));
            }
            next.status = ReportStatus::Submitted as i32;
            next.submitted_by = actor.name.clone();
            next.submitted_at_ms = at_ms;
        }
        Action::Review { conclusion } => {
            if actor.role != Role::Compliance {
                return Err(Refusal::NotAllowed(format!(
                    "only compliance staff review reports; {} has role {}",
                    actor.name,
                    role_label(actor.role)
                )));
            }
            if owner || current.submitted_by == actor.name {
                return Err(Refusal::NotAllowed(format!(
                    "{} wrote report {}: someone else must review it",
                    actor.name, current.report_id
                )));
            }
            if status != ReportStatus::Submitted {
                return Err(Refusal::WrongState(format!(
                    "report {} is {}: only a submitted report can be reviewed",
                    current.report_id,
                    status_name(status)
                )));
            }
            let conclusion = conclusion.trim();
            if conclusion.is_empty() {
                return Err(Refusal::Invalid(
                    "a review needs a conclusion (审核意见)".into(),
                ));
            }
            check_text("conclusion", conclusion).map_err(Refusal::Invalid)?;
            next.status = ReportStatus::Reviewed as i32;
            next.reviewed_by = actor.name.clone();
            next.reviewed_at_ms = at_ms;
            next.review_conclusion = conclusion.to_owned();
        }
    }
    Ok(next)
}

/// Refuses unless `actor` owns the report (operator or compliance) and it is a draft.
fn owner_in_draft(
    current: &Report,
    actor: &Actor,
    owner: bool,
    status: ReportStatus,
    action: &str,
) -> Result<(), Refusal> {
    if !matches!(actor.role, Role::Operator | Role::Compliance) || !owner {
        return Err(Refusal::NotAllowed(format!(
            "report {} is {}'s: only its owner may have it {action}",
            current.report_id, current.opened_by
        )));
    }
    if status != ReportStatus::Draft {
        return Err(Refusal::WrongState(format!(
            "report {} is {}: only a draft can be {action}",
            current.report_id,
            status_name(status)
        )));
    }
    Ok(())
}

/// The form's hard limits: lengths, enum numbers. Errors name the field.
pub fn check_form(form: &ReportForm) -> Result<(), String> {
    for (field, text) in [
        ("staff_name", &form.staff_name),
        ("staff_id", &form.staff_id),
        ("caller_name", &form.caller_name),
        ("caller_organisation", &form.caller_organisation),
        ("caller_relationship", &form.caller_relationship),
        ("caller_phone", &form.caller_phone),
        ("asked", &form.asked),
        ("handling_note", &form.handling_note),
    ] {
        check_text(field, text)?;
    }
    if form.case_numbers.len() > MAX_CASE_NUMBERS {
        return Err(format!(
            "at most {MAX_CASE_NUMBERS} case numbers per report ({} given)",
            form.case_numbers.len()
        ));
    }
    for number in &form.case_numbers {
        check_text("case_numbers", number)?;
    }
    if ReportKind::try_from(form.kind).is_err() {
        return Err(format!("unknown kind {}", form.kind));
    }
    if ReportHandling::try_from(form.handling).is_err() {
        return Err(format!("unknown handling {}", form.handling));
    }
    if form.occurred_at_ms < 0 {
        return Err("occurred_at_ms is before 1970".into());
    }
    Ok(())
}

fn check_text(field: &str, text: &str) -> Result<(), String> {
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(format!(
            "{field} is longer than {MAX_TEXT_CHARS} characters"
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(format!("{field} holds control characters"));
    }
    Ok(())
}

/// The fields a report must have before it is submitted, by name.
pub fn missing_for_submit(form: &ReportForm) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if form.staff_name.trim().is_empty() {
        missing.push("staff_name");
    }
    if form.kind == ReportKind::Unspecified as i32 {
        missing.push("kind");
    }
    if form.asked.trim().is_empty() {
        missing.push("asked");
    }
    if form.handling == ReportHandling::Unspecified as i32 && form.handling_note.trim().is_empty() {
        missing.push("handling");
    }
    missing
}

/// What the loose checks notice about a form: stored anyway, shown to the writer.
pub fn warnings(form: &ReportForm) -> Vec<String> {
    let mut warnings: Vec<String> = form
        .case_numbers
        .iter()
        .filter(|number| !looks_like_case_number(number))
        .map(|number| format!("case number {number:?} does not look like \"(2024)沪01民初123号\""))
        .collect();
    let phone = form.caller_phone.trim();
    if !phone.is_empty()
        && !phone
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | ' ' | '(' | ')'))
    {
        warnings.push(format!("caller phone {phone:?} holds more than digits"));
    }
    warnings
}

/// Whether `text` has the shape of a Chinese court case number: a four-digit year
/// in ASCII or full-width brackets, then letters (court, case type: Han characters,
/// letters, digits), then a sequence number and `号`.
pub fn looks_like_case_number(text: &str) -> bool {
    let text = text.trim();
    let Some(rest) = text
        .strip_prefix('(')
        .or_else(|| text.strip_prefix('（'))
        .or_else(|| text.strip_prefix('〔'))
    else {
        return false;
    };
    let year: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if year.len() != 4 {
        return false;
    }
    let rest = &rest[4..];
    let Some(rest) = rest
        .strip_prefix(')')
        .or_else(|| rest.strip_prefix('）'))
        .or_else(|| rest.strip_prefix('〕'))
    else {
        return false;
    };
    let Some(body) = rest.strip_suffix('号') else {
        return false;
    };
    let digits = body.chars().rev().take_while(char::is_ascii_digit).count();
    let letters = body.chars().count() - digits;
    digits > 0
        && letters > 0
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || is_han(c) || c == '-')
}

fn is_han(c: char) -> bool {
    matches!(c, '\u{4e00}'..='\u{9fff}' | '\u{3400}'..='\u{4dbf}')
}

/// The lower-case name of a status (`draft`, `submitted`, `reviewed`).
pub fn status_name(status: ReportStatus) -> &'static str {
    match status {
        ReportStatus::Unspecified => "none",
        ReportStatus::Draft => "draft",
        ReportStatus::Submitted => "submitted",
        ReportStatus::Reviewed => "reviewed",
    }
}

/// The lower-case name of a kind, as typed on the command line.
pub fn kind_name(kind: ReportKind) -> &'static str {
    match kind {
        ReportKind::Unspecified => "",
        ReportKind::Inquiry => "inquiry",
        ReportKind::Interference => "interference",
        ReportKind::Intercession => "intercession",
        ReportKind::Probing => "probing",
        ReportKind::Other => "other",
    }
}

/// The form's Chinese name of a kind.
pub fn kind_label_zh(kind: ReportKind) -> &'static str {
    match kind {
        ReportKind::Unspecified => "",
        ReportKind::Inquiry => "违规过问",
        ReportKind::Interference => "干预插手",
        ReportKind::Intercession => "说情打招呼",
        ReportKind::Probing => "打探案情",
        ReportKind::Other => "其他",
    }
}

/// The lower-case name of a handling.
pub fn handling_name(handling: ReportHandling) -> &'static str {
    match handling {
        ReportHandling::Unspecified => "",
        ReportHandling::Refused => "refused",
        ReportHandling::ExplainedRules => "explained_rules",
        ReportHandling::Escalated => "escalated",
    }
}

/// The lower-case name of where a report was opened.
pub fn opened_via_name(via: ReportOpenedVia) -> &'static str {
    match via {
        ReportOpenedVia::Unspecified => "",
        ReportOpenedVia::Keys => "keys",
        ReportOpenedVia::Console => "console",
        ReportOpenedVia::Cli => "cli",
    }
}

/// Parses a kind name (`inquiry`, …; `-` for `_`, any case).
pub fn parse_kind(text: &str) -> Option<ReportKind> {
    let text = text.trim().to_ascii_lowercase().replace('-', "_");
    [
        ReportKind::Inquiry,
        ReportKind::Interference,
        ReportKind::Intercession,
        ReportKind::Probing,
        ReportKind::Other,
    ]
    .into_iter()
    .find(|kind| kind_name(*kind) == text || kind_label_zh(*kind) == text)
}

/// Parses a handling name.
pub fn parse_handling(text: &str) -> Option<ReportHandling> {
    let text = text.trim().to_ascii_lowercase().replace('-', "_");
    [
        ReportHandling::Refused,
        ReportHandling::ExplainedRules,
        ReportHandling::Escalated,
    ]
    .into_iter()
    .find(|handling| handling_name(*handling) == text)
}

/// Parses a status name.
pub fn parse_status(text: &str) -> Option<ReportStatus> {
    let text = text.trim().to_ascii_lowercase();
    [
        ReportStatus::Draft,
        ReportStatus::Submitted,
        ReportStatus::Reviewed,
    ]
    .into_iter()
    .find(|status| status_name(*status) == text)
}

fn role_label(role: Role) -> &'static str {
    match role {
        Role::Unspecified => "none",
        Role::Switchboard => "switchboard",
        Role::Compliance => "compliance",
        Role::Auditor => "auditor",
        Role::Admin => "admin",
        Role::Operator => "operator",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(name: &str, role: Role) -> Actor {
        Actor {
            name: name.into(),
            role,
        }
    }

    fn open(by: &Actor, via: ReportOpenedVia) -> Result<Report, Refusal> {
        next_version(
            None,
            Action::Open {
                report_id: "r1".into(),
                call_id: "c1".into(),
                via,
                keys_via: String::new(),
                form: ReportForm::default(),
                court_name: "上海市第一中级人民法院".into(),
                line_number: "12368".into(),
                call_operator: "sip:op-li@pbx.court.example".into(),
            },
            by,
            1000,
        )
    }

    #[test]
    fn an_operator_reports_only_calls_it_took() {
        // op-li took call c1 (its URI's user part); op-zhao did not.
        assert!(open(&actor("op-li", Role::Operator), ReportOpenedVia::Console).is_ok());
        assert!(open(
            &actor("sip:op-li@pbx.court.example", Role::Operator),
            ReportOpenedVia::Cli
        )
        .is_ok());
        let refused = open(&actor("op-zhao", Role::Operator), ReportOpenedVia::Console);
        assert!(
            matches!(&refused, Err(Refusal::NotAllowed(text)) if text.contains("only calls it took")),
            "{refused:?}"
        );
        // Compliance files on anyone's call.
        assert!(open(
            &actor("comp-wang", Role::Compliance),
            ReportOpenedVia::Console
        )
        .is_ok());
    }

    fn complete_form() -> ReportForm {
        ReportForm {
            staff_name: "张伟".into(),
            staff_id: "zhang.wei".into(),
            caller_name: "王五".into(),
            case_numbers: vec!["(2024)沪01民初123号".into()],
            kind: ReportKind::Intercession as i32,
            asked: "请求关照".into(),
            handling: ReportHandling::Refused as i32,
            ..ReportForm::default()
        }
    }

    #[test]
    fn a_report_goes_draft_submitted_reviewed_by_the_right_people() {
        let operator = actor("op-li", Role::Operator);
        let reviewer = actor("comp-wang", Role::Compliance);
        let draft = open(&operator, ReportOpenedVia::Cli).unwrap();
        assert_eq!((draft.version, draft.status()), (1, ReportStatus::Draft));
        assert_eq!(draft.opened_by, "op-li");
        // Incomplete: refused with the missing fields named.
        let refused = next_version(Some(&draft), Action::Submit, &operator, 2).unwrap_err();
        assert!(
            matches!(&refused, Refusal::Invalid(text) if text.contains("staff_name") && text.contains("asked")),
            "{refused:?}"
        );
        let filled =
            next_version(Some(&draft), Action::Update(complete_form()), &operator, 2).unwrap();
        assert_eq!(filled.version, 2);
        // Another operator may neither edit nor read it.
        let other = actor("op-zhao", Role::Operator);
        assert!(matches!(
            next_version(Some(&filled), Action::Update(complete_form()), &other, 3),
            Err(Refusal::NotAllowed(_))
        ));
        assert!(!may_read(&filled, &other));
        assert!(may_read(&filled, &operator));
        assert!(may_read(&filled, &actor("audit", Role::Auditor)));
        // Not reviewable while a draft.
        let review = |conclusion: &str| Action::Review {
            conclusion: conclusion.into(),
        };
        assert!(matches!(
            next_version(Some(&filled), review("ok"), &reviewer, 3),
            Err(Refusal::WrongState(_))
        ));
        let submitted = next_version(Some(&filled), Action::Submit, &operator, 3).unwrap();
        assert_eq!(submitted.status(), ReportStatus::Submitted);
        assert_eq!(submitted.submitted_by, "op-li");
        // A submitted report is no longer editable.
        assert!(matches!(
            next_version(
                Some(&submitted),
                Action::Update(complete_form()),
                &operator,
                4
            ),
            Err(Refusal::WrongState(_))
        ));
        // Operators and auditors do not review; an empty conclusion is refused.
        assert!(matches!(
            next_version(Some(&submitted), review("ok"), &operator, 4),
            Err(Refusal::NotAllowed(_))
        ));
        assert!(matches!(
            next_version(
                Some(&submitted),
                review("ok"),
                &actor("a", Role::Auditor),
                4
            ),
            Err(Refusal::NotAllowed(_))
        ));
        assert!(matches!(
            next_version(Some(&submitted), review("  "), &reviewer, 4),
            Err(Refusal::Invalid(_))
        ));
        let reviewed =
            next_version(Some(&submitted), review("属实，已登记"), &reviewer, 4).unwrap();
        assert_eq!(reviewed.status(), ReportStatus::Reviewed);
        assert_eq!(
            (
                reviewed.version,
                reviewed.reviewed_by.as_str(),
                reviewed.review_conclusion.as_str()
            ),
            (4, "comp-wang", "属实，已登记")
        );
        assert!(matches!(
            next_version(Some(&reviewed), review("again"), &reviewer, 5),
            Err(Refusal::WrongState(_))
        ));
    }

    #[test]
    fn who_may_open_and_the_owner_may_not_review() {
        assert!(open(&actor("a", Role::Auditor), ReportOpenedVia::Cli).is_err());
        assert!(open(&actor("a", Role::Admin), ReportOpenedVia::Console).is_err());
        assert!(open(&actor("op", Role::Operator), ReportOpenedVia::Keys).is_err());
        assert!(open(&actor("op", Role::Operator), ReportOpenedVia::Unspecified).is_err());
        assert!(open(
            &actor("sip:1001@pbx", Role::Switchboard),
            ReportOpenedVia::Keys
        )
        .is_ok());
        let officer = actor("comp", Role::Compliance);
        let own = open(&officer, ReportOpenedVia::Console).unwrap();
        let own = next_version(Some(&own), Action::Update(complete_form()), &officer, 2).unwrap();
        let own = next_version(Some(&own), Action::Submit, &officer, 3).unwrap();
        let refused = next_version(
            Some(&own),
            Action::Review {
                conclusion: "ok".into(),
            },
            &officer,
            4,
        );
        assert!(
            matches!(refused, Err(Refusal::NotAllowed(_))),
            "{refused:?}"
        );
    }

    #[test]
    fn keys_reports_belong_to_the_operator_extension_and_the_staff_id() {
        let keys = open(
            &actor("sip:1001@pbx.court.test;transport=tcp", Role::Switchboard),
            ReportOpenedVia::Keys,
        )
        .unwrap();
        assert!(is_owner(&keys, "1001"));
        assert!(!is_owner(&keys, "1002"));
        assert!(!is_owner(&keys, ""));
        let mut staffed = keys.clone();
        staffed.form = Some(complete_form());
        assert!(is_owner(&staffed, "zhang.wei"));
        assert_eq!(sip_user("tel:+861234"), None);
        assert_eq!(sip_user("sips:op@h"), Some("op"));
    }

    #[test]
    fn case_numbers_are_checked_loosely() {
        for good in [
            "(2024)沪01民初123号",
            "（2023）京0105民初4567号",
            "(2022)最高法民终1号",
            "〔2021〕粤03刑初88号",
        ] {
            assert!(looks_like_case_number(good), "{good}");
        }
        for odd in [
            "2024沪01民初123号",
            "(24)沪01民初123号",
            "(2024)沪01民初号",
            "(2024)123号",
            "abc",
        ] {
            assert!(!looks_like_case_number(odd), "{odd}");
        }
        let form = ReportForm {
            case_numbers: vec!["(2024)沪01民初123号".into(), "上周那个案子".into()],
            caller_phone: "138-0000-0000".into(),
            ..ReportForm::default()
        };
        let warned = warnings(&form);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(warned[0].contains("上周那个案子"));
        assert!(check_form(&form).is_ok(), "a warning never refuses");
    }

    #[test]
    fn hard_limits_name_the_field() {
        let long = ReportForm {
            asked: "问".repeat(MAX_TEXT_CHARS + 1),
            ..ReportForm::default()
        };
        assert!(check_form(&long).unwrap_err().contains("asked"));
        let bad_kind = ReportForm {
            kind: 99,
            ..ReportForm::default()
        };
        assert!(check_form(&bad_kind).unwrap_err().contains("kind"));
        let control = ReportForm {
            caller_name: "a\u{1b}[31m".into(),
            ..ReportForm::default()
        };
        assert!(check_form(&control).unwrap_err().contains("caller_name"));
    }

    #[test]
    fn names_parse_back() {
        for kind in [
            ReportKind::Inquiry,
            ReportKind::Interference,
            ReportKind::Intercession,
            ReportKind::Probing,
            ReportKind::Other,
        ] {
            assert_eq!(parse_kind(kind_name(kind)), Some(kind));
            assert_eq!(parse_kind(kind_label_zh(kind)), Some(kind));
        }
        assert_eq!(
            parse_handling("explained-rules"),
            Some(ReportHandling::ExplainedRules)
        );
        assert_eq!(parse_status("Submitted"), Some(ReportStatus::Submitted));
        assert_eq!(parse_kind("bribery"), None);
    }
}
