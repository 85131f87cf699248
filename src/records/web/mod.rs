//! The web console: server-rendered pages for compliance staff and auditors, served
//! by the records service process beside its gRPC server (`[records.web] listen`).
//!
//! Every page reads through the same operations as the gRPC handlers
//! ([`RecordsServer::list_calls_as`] and the others), so each view of call data is
//! an access event on the chain exactly like a gRPC query. Sign-in exchanges one of
//! the records service's tokens (or, under mTLS, a client certificate) for a session;
//! the loopback rule applies as it does for gRPC. The security rules themselves are
//! in [`security`], HTTPS with the service's own files in [`tls`], the languages in
//! [`i18n`], the search form in [`filter`], the report form in [`report_form`],
//! caller masking in [`mask`], a call's course in [`timeline`], the dashboard's SVG
//! charts in [`chart`], the background verification's bookkeeping in
//! [`verification`], the pages in [`pages`].

pub mod chart;
pub mod filter;
pub mod i18n;
pub mod mask;
pub mod pages;
pub mod report_form;
pub mod security;
pub mod timeline;
pub mod tls;
pub mod verification;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tracing::info;

use super::service::RecordsServer;
use crate::contract::pb::Role;
use security::{check_host, HostCheck, Lockout, Sessions, SECURITY_HEADERS};
use tls::WebTls;
use verification::Verifications;

/// Everything the console needs from `[records.web]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSettings {
    /// `Host` header values accepted (names, or `name:port`).
    pub hosts: Vec<String>,
    /// Sessions end after this long without a request.
    pub session_idle: Duration,
    /// Roles that see callers' numbers and names masked ([`mask`]).
    pub masked_roles: Vec<Role>,
    /// HTTPS with these files (cookies get `Secure`); `None`: plain HTTP.
    pub tls: Option<WebTls>,
}

impl WebSettings {
    /// Whether cookies get `Secure`: only sent back over HTTPS.
    pub fn secure_cookies(&self) -> bool {
        self.tls.is_some()
    }
}

/// The console's shared state.
#[derive(Clone)]
pub struct Console {
    /// The records operations (authorisation data, queries, access logging).
    server: RecordsServer,
    /// Configuration.
    settings: Arc<WebSettings>,
    /// Signed-in browsers.
    sessions: Arc<Mutex<Sessions>>,
    /// Failed sign-ins per source address and per sign-in name.
    lockout: Arc<Mutex<Lockout>>,
    /// The chain verification started from the console (one at a time).
    verifications: Arc<Mutex<Verifications>>,
}

/// Serves the console on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    server: RecordsServer,
    settings: WebSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    let tls = settings
        .tls
        .as_ref()
        .map(tls::server_config)
        .transpose()
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
    info!(%address, tls = tls.is_some(), "records web console listening");
    let console = Console {
        server,
        sessions: Arc::new(Mutex::new(Sessions::new(settings.session_idle))),
        settings: Arc::new(settings),
        lockout: Arc::new(Mutex::new(Lockout::default())),
        verifications: Arc::new(Mutex::new(Verifications::default())),
    };
    let app =
        pages::routes(console.clone()).layer(axum::middleware::from_fn_with_state(console, guard));
    match tls {
        Some(config) => tls::serve(listener, app, config, shutdown).await,
        None => {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
    }
}

/// Every request: the `Host` header must be one of ours (DNS rebinding), and every
/// response carries the security headers.
async fn guard(State(console): State<Console>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok());
    let mut response = match check_host(host, &console.settings.hosts) {
        HostCheck::Ours => next.run(request).await,
        HostCheck::Missing => (StatusCode::BAD_REQUEST, "missing Host header").into_response(),
        HostCheck::Foreign => (
            StatusCode::MISDIRECTED_REQUEST,
            "this console does not answer to that host name ([records.web] hosts)",
        )
            .into_response(),
    };
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
