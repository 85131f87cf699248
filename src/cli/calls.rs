//! `courtline calls list|get|flag|export|audio`: compliance staff's view of the records.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use crate::config::Config;
use crate::contract::connect::{connect, read_token_file, ClientOptions, RecordsClient};
use crate::contract::pb::export_calls_response::Item;
use crate::contract::pb::get_recording_response::Item as RecordingItem;
use crate::contract::pb::CallState;
use crate::contract::pb::{
    CallFilter, CallRecording, Choice, EndReason, ExportCallsRequest, ExportFormat, ExportHeader,
    ExportManifest, FlagCallRequest, FlagCategory, GetCallRequest, GetRecordingRequest,
    ListCallsRequest, SortOrder,
};
use crate::records::chain::HashAlgorithm;
use crate::records::export::{
    append_file, archive_export_name, ExportWriter, ManifestContent, SignedManifest,
    ARCHIVE_MANIFEST,
};
use crate::records::query::{
    parse_call_id_arg, parse_end_reason, parse_state, parse_time, write_call_detail, write_calls,
    CallIdArg, Clock, CsvDialect, DetailFormat, OutputFormat,
};

/// `courtline calls ...`
#[derive(Debug, Subcommand)]
pub enum CallsCommand {
    /// List call records (newest first unless --oldest-first).
    List(ListArgs),
    /// One call with its event timeline and flags.
    Get(GetArgs),
    /// Flag a call as an attempted interference (recorded, never an edit).
    Flag(FlagArgs),
    /// Export every matching call to a file that can be verified on its own.
    Export(ExportArgs),
    /// Fetch a call's kept audio recording and check it against its chained SHA-256.
    Audio(AudioArgs),
}

/// `courtline calls audio CALL_ID -o FILE.wav`
#[derive(Debug, Args)]
pub struct AudioArgs {
    /// courtline call id: the UUID, or its start as the ID column of `calls list` shows it.
    pub call_id: String,
    /// Where to write the WAV file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Connection.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// How to reach the records service, and as whom.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// Records service endpoint (default: [records] endpoint from the config).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Bearer token (not needed on the service's own machine until the first token exists).
    #[arg(long, env = "COURTLINE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) for an https endpoint (default: [records] tls_ca_file).
    #[arg(long)]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) to present instead of a token (default: [records] tls_cert_file).
    #[arg(long, requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert-file (default: [records] tls_key_file).
    #[arg(long, requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Why you are looking (kept in the access log with your query).
    #[arg(long)]
    pub reason: Option<String>,
    /// Your name in the access log while no token is needed (loopback, before the
    /// first token; a token's own name wins). Default: the OS user.
    #[arg(long = "as", value_name = "NAME", env = "COURTLINE_USER")]
    pub user: Option<String>,
}

impl ServiceArgs {
    /// Connects as these arguments and the configuration say.
    pub async fn connect(&self, config_path: &Path) -> anyhow::Result<(RecordsClient, String)> {
        // The configuration is read only for what the command line leaves open.
        let config = match &self.endpoint {
            Some(_) => None,
            None => Some(Config::load(config_path)?),
        };
        let endpoint = match (&self.endpoint, &config) {
            (Some(endpoint), _) => endpoint.clone(),
            (None, config) => config
                .as_ref()
                .map(|config| config.records.endpoint.clone())
                .unwrap_or_default(),
        };
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(file)) => Some(read_token_file(file)?),
            (None, None) => None,
        };
        let tls_ca_file = self.tls_ca_file.clone().or_else(|| {
            config
                .as_ref()
                .map(|config| config.records.tls_ca_file.clone())
                .filter(|file| !file.is_empty())
                .map(PathBuf::from)
        });
        let client_certificate = match (&self.tls_cert_file, &self.tls_key_file, &config) {
            (Some(certificate), Some(key), _) => Some((certificate.clone(), key.clone())),
            (_, _, Some(config)) if !config.records.tls_cert_file.is_empty() => Some((
                config.records.tls_cert_file.clone().into(),
                config.records.tls_key_file.clone().into(),
            )),
            _ => None,
        };
        let options = ClientOptions {
            endpoint: endpoint.clone(),
            token,
            tls_ca_file,
            client_certificate,
            reason: self.reason.clone(),
            user: Some(self.user.clone().unwrap_or_else(super::records::os_user)),
        };
        Ok((connect(&options).await?, endpoint))
    }
}

/// Yes or no, for three-valued filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum YesNo {
    /// Only calls where it holds.
    Yes,
    /// Only calls where it does not.
    No,
}

fn choice(value: Option<YesNo>) -> i32 {
    match value {
        None => Choice::Any as i32,
        Some(YesNo::Yes) => Choice::Yes as i32,
        Some(YesNo::No) => Choice::No as i32,
    }
}

/// Which calls: shared by `list` and `export`.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Calls received at or after this time (RFC 3339, or YYYY-MM-DD in local time).
    #[arg(long)]
    pub since: Option<String>,
    /// Calls received before this time.
    #[arg(long)]
    pub until: Option<String>,
    /// Only this line number.
    #[arg(long)]
    pub line: Option<String>,
    /// Only this court (exact name).
    #[arg(long)]
    pub court: Option<String>,
    /// Only callers whose number starts with this.
    #[arg(long)]
    pub caller: Option<String>,
    /// Match --caller exactly instead of as a prefix.
    #[arg(long)]
    pub caller_exact: bool,
    /// Only callers whose display name contains this.
    #[arg(long)]
    pub caller_name: Option<String>,
    /// Only calls that ended this way (e.g. caller_hung_up_during_prompt).
    #[arg(long)]
    pub end_reason: Option<String>,
    /// Whether the caller heard the whole warning.
    #[arg(long, value_enum)]
    pub prompt_completed: Option<YesNo>,
    /// Whether an operator answered.
    #[arg(long, value_enum)]
    pub connected: Option<YesNo>,
    /// Whether compliance staff flagged the call.
    #[arg(long, value_enum)]
    pub flagged: Option<YesNo>,
    /// Whether a "three rules" report was opened on the call.
    #[arg(long, value_enum)]
    pub has_report: Option<YesNo>,
    /// Whether the call's recording is kept in the evidence store.
    #[arg(long, value_enum)]
    pub has_recording: Option<YesNo>,
    /// Whether the call was a synthetic probe (`courtline probe`); listed, marked, unless `no`.
    #[arg(long, value_enum)]
    pub probe: Option<YesNo>,
    /// Only calls in this state (ended, interrupted, in_progress); repeatable. Default: ended and interrupted.
    #[arg(long)]
    pub state: Vec<String>,
    /// Oldest first instead of newest first.
    #[arg(long)]
    pub oldest_first: bool,
}

/// The sort `--oldest-first` asks for.
pub fn sort_order(oldest_first: bool) -> SortOrder {
    if oldest_first {
        SortOrder::OldestFirst
    } else {
        SortOrder::NewestFirst
    }
}

/// The epoch milliseconds of a `--since`/`--until` value, 0 when absent; the
/// error names the flag.
pub fn time_flag(flag: &str, value: &Option<String>) -> anyhow::Result<i64> {
    match value {
        Some(text) => parse_time(text).map_err(|e| anyhow::anyhow!("--{flag}: {e}")),
        None => Ok(0),
    }
}

impl FilterArgs {
    fn filter(&self) -> anyhow::Result<CallFilter> {
        let end_reason = match &self.end_reason {
            Some(text) => parse_end_reason(text).ok_or_else(|| {
                anyhow::anyhow!("--end-reason: unknown reason {text:?} (e.g. caller_hung_up, no_answer, operator_busy)")
            })?,
            None => EndReason::Unspecified,
        };
        let states = self
            .state
            .iter()
            .map(|text| {
                parse_state(text).map(|state| state as i32).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--state: unknown state {text:?} (ended, interrupted, in_progress)"
                    )
                })
            })
            .collect::<anyhow::Result<Vec<i32>>>()?;
        Ok(CallFilter {
            since_ms: time_flag("since", &self.since)?,
            until_ms: time_flag("until", &self.until)?,
            line_number: self.line.clone().unwrap_or_default(),
            court_name: self.court.clone().unwrap_or_default(),
            caller_prefix: self.caller.clone().unwrap_or_default(),
            caller_exact: self.caller_exact,
            caller_name_contains: self.caller_name.clone().unwrap_or_default(),
            end_reason: end_reason as i32,
            prompt_completed: choice(self.prompt_completed),
            connected: choice(self.connected),
            flagged: choice(self.flagged),
            has_report: choice(self.has_report),
            has_recording: choice(self.has_recording),
            probe: choice(self.probe),
            states,
            call_id_prefix: String::new(),
        })
    }

    fn sort(&self) -> SortOrder {
        sort_order(self.oldest_first)
    }
}

/// `calls list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Which calls.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// At most this many records (1 or more); when more match, standard error
    /// says how to get the next page.
    #[arg(long, default_value_t = 100, conflicts_with = "all")]
    pub limit: usize,
    /// Continue after the last call of a previous page (the CURSOR its
    /// "next page" line printed; same filters and sort).
    #[arg(long, value_name = "CURSOR")]
    pub after: Option<String>,
    /// Every matching call, however many.
    #[arg(long)]
    pub all: bool,
    /// Table times in UTC instead of local time.
    #[arg(long)]
    pub utc: bool,
    /// Connection.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// `calls get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// courtline call id: the UUID, or its start as the ID column of `calls list` shows it.
    pub call_id: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DetailFormat::Text)]
    pub format: DetailFormat,
    /// Text times in UTC instead of local time.
    #[arg(long)]
    pub utc: bool,
    /// Connection.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// The "three rules" record forms' categories; `_` and `-` spellings both work,
/// as records and exports print them with `_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CategoryArg {
    /// 过问案件: asking about a case one has no business in.
    #[value(alias = "improper_inquiry")]
    ImproperInquiry,
    /// 说情打招呼: interceding for a party.
    Intercession,
    /// 打探案情: probing for case information.
    #[value(alias = "probing_case_information")]
    ProbingCaseInformation,
    /// Anything else.
    Other,
}

/// `calls flag`.
#[derive(Debug, Args)]
pub struct FlagArgs {
    /// courtline call id: the UUID, or its start as the ID column of `calls list` shows it.
    pub call_id: String,
    /// Kind of interference.
    #[arg(long, value_enum)]
    pub category: CategoryArg,
    /// What happened, in the officer's words (required with --category other).
    #[arg(long, default_value = "")]
    pub note: String,
    /// Connection.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// Export file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormatArg {
    /// CSV with a header, for spreadsheets.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// `calls export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// File format.
    #[arg(long, value_enum, default_value_t = ExportFormatArg::Csv)]
    pub format: ExportFormatArg,
    /// Which calls.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Write here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// CSV for a double-click in Excel: a UTF-8 byte-order mark, and numbers kept
    /// as text (`="02112368"`); verify-export reads it as well.
    #[arg(long)]
    pub excel: bool,
    /// Also every exported call's kept recording: --output becomes one tar archive
    /// holding the export, the recordings and the manifest the service signed.
    #[arg(long, requires = "output")]
    pub with_audio: bool,
    /// Connection.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// Runs a `calls` subcommand.
pub async fn run(config_path: &Path, command: CallsCommand) -> anyhow::Result<ExitCode> {
    match command {
        CallsCommand::List(args) => list(config_path, args).await,
        CallsCommand::Get(args) => get(config_path, args).await,
        CallsCommand::Flag(args) => flag(config_path, args).await,
        CallsCommand::Export(args) => export(config_path, args).await,
        CallsCommand::Audio(args) => audio(config_path, args).await,
    }
}

/// Where an export goes: the file `path` (`--output`), else standard output.
pub(super) fn export_output(path: Option<&Path>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("--output {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

/// The row hash an export stream's header names.
pub(super) fn header_algorithm(header: &ExportHeader) -> anyhow::Result<HashAlgorithm> {
    HashAlgorithm::from_name(&header.hash_algorithm).with_context(|| {
        format!(
            "the service hashes rows with {:?}, unknown to this courtline",
            header.hash_algorithm
        )
    })
}

/// The service's manifest, read and held against the rows written (their count and
/// digest); `what` names the rows in the error.
pub(super) fn received_manifest(
    manifest: &ExportManifest,
    (count, digest): (u64, String),
    what: &str,
) -> anyhow::Result<ManifestContent> {
    let content: ManifestContent =
        serde_json::from_str(&manifest.json).context("manifest from the service")?;
    if count != content.count || digest != content.rows_digest {
        anyhow::bail!(
            "the {what} received ({count}, digest {digest}) do not match the service's manifest"
        );
    }
    Ok(content)
}

pub fn service_error(endpoint: &str, status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("records service at {endpoint}: {}", status.message())
}

/// Largest page asked of the service (its cap).
const MAX_PAGE: usize = 1000;

async fn list(config_path: &Path, args: ListArgs) -> anyhow::Result<ExitCode> {
    if args.limit == 0 {
        anyhow::bail!(
            "--limit 0 would list nothing: give 1 or more, or --all for every matching call"
        );
    }
    let limit = if args.all { usize::MAX } else { args.limit };
    let mut request = ListCallsRequest {
        filter: Some(args.filter.filter()?),
        sort: args.filter.sort() as i32,
        page_size: 0,
        page_token: args.after.clone().unwrap_or_default(),
    };
    let (mut client, endpoint) = args.service.connect(config_path).await?;
    let mut records = Vec::new();
    // The service counts the matches with the first page it is asked for.
    let mut matching = String::new();
    // Each page asks for no more than is still wanted, so the last page's token
    // continues right after the last call printed.
    let next = loop {
        let wanted = (limit - records.len()).min(MAX_PAGE);
        request.page_size = u32::try_from(wanted).unwrap_or(1000);
        let page = client
            .list_calls(request.clone())
            .await
            .map_err(|status| service_error(&endpoint, status))?
            .into_inner();
        if request.page_token.is_empty() {
            let more = if page.total_capped { "+" } else { "" };
            matching = format!(" ({}{more} match)", page.total);
        }
        records.extend(page.records);
        if page.next_page_token.is_empty() || records.len() >= limit {
            break page.next_page_token;
        }
        request.page_token = page.next_page_token;
    };
    let mut out = std::io::stdout().lock();
    write_calls(
        &records,
        args.format,
        Clock::from_utc_flag(args.utc),
        &mut out,
    )?;
    out.flush()?;
    // On standard error, so piped JSON or CSV stays clean.
    if !next.is_empty() {
        eprintln!(
            "showing {} calls; more match{matching}. Next page: --after {next} (or --all for every call)",
            records.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The whole call id `text` stands for: itself when it is a whole UUID, else the
/// one call whose id starts with it (any state); an error when none or several do.
pub async fn resolve_call_id(
    client: &mut RecordsClient,
    endpoint: &str,
    text: &str,
) -> anyhow::Result<String> {
    let prefix = match parse_call_id_arg(text).map_err(|e| anyhow::anyhow!("call id {e}"))? {
        CallIdArg::Full(id) => return Ok(id),
        CallIdArg::Prefix(prefix) => prefix,
    };
    let page = client
        .list_calls(ListCallsRequest {
            filter: Some(CallFilter {
                call_id_prefix: prefix.clone(),
                states: vec![
                    CallState::Ended as i32,
                    CallState::Interrupted as i32,
                    CallState::InProgress as i32,
                ],
                ..CallFilter::default()
            }),
            page_size: 5,
            ..ListCallsRequest::default()
        })
        .await
        .map_err(|status| service_error(endpoint, status))?
        .into_inner();
    match page.records.as_slice() {
        [] => anyhow::bail!("no call id starts with {prefix:?}; see the ID column of `calls list`"),
        [only] => Ok(only.call_id.clone()),
        several => anyhow::bail!(
            "call id {prefix:?} is ambiguous: it starts {}{}; give more of the id",
            several
                .iter()
                .map(|record| record.call_id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if page.next_page_token.is_empty() {
                ""
            } else {
                " and more"
            }
        ),
    }
}

async fn get(config_path: &Path, args: GetArgs) -> anyhow::Result<ExitCode> {
    let (mut client, endpoint) = args.service.connect(config_path).await?;
    let call_id = resolve_call_id(&mut client, &endpoint, &args.call_id).await?;
    let response = client
        .get_call(GetCallRequest { call_id })
        .await
        .map_err(|status| service_error(&endpoint, status))?
        .into_inner();
    let record = response
        .record
        .context("the records service answered without the call's record")?;
    let mut out = std::io::stdout().lock();
    write_call_detail(
        &record,
        &response.timeline,
        response.recording.as_ref(),
        args.format,
        Clock::from_utc_flag(args.utc),
        &mut out,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// A recording as fetched: the service's description, and the length and SHA-256 of
/// the bytes written.
struct Fetched {
    /// What the chain says of it.
    described: CallRecording,
    /// Bytes written.
    bytes: u64,
    /// Their SHA-256, hex.
    sha256: String,
}

impl Fetched {
    /// Whether the bytes are the recording as chained.
    fn matches(&self, bytes: u64, sha256: &str) -> bool {
        self.bytes == bytes && self.sha256.eq_ignore_ascii_case(sha256)
    }
}

/// Fetches call `call_id`'s recording (GetRecording) into `path`, hashing it on the way.
async fn fetch_recording(
    client: &mut RecordsClient,
    endpoint: &str,
    call_id: &str,
    path: &Path,
) -> anyhow::Result<Fetched> {
    use sha2::{Digest, Sha256};
    let mut stream = client
        .get_recording(GetRecordingRequest {
            call_id: call_id.to_owned(),
        })
        .await
        .map_err(|status| service_error(endpoint, status))?
        .into_inner();
    let mut file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut described = None;
    let mut hasher = Sha256::new();
    let mut written: u64 = 0;
    while let Some(message) = stream
        .message()
        .await
        .map_err(|status| service_error(endpoint, status))?
    {
        match message.item {
            Some(RecordingItem::Recording(recording)) => described = Some(recording),
            Some(RecordingItem::Chunk(chunk)) => {
                hasher.update(&chunk);
                written += chunk.len() as u64;
                file.write_all(&chunk)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            None => {}
        }
    }
    file.sync_all()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Fetched {
        described: described
            .context("the records service sent the recording without its description")?,
        bytes: written,
        sha256: hex::encode(hasher.finalize()),
    })
}

async fn audio(config_path: &Path, args: AudioArgs) -> anyhow::Result<ExitCode> {
    let (mut client, endpoint) = args.service.connect(config_path).await?;
    let call_id = resolve_call_id(&mut client, &endpoint, &args.call_id).await?;
    let fetched = fetch_recording(&mut client, &endpoint, &call_id, &args.output).await?;
    let described = &fetched.described;
    if !fetched.matches(described.bytes, &described.sha256) {
        eprintln!(
            "{}: {} bytes with SHA-256 {}, but the chain (event #{}) says {} bytes with SHA-256 {}: this file is not the recording as made; run `courtline records verify`",
            args.output.display(),
            fetched.bytes,
            fetched.sha256,
            described.seq,
            described.bytes,
            described.sha256
        );
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "call {call_id}: {} bytes written to {}, SHA-256 {} matches the chain (event #{})",
        fetched.bytes,
        args.output.display(),
        fetched.sha256,
        described.seq
    );
    Ok(ExitCode::SUCCESS)
}

/// `path` with `.suffix` added to its file name: where a file is written before it
/// is complete.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    path.with_file_name(name)
}

/// Builds the `--with-audio` archive at `path`: the signed manifest, the export file
/// (written at `export`), and every recording the manifest lists, each fetched with
/// GetRecording and checked against the signed length and SHA-256 before it goes in.
/// Written as `<path>.partial` and renamed at the end: a failed export leaves no archive.
async fn write_archive(
    client: &mut RecordsClient,
    endpoint: &str,
    path: &Path,
    export: &Path,
    manifest: &ExportManifest,
    content: &ManifestContent,
) -> anyhow::Result<()> {
    let partial = beside(path, "partial");
    let audio = beside(path, "audio.partial");
    let written = async {
        let file = std::fs::File::create(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let mut archive = tar::Builder::new(std::io::BufWriter::new(file));
        let mtime = u64::try_from(content.exported_at_ms / 1000).unwrap_or_default();
        let signed = serde_json::to_vec_pretty(&SignedManifest::from(manifest).json())?;
        append_file(
            &mut archive,
            ARCHIVE_MANIFEST,
            signed.len() as u64,
            mtime,
            signed.as_slice(),
        )?;
        let rows = std::fs::File::open(export)?;
        let length = rows.metadata()?.len();
        append_file(
            &mut archive,
            &archive_export_name(&content.file_format),
            length,
            mtime,
            rows,
        )?;
        for listed in &content.recordings {
            let fetched = fetch_recording(client, endpoint, &listed.call_id, &audio).await?;
            if !fetched.matches(listed.bytes, &listed.sha256) {
                anyhow::bail!(
                    "call {}'s recording as fetched is {} bytes with SHA-256 {}, but the signed manifest lists {} bytes with SHA-256 {}: no archive written; run `courtline records verify`",
                    listed.call_id, fetched.bytes, fetched.sha256, listed.bytes, listed.sha256
                );
            }
            append_file(
                &mut archive,
                &listed.name,
                fetched.bytes,
                mtime,
                std::fs::File::open(&audio)?,
            )?;
        }
        let out = archive.into_inner()?;
        let file = out.into_inner().map_err(|error| error.into_error())?;
        file.sync_all()?;
        std::fs::rename(&partial, path)
            .with_context(|| format!("cannot rename {} to {}", partial.display(), path.display()))
    }
    .await;
    for leftover in [export, &audio] {
        let _ = std::fs::remove_file(leftover);
    }
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written.with_context(|| format!("--output {}", path.display()))
}

async fn flag(config_path: &Path, args: FlagArgs) -> anyhow::Result<ExitCode> {
    let category = match args.category {
        CategoryArg::ImproperInquiry => FlagCategory::ImproperInquiry,
        CategoryArg::Intercession => FlagCategory::Intercession,
        CategoryArg::ProbingCaseInformation => FlagCategory::ProbingCaseInformation,
        CategoryArg::Other => FlagCategory::Other,
    };
    if category == FlagCategory::Other && args.note.trim().is_empty() {
        anyhow::bail!("--category other needs --note saying what happened");
    }
    let (mut client, endpoint) = args.service.connect(config_path).await?;
    let call_id = resolve_call_id(&mut client, &endpoint, &args.call_id).await?;
    let response = client
        .flag_call(FlagCallRequest {
            call_id: call_id.clone(),
            category: category as i32,
            note: args.note,
        })
        .await
        .map_err(|status| service_error(&endpoint, status))?
        .into_inner();
    println!("call {call_id} flagged (chain event #{})", response.seq);
    Ok(ExitCode::SUCCESS)
}

async fn export(config_path: &Path, args: ExportArgs) -> anyhow::Result<ExitCode> {
    // With audio the rows go to a file beside the archive first; a failure leaves neither.
    let rows_file = args
        .output
        .as_deref()
        .filter(|_| args.with_audio)
        .map(|archive| beside(archive, "export.partial"));
    let exported = export_calls(config_path, args).await;
    if let (Err(_), Some(rows_file)) = (&exported, rows_file) {
        let _ = std::fs::remove_file(rows_file);
    }
    exported
}

/// `calls export`: the rows as the service streams them, checked against its signed
/// manifest; with `--with-audio` then put into an archive with the recordings.
async fn export_calls(config_path: &Path, args: ExportArgs) -> anyhow::Result<ExitCode> {
    if args.excel && args.format != ExportFormatArg::Csv {
        anyhow::bail!("--excel is for CSV exports; leave it out with --format jsonl");
    }
    let format = match args.format {
        ExportFormatArg::Csv => ExportFormat::Csv,
        ExportFormatArg::Jsonl => ExportFormat::Jsonl,
    };
    let request = ExportCallsRequest {
        filter: Some(args.filter.filter()?),
        sort: args.filter.sort() as i32,
        format: format as i32,
        with_audio: args.with_audio,
    };
    // With audio the export file is written beside the archive first, then put in it.
    let archive = args.output.clone().filter(|_| args.with_audio);
    let export_path = match &archive {
        Some(archive) => Some(beside(archive, "export.partial")),
        None => args.output.clone(),
    };
    let (mut client, endpoint) = args.service.connect(config_path).await?;
    let mut stream = client
        .export_calls(request)
        .await
        .map_err(|status| service_error(&endpoint, status))?
        .into_inner();
    let out = export_output(export_path.as_deref())?;
    let mut writer: Option<ExportWriter<Box<dyn Write>>> = None;
    let mut out = Some(out);
    while let Some(message) = stream
        .message()
        .await
        .map_err(|status| service_error(&endpoint, status))?
    {
        match (message.item, writer.as_mut()) {
            (Some(Item::Header(header)), None) => {
                let algorithm = header_algorithm(&header)?;
                let dialect = if args.excel {
                    CsvDialect::Excel
                } else {
                    CsvDialect::Plain
                };
                if let Some(out) = out.take() {
                    writer = Some(ExportWriter::with_dialect(format, dialect, algorithm, out)?);
                }
            }
            (Some(Item::Record(record)), Some(writer)) => writer.write(&record)?,
            (Some(Item::Manifest(manifest)), Some(_)) => {
                let Some(writer) = writer.take() else { break };
                let content = received_manifest(&manifest, writer.rows(), "rows")?;
                let count = content.count;
                drop(writer.finish(&manifest)?);
                if let (Some(archive), Some(export)) = (&archive, &export_path) {
                    write_archive(&mut client, &endpoint, archive, export, &manifest, &content)
                        .await?;
                    eprintln!(
                        "exported {count} calls and {} recordings into {}; manifest signed by key {}",
                        content.recordings.len(),
                        archive.display(),
                        manifest.public_key
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                eprintln!(
                    "exported {count} calls; manifest signed by key {}",
                    manifest.public_key
                );
                return Ok(ExitCode::SUCCESS);
            }
            _ => anyhow::bail!("the export stream is out of order (no header first)"),
        }
    }
    anyhow::bail!("the export stream ended without a manifest: the file is incomplete")
}
