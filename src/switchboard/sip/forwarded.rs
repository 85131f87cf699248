//! Callers behind a trusted SIP proxy (`[sip] trusted_proxies`, e.g. Kamailio
//! in front of several switchboard nodes). Every request then arrives from the
//! proxy's address; the caller's own is in the header the proxy adds
//! ([`FORWARDED_HEADER`]). The shield, ACLs, inbound authentication and the
//! record judge the caller by that header, but only when a trusted proxy sent
//! it: from anyone else it is a claim anybody could make, and is ignored.
//! Sans-IO: which address a request is judged by.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::config::sip::{parse_networks, BadNetwork};

/// The header a trusted proxy names the caller's address in
/// (Kamailio: `append_hf("X-Orig-IP: $si\r\n")`).
pub const FORWARDED_HEADER: &str = "X-Orig-IP";

/// The proxies whose [`FORWARDED_HEADER`] is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    /// `[sip] trusted_proxies`, parsed; empty = no proxy is trusted.
    networks: Vec<IpNet>,
}

/// Whose address a request is judged by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Straight from the caller: the transport source.
    Direct(SocketAddr),
    /// Through a trusted proxy that named the caller.
    Forwarded {
        /// The caller's address, from the header.
        caller: IpAddr,
        /// The proxy it came through.
        proxy: SocketAddr,
    },
    /// A trusted proxy's own request (its OPTIONS probes, in-dialog requests
    /// it relays without a header): judged as the proxy.
    Proxy(SocketAddr),
    /// A source that is no trusted proxy sent the header: judged by its own
    /// address, the claim ignored (and logged by the adapter).
    Spoofed {
        /// The transport source.
        source: SocketAddr,
        /// What the header said.
        claimed: String,
    },
}

impl Origin {
    /// The address the shield, ACLs and authentication judge.
    pub fn caller_ip(&self) -> IpAddr {
        match self {
            Origin::Direct(source) | Origin::Proxy(source) | Origin::Spoofed { source, .. } => {
                source.ip()
            }
            Origin::Forwarded { caller, .. } => *caller,
        }
    }

    /// The record's `caller_source`: `ip:port` when the caller sent it
    /// itself, the bare address a proxy forwarded (the caller's port stays
    /// with the proxy).
    pub fn caller_source(&self) -> String {
        match self {
            Origin::Direct(source) | Origin::Proxy(source) | Origin::Spoofed { source, .. } => {
                source.to_string()
            }
            Origin::Forwarded { caller, .. } => caller.to_string(),
        }
    }

    /// The record's `proxy_source`: the trusted proxy it came through, if any.
    pub fn proxy(&self) -> Option<SocketAddr> {
        match self {
            Origin::Forwarded { proxy, .. } | Origin::Proxy(proxy) => Some(*proxy),
            Origin::Direct(_) | Origin::Spoofed { .. } => None,
        }
    }
}

/// Whom the shield's per-source limits and ACL apply to for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShieldSubject {
    /// This caller address (the source's own, or the one a trusted proxy named).
    Caller(IpAddr),
    /// A trusted proxy's own message: it carries every caller's calls, so it is
    /// never limited, banned or refused (like a listed trunk).
    Proxy,
}

impl TrustedProxies {
    /// The proxies in `networks` (addresses or CIDRs).
    pub fn new(networks: &[String]) -> Result<TrustedProxies, BadNetwork> {
        Ok(TrustedProxies {
            networks: parse_networks(networks)?,
        })
    }

    /// Whether `source` is a trusted proxy.
    pub fn contains(&self, source: IpAddr) -> bool {
        self.networks.iter().any(|net| net.contains(&source))
    }

    /// Judges a request from `source` whose [`FORWARDED_HEADER`] said `header`.
    pub fn judge(&self, source: SocketAddr, header: Option<&str>) -> Origin {
        let header = header.map(str::trim).filter(|value| !value.is_empty());
        if !self.contains(source.ip()) {
            return match header {
                Some(claimed) => Origin::Spoofed {
                    source,
                    claimed: claimed.to_owned(),
                },
                None => Origin::Direct(source),
            };
        }
        match header.and_then(parse_address) {
            Some(caller) => Origin::Forwarded {
                caller,
                proxy: source,
            },
            None => Origin::Proxy(source),
        }
    }

    /// Whom the shield judges for a raw message from `source` (read before
    /// parsing: the header is looked up only when a trusted proxy sent it).
    pub fn shield_subject(&self, source: IpAddr, message: &[u8]) -> ShieldSubject {
        if !self.contains(source) {
            return ShieldSubject::Caller(source);
        }
        match header_value(message).and_then(parse_address) {
            Some(caller) => ShieldSubject::Caller(caller),
            None => ShieldSubject::Proxy,
        }
    }
}

/// An address as a proxy writes it: `192.0.2.7`, `2001:db8::7` or `[2001:db8::7]`.
fn parse_address(value: &str) -> Option<IpAddr> {
    let value = value.trim();
    let bare = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    bare.parse().ok()
}

/// The first [`FORWARDED_HEADER`] value in a raw message's header section.
fn header_value(message: &[u8]) -> Option<&str> {
    let head_end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(message.len());
    let head = std::str::from_utf8(&message[..head_end]).ok()?;
    head.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case(FORWARDED_HEADER)
            .then_some(value.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies() -> TrustedProxies {
        TrustedProxies::new(&["127.0.0.1".into(), "10.9.0.0/24".into()]).unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_trusted_proxy_names_the_caller() {
        let origin = proxies().judge(addr("10.9.0.5:5060"), Some(" 198.51.100.7 "));
        assert_eq!(
            origin,
            Origin::Forwarded {
                caller: "198.51.100.7".parse().unwrap(),
                proxy: addr("10.9.0.5:5060"),
            }
        );
        assert_eq!(origin.caller_ip().to_string(), "198.51.100.7");
        assert_eq!(origin.caller_source(), "198.51.100.7");
        assert_eq!(origin.proxy(), Some(addr("10.9.0.5:5060")));
        let v6 = proxies().judge(addr("127.0.0.1:5080"), Some("[2001:db8::7]"));
        assert_eq!(v6.caller_source(), "2001:db8::7");
    }

    #[test]
    fn the_header_from_anyone_else_is_ignored() {
        let origin = proxies().judge(addr("203.0.113.9:5070"), Some("198.51.100.7"));
        assert_eq!(
            origin,
            Origin::Spoofed {
                source: addr("203.0.113.9:5070"),
                claimed: "198.51.100.7".into(),
            }
        );
        assert_eq!(origin.caller_ip().to_string(), "203.0.113.9");
        assert_eq!(origin.caller_source(), "203.0.113.9:5070");
        assert_eq!(origin.proxy(), None);
        // Without the header: plainly direct.
        let direct = proxies().judge(addr("203.0.113.9:5070"), None);
        assert_eq!(direct, Origin::Direct(addr("203.0.113.9:5070")));
        // No proxies configured: nobody's header counts.
        let none = TrustedProxies::default().judge(addr("127.0.0.1:5080"), Some("198.51.100.7"));
        assert!(matches!(none, Origin::Spoofed { .. }));
    }

    #[test]
    fn a_proxy_without_a_readable_header_is_judged_as_itself() {
        for header in [None, Some(""), Some("not an address"), Some("1.2.3.4:5060")] {
            let origin = proxies().judge(addr("127.0.0.1:5080"), header);
            assert_eq!(origin, Origin::Proxy(addr("127.0.0.1:5080")), "{header:?}");
            assert_eq!(origin.proxy(), Some(addr("127.0.0.1:5080")));
        }
    }

    #[test]
    fn the_shield_judges_the_forwarded_caller_only_behind_a_proxy() {
        let invite = b"INVITE sip:1@h SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080\r\nx-orig-ip: 198.51.100.7\r\nContent-Length: 0\r\n\r\n";
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            proxies().shield_subject(proxy, invite),
            ShieldSubject::Caller("198.51.100.7".parse().unwrap())
        );
        assert_eq!(
            proxies().shield_subject(other, invite),
            ShieldSubject::Caller(other)
        );
        let probe = b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080\r\n\r\n";
        assert_eq!(proxies().shield_subject(proxy, probe), ShieldSubject::Proxy);
        // A header in the body is not a header.
        let body = b"OPTIONS sip:h SIP/2.0\r\nContent-Length: 22\r\n\r\nX-Orig-IP: 198.51.100.7";
        assert_eq!(proxies().shield_subject(proxy, body), ShieldSubject::Proxy);
    }

    #[test]
    fn bad_networks_are_reported() {
        let err = TrustedProxies::new(&["kamailio".into()]).unwrap_err();
        assert!(err.to_string().contains("kamailio"));
    }
}
