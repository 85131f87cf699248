//! The calls list with its search form, and the search exported as signed CSV.

use std::net::SocketAddr;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Local;
use tokio_stream::StreamExt;
use tonic::Status;

use super::{failure, here, local_time, Chrome, Page};
use crate::contract::names::{end_reason_label, end_reason_name};
use crate::contract::pb::{
    export_calls_response, CallRecord, ExportCallsRequest, ExportFormat, ListCallsRequest,
    SortOrder,
};
use crate::records::export::ExportWriter;
use crate::records::query::ALL_END_REASONS;
use crate::records::web::filter::{CallsForm, CHOICES, RANGES};
use crate::records::web::Console;

/// Calls per page.
const PAGE_SIZE: u32 = 50;

/// The calls list and the export.
pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/calls", get(calls_page))
        .route("/export.csv", get(export_csv))
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
}

impl From<&CallRecord> for CallRow {
    fn from(record: &CallRecord) -> CallRow {
        CallRow {
            id: record.call_id.clone(),
            received: local_time(record.received_at_ms),
            court: record.court_name.clone(),
            line: record.line_number.clone(),
            caller: record.caller_number.clone(),
            name: record.caller_display_name.clone(),
            end_reason: end_reason_label(record.end_reason).into_owned(),
            warning_completed: record.prompt_completed,
            connected: record.operator_answered_at_ms != 0,
            flagged: record.flagged,
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
    end_reasons: Vec<&'static str>,
    ranges: [&'static str; 3],
    choices: [&'static str; 2],
    /// The yes/no filters: field, label key, current value.
    choice_fields: Vec<(&'static str, &'static str, String)>,
    /// The search's fields as the export form resends them.
    search_fields: Vec<(String, String)>,
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
    let mut page = CallsPage {
        chrome: visitor.chrome(),
        error: String::new(),
        rows: Vec::new(),
        next: String::new(),
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
        ],
        search_fields: serde_urlencoded::from_str::<Vec<(String, String)>>(&form.query())
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .collect(),
        form,
    };
    let filter = match page.form.filter(Local::now()) {
        Ok(filter) => filter,
        Err((key, value)) => {
            page.error = format!("{}: {value:?}", lang.text(key));
            return visitor.respond((StatusCode::BAD_REQUEST, page));
        }
    };
    let request = ListCallsRequest {
        filter: Some(filter),
        page_size: PAGE_SIZE,
        page_token: page.form.page.clone(),
        sort: SortOrder::NewestFirst as i32,
    };
    match console.server.list_calls_as(&caller, request).await {
        Ok(response) => {
            page.rows = response.records.iter().map(CallRow::from).collect();
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

/// The current search as the signed CSV `courtline records export` writes.
async fn export_csv(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(form): Query<CallsForm>,
) -> Response {
    let (visitor, mut caller) = match console
        .allowed(&headers, peer, "/export.csv".into(), Page::Calls)
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    caller.reason = form.reason.trim().to_owned();
    let filter = match form.filter(Local::now()) {
        Ok(filter) => filter,
        Err((key, value)) => {
            let status = Status::invalid_argument(format!("{}: {value:?}", visitor.lang.text(key)));
            return failure(visitor.chrome(), &status);
        }
    };
    let request = ExportCallsRequest {
        filter: Some(filter),
        format: ExportFormat::Csv as i32,
        sort: SortOrder::NewestFirst as i32,
        with_audio: false,
    };
    let written: Result<Vec<u8>, Status> = async {
        let mut stream = console.server.export_calls_as(caller, request)?;
        let mut writer = ExportWriter::new(
            ExportFormat::Csv,
            console.server.hash_algorithm(),
            Vec::new(),
        )
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
    .await;
    match written {
        Ok(bytes) => {
            let name = format!(
                "courtline-export-{}.csv",
                Local::now().format("%Y%m%d-%H%M%S")
            );
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
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
