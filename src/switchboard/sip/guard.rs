//! The check every incoming SIP datagram passes before the SIP stack sees it.
//!
//! rsipstack silently drops what it cannot parse and accepts a Content-Length
//! larger than the datagram (body cut short). RFC 3261 §18.3 and RFC 4475 want
//! a 400 for both, and a scanner's junk must never reach a call. So courtline
//! owns the UDP socket: [`GuardedUdpSocket`] reads each datagram, runs
//! [`inspect`] on it, answers 400 itself where a response is possible, and
//! hands only sound messages to the stack.
//!
//! The same check answers, statelessly, what a UAS must refuse before any
//! call logic runs (RFC 3261 §8.2): a SIP version other than 2.0 (505), an
//! unknown method (501), a Request-URI scheme other than sip/sips (416) and
//! a `Require` naming an extension courtline does not support (420). The
//! RFC 4475 torture corpus in `tests/torture/` pins every one of these.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use std::str::FromStr;

use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Method, SipMessage};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::arrivals::{new_call_branch, SetupArrivals};
use super::shield::{BanReason, Decision, NewBan, Shield};
use super::ALLOW;
use crate::switchboard::media::batch::{enable_receive_timestamps, recv_one};
use crate::switchboard::metrics::Metrics;

/// Option tags (RFC 3261 §8.2.2.3) courtline implements; a `Require` naming
/// any other gets 420 Bad Extension. `timer`: RFC 4028 session timers.
pub const SUPPORTED_EXTENSIONS: &[&str] = &["timer"];

/// What to do with one datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Sound: give the first `len` bytes of the buffer to the stack (the
    /// buffer may have been rewritten, e.g. a Content-Length added).
    Pass(usize),
    /// A request refused before the stack sees it (400, 416, 420, 501 or
    /// 505): send this response back to the source, drop the request.
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
    let declared = match content_length(&header_lines(&datagram[..head_end])) {
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
    // The header lines, unfolded, once for every check below (a datagram's
    // lines are read once, not once per check: this runs for every message).
    let head_end = find(datagram, b"\r\n\r\n")
        .or_else(|| find(datagram, b"\n\n"))
        .unwrap_or(len);
    let lines = header_lines(&datagram[..head_end]);
    let is_request = !datagram.starts_with(b"SIP/");
    if is_request {
        if let Err(refusal) = check_request(datagram, &lines) {
            return refusal.answer(datagram);
        }
    }
    // Tightening leaves `Require` as it is: judged on these lines, answered
    // (in RFC order) only once the message has parsed.
    let unsupported = if is_request {
        unsupported_extensions(datagram, &lines)
    } else {
        None
    };
    if let Some(tightened) = tighten_head(datagram, &lines) {
        // Same message, parameters without the optional whitespace the stack
        // cannot read (RFC 4475 §3.1.1.1 has `; tag = 98asjd8`).
        if tightened.len() > buf.len() {
            return reject_or_drop(&buf[..len], "message too large");
        }
        buf[..tightened.len()].copy_from_slice(&tightened);
        len = tightened.len();
    }
    let datagram = &buf[..len];
    let message = match SipMessage::try_from(datagram) {
        Ok(message) => message,
        Err(_) => return reject_or_drop(datagram, "unparseable start line or header"),
    };
    if let Err(problem) = check_mandatory(&message) {
        return reject_or_drop(datagram, problem);
    }
    if let (SipMessage::Request(_), Some(unsupported)) = (&message, unsupported) {
        return respond_with(
            datagram,
            "420 Bad Extension",
            "Require names an extension courtline does not support",
            &format!("Unsupported: {unsupported}\r\n"),
        );
    }
    Verdict::Pass(len)
}

/// Why a request is refused before the stack sees it.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// Malformed (400), with what is wrong.
    Malformed(&'static str),
    /// A SIP version other than 2.0 (505).
    Version,
    /// A method courtline does not know (501, with `Allow`).
    UnknownMethod,
    /// A Request-URI scheme other than sip or sips (416).
    Scheme,
}

impl Refusal {
    /// The response to send for this refusal, or a drop if none can be addressed.
    fn answer(&self, datagram: &[u8]) -> Verdict {
        match self {
            Refusal::Malformed(problem) => reject_or_drop(datagram, problem),
            Refusal::Version => respond_or_drop(
                datagram,
                "505 Version Not Supported",
                "only SIP/2.0 is supported",
            ),
            Refusal::UnknownMethod => respond_with(
                datagram,
                "501 Not Implemented",
                "unknown method",
                &format!("Allow: {ALLOW}\r\n"),
            ),
            Refusal::Scheme => respond_or_drop(
                datagram,
                "416 Unsupported URI Scheme",
                "only sip: and sips: Request-URIs are served",
            ),
        }
    }
}

/// The checks on a request's raw text that rsipstack's lenient parser does
/// not make, in RFC 3261 §8.2 order: syntax (400) and version (505) first,
/// then method (501), then Request-URI scheme (416).
fn check_request(datagram: &[u8], lines: &[Cow<'_, str>]) -> Result<(), Refusal> {
    let head_end = find(datagram, b"\r\n\r\n")
        .or_else(|| find(datagram, b"\n\n"))
        .unwrap_or(datagram.len());
    let head = &datagram[..head_end];
    let line_end = head
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(head.len());
    let request_line = std::str::from_utf8(&head[..line_end])
        .map_err(|_| Refusal::Malformed("request line is not UTF-8"))?;
    let [method, uri, version] = split_request_line(request_line)?;
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(
            if version.len() > 4 && version[..4].eq_ignore_ascii_case("SIP/") {
                Refusal::Version
            } else {
                Refusal::Malformed("bad SIP version in the request line")
            },
        );
    }
    let scheme = uri_scheme(uri).ok_or(Refusal::Malformed("Request-URI has no scheme"))?;
    check_headers(lines).map_err(Refusal::Malformed)?;
    // Methods are case-sensitive (RFC 3261 §7.1); rsipstack's parser is not.
    if Method::from_str(method).map_or(true, |known| known.to_string() != method) {
        return Err(Refusal::UnknownMethod);
    }
    if !(scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")) {
        return Err(Refusal::Scheme);
    }
    if uri.contains('?') {
        // RFC 3261 §19.1.1: headers are not allowed in a Request-URI.
        return Err(Refusal::Malformed("Request-URI carries headers"));
    }
    Ok(())
}

/// `Method SP Request-URI SP SIP-Version`, single spaces only (RFC 3261 §7.1).
fn split_request_line(line: &str) -> Result<[&str; 3], Refusal> {
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed(
            "request line is not method, Request-URI and version separated by single spaces",
        ));
    };
    if method.is_empty() || !method.chars().all(is_token_char) {
        return Err(Refusal::Malformed("request method is not a token"));
    }
    if uri.is_empty() || uri.starts_with('<') {
        return Err(Refusal::Malformed("Request-URI is empty or enclosed in <>"));
    }
    Ok([method, uri, version])
}

/// The scheme of a URI (`scheme ":" ...`, RFC 3986 §3.1), if it has a valid one.
fn uri_scheme(uri: &str) -> Option<&str> {
    let (scheme, rest) = uri.split_once(':')?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty();
    valid.then_some(scheme)
}

/// Header-level syntax rsipstack accepts but RFC 3261 does not.
fn check_headers(lines: &[Cow<'_, str>]) -> Result<(), &'static str> {
    let mut singles = [0usize; SINGLE_HEADERS.len()];
    for line in lines {
        let (name, value) = line.split_once(':').ok_or("header line without a colon")?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(is_token_char) {
            return Err("header name is not a token");
        }
        let lower = name.to_ascii_lowercase();
        for (count, (full, compact)) in singles.iter_mut().zip(SINGLE_HEADERS) {
            if lower == *full || lower == *compact {
                *count += 1;
                if *count > 1 {
                    return Err("a header allowed once appears more than once");
                }
            }
        }
        match lower.as_str() {
            "from" | "f" | "to" | "t" => check_address(value, false)?,
            "contact" | "m" if value.trim() != "*" => {
                for address in split_values(value)? {
                    check_address(address, false)?;
                }
            }
            "route" | "record-route" => {
                for address in split_values(value)? {
                    check_address(address, true)?;
                }
            }
            "via" | "v" => {
                for via in split_values(value)? {
                    check_via(via)?;
                }
            }
            // RFC 3261 §25.1: SIP-date = rfc1123-date, whose only zone is "GMT".
            "date" if !value.trim_end().ends_with(" GMT") => {
                return Err("Date is not in GMT");
            }
            _ => {}
        }
    }
    Ok(())
}

/// Headers RFC 3261 §7.3.1 allows only once (full and compact names).
const SINGLE_HEADERS: [(&str, &str); 6] = [
    ("from", "f"),
    ("to", "t"),
    ("call-id", "i"),
    ("cseq", "cseq"),
    ("max-forwards", "max-forwards"),
    ("content-type", "c"),
];

/// RFC 3261 §25.1 `token` characters.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.' | '!' | '%' | '*' | '_' | '+' | '`' | '\'' | '~'
        )
}

/// Splits a header value at commas that are outside quoted strings and `<>`.
fn split_values(value: &str) -> Result<Vec<&str>, &'static str> {
    let mut values = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    let mut in_angle = false;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => in_angle = true,
            '>' if !quoted => in_angle = false,
            ',' if !quoted && !in_angle => {
                values.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err("unterminated quoted string");
    }
    values.push(&value[start..]);
    if values.iter().any(|v| v.trim().is_empty()) {
        return Err("empty value in a header list");
    }
    Ok(values)
}

/// `name-addr / addr-spec` followed by `;` parameters (From, To, Contact,
/// Route): RFC 3261 §20.10 and §25.1.
fn check_address(value: &str, name_addr_only: bool) -> Result<(), &'static str> {
    let value = value.trim();
    let params = match quoted_end(value)? {
        Some(lt) => {
            let display = value[..lt].trim();
            if !display.starts_with('"') && !display.split_whitespace().all(is_display_word) {
                return Err("display name has characters that need quoting");
            }
            let inner = &value[lt + 1..];
            let gt = inner.find('>').ok_or("'<' without '>'")?;
            let uri = &inner[..gt];
            if uri_scheme(uri).is_none() || uri.chars().any(char::is_whitespace) {
                return Err("bad URI inside <>");
            }
            &inner[gt + 1..]
        }
        None if name_addr_only => return Err("address must be enclosed in <>"),
        None => {
            let (uri, params) = value.split_at(value.find(';').unwrap_or(value.len()));
            let uri = uri.trim();
            if value.contains('"')
                || uri_scheme(uri).is_none()
                || uri.contains(|c: char| c.is_whitespace() || c == '?' || c == ',')
            {
                return Err("address with a display name, header or comma is not in <>");
            }
            params
        }
    };
    check_params(params)
}

/// Byte index of the `<` that opens a name-addr, skipping quoted strings;
/// `None` for an addr-spec. An unterminated quote is an error.
fn quoted_end(value: &str) -> Result<Option<usize>, &'static str> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => return Ok(Some(i)),
            _ => {}
        }
    }
    if quoted {
        Err("unterminated quoted string")
    } else {
        Ok(None)
    }
}

/// A word of an unquoted display name: a token. UTF-8 beyond ASCII is let
/// through too (some PBXs send Chinese names unquoted); ASCII separators such
/// as `,` are not (RFC 4475 §3.1.2.15).
fn is_display_word(word: &str) -> bool {
    word.chars().all(|c| is_token_char(c) || !c.is_ascii())
}

/// `*( SEMI generic-param )`: every parameter has a token name, and a value
/// when it has an `=` (RFC 4475 §3.1.2.1 sends `;;;;`).
fn check_params(params: &str) -> Result<(), &'static str> {
    let params = params.trim();
    if params.is_empty() {
        return Ok(());
    }
    let rest = params
        .strip_prefix(';')
        .ok_or("unexpected text after an address")?;
    for param in split_params(rest)? {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim())),
            None => (param.trim(), None),
        };
        if name.is_empty() || !name.chars().all(is_token_char) {
            return Err("empty or malformed parameter");
        }
        if value.is_some_and(str::is_empty) {
            return Err("parameter with an empty value");
        }
    }
    Ok(())
}

/// Splits parameters at semicolons outside quoted strings.
fn split_params(params: &str) -> Result<Vec<&str>, &'static str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in params.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&params[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err("unterminated quoted string");
    }
    out.push(&params[start..]);
    Ok(out)
}

/// One `via-parm`: `SIP / 2.0 / transport sent-by *( ; param )` (LWS allowed
/// around the slashes, RFC 3261 §25.1).
fn check_via(via: &str) -> Result<(), &'static str> {
    let (protocol, params) = via.split_at(via.find(';').unwrap_or(via.len()));
    let mut parts = protocol.splitn(3, '/');
    let (Some(name), Some(version), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("Via without a sent-protocol");
    };
    let mut rest = rest.split_whitespace();
    let transport = rest.next().unwrap_or("");
    let sent_by: String = rest.collect();
    let tokens = [name.trim(), version.trim(), transport];
    if tokens
        .iter()
        .any(|t| t.is_empty() || !t.chars().all(is_token_char))
        || sent_by.is_empty()
    {
        return Err("malformed Via");
    }
    check_params(params)
}

/// The option tags in a request's `Require` that courtline does not support,
/// comma-separated; `None` when there are none. ACK and CANCEL are exempt
/// (RFC 3261 §8.2.2.3); `Proxy-Require` is for proxies, not a UAS.
fn unsupported_extensions(datagram: &[u8], lines: &[Cow<'_, str>]) -> Option<String> {
    // The method as sent: `check_request` let through only exact method names.
    if datagram.starts_with(b"ACK ") || datagram.starts_with(b"CANCEL ") {
        return None;
    }
    let unsupported: Vec<String> = lines
        .iter()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("require"))
        .flat_map(|(_, value)| value.split(','))
        .map(str::trim)
        .filter(|tag| !tag.is_empty() && !SUPPORTED_EXTENSIONS.contains(tag))
        .map(str::to_string)
        .collect();
    (!unsupported.is_empty()).then(|| unsupported.join(", "))
}

/// The datagram with whitespace around `;` and `=` removed from the parameters
/// of the headers rsipstack reads tags and branches from (RFC 3261 allows it:
/// `SEMI = SWS ";" SWS`, `EQUAL = SWS "=" SWS`); `None` when there is none.
/// Folded lines of those headers are unfolded; everything else is kept.
fn tighten_head(datagram: &[u8], lines: &[Cow<'_, str>]) -> Option<Vec<u8>> {
    let head_end = find(datagram, b"\r\n\r\n")? + 4;
    let head = &datagram[..head_end];
    let start_end = find(head, b"\r\n")?;
    let mut changed = false;
    let mut out = head[..start_end + 2].to_vec();
    for line in lines {
        let tightened = line.split_once(':').and_then(|(name, value)| {
            let lower = name.trim().to_ascii_lowercase();
            let addressed = [
                "from",
                "f",
                "to",
                "t",
                "contact",
                "m",
                "via",
                "v",
                "route",
                "record-route",
            ];
            addressed
                .contains(&lower.as_str())
                .then(|| format!("{name}:{}", tighten_params(value)))
        });
        match tightened {
            Some(tightened) if tightened != line.as_ref() => {
                changed = true;
                out.extend_from_slice(tightened.as_bytes());
            }
            _ => out.extend_from_slice(line.as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
    }
    if !changed {
        return None;
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&datagram[head_end..]);
    Some(out)
}

/// Removes whitespace next to `;` and `=` outside quoted strings and `<>`.
fn tighten_params(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut quoted = false;
    let mut escaped = false;
    let mut in_angle = false;
    let mut after_separator = false;
    for c in value.chars() {
        let outside = !quoted && !in_angle;
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => in_angle = true,
            '>' if !quoted => in_angle = false,
            ';' | '=' if outside => {
                out.truncate(out.trim_end().len());
                out.push(c);
                after_separator = true;
                continue;
            }
            c if c.is_whitespace() && outside && after_separator => continue,
            _ => {}
        }
        after_separator = false;
        out.push(c);
    }
    out
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
        // RFC 3261 §8.1.1.3; without it the stack cannot key the transaction.
        // RFC 2543 clients (RFC 4475 §3.4.1) are not served.
        if request
            .from_header()
            .ok()
            .and_then(|f| f.tag().ok().flatten())
            .is_none()
        {
            return Err("From has no tag (RFC 2543 requests are not served)");
        }
    }
    Ok(())
}

/// Content-Length value (full or compact `l:` form), if present.
fn content_length(lines: &[Cow<'_, str>]) -> Result<Option<usize>, &'static str> {
    let mut found = None;
    for line in lines {
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
fn header_lines(head: &[u8]) -> Vec<Cow<'_, str>> {
    match String::from_utf8_lossy(head) {
        Cow::Borrowed(text) => unfold(text),
        Cow::Owned(text) => unfold(&text)
            .into_iter()
            .map(|line| Cow::Owned(line.into_owned()))
            .collect(),
    }
}

/// The header lines of `text` with folded continuations joined; a line is
/// copied only when it was folded.
fn unfold(text: &str) -> Vec<Cow<'_, str>> {
    let mut lines: Vec<Cow<'_, str>> = Vec::with_capacity(16);
    for raw in text.split('\n').skip(1) {
        let line = raw.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = lines.last_mut() {
                let last = last.to_mut();
                last.push(' ');
                last.push_str(line.trim());
            }
            continue;
        }
        lines.push(Cow::Borrowed(line));
    }
    lines
}

/// A 400 for a malformed request; see [`respond_with`].
fn reject_or_drop(datagram: &[u8], problem: &'static str) -> Verdict {
    respond_or_drop(datagram, "400 Bad Request", problem)
}

/// A final response with `status` (e.g. "505 Version Not Supported") to the
/// request in `datagram`; see [`respond_with`].
fn respond_or_drop(datagram: &[u8], status: &str, problem: &'static str) -> Verdict {
    respond_with(datagram, status, problem, "")
}

/// A final response with `status` and `extra` header lines to the request in
/// `datagram`, built from its raw headers (RFC 3261 §8.2.6.2). It goes to the
/// datagram's source, so only a Via is needed; From, To, Call-ID and CSeq are
/// copied when present (the first of each), so even a request missing them
/// learns why it failed (RFC 4475 §3.3.1). Responses and ACKs, which are
/// never answered, and datagrams without a Via are dropped.
fn respond_with(datagram: &[u8], status: &str, problem: &'static str, extra: &str) -> Verdict {
    if datagram.starts_with(b"SIP/") {
        return Verdict::Drop(problem);
    }
    let head_end = find(datagram, b"\r\n\r\n").unwrap_or(datagram.len());
    let lines = header_lines(&datagram[..head_end]);
    let named = |full: &str, compact: &str| -> Vec<&Cow<'_, str>> {
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
    let vias = named("via", "v");
    // A request that is never answered (ACK) gets no response either.
    if vias.is_empty() || datagram.starts_with(b"ACK ") {
        return Verdict::Drop(problem);
    }
    let mut response = format!("SIP/2.0 {status}\r\n");
    for via in vias {
        response.push_str(via);
        response.push_str("\r\n");
    }
    if let Some(from) = named("from", "f").first() {
        response.push_str(from);
        response.push_str("\r\n");
    }
    if let Some(to) = named("to", "t").first() {
        response.push_str(to);
        if !to.contains("tag=") {
            response.push_str(";tag=courtline-guard");
        }
        response.push_str("\r\n");
    }
    for (full, compact) in [("call-id", "i"), ("cseq", "cseq")] {
        if let Some(line) = named(full, compact).first() {
            response.push_str(line);
            response.push_str("\r\n");
        }
    }
    response.push_str(extra);
    response.push_str(&format!(
        "Warning: 399 courtline \"{problem}\"\r\nContent-Length: 0\r\n\r\n"
    ));
    Verdict::Reject(response.into_bytes())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The shield shared by the UDP socket and the stream transports, so one
/// source's budget and ban hold across UDP, TCP and TLS.
#[derive(Debug, Clone)]
pub struct SharedShield {
    /// The shield itself.
    shield: Arc<Mutex<Shield>>,
    /// Where bans are counted.
    metrics: Arc<Metrics>,
}

impl SharedShield {
    /// Shares `shield`; its bans are counted in `metrics`.
    pub fn new(shield: Shield, metrics: Arc<Metrics>) -> SharedShield {
        SharedShield {
            shield: Arc::new(Mutex::new(shield)),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shield> {
        // A panic elsewhere poisoned the lock; keep serving rather than go deaf.
        self.shield
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs the shield on one message from `source`, logging a new ban.
    pub fn check(&self, source: IpAddr, message: &[u8]) -> Decision {
        let (decision, ban) = self
            .lock()
            .check(source, message, std::time::Instant::now());
        if ban.is_some() {
            self.metrics.shield_banned();
        }
        if let Some(NewBan { address, reason }) = ban {
            // Behind a trusted proxy the banned caller is not the datagram's
            // source: name both, or the log reads as if the proxy was banned.
            let proxy = (address != source.to_canonical()).then_some(source);
            let banned = match proxy {
                Some(_) => "caller behind a trusted proxy banned (the proxy is not)",
                None => "source banned",
            };
            let proxy = proxy.map(tracing::field::display);
            match reason {
                BanReason::Flood => {
                    tracing::warn!(source = %address, proxy, "SIP flood: {banned}")
                }
                BanReason::Scanner(agent) => tracing::warn!(
                    source = %address,
                    proxy,
                    user_agent = %agent,
                    "SIP scanner: {banned}"
                ),
            }
        }
        decision
    }

    /// Whether a TCP or TLS connection from `source` may be accepted.
    pub fn admits_connection(&self, source: IpAddr) -> bool {
        self.lock()
            .admits_connection(source, std::time::Instant::now())
    }
}

/// The SIP UDP socket handed to rsipstack, with the [`Shield`] and [`inspect`]
/// in front of it.
pub struct GuardedUdpSocket {
    /// The real socket.
    socket: Arc<UdpSocket>,
    /// ACLs, rate limits and bans, shared with the stream transports.
    shield: SharedShield,
    /// Where a new call's INVITE is noted as arrived, for admission to tell
    /// how long it waited.
    arrivals: Arc<SetupArrivals>,
}

impl GuardedUdpSocket {
    /// Wraps a bound socket; notes in `arrivals` when each new call's INVITE
    /// arrived (the kernel stamps each datagram for it).
    pub fn new(
        socket: UdpSocket,
        shield: SharedShield,
        arrivals: Arc<SetupArrivals>,
    ) -> GuardedUdpSocket {
        if let Err(e) = enable_receive_timestamps(socket.as_raw_fd()) {
            tracing::warn!(error = %e, "the SIP socket gives no arrival times: an INVITE's wait is counted from when courtline reads it");
        }
        GuardedUdpSocket {
            socket: Arc::new(socket),
            shield,
            arrivals,
        }
    }

    /// Runs the shield on a datagram: true to go on inspecting it.
    async fn admitted(&self, datagram: &[u8], from: SocketAddr) -> bool {
        match self.shield.check(from.ip(), datagram) {
            Decision::Allow => true,
            Decision::Drop => false,
            Decision::Forbid => {
                if let Verdict::Reject(response) = forbidden(datagram) {
                    tracing::info!(%from, "request from an untrusted source: 403");
                    let _ = self.socket.send_to(&response, from).await;
                }
                false
            }
        }
    }
}

/// How long a datagram the kernel stamped at `arrived_ns` (CLOCK_REALTIME)
/// has been queued: zero without a stamp, or when the clock was stepped back.
fn queued_for(arrived_ns: Option<i128>) -> std::time::Duration {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as i128);
    arrived_ns
        .and_then(|arrived| u64::try_from(now_ns - arrived).ok())
        .map_or(std::time::Duration::ZERO, std::time::Duration::from_nanos)
}

/// The 403 for a request from an untrusted source (dropped for responses and ACKs).
pub(crate) fn forbidden(message: &[u8]) -> Verdict {
    respond_or_drop(message, "403 Forbidden", "source not in a trusted network")
}

#[async_trait::async_trait]
impl rsipstack::platform::net::UdpSocket for GuardedUdpSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> rsipstack::Result<(usize, SocketAddr)> {
        loop {
            // Leave room to insert a Content-Length header.
            let room = buf.len().saturating_sub(64);
            let (len, from, arrived_ns) = self
                .socket
                .async_io(Interest::READABLE, || {
                    recv_one(self.socket.as_raw_fd(), &mut buf[..room])
                })
                .await?;
            if !self.admitted(&buf[..len], from).await {
                continue;
            }
            match inspect(buf, len) {
                Verdict::Pass(len) => {
                    if let Some(branch) = new_call_branch(&buf[..len]) {
                        // Time spent in the socket's queue counts too: a
                        // stalled process reads minutes-old INVITEs at once.
                        self.arrivals.note(branch, queued_for(arrived_ns));
                    }
                    return Ok((len, from));
                }
                Verdict::Reject(response) => {
                    tracing::info!(%from, status = %status_of(&response), reason = %warning_of(&response), "SIP request refused before the stack");
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

/// The status line of a response the guard wrote, without "SIP/2.0 ".
fn status_of(response: &[u8]) -> String {
    let text = String::from_utf8_lossy(response);
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("SIP/2.0 "))
        .unwrap_or("")
        .to_string()
}

/// The reason the guard gave in its Warning header.
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

    fn status(verdict: Verdict) -> String {
        let Verdict::Reject(response) = verdict else {
            panic!("{verdict:?}")
        };
        status_of(&response)
    }

    #[test]
    fn missing_mandatory_headers_get_400_or_drop() {
        // No Call-ID: still answered (RFC 4475 §3.3.1), with what there is.
        let m = OPTIONS.replace("Call-ID: c1@127.0.0.1\r\n", "");
        assert_eq!(status(run(&m).0), "400 Bad Request");
        // No Via: nowhere to send a response.
        let m = OPTIONS.replace("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n", "");
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

    #[test]
    fn refusals_a_uas_makes_before_the_stack() {
        let m = OPTIONS.replace("SIP/2.0\r\nVia", "SIP/3.0\r\nVia");
        assert_eq!(status(run(&m).0), "505 Version Not Supported");
        let m = OPTIONS
            .replace("OPTIONS sip:", "FROBNICATE sip:")
            .replace("1 OPTIONS", "1 FROBNICATE");
        let Verdict::Reject(response) = run(&m).0 else {
            panic!("not refused")
        };
        let response = String::from_utf8(response).unwrap();
        assert!(response.starts_with("SIP/2.0 501 "), "{response}");
        assert!(response.contains("\r\nAllow: INVITE"), "{response}");
        // Methods are case-sensitive: "options" is not OPTIONS.
        let m = OPTIONS.replace("OPTIONS sip:", "options sip:");
        assert_eq!(status(run(&m).0), "501 Not Implemented");
        let m = OPTIONS.replace("OPTIONS sip:02112368@127.0.0.1", "OPTIONS tel:+862112368");
        assert_eq!(status(run(&m).0), "416 Unsupported URI Scheme");
        let m = OPTIONS.replace("Max-Forwards: 70", "Require: 100rel, foo");
        let Verdict::Reject(response) = run(&m).0 else {
            panic!("not refused")
        };
        let response = String::from_utf8(response).unwrap();
        assert!(response.starts_with("SIP/2.0 420 "), "{response}");
        assert!(
            response.contains("\r\nUnsupported: 100rel, foo\r\n"),
            "{response}"
        );
        // ACK and CANCEL are never refused for a Require.
        let m = OPTIONS
            .replace("OPTIONS sip:", "CANCEL sip:")
            .replace("1 OPTIONS", "1 CANCEL")
            .replace("Max-Forwards: 70", "Require: foo");
        assert!(matches!(run(&m).0, Verdict::Pass(_)));
    }

    #[test]
    fn header_syntax_the_stack_lets_through_gets_400() {
        for (from, to) in [
            (
                "From: <sip:a@127.0.0.1>;tag=1",
                "From: a, b <sip:a@127.0.0.1>;tag=1",
            ),
            (
                "From: <sip:a@127.0.0.1>;tag=1",
                "From: \"a <sip:a@127.0.0.1>;tag=1",
            ),
            (
                "To: <sip:02112368@127.0.0.1>",
                "To: < sip:02112368@127.0.0.1 >",
            ),
            (
                "To: <sip:02112368@127.0.0.1>",
                "To: <sip:02112368@127.0.0.1>;;",
            ),
            ("branch=z9hG4bK-1", "branch=z9hG4bK-1;;,"),
            ("Max-Forwards: 70", "Max-Forwards: 70\r\nMax-Forwards: 69"),
            ("Max-Forwards: 70", "Date: Fri, 01 Jan 2010 16:00:00 EST"),
            ("Max-Forwards: 70", "Contact: sip:a@b?x=y"),
            (
                "OPTIONS sip:02112368@127.0.0.1 SIP/2.0",
                "OPTIONS sip:02112368@127.0.0.1?x=y SIP/2.0",
            ),
            ("From: <sip:a@127.0.0.1>;tag=1", "From: <sip:a@127.0.0.1>"),
        ] {
            let m = OPTIONS.replace(from, to);
            assert_eq!(status(run(&m).0), "400 Bad Request", "{to}");
        }
    }

    #[test]
    fn unusual_but_valid_headers_pass() {
        for (from, to) in [
            // Unquoted UTF-8 names are let through (some PBXs send them).
            (
                "From: <sip:a@127.0.0.1>;tag=1",
                "From: 张三 <sip:a@127.0.0.1>;tag=1",
            ),
            (
                "From: <sip:a@127.0.0.1>;tag=1",
                "From: caller<sip:a@127.0.0.1>;tag=1",
            ),
            ("Max-Forwards: 70", "Contact: *"),
            (
                "Max-Forwards: 70",
                "Contact: <sip:a@b>;+sip.instance=\"<urn:uuid:1;2>\", sip:c@d;expires=60",
            ),
            ("Max-Forwards: 70", "Date: Sat, 13 Nov 2010 23:29:00 GMT"),
            ("Max-Forwards: 70", "Proxy-Require: foo"),
        ] {
            let m = OPTIONS.replace(from, to);
            assert!(matches!(run(&m).0, Verdict::Pass(_)), "{to}");
        }
    }

    #[test]
    fn optional_whitespace_in_parameters_is_tightened_for_the_stack() {
        let m = OPTIONS.replace(
            "From: <sip:a@127.0.0.1>;tag=1",
            "From: \"a ; b\" <sip:a@127.0.0.1;x=1> ;\r\n  tag = 1",
        );
        let (verdict, buf) = run(&m);
        let Verdict::Pass(len) = verdict else {
            panic!("{verdict:?}")
        };
        let text = String::from_utf8_lossy(&buf[..len]);
        assert!(
            text.contains("\r\nFrom: \"a ; b\" <sip:a@127.0.0.1;x=1>;tag=1\r\n"),
            "{text}"
        );
        let SipMessage::Request(parsed) = SipMessage::try_from(&buf[..len]).unwrap() else {
            panic!("not a request")
        };
        assert_eq!(
            parsed
                .from_header()
                .unwrap()
                .tag()
                .unwrap()
                .map(|t| t.to_string()),
            Some("1".to_string())
        );
    }
}
