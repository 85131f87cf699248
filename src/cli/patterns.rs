//! `courtline patterns PATTERN`: callers whose calls form a pattern (compliance and
//! auditors), printed like `calls list` (`--format table|json|csv`), each hit with
//! the `calls list` arguments that show the calls behind it.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::calls::{service_error, time_flag, ServiceArgs};
use crate::contract::names::end_reason_name;
use crate::contract::pb::{CallFilter, ListPatternsRequest, PatternHit, PatternKind};
use crate::contract::row::rfc3339;
use crate::records::patterns::kind_name;
use crate::records::query::OutputFormat;

/// The patterns, as typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PatternArg {
    /// Callers who reached THRESHOLD or more different courts within WINDOW days.
    Courts,
    /// ... different lines.
    Lines,
    /// THRESHOLD or more calls to the same court within WINDOW days.
    RepeatedCalls,
    /// Callers with a flagged or reported call who called again.
    ReportedAgain,
    /// THRESHOLD or more hang-ups while the warning played.
    WarningHangUps,
    /// THRESHOLD or more calls outside office hours (end reason after_hours).
    AfterHours,
}

impl PatternArg {
    fn kind(self) -> PatternKind {
        match self {
            PatternArg::Courts => PatternKind::Courts,
            PatternArg::Lines => PatternKind::Lines,
            PatternArg::RepeatedCalls => PatternKind::RepeatedCalls,
            PatternArg::ReportedAgain => PatternKind::ReportedAgain,
            PatternArg::WarningHangUps => PatternKind::WarningHangUps,
            PatternArg::AfterHours => PatternKind::AfterHours,
        }
    }
}

/// `courtline patterns ...`
#[derive(Debug, Args)]
pub struct PatternsArgs {
    /// Which pattern.
    #[arg(value_enum)]
    pub pattern: PatternArg,
    /// At least this many (default: the pattern's, README "Patterns across calls").
    #[arg(long)]
    pub threshold: Option<u32>,
    /// Within this many consecutive UTC days (default: the pattern's).
    #[arg(long)]
    pub window_days: Option<u32>,
    /// Search from this time (whole UTC days; default: the last window).
    #[arg(long)]
    pub since: Option<String>,
    /// Search until this time (default: now).
    #[arg(long)]
    pub until: Option<String>,
    /// Only this caller (exact number).
    #[arg(long)]
    pub caller: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Connection.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// One hit as JSON and CSV print it.
#[derive(Debug, Serialize)]
struct HitRow {
    /// The pattern.
    pattern: &'static str,
    /// The caller (masked for masked roles).
    caller_number: String,
    /// The court (repeated calls).
    court_name: String,
    /// What reached the threshold.
    count: u64,
    /// Calls in the window.
    calls: u64,
    /// Window start and end (RFC 3339, UTC).
    since: String,
    until: String,
    /// Courts called in the window, `;`-separated in CSV.
    courts: String,
    /// `calls list` arguments showing the calls behind it (empty when masked).
    drill_down: String,
}

/// The `calls list` arguments of `filter`.
pub fn drill_down_args(filter: &CallFilter) -> String {
    let quote = |text: &str| {
        if text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-_.:@".contains(c))
        {
            text.to_owned()
        } else {
            format!("'{}'", text.replace('\'', "'\\''"))
        }
    };
    let mut args = vec![
        format!("--caller {} --caller-exact", quote(&filter.caller_prefix)),
        format!("--since {}", rfc3339(filter.since_ms).unwrap_or_default()),
        format!("--until {}", rfc3339(filter.until_ms).unwrap_or_default()),
    ];
    if !filter.court_name.is_empty() {
        args.push(format!("--court {}", quote(&filter.court_name)));
    }
    if filter.end_reason != 0 {
        args.push(format!(
            "--end-reason {}",
            end_reason_name(filter.end_reason())
        ));
    }
    args.join(" ")
}

fn row(hit: &PatternHit) -> HitRow {
    HitRow {
        pattern: kind_name(hit.kind()),
        caller_number: hit.caller_number.clone(),
        court_name: hit.court_name.clone(),
        count: hit.count,
        calls: hit.calls,
        since: rfc3339(hit.since_ms).unwrap_or_default(),
        until: rfc3339(hit.until_ms).unwrap_or_default(),
        courts: hit.courts.join(";"),
        drill_down: hit
            .calls_filter
            .as_ref()
            .map(|filter| format!("courtline calls list {}", drill_down_args(filter)))
            .unwrap_or_default(),
    }
}

/// Writes `hits` in `format`.
fn write_hits(
    hits: &[PatternHit],
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let rows: Vec<HitRow> = hits.iter().map(row).collect();
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &rows)?;
            writeln!(out)?;
        }
        OutputFormat::Csv => {
            let mut writer = csv::Writer::from_writer(&mut *out);
            if rows.is_empty() {
                writer.write_record([
                    "pattern",
                    "caller_number",
                    "court_name",
                    "count",
                    "calls",
                    "since",
                    "until",
                    "courts",
                    "drill_down",
                ])?;
            }
            for row in &rows {
                writer.serialize(row)?;
            }
            writer.flush()?;
        }
        OutputFormat::Table => {
            writeln!(
                out,
                "{:<16} {:<14} {:>5} {:>5}  {:<10}  {:<10}  COURTS / CALLS BEHIND IT",
                "CALLER", "COURT", "COUNT", "CALLS", "FROM (UTC)", "TO (UTC)"
            )?;
            for row in &rows {
                let day = |time: &str| time.get(..10).unwrap_or_default().to_owned();
                writeln!(
                    out,
                    "{:<16} {:<14} {:>5} {:>5}  {:<10}  {:<10}  {}",
                    row.caller_number,
                    row.court_name,
                    row.count,
                    row.calls,
                    day(&row.since),
                    // The window's end is exclusive: show its last day.
                    day(&rfc3339(
                        chrono::DateTime::parse_from_rfc3339(&row.until)
                            .map(|t| t.timestamp_millis() - 1)
                            .unwrap_or_default()
                    )
                    .unwrap_or_default()),
                    row.courts
                )?;
                if !row.drill_down.is_empty() {
                    writeln!(out, "    {}", row.drill_down)?;
                }
            }
        }
    }
    Ok(())
}

/// Runs `courtline patterns`.
pub async fn run(config_path: &Path, args: PatternsArgs) -> anyhow::Result<ExitCode> {
    let request = ListPatternsRequest {
        kind: args.pattern.kind() as i32,
        threshold: args.threshold.unwrap_or(0),
        window_days: args.window_days.unwrap_or(0),
        since_ms: time_flag("since", &args.since)?,
        until_ms: time_flag("until", &args.until)?,
        caller_number: args.caller.clone().unwrap_or_default(),
    };
    let (mut client, endpoint) = args.service.connect(config_path).await?;
    let response = client
        .list_patterns(request)
        .await
        .map_err(|status| service_error(&endpoint, status))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    write_hits(&response.hits, args.format, &mut out)?;
    out.flush()?;
    // On standard error, so piped JSON or CSV stays clean.
    eprintln!(
        "{} {} with threshold {} within {} days, {} to {} (UTC days){}",
        response.hits.len(),
        if response.hits.len() == 1 {
            "hit"
        } else {
            "hits"
        },
        response.threshold,
        response.window_days,
        rfc3339(response.since_ms).unwrap_or_default(),
        rfc3339(response.until_ms).unwrap_or_default(),
        if response.truncated {
            "; more callers match than are shown: raise --threshold or narrow --since/--until"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::pb::EndReason;

    #[test]
    fn drill_downs_are_calls_list_arguments() {
        let filter = CallFilter {
            caller_prefix: "13912345678".into(),
            caller_exact: true,
            since_ms: 1_700_006_400_000,
            until_ms: 1_700_092_800_000,
            court_name: "上海市第一中级人民法院".into(),
            end_reason: EndReason::CallerHungUpDuringPrompt as i32,
            ..CallFilter::default()
        };
        assert_eq!(
            drill_down_args(&filter),
            "--caller 13912345678 --caller-exact --since 2023-11-15T00:00:00.000Z \
             --until 2023-11-16T00:00:00.000Z --court '上海市第一中级人民法院' \
             --end-reason caller_hung_up_during_prompt"
        );
        let hit = PatternHit {
            kind: PatternKind::Courts as i32,
            caller_number: "13912345678".into(),
            count: 6,
            calls: 7,
            since_ms: filter.since_ms,
            until_ms: filter.until_ms,
            courts: vec!["甲".into(), "乙".into()],
            calls_filter: Some(filter),
            ..PatternHit::default()
        };
        let mut table = Vec::new();
        write_hits(std::slice::from_ref(&hit), OutputFormat::Table, &mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.contains("2023-11-15  2023-11-15  甲;乙"), "{table}");
        assert!(
            table.contains("courtline calls list --caller 13912345678"),
            "{table}"
        );
        let mut csv = Vec::new();
        write_hits(&[hit], OutputFormat::Csv, &mut csv).unwrap();
        let csv = String::from_utf8(csv).unwrap();
        assert!(csv.starts_with("pattern,caller_number,"), "{csv}");
        assert!(csv.contains("courts,13912345678,,6,7,"), "{csv}");
    }
}
