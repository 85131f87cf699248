//! Synthetic probe calls in the records, on SQLite and PostgreSQL, through the
//! gRPC service: stored with `probe`, listed and filtered on, left out of the
//! dashboard's figures, and verify notices a call turned into a probe (and so
//! hidden from the statistics) behind the service's back.

mod records_common;

use courtline::contract::pb::node_event::Kind;
use courtline::contract::pb::{
    CallFilter, Choice, ListCallsRequest, LogEventsRequest, NodeEvent, VerifyRequest,
};
use courtline::records::store::{Backend, CallQuery, SqlStore, Store};
use records_common::{call_id, complete_calls, numbered, settings, short_ids, Db, Service};

/// `event` as the switchboard sends it for a verified probe call.
fn as_probe(mut event: NodeEvent) -> NodeEvent {
    match event.kind.as_mut() {
        Some(Kind::Milestone(milestone)) => {
            if let Some(snapshot) = milestone.snapshot.as_mut() {
                snapshot.probe = true;
            }
        }
        Some(Kind::Ended(record)) => record.probe = true,
        _ => {}
    }
    event
}

async fn probes_are_listed_filtered_and_left_out_of_the_figures(db: Db) {
    let service = Service::start(&settings(&db)).await;
    let mut client = service.client(None).await;
    // Calls 2 and 4 are probes.
    let events = [1, 2, 3, 4]
        .into_iter()
        .flat_map(|n| {
            complete_calls([n])
                .into_iter()
                .map(move |event| if n % 2 == 0 { as_probe(event) } else { event })
        })
        .collect();
    client
        .log_events(LogEventsRequest {
            events: numbered("sb-probe", 1, events),
        })
        .await
        .unwrap();
    let ids = |probe: Choice| {
        let mut client = client.clone();
        async move {
            let page = client
                .list_calls(ListCallsRequest {
                    filter: Some(CallFilter {
                        probe: probe as i32,
                        ..CallFilter::default()
                    }),
                    ..ListCallsRequest::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(page
                .records
                .iter()
                .all(|r| r.probe == (r.call_id == call_id(2) || r.call_id == call_id(4))));
            short_ids(&page.records)
        }
    };
    assert_eq!(ids(Choice::Any).await, [4, 3, 2, 1]);
    assert_eq!(ids(Choice::Yes).await, [4, 2]);
    assert_eq!(ids(Choice::No).await, [3, 1]);

    let store = SqlStore::open(&db.url).await.unwrap();
    let figures = store
        .daily_figures(i64::MIN / 2, i64::MAX / 2)
        .await
        .unwrap();
    let counted: i64 = figures.iter().map(|row| row.tally.calls).sum();
    assert_eq!(counted, 2, "only calls 1 and 3: {figures:?}");
    if store.backend() == Backend::Sqlite {
        let query = CallQuery {
            filter: CallFilter {
                probe: Choice::Yes as i32,
                ..CallFilter::default()
            },
            ..CallQuery::default()
        };
        let plan = store.explain_list_calls(&query).await.unwrap();
        assert!(
            plan.iter().any(|step| step.contains("calls_probes")),
            "{plan:?}"
        );
    }

    let intact = client.verify(VerifyRequest {}).await.unwrap().into_inner();
    assert!(intact.findings.is_empty(), "{:?}", intact.findings);
    // Hiding a caller's call from the statistics by calling it a probe is found.
    sqlx::query("UPDATE calls SET probe = 1 WHERE call_id = $1")
        .bind(call_id(1))
        .execute(store.pool())
        .await
        .unwrap();
    let tampered = client.verify(VerifyRequest {}).await.unwrap().into_inner();
    assert!(
        tampered
            .findings
            .iter()
            .any(|finding| finding.kind == "projection"
                && finding.call_id == call_id(1)
                && finding
                    .detail
                    .contains("probe is true, its events say false")),
        "{:?}",
        tampered.findings
    );
    store.close().await;
    service.stop().await;
}

on_both_backends!(probes_are_listed_filtered_and_left_out_of_the_figures);
