//! RFC 4733 telephone-events: how SIP phones send key presses out of band.
//!
//! In-band DTMF does not survive G.711 relays and jitter reliably, so callers'
//! key presses are taken only from `telephone-event` RTP packets (and SIP
//! INFO, in the call adapter). [`DtmfDetector`] turns received packets into
//! key presses; [`EventGenerator`] plays a key as packets of its own (a key
//! that arrived by SIP INFO, passed on to the other leg).

use std::collections::VecDeque;

/// Timestamps this far behind the newest event (1 s of an 8 kHz clock) are
/// late retransmissions of an event already reported; anything further back is
/// taken as a new stream whose timestamps restarted.
const REORDER_WINDOW: u32 = 8000;

/// DTMF keys in RFC 4733 event-code order (§3.2: 0–9, `*`, `#`, A–D).
const KEYS: &[u8; 16] = b"0123456789*#ABCD";
/// How long a generated key sounds: 160 ms, in 8 kHz timestamp units.
const GENERATED_UNITS: u16 = 1280;
/// Timestamp units per generated packet (one every 20 ms).
const UNITS_PER_PACKET: u16 = 160;
/// End packets sent per generated key (RFC 4733 §2.5.1.4: three).
const END_PACKETS: u8 = 3;
/// Power level of generated keys, −dBm0 (RFC 4733 §2.3.4; a typical phone's).
const GENERATED_VOLUME: u8 = 10;

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
        TelephoneEvent::key_of(self.event)
    }

    /// The key of an event code (`0`–`9`, `*`, `#`, `A`–`D`); `None` past 15.
    pub fn key_of(code: u8) -> Option<char> {
        KEYS.get(usize::from(code)).map(|&key| char::from(key))
    }

    /// The event code of a key (`0`–`9`, `*`, `#`, `A`–`D`, case-insensitive).
    pub fn code_of(digit: char) -> Option<u8> {
        let key = u8::try_from(digit.to_ascii_uppercase()).ok()?;
        KEYS.iter().position(|&k| k == key).map(|code| code as u8)
    }
}

/// Turns a stream of telephone-event packets into key presses, once per event: RFC 4733 sends each event several times (same RTP timestamp) and the end packet three times.
#[derive(Debug, Default)]
pub struct DtmfDetector {
    /// The newest event seen, if any.
    current: Option<HeardEvent>,
}

/// What the detector knows of the newest event.
#[derive(Debug, Clone, Copy)]
struct HeardEvent {
    /// Its RTP timestamp; all its packets share it.
    timestamp: u32,
    /// Its event code.
    event: u8,
    /// The longest duration any of its packets gave.
    duration: u16,
    /// Whether an end packet (E bit) arrived for it.
    ended: bool,
}

impl DtmfDetector {
    /// Feeds one telephone-event packet. Returns the key the first time an
    /// event (identified by its RTP timestamp) is seen, whether that first packet
    /// is an update or an end packet, so a lost start or end still counts once.
    /// A key held past the 16-bit duration (about 8 s) goes on in a new segment
    /// with a new timestamp (RFC 4733 §2.5.1.3): a segment that follows one
    /// which reached the maximum duration without its end bit is the same press.
    pub fn on_packet(&mut self, rtp_timestamp: u32, payload: &[u8]) -> Option<char> {
        let packet = TelephoneEvent::parse(payload)?;
        let heard = HeardEvent {
            timestamp: rtp_timestamp,
            event: packet.event,
            duration: packet.duration,
            ended: packet.end,
        };
        let Some(current) = self.current.as_mut() else {
            self.current = Some(heard);
            return packet.digit();
        };
        let behind = current.timestamp.wrapping_sub(rtp_timestamp);
        if behind == 0 {
            // Another packet of the same event: an update, or an end retransmission.
            current.duration = current.duration.max(packet.duration);
            current.ended |= packet.end;
            return None;
        }
        if behind < REORDER_WINDOW {
            // A late packet of an earlier event.
            return None;
        }
        let next_segment =
            !current.ended && current.event == packet.event && current.duration == u16::MAX;
        *current = heard;
        if next_segment {
            return None;
        }
        packet.digit()
    }
}

/// One generated telephone-event packet: what goes after our RTP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneratedPacket {
    /// Set on the first packet of an event (RFC 4733 §2.5.1.1).
    pub marker: bool,
    /// The event's RTP timestamp: when it started, the same in all its packets.
    pub timestamp: u32,
    /// The 4-byte payload.
    pub payload: [u8; 4],
}

/// Plays keys as RFC 4733 packets, one per 20 ms slot: a first packet with
/// the marker bit, updates with a growing duration, then three end packets;
/// keys queued meanwhile follow one after another.
#[derive(Debug, Default)]
pub struct EventGenerator {
    /// Event codes still to play, in order.
    queue: VecDeque<u8>,
    /// The key being played.
    playing: Option<Playing>,
}

/// Progress of the key being played.
#[derive(Debug, Clone, Copy)]
struct Playing {
    /// Its event code.
    event: u8,
    /// Its RTP timestamp (the stream's timestamp when its first packet went out).
    timestamp: u32,
    /// Duration given in the last packet.
    duration: u16,
    /// End packets sent so far.
    ends_sent: u8,
}

impl EventGenerator {
    /// Queues a key (an RFC 4733 event code).
    pub fn push(&mut self, event: u8) {
        self.queue.push_back(event);
    }

    /// Whether packets are still to come.
    pub fn is_active(&self) -> bool {
        self.playing.is_some() || !self.queue.is_empty()
    }

    /// The packet for the current 20 ms slot, if a key is being played;
    /// `stream_timestamp` is the stream's timestamp for this slot (a new key
    /// starts there). Each key: durations 160, 320, ... in 160-unit steps up to
    /// 1280 (160 ms); the packet reaching it and two more carry the end bit.
    pub fn next_packet(&mut self, stream_timestamp: u32) -> Option<GeneratedPacket> {
        let marker = self.playing.is_none();
        let playing = match self.playing.as_mut() {
            Some(playing) => playing,
            None => self.playing.insert(Playing {
                event: self.queue.pop_front()?,
                timestamp: stream_timestamp,
                duration: 0,
                ends_sent: 0,
            }),
        };
        playing.duration = (playing.duration + UNITS_PER_PACKET).min(GENERATED_UNITS);
        let end = playing.duration == GENERATED_UNITS;
        if end {
            playing.ends_sent += 1;
        }
        let mut payload = [0u8; 4];
        TelephoneEvent {
            event: playing.event,
            end,
            volume: GENERATED_VOLUME,
            duration: playing.duration,
        }
        .write(&mut payload);
        let packet = GeneratedPacket {
            marker,
            timestamp: playing.timestamp,
            payload,
        };
        if playing.ends_sent == END_PACKETS {
            self.playing = None;
        }
        Some(packet)
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
    fn restarted_stream_and_non_dtmf_events() {
        let mut detector = DtmfDetector::default();
        assert_eq!(
            detector.on_packet(900_000, &[0x07, 0x0A, 0, 160]),
            Some('7')
        );
        // Far behind: a new stream, not a late packet.
        assert_eq!(detector.on_packet(1_000, &[0x08, 0x0A, 0, 160]), Some('8'));
        // Non-DTMF events and short payloads yield nothing.
        assert_eq!(detector.on_packet(5_000, &[16, 0x0A, 0, 160]), None);
        assert_eq!(detector.on_packet(9_000, &[1, 0x0A]), None);
    }

    #[test]
    fn a_key_held_past_the_maximum_duration_counts_once() {
        // RFC 4733 §2.5.1.3: '5' held for more than 0xFFFF units (8.2 s). The
        // first segment ends at the maximum duration without the end bit; the
        // next segment starts 0xFFFF later with a new timestamp.
        let mut detector = DtmfDetector::default();
        let packets = [
            (40_000, [0x05, 0x0A, 0x00, 0xA0]),
            (40_000, [0x05, 0x0A, 0xFF, 0x00]),
            (40_000, [0x05, 0x0A, 0xFF, 0xFF]),
            (40_000 + 0xFFFF, [0x05, 0x0A, 0x00, 0xA0]),
            (40_000 + 0xFFFF, [0x05, 0x8A, 0x03, 0x20]),
            (40_000 + 0xFFFF, [0x05, 0x8A, 0x03, 0x20]),
            // The same key pressed again after that end: a new press.
            (40_000 + 0xFFFF + 4_000, [0x05, 0x0A, 0x00, 0xA0]),
        ];
        assert_eq!(feed(&mut detector, &packets), "55");
    }

    #[test]
    fn same_key_again_after_lost_end_packets_is_a_new_press() {
        // All end packets of the first '3' were lost; it never reached the
        // maximum duration, so the next timestamp is a second press.
        let mut detector = DtmfDetector::default();
        let packets = [
            (2_000, [0x03, 0x0A, 0x00, 0xA0]),
            (2_000, [0x03, 0x0A, 0x01, 0x40]),
            (4_000, [0x03, 0x0A, 0x00, 0xA0]),
            (4_000, [0x03, 0x8A, 0x01, 0x40]),
        ];
        assert_eq!(feed(&mut detector, &packets), "33");
    }

    #[test]
    fn key_codes_map_both_ways() {
        for (code, key) in "0123456789*#ABCD".chars().enumerate() {
            assert_eq!(TelephoneEvent::code_of(key), Some(code as u8));
        }
        assert_eq!(TelephoneEvent::code_of('b'), Some(13));
        assert_eq!(TelephoneEvent::code_of('x'), None);
        assert_eq!(TelephoneEvent::code_of('五'), None);
    }

    #[test]
    fn generated_key_is_the_rfc4733_packet_sequence() {
        // '#' (event 11) at stream timestamp 1000, then '1' queued behind it.
        let mut generator = EventGenerator::default();
        generator.push(11);
        generator.push(1);
        let mut packets = Vec::new();
        let mut ts = 1_000u32;
        while generator.is_active() {
            packets.push(generator.next_packet(ts).unwrap());
            ts += 160;
        }
        assert_eq!(generator.next_packet(ts), None);
        assert_eq!(packets.len(), 20, "10 packets per key");
        let expected_hash: Vec<[u8; 4]> = vec![
            [0x0B, 0x0A, 0x00, 0xA0],
            [0x0B, 0x0A, 0x01, 0x40],
            [0x0B, 0x0A, 0x01, 0xE0],
            [0x0B, 0x0A, 0x02, 0x80],
            [0x0B, 0x0A, 0x03, 0x20],
            [0x0B, 0x0A, 0x03, 0xC0],
            [0x0B, 0x0A, 0x04, 0x60],
            [0x0B, 0x8A, 0x05, 0x00],
            [0x0B, 0x8A, 0x05, 0x00],
            [0x0B, 0x8A, 0x05, 0x00],
        ];
        let payloads: Vec<[u8; 4]> = packets.iter().map(|p| p.payload).collect();
        assert_eq!(payloads[..10], expected_hash[..]);
        assert!(packets[..10].iter().all(|p| p.timestamp == 1_000));
        assert_eq!(
            packets.iter().filter(|p| p.marker).count(),
            2,
            "marker on each key's first packet"
        );
        assert!(packets[0].marker && packets[10].marker);
        // The second key starts where the stream is when its turn comes.
        assert_eq!(packets[10].timestamp, 1_000 + 10 * 160);
        assert_eq!(packets[10].payload, [0x01, 0x0A, 0x00, 0xA0]);
        assert_eq!(packets[19].payload, [0x01, 0x8A, 0x05, 0x00]);
        // What it generates, the detector reads as exactly those keys.
        let mut detector = DtmfDetector::default();
        let keys: String = packets
            .iter()
            .filter_map(|p| detector.on_packet(p.timestamp, &p.payload))
            .collect();
        assert_eq!(keys, "#1");
    }
}
