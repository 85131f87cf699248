//! Formatting and argument parsing for `courtline calls list` and `calls get`.
//!
//! Three outputs: a table for people at a terminal, JSON and CSV for tools and
//! spreadsheets. JSON and CSV carry every [`CallRecord`] field so nothing is lost
//! on export: they are the contract's row form ([`crate::contract::row`]).
//!
//! One rule for times: what people read (table, `calls get` text, access log,
//! verify-export) is in local time with its offset, or UTC with `--utc`
//! ([`Clock`]); what tools read (JSON, CSV, exports) is RFC 3339 UTC beside the
//! Unix milliseconds, so a file means the same wherever it is opened.

use std::io::Write;

use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde::Serialize;

use crate::contract::names::{end_reason_label, end_reason_name, flag_category_name, state_label};
use crate::contract::pb::{CallRecord, CallRecording, CallState, EndReason, Flag, TimelineEvent};
use crate::contract::row::{rfc3339, ExportRow, NestedRow, CSV_HEADER, NESTED_COLUMNS};

/// How `courtline calls list` prints records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for reading in a terminal.
    #[default]
    Table,
    /// One JSON array with every field, for scripts.
    Json,
    /// Header row plus every field, for spreadsheets.
    Csv,
}

/// Parses an end reason as typed on the command line: the snake_case name, with
/// `-` allowed for `_`, any case, or the proto name (`END_REASON_NO_ANSWER`).
pub fn parse_end_reason(text: &str) -> Option<EndReason> {
    let normalized = text.trim().to_ascii_lowercase().replace('-', "_");
    let name = normalized
        .strip_prefix("end_reason_")
        .unwrap_or(&normalized);
    ALL_END_REASONS
        .into_iter()
        .find(|reason| end_reason_name(*reason) == name)
}

pub const ALL_END_REASONS: [EndReason; 16] = [
    EndReason::Unspecified,
    EndReason::CallerHungUpDuringPrompt,
    EndReason::CallerHungUp,
    EndReason::OperatorHungUp,
    EndReason::OperatorBusy,
    EndReason::NoAnswer,
    EndReason::OperatorUnreachable,
    EndReason::CancelledBeforeAnswer,
    EndReason::Rejected,
    EndReason::MediaTimeout,
    EndReason::Error,
    EndReason::NoAck,
    EndReason::SessionExpired,
    EndReason::AfterHours,
    EndReason::Shutdown,
    EndReason::Transferred,
];

/// Parses a `--since`/`--until` value into Unix ms. Accepts RFC 3339
/// (`2024-05-01T09:30:00+08:00`), a local date-time without offset
/// (`2024-05-01T09:30:00`) and a date (`2024-05-01`, meaning local midnight).
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp_millis());
    }
    let local = if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        date.and_hms_opt(0, 0, 0)
    } else {
        [
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M",
        ]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
    };
    let Some(local) = local else {
        return Err(format!(
            "cannot parse time {text:?}: expected RFC 3339 (2024-05-01T09:30:00+08:00) \
             or a date (2024-05-01, local midnight)"
        ));
    };
    // `earliest` picks the first instant when a DST change repeats the hour.
    Local
        .from_local_datetime(&local)
        .earliest()
        .map(|time| time.timestamp_millis())
        .ok_or_else(|| format!("{text:?} does not exist in the local time zone (DST gap)"))
}

/// Which clock human-readable output shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// The machine's local time with its UTC offset (`2024-05-01T09:30:00+08:00`).
    #[default]
    Local,
    /// UTC (`2024-05-01T01:30:00Z`), with `--utc`.
    Utc,
}

impl Clock {
    /// [`Clock::Utc`] when `utc` (the `--utc` switch) is set.
    pub fn from_utc_flag(utc: bool) -> Clock {
        if utc {
            Clock::Utc
        } else {
            Clock::Local
        }
    }

    /// `ms` (Unix milliseconds) as RFC 3339 on this clock; `-` for 0 ("did not happen").
    pub fn show(self, ms: i64, precision: SecondsFormat) -> String {
        if ms == 0 {
            return "-".to_owned();
        }
        match (DateTime::<Utc>::from_timestamp_millis(ms), self) {
            (None, _) => ms.to_string(),
            (Some(time), Clock::Utc) => time.to_rfc3339_opts(precision, true),
            (Some(time), Clock::Local) => {
                time.with_timezone(&Local).to_rfc3339_opts(precision, true)
            }
        }
    }
}

/// Writes `records` to `out` in `format`, table times on `clock`. Display names in
/// any script come out intact.
pub fn write_calls(
    records: &[CallRecord],
    format: OutputFormat,
    clock: Clock,
    out: &mut impl Write,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Table => write_table(records, clock, out),
        OutputFormat::Json => {
            let rows: Vec<ExportRow> = records.iter().map(ExportRow::from).collect();
            let nested: Vec<NestedRow> = rows.iter().map(NestedRow).collect();
            serde_json::to_writer_pretty(&mut *out, &nested)?;
            writeln!(out)
        }
        OutputFormat::Csv => write_csv(records, out),
    }
}

/// One line per leg with media, for `calls get`: what was sent, received and
/// lost, jitter, and what the peer's RTCP said (when it sent any).
pub fn media_lines(record: &CallRecord) -> Vec<String> {
    let ms = |us: u32| format!("{:.1} ms", f64::from(us) / 1000.0);
    [
        ("caller", &record.caller_media),
        ("operator", &record.operator_media),
    ]
    .into_iter()
    .filter_map(|(leg, media)| {
        let m = media.as_ref()?;
        let rtcp = match (m.rtt_us, m.peer_reported_lost) {
            (None, None) => "no RTCP reports from the peer".to_owned(),
            (rtt, lost) => format!(
                "RTT {}, peer reports {} of ours lost",
                rtt.map_or_else(|| "unknown".to_owned(), ms),
                lost.map_or_else(|| "none".to_owned(), |l| l.to_string())
            ),
        };
        Some(format!(
            "{leg}: {} packets sent, {} received, {} lost, jitter {}; {rtcp}",
            m.packets_sent,
            m.packets_received,
            m.packets_lost,
            ms(m.jitter_us)
        ))
    })
    .collect()
}

/// One line per prompt a call played, for `calls get`: position, id, version,
/// SHA-256 and how much was sent (and whether the caller hung up in it).
pub fn prompt_lines(record: &CallRecord) -> Vec<String> {
    let seconds = |ms: u32| format!("{:.1} s", f64::from(ms) / 1000.0);
    record
        .prompts
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let version = if p.version.is_empty() {
                String::new()
            } else {
                format!(" version \"{}\"", p.version)
            };
            let heard = match p.ms_sent {
                0 => "not reached".to_owned(),
                sent if sent >= p.length_ms => format!("{} sent in full", seconds(p.length_ms)),
                sent => format!(
                    "{} of {} sent (cut short)",
                    seconds(sent),
                    seconds(p.length_ms)
                ),
            };
            format!(
                "{}. {}{version} sha256 {}: {heard}",
                index + 1,
                p.id,
                p.sha256
            )
        })
        .collect()
}

/// Parses a call state name as typed on the command line.
pub fn parse_state(text: &str) -> Option<CallState> {
    [
        CallState::InProgress,
        CallState::Ended,
        CallState::Interrupted,
    ]
    .into_iter()
    .find(|state| state_label(*state as i32) == text.trim().to_ascii_lowercase().replace('-', "_"))
}

fn write_csv(records: &[CallRecord], out: &mut impl Write) -> std::io::Result<()> {
    // The header is written by hand so that an empty result still has one.
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(&mut *out);
    writer.write_record(CSV_HEADER)?;
    for record in records {
        writer.write_record(csv_cells(&ExportRow::from(record), CsvDialect::Plain))?;
    }
    writer.flush()
}

/// How CSV cells are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CsvDialect {
    /// Plain RFC 4180 CSV, for tools.
    #[default]
    Plain,
    /// For a double-click in Excel: the file starts with a UTF-8 byte-order mark
    /// (else Excel reads it in the ANSI code page, GBK on Chinese Windows), and
    /// text Excel would turn into a number or run as a formula is written as
    /// `="..."`, which Excel shows as that text (an apostrophe would show
    /// literally, a leading tab would stay in the value).
    Excel,
}

/// The UTF-8 byte-order mark that starts an Excel-dialect CSV file.
pub const UTF8_BOM: &str = "\u{feff}";

/// A row's cells in [`CSV_HEADER`] order, as text in `dialect`.
pub fn csv_cells(row: &ExportRow, dialect: CsvDialect) -> Vec<String> {
    let fields = match serde_json::to_value(row) {
        Ok(serde_json::Value::Object(fields)) => fields,
        // A struct of strings, numbers and booleans is always an object.
        _ => serde_json::Map::new(),
    };
    CSV_HEADER
        .iter()
        .map(|name| match fields.get(*name) {
            Some(serde_json::Value::String(text)) => match dialect {
                CsvDialect::Plain => text.clone(),
                CsvDialect::Excel => excel_text(text),
            },
            None | Some(serde_json::Value::Null) => String::new(),
            Some(other) => other.to_string(),
        })
        .collect()
}

/// A text cell for Excel: as is, unless Excel would read it as a number (dropping
/// leading zeros, rounding past 15 digits, `1.38E+10`) or a formula (`=`, `+`,
/// `-`, `@`): then `="..."` with inner quotes doubled.
pub fn excel_text(text: &str) -> String {
    let numeric = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let formula = text.starts_with(['=', '+', '-', '@']);
    if numeric || formula {
        format!("=\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// The inverse of [`excel_text`]: the text a cell of an Excel-dialect file stands for.
pub fn excel_cell_text(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell
        .strip_prefix("=\"")
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(inner) => std::borrow::Cow::Owned(inner.replace("\"\"", "\"")),
        None => std::borrow::Cow::Borrowed(cell),
    }
}

const TABLE_HEADER: [&str; 10] = [
    "ID",
    "RECEIVED",
    "LINE",
    "COURT",
    "CALLER",
    "PROMPT",
    "CONNECTED",
    "FLAGGED",
    "END REASON",
    "DURATION",
];

/// How many characters of a call id the table shows: the UUID's first two
/// groups, 12 hex digits, so ids stay unambiguous across millions of calls
/// (8 would collide after tens of thousands). `calls get|flag` accept any
/// unambiguous prefix.
pub const SHORT_ID_LEN: usize = 13;

/// The short form of a call id that the table shows.
pub fn short_call_id(call_id: &str) -> &str {
    call_id.get(..SHORT_ID_LEN).unwrap_or(call_id)
}

/// The shortest call id prefix accepted, so a typo does not match half the calls.
const MIN_PREFIX_HEX: usize = 4;

/// What a call id typed on the command line means: `Ok(Full(id))` for a whole
/// UUID, `Ok(Prefix(text))` for the start of one (dashes may be left out; they
/// are put back where the UUID has them), or an error saying what is wrong.
pub fn parse_call_id_arg(text: &str) -> Result<CallIdArg, String> {
    let text = text.trim().to_ascii_lowercase();
    if !text.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(format!(
            "{text:?} is not a call id: use the id (or its first {MIN_PREFIX_HEX}+ hex digits) \
             from the ID column of `calls list`"
        ));
    }
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() < MIN_PREFIX_HEX || hex.len() > 32 {
        return Err(format!(
            "{text:?}: a call id is 32 hex digits; give at least the first {MIN_PREFIX_HEX}"
        ));
    }
    let mut dashed = String::with_capacity(36);
    for (index, digit) in hex.chars().enumerate() {
        if [8, 12, 16, 20].contains(&index) {
            dashed.push('-');
        }
        dashed.push(digit);
    }
    Ok(if hex.len() == 32 {
        CallIdArg::Full(dashed)
    } else {
        CallIdArg::Prefix(dashed)
    })
}

/// A call id as typed: whole, or a prefix to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallIdArg {
    /// A whole UUID (text form).
    Full(String),
    /// The start of one (text form, dashes where the UUID has them).
    Prefix(String),
}

fn write_table(records: &[CallRecord], clock: Clock, out: &mut impl Write) -> std::io::Result<()> {
    let rows: Vec<[String; 10]> = records.iter().map(|r| table_row(r, clock)).collect();
    let mut widths = TABLE_HEADER.map(display_width);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(display_width(cell));
        }
    }
    write_table_line(&TABLE_HEADER.map(str::to_owned), &widths, out)?;
    for row in &rows {
        write_table_line(row, &widths, out)?;
    }
    Ok(())
}

fn write_table_line(
    cells: &[String; 10],
    widths: &[usize; 10],
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut line = String::new();
    for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
        line.push_str(cell);
        if index + 1 < cells.len() {
            // Pad by display width, not bytes or chars, so CJK columns stay aligned.
            let padding = width - display_width(cell) + 2;
            line.extend(std::iter::repeat_n(' ', padding));
        }
    }
    writeln!(out, "{}", line.trim_end())
}

fn table_row(r: &CallRecord, clock: Clock) -> [String; 10] {
    let caller = match (r.caller_number.is_empty(), r.caller_display_name.is_empty()) {
        (_, true) => r.caller_number.clone(),
        (true, false) => format!("\"{}\"", r.caller_display_name),
        (false, false) => format!("{} \"{}\"", r.caller_number, r.caller_display_name),
    };
    let yes_no = |flag: bool| if flag { "yes" } else { "no" }.to_owned();
    [
        short_call_id(&r.call_id).to_owned(),
        clock.show(r.received_at_ms, SecondsFormat::Secs),
        // A synthetic probe is listed, marked, so nobody takes it for a caller.
        if r.probe {
            format!("{} (probe)", r.line_number)
        } else {
            r.line_number.clone()
        },
        r.court_name.clone(),
        caller,
        yes_no(r.prompt_completed),
        yes_no(r.operator_answered_at_ms != 0),
        yes_no(r.flagged),
        // A call cut short or still up has no end reason yet: say which.
        match CallState::try_from(r.state) {
            Ok(CallState::Interrupted | CallState::InProgress) => state_label(r.state).into_owned(),
            _ => end_reason_label(r.end_reason).into_owned(),
        },
        duration(r.received_at_ms, r.ended_at_ms),
    ]
}

/// How `calls get` prints a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DetailFormat {
    /// Fields, prompts, media, flags and the timeline, for reading.
    #[default]
    Text,
    /// One JSON object: every field (as `calls list --format json`) and `timeline`.
    Json,
}

/// `calls get`'s line about the call's audio: hash, length and duration when kept,
/// otherwise why there is none.
pub fn recording_line(recording: Option<&CallRecording>) -> String {
    let Some(recording) = recording else {
        return "recording: none (the line does not record audio)".to_owned();
    };
    let why = |text: &str| {
        if recording.detail.is_empty() {
            text.to_owned()
        } else {
            recording.detail.clone()
        }
    };
    match recording.state.as_str() {
        "stored" => format!(
            "recording: kept, {:.1} s, {} channels at {} Hz, {} bytes, SHA-256 {} (chain event #{}); fetch with `courtline calls audio`",
            f64::from(recording.duration_ms) / 1000.0,
            recording.channels,
            recording.sample_rate,
            recording.bytes,
            recording.sha256,
            recording.seq
        ),
        "deleted" => format!(
            "recording: deleted at the end of the call ({})",
            why("record_audio = \"on_report\" and no flag or report")
        ),
        "failed" => format!("recording: failed ({})", why("no reason given")),
        "not_transferred" => format!("recording: {}", why("not transferred")),
        other => format!("recording: {other}"),
    }
}

/// Orders a call's timeline by when things happened; events of the same
/// millisecond keep their chain order, except that the call's end (`ended`,
/// `interrupted`) comes after whatever else happened in it.
pub fn order_timeline(timeline: &mut [TimelineEvent]) {
    timeline.sort_by_key(|event| {
        let ends_call = matches!(event.kind.as_str(), "ended" | "interrupted");
        (event.at_ms, ends_call, event.seq)
    });
}

/// One timeline event in `calls get --format json`.
#[derive(Debug, Serialize)]
struct TimelineEntry<'a> {
    /// [`TimelineEvent::seq`].
    seq: u64,
    /// [`TimelineEvent::at_ms`] as RFC 3339 UTC.
    at: Option<String>,
    /// [`TimelineEvent::at_ms`].
    at_ms: i64,
    /// [`TimelineEvent::kind`].
    kind: &'a str,
    /// [`TimelineEvent::detail`].
    detail: &'a str,
    /// [`TimelineEvent::node_id`].
    node_id: &'a str,
    /// [`TimelineEvent::node_seq`].
    node_seq: u64,
    /// [`TimelineEvent::hash`].
    hash: &'a str,
}

/// `calls get --format json`: the call's columns, then its timeline.
#[derive(Serialize)]
struct CallDetail<'a> {
    /// Every column, lists nested.
    #[serde(flatten)]
    call: NestedRow<'a>,
    /// The caller's earlier reported calls when this one arrived (the whisper;
    /// not an export column: exports keep their signed row format).
    prior_reports: u32,
    /// The caller's earlier flagged calls when this one arrived.
    prior_flags: u32,
    /// In [`order_timeline`] order.
    timeline: Vec<TimelineEntry<'a>>,
    /// The call's audio recording; `null` when none was made.
    recording: Option<RecordingEntry<'a>>,
}

/// A call's recording in `calls get --format json`.
#[derive(Debug, Serialize)]
struct RecordingEntry<'a> {
    /// "stored", "deleted", "failed" or "not_transferred" ([`CallRecording::state`]).
    state: &'a str,
    /// Why it failed, was deleted or is not transferred.
    detail: &'a str,
    /// SHA-256 of the file as chained.
    sha256: &'a str,
    /// File length as chained.
    bytes: u64,
    /// Samples per second.
    sample_rate: u32,
    /// Channels, in file order.
    channel_layout: Vec<&'static str>,
    /// "wav" (16-bit PCM).
    format: &'static str,
    /// Length of the audio.
    duration_ms: u32,
    /// Chain position of the recording event.
    seq: u64,
}

impl<'a> From<&'a CallRecording> for RecordingEntry<'a> {
    fn from(recording: &'a CallRecording) -> RecordingEntry<'a> {
        RecordingEntry {
            state: &recording.state,
            detail: &recording.detail,
            sha256: &recording.sha256,
            bytes: recording.bytes,
            sample_rate: recording.sample_rate,
            // Channel 1 is what courtline sent the caller, channel 2 what the caller sent.
            channel_layout: ["to_caller", "from_caller"]
                .into_iter()
                .take(recording.channels as usize)
                .collect(),
            format: "wav",
            duration_ms: recording.duration_ms,
            seq: recording.seq,
        }
    }
}

/// Writes one call for `calls get`: `record` with its (ordered) `timeline` and its
/// `recording`; text times on `clock`.
pub fn write_call_detail(
    record: &CallRecord,
    timeline: &[TimelineEvent],
    recording: Option<&CallRecording>,
    format: DetailFormat,
    clock: Clock,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut timeline = timeline.to_vec();
    order_timeline(&mut timeline);
    let row = ExportRow::from(record);
    if format == DetailFormat::Json {
        let detail = CallDetail {
            call: NestedRow(&row),
            prior_reports: record.prior_reports,
            prior_flags: record.prior_flags,
            timeline: timeline
                .iter()
                .map(|event| TimelineEntry {
                    seq: event.seq,
                    at: rfc3339(event.at_ms),
                    at_ms: event.at_ms,
                    kind: &event.kind,
                    detail: &event.detail,
                    node_id: &event.node_id,
                    node_seq: event.node_seq,
                    hash: &event.hash,
                })
                .collect(),
            recording: recording.map(RecordingEntry::from),
        };
        serde_json::to_writer_pretty(&mut *out, &detail)?;
        return writeln!(out);
    }
    writeln!(out, "call {}", record.call_id)?;
    let fields = match serde_json::to_value(&row) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => serde_json::Map::new(),
    };
    let nested: Vec<&str> = NESTED_COLUMNS.iter().map(|(column, _)| *column).collect();
    for name in CSV_HEADER.iter().skip(1) {
        // Times once each, on the reader's clock; lists get sections of their own.
        if nested.contains(name) || fields.contains_key(&format!("{name}_ms")) {
            continue;
        }
        let (label, text) = match (name.strip_suffix("_at_ms"), fields.get(*name)) {
            (Some(event), Some(value)) => (
                format!("{event}_at"),
                clock.show(value.as_i64().unwrap_or_default(), SecondsFormat::Millis),
            ),
            (None, Some(serde_json::Value::String(text))) => ((*name).to_owned(), text.clone()),
            (None, Some(value)) => ((*name).to_owned(), value.to_string()),
            (_, None) => continue,
        };
        if !text.is_empty() && text != "-" {
            writeln!(out, "  {label:<24}{text}")?;
        }
    }
    if record.prior_reports > 0 || record.prior_flags > 0 {
        writeln!(
            out,
            "  {:<24}{} reported, {} flagged calls before this one",
            "caller_history", record.prior_reports, record.prior_flags
        )?;
    }
    let sections = [
        ("prompts", prompt_lines(record)),
        ("media", media_lines(record)),
        ("flags", flag_lines(&record.flags, clock)),
    ];
    for (title, lines) in sections {
        if !lines.is_empty() {
            writeln!(out, "{title}:")?;
            for line in lines {
                writeln!(out, "  {line}")?;
            }
        }
    }
    writeln!(out, "timeline:")?;
    for event in &timeline {
        writeln!(
            out,
            "  #{:<8} {}  {:<20} {}",
            event.seq,
            clock.show(event.at_ms, SecondsFormat::Millis),
            event.kind,
            event.detail
        )?;
    }
    writeln!(out, "{}", recording_line(recording))
}

/// One line per flag, for `calls get`: category, who, when and the note.
pub fn flag_lines(flags: &[Flag], clock: Clock) -> Vec<String> {
    flags
        .iter()
        .enumerate()
        .map(|(index, flag)| {
            format!(
                "{}. {} by {} at {}: {}",
                index + 1,
                flag_category_name(flag.category()),
                flag.flagged_by,
                clock.show(flag.flagged_at_ms, SecondsFormat::Secs),
                flag.note
            )
        })
        .collect()
}

/// Call length from INVITE to end as `m:ss` or `h:mm:ss`; `-` while unknown.
fn duration(start_ms: i64, end_ms: i64) -> String {
    if start_ms == 0 || end_ms == 0 || end_ms < start_ms {
        return "-".to_owned();
    }
    let seconds = (end_ms - start_ms) / 1000;
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if hours > 0 {
        format!("{hours}:{minutes:02}:{seconds:02}")
    } else {
        format!("{minutes}:{seconds:02}")
    }
}

/// Terminal columns `text` takes: 2 for East Asian wide/fullwidth characters, else 1.
/// A small table of ranges instead of a dependency; covers CJK, Hangul, fullwidth forms, emoji.
pub fn display_width(text: &str) -> usize {
    text.chars()
        .map(|c| {
            let wide = matches!(u32::from(c),
                0x1100..=0x115F
                | 0x2E80..=0x303E
                | 0x3041..=0x33FF
                | 0x3400..=0x4DBF
                | 0x4E00..=0x9FFF
                | 0xA000..=0xA4CF
                | 0xAC00..=0xD7A3
                | 0xF900..=0xFAFF
                | 0xFE30..=0xFE4F
                | 0xFF00..=0xFF60
                | 0xFFE0..=0xFFE6
                | 0x1F300..=0x1F64F
                | 0x1F900..=0x1F9FF
                | 0x20000..=0x3FFFD);
            if wide {
                2
            } else {
                1
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::pb::{FlagCategory, LegMedia, PlayedPrompt};
    use crate::contract::row::*;

    fn sample() -> CallRecord {
        CallRecord {
            call_id: "6f1c2a9e-3b7d-4c1e-9a55-0d2f4e8b7c61".to_owned(),
            sip_call_id: "abc@10.0.0.1".to_owned(),
            line_number: "12368".to_owned(),
            court_name: "北京市第一中级人民法院".to_owned(),
            caller_number: "13800138000".to_owned(),
            caller_display_name: "张三, \"律师\"".to_owned(),
            caller_source: "127.0.0.1:5070".to_owned(),
            user_agent: "sipp".to_owned(),
            codec: "PCMU".to_owned(),
            received_at_ms: 1_714_527_000_123,
            answered_at_ms: 1_714_527_000_200,
            prompt_started_at_ms: 1_714_527_000_250,
            prompt_ended_at_ms: 1_714_527_008_250,
            operator_answered_at_ms: 0,
            ended_at_ms: 1_714_527_065_123,
            prompt_id: "three-rules".to_owned(),
            prompt_sha256: "0f".repeat(32),
            prompt_length_ms: 8_000,
            prompt_ms_sent: 8_000,
            prompt_completed: true,
            dtmf_during_prompt: "".to_owned(),
            operator_uri: "sip:op@127.0.0.1".to_owned(),
            end_reason: EndReason::NoAnswer as i32,
            sip_final_status: 200,
            rtp_packets_sent: 400,
            rtp_packets_received: 398,
            caller_media: Some(LegMedia {
                packets_sent: 400,
                packets_received: 398,
                packets_lost: 2,
                jitter_us: 1_250,
                rtt_us: Some(41_000),
                peer_reported_lost: Some(0),
            }),
            operator_media: None,
            state: CallState::Ended as i32,
            flagged: false,
            node_id: "sb-1".to_owned(),
            proxy_source: "127.0.0.1:5080".to_owned(),
            flags: Vec::new(),
            probe: false,
            prior_reports: 0,
            prior_flags: 0,
            prompts: vec![
                PlayedPrompt {
                    id: "three_rules_zh".to_owned(),
                    version: "2024-05 \"审定\"".to_owned(),
                    sha256: "e5".repeat(32),
                    length_ms: 5_000,
                    ms_sent: 5_000,
                },
                PlayedPrompt {
                    id: "three_rules_en".to_owned(),
                    version: String::new(),
                    sha256: "a9".repeat(32),
                    length_ms: 2_000,
                    ms_sent: 1_200,
                },
            ],
        }
    }

    #[test]
    fn prompts_text_round_trips_and_is_empty_for_none() {
        let record = sample();
        let text = prompts_json(&record.prompts);
        assert!(
            text.starts_with(
                r#"[{"id":"three_rules_zh","version":"2024-05 \"审定\"","sha256":"e5e5"#
            ),
            "{text}"
        );
        assert_eq!(parse_prompts_json(&text).unwrap(), record.prompts);
        assert_eq!(prompts_json(&[]), "");
        assert_eq!(parse_prompts_json("").unwrap(), vec![]);
        assert!(parse_prompts_json("[{\"id\":1}]").is_err());
        assert!(parse_prompts_json("nonsense").is_err());
    }

    #[test]
    fn media_text_round_trips_and_reads_as_lines() {
        let mut record = sample();
        if let Some(caller) = record.caller_media.as_mut() {
            caller.jitter_us = 1_260;
        }
        record.operator_media = Some(LegMedia {
            packets_sent: 10,
            packets_received: 9,
            packets_lost: 1,
            jitter_us: 500,
            rtt_us: None,
            peer_reported_lost: None,
        });
        let text = media_json(&record);
        assert!(text.ends_with(r#""operator":{"packets_sent":10,"packets_received":9,"packets_lost":1,"jitter_us":500}}"#), "{text}");
        assert_eq!(
            parse_media_json(&text).unwrap(),
            (record.caller_media, record.operator_media)
        );
        assert_eq!(
            media_lines(&record),
            [
                "caller: 400 packets sent, 398 received, 2 lost, jitter 1.3 ms; RTT 41.0 ms, peer reports 0 of ours lost",
                "operator: 10 packets sent, 9 received, 1 lost, jitter 0.5 ms; no RTCP reports from the peer",
            ]
        );
        record.caller_media = None;
        record.operator_media = None;
        assert_eq!(media_json(&record), "");
        assert_eq!(parse_media_json("").unwrap(), (None, None));
        assert!(media_lines(&record).is_empty());
        assert!(parse_media_json(r#"{"caller":{"packets_sent":1}}"#).is_err());
    }

    #[test]
    fn prompt_lines_say_what_was_heard_of_each() {
        let mut record = sample();
        record.prompts.push(PlayedPrompt {
            id: "closing".to_owned(),
            version: String::new(),
            sha256: "00".repeat(32),
            length_ms: 1_000,
            ms_sent: 0,
        });
        let lines = prompt_lines(&record);
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            format!(
                "1. three_rules_zh version \"2024-05 \"审定\"\" sha256 {}: 5.0 s sent in full",
                "e5".repeat(32)
            )
        );
        assert!(
            lines[1].starts_with("2. three_rules_en sha256 a9a9"),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].ends_with(": 1.2 s of 2.0 s sent (cut short)"),
            "{}",
            lines[1]
        );
        assert!(lines[2].ends_with(": not reached"), "{}", lines[2]);
    }

    #[test]
    fn canonical_json_of_a_row_without_prompts_is_the_pre_playlist_form() {
        let mut record = sample();
        let with = ExportRow::from(&record).canonical_json();
        assert!(
            with.contains(r#""node_id":"sb-1","prompts":"[{\"id\":\"three_rules_zh\""#),
            "{with}"
        );
        record.prompts.clear();
        // Media figures after an empty prompts column keep that column.
        let media_only = ExportRow::from(&record).canonical_json();
        assert!(
            media_only.contains(r#""node_id":"sb-1","prompts":"","media":"{"#),
            "{media_only}"
        );
        record.caller_media = None;
        // A proxy's address, last, keeps the empty columns before it.
        let proxied = ExportRow::from(&record).canonical_json();
        assert!(
            proxied.ends_with(r#""media":"","flags":"","proxy_source":"127.0.0.1:5080"}"#),
            "{proxied}"
        );
        record.proxy_source.clear();
        let without = ExportRow::from(&record).canonical_json();
        assert!(without.ends_with(r#""node_id":"sb-1"}"#), "{without}");
        assert!(!without.contains("prompts"), "{without}");
        // A row read back from an old export (no prompts field) hashes the same.
        let old: ExportRow = serde_json::from_str(&without).unwrap();
        assert_eq!(old.canonical_json(), without);
    }

    fn render(format: OutputFormat, records: &[CallRecord]) -> String {
        let mut out = Vec::new();
        write_calls(records, format, Clock::Utc, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn end_reason_names_round_trip() {
        for reason in ALL_END_REASONS {
            assert_eq!(parse_end_reason(end_reason_name(reason)), Some(reason));
            assert_eq!(parse_end_reason(reason.as_str_name()), Some(reason));
        }
        assert_eq!(
            parse_end_reason("Caller-Hung-Up-During-Prompt"),
            Some(EndReason::CallerHungUpDuringPrompt)
        );
        assert_eq!(parse_end_reason("hung_up"), None);
        assert_eq!(parse_end_reason(""), None);
    }

    #[test]
    fn parse_time_accepts_rfc3339_and_dates() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Ok(1_000));
        assert_eq!(
            parse_time("2024-05-01T09:30:00.5+08:00"),
            Ok(1_714_527_000_500)
        );
        let midnight = Local
            .with_ymd_and_hms(2024, 5, 1, 0, 0, 0)
            .earliest()
            .unwrap()
            .timestamp_millis();
        assert_eq!(parse_time("2024-05-01"), Ok(midnight));
        assert_eq!(parse_time("2024-05-01T00:00:00"), Ok(midnight));
        assert!(parse_time("yesterday").unwrap_err().contains("yesterday"));
        assert!(parse_time("2024-13-01").is_err());
    }

    #[test]
    fn json_has_every_field_and_keeps_chinese() {
        let text = render(OutputFormat::Json, &[sample()]);
        assert!(text.contains("北京市第一中级人民法院"), "{text}");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let object = value[0].as_object().unwrap();
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        let mut expected = CSV_HEADER.to_vec();
        expected.sort_unstable();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        assert_eq!(keys_sorted, expected);
        assert_eq!(object["end_reason"], "no_answer");
        assert_eq!(object["received_at"], "2024-05-01T01:30:00.123Z");
        assert_eq!(object["received_at_ms"], 1_714_527_000_123_i64);
        assert_eq!(object["operator_answered_at"], serde_json::Value::Null);
        assert_eq!(object["caller_display_name"], "张三, \"律师\"");
        assert_eq!(render(OutputFormat::Json, &[]).trim(), "[]");
    }

    #[test]
    fn csv_header_matches_fields_and_quotes_text() {
        let text = render(OutputFormat::Csv, &[sample()]);
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let header: Vec<String> = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(header, CSV_HEADER);
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 1);
        let field = |name: &str| {
            let index = CSV_HEADER.iter().position(|h| *h == name).unwrap();
            rows[0][index].to_owned()
        };
        assert_eq!(field("court_name"), "北京市第一中级人民法院");
        assert_eq!(field("caller_display_name"), "张三, \"律师\"");
        assert_eq!(field("end_reason"), "no_answer");
        assert_eq!(field("operator_answered_at"), "");
        assert_eq!(field("rtp_packets_received"), "398");
        assert_eq!(
            field("media"),
            r#"{"caller":{"packets_sent":400,"packets_received":398,"packets_lost":2,"jitter_us":1250,"rtt_us":41000,"peer_reported_lost":0}}"#
        );
        // Same field order as JSON.
        let json: serde_json::Value = serde_json::from_str(&record_json(&sample())).unwrap();
        assert_eq!(json["call_id"], field("call_id"));
        assert_eq!(render(OutputFormat::Csv, &[]).trim(), CSV_HEADER.join(","));
    }

    #[test]
    fn record_json_keeps_field_order() {
        let text = record_json(&sample());
        let positions: Vec<usize> = CSV_HEADER
            .iter()
            .map(|name| text.find(&format!("\"{name}\":")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{text}");
    }

    #[test]
    fn table_is_aligned_and_readable() {
        let mut other = sample();
        other.court_name = "Court".to_owned();
        other.caller_display_name = String::new();
        other.end_reason = EndReason::CallerHungUpDuringPrompt as i32;
        other.operator_answered_at_ms = 5;
        other.prompt_completed = false;
        other.ended_at_ms = 0;
        other.call_id = "0a1b2c3d-4e5f-4000-8000-000000000001".to_owned();
        other.flagged = true;
        let text = render(OutputFormat::Table, &[sample(), other]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("ID  "), "{text}");
        // The short id, enough for `calls get`, and whether the call is flagged.
        assert!(
            lines[1].starts_with("6f1c2a9e-3b7d  2024-05-01T01:30:00Z"),
            "{text}"
        );
        assert!(lines[2].starts_with("0a1b2c3d-4e5f  "), "{text}");
        let cells = |line: &str| -> Vec<String> {
            line.split("  ")
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(cells(lines[0])[7], "FLAGGED");
        assert_eq!(cells(lines[1])[7], "no");
        assert_eq!(cells(lines[2])[7], "yes");
        assert!(lines[1].contains("北京市第一中级人民法院"));
        assert!(lines[1].contains("13800138000 \"张三, \"律师\"\""));
        assert!(lines[1].contains("no_answer"));
        assert!(lines[1].ends_with("1:05"));
        assert!(lines[2].contains("caller_hung_up_during_prompt"));
        assert!(lines[2].ends_with('-'));
        // Columns line up in display width: LINE starts at the same column on every line.
        let column_of =
            |line: &str, needle: &str| display_width(&line[..line.find(needle).unwrap()]);
        assert_eq!(column_of(lines[0], "LINE"), column_of(lines[1], "12368"));
        assert_eq!(
            column_of(lines[0], "CALLER"),
            column_of(lines[2], "13800138000")
        );
        assert_eq!(
            column_of(lines[0], "CALLER"),
            column_of(lines[1], "13800138000")
        );
    }

    #[test]
    fn call_ids_are_taken_whole_or_as_a_prefix() {
        let full = "6f1c2a9e-3b7d-4c1e-9a55-0d2f4e8b7c61";
        assert_eq!(short_call_id(full), "6f1c2a9e-3b7d");
        assert_eq!(
            parse_call_id_arg(full),
            Ok(CallIdArg::Full(full.to_owned()))
        );
        assert_eq!(
            parse_call_id_arg("6F1C2A9E3B7D4C1E9A550D2F4E8B7C61"),
            Ok(CallIdArg::Full(full.to_owned()))
        );
        assert_eq!(
            parse_call_id_arg("6f1c2a9e-3b7d"),
            Ok(CallIdArg::Prefix("6f1c2a9e-3b7d".to_owned()))
        );
        assert_eq!(
            parse_call_id_arg("6f1c2a9e3b"),
            Ok(CallIdArg::Prefix("6f1c2a9e-3b".to_owned()))
        );
        assert!(parse_call_id_arg("6f1").unwrap_err().contains("at least"));
        assert!(parse_call_id_arg("张三")
            .unwrap_err()
            .contains("not a call id"));
    }

    #[test]
    fn excel_text_keeps_numbers_as_text_and_defuses_formulas() {
        for (text, cell) in [
            ("02112368", "=\"02112368\""),
            ("13800138000", "=\"13800138000\""),
            ("=1+1", "=\"=1+1\""),
            ("-\"x\"", "=\"-\"\"x\"\"\""),
            ("上海市第一中级人民法院", "上海市第一中级人民法院"),
            ("sip:op@127.0.0.1", "sip:op@127.0.0.1"),
            ("", ""),
        ] {
            assert_eq!(excel_text(text), cell);
            assert_eq!(excel_cell_text(&excel_text(text)), text);
        }
    }

    fn event(seq: u64, at_ms: i64, kind: &str) -> TimelineEvent {
        TimelineEvent {
            seq,
            at_ms,
            kind: kind.to_owned(),
            ..TimelineEvent::default()
        }
    }

    #[test]
    fn timeline_is_in_time_order_with_the_end_last() {
        let mut timeline = vec![
            event(1, 1_000, "received"),
            event(2, 9_000, "ended"),
            event(3, 8_000, "prompt_interrupted"),
            event(4, 9_000, "operator_failed"),
            event(5, 20_000, "flagged"),
        ];
        order_timeline(&mut timeline);
        let kinds: Vec<&str> = timeline.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "received",
                "prompt_interrupted",
                "operator_failed",
                "ended",
                "flagged"
            ]
        );
    }

    #[test]
    fn call_detail_json_is_one_object_and_text_reads_well() {
        let mut record = sample();
        record.flagged = true;
        record.flags = vec![Flag {
            category: FlagCategory::Other as i32,
            note: "自称院长的朋友".to_owned(),
            flagged_by: "zhang.wei".to_owned(),
            flagged_at_ms: 1_714_527_100_000,
        }];
        let timeline = vec![
            event(7, 1_714_527_065_123, "ended"),
            event(6, 1_714_527_008_000, "prompt_interrupted"),
        ];
        let mut out = Vec::new();
        let recording = CallRecording {
            state: "stored".into(),
            sha256: "ab".repeat(32),
            bytes: 96_044,
            sample_rate: 8_000,
            channels: 2,
            duration_ms: 3_000,
            seq: 42,
            ..CallRecording::default()
        };
        write_call_detail(
            &record,
            &timeline,
            Some(&recording),
            DetailFormat::Json,
            Clock::Utc,
            &mut out,
        )
        .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["recording"]["state"], "stored");
        assert_eq!(value["recording"]["sha256"], "ab".repeat(32));
        assert_eq!(value["recording"]["bytes"], 96_044);
        assert_eq!(
            value["recording"]["channel_layout"],
            serde_json::json!(["to_caller", "from_caller"])
        );
        let mut none = Vec::new();
        write_call_detail(
            &record,
            &timeline,
            None,
            DetailFormat::Json,
            Clock::Utc,
            &mut none,
        )
        .unwrap();
        let none: serde_json::Value = serde_json::from_slice(&none).unwrap();
        assert_eq!(none["recording"], serde_json::Value::Null);
        assert_eq!(value["call_id"], record.call_id);
        assert_eq!(value["playlist_length_ms"], 8_000);
        assert_eq!(value["prompts"][1]["ms_sent"], 1_200);
        assert_eq!(value["media"]["caller"]["rtt_us"], 41_000);
        assert_eq!(value["flags"][0]["category"], "other");
        assert_eq!(value["timeline"][0]["kind"], "prompt_interrupted");
        assert_eq!(value["timeline"][1]["at"], "2024-05-01T01:31:05.123Z");

        let mut out = Vec::new();
        write_call_detail(
            &record,
            &timeline,
            None,
            DetailFormat::Text,
            Clock::Utc,
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("call 6f1c2a9e-"), "{text}");
        assert!(
            text.contains("  received_at             2024-05-01T01:30:00.123Z\n"),
            "{text}"
        );
        assert!(
            text.contains("  court_name              北京市第一中级人民法院\n"),
            "{text}"
        );
        assert!(!text.contains("received_at_ms"), "{text}");
        assert!(
            text.contains(
                "flags:\n  1. other by zhang.wei at 2024-05-01T01:31:40Z: 自称院长的朋友\n"
            ),
            "{text}"
        );
        let interrupted = text.find("prompt_interrupted").unwrap();
        assert!(interrupted < text.find(" ended ").unwrap(), "{text}");
        assert!(
            !text.contains("FLAG_CATEGORY") && !text.contains("CHOICE_"),
            "{text}"
        );
    }

    #[test]
    fn duration_formats() {
        assert_eq!(duration(1_000, 66_000), "1:05");
        assert_eq!(duration(1_000, 3_700_000), "1:01:39");
        assert_eq!(duration(1_000, 0), "-");
        assert_eq!(display_width("张三ab"), 6);
    }
}
