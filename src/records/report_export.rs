//! Signed exports of reports (`courtline reports export`), checkable on their own like
//! call exports (`courtline records verify-export FILE`).
//!
//! Each row is a report in the columns of [`REPORT_CSV_HEADER`] plus a `row_hash`:
//! `row_hash[i] = H(row_hash[i-1] ‖ canonical form of row i)`, the canonical form
//! being the row's cells as a JSON array of strings, so CSV (plain or Excel) and
//! JSON rows hash alike. The records service computes the same chain while it
//! streams the reports and signs its digest in the manifest, which ends the file:
//! in CSV a final record starting with [`CSV_MANIFEST_MARKER`], in JSON the key
//! `courtline_export_manifest` after `reports`.

use std::io::{BufRead, Write};

use super::reports::format::{ReportLine, REPORT_CSV_HEADER};
use crate::contract::pb::{ExportManifest, Report};
use crate::records::chain::HashAlgorithm;
use crate::records::export::{
    check_rows, write_csv_manifest, ExportCheck, ExportError, ReadRow, RowChain, SignedManifest,
    CSV_MANIFEST_MARKER,
};
use crate::records::query::{excel_cell_text, excel_text, CsvDialect, UTF8_BOM};

/// Tag of a report export's manifest.
pub const REPORT_MANIFEST_VERSION: &str = "courtline-report-export-v1";
/// Name of the hash column (key in JSON).
const ROW_HASH: &str = "row_hash";
/// Key of the manifest in a JSON report export.
const JSON_MANIFEST_KEY: &str = "courtline_export_manifest";

/// The file formats of a report export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFileFormat {
    /// CSV with a header.
    Csv,
    /// One JSON object: `reports`, then the manifest.
    Json,
}

impl ReportFileFormat {
    /// The name in manifests and requests.
    pub fn name(self) -> &'static str {
        match self {
            ReportFileFormat::Csv => "csv",
            ReportFileFormat::Json => "json",
        }
    }
}

/// The canonical form of a report's row: what its `row_hash` covers.
pub fn report_row_canonical(report: &Report) -> String {
    canonical(&ReportLine::from(report).cells())
}

/// Cells as a JSON array of strings.
fn canonical(cells: &[String]) -> String {
    serde_json::to_string(cells).unwrap_or_default()
}

/// Writes a report export while reports stream in.
pub struct ReportExportWriter<W: Write> {
    /// CSV or JSON.
    format: ReportFileFormat,
    /// How CSV cells are written.
    dialect: CsvDialect,
    /// Where the file goes.
    out: W,
    /// The row hashes, compared with the manifest at the end.
    chain: RowChain,
}

impl<W: Write> ReportExportWriter<W> {
    /// Starts a file (the CSV header, or the JSON object's opening).
    pub fn new(
        format: ReportFileFormat,
        dialect: CsvDialect,
        algorithm: HashAlgorithm,
        mut out: W,
    ) -> Result<ReportExportWriter<W>, ExportError> {
        match format {
            ReportFileFormat::Csv => {
                if dialect == CsvDialect::Excel {
                    out.write_all(UTF8_BOM.as_bytes())?;
                }
                let mut header = csv::Writer::from_writer(&mut out);
                header.write_record(REPORT_CSV_HEADER.iter().chain(&[ROW_HASH]))?;
                header.flush()?;
            }
            ReportFileFormat::Json => write!(out, "{{\n  \"reports\": [")?,
        }
        Ok(ReportExportWriter {
            format,
            dialect,
            out,
            chain: RowChain::new(algorithm),
        })
    }

    /// Appends one report.
    pub fn write(&mut self, report: &Report) -> Result<(), ExportError> {
        let line = ReportLine::from(report);
        let cells = line.cells();
        let hash = hex::encode(self.chain.push_canonical(&canonical(&cells)));
        match self.format {
            ReportFileFormat::Csv => {
                let mut writer = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(&mut self.out);
                let mut cells = match self.dialect {
                    CsvDialect::Plain => cells,
                    CsvDialect::Excel => cells.iter().map(|cell| excel_text(cell)).collect(),
                };
                cells.push(hash);
                writer.write_record(&cells)?;
                writer.flush()?;
            }
            ReportFileFormat::Json => {
                let mut row = match serde_json::to_value(&line) {
                    Ok(serde_json::Value::Object(row)) => row,
                    _ => serde_json::Map::new(),
                };
                row.insert(ROW_HASH.into(), hash.into());
                let separator = if self.chain.count() == 1 { "" } else { "," };
                write!(
                    self.out,
                    "{separator}\n    {}",
                    serde_json::Value::Object(row)
                )?;
            }
        }
        Ok(())
    }

    /// Rows written and their digest, to compare with the service's manifest.
    pub fn rows(&self) -> (u64, String) {
        (self.chain.count(), self.chain.digest_hex())
    }

    /// Appends the signed manifest and flushes.
    pub fn finish(mut self, manifest: &ExportManifest) -> Result<W, ExportError> {
        let signed = SignedManifest::from(manifest).json();
        match self.format {
            ReportFileFormat::Csv => write_csv_manifest(&mut self.out, &signed)?,
            ReportFileFormat::Json => write!(
                self.out,
                "\n  ],\n  \"{JSON_MANIFEST_KEY}\": {signed}\n}}\n"
            )?,
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Whether a file starting with `first_line` is a report export (else a call export).
pub fn is_report_export(first_line: &str) -> bool {
    let line = first_line.trim_start_matches(UTF8_BOM).trim_end();
    line == "{" || line.starts_with("report_id,")
}

/// One row as read back: what it names, its cells and its stored hash.
struct ReportRow {
    /// The report id, for messages.
    report_id: String,
    /// Cells in [`REPORT_CSV_HEADER`] order.
    cells: Vec<String>,
    /// Its `row_hash` as stored.
    hash: String,
}

/// Rows and manifest of a JSON report export.
fn read_json(text: &str) -> Result<(Vec<ReportRow>, Option<SignedManifest>), ExportError> {
    let malformed = |problem: String| ExportError::Malformed { line: 1, problem };
    let mut file: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|error| malformed(error.to_string()))?;
    let manifest = file
        .remove(JSON_MANIFEST_KEY)
        .map(serde_json::from_value)
        .transpose()
        .map_err(|error| malformed(format!("manifest: {error}")))?;
    let Some(serde_json::Value::Array(reports)) = file.remove("reports") else {
        return Err(malformed("no \"reports\" list".into()));
    };
    let rows = reports
        .into_iter()
        .map(|report| {
            let serde_json::Value::Object(mut fields) = report else {
                return Err(malformed("a report is not an object".into()));
            };
            let hash = match fields.remove(ROW_HASH) {
                Some(serde_json::Value::String(hash)) => hash,
                _ => return Err(malformed(format!("a report without {ROW_HASH}"))),
            };
            let cells: Vec<String> = REPORT_CSV_HEADER
                .iter()
                .map(|name| match fields.get(*name) {
                    Some(serde_json::Value::String(text)) => text.clone(),
                    None | Some(serde_json::Value::Null) => String::new(),
                    Some(other) => other.to_string(),
                })
                .collect();
            Ok(ReportRow {
                report_id: cells[0].clone(),
                cells,
                hash,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((rows, manifest))
}

/// Rows and manifest of a CSV report export (plain or Excel).
fn read_csv(text: &str) -> Result<(Vec<ReportRow>, Option<SignedManifest>), ExportError> {
    let (dialect, text) = match text.strip_prefix(UTF8_BOM) {
        Some(rest) => (CsvDialect::Excel, rest),
        None => (CsvDialect::Plain, text),
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    let mut manifest = None;
    for (index, record) in reader.records().enumerate() {
        let record = record?;
        let line = index as u64 + 1;
        if index == 0 {
            let expected: Vec<&str> = REPORT_CSV_HEADER
                .iter()
                .copied()
                .chain([ROW_HASH])
                .collect();
            if record.iter().collect::<Vec<_>>() != expected {
                return Err(ExportError::Malformed {
                    line,
                    problem: "not a courtline report export (the CSV header differs)".into(),
                });
            }
            continue;
        }
        if record.get(0) == Some(CSV_MANIFEST_MARKER) {
            manifest = Some(
                serde_json::from_str(record.get(1).unwrap_or_default()).map_err(|error| {
                    ExportError::Malformed {
                        line,
                        problem: format!("manifest: {error}"),
                    }
                })?,
            );
            continue;
        }
        if record.len() != REPORT_CSV_HEADER.len() + 1 {
            return Err(ExportError::Malformed {
                line,
                problem: format!(
                    "{} cells, the header has {}",
                    record.len(),
                    REPORT_CSV_HEADER.len() + 1
                ),
            });
        }
        let mut cells: Vec<String> = record
            .iter()
            .map(|cell| match dialect {
                CsvDialect::Plain => cell.to_owned(),
                CsvDialect::Excel => excel_cell_text(cell).into_owned(),
            })
            .collect();
        let hash = cells.pop().unwrap_or_default();
        rows.push(ReportRow {
            report_id: cells[0].clone(),
            cells,
            hash,
        });
    }
    Ok((rows, manifest))
}

/// Checks a report export: every row hash, the count, the digest and the signature.
pub fn verify_report_export(
    mut reader: impl BufRead,
    trusted: Option<[u8; 32]>,
) -> Result<ExportCheck, ExportError> {
    let mut text = String::new();
    reader.read_to_string(&mut text)?;
    let (rows, signed) = if text.trim_start_matches(UTF8_BOM).starts_with('{') {
        read_json(&text)?
    } else {
        read_csv(&text)?
    };
    let Some(signed) = signed else {
        return Err(ExportError::NoManifest);
    };
    let mut check = ExportCheck::default();
    let Some(manifest) = signed.check(trusted, &mut check)? else {
        return Ok(check);
    };
    let rows = rows.iter().enumerate().map(|(index, row)| ReadRow {
        canonical: canonical(&row.cells),
        stored: &row.hash,
        named: format!("row {}: report {}", index + 1, row.report_id),
    });
    check_rows(
        &mut check,
        manifest,
        REPORT_MANIFEST_VERSION,
        "reports",
        rows,
    );
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::pb::ReportForm;
    use crate::records::export::ManifestContent;
    use crate::records::ledger::signing::RecordsKey;

    fn report(n: u32) -> Report {
        Report {
            report_id: format!("0b7a3c2e-0000-4000-8000-{n:012}"),
            call_id: format!("7d9e4c1a-0000-4000-8000-{n:012}"),
            version: 2,
            opened_by: "1001".into(),
            opened_at_ms: 1_700_000_000_000,
            court_name: "上海市第一中级人民法院".into(),
            line_number: "02112368".into(),
            form: Some(ReportForm {
                staff_name: "李娜".into(),
                case_numbers: vec!["(2024)沪01民初123号".into()],
                asked: "请法官多关照被告, \"务必\"".into(),
                ..ReportForm::default()
            }),
            ..Report::default()
        }
    }

    /// A signed export of `reports` in `format` and `dialect`.
    fn export(format: ReportFileFormat, dialect: CsvDialect, reports: &[Report]) -> String {
        let mut writer =
            ReportExportWriter::new(format, dialect, HashAlgorithm::Sha256, Vec::new()).unwrap();
        for report in reports {
            writer.write(report).unwrap();
        }
        let (count, rows_digest) = writer.rows();
        let key = RecordsKey::from_seed([5; 32]);
        let content = ManifestContent {
            format: REPORT_MANIFEST_VERSION.into(),
            file_format: format.name().into(),
            exported_at_ms: 1,
            exported_by: "wang".into(),
            reason: String::new(),
            filter: serde_json::json!({}),
            sort: "newest_first".into(),
            count,
            rows_digest,
            hash_algorithm: "sha256".into(),
            chain_head_seq: 3,
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
        String::from_utf8(writer.finish(&manifest).unwrap()).unwrap()
    }

    #[test]
    fn report_exports_verify_in_every_format_and_name_a_changed_report() {
        let reports = vec![report(1), report(2)];
        for (format, dialect) in [
            (ReportFileFormat::Csv, CsvDialect::Plain),
            (ReportFileFormat::Csv, CsvDialect::Excel),
            (ReportFileFormat::Json, CsvDialect::Plain),
        ] {
            let text = export(format, dialect, &reports);
            assert!(is_report_export(text.lines().next().unwrap()), "{text}");
            assert!(text.contains("(2024)沪01民初123号"), "{text}");
            let check = verify_report_export(text.as_bytes(), None).unwrap();
            assert!(
                check.problems.is_empty(),
                "{format:?}: {:?}\n{text}",
                check.problems
            );
            assert_eq!(check.rows, 2);
            let changed =
                text.replacen("关照被告", "关照原告", 2)
                    .replacen("关照原告", "关照被告", 1);
            let found = verify_report_export(changed.as_bytes(), None)
                .unwrap()
                .problems;
            assert!(
                found
                    .iter()
                    .any(|p| p.contains("000000000002 was modified")),
                "{format:?}: {found:?}"
            );
            let empty = export(format, dialect, &[]);
            assert!(verify_report_export(empty.as_bytes(), None)
                .unwrap()
                .problems
                .is_empty());
        }
    }
}
