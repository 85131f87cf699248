//! The console's pages. This module holds what every page shares: who may see
//! which page ([`may_see`]), who is asking ([`Visitor`]), the frame around each
//! page ([`Chrome`]) and error pages; each page lives in its own module with its
//! routes. Each handler finds the visitor, checks the page against the role before
//! reading anything, and reads through the records operations, which log the access.

mod access;
mod admin;
mod audio;
mod call;
mod calls;
mod dashboard;
mod integrity;
mod patterns;
mod reports;
mod session;

use std::net::SocketAddr;
use std::time::Instant;

use askama::Template;
use askama_web::WebTemplate;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use chrono::{Local, TimeZone};
use serde::Deserialize;
use tonic::{Code, Status};

use super::i18n::{choose, Lang, LANG_COOKIE};
use super::mask::masks_callers;
use super::security::{cookie, same_secret, set_cookie, Identity, Session};
use super::Console;
use crate::contract::pb::Role;
use crate::records::auth::{loopback_actor, role_name, Caller};

/// Session cookie name.
const SESSION_COOKIE: &str = "courtline_session";
/// Name stated for loopback-rule sessions in the access log (`loopback:console`).
const LOOPBACK_NAME: &str = "console";

/// The console's routes: each page's module brings its own.
pub fn routes(console: Console) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/calls") }))
        .route("/assets/htmx.min.js", get(htmx))
        .route("/assets/console.css", get(stylesheet))
        .merge(session::routes())
        .merge(calls::routes())
        .merge(call::routes())
        .merge(access::routes())
        .merge(integrity::routes())
        .merge(reports::routes())
        .merge(audio::routes())
        .merge(admin::routes())
        .merge(dashboard::routes())
        .merge(patterns::routes())
        .with_state(console)
}

/// A page of the console, as far as who may see it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// Calls list, flagging and export: all call data.
    Calls,
    /// One call's detail (operators reach the calls their reports are about; the
    /// records operations refuse the others).
    Call,
    /// Reports: an operator's own, the compliance review queue.
    Reports,
    /// Figures per day and court, records health.
    Dashboard,
    /// Patterns across calls and their alerts.
    Patterns,
    /// The access log.
    Access,
    /// Chain verification and the signing key.
    Integrity,
    /// Tokens, retention and legal holds.
    Admin,
}

/// The navigation: path, text key and page, in the order shown.
const NAV: [(&str, &str, Page); 7] = [
    ("/dashboard", "nav-dashboard", Page::Dashboard),
    ("/calls", "nav-calls", Page::Calls),
    ("/reports", "nav-reports", Page::Reports),
    ("/patterns", "nav-patterns", Page::Patterns),
    ("/access", "nav-access", Page::Access),
    ("/integrity", "nav-integrity", Page::Integrity),
    ("/admin", "nav-admin", Page::Admin),
];

/// Whether `role` may see `page` (the records service's roles: compliance reads,
/// flags and reviews, operators file reports on their own calls, auditors read the
/// access log and verify, admins verify and administer). Under the loopback rule
/// the browser has every role, as gRPC clients do.
pub fn may_see(page: Page, role: Role, under_loopback_rule: bool) -> bool {
    use Role::*;
    under_loopback_rule
        || match page {
            Page::Calls => role == Compliance,
            Page::Call => matches!(role, Compliance | Operator),
            Page::Reports => matches!(role, Compliance | Operator | Auditor),
            Page::Dashboard => matches!(role, Compliance | Auditor | Admin),
            Page::Patterns => matches!(role, Compliance | Auditor),
            Page::Access => role == Auditor,
            Page::Integrity => matches!(role, Auditor | Admin),
            Page::Admin => role == Admin,
        }
}

/// The page a role lands on after signing in: where its daily work is.
fn home(role: Role, under_loopback_rule: bool) -> &'static str {
    [
        ("/calls", Page::Calls),
        ("/access", Page::Access),
        ("/integrity", Page::Integrity),
        ("/reports", Page::Reports),
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
pub(super) struct Visitor {
    /// Page language.
    pub(super) lang: Lang,
    /// The session, with its id.
    pub(super) session: Option<(String, Session)>,
    /// A session cookie to set (a loopback session just started).
    pub(super) set_cookie: Option<String>,
    /// Browser address.
    pub(super) peer: SocketAddr,
    /// Path and query requested.
    here: String,
}

impl Visitor {
    /// The caller the records operations log, if signed in.
    pub(super) fn caller(&self, reason: &str) -> Option<Caller> {
        let (_, session) = self.session.as_ref()?;
        let (name, role, under_loopback_rule) = match &session.identity {
            Identity::Token { name, role, .. } | Identity::Certificate { name, role } => {
                (name.clone(), *role, false)
            }
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

    /// What every page shows around its content.
    pub(super) fn chrome(&self) -> Chrome {
        let caller = self.caller("");
        let nav = NAV
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
    pub(super) fn respond(&self, response: impl IntoResponse) -> Response {
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
    pub(super) async fn visitor(
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
                    // The roles of certificates are configuration: they hold while we run.
                    Identity::Certificate { .. } => true,
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
                visitor.set_cookie = Some(set_cookie(
                    SESSION_COOKIE,
                    &id,
                    self.settings.secure_cookies(),
                    None,
                ));
                visitor.session = session.map(|session| (id, session));
            }
        }
        Ok(visitor)
    }

    /// The visitor, signed in and allowed to see `page`; otherwise the sign-in
    /// redirect or a 403 page that shows nothing of the page.
    pub(super) async fn allowed(
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

    /// Whether `caller` sees callers' numbers and names masked (`[records.web]
    /// mask_callers_for`).
    pub(super) fn masks_callers(&self, caller: &Caller) -> bool {
        masks_callers(
            caller.role,
            caller.under_loopback_rule,
            &self.settings.masked_roles,
        )
    }

    /// [`Console::allowed`] for a form posted with the CSRF token `sent`: 403 unless
    /// it is this session's.
    pub(super) async fn allowed_post(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        here: String,
        page: Page,
        sent: &str,
    ) -> Result<(Visitor, Caller), Response> {
        let (visitor, caller) = self.allowed(headers, peer, here, page).await?;
        if !Console::csrf_ok(&visitor, sent) {
            return Err(csrf_refused(&visitor));
        }
        Ok((visitor, caller))
    }

    /// Checks a POST's CSRF token against the session's.
    pub(super) fn csrf_ok(visitor: &Visitor, sent: &str) -> bool {
        visitor
            .session
            .as_ref()
            .is_some_and(|(_, session)| same_secret(&session.csrf, sent))
    }
}

/// 403 for a form without this session's CSRF token.
pub(super) fn csrf_refused(visitor: &Visitor) -> Response {
    (StatusCode::FORBIDDEN, visitor.lang.text("error-csrf")).into_response()
}

/// A page with a title and a message (403, errors).
#[derive(Template, WebTemplate)]
#[template(path = "message.html")]
pub(super) struct MessagePage {
    pub(super) chrome: Chrome,
    pub(super) title: String,
    pub(super) message: String,
}

/// The HTTP status of a records operation's failure.
fn http_status(status: &Status) -> StatusCode {
    match status.code() {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A page for a records operation's failure, with its message.
pub(super) fn error_page(lang: Lang, status: &Status) -> Response {
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

/// A page for a records operation's failure, with the page's chrome. A refusal
/// says only that it is one: the service's message may name what was refused
/// (another operator's report is "theirs").
pub(super) fn failure(chrome: Chrome, status: &Status) -> Response {
    let (title, message) = if status.code() == Code::PermissionDenied {
        (chrome.t("forbidden-title"), chrome.t("forbidden-message"))
    } else {
        (chrome.t("error-title"), status.message().to_owned())
    };
    let page = MessagePage {
        title,
        message,
        chrome,
    };
    (http_status(status), page).into_response()
}

/// Date and time of Unix ms in the machine's zone with its UTC offset
/// (`2026-12-06 11:32:05 +08:00`), for people; empty for 0. The offset is shown
/// because staff compare these times with phone bills and other systems' logs, and
/// the machine's zone is the only one courtline knows (there is no zone setting).
pub fn local_time(ms: i64) -> String {
    if ms == 0 {
        return String::new();
    }
    Local
        .timestamp_millis_opt(ms)
        .earliest()
        .map(|time| time.format("%Y-%m-%d %H:%M:%S %:z").to_string())
        .unwrap_or_default()
}

/// Path and query of a request, as the language switch returns to it.
pub(super) fn here(path: &str, query: Option<&str>) -> String {
    match query {
        Some(query) if !query.is_empty() => format!("{path}?{query}"),
        _ => path.to_owned(),
    }
}

/// A form that carries only the CSRF token (sign-out, verify).
#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

// ---- assets ----

async fn htmx() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_bytes!("../assets/htmx.min.js").as_slice(),
    )
        .into_response()
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_bytes!("../assets/console.css").as_slice(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_carry_their_utc_offset() {
        let shown = local_time(1_700_000_000_000);
        let offset = Local
            .timestamp_millis_opt(1_700_000_000_000)
            .unwrap()
            .format("%:z")
            .to_string();
        assert!(shown.ends_with(&format!(" {offset}")), "{shown}");
        assert_eq!(shown.len(), "2023-11-14 22:13:20 +00:00".len(), "{shown}");
        assert_eq!(local_time(0), "");
    }

    #[test]
    fn each_role_sees_only_its_pages() {
        use Page::*;
        let pages = [
            Calls, Call, Reports, Dashboard, Access, Integrity, Admin, Patterns,
        ];
        let table = [
            (
                Role::Compliance,
                [true, true, true, true, false, false, false, true],
            ),
            (
                Role::Operator,
                [false, true, true, false, false, false, false, false],
            ),
            (
                Role::Auditor,
                [false, false, true, true, true, true, false, true],
            ),
            (
                Role::Admin,
                [false, false, false, true, false, true, true, false],
            ),
            (Role::Switchboard, [false; 8]),
        ];
        for (role, expected) in table {
            let seen = pages.map(|page| may_see(page, role, false));
            assert_eq!(seen, expected, "{role:?}");
            assert!(pages.iter().all(|page| may_see(*page, role, true)));
        }
        assert_eq!(home(Role::Compliance, false), "/calls");
        assert_eq!(home(Role::Operator, false), "/reports");
        assert_eq!(home(Role::Auditor, false), "/access");
        assert_eq!(home(Role::Admin, false), "/integrity");
        assert_eq!(home(Role::Switchboard, false), "/login");
    }
}
