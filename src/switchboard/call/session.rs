//! The task that runs one call: it feeds SIP dialog events, media events and
//! timers into the [`CallFlow`] and carries out what the flow decides, on
//! rsipstack dialogs and the call's [`media::session`](crate::switchboard::media::session).
//! All decisions live in the flow; this file only translates.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::switchboard::media::ports::RtpSocket;
use futures::channel::mpsc;
use futures::StreamExt;
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{DialogState, TerminatedReason};
use rsipstack::dialog::invitation::{InviteAsyncResult, InviteOption};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::dialog::DialogId;
use rsipstack::sip::{StatusCode, StatusCodeKind, Transport};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::SipAddr;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::flow::{
    CallAction, CallFacts, CallFlow, CallInput, ForkEvent, KeyVia, OperatorFailure, Party, Phase,
};
use super::reoffer;
use crate::config::{Config, RecordAudio};
use crate::contract::pb::{
    CallRecord, CallerHistoryResponse, EndReason, LegMedia, RecordingFinished,
};
use crate::switchboard::context::{CallSlot, Shared};
use crate::switchboard::media::codec::Codec;
use crate::switchboard::media::dtmf::TelephoneEvent;
use crate::switchboard::media::prompt::Playlist;
use crate::switchboard::media::recording::RecordingOutcome;
use crate::switchboard::media::session::{
    self as media, CallerLeg, EventPayloadTypes, LegStats, MediaCommand, MediaCommands, MediaEvent,
    MediaStats, OperatorLeg, Side,
};
use crate::switchboard::media::tone::OperatorTone;
use crate::switchboard::sdp::{
    codecs_for, Direction, LocalMedia, Negotiated, RemoteMedia, OFFERED_TELEPHONE_EVENT,
};
use crate::switchboard::sip::dialog_states::CallDialogStates;
use crate::switchboard::sip::invite_outcome::InviteOutcome;
use crate::switchboard::sip::leg::{header, local_ip_toward, sdp_content_type};
use crate::switchboard::sip::qualify;
use crate::switchboard::sip::session_timer::{SessionTimer, TimerDue};
use crate::switchboard::sip::ALLOW;

/// What admission found out about a call it accepted.
pub(crate) struct CallSetup {
    /// Switchboard-wide state.
    pub shared: Arc<Shared>,
    /// The configuration in force when the call was admitted, kept to its end.
    pub config: Arc<Config>,
    /// Static facts for the record.
    pub facts: CallFacts,
    /// The line's prompts, lead-in and gaps.
    pub playlist: Arc<Playlist>,
    /// The line's failover prompt (nobody answered), if it has one.
    pub failover: Option<Arc<Playlist>>,
    /// The caller's SDP offer and what we agreed, or None for a delayed offer
    /// (no SDP in the INVITE: we offer in the 200 OK, the ACK answers).
    pub offer: Option<(RemoteMedia, Negotiated)>,
    /// The caller's RFC 4028 session timer and the headers announcing it in the 200 OK.
    pub session_timer: Option<(SessionTimer, Vec<rsipstack::sip::Header>)>,
    /// Our RTP socket for the caller.
    pub rtp_socket: RtpSocket,
    /// Address to advertise to the caller.
    pub local_ip: IpAddr,
    /// This call's share of `max_calls`.
    pub slot: CallSlot,
    /// When the INVITE arrived.
    pub received: Instant,
}

/// Creates the caller's dialog for `tx` and starts the call task.
pub(crate) fn start(setup: CallSetup, mut tx: Transaction) {
    let layer = setup.shared.dialog_layer.clone();
    let states = setup.shared.dialog_states.open(&setup.facts.sip_call_id);
    // Contact on the transport the INVITE came in on, so in-dialog requests come back the same way.
    let transport = tx
        .connection
        .as_ref()
        .map(|c| c.transport())
        .unwrap_or(Transport::Udp);
    let contact = contact_uri(&setup.shared, setup.local_ip, transport);
    let invites = &setup.shared.caller_invites;
    let (dialog, running) = match invites.dialog(&layer, &mut tx, states.sender(), contact) {
        Ok(created) => created,
        Err(e) => {
            warn!(call_id = %setup.facts.call_id, error = %e, "could not create dialog: 500");
            setup
                .shared
                .record_ended(CallFlow::rejected(&setup.facts, 500));
            tokio::spawn(async move {
                let _ = tx.reply(StatusCode::ServerInternalError).await;
            });
            return;
        }
    };
    let mut handler = dialog.clone();
    // Drives the INVITE server transaction: 100 Trying, then ACK or CANCEL.
    tokio::spawn(async move {
        if let Err(e) = handler.handle(&mut tx).await {
            debug!(error = %e, "caller INVITE transaction ended with an error");
        }
        running.ended(tx, &handler);
    });
    // Boxed: a task's future keeps its arguments for its whole life (#16).
    tokio::spawn(run(Box::new(setup), dialog, states));
}

/// What a request the call task sent the caller on the side came back with.
enum SideAnswer {
    /// Our session refresh (re-INVITE): whether it succeeded.
    Refresh(bool),
    /// The status of the final response to our REFER (connect = "refer").
    Refer(u16),
}

/// The operator attempt in progress.
struct OperatorAttempt {
    /// The client INVITE dialog.
    dialog: InviteDialog,
    /// The Call-ID of this attempt; tells its dialog events from the caller's and stale ones.
    call_id: String,
    /// Resolves with the final response; taken once it has.
    outcome: Option<InviteOutcome>,
    /// Our session description on this leg (re-offers bump its version).
    sdp: LocalMedia,
    /// Over UDP, until the operator answers anything: the kernel's word that
    /// nobody listens there ([`qualify::udp_refusal`]).
    refusal: Option<Refusal>,
}

/// One of the operator INVITEs forked at once (`hunt = "simultaneous"`):
/// each has its own RTP socket, and its answer's media is kept apart until
/// the flow makes it the call's operator leg.
struct ForkedAttempt {
    /// The INVITE in progress.
    attempt: OperatorAttempt,
    /// Our RTP socket offered to this target.
    socket: Option<RtpSocket>,
    /// Where and in which codec it sends, once it answered.
    media: Option<(std::net::SocketAddr, Codec)>,
    /// Its telephone-event numbers, if its answer kept telephone-event.
    keys: Option<EventPayloadTypes>,
}

/// A pending [`qualify::udp_refusal`].
type Refusal = Pin<Box<dyn Future<Output = Option<std::io::Error>> + Send>>;

/// How long a UDP operator may stay silent before it is probed: one on the
/// LAN has sent 100 Trying or 180 by then, and a live one is not bothered.
const PROBE_SILENT_OPERATOR_AFTER: Duration = Duration::from_millis(100);

/// The per-call task.
///
/// Its future lives as long as the call, sized by its largest await point, so
/// the awaits taken once or rarely (dialling, milestones on disk, dialog
/// events) are boxed: the future stays a few KiB through the warning (#16).
async fn run(setup: Box<CallSetup>, caller: InviteDialog, mut states: CallDialogStates) {
    let CallSetup {
        shared,
        config,
        facts,
        playlist,
        failover,
        offer,
        session_timer,
        rtp_socket,
        local_ip,
        slot,
        received,
    } = *setup;
    let (mut session_timer, timer_headers) = match session_timer {
        Some((timer, headers)) => (Some(timer), headers),
        None => (None, Vec::new()),
    };
    // What our own requests to the caller came back with (session refreshes, the REFER).
    let (side_answer, mut side_answers) = mpsc::unbounded::<SideAnswer>();
    let _slot = slot;
    let caller_call_id = caller.id().call_id.clone();
    // Made before the first await: `facts` is then never borrowed across one,
    // so the task's future keeps no second copy of it (#16).
    let mut flow = CallFlow::new(facts, received);
    let call_id = flow.facts().call_id.clone();

    // What this line can play: G.722 only if every prompt has wideband frames.
    let caller_codecs = codecs_for(
        playlist.supports(Codec::G722) && failover.as_ref().is_none_or(|f| f.supports(Codec::G722)),
    );
    // Our SDP in the 200 OK: the answer to the caller's offer, or our own
    // offer (every codec we can play, telephone-event) when the INVITE had none.
    let mut caller_sdp = LocalMedia {
        rtp_addr: std::net::SocketAddr::new(
            local_ip,
            rtp_socket.local_addr().map(|a| a.port()).unwrap_or(0),
        ),
        codecs: match &offer {
            Some((_, agreed)) => vec![agreed.codec],
            None => caller_codecs.to_vec(),
        },
        telephone_event: match &offer {
            Some((_, agreed)) => agreed.telephone_event,
            None => Some(OFFERED_TELEPHONE_EVENT),
        },
        session_id: rand::random::<u32>().into(),
        version: 1,
        direction: Direction::SendRecv,
    };

    // rsipstack sends 100 Trying when its handler first runs; responding
    // before that would suppress it, so wait for the dialog's first event.
    match states.recv().await {
        Some(DialogState::Calling(_)) => {}
        Some(DialogState::Terminated(_, TerminatedReason::UacCancel)) => {
            let mut record = CallFlow::rejected(flow.facts(), 487);
            record.end_reason = EndReason::CancelledBeforeAnswer as i32;
            shared.record_ended(record);
            shared.dialog_layer.remove_dialog(&caller.id());
            return;
        }
        other => {
            warn!(call_id = %call_id, state = ?other, "caller dialog did not start");
            shared.record_ended(CallFlow::rejected(flow.facts(), 500));
            shared.dialog_layer.remove_dialog(&caller.id());
            return;
        }
    }

    // The caller's history for the whisper, asked now: the warning lasts far longer
    // than the lookup may, so the answer is there when the operator answers.
    let mut history = (flow.facts().whisper_history && !flow.facts().caller_number.is_empty())
        .then(|| ask_history(&shared, &call_id, &flow.facts().caller_number));
    let (media_events_tx, mut media_events) = mpsc::unbounded();
    let mut media = match offer {
        Some((offer, agreed)) => CallerMedia::Running {
            commands: media::spawn(
                // Our answer declared the caller's own telephone-event number.
                caller_leg(rtp_socket, &offer, agreed, agreed.telephone_event),
                shared.ringback.clone(),
                media_events_tx.clone(),
            ),
            codec: agreed.codec,
        },
        None => CallerMedia::AwaitingAnswer(rtp_socket),
    };
    // The caller's law; for a delayed offer, known once the ACK answers.
    let mut caller_codec = match &media {
        CallerMedia::Running { codec, .. } => *codec,
        _ => Codec::Pcmu,
    };
    let mut operator: Option<OperatorAttempt> = None;
    let mut operator_socket: Option<RtpSocket> = None;
    let mut operator_media: Option<(std::net::SocketAddr, Codec)> = None;
    // The operator's telephone-event numbers, if its answer kept telephone-event.
    let mut operator_keys: Option<EventPayloadTypes> = None;
    // `simultaneous`: the forked INVITEs still running, by hunt list index.
    let mut forks: Vec<Option<ForkedAttempt>> = Vec::new();
    let mut hangups: Vec<InviteDialog> = Vec::new();
    // The call's recording at the writer (its key, if the engine taps it) and its outcome.
    let mut recording: Option<(Option<u64>, oneshot::Receiver<RecordingOutcome>)> = None;
    let mut phase = flow.phase();
    shared.metrics.phase_changed(None, in_progress(phase));
    log_phase(&call_id, flow.facts(), phase, None);
    let shutdown = shared.shutdown.clone();

    loop {
        while let Some(action) = flow.poll_output() {
            match action {
                CallAction::RingCaller => {
                    if let Err(e) = caller.ringing(None, None) {
                        flow.handle_input(
                            CallInput::Fault(format!("sending 180: {e}")),
                            Instant::now(),
                        );
                    }
                }
                CallAction::ProgressCaller => {
                    // The same SDP (address, port, o= version) as the 200 OK will carry.
                    let headers = vec![sdp_content_type(), header("Allow", ALLOW)];
                    if let Err(e) =
                        caller.ringing(Some(headers), Some(caller_sdp.render().into_bytes()))
                    {
                        flow.handle_input(
                            CallInput::Fault(format!("sending 183: {e}")),
                            Instant::now(),
                        );
                    }
                }
                CallAction::AnswerCaller => {
                    if let Some(timer) = session_timer.as_mut() {
                        // The session starts with the 200 OK, however long the
                        // answer delay or the early media took.
                        timer.refreshed(Instant::now());
                    }
                    let mut headers = vec![
                        sdp_content_type(),
                        header("Allow", ALLOW),
                        header("Supported", "timer"),
                    ];
                    headers.extend(timer_headers.iter().cloned());
                    if let Err(e) =
                        caller.accept(Some(headers), Some(caller_sdp.render().into_bytes()))
                    {
                        flow.handle_input(
                            CallInput::Fault(format!("sending 200 OK: {e}")),
                            Instant::now(),
                        );
                    }
                }
                CallAction::WatchCallerMedia => {
                    if let Some(limit) = config.media.rtp_timeout() {
                        media.send(MediaCommand::WatchInactivity(limit));
                    }
                }
                CallAction::StartPrompt => {
                    let policy = config
                        .lines
                        .iter()
                        .find(|line| line.number == flow.facts().line_number)
                        .map_or(RecordAudio::Never, |line| line.record_audio);
                    if let (Some(recorder), true, None) =
                        (&shared.recorder, policy != RecordAudio::Never, &recording)
                    {
                        let (tap, outcome) = recorder.open(&call_id, caller_codec, policy.name());
                        let key = tap.as_ref().map(|tap| tap.key());
                        if let Some(tap) = tap {
                            media.send(MediaCommand::Record(tap));
                        }
                        recording = Some((key, outcome));
                    }
                    media.send(MediaCommand::PlayPrompt(playlist.clone()));
                }
                CallAction::StartRingback => {
                    media.send(MediaCommand::PlayRingback);
                }
                CallAction::ReferCaller { uri } => {
                    info!(call_id = %call_id, operator = %uri, "transferring the caller by REFER");
                    let (caller, done) = (caller.clone(), side_answer.clone());
                    tokio::spawn(async move {
                        let refer_to = rsipstack::sip::ReferTo::new(format!("<{uri}>"));
                        let status = match caller.refer(refer_to, None, None).await {
                            Ok(Some(response)) => response.status_code.code(),
                            Ok(None) | Err(_) => 408,
                        };
                        let _ = done.unbounded_send(SideAnswer::Refer(status));
                    });
                }
                CallAction::PlayFailover => match &failover {
                    Some(failover) => {
                        info!(call_id = %call_id, "nobody answered: failover prompt");
                        media.send(MediaCommand::PlayPrompt(failover.clone()));
                    }
                    None => flow.handle_input(
                        CallInput::Fault("failover prompt not loaded".into()),
                        Instant::now(),
                    ),
                },
                CallAction::DialOperator { uri } => {
                    match Box::pin(dial(
                        &shared,
                        &config,
                        flow.facts(),
                        &uri,
                        caller_codec,
                        &mut operator_socket,
                        &mut states,
                    ))
                    .await
                    {
                        Ok(attempt) => {
                            info!(call_id = %call_id, operator = %uri, "calling operator");
                            operator = Some(attempt);
                        }
                        Err(problem) => {
                            warn!(call_id = %call_id, operator = %uri, %problem, "cannot call operator");
                            flow.handle_input(
                                CallInput::OperatorFailed(OperatorFailure::Unreachable),
                                Instant::now(),
                            );
                        }
                    }
                }
                CallAction::CancelOperator | CallAction::HangUpOperator => {
                    if let Some(attempt) = operator.take() {
                        hangups.push(attempt.dialog);
                    }
                    for fork in forks.iter_mut().filter_map(Option::take) {
                        tokio::spawn(abandon_fork(shared.clone(), call_id.clone(), fork));
                    }
                }
                CallAction::ForkOperator { target, uri } => {
                    if forks.len() <= target {
                        forks.resize_with(target + 1, || None);
                    }
                    let mut socket = None;
                    match Box::pin(dial(
                        &shared,
                        &config,
                        flow.facts(),
                        &uri,
                        caller_codec,
                        &mut socket,
                        &mut states,
                    ))
                    .await
                    {
                        Ok(attempt) => {
                            info!(call_id = %call_id, operator = %uri, "calling operator (one of several at once)");
                            forks[target] = Some(ForkedAttempt {
                                attempt,
                                socket,
                                media: None,
                                keys: None,
                            });
                        }
                        Err(problem) => {
                            warn!(call_id = %call_id, operator = %uri, %problem, "cannot call operator");
                            flow.handle_input(
                                CallInput::ForkedOperator {
                                    target,
                                    event: ForkEvent::Failed(OperatorFailure::Unreachable),
                                },
                                Instant::now(),
                            );
                        }
                    }
                }
                CallAction::CancelFork { target } => {
                    if let Some(fork) = forks.get_mut(target).and_then(Option::take) {
                        tokio::spawn(abandon_fork(shared.clone(), call_id.clone(), fork));
                    }
                }
                CallAction::AdoptFork { target } => {
                    match forks.get_mut(target).and_then(Option::take) {
                        Some(fork) => {
                            operator = Some(fork.attempt);
                            operator_socket = fork.socket;
                            operator_media = fork.media;
                            operator_keys = fork.keys;
                        }
                        None => flow.handle_input(
                            CallInput::Fault("the answering operator's INVITE is gone".into()),
                            Instant::now(),
                        ),
                    }
                }
                CallAction::Bridge => match (operator_socket.take(), operator_media) {
                    (Some(socket), Some((remote, codec))) => {
                        media.send(MediaCommand::Bridge(OperatorLeg {
                            socket,
                            remote,
                            codec,
                            telephone_event: operator_keys,
                            hold_keys: !flow.facts().report_keys.is_empty(),
                        }));
                    }
                    _ => flow.handle_input(
                        CallInput::Fault("operator media missing at bridge".into()),
                        Instant::now(),
                    ),
                },
                CallAction::SendDtmf { to, digit } => {
                    if let Some(event) = TelephoneEvent::code_of(digit) {
                        let to = match to {
                            Party::Caller => Side::Caller,
                            Party::Operator => Side::Operator,
                        };
                        media.send(MediaCommand::SendDtmf { to, event });
                    }
                }
                CallAction::ConfirmReportToOperator => {
                    info!(call_id = %call_id, operator = flow.current_operator().unwrap_or(""), "the operator asked for a report");
                    media.send(MediaCommand::PlayToOperator(
                        OperatorTone::ReportConfirmation,
                    ));
                }
                CallAction::WhisperToOperator => {
                    info!(call_id = %call_id, prior_reports = flow.record().prior_reports, prior_flags = flow.record().prior_flags, "whispering the caller's history to the operator");
                    media.send(MediaCommand::PlayToOperator(OperatorTone::HistoryWhisper));
                }
                CallAction::Milestone(milestone) => {
                    let queued = shared
                        .records
                        .queue_milestone(milestone.to_wire(flow.record()));
                    // On disk before the call moves on (the wait is bounded: see
                    // RecordSender); a run of milestones (Received, Answered before
                    // the 200 OK) waits once, for the last one's fsync.
                    if !flow.milestone_follows() {
                        Box::pin(queued.on_disk()).await;
                    }
                }
                CallAction::HangUpCaller => hangups.push(caller.clone()),
                CallAction::RejectCaller { status } => {
                    let status = StatusCode::from(status);
                    if let Err(e) = caller.reject(Some(status), None) {
                        debug!(error = %e, "could not reject the INVITE");
                    }
                }
                CallAction::Finish(record) => {
                    shared.metrics.phase_changed(in_progress(phase), None);
                    let stats = media.stop().await;
                    finish(
                        &shared,
                        *record,
                        stats,
                        &playlist,
                        failover.as_deref(),
                        &call_id,
                    );
                    if let Some((key, outcome)) = recording.take() {
                        tokio::spawn(close_recording(
                            shared.clone(),
                            call_id.clone(),
                            key,
                            outcome,
                        ));
                    }
                    for dialog in hangups.drain(..) {
                        let layer = shared.dialog_layer.clone();
                        tokio::spawn(async move {
                            if let Err(e) = dialog.hangup().await {
                                debug!(error = %e, "hang-up failed");
                            }
                            layer.remove_dialog(&dialog.id());
                        });
                    }
                    shared.dialog_layer.remove_dialog(&caller.id());
                    if let Some(attempt) = &operator {
                        shared.dialog_layer.remove_dialog(&attempt.dialog.id());
                    }
                    return;
                }
            }
            // Hang-ups are sent as they are decided, not only at the end.
            for dialog in hangups.drain(..) {
                let layer = shared.dialog_layer.clone();
                tokio::spawn(async move {
                    if let Err(e) = dialog.hangup().await {
                        debug!(error = %e, "hang-up failed");
                    }
                    layer.remove_dialog(&dialog.id());
                });
            }
        }
        if flow.phase() != phase {
            shared
                .metrics
                .phase_changed(in_progress(phase), in_progress(flow.phase()));
            phase = flow.phase();
            log_phase(&call_id, flow.facts(), phase, flow.current_operator());
        }

        let deadline = flow.poll_timeout().map(tokio::time::Instant::from_std);
        let input = tokio::select! {
            state = states.recv() => match state {
                Some(DialogState::Updated(id, request, handle)) => {
                    let from_caller = id.call_id == caller_call_id;
                    if let (true, Some(timer)) = (from_caller, session_timer.as_mut()) {
                        // A re-INVITE or UPDATE from the caller refreshes its session.
                        timer.refreshed(Instant::now());
                    }
                    let retarget = match operator.as_mut() {
                        // Bridged (the operator's dialog is up, even if its 200 is
                        // still on its way to the flow): the far leg decides
                        // (hold/unhold, codec change).
                        Some(op) if matches!(op.dialog.state(), DialogState::Confirmed(..)) => {
                            let (this_leg, this_side, other_leg, other, other_side) = if from_caller {
                                (&mut caller_sdp, Side::Caller, &mut op.sdp, op.dialog.clone(), Side::Operator)
                            } else {
                                (&mut op.sdp, Side::Operator, &mut caller_sdp, caller.clone(), Side::Caller)
                            };
                            match reoffer::prepare(&request, this_leg, this_side, other_leg) {
                                Ok(target) => {
                                    let far = reoffer::FarLeg { dialog: other, sdp: other_leg.clone(), side: other_side, media: media.commands() };
                                    tokio::spawn(reoffer::forward(request, handle, this_leg.clone(), far));
                                    target
                                }
                                Err(status) => {
                                    reoffer::send_answer(handle, status, None, None);
                                    None
                                }
                            }
                        }
                        // During the prompt the operator is not ours to bother:
                        // answer here; the prompt goes on.
                        _ if from_caller => reoffer::answer_locally(&request, handle, &mut caller_sdp, Side::Caller),
                        Some(op) => reoffer::answer_locally(&request, handle, &mut op.sdp, Side::Operator),
                        None => {
                            reoffer::send_answer(handle, StatusCode::CallTransactionDoesNotExist, None, None);
                            None
                        }
                    };
                    if let Some(target) = retarget {
                        match target.side {
                            Side::Caller => caller_codec = target.codec,
                            // Not bridged yet: the bridge starts with the new target.
                            Side::Operator => if let Some(answered) = operator_media.as_mut() {
                                *answered = (target.remote, target.codec);
                            },
                        }
                        info!(call_id = %call_id, side = ?target.side, remote = %target.remote, codec = target.codec.encoding_name(), "re-offer: media re-pointed");
                        media.send(MediaCommand::Repoint(target));
                    }
                    None
                }
                Some(state) => {
                    if let (Some(op), DialogState::Trying(id) | DialogState::Early(id, _)) = (operator.as_mut(), &state) {
                        if id.call_id == op.call_id {
                            // It answers: it listens, nothing to probe.
                            op.refusal = None;
                        }
                    }
                    let fork = match &state {
                        DialogState::Trying(id) | DialogState::Early(id, _) => forks
                            .iter_mut()
                            .enumerate()
                            .find_map(|(target, fork)| Some((target, fork.as_mut().filter(|f| f.attempt.call_id == id.call_id)?))),
                        _ => None,
                    };
                    match fork {
                        Some((target, fork)) => {
                            fork.attempt.refusal = None;
                            matches!(state, DialogState::Early(..)).then_some(CallInput::ForkedOperator { target, event: ForkEvent::Ringing })
                        }
                        None => dialog_input(state, &caller_call_id, operator.as_ref().map(|o| o.call_id.as_str())),
                    }
                }
                None => Some(CallInput::Fault("dialog events channel closed".into())),
            },
            event = media_events.next() => match event {
                Some(MediaEvent::PromptFinished) => Some(CallInput::PromptFinished),
                Some(MediaEvent::Dtmf(digit)) => Some(CallInput::CallerDtmf(digit)),
                Some(MediaEvent::OperatorDtmf(digit)) => Some(CallInput::OperatorDtmf { digit, via: KeyVia::Rfc4733 }),
                Some(MediaEvent::Fault(problem)) => Some(CallInput::Fault(problem)),
                Some(MediaEvent::Inactive) => {
                    warn!(call_id = %call_id, "no RTP or RTCP from the caller within [media] rtp_timeout_s: hanging up");
                    Some(CallInput::CallerMediaTimeout)
                }
                None => Some(CallInput::Fault("media task ended".into())),
            },
            event = operator_event(operator.as_mut()) => match event {
                AttemptEvent::Refused(error) => {
                    warn!(call_id = %call_id, operator = flow.current_operator().unwrap_or(""), %error, "operator unreachable: giving up on it at once");
                    Some(CallInput::OperatorFailed(OperatorFailure::Refused))
                }
                AttemptEvent::Outcome(outcome) => {
                    if let Some(op) = operator.as_mut() {
                        // It answered: whatever the probe would say is moot.
                        op.refusal = None;
                    }
                    let input = operator_input(outcome, caller_codec, &mut operator_media, &mut operator_keys);
                    if input != CallInput::OperatorAnswered {
                        // The attempt is over; nothing to cancel.
                        operator = None;
                    }
                    Some(input)
                }
            },
            (target, event) = fork_event(&mut forks) => {
                let input = match event {
                    AttemptEvent::Refused(error) => {
                        warn!(call_id = %call_id, operator = flow.facts().operators.get(target).map_or("", String::as_str), %error, "operator unreachable: giving up on it at once");
                        ForkEvent::Failed(OperatorFailure::Refused)
                    }
                    AttemptEvent::Outcome(outcome) => {
                        let Some(fork) = forks.get_mut(target).and_then(Option::as_mut) else {
                            continue;
                        };
                        fork.attempt.refusal = None;
                        match operator_input(outcome, caller_codec, &mut fork.media, &mut fork.keys) {
                            CallInput::OperatorAnswered => ForkEvent::Answered,
                            CallInput::OperatorFailed(failure) => {
                                // The attempt is over; nothing to cancel.
                                forks[target] = None;
                                ForkEvent::Failed(failure)
                            }
                            other => {
                                warn!(call_id = %call_id, operator = flow.facts().operators.get(target).map_or("", String::as_str), input = ?other, "forked operator answered unusably: hanging it up");
                                if let Some(fork) = forks[target].take() {
                                    tokio::spawn(abandon_fork(shared.clone(), call_id.clone(), fork));
                                }
                                ForkEvent::Failed(OperatorFailure::Unreachable)
                            }
                        }
                    }
                };
                Some(CallInput::ForkedOperator { target, event: input })
            },
            answer = history_answer(history.as_mut()) => {
                history = None;
                answer.map(|answer| CallInput::CallerHistory {
                    prior_reports: answer.prior_reports,
                    prior_flags: answer.prior_flags,
                })
            },
            _ = sleep_until(deadline) => {
                flow.handle_timeout(Instant::now());
                None
            },
            _ = sleep_until(session_timer.as_ref().map(|t| tokio::time::Instant::from_std(t.poll_timeout()))) => {
                match session_timer.as_mut().and_then(|t| t.handle_timeout(Instant::now())) {
                    Some(TimerDue::Refresh) => {
                        let (caller, sdp, done) = (caller.clone(), caller_sdp.render(), side_answer.clone());
                        tokio::spawn(async move {
                            let refreshed = caller
                                .reinvite(Some(vec![sdp_content_type()]), Some(sdp.into_bytes()))
                                .await
                                .is_ok_and(|r| r.is_some_and(|r| r.status_code.kind() == StatusCodeKind::Successful));
                            let _ = done.unbounded_send(SideAnswer::Refresh(refreshed));
                        });
                        None
                    }
                    Some(TimerDue::Expired) => Some(CallInput::SessionExpired),
                    None => None,
                }
            },
            Some(answer) = side_answers.next() => match answer {
                SideAnswer::Refer(status) => {
                    info!(call_id = %call_id, status, "REFER answered");
                    Some(CallInput::ReferAnswered(status))
                }
                SideAnswer::Refresh(true) => {
                    if let Some(timer) = session_timer.as_mut() {
                        timer.refreshed(Instant::now());
                    }
                    None
                }
                SideAnswer::Refresh(false) => {
                    warn!(call_id = %call_id, "session refresh failed: the caller is gone");
                    Some(CallInput::SessionExpired)
                }
            },
            _ = shutdown.cancelled() => Some(CallInput::Shutdown),
        };
        let input = match (input, &media) {
            (Some(CallInput::CallerAcked), CallerMedia::AwaitingAnswer(_)) => {
                match delayed_answer(&caller, caller_codecs) {
                    Ok((answer, agreed)) => {
                        let CallerMedia::AwaitingAnswer(socket) =
                            std::mem::replace(&mut media, CallerMedia::Gone)
                        else {
                            unreachable!("matched above")
                        };
                        media = CallerMedia::Running {
                            commands: media::spawn(
                                caller_leg(socket, &answer, agreed, Some(OFFERED_TELEPHONE_EVENT)),
                                shared.ringback.clone(),
                                media_events_tx.clone(),
                            ),
                            codec: agreed.codec,
                        };
                        caller_codec = agreed.codec;
                        flow.handle_input(
                            CallInput::CodecAgreed(agreed.codec.encoding_name().to_string()),
                            Instant::now(),
                        );
                        Some(CallInput::CallerAcked)
                    }
                    Err(problem) => Some(CallInput::Fault(problem)),
                }
            }
            (input, _) => input,
        };
        if let Some(input) = input {
            debug!(call_id = %call_id, ?input, "call input");
            flow.handle_input(input, Instant::now());
        }
    }
}

/// Translates a dialog event into a flow input; answers in-dialog requests the
/// flow need not see.
fn dialog_input(
    state: DialogState,
    caller_call_id: &str,
    operator_call_id: Option<&str>,
) -> Option<CallInput> {
    let leg_of = |id: &DialogId| {
        if id.call_id == caller_call_id {
            Some(true)
        } else if Some(id.call_id.as_str()) == operator_call_id {
            Some(false)
        } else {
            None
        }
    };
    match state {
        DialogState::Confirmed(id, _) if leg_of(&id) == Some(true) => Some(CallInput::CallerAcked),
        DialogState::Early(id, _) if leg_of(&id) == Some(false) => Some(CallInput::OperatorRinging),
        DialogState::Terminated(id, reason) => match (leg_of(&id), reason) {
            (Some(true), TerminatedReason::UacBye) => Some(CallInput::CallerHungUp),
            (Some(true), TerminatedReason::UacCancel) => Some(CallInput::CallerCancelled),
            // The stack gave up waiting for the ACK and sent BYE itself.
            (Some(true), TerminatedReason::Timeout) => Some(CallInput::CallerAckTimeout),
            (Some(true), other) => Some(CallInput::Fault(format!("caller leg ended: {other:?}"))),
            (Some(false), TerminatedReason::UasBye) => Some(CallInput::OperatorHungUp),
            // Failures of the operator INVITE arrive through its outcome.
            _ => None,
        },
        DialogState::Info(id, request, handle) => {
            // Every INFO gets 200 (other packages are ignored, not refused).
            reoffer::send_answer(handle, StatusCode::OK, None, None);
            let content_type = request
                .headers
                .iter()
                .find(|h| h.name().eq_ignore_ascii_case("content-type"))
                .map(|h| h.value().to_string())
                .unwrap_or_default();
            let digit = info_dtmf_digit(&content_type, &request.body)?;
            match leg_of(&id)? {
                true => Some(CallInput::CallerDtmf(digit)),
                false => Some(CallInput::OperatorDtmf {
                    digit,
                    via: KeyVia::SipInfo,
                }),
            }
        }
        DialogState::Options(_, _, handle) => {
            reoffer::send_answer(
                handle,
                StatusCode::OK,
                Some(vec![header("Allow", ALLOW)]),
                None,
            );
            None
        }
        // How the transfer we asked for goes (RFC 3515): a sipfrag's status line.
        DialogState::Notify(id, request, handle) if leg_of(&id) == Some(true) => {
            let event = request
                .headers
                .iter()
                .find(|h| h.name().eq_ignore_ascii_case("event") || h.name() == "o")
                .map(|h| h.value().to_string())
                .unwrap_or_default();
            if !event.trim().to_ascii_lowercase().starts_with("refer") {
                reoffer::send_answer(handle, StatusCode::BadEvent, None, None);
                return None;
            }
            reoffer::send_answer(handle, StatusCode::OK, None, None);
            sipfrag_status(&request.body).map(CallInput::TransferProgress)
        }
        DialogState::Notify(_, _, handle)
        | DialogState::Refer(_, _, handle)
        | DialogState::Message(_, _, handle)
        | DialogState::Publish(_, _, handle) => {
            reoffer::send_answer(handle, StatusCode::MethodNotAllowed, None, None);
            None
        }
        _ => None,
    }
}

/// The status code of a `message/sipfrag` body's status line ("SIP/2.0 200 OK").
fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(body).ok()?;
    let mut words = text.lines().next()?.split_whitespace();
    match (words.next(), words.next()) {
        (Some(version), Some(code)) if version.eq_ignore_ascii_case("SIP/2.0") => code.parse().ok(),
        _ => None,
    }
}

/// The key in a SIP INFO body: `application/dtmf-relay` (a `Signal=5` line)
/// or `application/dtmf` (the key alone). Keys are `0`-`9`, `*`, `#`, `A`-`D`,
/// or their RFC 4733 event codes 0-15 (some phones send `Signal=11` for `#`).
fn info_dtmf_digit(content_type: &str, body: &[u8]) -> Option<char> {
    let media_type = content_type.split(';').next()?.trim().to_ascii_lowercase();
    let text = std::str::from_utf8(body).ok()?;
    let signal = match media_type.as_str() {
        "application/dtmf-relay" => text.lines().find_map(|line| {
            let (key, value) = line.split_once('=')?;
            key.trim().eq_ignore_ascii_case("signal").then_some(value)
        })?,
        "application/dtmf" => text,
        _ => return None,
    };
    let signal = signal.trim();
    match signal.parse::<u8>() {
        Ok(code) => TelephoneEvent::key_of(code),
        Err(_) => {
            let mut chars = signal.chars();
            match (chars.next(), chars.next()) {
                (Some(key), None) => TelephoneEvent::code_of(key).and_then(TelephoneEvent::key_of),
                _ => None,
            }
        }
    }
}

/// The size of a request above which it must not go over UDP when the path
/// MTU is unknown (RFC 3261 §18.1.1).
const UDP_REQUEST_LIMIT: usize = 1300;

/// Starts an INVITE to an operator.
async fn dial(
    shared: &Arc<Shared>,
    config: &Config,
    facts: &CallFacts,
    uri: &str,
    caller_codec: Codec,
    socket: &mut Option<RtpSocket>,
    states: &mut CallDialogStates,
) -> Result<OperatorAttempt, String> {
    let callee =
        rsipstack::sip::Uri::try_from(uri).map_err(|e| format!("bad operator URI: {e}"))?;
    // Admission left out targets that were down then; this one went down
    // during the warning (or every target was down): no use ringing it.
    if shared.health.is_down(uri) {
        return Err("marked down: it does not answer OPTIONS".into());
    }
    let transport = uri_transport(&callee);
    if transport != Transport::Udp {
        // A refused connection is retried by rsipstack until the INVITE times
        // out; courtline connects first and fails the target at once.
        let mut target = SipAddr {
            r#type: Some(transport),
            addr: callee.host_with_port.clone(),
        };
        if transport == Transport::Tls && target.addr.port.is_none() {
            target.addr.port = Some(5061.into());
        }
        if let Some(Err(problem)) = connect_stream(shared, &target).await {
            return Err(format!("cannot connect over {transport}: {problem}"));
        }
    }
    let peer_ip = match &callee.host_with_port.host {
        rsipstack::sip::Host::IpAddr(ip) => *ip,
        rsipstack::sip::Host::Domain(_) => shared.sip_addr.ip(),
    };
    if socket.is_none() {
        *socket = Some(shared.ports.bind(peer_ip).map_err(|e| e.to_string())?);
    }
    let port = socket
        .as_ref()
        .and_then(|s| s.local_addr().ok())
        .map(|a| a.port())
        .unwrap_or(0);
    let local_ip = local_ip_toward(peer_ip, shared.sip_addr.ip(), shared.advertise);
    let offer = LocalMedia {
        rtp_addr: std::net::SocketAddr::new(local_ip, port),
        codecs: operator_codecs(caller_codec),
        telephone_event: Some(OFFERED_TELEPHONE_EVENT),
        session_id: rand::random::<u32>().into(),
        version: 1,
        direction: Direction::SendRecv,
    };
    let caller_user = if facts.caller_number.is_empty() {
        "anonymous"
    } else {
        facts.caller_number.as_str()
    };
    let caller_uri =
        rsipstack::sip::Uri::try_from(format!("sip:{caller_user}@{local_ip}").as_str())
            .or_else(|_| {
                rsipstack::sip::Uri::try_from(format!("sip:anonymous@{local_ip}").as_str())
            })
            .map_err(|e| format!("cannot build From URI: {e}"))?;
    let mut option = InviteOption {
        // The operator sees who is calling, as a court switchboard should.
        caller_display_name: (!facts.caller_display_name.is_empty())
            .then(|| facts.caller_display_name.clone()),
        caller: caller_uri,
        contact: contact_uri(shared, local_ip, uri_transport(&callee)),
        callee,
        content_type: Some("application/sdp".into()),
        offer: Some(offer.render().into_bytes()),
        call_id: Some(format!("{}@courtline", uuid::Uuid::new_v4())),
        // rsipstack answers a 401/407 with these (MD5 or SHA-256, qop=auth).
        credential: config.operator_account(uri).map(|account| Credential {
            username: account.username.clone(),
            password: account.password.clone(),
            realm: (!account.realm.is_empty()).then(|| account.realm.clone()),
            auth_username: None,
        }),
        ..InviteOption::default()
    };
    if uri_transport(&option.callee) == Transport::Udp
        && shared.live().config.sip.tcp
        && shared
            .dialog_layer
            .make_invite_request(&option)
            .is_ok_and(|request| request.to_string().len() > UDP_REQUEST_LIMIT)
    {
        let tcp = SipAddr {
            r#type: Some(Transport::Tcp),
            addr: option.callee.host_with_port.clone(),
        };
        if matches!(connect_stream(shared, &tcp).await, Some(Ok(()))) {
            info!(operator = %uri, "INVITE larger than {UDP_REQUEST_LIMIT} bytes: sent over TCP (RFC 3261 §18.1.1)");
            option.destination = Some(tcp);
            option.contact = contact_uri(shared, local_ip, Transport::Tcp);
        } else {
            warn!(operator = %uri, "INVITE larger than {UDP_REQUEST_LIMIT} bytes, but the operator takes no TCP: sent over UDP");
        }
    }
    let refusal = match &option.destination {
        None if transport == Transport::Udp => udp_refusal(shared, &option.callee).await,
        _ => None,
    };
    let call_id = option.call_id.clone().unwrap_or_default();
    states.add(&call_id);
    let (dialog, outcome) = shared
        .dialog_layer
        .do_invite_async(option, states.sender())
        .map_err(|e| e.to_string())?;
    Ok(OperatorAttempt {
        dialog,
        call_id,
        outcome: Some(InviteOutcome::new(
            outcome,
            shared.dialog_layer.endpoint.clone(),
        )),
        sdp: offer,
        refusal,
    })
}

/// Opens (and leaves in the stack's connection cache, for the INVITE to use)
/// a TCP or TLS connection to `target`: its error, or None when it takes
/// longer than 4·T1. rsipstack itself would retry a refused connection on its
/// timers until the INVITE times out, so courtline finds out first: a TCP
/// operator fails at once, and an INVITE too large for UDP stays on UDP
/// (RFC 3261 §18.1.1 says to retry over UDP when TCP is refused).
async fn connect_stream(shared: &Shared, target: &SipAddr) -> Option<Result<(), String>> {
    let limit = Duration::from_millis(shared.live().config.sip.t1_ms) * 4;
    let lookup = shared
        .dialog_layer
        .endpoint
        .transport_layer
        .lookup(target, None);
    match tokio::time::timeout(limit, lookup).await {
        Ok(Ok(_)) => Some(Ok(())),
        Ok(Err(e)) => Some(Err(e.to_string())),
        Err(_) => None,
    }
}

/// Starts watching for the kernel's word that nobody listens on UDP where the
/// stack will send the INVITE to `callee` (its address resolved the stack's
/// way); None when that address cannot be had.
async fn udp_refusal(shared: &Shared, callee: &rsipstack::sip::Uri) -> Option<Refusal> {
    let target = SipAddr {
        r#type: Some(Transport::Udp),
        addr: callee.host_with_port.clone(),
    };
    let (_, resolved) = shared
        .dialog_layer
        .endpoint
        .transport_layer
        .lookup(&target, None)
        .await
        .ok()?;
    let address = resolved.get_socketaddr().ok()?;
    let interval = Duration::from_millis(shared.live().config.sip.t1_ms);
    Some(Box::pin(qualify::udp_refusal(
        address,
        PROBE_SILENT_OPERATOR_AFTER,
        interval,
    )))
}

/// What we offer the operator: the caller's codec first, so no transcoding is
/// needed if the operator agrees, then G.711 (G.722 only for a G.722 caller:
/// for a G.711 caller it would only add transcoding).
fn operator_codecs(caller_codec: Codec) -> Vec<Codec> {
    std::iter::once(caller_codec)
        .chain(
            [Codec::Pcmu, Codec::Pcma]
                .into_iter()
                .filter(|c| *c != caller_codec),
        )
        .collect()
}

/// What became of the operator attempt in progress.
enum AttemptEvent {
    /// The INVITE's final outcome.
    Outcome(Result<InviteAsyncResult, tokio::task::JoinError>),
    /// The kernel says nobody listens at the target; the INVITE still runs.
    Refused(std::io::Error),
}

/// Starts the lookup of `number`'s history; the receiver gets its answer, or
/// `None` when there is none in time (logged: the call goes on unwhispered).
fn ask_history(
    shared: &Shared,
    call_id: &str,
    number: &str,
) -> oneshot::Receiver<Option<CallerHistoryResponse>> {
    let (answer, answered) = oneshot::channel();
    let (lookup, call_id, number) = (
        shared.history.clone(),
        call_id.to_owned(),
        number.to_owned(),
    );
    tokio::spawn(async move {
        let started = Instant::now();
        let outcome = lookup.lookup(&number).await;
        let lookup_us = started.elapsed().as_micros() as u64;
        let _ = answer.send(match outcome {
            Ok(history) => {
                info!(call_id = %call_id, prior_reports = history.prior_reports, prior_flags = history.prior_flags, lookup_us, "caller history");
                Some(history)
            }
            Err(problem) => {
                warn!(call_id = %call_id, %problem, lookup_us, "no caller history for the whisper: the operator will not hear one");
                None
            }
        });
    });
    answered
}

/// The caller's history once its lookup is over (`None`: no answer); forever
/// when none is pending.
async fn history_answer(
    pending: Option<&mut oneshot::Receiver<Option<CallerHistoryResponse>>>,
) -> Option<CallerHistoryResponse> {
    match pending {
        Some(answered) => answered.await.ok().flatten(),
        None => std::future::pending().await,
    }
}

/// Waits for the attempt's outcome or its target's refusal; forever when no
/// attempt is running. Polled by hand rather than an `async` body with a
/// `select!`: the call task's future holds this for the call's whole life,
/// and the hand-written one is two references where the other was 264 bytes (#16).
fn operator_event(
    mut attempt: Option<&mut OperatorAttempt>,
) -> impl Future<Output = AttemptEvent> + '_ {
    std::future::poll_fn(move |cx| {
        let Some(OperatorAttempt {
            outcome, refusal, ..
        }) = attempt.as_deref_mut()
        else {
            return Poll::Pending;
        };
        // Finished futures are taken out: polling one again would panic.
        if let Some(check) = refusal.as_mut() {
            if let Poll::Ready(refused) = check.as_mut().poll(cx) {
                *refusal = None;
                if let Some(error) = refused {
                    return Poll::Ready(AttemptEvent::Refused(error));
                }
            }
        }
        if let Some(answer) = outcome.as_mut() {
            if let Poll::Ready(result) = Pin::new(answer).poll(cx) {
                *outcome = None;
                return Poll::Ready(AttemptEvent::Outcome(result));
            }
        }
        Poll::Pending
    })
}

/// The next event of any forked attempt still running, with its hunt list
/// index; forever when none is.
async fn fork_event(forks: &mut [Option<ForkedAttempt>]) -> (usize, AttemptEvent) {
    let running: Vec<_> = forks
        .iter_mut()
        .enumerate()
        .filter_map(|(target, fork)| {
            let fork = fork.as_mut()?;
            Some(Box::pin(async move {
                (target, operator_event(Some(&mut fork.attempt)).await)
            }))
        })
        .collect();
    if running.is_empty() {
        return std::future::pending().await;
    }
    futures::future::select_all(running).await.0
}

/// Ends a forked INVITE another target beat: CANCEL, and if its 2xx crossed
/// the CANCEL (the stack has ACKed it), BYE; then forgets its dialog.
async fn abandon_fork(shared: Arc<Shared>, call_id: String, fork: ForkedAttempt) {
    let ForkedAttempt { attempt, .. } = fork;
    if let Err(e) = attempt.dialog.hangup().await {
        debug!(error = %e, "cancelling a forked operator failed");
    }
    if let Some(outcome) = attempt.outcome {
        let answered = matches!(
            outcome.await,
            Ok(Ok((_, Some(response)))) if response.status_code.kind() == StatusCodeKind::Successful
        );
        if answered {
            info!(call_id = %call_id, operator_call_id = %attempt.call_id, "a cancelled operator answered anyway: BYE");
            if let Err(e) = attempt.dialog.hangup().await {
                debug!(error = %e, "BYE to a late-answering operator failed");
            }
        }
    }
    shared.dialog_layer.remove_dialog(&attempt.dialog.id());
}

/// Turns the operator INVITE outcome into a flow input, keeping the operator's
/// media (and telephone-event numbers) on answer.
fn operator_input(
    outcome: Result<InviteAsyncResult, tokio::task::JoinError>,
    caller_codec: Codec,
    operator_media: &mut Option<(std::net::SocketAddr, Codec)>,
    operator_keys: &mut Option<EventPayloadTypes>,
) -> CallInput {
    let response = match outcome {
        Ok(Ok((_, Some(response)))) => response,
        Ok(Ok((_, None))) | Ok(Err(_)) | Err(_) => {
            return CallInput::OperatorFailed(OperatorFailure::Unreachable)
        }
    };
    if response.status_code.kind() != StatusCodeKind::Successful {
        return CallInput::OperatorFailed(OperatorFailure::Status(response.status_code.code()));
    }
    let answer = match RemoteMedia::parse(&response.body) {
        Ok(answer) => answer,
        Err(e) => return CallInput::Fault(format!("operator's SDP answer: {e}")),
    };
    // Prefer the caller's codec when the operator accepted several.
    let codec = answer
        .formats
        .iter()
        .any(|(pt, _)| *pt == caller_codec.payload_type())
        .then_some(caller_codec)
        .or_else(|| {
            answer
                .negotiate(&operator_codecs(caller_codec))
                .ok()
                .map(|n| n.codec)
        });
    match codec {
        Some(codec) => {
            *operator_media = Some((answer.rtp_addr, codec));
            // We offered OFFERED_TELEPHONE_EVENT; the operator sends keys with
            // that and takes ours with the number its answer declared.
            *operator_keys = answer.telephone_event.map(|send| EventPayloadTypes {
                receive: OFFERED_TELEPHONE_EVENT,
                send,
            });
            CallInput::OperatorAnswered
        }
        None => CallInput::Fault("operator answered without a codec we offered".into()),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The caller's media task, or what stands in for it before it can start.
enum CallerMedia {
    /// The SDP exchange is complete and the media task runs.
    Running {
        /// Orders to the media task.
        commands: MediaCommands,
        /// The agreed law.
        codec: Codec,
    },
    /// Delayed offer: our offer went out in the 200 OK; the socket waits for
    /// the answer in the ACK.
    AwaitingAnswer(RtpSocket),
    /// Transitional value while moving out of `AwaitingAnswer`.
    Gone,
}

impl CallerMedia {
    /// Sends a command if the media task runs (commands before the ACK cannot
    /// happen: the flow starts media only after it).
    fn send(&self, command: MediaCommand) {
        if let CallerMedia::Running { commands, .. } = self {
            let _ = commands.send(command);
        }
    }

    /// A sender of commands, for tasks that outlive this borrow (forwarded re-offers).
    fn commands(&self) -> Option<MediaCommands> {
        match self {
            CallerMedia::Running { commands, .. } => Some(commands.clone()),
            _ => None,
        }
    }

    /// Stops the media task and returns its counters (zeros if it never ran).
    async fn stop(&self) -> MediaStats {
        let CallerMedia::Running { commands, .. } = self else {
            return MediaStats::default();
        };
        let (tx, rx) = oneshot::channel();
        if commands.send(MediaCommand::Stop(tx)).is_err() {
            return MediaStats::default();
        }
        tokio::time::timeout(Duration::from_secs(1), rx)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }
}

/// The caller's media as agreed; `declared` is the telephone-event number our
/// own SDP gave (the caller sends keys with it).
fn caller_leg(
    socket: RtpSocket,
    media: &RemoteMedia,
    agreed: Negotiated,
    declared: Option<u8>,
) -> CallerLeg {
    CallerLeg {
        socket,
        remote: media.rtp_addr,
        codec: agreed.codec,
        telephone_event: declared
            .zip(agreed.telephone_event)
            .map(|(receive, send)| EventPayloadTypes { receive, send }),
    }
}

/// The caller's SDP answer from the ACK of a delayed-offer call, which must
/// pick one of the codecs we offered.
fn delayed_answer(
    caller: &InviteDialog,
    offered: &[Codec],
) -> Result<(RemoteMedia, Negotiated), String> {
    let ack = caller
        .last_remote_ack()
        .ok_or("delayed offer: no ACK request recorded")?;
    if ack.body.is_empty() {
        return Err("delayed offer: the ACK carried no SDP answer".into());
    }
    let answer = RemoteMedia::parse(&ack.body)
        .map_err(|e| format!("delayed offer: the ACK's SDP answer: {e}"))?;
    let agreed = answer
        .negotiate(offered)
        .map_err(|e| format!("delayed offer: the ACK's SDP answer: {e}"))?;
    Ok((answer, agreed))
}

/// Completes the record with the media counters and sends it.
fn finish(
    shared: &Shared,
    mut record: CallRecord,
    stats: MediaStats,
    playlist: &Playlist,
    failover: Option<&Playlist>,
    call_id: &str,
) {
    record.rtp_packets_sent = stats.packets_to_caller;
    record.rtp_packets_received = stats.packets_from_caller;
    // The engine counts every prompt frame; the failover prompt's follow the
    // whole warning's, and it is listed after the warning's prompts.
    record.prompt_ms_sent = stats.prompt_ms_sent.min(record.prompt_length_ms);
    let failover_ms = stats.prompt_ms_sent - record.prompt_ms_sent;
    let sent = playlist
        .ms_sent_per_prompt(record.prompt_ms_sent)
        .into_iter()
        .chain(
            failover
                .map(|f| f.ms_sent_per_prompt(failover_ms))
                .unwrap_or_default(),
        );
    for (played, ms_sent) in record.prompts.iter_mut().zip(sent) {
        played.ms_sent = ms_sent;
    }
    // A call refused or ended before its media started has no figures to show.
    if stats.caller != LegStats::default() {
        record.caller_media = Some(leg_media(&stats.caller));
    }
    record.operator_media = stats.operator.as_ref().map(leg_media);
    let reason = EndReason::try_from(record.end_reason).unwrap_or(EndReason::Unspecified);
    info!(
        call_id,
        line = %record.line_number,
        caller = %record.caller_number,
        state = "ended",
        end_reason = crate::contract::names::end_reason_name(reason),
        prompt_completed = record.prompt_completed,
        prompt_ms_sent = record.prompt_ms_sent,
        "call state"
    );
    shared.record_ended(record);
}

/// How long a recording may take to be closed (written out, fsync'd, hashed).
const RECORDING_CLOSE_WAIT: Duration = Duration::from_secs(60);

/// Closes the call's recording once its media has stopped and queues its
/// `RecordingFinished` after the call's record.
async fn close_recording(
    shared: Arc<Shared>,
    call_id: String,
    key: Option<u64>,
    outcome: oneshot::Receiver<RecordingOutcome>,
) {
    if let (Some(key), Some(recorder)) = (key, shared.recorder.clone()) {
        recorder.close(key);
    }
    let outcome = match tokio::time::timeout(RECORDING_CLOSE_WAIT, outcome).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => RecordingOutcome {
            failure: "the recording writer stopped".into(),
            ..RecordingOutcome::default()
        },
        Err(_) => RecordingOutcome {
            failure: "the recording was not closed within 60 s".into(),
            ..RecordingOutcome::default()
        },
    };
    if !outcome.failure.is_empty() {
        warn!(call_id = %call_id, failure = %outcome.failure, "recording_failed");
    }
    shared
        .records
        .recording(
            &call_id,
            RecordingFinished {
                path: outcome.path.display().to_string(),
                sha256: outcome.sha256,
                bytes: outcome.bytes,
                sample_rate: outcome.sample_rate,
                channels: outcome.channels,
                format: "wav".into(),
                started_at_ms: outcome.started_at_ms,
                duration_ms: outcome.duration_ms,
                policy: outcome.policy.into(),
                failure: outcome.failure,
            },
        )
        .await;
}

/// A leg's figures in the record's terms.
fn leg_media(stats: &LegStats) -> LegMedia {
    LegMedia {
        packets_sent: stats.packets_sent,
        packets_received: stats.packets_received,
        packets_lost: stats.packets_lost,
        jitter_us: stats.jitter_us,
        rtt_us: stats.rtt_us,
        peer_reported_lost: stats.peer_reported_lost,
    }
}

/// The phase's name while the call is in progress; `None` once ended.
fn in_progress(phase: Phase) -> Option<&'static str> {
    (phase != Phase::Ended).then(|| phase.name())
}

fn log_phase(call_id: &str, facts: &CallFacts, phase: Phase, operator: Option<&str>) {
    if phase == Phase::Ended {
        return;
    }
    info!(
        call_id,
        line = %facts.line_number,
        caller = %facts.caller_number,
        state = phase.name(),
        operator = operator.unwrap_or(""),
        "call state"
    );
}

/// Our Contact for a dialog on `transport`: the port we listen on for it
/// (or the public one behind NAT) and a transport parameter for streams.
fn contact_uri(shared: &Shared, ip: IpAddr, transport: Transport) -> rsipstack::sip::Uri {
    let host = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let (port, param) = match transport {
        Transport::Tls => (
            shared
                .tls_addr
                .map(|a| a.port())
                .unwrap_or(shared.sip_addr.port()),
            ";transport=tls",
        ),
        Transport::Tcp => (
            shared.public_port.unwrap_or(shared.sip_addr.port()),
            ";transport=tcp",
        ),
        _ => (shared.public_port.unwrap_or(shared.sip_addr.port()), ""),
    };
    rsipstack::sip::Uri::try_from(format!("sip:courtline@{host}:{port}{param}").as_str())
        .unwrap_or_default()
}

/// The transport an operator URI asks for (`;transport=tcp`, `sips:`), UDP otherwise.
fn uri_transport(uri: &rsipstack::sip::Uri) -> Transport {
    if uri.scheme == Some(rsipstack::sip::Scheme::Sips) {
        return Transport::Tls;
    }
    uri.params
        .iter()
        .find_map(|p| match p {
            rsipstack::sip::Param::Transport(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(Transport::Udp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sipfrag_status_line() {
        assert_eq!(sipfrag_status(b"SIP/2.0 200 OK\r\n"), Some(200));
        assert_eq!(sipfrag_status(b"SIP/2.0 100 Trying"), Some(100));
        assert_eq!(
            sipfrag_status(b"sip/2.0 486 Busy Here\r\nContact: x\r\n"),
            Some(486)
        );
        assert_eq!(sipfrag_status(b"INVITE sip:a@h SIP/2.0"), None);
        assert_eq!(sipfrag_status(b""), None);
        assert_eq!(sipfrag_status(&[0xff, 0xfe]), None);
    }

    #[test]
    fn sip_info_dtmf() {
        let relay = "application/dtmf-relay";
        assert_eq!(
            info_dtmf_digit(relay, b"Signal=5\r\nDuration=160\r\n"),
            Some('5')
        );
        assert_eq!(info_dtmf_digit(relay, b"Signal= #\r\n"), Some('#'));
        assert_eq!(
            info_dtmf_digit(relay, b"signal=11\r\nDuration=250\r\n"),
            Some('#')
        );
        assert_eq!(info_dtmf_digit(relay, b"Signal=10\r\n"), Some('*'));
        assert_eq!(info_dtmf_digit(relay, b"Signal=d\r\n"), Some('D'));
        assert_eq!(info_dtmf_digit(relay, b"Duration=160\r\n"), None);
        assert_eq!(info_dtmf_digit(relay, b"Signal=x\r\n"), None);
        assert_eq!(info_dtmf_digit(relay, b"Signal=16\r\n"), None);
        assert_eq!(info_dtmf_digit(relay, b"Signal=12a\r\n"), None);
        assert_eq!(info_dtmf_digit(relay, &[0xff]), None);
        assert_eq!(info_dtmf_digit("application/dtmf", b"7"), Some('7'));
        assert_eq!(
            info_dtmf_digit("Application/DTMF; charset=x", b" *\r\n"),
            Some('*')
        );
        assert_eq!(info_dtmf_digit("application/dtmf", b"11"), Some('#'));
        assert_eq!(info_dtmf_digit("application/dtmf", b""), None);
        // Other INFO packages carry no key, whatever their body says.
        assert_eq!(
            info_dtmf_digit("application/media_control+xml", b"Signal=5"),
            None
        );
        assert_eq!(info_dtmf_digit("", b"Signal=5"), None);
    }
}
