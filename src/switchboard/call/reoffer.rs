//! re-INVITE and UPDATE in the middle of a call (hold/unhold, codec change,
//! a moved RTP address, session refresh).
//!
//! Once the call is bridged, a re-offer from one leg is forwarded to the other
//! leg — each leg keeps courtline's own address and session description, only
//! the direction travels — and the far leg's answer decides ours. Before that
//! (during the prompt) courtline answers on its own and the prompt goes on.
//! Either way, a leg whose peer now wants RTP at another address or in another
//! law is re-pointed in the media engine: media legs are independent, so the
//! other leg never has to change (the engine transcodes between the laws).

use rsipstack::dialog::dialog::TransactionHandle;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, Method, Request, StatusCode, StatusCodeKind};
use tracing::{debug, info};

use crate::switchboard::media::codec::Codec;
use crate::switchboard::media::session::{MediaCommand, MediaCommands, Repoint, Side};
use crate::switchboard::sdp::{Direction, LocalMedia, RemoteMedia};
use crate::switchboard::sip::leg::sdp_content_type;

/// What a re-offer asks of the leg it came on; `None` when it carries no SDP
/// (then nothing changes).
struct Reoffer {
    /// The direction it asks for.
    direction: Direction,
    /// The law we answer with: the leg's current one if offered, else the
    /// peer's first G.711 law.
    codec: Codec,
    /// The peer's telephone-event payload type: our answer may only list it if offered.
    telephone_event: Option<u8>,
    /// Where the peer now wants RTP; `None` for the old-style hold address
    /// (`c=0.0.0.0`) or a disabled stream (port 0), which keep the old target.
    remote: Option<std::net::SocketAddr>,
}

fn read_reoffer(request: &Request, leg: &LocalMedia) -> Result<Option<Reoffer>, StatusCode> {
    if request.body.is_empty() {
        return Ok(None);
    }
    let offer = RemoteMedia::parse(&request.body).map_err(|_| StatusCode::NotAcceptableHere)?;
    let offered = |codec: &Codec| {
        offer
            .formats
            .iter()
            .any(|(pt, _)| *pt == codec.payload_type())
    };
    let codec = match leg.codecs.iter().find(|c| offered(c)) {
        Some(codec) => *codec,
        // G.711 plays on every line; G.722 only where it was offered before.
        None => {
            offer
                .negotiate(&[Codec::Pcmu, Codec::Pcma])
                .map_err(|_| StatusCode::NotAcceptableHere)?
                .codec
        }
    };
    Ok(Some(Reoffer {
        direction: offer.direction,
        codec,
        telephone_event: offer.telephone_event,
        remote: usable(offer.rtp_addr),
    }))
}

/// An SDP address RTP can be sent to.
fn usable(addr: std::net::SocketAddr) -> Option<std::net::SocketAddr> {
    (!addr.ip().is_unspecified() && addr.port() != 0).then_some(addr)
}

/// Our answer on `leg` to a re-offer, and where `side`'s media must now go.
fn accept(
    reoffer: &Reoffer,
    leg: &mut LocalMedia,
    side: Side,
    direction: Direction,
) -> Option<Repoint> {
    set_direction(leg, direction);
    if leg.codecs != [reoffer.codec] || leg.telephone_event != reoffer.telephone_event {
        leg.codecs = vec![reoffer.codec];
        leg.telephone_event = reoffer.telephone_event;
        leg.version += 1;
    }
    reoffer.remote.map(|remote| Repoint {
        side,
        remote,
        codec: reoffer.codec,
    })
}

/// Readies both legs' descriptions for a forwarded re-offer: the far leg is
/// offered what the near leg offered us; our answer to the near leg mirrors it.
/// Each description that changes gets a new version (RFC 3264 §8). Returns the
/// near leg's new media target, if it has one.
pub fn prepare(
    request: &Request,
    this_leg: &mut LocalMedia,
    this_side: Side,
    other_leg: &mut LocalMedia,
) -> Result<Option<Repoint>, StatusCode> {
    let Some(reoffer) = read_reoffer(request, this_leg)? else {
        return Ok(None);
    };
    set_direction(other_leg, reoffer.direction);
    Ok(accept(
        &reoffer,
        this_leg,
        this_side,
        reoffer.direction.answer(),
    ))
}

/// The leg a re-offer is forwarded to: its dialog, our description on it, and
/// where its media lives (its answer may move it too).
pub struct FarLeg {
    /// The far leg's dialog.
    pub dialog: InviteDialog,
    /// Our description on the far leg, already prepared.
    pub sdp: LocalMedia,
    /// Which leg it is.
    pub side: Side,
    /// The call's media, to re-point the far leg after its answer.
    pub media: Option<MediaCommands>,
}

/// Sends the re-offer to the other leg and answers the near leg with the result.
pub async fn forward(
    request: Request,
    handle: TransactionHandle,
    mut this_leg: LocalMedia,
    far: FarLeg,
) {
    let headers = vec![sdp_content_type()];
    let body = Some(far.sdp.render().into_bytes());
    let outcome = match request.method {
        Method::Update => far.dialog.update(Some(headers), body).await,
        _ => far.dialog.reinvite(Some(headers), body).await,
    };
    match outcome {
        Ok(Some(response)) if response.status_code.kind() == StatusCodeKind::Successful => {
            if let Ok(answer) = RemoteMedia::parse(&response.body) {
                // The far leg's answer is what the near leg gets.
                set_direction(&mut this_leg, answer.direction);
                let target = usable(answer.rtp_addr).zip(answer.negotiate(&far.sdp.codecs).ok());
                if let (Some((remote, agreed)), Some(media)) = (target, &far.media) {
                    let _ = media.send(MediaCommand::Repoint(Repoint {
                        side: far.side,
                        remote,
                        codec: agreed.codec,
                    }));
                }
            }
            info!(method = %request.method, direction = this_leg.direction.attribute(), "re-offer forwarded");
            let _ = handle
                .respond(
                    StatusCode::OK,
                    Some(vec![sdp_content_type()]),
                    Some(this_leg.render().into_bytes()),
                )
                .await;
        }
        Ok(Some(response)) => {
            debug!(status = %response.status_code, "far leg refused the re-offer");
            let _ = handle.reply(response.status_code).await;
        }
        Ok(None) | Err(_) => {
            let _ = handle.reply(StatusCode::ServerInternalError).await;
        }
    }
}

/// Answers a re-offer without involving the other leg; returns where `side`'s
/// media must now go, if it moved.
pub fn answer_locally(
    request: &Request,
    handle: TransactionHandle,
    leg: &mut LocalMedia,
    side: Side,
) -> Option<Repoint> {
    let reoffer = match read_reoffer(request, leg) {
        Ok(reoffer) => reoffer,
        Err(status) => {
            send_answer(handle, status, None, None);
            return None;
        }
    };
    let target = reoffer
        .as_ref()
        .and_then(|r| accept(r, leg, side, r.direction.answer()));
    send_answer(
        handle,
        StatusCode::OK,
        Some(vec![sdp_content_type()]),
        Some(leg.render().into_bytes()),
    );
    target
}

/// Sends the answer to an in-dialog request from a task of its own. The call
/// task never awaits one: an await inside its loop kept the request and the
/// loop's last event in the task's future for every call's whole life (~1 KiB
/// a call, #16).
pub fn send_answer(
    handle: TransactionHandle,
    status: StatusCode,
    headers: Option<Vec<Header>>,
    body: Option<Vec<u8>>,
) {
    tokio::spawn(async move {
        let code = status.code();
        if let Err(e) = handle.respond(status, headers, body).await {
            debug!(status = code, error = %e, "the request's transaction was gone before its answer");
        }
    });
}

fn set_direction(leg: &mut LocalMedia, direction: Direction) {
    if leg.direction != direction {
        leg.direction = direction;
        leg.version += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::sip::SipMessage;

    fn reinvite(body: &str) -> Request {
        let text = format!(
            "INVITE sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-r\r\nFrom: <sip:b@h>;tag=1\r\nTo: <sip:a@h>;tag=2\r\nCall-ID: r@h\r\nCSeq: 2 INVITE\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match SipMessage::try_from(text.as_str()).unwrap() {
            SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    }

    fn leg() -> LocalMedia {
        LocalMedia {
            rtp_addr: "127.0.0.1:20000".parse().unwrap(),
            codecs: vec![Codec::Pcmu],
            telephone_event: None,
            session_id: 7,
            version: 1,
            direction: Direction::SendRecv,
        }
    }

    #[test]
    fn hold_is_mirrored_and_versions_bump() {
        let (mut near, mut far) = (leg(), leg());
        let hold =
            reinvite("v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n");
        let target = prepare(&hold, &mut near, Side::Caller, &mut far).unwrap();
        assert_eq!(
            target,
            Some(Repoint {
                side: Side::Caller,
                remote: "192.0.2.1:4000".parse().unwrap(),
                codec: Codec::Pcmu
            })
        );
        assert_eq!(far.direction, Direction::SendOnly);
        assert_eq!(near.direction, Direction::RecvOnly);
        assert_eq!((near.version, far.version), (2, 2));
        // A refresh with the same direction changes nothing.
        prepare(&hold, &mut near, Side::Caller, &mut far).unwrap();
        assert_eq!((near.version, far.version), (2, 2));
        let unhold = reinvite("v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\n");
        prepare(&unhold, &mut near, Side::Caller, &mut far).unwrap();
        assert_eq!(
            (near.direction, far.direction),
            (Direction::SendRecv, Direction::SendRecv)
        );
        assert_eq!((near.version, far.version), (3, 3));
    }

    #[test]
    fn a_moved_address_and_a_new_law_retarget_the_leg() {
        let (mut near, mut far) = (leg(), leg());
        // Both laws offered: the current one stays.
        let moved = reinvite("v=0\r\nc=IN IP4 192.0.2.9\r\nm=audio 5000 RTP/AVP 8 0\r\n");
        let target = prepare(&moved, &mut near, Side::Operator, &mut far).unwrap();
        assert_eq!(
            target.map(|t| (t.side, t.remote.to_string(), t.codec)),
            Some((Side::Operator, "192.0.2.9:5000".into(), Codec::Pcmu))
        );
        assert_eq!(near.version, 1);
        // Only A-law offered: the answer switches law, with a new version.
        let alaw = reinvite("v=0\r\nc=IN IP4 192.0.2.9\r\nm=audio 5000 RTP/AVP 8\r\n");
        let target = prepare(&alaw, &mut near, Side::Operator, &mut far).unwrap();
        assert_eq!(target.map(|t| t.codec), Some(Codec::Pcma));
        assert_eq!(
            (near.codecs.as_slice(), near.version),
            ([Codec::Pcma].as_slice(), 2)
        );
        // An old-style hold (c=0.0.0.0) keeps the old target.
        let hold = reinvite("v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 5000 RTP/AVP 8\r\n");
        assert_eq!(
            prepare(&hold, &mut near, Side::Operator, &mut far).unwrap(),
            None
        );
        // No G.711 law at all: 488.
        let g729 = reinvite("v=0\r\nc=IN IP4 192.0.2.9\r\nm=audio 5000 RTP/AVP 18\r\n");
        assert_eq!(
            prepare(&g729, &mut near, Side::Operator, &mut far),
            Err(StatusCode::NotAcceptableHere)
        );
    }

    #[test]
    fn no_sdp_changes_nothing_and_bad_sdp_is_488() {
        let (mut near, mut far) = (leg(), leg());
        prepare(&reinvite(""), &mut near, Side::Caller, &mut far).unwrap();
        assert_eq!((near.version, far.version), (1, 1));
        assert_eq!(
            prepare(&reinvite("garbage"), &mut near, Side::Caller, &mut far),
            Err(StatusCode::NotAcceptableHere)
        );
    }
}
