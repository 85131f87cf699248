//! re-INVITE and UPDATE in the middle of a call (hold/unhold, codec change,
//! session refresh).
//!
//! Once the call is bridged, a re-offer from one leg is forwarded to the other
//! leg — each leg keeps courtline's own address and session description, only
//! the direction travels — and the far leg's answer decides ours. Before that
//! (during the prompt) courtline answers on its own and the prompt goes on.

use rsipstack::dialog::dialog::TransactionHandle;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Method, Request, StatusCode, StatusCodeKind};
use tracing::{debug, info};

use crate::sdp::{Direction, LocalMedia, RemoteMedia};
use crate::sip::leg::sdp_content_type;

/// The direction a re-offer asks for; `None` when it carries no SDP (then
/// nothing changes).
fn offered_direction(request: &Request) -> Result<Option<Direction>, StatusCode> {
    if request.body.is_empty() {
        return Ok(None);
    }
    RemoteMedia::parse(&request.body)
        .map(|offer| Some(offer.direction))
        .map_err(|_| StatusCode::NotAcceptableHere)
}

/// Readies both legs' descriptions for a forwarded re-offer: the far leg is
/// offered what the near leg offered us; our answer to the near leg mirrors it.
/// Each description that changes gets a new version (RFC 3264 §8).
pub fn prepare(
    request: &Request,
    this_leg: &mut LocalMedia,
    other_leg: &mut LocalMedia,
) -> Result<(), StatusCode> {
    let Some(direction) = offered_direction(request)? else {
        return Ok(());
    };
    set_direction(other_leg, direction);
    set_direction(this_leg, direction.answer());
    Ok(())
}

/// Sends the re-offer to the other leg and answers the near leg with the result.
pub async fn forward(
    request: Request,
    handle: TransactionHandle,
    mut this_leg: LocalMedia,
    other: InviteDialog,
    other_leg: LocalMedia,
) {
    let headers = vec![sdp_content_type()];
    let body = Some(other_leg.render().into_bytes());
    let outcome = match request.method {
        Method::Update => other.update(Some(headers), body).await,
        _ => other.reinvite(Some(headers), body).await,
    };
    match outcome {
        Ok(Some(response)) if response.status_code.kind() == StatusCodeKind::Successful => {
            if let Ok(answer) = RemoteMedia::parse(&response.body) {
                // The far leg's answer is what the near leg gets.
                set_direction(&mut this_leg, answer.direction);
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

/// Answers a re-offer without involving the other leg.
pub async fn answer_locally(request: &Request, handle: TransactionHandle, leg: &mut LocalMedia) {
    match offered_direction(request) {
        Ok(direction) => {
            if let Some(direction) = direction {
                set_direction(leg, direction.answer());
            }
            let _ = handle
                .respond(
                    StatusCode::OK,
                    Some(vec![sdp_content_type()]),
                    Some(leg.render().into_bytes()),
                )
                .await;
        }
        Err(status) => {
            let _ = handle.reply(status).await;
        }
    }
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
    use crate::media::codec::Codec;
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
        prepare(&hold, &mut near, &mut far).unwrap();
        assert_eq!(far.direction, Direction::SendOnly);
        assert_eq!(near.direction, Direction::RecvOnly);
        assert_eq!((near.version, far.version), (2, 2));
        // A refresh with the same direction changes nothing.
        prepare(&hold, &mut near, &mut far).unwrap();
        assert_eq!((near.version, far.version), (2, 2));
        let unhold = reinvite("v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\n");
        prepare(&unhold, &mut near, &mut far).unwrap();
        assert_eq!(
            (near.direction, far.direction),
            (Direction::SendRecv, Direction::SendRecv)
        );
        assert_eq!((near.version, far.version), (3, 3));
    }

    #[test]
    fn no_sdp_changes_nothing_and_bad_sdp_is_488() {
        let (mut near, mut far) = (leg(), leg());
        prepare(&reinvite(""), &mut near, &mut far).unwrap();
        assert_eq!((near.version, far.version), (1, 1));
        assert_eq!(
            prepare(&reinvite("garbage"), &mut near, &mut far),
            Err(StatusCode::NotAcceptableHere)
        );
    }
}
