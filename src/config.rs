//! Configuration of both processes: one TOML file read through the `config`
//! crate, overridable by `COURTLINE_SECTION__KEY` environment variables. It
//! defines the settings types the switchboard uses ([`sip`], [`media`]) and
//! uses the records service's own; it imports nothing of the switchboard.
//!
//! Loading happens in two steps so that every problem reaches the admin with the
//! file, the key, what is wrong and how to fix it: `config` parses and types the
//! file, then [`Config::validate`] checks what types cannot (ranges, references
//! between sections, duplicate numbers).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use self::media::RingbackCadence;
use crate::records::auth::parse_role;
use crate::records::chain::HashAlgorithm;
use crate::records::ledger::{CheckpointPolicy, MIN_RETENTION_DAYS};
use crate::records::service::{ClientCertificates, ServiceSettings};
use crate::records::web::mask::{masked_roles, DEFAULT_MASKED_ROLES};
use crate::records::web::tls::WebTls;
use crate::records::web::WebSettings;

pub mod hours;
pub mod include;
pub mod media;
pub mod patterns;
pub mod probe;
pub mod reports;
pub mod sip;
pub mod uri;

/// The example configuration shipped in the repository, compiled in so that
/// `courtline serve` still starts when run outside a checkout.
pub const EMBEDDED_EXAMPLE: &str = include_str!("../config/courtline.toml");

/// Where `courtline` looks for its configuration when `--config` is not given.
pub const DEFAULT_PATH: &str = "config/courtline.toml";

/// Where the Debian package installs the configuration: read when `--config`
/// is not given and the working directory has no [`DEFAULT_PATH`].
pub const INSTALLED_PATH: &str = "/etc/courtline/courtline.toml";

/// A problem with the configuration, phrased for the admin who has to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or is not valid TOML of the expected shape.
    #[error("{file}: {message}")]
    Load {
        /// Which file (or "the environment") was being read.
        file: String,
        /// What `config` reported, including the offending key.
        message: String,
    },
    /// A value parsed but makes no sense for a switchboard.
    #[error("{file}: `{key}`: {problem}. {fix}")]
    Invalid {
        /// Which file the value came from.
        file: String,
        /// Dotted path of the offending key, e.g. `lines[0].operator`.
        key: String,
        /// What is wrong with it.
        problem: String,
        /// What the admin should do about it.
        fix: String,
    },
}

/// The whole switchboard configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How the configuration is put together (`[config] include_dir`).
    #[serde(default)]
    pub config: include::IncludeConfig,
    /// SIP listener and call admission.
    #[serde(default)]
    pub sip: SipConfig,
    /// RTP ports, prompt lead-in and ringback.
    #[serde(default)]
    pub media: MediaConfig,
    /// Where call records go, and the embedded records service.
    #[serde(default)]
    pub records: RecordsConfig,
    /// Prompt files by id; lines refer to them by id so one recording serves many lines.
    #[serde(default)]
    pub prompts: BTreeMap<String, PromptConfig>,
    /// The court main lines this switchboard answers.
    #[serde(default)]
    pub lines: Vec<LineConfig>,
    /// Register courtline as an account on the court's PBX (off while `registrar` is empty).
    #[serde(default)]
    pub registration: RegistrationConfig,
    /// Credentials for operator targets whose PBX challenges our INVITEs (401/407).
    #[serde(default)]
    pub operator_accounts: Vec<OperatorAccount>,
    /// Where call audio is written while calls last, and what a failing disk means for new calls.
    #[serde(default)]
    pub recording: RecordingConfig,
    /// How the operator asks for a report from the phone (`[reports]`).
    #[serde(default)]
    pub reports: reports::ReportsConfig,
    /// Office hours by name (`[hours.<name>]`); lines refer to them by name.
    #[serde(default)]
    pub hours: BTreeMap<String, hours::HoursConfig>,
    /// `hours` with their calendars read, by name; filled by loading, not read from the file.
    #[serde(skip)]
    pub office_hours: BTreeMap<String, Arc<hours::OfficeHours>>,
    /// The admin HTTP endpoint: metrics, health and readiness (`[admin]`).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Synthetic probe calls: schedule, test target, signing key (`[probe]`).
    #[serde(default)]
    pub probe: probe::ProbeConfig,
    /// Where this configuration came from, for error messages; not read from the file.
    #[serde(skip)]
    pub source: String,
    /// Which file each line, prompt and hours section came from, for error messages.
    #[serde(skip)]
    pub origins: include::Origins,
    /// Every key as merged from the files and the environment, before defaults: what a
    /// reload compares and hashes (`switchboard::live`); not read from the file.
    #[serde(skip)]
    pub effective: serde_json::Value,
}

/// `[admin]`: where monitoring and load balancers reach the switchboard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address for `/metrics`, `/healthz` and `/readyz`; empty turns the endpoint off.
    pub listen: String,
}

impl AdminConfig {
    /// The address to serve on, `None` when turned off; `Err` names what does not parse.
    pub fn address(&self) -> Result<Option<SocketAddr>, std::net::AddrParseError> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen.parse().map(Some)
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9460".to_string(),
        }
    }
}

/// `[sip]`: the SIP side of the switchboard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Address and port to receive SIP on (UDP).
    pub listen: SocketAddr,
    /// Calls allowed at once; the next one gets 503 with Retry-After so the trunk tries elsewhere.
    pub max_calls: usize,
    /// Seconds a rejected caller's equipment is asked to wait (Retry-After on 503).
    pub retry_after_s: u32,
    /// Longest a new call's INVITE (over UDP) may wait inside courtline before
    /// admission; one that waited longer gets 503 with Retry-After: an
    /// overloaded node sheds the calls it cannot answer in time instead of
    /// answering all of them late. Below T1, so that what is admitted is
    /// answered before the caller retransmits (BENCHMARKS.md, "Shedding calls
    /// under overload"). 0 = never shed.
    pub max_setup_wait_ms: u64,
    /// Let the caller hear ringing this long before answering (0 = answer at once).
    pub answer_delay_ms: u64,
    /// Product name sent in User-Agent / Server headers.
    pub user_agent: String,
    /// RFC 3261 T1 (round-trip estimate) in ms: retransmissions start at T1 and
    /// transactions time out after 64·T1 (e.g. a 200 OK nobody ACKs).
    pub t1_ms: u64,
    /// Also accept SIP over TCP on the same address and port (as SIP servers conventionally do).
    pub tcp: bool,
    /// PEM certificate chain for SIP over TLS; TLS is off while empty.
    pub tls_certificate: String,
    /// PEM private key for `tls_certificate`.
    pub tls_private_key: String,
    /// TLS listen address; empty = the UDP address with the next port (5061 for 5060).
    pub tls_listen: String,
    /// Session-Expires (RFC 4028) courtline asks for when the caller supports
    /// timers but names none; 0 = only run timers the caller asks for.
    pub session_expires_s: u32,
    /// Smallest Session-Expires accepted (422 below it); never under RFC 4028's 90.
    pub min_se_s: u32,
    /// Seconds between OPTIONS probes to each operator target (0 = off); a
    /// target that stops answering is skipped by hunt lists until it answers.
    pub qualify_interval_s: u64,
    /// ACLs, rate limits and scanner bans for the SIP socket.
    pub shield: sip::ShieldConfig,
    /// Digest authentication of callers outside the exempt networks.
    pub inbound_auth: sip::InboundAuthConfig,
    /// Address (IP or IP:port) peers must use to reach us, when behind NAT:
    /// used in Contact headers, and in SDP unless `[media] advertise_address` is set.
    pub public_address: String,
    /// Seconds calls in progress may go on after SIGTERM before they are ended
    /// (recorded `shutdown`); new calls are refused with 503 meanwhile.
    pub drain_timeout_s: u64,
    /// SIP proxies in front of this node (e.g. Kamailio), addresses or CIDRs:
    /// for their requests the caller's address is the one they put in
    /// `X-Orig-IP`, and only theirs are believed.
    pub trusted_proxies: Vec<String>,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 5060)),
            max_calls: 500,
            retry_after_s: 30,
            max_setup_wait_ms: 300,
            answer_delay_ms: 0,
            user_agent: format!("courtline/{}", env!("CARGO_PKG_VERSION")),
            t1_ms: 500,
            tcp: true,
            session_expires_s: 1800,
            qualify_interval_s: 30,
            shield: sip::ShieldConfig::default(),
            inbound_auth: sip::InboundAuthConfig::default(),
            min_se_s: 90,
            tls_certificate: String::new(),
            tls_private_key: String::new(),
            tls_listen: String::new(),
            public_address: String::new(),
            drain_timeout_s: 300,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `[media]`: RTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// UDP port range for RTP, "low-high"; each call leg takes one even port.
    pub rtp_ports: String,
    /// Address put in SDP `c=` lines; empty = the local address that routes to the peer.
    pub advertise_address: String,
    /// Silence sent before the prompt's words so phones that open audio late miss nothing.
    pub leading_silence_ms: u32,
    /// The tone callers hear while the operator's phone rings.
    pub ringback: RingbackCadence,
    /// Seconds without RTP or RTCP from a bridged caller before the call is
    /// hung up as `media_timeout` (a caller whose line died sends no BYE); 0 = never.
    pub rtp_timeout_s: u32,
    /// How paced RTP reaches the kernel: io_uring (one submission per tick) or sendmsg.
    pub send: media::MediaSend,
    /// Media engine threads (shards) the calls are spread over.
    pub threads: media::MediaThreads,
    /// Whether the media engine's threads run real-time (`SCHED_RR`), ahead of
    /// every normal thread: warnings on time on a busy machine, call setup later.
    pub realtime: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            rtp_ports: "20000-29999".to_string(),
            advertise_address: String::new(),
            leading_silence_ms: 200,
            ringback: RingbackCadence::default(),
            rtp_timeout_s: 30,
            send: media::MediaSend::default(),
            threads: media::MediaThreads::default(),
            realtime: false,
        }
    }
}

impl MediaConfig {
    /// `rtp_timeout_s` as a duration; `None` when the check is off.
    pub fn rtp_timeout(&self) -> Option<Duration> {
        (self.rtp_timeout_s > 0).then(|| Duration::from_secs(u64::from(self.rtp_timeout_s)))
    }
}

/// `[records]`: the records path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordsConfig {
    /// gRPC endpoint of the records service: where a switchboard whose service runs
    /// elsewhere sends call events, and where the CLI connects. Absent or empty while
    /// the service is embedded: derived from `[records.service] listen`.
    pub endpoint: String,
    /// Several records services over one PostgreSQL database, for a switchboard
    /// whose service runs elsewhere: events go to the first that works, and to
    /// the next when it fails. Instead of `endpoint` (which then is the first,
    /// for the CLI).
    pub endpoints: Vec<String>,
    /// File holding the switchboard-role token the switchboard presents (not needed when embedded).
    pub token_file: String,
    /// CA certificate (PEM) that signed the records service's certificate, for an https endpoint.
    pub tls_ca_file: String,
    /// Client certificate (PEM) this machine's records clients present over https (mTLS),
    /// instead of a token: the switchboard when the service runs elsewhere, and the CLI.
    pub tls_cert_file: String,
    /// Private key (PEM) of `tls_cert_file`.
    pub tls_key_file: String,
    /// Durable spool directory; empty = `spool/` beside the embedded SQLite database, else `var/spool`.
    pub spool_dir: String,
    /// This switchboard's node id; empty = generated once and kept in the spool.
    pub node_id: String,
    /// What to do with new calls when the spool cannot be written.
    pub on_spool_failure: SpoolFailurePolicy,
    /// The records service that `courtline serve` embeds and `courtline records serve` runs.
    pub service: RecordsServiceConfig,
    /// The records service's web console.
    pub web: RecordsWebConfig,
    /// Pattern alert rules and their webhook.
    pub patterns: self::patterns::PatternsConfig,
}

/// `[records.web]`: the web console the records service serves beside gRPC.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordsWebConfig {
    /// HTTP listen address; empty disables the console.
    pub listen: String,
    /// Host names browsers may use to reach it (DNS rebinding guard); empty = the
    /// listen address, `localhost` and `127.0.0.1`.
    pub hosts: Vec<String>,
    /// Minutes without a request after which a session ends.
    pub session_minutes: u64,
    /// Roles that see callers' numbers and names masked (`139****5678`, `王**`).
    pub mask_callers_for: Vec<String>,
}

impl Default for RecordsWebConfig {
    fn default() -> Self {
        RecordsWebConfig {
            listen: "127.0.0.1:8080".to_string(),
            hosts: Vec::new(),
            session_minutes: 30,
            mask_callers_for: DEFAULT_MASKED_ROLES.map(String::from).to_vec(),
        }
    }
}

impl RecordsWebConfig {
    /// Where the console listens and its settings; `None` when disabled. `listen`
    /// was checked by `Config::validate`. `tls`: the records service's files, which
    /// the console serves HTTPS with ([`RecordsServiceConfig::web_tls`]).
    pub fn settings(&self, tls: Option<WebTls>) -> Option<(SocketAddr, WebSettings)> {
        let listen: SocketAddr = self.listen.trim().parse().ok()?;
        let hosts = if self.hosts.is_empty() {
            vec![
                listen.to_string(),
                listen.ip().to_string(),
                "localhost".into(),
                "127.0.0.1".into(),
            ]
        } else {
            self.hosts
                .iter()
                .map(|host| host.trim().to_owned())
                .collect()
        };
        Some((
            listen,
            WebSettings {
                hosts,
                session_idle: Duration::from_secs(self.session_minutes * 60),
                tls,
                // Checked by `Config::validate`.
                masked_roles: masked_roles(&self.mask_callers_for).unwrap_or_default(),
            },
        ))
    }
}

/// `[records] on_spool_failure`: refuse new calls (503) or carry them without a spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpoolFailurePolicy {
    /// Refuse new calls with 503 until the spool can be written again (the default: no call unrecorded).
    #[default]
    Reject,
    /// Take calls anyway; their events go to the records service from memory only.
    Continue,
}

impl Default for RecordsConfig {
    fn default() -> Self {
        RecordsConfig {
            endpoint: "http://127.0.0.1:50051".to_string(),
            endpoints: Vec::new(),
            token_file: String::new(),
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            spool_dir: String::new(),
            node_id: String::new(),
            on_spool_failure: SpoolFailurePolicy::Reject,
            service: RecordsServiceConfig::default(),
            web: RecordsWebConfig::default(),
            patterns: self::patterns::PatternsConfig::default(),
        }
    }
}

impl RecordsConfig {
    /// Where a remote records service's events go, in the order tried:
    /// `endpoints`, or the one `endpoint`.
    pub fn delivery_endpoints(&self) -> Vec<String> {
        if self.endpoints.is_empty() {
            vec![self.endpoint.clone()]
        } else {
            self.endpoints.clone()
        }
    }

    /// The spool directory, with the default applied.
    pub fn spool_path(&self) -> PathBuf {
        if !self.spool_dir.is_empty() {
            PathBuf::from(&self.spool_dir)
        } else if self.service.embedded {
            self.service.state_dir().join("spool")
        } else {
            PathBuf::from("var/spool")
        }
    }
}

/// `[records.service]`: the records service itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordsServiceConfig {
    /// Whether `courtline serve` starts the records service in-process (off when it runs elsewhere).
    pub embedded: bool,
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// SQLite path or `sqlite:` URL, or a `postgres://` URL.
    pub database: String,
    /// Hash function of a new chain: "sha256" or "sm3" (GB/T 32905); a chain keeps its own.
    pub hash_algorithm: HashAlgorithm,
    /// Ed25519 key that signs checkpoints and exports; empty = `records-signing.key` beside the
    /// SQLite database (`var/` for PostgreSQL). Created if missing.
    pub signing_key_file: String,
    /// Sign a checkpoint after this many events ...
    pub checkpoint_every_events: u64,
    /// ... and at least this often while events arrive.
    pub checkpoint_every_minutes: u64,
    /// Calls are kept this many days (at least 180, PRC Cybersecurity Law Art. 21); flagged calls always.
    pub retention_days: u32,
    /// PEM certificate for gRPC over TLS; plain HTTP/2 while empty.
    pub tls_cert_file: String,
    /// PEM private key for `tls_cert_file`.
    pub tls_key_file: String,
    /// PEM CA certificate whose client certificates are accepted (mTLS; needs
    /// `tls_cert_file`); `client_certificates` gives each identity its role.
    pub tls_client_ca_file: String,
    /// The role of each client certificate identity.
    pub client_certificates: Vec<ClientCertificateRole>,
    /// The evidence store: kept call recordings, `<call_id>.wav`; empty = `evidence/`
    /// beside the SQLite database (`var/` for PostgreSQL). Not `recordings/`: that is
    /// the switchboard's temporary area by default.
    pub recordings_dir: String,
    /// Other records services use the same PostgreSQL database: switchboard events are
    /// staged, and the one service holding the sequencer's lock chains them.
    pub shared_database: bool,
}

/// `[[records.service.client_certificates]]`: what one client certificate may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificateRole {
    /// A DNS, URI or e-mail subject alternative name of the certificate, or its subject
    /// common name.
    pub identity: String,
    /// "switchboard", "compliance", "auditor" or "admin".
    pub role: String,
}

impl Default for RecordsServiceConfig {
    fn default() -> Self {
        RecordsServiceConfig {
            embedded: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database: "var/courtline.db".to_string(),
            hash_algorithm: HashAlgorithm::Sha256,
            signing_key_file: String::new(),
            checkpoint_every_events: 1000,
            checkpoint_every_minutes: 10,
            retention_days: MIN_RETENTION_DAYS,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_client_ca_file: String::new(),
            client_certificates: Vec::new(),
            recordings_dir: String::new(),
            shared_database: false,
        }
    }
}

impl RecordsServiceConfig {
    /// Where the service keeps its files by default: the SQLite database's directory,
    /// or `var/` for PostgreSQL and in-memory databases.
    pub fn state_dir(&self) -> PathBuf {
        let path = self
            .database
            .strip_prefix("sqlite://")
            .or_else(|| self.database.strip_prefix("sqlite:"))
            .unwrap_or(&self.database);
        if self.database.contains("://") && !self.database.starts_with("sqlite://")
            || path.starts_with(':')
        {
            return PathBuf::from("var");
        }
        match Path::new(path).parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// Where clients on this machine reach the embedded service, derived from
    /// `listen` (a wildcard address becomes loopback), so that moving the service
    /// moves `courtline calls`/`records` with it; `None` when it is not embedded
    /// or listens on port 0 (chosen at start-up, unknown here).
    pub fn local_endpoint(&self) -> Option<String> {
        if !self.embedded || self.listen.port() == 0 {
            return None;
        }
        let ip = match self.listen.ip() {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        let scheme = if self.tls_cert_file.is_empty() {
            "http"
        } else {
            "https"
        };
        Some(format!(
            "{scheme}://{}",
            SocketAddr::new(ip, self.listen.port())
        ))
    }

    /// The signing key file, with the default applied.
    pub fn signing_key_path(&self) -> PathBuf {
        if self.signing_key_file.is_empty() {
            self.state_dir().join("records-signing.key")
        } else {
            PathBuf::from(&self.signing_key_file)
        }
    }

    /// The evidence store's directory, with the default applied.
    pub fn recordings_path(&self) -> PathBuf {
        if self.recordings_dir.is_empty() {
            self.state_dir().join("evidence")
        } else {
            PathBuf::from(&self.recordings_dir)
        }
    }

    /// The console's TLS: the same certificate, key and client CA as gRPC's;
    /// `None` while gRPC is plain.
    pub fn web_tls(&self) -> Option<WebTls> {
        (!self.tls_cert_file.is_empty()).then(|| WebTls {
            cert_file: PathBuf::from(&self.tls_cert_file),
            key_file: PathBuf::from(&self.tls_key_file),
            client_ca_file: (!self.tls_client_ca_file.is_empty())
                .then(|| PathBuf::from(&self.tls_client_ca_file)),
        })
    }

    /// What the records service needs to start. Embedded, it shares the switchboard's
    /// machine and takes its recording files over.
    pub fn settings(&self) -> ServiceSettings {
        ServiceSettings {
            recordings_dir: self.recordings_path(),
            takes_local_recordings: self.embedded,
            database: self.database.clone(),
            hash_algorithm: self.hash_algorithm,
            signing_key_file: self.signing_key_path(),
            checkpoints: CheckpointPolicy {
                every_events: self.checkpoint_every_events,
                every: Duration::from_secs(self.checkpoint_every_minutes * 60),
            },
            retention_days: self.retention_days,
            tls: (!self.tls_cert_file.is_empty()).then(|| {
                (
                    PathBuf::from(&self.tls_cert_file),
                    PathBuf::from(&self.tls_key_file),
                )
            }),
            client_certificates: (!self.tls_client_ca_file.is_empty()).then(|| {
                ClientCertificates {
                    ca_file: PathBuf::from(&self.tls_client_ca_file),
                    // Roles were checked by `Config::validate`.
                    roles: self
                        .client_certificates
                        .iter()
                        .filter_map(|entry| {
                            Some((entry.identity.trim().to_owned(), parse_role(&entry.role)?))
                        })
                        .collect(),
                }
            }),
        }
    }
}

/// `[prompts.<id>]`: one recorded announcement.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptConfig {
    /// WAV file, relative to the working directory unless absolute.
    pub file: PathBuf,
    /// The court's own label for the recording (approval reference, date);
    /// copied into every record beside the file's SHA-256. Optional.
    #[serde(default)]
    pub version: String,
    /// Later recordings that take over at a set time (`[[prompts.<id>.versions]]`),
    /// so a new warning goes live at midnight without anyone awake; `file` plays until the first.
    #[serde(default)]
    pub versions: Vec<PromptVersionConfig>,
}

/// `[[prompts.<id>.versions]]`: a recording of the prompt that plays from `valid_from` on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptVersionConfig {
    /// WAV file, as `[prompts.<id>] file`.
    pub file: PathBuf,
    /// The court's label for this recording, copied into records.
    #[serde(default)]
    pub version: String,
    /// When calls start hearing it: RFC 3339 with an offset, e.g. "2027-01-01T00:00:00+08:00"
    /// (an offset, so midnight is the court's midnight whatever the machine's zone).
    pub valid_from: chrono::DateTime<chrono::FixedOffset>,
}

/// `[[lines]]`: one court main line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// The dialled number, matched against the Request-URI user part.
    pub number: String,
    /// Court name, copied into every call record for this line.
    pub court: String,
    /// Id of the `[prompts.<id>]` the caller must hear before being connected,
    /// or a playlist of ids played in order (e.g. Mandarin, then English).
    pub prompt: OneOrList,
    /// Silence between two prompts of a playlist, in ms (a multiple of 20).
    #[serde(default = "default_prompt_gap_ms")]
    pub prompt_gap_ms: u32,
    /// Operator SIP URI, or a hunt list; an entry may carry its own ring
    /// timeout (`{ uri = "sip:...", ring_timeout_s = 15 }`).
    pub operator: OneOrList<OperatorTarget>,
    /// How the hunt list is rung: one after the other, from a rotating start, or all at once.
    #[serde(default)]
    pub hunt: HuntStrategy,
    /// How the caller reaches the operator after the warning: courtline's own
    /// bridge, or a REFER to the caller's side (falling back to the bridge).
    #[serde(default)]
    pub connect: ConnectMode,
    /// Seconds each operator may ring before the next one is tried (unless
    /// the entry has its own `ring_timeout_s`); with `simultaneous`, how long all ring.
    #[serde(default = "default_ring_timeout_s")]
    pub ring_timeout_s: u32,
    /// When the caller is answered: before the warning, or only once the operator answers.
    #[serde(default)]
    pub answer_mode: AnswerMode,
    /// Whether the call's audio is recorded, and kept always or only when the call is reported.
    #[serde(default)]
    pub record_audio: RecordAudio,
    /// Name of the `[hours.<name>]` when the line is staffed; empty: always.
    #[serde(default)]
    pub hours: String,
    /// What callers get outside those hours (required when `hours` is set).
    #[serde(default)]
    pub after_hours: Option<AfterHoursConfig>,
    /// Id of the `[prompts.<id>]` played to an answered caller when nobody of
    /// the hunt list answers ("the operators are busy, call again"), before
    /// courtline hangs up; absent: the hang-up comes at once.
    #[serde(default)]
    pub failover_prompt: Option<String>,
    /// Whether the operator who answers a caller with prior reports or flags
    /// first hears a short whisper (three 800 Hz beeps) the caller does not;
    /// off until the court's policy says otherwise.
    #[serde(default)]
    pub whisper_history: bool,
}

/// `[lines.after_hours]`: the call outside office hours.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AfterHoursConfig {
    /// Prompt id or playlist played instead of the line's own (the warning,
    /// then the office hours), never skipped either.
    pub prompt: OneOrList,
    /// Duty number(s) dialled after it (in order); absent: courtline hangs up politely.
    #[serde(default)]
    pub operator: Option<OneOrList<OperatorTarget>>,
}

/// `[[lines]] record_audio`: which calls' audio becomes evidence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordAudio {
    /// Every call is recorded and kept.
    Always,
    /// Every call is recorded; the file is kept only if the call is reported or
    /// flagged before its record is closed, deleted otherwise.
    #[default]
    OnReport,
    /// No audio is recorded.
    Never,
}

impl RecordAudio {
    /// The name used in the configuration and in `RecordingFinished.policy`.
    pub fn name(self) -> &'static str {
        match self {
            RecordAudio::Always => "always",
            RecordAudio::OnReport => "on_report",
            RecordAudio::Never => "never",
        }
    }
}

/// `[recording]`: the switchboard's temporary area for call audio.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Directory recordings are written to while calls last; empty = `recordings/`
    /// beside the spool directory. The records service takes the files over from here.
    pub dir: String,
    /// What to do with new calls on recorded lines while recordings cannot be written.
    pub on_failure: RecordingFailurePolicy,
}

/// `[recording] on_failure`: carry calls without audio, or refuse them (503).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingFailurePolicy {
    /// Take the call; its record says the recording failed (the default).
    #[default]
    Continue,
    /// Refuse new calls on recorded lines with 503 until recordings can be written again.
    Reject,
}

impl Config {
    /// The recordings' temporary directory, with the default applied.
    pub fn recording_dir(&self) -> PathBuf {
        if !self.recording.dir.is_empty() {
            return PathBuf::from(&self.recording.dir);
        }
        let spool = self.records.spool_path();
        match spool.parent() {
            Some(parent) => parent.join("recordings"),
            None => PathBuf::from("recordings"),
        }
    }
}

/// `[[lines]] answer_mode`: when the caller's INVITE gets its 200 OK.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerMode {
    /// 200 OK at once (after `answer_delay_ms`); the warning follows the ACK.
    #[default]
    Answer,
    /// 183 Session Progress with SDP; the warning and the ringback are early
    /// media, and the caller gets its 200 OK only when the operator answers,
    /// so the call is not billed for the warning.
    EarlyMedia,
}

fn default_ring_timeout_s() -> u32 {
    30
}

fn default_prompt_gap_ms() -> u32 {
    DEFAULT_PROMPT_GAP_MS
}

/// Pause between two prompts of a playlist unless configured: a breath between languages.
pub const DEFAULT_PROMPT_GAP_MS: u32 = 600;
/// Longest gap accepted between two prompts; more is surely a typo.
const MAX_PROMPT_GAP_MS: u32 = 10_000;

/// `[registration]`: courtline as an account on the PBX.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// Registrar URI, e.g. "sip:pbx.court.example"; empty = do not register.
    pub registrar: String,
    /// Account (AOR user part); INVITEs to it are taken for `line`.
    pub username: String,
    /// Digest password.
    pub password: String,
    /// Digest user name when the PBX's authentication ID differs from `username`.
    pub auth_username: String,
    /// Requested binding lifetime in seconds; refreshed at 75% of what is granted.
    pub expires_s: u32,
    /// The `[[lines]]` number calls to this account belong to; empty = the
    /// Request-URI user must be a line number itself.
    pub line: String,
}

/// `[[operator_accounts]]`: how courtline authenticates to one operator target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorAccount {
    /// The operator URI exactly as written in a line's `operator`.
    pub uri: String,
    /// Digest username (the PBX's authentication ID).
    pub username: String,
    /// Digest password.
    pub password: String,
    /// Realm to answer, when the PBX's challenge must be matched; empty = any.
    #[serde(default)]
    pub realm: String,
}

/// `[[lines]] hunt`: how a line's hunt list is rung.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HuntStrategy {
    /// One target after the other, always from the first.
    #[default]
    Sequential,
    /// One after the other, each call starting one further down the list than
    /// the line's previous call (wrapping round), so the first desk is not
    /// always the one rung.
    RoundRobin,
    /// All at once (a forked INVITE each); the first to answer gets the call,
    /// the others are cancelled.
    Simultaneous,
}

impl HuntStrategy {
    /// The name used in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            HuntStrategy::Sequential => "sequential",
            HuntStrategy::RoundRobin => "round_robin",
            HuntStrategy::Simultaneous => "simultaneous",
        }
    }
}

/// `[[lines]] connect`: how the caller gets to the operator after the warning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectMode {
    /// courtline calls the operator and relays the audio (B2BUA).
    #[default]
    Bridge,
    /// courtline sends REFER (Refer-To: the first operator) to the caller's
    /// side and leaves the call once the transfer succeeded; a refused or
    /// failed REFER falls back to `Bridge`.
    Refer,
}

/// One entry of a hunt list: a URI, or a URI with its own ring timeout.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OperatorTarget {
    /// Rings for the line's `ring_timeout_s`.
    Uri(String),
    /// Rings for its own time (a desk that should be given longer, a mobile less).
    Timed(TimedTarget),
}

/// `{ uri = "sip:...", ring_timeout_s = 15 }` in a hunt list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimedTarget {
    /// The operator's SIP URI.
    pub uri: String,
    /// Seconds this target rings before it is given up.
    pub ring_timeout_s: u32,
}

impl OperatorTarget {
    /// The target's SIP URI.
    pub fn uri(&self) -> &str {
        match self {
            OperatorTarget::Uri(uri) | OperatorTarget::Timed(TimedTarget { uri, .. }) => uri,
        }
    }

    /// Its own ring timeout in seconds, if it has one.
    pub fn ring_timeout_s(&self) -> Option<u32> {
        match self {
            OperatorTarget::Uri(_) => None,
            OperatorTarget::Timed(timed) => Some(timed.ring_timeout_s),
        }
    }
}

impl OneOrList<OperatorTarget> {
    /// The targets' URIs in order.
    pub fn uris(&self) -> Vec<String> {
        self.items().iter().map(|t| t.uri().to_owned()).collect()
    }
}

/// One value or a list (an operator or a hunt list, a prompt or a playlist);
/// TOML allows either a single value or an array.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrList<T = String> {
    /// A single value.
    One(T),
    /// Values in order (tried or played one after the other).
    List(Vec<T>),
}

impl<T: Clone> OneOrList<T> {
    /// The values in order.
    pub fn items(&self) -> Vec<T> {
        match self {
            OneOrList::One(value) => vec![value.clone()],
            OneOrList::List(list) => list.clone(),
        }
    }

    /// The config key of entry `index` for messages: `lines[0].operator`
    /// for a single value, `lines[0].operator[1]` in a list.
    pub fn entry_key(&self, key: String, index: usize) -> String {
        match self {
            OneOrList::One(_) => key,
            OneOrList::List(_) => format!("{key}[{index}]"),
        }
    }
}

/// The error of a `config` deserialization without its "for key …" tail (the
/// key is reported from the deserialization path instead).
fn config_error_message(error: &config::ConfigError) -> String {
    match error {
        config::ConfigError::Type {
            unexpected,
            expected,
            ..
        } => format!("invalid type: {unexpected}, expected {expected}"),
        config::ConfigError::At { error, .. } => config_error_message(error),
        // Absent from the file and the environment alike. `config` names the
        // whole path ("lines[0]prompt", without the dot after an index); the
        // message wants serde's wording, with the field alone.
        config::ConfigError::NotFound(path) => {
            let field = path.rsplit(['.', ']']).next().unwrap_or(path);
            format!("missing field `{field}`")
        }
        other => other.to_string(),
    }
}

/// The value at a deserialization path in the configuration tree, for messages.
fn value_at<'a>(
    tree: &'a serde_json::Value,
    path: &serde_path_to_error::Path,
) -> Option<&'a serde_json::Value> {
    use serde_path_to_error::Segment;
    path.iter().try_fold(tree, |value, segment| match segment {
        Segment::Seq { index } => value.get(index),
        Segment::Map { key } => value.get(key),
        Segment::Enum { .. } | Segment::Unknown => Some(value),
    })
}

/// How a serde type name reads to an admin writing TOML.
fn expected_in_words(expected: &str) -> String {
    match expected.trim() {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "an unsigned integer" => {
            "a whole number (0 or more), without quotes".into()
        }
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" | "an integer" | "a signed integer" => {
            "a whole number, without quotes".into()
        }
        "f32" | "f64" | "a floating point" => "a number, without quotes (e.g. 200.0)".into(),
        "a boolean" => "true or false, without quotes".into(),
        "a string" => "a string in double quotes".into(),
        "a sequence" => "a list, e.g. [\"a\", \"b\"]".into(),
        other => other.replace('`', "\""),
    }
}

/// Turns a deserialization failure into a message naming the key, the value
/// given and what is accepted, instead of serde's or `config`'s own wording.
/// `from_environment`: the file alone was fine, so a bad value came from a
/// `COURTLINE_SECTION__KEY` variable, which the message then names.
fn explain_type_error(
    file: &str,
    path: &serde_path_to_error::Path,
    tree: &serde_json::Value,
    message: &str,
    from_environment: bool,
) -> ConfigError {
    let key = path.to_string();
    let mut given = match value_at(tree, path) {
        Some(serde_json::Value::String(text)) => format!("{text:?}"),
        Some(value) => value.to_string(),
        None => "(absent)".into(),
    };
    if from_environment {
        let variable = format!("COURTLINE_{}", key.replace('.', "__").to_uppercase());
        given = format!("{given} (from {variable})");
    }
    let invalid = |key: String, problem: String, fix: String| ConfigError::Invalid {
        file: file.to_string(),
        key,
        problem,
        fix,
    };
    let backticked = |text: &str| text.split('`').nth(1).unwrap_or_default().to_string();
    if let Some(field) = message.strip_prefix("missing field ") {
        let field = backticked(field);
        let key = if key == "." {
            field
        } else {
            format!("{key}.{field}")
        };
        return invalid(
            key,
            "is missing".into(),
            "Add it; config/courtline.toml shows every key with an example.".into(),
        );
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let field = backticked(rest);
        let known = rest
            .split_once("expected ")
            .map(|(_, known)| {
                let known = known.trim_start_matches("one of ").replace('`', "");
                format!(" Known keys here: {known}.")
            })
            .unwrap_or_default();
        return invalid(
            key,
            format!("`{field}` is not a setting courtline knows"),
            format!("Check its spelling and section against config/courtline.toml.{known}"),
        );
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let accepted = rest
            .split_once("expected ")
            .map(|(_, accepted)| accepted.trim_start_matches("one of ").replace('`', "\""))
            .unwrap_or_default();
        return invalid(
            key,
            format!("{given} is not one of the accepted values"),
            format!("Use {accepted}."),
        );
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let (found, expected) = rest.rsplit_once(", expected ").unwrap_or((rest, ""));
        let kind = match found.split_whitespace().next() {
            _ if from_environment => "of the wrong type",
            Some("string") => "a string (in quotes)",
            Some("integer" | "64-bit" | "128-bit") => "a whole number",
            Some("floating") => "a decimal number",
            Some("boolean") => "true/false",
            Some("sequence") => "a list",
            Some("map") => "a table",
            _ => found,
        };
        return invalid(
            key,
            format!("{given} is {kind}"),
            format!("Write {}.", expected_in_words(expected)),
        );
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        let expected = rest.rsplit_once(", expected ").map_or("", |(_, e)| e);
        return invalid(
            key,
            format!("{given} is out of range"),
            format!("Write {}.", expected_in_words(expected)),
        );
    }
    let fix = if message.contains("socket address") {
        "Write an IP address and port, e.g. \"0.0.0.0:5060\" (IPv6: \"[::]:5060\").".to_string()
    } else if message.contains("untagged enum OneOrList") {
        "Give one string, or a list of strings such as [\"a\", \"b\"].".to_string()
    } else {
        "See config/courtline.toml for the format of this key.".to_string()
    };
    invalid(key, format!("{given} is not accepted ({message})"), fix)
}

impl Config {
    /// Reads `path` (when `path` is the default and absent: the installed
    /// configuration, or else the embedded example) and the files of its
    /// `[config] include_dir`, applies `COURTLINE_*` environment overrides,
    /// and validates the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let installed = Path::new(INSTALLED_PATH);
        let path = if !path.exists() && path == Path::new(DEFAULT_PATH) && installed.exists() {
            installed
        } else {
            path
        };
        let source = path.display().to_string();
        if !path.exists() && path == Path::new(DEFAULT_PATH) {
            tracing::info!(
                "{DEFAULT_PATH} not found; using the example configuration built into courtline"
            );
            return Self::from_toml_str(EMBEDDED_EXAMPLE, "built-in example configuration");
        }
        let values = include::read_file(path, &source)?;
        Self::build(values, path.parent().unwrap_or(Path::new("")), source)
    }

    /// Parses configuration text (used for the built-in example and by tests),
    /// still applying environment overrides; an `include_dir` is relative to
    /// the working directory.
    pub fn from_toml_str(text: &str, source: &str) -> Result<Config, ConfigError> {
        let values = include::read_text(text, source)?;
        Self::build(values, Path::new(""), source.to_string())
    }

    fn build(main: serde_json::Value, base: &Path, source: String) -> Result<Config, ConfigError> {
        let (file_values, origins) = include::merge(main, base, &source)?;
        Self::build_merged(file_values, origins, source)
    }

    /// Types, checks and completes the merged files' values.
    fn build_merged(
        file_values: serde_json::Value,
        origins: include::Origins,
        source: String,
    ) -> Result<Config, ConfigError> {
        // Only COURTLINE_SECTION__KEY variables are overrides: others that share the
        // prefix (COURTLINE_CONFIG, COURTLINE_TOKEN, COURTLINE_TEST_POSTGRES_URL) are not keys.
        let overrides = std::env::vars()
            .filter(|(name, _)| {
                name.strip_prefix("COURTLINE_")
                    .is_some_and(|rest| rest.contains("__"))
            })
            .collect();
        let env = config::Environment::with_prefix("COURTLINE")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(overrides));

        let load_error = |e: config::ConfigError| ConfigError::Load {
            file: source.clone(),
            message: format!(
                "{e}. Check the spelling and type of that key against config/courtline.toml \
                 (environment overrides use COURTLINE_SECTION__KEY)"
            ),
        };
        // Numbers must be numbers, booleans booleans in the files: `config` would
        // turn max_calls = "500" into 500 silently. Only environment values, strings
        // by nature, are converted.
        let builder =
            config::Config::builder().add_source(include::MergedValues(file_values.clone()));
        if let Err(e) = serde_path_to_error::deserialize::<_, Config>(&file_values) {
            let message = e.inner().to_string();
            // A missing key may still come from the environment: the merged pass says.
            if !message.starts_with("missing field") {
                return Err(origins.relocate(explain_type_error(
                    &source,
                    e.path(),
                    &file_values,
                    &message,
                    false,
                )));
            }
        }
        let merged = builder.add_source(env).build().map_err(load_error)?;
        let merged_values: serde_json::Value =
            merged.clone().try_deserialize().map_err(load_error)?;
        // An absent or empty endpoint follows the embedded service (see `local_endpoint`).
        let endpoint_given = merged
            .get_string("records.endpoint")
            .is_ok_and(|endpoint| !endpoint.trim().is_empty());
        let mut config: Config = serde_path_to_error::deserialize(merged).map_err(|e| {
            let message = config_error_message(e.inner());
            origins.relocate(explain_type_error(
                &source,
                e.path(),
                &merged_values,
                &message,
                true,
            ))
        })?;
        config.source = source;
        config.origins = origins;
        config.effective = merged_values;
        config.validate()?;
        config.load_hours()?;
        if let Some(first) = config.records.endpoints.first() {
            if endpoint_given {
                return Err(config.invalid(
                    "records.endpoints".into(),
                    "is set together with [records] endpoint".into(),
                    "Keep one: endpoint = \"http://…\" for one records service, or endpoints = [\"http://…\", \"http://…\"] for several.",
                ));
            }
            // The CLI connects to the first.
            config.records.endpoint = first.clone();
        } else if !endpoint_given {
            config.records.endpoint = config
                .records
                .service
                .local_endpoint()
                .unwrap_or_else(|| RecordsConfig::default().endpoint);
        }
        Ok(config)
    }

    /// A problem with `key`, reported against the file (and the key in it) that set it.
    fn invalid(&self, key: String, problem: String, fix: &str) -> ConfigError {
        let (file, key) = self.origins.locate(&key);
        ConfigError::Invalid {
            file,
            key,
            problem,
            fix: fix.to_string(),
        }
    }

    /// Checks what the types alone cannot: ranges, references and uniqueness.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err(e) = self.admin.address() {
            return Err(self.invalid(
                "admin.listen".into(),
                format!("{:?} is not an address and port: {e}", self.admin.listen),
                "Write it as 127.0.0.1:9460, or \"\" to turn the admin endpoint off.",
            ));
        }
        if self.sip.max_calls == 0 {
            return Err(self.invalid(
                "sip.max_calls".into(),
                "is 0, so every call would be refused".into(),
                "Set it to the number of simultaneous calls this server should carry, e.g. 500.",
            ));
        }
        if !(50..=5000).contains(&self.sip.t1_ms) {
            return Err(self.invalid(
                "sip.t1_ms".into(),
                format!("{} ms is outside 50-5000", self.sip.t1_ms),
                "Leave it at 500 (RFC 3261's default) unless the network's round trip is known to differ.",
            ));
        }
        if self.sip.tls_certificate.is_empty() != self.sip.tls_private_key.is_empty() {
            return Err(self.invalid(
                "sip.tls_certificate".into(),
                "a TLS certificate and private key must be given together".into(),
                "Set both tls_certificate and tls_private_key (PEM files), or neither to leave TLS off.",
            ));
        }
        if !self.sip.tls_listen.is_empty() && self.sip.tls_listen.parse::<SocketAddr>().is_err() {
            return Err(self.invalid(
                "sip.tls_listen".into(),
                format!("\"{}\" is not an address:port", self.sip.tls_listen),
                "Write it like \"0.0.0.0:5061\", or leave it empty for the UDP port + 1.",
            ));
        }
        if !self.sip.public_address.is_empty() && self.public_address().is_none() {
            return Err(self.invalid(
                "sip.public_address".into(),
                format!("\"{}\" is not an IP address or IP:port", self.sip.public_address),
                "Give the public IP (and port, if the NAT maps it) peers reach this server at, e.g. \"203.0.113.7\".",
            ));
        }
        if let Err(e) = sip::parse_networks(&self.sip.shield.trusted) {
            return Err(self.invalid(
                "sip.shield.trusted".into(),
                e.to_string(),
                "List the trunks' and PBXs' networks, e.g. trusted = [\"192.0.2.0/24\"].",
            ));
        }
        if let Err(e) = sip::parse_networks(&self.sip.trusted_proxies) {
            return Err(self.invalid(
                "sip.trusted_proxies".into(),
                e.to_string(),
                "List the proxies in front of this node, e.g. trusted_proxies = [\"192.0.2.5\"] for one Kamailio.",
            ));
        }
        self.validate_inbound_auth()?;
        if let Err(e) = self.reports.check() {
            return Err(self.invalid(e.key.into(), e.problem, e.fix));
        }
        let numbers: Vec<String> = self.lines.iter().map(|l| l.number.clone()).collect();
        if let Err(e) = self.probe.check(&numbers) {
            return Err(self.invalid(e.key.into(), e.problem, e.fix));
        }
        if self.sip.shield.rate_per_s <= 0.0 || self.sip.shield.burst == 0 {
            return Err(self.invalid(
                "sip.shield.rate_per_s".into(),
                "the rate limit must be positive".into(),
                "Use e.g. rate_per_s = 200.0 and burst = 400 per source address.",
            ));
        }
        let ports = self.rtp_port_range()?;
        let even_ports = ports.clone().filter(|p| p % 2 == 0).count();
        if even_ports < 2 {
            return Err(self.invalid(
                "media.rtp_ports".into(),
                format!(
                    "\"{}\" leaves no room for a call's two legs",
                    self.media.rtp_ports
                ),
                "Give a range with at least two even ports, e.g. \"20000-29999\".",
            ));
        }
        if self.media.leading_silence_ms > 5000 {
            return Err(self.invalid(
                "media.leading_silence_ms".into(),
                format!(
                    "{} ms is longer than any phone needs",
                    self.media.leading_silence_ms
                ),
                "Use 0-5000; 200 is a good default.",
            ));
        }
        if !self.media.advertise_address.is_empty()
            && self
                .media
                .advertise_address
                .parse::<std::net::IpAddr>()
                .is_err()
        {
            return Err(self.invalid(
                "media.advertise_address".into(),
                format!("\"{}\" is not an IP address", self.media.advertise_address),
                "Give the IPv4/IPv6 address callers should send RTP to, or leave it empty.",
            ));
        }
        if let Err(e) = self.media.threads.check() {
            return Err(self.invalid(
                "media.threads".into(),
                e.to_string(),
                "Give the number of media engine threads, 1 up to the machine's cores (e.g. threads = 2), or threads = \"auto\" for one per core.",
            ));
        }
        if let Err(e) = self.media.ringback.check() {
            return Err(self.invalid(
                "media.ringback".into(),
                e.to_string(),
                "China's ringback is frequency_hz = 450, on_ms = 1000, off_ms = 4000.",
            ));
        }
        let derived_endpoint = self.records.endpoint.is_empty() && self.records.service.embedded;
        if !derived_endpoint
            && !self.records.endpoint.starts_with("http://")
            && !self.records.endpoint.starts_with("https://")
        {
            return Err(self.invalid(
                "records.endpoint".into(),
                format!("\"{}\" is not an http(s) URL", self.records.endpoint),
                "Write it like \"http://127.0.0.1:50051\" (it may be left empty only while the records service is embedded).",
            ));
        }
        if let Some(bad) = self
            .records
            .endpoints
            .iter()
            .find(|e| !e.starts_with("http://") && !e.starts_with("https://"))
        {
            return Err(self.invalid(
                "records.endpoints".into(),
                format!("\"{bad}\" is not an http(s) URL"),
                "List the records services like [\"http://10.0.0.5:50051\", \"http://10.0.0.6:50051\"].",
            ));
        }
        if !self.records.endpoints.is_empty() && self.records.service.embedded {
            return Err(self.invalid(
                "records.endpoints".into(),
                "is set but the records service is embedded, so events go to it".into(),
                "Set [records.service] embedded = false on a switchboard that sends to records services elsewhere, or remove endpoints.",
            ));
        }
        self.validate_records()?;
        if self.lines.is_empty() {
            return Err(self.invalid(
                "lines".into(),
                "no [[lines]] are configured, so every call would get 404".into(),
                "Add a [[lines]] section with number, court, prompt and operator.",
            ));
        }
        for (id, prompt) in &self.prompts {
            let files = std::iter::once((format!("prompts.{id}.file"), &prompt.file)).chain(
                prompt.versions.iter().enumerate().map(|(i, version)| {
                    (format!("prompts.{id}.versions[{i}].file"), &version.file)
                }),
            );
            for (key, file) in files {
                if file.as_os_str().is_empty() {
                    return Err(self.invalid(
                        key,
                        "is empty".into(),
                        "Point it at a WAV file, e.g. \"audio/three_rules_zh.wav\".",
                    ));
                }
            }
            for (i, pair) in prompt.versions.windows(2).enumerate() {
                if pair[1].valid_from <= pair[0].valid_from {
                    return Err(self.invalid(
                        format!("prompts.{id}.versions[{}].valid_from", i + 1),
                        format!(
                            "{} is not after the version before it ({})",
                            pair[1].valid_from.to_rfc3339(),
                            pair[0].valid_from.to_rfc3339()
                        ),
                        "List the versions in the order they go live, each later than the one before.",
                    ));
                }
            }
        }
        for (i, account) in self.operator_accounts.iter().enumerate() {
            if account.username.is_empty() {
                return Err(self.invalid(
                    format!("operator_accounts[{i}].username"),
                    "is empty".into(),
                    "Give the username the operator's PBX expects in its digest challenge.",
                ));
            }
            if !self
                .lines
                .iter()
                .any(|l| l.operator.uris().contains(&account.uri))
            {
                return Err(self.invalid(
                    format!("operator_accounts[{i}].uri"),
                    format!("\"{}\" is not an operator of any line", account.uri),
                    "Write the URI exactly as it appears in a [[lines]] operator entry.",
                ));
            }
        }
        self.validate_registration()?;
        let mut numbers = HashMap::new();
        for (i, line) in self.lines.iter().enumerate() {
            let key = |field: &str| format!("lines[{i}].{field}");
            if line.number.is_empty()
                || !line
                    .number
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-_.*#".contains(c))
            {
                return Err(self.invalid(
                    key("number"),
                    format!("\"{}\" is not a dialable number", line.number),
                    "Use the digits callers dial, as they appear in the Request-URI, e.g. \"02112368\".",
                ));
            }
            if let Some(first) = numbers.insert(line.number.as_str(), i) {
                let (file, first_key) = self.origins.locate(&format!("lines[{first}].number"));
                return Err(self.invalid(
                    key("number"),
                    format!(
                        "\"{}\" is configured twice: also in {file} at `{first_key}`",
                        line.number
                    ),
                    "Each line number may appear in one [[lines]] section of one file only.",
                ));
            }
            self.check_playlist(key("prompt"), &line.prompt)?;
            if line.prompt_gap_ms % 20 != 0 || line.prompt_gap_ms > MAX_PROMPT_GAP_MS {
                return Err(self.invalid(
                    key("prompt_gap_ms"),
                    format!(
                        "{} ms is not a multiple of 20 ms up to {MAX_PROMPT_GAP_MS} ms",
                        line.prompt_gap_ms
                    ),
                    &format!("Use a multiple of 20 (one RTP frame), e.g. {DEFAULT_PROMPT_GAP_MS}."),
                ));
            }
            self.check_hunt_list(key("operator"), &line.operator)?;
            if line.connect == ConnectMode::Refer && line.answer_mode == AnswerMode::EarlyMedia {
                return Err(self.invalid(
                    key("connect"),
                    "REFER needs an answered call, but the line answers only when the operator does".into(),
                    "Use answer_mode = \"answer\" with connect = \"refer\", or connect = \"bridge\".",
                ));
            }
            if let Some(id) = &line.failover_prompt {
                self.check_playlist(key("failover_prompt"), &OneOrList::One(id.clone()))?;
            }
            self.check_hours(&key, line)?;
            if !(1..=600).contains(&line.ring_timeout_s) {
                return Err(self.invalid(
                    key("ring_timeout_s"),
                    format!("{} s is out of range", line.ring_timeout_s),
                    "Use 1-600 seconds; 30 is usual.",
                ));
            }
        }
        Ok(())
    }

    /// A line's playlist: not empty, every id a `[prompts.<id>]`.
    fn check_playlist(&self, key: String, prompt: &OneOrList) -> Result<(), ConfigError> {
        let ids = prompt.items();
        if ids.is_empty() {
            return Err(self.invalid(
                key,
                "the playlist is empty: a line must play at least one prompt".into(),
                "Give one prompt id, e.g. prompt = \"three_rules_zh\", or several: prompt = [\"three_rules_zh\", \"three_rules_en\"].",
            ));
        }
        for (j, id) in ids.iter().enumerate() {
            if self.prompts.contains_key(id) {
                continue;
            }
            let known: Vec<&str> = self.prompts.keys().map(String::as_str).collect();
            return Err(self.invalid(
                prompt.entry_key(key.clone(), j),
                format!("no [prompts.{id}] section exists"),
                &format!(
                    "Define [prompts.{id}] with a file, or use one of: {}.",
                    if known.is_empty() {
                        "(none defined)".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        Ok(())
    }

    /// A hunt list: not empty, every entry a SIP URI courtline can dial.
    fn check_hunt_list(
        &self,
        key: String,
        operator: &OneOrList<OperatorTarget>,
    ) -> Result<(), ConfigError> {
        let targets = operator.items();
        if targets.is_empty() {
            return Err(self.invalid(
                key,
                "the hunt list is empty".into(),
                "Give at least one operator URI, e.g. \"sip:operator@192.0.2.10:5060\".",
            ));
        }
        for (j, target) in targets.iter().enumerate() {
            let uri = target.uri();
            if let Err(problem) = sip::check_operator_uri(uri) {
                let k = operator.entry_key(key.clone(), j);
                return Err(self.invalid(
                k,
                format!("\"{uri}\" {problem}"),
                "Write it as sip:user@host[:port][;transport=udp|tcp|tls], port 1-65535, e.g. \"sip:operator@192.0.2.10:5060\".",
                ));
            }
            if let Some(seconds) = target.ring_timeout_s() {
                if !(1..=600).contains(&seconds) {
                    return Err(self.invalid(
                        format!("{}.ring_timeout_s", operator.entry_key(key.clone(), j)),
                        format!("{seconds} s is out of range"),
                        "Use 1-600 seconds; 30 is usual.",
                    ));
                }
            }
        }
        Ok(())
    }

    /// A line's office hours name `[hours.<name>]`, and a line with hours says
    /// what callers get outside them.
    fn check_hours(
        &self,
        key: &dyn Fn(&str) -> String,
        line: &LineConfig,
    ) -> Result<(), ConfigError> {
        if !line.hours.is_empty() && !self.hours.contains_key(&line.hours) {
            let known: Vec<&str> = self.hours.keys().map(String::as_str).collect();
            return Err(self.invalid(
                key("hours"),
                format!("no [hours.{}] section exists", line.hours),
                &format!(
                    "Define [hours.{}] with a zone and weekly hours, or use one of: {}.",
                    line.hours,
                    if known.is_empty() {
                        "(none defined)".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        match (&line.after_hours, line.hours.is_empty()) {
            (None, false) => Err(self.invalid(
                key("after_hours"),
                "the line has office hours but no after-hours call".into(),
                "Add [lines.after_hours] with prompt = [\"three_rules_zh\", \"after_hours_zh\"] (and operator = \"sip:duty@...\" to reach a duty officer), or remove hours.",
            )),
            (Some(_), true) => Err(self.invalid(
                key("after_hours"),
                "the line has an after-hours call but no office hours, so it would never be used".into(),
                "Set hours = \"<name of an [hours.<name>] section>\", or remove [lines.after_hours].",
            )),
            (Some(after), false) => {
                self.check_playlist(key("after_hours.prompt"), &after.prompt)?;
                match &after.operator {
                    Some(operator) => self.check_hunt_list(key("after_hours.operator"), operator),
                    None => Ok(()),
                }
            }
            (None, true) => Ok(()),
        }
    }

    /// Reads every `[hours.<name>]`'s zone, weekly hours and calendar files
    /// (paths relative to the working directory, as prompt files are).
    fn load_hours(&mut self) -> Result<(), ConfigError> {
        for (name, config) in &self.hours {
            let loaded = hours::OfficeHours::load(config, Path::new("")).map_err(|e| {
                self.invalid(
                    format!("hours.{name}"),
                    e.to_string(),
                    "Fix the entry named; the calendar format is in config/calendars/cn-2026.txt.",
                )
            })?;
            self.office_hours.insert(name.clone(), Arc::new(loaded));
        }
        Ok(())
    }

    /// Whether `line` is staffed at `at` (lines without hours always are).
    pub fn is_staffed(&self, line: &LineConfig, at: chrono::DateTime<chrono::Utc>) -> bool {
        self.office_hours
            .get(&line.hours)
            .is_none_or(|hours| hours.is_open(at))
    }

    /// The RTP port range, parsed from `media.rtp_ports`.
    pub fn rtp_port_range(&self) -> Result<RangeInclusive<u16>, ConfigError> {
        let text = self.media.rtp_ports.trim();
        let parsed = text.split_once('-').and_then(|(lo, hi)| {
            let lo: u16 = lo.trim().parse().ok()?;
            let hi: u16 = hi.trim().parse().ok()?;
            (1024..=hi).contains(&lo).then_some(lo..=hi)
        });
        parsed.ok_or_else(|| {
            self.invalid(
                "media.rtp_ports".into(),
                format!("\"{text}\" is not a port range"),
                "Write it as \"low-high\" with 1024 <= low <= high <= 65535, e.g. \"20000-29999\".",
            )
        })
    }

    fn validate_records(&self) -> Result<(), ConfigError> {
        let web = &self.records.web;
        if !web.listen.trim().is_empty() && web.listen.trim().parse::<SocketAddr>().is_err() {
            return Err(self.invalid(
                "records.web.listen".into(),
                format!("\"{}\" is not an address:port", web.listen),
                "Write it like \"127.0.0.1:8080\", or \"\" to turn the web console off.",
            ));
        }
        if web.session_minutes == 0 {
            return Err(self.invalid(
                "records.web.session_minutes".into(),
                "is 0".into(),
                "Sessions need some idle time before they end: use 30, for example.",
            ));
        }
        if let Err(name) = masked_roles(&web.mask_callers_for) {
            return Err(self.invalid(
                "records.web.mask_callers_for".into(),
                format!("\"{name}\" is not a role"),
                "List roles from compliance, operator, auditor, admin, e.g. [\"auditor\", \"admin\"]; [] masks no one.",
            ));
        }
        if let Err(e) = self.records.patterns.check() {
            return Err(self.invalid(e.key, e.problem, e.fix));
        }
        let service = &self.records.service;
        if service.database.trim().is_empty() {
            return Err(self.invalid(
                "records.service.database".into(),
                "is empty".into(),
                "Give a SQLite file such as \"var/courtline.db\", or a postgres://user:password@host/db URL.",
            ));
        }
        if service.retention_days < MIN_RETENTION_DAYS {
            return Err(self.invalid(
                "records.service.retention_days".into(),
                format!("{} days is shorter than the legal minimum", service.retention_days),
                "PRC Cybersecurity Law Art. 21 requires keeping logs at least six months: use 180 or more.",
            ));
        }
        if service.checkpoint_every_events == 0 {
            return Err(self.invalid(
                "records.service.checkpoint_every_events".into(),
                "is 0".into(),
                "Sign a checkpoint every N events with N >= 1; 1000 is a good default.",
            ));
        }
        if !(1..=1440).contains(&service.checkpoint_every_minutes) {
            return Err(self.invalid(
                "records.service.checkpoint_every_minutes".into(),
                format!("{} is out of range", service.checkpoint_every_minutes),
                "Use 1-1440 minutes; 10 is a good default.",
            ));
        }
        if service.shared_database && !service.database.starts_with("postgres") {
            return Err(self.invalid(
                "records.service.shared_database".into(),
                "needs a PostgreSQL database".into(),
                "Several records services share only a postgres://user:password@host/db database; \
                 a SQLite file has one service: set shared_database = false.",
            ));
        }
        if service.tls_cert_file.is_empty() != service.tls_key_file.is_empty() {
            return Err(self.invalid(
                "records.service.tls_cert_file".into(),
                "a TLS certificate and key must be given together".into(),
                "Set both tls_cert_file and tls_key_file (PEM files), or neither for plain gRPC.",
            ));
        }
        let https = self
            .records
            .delivery_endpoints()
            .iter()
            .any(|e| e.starts_with("https://"));
        if https && self.records.tls_ca_file.is_empty() {
            return Err(self.invalid(
                "records.tls_ca_file".into(),
                "is empty but the endpoint is https".into(),
                "Point it at the PEM CA certificate that signed the records service's certificate.",
            ));
        }
        if self.records.tls_cert_file.is_empty() != self.records.tls_key_file.is_empty() {
            return Err(self.invalid(
                "records.tls_cert_file".into(),
                "a client certificate and its key must be given together".into(),
                "Set both tls_cert_file and tls_key_file (PEM files), or neither to use a token.",
            ));
        }
        self.validate_client_certificates()
    }

    fn validate_client_certificates(&self) -> Result<(), ConfigError> {
        let service = &self.records.service;
        if !service.tls_client_ca_file.is_empty() && service.tls_cert_file.is_empty() {
            return Err(self.invalid(
                "records.service.tls_client_ca_file".into(),
                "client certificates need TLS".into(),
                "Set tls_cert_file and tls_key_file too: client certificates are checked in the TLS handshake.",
            ));
        }
        if !service.client_certificates.is_empty() && service.tls_client_ca_file.is_empty() {
            return Err(self.invalid(
                "records.service.client_certificates".into(),
                "roles are given but no client CA".into(),
                "Set tls_client_ca_file to the PEM CA certificate that signs the client certificates.",
            ));
        }
        let mut seen = HashSet::new();
        for (index, entry) in service.client_certificates.iter().enumerate() {
            let key = format!("records.service.client_certificates[{index}]");
            let identity = entry.identity.trim();
            if identity.is_empty() || !seen.insert(identity) {
                return Err(self.invalid(
                    format!("{key}.identity"),
                    format!("{:?} is empty or listed twice", entry.identity),
                    "Give each certificate's DNS, URI or e-mail subject alternative name, or its subject common name, once.",
                ));
            }
            if parse_role(&entry.role).is_none() {
                return Err(self.invalid(
                    format!("{key}.role"),
                    format!("{:?} is not a role", entry.role),
                    "Use switchboard, compliance, auditor, admin or operator.",
                ));
            }
        }
        Ok(())
    }

    /// `[sip] public_address` parsed: the public IP and, if given, port.
    pub fn public_address(&self) -> Option<(std::net::IpAddr, Option<u16>)> {
        let text = self.sip.public_address.trim();
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Some((addr.ip(), Some(addr.port())));
        }
        text.parse().ok().map(|ip| (ip, None))
    }

    /// Where SIP over TLS listens, if a certificate is configured.
    pub fn tls_listen(&self, udp: SocketAddr) -> Option<SocketAddr> {
        if self.sip.tls_certificate.is_empty() {
            return None;
        }
        self.sip
            .tls_listen
            .parse()
            .ok()
            .or_else(|| Some(SocketAddr::new(udp.ip(), udp.port().checked_add(1)?)))
    }

    fn validate_inbound_auth(&self) -> Result<(), ConfigError> {
        let auth = &self.sip.inbound_auth;
        // Off without users: its other settings are not used, so not checked.
        if auth.users.is_empty() {
            return Ok(());
        }
        if let Err(e) = sip::parse_networks(&auth.exempt) {
            return Err(self.invalid(
                "sip.inbound_auth.exempt".into(),
                e.to_string(),
                "List the trunks' and PBXs' networks, e.g. exempt = [\"192.0.2.0/24\"].",
            ));
        }
        if auth.realm.trim().is_empty() {
            return Err(self.invalid(
                "sip.inbound_auth.realm".into(),
                "is empty".into(),
                "Name the realm callers authenticate in, e.g. realm = \"court.example\".",
            ));
        }
        if auth.nonce_lifetime_s == 0 {
            return Err(self.invalid(
                "sip.inbound_auth.nonce_lifetime_s".into(),
                "is 0, so no challenge could ever be answered".into(),
                "Use e.g. nonce_lifetime_s = 300.",
            ));
        }
        for (i, user) in auth.users.iter().enumerate() {
            let ha1_ok = user.ha1.is_empty()
                || (user.ha1.len() == auth.algorithm.hex_len()
                    && user.ha1.bytes().all(|b| b.is_ascii_hexdigit()));
            if user.username.is_empty()
                || user.password.is_empty() == user.ha1.is_empty()
                || !ha1_ok
            {
                return Err(self.invalid(
                    format!("sip.inbound_auth.users[{i}]"),
                    "needs a username and either a password or an ha1 (hex, of the configured algorithm)".into(),
                    "Write { username = \"alice\", password = \"…\" }, or ha1 = H(username:realm:password) instead of the password.",
                ));
            }
        }
        Ok(())
    }

    fn validate_registration(&self) -> Result<(), ConfigError> {
        let r = &self.registration;
        if r.registrar.is_empty() {
            return Ok(());
        }
        let parsed = uri::parse(&r.registrar).and_then(|uri| match uri.secure {
            true => Err("uses sips:, but registration over TLS is not supported".to_string()),
            false => Ok(uri),
        });
        if let Err(problem) = parsed.and_then(|_| {
            rsipstack::sip::Uri::try_from(r.registrar.as_str())
                .map_err(|_| "is not a SIP URI".to_string())
        }) {
            return Err(self.invalid(
                "registration.registrar".into(),
                format!("\"{}\" {problem}", r.registrar),
                "Write it like \"sip:pbx.court.example\" (add ;transport=tcp for TCP).",
            ));
        }
        if r.username.is_empty() {
            return Err(self.invalid(
                "registration.username".into(),
                "is empty".into(),
                "Give the account the PBX set up for courtline.",
            ));
        }
        if r.expires_s < 60 {
            return Err(self.invalid(
                "registration.expires_s".into(),
                format!("{} s is too short", r.expires_s),
                "Use 60 s or more; 600 is usual.",
            ));
        }
        if !r.line.is_empty() && self.line(&r.line).is_none() {
            return Err(self.invalid(
                "registration.line".into(),
                format!("no [[lines]] has number \"{}\"", r.line),
                "Name the line whose prompt and operator calls to this account should get.",
            ));
        }
        Ok(())
    }

    /// The line a dialled number belongs to: a line number itself, or the
    /// registered account's user, which stands for `[registration] line`.
    pub fn line_for(&self, dialled: &str) -> Option<&LineConfig> {
        let r = &self.registration;
        if !r.registrar.is_empty() && !r.line.is_empty() && dialled == r.username {
            return self.line(&r.line);
        }
        self.line(dialled)
    }

    /// Credentials for an operator target, if configured.
    pub fn operator_account(&self, uri: &str) -> Option<&OperatorAccount> {
        self.operator_accounts.iter().find(|a| a.uri == uri)
    }

    /// The line a Request-URI user part refers to.
    pub fn line(&self, number: &str) -> Option<&LineConfig> {
        self.lines.iter().find(|l| l.number == number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> String {
        r#"
[prompts.zh]
file = "audio/three_rules_zh.wav"

[[lines]]
number = "02112368"
court = "上海市第一中级人民法院"
prompt = "zh"
operator = "sip:operator@127.0.0.1:5090"
"#
        .to_string()
    }

    fn error_for(text: &str) -> String {
        match Config::from_toml_str(text, "test.toml") {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn office_hours_are_checked_with_the_key_and_the_fix() {
        let hours =
            "\n[hours.office]\nzone = \"Asia/Shanghai\"\nweekly = [\"mon-fri 09:00-17:00\"]\n";
        let line = |extra: &str| format!("{}{extra}\n{hours}", base());
        let ok = line("hours = \"office\"\nafter_hours = { prompt = \"zh\" }");
        let config = Config::from_toml_str(&ok, "t").unwrap();
        assert_eq!(config.office_hours["office"].zone(), "Asia/Shanghai");
        for (extra, expected) in [
            (
                "hours = \"night\"\nafter_hours = { prompt = \"zh\" }",
                "`lines[0].hours`: no [hours.night]",
            ),
            (
                "hours = \"office\"",
                "`lines[0].after_hours`: the line has office hours but no after-hours call",
            ),
            ("after_hours = { prompt = \"zh\" }", "but no office hours"),
            (
                "hours = \"office\"\nafter_hours = { prompt = \"closed\" }",
                "`lines[0].after_hours.prompt`: no [prompts.closed]",
            ),
            (
                "hours = \"office\"\nafter_hours = { prompt = \"zh\", operator = \"duty\" }",
                "`lines[0].after_hours.operator`",
            ),
        ] {
            let error = error_for(&line(extra));
            assert!(error.contains(expected), "{extra}: {error}");
        }
        let bad_zone = format!(
            "{}hours = \"office\"\nafter_hours = {{ prompt = \"zh\" }}\n[hours.office]\nzone = \"Mars/Olympus\"\n",
            base()
        );
        assert!(error_for(&bad_zone).contains("`hours.office`: unknown time zone"));
        let missing_calendar = format!(
            "{}hours = \"office\"\nafter_hours = {{ prompt = \"zh\" }}\n[hours.office]\nzone = \"Asia/Shanghai\"\ncalendars = [\"no/such/cn.txt\"]\n",
            base()
        );
        assert!(error_for(&missing_calendar).contains("calendar no/such/cn.txt"));
    }

    #[test]
    fn the_examples_commented_office_hours_are_valid_once_uncommented() {
        // Uncomment exactly the lines the example shows for office hours.
        let mut text = String::new();
        for line in EMBEDDED_EXAMPLE.lines() {
            let shown = line.strip_prefix("#   ").filter(|rest| {
                [
                    "hours",
                    "after_hours",
                    "[hours",
                    "zone",
                    "weekly",
                    "calendars",
                    "[prompts.after",
                    "file = \"audio/after",
                ]
                .iter()
                .any(|start| rest.starts_with(start))
            });
            text.push_str(shown.unwrap_or(line));
            text.push('\n');
        }
        // Paths in the example are relative to the repository root, as for `courtline serve`.
        std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).unwrap();
        let config = Config::from_toml_str(&text, "uncommented example").unwrap();
        assert_eq!(config.lines[0].hours, "office");
        assert!(config.office_hours["office"].calendar().span().is_some());
    }

    #[test]
    fn example_file_is_valid() {
        let config = Config::from_toml_str(EMBEDDED_EXAMPLE, "config/courtline.toml").unwrap();
        assert!(!config.lines.is_empty());
        assert_eq!(config.media.leading_silence_ms, 200);
        assert_eq!(config.rtp_port_range().unwrap(), 20000..=29999);
    }

    #[test]
    fn defaults_fill_missing_sections() {
        let config = Config::from_toml_str(&base(), "t").unwrap();
        assert_eq!(config.sip.listen.port(), 5060);
        assert_eq!(config.lines[0].ring_timeout_s, 30);
        assert_eq!(config.media.ringback.frequency_hz, 450.0);
        assert_eq!(config.media.rtp_timeout(), Some(Duration::from_secs(30)));
        assert_eq!(config.records.service.database, "var/courtline.db");
    }

    #[test]
    fn tls_defaults_to_the_next_port_and_public_address_parses() {
        let text = format!(
            "[sip]\nlisten = \"0.0.0.0:5060\"\ntls_certificate = \"c.pem\"\ntls_private_key = \"k.pem\"\npublic_address = \"203.0.113.7:5070\"\n{}",
            base()
        );
        let config = Config::from_toml_str(&text, "t").unwrap();
        let udp: SocketAddr = "0.0.0.0:5060".parse().unwrap();
        assert_eq!(
            config.tls_listen(udp),
            Some("0.0.0.0:5061".parse().unwrap())
        );
        assert_eq!(
            config.public_address(),
            Some(("203.0.113.7".parse().unwrap(), Some(5070)))
        );
        let plain = Config::from_toml_str(&base(), "t").unwrap();
        assert_eq!(plain.tls_listen(udp), None);
        assert!(plain.sip.tcp);
    }

    #[test]
    fn operator_accounts_must_name_a_configured_operator() {
        let ok = format!(
            "{}\n[[operator_accounts]]\nuri = \"sip:operator@127.0.0.1:5090\"\nusername = \"cl\"\npassword = \"pw\"\n",
            base()
        );
        let config = Config::from_toml_str(&ok, "t").unwrap();
        assert_eq!(
            config
                .operator_account("sip:operator@127.0.0.1:5090")
                .map(|a| a.username.as_str()),
            Some("cl")
        );
        let e = error_for(&ok.replace(
            "uri = \"sip:operator@127.0.0.1:5090\"",
            "uri = \"sip:other@h\"",
        ));
        assert!(e.contains("operator_accounts[0].uri"), "{e}");
    }

    #[test]
    fn registration_is_validated_and_maps_the_account_to_a_line() {
        let with = |extra: &str| format!("{}\n[registration]\n{extra}", base());
        let config = Config::from_toml_str(
            &with("registrar = \"sip:pbx.example\"\nusername = \"courtline\"\npassword = \"pw\"\nexpires_s = 600\nline = \"02112368\"\n"),
            "t",
        )
        .unwrap();
        assert_eq!(
            config.line_for("courtline").map(|l| l.number.as_str()),
            Some("02112368")
        );
        assert_eq!(
            config.line_for("02112368").map(|l| l.number.as_str()),
            Some("02112368")
        );
        assert!(config.line_for("other").is_none());
        for (extra, key) in [
            ("registrar = \"pbx.example\"\nusername = \"u\"\nexpires_s = 600\n", "registration.registrar"),
            ("registrar = \"sip:pbx.example\"\nexpires_s = 600\n", "registration.username"),
            ("registrar = \"sip:pbx.example\"\nusername = \"u\"\nexpires_s = 10\n", "registration.expires_s"),
            ("registrar = \"sip:pbx.example\"\nusername = \"u\"\nexpires_s = 600\nline = \"9\"\n", "registration.line"),
        ] {
            let e = error_for(&with(extra));
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn hunt_list_is_accepted() {
        let text = base().replace(
            "operator = \"sip:operator@127.0.0.1:5090\"",
            "operator = [\"sip:a@127.0.0.1:5090\", \"sip:b@127.0.0.1:5091\"]",
        );
        let config = Config::from_toml_str(&text, "t").unwrap();
        assert_eq!(config.lines[0].operator.items().len(), 2);
        assert_eq!(config.lines[0].hunt, HuntStrategy::Sequential);
    }

    #[test]
    fn hunt_strategy_and_per_target_ring_timeouts() {
        let text = base().replace(
            "operator = \"sip:operator@127.0.0.1:5090\"",
            "hunt = \"simultaneous\"\noperator = [{ uri = \"sip:a@127.0.0.1:5090\", ring_timeout_s = 15 }, \"sip:b@127.0.0.1:5091\"]",
        );
        let config = Config::from_toml_str(&text, "t").unwrap();
        let line = &config.lines[0];
        assert_eq!(line.hunt, HuntStrategy::Simultaneous);
        assert_eq!(
            line.operator.uris(),
            ["sip:a@127.0.0.1:5090", "sip:b@127.0.0.1:5091"]
        );
        let timeouts: Vec<_> = line
            .operator
            .items()
            .iter()
            .map(|t| t.ring_timeout_s())
            .collect();
        assert_eq!(timeouts, [Some(15), None]);
        for (bad, key) in [
            ("ring_timeout_s = 0", "lines[0].operator[0].ring_timeout_s"),
            (
                "ring_timeout_s = 900",
                "lines[0].operator[0].ring_timeout_s",
            ),
        ] {
            let e = error_for(&text.replace("ring_timeout_s = 15", bad));
            assert!(e.contains(key), "{bad}: {e}");
        }
        let e = error_for(&text.replace("hunt =", "failover_prompt = \"busy\"\nhunt ="));
        assert!(
            e.contains("lines[0].failover_prompt") && e.contains("[prompts.busy]"),
            "{e}"
        );
        let refer =
            Config::from_toml_str(&text.replace("hunt =", "connect = \"refer\"\nhunt ="), "t")
                .unwrap();
        assert_eq!(refer.lines[0].connect, ConnectMode::Refer);
        assert_eq!(line.connect, ConnectMode::Bridge);
        let e = error_for(&text.replace(
            "hunt =",
            "connect = \"refer\"\nanswer_mode = \"early_media\"\nhunt =",
        ));
        assert!(e.contains("lines[0].connect"), "{e}");
        let e = error_for(&text.replace("simultaneous", "everyone"));
        assert!(e.contains("lines[0].hunt"), "{e}");
        let e = error_for(&text.replace("uri = \"sip:a@127.0.0.1:5090\"", "uri = \"desk 3\""));
        assert!(e.contains("lines[0].operator[0]"), "{e}");
    }

    #[test]
    fn playlist_of_prompts_with_a_gap_is_accepted() {
        let text = base()
            .replace(
                "[prompts.zh]",
                "[prompts.en]\nfile = \"audio/three_rules_en.wav\"\nversion = \"2024-05\"\n\n[prompts.zh]",
            )
            .replace("prompt = \"zh\"", "prompt = [\"zh\", \"en\"]\nprompt_gap_ms = 400");
        let config = Config::from_toml_str(&text, "t").unwrap();
        assert_eq!(config.lines[0].prompt.items(), ["zh", "en"]);
        assert_eq!(config.lines[0].prompt_gap_ms, 400);
        assert_eq!(config.prompts["en"].version, "2024-05");
        assert_eq!(config.prompts["zh"].version, "");
        let single = Config::from_toml_str(&base(), "t").unwrap();
        assert_eq!(single.lines[0].prompt.items(), ["zh"]);
        assert_eq!(single.lines[0].prompt_gap_ms, DEFAULT_PROMPT_GAP_MS);
    }

    #[test]
    fn playlist_problems_name_the_entry() {
        let e = error_for(&base().replace("prompt = \"zh\"", "prompt = [\"zh\", \"en\"]"));
        assert!(e.contains("lines[0].prompt[1]"), "{e}");
        assert!(e.contains("[prompts.en]"), "{e}");
        let e = error_for(&base().replace("prompt = \"zh\"", "prompt = []"));
        assert!(e.contains("lines[0].prompt") && e.contains("empty"), "{e}");
        for gap in ["30", "10020"] {
            let e = error_for(&base().replace(
                "prompt = \"zh\"",
                &format!("prompt = \"zh\"\nprompt_gap_ms = {gap}"),
            ));
            assert!(e.contains("lines[0].prompt_gap_ms"), "{e}");
        }
    }

    #[test]
    fn unknown_prompt_names_key_and_fix() {
        let e = error_for(&base().replace("prompt = \"zh\"", "prompt = \"en\""));
        assert!(e.contains("test.toml"), "{e}");
        assert!(e.contains("lines[0].prompt"), "{e}");
        assert!(e.contains("use one of: zh"), "{e}");
    }

    #[test]
    fn a_missing_key_in_a_list_entry_is_named_and_not_blamed_on_the_environment() {
        let text = base().replace("prompt = \"zh\"\n", "");
        let e = error_for(&text);
        assert!(e.contains("`lines[0].prompt`: is missing"), "{e}");
        assert!(!e.contains("COURTLINE_"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let cases = [
            ("[sip]\nmax_calls = 0\n", "sip.max_calls"),
            ("[sip]\nt1_ms = 10\n", "sip.t1_ms"),
            (
                "[sip]\ntls_certificate = \"a.pem\"\n",
                "sip.tls_certificate",
            ),
            ("[sip]\ntls_listen = \"5061\"\n", "sip.tls_listen"),
            (
                "[sip]\npublic_address = \"my.host\"\n",
                "sip.public_address",
            ),
            ("[media]\nrtp_ports = \"30000-20000\"\n", "media.rtp_ports"),
            ("[media]\nrtp_ports = \"20000-20000\"\n", "media.rtp_ports"),
            (
                "[media]\nadvertise_address = \"not-an-ip\"\n",
                "media.advertise_address",
            ),
            (
                "[media.ringback]\nfrequency_hz = 20000.0\n",
                "media.ringback",
            ),
            (
                "[records]\nendpoint = \"127.0.0.1:50051\"\n",
                "records.endpoint",
            ),
            (
                "[reports]\noperator_keys = \"*X\"\n",
                "reports.operator_keys",
            ),
            ("[reports]\nkey_timeout_ms = 0\n", "reports.key_timeout_ms"),
            ("[media]\nthreads = 0\n", "media.threads"),
        ];
        for (extra, key) in cases {
            let e = error_for(&format!("{extra}{}", base()));
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn media_threads_are_a_count_or_auto_and_absurd_counts_are_refused() {
        use media::MediaThreads;
        let with = |value: &str| format!("[media]\nthreads = {value}\n{}", base());
        let threads = |text: &str| Config::from_toml_str(text, "t").unwrap().media.threads;
        assert_eq!(threads(&base()), MediaThreads::Count(1));
        assert_eq!(threads(&with("2")), MediaThreads::Count(2));
        assert_eq!(threads(&with("64")), MediaThreads::Count(64));
        assert_eq!(threads(&with("\"auto\"")), MediaThreads::Auto);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(MediaThreads::Auto.resolve(), cores.min(64));
        for (value, needles) in [
            ("0", &["is 0", "threads = 2", "\"auto\""][..]),
            (
                "65",
                &["65 is more than 64", "up to the machine's cores"][..],
            ),
            (
                "-1",
                &["-1 is out of range", "whole number of threads (1-64)"][..],
            ),
            ("99999999999", &["out of range"][..]),
            ("\"2\"", &["\"2\" is a string", "without quotes"][..]),
            ("\"many\"", &["\"many\"", "or \"auto\""][..]),
            ("2.5", &["2.5 is a decimal number"][..]),
        ] {
            let e = error_for(&with(value));
            assert!(
                e.contains("test.toml") && e.contains("`media.threads`"),
                "{value}: {e}"
            );
            for needle in needles {
                assert!(e.contains(needle), "{value}: {needle}: {e}");
            }
        }
    }

    #[test]
    fn bad_operator_and_duplicates_are_refused() {
        let e = error_for(&base().replace("sip:operator@127.0.0.1:5090", "operator at desk 3"));
        assert!(e.contains("lines[0].operator"), "{e}");
        let twice = format!(
            "{}\n[[lines]]\nnumber = \"02112368\"\ncourt = \"x\"\nprompt = \"zh\"\noperator = \"sip:o@127.0.0.1\"\n",
            base()
        );
        assert!(error_for(&twice).contains("configured twice"));
        let e = error_for(&base().replace("number = \"02112368\"", "number = \"021 123\""));
        assert!(e.contains("lines[0].number"), "{e}");
    }

    #[test]
    fn records_defaults_derive_from_the_database() {
        let config = Config::from_toml_str(&base(), "t").unwrap();
        let records = &config.records;
        assert_eq!(records.spool_path(), PathBuf::from("var/spool"));
        assert_eq!(
            records.service.signing_key_path(),
            PathBuf::from("var/records-signing.key")
        );
        assert_eq!(records.on_spool_failure, SpoolFailurePolicy::Reject);
        assert_eq!(records.service.retention_days, 180);
        let text = format!(
            "[records]\non_spool_failure = \"continue\"\nnode_id = \"sb-1\"\n[records.service]\ndatabase = \"postgres://u:p@h/db\"\nhash_algorithm = \"sm3\"\nembedded = false\n{}",
            base()
        );
        let config = Config::from_toml_str(&text, "t").unwrap();
        let records = &config.records;
        assert_eq!(records.on_spool_failure, SpoolFailurePolicy::Continue);
        assert_eq!(records.service.hash_algorithm, HashAlgorithm::Sm3);
        assert_eq!(records.spool_path(), PathBuf::from("var/spool"));
        assert_eq!(records.service.state_dir(), PathBuf::from("var"));
        let settings = records.service.settings();
        assert_eq!(settings.checkpoints.every_events, 1000);
        assert_eq!(settings.tls, None);
        assert_eq!(settings.client_certificates, None);
    }

    #[test]
    fn client_certificate_roles_reach_the_service_settings() {
        use crate::contract::pb::Role;
        let text = format!(
            "[records.service]\ntls_cert_file = \"s.pem\"\ntls_key_file = \"s.key\"\n\
             tls_client_ca_file = \"clients.pem\"\n\
             [[records.service.client_certificates]]\nidentity = \"sb-1.court.example\"\nrole = \"switchboard\"\n\
             [[records.service.client_certificates]]\nidentity = \"合规科\"\nrole = \"Compliance\"\n{}",
            base()
        );
        let config = Config::from_toml_str(&text, "t").unwrap();
        let clients = config
            .records
            .service
            .settings()
            .client_certificates
            .unwrap();
        assert_eq!(clients.ca_file, PathBuf::from("clients.pem"));
        assert_eq!(
            clients.roles.get("sb-1.court.example"),
            Some(&Role::Switchboard)
        );
        assert_eq!(clients.roles.get("合规科"), Some(&Role::Compliance));
        assert_eq!(clients.roles.len(), 2);
        // The console serves HTTPS with the same files, client CA included.
        let records = &config.records;
        let (_, web) = records.web.settings(records.service.web_tls()).unwrap();
        assert_eq!(
            web.tls,
            Some(WebTls {
                cert_file: PathBuf::from("s.pem"),
                key_file: PathBuf::from("s.key"),
                client_ca_file: Some(PathBuf::from("clients.pem")),
            })
        );
        assert!(web.secure_cookies());
        let plain = Config::from_toml_str(&base(), "t").unwrap().records;
        let (_, web) = plain.web.settings(plain.service.web_tls()).unwrap();
        assert_eq!(web.tls, None);
        assert!(!web.secure_cookies());
    }

    #[test]
    fn bad_records_values_are_refused_with_their_key() {
        let cases = [
            (
                "[records.service]\nretention_days = 30\n",
                "records.service.retention_days",
            ),
            (
                "[records.service]\ncheckpoint_every_events = 0\n",
                "records.service.checkpoint_every_events",
            ),
            (
                "[records.service]\ncheckpoint_every_minutes = 0\n",
                "records.service.checkpoint_every_minutes",
            ),
            (
                "[records.service]\ntls_cert_file = \"c.pem\"\n",
                "records.service.tls_cert_file",
            ),
            (
                "[records.service]\ndatabase = \"\"\n",
                "records.service.database",
            ),
            (
                "[records]\nendpoint = \"https://r:1\"\n",
                "records.tls_ca_file",
            ),
            (
                "[records]\ntls_cert_file = \"c.pem\"\n",
                "records.tls_cert_file",
            ),
            (
                "[records.service]\ntls_client_ca_file = \"ca.pem\"\n",
                "records.service.tls_client_ca_file",
            ),
            (
                "[[records.service.client_certificates]]\nidentity = \"a\"\nrole = \"admin\"\n",
                "records.service.client_certificates",
            ),
            (
                "[records.service]\ntls_cert_file = \"c\"\ntls_key_file = \"k\"\ntls_client_ca_file = \"ca\"\n\
                 [[records.service.client_certificates]]\nidentity = \"a\"\nrole = \"root\"\n",
                "records.service.client_certificates[0].role",
            ),
            (
                "[records.service]\ntls_cert_file = \"c\"\ntls_key_file = \"k\"\ntls_client_ca_file = \"ca\"\n\
                 [[records.service.client_certificates]]\nidentity = \"a\"\nrole = \"admin\"\n\
                 [[records.service.client_certificates]]\nidentity = \"a\"\nrole = \"auditor\"\n",
                "records.service.client_certificates[1].identity",
            ),
            (
                "[records]\non_spool_failure = \"ignore\"\n",
                "on_spool_failure",
            ),
            (
                "[records.service]\nhash_algorithm = \"md5\"\n",
                "hash_algorithm",
            ),
        ];
        for (extra, key) in cases {
            let e = error_for(&format!("{extra}{}", base()));
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn answer_mode_defaults_to_answer_and_takes_early_media() {
        let config = Config::from_toml_str(&base(), "t").unwrap();
        assert_eq!(config.lines[0].answer_mode, AnswerMode::Answer);
        let text = format!("{}answer_mode = \"early_media\"\n", base());
        let config = Config::from_toml_str(&text, "t").unwrap();
        assert_eq!(config.lines[0].answer_mode, AnswerMode::EarlyMedia);
        let e = error_for(&format!("{}answer_mode = \"early\"\n", base()));
        assert!(
            e.contains("answer_mode") || e.contains("early_media"),
            "{e}"
        );
    }

    #[test]
    fn whisper_history_is_off_unless_a_line_turns_it_on() {
        let config = Config::from_toml_str(&base(), "t").unwrap();
        assert!(!config.lines[0].whisper_history);
        let text = format!("{}whisper_history = true\n", base());
        let config = Config::from_toml_str(&text, "t").unwrap();
        assert!(config.lines[0].whisper_history);
    }

    #[test]
    fn records_endpoint_follows_the_embedded_service_unless_set() {
        let with = |extra: &str| {
            Config::from_toml_str(&format!("{extra}{}", base()), "t")
                .unwrap()
                .records
                .endpoint
        };
        assert_eq!(with(""), "http://127.0.0.1:50051");
        assert_eq!(
            with("[records]\nendpoint = \"\"\n[records.service]\nlisten = \"127.0.0.2:50100\"\n"),
            "http://127.0.0.2:50100",
            "empty is the same as absent"
        );
        assert_eq!(
            with("[records.service]\nlisten = \"0.0.0.0:50100\"\n"),
            "http://127.0.0.1:50100"
        );
        assert_eq!(
            with("[records.service]\nlisten = \"[::]:50100\"\n"),
            "http://[::1]:50100"
        );
        assert_eq!(
            with("[records.service]\nlisten = \"192.0.2.5:50100\"\ntls_cert_file = \"c\"\ntls_key_file = \"k\"\n"),
            "https://192.0.2.5:50100"
        );
        // An explicit endpoint, or a service that runs elsewhere, is left alone.
        assert_eq!(
            with("[records]\nendpoint = \"http://10.0.0.1:1\"\n[records.service]\nlisten = \"0.0.0.0:50100\"\n"),
            "http://10.0.0.1:1"
        );
        assert_eq!(
            with("[records.service]\nembedded = false\nlisten = \"0.0.0.0:50100\"\n"),
            "http://127.0.0.1:50051"
        );
    }

    #[test]
    fn several_records_endpoints_replace_the_one_endpoint() {
        let remote =
            "[records]\nendpoints = [\"http://10.0.0.5:50051\", \"http://10.0.0.6:50051\"]\n\
                      [records.service]\nembedded = false\n";
        let config = Config::from_toml_str(&format!("{remote}{}", base()), "t").unwrap();
        assert_eq!(
            config.records.delivery_endpoints(),
            ["http://10.0.0.5:50051", "http://10.0.0.6:50051"]
        );
        // The CLI asks the first.
        assert_eq!(config.records.endpoint, "http://10.0.0.5:50051");
        // One endpoint keeps working as it did.
        let one = "[records]\nendpoint = \"http://10.0.0.5:50051\"\n[records.service]\nembedded = false\n";
        let config = Config::from_toml_str(&format!("{one}{}", base()), "t").unwrap();
        assert_eq!(
            config.records.delivery_endpoints(),
            ["http://10.0.0.5:50051"]
        );
        for (text, problem) in [
            (
                "[records]\nendpoint = \"http://10.0.0.5:1\"\nendpoints = [\"http://10.0.0.6:1\"]\n[records.service]\nembedded = false\n",
                "together with",
            ),
            (
                "[records]\nendpoints = [\"10.0.0.6:1\"]\n[records.service]\nembedded = false\n",
                "not an http(s) URL",
            ),
            ("[records]\nendpoints = [\"http://10.0.0.6:1\"]\n", "embedded"),
        ] {
            let e = error_for(&format!("{text}{}", base()));
            assert!(e.contains("records.endpoints") && e.contains(problem), "{e}");
        }
    }

    #[test]
    fn trusted_proxies_are_networks() {
        let text = format!(
            "[sip]\ntrusted_proxies = [\"127.0.0.1\", \"10.9.0.0/24\"]\n{}",
            base()
        );
        let config = Config::from_toml_str(&text, "t").unwrap();
        assert_eq!(config.sip.trusted_proxies.len(), 2);
        let e = error_for(&format!(
            "[sip]\ntrusted_proxies = [\"kamailio\"]\n{}",
            base()
        ));
        assert!(
            e.contains("sip.trusted_proxies") && e.contains("kamailio"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_name_the_key_the_value_and_what_is_accepted() {
        let cases = [
            (
                "[sip]\nmax_calls = \"500\"\n".to_string(),
                &["`sip.max_calls`", "\"500\"", "whole number"][..],
            ),
            (
                "[sip]\ntcp = \"yes\"\n".to_string(),
                &["`sip.tcp`", "\"yes\"", "true or false"][..],
            ),
            (
                "[sip]\nlisten = \"0.0.0.0\"\n".to_string(),
                &["`sip.listen`", "\"0.0.0.0\"", "IP address and port"][..],
            ),
            (
                format!("{}answer_mode = \"early-media\"\n", base()),
                &[
                    "`lines[0].answer_mode`",
                    "\"early-media\"",
                    "\"answer\" or \"early_media\"",
                ][..],
            ),
            (
                "[media.ringback]\nfrequency_hz = \"450\"\n".to_string(),
                &["`media.ringback.frequency_hz`", "\"450\"", "a number"][..],
            ),
            (
                "[sip]\nlisten_port = 5060\n".to_string(),
                &["`sip.listen_port`", "not a setting", "max_calls"][..],
            ),
        ];
        for (extra, needles) in cases {
            let text = if extra.contains("[[lines]]") {
                extra
            } else {
                format!("{extra}{}", base())
            };
            let e = error_for(&text);
            for needle in needles {
                assert!(e.contains(needle), "{needle}: {e}");
            }
            assert!(!e.contains("for key"), "library wording: {e}");
            println!("{e}");
        }
    }

    #[test]
    fn rtp_timeout_zero_turns_the_check_off() {
        let text = format!("[media]\nrtp_timeout_s = 0\n{}", base());
        let config = Config::from_toml_str(&text, "t").unwrap();
        assert_eq!(config.media.rtp_timeout(), None);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = error_for(&format!("[sip]\nlisten_port = 5060\n{}", base()));
        assert!(e.contains("listen_port"), "{e}");
    }

    #[test]
    fn no_lines_is_an_error() {
        let e = error_for("[prompts.zh]\nfile = \"a.wav\"\n");
        assert!(e.contains("`lines`"), "{e}");
    }
}
