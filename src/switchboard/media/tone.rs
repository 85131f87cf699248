//! In-band ringback, so the caller hears the line ringing while an operator is
//! sought (many gateways do not generate it locally after a 183/200 with SDP).
//!
//! One cadence cycle is synthesised and encoded once at start-up; every call
//! then just loops over the same frames.

use std::f64::consts::PI;
use std::fmt;
use std::sync::LazyLock;

use super::codec::{Codec, Law, FRAME_MS, SAMPLES_PER_FRAME, SAMPLE_RATE};
use super::g722;
use crate::config::media::{RingbackCadence, ToneError};

/// Level of a full-scale digital sine in μ-law (+3.17 dBm0, G.711; A-law's
/// +3.14 differs by an inaudible 0.03 dB), the reference for dBm0 levels.
const FULL_SCALE_SINE_DBM0: f64 = 3.17;
/// Raised-cosine ramp at each edge of a burst: hard edges click audibly.
const EDGE_RAMP_SAMPLES: usize = 40;

/// The tone that confirms a report request to the operator: 1,400 Hz (far
/// from the 450 Hz ringback and from speech's strongest band), 0.1 s on, 0.1 s off.
const CONFIRMATION_CADENCE: RingbackCadence = RingbackCadence {
    frequency_hz: 1400.0,
    on_ms: 100,
    off_ms: 100,
    level_dbm0: -10.0,
};
/// Frames the confirmation lasts: beep, pause, beep (300 ms).
const CONFIRMATION_FRAMES: usize = 15;
/// The confirmation, synthesised and encoded once per process.
static CONFIRMATION: LazyLock<ToneFrames> = LazyLock::new(|| {
    ToneFrames::ringback(&CONFIRMATION_CADENCE)
        .expect("the built-in confirmation cadence is valid (tested)")
});
/// The whisper that tells the answering operator the caller has prior reports or
/// flags: 800 Hz (unlike the 1,400 Hz confirmation and the 450 Hz ringback),
/// 0.1 s on, 0.1 s off.
const WHISPER_CADENCE: RingbackCadence = RingbackCadence {
    frequency_hz: 800.0,
    on_ms: 100,
    off_ms: 100,
    level_dbm0: -10.0,
};
/// Frames the whisper lasts: three beeps with two pauses (500 ms).
const WHISPER_FRAMES: usize = 25;
/// The whisper, synthesised and encoded once per process.
static WHISPER: LazyLock<ToneFrames> = LazyLock::new(|| {
    ToneFrames::ringback(&WHISPER_CADENCE).expect("the built-in whisper cadence is valid (tested)")
});

/// A short tone only the bridged operator hears: it replaces the caller's audio
/// toward the operator while it plays; the caller hears nothing of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorTone {
    /// The report key sequence was recorded (two 1,400 Hz beeps).
    ReportConfirmation,
    /// The caller has prior reports or flags (three 800 Hz beeps, `whisper_history`).
    HistoryWhisper,
}

impl OperatorTone {
    /// The encoded frames to play from frame 0.
    pub fn frames(self) -> &'static ToneFrames {
        match self {
            OperatorTone::ReportConfirmation => &CONFIRMATION,
            OperatorTone::HistoryWhisper => &WHISPER,
        }
    }

    /// Whether the caller's audio goes on under the tone (mixed, [`mix_frame`])
    /// rather than being replaced by it: the whisper comes the moment the bridge
    /// is up, when the caller's first words must reach the operator at once;
    /// the confirmation has the operator's ear to itself, as it always had.
    pub fn mixes_with_voice(self) -> bool {
        matches!(self, OperatorTone::HistoryWhisper)
    }

    /// How many frames of [`OperatorTone::frames`] are played.
    pub fn frame_count(self) -> usize {
        match self {
            OperatorTone::ReportConfirmation => CONFIRMATION_FRAMES,
            OperatorTone::HistoryWhisper => WHISPER_FRAMES,
        }
    }
}

/// Writes into `out` one G.711 frame of `tone` and `voice` (same law) added
/// together, clipped to 16 bits: the operator hears both at once.
pub fn mix_frame(law: Law, tone: &[u8], voice: &[u8], out: &mut [u8]) {
    for ((out, &tone), &voice) in out.iter_mut().zip(tone).zip(voice) {
        *out = law.encode(law.decode(tone).saturating_add(law.decode(voice)));
    }
}

/// One full cadence cycle pre-encoded into 20 ms frames; played in a loop.
pub struct ToneFrames {
    /// μ-law bytes of the whole cycle, `frame_count * 160` long.
    pcmu: Vec<u8>,
    /// A-law bytes of the whole cycle, same layout.
    pcma: Vec<u8>,
    /// G.722 octets of the cycle synthesised at 16 kHz (one encoder run), same layout.
    g722: Vec<u8>,
    /// Number of 20 ms frames in one cycle (never 0).
    frame_count: usize,
}

impl fmt::Debug for ToneFrames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToneFrames")
            .field("frame_count", &self.frame_count)
            .finish_non_exhaustive()
    }
}

impl ToneFrames {
    /// Validates the cadence and synthesises one cycle: a phase-continuous sine
    /// with short ramps for the "on" part, then digital silence.
    pub fn ringback(cadence: &RingbackCadence) -> Result<ToneFrames, ToneError> {
        cadence.check()?;

        let amplitude =
            32767.0 * 10f64.powf((f64::from(cadence.level_dbm0) - FULL_SCALE_SINE_DBM0) / 20.0);
        let narrow = synthesise(cadence, amplitude, SAMPLE_RATE);
        let wide = synthesise(cadence, amplitude, 2 * SAMPLE_RATE);
        let encode = |law: Law| -> Vec<u8> {
            let mut out = vec![0u8; narrow.len()];
            law.encode_into(&narrow, &mut out);
            out
        };
        let mut g722 = vec![0u8; narrow.len()];
        g722::Encoder::new().encode(&wide, &mut g722);
        Ok(ToneFrames {
            pcmu: encode(Law::Mu),
            pcma: encode(Law::A),
            g722,
            frame_count: narrow.len() / SAMPLES_PER_FRAME,
        })
    }

    /// Frames in one cycle; a sender loops after this many.
    pub fn frame_count(&self) -> usize {
        self.frame_count
    }

    /// Length of one cycle in ms.
    pub fn duration_ms(&self) -> u32 {
        // At most MAX_CYCLE_MS / 20 frames, so this cannot overflow.
        self.frame_count as u32 * FRAME_MS
    }

    /// The 160 bytes of frame `index`, taken modulo the cycle so a sender can
    /// just count frames from the start of ringing.
    pub fn frame(&self, codec: Codec, index: usize) -> &[u8] {
        let start = (index % self.frame_count) * SAMPLES_PER_FRAME;
        let bytes = match codec {
            Codec::Pcmu => &self.pcmu,
            Codec::Pcma => &self.pcma,
            Codec::G722 => &self.g722,
        };
        &bytes[start..start + SAMPLES_PER_FRAME]
    }
}

/// One cadence cycle at `rate`: a phase-continuous sine with short ramps for
/// the "on" part, then digital silence.
fn synthesise(cadence: &RingbackCadence, amplitude: f64, rate: u32) -> Vec<i16> {
    let samples_per_ms = (rate / 1000) as usize;
    let on_samples = cadence.on_ms as usize * samples_per_ms;
    let total_samples = (cadence.on_ms + cadence.off_ms) as usize * samples_per_ms;
    // The ramp lasts the same 5 ms at either rate.
    let ramp = EDGE_RAMP_SAMPLES * rate as usize / SAMPLE_RATE as usize;
    let phase_step = 2.0 * PI * f64::from(cadence.frequency_hz) / f64::from(rate);
    let mut pcm = vec![0i16; total_samples];
    for (n, sample) in pcm.iter_mut().take(on_samples).enumerate() {
        let from_edge = n.min(on_samples - 1 - n);
        let envelope = if from_edge < ramp {
            0.5 - 0.5 * (PI * from_edge as f64 / ramp as f64).cos()
        } else {
            1.0
        };
        // Phase from the sample index (not an accumulator) stays exact over the burst.
        let value = amplitude * envelope * (phase_step * n as f64).sin();
        *sample = value.round() as i16;
    }
    pcm
}

/// Amplitude of the `frequency` component of `samples` (Goertzel), for tests
/// that check a tone's pitch and level without an FFT.
#[cfg(test)]
pub(crate) fn tone_amplitude(samples: &[f64], frequency: f64, sample_rate: f64) -> f64 {
    let coefficient = 2.0 * (2.0 * PI * frequency / sample_rate).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = x + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coefficient * s1 * s2;
    2.0 * power.max(0.0).sqrt() / samples.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(tone: &ToneFrames, codec: Codec, frames: std::ops::Range<usize>) -> Vec<f64> {
        frames
            .flat_map(|i| tone.frame(codec, i).to_vec())
            .map(|b| f64::from(codec.law().expect("a G.711 codec").decode(b)))
            .collect()
    }

    #[test]
    fn g722_ringback_decodes_to_the_tone_then_silence() {
        let tone = ToneFrames::ringback(&RingbackCadence::default()).unwrap();
        let codes: Vec<u8> = (0..250)
            .flat_map(|i| tone.frame(Codec::G722, i).to_vec())
            .collect();
        let mut pcm = vec![0i16; codes.len() * 2];
        assert_eq!(g722::Decoder::new().decode(&codes, &mut pcm), 16000 * 5);
        let expected = 32767.0 * 10f64.powf(-13.17 / 20.0);
        let on: Vec<f64> = pcm[1600..14400].iter().map(|&s| f64::from(s)).collect();
        let at_450 = tone_amplitude(&on, 450.0, 16000.0);
        assert!((at_450 - expected).abs() < expected * 0.05, "{at_450}");
        assert!(tone_amplitude(&on, 1000.0, 16000.0) < expected * 0.05);
        // The 4 s pause is silence after the decoder settles.
        let pause_peak = pcm[17600..].iter().map(|s| s.unsigned_abs()).max();
        assert!(pause_peak < Some(40), "{pause_peak:?}");
    }

    /// Checks that `tone` is `beeps` 100 ms beeps at `frequency` with 100 ms pauses.
    fn assert_beeps(tone: OperatorTone, frequency: f64, beeps: usize) {
        let expected = 32767.0 * 10f64.powf(-13.17 / 20.0);
        assert_eq!(tone.frame_count(), (2 * beeps - 1) * 5);
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let samples = decoded(tone.frames(), codec, 0..tone.frame_count());
            assert_eq!(samples.len(), (2 * beeps - 1) * 100 * 8);
            let level = |from_ms: usize, frequency: f64| {
                let window = &samples[from_ms * 8 + 80..from_ms * 8 + 720];
                tone_amplitude(window, frequency, 8000.0)
            };
            for beep in 0..beeps {
                let at = beep * 200;
                let on = level(at, frequency);
                assert!(
                    (on - expected).abs() < expected * 0.05,
                    "{tone:?} {at}: {on}"
                );
                if beep + 1 < beeps {
                    let off = level(at + 100, frequency);
                    assert!(off < expected * 0.01, "{tone:?} {}: {off}", at + 100);
                }
            }
        }
    }

    #[test]
    fn confirmation_is_two_short_1400_hz_beeps() {
        assert_beeps(OperatorTone::ReportConfirmation, 1400.0, 2);
    }

    #[test]
    fn whisper_is_three_short_800_hz_beeps_unlike_the_confirmation() {
        assert_beeps(OperatorTone::HistoryWhisper, 800.0, 3);
        let samples = decoded(OperatorTone::HistoryWhisper.frames(), Codec::Pcmu, 0..5);
        let expected = 32767.0 * 10f64.powf(-13.17 / 20.0);
        assert!(tone_amplitude(&samples[80..720], 1400.0, 8000.0) < expected * 0.05);
    }

    #[test]
    fn the_whisper_is_mixed_over_the_callers_voice_and_the_confirmation_is_not() {
        assert!(OperatorTone::HistoryWhisper.mixes_with_voice());
        assert!(!OperatorTone::ReportConfirmation.mixes_with_voice());
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let law = codec.law().unwrap();
            let tone = OperatorTone::HistoryWhisper.frames().frame(codec, 0);
            // A 2 kHz voice at about -13 dBm0.
            let voice: Vec<u8> = (0..SAMPLES_PER_FRAME)
                .map(|n| {
                    let t = n as f64 / f64::from(SAMPLE_RATE);
                    law.encode(((2.0 * PI * 2000.0 * t).sin() * 7000.0) as i16)
                })
                .collect();
            let mut mixed = vec![0u8; SAMPLES_PER_FRAME];
            mix_frame(law, tone, &voice, &mut mixed);
            let decoded: Vec<f64> = mixed.iter().map(|&b| f64::from(law.decode(b))).collect();
            // Both are there at their own levels (the tone ramps in over its first 5 ms).
            let whisper = tone_amplitude(&decoded[40..], 800.0, 8000.0);
            let words = tone_amplitude(&decoded[40..], 2000.0, 8000.0);
            assert!(whisper > 5000.0, "{codec:?}: whisper {whisper}");
            assert!((words - 7000.0).abs() < 700.0, "{codec:?}: voice {words}");
        }
        // Loud voices clip rather than wrap.
        let law = Codec::Pcmu.law().unwrap();
        let loud = [law.encode(30000); 4];
        let mut mixed = [0u8; 4];
        mix_frame(law, &loud, &loud, &mut mixed);
        assert!(mixed.iter().all(|&b| law.decode(b) > 30000));
    }

    #[test]
    fn default_is_chinese_ringback() {
        let cadence = RingbackCadence::default();
        assert_eq!(cadence.frequency_hz, 450.0);
        assert_eq!((cadence.on_ms, cadence.off_ms), (1000, 4000));
        assert_eq!(cadence.level_dbm0, -10.0);
    }

    #[test]
    fn frame_count_is_one_cycle() {
        let tone = ToneFrames::ringback(&RingbackCadence::default()).unwrap();
        assert_eq!(tone.frame_count(), (1000 + 4000) / 20);
        assert_eq!(tone.duration_ms(), 5000);
    }

    #[test]
    fn on_frames_are_a_450_hz_tone_at_the_configured_level() {
        let tone = ToneFrames::ringback(&RingbackCadence::default()).unwrap();
        // -10 dBm0 relative to the +3.17 dBm0 full-scale sine.
        let expected = 32767.0 * 10f64.powf(-13.17 / 20.0);
        for codec in [Codec::Pcmu, Codec::Pcma] {
            // Skip the ramped first and last frames.
            for frame in 1..49 {
                let samples = decoded(&tone, codec, frame..frame + 1);
                let at_450 = tone_amplitude(&samples, 450.0, 8000.0);
                assert!(
                    (at_450 - expected).abs() < expected * 0.03,
                    "{codec:?} {frame}: {at_450}"
                );
                for other in [300.0, 600.0, 1000.0, 2000.0] {
                    assert!(tone_amplitude(&samples, other, 8000.0) < expected * 0.1);
                }
            }
        }
    }

    #[test]
    fn tone_phase_is_continuous_across_frames() {
        let tone = ToneFrames::ringback(&RingbackCadence::default()).unwrap();
        let samples = decoded(&tone, Codec::Pcma, 0..50);
        let amplitude = 32767.0 * 10f64.powf(-13.17 / 20.0);
        let step = 2.0 * PI * 450.0 / 8000.0;
        for (n, &value) in samples.iter().enumerate().skip(40).take(8000 - 80) {
            let ideal = amplitude * (step * n as f64).sin();
            // Within A-law quantisation error at this level.
            assert!(
                (value - ideal).abs() < 260.0,
                "sample {n}: {value} vs {ideal}"
            );
        }
    }

    #[test]
    fn off_frames_are_silence_and_indices_loop() {
        let tone = ToneFrames::ringback(&RingbackCadence::default()).unwrap();
        for codec in [Codec::Pcmu, Codec::Pcma] {
            for frame in 50..250 {
                assert_eq!(tone.frame(codec, frame), codec.silence_frame());
            }
            assert_eq!(tone.frame(codec, 250), tone.frame(codec, 0));
            assert_eq!(tone.frame(codec, 253), tone.frame(codec, 3));
            assert_eq!(tone.frame(codec, 0).len(), 160);
        }
        // Bursts start and end quietly (ramp), not with a click.
        let first = decoded(&tone, Codec::Pcmu, 0..1);
        assert!(first[0].abs() <= 8.0);
    }

    #[test]
    fn invalid_cadences_are_refused() {
        let base = RingbackCadence::default();
        let check = |cadence: RingbackCadence, expected: ToneError| {
            assert_eq!(ToneFrames::ringback(&cadence).unwrap_err(), expected);
        };
        check(
            RingbackCadence {
                frequency_hz: 30.0,
                ..base
            },
            ToneError::Frequency(30.0),
        );
        check(
            RingbackCadence {
                frequency_hz: 4000.0,
                ..base
            },
            ToneError::Frequency(4000.0),
        );
        let nan = RingbackCadence {
            frequency_hz: f32::NAN,
            ..base
        };
        assert!(matches!(
            ToneFrames::ringback(&nan),
            Err(ToneError::Frequency(_))
        ));
        check(
            RingbackCadence {
                level_dbm0: 3.0,
                ..base
            },
            ToneError::Level(3.0),
        );
        check(RingbackCadence { on_ms: 0, ..base }, ToneError::NoTone);
        check(
            RingbackCadence {
                on_ms: 1010,
                ..base
            },
            ToneError::NotFrameMultiple {
                field: "on_ms",
                ms: 1010,
                rounded: 1020,
            },
        );
        check(
            RingbackCadence {
                off_ms: 3990,
                ..base
            },
            ToneError::NotFrameMultiple {
                field: "off_ms",
                ms: 3990,
                rounded: 4000,
            },
        );
        check(
            RingbackCadence {
                off_ms: 60_000,
                ..base
            },
            ToneError::CycleTooLong(61_000),
        );
        let message = ToneError::Frequency(30.0).to_string();
        assert!(message.contains("50–3800"), "{message}");
    }

    #[test]
    fn steady_tone_without_pause_is_allowed() {
        let cadence = RingbackCadence {
            off_ms: 0,
            on_ms: 20,
            ..RingbackCadence::default()
        };
        let tone = ToneFrames::ringback(&cadence).unwrap();
        assert_eq!(tone.frame_count(), 1);
        assert_eq!(tone.frame(Codec::Pcmu, 7).len(), 160);
    }
}
