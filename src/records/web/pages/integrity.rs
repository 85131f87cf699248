//! Integrity: run the chain verification and show the signing key.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{ConnectInfo, Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::{failure, Chrome, CsrfForm, Page};
use crate::contract::pb::Finding;
use crate::records::web::Console;

/// The integrity page and its verify button.
pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/integrity", get(integrity_page))
        .route("/integrity/verify", post(run_verify))
}

#[derive(Template, WebTemplate)]
#[template(path = "integrity.html")]
struct IntegrityPage {
    chrome: Chrome,
    public_key: String,
    fingerprint: String,
    /// `None` until verification ran.
    result: Option<VerifyView>,
}

/// A verification's outcome for people: counts and findings grouped by kind.
struct VerifyView {
    events: u64,
    checkpoints: u64,
    calls: u64,
    unsigned_tail: u64,
    omitted: u64,
    by_kind: BTreeMap<String, Vec<Finding>>,
}

async fn integrity_page(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    integrity(&console, peer, &headers, None).await
}

async fn integrity(
    console: &Console,
    peer: SocketAddr,
    headers: &HeaderMap,
    csrf: Option<String>,
) -> Response {
    let (visitor, caller) = match console
        .allowed(headers, peer, "/integrity".into(), Page::Integrity)
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    let result = match csrf {
        None => None,
        Some(sent) if !Console::csrf_ok(&visitor, &sent) => {
            return (StatusCode::FORBIDDEN, visitor.lang.text("error-csrf")).into_response()
        }
        Some(_) => match console.server.verify_as(&caller).await {
            Ok(report) => {
                let mut by_kind: BTreeMap<String, Vec<Finding>> = BTreeMap::new();
                for finding in report.findings {
                    by_kind
                        .entry(finding.kind.clone())
                        .or_default()
                        .push(finding);
                }
                Some(VerifyView {
                    events: report.events_checked,
                    checkpoints: report.checkpoints_checked,
                    calls: report.calls_checked,
                    unsigned_tail: report.unsigned_tail,
                    omitted: report.findings_omitted,
                    by_kind,
                })
            }
            Err(status) => return visitor.respond(failure(visitor.chrome(), &status)),
        },
    };
    let (public_key, fingerprint) = console.server.public_key();
    visitor.respond(IntegrityPage {
        chrome: visitor.chrome(),
        public_key,
        fingerprint,
        result,
    })
}

async fn run_verify(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    integrity(&console, peer, &headers, Some(form.csrf)).await
}
