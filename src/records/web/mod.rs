//! The web console: server-rendered pages for compliance staff and auditors, served
//! by the records service process beside its gRPC server (`[records.web] listen`).
//!
//! Every page reads through the same operations as the gRPC handlers
//! ([`RecordsServer::list_calls_as`] and the others), so each view of call data is
//! an access event on the chain exactly like a gRPC query. Sign-in exchanges one of
//! the records service's tokens for a session; the loopback rule applies as it does
//! for gRPC. The security rules themselves are in [`security`], the languages in
//! [`i18n`], the search form in [`filter`], the dashboard's SVG charts in [`chart`], the pages in
//! [`pages`].

pub mod chart;
pub mod filter;
pub mod i18n;
pub mod pages;
pub mod security;

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
use security::{check_host, HostCheck, Lockout, Sessions, SECURITY_HEADERS};

/// Everything the console needs from `[records.web]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSettings {
    /// `Host` header values accepted (names, or `name:port`).
    pub hosts: Vec<String>,
    /// Sessions end after this long without a request.
    pub session_idle: Duration,
    /// Whether the console is reached over TLS (cookies get `Secure`).
    pub tls: bool,
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
    /// Failed sign-ins per source address.
    lockout: Arc<Mutex<Lockout>>,
}

/// Serves the console on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    server: RecordsServer,
    settings: WebSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    info!(%address, "records web console listening");
    let console = Console {
        server,
        sessions: Arc::new(Mutex::new(Sessions::new(settings.session_idle))),
        settings: Arc::new(settings),
        lockout: Arc::new(Mutex::new(Lockout::default())),
    };
    let app = pages::routes(console.clone())
        .layer(axum::middleware::from_fn_with_state(console, guard))
        .into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
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
