//! The row form of a call record: every field in proto order, times also as
//! RFC 3339, enums by name. `calls list` prints it as JSON and CSV, exports
//! hash its canonical JSON, the store keeps its `prompts`/`media` text, and the
//! switchboard logs an undeliverable record in it, so it is shared and stable.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::names::{end_reason_label, flag_category_name, state_label};
use super::pb::{CallRecord, Flag, LegMedia, PlayedPrompt};

/// One record as compact JSON with the same fields as `calls list --format json`;
/// used to log a record that could not be delivered, so it can be re-entered by hand.
pub fn record_json(record: &CallRecord) -> String {
    serde_json::to_string(&NestedRow(&ExportRow::from(record))).unwrap_or_else(|error| {
        // Serialising plain strings and numbers cannot fail; keep the data anyway.
        format!(
            "{{\"serialization_error\":{:?},\"debug\":{:?}}}",
            error.to_string(),
            record
        )
    })
}

/// Every CallRecord field in proto order, times also as RFC 3339, end reason and state
/// by name. Field order here is the column order of JSON objects, CSV and exports;
/// exports hash each row's JSON in exactly this form (the lists as JSON text, as in
/// a CSV cell), so it must stay stable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportRow {
    call_id: String,
    sip_call_id: String,
    line_number: String,
    court_name: String,
    caller_number: String,
    caller_display_name: String,
    caller_source: String,
    user_agent: String,
    codec: String,
    received_at: Option<String>,
    received_at_ms: i64,
    answered_at: Option<String>,
    answered_at_ms: i64,
    prompt_started_at: Option<String>,
    prompt_started_at_ms: i64,
    prompt_ended_at: Option<String>,
    prompt_ended_at_ms: i64,
    operator_answered_at: Option<String>,
    operator_answered_at_ms: i64,
    ended_at: Option<String>,
    ended_at_ms: i64,
    prompt_id: String,
    prompt_sha256: String,
    /// The whole playlist's length (the proto's `prompt_length_ms`; the first
    /// prompt's own length is in `prompts`). Files written before the rename
    /// call it `prompt_length_ms`, and their rows hash with that name.
    #[serde(alias = "prompt_length_ms")]
    playlist_length_ms: u32,
    prompt_ms_sent: u32,
    prompt_completed: bool,
    dtmf_during_prompt: String,
    operator_uri: String,
    end_reason: String,
    sip_final_status: u32,
    rtp_packets_sent: u64,
    rtp_packets_received: u64,
    state: String,
    flagged: bool,
    node_id: String,
    /// Every prompt played, as [`prompts_json`] text (one CSV cell); last, and
    /// left out of the canonical JSON when empty, so rows of exports made
    /// before playlists existed hash (and verify) as they did then.
    #[serde(default)]
    prompts: String,
    /// Both legs' RTP/RTCP figures, as [`media_json`] text (one CSV cell);
    /// after `prompts` and left out of the canonical JSON when empty, for the
    /// same reason.
    #[serde(default)]
    media: String,
    /// The call's flags, as [`flags_json`] text (one CSV cell); after `media`
    /// and left out of the canonical JSON when empty, for the same reason.
    #[serde(default)]
    flags: String,
    /// The trusted SIP proxy the call came through; after `flags` and left out
    /// of the canonical JSON when empty, for the same reason.
    #[serde(default)]
    proxy_source: String,
    /// Read from a file written when `playlist_length_ms` was `prompt_length_ms`:
    /// [`ExportRow::canonical_json`] uses the old name so its hash still matches.
    #[serde(skip)]
    legacy_length_name: bool,
}

/// One flag as it appears in records' `flags` text.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlagEntry {
    /// [`Flag::category`] by [`flag_category_name`].
    category: String,
    /// [`Flag::note`].
    note: String,
    /// [`Flag::flagged_by`].
    flagged_by: String,
    /// [`Flag::flagged_at_ms`] as RFC 3339 UTC.
    flagged_at: Option<String>,
    /// [`Flag::flagged_at_ms`].
    flagged_at_ms: i64,
}

/// A call's flags as compact JSON text, the form CSV cells and row hashes keep;
/// `""` for none.
pub fn flags_json(flags: &[Flag]) -> String {
    if flags.is_empty() {
        return String::new();
    }
    let entries: Vec<FlagEntry> = flags
        .iter()
        .map(|flag| FlagEntry {
            category: flag_category_name(flag.category()).to_owned(),
            note: flag.note.clone(),
            flagged_by: flag.flagged_by.clone(),
            flagged_at: rfc3339(flag.flagged_at_ms),
            flagged_at_ms: flag.flagged_at_ms,
        })
        .collect();
    // Strings and integers always serialise.
    serde_json::to_string(&entries).unwrap_or_default()
}

/// The columns whose cells hold JSON text, and the JSON for "none" that stands for
/// an empty cell in [`NestedRow`].
pub const NESTED_COLUMNS: [(&str, &str); 3] =
    [("prompts", "[]"), ("media", "null"), ("flags", "[]")];

/// A column's JSON text parsed into its typed entries, so nested output keeps their
/// field order; `None` for a column that holds no JSON text.
fn nested_value(column: &str, text: &str) -> Result<Option<serde_json::Value>, serde_json::Error> {
    fn typed<T: serde::de::DeserializeOwned + Serialize>(
        text: &str,
    ) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(serde_json::from_str::<T>(text)?)
    }
    let value = match (column, text) {
        (_, "") => None,
        ("prompts", _) => Some(typed::<Vec<PromptEntry>>(text)?),
        ("media", _) => Some(typed::<MediaEntry>(text)?),
        ("flags", _) => Some(typed::<Vec<FlagEntry>>(text)?),
        _ => None,
    };
    Ok(value)
}

/// A row as JSON tools read it: every column in order, with `prompts`, `media`
/// and `flags` as nested arrays/objects instead of JSON text (always present:
/// `[]`/`null` for none). What `calls list|get --format json` print and
/// JSON Lines exports hold; [`ExportRow::from_nested`] reads it back.
pub struct NestedRow<'a>(pub &'a ExportRow);

impl Serialize for NestedRow<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap};
        let fields = match serde_json::to_value(self.0).map_err(S::Error::custom)? {
            serde_json::Value::Object(fields) => fields,
            _ => return Err(S::Error::custom("a row serialises as an object")),
        };
        let mut map = serializer.serialize_map(Some(CSV_HEADER.len()))?;
        for name in CSV_HEADER {
            let value = fields.get(name).unwrap_or(&serde_json::Value::Null);
            match NESTED_COLUMNS.iter().find(|(column, _)| *column == name) {
                Some((column, none)) => {
                    let text = value.as_str().unwrap_or_default();
                    let nested = nested_value(column, text).map_err(S::Error::custom)?;
                    match nested {
                        Some(nested) => map.serialize_entry(name, &nested)?,
                        None => map.serialize_entry(
                            name,
                            &serde_json::from_str::<serde_json::Value>(none)
                                .map_err(S::Error::custom)?,
                        )?,
                    }
                }
                None => map.serialize_entry(name, value)?,
            }
        }
        map.end()
    }
}

/// One leg's figures as they appear in records' `media` text (proto field names).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegMediaEntry {
    /// [`LegMedia::packets_sent`].
    packets_sent: u64,
    /// [`LegMedia::packets_received`].
    packets_received: u64,
    /// [`LegMedia::packets_lost`].
    packets_lost: u64,
    /// [`LegMedia::jitter_us`].
    jitter_us: u32,
    /// [`LegMedia::rtt_us`]; absent when the peer sent no RTCP report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rtt_us: Option<u32>,
    /// [`LegMedia::peer_reported_lost`]; absent when the peer sent no RTCP report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    peer_reported_lost: Option<i32>,
}

impl From<&LegMedia> for LegMediaEntry {
    fn from(m: &LegMedia) -> Self {
        LegMediaEntry {
            packets_sent: m.packets_sent,
            packets_received: m.packets_received,
            packets_lost: m.packets_lost,
            jitter_us: m.jitter_us,
            rtt_us: m.rtt_us,
            peer_reported_lost: m.peer_reported_lost,
        }
    }
}

impl From<LegMediaEntry> for LegMedia {
    fn from(e: LegMediaEntry) -> Self {
        LegMedia {
            packets_sent: e.packets_sent,
            packets_received: e.packets_received,
            packets_lost: e.packets_lost,
            jitter_us: e.jitter_us,
            rtt_us: e.rtt_us,
            peer_reported_lost: e.peer_reported_lost,
        }
    }
}

/// Both legs' figures in records' `media` text; a leg without media is left out.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MediaEntry {
    /// [`CallRecord::caller_media`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    caller: Option<LegMediaEntry>,
    /// [`CallRecord::operator_media`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    operator: Option<LegMediaEntry>,
}

/// A call's per-leg media figures as compact JSON text, the form the calls
/// table, CSV and exports keep; `""` when neither leg had media.
pub fn media_json(record: &CallRecord) -> String {
    if record.caller_media.is_none() && record.operator_media.is_none() {
        return String::new();
    }
    let entry = MediaEntry {
        caller: record.caller_media.as_ref().map(LegMediaEntry::from),
        operator: record.operator_media.as_ref().map(LegMediaEntry::from),
    };
    // Integers always serialise.
    serde_json::to_string(&entry).unwrap_or_default()
}

/// The inverse of [`media_json`]: `(caller_media, operator_media)`; the error
/// says what is wrong with the text.
pub fn parse_media_json(text: &str) -> Result<(Option<LegMedia>, Option<LegMedia>), String> {
    if text.is_empty() {
        return Ok((None, None));
    }
    let entry: MediaEntry = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok((
        entry.caller.map(LegMedia::from),
        entry.operator.map(LegMedia::from),
    ))
}

/// One prompt as it appears in records' `prompts` text, in proto field order.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptEntry {
    /// [`PlayedPrompt::id`].
    id: String,
    /// [`PlayedPrompt::version`].
    version: String,
    /// [`PlayedPrompt::sha256`].
    sha256: String,
    /// [`PlayedPrompt::length_ms`].
    length_ms: u32,
    /// [`PlayedPrompt::ms_sent`].
    ms_sent: u32,
}

/// A call's prompts as compact JSON text, the form the calls table, CSV and
/// exports keep; `""` for none (calls recorded before playlists existed).
pub fn prompts_json(prompts: &[PlayedPrompt]) -> String {
    if prompts.is_empty() {
        return String::new();
    }
    let entries: Vec<PromptEntry> = prompts
        .iter()
        .map(|p| PromptEntry {
            id: p.id.clone(),
            version: p.version.clone(),
            sha256: p.sha256.clone(),
            length_ms: p.length_ms,
            ms_sent: p.ms_sent,
        })
        .collect();
    // Strings and integers always serialise.
    serde_json::to_string(&entries).unwrap_or_default()
}

/// The inverse of [`prompts_json`]; the error says what is wrong with the text.
pub fn parse_prompts_json(text: &str) -> Result<Vec<PlayedPrompt>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let entries: Vec<PromptEntry> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(entries
        .into_iter()
        .map(|e| PlayedPrompt {
            id: e.id,
            version: e.version,
            sha256: e.sha256,
            length_ms: e.length_ms,
            ms_sent: e.ms_sent,
        })
        .collect())
}

impl ExportRow {
    /// A row from its JSON object as [`NestedRow`] writes it, or as older
    /// courtlines wrote it (lists as JSON text, `prompt_length_ms`).
    pub fn from_nested(
        mut fields: serde_json::Map<String, serde_json::Value>,
    ) -> Result<ExportRow, String> {
        let legacy_length_name = fields.contains_key("prompt_length_ms");
        for (column, _) in NESTED_COLUMNS {
            let text = match fields.get(column) {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(text)) => text.clone(),
                Some(serde_json::Value::Array(items)) if items.is_empty() => String::new(),
                Some(value) => {
                    // Back to the cell text through the typed entries: the text
                    // the row was hashed with, whatever the key order in the file.
                    let typed = match column {
                        "prompts" => serde_json::from_value::<Vec<PromptEntry>>(value.clone())
                            .and_then(|entries| serde_json::to_string(&entries)),
                        "media" => serde_json::from_value::<MediaEntry>(value.clone())
                            .and_then(|entry| serde_json::to_string(&entry)),
                        _ => serde_json::from_value::<Vec<FlagEntry>>(value.clone())
                            .and_then(|entries| serde_json::to_string(&entries)),
                    };
                    typed.map_err(|error| format!("{column}: {error}"))?
                }
            };
            fields.insert(column.to_owned(), text.into());
        }
        let mut row: ExportRow = serde_json::from_value(serde_json::Value::Object(fields))
            .map_err(|error| error.to_string())?;
        row.legacy_length_name = legacy_length_name;
        Ok(row)
    }

    /// The same row as read from a file whose header names the playlist length
    /// `prompt_length_ms` (hashes with that name) when `legacy` is set.
    pub fn with_legacy_length_name(mut self, legacy: bool) -> ExportRow {
        self.legacy_length_name = legacy;
        self
    }

    /// The row's call id.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// The canonical JSON of the row: what exports hash. Empty optional
    /// columns at the end (`media`, then `prompts`) are left out, as rows were
    /// before those columns existed.
    pub fn canonical_json(&self) -> String {
        // Strings, numbers and booleans always serialise.
        let mut json = serde_json::to_string(self).unwrap_or_default();
        if self.legacy_length_name {
            // Keys are never inside strings here: a quote in a value is escaped.
            json = json.replacen(",\"playlist_length_ms\":", ",\"prompt_length_ms\":", 1);
        }
        for column in OPTIONAL_COLUMNS.iter().rev() {
            match json.strip_suffix(&format!(",\"{column}\":\"\"}}")) {
                Some(head) => json = format!("{head}}}"),
                None => break,
            }
        }
        json
    }
}

/// CSV header; must list [`ExportRow`]'s fields in order (a test checks it).
pub const CSV_HEADER: [&str; 39] = [
    "call_id",
    "sip_call_id",
    "line_number",
    "court_name",
    "caller_number",
    "caller_display_name",
    "caller_source",
    "user_agent",
    "codec",
    "received_at",
    "received_at_ms",
    "answered_at",
    "answered_at_ms",
    "prompt_started_at",
    "prompt_started_at_ms",
    "prompt_ended_at",
    "prompt_ended_at_ms",
    "operator_answered_at",
    "operator_answered_at_ms",
    "ended_at",
    "ended_at_ms",
    "prompt_id",
    "prompt_sha256",
    "playlist_length_ms",
    "prompt_ms_sent",
    "prompt_completed",
    "dtmf_during_prompt",
    "operator_uri",
    "end_reason",
    "sip_final_status",
    "rtp_packets_sent",
    "rtp_packets_received",
    "state",
    "flagged",
    "node_id",
    "prompts",
    "media",
    "flags",
    "proxy_source",
];

/// Trailing columns that older exports lack, in order: a file may miss the
/// last one or more of them, and their empty values stay out of row hashes.
pub const OPTIONAL_COLUMNS: [&str; 4] = ["prompts", "media", "flags", "proxy_source"];

/// What files written before `playlist_length_ms` was renamed call that column.
pub const LEGACY_LENGTH_COLUMN: &str = "prompt_length_ms";

impl From<&CallRecord> for ExportRow {
    fn from(r: &CallRecord) -> Self {
        ExportRow {
            call_id: r.call_id.clone(),
            sip_call_id: r.sip_call_id.clone(),
            line_number: r.line_number.clone(),
            court_name: r.court_name.clone(),
            caller_number: r.caller_number.clone(),
            caller_display_name: r.caller_display_name.clone(),
            caller_source: r.caller_source.clone(),
            user_agent: r.user_agent.clone(),
            codec: r.codec.clone(),
            received_at: rfc3339(r.received_at_ms),
            received_at_ms: r.received_at_ms,
            answered_at: rfc3339(r.answered_at_ms),
            answered_at_ms: r.answered_at_ms,
            prompt_started_at: rfc3339(r.prompt_started_at_ms),
            prompt_started_at_ms: r.prompt_started_at_ms,
            prompt_ended_at: rfc3339(r.prompt_ended_at_ms),
            prompt_ended_at_ms: r.prompt_ended_at_ms,
            operator_answered_at: rfc3339(r.operator_answered_at_ms),
            operator_answered_at_ms: r.operator_answered_at_ms,
            ended_at: rfc3339(r.ended_at_ms),
            ended_at_ms: r.ended_at_ms,
            prompt_id: r.prompt_id.clone(),
            prompt_sha256: r.prompt_sha256.clone(),
            playlist_length_ms: r.prompt_length_ms,
            prompt_ms_sent: r.prompt_ms_sent,
            prompt_completed: r.prompt_completed,
            dtmf_during_prompt: r.dtmf_during_prompt.clone(),
            operator_uri: r.operator_uri.clone(),
            end_reason: end_reason_label(r.end_reason).into_owned(),
            sip_final_status: r.sip_final_status,
            rtp_packets_sent: r.rtp_packets_sent,
            rtp_packets_received: r.rtp_packets_received,
            state: state_label(r.state).into_owned(),
            flagged: r.flagged,
            node_id: r.node_id.clone(),
            prompts: prompts_json(&r.prompts),
            media: media_json(r),
            flags: flags_json(&r.flags),
            proxy_source: r.proxy_source.clone(),
            legacy_length_name: false,
        }
    }
}

/// Every field of `record` by CSV column name, as text; `verify` diffs rows with it.
pub fn record_fields(record: &CallRecord) -> Vec<(&'static str, String)> {
    let value = serde_json::to_value(ExportRow::from(record)).unwrap_or_default();
    CSV_HEADER
        .iter()
        .map(|name| {
            let text = match value.get(*name) {
                Some(serde_json::Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            (*name, text)
        })
        .collect()
}

/// UTC RFC 3339 with milliseconds; `None` for 0, which the proto uses for "did not happen".
pub fn rfc3339(ms: i64) -> Option<String> {
    if ms == 0 {
        return None;
    }
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|time| time.to_rfc3339_opts(SecondsFormat::Millis, true))
}
