//! gRPC over TLS: with a certificate configured the records service speaks only
//! TLS, a client trusting the certificate gets through, a plain one does not.

mod records_common;

use courtline::contract::connect::{connect, ClientOptions};
use courtline::contract::pb::{ListCallsRequest, LogEventsRequest};
use records_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_service_speaks_tls_when_configured() {
    let db = sqlite_db();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = db.dir.path().join("records.crt");
    let key = db.dir.path().join("records.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let mut settings = settings(&db);
    settings.tls = Some((cert.clone(), key));
    let service = Service::start(&settings).await;

    let mut client = connect(&ClientOptions {
        endpoint: format!("https://localhost:{}", service.address.port()),
        tls_ca_file: Some(cert),
        ..ClientOptions::default()
    })
    .await
    .unwrap();
    client
        .log_events(LogEventsRequest {
            events: numbered("sb-1", 1, complete_calls([1])),
        })
        .await
        .unwrap();
    let page = client
        .list_calls(ListCallsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(short_ids(&page.records), vec![1]);

    // Plain HTTP/2 to a TLS port gets nowhere.
    let mut plain = service.client(None).await;
    assert!(plain.list_calls(ListCallsRequest::default()).await.is_err());
    service.stop().await;
}
