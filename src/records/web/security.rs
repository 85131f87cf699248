//! The console's security decisions, without sockets: which `Host` headers are
//! ours, the response headers, sessions that expire, CSRF tokens and the sign-in
//! lockout. Time is passed in so every rule is tested without waiting.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::contract::pb::Role;

/// Content-Security-Policy of every response: nothing inline, nothing from elsewhere,
/// never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The headers every console response carries.
pub const SECURITY_HEADERS: [(&str, &str); 6] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cache-control", "no-store"),
];

/// Failed sign-ins allowed per source address within [`LOCKOUT_WINDOW`].
pub const LOCKOUT_FAILURES: usize = 5;
/// How far back failed sign-ins count.
pub const LOCKOUT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// What the `Host` header check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostCheck {
    /// One of the configured names.
    Ours,
    /// No `Host` header, or one that is not text: 400.
    Missing,
    /// Another name: 421 (a page elsewhere reaching us by DNS rebinding).
    Foreign,
}

/// Whether `host` (the header, maybe with a port) names this console: it must equal
/// one of `allowed` (names or `name:port`) with or without its port.
pub fn check_host(host: Option<&str>, allowed: &[String]) -> HostCheck {
    let Some(host) = host.map(str::trim).filter(|host| !host.is_empty()) else {
        return HostCheck::Missing;
    };
    let host = host.to_ascii_lowercase();
    let name = match host.rsplit_once(':') {
        // An IPv6 literal keeps its brackets; only a port after `]` or a name is cut.
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host.as_str(),
    };
    if allowed
        .iter()
        .any(|entry| entry.eq_ignore_ascii_case(&host) || entry.eq_ignore_ascii_case(name))
    {
        HostCheck::Ours
    } else {
        HostCheck::Foreign
    }
}

/// A fresh random token (session id, CSRF token), 256 bits in hex.
pub fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |difference, (x, y)| difference | (x ^ y))
            == 0
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, whole site, `Secure` under TLS;
/// `max_age` `Some(0)` deletes it, `None` lasts for the browser session.
pub fn set_cookie(name: &str, value: &str, secure: bool, max_age: Option<u64>) -> String {
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(seconds) = max_age {
        cookie.push_str(&format!("; Max-Age={seconds}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// Who a session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Signed in with a token: its hash (checked again on every request, so revoking
    /// the token ends the session) and what it was when signed in.
    Token {
        /// SHA-256 of the secret.
        hash: [u8; 32],
        /// Token name.
        name: String,
        /// Its role.
        role: Role,
    },
    /// Let in by the loopback rule (no token issued yet, browser on this machine).
    Loopback,
}

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who it is.
    pub identity: Identity,
    /// The token every POST of this session must carry.
    pub csrf: String,
    /// Last request, for the idle timeout.
    last_seen: Instant,
}

/// Sessions by id, expiring after an idle period.
#[derive(Debug)]
pub struct Sessions {
    /// Idle time after which a session is gone.
    idle: Duration,
    /// Live sessions.
    by_id: HashMap<String, Session>,
}

impl Sessions {
    /// Sessions that end after `idle` without a request.
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            idle,
            by_id: HashMap::new(),
        }
    }

    /// Starts a session; returns its id.
    pub fn start(&mut self, identity: Identity, now: Instant) -> String {
        self.by_id
            .retain(|_, session| now.duration_since(session.last_seen) < self.idle);
        let id = random_token();
        self.by_id.insert(
            id.clone(),
            Session {
                identity,
                csrf: random_token(),
                last_seen: now,
            },
        );
        id
    }

    /// The live session `id`, its idle timer restarted; an expired one is removed.
    pub fn touch(&mut self, id: &str, now: Instant) -> Option<Session> {
        let session = self.by_id.get_mut(id)?;
        if now.duration_since(session.last_seen) >= self.idle {
            self.by_id.remove(id);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    /// Ends session `id`.
    pub fn end(&mut self, id: &str) {
        self.by_id.remove(id);
    }
}

/// Failed sign-ins per key (a source address), to lock out guessing.
#[derive(Debug, Default)]
pub struct Lockout {
    /// When each key's recent failures happened, oldest first.
    failures: HashMap<String, VecDeque<Instant>>,
}

impl Lockout {
    /// Whether `key` may try now; `Err` carries how long until it may.
    pub fn check(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        let Some(times) = self.failures.get_mut(key) else {
            return Ok(());
        };
        while times
            .front()
            .is_some_and(|first| now.duration_since(*first) >= LOCKOUT_WINDOW)
        {
            times.pop_front();
        }
        match times.front() {
            Some(first) if times.len() >= LOCKOUT_FAILURES => {
                Err(LOCKOUT_WINDOW - now.duration_since(*first))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed sign-in by `key`.
    pub fn fail(&mut self, key: &str, now: Instant) {
        self.failures
            .entry(key.to_owned())
            .or_default()
            .push_back(now);
    }

    /// A successful sign-in clears `key`'s failures.
    pub fn succeed(&mut self, key: &str) {
        self.failures.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        [
            "127.0.0.1:8080",
            "localhost",
            "127.0.0.1",
            "console.court.example",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn hosts_are_ours_only_by_configured_name() {
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "127.0.0.1",
            "console.court.example:443",
        ] {
            assert_eq!(
                check_host(Some(host), &allowed()),
                HostCheck::Ours,
                "{host}"
            );
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.2:8080",
            "localhost.evil.example",
        ] {
            assert_eq!(
                check_host(Some(host), &allowed()),
                HostCheck::Foreign,
                "{host}"
            );
        }
        assert_eq!(check_host(None, &allowed()), HostCheck::Missing);
        assert_eq!(check_host(Some(" "), &allowed()), HostCheck::Missing);
        let v6 = vec!["[::1]".to_owned()];
        assert_eq!(check_host(Some("[::1]:8080"), &v6), HostCheck::Ours);
    }

    #[test]
    fn cookies_are_found_by_exact_name_and_set_strict() {
        let header = "lang=en-US; courtline_session=abc; xcourtline_session=no";
        assert_eq!(cookie(header, "courtline_session"), Some("abc"));
        assert_eq!(cookie(header, "lang"), Some("en-US"));
        assert_eq!(cookie(header, "missing"), None);
        let set = set_cookie("s", "v", false, None);
        assert_eq!(set, "s=v; Path=/; HttpOnly; SameSite=Strict");
        assert!(set_cookie("s", "", true, Some(0)).ends_with("; Max-Age=0; Secure"));
    }

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }

    #[test]
    fn sessions_expire_after_idle_time_and_requests_keep_them_alive() {
        let start = Instant::now();
        let idle = Duration::from_secs(30 * 60);
        let mut sessions = Sessions::new(idle);
        let id = sessions.start(Identity::Loopback, start);
        let minute = Duration::from_secs(60);
        assert!(sessions.touch(&id, start + 29 * minute).is_some());
        assert!(sessions.touch(&id, start + 58 * minute).is_some());
        assert!(sessions.touch(&id, start + 88 * minute).is_none());
        assert!(
            sessions.touch(&id, start + 89 * minute).is_none(),
            "removed"
        );
        let other = sessions.start(Identity::Loopback, start);
        sessions.end(&other);
        assert!(sessions.touch(&other, start).is_none());
        assert!(sessions.touch("unknown", start).is_none());
    }

    #[test]
    fn five_failures_in_fifteen_minutes_lock_an_address_out() {
        let start = Instant::now();
        let mut lockout = Lockout::default();
        let minute = Duration::from_secs(60);
        for n in 0..LOCKOUT_FAILURES as u32 {
            assert!(lockout.check("ip:127.0.0.1", start + n * minute).is_ok());
            lockout.fail("ip:127.0.0.1", start + n * minute);
        }
        let wait = lockout
            .check("ip:127.0.0.1", start + 5 * minute)
            .unwrap_err();
        assert_eq!(wait, 10 * minute);
        assert!(lockout.check("ip:127.0.0.2", start).is_ok(), "per address");
        // The first failure leaves the window: one more try.
        assert!(lockout.check("ip:127.0.0.1", start + 15 * minute).is_ok());
        lockout.succeed("ip:127.0.0.1");
        assert!(lockout.check("ip:127.0.0.1", start + 15 * minute).is_ok());
    }
}
