//! 20 ms packet pacing without drift or catch-up bursts.
//!
//! Slot `n` is due at `origin + n × 20 ms`, computed from the origin every time,
//! so timer jitter never accumulates. A task that wakes late sends the one
//! packet for the latest due slot and skips the slots it missed: the listener
//! gets a short gap (its jitter buffer sees it from the timestamp) rather than a
//! burst of stale packets.

use std::time::{Duration, Instant};

/// One packet every 20 ms.
pub const PACKET_INTERVAL: Duration = Duration::from_millis(20);

/// RTP timestamp units per packet at 8 kHz.
pub const SAMPLES_PER_PACKET: u32 = 160;

/// Slot clock for one outgoing stream.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Time of slot 0.
    origin: Instant,
    /// The first slot not yet sent.
    next_slot: u64,
}

impl Pacer {
    /// A pacer whose slot 0 is due at `origin`.
    pub fn new(origin: Instant) -> Pacer {
        Pacer {
            origin,
            next_slot: 0,
        }
    }

    /// When slot 0 is (was) due.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// When the next packet is due.
    pub fn deadline(&self) -> Instant {
        self.slot_time(self.next_slot)
    }

    /// The slot to send at `now`, if one is due; missed slots are skipped.
    pub fn take_due(&mut self, now: Instant) -> Option<u64> {
        if now < self.deadline() {
            return None;
        }
        let slot = self.slot_at(now).max(self.next_slot);
        self.next_slot = slot + 1;
        Some(slot)
    }

    /// The slot that `now` falls in (for anchoring relayed packets).
    pub fn slot_at(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin);
        (elapsed.as_micros() / PACKET_INTERVAL.as_micros()) as u64
    }

    /// RTP timestamp offset of a slot from the stream's base timestamp.
    pub fn timestamp_offset(slot: u64) -> u32 {
        // Wrapping is what RTP timestamps do (RFC 3550 §5.1).
        (slot as u32).wrapping_mul(SAMPLES_PER_PACKET)
    }

    fn slot_time(&self, slot: u64) -> Instant {
        // u32 slots cover 2.7 years of one call; saturate rather than overflow.
        let slot = u32::try_from(slot).unwrap_or(u32::MAX);
        self.origin + PACKET_INTERVAL * slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_time_wakeups_send_every_slot() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        for n in 0..1000u64 {
            let deadline = p.deadline();
            assert_eq!(
                deadline,
                t0 + PACKET_INTERVAL * n as u32,
                "no drift at slot {n}"
            );
            assert_eq!(p.take_due(deadline), Some(n));
            assert_eq!(p.take_due(deadline), None, "one packet per slot");
        }
    }

    #[test]
    fn slightly_late_wakeups_do_not_drift() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        for n in 0..500u64 {
            // Every wake-up is 3 ms late; the schedule must not slide.
            let woke = p.deadline() + Duration::from_millis(3);
            assert_eq!(p.take_due(woke), Some(n));
        }
        assert_eq!(p.deadline(), t0 + PACKET_INTERVAL * 500);
    }

    #[test]
    fn long_stall_skips_instead_of_bursting() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        assert_eq!(p.take_due(t0), Some(0));
        // Stalled for 95 ms: slots 1..=3 are gone, slot 4 is sent once.
        let woke = t0 + Duration::from_millis(95);
        assert_eq!(p.take_due(woke), Some(4));
        assert_eq!(p.take_due(woke), None);
        assert_eq!(p.deadline(), t0 + Duration::from_millis(100));
    }

    #[test]
    fn early_wakeup_sends_nothing() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        p.take_due(t0);
        assert_eq!(p.take_due(t0 + Duration::from_millis(19)), None);
    }

    #[test]
    fn timestamps_follow_slots_and_wrap() {
        assert_eq!(Pacer::timestamp_offset(0), 0);
        assert_eq!(Pacer::timestamp_offset(3), 480);
        assert_eq!(
            Pacer::timestamp_offset(u64::from(u32::MAX / 160 + 1)),
            (u32::MAX / 160 + 1).wrapping_mul(160)
        );
    }
}
