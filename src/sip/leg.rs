//! Conversions between rsipstack's message types and what courtline needs to
//! know about a call leg.

use std::net::{IpAddr, SocketAddr};

use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Header, Request};

/// Who is calling, as far as the INVITE says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerIdentity {
    /// User part of the From URI (the caller's number).
    pub number: String,
    /// From display name, unquoted (UTF-8).
    pub display_name: String,
    /// User-Agent header, if any.
    pub user_agent: String,
}

/// Reads the caller's number, name and User-Agent from an INVITE.
pub fn caller_identity(request: &Request) -> CallerIdentity {
    let from = request.from_header().ok().and_then(|h| h.typed().ok());
    let number = from
        .as_ref()
        .and_then(|f| f.uri.auth.as_ref())
        .map(|a| percent_decode(&a.user))
        .unwrap_or_default();
    let display_name = from
        .and_then(|f| f.display_name)
        .map(|n| n.trim().trim_matches('"').to_string())
        .unwrap_or_default();
    let user_agent = request
        .user_agent_header()
        .map(|h| h.value().to_string())
        .unwrap_or_default();
    CallerIdentity {
        number,
        display_name,
        user_agent,
    }
}

/// The dialled line: the Request-URI user part.
pub fn dialled_number(request: &Request) -> String {
    request
        .uri
        .auth
        .as_ref()
        .map(|a| percent_decode(&a.user))
        .unwrap_or_default()
}

/// Whether the request is inside an existing dialog (To tag present).
pub fn has_to_tag(request: &Request) -> bool {
    request
        .to_header()
        .ok()
        .and_then(|t| t.tag().ok().flatten())
        .is_some()
}

/// A header rsipstack has no typed constructor for, by name.
pub fn header(name: &str, value: impl Into<String>) -> Header {
    Header::Other(name.to_string(), value.into())
}

/// `Content-Type: application/sdp`, for bodies we send.
pub fn sdp_content_type() -> Header {
    Header::ContentType("application/sdp".into())
}

/// The local address to advertise to `peer` (in SDP and Contact): the
/// configured one, the bound one if specific, else the one the kernel routes
/// towards `peer` from (found without sending anything).
pub fn local_ip_toward(peer: IpAddr, bound: IpAddr, configured: Option<IpAddr>) -> IpAddr {
    if let Some(ip) = configured {
        return ip;
    }
    if !bound.is_unspecified() {
        return bound;
    }
    let any: SocketAddr = if peer.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    std::net::UdpSocket::bind(any)
        .and_then(|s| {
            s.connect(SocketAddr::new(peer, 9))?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(peer)
}

/// Decodes `%XX` escapes in a URI user part (numbers like `+86...` arrive as `%2B86...`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(value) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(value);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::sip::SipMessage;

    fn invite(from: &str) -> Request {
        let text = format!(
            "INVITE sip:02112368@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\nFrom: {from};tag=1\r\nTo: <sip:02112368@127.0.0.1>\r\nCall-ID: x@y\r\nCSeq: 1 INVITE\r\nUser-Agent: SIPp/3.7\r\nContent-Length: 0\r\n\r\n"
        );
        match SipMessage::try_from(text.as_str()).unwrap() {
            SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn reads_caller_identity_with_chinese_name() {
        let r = invite("\"张三\" <sip:13800138000@192.0.2.1>");
        let id = caller_identity(&r);
        assert_eq!(id.number, "13800138000");
        assert_eq!(id.display_name, "张三");
        assert_eq!(id.user_agent, "SIPp/3.7");
        assert_eq!(dialled_number(&r), "02112368");
        assert!(!has_to_tag(&r));
    }

    #[test]
    fn anonymous_and_escaped_callers() {
        assert_eq!(
            caller_identity(&invite("<sip:%2B8613800138000@192.0.2.1>")).number,
            "+8613800138000"
        );
        let anon = caller_identity(&invite("<sip:192.0.2.1>"));
        assert_eq!(anon.number, "");
        assert_eq!(anon.display_name, "");
    }

    #[test]
    fn percent_decoding_edge_cases() {
        assert_eq!(percent_decode("abc%"), "abc%");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[test]
    fn local_ip_prefers_configured_then_bound() {
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let cfg: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            local_ip_toward(peer, "0.0.0.0".parse().unwrap(), Some(cfg)),
            cfg
        );
        assert_eq!(
            local_ip_toward(peer, "127.0.0.5".parse().unwrap(), None),
            "127.0.0.5".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            local_ip_toward(peer, "0.0.0.0".parse().unwrap(), None),
            peer
        );
    }
}
