//! Call audio as evidence beyond one machine: a switchboard's uploads to a remote
//! records service (delivered, delivered late across a restart, refused when
//! corrupted), `calls export --with-audio` archives and `records verify-export` over
//! them, signed report exports, and `calls get --format json` with the recording.
//! Real sockets on loopback, real files, the real binary; on SQLite and PostgreSQL.

mod records_common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use courtline::contract::connect::ClientOptions;
use courtline::contract::connect::RecordsClient;
use courtline::contract::pb::get_recording_response::Item as RecordingItem;
use courtline::contract::pb::node_event::Kind;
use courtline::contract::pb::upload_recording_request::Item as UploadItem;
use courtline::contract::pb::{
    AddTokenRequest, FlagCallRequest, FlagCategory, GetCallRequest, GetRecordingRequest,
    LogEventsRequest, NodeEvent, OpenReportRequest, RecordingFinished, RecordingUpload, ReportForm,
    ReportOpenedVia, Role, UploadRecordingRequest, VerifyRequest,
};
use courtline::records::export_check::{ExportKind, SNIFF_BYTES};
use courtline::records::ledger::signing::RecordsKey;
use courtline::records::service::ServiceSettings;
use courtline::switchboard::delivery::sender::{RecordDelivery, RecordSender};
use courtline::switchboard::delivery::spool::Spool;
use courtline::switchboard::delivery::upload::{UploadDelivery, Uploads};
use records_common::*;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tonic::Code;

/// A records service on another machine: it cannot reach the switchboard's files.
fn remote(db: &Db) -> ServiceSettings {
    ServiceSettings {
        takes_local_recordings: false,
        ..settings(db)
    }
}

/// Bytes that stand for call `n`'s WAV file: long enough to take several chunks.
fn audio(n: u32) -> Vec<u8> {
    let mut bytes = b"RIFF\x00\x00\x00\x00WAVEfmt ".to_vec();
    bytes.extend(
        (0..700_000u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(n) >> 13) as u8),
    );
    bytes
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes call `n`'s recording into `dir` and returns its event.
fn recorded(dir: &Path, n: u32, policy: &str) -> RecordingFinished {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{}.wav", call_id(n)));
    let bytes = audio(n);
    std::fs::write(&path, &bytes).unwrap();
    RecordingFinished {
        path: path.display().to_string(),
        sha256: sha256(&bytes),
        bytes: bytes.len() as u64,
        sample_rate: 8_000,
        channels: 2,
        format: "wav".into(),
        started_at_ms: record(n).answered_at_ms,
        duration_ms: 3_000,
        policy: policy.into(),
        failure: String::new(),
    }
}

/// Call `n`'s recording event, as a switchboard sends it.
fn recording_event(n: u32, recording: RecordingFinished) -> NodeEvent {
    NodeEvent {
        at_ms: record(n).ended_at_ms + 1,
        call_id: call_id(n),
        kind: Some(Kind::Recording(recording)),
        ..NodeEvent::default()
    }
}

/// A switchboard's delivery: events through the spool at `spool`, recordings through
/// the uploads beside it, to `endpoint`.
fn switchboard(spool: &Path, endpoint: &str) -> (RecordSender, RecordDelivery, UploadDelivery) {
    let (opened, recovered) = Spool::open(spool, Some("sb-evidence")).unwrap();
    let options = ClientOptions::new(endpoint.to_owned());
    let (uploads, upload_delivery) =
        Uploads::spawn(spool.join("uploads"), options.clone()).unwrap();
    let (sender, delivery) = RecordSender::spawn(opened, recovered, options);
    (sender.uploading(uploads), delivery, upload_delivery)
}

/// Sends call `n`'s life and its recording (written into `dir`) through `sender`.
async fn call_with_recording(
    sender: &RecordSender,
    dir: &Path,
    n: u32,
    policy: &str,
) -> RecordingFinished {
    for event in complete_calls([n]) {
        match event.kind {
            Some(Kind::Milestone(milestone)) => sender.queue_milestone(milestone).on_disk().await,
            Some(Kind::Ended(ended)) => sender.send(ended),
            _ => unreachable!(),
        }
    }
    let recording = recorded(dir, n, policy);
    sender.recording(&call_id(n), recording.clone()).await;
    recording
}

/// Waits (at most 60 s) until `path` is gone; whether it went.
async fn gone(path: &Path) -> bool {
    for _ in 0..600 {
        if !path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Call `n`'s recording as `GetRecording` streams it.
async fn fetched(client: &mut RecordsClient, n: u32) -> Vec<u8> {
    let mut stream = client
        .get_recording(GetRecordingRequest {
            call_id: call_id(n),
        })
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(RecordingItem::Chunk(chunk)) = message.item {
            bytes.extend(chunk);
        }
    }
    bytes
}

/// Verification's findings.
async fn findings(client: &mut RecordsClient) -> Vec<String> {
    client
        .verify(VerifyRequest {})
        .await
        .unwrap()
        .into_inner()
        .findings
        .into_iter()
        .map(|finding| format!("{} {}", finding.kind, finding.detail))
        .collect()
}

/// The state of call `n`'s recording as `GetCall` says.
async fn recording_state(client: &mut RecordsClient, n: u32) -> String {
    client
        .get_call(GetCallRequest {
            call_id: call_id(n),
        })
        .await
        .unwrap()
        .into_inner()
        .recording
        .unwrap()
        .state
}

async fn a_switchboard_uploads_to_a_remote_service(db: Db) {
    let service = Service::start(&remote(&db)).await;
    let recordings = db.dir.path().join("switchboard-recordings");
    let spool = db.dir.path().join("spool");
    let (sender, delivery, uploads) = switchboard(&spool, &service.endpoint());
    let recording = call_with_recording(&sender, &recordings, 1, "always").await;
    let local = PathBuf::from(&recording.path);
    assert!(gone(&local).await, "the local copy is deleted once stored");
    // Nobody reported or flagged this on_report call: the service wants none of it.
    let unwanted = call_with_recording(&sender, &recordings, 9, "on_report").await;
    assert!(
        gone(Path::new(&unwanted.path)).await,
        "deleted when not wanted"
    );
    assert!(!spool
        .join("uploads")
        .join(format!("{}.json", call_id(1)))
        .exists());
    let mut client = service.client(None).await;
    assert_eq!(fetched(&mut client, 1).await, audio(1), "the very bytes");
    assert_eq!(recording_state(&mut client, 1).await, "stored");
    assert_eq!(recording_state(&mut client, 9).await, "deleted");
    let timeline = client
        .get_call(GetCallRequest {
            call_id: call_id(1),
        })
        .await
        .unwrap()
        .into_inner()
        .timeline;
    assert!(
        timeline
            .iter()
            .any(|event| event.kind == "recording_stored" && event.detail.contains("uploaded by")),
        "{timeline:?}"
    );
    assert_eq!(findings(&mut client).await, Vec::<String>::new());
    drop(sender);
    delivery.finish(Duration::from_secs(5)).await;
    let stats = uploads.finish().await;
    assert_eq!(
        (stats.uploaded, stats.discarded, stats.waiting),
        (1, 1, 0),
        "{stats:?}"
    );
    service.stop().await;
}

async fn an_upload_waits_for_the_service_across_a_restart(db: Db) {
    // A port nothing listens on yet: the service starts there only later.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let endpoint = format!("http://{address}");
    let recordings = db.dir.path().join("switchboard-recordings");
    let spool = db.dir.path().join("spool");
    let (sender, delivery, uploads) = switchboard(&spool, &endpoint);
    let recording = call_with_recording(&sender, &recordings, 2, "always").await;
    drop(sender);
    delivery.finish(Duration::from_millis(300)).await;
    let stats = uploads.finish().await;
    assert_eq!(stats.waiting, 1, "{stats:?}");
    let local = PathBuf::from(&recording.path);
    assert!(local.exists(), "kept while the service is away");
    assert!(spool
        .join("uploads")
        .join(format!("{}.json", call_id(2)))
        .exists());

    // The switchboard starts again and finds the upload waiting; then the service comes.
    let (sender, delivery, uploads) = switchboard(&spool, &endpoint);
    let listener = TcpListener::bind(address).await.unwrap();
    let service = Service::start_on(listener, &remote(&db)).await;
    assert!(gone(&local).await, "delivered once the service is up");
    let mut client = service.client(None).await;
    assert_eq!(fetched(&mut client, 2).await, audio(2));
    assert_eq!(findings(&mut client).await, Vec::<String>::new());
    drop(sender);
    delivery.finish(Duration::from_secs(5)).await;
    assert_eq!(uploads.finish().await.uploaded, 1);
    service.stop().await;
}

/// Uploads `declared` (call id, hash, length) followed by `bytes` in two chunks.
async fn upload(
    client: &mut RecordsClient,
    declared: RecordingUpload,
    bytes: &[u8],
) -> Result<courtline::contract::pb::UploadRecordingResponse, tonic::Status> {
    let middle = bytes.len() / 2;
    let messages = vec![
        UploadItem::Recording(declared),
        UploadItem::Chunk(bytes[..middle].to_vec()),
        UploadItem::Chunk(bytes[middle..].to_vec()),
    ]
    .into_iter()
    .map(|item| UploadRecordingRequest { item: Some(item) });
    client
        .upload_recording(tokio_stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

fn declaration(n: u32, recording: &RecordingFinished) -> RecordingUpload {
    RecordingUpload {
        call_id: call_id(n),
        sha256: recording.sha256.clone(),
        bytes: recording.bytes,
        sample_rate: recording.sample_rate,
        channels: recording.channels,
        format: recording.format.clone(),
    }
}

async fn corrupted_uploads_are_refused_and_leave_nothing(db: Db) {
    let settings = remote(&db);
    let service = Service::start(&settings).await;
    let mut admin = service.client(None).await;
    let admin_token = admin
        .add_token(AddTokenRequest {
            name: "admin".into(),
            role: Role::Admin as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let admin = service.client(Some(&admin_token)).await;
    let token = |name: &str, role: Role| {
        let request = AddTokenRequest {
            name: name.into(),
            role: role as i32,
        };
        let mut admin = admin.clone();
        async move { admin.add_token(request).await.unwrap().into_inner().token }
    };
    let switchboard_token = token("sb-1", Role::Switchboard).await;
    let compliance_token = token("officer", Role::Compliance).await;
    let mut switchboard = service.client(Some(&switchboard_token)).await;
    let mut officer = service.client(Some(&compliance_token)).await;

    let elsewhere = db.dir.path().join("elsewhere");
    let kept = recorded(&elsewhere, 3, "always");
    let unreported = recorded(&elsewhere, 4, "on_report");
    let mut events = complete_calls([3, 4]);
    events.push(recording_event(3, kept.clone()));
    events.push(recording_event(4, unreported.clone()));
    switchboard
        .log_events(LogEventsRequest {
            events: numbered("sb-up", 1, events),
        })
        .await
        .unwrap();
    assert_eq!(recording_state(&mut officer, 3).await, "not_transferred");
    assert_eq!(recording_state(&mut officer, 4).await, "deleted");

    // A switchboard writing into the evidence store itself would delete what it uploaded.
    let inside = recorded(&settings.recordings_dir, 8, "always");
    let mut events = complete_calls([8]);
    events.push(recording_event(8, inside.clone()));
    switchboard
        .log_events(LogEventsRequest {
            events: numbered("sb-inside", 1, events),
        })
        .await
        .unwrap();
    let refused = upload(&mut switchboard, declaration(8, &inside), &audio(8))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("recordings_dir"), "{refused:?}");
    std::fs::remove_file(&inside.path).unwrap();

    // Before its event there is nothing to upload to.
    let early = upload(&mut switchboard, declaration(5, &kept), &audio(3))
        .await
        .unwrap_err();
    assert_eq!(early.code(), Code::FailedPrecondition, "{early:?}");
    // Only a switchboard uploads.
    let refused = upload(&mut officer, declaration(3, &kept), &audio(3))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // Bytes that are not the chained recording's.
    let mut corrupted = audio(3);
    corrupted[500_000] ^= 0x40;
    let refused = upload(&mut switchboard, declaration(3, &kept), &corrupted)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::DataLoss, "{refused:?}");
    assert!(
        refused.message().contains("SHA-256") && refused.message().contains(&kept.sha256),
        "{refused:?}"
    );
    // Too many bytes, and a declaration that is not what the chain says.
    let mut longer = audio(3);
    longer.push(0);
    let refused = upload(&mut switchboard, declaration(3, &kept), &longer)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::DataLoss, "{refused:?}");
    let mut lying = declaration(3, &kept);
    lying.sha256 = sha256(&corrupted);
    let refused = upload(&mut switchboard, lying, &corrupted)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let stored: Vec<_> = std::fs::read_dir(&settings.recordings_dir)
        .map(|entries| entries.map(|entry| entry.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(stored.is_empty(), "nothing partial is kept: {stored:?}");
    assert_eq!(recording_state(&mut officer, 3).await, "not_transferred");

    // The real bytes are stored once; a repeat (a lost answer) is answered alike.
    let answer = upload(&mut switchboard, declaration(3, &kept), &audio(3))
        .await
        .unwrap();
    assert_eq!(
        (answer.state.as_str(), answer.sha256.as_str()),
        ("stored", kept.sha256.as_str())
    );
    assert!(answer.seq > 0);
    let again = upload(&mut switchboard, declaration(3, &kept), &audio(3))
        .await
        .unwrap();
    assert_eq!((again.state.as_str(), again.seq), ("stored", 0));
    // A stored file damaged since is replaced by a copy that matches the chain.
    let stored_file = settings.recordings_dir.join(format!("{}.wav", call_id(3)));
    std::fs::write(&stored_file, &corrupted).unwrap();
    let repaired = upload(&mut switchboard, declaration(3, &kept), &audio(3))
        .await
        .unwrap();
    assert_eq!((repaired.state.as_str(), repaired.seq), ("stored", 0));
    assert_eq!(std::fs::read(&stored_file).unwrap(), audio(3));
    // An unreported on_report recording is not wanted: the switchboard deletes it.
    let unwanted = upload(&mut switchboard, declaration(4, &unreported), &audio(4))
        .await
        .unwrap();
    assert_eq!(unwanted.state, "deleted");
    assert_eq!(fetched(&mut officer, 3).await, audio(3));
    let mut auditor = service
        .client(Some(&token("auditor", Role::Auditor).await))
        .await;
    assert_eq!(findings(&mut auditor).await, Vec::<String>::new());
    if db.postgres.is_none() {
        // A row set back to waiting, though the upload is chained, is named.
        let pool = sqlx::sqlite::SqlitePool::connect(&format!("sqlite://{}", db.url))
            .await
            .unwrap();
        sqlx::query("UPDATE call_recordings SET state = 'not_transferred' WHERE call_id = ?")
            .bind(call_id(3))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let found = findings(&mut auditor).await;
        assert!(
            found
                .iter()
                .any(|finding| finding.contains("stored the switchboard's upload")),
            "{found:?}"
        );
    }
    service.stop().await;
}

/// Runs the courtline binary.
fn courtline(args: &[&str]) -> Output {
    Command::new(courtline_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("COURTLINE_TOKEN")
        .env("TZ", "Asia/Shanghai")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Stdout of a run that must succeed.
fn ok(args: &[&str]) -> String {
    let out = courtline(args);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Stdout and stderr of a run that must fail.
fn fails(args: &[&str]) -> String {
    let out = courtline(args);
    assert!(!out.status.success(), "{args:?}: {}", text(&out.stdout));
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// Flips one byte in the middle of `name`'s data inside the tar at `archive`.
fn flip_in_archive(archive: &Path, name: &str) {
    let mut bytes = std::fs::read(archive).unwrap();
    let offset = {
        let mut reader = tar::Archive::new(bytes.as_slice());
        let entry = reader
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .find(|entry| entry.path().unwrap().to_string_lossy() == name)
            .unwrap();
        entry.raw_file_position() + entry.size() / 2
    };
    bytes[usize::try_from(offset).unwrap()] ^= 0x01;
    std::fs::write(archive, bytes).unwrap();
}

async fn exports_with_audio_and_signed_reports_verify_and_name_what_changed(db: Db) {
    // An embedded service: it takes the recordings over from where they were written.
    let settings = settings(&db);
    let service = Service::start(&settings).await;
    let endpoint = service.endpoint();
    let mut client = service.client(None).await;
    let written = db.dir.path().join("switchboard-recordings");
    let mut events = complete_calls([5, 6, 7]);
    let kept: Vec<RecordingFinished> = [5, 6].map(|n| recorded(&written, n, "always")).into();
    events.push(recording_event(5, kept[0].clone()));
    events.push(recording_event(6, kept[1].clone()));
    client
        .log_events(LogEventsRequest {
            events: numbered("sb-ex", 1, events),
        })
        .await
        .unwrap();
    client
        .flag_call(FlagCallRequest {
            call_id: call_id(7),
            category: FlagCategory::Intercession as i32,
            note: "说情".into(),
        })
        .await
        .unwrap();
    let public_key = RecordsKey::load(&settings.signing_key_file)
        .unwrap()
        .public_key_hex();

    // calls get --format json carries the recording.
    let json = ok(&[
        "calls",
        "get",
        &call_id(5),
        "--format",
        "json",
        "--endpoint",
        &endpoint,
    ]);
    let detail: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(detail["recording"]["state"], "stored");
    assert_eq!(detail["recording"]["sha256"], kept[0].sha256.as_str());
    assert_eq!(detail["recording"]["bytes"], kept[0].bytes);
    assert_eq!(
        detail["recording"]["channel_layout"],
        serde_json::json!(["to_caller", "from_caller"])
    );
    let json = ok(&[
        "calls",
        "get",
        &call_id(7),
        "--format",
        "json",
        "--endpoint",
        &endpoint,
    ]);
    let detail: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(detail["recording"], serde_json::Value::Null);

    for format in ["csv", "jsonl"] {
        let archive = db.dir.path().join(format!("calls-{format}.tar"));
        let archive_text = archive.to_str().unwrap();
        ok(&[
            "calls",
            "export",
            "--with-audio",
            "--format",
            format,
            "-o",
            archive_text,
            "--oldest-first",
            "--endpoint",
            &endpoint,
        ]);
        let names: Vec<String> = tar::Archive::new(std::fs::File::open(&archive).unwrap())
            .entries()
            .unwrap()
            .map(|entry| {
                entry
                    .unwrap()
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "manifest.json".to_owned(),
                format!("calls.{format}"),
                format!("recordings/{}.wav", call_id(5)),
                format!("recordings/{}.wav", call_id(6)),
            ]
        );
        let report = ok(&[
            "records",
            "verify-export",
            archive_text,
            "--public-key",
            &public_key,
        ]);
        assert!(
            report.contains("OK: the export is intact") && report.contains("2 recordings"),
            "{report}"
        );
        // The console's upload check (Integrity page) tells the kind the same way.
        let console_check = |bytes: &[u8]| {
            let kind = ExportKind::of(&bytes[..bytes.len().min(SNIFF_BYTES)]);
            assert_eq!(kind, ExportKind::Archive);
            kind.check(bytes, None).unwrap()
        };
        let intact = console_check(&std::fs::read(&archive).unwrap());
        assert_eq!((intact.recordings, intact.problems.len()), (2, 0));

        let wav = format!("recordings/{}.wav", call_id(6));
        flip_in_archive(&archive, &wav);
        let changed = console_check(&std::fs::read(&archive).unwrap());
        assert!(
            changed
                .problems
                .iter()
                .any(|problem| problem.contains(&wav)),
            "{:?}",
            changed.problems
        );
        let report = fails(&[
            "records",
            "verify-export",
            archive_text,
            "--public-key",
            &public_key,
        ]);
        assert!(
            report.contains(&format!(
                "{wav} (call {}'s recording) was changed",
                call_id(6)
            )),
            "{report}"
        );
        assert!(
            !report.contains(&format!("recordings/{}.wav (call", call_id(5))),
            "{report}"
        );
    }

    // A stored file that no longer matches its chain never makes it into an archive.
    let evidence = settings.recordings_dir.join(format!("{}.wav", call_id(5)));
    let mut bytes = std::fs::read(&evidence).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&evidence, bytes).unwrap();
    let refused = db.dir.path().join("refused.tar");
    let message = fails(&[
        "calls",
        "export",
        "--with-audio",
        "-o",
        refused.to_str().unwrap(),
        "--endpoint",
        &endpoint,
    ]);
    assert!(
        message.contains(&call_id(5)) && message.contains("signed manifest"),
        "{message}"
    );
    assert!(!refused.exists(), "no archive from a failed export");

    // Reports: signed like call exports.
    client
        .open_report(OpenReportRequest {
            call_id: call_id(7),
            opened_via: ReportOpenedVia::Cli as i32,
            form: Some(ReportForm {
                staff_name: "李娜".into(),
                asked: "请法官多关照被告".into(),
                case_numbers: vec!["(2024)沪01民初123号".into()],
                ..ReportForm::default()
            }),
        })
        .await
        .unwrap();
    for (format, extra) in [("csv", None), ("csv", Some("--excel")), ("json", None)] {
        let file = db
            .dir
            .path()
            .join(format!("reports-{format}-{}", extra.is_some()));
        let file_text = file.to_str().unwrap();
        let mut args = vec![
            "reports",
            "export",
            "--format",
            format,
            "-o",
            file_text,
            "--endpoint",
            &endpoint,
        ];
        args.extend(extra);
        ok(&args);
        let report = ok(&[
            "records",
            "verify-export",
            file_text,
            "--public-key",
            &public_key,
        ]);
        assert!(
            report.contains("1 reports exported") && report.contains("OK"),
            "{report}"
        );
        let changed =
            std::fs::read_to_string(&file)
                .unwrap()
                .replacen("多关照被告", "多关照原告", 1);
        std::fs::write(&file, changed).unwrap();
        let report = fails(&[
            "records",
            "verify-export",
            file_text,
            "--public-key",
            &public_key,
        ]);
        assert!(report.contains("was modified"), "{report}");
    }
    service.stop().await;
}

/// A whole courtline switchboard whose records service runs elsewhere: a recorded
/// call's WAV goes up over gRPC and leaves the switchboard's recording directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_call_reaches_a_remote_records_service() {
    let db = sqlite_db();
    let service = Service::start(&remote(&db)).await;
    let dir = db.dir.path();
    let prompt = dir.join("prompt.wav");
    support::write_test_prompt(&prompt, 400);
    let toml = format!(
        r#"
[sip]
listen = "127.0.0.1:0"

[media]
rtp_ports = "38200-38249"
leading_silence_ms = 200

[records]
endpoint = "{endpoint}"
spool_dir = "{spool}"

[records.service]
embedded = false

[recording]
dir = "{recordings}"

[prompts.test]
file = "{prompt}"
version = "1"

[[lines]]
number = "02112368"
court = "上海市第一中级人民法院"
prompt = "test"
operator = ["sip:nobody@127.0.0.1:9"]
record_audio = "always"
"#,
        endpoint = service.endpoint(),
        spool = dir.join("spool").display(),
        recordings = dir.join("switchboard-recordings").display(),
        prompt = prompt.display(),
    );
    let config = courtline::config::Config::from_toml_str(&toml, "test.toml").unwrap();
    let running = courtline::cli::serve::start(config).await.unwrap();
    let mut caller = support::Caller::new(running.sip_addr).await;
    caller.call("0").await;
    support::recv_rtp(&caller.rtp, Duration::from_secs(2))
        .await
        .expect("the warning");
    tokio::time::sleep(Duration::from_millis(300)).await;
    caller.hang_up().await;

    let mut client = service.client(None).await;
    let mut stored = None;
    for _ in 0..300 {
        let calls = client
            .list_calls(courtline::contract::pb::ListCallsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .records;
        if let Some(call) = calls.iter().find(|call| call.sip_call_id == caller.call_id) {
            let recording = client
                .get_call(GetCallRequest {
                    call_id: call.call_id.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .recording;
            if recording.as_ref().is_some_and(|r| r.state == "stored") {
                stored = recording.map(|r| (call.call_id.clone(), r));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (call_id, recording) = stored.expect("the recording was uploaded and stored");
    let local = dir
        .join("switchboard-recordings")
        .join(format!("{call_id}.wav"));
    assert!(gone(&local).await, "the switchboard's copy is deleted");
    let mut stream = client
        .get_recording(GetRecordingRequest { call_id })
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(RecordingItem::Chunk(chunk)) = message.item {
            bytes.extend(chunk);
        }
    }
    assert_eq!(sha256(&bytes), recording.sha256);
    assert!(bytes.starts_with(b"RIFF"), "a WAV file");
    running.shutdown().await;
    service.stop().await;
}

on_both_backends!(
    a_switchboard_uploads_to_a_remote_service,
    an_upload_waits_for_the_service_across_a_restart,
    corrupted_uploads_are_refused_and_leave_nothing,
    exports_with_audio_and_signed_reports_verify_and_name_what_changed,
);
