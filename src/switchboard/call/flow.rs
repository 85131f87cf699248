//! The call flow as a sans-IO state machine.
//!
//! `CallFlow` decides *what* happens to one call — answer, play the warning,
//! hunt for an operator, bridge, hang up, record — and nothing else: no
//! sockets, no clock, no tasks. The SIP adapter feeds it [`CallInput`]s with the
//! current time, executes the [`CallAction`]s it polls out, and wakes it at
//! [`CallFlow::poll_timeout`]. Tests drive it the same way on virtual time.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::report_keys::{KeyOutput, ReportKeys};
pub use crate::config::{ConnectMode, HuntStrategy};
use crate::contract::pb::{
    CallMilestone, CallRecord, EndReason, Milestone as WireMilestone, PlayedPrompt,
};

/// Facts about a call known when its INVITE is accepted; they never change.
#[derive(Debug, Clone, Default)]
pub struct CallFacts {
    /// courtline's own call id (UUID).
    pub call_id: String,
    /// The caller leg's SIP Call-ID.
    pub sip_call_id: String,
    /// Dialled line number.
    pub line_number: String,
    /// Court owning the line.
    pub court_name: String,
    /// Caller's number and display name from the From header.
    pub caller_number: String,
    /// Display name as sent (UTF-8; Chinese names are common).
    pub caller_display_name: String,
    /// Source address of the INVITE (the caller's, as a trusted proxy forwarded it).
    pub caller_source: String,
    /// The trusted proxy the INVITE came through (`ip:port`), or empty.
    pub proxy_source: String,
    /// Caller's User-Agent header.
    pub user_agent: String,
    /// Codec agreed with the caller ("PCMU"/"PCMA"; empty if none).
    pub codec: String,
    /// Configured id of the (first) prompt this line plays.
    pub prompt_id: String,
    /// SHA-256 of that prompt's file: which version of the warning the caller heard.
    pub prompt_sha256: String,
    /// Full playlist length including lead-in silence and gaps.
    pub prompt_length_ms: u32,
    /// Every prompt of the line's playlist in order (`ms_sent` is filled in at the end).
    pub prompts: Vec<PlayedPrompt>,
    /// The line's `failover_prompt`, played to an answered caller when nobody
    /// of the hunt list answers; added to the record's `prompts` when played.
    pub failover_prompt: Option<PlayedPrompt>,
    /// Operator URIs in hunt order; outside office hours the duty number(s),
    /// or none: the call ends after the after-hours playlist.
    pub operators: Vec<String>,
    /// The call came outside the line's office hours (the playlist is the after-hours one).
    pub after_hours: bool,
    /// How the hunt list is rung (`round_robin` is already in `operators`'
    /// order: the flow rings it like `sequential`).
    pub hunt: HuntStrategy,
    /// Whether the caller is bridged by courtline or transferred by REFER
    /// (only for an answered caller; early-media lines always bridge).
    pub connect: ConnectMode,
    /// How long each operator may ring, unless it has its own time below.
    pub ring_timeout: Duration,
    /// Ring timeouts of the targets configured with their own, by URI.
    pub target_ring_timeouts: HashMap<String, Duration>,
    /// How long to ring the caller before answering.
    pub answer_delay: Duration,
    /// The line plays the warning as early media (183 Session Progress) and
    /// answers the caller only when the operator answers, so the caller is not
    /// billed for the warning. Off for delayed-offer INVITEs (no SDP to answer
    /// in a 183 without PRACK).
    pub early_media: bool,
    /// Wall-clock time the INVITE arrived, Unix ms; other times are derived from it.
    pub received_at_ms: i64,
    /// Keys the bridged operator presses to ask for a report (`[reports]
    /// operator_keys`); empty: off, the operator's keys all pass at once.
    pub report_keys: String,
    /// How long a key that could start `report_keys` is held back (`[reports] key_timeout_ms`).
    pub report_key_timeout: Duration,
    /// A synthetic probe (its signed header checked): recorded as one, and
    /// `operators` is at most the `[probe] target`.
    pub probe: bool,
    /// The line's `whisper_history`: an operator who answers a caller with prior
    /// reports or flags hears [`CallAction::WhisperToOperator`] first.
    pub whisper_history: bool,
}

/// Where a call is. Transitions only go forward; `Ended` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// INVITE received; the caller hears ringing until the answer delay passes.
    Ringing,
    /// 200 OK sent; waiting for the caller's ACK before any audio.
    Answering,
    /// The warning is playing and cannot be skipped (as early media on an
    /// `early_media` line: the caller is not answered yet).
    Prompting,
    /// Calling operator number `target` of the hunt list; caller hears ringback
    /// (early media on an `early_media` line).
    DialingOperator {
        /// Index into the hunt list.
        target: usize,
    },
    /// Calling every operator of the hunt list at once (`simultaneous`); the
    /// first to answer is bridged, the others are cancelled.
    DialingAll,
    /// REFER sent to the caller's side (Refer-To: the first operator); waiting
    /// for its answer and the NOTIFYs of how the transfer goes.
    Transferring,
    /// A probe with nobody to dial heard the whole warning: ringback until
    /// the probe hangs up (at most the ring timeout).
    ProbeHeard,
    /// Nobody answered: the failover prompt plays, then courtline hangs up.
    Failover {
        /// Why the hunt failed: the call's end reason, however it ends now.
        reason: EndReason,
    },
    /// Caller and operator are talking through the relay.
    Bridged,
    /// Both legs are down; the record has been emitted.
    Ended,
}

impl Phase {
    /// Short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Ringing => "ringing",
            Phase::Answering => "answering",
            Phase::Prompting => "prompting",
            Phase::DialingOperator { .. } | Phase::DialingAll => "dialing_operator",
            Phase::Failover { .. } => "failover_prompt",
            Phase::ProbeHeard => "probe_heard",
            Phase::Transferring => "transferring",
            Phase::Bridged => "bridged",
            Phase::Ended => "ended",
        }
    }
}

impl OperatorFailure {
    /// The failure in the record's terms.
    fn reason(self) -> EndReason {
        match self {
            OperatorFailure::Status(486 | 600 | 603) => EndReason::OperatorBusy,
            OperatorFailure::Status(480) => EndReason::NoAnswer,
            OperatorFailure::Status(_)
            | OperatorFailure::Unreachable
            | OperatorFailure::Refused => EndReason::OperatorUnreachable,
        }
    }
}

/// How an operator attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorFailure {
    /// A final non-2xx response with this status.
    Status(u16),
    /// No response at all (transport error or transaction timeout), or the
    /// INVITE could not be sent (target marked down by OPTIONS, TCP refused).
    Unreachable,
    /// The transport says nobody is there (ICMP port or host unreachable)
    /// while the INVITE is still outstanding: the attempt is abandoned at
    /// once instead of ringing out the ring timeout.
    Refused,
}

/// What happened to one forked operator INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkEvent {
    /// Its phone rings (180/183).
    Ringing,
    /// It answered (2xx, ACK sent).
    Answered,
    /// It failed this way.
    Failed(OperatorFailure),
}

/// Where one forked operator INVITE stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fork {
    /// Sent, no final answer yet; given up at this time.
    Pending {
        /// Its ring timeout runs out.
        until: Instant,
    },
    /// It failed, or its ring timeout ran out.
    Failed,
    /// Another target answered first: CANCEL sent.
    Cancelled,
}

/// Something that happened to the call, reported by the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallInput {
    /// The caller ACKed our 200 OK: media may flow.
    CallerAcked,
    /// The codec was agreed late (delayed offer: from the ACK's SDP answer).
    CodecAgreed(String),
    /// No ACK came for our 200 OK within 64·T1; the SIP stack has sent BYE.
    CallerAckTimeout,
    /// The caller pressed a key (RFC 4733 until bridged, or SIP INFO);
    /// recorded during the prompt, never skips it; passed on once bridged.
    CallerDtmf(char),
    /// The bridged operator pressed a key: checked against the report
    /// sequence, then passed on to the caller or held back.
    OperatorDtmf {
        /// The key.
        digit: char,
        /// How it arrived.
        via: KeyVia,
    },
    /// BYE from the caller.
    CallerHungUp,
    /// CANCEL from the caller before we answered (the stack has sent 487).
    CallerCancelled,
    /// The media engine has sent the last prompt frame.
    PromptFinished,
    /// The operator's phone is ringing (180/183).
    OperatorRinging,
    /// The operator answered (2xx, ACK sent).
    OperatorAnswered,
    /// The current operator attempt failed.
    OperatorFailed(OperatorFailure),
    /// Something happened to one of the INVITEs forked to every target (`simultaneous`).
    ForkedOperator {
        /// Index into the hunt list.
        target: usize,
        /// What happened.
        event: ForkEvent,
    },
    /// BYE from the operator.
    OperatorHungUp,
    /// The status of the final response to our REFER (408 when none came or
    /// it could not be sent).
    ReferAnswered(u16),
    /// A NOTIFY of the REFER's subscription: the status line of its sipfrag
    /// (how the caller's side's INVITE to the operator is going, RFC 3515).
    TransferProgress(u16),
    /// Something broke locally (socket, SDP from the operator, ...); the call cannot go on.
    Fault(String),
    /// The switchboard is shutting down now (a second SIGTERM, or the drain timed out).
    Shutdown,
    /// The caller's session timer ran out unrefreshed (RFC 4028): the far end is gone.
    SessionExpired,
    /// No RTP or RTCP from the caller for `[media] rtp_timeout_s` since the
    /// bridge: the line died without a BYE.
    CallerMediaTimeout,
    /// The caller's history lookup (started at admission) answered: it goes
    /// into the record, and decides the whisper if it came before the operator
    /// answered (a later answer is recorded, not whispered: the bridge never waits).
    CallerHistory {
        /// Earlier reports on calls from this number.
        prior_reports: u32,
        /// Earlier flags on calls from this number.
        prior_flags: u32,
    },
}

/// How an operator's key arrived; recorded with a report request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyVia {
    /// RFC 4733 telephone-event packets in the operator's RTP.
    Rfc4733,
    /// A SIP INFO request (`application/dtmf-relay` or `application/dtmf`).
    SipInfo,
}

impl KeyVia {
    /// The name in `CallMilestone.report_via`.
    pub fn name(self) -> &'static str {
        match self {
            KeyVia::Rfc4733 => "rfc4733",
            KeyVia::SipInfo => "sip_info",
        }
    }
}

/// One of the two people on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// Whoever dialled the court's line.
    Caller,
    /// The court's operator.
    Operator,
}

/// A point in a call worth a durable event: the records spool (issue #5) keeps
/// one per milestone so a call cut short still shows how far it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Milestone {
    /// The INVITE was admitted.
    Received,
    /// 200 OK sent.
    Answered,
    /// First prompt packet is going out (ACK received).
    PromptStarted,
    /// The whole prompt was sent.
    PromptFinished,
    /// The call ended while the prompt was still playing.
    PromptInterrupted,
    /// An INVITE went to this operator.
    OperatorDialed {
        /// The operator's URI.
        uri: String,
    },
    /// The operator's phone rings.
    OperatorRinging,
    /// The operator answered.
    OperatorAnswered,
    /// The operator attempt failed this way (busy, no answer, unreachable).
    OperatorFailed {
        /// Why, in the record's terms.
        reason: EndReason,
    },
    /// One of several forked operators rings (`simultaneous`).
    ForkRinging {
        /// That operator's URI.
        uri: String,
    },
    /// One of several forked operators answered first and gets the call.
    ForkAnswered {
        /// That operator's URI.
        uri: String,
    },
    /// One of several forked operators failed (busy, no answer, unreachable).
    ForkFailed {
        /// That operator's URI.
        uri: String,
        /// Why, in the record's terms.
        reason: EndReason,
    },
    /// One of several forked operators was cancelled: another answered first.
    ForkCancelled {
        /// That operator's URI.
        uri: String,
    },
    /// REFER sent to the caller's side, to this operator.
    TransferRequested {
        /// The Refer-To URI.
        uri: String,
    },
    /// The REFER was refused or the transfer failed: courtline bridges instead.
    TransferFailed {
        /// The Refer-To URI.
        uri: String,
        /// The REFER's response or the sipfrag's status (408: neither came in time).
        status: u16,
    },
    /// The bridged operator pressed the report key sequence: the records
    /// service opens a report on this call.
    ReportRequested {
        /// The operator's URI.
        operator: String,
        /// How the sequence's last key arrived.
        via: KeyVia,
    },
}

/// What the adapter must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum CallAction {
    /// Send 180 Ringing to the caller.
    RingCaller,
    /// Send 200 OK with our SDP answer to the caller.
    AnswerCaller,
    /// Send 183 Session Progress with the same SDP answer the 200 OK will
    /// carry: what follows (prompt, ringback) is early media.
    ProgressCaller,
    /// The caller is bridged and its dialog confirmed: from now on its
    /// silence (no RTP or RTCP for the configured time) is reported as
    /// `CallerMediaTimeout`. Not earlier: while courtline talks (the warning,
    /// the ringback) a phone that suppresses silence without comfort noise
    /// sends nothing, and the warning may outlast the timeout.
    WatchCallerMedia,
    /// Start sending the prompt frames to the caller.
    StartPrompt,
    /// Send ringback tone to the caller (continuing the same RTP stream).
    StartRingback,
    /// Play the line's failover prompt to the caller (the end of it comes as
    /// `PromptFinished`).
    PlayFailover,
    /// Send REFER to the caller (Refer-To: `uri`); its final response comes
    /// back as `ReferAnswered`, its NOTIFYs as `TransferProgress`.
    ReferCaller {
        /// The operator the caller's side should call.
        uri: String,
    },
    /// INVITE this operator URI (B2BUA second leg).
    DialOperator {
        /// Target from the hunt list.
        uri: String,
    },
    /// Abandon the ringing operator leg (CANCEL; BYE if its 200 crosses),
    /// or every forked one still ringing.
    CancelOperator,
    /// INVITE this operator URI as one of several at once (`simultaneous`).
    ForkOperator {
        /// Index into the hunt list: forked events name it.
        target: usize,
        /// Target from the hunt list.
        uri: String,
    },
    /// Abandon this forked INVITE (CANCEL; ACK and BYE if its 2xx crosses).
    CancelFork {
        /// Index into the hunt list.
        target: usize,
    },
    /// This fork answered first: its dialog and media are the call's operator
    /// leg from now on (`Bridge`, `HangUpOperator` act on it).
    AdoptFork {
        /// Index into the hunt list.
        target: usize,
    },
    /// BYE the connected operator leg.
    HangUpOperator,
    /// Relay audio both ways between caller and operator.
    Bridge,
    /// Play a key (that arrived by SIP INFO) to a party as RFC 4733 packets.
    SendDtmf {
        /// Who hears it.
        to: Party,
        /// The key.
        digit: char,
    },
    /// Let the operator hear the report confirmation tone (the caller hears nothing of it).
    ConfirmReportToOperator,
    /// Let the operator who just answered hear that the caller has prior
    /// reports or flags (the caller hears nothing of it); follows `Bridge`.
    WhisperToOperator,
    /// BYE the caller.
    HangUpCaller,
    /// Refuse the still unanswered INVITE with this final status.
    RejectCaller {
        /// SIP status code.
        status: u16,
    },
    /// Make this milestone durable (with [`CallFlow::record`] as it is now).
    Milestone(Milestone),
    /// Stop all media, release ports, and store this record (times and SIP facts
    /// filled in; the adapter adds the media counters).
    Finish(Box<CallRecord>),
}

/// One call's decisions. See the module docs.
#[derive(Debug)]
pub struct CallFlow {
    /// Static facts copied into the record.
    facts: CallFacts,
    /// Current phase.
    phase: Phase,
    /// Actions not yet taken by the adapter, in order.
    actions: VecDeque<CallAction>,
    /// Monotonic time of the INVITE, the origin for the record's wall-clock times.
    started: Instant,
    /// Pending timer: answer delay in `Ringing`, ring timeout in `DialingOperator`.
    deadline: Option<Instant>,
    /// Whether the caller got our 200 OK (early media calls get it only when
    /// the operator answers): decides between a final response and a BYE.
    caller_answered: bool,
    /// The record being filled in as the call progresses.
    record: CallRecord,
    /// The operator's keys on their way to the caller, minus the report sequence.
    report_keys: ReportKeys,
    /// Each target's forked INVITE in `DialingAll`, by hunt list index.
    forks: Vec<Fork>,
}

impl CallFlow {
    /// The call's static facts, as given to [`CallFlow::new`]: the session
    /// reads them here rather than keep a copy of its own for the call's life.
    pub fn facts(&self) -> &CallFacts {
        &self.facts
    }

    /// A new call whose INVITE arrived at `now`.
    pub fn new(facts: CallFacts, now: Instant) -> CallFlow {
        let record = CallRecord {
            call_id: facts.call_id.clone(),
            sip_call_id: facts.sip_call_id.clone(),
            line_number: facts.line_number.clone(),
            court_name: facts.court_name.clone(),
            caller_number: facts.caller_number.clone(),
            caller_display_name: facts.caller_display_name.clone(),
            caller_source: facts.caller_source.clone(),
            proxy_source: facts.proxy_source.clone(),
            user_agent: facts.user_agent.clone(),
            codec: facts.codec.clone(),
            received_at_ms: facts.received_at_ms,
            prompt_id: facts.prompt_id.clone(),
            prompt_sha256: facts.prompt_sha256.clone(),
            prompt_length_ms: facts.prompt_length_ms,
            prompts: facts.prompts.clone(),
            probe: facts.probe,
            ..CallRecord::default()
        };
        let report_keys = ReportKeys::new(&facts.report_keys, facts.report_key_timeout);
        let mut flow = CallFlow {
            report_keys,
            facts,
            phase: Phase::Ringing,
            actions: VecDeque::new(),
            started: now,
            deadline: None,
            caller_answered: false,
            record,
            forks: Vec::new(),
        };
        flow.actions
            .push_back(CallAction::Milestone(Milestone::Received));
        if flow.facts.answer_delay.is_zero() {
            flow.pick_up(now);
        } else {
            flow.actions.push_back(CallAction::RingCaller);
            flow.deadline = Some(now + flow.facts.answer_delay);
        }
        flow
    }

    /// The record for a call refused before it started (404, 488, 503, ...).
    pub fn rejected(facts: &CallFacts, status: u16) -> CallRecord {
        CallRecord {
            call_id: facts.call_id.clone(),
            sip_call_id: facts.sip_call_id.clone(),
            line_number: facts.line_number.clone(),
            court_name: facts.court_name.clone(),
            caller_number: facts.caller_number.clone(),
            caller_display_name: facts.caller_display_name.clone(),
            caller_source: facts.caller_source.clone(),
            proxy_source: facts.proxy_source.clone(),
            user_agent: facts.user_agent.clone(),
            received_at_ms: facts.received_at_ms,
            ended_at_ms: facts.received_at_ms,
            prompt_id: facts.prompt_id.clone(),
            prompt_sha256: facts.prompt_sha256.clone(),
            prompt_length_ms: facts.prompt_length_ms,
            prompts: facts.prompts.clone(),
            end_reason: EndReason::Rejected as i32,
            sip_final_status: u32::from(status),
            probe: facts.probe,
            ..CallRecord::default()
        }
    }

    /// The record as filled in so far.
    pub fn record(&self) -> &CallRecord {
        &self.record
    }

    /// Current phase, for logs and the adapter's routing.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The operator currently being called or connected, if any.
    pub fn current_operator(&self) -> Option<&str> {
        match self.phase {
            Phase::DialingOperator { target } => {
                self.facts.operators.get(target).map(String::as_str)
            }
            _ if !self.record.operator_uri.is_empty() => Some(&self.record.operator_uri),
            _ => None,
        }
    }

    /// Next action for the adapter, in order.
    pub fn poll_output(&mut self) -> Option<CallAction> {
        self.actions.pop_front()
    }

    /// Whether the next action is a milestone too: the adapter then queues this
    /// one for the spool without waiting, and waits once for the run.
    pub fn milestone_follows(&self) -> bool {
        matches!(self.actions.front(), Some(CallAction::Milestone(_)))
    }

    /// When the adapter must call [`CallFlow::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Keys are held only while bridged; the call's end drops them.
        let held_keys = match self.phase {
            Phase::Bridged => self.report_keys.poll_timeout(),
            _ => None,
        };
        self.deadline.into_iter().chain(held_keys).min()
    }

    /// Fires the pending timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Bridged {
            if let Some(KeyOutput::Pass(keys)) = self.report_keys.handle_timeout(now) {
                self.pass_to_caller(keys);
            }
        }
        match self.deadline {
            Some(deadline) if now >= deadline => self.deadline = None,
            _ => return,
        }
        match self.phase {
            Phase::Ringing => self.pick_up(now),
            Phase::DialingOperator { target } => {
                self.actions.push_back(CallAction::CancelOperator);
                self.operator_failed(target, EndReason::NoAnswer, now);
            }
            Phase::Transferring => self.transfer_failed(408, now),
            // The probe never hung up: it is gone.
            Phase::ProbeHeard => self.close_unconnected(EndReason::NoAnswer, now),
            Phase::DialingAll => {
                for target in 0..self.forks.len() {
                    if matches!(self.forks[target], Fork::Pending { until } if until <= now) {
                        self.actions.push_back(CallAction::CancelFork { target });
                        self.fork_failed(target, EndReason::NoAnswer, now);
                    }
                }
                if self.phase == Phase::DialingAll {
                    self.deadline = self.next_fork_deadline();
                }
            }
            _ => {}
        }
    }

    /// Feeds one event at time `now`.
    pub fn handle_input(&mut self, input: CallInput, now: Instant) {
        use CallInput::*;
        match (self.phase, input) {
            (Phase::Ended, _) => {}
            // A CANCEL that crossed our 200 OK changes nothing (the stack answered it 200).
            (_, CallerCancelled) if self.caller_answered => {}
            (
                _,
                CallerHistory {
                    prior_reports,
                    prior_flags,
                },
            ) => {
                self.record.prior_reports = prior_reports;
                self.record.prior_flags = prior_flags;
            }

            (Phase::Ringing | Phase::Answering, CallerCancelled) => {
                self.record.sip_final_status = 487;
                self.end(EndReason::CancelledBeforeAnswer, now);
            }
            (Phase::Ringing | Phase::Answering, CallerHungUp) => {
                self.end(EndReason::CallerHungUpDuringPrompt, now);
            }
            (Phase::Answering, CodecAgreed(codec)) => self.record.codec = codec,
            (Phase::Answering, CallerAckTimeout) => self.end(EndReason::NoAck, now),
            (Phase::Answering, CallerAcked) => self.start_prompt(now),
            (Phase::Prompting, CallerDtmf(digit)) => self.record.dtmf_during_prompt.push(digit),
            (Phase::Prompting, PromptFinished) => {
                self.record.prompt_ended_at_ms = self.wall_ms(now);
                self.record.prompt_completed = true;
                self.milestone(Milestone::PromptFinished);
                if self.facts.operators.is_empty() && self.facts.probe && !self.facts.after_hours {
                    // The probe has heard what it came for and hangs up itself.
                    self.phase = Phase::ProbeHeard;
                    self.deadline = Some(now + self.facts.ring_timeout);
                    self.actions.push_back(CallAction::StartRingback);
                } else if self.facts.operators.is_empty() {
                    // After hours without a duty number: the playlist said when to call.
                    self.close_unconnected(EndReason::AfterHours, now);
                } else {
                    self.actions.push_back(CallAction::StartRingback);
                    if self.facts.connect == ConnectMode::Refer && self.caller_answered {
                        self.refer(now);
                    } else {
                        self.hunt(now);
                    }
                }
            }
            // CANCEL comes only before our 200 OK: here, during early media
            // (the stack has answered it with 487).
            (Phase::Prompting, hangup @ (CallerHungUp | CallerCancelled)) => {
                if hangup == CallerCancelled {
                    self.record.sip_final_status = 487;
                }
                self.record.prompt_ended_at_ms = self.wall_ms(now);
                self.milestone(Milestone::PromptInterrupted);
                self.end(EndReason::CallerHungUpDuringPrompt, now);
            }

            (Phase::DialingOperator { .. }, OperatorRinging) => {
                self.milestone(Milestone::OperatorRinging)
            }
            (Phase::DialingOperator { .. }, OperatorAnswered) => {
                self.connect(Milestone::OperatorAnswered, now)
            }
            (Phase::DialingOperator { target }, OperatorFailed(failure)) => {
                self.deadline = None;
                if failure == OperatorFailure::Refused {
                    // The INVITE transaction still runs: end it before the next target.
                    self.actions.push_back(CallAction::CancelOperator);
                }
                self.operator_failed(target, failure.reason(), now);
            }
            (Phase::DialingAll, ForkedOperator { target, event }) => {
                self.fork_event(target, event, now)
            }
            (
                Phase::DialingOperator { .. } | Phase::DialingAll,
                hangup @ (CallerHungUp | CallerCancelled),
            ) => {
                if hangup == CallerCancelled {
                    self.record.sip_final_status = 487;
                }
                self.actions.push_back(CallAction::CancelOperator);
                self.end(EndReason::CallerHungUp, now);
            }

            (Phase::Transferring, ReferAnswered(status)) if !(200..300).contains(&status) => {
                self.transfer_failed(status, now)
            }
            (Phase::Transferring, TransferProgress(status)) if (200..300).contains(&status) => {
                // The caller's side reached the operator: courtline leaves the call.
                self.record.operator_answered_at_ms = self.wall_ms(now);
                self.actions.push_back(CallAction::HangUpCaller);
                self.end(EndReason::Transferred, now);
            }
            (Phase::Transferring, TransferProgress(status)) if status >= 300 => {
                self.transfer_failed(status, now)
            }
            (Phase::Transferring, CallerHungUp) => self.end(EndReason::CallerHungUp, now),

            (Phase::ProbeHeard, hangup @ (CallerHungUp | CallerCancelled)) => {
                if hangup == CallerCancelled {
                    self.record.sip_final_status = 487;
                }
                self.end(EndReason::CallerHungUp, now);
            }

            (Phase::Failover { reason }, PromptFinished) => {
                // Said politely, then the BYE.
                self.actions.push_back(CallAction::HangUpCaller);
                self.end(reason, now);
            }
            (Phase::Failover { reason }, CallerHungUp) => self.end(reason, now),

            // Early media: the ACK to the 200 OK sent when the operator answered.
            (Phase::Bridged, CallerAcked) => self.actions.push_back(CallAction::WatchCallerMedia),
            (Phase::Bridged, CallerAckTimeout) => {
                self.actions.push_back(CallAction::HangUpOperator);
                self.end(EndReason::NoAck, now);
            }

            (Phase::Bridged, CallerHungUp) => {
                self.actions.push_back(CallAction::HangUpOperator);
                self.end(EndReason::CallerHungUp, now);
            }
            // SIP INFO keys in the bridge are passed on in the other leg's RTP.
            (Phase::Bridged, CallerDtmf(digit)) => self.actions.push_back(CallAction::SendDtmf {
                to: Party::Operator,
                digit,
            }),
            // The operator's keys reach the caller unless they are the report sequence.
            (Phase::Bridged, OperatorDtmf { digit, via }) => {
                let output = self.report_keys.handle_key(digit, now);
                self.operator_keys(output, via);
            }
            (Phase::Bridged, OperatorHungUp) => {
                self.actions.push_back(CallAction::HangUpCaller);
                self.end(EndReason::OperatorHungUp, now);
            }

            (phase, SessionExpired) => self.abort(phase, EndReason::SessionExpired, now),
            // Media is watched only once bridged, so this cannot arrive earlier.
            (Phase::Bridged, CallerMediaTimeout) => {
                self.abort(Phase::Bridged, EndReason::MediaTimeout, now)
            }
            (phase, Fault(_)) => self.abort(phase, EndReason::Error, now),
            (phase, Shutdown) => self.abort(phase, EndReason::Shutdown, now),

            // Everything else is stale or out of order (a late 180, DTMF after the
            // prompt, a second ACK) and changes nothing.
            _ => {}
        }
    }

    /// Ends the call from any phase, hanging up whatever is up.
    fn abort(&mut self, phase: Phase, reason: EndReason, now: Instant) {
        match phase {
            Phase::DialingOperator { .. } | Phase::DialingAll => {
                self.actions.push_back(CallAction::CancelOperator)
            }
            Phase::Bridged => self.actions.push_back(CallAction::HangUpOperator),
            _ => {}
        }
        if !self.caller_answered {
            // Not answered yet: the INVITE still needs a final response.
            self.record.sip_final_status = 500;
            self.actions
                .push_back(CallAction::RejectCaller { status: 500 });
        } else {
            self.actions.push_back(CallAction::HangUpCaller);
        }
        if phase == Phase::Prompting {
            self.record.prompt_ended_at_ms = self.wall_ms(now);
            self.milestone(Milestone::PromptInterrupted);
        }
        self.end(reason, now);
    }

    /// The end of the answer delay: answer (the warning starts after the
    /// ACK), or on an early-media line send 183 and start the warning at once.
    fn pick_up(&mut self, now: Instant) {
        if self.facts.early_media {
            self.actions.push_back(CallAction::ProgressCaller);
            self.start_prompt(now);
        } else {
            self.phase = Phase::Answering;
            self.answer(now);
        }
    }

    fn start_prompt(&mut self, now: Instant) {
        self.phase = Phase::Prompting;
        self.record.prompt_started_at_ms = self.wall_ms(now);
        self.milestone(Milestone::PromptStarted);
        self.actions.push_back(CallAction::StartPrompt);
    }

    fn answer(&mut self, now: Instant) {
        self.caller_answered = true;
        self.record.answered_at_ms = self.wall_ms(now);
        self.record.sip_final_status = 200;
        self.milestone(Milestone::Answered);
        self.actions.push_back(CallAction::AnswerCaller);
    }

    /// Ends a call that has no one (more) to dial, for `reason`: a BYE to an
    /// answered caller, 480 (Temporarily Unavailable) to an early-media one.
    fn close_unconnected(&mut self, reason: EndReason, now: Instant) {
        if self.caller_answered {
            self.actions.push_back(CallAction::HangUpCaller);
        } else {
            self.record.sip_final_status = 480;
            self.actions
                .push_back(CallAction::RejectCaller { status: 480 });
        }
        self.end(reason, now);
    }

    fn dial(&mut self, target: usize, now: Instant) {
        let Some(uri) = self.facts.operators.get(target).cloned() else {
            return;
        };
        self.phase = Phase::DialingOperator { target };
        self.record.operator_uri = uri.clone();
        self.deadline = Some(now + self.ring_timeout_of(&uri));
        self.milestone(Milestone::OperatorDialed { uri: uri.clone() });
        self.actions.push_back(CallAction::DialOperator { uri });
    }

    /// Starts ringing the hunt list the line's way.
    fn hunt(&mut self, now: Instant) {
        if self.facts.hunt == HuntStrategy::Simultaneous {
            self.fork_all(now);
        } else {
            self.dial(0, now);
        }
    }

    /// Asks the caller's side to call the first operator itself (REFER); it
    /// has that operator's ring timeout to report success.
    fn refer(&mut self, now: Instant) {
        let uri = self.facts.operators[0].clone();
        self.phase = Phase::Transferring;
        self.record.operator_uri = uri.clone();
        self.deadline = Some(now + self.ring_timeout_of(&uri));
        self.milestone(Milestone::TransferRequested { uri: uri.clone() });
        self.actions.push_back(CallAction::ReferCaller { uri });
    }

    /// The transfer did not happen: recorded, then courtline hunts and bridges itself.
    fn transfer_failed(&mut self, status: u16, now: Instant) {
        let uri = self.record.operator_uri.clone();
        self.milestone(Milestone::TransferFailed { uri, status });
        self.hunt(now);
    }

    /// Rings every target at once (`simultaneous`), each for its own ring timeout.
    fn fork_all(&mut self, now: Instant) {
        self.phase = Phase::DialingAll;
        let operators = self.facts.operators.clone();
        self.forks = operators
            .iter()
            .map(|uri| Fork::Pending {
                until: now + self.ring_timeout_of(uri),
            })
            .collect();
        self.deadline = self.next_fork_deadline();
        for (target, uri) in operators.into_iter().enumerate() {
            self.milestone(Milestone::OperatorDialed { uri: uri.clone() });
            self.actions
                .push_back(CallAction::ForkOperator { target, uri });
        }
    }

    /// The earliest ring timeout of the forks still pending.
    fn next_fork_deadline(&self) -> Option<Instant> {
        self.forks
            .iter()
            .filter_map(|fork| match fork {
                Fork::Pending { until } => Some(*until),
                Fork::Failed | Fork::Cancelled => None,
            })
            .min()
    }

    /// One forked INVITE's news; a fork no longer pending (cancelled, timed
    /// out) changes nothing: the adapter ends a late answer from it itself.
    fn fork_event(&mut self, target: usize, event: ForkEvent, now: Instant) {
        if !matches!(self.forks.get(target), Some(Fork::Pending { .. })) {
            return;
        }
        let uri = self.facts.operators[target].clone();
        match event {
            ForkEvent::Ringing => self.milestone(Milestone::ForkRinging { uri }),
            ForkEvent::Answered => {
                for (other, fork) in self.forks.iter_mut().enumerate() {
                    if other != target && matches!(fork, Fork::Pending { .. }) {
                        *fork = Fork::Cancelled;
                        self.actions
                            .push_back(CallAction::CancelFork { target: other });
                        let uri = self.facts.operators[other].clone();
                        self.actions
                            .push_back(CallAction::Milestone(Milestone::ForkCancelled { uri }));
                    }
                }
                self.record.operator_uri = uri.clone();
                self.actions.push_back(CallAction::AdoptFork { target });
                self.connect(Milestone::ForkAnswered { uri }, now);
            }
            ForkEvent::Failed(failure) => {
                if failure == OperatorFailure::Refused {
                    // The INVITE transaction still runs: end it.
                    self.actions.push_back(CallAction::CancelFork { target });
                }
                self.fork_failed(target, failure.reason(), now);
                if self.phase == Phase::DialingAll {
                    self.deadline = self.next_fork_deadline();
                }
            }
        }
    }

    /// Records a fork's failure; when it was the last one pending the hunt has
    /// failed, for the reason this one did.
    fn fork_failed(&mut self, target: usize, reason: EndReason, now: Instant) {
        self.forks[target] = Fork::Failed;
        let uri = self.facts.operators[target].clone();
        self.milestone(Milestone::ForkFailed {
            uri: uri.clone(),
            reason,
        });
        if self.next_fork_deadline().is_none() {
            self.record.operator_uri = uri;
            self.hunt_failed(reason, now);
        }
    }

    /// The operator answered: bridge, record `answered`, and on an early-media
    /// line answer the caller now.
    fn connect(&mut self, answered: Milestone, now: Instant) {
        self.phase = Phase::Bridged;
        self.deadline = None;
        self.record.operator_answered_at_ms = self.wall_ms(now);
        // The bridge before the milestone: the call task waits for each
        // milestone to reach the spool's disk, and until the bridge is up
        // the caller's first words are dropped (the operator's wait in its
        // socket), for as long as an fsync takes on a busy disk.
        self.actions.push_back(CallAction::Bridge);
        if self.facts.whisper_history
            && (self.record.prior_reports > 0 || self.record.prior_flags > 0)
        {
            // Right after the bridge, so the bridge waits for nothing: the whisper
            // holds the caller's audio toward the operator back while it plays.
            self.actions.push_back(CallAction::WhisperToOperator);
        }
        if self.caller_answered {
            self.actions.push_back(CallAction::WatchCallerMedia);
        }
        self.milestone(answered);
        if !self.caller_answered {
            // Early media: the caller is answered only now, with the
            // SDP its 183 already carried (its media is watched from the ACK).
            self.answer(now);
        }
    }

    /// How long `uri` may ring: its own time if configured, else the line's.
    fn ring_timeout_of(&self, uri: &str) -> Duration {
        self.facts
            .target_ring_timeouts
            .get(uri)
            .copied()
            .unwrap_or(self.facts.ring_timeout)
    }

    /// Records the failed attempt, then tries the next operator in the hunt
    /// list; when none is left, the call ends for the reason the last one failed.
    fn operator_failed(&mut self, failed: usize, reason: EndReason, now: Instant) {
        self.milestone(Milestone::OperatorFailed { reason });
        if failed + 1 < self.facts.operators.len() {
            self.dial(failed + 1, now);
        } else {
            self.hunt_failed(reason, now);
        }
    }

    /// Nobody of the hunt list can be had: the call ends for `reason`.
    fn hunt_failed(&mut self, reason: EndReason, now: Instant) {
        if let (true, Some(failover)) = (self.caller_answered, &self.facts.failover_prompt) {
            self.phase = Phase::Failover { reason };
            self.deadline = None;
            self.record.prompts.push(failover.clone());
            self.actions.push_back(CallAction::PlayFailover);
        } else if self.caller_answered {
            self.actions.push_back(CallAction::HangUpCaller);
            self.end(reason, now);
        } else {
            // Early media: the unanswered INVITE fails the way the operator did.
            let status = if reason == EndReason::OperatorBusy {
                486
            } else {
                480
            };
            self.record.sip_final_status = u32::from(status);
            self.actions.push_back(CallAction::RejectCaller { status });
            self.end(reason, now);
        }
    }

    /// Carries out what the report key matcher decided: keys on to the
    /// caller, or (on the sequence, its last key having come `via`) the
    /// confirmation tone and the report request.
    fn operator_keys(&mut self, output: Option<KeyOutput>, via: KeyVia) {
        match output {
            Some(KeyOutput::Pass(keys)) => self.pass_to_caller(keys),
            Some(KeyOutput::Matched) => {
                // The beeps say "recorded": they follow the milestone onto the spool's disk.
                self.milestone(Milestone::ReportRequested {
                    operator: self.record.operator_uri.clone(),
                    via,
                });
                self.actions.push_back(CallAction::ConfirmReportToOperator);
            }
            None => {}
        }
    }

    /// The operator's keys that are not the report sequence, on to the caller in order.
    fn pass_to_caller(&mut self, keys: Vec<char>) {
        for digit in keys {
            self.actions.push_back(CallAction::SendDtmf {
                to: Party::Caller,
                digit,
            });
        }
    }

    fn milestone(&mut self, milestone: Milestone) {
        self.actions.push_back(CallAction::Milestone(milestone));
    }

    fn end(&mut self, reason: EndReason, now: Instant) {
        self.phase = Phase::Ended;
        self.deadline = None;
        self.record.end_reason = reason as i32;
        self.record.ended_at_ms = self.wall_ms(now);
        self.actions
            .push_back(CallAction::Finish(Box::new(self.record.clone())));
    }

    fn wall_ms(&self, now: Instant) -> i64 {
        let elapsed = now.saturating_duration_since(self.started).as_millis();
        self.facts.received_at_ms + i64::try_from(elapsed).unwrap_or(i64::MAX)
    }
}

impl Milestone {
    /// The wire form of this milestone, with the record so far as its snapshot.
    pub fn to_wire(&self, snapshot: &CallRecord) -> CallMilestone {
        let (kind, operator_uri, operator_failure) = match self {
            Milestone::Received => (WireMilestone::Received, "", EndReason::Unspecified),
            Milestone::Answered => (WireMilestone::Answered, "", EndReason::Unspecified),
            Milestone::PromptStarted => (WireMilestone::PromptStarted, "", EndReason::Unspecified),
            Milestone::PromptFinished => {
                (WireMilestone::PromptFinished, "", EndReason::Unspecified)
            }
            Milestone::PromptInterrupted => {
                (WireMilestone::PromptInterrupted, "", EndReason::Unspecified)
            }
            Milestone::OperatorDialed { uri } => (
                WireMilestone::OperatorDialed,
                uri.as_str(),
                EndReason::Unspecified,
            ),
            Milestone::OperatorRinging => {
                (WireMilestone::OperatorRinging, "", EndReason::Unspecified)
            }
            Milestone::OperatorAnswered => {
                (WireMilestone::OperatorAnswered, "", EndReason::Unspecified)
            }
            Milestone::OperatorFailed { reason } => (WireMilestone::OperatorFailed, "", *reason),
            Milestone::ForkRinging { uri } => (
                WireMilestone::OperatorRinging,
                uri.as_str(),
                EndReason::Unspecified,
            ),
            Milestone::ForkAnswered { uri } => (
                WireMilestone::OperatorAnswered,
                uri.as_str(),
                EndReason::Unspecified,
            ),
            Milestone::ForkFailed { uri, reason } => {
                (WireMilestone::OperatorFailed, uri.as_str(), *reason)
            }
            Milestone::ForkCancelled { uri } => (
                WireMilestone::OperatorCancelled,
                uri.as_str(),
                EndReason::Unspecified,
            ),
            Milestone::TransferRequested { uri } => (
                WireMilestone::TransferRequested,
                uri.as_str(),
                EndReason::Unspecified,
            ),
            Milestone::TransferFailed { uri, .. } => (
                WireMilestone::TransferFailed,
                uri.as_str(),
                EndReason::Unspecified,
            ),
            Milestone::ReportRequested { operator, .. } => (
                WireMilestone::ReportRequested,
                operator.as_str(),
                EndReason::Unspecified,
            ),
        };
        let report_via = match self {
            Milestone::ReportRequested { via, .. } => via.name(),
            _ => "",
        };
        CallMilestone {
            milestone: kind as i32,
            operator_uri: operator_uri.to_owned(),
            operator_failure: operator_failure as i32,
            snapshot: Some(snapshot.clone()),
            report_via: report_via.to_owned(),
            sip_status: match self {
                Milestone::TransferFailed { status, .. } => u32::from(*status),
                _ => 0,
            },
        }
    }
}
