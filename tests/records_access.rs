//! What a court admin and a compliance officer meet on day one, through the real
//! `courtline` binary: the signing key file passed where its public key belongs is
//! recognised and never printed, and `records public-key` gives the right one; the
//! first token must be an admin token, and the offline `records token add --database`
//! recovers a service whose admin tokens are lost; under the loopback rule every
//! access is credited to a named person, never to "loopback" alone.

mod records_common;

use std::process::{Command, Output};

use courtline::contract::pb::{GetCallRequest, ListCallsRequest, LogEventsRequest};
use records_common::*;

fn courtline() -> Command {
    let mut command = Command::new(courtline_bin());
    command
        .env_remove("RUST_LOG")
        .env_remove("COURTLINE_TOKEN")
        .env_remove("COURTLINE_USER");
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Everything the command printed, for "never shows X" checks.
fn printed(output: &Output) -> String {
    format!("{}{}", text(&output.stdout), text(&output.stderr))
}

fn succeeded(output: &Output) -> &Output {
    assert!(output.status.success(), "{}", printed(output));
    output
}

/// The hex seed in a signing key file (its only non-comment line).
fn seed_of(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .find(|line| !line.starts_with('#'))
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_key_given_as_public_key_is_named_never_printed() {
    let db = sqlite_db();
    let settings = settings(&db);
    let service = Service::start(&settings).await;
    service
        .client(None)
        .await
        .log_events(LogEventsRequest {
            events: numbered("sb-1", 1, complete_calls([1, 2])),
        })
        .await
        .unwrap();
    let export = db.dir.path().join("calls.csv");
    succeeded(
        &courtline()
            .args(["calls", "export", "--endpoint", &service.endpoint(), "-o"])
            .arg(&export)
            .output()
            .unwrap(),
    );
    service.stop().await;

    let key_file = &settings.signing_key_file;
    let seed = seed_of(key_file);
    // A key file from before key files were marked private holds the bare seed.
    let legacy_key_file = db.dir.path().join("legacy-signing.key");
    std::fs::write(&legacy_key_file, format!("{seed}\n")).unwrap();
    for (given, mistaken) in [
        (key_file.to_str().unwrap(), key_file),
        (legacy_key_file.to_str().unwrap(), &legacy_key_file),
        (seed.as_str(), key_file),
    ] {
        let output = courtline()
            .args(["records", "verify-export"])
            .arg(&export)
            .args(["--public-key", given])
            .output()
            .unwrap();
        let all = printed(&output);
        assert!(!output.status.success(), "{mistaken:?}: {all}");
        assert!(
            all.contains(
                "this is the private signing key; pass its public key (`courtline records public-key`)"
            ),
            "{mistaken:?}: {all}"
        );
        assert!(!all.contains(&seed), "the seed was printed: {all}");
    }

    // `records public-key` prints the public key (from the configured key file by
    // default) and a fingerprint; its output works as --public-key, as a file or as text.
    let output = courtline()
        .args(["records", "public-key"])
        .env("COURTLINE_RECORDS__SERVICE__SIGNING_KEY_FILE", key_file)
        .output()
        .unwrap();
    let stdout = text(&succeeded(&output).stdout);
    let public = courtline::records::ledger::signing::public_key_of_key_file(key_file).unwrap();
    assert_eq!(stdout.lines().next(), Some(hex::encode(public).as_str()));
    assert!(
        stdout.contains(&courtline::records::ledger::signing::fingerprint(&public)),
        "{stdout}"
    );
    assert!(!stdout.contains(&seed), "{stdout}");
    let public_file = db.dir.path().join("records-signing.pub");
    std::fs::write(&public_file, &stdout).unwrap();
    for given in [public_file.to_str().unwrap(), stdout.as_str()] {
        let output = courtline()
            .args(["records", "verify-export"])
            .arg(&export)
            .args(["--public-key", given])
            .output()
            .unwrap();
        assert!(text(&succeeded(&output).stdout).contains("OK: the export is intact"));
    }
    // Without a key file there is nothing to derive it from, and it says why.
    let output = courtline()
        .args(["records", "public-key", "--signing-key-file"])
        .arg(db.dir.path().join("missing.key"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("creates it on its first start"),
        "{}",
        printed(&output)
    );
}

/// On both backends: the offline path writes to whichever database the service uses.
async fn the_first_token_must_be_admin_and_a_lost_admin_is_recovered_offline(db: Db) {
    let settings = settings(&db);
    let service = Service::start(&settings).await;
    let endpoint = service.endpoint();
    let token_add = |name: &str, role: &str| {
        courtline()
            .args(["records", "token", "add", name, "--role", role])
            .args(["--endpoint", &endpoint])
            .output()
            .unwrap()
    };

    // A compliance officer's token first would lock every admin out: refused.
    let refused = token_add("zhang.wei", "compliance");
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("the first token must be an admin token"),
        "{}",
        printed(&refused)
    );
    // ... and the loopback rule still holds.
    let mut anonymous = service.client(None).await;
    anonymous
        .list_calls(ListCallsRequest::default())
        .await
        .unwrap();

    // The first admin token is issued, with a loud warning.
    let first = token_add("admin-1", "admin");
    let stderr = text(&succeeded(&first).stderr);
    assert!(
        stderr.contains("WARNING: this was the first token"),
        "{stderr}"
    );
    assert!(stderr.contains("--database"), "{stderr}");
    let refused = token_add("zhang.wei", "compliance");
    assert!(!refused.status.success(), "no token: loopback rule over");

    // The admin token is lost. Offline recovery refuses while the service runs ...
    let service_address = service.address;
    let offline = || {
        courtline()
            .args(["records", "token", "add", "rescue-admin", "--role", "admin"])
            .args(["--database", &db.url, "--reason", "管理员令牌丢失"])
            .env(
                "COURTLINE_RECORDS__SERVICE__SIGNING_KEY_FILE",
                &settings.signing_key_file,
            )
            .env(
                "COURTLINE_RECORDS__SERVICE__LISTEN",
                service_address.to_string(),
            )
            .output()
            .unwrap()
    };
    let running = offline();
    assert!(!running.status.success());
    assert!(
        text(&running.stderr).contains("stop the records service"),
        "{}",
        printed(&running)
    );
    // ... and works on the database with the service stopped.
    service.stop().await;
    let recovered = offline();
    let rescue_token = text(&succeeded(&recovered).stdout).trim().to_owned();
    assert!(rescue_token.starts_with("clt_"), "{}", printed(&recovered));

    // The service, restarted, takes the recovered admin token.
    let service = Service::start(&settings).await;
    let endpoint = service.endpoint();
    let auditor = courtline()
        .args(["records", "token", "add", "audit-li", "--role", "auditor"])
        .args(["--endpoint", &endpoint, "--token", &rescue_token])
        .output()
        .unwrap();
    let auditor_token = text(&succeeded(&auditor).stdout).trim().to_owned();
    assert!(
        !text(&auditor.stderr).contains("WARNING"),
        "only the first token warns"
    );
    // The recovery is on the chain, by the OS account that ran it, with its reason.
    let mut auditor = service.client(Some(&auditor_token)).await;
    let log = access_log(&mut auditor).await;
    let recovery = log
        .iter()
        .find(|entry| entry.operation == "AddToken" && entry.parameters.contains("rescue-admin"))
        .unwrap_or_else(|| panic!("offline AddToken missing: {log:?}"));
    assert!(recovery.actor.starts_with("offline:"), "{recovery:?}");
    assert_eq!(recovery.role, "admin");
    assert_eq!(recovery.reason, "管理员令牌丢失");
    service.stop().await;
    // The chain, offline change included, still verifies with its signed checkpoint.
    let public =
        courtline::records::ledger::signing::public_key_of_key_file(&settings.signing_key_file)
            .map(hex::encode)
            .unwrap();
    let verified = courtline()
        .args([
            "records",
            "verify",
            "--database",
            &db.url,
            "--public-key",
            &public,
        ])
        .output()
        .unwrap();
    assert!(text(&succeeded(&verified).stdout).contains("OK: the records are intact"));
    // A mistyped database is not a records database: no token is issued into it.
    let stray = db.dir.path().join("typo.db");
    let output = courtline()
        .args([
            "records",
            "token",
            "add",
            "rescue-admin",
            "--role",
            "admin",
            "--database",
        ])
        .arg(&stray)
        .env(
            "COURTLINE_RECORDS__SERVICE__SIGNING_KEY_FILE",
            &settings.signing_key_file,
        )
        .env(
            "COURTLINE_RECORDS__SERVICE__LISTEN",
            service_address.to_string(),
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("holds no records chain"),
        "{}",
        printed(&output)
    );
}

on_both_backends!(the_first_token_must_be_admin_and_a_lost_admin_is_recovered_offline);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_loopback_rule_every_access_is_someones() {
    let db = sqlite_db();
    let service = Service::start(&settings(&db)).await;
    let endpoint = service.endpoint();
    let mut anonymous = service.client(None).await;
    anonymous
        .log_events(LogEventsRequest {
            events: numbered("sb-1", 1, complete_calls([1])),
        })
        .await
        .unwrap();

    // A flag with --as, an export with COURTLINE_USER, a listing by the OS user.
    succeeded(
        &courtline()
            .args(["calls", "flag", &call_id(1), "--category", "intercession"])
            .args(["--note", "说情", "--endpoint", &endpoint, "--as", "张伟"])
            .output()
            .unwrap(),
    );
    let export = db.dir.path().join("calls.jsonl");
    succeeded(
        &courtline()
            .args([
                "calls",
                "export",
                "--format",
                "jsonl",
                "--endpoint",
                &endpoint,
            ])
            .arg("-o")
            .arg(&export)
            .env("COURTLINE_USER", "li.na")
            .output()
            .unwrap(),
    );
    succeeded(
        &courtline()
            .args(["calls", "list", "--endpoint", &endpoint])
            .env("USER", "wang.fang")
            .output()
            .unwrap(),
    );

    let call = anonymous
        .get_call(GetCallRequest {
            call_id: call_id(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(call.flags[0].flagged_by, "loopback:张伟");
    let manifest = std::fs::read_to_string(&export).unwrap();
    assert!(manifest.contains("loopback:li.na"), "{manifest}");
    let log = access_log(&mut anonymous).await;
    let by = |operation: &str| {
        log.iter()
            .find(|entry| entry.operation == operation)
            .map(|entry| entry.actor.clone())
            .unwrap_or_default()
    };
    assert_eq!(by("FlagCall"), "loopback:张伟");
    assert_eq!(by("ExportCalls"), "loopback:li.na");
    assert_eq!(by("ListCalls"), "loopback:wang.fang");
    let filtered = courtline()
        .args(["records", "access-log", "--endpoint", &endpoint])
        .args(["--actor", "loopback:张伟"])
        .output()
        .unwrap();
    let stdout = text(&succeeded(&filtered).stdout);
    assert!(stdout.contains("FlagCall"), "{stdout}");
    assert!(!stdout.contains("ExportCalls"), "{stdout}");

    // With a token the token's own name counts; a stated name is not believed.
    let admin = courtline()
        .args(["records", "token", "add", "admin-1", "--role", "admin"])
        .args(["--endpoint", &endpoint, "--as", "admin.wu"])
        .output()
        .unwrap();
    let admin_token = text(&succeeded(&admin).stdout).trim().to_owned();
    succeeded(
        &courtline()
            .args(["records", "token", "list", "--endpoint", &endpoint])
            .args(["--token", &admin_token, "--as", "someone.else"])
            .output()
            .unwrap(),
    );
    let mut admin = service.client(Some(&admin_token)).await;
    let auditor = admin
        .add_token(courtline::contract::pb::AddTokenRequest {
            name: "audit-li".into(),
            role: courtline::contract::pb::Role::Auditor as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let log = access_log(&mut service.client(Some(&auditor)).await).await;
    let list_tokens = log
        .iter()
        .find(|entry| entry.operation == "ListTokens")
        .unwrap();
    assert_eq!(list_tokens.actor, "admin-1");
    assert!(log
        .iter()
        .any(|entry| entry.operation == "AddToken" && entry.actor == "loopback:admin.wu"));
    service.stop().await;
}
