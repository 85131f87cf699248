//! One outgoing RTP stream as the far end sees it: a single SSRC with a
//! monotonic sequence and timestamps that follow wall time, no matter whether
//! the payload comes from the prompt, the ringback tone or the other leg.

use rtp_rs::RtpReader;

use super::pacer::Pacer;

/// Bytes of an RTP header without CSRCs or extensions.
pub const HEADER_LEN: usize = 12;

/// Largest RTP packet courtline sends or accepts (fits any Ethernet MTU).
pub const MAX_PACKET: usize = 1500;

/// Header state of one outgoing stream.
#[derive(Debug)]
pub struct OutboundStream {
    /// Random per RFC 3550 §5.1 so streams never collide.
    ssrc: u32,
    /// Next sequence number; random start per RFC 3550.
    next_seq: u16,
    /// Timestamp of pacer slot 0; random start per RFC 3550.
    ts_base: u32,
    /// Set when the next packet starts a talkspurt (new source), per RFC 3551 §4.1.
    marker_pending: bool,
    /// Where relayed packets of the current source are anchored in our timeline.
    relay_anchor: Option<RelayAnchor>,
    /// Packets written so far, for the call record.
    packets_sent: u64,
    /// Payload octets written so far, for RTCP.
    octets_sent: u64,
    /// Timestamp of the last header written: where a relayed packet landed, for the recording.
    last_timestamp: u32,
}

/// Maps an incoming source's timestamps onto ours.
#[derive(Debug, Clone, Copy)]
struct RelayAnchor {
    /// The relayed source's SSRC: a new SSRC means a new anchor.
    source_ssrc: u32,
    /// Its timestamp at the anchor point.
    source_ts: u32,
    /// Our timestamp at the anchor point.
    our_ts: u32,
}

impl OutboundStream {
    /// A stream with random SSRC, sequence and timestamp origin.
    pub fn new() -> OutboundStream {
        OutboundStream {
            ssrc: rand::random(),
            next_seq: rand::random(),
            ts_base: rand::random(),
            marker_pending: true,
            relay_anchor: None,
            packets_sent: 0,
            octets_sent: 0,
            last_timestamp: 0,
        }
    }

    /// This stream's SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Packets written so far.
    pub fn packets_sent(&self) -> u64 {
        self.packets_sent
    }

    /// Marks the next packet as the start of a talkspurt (a source switch).
    pub fn start_talkspurt(&mut self) {
        self.marker_pending = true;
        self.relay_anchor = None;
    }

    /// Our timestamp for a pacer slot.
    pub fn slot_timestamp(&self, slot: u64) -> u32 {
        self.ts_base.wrapping_add(Pacer::timestamp_offset(slot))
    }

    /// The header of a locally generated packet (prompt, tone, silence) for
    /// `slot`; the payload is a shared pre-encoded frame sent after it.
    pub fn paced_header(
        &mut self,
        payload_type: u8,
        slot: u64,
        payload_len: usize,
    ) -> [u8; HEADER_LEN] {
        let ts = self.slot_timestamp(slot);
        self.header(payload_type, ts, payload_len)
    }

    /// The header for a packet relayed from another stream: our SSRC and
    /// sequence, its timestamps shifted onto our timeline (anchored at
    /// `current_slot` when its source first appears).
    pub fn relayed_header(
        &mut self,
        payload_type: u8,
        incoming: &RtpReader<'_>,
        current_slot: u64,
        payload_len: usize,
    ) -> [u8; HEADER_LEN] {
        let source_ssrc = incoming.ssrc();
        let source_ts = incoming.timestamp();
        let anchor = match self.relay_anchor {
            Some(a) if a.source_ssrc == source_ssrc => a,
            _ => {
                self.marker_pending = true;
                let a = RelayAnchor {
                    source_ssrc,
                    source_ts,
                    our_ts: self.slot_timestamp(current_slot),
                };
                self.relay_anchor = Some(a);
                a
            }
        };
        let ts = anchor
            .our_ts
            .wrapping_add(source_ts.wrapping_sub(anchor.source_ts));
        self.marker_pending |= incoming.mark();
        self.header(payload_type, ts, payload_len)
    }

    /// The header of a telephone-event packet courtline generates (RFC 4733):
    /// all packets of one key carry the timestamp it started at; `marker` on
    /// its first.
    pub fn event_header(
        &mut self,
        payload_type: u8,
        timestamp: u32,
        marker: bool,
        payload_len: usize,
    ) -> [u8; HEADER_LEN] {
        self.marker_pending |= marker;
        self.header(payload_type, timestamp, payload_len)
    }

    /// RTP timestamp of the last packet written.
    pub fn last_timestamp(&self) -> u32 {
        self.last_timestamp
    }

    /// Payload octets sent so far (for RTCP sender reports).
    pub fn octets_sent(&self) -> u64 {
        self.octets_sent
    }

    /// Our timestamp `elapsed` after slot 0 (the RTP time in RTCP sender reports).
    pub fn timestamp_at(&self, elapsed: std::time::Duration) -> u32 {
        let units = elapsed.as_micros() * u128::from(super::pacer::SAMPLES_PER_PACKET)
            / super::pacer::PACKET_INTERVAL.as_micros();
        self.ts_base.wrapping_add(units as u32)
    }

    fn header(&mut self, payload_type: u8, ts: u32, payload_len: usize) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0] = 0x80;
        h[1] = (payload_type & 0x7f) | if self.marker_pending { 0x80 } else { 0 };
        h[2..4].copy_from_slice(&self.next_seq.to_be_bytes());
        h[4..8].copy_from_slice(&ts.to_be_bytes());
        h[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        self.marker_pending = false;
        self.last_timestamp = ts;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.packets_sent += 1;
        self.octets_sent += payload_len as u64;
        h
    }
}

impl Default for OutboundStream {
    fn default() -> Self {
        OutboundStream::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtp_rs::{RtpPacketBuilder, Seq};

    /// Header then payload, as the engine sends them.
    fn packet(header: [u8; HEADER_LEN], payload: &[u8], buf: &mut [u8]) -> usize {
        buf[..HEADER_LEN].copy_from_slice(&header);
        buf[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
        HEADER_LEN + payload.len()
    }

    fn read(buf: &[u8]) -> (bool, u16, u32, u32, u8, Vec<u8>) {
        let r = RtpReader::new(buf).unwrap();
        (
            r.mark(),
            u16::from(r.sequence_number()),
            r.timestamp(),
            r.ssrc(),
            r.payload_type(),
            r.payload().to_vec(),
        )
    }

    #[test]
    fn paced_packets_are_continuous_with_marker_on_first() {
        let mut s = OutboundStream::new();
        let mut buf = [0u8; MAX_PACKET];
        let payload = [0xffu8; 160];
        let mut first = None;
        for slot in 0..5u64 {
            let n = packet(s.paced_header(0, slot, 160), &payload, &mut buf);
            assert_eq!(n, HEADER_LEN + 160);
            let (mark, seq, ts, ssrc, pt, body) = read(&buf[..n]);
            assert_eq!(mark, slot == 0);
            assert_eq!(ssrc, s.ssrc());
            assert_eq!(pt, 0);
            assert_eq!(body, payload);
            let (seq0, ts0) = *first.get_or_insert((seq, ts));
            assert_eq!(seq, seq0.wrapping_add(slot as u16));
            assert_eq!(ts, ts0.wrapping_add(160 * slot as u32));
        }
        assert_eq!(s.packets_sent(), 5);
        assert_eq!(s.octets_sent(), 5 * 160);
    }

    #[test]
    fn relayed_packets_keep_our_ssrc_and_follow_source_timing() {
        let mut s = OutboundStream::new();
        let mut buf = [0u8; MAX_PACKET];
        for slot in 0..10 {
            packet(s.paced_header(8, slot, 160), &[0xd5; 160], &mut buf);
        }
        let (_, last_seq, last_ts, ..) = read(&buf[..HEADER_LEN + 160]);

        // The operator's stream: its own SSRC, sequence and timestamps.
        let mut src = [0u8; 200];
        let mut out = [0u8; MAX_PACKET];
        let mut relayed = Vec::new();
        for i in 0..3u32 {
            let n = RtpPacketBuilder::new()
                .payload_type(8)
                .ssrc(0xdead_beef)
                .sequence(Seq::from(40_000 + i as u16))
                .timestamp(1_000_000 + 160 * i)
                .payload(&[i as u8; 160])
                .build_into(&mut src)
                .unwrap();
            let reader = RtpReader::new(&src[..n]).unwrap();
            let payload = reader.payload().to_vec();
            let m = packet(
                s.relayed_header(8, &reader, 12, payload.len()),
                &payload,
                &mut out,
            );
            relayed.push(read(&out[..m]));
        }
        assert!(relayed[0].0, "source switch carries the marker bit");
        assert!(!relayed[1].0 && !relayed[2].0);
        for (i, (_, seq, ts, ssrc, _, body)) in relayed.iter().enumerate() {
            assert_eq!(*ssrc, s.ssrc());
            assert_eq!(*seq, last_seq.wrapping_add(1 + i as u16));
            assert_eq!(*ts, last_ts.wrapping_add(160 * (3 + i as u32)));
            assert_eq!(body[0], i as u8);
        }
    }

    #[test]
    fn sequence_and_timestamp_wrap() {
        let mut s = OutboundStream::new();
        s.next_seq = u16::MAX;
        s.ts_base = u32::MAX - 100;
        let mut buf = [0u8; MAX_PACKET];
        packet(s.paced_header(0, 0, 160), &[0; 160], &mut buf);
        packet(s.paced_header(0, 1, 160), &[0; 160], &mut buf);
        let (_, seq, ts, ..) = read(&buf[..HEADER_LEN + 160]);
        assert_eq!(seq, 0);
        assert_eq!(ts, 59);
    }
}
