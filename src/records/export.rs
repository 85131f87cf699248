//! Exports that can be checked on their own, years later, far from the records service.
//!
//! An export file (CSV or JSON Lines) holds one row per call — every field of
//! `calls list --format json`, flags included — plus a `row_hash` column that
//! chains the rows: `row_hash[i] = H(row_hash[i-1] ‖ canonical JSON of row i)`
//! (32 zero bytes before the first row). The canonical JSON keeps `prompts`,
//! `media` and `flags` as JSON text, as CSV cells do, so one digest covers both
//! formats; JSON Lines rows nest them, and verification turns them back.
//! An Excel-dialect CSV ([`CsvDialect::Excel`]) verifies like a plain one. Its last line is the manifest: the filters, the sort,
//! the row count, the last row hash, the records chain's head when the export
//! began, who exported and why — as canonical JSON, signed with the records
//! service's Ed25519 key. `courtline records verify-export FILE` recomputes the
//! row hashes and checks the signature; nothing else is needed.
//!
//! In CSV the manifest is a final record whose first field is
//! [`CSV_MANIFEST_MARKER`]; in JSON Lines it is a final object with the single key
//! `courtline_export_manifest`.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use super::chain::{HashAlgorithm, GENESIS_PREV};
use super::ledger::signing::{
    fingerprint, manifest_signature_valid, public_key_of_seed, PASS_THE_PUBLIC_KEY,
};
use super::query::{csv_cells, excel_cell_text, CsvDialect, UTF8_BOM};
use crate::contract::digest::sha256_and_length;
use crate::contract::pb::{CallRecord, ExportFormat, ExportManifest};
use crate::contract::row::{
    ExportRow, NestedRow, CSV_HEADER, LEGACY_LENGTH_COLUMN, OPTIONAL_COLUMNS,
};

/// First field of the CSV record that carries the manifest.
pub const CSV_MANIFEST_MARKER: &str = "#courtline-export-manifest";
/// Key of the JSON Lines object that carries the manifest.
const JSONL_MANIFEST_KEY: &str = "courtline_export_manifest";
/// Name of the hash column.
const ROW_HASH: &str = "row_hash";
/// Tag of the manifest format.
pub const MANIFEST_VERSION: &str = "courtline-export-v1";

/// Why an export could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading or writing the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The CSV layer failed.
    #[error("CSV: {0}")]
    Csv(#[from] csv::Error),
    /// A line is not what an export holds.
    #[error("line {line}: {problem}")]
    Malformed {
        /// 1-based line (JSONL) or record (CSV) number.
        line: u64,
        /// What is wrong.
        problem: String,
    },
    /// The file has no manifest at its end.
    #[error("no manifest at the end of the file: the export is incomplete or was cut")]
    NoManifest,
    /// The key given to trust is the private seed of the key that signed the export.
    #[error("the trusted key given: {PASS_THE_PUBLIC_KEY}")]
    PrivateKeyGiven,
}

/// What the service signs about an export (field order is the canonical JSON's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestContent {
    /// [`MANIFEST_VERSION`].
    pub format: String,
    /// "csv" or "jsonl".
    pub file_format: String,
    /// When the export started.
    pub exported_at_ms: i64,
    /// Token name of the exporter.
    pub exported_by: String,
    /// The reason given, if any.
    pub reason: String,
    /// The filters, as JSON.
    pub filter: serde_json::Value,
    /// "newest_first" or "oldest_first".
    pub sort: String,
    /// Rows in the file.
    pub count: u64,
    /// The last row's `row_hash` (hex; zeros for an empty export).
    pub rows_digest: String,
    /// Hash function of the rows and of the records chain.
    pub hash_algorithm: String,
    /// The records chain's head when the export began.
    pub chain_head_seq: u64,
    /// Its hash, hex.
    pub chain_head_hash: String,
    /// Whether the export was asked with its calls' recordings (an archive,
    /// `calls export --with-audio`); absent in exports without.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub with_audio: bool,
    /// Every exported call's kept recording, as its chained event has it: what the
    /// archive must hold, byte for byte.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recordings: Vec<RecordingFile>,
}

/// One recording of an archive, as the records service signs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingFile {
    /// Its name in the archive ([`recording_name`]).
    pub name: String,
    /// The call.
    pub call_id: String,
    /// Length, as chained.
    pub bytes: u64,
    /// SHA-256 (hex), as chained.
    pub sha256: String,
    /// Chain position of the call's recording event.
    pub seq: u64,
}

/// The name of call `call_id`'s recording in an archive.
pub fn recording_name(call_id: &str) -> String {
    format!("recordings/{call_id}.wav")
}

/// The name of the signed manifest in an archive.
pub const ARCHIVE_MANIFEST: &str = "manifest.json";

/// The name of the export file in an archive of `file_format` ("csv", "jsonl").
pub fn archive_export_name(file_format: &str) -> String {
    format!("calls.{file_format}")
}

/// Running row-hash chain of an export.
#[derive(Debug, Clone)]
pub struct RowChain {
    /// Hash function.
    algorithm: HashAlgorithm,
    /// The last row's hash.
    last: [u8; 32],
    /// Rows so far.
    count: u64,
}

impl RowChain {
    /// An empty chain.
    pub fn new(algorithm: HashAlgorithm) -> RowChain {
        RowChain {
            algorithm,
            last: GENESIS_PREV,
            count: 0,
        }
    }

    /// Adds `row`; returns its `row_hash`.
    pub fn push(&mut self, row: &ExportRow) -> [u8; 32] {
        self.push_canonical(&row.canonical_json())
    }

    /// Adds a row by its canonical form; returns its `row_hash`.
    pub fn push_canonical(&mut self, canonical: &str) -> [u8; 32] {
        self.last = self.hash_after(&self.last, canonical);
        self.count += 1;
        self.last
    }

    /// The `row_hash` of a row with canonical form `canonical` after `previous`.
    pub fn hash_after(&self, previous: &[u8], canonical: &str) -> [u8; 32] {
        self.algorithm
            .digest_parts(&[previous, canonical.as_bytes()])
    }

    /// Rows so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The last row's hash, hex.
    pub fn digest_hex(&self) -> String {
        hex::encode(self.last)
    }
}

/// The file-format name used in manifests and on the command line.
pub fn format_name(format: ExportFormat) -> &'static str {
    match format {
        ExportFormat::Csv => "csv",
        ExportFormat::Jsonl => "jsonl",
        ExportFormat::Unspecified => "unspecified",
    }
}

/// Writes an export file while records stream in.
pub struct ExportWriter<W: Write> {
    /// CSV or JSONL.
    format: ExportFormat,
    /// How CSV cells are written.
    dialect: CsvDialect,
    /// Where rows go.
    out: W,
    /// The row hashes, checked against the manifest at the end.
    chain: RowChain,
}

impl<W: Write> ExportWriter<W> {
    /// Starts a file (the CSV header is written at once).
    pub fn new(
        format: ExportFormat,
        algorithm: HashAlgorithm,
        out: W,
    ) -> Result<ExportWriter<W>, ExportError> {
        ExportWriter::with_dialect(format, CsvDialect::Plain, algorithm, out)
    }

    /// Starts a file whose CSV (if it is CSV) is written in `dialect`.
    pub fn with_dialect(
        format: ExportFormat,
        dialect: CsvDialect,
        algorithm: HashAlgorithm,
        mut out: W,
    ) -> Result<ExportWriter<W>, ExportError> {
        if format == ExportFormat::Csv {
            if dialect == CsvDialect::Excel {
                out.write_all(UTF8_BOM.as_bytes())?;
            }
            let mut header = csv::Writer::from_writer(&mut out);
            header.write_record(CSV_HEADER.iter().chain(&[ROW_HASH]))?;
            header.flush()?;
        }
        Ok(ExportWriter {
            format,
            dialect,
            out,
            chain: RowChain::new(algorithm),
        })
    }

    /// Appends one call.
    pub fn write(&mut self, record: &CallRecord) -> Result<(), ExportError> {
        let row = ExportRow::from(record);
        let hash = hex::encode(self.chain.push(&row));
        match self.format {
            ExportFormat::Csv => {
                let mut writer = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(&mut self.out);
                let mut cells = csv_cells(&row, self.dialect);
                cells.push(hash);
                writer.write_record(&cells)?;
                writer.flush()?;
            }
            _ => {
                let json = serde_json::to_string(&NestedRow(&row)).map_err(|error| {
                    ExportError::Malformed {
                        line: self.chain.count(),
                        problem: format!("call {}: {error}", row.call_id()),
                    }
                })?;
                let body = json.strip_suffix('}').unwrap_or(&json);
                writeln!(self.out, "{body},\"{ROW_HASH}\":\"{hash}\"}}")?;
            }
        }
        Ok(())
    }

    /// Rows written and the row digest, to compare with the manifest the service sent.
    pub fn rows(&self) -> (u64, String) {
        (self.chain.count(), self.chain.digest_hex())
    }

    /// Appends the manifest and flushes.
    pub fn finish(mut self, manifest: &ExportManifest) -> Result<W, ExportError> {
        let signed = SignedManifest::from(manifest).json();
        match self.format {
            ExportFormat::Csv => write_csv_manifest(&mut self.out, &signed)?,
            _ => writeln!(
                self.out,
                "{}",
                serde_json::json!({ JSONL_MANIFEST_KEY: signed })
            )?,
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// What `verify-export` found.
#[derive(Debug, Default)]
pub struct ExportCheck {
    /// The manifest, if one was found and parsed.
    pub manifest: Option<ManifestContent>,
    /// The key that signed it, hex.
    pub public_key: String,
    /// Rows read.
    pub rows: u64,
    /// Recordings an archive's manifest lists (each checked).
    pub recordings: u64,
    /// Everything wrong, one line each; empty = the file is intact.
    pub problems: Vec<String>,
}

/// One parsed line of an export.
enum Line {
    /// A row and its stored `row_hash`.
    Row(Box<ExportRow>, String),
    /// The signed manifest.
    Manifest(SignedManifest),
}

/// The manifest as stored in a file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SignedManifest {
    /// The canonical JSON that was signed.
    pub json: String,
    /// Hex signature.
    pub signature: String,
    /// Hex public key.
    pub public_key: String,
}

impl From<&ExportManifest> for SignedManifest {
    fn from(manifest: &ExportManifest) -> SignedManifest {
        SignedManifest {
            json: manifest.json.clone(),
            signature: manifest.signature.clone(),
            public_key: manifest.public_key.clone(),
        }
    }
}

impl SignedManifest {
    /// As written into files.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "json": self.json,
            "signature": self.signature,
            "public_key": self.public_key,
        })
    }

    /// Checks the signature (and, with `trusted`, the signer) into `check`, and reads
    /// the content; `None` (with a problem noted) when it cannot be read.
    pub fn check(
        &self,
        trusted: Option<[u8; 32]>,
        check: &mut ExportCheck,
    ) -> Result<Option<ManifestContent>, ExportError> {
        check.public_key = self.public_key.clone();
        if !manifest_signature_valid(&self.public_key, &self.json, &self.signature) {
            check.problems.push(
                "the manifest's signature does not match it: the manifest was altered".into(),
            );
        }
        if let Some(key) = trusted {
            if hex::encode(key) != self.public_key {
                // The trusted key may be a secret passed by mistake: name it only by fingerprint.
                if hex::encode(public_key_of_seed(&key)) == self.public_key {
                    return Err(ExportError::PrivateKeyGiven);
                }
                let signer =
                    <[u8; 32]>::try_from(hex::decode(&self.public_key).unwrap_or_default())
                        .map(|signer| format!(" ({})", fingerprint(&signer)))
                        .unwrap_or_default();
                check.problems.push(format!(
                    "the manifest is signed by key {}{signer}, not by the trusted key {}",
                    self.public_key,
                    fingerprint(&key)
                ));
            }
        }
        match serde_json::from_str(&self.json) {
            Ok(manifest) => Ok(Some(manifest)),
            Err(error) => {
                check
                    .problems
                    .push(format!("the manifest cannot be read: {error}"));
                Ok(None)
            }
        }
    }
}

/// One JSON Lines line: the manifest wrapper, or a row with its `row_hash`.
fn json_line(text: &str) -> Result<Line, String> {
    let mut fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|error| error.to_string())?;
    if let Some(manifest) = fields.remove(JSONL_MANIFEST_KEY) {
        return serde_json::from_value(manifest)
            .map(Line::Manifest)
            .map_err(|error| format!("manifest: {error}"));
    }
    let hash = match fields.remove(ROW_HASH) {
        Some(serde_json::Value::String(hash)) => hash,
        _ => return Err(format!("no {ROW_HASH} text")),
    };
    Ok(Line::Row(Box::new(ExportRow::from_nested(fields)?), hash))
}

fn read_lines(reader: impl BufRead) -> Result<Vec<Result<Line, ExportError>>, ExportError> {
    let mut reader = reader;
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut lines = Vec::new();
    if first.starts_with('{') {
        for (index, text) in std::iter::once(Ok(first)).chain(reader.lines()).enumerate() {
            let text = text?;
            if text.trim().is_empty() {
                continue;
            }
            let line = (index + 1) as u64;
            lines
                .push(json_line(&text).map_err(|problem| ExportError::Malformed { line, problem }));
        }
        return Ok(lines);
    }
    // A byte-order mark starts an Excel-dialect file, whose cells may be `="..."`.
    let (dialect, header) = match first.strip_prefix(UTF8_BOM) {
        Some(header) => (CsvDialect::Excel, header),
        None => (CsvDialect::Plain, first.as_str()),
    };
    let header_of = |columns: &[&str], legacy: bool| {
        columns
            .iter()
            .chain(&[ROW_HASH])
            .map(|column| match *column {
                "playlist_length_ms" if legacy => LEGACY_LENGTH_COLUMN,
                column => column,
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    // Exports made by an older courtline lack the last optional columns
    // (`flags`, then also `media`, then also `prompts`) and call the playlist
    // length `prompt_length_ms`: such rows read as having those columns empty
    // and hash with the old name, exactly as they were written.
    let (missing, legacy) = (0..=OPTIONAL_COLUMNS.len())
        .flat_map(|missing| [(missing, false), (missing, true)])
        .find(|&(missing, legacy)| {
            header.trim_end() == header_of(&CSV_HEADER[..CSV_HEADER.len() - missing], legacy)
        })
        .ok_or_else(|| ExportError::Malformed {
            line: 1,
            problem: "not a courtline export (the CSV header differs)".into(),
        })?;
    let written = CSV_HEADER.len() - missing;
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(reader);
    for (index, record) in csv.records().enumerate() {
        let line = (index + 2) as u64;
        let record = record?;
        if record.get(0) == Some(CSV_MANIFEST_MARKER) {
            lines.push(
                serde_json::from_str(record.get(1).unwrap_or_default())
                    .map(Line::Manifest)
                    .map_err(|error| ExportError::Malformed {
                        line,
                        problem: format!("manifest: {error}"),
                    }),
            );
            continue;
        }
        let mut record = match dialect {
            CsvDialect::Plain => record,
            CsvDialect::Excel => record.iter().map(excel_cell_text).collect(),
        };
        if missing > 0 && record.len() == written + 1 {
            let mut padded: csv::StringRecord = record.iter().take(written).collect();
            for _ in 0..missing {
                padded.push_field("");
            }
            padded.push_field(record.get(written).unwrap_or_default());
            record = padded;
        }
        lines.push(
            record
                .deserialize::<(ExportRow, String)>(None)
                .map(|(row, hash)| Line::Row(Box::new(row.with_legacy_length_name(legacy)), hash))
                .map_err(|error| ExportError::Malformed {
                    line,
                    problem: error.to_string(),
                }),
        );
    }
    Ok(lines)
}

/// Checks an export file: every row hash, the count, the digest and the signature.
/// `trusted` pins the signing key; without it the key in the file is used and the
/// report says so.
pub fn verify_export(
    reader: impl BufRead,
    trusted: Option<[u8; 32]>,
) -> Result<ExportCheck, ExportError> {
    let lines = read_lines(reader)?;
    let mut check = ExportCheck::default();
    let mut signed = None;
    let mut rows: Vec<(u64, ExportRow, String)> = Vec::new();
    for (index, line) in lines.into_iter().enumerate() {
        let number = index as u64 + 1;
        match line {
            Err(error) => check.problems.push(error.to_string()),
            Ok(Line::Manifest(manifest)) => {
                if signed.is_some() {
                    check
                        .problems
                        .push(format!("line {number}: a second manifest"));
                }
                signed = Some(manifest);
            }
            Ok(Line::Row(row, hash)) => {
                if signed.is_some() {
                    check.problems.push(format!(
                        "line {number}: row for call {} after the manifest (appended later)",
                        row.call_id()
                    ));
                }
                rows.push((number, *row, hash));
            }
        }
    }
    let Some(signed) = signed else {
        return Err(ExportError::NoManifest);
    };
    let Some(manifest) = signed.check(trusted, &mut check)? else {
        return Ok(check);
    };
    let rows = rows.iter().map(|(number, row, stored)| ReadRow {
        canonical: row.canonical_json(),
        stored,
        named: format!("line {number}: row for call {}", row.call_id()),
    });
    check_rows(&mut check, manifest, MANIFEST_VERSION, "calls", rows);
    Ok(check)
}

/// One row of an export as read back, for [`check_rows`].
pub(crate) struct ReadRow<'a> {
    /// What its `row_hash` covers.
    pub canonical: String,
    /// Its `row_hash` as stored.
    pub stored: &'a str,
    /// How a problem names it ("line 3: row for call …").
    pub named: String,
}

/// Checks a signed, readable `manifest` against the rows read back into `check`: that
/// it is of `version` (an export of `kind`), every row hash, the count and the digest;
/// then keeps it in `check`.
pub(crate) fn check_rows<'a>(
    check: &mut ExportCheck,
    manifest: ManifestContent,
    version: &str,
    kind: &str,
    rows: impl Iterator<Item = ReadRow<'a>>,
) {
    if manifest.format != version {
        check.problems.push(format!(
            "the manifest is of a {:?} export, not of {kind}",
            manifest.format
        ));
    }
    let algorithm = HashAlgorithm::from_name(&manifest.hash_algorithm).unwrap_or_default();
    let chain = RowChain::new(algorithm);
    let mut previous = GENESIS_PREV.to_vec();
    let mut count = 0;
    for row in rows {
        count += 1;
        let expected = hex::encode(chain.hash_after(&previous, &row.canonical));
        if expected != row.stored {
            check.problems.push(format!(
                "{} was modified, or a row before it was removed or moved",
                row.named
            ));
        }
        previous = hex::decode(row.stored).unwrap_or_default();
    }
    check.rows = count;
    if check.rows != manifest.count {
        check.problems.push(format!(
            "the file has {} rows, the manifest says {}",
            check.rows, manifest.count
        ));
    }
    if count > 0 && hex::encode(&previous) != manifest.rows_digest {
        check.problems.push(
            "the last row hash differs from the signed digest: rows were changed, removed or added"
                .into(),
        );
    }
    check.manifest = Some(manifest);
}

/// Ends a CSV export with its manifest record: [`CSV_MANIFEST_MARKER`], then the
/// signed manifest as JSON.
pub(crate) fn write_csv_manifest(
    out: &mut impl Write,
    signed: &serde_json::Value,
) -> Result<(), ExportError> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_writer(out);
    writer.write_record([CSV_MANIFEST_MARKER, &signed.to_string()])?;
    writer.flush()?;
    Ok(())
}

/// Whether `start` (a file's first 512 bytes or more) is a tar archive's first header.
pub fn is_archive(start: &[u8]) -> bool {
    start.get(257..262) == Some(b"ustar")
}

/// Appends `bytes` bytes read from `data` to `archive` as the regular file `name`,
/// modified at `mtime` (Unix seconds).
pub fn append_file<W: Write>(
    archive: &mut tar::Builder<W>,
    name: &str,
    bytes: u64,
    mtime: u64,
    data: impl std::io::Read,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(bytes);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    archive.append_data(&mut header, name, data)
}

/// A file of an archive as read back: its length and SHA-256.
struct ArchivedFile {
    /// Its name in the archive.
    name: String,
    /// Length.
    bytes: u64,
    /// SHA-256, hex.
    sha256: String,
}

/// Checks an archive of `calls export --with-audio`: the signed `manifest.json`, the
/// export file in it (every row, as [`verify_export`], and that its own manifest is
/// the same), and every recording the manifest lists, by length and SHA-256. Each
/// file missing, changed or not listed is named.
pub fn verify_archive(
    reader: impl std::io::Read,
    trusted: Option<[u8; 32]>,
) -> Result<ExportCheck, ExportError> {
    use std::io::Read;
    let mut check = ExportCheck::default();
    let mut signed: Option<SignedManifest> = None;
    let mut export: Option<(String, Vec<u8>)> = None;
    let mut files: Vec<ArchivedFile> = Vec::new();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if name == ARCHIVE_MANIFEST {
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            match serde_json::from_str(&text) {
                Ok(manifest) => signed = Some(manifest),
                Err(error) => check
                    .problems
                    .push(format!("{ARCHIVE_MANIFEST} cannot be read: {error}")),
            }
        } else if name.starts_with("calls.") && export.is_none() {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            export = Some((name, bytes));
        } else {
            let (bytes, sha256) = sha256_and_length(&mut entry)?;
            files.push(ArchivedFile {
                name,
                bytes,
                sha256,
            });
        }
    }
    let Some(signed) = signed else {
        return Err(ExportError::NoManifest);
    };
    let Some(manifest) = signed.check(trusted, &mut check)? else {
        return Ok(check);
    };
    if !manifest.with_audio {
        check
            .problems
            .push("the signed manifest is not of an export with audio".into());
    }
    let expected = archive_export_name(&manifest.file_format);
    match export {
        Some((name, bytes)) if name == expected => match verify_export(bytes.as_slice(), trusted) {
            Ok(inner) => {
                for problem in inner.problems {
                    if !check.problems.contains(&problem) {
                        check.problems.push(format!("{name}: {problem}"));
                    }
                }
                check.rows = inner.rows;
                if inner.manifest.as_ref() != Some(&manifest) {
                    check.problems.push(format!(
                        "{name}: its manifest is not the archive's {ARCHIVE_MANIFEST}"
                    ));
                }
            }
            Err(error) => check.problems.push(format!("{name}: {error}")),
        },
        Some((name, _)) => check.problems.push(format!(
            "{name} is not the export the manifest names ({expected})"
        )),
        None => check
            .problems
            .push(format!("{expected} is missing from the archive")),
    }
    for listed in &manifest.recordings {
        match files.iter().find(|file| file.name == listed.name) {
            None => check.problems.push(format!(
                "{} (call {}'s recording) is missing from the archive",
                listed.name, listed.call_id
            )),
            Some(file) if file.bytes != listed.bytes || !file.sha256.eq_ignore_ascii_case(&listed.sha256) => {
                check.problems.push(format!(
                    "{} (call {}'s recording) was changed: {} bytes with SHA-256 {}, the signed manifest says {} bytes with SHA-256 {}",
                    listed.name, listed.call_id, file.bytes, file.sha256, listed.bytes, listed.sha256
                ))
            }
            Some(_) => {}
        }
    }
    for file in &files {
        if !manifest
            .recordings
            .iter()
            .any(|listed| listed.name == file.name)
        {
            check.problems.push(format!(
                "{} is not listed in the signed manifest (added later)",
                file.name
            ));
        }
    }
    check.recordings = manifest.recordings.len() as u64;
    check.manifest = Some(manifest);
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::ledger::signing::RecordsKey;

    fn record(n: u32) -> CallRecord {
        CallRecord {
            call_id: format!("7d9e4c1a-0000-4000-8000-{n:012}"),
            court_name: "上海市第一中级人民法院".into(),
            caller_display_name: "张三, \"律师\"".into(),
            caller_number: format!("1380000{n:04}"),
            received_at_ms: 1_700_000_000_000 + i64::from(n),
            ..CallRecord::default()
        }
    }

    fn export(format: ExportFormat, records: &[CallRecord]) -> (String, RecordsKey) {
        export_in(format, CsvDialect::Plain, records)
    }

    fn export_in(
        format: ExportFormat,
        dialect: CsvDialect,
        records: &[CallRecord],
    ) -> (String, RecordsKey) {
        let mut writer =
            ExportWriter::with_dialect(format, dialect, HashAlgorithm::Sha256, Vec::new()).unwrap();
        for record in records {
            writer.write(record).unwrap();
        }
        let (count, digest) = writer.rows();
        let (manifest, key) = manifest(format, count, digest);
        let bytes = writer.finish(&manifest).unwrap();
        (String::from_utf8(bytes).unwrap(), key)
    }

    /// The service's signed manifest for `count` rows with `digest`.
    fn manifest(format: ExportFormat, count: u64, digest: String) -> (ExportManifest, RecordsKey) {
        let key = RecordsKey::from_seed([3; 32]);
        let content = ManifestContent {
            format: MANIFEST_VERSION.into(),
            file_format: format_name(format).into(),
            exported_at_ms: 1,
            exported_by: "zhang".into(),
            reason: String::new(),
            filter: serde_json::json!({}),
            sort: "newest_first".into(),
            count,
            rows_digest: digest,
            hash_algorithm: "sha256".into(),
            chain_head_seq: 9,
            chain_head_hash: "00".into(),
            with_audio: false,
            recordings: Vec::new(),
        };
        let json = serde_json::to_string(&content).unwrap();
        let manifest = ExportManifest {
            signature: hex::encode(key.sign_manifest(&json).to_bytes()),
            public_key: key.public_key_hex(),
            json,
        };
        (manifest, key)
    }

    /// `records` as an older courtline exported them: without the last `dropped`
    /// optional columns, the playlist length named `prompt_length_ms`, and JSON
    /// Lines rows in their canonical form (lists as JSON text).
    fn legacy_export(format: ExportFormat, records: &[CallRecord], dropped: usize) -> String {
        let mut chain = RowChain::new(HashAlgorithm::Sha256);
        let kept = CSV_HEADER.len() - dropped;
        let mut text = String::new();
        if format == ExportFormat::Csv {
            let header: Vec<&str> = CSV_HEADER[..kept]
                .iter()
                .map(|c| {
                    if *c == "playlist_length_ms" {
                        LEGACY_LENGTH_COLUMN
                    } else {
                        c
                    }
                })
                .chain([ROW_HASH])
                .collect();
            text.push_str(&format!("{}\n", header.join(",")));
        }
        for record in records {
            let row = ExportRow::from(record).with_legacy_length_name(true);
            let hash = hex::encode(chain.push(&row));
            if format == ExportFormat::Csv {
                let mut cells = csv_cells(&row, CsvDialect::Plain);
                assert!(cells[kept..].iter().all(String::is_empty), "{cells:?}");
                cells.truncate(kept);
                cells.push(hash);
                let mut writer = csv::WriterBuilder::new().from_writer(Vec::new());
                writer.write_record(&cells).unwrap();
                text.push_str(&String::from_utf8(writer.into_inner().unwrap()).unwrap());
            } else {
                let json = row.canonical_json();
                assert!(json.contains("\"prompt_length_ms\":"), "{json}");
                let body = json.strip_suffix('}').unwrap();
                text.push_str(&format!("{body},\"row_hash\":\"{hash}\"}}\n"));
            }
        }
        let (manifest, _) = manifest(format, chain.count(), chain.digest_hex());
        // The manifest line as the writer puts it (after the header, for CSV).
        let tail = ExportWriter::new(format, HashAlgorithm::Sha256, Vec::new())
            .unwrap()
            .finish(&manifest)
            .unwrap();
        let tail = String::from_utf8(tail).unwrap();
        text.push_str(tail.lines().last().unwrap());
        text.push('\n');
        text
    }

    fn flagged(n: u32) -> CallRecord {
        CallRecord {
            flagged: true,
            flags: vec![crate::contract::pb::Flag {
                category: crate::contract::pb::FlagCategory::Other as i32,
                note: "自称\"院长的朋友\", asked for the judge's mobile".into(),
                flagged_by: "zhang.wei".into(),
                flagged_at_ms: 1_700_000_100_000,
            }],
            ..record(n)
        }
    }

    fn problems(text: &str, key: Option<[u8; 32]>) -> Vec<String> {
        verify_export(text.as_bytes(), key).unwrap().problems
    }

    #[test]
    fn intact_exports_verify_in_both_formats() {
        let records: Vec<CallRecord> = (1..=3).map(record).collect();
        for format in [ExportFormat::Csv, ExportFormat::Jsonl] {
            let (text, key) = export(format, &records);
            let check = verify_export(text.as_bytes(), Some(key.public_key().to_bytes())).unwrap();
            assert!(
                check.problems.is_empty(),
                "{format:?}: {:?}\n{text}",
                check.problems
            );
            assert_eq!(check.rows, 3);
            assert_eq!(check.manifest.unwrap().exported_by, "zhang");
            let (empty, _) = export(format, &[]);
            assert!(problems(&empty, None).is_empty(), "{empty}");
        }
    }

    #[test]
    fn rows_with_prompts_verify_and_a_changed_prompt_is_caught() {
        let mut records: Vec<CallRecord> = (1..=2).map(record).collect();
        records[0].prompts = vec![crate::contract::pb::PlayedPrompt {
            id: "three_rules_zh".into(),
            version: "v1".into(),
            sha256: "e5".repeat(32),
            length_ms: 18_100,
            ms_sent: 9_000,
        }];
        for format in [ExportFormat::Csv, ExportFormat::Jsonl] {
            let (text, key) = export(format, &records);
            assert!(text.contains("three_rules_zh"), "{text}");
            assert!(
                problems(&text, Some(key.public_key().to_bytes())).is_empty(),
                "{text}"
            );
            let changed = text.replacen("9000", "18100", 1);
            let found = problems(&changed, None);
            assert!(
                found.iter().any(|p| p.contains("was modified")),
                "{format:?} {found:?}"
            );
        }
    }

    #[test]
    fn rows_with_media_figures_verify_and_a_changed_figure_is_caught() {
        let mut records: Vec<CallRecord> = (1..=2).map(record).collect();
        records[1].caller_media = Some(crate::contract::pb::LegMedia {
            packets_sent: 900,
            packets_received: 880,
            packets_lost: 20,
            jitter_us: 4_321,
            rtt_us: Some(52_000),
            peer_reported_lost: Some(3),
        });
        for format in [ExportFormat::Csv, ExportFormat::Jsonl] {
            let (text, key) = export(format, &records);
            assert!(text.contains("4321"), "{text}");
            assert!(
                problems(&text, Some(key.public_key().to_bytes())).is_empty(),
                "{text}"
            );
            let changed = text.replacen("4321", "1234", 1);
            let found = problems(&changed, None);
            assert!(
                found.iter().any(|p| p.contains("was modified")),
                "{format:?} {found:?}"
            );
        }
    }

    #[test]
    fn exports_from_older_courtlines_still_verify() {
        let mut records: Vec<CallRecord> = (1..=3).map(record).collect();
        records[0].prompt_length_ms = 35_300;
        // Before flags (1 dropped), per-leg figures (2) and playlists (3).
        for dropped in 1..=OPTIONAL_COLUMNS.len() {
            let old = legacy_export(ExportFormat::Csv, &records, dropped);
            assert!(old.starts_with("call_id,") && old.contains(",prompt_length_ms,"));
            let check = verify_export(old.as_bytes(), None).unwrap();
            assert!(check.problems.is_empty(), "{:?}\n{old}", check.problems);
            assert_eq!(check.rows, 3);
            // The old name still hashes what it held.
            let changed = old.replacen(",35300,", ",35301,", 1);
            assert!(problems(&changed, None)
                .iter()
                .any(|p| p.contains("was modified")));
        }
        let old = legacy_export(ExportFormat::Jsonl, &records, 1);
        assert!(old.contains(r#""node_id":"","row_hash""#), "{old}");
        let check = verify_export(old.as_bytes(), None).unwrap();
        assert!(check.problems.is_empty(), "{:?}\n{old}", check.problems);
        assert_eq!(check.rows, 3);
    }

    #[test]
    fn flags_are_exported_and_a_changed_note_is_caught() {
        let records = vec![record(1), flagged(2)];
        for format in [ExportFormat::Csv, ExportFormat::Jsonl] {
            let (text, key) = export(format, &records);
            assert!(
                text.contains("zhang.wei") && text.contains("院长的朋友"),
                "{text}"
            );
            assert!(problems(&text, Some(key.public_key().to_bytes())).is_empty());
            let changed = text.replacen("mobile", "number", 1);
            let found = problems(&changed, None);
            assert!(
                found
                    .iter()
                    .any(|p| p.contains("000000000002 was modified")),
                "{format:?} {found:?}"
            );
        }
        let (csv, _) = export(ExportFormat::Csv, &records);
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let flags_column = CSV_HEADER.iter().position(|c| *c == "flags").unwrap();
        assert_eq!(reader.headers().unwrap().get(flags_column), Some("flags"));
        let row = reader.records().nth(1).unwrap().unwrap();
        let flags: serde_json::Value = serde_json::from_str(&row[flags_column]).unwrap();
        assert_eq!(flags[0]["category"], "other");
        assert_eq!(flags[0]["flagged_at"], "2023-11-14T22:15:00.000Z");
    }

    #[test]
    fn jsonl_rows_nest_prompts_media_and_flags() {
        let mut call = flagged(2);
        call.prompts = vec![crate::contract::pb::PlayedPrompt {
            id: "three_rules_zh".into(),
            sha256: "e5".repeat(32),
            length_ms: 18_100,
            ms_sent: 9_000,
            ..Default::default()
        }];
        call.caller_media = Some(crate::contract::pb::LegMedia {
            packets_sent: 900,
            ..Default::default()
        });
        let (text, key) = export(ExportFormat::Jsonl, &[call, record(3)]);
        let rows: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(rows[0]["prompts"][0]["ms_sent"], 9_000);
        assert_eq!(rows[0]["media"]["caller"]["packets_sent"], 900);
        assert_eq!(rows[0]["flags"][0]["flagged_by"], "zhang.wei");
        assert_eq!(rows[0]["playlist_length_ms"], 0);
        assert_eq!(rows[1]["prompts"], serde_json::json!([]));
        assert_eq!(rows[1]["media"], serde_json::Value::Null);
        assert!(problems(&text, Some(key.public_key().to_bytes())).is_empty());
        let changed = text.replacen("\"ms_sent\":9000", "\"ms_sent\":18100", 1);
        assert!(problems(&changed, None)
            .iter()
            .any(|p| p.contains("was modified")));
    }

    #[test]
    fn excel_csv_keeps_leading_zeros_and_verifies() {
        let mut call = flagged(1);
        call.caller_number = "02112368".into();
        call.caller_display_name = "=HYPERLINK(\"x\")".into();
        let (text, key) = export_in(ExportFormat::Csv, CsvDialect::Excel, &[call]);
        assert!(text.starts_with("\u{feff}call_id,"), "{text}");
        // The cell is `="02112368"`, quoted for CSV.
        assert!(text.contains(",\"=\"\"02112368\"\"\","), "{text}");
        assert!(
            text.contains("\"=\"\"=HYPERLINK(\"\"\"\"x\"\"\"\")\"\"\""),
            "{text}"
        );
        assert!(text.contains("上海市第一中级人民法院"), "{text}");
        let check = verify_export(text.as_bytes(), Some(key.public_key().to_bytes())).unwrap();
        assert!(check.problems.is_empty(), "{:?}\n{text}", check.problems);
        assert_eq!(check.rows, 1);
        let changed = text.replacen("02112368", "02112369", 1);
        assert!(problems(&changed, None)
            .iter()
            .any(|p| p.contains("was modified")));
    }

    #[test]
    fn tampering_is_named() {
        let records: Vec<CallRecord> = (1..=3).map(record).collect();
        for format in [ExportFormat::Csv, ExportFormat::Jsonl] {
            let (text, key) = export(format, &records);
            let changed = text.replacen("13800000002", "13800000009", 1);
            let found = problems(&changed, None);
            assert!(
                found.iter().any(|p| p.contains("was modified")),
                "{format:?} {found:?}"
            );

            let lines: Vec<&str> = text.lines().collect();
            let first_row = usize::from(format == ExportFormat::Csv);
            let mut without = lines.clone();
            without.remove(first_row + 1);
            let found = problems(&without.join("\n"), None);
            assert!(
                found.iter().any(|p| p.contains("manifest says 3")),
                "{found:?}"
            );

            let mut cut = lines.clone();
            cut.pop();
            assert!(matches!(
                verify_export(cut.join("\n").as_bytes(), None),
                Err(ExportError::NoManifest)
            ));

            let other = RecordsKey::from_seed([4; 32]).public_key().to_bytes();
            let found = problems(&text, Some(other));
            assert!(
                found.iter().any(|p| p.contains("not by the trusted key")),
                "{found:?}"
            );
            // Neither an unrelated key nor the signer's own seed is ever shown.
            let unrelated_seed = [4; 32];
            let found = problems(&text, Some(unrelated_seed));
            assert!(
                found
                    .iter()
                    .all(|p| !p.contains(&hex::encode(unrelated_seed))),
                "{found:?}"
            );
            let mistaken = verify_export(text.as_bytes(), Some([3; 32])).unwrap_err();
            assert!(
                matches!(mistaken, ExportError::PrivateKeyGiven),
                "{mistaken}"
            );
            assert!(!mistaken.to_string().contains(&hex::encode([3u8; 32])));
            assert!(problems(&text, Some(key.public_key().to_bytes())).is_empty());

            let forged = text.replace("zhang", "wang");
            let found = problems(&forged, None);
            assert!(
                found.iter().any(|p| p.contains("signature")),
                "{format:?} {found:?}"
            );
        }
    }
}
