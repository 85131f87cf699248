//! `courtline serve` and `courtline records serve`: start, run until Ctrl-C or
//! SIGTERM, and shut down without losing a record.
//!
//! [`start`] is also what the integration tests use, on `127.0.0.1:0`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::media::prompt::{Prompt, PromptError};
use crate::records::client::{RecordDelivery, RecordSender};
use crate::records::service::{serve_with_listener, ServiceError};
use crate::records::store::CallStore;
use crate::sip::Switchboard;

/// How long shutdown waits for calls to end and records to be delivered.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads every configured prompt; all problems are reported, not just the first.
pub fn load_prompts(config: &Config) -> Result<HashMap<String, Prompt>, Vec<PromptError>> {
    let mut prompts = HashMap::new();
    let mut problems = Vec::new();
    for (id, prompt) in &config.prompts {
        match Prompt::load(id, &prompt.file, config.media.leading_silence_ms) {
            Ok(loaded) => {
                prompts.insert(id.clone(), loaded);
            }
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        Ok(prompts)
    } else {
        Err(problems)
    }
}

/// A running switchboard (plus embedded records service).
pub struct Running {
    /// Where SIP is received.
    pub sip_addr: SocketAddr,
    /// Where the embedded records service listens, if it runs.
    pub records_addr: Option<SocketAddr>,
    /// Calls in progress.
    pub active_calls: Arc<AtomicUsize>,
    /// Stops the switchboard (calls end with BYE and are recorded).
    calls_shutdown: CancellationToken,
    /// Stops the embedded records service, after the last record is delivered.
    records_shutdown: CancellationToken,
    /// The switchboard task.
    switchboard: JoinHandle<()>,
    /// The record delivery task, flushed on shutdown.
    delivery: RecordDelivery,
    /// The embedded records service task.
    records: Option<JoinHandle<Result<(), ServiceError>>>,
}

/// Loads prompts, starts the embedded records service (if enabled) and the switchboard.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let prompts = load_prompts(&config).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
        anyhow::anyhow!("prompt files could not be loaded:\n{}", lines.join("\n"))
    })?;
    for prompt in prompts.values() {
        info!(
            prompt = %prompt.id,
            file = %prompt.path.display(),
            sha256 = %prompt.sha256,
            length_ms = prompt.frames.duration_ms(),
            "prompt loaded"
        );
    }
    let records_shutdown = CancellationToken::new();
    let (records_addr, records, endpoint) = if config.records.service.embedded {
        let service = &config.records.service;
        let store = CallStore::open(&service.database)
            .await
            .with_context(|| format!("records database {}", service.database))?;
        let listener = TcpListener::bind(service.listen).await.with_context(|| {
            format!(
                "cannot listen for gRPC on {} ([records.service] listen); is another courtline running?",
                service.listen
            )
        })?;
        let addr = listener.local_addr()?;
        let token = records_shutdown.clone();
        let task = tokio::spawn(serve_with_listener(listener, store, async move {
            token.cancelled().await
        }));
        // The embedded service is where this switchboard's records go.
        (Some(addr), Some(task), format!("http://{addr}"))
    } else {
        (None, None, config.records.endpoint.clone())
    };
    let (sender, delivery) = RecordSender::spawn(endpoint);
    let calls_shutdown = CancellationToken::new();
    let switchboard = Switchboard::bind(config, prompts, sender, calls_shutdown.clone()).await?;
    let sip_addr = switchboard.local_addr();
    let active_calls = switchboard.active_calls();
    let switchboard = tokio::spawn(async move {
        if let Err(e) = switchboard.run().await {
            error!("switchboard stopped: {e}");
        }
    });
    Ok(Running {
        sip_addr,
        records_addr,
        active_calls,
        calls_shutdown,
        records_shutdown,
        switchboard,
        delivery,
        records,
    })
}

impl Running {
    /// Ends every call (BYE, recorded), delivers outstanding records, stops the
    /// records service.
    pub async fn shutdown(self) {
        self.calls_shutdown.cancel();
        let _ = self.switchboard.await;
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        while self.active_calls.load(Ordering::Acquire) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.active_calls.load(Ordering::Acquire);
        if left > 0 {
            warn!(calls = left, "calls still up at shutdown");
        }
        let stats = self.delivery.finish(DRAIN_TIMEOUT).await;
        info!(
            delivered = stats.delivered,
            undelivered = stats.undelivered,
            "call records flushed"
        );
        self.records_shutdown.cancel();
        if let Some(records) = self.records {
            match records.await {
                Ok(Err(e)) => error!("records service: {e}"),
                Err(e) => error!("records service task: {e}"),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// `courtline serve`.
pub async fn serve_until_signal(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let running = start(config).await?;
    info!(sip = %running.sip_addr, records = ?running.records_addr, "courtline is up; Ctrl-C to stop");
    wait_for_signal().await;
    info!("shutting down: ending calls and flushing records");
    running.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// `courtline records serve`.
pub async fn records_until_signal(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let service = &config.records.service;
    crate::records::service::serve(service.listen, &service.database, wait_for_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
