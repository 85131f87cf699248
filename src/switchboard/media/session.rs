//! The media of one call as the call task sees it: what the caller hears
//! (prompt, then ringback, then the operator) as one continuous RTP stream,
//! and the relay between the legs.
//!
//! The call task hands its sockets over with [`spawn`], steers the media with
//! [`MediaCommand`]s and hears back [`MediaEvent`]s. The work is done by the
//! shared [`MediaEngine`](super::engine::MediaEngine): no task per call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use tokio::sync::oneshot;

use super::codec::Codec;
use super::engine::MediaEngine;
use super::ports::RtpSocket;
use super::prompt::Playlist;
use super::recording::CallTap;
use super::tone::{OperatorTone, ToneFrames};

/// The caller's side of the media, fixed when the call is answered.
#[derive(Debug)]
pub struct CallerLeg {
    /// Our RTP/RTCP sockets towards the caller (the RTP port is in our SDP answer).
    pub socket: RtpSocket,
    /// Where the caller's SDP asked us to send RTP.
    pub remote: SocketAddr,
    /// Agreed G.711 law.
    pub codec: Codec,
    /// RFC 4733 payload types, when both sides' SDP had telephone-event.
    pub telephone_event: Option<EventPayloadTypes>,
}

/// The operator's side, known once the operator answered.
#[derive(Debug)]
pub struct OperatorLeg {
    /// Our RTP/RTCP sockets towards the operator (the RTP port was in our offer).
    pub socket: RtpSocket,
    /// Where the operator's SDP answer asked us to send RTP.
    pub remote: SocketAddr,
    /// Law the operator chose; transcoded to the caller's if different.
    pub codec: Codec,
    /// RFC 4733 payload types, when the operator's answer kept telephone-event.
    pub telephone_event: Option<EventPayloadTypes>,
    /// A report key sequence is configured: the operator's RFC 4733 keys are
    /// read and reported (`MediaEvent::OperatorDtmf`) instead of relayed packet
    /// by packet, so the call flow can hold the sequence back from the caller.
    pub hold_keys: bool,
}

/// The telephone-event (RFC 4733) payload types of one leg: each side sends
/// with the number the other declared (RFC 3264 §5.1), and they may differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPayloadTypes {
    /// What our SDP declared: the peer's key presses arrive with it.
    pub receive: u8,
    /// What the peer's SDP declared: key presses we pass on go out with it.
    pub send: u8,
}

/// One of a call's two legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The caller's leg.
    Caller,
    /// The operator's leg (ignored until bridged).
    Operator,
}

/// A leg's new media target after a re-offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repoint {
    /// Which leg moved.
    pub side: Side,
    /// Where its peer's SDP now asks for RTP.
    pub remote: SocketAddr,
    /// The law now agreed on that leg.
    pub codec: Codec,
}

/// Where a call's [`MediaCommand`]s go: a `futures` channel, which allocates
/// per command and costs ~120 bytes while empty, where tokio's holds its
/// first block of 32 entries for the call's whole life (#16, memory per call).
#[derive(Debug, Clone)]
pub struct MediaCommands(mpsc::UnboundedSender<MediaCommand>);

impl MediaCommands {
    /// A sender and the engine's end of a new command channel.
    pub(super) fn channel() -> (MediaCommands, mpsc::UnboundedReceiver<MediaCommand>) {
        let (tx, rx) = mpsc::unbounded();
        (MediaCommands(tx), rx)
    }

    /// Hands `command` to the call's media; gives it back if the media is gone.
    pub fn send(&self, command: MediaCommand) -> Result<(), MediaCommand> {
        self.0
            .unbounded_send(command)
            .map_err(|unsent| unsent.into_inner())
    }
}

/// Orders from the call task.
#[derive(Debug)]
pub enum MediaCommand {
    /// Play the line's playlist from its first frame; a `PromptFinished` event
    /// follows its last, and ringback starts at once (the flow's `PlayRingback` then keeps it).
    PlayPrompt(Arc<Playlist>),
    /// Play ringback in a loop until told otherwise (no restart if already ringing).
    PlayRingback,
    /// Connect caller and operator.
    Bridge(OperatorLeg),
    /// From now on, report `Inactive` once the caller has sent neither RTP
    /// nor RTCP for this long (sent at the bridge: the prompt and the
    /// ringback are courtline talking, and a listening phone may send nothing).
    WatchInactivity(Duration),
    /// A leg's peer moved its media (re-INVITE or UPDATE): send there, in this law.
    Repoint(Repoint),
    /// Play this key (an RFC 4733 event code, from SIP INFO) to a leg as
    /// telephone-event packets; dropped, with a warning, if that leg has none.
    SendDtmf {
        /// The leg that hears it.
        to: Side,
        /// The event code (0–15).
        event: u8,
    },
    /// Record the call's audio from the first warning packet on (sent before `PlayPrompt`).
    Record(CallTap),
    /// Play this tone to the bridged operator; it replaces the caller's audio
    /// to the operator while it lasts, the caller hears nothing of it.
    PlayToOperator(OperatorTone),
    /// Stop and report the counters.
    Stop(oneshot::Sender<MediaStats>),
}

/// What the media task reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// The last prompt frame has been sent.
    PromptFinished,
    /// The caller pressed a key (RFC 4733). Reported only until the call is
    /// bridged; from then on key packets are relayed to the other leg as they are.
    Dtmf(char),
    /// The bridged operator pressed a key (RFC 4733), read because `hold_keys` was set.
    OperatorDtmf(char),
    /// A socket failed; the call cannot continue.
    Fault(String),
    /// Neither RTP nor RTCP came from the caller for the time given in
    /// `WatchInactivity`: the call should end as `media_timeout`.
    Inactive,
}

/// Counters for the call record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// RTP packets sent to the caller.
    pub packets_to_caller: u64,
    /// RTP packets received from the caller.
    pub packets_from_caller: u64,
    /// Milliseconds of the playlist sent to the caller (lead-in and gaps included).
    pub prompt_ms_sent: u32,
    /// RTP and RTCP figures of the caller leg.
    pub caller: LegStats,
    /// RTP and RTCP figures of the operator leg, if the call was bridged.
    pub operator: Option<LegStats>,
}

/// Per-leg RTP/RTCP figures (RFC 3550) for the call record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegStats {
    /// RTP packets we sent on this leg.
    pub packets_sent: u64,
    /// RTP packets we received on this leg.
    pub packets_received: u64,
    /// Packets lost on the way to us (from sequence numbers).
    pub packets_lost: u64,
    /// Interarrival jitter of what we received, µs (RFC 3550 A.8).
    pub jitter_us: u32,
    /// Round-trip time from the peer's RTCP reports, µs; None without them.
    pub rtt_us: Option<u32>,
    /// Cumulative loss of our stream as the peer reported it in RTCP.
    pub peer_reported_lost: Option<i32>,
}

/// Hands a call's media to the process-wide engine; returns the command sender.
pub fn spawn(
    caller: CallerLeg,
    ringback: Arc<ToneFrames>,
    events: mpsc::UnboundedSender<MediaEvent>,
) -> MediaCommands {
    match MediaEngine::global() {
        Ok(engine) => engine.spawn(caller, ringback, events),
        Err(e) => {
            let _ = events.unbounded_send(MediaEvent::Fault(e.to_string()));
            MediaCommands::channel().0
        }
    }
}
