//! The records service: the gRPC front of [`CallStore`].
//!
//! It validates what the switchboard and the CLI send, so that the store only
//! ever sees well-formed records, and maps store failures to gRPC codes that tell
//! the client whether retrying makes sense.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tracing::{debug, error, info, warn};

use super::pb::records_service_server::{RecordsService, RecordsServiceServer};
use super::pb::{
    EndReason, GetCallRequest, GetCallResponse, ListCallsRequest, ListCallsResponse,
    LogCallRequest, LogCallResponse,
};
use super::store::{CallQuery, CallStore, StoreError};

/// Why the records service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listen address is in use or not ours.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address we tried to bind.
        address: SocketAddr,
        /// The underlying socket error.
        source: std::io::Error,
    },
    /// The listener given to `serve_with_listener` has no usable local address.
    #[error("cannot read the listening socket's address: {0}")]
    LocalAddress(#[source] std::io::Error),
    /// The gRPC server failed while running.
    #[error("records service transport failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Implements the generated `RecordsService` trait over a [`CallStore`].
#[derive(Debug, Clone)]
pub struct RecordsServer {
    store: CallStore,
}

impl RecordsServer {
    /// Serves records from `store`.
    pub fn new(store: CallStore) -> RecordsServer {
        RecordsServer { store }
    }
}

/// Checks a call id is a UUID; the records are keyed on it and the switchboard
/// always generates one, so anything else is a bug worth rejecting loudly.
fn validate_call_id(call_id: &str) -> Result<(), Status> {
    if call_id.is_empty() {
        return Err(Status::invalid_argument("call_id is empty"));
    }
    uuid::Uuid::parse_str(call_id).map(|_| ()).map_err(|error| {
        Status::invalid_argument(format!("call_id {call_id:?} is not a UUID: {error}"))
    })
}

/// Logs a store failure and turns it into a status; transient ones become
/// `Unavailable` so the switchboard's sender keeps retrying.
fn store_status(context: &str, error: StoreError) -> Status {
    if let StoreError::InvalidPageToken(_) = error {
        return Status::invalid_argument(error.to_string());
    }
    if error.is_transient() {
        warn!(%error, "{context}: records database temporarily unavailable");
        Status::unavailable(format!("{context}: {error}"))
    } else {
        error!(%error, "{context}: records database error");
        Status::internal(format!("{context}: {error}"))
    }
}

/// Turns a wire request into a store query; the proto's zero values mean "no filter".
fn call_query(request: ListCallsRequest) -> Result<CallQuery, Status> {
    let end_reason = match EndReason::try_from(request.end_reason) {
        Ok(EndReason::Unspecified) => None,
        Ok(reason) => Some(reason),
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown end_reason {}",
                request.end_reason
            )))
        }
    };
    let non_empty = |text: String| (!text.is_empty()).then_some(text);
    Ok(CallQuery {
        since_ms: (request.since_ms != 0).then_some(request.since_ms),
        until_ms: (request.until_ms != 0).then_some(request.until_ms),
        line_number: non_empty(request.line_number),
        caller_prefix: non_empty(request.caller_prefix),
        end_reason,
        page_size: request.page_size,
        page_token: non_empty(request.page_token),
    })
}

#[tonic::async_trait]
impl RecordsService for RecordsServer {
    async fn log_call(
        &self,
        request: Request<LogCallRequest>,
    ) -> Result<Response<LogCallResponse>, Status> {
        let Some(record) = request.into_inner().record else {
            return Err(Status::invalid_argument("LogCall needs a record"));
        };
        validate_call_id(&record.call_id)?;
        let context = format!("storing call {}", record.call_id);
        let inserted = self
            .store
            .insert(&record)
            .await
            .map_err(|error| store_status(&context, error))?;
        if inserted {
            debug!(call_id = %record.call_id, line = %record.line_number, "call record stored");
        } else {
            // A retry is normal; a different record under the same id is not, and the
            // first one is kept as evidence, so say so.
            let stored = self
                .store
                .get(&record.call_id)
                .await
                .map_err(|error| store_status(&context, error))?;
            if stored.as_ref() != Some(&record) {
                warn!(
                    call_id = %record.call_id,
                    "a different record arrived for an already stored call id; kept the first"
                );
            } else {
                debug!(call_id = %record.call_id, "call record already stored (retry)");
            }
        }
        Ok(Response::new(LogCallResponse { inserted }))
    }

    async fn list_calls(
        &self,
        request: Request<ListCallsRequest>,
    ) -> Result<Response<ListCallsResponse>, Status> {
        let query = call_query(request.into_inner())?;
        let (records, next_page_token) = self
            .store
            .list(&query)
            .await
            .map_err(|error| store_status("listing calls", error))?;
        Ok(Response::new(ListCallsResponse {
            records,
            next_page_token: next_page_token.unwrap_or_default(),
        }))
    }

    async fn get_call(
        &self,
        request: Request<GetCallRequest>,
    ) -> Result<Response<GetCallResponse>, Status> {
        let call_id = request.into_inner().call_id;
        validate_call_id(&call_id)?;
        let record = self
            .store
            .get(&call_id)
            .await
            .map_err(|error| store_status(&format!("reading call {call_id}"), error))?;
        match record {
            Some(record) => Ok(Response::new(GetCallResponse {
                record: Some(record),
            })),
            None => Err(Status::not_found(format!("no call with id {call_id}"))),
        }
    }
}

/// Opens `database` (path or `sqlite:` URL), listens on `listen` and serves until
/// `shutdown` completes; in-flight requests finish before it returns.
pub async fn serve(
    listen: SocketAddr,
    database: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    let store = CallStore::open(database).await?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ServiceError::Bind {
            address: listen,
            source,
        })?;
    serve_with_listener(listener, store, shutdown).await
}

/// Serves `store` on an already bound `listener` (lets tests bind port 0 and learn
/// the port first) until `shutdown` completes, then closes the store.
pub async fn serve_with_listener(
    listener: TcpListener,
    store: CallStore,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    let address = listener.local_addr().map_err(ServiceError::LocalAddress)?;
    info!(%address, database = store.location(), "records service listening");
    let result = tonic::transport::Server::builder()
        .add_service(RecordsServiceServer::new(RecordsServer::new(store.clone())))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    store.close().await;
    info!(%address, "records service stopped");
    result.map_err(ServiceError::Transport)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_must_be_uuids() {
        assert!(validate_call_id("6f1c2a9e-3b7d-4c1e-9a55-0d2f4e8b7c61").is_ok());
        let empty = validate_call_id("").unwrap_err();
        assert_eq!(empty.code(), tonic::Code::InvalidArgument);
        let bad = validate_call_id("call-1").unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        assert!(bad.message().contains("call-1"));
    }

    #[test]
    fn zero_values_do_not_filter() {
        let query = call_query(ListCallsRequest::default()).unwrap();
        assert_eq!(query, CallQuery::default());
        let query = call_query(ListCallsRequest {
            since_ms: 5,
            end_reason: EndReason::NoAnswer as i32,
            caller_prefix: "138".to_owned(),
            ..ListCallsRequest::default()
        })
        .unwrap();
        assert_eq!(query.since_ms, Some(5));
        assert_eq!(query.end_reason, Some(EndReason::NoAnswer));
        assert_eq!(query.caller_prefix.as_deref(), Some("138"));
        let unknown = call_query(ListCallsRequest {
            end_reason: 99,
            ..ListCallsRequest::default()
        })
        .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn bad_page_token_is_invalid_argument() {
        let status = store_status(
            "listing calls",
            StoreError::InvalidPageToken("not hex".to_owned()),
        );
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
