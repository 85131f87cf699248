//! SDP offer/answer (RFC 3264) for one audio stream: G.711 μ-law/A-law and
//! G.722, plus RFC 4733 telephone-event.
//!
//! Only what a switchboard needs is modelled: the remote media address, the
//! payload types in the peer's preference order, and the answer or offer we send.

use std::net::{IpAddr, SocketAddr};

use crate::switchboard::media::codec::Codec;

/// Why an SDP body could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    /// Not SDP we can read (bad line, missing `m=`/`c=`, bad numbers).
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// Readable, but offers no codec we speak (maps to 488).
    #[error("no common codec: the offer has {offered}, courtline speaks {speaks}")]
    NoCommonCodec {
        /// What the peer offered, for the log.
        offered: String,
        /// What we could have taken on this call, for the log.
        speaks: String,
    },
}

/// The audio part of a peer's session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMedia {
    /// Where the peer wants RTP sent.
    pub rtp_addr: SocketAddr,
    /// Payload types in the peer's preference order, with their encoding names.
    pub formats: Vec<(u8, String)>,
    /// Payload type the peer uses for RFC 4733 telephone-event, if offered.
    pub telephone_event: Option<u8>,
    /// The stream's direction (media-level attribute, else session-level, else sendrecv).
    pub direction: Direction,
}

/// Media direction (RFC 3264 §5.1): how hold and unhold are signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Both ways (the default when no attribute is present).
    #[default]
    SendRecv,
    /// The describing side only sends (it put the other on hold).
    SendOnly,
    /// The describing side only receives.
    RecvOnly,
    /// Neither way.
    Inactive,
}

impl Direction {
    /// The SDP attribute name.
    pub fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an answer takes to an offer with this direction.
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }

    fn parse(attribute: &str) -> Option<Direction> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| d.attribute() == attribute)
    }
}

/// What was agreed for one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The codec used in both directions.
    pub codec: Codec,
    /// telephone-event payload type both sides agreed on.
    pub telephone_event: Option<u8>,
}

/// Payload type courtline offers for telephone-event on its own offers.
pub const OFFERED_TELEPHONE_EVENT: u8 = 101;

impl RemoteMedia {
    /// Parses the first audio stream of an SDP body.
    pub fn parse(body: &[u8]) -> Result<RemoteMedia, SdpError> {
        let text = std::str::from_utf8(body)
            .map_err(|_| SdpError::Malformed("body is not UTF-8 text".into()))?;
        let mut session_addr: Option<IpAddr> = None;
        let mut media_addr: Option<IpAddr> = None;
        let mut audio: Option<(u16, Vec<u8>)> = None;
        let mut rtpmaps: Vec<(u8, String)> = Vec::new();
        let mut session_direction = None;
        let mut media_direction = None;
        // Lines after a non-audio m= belong to that stream and are skipped.
        let mut section = Section::Session;
        for raw in text.lines() {
            let line = raw.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            let (kind, value) = line
                .split_once('=')
                .filter(|(k, _)| k.len() == 1)
                .ok_or_else(|| {
                    SdpError::Malformed(format!("line \"{line}\" is not <type>=<value>"))
                })?;
            match kind {
                "m" => {
                    section = if audio.is_none() && value.starts_with("audio ") {
                        audio = Some(parse_media_line(value)?);
                        Section::Audio
                    } else {
                        Section::Other
                    };
                }
                "c" => {
                    let addr = parse_connection(value)?;
                    match section {
                        Section::Session => session_addr = Some(addr),
                        Section::Audio => media_addr = Some(addr),
                        Section::Other => {}
                    }
                }
                "a" if section == Section::Audio => {
                    if let Some(map) = value.strip_prefix("rtpmap:") {
                        rtpmaps.push(parse_rtpmap(map)?);
                    } else if let Some(d) = Direction::parse(value) {
                        media_direction = Some(d);
                    }
                }
                "a" if section == Section::Session => {
                    if let Some(d) = Direction::parse(value) {
                        session_direction = Some(d);
                    }
                }
                _ => {}
            }
        }
        let (port, pts) = audio.ok_or_else(|| SdpError::Malformed("no m=audio stream".into()))?;
        let ip = media_addr
            .or(session_addr)
            .ok_or_else(|| SdpError::Malformed("no c= connection address".into()))?;
        let formats: Vec<(u8, String)> = pts
            .iter()
            .map(|&pt| {
                let name = rtpmaps
                    .iter()
                    .find(|(p, _)| *p == pt)
                    .map(|(_, n)| n.clone())
                    .or_else(|| static_encoding(pt).map(str::to_string))
                    .unwrap_or_default();
                (pt, name)
            })
            .collect();
        let telephone_event = formats
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case("telephone-event/8000"))
            .map(|(pt, _)| *pt);
        Ok(RemoteMedia {
            rtp_addr: SocketAddr::new(ip, port),
            formats,
            telephone_event,
            direction: media_direction.or(session_direction).unwrap_or_default(),
        })
    }

    /// Picks the first of `speaks` in the peer's preference order (RFC 3264
    /// §6.1): the order of `speaks` does not matter, the peer's does.
    pub fn negotiate(&self, speaks: &[Codec]) -> Result<Negotiated, SdpError> {
        let codec = self.formats.iter().find_map(|(pt, name)| {
            let mut parts = name.split('/');
            let (by_name, clock) = (parts.next().unwrap_or(""), parts.next());
            speaks.iter().copied().find(|c| {
                // Every codec here runs an 8000 Hz RTP clock (G.722 too, RFC 3551).
                (by_name.eq_ignore_ascii_case(c.encoding_name()) && clock == Some("8000"))
                    || (name.is_empty() && *pt == c.payload_type())
            })
        });
        match codec {
            Some(codec) => Ok(Negotiated {
                codec,
                telephone_event: self.telephone_event,
            }),
            None => Err(SdpError::NoCommonCodec {
                offered: self
                    .formats
                    .iter()
                    .map(|(pt, n)| {
                        if n.is_empty() {
                            pt.to_string()
                        } else {
                            n.clone()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                speaks: speaks
                    .iter()
                    .map(|c| c.encoding_name())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

#[derive(PartialEq, Eq)]
enum Section {
    Session,
    Audio,
    Other,
}

fn parse_media_line(value: &str) -> Result<(u16, Vec<u8>), SdpError> {
    let mut parts = value.split_whitespace();
    let _media = parts.next();
    let port: u16 = parts
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| SdpError::Malformed(format!("bad port in m={value}")))?;
    let proto = parts.next().unwrap_or("");
    if !proto.starts_with("RTP/") {
        return Err(SdpError::Malformed(format!(
            "unsupported transport {proto} in m={value}"
        )));
    }
    let pts = parts
        .map(|p| p.parse::<u8>().ok().filter(|pt| *pt < 128))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| SdpError::Malformed(format!("bad payload type in m={value}")))?;
    if port == 0 {
        return Err(SdpError::NoCommonCodec {
            offered: "a disabled audio stream (port 0)".into(),
            speaks: "G722, PCMU, PCMA on an enabled stream".into(),
        });
    }
    Ok((port, pts))
}

fn parse_connection(value: &str) -> Result<IpAddr, SdpError> {
    let mut parts = value.split_whitespace();
    let (net, _kind, addr) = (parts.next(), parts.next(), parts.next());
    if net != Some("IN") {
        return Err(SdpError::Malformed(format!(
            "c={value} is not an IN address"
        )));
    }
    addr.and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| SdpError::Malformed(format!("c={value} has no IP address")))
}

fn parse_rtpmap(map: &str) -> Result<(u8, String), SdpError> {
    let (pt, name) = map
        .split_once(' ')
        .ok_or_else(|| SdpError::Malformed(format!("a=rtpmap:{map} has no encoding")))?;
    let pt = pt
        .parse()
        .map_err(|_| SdpError::Malformed(format!("a=rtpmap:{map} has a bad payload type")))?;
    Ok((pt, name.trim().to_string()))
}

fn static_encoding(pt: u8) -> Option<&'static str> {
    match pt {
        0 => Some("PCMU/8000"),
        8 => Some("PCMA/8000"),
        9 => Some("G722/8000"),
        18 => Some("G729/8000"),
        _ => None,
    }
}

/// The codecs courtline can use with a caller whose line's prompts exist in
/// G.722 (`wideband`) or only in G.711, in the order it offers them itself
/// (delayed offer): wideband first when it can be played.
pub fn codecs_for(wideband: bool) -> &'static [Codec] {
    if wideband {
        &[Codec::G722, Codec::Pcmu, Codec::Pcma]
    } else {
        &[Codec::Pcmu, Codec::Pcma]
    }
}

/// Our side of a session description: what we send in an answer or an offer.
#[derive(Debug, Clone)]
pub struct LocalMedia {
    /// Address and port the peer should send RTP to.
    pub rtp_addr: SocketAddr,
    /// Codecs in our preference order (an answer carries exactly one).
    pub codecs: Vec<Codec>,
    /// telephone-event payload type to announce, if any.
    pub telephone_event: Option<u8>,
    /// `o=` session id, stable for the life of the call.
    pub session_id: u64,
    /// `o=` version: +1 for every new description of the same session (RFC 3264 §8).
    pub version: u64,
    /// Direction to announce (hold/unhold).
    pub direction: Direction,
}

impl LocalMedia {
    /// Renders the session description.
    pub fn render(&self) -> String {
        let ip = self.rtp_addr.ip();
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let mut pts: Vec<String> = self
            .codecs
            .iter()
            .map(|c| c.payload_type().to_string())
            .collect();
        if let Some(te) = self.telephone_event {
            pts.push(te.to_string());
        }
        let mut sdp = format!(
            "v=0\r\no=courtline {id} {version} IN {family} {ip}\r\ns=courtline\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {pts}\r\n",
            id = self.session_id,
            version = self.version,
            port = self.rtp_addr.port(),
            pts = pts.join(" "),
        );
        for codec in &self.codecs {
            sdp.push_str(&format!(
                "a=rtpmap:{} {}/8000\r\n",
                codec.payload_type(),
                codec.encoding_name()
            ));
        }
        if let Some(te) = self.telephone_event {
            sdp.push_str(&format!(
                "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n"
            ));
        }
        sdp.push_str(&format!(
            "a=ptime:20\r\na={}\r\n",
            self.direction.attribute()
        ));
        sdp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a line with narrowband prompts speaks.
    const G711: &[Codec] = &[Codec::Pcmu, Codec::Pcma];

    const SIPP_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

    #[test]
    fn parses_sipp_offer() {
        let media = RemoteMedia::parse(SIPP_OFFER.as_bytes()).unwrap();
        assert_eq!(media.rtp_addr, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(media.negotiate(G711).unwrap().codec, Codec::Pcmu);
        assert_eq!(media.telephone_event, None);
    }

    #[test]
    fn honours_callers_preference_order() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18 8 0 101\r\na=rtpmap:18 G729/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n";
        let n = RemoteMedia::parse(offer.as_bytes())
            .unwrap()
            .negotiate(G711)
            .unwrap();
        assert_eq!(n.codec, Codec::Pcma);
        assert_eq!(n.telephone_event, Some(101));
    }

    #[test]
    fn g722_is_chosen_in_the_callers_order_only_when_the_line_has_wideband_prompts() {
        let offer = |pts: &str| {
            let mut sdp = format!("v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 5004 RTP/AVP {pts}\r\n");
            for pt in pts.split(' ') {
                let name = match pt {
                    "0" => "PCMU/8000",
                    "8" => "PCMA/8000",
                    "9" => "G722/8000",
                    _ => "telephone-event/8000",
                };
                sdp.push_str(&format!("a=rtpmap:{pt} {name}\r\n"));
            }
            RemoteMedia::parse(sdp.as_bytes()).unwrap()
        };
        let wideband = codecs_for(true);
        let pick = |pts: &str, speaks: &[Codec]| offer(pts).negotiate(speaks).map(|n| n.codec);
        assert_eq!(pick("9 8 0 101", wideband), Ok(Codec::G722));
        assert_eq!(pick("8 9 0", wideband), Ok(Codec::Pcma));
        assert_eq!(pick("0 8 9", wideband), Ok(Codec::Pcmu));
        assert_eq!(pick("9 0", codecs_for(false)), Ok(Codec::Pcmu));
        assert!(matches!(
            pick("9 101", codecs_for(false)),
            Err(SdpError::NoCommonCodec { .. })
        ));
        // Static payload type 9 without an rtpmap is G.722 too.
        let bare = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 5004 RTP/AVP 9 0\r\n";
        let media = RemoteMedia::parse(bare.as_bytes()).unwrap();
        assert_eq!(media.negotiate(wideband).map(|n| n.codec), Ok(Codec::G722));
        // G.722's RTP clock is 8000 Hz (RFC 3551); a peer announcing 16000 would
        // misread our timestamps, so that entry is not taken.
        let wrong_clock =
            "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 5004 RTP/AVP 96 8\r\na=rtpmap:96 G722/16000\r\n";
        let media = RemoteMedia::parse(wrong_clock.as_bytes()).unwrap();
        assert_eq!(media.negotiate(wideband).map(|n| n.codec), Ok(Codec::Pcma));
        assert_eq!(
            codecs_for(true)[0],
            Codec::G722,
            "our own offer puts wideband first"
        );
    }

    #[test]
    fn rendered_g722_offer_names_its_8000_hz_clock() {
        let local = LocalMedia {
            rtp_addr: "127.0.0.1:20002".parse().unwrap(),
            codecs: codecs_for(true).to_vec(),
            telephone_event: Some(101),
            session_id: 1,
            version: 1,
            direction: Direction::SendRecv,
        };
        let text = local.render();
        assert!(
            text.contains("m=audio 20002 RTP/AVP 9 0 8 101\r\n"),
            "{text}"
        );
        assert!(text.contains("a=rtpmap:9 G722/8000\r\n"), "{text}");
        let back = RemoteMedia::parse(text.as_bytes()).unwrap();
        assert_eq!(back.negotiate(codecs_for(true)).unwrap().codec, Codec::G722);
    }

    #[test]
    fn static_payload_types_without_rtpmap() {
        let offer = "v=0\nc=IN IP4 192.0.2.1\nm=audio 5004 RTP/AVP 8\n";
        let n = RemoteMedia::parse(offer.as_bytes())
            .unwrap()
            .negotiate(G711)
            .unwrap();
        assert_eq!(n.codec, Codec::Pcma);
    }

    #[test]
    fn media_level_connection_wins_and_other_streams_ignored() {
        let offer = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=video 5006 RTP/AVP 96\r\nc=IN IP4 192.0.2.9\r\nm=audio 5004 RTP/AVP 0\r\nc=IN IP4 192.0.2.2\r\n";
        let media = RemoteMedia::parse(offer.as_bytes()).unwrap();
        assert_eq!(media.rtp_addr, "192.0.2.2:5004".parse().unwrap());
    }

    #[test]
    fn direction_media_level_wins_and_answers_reverse() {
        let hold =
            "v=0\r\nc=IN IP4 192.0.2.1\r\na=sendrecv\r\nm=audio 5004 RTP/AVP 0\r\na=sendonly\r\n";
        let media = RemoteMedia::parse(hold.as_bytes()).unwrap();
        assert_eq!(media.direction, Direction::SendOnly);
        assert_eq!(media.direction.answer(), Direction::RecvOnly);
        let session_level = "v=0\r\nc=IN IP4 192.0.2.1\r\na=inactive\r\nm=audio 5004 RTP/AVP 0\r\n";
        assert_eq!(
            RemoteMedia::parse(session_level.as_bytes())
                .unwrap()
                .direction,
            Direction::Inactive
        );
        assert_eq!(
            RemoteMedia::parse(SIPP_OFFER.as_bytes()).unwrap().direction,
            Direction::SendRecv
        );
    }

    #[test]
    fn no_common_codec() {
        let offer =
            "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 5004 RTP/AVP 18 9\r\na=rtpmap:18 G729/8000\r\n";
        let err = RemoteMedia::parse(offer.as_bytes())
            .unwrap()
            .negotiate(G711)
            .unwrap_err();
        assert_eq!(
            err,
            SdpError::NoCommonCodec {
                offered: "G729/8000, G722/8000".into(),
                speaks: "PCMU, PCMA".into()
            }
        );
        let disabled = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 0 RTP/AVP 0\r\n";
        assert!(matches!(
            RemoteMedia::parse(disabled.as_bytes()),
            Err(SdpError::NoCommonCodec { .. })
        ));
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for body in [
            "",
            "hello",
            "v=0\r\nm=audio 5004 RTP/AVP 0\r\n",
            "v=0\r\nc=IN IP4 nowhere\r\nm=audio 5004 RTP/AVP 0\r\n",
            "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 99999 RTP/AVP 0\r\n",
            "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5004 RTP/AVP 300\r\n",
            "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5004 TCP 0\r\n",
            "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5004 RTP/AVP 0\r\na=rtpmap:x PCMU/8000\r\n",
        ] {
            assert!(
                matches!(
                    RemoteMedia::parse(body.as_bytes()),
                    Err(SdpError::Malformed(_))
                ),
                "{body:?}"
            );
        }
        assert!(RemoteMedia::parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn rendered_answer_parses_back() {
        let local = LocalMedia {
            rtp_addr: "127.0.0.1:20002".parse().unwrap(),
            codecs: vec![Codec::Pcma],
            telephone_event: Some(101),
            session_id: 42,
            version: 3,
            direction: Direction::RecvOnly,
        };
        let text = local.render();
        assert!(text.contains("m=audio 20002 RTP/AVP 8 101\r\n"), "{text}");
        assert!(
            text.contains("o=courtline 42 3 IN IP4 127.0.0.1\r\n"),
            "{text}"
        );
        let back = RemoteMedia::parse(text.as_bytes()).unwrap();
        assert_eq!(back.rtp_addr, local.rtp_addr);
        assert_eq!(back.direction, Direction::RecvOnly);
        assert_eq!(
            back.negotiate(G711).unwrap(),
            Negotiated {
                codec: Codec::Pcma,
                telephone_event: Some(101)
            }
        );
    }
}
