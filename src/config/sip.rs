//! Settings of the switchboard's SIP side that the config defines and checks:
//! the shield (`[sip.shield]`), inbound digest authentication
//! (`[sip.inbound_auth]`) and operator URIs. The switchboard's `sip` module
//! builds its state from these types.

use std::net::IpAddr;

use ipnet::IpNet;

/// How untrusted sources are treated when an ACL is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UntrustedPolicy {
    /// 403 Forbidden.
    Reject,
    /// Silence (scanners learn nothing).
    Drop,
    /// Let them in (with inbound digest auth, if configured).
    Allow,
}

/// The shield's settings (`[sip.shield]`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShieldConfig {
    /// Datagrams per second a source may send on average.
    pub rate_per_s: f64,
    /// Datagrams a source may send in a burst above the average.
    pub burst: u32,
    /// How long a flooding source or scanner is ignored.
    pub ban_s: u64,
    /// Case-insensitive User-Agent fragments that mark scanners.
    pub scanner_user_agents: Vec<String>,
    /// Trusted networks (trunks, PBXs) in CIDR form; empty = everyone is trusted.
    pub trusted: Vec<String>,
    /// What happens to sources outside `trusted`.
    pub untrusted: UntrustedPolicy,
}

impl Default for ShieldConfig {
    fn default() -> Self {
        ShieldConfig {
            // A busy trunk carries many calls over one source address: a call
            // setup is ~6 datagrams, so 200/s allows ~30 call setups a second.
            rate_per_s: 200.0,
            burst: 400,
            ban_s: 300,
            scanner_user_agents: [
                "friendly-scanner",
                "sipvicious",
                "sipcli",
                "sip-scan",
                "sundayddr",
                "iWar",
                "sipsak",
                "VaxSIPUserAgent",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            trusted: Vec::new(),
            untrusted: UntrustedPolicy::Reject,
        }
    }
}

/// A CIDR in the config that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("\"{0}\" is not a network in CIDR form (e.g. \"192.0.2.0/24\" or \"2001:db8::/32\")")]
pub struct BadNetwork(pub String);

/// Parses CIDR networks from the config (a bare address is a /32 or /128).
pub fn parse_networks(networks: &[String]) -> Result<Vec<IpNet>, BadNetwork> {
    networks
        .iter()
        .map(|net| {
            net.parse::<IpNet>()
                .or_else(|_| net.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| BadNetwork(net.clone()))
        })
        .collect()
}

/// Digest algorithms courtline can challenge with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub enum DigestAlgorithm {
    /// RFC 2617 MD5: what nearly every SIP phone and PBX supports.
    #[default]
    #[serde(rename = "MD5")]
    Md5,
    /// RFC 7616/8760 SHA-256, for clients that support it.
    #[serde(rename = "SHA-256")]
    Sha256,
}

impl DigestAlgorithm {
    /// The token in `algorithm=` parameters.
    pub fn token(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        }
    }

    /// Length of its digests in hex digits.
    pub fn hex_len(self) -> usize {
        match self {
            DigestAlgorithm::Md5 => 32,
            DigestAlgorithm::Sha256 => 64,
        }
    }
}

/// One account callers may authenticate as.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundUser {
    /// Digest username.
    pub username: String,
    /// Password; leave empty when `ha1` is given.
    pub password: String,
    /// H(username:realm:password) in hex, computed with `algorithm`, so the
    /// config need not hold the password itself.
    pub ha1: String,
}

/// `[sip.inbound_auth]`: off while `users` is empty.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundAuthConfig {
    /// Realm in challenges (part of every HA1).
    pub realm: String,
    /// Algorithm challenged with.
    pub algorithm: DigestAlgorithm,
    /// Accounts; empty = inbound authentication off.
    pub users: Vec<InboundUser>,
    /// Sources that never authenticate (trunks, PBXs), in CIDR form.
    pub exempt: Vec<String>,
    /// How long a challenge's nonce may be answered.
    pub nonce_lifetime_s: u64,
}

impl Default for InboundAuthConfig {
    fn default() -> Self {
        InboundAuthConfig {
            realm: "courtline".into(),
            algorithm: DigestAlgorithm::Md5,
            users: Vec::new(),
            exempt: Vec::new(),
            nonce_lifetime_s: 300,
        }
    }
}

/// Checks an operator URI from the config (fully: see [`super::uri::parse`]);
/// the error says what is wrong.
pub fn check_operator_uri(text: &str) -> Result<(), String> {
    let parsed = super::uri::parse(text)?;
    if parsed.secure {
        return Err("uses sips:, but TLS to operators is not supported yet".into());
    }
    if parsed.user.is_none() {
        return Err("has no user part: an operator is sip:user@host".into());
    }
    // rsipstack is what dials it: it must read the URI too.
    rsipstack::sip::Uri::try_from(text).map_err(|_| "is not a SIP URI".to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_operator_uri;

    #[test]
    fn operator_uris() {
        assert!(check_operator_uri("sip:operator@127.0.0.1:5090").is_ok());
        assert!(check_operator_uri("sip:desk1@pbx.court.example").is_ok());
        assert!(check_operator_uri("operator at desk 3").is_err());
        assert!(check_operator_uri("http://example.com").is_err());
        assert!(check_operator_uri("sip:operator@127.0.0.1:50a90").is_err());
        assert!(check_operator_uri("sip:operator127.0.0.1:5090").is_err());
        assert!(check_operator_uri("sip:192.0.2.10:5060").is_err());
    }
}
