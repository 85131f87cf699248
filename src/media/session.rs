//! The media of one call: what the caller hears (prompt, then ringback, then the
//! operator) as one continuous RTP stream, and the relay between the legs.
//!
//! A `MediaSession` is a task owning the call's RTP sockets. The call task
//! steers it with [`MediaCommand`]s and hears back [`MediaEvent`]s. Prompt and
//! tone frames are shared, pre-encoded buffers; per packet only the header is
//! written.

use std::net::SocketAddr;
use std::sync::Arc;

use rtp_rs::RtpReader;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::codec::Codec;
use super::dtmf::DtmfDetector;
use super::pacer::Pacer;
use super::prompt::PromptFrames;
use super::stream::{OutboundStream, MAX_PACKET};
use super::tone::ToneFrames;

/// The caller's side of the media, fixed when the call is answered.
#[derive(Debug)]
pub struct CallerLeg {
    /// Our RTP socket towards the caller (its port is in our SDP answer).
    pub socket: UdpSocket,
    /// Where the caller's SDP asked us to send RTP.
    pub remote: SocketAddr,
    /// Agreed G.711 law.
    pub codec: Codec,
    /// Caller's telephone-event payload type, for key presses.
    pub telephone_event: Option<u8>,
}

/// The operator's side, known once the operator answered.
#[derive(Debug)]
pub struct OperatorLeg {
    /// Our RTP socket towards the operator (its port was in our offer).
    pub socket: UdpSocket,
    /// Where the operator's SDP answer asked us to send RTP.
    pub remote: SocketAddr,
    /// Law the operator chose; transcoded to the caller's if different.
    pub codec: Codec,
}

/// Orders from the call task.
#[derive(Debug)]
pub enum MediaCommand {
    /// Play the prompt from its first frame; a `PromptFinished` event follows.
    PlayPrompt(Arc<PromptFrames>),
    /// Play ringback in a loop until told otherwise.
    PlayRingback,
    /// Connect caller and operator.
    Bridge(OperatorLeg),
    /// Stop and report the counters.
    Stop(oneshot::Sender<MediaStats>),
}

/// What the media task reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// The last prompt frame has been sent.
    PromptFinished,
    /// The caller pressed a key.
    Dtmf(char),
    /// A socket failed; the call cannot continue.
    Fault(String),
}

/// Counters for the call record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// RTP packets sent to the caller.
    pub packets_to_caller: u64,
    /// RTP packets received from the caller.
    pub packets_from_caller: u64,
    /// Milliseconds of prompt sent to the caller.
    pub prompt_ms_sent: u32,
}

/// What the caller is being sent right now.
enum Source {
    /// Nothing yet (before the ACK).
    Idle,
    /// Prompt frame `next` of `frames`.
    Prompt {
        frames: Arc<PromptFrames>,
        next: usize,
    },
    /// Silence: keeps the stream alive between prompt end and ringback.
    Silence,
    /// Ringback frame `next` (loops).
    Ringback { next: usize },
    /// The operator's audio, relayed as it arrives.
    Relay,
}

/// Starts the media task for a call; returns the command sender.
pub fn spawn(
    caller: CallerLeg,
    ringback: Arc<ToneFrames>,
    events: mpsc::UnboundedSender<MediaEvent>,
) -> mpsc::UnboundedSender<MediaCommand> {
    let (tx, rx) = mpsc::unbounded_channel();
    let session = MediaSession {
        caller,
        operator: None,
        ringback,
        events,
        to_caller: OutboundStream::new(),
        to_operator: OutboundStream::new(),
        pacer: Pacer::new(Instant::now().into_std()),
        source: Source::Idle,
        dtmf: DtmfDetector::default(),
        latched: false,
        stats: MediaStats::default(),
    };
    tokio::spawn(session.run(rx));
    tx
}

/// State of one call's media task.
struct MediaSession {
    /// Caller socket and negotiated format.
    caller: CallerLeg,
    /// Operator socket and format, once bridged.
    operator: Option<OperatorLeg>,
    /// Shared pre-encoded ringback cadence.
    ringback: Arc<ToneFrames>,
    /// Where events for the call task go.
    events: mpsc::UnboundedSender<MediaEvent>,
    /// The one stream the caller hears.
    to_caller: OutboundStream,
    /// The stream the operator hears (the caller's voice).
    to_operator: OutboundStream,
    /// Slot clock of `to_caller`, started with the first prompt packet.
    pacer: Pacer,
    /// What feeds `to_caller`.
    source: Source,
    /// Turns repeated RFC 4733 packets into single key presses.
    dtmf: DtmfDetector,
    /// Whether `caller.remote` was re-pointed at the caller's actual RTP source (symmetric RTP).
    latched: bool,
    /// Counters for the record.
    stats: MediaStats,
}

impl MediaSession {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<MediaCommand>) {
        let mut caller_buf = vec![0u8; MAX_PACKET];
        let mut operator_buf = vec![0u8; MAX_PACKET];
        let mut out = vec![0u8; MAX_PACKET];
        loop {
            let paced = !matches!(self.source, Source::Idle | Source::Relay);
            let deadline = Instant::from_std(self.pacer.deadline());
            tokio::select! {
                command = commands.recv() => match command {
                    Some(MediaCommand::Stop(reply)) => {
                        let _ = reply.send(self.stats);
                        return;
                    }
                    Some(command) => self.apply(command),
                    // The call task is gone: nothing left to serve.
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline), if paced => {
                    if let Err(e) = self.send_paced(&mut out).await {
                        self.fault(format!("sending RTP to the caller at {}: {e}", self.caller.remote));
                    }
                }
                received = self.caller.socket.recv_from(&mut caller_buf) => match received {
                    Ok((len, from)) => {
                        if let Err(e) = self.on_caller_packet(&caller_buf[..len], from, &mut out).await {
                            self.fault(format!("relaying RTP to the operator: {e}"));
                        }
                    }
                    Err(e) => self.fault(format!("receiving RTP from the caller: {e}")),
                },
                received = recv_operator(self.operator.as_ref(), &mut operator_buf) => match received {
                    Ok(len) => {
                        if let Err(e) = self.on_operator_packet(len, &operator_buf, &mut out).await {
                            self.fault(format!("relaying RTP to the caller at {}: {e}", self.caller.remote));
                        }
                    }
                    Err(e) => self.fault(format!("receiving RTP from the operator: {e}")),
                },
            }
        }
    }

    fn apply(&mut self, command: MediaCommand) {
        match command {
            MediaCommand::PlayPrompt(frames) => {
                // The stream's clock starts with the first prompt packet, so the
                // first packet leaves at once rather than on a later 20 ms tick.
                self.pacer = Pacer::new(Instant::now().into_std());
                self.to_caller.start_talkspurt();
                self.source = Source::Prompt { frames, next: 0 };
            }
            MediaCommand::PlayRingback => {
                self.to_caller.start_talkspurt();
                self.source = Source::Ringback { next: 0 };
            }
            MediaCommand::Bridge(operator) => {
                self.to_caller.start_talkspurt();
                self.to_operator.start_talkspurt();
                self.operator = Some(operator);
                self.source = Source::Relay;
            }
            // Handled by the loop.
            MediaCommand::Stop(_) => {}
        }
    }

    async fn send_paced(&mut self, out: &mut [u8]) -> std::io::Result<()> {
        let Some(slot) = self.pacer.take_due(Instant::now().into_std()) else {
            return Ok(());
        };
        let codec = self.caller.codec;
        let pt = codec.payload_type();
        let len = match &mut self.source {
            Source::Prompt { frames, next } => {
                let Some(frame) = frames.get(codec, *next) else {
                    // Unreachable in practice: we switch to silence after the last frame.
                    return Ok(());
                };
                let len = self.to_caller.write_paced(out, pt, slot, frame);
                *next += 1;
                self.stats.prompt_ms_sent += super::codec::FRAME_MS;
                if *next >= frames.frame_count() {
                    self.source = Source::Silence;
                    let _ = self.events.send(MediaEvent::PromptFinished);
                }
                len
            }
            Source::Ringback { next } => {
                let frame = self.ringback.frame(codec, *next);
                *next = (*next + 1) % self.ringback.frame_count().max(1);
                self.to_caller.write_paced(out, pt, slot, frame)
            }
            Source::Silence => {
                let silence = [codec.silence_byte(); super::codec::SAMPLES_PER_FRAME];
                self.to_caller.write_paced(out, pt, slot, &silence)
            }
            Source::Idle | Source::Relay => return Ok(()),
        };
        self.caller
            .socket
            .send_to(&out[..len], self.caller.remote)
            .await?;
        self.stats.packets_to_caller += 1;
        Ok(())
    }

    async fn on_caller_packet(
        &mut self,
        packet: &[u8],
        from: SocketAddr,
        out: &mut [u8],
    ) -> std::io::Result<()> {
        let Ok(rtp) = RtpReader::new(packet) else {
            // Not RTP (or RTCP multiplexed on the port): ignore.
            return Ok(());
        };
        self.stats.packets_from_caller += 1;
        if !self.latched {
            // Symmetric RTP (RFC 4961): answer where the caller really sends from,
            // which differs from its SDP behind NAT.
            self.latched = true;
            if from != self.caller.remote {
                tracing::debug!(sdp = %self.caller.remote, actual = %from, "caller RTP comes from another address; sending there");
                self.caller.remote = from;
            }
        }
        let pt = rtp.payload_type();
        if Some(pt) == self.caller.telephone_event {
            if let Some(digit) = self.dtmf.on_packet(rtp.timestamp(), rtp.payload()) {
                let _ = self.events.send(MediaEvent::Dtmf(digit));
            }
            return Ok(());
        }
        let Some(operator) = &self.operator else {
            return Ok(());
        };
        if Codec::from_payload_type(pt) != Some(self.caller.codec) {
            return Ok(());
        }
        let slot = self.pacer.slot_at(Instant::now().into_std());
        let payload = transcode(rtp.payload(), self.caller.codec, operator.codec);
        let len = self.to_operator.write_relayed(
            out,
            operator.codec.payload_type(),
            &rtp,
            slot,
            &payload,
        );
        operator
            .socket
            .send_to(&out[..len], operator.remote)
            .await?;
        Ok(())
    }

    async fn on_operator_packet(
        &mut self,
        len: usize,
        buf: &[u8],
        out: &mut [u8],
    ) -> std::io::Result<()> {
        let Some(operator) = &self.operator else {
            return Ok(());
        };
        let Ok(rtp) = RtpReader::new(&buf[..len]) else {
            return Ok(());
        };
        if Codec::from_payload_type(rtp.payload_type()) != Some(operator.codec) {
            return Ok(());
        }
        let slot = self.pacer.slot_at(Instant::now().into_std());
        let payload = transcode(rtp.payload(), operator.codec, self.caller.codec);
        let n = self.to_caller.write_relayed(
            out,
            self.caller.codec.payload_type(),
            &rtp,
            slot,
            &payload,
        );
        self.caller
            .socket
            .send_to(&out[..n], self.caller.remote)
            .await?;
        self.stats.packets_to_caller += 1;
        Ok(())
    }

    fn fault(&mut self, message: String) {
        tracing::warn!("{message}");
        let _ = self.events.send(MediaEvent::Fault(message));
        // Stop pacing and relaying; the call task will stop us.
        self.source = Source::Idle;
        self.operator = None;
    }
}

/// Converts a G.711 payload between laws; borrows when they are the same.
fn transcode(payload: &[u8], from: Codec, to: Codec) -> std::borrow::Cow<'_, [u8]> {
    if from == to {
        std::borrow::Cow::Borrowed(payload)
    } else {
        std::borrow::Cow::Owned(
            payload
                .iter()
                .map(|&b| to.transcode_from(from, b))
                .collect(),
        )
    }
}

/// Receives from the operator socket, or waits forever when there is none yet.
async fn recv_operator(operator: Option<&OperatorLeg>, buf: &mut [u8]) -> std::io::Result<usize> {
    match operator {
        Some(leg) => {
            let (len, _) = leg.socket.recv_from(buf).await?;
            Ok(len)
        }
        None => std::future::pending().await,
    }
}
