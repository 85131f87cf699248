//! gRPC reflection lists the records service in both protocol versions: v1 (grpcurl,
//! Postman) and v1alpha (Python's grpcio-reflection, older grpcurl, Evans).

mod records_common;

use records_common::*;

/// Asks the service for its services over the reflection protocol in `$version`
/// (a module of `tonic_reflection::pb`); the two versions are distinct generated types.
macro_rules! list_services {
    ($version:ident, $endpoint:expr) => {{
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::$version::ServerReflectionRequest;

        let channel = tonic::transport::Endpoint::from_shared($endpoint)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let response = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::once(request))
            .await
            .unwrap_or_else(|status| panic!("{} reflection: {status:?}", stringify!($version)))
            .into_inner()
            .message()
            .await
            .unwrap()
            .unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection answer: {response:?}");
        };
        list.service
            .into_iter()
            .map(|service| service.name)
            .collect::<Vec<String>>()
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_records_service_in_v1_and_v1alpha() {
    let db = sqlite_db();
    let service = Service::start(&settings(&db)).await;
    let records = "courtline.records.v1.RecordsService".to_owned();
    let v1 = list_services!(v1, service.endpoint());
    assert!(v1.contains(&records), "v1: {v1:?}");
    let v1alpha = list_services!(v1alpha, service.endpoint());
    assert!(v1alpha.contains(&records), "v1alpha: {v1alpha:?}");
    service.stop().await;
}
