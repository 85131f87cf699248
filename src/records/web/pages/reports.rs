//! "Three rules" reports: the list (an operator's drafts, the compliance review
//! queue, every report the user may read with the `ListReports` filters), the
//! registration form (open, save a new version, submit, review) with the report's
//! history, and its A4 print view for paper filing.

use std::net::SocketAddr;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use tonic::{Code, Status};

use super::{failure, here, local_time, may_see, Chrome, Page, Visitor};
use crate::contract::pb::{
    GetReportResponse, ListReportsRequest, OpenReportRequest, Report, ReportFilter,
    ReportOpenedVia, ReportStatus, ReviewReportRequest, Role, SortOrder, SubmitReportRequest,
    UpdateReportRequest,
};
use crate::records::auth::Caller;
use crate::records::reports::workflow::{is_owner, kind_name, opened_via_name, status_name};
use crate::records::web::report_form::{option_names, ReportFields, ReportsSearch};
use crate::records::web::Console;

/// Reports per page of the list, and in the queue.
const PAGE_SIZE: u32 = 50;

/// The reports pages and their forms.
pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/reports", get(reports_page))
        .route("/reports/new", get(new_report_page).post(open_report))
        .route("/reports/{id}", get(report_page).post(change_report))
        .route("/reports/{id}/review", post(review_report))
        .route("/reports/{id}/print", get(print_page))
        .route("/assets/print.css", get(print_stylesheet))
}

/// One report in a list.
pub(super) struct ReportRow {
    pub(super) id: String,
    pub(super) call_id: String,
    pub(super) version: u32,
    pub(super) status: &'static str,
    pub(super) kind: &'static str,
    pub(super) staff: String,
    pub(super) case_numbers: String,
    pub(super) court: String,
    pub(super) opened_at: String,
    pub(super) changed_at: String,
}

impl From<&Report> for ReportRow {
    fn from(report: &Report) -> ReportRow {
        let form = report.form.clone().unwrap_or_default();
        ReportRow {
            id: report.report_id.clone(),
            call_id: report.call_id.clone(),
            version: report.version,
            status: status_name(report.status()),
            kind: kind_name(form.kind()),
            staff: if form.staff_name.is_empty() {
                report.opened_by.clone()
            } else {
                form.staff_name.clone()
            },
            case_numbers: form.case_numbers.join("，"),
            court: report.court_name.clone(),
            opened_at: local_time(report.opened_at_ms),
            changed_at: local_time(report.changed_at_ms),
        }
    }
}

/// The reports of a call that `caller` may read (an operator: its own), newest first.
pub(super) async fn reports_of_call(
    console: &Console,
    caller: &Caller,
    call_id: &str,
) -> Result<Vec<ReportRow>, Status> {
    let request = ListReportsRequest {
        filter: Some(ReportFilter {
            call_id: call_id.to_owned(),
            ..ReportFilter::default()
        }),
        page_size: 100,
        ..ListReportsRequest::default()
    };
    let response = console.server.list_reports_as(caller, request).await?;
    Ok(response.reports.iter().map(ReportRow::from).collect())
}

/// Whether the queue shown is compliance's review queue, where pattern alerts go too.
fn title_is_review_queue(title: &str) -> bool {
    title == "reports-queue"
}

/// Whether `caller` may open reports (the workflow's rule, so the form is offered
/// only to those it would accept).
pub(super) fn may_file(caller: &Caller) -> bool {
    matches!(caller.role, Role::Operator | Role::Compliance)
}

#[derive(Template, WebTemplate)]
#[template(path = "reports.html")]
struct ReportsPage {
    chrome: Chrome,
    search: ReportsSearch,
    error: String,
    /// The list above the search: the review queue (compliance) or the drafts
    /// (operators); its title key, empty for none.
    queue_title: &'static str,
    queue: Vec<ReportRow>,
    /// Pattern alerts, in the review queue (compliance).
    alerts: Vec<super::patterns::AlertRow>,
    rows: Vec<ReportRow>,
    next: String,
    kinds: [&'static str; 5],
    statuses: [&'static str; 3],
}

async fn reports_page(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(search): Query<ReportsSearch>,
) -> Response {
    let (visitor, caller) = match console
        .allowed(&headers, peer, here("/reports", uri.query()), Page::Reports)
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    let (kinds, _, statuses) = option_names();
    let mut page = ReportsPage {
        chrome: visitor.chrome(),
        search,
        error: String::new(),
        queue_title: "",
        queue: Vec::new(),
        alerts: Vec::new(),
        rows: Vec::new(),
        next: String::new(),
        kinds,
        statuses,
    };
    let filter = match page.search.filter() {
        Ok(filter) => filter,
        Err((key, value)) => {
            page.error = format!("{}: {value:?}", visitor.lang.text(key));
            return visitor.respond((StatusCode::BAD_REQUEST, page));
        }
    };
    // Reviewers work the queue oldest first; operators see their unfinished drafts.
    let queue = if caller.role == Role::Compliance || caller.under_loopback_rule {
        Some((
            "reports-queue",
            ReportStatus::Submitted,
            SortOrder::OldestFirst,
        ))
    } else if caller.role == Role::Operator {
        Some((
            "reports-drafts",
            ReportStatus::Draft,
            SortOrder::NewestFirst,
        ))
    } else {
        None
    };
    if let Some((title, status, sort)) = queue {
        let request = ListReportsRequest {
            filter: Some(ReportFilter {
                status: status as i32,
                ..ReportFilter::default()
            }),
            sort: sort as i32,
            page_size: PAGE_SIZE,
            page_token: String::new(),
        };
        match console.server.list_reports_as(&caller, request).await {
            Ok(response) => {
                page.queue_title = title;
                page.queue = response.reports.iter().map(ReportRow::from).collect();
            }
            Err(status) => return visitor.respond(failure(visitor.chrome(), &status)),
        }
    }
    if title_is_review_queue(page.queue_title) {
        let since = super::patterns::alerts_since();
        match console.server.pattern_alerts_as(&caller, since).await {
            Ok(alerts) => {
                page.alerts = alerts.iter().map(super::patterns::AlertRow::from).collect()
            }
            Err(status) => return visitor.respond(failure(visitor.chrome(), &status)),
        }
    }
    let request = ListReportsRequest {
        filter: Some(filter),
        sort: SortOrder::NewestFirst as i32,
        page_size: PAGE_SIZE,
        page_token: page.search.page.clone(),
    };
    match console.server.list_reports_as(&caller, request).await {
        Ok(response) => {
            page.rows = response.reports.iter().map(ReportRow::from).collect();
            if !response.next_page_token.is_empty() {
                page.next = format!(
                    "/reports?{}&{}",
                    page.search.query(),
                    serde_urlencoded::to_string([("page", &response.next_page_token)])
                        .unwrap_or_default()
                );
            }
            visitor.respond(page)
        }
        Err(status) => visitor.respond(failure(visitor.chrome(), &status)),
    }
}

/// A report's facts as the page shows them.
struct ReportView {
    id: String,
    call_id: String,
    version: u32,
    status: &'static str,
    opened_by: String,
    opened_via: &'static str,
    opened_at: String,
    court: String,
    line: String,
    submitted_by: String,
    submitted_at: String,
    reviewed_by: String,
    reviewed_at: String,
    conclusion: String,
}

impl From<&Report> for ReportView {
    fn from(report: &Report) -> ReportView {
        ReportView {
            id: report.report_id.clone(),
            call_id: report.call_id.clone(),
            version: report.version,
            status: status_name(report.status()),
            opened_by: report.opened_by.clone(),
            opened_via: opened_via_name(report.opened_via()),
            opened_at: local_time(report.opened_at_ms),
            court: report.court_name.clone(),
            line: report.line_number.clone(),
            submitted_by: report.submitted_by.clone(),
            submitted_at: local_time(report.submitted_at_ms),
            reviewed_by: report.reviewed_by.clone(),
            reviewed_at: local_time(report.reviewed_at_ms),
            conclusion: report.review_conclusion.clone(),
        }
    }
}

/// One version in the report's history.
struct VersionView {
    version: u32,
    status: &'static str,
    changed_by: String,
    changed_at: String,
    fields: ReportFields,
}

/// The registration form: a new report on a call (`report` is `None`) or an
/// existing one with its history.
#[derive(Template, WebTemplate)]
#[template(path = "report.html")]
struct ReportPage {
    chrome: Chrome,
    /// The call a new report is about.
    call_id: String,
    report: Option<ReportView>,
    /// The form's fields: as stored, or as typed when a change was refused.
    fields: ReportFields,
    /// Whether the user may change the form (its owner, while a draft).
    editable: bool,
    /// Whether the user may review it (compliance, not its writer, once submitted).
    reviewable: bool,
    /// The review conclusion as typed.
    conclusion: String,
    error: String,
    /// The service's loose checks (case numbers, phone).
    warnings: Vec<String>,
    versions: Vec<VersionView>,
    kinds: [&'static str; 5],
    handlings: [&'static str; 3],
}

impl ReportPage {
    /// The form for a new report on `call_id`.
    fn new_report(
        visitor: &Visitor,
        caller: &Caller,
        call_id: String,
        fields: ReportFields,
        error: String,
    ) -> Self {
        let (kinds, handlings, _) = option_names();
        ReportPage {
            chrome: visitor.chrome(),
            call_id,
            report: None,
            fields,
            editable: may_file(caller),
            reviewable: false,
            conclusion: String::new(),
            error,
            warnings: Vec::new(),
            versions: Vec::new(),
            kinds,
            handlings,
        }
    }

    /// An existing report as `caller` sees it; `typed` replaces the stored fields
    /// (a refused change keeps what was typed).
    fn existing(
        visitor: &Visitor,
        caller: &Caller,
        response: GetReportResponse,
        typed: Option<ReportFields>,
    ) -> Self {
        let report = response.report.unwrap_or_default();
        let status = report.status();
        let owner = is_owner(&report, &caller.name);
        let (kinds, handlings, _) = option_names();
        ReportPage {
            chrome: visitor.chrome(),
            call_id: report.call_id.clone(),
            fields: typed.unwrap_or_else(|| {
                ReportFields::from_form(&report.form.clone().unwrap_or_default())
            }),
            editable: owner && status == ReportStatus::Draft && may_file(caller),
            reviewable: caller.role == Role::Compliance
                && !owner
                && report.submitted_by != caller.name
                && status == ReportStatus::Submitted,
            conclusion: String::new(),
            error: String::new(),
            warnings: response.warnings,
            versions: response
                .versions
                .iter()
                .rev()
                .map(|version| VersionView {
                    version: version.version,
                    status: status_name(version.status()),
                    changed_by: version.changed_by.clone(),
                    changed_at: local_time(version.changed_at_ms),
                    fields: ReportFields::from_form(&version.form.clone().unwrap_or_default()),
                })
                .collect(),
            kinds,
            handlings,
            report: Some(ReportView::from(&report)),
        }
    }
}

#[derive(Deserialize)]
struct NewReportQuery {
    #[serde(default)]
    call: String,
}

async fn new_report_page(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(query): Query<NewReportQuery>,
) -> Response {
    let (visitor, caller) = match console
        .allowed(
            &headers,
            peer,
            here("/reports/new", uri.query()),
            Page::Reports,
        )
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    let page = ReportPage::new_report(
        &visitor,
        &caller,
        query.call.trim().to_owned(),
        ReportFields::default(),
        String::new(),
    );
    visitor.respond(page)
}

/// The new-report form as posted.
#[derive(Deserialize)]
struct OpenForm {
    csrf: String,
    #[serde(default)]
    call: String,
    #[serde(flatten)]
    fields: ReportFields,
}

async fn open_report(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<OpenForm>,
) -> Response {
    let (visitor, caller) = match console
        .allowed_post(
            &headers,
            peer,
            "/reports/new".into(),
            Page::Reports,
            &form.csrf,
        )
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    let call_id = form.call.trim().to_owned();
    let opened = match form.fields.to_form() {
        Ok(report_form) => {
            let request = OpenReportRequest {
                call_id: call_id.clone(),
                opened_via: ReportOpenedVia::Console as i32,
                form: Some(report_form),
            };
            console.server.open_report_as(&caller, request).await
        }
        Err((key, value)) => Err(Status::invalid_argument(format!(
            "{}: {value:?}",
            visitor.lang.text(key)
        ))),
    };
    match opened {
        Ok(response) => {
            let id = response.report.unwrap_or_default().report_id;
            visitor.respond(Redirect::to(&format!("/reports/{id}")))
        }
        Err(status) => {
            let code = refusal_code(&status);
            let page = ReportPage::new_report(
                &visitor,
                &caller,
                call_id,
                form.fields,
                status.message().to_owned(),
            );
            visitor.respond((code, page))
        }
    }
}

/// The HTTP status for a refused change, shown with the form again.
fn refusal_code(status: &Status) -> StatusCode {
    match status.code() {
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    }
}

async fn report_page(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (visitor, caller) = match console
        .allowed(&headers, peer, format!("/reports/{id}"), Page::Reports)
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    show_report(&console, &visitor, &caller, id, Refused::default()).await
}

/// What a refused change leaves on the form.
#[derive(Default)]
struct Refused {
    /// The fields as typed.
    fields: Option<ReportFields>,
    /// The conclusion as typed.
    conclusion: String,
    /// Why the service refused, with its HTTP status.
    error: Option<(StatusCode, String)>,
}

impl Refused {
    /// What the service's refusal `status` leaves on the form, with what was typed.
    fn by(status: &Status, fields: Option<ReportFields>, conclusion: String) -> Refused {
        Refused {
            fields,
            conclusion,
            error: Some((refusal_code(status), status.message().to_owned())),
        }
    }
}

/// The report page, read through `GetReport`, with what a refused change left.
async fn show_report(
    console: &Console,
    visitor: &Visitor,
    caller: &Caller,
    id: String,
    refused: Refused,
) -> Response {
    let response = match console.server.get_report_as(caller, id).await {
        Ok(response) => response,
        Err(status) => return visitor.respond(failure(visitor.chrome(), &status)),
    };
    let mut page = ReportPage::existing(visitor, caller, response, refused.fields);
    page.conclusion = refused.conclusion;
    let code = match refused.error {
        Some((code, error)) => {
            page.error = error;
            code
        }
        None => StatusCode::OK,
    };
    visitor.respond((code, page))
}

/// The form of an existing report as posted: save a new version, or submit.
#[derive(Deserialize)]
struct ChangeForm {
    csrf: String,
    /// The version the form was shown at (a number; text because of the flattened fields).
    version: String,
    /// `save` or `submit`.
    action: String,
    #[serde(flatten)]
    fields: ReportFields,
}

async fn change_report(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ChangeForm>,
) -> Response {
    let (visitor, caller) = match console
        .allowed_post(
            &headers,
            peer,
            format!("/reports/{id}"),
            Page::Reports,
            &form.csrf,
        )
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    let changed: Result<(), Status> = async {
        let version = form.version.trim().parse::<u32>().map_err(|_| {
            Status::invalid_argument(format!("version {:?} is not a number", form.version))
        })?;
        let report_form = form.fields.to_form().map_err(|(key, value)| {
            Status::invalid_argument(format!("{}: {value:?}", visitor.lang.text(key)))
        })?;
        // Submitting hands in the form as shown: a changed form is saved first.
        let stored = console.server.get_report_as(&caller, id.clone()).await?;
        let stored_form = stored.report.and_then(|report| report.form);
        let version = if form.action != "submit" || stored_form.as_ref() != Some(&report_form) {
            let request = UpdateReportRequest {
                report_id: id.clone(),
                version,
                form: Some(report_form),
            };
            let updated = console.server.update_report_as(&caller, request).await?;
            updated.report.map_or(version, |report| report.version)
        } else {
            version
        };
        if form.action == "submit" {
            let request = SubmitReportRequest {
                report_id: id.clone(),
                version,
            };
            console.server.submit_report_as(&caller, request).await?;
        }
        Ok(())
    }
    .await;
    match changed {
        Ok(()) => visitor.respond(Redirect::to(&format!("/reports/{id}"))),
        Err(status) => {
            let refused = Refused::by(&status, Some(form.fields), String::new());
            show_report(&console, &visitor, &caller, id, refused).await
        }
    }
}

/// The review form as posted.
#[derive(Deserialize)]
struct ReviewForm {
    csrf: String,
    version: u32,
    #[serde(default)]
    conclusion: String,
}

async fn review_report(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ReviewForm>,
) -> Response {
    let (visitor, caller) = match console
        .allowed_post(
            &headers,
            peer,
            format!("/reports/{id}"),
            Page::Reports,
            &form.csrf,
        )
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    let request = ReviewReportRequest {
        report_id: id.clone(),
        version: form.version,
        conclusion: form.conclusion.clone(),
    };
    match console.server.review_report_as(&caller, request).await {
        Ok(_) => visitor.respond(Redirect::to(&format!("/reports/{id}"))),
        Err(status) => {
            let refused = Refused::by(&status, None, form.conclusion);
            show_report(&console, &visitor, &caller, id, refused).await
        }
    }
}

/// The paper registration sheet (A4).
#[derive(Template, WebTemplate)]
#[template(path = "report_print.html")]
struct PrintPage {
    chrome: Chrome,
    report: ReportView,
    fields: ReportFields,
    /// When it happened: as stated on the form, else when the call came in (empty
    /// if neither is known to the user).
    occurred: String,
    /// The calling number (empty if the user may not read the call).
    call_caller: String,
    kinds: [&'static str; 5],
    handlings: [&'static str; 3],
}

async fn print_page(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (visitor, caller) = match console
        .allowed(
            &headers,
            peer,
            format!("/reports/{id}/print"),
            Page::Reports,
        )
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    let response = match console.server.get_report_as(&caller, id).await {
        Ok(response) => response,
        Err(status) => return visitor.respond(failure(visitor.chrome(), &status)),
    };
    let report = response.report.unwrap_or_default();
    let (kinds, handlings, _) = option_names();
    let mut page = PrintPage {
        chrome: visitor.chrome(),
        report: ReportView::from(&report),
        fields: ReportFields::from_form(&report.form.clone().unwrap_or_default()),
        occurred: local_time(report.form.as_ref().map_or(0, |form| form.occurred_at_ms)),
        call_caller: String::new(),
        kinds,
        handlings,
    };
    // The call's time and number, for those who may read the call (an auditor may not).
    if may_see(Page::Call, caller.role, caller.under_loopback_rule) {
        match console
            .server
            .get_call_as(&caller, report.call_id.clone())
            .await
        {
            Ok(call) => {
                let record = call.record.unwrap_or_default();
                if page.occurred.is_empty() {
                    page.occurred = local_time(record.received_at_ms);
                }
                page.call_caller = record.caller_number;
            }
            Err(status) => return visitor.respond(failure(visitor.chrome(), &status)),
        }
    }
    visitor.respond(page)
}

async fn print_stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_bytes!("../assets/print.css").as_slice(),
    )
        .into_response()
}
