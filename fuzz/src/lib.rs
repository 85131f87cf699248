//! What one fuzz input exercises, for each target. The `fuzz_targets/` call
//! these under libFuzzer; `tests/fuzz_smoke.rs` in courtline runs the same
//! functions over the seed corpus in a normal `cargo test`, so CI needs no
//! nightly toolchain. Each function panics only on a courtline bug.

use courtline::switchboard::media::codec::{Codec, Transcoder};
use courtline::switchboard::media::dtmf::{DtmfDetector, TelephoneEvent};
use courtline::switchboard::media::stream::{OutboundStream, MAX_PACKET};
use courtline::switchboard::sdp::RemoteMedia;
use courtline::switchboard::sip::guard::{inspect, Verdict};
use courtline::switchboard::sip::leg::{caller_identity, dialled_number, has_to_tag};
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::SipMessage;
use rtp_rs::RtpReader;

/// Largest SIP datagram courtline reads (the UDP receive buffer).
const SIP_DATAGRAM: usize = 65535;

/// Room the guard keeps after a datagram to add a Content-Length header.
const GUARD_ROOM: usize = 64;

/// One UDP datagram down courtline's SIP path: the guard, then (if it lets the
/// datagram through) rsipstack's parser, then the header extraction courtline
/// does on a new INVITE. A datagram the guard passes must parse, and a
/// response the guard writes must itself be a well-formed SIP response.
pub fn sip_message(data: &[u8]) {
    let len = data.len().min(SIP_DATAGRAM - GUARD_ROOM);
    let mut buf = vec![0u8; SIP_DATAGRAM];
    buf[..len].copy_from_slice(&data[..len]);
    match inspect(&mut buf, len) {
        Verdict::Pass(passed) => {
            if buf[..passed].iter().all(u8::is_ascii_whitespace) {
                return;
            }
            let message = SipMessage::try_from(&buf[..passed])
                .expect("the guard passed a datagram the stack cannot parse");
            read_like_courtline(&message);
        }
        Verdict::Reject(response) => {
            let parsed = SipMessage::try_from(response.as_slice())
                .expect("the guard wrote a response the stack cannot parse");
            assert!(
                matches!(parsed, SipMessage::Response(_)),
                "the guard answered with a request"
            );
        }
        Verdict::Drop(_) => {}
    }
}

/// What courtline reads from a message the stack hands it.
fn read_like_courtline(message: &SipMessage) {
    let _ = message.via_header().map(|via| via.typed());
    let _ = message.cseq_header().map(|cseq| cseq.typed());
    let _ = message.call_id_header();
    if let SipMessage::Request(request) = message {
        let _ = caller_identity(request);
        let _ = dialled_number(request);
        let _ = has_to_tag(request);
        let _ = request.contact_header().map(|contact| contact.typed());
        if !request.body.is_empty() {
            sdp(&request.body);
        }
    }
}

/// One SDP body: parsed as a remote offer or answer and negotiated.
pub fn sdp(data: &[u8]) {
    let Ok(remote) = RemoteMedia::parse(data) else {
        return;
    };
    if let Ok(negotiated) = remote.negotiate(courtline::switchboard::sdp::codecs_for(true)) {
        assert!(
            remote
                .formats
                .iter()
                .any(|(pt, name)| *pt == negotiated.codec.payload_type()
                    || name
                        .to_ascii_uppercase()
                        .starts_with(negotiated.codec.encoding_name())),
            "negotiated a codec the peer did not offer"
        );
    }
}

/// One RTP datagram from a caller, handled the way the media task handles it:
/// RFC 4733 key detection on the telephone-event payload type, otherwise
/// transcoding and relaying onto the operator's stream. The first input byte
/// picks the caller's codec and telephone-event payload type.
pub fn rtp(data: &[u8]) {
    let Some((&choice, packet)) = data.split_first() else {
        return;
    };
    let packet = &packet[..packet.len().min(MAX_PACKET)];
    let codecs = [Codec::Pcmu, Codec::Pcma, Codec::G722];
    let caller_codec = codecs[usize::from(choice & 3) % 3];
    let operator_codec = codecs[usize::from((choice >> 2) & 3) % 3];
    let telephone_event = 96 + (choice >> 4) % 16;
    let Ok(rtp) = RtpReader::new(packet) else {
        return;
    };
    let pt = rtp.payload_type();
    if pt == telephone_event {
        let mut detector = DtmfDetector::default();
        let first = detector.on_packet(rtp.timestamp(), rtp.payload());
        if let Some(event) = TelephoneEvent::parse(rtp.payload()) {
            assert_eq!(
                first,
                event.digit(),
                "first packet of an event not reported"
            );
            let mut written = [0u8; 4];
            event.write(&mut written);
            assert_eq!(
                TelephoneEvent::parse(&written).map(|e| e.event),
                Some(event.event)
            );
        }
        assert_eq!(
            detector.on_packet(rtp.timestamp(), rtp.payload()),
            None,
            "a repeated packet of the same event was reported twice"
        );
        return;
    }
    if Codec::from_payload_type(pt) != Some(caller_codec) {
        return;
    }
    let mut converted = [0u8; 1500];
    let payload = Transcoder::new(caller_codec, operator_codec)
        .convert(rtp.payload(), &mut converted)
        .to_vec();
    let mut stream = OutboundStream::new();
    let header = stream.relayed_header(operator_codec.payload_type(), &rtp, 7, payload.len());
    let out = [&header[..], &payload].concat();
    let relayed = RtpReader::new(&out).expect("relayed an unparseable RTP packet");
    assert_eq!(relayed.payload(), payload.as_slice());
    assert_eq!(relayed.payload_type(), operator_codec.payload_type());
    assert_eq!(relayed.ssrc(), stream.ssrc());
}
