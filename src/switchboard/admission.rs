//! Whether a new INVITE becomes a call: every admission decision, sans-IO.
//!
//! [`Admission::decide`] reads the INVITE and plain values (settings, loaded
//! playlists, the inbound authenticator, spool health, whether a `max_calls`
//! slot was free) and says what to do: admit with the call's setup, challenge
//! (401), or refuse with a status, headers and the facts to record. It sends,
//! records, binds and reads no clock; the endpoint's `admit` does that.
//!
//! Decided earlier, not here: the shield's ACL, rate limits and bans
//! (`sip::shield`, at the socket) and the stateless refusals of malformed or
//! unsupported requests, 400/416/420/501/505 (`sip::guard`).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Request, StatusCode};

use super::call::CallFacts;
use super::context::CallSlot;
use super::media::codec::Codec;
use super::media::prompt::Playlist;
use super::sdp::{codecs_for, Negotiated, RemoteMedia, SdpError};
use super::sip::inbound_auth::{InboundAuth, Verdict};
use super::sip::leg::{caller_identity, content_refusal, dialled_number, header};
use super::sip::qualify::OperatorHealth;
use super::sip::session_timer::{self, Negotiation, SessionTimer};
use crate::config::{AnswerMode, Config, SpoolFailurePolicy};
use crate::contract::pb::PlayedPrompt;

/// The INVITE as admission sees it. Its headers are read by the `sip::leg` and
/// `sip::session_timer` helpers that already parse them, not copied out first.
#[derive(Debug, Clone, Copy)]
pub struct InviteFacts<'a> {
    /// The request as the stack parsed it.
    pub request: &'a Request,
    /// Where it came from; `None` when the transport did not say (then nobody
    /// can be challenged, so the INVITE is not authenticated).
    pub source: Option<SocketAddr>,
    /// courtline's id for the call, made by the adapter (a UUIDv7 needs the
    /// clock and randomness).
    pub call_id: &'a str,
}

/// When the INVITE arrived, on both clocks, read once by the adapter.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Wall clock: nonce expiry and the record's `received_at_ms`.
    pub wall: SystemTime,
    /// Monotonic clock: the session timer starts here.
    pub monotonic: Instant,
}

/// What admission consults besides the INVITE, borrowed from the switchboard.
pub struct Admission<'a> {
    /// Lines, `[sip]` limits and timers, `[records] on_spool_failure`.
    pub config: &'a Config,
    /// Each line's playlist by line number: the prompt facts and whether G.722 can be played.
    pub playlists: &'a HashMap<String, Arc<Playlist>>,
    /// Digest authentication of untrusted callers, when configured.
    pub inbound_auth: Option<&'a InboundAuth>,
    /// Which operator targets answer OPTIONS, for the hunt list.
    pub health: &'a OperatorHealth,
    /// Whether the records spool can be written right now.
    pub spool_healthy: bool,
}

/// What to do with the INVITE.
#[derive(Debug)]
pub enum Decision {
    /// Start the call with this setup.
    Admit(Box<Admitted>),
    /// Answer 401 with this `WWW-Authenticate` value. Part of the handshake,
    /// not a refusal: nothing is recorded.
    Challenge(String),
    /// Answer with the refusal's status and headers, and record it.
    Refuse(Refusal),
}

/// A call admission agreed to; the adapter adds the RTP socket and local address.
#[derive(Debug)]
pub struct Admitted {
    /// Static facts for the record.
    pub facts: CallFacts,
    /// The line's prompts.
    pub playlist: Arc<Playlist>,
    /// The caller's SDP offer and what was agreed, or `None` for a delayed offer.
    pub offer: Option<(RemoteMedia, Negotiated)>,
    /// The RFC 4028 session timer and the headers announcing it in the 200 OK.
    pub session_timer: Option<(SessionTimer, Vec<Header>)>,
    /// This call's share of `max_calls`, handed on to the call task.
    pub slot: CallSlot,
    /// The digest account the caller proved, for the log.
    pub authenticated_as: Option<String>,
    /// The line plays early media but the INVITE had no SDP, so the caller is
    /// answered first (a 183 without an offer to answer needs PRACK); for the log.
    pub answered_without_early_media: bool,
}

/// An INVITE refused before a call existed.
#[derive(Debug)]
pub struct Refusal {
    /// Why, for the log.
    pub reason: Refused,
    /// The final response's status.
    pub status: StatusCode,
    /// Headers the response carries (Retry-After, Min-SE, Accept, Warning).
    pub headers: Vec<Header>,
    /// What is known of the call, for `CallFlow::rejected`.
    pub facts: CallFacts,
}

/// Why an INVITE was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Credentials on our fresh nonce that do not hold (403).
    Authentication(&'static str),
    /// The records spool cannot be written and `on_spool_failure = "reject"` (503).
    SpoolUnwritable,
    /// `max_calls` calls are up (503).
    Full,
    /// The dialled number is no line of ours (404).
    NoSuchLine,
    /// The line's prompts are not loaded; start-up checks make this impossible (500).
    PromptsNotLoaded,
    /// A body that is not SDP (415) or an `Accept` without SDP (406).
    Content,
    /// The SDP offer cannot be read (400).
    MalformedSdp(String),
    /// The SDP offer has no codec the line can play (488).
    NoCommonCodec(String),
    /// Session-Expires below our Min-SE (422).
    SessionIntervalTooSmall,
    /// No RTP port could be bound (503); found by the adapter, not by `decide`.
    NoRtpPort(String),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Authentication(problem) => {
                write!(f, "caller failed authentication: {problem}")
            }
            Refused::SpoolUnwritable => f.write_str(
                "records spool cannot be written ([records] on_spool_failure = \"reject\")",
            ),
            Refused::Full => f.write_str("switchboard full"),
            Refused::NoSuchLine => f.write_str("no such line"),
            Refused::PromptsNotLoaded => f.write_str("line's prompts are not loaded"),
            Refused::Content => f.write_str("INVITE content courtline cannot take"),
            Refused::MalformedSdp(problem) => write!(f, "bad SDP: {problem}"),
            Refused::NoCommonCodec(problem) => f.write_str(problem),
            Refused::SessionIntervalTooSmall => f.write_str("Session-Expires too small"),
            Refused::NoRtpPort(problem) => write!(f, "no RTP port: {problem}"),
        }
    }
}

impl Refusal {
    /// A 503 with Retry-After, so the trunk tries again later or elsewhere.
    pub fn unavailable(reason: Refused, facts: CallFacts, config: &Config) -> Refusal {
        Refusal {
            reason,
            status: StatusCode::ServiceUnavailable,
            headers: vec![header("Retry-After", config.sip.retry_after_s.to_string())],
            facts,
        }
    }
}

impl Admission<'_> {
    /// Decides on `invite`. `slot` is the `max_calls` slot the adapter tried to
    /// take before deciding: taking it is an atomic step on shared state, so it
    /// stays there, and a flood cannot overshoot `max_calls` between a check
    /// here and the take. `None` means the switchboard is full.
    pub fn decide(&self, invite: &InviteFacts, slot: Option<CallSlot>, now: Now) -> Decision {
        let request = invite.request;
        let number = dialled_number(request);
        let identity = caller_identity(request);
        let mut facts = CallFacts {
            call_id: invite.call_id.to_string(),
            sip_call_id: request
                .call_id_header()
                .map(|h| h.value().to_string())
                .unwrap_or_default(),
            line_number: number.clone(),
            caller_number: identity.number,
            caller_display_name: identity.display_name,
            caller_source: invite.source.map(|s| s.to_string()).unwrap_or_default(),
            user_agent: identity.user_agent,
            received_at_ms: chrono::DateTime::<chrono::Utc>::from(now.wall).timestamp_millis(),
            ..CallFacts::default()
        };

        let mut authenticated_as = None;
        if let (Some(auth), Some(source)) = (self.inbound_auth, invite.source) {
            let authorization = request.authorization_header().map(|h| h.value());
            match auth.check(source.ip(), "INVITE", authorization, now.wall) {
                Verdict::Exempt => {}
                Verdict::Authenticated(user) => authenticated_as = Some(user),
                Verdict::Challenge(challenge) => return Decision::Challenge(challenge),
                Verdict::Refuse(problem) => {
                    return refuse(
                        Refused::Authentication(problem),
                        StatusCode::Forbidden,
                        vec![],
                        facts,
                    )
                }
            }
        }

        // No call goes unrecorded: while the records spool cannot be written, refuse.
        if !self.spool_healthy && self.config.records.on_spool_failure == SpoolFailurePolicy::Reject
        {
            return self.unavailable(Refused::SpoolUnwritable, facts);
        }
        let Some(slot) = slot else {
            return self.unavailable(Refused::Full, facts);
        };
        let Some(line) = self.config.line_for(&number) else {
            return refuse(Refused::NoSuchLine, StatusCode::NotFound, vec![], facts);
        };
        // Calls to the registered account are recorded under the line they stand for.
        facts.line_number = line.number.clone();
        facts.court_name = line.court.clone();
        let Some(playlist) = self.playlists.get(&line.number).cloned() else {
            // Refuse loudly rather than skip the warning.
            return refuse(
                Refused::PromptsNotLoaded,
                StatusCode::ServerInternalError,
                vec![],
                facts,
            );
        };
        if let Some(first) = playlist.prompts().first() {
            facts.prompt_id = first.id.clone();
            facts.prompt_sha256 = first.sha256.clone();
        }
        facts.prompt_length_ms = playlist.duration_ms();
        facts.prompts = playlist
            .prompts()
            .iter()
            .map(|p| PlayedPrompt {
                id: p.id.clone(),
                version: p.version.clone(),
                sha256: p.sha256.clone(),
                length_ms: p.frames.duration_ms(),
                ms_sent: 0,
            })
            .collect();
        facts.operators = self.health.hunt_list(&line.operator.items());
        facts.ring_timeout = Duration::from_secs(u64::from(line.ring_timeout_s));
        facts.answer_delay = Duration::from_millis(self.config.sip.answer_delay_ms);

        if let Some(status) = content_refusal(request) {
            let accept = header("Accept", "application/sdp");
            return refuse(Refused::Content, status, vec![accept], facts);
        }
        // An INVITE without a body is a delayed offer: we offer in the 200 OK and
        // the caller answers in the ACK.
        let offer = if request.body.is_empty() {
            None
        } else {
            match RemoteMedia::parse(&request.body).and_then(|offer| {
                let negotiated = offer.negotiate(codecs_for(playlist.supports(Codec::G722)))?;
                Ok((offer, negotiated))
            }) {
                Ok(agreed) => Some(agreed),
                Err(SdpError::Malformed(problem)) => {
                    let warning = header("Warning", format!("399 courtline \"{problem}\""));
                    return refuse(
                        Refused::MalformedSdp(problem),
                        StatusCode::BadRequest,
                        vec![warning],
                        facts,
                    );
                }
                Err(e @ SdpError::NoCommonCodec { .. }) => {
                    let warning = header("Warning", "305 courtline \"Incompatible media format\"");
                    return refuse(
                        Refused::NoCommonCodec(e.to_string()),
                        StatusCode::NotAcceptableHere,
                        vec![warning],
                        facts,
                    );
                }
            }
        };
        if let Some((_, negotiated)) = &offer {
            facts.codec = negotiated.codec.encoding_name().to_string();
        }
        let mut answered_without_early_media = false;
        if line.answer_mode == AnswerMode::EarlyMedia {
            // A 183 must carry an answer; without an offer it would have to carry
            // ours and get the answer in a PRACK (RFC 3262), which courtline does not do.
            facts.early_media = offer.is_some();
            answered_without_early_media = offer.is_none();
        }
        let sip = &self.config.sip;
        let session_timer = match session_timer::negotiate(
            request,
            sip.min_se_s,
            sip.session_expires_s,
            now.monotonic,
        ) {
            Negotiation::TooSmall { min_se } => {
                let min_se = header("Min-SE", min_se.to_string());
                return refuse(
                    Refused::SessionIntervalTooSmall,
                    StatusCode::SessionIntervalTooSmall,
                    vec![min_se],
                    facts,
                );
            }
            Negotiation::Off => None,
            Negotiation::On {
                session_expires,
                require,
                timer,
            } => {
                let mut headers = vec![header("Session-Expires", session_expires)];
                if require {
                    headers.push(header("Require", "timer"));
                }
                Some((timer, headers))
            }
        };
        Decision::Admit(Box::new(Admitted {
            facts,
            playlist,
            offer,
            session_timer,
            slot,
            authenticated_as,
            answered_without_early_media,
        }))
    }

    fn unavailable(&self, reason: Refused, facts: CallFacts) -> Decision {
        Decision::Refuse(Refusal::unavailable(reason, facts, self.config))
    }
}

fn refuse(reason: Refused, status: StatusCode, headers: Vec<Header>, facts: CallFacts) -> Decision {
    Decision::Refuse(Refusal {
        reason,
        status,
        headers,
        facts,
    })
}
