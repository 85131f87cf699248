//! RFC 4733 telephone-events: how SIP phones send key presses out of band.
//!
//! In-band DTMF does not survive G.711 relays and jitter reliably, so callers'
//! key presses are taken only from `telephone-event` RTP packets.

/// Timestamps this far behind the newest event (1 s of an 8 kHz clock) are
/// late retransmissions of an event already reported; anything further back is
/// taken as a new stream whose timestamps restarted.
const REORDER_WINDOW: u32 = 8000;

/// One RFC 4733 telephone-event payload (4 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (RFC 4733 §3.2): 0–15 are the DTMF keys; others (flash, tones) exist.
    pub event: u8,
    /// Set on the final packets of an event, which are sent three times.
    pub end: bool,
    /// Power level in -dBm0 (0–63); kept so a relayed event is rewritten faithfully.
    pub volume: u8,
    /// Duration so far in RTP timestamp units; grows with each update packet.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Reads the first four bytes of an RTP payload; `None` if it is shorter.
    /// Extra bytes (further events in a redundant payload) are ignored.
    pub fn parse(payload: &[u8]) -> Option<TelephoneEvent> {
        let bytes: &[u8; 4] = payload.get(..4)?.try_into().ok()?;
        Some(TelephoneEvent {
            event: bytes[0],
            end: bytes[1] & 0x80 != 0,
            volume: bytes[1] & 0x3F,
            duration: u16::from_be_bytes([bytes[2], bytes[3]]),
        })
    }

    /// Writes the payload; the reserved bit is sent as 0 and volume is cut to 6 bits.
    pub fn write(&self, out: &mut [u8; 4]) {
        let end_bit = if self.end { 0x80 } else { 0 };
        let duration = self.duration.to_be_bytes();
        *out = [
            self.event,
            end_bit | (self.volume & 0x3F),
            duration[0],
            duration[1],
        ];
    }

    /// The key this event stands for (`0`–`9`, `*`, `#`, `A`–`D`); `None` for
    /// non-DTMF events.
    pub fn digit(&self) -> Option<char> {
        const KEYS: &[u8; 16] = b"0123456789*#ABCD";
        KEYS.get(self.event as usize).map(|&key| key as char)
    }
}

/// Turns a stream of telephone-event packets into key presses, once per event: RFC 4733 sends each event several times (same RTP timestamp) and the end packet three times.
#[derive(Debug, Default)]
pub struct DtmfDetector {
    /// RTP timestamp of the newest event seen; all its packets share it.
    last_timestamp: Option<u32>,
}

impl DtmfDetector {
    /// Feeds one telephone-event packet. Returns the key the first time an
    /// event (identified by its RTP timestamp) is seen, whether that first packet
    /// is an update or an end packet, so a lost start or end still counts once.
    pub fn on_packet(&mut self, rtp_timestamp: u32, payload: &[u8]) -> Option<char> {
        let event = TelephoneEvent::parse(payload)?;
        if let Some(last) = self.last_timestamp {
            let behind = last.wrapping_sub(rtp_timestamp);
            if behind < REORDER_WINDOW {
                // Same event (behind == 0) or a late packet of an earlier one.
                return None;
            }
        }
        self.last_timestamp = Some(rtp_timestamp);
        event.digit()
    }

    /// Forgets the last event, e.g. after a re-INVITE starts a new RTP stream.
    pub fn reset(&mut self) {
        self.last_timestamp = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Payload bytes: event, E|R|volume, duration (big-endian).
    fn feed(detector: &mut DtmfDetector, packets: &[(u32, [u8; 4])]) -> String {
        packets
            .iter()
            .filter_map(|(ts, payload)| detector.on_packet(*ts, payload))
            .collect()
    }

    #[test]
    fn parses_and_writes_rfc4733_payload() {
        // Event 1, end bit, volume 10, duration 1280 (160 ms at 8 kHz).
        let payload = [0x01, 0x8A, 0x05, 0x00];
        let event = TelephoneEvent::parse(&payload).unwrap();
        assert_eq!(
            event,
            TelephoneEvent {
                event: 1,
                end: true,
                volume: 10,
                duration: 1280
            }
        );
        let mut out = [0u8; 4];
        event.write(&mut out);
        assert_eq!(out, payload);
    }

    #[test]
    fn reserved_bit_is_ignored_and_short_payloads_rejected() {
        let event = TelephoneEvent::parse(&[0x0B, 0x4A, 0x00, 0xA0]).unwrap();
        assert!(!event.end);
        assert_eq!(event.volume, 10);
        assert_eq!(TelephoneEvent::parse(&[0x01, 0x8A, 0x05]), None);
        assert_eq!(TelephoneEvent::parse(&[]), None);
    }

    #[test]
    fn digits_cover_the_sixteen_dtmf_events() {
        let keys: String = (0u8..16)
            .filter_map(|event| {
                TelephoneEvent {
                    event,
                    end: false,
                    volume: 10,
                    duration: 0,
                }
                .digit()
            })
            .collect();
        assert_eq!(keys, "0123456789*#ABCD");
        let flash = TelephoneEvent {
            event: 16,
            end: false,
            volume: 10,
            duration: 0,
        };
        assert_eq!(flash.digit(), None);
    }

    #[test]
    fn one_key_press_per_event_despite_retransmissions() {
        let mut detector = DtmfDetector::default();
        let packets = [
            // '1': three updates and three end packets, all at timestamp 16000.
            (16000, [0x01, 0x0A, 0x00, 0xA0]),
            (16000, [0x01, 0x0A, 0x01, 0x40]),
            (16000, [0x01, 0x0A, 0x01, 0xE0]),
            (16000, [0x01, 0x8A, 0x03, 0x20]),
            (16000, [0x01, 0x8A, 0x03, 0x20]),
            (16000, [0x01, 0x8A, 0x03, 0x20]),
            // '#' (event 11) a second later.
            (24000, [0x0B, 0x0A, 0x00, 0xA0]),
            (24000, [0x0B, 0x0A, 0x01, 0x40]),
            (24000, [0x0B, 0x8A, 0x01, 0xE0]),
            (24000, [0x0B, 0x8A, 0x01, 0xE0]),
            (24000, [0x0B, 0x8A, 0x01, 0xE0]),
        ];
        assert_eq!(feed(&mut detector, &packets), "1#");
    }

    #[test]
    fn same_key_twice_counts_twice() {
        let mut detector = DtmfDetector::default();
        let packets = [
            (800, [0x05, 0x0A, 0x00, 0xA0]),
            (800, [0x05, 0x8A, 0x01, 0x40]),
            (4000, [0x05, 0x0A, 0x00, 0xA0]),
            (4000, [0x05, 0x8A, 0x01, 0x40]),
        ];
        assert_eq!(feed(&mut detector, &packets), "55");
    }

    #[test]
    fn event_whose_updates_were_lost_still_counts_from_its_end_packet() {
        let mut detector = DtmfDetector::default();
        let packets = [
            (1000, [0x09, 0x8A, 0x03, 0x20]),
            (1000, [0x09, 0x8A, 0x03, 0x20]),
            (1000, [0x09, 0x8A, 0x03, 0x20]),
        ];
        assert_eq!(feed(&mut detector, &packets), "9");
    }

    #[test]
    fn late_end_packet_of_previous_event_is_ignored() {
        let mut detector = DtmfDetector::default();
        let packets = [
            (8000, [0x02, 0x0A, 0x00, 0xA0]),
            (9600, [0x03, 0x0A, 0x00, 0xA0]),
            (8000, [0x02, 0x8A, 0x03, 0x20]),
        ];
        assert_eq!(feed(&mut detector, &packets), "23");
    }

    #[test]
    fn timestamps_wrapping_past_u32_max_still_work() {
        let mut detector = DtmfDetector::default();
        let packets = [
            (u32::MAX - 100, [0x04, 0x0A, 0x00, 0xA0]),
            (u32::MAX - 100, [0x04, 0x8A, 0x01, 0x40]),
            (2000, [0x00, 0x0A, 0x00, 0xA0]),
        ];
        assert_eq!(feed(&mut detector, &packets), "40");
    }

    #[test]
    fn restarted_stream_and_reset() {
        let mut detector = DtmfDetector::default();
        assert_eq!(
            detector.on_packet(900_000, &[0x07, 0x0A, 0, 160]),
            Some('7')
        );
        // Far behind: a new stream, not a late packet.
        assert_eq!(detector.on_packet(1_000, &[0x08, 0x0A, 0, 160]), Some('8'));
        detector.reset();
        assert_eq!(detector.on_packet(1_000, &[0x08, 0x0A, 0, 160]), Some('8'));
        // Non-DTMF events and short payloads yield nothing.
        assert_eq!(detector.on_packet(5_000, &[16, 0x0A, 0, 160]), None);
        assert_eq!(detector.on_packet(9_000, &[1, 0x0A]), None);
    }
}
