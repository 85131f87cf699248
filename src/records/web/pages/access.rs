//! The access log: who looked at what, when and why.

use std::net::SocketAddr;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::{failure, here, local_time, Chrome, Page};
use crate::contract::pb::{AccessEntry, ListAccessRequest};
use crate::records::web::Console;

/// Access entries per page.
const ACCESS_PAGE_SIZE: u32 = 100;

/// The access log page.
pub(super) fn routes() -> Router<Console> {
    Router::new().route("/access", get(access_page))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AccessQuery {
    actor: String,
    before: u64,
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
    actor: String,
    rows: Vec<AccessRow>,
    next: String,
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
    let request = ListAccessRequest {
        actor: query.actor.trim().to_owned(),
        before_seq: query.before,
        page_size: ACCESS_PAGE_SIZE,
        ..ListAccessRequest::default()
    };
    match console.server.list_access_as(&caller, request).await {
        Ok(response) => {
            let next = if response.next_before_seq == 0 {
                String::new()
            } else {
                format!(
                    "/access?{}",
                    serde_urlencoded::to_string([
                        ("actor", query.actor.clone()),
                        ("before", response.next_before_seq.to_string()),
                    ])
                    .unwrap_or_default()
                )
            };
            visitor.respond(AccessPage {
                chrome: visitor.chrome(),
                actor: query.actor,
                rows: response.entries.into_iter().map(AccessRow::from).collect(),
                next,
            })
        }
        Err(status) => visitor.respond(failure(visitor.chrome(), &status)),
    }
}
