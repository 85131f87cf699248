//! `--console`: the web console's server time per page on the filled store. The
//! records service's operations and the console run in this process on
//! 127.0.0.1:0 (no token issued, so the loopback rule signs this client in as
//! admin: every page is open to it, and every view is logged on the chain as for
//! anyone); each page is fetched `--requests` times over plain HTTP/1.1, one at a
//! time, a new connection each, and timed from connecting to the last byte: p50
//! and p99. Page weight: the page's HTML and the stylesheet and script it links
//! (nothing else is fetched; no audio), uncompressed.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use courtline::records::service::OpenedService;
use courtline::records::store::SqlStore;
use courtline::records::web::{serve, WebSettings};
use sqlx::Row;

use super::percentile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The assets every page links, fetched once for the page weight.
const ASSETS: [&str; 2] = ["/assets/console.css", "/assets/htmx.min.js"];

/// One HTTP answer.
struct Answer {
    /// Status code.
    status: u16,
    /// Header lines, as sent.
    headers: String,
    /// The body, de-chunked.
    body: Vec<u8>,
}

/// A console reached over loopback with one session.
struct Browser {
    /// `127.0.0.1:port`.
    address: String,
    /// `courtline_session=...`, once the console set it.
    cookie: String,
}

impl Browser {
    /// GET `path` (already percent-encoded) on a new connection, read to the end.
    async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        let mut stream = TcpStream::connect(&self.address).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept-Language: zh-CN\r\nCookie: {}\r\nConnection: close\r\n\r\n",
            self.address, self.cookie
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let split = raw
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .context("no end of headers")?;
        let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
        let status = headers
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .context("no status")?;
        let mut body = raw[split + 4..].to_vec();
        if headers
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body)?;
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// The body of a chunked transfer.
fn dechunk(mut raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = raw
            .windows(2)
            .position(|window| window == b"\r\n")
            .context("chunk size")?;
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line])?.trim(), 16)?;
        if size == 0 {
            return Ok(body);
        }
        let start = line + 2;
        body.extend_from_slice(raw.get(start..start + size).context("short chunk")?);
        raw = raw.get(start + size + 2..).context("chunk end")?;
    }
}

/// `text` percent-encoded for a query string.
fn encode(text: &str) -> String {
    serde_urlencoded::to_string([("", text)])
        .unwrap_or_default()
        .trim_start_matches('=')
        .to_owned()
}

/// Measures the console's pages on `database` (filled by the caller); the generated
/// calls span `[start_ms, end_ms)`.
pub async fn measure(
    opened: OpenedService,
    store: &SqlStore,
    start_ms: i64,
    end_ms: i64,
    requests: usize,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let console = tokio::spawn(serve(
        listener,
        opened.server.clone(),
        WebSettings {
            hosts: vec![address.clone()],
            session_idle: Duration::from_secs(3600),
            tls: None,
            masked_roles: Vec::new(),
        },
        async {
            let _ = stopped.await;
        },
    ));
    let mut browser = Browser {
        address,
        cookie: String::new(),
    };
    let first = browser.get("/dashboard").await?;
    browser.cookie = first
        .headers
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie").then(|| {
                value
                    .trim()
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
        })
        .context("the console set no session cookie (was a token issued on this database?)")?;
    let assets: usize = {
        let mut bytes = 0;
        for asset in ASSETS {
            bytes += browser.get(asset).await?.body.len();
        }
        bytes
    };

    let day = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|time| time.format("%Y-%m-%d").to_string())
            .unwrap_or_default()
    };
    let minute = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|time| time.format("%Y-%m-%dT%H:%M").to_string())
            .unwrap_or_default()
    };
    let last_day = day(end_ms - 1);
    let last_month = end_ms - 30 * 86_400_000;
    let newest = sqlx::query("SELECT call_id FROM calls ORDER BY received_at_ms DESC LIMIT 1")
        .fetch_one(store.pool())
        .await?
        .try_get::<String, _>("call_id")?;
    let middle = sqlx::query(
        "SELECT call_id FROM calls WHERE received_at_ms >= $1 ORDER BY received_at_ms LIMIT 1",
    )
    .bind(start_ms + (end_ms - start_ms) / 2)
    .fetch_one(store.pool())
    .await?
    .try_get::<String, _>("call_id")?;
    let court = encode("上海市第3中级人民法院");
    let pages: Vec<(String, String)> = vec![
        ("calls, no filter".into(), "/calls".into()),
        (
            "calls, line + last 30 days".into(),
            format!("/calls?line=02112007&since={}", encode(&minute(last_month))),
        ),
        ("calls, court".into(), format!("/calls?court={court}")),
        (
            "calls, caller prefix (5 digits)".into(),
            "/calls?caller=13456".into(),
        ),
        (
            "calls, caller exact (no match)".into(),
            "/calls?caller=13800138000&caller_exact=on".into(),
        ),
        (
            "calls, court + end reason + last 30 days".into(),
            format!(
                "/calls?court={court}&end_reason=operator_busy&since={}",
                encode(&minute(last_month))
            ),
        ),
        (
            "calls, one day 90 days ago".into(),
            format!(
                "/calls?since={}&until={}",
                encode(&minute(end_ms - 90 * 86_400_000)),
                encode(&minute(end_ms - 89 * 86_400_000))
            ),
        ),
        (
            "calls, end reason no_answer".into(),
            "/calls?end_reason=no_answer".into(),
        ),
        (
            "calls, warning not completed + not connected".into(),
            "/calls?warning=no&connected=no".into(),
        ),
        (
            "calls, name contains 律师".into(),
            format!("/calls?name={}", encode("律师")),
        ),
        (
            "calls, name contains 曹".into(),
            format!("/calls?name={}", encode("曹")),
        ),
        (
            "calls, name contains a name nobody has".into(),
            format!("/calls?name={}", encode("无此人")),
        ),
        ("calls, flagged (none)".into(), "/calls?flagged=yes".into()),
        (
            "call detail (newest call)".into(),
            format!("/calls/{newest}"),
        ),
        (
            "call detail (a call of mid-year)".into(),
            format!("/calls/{middle}"),
        ),
        (
            "dashboard, 7 days".into(),
            format!("/dashboard?days=7&until={last_day}"),
        ),
        (
            "dashboard, 30 days".into(),
            format!("/dashboard?days=30&until={last_day}"),
        ),
        (
            "dashboard, 90 days".into(),
            format!("/dashboard?days=90&until={last_day}"),
        ),
    ];
    println!(
        "console: {requests} requests per page, one at a time; assets linked by every page: {:.1} kB",
        assets as f64 / 1000.0
    );
    println!("| page | p50 | p99 | max | HTML | page weight (HTML + CSS + JS) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, path) in &pages {
        let mut samples = Vec::with_capacity(requests);
        let mut html = 0;
        for _ in 0..requests {
            let started = Instant::now();
            let answer = browser.get(path).await?;
            samples.push(started.elapsed());
            if answer.status != 200 {
                bail!(
                    "{name}: {path} answered {}: {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                );
            }
            html = answer.body.len();
        }
        samples.sort();
        let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} kB | {:.1} kB |",
            ms(percentile(&samples, 50.0)),
            ms(percentile(&samples, 99.0)),
            ms(samples[samples.len() - 1]),
            html as f64 / 1000.0,
            (html + assets) as f64 / 1000.0
        );
    }
    let _ = stop.send(());
    console.await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&samples[..1], 99.0), Duration::from_millis(1));
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert_eq!(encode("律师 a"), "%E5%BE%8B%E5%B8%88+a");
    }
}
