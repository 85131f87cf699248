//! ITU-T G.722 (09/2012) sub-band ADPCM at 64 kbit/s (mode 1), written out by
//! hand from the Recommendation's block descriptions and checked against its
//! Appendix II digital test sequences (`g722_itu/`).
//!
//! 16 kHz audio is split by a 24-tap QMF into a lower band (0–4 kHz, 6-bit
//! ADPCM) and a higher band (4–8 kHz, 2-bit ADPCM), each at 8 kHz; one octet
//! per band sample pair, so 20 ms is 160 octets like G.711 (and the RTP clock
//! is 8000 Hz, RFC 3551 §4.5.2). The lower band alone is an 8 kHz signal,
//! which is how the relay bridges G.722 and G.711 legs without a resampler
//! ([`Encoder::encode_narrowband`], [`Decoder::decode_narrowband`]).
//!
//! No allocation: callers pass the buffers.

/// Octets per 20 ms frame (64 kbit/s), the same as G.711.
pub const FRAME_BYTES: usize = 160;
/// Input samples per 20 ms frame at 16 kHz.
pub const FRAME_SAMPLES_16K: usize = 320;
/// The idle octet: both bands' difference is zero for the predictors (lower
/// band code 63, higher band code 3), so a decoder fed it adds nothing: its
/// scale factors fall back to the minimum and its output settles on whatever
/// small constant it last predicted (DC and 8 kHz, inaudible; ±3 from reset).
pub const SILENCE: u8 = 0xFF;

/// QMF coefficients h(2i) (G.722 Table 11, scaled); h(2i+1) = h(22-2i) by symmetry.
const QMF: [i32; 12] = [3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11];

/// Lower-band quantiser decision levels (Table 6), times the scale factor / 4096.
const Q6: [i32; 31] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919, 0,
];
/// 6-bit lower-band code for a negative difference in interval m (Table 6).
const ILN: [i32; 31] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11,
    10, 9, 8, 7, 6, 5, 4,
];
/// 6-bit lower-band code for a positive difference in interval m (Table 6).
const ILP: [i32; 31] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39,
    38, 37, 36, 35, 34, 33, 32,
];
/// 4-bit inverse quantiser of the lower band (the predictor's input, Table 7).
const QM4: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];
/// 6-bit inverse quantiser of the lower band (the decoder's output in mode 1, Table 7).
const QM6: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232,
    -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776,
    -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280,
    11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776,
    2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];
/// 4-bit lower-band code to the 3-bit index of its scale-factor multiplier (Table 8).
const RL42: [i32; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
/// Lower-band log scale-factor increments (Table 8).
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
/// Higher-band inverse quantiser (Table 9).
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];
/// 2-bit higher-band code to the index of its scale-factor multiplier (Table 10).
const RH2: [i32; 4] = [2, 1, 2, 1];
/// Higher-band log scale-factor increments (Table 10).
const WH: [i32; 3] = [0, -214, 798];
/// Higher-band code for a negative difference, by magnitude interval.
const IHN: [i32; 3] = [0, 1, 0];
/// Higher-band code for a positive difference, by magnitude interval.
const IHP: [i32; 3] = [0, 3, 2];
/// Inverse log table of the scale-factor computation (Table 12).
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];

/// Clamps to the 16-bit range, as every "limit" block of the Recommendation does.
fn saturate(value: i32) -> i32 {
    value.clamp(i32::from(i16::MIN), i32::from(i16::MAX))
}

/// Two's-complement sign as 0 (≥ 0) or -1, the "sign bit" compared by the adaptation blocks.
fn sign(value: i32) -> i32 {
    value >> 15
}

/// Which band an [`Adpcm`] codes; they differ only in their scale-factor rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Band {
    /// 0–4 kHz, 6 bits per sample (4 of them feed the predictor).
    Lower,
    /// 4–8 kHz, 2 bits per sample.
    Higher,
}

/// The adaptive predictor and quantiser scale of one band (Blocks 3 and 4),
/// identical in encoder and decoder so both track the same signal estimate.
#[derive(Debug, Clone)]
struct Adpcm {
    /// Which band, for the scale-factor rules.
    band: Band,
    /// Signal estimate s (PREDIC).
    s: i32,
    /// Pole-section output sp (FILTEP).
    sp: i32,
    /// Zero-section output sz (FILTEZ).
    sz: i32,
    /// Reconstructed signal r, now and the two before.
    r: [i32; 3],
    /// Pole coefficients a1, a2 (index 0 unused).
    a: [i32; 3],
    /// Partially reconstructed signal p, now and the two before.
    p: [i32; 3],
    /// Quantised difference d, now and the six before.
    d: [i32; 7],
    /// Zero coefficients b1..b6 (index 0 unused).
    b: [i32; 7],
    /// Log scale factor nabla (LOGSCL / LOGSCH).
    nb: i32,
    /// Quantiser scale factor (SCALEL / SCALEH), ×4 as the Recommendation keeps it.
    det: i32,
}

impl Adpcm {
    /// The reset state: everything 0, the scale factor at its minimum.
    fn new(band: Band) -> Adpcm {
        Adpcm {
            band,
            s: 0,
            sp: 0,
            sz: 0,
            r: [0; 3],
            a: [0; 3],
            p: [0; 3],
            d: [0; 7],
            b: [0; 7],
            nb: 0,
            det: match band {
                Band::Lower => 32,
                Band::Higher => 8,
            },
        }
    }

    /// LOGSCL/LOGSCH then SCALEL/SCALEH: adapts the scale factor to the code just sent.
    fn adapt_scale(&mut self, multiplier_index: usize) {
        let (increments, max_nb, shift_base): (&[i32], i32, i32) = match self.band {
            Band::Lower => (&WL, 18432, 8),
            Band::Higher => (&WH, 22528, 10),
        };
        let leaked = (self.nb * 127) >> 7;
        self.nb = (leaked + increments[multiplier_index]).clamp(0, max_nb);
        let mantissa = ILB[((self.nb >> 6) & 31) as usize];
        let shift = shift_base - (self.nb >> 11);
        let scale = if shift < 0 {
            mantissa << -shift
        } else {
            mantissa >> shift
        };
        self.det = scale << 2;
    }

    /// Block 4: reconstructs the signal from the quantised difference `d` and
    /// updates the pole-zero predictor (RECONS … PREDIC).
    fn update(&mut self, d: i32) {
        // RECONS, PARREC
        let r0 = saturate(self.s + d);
        let p0 = saturate(self.sz + d);

        // UPPOL2: second pole coefficient.
        let four_a1 = saturate(self.a[1] << 2);
        let wd2 = if sign(p0) == sign(self.p[1]) {
            -four_a1
        } else {
            four_a1
        }
        .min(32767);
        let toward = if sign(p0) == sign(self.p[2]) {
            128
        } else {
            -128
        };
        let a2 = ((wd2 >> 7) + toward + ((self.a[2] * 32512) >> 15)).clamp(-12288, 12288);

        // UPPOL1: first pole coefficient, kept inside the stability triangle.
        let step = if sign(p0) == sign(self.p[1]) {
            192
        } else {
            -192
        };
        let limit = saturate(15360 - a2);
        let a1 = saturate(step + ((self.a[1] * 32640) >> 15)).clamp(-limit, limit);

        // UPZERO: sign-sign adaptation of the six zero coefficients.
        let gain = if d == 0 { 0 } else { 128 };
        for i in 1..7 {
            let agree = if sign(self.d[i]) == sign(d) {
                gain
            } else {
                -gain
            };
            self.b[i] = saturate(agree + ((self.b[i] * 32640) >> 15));
        }

        // DELAYA
        self.d.copy_within(0..6, 1);
        self.d[1] = d;
        self.r = [0, r0, self.r[1]];
        self.p = [0, p0, self.p[1]];
        self.a = [0, a1, a2];

        // FILTEP, FILTEZ, PREDIC
        let pole = |a: i32, r: i32| (a * saturate(r + r)) >> 15;
        self.sp = saturate(pole(self.a[1], self.r[1]) + pole(self.a[2], self.r[2]));
        let zero: i32 = (1..7)
            .map(|i| (self.b[i] * saturate(self.d[i] + self.d[i])) >> 15)
            .sum();
        self.sz = saturate(zero);
        self.s = saturate(self.sp + self.sz);
    }
}

/// The 24-sample delay line of a QMF (transmit or receive).
#[derive(Debug, Clone, Default)]
struct QmfHistory {
    /// Oldest first; two new samples enter at the end per band sample pair.
    x: [i32; 24],
}

impl QmfHistory {
    /// Pushes two samples and returns the two polyphase sums (even taps, odd taps).
    fn push(&mut self, first: i32, second: i32) -> (i32, i32) {
        self.x.copy_within(2..24, 0);
        self.x[22] = first;
        self.x[23] = second;
        let mut even = 0;
        let mut odd = 0;
        for (i, &h) in QMF.iter().enumerate() {
            even += self.x[2 * i] * h;
            odd += self.x[2 * i + 1] * QMF[11 - i];
        }
        (even, odd)
    }
}

/// G.722 encoder state for one outgoing stream.
#[derive(Debug, Clone)]
pub struct Encoder {
    /// Transmit QMF history.
    qmf: QmfHistory,
    /// Lower-band ADPCM.
    lower: Adpcm,
    /// Higher-band ADPCM.
    higher: Adpcm,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    /// An encoder in the reset state.
    pub fn new() -> Encoder {
        Encoder {
            qmf: QmfHistory::default(),
            lower: Adpcm::new(Band::Lower),
            higher: Adpcm::new(Band::Higher),
        }
    }

    /// Encodes 16 kHz samples, two per octet; returns the octets written
    /// (`min(pcm.len() / 2, out.len())`; an odd last sample is ignored).
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        let mut written = 0;
        for (pair, code) in pcm.chunks_exact(2).zip(out.iter_mut()) {
            let (even, odd) = self.qmf.push(i32::from(pair[0]), i32::from(pair[1]));
            *code = self.encode_bands((odd + even) >> 14, (odd - even) >> 14);
            written += 1;
        }
        written
    }

    /// Encodes 8 kHz samples as the lower band with a silent higher band (the
    /// far end's QMF interpolates to 16 kHz): G.711 → G.722 without a resampler.
    pub fn encode_narrowband(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        let mut written = 0;
        for (&sample, code) in pcm.iter().zip(out.iter_mut()) {
            *code = self.encode_bands(i32::from(sample) >> 1, 0);
            written += 1;
        }
        written
    }

    /// One octet from one lower-band and one higher-band sample (Blocks 1–4).
    fn encode_bands(&mut self, xlow: i32, xhigh: i32) -> u8 {
        // Lower band: SUBTRA, QUANTL (on the one's-complement magnitude).
        let el = saturate(xlow - self.lower.s);
        let magnitude = if el >= 0 { el } else { -(el + 1) };
        let det = self.lower.det;
        let interval = (1..30)
            .find(|&m| magnitude < (Q6[m] * det) >> 12)
            .unwrap_or(30);
        let ilow = if el < 0 { ILN[interval] } else { ILP[interval] };
        // INVQAL on the 4 most significant bits, then adaptation.
        let ril = (ilow >> 2) as usize;
        let dlow = (det * QM4[ril]) >> 15;
        self.lower.adapt_scale(RL42[ril] as usize);
        self.lower.update(dlow);

        // Higher band: SUBTRA, QUANTH, INVQAH, adaptation.
        let eh = saturate(xhigh - self.higher.s);
        let magnitude = if eh >= 0 { eh } else { -(eh + 1) };
        let det = self.higher.det;
        let interval = if magnitude >= (564 * det) >> 12 { 2 } else { 1 };
        let ihigh = if eh < 0 { IHN[interval] } else { IHP[interval] };
        let dhigh = (det * QM2[ihigh as usize]) >> 15;
        self.higher.adapt_scale(RH2[ihigh as usize] as usize);
        self.higher.update(dhigh);

        ((ihigh << 6) | ilow) as u8
    }
}

/// G.722 decoder state for one incoming stream (mode 1, 64 kbit/s).
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Receive QMF history.
    qmf: QmfHistory,
    /// Lower-band ADPCM.
    lower: Adpcm,
    /// Higher-band ADPCM.
    higher: Adpcm,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder in the reset state.
    pub fn new() -> Decoder {
        Decoder {
            qmf: QmfHistory::default(),
            lower: Adpcm::new(Band::Lower),
            higher: Adpcm::new(Band::Higher),
        }
    }

    /// Decodes octets to 16 kHz samples, two per octet; returns the samples
    /// written (`2 · min(codes.len(), out.len() / 2)`).
    pub fn decode(&mut self, codes: &[u8], out: &mut [i16]) -> usize {
        let mut written = 0;
        for (&code, pair) in codes.iter().zip(out.chunks_exact_mut(2)) {
            let (rlow, rhigh) = self.decode_bands(code);
            let (even, odd) = self.qmf.push(rlow + rhigh, rlow - rhigh);
            pair[0] = saturate(odd >> 11) as i16;
            pair[1] = saturate(even >> 11) as i16;
            written += 2;
        }
        written
    }

    /// Decodes octets to the 8 kHz lower band only: G.722 → G.711 without a
    /// resampler (the higher band, 4–8 kHz, does not fit narrowband anyway).
    pub fn decode_narrowband(&mut self, codes: &[u8], out: &mut [i16]) -> usize {
        let mut written = 0;
        for (&code, sample) in codes.iter().zip(out.iter_mut()) {
            *sample = saturate(self.decode_lower(code) << 1) as i16;
            written += 1;
        }
        written
    }

    /// The reconstructed lower- and higher-band samples of one octet (Blocks 5 and 6).
    fn decode_bands(&mut self, code: u8) -> (i32, i32) {
        let rlow = self.decode_lower(code);
        // Higher band: INVQAH, RECONS, LIMIT, then the same adaptation as the encoder.
        let ihigh = usize::from(code >> 6);
        let dhigh = (self.higher.det * QM2[ihigh]) >> 15;
        let rhigh = (self.higher.s + dhigh).clamp(-16384, 16383);
        self.higher.adapt_scale(RH2[ihigh] as usize);
        self.higher.update(dhigh);
        (rlow, rhigh)
    }

    /// The lower band of one octet; its predictor follows the 4-bit code as the encoder's does.
    fn decode_lower(&mut self, code: u8) -> i32 {
        let ilr = usize::from(code & 0x3F);
        // INVQBL (6 bits: the output), RECONS, LIMIT.
        let dequantised = (self.lower.det * QM6[ilr]) >> 15;
        let rlow = (self.lower.s + dequantised).clamp(-16384, 16383);
        // INVQAL (4 bits: what the encoder's predictor saw), then adaptation.
        let ril = ilr >> 2;
        let dlow = (self.lower.det * QM4[ril]) >> 15;
        self.lower.adapt_scale(RL42[ril] as usize);
        self.lower.update(dlow);
        rlow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 16-bit words of an ITU test sequence file: comment lines skipped,
    /// 16 hexadecimal words per line (the 2-digit line checksum ignored), and
    /// the synchronisation/reset words (odd, 0x0001) at both ends dropped.
    fn itu_words(text: &str) -> Vec<u16> {
        text.lines()
            .filter(|line| !line.starts_with('/') && line.len() >= 64)
            .flat_map(|line| {
                (0..16).map(move |i| u16::from_str_radix(&line[4 * i..4 * i + 4], 16).unwrap())
            })
            .filter(|word| word & 1 == 0)
            .collect()
    }

    const T1C2_XMT: &str = include_str!("g722_itu/T1C2.XMT");
    const T2R2_COD: &str = include_str!("g722_itu/T2R2.COD");
    const T3L2_RC1: &str = include_str!("g722_itu/T3L2.RC1");
    const T3H2_RC0: &str = include_str!("g722_itu/T3H2.RC0");

    #[test]
    fn encoder_matches_itu_test_sequence_t1c2_to_t2r2() {
        // Test configuration of Appendix II: the QMF is bypassed and each input
        // word feeds both band encoders; codes sit in the upper octet of a word.
        let input = itu_words(T1C2_XMT);
        let expected = itu_words(T2R2_COD);
        assert_eq!(input.len(), 768);
        assert_eq!(expected.len(), input.len());
        let mut encoder = Encoder::new();
        for (i, (&x, &code)) in input.iter().zip(&expected).enumerate() {
            let sample = i32::from(x as i16) >> 1;
            let got = encoder.encode_bands(sample, sample);
            assert_eq!(got, (code >> 8) as u8, "code {i} (input {x:#06x})");
        }
    }

    #[test]
    fn decoder_matches_itu_test_sequences_t2r2_to_t3l2_and_t3h2() {
        let codes = itu_words(T2R2_COD);
        let lower = itu_words(T3L2_RC1);
        let higher = itu_words(T3H2_RC0);
        assert_eq!((lower.len(), higher.len()), (codes.len(), codes.len()));
        let mut decoder = Decoder::new();
        for (i, &code) in codes.iter().enumerate() {
            let (rlow, rhigh) = decoder.decode_bands((code >> 8) as u8);
            assert_eq!((rlow << 1) as u16, lower[i], "lower band sample {i}");
            assert_eq!((rhigh << 1) as u16, higher[i], "higher band sample {i}");
        }
    }

    /// Amplitude of `frequency` in `samples`, for tone checks.
    fn amplitude(samples: &[i16], frequency: f64, rate: f64) -> f64 {
        let samples: Vec<f64> = samples.iter().map(|&s| f64::from(s)).collect();
        crate::switchboard::media::tone::tone_amplitude(&samples, frequency, rate)
    }

    fn sine(frequency: f64, rate: f64, len: usize, level: f64) -> Vec<i16> {
        (0..len)
            .map(|n| (level * (std::f64::consts::TAU * frequency * n as f64 / rate).sin()) as i16)
            .collect()
    }

    #[test]
    fn wideband_tones_survive_encode_and_decode_in_both_bands() {
        for frequency in [300.0, 1000.0, 3000.0, 5000.0, 6500.0] {
            let input = sine(frequency, 16000.0, 16000, 10000.0);
            let mut codes = vec![0u8; 8000];
            assert_eq!(Encoder::new().encode(&input, &mut codes), 8000);
            let mut output = vec![0i16; 16000];
            assert_eq!(Decoder::new().decode(&codes, &mut output), 16000);
            // Skip the adaptation and QMF delay at the start.
            let level = amplitude(&output[4000..], frequency, 16000.0);
            assert!(
                (level - 10000.0).abs() < 1000.0,
                "{frequency} Hz came out at {level:.0}"
            );
            for other in [200.0, 2000.0, 4500.0, 7500.0] {
                if (other - frequency).abs() > 400.0 {
                    let leak = amplitude(&output[4000..], other, 16000.0);
                    assert!(leak < 300.0, "{frequency} Hz leaks {leak:.0} at {other} Hz");
                }
            }
        }
    }

    #[test]
    fn narrowband_interworking_keeps_the_lower_band() {
        // 8 kHz in (as from G.711), G.722 on the wire, 16 kHz at the far end.
        let input = sine(1000.0, 8000.0, 8000, 12000.0);
        let mut codes = vec![0u8; 8000];
        assert_eq!(Encoder::new().encode_narrowband(&input, &mut codes), 8000);
        let mut wide = vec![0i16; 16000];
        Decoder::new().decode(&codes, &mut wide);
        let level = amplitude(&wide[4000..], 1000.0, 16000.0);
        assert!((level - 12000.0).abs() < 1200.0, "wideband {level:.0}");
        // And back: a G.722 stream read as 8 kHz for a G.711 leg.
        let mut narrow = vec![0i16; 8000];
        assert_eq!(Decoder::new().decode_narrowband(&codes, &mut narrow), 8000);
        let level = amplitude(&narrow[2000..], 1000.0, 8000.0);
        assert!((level - 12000.0).abs() < 1200.0, "narrowband {level:.0}");
        // A wideband encoding read narrowband also gives the 0–4 kHz content.
        let input = sine(700.0, 16000.0, 16000, 9000.0);
        Encoder::new().encode(&input, &mut codes);
        Decoder::new().decode_narrowband(&codes, &mut narrow);
        let level = amplitude(&narrow[2000..], 700.0, 8000.0);
        assert!(
            (level - 9000.0).abs() < 900.0,
            "wideband read narrowband {level:.0}"
        );
    }

    #[test]
    fn the_idle_octet_adds_nothing_audible_from_any_state() {
        let mut pcm = vec![0i16; 16000];
        Decoder::new().decode(&[SILENCE; 8000], &mut pcm);
        let peak = pcm.iter().map(|s| s.unsigned_abs()).max();
        assert!(peak <= Some(4), "from reset: {peak:?} {:?}", &pcm[..8]);
        let mut decoder = Decoder::new();
        // Wake the decoder up with a loud tone first.
        let mut codes = vec![0u8; 8000];
        Encoder::new().encode(&sine(1000.0, 16000.0, 16000, 20000.0), &mut codes);
        decoder.decode(&codes, &mut pcm);
        decoder.decode(&[SILENCE; 8000], &mut pcm);
        // After 100 ms: at most a small constant per band, i.e. only DC and
        // 8 kHz (period 2), nothing in the voice band.
        let tail = &pcm[1600..];
        let tail_peak = tail.iter().map(|s| s.unsigned_abs()).max();
        assert!(tail_peak <= Some(64), "{tail_peak:?}");
        assert!(tail.windows(3).all(|w| w[0] == w[2]), "{:?}", &tail[..8]);
        assert_eq!(decoder.lower.nb, 0, "scale factor back at its minimum");
    }

    #[test]
    fn buffers_bound_the_work_and_nothing_panics_on_extremes() {
        let mut encoder = Encoder::new();
        let mut out = [0u8; 3];
        assert_eq!(encoder.encode(&[i16::MAX; 9], &mut out), 3);
        assert_eq!(encoder.encode(&[i16::MIN; 4], &mut out), 2);
        assert_eq!(encoder.encode_narrowband(&[i16::MIN; 8], &mut out), 3);
        let mut decoder = Decoder::new();
        let mut pcm = [0i16; 5];
        assert_eq!(decoder.decode(&[0xFF; 8], &mut pcm), 4);
        assert_eq!(decoder.decode_narrowband(&[0x00; 8], &mut pcm), 5);
        for code in 0..=255u8 {
            decoder.decode(&[code; 50], &mut [0i16; 100]);
        }
    }
}
