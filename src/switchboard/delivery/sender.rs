//! The switchboard's event sender: call events into the spool and on to the
//! records service.
//!
//! Call handling must never wait on, or fail because of, the records service.
//! [`RecordSender`] hands each event to a spool task, which numbers it, writes it
//! to the durable [`Spool`] (fsync) and only then passes it to the delivery task;
//! delivery sends batches in order, retrying forever with back-off, and each
//! acknowledgement lets the spool drop what the service has. What is still
//! unacknowledged at shutdown stays in the spool and is sent after the next start.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::endpoints::{AfterFailure, EndpointChoice, RecordsEndpoints};
use super::spool::{Recovered, Spool, SpoolError};
use super::upload::Uploads;
use crate::contract::connect::{connect, error_chain, RecordsClient};
use crate::contract::pb::node_event::Kind as NodeKind;
use crate::contract::pb::{
    CallMilestone, CallRecord, ConfigApplied, LogEventsRequest, NodeEvent, NodeStarted,
    RecordingFinished,
};
use crate::contract::row::record_json;
use crate::switchboard::burst::ShrinkAfterBurst;

/// First retry delay after a failed delivery.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between retries, so a recovered service is noticed within 30 s.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest wait between retries once shutting down, so the deadline is used well.
const SHUTDOWN_MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long one LogEvents may take; a hung service must not stall delivery forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Events per LogEvents request: as many as the service takes, since each request is
/// one transaction and one fsync there, and a backlog drains in the fewest of them.
const DELIVERY_BATCH: usize = crate::contract::MAX_BATCH;
/// Events the spool task writes with one fsync at most.
const SPOOL_BATCH: usize = 512;
/// Slots the spool's and delivery's queues keep however quiet it gets; above
/// it they shrink once three quarters stand empty ([`ShrinkAfterBurst`]).
const QUEUE_FLOOR: usize = 256;
/// How often a failing spool is retried, and an idle one checked.
const SPOOL_CHECK: Duration = Duration::from_secs(1);
/// Events handed to delivery and not yet acknowledged, at most: beyond this (a
/// records service down, or behind after a burst) events wait in the spool only
/// and are read back as acknowledgements come, so a backlog costs disk, not
/// memory. Five of delivery's batches: each event carries its call's record
/// (~1.4 KiB in memory), and at 20,000 a burst of 600 calls/s held ~25 MiB here.
pub const EVENTS_IN_MEMORY: usize = 5 * DELIVERY_BATCH;
/// How long a milestone waits for its fsync before the call goes on regardless.
const MILESTONE_DURABLE_WAIT: Duration = Duration::from_secs(1);

/// A milestone handed to the spool: [`QueuedMilestone::on_disk`] waits for its fsync.
pub struct QueuedMilestone {
    /// The call it belongs to, for the log line when the spool is slow or failing.
    call_id: String,
    /// Hears `true` once the milestone (and all queued before it) is written and synced.
    written: oneshot::Receiver<bool>,
}

impl QueuedMilestone {
    /// Waits (at most a second) until the milestone is on disk; a spool that fails
    /// or is slower than that is logged and the call goes on.
    pub async fn on_disk(self) {
        let call_id = self.call_id;
        match tokio::time::timeout(MILESTONE_DURABLE_WAIT, self.written).await {
            Ok(Ok(true)) => {}
            Ok(_) => {
                debug!(call_id = %call_id, "milestone not spooled (spool failing); it is still delivered")
            }
            Err(_) => warn!(call_id = %call_id, "spool slower than 1 s; the call goes on"),
        }
    }
}

/// One event on its way into the spool; `durable` hears when it is on disk (or not).
struct SpoolRequest {
    /// The event, not yet numbered.
    event: NodeEvent,
    /// Told `true` once written and synced, `false` if the spool failed.
    durable: Option<oneshot::Sender<bool>>,
}

/// Queues call events for the spool and delivery. Cheap to clone; one per call is fine.
#[derive(Debug, Clone)]
pub struct RecordSender {
    /// Into the spool task.
    queue: mpsc::UnboundedSender<SpoolRequest>,
    /// Whether the last spool write (or check) worked.
    spool_healthy: Arc<AtomicBool>,
    /// Where kept recordings go to be uploaded (a remote records service); `None`:
    /// the records service takes them over from the path in their event.
    uploads: Option<Uploads>,
    /// How far delivery is behind, for metrics and readiness.
    backlog: Arc<Backlog>,
}

/// How far delivery is behind the spool, kept by the spool and delivery tasks
/// as they work (once per batch), read by metrics and readiness.
#[derive(Debug)]
pub struct Backlog {
    /// Highest sequence number written to the spool.
    written_through: AtomicU64,
    /// Highest sequence number the records service acknowledged.
    acked_through: AtomicU64,
    /// When the service last made progress (an acknowledgement), or the
    /// backlog last started from empty, in Unix ms.
    progress_at_ms: AtomicI64,
    /// Events the records service stored (not counting ones it already had).
    delivered: AtomicU64,
    /// Whether the last delivery attempt reached the service (true until one fails).
    reachable: AtomicBool,
}

/// A reading of [`Backlog`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BacklogReading {
    /// Events spooled and not yet acknowledged.
    pub depth: u64,
    /// Seconds the oldest waiting events have waited for progress (0 with none waiting).
    pub lag_s: f64,
    /// Events the records service stored so far.
    pub delivered: u64,
    /// Whether the last delivery attempt reached the service.
    pub reachable: bool,
}

impl Backlog {
    fn new(written_through: u64) -> Backlog {
        Backlog {
            written_through: AtomicU64::new(written_through),
            acked_through: AtomicU64::new(written_through),
            progress_at_ms: AtomicI64::new(now_ms()),
            delivered: AtomicU64::new(0),
            reachable: AtomicBool::new(true),
        }
    }

    /// Events up to `seq` are on disk.
    fn written(&self, seq: u64) {
        if self.depth() == 0 {
            self.progress_at_ms.store(now_ms(), Ordering::Release);
        }
        self.written_through.fetch_max(seq, Ordering::AcqRel);
    }

    /// The service acknowledged events up to `seq`.
    fn acked(&self, seq: u64) {
        self.acked_through.fetch_max(seq, Ordering::AcqRel);
        self.progress_at_ms.store(now_ms(), Ordering::Release);
    }

    fn depth(&self) -> u64 {
        self.written_through
            .load(Ordering::Acquire)
            .saturating_sub(self.acked_through.load(Ordering::Acquire))
    }

    /// The backlog now.
    pub fn reading(&self) -> BacklogReading {
        let depth = self.depth();
        let waited_ms = now_ms().saturating_sub(self.progress_at_ms.load(Ordering::Acquire));
        BacklogReading {
            depth,
            lag_s: if depth == 0 {
                0.0
            } else {
                waited_ms.max(0) as f64 / 1000.0
            },
            delivered: self.delivered.load(Ordering::Acquire),
            reachable: self.reachable.load(Ordering::Acquire),
        }
    }
}

impl std::fmt::Debug for SpoolRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolRequest")
            .field("call_id", &self.event.call_id)
            .finish()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl RecordSender {
    /// Starts the spool and delivery tasks (inside a Tokio runtime). Events recovered
    /// from the spool go first; then a `NodeStarted` event marks this start, so the
    /// service can mark calls this switchboard had up before as interrupted.
    pub fn spawn(
        spool: Spool,
        recovered: Recovered,
        endpoints: impl Into<RecordsEndpoints>,
    ) -> (RecordSender, RecordDelivery) {
        RecordSender::spawn_bounded(spool, recovered, endpoints, EVENTS_IN_MEMORY)
    }

    /// [`RecordSender::spawn`] with at most `in_memory` undelivered events held in
    /// memory (tests use a small bound to exercise the read-back from the spool).
    pub fn spawn_bounded(
        spool: Spool,
        recovered: Recovered,
        endpoints: impl Into<RecordsEndpoints>,
        in_memory: usize,
    ) -> (RecordSender, RecordDelivery) {
        let endpoints = endpoints.into();
        for options in endpoints.each() {
            if let Err(error) = options.check() {
                // Still start: events are spooled and retried.
                error!(%error, "events will not be delivered to this endpoint until it is fixed");
            }
        }
        if !recovered.unacked.is_empty() {
            info!(
                events = recovered.unacked.len(),
                spool = %spool.dir().display(),
                "delivering events left in the spool by the previous run"
            );
        }
        let (queue, requests) = mpsc::unbounded_channel();
        let (deliver, to_deliver) = mpsc::unbounded_channel();
        let (acks, acked) = mpsc::unbounded_channel();
        let spool_healthy = Arc::new(AtomicBool::new(true));
        let (stop_spool, stop_signal) = oneshot::channel();
        let backlog = Arc::new(Backlog::new(
            recovered
                .unacked
                .first()
                .map_or(spool.next_seq(), |first| first.node_seq)
                .saturating_sub(1),
        ));
        backlog.written(spool.next_seq().saturating_sub(1));
        let mut task = SpoolTask {
            backlog: backlog.clone(),
            written_through: spool.next_seq().saturating_sub(1),
            spool: Some(spool),
            requests,
            deliver: Some(deliver),
            stop: Some(stop_signal),
            closing: false,
            acked,
            unwritten: Vec::new(),
            healthy: spool_healthy.clone(),
            in_memory,
            in_flight: VecDeque::new(),
            spilled_from: None,
            read_back: 0,
        };
        task.hand_over(recovered.unacked);
        let spool_task = tokio::spawn(task.run());
        let (finish, finish_signal) = oneshot::channel();
        let delivery_task = tokio::spawn(
            DeliveryTask {
                connection: Connection {
                    choice: EndpointChoice::new(endpoints.each().len()),
                    endpoints,
                    client: None,
                },
                events: to_deliver,
                pending: VecDeque::new(),
                acks,
                shutdown: Shutdown {
                    signal: Some(finish_signal),
                    deadline: None,
                },
                stats: DeliveryStats::default(),
                backlog: backlog.clone(),
            }
            .run(),
        );
        let sender = RecordSender {
            queue,
            spool_healthy,
            uploads: None,
            backlog,
        };
        sender.enqueue(
            NodeEvent {
                at_ms: now_ms(),
                kind: Some(NodeKind::NodeStarted(NodeStarted {
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                })),
                ..NodeEvent::default()
            },
            None,
        );
        (
            sender,
            RecordDelivery {
                finish,
                stop_spool,
                spool_task,
                delivery_task,
            },
        )
    }

    fn enqueue(&self, event: NodeEvent, durable: Option<oneshot::Sender<bool>>) {
        if let Err(mpsc::error::SendError(request)) =
            self.queue.send(SpoolRequest { event, durable })
        {
            log_lost(&request.event, "records delivery has already shut down");
        }
    }

    /// The call ended: queues its final record. Never blocks, never fails.
    pub fn send(&self, record: CallRecord) {
        let event = NodeEvent {
            at_ms: if record.ended_at_ms != 0 {
                record.ended_at_ms
            } else {
                now_ms()
            },
            call_id: record.call_id.clone(),
            kind: Some(NodeKind::Ended(record)),
            ..NodeEvent::default()
        };
        self.enqueue(event, None);
    }

    /// Has kept recordings uploaded by `uploads` (the records service is remote).
    pub fn uploading(self, uploads: Uploads) -> RecordSender {
        RecordSender {
            uploads: Some(uploads),
            ..self
        }
    }

    /// The call's audio recording was closed (or failed): queues its event after the
    /// call's final record, and — for a remote records service — marks the file as
    /// waiting for upload first. Never fails.
    pub async fn recording(&self, call_id: &str, recording: RecordingFinished) {
        if let Some(uploads) = &self.uploads {
            if recording.failure.is_empty() {
                uploads.hold(call_id, &recording).await;
            }
        }
        self.enqueue(
            NodeEvent {
                at_ms: now_ms(),
                call_id: call_id.to_owned(),
                kind: Some(NodeKind::Recording(recording)),
                ..NodeEvent::default()
            },
            None,
        );
    }

    /// Records a milestone of a call (with its record so far as the snapshot);
    /// [`QueuedMilestone::on_disk`] waits until it is durable, so a call is not
    /// answered before its arrival is. The spool writes in queue order, so once a
    /// later milestone of the call is on disk this one is too: a run of
    /// milestones waits for one fsync, the last one's.
    pub fn queue_milestone(&self, milestone: CallMilestone) -> QueuedMilestone {
        let call_id = milestone
            .snapshot
            .as_ref()
            .map(|snapshot| snapshot.call_id.clone())
            .unwrap_or_default();
        let (durable, written) = oneshot::channel();
        self.enqueue(
            NodeEvent {
                at_ms: now_ms(),
                call_id: call_id.clone(),
                kind: Some(NodeKind::Milestone(milestone)),
                ..NodeEvent::default()
            },
            Some(durable),
        );
        QueuedMilestone { call_id, written }
    }

    /// The switchboard put a configuration into force (start-up or reload): queues its
    /// event and waits (at most a second) until it is on disk. Whether it got there.
    pub async fn config_applied(&self, applied: ConfigApplied) -> bool {
        let (durable, written) = oneshot::channel();
        self.enqueue(
            NodeEvent {
                at_ms: now_ms(),
                kind: Some(NodeKind::ConfigApplied(applied)),
                ..NodeEvent::default()
            },
            Some(durable),
        );
        matches!(
            tokio::time::timeout(MILESTONE_DURABLE_WAIT, written).await,
            Ok(Ok(true))
        )
    }

    /// Whether the spool is writable; when not, new calls must be refused (or carried
    /// on unspooled, per `[records] on_spool_failure`).
    pub fn spool_healthy(&self) -> bool {
        self.spool_healthy.load(Ordering::Acquire)
    }

    /// How far delivery to the records service is behind.
    pub fn backlog(&self) -> BacklogReading {
        self.backlog.reading()
    }
}

/// What happened to the events queued through a [`RecordSender`]; returned at shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Events the service stored.
    pub delivered: u64,
    /// Events the service already had (a retry after a lost acknowledgement).
    pub already_stored: u64,
    /// Events the service rejected as invalid; logged in full, not retried.
    pub rejected: u64,
    /// Events still unacknowledged at the deadline: they stay in the spool for the next start.
    pub left_in_spool: u64,
    /// Events read back from the spool because delivery already held its
    /// in-memory maximum when they were written (a long outage).
    pub read_back: u64,
}

/// Handle on the spool and delivery tasks; call [`RecordDelivery::finish`] at shutdown.
#[derive(Debug)]
pub struct RecordDelivery {
    /// Tells delivery the shutdown deadline.
    finish: oneshot::Sender<Instant>,
    /// Tells the spool task to spool what is queued and take nothing more.
    stop_spool: oneshot::Sender<()>,
    /// Ends once delivery has ended; returns its part of the stats.
    spool_task: JoinHandle<SpoolStats>,
    /// Ends when everything is delivered or the deadline passed.
    delivery_task: JoinHandle<DeliveryStats>,
}

impl RecordDelivery {
    /// Spools what is queued (later sends are logged, not queued), then keeps delivering
    /// until everything is acknowledged or `deadline` has passed; what is left stays in
    /// the spool.
    pub async fn finish(self, deadline: Duration) -> DeliveryStats {
        // If a task is already gone the send fails; joining below reports why.
        let _ = self.stop_spool.send(());
        let _ = self.finish.send(Instant::now() + deadline);
        let mut stats = match self.delivery_task.await {
            Ok(stats) => stats,
            Err(join_error) => {
                error!(error = %join_error, "records delivery task failed; events stay in the spool");
                DeliveryStats::default()
            }
        };
        match self.spool_task.await {
            Ok(spooled) => {
                stats.left_in_spool += spooled.on_disk_only;
                stats.read_back = spooled.read_back;
            }
            Err(join_error) => error!(error = %join_error, "spool task failed"),
        }
        stats
    }
}

/// Owns the spool: numbers, writes and syncs events, then hands them to delivery.
struct SpoolTask {
    /// The spool (moved into blocking tasks while they run).
    spool: Option<Spool>,
    /// Events from the call tasks.
    requests: mpsc::UnboundedReceiver<SpoolRequest>,
    /// Written events, on to delivery; dropped at shutdown, once nothing waits
    /// on disk only, so delivery can finish.
    deliver: Option<mpsc::UnboundedSender<NodeEvent>>,
    /// Shutdown: spool what is queued, accept nothing more.
    stop: Option<oneshot::Receiver<()>>,
    /// Shutdown has begun: no more requests are taken.
    closing: bool,
    /// Acknowledged sequence numbers, from delivery.
    acked: mpsc::UnboundedReceiver<u64>,
    /// Numbered events the spool failed to write, retried in order.
    unwritten: Vec<NodeEvent>,
    /// Shared with the senders.
    healthy: Arc<AtomicBool>,
    /// Most events handed to delivery and not yet acknowledged.
    in_memory: usize,
    /// Sequence numbers handed to delivery, not yet acknowledged, in the order sent.
    in_flight: VecDeque<u64>,
    /// Highest sequence number on disk.
    written_through: u64,
    /// First event on disk that delivery has not been handed (it was full).
    spilled_from: Option<u64>,
    /// Events read back from disk so far.
    read_back: u64,
    /// Shared with the senders: written and acknowledged so far.
    backlog: Arc<Backlog>,
}

/// The spool task's part of [`DeliveryStats`].
#[derive(Debug, Clone, Copy, Default)]
struct SpoolStats {
    /// Events never handed to delivery: they stay in the spool for the next start.
    on_disk_only: u64,
    /// Events read back from disk for delivery.
    read_back: u64,
}

impl SpoolTask {
    /// Runs until delivery has ended.
    async fn run(mut self) -> SpoolStats {
        let mut check = tokio::time::interval(SPOOL_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                request = self.requests.recv(), if !self.closing => match request {
                    Some(request) => {
                        let mut batch = vec![request];
                        while batch.len() < SPOOL_BATCH {
                            match self.requests.try_recv() {
                                Ok(more) => batch.push(more),
                                Err(_) => break,
                            }
                        }
                        self.write(batch).await;
                    }
                    None => self.close().await,
                },
                () = stopped(&mut self.stop) => {
                    self.stop = None;
                    self.close().await;
                }
                acked = self.acked.recv() => match acked {
                    Some(seq) => self.ack(seq).await,
                    None => {
                        self.save_acknowledged().await;
                        return SpoolStats {
                            on_disk_only: self
                                .spilled_from
                                .map_or(0, |from| (self.written_through + 1).saturating_sub(from)),
                            read_back: self.read_back,
                        };
                    }
                },
                _ = check.tick() => self.check().await,
            }
        }
    }

    /// Hands written events to delivery while it holds fewer than `in_memory`;
    /// from the first that does not fit, events wait on disk (in order: once
    /// one waits, all later ones do until they are read back).
    fn hand_over(&mut self, events: Vec<NodeEvent>) {
        let Some(deliver) = &self.deliver else {
            return;
        };
        for event in events {
            if self.spilled_from.is_some() || self.in_flight.len() >= self.in_memory {
                if self.spilled_from.is_none() {
                    warn!(
                        waiting = self.in_flight.len(),
                        from = event.node_seq,
                        "records service behind: further events wait in the spool only and are read back as it catches up"
                    );
                    self.spilled_from = Some(event.node_seq);
                }
                continue;
            }
            self.in_flight.push_back(event.node_seq);
            let _ = deliver.send(event);
        }
    }

    /// Reads events that waited on disk back into delivery once it has room.
    async fn refill_from_spool(&mut self) {
        let Some(from) = self.spilled_from else {
            return;
        };
        if self.in_flight.len() > self.in_memory / 2 {
            return;
        }
        if from > self.written_through {
            self.spilled_from = None;
        } else {
            let room = self.in_memory - self.in_flight.len();
            match self
                .with_spool(move |spool| spool.read_from(from, room))
                .await
            {
                Some(Ok(events)) if !events.is_empty() => {
                    let last = events[events.len() - 1].node_seq;
                    self.read_back += events.len() as u64;
                    self.spilled_from = None;
                    self.hand_over(events);
                    if last < self.written_through {
                        self.spilled_from = Some(last + 1);
                    }
                }
                Some(Ok(_)) => {
                    // Nothing left from `from` on: the records service reports
                    // the missing numbers as a gap; retrying cannot find them.
                    error!(from, through = self.written_through, "spooled events cannot be found to deliver; the records service will report them as a gap");
                    self.spilled_from = None;
                }
                Some(Err(error)) => {
                    warn!(%error, from, "cannot read spooled events back for delivery; retrying");
                }
                None => {}
            }
        }
        if self.closing && self.spilled_from.is_none() {
            self.deliver = None;
        }
    }

    /// Takes nothing more; spools what is queued; lets delivery finish once it is sent.
    async fn close(&mut self) {
        self.requests.close();
        let mut rest = Vec::new();
        while let Ok(request) = self.requests.try_recv() {
            rest.push(request);
        }
        if !rest.is_empty() {
            self.write(rest).await;
        }
        self.closing = true;
        if self.spilled_from.is_none() {
            self.deliver = None;
        }
    }

    /// Runs `work` on the spool in a blocking thread.
    async fn with_spool<T: Send + 'static>(
        &mut self,
        work: impl FnOnce(&mut Spool) -> T + Send + 'static,
    ) -> Option<T> {
        let mut spool = self.spool.take()?;
        match tokio::task::spawn_blocking(move || {
            let result = work(&mut spool);
            (spool, result)
        })
        .await
        {
            Ok((spool, result)) => {
                self.spool = Some(spool);
                Some(result)
            }
            Err(join_error) => {
                error!(error = %join_error, "spool I/O task failed; the spool is unusable until restart");
                self.healthy.store(false, Ordering::Release);
                None
            }
        }
    }

    async fn write(&mut self, batch: Vec<SpoolRequest>) {
        let (mut events, waiters): (Vec<NodeEvent>, Vec<Option<oneshot::Sender<bool>>>) =
            batch.into_iter().map(|r| (r.event, r.durable)).unzip();
        let mut to_write = std::mem::take(&mut self.unwritten);
        let first_new = to_write.len();
        let result = self
            .with_spool(move |spool| {
                spool.assign(&mut events);
                to_write.extend(events);
                let written = spool.write(&to_write);
                (to_write, written)
            })
            .await;
        let Some((mut all, written)) = result else {
            for waiter in waiters.into_iter().flatten() {
                let _ = waiter.send(false);
            }
            return;
        };
        let ok = self.outcome(written, &all);
        if ok {
            if let Some(last) = all.last() {
                self.written_through = last.node_seq;
                self.backlog.written(last.node_seq);
            }
            // Only this batch goes on: events retried from a failed write were delivered then.
            self.hand_over(all.split_off(first_new));
        } else {
            if let Some(deliver) = &self.deliver {
                for event in &all[first_new..] {
                    // Delivered even when the disk failed (and however much
                    // delivery holds): the service is then the only copy.
                    self.in_flight.push_back(event.node_seq);
                    let _ = deliver.send(event.clone());
                }
            }
            self.unwritten = all;
        }
        for waiter in waiters.into_iter().flatten() {
            let _ = waiter.send(ok);
        }
    }

    fn outcome(&self, written: Result<(), SpoolError>, events: &[NodeEvent]) -> bool {
        match written {
            Ok(()) => {
                if !self.healthy.swap(true, Ordering::AcqRel) {
                    info!(
                        events = events.len(),
                        "spool writable again; events written"
                    );
                }
                true
            }
            Err(error) => {
                if self.healthy.swap(false, Ordering::AcqRel) {
                    error!(%error, "cannot write the records spool: events are sent from memory only, and new calls are refused unless [records] on_spool_failure = \"continue\"");
                }
                false
            }
        }
    }

    async fn check(&mut self) {
        self.refill_from_spool().await;
        if !self.unwritten.is_empty() {
            self.write(Vec::new()).await;
            return;
        }
        // One trip to the blocking pool a second: the active segment's check, and
        // the acknowledgements noted since the last one written down.
        let checked = self
            .with_spool(|spool| {
                let next = spool.next_seq();
                (spool.check_active(next), spool.save_acknowledged())
            })
            .await;
        if let Some((checked, saved)) = checked {
            self.outcome(checked, &[]);
            warn_if_unsaved(saved);
        }
    }

    /// Writes the acknowledged number down and deletes acknowledged segments.
    async fn save_acknowledged(&mut self) {
        if let Some(saved) = self.with_spool(Spool::save_acknowledged).await {
            warn_if_unsaved(saved);
        }
    }

    async fn ack(&mut self, seq: u64) {
        // The spool trims everything up to what it is told; events sent from
        // memory while the disk failed can overtake ones still waiting on disk,
        // so the spool is never told beyond the first of those.
        let through = self
            .spilled_from
            .map_or(seq, |from| seq.min(from.saturating_sub(1)));
        self.backlog.acked(through);
        // On disk at once only when a segment can go; otherwise at the next check.
        if self
            .spool
            .as_mut()
            .is_some_and(|spool| spool.acknowledge(through))
        {
            self.save_acknowledged().await;
        }
        // Delivery acknowledges batches in the order it was handed them.
        while let Some(sent) = self.in_flight.pop_front() {
            if sent == seq {
                break;
            }
        }
        self.in_flight.shrink_after_burst(QUEUE_FLOOR);
        self.refill_from_spool().await;
    }
}

/// Logs an acknowledgement the spool could not write down.
fn warn_if_unsaved(saved: Result<(), SpoolError>) {
    if let Err(error) = saved {
        warn!(%error, "cannot record the acknowledgement in the spool; events may be sent again after a restart");
    }
}

/// Completes when shutdown is signalled (or its sender dropped); never once handled.
async fn stopped(stop: &mut Option<oneshot::Receiver<()>>) {
    match stop {
        Some(signal) => {
            let _ = signal.await;
        }
        None => std::future::pending().await,
    }
}

/// What one delivery attempt came to.
enum Attempt {
    /// Stored / already there.
    Delivered {
        /// Newly stored.
        stored: u32,
        /// Already stored.
        duplicates: u32,
    },
    /// The service says the events themselves are bad; retrying cannot help.
    Rejected(tonic::Status),
    /// Worth retrying: the message says why it failed.
    Failed(String),
}

/// The lazily made connection to the records service in use.
struct Connection {
    /// Where and how to connect to each service.
    endpoints: RecordsEndpoints,
    /// Which one is in use.
    choice: EndpointChoice,
    /// The client once connected (to the current one).
    client: Option<RecordsClient>,
}

impl Connection {
    /// The endpoint in use, for logs.
    fn endpoint(&self) -> &str {
        self.endpoints
            .get(self.choice.current())
            .map_or("", |options| options.endpoint.as_str())
    }

    /// The attempt failed: drops the client and moves to the next endpoint.
    fn failed(&mut self) -> AfterFailure {
        self.client = None;
        let from = self.endpoint().to_owned();
        let after = self.choice.failed();
        if self.endpoints.each().len() > 1 {
            info!(from = %from, to = %self.endpoint(), "records delivery fails over to the next records service");
        }
        after
    }

    async fn attempt(&mut self, request: LogEventsRequest) -> Attempt {
        let Some(options) = self.endpoints.get(self.choice.current()) else {
            return Attempt::Failed("no records endpoint configured".to_owned());
        };
        if self.client.is_none() {
            match connect(options).await {
                Ok(client) => self.client = Some(client),
                Err(error) => return Attempt::Failed(error.to_string()),
            }
        }
        let Some(client) = self.client.as_mut() else {
            return Attempt::Failed("not connected".to_owned());
        };
        // Bounded here, not on the channel: a CLI's verify or export may rightly take long.
        let Ok(response) = tokio::time::timeout(REQUEST_TIMEOUT, client.log_events(request)).await
        else {
            self.client = None;
            return Attempt::Failed(format!("no answer within {REQUEST_TIMEOUT:?}"));
        };
        match response {
            Ok(response) => {
                let response = response.into_inner();
                Attempt::Delivered {
                    stored: response.stored,
                    duplicates: response.duplicates,
                }
            }
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::InvalidArgument | tonic::Code::AlreadyExists
                ) =>
            {
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
    /// Set once shutdown is requested: deliver until then, then stop.
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

/// Sends spooled events in order and reports acknowledgements back to the spool.
struct DeliveryTask {
    /// The service.
    connection: Connection,
    /// Written events from the spool task.
    events: mpsc::UnboundedReceiver<NodeEvent>,
    /// Received, not yet acknowledged, in order.
    pending: VecDeque<NodeEvent>,
    /// Acknowledged sequence numbers, to the spool task.
    acks: mpsc::UnboundedSender<u64>,
    /// Shutdown request.
    shutdown: Shutdown,
    /// Counters.
    stats: DeliveryStats,
    /// Shared with the senders: delivered so far, and whether the service answers.
    backlog: Arc<Backlog>,
}

impl DeliveryTask {
    async fn run(mut self) -> DeliveryStats {
        loop {
            if self.pending.is_empty() && !self.next_events().await {
                break;
            }
            while self.pending.len() < DELIVERY_BATCH {
                match self.events.try_recv() {
                    Ok(event) => self.pending.push_back(event),
                    Err(_) => break,
                }
            }
            if !self.deliver_batch().await {
                break;
            }
        }
        while let Ok(event) = self.events.try_recv() {
            self.pending.push_back(event);
        }
        self.stats.left_in_spool = self.pending.len() as u64;
        if !self.pending.is_empty() {
            warn!(
                events = self.pending.len(),
                "shutdown deadline passed before every event was acknowledged; they stay in the spool and are sent after the next start"
            );
        }
        self.stats
    }

    /// Waits for the next event; `false` once the senders are gone and all is sent,
    /// or the deadline passed.
    async fn next_events(&mut self) -> bool {
        loop {
            let event = if let Some(deadline) = self.shutdown.deadline {
                match tokio::time::timeout_at(deadline, self.events.recv()).await {
                    Ok(event) => event,
                    Err(_) => return false,
                }
            } else {
                tokio::select! {
                    biased;
                    event = self.events.recv() => event,
                    () = self.shutdown.requested() => continue,
                }
            };
            match event {
                Some(event) => {
                    self.pending.push_back(event);
                    return true;
                }
                None => return false,
            }
        }
    }

    /// Retries the front batch until it is delivered or rejected (`true`), or the
    /// shutdown deadline passes (`false`).
    async fn deliver_batch(&mut self) -> bool {
        // The batch stays in `pending` until delivered: each attempt's request
        // takes its own copy of the events (tonic consumes it).
        let len = self.pending.len().min(DELIVERY_BATCH);
        let Some(last_seq) = self
            .pending
            .iter()
            .take(len)
            .next_back()
            .map(|event| event.node_seq)
        else {
            return true;
        };
        let mut backoff = INITIAL_BACKOFF;
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            let outcome = {
                let request = LogEventsRequest {
                    events: self.pending.iter().take(len).cloned().collect(),
                };
                let attempt = self.connection.attempt(request);
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
                Attempt::Delivered { stored, duplicates } => {
                    self.connection.choice.succeeded();
                    self.backlog.reachable.store(true, Ordering::Release);
                    self.backlog
                        .delivered
                        .fetch_add(u64::from(stored), Ordering::AcqRel);
                    self.stats.delivered += u64::from(stored);
                    self.stats.already_stored += u64::from(duplicates);
                    debug!(
                        events = len,
                        stored, duplicates, attempts, "events delivered"
                    );
                }
                Attempt::Rejected(status) => {
                    self.stats.rejected += len as u64;
                    for event in self.pending.iter().take(len) {
                        error!(
                            node_seq = event.node_seq,
                            call_id = %event.call_id,
                            endpoint = %self.connection.endpoint(),
                            error = %status.message(),
                            event = %event_json(event),
                            "records service rejected an event; not retrying (it will show as a gap)"
                        );
                    }
                }
                Attempt::Failed(error) => {
                    let endpoint = self.connection.endpoint().to_owned();
                    if self.connection.failed() == AfterFailure::TryNext {
                        warn!(%endpoint, %error, events = len, attempts, "cannot deliver call events; trying the next records service");
                        continue;
                    }
                    self.backlog.reachable.store(false, Ordering::Release);
                    // Half fixed, half random: spreads retries without ever waiting long.
                    let jittered = backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5);
                    warn!(
                        %endpoint,
                        %error,
                        events = len,
                        attempts,
                        retry_in_ms = u64::try_from(jittered.as_millis()).unwrap_or(u64::MAX),
                        "cannot deliver call events; they are spooled, will retry"
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
                    continue;
                }
            }
            self.pending.drain(..len);
            self.pending.shrink_after_burst(QUEUE_FLOOR);
            let _ = self.acks.send(last_seq);
            return true;
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
}

/// An event as one JSON line for the logs, with the record in `calls list` form.
fn event_json(event: &NodeEvent) -> String {
    let record = match &event.kind {
        Some(NodeKind::Ended(record)) => Some(record),
        Some(NodeKind::Milestone(milestone)) => milestone.snapshot.as_ref(),
        _ => None,
    };
    format!(
        "{{\"node_id\":{:?},\"node_seq\":{},\"at_ms\":{},\"record\":{}}}",
        event.node_id,
        event.node_seq,
        event.at_ms,
        record.map_or_else(|| "null".to_owned(), record_json)
    )
}

fn log_lost(event: &NodeEvent, why: &str) {
    error!(
        call_id = %event.call_id,
        event = %event_json(event),
        "call event NOT spooled or delivered ({why}); the full event is in this line"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::connect::ClientOptions;
    use crate::contract::pb::Milestone as WireMilestone;

    #[test]
    fn the_backlog_is_what_was_written_and_not_yet_acknowledged() {
        // Events 4 and 5 were left unacknowledged by the previous run.
        let backlog = Backlog::new(3);
        backlog.written(5);
        assert_eq!(backlog.reading().depth, 2);
        backlog.written(8);
        backlog.acked(6);
        let reading = backlog.reading();
        assert_eq!(reading.depth, 2);
        assert!(reading.lag_s >= 0.0);
        backlog.acked(8);
        let reading = backlog.reading();
        assert_eq!((reading.depth, reading.lag_s), (0, 0.0));
        // An acknowledgement never moves backwards.
        backlog.acked(7);
        assert_eq!(backlog.reading().depth, 0);
    }

    #[tokio::test]
    async fn unreachable_service_leaves_events_in_the_spool() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let dir = tempfile::tempdir().unwrap();
        let (spool, recovered) = Spool::open(dir.path(), None).unwrap();
        let (sender, delivery) =
            RecordSender::spawn(spool, recovered, ClientOptions::new(address.to_string()));
        for n in 0..3 {
            sender.send(CallRecord {
                call_id: format!("00000000-0000-4000-8000-00000000000{n}"),
                ..CallRecord::default()
            });
        }
        let snapshot = CallRecord {
            call_id: "00000000-0000-4000-8000-000000000009".into(),
            ..CallRecord::default()
        };
        sender
            .queue_milestone(CallMilestone {
                milestone: WireMilestone::Received as i32,
                snapshot: Some(snapshot),
                ..CallMilestone::default()
            })
            .on_disk()
            .await;
        assert!(sender.spool_healthy());
        drop(sender);
        let started = std::time::Instant::now();
        let stats = delivery.finish(Duration::from_millis(500)).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        // NodeStarted, three records, one milestone.
        assert_eq!(stats.left_in_spool, 5, "{stats:?}");
        assert_eq!(stats.delivered, 0);
        let (_, recovered) = Spool::open(dir.path(), None).unwrap();
        assert_eq!(recovered.unacked.len(), 5);
    }
}
