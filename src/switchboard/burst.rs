//! Tables that grow with a burst of calls give their memory back after it.
//!
//! A `VecDeque` or `HashMap` keeps the capacity it once needed. A minute after
//! target 1's load of #16 (600 calls/s), a heap profile found the delivery
//! queues and the dialog routing table still holding ~1.6 MiB sized for the
//! burst's peak, in pages a quiet switchboard never touched again
//! (BENCHMARKS.md, "What a minute after holds, against idle"); after an
//! overload, the INVITE arrival notes (`sip/arrivals.rs`) did the same.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};

/// The capacity a table holding `len` entries in `capacity` slots should
/// shrink to, if any: once at most a quarter of it is used, to twice what it
/// holds, never below `floor`, and only if that at least halves it.
/// Shrinking only at a quarter, and to twice the length, keeps a table under
/// steady load from reallocating back and forth; the halving, a `HashMap`
/// (which rounds its room up to a power of two) from rehashing on every call.
pub(crate) fn shrunk_capacity(len: usize, capacity: usize, floor: usize) -> Option<usize> {
    let target = len.saturating_mul(2).max(floor);
    (len.saturating_mul(4) <= capacity && target.saturating_mul(2) <= capacity).then_some(target)
}

/// A table that can hand back the room a burst made it take.
pub(crate) trait ShrinkAfterBurst {
    /// Shrinks to [`shrunk_capacity`] of the current length, if that says so.
    fn shrink_after_burst(&mut self, floor: usize);
}

impl<T> ShrinkAfterBurst for VecDeque<T> {
    fn shrink_after_burst(&mut self, floor: usize) {
        if let Some(capacity) = shrunk_capacity(self.len(), self.capacity(), floor) {
            self.shrink_to(capacity);
        }
    }
}

impl<K: Eq + Hash, V, S: BuildHasher> ShrinkAfterBurst for HashMap<K, V, S> {
    fn shrink_after_burst(&mut self, floor: usize) {
        if let Some(capacity) = shrunk_capacity(self.len(), self.capacity(), floor) {
            self.shrink_to(capacity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_shrinks_only_once_three_quarters_are_unused() {
        assert_eq!(shrunk_capacity(0, 32_768, 64), Some(64));
        assert_eq!(shrunk_capacity(1_000, 32_768, 64), Some(2_000));
        assert_eq!(shrunk_capacity(8_192, 32_768, 64), Some(16_384));
        assert_eq!(shrunk_capacity(8_193, 32_768, 64), None);
    }

    #[test]
    fn a_table_never_shrinks_below_its_floor_or_grows() {
        assert_eq!(shrunk_capacity(0, 128, 64), Some(64));
        assert_eq!(shrunk_capacity(0, 127, 64), None);
        assert_eq!(shrunk_capacity(0, 0, 64), None);
        assert_eq!(shrunk_capacity(10, 48, 64), None);
        assert_eq!(shrunk_capacity(1 << 40, 1 << 41, 0), None);
    }

    #[test]
    fn a_queue_drained_after_a_burst_gives_its_room_back() {
        let mut queue: VecDeque<u64> = (0..30_000).collect();
        queue.drain(..29_900);
        queue.shrink_after_burst(64);
        assert!(queue.capacity() < 1_000, "capacity {}", queue.capacity());
        assert_eq!(queue.len(), 100);
        assert_eq!(queue.front(), Some(&29_900));
    }

    #[test]
    fn a_map_emptied_after_a_burst_gives_its_room_back() {
        let mut map: HashMap<String, u32> = (0..20_000).map(|n| (n.to_string(), n)).collect();
        map.retain(|_, n| *n < 10);
        map.shrink_after_burst(64);
        assert!(map.capacity() < 1_000, "capacity {}", map.capacity());
        assert_eq!(map.get("7"), Some(&7));
        let before = map.capacity();
        map.shrink_after_burst(64);
        assert_eq!(map.capacity(), before, "a table at its size stays");
    }
}
