//! The codecs courtline negotiates — G.711 μ-law and A-law, and G.722 — and
//! G.711 itself (ITU-T G.711), written out by hand.
//!
//! Linear samples are 16-bit: μ-law's 14-bit and A-law's 13-bit ranges are
//! scaled up by 4 and 8, the same convention every RTP stack uses. Decoding and
//! law-to-law conversion go through 256-entry tables built at compile time, so
//! the per-packet paths are a single index. G.722 lives in [`super::g722`]; a
//! [`Transcoder`] converts relayed payloads between any two of the three.

use super::g722;

/// G.711's sampling rate, and the RTP clock rate of all three codecs (G.722
/// samples at 16 kHz but its RTP clock runs at 8 kHz, RFC 3551 §4.5.2).
pub const SAMPLE_RATE: u32 = 8000;
/// Packetisation time we send and expect (SDP `a=ptime:20`), the common default.
pub const FRAME_MS: u32 = 20;
/// Samples (= G.711 bytes, = G.722 octets) in one 20 ms RTP payload.
pub const SAMPLES_PER_FRAME: usize = (SAMPLE_RATE * FRAME_MS / 1000) as usize;

/// The payload formats we negotiate in SDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 μ-law, RTP static payload type 0; what North American peers offer first.
    Pcmu,
    /// G.711 A-law, RTP static payload type 8; the law used on Chinese PSTN trunks.
    Pcma,
    /// G.722 wideband (50–7000 Hz) at 64 kbit/s, static payload type 9; offered
    /// by IP phones, chosen when the line's prompts were recorded at ≥ 16 kHz.
    G722,
}

/// The two G.711 companding laws, for sample-by-sample coding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Law {
    /// μ-law (PCMU).
    Mu,
    /// A-law (PCMA).
    A,
}

/// 20 ms of μ-law silence (linear 0).
static PCMU_SILENCE: [u8; SAMPLES_PER_FRAME] = [0xFF; SAMPLES_PER_FRAME];
/// 20 ms of A-law silence (its smallest level, +8).
static PCMA_SILENCE: [u8; SAMPLES_PER_FRAME] = [0xD5; SAMPLES_PER_FRAME];
/// 20 ms of G.722 idle octets.
static G722_SILENCE: [u8; SAMPLES_PER_FRAME] = [g722::SILENCE; SAMPLES_PER_FRAME];

impl Codec {
    /// Static RTP payload type from RFC 3551, used in SDP `m=` lines and RTP headers.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::G722 => 9,
        }
    }

    /// Maps an RTP payload type back to a codec; `None` for anything we do not speak.
    pub fn from_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            9 => Some(Codec::G722),
            _ => None,
        }
    }

    /// Encoding name as written in an SDP `a=rtpmap` line (always with `/8000`).
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
        }
    }

    /// The G.711 law, or `None` for G.722 (which is not coded sample by sample).
    pub fn law(self) -> Option<Law> {
        match self {
            Codec::Pcmu => Some(Law::Mu),
            Codec::Pcma => Some(Law::A),
            Codec::G722 => None,
        }
    }

    /// 20 ms of silence in this codec, shared by every lead-in, gap and padding.
    pub fn silence_frame(self) -> &'static [u8] {
        match self {
            Codec::Pcmu => &PCMU_SILENCE,
            Codec::Pcma => &PCMA_SILENCE,
            Codec::G722 => &G722_SILENCE,
        }
    }
}

impl Law {
    /// Encodes one 16-bit linear sample.
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Law::Mu => linear_to_ulaw(sample),
            Law::A => linear_to_alaw(sample),
        }
    }

    /// Decodes one byte to a 16-bit linear sample.
    pub fn decode(self, byte: u8) -> i16 {
        match self {
            Law::Mu => ulaw_to_linear(byte),
            Law::A => alaw_to_linear(byte),
        }
    }

    /// Encodes `pcm` into `out` sample by sample. The slices should be the same
    /// length; if not, only the common prefix is written (debug builds assert).
    pub fn encode_into(self, pcm: &[i16], out: &mut [u8]) {
        debug_assert_eq!(pcm.len(), out.len(), "encode_into length mismatch");
        for (byte, &sample) in out.iter_mut().zip(pcm) {
            *byte = self.encode(sample);
        }
    }

    /// The byte for digital silence (linear 0), for padding and comfort gaps.
    /// A-law has no zero level, so its silence decodes to +8 (inaudible).
    pub fn silence_byte(self) -> u8 {
        match self {
            Law::Mu => 0xFF,
            Law::A => 0xD5,
        }
    }

    /// Converts a byte coded with `other` into this law, so a relay between a
    /// μ-law and an A-law leg needs no linear buffer. Identity when the laws
    /// match; otherwise decode-then-re-encode, precomputed in a table.
    pub fn transcode_from(self, other: Law, byte: u8) -> u8 {
        match (other, self) {
            (Law::Mu, Law::A) => ULAW_TO_ALAW[byte as usize],
            (Law::A, Law::Mu) => ALAW_TO_ULAW[byte as usize],
            _ => byte,
        }
    }
}

/// How relayed payloads of one direction change codec, with the G.722 coder
/// state that direction needs (made once at bridge time, never per packet).
#[derive(Debug)]
enum Conversion {
    /// Same codec on both legs: payloads pass unchanged.
    Same,
    /// μ-law ↔ A-law, one table lookup per byte.
    Law {
        /// The sending leg's law.
        from: Law,
        /// The receiving leg's law.
        to: Law,
    },
    /// G.722 → G.711: the lower band (0–4 kHz, 8 kHz) decoded, then companded.
    FromG722 {
        /// Follows the sending leg's G.722 stream.
        decoder: Box<g722::Decoder>,
        /// The receiving leg's law.
        to: Law,
    },
    /// G.711 → G.722: expanded, then coded as the lower band (the far end's
    /// QMF interpolates to 16 kHz).
    ToG722 {
        /// The sending leg's law.
        from: Law,
        /// Produces the receiving leg's G.722 stream.
        encoder: Box<g722::Encoder>,
    },
}

/// Converts the payloads one relay direction carries from the sending leg's
/// codec to the receiving leg's, into a caller-provided buffer.
#[derive(Debug)]
pub struct Transcoder {
    /// What to do with each payload.
    conversion: Conversion,
}

impl Transcoder {
    /// A converter from `from` to `to`; allocates the G.722 state if one side is G.722.
    pub fn new(from: Codec, to: Codec) -> Transcoder {
        let conversion = match (from.law(), to.law()) {
            _ if from == to => Conversion::Same,
            (Some(from), Some(to)) => Conversion::Law { from, to },
            (None, Some(to)) => Conversion::FromG722 {
                decoder: Box::default(),
                to,
            },
            (Some(from), None) => Conversion::ToG722 {
                from,
                encoder: Box::default(),
            },
            // Both G.722 is `from == to`; kept total without a panic.
            (None, None) => Conversion::Same,
        };
        Transcoder { conversion }
    }

    /// The payload in the receiving leg's codec: `payload` itself, or its
    /// conversion written to the front of `out` (cut to `out`'s length).
    /// Every codec here has one octet per 8 kHz sample, so lengths are kept.
    pub fn convert<'a>(&mut self, payload: &'a [u8], out: &'a mut [u8]) -> &'a [u8] {
        let len = payload.len().min(out.len());
        let (payload, out) = (&payload[..len], &mut out[..len]);
        // Linear samples of one packet, on the stack (a relay slot holds at most this many).
        let mut pcm = [0i16; MAX_PAYLOAD];
        let pcm = &mut pcm[..len.min(MAX_PAYLOAD)];
        match &mut self.conversion {
            Conversion::Same => return payload,
            Conversion::Law { from, to } => {
                for (o, &b) in out.iter_mut().zip(payload) {
                    *o = to.transcode_from(*from, b);
                }
            }
            Conversion::FromG722 { decoder, to } => {
                let n = decoder.decode_narrowband(payload, pcm);
                to.encode_into(&pcm[..n], &mut out[..n]);
            }
            Conversion::ToG722 { from, encoder } => {
                for (sample, &b) in pcm.iter_mut().zip(payload) {
                    *sample = from.decode(b);
                }
                encoder.encode_narrowband(pcm, out);
            }
        }
        out
    }
}

/// Longest payload the transcoder converts (a full Ethernet-sized datagram).
pub const MAX_PAYLOAD: usize = 1500;

/// μ-law bias (33 in the 14-bit domain, ×4): makes segment edges powers of two.
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude μ-law can represent before the bias pushes it past 15 bits.
const ULAW_CLIP: i32 = 32635;

/// Encodes a 16-bit linear sample to μ-law (positive codes have the top bit set;
/// all bits are sent inverted, so +0 is 0xFF and -0 is 0x7F).
pub const fn linear_to_ulaw(sample: i16) -> u8 {
    let value = sample as i32;
    let negative = value < 0;
    let mut magnitude = if negative { -value } else { value };
    if magnitude > ULAW_CLIP {
        magnitude = ULAW_CLIP;
    }
    // With the bias added the magnitude lies in 132..=32767, so its highest set
    // bit is bit 7 (segment 0) up to bit 14 (segment 7).
    let biased = magnitude + ULAW_BIAS;
    let segment = 31 - (biased as u32).leading_zeros() as i32 - 7;
    let mantissa = (biased >> (segment + 3)) & 0x0F;
    let code = ((segment << 4) | mantissa) as u8;
    if negative {
        0x7F ^ code
    } else {
        0xFF ^ code
    }
}

/// Decodes μ-law with the standard's reconstruction values (scaled to 16 bits).
pub fn ulaw_to_linear(b: u8) -> i16 {
    ULAW_DECODE[b as usize]
}

/// Encodes a 16-bit linear sample to A-law (even bits inverted: +0 is 0xD5).
pub const fn linear_to_alaw(sample: i16) -> u8 {
    // A-law works on 13 bits; the arithmetic shift keeps the sign.
    let value = (sample as i32) >> 3;
    let (mask, magnitude) = if value >= 0 {
        (0xD5u8, value)
    } else {
        // One's-complement magnitude: -1 → 0, -4096 → 4095, as the standard's
        // decision table is symmetric around -0.5 in the 13-bit domain.
        (0x55u8, -value - 1)
    };
    let code = if magnitude < 32 {
        // Segments 0 and 1 share the finest step (2 in 13 bits).
        magnitude >> 1
    } else {
        // Highest set bit 5 → segment 1 … bit 11 → segment 7.
        let segment = 31 - (magnitude as u32).leading_zeros() as i32 - 4;
        (segment << 4) | ((magnitude >> segment) & 0x0F)
    };
    (code as u8) ^ mask
}

/// Decodes A-law with the standard's reconstruction values (scaled to 16 bits).
pub fn alaw_to_linear(b: u8) -> i16 {
    ALAW_DECODE[b as usize]
}

const fn ulaw_decode_value(b: u8) -> i16 {
    let inverted = !b;
    let segment = ((inverted >> 4) & 0x07) as i32;
    let mantissa = (inverted & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << segment) - ULAW_BIAS;
    // Inverted top bit set means the transmitted sign bit was 0: negative.
    if inverted & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

const fn alaw_decode_value(b: u8) -> i16 {
    let value = b ^ 0x55;
    let segment = ((value >> 4) & 0x07) as i32;
    let mantissa = (value & 0x0F) as i32;
    // Reconstruction sits mid-step: +8 (half of 16) in segment 0, and segments
    // ≥1 carry the implicit leading 1 (0x100) plus the same half step.
    let magnitude = if segment == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (segment - 1)
    };
    if value & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn build_decode_table(alaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if alaw {
            alaw_decode_value(i as u8)
        } else {
            ulaw_decode_value(i as u8)
        };
        i += 1;
    }
    table
}

const fn build_transcode_table(from_alaw: bool) -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if from_alaw {
            linear_to_ulaw(alaw_decode_value(i as u8))
        } else {
            linear_to_alaw(ulaw_decode_value(i as u8))
        };
        i += 1;
    }
    table
}

static ULAW_DECODE: [i16; 256] = build_decode_table(false);
static ALAW_DECODE: [i16; 256] = build_decode_table(true);
static ULAW_TO_ALAW: [u8; 256] = build_transcode_table(false);
static ALAW_TO_ULAW: [u8; 256] = build_transcode_table(true);

#[cfg(test)]
mod tests {
    use super::*;

    /// (byte, decoded value) from G.711 Table 2a: 14-bit value (2m+33)·2^s − 33, ×4.
    const ULAW_DECODE_REFERENCE: [(u8, i16); 20] = [
        (0xFF, 0),
        (0x7F, 0),
        (0xFE, 8),
        (0x7E, -8),
        (0xF0, 120),
        (0xEF, 132),
        (0xE0, 372),
        (0xDF, 396),
        (0xCF, 924),
        (0xBF, 1980),
        (0xAF, 4092),
        (0x9F, 8316),
        (0x8F, 16764),
        (0x80, 32124),
        (0x00, -32124),
        (0x01, -31100),
        (0x0F, -16764),
        (0x40, -1884),
        (0x55, -716),
        (0x70, -120),
    ];

    /// (byte, decoded value) from G.711 Table 1a: 13-bit value 2m+1 (segment 0)
    /// or (2m+33)·2^(s−1), ×8.
    const ALAW_DECODE_REFERENCE: [(u8, i16); 20] = [
        (0xD5, 8),
        (0x55, -8),
        (0xD4, 24),
        (0x54, -24),
        (0xDA, 248),
        (0xC5, 264),
        (0xC4, 280),
        (0xF5, 528),
        (0xE5, 1056),
        (0x95, 2112),
        (0x85, 4224),
        (0xB5, 8448),
        (0xA5, 16896),
        (0xAA, 32256),
        (0x2A, -32256),
        (0x80, 5504),
        (0x00, -5504),
        (0x7F, -848),
        (0xFF, 848),
        (0x65, -1056),
    ];

    /// (linear, byte) on and around decision levels, plus clipping.
    const ULAW_ENCODE_REFERENCE: [(i16, u8); 20] = [
        (0, 0xFF),
        (-1, 0x7F),
        (3, 0xFF),
        (4, 0xFE),
        (-4, 0x7E),
        (-5, 0x7E),
        (100, 0xF2),
        (-100, 0x72),
        (123, 0xF0),
        (124, 0xEF),
        (1000, 0xCE),
        (-1000, 0x4E),
        (5000, 0xAB),
        (-5000, 0x2B),
        (16000, 0x90),
        (-16000, 0x10),
        (32124, 0x80),
        (32635, 0x80),
        (32767, 0x80),
        (-32768, 0x00),
    ];

    const ALAW_ENCODE_REFERENCE: [(i16, u8); 20] = [
        (0, 0xD5),
        (-1, 0x55),
        (-8, 0x55),
        (-9, 0x55),
        (7, 0xD5),
        (15, 0xD5),
        (16, 0xD4),
        (100, 0xD3),
        (-100, 0x53),
        (255, 0xDA),
        (256, 0xC5),
        (1000, 0xFA),
        (-1000, 0x7A),
        (5000, 0x86),
        (-5000, 0x06),
        (16000, 0xBA),
        (-16000, 0x3A),
        (32256, 0xAA),
        (32767, 0xAA),
        (-32768, 0x2A),
    ];

    #[test]
    fn ulaw_decodes_reference_values() {
        for (byte, linear) in ULAW_DECODE_REFERENCE {
            assert_eq!(ulaw_to_linear(byte), linear, "byte {byte:#04x}");
        }
    }

    #[test]
    fn alaw_decodes_reference_values() {
        for (byte, linear) in ALAW_DECODE_REFERENCE {
            assert_eq!(alaw_to_linear(byte), linear, "byte {byte:#04x}");
        }
    }

    #[test]
    fn ulaw_encodes_reference_values() {
        for (linear, byte) in ULAW_ENCODE_REFERENCE {
            assert_eq!(linear_to_ulaw(linear), byte, "sample {linear}");
        }
    }

    #[test]
    fn alaw_encodes_reference_values() {
        for (linear, byte) in ALAW_ENCODE_REFERENCE {
            assert_eq!(linear_to_alaw(linear), byte, "sample {linear}");
        }
    }

    /// Decoded values ordered by code: within one sign, a larger code magnitude
    /// (7-bit segment+mantissa after undoing the inversion) decodes larger.
    fn check_monotonic(codec: Law, code_to_byte: impl Fn(u8, bool) -> u8) {
        for positive in [true, false] {
            let values: Vec<i32> = (0u8..128)
                .map(|code| codec.decode(code_to_byte(code, positive)) as i32)
                .collect();
            for pair in values.windows(2) {
                let (a, b) = (pair[0].abs(), pair[1].abs());
                assert!(b > a || (a == 0 && b == 0), "{codec:?} {values:?}");
            }
            for v in &values {
                assert!(if positive { *v >= 0 } else { *v <= 0 });
            }
        }
    }

    #[test]
    fn all_256_decode_values_are_monotonic_per_sign() {
        check_monotonic(
            Law::Mu,
            |code, positive| {
                if positive {
                    0xFF ^ code
                } else {
                    0x7F ^ code
                }
            },
        );
        check_monotonic(
            Law::A,
            |code, positive| {
                if positive {
                    code ^ 0xD5
                } else {
                    code ^ 0x55
                }
            },
        );
    }

    #[test]
    fn every_decoded_value_is_a_fixed_point() {
        for codec in [Law::Mu, Law::A] {
            for b in 0..=255u8 {
                let linear = codec.decode(b);
                assert_eq!(
                    codec.decode(codec.encode(linear)),
                    linear,
                    "{codec:?} {b:#04x}"
                );
            }
        }
    }

    #[test]
    fn every_byte_except_ulaw_negative_zero_round_trips() {
        for b in 0..=255u8 {
            if b != 0x7F {
                assert_eq!(linear_to_ulaw(ulaw_to_linear(b)), b);
            }
            assert_eq!(linear_to_alaw(alaw_to_linear(b)), b);
        }
    }

    #[test]
    fn decode_tables_are_odd_symmetric() {
        for b in 0..128u8 {
            assert_eq!(ulaw_to_linear(b), -ulaw_to_linear(b | 0x80));
            assert_eq!(alaw_to_linear(b), -alaw_to_linear(b | 0x80));
        }
    }

    /// Quantisation error is at most half a step. A segment's step is 1/16 of
    /// its lower edge (μ-law edges are offset by the bias, 132), so the error is
    /// at most about |x|/32, plus the finest half-step near zero.
    #[test]
    fn round_trip_error_is_within_half_a_step() {
        for x in i16::MIN..=i16::MAX {
            let magnitude = (x as i32).abs();
            let mu_error = (ulaw_to_linear(linear_to_ulaw(x)) as i32 - x as i32).abs();
            if magnitude <= 32124 {
                assert!(
                    mu_error <= 4 + (magnitude + 132) / 32,
                    "μ-law {x}: {mu_error}"
                );
            } else {
                assert_eq!(ulaw_to_linear(linear_to_ulaw(x)).abs(), 32124);
            }
            let a_error = (alaw_to_linear(linear_to_alaw(x)) as i32 - x as i32).abs();
            if magnitude <= 32256 {
                assert!(a_error <= 8 + magnitude / 32, "A-law {x}: {a_error}");
            } else {
                assert_eq!(alaw_to_linear(linear_to_alaw(x)).abs(), 32256);
            }
        }
    }

    #[test]
    fn payload_types_and_names() {
        assert_eq!(Codec::Pcmu.payload_type(), 0);
        assert_eq!(Codec::Pcma.payload_type(), 8);
        assert_eq!(Codec::from_payload_type(0), Some(Codec::Pcmu));
        assert_eq!(Codec::from_payload_type(8), Some(Codec::Pcma));
        assert_eq!(Codec::from_payload_type(101), None);
        assert_eq!(Codec::Pcmu.encoding_name(), "PCMU");
        assert_eq!(Codec::Pcma.encoding_name(), "PCMA");
        assert_eq!(Codec::G722.payload_type(), 9);
        assert_eq!(Codec::from_payload_type(9), Some(Codec::G722));
        assert_eq!(Codec::G722.encoding_name(), "G722");
        assert_eq!(Codec::G722.law(), None);
        assert_eq!(Codec::Pcma.law(), Some(Law::A));
        assert_eq!(SAMPLES_PER_FRAME, 160);
    }

    #[test]
    fn silence_frames_are_20_ms_of_each_codecs_idle_code() {
        assert_eq!(
            Codec::Pcmu.silence_frame(),
            &[Law::Mu.silence_byte(); 160][..]
        );
        assert_eq!(
            Codec::Pcma.silence_frame(),
            &[Law::A.silence_byte(); 160][..]
        );
        assert_eq!(Codec::G722.silence_frame(), &[g722::SILENCE; 160][..]);
    }

    #[test]
    fn transcoder_passes_same_codec_and_converts_laws() {
        let mut out = [0u8; 160];
        let payload: Vec<u8> = (0..160).map(|i| i as u8).collect();
        for codec in [Codec::Pcmu, Codec::Pcma, Codec::G722] {
            let mut same = Transcoder::new(codec, codec);
            assert_eq!(same.convert(&payload, &mut out), &payload[..]);
        }
        let mut law = Transcoder::new(Codec::Pcmu, Codec::Pcma);
        let converted = law.convert(&payload, &mut out).to_vec();
        for (&b, &c) in payload.iter().zip(&converted) {
            assert_eq!(c, Law::A.transcode_from(Law::Mu, b));
        }
        // Cut to the output buffer, never beyond.
        assert_eq!(law.convert(&payload, &mut out[..10]).len(), 10);
    }

    #[test]
    fn transcoder_bridges_g722_and_g711_keeping_the_voice() {
        // A 1 kHz tone as a G.711 leg sends it, through G.722 and back.
        let tone: Vec<i16> = (0..8000)
            .map(|n| (8000.0 * (std::f64::consts::TAU * 1000.0 * n as f64 / 8000.0).sin()) as i16)
            .collect();
        let mut alaw = vec![0u8; tone.len()];
        Law::A.encode_into(&tone, &mut alaw);
        let mut to_g722 = Transcoder::new(Codec::Pcma, Codec::G722);
        let mut back = Transcoder::new(Codec::G722, Codec::Pcmu);
        let mut wide = [0u8; 160];
        let mut narrow = [0u8; 160];
        let mut heard = Vec::new();
        for packet in alaw.chunks(160) {
            let g722 = to_g722.convert(packet, &mut wide);
            assert_eq!(g722.len(), 160, "one octet per 8 kHz sample");
            let ulaw = back.convert(g722, &mut narrow);
            heard.extend(ulaw.iter().map(|&b| f64::from(Law::Mu.decode(b))));
        }
        // After the adaptation settles, the tone comes back at its level.
        let settled = &heard[2000..];
        let (mut re, mut im) = (0.0, 0.0);
        for (n, s) in settled.iter().enumerate() {
            let phase = std::f64::consts::TAU * 1000.0 * n as f64 / 8000.0;
            re += s * phase.cos();
            im += s * phase.sin();
        }
        let level = 2.0 * (re * re + im * im).sqrt() / settled.len() as f64;
        assert!((level - 8000.0).abs() < 800.0, "{level:.0}");
    }

    #[test]
    fn silence_byte_is_encoded_zero() {
        for codec in [Law::Mu, Law::A] {
            assert_eq!(codec.silence_byte(), codec.encode(0));
        }
        assert_eq!(ulaw_to_linear(0xFF), 0);
        // A-law has no zero level: its idle code is the smallest positive step.
        assert_eq!(alaw_to_linear(0xD5), 8);
    }

    #[test]
    fn encode_into_encodes_each_sample() {
        let pcm = [0i16, -1, 1000, -32768];
        let mut out = [0u8; 4];
        Law::Mu.encode_into(&pcm, &mut out);
        assert_eq!(out, [0xFF, 0x7F, 0xCE, 0x00]);
        Law::A.encode_into(&pcm, &mut out);
        assert_eq!(out, [0xD5, 0x55, 0xFA, 0x2A]);
    }

    #[test]
    fn transcoding_matches_decode_then_encode() {
        for b in 0..=255u8 {
            assert_eq!(Law::Mu.transcode_from(Law::Mu, b), b);
            assert_eq!(Law::A.transcode_from(Law::A, b), b);
            assert_eq!(
                Law::A.transcode_from(Law::Mu, b),
                linear_to_alaw(ulaw_to_linear(b))
            );
            assert_eq!(
                Law::Mu.transcode_from(Law::A, b),
                linear_to_ulaw(alaw_to_linear(b))
            );
        }
        assert_eq!(Law::A.transcode_from(Law::Mu, 0xFF), 0xD5);
        // A-law idle (+8) lands on μ-law's +8, not on its exact zero.
        assert_eq!(Law::Mu.transcode_from(Law::A, 0xD5), 0xFE);
        assert_eq!(Law::A.transcode_from(Law::Mu, 0x80), 0xAA);
        assert_eq!(Law::Mu.transcode_from(Law::A, 0x2A), 0x00);
    }

    #[test]
    fn transcoding_there_and_back_stays_close() {
        for b in 0..=255u8 {
            let original = ulaw_to_linear(b) as i32;
            let back =
                ulaw_to_linear(Law::Mu.transcode_from(Law::A, Law::A.transcode_from(Law::Mu, b)))
                    as i32;
            assert!(
                (back - original).abs() <= 8 + original.abs() / 16,
                "{b:#04x}"
            );
        }
    }
}
