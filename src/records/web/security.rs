//! The console's security decisions, without sockets: which `Host` headers are
//! ours, the response headers, sessions that expire, CSRF tokens and the sign-in
//! lockout. Time is passed in so every rule is tested without waiting.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
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
    /// Signed in with a client certificate the TLS handshake verified, mapped to a
    /// role as gRPC maps it (`[records.service] client_certificates`).
    Certificate {
        /// `cert:` and the certificate's mapped identity.
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

/// What a failed sign-in is counted against: where it came from, and whom it tried
/// to be, so guessing is stopped both from one address and from many addresses at one
/// token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LockKey {
    /// The browser's address.
    Source(IpAddr),
    /// The sign-in name: the first [`TOKEN_PREFIX_CHARS`] characters of the token
    /// typed (`clt_` and 8 hex digits), or `cert:` and a certificate identity.
    Name(String),
}

impl LockKey {
    /// Failures allowed within [`LOCKOUT_WINDOW`] before this key is locked.
    fn limit(&self) -> usize {
        match self {
            LockKey::Source(_) => LOCKOUT_FAILURES,
            LockKey::Name(_) => NAME_LOCKOUT_FAILURES,
        }
    }
}

/// Failed sign-ins allowed per sign-in name (from any number of addresses) within
/// [`LOCKOUT_WINDOW`]: more than per address, since a name's owner may mistype from
/// several machines, yet few enough that spreading guesses over addresses buys little.
pub const NAME_LOCKOUT_FAILURES: usize = 10;
/// Characters of a typed token that name it for the lockout: the `clt_` prefix and
/// 8 hex digits, identifying a token without keeping its secret.
pub const TOKEN_PREFIX_CHARS: usize = 12;

/// The keys a token sign-in from `source` with the typed `token` counts against.
pub fn token_sign_in_keys(source: IpAddr, token: &str) -> [LockKey; 2] {
    let prefix: String = token.trim().chars().take(TOKEN_PREFIX_CHARS).collect();
    [
        LockKey::Source(source),
        LockKey::Name(format!("token:{prefix}")),
    ]
}

/// Failed sign-ins per key, to lock out guessing.
#[derive(Debug, Default)]
pub struct Lockout {
    /// When each key's recent failures happened, oldest first.
    failures: HashMap<LockKey, VecDeque<Instant>>,
}

impl Lockout {
    /// Whether a sign-in counted against `keys` may be tried now; `Err` carries how
    /// long until it may (the longest wait of the locked keys).
    pub fn check(&mut self, keys: &[LockKey], now: Instant) -> Result<(), Duration> {
        let mut wait = None;
        for key in keys {
            let Some(times) = self.failures.get_mut(key) else {
                continue;
            };
            while times
                .front()
                .is_some_and(|first| now.duration_since(*first) >= LOCKOUT_WINDOW)
            {
                times.pop_front();
            }
            // Locked until enough failures leave the window to get under the limit.
            if times.len() >= key.limit() {
                if let Some(unlocking) = times.get(times.len() - key.limit()) {
                    let left = LOCKOUT_WINDOW - now.duration_since(*unlocking);
                    wait = Some(wait.map_or(left, |longest: Duration| longest.max(left)));
                }
            }
        }
        wait.map_or(Ok(()), Err)
    }

    /// Counts a failed sign-in against each of `keys`; forgets keys whose failures
    /// all left the window, so guesses at random names do not pile up.
    pub fn fail(&mut self, keys: &[LockKey], now: Instant) {
        self.failures.retain(|_, times| {
            times
                .back()
                .is_some_and(|last| now.duration_since(*last) < LOCKOUT_WINDOW)
        });
        for key in keys {
            self.failures.entry(key.clone()).or_default().push_back(now);
        }
    }

    /// A successful sign-in clears its keys' failures.
    pub fn succeed(&mut self, keys: &[LockKey]) {
        for key in keys {
            self.failures.remove(key);
        }
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
        let here = [LockKey::Source([127, 0, 0, 1].into())];
        for n in 0..LOCKOUT_FAILURES as u32 {
            assert!(lockout.check(&here, start + n * minute).is_ok());
            // A different token each time: only the address repeats.
            let keys = token_sign_in_keys([127, 0, 0, 1].into(), &format!("clt_{n:08}"));
            lockout.fail(&keys, start + n * minute);
        }
        let wait = lockout.check(&here, start + 5 * minute).unwrap_err();
        assert_eq!(wait, 10 * minute);
        let elsewhere = [LockKey::Source([127, 0, 0, 2].into())];
        assert!(lockout.check(&elsewhere, start).is_ok(), "per address");
        // The first failure leaves the window: one more try.
        assert!(lockout.check(&here, start + 15 * minute).is_ok());
        lockout.succeed(&here);
        assert!(lockout.check(&here, start + 15 * minute).is_ok());
    }

    #[test]
    fn failures_at_one_token_from_many_addresses_lock_that_token() {
        let start = Instant::now();
        let mut lockout = Lockout::default();
        let second = Duration::from_secs(1);
        let guess = "clt_0123abcd";
        for n in 0..NAME_LOCKOUT_FAILURES as u32 {
            // Each attempt from a fresh address: no address ever reaches its limit.
            let keys = token_sign_in_keys([10, 0, 0, n as u8].into(), &format!("{guess}{n:056}"));
            assert!(lockout.check(&keys, start + n * second).is_ok(), "try {n}");
            lockout.fail(&keys, start + n * second);
        }
        let fresh = token_sign_in_keys([10, 0, 1, 1].into(), &format!("{guess}{}", "f".repeat(56)));
        let wait = lockout
            .check(&fresh, start + 10 * second)
            .expect_err("the token prefix is locked whatever the address");
        assert_eq!(wait, LOCKOUT_WINDOW - 10 * second);
        // Another token from that new address is still let through.
        let other = token_sign_in_keys([10, 0, 1, 1].into(), "clt_ffff0000");
        assert!(lockout.check(&other, start + 10 * second).is_ok());
        // Only the prefix names it: the secret is not kept.
        assert_eq!(fresh[1], LockKey::Name("token:clt_0123abcd".into()));
        // Unlocked once the oldest failure leaves the window.
        assert!(lockout.check(&fresh, start + LOCKOUT_WINDOW).is_ok());
    }

    #[test]
    fn the_longest_wait_of_the_locked_keys_counts_and_old_keys_are_forgotten() {
        let start = Instant::now();
        let minute = Duration::from_secs(60);
        let mut lockout = Lockout::default();
        let keys = token_sign_in_keys([192, 0, 2, 1].into(), "clt_aaaabbbbcccc");
        for n in 0..NAME_LOCKOUT_FAILURES as u32 {
            lockout.fail(&keys, start + n * minute);
        }
        // Ten failures at minutes 0..=9: the name unlocks when the first leaves the
        // window (6 minutes from now), the address only when six have left (the one
        // at minute 5 must go: 11 minutes from now). The longer wait counts.
        let now = start + 9 * minute;
        let wait = lockout.check(&keys, now).unwrap_err();
        assert_eq!(wait, LOCKOUT_WINDOW - 4 * minute);
        // A failure elsewhere much later forgets these keys entirely.
        let later = start + 9 * minute + LOCKOUT_WINDOW;
        lockout.fail(&[LockKey::Source([192, 0, 2, 9].into())], later);
        assert_eq!(lockout.failures.len(), 1);
    }
}
