//! Signing in with a token, signing out, and the language switch.

use std::net::SocketAddr;
use std::time::Instant;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::Router;
use serde::Deserialize;

use super::{csrf_refused, error_page, home, Chrome, CsrfForm, Visitor, SESSION_COOKIE};
use crate::contract::pb::Role;
use crate::records::auth::{role_name, secret_hash};
use crate::records::web::i18n::{Lang, LANG_COOKIE};
use crate::records::web::security::{
    cookie, random_token, same_secret, set_cookie, token_sign_in_keys, Identity,
};
use crate::records::web::tls::ClientCertificate;
use crate::records::web::Console;

/// Cookie holding the sign-in form's CSRF token (double submit: there is no session yet).
const LOGIN_CSRF_COOKIE: &str = "courtline_login_csrf";

/// Sign-in, sign-out and language routes.
pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/login/certificate", post(certificate_login))
        .route("/logout", post(logout))
        .route("/lang/{tag}", get(switch_language))
}

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    error: String,
    /// The actor name and role of the client certificate this browser presented,
    /// if it has one with a role (offered as a sign-in of its own).
    certificate: Option<(String, String)>,
}

async fn login_page(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    certificate: Option<Extension<ClientCertificate>>,
    headers: HeaderMap,
) -> Response {
    let visitor = match console.visitor(&headers, peer, "/login".into()).await {
        Ok(visitor) => visitor,
        Err(response) => return response,
    };
    if let Some(caller) = visitor.caller("") {
        return visitor.respond(Redirect::to(home(caller.role, caller.under_loopback_rule)));
    }
    login_form(
        &console,
        &visitor,
        certificate.as_ref(),
        StatusCode::OK,
        String::new(),
    )
}

/// The sign-in form with a fresh double-submit CSRF token.
/// The visitor posting a sign-in form, unless `sent` is not the token of the sign-in
/// CSRF cookie (no session exists yet to hold one): then the form again with 403.
async fn login_visitor(
    console: &Console,
    headers: &HeaderMap,
    peer: SocketAddr,
    certificate: &Option<Extension<ClientCertificate>>,
    sent: &str,
) -> Result<Visitor, Response> {
    let visitor = console.visitor(headers, peer, "/login".into()).await?;
    let cookies = headers
        .get(header::COOKIE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if cookie(cookies, LOGIN_CSRF_COOKIE).is_some_and(|cookie| same_secret(cookie, sent)) {
        return Ok(visitor);
    }
    Err(login_form(
        console,
        &visitor,
        certificate.as_ref(),
        StatusCode::FORBIDDEN,
        visitor.lang.text("error-csrf"),
    ))
}

fn login_form(
    console: &Console,
    visitor: &Visitor,
    certificate: Option<&Extension<ClientCertificate>>,
    status: StatusCode,
    error: String,
) -> Response {
    let token = random_token();
    let mut chrome = visitor.chrome();
    chrome.csrf = token.clone();
    let certificate = certificate
        .and_then(|Extension(ClientCertificate(der))| {
            console.server.authenticator().certificate_actor(der).ok()
        })
        .filter(|(_, role)| *role != Role::Switchboard)
        .map(|(name, role)| (name, role_name(role).to_owned()));
    let page = LoginPage {
        chrome,
        error,
        certificate,
    };
    let mut response = (status, page).into_response();
    if let Ok(value) = HeaderValue::from_str(&set_cookie(
        LOGIN_CSRF_COOKIE,
        &token,
        console.settings.secure_cookies(),
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
    certificate: Option<Extension<ClientCertificate>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let visitor = match login_visitor(&console, &headers, peer, &certificate, &form.csrf).await {
        Ok(visitor) => visitor,
        Err(response) => return response,
    };
    let lang = visitor.lang;
    let keys = token_sign_in_keys(peer.ip(), &form.token);
    let now = Instant::now();
    let locked = console
        .lockout
        .lock()
        .map(|mut lockout| lockout.check(&keys, now))
        .unwrap_or(Ok(()));
    if let Err(wait) = locked {
        let message = format!(
            "{} ({} min)",
            lang.text("error-locked"),
            wait.as_secs().div_ceil(60)
        );
        return login_form(
            &console,
            &visitor,
            certificate.as_ref(),
            StatusCode::TOO_MANY_REQUESTS,
            message,
        );
    }
    let hash = secret_hash(&form.token);
    let known = match console.server.authenticator().identify(&hash).await {
        Ok(known) => known,
        Err(status) => return error_page(lang, &status),
    };
    let Some((name, role)) = known.filter(|(_, role)| *role != Role::Switchboard) else {
        if let Ok(mut lockout) = console.lockout.lock() {
            lockout.fail(&keys, now);
        }
        tracing::warn!(peer = %peer, "console sign-in with an unknown, revoked or switchboard token");
        return login_form(
            &console,
            &visitor,
            certificate.as_ref(),
            StatusCode::UNAUTHORIZED,
            lang.text("error-token"),
        );
    };
    if let Ok(mut lockout) = console.lockout.lock() {
        lockout.succeed(&keys);
    }
    start_session(
        &console,
        &visitor,
        Identity::Token { hash, name, role },
        role,
        now,
    )
}

/// Starts a session for `identity` (ending the visitor's old one) and sends the
/// browser to `role`'s home page with its cookie.
fn start_session(
    console: &Console,
    visitor: &Visitor,
    identity: Identity,
    role: Role,
    now: Instant,
) -> Response {
    let id = match console.sessions.lock() {
        Ok(mut sessions) => sessions.start(identity, now),
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
        set_cookie(SESSION_COOKIE, &id, console.settings.secure_cookies(), None),
        set_cookie(
            LOGIN_CSRF_COOKIE,
            "",
            console.settings.secure_cookies(),
            Some(0),
        ),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// Signs in with the client certificate of this TLS connection (mTLS), mapped to a
/// role as the gRPC side maps it.
async fn certificate_login(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    certificate: Option<Extension<ClientCertificate>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let visitor = match login_visitor(&console, &headers, peer, &certificate, &form.csrf).await {
        Ok(visitor) => visitor,
        Err(response) => return response,
    };
    let lang = visitor.lang;
    let mapped = certificate
        .as_ref()
        .map(|Extension(ClientCertificate(der))| {
            console.server.authenticator().certificate_actor(der)
        });
    match mapped {
        Some(Ok((name, role))) if role != Role::Switchboard => {
            let identity = Identity::Certificate { name, role };
            start_session(&console, &visitor, identity, role, Instant::now())
        }
        _ => {
            tracing::warn!(peer = %peer, "console certificate sign-in without a certificate that has a console role");
            login_form(
                &console,
                &visitor,
                certificate.as_ref(),
                StatusCode::UNAUTHORIZED,
                lang.text("error-certificate"),
            )
        }
    }
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
        return csrf_refused(&visitor);
    }
    if let (Some((id, _)), Ok(mut sessions)) = (&visitor.session, console.sessions.lock()) {
        sessions.end(id);
    }
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = HeaderValue::from_str(&set_cookie(
        SESSION_COOKIE,
        "",
        console.settings.secure_cookies(),
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
        console.settings.secure_cookies(),
        Some(365 * 24 * 3600),
    );
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}
