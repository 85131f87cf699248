//! Call audio as evidence: the engine taps what it sends the caller and what
//! the caller sends, and one writer thread turns the taps into two-channel
//! WAV files (channel 1 to the caller, channel 2 from the caller).
//!
//! The media thread never touches a file: [`CallTap`] hands each frame (its
//! encoded payload, channel and position on the caller stream's clock) to the
//! writer through a bounded queue with `try_send`. A full queue drops that
//! call's recording, never a packet of the call. The writer decodes, lines
//! the channels up by position (a gap is silence) and writes them out; on
//! close it hands the file to a few sealer threads, which hash it and, unless
//! the embedded records service will ([`Durability`]), fsync it (an fsync
//! waits milliseconds for the disk: the frames must not wait with it, and
//! concurrent fsyncs share the filesystem's journal commits); the call task
//! gets a [`RecordingOutcome`] back.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

use super::codec::{Codec, Law};
use super::g722;
use super::spare_files::{links_unsupported, PoolLimits, SpareFiles};
use crate::config::RecordAudio;
use crate::contract::digest::sha256_and_length;

/// Frames the queue may hold: one second of 5,000 callers hearing the
/// warning (50 frames a second each), so the writer may stall that long —
/// on the disk, or starved of CPU on a full machine — before a recording is
/// dropped. The queue grows in small blocks and gives them back as the
/// writer catches up, so this costs memory (~180 bytes a frame) only while
/// the writer is behind; 100,000 frames allocated up front overflowed at
/// 3,000–5,000 recorded callers (#16).
const QUEUE_FRAMES: usize = 250_000;
/// Encoded bytes carried per queued frame; longer payloads go as several.
/// One byte is one unit of the 8 kHz RTP clock for G.711 and for G.722.
const CHUNK: usize = 160;
/// Audio kept in memory per call before it is written, so frames that arrive
/// late on one channel still find their place: half a second, more than a
/// jitter buffer holds a packet back. It is most of a recorded call's memory
/// (16 KB at 8 kHz), so it is not larger (#16).
const ALIGN_WINDOW_MS: u32 = 500;
/// A frame further ahead than this (in clock units, 60 s) is taken for a bad
/// timestamp and dropped rather than filled up to with silence.
const MAX_JUMP: u32 = 8_000 * 60;
/// A caller packet this far (2 s) from its arrival time re-anchors the caller's clock.
const REANCHOR_BEYOND: u32 = 8_000 * 2;
/// How often an unwritable directory is tried again.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long the writer sleeps once it has written everything queued: a few
/// frames' worth of waiting costs nothing here, while a wake-up per frame
/// cost the media engine a futex call and this thread a context switch each.
/// After a sleep that brought nothing it blocks instead (no calls recorded).
const POLL_EVERY: Duration = Duration::from_millis(10);
/// Two channels: to the caller, from the caller.
const CHANNELS: u16 = 2;
/// How often the writer looks whether closed recordings' files can be
/// reused (deleted ones are emptied then).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Frames between two looks at the clock for [`SWEEP_EVERY`].
const FRAMES_PER_CLOCK_READ: u32 = 4_096;
/// How often, at most, the writer logs a new peak of its queue.
const PEAK_REPORT_EVERY: Duration = Duration::from_secs(10);
/// Settled samples (per channel) written at once: 8 KiB at 16 bits and two
/// channels, as many `write`s as a default `BufWriter` made, with no buffer
/// of its own per call (the aligner holds them until then).
const WRITE_AT: usize = 2_048;
/// Bytes of the WAV header written before the samples.
const HEADER_BYTES: u64 = 44;
/// The page size writes are aligned to ([`page_end`]); 4 KiB on x86-64 and
/// most arm64 kernels, and only a missed saving where it is larger.
const PAGE_BYTES: u64 = 4096;
// A reused spare file may still hold this many bytes of an earlier header:
// the new header, written over them at close, must cover them.
const _: () = assert!(super::spare_files::KEPT_BYTES <= HEADER_BYTES);
/// Threads that fsync and hash closed files: one fsync takes ~1.5 ms on a
/// virtual disk, so one thread would top out near 700 calls/s.
const SEALERS: usize = 4;

/// Who puts a closed recording on the disk (fsync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The switchboard fsyncs every file it closes: a remote records service
    /// gets it uploaded later, from this disk.
    SyncOnClose,
    /// The embedded records service fsyncs what it keeps, after checking the
    /// bytes against the recording's hash; the switchboard fsyncs only
    /// `always` recordings. An `on_report` recording nobody reported is
    /// deleted moments after its close, so its pages never need to reach the
    /// disk: at 1,500 recorded calls a second their fsyncs wrote ~100 MB/s and
    /// stalled the spool's own (#16).
    KeeperSyncs,
}

impl Durability {
    /// Whether the switchboard fsyncs a closed recording of a line with `policy`.
    fn syncs_on_close(self, policy: &str) -> bool {
        self == Durability::SyncOnClose || policy == RecordAudio::Always.name()
    }
}

/// How full the writer's queue is, and its bound: the std channel neither
/// says nor (unbounded, so memory follows the backlog) limits it, so senders
/// count up and the writer counts down. The peak tells an operator how close
/// the writer came to dropping recordings (and the benchmark reads it).
#[derive(Debug, Default)]
struct QueueDepth {
    /// Messages a frame or a new recording may find queued: beyond, it is dropped.
    capacity: usize,
    /// Messages queued and not yet taken by the writer.
    now: AtomicUsize,
    /// The most ever queued at once.
    peak: AtomicUsize,
    /// Calls whose recording was dropped because the queue was full.
    dropped_recordings: AtomicU64,
}

impl QueueDepth {
    /// A queue that takes frames and new recordings up to `capacity` messages.
    fn new(capacity: usize) -> QueueDepth {
        QueueDepth {
            capacity,
            ..QueueDepth::default()
        }
    }

    /// A message is about to go in: counted first, so the writer can never
    /// count it out before it was counted in.
    fn queued(&self) -> usize {
        let depth = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.note_peak(depth);
        depth
    }

    /// Counts a frame or a new recording in, unless the queue is full (then
    /// nothing is counted and it must not be sent).
    fn admit(&self) -> bool {
        let depth = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        if depth > self.capacity {
            self.now.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        self.note_peak(depth);
        true
    }

    /// Keeps `depth` as the peak if it is one.
    fn note_peak(&self, depth: usize) {
        // Read first: the common case (no new peak) writes nothing shared.
        if depth > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(depth, Ordering::Relaxed);
        }
    }

    /// The writer took a message, or a counted one could not be queued.
    fn taken(&self) {
        self.now.fetch_sub(1, Ordering::Relaxed);
    }

    /// A call's recording was given up because the queue was full.
    fn recording_dropped(&self) {
        self.dropped_recordings.fetch_add(1, Ordering::Relaxed);
    }
}

/// Which side of the caller's leg a frame was heard on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// What courtline sent the caller: warning, ringback, the operator as relayed.
    ToCaller = 0,
    /// What the caller sent.
    FromCaller = 1,
}

/// What goes through the writer's queue.
enum Message {
    /// A call's recording starts (sent by the call task).
    Open(Box<OpenCall>),
    /// One frame of a call (sent by the media engine).
    Frame(Frame),
    /// The call ended (sent by the call task after the engine let go of it).
    Close(u64),
}

/// A new recording.
struct OpenCall {
    /// Writer-wide key of the call.
    key: u64,
    /// The call's id, which names the file.
    call_id: String,
    /// The caller's codec when recording starts: sets the file's rate.
    codec: Codec,
    /// `[[lines]] record_audio`, passed into the outcome.
    policy: &'static str,
    /// Set by the engine when the queue was full: the recording is incomplete.
    dropped: Arc<AtomicBool>,
    /// Where the outcome goes.
    reply: oneshot::Sender<RecordingOutcome>,
}

/// One encoded frame, inline so the engine allocates nothing.
struct Frame {
    /// The call.
    key: u64,
    /// Which channel.
    channel: Channel,
    /// Its codec.
    codec: Codec,
    /// Position of its first sample on the caller stream's 8 kHz clock,
    /// counted from the first warning packet.
    position: u32,
    /// Payload bytes used.
    len: u8,
    /// The payload.
    payload: [u8; CHUNK],
}

/// How a recording ended, for the call's `RecordingFinished` event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordingOutcome {
    /// The file (removed again when the recording failed).
    pub path: PathBuf,
    /// SHA-256 of the closed file, hex.
    pub sha256: String,
    /// File length.
    pub bytes: u64,
    /// 8000 or 16000.
    pub sample_rate: u32,
    /// Always 2.
    pub channels: u32,
    /// When recording started (the first warning packet), ms since the epoch.
    pub started_at_ms: i64,
    /// Length of the audio.
    pub duration_ms: u32,
    /// The line's `record_audio`.
    pub policy: &'static str,
    /// Why the recording failed; empty when complete.
    pub failure: String,
}

/// The switchboard's recording writer; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    /// The writer's queue.
    queue: Sender<Message>,
    /// Whether recordings can be written right now (for `on_failure = "reject"`).
    healthy: Arc<AtomicBool>,
    /// Next call key.
    next_key: Arc<AtomicU64>,
    /// Fill of the queue.
    depth: Arc<QueueDepth>,
}

impl Recorder {
    /// Starts the writer thread over `dir` (created if missing).
    pub fn start(dir: PathBuf, durability: Durability) -> std::io::Result<Recorder> {
        let (queue, inbox) = std::sync::mpsc::channel();
        let healthy = Arc::new(AtomicBool::new(true));
        let depth = Arc::new(QueueDepth::new(QUEUE_FRAMES));
        let (sealer, sealer_inbox) = std::sync::mpsc::channel();
        let sealer_inbox = Arc::new(Mutex::new(sealer_inbox));
        for i in 0..SEALERS {
            let inbox = sealer_inbox.clone();
            let healthy = healthy.clone();
            std::thread::Builder::new()
                .name(format!("recording-sealer-{i}"))
                .spawn(move || {
                    yield_to_calls();
                    seal_files(&inbox, &healthy)
                })?;
        }
        let spares = match SpareFiles::open(&dir, PoolLimits::default()) {
            Ok(spares) => Some(spares),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "no spare files for recordings: each recording creates its own file");
                None
            }
        };
        let writer = Writer {
            dir,
            spares,
            scratch: Vec::new(),
            swept: (Instant::now(), 0),
            calls: HashMap::new(),
            healthy: healthy.clone(),
            depth: depth.clone(),
            peak_reported: (0, Instant::now()),
            sealer,
            durability,
        };
        if let Err(e) = writer.probe() {
            tracing::warn!(dir = %writer.dir.display(), error = %e, "recordings cannot be written");
            healthy.store(false, Ordering::Release);
        }
        std::thread::Builder::new()
            .name("recording-writer".into())
            .spawn(move || {
                yield_to_calls();
                writer.run(inbox)
            })?;
        Ok(Recorder {
            queue,
            healthy,
            next_key: Arc::new(AtomicU64::new(1)),
            depth,
        })
    }

    /// The most messages ever queued at the writer at once.
    pub fn queue_peak(&self) -> u64 {
        self.depth.peak.load(Ordering::Relaxed) as u64
    }

    /// Calls whose recording was dropped because the writer's queue was full.
    pub fn dropped_recordings(&self) -> u64 {
        self.depth.dropped_recordings.load(Ordering::Relaxed)
    }

    /// Whether the last write (or probe) of the recordings directory succeeded.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Starts recording a call; the tap goes to the media engine, the
    /// receiver gets the outcome once [`Recorder::close`] was called.
    pub fn open(
        &self,
        call_id: &str,
        codec: Codec,
        policy: &'static str,
    ) -> (Option<CallTap>, oneshot::Receiver<RecordingOutcome>) {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let dropped = Arc::new(AtomicBool::new(false));
        let (reply, outcome) = oneshot::channel();
        let open = OpenCall {
            key,
            call_id: call_id.to_owned(),
            codec,
            policy,
            dropped: dropped.clone(),
            reply,
        };
        let sent = if self.depth.admit() {
            self.queue
                .send(Message::Open(Box::new(open)))
                .map_err(|refused| {
                    self.depth.taken();
                    refused.0
                })
        } else {
            Err(Message::Open(Box::new(open)))
        };
        match sent {
            Ok(()) => {
                let tap = CallTap {
                    key,
                    queue: self.queue.clone(),
                    depth: self.depth.clone(),
                    dropped,
                    origin: None,
                    caller_anchor: None,
                };
                (Some(tap), outcome)
            }
            Err(Message::Open(open)) => {
                self.depth.recording_dropped();
                tracing::warn!(
                    call_id,
                    "the recording writer is behind (queue full): this call is not recorded; the call goes on"
                );
                let _ = open.reply.send(RecordingOutcome {
                    policy,
                    channels: u32::from(CHANNELS),
                    failure:
                        "the recording writer is behind (queue full): the call was not recorded"
                            .into(),
                    ..RecordingOutcome::default()
                });
                (None, outcome)
            }
            Err(_) => unreachable!("send returns the message it was given"),
        }
    }

    /// The call's media has stopped: the writer finishes the file. Never
    /// refused nor blocking (one message a call, beyond the frames' bound).
    pub fn close(&self, tap_key: u64) {
        // The writer is gone only if its thread panicked; the receiver then reports it.
        self.depth.queued();
        if self.queue.send(Message::Close(tap_key)).is_err() {
            self.depth.taken();
        }
    }
}

/// The engine's side of one call's recording.
pub struct CallTap {
    /// The call at the writer.
    key: u64,
    /// The writer's queue.
    queue: Sender<Message>,
    /// Fill of the queue.
    depth: Arc<QueueDepth>,
    /// Set once a frame could not be queued: nothing more is sent.
    dropped: Arc<AtomicBool>,
    /// Our RTP timestamp of the first warning packet: position 0.
    origin: Option<u32>,
    /// The caller's stream mapped onto ours: (its SSRC, its timestamp, our position).
    caller_anchor: Option<(u32, u32, u32)>,
}

impl std::fmt::Debug for CallTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallTap").field("key", &self.key).finish()
    }
}

impl CallTap {
    /// The key [`Recorder::close`] takes.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// Courtline sent the caller `payload` with RTP timestamp `timestamp`;
    /// `prompt` says it is a warning frame (the first one starts the recording).
    pub fn sent(&mut self, timestamp: u32, codec: Codec, payload: &[u8], prompt: bool) {
        if self.origin.is_none() && prompt {
            self.origin = Some(timestamp);
        }
        let Some(origin) = self.origin else { return };
        self.push(
            Channel::ToCaller,
            codec,
            timestamp.wrapping_sub(origin),
            payload,
        );
    }

    /// The caller sent `payload` (SSRC `ssrc`, its timestamp `timestamp`)
    /// while our own stream stood at `our_timestamp`.
    pub fn received(
        &mut self,
        ssrc: u32,
        timestamp: u32,
        codec: Codec,
        payload: &[u8],
        our_timestamp: u32,
    ) {
        let Some(origin) = self.origin else { return };
        let now = our_timestamp.wrapping_sub(origin);
        let position = match self.caller_anchor {
            Some((anchor_ssrc, their, ours)) if anchor_ssrc == ssrc => {
                let position = ours.wrapping_add(timestamp.wrapping_sub(their));
                // A jump of the caller's clock (or a stream restarted under the
                // same SSRC) re-anchors on arrival time rather than leaving a hole.
                if (position.wrapping_sub(now) as i32).unsigned_abs() > REANCHOR_BEYOND {
                    self.caller_anchor = Some((ssrc, timestamp, now));
                    now
                } else {
                    position
                }
            }
            _ => {
                self.caller_anchor = Some((ssrc, timestamp, now));
                now
            }
        };
        self.push(Channel::FromCaller, codec, position, payload);
    }

    fn push(&mut self, channel: Channel, codec: Codec, position: u32, payload: &[u8]) {
        if self.dropped.load(Ordering::Relaxed) {
            return;
        }
        for (i, chunk) in payload.chunks(CHUNK).enumerate() {
            let mut frame = Frame {
                key: self.key,
                channel,
                codec,
                position: position.wrapping_add((i * CHUNK) as u32),
                len: chunk.len() as u8,
                payload: [0; CHUNK],
            };
            frame.payload[..chunk.len()].copy_from_slice(chunk);
            // A writer gone (its thread panicked) counts as full: its count no longer matters.
            if !(self.depth.admit() && self.queue.send(Message::Frame(frame)).is_ok()) {
                self.depth.recording_dropped();
                self.dropped.store(true, Ordering::Relaxed);
                tracing::warn!(
                    "the recording writer is behind (queue full): this call's recording is dropped; the call goes on"
                );
                return;
            }
        }
    }
}

/// One unit of the 8 kHz RTP clock on both channels, as it arrived: each
/// channel's encoded byte (one G.711 sample, or one G.722 octet = two 16 kHz
/// samples) and what codes it. 3 bytes, where decoded samples took 4 (8 kHz)
/// or 8 (16 kHz): the window is most of a recorded call's memory (#16).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slot {
    /// The encoded byte per channel.
    bytes: [u8; 2],
    /// A nibble per channel: 0 nothing arrived (silence), else [`kind_of`].
    kinds: u8,
}

/// The nibble of a slot that says `codec` coded the byte.
fn kind_of(codec: Codec) -> u8 {
    match codec {
        Codec::Pcmu => 1,
        Codec::Pcma => 2,
        Codec::G722 => 3,
    }
}

/// Two channels lined up by position: a frame's bytes are placed where its
/// position says, whatever arrives when, and what nobody filled is silence.
/// Bytes stay encoded until written ([`decode_slots`]).
#[derive(Debug)]
pub struct Aligner {
    /// Clock unit of `pending[0]`.
    base: u64,
    /// Units not yet written.
    pending: VecDeque<Slot>,
    /// Units held back for late frames ([`ALIGN_WINDOW_MS`]).
    window: usize,
}

impl Aligner {
    /// An aligner that holds back `window` units: its buffer is sized for
    /// that, a write's worth and a few frames once, rather than doubling past it.
    pub fn new(window: usize) -> Aligner {
        Aligner {
            base: 0,
            pending: VecDeque::with_capacity(window + WRITE_AT + 4 * CHUNK),
            window,
        }
    }

    /// Units held back for late frames while the call goes on.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Places `channel`'s `bytes` (coded by `codec`) at clock unit `at`;
    /// what lies before the written part is dropped (it came too late).
    pub fn put(&mut self, channel: Channel, at: u64, codec: Codec, bytes: &[u8]) {
        let skip = self.base.saturating_sub(at) as usize;
        if skip >= bytes.len() {
            return;
        }
        let start = (at + skip as u64 - self.base) as usize;
        let end = start + bytes.len() - skip;
        if self.pending.len() < end {
            self.pending.resize(end, Slot::default());
        }
        let shift = 4 * channel as u8;
        let kind = kind_of(codec) << shift;
        for (slot, &byte) in self.pending.range_mut(start..end).zip(&bytes[skip..]) {
            slot.bytes[channel as usize] = byte;
            slot.kinds = (slot.kinds & !(0xF << shift)) | kind;
        }
    }

    /// Unit one past the last placed.
    pub fn end(&self) -> u64 {
        self.base + self.pending.len() as u64
    }

    /// The units more than `window` behind the end, ready to be written (in
    /// two parts, as they lie in the ring); [`Aligner::consume`] lets go of them.
    pub fn settled(&self, window: usize) -> (&[Slot], &[Slot]) {
        let n = self.pending.len().saturating_sub(window);
        let (first, second) = self.pending.as_slices();
        if n <= first.len() {
            (&first[..n], &[])
        } else {
            (first, &second[..n - first.len()])
        }
    }

    /// Lets go of the first `n` pending units (written).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.pending.len());
        self.base += n as u64;
        self.pending.drain(..n);
    }
}

/// Decodes `slots` into 16-bit little-endian samples, both channels
/// interleaved, `per_unit` samples per unit and channel (1: an 8 kHz file,
/// 2: 16 kHz), appended to `out`. G.722 goes through each channel's decoder
/// in clock order; an empty slot is silence (and leaves the decoder alone).
pub fn decode_slots(
    slots: &[Slot],
    per_unit: usize,
    g722: &mut [g722::Decoder; 2],
    out: &mut Vec<u8>,
) {
    let start = out.len();
    // Sized once and zeroed, so a channel nothing arrived on is already
    // silence and each sample is stored in place (#16: this loop runs for
    // every unit of every recorded call).
    out.resize(start + slots.len() * per_unit * 4, 0);
    for (slot, unit) in slots
        .iter()
        .zip(out[start..].chunks_exact_mut(per_unit * 4))
    {
        for (channel, decoder) in g722.iter_mut().enumerate() {
            let byte = slot.bytes[channel];
            let decoded = match (slot.kinds >> (4 * channel)) & 0xF {
                1 => [Law::Mu.decode(byte); 2],
                2 => [Law::A.decode(byte); 2],
                3 => {
                    let mut decoded = [0i16; 2];
                    if per_unit == 2 {
                        decoder.decode(&[byte], &mut decoded);
                    } else {
                        decoder.decode_narrowband(&[byte], &mut decoded);
                    }
                    decoded
                }
                _ => continue,
            };
            for (sample, value) in unit.chunks_exact_mut(4).zip(decoded) {
                sample[2 * channel..2 * channel + 2].copy_from_slice(&value.to_le_bytes());
            }
        }
    }
}

/// A recording being written.
struct CallFile {
    /// The file.
    path: PathBuf,
    /// The open file, samples written from byte 44 on (the header at
    /// close); None once failed.
    file: Option<File>,
    /// Its id in the pool of spare files, if it came from there.
    spare: Option<u64>,
    /// 8000 or 16000.
    rate: u32,
    /// Lines the channels up.
    aligner: Aligner,
    /// G.722 state per channel (adaptive: one decoder per stream), fed in
    /// clock order as the aligner lets the bytes go.
    g722: [g722::Decoder; 2],
    /// Samples written per channel.
    written: u64,
    /// Whether the engine dropped frames.
    dropped: Arc<AtomicBool>,
    /// Why it failed, if it did.
    failure: Option<String>,
    /// Wall clock at the first warning packet.
    started_at_ms: i64,
    /// The line's policy.
    policy: &'static str,
    /// Where the outcome goes.
    reply: oneshot::Sender<RecordingOutcome>,
}

/// The writer thread's state.
struct Writer {
    /// The temporary area.
    dir: PathBuf,
    /// Files to reuse, so a recording does not create an inode (None: the
    /// pool could not be opened, every recording creates its file).
    spares: Option<SpareFiles>,
    /// Settled samples as bytes on their way to a file (shared by all calls).
    scratch: Vec<u8>,
    /// When the spare files were last swept, and frames since the clock was read.
    swept: (Instant, u32),
    /// Recordings open, by key.
    calls: HashMap<u64, CallFile>,
    /// Shared with [`Recorder::healthy`].
    healthy: Arc<AtomicBool>,
    /// Fill of the queue, shared with the senders.
    depth: Arc<QueueDepth>,
    /// The last peak logged, and when.
    peak_reported: (usize, Instant),
    /// Closed files on their way to be hashed (and fsync'd).
    sealer: Sender<SealJob>,
    /// Whether closed files are fsync'd here.
    durability: Durability,
}

/// A closed file for the sealers: fsync if asked, hash, reply.
struct SealJob {
    /// The file, open for reading and writing.
    file: File,
    /// Whether to fsync it ([`Durability`]).
    sync: bool,
    /// The outcome so far (path, rate, duration); the sealer adds hash and length.
    outcome: RecordingOutcome,
    /// Where the outcome goes.
    reply: oneshot::Sender<RecordingOutcome>,
}

impl Writer {
    fn run(mut self, inbox: Receiver<Message>) {
        let mut probed = Instant::now();
        // Whether the last look found the queue empty after a whole poll's sleep.
        let mut quiet = false;
        loop {
            // The next message; None once every sender is gone.
            let next = match inbox.try_recv() {
                Err(TryRecvError::Empty) => {
                    if !self.healthy.load(Ordering::Acquire) && probed.elapsed() >= PROBE_EVERY {
                        probed = Instant::now();
                        if self.probe().is_ok() {
                            tracing::info!(dir = %self.dir.display(), "recordings can be written again");
                            self.healthy.store(true, Ordering::Release);
                        }
                    }
                    self.sweep();
                    self.report_peak();
                    if !quiet {
                        // Caught up while calls are recorded: sleep instead of
                        // blocking on the queue, so that no sender (the media
                        // engine, for every frame) has to wake this thread (#16).
                        quiet = true;
                        std::thread::sleep(POLL_EVERY);
                        continue;
                    }
                    // Nothing came for a whole poll: nobody is recorded, so
                    // block (the next message wakes it) rather than poll idly.
                    match inbox.recv_timeout(PROBE_EVERY) {
                        Ok(message) => Some(message),
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => None,
                    }
                }
                Ok(message) => Some(message),
                Err(TryRecvError::Disconnected) => None,
            };
            let Some(message) = next else {
                // Deleted recordings' audio does not wait for the next start.
                if let Some(spares) = self.spares.as_mut() {
                    spares.reclaim(Instant::now());
                }
                return;
            };
            quiet = false;
            self.depth.taken();
            let read_clock = match message {
                Message::Open(open) => {
                    self.open(*open);
                    true
                }
                Message::Frame(frame) => {
                    self.frame(&frame);
                    self.swept.1 += 1;
                    self.swept.1 >= FRAMES_PER_CLOCK_READ
                }
                Message::Close(key) => {
                    self.close(key);
                    true
                }
            };
            if read_clock {
                self.sweep();
                self.report_peak();
            }
        }
    }

    /// Empties and takes back closed recordings' files nobody else names any
    /// more, at most every [`SWEEP_EVERY`].
    fn sweep(&mut self) {
        let now = Instant::now();
        self.swept.1 = 0;
        if now.duration_since(self.swept.0) < SWEEP_EVERY {
            return;
        }
        self.swept.0 = now;
        if let Some(spares) = self.spares.as_mut() {
            spares.reclaim(now);
        }
    }

    /// Logs a new peak of the queue, at most every [`PEAK_REPORT_EVERY`].
    fn report_peak(&mut self) {
        let peak = self.depth.peak.load(Ordering::Relaxed);
        let (reported, at) = self.peak_reported;
        if peak > reported && at.elapsed() >= PEAK_REPORT_EVERY {
            tracing::info!(
                peak,
                capacity = QUEUE_FRAMES,
                "recording writer queue: new peak depth (recordings are dropped when it reaches capacity)"
            );
            self.peak_reported = (peak, Instant::now());
        }
    }

    /// Whether a small file can be written and synced in the directory.
    fn probe(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(".probe");
        let result = File::create(&path).and_then(|mut f| {
            f.write_all(&[0u8; 4096])?;
            f.sync_all()
        });
        let _ = std::fs::remove_file(&path);
        result
    }

    fn open(&mut self, open: OpenCall) {
        let rate = match open.codec {
            Codec::G722 => 16_000,
            _ => 8_000,
        };
        let path = self.dir.join(format!("{}.wav", open.call_id));
        let mut created = self
            .spares
            .as_mut()
            .map(|spares| spares.take(&path).map(|(file, id)| (file, Some(id))));
        if let Some(Err(e)) = &created {
            if links_unsupported(e) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "the recordings' file system cannot hard-link: each recording creates its own file");
                self.spares = None;
                created = None;
            }
        }
        let created = match created {
            Some(created) => created,
            None => std::fs::create_dir_all(&self.dir)
                .and_then(|()| {
                    std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(&path)
                })
                .map(|file| (file, None)),
        };
        let ((opened, spare), failure) = match created {
            Ok((file, spare)) => ((Some(file), spare), None),
            Err(e) => (
                (None, None),
                Some(format!("creating {}: {e}", path.display())),
            ),
        };
        let mut file = CallFile {
            path,
            file: opened,
            spare,
            rate,
            aligner: Aligner::new((8_000 * ALIGN_WINDOW_MS / 1000) as usize),
            g722: Default::default(),
            written: 0,
            dropped: open.dropped,
            failure: None,
            started_at_ms: now_ms(),
            policy: open.policy,
            reply: open.reply,
        };
        if let Some(failure) = failure {
            self.fail(&mut file, failure);
        }
        self.calls.insert(open.key, file);
    }

    fn frame(&mut self, frame: &Frame) {
        let Some(file) = self.calls.get_mut(&frame.key) else {
            return;
        };
        if file.file.is_none() {
            return;
        }
        let at = u64::from(frame.position);
        if at > file.aligner.end() + u64::from(MAX_JUMP) {
            return;
        }
        let payload = &frame.payload[..usize::from(frame.len)];
        file.aligner.put(frame.channel, at, frame.codec, payload);
        let window = file.aligner.window();
        if let Err(e) = write_settled(file, &mut self.scratch, window, WRITE_AT) {
            let failure = format!("writing {}: {e}", file.path.display());
            self.fail_key(frame.key, failure);
        }
    }

    fn close(&mut self, key: u64) {
        let Some(mut file) = self.calls.remove(&key) else {
            return;
        };
        if file.failure.is_none() && file.dropped.load(Ordering::Relaxed) {
            self.fail(
                &mut file,
                "the recording writer fell behind (queue full): the recording was dropped; the call went on"
                    .into(),
            );
        }
        let mut outcome = RecordingOutcome {
            path: file.path.clone(),
            sample_rate: file.rate,
            channels: u32::from(CHANNELS),
            started_at_ms: file.started_at_ms,
            policy: file.policy,
            ..RecordingOutcome::default()
        };
        if file.failure.is_none() {
            let finished = write_settled(&mut file, &mut self.scratch, 0, 0).and_then(|()| {
                let header = wav_header(file.rate, file.written);
                match file.file.take() {
                    Some(f) => f.write_all_at(&header, 0).map(|()| f),
                    None => Err(std::io::Error::other("the file was closed")),
                }
            });
            match finished {
                Ok(written) => {
                    outcome.duration_ms = (file.written * 1000 / u64::from(file.rate)) as u32;
                    // Its recording name is what the records service acts
                    // on; the pool takes the file back once that is gone.
                    if let (Some(spares), Some(id)) = (self.spares.as_mut(), file.spare) {
                        spares.give_back(id, Instant::now());
                    }
                    // Hashed (and fsync'd) by a sealer, which replies; the
                    // sealers outlive the writer's sender, so this cannot fail
                    // while the writer runs.
                    let sync = self.durability.syncs_on_close(file.policy);
                    let _ = self.sealer.send(SealJob {
                        file: written,
                        sync,
                        outcome,
                        reply: file.reply,
                    });
                    return;
                }
                Err(e) => {
                    let failure = format!("closing {}: {e}", file.path.display());
                    self.fail(&mut file, failure);
                }
            }
        }
        if let Some(failure) = file.failure.take() {
            outcome.failure = failure;
        }
        let _ = file.reply.send(outcome);
    }

    fn fail_key(&mut self, key: u64, failure: String) {
        if let Some(mut file) = self.calls.remove(&key) {
            self.fail(&mut file, failure);
            self.calls.insert(key, file);
        }
    }

    /// Gives up a recording: logged, the partial file removed, the directory
    /// marked unwritable until a probe succeeds.
    fn fail(&mut self, file: &mut CallFile, failure: String) {
        tracing::warn!(file = %file.path.display(), %failure, "call recording failed; the call goes on");
        file.file = None;
        let _ = std::fs::remove_file(&file.path);
        if let (Some(spares), Some(id)) = (self.spares.as_mut(), file.spare.take()) {
            spares.give_back(id, Instant::now());
        }
        if !file.dropped.load(Ordering::Relaxed) {
            self.healthy.store(false, Ordering::Release);
        }
        file.dropped.store(true, Ordering::Relaxed);
        file.failure.get_or_insert(failure);
    }
}

/// Writes the units more than `window` behind the aligner's end, decoded,
/// both channels interleaved, with one `write` at the file's offset — once at
/// least `at_least` are settled, so a call's audio goes out in a few large
/// writes without a buffer of its own.
fn write_settled(
    file: &mut CallFile,
    scratch: &mut Vec<u8>,
    window: usize,
    at_least: usize,
) -> std::io::Result<()> {
    let Some(out) = file.file.as_ref() else {
        return Ok(());
    };
    let (first, second) = file.aligner.settled(window);
    let settled = first.len() + second.len();
    if settled == 0 || settled < at_least {
        return Ok(());
    }
    let per_unit = (file.rate / 8_000) as usize;
    let n = page_end(file.written, settled, per_unit, at_least);
    let (first, second) = file.aligner.settled(window + settled - n);
    scratch.clear();
    decode_slots(first, per_unit, &mut file.g722, scratch);
    decode_slots(second, per_unit, &mut file.g722, scratch);
    out.write_all_at(scratch, HEADER_BYTES + file.written * 4)?;
    file.aligner.consume(n);
    file.written += (n * per_unit) as u64;
    Ok(())
}

/// How many of `settled` units to write after `written` samples per channel
/// so that the write ends on a page boundary of the file: the kernel then
/// neither zeroes the rest of its last page nor has the next write fill it
/// (#16). All of them when that cannot be (16 kHz units are 8 bytes against
/// the header's 44) or when this is the last write (`at_least` 0).
fn page_end(written: u64, settled: usize, per_unit: usize, at_least: usize) -> usize {
    let unit_bytes = 4 * per_unit as u64;
    let past = (HEADER_BYTES + (written + (settled * per_unit) as u64) * 4) % PAGE_BYTES;
    if at_least == 0 || past % unit_bytes != 0 {
        return settled;
    }
    match settled.checked_sub((past / unit_bytes) as usize) {
        Some(n) if n > 0 => n,
        _ => settled,
    }
}

/// The 44-byte header of a 16-bit PCM WAV of two channels at `rate` with
/// `frames` samples per channel (what hound writes for this format).
fn wav_header(rate: u32, frames: u64) -> [u8; HEADER_BYTES as usize] {
    let data = u32::try_from(frames * 4).unwrap_or(u32::MAX - 36);
    let block_align = CHANNELS * 2;
    let mut header = [0u8; HEADER_BYTES as usize];
    let fields: [&[u8]; 12] = [
        b"RIFF",
        &(data + 36).to_le_bytes(),
        b"WAVEfmt ",
        &16u32.to_le_bytes(),
        &1u16.to_le_bytes(),
        &CHANNELS.to_le_bytes(),
        &rate.to_le_bytes(),
        &(rate * u32::from(block_align)).to_le_bytes(),
        &block_align.to_le_bytes(),
        &16u16.to_le_bytes(),
        b"data",
        &data.to_le_bytes(),
    ];
    let mut at = 0;
    for field in fields {
        header[at..at + field.len()].copy_from_slice(field);
        at += field.len();
    }
    header
}

/// Puts a recording thread below the calls: a writer that falls behind drops
/// a recording (counted and logged, the call goes on), while a starved media
/// thread would make every caller's warning late.
fn yield_to_calls() {
    if let Err(error) = crate::switchboard::priority::run_below_calls() {
        tracing::warn!(
            %error,
            "recording thread keeps the switchboard's priority: under full load it competes with the warnings"
        );
    }
}

/// A sealer thread: takes closed files until the writer is gone.
fn seal_files(inbox: &Mutex<Receiver<SealJob>>, healthy: &AtomicBool) {
    loop {
        let job = {
            let inbox = inbox
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match inbox.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let SealJob {
            file,
            sync,
            mut outcome,
            reply,
        } = job;
        match seal(&file, sync) {
            Ok((sha256, bytes)) => {
                outcome.sha256 = sha256;
                outcome.bytes = bytes;
            }
            Err(e) => {
                let failure = format!("closing {}: {e}", outcome.path.display());
                tracing::warn!(file = %outcome.path.display(), %failure, "call recording failed; the call goes on");
                let _ = std::fs::remove_file(&outcome.path);
                healthy.store(false, Ordering::Release);
                outcome.duration_ms = 0;
                outcome.failure = failure;
            }
        }
        let _ = reply.send(outcome);
    }
}

/// Syncs the closed file to disk if `sync`, and returns its SHA-256 and length.
fn seal(mut file: &File, sync: bool) -> std::io::Result<(String, u64)> {
    if sync {
        file.sync_all()?;
    }
    // The writer left the file's offset at its end.
    file.rewind()?;
    let (bytes, sha256) = sha256_and_length(file)?;
    Ok((sha256, bytes))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switchboard::priority::nice_of_threads;

    #[test]
    fn recording_threads_run_below_the_calls() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: getpriority takes plain integers; 0 names this thread.
        let ours = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let _recorder = Recorder::start(dir.path().to_path_buf(), Durability::SyncOnClose).unwrap();
        let expected = (ours + crate::switchboard::priority::BELOW_CALLS).min(19);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Other tests' recorders may be running too: every one must be lowered.
            let writers = nice_of_threads("self", "recording-writ");
            let sealers = nice_of_threads("self", "recording-seal");
            let all_lowered = !writers.is_empty()
                && !sealers.is_empty()
                && writers.iter().chain(&sealers).all(|&nice| nice == expected);
            if all_lowered {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "writers {writers:?}, sealers {sealers:?}, expected nice {expected}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn only_recordings_the_switchboard_keeps_are_synced_on_close() {
        let on_report = RecordAudio::OnReport.name();
        let always = RecordAudio::Always.name();
        assert!(Durability::SyncOnClose.syncs_on_close(on_report));
        assert!(Durability::SyncOnClose.syncs_on_close(always));
        assert!(Durability::KeeperSyncs.syncs_on_close(always));
        assert!(!Durability::KeeperSyncs.syncs_on_close(on_report));
    }

    #[test]
    fn queue_depth_counts_what_is_waiting_and_keeps_the_peak() {
        let depth = QueueDepth::new(3);
        for _ in 0..3 {
            assert!(depth.admit());
        }
        // Full for frames and new recordings; a close still goes in.
        assert!(!depth.admit());
        assert_eq!(depth.queued(), 4);
        for _ in 0..3 {
            depth.taken();
        }
        assert!(depth.admit());
        assert_eq!(depth.now.load(Ordering::Relaxed), 2);
        assert_eq!(depth.peak.load(Ordering::Relaxed), 4);
    }

    /// Takes the units more than `window` behind the end, decoded as an 8 kHz file.
    fn take_settled(a: &mut Aligner, window: usize) -> Vec<[i16; 2]> {
        take_settled_at(a, window, 1)
    }

    /// Takes the units more than `window` behind the end, decoded with
    /// `per_unit` samples a unit (1: 8 kHz, 2: 16 kHz).
    fn take_settled_at(a: &mut Aligner, window: usize, per_unit: usize) -> Vec<[i16; 2]> {
        let (first, second) = a.settled(window);
        let n = first.len() + second.len();
        let mut bytes = Vec::new();
        let mut g722 = Default::default();
        decode_slots(first, per_unit, &mut g722, &mut bytes);
        decode_slots(second, per_unit, &mut g722, &mut bytes);
        a.consume(n);
        bytes
            .chunks_exact(4)
            .map(|b| {
                [
                    i16::from_le_bytes([b[0], b[1]]),
                    i16::from_le_bytes([b[2], b[3]]),
                ]
            })
            .collect()
    }

    /// μ-law bytes of distinct, known values.
    fn mu(values: &[u8]) -> Vec<u8> {
        values.iter().map(|&v| 0x80 | v).collect()
    }

    /// What [`mu`]'s bytes decode to.
    fn pcm(values: &[u8]) -> Vec<i16> {
        mu(values).iter().map(|&b| Law::Mu.decode(b)).collect()
    }

    #[test]
    fn aligner_places_frames_by_position_and_fills_gaps_with_silence() {
        let mut a = Aligner::new(1);
        let (one, two) = (pcm(&[1, 2, 3, 4, 5]), pcm(&[7, 8, 9, 10]));
        a.put(Channel::ToCaller, 0, Codec::Pcmu, &mu(&[1, 2, 3, 4]));
        // The caller's frame arrives after ours but belongs at 2.
        a.put(Channel::FromCaller, 2, Codec::Pcmu, &mu(&[7, 8]));
        // A gap of two units on both channels, then channel 1 again.
        a.put(Channel::ToCaller, 6, Codec::Pcmu, &mu(&[5]));
        assert_eq!(a.end(), 7);
        let out = take_settled(&mut a, 1);
        assert_eq!(
            out,
            vec![
                [one[0], 0],
                [one[1], 0],
                [one[2], two[0]],
                [one[3], two[1]],
                [0, 0],
                [0, 0]
            ]
        );
        // Too late for what is written: only the unwritten part counts.
        a.put(Channel::FromCaller, 5, Codec::Pcmu, &mu(&[9, 10]));
        assert_eq!(take_settled(&mut a, 0), vec![[one[4], two[3]]]);
    }

    #[test]
    fn a_frame_that_straddles_the_end_fills_both_parts() {
        let mut a = Aligner::new(0);
        let (ours, theirs) = (pcm(&[1, 2, 3]), pcm(&[7, 8, 9]));
        a.put(Channel::ToCaller, 0, Codec::Pcmu, &mu(&[1, 2, 3]));
        a.put(Channel::FromCaller, 1, Codec::Pcmu, &mu(&[7, 8, 9]));
        assert_eq!(
            take_settled(&mut a, 0),
            vec![
                [ours[0], 0],
                [ours[1], theirs[0]],
                [ours[2], theirs[1]],
                [0, theirs[2]]
            ]
        );
    }

    #[test]
    fn writes_end_on_page_boundaries_when_units_fit_them() {
        // 8 kHz: 4-byte units after the 44-byte header; 2,037 of them end page 2.
        assert_eq!(
            page_end(0, 2_048, 1, WRITE_AT),
            2_048 - (44 + 2_048 * 4 - 8_192) / 4
        );
        assert_eq!(
            (HEADER_BYTES + page_end(0, 2_048, 1, WRITE_AT) as u64 * 4) % PAGE_BYTES,
            0
        );
        // Once aligned, a write of whole pages stays aligned.
        assert_eq!(page_end(1_013, 2_048, 1, WRITE_AT), 2_048);
        // 16 kHz units (8 bytes) never line up with the header: all of them.
        assert_eq!(page_end(0, 2_048, 2, WRITE_AT), 2_048);
        // The last write takes everything.
        assert_eq!(page_end(0, 2_048, 1, 0), 2_048);
    }

    #[test]
    fn each_byte_is_decoded_by_the_codec_it_came_in() {
        let mut a = Aligner::new(0);
        // The caller switches from μ-law to A-law in the middle of the window.
        a.put(Channel::FromCaller, 0, Codec::Pcmu, &[0x12, 0x34]);
        a.put(Channel::FromCaller, 2, Codec::Pcma, &[0x12, 0x34]);
        let out: Vec<i16> = take_settled(&mut a, 0).iter().map(|p| p[1]).collect();
        assert_eq!(
            out,
            vec![
                Law::Mu.decode(0x12),
                Law::Mu.decode(0x34),
                Law::A.decode(0x12),
                Law::A.decode(0x34)
            ]
        );
    }

    #[test]
    fn g722_is_decoded_in_clock_order_at_16_khz() {
        let codes: Vec<u8> = (0..160u8).map(|i| i.wrapping_mul(37)).collect();
        let mut expected = vec![0i16; 320];
        g722::Decoder::new().decode(&codes, &mut expected);
        let mut a = Aligner::new(0);
        // The second half arrives first; the bytes are decoded in clock order.
        a.put(Channel::ToCaller, 80, Codec::G722, &codes[80..]);
        a.put(Channel::ToCaller, 0, Codec::G722, &codes[..80]);
        let pairs = take_settled_at(&mut a, 0, 2);
        let got: Vec<i16> = pairs.iter().map(|p| p[0]).collect();
        assert_eq!(got, expected);
        assert!(pairs.iter().all(|p| p[1] == 0));
    }

    #[test]
    fn aligner_memory_stays_at_its_window_through_a_long_call() {
        let window = (8_000 * ALIGN_WINDOW_MS / 1000) as usize;
        let mut a = Aligner::new(window);
        let capacity = a.pending.capacity();
        let frame = [0x55u8; CHUNK];
        // Ten minutes of a call, both channels, the caller's 3 frames late,
        // written whenever WRITE_AT units are settled.
        let mut written = 0;
        for n in 0..30_000u64 {
            a.put(Channel::ToCaller, n * CHUNK as u64, Codec::Pcma, &frame);
            if n >= 3 {
                a.put(
                    Channel::FromCaller,
                    (n - 3) * CHUNK as u64,
                    Codec::Pcma,
                    &frame,
                );
            }
            let (first, second) = a.settled(a.window());
            let settled = first.len() + second.len();
            if settled >= WRITE_AT {
                a.consume(settled);
                written += settled;
            }
            assert!(a.pending.len() <= window + WRITE_AT + CHUNK);
        }
        assert_eq!(
            a.pending.capacity(),
            capacity,
            "the buffer grew past its window"
        );
        assert!(capacity * std::mem::size_of::<Slot>() <= 20 * 1024);
        assert_eq!(written + a.pending.len(), 30_000 * CHUNK);
    }

    #[test]
    fn settled_units_come_out_whole_when_the_ring_wraps() {
        let mut a = Aligner::new(0);
        let values: Vec<u8> = (1..40).collect();
        let decoded = pcm(&values);
        a.put(Channel::ToCaller, 0, Codec::Pcmu, &mu(&values[..4]));
        a.consume(3);
        // Grows past the ring's first allocation while its start is not at 0.
        a.put(Channel::ToCaller, 4, Codec::Pcmu, &mu(&values[4..]));
        let (first, second) = a.settled(2);
        let n = first.len() + second.len();
        let out: Vec<i16> = take_settled(&mut a, 2).iter().map(|p| p[0]).collect();
        assert_eq!(n, 34);
        assert_eq!(out, decoded[3..37]);
        assert_eq!(
            take_settled(&mut a, 0),
            vec![[decoded[37], 0], [decoded[38], 0]]
        );
    }

    #[test]
    fn the_header_is_hounds_for_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.wav");
        let spec = hound::WavSpec {
            channels: CHANNELS,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut wav = hound::WavWriter::create(&path, spec).unwrap();
        for sample in 0..6i16 {
            wav.write_sample(sample).unwrap();
        }
        wav.finalize().unwrap();
        let hound_bytes = std::fs::read(&path).unwrap();
        assert_eq!(hound_bytes[..44], wav_header(16_000, 3));
    }

    #[test]
    fn tap_positions_follow_our_clock_from_the_first_warning_packet() {
        let (queue, inbox) = std::sync::mpsc::channel();
        let mut tap = CallTap {
            key: 1,
            queue,
            depth: Arc::new(QueueDepth::new(16)),
            dropped: Arc::new(AtomicBool::new(false)),
            origin: None,
            caller_anchor: None,
        };
        // Before the warning nothing counts.
        tap.received(9, 500, Codec::Pcmu, &[0; 160], 1000);
        tap.sent(1000, Codec::Pcmu, &[0; 160], true);
        tap.sent(1160, Codec::Pcmu, &[0; 160], false);
        // The caller's first packet anchors at our current time; the next follows its clock.
        tap.received(9, 70_000, Codec::Pcmu, &[0; 160], 1320);
        tap.received(9, 70_160, Codec::Pcmu, &[0; 160], 1320);
        let positions: Vec<(Channel, u32)> = inbox
            .try_iter()
            .map(|m| match m {
                Message::Frame(f) => (f.channel, f.position),
                _ => panic!("only frames"),
            })
            .collect();
        assert_eq!(
            positions,
            vec![
                (Channel::ToCaller, 0),
                (Channel::ToCaller, 160),
                (Channel::FromCaller, 320),
                (Channel::FromCaller, 480),
            ]
        );
    }

    #[test]
    fn a_full_queue_drops_the_recording_not_the_caller() {
        let (queue, _inbox) = std::sync::mpsc::channel();
        let dropped = Arc::new(AtomicBool::new(false));
        let depth = Arc::new(QueueDepth::new(1));
        let mut tap = CallTap {
            key: 1,
            queue,
            depth: depth.clone(),
            dropped: dropped.clone(),
            origin: None,
            caller_anchor: None,
        };
        tap.sent(0, Codec::Pcma, &[0; 160], true);
        assert!(!dropped.load(Ordering::Relaxed));
        tap.sent(160, Codec::Pcma, &[0; 160], true);
        assert!(dropped.load(Ordering::Relaxed));
        // Counted once per call, however many frames find the queue full.
        tap.sent(320, Codec::Pcma, &[0; 160], true);
        assert_eq!(depth.dropped_recordings.load(Ordering::Relaxed), 1);
    }
}
