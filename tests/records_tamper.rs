//! Tampering: rows of the records database edited, deleted, inserted and swapped
//! behind the service's back; `courtline records verify` (a real process) names each
//! one and exits non-zero. A tampered export file fails `courtline records verify-export`.

mod records_common;

use std::process::Command;

use courtline::contract::pb::{ListCallsRequest, LogEventsRequest};
use records_common::*;
use sqlx::sqlite::SqlitePool;

fn courtline() -> Command {
    let mut command = Command::new(courtline_bin());
    command.env_remove("RUST_LOG").env_remove("COURTLINE_TOKEN");
    command
}

async fn seq_of(pool: &SqlitePool, sql: &str, call: u32) -> i64 {
    sqlx::query_scalar(sql)
        .bind(call_id(call))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The service's public key, hex, as an auditor would have written it down.
fn public_key(db: &Db) -> String {
    let key = courtline::records::ledger::signing::public_key_of_key_file(
        &db.dir.path().join("signing.key"),
    );
    hex::encode(key.unwrap())
}

/// Runs verify offline; returns (success, stdout).
fn verify(db: &Db) -> (bool, String) {
    let output = courtline()
        .args([
            "records",
            "verify",
            "--database",
            &db.url,
            "--public-key",
            &public_key(db),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.stderr.is_empty() || output.status.code().is_some(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_every_edit_delete_insert_and_swap() {
    let db = sqlite_db();
    let service = Service::start(&settings(&db)).await;
    let mut client = service.client(None).await;
    client
        .log_events(LogEventsRequest {
            events: numbered("sb-1", 1, complete_calls(1..=6)),
        })
        .await
        .unwrap();
    for _ in 0..4 {
        client
            .list_calls(ListCallsRequest::default())
            .await
            .unwrap();
    }
    client
        .log_events(LogEventsRequest {
            events: numbered("sb-1", 25, complete_calls(7..=10)),
        })
        .await
        .unwrap();

    // An export, before anything is touched, through the real CLI.
    let export = db.dir.path().join("calls.csv");
    let output = courtline()
        .args([
            "calls",
            "export",
            "--format",
            "csv",
            "--endpoint",
            &service.endpoint(),
            "--reason",
            "审计抽查",
            "--output",
        ])
        .arg(&export)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    service.stop().await;
    // Every call into the caller-name index, so that it can be tampered with too.
    let store = courtline::records::store::SqlStore::open(&db.url)
        .await
        .unwrap();
    assert_eq!(store.index_caller_names().await.unwrap(), 10);
    courtline::records::store::Store::close(&store).await;

    let (ok, report) = verify(&db);
    assert!(ok, "untouched records must verify:\n{report}");
    assert!(report.contains("OK: the records are intact"), "{report}");

    let check = |path: &std::path::Path| {
        courtline()
            .args(["records", "verify-export"])
            .arg(path)
            .args(["--public-key", &public_key(&db)])
            .output()
            .unwrap()
    };
    let intact = check(&export);
    assert!(
        intact.status.success(),
        "{}",
        String::from_utf8_lossy(&intact.stdout)
    );
    let text = std::fs::read_to_string(&export).unwrap();
    assert!(
        text.contains("审计抽查"),
        "the stated reason is in the manifest"
    );
    let tampered = db.dir.path().join("tampered.csv");
    std::fs::write(&tampered, text.replacen("13900000007", "13900000070", 1)).unwrap();
    let failed = check(&tampered);
    let stdout = String::from_utf8_lossy(&failed.stdout);
    assert!(!failed.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("row for call {} was modified", call_id(7))),
        "{stdout}"
    );

    // Now tamper with the database directly.
    let pool = SqlitePool::connect(&format!("sqlite://{}", db.url))
        .await
        .unwrap();
    let nth_event = "SELECT seq FROM events WHERE call_id = ? ORDER BY seq LIMIT 1 OFFSET ";
    // 1. Insert a forged event after call 8's arrival, shifting everything after it.
    let anchor = seq_of(&pool, &format!("{nth_event}0"), 8).await;
    sqlx::query("UPDATE events SET seq = -seq WHERE seq > ?")
        .bind(anchor)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE events SET seq = 1 - seq WHERE seq < 0")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (seq, kind, node_id, node_seq, call_id, at_ms, stored_at_ms, body, body_digest, prev_hash, hash) \
         SELECT seq + 1, 'ended', 'sb-forged', 1, call_id, at_ms, stored_at_ms, body, body_digest, hash, randomblob(32) FROM events WHERE seq = ?",
    )
    .bind(anchor)
    .execute(&pool)
    .await
    .unwrap();
    let inserted = anchor + 1;
    // 2. Edit a field of call 2's "answered" event.
    let edited = seq_of(&pool, &format!("{nth_event}1"), 2).await;
    sqlx::query("UPDATE events SET at_ms = at_ms + 1000 WHERE seq = ?")
        .bind(edited)
        .execute(&pool)
        .await
        .unwrap();
    // 3. Delete call 4's "prompt_started" event.
    let deleted = seq_of(&pool, &format!("{nth_event}2"), 4).await;
    sqlx::query("DELETE FROM events WHERE seq = ?")
        .bind(deleted)
        .execute(&pool)
        .await
        .unwrap();
    // 4. Swap two access-log events.
    let access: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM events WHERE kind = 'access' ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    let (first, second) = (access[0], access[2]);
    sqlx::query("UPDATE events SET seq = -1 WHERE seq = ?")
        .bind(first)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE events SET seq = ? WHERE seq = ?")
        .bind(first)
        .bind(second)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE events SET seq = ? WHERE seq = -1")
        .bind(second)
        .execute(&pool)
        .await
        .unwrap();
    // 5. Change a caller number in the per-call rows that queries read.
    sqlx::query("UPDATE calls SET caller_number = '110' WHERE call_id = ?")
        .bind(call_id(5))
        .execute(&pool)
        .await
        .unwrap();
    // 6. Take call 6 ("李四") out of the caller-name index for "李".
    sqlx::query("DELETE FROM caller_name_grams WHERE call_key = ? AND gram = '李'")
        .bind(call_id(6))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let (ok, report) = verify(&db);
    assert!(!ok, "tampered records must fail:\n{report}");
    let line = |kind: &str, needle: &str| {
        report
            .lines()
            .any(|line| line.starts_with(kind) && line.contains(needle))
    };
    assert!(
        line(
            "MODIFIED",
            &format!("event #{edited} (milestone event of call {})", call_id(2))
        ),
        "{report}"
    );
    assert!(
        line(
            "DELETED",
            &format!("(positions {deleted}..={deleted} are gone)")
        ),
        "{report}"
    );
    assert!(
        line(
            "INSERTED",
            &format!("event #{inserted} (ended event of call {})", call_id(8))
        ),
        "{report}"
    );
    assert!(
        line("REORDERED", &format!("event #{first} (access event)")),
        "{report}"
    );
    assert!(
        line("REORDERED", &format!("event #{second} (access event)")),
        "{report}"
    );
    assert!(line("PROJECTION", &format!("call {}'s row was modified: caller_number is \"110\", its events say \"13900000005\"", call_id(5))), "{report}");
    assert!(
        line(
            "PROJECTION",
            &format!(
                "call {} is missing from the caller-name index (\"李\")",
                call_id(6)
            )
        ),
        "{report}"
    );
    // The deleted event was a switchboard's: its sequence number is missing too.
    assert!(line("GAP", "switchboard sb-1 sequence numbers"), "{report}");
    let findings = report
        .lines()
        .filter(|line| {
            line.starts_with(|c: char| c.is_ascii_uppercase())
                && !line.starts_with("FAILED")
                && !line.starts_with("OK")
        })
        .count();
    assert_eq!(
        findings, 8,
        "one finding per change, two for the deletion:\n{report}"
    );
}
