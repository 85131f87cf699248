//! The console's routes and pages: sign-in, calls, call detail with the flag form,
//! export, access log and integrity. Each handler finds who is asking
//! ([`Visitor`]), checks the page against the role ([`may_see`]) before reading
//! anything, and reads through the records operations, which log the access.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{Local, TimeZone};
use serde::Deserialize;
use tokio_stream::StreamExt;
use tonic::{Code, Status};

use super::filter::{CallsForm, CHOICES, RANGES};
use super::i18n::{choose, Lang, LANG_COOKIE};
use super::security::{cookie, random_token, same_secret, set_cookie, Identity, Session};
use super::Console;
use crate::contract::names::{end_reason_label, end_reason_name, flag_category_name};
use crate::contract::pb::{
    export_calls_response, AccessEntry, CallRecord, ExportCallsRequest, ExportFormat, Finding,
    Flag, FlagCallRequest, FlagCategory, LegMedia, ListAccessRequest, ListCallsRequest, Role,
    SortOrder, TimelineEvent,
};
use crate::records::auth::{loopback_actor, role_name, secret_hash, Caller};
use crate::records::export::ExportWriter;
use crate::records::query::{order_timeline, ALL_END_REASONS};

/// Session cookie name.
const SESSION_COOKIE: &str = "courtline_session";
/// Cookie holding the sign-in form's CSRF token (double submit: there is no session yet).
const LOGIN_CSRF_COOKIE: &str = "courtline_login_csrf";
/// Calls per page.
const PAGE_SIZE: u32 = 50;
/// Access entries per page.
const ACCESS_PAGE_SIZE: u32 = 100;
/// Name stated for loopback-rule sessions in the access log (`loopback:console`).
const LOOPBACK_NAME: &str = "console";

/// The console's routes.
pub fn routes(console: Console) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/calls") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/lang/{tag}", get(switch_language))
        .route("/calls", get(calls_page))
        .route("/calls/{id}", get(call_page))
        .route("/calls/{id}/flag", post(flag_call))
        .route("/export.csv", get(export_csv))
        .route("/access", get(access_page))
        .route("/integrity", get(integrity_page))
        .route("/integrity/verify", post(run_verify))
        .route("/assets/htmx.min.js", get(htmx))
        .route("/assets/console.css", get(stylesheet))
        .with_state(console)
}

/// A page of the console, as far as who may see it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// Calls list, call detail, flagging and export: call data.
    Calls,
    /// The access log.
    Access,
    /// Chain verification and the signing key.
    Integrity,
}

/// Whether `role` may see `page` (the records service's roles: compliance reads and
/// flags calls, auditors read the access log and verify, admins verify too). Under
/// the loopback rule the browser has every role, as gRPC clients do.
pub fn may_see(page: Page, role: Role, under_loopback_rule: bool) -> bool {
    under_loopback_rule
        || match page {
            Page::Calls => role == Role::Compliance,
            Page::Access => role == Role::Auditor,
            Page::Integrity => matches!(role, Role::Auditor | Role::Admin),
        }
}

/// The page a role lands on after signing in.
fn home(role: Role, under_loopback_rule: bool) -> &'static str {
    [
        ("/calls", Page::Calls),
        ("/access", Page::Access),
        ("/integrity", Page::Integrity),
    ]
    .into_iter()
    .find(|(_, page)| may_see(*page, role, under_loopback_rule))
    .map_or("/login", |(path, _)| path)
}

/// What every page shows around its content: language, who is signed in, the
/// loopback banner, the CSRF token of its forms.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// Language of the page.
    pub lang: Lang,
    /// The other language, for the switch.
    pub other: Lang,
    /// Path and query of this page (the language switch comes back here).
    pub here: String,
    /// Signed-in name and role, if signed in.
    pub user: Option<(String, String)>,
    /// Whether the loopback rule let this browser in (banner).
    pub loopback: bool,
    /// CSRF token for this session's forms.
    pub csrf: String,
    /// Pages the user may open, for the navigation.
    pub nav: Vec<(&'static str, &'static str)>,
}

impl Chrome {
    /// The text of `key` in the page's language.
    pub fn t(&self, key: &str) -> String {
        self.lang.text(key)
    }
}

/// Who is asking, from the request's cookies, headers and address.
struct Visitor {
    /// Page language.
    lang: Lang,
    /// The session, with its id.
    session: Option<(String, Session)>,
    /// A session cookie to set (a loopback session just started).
    set_cookie: Option<String>,
    /// Browser address.
    peer: SocketAddr,
    /// Path and query requested.
    here: String,
}

impl Visitor {
    /// The caller the records operations log, if signed in.
    fn caller(&self, reason: &str) -> Option<Caller> {
        let (_, session) = self.session.as_ref()?;
        let (name, role, under_loopback_rule) = match &session.identity {
            Identity::Token { name, role, .. } => (name.clone(), *role, false),
            Identity::Loopback => (loopback_actor(Some(LOOPBACK_NAME)), Role::Admin, true),
        };
        Some(Caller {
            name,
            role,
            peer: self.peer.to_string(),
            reason: reason.trim().to_owned(),
            under_loopback_rule,
        })
    }

    fn chrome(&self) -> Chrome {
        let caller = self.caller("");
        let nav = [
            ("/calls", "nav-calls", Page::Calls),
            ("/access", "nav-access", Page::Access),
            ("/integrity", "nav-integrity", Page::Integrity),
        ]
        .into_iter()
        .filter(|(_, _, page)| {
            caller
                .as_ref()
                .is_some_and(|caller| may_see(*page, caller.role, caller.under_loopback_rule))
        })
        .map(|(path, key, _)| (path, key))
        .collect();
        Chrome {
            lang: self.lang,
            other: if self.lang == Lang::ZhCn {
                Lang::EnUs
            } else {
                Lang::ZhCn
            },
            here: self.here.clone(),
            user: caller
                .as_ref()
                .map(|caller| (caller.name.clone(), role_name(caller.role).to_owned())),
            loopback: caller
                .as_ref()
                .is_some_and(|caller| caller.under_loopback_rule),
            csrf: self
                .session
                .as_ref()
                .map(|(_, session)| session.csrf.clone())
                .unwrap_or_default(),
            nav,
        }
    }

    /// `response` with the new session cookie, if one was started.
    fn respond(&self, response: impl IntoResponse) -> Response {
        let mut response = response.into_response();
        if let Some(value) = self
            .set_cookie
            .as_deref()
            .and_then(|value| HeaderValue::from_str(value).ok())
        {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
        response
    }
}

impl Console {
    /// Finds the visitor's session, checking it is still valid: a token session's
    /// token must still be valid, a loopback one needs the rule to still hold. A
    /// browser on this machine without a session gets a loopback session while the
    /// rule holds.
    async fn visitor(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        here: String,
    ) -> Result<Visitor, Response> {
        let cookies = headers
            .get(header::COOKIE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let lang = choose(
            cookie(cookies, LANG_COOKIE),
            headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|value| value.to_str().ok()),
        );
        let auth = self.server.authenticator();
        let loopback_open = auth
            .loopback_open()
            .await
            .map_err(|status| error_page(lang, &status))?
            && peer.ip().is_loopback();
        let now = Instant::now();
        let found = cookie(cookies, SESSION_COOKIE).and_then(|id| {
            let session = self.sessions.lock().ok()?.touch(id, now)?;
            Some((id.to_owned(), session))
        });
        let session = match found {
            Some((id, session)) => {
                let valid = match &session.identity {
                    Identity::Token { hash, role, .. } => auth
                        .identify(hash)
                        .await
                        .map_err(|status| error_page(lang, &status))?
                        .is_some_and(|(_, current)| current == *role),
                    Identity::Loopback => loopback_open,
                };
                if !valid {
                    if let Ok(mut sessions) = self.sessions.lock() {
                        sessions.end(&id);
                    }
                }
                valid.then_some((id, session))
            }
            None => None,
        };
        let mut visitor = Visitor {
            lang,
            session,
            set_cookie: None,
            peer,
            here,
        };
        if visitor.session.is_none() && loopback_open {
            if let Ok(mut sessions) = self.sessions.lock() {
                let id = sessions.start(Identity::Loopback, now);
                let session = sessions.touch(&id, now);
                visitor.set_cookie = Some(set_cookie(SESSION_COOKIE, &id, self.settings.tls, None));
                visitor.session = session.map(|session| (id, session));
            }
        }
        Ok(visitor)
    }

    /// The visitor, signed in and allowed to see `page`; otherwise the sign-in
    /// redirect or a 403 page that shows nothing of the page.
    async fn allowed(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        here: String,
        page: Page,
    ) -> Result<(Visitor, Caller), Response> {
        let visitor = self.visitor(headers, peer, here).await?;
        let Some(caller) = visitor.caller("") else {
            return Err(Redirect::to("/login").into_response());
        };
        if !may_see(page, caller.role, caller.under_loopback_rule) {
            let page = MessagePage {
                chrome: visitor.chrome(),
                title: visitor.lang.text("forbidden-title"),
                message: visitor.lang.text("forbidden-message"),
            };
            return Err(visitor.respond((StatusCode::FORBIDDEN, page)));
        }
        Ok((visitor, caller))
    }

    /// Checks a POST's CSRF token against the session's.
    fn csrf_ok(visitor: &Visitor, sent: &str) -> bool {
        visitor
            .session
            .as_ref()
            .is_some_and(|(_, session)| same_secret(&session.csrf, sent))
    }
}

/// A page with a title and a message (403, errors).
#[derive(Template, WebTemplate)]
#[template(path = "message.html")]
struct MessagePage {
    chrome: Chrome,
    title: String,
    message: String,
}

/// The HTTP status of a records operation's failure.
fn http_status(status: &Status) -> StatusCode {
    match status.code() {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A page for a records operation's failure, with its message.
fn error_page(lang: Lang, status: &Status) -> Response {
    let chrome = Chrome {
        lang,
        other: lang,
        here: String::new(),
        user: None,
        loopback: false,
        csrf: String::new(),
        nav: Vec::new(),
    };
    failure(chrome, status)
}

fn failure(chrome: Chrome, status: &Status) -> Response {
    let page = MessagePage {
        title: chrome.t("error-title"),
        message: status.message().to_owned(),
        chrome,
    };
    (http_status(status), page).into_response()
}

/// Local date and time of Unix ms, for people; empty for 0.
pub fn local_time(ms: i64) -> String {
    if ms == 0 {
        return String::new();
    }
    Local
        .timestamp_millis_opt(ms)
        .earliest()
        .map(|time| time.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn here(path: &str, query: Option<&str>) -> String {
    match query {
        Some(query) if !query.is_empty() => format!("{path}?{query}"),
        _ => path.to_owned(),
    }
}

// ---- sign-in ----

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    error: String,
}

async fn login_page(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let visitor = match console.visitor(&headers, peer, "/login".into()).await {
        Ok(visitor) => visitor,
        Err(response) => return response,
    };
    if let Some(caller) = visitor.caller("") {
        return visitor.respond(Redirect::to(home(caller.role, caller.under_loopback_rule)));
    }
    login_form(&console, &visitor, StatusCode::OK, String::new())
}

/// The sign-in form with a fresh double-submit CSRF token.
fn login_form(console: &Console, visitor: &Visitor, status: StatusCode, error: String) -> Response {
    let token = random_token();
    let mut chrome = visitor.chrome();
    chrome.csrf = token.clone();
    let mut response = (status, LoginPage { chrome, error }).into_response();
    if let Ok(value) = HeaderValue::from_str(&set_cookie(
        LOGIN_CSRF_COOKIE,
        &token,
        console.settings.tls,
        None,
    )) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    csrf: String,
}

async fn login(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let visitor = match console.visitor(&headers, peer, "/login".into()).await {
        Ok(visitor) => visitor,
        Err(response) => return response,
    };
    let lang = visitor.lang;
    let cookies = headers
        .get(header::COOKIE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !cookie(cookies, LOGIN_CSRF_COOKIE).is_some_and(|sent| same_secret(sent, &form.csrf)) {
        return login_form(
            &console,
            &visitor,
            StatusCode::FORBIDDEN,
            lang.text("error-csrf"),
        );
    }
    let key = format!("ip:{}", peer.ip());
    let now = Instant::now();
    let locked = console
        .lockout
        .lock()
        .map(|mut lockout| lockout.check(&key, now))
        .unwrap_or(Ok(()));
    if let Err(wait) = locked {
        let message = format!(
            "{} ({} min)",
            lang.text("error-locked"),
            wait.as_secs().div_ceil(60)
        );
        return login_form(&console, &visitor, StatusCode::TOO_MANY_REQUESTS, message);
    }
    let hash = secret_hash(&form.token);
    let known = match console.server.authenticator().identify(&hash).await {
        Ok(known) => known,
        Err(status) => return error_page(lang, &status),
    };
    let Some((name, role)) = known.filter(|(_, role)| *role != Role::Switchboard) else {
        if let Ok(mut lockout) = console.lockout.lock() {
            lockout.fail(&key, now);
        }
        tracing::warn!(peer = %peer, "console sign-in with an unknown, revoked or switchboard token");
        return login_form(
            &console,
            &visitor,
            StatusCode::UNAUTHORIZED,
            lang.text("error-token"),
        );
    };
    if let Ok(mut lockout) = console.lockout.lock() {
        lockout.succeed(&key);
    }
    let id = match console.sessions.lock() {
        Ok(mut sessions) => sessions.start(Identity::Token { hash, name, role }, now),
        Err(_) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "session store poisoned").into_response()
        }
    };
    if let Some((old, _)) = &visitor.session {
        if let Ok(mut sessions) = console.sessions.lock() {
            sessions.end(old);
        }
    }
    let mut response = Redirect::to(home(role, false)).into_response();
    for value in [
        set_cookie(SESSION_COOKIE, &id, console.settings.tls, None),
        set_cookie(LOGIN_CSRF_COOKIE, "", console.settings.tls, Some(0)),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let visitor = match console.visitor(&headers, peer, "/logout".into()).await {
        Ok(visitor) => visitor,
        Err(response) => return response,
    };
    if !Console::csrf_ok(&visitor, &form.csrf) {
        return (StatusCode::FORBIDDEN, visitor.lang.text("error-csrf")).into_response();
    }
    if let (Some((id, _)), Ok(mut sessions)) = (&visitor.session, console.sessions.lock()) {
        sessions.end(id);
    }
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = HeaderValue::from_str(&set_cookie(
        SESSION_COOKIE,
        "",
        console.settings.tls,
        Some(0),
    )) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
struct BackQuery {
    #[serde(default)]
    back: String,
}

/// Sets the language cookie and goes back to the page (a path on this site only).
async fn switch_language(
    State(console): State<Console>,
    Path(tag): Path<String>,
    Query(query): Query<BackQuery>,
) -> Response {
    let Some(lang) = Lang::from_tag(&tag) else {
        return (StatusCode::NOT_FOUND, "unknown language").into_response();
    };
    let back = if query.back.starts_with('/')
        && !query.back.starts_with("//")
        && !query.back.contains('\\')
    {
        query.back
    } else {
        "/".to_owned()
    };
    let mut response = Redirect::to(&back).into_response();
    let value = set_cookie(
        LANG_COOKIE,
        lang.tag(),
        console.settings.tls,
        Some(365 * 24 * 3600),
    );
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

// ---- calls ----

/// One row of the calls list.
struct CallRow {
    id: String,
    received: String,
    court: String,
    line: String,
    caller: String,
    name: String,
    end_reason: String,
    warning_completed: bool,
    connected: bool,
    flagged: bool,
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
}

async fn call_page(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    show_call(&console, peer, &headers, id, StatusCode::OK, String::new()).await
}

async fn show_call(
    console: &Console,
    peer: SocketAddr,
    headers: &HeaderMap,
    id: String,
    code: StatusCode,
    error: String,
) -> Response {
    let (visitor, caller) = match console
        .allowed(headers, peer, format!("/calls/{id}"), Page::Calls)
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    let response = match console.server.get_call_as(&caller, id).await {
        Ok(response) => response,
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
                StatusCode::BAD_REQUEST,
                message,
            )
            .await
        }
        Err(status) => failure(visitor.chrome(), &status),
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

// ---- access log ----

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

// ---- integrity ----

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

// ---- assets ----

async fn htmx() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_bytes!("assets/htmx.min.js").as_slice(),
    )
        .into_response()
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_bytes!("assets/console.css").as_slice(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_sees_only_its_pages() {
        use Page::*;
        let table = [
            (Role::Compliance, [true, false, false]),
            (Role::Auditor, [false, true, true]),
            (Role::Admin, [false, false, true]),
            (Role::Switchboard, [false, false, false]),
        ];
        for (role, expected) in table {
            let seen = [Calls, Access, Integrity].map(|page| may_see(page, role, false));
            assert_eq!(seen, expected, "{role:?}");
            assert!([Calls, Access, Integrity]
                .iter()
                .all(|page| may_see(*page, role, true)));
        }
        assert_eq!(home(Role::Compliance, false), "/calls");
        assert_eq!(home(Role::Auditor, false), "/access");
        assert_eq!(home(Role::Admin, false), "/integrity");
        assert_eq!(home(Role::Switchboard, false), "/login");
    }
}
