//! RFC 4028 session timers for the caller's leg, as a sans-IO timer.
//!
//! Trunks use session timers to find calls whose far end vanished without a
//! BYE. courtline negotiates the interval in its 200 OK, refreshes with
//! re-INVITE when it is the refresher, and otherwise expects the caller's
//! refresh in time; a session nobody refreshed is ended.

use std::time::{Duration, Instant};

use rsipstack::sip::Request;

/// RFC 4028's floor for Session-Expires and Min-SE, in seconds.
pub const RFC_MIN_SE: u32 = 90;

/// What the caller's INVITE and our policy agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Negotiation {
    /// No session timer on this call.
    Off,
    /// The requested interval is below our minimum: answer 422 with this Min-SE.
    TooSmall {
        /// Our minimum, for the `Min-SE` header.
        min_se: u32,
    },
    /// A timer runs; put these headers in the 200 OK.
    On {
        /// `Session-Expires` value for the 200 OK, e.g. `1800;refresher=uas`.
        session_expires: String,
        /// Whether to add `Require: timer` (the caller supports timers).
        require: bool,
        /// The timer itself.
        timer: SessionTimer,
    },
}

/// What a due timer asks the adapter to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerDue {
    /// We are the refresher: send a re-INVITE now.
    Refresh,
    /// Nobody refreshed in time: the session is dead, end the call.
    Expired,
}

/// A running session timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTimer {
    /// The negotiated Session-Expires.
    interval: Duration,
    /// True when courtline refreshes (refresher=uas).
    we_refresh: bool,
    /// When the session was last refreshed (or started).
    refreshed_at: Instant,
}

impl SessionTimer {
    /// When the adapter must call [`SessionTimer::handle_timeout`].
    pub fn poll_timeout(&self) -> Instant {
        if self.we_refresh {
            // RFC 4028 §10: the refresher refreshes at half the interval.
            self.refreshed_at + self.interval / 2
        } else {
            // §10: the other side gives up at the interval minus min(32 s, interval/3).
            self.refreshed_at + self.interval - (self.interval / 3).min(Duration::from_secs(32))
        }
    }

    /// A refresh (re-INVITE or UPDATE answered 2xx, either direction) happened.
    pub fn refreshed(&mut self, now: Instant) {
        self.refreshed_at = now;
    }

    /// What is due at `now`, if anything.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<TimerDue> {
        if now < self.poll_timeout() {
            return None;
        }
        if self.we_refresh {
            // Count the attempt as a refresh; a failed one ends the call separately.
            self.refreshed_at = now;
            Some(TimerDue::Refresh)
        } else {
            Some(TimerDue::Expired)
        }
    }

    /// Whether courtline is the refresher.
    pub fn we_refresh(&self) -> bool {
        self.we_refresh
    }
}

/// Negotiates the caller's session timer (RFC 4028 §9, UAS side).
///
/// `min_se` is our minimum, `preferred` the interval we pick when the caller
/// supports timers but asks for none; `0` for `preferred` turns timers off
/// unless the caller asks.
pub fn negotiate(request: &Request, min_se: u32, preferred: u32, now: Instant) -> Negotiation {
    let header = |full: &str, compact: &str| -> Option<String> {
        request.headers.iter().find_map(|h| {
            let text = h.to_string();
            let (name, value) = text.split_once(':')?;
            let name = name.trim();
            (name.eq_ignore_ascii_case(full) || name.eq_ignore_ascii_case(compact))
                .then(|| value.trim().to_string())
        })
    };
    let supports_timer = request.headers.iter().any(|h| {
        let text = h.to_string();
        text.split_once(':').is_some_and(|(name, value)| {
            let name = name.trim();
            (name.eq_ignore_ascii_case("supported") || name.eq_ignore_ascii_case("k"))
                && value
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("timer"))
        })
    });
    let min_se = min_se.max(RFC_MIN_SE);
    let requested = header("session-expires", "x").and_then(|value| {
        let mut parts = value.split(';');
        let seconds: u32 = parts.next()?.trim().parse().ok()?;
        let refresher = parts.find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("refresher")
                .then(|| v.trim().to_ascii_lowercase())
        });
        Some((seconds, refresher))
    });
    // The caller's own Min-SE raises ours (§9).
    let their_min = header("min-se", "min-se")
        .and_then(|v| v.split(';').next()?.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let (seconds, refresher) = match requested {
        Some((seconds, _)) if seconds < min_se => return Negotiation::TooSmall { min_se },
        Some((seconds, refresher)) => (seconds.max(their_min), refresher),
        None if supports_timer && preferred > 0 => (preferred.max(min_se).max(their_min), None),
        None => return Negotiation::Off,
    };
    // A caller that does not support timers cannot refresh: we must (§9).
    let we_refresh = !(supports_timer && refresher.as_deref() == Some("uac"));
    Negotiation::On {
        session_expires: format!(
            "{seconds};refresher={}",
            if we_refresh { "uas" } else { "uac" }
        ),
        require: supports_timer,
        timer: SessionTimer {
            interval: Duration::from_secs(u64::from(seconds)),
            we_refresh,
            refreshed_at: now,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::sip::SipMessage;

    fn invite(extra: &str) -> Request {
        let text = format!(
            "INVITE sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-t\r\nFrom: <sip:b@h>;tag=1\r\nTo: <sip:a@h>\r\nCall-ID: t@h\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match SipMessage::try_from(text.as_str()).unwrap() {
            SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn no_timer_unless_asked_or_supported() {
        let now = Instant::now();
        assert_eq!(negotiate(&invite(""), 90, 1800, now), Negotiation::Off);
        assert_eq!(
            negotiate(&invite("Supported: timer\r\n"), 90, 0, now),
            Negotiation::Off
        );
    }

    #[test]
    fn caller_as_refresher() {
        let now = Instant::now();
        let n = negotiate(
            &invite("Supported: timer\r\nSession-Expires: 300;refresher=uac\r\n"),
            90,
            1800,
            now,
        );
        let Negotiation::On {
            session_expires,
            require,
            mut timer,
        } = n
        else {
            panic!("{n:?}")
        };
        assert_eq!(session_expires, "300;refresher=uac");
        assert!(require);
        assert!(!timer.we_refresh());
        // Expires at 300 - min(32, 100) = 268 s without a refresh.
        assert_eq!(timer.poll_timeout(), now + Duration::from_secs(268));
        assert_eq!(timer.handle_timeout(now + Duration::from_secs(267)), None);
        timer.refreshed(now + Duration::from_secs(200));
        assert_eq!(timer.handle_timeout(now + Duration::from_secs(300)), None);
        assert_eq!(
            timer.handle_timeout(now + Duration::from_secs(468)),
            Some(TimerDue::Expired)
        );
    }

    #[test]
    fn we_refresh_at_half_the_interval() {
        let now = Instant::now();
        let Negotiation::On {
            session_expires,
            mut timer,
            ..
        } = negotiate(&invite("k: timer\r\nx: 600\r\n"), 90, 1800, now)
        else {
            panic!()
        };
        assert_eq!(session_expires, "600;refresher=uas");
        assert_eq!(timer.poll_timeout(), now + Duration::from_secs(300));
        assert_eq!(
            timer.handle_timeout(now + Duration::from_secs(300)),
            Some(TimerDue::Refresh)
        );
        assert_eq!(timer.poll_timeout(), now + Duration::from_secs(600));
    }

    #[test]
    fn caller_without_timer_support_means_we_refresh_without_require() {
        let now = Instant::now();
        let Negotiation::On {
            session_expires,
            require,
            ..
        } = negotiate(
            &invite("Session-Expires: 1800;refresher=uac\r\n"),
            90,
            1800,
            now,
        )
        else {
            panic!()
        };
        assert_eq!(session_expires, "1800;refresher=uas");
        assert!(!require);
    }

    #[test]
    fn too_small_gets_422_and_min_se_is_honoured() {
        let now = Instant::now();
        assert_eq!(
            negotiate(
                &invite("Supported: timer\r\nSession-Expires: 60\r\n"),
                120,
                1800,
                now
            ),
            Negotiation::TooSmall { min_se: 120 }
        );
        assert_eq!(
            negotiate(&invite("Session-Expires: 60\r\n"), 30, 1800, now),
            Negotiation::TooSmall { min_se: RFC_MIN_SE },
            "never below RFC 4028's 90 s"
        );
        let Negotiation::On {
            session_expires, ..
        } = negotiate(&invite("Supported: timer\r\nMin-SE: 900\r\n"), 90, 600, now)
        else {
            panic!()
        };
        assert_eq!(session_expires, "900;refresher=uas");
    }
}
