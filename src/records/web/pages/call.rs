//! One call: its course step by step (the playlist heard, each operator attempt,
//! who hung up), media figures per leg, flags and the flag form, its reports,
//! and its recording (the player and the download appear once the user has
//! said why they listen).

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
    CallRecord, CallRecording, Flag, FlagCallRequest, FlagCategory, LegMedia, PlayedPrompt,
};
use crate::records::query::order_timeline;
use crate::records::web::timeline::{steps, Step, StepKind};
use crate::records::web::Console;

/// Hex digits of a SHA-256 shown in the text (the whole hash is in the title).
const SHORT_HASH: usize = 12;

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
    /// The first [`SHORT_HASH`] digits.
    sha256_short: String,
    length_ms: u32,
    ms_heard: u32,
    /// Heard to its end.
    whole: bool,
}

impl From<&PlayedPrompt> for PromptRow {
    fn from(prompt: &PlayedPrompt) -> PromptRow {
        PromptRow {
            id: prompt.id.clone(),
            version: prompt.version.clone(),
            sha256: prompt.sha256.clone(),
            sha256_short: prompt.sha256.chars().take(SHORT_HASH).collect(),
            length_ms: prompt.length_ms,
            ms_heard: prompt.ms_sent,
            whole: prompt.ms_sent >= prompt.length_ms,
        }
    }
}

/// One leg's media figures.
struct MediaRow {
    leg: &'static str,
    sent: u64,
    received: u64,
    lost: u64,
    /// Lost of expected, percent.
    loss: String,
    /// What the peer reported losing of courtline's stream (RTCP); empty without reports.
    peer_lost: String,
    jitter_ms: String,
    rtt_ms: String,
}

impl MediaRow {
    fn new(leg: &'static str, media: &LegMedia) -> MediaRow {
        let expected = media.packets_received + media.packets_lost;
        MediaRow {
            leg,
            sent: media.packets_sent,
            received: media.packets_received,
            lost: media.packets_lost,
            loss: if expected == 0 {
                String::new()
            } else {
                format!(
                    "{:.1}%",
                    media.packets_lost as f64 * 100.0 / expected as f64
                )
            },
            peer_lost: media
                .peer_reported_lost
                .map(|lost| lost.to_string())
                .unwrap_or_default(),
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

/// One step of the call's course as the page shows it.
struct StepRow {
    /// Translation key of what happened (and the item's CSS class).
    key: &'static str,
    /// When, with the UTC offset; empty when unknown.
    at: String,
    /// The same in RFC 3339, for `<time datetime>`.
    datetime: String,
    /// The operator an operator step is about.
    target: String,
    detail: String,
    /// Translation key of who hung up (end steps).
    hung_up_by: Option<&'static str>,
    /// Chain position; `None` when the call record is the source.
    seq: Option<u64>,
    /// The warning step lists the playlist and the keys pressed.
    warning: bool,
}

impl From<&Step> for StepRow {
    fn from(step: &Step) -> StepRow {
        StepRow {
            key: step.kind.key(),
            at: local_time(step.at_ms),
            datetime: chrono::DateTime::from_timestamp_millis(step.at_ms)
                .filter(|_| step.at_ms != 0)
                .map(|time| time.to_rfc3339())
                .unwrap_or_default(),
            target: step.target.clone(),
            detail: step.detail.clone(),
            hung_up_by: step.hung_up_by.map(|who| who.key()),
            seq: step.seq,
            warning: step.kind == StepKind::WarningStarted,
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
    timeline: Vec<StepRow>,
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
    let masked = console.masks_callers(&caller);
    let mut media = Vec::new();
    if let Some(leg) = &record.caller_media {
        media.push(MediaRow::new("leg-caller", leg));
    }
    if let Some(leg) = &record.operator_media {
        media.push(MediaRow::new("leg-operator", leg));
    }
    let page = CallPage {
        chrome: visitor.chrome(),
        call: CallRow::of(&record, masked),
        ended: local_time(record.ended_at_ms),
        prompts: playlist(&record).iter().map(PromptRow::from).collect(),
        media,
        timeline: steps(&record, &timeline)
            .iter()
            .map(StepRow::from)
            .collect(),
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

/// The prompts a call played: its playlist, or for calls recorded before playlists
/// existed the one prompt the record names.
fn playlist(record: &CallRecord) -> Vec<PlayedPrompt> {
    if !record.prompts.is_empty() || record.prompt_id.is_empty() {
        return record.prompts.clone();
    }
    vec![PlayedPrompt {
        id: record.prompt_id.clone(),
        version: String::new(),
        sha256: record.prompt_sha256.clone(),
        length_ms: record.prompt_length_ms,
        ms_sent: record.prompt_ms_sent,
    }]
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
        .allowed_post(
            &headers,
            peer,
            format!("/calls/{id}"),
            Page::Calls,
            &form.csrf,
        )
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
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
