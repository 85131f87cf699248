//! The caller's history for the operator's whisper (`whisper_history` lines):
//! one `CallerHistory` question to the records service per such call, on a
//! client kept between calls (a connection per call would cost more than the
//! question), bounded so that a slow or dead service never holds a call up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::endpoints::{EndpointChoice, RecordsEndpoints};
use crate::contract::connect::{connect, error_chain, RecordsClient};
use crate::contract::pb::{CallerHistoryRequest, CallerHistoryResponse};

/// How long a lookup may take, connection included: far less than any warning
/// lasts, so an answer in time is there before the operator answers.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_millis(300);

/// Asks the records service how often a number's calls were reported or flagged.
/// Cheap to clone; every call shares one.
#[derive(Clone)]
pub struct CallerHistoryLookup {
    /// The services to ask, and the connection in use.
    inner: Arc<Lookup>,
}

/// What the clones of a [`CallerHistoryLookup`] share.
struct Lookup {
    /// The records services, in the order tried (delivery's list).
    endpoints: RecordsEndpoints,
    /// Which one is asked, and its client once connected; never held across an await.
    state: Mutex<(EndpointChoice, Option<RecordsClient>)>,
}

impl CallerHistoryLookup {
    /// A lookup asking `endpoints` (the first until it fails); connects on first use.
    pub fn new(endpoints: RecordsEndpoints) -> CallerHistoryLookup {
        let choice = EndpointChoice::new(endpoints.each().len());
        CallerHistoryLookup {
            inner: Arc::new(Lookup {
                endpoints,
                state: Mutex::new((choice, None)),
            }),
        }
    }

    /// The history of `caller_number`, or why there is none within [`LOOKUP_TIMEOUT`].
    pub async fn lookup(&self, caller_number: &str) -> Result<CallerHistoryResponse, String> {
        let (index, client) = {
            let state = self.inner.lock();
            (state.0.current(), state.1.clone())
        };
        let asked = tokio::time::timeout(LOOKUP_TIMEOUT, self.ask(index, client, caller_number));
        let outcome = match asked.await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
        };
        if outcome.is_err() {
            // Start over with a fresh connection, at the next service if there are several.
            let mut state = self.inner.lock();
            if state.0.current() == index {
                state.1 = None;
                let _ = state.0.failed();
            }
        }
        outcome
    }

    /// Connects to endpoint `index` unless `client` is already, and asks.
    async fn ask(
        &self,
        index: usize,
        client: Option<RecordsClient>,
        caller_number: &str,
    ) -> Result<CallerHistoryResponse, String> {
        let mut client = match client {
            Some(client) => client,
            None => {
                let options = self
                    .inner
                    .endpoints
                    .get(index)
                    .ok_or("no records endpoint configured")?;
                let client = connect(options).await.map_err(|e| e.to_string())?;
                let mut state = self.inner.lock();
                if state.0.current() == index {
                    state.1 = Some(client.clone());
                }
                client
            }
        };
        let request = CallerHistoryRequest {
            caller_number: caller_number.to_owned(),
        };
        client
            .caller_history(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| format!("{}: {}", status.code(), error_chain(&status)))
    }
}

impl Lookup {
    /// The shared state, even if a panicking holder poisoned it (it stays consistent).
    fn lock(&self) -> std::sync::MutexGuard<'_, (EndpointChoice, Option<RecordsClient>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for CallerHistoryLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerHistoryLookup")
            .field("endpoints", &self.inner.endpoints)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::connect::ClientOptions;

    #[tokio::test]
    async fn a_silent_service_is_given_up_on_and_the_next_one_is_asked() {
        // Takes connections (the kernel's backlog) and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // Refuses them.
        let refused = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let lookup = CallerHistoryLookup::new(RecordsEndpoints::new(
            ClientOptions::new("unused"),
            &[
                format!("http://{}", silent.local_addr().unwrap()),
                format!("http://{refused}"),
            ],
        ));
        let error = lookup.lookup("13900001111").await.unwrap_err();
        assert!(error.contains("no answer within 300ms"), "{error}");
        assert_eq!(lookup.inner.lock().0.current(), 1, "the next service");
        let error = lookup.lookup("13900001111").await.unwrap_err();
        assert!(
            !error.contains("no answer within"),
            "refused at once: {error}"
        );
        assert_eq!(lookup.inner.lock().0.current(), 0, "round again");
        assert!(
            lookup.inner.lock().1.is_none(),
            "no client kept after a failure"
        );
    }
}
