//! The admin HTTP endpoint (`[admin] listen`) of `courtline serve` and of
//! `courtline records serve`: `/metrics` (Prometheus text format), `/healthz` (the
//! process answers), `/readyz` (whether traffic should be sent here; 503 with one
//! line per failing check) and, for the switchboard, `POST /reload` (loopback
//! clients only; see [`super::reload`]).
//!
//! A thin adapter: the metrics and the readiness decisions are the switchboard's
//! ([`crate::switchboard::metrics`], [`crate::switchboard::health`]) and the records
//! service's ([`crate::records::metrics`], [`crate::records::health`]).

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
use crate::records::monitor::RecordsMonitor;
use crate::switchboard::endpoint::Monitor;
use crate::switchboard::live::Requester;

/// The Prometheus text exposition format's content type.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the endpoint serves.
#[derive(Clone)]
pub enum Served {
    /// `courtline serve`: the switchboard, and the records service it embeds, if any.
    Switchboard {
        /// The running switchboard.
        monitor: Monitor,
        /// Cleared when the SIP endpoint's task has ended.
        sip_serving: Arc<AtomicBool>,
        /// The embedded records service's metrics; its readiness is not the
        /// switchboard's (the spool rides out a records outage).
        records: Option<RecordsMonitor>,
        /// Reloads the configuration file; `None` when started without one.
        reloader: Option<Reloader>,
    },
    /// `courtline records serve`: the records service alone (nothing to reload).
    Records(RecordsMonitor),
}

/// Serves the admin endpoint on `listener` until `stop` is cancelled.
pub fn spawn(listener: TcpListener, served: Served, stop: CancellationToken) {
    let reloads = matches!(served, Served::Switchboard { .. });
    let mut app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if reloads {
        app = app.route("/reload", post(reload));
    }
    let app = app.with_state(served);
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

async fn metrics(State(served): State<Served>) -> Response {
    let text = match &served {
        Served::Switchboard {
            monitor, records, ..
        } => {
            let mut text = monitor.metrics_text();
            if let Some(records) = records {
                text.push_str(&records.metrics_text().await);
            }
            text
        }
        Served::Records(records) => records.metrics_text().await,
    };
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response()
}

/// Reloads the configuration (as SIGHUP does): 200 with what changed, 422 with
/// file, key and reason when refused, 403 from another machine.
async fn reload(
    State(served): State<Served>,
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
    let Served::Switchboard {
        reloader: Some(reloader),
        ..
    } = served
    else {
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

async fn readyz(State(served): State<Served>) -> Response {
    let failing = match &served {
        Served::Switchboard {
            monitor,
            sip_serving,
            ..
        } => monitor
            .readiness(sip_serving.load(Ordering::Acquire))
            .failing(),
        Served::Records(records) => records.readiness().await.failing(),
    };
    if failing.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let mut text = failing.join("\n");
        text.push('\n');
        (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
    }
}
