//! Who may talk to the switchboard, and how much: source ACLs, per-source
//! rate limits, and temporary bans for floods and SIP scanners.
//!
//! Court numbers are public and scanned within minutes of going online
//! (`friendly-scanner`, `sipvicious`, ...). The shield runs on every datagram
//! before parsing, so a flood from one source costs a hash-map lookup and
//! never reaches the SIP stack or degrades other callers' calls. It is
//! sans-IO: `check(source, datagram, now)`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::forwarded::{ShieldSubject, TrustedProxies};
use crate::config::sip::{parse_networks, BadNetwork, ShieldConfig, UntrustedPolicy};

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let it through to the SIP stack.
    Allow,
    /// Answer 403 Forbidden (requests only) and drop it.
    Forbid,
    /// Drop it without a word.
    Drop,
}

/// A ban just imposed, for the one log line per ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBan {
    /// Who is banned: the datagram's source, or the caller a trusted proxy
    /// named (then the proxy itself is not banned, and the log must say so).
    pub address: IpAddr,
    /// Why.
    pub reason: BanReason,
}

/// Why a source was banned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BanReason {
    /// It exceeded its rate limit.
    Flood,
    /// Its User-Agent matched a known scanner.
    Scanner(String),
}

/// A source's token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left (one per datagram).
    tokens: f64,
    /// When the bucket was last refilled.
    at: Instant,
}

/// At most this many sources are tracked; beyond it the oldest are forgotten
/// so spoofed floods cannot exhaust memory.
const MAX_TRACKED: usize = 65_536;

/// The shield state. One per SIP socket.
#[derive(Debug)]
pub struct Shield {
    /// Settings.
    config: ShieldConfig,
    /// `config.trusted`, parsed.
    trusted: Vec<IpNet>,
    /// `config.scanner_user_agents`, lower-cased.
    scanners: Vec<String>,
    /// Per-source buckets.
    buckets: HashMap<IpAddr, Bucket>,
    /// Banned sources and when their ban ends.
    bans: HashMap<IpAddr, Instant>,
    /// Proxies whose messages are judged by the caller address they forward.
    proxies: TrustedProxies,
}

impl Shield {
    /// A shield with these settings.
    pub fn new(config: ShieldConfig) -> Result<Shield, BadNetwork> {
        let trusted = parse_networks(&config.trusted)?;
        let scanners = config
            .scanner_user_agents
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect();
        Ok(Shield {
            config,
            trusted,
            scanners,
            buckets: HashMap::new(),
            bans: HashMap::new(),
            proxies: TrustedProxies::default(),
        })
    }

    /// The same shield in front of these trusted proxies: their messages are
    /// judged by the caller address they forward, their own never limited.
    pub fn behind(self, proxies: TrustedProxies) -> Shield {
        Shield { proxies, ..self }
    }

    /// Whether `source` is in a trusted network (always true without an ACL).
    pub fn is_trusted(&self, source: IpAddr) -> bool {
        self.trusted.is_empty() || self.is_listed(source)
    }

    /// Whether `source` is in a configured trusted network (false without an ACL).
    fn is_listed(&self, source: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&source))
    }

    /// Whether a new stream connection from `source` may be accepted: not
    /// while it is banned, nor from an untrusted source that is dropped
    /// silently (rejected ones are accepted so their requests can get 403).
    pub fn admits_connection(&self, source: IpAddr, now: Instant) -> bool {
        // An IPv4 peer of a dual-stack socket is the IPv4 address `trusted` lists.
        let source = source.to_canonical();
        if self.proxies.contains(source) {
            return true;
        }
        if self.bans.get(&source).is_some_and(|&until| now < until) {
            return false;
        }
        self.is_trusted(source) || self.config.untrusted != UntrustedPolicy::Drop
    }

    /// Decides on one datagram; a new ban is returned for logging.
    pub fn check(
        &mut self,
        source: IpAddr,
        datagram: &[u8],
        now: Instant,
    ) -> (Decision, Option<NewBan>) {
        // Behind a trusted proxy the caller it names is judged, not the proxy.
        let source = match self.proxies.shield_subject(source, datagram) {
            ShieldSubject::Caller(caller) => caller.to_canonical(),
            ShieldSubject::Proxy => return (Decision::Allow, None),
        };
        if let Some(&until) = self.bans.get(&source) {
            if now < until {
                return (Decision::Drop, None);
            }
            self.bans.remove(&source);
        }
        // A listed trunk or PBX carries every call of the court: rate-limiting
        // or banning it would take the switchboard off the air. Its scanner
        // traffic (relayed from outside) is dropped without a ban.
        let listed = self.is_listed(source);
        if !self.is_trusted(source) {
            match self.config.untrusted {
                UntrustedPolicy::Reject => return (Decision::Forbid, None),
                UntrustedPolicy::Drop => return (Decision::Drop, None),
                UntrustedPolicy::Allow => {}
            }
        }
        if let Some(agent) = self.scanner_in(datagram) {
            if listed {
                return (Decision::Drop, None);
            }
            self.ban(source, now);
            return (
                Decision::Drop,
                Some(NewBan {
                    address: source,
                    reason: BanReason::Scanner(agent),
                }),
            );
        }
        if listed {
            return (Decision::Allow, None);
        }
        if !self.take_token(source, now) {
            self.ban(source, now);
            return (
                Decision::Drop,
                Some(NewBan {
                    address: source,
                    reason: BanReason::Flood,
                }),
            );
        }
        (Decision::Allow, None)
    }

    fn ban(&mut self, source: IpAddr, now: Instant) {
        self.buckets.remove(&source);
        if self.bans.len() >= MAX_TRACKED {
            self.bans.retain(|_, until| *until > now);
        }
        self.bans
            .insert(source, now + Duration::from_secs(self.config.ban_s));
    }

    fn take_token(&mut self, source: IpAddr, now: Instant) -> bool {
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(&source) {
            // Forget sources idle for a second or more (their buckets are full anyway).
            self.buckets
                .retain(|_, b| now.saturating_duration_since(b.at) < Duration::from_secs(1));
        }
        let burst = f64::from(self.config.burst.max(1));
        let bucket = self.buckets.entry(source).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.config.rate_per_s).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The User-Agent value if it names a known scanner.
    fn scanner_in(&self, datagram: &[u8]) -> Option<String> {
        if self.scanners.is_empty() {
            return None;
        }
        let head_end = datagram
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(datagram.len());
        let head = String::from_utf8_lossy(&datagram[..head_end]);
        head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            if !name.trim().eq_ignore_ascii_case("user-agent") {
                return None;
            }
            let lower = value.to_ascii_lowercase();
            self.scanners
                .iter()
                .any(|s| lower.contains(s.as_str()))
                .then(|| value.trim().to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK-1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:100@h>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nUser-Agent: Zoiper\r\nContent-Length: 0\r\n\r\n";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn flood_ban(address: IpAddr) -> Option<NewBan> {
        Some(NewBan {
            address,
            reason: BanReason::Flood,
        })
    }

    #[test]
    fn a_trunk_reaching_a_dual_stack_socket_over_ipv4_is_still_trusted() {
        let mut shield = Shield::new(ShieldConfig {
            trusted: vec!["192.0.2.0/24".into()],
            untrusted: UntrustedPolicy::Reject,
            ..ShieldConfig::default()
        })
        .unwrap();
        let now = Instant::now();
        let mapped = ip("::ffff:192.0.2.10");
        assert_eq!(shield.check(mapped, OPTIONS, now).0, Decision::Allow);
        assert!(shield.admits_connection(mapped, now));
        assert_eq!(
            shield.check(ip("::ffff:198.51.100.7"), OPTIONS, now).0,
            Decision::Forbid
        );
    }

    #[test]
    fn a_listed_trunk_is_never_rate_limited_or_banned() {
        let mut shield = Shield::new(ShieldConfig {
            rate_per_s: 10.0,
            burst: 20,
            trusted: vec!["192.0.2.0/24".into()],
            untrusted: UntrustedPolicy::Allow,
            ..ShieldConfig::default()
        })
        .unwrap();
        let now = Instant::now();
        let trunk = ip("192.0.2.10");
        for i in 0..1_000 {
            assert_eq!(shield.check(trunk, OPTIONS, now).0, Decision::Allow, "{i}");
        }
        let relayed_scan =
            b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nUser-Agent: friendly-scanner\r\n\r\n";
        assert_eq!(
            shield.check(trunk, relayed_scan, now),
            (Decision::Drop, None)
        );
        assert_eq!(shield.check(trunk, OPTIONS, now).0, Decision::Allow);
        // An allowed but unlisted source is still limited.
        let other = ip("198.51.100.7");
        for _ in 0..20 {
            assert_eq!(shield.check(other, OPTIONS, now).0, Decision::Allow);
        }
        assert_eq!(
            shield.check(other, OPTIONS, now),
            (Decision::Drop, flood_ban(other))
        );
    }

    #[test]
    fn flood_is_cut_off_and_banned_but_others_pass() {
        let mut shield = Shield::new(ShieldConfig {
            rate_per_s: 10.0,
            burst: 20,
            ban_s: 60,
            ..ShieldConfig::default()
        })
        .unwrap();
        let now = Instant::now();
        let flooder = ip("198.51.100.7");
        for i in 0..20 {
            assert_eq!(
                shield.check(flooder, OPTIONS, now).0,
                Decision::Allow,
                "burst {i}"
            );
        }
        assert_eq!(
            shield.check(flooder, OPTIONS, now),
            (Decision::Drop, flood_ban(flooder))
        );
        // Banned: dropped silently, no new ban logged, even after tokens refill.
        let later = now + Duration::from_secs(30);
        assert_eq!(
            shield.check(flooder, OPTIONS, later),
            (Decision::Drop, None)
        );
        // Another source is unaffected.
        assert_eq!(
            shield.check(ip("203.0.113.9"), OPTIONS, now).0,
            Decision::Allow
        );
        // The ban expires.
        assert_eq!(
            shield
                .check(flooder, OPTIONS, now + Duration::from_secs(61))
                .0,
            Decision::Allow
        );
    }

    #[test]
    fn steady_traffic_within_the_rate_passes() {
        let mut shield = Shield::new(ShieldConfig {
            rate_per_s: 100.0,
            burst: 5,
            ..ShieldConfig::default()
        })
        .unwrap();
        let mut now = Instant::now();
        for _ in 0..1000 {
            now += Duration::from_millis(11);
            assert_eq!(
                shield.check(ip("192.0.2.10"), OPTIONS, now).0,
                Decision::Allow
            );
        }
    }

    #[test]
    fn scanners_are_banned_by_user_agent() {
        let mut shield = Shield::new(ShieldConfig::default()).unwrap();
        let scan = String::from_utf8_lossy(OPTIONS)
            .replace("User-Agent: Zoiper", "user-agent: friendly-scanner 1.0");
        let now = Instant::now();
        let (decision, ban) = shield.check(ip("198.51.100.8"), scan.as_bytes(), now);
        assert_eq!(decision, Decision::Drop);
        assert_eq!(
            ban,
            Some(NewBan {
                address: ip("198.51.100.8"),
                reason: BanReason::Scanner("friendly-scanner 1.0".into())
            })
        );
        // Even its innocent-looking follow-ups are dropped while banned.
        assert_eq!(
            shield.check(ip("198.51.100.8"), OPTIONS, now).0,
            Decision::Drop
        );
    }

    #[test]
    fn acl_rejects_or_drops_untrusted_sources() {
        let config = ShieldConfig {
            trusted: vec![
                "10.1.0.0/16".into(),
                "192.0.2.5".into(),
                "2001:db8::/32".into(),
            ],
            ..ShieldConfig::default()
        };
        let mut shield = Shield::new(config.clone()).unwrap();
        let now = Instant::now();
        assert_eq!(
            shield.check(ip("10.1.2.3"), OPTIONS, now).0,
            Decision::Allow
        );
        assert_eq!(
            shield.check(ip("192.0.2.5"), OPTIONS, now).0,
            Decision::Allow
        );
        assert_eq!(
            shield.check(ip("2001:db8::1"), OPTIONS, now).0,
            Decision::Allow
        );
        assert_eq!(
            shield.check(ip("10.2.0.1"), OPTIONS, now).0,
            Decision::Forbid
        );
        let mut silent = Shield::new(ShieldConfig {
            untrusted: UntrustedPolicy::Drop,
            ..config
        })
        .unwrap();
        assert_eq!(silent.check(ip("10.2.0.1"), OPTIONS, now).0, Decision::Drop);
    }

    #[test]
    fn callers_behind_a_trusted_proxy_are_judged_by_their_own_address() {
        let proxy = ip("127.0.0.1");
        let mut shield = Shield::new(ShieldConfig {
            rate_per_s: 10.0,
            burst: 5,
            trusted: vec!["198.51.100.0/24".into()],
            ..ShieldConfig::default()
        })
        .unwrap()
        .behind(TrustedProxies::new(&["127.0.0.1".into()]).unwrap());
        let now = Instant::now();
        let via = |caller: &str| {
            String::from_utf8_lossy(OPTIONS).replace(
                "User-Agent:",
                &format!("X-Orig-IP: {caller}\r\nUser-Agent:"),
            )
        };
        // The ACL applies to the forwarded caller, not to the proxy.
        assert_eq!(
            shield.check(proxy, via("198.51.100.7").as_bytes(), now).0,
            Decision::Allow
        );
        assert_eq!(
            shield.check(proxy, via("203.0.113.9").as_bytes(), now).0,
            Decision::Forbid
        );
        // The proxy's own probes are never refused, limited or banned.
        for _ in 0..100 {
            assert_eq!(shield.check(proxy, OPTIONS, now).0, Decision::Allow);
        }
        assert!(shield.admits_connection(proxy, now));
        // A flooding or scanning caller behind it is banned, the proxy is not.
        let mut open = Shield::new(ShieldConfig {
            rate_per_s: 10.0,
            burst: 5,
            ..ShieldConfig::default()
        })
        .unwrap()
        .behind(TrustedProxies::new(&["127.0.0.1".into()]).unwrap());
        let flood = via("203.0.113.9");
        for _ in 0..5 {
            assert_eq!(open.check(proxy, flood.as_bytes(), now).0, Decision::Allow);
        }
        assert_eq!(
            open.check(proxy, flood.as_bytes(), now),
            (Decision::Drop, flood_ban(ip("203.0.113.9"))),
            "the caller is banned, not the proxy it came through"
        );
        assert_eq!(
            open.check(proxy, via("203.0.113.10").as_bytes(), now).0,
            Decision::Allow
        );
        assert_eq!(open.check(proxy, OPTIONS, now).0, Decision::Allow);
        // The same header from a source that is no proxy changes nothing.
        let stranger = ip("192.0.2.50");
        for _ in 0..5 {
            assert_eq!(
                open.check(stranger, flood.as_bytes(), now).0,
                Decision::Allow
            );
        }
        assert_eq!(
            open.check(stranger, flood.as_bytes(), now),
            (Decision::Drop, flood_ban(stranger))
        );
    }

    #[test]
    fn bad_networks_are_reported() {
        let err = Shield::new(ShieldConfig {
            trusted: vec!["10.0.0.0/33".into()],
            ..ShieldConfig::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/33"));
    }

    #[test]
    fn tracked_sources_are_bounded() {
        let mut shield = Shield::new(ShieldConfig::default()).unwrap();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let source = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            shield.check(source, OPTIONS, now);
        }
        let later = now + Duration::from_secs(2);
        shield.check(ip("192.0.2.1"), OPTIONS, later);
        assert!(shield.buckets.len() <= MAX_TRACKED);
    }
}
