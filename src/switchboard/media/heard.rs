//! What a synthetic probe heard, checked against what the line plays, as a
//! test would check it: the received G.711 audio is placed by RTP timestamp,
//! aligned with the playlist by correlation, and the verdict names what is
//! wrong — silence, another recording (a wrong prompt version), a clipped
//! start, a warning cut short. Pure: the probe's adapter feeds packets in.

use std::fmt;

use super::codec::{Codec, Law, FRAME_MS, SAMPLES_PER_FRAME};
use super::prompt::Playlist;

/// G.711 samples per millisecond.
const SAMPLES_PER_MS: usize = 8;
/// Below this level (dBFS) audio counts as silence.
const SILENCE_DBFS: f64 = -50.0;
/// Correlation with the expected recording over the whole warning above
/// which it is that recording (G.711 through a clean path: ~1.0; a transcoding
/// trunk: above 0.95; another recording: near 0).
const MATCH_CORRELATION: f64 = 0.9;
/// The same for each second of it, so a version that differs in one sentence
/// is caught too.
const MATCH_CORRELATION_PER_SECOND: f64 = 0.8;
/// Samples of a second that must have arrived for it to be judged on its own.
const MIN_SAMPLES_PER_SECOND: usize = 800;
/// Warning missed at the start before it counts as clipped (one packet's worth
/// and a little).
const START_TOLERANCE_MS: usize = 40;
/// Warning missed at the end before it counts as cut short.
const END_TOLERANCE_MS: usize = 200;
/// Heard audio compared with every position of the playlist to align them.
const ALIGN_WINDOW_MS: usize = 2_000;
/// Search around the best whole-frame alignment, in samples (a codec's or
/// transcoder's delay).
const FINE_SEARCH_SAMPLES: isize = 80;

/// What the line should play, decoded as a caller's phone decodes it.
#[derive(Debug, Clone)]
pub struct Expected {
    /// The playlist's samples (8 kHz): lead-in, prompts and gaps.
    pcm: Vec<i16>,
    /// Lead-in silence before the first prompt, in samples.
    lead_in: usize,
}

impl Expected {
    /// The playlist as a caller hears it in G.711 `codec`; `None` for G.722.
    pub fn of(playlist: &Playlist, codec: Codec) -> Option<Expected> {
        let law = codec.law()?;
        let pcm = (0..playlist.frame_count())
            .flat_map(|index| {
                let frame = playlist.frame(codec, index);
                frame.iter().map(move |&byte| law.decode(byte))
            })
            .collect();
        Some(Expected::from_pcm(
            pcm,
            playlist.lead_in_frames() * SAMPLES_PER_FRAME,
        ))
    }

    /// The expected audio as samples, with `lead_in` samples of silence first.
    pub fn from_pcm(pcm: Vec<i16>, lead_in: usize) -> Expected {
        Expected { pcm, lead_in }
    }

    /// How long it plays.
    pub fn duration_ms(&self) -> u32 {
        u32::try_from(self.pcm.len() / SAMPLES_PER_MS).unwrap_or(u32::MAX)
    }
}

/// The audio a probe received, placed by RTP timestamp (8 kHz clock), with
/// which samples arrived.
#[derive(Debug, Clone)]
pub struct Heard {
    /// Samples from the first packet on; 0 where nothing arrived.
    samples: Vec<i16>,
    /// Whether each sample arrived.
    arrived: Vec<bool>,
    /// Timestamp of the first packet: sample 0.
    first_timestamp: Option<u32>,
    /// Packets taken in.
    packets: u64,
    /// Samples kept at most (a bad timestamp must not fill memory).
    limit: usize,
}

impl Heard {
    /// Nothing heard yet; at most `limit_ms` from the first packet on are kept.
    pub fn new(limit_ms: u32) -> Heard {
        Heard {
            samples: Vec::new(),
            arrived: Vec::new(),
            first_timestamp: None,
            packets: 0,
            limit: limit_ms as usize * SAMPLES_PER_MS,
        }
    }

    /// One packet's G.711 payload with its RTP timestamp.
    pub fn add(&mut self, timestamp: u32, payload: &[u8], law: Law) {
        let first = *self.first_timestamp.get_or_insert(timestamp);
        let offset = timestamp.wrapping_sub(first);
        // Before the first packet (reordered): wraps to a huge offset; dropped.
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if start >= self.limit {
            return;
        }
        self.packets += 1;
        let end = (start + payload.len()).min(self.limit);
        if self.samples.len() < end {
            self.samples.resize(end, 0);
            self.arrived.resize(end, false);
        }
        for (index, &byte) in (start..end).zip(payload) {
            self.samples[index] = law.decode(byte);
            self.arrived[index] = true;
        }
    }

    /// Packets taken in.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// From the first packet to the end of the last.
    pub fn duration_ms(&self) -> u32 {
        u32::try_from(self.samples.len() / SAMPLES_PER_MS).unwrap_or(u32::MAX)
    }

    /// The samples heard (0 where nothing arrived), for saving.
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }
}

/// The heard audio is the expected warning, whole.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// Correlation with the expected audio over the warning.
    pub correlation: f64,
    /// Warning that never arrived within it (lost packets), ms.
    pub lost_ms: u32,
}

/// What is wrong with a line, as a probe found it.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The call was not answered (the SIP status, or that none came).
    NoAnswer(String),
    /// Answered, but what it plays cannot be checked (why).
    Unchecked(String),
    /// No audio, or audio below [`SILENCE_DBFS`].
    Silence {
        /// Level of what arrived, `None` when nothing did.
        level_dbfs: Option<f64>,
    },
    /// The audio is not the configured warning (another version of it, or another recording).
    WrongPrompt {
        /// Correlation with the expected audio over the whole warning.
        correlation: f64,
        /// Where in the warning the heard audio stops matching, ms; 0 when it never does.
        from_ms: u32,
    },
    /// The warning's beginning was not heard.
    ClippedStart {
        /// How much of it, ms.
        missing_ms: u32,
    },
    /// The warning stopped before its end.
    CutShort {
        /// How much of the playlist was heard, ms (lead-in included).
        heard_ms: u32,
        /// The playlist's length, ms.
        expected_ms: u32,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NoAnswer(why) => write!(f, "no answer: {why}"),
            Failure::Unchecked(why) => write!(f, "cannot check the warning: {why}"),
            Failure::Silence { level_dbfs: None } => {
                f.write_str("silence: no audio arrived after the answer")
            }
            Failure::Silence {
                level_dbfs: Some(level),
            } => write!(f, "silence: what arrived is at {level:.1} dBFS"),
            Failure::WrongPrompt {
                correlation,
                from_ms: 0,
            } => write!(
                f,
                "wrong prompt version: what the line plays is not the configured warning \
                 (correlation {correlation:.2})"
            ),
            Failure::WrongPrompt { from_ms, .. } => write!(
                f,
                "wrong prompt version: what the line plays differs from the configured warning \
                 from {:.1} s on",
                f64::from(*from_ms) / 1000.0
            ),
            Failure::ClippedStart { missing_ms } => write!(
                f,
                "clipped start: the first {missing_ms} ms of the warning were not heard"
            ),
            Failure::CutShort {
                heard_ms,
                expected_ms,
            } => write!(
                f,
                "cut short: heard {:.1} s of the {:.1} s warning",
                f64::from(*heard_ms) / 1000.0,
                f64::from(*expected_ms) / 1000.0
            ),
        }
    }
}

/// Sums of products over paired samples, for a normalised correlation.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    /// Σ heard · expected.
    xy: f64,
    /// Σ heard².
    xx: f64,
    /// Σ expected².
    yy: f64,
    /// Pairs added.
    n: usize,
}

impl Sums {
    fn add(&mut self, x: i16, y: i16) {
        self.n += 1;
        let (x, y) = (f64::from(x), f64::from(y));
        self.xy += x * y;
        self.xx += x * x;
        self.yy += y * y;
    }

    fn correlation(&self) -> f64 {
        let norm = (self.xx * self.yy).sqrt();
        if norm > 0.0 {
            self.xy / norm
        } else {
            0.0
        }
    }
}

/// RMS level of `samples` in dBFS (−∞ for none or silence).
fn level_dbfs<'a>(samples: impl Iterator<Item = &'a i16>) -> f64 {
    let (mut sum, mut count) = (0.0f64, 0usize);
    for &s in samples {
        sum += f64::from(s) * f64::from(s);
        count += 1;
    }
    if count == 0 || sum == 0.0 {
        return f64::NEG_INFINITY;
    }
    20.0 * ((sum / count as f64).sqrt() / 32768.0).log10()
}

/// Correlation of `window` with `expected` from `start` on (as far as both reach).
fn correlation_at(window: &[i16], expected: &[i16], start: usize) -> f64 {
    let mut sums = Sums::default();
    for (&x, &y) in window.iter().zip(expected.get(start..).unwrap_or_default()) {
        sums.add(x, y);
    }
    sums.correlation()
}

/// Whether what was heard is the expected warning, whole; else what is wrong.
pub fn judge(expected: &Expected, heard: &Heard) -> Result<Match, Failure> {
    if heard.packets == 0 {
        return Err(Failure::Silence { level_dbfs: None });
    }
    let level = level_dbfs(heard.samples.iter());
    if level < SILENCE_DBFS {
        return Err(Failure::Silence {
            level_dbfs: Some(level),
        });
    }
    // The first sound heard, matched against every frame position of the playlist.
    let first_sound = heard
        .samples
        .chunks(SAMPLES_PER_FRAME)
        .position(|frame| level_dbfs(frame.iter()) >= SILENCE_DBFS)
        .unwrap_or(0)
        * SAMPLES_PER_FRAME;
    let window_end = (first_sound + ALIGN_WINDOW_MS * SAMPLES_PER_MS).min(heard.samples.len());
    let window = &heard.samples[first_sound..window_end];
    let frames = expected.pcm.len() / SAMPLES_PER_FRAME;
    let coarse = (0..frames.max(1))
        .map(|frame| frame * SAMPLES_PER_FRAME)
        .map(|start| (start, correlation_at(window, &expected.pcm, start)))
        .fold((0, f64::MIN), |best, x| if x.1 > best.1 { x } else { best });
    let fine = (-FINE_SEARCH_SAMPLES..=FINE_SEARCH_SAMPLES)
        .filter_map(|delta| coarse.0.checked_add_signed(delta))
        .map(|start| (start, correlation_at(window, &expected.pcm, start)))
        .fold(coarse, |best, x| if x.1 > best.1 { x } else { best });
    // Heard sample i is expected sample i + shift.
    let shift = fine.0 as isize - first_sound as isize;
    let position = |index: usize| index as isize + shift;
    let len = expected.pcm.len() as isize;

    let mut whole = Sums::default();
    let mut seconds: Vec<Sums> = vec![Sums::default(); expected.pcm.len().div_ceil(8000)];
    let (mut first_heard, mut last_heard, mut arrived) = (None, 0isize, 0usize);
    for (index, (&x, _)) in heard
        .samples
        .iter()
        .zip(&heard.arrived)
        .enumerate()
        .filter(|(_, (_, arrived))| **arrived)
    {
        let at = position(index);
        if !(0..len).contains(&at) {
            continue;
        }
        let y = expected.pcm[at as usize];
        whole.add(x, y);
        seconds[at as usize / 8000].add(x, y);
        first_heard.get_or_insert(at);
        last_heard = at;
        arrived += 1;
    }
    let correlation = whole.correlation();
    // A second that should sound (or does) and does not match.
    let quiet =
        |energy: f64| energy < 8000.0 * 32768.0f64.powi(2) * 10f64.powf(SILENCE_DBFS / 10.0);
    if correlation < MATCH_CORRELATION {
        return Err(Failure::WrongPrompt {
            correlation,
            from_ms: 0,
        });
    }
    let mismatch = seconds.iter().position(|s| {
        s.n >= MIN_SAMPLES_PER_SECOND
            && !(quiet(s.xx) && quiet(s.yy))
            && s.correlation() < MATCH_CORRELATION_PER_SECOND
    });
    if let Some(second) = mismatch {
        return Err(Failure::WrongPrompt {
            correlation,
            from_ms: second as u32 * 1000,
        });
    }
    let first_heard = first_heard.unwrap_or(0) as usize;
    let missing_start = first_heard.saturating_sub(expected.lead_in);
    if missing_start > START_TOLERANCE_MS * SAMPLES_PER_MS {
        return Err(Failure::ClippedStart {
            missing_ms: (missing_start / SAMPLES_PER_MS) as u32,
        });
    }
    let heard_end = last_heard as usize + 1;
    if expected.pcm.len() - heard_end.min(expected.pcm.len()) > END_TOLERANCE_MS * SAMPLES_PER_MS {
        return Err(Failure::CutShort {
            heard_ms: (heard_end / SAMPLES_PER_MS) as u32,
            expected_ms: expected.duration_ms(),
        });
    }
    let lost = (heard_end - first_heard).saturating_sub(arrived);
    Ok(Match {
        correlation,
        lost_ms: (lost / SAMPLES_PER_MS) as u32 / FRAME_MS * FRAME_MS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 200 ms of silence, then a sweep of `ms` from `start_hz`, rising by
    /// `hz_per_s` (falling when negative).
    fn sweep(ms: usize, start_hz: f64, hz_per_s: f64) -> Expected {
        let lead_in = 200 * SAMPLES_PER_MS;
        let mut pcm = vec![0i16; lead_in];
        pcm.extend((0..ms * SAMPLES_PER_MS).map(|n| {
            let t = n as f64 / 8000.0;
            let phase = (start_hz + hz_per_s / 2.0 * t) * t * std::f64::consts::TAU;
            (phase.sin() * 12_000.0) as i16
        }));
        Expected::from_pcm(pcm, lead_in)
    }

    /// What a probe hears when the switchboard sends `pcm` in packets from
    /// frame `from`, losing the frames in `lost`, in A-law.
    fn heard_of(pcm: &[i16], from: usize, lost: &[usize]) -> Heard {
        let mut heard = Heard::new(60_000);
        for (frame, samples) in pcm.chunks(SAMPLES_PER_FRAME).enumerate().skip(from) {
            if lost.contains(&frame) {
                continue;
            }
            let payload: Vec<u8> = samples.iter().map(|&s| Law::A.encode(s)).collect();
            heard.add(
                90_000u32.wrapping_add((frame * SAMPLES_PER_FRAME) as u32),
                &payload,
                Law::A,
            );
        }
        heard
    }

    #[test]
    fn the_right_warning_heard_whole_passes_even_with_a_lost_packet() {
        let expected = sweep(2_000, 300.0, 1_200.0);
        let heard = heard_of(&expected.pcm, 0, &[40]);
        let verdict = judge(&expected, &heard).unwrap();
        assert!(verdict.correlation > 0.99, "{verdict:?}");
        assert_eq!(verdict.lost_ms, 20);
        // Ringback after the warning changes nothing.
        let mut longer = expected.pcm.clone();
        longer.extend(sweep(1_000, 2_000.0, 0.0).pcm);
        assert!(judge(&expected, &heard_of(&longer, 0, &[])).is_ok());
    }

    #[test]
    fn another_recording_is_the_wrong_prompt_version() {
        let expected = sweep(2_000, 300.0, 1_200.0);
        let other = sweep(2_000, 3_000.0, -1_200.0);
        match judge(&expected, &heard_of(&other.pcm, 0, &[])) {
            Err(Failure::WrongPrompt {
                correlation,
                from_ms: 0,
            }) => assert!(correlation < 0.5),
            other => panic!("{other:?}"),
        }
        // The same warning but for its last 100 ms: good enough over the
        // whole, caught by the second that differs.
        let mut edited = expected.pcm.clone();
        let tail = edited.len() - 800;
        edited[tail..].copy_from_slice(&other.pcm[other.pcm.len() - 800..]);
        match judge(&expected, &heard_of(&edited, 0, &[])) {
            Err(Failure::WrongPrompt {
                correlation,
                from_ms,
            }) => assert_eq!((correlation > 0.9, from_ms), (true, 2_000)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn silence_and_nothing_are_silence() {
        let expected = sweep(1_000, 300.0, 1_200.0);
        assert_eq!(
            judge(&expected, &Heard::new(10_000)),
            Err(Failure::Silence { level_dbfs: None })
        );
        let quiet = heard_of(&vec![0i16; expected.pcm.len()], 0, &[]);
        assert!(matches!(
            judge(&expected, &quiet),
            Err(Failure::Silence { level_dbfs: Some(level) }) if level < -60.0
        ));
    }

    #[test]
    fn a_start_missed_past_the_lead_in_is_a_clipped_start() {
        let expected = sweep(2_000, 300.0, 1_200.0);
        // The first 10 frames are the lead-in: missing them is fine.
        assert!(judge(&expected, &heard_of(&expected.pcm, 10, &[])).is_ok());
        assert_eq!(
            judge(&expected, &heard_of(&expected.pcm, 25, &[])),
            Err(Failure::ClippedStart { missing_ms: 300 })
        );
    }

    #[test]
    fn a_warning_that_stops_early_is_cut_short() {
        let expected = sweep(2_000, 300.0, 1_200.0);
        let half = &expected.pcm[..expected.pcm.len() / 2];
        assert_eq!(
            judge(&expected, &heard_of(half, 0, &[])),
            Err(Failure::CutShort {
                heard_ms: 1_100,
                expected_ms: 2_200
            })
        );
    }

    #[test]
    fn failures_say_what_was_wrong() {
        assert_eq!(
            Failure::NoAnswer("404 Not Found".into()).to_string(),
            "no answer: 404 Not Found"
        );
        assert!(Failure::WrongPrompt {
            correlation: 0.03,
            from_ms: 0
        }
        .to_string()
        .starts_with("wrong prompt version"));
        assert!(Failure::ClippedStart { missing_ms: 300 }
            .to_string()
            .starts_with("clipped start"));
    }
}
