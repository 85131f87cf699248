//! Administration (admin only): tokens (issued, listed, revoked), retention and the
//! purge, and the calls on legal hold. Every action goes through the records
//! operations the gRPC handlers use, so each is on the chain as theirs are.

use std::net::SocketAddr;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::HeaderMap;
use axum::response::{Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use tonic::Status;

use super::{failure, local_time, Chrome, Page, Visitor};
use crate::contract::pb::{PurgeResponse, Role};
use crate::records::auth::{parse_role, role_name, Caller};
use crate::records::web::Console;

/// Calls on legal hold listed on the page (newest first).
const HELD_SHOWN: u32 = 200;
/// The roles a token may be issued with, in the order the form offers them.
const ISSUABLE: [Role; 5] = [
    Role::Compliance,
    Role::Auditor,
    Role::Operator,
    Role::Admin,
    Role::Switchboard,
];

/// The administration page and its forms.
pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/admin", get(admin_page))
        .route("/admin/tokens", post(issue_token))
        .route("/admin/tokens/revoke", get(confirm_revoke).post(revoke))
        .route("/admin/purge", post(purge))
}

/// One token as the list shows it (never its secret or hash).
struct TokenRow {
    name: String,
    role: String,
    created: String,
    created_by: String,
    /// Empty while valid.
    revoked: String,
}

/// One call on legal hold.
struct HeldRow {
    call_id: String,
    received: String,
    flagged: bool,
    reports: u64,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin.html")]
struct AdminPage {
    chrome: Chrome,
    tokens: Vec<TokenRow>,
    roles: Vec<&'static str>,
    retention_days: u32,
    /// What a purge now would remove and keep (a dry run).
    due: PurgeResponse,
    cutoff: String,
    held: Vec<HeldRow>,
    /// Whether more calls are held than listed.
    more_held: bool,
}

/// The page that shows a new token's secret, once.
#[derive(Template, WebTemplate)]
#[template(path = "admin_token.html")]
struct IssuedPage {
    chrome: Chrome,
    name: String,
    role: String,
    secret: String,
    /// The token ended the loopback rule (the browser must sign in with it next).
    ended_loopback_rule: bool,
}

/// Asks before revoking a token.
#[derive(Template, WebTemplate)]
#[template(path = "admin_revoke.html")]
struct RevokePage {
    chrome: Chrome,
    name: String,
}

/// What a purge removed.
#[derive(Template, WebTemplate)]
#[template(path = "admin_purged.html")]
struct PurgedPage {
    chrome: Chrome,
    purged: PurgeResponse,
    cutoff: String,
    reason: String,
}

/// The visitor as an admin, or the response (sign-in, 403) that ends the request.
async fn admin(
    console: &Console,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<(Visitor, Caller), Response> {
    console
        .allowed(headers, peer, "/admin".to_owned(), Page::Admin)
        .await
}

/// A records operation's failure on the page's frame.
fn failed(visitor: &Visitor, status: &Status) -> Response {
    visitor.respond(failure(visitor.chrome(), status))
}

async fn admin_page(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let (visitor, caller) = match admin(&console, &headers, peer).await {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    let server = &console.server;
    let tokens = match server.list_tokens_as(&caller).await {
        Ok(listed) => listed.tokens,
        Err(status) => return failed(&visitor, &status),
    };
    let due = match server.purge_as(&caller, true).await {
        Ok(due) => due,
        Err(status) => return failed(&visitor, &status),
    };
    let mut held = match server.legal_holds_as(&caller, HELD_SHOWN + 1).await {
        Ok(held) => held,
        Err(status) => return failed(&visitor, &status),
    };
    let more_held = held.len() > HELD_SHOWN as usize;
    held.truncate(HELD_SHOWN as usize);
    visitor.respond(AdminPage {
        chrome: visitor.chrome(),
        tokens: tokens
            .into_iter()
            .map(|token| TokenRow {
                role: role_name(token.role()).to_owned(),
                name: token.name,
                created: local_time(token.created_at_ms),
                created_by: token.created_by,
                revoked: local_time(token.revoked_at_ms),
            })
            .collect(),
        roles: ISSUABLE.into_iter().map(role_name).collect(),
        retention_days: server.retention_days(),
        cutoff: local_time(due.cutoff_ms),
        due,
        held: held
            .into_iter()
            .map(|call| HeldRow {
                call_id: call.call_id,
                received: local_time(call.received_at_ms),
                flagged: call.flagged,
                reports: call.reports,
            })
            .collect(),
        more_held,
    })
}

#[derive(Deserialize)]
struct IssueForm {
    csrf: String,
    name: String,
    role: String,
}

async fn issue_token(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<IssueForm>,
) -> Response {
    let (visitor, caller) = match console
        .allowed_post(&headers, peer, "/admin".into(), Page::Admin, &form.csrf)
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    let Some(role) = parse_role(&form.role) else {
        let status = Status::invalid_argument(visitor.lang.text("admin-error-role"));
        return failed(&visitor, &status);
    };
    let name = form.name.trim();
    match console.server.add_token_as(&caller, name, role).await {
        // Shown on this response only: not stored, not logged, not cached (no-store).
        Ok(issued) => visitor.respond(IssuedPage {
            chrome: visitor.chrome(),
            name: name.to_owned(),
            role: role_name(role).to_owned(),
            secret: issued.token,
            ended_loopback_rule: issued.ended_loopback_rule,
        }),
        Err(status) => failed(&visitor, &status),
    }
}

#[derive(Deserialize)]
struct RevokeQuery {
    name: String,
}

async fn confirm_revoke(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<RevokeQuery>,
) -> Response {
    let (visitor, _) = match admin(&console, &headers, peer).await {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    visitor.respond(RevokePage {
        chrome: visitor.chrome(),
        name: query.name,
    })
}

#[derive(Deserialize)]
struct RevokeForm {
    csrf: String,
    name: String,
}

async fn revoke(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<RevokeForm>,
) -> Response {
    let (visitor, caller) = match console
        .allowed_post(&headers, peer, "/admin".into(), Page::Admin, &form.csrf)
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    match console.server.revoke_token_as(&caller, &form.name).await {
        Ok(()) => visitor.respond(Redirect::to("/admin")),
        Err(status) => failed(&visitor, &status),
    }
}

#[derive(Deserialize)]
struct PurgeForm {
    csrf: String,
    reason: String,
}

async fn purge(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<PurgeForm>,
) -> Response {
    let (visitor, _) = match console
        .allowed_post(&headers, peer, "/admin".into(), Page::Admin, &form.csrf)
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    // The reason goes on the chain with the purge, as `--reason` does on the CLI.
    let Some(caller) = visitor
        .caller(&form.reason)
        .filter(|caller| !caller.reason.is_empty())
    else {
        let status = Status::invalid_argument(visitor.lang.text("admin-error-reason"));
        return failed(&visitor, &status);
    };
    match console.server.purge_as(&caller, false).await {
        Ok(purged) => visitor.respond(PurgedPage {
            chrome: visitor.chrome(),
            cutoff: local_time(purged.cutoff_ms),
            purged,
            reason: caller.reason,
        }),
        Err(status) => failed(&visitor, &status),
    }
}
