//! The SIP endpoint of the switchboard: binds the socket, runs rsipstack, admits
//! or refuses new calls, answers OPTIONS and routes in-dialog requests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Method, StatusCode};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::tls::{TlsConfig, TlsListenerConnection};
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{TcpListenerConnection, TransportLayer};
use rsipstack::EndpointBuilder;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::admission::{Admission, Decision, InviteFacts, Now, Refusal, Refused};
use super::context::{CallSlot, HuntTurns, Shared};
use super::health::Readiness;
use super::live::{applied_event, decide, Changes, LiveConfig, Requester, RestartNeeded};
use super::media::engine::{EngineConfig, MediaEngine};
use super::metrics::{Metrics, Snapshot};
use super::sip::arrivals::{self, top_branch, SetupArrivals};
use super::sip::caller_invites::CallerInvites;
use super::sip::dialog_states::DialogStateRouter;
use super::sip::forwarded::{Origin, TrustedProxies, FORWARDED_HEADER};
use super::sip::guard::{GuardedUdpSocket, SharedShield};
use super::sip::inbound_auth::InboundAuth;
use super::sip::leg::{
    canonical, dialled_number, extension_header, has_to_tag, header, local_ip_toward,
};
use super::sip::probe_header::{self, ProbeKey};
use super::sip::qualify::{self, OperatorHealth};
use super::sip::registration;
use super::sip::shield::Shield;
use super::sip::stream_guard::StreamGuard;
use super::sip::ALLOW;
use crate::config::Config;
use crate::switchboard::call::session::CallSetup;
use crate::switchboard::call::CallFlow;
use crate::switchboard::delivery::history::CallerHistoryLookup;
use crate::switchboard::delivery::sender::RecordSender;
use crate::switchboard::media::ports::RtpPorts;
use crate::switchboard::media::recording::{Durability, Recorder};
use crate::switchboard::media::tone::ToneFrames;

/// Why the switchboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum SwitchboardError {
    /// The SIP port could not be bound.
    #[error("cannot listen for SIP on {addr}: {source}. Is another SIP server running there? Change [sip] listen or stop it")]
    Bind {
        /// Address from `[sip] listen`.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// rsipstack refused to start.
    #[error("SIP stack failed to start: {0}")]
    Stack(String),
    /// The TLS certificate or key could not be used.
    #[error("SIP over TLS: {0}. Check [sip] tls_certificate and tls_private_key (PEM files)")]
    Tls(String),
    /// A configured file could not be read.
    #[error("[sip] {key}: cannot read {path}: {source}")]
    File {
        /// Config key naming the file.
        key: &'static str,
        /// The path as configured.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The ringback settings are unusable (normally caught by `courtline check`).
    #[error("[media.ringback]: {0}")]
    Ringback(String),
    /// The probe key file could not be read or made.
    #[error("cannot read or make the probe key {path}: {source}. Make its directory writable, or set [probe] key")]
    ProbeKey {
        /// The key file (`probe.key` beside the spool).
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The recording writer thread could not start.
    #[error("[recording] dir {dir}: cannot start the recording writer: {source}")]
    Recorder {
        /// The recordings directory.
        dir: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running SIP switchboard.
pub struct Switchboard {
    /// State shared with call tasks.
    shared: Arc<Shared>,
    /// rsipstack's endpoint (transactions, transport).
    endpoint: rsipstack::transaction::Endpoint,
}

impl Switchboard {
    /// Binds the SIP socket and prepares the stack; call [`Switchboard::run`] to serve.
    pub async fn bind(
        live: LiveConfig,
        records: RecordSender,
        history: CallerHistoryLookup,
        shutdown: CancellationToken,
    ) -> Result<Switchboard, SwitchboardError> {
        let config = live.config.clone();
        let listen = config.sip.listen;
        let socket = bind_sip_udp(&config).await?;
        // A burst (a trunk failing over, or a flood the shield is about to cut
        // off) must not overflow the kernel's queue and lose real callers'
        // INVITEs: ask for 4 MiB (the kernel caps it at net.core.rmem_max).
        if let Err(e) = socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20) {
            warn!(error = %e, "could not enlarge the SIP receive buffer");
        }
        let sip_addr = socket
            .local_addr()
            .map_err(|source| SwitchboardError::Bind {
                addr: listen,
                source,
            })?;
        // One shield for UDP, TCP and TLS. `Config::validate` has parsed
        // these networks (and the inbound-auth ones below) already.
        let metrics = Arc::new(Metrics::new());
        let proxies = TrustedProxies::new(&config.sip.trusted_proxies)
            .map_err(|e| SwitchboardError::Stack(e.to_string()))?;
        let shield = SharedShield::new(
            Shield::new(config.sip.shield.clone())
                .map_err(|e| SwitchboardError::Stack(e.to_string()))?
                .behind(proxies.clone()),
            metrics.clone(),
        );
        let arrivals = Arc::new(SetupArrivals::default());
        tokio::spawn(sweep_arrivals(arrivals.clone(), shutdown.child_token()));
        let guarded: Arc<dyn rsipstack::platform::net::UdpSocket> = Arc::new(
            GuardedUdpSocket::new(socket, shield.clone(), arrivals.clone()),
        );
        let inbound_auth = InboundAuth::new(config.sip.inbound_auth.clone())
            .map_err(|e| SwitchboardError::Stack(e.to_string()))?;
        let stack_token = shutdown.child_token();
        let public = config.public_address();
        // Behind NAT, Via and Contact must carry the public address.
        let external = |port: u16| public.map(|(ip, p)| SocketAddr::new(ip, p.unwrap_or(port)));
        let connection = UdpConnection::from_socket(
            guarded,
            external(sip_addr.port()),
            Some(stack_token.clone()),
        )
        .await
        .map_err(|e| SwitchboardError::Stack(e.to_string()))?;
        let transport_layer = TransportLayer::new(stack_token.clone());
        // TCP and TLS connections are screened at accept (UDP datagrams pass
        // the same check in the guard, so this never turns one away).
        let admission = shield.clone();
        transport_layer.set_whitelist(move |source| {
            let admitted = admission.admits_connection(source);
            async move { admitted }
        });
        transport_layer.add_transport(connection.into());
        if config.sip.tcp {
            check_tcp_port_free(sip_addr, "TCP")?;
            let listener = TcpListenerConnection::new(sip_addr, external(sip_addr.port()))
                .await
                .map_err(|e| SwitchboardError::Stack(e.to_string()))?;
            transport_layer.add_transport(listener.into());
        }
        let tls_addr = config.tls_listen(sip_addr);
        if let Some(tls_addr) = tls_addr {
            check_tcp_port_free(tls_addr, "TLS")?;
            let tls = TlsConfig {
                cert: Some(read_pem(
                    &config.sip.tls_certificate,
                    "sip.tls_certificate",
                )?),
                key: Some(read_pem(
                    &config.sip.tls_private_key,
                    "sip.tls_private_key",
                )?),
                ..TlsConfig::default()
            };
            let listener = TlsListenerConnection::new(tls_addr, external(tls_addr.port()), tls)
                .await
                .map_err(|e| SwitchboardError::Tls(e.to_string()))?;
            transport_layer.add_transport(listener.into());
        }
        let t1 = Duration::from_millis(config.sip.t1_ms);
        let timers = rsipstack::transaction::endpoint::EndpointOption {
            t1,
            t1x64: t1 * 64,
            ..Default::default()
        };
        let endpoint = EndpointBuilder::new()
            .with_option(timers)
            .with_cancel_token(stack_token)
            .with_transport_layer(transport_layer)
            .with_transport_inspector(Box::new(StreamGuard::new(shield)))
            .with_user_agent(&config.sip.user_agent)
            .build();
        let dialog_layer = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        // The engine is process-wide and starts with the first call: a second
        // switchboard in the same process (tests) shares the first one's.
        if let Err(e) = MediaEngine::configure_global(EngineConfig {
            send: config.media.send,
            threads: config.media.threads.resolve(),
            realtime: config.media.realtime,
            ..EngineConfig::default()
        }) {
            debug!("{e}");
        }
        let ringback = ToneFrames::ringback(&config.media.ringback)
            .map_err(|e| SwitchboardError::Ringback(e.to_string()))?;
        let ports = RtpPorts::new(
            sip_addr.ip(),
            config
                .rtp_port_range()
                .map_err(|e| SwitchboardError::Stack(e.to_string()))?,
        );
        // SDP: the configured media address, else the public SIP address.
        let advertise = config
            .media
            .advertise_address
            .parse()
            .ok()
            .or(public.map(|(ip, _)| ip));
        // One writer for every recorded line; none when no line records.
        let recorder = if config
            .lines
            .iter()
            .any(|line| line.record_audio != crate::config::RecordAudio::Never)
        {
            let dir = config.recording_dir();
            // The embedded service fsyncs what it keeps; a remote one gets
            // the file uploaded later from this disk.
            let durability = if config.records.service.embedded {
                Durability::KeeperSyncs
            } else {
                Durability::SyncOnClose
            };
            Some(Recorder::start(dir.clone(), durability).map_err(|source| {
                SwitchboardError::Recorder {
                    dir: dir.display().to_string(),
                    source,
                }
            })?)
        } else {
            None
        };
        let probe_key = if config.probe.key.is_empty() {
            let path = config.probe_key_path();
            ProbeKey::load_or_create(&path).map_err(|source| SwitchboardError::ProbeKey {
                path: path.display().to_string(),
                source,
            })?
        } else {
            ProbeKey::new(config.probe.key.as_bytes())
        };
        Ok(Switchboard {
            shared: Arc::new(Shared {
                live: RwLock::new(Arc::new(live)),
                reloading: tokio::sync::Mutex::new(()),
                ringback: Arc::new(ringback),
                ports,
                records,
                history,
                recorder,
                dialog_states: DialogStateRouter::start(),
                caller_invites: CallerInvites::start(),
                dialog_layer,
                sip_addr,
                tls_addr,
                public_port: public.and_then(|(_, port)| port),
                advertise,
                active: Arc::new(AtomicUsize::new(0)),
                health: Arc::new(OperatorHealth::default()),
                hunt_turns: HuntTurns::default(),
                inbound_auth,
                probe_key,
                proxies,
                shutdown,
                draining: Arc::new(AtomicBool::new(false)),
                arrivals,
                metrics,
            }),
            endpoint,
        })
    }

    /// The bound SIP address (useful when listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.sip_addr
    }

    /// The SIP-over-TLS address, if TLS is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.shared.tls_addr
    }

    /// Calls in progress.
    pub fn active_calls(&self) -> Arc<AtomicUsize> {
        self.shared.active.clone()
    }

    /// What the admin endpoint and shutdown use to watch and drain the switchboard.
    pub fn monitor(&self) -> Monitor {
        Monitor {
            shared: self.shared.clone(),
        }
    }

    /// Serves SIP until the shutdown token is cancelled; `ready` fires once
    /// every listener (UDP, TCP, TLS) is bound.
    pub async fn run(
        self,
        ready: tokio::sync::oneshot::Sender<()>,
    ) -> Result<(), SwitchboardError> {
        let mut incoming = self
            .endpoint
            .incoming_transactions()
            .map_err(|e| SwitchboardError::Stack(e.to_string()))?;

        let config = self.shared.live().config.clone();
        let interval = config.sip.qualify_interval_s;
        if interval > 0 {
            let targets = config
                .lines
                .iter()
                .flat_map(|l| l.operator.uris())
                .collect();
            tokio::spawn(qualify::run(
                self.endpoint.inner.clone(),
                targets,
                self.shared.health.clone(),
                Duration::from_secs(interval),
                self.shared.shutdown.clone(),
            ));
        }
        if !config.registration.registrar.is_empty() {
            tokio::spawn(registration::run(
                self.endpoint.inner.clone(),
                config.registration.clone(),
                self.shared.metrics.clone(),
                self.shared.shutdown.clone(),
            ));
        }
        let serve = self.endpoint.serve();
        tokio::pin!(serve);
        // rsipstack binds its stream listeners when serve() first runs; poll it
        // once so callers of `start` can connect as soon as it returns.
        if futures::poll!(&mut serve).is_ready() {
            return Err(SwitchboardError::Stack(
                "the SIP endpoint stopped at start-up".into(),
            ));
        }
        info!(
            listen = %self.shared.sip_addr,
            tcp = config.sip.tcp,
            tls = ?self.shared.tls_addr,
            lines = config.lines.len(),
            max_calls = config.sip.max_calls,
            "switchboard listening for SIP"
        );
        let _ = ready.send(());
        loop {
            tokio::select! {
                _ = &mut serve => break,
                _ = self.shared.shutdown.cancelled() => break,
                tx = incoming.recv() => match tx {
                    Some(tx) => route(&self.shared, tx),
                    None => break,
                },
            }
        }
        info!("switchboard stopped accepting calls");
        Ok(())
    }
}

/// A handle on a running switchboard for monitoring and draining: metrics,
/// readiness, and the drain switch. Cheap to clone.
#[derive(Clone)]
pub struct Monitor {
    /// The switchboard's shared state.
    shared: Arc<Shared>,
}

impl Monitor {
    /// Stops taking new calls: INVITE and OPTIONS are answered 503 from now on.
    pub fn start_draining(&self) {
        self.shared.draining.store(true, Ordering::Release);
    }

    /// Records the configuration in force at start-up: the baseline of every later reload.
    pub async fn record_baseline(&self) {
        let live = self.shared.live();
        let event = applied_event(&Requester::Startup, None, &live, Changes::default());
        if !self.shared.records.config_applied(event).await {
            warn!("the start-up configuration's records event is not on disk yet; it is still delivered");
        }
        info!(sha256 = %live.sha256, "configuration in force (baseline recorded)");
    }

    /// Puts `live` in force for new calls if [`decide`] allows it (calls in progress
    /// keep theirs), after chaining its records event; counts the reload either way.
    pub async fn apply(
        &self,
        live: LiveConfig,
        requester: &Requester,
    ) -> Result<(Changes, String), RestartNeeded> {
        let shared = &self.shared;
        // One reload at a time: each is decided against the configuration it replaces.
        let _one = shared.reloading.lock().await;
        let before = shared.live();
        let changes = match decide(&before, &live, shared.recorder.is_some()) {
            Ok(changes) => changes,
            Err(refused) => {
                shared.metrics.config_reloaded(false);
                warn!(requested_by = requester.name(), "reload refused: {refused}");
                return Err(refused);
            }
        };
        let event = applied_event(requester, Some(&before), &live, changes.clone());
        // Write-ahead, like a call's first milestone: the change is on record before it takes effect.
        if !shared.records.config_applied(event).await {
            warn!("the reload's records event is not on disk yet; it is still delivered");
        }
        let sha256 = live.sha256.clone();
        shared.replace_live(Arc::new(live));
        shared.metrics.config_reloaded(true);
        info!(requested_by = requester.name(), %sha256, previous = %before.sha256, "configuration reloaded: {changes}");
        Ok((changes, sha256))
    }

    /// A reload whose files could not be loaded (`problem` names file, key and reason):
    /// counts and logs it; the configuration in force stays.
    pub fn reload_refused(&self, requester: &Requester, problem: &str) {
        self.shared.metrics.config_reloaded(false);
        warn!(
            requested_by = requester.name(),
            "reload refused, the configuration in force is unchanged: {problem}"
        );
    }

    /// A synthetic probe of `line` ran at `at_unix_s`: `courtline_probe_success` and its time.
    pub fn probe_finished(&self, line: &str, success: bool, at_unix_s: f64) {
        self.shared.metrics.probe_finished(line, success, at_unix_s);
    }

    /// The configuration in force now (what scheduled probes expect to hear).
    pub fn live(&self) -> Arc<LiveConfig> {
        self.shared.live()
    }

    /// Calls in progress.
    pub fn active_calls(&self) -> usize {
        self.shared.active.load(Ordering::Acquire)
    }

    /// The readiness facts as they are now; `sip_serving` is the caller's to know.
    pub fn readiness(&self, sip_serving: bool) -> Readiness {
        let shared = &self.shared;
        let backlog = shared.records.backlog();
        let live = shared.live();
        let playlists = live.playlists.at(chrono::Utc::now());
        Readiness {
            sip_serving,
            prompts_loaded: live
                .config
                .lines
                .iter()
                .all(|line| playlists.in_hours.contains_key(&line.number)),
            spool_writable: shared.records.spool_healthy(),
            records_reachable: backlog.reachable,
            spool_depth: backlog.depth,
            draining: shared.draining(),
        }
    }

    /// `/metrics`: every switchboard metric in the Prometheus text format (the
    /// embedded records service's are its own: `records::monitor`).
    pub fn metrics_text(&self) -> String {
        let shared = &self.shared;
        let backlog = shared.records.backlog();
        let targets = shared
            .live()
            .config
            .lines
            .iter()
            .flat_map(|line| line.operator.uris())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|target| {
                let up = !shared.health.is_down(&target);
                (target, up)
            })
            .collect();
        shared.metrics.render(&Snapshot {
            spool_depth: backlog.depth,
            delivery_lag_s: backlog.lag_s,
            delivered: backlog.delivered,
            targets,
            recording_queue_peak: shared.recorder.as_ref().map_or(0, Recorder::queue_peak),
            recordings_dropped: shared
                .recorder
                .as_ref()
                .map_or(0, Recorder::dropped_recordings),
            draining: shared.draining(),
            media_shard_calls: MediaEngine::running()
                .map_or_else(Vec::new, MediaEngine::calls_per_shard),
        })
    }
}

/// Fails early, with a clear message, when a TCP port is taken (rsipstack binds
/// its listeners later and would only log a warning).
/// Tries for a port free for UDP and for the stream transports at once.
const ANY_PORT_ATTEMPTS: usize = 20;

/// Binds the SIP UDP socket. TCP listens on the port UDP gets, and TLS by
/// default on the next; with `listen` port 0 (any free port), a port whose
/// stream side is taken (e.g. by some client connection's ephemeral port) is
/// given back and another one tried.
async fn bind_sip_udp(config: &Config) -> Result<tokio::net::UdpSocket, SwitchboardError> {
    let listen = config.sip.listen;
    let attempts = if listen.port() == 0 {
        ANY_PORT_ATTEMPTS
    } else {
        1
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let socket = tokio::net::UdpSocket::bind(listen)
            .await
            .map_err(|source| SwitchboardError::Bind {
                addr: listen,
                source,
            })?;
        let streams_free = || {
            let addr = socket.local_addr().ok()?;
            let tcp = !config.sip.tcp || check_tcp_port_free(addr, "TCP").is_ok();
            let tls = config
                .tls_listen(addr)
                .is_none_or(|tls| check_tcp_port_free(tls, "TLS").is_ok());
            Some(tcp && tls)
        };
        // The last attempt is kept either way; binding TCP/TLS then says what is wrong.
        if attempt >= attempts || streams_free() == Some(true) {
            return Ok(socket);
        }
    }
}

/// Sweeps the INVITE arrival notes every [`arrivals::KEEP`] until `stop`:
/// the guard sweeps only as INVITEs come, and after an overload a quiet
/// switchboard would keep the notes of those the stack never passed on.
async fn sweep_arrivals(arrivals: Arc<SetupArrivals>, stop: CancellationToken) {
    let mut every = tokio::time::interval(arrivals::KEEP);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => arrivals.sweep(),
        }
    }
}

fn check_tcp_port_free(addr: SocketAddr, what: &str) -> Result<(), SwitchboardError> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|source| SwitchboardError::Bind {
            addr,
            source: std::io::Error::new(source.kind(), format!("{what}: {source}")),
        })
}

fn read_pem(path: &str, key: &'static str) -> Result<Vec<u8>, SwitchboardError> {
    std::fs::read(path).map_err(|source| SwitchboardError::File {
        key,
        path: path.to_string(),
        source,
    })
}

/// Sends each new transaction where it belongs.
fn route(shared: &Arc<Shared>, mut tx: Transaction) {
    let method = tx.original.method;
    if has_to_tag(&tx.original) || matches!(method, Method::Ack | Method::Bye | Method::Cancel) {
        // In-dialog: the dialog handles it (BYE -> Terminated, ACK -> Confirmed).
        match shared.dialog_layer.match_dialog(&tx) {
            Some(mut dialog) => {
                tokio::spawn(async move {
                    if let Err(e) = dialog.handle(&mut tx).await {
                        debug!(error = %e, "in-dialog request failed");
                    }
                });
            }
            None if method == Method::Ack => {}
            None => {
                tokio::spawn(async move {
                    let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
                });
            }
        }
        return;
    }
    if method == Method::Invite
        && tx
            .original
            .call_id_header()
            .is_ok_and(|id| shared.dialog_states.routes(id.value()))
    {
        // Not a new call: a merged request (RFC 3261 §8.2.2.2: another
        // branch of a call in progress), one of our own operator INVITEs
        // routed back to us, or a retransmission of a call's INVITE later
        // than the endpoint keeps its answer (64·T1).
        debug!(call_id = ?tx.original.call_id_header().ok(), "INVITE for a Call-ID in progress: 482");
        tokio::spawn(async move {
            let _ = tx.reply(StatusCode::LoopDetected).await;
        });
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let result = match method {
            Method::Invite => admit(&shared, tx).await,
            // Draining, full or shedding calls: a load balancer's (Kamailio's)
            // OPTIONS probe moves new calls to other nodes before callers notice.
            Method::Options if shared.draining() || shared.full() || shared.arrivals.shedding() => {
                let retry = header(
                    "Retry-After",
                    shared.live().config.sip.retry_after_s.to_string(),
                );
                tx.reply_with(StatusCode::ServiceUnavailable, vec![retry], None)
                    .await
            }
            Method::Options => {
                let headers = vec![
                    header("Allow", ALLOW),
                    header("Accept", "application/sdp"),
                    header("Supported", ""),
                ];
                tx.reply_with(StatusCode::OK, headers, None).await
            }
            Method::Register
            | Method::Subscribe
            | Method::Publish
            | Method::Message
            | Method::Refer
            | Method::Notify
            | Method::Info
            | Method::Update
            | Method::PRack => {
                tx.reply_with(
                    StatusCode::MethodNotAllowed,
                    vec![header("Allow", ALLOW)],
                    None,
                )
                .await
            }
            _ => {
                tx.reply_with(
                    StatusCode::NotImplemented,
                    vec![header("Allow", ALLOW)],
                    None,
                )
                .await
            }
        };
        if let Err(e) = result {
            debug!(method = %method, error = %e, "could not answer request");
        }
    });
}

/// Carries out admission for a new INVITE: reads the facts, lets
/// [`Admission::decide`] decide, then answers, records the refusal, or starts the call.
async fn admit(shared: &Arc<Shared>, mut tx: Transaction) -> rsipstack::Result<()> {
    let source = tx
        .connection
        .as_ref()
        .and_then(|c| c.get_remote_addr())
        .and_then(|a| a.get_socketaddr().ok())
        .map(canonical);
    let origin = source.map(|source| {
        shared
            .proxies
            .judge(source, extension_header(&tx.original, FORWARDED_HEADER))
    });
    if let Some(Origin::Spoofed { source, claimed }) = &origin {
        warn!(%source, claimed = %claimed, "{FORWARDED_HEADER} from a source that is not in [sip] trusted_proxies: ignored, the caller is judged by its own address");
    }
    let now = Now {
        wall: SystemTime::now(),
        monotonic: Instant::now(),
    };
    // Time-ordered (UUIDv7): the records indexes keyed on call ids grow at their end
    // instead of dirtying a random page per event.
    let call_id = uuid::Uuid::now_v7().to_string();
    let waited = tx
        .original
        .via_header()
        .ok()
        .and_then(|via| top_branch(via.value()))
        .and_then(|branch| shared.arrivals.take(branch))
        .map_or(Duration::ZERO, |read| {
            now.monotonic.saturating_duration_since(read)
        });
    let invite = InviteFacts {
        request: &tx.original,
        origin: origin.as_ref(),
        call_id: &call_id,
        waited,
    };
    // This call's configuration, kept to its end whatever reloads come meanwhile.
    let live = shared.live();
    let admission = Admission {
        config: &live.config,
        playlists: live.playlists.at(now.wall.into()),
        inbound_auth: shared.inbound_auth.as_ref(),
        probe_key: &shared.probe_key,
        health: &shared.health,
        hunt_turns: &shared.hunt_turns,
        spool_healthy: shared.records.spool_healthy(),
        recording_healthy: shared.recorder.as_ref().is_none_or(Recorder::healthy),
        draining: shared.draining(),
    };
    // The slot first, so a flood cannot overshoot max_calls: taking it is the
    // atomic step; `decide` only reads the outcome (a refusal or challenge
    // drops the slot again, after holding it only while deciding).
    let slot = CallSlot::take(&shared.active, live.config.sip.max_calls);
    let number = dialled_number(invite.request);
    let admitted = match admission.decide(&invite, slot, now) {
        Decision::Admit(admitted) => *admitted,
        Decision::Challenge(challenge) => {
            debug!(line = %number, ?origin, "caller challenged: 401");
            let challenge = header("WWW-Authenticate", challenge);
            return tx
                .reply_with(StatusCode::Unauthorized, vec![challenge], None)
                .await;
        }
        Decision::Refuse(refusal) => return refuse(shared, &mut tx, &number, *refusal).await,
    };
    if let Some(user) = &admitted.authenticated_as {
        info!(line = %number, caller = %admitted.facts.caller_number, ?origin, %user, "caller authenticated");
    }
    if admitted.facts.after_hours {
        let duty = admitted
            .facts
            .operators
            .first()
            .map_or("none: hang up after the playlist", String::as_str);
        info!(line = %number, caller = %admitted.facts.caller_number, duty, "outside office hours: after-hours playlist");
    }
    if admitted.facts.probe {
        info!(line = %number, target = ?admitted.facts.operators.first(), "synthetic probe call (signed header checked)");
    } else if let Some(value) = probe_header::value_in(invite.request) {
        // Someone else's header, a stale one, or another key: an ordinary call.
        let problem = shared
            .probe_key
            .verify(&value, &admitted.facts.sip_call_id, now.wall)
            .err();
        warn!(line = %number, ?source, problem = ?problem.map(|p| p.to_string()), "probe header not accepted: the call counts as an ordinary call");
    }
    if admitted.answered_without_early_media {
        info!(line = %number, caller = %admitted.facts.caller_number, "INVITE without SDP on an early-media line: answering first instead");
    }
    // Media goes where the caller's SIP came from (the caller a trusted proxy
    // names, not the proxy: media comes straight here), else where its offer says.
    let media_peer = origin
        .as_ref()
        .map(Origin::caller_ip)
        .or(admitted.offer.as_ref().map(|(o, _)| o.rtp_addr.ip()))
        .unwrap_or(shared.sip_addr.ip());
    let rtp_socket = match shared.ports.bind(media_peer) {
        Ok(socket) => socket,
        Err(e) => {
            let refusal = Refusal::unavailable(
                Refused::NoRtpPort(e.to_string()),
                admitted.facts,
                &live.config,
            );
            return refuse(shared, &mut tx, &number, refusal).await;
        }
    };
    let local_ip = local_ip_toward(media_peer, shared.sip_addr.ip(), shared.advertise);
    let setup = CallSetup {
        shared: shared.clone(),
        config: live.config.clone(),
        facts: admitted.facts,
        playlist: admitted.playlist,
        failover: admitted.failover,
        offer: admitted.offer,
        session_timer: admitted.session_timer,
        rtp_socket,
        local_ip,
        slot: admitted.slot,
        received: now.monotonic,
    };
    crate::switchboard::call::session::start(setup, tx);
    Ok(())
}

/// Logs a refusal, records it and sends its final response.
async fn refuse(
    shared: &Shared,
    tx: &mut Transaction,
    dialled: &str,
    refusal: Refusal,
) -> rsipstack::Result<()> {
    let Refusal {
        reason,
        status,
        headers,
        facts,
    } = refusal;
    let code = u16::from(status.clone());
    let caller = &facts.caller_number;
    match reason {
        Refused::SpoolUnwritable => {
            tracing::error!(line = %dialled, %caller, code, "{reason}");
        }
        Refused::Overloaded => {
            shared.arrivals.shed();
            // Thousands a second when it happens: the log gets one line a second.
            if shared.arrivals.may_warn() {
                warn!(line = %dialled, %caller, code, "{reason}; answering 503 to such INVITEs (courtline_calls_total{{reason=\"rejected\"}} counts them)");
            }
        }
        Refused::Authentication(_)
        | Refused::Draining
        | Refused::Full
        | Refused::PromptsNotLoaded
        | Refused::NoRtpPort(_) => {
            warn!(line = %dialled, %caller, source = %facts.caller_source, code, "{reason}");
        }
        _ => info!(line = %dialled, %caller, code, "{reason}"),
    }
    shared.record_ended(CallFlow::rejected(&facts, code));
    tx.reply_with(status, headers, None).await
}
