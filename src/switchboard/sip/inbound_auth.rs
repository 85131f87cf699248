//! Digest authentication of callers from untrusted sources (RFC 3261 §22.4,
//! RFC 7616 with `qop=auth`, MD5 or SHA-256; sans-IO).
//!
//! Trunks and PBXs in `exempt` never authenticate. Anyone else's INVITE gets a
//! 401 challenge first; the retried INVITE must carry a correct response for a
//! configured account. Nonces are stateless: an expiry time and an HMAC of it
//! and the caller's address under a key made at start-up, so nothing is stored
//! per caller, a nonce is useless from another address, and a restart only
//! makes clients retry. A wrong response to one of our own fresh nonces is
//! refused with 403 (the client had its chance; a second challenge would only
//! feed a password-guessing loop).

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use ipnet::IpNet;
use md5::Md5;
use sha2::{Digest, Sha256};

use crate::config::sip::{parse_networks, BadNetwork, DigestAlgorithm, InboundAuthConfig};

impl DigestAlgorithm {
    /// Hex digest of `text`.
    fn hash(self, text: &str) -> String {
        match self {
            DigestAlgorithm::Md5 => hex::encode(Md5::digest(text.as_bytes())),
            DigestAlgorithm::Sha256 => hex::encode(Sha256::digest(text.as_bytes())),
        }
    }
}

/// What to do with an INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// From an exempt source: no authentication asked.
    Exempt,
    /// Correct credentials for this account.
    Authenticated(String),
    /// Answer 401 with this `WWW-Authenticate` value.
    Challenge(String),
    /// Answer 403; the reason is for the log.
    Refuse(&'static str),
}

/// Bytes of HMAC kept in a nonce (128 bits).
const NONCE_MAC_LEN: usize = 16;

/// The authenticator: settings, parsed networks and the nonce key.
#[derive(Debug)]
pub struct InboundAuth {
    /// Settings.
    config: InboundAuthConfig,
    /// `config.exempt`, parsed.
    exempt: Vec<IpNet>,
    /// Key of the nonce HMACs, random per process.
    key: [u8; 32],
}

impl InboundAuth {
    /// The authenticator for these settings, or `None` when it is off.
    pub fn new(config: InboundAuthConfig) -> Result<Option<InboundAuth>, BadNetwork> {
        if config.users.is_empty() {
            return Ok(None);
        }
        let exempt = parse_networks(&config.exempt)?;
        Ok(Some(InboundAuth {
            config,
            exempt,
            key: rand::random(),
        }))
    }

    /// Decides on an INVITE from `source` carrying `authorization` (the
    /// `Authorization` header's value, if any) for `method`.
    pub fn check(
        &self,
        source: IpAddr,
        method: &str,
        authorization: Option<&str>,
        now: SystemTime,
    ) -> Verdict {
        if self.exempt.iter().any(|net| net.contains(&source)) {
            return Verdict::Exempt;
        }
        let Some(credentials) = authorization.and_then(Credentials::parse) else {
            return self.challenge(source, now, false);
        };
        if credentials.realm != self.config.realm {
            // Credentials for someone else's realm: ask for ours.
            return self.challenge(source, now, false);
        }
        match self.nonce_state(&credentials.nonce, source, now) {
            NonceState::Foreign => return self.challenge(source, now, false),
            NonceState::Expired => return self.challenge(source, now, true),
            NonceState::Fresh => {}
        }
        if !credentials
            .algorithm
            .eq_ignore_ascii_case(self.config.algorithm.token())
        {
            return Verdict::Refuse("credentials use another digest algorithm");
        }
        if !credentials.qop.eq_ignore_ascii_case("auth") {
            return Verdict::Refuse("credentials without qop=auth");
        }
        let Some(user) = self
            .config
            .users
            .iter()
            .find(|u| u.username == credentials.username)
        else {
            return Verdict::Refuse("unknown username");
        };
        let algorithm = self.config.algorithm;
        let ha1 = if user.ha1.is_empty() {
            algorithm.hash(&format!(
                "{}:{}:{}",
                user.username, self.config.realm, user.password
            ))
        } else {
            user.ha1.to_ascii_lowercase()
        };
        let ha2 = algorithm.hash(&format!("{method}:{}", credentials.uri));
        let expected = algorithm.hash(&format!(
            "{ha1}:{}:{}:{}:auth:{ha2}",
            credentials.nonce, credentials.nc, credentials.cnonce
        ));
        if constant_time_eq(
            expected.as_bytes(),
            credentials.response.to_ascii_lowercase().as_bytes(),
        ) {
            Verdict::Authenticated(user.username.clone())
        } else {
            Verdict::Refuse("wrong digest response")
        }
    }

    /// A 401 challenge with a fresh nonce for `source`.
    fn challenge(&self, source: IpAddr, now: SystemTime, stale: bool) -> Verdict {
        let expiry = unix_seconds(now + Duration::from_secs(self.config.nonce_lifetime_s));
        let nonce = format!(
            "{expiry:016x}{}",
            hex::encode(self.nonce_mac(expiry, source))
        );
        Verdict::Challenge(format!(
            "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{}",
            self.config.realm,
            self.config.algorithm.token(),
            if stale { ", stale=true" } else { "" }
        ))
    }

    fn nonce_mac(&self, expiry: u64, source: IpAddr) -> [u8; NONCE_MAC_LEN] {
        // HMAC-SHA256 accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        mac.update(&expiry.to_be_bytes());
        match source {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        let full = mac.finalize().into_bytes();
        let mut short = [0u8; NONCE_MAC_LEN];
        short.copy_from_slice(&full[..NONCE_MAC_LEN]);
        short
    }

    fn nonce_state(&self, nonce: &str, source: IpAddr, now: SystemTime) -> NonceState {
        let (Some(expiry), Some(mac)) = (
            nonce
                .get(..16)
                .and_then(|e| u64::from_str_radix(e, 16).ok()),
            nonce.get(16..).and_then(|m| hex::decode(m).ok()),
        ) else {
            return NonceState::Foreign;
        };
        if !constant_time_eq(&mac, &self.nonce_mac(expiry, source)) {
            return NonceState::Foreign;
        }
        if unix_seconds(now) > expiry {
            NonceState::Expired
        } else {
            NonceState::Fresh
        }
    }
}

/// What a nonce in credentials turned out to be.
enum NonceState {
    /// Ours, for this source, still valid.
    Fresh,
    /// Ours, but past its expiry: challenge again with `stale=true`.
    Expired,
    /// Not one of ours (forged, for another address, or from before a restart).
    Foreign,
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The parameters of `Authorization: Digest …` that the check needs, as sent
/// (the `uri` in particular must be hashed exactly as the client wrote it).
#[derive(Debug, Default)]
struct Credentials {
    /// `username`.
    username: String,
    /// `realm`.
    realm: String,
    /// `nonce`.
    nonce: String,
    /// `uri`, verbatim.
    uri: String,
    /// `response`.
    response: String,
    /// `algorithm` (MD5 when absent, RFC 2617).
    algorithm: String,
    /// `qop`.
    qop: String,
    /// `nc`, verbatim (8 hex digits).
    nc: String,
    /// `cnonce`.
    cnonce: String,
}

impl Credentials {
    /// Parses a `Digest` credentials value; `None` for other schemes or garbage.
    fn parse(value: &str) -> Option<Credentials> {
        let (scheme, mut rest) = value.trim().split_once(char::is_whitespace)?;
        if !scheme.eq_ignore_ascii_case("digest") {
            return None;
        }
        let mut credentials = Credentials {
            algorithm: "MD5".into(),
            ..Credentials::default()
        };
        loop {
            rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
            if rest.is_empty() {
                break;
            }
            let (name, after) = rest.split_once('=')?;
            let after = after.trim_start();
            let (value, remainder) = match after.strip_prefix('"') {
                Some(quoted) => unquote(quoted)?,
                None => {
                    let end = after.find(',').unwrap_or(after.len());
                    (after[..end].trim().to_string(), &after[end..])
                }
            };
            let slot = match name.trim().to_ascii_lowercase().as_str() {
                "username" => &mut credentials.username,
                "realm" => &mut credentials.realm,
                "nonce" => &mut credentials.nonce,
                "uri" => &mut credentials.uri,
                "response" => &mut credentials.response,
                "algorithm" => &mut credentials.algorithm,
                "qop" => &mut credentials.qop,
                "nc" => &mut credentials.nc,
                "cnonce" => &mut credentials.cnonce,
                _ => {
                    rest = remainder;
                    continue;
                }
            };
            *slot = value;
            rest = remainder;
        }
        Some(credentials)
    }
}

/// Reads a quoted string's content (after the opening quote); returns it and
/// what follows the closing quote.
fn unquote(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[i + 1..])),
            '\\' => value.push(chars.next()?.1),
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::sip::InboundUser;

    fn auth(algorithm: DigestAlgorithm) -> InboundAuth {
        InboundAuth::new(InboundAuthConfig {
            realm: "court.example".into(),
            algorithm,
            users: vec![InboundUser {
                username: "alice".into(),
                password: "s3cret".into(),
                ha1: String::new(),
            }],
            exempt: vec!["192.0.2.0/24".into()],
            nonce_lifetime_s: 60,
        })
        .unwrap()
        .unwrap()
    }

    fn nonce_of(verdict: &Verdict) -> String {
        let Verdict::Challenge(header) = verdict else {
            panic!("expected a challenge, got {verdict:?}")
        };
        let start = header.find("nonce=\"").unwrap() + 7;
        header[start..].split('"').next().unwrap().to_string()
    }

    /// Credentials as a client computes them (RFC 7616 §3.4.1), written out here independently.
    fn answer(algorithm: DigestAlgorithm, password: &str, nonce: &str) -> String {
        let h = |s: String| algorithm.hash(&s);
        let ha1 = h(format!("alice:court.example:{password}"));
        let ha2 = h("INVITE:sip:02112368@courtline".into());
        let response = h(format!("{ha1}:{nonce}:00000001:xyz:auth:{ha2}"));
        format!(
            "Digest username=\"alice\", realm=\"court.example\", nonce=\"{nonce}\", uri=\"sip:02112368@courtline\", response=\"{response}\", algorithm={}, qop=auth, nc=00000001, cnonce=\"xyz\"",
            algorithm.token()
        )
    }

    const CALLER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));

    #[test]
    fn exempt_sources_pass_and_others_are_challenged() {
        let a = auth(DigestAlgorithm::Md5);
        let now = SystemTime::now();
        assert_eq!(
            a.check("192.0.2.9".parse().unwrap(), "INVITE", None, now),
            Verdict::Exempt
        );
        let challenge = a.check(CALLER, "INVITE", None, now);
        let Verdict::Challenge(header) = &challenge else {
            panic!()
        };
        assert!(header.contains("realm=\"court.example\"") && header.contains("algorithm=MD5"));
        assert!(header.contains("qop=\"auth\"") && !header.contains("stale"));
    }

    #[test]
    fn right_credentials_pass_wrong_ones_are_refused() {
        for algorithm in [DigestAlgorithm::Md5, DigestAlgorithm::Sha256] {
            let a = auth(algorithm);
            let now = SystemTime::now();
            let nonce = nonce_of(&a.check(CALLER, "INVITE", None, now));
            let good = answer(algorithm, "s3cret", &nonce);
            assert_eq!(
                a.check(CALLER, "INVITE", Some(&good), now),
                Verdict::Authenticated("alice".into())
            );
            let bad = answer(algorithm, "guess", &nonce);
            assert!(matches!(
                a.check(CALLER, "INVITE", Some(&bad), now),
                Verdict::Refuse(_)
            ));
        }
    }

    #[test]
    fn ha1_stands_in_for_the_password() {
        let mut config = auth(DigestAlgorithm::Sha256).config;
        config.users[0].password.clear();
        config.users[0].ha1 = DigestAlgorithm::Sha256.hash("alice:court.example:s3cret");
        let a = InboundAuth::new(config).unwrap().unwrap();
        let now = SystemTime::now();
        let nonce = nonce_of(&a.check(CALLER, "INVITE", None, now));
        let good = answer(DigestAlgorithm::Sha256, "s3cret", &nonce);
        assert_eq!(
            a.check(CALLER, "INVITE", Some(&good), now),
            Verdict::Authenticated("alice".into())
        );
    }

    #[test]
    fn nonces_expire_and_are_bound_to_the_source() {
        let a = auth(DigestAlgorithm::Md5);
        let now = SystemTime::now();
        let nonce = nonce_of(&a.check(CALLER, "INVITE", None, now));
        let good = answer(DigestAlgorithm::Md5, "s3cret", &nonce);
        // From another address: not our nonce for it, so a fresh challenge.
        let elsewhere = a.check("198.51.100.8".parse().unwrap(), "INVITE", Some(&good), now);
        assert!(matches!(&elsewhere, Verdict::Challenge(h) if !h.contains("stale")));
        // Too late: stale, so the client retries without asking its user.
        let later = now + Duration::from_secs(61);
        assert!(
            matches!(a.check(CALLER, "INVITE", Some(&good), later), Verdict::Challenge(h) if h.contains("stale=true"))
        );
        // A forged nonce is not ours either.
        let forged = answer(DigestAlgorithm::Md5, "s3cret", "0000000000000001deadbeef");
        assert!(matches!(
            a.check(CALLER, "INVITE", Some(&forged), now),
            Verdict::Challenge(_)
        ));
    }

    #[test]
    fn off_without_users_and_bad_networks_are_reported() {
        assert!(InboundAuth::new(InboundAuthConfig::default())
            .unwrap()
            .is_none());
        let mut config = auth(DigestAlgorithm::Md5).config;
        config.exempt = vec!["not-a-network".into()];
        assert!(InboundAuth::new(config).is_err());
    }

    #[test]
    fn credentials_parse_quoted_and_bare_values() {
        let c = Credentials::parse(
            "Digest username=\"a\\\"b\",realm=\"r\", nonce=n1, uri=\"sip:x@y;transport=tcp\", response=\"ab\", qop=auth, nc=0000000a, cnonce=\"c, d\", opaque=\"o\"",
        )
        .unwrap();
        assert_eq!(
            (c.username.as_str(), c.realm.as_str(), c.nonce.as_str()),
            ("a\"b", "r", "n1")
        );
        assert_eq!(
            (c.uri.as_str(), c.nc.as_str(), c.cnonce.as_str()),
            ("sip:x@y;transport=tcp", "0000000a", "c, d")
        );
        assert_eq!(c.algorithm, "MD5");
        assert!(Credentials::parse("Basic YWxhZGRpbjpvcGVuc2VzYW1l").is_none());
        assert!(Credentials::parse("Digest username=\"unterminated").is_none());
    }
}
