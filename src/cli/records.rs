//! `courtline records ...`: run the records service, verify it, and administer it.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::calls::ServiceArgs;
use crate::config::Config;
use crate::records::auth::{parse_role, role_name};
use crate::records::export::verify_export;
use crate::records::pb::{
    AddTokenRequest, ListAccessRequest, ListGapsRequest, ListTokensRequest, PurgeRequest,
    RevokeTokenRequest, Role, VerifyRequest, VerifyResponse,
};
use crate::records::query::{parse_time, Clock};
use crate::records::signing::{parse_public_key, public_key_of_key_file};
use crate::records::store::SqlStore;

/// `courtline records ...`
#[derive(Debug, Subcommand)]
pub enum RecordsCommand {
    /// Run the records service alone (gRPC on [records.service] listen).
    Serve,
    /// Recompute the hash chain, checkpoints and call rows; name everything wrong (auditor).
    Verify(VerifyArgs),
    /// Check an export file on its own: row hashes, count, signature.
    VerifyExport(VerifyExportArgs),
    /// Sequence numbers that never arrived from a switchboard (auditor).
    Gaps(ServiceArgs),
    /// Bearer tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Who queried, exported, flagged and verified (auditor).
    AccessLog(AccessLogArgs),
    /// Purge calls past [records.service] retention_days; flagged calls stay (admin).
    Purge(PurgeArgs),
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
    /// The export file (CSV or JSON Lines).
    pub file: PathBuf,
    /// The trusted signing public key (hex or file); without it the key in the file is shown.
    #[arg(long)]
    pub public_key: Option<String>,
    /// Times in UTC instead of local time.
    #[arg(long)]
    pub utc: bool,
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
    /// switchboard, compliance, auditor or admin.
    #[arg(long)]
    pub role: String,
    /// Connection.
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
        RecordsCommand::Gaps(service) => gaps(config_path, service).await,
        RecordsCommand::Token(command) => token(config_path, command).await,
        RecordsCommand::AccessLog(args) => access_log(config_path, args).await,
        RecordsCommand::Purge(args) => purge(config_path, args).await,
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
    let store = SqlStore::open(&database).await?;
    let report = crate::records::verify::verify(&store, &[trusted]).await;
    crate::records::store::Store::close(&store).await;
    Ok(print_report(&report?))
}

fn verify_export_file(args: VerifyExportArgs) -> anyhow::Result<ExitCode> {
    let trusted = args
        .public_key
        .as_deref()
        .map(parse_public_key)
        .transpose()?;
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let check = verify_export(BufReader::new(file), trusted)
        .with_context(|| format!("{}", args.file.display()))?;
    if let Some(manifest) = &check.manifest {
        println!(
            "{}: {} rows exported by {} at {} (filters {}), chain head #{}",
            args.file.display(),
            check.rows,
            manifest.exported_by,
            Clock::from_utc_flag(args.utc)
                .show(manifest.exported_at_ms, chrono::SecondsFormat::Secs),
            manifest.filter,
            manifest.chain_head_seq
        );
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
                    "--role {:?}: use switchboard, compliance, auditor or admin",
                    args.role
                )
            })?;
            let (mut client, _) = args.service.connect(config_path).await?;
            let response = client
                .add_token(AddTokenRequest {
                    name: args.name.clone(),
                    role: role as i32,
                })
                .await
                .map_err(status_error)?
                .into_inner();
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
