//! Safe live changes against a real `courtline serve` process: SIGHUP and
//! `courtline reload` put a new configuration in force for new calls while a call
//! in progress keeps its own; a bad file or a restart-only change is refused and
//! the old configuration goes on working; every applied configuration is a
//! chained records event (`records config-history`, `records verify`); prompt
//! versions scheduled with `valid_from` play from their time on.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use courtline::contract::pb::CallRecord;
use sha2::{Digest, Sha256};
use support::serve_child::{one_line_config, wait_for_log, ServeChild};
use support::{record_of, recv_rtp, write_sweep, Caller};
use tokio::time::sleep;

/// The configuration: line 02112368 playing `prompt` (a `[prompts.test]` body),
/// RTP on `rtp_ports`, plus `extra` (more lines).
fn config_text(dir: &Path, rtp_ports: &str, prompt: &str, extra: &str) -> String {
    one_line_config(dir, rtp_ports, "", "test", prompt, extra)
}

/// SHA-256 (hex) of a file, as records name prompts.
fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

const RTP_PORTS: &str = "44600-44699";

impl ServeChild {
    /// Starts `courtline serve` with `prompt` as the `[prompts.test]` body.
    async fn with_prompt(prompt: &str, rtp_ports: &str) -> ServeChild {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("courtline.toml");
        std::fs::write(&config, config_text(dir.path(), rtp_ports, prompt, "")).unwrap();
        ServeChild::start(dir, config).await
    }

    /// Rewrites the configuration file.
    fn write_config(&self, prompt: &str, extra: &str, rtp_ports: &str) {
        std::fs::write(
            &self.config,
            config_text(self.dir.path(), rtp_ports, prompt, extra),
        )
        .unwrap();
    }

    /// Runs `courtline --config <ours> args…` to the end.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_courtline"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("COURTLINE_TOKEN")
            .output()
            .unwrap()
    }

    /// `courtline reload` against this process's admin endpoint.
    fn reload(&self) -> Output {
        self.cli(&["reload", "--admin", &self.admin.to_string()])
    }

    /// The record of the call whose SIP Call-ID is `sip_call_id`, once it has ended.
    async fn record(&self, sip_call_id: &str) -> CallRecord {
        let records = self.records.expect("an embedded records service");
        record_of(records, sip_call_id, Duration::from_secs(10)).await
    }
}

/// A call that has started hearing its warning.
async fn caller_hearing_the_warning(sip: SocketAddr) -> Caller {
    let mut caller = Caller::new(sip).await;
    caller.call("0").await;
    recv_rtp(&caller.rtp, Duration::from_secs(10))
        .await
        .expect("warning audio");
    caller
}

/// The prompt SHA-256 recorded for one short call.
async fn prompt_of_a_new_call(serve: &ServeChild) -> String {
    let mut caller = caller_hearing_the_warning(serve.sip).await;
    caller.hang_up().await;
    serve.record(&caller.call_id).await.prompt_sha256
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_change_new_calls_only_refuse_bad_files_and_are_chained() {
    let scratch = tempfile::tempdir().unwrap();
    let wav = |name: &str, start_hz: f64| {
        let path = scratch.path().join(name);
        // Long enough that a call stays in its warning for the whole test.
        write_sweep(&path, 30_000, start_hz, 8000);
        path
    };
    let (old, new, scheduled, future) = (
        wav("old.wav", 300.0),
        wav("new.wav", 600.0),
        wav("scheduled.wav", 900.0),
        wav("future.wav", 1200.0),
    );
    let prompt = |path: &Path| format!("file = \"{}\"", path.display());
    let mut serve = ServeChild::with_prompt(&prompt(&old), RTP_PORTS).await;
    assert_eq!(prompt_of_a_new_call(&serve).await, sha256_of(&old));

    // A call in progress when the warning is changed by SIGHUP.
    let mut in_progress = caller_hearing_the_warning(serve.sip).await;
    serve.write_config(&prompt(&new), "", RTP_PORTS);
    serve.signal("HUP");
    let reloaded = wait_for_log(&serve.log, "configuration reloaded", 1).await;
    assert_eq!(reloaded["fields"]["requested_by"], "sighup");
    assert!(
        reloaded["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("prompts changed: test"),
        "{reloaded}"
    );
    // New calls hear the new recording; the one in progress goes on with its own.
    assert_eq!(prompt_of_a_new_call(&serve).await, sha256_of(&new));
    recv_rtp(&in_progress.rtp, Duration::from_secs(5))
        .await
        .expect("the call in progress still hears its warning");
    in_progress.hang_up().await;
    let kept = serve.record(&in_progress.call_id).await;
    assert_eq!(kept.prompt_sha256, sha256_of(&old));

    // A bad file: refused with file, key and reason; the old configuration stays.
    serve.write_config(&prompt(&scratch.path().join("missing.wav")), "", RTP_PORTS);
    let refused = serve.reload();
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains(&serve.config.display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("`prompts.test.file`"), "{stderr}");
    assert!(stderr.contains("missing.wav"), "{stderr}");
    assert!(
        stderr.contains("configuration in force is unchanged"),
        "{stderr}"
    );
    assert_eq!(prompt_of_a_new_call(&serve).await, sha256_of(&new));

    // A restart-only key: refused, naming it.
    serve.write_config(&prompt(&new), "", "44700-44799");
    let refused = serve.reload();
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("restart needed: media.rtp_ports"),
        "{stderr}"
    );

    // By `courtline reload`: a new line, and versions of the warning: one whose
    // time has come (it plays now) and one for 2099 (loaded and checked, not played).
    let versions = format!(
        "{}\n[[prompts.test.versions]]\nfile = \"{}\"\nversion = \"2026\"\nvalid_from = \"2026-01-01T00:00:00+08:00\"\n[[prompts.test.versions]]\nfile = \"{}\"\nvalid_from = \"2099-01-01T00:00:00+08:00\"",
        prompt(&new),
        scheduled.display(),
        future.display()
    );
    let line = "[[lines]]\nnumber = \"02112369\"\ncourt = \"上海市第二中级人民法院\"\nprompt = \"test\"\noperator = \"sip:nobody@127.0.0.1:9\"\nrecord_audio = \"never\"";
    serve.write_config(&versions, line, RTP_PORTS);
    let applied = serve.reload();
    let stdout = text(&applied.stdout);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    assert!(stdout.contains("lines added: 02112369"), "{stdout}");
    assert!(stdout.contains("prompts changed: test"), "{stdout}");
    let mut caller = caller_hearing_the_warning(serve.sip).await;
    caller.hang_up().await;
    let record = serve.record(&caller.call_id).await;
    assert_eq!(record.prompt_sha256, sha256_of(&scheduled));
    assert_eq!(record.prompts[0].version, "2026");

    let metrics = serve.metrics().await;
    assert!(
        metrics.contains("courtline_config_reloads_total{result=\"applied\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("courtline_config_reloads_total{result=\"refused\"} 2"),
        "{metrics}"
    );

    // The history: the start-up baseline, then each applied reload, newest first.
    let endpoint = format!("http://{}", serve.records.unwrap());
    let history = serve.cli(&[
        "records",
        "config-history",
        "--endpoint",
        &endpoint,
        "--utc",
    ]);
    let listing = text(&history.stdout);
    assert!(history.status.success(), "{}", text(&history.stderr));
    let headings: Vec<&str> = listing.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(headings.len(), 3, "{listing}");
    assert!(headings[0].contains(" cli from 127.0.0.1:"), "{listing}");
    assert!(headings[1].contains(" sighup: sha256 "), "{listing}");
    assert!(headings[2].contains(" startup: sha256 "), "{listing}");
    assert!(headings[2].contains("(baseline at start-up)"), "{listing}");
    assert!(listing.contains("lines added: 02112369"), "{listing}");
    assert!(
        listing.contains(&format!(
            "version 2026 from 2025-12-31T16:00:00Z: sha256 {}",
            sha256_of(&scheduled)
        )),
        "{listing}"
    );
    // Each links to the one before.
    let sha = |heading: &str| heading.split("sha256 ").nth(1).unwrap()[..64].to_owned();
    assert!(
        headings[0].contains(&format!("(was {})", sha(headings[1]))),
        "{listing}"
    );
    assert!(
        headings[1].contains(&format!("(was {})", sha(headings[2]))),
        "{listing}"
    );

    let verify = serve.cli(&["records", "verify", "--endpoint", &endpoint]);
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );

    serve.signal("TERM");
    serve.exited().await;
}

#[test]
fn check_and_prompts_check_cover_every_prompt_version() {
    let dir = tempfile::tempdir().unwrap();
    let (base, later) = (dir.path().join("base.wav"), dir.path().join("later.wav"));
    write_sweep(&base, 3_000, 300.0, 8000);
    write_sweep(&later, 3_000, 600.0, 8000);
    let config = dir.path().join("courtline.toml");
    let write = |later: &Path| {
        let prompt = format!(
            "file = \"{}\"\n[[prompts.test.versions]]\nfile = \"{}\"\nversion = \"2027\"\nvalid_from = \"2027-01-01T00:00:00+08:00\"",
            base.display(),
            later.display()
        );
        std::fs::write(&config, config_text(dir.path(), RTP_PORTS, &prompt, "")).unwrap();
    };
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_courtline"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap()
    };
    write(&later);
    let checked = run(&["check"]);
    let stdout = text(&checked.stdout);
    assert!(checked.status.success(), "{}", text(&checked.stderr));
    assert!(
        stdout.contains(&format!(
            "✓ prompt test from 2027-01-01T00:00:00+08:00: {}",
            later.display()
        )),
        "{stdout}"
    );
    let measured = run(&["prompts", "check"]);
    assert!(measured.status.success(), "{}", text(&measured.stderr));
    assert!(
        text(&measured.stdout).contains("prompt test from 2027-01-01T00:00:00+08:00"),
        "{}",
        text(&measured.stdout)
    );

    write(&dir.path().join("missing.wav"));
    let refused = run(&["check"]);
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("`prompts.test.versions[0].file`"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_version_goes_live_at_its_time_without_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (now, later) = (dir.path().join("now.wav"), dir.path().join("later.wav"));
    write_sweep(&now, 2_000, 300.0, 8000);
    write_sweep(&later, 2_000, 600.0, 8000);
    // A few seconds from now, written in Shanghai's offset (the machine's zone is irrelevant).
    let valid_from = (chrono::Utc::now() + chrono::Duration::seconds(6))
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap());
    let prompt = format!(
        "file = \"{}\"\n[[prompts.test.versions]]\nfile = \"{}\"\nvalid_from = \"{}\"",
        now.display(),
        later.display(),
        valid_from.to_rfc3339()
    );
    let serve = ServeChild::with_prompt(&prompt, "44800-44899").await;
    let boundary_ms = valid_from.timestamp_millis();
    // Which recording a call got, by when it arrived: the version in force then.
    let expected = |received_at_ms: i64| {
        if received_at_ms < boundary_ms {
            sha256_of(&now)
        } else {
            sha256_of(&later)
        }
    };
    let mut before = caller_hearing_the_warning(serve.sip).await;
    before.hang_up().await;
    let record = serve.record(&before.call_id).await;
    assert_eq!(record.prompt_sha256, expected(record.received_at_ms));
    let wait = (valid_from.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    sleep(wait + Duration::from_millis(100)).await;
    assert_eq!(prompt_of_a_new_call(&serve).await, sha256_of(&later));
}
