//! The operator's report key sequence (`[reports] operator_keys`), sans-IO.
//!
//! While bridged, the operator's keys pass through [`ReportKeys`] before they
//! reach the caller: a key that could still be the start of the sequence is
//! held back; once the held keys cannot match any more, or no key came for
//! `key_timeout_ms`, they are passed on unchanged and in order; the whole
//! sequence is swallowed and reported as [`KeyOutput::Matched`]. No clock and
//! no sockets: the call flow feeds it keys and times and wakes it at
//! [`ReportKeys::poll_timeout`].

use std::time::{Duration, Instant};

/// What the matcher decided about the keys it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOutput {
    /// These keys cannot be (part of) the sequence: pass them on to the caller, in order.
    Pass(Vec<char>),
    /// The operator pressed the whole sequence: it is not passed on.
    Matched,
}

/// Matches the operator's keys against the report sequence.
#[derive(Debug, Clone)]
pub struct ReportKeys {
    /// The sequence, upper case; empty means off (every key passes at once).
    sequence: Vec<char>,
    /// How long held keys wait for the next key.
    timeout: Duration,
    /// Keys held back: always a proper prefix of `sequence`.
    held: Vec<char>,
    /// When the held keys are passed on if no key comes; set while `held` is not empty.
    deadline: Option<Instant>,
}

impl ReportKeys {
    /// A matcher for `sequence` (keys as RFC 4733 and SIP INFO give them:
    /// `0`-`9`, `*`, `#`, `A`-`D`; case is ignored); `""` matches nothing.
    pub fn new(sequence: &str, timeout: Duration) -> ReportKeys {
        ReportKeys {
            sequence: sequence.chars().map(|c| c.to_ascii_uppercase()).collect(),
            timeout,
            held: Vec::new(),
            deadline: None,
        }
    }

    /// Takes one key pressed at `now`. Keys that can no longer be part of
    /// the sequence come back as `Pass` (held ones first); a completed
    /// sequence as `Matched`; `None` while the key is held back.
    pub fn handle_key(&mut self, key: char, now: Instant) -> Option<KeyOutput> {
        self.held.push(key.to_ascii_uppercase());
        if self.held == self.sequence {
            self.held.clear();
            self.deadline = None;
            return Some(KeyOutput::Matched);
        }
        // Give up keys from the front until what is left could still start the
        // sequence (with "*7", "**" passes the first '*' and holds the second).
        let mut passed = Vec::new();
        while !self.held.is_empty() && !self.sequence.starts_with(&self.held) {
            passed.push(self.held.remove(0));
        }
        self.deadline = (!self.held.is_empty()).then(|| now + self.timeout);
        (!passed.is_empty()).then_some(KeyOutput::Pass(passed))
    }

    /// When [`ReportKeys::handle_timeout`] must be called: while keys are held.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Passes the held keys on once their time is up.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<KeyOutput> {
        match self.deadline {
            Some(deadline) if now >= deadline => {
                self.deadline = None;
                Some(KeyOutput::Pass(std::mem::take(&mut self.held)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(1500);

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn pass(keys: &str) -> Option<KeyOutput> {
        Some(KeyOutput::Pass(keys.chars().collect()))
    }

    #[test]
    fn the_sequence_is_swallowed_and_matched() {
        let t0 = Instant::now();
        let mut keys = ReportKeys::new("*7", TIMEOUT);
        assert_eq!(keys.handle_key('*', t0), None);
        assert_eq!(keys.poll_timeout(), Some(ms(t0, 1500)));
        assert_eq!(keys.handle_key('7', ms(t0, 400)), Some(KeyOutput::Matched));
        assert_eq!(keys.poll_timeout(), None);
        // A second time in the same call matches again.
        assert_eq!(keys.handle_key('*', ms(t0, 5000)), None);
        assert_eq!(keys.handle_key('7', ms(t0, 5100)), Some(KeyOutput::Matched));
    }

    #[test]
    fn an_ordinary_key_passes_at_once() {
        let t0 = Instant::now();
        let mut keys = ReportKeys::new("*7", TIMEOUT);
        assert_eq!(keys.handle_key('5', t0), pass("5"));
        assert_eq!(keys.poll_timeout(), None);
        assert_eq!(keys.handle_key('7', t0), pass("7"));
    }

    #[test]
    fn a_lone_star_passes_when_its_time_is_up() {
        let t0 = Instant::now();
        let mut keys = ReportKeys::new("*7", TIMEOUT);
        assert_eq!(keys.handle_key('*', t0), None);
        assert_eq!(keys.handle_timeout(ms(t0, 1499)), None);
        assert_eq!(keys.handle_timeout(ms(t0, 1500)), pass("*"));
        assert_eq!(keys.poll_timeout(), None);
        assert_eq!(keys.handle_timeout(ms(t0, 9000)), None);
        assert_eq!(keys.handle_key('5', ms(t0, 2000)), pass("5"));
    }

    #[test]
    fn a_star_then_another_key_passes_both_in_order() {
        let t0 = Instant::now();
        let mut keys = ReportKeys::new("*7", TIMEOUT);
        assert_eq!(keys.handle_key('*', t0), None);
        assert_eq!(keys.handle_key('5', ms(t0, 300)), pass("*5"));
        assert_eq!(keys.poll_timeout(), None);
    }

    #[test]
    fn a_repeated_start_keeps_the_latest_one_held() {
        let t0 = Instant::now();
        let mut keys = ReportKeys::new("*7", TIMEOUT);
        assert_eq!(keys.handle_key('*', t0), None);
        assert_eq!(keys.handle_key('*', ms(t0, 1000)), pass("*"));
        // The timeout restarts with the key held now.
        assert_eq!(keys.poll_timeout(), Some(ms(t0, 2500)));
        assert_eq!(keys.handle_key('7', ms(t0, 2000)), Some(KeyOutput::Matched));
    }

    #[test]
    fn longer_sequences_give_up_only_what_cannot_match() {
        let t0 = Instant::now();
        let mut keys = ReportKeys::new("#1#2", TIMEOUT);
        for key in ['#', '1', '#'] {
            assert_eq!(keys.handle_key(key, t0), None);
        }
        // "#1##" cannot match; "#" can still start it: "#1#" passes.
        assert_eq!(keys.handle_key('#', t0), pass("#1#"));
        assert_eq!(keys.handle_key('1', t0), None);
        assert_eq!(keys.handle_key('#', t0), None);
        assert_eq!(keys.handle_key('2', t0), Some(KeyOutput::Matched));
    }

    #[test]
    fn case_is_ignored_and_an_empty_sequence_passes_everything() {
        let t0 = Instant::now();
        let mut keys = ReportKeys::new("*d", TIMEOUT);
        assert_eq!(keys.handle_key('*', t0), None);
        assert_eq!(keys.handle_key('D', t0), Some(KeyOutput::Matched));
        let mut off = ReportKeys::new("", TIMEOUT);
        assert_eq!(off.handle_key('*', t0), pass("*"));
        assert_eq!(off.poll_timeout(), None);
    }
}
