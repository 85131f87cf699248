//! `courtline serve` and `courtline records serve`: start, run until Ctrl-C or
//! SIGTERM, and shut down without losing a record. `courtline serve` drains
//! first: the first signal stops new calls and lets calls in progress finish
//! (up to `[sip] drain_timeout_s`); a second signal ends them at once. Under
//! systemd it reports readiness and the drain (`systemd.rs`).
//!
//! [`start`] is also what the integration tests use, on `127.0.0.1:0`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cli::reload::Reloader;
use crate::config::{Config, LineConfig, OneOrList};
use crate::contract::connect::{read_token_file, ClientOptions};
use crate::records::monitor::RecordsMonitor;
use crate::records::service::{OpenedService, ServiceError};
use crate::switchboard::delivery::endpoints::RecordsEndpoints;
use crate::switchboard::delivery::history::CallerHistoryLookup;
use crate::switchboard::delivery::sender::{RecordDelivery, RecordSender};
use crate::switchboard::delivery::spool::Spool;
use crate::switchboard::delivery::upload::{UploadDelivery, Uploads};
use crate::switchboard::endpoint::Monitor;
use crate::switchboard::live::{
    LiveConfig, PlaylistSchedule, PromptVersion, PromptVersions, Requester,
};
use crate::switchboard::media::prompt::{LinePlaylists, Playlist, Prompt, PromptError};
use crate::switchboard::Switchboard;

use super::{admin, systemd};

/// How long shutdown waits for ended calls to hang up and records to be delivered.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often draining looks whether the last call has ended.
const DRAIN_POLL: Duration = Duration::from_millis(100);
/// How long systemd is asked to wait for shutdown after the drain: calls
/// ending (up to 10 s) and records flushed (up to 10 s), with room to spare.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

/// A prompt that cannot be played, with where it was configured.
#[derive(Debug, thiserror::Error)]
#[error("{config_file}: `{key}` = {configured:?}{resolved}: {error}")]
pub struct PromptProblem {
    /// The configuration file (or "built-in example configuration").
    pub config_file: String,
    /// The `[prompts.<id>]` id.
    pub id: String,
    /// The key naming the file: `prompts.<id>.file` or `prompts.<id>.versions[<n>].file`.
    pub key: String,
    /// The path as written in the configuration.
    pub configured: String,
    /// How a relative path was resolved, for the message; empty for an absolute one.
    resolved: String,
    /// What is wrong with the file (its message names the absolute path).
    pub error: PromptError,
}

/// Loads every configured prompt and each of its scheduled versions, in the order
/// they go live; all problems are reported, not just the first. Relative paths are
/// resolved from the working directory; the prompts keep (and messages show) the
/// absolute path.
pub fn load_prompts(config: &Config) -> Result<PromptVersions, Vec<PromptProblem>> {
    let mut prompts = PromptVersions::new();
    let mut problems = Vec::new();
    for (id, prompt) in &config.prompts {
        let scheduled = prompt.versions.iter().enumerate().map(|(i, version)| {
            (
                format!("prompts.{id}.versions[{i}].file"),
                &version.file,
                &version.version,
                Some(version.valid_from.with_timezone(&chrono::Utc)),
            )
        });
        let files = std::iter::once((
            format!("prompts.{id}.file"),
            &prompt.file,
            &prompt.version,
            None,
        ))
        .chain(scheduled);
        let mut versions = Vec::new();
        for (key, file, label, valid_from) in files {
            let absolute = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            match Prompt::load(id, label, &absolute) {
                Ok(prompt) => versions.push(PromptVersion { valid_from, prompt }),
                Err(error) => problems.push(PromptProblem {
                    config_file: config.origins.locate(&format!("prompts.{id}")).0,
                    id: id.clone(),
                    key,
                    configured: file.display().to_string(),
                    resolved: if file.is_relative() {
                        " (relative paths are resolved from the working directory)".into()
                    } else {
                        String::new()
                    },
                    error,
                }),
            }
        }
        prompts.insert(id.clone(), versions);
    }
    if problems.is_empty() {
        Ok(prompts)
    } else {
        Err(problems)
    }
}

/// Everything `config` needs to go live: every prompt version loaded and
/// pre-encoded, each line's playlists for now and for every scheduled change to come.
/// Logs each prompt version with its levels and warnings.
pub fn load_live(config: Config) -> Result<LiveConfig, Vec<PromptProblem>> {
    let prompts = load_prompts(&config)?;
    let schedule = PlaylistSchedule::build(&prompts, chrono::Utc::now(), |chosen| {
        playlists(&config, chosen)
    });
    let live = LiveConfig::new(config, &prompts, schedule);
    for version in prompts.values().flatten() {
        let prompt = &version.prompt;
        let levels = &prompt.levels;
        info!(
            prompt = %prompt.id,
            version = %prompt.version,
            valid_from = ?version.valid_from,
            file = %prompt.path.display(),
            sha256 = %prompt.sha256,
            length_ms = prompt.frames.duration_ms(),
            peak_dbfs = format!("{:.1}", levels.peak_dbfs),
            rms_dbfs = format!("{:.1}", levels.rms_dbfs),
            config_sha256 = %live.sha256,
            "prompt loaded"
        );
        for warning in levels.warnings() {
            warn!(prompt = %prompt.id, file = %prompt.path.display(), "{warning}");
        }
    }
    Ok(live)
}

/// Each line's playlists by line number: `media.leading_silence_ms` of
/// silence, then its prompts with `prompt_gap_ms` between them; the same for
/// its after-hours prompts. Lines naming a prompt that is not loaded are left
/// out (validation makes that impossible), and the switchboard refuses their
/// calls rather than skip the warning.
pub fn playlists(config: &Config, prompts: &HashMap<String, Prompt>) -> LinePlaylists {
    let playlist = |line: &LineConfig, ids: &OneOrList| {
        let loaded: Option<Vec<Prompt>> = ids
            .items()
            .iter()
            .map(|id| prompts.get(id).cloned())
            .collect();
        let playlist = Playlist::new(
            loaded.filter(|list| !list.is_empty())?,
            config.media.leading_silence_ms,
            line.prompt_gap_ms,
        );
        Some((line.number.clone(), Arc::new(playlist)))
    };
    LinePlaylists {
        in_hours: config
            .lines
            .iter()
            .filter_map(|line| playlist(line, &line.prompt))
            .collect(),
        after_hours: config
            .lines
            .iter()
            .filter_map(|line| playlist(line, &line.after_hours.as_ref()?.prompt))
            .collect(),
        failover: config
            .lines
            .iter()
            .filter_map(|line| playlist(line, &OneOrList::One(line.failover_prompt.clone()?)))
            .collect(),
    }
}

/// A running switchboard (plus embedded records service).
pub struct Running {
    /// Where SIP is received.
    pub sip_addr: SocketAddr,
    /// Where SIP over TLS listens, if configured.
    pub tls_addr: Option<SocketAddr>,
    /// Where the embedded records service listens, if it runs.
    pub records_addr: Option<SocketAddr>,
    /// Where the admin endpoint (metrics, health) listens, if enabled.
    pub admin_addr: Option<SocketAddr>,
    /// Calls in progress.
    pub active_calls: Arc<AtomicUsize>,
    /// Whether the SIP endpoint is serving (readiness, systemd's watchdog).
    sip_serving: Arc<AtomicBool>,
    /// Drains the switchboard; readiness and metrics.
    monitor: Monitor,
    /// Reloads the configuration file, when started from one.
    reloader: Option<Reloader>,
    /// Stops the switchboard (calls end with BYE and are recorded).
    calls_shutdown: CancellationToken,
    /// Stops the embedded records service, after the last record is delivered.
    records_shutdown: CancellationToken,
    /// The switchboard task.
    switchboard: JoinHandle<()>,
    /// The record delivery task, flushed on shutdown.
    delivery: RecordDelivery,
    /// The recording uploads to a remote records service, if it is remote.
    uploads: Option<UploadDelivery>,
    /// The embedded records service task.
    records: Option<JoinHandle<Result<(), ServiceError>>>,
    /// The threads the embedded records service runs on.
    records_threads: Option<RecordsThreads>,
}

/// What [`start_records`] started, and how the switchboard reaches the service.
struct StartedRecords {
    /// Where the embedded service listens; `None` when it runs elsewhere.
    addr: Option<SocketAddr>,
    /// The embedded service's task.
    task: Option<JoinHandle<Result<(), ServiceError>>>,
    /// The embedded service's metrics.
    monitor: Option<RecordsMonitor>,
    /// The threads the embedded service runs on.
    threads: Option<RecordsThreads>,
    /// How the switchboard's delivery connects to the service.
    options: ClientOptions,
}

/// The embedded records service's own runtime (gRPC ingest, the database and
/// its connections' threads, the web console), below the switchboard's
/// threads, which run the calls. On the switchboard's threads, at 1,500
/// calls/s on two cores its ingest and SQLite took a quarter of the process's
/// time beside the INVITEs waiting for their 100 Trying, and a compliance
/// export during calls delayed answers by up to half a second (#16). Records
/// that wait are already safe in the spool.
struct RecordsThreads {
    /// The runtime, until it is stopped.
    runtime: Option<tokio::runtime::Runtime>,
    /// Where the service's tasks are spawned.
    handle: tokio::runtime::Handle,
}

impl RecordsThreads {
    /// Starts the runtime; its threads (workers, blocking pool, and the
    /// threads they start, such as SQLite's) are named `records`.
    fn start() -> anyhow::Result<RecordsThreads> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("records")
            .on_thread_start(records_thread_started)
            .on_thread_park(super::on_worker_idle)
            .build()
            .context("cannot start the embedded records service's threads")?;
        Ok(RecordsThreads {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }
}

impl Drop for RecordsThreads {
    /// Stops the runtime without waiting for its threads, which blocking here
    /// (inside the switchboard's runtime) is not allowed to do.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Puts a records thread below the calls; says once if the system refused.
fn records_thread_started() {
    static REFUSED: std::sync::Once = std::sync::Once::new();
    if let Err(error) = crate::switchboard::priority::run_below_calls() {
        REFUSED.call_once(|| {
            warn!(%error, "the embedded records service keeps the switchboard's priority: under full load it competes with call setup");
        });
    }
}

/// The embedded records service, if enabled: its address, its task, and how the
/// switchboard reaches it (an in-memory switchboard token); otherwise how to reach
/// the configured remote service.
async fn start_records(
    config: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<StartedRecords> {
    let records = &config.records;
    if !records.service.embedded {
        let token = if records.token_file.is_empty() {
            None
        } else {
            Some(read_token_file(Path::new(&records.token_file)).context("[records] token_file")?)
        };
        let options = ClientOptions {
            endpoint: records.endpoint.clone(),
            token,
            tls_ca_file: (!records.tls_ca_file.is_empty())
                .then(|| records.tls_ca_file.clone().into()),
            client_certificate: (!records.tls_cert_file.is_empty()).then(|| {
                (
                    records.tls_cert_file.clone().into(),
                    records.tls_key_file.clone().into(),
                )
            }),
            reason: None,
            user: None,
        };
        return Ok(StartedRecords {
            addr: None,
            task: None,
            monitor: None,
            threads: None,
            options,
        });
    }
    let threads = RecordsThreads::start()?;
    // Opened on its own threads, so that its database connections, sockets and
    // tasks belong there.
    let mut started = threads
        .handle
        .spawn(start_embedded_records(config.clone(), shutdown.clone()))
        .await
        .context("the embedded records service stopped while starting")??;
    started.threads = Some(threads);
    Ok(started)
}

/// Opens the embedded records service and starts serving it and its web console.
async fn start_embedded_records(
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<StartedRecords> {
    let records = &config.records;
    let service = &records.service;
    let mut opened = OpenedService::open(&service.settings())
        .await
        .with_context(|| format!("records service (database {})", service.database))?
        .with_patterns(pattern_settings(&config)?);
    share_database(&mut opened, service).await?;
    let token = opened.builtin_switchboard_token();
    let monitor = opened.monitor();
    start_web(&config, &opened, &shutdown).await?;
    let listener = TcpListener::bind(service.listen).await.with_context(|| {
        format!(
            "cannot listen for gRPC on {} ([records.service] listen); is another courtline running?",
            service.listen
        )
    })?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(opened.serve(listener, async move { shutdown.cancelled().await }));
    // The embedded service is where this switchboard's events go; with TLS on, its own
    // certificate (or [records] tls_ca_file) is the CA to trust.
    let tls = !service.tls_cert_file.is_empty();
    let options = ClientOptions {
        endpoint: format!("{}://{addr}", if tls { "https" } else { "http" }),
        token: Some(token),
        tls_ca_file: tls.then(|| {
            if records.tls_ca_file.is_empty() {
                service.tls_cert_file.clone().into()
            } else {
                records.tls_ca_file.clone().into()
            }
        }),
        // The in-memory token identifies it; no client certificate needed.
        client_certificate: None,
        reason: None,
        user: None,
    };
    Ok(StartedRecords {
        addr: Some(addr),
        task: Some(task),
        monitor: Some(monitor),
        threads: None,
        options,
    })
}

/// `[records.patterns]` with the masked roles of `[records.web]`, the webhook's
/// secret read from its file.
fn pattern_settings(config: &Config) -> anyhow::Result<crate::records::alerts::PatternSettings> {
    let masked = crate::records::mask::masked_roles(&config.records.web.mask_callers_for)
        .unwrap_or_default();
    config
        .records
        .patterns
        .settings(masked)
        .map_err(|e| anyhow::anyhow!("`{}`: {}. {}", e.key, e.problem, e.fix))
}

/// Starts the web console beside the records service when `[records.web] listen` is
/// set, and prints its URL; it stops with `shutdown`.
async fn start_web(
    config: &Config,
    opened: &OpenedService,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let Some((listen, settings)) = config
        .records
        .web
        .settings(config.records.service.web_tls())
    else {
        return Ok(());
    };
    let listener = TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen for the web console on {listen} ([records.web] listen; \"\" turns it off)")
    })?;
    let addr = listener.local_addr()?;
    let host = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    let scheme = if settings.secure_cookies() {
        "https"
    } else {
        "http"
    };
    println!("web console: {scheme}://{host}/");
    let stop = shutdown.clone();
    let server = opened.server.clone();
    tokio::spawn(async move {
        if let Err(error) =
            crate::records::web::serve(
                listener,
                server,
                settings,
                async move { stop.cancelled().await },
            )
            .await
        {
            error!("web console stopped: {error}");
        }
    });
    Ok(())
}

/// Opens the durable spool and starts delivering from it; with a remote records
/// service, also starts uploading kept recordings (their markers in `<spool>/uploads`).
fn start_spool(
    config: &Config,
    endpoints: RecordsEndpoints,
) -> anyhow::Result<(RecordSender, RecordDelivery, Option<UploadDelivery>)> {
    let records = &config.records;
    let dir = records.spool_path();
    let node_id = (!records.node_id.is_empty()).then_some(records.node_id.as_str());
    let (spool, recovered) = Spool::open(&dir, node_id).with_context(|| {
        format!(
            "records spool {} ([records] spool_dir): courtline will not take calls it cannot record",
            dir.display()
        )
    })?;
    for tear in &recovered.tears {
        warn!(
            segment = %tear.segment.display(),
            offset = tear.offset,
            discarded_bytes = tear.discarded,
            "recovered the spool up to its last good entry"
        );
    }
    info!(node_id = spool.node_id(), spool = %dir.display(), unacked = recovered.unacked.len(), "records spool open");
    if records.service.embedded {
        let (sender, delivery) = RecordSender::spawn(spool, recovered, endpoints);
        return Ok((sender, delivery, None));
    }
    let uploads_dir = dir.join("uploads");
    let (uploads, upload_delivery) = Uploads::spawn(uploads_dir.clone(), endpoints.clone())
        .with_context(|| {
            format!(
                "recording uploads {} (beside the records spool)",
                uploads_dir.display()
            )
        })?;
    let (sender, delivery) = RecordSender::spawn(spool, recovered, endpoints);
    Ok((sender.uploading(uploads), delivery, Some(upload_delivery)))
}

/// The prompt problems of a configuration that cannot go live, one per line.
pub fn prompt_problems_text(problems: &[PromptProblem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
    format!("prompt files could not be loaded:\n{}", lines.join("\n"))
}

/// Loads prompts, starts the embedded records service (if enabled) and the switchboard.
/// Without a configuration file to read again, it cannot reload.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_reloadable(config, None).await
}

/// [`start`], reloading from `config_path` on `SIGHUP` and `POST /reload` when given.
pub async fn start_reloadable(
    config: Config,
    config_path: Option<PathBuf>,
) -> anyhow::Result<Running> {
    let live =
        load_live(config).map_err(|problems| anyhow::anyhow!(prompt_problems_text(&problems)))?;
    let config = live.config.clone();
    let probes = crate::cli::probe::Schedule::of(&config);
    let records_shutdown = CancellationToken::new();
    let StartedRecords {
        addr: records_addr,
        task: records,
        monitor: records_monitor,
        threads: records_threads,
        options,
    } = start_records(&config, &records_shutdown).await?;
    // Where events go, and where the whisper's caller-history lookups go.
    let endpoints = if config.records.service.embedded {
        RecordsEndpoints::from(options)
    } else {
        RecordsEndpoints::new(options, &config.records.delivery_endpoints())
    };
    let history = CallerHistoryLookup::new(endpoints.clone());
    let (sender, delivery, uploads) = start_spool(&config, endpoints)?;
    let calls_shutdown = CancellationToken::new();
    let switchboard = Switchboard::bind(live, sender, history, calls_shutdown.clone()).await?;
    let sip_addr = switchboard.local_addr();
    let tls_addr = switchboard.tls_addr();
    let active_calls = switchboard.active_calls();
    let monitor = switchboard.monitor();
    monitor.record_baseline().await;
    let reloader = config_path.map(|path| Reloader::new(path, monitor.clone()));
    let admin_listener = bind_admin(&config).await?;
    let sip_serving = Arc::new(AtomicBool::new(false));
    let serving = sip_serving.clone();
    let (ready, listening) = tokio::sync::oneshot::channel();
    let switchboard = tokio::spawn(async move {
        let (up, started) = tokio::sync::oneshot::channel();
        let run = switchboard.run(up);
        tokio::pin!(run);
        let result = tokio::select! {
            result = &mut run => result,
            Ok(()) = started => {
                serving.store(true, Ordering::Release);
                let _ = ready.send(());
                run.await
            }
        };
        serving.store(false, Ordering::Release);
        if let Err(e) = result {
            error!("switchboard stopped: {e}");
        }
    });
    listening
        .await
        .context("the switchboard stopped before it was listening (see the log above)")?;
    if let Some(probes) = probes {
        probes.spawn(sip_addr, monitor.clone(), calls_shutdown.clone());
    }
    let admin_addr = match admin_listener {
        Some(listener) => {
            let addr = listener.local_addr()?;
            let served = admin::Served::Switchboard {
                monitor: monitor.clone(),
                sip_serving: sip_serving.clone(),
                records: records_monitor,
                reloader: reloader.clone(),
            };
            admin::spawn(listener, served, records_shutdown.clone());
            info!(%addr, "admin endpoint listening (/metrics, /healthz, /readyz, POST /reload)");
            Some(addr)
        }
        None => None,
    };
    Ok(Running {
        sip_addr,
        tls_addr,
        records_addr,
        admin_addr,
        active_calls,
        sip_serving,
        monitor,
        reloader,
        calls_shutdown,
        records_shutdown,
        switchboard,
        delivery,
        uploads,
        records,
        records_threads,
    })
}

impl Running {
    /// Stops taking calls (INVITE and OPTIONS answered 503) and waits until
    /// the calls in progress have ended, `timeout` has passed, or `now`
    /// completes (a second signal); [`Running::shutdown`] then ends the rest.
    /// Under systemd, says so (`STOPPING=1`) and keeps `STATUS=` current.
    pub async fn drain(&self, timeout: Duration, now: impl std::future::Future<Output = ()>) {
        self.monitor.start_draining();
        let calls = self.monitor.active_calls();
        info!(
            calls,
            timeout_s = timeout.as_secs(),
            "draining: new calls are refused (503); calls in progress may finish"
        );
        systemd::stopping(
            &systemd::draining_status(calls, timeout),
            timeout + SHUTDOWN_GRACE,
        );
        let deadline = tokio::time::Instant::now() + timeout;
        let ended = async {
            let mut shown = calls;
            loop {
                let calls = self.monitor.active_calls();
                if calls == 0 {
                    break;
                }
                if calls != shown {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    systemd::stopping_status(
                        &systemd::draining_status(calls, left),
                        left + SHUTDOWN_GRACE,
                    );
                    shown = calls;
                }
                tokio::time::sleep(DRAIN_POLL).await;
            }
        };
        tokio::select! {
            () = ended => info!("drained: no calls left"),
            () = tokio::time::sleep_until(deadline) => {
                warn!(calls = self.monitor.active_calls(), "drain timeout ([sip] drain_timeout_s): ending the calls left (recorded as shutdown)");
            }
            () = now => {
                warn!(calls = self.monitor.active_calls(), "second signal: ending the calls left now (recorded as shutdown)");
            }
        }
    }

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
            already_stored = stats.already_stored,
            left_in_spool = stats.left_in_spool,
            read_back_from_spool = stats.read_back,
            "call events flushed"
        );
        if let Some(uploads) = self.uploads {
            let stats = uploads.finish().await;
            info!(
                uploaded = stats.uploaded,
                discarded = stats.discarded,
                waiting = stats.waiting,
                "recording uploads stopped; waiting ones are sent after the next start"
            );
        }
        self.records_shutdown.cancel();
        if let Some(records) = self.records {
            match records.await {
                Ok(Err(e)) => error!("records service: {e}"),
                Err(e) => error!("records service task: {e}"),
                Ok(Ok(())) => {}
            }
        }
        drop(self.records_threads);
    }
}

/// `courtline serve`.
pub async fn serve_until_signal(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let drain_timeout = Duration::from_secs(config.sip.drain_timeout_s);
    let mut signals = StopSignals::new();
    // Subscribed before start-up: SIGHUP's default action would end the process.
    #[cfg(unix)]
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let running = start_reloadable(config, Some(config_path.to_path_buf())).await?;
    systemd::spawn_watchdog(running.sip_serving.clone());
    systemd::ready(&format!("taking calls: SIP on {}", running.sip_addr));
    info!(sip = %running.sip_addr, records = ?running.records_addr, admin = ?running.admin_addr, "courtline is up; Ctrl-C or SIGTERM to drain and stop, SIGHUP to reload");
    #[cfg(unix)]
    if let (Some(hangups), Some(reloader)) = (hangups.as_mut(), running.reloader.clone()) {
        let stop = signals.next();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                Some(()) = hangups.recv() => {
                    let reloader = reloader.clone();
                    tokio::spawn(async move { reloader.reload(Requester::Signal).await });
                }
            }
        }
    } else {
        signals.next().await;
    }
    #[cfg(not(unix))]
    signals.next().await;
    running.drain(drain_timeout, signals.next()).await;
    info!("shutting down: ending calls and flushing records");
    systemd::stopping_status(
        "shutting down: ending the calls left, flushing records",
        SHUTDOWN_GRACE,
    );
    running.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// `courtline records serve`.
pub async fn records_until_signal(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let service = &config.records.service;
    // Alone, the service is not on the switchboard's machine: it cannot take its files over.
    let settings = crate::records::service::ServiceSettings {
        takes_local_recordings: false,
        ..service.settings()
    };
    let mut opened = OpenedService::open(&settings)
        .await
        .with_context(|| format!("records service (database {})", service.database))?
        .with_patterns(pattern_settings(&config)?);
    share_database(&mut opened, service).await?;
    let listener = TcpListener::bind(service.listen).await.with_context(|| {
        format!(
            "cannot listen for gRPC on {} ([records.service] listen); is another courtline running?",
            service.listen
        )
    })?;
    // The console and the admin endpoint stop with the service.
    let stop_beside = CancellationToken::new();
    start_web(&config, &opened, &stop_beside).await?;
    if let Some(listener) = bind_admin(&config).await? {
        let addr = listener.local_addr()?;
        admin::spawn(
            listener,
            admin::Served::Records(opened.monitor()),
            stop_beside.clone(),
        );
        info!(%addr, "admin endpoint listening (/metrics, /healthz, /readyz)");
    }
    let result = opened.serve(listener, StopSignals::new().next()).await;
    stop_beside.cancel();
    result?;
    Ok(ExitCode::SUCCESS)
}

/// The admin endpoint's socket (`[admin] listen`), `None` when turned off.
async fn bind_admin(config: &Config) -> anyhow::Result<Option<TcpListener>> {
    // Checked by `Config::validate`; a bad value only turns the endpoint off.
    let Some(listen) = config.admin.address().ok().flatten() else {
        return Ok(None);
    };
    let listener = TcpListener::bind(listen).await.with_context(|| {
        format!(
            "cannot listen for the admin endpoint on {listen} ([admin] listen; \"\" turns it off); \
             a courtline serve and a courtline records serve on one machine need one each \
             (COURTLINE_ADMIN__LISTEN gives one process another)"
        )
    })?;
    Ok(Some(listener))
}

/// Stages switchboard events for the sequencer when `[records.service] shared_database` is on.
async fn share_database(
    opened: &mut OpenedService,
    service: &crate::config::RecordsServiceConfig,
) -> anyhow::Result<()> {
    if service.shared_database {
        opened
            .share_database(&service.database)
            .await
            .context("[records.service] shared_database: cannot open the staging table")?;
    }
    Ok(())
}

/// Ctrl-C and SIGTERM, as often as they come (the first drains, the second stops).
struct StopSignals {
    /// SIGTERM, when it could be subscribed to (Ctrl-C alone otherwise).
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    /// Subscribes now, so a signal that comes during start-up is not lost.
    fn new() -> StopSignals {
        StopSignals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }

    /// The next Ctrl-C or SIGTERM.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(term) = self.term.as_mut() {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
