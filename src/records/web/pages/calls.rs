//! The calls list with its search form and match count, and the search exported as a
//! signed CSV or JSONL file after the user has said why.

use std::net::SocketAddr;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Local;
use serde::Deserialize;
use tokio_stream::StreamExt;
use tonic::Status;

use super::{failure, here, local_time, Chrome, Page, Visitor};
use crate::contract::names::{end_reason_label, end_reason_name};
use crate::contract::pb::{
    export_calls_response, CallFilter, CallRecord, ExportCallsRequest, ExportFormat,
    ListCallsRequest, SortOrder,
};
use crate::records::auth::Caller;
use crate::records::export::ExportWriter;
use crate::records::query::ALL_END_REASONS;
use crate::records::web::filter::{CallsForm, CHOICES, RANGES};
use crate::records::web::mask::{mask_name, mask_number};
use crate::records::web::Console;

/// Calls per page.
const PAGE_SIZE: u32 = 50;

/// The export file formats offered: form value and format.
const EXPORT_FORMATS: [(&str, ExportFormat); 2] =
    [("csv", ExportFormat::Csv), ("jsonl", ExportFormat::Jsonl)];

/// The calls list and the export.
pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/calls", get(calls_page))
        .route("/calls/export", get(export_form).post(export))
}

/// One row of the calls list.
pub(super) struct CallRow {
    pub(super) id: String,
    pub(super) received: String,
    pub(super) court: String,
    pub(super) line: String,
    pub(super) caller: String,
    pub(super) name: String,
    pub(super) end_reason: String,
    pub(super) warning_completed: bool,
    pub(super) connected: bool,
    pub(super) flagged: bool,
    /// A synthetic probe call: marked, so nobody takes it for a caller.
    pub(super) probe: bool,
}

impl CallRow {
    /// The row of `record`, its caller masked when `masked`.
    pub(super) fn of(record: &CallRecord, masked: bool) -> CallRow {
        let (caller, name) = if masked {
            (
                mask_number(&record.caller_number),
                mask_name(&record.caller_display_name),
            )
        } else {
            (
                record.caller_number.clone(),
                record.caller_display_name.clone(),
            )
        };
        CallRow {
            id: record.call_id.clone(),
            received: local_time(record.received_at_ms),
            court: record.court_name.clone(),
            line: record.line_number.clone(),
            caller,
            name,
            end_reason: end_reason_label(record.end_reason).into_owned(),
            warning_completed: record.prompt_completed,
            connected: record.operator_answered_at_ms != 0,
            flagged: record.flagged,
            probe: record.probe,
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "calls.html")]
struct CallsPage {
    chrome: Chrome,
    form: CallsForm,
    error: String,
    rows: Vec<CallRow>,
    next: String,
    /// How many calls match, for people (`1,234`, `10,000+`); empty on later pages.
    total: String,
    /// The searched time range, for people; empty when unbounded.
    range: String,
    /// Whether callers are masked (their search fields are then left out).
    masked: bool,
    /// The export form's address with this search.
    export: String,
    end_reasons: Vec<&'static str>,
    ranges: [&'static str; 3],
    choices: [&'static str; 2],
    /// The yes/no filters: field, label key, current value.
    choice_fields: Vec<(&'static str, &'static str, String)>,
}

async fn calls_page(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(form): Query<CallsForm>,
) -> Response {
    let (visitor, caller) = match console
        .allowed(&headers, peer, here("/calls", uri.query()), Page::Calls)
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    let lang = visitor.lang;
    let masked = console.masks_callers(&caller);
    let mut page = CallsPage {
        chrome: visitor.chrome(),
        error: String::new(),
        rows: Vec::new(),
        next: String::new(),
        total: String::new(),
        range: String::new(),
        masked,
        export: format!("/calls/export?{}", form.query()),
        end_reasons: ALL_END_REASONS[1..]
            .iter()
            .map(|reason| end_reason_name(*reason))
            .collect(),
        ranges: RANGES,
        choices: CHOICES,
        choice_fields: vec![
            ("warning", "filter-warning", form.warning.clone()),
            ("connected", "filter-connected", form.connected.clone()),
            ("flagged", "filter-flagged", form.flagged.clone()),
            ("has_report", "filter-has-report", form.has_report.clone()),
            (
                "has_recording",
                "filter-has-recording",
                form.has_recording.clone(),
            ),
            ("probe", "filter-probe", form.probe.clone()),
        ],
        form,
    };
    let filter = match search_filter(&page.form, masked) {
        Ok(filter) => filter,
        Err((key, value)) => {
            page.error = format!("{}: {value:?}", lang.text(key));
            return visitor.respond((StatusCode::BAD_REQUEST, page));
        }
    };
    page.range = time_range(&filter, &lang.text("range-to"));
    let request = ListCallsRequest {
        filter: Some(filter),
        page_size: PAGE_SIZE,
        page_token: page.form.page.clone(),
        sort: SortOrder::NewestFirst as i32,
    };
    match console.server.list_calls_as(&caller, request).await {
        Ok(response) => {
            page.rows = response
                .records
                .iter()
                .map(|record| CallRow::of(record, masked))
                .collect();
            if page.form.page.is_empty() {
                page.total = count_text(response.total, response.total_capped);
            }
            if !response.next_page_token.is_empty() {
                page.next = format!(
                    "/calls?{}&{}",
                    page.form.query(),
                    serde_urlencoded::to_string([("page", &response.next_page_token)])
                        .unwrap_or_default()
                );
            }
            visitor.respond(page)
        }
        Err(status) => visitor.respond(failure(visitor.chrome(), &status)),
    }
}

/// The `ListCalls` filter of the form; a masked visitor may not search by caller
/// (matches would tell the number or name the masking hides).
fn search_filter(form: &CallsForm, masked: bool) -> Result<CallFilter, (&'static str, String)> {
    if masked {
        if let Some(value) = [&form.caller, &form.name]
            .into_iter()
            .find(|value| !value.trim().is_empty())
        {
            return Err(("error-masked-search", value.clone()));
        }
    }
    form.filter(Local::now())
}

/// `n` with thousands separators, and `+` when the count stopped at the cap.
fn count_text(n: u64, capped: bool) -> String {
    let digits = n.to_string();
    let mut text = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            text.push(',');
        }
        text.push(digit);
    }
    if capped {
        text.push('+');
    }
    text
}

/// The searched time range with UTC offsets (`… to …`); empty when unbounded.
fn time_range(filter: &CallFilter, to: &str) -> String {
    if filter.since_ms == 0 && filter.until_ms == 0 {
        return String::new();
    }
    format!(
        "{} {to} {}",
        local_time(filter.since_ms),
        local_time(filter.until_ms)
    )
    .trim()
    .to_owned()
}

#[derive(Template, WebTemplate)]
#[template(path = "export.html")]
struct ExportPage {
    chrome: Chrome,
    error: String,
    /// The search, as hidden fields and as the summary shown.
    fields: Vec<(String, String)>,
    /// The searched time range, for people.
    range: String,
    /// The chosen format's form value.
    format: String,
    /// The formats offered (form values).
    formats: [&'static str; 2],
    reason: String,
    /// The calls page with this search, to go back to.
    back: String,
}

impl ExportPage {
    fn new(visitor: &Visitor, form: &CallsForm, format: &str, reason: &str) -> ExportPage {
        let range = form
            .filter(Local::now())
            .map(|filter| time_range(&filter, &visitor.lang.text("range-to")))
            .unwrap_or_default();
        ExportPage {
            chrome: visitor.chrome(),
            error: String::new(),
            fields: form.fields(),
            range,
            format: format.to_owned(),
            formats: EXPORT_FORMATS.map(|(name, _)| name),
            reason: reason.to_owned(),
            back: format!("/calls?{}", form.query()),
        }
    }
}

/// The reason prompt before an export.
async fn export_form(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(form): Query<CallsForm>,
) -> Response {
    let (visitor, caller) = match console
        .allowed(
            &headers,
            peer,
            here("/calls/export", uri.query()),
            Page::Calls,
        )
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    if let Some(refusal) = masked_export(&console, &visitor, &caller) {
        return refusal;
    }
    visitor.respond(ExportPage::new(&visitor, &form, "csv", ""))
}

/// The export form as posted: the search, the format, the reason.
#[derive(Deserialize)]
struct ExportForm {
    csrf: String,
    #[serde(default)]
    format: String,
    #[serde(default)]
    reason: String,
    #[serde(flatten)]
    search: CallsForm,
}

/// The refusal for a visitor who sees callers masked: an export's rows are signed
/// as stored, so they cannot be masked; such roles export nothing.
fn masked_export(console: &Console, visitor: &Visitor, caller: &Caller) -> Option<Response> {
    console.masks_callers(caller).then(|| {
        let status = Status::permission_denied(visitor.lang.text("error-masked-export"));
        visitor.respond(failure(visitor.chrome(), &status))
    })
}

/// The current search as the signed file `courtline records export` writes, the
/// reason going into the access log and the manifest.
async fn export(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<ExportForm>,
) -> Response {
    let (visitor, mut caller) = match console
        .allowed_post(
            &headers,
            peer,
            "/calls/export".into(),
            Page::Calls,
            &form.csrf,
        )
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    if let Some(refusal) = masked_export(&console, &visitor, &caller) {
        return refusal;
    }
    let Some((extension, format)) = EXPORT_FORMATS
        .into_iter()
        .find(|(name, _)| *name == form.format)
    else {
        let mut page = ExportPage::new(&visitor, &form.search, "csv", &form.reason);
        page.error = format!(
            "{}: {:?}",
            visitor.lang.text("error-export-format"),
            form.format
        );
        return visitor.respond((StatusCode::BAD_REQUEST, page));
    };
    if form.reason.trim().is_empty() {
        let mut page = ExportPage::new(&visitor, &form.search, extension, "");
        page.error = visitor.lang.text("error-export-reason");
        return visitor.respond((StatusCode::BAD_REQUEST, page));
    }
    caller.reason = form.reason.trim().to_owned();
    let filter = match form.search.filter(Local::now()) {
        Ok(filter) => filter,
        Err((key, value)) => {
            let mut page = ExportPage::new(&visitor, &form.search, extension, &form.reason);
            page.error = format!("{}: {value:?}", visitor.lang.text(key));
            return visitor.respond((StatusCode::BAD_REQUEST, page));
        }
    };
    let request = ExportCallsRequest {
        filter: Some(filter),
        format: format as i32,
        sort: SortOrder::NewestFirst as i32,
        with_audio: false,
    };
    match signed_export(&console, caller, request).await {
        Ok(bytes) => {
            let name = format!(
                "courtline-export-{}.{extension}",
                Local::now().format("%Y%m%d-%H%M%S")
            );
            let content_type = match format {
                ExportFormat::Jsonl => "application/x-ndjson; charset=utf-8",
                _ => "text/csv; charset=utf-8",
            };
            (
                [
                    (header::CONTENT_TYPE, content_type.to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{name}\""),
                    ),
                ],
                bytes,
            )
                .into_response()
        }
        Err(status) => failure(visitor.chrome(), &status),
    }
}

/// The export file of `request`: its rows and the service's signed manifest.
async fn signed_export(
    console: &Console,
    caller: Caller,
    request: ExportCallsRequest,
) -> Result<Vec<u8>, Status> {
    let format = request.format();
    let mut stream = console.server.export_calls_as(caller, request)?;
    let mut writer = ExportWriter::new(format, console.server.hash_algorithm(), Vec::new())
        .map_err(|error| Status::internal(error.to_string()))?;
    while let Some(item) = stream.next().await {
        match item?.item {
            Some(export_calls_response::Item::Record(record)) => writer
                .write(&record)
                .map_err(|error| Status::internal(error.to_string()))?,
            Some(export_calls_response::Item::Manifest(manifest)) => {
                return writer
                    .finish(&manifest)
                    .map_err(|error| Status::internal(error.to_string()));
            }
            _ => {}
        }
    }
    Err(Status::internal("the export ended without its manifest"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped_and_a_capped_count_says_so() {
        assert_eq!(count_text(0, false), "0");
        assert_eq!(count_text(999, false), "999");
        assert_eq!(count_text(1_000, false), "1,000");
        assert_eq!(count_text(1_234_567, false), "1,234,567");
        assert_eq!(count_text(10_000, true), "10,000+");
    }

    #[test]
    fn masked_visitors_cannot_search_by_caller() {
        let form = CallsForm {
            name: "欧阳".into(),
            ..CallsForm::default()
        };
        assert_eq!(
            search_filter(&form, true),
            Err(("error-masked-search", "欧阳".to_owned()))
        );
        assert_eq!(
            search_filter(&form, false).unwrap().caller_name_contains,
            "欧阳"
        );
        assert!(search_filter(&CallsForm::default(), true).is_ok());
    }

    #[test]
    fn a_masked_row_hides_number_and_name_only() {
        let record = CallRecord {
            call_id: "c1".into(),
            caller_number: "13912345678".into(),
            caller_display_name: "欧阳娜娜".into(),
            court_name: "广州互联网法院".into(),
            ..CallRecord::default()
        };
        let row = CallRow::of(&record, true);
        assert_eq!(
            (row.caller.as_str(), row.name.as_str()),
            ("139****5678", "欧***")
        );
        assert_eq!(row.court, "广州互联网法院");
        let row = CallRow::of(&record, false);
        assert_eq!(row.caller, "13912345678");
    }
}
