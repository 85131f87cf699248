//! The media engine: one thread per shard owns the RTP of many calls.
//!
//! Each shard waits on one epoll set holding every call's RTP and RTCP
//! sockets, an eventfd (new calls, commands) and a timerfd that drives a
//! timer wheel of 20 one-millisecond buckets: a stream's pacer origin is
//! aligned to the millisecond grid, so it lives in bucket `origin mod 20` and
//! is visited once per 20 ms. Per packet the engine writes a 12-byte header
//! on the stack and hands it to the kernel together with the shared,
//! pre-encoded frame (`sendmsg` with two iovecs): no allocation, no task and
//! no timer per packet. Incoming datagrams are read with `recvmmsg`; relayed
//! audio is rewritten in place (transcoding into a stack buffer).
//!
//! Commands arrive on each call's channel (`MediaCommands`); the engine polls it with a
//! waker that queues the call's slot and signals the eventfd, so no task per
//! call either.
//!
//! With `[media] send = "io_uring"` the paced packets of a tick (prompt,
//! ringback, keys played to a leg, the operator's tones) are queued on one
//! io_uring per shard and go to the kernel with one submission per tick
//! (`uring.rs`), each naming its RTP socket by a slot of the ring's file table
//! (registered when the leg starts, released when it ends); relayed audio and
//! RTCP are sent with `sendmsg` as they come.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant, SystemTime};

use futures::channel::mpsc;
use futures::StreamExt;
use rtp_rs::RtpReader;

use super::batch::{RecvBatch, SLOT_LEN};
use super::codec::{Codec, Transcoder, FRAME_MS, SAMPLES_PER_FRAME};
use super::dtmf::{DtmfDetector, EventGenerator};
use super::pacer::Pacer;
use super::ports::RtpSocket;
use super::prompt::Playlist;
use super::recording::CallTap;
use super::rtcp::{self, Ntp, ReceptionStats, ReportBlock, SenderInfo};
use super::session::{
    CallerLeg, EventPayloadTypes, LegStats, MediaCommand, MediaCommands, MediaEvent, MediaStats,
    OperatorLeg, Repoint, Side,
};
use super::stream::OutboundStream;
use super::sys::{send_parts, Epoll, EventFd, TimerFd};
use super::tone::{mix_frame, OperatorTone, ToneFrames};
use super::uring::{FileSlot, SendRing};
use crate::config::media::MediaSend;
use crate::switchboard::priority::{realtime_ignored, run_media_realtime, MEDIA_REALTIME_PRIORITY};

/// Caller frames held for mixing under the operator's tone: one is the steady
/// state (a frame arrives, the next slot sends it); the rest absorb jitter.
const HELD_VOICE_FRAMES: usize = 3;
/// Buckets of the timer wheel: one per millisecond of the 20 ms packet interval.
const WHEEL_SLOTS: u64 = 20;
/// Width of one bucket.
const TICK: Duration = Duration::from_millis(1);
/// How often RTCP and inactivity are checked.
const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// Datagrams read per `recvmmsg`.
const RECV_BATCH: usize = 16;
/// Epoll events handled per wake-up.
const EVENTS: usize = 256;
/// Token of the shard's eventfd.
const TOKEN_INBOX: u64 = u64::MAX;
/// Token of the shard's timerfd.
const TOKEN_TIMER: u64 = u64::MAX - 1;
/// Submission entries of a shard's io_uring: a tick's packets (250 at 5,000
/// callers on one shard, fewer with more shards) go in one submission; more
/// are flushed in several.
const RING_ENTRIES: u32 = 512;

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Engine threads (shards, `[media] threads`); calls are spread over
    /// them round-robin, each call with both its legs on one shard, so the
    /// relay between the legs never crosses threads.
    pub threads: usize,
    /// CNAME in our RTCP SDES.
    pub cname: String,
    /// How paced packets reach the kernel.
    pub send: MediaSend,
    /// Whether the threads ask for real-time scheduling (`[media] realtime`).
    pub realtime: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            threads: 1,
            cname: "courtline".into(),
            send: MediaSend::default(),
            realtime: false,
        }
    }
}

/// Why the engine could not start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// epoll, timerfd, eventfd or the thread could not be created.
    #[error("media engine could not start: {0}")]
    Start(String),
    /// `configure_global` came after the global engine was already running.
    #[error("the media engine is already running; configure it before the first call")]
    AlreadyStarted,
}

/// Handle to a running engine; cheap to clone.
#[derive(Clone)]
pub struct MediaEngine {
    /// One inbox per shard thread.
    shards: Arc<[Arc<Inbox>]>,
    /// Round-robin position for new calls.
    next: Arc<AtomicUsize>,
}

/// Configuration for the global engine, if set before it started.
static GLOBAL_CONFIG: Mutex<Option<EngineConfig>> = Mutex::new(None);

/// Puts media engine thread `index` (the calling thread) under real-time
/// scheduling, saying in the log whether it worked and, if not, how to allow it.
fn run_realtime(index: usize) {
    match run_media_realtime() {
        Ok(()) => tracing::info!(
            "media engine: media-{index} runs real-time (SCHED_RR, priority {MEDIA_REALTIME_PRIORITY}) ahead of every normal thread"
        ),
        Err(e) => tracing::warn!(
            "media engine: media-{index} could not get real-time scheduling ({e}); it runs at normal priority. Allow it with LimitRTPRIO={MEDIA_REALTIME_PRIORITY} and RestrictRealtime=no in the systemd unit (or CAP_SYS_NICE), or set [media] realtime = false"
        ),
    }
}

/// The process-wide engine behind [`super::session::spawn`].
static GLOBAL: OnceLock<Result<MediaEngine, EngineError>> = OnceLock::new();

impl MediaEngine {
    /// Starts `config.threads` shard threads.
    pub fn start(config: EngineConfig) -> Result<MediaEngine, EngineError> {
        let start_err = |e: std::io::Error| EngineError::Start(e.to_string());
        let mut shards = Vec::new();
        let threads = config.threads.max(1);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let ignored = realtime_ignored(threads, cores);
        let realtime = config.realtime && ignored.is_none();
        if let (true, Some(why)) = (config.realtime, ignored) {
            tracing::warn!(threads, cores, "media engine: {why}");
        }
        for i in 0..threads {
            let inbox = Arc::new(Inbox {
                queue: Mutex::new(InboxQueue::default()),
                wake: EventFd::new().map_err(start_err)?,
                calls: AtomicUsize::new(0),
            });
            let shard = Shard::new(inbox.clone(), config.clone()).map_err(start_err)?;
            std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || {
                    if realtime {
                        run_realtime(i);
                    }
                    shard.run()
                })
                .map_err(start_err)?;
            shards.push(inbox);
        }
        tracing::info!(
            threads,
            "media engine started: calls are spread over {threads} shard thread(s) (media-0…)"
        );
        Ok(MediaEngine {
            shards: shards.into(),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Sets the configuration of the process-wide engine; only before its first call.
    pub fn configure_global(config: EngineConfig) -> Result<(), EngineError> {
        if GLOBAL.get().is_some() {
            return Err(EngineError::AlreadyStarted);
        }
        *GLOBAL_CONFIG.lock().unwrap_or_else(|e| e.into_inner()) = Some(config);
        Ok(())
    }

    /// The process-wide engine, started on first use.
    pub fn global() -> Result<&'static MediaEngine, EngineError> {
        GLOBAL
            .get_or_init(|| {
                let config = GLOBAL_CONFIG
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .unwrap_or_default();
                MediaEngine::start(config)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The process-wide engine if a call has started it; never starts it.
    pub fn running() -> Option<&'static MediaEngine> {
        GLOBAL.get().and_then(|engine| engine.as_ref().ok())
    }

    /// Calls each shard holds now, by shard: how evenly round-robin spreads them.
    pub fn calls_per_shard(&self) -> Vec<usize> {
        self.shards
            .iter()
            .map(|inbox| inbox.calls.load(Ordering::Relaxed))
            .collect()
    }

    /// Hands a call's media to a shard; returns where its commands go.
    pub fn spawn(
        &self,
        caller: CallerLeg,
        ringback: Arc<ToneFrames>,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> MediaCommands {
        let (tx, rx) = MediaCommands::channel();
        let shard = &self.shards[self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len()];
        shard.lock().new_calls.push(NewCall {
            caller,
            ringback,
            events,
            commands: rx,
        });
        shard.wake.signal();
        tx
    }
}

/// Where other threads leave work for a shard.
struct Inbox {
    /// New calls and woken call slots.
    queue: Mutex<InboxQueue>,
    /// Signalled whenever `queue` gets something.
    wake: EventFd,
    /// Calls the shard holds, kept by the shard for [`MediaEngine::calls_per_shard`].
    calls: AtomicUsize,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, InboxQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The contents of an inbox.
#[derive(Default)]
struct InboxQueue {
    /// Calls to take over.
    new_calls: Vec<NewCall>,
    /// Slots whose command channel has something (or closed).
    woken: Vec<u32>,
}

/// A call handed to the engine.
struct NewCall {
    /// The caller's leg.
    caller: CallerLeg,
    /// Shared ringback frames.
    ringback: Arc<ToneFrames>,
    /// Where events go.
    events: mpsc::UnboundedSender<MediaEvent>,
    /// Commands from the call task.
    commands: mpsc::UnboundedReceiver<MediaCommand>,
}

/// Wakes the shard when a call's command channel has something.
struct CallWaker {
    /// The shard's inbox.
    inbox: Arc<Inbox>,
    /// The call's slot.
    slot: u32,
}

impl Wake for CallWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.inbox.lock().woken.push(self.slot);
        self.inbox.wake.signal();
    }
}

/// What the caller is being sent right now.
enum Source {
    /// Nothing yet.
    Idle,
    /// Frame `next` of the line's playlist (lead-in, prompts, gaps).
    Prompt {
        /// The playlist.
        frames: Arc<Playlist>,
        /// Next frame.
        next: usize,
    },
    /// Ringback frame `next` (loops).
    Ringback {
        /// Next frame.
        next: usize,
    },
    /// The operator's audio, relayed as it arrives.
    Relay,
}

impl Source {
    /// Whether the engine generates packets (paced) rather than relaying.
    fn is_paced(&self) -> bool {
        matches!(self, Source::Prompt { .. } | Source::Ringback { .. })
    }
}

/// One leg's sockets, peer and RTCP state.
struct Leg {
    /// RTP and RTCP sockets.
    socket: RtpSocket,
    /// Where RTP goes.
    remote: SocketAddr,
    /// Where the peer's latest SDP asked for RTP (`remote` may follow its real source instead).
    sdp_remote: SocketAddr,
    /// Where RTCP goes (RTP port + 1 until the peer's RTCP is seen).
    remote_rtcp: SocketAddr,
    /// Negotiated codec.
    codec: Codec,
    /// Turns what the other leg sends into `codec` (law tables, or G.722 coder
    /// state); set when the call is bridged.
    from_peer: Transcoder,
    /// What we send on this leg.
    out: OutboundStream,
    /// What we receive on it.
    reception: ReceptionStats,
    /// Latest report block the peer sent about our stream.
    peer_report: Option<ReportBlock>,
    /// Latest round-trip time.
    rtt: Option<Duration>,
    /// When the leg started (arrival clock for jitter).
    started: Instant,
    /// Next RTCP report.
    next_rtcp: Instant,
    /// Whether `remote` follows the peer's actual RTP source yet.
    latched: bool,
    /// Whether `remote_rtcp` follows the peer's actual RTCP source yet.
    rtcp_latched: bool,
    /// RFC 4733 payload types, if both sides' SDP had telephone-event.
    telephone_event: Option<EventPayloadTypes>,
    /// Keys (from SIP INFO) being played to this leg as telephone-event packets.
    keys_out: EventGenerator,
    /// Whether dropping keys for want of telephone-event was logged (once per leg).
    dropped_keys_logged: bool,
    /// Reads this leg's RFC 4733 keys for the call task instead of relaying
    /// them (the operator's, while a report key sequence is configured).
    key_reader: Option<DtmfDetector>,
    /// The tone played to this leg and its next frame; until it ends, the other
    /// leg's audio is mixed under it or dropped ([`OperatorTone::mixes_with_voice`]).
    tone: Option<(OperatorTone, usize)>,
    /// The other leg's frames (already in this leg's law) waiting for the
    /// tone's next frame to be mixed with, oldest first.
    held_voice: std::collections::VecDeque<[u8; SAMPLES_PER_FRAME]>,
    /// The RTP socket's slot in the shard's io_uring file table, if it has
    /// one; released by [`retire_leg`] whenever the leg goes.
    ring_slot: Option<FileSlot>,
}

impl Leg {
    fn new(
        socket: RtpSocket,
        remote: SocketAddr,
        codec: Codec,
        telephone_event: Option<EventPayloadTypes>,
        (now, out): (Instant, &mut PacedSender),
    ) -> Leg {
        let ring_slot = out.register(socket.rtp.as_raw_fd());
        let mut remote_rtcp = remote;
        remote_rtcp.set_port(remote.port().wrapping_add(1));
        Leg {
            socket,
            remote,
            sdp_remote: remote,
            remote_rtcp,
            codec,
            from_peer: Transcoder::new(codec, codec),
            out: OutboundStream::new(),
            reception: ReceptionStats::default(),
            peer_report: None,
            rtt: None,
            started: now,
            next_rtcp: now + first_report_delay(),
            latched: false,
            rtcp_latched: false,
            telephone_event,
            keys_out: EventGenerator::default(),
            dropped_keys_logged: false,
            key_reader: None,
            tone: None,
            held_voice: std::collections::VecDeque::new(),
            ring_slot,
        }
    }

    /// The RTP socket as paced packets name it.
    fn paced_socket(&self) -> (std::os::fd::RawFd, Option<FileSlot>) {
        (self.socket.rtp.as_raw_fd(), self.ring_slot)
    }

    /// The peer of this leg cannot receive keys out of band: say so once.
    fn drop_keys(&mut self, side: Side) {
        if !self.dropped_keys_logged {
            self.dropped_keys_logged = true;
            tracing::warn!(
                leg = ?side,
                "this leg's SDP has no telephone-event: key presses from the other leg are dropped (in-band tones in the audio still pass)"
            );
        }
    }

    /// Follows a re-offer: a new SDP address is sent to at once (and latched
    /// again on the peer's first packet from wherever it now sends); the same
    /// address as before keeps the latched one. The law takes effect with the
    /// next packet.
    fn repoint(&mut self, remote: SocketAddr, codec: Codec) {
        self.codec = codec;
        if remote == self.sdp_remote {
            return;
        }
        self.sdp_remote = remote;
        self.remote = remote;
        self.remote_rtcp = remote;
        self.remote_rtcp.set_port(remote.port().wrapping_add(1));
        self.latched = false;
        self.rtcp_latched = false;
    }

    /// Arrival time in RTP clock units, for the jitter estimate.
    fn arrival_units(&self, now: Instant) -> u32 {
        (now.duration_since(self.started).as_micros() * 8 / 1000) as u32
    }

    fn stats(&self) -> LegStats {
        LegStats {
            packets_sent: self.out.packets_sent(),
            packets_received: self.reception.received(),
            packets_lost: self.reception.lost(),
            jitter_us: self.reception.jitter() * 125,
            rtt_us: self
                .rtt
                .map(|d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX)),
            peer_reported_lost: self.peer_report.map(|b| b.cumulative_lost),
        }
    }
}

/// A call as the engine holds it.
struct Call {
    /// Bumped when the slot is reused; part of every epoll token and wheel entry.
    generation: u32,
    /// Commands from the call task.
    commands: mpsc::UnboundedReceiver<MediaCommand>,
    /// Polls `commands` on behalf of the shard.
    waker: Waker,
    /// Events to the call task.
    events: mpsc::UnboundedSender<MediaEvent>,
    /// Shared ringback frames.
    ringback: Arc<ToneFrames>,
    /// The caller's leg.
    caller: Leg,
    /// The operator's leg, once bridged; boxed, so that a call still in its
    /// warning (most calls at any moment) does not carry an empty one (#16).
    operator: Option<Box<Leg>>,
    /// Slot clock of what the caller hears.
    pacer: Pacer,
    /// What feeds the caller.
    source: Source,
    /// Bucket the call sits in, if any (entries elsewhere are stale).
    bucket: Option<u64>,
    /// Key presses from the caller.
    dtmf: DtmfDetector,
    /// Milliseconds of the playlist sent.
    prompt_ms_sent: u32,
    /// Last RTP or RTCP from the caller.
    last_heard: Instant,
    /// How long the caller may stay silent before `Inactive` is reported;
    /// None until the call task asks for the watch (at the bridge), and again once reported.
    silence_limit: Option<Duration>,
    /// Hands the call's audio to the recording writer, if the line records.
    recording: Option<CallTap>,
}

/// Which socket an epoll token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SocketKind {
    /// Caller RTP.
    CallerRtp = 0,
    /// Caller RTCP.
    CallerRtcp = 1,
    /// Operator RTP.
    OperatorRtp = 2,
    /// Operator RTCP.
    OperatorRtcp = 3,
}

impl SocketKind {
    fn from_bits(bits: u64) -> SocketKind {
        match bits & 3 {
            0 => SocketKind::CallerRtp,
            1 => SocketKind::CallerRtcp,
            2 => SocketKind::OperatorRtp,
            _ => SocketKind::OperatorRtcp,
        }
    }
}

/// Epoll token: generation, slot and socket kind.
fn token(generation: u32, slot: u32, kind: SocketKind) -> u64 {
    (u64::from(generation) << 32) | (u64::from(slot) << 2) | kind as u64
}

/// Watches a leg's RTP and RTCP sockets under the call's (generation, slot) tokens,
/// as `rtp` and `rtcp` (which leg they belong to).
fn watch_leg(
    epoll: &Epoll,
    socket: &RtpSocket,
    (generation, slot): (u32, u32),
    (rtp, rtcp): (SocketKind, SocketKind),
) -> std::io::Result<()> {
    epoll.add(socket.rtp.as_raw_fd(), token(generation, slot, rtp))?;
    epoll.add(socket.rtcp.as_raw_fd(), token(generation, slot, rtcp))
}

/// Undoes [`watch_leg`] and takes the leg's RTP socket out of the ring's file
/// table: every path that drops a leg goes through here, or a registered
/// socket would keep the call's port bound after its descriptor is closed.
fn retire_leg(epoll: &Epoll, out: &mut PacedSender, leg: &Leg) {
    epoll.remove(leg.socket.rtp.as_raw_fd());
    epoll.remove(leg.socket.rtcp.as_raw_fd());
    out.release(leg);
}

/// Wheel entry: generation and slot.
fn wheel_entry(generation: u32, slot: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(slot)
}

/// One engine thread and everything it owns.
struct Shard {
    /// Where work arrives.
    inbox: Arc<Inbox>,
    /// Readiness of every socket, the inbox and the timer.
    epoll: Epoll,
    /// Fires at the next non-empty wheel bucket.
    timer: TimerFd,
    /// Settings.
    config: EngineConfig,
    /// Time of tick 0.
    epoch: Instant,
    /// Calls by slot, boxed: the vector grows by doubling, and its spare
    /// capacity is a pointer a slot rather than a whole call (#16).
    calls: Vec<Option<Box<Call>>>,
    /// Generation of each slot (kept when the slot is empty).
    generations: Vec<u32>,
    /// Empty slots.
    free: Vec<u32>,
    /// Paced calls by the millisecond of their slot grid.
    wheel: [Vec<u64>; WHEEL_SLOTS as usize],
    /// Next tick to run.
    next_tick: u64,
    /// Where paced packets go: straight out, or queued for the tick's submission.
    out: PacedSender,
}

/// How a shard hands paced packets to the kernel (`[media] send`).
enum PacedSender {
    /// One `sendmsg` per packet, at once.
    Sendmsg,
    /// Queued on the shard's io_uring; [`Shard::flush_paced`] submits them.
    Ring(Box<SendRing<PacedPacket>>),
}

impl PacedSender {
    /// The configured path; sendmsg, said in the log, when io_uring cannot be
    /// set up (an old kernel, or a seccomp policy that forbids it).
    fn new(send: MediaSend) -> PacedSender {
        match send {
            MediaSend::Sendmsg => PacedSender::Sendmsg,
            MediaSend::IoUring => match SendRing::new(RING_ENTRIES) {
                Ok(ring) => {
                    tracing::info!("media engine: paced RTP is sent with io_uring, one submission per 1 ms tick");
                    PacedSender::Ring(Box::new(ring))
                }
                Err(e) => {
                    tracing::warn!(
                        "media engine: io_uring could not be set up ({e}); paced RTP is sent with sendmsg instead ([media] send = \"sendmsg\" chooses that without this warning)"
                    );
                    PacedSender::Sendmsg
                }
            },
        }
    }

    /// A new leg's RTP socket, put into the ring's file table (io_uring only).
    fn register(&mut self, fd: std::os::fd::RawFd) -> Option<FileSlot> {
        match self {
            PacedSender::Sendmsg => None,
            PacedSender::Ring(ring) => ring.register(fd),
        }
    }

    /// Takes a leg's RTP socket out of the ring's file table as the leg goes,
    /// so that the socket (and its port) closes with its descriptor.
    fn release(&mut self, leg: &Leg) {
        if let (PacedSender::Ring(ring), Some(slot)) = (self, leg.ring_slot) {
            ring.release(slot);
        }
    }

    /// Sends `header` then `payload` to `to` on `socket` (a descriptor and
    /// its file table slot, if any), or queues it: then a failure comes back
    /// from the flush, tagged with `packet`.
    fn send(
        &mut self,
        socket: (std::os::fd::RawFd, Option<FileSlot>),
        header: &[u8],
        payload: &[u8],
        to: SocketAddr,
        packet: PacedPacket,
    ) -> std::io::Result<()> {
        match self {
            PacedSender::Sendmsg => send_parts(socket.0, header, payload, to),
            PacedSender::Ring(ring) => {
                ring.queue(socket, header, payload, to, packet);
                Ok(())
            }
        }
    }
}

/// A paced packet as queued: whose it is and what it carries, for the fault if it fails.
#[derive(Debug, Clone, Copy, Default)]
struct PacedPacket {
    /// The call's wheel entry (generation and slot).
    entry: u64,
    /// What was sent.
    kind: PacedKind,
}

/// What a paced packet carries.
#[derive(Debug, Clone, Copy, Default)]
enum PacedKind {
    /// A prompt or ringback frame to the caller.
    #[default]
    Frame,
    /// A key played to this leg.
    Key(Side),
    /// A frame of this tone to the operator.
    Tone(OperatorTone),
}

impl PacedKind {
    /// The call's fault message for this packet failing with `e`; none when the
    /// leg it went to is already gone (an earlier fault in the same tick).
    fn fault_message(self, call: &Call, e: &std::io::Error) -> Option<String> {
        match self {
            PacedKind::Frame => Some(format!(
                "sending RTP to the caller at {}: {e}",
                call.caller.remote
            )),
            PacedKind::Key(Side::Caller) => Some(format!("sending a key to the caller: {e}")),
            PacedKind::Key(Side::Operator) => call
                .operator
                .as_ref()
                .map(|_| format!("sending a key to the operator: {e}")),
            PacedKind::Tone(tone) => call.operator.as_ref().map(|operator| {
                format!(
                    "sending the {tone:?} tone to the operator at {}: {e}",
                    operator.remote
                )
            }),
        }
    }
}

impl Shard {
    fn new(inbox: Arc<Inbox>, config: EngineConfig) -> std::io::Result<Shard> {
        let epoll = Epoll::new()?;
        let timer = TimerFd::new()?;
        epoll.add(inbox.wake.raw(), TOKEN_INBOX)?;
        epoll.add(timer.raw(), TOKEN_TIMER)?;
        Ok(Shard {
            inbox,
            epoll,
            timer,
            out: PacedSender::new(config.send),
            config,
            epoch: Instant::now(),
            calls: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            wheel: Default::default(),
            next_tick: 0,
        })
    }

    fn run(mut self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        let mut tokens = Vec::with_capacity(EVENTS);
        let mut batch = RecvBatch::new(RECV_BATCH);
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
        loop {
            let wait = next_housekeeping.saturating_duration_since(Instant::now());
            tokens.clear();
            tokens.extend(self.epoll.wait(&mut events, wait));
            for &t in &tokens {
                match t {
                    TOKEN_INBOX => {
                        self.inbox.wake.acknowledge();
                        self.drain_inbox();
                    }
                    TOKEN_TIMER => self.timer.acknowledge(),
                    t => self.on_readable(t, &mut batch),
                }
            }
            let now = Instant::now();
            self.run_ticks(now);
            self.flush_paced();
            if now >= next_housekeeping {
                self.housekeeping(now);
                next_housekeeping = now + HOUSEKEEPING;
            }
            self.arm_timer();
        }
    }

    fn drain_inbox(&mut self) {
        let (new_calls, woken) = {
            let mut q = self.inbox.lock();
            (
                std::mem::take(&mut q.new_calls),
                std::mem::take(&mut q.woken),
            )
        };
        for call in new_calls {
            self.add_call(call);
        }
        for slot in woken {
            self.poll_commands(slot);
        }
    }

    fn add_call(&mut self, new: NewCall) {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.calls.push(None);
                self.generations.push(0);
                (self.calls.len() - 1) as u32
            }
        };
        let generation = self.generations[slot as usize];
        let now = Instant::now();
        let caller = Leg::new(
            new.caller.socket,
            new.caller.remote,
            new.caller.codec,
            new.caller.telephone_event,
            (now, &mut self.out),
        );
        let registered = watch_leg(
            &self.epoll,
            &caller.socket,
            (generation, slot),
            (SocketKind::CallerRtp, SocketKind::CallerRtcp),
        );
        if let Err(e) = registered {
            let _ = new
                .events
                .unbounded_send(MediaEvent::Fault(format!("media engine: {e}")));
        }
        let waker = Waker::from(Arc::new(CallWaker {
            inbox: self.inbox.clone(),
            slot,
        }));
        self.inbox.calls.fetch_add(1, Ordering::Relaxed);
        self.calls[slot as usize] = Some(Box::new(Call {
            generation,
            commands: new.commands,
            waker,
            events: new.events,
            ringback: new.ringback,
            caller,
            operator: None,
            pacer: Pacer::new(self.align(now)),
            source: Source::Idle,
            bucket: None,
            dtmf: DtmfDetector::default(),
            prompt_ms_sent: 0,
            last_heard: now,
            silence_limit: None,
            recording: None,
        }));
        self.poll_commands(slot);
    }

    fn remove_call(&mut self, slot: u32) {
        let Some(call) = self.calls.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        for leg in std::iter::once(&call.caller).chain(call.operator.as_deref()) {
            retire_leg(&self.epoll, &mut self.out, leg);
        }
        self.inbox.calls.fetch_sub(1, Ordering::Relaxed);
        self.generations[slot as usize] = self.generations[slot as usize].wrapping_add(1);
        self.free.push(slot);
        // Sockets close as `call` drops; stale wheel entries fail the generation check.
    }

    fn poll_commands(&mut self, slot: u32) {
        loop {
            let Some(call) = self.calls.get_mut(slot as usize).and_then(Option::as_mut) else {
                return;
            };
            let waker = call.waker.clone();
            let mut cx = Context::from_waker(&waker);
            match call.commands.poll_next_unpin(&mut cx) {
                Poll::Ready(Some(command)) => {
                    if let MediaCommand::Stop(reply) = command {
                        let _ = reply.send(call.stats());
                        self.remove_call(slot);
                        return;
                    }
                    self.apply(slot, command);
                }
                // The call task is gone: nothing left to serve.
                Poll::Ready(None) => {
                    self.remove_call(slot);
                    return;
                }
                Poll::Pending => return,
            }
        }
    }

    fn apply(&mut self, slot: u32, command: MediaCommand) {
        let now = Instant::now();
        let aligned = self.align(now);
        let Some(call) = self.calls.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        match command {
            MediaCommand::PlayPrompt(frames) => {
                if call.caller.out.packets_sent() == 0 {
                    // The stream's clock starts with the first prompt packet, so
                    // it leaves at once rather than on a later 20 ms tick.
                    call.pacer = Pacer::new(aligned);
                }
                call.caller.out.start_talkspurt();
                call.source = Source::Prompt { frames, next: 0 };
            }
            MediaCommand::PlayRingback => {
                // Already ringing (started when the prompt ended): keep the cadence.
                if !matches!(call.source, Source::Ringback { .. }) {
                    call.caller.out.start_talkspurt();
                    call.source = Source::Ringback { next: 0 };
                }
            }
            MediaCommand::Bridge(operator) => {
                let OperatorLeg {
                    socket,
                    remote,
                    codec,
                    telephone_event,
                    hold_keys,
                } = operator;
                let mut leg =
                    Leg::new(socket, remote, codec, telephone_event, (now, &mut self.out));
                leg.key_reader = hold_keys.then(DtmfDetector::default);
                let generation = call.generation;
                let registered = watch_leg(
                    &self.epoll,
                    &leg.socket,
                    (generation, slot),
                    (SocketKind::OperatorRtp, SocketKind::OperatorRtcp),
                );
                if let Err(e) = registered {
                    let _ = call
                        .events
                        .unbounded_send(MediaEvent::Fault(format!("media engine: {e}")));
                }
                call.caller.out.start_talkspurt();
                if let Some(old) = call.operator.replace(Box::new(leg)) {
                    // A new operator leg replaces the old one, whose sockets close with it.
                    retire_leg(&self.epoll, &mut self.out, &old);
                }
                call.match_transcoders();
                call.source = Source::Relay;
            }
            MediaCommand::WatchInactivity(limit) => {
                // Silence is counted from now (the bridge), not through the
                // warning and the ringback, when the caller only listens.
                call.last_heard = now;
                call.silence_limit = Some(limit);
            }
            MediaCommand::Repoint(Repoint {
                side,
                remote,
                codec,
            }) => {
                let leg = match side {
                    Side::Caller => Some(&mut call.caller),
                    Side::Operator => call.operator.as_deref_mut(),
                };
                if let Some(leg) = leg {
                    let changed = leg.codec != codec;
                    leg.repoint(remote, codec);
                    if changed {
                        call.match_transcoders();
                    }
                }
            }
            MediaCommand::SendDtmf { to, event } => {
                let leg = match to {
                    Side::Caller => Some(&mut call.caller),
                    Side::Operator => call.operator.as_deref_mut(),
                };
                match leg {
                    Some(leg) if leg.telephone_event.is_some() => leg.keys_out.push(event),
                    Some(leg) => leg.drop_keys(to),
                    // Not bridged: the flow sends keys only to a connected operator.
                    None => {}
                }
            }
            MediaCommand::Record(tap) => call.recording = Some(tap),
            MediaCommand::PlayToOperator(tone) => {
                if let Some(operator) = call.operator.as_mut() {
                    operator.out.start_talkspurt();
                    operator.tone = Some((tone, 0));
                    // Held for a tone this one replaces, if any.
                    operator.held_voice.clear();
                }
            }
            // Handled by `poll_commands`.
            MediaCommand::Stop(_) => {}
        }
        if call.has_packets_to_pace() {
            self.schedule(slot);
            self.send_paced(slot, now);
            // Out before anything else is sent on the call's sockets, so its packets keep their order.
            self.flush_paced();
        }
    }

    /// Puts a paced call into the bucket of its slot grid.
    fn schedule(&mut self, slot: u32) {
        let epoch = self.epoch;
        let Some(call) = self.calls.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let bucket = (call.pacer.origin().duration_since(epoch).as_millis() as u64) % WHEEL_SLOTS;
        if call.bucket != Some(bucket) {
            call.bucket = Some(bucket);
            self.wheel[bucket as usize].push(wheel_entry(call.generation, slot));
        }
    }

    /// `now` rounded down to the millisecond grid of the wheel.
    fn align(&self, now: Instant) -> Instant {
        let ms = now.duration_since(self.epoch).as_millis() as u64;
        self.epoch + TICK * u32::try_from(ms).unwrap_or(u32::MAX)
    }

    fn tick_time(&self, tick: u64) -> Instant {
        self.epoch + TICK * u32::try_from(tick).unwrap_or(u32::MAX)
    }

    fn run_ticks(&mut self, now: Instant) {
        let current = now.duration_since(self.epoch).as_millis() as u64;
        // After a stall, each bucket is visited once; the pacer skips missed slots.
        self.next_tick = self.next_tick.max(current.saturating_sub(WHEEL_SLOTS - 1));
        while self.next_tick <= current {
            let bucket = self.next_tick % WHEEL_SLOTS;
            self.next_tick += 1;
            let mut i = 0;
            while i < self.wheel[bucket as usize].len() {
                let entry = self.wheel[bucket as usize][i];
                let slot = entry as u32;
                let live = self
                    .calls
                    .get(slot as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|c| {
                        wheel_entry(c.generation, slot) == entry
                            && c.bucket == Some(bucket)
                            && c.has_packets_to_pace()
                    });
                if !live {
                    if let Some(c) = self.calls.get_mut(slot as usize).and_then(Option::as_mut) {
                        if wheel_entry(c.generation, slot) == entry && c.bucket == Some(bucket) {
                            c.bucket = None;
                        }
                    }
                    self.wheel[bucket as usize].swap_remove(i);
                    continue;
                }
                self.send_paced(slot, now);
                i += 1;
            }
        }
    }

    fn arm_timer(&self) {
        let next = (self.next_tick..self.next_tick + WHEEL_SLOTS)
            .find(|t| !self.wheel[(t % WHEEL_SLOTS) as usize].is_empty());
        if let Some(tick) = next {
            self.timer.arm(
                self.tick_time(tick)
                    .saturating_duration_since(Instant::now()),
            );
        }
    }

    /// Sends the caller's packet for the current slot, if one is due.
    fn send_paced(&mut self, slot: u32, now: Instant) {
        let Some(call) = self.calls.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(pacer_slot) = call.pacer.take_due(now) else {
            return;
        };
        let entry = wheel_entry(call.generation, slot);
        call.send_frame(pacer_slot, entry, &mut self.out, &self.epoll);
        call.send_keys(pacer_slot, entry, &mut self.out, &self.epoll);
        call.send_operator_tone(pacer_slot, entry, &mut self.out, &self.epoll);
    }

    /// Submits the packets queued on the io_uring (if that is the path) and
    /// faults the legs whose packets failed, as a failed `sendmsg` would.
    fn flush_paced(&mut self) {
        let PacedSender::Ring(ring) = &mut self.out else {
            return;
        };
        for (packet, e) in ring.flush() {
            let slot = packet.entry as u32;
            let Some(call) = self.calls.get_mut(slot as usize).and_then(Option::as_mut) else {
                continue;
            };
            if wheel_entry(call.generation, slot) != packet.entry {
                continue;
            }
            if let Some(message) = packet.kind.fault_message(call, &e) {
                call.fault(message, &self.epoll, &mut self.out);
            }
        }
    }

    fn on_readable(&mut self, t: u64, batch: &mut RecvBatch) {
        let slot = ((t >> 2) & 0x3fff_ffff) as u32;
        let kind = SocketKind::from_bits(t);
        let Some(call) = self.calls.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        if token(call.generation, slot, kind) != t {
            return;
        }
        let leg = match kind {
            SocketKind::CallerRtp | SocketKind::CallerRtcp => &call.caller,
            SocketKind::OperatorRtp | SocketKind::OperatorRtcp => match &call.operator {
                Some(op) => op,
                None => return,
            },
        };
        let fd = match kind {
            SocketKind::CallerRtp | SocketKind::OperatorRtp => leg.socket.rtp.as_raw_fd(),
            SocketKind::CallerRtcp | SocketKind::OperatorRtcp => leg.socket.rtcp.as_raw_fd(),
        };
        let n = match batch.recv(fd) {
            Ok(n) => n,
            Err(e) => {
                let side = match kind {
                    SocketKind::CallerRtp | SocketKind::CallerRtcp => "caller",
                    SocketKind::OperatorRtp | SocketKind::OperatorRtcp => "operator",
                };
                call.fault(
                    format!("receiving RTP from the {side}: {e}"),
                    &self.epoll,
                    &mut self.out,
                );
                return;
            }
        };
        let now = Instant::now();
        let pacer_slot = call.pacer.slot_at(now);
        for i in 0..n {
            let Some(p) = batch.get(i) else { continue };
            let result = match kind {
                SocketKind::CallerRtp => call.on_caller_rtp(p.data, p.from, now, pacer_slot),
                SocketKind::OperatorRtp => call.on_operator_rtp(p.data, p.from, now, pacer_slot),
                SocketKind::CallerRtcp => {
                    call.last_heard = now;
                    on_rtcp(&mut call.caller, p.data, p.from);
                    Ok(())
                }
                SocketKind::OperatorRtcp => {
                    if let Some(op) = &mut call.operator {
                        on_rtcp(op, p.data, p.from);
                    }
                    Ok(())
                }
            };
            if let Err(message) = result {
                call.fault(message, &self.epoll, &mut self.out);
                return;
            }
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        let ntp = Ntp::from_system(SystemTime::now());
        let cname = self.config.cname.as_bytes();
        for call in self.calls.iter_mut().flatten() {
            if call
                .silence_limit
                .is_some_and(|limit| now.duration_since(call.last_heard) >= limit)
            {
                call.silence_limit = None;
                let _ = call.events.unbounded_send(MediaEvent::Inactive);
            }
            let origin = call.pacer.origin();
            for leg in std::iter::once(&mut call.caller).chain(call.operator.as_deref_mut()) {
                if now >= leg.next_rtcp {
                    leg.next_rtcp = now + next_report_delay();
                    send_report(leg, ntp, now.saturating_duration_since(origin), cname);
                }
            }
        }
    }
}

impl Call {
    /// Makes each leg's converter fit the two legs' codecs: at the bridge, and
    /// when a re-offer changes a codec (fresh G.722 state then).
    fn match_transcoders(&mut self) {
        if let Some(operator) = &mut self.operator {
            operator.from_peer = Transcoder::new(self.caller.codec, operator.codec);
            self.caller.from_peer = Transcoder::new(operator.codec, self.caller.codec);
        }
    }

    fn stats(&self) -> MediaStats {
        let caller = self.caller.stats();
        MediaStats {
            packets_to_caller: caller.packets_sent,
            packets_from_caller: caller.packets_received,
            prompt_ms_sent: self.prompt_ms_sent,
            caller,
            operator: self.operator.as_deref().map(Leg::stats),
        }
    }

    /// Sends the prompt or ringback frame of `pacer_slot` to the caller, if
    /// that is what the caller hears now.
    fn send_frame(&mut self, pacer_slot: u64, entry: u64, out: &mut PacedSender, epoll: &Epoll) {
        let codec = self.caller.codec;
        let pt = codec.payload_type();
        let mut finished = false;
        let prompt = matches!(self.source, Source::Prompt { .. });
        let frame: &[u8] = match &mut self.source {
            Source::Prompt { frames, next } => {
                let Some(frame) = frames.get(codec, *next) else {
                    return;
                };
                *next += 1;
                self.prompt_ms_sent += FRAME_MS;
                finished = *next >= frames.frame_count();
                frame
            }
            Source::Ringback { next } => {
                let frame = self.ringback.frame(codec, *next);
                *next = (*next + 1) % self.ringback.frame_count().max(1);
                frame
            }
            Source::Idle | Source::Relay => return,
        };
        let header = self.caller.out.paced_header(pt, pacer_slot, frame.len());
        if let Some(tap) = &mut self.recording {
            tap.sent(self.caller.out.last_timestamp(), codec, frame, prompt);
        }
        let sent = out.send(
            self.caller.paced_socket(),
            &header,
            frame,
            self.caller.remote,
            PacedPacket {
                entry,
                kind: PacedKind::Frame,
            },
        );
        if finished {
            // A finished prompt is always followed by ringback while the
            // operator is dialled (the call flow's rule). Starting it here
            // rather than on the flow's PlayRingback keeps the caller out of
            // silence however late the call task gets to the event.
            self.caller.out.start_talkspurt();
            self.source = Source::Ringback { next: 0 };
            let _ = self.events.unbounded_send(MediaEvent::PromptFinished);
        }
        if let Err(e) = sent {
            if e.kind() != std::io::ErrorKind::WouldBlock {
                if let Some(message) = PacedKind::Frame.fault_message(self, &e) {
                    self.fault(message, epoll, out);
                }
            }
        }
    }

    /// Sends the next packet of each leg's generated key, if one is playing.
    fn send_keys(&mut self, pacer_slot: u64, entry: u64, out: &mut PacedSender, epoll: &Epoll) {
        let sent = send_key_packet(&mut self.caller, pacer_slot, out, entry, Side::Caller)
            .and_then(|()| match self.operator.as_mut() {
                Some(operator) => send_key_packet(operator, pacer_slot, out, entry, Side::Operator),
                None => Ok(()),
            });
        if let Err((side, e)) = sent {
            if let Some(message) = PacedKind::Key(side).fault_message(self, &e) {
                self.fault(message, epoll, out);
            }
        }
    }

    /// Sends the operator the next frame of its tone, if one is playing
    /// (paced on the call's grid, in the operator's codec).
    fn send_operator_tone(
        &mut self,
        pacer_slot: u64,
        entry: u64,
        out: &mut PacedSender,
        epoll: &Epoll,
    ) {
        let Some(operator) = self.operator.as_mut() else {
            return;
        };
        let Some((tone, next)) = operator.tone else {
            return;
        };
        let mut mixed = [0u8; SAMPLES_PER_FRAME];
        let frame = match (operator.codec.law(), operator.held_voice.pop_front()) {
            (Some(law), Some(voice)) => {
                mix_frame(
                    law,
                    tone.frames().frame(operator.codec, next),
                    &voice,
                    &mut mixed,
                );
                &mixed[..]
            }
            _ => tone.frames().frame(operator.codec, next),
        };
        let header =
            operator
                .out
                .paced_header(operator.codec.payload_type(), pacer_slot, frame.len());
        let sent = out.send(
            operator.paced_socket(),
            &header,
            frame,
            operator.remote,
            PacedPacket {
                entry,
                kind: PacedKind::Tone(tone),
            },
        );
        if next + 1 < tone.frame_count() {
            operator.tone = Some((tone, next + 1));
        } else {
            // The caller's audio is relayed again as a new talkspurt; a frame
            // still held by jitter is dropped (the next one is at most 20 ms away).
            operator.tone = None;
            operator.held_voice.clear();
            operator.out.start_talkspurt();
        }
        if let Err(e) = sent {
            if e.kind() != std::io::ErrorKind::WouldBlock {
                if let Some(message) = PacedKind::Tone(tone).fault_message(self, &e) {
                    self.fault(message, epoll, out);
                }
            }
        }
    }

    /// Whether the call has packets of its own due on the 20 ms grid: the
    /// prompt, the ringback, keys being played to a leg, or the operator's tone.
    fn has_packets_to_pace(&self) -> bool {
        self.source.is_paced()
            || self.caller.keys_out.is_active()
            || self
                .operator
                .as_ref()
                .is_some_and(|operator| operator.keys_out.is_active() || operator.tone.is_some())
    }

    /// Reports a socket failure and stops sending; the call task will stop us.
    fn fault(&mut self, message: String, epoll: &Epoll, out: &mut PacedSender) {
        tracing::warn!("{message}");
        let _ = self.events.unbounded_send(MediaEvent::Fault(message));
        self.source = Source::Idle;
        if let Some(op) = self.operator.take() {
            retire_leg(epoll, out, &op);
        }
    }

    fn on_caller_rtp(
        &mut self,
        packet: &[u8],
        from: SocketAddr,
        now: Instant,
        pacer_slot: u64,
    ) -> Result<(), String> {
        let Ok(rtp) = RtpReader::new(packet) else {
            // Not RTP: ignore.
            return Ok(());
        };
        self.last_heard = now;
        let arrival = self.caller.arrival_units(now);
        self.caller.reception.on_rtp(
            rtp.ssrc(),
            u16::from(rtp.sequence_number()),
            rtp.timestamp(),
            arrival,
        );
        if !self.caller.latched {
            // Symmetric RTP (RFC 4961): answer where the caller really sends from,
            // which differs from its SDP behind NAT.
            self.caller.latched = true;
            if from != self.caller.remote {
                tracing::debug!(sdp = %self.caller.remote, actual = %from, "caller RTP comes from another address; sending there");
                self.caller.remote = from;
                if !self.caller.rtcp_latched {
                    self.caller.remote_rtcp = from;
                    self.caller
                        .remote_rtcp
                        .set_port(from.port().wrapping_add(1));
                }
            }
        }
        let pt = rtp.payload_type();
        if is_key(self.caller.telephone_event, pt) {
            return match &mut self.operator {
                // Bridged: the key goes on to the operator as it is.
                Some(operator) => relay_key(&rtp, operator, Side::Operator, pacer_slot),
                None => {
                    if let Some(digit) = self.dtmf.on_packet(rtp.timestamp(), rtp.payload()) {
                        let _ = self.events.unbounded_send(MediaEvent::Dtmf(digit));
                    }
                    Ok(())
                }
            };
        }
        if Codec::from_payload_type(pt) != Some(self.caller.codec) {
            return Ok(());
        }
        if let Some(tap) = &mut self.recording {
            let ours = self.caller.out.slot_timestamp(pacer_slot);
            tap.received(
                rtp.ssrc(),
                rtp.timestamp(),
                self.caller.codec,
                rtp.payload(),
                ours,
            );
        }
        let Some(operator) = &mut self.operator else {
            return Ok(());
        };
        if let Some((tone, _)) = operator.tone {
            if tone.mixes_with_voice() && operator.codec.law().is_some() {
                // Held for the tone's next frame on the grid (at most 20 ms later).
                let mut converted = [0u8; SLOT_LEN];
                let voice = operator.from_peer.convert(rtp.payload(), &mut converted);
                if let Ok(frame) = <[u8; SAMPLES_PER_FRAME]>::try_from(voice) {
                    if operator.held_voice.len() == HELD_VOICE_FRAMES {
                        operator.held_voice.pop_front();
                    }
                    operator.held_voice.push_back(frame);
                }
            }
            // Otherwise the tone has the operator's ear meanwhile (a G.722
            // operator, whose adaptive coding a mix would have to re-encode).
            return Ok(());
        }
        relay(&rtp, Relayed::Audio, operator, pacer_slot)
            .map_err(|e| format!("relaying RTP to the operator at {}: {e}", operator.remote))
    }

    fn on_operator_rtp(
        &mut self,
        packet: &[u8],
        from: SocketAddr,
        now: Instant,
        pacer_slot: u64,
    ) -> Result<(), String> {
        let Some(operator) = &mut self.operator else {
            return Ok(());
        };
        let Ok(rtp) = RtpReader::new(packet) else {
            return Ok(());
        };
        let arrival = operator.arrival_units(now);
        operator.reception.on_rtp(
            rtp.ssrc(),
            u16::from(rtp.sequence_number()),
            rtp.timestamp(),
            arrival,
        );
        if !operator.latched {
            operator.latched = true;
            operator.remote = from;
        }
        let pt = rtp.payload_type();
        let key = is_key(operator.telephone_event, pt);
        let operator_codec = operator.codec;
        if !key && Codec::from_payload_type(pt) != Some(operator.codec) {
            return Ok(());
        }
        if !matches!(self.source, Source::Relay) {
            return Ok(());
        }
        if key {
            if let Some(reader) = operator.key_reader.as_mut() {
                // The call flow decides whether the key reaches the caller.
                if let Some(digit) = reader.on_packet(rtp.timestamp(), rtp.payload()) {
                    let _ = self.events.unbounded_send(MediaEvent::OperatorDtmf(digit));
                }
                return Ok(());
            }
            return relay_key(&rtp, &mut self.caller, Side::Caller, pacer_slot);
        }
        relay(&rtp, Relayed::Audio, &mut self.caller, pacer_slot)
            .map_err(|e| format!("relaying RTP to the caller at {}: {e}", self.caller.remote))?;
        if let Some(tap) = &mut self.recording {
            // The operator's own payload: the writer decodes it in its codec,
            // which is what the caller got before any transcoding.
            tap.sent(
                self.caller.out.last_timestamp(),
                operator_codec,
                rtp.payload(),
                false,
            );
        }
        Ok(())
    }
}

/// Whether payload type `pt` is a telephone-event on a leg with these types.
fn is_key(telephone_event: Option<EventPayloadTypes>, pt: u8) -> bool {
    telephone_event.is_some_and(|types| types.receive == pt)
}

/// What a relayed packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relayed {
    /// Audio in the sending leg's codec, converted by `to.from_peer`.
    Audio,
    /// An RFC 4733 key, passed on as it is under `to`'s telephone-event type.
    Key,
}

/// Rewrites `rtp` onto `to`'s outgoing stream and sends it: audio (transcoded
/// into a stack buffer when the legs' codecs differ), or a key payload passed
/// on as it is.
fn relay(rtp: &RtpReader<'_>, what: Relayed, to: &mut Leg, pacer_slot: u64) -> std::io::Result<()> {
    let mut transcoded = [0u8; SLOT_LEN];
    let (payload_type, payload): (u8, &[u8]) = match (what, to.telephone_event) {
        (Relayed::Audio, _) => (
            to.codec.payload_type(),
            to.from_peer.convert(rtp.payload(), &mut transcoded),
        ),
        (Relayed::Key, Some(types)) => (types.send, rtp.payload()),
        (Relayed::Key, None) => return Ok(()),
    };
    let header = to
        .out
        .relayed_header(payload_type, rtp, pacer_slot, payload.len());
    match send_parts(to.socket.rtp.as_raw_fd(), &header, payload, to.remote) {
        Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => Err(e),
        _ => Ok(()),
    }
}

/// Passes a telephone-event packet on to the other leg, renumbered to the
/// payload type that leg declared; dropped (and logged once) if it has none.
fn relay_key(rtp: &RtpReader<'_>, to: &mut Leg, side: Side, pacer_slot: u64) -> Result<(), String> {
    if to.telephone_event.is_none() {
        to.drop_keys(side);
        return Ok(());
    }
    relay(rtp, Relayed::Key, to, pacer_slot)
        .map_err(|e| format!("relaying a key to the {side:?} at {}: {e}", to.remote))
}

/// Sends the next packet of the key being played to `leg` (the call's `side`),
/// if any: our SSRC and sequence, the key's own timestamp (RFC 4733 §2.3.1).
fn send_key_packet(
    leg: &mut Leg,
    pacer_slot: u64,
    out: &mut PacedSender,
    entry: u64,
    side: Side,
) -> Result<(), (Side, std::io::Error)> {
    let Some(types) = leg.telephone_event else {
        return Ok(());
    };
    let Some(packet) = leg.keys_out.next_packet(leg.out.slot_timestamp(pacer_slot)) else {
        return Ok(());
    };
    let header = leg.out.event_header(
        types.send,
        packet.timestamp,
        packet.marker,
        packet.payload.len(),
    );
    match out.send(
        leg.paced_socket(),
        &header,
        &packet.payload,
        leg.remote,
        PacedPacket {
            entry,
            kind: PacedKind::Key(side),
        },
    ) {
        Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => Err((side, e)),
        _ => Ok(()),
    }
}

/// Takes in an RTCP compound packet from a leg's peer.
fn on_rtcp(leg: &mut Leg, packet: &[u8], from: SocketAddr) {
    let arrival = Ntp::from_system(SystemTime::now());
    let Some(report) = rtcp::parse(packet, leg.out.ssrc()) else {
        return;
    };
    if !leg.rtcp_latched {
        leg.rtcp_latched = true;
        leg.remote_rtcp = from;
    }
    if let Some(ntp) = report.sender_ntp {
        leg.reception.on_sender_report(ntp, arrival);
    }
    if let Some(block) = report.about_us {
        if let Some(rtt) = rtcp::round_trip(&block, arrival) {
            leg.rtt = Some(rtt);
        }
        leg.peer_report = Some(block);
    }
}

/// Sends a leg's SR (or RR if it has sent nothing) with SDES.
fn send_report(leg: &mut Leg, ntp: Ntp, since_origin: Duration, cname: &[u8]) {
    let mut buf = [0u8; rtcp::MAX_COMPOUND];
    let sender = (leg.out.packets_sent() > 0).then(|| SenderInfo {
        ssrc: leg.out.ssrc(),
        ntp,
        rtp_ts: leg.out.timestamp_at(since_origin),
        packets: leg.out.packets_sent() as u32,
        octets: leg.out.octets_sent() as u32,
    });
    let block = leg.reception.report_block(ntp);
    let n = rtcp::write_report(&mut buf, leg.out.ssrc(), sender, block, cname);
    if n > 0 {
        // A lost report is replaced by the next one; nothing to do on failure.
        let _ = send_parts(leg.socket.rtcp.as_raw_fd(), &buf[..n], &[], leg.remote_rtcp);
    }
}

/// RFC 3550 §6.2: the first report may come after half the interval.
fn first_report_delay() -> Duration {
    rtcp::REPORT_INTERVAL.mul_f64(rand::random_range(0.5..1.0))
}

/// RFC 3550 §6.3.1: the interval randomised over [0.5, 1.5] to avoid synchronisation.
fn next_report_delay() -> Duration {
    rtcp::REPORT_INTERVAL.mul_f64(rand::random_range(0.5..1.5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::media::RingbackCadence;
    use crate::switchboard::media::ports::RtpSocket;
    use crate::switchboard::media::session::CallerLeg;

    /// Calls played at once: enough that a tick's packets are queued together.
    const CALLS: usize = 60;
    /// Packets each caller must get: the 1 s warning (50 frames), then ringback.
    const PACKETS: usize = 100;
    /// Payload type of our telephone-event toward the callers.
    const EVENT_PT: u8 = 101;

    /// Our sockets toward one caller (non-blocking, as `RtpPorts` binds them).
    fn rtp_socket() -> RtpSocket {
        let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rtcp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rtp.set_nonblocking(true).unwrap();
        rtcp.set_nonblocking(true).unwrap();
        RtpSocket { rtp, rtcp }
    }

    /// Many callers hear the warning, then ringback, with a key played to each
    /// halfway through: every caller's stream arrives whole (no sequence number
    /// missing, none twice, none out of order) with timestamps on the 20 ms
    /// grid, on the given send path and number of shards, which share the
    /// calls evenly.
    fn streams_arrive_whole_and_in_order(send: MediaSend, threads: usize) {
        let engine = MediaEngine::start(EngineConfig {
            threads,
            cname: "test".into(),
            send,
            realtime: false,
        })
        .unwrap();
        let ringback = Arc::new(ToneFrames::ringback(&RingbackCadence::default()).unwrap());
        let playlist = Arc::new(Playlist::new(Vec::new(), 1000, 0));
        let mut calls = Vec::new();
        for _ in 0..CALLS {
            let caller = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            caller.set_nonblocking(true).unwrap();
            let (events, events_rx) = mpsc::unbounded();
            let commands = engine.spawn(
                CallerLeg {
                    socket: rtp_socket(),
                    remote: caller.local_addr().unwrap(),
                    codec: Codec::Pcma,
                    telephone_event: Some(EventPayloadTypes {
                        receive: 101,
                        send: EVENT_PT,
                    }),
                },
                ringback.clone(),
                events,
            );
            commands
                .send(MediaCommand::PlayPrompt(playlist.clone()))
                .unwrap();
            calls.push((caller, commands, events_rx, Vec::<(u16, u32, u8)>::new()));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut key_sent = [false; CALLS];
        while calls.iter().any(|c| c.3.len() < PACKETS) {
            assert!(Instant::now() < deadline, "streams incomplete after 10 s");
            for (i, (caller, commands, _, got)) in calls.iter_mut().enumerate() {
                let mut buf = [0u8; 512];
                while let Ok(n) = caller.recv(&mut buf) {
                    let rtp = RtpReader::new(&buf[..n]).unwrap();
                    got.push((
                        rtp.sequence_number().into(),
                        rtp.timestamp(),
                        rtp.payload_type(),
                    ));
                }
                if got.len() >= PACKETS / 2 && !key_sent[i] {
                    key_sent[i] = true;
                    commands
                        .send(MediaCommand::SendDtmf {
                            to: Side::Caller,
                            event: 5,
                        })
                        .unwrap();
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for (i, (_, _, _, got)) in calls.iter().enumerate() {
            for pair in got.windows(2) {
                let ((seq_a, ts_a, pt_a), (seq_b, ts_b, pt_b)) = (pair[0], pair[1]);
                assert_eq!(
                    seq_b,
                    seq_a.wrapping_add(1),
                    "caller {i}: sequence {seq_a} then {seq_b}: {got:?}"
                );
                if pt_a != EVENT_PT && pt_b != EVENT_PT {
                    let step = ts_b.wrapping_sub(ts_a);
                    assert!(
                        step > 0 && step % 160 == 0,
                        "caller {i}: timestamp {ts_a} then {ts_b}"
                    );
                }
            }
            assert!(
                got.iter().any(|&(_, _, pt)| pt == EVENT_PT),
                "caller {i} got no key packet"
            );
        }
        // Every call is still up (none was stopped): round-robin put as many on each shard.
        assert_eq!(engine.calls_per_shard(), vec![CALLS / threads; threads]);
    }

    #[test]
    fn streams_arrive_whole_and_in_order_with_io_uring() {
        streams_arrive_whole_and_in_order(MediaSend::IoUring, 1);
    }

    #[test]
    fn streams_arrive_whole_and_in_order_with_sendmsg() {
        streams_arrive_whole_and_in_order(MediaSend::Sendmsg, 1);
    }

    #[test]
    fn streams_arrive_whole_and_in_order_on_two_shards() {
        streams_arrive_whole_and_in_order(MediaSend::IoUring, 2);
    }

    /// Calls come and go on the io_uring path, more at once than the ring's
    /// first file table holds: each caller hears its warning, and once a call
    /// is stopped its RTP and RTCP ports can be bound again (its socket left
    /// the ring's file table, which would otherwise keep it open); a second
    /// round of calls reuses the slots and is heard too.
    #[test]
    fn stopped_calls_on_io_uring_free_their_ports() {
        const AT_ONCE: usize = 70;
        let engine = MediaEngine::start(EngineConfig {
            threads: 1,
            cname: "test".into(),
            send: MediaSend::IoUring,
            realtime: false,
        })
        .unwrap();
        let ringback = Arc::new(ToneFrames::ringback(&RingbackCadence::default()).unwrap());
        let playlist = Arc::new(Playlist::new(Vec::new(), 1000, 0));
        for round in 0..2 {
            let mut calls = Vec::new();
            for _ in 0..AT_ONCE {
                let caller = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                caller
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let socket = rtp_socket();
                let ours = (
                    socket.rtp.local_addr().unwrap(),
                    socket.rtcp.local_addr().unwrap(),
                );
                let (events, events_rx) = mpsc::unbounded();
                let commands = engine.spawn(
                    CallerLeg {
                        socket,
                        remote: caller.local_addr().unwrap(),
                        codec: Codec::Pcmu,
                        telephone_event: None,
                    },
                    ringback.clone(),
                    events,
                );
                commands
                    .send(MediaCommand::PlayPrompt(playlist.clone()))
                    .unwrap();
                calls.push((caller, ours, commands, events_rx));
            }
            for (i, (caller, ..)) in calls.iter().enumerate() {
                let mut buf = [0u8; 512];
                let n = caller
                    .recv(&mut buf)
                    .unwrap_or_else(|e| panic!("round {round}, caller {i} heard nothing: {e}"));
                assert!(RtpReader::new(&buf[..n]).is_ok());
            }
            for (i, (_, (rtp, rtcp), commands, _)) in calls.into_iter().enumerate() {
                let (reply, stats) = tokio::sync::oneshot::channel();
                commands.send(MediaCommand::Stop(reply)).unwrap();
                let stats = stats.blocking_recv().unwrap();
                assert!(stats.packets_to_caller > 0);
                // The engine drops the call right after its reply.
                let deadline = Instant::now() + Duration::from_secs(10);
                while std::net::UdpSocket::bind(rtp).is_err()
                    || std::net::UdpSocket::bind(rtcp).is_err()
                {
                    assert!(
                        Instant::now() < deadline,
                        "round {round}, call {i}: ports {rtp} and {rtcp} still bound 10 s after Stop"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        assert_eq!(engine.calls_per_shard(), vec![0]);
    }
}
