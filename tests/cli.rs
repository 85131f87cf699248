//! The `courtline` binary as an admin uses it: `check` on good and bad
//! configurations, environment overrides, and `calls list` output formats.

mod support;

use std::process::Command;

use support::{repo_path, Caller, Options, TestSwitchboard};

fn courtline() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_courtline"));
    cmd.current_dir(repo_path(""));
    cmd.env_remove("RUST_LOG");
    cmd
}

/// `courtline check` (the embedded defaults) with one environment override.
fn check_with(key: &str, value: impl AsRef<std::ffi::OsStr>) -> std::process::Output {
    courtline()
        .args(["check"])
        .env(key, value)
        .output()
        .unwrap()
}

/// `courtline --config CONFIG check`.
fn check(config: &std::path::Path) -> std::process::Output {
    courtline()
        .arg("--config")
        .arg(config)
        .arg("check")
        .output()
        .unwrap()
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_accepts_the_shipped_config_and_prompts() {
    let out = courtline().args(["check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("prompt three_rules_zh"), "{stdout}");
    assert!(stdout.contains("sha256"), "{stdout}");
    assert!(stdout.contains("上海市第一中级人民法院"), "{stdout}");
    // The example line plays Mandarin, then English, 16 kHz recordings.
    assert!(
        stdout.contains("prompts three_rules_zh → three_rules_en"),
        "{stdout}"
    );
    assert!(stdout.contains("G.722 and G.711"), "{stdout}");
}

#[test]
fn check_loads_every_prompt_of_a_playlist() {
    let dir = tempfile::tempdir().unwrap();
    let fake = write(dir.path(), "english.wav", "RIFF but not really a WAV");
    let text = format!(
        "[prompts.zh]\nfile = \"audio/three_rules_zh.wav\"\n[prompts.en]\nfile = \"{}\"\n[[lines]]\nnumber = \"1\"\ncourt = \"c\"\nprompt = [\"zh\", \"en\"]\noperator = \"sip:o@127.0.0.1\"\n",
        fake.display()
    );
    let config = write(dir.path(), "playlist.toml", &text);
    let out = check(&config);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("english.wav") && stderr.contains("not a WAV file"),
        "the second prompt of the playlist is checked too: {stderr}"
    );
    let good = write(
        dir.path(),
        "good.toml",
        &text.replace(&fake.display().to_string(), "audio/three_rules_en.wav"),
    );
    let out = check(&good);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("prompts zh → en"), "{stdout}");
    assert!(stdout.contains("600 ms gaps"), "{stdout}");
}

#[test]
fn check_names_file_key_and_fix_for_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "bad.toml",
        "[prompts.zh]\nfile = \"audio/three_rules_zh.wav\"\n[[lines]]\nnumber = \"1\"\ncourt = \"c\"\nprompt = \"zz\"\noperator = \"sip:o@127.0.0.1\"\n",
    );
    let out = check(&config);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml"), "{stderr}");
    assert!(stderr.contains("lines[0].prompt"), "{stderr}");
    assert!(stderr.contains("Define [prompts.zz]"), "{stderr}");
}

#[test]
fn check_refuses_a_prompt_that_is_not_a_wav_file() {
    let dir = tempfile::tempdir().unwrap();
    let fake = write(dir.path(), "notice.wav", "this is an MP3, honestly");
    let empty = write(dir.path(), "empty.wav", "");
    let config = write(
        dir.path(),
        "c.toml",
        &format!(
            "[prompts.a]\nfile = \"{}\"\n[prompts.b]\nfile = \"{}\"\n[[lines]]\nnumber = \"1\"\ncourt = \"c\"\nprompt = \"a\"\noperator = \"sip:o@127.0.0.1\"\n",
            fake.display(),
            empty.display()
        ),
    );
    let out = check(&config);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("notice.wav"), "{stderr}");
    assert!(
        stderr.contains("empty.wav"),
        "both problems are reported: {stderr}"
    );
}

#[test]
fn environment_overrides_config_keys() {
    let out = courtline()
        .args(["check"])
        .env("COURTLINE_SIP__LISTEN", "127.0.0.1:15060")
        .env("COURTLINE_SIP__MAX_CALLS", "42")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("SIP on 127.0.0.1:15060 (UDP), max 42 calls"),
        "{stdout}"
    );
    let out = check_with("COURTLINE_SIP__MAX_CALLS", "0");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sip.max_calls"));
    // [media] threads: a number or "auto" from the environment, 0 refused by name.
    let out = check_with("COURTLINE_MEDIA__THREADS", "2");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("2 media engine thread(s)"), "{stdout}");
    let out = check_with("COURTLINE_MEDIA__THREADS", "auto");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // More threads than this machine's cores: allowed, with a warning.
    let over = std::thread::available_parallelism().map_or(1, usize::from) + 1;
    if over <= 64 {
        let out = check_with("COURTLINE_MEDIA__THREADS", over.to_string());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("[media] threads = {over} is more than the")),
            "{stderr}"
        );
    }
    let out = check_with("COURTLINE_MEDIA__THREADS", "0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("`media.threads`: is 0"), "{stderr}");
    // [media] realtime: said when it applies; with a media thread per core
    // ("auto") it would leave SIP no core, so it is ignored, with a warning.
    let realtime = |threads: &str| {
        courtline()
            .arg("check")
            .env("COURTLINE_MEDIA__REALTIME", "true")
            .env("COURTLINE_MEDIA__THREADS", threads)
            .output()
            .unwrap()
    };
    let out = realtime("auto");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(!stdout.contains("real-time"), "{stdout}");
    assert!(
        stderr.contains("[media] realtime = true is ignored"),
        "{stderr}"
    );
    if std::thread::available_parallelism().map_or(1, usize::from) > 1 {
        let out = realtime("1");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("1 media engine thread(s), real-time"),
            "{stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_list_prints_records_in_every_format() {
    let sb = TestSwitchboard::start(Options {
        rtp_ports: (30900, 30999),
        ..Options::default()
    })
    .await;
    let caller = Caller::new(sb.sip).await;
    caller.invite("404404", "0").await;
    caller
        .sip
        .expect_status(404, std::time::Duration::from_secs(2))
        .await;
    sb.record(&caller.call_id).await;
    let endpoint = format!("http://{}", sb.records);
    for (format, needle) in [
        ("table", "张三"),
        ("json", "\"caller_display_name\": \"张三\""),
        ("csv", "张三"),
    ] {
        let out = courtline()
            .args([
                "calls",
                "list",
                "--endpoint",
                &endpoint,
                "--format",
                format,
                "--line",
                "404404",
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(needle), "{format}:\n{stdout}");
        assert!(stdout.contains("rejected"), "{format}:\n{stdout}");
    }
    let out = courtline()
        .args([
            "calls",
            "list",
            "--endpoint",
            &endpoint,
            "--format",
            "csv",
            "--line",
            "nope",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "header only"
    );
    let out = courtline()
        .args([
            "calls",
            "list",
            "--endpoint",
            &endpoint,
            "--since",
            "yesterday",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
    sb.stop().await;
    let out = courtline()
        .args(["calls", "list", "--endpoint", &endpoint])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the records service"));
}

/// A port nothing listens on right now (the OS picked it, then it was let go).
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn moving_the_embedded_records_service_moves_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let listen = format!("127.0.0.1:{port}");
    let out = check_with("COURTLINE_RECORDS__SERVICE__LISTEN", &listen);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("connect to http://{listen}")),
        "{stdout}"
    );
    // The real thing: a records service moved by the variable alone, and
    // `calls list` finding it with nothing else set.
    let mut service = courtline()
        .args(["records", "serve"])
        .env("COURTLINE_RECORDS__SERVICE__LISTEN", &listen)
        .env("COURTLINE_RECORDS__WEB__LISTEN", "127.0.0.1:0")
        .env("COURTLINE_ADMIN__LISTEN", "127.0.0.1:0")
        .env(
            "COURTLINE_RECORDS__SERVICE__DATABASE",
            dir.path().join("r.db"),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let listed = loop {
        let out = courtline()
            .args(["calls", "list", "--format", "json"])
            .env("COURTLINE_RECORDS__SERVICE__LISTEN", &listen)
            .output()
            .unwrap();
        if out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let _ = service.kill();
    let _ = service.wait();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
}

#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    // In an empty directory courtline logs that it falls back to the built-in
    // example (and then fails on its prompt files, which is not the point here).
    let dir = tempfile::tempdir().unwrap();
    let out = courtline()
        .current_dir(dir.path())
        .env_remove("NO_COLOR")
        .env_remove("COURTLINE_CONFIG")
        .args(["check"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("using the example configuration"),
        "{stderr}"
    );
    assert!(
        !out.stderr.contains(&0x1b),
        "ANSI escape in piped logs: {stderr:?}"
    );
}

#[test]
fn numbers_in_quotes_are_refused_in_the_file_but_environment_values_convert() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(repo_path("config/courtline.toml")).unwrap();
    let quoted = write(
        dir.path(),
        "quoted.toml",
        &shipped.replace("max_calls = 500", "max_calls = \"500\""),
    );
    let out = courtline()
        .arg("--config")
        .arg(&quoted)
        .arg("check")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("quoted.toml") && stderr.contains("`sip.max_calls`: \"500\""),
        "{stderr}"
    );
    assert!(stderr.contains("without quotes"), "{stderr}");

    // Environment values are text by nature: converted, and still checked.
    let out = check_with("COURTLINE_SIP__MAX_CALLS", "600");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("max 600 calls"), "{stdout}");
    for (name, value, needles) in [
        (
            "COURTLINE_SIP__LISTEN",
            "127.0.0.1",
            &["`sip.listen`", "\"127.0.0.1\"", "IP address and port"][..],
        ),
        (
            "COURTLINE_SIP__MAX_CALLS",
            "many",
            &["`sip.max_calls`", "\"many\"", "whole number"][..],
        ),
    ] {
        let out = check_with(name, value);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: {stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{name}: {needle}: {stderr}");
        }
        assert!(!stderr.contains("for key"), "library wording: {stderr}");
    }
}

#[test]
fn operator_uri_typos_are_refused_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    for (bad, problem) in [
        ("sip:operator@127.0.0.1:50a90", "port \"50a90\""),
        ("sip:operator127.0.0.1:5090", "host \"operator127.0.0.1\""),
    ] {
        let config = write(
            dir.path(),
            "typo.toml",
            &format!(
                "[prompts.zh]\nfile = \"audio/three_rules_zh.wav\"\n[[lines]]\nnumber = \"1\"\ncourt = \"c\"\nprompt = \"zh\"\noperator = [\"sip:desk@127.0.0.1:5090\", \"{bad}\"]\n"
            ),
        );
        let out = check(&config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad}: {stderr}");
        for needle in [
            "typo.toml",
            "`lines[0].operator[1]`",
            bad,
            problem,
            "sip:user@host",
        ] {
            assert!(stderr.contains(needle), "{bad}: {needle}: {stderr}");
        }
        assert!(out.stdout.is_empty(), "nothing is ✓ before the failure");
    }
}

/// Writes a 16 kHz mono 16-bit WAV of `seconds` of a 1 kHz sine at `dbfs` peak,
/// clipped to 16 bits as an overloaded export would be (dbfs above 0 clips).
fn write_tone(dir: &std::path::Path, name: &str, seconds: f64, dbfs: f64) -> std::path::PathBuf {
    write_signal(dir, name, 16000, 0, seconds, dbfs)
}

/// The same at `rate` Hz, after `silence_ms` of digital silence.
fn write_signal(
    dir: &std::path::Path,
    name: &str,
    rate: u32,
    silence_ms: u32,
    seconds: f64,
    dbfs: f64,
) -> std::path::PathBuf {
    let path = dir.join(name);
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&path, spec).unwrap();
    for _ in 0..silence_ms * rate / 1000 {
        writer.write_sample(0i16).unwrap();
    }
    let amplitude = if dbfs == f64::NEG_INFINITY {
        0.0
    } else {
        32768.0 * 10f64.powf(dbfs / 20.0)
    };
    for n in 0..(seconds * f64::from(rate)) as usize {
        let value = amplitude * (std::f64::consts::TAU * 1000.0 * n as f64 / f64::from(rate)).sin();
        writer
            .write_sample(value.clamp(-32768.0, 32767.0) as i16)
            .unwrap();
    }
    writer.finalize().unwrap();
    path
}

/// A configuration playing `wav` on one line.
fn config_playing(dir: &std::path::Path, wav: &std::path::Path) -> std::path::PathBuf {
    write(
        dir,
        "c1.toml",
        &format!(
            "[prompts.notice]\nfile = \"{}\"\n[[lines]]\nnumber = \"1\"\ncourt = \"c\"\nprompt = \"notice\"\noperator = \"sip:o@127.0.0.1\"\n",
            wav.display()
        ),
    )
}

fn check_strict(config: &std::path::Path, strict: bool) -> std::process::Output {
    let mut cmd = courtline();
    cmd.arg("--config").arg(config).arg("check");
    if strict {
        cmd.arg("--strict");
    }
    cmd.output().unwrap()
}

#[test]
fn check_and_serve_refuse_silent_and_near_silent_prompts() {
    let dir = tempfile::tempdir().unwrap();
    for (name, dbfs, needle) in [
        (
            "silent.wav",
            f64::NEG_INFINITY,
            "silent (every sample is 0)",
        ),
        ("faint.wav", -45.0, "near-silent (peak -45.0 dBFS"),
    ] {
        let wav = write_tone(dir.path(), name, 10.0, dbfs);
        let config = config_playing(dir.path(), &wav);
        let out = check_strict(&config, false);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        for expected in [needle, name, "c1.toml", "`prompts.notice.file`"] {
            assert!(stderr.contains(expected), "{name}: {expected}: {stderr}");
        }
        assert!(out.stdout.is_empty(), "{name}: nothing passes");

        let mut serve = courtline()
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env("COURTLINE_SIP__LISTEN", "127.0.0.1:0")
            .env("COURTLINE_RECORDS__SERVICE__LISTEN", "127.0.0.1:0")
            .env("COURTLINE_RECORDS__WEB__LISTEN", "127.0.0.1:0")
            .env(
                "COURTLINE_RECORDS__SERVICE__DATABASE",
                dir.path().join("r.db"),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A switchboard that started anyway is stopped, and the test fails.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while serve.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if serve.try_wait().unwrap().is_none() {
            let _ = serve.kill();
        }
        let out = serve.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "serve started with {name}");
        assert!(stderr.contains(needle), "serve, {name}: {stderr}");
    }
}

#[test]
fn check_warns_about_clipped_quiet_and_short_prompts_and_strict_fails() {
    let dir = tempfile::tempdir().unwrap();
    for (name, seconds, dbfs, needle) in [
        // 6 dB over full scale: about 36,000 of 160,000 samples are flat tops.
        ("clipped.wav", 10.0, 6.0, "clipped samples"),
        ("quiet.wav", 10.0, -36.0, "very low level (RMS -39.0 dBFS"),
        ("short.wav", 0.5, -6.0, "only 0.5 s long"),
    ] {
        let wav = write_tone(dir.path(), name, seconds, dbfs);
        let config = config_playing(dir.path(), &wav);
        let out = check_strict(&config, false);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{name}: a warning only: {stderr}");
        assert!(
            stderr.contains(&format!("! prompt notice ({}): ", wav.display()))
                && stderr.contains(needle),
            "{name}: {stderr}"
        );
        assert!(
            stdout.contains(&format!("{seconds:.1} s, peak ")) && stdout.contains("dBFS, RMS "),
            "{name}: {stdout}"
        );
        assert!(
            stdout.contains("valid, with 1 warning(s)"),
            "{name}: {stdout}"
        );

        let out = check_strict(&config, true);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name} --strict: {stderr}");
        assert!(stderr.contains("--strict"), "{stderr}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("configuration is valid"),
            "{name}"
        );
    }
}

#[test]
fn shipped_configuration_and_prompts_pass_strict() {
    // The example line plays 35.6 s against the default 30 s RTP timeout: not
    // a problem, since the caller's silence counts only from the bridge.
    let out = courtline().args(["check", "--strict"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains('!'), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("(18.2 s, peak -3.0 dBFS, RMS -21.5 dBFS,"),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("configuration is valid"),
        "{stdout}"
    );
    // Without the lead-in the Mandarin prompt's first syllable starts the stream.
    let out = courtline()
        .args(["check", "--strict"])
        .env("COURTLINE_MEDIA__LEADING_SILENCE_MS", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("! line 02112368: sound starts 0 ms into the stream"),
        "{stderr}"
    );
}

#[test]
fn a_missing_prompt_names_the_given_config_file_the_key_and_the_absolute_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "c1.toml",
        "[prompts.zh]\nfile = \"audio/no_such_prompt.wav\"\n[[lines]]\nnumber = \"1\"\ncourt = \"c\"\nprompt = \"zh\"\noperator = \"sip:o@127.0.0.1\"\n",
    );
    let out = check(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let absolute = repo_path("audio/no_such_prompt.wav");
    for needle in [
        config.display().to_string(),
        "`prompts.zh.file` = \"audio/no_such_prompt.wav\"".to_string(),
        "relative paths are resolved from the working directory".to_string(),
        format!("{}: file not found", absolute.display()),
    ] {
        assert!(stderr.contains(&needle), "{needle}: {stderr}");
    }
    assert!(!stderr.contains("config/courtline.toml"), "{stderr}");
    assert!(!stderr.contains("<id>"), "{stderr}");
    assert!(out.stdout.is_empty(), "no ✓ before the failure");
}

/// The court list of the Shanghai example: one file per court in conf.d/.
const SHANGHAI_COURTS: [&str; 25] = [
    "上海市高级人民法院",
    "上海市第一中级人民法院",
    "上海市第二中级人民法院",
    "上海市第三中级人民法院",
    "上海知识产权法院",
    "上海海事法院",
    "上海金融法院",
    "上海铁路运输法院",
    "上海市黄浦区人民法院",
    "上海市徐汇区人民法院",
    "上海市长宁区人民法院",
    "上海市静安区人民法院",
    "上海市普陀区人民法院",
    "上海市虹口区人民法院",
    "上海市杨浦区人民法院",
    "上海市闵行区人民法院",
    "上海市宝山区人民法院",
    "上海市嘉定区人民法院",
    "上海市浦东新区人民法院",
    "上海市金山区人民法院",
    "上海市松江区人民法院",
    "上海市青浦区人民法院",
    "上海市奉贤区人民法院",
    "上海市崇明区人民法院",
    "上海铁路运输中级法院",
];

#[test]
fn the_shanghai_example_loads_every_court_from_its_own_file() {
    let out = courtline()
        .args([
            "--config",
            "config/examples/shanghai/courtline.toml",
            "check",
            "--strict",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let in_hours: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("✓ line ") && !line.contains("outside hours"))
        .collect();
    assert_eq!(in_hours.len(), SHANGHAI_COURTS.len(), "{stdout}");
    let files = std::fs::read_dir(repo_path("config/examples/shanghai/conf.d"))
        .unwrap()
        .count();
    assert_eq!(files, SHANGHAI_COURTS.len());
    for court in SHANGHAI_COURTS {
        let line = in_hours
            .iter()
            .find(|line| line.contains(&format!("({court})")))
            .unwrap_or_else(|| panic!("no line for {court}:\n{stdout}"));
        // Its own greeting first, the shared warning after it, and a hunt list.
        assert!(line.contains(": prompts greeting_"), "{line}");
        assert!(line.contains("→ three_rules_zh → three_rules_en"), "{line}");
        assert!(line.contains(" → sip:desk2@198.51.100."), "{line}");
    }
    assert_eq!(
        stdout.matches("outside hours office").count(),
        SHANGHAI_COURTS.len()
    );
    assert!(
        stdout.contains("✓ hours office: zone Asia/Shanghai"),
        "{stdout}"
    );
}

/// A main file including `conf.d/`, and a court file for it.
fn config_set(dir: &std::path::Path, courts: &[(&str, &str)]) -> std::path::PathBuf {
    std::fs::create_dir(dir.join("conf.d")).unwrap();
    for (name, text) in courts {
        write(&dir.join("conf.d"), name, text);
    }
    write(
        dir,
        "main.toml",
        "[config]\ninclude_dir = \"conf.d\"\n[prompts.zh]\nfile = \"audio/three_rules_zh.wav\"\n",
    )
}

fn court_file(number: &str) -> String {
    format!("[[lines]]\nnumber = \"{number}\"\ncourt = \"c\"\nprompt = \"zh\"\noperator = \"sip:o@192.0.2.1\"\n")
}

#[test]
fn a_line_number_in_two_files_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let main = config_set(
        dir.path(),
        &[
            ("a-huangpu.toml", &court_file("02155500900")),
            (
                "b-xuhui.toml",
                &format!("{}{}", court_file("02155501000"), court_file("02155500900")),
            ),
        ],
    );
    let out = check(&main);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let first = dir.path().join("conf.d/a-huangpu.toml");
    let second = dir.path().join("conf.d/b-xuhui.toml");
    assert!(
        stderr.contains(&format!("{}: `lines[1].number`", second.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("also in {} at `lines[0].number`", first.display())),
        "{stderr}"
    );
}

#[test]
fn a_problem_in_an_included_file_names_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad_operator = court_file("2").replace("sip:o@192.0.2.1", "sip:o@192.0.2.1:50a90");
    let main = config_set(
        dir.path(),
        &[("1.toml", &court_file("1")), ("2.toml", &bad_operator)],
    );
    let stderr = String::from_utf8_lossy(&check(&main).stderr).into_owned();
    let file = dir.path().join("conf.d/2.toml");
    assert!(
        stderr.contains(&format!("{}: `lines[0].operator`", file.display())),
        "{stderr}"
    );

    // A wrong type, a second definition of a prompt, a setting that belongs in the main file.
    let cases = [
        (
            court_file("2").replace("operator = ", "ring_timeout_s = \"20\"\noperator = "),
            "`lines[0].ring_timeout_s`",
        ),
        (
            format!("{}[prompts.zh]\nfile = \"x.wav\"\n", court_file("2")),
            "[prompts.zh] is also defined in",
        ),
        (
            format!("[sip]\nmax_calls = 5\n{}", court_file("2")),
            "`sip`: is not allowed in an included file",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&file, text).unwrap();
        let stderr = String::from_utf8_lossy(&check(&main).stderr).into_owned();
        assert!(stderr.contains(&file.display().to_string()), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}

fn prompts_check(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = courtline()
        .args(["prompts", "check"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn prompts_check_measures_files_and_warns_about_quiet_clipped_and_speech_at_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_signal(dir.path(), "good.wav", 16000, 300, 3.0, -6.0);
    let narrow = write_signal(dir.path(), "narrow.wav", 8000, 300, 3.0, -6.0);
    let (ok, stdout, stderr) = prompts_check(&[good.as_os_str(), narrow.as_os_str()]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stderr.is_empty(), "no warnings: {stderr}");
    let good_report = format!(
        "✓ {}: 3.3 s at 16000 Hz, peak -6.0 dBFS, RMS -9.4 dBFS, 0 clipped samples, 300 ms of silence before the first sound and 0 ms after the last",
        good.display()
    );
    assert!(stdout.contains(&good_report), "{stdout}");
    assert!(
        stdout.contains("G.711 (8 kHz, band-limited to 3.4 kHz): RMS "),
        "{stdout}"
    );
    assert!(
        stdout.contains("G.722 (16 kHz, band-limited to 7 kHz): RMS "),
        "{stdout}"
    );
    assert!(
        stdout.contains("G.722: not offered: the file is 8000 Hz"),
        "{stdout}"
    );

    for (name, silence_ms, dbfs, expected) in [
        ("quiet.wav", 300, -38.0, "very low level (RMS -41.4 dBFS"),
        ("clipped.wav", 300, 6.0, "clipped samples"),
        (
            "speech_at_start.wav",
            0,
            -6.0,
            "starts with speech: sound 0 ms into the file",
        ),
    ] {
        let wav = write_signal(dir.path(), name, 16000, silence_ms, 3.0, dbfs);
        let (ok, stdout, stderr) = prompts_check(&[wav.as_os_str()]);
        assert!(ok, "{name}: a warning only: {stderr}");
        assert!(
            stdout.contains(&format!("✓ {}: ", wav.display())),
            "{stdout}"
        );
        let warnings: Vec<&str> = stderr.lines().filter(|l| l.starts_with("! ")).collect();
        assert_eq!(
            warnings.len(),
            1,
            "{name}: exactly its own warning: {stderr}"
        );
        assert!(
            warnings[0].starts_with(&format!("! {}: ", wav.display()))
                && warnings[0].contains(expected),
            "{name}: {stderr}"
        );
        let (ok, _, stderr) = prompts_check(&[wav.as_os_str(), "--strict".as_ref()]);
        assert!(!ok && stderr.contains("--strict"), "{name}: {stderr}");
    }
}

#[test]
fn prompts_check_of_a_configuration_counts_the_lead_in_and_refuses_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let wav = write_signal(dir.path(), "notice.wav", 16000, 0, 3.0, -6.0);
    let config = config_playing(dir.path(), &wav);
    // 200 ms of lead-in (the default) go before the speech: no clipping risk.
    let (ok, stdout, stderr) = prompts_check(&["--config".as_ref(), config.as_os_str()]);
    assert!(ok && stderr.is_empty(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("✓ prompt notice ({}): 3.0 s", wav.display())),
        "{stdout}"
    );
    let (ok, _, stderr) =
        prompts_check(&["--config".as_ref(), config.as_os_str(), "--strict".as_ref()]);
    assert!(ok, "{stderr}");

    std::fs::write(&wav, "not a recording").unwrap();
    let (ok, _, stderr) = prompts_check(&["--config".as_ref(), config.as_os_str()]);
    assert!(!ok);
    assert!(
        stderr.contains("✗ ") && stderr.contains("not a WAV file"),
        "{stderr}"
    );
}
