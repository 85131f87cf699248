//! The admin HTTP endpoint of `courtline serve` (`[admin] listen`): `/metrics`
//! (Prometheus text format), `/healthz` (the process answers) and `/readyz`
//! (whether calls should be sent here; 503 with one line per failing check).
//!
//! A thin adapter: the metrics and the readiness decision are the switchboard's
//! ([`crate::switchboard::metrics`], [`crate::switchboard::health`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::records::ledger::Ledger;
use crate::switchboard::endpoint::Monitor;

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
}

/// Serves the admin endpoint on `listener` until `stop` is cancelled.
pub fn spawn(
    listener: TcpListener,
    monitor: Monitor,
    sip_serving: Arc<AtomicBool>,
    ledger: Option<Ledger>,
    stop: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Admin {
            monitor,
            sip_serving,
            ledger,
        });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
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
