//! The admin HTTP endpoint of `courtline serve` (`[admin] listen`): `/metrics`
//! (Prometheus text format), `/healthz` (the process answers), `/readyz`
//! (whether calls should be sent here; 503 with one line per failing check) and
//! `POST /reload` (loopback clients only; see [`super::reload`]).
//!
//! A thin adapter: the metrics and the readiness decision are the switchboard's
//! ([`crate::switchboard::metrics`], [`crate::switchboard::health`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::reload::{ReloadOutcome, Reloader, CLI_USER_AGENT, USER_HEADER};
use crate::records::ledger::Ledger;
use crate::switchboard::endpoint::Monitor;
use crate::switchboard::live::Requester;

/// The Prometheus text exposition format's content type.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the handlers read.
#[derive(Clone)]
struct Admin {
    /// The running switchboard.
    monitor: Monitor,
    /// Cleared when the SIP endpoint's task has ended.
    sip_serving: Arc<AtomicBool>,
    /// The embedded records service's ledger, for its ingest count.
    ledger: Option<Ledger>,
    /// Reloads the configuration file; `None` when started without one.
    reloader: Option<Reloader>,
}

/// Serves the admin endpoint on `listener` until `stop` is cancelled.
pub fn spawn(
    listener: TcpListener,
    monitor: Monitor,
    sip_serving: Arc<AtomicBool>,
    ledger: Option<Ledger>,
    reloader: Option<Reloader>,
    stop: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/reload", post(reload))
        .with_state(Admin {
            monitor,
            sip_serving,
            ledger,
            reloader,
        });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        {
            error!("admin endpoint stopped: {e}");
        }
    });
}

async fn metrics(State(admin): State<Admin>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        admin
            .monitor
            .metrics_text(admin.ledger.as_ref().map(Ledger::events_ingested)),
    )
        .into_response()
}

/// Reloads the configuration (as SIGHUP does): 200 with what changed, 422 with
/// file, key and reason when refused, 403 from another machine.
async fn reload(
    State(admin): State<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !peer.ip().to_canonical().is_loopback() {
        return (
            StatusCode::FORBIDDEN,
            "reload is taken from this machine only (loopback); use courtline reload there, or SIGHUP\n",
        )
            .into_response();
    }
    let Some(reloader) = admin.reloader else {
        return (
            StatusCode::CONFLICT,
            "this courtline was started without a configuration file: there is nothing to reload\n",
        )
            .into_response();
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    };
    let requester = if header(header::USER_AGENT.as_str()).starts_with(CLI_USER_AGENT) {
        Requester::Cli {
            peer,
            user: header(USER_HEADER).to_owned(),
        }
    } else {
        Requester::AdminHttp { peer }
    };
    match reloader.reload(requester).await {
        ReloadOutcome::Applied(text) => (StatusCode::OK, format!("{text}\n")).into_response(),
        ReloadOutcome::Refused(text) => {
            (StatusCode::UNPROCESSABLE_ENTITY, format!("{text}\n")).into_response()
        }
    }
}

/// Alive: the runtime answers HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(admin): State<Admin>) -> Response {
    let failing = admin
        .monitor
        .readiness(admin.sip_serving.load(Ordering::Acquire))
        .failing();
    if failing.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let mut text = failing.join("\n");
        text.push('\n');
        (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
    }
}
