//! The check every incoming SIP datagram passes before the SIP stack sees it.
//!
//! rsipstack silently drops what it cannot parse and accepts a Content-Length
//! larger than the datagram (body cut short). RFC 3261 §18.3 and RFC 4475 want
//! a 400 for both, and a scanner's junk must never reach a call. So courtline
//! owns the UDP socket: [`GuardedUdpSocket`] reads each datagram, runs
//! [`inspect`] on it, answers 400 itself where a response is possible, and
//! hands only sound messages to the stack.

use std::net::SocketAddr;
use std::sync::Arc;

use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::SipMessage;
use tokio::net::UdpSocket;

/// What to do with one datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Sound: give the first `len` bytes of the buffer to the stack (the
    /// buffer may have been rewritten, e.g. a Content-Length added).
    Pass(usize),
    /// Malformed request: send this 400 back to the source, drop the request.
    Reject(Vec<u8>),
    /// Malformed and unanswerable (a response, or no headers to answer with).
    Drop(&'static str),
}

/// Inspects the datagram in `buf[..len]`; may rewrite `buf` (which must have
/// spare room after `len`) to make an implicit body length explicit.
pub fn inspect(buf: &mut [u8], len: usize) -> Verdict {
    let datagram = &buf[..len];
    // Keep-alives (CRLF, RFC 5626) go through: the stack answers them.
    if datagram.iter().all(u8::is_ascii_whitespace) {
        return Verdict::Pass(len);
    }
    let Some(head_end) = find(datagram, b"\r\n\r\n").map(|i| i + 4).or_else(|| {
        // Bare-LF line ends are tolerated by the parser; accept them here too.
        find(datagram, b"\n\n").map(|i| i + 2)
    }) else {
        return reject_or_drop(datagram, "no blank line ends the headers");
    };
    let body_len = len - head_end;
    let declared = match content_length(&datagram[..head_end]) {
        Ok(declared) => declared,
        Err(problem) => return reject_or_drop(datagram, problem),
    };
    let mut len = len;
    match declared {
        Some(declared) if declared > body_len => {
            return reject_or_drop(datagram, "Content-Length is larger than the datagram");
        }
        Some(_) => {}
        None if body_len > 0 => {
            // RFC 3261 §18.3: over UDP a missing Content-Length means "the rest
            // of the datagram". The stack would read an empty body, so say it.
            let header = format!("Content-Length: {body_len}\r\n");
            let insert_at = head_end
                - if datagram[..head_end].ends_with(b"\r\n\r\n") {
                    2
                } else {
                    1
                };
            if len + header.len() > buf.len() {
                return reject_or_drop(&buf[..len], "message too large");
            }
            buf.copy_within(insert_at..len, insert_at + header.len());
            buf[insert_at..insert_at + header.len()].copy_from_slice(header.as_bytes());
            len += header.len();
        }
        None => {}
    }
    let datagram = &buf[..len];
    let message = match SipMessage::try_from(datagram) {
        Ok(message) => message,
        Err(_) => return reject_or_drop(datagram, "unparseable start line or header"),
    };
    if let Err(problem) = check_mandatory(&message) {
        return reject_or_drop(datagram, problem);
    }
    Verdict::Pass(len)
}

/// RFC 3261 §8.1.1: headers every request and response must carry, well formed.
fn check_mandatory(message: &SipMessage) -> Result<(), &'static str> {
    let via = message.via_header().map_err(|_| "no Via header")?;
    via.typed().map_err(|_| "malformed Via header")?;
    message
        .from_header()
        .map_err(|_| "no From header")?
        .typed()
        .map_err(|_| "malformed From header")?;
    message
        .to_header()
        .map_err(|_| "no To header")?
        .typed()
        .map_err(|_| "malformed To header")?;
    message.call_id_header().map_err(|_| "no Call-ID header")?;
    let cseq = message.cseq_header().map_err(|_| "no CSeq header")?;
    let cseq = cseq.typed().map_err(|_| "malformed CSeq header")?;
    if let SipMessage::Request(request) = message {
        if cseq.method != request.method {
            return Err("CSeq method does not match the request method");
        }
    }
    Ok(())
}

/// Content-Length value (full or compact `l:` form), if present.
fn content_length(head: &[u8]) -> Result<Option<usize>, &'static str> {
    let mut found = None;
    for line in header_lines(head) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            let value: usize = value
                .trim()
                .parse()
                .map_err(|_| "Content-Length is not a number")?;
            if found.is_some_and(|f| f != value) {
                return Err("conflicting Content-Length headers");
            }
            found = Some(value);
        }
    }
    Ok(found)
}

/// Header lines after the start line, with folded continuation lines joined.
fn header_lines(head: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(head);
    let mut lines: Vec<String> = Vec::new();
    for raw in text.split('\n').skip(1) {
        let line = raw.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = lines.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
            continue;
        }
        lines.push(line.to_string());
    }
    lines
}

/// A 400 for a malformed request when the headers needed to route a response
/// (Via, From, To, Call-ID, CSeq) can be found; otherwise drop.
fn reject_or_drop(datagram: &[u8], problem: &'static str) -> Verdict {
    if datagram.starts_with(b"SIP/") {
        return Verdict::Drop(problem);
    }
    let head_end = find(datagram, b"\r\n\r\n").unwrap_or(datagram.len());
    let lines = header_lines(&datagram[..head_end]);
    let wanted = |full: &str, compact: &str| -> Vec<&String> {
        lines
            .iter()
            .filter(|l| {
                l.split_once(':').is_some_and(|(n, _)| {
                    let n = n.trim();
                    n.eq_ignore_ascii_case(full) || n.eq_ignore_ascii_case(compact)
                })
            })
            .collect()
    };
    let vias = wanted("via", "v");
    let from = wanted("from", "f");
    let to = wanted("to", "t");
    let call_id = wanted("call-id", "i");
    let cseq = wanted("cseq", "cseq");
    if vias.is_empty() || from.len() != 1 || to.len() != 1 || call_id.len() != 1 || cseq.len() != 1
    {
        return Verdict::Drop(problem);
    }
    // A request that is never answered (ACK) gets no 400 either.
    if datagram.starts_with(b"ACK ") {
        return Verdict::Drop(problem);
    }
    let mut response = String::from("SIP/2.0 400 Bad Request\r\n");
    for via in vias {
        response.push_str(via);
        response.push_str("\r\n");
    }
    response.push_str(from[0]);
    response.push_str("\r\n");
    response.push_str(to[0]);
    if !to[0].contains("tag=") {
        response.push_str(";tag=courtline400");
    }
    response.push_str("\r\n");
    response.push_str(call_id[0]);
    response.push_str("\r\n");
    response.push_str(cseq[0]);
    response.push_str("\r\n");
    response.push_str(&format!(
        "Warning: 399 courtline \"{problem}\"\r\nContent-Length: 0\r\n\r\n"
    ));
    Verdict::Reject(response.into_bytes())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The SIP UDP socket handed to rsipstack, with [`inspect`] in front of it.
pub struct GuardedUdpSocket {
    /// The real socket.
    socket: Arc<UdpSocket>,
}

impl GuardedUdpSocket {
    /// Wraps a bound socket.
    pub fn new(socket: UdpSocket) -> GuardedUdpSocket {
        GuardedUdpSocket {
            socket: Arc::new(socket),
        }
    }
}

#[async_trait::async_trait]
impl rsipstack::platform::net::UdpSocket for GuardedUdpSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> rsipstack::Result<(usize, SocketAddr)> {
        loop {
            // Leave room to insert a Content-Length header.
            let room = buf.len().saturating_sub(64);
            let (len, from) = self.socket.recv_from(&mut buf[..room]).await?;
            match inspect(buf, len) {
                Verdict::Pass(len) => return Ok((len, from)),
                Verdict::Reject(response) => {
                    tracing::info!(%from, reason = %warning_of(&response), "malformed SIP request: answered 400");
                    if let Err(e) = self.socket.send_to(&response, from).await {
                        tracing::debug!(%from, error = %e, "could not send 400");
                    }
                }
                Verdict::Drop(reason) => {
                    tracing::info!(%from, reason, "malformed SIP message dropped");
                }
            }
        }
    }

    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> rsipstack::Result<usize> {
        Ok(self.socket.send_to(buf, addr).await?)
    }

    fn local_addr(&self) -> rsipstack::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }
}

fn warning_of(response: &[u8]) -> String {
    let text = String::from_utf8_lossy(response);
    text.lines()
        .find_map(|l| l.strip_prefix("Warning: 399 courtline "))
        .unwrap_or("")
        .trim_matches('"')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(message: &str) -> (Verdict, Vec<u8>) {
        let mut buf = vec![0u8; 8192];
        buf[..message.len()].copy_from_slice(message.as_bytes());
        let verdict = inspect(&mut buf, message.len());
        (verdict, buf)
    }

    const OPTIONS: &str = "OPTIONS sip:02112368@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\nMax-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:02112368@127.0.0.1>\r\nCall-ID: c1@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn sound_message_passes_unchanged() {
        let (v, _) = run(OPTIONS);
        assert_eq!(v, Verdict::Pass(OPTIONS.len()));
    }

    #[test]
    fn compact_forms_pass() {
        let m = "INVITE sip:02112368@127.0.0.1 SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-2\r\nMax-Forwards: 70\r\nf: \"张三\" <sip:13800138000@127.0.0.1>;tag=9\r\nt: <sip:02112368@127.0.0.1>\r\ni: c2@127.0.0.1\r\nCSeq: 1 INVITE\r\nm: <sip:a@127.0.0.1:5070>\r\nc: application/sdp\r\nl: 4\r\n\r\nv=0\n";
        let (v, _) = run(m);
        assert_eq!(v, Verdict::Pass(m.len()));
    }

    #[test]
    fn content_length_beyond_datagram_gets_400() {
        let m = OPTIONS.replace("Content-Length: 0", "Content-Length: 500");
        let (v, _) = run(&m);
        let Verdict::Reject(resp) = v else {
            panic!("{v:?}")
        };
        let resp = String::from_utf8(resp).unwrap();
        assert!(resp.starts_with("SIP/2.0 400 "), "{resp}");
        assert!(resp.contains("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n"));
        assert!(resp.contains("Call-ID: c1@127.0.0.1\r\n"));
        assert!(resp.contains("CSeq: 1 OPTIONS\r\n"));
        assert!(resp.contains("To: <sip:02112368@127.0.0.1>;tag="));
        assert!(resp.contains("larger than the datagram"));
    }

    #[test]
    fn missing_content_length_over_udp_means_rest_of_datagram() {
        let m = OPTIONS.replace("Content-Length: 0\r\n", "Content-Type: text/plain\r\n") + "hello";
        let (v, buf) = run(&m);
        let Verdict::Pass(len) = v else {
            panic!("{v:?}")
        };
        let text = String::from_utf8_lossy(&buf[..len]);
        assert!(text.contains("Content-Length: 5\r\n\r\nhello"), "{text}");
        let SipMessage::Request(parsed) = SipMessage::try_from(&buf[..len]).unwrap() else {
            panic!("not a request")
        };
        assert_eq!(parsed.body, b"hello");
    }

    #[test]
    fn missing_mandatory_headers_get_400_or_drop() {
        // No Call-ID: a 400 cannot name the transaction, so it is dropped.
        let m = OPTIONS.replace("Call-ID: c1@127.0.0.1\r\n", "");
        assert!(matches!(run(&m).0, Verdict::Drop(_)));
        // CSeq method mismatch: answerable.
        let m = OPTIONS.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
        assert!(matches!(run(&m).0, Verdict::Reject(_)));
        // Non-numeric Content-Length.
        let m = OPTIONS.replace("Content-Length: 0", "Content-Length: zero");
        assert!(matches!(run(&m).0, Verdict::Reject(_)));
    }

    #[test]
    fn garbage_and_responses_are_dropped() {
        for junk in [
            "hello world",
            "\u{1}\u{2}\u{3}\r\n\r\n",
            "SIP/2.0 200 OK\r\nContent-Length: 99\r\n\r\n",
        ] {
            assert!(matches!(run(junk).0, Verdict::Drop(_)), "{junk:?}");
        }
        assert!(matches!(run("\r\n\r\n").0, Verdict::Pass(4)));
    }

    #[test]
    fn bad_start_line_with_headers_gets_400() {
        let m = OPTIONS.replace(
            "OPTIONS sip:02112368@127.0.0.1 SIP/2.0",
            "OPTIONS <sip:02112368@127.0.0.1> SIP/2.0 extra",
        );
        assert!(matches!(run(&m).0, Verdict::Reject(_)));
    }
}
