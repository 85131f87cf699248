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

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Request, StatusCode};

use super::call::CallFacts;
use super::context::{CallSlot, HuntTurns};
use super::media::codec::Codec;
use super::media::prompt::{LinePlaylists, Playlist, Prompt};
use super::sdp::{codecs_for, Negotiated, RemoteMedia, SdpError};
use super::sip::forwarded::Origin;
use super::sip::inbound_auth::{InboundAuth, Verdict};
use super::sip::leg::{caller_identity, content_refusal, dialled_number, header};
use super::sip::probe_header::{self, ProbeKey};
use super::sip::qualify::OperatorHealth;
use super::sip::session_timer::{self, Negotiation, SessionTimer};
use crate::config::{
    AnswerMode, Config, HuntStrategy, OperatorTarget, RecordAudio, RecordingFailurePolicy,
    SpoolFailurePolicy,
};
use crate::contract::pb::PlayedPrompt;

/// The URIs of a hunt list in the order a call rings them: starting at entry
/// `turn` (modulo its length) and wrapping round. `turn` is 0 except on a
/// `round_robin` line, where it counts the line's calls.
pub fn hunt_order(targets: &[OperatorTarget], turn: u64) -> Vec<String> {
    let mut uris: Vec<String> = targets.iter().map(|t| t.uri().to_owned()).collect();
    if let Some(start) = u64::try_from(uris.len())
        .ok()
        .and_then(|len| turn.checked_rem(len))
        .and_then(|start| usize::try_from(start).ok())
    {
        uris.rotate_left(start);
    }
    uris
}

/// A prompt as the record lists it, nothing of it sent yet.
fn played(prompt: &Prompt) -> PlayedPrompt {
    PlayedPrompt {
        id: prompt.id.clone(),
        version: prompt.version.clone(),
        sha256: prompt.sha256.clone(),
        length_ms: prompt.frames.duration_ms(),
        ms_sent: 0,
    }
}

fn ring_timeout(seconds: u32) -> Duration {
    Duration::from_secs(u64::from(seconds))
}

/// The INVITE as admission sees it. Its headers are read by the `sip::leg` and
/// `sip::session_timer` helpers that already parse them, not copied out first.
#[derive(Debug, Clone, Copy)]
pub struct InviteFacts<'a> {
    /// The request as the stack parsed it.
    pub request: &'a Request,
    /// Where it came from: the transport source, or the caller a trusted
    /// proxy named; `None` when the transport did not say (then nobody can be
    /// challenged, so the INVITE is not authenticated).
    pub origin: Option<&'a Origin>,
    /// courtline's id for the call, made by the adapter (a UUIDv7 needs the
    /// clock and randomness).
    pub call_id: &'a str,
    /// How long the INVITE waited inside courtline between being read off the
    /// socket and admission (zero when it was not noted: TCP, TLS).
    pub waited: Duration,
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
    /// Each line's playlists: the prompt facts and whether G.722 can be played.
    pub playlists: &'a LinePlaylists,
    /// Digest authentication of untrusted callers, when configured.
    pub inbound_auth: Option<&'a InboundAuth>,
    /// What a synthetic probe's header must be signed with to count as one.
    pub probe_key: &'a ProbeKey,
    /// Which operator targets answer OPTIONS, for the hunt list.
    pub health: &'a OperatorHealth,
    /// Where each `round_robin` line's next hunt starts.
    pub hunt_turns: &'a HuntTurns,
    /// Whether the records spool can be written right now.
    pub spool_healthy: bool,
    /// Whether call recordings can be written right now.
    pub recording_healthy: bool,
    /// The switchboard is draining (SIGTERM): no new calls, 503 so the trunk goes elsewhere.
    pub draining: bool,
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
    Refuse(Box<Refusal>),
}

/// A call admission agreed to; the adapter adds the RTP socket and local address.
#[derive(Debug)]
pub struct Admitted {
    /// Static facts for the record.
    pub facts: CallFacts,
    /// The line's prompts.
    pub playlist: Arc<Playlist>,
    /// What the caller hears when nobody answers (`failover_prompt`), if the line has it.
    pub failover: Option<Arc<Playlist>>,
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
    /// The INVITE waited longer than `[sip] max_setup_wait_ms` to be admitted:
    /// the switchboard is overloaded (503).
    Overloaded,
    /// `max_calls` calls are up (503).
    Full,
    /// The switchboard is shutting down and takes no new calls (503).
    Draining,
    /// The line records audio, recordings cannot be written and `[recording] on_failure = "reject"` (503).
    RecordingUnwritable,
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
            Refused::Overloaded => f.write_str(
                "switchboard overloaded: the INVITE waited longer than [sip] max_setup_wait_ms to be admitted",
            ),
            Refused::Draining => f.write_str("switchboard draining for shutdown"),
            Refused::RecordingUnwritable => f.write_str(
                "call recordings cannot be written ([recording] on_failure = \"reject\")",
            ),
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
            caller_source: invite.origin.map(Origin::caller_source).unwrap_or_default(),
            proxy_source: invite
                .origin
                .and_then(Origin::proxy)
                .map(|proxy| proxy.to_string())
                .unwrap_or_default(),
            user_agent: identity.user_agent,
            received_at_ms: chrono::DateTime::<chrono::Utc>::from(now.wall).timestamp_millis(),
            report_keys: self.config.reports.sequence(),
            report_key_timeout: self.config.reports.key_timeout(),
            ..CallFacts::default()
        };
        // Only a header signed with our key, for this Call-ID, lately, makes a probe.
        facts.probe = probe_header::value_in(request).is_some_and(|value| {
            self.probe_key
                .verify(&value, &facts.sip_call_id, now.wall)
                .is_ok()
        });

        // Shutting down: send the caller elsewhere before anything else (no challenge either).
        if self.draining {
            return self.unavailable(Refused::Draining, facts);
        }
        // Overloaded: a 503 now costs little and sends the caller elsewhere; a
        // 200 OK seconds late would have the caller retransmit into the queue.
        let max_wait = self.config.sip.max_setup_wait_ms;
        if max_wait > 0 && invite.waited > Duration::from_millis(max_wait) {
            return self.unavailable(Refused::Overloaded, facts);
        }
        let mut authenticated_as = None;
        // A probe's signature is as good as a password.
        if let (Some(auth), Some(origin), false) = (self.inbound_auth, invite.origin, facts.probe) {
            let authorization = request.authorization_header().map(|h| h.value());
            match auth.check(origin.caller_ip(), "INVITE", authorization, now.wall) {
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
        facts.whisper_history = line.whisper_history;
        // A line whose calls are evidence takes none it cannot record, if so configured.
        if line.record_audio != RecordAudio::Never
            && !self.recording_healthy
            && self.config.recording.on_failure == RecordingFailurePolicy::Reject
        {
            return self.unavailable(Refused::RecordingUnwritable, facts);
        }
        // Outside office hours the line plays its after-hours playlist and
        // dials its duty number, if any (the warning is part of that playlist too).
        let staffed = self.config.is_staffed(line, now.wall.into());
        let (playlists, targets, hunt) = if staffed {
            (&self.playlists.in_hours, line.operator.items(), line.hunt)
        } else {
            let duty = line
                .after_hours
                .as_ref()
                .and_then(|after| after.operator.as_ref());
            // Duty numbers are tried in their order, whatever the line's own hunt.
            (
                &self.playlists.after_hours,
                duty.map(|duty| duty.items()).unwrap_or_default(),
                HuntStrategy::Sequential,
            )
        };
        let Some(playlist) = playlists.get(&line.number).cloned() else {
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
        facts.prompts = playlist.prompts().iter().map(played).collect();
        // Configured but not loaded: refused as loudly as a missing warning.
        let failover = match &line.failover_prompt {
            Some(_) => match self.playlists.failover.get(&line.number) {
                Some(failover) => Some(failover.clone()),
                None => {
                    return refuse(
                        Refused::PromptsNotLoaded,
                        StatusCode::ServerInternalError,
                        vec![],
                        facts,
                    )
                }
            },
            None => None,
        };
        facts.failover_prompt = failover
            .as_ref()
            .and_then(|failover| failover.prompts().first())
            .map(played);
        // G.722 only when everything the caller may hear exists in it.
        let wideband = playlist.supports(Codec::G722)
            && failover.as_ref().is_none_or(|f| f.supports(Codec::G722));
        let turn = match hunt {
            HuntStrategy::RoundRobin => self.hunt_turns.take(&line.number),
            HuntStrategy::Sequential | HuntStrategy::Simultaneous => 0,
        };
        facts.operators = self.health.hunt_list(&hunt_order(&targets, turn));
        facts.hunt = hunt;
        facts.connect = line.connect;
        facts.target_ring_timeouts = targets
            .iter()
            .filter_map(|t| Some((t.uri().to_owned(), ring_timeout(t.ring_timeout_s()?))))
            .collect();
        facts.after_hours = !staffed;
        if facts.probe {
            // A probe tests what callers hear; it never rings an operator, only
            // the `[probe] target` test extension, if any.
            let target = &self.config.probe.target;
            facts.operators = (!target.is_empty())
                .then(|| target.clone())
                .into_iter()
                .collect();
            facts.hunt = HuntStrategy::Sequential;
            facts.connect = crate::config::ConnectMode::Bridge;
        }
        facts.ring_timeout = ring_timeout(line.ring_timeout_s);
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
                let negotiated = offer.negotiate(codecs_for(wideband))?;
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
            failover,
            offer,
            session_timer,
            slot,
            authenticated_as,
            answered_without_early_media,
        }))
    }

    fn unavailable(&self, reason: Refused, facts: CallFacts) -> Decision {
        Decision::Refuse(Box::new(Refusal::unavailable(reason, facts, self.config)))
    }
}

fn refuse(reason: Refused, status: StatusCode, headers: Vec<Header>, facts: CallFacts) -> Decision {
    Decision::Refuse(Box::new(Refusal {
        reason,
        status,
        headers,
        facts,
    }))
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::atomic::AtomicUsize;

    use md5::Md5;
    use rsipstack::sip::SipMessage;
    use sha2::Digest;

    use super::*;
    use crate::config::sip::{DigestAlgorithm, InboundAuthConfig, InboundUser};
    use crate::switchboard::media::prompt::{Prompt, PromptFrames, PromptLevels};

    const CALLER: &str = "198.51.100.7:5070";
    const TRUNK: &str = "192.0.2.10:5060";
    /// Answered at once; narrowband prompts.
    const LINE: &str = "02112368";
    /// Plays the warning as early media.
    const EARLY_LINE: &str = "02100000";
    /// Rings its three operators round robin; the second has its own ring timeout.
    const ROUND_ROBIN_LINE: &str = "02188888";
    /// Its prompts exist in G.722 too.
    const WIDEBAND_LINE: &str = "02199999";
    /// Configured, but its playlist is missing.
    const UNLOADED_LINE: &str = "02155555";
    /// Staffed 09:00–17:00 Shanghai time on weekdays; a duty officer after hours.
    const DUTY_LINE: &str = "02166666";
    /// Same hours; after hours the playlist says when to call, then courtline hangs up.
    const CLOSED_LINE: &str = "02177777";

    const CONFIG: &str = r#"
[sip]
max_calls = 2
retry_after_s = 17
answer_delay_ms = 1500
min_se_s = 120
session_expires_s = 1800

[prompts.zh]
file = "audio/three_rules_zh.wav"

[prompts.busy]
file = "audio/busy_zh.wav"

[[lines]]
number = "02112368"
court = "上海市第一中级人民法院"
prompt = "zh"
operator = ["sip:op1@127.0.0.1:5090", "sip:op2@127.0.0.1:5091"]
ring_timeout_s = 20

[[lines]]
number = "02188888"
court = "上海市第三中级人民法院"
prompt = "zh"
hunt = "round_robin"
failover_prompt = "busy"
operator = ["sip:a@127.0.0.1:5090", { uri = "sip:b@127.0.0.1:5091", ring_timeout_s = 12 }, "sip:c@127.0.0.1:5092"]

[[lines]]
number = "02100000"
court = "上海市第二中级人民法院"
prompt = "zh"
operator = "sip:op@127.0.0.1:5090"
answer_mode = "early_media"

[[lines]]
number = "02199999"
court = "上海市高级人民法院"
prompt = "zh"
operator = "sip:op@127.0.0.1:5090"

[[lines]]
number = "02155555"
court = "上海海事法院"
prompt = "zh"
operator = "sip:op@127.0.0.1:5090"

[prompts.closed]
file = "audio/after_hours_zh.wav"

[hours.office]
zone = "Asia/Shanghai"
weekly = ["mon-fri 09:00-17:00"]

[[lines]]
number = "02166666"
court = "上海市浦东新区人民法院"
prompt = "zh"
operator = "sip:op@127.0.0.1:5090"
hours = "office"
after_hours = { prompt = ["zh", "closed"], operator = "sip:duty@127.0.0.1:5099" }

[[lines]]
number = "02177777"
court = "上海市静安区人民法院"
prompt = "zh"
operator = "sip:op@127.0.0.1:5090"
hours = "office"
after_hours = { prompt = ["zh", "closed"] }
"#;

    /// An offer preferring A-law, then G.722, then μ-law.
    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8 9 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
    /// An offer of G.722 first, μ-law second.
    const WIDEBAND_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 40000 RTP/AVP 9 0\r\n";
    const SDP: &str = "Content-Type: application/sdp\r\n";

    /// A one-prompt playlist of one second, with G.722 when `wideband`.
    fn playlist(wideband: bool) -> Arc<Playlist> {
        playlist_of("zh", wideband)
    }

    fn playlist_of(id: &str, wideband: bool) -> Arc<Playlist> {
        let narrow = vec![0i16; 8000];
        let wide = vec![0i16; 16000];
        let prompt = Prompt {
            id: id.into(),
            version: "2024-01".into(),
            path: "audio/three_rules_zh.wav".into(),
            sha256: "ab".repeat(32),
            frames: Arc::new(PromptFrames::from_pcm(
                &narrow,
                wideband.then_some(&wide[..]),
            )),
            levels: PromptLevels::measure(&[0.0; 8000], 8000),
        };
        Arc::new(Playlist::new(vec![prompt], 200, 600))
    }

    /// The switchboard's side of admission, owned so tests can change it.
    struct Switchboard {
        config: Config,
        playlists: LinePlaylists,
        inbound_auth: Option<InboundAuth>,
        probe_key: ProbeKey,
        health: OperatorHealth,
        hunt_turns: HuntTurns,
        spool_healthy: bool,
        recording_healthy: bool,
        draining: bool,
        /// How long the INVITE waited before admission.
        waited: Duration,
        active: Arc<AtomicUsize>,
        now: Now,
    }

    impl Switchboard {
        fn new() -> Switchboard {
            let playlists = LinePlaylists {
                in_hours: [
                    (LINE, playlist(false)),
                    (ROUND_ROBIN_LINE, playlist(false)),
                    (EARLY_LINE, playlist(false)),
                    (WIDEBAND_LINE, playlist(true)),
                    (DUTY_LINE, playlist(false)),
                    (CLOSED_LINE, playlist(false)),
                ]
                .into_iter()
                .map(|(line, p)| (line.to_string(), p))
                .collect(),
                after_hours: [DUTY_LINE, CLOSED_LINE]
                    .into_iter()
                    .map(|line| (line.to_string(), playlist_of("closed", false)))
                    .collect(),
                failover: [(ROUND_ROBIN_LINE, playlist_of("busy", false))]
                    .into_iter()
                    .map(|(line, p)| (line.to_string(), p))
                    .collect(),
            };
            Switchboard {
                config: Config::from_toml_str(CONFIG, "admission test").unwrap(),
                playlists,
                inbound_auth: None,
                probe_key: ProbeKey::new(b"the switchboard's probe key"),
                health: OperatorHealth::default(),
                hunt_turns: HuntTurns::default(),
                spool_healthy: true,
                recording_healthy: true,
                draining: false,
                waited: Duration::ZERO,
                active: Arc::new(AtomicUsize::new(0)),
                now: Now {
                    wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                    monotonic: Instant::now(),
                },
            }
        }

        /// With digest authentication for everyone outside 192.0.2.0/24.
        fn with_auth() -> Switchboard {
            let auth = InboundAuth::new(InboundAuthConfig {
                realm: "court.example".into(),
                algorithm: DigestAlgorithm::Md5,
                users: vec![InboundUser {
                    username: "alice".into(),
                    password: "s3cret".into(),
                    ha1: String::new(),
                }],
                exempt: vec!["192.0.2.0/24".into()],
                nonce_lifetime_s: 60,
            });
            Switchboard {
                inbound_auth: auth.unwrap(),
                ..Switchboard::new()
            }
        }

        /// What the adapter does: take a slot, then decide.
        fn decide_from(&self, source: &str, request: &Request) -> Decision {
            self.decide_from_origin(&Origin::Direct(source.parse().unwrap()), request)
        }

        fn decide_from_origin(&self, origin: &Origin, request: &Request) -> Decision {
            let admission = Admission {
                config: &self.config,
                playlists: &self.playlists,
                inbound_auth: self.inbound_auth.as_ref(),
                probe_key: &self.probe_key,
                health: &self.health,
                hunt_turns: &self.hunt_turns,
                spool_healthy: self.spool_healthy,
                recording_healthy: self.recording_healthy,
                draining: self.draining,
            };
            let invite = InviteFacts {
                request,
                origin: Some(origin),
                call_id: "0190-call",
                waited: self.waited,
            };
            let slot = CallSlot::take(&self.active, self.config.sip.max_calls);
            admission.decide(&invite, slot, self.now)
        }

        fn decide(&self, request: &Request) -> Decision {
            self.decide_from(CALLER, request)
        }

        fn in_use(&self) -> usize {
            self.active.load(std::sync::atomic::Ordering::Acquire)
        }
    }

    fn invite(line: &str, extra: &str, body: &str) -> Request {
        let text = format!(
            "INVITE sip:{line}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK-a\r\nFrom: \"张三\" <sip:13800138000@198.51.100.7>;tag=1\r\nTo: <sip:{line}@127.0.0.1>\r\nCall-ID: a@198.51.100.7\r\nCSeq: 1 INVITE\r\nUser-Agent: SIPp/3.7\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match SipMessage::try_from(text.as_str()).unwrap() {
            SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    }

    fn admitted(decision: Decision) -> Admitted {
        match decision {
            Decision::Admit(admitted) => *admitted,
            other => panic!("expected Admit, got {other:?}"),
        }
    }

    fn refusal(decision: Decision) -> Refusal {
        match decision {
            Decision::Refuse(refusal) => *refusal,
            other => panic!("expected Refuse, got {other:?}"),
        }
    }

    fn challenge(decision: Decision) -> String {
        match decision {
            Decision::Challenge(value) => value,
            other => panic!("expected Challenge, got {other:?}"),
        }
    }

    fn header_lines(headers: &[Header]) -> Vec<String> {
        headers.iter().map(ToString::to_string).collect()
    }

    fn code(refusal: &Refusal) -> u16 {
        u16::from(refusal.status.clone())
    }

    fn nonce_of(challenge: &str) -> String {
        let start = challenge.find("nonce=\"").unwrap() + 7;
        challenge[start..].split('"').next().unwrap().to_string()
    }

    /// `Authorization` as a client computes it for `password` (RFC 2617 MD5, qop=auth).
    fn authorization(password: &str, nonce: &str) -> String {
        let md5 = |text: String| hex::encode(Md5::digest(text.as_bytes()));
        let uri = format!("sip:{LINE}@127.0.0.1");
        let ha1 = md5(format!("alice:court.example:{password}"));
        let ha2 = md5(format!("INVITE:{uri}"));
        let response = md5(format!("{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}"));
        format!("Authorization: Digest username=\"alice\", realm=\"court.example\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c0ffee\"\r\n")
    }

    #[test]
    fn admits_with_the_facts_the_record_needs() {
        let sb = Switchboard::new();
        let a = admitted(sb.decide(&invite(LINE, SDP, OFFER)));
        let f = &a.facts;
        assert_eq!(f.call_id, "0190-call");
        assert_eq!(f.sip_call_id, "a@198.51.100.7");
        assert_eq!(f.line_number, LINE);
        assert_eq!(f.court_name, "上海市第一中级人民法院");
        assert_eq!(f.caller_number, "13800138000");
        assert_eq!(f.caller_display_name, "张三");
        assert_eq!(f.caller_source, CALLER);
        assert_eq!(f.user_agent, "SIPp/3.7");
        assert_eq!(f.received_at_ms, 1_700_000_000_000);
        assert_eq!(f.prompt_id, "zh");
        assert_eq!(f.prompt_sha256, "ab".repeat(32));
        // 200 ms lead-in + 1 s prompt.
        assert_eq!(f.prompt_length_ms, 1200);
        assert_eq!(f.prompts.len(), 1);
        assert_eq!(f.prompts[0].length_ms, 1000);
        assert_eq!(
            f.operators,
            ["sip:op1@127.0.0.1:5090", "sip:op2@127.0.0.1:5091"]
        );
        assert_eq!(f.ring_timeout, Duration::from_secs(20));
        assert_eq!(f.answer_delay, Duration::from_millis(1500));
        assert!(!f.early_media);
        assert!(a.authenticated_as.is_none());
        assert!(!a.answered_without_early_media);
        assert!(
            a.session_timer.is_none(),
            "the caller neither asked nor supports timers"
        );
        assert_eq!(sb.in_use(), 1, "the admitted call holds its slot");
        drop(a);
        assert_eq!(sb.in_use(), 0);
    }

    #[test]
    fn office_hours_choose_the_playlist_and_who_is_dialled() {
        let mut sb = Switchboard::new();
        // 1,700,000,000 s is Wednesday 06:13 in Shanghai: before opening.
        for (line, duty) in [
            (DUTY_LINE, vec!["sip:duty@127.0.0.1:5099".to_string()]),
            (CLOSED_LINE, vec![]),
        ] {
            let a = admitted(sb.decide(&invite(line, SDP, OFFER)));
            assert!(a.facts.after_hours, "{line}");
            assert_eq!(a.playlist.prompts()[0].id, "closed", "{line}");
            assert_eq!(a.facts.operators, duty, "{line}");
        }
        // Lines without hours are always staffed.
        assert!(
            !admitted(sb.decide(&invite(LINE, SDP, OFFER)))
                .facts
                .after_hours
        );
        // Four hours later it is 10:13 there: the line's own playlist and operator.
        sb.now.wall += Duration::from_secs(4 * 3600);
        let a = admitted(sb.decide(&invite(CLOSED_LINE, SDP, OFFER)));
        assert!(!a.facts.after_hours);
        assert_eq!(a.playlist.prompts()[0].id, "zh");
        assert_eq!(a.facts.operators, ["sip:op@127.0.0.1:5090"]);
    }

    #[test]
    fn hunt_order_rotates_by_turn() {
        let targets: Vec<OperatorTarget> = ["a", "b", "c"]
            .iter()
            .map(|u| OperatorTarget::Uri(u.to_string()))
            .collect();
        assert_eq!(hunt_order(&targets, 0), ["a", "b", "c"]);
        assert_eq!(hunt_order(&targets, 1), ["b", "c", "a"]);
        assert_eq!(hunt_order(&targets, 5), ["c", "a", "b"]);
        assert_eq!(hunt_order(&targets, u64::MAX), ["a", "b", "c"]);
        assert!(hunt_order(&[], 7).is_empty());
    }

    #[test]
    fn round_robin_line_starts_each_call_one_further_on() {
        let sb = Switchboard::new();
        let mut firsts = Vec::new();
        for _ in 0..4 {
            let a = admitted(sb.decide(&invite(ROUND_ROBIN_LINE, SDP, OFFER)));
            assert_eq!(a.facts.hunt, HuntStrategy::RoundRobin);
            assert_eq!(a.facts.operators.len(), 3);
            assert_eq!(
                a.facts.target_ring_timeouts,
                [("sip:b@127.0.0.1:5091".to_string(), Duration::from_secs(12))].into()
            );
            firsts.push(a.facts.operators[0].clone());
            assert_eq!(
                a.facts.failover_prompt.as_ref().map(|p| p.id.as_str()),
                Some("busy")
            );
            assert!(a.failover.is_some());
        }
        assert_eq!(
            firsts,
            [
                "sip:a@127.0.0.1:5090",
                "sip:b@127.0.0.1:5091",
                "sip:c@127.0.0.1:5092",
                "sip:a@127.0.0.1:5090"
            ]
        );
        // Other lines keep their order and do not move the turn.
        let a = admitted(sb.decide(&invite(LINE, SDP, OFFER)));
        assert!(a.failover.is_none() && a.facts.failover_prompt.is_none());
        assert_eq!(a.facts.operators[0], "sip:op1@127.0.0.1:5090");
        assert_eq!(a.facts.hunt, HuntStrategy::Sequential);
        assert!(a.facts.target_ring_timeouts.is_empty());
        let a = admitted(sb.decide(&invite(ROUND_ROBIN_LINE, SDP, OFFER)));
        assert_eq!(a.facts.operators[0], "sip:b@127.0.0.1:5091");
    }

    #[test]
    fn hunt_list_leaves_out_operators_marked_down() {
        let sb = Switchboard::new();
        for _ in 0..10 {
            sb.health.record("sip:op1@127.0.0.1:5090", false);
        }
        let a = admitted(sb.decide(&invite(LINE, "", "")));
        assert_eq!(a.facts.operators, ["sip:op2@127.0.0.1:5091"]);
    }

    #[test]
    fn codec_follows_the_callers_order_among_what_the_line_can_play() {
        let sb = Switchboard::new();
        // The caller prefers A-law: taken even where G.722 could be played.
        for line in [LINE, WIDEBAND_LINE] {
            let a = admitted(sb.decide(&invite(line, SDP, OFFER)));
            let (offer, negotiated) = a.offer.unwrap();
            assert_eq!(negotiated.codec, Codec::Pcma, "{line}");
            assert_eq!(negotiated.telephone_event, Some(101));
            assert_eq!(offer.rtp_addr, "198.51.100.7:40000".parse().unwrap());
            assert_eq!(a.facts.codec, "PCMA");
        }
        // G.722 first: only a line with wideband prompts takes it. (Each
        // admitted call is dropped at once: max_calls is 2.)
        let codec = |line| {
            admitted(sb.decide(&invite(line, SDP, WIDEBAND_OFFER)))
                .facts
                .codec
        };
        assert_eq!(codec(WIDEBAND_LINE), "G722");
        assert_eq!(codec(LINE), "PCMU");
        // No SDP: a delayed offer, the codec is settled by the ACK.
        let delayed = admitted(sb.decide(&invite(LINE, "", "")));
        assert!(delayed.offer.is_none());
        assert_eq!(delayed.facts.codec, "");
    }

    #[test]
    fn session_timer_is_negotiated_from_the_arrival_time() {
        let sb = Switchboard::new();
        let a = admitted(sb.decide(&invite(
            LINE,
            "Supported: timer\r\nSession-Expires: 300;refresher=uac\r\n",
            "",
        )));
        let (timer, headers) = a.session_timer.unwrap();
        assert_eq!(
            header_lines(&headers),
            ["Session-Expires: 300;refresher=uac", "Require: timer"]
        );
        assert!(!timer.we_refresh());
        // The caller refreshes; we give up at 300 - min(32, 100) s without one.
        assert_eq!(
            timer.poll_timeout(),
            sb.now.monotonic + Duration::from_secs(268)
        );

        // Supported but not asked for: our preferred interval, we refresh.
        let a = admitted(sb.decide(&invite(LINE, "Supported: timer\r\n", "")));
        let (timer, headers) = a.session_timer.unwrap();
        assert_eq!(
            header_lines(&headers),
            ["Session-Expires: 1800;refresher=uas", "Require: timer"]
        );
        assert!(timer.we_refresh());
    }

    #[test]
    fn session_interval_below_min_se_gets_422_with_min_se() {
        let sb = Switchboard::new();
        let r = refusal(sb.decide(&invite(LINE, "Session-Expires: 100\r\n", "")));
        assert_eq!(code(&r), 422);
        assert_eq!(r.reason, Refused::SessionIntervalTooSmall);
        assert_eq!(header_lines(&r.headers), ["Min-SE: 120"]);
        assert_eq!(r.facts.line_number, LINE);
        assert_eq!(sb.in_use(), 0, "a refusal gives its slot back");
    }

    #[test]
    fn early_media_needs_an_offer_to_answer_in_the_183() {
        let sb = Switchboard::new();
        let with_sdp = admitted(sb.decide(&invite(EARLY_LINE, SDP, OFFER)));
        assert!(with_sdp.facts.early_media);
        assert!(!with_sdp.answered_without_early_media);
        let without = admitted(sb.decide(&invite(EARLY_LINE, "", "")));
        assert!(!without.facts.early_media, "answered normally instead");
        assert!(without.answered_without_early_media);
    }

    #[test]
    fn unknown_line_gets_404_and_is_recorded_under_the_dialled_number() {
        let sb = Switchboard::new();
        let r = refusal(sb.decide(&invite("09999999", SDP, OFFER)));
        assert_eq!(code(&r), 404);
        assert_eq!(r.reason, Refused::NoSuchLine);
        assert!(r.headers.is_empty());
        assert_eq!(r.facts.line_number, "09999999");
        assert_eq!(r.facts.court_name, "");
        assert_eq!(r.facts.caller_number, "13800138000");
        assert_eq!(r.facts.call_id, "0190-call");
    }

    #[test]
    fn line_without_loaded_prompts_gets_500_rather_than_no_warning() {
        let sb = Switchboard::new();
        let r = refusal(sb.decide(&invite(UNLOADED_LINE, "", "")));
        assert_eq!(code(&r), 500);
        assert_eq!(r.reason, Refused::PromptsNotLoaded);
        assert_eq!(r.facts.court_name, "上海海事法院");
    }

    #[test]
    fn full_switchboard_gets_503_with_retry_after() {
        let sb = Switchboard::new();
        let _calls = [
            admitted(sb.decide(&invite(LINE, "", ""))),
            admitted(sb.decide(&invite(LINE, "", ""))),
        ];
        let r = refusal(sb.decide(&invite(LINE, SDP, OFFER)));
        assert_eq!(code(&r), 503);
        assert_eq!(r.reason, Refused::Full);
        assert_eq!(header_lines(&r.headers), ["Retry-After: 17"]);
        // Full is decided before the line is looked up, as before.
        let r = refusal(sb.decide(&invite("09999999", "", "")));
        assert_eq!(r.reason, Refused::Full);
        assert_eq!(sb.in_use(), 2);
    }

    #[test]
    fn a_draining_switchboard_sends_every_caller_elsewhere_and_frees_the_slot() {
        let mut sb = Switchboard::with_auth();
        sb.draining = true;
        // Even a caller who would be challenged, and a number that is no line:
        // 503 with Retry-After, recorded as refused, before anything else.
        for (source, line) in [
            (CALLER, LINE),
            ("203.0.113.9:5060", LINE),
            (CALLER, "09999999"),
        ] {
            let r = refusal(sb.decide_from(source, &invite(line, SDP, OFFER)));
            assert_eq!(code(&r), 503);
            assert_eq!(r.reason, Refused::Draining);
            assert_eq!(header_lines(&r.headers), ["Retry-After: 17"]);
        }
        assert_eq!(sb.in_use(), 0);
        sb.draining = false;
        // 192.0.2.0/24 is exempt from authentication: admitted once not draining.
        admitted(sb.decide_from("192.0.2.5:5060", &invite(LINE, SDP, OFFER)));
    }

    #[test]
    fn an_invite_that_waited_too_long_is_shed_with_503_and_frees_the_slot() {
        let mut sb = Switchboard::with_auth();
        // The default limit: 300 ms inside courtline before admission.
        assert_eq!(sb.config.sip.max_setup_wait_ms, 300);
        sb.waited = Duration::from_millis(300);
        let in_time = admitted(sb.decide_from("192.0.2.5:5060", &invite(LINE, SDP, OFFER)));
        sb.waited = Duration::from_millis(301);
        // Shed before anything else costs: no challenge, no line look-up.
        for (source, line) in [
            ("192.0.2.5:5060", LINE),
            ("203.0.113.9:5060", LINE),
            (CALLER, "09999999"),
        ] {
            let r = refusal(sb.decide_from(source, &invite(line, SDP, OFFER)));
            assert_eq!(code(&r), 503);
            assert_eq!(r.reason, Refused::Overloaded);
            assert_eq!(header_lines(&r.headers), ["Retry-After: 17"]);
        }
        assert_eq!(sb.in_use(), 1, "only the admitted call holds a slot");
        drop(in_time);
        // 0 turns shedding off, however long the wait.
        sb.config.sip.max_setup_wait_ms = 0;
        sb.waited = Duration::from_secs(30);
        admitted(sb.decide_from("192.0.2.5:5060", &invite(LINE, SDP, OFFER)));
    }

    #[test]
    fn behind_a_proxy_the_forwarded_caller_is_authenticated_and_recorded() {
        let sb = Switchboard::with_auth();
        let proxy: std::net::SocketAddr = "10.9.0.5:5060".parse().unwrap();
        // The proxy's address is not exempt, the caller it names is.
        let exempt = Origin::Forwarded {
            caller: "192.0.2.5".parse().unwrap(),
            proxy,
        };
        let a = admitted(sb.decide_from_origin(&exempt, &invite(LINE, SDP, OFFER)));
        assert_eq!(a.facts.caller_source, "192.0.2.5");
        assert_eq!(a.facts.proxy_source, "10.9.0.5:5060");
        // A caller outside it is challenged, however exempt the proxy might be.
        let outside = Origin::Forwarded {
            caller: "203.0.113.9".parse().unwrap(),
            proxy: "192.0.2.1:5060".parse().unwrap(),
        };
        assert!(matches!(
            sb.decide_from_origin(&outside, &invite(LINE, SDP, OFFER)),
            Decision::Challenge(_)
        ));
        // A claim from a source that is no proxy is judged by that source.
        let spoofed = Origin::Spoofed {
            source: "203.0.113.9:5070".parse().unwrap(),
            claimed: "192.0.2.5".into(),
        };
        assert!(matches!(
            sb.decide_from_origin(&spoofed, &invite(LINE, SDP, OFFER)),
            Decision::Challenge(_)
        ));
        let direct = admitted(Switchboard::new().decide(&invite(LINE, SDP, OFFER)));
        assert_eq!(direct.facts.proxy_source, "");
    }

    #[test]
    fn unwritable_spool_refuses_with_503_only_under_the_reject_policy() {
        let mut sb = Switchboard::new();
        sb.spool_healthy = false;
        let r = refusal(sb.decide(&invite(LINE, SDP, OFFER)));
        assert_eq!(code(&r), 503);
        assert_eq!(r.reason, Refused::SpoolUnwritable);
        assert_eq!(header_lines(&r.headers), ["Retry-After: 17"]);
        sb.config.records.on_spool_failure = SpoolFailurePolicy::Continue;
        admitted(sb.decide(&invite(LINE, SDP, OFFER)));
    }

    #[test]
    fn unwritable_recordings_refuse_recorded_lines_only_under_the_reject_policy() {
        let mut sb = Switchboard::new();
        sb.recording_healthy = false;
        // The default policy carries the call; its record will say the recording failed.
        admitted(sb.decide(&invite(LINE, SDP, OFFER)));
        sb.config.recording.on_failure = RecordingFailurePolicy::Reject;
        let r = refusal(sb.decide(&invite(LINE, SDP, OFFER)));
        assert_eq!(code(&r), 503);
        assert_eq!(r.reason, Refused::RecordingUnwritable);
        assert_eq!(header_lines(&r.headers), ["Retry-After: 17"]);
        // A line that records nothing does not depend on the recordings' disk.
        for line in &mut sb.config.lines {
            line.record_audio = RecordAudio::Never;
        }
        admitted(sb.decide(&invite(LINE, SDP, OFFER)));
    }

    #[test]
    fn no_common_codec_gets_488_with_a_warning() {
        let sb = Switchboard::new();
        let g729 =
            "v=0\r\nc=IN IP4 198.51.100.7\r\nm=audio 40000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
        let r = refusal(sb.decide(&invite(LINE, SDP, g729)));
        assert_eq!(code(&r), 488);
        assert!(matches!(r.reason, Refused::NoCommonCodec(_)));
        assert_eq!(
            header_lines(&r.headers),
            ["Warning: 305 courtline \"Incompatible media format\""]
        );
        // G.722 only: fine where the prompts are wideband, 488 where they are not.
        let g722 = "v=0\r\nc=IN IP4 198.51.100.7\r\nm=audio 40000 RTP/AVP 9\r\n";
        assert_eq!(code(&refusal(sb.decide(&invite(LINE, SDP, g722)))), 488);
        assert_eq!(
            admitted(sb.decide(&invite(WIDEBAND_LINE, SDP, g722)))
                .facts
                .codec,
            "G722"
        );
    }

    #[test]
    fn unreadable_sdp_gets_400_with_the_problem() {
        let sb = Switchboard::new();
        let r = refusal(sb.decide(&invite(LINE, SDP, "v=0\r\n")));
        assert_eq!(code(&r), 400);
        assert_eq!(r.reason, Refused::MalformedSdp("no m=audio stream".into()));
        assert_eq!(
            header_lines(&r.headers),
            ["Warning: 399 courtline \"no m=audio stream\""]
        );
    }

    #[test]
    fn content_without_sdp_gets_415_or_406_with_accept() {
        let sb = Switchboard::new();
        let r = refusal(sb.decide(&invite(
            LINE,
            "Content-Type: application/unknownformat\r\n",
            "<a/>",
        )));
        assert_eq!(code(&r), 415);
        assert_eq!(header_lines(&r.headers), ["Accept: application/sdp"]);
        let r = refusal(sb.decide(&invite(LINE, "Accept: text/plain\r\n", "")));
        assert_eq!(code(&r), 406);
        assert_eq!(r.reason, Refused::Content);
    }

    #[test]
    fn untrusted_caller_is_challenged_before_anything_else() {
        let mut sb = Switchboard::with_auth();
        // Even a full switchboard and an unwritable spool challenge first.
        sb.spool_healthy = false;
        let _calls = [
            CallSlot::take(&sb.active, 2).unwrap(),
            CallSlot::take(&sb.active, 2).unwrap(),
        ];
        let value = challenge(sb.decide(&invite(LINE, "", "")));
        assert!(
            value.starts_with("Digest realm=\"court.example\", nonce=\""),
            "{value}"
        );
        assert!(value.contains("algorithm=MD5, qop=\"auth\""), "{value}");
        assert!(!value.contains("stale"), "{value}");
        // An exempt trunk is not asked.
        assert_eq!(
            refusal(sb.decide_from(TRUNK, &invite(LINE, "", ""))).reason,
            Refused::SpoolUnwritable
        );
    }

    #[test]
    fn right_credentials_admit_wrong_ones_get_403() {
        let sb = Switchboard::with_auth();
        let nonce = nonce_of(&challenge(sb.decide(&invite(LINE, "", ""))));
        let a = admitted(sb.decide(&invite(LINE, &authorization("s3cret", &nonce), "")));
        assert_eq!(a.authenticated_as.as_deref(), Some("alice"));
        drop(a);

        let r = refusal(sb.decide(&invite(LINE, &authorization("guess", &nonce), "")));
        assert_eq!(code(&r), 403);
        assert_eq!(r.reason, Refused::Authentication("wrong digest response"));
        assert!(r.headers.is_empty());
        assert_eq!(
            r.facts.caller_number, "13800138000",
            "the refusal is recorded"
        );

        // The nonce is bound to the address it was given to.
        let elsewhere: IpAddr = "203.0.113.9".parse().unwrap();
        let moved = format!("{elsewhere}:5070");
        let again =
            challenge(sb.decide_from(&moved, &invite(LINE, &authorization("s3cret", &nonce), "")));
        assert!(!again.contains("stale"), "{again}");
    }

    #[test]
    fn expired_nonce_is_challenged_again_as_stale() {
        let mut sb = Switchboard::with_auth();
        let nonce = nonce_of(&challenge(sb.decide(&invite(LINE, "", ""))));
        sb.now.wall += Duration::from_secs(61);
        let value = challenge(sb.decide(&invite(LINE, &authorization("s3cret", &nonce), "")));
        assert!(value.ends_with(", stale=true"), "{value}");
        assert_ne!(nonce_of(&value), nonce, "with a fresh nonce");
    }

    #[test]
    fn a_signed_probe_is_marked_dials_only_the_probe_target_and_skips_the_challenge() {
        let mut sb = Switchboard::with_auth();
        let signed = format!(
            "X-Courtline-Probe: {}\r\n",
            sb.probe_key.sign("a@198.51.100.7", sb.now.wall)
        );
        let a = admitted(sb.decide(&invite(LINE, &signed, "")));
        assert!(a.facts.probe);
        assert!(
            a.facts.operators.is_empty(),
            "no operator is rung for a probe"
        );
        assert_eq!(a.authenticated_as, None);
        drop(a);

        sb.config.probe.target = "sip:probe@192.0.2.30:5060".into();
        let a = admitted(sb.decide(&invite(ROUND_ROBIN_LINE, &signed, "")));
        assert_eq!(a.facts.operators, ["sip:probe@192.0.2.30:5060"]);
        assert_eq!(a.facts.hunt, HuntStrategy::Sequential);
        drop(a);

        // A refusal of a probe is a probe's record too.
        let r = refusal(sb.decide(&invite("02199990", &signed, "")));
        assert_eq!(code(&r), 404);
        assert!(r.facts.probe);

        // Another key's header, or a copied one on another call: an ordinary
        // caller, challenged like any other.
        let forged = format!(
            "X-Courtline-Probe: {}\r\n",
            ProbeKey::new(b"a guess").sign("a@198.51.100.7", sb.now.wall)
        );
        challenge(sb.decide(&invite(LINE, &forged, "")));
        sb.inbound_auth = None;
        let a = admitted(sb.decide(&invite(LINE, &forged, "")));
        assert!(!a.facts.probe);
        assert_eq!(a.facts.operators.len(), 2, "the line's operators");
        drop(a);
        sb.now.wall += Duration::from_secs(301);
        let a = admitted(sb.decide(&invite(LINE, &signed, "")));
        assert!(!a.facts.probe, "a stale signature");
    }
}
