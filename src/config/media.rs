//! Settings of the switchboard's media that the config defines and checks:
//! the ringback cadence (`[media.ringback]`), the send path and the number of
//! media engine threads. `switchboard::media::tone` synthesises the tone from
//! the cadence.

use serde::{Deserialize, Serialize};

/// RTP frame length in ms (`switchboard::media::codec::FRAME_MS`): cadences
/// are whole frames.
const FRAME_MS: u32 = 20;
/// Upper bound on one cycle, so a typo in config cannot allocate without limit.
const MAX_CYCLE_MS: u32 = 60_000;

/// How the media engine hands its paced RTP (prompt, ringback, keys, tones)
/// to the kernel: `[media] send`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaSend {
    /// Each 1 ms tick's packets queued on an io_uring and submitted with one
    /// system call (falls back to `sendmsg`, said in the log, where io_uring
    /// cannot be set up). The default: it costs about two thirds of the
    /// CPU per packet that `sendmsg` does (BENCHMARKS.md).
    #[default]
    IoUring,
    /// One `sendmsg` system call per packet.
    Sendmsg,
}

/// Most media engine threads `[media] threads` may ask for: each thread is a
/// shard with its own epoll set, timer and io_uring, and more shards than a
/// machine has cores only take turns on them.
pub const MAX_MEDIA_THREADS: u32 = 64;

/// How many media engine threads (shards) carry the calls: `[media] threads`.
/// Each call, both of its legs, lives on one shard, chosen round-robin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaThreads {
    /// As many as the cores this process may run on
    /// (`std::thread::available_parallelism`: affinity and cgroup quota),
    /// at most [`MAX_MEDIA_THREADS`].
    Auto,
    /// This many; `Config::validate` refuses 0 and more than [`MAX_MEDIA_THREADS`].
    Count(u32),
}

impl Default for MediaThreads {
    /// One thread: the measured choice on a 2-core machine (README, `[media] threads`).
    fn default() -> Self {
        MediaThreads::Count(1)
    }
}

impl MediaThreads {
    /// The number of shard threads to start.
    pub fn resolve(self) -> usize {
        match self {
            MediaThreads::Auto => std::thread::available_parallelism()
                .map_or(1, usize::from)
                .min(MAX_MEDIA_THREADS as usize),
            MediaThreads::Count(n) => n as usize,
        }
    }

    /// Whether the count is one the engine can run (`Auto` always is).
    pub fn check(self) -> Result<(), ThreadsError> {
        match self {
            MediaThreads::Count(0) => Err(ThreadsError::Zero),
            MediaThreads::Count(n) if n > MAX_MEDIA_THREADS => Err(ThreadsError::TooMany(n)),
            _ => Ok(()),
        }
    }
}

/// Why `[media] threads` cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ThreadsError {
    /// No thread would carry any call's RTP.
    #[error("is 0, so no thread would send any call's RTP")]
    Zero,
    /// More shards than any machine this runs on has cores.
    #[error("{0} is more than {MAX_MEDIA_THREADS}")]
    TooMany(u32),
}

impl<'de> Deserialize<'de> for MediaThreads {
    /// A whole number, or the string `"auto"`.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ThreadsVisitor)
    }
}

/// Reads `[media] threads`: a number (an environment override arrives parsed
/// as one) or `"auto"`.
struct ThreadsVisitor;

impl serde::de::Visitor<'_> for ThreadsVisitor {
    type Value = MediaThreads;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "a whole number of threads (1-{MAX_MEDIA_THREADS}) without quotes, or `auto`"
        )
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<MediaThreads, E> {
        u32::try_from(n)
            .map(MediaThreads::Count)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(n), &self))
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<MediaThreads, E> {
        match u64::try_from(n) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(E::invalid_value(serde::de::Unexpected::Signed(n), &self)),
        }
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<MediaThreads, E> {
        if text == "auto" {
            Ok(MediaThreads::Auto)
        } else {
            Err(E::invalid_type(serde::de::Unexpected::Str(text), &self))
        }
    }
}

/// How ringback sounds: one tone burst followed by a pause, repeated.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
pub struct RingbackCadence {
    /// Tone frequency; national ringback plans differ (China 450 Hz, Europe 425 Hz).
    pub frequency_hz: f32,
    /// Length of each tone burst in ms (multiple of 20, one RTP frame).
    pub on_ms: u32,
    /// Pause after each burst in ms (multiple of 20; may be 0 for a steady tone).
    pub off_ms: u32,
    /// Tone level in dBm0 (≤ 0); ringback is meant to be heard but not startle.
    pub level_dbm0: f32,
}

impl Default for RingbackCadence {
    /// Chinese ringback (YD/T 1277): 450 Hz, 1 s on, 4 s off, about -10 dBm0.
    fn default() -> Self {
        RingbackCadence {
            frequency_hz: 450.0,
            on_ms: 1000,
            off_ms: 4000,
            level_dbm0: -10.0,
        }
    }
}

/// Why a configured cadence cannot be turned into a tone.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ToneError {
    /// Outside what G.711 at 8 kHz can carry (and what a phone speaker plays).
    #[error("ringback frequency_hz = {0} is outside 50–3800 Hz: set a frequency in that range (China uses 450)")]
    Frequency(f32),
    /// Not a finite level at or below 0 dBm0 (above it the sine clips), or below -60.
    #[error("ringback level_dbm0 = {0} is outside -60..=0 dBm0: use about -10")]
    Level(f32),
    /// A cadence with no tone at all would be silence, not ringback.
    #[error("ringback on_ms = 0: the tone must sound for at least one 20 ms frame")]
    NoTone,
    /// Frames are 20 ms; other lengths would be silently rounded.
    #[error("ringback {field} = {ms} is not a multiple of 20 ms: use e.g. {rounded}")]
    NotFrameMultiple {
        /// Which cadence field is wrong (`on_ms` or `off_ms`).
        field: &'static str,
        /// The configured length.
        ms: u32,
        /// The nearest usable length, suggested in the message.
        rounded: u32,
    },
    /// Keeps memory bounded.
    #[error("ringback cycle on_ms + off_ms = {0} ms is longer than 60000 ms: shorten it")]
    CycleTooLong(u64),
}

impl RingbackCadence {
    /// Checks that the cadence makes an audible, bounded ringback.
    pub fn check(&self) -> Result<(), ToneError> {
        let cadence = self;
        let frequency = cadence.frequency_hz;
        if !(50.0..=3800.0).contains(&frequency) {
            return Err(ToneError::Frequency(frequency));
        }
        if !(-60.0..=0.0).contains(&cadence.level_dbm0) {
            return Err(ToneError::Level(cadence.level_dbm0));
        }
        if cadence.on_ms == 0 {
            return Err(ToneError::NoTone);
        }
        for (field, ms) in [("on_ms", cadence.on_ms), ("off_ms", cadence.off_ms)] {
            if ms % FRAME_MS != 0 {
                let rounded = ((ms + FRAME_MS / 2) / FRAME_MS).max(1) * FRAME_MS;
                return Err(ToneError::NotFrameMultiple { field, ms, rounded });
            }
        }
        let cycle_ms = u64::from(cadence.on_ms) + u64::from(cadence.off_ms);
        if cycle_ms > u64::from(MAX_CYCLE_MS) {
            return Err(ToneError::CycleTooLong(cycle_ms));
        }
        Ok(())
    }
}
