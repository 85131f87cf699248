//! Just enough SIP, as text over UDP, for the load generator to play callers
//! and operators: parsing the few headers it needs and writing its requests
//! and responses. Independent of the stack courtline uses, like a real peer.

use std::fmt::Write as _;
use std::net::SocketAddr;

/// One received SIP message, borrowed from the datagram.
#[derive(Debug)]
pub struct Message<'a> {
    /// Request or status line.
    pub first_line: &'a str,
    /// Header lines as (name, value); compact names are expanded.
    headers: Vec<(&'a str, &'a str)>,
    /// The body (SDP).
    pub body: &'a str,
}

impl<'a> Message<'a> {
    /// Parses a datagram; None if it is not text or has no header end.
    pub fn parse(datagram: &'a [u8]) -> Option<Message<'a>> {
        let text = std::str::from_utf8(datagram).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let mut lines = head.split("\r\n");
        let first_line = lines.next()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (expand_compact(n.trim()), v.trim()))
            .collect();
        Some(Message {
            first_line,
            headers,
            body,
        })
    }

    /// Status code of a response; None for requests.
    pub fn status(&self) -> Option<u16> {
        self.first_line
            .strip_prefix("SIP/2.0 ")?
            .get(..3)?
            .parse()
            .ok()
    }

    /// Method of a request; None for responses.
    pub fn method(&self) -> Option<&'a str> {
        if self.first_line.starts_with("SIP/2.0") {
            return None;
        }
        self.first_line.split(' ').next()
    }

    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// Every value of a header, in order.
    pub fn headers_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The method named in CSeq ("INVITE", "BYE"…).
    pub fn cseq_method(&self) -> Option<&'a str> {
        self.header("CSeq")?.split_whitespace().nth(1)
    }

    /// The SIP URI inside the Contact header.
    pub fn contact_uri(&self) -> Option<&'a str> {
        let contact = self.header("Contact")?;
        match (contact.find('<'), contact.find('>')) {
            (Some(a), Some(b)) if a < b => Some(&contact[a + 1..b]),
            _ => contact.split(';').next(),
        }
    }

    /// The user part of the From URI (the caller's number).
    pub fn from_user(&self) -> Option<&'a str> {
        let from = self.header("From")?;
        let after = &from[from.find("sip:")? + 4..];
        after.split('@').next()
    }

    /// RTP address in the SDP body (`c=` and `m=audio`).
    pub fn sdp_rtp_addr(&self) -> Option<SocketAddr> {
        let ip = self
            .body
            .lines()
            .find_map(|l| l.strip_prefix("c=IN IP4 "))?
            .trim();
        let port = self
            .body
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))?
            .split(' ')
            .next()?;
        format!("{ip}:{port}").parse().ok()
    }

    /// The first payload type on the `m=audio` line.
    pub fn sdp_first_payload_type(&self) -> Option<u8> {
        self.body
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))?
            .split(' ')
            .nth(2)?
            .parse()
            .ok()
    }
}

fn expand_compact(name: &str) -> &str {
    match name {
        "v" | "V" => "Via",
        "f" | "F" => "From",
        "t" | "T" => "To",
        "i" | "I" => "Call-ID",
        "m" | "M" => "Contact",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        other => other,
    }
}

/// An SDP body offering or answering PCMU/PCMA from `rtp`.
pub fn sdp(rtp: SocketAddr, payload_types: &[u8]) -> String {
    let mut s = format!(
        "v=0\r\no=loadgen 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP",
        ip = rtp.ip(),
        port = rtp.port()
    );
    for pt in payload_types {
        let _ = write!(s, " {pt}");
    }
    s.push_str("\r\n");
    for pt in payload_types {
        match pt {
            0 => s.push_str("a=rtpmap:0 PCMU/8000\r\n"),
            8 => s.push_str("a=rtpmap:8 PCMA/8000\r\n"),
            _ => {}
        }
    }
    s.push_str("a=sendrecv\r\n");
    s
}

/// Fields of a request the load generator sends.
pub struct Request<'a> {
    /// INVITE, ACK, BYE…
    pub method: &'a str,
    /// Request-URI.
    pub uri: &'a str,
    /// Our address, for Via and Contact.
    pub via_host: SocketAddr,
    /// Via branch (unique per transaction).
    pub branch: &'a str,
    /// From header value.
    pub from: &'a str,
    /// To header value.
    pub to: &'a str,
    /// Call-ID.
    pub call_id: &'a str,
    /// CSeq number.
    pub cseq: u32,
    /// SDP body, if any.
    pub sdp: Option<&'a str>,
}

impl Request<'_> {
    /// The request as text.
    pub fn render(&self) -> String {
        let body = self.sdp.unwrap_or("");
        let mut s = String::with_capacity(512 + body.len());
        let _ = write!(
            s,
            "{m} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {m}\r\nContact: <sip:loadgen@{via}>\r\n",
            m = self.method,
            uri = self.uri,
            via = self.via_host,
            branch = self.branch,
            from = self.from,
            to = self.to,
            cid = self.call_id,
            cseq = self.cseq,
        );
        if self.sdp.is_some() {
            s.push_str("Content-Type: application/sdp\r\n");
        }
        let _ = write!(s, "Content-Length: {}\r\n\r\n{body}", body.len());
        s
    }
}

/// A response to `request`, echoing its transaction headers; `to_tag` is added
/// to To when it has none.
pub fn response(
    request: &Message<'_>,
    status: &str,
    to_tag: &str,
    contact: SocketAddr,
    sdp: Option<&str>,
) -> String {
    let body = sdp.unwrap_or("");
    let mut s = String::with_capacity(512 + body.len());
    let _ = write!(s, "SIP/2.0 {status}\r\n");
    for via in request.headers_named("Via") {
        let _ = write!(s, "Via: {via}\r\n");
    }
    let to = request.header("To").unwrap_or("");
    let _ = write!(
        s,
        "From: {}\r\nTo: {to}{tag}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:loadgen@{contact}>\r\n",
        request.header("From").unwrap_or(""),
        request.header("Call-ID").unwrap_or(""),
        request.header("CSeq").unwrap_or(""),
        tag = if to.contains("tag=") {
            String::new()
        } else {
            format!(";tag={to_tag}")
        },
    );
    if sdp.is_some() {
        s.push_str("Content-Type: application/sdp\r\n");
    }
    let _ = write!(s, "Content-Length: {}\r\n\r\n{body}", body.len());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_courtline_sends() {
        let text = "SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 127.0.0.1:5000;branch=z9hG4bK-1\r\nFrom: <sip:13900000001@127.0.0.1>;tag=a\r\nTo: <sip:02112368@127.0.0.1>;tag=b\r\ni: x@y\r\nCSeq: 1 INVITE\r\nContact: <sip:courtline@127.0.0.1:5060>\r\nContent-Length: 10\r\n\r\nv=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 20002 RTP/AVP 8 101\r\n";
        let m = Message::parse(text.as_bytes()).unwrap();
        assert_eq!(m.status(), Some(200));
        assert_eq!(m.method(), None);
        assert_eq!(m.header("call-id"), Some("x@y"));
        assert_eq!(m.cseq_method(), Some("INVITE"));
        assert_eq!(m.contact_uri(), Some("sip:courtline@127.0.0.1:5060"));
        assert_eq!(m.from_user(), Some("13900000001"));
        assert_eq!(m.sdp_rtp_addr(), Some("127.0.0.1:20002".parse().unwrap()));
        assert_eq!(m.sdp_first_payload_type(), Some(8));
        let ok = response(&m, "200 OK", "t1", "127.0.0.1:9".parse().unwrap(), None);
        assert!(ok.contains("Via: SIP/2.0/UDP 127.0.0.1:5000;branch=z9hG4bK-1\r\n"));
        assert!(
            ok.contains("To: <sip:02112368@127.0.0.1>;tag=b\r\n"),
            "{ok}"
        );
        assert!(Message::parse(b"\xff\xfe").is_none());
    }
}
