//! The records service: the gRPC front of the [`Ledger`] and the [`Store`].
//!
//! Every handler first authorises the request ([`Authenticator`]); every read,
//! export, flag, verify and admin action is then recorded as an access event in
//! the chain — who, when, with which parameters, how many rows, why. Failures map
//! to gRPC codes that tell the client whether retrying makes sense.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Response, Status};
use tracing::{error, info, warn};

mod patterns;

pub use self::patterns::PatternAlert;
use super::alerts::{run_alerts, PatternSettings};
use super::auth::{may_issue_token, role_name, Authenticator, Caller, CertificateRoles};
use super::chain::{HashAlgorithm, StoredEvent};
use super::dashboard::Figures;
use super::evidence::{
    chained_recording, describe as describe_recording, Evidence, Incoming, UploadProblem,
};
use super::export::{
    format_name, recording_name, ExportCheck, ManifestContent, RecordingFile, RowChain,
    MANIFEST_VERSION,
};
use super::export_check::{ExportKind, SNIFF_BYTES};
use super::ledger::signing::{fingerprint, KeyError, RecordsKey};
use super::ledger::staging::Staging;
use super::ledger::{now_ms, validate_call_id, CheckpointPolicy, Ledger, LedgerError};
use super::monitor::RecordsMonitor;
use super::report_export::{report_row_canonical, REPORT_MANIFEST_VERSION};
use super::reports::workflow::{
    is_owner, may_read, opened_via_name, status_name, warnings, Action, Actor, Refusal,
};
use super::store::{
    CallQuery, HeldCall, RecordingState, RecordsHealth, ReportQuery, ReportRow, SqlStore, Store,
    StoreError, VerificationRow, COUNT_CAP, MAX_PAGE_SIZE,
};
use crate::contract::pb::records_service_server::{RecordsService, RecordsServiceServer};
use crate::contract::pb::{
    event_body, export_calls_response, export_reports_response, get_recording_response, node_event,
    upload_recording_request, AccessEntry, AddTokenRequest, AddTokenResponse, CallFilter,
    CallRecord, CallRecording, EventBody, ExportCallsRequest, ExportCallsResponse, ExportFormat,
    ExportHeader, ExportManifest, Flag, FlagCallRequest, FlagCallResponse, FlagCategory,
    GetCallRequest, GetCallResponse, GetRecordingRequest, GetRecordingResponse, ListAccessRequest,
    ListAccessResponse, ListCallsRequest, ListCallsResponse, ListGapsRequest, ListGapsResponse,
    ListTokensRequest, ListTokensResponse, LogEventsRequest, LogEventsResponse, PurgeRequest,
    PurgeResponse, RecordingStored, RevokeTokenRequest, RevokeTokenResponse, Role, SortOrder,
    TimelineEvent, TokenInfo, UploadRecordingRequest, UploadRecordingResponse, VerifyRequest,
    VerifyResponse,
};
use crate::contract::pb::{
    ConfigChange, ExportReportsRequest, ExportReportsResponse, GetReportRequest, GetReportResponse,
    ListConfigChangesRequest, ListConfigChangesResponse, ListReportsRequest, ListReportsResponse,
    OpenReportRequest, Report, ReportFilter, ReportOpenedVia, ReportResponse, ReviewReportRequest,
    SubmitReportRequest, UpdateReportRequest,
};

/// Rows per store query while exporting.
const EXPORT_PAGE: u32 = 1000;
/// Records buffered between the store and a slow export client: bounds export memory.
const EXPORT_BUFFER: usize = 256;
/// How long after start the first automatic retention purge runs.
const PURGE_DELAY: Duration = Duration::from_secs(60);
/// Access entries one `ListAccess` request reads at most while filtering: a rare
/// filter answers in bounded time and says where to go on.
const MAX_ACCESS_SCAN: usize = 20_000;
/// Longest recording an upload may declare: about nine hours of two-channel 16 kHz audio.
const MAX_UPLOAD_BYTES: u64 = 2 << 30;
/// Longest flag note.
const MAX_NOTE_CHARS: usize = 2000;
/// Prefix of the actor of a token issued straight into the database.
pub const OFFLINE_ACTOR_PREFIX: &str = "offline:";
/// What the access log shows as the peer of an offline change.
const OFFLINE_PEER: &str = "local database";

/// Why the records service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The chain could not be opened.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The signing key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The listen address is in use or not ours.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address we tried to bind.
        address: SocketAddr,
        /// The underlying socket error.
        source: std::io::Error,
    },
    /// Client certificates were configured without the service's own certificate.
    #[error("client certificates need TLS: set [records.service] tls_cert_file and tls_key_file")]
    ClientCertificatesNeedTls,
    /// The TLS certificate, key or client CA could not be read.
    #[error("records service TLS file {path}: {source}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The listener given to `serve_with_listener` has no usable local address.
    #[error("cannot read the listening socket's address: {0}")]
    LocalAddress(#[source] std::io::Error),
    /// The gRPC server failed while running.
    #[error("records service transport failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A token was to be issued directly in a database that holds no records chain.
    #[error("{database} holds no records chain: is it the records service's database? ([records.service] database)")]
    NoChain {
        /// The database, password redacted.
        database: String,
    },
    /// Services sharing a database must sign with the deployment's one key.
    #[error(
        "the shared records chain's last checkpoint was signed by key {chain}, this service's \
         key is {ours}: services sharing a database use one signing key — copy the deployment's \
         key file to [records.service] signing_key_file"
    )]
    SigningKeyNotShared {
        /// Fingerprint of the key that signed the last checkpoint.
        chain: String,
        /// Fingerprint of this service's key.
        ours: String,
    },
    /// The reflection service could not be built.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Everything the service needs from `[records.service]`.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// SQLite path or URL, or PostgreSQL URL.
    pub database: String,
    /// Hash function for a new chain (an existing chain must match).
    pub hash_algorithm: HashAlgorithm,
    /// Ed25519 key file (created if missing).
    pub signing_key_file: PathBuf,
    /// When checkpoints are signed.
    pub checkpoints: CheckpointPolicy,
    /// Retention for `Purge`, days (at least 180).
    pub retention_days: u32,
    /// PEM certificate and key; plain HTTP/2 when `None`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Client certificates accepted in the TLS handshake (mTLS), and their roles;
    /// `None`: none are asked for.
    pub client_certificates: Option<ClientCertificates>,
    /// The evidence store (kept call recordings).
    pub recordings_dir: PathBuf,
    /// The switchboard's recording files are on this machine (embedded service):
    /// taken over (or deleted) from the path their event names.
    pub takes_local_recordings: bool,
}

/// The client certificates a records service accepts, and what each may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertificates {
    /// PEM CA certificate(s) that sign accepted client certificates.
    pub ca_file: PathBuf,
    /// The role of each certificate identity (see [`super::auth::certificate_identities`]).
    pub roles: CertificateRoles,
}

/// Most days one dashboard view covers.
pub const MAX_DASHBOARD_DAYS: u32 = 366;

/// What [`RecordsServer::dashboard_as`] answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Dashboard {
    /// The range's figures.
    pub figures: Figures,
    /// Checkpoint, deliveries, last verification.
    pub health: RecordsHealth,
    /// When it was read (delivery lag is measured to it).
    pub now_ms: i64,
}

/// Implements the generated `RecordsService` trait.
#[derive(Debug, Clone)]
pub struct RecordsServer {
    /// The chain writer.
    ledger: Ledger,
    /// Token checks.
    auth: Authenticator,
    /// Retention for purges.
    retention_days: u32,
    /// Where switchboard events go when several services share the database
    /// (chained by the sequencer); `None`: this service chains them itself.
    staging: Option<Staging>,
    /// Pattern alert rules, webhook and masked roles (`[records.patterns]`).
    patterns: Arc<PatternSettings>,
}

/// An opened records service, not yet listening.
#[derive(Debug)]
pub struct OpenedService {
    /// The gRPC implementation.
    pub server: RecordsServer,
    /// The ledger, for the checkpoint timer.
    pub ledger: Ledger,
    /// TLS settings, if any.
    pub tls: Option<ServerTlsConfig>,
}

impl OpenedService {
    /// Opens the database, the chain and the key.
    pub async fn open(settings: &ServiceSettings) -> Result<OpenedService, ServiceError> {
        let key = RecordsKey::load_or_create(&settings.signing_key_file)?;
        let store: Arc<dyn Store> = Arc::new(SqlStore::open(&settings.database).await?);
        let evidence = Evidence::new(
            settings.recordings_dir.clone(),
            settings.takes_local_recordings,
        );
        match evidence.remove_partial_uploads() {
            Ok(0) => {}
            Ok(removed) => {
                info!(
                    removed,
                    "removed the partial files of uploads cut short by the last stop"
                )
            }
            Err(error) => warn!(%error, "cannot clear partial uploads from the evidence store"),
        }
        let ledger = Ledger::open(
            store.clone(),
            settings.hash_algorithm,
            key,
            settings.checkpoints,
            Some(evidence),
        )
        .await?;
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| ServiceError::TlsFile {
                path: path.clone(),
                source,
            })
        };
        let tls = match (&settings.tls, &settings.client_certificates) {
            (None, None) => None,
            (None, Some(_)) => return Err(ServiceError::ClientCertificatesNeedTls),
            (Some((cert, key)), clients) => {
                let mut tls =
                    ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
                if let Some(clients) = clients {
                    // Optional: token clients need no certificate; one that is presented
                    // must chain to the client CA or the handshake fails.
                    tls = tls
                        .client_ca_root(Certificate::from_pem(read(&clients.ca_file)?))
                        .client_auth_optional(true);
                }
                Some(tls)
            }
        };
        let certificate_roles = settings
            .client_certificates
            .as_ref()
            .map(|clients| clients.roles.clone())
            .unwrap_or_default();
        Ok(OpenedService {
            server: RecordsServer {
                ledger: ledger.clone(),
                auth: Authenticator::new(store).with_certificate_roles(certificate_roles),
                retention_days: settings.retention_days,
                staging: None,
                patterns: Arc::new(PatternSettings::default()),
            },
            ledger,
            tls,
        })
    }

    /// Shares the database with other records services (`[records.service]
    /// shared_database`, PostgreSQL only): switchboard events are staged and
    /// acknowledged once committed, and the one service holding the sequencer's lock
    /// chains them; this one takes over within seconds when that one dies.
    /// The services share one signing key: it refuses to start with another key than
    /// the one that signed the chain's last checkpoint.
    pub async fn share_database(&mut self, database: &str) -> Result<(), ServiceError> {
        let store = self.ledger.store();
        let ours = self.ledger.key().public_key().to_bytes();
        if let Some((seq, _)) = store.records_health().await?.last_checkpoint {
            let signer = store
                .event(seq)
                .await?
                .and_then(|event| event.body)
                .and_then(|body| <EventBody as prost::Message>::decode(body.as_slice()).ok())
                .and_then(|body| match body.kind {
                    Some(event_body::Kind::Checkpoint(checkpoint)) => Some(checkpoint.public_key),
                    _ => None,
                });
            if let Some(signer) = signer.filter(|signer| signer.as_slice() != ours) {
                return Err(ServiceError::SigningKeyNotShared {
                    chain: <[u8; 32]>::try_from(signer.as_slice())
                        .map_or_else(|_| hex::encode(&signer), |key| fingerprint(&key)),
                    ours: fingerprint(&ours),
                });
            }
        }
        let staging = Staging::open(database, self.ledger.algorithm()).await?;
        // The sequencer's follower writes calls and the figures after the chain.
        self.ledger.derive_by_follower();
        self.server.staging = Some(staging);
        Ok(())
    }

    /// What the admin endpoint reads: metrics and readiness (call after
    /// [`OpenedService::share_database`], whose staging it counts).
    pub fn monitor(&self) -> RecordsMonitor {
        RecordsMonitor::new(self.ledger.clone(), self.server.staging.clone())
    }

    /// Uses `patterns` (`[records.patterns]` and the masked roles) instead of the
    /// defaults: no alert rules, auditors and admins masked.
    pub fn with_patterns(mut self, patterns: PatternSettings) -> OpenedService {
        self.server.patterns = Arc::new(patterns);
        self
    }

    /// Gives the embedded switchboard an in-memory switchboard token; returns its secret.
    pub fn builtin_switchboard_token(&mut self) -> String {
        let (auth, secret) = self
            .server
            .auth
            .clone()
            .with_builtin_switchboard("embedded-switchboard");
        self.server.auth = auth;
        secret
    }

    /// Serves on `listener` until `shutdown` completes, signing checkpoints on the way
    /// and a last one at the end; then closes the store.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServiceError> {
        let address = listener.local_addr().map_err(ServiceError::LocalAddress)?;
        let store = self.ledger.store().clone();
        info!(%address, database = store.location(), tls = self.tls.is_some(), public_key = %self.ledger.key().public_key_hex(), fingerprint = %fingerprint(&self.ledger.key().public_key().to_bytes()), "records service listening");
        // Both reflection versions: grpcurl and Postman speak v1, while Python's
        // grpcio-reflection, older grpcurl and Evans still speak only v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::contract::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls)?;
        }
        let (stop_checkpoints, checkpoints_stopped) = tokio::sync::oneshot::channel::<()>();
        let ledger = self.ledger.clone();
        let checkpoints = tokio::spawn(async move {
            ledger
                .run_checkpoints(async {
                    let _ = checkpoints_stopped.await;
                })
                .await;
        });
        let (stop_sequencer, sequencer_stopped) = tokio::sync::oneshot::channel::<()>();
        let sequencer = self.server.staging.clone().map(|staging| {
            let ledger = self.ledger.clone();
            tokio::spawn(super::ledger::sequencer::run(ledger, staging, async {
                let _ = sequencer_stopped.await;
            }))
        });
        let (stop_purges, purges_stopped) = tokio::sync::oneshot::channel::<()>();
        let purges = tokio::spawn(run_daily_purge(
            self.ledger.clone(),
            self.server.retention_days,
            async {
                let _ = purges_stopped.await;
            },
        ));
        let staging = self.server.staging.clone();
        let (stop_alerts, alerts_stopped) = tokio::sync::oneshot::channel::<()>();
        // Calls are announced only while rules watch them.
        let finished = (!self.server.patterns.rules.is_empty())
            .then(|| self.ledger.watch_finished_calls())
            .flatten();
        let alerts = finished.map(|finished| {
            tokio::spawn(run_alerts(
                self.ledger.clone(),
                PatternSettings::clone(&self.server.patterns),
                finished,
                async {
                    let _ = alerts_stopped.await;
                },
            ))
        });
        let result = builder
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(RecordsServiceServer::new(self.server))
            .serve_with_incoming_shutdown(incoming_without_delay(listener), shutdown)
            .await;
        let _ = stop_purges.send(());
        // The sequencer stops before the last checkpoint: that one covers all it chained.
        let _ = stop_sequencer.send(());
        if let Some(task) = sequencer {
            if let Err(join) = task.await {
                error!(error = %join, "sequencer task failed");
            }
        }
        if let Some(staging) = staging {
            staging.close().await;
        }
        let _ = stop_alerts.send(());
        if let Some(Err(join)) = match alerts {
            Some(task) => Some(task.await),
            None => None,
        } {
            error!(error = %join, "pattern alert task failed");
        }
        let _ = stop_checkpoints.send(());
        if let Err(join) = purges.await {
            error!(error = %join, "retention task failed");
        }
        if let Err(join) = checkpoints.await {
            error!(error = %join, "checkpoint task failed");
        }
        store.close().await;
        info!(%address, "records service stopped");
        result.map_err(ServiceError::Transport)
    }
}

/// Accepted connections with Nagle's algorithm off: a response larger than one TCP
/// segment would otherwise wait out the client's delayed ACK (~40 ms) per request.
fn incoming_without_delay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|connection| {
        if let Ok(stream) = &connection {
            // Best effort: a socket that refuses it still works, only slower.
            let _ = stream.set_nodelay(true);
        }
        connection
    })
}

/// Opens the service per `settings`, listens on `listen` and serves until `shutdown`.
pub async fn serve(
    listen: SocketAddr,
    settings: &ServiceSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServiceError> {
    let service = OpenedService::open(settings).await?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ServiceError::Bind {
            address: listen,
            source,
        })?;
    service.serve(listener, shutdown).await
}

/// Logs a ledger failure and turns it into a status; transient ones become
/// `Unavailable` so clients keep retrying.
fn status(context: &str, error: LedgerError) -> Status {
    match error {
        LedgerError::Invalid(_) => Status::invalid_argument(error.to_string()),
        LedgerError::Conflict { .. } | LedgerError::TokenExists(_) => {
            Status::already_exists(error.to_string())
        }
        LedgerError::NoSuchCall(_) | LedgerError::NoSuchToken(_) | LedgerError::NoSuchReport(_) => {
            Status::not_found(error.to_string())
        }
        LedgerError::Refused(Refusal::NotAllowed(_)) => {
            Status::permission_denied(error.to_string())
        }
        LedgerError::Refused(Refusal::Invalid(_)) => Status::invalid_argument(error.to_string()),
        LedgerError::Refused(Refusal::WrongState(_)) | LedgerError::StaleReport { .. } => {
            Status::failed_precondition(error.to_string())
        }
        LedgerError::Store(StoreError::InvalidPageToken(_)) => {
            Status::invalid_argument(error.to_string())
        }
        LedgerError::Store(ref store) if store.is_transient() => {
            warn!(%error, "{context}: records database temporarily unavailable");
            Status::unavailable(format!("{context}: {error}"))
        }
        _ => {
            error!(%error, "{context}: records service error");
            Status::internal(format!("{context}: {error}"))
        }
    }
}

fn store_status(context: &str, error: StoreError) -> Status {
    status(context, LedgerError::Store(error))
}

/// The filter as JSON, for the access log and export manifests (only what is set).
fn filter_json(filter: &CallFilter) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    let mut put = |key: &str, value: serde_json::Value| {
        map.insert(key.to_owned(), value);
    };
    if filter.since_ms != 0 {
        put("since_ms", filter.since_ms.into());
    }
    if filter.until_ms != 0 {
        put("until_ms", filter.until_ms.into());
    }
    for (key, text) in [
        ("line_number", &filter.line_number),
        ("court_name", &filter.court_name),
        ("caller_prefix", &filter.caller_prefix),
        ("caller_name_contains", &filter.caller_name_contains),
        ("call_id_prefix", &filter.call_id_prefix),
    ] {
        if !text.is_empty() {
            put(key, text.clone().into());
        }
    }
    if filter.caller_exact {
        put("caller_exact", true.into());
    }
    if filter.end_reason != 0 {
        put(
            "end_reason",
            crate::contract::names::end_reason_name(filter.end_reason()).into(),
        );
    }
    for (key, choice) in [
        ("prompt_completed", filter.prompt_completed()),
        ("connected", filter.connected()),
        ("flagged", filter.flagged()),
        ("has_report", filter.has_report()),
        ("has_recording", filter.has_recording()),
        ("probe", filter.probe()),
    ] {
        match choice {
            crate::contract::pb::Choice::Any => {}
            crate::contract::pb::Choice::Yes => put(key, "yes".into()),
            crate::contract::pb::Choice::No => put(key, "no".into()),
        }
    }
    if !filter.states.is_empty() {
        put(
            "states",
            filter
                .states
                .iter()
                .map(|state| crate::contract::names::state_label(*state).into_owned())
                .collect::<Vec<_>>()
                .into(),
        );
    }
    serde_json::Value::Object(map)
}

fn validate_filter(filter: &CallFilter) -> Result<(), Status> {
    if crate::contract::pb::EndReason::try_from(filter.end_reason).is_err() {
        return Err(Status::invalid_argument(format!(
            "unknown end_reason {}",
            filter.end_reason
        )));
    }
    for state in &filter.states {
        if crate::contract::pb::CallState::try_from(*state).is_err() {
            return Err(Status::invalid_argument(format!("unknown state {state}")));
        }
    }
    Ok(())
}

/// Whether an access entry passes a `ListAccess` request's filters other than time
/// (the store applies those).
fn access_matches(request: &ListAccessRequest, entry: &AccessEntry) -> bool {
    let call_id = request.call_id.trim();
    let reason = request.reason_contains.trim().to_lowercase();
    (request.actor.is_empty() || entry.actor == request.actor)
        && (request.operation.trim().is_empty()
            || entry
                .operation
                .eq_ignore_ascii_case(request.operation.trim()))
        && (call_id.is_empty() || entry.parameters.contains(&format!("\"{call_id}\"")))
        && (reason.is_empty() || entry.reason.to_lowercase().contains(&reason))
}

fn sort_name(sort: SortOrder) -> &'static str {
    match sort {
        SortOrder::NewestFirst => "newest_first",
        SortOrder::OldestFirst => "oldest_first",
    }
}

impl RecordsServer {
    /// Records one access in the chain; a request whose access cannot be recorded fails.
    async fn log_access(
        &self,
        caller: &Caller,
        operation: &str,
        parameters: serde_json::Value,
        rows: u64,
    ) -> Result<(), Status> {
        self.ledger
            .record_access(access_entry(caller, operation, parameters, rows))
            .await
            .map(|_| ())
            .map_err(|error| status("recording the access", error))
    }
}

/// The access-log entry of one operation by `caller`.
fn access_entry(
    caller: &Caller,
    operation: &str,
    parameters: serde_json::Value,
    rows: u64,
) -> AccessEntry {
    AccessEntry {
        seq: 0,
        at_ms: now_ms(),
        actor: caller.name.clone(),
        role: role_name(caller.role).to_owned(),
        operation: operation.to_owned(),
        parameters: parameters.to_string(),
        rows,
        reason: caller.reason.clone(),
        peer: caller.peer.clone(),
    }
}

/// The parameters an AddToken access is logged with.
fn add_token_parameters(name: &str, role: Role) -> serde_json::Value {
    serde_json::json!({ "name": name, "role": role_name(role) })
}

/// Issues a token directly in the database, without the service (which must not be
/// running: its chain head would go stale). The recovery path when no admin token is
/// left: whoever can write the database and read the signing key — the machine's
/// root — is admin here. Recorded on the chain like a token issued through the
/// service, as an access by `offline:<os_user>`; the chain head is signed before
/// returning. Returns the token's secret.
pub async fn add_token_offline(
    settings: &ServiceSettings,
    name: &str,
    role: Role,
    os_user: &str,
    reason: &str,
) -> Result<String, ServiceError> {
    // Load, never create: a new key would sign this chain with a key no auditor knows.
    let key = RecordsKey::load(&settings.signing_key_file)?;
    let store: Arc<dyn Store> = Arc::new(SqlStore::open(&settings.database).await?);
    let result = async {
        if store.head().await?.is_none() {
            return Err(ServiceError::NoChain {
                database: store.location().to_owned(),
            });
        }
        let ledger = Ledger::open(
            store.clone(),
            settings.hash_algorithm,
            key,
            settings.checkpoints,
            None,
        )
        .await?;
        let caller = Caller {
            name: format!("{OFFLINE_ACTOR_PREFIX}{os_user}"),
            role: Role::Admin,
            peer: OFFLINE_PEER.to_owned(),
            reason: reason.to_owned(),
            under_loopback_rule: false,
        };
        let secret = ledger.add_token(name, role, &caller.name).await?;
        ledger
            .record_access(access_entry(
                &caller,
                "AddToken",
                add_token_parameters(name, role),
                1,
            ))
            .await?;
        ledger.checkpoint_if_due().await?;
        Ok::<_, ServiceError>(secret)
    }
    .await;
    store.close().await;
    result
}

pub type RecordingStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<GetRecordingResponse, Status>> + Send>>;

/// Chunks of a recording in flight to one client.
const RECORDING_BUFFER: usize = 8;
/// Bytes per recording chunk (well under gRPC's 4 MiB message limit).
const RECORDING_CHUNK: usize = 256 * 1024;

/// Sends the description, then the file in chunks (on a blocking thread: file reads).
fn stream_recording(
    mut file: std::fs::File,
    described: CallRecording,
    sender: &mpsc::Sender<Result<GetRecordingResponse, Status>>,
) {
    use std::io::Read;
    let item = |item| Ok(GetRecordingResponse { item: Some(item) });
    if sender
        .blocking_send(item(get_recording_response::Item::Recording(described)))
        .is_err()
    {
        return;
    }
    let mut buffer = vec![0; RECORDING_CHUNK];
    loop {
        let message = match file.read(&mut buffer) {
            Ok(0) => return,
            Ok(read) => item(get_recording_response::Item::Chunk(buffer[..read].to_vec())),
            Err(error) => Err(Status::data_loss(format!(
                "reading the recording failed midway: {error}"
            ))),
        };
        let failed = message.is_err();
        if sender.blocking_send(message).is_err() || failed {
            return;
        }
    }
}

pub type ExportStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<ExportCallsResponse, Status>> + Send>>;

pub type ReportExportStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<ExportReportsResponse, Status>> + Send>>;

/// An upload refused for what arrived: the switchboard may send it again.
fn upload_status(call_id: &str, problem: UploadProblem) -> Status {
    let message = format!("call {call_id}'s recording upload: {problem}");
    match problem {
        UploadProblem::Io(_) => {
            error!(call = call_id, %problem, "cannot store an uploaded recording");
            Status::unavailable(message)
        }
        _ => {
            warn!(call = call_id, %problem, "refused a recording upload");
            Status::data_loss(message)
        }
    }
}

/// Runs one blocking step of an upload off the async threads.
async fn blocking<T: Send + 'static>(
    call_id: &str,
    step: impl FnOnce() -> Result<T, UploadProblem> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(step).await {
        Ok(result) => result.map_err(|problem| upload_status(call_id, problem)),
        Err(join) => Err(Status::internal(format!(
            "call {call_id}'s recording upload: {join}"
        ))),
    }
}

#[tonic::async_trait]
impl RecordsService for RecordsServer {
    async fn log_events(
        &self,
        request: Request<LogEventsRequest>,
    ) -> Result<Response<LogEventsResponse>, Status> {
        self.auth.authorize(&request, Role::Switchboard).await?;
        let events = request.into_inner().events;
        let outcome = match &self.staging {
            Some(staging) => staging.stage(events).await,
            None => self.ledger.ingest(events).await,
        }
        .map_err(|error| status("storing events", error))?;
        Ok(Response::new(LogEventsResponse {
            stored: outcome.stored,
            duplicates: outcome.duplicates,
        }))
    }

    async fn upload_recording(
        &self,
        request: Request<tonic::Streaming<UploadRecordingRequest>>,
    ) -> Result<Response<UploadRecordingResponse>, Status> {
        let caller = self.auth.authorize(&request, Role::Switchboard).await?;
        self.upload_recording_as(&caller, request.into_inner())
            .await
            .map(Response::new)
    }

    type ExportReportsStream = ReportExportStream;

    async fn export_reports(
        &self,
        request: Request<ExportReportsRequest>,
    ) -> Result<Response<Self::ExportReportsStream>, Status> {
        let caller = self
            .auth
            .authorize_any(&request, &[Role::Compliance, Role::Auditor, Role::Operator])
            .await?;
        self.export_reports_as(caller, request.into_inner())
            .map(Response::new)
    }

    async fn list_calls(
        &self,
        request: Request<ListCallsRequest>,
    ) -> Result<Response<ListCallsResponse>, Status> {
        let caller = self.auth.authorize(&request, Role::Compliance).await?;
        self.list_calls_as(&caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_call(
        &self,
        request: Request<GetCallRequest>,
    ) -> Result<Response<GetCallResponse>, Status> {
        let caller = self
            .auth
            .authorize_any(&request, &[Role::Compliance, Role::Operator])
            .await?;
        self.get_call_as(&caller, request.into_inner().call_id)
            .await
            .map(Response::new)
    }

    type GetRecordingStream = RecordingStream;

    async fn get_recording(
        &self,
        request: Request<GetRecordingRequest>,
    ) -> Result<Response<Self::GetRecordingStream>, Status> {
        let caller = self
            .auth
            .authorize_any(&request, &[Role::Compliance, Role::Auditor])
            .await?;
        self.get_recording_as(&caller, request.into_inner().call_id)
            .await
            .map(Response::new)
    }

    type ExportCallsStream = ExportStream;

    async fn export_calls(
        &self,
        request: Request<ExportCallsRequest>,
    ) -> Result<Response<Self::ExportCallsStream>, Status> {
        let caller = self.auth.authorize(&request, Role::Compliance).await?;
        self.export_calls_as(caller, request.into_inner())
            .map(Response::new)
    }

    async fn flag_call(
        &self,
        request: Request<FlagCallRequest>,
    ) -> Result<Response<FlagCallResponse>, Status> {
        let caller = self.auth.authorize(&request, Role::Compliance).await?;
        self.flag_call_as(&caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> Result<Response<VerifyResponse>, Status> {
        let caller = self.auth.authorize(&request, Role::Auditor).await?;
        self.verify_as(&caller).await.map(Response::new)
    }

    async fn list_gaps(
        &self,
        request: Request<ListGapsRequest>,
    ) -> Result<Response<ListGapsResponse>, Status> {
        let caller = self.auth.authorize(&request, Role::Auditor).await?;
        let (nodes, gaps) = self
            .ledger
            .store()
            .node_gaps()
            .await
            .map_err(|error| store_status("finding gaps", error))?;
        self.log_access(
            &caller,
            "ListGaps",
            serde_json::json!({}),
            gaps.len() as u64,
        )
        .await?;
        Ok(Response::new(ListGapsResponse { nodes, gaps }))
    }

    async fn list_access(
        &self,
        request: Request<ListAccessRequest>,
    ) -> Result<Response<ListAccessResponse>, Status> {
        let caller = self.auth.authorize(&request, Role::Auditor).await?;
        self.list_access_as(&caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_config_changes(
        &self,
        request: Request<ListConfigChangesRequest>,
    ) -> Result<Response<ListConfigChangesResponse>, Status> {
        let caller = self
            .auth
            .authorize_any(&request, &[Role::Auditor, Role::Compliance, Role::Admin])
            .await?;
        self.list_config_changes_as(&caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn add_token(
        &self,
        request: Request<AddTokenRequest>,
    ) -> Result<Response<AddTokenResponse>, Status> {
        let caller = self.auth.authorize(&request, Role::Admin).await?;
        let request = request.into_inner();
        self.add_token_as(&caller, &request.name, request.role())
            .await
            .map(Response::new)
    }

    async fn list_tokens(
        &self,
        request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        let caller = self.auth.authorize(&request, Role::Admin).await?;
        self.list_tokens_as(&caller).await.map(Response::new)
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        let caller = self.auth.authorize(&request, Role::Admin).await?;
        self.revoke_token_as(&caller, &request.into_inner().name)
            .await?;
        Ok(Response::new(RevokeTokenResponse {}))
    }

    async fn purge(
        &self,
        request: Request<PurgeRequest>,
    ) -> Result<Response<PurgeResponse>, Status> {
        let caller = self.auth.authorize(&request, Role::Admin).await?;
        self.purge_as(&caller, request.into_inner().dry_run)
            .await
            .map(Response::new)
    }

    async fn open_report(
        &self,
        request: Request<OpenReportRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        let caller = self
            .auth
            .authorize_any(&request, &[Role::Compliance, Role::Operator])
            .await?;
        self.open_report_as(&caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn update_report(
        &self,
        request: Request<UpdateReportRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        let caller = self
            .auth
            .authorize_any(&request, &[Role::Compliance, Role::Operator])
            .await?;
        self.update_report_as(&caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn submit_report(
        &self,
        request: Request<SubmitReportRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        let caller = self
            .auth
            .authorize_any(&request, &[Role::Compliance, Role::Operator])
            .await?;
        self.submit_report_as(&caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn review_report(
        &self,
        request: Request<ReviewReportRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        let caller = self.auth.authorize(&request, Role::Compliance).await?;
        self.review_report_as(&caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_report(
        &self,
        request: Request<GetReportRequest>,
    ) -> Result<Response<GetReportResponse>, Status> {
        let caller = self
            .auth
            .authorize_any(&request, &[Role::Compliance, Role::Auditor, Role::Operator])
            .await?;
        self.get_report_as(&caller, request.into_inner().report_id)
            .await
            .map(Response::new)
    }

    async fn list_patterns(
        &self,
        request: Request<crate::contract::pb::ListPatternsRequest>,
    ) -> Result<Response<crate::contract::pb::ListPatternsResponse>, Status> {
        let caller = self
            .auth
            .authorize_any(&request, &[Role::Compliance, Role::Auditor])
            .await?;
        self.list_patterns_as(&caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn caller_history(
        &self,
        request: Request<crate::contract::pb::CallerHistoryRequest>,
    ) -> Result<Response<crate::contract::pb::CallerHistoryResponse>, Status> {
        self.auth.authorize(&request, Role::Switchboard).await?;
        self.caller_history_of(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_reports(
        &self,
        request: Request<ListReportsRequest>,
    ) -> Result<Response<ListReportsResponse>, Status> {
        let caller = self
            .auth
            .authorize_any(&request, &[Role::Compliance, Role::Auditor, Role::Operator])
            .await?;
        self.list_reports_as(&caller, request.into_inner())
            .await
            .map(Response::new)
    }
}

/// The workflow's actor for an authenticated caller.
fn actor(caller: &Caller) -> Actor {
    Actor {
        name: caller.name.clone(),
        role: caller.role,
    }
}

/// A report filter as JSON, for the access log (only what is set).
fn report_filter_json(filter: &ReportFilter) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (key, value) in [("since_ms", filter.since_ms), ("until_ms", filter.until_ms)] {
        if value != 0 {
            map.insert(key.to_owned(), value.into());
        }
    }
    for (key, text) in [
        ("court_name", &filter.court_name),
        ("line_number", &filter.line_number),
        ("staff", &filter.staff),
        ("case_number_contains", &filter.case_number_contains),
        ("call_id", &filter.call_id),
    ] {
        if !text.is_empty() {
            map.insert(key.to_owned(), text.clone().into());
        }
    }
    if filter.kind != 0 {
        map.insert(
            "kind".into(),
            super::reports::workflow::kind_name(filter.kind()).into(),
        );
    }
    if filter.status != 0 {
        map.insert("status".into(), status_name(filter.status()).into());
    }
    serde_json::Value::Object(map)
}

impl RecordsServer {
    /// One change (update, submit, review) to version `version` of a report by
    /// `caller`: chained by the ledger, then answered and logged as `operation`.
    async fn change_report_as(
        &self,
        caller: &Caller,
        operation: &str,
        report_id: &str,
        version: u32,
        action: Action,
    ) -> Result<ReportResponse, Status> {
        let parameters = serde_json::json!({ "report_id": report_id, "version": version });
        let result = self
            .ledger
            .change_report(report_id, version, action, &actor(caller))
            .await;
        self.report_changed(caller, operation, parameters, result)
            .await
    }

    /// Logs a report change (or its refusal) and answers with the new version.
    async fn report_changed(
        &self,
        caller: &Caller,
        operation: &str,
        mut parameters: serde_json::Value,
        result: Result<(Report, i64), LedgerError>,
    ) -> Result<ReportResponse, Status> {
        match result {
            Ok((report, seq)) => {
                parameters["report_id"] = report.report_id.clone().into();
                parameters["call_id"] = report.call_id.clone().into();
                parameters["version"] = report.version.into();
                parameters["status"] = status_name(report.status()).into();
                parameters["report_seq"] = seq.into();
                self.log_access(caller, operation, parameters, 1).await?;
                Ok(ReportResponse {
                    warnings: warnings(&report.form.clone().unwrap_or_default()),
                    report: Some(report),
                    seq: seq as u64,
                })
            }
            Err(error) => {
                let refused = status(operation, error);
                parameters["refused"] = refused.message().into();
                self.log_access(caller, operation, parameters, 0).await?;
                Err(refused)
            }
        }
    }
}

/// The operations behind the gRPC handlers, for a caller already authorised (the
/// gRPC handlers and the web console alike), each recorded in the access log.
impl RecordsServer {
    /// Token and loopback-rule checks, shared with the web console's sign-in.
    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    /// The public key that signs checkpoints and exports (hex) and its fingerprint.
    pub fn public_key(&self) -> (String, String) {
        let key = self.ledger.key();
        (
            key.public_key_hex(),
            fingerprint(&key.public_key().to_bytes()),
        )
    }

    /// The chain's hash function, for export files.
    pub fn hash_algorithm(&self) -> HashAlgorithm {
        self.ledger.algorithm()
    }

    /// `ListCalls` for `caller`.
    pub async fn list_calls_as(
        &self,
        caller: &Caller,
        request: ListCallsRequest,
    ) -> Result<ListCallsResponse, Status> {
        let sort = request.sort();
        let filter = request.filter.unwrap_or_default();
        validate_filter(&filter)?;
        let query = CallQuery {
            sort,
            filter,
            page_size: request.page_size,
            page_token: (!request.page_token.is_empty()).then_some(request.page_token),
        };
        let (records, next) = self
            .ledger
            .store()
            .list_calls(&query)
            .await
            .map_err(|error| store_status("listing calls", error))?;
        let records = self
            .with_flags(records)
            .await
            .map_err(|error| store_status("reading the flags of listed calls", error))?;
        // Counted with the first page only: later pages are the same search.
        let counted = match query.page_token {
            Some(_) => 0,
            None => self
                .ledger
                .store()
                .count_calls(&query.filter, COUNT_CAP)
                .await
                .map_err(|error| store_status("counting calls", error))?,
        };
        let parameters = serde_json::json!({
            "filter": filter_json(&query.filter),
            "sort": sort_name(query.sort),
            "page_size": query.effective_page_size(),
            "continued": query.page_token.is_some(),
        });
        self.log_access(caller, "ListCalls", parameters, records.len() as u64)
            .await?;
        Ok(ListCallsResponse {
            records,
            next_page_token: next.unwrap_or_default(),
            total: counted.min(u64::from(COUNT_CAP)),
            total_capped: counted > u64::from(COUNT_CAP),
        })
    }

    /// `GetCall` for `caller`.
    pub async fn get_call_as(
        &self,
        caller: &Caller,
        call_id: String,
    ) -> Result<GetCallResponse, Status> {
        validate_call_id(&call_id).map_err(|error| status("reading a call", error))?;
        let store = self.ledger.store();
        let context = format!("reading call {call_id}");
        if caller.role == Role::Operator {
            // An operator reads only the calls its own reports are about.
            let reports = store
                .reports_of_call(&call_id)
                .await
                .map_err(|error| store_status(&context, error))?;
            let own = reports
                .iter()
                .filter_map(|row| row.decode().ok())
                .any(|report| is_owner(&report, &caller.name));
            if !own {
                let refusal = format!(
                    "{} may read only the calls of its own reports; call {call_id} is not one",
                    caller.name
                );
                self.log_access(
                    caller,
                    "GetCall",
                    serde_json::json!({ "call_id": call_id, "refused": refusal }),
                    0,
                )
                .await?;
                return Err(Status::permission_denied(refusal));
            }
        }
        let record = store
            .get_call(&call_id)
            .await
            .map_err(|error| store_status(&context, error))?;
        let events = store
            .call_events(&call_id)
            .await
            .map_err(|error| store_status(&context, error))?;
        self.log_access(
            caller,
            "GetCall",
            serde_json::json!({ "call_id": call_id }),
            u64::from(record.is_some()),
        )
        .await?;
        let Some(mut record) = record else {
            return Err(Status::not_found(format!("no call with id {call_id}")));
        };
        let mut timeline: Vec<TimelineEvent> = Vec::new();
        let mut flags: Vec<Flag> = Vec::new();
        for event in &events {
            let (entry, flag) = timeline_entry(event);
            timeline.push(entry);
            flags.extend(flag);
        }
        record.flags = flags.clone();
        let recording = store
            .recording(&call_id)
            .await
            .map_err(|error| store_status(&context, error))?
            .map(|row| {
                let chained =
                    chained_recording(&events).map(|(seq, recording, _)| (seq, recording));
                describe_recording(&row, chained)
            });
        Ok(GetCallResponse {
            record: Some(record),
            timeline,
            flags,
            recording,
        })
    }

    /// `GetRecording` for `caller`: the recording's description, then its bytes.
    pub async fn get_recording_as(
        &self,
        caller: &Caller,
        call_id: String,
    ) -> Result<RecordingStream, Status> {
        validate_call_id(&call_id).map_err(|error| status("reading a recording", error))?;
        let store = self.ledger.store();
        let context = format!("reading call {call_id}'s recording");
        let row = store
            .recording(&call_id)
            .await
            .map_err(|error| store_status(&context, error))?;
        let events = store
            .call_events(&call_id)
            .await
            .map_err(|error| store_status(&context, error))?;
        let stored = row
            .as_ref()
            .is_some_and(|row| row.state == RecordingState::Stored);
        self.log_access(
            caller,
            "GetRecording",
            serde_json::json!({ "call_id": call_id }),
            u64::from(stored),
        )
        .await?;
        let Some(row) = row else {
            return Err(Status::not_found(format!(
                "call {call_id} has no recording (no such call, or its line does not record)"
            )));
        };
        let chained = chained_recording(&events).map(|(seq, recording, _)| (seq, recording));
        let described = describe_recording(&row, chained);
        if !stored {
            return Err(Status::failed_precondition(format!(
                "call {call_id}'s recording was not kept: {}{}",
                described.state,
                if described.detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", described.detail)
                }
            )));
        }
        let Some(evidence) = self.ledger.evidence() else {
            return Err(Status::unavailable(
                "this records service keeps no recordings",
            ));
        };
        let path = evidence.path(&call_id);
        let file = std::fs::File::open(&path).map_err(|error| {
            Status::data_loss(format!(
                "call {call_id}'s recording {} cannot be read ({error}); run `courtline records verify`",
                path.display()
            ))
        })?;
        let (sender, receiver) = mpsc::channel(RECORDING_BUFFER);
        tokio::task::spawn_blocking(move || stream_recording(file, described, &sender));
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }

    /// `FlagCall` for `caller`.
    pub async fn flag_call_as(
        &self,
        caller: &Caller,
        request: FlagCallRequest,
    ) -> Result<FlagCallResponse, Status> {
        validate_call_id(&request.call_id).map_err(|error| status("flagging", error))?;
        let category = match FlagCategory::try_from(request.category) {
            Ok(FlagCategory::Unspecified) | Err(_) => {
                return Err(Status::invalid_argument(
                    "a flag needs a category: improper_inquiry, intercession, probing_case_information or other",
                ))
            }
            Ok(category) => category,
        };
        if category == FlagCategory::Other && request.note.trim().is_empty() {
            return Err(Status::invalid_argument(
                "a flag of category other needs a note saying what happened",
            ));
        }
        if request.note.chars().count() > MAX_NOTE_CHARS {
            return Err(Status::invalid_argument(format!(
                "the note is longer than {MAX_NOTE_CHARS} characters"
            )));
        }
        let flag = Flag {
            category: category as i32,
            note: request.note.clone(),
            flagged_by: caller.name.clone(),
            flagged_at_ms: now_ms(),
        };
        let seq = self
            .ledger
            .flag(&request.call_id, flag)
            .await
            .map_err(|error| status("flagging", error))?;
        self.log_access(
            caller,
            "FlagCall",
            serde_json::json!({
                "call_id": request.call_id,
                "category": crate::contract::names::flag_category_name(category),
                "flag_seq": seq,
            }),
            1,
        )
        .await?;
        Ok(FlagCallResponse { seq: seq as u64 })
    }

    /// `OpenReport` for `caller` (an unspecified `opened_via` counts as the CLI).
    pub async fn open_report_as(
        &self,
        caller: &Caller,
        request: OpenReportRequest,
    ) -> Result<ReportResponse, Status> {
        validate_call_id(&request.call_id).map_err(|error| status("opening a report", error))?;
        let via = match ReportOpenedVia::try_from(request.opened_via) {
            Ok(ReportOpenedVia::Unspecified) | Err(_) => ReportOpenedVia::Cli,
            Ok(via) => via,
        };
        let parameters = serde_json::json!({
            "call_id": request.call_id,
            "opened_via": opened_via_name(via),
        });
        let result = self
            .ledger
            .open_report(
                &request.call_id,
                via,
                request.form.unwrap_or_default(),
                &actor(caller),
            )
            .await;
        self.report_changed(caller, "OpenReport", parameters, result)
            .await
    }

    /// `UpdateReport` for `caller`.
    pub async fn update_report_as(
        &self,
        caller: &Caller,
        request: UpdateReportRequest,
    ) -> Result<ReportResponse, Status> {
        let action = Action::Update(request.form.unwrap_or_default());
        self.change_report_as(
            caller,
            "UpdateReport",
            &request.report_id,
            request.version,
            action,
        )
        .await
    }

    /// `SubmitReport` for `caller`.
    pub async fn submit_report_as(
        &self,
        caller: &Caller,
        request: SubmitReportRequest,
    ) -> Result<ReportResponse, Status> {
        self.change_report_as(
            caller,
            "SubmitReport",
            &request.report_id,
            request.version,
            Action::Submit,
        )
        .await
    }

    /// `ReviewReport` for `caller` (the workflow refuses anyone but compliance).
    pub async fn review_report_as(
        &self,
        caller: &Caller,
        request: ReviewReportRequest,
    ) -> Result<ReportResponse, Status> {
        let action = Action::Review {
            conclusion: request.conclusion,
        };
        self.change_report_as(
            caller,
            "ReviewReport",
            &request.report_id,
            request.version,
            action,
        )
        .await
    }

    /// `GetReport` for `caller`: the report and every version of it; an operator
    /// reads only its own reports.
    pub async fn get_report_as(
        &self,
        caller: &Caller,
        report_id: String,
    ) -> Result<GetReportResponse, Status> {
        let context = format!("reading report {report_id}");
        let store = self.ledger.store();
        let report = match store
            .get_report(&report_id)
            .await
            .and_then(|row| row.map(|row| row.decode()).transpose())
        {
            Ok(report) => report,
            Err(error) => return Err(store_status(&context, error)),
        };
        let readable = report
            .as_ref()
            .is_some_and(|report| may_read(report, &actor(caller)));
        let refused = report.is_some() && !readable;
        let mut parameters = serde_json::json!({ "report_id": report_id });
        if refused {
            parameters["refused"] = "not the caller's report".into();
        }
        self.log_access(caller, "GetReport", parameters, u64::from(readable))
            .await?;
        let Some(report) = report else {
            return Err(Status::not_found(format!("no report with id {report_id}")));
        };
        if refused {
            return Err(Status::permission_denied(format!(
                "report {report_id} is {}'s: an operator reads only its own reports",
                report.opened_by
            )));
        }
        let mut versions = Vec::new();
        let seqs = store
            .report_versions(&report_id)
            .await
            .map_err(|error| store_status(&context, error))?;
        for (_, seq) in seqs {
            let event = store
                .event(seq)
                .await
                .map_err(|error| store_status(&context, error))?;
            let version = event
                .and_then(|event| event.body)
                .and_then(|body| prost::Message::decode(body.as_slice()).ok())
                .and_then(|body: EventBody| match body.kind {
                    Some(event_body::Kind::Report(changed)) => changed.report,
                    _ => None,
                });
            versions.extend(version);
        }
        Ok(GetReportResponse {
            warnings: warnings(&report.form.clone().unwrap_or_default()),
            report: Some(report),
            versions,
        })
    }

    /// `ListReports` for `caller`: an operator lists only its own reports.
    pub async fn list_reports_as(
        &self,
        caller: &Caller,
        request: ListReportsRequest,
    ) -> Result<ListReportsResponse, Status> {
        let sort = request.sort();
        let query = ReportQuery {
            filter: request.filter.unwrap_or_default(),
            // An operator lists only its own reports.
            owner: (caller.role == Role::Operator).then(|| caller.name.clone()),
            sort,
            page_size: request.page_size,
            page_token: (!request.page_token.is_empty()).then_some(request.page_token),
        };
        let (rows, next) = self
            .ledger
            .store()
            .list_reports(&query)
            .await
            .map_err(|error| store_status("listing reports", error))?;
        let reports = rows
            .iter()
            .map(ReportRow::decode)
            .collect::<Result<Vec<Report>, _>>()
            .map_err(|error| store_status("listing reports", error))?;
        let parameters = serde_json::json!({
            "filter": report_filter_json(&query.filter),
            "sort": sort_name(sort),
            "own_only": query.owner.is_some(),
            "continued": query.page_token.is_some(),
        });
        self.log_access(caller, "ListReports", parameters, reports.len() as u64)
            .await?;
        Ok(ListReportsResponse {
            reports,
            next_page_token: next.unwrap_or_default(),
        })
    }

    /// `Verify` for `caller`.
    pub async fn verify_as(&self, caller: &Caller) -> Result<VerifyResponse, Status> {
        self.verify_counting_as(caller, &AtomicU64::new(0)).await
    }

    /// `Verify` for `caller`, storing in `checked` how many events it has checked so
    /// far (the console shows it while verification runs; see [`Self::chain_length`]).
    pub async fn verify_counting_as(
        &self,
        caller: &Caller,
        checked: &AtomicU64,
    ) -> Result<VerifyResponse, Status> {
        let trusted = [self.ledger.key().public_key().to_bytes()];
        let report = super::verify::verify_counting(
            self.ledger.store().as_ref(),
            &trusted,
            self.ledger.evidence(),
            checked,
        )
        .await
        .map_err(|error| store_status("verifying", error))?;
        let findings = report.findings.len() as u64 + report.findings_omitted;
        self.log_access(
            caller,
            "Verify",
            serde_json::json!({ "events_checked": report.events_checked, "findings": findings }),
            findings,
        )
        .await?;
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.ledger
            .store()
            .record_verification(&VerificationRow {
                finished_at_ms: now_ms(),
                actor: caller.name.clone(),
                events_checked: count(report.events_checked),
                checkpoints_checked: count(report.checkpoints_checked),
                calls_checked: count(report.calls_checked),
                findings: count(findings),
                unsigned_tail: count(report.unsigned_tail),
            })
            .await
            .map_err(|error| store_status("keeping the verification's result", error))?;
        Ok(report)
    }

    /// How many events the chain holds (its head's position): what a verification
    /// will check.
    pub async fn chain_length(&self) -> u64 {
        u64::try_from(self.ledger.head().await.0).unwrap_or_default()
    }

    /// Checks an export file of any kind — calls, reports, or an archive with
    /// audio — as `courtline records verify-export` does, against this service's
    /// signing key, for `caller`; recorded as `VerifyExport`.
    pub async fn verify_export_as(
        &self,
        caller: &Caller,
        file: bytes::Bytes,
    ) -> Result<ExportCheck, Status> {
        let trusted = self.ledger.key().public_key().to_bytes();
        let kind = ExportKind::of(&file[..file.len().min(SNIFF_BYTES)]);
        let check = tokio::task::spawn_blocking(move || kind.check(file.as_ref(), Some(trusted)))
            .await
            .map_err(|error| Status::internal(format!("checking the export: {error}")))?
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        let parameters = serde_json::json!({
            "kind": kind.rows_name(),
            "recordings": check.recordings,
            "rows": check.rows,
            "problems": check.problems.len(),
            "exported_by": check.manifest.as_ref().map(|manifest| manifest.exported_by.clone()),
            "exported_at_ms": check.manifest.as_ref().map(|manifest| manifest.exported_at_ms),
        });
        self.log_access(caller, "VerifyExport", parameters, check.rows)
            .await?;
        Ok(check)
    }

    /// `AddToken` for `caller`: the response carries the secret, which exists nowhere
    /// else (the store keeps its hash).
    pub async fn add_token_as(
        &self,
        caller: &Caller,
        name: &str,
        role: Role,
    ) -> Result<AddTokenResponse, Status> {
        may_issue_token(caller, role)?;
        let token = self
            .ledger
            .add_token(name, role, &caller.name)
            .await
            .map_err(|error| status("adding a token", error))?;
        self.auth.invalidate().await;
        self.log_access(caller, "AddToken", add_token_parameters(name, role), 1)
            .await?;
        if caller.under_loopback_rule {
            warn!(
                token = name,
                by = caller.name,
                "the first token was issued: from now on every client needs a token, loopback ones included. \
                 Keep this admin token safe; if every admin token is lost, stop the records service and run \
                 `courtline records token add NAME --role admin --database URL` as root on this machine"
            );
        }
        Ok(AddTokenResponse {
            token,
            ended_loopback_rule: caller.under_loopback_rule,
        })
    }

    /// `ListTokens` for `caller`: every token ever issued, without secrets or hashes.
    pub async fn list_tokens_as(&self, caller: &Caller) -> Result<ListTokensResponse, Status> {
        let tokens: Vec<TokenInfo> = self
            .ledger
            .store()
            .tokens()
            .await
            .map_err(|error| store_status("listing tokens", error))?
            .into_iter()
            .map(|row| TokenInfo {
                name: row.name,
                role: row.role,
                created_at_ms: row.created_at_ms,
                created_by: row.created_by,
                revoked_at_ms: row.revoked_at_ms,
            })
            .collect();
        self.log_access(
            caller,
            "ListTokens",
            serde_json::json!({}),
            tokens.len() as u64,
        )
        .await?;
        Ok(ListTokensResponse { tokens })
    }

    /// `RevokeToken` for `caller`.
    pub async fn revoke_token_as(&self, caller: &Caller, name: &str) -> Result<(), Status> {
        self.ledger
            .revoke_token(name, &caller.name)
            .await
            .map_err(|error| status("revoking a token", error))?;
        self.auth.invalidate().await;
        self.log_access(
            caller,
            "RevokeToken",
            serde_json::json!({ "name": name }),
            1,
        )
        .await
    }

    /// `Purge` for `caller` (a dry run only counts); the reason is the caller's.
    pub async fn purge_as(&self, caller: &Caller, dry_run: bool) -> Result<PurgeResponse, Status> {
        let response = self
            .ledger
            .purge(self.retention_days, dry_run, &caller.name)
            .await
            .map_err(|error| status("purging", error))?;
        self.log_access(
            caller,
            "Purge",
            serde_json::json!({ "dry_run": dry_run, "retention_days": self.retention_days, "cutoff_ms": response.cutoff_ms }),
            response.calls_purged,
        )
        .await?;
        Ok(response)
    }

    /// Days calls are kept before a purge may remove them.
    pub fn retention_days(&self) -> u32 {
        self.retention_days
    }

    /// The newest `limit` calls on legal hold (flagged or reported) for `caller`;
    /// recorded as `ListLegalHolds`.
    pub async fn legal_holds_as(
        &self,
        caller: &Caller,
        limit: u32,
    ) -> Result<Vec<HeldCall>, Status> {
        let held = self
            .ledger
            .store()
            .held_calls(limit.min(MAX_PAGE_SIZE))
            .await
            .map_err(|error| store_status("listing calls on legal hold", error))?;
        self.log_access(
            caller,
            "ListLegalHolds",
            serde_json::json!({ "limit": limit }),
            held.len() as u64,
        )
        .await?;
        Ok(held)
    }

    /// The dashboard for `caller`: the figures of the `days` UTC days ending with
    /// `last_day` (from the per-day counters, never a scan of the calls) and the
    /// records' health. Logged as a `Dashboard` access: the figures are call data.
    pub async fn dashboard_as(
        &self,
        caller: &Caller,
        last_day: i64,
        days: u32,
    ) -> Result<Dashboard, Status> {
        if !(1..=MAX_DASHBOARD_DAYS).contains(&days) {
            return Err(Status::invalid_argument(format!(
                "a dashboard covers 1 to {MAX_DASHBOARD_DAYS} days, not {days}"
            )));
        }
        let store = self.ledger.store();
        let first_day = last_day - i64::from(days) + 1;
        let rows = store
            .daily_figures(first_day, last_day)
            .await
            .map_err(|error| store_status("reading the dashboard's figures", error))?;
        let health = store
            .records_health()
            .await
            .map_err(|error| store_status("reading the records' health", error))?;
        let figures = Figures::of_rows(&rows, last_day, days);
        self.log_access(
            caller,
            "Dashboard",
            serde_json::json!({ "first_day": first_day, "last_day": last_day }),
            rows.len() as u64,
        )
        .await?;
        Ok(Dashboard {
            figures,
            health,
            now_ms: now_ms(),
        })
    }

    /// `ListConfigChanges` for `caller`: the switchboards' applied configurations, newest first.
    pub async fn list_config_changes_as(
        &self,
        caller: &Caller,
        request: ListConfigChangesRequest,
    ) -> Result<ListConfigChangesResponse, Status> {
        let limit = match request.page_size {
            0 => 100,
            n => n.min(MAX_PAGE_SIZE),
        };
        let before = i64::try_from(request.before_seq).unwrap_or(i64::MAX);
        let events = self
            .ledger
            .store()
            .config_events(before, limit)
            .await
            .map_err(|error| store_status("reading applied configurations", error))?;
        let full = events.len() == limit as usize;
        let next_before_seq = match events.last() {
            Some(last) if full => u64::try_from(last.seq).unwrap_or_default(),
            _ => 0,
        };
        // A purged body has no content left to show; its place in the chain stays.
        let changes: Vec<ConfigChange> = events
            .into_iter()
            .filter_map(|event| {
                let body: EventBody = prost::Message::decode(event.body.as_deref()?).ok()?;
                let Some(event_body::Kind::NodeEvent(node)) = body.kind else {
                    return None;
                };
                let Some(node_event::Kind::ConfigApplied(applied)) = node.kind else {
                    return None;
                };
                Some(ConfigChange {
                    seq: u64::try_from(event.seq).unwrap_or_default(),
                    at_ms: node.at_ms,
                    node_id: node.node_id,
                    applied: Some(applied),
                })
            })
            .collect();
        self.log_access(
            caller,
            "ListConfigChanges",
            serde_json::json!({ "before_seq": request.before_seq }),
            changes.len() as u64,
        )
        .await?;
        Ok(ListConfigChangesResponse {
            changes,
            next_before_seq,
        })
    }

    /// `ListAccess` for `caller`.
    pub async fn list_access_as(
        &self,
        caller: &Caller,
        request: ListAccessRequest,
    ) -> Result<ListAccessResponse, Status> {
        let limit = match request.page_size {
            0 => 100,
            n => n.min(MAX_PAGE_SIZE),
        };
        let mut before = i64::try_from(request.before_seq).unwrap_or(i64::MAX);
        let mut entries = Vec::new();
        let mut exhausted = false;
        let mut scanned = 0;
        // The filters other than time apply to the decoded body: keep reading until the
        // page is full, the log ends or the scan bound is reached.
        while entries.len() < limit as usize && !exhausted && scanned < MAX_ACCESS_SCAN {
            let events = self
                .ledger
                .store()
                .access_events(before, request.since_ms, request.until_ms, limit)
                .await
                .map_err(|error| store_status("reading the access log", error))?;
            exhausted = events.len() < limit as usize;
            for event in events {
                before = event.seq;
                scanned += 1;
                let Some(event_body::Kind::Access(mut entry)) = event
                    .body
                    .as_deref()
                    .and_then(|body| prost::Message::decode(body).ok())
                    .and_then(|body: EventBody| body.kind)
                else {
                    continue;
                };
                if !access_matches(&request, &entry) {
                    continue;
                }
                entry.seq = event.seq as u64;
                entries.push(entry);
                if entries.len() == limit as usize {
                    break;
                }
            }
        }
        let next_before_seq = if exhausted && entries.len() < limit as usize {
            0
        } else {
            u64::try_from(before).unwrap_or_default()
        };
        self.log_access(
            caller,
            "ListAccess",
            serde_json::json!({
                "since_ms": request.since_ms,
                "until_ms": request.until_ms,
                "actor": request.actor,
                "operation": request.operation,
                "call_id": request.call_id,
                "reason_contains": request.reason_contains,
                "before_seq": request.before_seq,
            }),
            entries.len() as u64,
        )
        .await?;
        Ok(ListAccessResponse {
            entries,
            next_before_seq,
        })
    }

    /// `ExportCalls` for `caller`: the header, the records and the signed manifest,
    /// streamed as they are read.
    pub fn export_calls_as(
        &self,
        caller: Caller,
        request: ExportCallsRequest,
    ) -> Result<ExportStream, Status> {
        let filter = request.filter.clone().unwrap_or_default();
        validate_filter(&filter)?;
        let format = match request.format() {
            ExportFormat::Unspecified => ExportFormat::Csv,
            format => format,
        };
        let (sender, receiver) = mpsc::channel(EXPORT_BUFFER);
        let server = self.clone();
        let sort = request.sort();
        let with_audio = request.with_audio;
        tokio::spawn(async move {
            server
                .run_export(caller, filter, sort, format, with_audio, sender)
                .await;
        });
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }
}

impl RecordsServer {
    /// `records` with the flags of each flagged one filled in from its chain events
    /// (one query per flagged call: flags are rare).
    async fn with_flags(
        &self,
        mut records: Vec<CallRecord>,
    ) -> Result<Vec<CallRecord>, StoreError> {
        for record in records.iter_mut().filter(|record| record.flagged) {
            let events = self.ledger.store().call_events(&record.call_id).await?;
            record.flags = events
                .iter()
                .filter_map(|event| timeline_entry(event).1)
                .collect();
        }
        Ok(records)
    }

    /// Streams every matching call, then the signed manifest; records the export.
    async fn run_export(
        &self,
        caller: Caller,
        filter: CallFilter,
        sort: SortOrder,
        format: ExportFormat,
        with_audio: bool,
        sender: mpsc::Sender<Result<ExportCallsResponse, Status>>,
    ) {
        let plan = ExportPlan {
            operation: "ExportCalls",
            manifest_version: MANIFEST_VERSION,
            file_format: format_name(format),
            filter: filter_json(&filter),
            sort,
            scope: serde_json::Map::new(),
            with_audio,
        };
        let query = CallQuery {
            filter,
            sort,
            page_size: EXPORT_PAGE,
            page_token: None,
        };
        let sender = &sender;
        self.stream_signed_export(&caller, plan, sender, |mut exported| async move {
            let outcome = self
                .send_call_rows(query, with_audio, sender, &mut exported)
                .await;
            (exported, outcome)
        })
        .await;
    }

    /// Sends every call `query` matches, a page at a time, chaining each row and
    /// listing its recording when `with_audio`.
    async fn send_call_rows(
        &self,
        mut query: CallQuery,
        with_audio: bool,
        sender: &mpsc::Sender<Result<ExportCallsResponse, Status>>,
        exported: &mut ExportedRows,
    ) -> Result<(), Status> {
        loop {
            let (records, next) = self
                .ledger
                .store()
                .list_calls(&query)
                .await
                .map_err(|error| store_status("exporting calls", error))?;
            let records = self
                .with_flags(records)
                .await
                .map_err(|error| store_status("reading the flags of exported calls", error))?;
            for record in records {
                exported
                    .rows
                    .push(&crate::contract::row::ExportRow::from(&record));
                if with_audio {
                    let file = self
                        .recording_file(&record.call_id)
                        .await
                        .map_err(|error| {
                            store_status("reading an exported call's recording", error)
                        })?;
                    exported.recordings.extend(file);
                }
                let item = ExportCallsResponse {
                    item: Some(export_calls_response::Item::Record(record)),
                };
                send_export_item(sender, item).await?;
            }
            match next {
                Some(token) => query.page_token = Some(token),
                None => return Ok(()),
            }
        }
    }

    /// Streams one signed export: the header, the rows `send_rows` sends, then the
    /// signed manifest. The export is an access event whether or not it completed;
    /// the manifest goes only after a complete one.
    async fn stream_signed_export<T, SendRows, Sent>(
        &self,
        caller: &Caller,
        plan: ExportPlan,
        sender: &mpsc::Sender<Result<T, Status>>,
        send_rows: SendRows,
    ) where
        T: ExportItem,
        SendRows: FnOnce(ExportedRows) -> Sent,
        Sent: Future<Output = (ExportedRows, Result<(), Status>)>,
    {
        let (head_seq, head_hash) = self.ledger.head().await;
        let started_ms = now_ms();
        let exported = ExportedRows {
            rows: RowChain::new(self.ledger.algorithm()),
            recordings: Vec::new(),
        };
        let header = ExportHeader {
            hash_algorithm: self.ledger.algorithm().name().to_owned(),
        };
        let (exported, outcome) = match send_export_item(sender, T::header(header)).await {
            Ok(()) => send_rows(exported).await,
            Err(gone) => (exported, Err(gone)),
        };
        let mut parameters = serde_json::json!({
            "filter": plan.filter.clone(),
            "sort": sort_name(plan.sort),
            "format": plan.file_format,
        });
        for (key, value) in plan.scope {
            parameters[key] = value;
        }
        parameters["complete"] = outcome.is_ok().into();
        if plan.with_audio {
            parameters["recordings"] = exported.recordings.len().into();
        }
        if let Err(error) = self
            .log_access(caller, plan.operation, parameters, exported.rows.count())
            .await
        {
            let _ = sender.send(Err(error)).await;
            return;
        }
        if let Err(error) = outcome {
            let _ = sender.send(Err(error)).await;
            return;
        }
        let content = ManifestContent {
            format: plan.manifest_version.to_owned(),
            file_format: plan.file_format.to_owned(),
            exported_at_ms: started_ms,
            exported_by: caller.name.clone(),
            reason: caller.reason.clone(),
            filter: plan.filter,
            sort: sort_name(plan.sort).to_owned(),
            count: exported.rows.count(),
            rows_digest: exported.rows.digest_hex(),
            hash_algorithm: self.ledger.algorithm().name().to_owned(),
            chain_head_seq: head_seq as u64,
            chain_head_hash: hex::encode(head_hash),
            with_audio: plan.with_audio,
            recordings: exported.recordings,
        };
        let manifest = self.signed_manifest(&content);
        let _ = sender.send(Ok(T::manifest(manifest))).await;
    }
}

/// The messages a signed export stream opens and closes with, whatever its rows are.
trait ExportItem {
    /// The first message: how the rows are hashed.
    fn header(header: ExportHeader) -> Self;
    /// The last message: the signed manifest.
    fn manifest(manifest: ExportManifest) -> Self;
}

impl ExportItem for ExportCallsResponse {
    fn header(header: ExportHeader) -> Self {
        ExportCallsResponse {
            item: Some(export_calls_response::Item::Header(header)),
        }
    }
    fn manifest(manifest: ExportManifest) -> Self {
        ExportCallsResponse {
            item: Some(export_calls_response::Item::Manifest(manifest)),
        }
    }
}

impl ExportItem for ExportReportsResponse {
    fn header(header: ExportHeader) -> Self {
        ExportReportsResponse {
            item: Some(export_reports_response::Item::Header(header)),
        }
    }
    fn manifest(manifest: ExportManifest) -> Self {
        ExportReportsResponse {
            item: Some(export_reports_response::Item::Manifest(manifest)),
        }
    }
}

/// What one signed export is, as its access event and its manifest record it.
struct ExportPlan {
    /// The operation the access event names.
    operation: &'static str,
    /// The manifest's format version (calls and reports differ).
    manifest_version: &'static str,
    /// The file format the client writes.
    file_format: &'static str,
    /// The filter, as the access event and the manifest record it.
    filter: serde_json::Value,
    /// The order the rows come in.
    sort: SortOrder,
    /// Access-event parameters this export has beyond filter, sort and format.
    scope: serde_json::Map<String, serde_json::Value>,
    /// Whether the export lists recordings with its rows.
    with_audio: bool,
}

/// What an export has sent so far, for its access event and its manifest.
struct ExportedRows {
    /// The hash chain over the rows sent.
    rows: RowChain,
    /// The recordings listed with the rows.
    recordings: Vec<RecordingFile>,
}

/// Sends one message of an export stream; a client that went away ends the export.
async fn send_export_item<T>(
    sender: &mpsc::Sender<Result<T, Status>>,
    item: T,
) -> Result<(), Status> {
    sender
        .send(Ok(item))
        .await
        .map_err(|_| Status::cancelled("the client went away"))
}

impl RecordsServer {
    /// `content` as canonical JSON, signed with the records key.
    fn signed_manifest(&self, content: &ManifestContent) -> ExportManifest {
        let json = serde_json::to_string(content).unwrap_or_default();
        let key = self.ledger.key();
        ExportManifest {
            signature: hex::encode(key.sign_manifest(&json).to_bytes()),
            public_key: key.public_key_hex(),
            json,
        }
    }

    /// Call `call_id`'s kept recording as an archive lists it: its length and hash as
    /// chained; `None` when the call has no stored recording.
    async fn recording_file(&self, call_id: &str) -> Result<Option<RecordingFile>, StoreError> {
        let store = self.ledger.store();
        let stored = store
            .recording(call_id)
            .await?
            .is_some_and(|row| row.state == RecordingState::Stored);
        if !stored {
            return Ok(None);
        }
        let events = store.call_events(call_id).await?;
        Ok(
            chained_recording(&events).map(|(seq, recording, _)| RecordingFile {
                name: recording_name(call_id),
                call_id: call_id.to_owned(),
                bytes: recording.bytes,
                sha256: recording.sha256,
                seq: u64::try_from(seq).unwrap_or_default(),
            }),
        )
    }

    /// `UploadRecording` for `caller` (a switchboard): checks the declaration against
    /// the call's chained recording event, receives the bytes into the evidence store
    /// (nothing partial stays), and chains RecordingStored.
    pub async fn upload_recording_as(
        &self,
        caller: &Caller,
        mut stream: tonic::Streaming<UploadRecordingRequest>,
    ) -> Result<UploadRecordingResponse, Status> {
        let declared =
            match stream.message().await? {
                Some(UploadRecordingRequest {
                    item: Some(upload_recording_request::Item::Recording(declared)),
                }) => declared,
                _ => return Err(Status::invalid_argument(
                    "an upload starts with the recording's declaration (call id, SHA-256, length)",
                )),
            };
        let call_id = declared.call_id.clone();
        validate_call_id(&call_id).map_err(|error| status("receiving a recording", error))?;
        if declared.bytes > MAX_UPLOAD_BYTES {
            return Err(Status::invalid_argument(format!(
                "call {call_id}'s recording is declared {} bytes long; at most {MAX_UPLOAD_BYTES} are taken",
                declared.bytes
            )));
        }
        let store = self.ledger.store();
        let context = format!("receiving call {call_id}'s recording");
        let row = store
            .recording(&call_id)
            .await
            .map_err(|error| store_status(&context, error))?;
        let events = store
            .call_events(&call_id)
            .await
            .map_err(|error| store_status(&context, error))?;
        let (Some(row), Some((recording_seq, chained, _))) = (row, chained_recording(&events))
        else {
            return Err(Status::failed_precondition(format!(
                "call {call_id} has no chained recording event yet: the switchboard delivers it \
                 with the call's events; upload again once they are delivered"
            )));
        };
        let layout = |sample_rate: u32, channels: u32, format: &str| {
            format!("{channels} channels at {sample_rate} Hz, {format:?}")
        };
        let (declared_layout, chained_layout) = (
            layout(declared.sample_rate, declared.channels, &declared.format),
            layout(chained.sample_rate, chained.channels, &chained.format),
        );
        if declared.bytes != chained.bytes
            || !declared.sha256.eq_ignore_ascii_case(&chained.sha256)
            || declared_layout != chained_layout
        {
            return Err(Status::invalid_argument(format!(
                "the upload declares {} bytes with SHA-256 {} ({declared_layout}), but call \
                 {call_id}'s recording event (#{recording_seq}) says {} bytes with SHA-256 {} \
                 ({chained_layout})",
                declared.bytes, declared.sha256, chained.bytes, chained.sha256
            )));
        }
        let answer = |state: RecordingState, seq: i64, detail: String| UploadRecordingResponse {
            state: state.name().to_owned(),
            sha256: if state == RecordingState::Stored {
                chained.sha256.clone()
            } else {
                String::new()
            },
            seq: u64::try_from(seq).unwrap_or_default(),
            detail,
        };
        let Some(evidence) = self.ledger.evidence().cloned() else {
            return Err(Status::unavailable(
                "this records service keeps no recordings",
            ));
        };
        if evidence.contains(Path::new(&chained.path)) {
            // Stored, the switchboard would delete its copy: the very file.
            return Err(Status::failed_precondition(format!(
                "the switchboard wrote {} into this records service's evidence store: give \
                 [recording] dir and [records.service] recordings_dir different directories",
                chained.path
            )));
        }
        match row.state {
            RecordingState::NotTransferred => {}
            RecordingState::Stored => {
                // An earlier upload whose answer was lost: answered alike, unless the
                // stored file went missing or changed since — then this copy, checked
                // against the chain like any upload, takes its place.
                let (store_copy, id) = (evidence.clone(), call_id.clone());
                let (sha256, bytes) = (chained.sha256.clone(), chained.bytes);
                let intact =
                    tokio::task::spawn_blocking(move || store_copy.check(&id, &sha256, bytes))
                        .await;
                match intact {
                    Ok(Ok(())) => return Ok(answer(RecordingState::Stored, 0, row.detail)),
                    Ok(Err(problem)) => {
                        warn!(call = %call_id, %problem, "a stored recording is damaged: taking the switchboard's copy again")
                    }
                    Err(join) => return Err(Status::internal(join.to_string())),
                }
            }
            // Deleted or failed: nothing to receive.
            state => return Ok(answer(state, 0, row.detail)),
        }
        let (id, sha256, bytes) = (call_id.clone(), chained.sha256.clone(), chained.bytes);
        let mut incoming: Incoming =
            blocking(
                &call_id,
                move || Ok(evidence.incoming(&id, &sha256, bytes)?),
            )
            .await?;
        while let Some(message) = stream.message().await? {
            let Some(upload_recording_request::Item::Chunk(chunk)) = message.item else {
                return Err(Status::invalid_argument(
                    "the declaration comes once, first; then only chunks",
                ));
            };
            incoming = blocking(&call_id, move || {
                incoming.write(&chunk)?;
                Ok(incoming)
            })
            .await?;
        }
        blocking(&call_id, move || incoming.finish()).await?;
        let stored = RecordingStored {
            sha256: chained.sha256.clone(),
            bytes: chained.bytes,
            recording_seq: u64::try_from(recording_seq).unwrap_or_default(),
            uploaded_by: caller.name.clone(),
        };
        let seq = self
            .ledger
            .recording_stored(&call_id, stored)
            .await
            .map_err(|error| status(&context, error))?;
        info!(call = %call_id, bytes = chained.bytes, seq, by = %caller.name, "stored an uploaded call recording");
        Ok(answer(RecordingState::Stored, seq, String::new()))
    }

    /// `ExportReports` for `caller`: the header, the reports and the signed manifest,
    /// streamed as they are read (an operator's: its own reports only).
    pub fn export_reports_as(
        &self,
        caller: Caller,
        request: ExportReportsRequest,
    ) -> Result<ReportExportStream, Status> {
        let file_format = match request.file_format.as_str() {
            "" | "csv" => "csv",
            "json" => "json",
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown report export format {other:?}: csv or json"
                )))
            }
        };
        let (sender, receiver) = mpsc::channel(EXPORT_BUFFER);
        let server = self.clone();
        tokio::spawn(async move {
            server
                .run_report_export(caller, request, file_format, sender)
                .await;
        });
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }

    /// Streams every matching report, then the signed manifest; records the export.
    async fn run_report_export(
        &self,
        caller: Caller,
        request: ExportReportsRequest,
        file_format: &'static str,
        sender: mpsc::Sender<Result<ExportReportsResponse, Status>>,
    ) {
        let sort = request.sort();
        let query = ReportQuery {
            filter: request.filter.unwrap_or_default(),
            owner: (caller.role == Role::Operator).then(|| caller.name.clone()),
            sort,
            page_size: EXPORT_PAGE,
            page_token: None,
        };
        let mut scope = serde_json::Map::new();
        scope.insert("own_only".to_owned(), query.owner.is_some().into());
        let plan = ExportPlan {
            operation: "ExportReports",
            manifest_version: REPORT_MANIFEST_VERSION,
            file_format,
            filter: report_filter_json(&query.filter),
            sort,
            scope,
            with_audio: false,
        };
        let sender = &sender;
        self.stream_signed_export(&caller, plan, sender, |mut exported| async move {
            let outcome = self.send_report_rows(query, sender, &mut exported).await;
            (exported, outcome)
        })
        .await;
    }

    /// Sends every report `query` matches, a page at a time, chaining each row.
    async fn send_report_rows(
        &self,
        mut query: ReportQuery,
        sender: &mpsc::Sender<Result<ExportReportsResponse, Status>>,
        exported: &mut ExportedRows,
    ) -> Result<(), Status> {
        loop {
            let (page, next) = self
                .ledger
                .store()
                .list_reports(&query)
                .await
                .map_err(|error| store_status("exporting reports", error))?;
            for row in &page {
                let report = row
                    .decode()
                    .map_err(|error| store_status("exporting reports", error))?;
                exported.rows.push_canonical(&report_row_canonical(&report));
                let item = ExportReportsResponse {
                    item: Some(export_reports_response::Item::Report(report)),
                };
                send_export_item(sender, item).await?;
            }
            match next {
                Some(token) => query.page_token = Some(token),
                None => return Ok(()),
            }
        }
    }
}

/// The timeline entry for one of a call's events, and the flag it carries, if any.
fn timeline_entry(event: &StoredEvent) -> (TimelineEvent, Option<Flag>) {
    let body = event
        .body
        .as_deref()
        .and_then(|body| prost::Message::decode(body).ok())
        .and_then(|body: EventBody| body.kind);
    let (kind, detail, flag) = match body {
        Some(event_body::Kind::NodeEvent(node)) => match node.kind {
            Some(node_event::Kind::Milestone(milestone)) => {
                let name = milestone.milestone().as_str_name();
                // A failure says how it failed (the operator it names was dialled
                // before); a failed transfer names its target and the SIP status.
                let detail = if milestone.operator_failure != 0 {
                    crate::contract::names::end_reason_name(milestone.operator_failure()).to_owned()
                } else if milestone.sip_status != 0 {
                    format!("{} {}", milestone.operator_uri, milestone.sip_status)
                } else {
                    milestone.operator_uri.clone()
                };
                (
                    name.trim_start_matches("MILESTONE_").to_ascii_lowercase(),
                    detail,
                    None,
                )
            }
            Some(node_event::Kind::Ended(record)) => (
                "ended".to_owned(),
                crate::contract::names::end_reason_name(record.end_reason()).to_owned(),
                None,
            ),
            _ => (event.header.kind.clone(), String::new(), None),
        },
        Some(event_body::Kind::Interrupted(interrupted)) => (
            "interrupted".to_owned(),
            format!(
                "the switchboard restarted (its event {}) while the call was up",
                interrupted.node_restart_seq
            ),
            None,
        ),
        Some(event_body::Kind::Flagged(flagged)) => {
            let flag = flagged.flag.unwrap_or_default();
            let detail = format!(
                "{} by {}: {}",
                crate::contract::names::flag_category_name(flag.category()),
                flag.flagged_by,
                flag.note
            );
            ("flagged".to_owned(), detail, Some(flag))
        }
        Some(event_body::Kind::RecordingStored(stored)) => (
            "recording_stored".to_owned(),
            format!(
                "uploaded by {}: {} bytes, SHA-256 {} (recording event #{})",
                stored.uploaded_by, stored.bytes, stored.sha256, stored.recording_seq
            ),
            None,
        ),
        Some(event_body::Kind::Report(changed)) => {
            let report = changed.report.unwrap_or_default();
            let detail = format!(
                "report {} {} by {} (version {}, {})",
                report.report_id,
                changed.action,
                report.changed_by,
                report.version,
                status_name(report.status())
            );
            (format!("report_{}", changed.action), detail, None)
        }
        _ if event.body.is_none() => (event.header.kind.clone(), "purged".to_owned(), None),
        _ => (event.header.kind.clone(), String::new(), None),
    };
    (
        TimelineEvent {
            seq: event.seq as u64,
            at_ms: event.header.at_ms,
            kind,
            detail,
            node_id: event.header.node_id.clone().unwrap_or_default(),
            node_seq: event.header.node_seq.unwrap_or_default() as u64,
            hash: hex::encode(&event.hash),
        },
        flag,
    )
}

/// Purges calls past retention a minute after start and then once a day, as the
/// actor "retention"; a day with nothing due adds nothing to the chain.
async fn run_daily_purge(ledger: Ledger, retention_days: u32, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let day = Duration::from_secs(24 * 3600);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PURGE_DELAY, day);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stop => return,
        }
        let result = match ledger.purge(retention_days, true, "retention").await {
            Ok(due) if due.calls_purged == 0 => continue,
            Ok(_) => ledger.purge(retention_days, false, "retention").await,
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            warn!(%error, "daily retention purge failed; will retry tomorrow");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_described_by_what_is_set() {
        assert_eq!(filter_json(&CallFilter::default()), serde_json::json!({}));
        let filter = CallFilter {
            line_number: "12368".into(),
            caller_prefix: "138".into(),
            flagged: crate::contract::pb::Choice::Yes as i32,
            end_reason: crate::contract::pb::EndReason::NoAnswer as i32,
            ..CallFilter::default()
        };
        assert_eq!(
            filter_json(&filter),
            serde_json::json!({
                "line_number": "12368",
                "caller_prefix": "138",
                "end_reason": "no_answer",
                "flagged": "yes",
            })
        );
        assert!(validate_filter(&CallFilter {
            end_reason: 99,
            ..CallFilter::default()
        })
        .is_err());
    }

    #[test]
    fn access_entries_match_every_filter_given() {
        let entry = AccessEntry {
            actor: "zhang.wei".into(),
            operation: "GetCall".into(),
            parameters: r#"{"call_id":"0193-abc"}"#.into(),
            reason: "投诉 2026-031 复核".into(),
            ..AccessEntry::default()
        };
        let matches = |request: ListAccessRequest| access_matches(&request, &entry);
        assert!(matches(ListAccessRequest::default()));
        assert!(matches(ListAccessRequest {
            actor: "zhang.wei".into(),
            operation: "getcall".into(),
            call_id: " 0193-abc ".into(),
            reason_contains: "2026-031".into(),
            ..ListAccessRequest::default()
        }));
        for request in [
            ListAccessRequest {
                actor: "zhang".into(),
                ..ListAccessRequest::default()
            },
            ListAccessRequest {
                operation: "ListCalls".into(),
                ..ListAccessRequest::default()
            },
            // A prefix of the id is not the call.
            ListAccessRequest {
                call_id: "0193".into(),
                ..ListAccessRequest::default()
            },
            ListAccessRequest {
                reason_contains: "审计".into(),
                ..ListAccessRequest::default()
            },
        ] {
            assert!(!matches(request.clone()), "{request:?}");
        }
        assert!(matches(ListAccessRequest {
            reason_contains: "复核".into(),
            ..ListAccessRequest::default()
        }));
    }

    #[test]
    fn ledger_errors_map_to_retry_aware_codes() {
        assert_eq!(
            status("x", LedgerError::Invalid("bad".into())).code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            status("x", LedgerError::NoSuchCall("c".into())).code(),
            tonic::Code::NotFound
        );
        assert_eq!(
            status(
                "x",
                LedgerError::Conflict {
                    node_id: "n".into(),
                    node_seq: 1
                }
            )
            .code(),
            tonic::Code::AlreadyExists
        );
        assert_eq!(
            store_status("x", StoreError::InvalidPageToken("t".into())).code(),
            tonic::Code::InvalidArgument
        );
    }
}
