//! The access log: who looked at what, when and why, filtered by actor, operation,
//! call, time range and reason, in cursor pages.

use std::net::SocketAddr;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use tonic::Status;

use super::{failure, here, local_time, Chrome, Page};
use crate::contract::pb::{AccessEntry, ListAccessRequest};
use crate::records::query::parse_time;
use crate::records::web::Console;

/// Access entries per page.
const ACCESS_PAGE_SIZE: u32 = 100;

/// The access log page.
pub(super) fn routes() -> Router<Console> {
    Router::new().route("/access", get(access_page))
}

/// The operations offered as suggestions in the operation filter (any text works).
const OPERATIONS: [&str; 22] = [
    "ListCalls",
    "GetCall",
    "GetRecording",
    "ExportCalls",
    "FlagCall",
    "OpenReport",
    "UpdateReport",
    "SubmitReport",
    "ReviewReport",
    "GetReport",
    "ListReports",
    "Verify",
    "VerifyExport",
    "ListGaps",
    "ListAccess",
    "AddToken",
    "ListTokens",
    "RevokeToken",
    "Purge",
    "ListLegalHolds",
    "ListPatterns",
    "ListPatternAlerts",
];

/// The filter form, as the query string carries it.
#[derive(Deserialize, Serialize, Default, Clone, Debug, PartialEq)]
#[serde(default)]
struct AccessQuery {
    actor: String,
    operation: String,
    call_id: String,
    /// `datetime-local` start, local time.
    since: String,
    /// `datetime-local` end (exclusive), local time.
    until: String,
    reason: String,
    /// The cursor: continue before this chain position.
    #[serde(skip_serializing)]
    before: u64,
}

impl AccessQuery {
    /// The `ListAccess` request; `Err` names the unreadable time field (text key).
    fn request(&self, page_size: u32) -> Result<ListAccessRequest, &'static str> {
        let time = |text: &str, key| match text.trim() {
            "" => Ok(0),
            text => parse_time(text).map_err(|_| key),
        };
        Ok(ListAccessRequest {
            since_ms: time(&self.since, "error-since")?,
            until_ms: time(&self.until, "error-until")?,
            actor: self.actor.trim().to_owned(),
            operation: self.operation.trim().to_owned(),
            call_id: self.call_id.trim().to_owned(),
            reason_contains: self.reason.trim().to_owned(),
            page_size,
            before_seq: self.before,
        })
    }

    /// The link to the page before chain position `before`, with the same filters.
    fn next(&self, before: u64) -> String {
        let filters = serde_urlencoded::to_string(self).unwrap_or_default();
        format!("/access?{filters}&before={before}")
    }
}

/// One access entry for people.
struct AccessRow {
    seq: u64,
    at: String,
    actor: String,
    role: String,
    operation: String,
    parameters: String,
    rows: u64,
    reason: String,
    peer: String,
}

impl From<AccessEntry> for AccessRow {
    fn from(entry: AccessEntry) -> AccessRow {
        AccessRow {
            seq: entry.seq,
            at: local_time(entry.at_ms),
            actor: entry.actor,
            role: entry.role,
            operation: entry.operation,
            parameters: entry.parameters,
            rows: entry.rows,
            reason: entry.reason,
            peer: entry.peer,
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "access.html")]
struct AccessPage {
    chrome: Chrome,
    form: AccessQuery,
    operations: [&'static str; 22],
    rows: Vec<AccessRow>,
    next: String,
    /// Where a filtered search stopped short of a full page (0: it did not).
    scanned_to: u64,
}

async fn access_page(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(query): Query<AccessQuery>,
) -> Response {
    let (visitor, caller) = match console
        .allowed(&headers, peer, here("/access", uri.query()), Page::Access)
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    let request = match query.request(ACCESS_PAGE_SIZE) {
        Ok(request) => request,
        Err(key) => {
            let status = Status::invalid_argument(visitor.lang.text(key));
            return visitor.respond(failure(visitor.chrome(), &status));
        }
    };
    match console.server.list_access_as(&caller, request).await {
        Ok(response) => {
            let short = response.entries.len() < ACCESS_PAGE_SIZE as usize;
            let (next, scanned_to) = match response.next_before_seq {
                0 => (String::new(), 0),
                before if short => (query.next(before), before),
                before => (query.next(before), 0),
            };
            visitor.respond(AccessPage {
                chrome: visitor.chrome(),
                form: query,
                operations: OPERATIONS,
                rows: response.entries.into_iter().map(AccessRow::from).collect(),
                next,
                scanned_to,
            })
        }
        Err(status) => visitor.respond(failure(visitor.chrome(), &status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_becomes_the_request_and_the_next_link_keeps_the_filters() {
        let form = AccessQuery {
            actor: " zhang.wei ".into(),
            operation: "GetCall".into(),
            call_id: "0193-abc".into(),
            since: "2026-03-01T08:30".into(),
            until: String::new(),
            reason: "复核".into(),
            before: 900,
        };
        let request = form.request(100).unwrap();
        assert_eq!(request.actor, "zhang.wei");
        assert_eq!(request.operation, "GetCall");
        assert_eq!(request.call_id, "0193-abc");
        assert_eq!(request.reason_contains, "复核");
        assert_eq!(request.before_seq, 900);
        assert_eq!(request.since_ms, parse_time("2026-03-01T08:30").unwrap());
        assert_eq!(request.until_ms, 0);
        let next = form.next(812);
        assert!(next.starts_with("/access?actor=+zhang.wei+&operation=GetCall&call_id=0193-abc&since=2026-03-01T08%3A30&until=&reason=%E5%A4%8D%E6%A0%B8"), "{next}");
        assert!(
            next.ends_with("&before=812") && !next.contains("before=900"),
            "{next}"
        );
        let bad = AccessQuery {
            until: "tomorrow-ish".into(),
            ..AccessQuery::default()
        };
        assert_eq!(bad.request(100).unwrap_err(), "error-until");
    }
}
