//! Patterns across calls (compliance and auditors): one pattern at a time with its
//! threshold, window and range, each hit linking to the calls behind it on the
//! calls page; and the pattern alerts the configured rules raised (the review
//! queue's). Numbers are masked for the roles of `mask_callers_for`, and a masked
//! hit has no link.

use std::net::SocketAddr;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use tonic::Status;

use super::{failure, here, local_time, Chrome, Page};
use crate::contract::names::end_reason_name;
use crate::contract::pb::{CallFilter, ListPatternsRequest, PatternHit, PatternKind};
use crate::contract::row::rfc3339;
use crate::records::dashboard::DAY_MS;
use crate::records::ledger::now_ms;
use crate::records::patterns::{defaults, kind_name, parse_kind, KINDS};
use crate::records::query::parse_time;
use crate::records::service::PatternAlert;
use crate::records::web::Console;

/// How far back the alerts list reaches.
pub const ALERT_DAYS: i64 = 30;

/// The patterns page.
pub(super) fn routes() -> Router<Console> {
    Router::new().route("/patterns", get(patterns_page))
}

/// The form, as the query string carries it (empty: the pattern's default).
#[derive(Deserialize, Default, Debug, Clone, PartialEq)]
#[serde(default)]
struct PatternsQuery {
    /// The pattern's name ([`kind_name`]).
    pattern: String,
    threshold: String,
    window_days: String,
    /// `YYYY-MM-DD` (local midnight) or RFC 3339.
    since: String,
    until: String,
    caller: String,
}

impl PatternsQuery {
    /// The request; `Err` is the text key of the unreadable field.
    fn request(&self) -> Result<ListPatternsRequest, &'static str> {
        let kind = match self.pattern.trim() {
            "" => PatternKind::Courts,
            name => parse_kind(name).ok_or("patterns-error-pattern")?,
        };
        let number = |text: &str, key| match text.trim() {
            "" => Ok(0),
            text => text.parse::<u32>().map_err(|_| key),
        };
        let time = |text: &str, key| match text.trim() {
            "" => Ok(0),
            text => parse_time(text).map_err(|_| key),
        };
        Ok(ListPatternsRequest {
            kind: kind as i32,
            threshold: number(&self.threshold, "patterns-error-threshold")?,
            window_days: number(&self.window_days, "patterns-error-window")?,
            since_ms: time(&self.since, "error-since")?,
            until_ms: time(&self.until, "error-until")?,
            caller_number: self.caller.trim().to_owned(),
        })
    }
}

/// The calls page's link for `filter`.
pub fn calls_link(filter: &CallFilter) -> String {
    let mut fields = vec![
        ("caller", filter.caller_prefix.clone()),
        ("caller_exact", "on".to_owned()),
        ("since", rfc3339(filter.since_ms).unwrap_or_default()),
        ("until", rfc3339(filter.until_ms).unwrap_or_default()),
    ];
    if !filter.court_name.is_empty() {
        fields.push(("court", filter.court_name.clone()));
    }
    if filter.end_reason != 0 {
        fields.push((
            "end_reason",
            end_reason_name(filter.end_reason()).to_owned(),
        ));
    }
    format!(
        "/calls?{}",
        serde_urlencoded::to_string(&fields).unwrap_or_default()
    )
}

/// One hit for people.
pub(super) struct HitRow {
    /// The caller's number (masked for masked roles).
    pub(super) caller: String,
    /// The court (repeated calls).
    pub(super) court: String,
    /// What reached the threshold.
    pub(super) count: u64,
    /// Calls in the window.
    pub(super) calls: u64,
    /// First UTC day of the window.
    pub(super) first_day: String,
    /// Last UTC day of the window.
    pub(super) last_day: String,
    /// Courts called in the window.
    pub(super) courts: String,
    /// The calls page showing the calls behind it; empty when masked.
    pub(super) link: String,
}

/// `YYYY-MM-DD` (UTC) of Unix ms.
fn utc_date(ms: i64) -> String {
    rfc3339(ms)
        .and_then(|time| time.get(..10).map(str::to_owned))
        .unwrap_or_default()
}

impl From<&PatternHit> for HitRow {
    fn from(hit: &PatternHit) -> HitRow {
        HitRow {
            caller: hit.caller_number.clone(),
            court: hit.court_name.clone(),
            count: hit.count,
            calls: hit.calls,
            first_day: utc_date(hit.since_ms),
            last_day: utc_date(hit.until_ms - 1),
            courts: hit.courts.join("、"),
            link: hit
                .calls_filter
                .as_ref()
                .map(calls_link)
                .unwrap_or_default(),
        }
    }
}

/// One alert for people.
pub(super) struct AlertRow {
    /// Chain position of the `PatternMatched` event.
    pub(super) seq: i64,
    /// When it matched.
    pub(super) at: String,
    /// The configured rule.
    pub(super) rule: String,
    /// Text key of the pattern.
    pub(super) pattern_key: String,
    /// What matched.
    pub(super) hit: HitRow,
}

impl From<&PatternAlert> for AlertRow {
    fn from(alert: &PatternAlert) -> AlertRow {
        let hit = alert.matched.hit.clone().unwrap_or_default();
        AlertRow {
            seq: alert.seq,
            at: local_time(alert.at_ms),
            rule: alert.matched.rule.clone(),
            pattern_key: format!("pattern-{}", kind_name(hit.kind())),
            hit: HitRow::from(&hit),
        }
    }
}

/// Since when the alerts list reaches.
pub(super) fn alerts_since() -> i64 {
    now_ms() - ALERT_DAYS * DAY_MS
}

#[derive(Template, WebTemplate)]
#[template(path = "patterns.html")]
struct PatternsPage {
    chrome: Chrome,
    /// (name, text key, selected) of each pattern.
    patterns: Vec<(&'static str, String, bool)>,
    /// The pattern shown, its text key, and its defaults for the placeholders.
    pattern_key: String,
    default_threshold: u32,
    default_window: u32,
    form_threshold: String,
    form_window: String,
    form_since: String,
    form_until: String,
    form_caller: String,
    /// What was searched, defaults applied.
    threshold: u32,
    window_days: u32,
    first_day: String,
    last_day: String,
    hits: Vec<HitRow>,
    truncated: bool,
    masked: bool,
    alerts: Vec<AlertRow>,
}

async fn patterns_page(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(query): Query<PatternsQuery>,
) -> Response {
    let (visitor, caller) = match console
        .allowed(
            &headers,
            peer,
            here("/patterns", uri.query()),
            Page::Patterns,
        )
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    let request = match query.request() {
        Ok(request) => request,
        Err(key) => {
            let status = Status::invalid_argument(visitor.lang.text(key));
            return visitor.respond(failure(visitor.chrome(), &status));
        }
    };
    let kind = request.kind();
    let found = match console.server.list_patterns_as(&caller, request).await {
        Ok(found) => found,
        Err(status) => return visitor.respond(failure(visitor.chrome(), &status)),
    };
    let alerts = match console
        .server
        .pattern_alerts_as(&caller, alerts_since())
        .await
    {
        Ok(alerts) => alerts,
        Err(status) => return visitor.respond(failure(visitor.chrome(), &status)),
    };
    let (default_threshold, default_window) = defaults(kind);
    visitor.respond(PatternsPage {
        chrome: visitor.chrome(),
        patterns: KINDS
            .into_iter()
            .map(|each| {
                let name = kind_name(each);
                (name, format!("pattern-{name}"), each == kind)
            })
            .collect(),
        pattern_key: format!("pattern-{}", kind_name(kind)),
        default_threshold,
        default_window,
        form_threshold: query.threshold,
        form_window: query.window_days,
        form_since: query.since,
        form_until: query.until,
        form_caller: query.caller,
        threshold: found.threshold,
        window_days: found.window_days,
        first_day: utc_date(found.since_ms),
        last_day: utc_date(found.until_ms - 1),
        masked: found.hits.iter().any(|hit| hit.masked),
        hits: found.hits.iter().map(HitRow::from).collect(),
        truncated: found.truncated,
        alerts: alerts.iter().map(AlertRow::from).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::pb::EndReason;

    #[test]
    fn the_form_becomes_the_request() {
        let form = PatternsQuery {
            pattern: "repeated_calls".into(),
            threshold: "5".into(),
            window_days: " 3 ".into(),
            since: "2026-11-01".into(),
            caller: " 139 ".into(),
            ..PatternsQuery::default()
        };
        let request = form.request().unwrap();
        assert_eq!(request.kind(), PatternKind::RepeatedCalls);
        assert_eq!((request.threshold, request.window_days), (5, 3));
        assert_eq!(request.since_ms, parse_time("2026-11-01").unwrap());
        assert_eq!(request.caller_number, "139");
        assert_eq!(
            PatternsQuery::default().request().unwrap().kind(),
            PatternKind::Courts
        );
        let bad = PatternsQuery {
            threshold: "many".into(),
            ..PatternsQuery::default()
        };
        assert_eq!(bad.request(), Err("patterns-error-threshold"));
    }

    #[test]
    fn hits_link_to_the_calls_behind_them() {
        let filter = CallFilter {
            caller_prefix: "13912345678".into(),
            caller_exact: true,
            since_ms: 1_700_006_400_000,
            until_ms: 1_700_092_800_000,
            court_name: "甲法院".into(),
            end_reason: EndReason::AfterHours as i32,
            ..CallFilter::default()
        };
        let link = calls_link(&filter);
        assert!(
            link.starts_with(
                "/calls?caller=13912345678&caller_exact=on&since=2023-11-15T00%3A00%3A00.000Z"
            ),
            "{link}"
        );
        assert!(link.contains("&court=%E7%94%B2"), "{link}");
        assert!(link.ends_with("&end_reason=after_hours"), "{link}");
        let form = crate::records::web::filter::CallsForm {
            since: "2023-11-15T00:00:00.000Z".into(),
            ..Default::default()
        };
        // The calls page reads the link's times.
        let parsed = form.filter(chrono::Local::now()).unwrap();
        assert_eq!(parsed.since_ms, filter.since_ms);
        let row = HitRow::from(&PatternHit {
            since_ms: filter.since_ms,
            until_ms: filter.until_ms,
            ..PatternHit::default()
        });
        assert_eq!(
            (row.first_day.as_str(), row.last_day.as_str()),
            ("2023-11-15", "2023-11-15")
        );
        assert!(row.link.is_empty());
    }
}
