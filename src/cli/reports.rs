//! `courtline reports open|list|get|update|submit|review|export`: the "three rules"
//! reports (防止干预司法"三个规定"记录报告), from the operator's desk to compliance review.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use super::calls::{
    export_output, header_algorithm, received_manifest, resolve_call_id, service_error, sort_order,
    time_flag, ServiceArgs,
};
use crate::contract::connect::RecordsClient;
use crate::contract::pb::export_reports_response::Item as ReportItem;
use crate::contract::pb::{
    ExportReportsRequest, GetReportRequest, ListReportsRequest, OpenReportRequest, Report,
    ReportFilter, ReportForm, ReportOpenedVia, ReportResponse, ReviewReportRequest, SortOrder,
    SubmitReportRequest, UpdateReportRequest,
};
use crate::records::query::{parse_time, Clock, CsvDialect, OutputFormat};
use crate::records::report_export::{ReportExportWriter, ReportFileFormat};
use crate::records::reports::format::{write_report_detail, write_reports};
use crate::records::reports::workflow::{parse_handling, parse_kind, parse_status, status_name};

/// `courtline reports ...`
#[derive(Debug, Subcommand)]
pub enum ReportsCommand {
    /// Open a report on a call (the call goes on legal hold); the form may be filled in at once.
    Open(OpenArgs),
    /// List reports (newest first unless --oldest-first).
    List(ListArgs),
    /// One report with its versions.
    Get(GetArgs),
    /// Change a draft's form: a new version with the fields given, the rest as they were.
    Update(UpdateArgs),
    /// Hand a draft in for review.
    Submit(IdArgs),
    /// Review a submitted report (compliance; not your own).
    Review(ReviewArgs),
    /// Write every matching report to a file (CSV or JSON) signed by the records
    /// service; `records verify-export` checks it.
    Export(ExportArgs),
}

/// The form's fields; each left out stays as it is.
#[derive(Debug, Args, Default)]
pub struct FormArgs {
    /// Your name as the staff member who took the call (填报人).
    #[arg(long)]
    pub staff_name: Option<String>,
    /// Your staff id (工号).
    #[arg(long)]
    pub staff_id: Option<String>,
    /// When it happened (RFC 3339 or YYYY-MM-DD; default: the call's time).
    #[arg(long)]
    pub occurred_at: Option<String>,
    /// The caller's name as they stated it.
    #[arg(long)]
    pub caller_name: Option<String>,
    /// The caller's organisation (单位).
    #[arg(long)]
    pub caller_organisation: Option<String>,
    /// The caller's relationship to the case (与案件关系).
    #[arg(long)]
    pub caller_relationship: Option<String>,
    /// The caller's phone.
    #[arg(long)]
    pub caller_phone: Option<String>,
    /// A case number, e.g. "(2024)沪01民初123号"; repeatable; replaces the list.
    #[arg(long = "case-number")]
    pub case_numbers: Vec<String>,
    /// inquiry (违规过问), interference (干预插手), intercession (说情打招呼), probing (打探案情), other.
    #[arg(long)]
    pub kind: Option<String>,
    /// What the caller asked for (请托事项).
    #[arg(long)]
    pub asked: Option<String>,
    /// refused, explained_rules or escalated.
    #[arg(long)]
    pub handling: Option<String>,
    /// How it was handled, in your words.
    #[arg(long)]
    pub handling_note: Option<String>,
}

impl FormArgs {
    /// `form` with the fields given here replaced.
    fn apply(&self, mut form: ReportForm) -> anyhow::Result<ReportForm> {
        for (value, field) in [
            (&self.staff_name, &mut form.staff_name),
            (&self.staff_id, &mut form.staff_id),
            (&self.caller_name, &mut form.caller_name),
            (&self.caller_organisation, &mut form.caller_organisation),
            (&self.caller_relationship, &mut form.caller_relationship),
            (&self.caller_phone, &mut form.caller_phone),
            (&self.asked, &mut form.asked),
            (&self.handling_note, &mut form.handling_note),
        ] {
            if let Some(value) = value {
                field.clone_from(value);
            }
        }
        if !self.case_numbers.is_empty() {
            form.case_numbers.clone_from(&self.case_numbers);
        }
        if let Some(text) = &self.occurred_at {
            form.occurred_at_ms =
                parse_time(text).map_err(|e| anyhow::anyhow!("--occurred-at: {e}"))?;
        }
        if let Some(text) = &self.kind {
            form.kind = parse_kind(text).with_context(|| {
                format!(
                    "--kind {text:?}: use inquiry, interference, intercession, probing or other"
                )
            })? as i32;
        }
        if let Some(text) = &self.handling {
            form.handling = parse_handling(text).with_context(|| {
                format!("--handling {text:?}: use refused, explained_rules or escalated")
            })? as i32;
        }
        Ok(form)
    }
}

/// `reports open`.
#[derive(Debug, Args)]
pub struct OpenArgs {
    /// courtline call id: the UUID, or its start as `calls list` shows it.
    pub call_id: String,
    /// First fill of the form.
    #[command(flatten)]
    pub form: FormArgs,
    /// Connection.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// Which reports: shared by `list` and `export`.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Reports opened at or after this time (RFC 3339, or YYYY-MM-DD in local time).
    #[arg(long)]
    pub since: Option<String>,
    /// Reports opened before this time.
    #[arg(long)]
    pub until: Option<String>,
    /// Only this court (exact name).
    #[arg(long)]
    pub court: Option<String>,
    /// Only this line.
    #[arg(long)]
    pub line: Option<String>,
    /// Only this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only draft, submitted or reviewed.
    #[arg(long)]
    pub status: Option<String>,
    /// Staff name, staff id or opener.
    #[arg(long)]
    pub staff: Option<String>,
    /// A case number contains this.
    #[arg(long)]
    pub case_number: Option<String>,
    /// Reports on this call (whole id).
    #[arg(long)]
    pub call: Option<String>,
    /// Oldest first instead of newest first.
    #[arg(long)]
    pub oldest_first: bool,
}

impl FilterArgs {
    fn filter(&self) -> anyhow::Result<ReportFilter> {
        let kind = match &self.kind {
            Some(text) => parse_kind(text).with_context(|| {
                format!(
                    "--kind {text:?}: use inquiry, interference, intercession, probing or other"
                )
            })? as i32,
            None => 0,
        };
        let status = match &self.status {
            Some(text) => parse_status(text)
                .with_context(|| format!("--status {text:?}: use draft, submitted or reviewed"))?
                as i32,
            None => 0,
        };
        Ok(ReportFilter {
            since_ms: time_flag("since", &self.since)?,
            until_ms: time_flag("until", &self.until)?,
            court_name: self.court.clone().unwrap_or_default(),
            line_number: self.line.clone().unwrap_or_default(),
            kind,
            status,
            staff: self.staff.clone().unwrap_or_default(),
            case_number_contains: self.case_number.clone().unwrap_or_default(),
            call_id: self.call.clone().unwrap_or_default(),
        })
    }

    fn sort(&self) -> SortOrder {
        sort_order(self.oldest_first)
    }
}

/// `reports list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Which reports.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Table times in UTC instead of local time.
    #[arg(long)]
    pub utc: bool,
    /// Connection.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// How `reports get` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum GetFormat {
    /// Every field in Chinese and English, the versions, the warnings.
    #[default]
    Text,
    /// The report and its versions as JSON.
    Json,
}

/// `reports get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The report id.
    pub report_id: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = GetFormat::Text)]
    pub format: GetFormat,
    /// Times in UTC instead of local time.
    #[arg(long)]
    pub utc: bool,
    /// Connection.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// `reports update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The report id.
    pub report_id: String,
    /// The fields to change.
    #[command(flatten)]
    pub form: FormArgs,
    /// Connection.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// A command on one report.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The report id.
    pub report_id: String,
    /// Connection.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// `reports review`.
#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// The report id.
    pub report_id: String,
    /// Your conclusion (审核意见).
    #[arg(long)]
    pub conclusion: String,
    /// Connection.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// Export file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormatArg {
    /// CSV with a header.
    Csv,
    /// One JSON object: the reports, then the signed manifest.
    Json,
}

/// `reports export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// File format.
    #[arg(long, value_enum, default_value_t = ExportFormatArg::Csv)]
    pub format: ExportFormatArg,
    /// Which reports.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Write here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// CSV for a double-click in Excel (byte-order mark, numbers kept as text).
    #[arg(long)]
    pub excel: bool,
    /// Connection.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// Runs a `reports` subcommand.
pub async fn run(config_path: &Path, command: ReportsCommand) -> anyhow::Result<ExitCode> {
    match command {
        ReportsCommand::Open(args) => {
            let form = args.form.apply(ReportForm::default())?;
            let (mut client, endpoint) = args.service.connect(config_path).await?;
            let call_id = resolve_call_id(&mut client, &endpoint, &args.call_id).await?;
            let response = client
                .open_report(OpenReportRequest {
                    call_id,
                    opened_via: ReportOpenedVia::Cli as i32,
                    form: Some(form),
                })
                .await
                .map_err(|status| service_error(&endpoint, status))?
                .into_inner();
            changed(response, "opened")
        }
        ReportsCommand::List(args) => {
            let (mut client, endpoint) = args.service.connect(config_path).await?;
            let reports = all_reports(&mut client, &endpoint, &args.filter).await?;
            let mut out = std::io::stdout().lock();
            write_reports(
                &reports,
                args.format,
                Clock::from_utc_flag(args.utc),
                CsvDialect::Plain,
                &mut out,
            )?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        ReportsCommand::Get(args) => {
            let (mut client, endpoint) = args.service.connect(config_path).await?;
            let response = client
                .get_report(GetReportRequest {
                    report_id: args.report_id.clone(),
                })
                .await
                .map_err(|status| service_error(&endpoint, status))?
                .into_inner();
            let report = response
                .report
                .context("the records service answered without the report")?;
            let mut out = std::io::stdout().lock();
            match args.format {
                GetFormat::Text => write_report_detail(
                    &report,
                    &response.versions,
                    &response.warnings,
                    Clock::from_utc_flag(args.utc),
                    &mut out,
                )?,
                GetFormat::Json => {
                    let mut reports = vec![report];
                    reports.extend(response.versions);
                    let mut json = Vec::new();
                    write_reports(
                        &reports,
                        OutputFormat::Json,
                        Clock::Utc,
                        CsvDialect::Plain,
                        &mut json,
                    )?;
                    let mut lines: Vec<serde_json::Value> = serde_json::from_slice(&json)?;
                    let report = lines.remove(0);
                    serde_json::to_writer_pretty(
                        &mut out,
                        &serde_json::json!({
                            "report": report,
                            "versions": lines,
                            "warnings": response.warnings,
                        }),
                    )?;
                    writeln!(out)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ReportsCommand::Update(args) => {
            let (mut client, endpoint) = args.service.connect(config_path).await?;
            let current = current(&mut client, &endpoint, &args.report_id).await?;
            let form = args.form.apply(current.form.clone().unwrap_or_default())?;
            let response = client
                .update_report(UpdateReportRequest {
                    report_id: args.report_id,
                    version: current.version,
                    form: Some(form),
                })
                .await
                .map_err(|status| service_error(&endpoint, status))?
                .into_inner();
            changed(response, "updated")
        }
        ReportsCommand::Submit(args) => {
            let (mut client, endpoint) = args.service.connect(config_path).await?;
            let current = current(&mut client, &endpoint, &args.report_id).await?;
            let response = client
                .submit_report(SubmitReportRequest {
                    report_id: args.report_id,
                    version: current.version,
                })
                .await
                .map_err(|status| service_error(&endpoint, status))?
                .into_inner();
            changed(response, "submitted")
        }
        ReportsCommand::Review(args) => {
            let (mut client, endpoint) = args.service.connect(config_path).await?;
            let current = current(&mut client, &endpoint, &args.report_id).await?;
            let response = client
                .review_report(ReviewReportRequest {
                    report_id: args.report_id,
                    version: current.version,
                    conclusion: args.conclusion,
                })
                .await
                .map_err(|status| service_error(&endpoint, status))?
                .into_inner();
            changed(response, "reviewed")
        }
        ReportsCommand::Export(args) => export(config_path, args).await,
    }
}

/// `reports export`: the reports as the service streams them, each with its row hash,
/// and the manifest it signed at the end.
async fn export(config_path: &Path, args: ExportArgs) -> anyhow::Result<ExitCode> {
    if args.excel && args.format != ExportFormatArg::Csv {
        anyhow::bail!("--excel is for CSV; leave it out with --format json");
    }
    let format = match args.format {
        ExportFormatArg::Csv => ReportFileFormat::Csv,
        ExportFormatArg::Json => ReportFileFormat::Json,
    };
    let dialect = if args.excel {
        CsvDialect::Excel
    } else {
        CsvDialect::Plain
    };
    let request = ExportReportsRequest {
        filter: Some(args.filter.filter()?),
        sort: args.filter.sort() as i32,
        file_format: format.name().to_owned(),
    };
    let (mut client, endpoint) = args.service.connect(config_path).await?;
    let mut stream = client
        .export_reports(request)
        .await
        .map_err(|status| service_error(&endpoint, status))?
        .into_inner();
    let mut out = Some(export_output(args.output.as_deref())?);
    let mut writer: Option<ReportExportWriter<Box<dyn Write>>> = None;
    while let Some(message) = stream
        .message()
        .await
        .map_err(|status| service_error(&endpoint, status))?
    {
        match (message.item, writer.as_mut(), out.take()) {
            (Some(ReportItem::Header(header)), None, Some(out)) => {
                let algorithm = header_algorithm(&header)?;
                writer = Some(ReportExportWriter::new(format, dialect, algorithm, out)?);
            }
            (Some(ReportItem::Report(report)), Some(writer), _) => writer.write(&report)?,
            (Some(ReportItem::Manifest(manifest)), Some(_), _) => {
                let Some(writer) = writer.take() else { break };
                let count = received_manifest(&manifest, writer.rows(), "reports")?.count;
                writer.finish(&manifest)?;
                eprintln!(
                    "exported {count} reports; manifest signed by key {} (check with `courtline records verify-export`)",
                    manifest.public_key
                );
                return Ok(ExitCode::SUCCESS);
            }
            _ => anyhow::bail!("the report export stream is out of order (no header first)"),
        }
    }
    anyhow::bail!("the report export stream ended without a manifest: the file is incomplete")
}

/// The report as it stands (its version is what the next change builds on).
async fn current(
    client: &mut RecordsClient,
    endpoint: &str,
    report_id: &str,
) -> anyhow::Result<Report> {
    client
        .get_report(GetReportRequest {
            report_id: report_id.to_owned(),
        })
        .await
        .map_err(|status| service_error(endpoint, status))?
        .into_inner()
        .report
        .context("the records service answered without the report")
}

/// Every report matching `filter`, page after page.
async fn all_reports(
    client: &mut RecordsClient,
    endpoint: &str,
    filter: &FilterArgs,
) -> anyhow::Result<Vec<Report>> {
    let mut request = ListReportsRequest {
        filter: Some(filter.filter()?),
        sort: filter.sort() as i32,
        page_size: 1000,
        page_token: String::new(),
    };
    let mut reports = Vec::new();
    loop {
        let page = client
            .list_reports(request.clone())
            .await
            .map_err(|status| service_error(endpoint, status))?
            .into_inner();
        reports.extend(page.reports);
        if page.next_page_token.is_empty() {
            return Ok(reports);
        }
        request.page_token = page.next_page_token;
    }
}

/// Prints what a change did: the report id, version, status and the form's warnings.
fn changed(response: ReportResponse, what: &str) -> anyhow::Result<ExitCode> {
    let report = response
        .report
        .context("the records service answered without the report")?;
    println!(
        "report {} {what}: version {}, {} (chain event #{})",
        report.report_id,
        report.version,
        status_name(report.status()),
        response.seq
    );
    for warning in response.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(ExitCode::SUCCESS)
}
