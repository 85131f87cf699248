//! Packaging: the systemd unit passes `systemd-analyze verify`, a real
//! `courtline serve` speaks systemd's notify protocol (READY=1 once it answers
//! SIP, STOPPING=1 and STATUS= when SIGTERM drains it, WATCHDOG=1), and the
//! Debian package's configuration is the example's with installed paths.
//! Building and installing the package itself is `.ci/run`'s
//! (deploy/debian/check-package.sh).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{repo_path, write_test_prompt, RawRequest, SipPeer};
use tokio::net::UnixDatagram;
use tokio::time::{timeout, Instant};

/// Debian's systemd package's checker.
const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    if !Path::new(SYSTEMD_ANALYZE).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{SYSTEMD_ANALYZE} is missing: apt-get install systemd"
        );
        eprintln!("skipped: {SYSTEMD_ANALYZE} is missing (apt-get install systemd)");
        return;
    }
    let unit = std::fs::read_to_string(repo_path("deploy/systemd/courtline.service")).unwrap();
    // verify insists that ExecStart's program exists: this build's stands in for
    // /usr/bin/courtline (deploy/debian/check-package.sh verifies the installed unit).
    let installed = "ExecStart=/usr/bin/courtline ";
    assert!(unit.contains(installed), "{unit}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("courtline.service");
    std::fs::write(
        &path,
        unit.replace(
            installed,
            &format!("ExecStart={} ", env!("CARGO_BIN_EXE_courtline")),
        ),
    )
    .unwrap();
    let out = Command::new(SYSTEMD_ANALYZE)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    // verify exits 0 on unknown keys and unparsable values, only printing them.
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && printed.trim().is_empty(),
        "systemd-analyze verify: {}\n{printed}",
        out.status
    );
}

#[test]
fn the_packaged_configuration_is_the_example_with_installed_paths() {
    let out = Command::new("bash")
        .arg(repo_path("deploy/debian/installed-config.sh"))
        .current_dir(repo_path(""))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let packaged = std::fs::read_to_string(repo_path("deploy/debian/courtline.toml")).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout) == packaged,
        "deploy/debian/courtline.toml is out of date with config/courtline.toml: \
         bash deploy/debian/installed-config.sh > deploy/debian/courtline.toml"
    );
    // Every path in it is absolute: the service and an admin's shell resolve it alike.
    let paths = configured_paths(&packaged);
    assert!(paths.len() >= 4, "{paths:?}");
    for path in paths {
        assert!(
            path.starts_with('/'),
            "relative path {path:?} in the packaged configuration"
        );
    }
}

/// The `file = "…"` and `database = "…"` values of a configuration's text.
fn configured_paths(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            matches!(key.trim(), "file" | "database").then(|| value.trim().trim_matches('"'))
        })
        .collect()
}

/// A `courtline serve` child, killed if the test fails.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits up to 10 s for a notification containing `line`; every one received
/// on the way (and that one) is appended to `seen`.
async fn until_notified(socket: &UnixDatagram, line: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = timeout(left, socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {line:?} from courtline within 10 s; got {seen:?}"))
            .unwrap();
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(message.clone());
        if message.lines().any(|l| l == line) {
            return message;
        }
    }
}

/// The value of `KEY=` in a notification.
fn field<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_notifies_systemd_ready_once_it_answers_sip_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("prompt.wav");
    write_test_prompt(&wav, 2_000);
    let config = dir.path().join("courtline.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[sip]
listen = "127.0.0.1:0"
drain_timeout_s = 30
[media]
rtp_ports = "46610-46659"
[admin]
listen = ""
[records.service]
listen = "127.0.0.1:0"
database = "{db}"
[records.web]
listen = ""
[prompts.test]
file = "{wav}"
[[lines]]
number = "02112368"
court = "上海市第一中级人民法院"
prompt = "test"
operator = "sip:nobody@127.0.0.1:9"
"#,
            db = dir.path().join("records.db").display(),
            wav = wav.display(),
        ),
    )
    .unwrap();
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_courtline"))
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env("NOTIFY_SOCKET", &notify_path)
            // As systemd sets it for WatchdogSec=1s: WATCHDOG=1 every 0.5 s.
            .env("WATCHDOG_USEC", "1000000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut seen = Vec::new();

    // READY=1, and at that moment SIP is answered.
    let ready = until_notified(&notify, "READY=1", &mut seen).await;
    let sip: SocketAddr = field(&ready, "STATUS")
        .and_then(|status| status.strip_prefix("taking calls: SIP on "))
        .unwrap_or_else(|| panic!("no SIP address in {ready:?}"))
        .parse()
        .unwrap();
    let prober = SipPeer::bind().await;
    let options = RawRequest::new(
        "OPTIONS",
        format_args!("sip:courtline@{sip}"),
        prober.addr,
        "z9hG4bK-systemd-1",
    )
    .dialog(
        &format!("<sip:monitor@{}>;tag=m", prober.addr),
        &format!("<sip:courtline@{sip}>"),
        "systemd-ready@test",
    )
    .cseq(1)
    .text();
    prober.send(sip, &options).await;
    prober.expect_status(200, Duration::from_secs(10)).await;
    until_notified(&notify, "WATCHDOG=1", &mut seen).await;

    // SIGTERM: STOPPING=1 with the drain in STATUS= and a longer stop timeout.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(serve.0.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let stopping = until_notified(&notify, "STOPPING=1", &mut seen).await;
    let status = field(&stopping, "STATUS").unwrap_or_default();
    assert!(
        status.starts_with("draining: 0 call(s) in progress"),
        "{stopping:?}"
    );
    let extend: u64 = field(&stopping, "EXTEND_TIMEOUT_USEC")
        .unwrap_or_else(|| panic!("no EXTEND_TIMEOUT_USEC in {stopping:?}"))
        .parse()
        .unwrap();
    assert!(extend >= 30_000_000, "shorter than the drain: {extend} µs");

    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(status) = serve.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "courtline serve did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit}");
    let readies = seen.iter().filter(|m| m.lines().any(|l| l == "READY=1"));
    assert_eq!(readies.count(), 1, "{seen:?}");
}
