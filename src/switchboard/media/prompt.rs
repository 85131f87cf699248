//! Announcement prompts: WAV files read once at start-up, resampled to 8 kHz
//! and encoded for both G.711 laws — and, from a file of 16 kHz or more, to
//! 16 kHz and G.722 — then shared by every call; and a line's [`Playlist`]:
//! lead-in silence, its prompts in order with silent gaps between.
//!
//! Doing all of this up front means a bad file is found by `courtline check`
//! or at start-up, never in the middle of a caller's warning, and the RTP
//! sender only copies ready-made 160-byte frames.

use std::collections::HashMap;
use std::f64::consts::PI;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::codec::{Codec, Law, FRAME_MS, SAMPLES_PER_FRAME, SAMPLE_RATE};
use super::g722;

/// Lowest file sample rate accepted; below 8 kHz a prompt would sound muffled.
pub const MIN_FILE_SAMPLE_RATE: u32 = 8000;
/// Highest file sample rate accepted; covers every studio export default.
pub const MAX_FILE_SAMPLE_RATE: u32 = 48000;
/// Longest prompt accepted, so a wrong file (a whole hearing) cannot eat memory.
pub const MAX_PROMPT_SECONDS: u32 = 300;

/// Command suggested in messages for turning any recording into a good WAV.
const CONVERT_HINT: &str = "sox <recording> -r 16000 -c 1 -b 16 <file.wav>";

/// Why a prompt file cannot be used. Each message names the file, the reason
/// and a fix, because it is read by a court administrator, not a developer.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// The configured path does not exist.
    #[error("{}: file not found: put the WAV file there, or fix the prompt's `file` in the configuration", .path.display())]
    NotFound {
        /// The configured path.
        path: PathBuf,
    },
    /// It exists but reading failed (permissions, a directory, I/O error).
    #[error("{}: cannot read the file ({source}): check that it is a regular file readable by the courtline user", .path.display())]
    Unreadable {
        /// The configured path.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// A 0-byte file, typically an interrupted copy.
    #[error("{}: the file is empty (0 bytes): copy or export the recording again", .path.display())]
    Empty {
        /// The configured path.
        path: PathBuf,
    },
    /// Some other format (MP3, M4A, text…) saved with a .wav name.
    #[error("{}: not a WAV file (RIFF/WAVE header missing): convert it with `{CONVERT_HINT}`", .path.display())]
    NotWav {
        /// The configured path.
        path: PathBuf,
    },
    /// Has a WAV header but its structure is broken (truncated, bad chunks).
    #[error("{}: damaged WAV file ({reason}): export the recording again, or rewrite it with `{CONVERT_HINT}`", .path.display())]
    Malformed {
        /// The configured path.
        path: PathBuf,
        /// What was wrong, from the WAV reader.
        reason: String,
    },
    /// A WAV encoding we do not decode (e.g. 64-bit float, ADPCM, G.711-in-WAV).
    #[error("{}: unsupported WAV encoding ({detail}); courtline reads integer PCM (8–32-bit) or 32-bit float: convert it with `{CONVERT_HINT}`", .path.display())]
    UnsupportedEncoding {
        /// The configured path.
        path: PathBuf,
        /// The encoding found.
        detail: String,
    },
    /// Sample rate outside 8000–48000 Hz.
    #[error("{}: sample rate {rate} Hz is outside 8000–48000 Hz: resample it with `{CONVERT_HINT}`", .path.display())]
    SampleRate {
        /// The configured path.
        path: PathBuf,
        /// The file's sample rate.
        rate: u32,
    },
    /// More than two channels (surround exports).
    #[error("{}: {channels} channels, but only mono or stereo is accepted: down-mix it with `{CONVERT_HINT}`", .path.display())]
    Channels {
        /// The configured path.
        path: PathBuf,
        /// The file's channel count.
        channels: u16,
    },
    /// A valid header with no audio after it; the caller would hear nothing.
    #[error("{}: the WAV file contains no audio samples: export the recording again", .path.display())]
    NoSamples {
        /// The configured path.
        path: PathBuf,
    },
    /// Silent or so quiet that nobody would hear the warning.
    #[error("{}: {reason}: the caller would hear no warning; export the recording again at speech level", .path.display())]
    Inaudible {
        /// The configured path.
        path: PathBuf,
        /// What was measured.
        reason: String,
    },
    /// Longer than [`MAX_PROMPT_SECONDS`].
    #[error("{}: {seconds} s of audio is longer than the {MAX_PROMPT_SECONDS} s allowed for a prompt: check it is the right file, or trim it with `sox <file.wav> <trimmed.wav> trim 0 60`", .path.display())]
    TooLong {
        /// The configured path.
        path: PathBuf,
        /// The file's length, rounded down.
        seconds: u32,
    },
}

/// The playlist's 16 kHz samples (silence for lead-in and gaps), if every prompt has them.
fn wideband_timeline(
    prompts: &[Prompt],
    segments: &[(usize, Segment)],
    frame_count: usize,
) -> Option<Vec<i16>> {
    let mut pcm = vec![0i16; frame_count * g722::FRAME_SAMPLES_16K];
    for &(start, segment) in segments {
        if let Segment::Prompt(p) = segment {
            let samples = prompts.get(p)?.frames.pcm16k()?;
            let at = start * g722::FRAME_SAMPLES_16K;
            pcm.get_mut(at..at + samples.len())?
                .copy_from_slice(samples);
        }
    }
    // A playlist without prompts has nothing wideband to offer.
    (!prompts.is_empty()).then_some(pcm)
}

/// Lowest file sample rate from which a prompt is also offered in G.722: below
/// it there is nothing above 4 kHz to carry, and wideband would only cost more.
pub const MIN_WIDEBAND_FILE_RATE: u32 = 16000;
/// G.722's sampling rate.
const WIDEBAND_RATE: u32 = 16000;

/// Pre-encoded 20 ms frames of one prompt for both G.711 laws and, when the
/// recording is wideband, its 16 kHz samples (G.722 is adaptive, so it is
/// encoded over a whole [`Playlist`], not per prompt). Built once, shared via Arc.
pub struct PromptFrames {
    /// 8 kHz linear samples, padded to whole frames; kept for records and tests.
    pcm: Vec<i16>,
    /// μ-law encoding of `pcm`.
    pcmu: Vec<u8>,
    /// A-law encoding of `pcm`.
    pcma: Vec<u8>,
    /// 16 kHz samples, as many frames as `pcm`; `None` for a narrowband file.
    pcm16k: Option<Vec<i16>>,
}

impl PromptFrames {
    /// Builds frames from 8 kHz samples and, if given, the same audio at
    /// 16 kHz; the last frame is padded with silence.
    pub fn from_pcm(pcm8k: &[i16], pcm16k: Option<&[i16]>) -> PromptFrames {
        let frames = pcm8k.len().div_ceil(SAMPLES_PER_FRAME);
        let mut pcm = pcm8k.to_vec();
        pcm.resize(frames * SAMPLES_PER_FRAME, 0);
        let mut pcmu = vec![0u8; pcm.len()];
        let mut pcma = vec![0u8; pcm.len()];
        Law::Mu.encode_into(&pcm, &mut pcmu);
        Law::A.encode_into(&pcm, &mut pcma);
        let pcm16k = pcm16k.map(|samples| {
            // Two 16 kHz samples per 8 kHz one: the same number of frames.
            let mut wide = samples.to_vec();
            wide.resize(frames * g722::FRAME_SAMPLES_16K, 0);
            wide
        });
        PromptFrames {
            pcm,
            pcmu,
            pcma,
            pcm16k,
        }
    }

    /// Whether the recording can be played in G.722 (it is 16 kHz or more).
    pub fn has_wideband(&self) -> bool {
        self.pcm16k.is_some()
    }

    /// Number of 20 ms frames; the prompt is over after the last one.
    pub fn frame_count(&self) -> usize {
        self.pcm.len() / SAMPLES_PER_FRAME
    }

    /// The 160 bytes of frame `index`. Callers keep `index < frame_count()`;
    /// past the end this returns a silence frame rather than panicking.
    pub fn frame(&self, codec: Codec, index: usize) -> &[u8] {
        self.get(codec, index).unwrap_or(codec.silence_frame())
    }

    /// The 160 bytes of frame `index`, or `None` past the end. G.711 only:
    /// G.722 frames are the playlist's ([`Playlist::get`]).
    pub fn get(&self, codec: Codec, index: usize) -> Option<&[u8]> {
        let bytes = match codec {
            Codec::Pcmu => &self.pcmu,
            Codec::Pcma => &self.pcma,
            Codec::G722 => return None,
        };
        let start = index.checked_mul(SAMPLES_PER_FRAME)?;
        bytes.get(start..start.checked_add(SAMPLES_PER_FRAME)?)
    }

    /// Playing time, for records ("warning played in full") and timeouts.
    pub fn duration_ms(&self) -> u32 {
        u32::try_from(self.frame_count())
            .unwrap_or(u32::MAX)
            .saturating_mul(FRAME_MS)
    }

    /// The 8 kHz samples actually played, padding of the last frame included.
    pub fn pcm8k(&self) -> &[i16] {
        &self.pcm
    }

    /// The 16 kHz samples G.722 callers hear (padding included), if wideband.
    pub fn pcm16k(&self) -> Option<&[i16]> {
        self.pcm16k.as_deref()
    }
}

impl fmt::Debug for PromptFrames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PromptFrames")
            .field("frame_count", &self.frame_count())
            .field("duration_ms", &self.duration_ms())
            .finish_non_exhaustive()
    }
}

/// A configured prompt: its id, where it came from, the file's SHA-256, and its frames.
#[derive(Clone, Debug)]
pub struct Prompt {
    /// Config key (`[prompts.<id>]`), so calls and records can name the prompt.
    pub id: String,
    /// The court's own label for this recording (`[prompts.<id>] version`), copied into records.
    pub version: String,
    /// File it was loaded from, for messages and records.
    pub path: PathBuf,
    /// Lowercase hex SHA-256 of the file bytes: the prompt version stored in every call record.
    pub sha256: String,
    /// Ready-to-send frames, shared by all calls without copying.
    pub frames: Arc<PromptFrames>,
    /// Level, clipping and timing of the recording, for `check` and start-up warnings.
    pub levels: PromptLevels,
}

impl Prompt {
    /// Reads, checks, down-mixes, resamples to 8 kHz and pre-encodes the recording
    /// (lead-in silence and gaps are the [`Playlist`]'s, not the prompt's).
    pub fn load(id: &str, version: &str, path: &Path) -> Result<Prompt, PromptError> {
        let owned_path = || path.to_path_buf();
        let bytes = std::fs::read(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => PromptError::NotFound { path: owned_path() },
            _ => PromptError::Unreadable {
                path: owned_path(),
                source,
            },
        })?;
        if bytes.is_empty() {
            return Err(PromptError::Empty { path: owned_path() });
        }
        if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
            return Err(PromptError::NotWav { path: owned_path() });
        }
        let sha256 = hex::encode(Sha256::digest(&bytes));

        let (mono, rate) = read_mono(path, &bytes)?;
        let levels = PromptLevels::measure(&mono, rate);
        if let Some(reason) = levels.inaudible() {
            return Err(PromptError::Inaudible {
                path: owned_path(),
                reason,
            });
        }
        let pcm8k = resample(&mono, rate, SAMPLE_RATE, NARROWBAND_CUTOFF_HZ);
        let pcm16k = (rate >= MIN_WIDEBAND_FILE_RATE)
            .then(|| resample(&mono, rate, WIDEBAND_RATE, WIDEBAND_CUTOFF_HZ));

        Ok(Prompt {
            id: id.to_owned(),
            version: version.to_owned(),
            path: owned_path(),
            sha256,
            frames: Arc::new(PromptFrames::from_pcm(&pcm8k, pcm16k.as_deref())),
            levels,
        })
    }
}

/// Full scale on the i16 scale the decoded samples are on.
const FULL_SCALE: f64 = 32768.0;
/// Peak below which a prompt is refused as near-silent (−40 dBFS: 1 % of full
/// scale; over a phone line, after G.711, nobody hears it).
pub const NEAR_SILENT_PEAK_DBFS: f64 = -40.0;
/// RMS below which a prompt is refused as near-silent even with a louder peak
/// (a click in a silent file).
pub const NEAR_SILENT_RMS_DBFS: f64 = -50.0;
/// RMS below which a prompt is too quiet to be understood on a phone (speech
/// is normally mastered around −20 dBFS RMS; the shipped prompts are −22).
pub const LOW_RMS_DBFS: f64 = -35.0;
/// Level from which a clipped run counts: a flat top this loud is a clip,
/// wherever the limiter sat (−1 dBFS).
const CLIP_LEVEL_DBFS: f64 = -1.0;
/// Identical consecutive samples that make a flat top (a clip); fewer happen naturally.
const CLIP_RUN: usize = 3;
/// A prompt shorter than this cannot carry the three-rules warning (it takes 10 s or more).
pub const SHORT_PROMPT_MS: u32 = 2000;
/// The caller must hear at least this much silence before the first sound, lead-in
/// included: phones that open their audio late would cut the first syllable.
pub const MIN_QUIET_BEFORE_SOUND_MS: u32 = 100;
/// Level of a 10 ms block from which it counts as sound (speech onset).
const SOUND_ONSET_DBFS: f64 = -45.0;
/// Block length for the onset search.
const ONSET_BLOCK_MS: u32 = 10;

/// Level of an amplitude on the i16 scale in dBFS (a full-scale square wave
/// is 0 dBFS RMS, a full-scale sine −3); silence is −∞.
fn dbfs(amplitude: f64) -> f64 {
    20.0 * (amplitude / FULL_SCALE).log10()
}

/// How loud and how long a recording is, measured on its decoded mono mix at
/// the file's own rate (before resampling, so clips are seen as recorded).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromptLevels {
    /// The file's sample rate in Hz, before any resampling (what a codec can carry depends on it).
    pub sample_rate: u32,
    /// Playing time of the recording.
    pub duration_ms: u32,
    /// Largest sample magnitude, in dBFS (−∞ for digital silence).
    pub peak_dbfs: f64,
    /// RMS over the whole recording, pauses included, in dBFS.
    pub rms_dbfs: f64,
    /// Samples beyond full scale or in flat runs of at least 3 at −1 dBFS or louder.
    pub clipped_samples: usize,
    /// Time before the first 10 ms block at −45 dBFS RMS or louder (the whole
    /// duration when there is none).
    pub quiet_start_ms: u32,
    /// Time after the last such block (the whole duration when there is none):
    /// a long tail delays the operator for nothing.
    pub quiet_end_ms: u32,
}

impl PromptLevels {
    /// Measures `samples` (i16 scale) recorded at `rate` Hz.
    pub fn measure(samples: &[f32], rate: u32) -> PromptLevels {
        let rate = rate.max(1);
        let ms =
            |count: usize| u32::try_from(count as u64 * 1000 / u64::from(rate)).unwrap_or(u32::MAX);
        let peak = samples
            .iter()
            .fold(0.0f64, |m, &s| m.max(f64::from(s).abs()));
        let energy: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
        let rms = (energy / samples.len().max(1) as f64).sqrt();
        let clip_level = FULL_SCALE * 10f64.powf(CLIP_LEVEL_DBFS / 20.0);
        let mut clipped = 0;
        let mut run_start = 0;
        for i in 1..=samples.len() {
            if i < samples.len() && samples[i] == samples[run_start] {
                continue;
            }
            let value = f64::from(samples[run_start]).abs();
            let run = i - run_start;
            if value > FULL_SCALE || (run >= CLIP_RUN && value >= clip_level) {
                clipped += run;
            }
            run_start = i;
        }
        let block = (rate * ONSET_BLOCK_MS / 1000).max(1) as usize;
        let is_sound = |chunk: &[f32]| {
            let energy: f64 = chunk.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
            dbfs((energy / chunk.len() as f64).sqrt()) >= SOUND_ONSET_DBFS
        };
        let onset = samples
            .chunks(block)
            .position(is_sound)
            .map_or(samples.len(), |blocks| blocks * block);
        let end_of_sound = samples
            .chunks(block)
            .rposition(is_sound)
            .map_or(0, |blocks| ((blocks + 1) * block).min(samples.len()));
        PromptLevels {
            sample_rate: rate,
            duration_ms: ms(samples.len()),
            peak_dbfs: dbfs(peak),
            rms_dbfs: dbfs(rms),
            clipped_samples: clipped,
            quiet_end_ms: ms(samples.len() - end_of_sound),
            quiet_start_ms: ms(onset),
        }
    }

    /// Why a caller could not hear this recording at all, if so: courtline refuses it.
    pub fn inaudible(&self) -> Option<String> {
        if self.peak_dbfs == f64::NEG_INFINITY {
            return Some("it is silent (every sample is 0)".into());
        }
        if self.peak_dbfs < NEAR_SILENT_PEAK_DBFS || self.rms_dbfs < NEAR_SILENT_RMS_DBFS {
            return Some(format!(
                "it is near-silent (peak {:.1} dBFS, RMS {:.1} dBFS; at least {NEAR_SILENT_PEAK_DBFS} dBFS peak and {NEAR_SILENT_RMS_DBFS} dBFS RMS are needed, about −20 dBFS RMS is normal for speech)",
                self.peak_dbfs, self.rms_dbfs
            ));
        }
        None
    }

    /// What is doubtful about the recording (played anyway; `check --strict` fails on it).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.clipped_samples > 0 {
            warnings.push(format!(
                "{} clipped samples (flat tops at full scale): it will sound distorted; export it again at a lower level, e.g. `sox <in.wav> <out.wav> gain -n -3`",
                self.clipped_samples
            ));
        }
        if self.rms_dbfs < LOW_RMS_DBFS {
            warnings.push(format!(
                "very low level (RMS {:.1} dBFS, below {LOW_RMS_DBFS} dBFS): callers will strain to hear it; normalise it, e.g. `sox <in.wav> <out.wav> gain -n -3`",
                self.rms_dbfs
            ));
        }
        if self.duration_ms < SHORT_PROMPT_MS {
            warnings.push(format!(
                "only {:.1} s long (under {:.0} s): too short to be the three-rules warning; check it is the right file",
                f64::from(self.duration_ms) / 1000.0,
                f64::from(SHORT_PROMPT_MS) / 1000.0
            ));
        }
        warnings
    }

    /// Whether a caller hears sound within [`MIN_QUIET_BEFORE_SOUND_MS`] of the
    /// stream's start when this recording follows `lead_in_ms` of silence.
    pub fn sound_too_soon(&self, lead_in_ms: u32) -> bool {
        lead_in_ms.saturating_add(self.quiet_start_ms) < MIN_QUIET_BEFORE_SOUND_MS
    }

    /// The warning for a recording that starts with speech when `lead_in_ms` of
    /// silence go before it: the first syllable is at risk of being clipped
    /// (cut by a phone that opens its audio late, or already in the export).
    pub fn speech_at_start(&self, lead_in_ms: u32) -> Option<String> {
        self.sound_too_soon(lead_in_ms).then(|| {
            format!(
                "starts with speech: sound {} ms into the file, after {lead_in_ms} ms of lead-in, under {MIN_QUIET_BEFORE_SOUND_MS} ms: the first syllable risks being clipped; check the export did not cut it, and keep [media] leading_silence_ms at 200 (or add silence: `sox <in.wav> <out.wav> pad 0.2 0`)",
                self.quiet_start_ms
            )
        })
    }
}

/// One stretch of a playlist.
#[derive(Debug, Clone, Copy)]
enum Segment {
    /// Silent frames (the lead-in, or the gap between two prompts).
    Silence,
    /// Every frame of prompt number `index` of the playlist.
    Prompt(usize),
}

/// Each line's playlists by line number, loaded and pre-encoded at start-up.
#[derive(Debug, Clone, Default)]
pub struct LinePlaylists {
    /// What callers hear while the line is staffed (`[[lines]] prompt`).
    pub in_hours: HashMap<String, Arc<Playlist>>,
    /// What they hear outside its office hours (`[lines.after_hours] prompt`).
    pub after_hours: HashMap<String, Arc<Playlist>>,
    /// What an answered caller hears when nobody answers (`[[lines]] failover_prompt`).
    pub failover: HashMap<String, Arc<Playlist>>,
}

/// What a line plays before anyone is called: lead-in silence, then its
/// prompts in order with a silent gap between each two. Built once per line at
/// start-up and shared by its calls; the engine walks it frame by frame.
#[derive(Debug)]
pub struct Playlist {
    /// The prompts, in playing order (the same prompt may appear twice).
    prompts: Vec<Prompt>,
    /// What plays, in order, with the frame each stretch starts at.
    segments: Vec<(usize, Segment)>,
    /// Frames of the whole playlist.
    frame_count: usize,
    /// The whole playlist in G.722, lead-in and gaps included, encoded in one
    /// run: an ADPCM decoder only tracks the encoder it started with, so
    /// prompts encoded apart would play distorted after a gap. `None` unless
    /// every prompt is wideband.
    g722: Option<Vec<u8>>,
}

impl Playlist {
    /// `leading_silence_ms` of silence, then `prompts` with `gap_ms` of silence
    /// between each two. Silences are rounded up to whole 20 ms frames.
    pub fn new(prompts: Vec<Prompt>, leading_silence_ms: u32, gap_ms: u32) -> Playlist {
        let silent_frames = |ms: u32| ms.div_ceil(FRAME_MS) as usize;
        let mut segments = Vec::new();
        let mut start = 0;
        let mut push = |segment: Segment, frames: usize| {
            if frames > 0 {
                segments.push((start, segment));
                start += frames;
            }
        };
        let lead_in = silent_frames(leading_silence_ms);
        push(Segment::Silence, lead_in);
        for (index, prompt) in prompts.iter().enumerate() {
            if index > 0 {
                let gap = silent_frames(gap_ms);
                push(Segment::Silence, gap);
            }
            push(Segment::Prompt(index), prompt.frames.frame_count());
        }
        let g722 = wideband_timeline(&prompts, &segments, start).map(|pcm| {
            let mut codes = vec![0u8; start * g722::FRAME_BYTES];
            g722::Encoder::new().encode(&pcm, &mut codes);
            codes
        });
        Playlist {
            prompts,
            segments,
            frame_count: start,
            g722,
        }
    }

    /// The prompts in playing order.
    pub fn prompts(&self) -> &[Prompt] {
        &self.prompts
    }

    /// Number of 20 ms frames; the playlist is over after the last one.
    pub fn frame_count(&self) -> usize {
        self.frame_count
    }

    /// Frames of silence before the first prompt.
    pub fn lead_in_frames(&self) -> usize {
        self.segments
            .iter()
            .find(|(_, segment)| matches!(segment, Segment::Prompt(_)))
            .map_or(self.frame_count, |(start, _)| *start)
    }

    /// Playing time including lead-in and gaps (the record's `prompt_length_ms`).
    pub fn duration_ms(&self) -> u32 {
        u32::try_from(self.frame_count)
            .unwrap_or(u32::MAX)
            .saturating_mul(FRAME_MS)
    }

    /// The 160 bytes of frame `index`, or `None` past the end (or in G.722
    /// when the playlist is not wideband).
    pub fn get(&self, codec: Codec, index: usize) -> Option<&[u8]> {
        if index >= self.frame_count {
            return None;
        }
        if codec == Codec::G722 {
            let start = index * g722::FRAME_BYTES;
            return self.g722.as_ref()?.get(start..start + g722::FRAME_BYTES);
        }
        // The last stretch starting at or before `index`; playlists have a handful.
        let at = self.segments.partition_point(|(start, _)| *start <= index);
        let (start, segment) = *self.segments.get(at.checked_sub(1)?)?;
        match segment {
            Segment::Silence => Some(codec.silence_frame()),
            Segment::Prompt(p) => self.prompts.get(p)?.frames.get(codec, index - start),
        }
    }

    /// The 160 bytes of frame `index`; past the end a silence frame rather than a panic.
    pub fn frame(&self, codec: Codec, index: usize) -> &[u8] {
        self.get(codec, index).unwrap_or(codec.silence_frame())
    }

    /// Whether every frame exists in `codec`: always for G.711, for G.722
    /// only when every prompt was recorded at 16 kHz or more (the line offers
    /// G.722 to callers only then).
    pub fn supports(&self, codec: Codec) -> bool {
        codec != Codec::G722 || self.g722.is_some()
    }

    /// How many ms of each prompt were sent when `ms_sent` ms of the playlist
    /// (lead-in and gaps included) had gone out, in playing order.
    pub fn ms_sent_per_prompt(&self, ms_sent: u32) -> Vec<u32> {
        let frames_sent = (ms_sent / FRAME_MS) as usize;
        self.segments
            .iter()
            .filter_map(|&(start, segment)| match segment {
                Segment::Prompt(p) => {
                    let frames = self.prompts.get(p)?.frames.frame_count();
                    let sent = frames_sent.saturating_sub(start).min(frames);
                    Some(
                        u32::try_from(sent)
                            .unwrap_or(u32::MAX)
                            .saturating_mul(FRAME_MS),
                    )
                }
                Segment::Silence => None,
            })
            .collect()
    }
}

/// Decodes the WAV bytes to mono samples on the i16 scale (as f32, which holds
/// 24 bits exactly) and returns them with the file's sample rate.
fn read_mono(path: &Path, bytes: &[u8]) -> Result<(Vec<f32>, u32), PromptError> {
    let owned_path = || path.to_path_buf();
    let malformed = |error: hound::Error| match error {
        hound::Error::Unsupported => PromptError::UnsupportedEncoding {
            path: owned_path(),
            detail: "not PCM or IEEE float".to_owned(),
        },
        hound::Error::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            PromptError::Malformed {
                path: owned_path(),
                reason: "the file ends before its audio data does".to_owned(),
            }
        }
        other => PromptError::Malformed {
            path: owned_path(),
            reason: other.to_string(),
        },
    };

    let mut reader = hound::WavReader::new(io::Cursor::new(bytes)).map_err(malformed)?;
    let spec = reader.spec();
    if spec.channels > 2 {
        return Err(PromptError::Channels {
            path: owned_path(),
            channels: spec.channels,
        });
    }
    if !(MIN_FILE_SAMPLE_RATE..=MAX_FILE_SAMPLE_RATE).contains(&spec.sample_rate) {
        return Err(PromptError::SampleRate {
            path: owned_path(),
            rate: spec.sample_rate,
        });
    }
    let supported = match spec.sample_format {
        hound::SampleFormat::Int => (1..=32).contains(&spec.bits_per_sample),
        hound::SampleFormat::Float => spec.bits_per_sample == 32,
    };
    if !supported {
        return Err(PromptError::UnsupportedEncoding {
            path: owned_path(),
            detail: format!("{:?} {}-bit", spec.sample_format, spec.bits_per_sample),
        });
    }
    let frames = reader.duration();
    if frames == 0 {
        return Err(PromptError::NoSamples { path: owned_path() });
    }
    if frames / spec.sample_rate > MAX_PROMPT_SECONDS {
        return Err(PromptError::TooLong {
            path: owned_path(),
            seconds: frames / spec.sample_rate,
        });
    }

    let channels = usize::from(spec.channels);
    // Scale to the i16 range and average the channels in one step.
    let mut mono = Vec::with_capacity(frames as usize);
    let mut push_interleaved = |samples: &mut dyn Iterator<Item = Result<f32, hound::Error>>,
                                scale: f32|
     -> Result<(), PromptError> {
        let (mut sum, mut in_frame) = (0.0f32, 0usize);
        for sample in samples {
            sum += sample.map_err(malformed)?;
            in_frame += 1;
            if in_frame == channels {
                mono.push(sum * scale / channels as f32);
                (sum, in_frame) = (0.0, 0);
            }
        }
        Ok(())
    };
    match spec.sample_format {
        hound::SampleFormat::Int => {
            let scale = 32768.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            push_interleaved(
                &mut reader.samples::<i32>().map(|s| s.map(|v| v as f32)),
                scale,
            )?;
        }
        hound::SampleFormat::Float => {
            push_interleaved(&mut reader.samples::<f32>(), 32768.0)?;
        }
    }
    if mono.is_empty() {
        return Err(PromptError::NoSamples { path: owned_path() });
    }
    Ok((mono, spec.sample_rate))
}

/// Low-pass edge (−6 dB point) of the resampling filter to 8 kHz: just above
/// the 3.4 kHz telephone band, and low enough that the filter is well into its
/// stop band by 4 kHz, the 8 kHz Nyquist limit, so nothing aliases audibly.
const NARROWBAND_CUTOFF_HZ: f64 = 3600.0;
/// The same for 16 kHz (G.722): above G.722's 7 kHz band, stop band by 8 kHz.
const WIDEBAND_CUTOFF_HZ: f64 = 7200.0;
/// Filter half-length in output sample periods (4 ms at 8 kHz, 2 ms at 16 kHz);
/// sets the transition width (about ±270 Hz around the cutoff at 8 kHz, ±540 Hz at 16 kHz).
const HALF_WIDTH: usize = 32;
/// Kaiser window shape; 7 gives roughly 70 dB of stop-band attenuation.
const KAISER_BETA: f64 = 7.0;
/// Kernel table resolution per output sample period; linear interpolation
/// between entries keeps the error far below 16-bit quantisation.
const TABLE_STEPS: usize = 512;

/// Windowed-sinc low-pass kernel sampled on a fine grid, so a tap at any
/// fractional distance costs one lookup and one interpolation.
struct LowPassKernel {
    /// h(u) at u = i / TABLE_STEPS output periods, i = 0..=HALF_WIDTH·TABLE_STEPS (+1 guard).
    table: Vec<f64>,
}

impl LowPassKernel {
    fn new(cutoff_hz: f64, output_rate: u32) -> LowPassKernel {
        let cutoff = cutoff_hz / f64::from(output_rate); // cycles per output sample
        let window_norm = bessel_i0(KAISER_BETA);
        let entries = HALF_WIDTH * TABLE_STEPS + 2;
        let table = (0..entries)
            .map(|i| {
                let u = i as f64 / TABLE_STEPS as f64;
                let ratio = u / HALF_WIDTH as f64;
                if ratio >= 1.0 {
                    return 0.0;
                }
                let x = 2.0 * cutoff * u;
                let sinc = if x == 0.0 {
                    1.0
                } else {
                    (PI * x).sin() / (PI * x)
                };
                let window = bessel_i0(KAISER_BETA * (1.0 - ratio * ratio).sqrt()) / window_norm;
                2.0 * cutoff * sinc * window
            })
            .collect();
        LowPassKernel { table }
    }

    /// Kernel value at distance `u` (in output sample periods, ≥ 0).
    fn at(&self, u: f64) -> f64 {
        let position = u * TABLE_STEPS as f64;
        let index = position as usize;
        match (self.table.get(index), self.table.get(index + 1)) {
            (Some(&a), Some(&b)) => a + (b - a) * (position - index as f64),
            _ => 0.0,
        }
    }
}

/// Modified Bessel function I0 by its power series, for the Kaiser window.
fn bessel_i0(x: f64) -> f64 {
    let half_squared = x * x / 4.0;
    let (mut sum, mut term, mut k) = (1.0, 1.0, 1.0);
    while term > sum * 1e-12 {
        term *= half_squared / (k * k);
        sum += term;
        k += 1.0;
    }
    sum
}

fn to_i16(value: f64) -> i16 {
    value
        .round()
        .clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
}

/// Band-limited resampling to `output_rate` (8 or 16 kHz, never above `rate`):
/// each output sample is the input convolved with the low-pass kernel centred
/// on the output instant (which falls between input samples for ratios like
/// 44100/8000). Input already at `output_rate` is passed through.
fn resample(input: &[f32], rate: u32, output_rate: u32, cutoff_hz: f64) -> Vec<i16> {
    if rate == output_rate {
        return input.iter().map(|&s| to_i16(f64::from(s))).collect();
    }
    let kernel = LowPassKernel::new(cutoff_hz, output_rate);
    let ratio = f64::from(rate) / f64::from(output_rate); // input samples per output sample
    let inverse_ratio = 1.0 / ratio;
    let reach = HALF_WIDTH as f64 * ratio; // kernel half-length in input samples
    let last_input = input.len() as f64 - 1.0;
    let output_len = (input.len() as u64 * u64::from(output_rate)).div_ceil(u64::from(rate));

    (0..output_len)
        .map(|n| {
            // Exact rational position n·rate/output_rate, split to keep precision on long files.
            let numerator = n * u64::from(rate);
            let centre = (numerator / u64::from(output_rate)) as f64
                + (numerator % u64::from(output_rate)) as f64 / f64::from(output_rate);
            let first = (centre - reach).ceil().max(0.0) as usize;
            let last = (centre + reach).floor().min(last_input) as usize;
            let sum: f64 = input[first..=last]
                .iter()
                .enumerate()
                .map(|(offset, &sample)| {
                    let distance = ((first + offset) as f64 - centre).abs() * inverse_ratio;
                    f64::from(sample) * kernel.at(distance)
                })
                .sum();
            // Input taps are 1/ratio output periods apart: scale for unity DC gain.
            to_i16(sum * inverse_ratio)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switchboard::media::tone::tone_amplitude;
    use std::f64::consts::TAU;

    #[derive(Clone, Copy, Debug)]
    enum Format {
        Int8,
        Int16,
        Int24,
        Float32,
    }

    /// Writes a WAV whose channel `c` at frame `n` is `signal(n, c)` in [-1, 1].
    fn write_wav(
        dir: &Path,
        name: &str,
        rate: u32,
        channels: u16,
        format: Format,
        frames: usize,
        signal: impl Fn(usize, u16) -> f64,
    ) -> PathBuf {
        let (bits, sample_format) = match format {
            Format::Int8 => (8, hound::SampleFormat::Int),
            Format::Int16 => (16, hound::SampleFormat::Int),
            Format::Int24 => (24, hound::SampleFormat::Int),
            Format::Float32 => (32, hound::SampleFormat::Float),
        };
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format,
        };
        let path = dir.join(name);
        let mut writer = hound::WavWriter::create(&path, spec).unwrap();
        for n in 0..frames {
            for c in 0..channels {
                let value = signal(n, c);
                match format {
                    Format::Float32 => writer.write_sample(value as f32).unwrap(),
                    _ => {
                        let full_scale = (1i64 << (bits - 1)) as f64;
                        let int = (value * full_scale).round().min(full_scale - 1.0) as i32;
                        writer.write_sample(int).unwrap();
                    }
                }
            }
        }
        writer.finalize().unwrap();
        path
    }

    fn sine(frequency: f64, rate: u32, amplitude: f64) -> impl Fn(usize, u16) -> f64 {
        move |n, _| amplitude * (TAU * frequency * n as f64 / f64::from(rate)).sin()
    }

    fn middle(pcm: &[i16], from: usize, len: usize) -> Vec<f64> {
        pcm[from..from + len]
            .iter()
            .map(|&s| f64::from(s))
            .collect()
    }

    fn zero_crossings(samples: &[f64]) -> usize {
        samples
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count()
    }

    #[test]
    fn one_khz_sine_at_every_rate_format_and_layout_comes_out_at_8k() {
        let dir = tempfile::tempdir().unwrap();
        for rate in [8000, 16000, 22050, 44100, 48000] {
            for format in [Format::Int16, Format::Int24, Format::Float32] {
                for channels in [1u16, 2] {
                    let name = format!("sine_{rate}_{format:?}_{channels}.wav");
                    // Right channel at half level: the mono mix is then 0.75 of the left.
                    let left = sine(1000.0, rate, 0.5);
                    let path = write_wav(
                        dir.path(),
                        &name,
                        rate,
                        channels,
                        format,
                        rate as usize,
                        |n, c| {
                            if c == 0 {
                                left(n, c)
                            } else {
                                0.5 * left(n, c)
                            }
                        },
                    );
                    let prompt = Prompt::load("t", "", &path).unwrap();
                    let frames = &prompt.frames;
                    let context = format!("{name}: {frames:?}");
                    assert!((49..=51).contains(&frames.frame_count()), "{context}");

                    let expected = if channels == 1 { 16384.0 } else { 12288.0 };
                    // 6400 samples = 800 whole cycles, away from the edges.
                    let samples = middle(frames.pcm8k(), 800, 6400);
                    let amplitude = tone_amplitude(&samples, 1000.0, 8000.0);
                    assert!(
                        (amplitude - expected).abs() < expected * 0.02,
                        "{context}: {amplitude}"
                    );
                    let crossings = zero_crossings(&samples);
                    assert!((1598..=1602).contains(&crossings), "{context}: {crossings}");
                    for other in [500.0, 2000.0, 3000.0] {
                        let leak = tone_amplitude(&samples, other, 8000.0);
                        assert!(leak < expected * 0.01, "{context}: {other} Hz {leak}");
                    }
                }
            }
        }
    }

    #[test]
    fn tones_above_4khz_are_filtered_out_not_aliased() {
        let dir = tempfile::tempdir().unwrap();
        for (rate, frequency) in [
            (48000, 3950.0),
            (48000, 6000.0),
            (44100, 4200.0),
            (16000, 5000.0),
        ] {
            let name = format!("high_{rate}_{frequency}.wav");
            let path = write_wav(
                dir.path(),
                &name,
                rate,
                1,
                Format::Int16,
                rate as usize,
                sine(frequency, rate, 0.5),
            );
            let prompt = Prompt::load("t", "", &path).unwrap();
            let samples = middle(prompt.frames.pcm8k(), 800, 6400);
            let peak = samples.iter().fold(0.0f64, |m, s| m.max(s.abs()));
            // At least 60 dB below the 16384 input (measured: 70 dB or more).
            assert!(peak < 16.0, "{name}: peak {peak}");
        }
    }

    #[test]
    fn passband_is_flat_across_the_telephone_band() {
        let dir = tempfile::tempdir().unwrap();
        for frequency in [300.0, 1000.0, 2000.0, 3000.0] {
            let path = write_wav(
                dir.path(),
                "band.wav",
                44100,
                1,
                Format::Int16,
                44100,
                sine(frequency, 44100, 0.5),
            );
            let prompt = Prompt::load("t", "", &path).unwrap();
            let samples = middle(prompt.frames.pcm8k(), 800, 6400);
            let amplitude = tone_amplitude(&samples, frequency, 8000.0);
            assert!(
                (amplitude - 16384.0).abs() < 16384.0 * 0.03,
                "{frequency} Hz: {amplitude}"
            );
        }
    }

    #[test]
    fn eight_bit_files_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_wav(
            dir.path(),
            "u8.wav",
            8000,
            1,
            Format::Int8,
            8000,
            sine(1000.0, 8000, 0.5),
        );
        let prompt = Prompt::load("t", "", &path).unwrap();
        let samples = middle(prompt.frames.pcm8k(), 800, 6400);
        let amplitude = tone_amplitude(&samples, 1000.0, 8000.0);
        assert!((amplitude - 16384.0).abs() < 16384.0 * 0.03, "{amplitude}");
    }

    /// A prompt whose every frame differs from silence and from the others: 8 kHz ramps.
    fn ramp_prompt(dir: &Path, id: &str, frames: usize, base: f64) -> Prompt {
        let path = write_wav(
            dir,
            &format!("{id}.wav"),
            8000,
            1,
            Format::Int16,
            frames * SAMPLES_PER_FRAME,
            move |n, _| base + n as f64 / 100_000.0,
        );
        Prompt::load(id, "v1", &path).unwrap()
    }

    #[test]
    fn playlist_is_lead_in_then_prompts_with_gaps_between() {
        let dir = tempfile::tempdir().unwrap();
        let a = ramp_prompt(dir.path(), "a", 3, 0.1);
        let b = ramp_prompt(dir.path(), "b", 2, -0.3);
        // 100 ms lead-in (5 frames), 50 ms gap rounded up to 3 frames.
        let playlist = Playlist::new(vec![a.clone(), b.clone()], 100, 50);
        assert_eq!(playlist.frame_count(), 5 + 3 + 3 + 2);
        assert_eq!(playlist.duration_ms(), 13 * 20);
        assert_eq!(playlist.prompts().len(), 2);
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let silent = |i: usize| playlist.frame(codec, i) == codec.silence_frame();
            assert!((0..5).all(silent), "lead-in");
            for i in 0..3 {
                assert_eq!(playlist.frame(codec, 5 + i), a.frames.frame(codec, i));
                assert!(!silent(5 + i));
            }
            assert!((8..11).all(silent), "gap");
            for i in 0..2 {
                assert_eq!(playlist.frame(codec, 11 + i), b.frames.frame(codec, i));
            }
            assert_eq!(playlist.get(codec, 13), None);
            assert!(
                silent(13) && silent(usize::MAX),
                "past the end: silence, no panic"
            );
        }
    }

    #[test]
    fn playlist_reports_how_much_of_each_prompt_was_sent() {
        let dir = tempfile::tempdir().unwrap();
        let a = ramp_prompt(dir.path(), "a", 3, 0.1);
        let b = ramp_prompt(dir.path(), "b", 2, -0.3);
        let playlist = Playlist::new(vec![a, b], 100, 60);
        // Lead-in 0..100 ms, a 100..160, gap 160..220, b 220..260.
        assert_eq!(playlist.ms_sent_per_prompt(0), [0, 0]);
        assert_eq!(playlist.ms_sent_per_prompt(100), [0, 0]);
        assert_eq!(playlist.ms_sent_per_prompt(140), [40, 0]);
        assert_eq!(playlist.ms_sent_per_prompt(200), [60, 0]);
        assert_eq!(playlist.ms_sent_per_prompt(240), [60, 20]);
        assert_eq!(playlist.ms_sent_per_prompt(260), [60, 40]);
        assert_eq!(playlist.ms_sent_per_prompt(u32::MAX), [60, 40]);
    }

    #[test]
    fn single_prompt_without_lead_in_is_the_prompt_itself() {
        let dir = tempfile::tempdir().unwrap();
        let a = ramp_prompt(dir.path(), "a", 4, 0.2);
        let playlist = Playlist::new(vec![a.clone()], 0, 500);
        assert_eq!(playlist.frame_count(), a.frames.frame_count());
        assert_eq!(playlist.duration_ms(), a.frames.duration_ms());
        for i in 0..4 {
            assert_eq!(
                playlist.frame(Codec::Pcmu, i),
                a.frames.frame(Codec::Pcmu, i)
            );
        }
        assert_eq!(a.version, "v1");
    }

    /// Decodes a playlist's G.722 frames as a phone would: one decoder from the start.
    fn decode_g722(playlist: &Playlist) -> Vec<i16> {
        let codes: Vec<u8> = (0..playlist.frame_count())
            .flat_map(|i| playlist.frame(Codec::G722, i).to_vec())
            .collect();
        let mut decoded = vec![0i16; codes.len() * 2];
        g722::Decoder::new().decode(&codes, &mut decoded);
        decoded
    }

    #[test]
    fn only_playlists_of_wideband_files_get_g722_frames() {
        let dir = tempfile::tempdir().unwrap();
        let mut loaded = Vec::new();
        for (rate, wideband) in [(8000, false), (11025, false), (16000, true), (44100, true)] {
            let path = write_wav(
                dir.path(),
                &format!("r{rate}.wav"),
                rate,
                1,
                Format::Int16,
                rate as usize / 2,
                sine(1000.0, rate, 0.3),
            );
            let prompt = Prompt::load("t", "", &path).unwrap();
            let frames = &prompt.frames;
            assert_eq!(frames.has_wideband(), wideband, "{rate} Hz");
            assert_eq!(frames.get(Codec::G722, 0), None, "G.722 is the playlist's");
            let playlist = Playlist::new(vec![prompt.clone()], 100, 0);
            assert_eq!(playlist.supports(Codec::G722), wideband);
            assert!(playlist.supports(Codec::Pcma) && playlist.supports(Codec::Pcmu));
            assert_eq!(playlist.get(Codec::G722, 0).is_some(), wideband);
            if wideband {
                assert_eq!(frames.pcm16k().unwrap().len(), 2 * frames.pcm8k().len());
                let last = playlist.frame_count() - 1;
                assert!(playlist.get(Codec::G722, last).is_some());
                assert_eq!(playlist.get(Codec::G722, last + 1), None);
            }
            loaded.push(prompt);
        }
        // One narrowband prompt makes the whole playlist G.711 only.
        let mixed = Playlist::new(vec![loaded[2].clone(), loaded[0].clone()], 0, 20);
        assert!(!mixed.supports(Codec::G722));
        let wide = Playlist::new(vec![loaded[2].clone(), loaded[3].clone()], 0, 20);
        assert!(wide.supports(Codec::G722));
    }

    #[test]
    fn g722_playlist_decodes_to_the_16_khz_recordings_through_lead_in_and_gap() {
        let dir = tempfile::tempdir().unwrap();
        // 48 kHz source: resampled to 16 kHz, a 6 kHz tone stays (it is cut for G.711).
        let path = write_wav(
            dir.path(),
            "w.wav",
            48000,
            1,
            Format::Int16,
            48000,
            |n, _| {
                0.25 * (TAU * 700.0 * n as f64 / 48000.0).sin()
                    + 0.25 * (TAU * 6000.0 * n as f64 / 48000.0).sin()
            },
        );
        let prompt = Prompt::load("w", "", &path).unwrap();
        let wide = prompt.frames.pcm16k().unwrap().to_vec();
        // Lead-in 200 ms, the prompt, a 400 ms gap, the prompt again.
        let playlist = Playlist::new(vec![prompt.clone(), prompt.clone()], 200, 400);
        let decoded = decode_g722(&playlist);
        let as_f64 = |s: &[i16]| s.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>();
        let source = as_f64(&wide[1600..14400]);
        // Each time the prompt plays (at 0.2 s and at 1.6 s), both tones come out.
        for offset in [3200, 3200 + 16000 + 6400] {
            let heard = as_f64(&decoded[offset + 1600..offset + 14400]);
            for frequency in [700.0, 6000.0] {
                let want = tone_amplitude(&source, frequency, 16000.0);
                let got = tone_amplitude(&heard, frequency, 16000.0);
                assert!(
                    (want - 8192.0).abs() < 8192.0 * 0.03,
                    "{frequency} Hz resampled: {want}"
                );
                assert!(
                    (got - want).abs() < want * 0.1,
                    "{frequency} Hz at {offset}: {got} vs {want}"
                );
            }
        }
        let gap_peak = decoded[3200 + 16000 + 800..3200 + 16000 + 6400]
            .iter()
            .map(|s| s.unsigned_abs())
            .max();
        assert!(gap_peak < Some(100), "the gap is silent: {gap_peak:?}");
        let narrow = as_f64(&prompt.frames.pcm8k()[800..7200]);
        assert!(
            tone_amplitude(&narrow, 2000.0, 8000.0) < 50.0,
            "6 kHz must not alias to 2 kHz"
        );
    }

    #[test]
    fn sha256_is_of_the_file_bytes() {
        // 16-bit mono 8 kHz, samples 0, 1000, -1000, 0; digest from `sha256sum`.
        const WAV: &[u8] = b"RIFF\x2c\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x40\x1f\x00\x00\x80\x3e\x00\x00\x02\x00\x10\x00data\x08\x00\x00\x00\x00\x00\xe8\x03\x18\xfc\x00\x00";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known.wav");
        std::fs::write(&path, WAV).unwrap();
        let prompt = Prompt::load("known", "", &path).unwrap();
        assert_eq!(
            prompt.sha256,
            "6154e1a5105d7b8b35a7ac228d50907c2fed58ea63577391b34957cc538966ce"
        );
        assert_eq!(prompt.id, "known");
        assert_eq!(prompt.path, path);
        assert_eq!(&prompt.frames.pcm8k()[..4], &[0, 1000, -1000, 0]);
        assert_eq!(prompt.frames.frame_count(), 1);
    }

    fn load_error(path: &Path) -> (PromptError, String) {
        let error = Prompt::load("t", "", path).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with(&path.display().to_string()),
            "{message}"
        );
        (error, message)
    }

    #[test]
    fn non_wav_empty_and_missing_files_are_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.wav");
        std::fs::write(&text, "ID3\x03 this is really an mp3").unwrap();
        let (error, message) = load_error(&text);
        assert!(matches!(error, PromptError::NotWav { .. }), "{error:?}");
        assert!(
            message.contains("not a WAV file") && message.contains("sox"),
            "{message}"
        );

        let empty = dir.path().join("empty.wav");
        std::fs::write(&empty, b"").unwrap();
        let (error, message) = load_error(&empty);
        assert!(matches!(error, PromptError::Empty { .. }), "{error:?}");
        assert!(message.contains("0 bytes"), "{message}");

        let missing = dir.path().join("missing.wav");
        let (error, message) = load_error(&missing);
        assert!(matches!(error, PromptError::NotFound { .. }), "{error:?}");
        assert!(message.contains("`file` in the configuration"), "{message}");

        let (error, _) = load_error(dir.path());
        assert!(matches!(error, PromptError::Unreadable { .. }), "{error:?}");
    }

    #[test]
    fn unsupported_layouts_rates_and_lengths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let silent = |_: usize, _: u16| 0.0;
        let three = write_wav(dir.path(), "3ch.wav", 16000, 3, Format::Int16, 100, silent);
        let (error, message) = load_error(&three);
        assert!(
            matches!(error, PromptError::Channels { channels: 3, .. }),
            "{error:?}"
        );
        assert!(message.contains("mono or stereo"), "{message}");

        for rate in [6000, 96000] {
            let path = write_wav(dir.path(), "rate.wav", rate, 1, Format::Int16, 100, silent);
            let (error, message) = load_error(&path);
            assert!(
                matches!(error, PromptError::SampleRate { rate: r, .. } if r == rate),
                "{error:?}"
            );
            assert!(message.contains(&format!("{rate} Hz")), "{message}");
        }

        let none = write_wav(dir.path(), "none.wav", 16000, 1, Format::Int16, 0, silent);
        let (error, _) = load_error(&none);
        assert!(matches!(error, PromptError::NoSamples { .. }), "{error:?}");

        let long = write_wav(
            dir.path(),
            "long.wav",
            8000,
            1,
            Format::Int8,
            8000 * 301,
            silent,
        );
        let (error, _) = load_error(&long);
        assert!(
            matches!(error, PromptError::TooLong { seconds: 301, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn truncated_and_damaged_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_wav(
            dir.path(),
            "full.wav",
            8000,
            1,
            Format::Int16,
            1000,
            sine(440.0, 8000, 0.5),
        );
        let bytes = std::fs::read(&path).unwrap();

        let truncated = dir.path().join("truncated.wav");
        std::fs::write(&truncated, &bytes[..bytes.len() - 500]).unwrap();
        let (error, message) = load_error(&truncated);
        assert!(matches!(error, PromptError::Malformed { .. }), "{error:?}");
        assert!(message.contains("damaged"), "{message}");

        let header_only = dir.path().join("header.wav");
        std::fs::write(&header_only, &bytes[..20]).unwrap();
        let (error, _) = load_error(&header_only);
        assert!(matches!(error, PromptError::Malformed { .. }), "{error:?}");
    }

    #[test]
    fn frames_are_padded_and_out_of_range_is_silence() {
        let mut samples = vec![1000i16; 161];
        samples[160] = -1000;
        let frames = PromptFrames::from_pcm(&samples, None);
        assert_eq!(frames.frame_count(), 2);
        assert_eq!(frames.duration_ms(), 40);
        assert_eq!(frames.pcm8k().len(), 320);
        let second = frames.frame(Codec::Pcma, 1);
        assert_eq!(second[0], Law::A.encode(-1000));
        assert!(second[1..].iter().all(|&b| b == 0xD5));
        assert_eq!(frames.get(Codec::Pcmu, 2), None);
        assert_eq!(frames.get(Codec::Pcmu, usize::MAX), None);
        assert_eq!(frames.frame(Codec::Pcmu, 2), &[0xFF; 160][..]);
        assert_eq!(frames.frame(Codec::Pcma, 99).len(), 160);
        assert_eq!(PromptFrames::from_pcm(&[], None).frame_count(), 0);
        let debug = format!("{frames:?}");
        assert!(debug.len() < 100, "{debug}");
    }

    /// `seconds` of a 1 kHz sine at `dbfs` peak, at 16 kHz, after `quiet_ms` of silence.
    fn tone(seconds: f64, dbfs: f64, quiet_ms: usize) -> Vec<f32> {
        let amplitude = 32768.0 * 10f64.powf(dbfs / 20.0);
        let quiet = quiet_ms * 16;
        (0..quiet + (seconds * 16000.0) as usize)
            .map(|n| match n.checked_sub(quiet) {
                Some(t) => (amplitude * (TAU * 1000.0 * t as f64 / 16000.0).sin()) as f32,
                None => 0.0,
            })
            .collect()
    }

    #[test]
    fn levels_of_generated_signals() {
        let levels = PromptLevels::measure(&tone(10.0, -6.0, 0), 16000);
        assert_eq!(levels.duration_ms, 10_000);
        assert!((levels.peak_dbfs + 6.0).abs() < 0.01, "{levels:?}");
        assert!(
            (levels.rms_dbfs + 9.01).abs() < 0.05,
            "a sine's RMS is 3 dB under its peak: {levels:?}"
        );
        assert_eq!(levels.clipped_samples, 0);
        assert_eq!(levels.quiet_start_ms, 0);
        assert_eq!((levels.inaudible(), levels.warnings().len()), (None, 0));
        assert!(levels.sound_too_soon(0) && !levels.sound_too_soon(200));

        assert_eq!((levels.sample_rate, levels.quiet_end_ms), (16000, 0));
        assert!(levels.speech_at_start(0).is_some() && levels.speech_at_start(200).is_none());

        let late = PromptLevels::measure(&tone(10.0, -6.0, 150), 16000);
        assert_eq!(late.quiet_start_ms, 150);
        assert!(late.speech_at_start(0).is_none());
        let mut tail = tone(1.0, -6.0, 0);
        tail.extend(std::iter::repeat_n(0.0, 16 * 730));
        assert_eq!(PromptLevels::measure(&tail, 16000).quiet_end_ms, 730);
        assert!(!late.sound_too_soon(0));
    }

    #[test]
    fn silence_and_near_silence_are_inaudible() {
        let silent = PromptLevels::measure(&vec![0.0; 160_000], 16000);
        assert_eq!(silent.peak_dbfs, f64::NEG_INFINITY);
        assert!(silent.inaudible().unwrap().contains("silent"));
        let faint = PromptLevels::measure(&tone(10.0, -45.0, 0), 16000);
        assert!(
            faint.inaudible().unwrap().contains("near-silent"),
            "{faint:?}"
        );
        // One click in ten seconds of silence: a loud peak, but nothing to hear.
        let mut click = vec![0.0f32; 160_000];
        click[8000] = 30000.0;
        assert!(PromptLevels::measure(&click, 16000).inaudible().is_some());
        // Just above the refusal, a warning.
        let quiet = PromptLevels::measure(&tone(10.0, -36.0, 0), 16000);
        assert_eq!(quiet.inaudible(), None);
        let warnings = quiet.warnings();
        assert!(
            warnings.len() == 1 && warnings[0].contains("very low level"),
            "{warnings:?}"
        );
    }

    #[test]
    fn clipping_and_short_prompts_are_warned_about() {
        // A sine driven 6 dB past full scale and clipped, as an overloaded export is.
        let clipped: Vec<f32> = tone(10.0, 6.0, 0)
            .iter()
            .map(|&s| s.clamp(-32768.0, 32767.0))
            .collect();
        let levels = PromptLevels::measure(&clipped, 16000);
        assert!(levels.clipped_samples > 36_000, "{levels:?}");
        assert!(levels.warnings()[0].contains("clipped"), "{levels:?}");
        // Float files can go past full scale without flat tops.
        let over = PromptLevels::measure(&[0.0, 40000.0, -1000.0, 500.0], 8000);
        assert_eq!(over.clipped_samples, 1);
        // A loud but clean low tone at 48 kHz has near-equal neighbours, not flat tops.
        let low: Vec<f32> = (0..48000)
            .map(|n| (32767.0 * (TAU * 100.0 * n as f64 / 48000.0).sin()) as f32)
            .collect();
        assert_eq!(PromptLevels::measure(&low, 48000).clipped_samples, 0);

        let short = PromptLevels::measure(&tone(0.5, -6.0, 0), 16000);
        assert_eq!(short.duration_ms, 500);
        let warnings = short.warnings();
        assert!(
            warnings.len() == 1 && warnings[0].contains("0.5 s"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_silent_file_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_wav(
            dir.path(),
            "silent.wav",
            16000,
            1,
            Format::Int16,
            16000,
            |_, _| 0.0,
        );
        let (error, message) = load_error(&path);
        assert!(matches!(error, PromptError::Inaudible { .. }), "{error:?}");
        assert!(message.contains("silent"), "{message}");
    }

    #[test]
    fn shipped_prompts_load() {
        for (id, file) in [
            ("three_rules_zh", "audio/three_rules_zh.wav"),
            ("three_rules_en", "audio/three_rules_en.wav"),
        ] {
            let prompt = Prompt::load(id, "", Path::new(file)).unwrap();
            let seconds = prompt.frames.duration_ms() / 1000;
            assert!((10..=20).contains(&seconds), "{file}: {seconds} s");
            assert_eq!(prompt.sha256.len(), 64);
            let peak = prompt
                .frames
                .pcm8k()
                .iter()
                .map(|s| s.unsigned_abs())
                .max()
                .unwrap_or(0);
            assert!(peak > 10_000, "{file}: peak {peak}");
            let levels = prompt.levels;
            assert_eq!(levels.inaudible(), None, "{file}: {levels:?}");
            assert!(
                levels.warnings().is_empty(),
                "{file}: {:?}",
                levels.warnings()
            );
        }
    }
}
