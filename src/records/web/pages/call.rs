//! One call: its timeline, prompts, media figures, flags and the flag form, its
//! reports, and its recording (the player and the download appear once the user
//! has said why they listen).

use std::net::SocketAddr;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use tonic::Code;

use super::calls::CallRow;
use super::reports::{may_file, reports_of_call, ReportRow};
use super::{failure, local_time, may_see, Chrome, Page};
use crate::contract::names::flag_category_name;
use crate::contract::pb::{
    CallRecord, CallRecording, Flag, FlagCallRequest, FlagCategory, LegMedia, TimelineEvent,
};
use crate::records::query::order_timeline;
use crate::records::web::Console;

/// The call page and its flag form.
pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/calls/{id}", get(call_page))
        .route("/calls/{id}/flag", post(flag_call))
}

/// A prompt of the playlist as the detail page shows it.
struct PromptRow {
    id: String,
    version: String,
    sha256: String,
    length_ms: u32,
    ms_heard: u32,
}

/// One leg's media figures.
struct MediaRow {
    leg: &'static str,
    sent: u64,
    received: u64,
    lost: u64,
    jitter_ms: String,
    rtt_ms: String,
}

impl MediaRow {
    fn new(leg: &'static str, media: &LegMedia) -> MediaRow {
        MediaRow {
            leg,
            sent: media.packets_sent,
            received: media.packets_received,
            lost: media.packets_lost,
            jitter_ms: format!("{:.1}", media.jitter_us as f64 / 1000.0),
            rtt_ms: media
                .rtt_us
                .map(|rtt| format!("{:.1}", rtt as f64 / 1000.0))
                .unwrap_or_default(),
        }
    }
}

/// One flag with who/when/note.
struct FlagRow {
    category: String,
    by: String,
    at: String,
    note: String,
}

impl From<&Flag> for FlagRow {
    fn from(flag: &Flag) -> FlagRow {
        FlagRow {
            category: flag_category_name(flag.category()).to_owned(),
            by: flag.flagged_by.clone(),
            at: local_time(flag.flagged_at_ms),
            note: flag.note.clone(),
        }
    }
}

/// One timeline entry.
struct TimelineRow {
    at: String,
    kind: String,
    detail: String,
    seq: u64,
}

impl From<&TimelineEvent> for TimelineRow {
    fn from(event: &TimelineEvent) -> TimelineRow {
        TimelineRow {
            at: local_time(event.at_ms),
            kind: event.kind.clone(),
            detail: event.detail.clone(),
            seq: event.seq,
        }
    }
}

/// The call's recording as the page shows it.
struct RecordingView {
    /// `stored`, `deleted`, `failed` or `not_transferred`.
    state: String,
    detail: String,
    sha256: String,
    bytes: u64,
    seconds: String,
    channels: u32,
    sample_rate: u32,
}

impl From<CallRecording> for RecordingView {
    fn from(recording: CallRecording) -> RecordingView {
        RecordingView {
            seconds: format!("{:.1}", f64::from(recording.duration_ms) / 1000.0),
            state: recording.state,
            detail: recording.detail,
            sha256: recording.sha256,
            bytes: recording.bytes,
            channels: recording.channels,
            sample_rate: recording.sample_rate,
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "call.html")]
struct CallPage {
    chrome: Chrome,
    call: CallRow,
    record: CallRecord,
    ended: String,
    prompts: Vec<PromptRow>,
    media: Vec<MediaRow>,
    timeline: Vec<TimelineRow>,
    flags: Vec<FlagRow>,
    categories: Vec<&'static str>,
    error: String,
    /// The reports on this call the user may read.
    reports: Vec<ReportRow>,
    /// Whether the user may file a report (link to the form).
    may_file: bool,
    recording: Option<RecordingView>,
    /// Whether the user may read every call's data: hear recordings, flag calls.
    reads_all_calls: bool,
    /// Why the user listens, once given: the player and the download carry it.
    reason: String,
}

/// The call page's query: why the user wants to hear the recording.
#[derive(Deserialize)]
struct CallQuery {
    #[serde(default)]
    reason: String,
}

async fn call_page(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<CallQuery>,
) -> Response {
    let reason = query.reason.trim().to_owned();
    show_call(
        &console,
        peer,
        &headers,
        id,
        reason,
        StatusCode::OK,
        String::new(),
    )
    .await
}

async fn show_call(
    console: &Console,
    peer: SocketAddr,
    headers: &HeaderMap,
    id: String,
    reason: String,
    code: StatusCode,
    error: String,
) -> Response {
    let (visitor, mut caller) = match console
        .allowed(headers, peer, format!("/calls/{id}"), Page::Call)
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    caller.reason = reason.clone();
    let response = match console.server.get_call_as(&caller, id.clone()).await {
        Ok(response) => response,
        Err(status) => return visitor.respond(failure(visitor.chrome(), &status)),
    };
    let reports = match reports_of_call(console, &caller, &id).await {
        Ok(reports) => reports,
        Err(status) => return visitor.respond(failure(visitor.chrome(), &status)),
    };
    let record = response.record.unwrap_or_default();
    let mut timeline = response.timeline;
    order_timeline(&mut timeline);
    let mut media = Vec::new();
    if let Some(leg) = &record.caller_media {
        media.push(MediaRow::new("leg-caller", leg));
    }
    if let Some(leg) = &record.operator_media {
        media.push(MediaRow::new("leg-operator", leg));
    }
    let page = CallPage {
        chrome: visitor.chrome(),
        call: CallRow::from(&record),
        ended: local_time(record.ended_at_ms),
        prompts: record
            .prompts
            .iter()
            .map(|prompt| PromptRow {
                id: prompt.id.clone(),
                version: prompt.version.clone(),
                sha256: prompt.sha256.clone(),
                length_ms: prompt.length_ms,
                ms_heard: prompt.ms_sent,
            })
            .collect(),
        media,
        timeline: timeline.iter().map(TimelineRow::from).collect(),
        flags: response.flags.iter().map(FlagRow::from).collect(),
        categories: [
            FlagCategory::ImproperInquiry,
            FlagCategory::Intercession,
            FlagCategory::ProbingCaseInformation,
            FlagCategory::Other,
        ]
        .into_iter()
        .map(flag_category_name)
        .collect(),
        error,
        record,
        reports,
        may_file: may_file(&caller),
        recording: response.recording.map(RecordingView::from),
        reads_all_calls: may_see(Page::Calls, caller.role, caller.under_loopback_rule),
        reason,
    };
    visitor.respond((code, page))
}

#[derive(Deserialize)]
struct FlagForm {
    csrf: String,
    category: String,
    #[serde(default)]
    note: String,
}

async fn flag_call(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<FlagForm>,
) -> Response {
    let (visitor, caller) = match console
        .allowed(&headers, peer, format!("/calls/{id}"), Page::Calls)
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    if !Console::csrf_ok(&visitor, &form.csrf) {
        return (StatusCode::FORBIDDEN, visitor.lang.text("error-csrf")).into_response();
    }
    let category = [
        FlagCategory::ImproperInquiry,
        FlagCategory::Intercession,
        FlagCategory::ProbingCaseInformation,
        FlagCategory::Other,
    ]
    .into_iter()
    .find(|category| flag_category_name(*category) == form.category)
    .unwrap_or(FlagCategory::Unspecified);
    let request = FlagCallRequest {
        call_id: id.clone(),
        category: category as i32,
        note: form.note,
    };
    match console.server.flag_call_as(&caller, request).await {
        Ok(_) => Redirect::to(&format!("/calls/{id}")).into_response(),
        Err(status) if status.code() == Code::InvalidArgument => {
            let message = if category == FlagCategory::Other {
                visitor.lang.text("error-note-required")
            } else {
                status.message().to_owned()
            };
            show_call(
                &console,
                peer,
                &headers,
                id,
                String::new(),
                StatusCode::BAD_REQUEST,
                message,
            )
            .await
        }
        Err(status) => failure(visitor.chrome(), &status),
    }
}
