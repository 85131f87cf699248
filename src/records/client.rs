//! The switchboard's side of the records service.
//!
//! Call handling must never wait on, or fail because of, the records service:
//! [`RecordSender::send`] only queues. A background task delivers the queue in
//! order, retrying forever with back-off, and at shutdown logs whatever it could
//! not deliver as JSON at `error!` level, so no record is ever silently lost.
//! Issue #5 will add a durable spool; it plugs in at [`DeliveryTask::give_up`].

use std::error::Error as StdError;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, error, warn};

use super::pb::records_service_client::RecordsServiceClient;
use super::pb::{CallRecord, LogCallRequest};
use super::query::record_json;

/// First retry delay after a failed delivery.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between retries, so a recovered service is noticed within 30 s.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest wait between retries once shutting down, so the deadline is used well.
const SHUTDOWN_MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long establishing a TCP/HTTP2 connection may take before it counts as a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one LogCall may take; a hung service must not stall the queue forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the CLI could not get a records-service client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not a valid URI.
    #[error("invalid records service endpoint {endpoint:?}: {detail}")]
    InvalidEndpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Nothing answered at the endpoint.
    #[error(
        "cannot reach the records service at {endpoint}: {detail} — \
         is `courtline serve` or `courtline records serve` running?"
    )]
    Unreachable {
        /// The endpoint we dialled.
        endpoint: String,
        /// The transport error with its causes.
        detail: String,
    },
}

/// Adds `http://` when the endpoint has no scheme, so `127.0.0.1:50051` works as typed.
fn normalize_endpoint(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

/// `error: cause: cause ...`, because tonic's transport errors hide the useful part in sources.
fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn endpoint_config(endpoint: &str) -> Result<Endpoint, ClientError> {
    let normalized = normalize_endpoint(endpoint);
    Endpoint::from_shared(normalized)
        .map(|config| {
            config
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
        })
        .map_err(|error| ClientError::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            detail: error_chain(&error),
        })
}

/// Connects to the records service at `endpoint` (`http://host:port`, or `host:port`)
/// for queries; fails fast with a message that says what to start.
pub async fn connect(endpoint: &str) -> Result<RecordsServiceClient<Channel>, ClientError> {
    let channel = endpoint_config(endpoint)?
        .connect()
        .await
        .map_err(|error| ClientError::Unreachable {
            endpoint: endpoint.to_owned(),
            detail: error_chain(&error),
        })?;
    Ok(RecordsServiceClient::new(channel))
}

/// Queues call records for delivery. Cheap to clone; one per call is fine.
#[derive(Debug, Clone)]
pub struct RecordSender {
    queue: mpsc::UnboundedSender<CallRecord>,
}

impl RecordSender {
    /// Starts the delivery task for `endpoint` (must run inside a Tokio runtime).
    /// Nothing is dialled until the first record is queued.
    pub fn spawn(endpoint: String) -> (RecordSender, RecordDelivery) {
        if let Err(error) = endpoint_config(&endpoint) {
            // Still start: records are retried, then logged in full at shutdown.
            error!(%error, "records will not be delivered until the endpoint is fixed");
        }
        let (queue, receiver) = mpsc::unbounded_channel();
        let (finish, finish_signal) = oneshot::channel();
        let task = DeliveryTask {
            connection: Connection {
                endpoint,
                client: None,
            },
            queue: receiver,
            shutdown: Shutdown {
                signal: Some(finish_signal),
                deadline: None,
            },
            stats: DeliveryStats::default(),
        };
        let handle = tokio::spawn(task.run());
        (
            RecordSender { queue },
            RecordDelivery {
                finish,
                task: handle,
            },
        )
    }

    /// Queues `record`; never blocks, never fails. After shutdown the record is logged
    /// at `error!` level as JSON instead.
    pub fn send(&self, record: CallRecord) {
        if let Err(mpsc::error::SendError(record)) = self.queue.send(record) {
            log_undelivered(&record, "records delivery has already shut down");
        }
    }
}

/// What happened to the records queued through a [`RecordSender`]; returned at shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Records the service stored.
    pub delivered: u64,
    /// Records the service already had (a retry after a lost acknowledgement).
    pub already_stored: u64,
    /// Records the service rejected as invalid; logged in full, not retried.
    pub rejected: u64,
    /// Records still queued at the deadline; logged in full at `error!`.
    pub undelivered: u64,
}

/// Handle on the delivery task; keep it and call [`RecordDelivery::finish`] at shutdown.
#[derive(Debug)]
pub struct RecordDelivery {
    finish: oneshot::Sender<Instant>,
    task: JoinHandle<DeliveryStats>,
}

impl RecordDelivery {
    /// Stops accepting records and keeps delivering the queue until it is empty or
    /// `deadline` has passed; whatever is left is logged at `error!` as JSON.
    pub async fn finish(self, deadline: Duration) -> DeliveryStats {
        // If the task is already gone the send fails; joining below reports why.
        let _ = self.finish.send(Instant::now() + deadline);
        match self.task.await {
            Ok(stats) => stats,
            Err(join_error) => {
                error!(error = %join_error, "records delivery task failed; queued records may be lost");
                DeliveryStats::default()
            }
        }
    }
}

/// What one delivery attempt came to.
enum Attempt {
    /// Stored (`true`) or already there (`false`).
    Delivered(bool),
    /// The service says the record itself is bad; retrying cannot help.
    Rejected(tonic::Status),
    /// Worth retrying: the message says why it failed.
    Failed(String),
}

/// The lazily made connection to the records service.
struct Connection {
    endpoint: String,
    client: Option<RecordsServiceClient<Channel>>,
}

impl Connection {
    async fn attempt(&mut self, record: &CallRecord) -> Attempt {
        if self.client.is_none() {
            let config = match endpoint_config(&self.endpoint) {
                Ok(config) => config,
                Err(error) => return Attempt::Failed(error.to_string()),
            };
            match config.connect().await {
                Ok(channel) => self.client = Some(RecordsServiceClient::new(channel)),
                Err(error) => return Attempt::Failed(error_chain(&error)),
            }
        }
        let Some(client) = self.client.as_mut() else {
            return Attempt::Failed("not connected".to_owned());
        };
        let request = LogCallRequest {
            record: Some(record.clone()),
        };
        match client.log_call(request).await {
            Ok(response) => Attempt::Delivered(response.into_inner().inserted),
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                Attempt::Rejected(status)
            }
            Err(status) => {
                // Start over with a fresh connection: the old one may be half dead.
                self.client = None;
                Attempt::Failed(format!("{}: {}", status.code(), error_chain(&status)))
            }
        }
    }
}

/// Tracks the shutdown request from [`RecordDelivery::finish`].
struct Shutdown {
    /// `None` once the deadline arrived or the handle was dropped without finishing.
    signal: Option<oneshot::Receiver<Instant>>,
    /// Set once shutdown is requested: deliver until then, then give up.
    deadline: Option<Instant>,
}

impl Shutdown {
    /// Completes when shutdown is requested; never, if it already was or cannot be.
    /// Cancel-safe, so it can sit in `select!` next to delivery work.
    async fn requested(&mut self) {
        if let Some(signal) = self.signal.as_mut() {
            let deadline = signal.await.ok();
            self.signal = None;
            if deadline.is_some() {
                self.deadline = deadline;
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}

/// The background task that owns the queue and the connection.
struct DeliveryTask {
    connection: Connection,
    queue: mpsc::UnboundedReceiver<CallRecord>,
    shutdown: Shutdown,
    stats: DeliveryStats,
}

impl DeliveryTask {
    async fn run(mut self) -> DeliveryStats {
        while let Some(record) = self.next_record().await {
            if !self.deliver(&record).await {
                // Close first, so a record sent from now on is logged by `send`, not dropped.
                self.queue.close();
                self.give_up(&record);
                while let Ok(rest) = self.queue.try_recv() {
                    self.give_up(&rest);
                }
                break;
            }
        }
        self.stats
    }

    /// The next queued record, or `None` once the queue is closed and drained.
    async fn next_record(&mut self) -> Option<CallRecord> {
        loop {
            if self.shutdown.deadline.is_some() {
                // Senders still alive now get their records logged instead of queued.
                self.queue.close();
                return self.queue.recv().await;
            }
            tokio::select! {
                biased;
                record = self.queue.recv() => return record,
                () = self.shutdown.requested() => {}
            }
        }
    }

    /// Retries `record` until it is delivered or rejected (`true`), or the shutdown
    /// deadline passes (`false`). Later records wait: delivery stays in order.
    async fn deliver(&mut self, record: &CallRecord) -> bool {
        let mut backoff = INITIAL_BACKOFF;
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            let outcome = {
                let attempt = self.connection.attempt(record);
                tokio::pin!(attempt);
                loop {
                    if let Some(deadline) = self.shutdown.deadline {
                        break tokio::time::timeout_at(deadline, &mut attempt).await.ok();
                    }
                    tokio::select! {
                        outcome = &mut attempt => break Some(outcome),
                        () = self.shutdown.requested() => {}
                    }
                }
            };
            let Some(outcome) = outcome else {
                return false;
            };
            match outcome {
                Attempt::Delivered(inserted) => {
                    if inserted {
                        self.stats.delivered += 1;
                    } else {
                        self.stats.already_stored += 1;
                    }
                    debug!(call_id = %record.call_id, inserted, attempts, "call record delivered");
                    return true;
                }
                Attempt::Rejected(status) => {
                    self.stats.rejected += 1;
                    error!(
                        call_id = %record.call_id,
                        endpoint = %self.connection.endpoint,
                        error = %status.message(),
                        record = %record_json(record),
                        "records service rejected call record; not retrying"
                    );
                    return true;
                }
                Attempt::Failed(error) => {
                    // Half fixed, half random: spreads retries without ever waiting long.
                    let jittered = backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5);
                    warn!(
                        call_id = %record.call_id,
                        endpoint = %self.connection.endpoint,
                        %error,
                        attempts,
                        retry_in_ms = u64::try_from(jittered.as_millis()).unwrap_or(u64::MAX),
                        "cannot deliver call record; will retry"
                    );
                    if !self.sleep(jittered).await {
                        return false;
                    }
                    let cap = if self.shutdown.deadline.is_some() {
                        SHUTDOWN_MAX_BACKOFF
                    } else {
                        MAX_BACKOFF
                    };
                    backoff = (backoff * 2).min(cap);
                }
            }
        }
    }

    /// Waits `delay` before a retry; `false` if the shutdown deadline comes first.
    async fn sleep(&mut self, delay: Duration) -> bool {
        let mut wake = Instant::now() + delay;
        loop {
            if let Some(deadline) = self.shutdown.deadline {
                if deadline <= wake {
                    tokio::time::sleep_until(deadline).await;
                    return false;
                }
                tokio::time::sleep_until(wake).await;
                return true;
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake) => return true,
                () = self.shutdown.requested() => {
                    // Shutting down: don't sit out a long back-off, the service may be back.
                    wake = wake.min(Instant::now() + INITIAL_BACKOFF);
                }
            }
        }
    }

    /// The one place a record leaves courtline's hands undelivered.
    /// Issue #5: append it to a durable spool here and replay the spool on start.
    fn give_up(&mut self, record: &CallRecord) {
        self.stats.undelivered += 1;
        log_undelivered(record, "shutdown deadline passed before delivery");
    }
}

fn log_undelivered(record: &CallRecord, why: &str) {
    error!(
        call_id = %record.call_id,
        record = %record_json(record),
        "call record NOT delivered to the records service ({why}); the full record is in this line"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_without_scheme_get_http() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:50051"),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            normalize_endpoint("https://records:443"),
            "https://records:443"
        );
        assert!(endpoint_config("http://[::1]:50051").is_ok());
        assert!(matches!(
            endpoint_config("http://bad host"),
            Err(ClientError::InvalidEndpoint { .. })
        ));
    }

    #[tokio::test]
    async fn connect_failure_says_what_to_start() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let error = connect(&address.to_string()).await.unwrap_err();
        let text = error.to_string();
        assert!(text.contains(&address.to_string()), "{text}");
        assert!(text.contains("courtline records serve"), "{text}");
    }

    #[tokio::test]
    async fn unreachable_service_logs_records_at_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let (sender, delivery) = RecordSender::spawn(address.to_string());
        for n in 0..3 {
            sender.send(CallRecord {
                call_id: format!("00000000-0000-4000-8000-00000000000{n}"),
                ..CallRecord::default()
            });
        }
        let started = std::time::Instant::now();
        let stats = delivery.finish(Duration::from_millis(500)).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(stats.undelivered, 3);
        assert_eq!(stats.delivered, 0);
        // Sending after shutdown neither panics nor blocks.
        sender.send(CallRecord::default());
    }
}
