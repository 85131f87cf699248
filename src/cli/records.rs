//! `courtline records ...`: run the records service, verify it, and administer it.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::calls::ServiceArgs;
use crate::config::Config;
use crate::contract::pb::{
    AddTokenRequest, ConfigChange, ListAccessRequest, ListConfigChangesRequest, ListGapsRequest,
    ListTokensRequest, PurgeRequest, RevokeTokenRequest, Role, VerifyRequest, VerifyResponse,
};
use crate::records::auth::{parse_role, role_name};
use crate::records::export_check::{ExportKind, SNIFF_BYTES};
use crate::records::ledger::signing::{
    fingerprint, parse_public_key, public_key_of_key_file, KeyError, RecordsKey,
};
use crate::records::query::{parse_time, Clock};
use crate::records::service::add_token_offline;
use crate::records::store::SqlStore;

/// How long the offline token path waits to see whether the records service is up.
const SERVICE_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// `courtline records ...`
#[derive(Debug, Subcommand)]
pub enum RecordsCommand {
    /// Run the records service alone (gRPC on [records.service] listen).
    Serve,
    /// Recompute the hash chain, checkpoints and call rows; name everything wrong (auditor).
    Verify(VerifyArgs),
    /// Check an export on its own: a call export, a report export or a call archive
    /// with audio (row hashes, count, signature, every recording's SHA-256).
    VerifyExport(VerifyExportArgs),
    /// Print the records signing public key and its fingerprint, for auditors.
    PublicKey(PublicKeyArgs),
    /// Sequence numbers that never arrived from a switchboard (auditor).
    Gaps(ServiceArgs),
    /// Bearer tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Who queried, exported, flagged and verified (auditor).
    AccessLog(AccessLogArgs),
    /// Purge calls past [records.service] retention_days; flagged calls stay (admin).
    Purge(PurgeArgs),
    /// The configurations switchboards applied, start-ups and reloads: who asked, when,
    /// the configuration's SHA-256, and which lines and prompts changed (auditor,
    /// compliance, admin).
    ConfigHistory(ConfigHistoryArgs),
}

/// `records verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Verify this database directly (read-only; nothing is recorded) instead of asking the service.
    #[arg(long)]
    pub database: Option<String>,
    /// The trusted signing public key (64 hex digits, or a file holding them); offline
    /// default: the public half of [records.service] signing_key_file.
    #[arg(long)]
    pub public_key: Option<String>,
    /// Connection, when asking the service.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// `records verify-export`.
#[derive(Debug, Args)]
pub struct VerifyExportArgs {
    /// The export: CSV or JSON Lines of calls, CSV or JSON of reports, or a tar
    /// archive from `calls export --with-audio`.
    pub file: PathBuf,
    /// The trusted signing public key (hex or file); without it the key in the file is shown.
    #[arg(long)]
    pub public_key: Option<String>,
    /// Times in UTC instead of local time.
    #[arg(long)]
    pub utc: bool,
}

/// `records public-key`.
#[derive(Debug, Args)]
pub struct PublicKeyArgs {
    /// The signing key file (default: [records.service] signing_key_file).
    #[arg(long)]
    pub signing_key_file: Option<PathBuf>,
}

/// `records token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token; its secret is printed once.
    Add(TokenAddArgs),
    /// List tokens (names, roles, who made them; never secrets).
    List(ServiceArgs),
    /// Revoke a token by name.
    Revoke(TokenRevokeArgs),
}

/// `records token add`.
#[derive(Debug, Args)]
pub struct TokenAddArgs {
    /// Unique name, shown in the access log (e.g. zhang.wei, switchboard-1).
    pub name: String,
    /// switchboard, compliance, auditor, admin or operator.
    #[arg(long)]
    pub role: String,
    /// Issue it directly in this database (SQLite path or URL, PostgreSQL URL) with the
    /// records service stopped: the recovery path when no admin token is left. Needs
    /// write access to the database and read access to the signing key (root).
    #[arg(long)]
    pub database: Option<String>,
    /// Connection, when asking the service.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// `records token revoke`.
#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    /// The token's name.
    pub name: String,
    /// Connection.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// `records access-log`.
#[derive(Debug, Args)]
pub struct AccessLogArgs {
    /// Entries at or after this time.
    #[arg(long)]
    pub since: Option<String>,
    /// Entries before this time.
    #[arg(long)]
    pub until: Option<String>,
    /// Only this token name.
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this operation (ListCalls, GetCall, ExportCalls, ...).
    #[arg(long)]
    pub operation: Option<String>,
    /// Only accesses naming this call id.
    #[arg(long = "call")]
    pub call_id: Option<String>,
    /// Only accesses whose stated reason contains this text.
    #[arg(long)]
    pub reason_contains: Option<String>,
    /// At most this many entries (newest first).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Times in UTC instead of local time.
    #[arg(long)]
    pub utc: bool,
    /// Connection.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// `records config-history`.
#[derive(Debug, Args)]
pub struct ConfigHistoryArgs {
    /// At most this many applied configurations (newest first).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Times in UTC instead of local time.
    #[arg(long)]
    pub utc: bool,
    /// Connection.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// `records purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Count what would be purged, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Connection.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// Runs a `records` subcommand.
pub async fn run(config_path: &Path, command: RecordsCommand) -> anyhow::Result<ExitCode> {
    match command {
        RecordsCommand::Serve => super::serve::records_until_signal(config_path).await,
        RecordsCommand::Verify(args) => verify(config_path, args).await,
        RecordsCommand::VerifyExport(args) => verify_export_file(args),
        RecordsCommand::PublicKey(args) => public_key(config_path, args),
        RecordsCommand::Gaps(service) => gaps(config_path, service).await,
        RecordsCommand::Token(command) => token(config_path, command).await,
        RecordsCommand::AccessLog(args) => access_log(config_path, args).await,
        RecordsCommand::Purge(args) => purge(config_path, args).await,
        RecordsCommand::ConfigHistory(args) => config_history(config_path, args).await,
    }
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("records service: {}", status.message())
}

fn print_report(report: &VerifyResponse) -> ExitCode {
    println!(
        "checked {} events, {} checkpoints, {} calls; {} events after the last checkpoint are chained but not yet signed",
        report.events_checked, report.checkpoints_checked, report.calls_checked, report.unsigned_tail
    );
    if report.findings.is_empty() {
        println!("OK: the records are intact");
        return ExitCode::SUCCESS;
    }
    for finding in &report.findings {
        println!("{:<10} {}", finding.kind.to_uppercase(), finding.detail);
    }
    if report.findings_omitted > 0 {
        println!("... and {} more findings", report.findings_omitted);
    }
    println!(
        "FAILED: {} problems",
        report.findings.len() as u64 + report.findings_omitted
    );
    ExitCode::FAILURE
}

async fn verify(config_path: &Path, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let Some(database) = args.database else {
        let (mut client, _) = args.service.connect(config_path).await?;
        let report = client
            .verify(VerifyRequest {})
            .await
            .map_err(status_error)?
            .into_inner();
        return Ok(print_report(&report));
    };
    let trusted = match &args.public_key {
        Some(key) => parse_public_key(key)?,
        None => {
            let config = Config::load(config_path)?;
            let key_file = config.records.service.signing_key_path();
            public_key_of_key_file(&key_file).with_context(|| {
                format!(
                    "no --public-key, and the signing key {} cannot be read to derive it",
                    key_file.display()
                )
            })?
        }
    };
    // The recordings' files are checked where the configuration keeps them, if it loads.
    let evidence = Config::load(config_path).ok().map(|config| {
        crate::records::evidence::Evidence::new(config.records.service.recordings_path(), false)
    });
    let store = SqlStore::open(&database).await?;
    let report = crate::records::verify::verify(&store, &[trusted], evidence.as_ref()).await;
    crate::records::store::Store::close(&store).await;
    Ok(print_report(&report?))
}

/// What kind of export `path` is, from its first bytes.
fn export_kind(path: &Path) -> anyhow::Result<ExportKind> {
    use std::io::Read;
    let mut start = Vec::with_capacity(SNIFF_BYTES);
    std::fs::File::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut start)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(ExportKind::of(&start))
}

fn verify_export_file(args: VerifyExportArgs) -> anyhow::Result<ExitCode> {
    let trusted = args
        .public_key
        .as_deref()
        .map(parse_public_key)
        .transpose()?;
    let kind = export_kind(&args.file)?;
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let check = kind
        .check(BufReader::new(file), trusted)
        .with_context(|| format!("{}", args.file.display()))?;
    if let Some(manifest) = &check.manifest {
        let what = kind.rows_name();
        println!(
            "{}: {} {what} exported by {} at {} (filters {}), chain head #{}",
            args.file.display(),
            check.rows,
            manifest.exported_by,
            Clock::from_utc_flag(args.utc)
                .show(manifest.exported_at_ms, chrono::SecondsFormat::Secs),
            manifest.filter,
            manifest.chain_head_seq
        );
        if kind == ExportKind::Archive {
            println!(
                "{} recordings listed in the signed manifest, each checked by length and SHA-256",
                check.recordings
            );
        }
    }
    if trusted.is_none() {
        println!(
            "signed by key {} (pass --public-key to require a specific key)",
            check.public_key
        );
    }
    if check.problems.is_empty() {
        println!("OK: the export is intact");
        return Ok(ExitCode::SUCCESS);
    }
    for problem in &check.problems {
        println!("PROBLEM   {problem}");
    }
    println!("FAILED: {} problems", check.problems.len());
    Ok(ExitCode::FAILURE)
}

/// `records public-key`: the public half of the signing key file, never the key itself.
fn public_key(config_path: &Path, args: PublicKeyArgs) -> anyhow::Result<ExitCode> {
    let path = match args.signing_key_file {
        Some(path) => path,
        None => Config::load(config_path)?
            .records
            .service
            .signing_key_path(),
    };
    let key = RecordsKey::load(&path).map_err(signing_key_error)?;
    // Comment lines are skipped where a public key is read, so this output can be
    // saved to a file or passed as it is to --public-key.
    println!("{}", key.public_key_hex());
    println!(
        "# fingerprint {}: public key of {}; auditors check exports with `courtline records verify-export FILE --public-key KEY`",
        fingerprint(&key.public_key().to_bytes()),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A signing key that cannot be loaded, with what to do about it.
fn signing_key_error(error: KeyError) -> anyhow::Error {
    let hint = match &error {
        KeyError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            "; the records service creates it on its first start ([records.service] signing_key_file, or --signing-key-file)"
        }
        KeyError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            "; only the user the records service runs as (or root) may read it"
        }
        _ => "",
    };
    anyhow::anyhow!("{error}{hint}")
}

/// `records token add --database`: issues the token straight into the database, as
/// the OS account running this, after making sure the records service is not up.
async fn add_token_directly(
    config_path: &Path,
    args: &TokenAddArgs,
    role: Role,
    database: &str,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let mut service = config.records.service.clone();
    service.database = database.to_owned();
    let listen = service.listen;
    let probe = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            std::net::SocketAddr::from(([127, 0, 0, 1], listen.port()))
        }
        ip if ip.is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, listen.port()))
        }
        _ => listen,
    };
    if let Ok(Ok(_)) =
        tokio::time::timeout(SERVICE_PROBE_TIMEOUT, tokio::net::TcpStream::connect(probe)).await
    {
        anyhow::bail!(
            "something is listening on {probe} ([records.service] listen): stop the records service \
             first — this writes the chain directly and a running service would not see it — \
             or, with an admin token, issue the token through the service (without --database)"
        );
    }
    let actor = account_name();
    let secret = add_token_offline(
        &service.settings(),
        &args.name,
        role,
        &actor,
        args.service.reason.as_deref().unwrap_or_default(),
    )
    .await
    .map_err(|error| match error {
        crate::records::service::ServiceError::Key(key) => signing_key_error(key),
        other => other.into(),
    })
    .with_context(|| format!("issuing a token directly in {database}"))?;
    eprintln!(
        "token {:?} ({}) issued directly in the database by {actor:?}, recorded on the chain \
         (access log: offline:{actor}); it is shown only now:",
        args.name,
        role_name(role)
    );
    println!("{secret}");
    Ok(ExitCode::SUCCESS)
}

/// The name of the account running this process (its real user id), for the offline
/// token path; `uid N` when the id has no name.
fn account_name() -> String {
    #[cfg(unix)]
    {
        // SAFETY: getuid cannot fail; getpwuid_r writes only into `entry` and `buffer`,
        // whose sizes it is given, and `result` points into them or is null.
        let uid = unsafe { libc::getuid() };
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buffer = vec![0 as libc::c_char; 4096];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let found = unsafe {
            libc::getpwuid_r(
                uid,
                &mut entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut result,
            )
        };
        if found == 0 && !result.is_null() && !entry.pw_name.is_null() {
            // SAFETY: pw_name points to a NUL-terminated string inside `buffer`.
            let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
            return name.to_string_lossy().into_owned();
        }
        format!("uid {uid}")
    }
    #[cfg(not(unix))]
    {
        std::env::var("USERNAME").unwrap_or_else(|_| "unknown".to_owned())
    }
}

/// The OS user's name, for the access log when no token names the caller: `$USER`,
/// `$LOGNAME`, or the account of this process.
pub fn os_user() -> String {
    ["USER", "LOGNAME"]
        .into_iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|name| !name.trim().is_empty())
        .unwrap_or_else(account_name)
}

async fn gaps(config_path: &Path, service: ServiceArgs) -> anyhow::Result<ExitCode> {
    let (mut client, _) = service.connect(config_path).await?;
    let response = client
        .list_gaps(ListGapsRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    for node in &response.nodes {
        println!(
            "node {}: {} events, highest sequence number {}",
            node.node_id, node.events, node.highest_seq
        );
    }
    if response.gaps.is_empty() {
        println!("no gaps");
        return Ok(ExitCode::SUCCESS);
    }
    for gap in &response.gaps {
        println!(
            "GAP       node {} sequence {}..={}",
            gap.node_id, gap.first, gap.last
        );
    }
    Ok(ExitCode::FAILURE)
}

async fn token(config_path: &Path, command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Add(args) => {
            let role = parse_role(&args.role).with_context(|| {
                format!(
                    "--role {:?}: use switchboard, compliance, auditor, admin or operator",
                    args.role
                )
            })?;
            if let Some(database) = &args.database {
                return add_token_directly(config_path, &args, role, database).await;
            }
            let (mut client, _) = args.service.connect(config_path).await?;
            let response = client
                .add_token(AddTokenRequest {
                    name: args.name.clone(),
                    role: role as i32,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if response.ended_loopback_rule {
                eprintln!(
                    "WARNING: this was the first token. From now on every client needs a token, \
                     on this machine too; keep this admin token safe and issue the others with it. \
                     If every admin token is lost: stop the records service and, as root on its \
                     machine, run `courtline records token add NAME --role admin --database URL`."
                );
            }
            eprintln!(
                "token {:?} ({}) issued; it is shown only now:",
                args.name,
                role_name(role)
            );
            println!("{}", response.token);
        }
        TokenCommand::List(service) => {
            let (mut client, _) = service.connect(config_path).await?;
            let response = client
                .list_tokens(ListTokensRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            for token in response.tokens {
                println!(
                    "{:<24} {:<12} created {} by {}{}",
                    token.name,
                    role_name(Role::try_from(token.role).unwrap_or_default()),
                    token.created_at_ms,
                    token.created_by,
                    if token.revoked_at_ms != 0 {
                        format!(", REVOKED {}", token.revoked_at_ms)
                    } else {
                        String::new()
                    }
                );
            }
        }
        TokenCommand::Revoke(args) => {
            let (mut client, _) = args.service.connect(config_path).await?;
            client
                .revoke_token(RevokeTokenRequest {
                    name: args.name.clone(),
                })
                .await
                .map_err(status_error)?;
            println!("token {:?} revoked", args.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn access_log(config_path: &Path, args: AccessLogArgs) -> anyhow::Result<ExitCode> {
    let time = |flag: &str, value: &Option<String>| -> anyhow::Result<i64> {
        match value {
            Some(text) => parse_time(text).map_err(|e| anyhow::anyhow!("--{flag}: {e}")),
            None => Ok(0),
        }
    };
    let (mut client, _) = args.service.connect(config_path).await?;
    let response = client
        .list_access(ListAccessRequest {
            since_ms: time("since", &args.since)?,
            until_ms: time("until", &args.until)?,
            actor: args.actor.clone().unwrap_or_default(),
            operation: args.operation.clone().unwrap_or_default(),
            call_id: args.call_id.clone().unwrap_or_default(),
            reason_contains: args.reason_contains.clone().unwrap_or_default(),
            page_size: args.limit,
            before_seq: 0,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let clock = Clock::from_utc_flag(args.utc);
    for entry in response.entries {
        println!(
            "#{:<8} {} {:<16} {:<10} {:<12} rows={:<6} {} reason={:?} peer={}",
            entry.seq,
            clock.show(entry.at_ms, chrono::SecondsFormat::Millis),
            entry.actor,
            entry.role,
            entry.operation,
            entry.rows,
            entry.parameters,
            entry.reason,
            entry.peer
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn config_history(config_path: &Path, args: ConfigHistoryArgs) -> anyhow::Result<ExitCode> {
    let (mut client, _) = args.service.connect(config_path).await?;
    let response = client
        .list_config_changes(ListConfigChangesRequest {
            page_size: args.limit,
            before_seq: 0,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let clock = Clock::from_utc_flag(args.utc);
    for change in &response.changes {
        for line in config_change_lines(change, &clock) {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One applied configuration as `records config-history` prints it: a heading line
/// (chain position, time, node, who asked, hash), then what changed, then the prompts.
fn config_change_lines(change: &ConfigChange, clock: &Clock) -> Vec<String> {
    let applied = change.applied.clone().unwrap_or_default();
    let asker = match (applied.peer.as_str(), applied.user.as_str()) {
        ("", _) => applied.requested_by.clone(),
        (peer, "") => format!("{} from {peer}", applied.requested_by),
        (peer, user) => format!("{} from {peer} (user {user})", applied.requested_by),
    };
    let mut lines = vec![format!(
        "#{:<8} {} node {} {asker}: sha256 {}{}",
        change.seq,
        clock.show(change.at_ms, chrono::SecondsFormat::Millis),
        change.node_id,
        applied.config_sha256,
        if applied.previous_sha256.is_empty() {
            " (baseline at start-up)".to_owned()
        } else {
            format!(" (was {})", applied.previous_sha256)
        }
    )];
    let lists = [
        ("lines added", &applied.lines_added),
        ("lines removed", &applied.lines_removed),
        ("lines changed", &applied.lines_changed),
        ("prompts added", &applied.prompts_added),
        ("prompts removed", &applied.prompts_removed),
        ("prompts changed", &applied.prompts_changed),
    ];
    for (what, items) in lists {
        if !items.is_empty() {
            lines.push(format!("          {what}: {}", items.join(", ")));
        }
    }
    for prompt in &applied.prompts {
        let from = if prompt.valid_from_ms == 0 {
            String::new()
        } else {
            format!(
                " from {}",
                clock.show(prompt.valid_from_ms, chrono::SecondsFormat::Secs)
            )
        };
        let label = if prompt.version.is_empty() {
            String::new()
        } else {
            format!(" version {}", prompt.version)
        };
        lines.push(format!(
            "          prompt {}{label}{from}: sha256 {}",
            prompt.id, prompt.sha256
        ));
    }
    lines
}

async fn purge(config_path: &Path, args: PurgeArgs) -> anyhow::Result<ExitCode> {
    let (mut client, _) = args.service.connect(config_path).await?;
    let response = client
        .purge(PurgeRequest {
            dry_run: args.dry_run,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    println!(
        "{}{} calls ({} events) received before {} are past retention; {} flagged calls kept on legal hold{}",
        if args.dry_run { "dry run: " } else { "" },
        response.calls_purged,
        response.events_purged,
        response.cutoff_ms,
        response.calls_on_hold,
        if response.seq != 0 {
            format!("; recorded as chain event #{}", response.seq)
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}
