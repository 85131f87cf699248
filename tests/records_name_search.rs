//! "Caller name contains" goes through the `caller_name_grams` index instead of reading
//! every call: these tests hold it to exactly what a scan of every name would find, on
//! both backends, through the real service — one- and many-character patterns, CJK and
//! Latin, pages in both sort orders, other filters, a name an event changes, retention
//! purges, and calls stored before the index existed (the migration's backfill).
mod records_common;

use courtline::contract::pb::node_event::Kind;
use courtline::contract::pb::{
    CallFilter, ListCallsRequest, LogEventsRequest, NodeEvent, PurgeRequest, SortOrder,
    VerifyRequest,
};
use courtline::records::store::{name_grams, SqlStore, Store};
use records_common::*;
use sqlx::Row;

/// Caller names, call `n` getting `NAMES[n % NAMES.len()]`: repeated characters and
/// pairs, one-character names, no name, Latin with spaces.
const NAMES: [&str; 11] = [
    "张三",
    "王五（律师）",
    "李四律师",
    "张伟",
    "",
    "John Smith",
    "张",
    "律",
    "欧阳娜娜",
    "Ann",
    "三张三",
];

/// Calls 1..=CALLS.
const CALLS: u32 = 44;

/// Searched for; each is checked against a scan of [`NAMES`].
const PATTERNS: [&str; 16] = [
    "张",
    "三",
    "张三",
    "三张",
    "律师",
    "李四律",
    "（律师）",
    "娜娜",
    "欧阳娜娜",
    "Smith",
    "n S",
    "nn",
    "n",
    "无此人",
    "张三张三",
    "師",
];

fn name(n: u32) -> &'static str {
    NAMES[n as usize % NAMES.len()]
}

/// `event` with the caller name in its record set to `name`.
fn with_name(mut event: NodeEvent, name: &str) -> NodeEvent {
    let record = match &mut event.kind {
        Some(Kind::Ended(record)) => record,
        Some(Kind::Milestone(milestone)) => milestone.snapshot.as_mut().expect("snapshot"),
        other => panic!("no record in {other:?}"),
    };
    record.caller_display_name = name.to_owned();
    event
}

/// Calls `numbers` received and ended, named after [`NAMES`] (two events each, numbered
/// as if calls 1..=CALLS went in order).
fn named_calls(numbers: std::ops::RangeInclusive<u32>) -> Vec<NodeEvent> {
    let first = u64::from(numbers.start() - 1) * 2 + 1;
    let events = numbers
        .flat_map(|n| {
            [
                with_name(
                    milestone(n, courtline::contract::pb::Milestone::Received),
                    name(n),
                ),
                with_name(ended(n), name(n)),
            ]
        })
        .collect();
    numbered("sb-1", first, events)
}

/// Runs the name index now (the service runs it every `NAME_INDEX_EVENTS` events);
/// returns the calls it indexed.
async fn index_now(db: &Db) -> u64 {
    let store = SqlStore::open(&db.url).await.unwrap();
    let indexed = store.index_caller_names().await.unwrap();
    store.close().await;
    indexed
}

/// Every pattern, both sort orders, against a scan of every name.
async fn check_every_pattern(client: &mut courtline::contract::connect::RecordsClient, when: &str) {
    for pattern in PATTERNS {
        let expected = scan(pattern, |_| true);
        let newest = search(client, containing(pattern), SortOrder::NewestFirst, 3).await;
        assert_eq!(newest, expected, "{pattern:?} newest first, {when}");
        let oldest = search(client, containing(pattern), SortOrder::OldestFirst, 4).await;
        let mut reversed = expected.clone();
        reversed.reverse();
        assert_eq!(oldest, reversed, "{pattern:?} oldest first, {when}");
    }
}

async fn log(client: &mut courtline::contract::connect::RecordsClient, events: Vec<NodeEvent>) {
    client
        .log_events(LogEventsRequest { events })
        .await
        .unwrap();
}

/// Every page of `filter` in `sort`, `page_size` rows at a time.
async fn search(
    client: &mut courtline::contract::connect::RecordsClient,
    filter: CallFilter,
    sort: SortOrder,
    page_size: u32,
) -> Vec<u32> {
    let mut found = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_calls(ListCallsRequest {
                filter: Some(filter.clone()),
                sort: sort as i32,
                page_size,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        found.extend(short_ids(&page.records));
        if page.next_page_token.is_empty() {
            return found;
        }
        token = page.next_page_token;
    }
}

fn containing(pattern: &str) -> CallFilter {
    CallFilter {
        caller_name_contains: pattern.to_owned(),
        ..CallFilter::default()
    }
}

/// The calls whose name holds `pattern`, newest first, as a scan finds them.
fn scan(pattern: &str, keep: impl Fn(u32) -> bool) -> Vec<u32> {
    (1..=CALLS)
        .rev()
        .filter(|&n| name(n).contains(pattern) && keep(n))
        .collect()
}

async fn finds_exactly_what_a_scan_finds(db: Db) {
    let service = Service::start(&settings(&db)).await;
    let mut client = service.client(None).await;
    log(&mut client, named_calls(1..=CALLS / 2)).await;
    assert_eq!(index_now(&db).await, 20, "22 calls, two without a name");
    assert_eq!(index_now(&db).await, 0);
    // The older half indexed, the newer half not yet: pages cross from one to the other.
    log(&mut client, named_calls(CALLS / 2 + 1..=CALLS)).await;
    check_every_pattern(&mut client, "half indexed").await;
    assert_eq!(index_now(&db).await, 20);
    check_every_pattern(&mut client, "all indexed").await;
    // With other filters: a time range (on the walked gram too) and a line.
    let from = record(10).received_at_ms;
    let until = record(30).received_at_ms;
    let filter = CallFilter {
        since_ms: from,
        until_ms: until,
        line_number: "12368".into(),
        ..containing("张")
    };
    assert_eq!(
        search(&mut client, filter, SortOrder::NewestFirst, 2).await,
        scan("张", |n| (10..30).contains(&n) && n % 2 == 0)
    );

    // A later event that renames the caller moves the call between searches.
    let renamed = numbered(
        "sb-1",
        u64::from(CALLS) * 2 + 1,
        vec![with_name(ended(11), "赵六")],
    );
    assert_eq!(name(11), "张三");
    log(&mut client, renamed).await;
    for when in ["renamed", "renamed and indexed"] {
        let zhang_san = search(&mut client, containing("张三"), SortOrder::NewestFirst, 2).await;
        assert_eq!(zhang_san, scan("张三", |n| n != 11), "{when}");
        let zhao_liu = search(&mut client, containing("赵六"), SortOrder::NewestFirst, 100).await;
        assert_eq!(zhao_liu, vec![11], "{when}");
        index_now(&db).await;
    }
    let report = client.verify(VerifyRequest {}).await.unwrap().into_inner();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    service.stop().await;

    // The index holds exactly the grams of the names as they stand now.
    let store = SqlStore::open(&db.url).await.unwrap();
    assert_eq!(stored_grams(&store, 11).await, name_grams("赵六"));
    assert_eq!(stored_grams(&store, 12).await, name_grams(name(12)));
    assert!(
        stored_grams(&store, 4).await.is_empty(),
        "no name, no grams"
    );
    store.close().await;
}

/// The grams `caller_name_grams` holds for call `n`.
async fn stored_grams(store: &SqlStore, n: u32) -> std::collections::BTreeSet<String> {
    let rows = sqlx::query(&format!(
        "SELECT gram, call_time_ms FROM caller_name_grams WHERE call_key = '{}'",
        call_id(n)
    ))
    .fetch_all(store.pool())
    .await
    .unwrap();
    rows.iter()
        .map(|row| {
            assert_eq!(row.get::<i64, _>("call_time_ms"), record(n).received_at_ms);
            row.get("gram")
        })
        .collect()
}

async fn purged_calls_leave_no_grams(db: Db) {
    let service = Service::start(&settings(&db)).await;
    let mut client = service.client(None).await;
    log(&mut client, named_calls(1..=CALLS)).await;
    index_now(&db).await;
    // Every call here is from 2023, far past the 180 days' retention.
    let purged = client
        .purge(PurgeRequest { dry_run: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(purged.calls_purged, u64::from(CALLS));
    assert!(
        search(&mut client, containing("张"), SortOrder::NewestFirst, 100)
            .await
            .is_empty()
    );
    service.stop().await;
    let store = SqlStore::open(&db.url).await.unwrap();
    let left = sqlx::query("SELECT COUNT(*) AS n FROM caller_name_grams")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(left.get::<i64, _>("n"), 0);
    store.close().await;
}

/// A database made before the grams index: the migration that adds it fills it from
/// the calls already stored. Simulated by undoing that migration on a filled database.
async fn migration_indexes_calls_stored_before_it(db: Db) {
    let service = Service::start(&settings(&db)).await;
    let mut client = service.client(None).await;
    log(&mut client, named_calls(1..=CALLS)).await;
    service.stop().await;
    index_now(&db).await;
    let store = SqlStore::open(&db.url).await.unwrap();
    let expected: Vec<(u32, std::collections::BTreeSet<String>)> =
        (1..=CALLS).map(|n| (n, name_grams(name(n)))).collect();
    for statement in [
        "DROP TABLE caller_name_grams",
        "DROP TABLE caller_name_index",
        "DROP INDEX calls_by_first_seq",
        "ALTER TABLE calls DROP COLUMN first_seq",
        "DELETE FROM _sqlx_migrations WHERE version = 4",
    ] {
        sqlx::query(statement).execute(store.pool()).await.unwrap();
    }
    store.close().await;

    let store = SqlStore::open(&db.url).await.unwrap();
    for (n, grams) in &expected {
        assert_eq!(&stored_grams(&store, *n).await, grams, "call {n}");
    }
    store.close().await;
    assert_eq!(index_now(&db).await, 0, "the backfill indexed every call");
    let service = Service::start(&settings(&db)).await;
    let mut client = service.client(None).await;
    check_every_pattern(&mut client, "backfilled").await;
    service.stop().await;
}

/// The grams of a name, as the backfill SQL must also make them.
#[test]
fn grams_are_characters_and_adjacent_pairs_once_each() {
    let grams: Vec<String> = name_grams("三张三").into_iter().collect();
    assert_eq!(grams, ["三", "三张", "张", "张三"]);
    assert!(name_grams("").is_empty());
    let latin: Vec<String> = name_grams("Ann").into_iter().collect();
    assert_eq!(latin, ["A", "An", "n", "nn"]);
}

on_both_backends!(
    finds_exactly_what_a_scan_finds,
    purged_calls_leave_no_grams,
    migration_indexes_calls_stored_before_it,
);
