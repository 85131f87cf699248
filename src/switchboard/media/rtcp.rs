//! RTCP (RFC 3550 §6): reception statistics of an incoming RTP stream
//! (loss per A.3, interarrival jitter per A.8), sender and receiver reports
//! with SDES CNAME, and round-trip time from the LSR/DLSR of reports received.
//!
//! Sans-IO: times come in as NTP timestamps and RTP clock units, so every
//! formula is tested on exact values.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// RTCP packet type of a sender report.
pub const PT_SR: u8 = 200;
/// RTCP packet type of a receiver report.
pub const PT_RR: u8 = 201;
/// RTCP packet type of source description.
pub const PT_SDES: u8 = 202;
/// Seconds between the NTP era (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// RFC 3550 §6.2: minimum interval between reports.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// Largest compound packet courtline writes (SR + 1 block + SDES).
pub const MAX_COMPOUND: usize = 28 + 24 + 8 + 2 + 255 + 3;

/// A 64-bit NTP timestamp: seconds since 1900 in the high word, fraction in the low.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ntp(pub u64);

impl Ntp {
    /// The NTP time of a wall-clock instant.
    pub fn from_system(t: SystemTime) -> Ntp {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs() + NTP_UNIX_OFFSET;
        let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
        Ntp((secs << 32) | frac)
    }

    /// The middle 32 bits, as carried in LSR and used for RTT (units of 1/65536 s).
    pub fn middle(self) -> u32 {
        (self.0 >> 16) as u32
    }
}

/// Statistics of one incoming RTP source, per RFC 3550 Appendix A.
#[derive(Debug, Clone, Default)]
pub struct ReceptionStats {
    /// SSRC of the source (from its latest packet).
    pub ssrc: u32,
    /// Whether any packet arrived yet.
    started: bool,
    /// First sequence number, extended.
    base_seq: u32,
    /// Highest sequence number seen (low 16 bits).
    max_seq: u16,
    /// Sequence number wrap-arounds × 65536.
    cycles: u32,
    /// Packets received.
    received: u64,
    /// `expected` at the last report, for the fraction lost.
    expected_prior: u64,
    /// `received` at the last report.
    received_prior: u64,
    /// Relative transit time of the previous packet (RTP units).
    transit: i64,
    /// Interarrival jitter × 16 (the A.8 integer form).
    jitter_q4: u32,
    /// Middle 32 bits of the NTP time in the last SR from this source.
    last_sr: u32,
    /// When that SR arrived.
    last_sr_arrival: Option<Ntp>,
}

/// One report block (RFC 3550 §6.4.1), ready to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source reported on.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter, RTP units.
    pub jitter: u32,
    /// Middle 32 bits of the last SR's NTP time (0 if none).
    pub lsr: u32,
    /// Delay since that SR, 1/65536 s (0 if none).
    pub dlsr: u32,
}

impl ReceptionStats {
    /// Accounts one RTP packet: its sequence number and timestamp, and its
    /// arrival time expressed in the same RTP clock units.
    pub fn on_rtp(&mut self, ssrc: u32, seq: u16, rtp_ts: u32, arrival_ts: u32) {
        self.ssrc = ssrc;
        if !self.started {
            self.started = true;
            self.base_seq = u32::from(seq);
            self.max_seq = seq;
        } else {
            let delta = seq.wrapping_sub(self.max_seq);
            // In order (or a small jump ahead): advance, counting a wrap.
            if delta != 0 && delta < 0x8000 {
                if seq < self.max_seq {
                    self.cycles = self.cycles.wrapping_add(1 << 16);
                }
                self.max_seq = seq;
            }
        }
        self.received += 1;
        // A.8: transit difference between consecutive packets, smoothed by 1/16.
        let transit = i64::from(arrival_ts.wrapping_sub(rtp_ts) as i32);
        if self.received > 1 {
            let d = (transit - self.transit).unsigned_abs() as u32;
            self.jitter_q4 = self
                .jitter_q4
                .wrapping_add(d)
                .wrapping_sub((self.jitter_q4 + 8) >> 4);
        }
        self.transit = transit;
    }

    /// Records an SR from the source (for LSR/DLSR in our next report).
    pub fn on_sender_report(&mut self, sr_ntp: Ntp, arrival: Ntp) {
        self.last_sr = sr_ntp.middle();
        self.last_sr_arrival = Some(arrival);
    }

    /// Packets received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Extended highest sequence number.
    fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Packets expected from the sequence numbers.
    pub fn expected(&self) -> u64 {
        if !self.started {
            return 0;
        }
        u64::from(self.extended_max().wrapping_sub(self.base_seq)) + 1
    }

    /// Packets lost (expected − received, 0 if duplicates outnumber losses).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    /// Interarrival jitter in RTP units.
    pub fn jitter(&self) -> u32 {
        self.jitter_q4 >> 4
    }

    /// The report block for now, and starts a new fraction-lost interval.
    /// None before the first packet.
    pub fn report_block(&mut self, now: Ntp) -> Option<ReportBlock> {
        if !self.started {
            return None;
        }
        let expected = self.expected();
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval == 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval).min(255) as u8
        };
        let cumulative = (expected as i64 - self.received as i64).clamp(-0x80_0000, 0x7f_ffff);
        let dlsr = self.last_sr_arrival.map_or(0, |at| {
            // 1/65536 s units: the middle 32 bits of the NTP difference.
            (now.0.saturating_sub(at.0) >> 16) as u32
        });
        Some(ReportBlock {
            ssrc: self.ssrc,
            fraction_lost,
            cumulative_lost: cumulative as i32,
            highest_seq: self.extended_max(),
            jitter: self.jitter(),
            lsr: self.last_sr,
            dlsr,
        })
    }
}

/// What we sent on a stream, for the SR's sender info.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// Our SSRC.
    pub ssrc: u32,
    /// Wall-clock time of the report.
    pub ntp: Ntp,
    /// The same instant on our RTP clock.
    pub rtp_ts: u32,
    /// Packets sent so far.
    pub packets: u32,
    /// Payload octets sent so far.
    pub octets: u32,
}

/// Writes a compound packet into `out`: an SR if `sender` is given (we sent
/// RTP), else an RR from `ssrc`; at most one report block; then SDES with
/// `cname` (required in every compound packet). Returns the length, or 0 if
/// `out` is too small.
pub fn write_report(
    out: &mut [u8],
    ssrc: u32,
    sender: Option<SenderInfo>,
    block: Option<ReportBlock>,
    cname: &[u8],
) -> usize {
    let cname = &cname[..cname.len().min(255)];
    let report_len =
        8 + if sender.is_some() { 20 } else { 0 } + if block.is_some() { 24 } else { 0 };
    // SDES: header, SSRC, CNAME item (type, length, text), END, padded to 4 bytes.
    let sdes_len = (8 + 2 + cname.len() + 1).div_ceil(4) * 4;
    if out.len() < report_len + sdes_len {
        return 0;
    }
    let rc = u8::from(block.is_some());
    let pt = if sender.is_some() { PT_SR } else { PT_RR };
    write_header(out, rc, pt, report_len);
    out[4..8].copy_from_slice(&ssrc.to_be_bytes());
    let mut at = 8;
    if let Some(s) = sender {
        out[at..at + 8].copy_from_slice(&s.ntp.0.to_be_bytes());
        out[at + 8..at + 12].copy_from_slice(&s.rtp_ts.to_be_bytes());
        out[at + 12..at + 16].copy_from_slice(&s.packets.to_be_bytes());
        out[at + 16..at + 20].copy_from_slice(&s.octets.to_be_bytes());
        at += 20;
    }
    if let Some(b) = block {
        out[at..at + 4].copy_from_slice(&b.ssrc.to_be_bytes());
        let lost = (b.cumulative_lost as u32) & 0x00ff_ffff;
        out[at + 4..at + 8]
            .copy_from_slice(&(u32::from(b.fraction_lost) << 24 | lost).to_be_bytes());
        out[at + 8..at + 12].copy_from_slice(&b.highest_seq.to_be_bytes());
        out[at + 12..at + 16].copy_from_slice(&b.jitter.to_be_bytes());
        out[at + 16..at + 20].copy_from_slice(&b.lsr.to_be_bytes());
        out[at + 20..at + 24].copy_from_slice(&b.dlsr.to_be_bytes());
        at += 24;
    }
    let sdes = &mut out[at..at + sdes_len];
    write_header(sdes, 1, PT_SDES, sdes_len);
    sdes[4..8].copy_from_slice(&ssrc.to_be_bytes());
    sdes[8] = 1; // CNAME
    sdes[9] = cname.len() as u8;
    sdes[10..10 + cname.len()].copy_from_slice(cname);
    // END item and padding are zeros.
    sdes[10 + cname.len()..].fill(0);
    at + sdes_len
}

fn write_header(out: &mut [u8], count: u8, pt: u8, len_bytes: usize) {
    out[0] = 0x80 | (count & 0x1f);
    out[1] = pt;
    out[2..4].copy_from_slice(&((len_bytes / 4 - 1) as u16).to_be_bytes());
}

/// What a received compound packet told us.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    /// The SR's NTP time, if the packet had one (for our next LSR).
    pub sender_ntp: Option<Ntp>,
    /// The report block about `our_ssrc`, if any.
    pub about_us: Option<ReportBlock>,
}

/// Reads a compound RTCP packet; None if it is not valid RTCP.
pub fn parse(packet: &[u8], our_ssrc: u32) -> Option<Received> {
    let mut found = Received::default();
    let mut rest = packet;
    if rest.len() < 4 || !matches!(rest[1], PT_SR | PT_RR) {
        // RFC 3550 §6.1: a compound packet starts with SR or RR.
        return None;
    }
    while rest.len() >= 4 {
        if rest[0] >> 6 != 2 {
            return None;
        }
        let count = usize::from(rest[0] & 0x1f);
        let pt = rest[1];
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        let body = rest.get(..len)?;
        let blocks_at = match pt {
            PT_SR => {
                let ntp = u64::from_be_bytes(body.get(8..16)?.try_into().ok()?);
                found.sender_ntp = Some(Ntp(ntp));
                28
            }
            PT_RR => 8,
            _ => {
                rest = &rest[len..];
                continue;
            }
        };
        for i in 0..count {
            let b = body.get(blocks_at + 24 * i..blocks_at + 24 * (i + 1))?;
            let word = |o: usize| u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            if word(0) == our_ssrc {
                let lost_word = word(4);
                // Sign-extend the 24-bit cumulative loss.
                let cumulative_lost = ((lost_word << 8) as i32) >> 8;
                found.about_us = Some(ReportBlock {
                    ssrc: word(0),
                    fraction_lost: (lost_word >> 24) as u8,
                    cumulative_lost,
                    highest_seq: word(8),
                    jitter: word(12),
                    lsr: word(16),
                    dlsr: word(20),
                });
            }
        }
        rest = &rest[len..];
    }
    Some(found)
}

/// Round-trip time from a report block about us that arrived at `arrival`
/// (RFC 3550 §6.4.1: A − LSR − DLSR); None if the block carries no LSR.
pub fn round_trip(block: &ReportBlock, arrival: Ntp) -> Option<Duration> {
    if block.lsr == 0 {
        return None;
    }
    let units = arrival
        .middle()
        .wrapping_sub(block.lsr)
        .wrapping_sub(block.dlsr);
    // A negative result (clock trouble) wraps to a huge value: reject it.
    if units > 0x8000_0000 {
        return None;
    }
    Some(Duration::from_micros(u64::from(units) * 1_000_000 / 65_536))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_of_the_unix_epoch_and_middle_bits() {
        assert_eq!(Ntp::from_system(UNIX_EPOCH).0, NTP_UNIX_OFFSET << 32);
        let half = Ntp::from_system(UNIX_EPOCH + Duration::from_millis(500));
        assert_eq!(half.0 & 0xffff_ffff, 0x8000_0000);
        assert_eq!(Ntp(0x0001_0002_0003_0004).middle(), 0x0002_0003);
    }

    #[test]
    fn loss_and_sequence_wrap() {
        let mut s = ReceptionStats::default();
        // 65534, 65535, (0 lost), 1, 2: one lost across the wrap.
        for seq in [65534u16, 65535, 1, 2] {
            s.on_rtp(7, seq, 0, 0);
        }
        assert_eq!(s.expected(), 5);
        assert_eq!(s.received(), 4);
        assert_eq!(s.lost(), 1);
        let b = s.report_block(Ntp(0)).unwrap();
        assert_eq!(b.highest_seq, 65536 + 2);
        assert_eq!(b.cumulative_lost, 1);
        assert_eq!(b.fraction_lost, 51, "1 of 5 expected, in 1/256");
        // Next interval: nothing lost.
        s.on_rtp(7, 3, 0, 0);
        assert_eq!(s.report_block(Ntp(0)).unwrap().fraction_lost, 0);
        // A late (reordered) packet does not move the highest sequence back.
        s.on_rtp(7, 65533, 0, 0);
        assert_eq!(s.report_block(Ntp(0)).unwrap().highest_seq, 65536 + 3);
    }

    #[test]
    fn jitter_follows_the_a8_formula() {
        // Constant transit: zero jitter.
        let mut s = ReceptionStats::default();
        for i in 0..50u32 {
            s.on_rtp(1, i as u16, i * 160, 1000 + i * 160);
        }
        assert_eq!(s.jitter(), 0);
        // Transit alternating by 80 units: J += (|D| - J)/16 converges to 80.
        let mut s = ReceptionStats::default();
        let mut reference = 0.0f64;
        for i in 0..400u32 {
            let extra = if i % 2 == 0 { 0 } else { 80 };
            s.on_rtp(1, i as u16, i * 160, 1000 + i * 160 + extra);
            if i > 0 {
                reference += (80.0 - reference) / 16.0;
            }
        }
        assert!(
            (f64::from(s.jitter()) - reference).abs() <= 1.0,
            "{} vs {reference}",
            s.jitter()
        );
        assert!(s.jitter() >= 78);
    }

    #[test]
    fn sender_report_layout_per_rfc3550() {
        let mut out = [0u8; MAX_COMPOUND];
        let block = ReportBlock {
            ssrc: 0x0102_0304,
            fraction_lost: 0x40,
            cumulative_lost: -2,
            highest_seq: 0x0001_0005,
            jitter: 12,
            lsr: 0xaabb_ccdd,
            dlsr: 0x0001_8000,
        };
        let sender = SenderInfo {
            ssrc: 0xdead_beef,
            ntp: Ntp(0x1122_3344_5566_7788),
            rtp_ts: 0x99aa_bbcc,
            packets: 1000,
            octets: 160_000,
        };
        let n = write_report(&mut out, 0xdead_beef, Some(sender), Some(block), b"cl");
        #[rustfmt::skip]
        let expected: [u8; 52 + 16] = [
            // SR header: V=2, RC=1, PT=200, length 12 words - 1 = 12.
            0x81, 200, 0x00, 0x0c,
            0xde, 0xad, 0xbe, 0xef,
            0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
            0x99, 0xaa, 0xbb, 0xcc,
            0x00, 0x00, 0x03, 0xe8,
            0x00, 0x02, 0x71, 0x00,
            // Report block.
            0x01, 0x02, 0x03, 0x04,
            0x40, 0xff, 0xff, 0xfe,
            0x00, 0x01, 0x00, 0x05,
            0x00, 0x00, 0x00, 0x0c,
            0xaa, 0xbb, 0xcc, 0xdd,
            0x00, 0x01, 0x80, 0x00,
            // SDES: SC=1, PT=202, 4 words - 1 = 3; CNAME "cl", END, padding.
            0x81, 202, 0x00, 0x03,
            0xde, 0xad, 0xbe, 0xef,
            0x01, 0x02, b'c', b'l',
            0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(&out[..n], &expected[..]);
        // Our parser reads back the block about 0x01020304 and the SR time.
        let got = parse(&out[..n], 0x0102_0304).unwrap();
        assert_eq!(got.about_us, Some(block));
        assert_eq!(got.sender_ntp, Some(sender.ntp));
    }

    #[test]
    fn receiver_report_without_blocks_and_rejects() {
        let mut out = [0u8; MAX_COMPOUND];
        let n = write_report(&mut out, 5, None, None, b"courtline");
        assert_eq!(&out[..8], &[0x80, 201, 0x00, 0x01, 0, 0, 0, 5]);
        assert_eq!(n, 8 + 20);
        assert_eq!(parse(&out[..n], 5), Some(Received::default()));
        assert_eq!(parse(&out[8..n], 5), None, "must start with SR or RR");
        assert_eq!(parse(&out[..n - 4], 5), None, "truncated");
        assert_eq!(write_report(&mut out[..10], 5, None, None, b"x"), 0);
    }

    #[test]
    fn round_trip_time_from_lsr_and_dlsr() {
        // RFC 3550 §6.4.1 example: A = 0xb710:8000 (46864.500 s),
        // LSR = 0xb705:2000 (46853.125 s), DLSR = 0x0005:4000 (5.250 s): RTT 6.125 s.
        let block = ReportBlock {
            ssrc: 1,
            fraction_lost: 0,
            cumulative_lost: 0,
            highest_seq: 0,
            jitter: 0,
            lsr: 0xb705_2000,
            dlsr: 0x0005_4000,
        };
        let arrival = Ntp(0xb710_8000u64 << 16);
        assert_eq!(
            round_trip(&block, arrival),
            Some(Duration::from_millis(6125))
        );
        assert_eq!(round_trip(&ReportBlock { lsr: 0, ..block }, arrival), None);
        // DLSR from our own stats: an SR at t, a report 1.5 s later.
        let mut s = ReceptionStats::default();
        s.on_rtp(1, 1, 0, 0);
        let t = Ntp(1000 << 32);
        s.on_sender_report(Ntp(0x0000_1234_5678_0000), t);
        let b = s.report_block(Ntp(t.0 + (3u64 << 31))).unwrap();
        assert_eq!(b.lsr, 0x1234_5678);
        assert_eq!(b.dlsr, 0x0001_8000);
    }
}
