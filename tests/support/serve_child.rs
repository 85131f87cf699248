//! A `courtline serve` child process, for the tests that need the real binary:
//! its signals, exit status, JSON log and admin endpoint.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{sleep, Instant};

/// The sections every single-node serve test shares: RTP on `rtp_ports`, an
/// admin endpoint and an embedded records service on loopback ports the
/// kernel picks, records in `database`, no web console. A test adds its own
/// `[sip]` section, prompts and lines around it.
pub fn loopback_node(rtp_ports: &str, database: &Path) -> String {
    format!(
        r#"
[media]
rtp_ports = "{rtp_ports}"
[admin]
listen = "127.0.0.1:0"
[records.service]
listen = "127.0.0.1:0"
database = "{database}"
[records.web]
listen = ""
"#,
        database = database.display(),
    )
}

/// The configuration most serve tests start from: SIP on a loopback port the
/// kernel picks (with `sip` TOML added inside `[sip]`), [`loopback_node`], the
/// prompt `[prompts.<prompt>]` with `prompt_body`, and one line, 02112368,
/// playing it unrecorded to an operator nobody answers; then `extra` TOML.
pub fn one_line_config(
    dir: &Path,
    rtp_ports: &str,
    sip: &str,
    prompt: &str,
    prompt_body: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[sip]
listen = "127.0.0.1:0"
{sip}
{node}[prompts.{prompt}]
{prompt_body}
[[lines]]
number = "02112368"
court = "上海市第一中级人民法院"
prompt = "{prompt}"
operator = "sip:nobody@127.0.0.1:9"
record_audio = "never"
{extra}
"#,
        node = loopback_node(rtp_ports, &dir.join("records.db")),
    )
}

/// A `[prompts.…]` body playing the one file `path`.
pub fn prompt_file(path: &Path) -> String {
    format!("file = \"{}\"\nversion = \"2026-01\"", path.display())
}

/// A running `courtline serve` and what it was started with.
pub struct ServeChild {
    /// The process; killed when dropped, so a failed test leaves nothing running.
    pub child: Child,
    /// Its log, one JSON object a line.
    pub log: PathBuf,
    /// Its configuration file.
    pub config: PathBuf,
    /// Where it takes SIP.
    pub sip: SocketAddr,
    /// Its admin endpoint (the configuration must have one).
    pub admin: SocketAddr,
    /// Its embedded records service, when it runs one.
    pub records: Option<SocketAddr>,
    /// Configuration, prompts, database, spool: removed when the test ends.
    pub dir: tempfile::TempDir,
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl ServeChild {
    /// Starts `courtline serve --config config` (a file in `dir`) and waits
    /// until it says it takes calls.
    pub async fn start(dir: tempfile::TempDir, config: PathBuf) -> ServeChild {
        let log = dir.path().join("serve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_courtline"))
            .arg("--config")
            .arg(&config)
            .arg("--log-json")
            .arg("serve")
            .env("RUST_LOG", "info,rsipstack=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let up = wait_for_log(&log, "courtline is up", 1).await;
        let address = |name: &str| -> Option<SocketAddr> {
            // Logged as `addr`, or with Debug as `Some(addr)` / `None`.
            let text = up["fields"][name].as_str()?;
            text.trim_start_matches("Some(")
                .trim_end_matches(')')
                .parse()
                .ok()
        };
        let (sip, admin, records) = (address("sip"), address("admin"), address("records"));
        ServeChild {
            child,
            log,
            config,
            sip: sip.expect("the SIP address in the start-up line"),
            admin: admin.expect("an admin endpoint in the test's configuration"),
            records,
            dir,
        }
    }

    /// Sends `signal` ("TERM", "HUP") to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits up to 20 s for the process to exit; its status.
    pub async fn exited(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "courtline serve did not exit");
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// `/metrics` from its admin endpoint.
    pub async fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").await.1
    }
}

/// Waits up to 20 s for the `nth` (from 1) log line containing `needle`; returns it parsed.
pub async fn wait_for_log(log: &Path, needle: &str, nth: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .filter(|line| line.contains(needle))
            .nth(nth - 1)
        {
            return serde_json::from_str(line).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} (#{nth}) in the log:\n{text}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// GET `path` from `addr` over plain HTTP/1.1: status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// The value of the series `series` (name and labels exactly as rendered) in a
/// Prometheus text exposition.
pub fn metric_value<'a>(metrics: &'a str, series: &str) -> Option<&'a str> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
}

/// The Debian `prometheus` package's checker.
const PROMTOOL: &str = "/usr/bin/promtool";

/// `promtool`, or `None` (with a message) when it is not installed outside CI.
pub fn promtool() -> Option<&'static str> {
    if Path::new(PROMTOOL).exists() {
        return Some(PROMTOOL);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{PROMTOOL} is missing: apt-get install prometheus"
    );
    eprintln!("skipped: {PROMTOOL} is missing (apt-get install prometheus)");
    None
}

/// Runs `promtool args…` with `stdin`; fails the test with its output unless it succeeds.
pub fn run_promtool(promtool: &str, args: &[&str], stdin: &str) {
    let mut child = Command::new(promtool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}\non:\n{stdin}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
