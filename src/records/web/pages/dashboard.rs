//! Dashboard: calls per day and court, how many heard the whole warning, hung up
//! during it or reached an operator and how soon, flags and reports per week — from
//! the per-day counters the store keeps, never a scan of the calls — and the
//! records' health: the last signed checkpoint, the last verification, each
//! switchboard's last delivery. Days are UTC days, and the page says so.

use std::net::SocketAddr;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, NaiveDate};
use serde::Deserialize;
use tonic::Status;

use super::{failure, here, local_time, Chrome, Page};
use crate::records::dashboard::{day_of, Figures, Tally, ANSWER_WITHIN_MS};
use crate::records::ledger::now_ms;
use crate::records::service::Dashboard;
use crate::records::store::RecordsHealth;
use crate::records::web::chart::{colour, Chart};
use crate::records::web::i18n::Lang;
use crate::records::web::Console;

/// The ranges offered, in days; the first view shows the middle one.
const RANGES: [u32; 3] = [7, 30, 90];
/// The range of a view that names none.
const DEFAULT_DAYS: u32 = 30;
/// The palette entry of answer times (green, as in no court's legend nearby).
const ANSWER_SERIES: usize = 2;
/// The palette entries of flags and reports: past the first courts' colours, so
/// they are not read as courts.
const WEEK_SERIES: [usize; 2] = [5, 6];
/// At most this many slot labels under a chart of days, so they do not overlap.
const MAX_DAY_LABELS: usize = 10;

/// The dashboard page.
pub(super) fn routes() -> Router<Console> {
    Router::new().route("/dashboard", get(dashboard_page))
}

/// The range asked for: `days` (one of [`RANGES`]) ending `until` (a UTC date;
/// empty: today).
#[derive(Deserialize, Default)]
#[serde(default)]
struct DashboardQuery {
    /// Days in the range, as the range links send it.
    days: String,
    /// Last day, `YYYY-MM-DD` (UTC).
    until: String,
}

/// A name with its colour, for legends.
struct Legend {
    /// Court or figure.
    name: String,
    /// Its colour in the chart.
    colour: &'static str,
}

/// One day of the table under the charts.
struct DayRow {
    /// `YYYY-MM-DD`.
    date: String,
    /// Calls per court, in legend order.
    per_court: Vec<i64>,
    /// All calls of the day.
    calls: i64,
    /// Share that heard the whole warning.
    completed: String,
    /// Hung up during the warning.
    hung_up: i64,
    /// Share connected to an operator.
    connected: String,
    /// Mean operator answer time.
    mean_answer: String,
}

/// One week of the flags and reports table.
struct WeekRow {
    /// First day.
    first: String,
    /// Last day.
    last: String,
    /// Flags set.
    flags: i64,
    /// Reports opened.
    reports: i64,
}

/// One answer-time bucket of the range.
struct BucketRow {
    /// `5–10 秒`.
    label: String,
    /// Calls answered in that time.
    count: i64,
    /// Their share of the answers timed.
    share: String,
}

/// A switchboard's last delivery.
struct NodeRow {
    /// The switchboard.
    node_id: String,
    /// Its last sequence number stored.
    node_seq: i64,
    /// When that event happened (switchboard clock).
    event_at: String,
    /// When the service stored it.
    stored_at: String,
    /// How late its last event arrived (stored minus happened).
    lag: String,
    /// How long ago that was.
    since: String,
}

/// The last verification for people.
struct VerificationView {
    /// When it finished.
    at: String,
    /// Who ran it.
    actor: String,
    /// Events checked.
    events: i64,
    /// Findings (0: intact).
    findings: i64,
}

/// The page: summary, charts with their tables, health.
#[derive(Template, WebTemplate)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    /// Frame, language, navigation.
    chrome: Chrome,
    /// The ranges offered, in days, each with whether it is the one shown.
    ranges: Vec<(u32, bool)>,
    /// The `until` asked for (empty: today), kept by the range links.
    until: String,
    /// First day of the range.
    first_date: String,
    /// Last day of the range.
    last_date: String,
    /// Courts with figures in the range, with their colours.
    courts: Vec<Legend>,
    /// Finished calls in the range.
    total_calls: i64,
    /// Share that heard the whole warning.
    share_completed: String,
    /// Hung up during the warning.
    hung_up: i64,
    /// Share connected.
    share_connected: String,
    /// Mean operator answer time.
    mean_answer: String,
    /// Calls per day per court.
    calls_chart: Chart,
    /// What the calls chart shows.
    calls_desc: String,
    /// The three shares per day.
    rates_chart: Chart,
    /// Legend of the shares.
    rates: Vec<Legend>,
    /// What the shares chart shows.
    rates_desc: String,
    /// Mean answer time per day.
    answer_chart: Chart,
    /// What the answer-time chart shows.
    answer_desc: String,
    /// Answer-time buckets of the range.
    buckets_chart: Chart,
    /// Flags and reports per week.
    weeks_chart: Chart,
    /// Legend of flags and reports.
    weeks: Vec<Legend>,
    /// What the weeks chart shows.
    weeks_desc: String,
    /// The per-day table under the charts.
    day_rows: Vec<DayRow>,
    /// Flags and reports per week as a table.
    week_rows: Vec<WeekRow>,
    /// Answer-time buckets as a table.
    bucket_rows: Vec<BucketRow>,
    /// Last signed checkpoint: chain position and time.
    checkpoint: Option<(i64, String)>,
    /// Last verification.
    verification: Option<VerificationView>,
    /// Each switchboard's last delivery.
    nodes: Vec<NodeRow>,
}

async fn dashboard_page(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(query): Query<DashboardQuery>,
) -> Response {
    let (visitor, caller) = match console
        .allowed(
            &headers,
            peer,
            here("/dashboard", uri.query()),
            Page::Dashboard,
        )
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    let lang = visitor.lang;
    let days = match query.days.trim() {
        "" => Some(DEFAULT_DAYS),
        days => days.parse().ok().filter(|days| RANGES.contains(days)),
    };
    let last_day = match query.until.trim() {
        "" => Some(day_of(now_ms())),
        until => NaiveDate::parse_from_str(until, "%Y-%m-%d")
            .ok()
            .map(|date| date.signed_duration_since(NaiveDate::default()).num_days()),
    };
    let (Some(days), Some(last_day)) = (days, last_day) else {
        let status = Status::invalid_argument(lang.text("dash-error-range"));
        return visitor.respond(failure(visitor.chrome(), &status));
    };
    match console.server.dashboard_as(&caller, last_day, days).await {
        Ok(dashboard) => visitor.respond(page(visitor.chrome(), dashboard, days, query.until)),
        Err(status) => visitor.respond(failure(visitor.chrome(), &status)),
    }
}

/// The page of `dashboard`, a view of `days` days.
fn page(chrome: Chrome, dashboard: Dashboard, days: u32, until: String) -> DashboardPage {
    let lang = chrome.lang;
    let Dashboard {
        figures,
        health,
        now_ms,
    } = dashboard;
    let first_date = date(figures.days.first().map_or(0, |day| day.day));
    let last_date = date(figures.days.last().map_or(0, |day| day.day));
    let total = figures.total;
    let courts = figures
        .courts
        .iter()
        .enumerate()
        .map(|(index, name)| Legend {
            name: name.clone(),
            colour: colour(index),
        })
        .collect();
    let rates = ["dash-completed", "dash-hung-up", "dash-connected"]
        .iter()
        .enumerate()
        .map(|(index, key)| Legend {
            name: lang.text(key),
            colour: colour(index),
        })
        .collect();
    let weeks = ["dash-flags", "dash-reports"]
        .iter()
        .enumerate()
        .map(|(index, key)| Legend {
            name: lang.text(key),
            colour: colour(WEEK_SERIES[index]),
        })
        .collect();
    let range = format!("{first_date} – {last_date} (UTC)");
    let (checkpoint, verification, nodes) = health_view(lang, health, now_ms);
    DashboardPage {
        ranges: RANGES.map(|choice| (choice, choice == days)).to_vec(),
        until,
        courts,
        total_calls: total.calls,
        share_completed: percent(total.percent_of_calls(total.warning_completed)),
        hung_up: total.hung_up_in_warning,
        share_connected: percent(total.percent_of_calls(total.connected)),
        mean_answer: seconds(lang, total.mean_answer_ms()),
        calls_chart: calls_chart(&figures),
        calls_desc: format!("{} {range}: {}", lang.text("dash-calls-desc"), total.calls),
        rates_chart: rates_chart(&figures),
        rates,
        rates_desc: format!("{} {range}", lang.text("dash-rates-desc")),
        answer_chart: answer_chart(lang, &figures),
        answer_desc: format!("{} {range}", lang.text("dash-answer-desc")),
        buckets_chart: buckets_chart(lang, &total),
        weeks_chart: weeks_chart(lang, &figures),
        weeks,
        weeks_desc: format!("{} {range}", lang.text("dash-weeks-desc")),
        day_rows: figures
            .days
            .iter()
            .map(|day| DayRow {
                date: date(day.day),
                per_court: day.calls_per_court.clone(),
                calls: day.total.calls,
                completed: percent(day.total.percent_of_calls(day.total.warning_completed)),
                hung_up: day.total.hung_up_in_warning,
                connected: percent(day.total.percent_of_calls(day.total.connected)),
                mean_answer: seconds(lang, day.total.mean_answer_ms()),
            })
            .collect(),
        week_rows: figures
            .weeks
            .iter()
            .map(|week| WeekRow {
                first: date(week.first_day),
                last: date(week.last_day),
                flags: week.flags,
                reports: week.reports,
            })
            .collect(),
        bucket_rows: buckets(lang, &total)
            .into_iter()
            .map(|(label, count)| BucketRow {
                share: percent(
                    (total.answered > 0).then(|| 100.0 * count as f64 / total.answered as f64),
                ),
                label,
                count,
            })
            .collect(),
        first_date,
        last_date,
        checkpoint,
        verification,
        nodes,
        chrome,
    }
}

/// Calls per day, each court a segment of the day's bar.
fn calls_chart(figures: &Figures) -> Chart {
    let max = figures.days.iter().map(|day| day.total.calls).max();
    let mut chart = Chart::new(figures.days.len(), max.unwrap_or(0) as f64);
    for (slot, day) in figures.days.iter().enumerate() {
        let calls: Vec<(usize, f64)> = day
            .calls_per_court
            .iter()
            .enumerate()
            .map(|(court, n)| (court, *n as f64))
            .collect();
        chart.stack(slot, &calls);
        chart.title(slot, format!("{}: {}", date(day.day), day.total.calls));
    }
    label_days(&mut chart, figures);
    chart
}

/// Per day, in per cent of the day's calls: heard the whole warning, hung up during
/// it, connected to an operator.
fn rates_chart(figures: &Figures) -> Chart {
    let mut chart = Chart::new(figures.days.len(), 100.0);
    let parts: [fn(&Tally) -> i64; 3] = [
        |tally| tally.warning_completed,
        |tally| tally.hung_up_in_warning,
        |tally| tally.connected,
    ];
    for (series, part) in parts.iter().enumerate() {
        let values: Vec<Option<f64>> = figures
            .days
            .iter()
            .map(|day| day.total.percent_of_calls(part(&day.total)))
            .collect();
        chart.line(&values, series);
    }
    for (slot, day) in figures.days.iter().enumerate() {
        let rates: Vec<String> = parts
            .iter()
            .map(|part| percent(day.total.percent_of_calls(part(&day.total))))
            .collect();
        chart.title(slot, format!("{}: {}", date(day.day), rates.join(" / ")));
    }
    label_days(&mut chart, figures);
    chart
}

/// Mean operator answer time per day, in seconds.
fn answer_chart(lang: Lang, figures: &Figures) -> Chart {
    let means: Vec<Option<i64>> = figures
        .days
        .iter()
        .map(|day| day.total.mean_answer_ms())
        .collect();
    let max = means.iter().flatten().max().copied().unwrap_or(0);
    let mut chart = Chart::new(figures.days.len(), max as f64 / 1000.0);
    for (slot, (day, mean)) in figures.days.iter().zip(&means).enumerate() {
        if let Some(mean) = mean {
            chart.stack(slot, &[(ANSWER_SERIES, *mean as f64 / 1000.0)]);
            chart.title(
                slot,
                format!("{}: {}", date(day.day), seconds(lang, Some(*mean))),
            );
        }
    }
    label_days(&mut chart, figures);
    chart
}

/// How many answer times of the range fall in each bucket: within 5 s, 5–10 s, ...,
/// over 30 s.
fn buckets(lang: Lang, total: &Tally) -> Vec<(String, i64)> {
    let unit = lang.text("dash-unit-s");
    let mut rows = Vec::new();
    let mut below = (0, 0);
    for (bound, within) in ANSWER_WITHIN_MS.iter().zip(total.answered_within) {
        let label = if below.0 == 0 {
            format!("≤ {} {unit}", bound / 1000)
        } else {
            format!("{}–{} {unit}", below.0 / 1000, bound / 1000)
        };
        rows.push((label, within - below.1));
        below = (*bound, within);
    }
    rows.push((
        format!("> {} {unit}", below.0 / 1000),
        total.answered - below.1,
    ));
    rows
}

/// The answer-time buckets of the range as bars.
fn buckets_chart(lang: Lang, total: &Tally) -> Chart {
    let rows = buckets(lang, total);
    let max = rows.iter().map(|(_, count)| *count).max().unwrap_or(0);
    let mut chart = Chart::new(rows.len(), max as f64);
    for (slot, (label, count)) in rows.into_iter().enumerate() {
        chart.stack(slot, &[(ANSWER_SERIES, count as f64)]);
        chart.title(slot, format!("{label}: {count}"));
        chart.label(slot, label);
    }
    chart
}

/// Flags and reports per week, side by side.
fn weeks_chart(lang: Lang, figures: &Figures) -> Chart {
    let max = figures
        .weeks
        .iter()
        .map(|week| week.flags.max(week.reports))
        .max()
        .unwrap_or(0);
    let mut chart = Chart::new(figures.weeks.len(), max as f64);
    let (flags, reports) = (lang.text("dash-flags"), lang.text("dash-reports"));
    for (slot, week) in figures.weeks.iter().enumerate() {
        chart.group(
            slot,
            &[
                (WEEK_SERIES[0], week.flags as f64),
                (WEEK_SERIES[1], week.reports as f64),
            ],
        );
        chart.title(
            slot,
            format!(
                "{} – {}: {flags} {}, {reports} {}",
                date(week.first_day),
                date(week.last_day),
                week.flags,
                week.reports
            ),
        );
        chart.label(slot, short_date(week.first_day));
    }
    chart
}

/// Labels every few days under a chart of days, the last day always.
fn label_days(chart: &mut Chart, figures: &Figures) {
    let every = figures.days.len().div_ceil(MAX_DAY_LABELS).max(1);
    let last = figures.days.len().saturating_sub(1);
    for (slot, day) in figures.days.iter().enumerate() {
        if (last - slot) % every == 0 {
            chart.label(slot, short_date(day.day));
        }
    }
}

/// The health section: checkpoint, verification, deliveries.
fn health_view(
    lang: Lang,
    health: RecordsHealth,
    now_ms: i64,
) -> (
    Option<(i64, String)>,
    Option<VerificationView>,
    Vec<NodeRow>,
) {
    let checkpoint = health
        .last_checkpoint
        .map(|(seq, at_ms)| (seq, local_time(at_ms)));
    let verification = health.last_verification.map(|run| VerificationView {
        at: local_time(run.finished_at_ms),
        actor: run.actor,
        events: run.events_checked,
        findings: run.findings,
    });
    let nodes = health
        .nodes
        .into_iter()
        .map(|node| NodeRow {
            event_at: local_time(node.at_ms),
            stored_at: local_time(node.stored_at_ms),
            lag: duration(lang, node.stored_at_ms - node.at_ms),
            since: duration(lang, now_ms - node.stored_at_ms),
            node_id: node.node_id,
            node_seq: node.node_seq,
        })
        .collect();
    (checkpoint, verification, nodes)
}

/// `YYYY-MM-DD` of a UTC day.
fn date(day: i64) -> String {
    DateTime::from_timestamp(day.saturating_mul(86_400), 0)
        .map(|time| time.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// `MM-DD` of a UTC day, under chart slots.
fn short_date(day: i64) -> String {
    date(day).get(5..).unwrap_or_default().to_owned()
}

/// `66.7%`, or a dash when there is nothing to divide.
fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "—".to_owned(), |value| format!("{value:.1}%"))
}

/// `12.3 s` (in the page's language), or a dash.
fn seconds(lang: Lang, ms: Option<i64>) -> String {
    ms.map_or_else(
        || "—".to_owned(),
        |ms| format!("{:.1} {}", ms as f64 / 1000.0, lang.text("dash-unit-s")),
    )
}

/// A duration in the largest unit that keeps it above 2 (seconds to days).
fn duration(lang: Lang, ms: i64) -> String {
    let seconds = ms.max(0) / 1000;
    let (value, unit) = match seconds {
        0..120 => (seconds, "dash-unit-s"),
        120..7_200 => (seconds / 60, "dash-unit-min"),
        7_200..172_800 => (seconds / 3_600, "dash-unit-h"),
        _ => (seconds / 86_400, "dash-unit-d"),
    };
    format!("{value} {}", lang.text(unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_durations_and_buckets_read_right() {
        assert_eq!(date(day_of(1_700_000_000_000)), "2023-11-14");
        assert_eq!(short_date(19_675), "11-14");
        assert_eq!(percent(Some(200.0 / 3.0)), "66.7%");
        assert_eq!(percent(None), "—");
        assert_eq!(duration(Lang::EnUs, 59_999), "59 s");
        assert_eq!(duration(Lang::EnUs, 3_600_000), "60 min");
        assert_eq!(duration(Lang::EnUs, 3 * 86_400_000), "3 d");
        let total = Tally {
            answered: 10,
            answered_within: [1, 3, 6, 6],
            ..Tally::default()
        };
        let rows: Vec<i64> = buckets(Lang::EnUs, &total)
            .into_iter()
            .map(|(_, count)| count)
            .collect();
        assert_eq!(rows, [1, 2, 3, 0, 4]);
        assert_eq!(buckets(Lang::EnUs, &total)[1].0, "5–10 s");
    }
}
