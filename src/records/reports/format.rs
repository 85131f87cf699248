//! Reports for people and spreadsheets: `courtline reports list|get|export`.
//!
//! Same rules as calls ([`crate::records::query`]): a table in local time (or UTC)
//! for reading; JSON and CSV with every field, times as RFC 3339 UTC beside the
//! Unix milliseconds, Chinese text as given.

use std::io::Write;

use chrono::SecondsFormat;
use serde::Serialize;

use super::workflow::{handling_name, kind_label_zh, kind_name, opened_via_name, status_name};
use crate::contract::pb::Report;
use crate::contract::row::rfc3339;
use crate::records::query::{
    display_width, excel_text, short_call_id, Clock, CsvDialect, OutputFormat, UTF8_BOM,
};

/// A report as one flat row: what JSON and CSV carry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportLine {
    /// Report id.
    pub report_id: String,
    /// The call.
    pub call_id: String,
    /// Version number.
    pub version: u32,
    /// draft, submitted, reviewed.
    pub status: String,
    /// Who opened it.
    pub opened_by: String,
    /// keys, console, cli.
    pub opened_via: String,
    /// rfc4733 or sip_info for keys.
    pub keys_via: String,
    /// When opened.
    pub opened_at: String,
    /// Same, Unix ms.
    pub opened_at_ms: i64,
    /// The call's court.
    pub court_name: String,
    /// The call's line.
    pub line_number: String,
    /// 填报人.
    pub staff_name: String,
    /// 工号.
    pub staff_id: String,
    /// When it happened (0: the call's time).
    pub occurred_at: String,
    /// Caller as stated: name.
    pub caller_name: String,
    /// Organisation.
    pub caller_organisation: String,
    /// Relationship to the case.
    pub caller_relationship: String,
    /// Phone.
    pub caller_phone: String,
    /// Case numbers, `; `-separated.
    pub case_numbers: String,
    /// inquiry, interference, intercession, probing, other.
    pub kind: String,
    /// The kind as the form names it.
    pub kind_zh: String,
    /// What was asked.
    pub asked: String,
    /// refused, explained_rules, escalated.
    pub handling: String,
    /// How it was handled, in words.
    pub handling_note: String,
    /// Who submitted it, when.
    pub submitted_by: String,
    /// When submitted.
    pub submitted_at: String,
    /// Reviewer.
    pub reviewed_by: String,
    /// When reviewed.
    pub reviewed_at: String,
    /// The reviewer's conclusion.
    pub review_conclusion: String,
}

/// Column names of the CSV form, in [`ReportLine`] field order.
pub const REPORT_CSV_HEADER: [&str; 29] = [
    "report_id",
    "call_id",
    "version",
    "status",
    "opened_by",
    "opened_via",
    "keys_via",
    "opened_at",
    "opened_at_ms",
    "court_name",
    "line_number",
    "staff_name",
    "staff_id",
    "occurred_at",
    "caller_name",
    "caller_organisation",
    "caller_relationship",
    "caller_phone",
    "case_numbers",
    "kind",
    "kind_zh",
    "asked",
    "handling",
    "handling_note",
    "submitted_by",
    "submitted_at",
    "reviewed_by",
    "reviewed_at",
    "review_conclusion",
];

impl From<&Report> for ReportLine {
    fn from(report: &Report) -> ReportLine {
        let form = report.form.clone().unwrap_or_default();
        ReportLine {
            report_id: report.report_id.clone(),
            call_id: report.call_id.clone(),
            version: report.version,
            status: status_name(report.status()).to_owned(),
            opened_by: report.opened_by.clone(),
            opened_via: opened_via_name(report.opened_via()).to_owned(),
            keys_via: report.keys_via.clone(),
            opened_at: rfc3339(report.opened_at_ms).unwrap_or_default(),
            opened_at_ms: report.opened_at_ms,
            court_name: report.court_name.clone(),
            line_number: report.line_number.clone(),
            staff_name: form.staff_name.clone(),
            staff_id: form.staff_id.clone(),
            occurred_at: rfc3339(form.occurred_at_ms).unwrap_or_default(),
            caller_name: form.caller_name.clone(),
            caller_organisation: form.caller_organisation.clone(),
            caller_relationship: form.caller_relationship.clone(),
            caller_phone: form.caller_phone.clone(),
            case_numbers: form.case_numbers.join("; "),
            kind: kind_name(form.kind()).to_owned(),
            kind_zh: kind_label_zh(form.kind()).to_owned(),
            asked: form.asked.clone(),
            handling: handling_name(form.handling()).to_owned(),
            handling_note: form.handling_note.clone(),
            submitted_by: report.submitted_by.clone(),
            submitted_at: rfc3339(report.submitted_at_ms).unwrap_or_default(),
            reviewed_by: report.reviewed_by.clone(),
            reviewed_at: rfc3339(report.reviewed_at_ms).unwrap_or_default(),
            review_conclusion: report.review_conclusion.clone(),
        }
    }
}

impl ReportLine {
    /// The cells in [`REPORT_CSV_HEADER`] order.
    pub fn cells(&self) -> Vec<String> {
        let fields = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(fields)) => fields,
            _ => serde_json::Map::new(),
        };
        REPORT_CSV_HEADER
            .iter()
            .map(|name| match fields.get(*name) {
                Some(serde_json::Value::String(text)) => text.clone(),
                None | Some(serde_json::Value::Null) => String::new(),
                Some(other) => other.to_string(),
            })
            .collect()
    }
}

const TABLE_HEADER: [&str; 9] = [
    "ID", "OPENED", "COURT", "LINE", "STAFF", "KIND", "STATUS", "CASES", "CALLER",
];

/// Writes `reports` in `format` (table times on `clock`; CSV in `dialect`).
pub fn write_reports(
    reports: &[Report],
    format: OutputFormat,
    clock: Clock,
    dialect: CsvDialect,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let lines: Vec<ReportLine> = reports.iter().map(ReportLine::from).collect();
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &lines)?;
            writeln!(out)
        }
        OutputFormat::Csv => {
            if dialect == CsvDialect::Excel {
                out.write_all(UTF8_BOM.as_bytes())?;
            }
            let mut writer = csv::Writer::from_writer(&mut *out);
            writer.write_record(REPORT_CSV_HEADER)?;
            for line in &lines {
                let cells = line.cells();
                match dialect {
                    CsvDialect::Plain => writer.write_record(&cells)?,
                    CsvDialect::Excel => {
                        writer.write_record(cells.iter().map(|cell| excel_text(cell)))?
                    }
                }
            }
            writer.flush()
        }
        OutputFormat::Table => {
            let rows: Vec<[String; 9]> = reports
                .iter()
                .zip(&lines)
                .map(|(report, line)| {
                    let staff = match (line.staff_name.is_empty(), line.staff_id.is_empty()) {
                        (true, _) => report.opened_by.clone(),
                        (false, true) => line.staff_name.clone(),
                        (false, false) => format!("{} ({})", line.staff_name, line.staff_id),
                    };
                    [
                        short_call_id(&report.report_id).to_owned(),
                        clock.show(report.opened_at_ms, SecondsFormat::Secs),
                        line.court_name.clone(),
                        line.line_number.clone(),
                        staff,
                        line.kind_zh.clone(),
                        line.status.clone(),
                        line.case_numbers.clone(),
                        line.caller_name.clone(),
                    ]
                })
                .collect();
            let mut widths = TABLE_HEADER.map(display_width);
            for row in &rows {
                for (width, cell) in widths.iter_mut().zip(row) {
                    *width = (*width).max(display_width(cell));
                }
            }
            for row in std::iter::once(TABLE_HEADER.map(str::to_owned)).chain(rows) {
                let mut text = String::new();
                for (cell, width) in row.iter().zip(widths) {
                    text.push_str(cell);
                    text.extend(std::iter::repeat_n(' ', width - display_width(cell) + 2));
                }
                writeln!(out, "{}", text.trim_end())?;
            }
            Ok(())
        }
    }
}

/// One report for reading: every field, then its versions and the form's warnings.
pub fn write_report_detail(
    report: &Report,
    versions: &[Report],
    warnings: &[String],
    clock: Clock,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let line = ReportLine::from(report);
    let time = |ms: i64| clock.show(ms, SecondsFormat::Secs);
    let form = report.form.clone().unwrap_or_default();
    let fields: [(&str, String); 20] = [
        ("report 报告", line.report_id.clone()),
        ("call 来电", line.call_id.clone()),
        (
            "status 状态",
            format!("{} (version {})", line.status, line.version),
        ),
        (
            "opened 登记",
            format!(
                "{} by {} via {}{}",
                time(report.opened_at_ms),
                line.opened_by,
                line.opened_via,
                if line.keys_via.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", line.keys_via)
                }
            ),
        ),
        ("court 法院", line.court_name.clone()),
        ("line 线路", line.line_number.clone()),
        ("staff 填报人", line.staff_name.clone()),
        ("staff id 工号", line.staff_id.clone()),
        ("occurred 时间", time(form.occurred_at_ms)),
        ("caller 来电人", line.caller_name.clone()),
        ("organisation 单位", line.caller_organisation.clone()),
        ("relationship 与案件关系", line.caller_relationship.clone()),
        ("phone 电话", line.caller_phone.clone()),
        ("case numbers 案号", line.case_numbers.clone()),
        ("kind 类型", format!("{} {}", line.kind, line.kind_zh)),
        ("asked 请托事项", line.asked.clone()),
        (
            "handling 处理情况",
            format!("{} {}", line.handling, line.handling_note),
        ),
        (
            "submitted 提交",
            format!("{} {}", time(report.submitted_at_ms), line.submitted_by),
        ),
        (
            "reviewed 审核",
            format!("{} {}", time(report.reviewed_at_ms), line.reviewed_by),
        ),
        ("conclusion 审核意见", line.review_conclusion.clone()),
    ];
    let width = fields
        .iter()
        .map(|(name, _)| display_width(name))
        .max()
        .unwrap_or(0);
    for (name, value) in &fields {
        let padding = width - display_width(name) + 2;
        writeln!(out, "{name}{}{}", " ".repeat(padding), value.trim())?;
    }
    for warning in warnings {
        writeln!(out, "warning: {warning}")?;
    }
    if !versions.is_empty() {
        writeln!(out, "versions:")?;
        for version in versions {
            writeln!(
                out,
                "  {}  {}  {}  {}",
                version.version,
                time(version.changed_at_ms),
                version.changed_by,
                status_name(version.status())
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::pb::{ReportForm, ReportKind, ReportStatus};

    fn report() -> Report {
        Report {
            report_id: "3f0e9a52-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into(),
            call_id: "7d9e4c1a-0000-4000-8000-000000000001".into(),
            version: 2,
            status: ReportStatus::Draft as i32,
            opened_by: "op-li".into(),
            opened_at_ms: 1_700_000_000_000,
            court_name: "上海市第一中级人民法院".into(),
            form: Some(ReportForm {
                staff_name: "李娜".into(),
                case_numbers: vec!["(2024)沪01民初123号".into(), "其他".into()],
                kind: ReportKind::Probing as i32,
                asked: "问\"判决\"结果, 何时宣判".into(),
                ..ReportForm::default()
            }),
            ..Report::default()
        }
    }

    #[test]
    fn csv_and_json_carry_chinese_text_intact() {
        let mut csv = Vec::new();
        write_reports(
            &[report()],
            OutputFormat::Csv,
            Clock::Utc,
            CsvDialect::Plain,
            &mut csv,
        )
        .unwrap();
        let mut reader = csv::Reader::from_reader(csv.as_slice());
        assert_eq!(reader.headers().unwrap().len(), REPORT_CSV_HEADER.len());
        let row = reader.records().next().unwrap().unwrap();
        let cell = |name: &str| {
            row.get(REPORT_CSV_HEADER.iter().position(|n| *n == name).unwrap())
                .unwrap()
                .to_owned()
        };
        assert_eq!(cell("asked"), "问\"判决\"结果, 何时宣判");
        assert_eq!(cell("case_numbers"), "(2024)沪01民初123号; 其他");
        assert_eq!(cell("kind_zh"), "打探案情");
        assert_eq!(cell("opened_at"), "2023-11-14T22:13:20.000Z");
        let mut json = Vec::new();
        write_reports(
            &[report()],
            OutputFormat::Json,
            Clock::Utc,
            CsvDialect::Plain,
            &mut json,
        )
        .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value[0]["staff_name"], "李娜");
        assert_eq!(value[0]["status"], "draft");
    }

    #[test]
    fn the_table_aligns_wide_characters() {
        let mut table = Vec::new();
        write_reports(
            &[report()],
            OutputFormat::Table,
            Clock::Utc,
            CsvDialect::Plain,
            &mut table,
        )
        .unwrap();
        let text = String::from_utf8(table).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let column = |line: &str, word: &str| display_width(&line[..line.find(word).unwrap()]);
        assert!(lines[1].contains("上海市第一中级人民法院"));
        assert!(lines[1].contains("打探案情"));
        assert_eq!(column(lines[0], "STAFF"), column(lines[1], "李娜"));
    }
}
