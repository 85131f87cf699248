//! `courtline calls list`: query the records service.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::config::Config;
use crate::records::client::connect;
use crate::records::pb::{EndReason, ListCallsRequest};
use crate::records::query::{parse_end_reason, parse_time, write_calls, OutputFormat};

/// `courtline calls ...`
#[derive(Debug, Subcommand)]
pub enum CallsCommand {
    /// List call records, newest first.
    List(ListArgs),
}

/// Filters and output options for `calls list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Calls received at or after this time (RFC 3339, or YYYY-MM-DD in local time).
    #[arg(long)]
    pub since: Option<String>,
    /// Calls received before this time.
    #[arg(long)]
    pub until: Option<String>,
    /// Only this line number.
    #[arg(long)]
    pub line: Option<String>,
    /// Only callers whose number starts with this.
    #[arg(long)]
    pub caller: Option<String>,
    /// Only calls that ended this way (e.g. caller_hung_up_during_prompt).
    #[arg(long)]
    pub end_reason: Option<String>,
    /// At most this many records.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Records service endpoint (default: [records] endpoint from the config).
    #[arg(long)]
    pub endpoint: Option<String>,
}

/// Runs a `calls` subcommand.
pub async fn run(config_path: &Path, command: CallsCommand) -> anyhow::Result<ExitCode> {
    let CallsCommand::List(args) = command;
    let endpoint = match args.endpoint.clone() {
        Some(endpoint) => endpoint,
        None => Config::load(config_path)?.records.endpoint,
    };
    let time = |flag: &str, value: &Option<String>| -> anyhow::Result<i64> {
        match value {
            Some(text) => parse_time(text).map_err(|e| anyhow::anyhow!("--{flag}: {e}")),
            None => Ok(0),
        }
    };
    let end_reason = match &args.end_reason {
        Some(text) => parse_end_reason(text).ok_or_else(|| {
            anyhow::anyhow!("--end-reason: unknown reason {text:?} (e.g. caller_hung_up, no_answer, operator_busy)")
        })?,
        None => EndReason::Unspecified,
    };
    let mut request = ListCallsRequest {
        since_ms: time("since", &args.since)?,
        until_ms: time("until", &args.until)?,
        line_number: args.line.clone().unwrap_or_default(),
        caller_prefix: args.caller.clone().unwrap_or_default(),
        end_reason: end_reason as i32,
        page_size: u32::try_from(args.limit.min(1000)).unwrap_or(1000),
        page_token: String::new(),
    };
    let mut client = connect(&endpoint).await?;
    let mut records = Vec::new();
    while records.len() < args.limit {
        let page = client
            .list_calls(request.clone())
            .await
            .map_err(|status| {
                anyhow::anyhow!("records service at {endpoint}: {}", status.message())
            })?
            .into_inner();
        records.extend(page.records);
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    records.truncate(args.limit);
    let mut out = std::io::stdout().lock();
    write_calls(&records, args.format, &mut out)?;
    Ok(ExitCode::SUCCESS)
}
