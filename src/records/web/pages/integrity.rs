//! Integrity: run the chain verification in the background and watch its progress
//! (the page polls a fragment with htmx until the findings are in), check an
//! uploaded export file against its signed manifest, and show the signing key.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use tonic::Status;

use super::{csrf_refused, failure, local_time, Chrome, CsrfForm, Page, Visitor};
use crate::contract::pb::{Finding, VerifyResponse};
use crate::records::auth::Caller;
use crate::records::export::ExportCheck;
use crate::records::web::verification::Progress;
use crate::records::web::Console;

/// Header htmx sets on its own requests.
const HX_REQUEST: &str = "hx-request";
/// Response header telling htmx to navigate the whole page.
const HX_REDIRECT: &str = "hx-redirect";
/// Largest export file accepted for checking: a year of a busy court's calls in
/// JSON Lines stays well below it.
const MAX_UPLOAD_BYTES: usize = 256 * 1024 * 1024;

/// The integrity page, its verify button, the progress fragment and the export check.
pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/integrity", get(integrity_page))
        .route("/integrity/verify", post(run_verify))
        .route("/integrity/progress", get(progress_fragment))
        .route(
            "/integrity/export",
            post(check_export).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
}

#[derive(Template, WebTemplate)]
#[template(path = "integrity.html")]
struct IntegrityPage {
    chrome: Chrome,
    public_key: String,
    fingerprint: String,
    /// The latest verification, running or done; `None` before the first.
    status: Option<StatusView>,
    /// The export file just checked, if one was.
    upload: Option<UploadView>,
}

/// Just the verification's status: what the page polls while it runs.
#[derive(Template, WebTemplate)]
#[template(path = "integrity_status.html")]
struct StatusFragment {
    chrome: Chrome,
    status: Option<StatusView>,
}

/// A verification's state for people.
struct StatusView {
    started_by: String,
    started_at: String,
    checked: u64,
    total: u64,
    percent: u64,
    /// Still running: the fragment keeps polling.
    running: bool,
    /// Its findings, once done.
    result: Option<VerifyView>,
    /// Why it could not run, if it failed.
    error: String,
}

impl From<Progress> for StatusView {
    fn from(progress: Progress) -> StatusView {
        let (result, error) = match progress.outcome.clone() {
            None => (None, String::new()),
            Some(Ok(report)) => (Some(VerifyView::from(report)), String::new()),
            Some(Err(error)) => (None, error),
        };
        StatusView {
            started_by: progress.started_by,
            started_at: local_time(progress.started_at_ms),
            checked: progress.checked,
            total: progress.total,
            percent: progress.percent,
            running: progress.outcome.is_none(),
            result,
            error,
        }
    }
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

impl From<VerifyResponse> for VerifyView {
    fn from(report: VerifyResponse) -> VerifyView {
        let mut by_kind: BTreeMap<String, Vec<Finding>> = BTreeMap::new();
        for finding in report.findings {
            by_kind
                .entry(finding.kind.clone())
                .or_default()
                .push(finding);
        }
        VerifyView {
            events: report.events_checked,
            checkpoints: report.checkpoints_checked,
            calls: report.calls_checked,
            unsigned_tail: report.unsigned_tail,
            omitted: report.findings_omitted,
            by_kind,
        }
    }
}

/// An uploaded export's check for people.
struct UploadView {
    file_name: String,
    rows: u64,
    /// Recordings an archive with audio lists, each checked by its hash (0 otherwise).
    recordings: u64,
    /// Who exported it, when, with which filters; empty without a manifest.
    exported_by: String,
    exported_at: String,
    filter: String,
    /// Everything wrong; empty: intact and signed by this service's key.
    problems: Vec<String>,
}

impl UploadView {
    fn new(file_name: String, check: ExportCheck) -> UploadView {
        let manifest = check.manifest.as_ref();
        UploadView {
            file_name,
            rows: check.rows,
            recordings: check.recordings,
            exported_by: manifest.map(|m| m.exported_by.clone()).unwrap_or_default(),
            exported_at: manifest
                .map(|m| local_time(m.exported_at_ms))
                .unwrap_or_default(),
            filter: manifest.map(|m| m.filter.to_string()).unwrap_or_default(),
            problems: check.problems,
        }
    }
}

/// The latest verification's status.
fn status(console: &Console) -> Option<StatusView> {
    console
        .verifications
        .lock()
        .ok()
        .and_then(|verifications| verifications.progress())
        .map(StatusView::from)
}

/// The visitor, allowed on the integrity page, or the response that ends the request.
async fn auditor(
    console: &Console,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<(Visitor, Caller), Response> {
    console
        .allowed(headers, peer, "/integrity".into(), Page::Integrity)
        .await
}

/// The page, with the latest verification and the export check, if any.
fn page(console: &Console, visitor: &Visitor, upload: Option<UploadView>) -> Response {
    let (public_key, fingerprint) = console.server.public_key();
    visitor.respond(IntegrityPage {
        chrome: visitor.chrome(),
        public_key,
        fingerprint,
        status: status(console),
        upload,
    })
}

async fn integrity_page(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    match auditor(&console, &headers, peer).await {
        Ok((visitor, _)) => page(&console, &visitor, None),
        Err(response) => response,
    }
}

async fn progress_fragment(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    match auditor(&console, &headers, peer).await {
        Ok((visitor, _)) => visitor.respond(StatusFragment {
            chrome: visitor.chrome(),
            status: status(&console),
        }),
        // The session ended while the page polled: htmx would follow the redirect
        // inside its request and put the sign-in page in the fragment, so have the
        // browser go there instead.
        Err(response) if response.status().is_redirection() && headers.contains_key(HX_REQUEST) => {
            (StatusCode::OK, [(HX_REDIRECT, "/login")]).into_response()
        }
        Err(response) => response,
    }
}

/// Starts a verification in the background unless one runs, and goes back to the
/// page, which shows its progress either way.
async fn run_verify(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let (visitor, caller) = match console
        .allowed_post(
            &headers,
            peer,
            "/integrity".into(),
            Page::Integrity,
            &form.csrf,
        )
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    let total = console.server.chain_length().await;
    let started = console
        .verifications
        .lock()
        .ok()
        .and_then(|mut verifications| {
            verifications.start(&caller.name, chrono::Utc::now().timestamp_millis(), total)
        });
    if let Some(checked) = started {
        let server = console.server.clone();
        let verifications = console.verifications.clone();
        tokio::spawn(async move {
            // Run apart, so that even a panic ends the run and lets the next one start.
            let run = tokio::spawn(async move {
                server
                    .verify_counting_as(&caller, &checked)
                    .await
                    .map_err(|status| status.message().to_owned())
            });
            let outcome = run
                .await
                .unwrap_or_else(|failure| Err(format!("verification failed: {failure}")));
            if let Ok(mut verifications) = verifications.lock() {
                verifications.finish(outcome);
            }
        });
    }
    visitor.respond(Redirect::to("/integrity"))
}

/// The uploaded file's name and bytes, and the CSRF token sent with it.
async fn read_upload(
    mut multipart: Multipart,
) -> Result<(String, Option<(String, axum::body::Bytes)>), String> {
    let mut csrf = String::new();
    let mut file = None;
    while let Some(field) = multipart.next_field().await.map_err(|e| e.body_text())? {
        match field.name() {
            Some("csrf") => csrf = field.text().await.map_err(|e| e.body_text())?,
            Some("file") => {
                let name = field.file_name().unwrap_or_default().to_owned();
                let bytes = field.bytes().await.map_err(|e| e.body_text())?;
                file = (!bytes.is_empty()).then_some((name, bytes));
            }
            _ => {}
        }
    }
    Ok((csrf, file))
}

/// Checks an uploaded export against its signed manifest and this service's key,
/// with the code `courtline records verify-export` runs.
async fn check_export(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    multipart: Multipart,
) -> Response {
    let (visitor, caller) = match auditor(&console, &headers, peer).await {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    let (csrf, file) = match read_upload(multipart).await {
        Ok(upload) => upload,
        Err(problem) => {
            return visitor.respond(failure(
                visitor.chrome(),
                &Status::invalid_argument(problem),
            ))
        }
    };
    if !Console::csrf_ok(&visitor, &csrf) {
        return csrf_refused(&visitor);
    }
    let Some((name, bytes)) = file else {
        let status = Status::invalid_argument(visitor.lang.text("integrity-upload-missing"));
        return visitor.respond(failure(visitor.chrome(), &status));
    };
    match console.server.verify_export_as(&caller, bytes).await {
        Ok(check) => page(&console, &visitor, Some(UploadView::new(name, check))),
        Err(status) => visitor.respond(failure(visitor.chrome(), &status)),
    }
}
