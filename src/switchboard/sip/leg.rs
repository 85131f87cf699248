//! Conversions between rsipstack's message types and what courtline needs to
//! know about a call leg.

use std::net::{IpAddr, SocketAddr};

use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Header, Request, StatusCode};

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

/// The value of an extension header (one rsipstack has no type for, such as
/// `X-Orig-IP`), by case-insensitive name; the first if repeated.
pub fn extension_header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.headers.iter().find_map(|h| match h {
        Header::Other(other, value) if other.eq_ignore_ascii_case(name) => Some(value.as_str()),
        _ => None,
    })
}

/// Whether the request is inside an existing dialog (To tag present).
pub fn has_to_tag(request: &Request) -> bool {
    request
        .to_header()
        .ok()
        .and_then(|t| t.tag().ok().flatten())
        .is_some()
}

/// Why an INVITE's content rules out taking the call: a body that is not SDP
/// (415 Unsupported Media Type, RFC 3261 §8.2.3) or an `Accept` that leaves
/// SDP out, when every answer courtline gives carries SDP (406 Not
/// Acceptable, RFC 4475 §3.3.15). Both responses list `Accept: application/sdp`.
pub fn content_refusal(request: &Request) -> Option<StatusCode> {
    let values = |wanted: &str| -> Vec<String> {
        request
            .headers
            .iter()
            .filter_map(|h| {
                let text = h.to_string();
                let (name, value) = text.split_once(':')?;
                let name = name.trim();
                let compact = wanted == "content-type" && name.eq_ignore_ascii_case("c");
                (compact || name.eq_ignore_ascii_case(wanted)).then(|| value.trim().to_string())
            })
            .collect()
    };
    let media_type = |range: &str| {
        range
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    };
    if !request.body.is_empty() {
        let content_type = values("content-type");
        if content_type
            .first()
            .is_some_and(|ct| media_type(ct) != "application/sdp")
        {
            return Some(StatusCode::UnsupportedMediaType);
        }
    }
    let accept = values("accept");
    let takes_sdp = |value: &String| {
        value
            .split(',')
            .map(media_type)
            .any(|range| matches!(range.as_str(), "application/sdp" | "application/*" | "*/*"))
    };
    if !accept.is_empty() && !accept.iter().any(takes_sdp) {
        return Some(StatusCode::NotAcceptable);
    }
    None
}

/// A header rsipstack has no typed constructor for, by name.
pub fn header(name: &str, value: impl Into<String>) -> Header {
    Header::Other(name.to_string(), value.into())
}

/// `Content-Type: application/sdp`, for bodies we send.
pub fn sdp_content_type() -> Header {
    Header::ContentType("application/sdp".into())
}

/// `addr` as courtline keeps it: an IPv4 peer of a dual-stack (`[::]`) socket
/// arrives as `::ffff:a.b.c.d`, and is recorded, checked against ACLs and
/// answered in SDP as the IPv4 address it is.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The local address to advertise to `peer` (in SDP and Contact): the
/// configured one, the bound one if specific, else the one the kernel routes
/// towards `peer` from (found without sending anything).
pub fn local_ip_toward(peer: IpAddr, bound: IpAddr, configured: Option<IpAddr>) -> IpAddr {
    if let Some(ip) = configured {
        return ip;
    }
    let peer = peer.to_canonical();
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

    fn invite_with(extra: &str, body: &str) -> Request {
        let text = format!(
            "INVITE sip:02112368@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:02112368@127.0.0.1>\r\nCall-ID: x@y\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match SipMessage::try_from(text.as_str()).unwrap() {
            SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn content_refusals() {
        let sdp = "v=0\r\n";
        assert_eq!(
            content_refusal(&invite_with("Content-Type: application/sdp\r\n", sdp)),
            None
        );
        assert_eq!(
            content_refusal(&invite_with("c: Application/SDP\r\n", sdp)),
            None
        );
        assert_eq!(content_refusal(&invite_with("", "")), None);
        assert_eq!(
            content_refusal(&invite_with(
                "Content-Type: application/unknownformat\r\n",
                "<a/>"
            )),
            Some(StatusCode::UnsupportedMediaType)
        );
        assert_eq!(
            content_refusal(&invite_with("Accept: text/nobodyKnowsThis\r\n", "")),
            Some(StatusCode::NotAcceptable)
        );
        for accept in ["application/sdp;level=1, text/html", "*/*", "application/*"] {
            let extra = format!("Accept: {accept}\r\n");
            assert_eq!(content_refusal(&invite_with(&extra, "")), None, "{accept}");
        }
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

    #[test]
    fn an_ipv4_peer_of_a_dual_stack_socket_is_answered_in_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5070".parse().unwrap();
        assert_eq!(canonical(mapped), "127.0.0.1:5070".parse().unwrap());
        let v6: SocketAddr = "[::1]:5070".parse().unwrap();
        assert_eq!(canonical(v6), v6);
        assert_eq!(
            local_ip_toward(mapped.ip(), "::".parse().unwrap(), None),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            local_ip_toward(v6.ip(), "::".parse().unwrap(), None),
            v6.ip()
        );
    }
}
