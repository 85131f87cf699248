//! Every transition and every hang-up / failure path of [`CallFlow`], driven on
//! virtual time: no sockets, no sleeping.

use std::time::{Duration, Instant};

use super::flow::*;
use crate::contract::pb::{CallRecord, EndReason};

const T0_MS: i64 = 1_700_000_000_000;

fn facts(operators: &[&str]) -> CallFacts {
    CallFacts {
        call_id: "6f1c2b1e-0000-4000-8000-000000000001".into(),
        sip_call_id: "abc@192.0.2.1".into(),
        line_number: "02112368".into(),
        court_name: "上海市第一中级人民法院".into(),
        caller_number: "13800138000".into(),
        caller_display_name: "张三".into(),
        codec: "PCMU".into(),
        prompt_id: "three_rules_zh".into(),
        prompt_sha256: "ab".repeat(32),
        prompt_length_ms: 12_000,
        operators: operators.iter().map(|s| s.to_string()).collect(),
        ring_timeout: Duration::from_secs(30),
        received_at_ms: T0_MS,
        ..CallFacts::default()
    }
}

/// A flow plus a virtual clock.
struct Harness {
    flow: CallFlow,
    t0: Instant,
    now: Instant,
}

impl Harness {
    fn new(facts: CallFacts) -> Harness {
        let t0 = Instant::now();
        Harness {
            flow: CallFlow::new(facts, t0),
            t0,
            now: t0,
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        if let Some(deadline) = self.flow.poll_timeout() {
            if deadline <= self.now {
                self.flow.handle_timeout(self.now);
            }
        }
    }

    fn input(&mut self, input: CallInput) {
        self.flow.handle_input(input, self.now);
    }

    /// Actions other than milestones (those have their own test).
    fn actions(&mut self) -> Vec<CallAction> {
        std::iter::from_fn(|| self.flow.poll_output())
            .filter(|a| !matches!(a, CallAction::Milestone(_)))
            .collect()
    }

    /// Only the milestones.
    fn milestones(&mut self) -> Vec<Milestone> {
        std::iter::from_fn(|| self.flow.poll_output())
            .filter_map(|a| match a {
                CallAction::Milestone(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// Answer, ACK, finish the prompt: the call is dialing the first operator.
    fn answer_and_play_prompt(&mut self) {
        assert_eq!(self.actions(), vec![CallAction::AnswerCaller]);
        self.advance(40);
        self.input(CallInput::CallerAcked);
        assert_eq!(self.actions(), vec![CallAction::StartPrompt]);
        self.advance(12_000);
        self.input(CallInput::PromptFinished);
        let first = self.flow.current_operator().unwrap().to_string();
        assert_eq!(
            self.actions(),
            vec![
                CallAction::StartRingback,
                CallAction::DialOperator { uri: first }
            ]
        );
    }

    /// A call on `operators` answered, warned and bridged to the first of them;
    /// the bridge's actions are checked and taken.
    fn bridged(operators: &[&str]) -> Harness {
        let mut h = Harness::new(facts(operators));
        h.answer_and_play_prompt();
        h.input(CallInput::OperatorAnswered);
        assert_eq!(
            h.actions(),
            vec![CallAction::Bridge, CallAction::WatchCallerMedia]
        );
        h
    }

    fn ms_since_start(&self) -> i64 {
        T0_MS + (self.now - self.t0).as_millis() as i64
    }
}

fn finished(actions: &[CallAction]) -> &CallRecord {
    match actions.last() {
        Some(CallAction::Finish(record)) => record,
        other => panic!("expected Finish last, got {other:?}"),
    }
}

fn reason(record: &CallRecord) -> EndReason {
    EndReason::try_from(record.end_reason).unwrap()
}

#[test]
fn happy_path_answer_prompt_dial_bridge_caller_hangs_up() {
    let mut h = Harness::new(facts(&["sip:op@127.0.0.1:5090"]));
    assert_eq!(h.flow.phase(), Phase::Answering);
    h.answer_and_play_prompt();
    assert_eq!(h.flow.phase(), Phase::DialingOperator { target: 0 });
    h.input(CallInput::OperatorRinging);
    assert!(h.actions().is_empty());
    h.advance(3_000);
    h.input(CallInput::OperatorAnswered);
    assert_eq!(
        h.actions(),
        vec![CallAction::Bridge, CallAction::WatchCallerMedia]
    );
    assert_eq!(h.flow.phase(), Phase::Bridged);
    let answered_at = h.ms_since_start();
    h.advance(60_000);
    h.input(CallInput::CallerHungUp);
    let actions = h.actions();
    assert_eq!(actions[0], CallAction::HangUpOperator);
    let r = finished(&actions);
    assert_eq!(reason(r), EndReason::CallerHungUp);
    assert!(r.prompt_completed);
    assert_eq!(r.sip_final_status, 200);
    assert_eq!(r.received_at_ms, T0_MS);
    assert_eq!(r.answered_at_ms, T0_MS);
    assert_eq!(r.prompt_started_at_ms, T0_MS + 40);
    assert_eq!(r.prompt_ended_at_ms, T0_MS + 12_040);
    assert_eq!(r.operator_answered_at_ms, answered_at);
    assert_eq!(r.ended_at_ms, h.ms_since_start());
    assert_eq!(r.operator_uri, "sip:op@127.0.0.1:5090");
    assert_eq!(r.caller_display_name, "张三");
    assert_eq!(h.flow.phase(), Phase::Ended);
    assert_eq!(h.flow.poll_timeout(), None);
}

#[test]
fn prompt_started_is_spooled_before_the_warning_and_the_bridge_before_its_milestone() {
    let mut h = Harness::new(facts(&["sip:op@h"]));
    assert_eq!(h.actions(), vec![CallAction::AnswerCaller]);
    h.input(CallInput::CallerAcked);
    let all: Vec<CallAction> = std::iter::from_fn(|| h.flow.poll_output()).collect();
    assert_eq!(
        all,
        vec![
            CallAction::Milestone(Milestone::PromptStarted),
            CallAction::StartPrompt,
        ],
        "write-ahead: a caller who heard the warning has it on record"
    );
    h.input(CallInput::PromptFinished);
    h.actions();
    h.input(CallInput::OperatorAnswered);
    let all: Vec<CallAction> = std::iter::from_fn(|| h.flow.poll_output()).collect();
    assert_eq!(
        all,
        vec![
            CallAction::Bridge,
            CallAction::WatchCallerMedia,
            CallAction::Milestone(Milestone::OperatorAnswered),
        ],
        "the caller's first words are not held up by the spool"
    );
}

#[test]
fn operator_hangs_up_bridged_call() {
    let mut h = Harness::bridged(&["sip:op@h"]);
    h.input(CallInput::OperatorHungUp);
    let actions = h.actions();
    assert_eq!(actions[0], CallAction::HangUpCaller);
    assert_eq!(reason(finished(&actions)), EndReason::OperatorHungUp);
}

#[test]
fn keys_during_prompt_are_recorded_and_change_nothing() {
    let mut h = Harness::new(facts(&["sip:op@h"]));
    h.actions();
    h.input(CallInput::CallerAcked);
    h.actions();
    for d in ['1', '0', '#'] {
        h.input(CallInput::CallerDtmf(d));
        assert!(h.actions().is_empty(), "a key must not skip the prompt");
        assert_eq!(h.flow.phase(), Phase::Prompting);
    }
    h.input(CallInput::CallerHungUp);
    let actions = h.actions();
    let r = finished(&actions);
    assert_eq!(r.dtmf_during_prompt, "10#");
    assert_eq!(reason(r), EndReason::CallerHungUpDuringPrompt);
}

#[test]
fn keys_in_the_bridge_are_passed_to_the_other_party_and_not_recorded() {
    let mut h = Harness::new(facts(&["sip:op@h"]));
    h.answer_and_play_prompt();
    // While the operator rings, a key goes nowhere.
    h.input(CallInput::CallerDtmf('7'));
    h.input(CallInput::OperatorDtmf {
        digit: '7',
        via: KeyVia::SipInfo,
    });
    assert!(h.actions().is_empty());
    h.input(CallInput::OperatorAnswered);
    h.actions();
    h.input(CallInput::CallerDtmf('4'));
    h.input(CallInput::OperatorDtmf {
        digit: '*',
        via: KeyVia::Rfc4733,
    });
    assert_eq!(
        h.actions(),
        vec![
            CallAction::SendDtmf {
                to: Party::Operator,
                digit: '4'
            },
            CallAction::SendDtmf {
                to: Party::Caller,
                digit: '*'
            }
        ]
    );
    assert_eq!(h.flow.phase(), Phase::Bridged);
    h.input(CallInput::CallerHungUp);
    let actions = h.actions();
    assert_eq!(finished(&actions).dtmf_during_prompt, "");
}

/// A call bridged to "sip:op@h" whose report sequence is "*7" with a 1.5 s timeout.
fn bridged_with_report_keys() -> Harness {
    let mut h = Harness::new(CallFacts {
        report_keys: "*7".into(),
        report_key_timeout: Duration::from_millis(1500),
        ..facts(&["sip:op@h"])
    });
    h.answer_and_play_prompt();
    h.input(CallInput::OperatorAnswered);
    h.actions();
    h
}

fn operator_key(digit: char, via: KeyVia) -> CallInput {
    CallInput::OperatorDtmf { digit, via }
}

fn to_caller(digit: char) -> CallAction {
    CallAction::SendDtmf {
        to: Party::Caller,
        digit,
    }
}

#[test]
fn the_report_sequence_confirms_to_the_operator_and_records_a_request() {
    for via in [KeyVia::Rfc4733, KeyVia::SipInfo] {
        let mut h = bridged_with_report_keys();
        h.input(operator_key('*', via));
        assert_eq!(h.flow.poll_output(), None, "'*' is held back");
        h.advance(500);
        h.input(operator_key('7', via));
        assert_eq!(
            std::iter::from_fn(|| h.flow.poll_output()).collect::<Vec<_>>(),
            vec![
                CallAction::Milestone(Milestone::ReportRequested {
                    operator: "sip:op@h".into(),
                    via
                }),
                CallAction::ConfirmReportToOperator,
            ],
            "nothing of it reaches the caller"
        );
        let wire = Milestone::ReportRequested {
            operator: "sip:op@h".into(),
            via,
        }
        .to_wire(h.flow.record());
        assert_eq!(
            wire.milestone(),
            crate::contract::pb::Milestone::ReportRequested
        );
        assert_eq!(wire.operator_uri, "sip:op@h");
        assert_eq!(wire.report_via, via.name());
        // Nothing is held: no timer.
        assert_eq!(h.flow.poll_timeout(), None);
        // A second request in the same call is recorded too.
        h.input(operator_key('*', via));
        h.input(operator_key('7', via));
        assert_eq!(h.milestones().len(), 1);
        assert_eq!(h.flow.phase(), Phase::Bridged);
    }
}

#[test]
fn held_operator_keys_reach_the_caller_in_order() {
    let mut h = bridged_with_report_keys();
    // An ordinary key passes at once.
    h.input(operator_key('5', KeyVia::Rfc4733));
    assert_eq!(h.actions(), vec![to_caller('5')]);
    // A lone '*' waits for the timeout, then passes.
    h.input(operator_key('*', KeyVia::Rfc4733));
    assert!(h.actions().is_empty());
    assert_eq!(
        h.flow.poll_timeout(),
        Some(h.now + Duration::from_millis(1500))
    );
    h.advance(1499);
    assert!(h.actions().is_empty());
    h.advance(1);
    assert_eq!(h.actions(), vec![to_caller('*')]);
    assert_eq!(h.flow.poll_timeout(), None);
    // '*' then '5': both, in order, as soon as '5' shows it is no request.
    h.input(operator_key('*', KeyVia::SipInfo));
    h.advance(200);
    h.input(operator_key('5', KeyVia::SipInfo));
    assert_eq!(h.actions(), vec![to_caller('*'), to_caller('5')]);
    // Keys still held when the call ends are dropped with it.
    h.input(operator_key('*', KeyVia::SipInfo));
    h.input(CallInput::CallerHungUp);
    assert_eq!(h.flow.poll_timeout(), None);
    // The caller's keys are never held.
    let mut h = bridged_with_report_keys();
    h.input(CallInput::CallerDtmf('*'));
    assert_eq!(
        h.actions(),
        vec![CallAction::SendDtmf {
            to: Party::Operator,
            digit: '*'
        }]
    );
}

#[test]
fn hang_up_during_prompt_dials_nobody() {
    let mut h = Harness::new(facts(&["sip:op@h"]));
    h.actions();
    h.input(CallInput::CallerAcked);
    h.actions();
    h.advance(5_000);
    h.input(CallInput::CallerHungUp);
    let actions = h.actions();
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, CallAction::DialOperator { .. })),
        "{actions:?}"
    );
    assert_eq!(
        actions.len(),
        1,
        "no BYE to send back: the caller already hung up"
    );
    let r = finished(&actions);
    assert!(!r.prompt_completed);
    assert_eq!(r.prompt_ended_at_ms - r.prompt_started_at_ms, 5_000);
    assert_eq!(r.operator_uri, "");
    // A late PromptFinished from the media engine after the end changes nothing.
    h.input(CallInput::PromptFinished);
    assert!(h.actions().is_empty());
}

#[test]
fn cancel_before_answer_is_recorded_as_abandoned() {
    let mut f = facts(&["sip:op@h"]);
    f.answer_delay = Duration::from_secs(2);
    let mut h = Harness::new(f);
    assert_eq!(h.actions(), vec![CallAction::RingCaller]);
    assert_eq!(h.flow.phase(), Phase::Ringing);
    h.advance(500);
    h.input(CallInput::CallerCancelled);
    let actions = h.actions();
    assert_eq!(actions.len(), 1);
    let r = finished(&actions);
    assert_eq!(reason(r), EndReason::CancelledBeforeAnswer);
    assert_eq!(r.sip_final_status, 487);
    assert_eq!(r.answered_at_ms, 0);
    assert_eq!(h.flow.poll_timeout(), None, "answer timer must be gone");
}

#[test]
fn answer_delay_rings_then_answers() {
    let mut f = facts(&["sip:op@h"]);
    f.answer_delay = Duration::from_millis(1500);
    let mut h = Harness::new(f);
    assert_eq!(h.actions(), vec![CallAction::RingCaller]);
    h.advance(1499);
    assert!(h.actions().is_empty());
    h.advance(1);
    assert_eq!(h.actions(), vec![CallAction::AnswerCaller]);
    assert_eq!(h.flow.phase(), Phase::Answering);
}

#[test]
fn caller_bye_before_ack() {
    let mut h = Harness::new(facts(&["sip:op@h"]));
    h.actions();
    h.input(CallInput::CallerHungUp);
    let actions = h.actions();
    assert_eq!(
        reason(finished(&actions)),
        EndReason::CallerHungUpDuringPrompt
    );
}

#[test]
fn busy_operator_ends_call_with_bye() {
    for (status, expected) in [
        (486, EndReason::OperatorBusy),
        (600, EndReason::OperatorBusy),
        (603, EndReason::OperatorBusy),
        (480, EndReason::NoAnswer),
        (404, EndReason::OperatorUnreachable),
        (503, EndReason::OperatorUnreachable),
    ] {
        let mut h = Harness::new(facts(&["sip:op@h"]));
        h.answer_and_play_prompt();
        h.input(CallInput::OperatorFailed(OperatorFailure::Status(status)));
        let actions = h.actions();
        assert_eq!(actions[0], CallAction::HangUpCaller, "{status}");
        let r = finished(&actions);
        assert_eq!(reason(r), expected, "{status}");
        assert!(r.prompt_completed);
        assert_eq!(r.operator_answered_at_ms, 0);
    }
}

#[test]
fn unreachable_operator() {
    let mut h = Harness::new(facts(&["sip:op@h"]));
    h.answer_and_play_prompt();
    h.input(CallInput::OperatorFailed(OperatorFailure::Unreachable));
    let actions = h.actions();
    assert_eq!(reason(finished(&actions)), EndReason::OperatorUnreachable);
}

#[test]
fn ring_timeout_cancels_and_ends() {
    let mut h = Harness::new(facts(&["sip:op@h"]));
    h.answer_and_play_prompt();
    let deadline = h.flow.poll_timeout().unwrap();
    assert_eq!(deadline - h.now, Duration::from_secs(30));
    h.advance(29_999);
    assert!(h.actions().is_empty());
    h.advance(1);
    let actions = h.actions();
    assert_eq!(actions[0], CallAction::CancelOperator);
    assert_eq!(actions[1], CallAction::HangUpCaller);
    assert_eq!(reason(finished(&actions)), EndReason::NoAnswer);
}

#[test]
fn hunt_list_tries_each_operator_in_order() {
    let mut h = Harness::new(facts(&["sip:a@h", "sip:b@h", "sip:c@h"]));
    h.answer_and_play_prompt();
    h.input(CallInput::OperatorFailed(OperatorFailure::Status(486)));
    assert_eq!(
        h.actions(),
        vec![CallAction::DialOperator {
            uri: "sip:b@h".into()
        }]
    );
    assert_eq!(h.flow.phase(), Phase::DialingOperator { target: 1 });
    h.advance(30_000);
    assert_eq!(
        h.actions(),
        vec![
            CallAction::CancelOperator,
            CallAction::DialOperator {
                uri: "sip:c@h".into()
            }
        ]
    );
    h.input(CallInput::OperatorAnswered);
    assert_eq!(
        h.actions(),
        vec![CallAction::Bridge, CallAction::WatchCallerMedia]
    );
    assert_eq!(h.flow.current_operator(), Some("sip:c@h"));
}

#[test]
fn a_target_with_its_own_ring_timeout_rings_for_that_long() {
    let mut f = facts(&["sip:a@h", "sip:b@h"]);
    f.target_ring_timeouts = [("sip:b@h".to_string(), Duration::from_secs(10))].into();
    let mut h = Harness::new(f);
    h.answer_and_play_prompt();
    assert_eq!(
        h.flow.poll_timeout().unwrap() - h.now,
        Duration::from_secs(30)
    );
    h.advance(30_000);
    h.actions();
    assert_eq!(h.flow.current_operator(), Some("sip:b@h"));
    assert_eq!(
        h.flow.poll_timeout().unwrap() - h.now,
        Duration::from_secs(10)
    );
    h.advance(10_000);
    let actions = h.actions();
    assert_eq!(actions[0], CallAction::CancelOperator);
    assert_eq!(reason(finished(&actions)), EndReason::NoAnswer);
}

#[test]
fn hunt_list_exhausted_reports_last_failure() {
    let mut h = Harness::new(facts(&["sip:a@h", "sip:b@h"]));
    h.answer_and_play_prompt();
    h.input(CallInput::OperatorFailed(OperatorFailure::Status(486)));
    h.actions();
    h.input(CallInput::OperatorFailed(OperatorFailure::Unreachable));
    let actions = h.actions();
    let r = finished(&actions);
    assert_eq!(reason(r), EndReason::OperatorUnreachable);
    assert_eq!(r.operator_uri, "sip:b@h");
}

#[test]
fn caller_hangs_up_while_operator_rings() {
    let mut h = Harness::new(facts(&["sip:op@h"]));
    h.answer_and_play_prompt();
    h.input(CallInput::OperatorRinging);
    h.input(CallInput::CallerHungUp);
    let actions = h.actions();
    assert_eq!(actions[0], CallAction::CancelOperator);
    assert_eq!(reason(finished(&actions)), EndReason::CallerHungUp);
    assert_eq!(h.flow.poll_timeout(), None);
}

#[test]
fn faults_hang_up_whatever_is_up() {
    // During the prompt: only the caller is up.
    let mut h = Harness::new(facts(&["sip:op@h"]));
    h.actions();
    h.input(CallInput::CallerAcked);
    h.actions();
    h.input(CallInput::Fault("socket closed".into()));
    let actions = h.actions();
    assert_eq!(actions[0], CallAction::HangUpCaller);
    assert_eq!(reason(finished(&actions)), EndReason::Error);

    // While dialing: cancel the operator too.
    let mut h = Harness::new(facts(&["sip:op@h"]));
    h.answer_and_play_prompt();
    h.input(CallInput::Fault("bad SDP from operator".into()));
    let actions = h.actions();
    assert_eq!(
        actions[..2],
        [CallAction::CancelOperator, CallAction::HangUpCaller]
    );

    // Bridged: both legs get BYE.
    let mut h = Harness::bridged(&["sip:op@h"]);
    h.input(CallInput::Fault("relay failed".into()));
    let actions = h.actions();
    assert_eq!(
        actions[..2],
        [CallAction::HangUpOperator, CallAction::HangUpCaller]
    );

    // While still ringing the caller: the INVITE gets a 500 instead of a BYE.
    let mut f = facts(&["sip:op@h"]);
    f.answer_delay = Duration::from_secs(1);
    let mut h = Harness::new(f);
    h.actions();
    h.input(CallInput::Fault("x".into()));
    let actions = h.actions();
    assert_eq!(actions[0], CallAction::RejectCaller { status: 500 });
    let r = finished(&actions);
    assert_eq!(r.sip_final_status, 500);
    assert_eq!(r.answered_at_ms, 0);
}

#[test]
fn shutdown_ends_the_call_in_any_phase_recorded_as_shutdown() {
    // Bridged: both legs get BYE.
    let mut h = Harness::bridged(&["sip:op@h"]);
    h.input(CallInput::Shutdown);
    let actions = h.actions();
    assert_eq!(
        actions[..2],
        [CallAction::HangUpOperator, CallAction::HangUpCaller]
    );
    assert_eq!(reason(finished(&actions)), EndReason::Shutdown);

    // During the warning: recorded as interrupted, not completed.
    let mut h = Harness::new(facts(&["sip:op@h"]));
    h.actions();
    h.input(CallInput::CallerAcked);
    h.actions();
    h.input(CallInput::Shutdown);
    let actions = h.actions();
    let r = finished(&actions);
    assert_eq!(reason(r), EndReason::Shutdown);
    assert!(!r.prompt_completed);
}

#[test]
fn ended_call_ignores_everything() {
    let mut h = Harness::new(facts(&["sip:op@h"]));
    h.answer_and_play_prompt();
    h.input(CallInput::CallerHungUp);
    h.actions();
    for input in [
        CallInput::OperatorAnswered,
        CallInput::OperatorHungUp,
        CallInput::CallerHungUp,
        CallInput::PromptFinished,
        CallInput::Fault("late".into()),
    ] {
        h.input(input);
        assert!(h.actions().is_empty());
    }
    h.advance(100_000);
    assert!(h.actions().is_empty());
}

#[test]
fn stale_events_change_nothing() {
    let mut h = Harness::new(facts(&["sip:op@h"]));
    h.actions();
    // Operator events before any operator was called, a PromptFinished before ACK.
    for input in [
        CallInput::OperatorAnswered,
        CallInput::OperatorHungUp,
        CallInput::OperatorRinging,
        CallInput::PromptFinished,
        CallInput::CallerDtmf('5'),
    ] {
        h.input(input);
        assert!(h.actions().is_empty());
        assert_eq!(h.flow.phase(), Phase::Answering);
    }
    h.input(CallInput::CallerAcked);
    h.actions();
    h.input(CallInput::CallerAcked);
    assert!(
        h.actions().is_empty(),
        "a retransmitted ACK must not restart the prompt"
    );
    h.input(CallInput::CallerCancelled);
    assert!(h.actions().is_empty(), "CANCEL after answer is ignored");
}

#[test]
fn rejected_record() {
    let f = facts(&[]);
    let r = CallFlow::rejected(&f, 404);
    assert_eq!(reason(&r), EndReason::Rejected);
    assert_eq!(r.sip_final_status, 404);
    assert_eq!(r.ended_at_ms, T0_MS);
    assert!(!r.prompt_completed);
}

/// Each action with whether a milestone follows it, as the adapter sees them.
fn actions_with_follows(h: &mut Harness) -> Vec<(CallAction, bool)> {
    std::iter::from_fn(|| {
        let action = h.flow.poll_output()?;
        Some((action, h.flow.milestone_follows()))
    })
    .collect()
}

#[test]
fn a_run_of_milestones_is_told_apart_from_its_last() {
    let mut h = Harness::new(facts(&["sip:a@h"]));
    // Received and Answered wait for one fsync, Answered's, before the 200 OK.
    assert_eq!(
        actions_with_follows(&mut h),
        vec![
            (CallAction::Milestone(Milestone::Received), true),
            (CallAction::Milestone(Milestone::Answered), false),
            (CallAction::AnswerCaller, false),
        ]
    );
    h.input(CallInput::CallerAcked);
    assert_eq!(
        actions_with_follows(&mut h),
        vec![
            (CallAction::Milestone(Milestone::PromptStarted), false),
            (CallAction::StartPrompt, false),
        ]
    );
    // Ringback starts between the two, so each waits for its own.
    h.input(CallInput::PromptFinished);
    assert_eq!(
        actions_with_follows(&mut h),
        vec![
            (CallAction::Milestone(Milestone::PromptFinished), false),
            (CallAction::StartRingback, true),
            (
                CallAction::Milestone(Milestone::OperatorDialed {
                    uri: "sip:a@h".into()
                }),
                false
            ),
            (
                CallAction::DialOperator {
                    uri: "sip:a@h".into()
                },
                false
            ),
        ]
    );
}

#[test]
fn milestones_trace_the_call_for_the_spool() {
    let mut h = Harness::new(facts(&["sip:a@h", "sip:b@h"]));
    assert_eq!(
        h.milestones(),
        vec![Milestone::Received, Milestone::Answered]
    );
    h.input(CallInput::CallerAcked);
    assert_eq!(h.milestones(), vec![Milestone::PromptStarted]);
    assert!(
        h.flow.record().prompt_started_at_ms > 0,
        "snapshot is current"
    );
    h.input(CallInput::PromptFinished);
    assert_eq!(
        h.milestones(),
        vec![
            Milestone::PromptFinished,
            Milestone::OperatorDialed {
                uri: "sip:a@h".into()
            }
        ]
    );
    h.input(CallInput::OperatorFailed(OperatorFailure::Status(486)));
    assert_eq!(
        h.milestones(),
        vec![
            Milestone::OperatorFailed {
                reason: EndReason::OperatorBusy
            },
            Milestone::OperatorDialed {
                uri: "sip:b@h".into()
            }
        ]
    );
    h.input(CallInput::OperatorRinging);
    h.input(CallInput::OperatorAnswered);
    assert_eq!(
        h.milestones(),
        vec![Milestone::OperatorRinging, Milestone::OperatorAnswered]
    );

    let mut h = Harness::new(facts(&["sip:a@h"]));
    h.milestones();
    h.input(CallInput::CallerAcked);
    h.input(CallInput::CallerHungUp);
    assert_eq!(
        h.milestones(),
        vec![Milestone::PromptStarted, Milestone::PromptInterrupted]
    );

    let mut h = Harness::new(facts(&["sip:a@h"]));
    h.answer_and_play_prompt();
    h.advance(30_000);
    assert_eq!(
        h.milestones(),
        vec![Milestone::OperatorFailed {
            reason: EndReason::NoAnswer
        }]
    );
}

#[test]
fn delayed_offer_sets_codec_at_ack() {
    let mut f = facts(&["sip:op@h"]);
    f.codec = String::new();
    let mut h = Harness::new(f);
    h.actions();
    h.input(CallInput::CodecAgreed("PCMA".into()));
    h.input(CallInput::CallerAcked);
    assert_eq!(h.actions(), vec![CallAction::StartPrompt]);
    h.input(CallInput::CallerHungUp);
    let actions = h.actions();
    assert_eq!(finished(&actions).codec, "PCMA");
}

#[test]
fn missing_ack_ends_as_no_ack_without_a_second_bye() {
    let mut h = Harness::new(facts(&["sip:op@h"]));
    h.actions();
    h.advance(32_000);
    h.input(CallInput::CallerAckTimeout);
    let actions = h.actions();
    assert_eq!(actions.len(), 1, "the stack already sent BYE: {actions:?}");
    let r = finished(&actions);
    assert_eq!(reason(r), EndReason::NoAck);
    assert_eq!(r.sip_final_status, 200);
    assert_eq!(r.prompt_started_at_ms, 0);
    // After the prompt started an ACK timeout cannot happen; it is ignored.
    let mut h = Harness::new(facts(&["sip:op@h"]));
    h.actions();
    h.input(CallInput::CallerAcked);
    h.actions();
    h.input(CallInput::CallerAckTimeout);
    assert!(h.actions().is_empty());
}

#[test]
fn expired_session_hangs_up_both_legs() {
    let mut h = Harness::bridged(&["sip:op@h"]);
    h.input(CallInput::SessionExpired);
    let actions = h.actions();
    assert_eq!(
        actions[..2],
        [CallAction::HangUpOperator, CallAction::HangUpCaller]
    );
    assert_eq!(reason(finished(&actions)), EndReason::SessionExpired);
}

#[test]
fn caller_media_is_watched_from_the_bridge_not_while_courtline_talks() {
    // A phone that suppresses silence sends nothing while it listens: the
    // warning (12 s here, longer than a 10 s timeout would be) and the
    // ringback must not count as the caller's silence.
    let mut h = Harness::new(facts(&["sip:op@h"]));
    h.actions();
    h.input(CallInput::CallerAcked);
    assert_eq!(h.actions(), vec![CallAction::StartPrompt], "no watch yet");
    h.advance(12_000);
    h.input(CallInput::PromptFinished);
    assert!(!h.actions().contains(&CallAction::WatchCallerMedia));
    h.advance(20_000);
    h.input(CallInput::OperatorAnswered);
    assert_eq!(
        h.actions(),
        vec![CallAction::Bridge, CallAction::WatchCallerMedia]
    );

    // Silent from then on: both legs get a BYE.
    h.advance(30_000);
    h.input(CallInput::CallerMediaTimeout);
    let actions = h.actions();
    assert_eq!(
        actions[..2],
        [CallAction::HangUpOperator, CallAction::HangUpCaller]
    );
    let r = finished(&actions);
    assert_eq!(reason(r), EndReason::MediaTimeout);
    assert!(r.prompt_completed);
}

#[test]
fn a_stray_media_timeout_before_the_bridge_changes_nothing() {
    // During the warning.
    let mut h = Harness::new(facts(&["sip:op@h"]));
    h.actions();
    h.input(CallInput::CallerAcked);
    h.actions();
    h.input(CallInput::CallerMediaTimeout);
    assert!(h.actions().is_empty());
    assert_eq!(h.flow.phase(), Phase::Prompting);
    // While the operator rings.
    let mut h = Harness::new(facts(&["sip:op@h"]));
    h.answer_and_play_prompt();
    h.input(CallInput::CallerMediaTimeout);
    assert!(h.actions().is_empty());
    assert_eq!(h.flow.phase(), Phase::DialingOperator { target: 0 });
}

#[test]
fn media_timeout_before_the_ack_changes_nothing() {
    // The adapter only watches media after the ACK; a stray event is ignored.
    let mut h = Harness::new(facts(&["sip:op@h"]));
    h.actions();
    h.input(CallInput::CallerMediaTimeout);
    assert!(h.actions().is_empty());
    assert_eq!(h.flow.phase(), Phase::Answering);
}

fn early_media(operators: &[&str]) -> Harness {
    let mut f = facts(operators);
    f.early_media = true;
    Harness::new(f)
}

#[test]
fn early_media_plays_the_warning_unanswered_and_answers_when_the_operator_does() {
    let mut h = early_media(&["sip:op@h"]);
    assert_eq!(h.flow.phase(), Phase::Prompting);
    let start: Vec<CallAction> = std::iter::from_fn(|| h.flow.poll_output()).collect();
    assert_eq!(
        start,
        vec![
            CallAction::Milestone(Milestone::Received),
            CallAction::ProgressCaller,
            CallAction::Milestone(Milestone::PromptStarted),
            CallAction::StartPrompt,
        ],
        "183 with SDP, then the warning at once: no 200, no ACK to wait for"
    );
    h.input(CallInput::CallerDtmf('5'));
    h.advance(12_000);
    h.input(CallInput::PromptFinished);
    assert_eq!(
        h.actions(),
        vec![
            CallAction::StartRingback,
            CallAction::DialOperator {
                uri: "sip:op@h".into()
            }
        ]
    );
    h.input(CallInput::OperatorRinging);
    assert_eq!(h.milestones(), vec![Milestone::OperatorRinging]);
    h.advance(4_000);
    h.input(CallInput::OperatorAnswered);
    let answered: Vec<CallAction> = std::iter::from_fn(|| h.flow.poll_output()).collect();
    assert_eq!(
        answered,
        vec![
            CallAction::Bridge,
            CallAction::Milestone(Milestone::OperatorAnswered),
            CallAction::Milestone(Milestone::Answered),
            CallAction::AnswerCaller,
        ],
        "the caller's 200 OK only when the operator answers; media first"
    );
    let answered_at = h.ms_since_start();
    h.advance(30);
    h.input(CallInput::CallerAcked);
    assert_eq!(h.actions(), vec![CallAction::WatchCallerMedia]);
    h.advance(60_000);
    h.input(CallInput::CallerHungUp);
    let actions = h.actions();
    assert_eq!(actions[0], CallAction::HangUpOperator);
    let r = finished(&actions);
    assert_eq!(reason(r), EndReason::CallerHungUp);
    assert_eq!(r.answered_at_ms, answered_at);
    assert_eq!(r.operator_answered_at_ms, answered_at);
    assert_eq!(
        r.prompt_started_at_ms, T0_MS,
        "warning started with the 183"
    );
    assert!(r.prompt_completed);
    assert_eq!(r.dtmf_during_prompt, "5");
    assert_eq!(r.sip_final_status, 200);
}

#[test]
fn early_media_cancel_during_the_warning_or_the_ringback_is_recorded() {
    // During the warning: the stack answered the CANCEL with 487; nothing to hang up.
    let mut h = early_media(&["sip:op@h"]);
    h.actions();
    h.advance(5_000);
    h.input(CallInput::CallerCancelled);
    let actions: Vec<CallAction> = std::iter::from_fn(|| h.flow.poll_output()).collect();
    assert_eq!(
        actions[0],
        CallAction::Milestone(Milestone::PromptInterrupted)
    );
    assert_eq!(actions.len(), 2, "{actions:?}");
    let r = finished(&actions);
    assert_eq!(reason(r), EndReason::CallerHungUpDuringPrompt);
    assert_eq!(r.sip_final_status, 487);
    assert_eq!(r.answered_at_ms, 0);
    assert!(!r.prompt_completed);
    assert_eq!(r.prompt_ended_at_ms, h.ms_since_start());

    // During the ringback: the operator attempt is cancelled too.
    let mut h = early_media(&["sip:op@h"]);
    h.actions();
    h.advance(12_000);
    h.input(CallInput::PromptFinished);
    h.actions();
    h.advance(3_000);
    h.input(CallInput::CallerCancelled);
    let actions = h.actions();
    assert_eq!(actions[0], CallAction::CancelOperator);
    assert_eq!(actions.len(), 2, "{actions:?}");
    let r = finished(&actions);
    assert_eq!(reason(r), EndReason::CallerHungUp);
    assert_eq!(r.sip_final_status, 487);
    assert!(r.prompt_completed);
    assert_eq!(r.answered_at_ms, 0);
    assert_eq!(h.flow.poll_timeout(), None);
}

#[test]
fn early_media_caller_is_refused_the_way_the_operators_failed() {
    // Busy: 486 to the unanswered INVITE, never a BYE.
    let mut h = early_media(&["sip:op@h"]);
    h.actions();
    h.input(CallInput::PromptFinished);
    h.actions();
    h.input(CallInput::OperatorFailed(OperatorFailure::Status(486)));
    let actions = h.actions();
    assert_eq!(actions[0], CallAction::RejectCaller { status: 486 });
    let r = finished(&actions);
    assert_eq!(reason(r), EndReason::OperatorBusy);
    assert_eq!(r.sip_final_status, 486);

    // Nobody answers in time on a two-operator hunt list: 480.
    let mut h = early_media(&["sip:a@h", "sip:b@h"]);
    h.actions();
    h.input(CallInput::PromptFinished);
    h.actions();
    h.advance(30_000);
    assert_eq!(
        h.actions(),
        vec![
            CallAction::CancelOperator,
            CallAction::DialOperator {
                uri: "sip:b@h".into()
            }
        ]
    );
    h.advance(30_000);
    let actions = h.actions();
    assert_eq!(
        actions[..2],
        [
            CallAction::CancelOperator,
            CallAction::RejectCaller { status: 480 }
        ]
    );
    let r = finished(&actions);
    assert_eq!(reason(r), EndReason::NoAnswer);
    assert_eq!(r.sip_final_status, 480);
    assert_eq!(r.answered_at_ms, 0);

    // A fault during the warning: 500, not a BYE.
    let mut h = early_media(&["sip:op@h"]);
    h.actions();
    h.input(CallInput::Fault("socket".into()));
    let actions = h.actions();
    assert_eq!(actions[0], CallAction::RejectCaller { status: 500 });
    assert_eq!(reason(finished(&actions)), EndReason::Error);
}

#[test]
fn early_media_without_ack_after_the_answer_hangs_up_the_operator() {
    let mut h = early_media(&["sip:op@h"]);
    h.actions();
    h.input(CallInput::PromptFinished);
    h.input(CallInput::OperatorAnswered);
    h.actions();
    h.advance(32_000);
    h.input(CallInput::CallerAckTimeout);
    let actions = h.actions();
    assert_eq!(actions[0], CallAction::HangUpOperator);
    assert_eq!(actions.len(), 2, "the stack already sent the caller BYE");
    assert_eq!(reason(finished(&actions)), EndReason::NoAck);
}

#[test]
fn early_media_after_an_answer_delay_rings_first() {
    let mut f = facts(&["sip:op@h"]);
    f.early_media = true;
    f.answer_delay = Duration::from_millis(2_000);
    let mut h = Harness::new(f);
    assert_eq!(h.actions(), vec![CallAction::RingCaller]);
    assert_eq!(h.flow.phase(), Phase::Ringing);
    h.advance(2_000);
    assert_eq!(
        h.actions(),
        vec![CallAction::ProgressCaller, CallAction::StartPrompt]
    );
    assert_eq!(h.flow.phase(), Phase::Prompting);
}

#[test]
fn a_refused_operator_is_abandoned_at_once_and_the_next_one_dialled() {
    let mut h = Harness::new(facts(&["sip:closed@h", "sip:live@h"]));
    h.answer_and_play_prompt();
    // The transport reports the first target unreachable 5 ms into a 30 s ring timeout.
    h.advance(5);
    h.input(CallInput::OperatorFailed(OperatorFailure::Refused));
    let all: Vec<CallAction> = std::iter::from_fn(|| h.flow.poll_output()).collect();
    assert_eq!(
        all,
        vec![
            CallAction::CancelOperator,
            CallAction::Milestone(Milestone::OperatorFailed {
                reason: EndReason::OperatorUnreachable
            }),
            CallAction::Milestone(Milestone::OperatorDialed {
                uri: "sip:live@h".into()
            }),
            CallAction::DialOperator {
                uri: "sip:live@h".into()
            },
        ]
    );
    assert_eq!(h.flow.phase(), Phase::DialingOperator { target: 1 });
    assert_eq!(
        h.flow.poll_timeout(),
        Some(h.now + Duration::from_secs(30)),
        "the next target gets its whole ring timeout"
    );
    h.input(CallInput::OperatorAnswered);
    assert_eq!(
        h.actions(),
        vec![CallAction::Bridge, CallAction::WatchCallerMedia]
    );
    // A late verdict about an attempt that is over changes nothing.
    h.input(CallInput::OperatorFailed(OperatorFailure::Refused));
    assert!(h.actions().is_empty());
    assert_eq!(h.flow.phase(), Phase::Bridged);
}

#[test]
fn the_last_operator_refused_ends_the_call_as_unreachable() {
    let mut h = Harness::new(facts(&["sip:closed@h"]));
    h.answer_and_play_prompt();
    h.advance(5);
    h.input(CallInput::OperatorFailed(OperatorFailure::Refused));
    let actions = h.actions();
    assert_eq!(
        actions[..2],
        [CallAction::CancelOperator, CallAction::HangUpCaller]
    );
    let r = finished(&actions);
    assert_eq!(reason(r), EndReason::OperatorUnreachable);
    assert_eq!(r.operator_uri, "sip:closed@h");
    assert_eq!(r.ended_at_ms - r.prompt_ended_at_ms, 5);

    // On an early-media line the unanswered INVITE is refused 480.
    let mut h = early_media(&["sip:closed@h"]);
    h.actions();
    h.input(CallInput::PromptFinished);
    h.actions();
    h.input(CallInput::OperatorFailed(OperatorFailure::Refused));
    let actions = h.actions();
    assert_eq!(
        actions[..2],
        [
            CallAction::CancelOperator,
            CallAction::RejectCaller { status: 480 }
        ]
    );
    assert_eq!(reason(finished(&actions)), EndReason::OperatorUnreachable);
}

/// Outside office hours with no duty number: the after-hours playlist, then
/// a polite end instead of ringback.
fn after_hours(early: bool) -> Harness {
    let mut f = facts(&[]);
    f.after_hours = true;
    f.early_media = early;
    Harness::new(f)
}

#[test]
fn after_hours_without_a_duty_number_hangs_up_once_the_playlist_has_played() {
    let mut h = after_hours(false);
    assert_eq!(h.actions(), vec![CallAction::AnswerCaller]);
    h.input(CallInput::CallerAcked);
    assert_eq!(h.actions(), vec![CallAction::StartPrompt]);
    h.advance(12_000);
    h.input(CallInput::PromptFinished);
    let actions = h.actions();
    assert_eq!(actions[0], CallAction::HangUpCaller, "{actions:?}");
    let record = finished(&actions);
    assert_eq!(reason(record), EndReason::AfterHours);
    assert!(record.prompt_completed, "the whole playlist was heard");
    assert_eq!(h.flow.phase(), Phase::Ended);
}

#[test]
fn after_hours_on_an_early_media_line_ends_unanswered_with_480() {
    let mut h = after_hours(true);
    h.actions();
    h.advance(12_000);
    h.input(CallInput::PromptFinished);
    let actions = h.actions();
    assert_eq!(
        actions[0],
        CallAction::RejectCaller { status: 480 },
        "{actions:?}"
    );
    let record = finished(&actions);
    assert_eq!(reason(record), EndReason::AfterHours);
    assert_eq!(record.sip_final_status, 480);
}

/// A synthetic probe with nobody to dial.
fn probe() -> Harness {
    let mut f = facts(&[]);
    f.probe = true;
    Harness::new(f)
}

#[test]
fn a_probe_hears_the_warning_then_ringback_and_hangs_up_itself_without_an_operator() {
    let mut h = probe();
    assert_eq!(h.actions(), vec![CallAction::AnswerCaller]);
    h.input(CallInput::CallerAcked);
    assert_eq!(h.actions(), vec![CallAction::StartPrompt]);
    h.advance(12_000);
    h.input(CallInput::PromptFinished);
    assert_eq!(h.actions(), vec![CallAction::StartRingback]);
    assert_eq!(h.flow.phase(), Phase::ProbeHeard);
    assert_eq!(h.flow.current_operator(), None, "nobody is dialled");
    h.advance(500);
    h.input(CallInput::CallerHungUp);
    let actions = h.actions();
    let record = finished(&actions);
    assert_eq!(reason(record), EndReason::CallerHungUp);
    assert!(record.probe && record.prompt_completed);
    assert_eq!(record.operator_uri, "");
}

#[test]
fn a_probe_of_an_early_media_line_cancels_after_the_warning() {
    let mut f = facts(&[]);
    f.probe = true;
    f.early_media = true;
    let mut h = Harness::new(f);
    assert_eq!(
        h.actions(),
        vec![CallAction::ProgressCaller, CallAction::StartPrompt]
    );
    h.advance(12_000);
    h.input(CallInput::PromptFinished);
    assert_eq!(h.actions(), vec![CallAction::StartRingback]);
    h.input(CallInput::CallerCancelled);
    let actions = h.actions();
    let record = finished(&actions);
    assert_eq!(reason(record), EndReason::CallerHungUp);
    assert_eq!(record.sip_final_status, 487);
    assert!(record.probe);
}

#[test]
fn a_probe_that_never_hangs_up_is_ended_after_the_ring_timeout() {
    let mut h = probe();
    h.actions();
    h.input(CallInput::CallerAcked);
    h.advance(12_000);
    h.input(CallInput::PromptFinished);
    h.actions();
    h.advance(29_000);
    assert_eq!(h.flow.phase(), Phase::ProbeHeard);
    h.advance(1_000);
    let actions = h.actions();
    assert_eq!(actions[0], CallAction::HangUpCaller, "{actions:?}");
    assert_eq!(reason(finished(&actions)), EndReason::NoAnswer);
}

#[test]
fn a_probe_with_a_target_dials_it_and_refusals_are_marked_too() {
    let mut f = facts(&["sip:probe@192.0.2.30"]);
    f.probe = true;
    let mut h = Harness::new(f.clone());
    h.answer_and_play_prompt();
    assert_eq!(h.flow.current_operator(), Some("sip:probe@192.0.2.30"));
    assert!(h.flow.record().probe);
    assert!(CallFlow::rejected(&f, 404).probe);
}

/// A call on a `simultaneous` line, answered and warned: every target is rung.
fn forked(operators: &[&str], own_timeouts: &[(&str, u64)]) -> Harness {
    let mut f = facts(operators);
    f.hunt = HuntStrategy::Simultaneous;
    f.target_ring_timeouts = own_timeouts
        .iter()
        .map(|(uri, s)| (uri.to_string(), Duration::from_secs(*s)))
        .collect();
    let mut h = Harness::new(f);
    assert_eq!(h.actions(), vec![CallAction::AnswerCaller]);
    h.input(CallInput::CallerAcked);
    h.actions();
    h.advance(12_000);
    h.input(CallInput::PromptFinished);
    let mut expected = vec![CallAction::StartRingback];
    expected.extend(
        operators
            .iter()
            .enumerate()
            .map(|(target, uri)| CallAction::ForkOperator {
                target,
                uri: uri.to_string(),
            }),
    );
    let actions: Vec<CallAction> = std::iter::from_fn(|| h.flow.poll_output()).collect();
    let dialed: Vec<&CallAction> = actions
        .iter()
        .filter(|a| matches!(a, CallAction::Milestone(Milestone::OperatorDialed { .. })))
        .collect();
    assert_eq!(
        dialed.len(),
        operators.len(),
        "each fork is recorded dialled"
    );
    let rest: Vec<CallAction> = actions
        .into_iter()
        .filter(|a| !matches!(a, CallAction::Milestone(_)))
        .collect();
    assert_eq!(rest, expected);
    assert_eq!(h.flow.phase(), Phase::DialingAll);
    h
}

fn fork(target: usize, event: ForkEvent) -> CallInput {
    CallInput::ForkedOperator { target, event }
}

#[test]
fn simultaneous_first_answer_wins_and_the_others_are_cancelled() {
    let mut h = forked(&["sip:a@h", "sip:b@h", "sip:c@h"], &[]);
    h.input(fork(0, ForkEvent::Ringing));
    h.input(fork(1, ForkEvent::Ringing));
    assert_eq!(
        h.milestones(),
        vec![
            Milestone::ForkRinging {
                uri: "sip:a@h".into()
            },
            Milestone::ForkRinging {
                uri: "sip:b@h".into()
            }
        ]
    );
    h.advance(2_000);
    h.input(fork(1, ForkEvent::Answered));
    let all: Vec<CallAction> = std::iter::from_fn(|| h.flow.poll_output()).collect();
    assert_eq!(
        all,
        vec![
            CallAction::CancelFork { target: 0 },
            CallAction::Milestone(Milestone::ForkCancelled {
                uri: "sip:a@h".into()
            }),
            CallAction::CancelFork { target: 2 },
            CallAction::Milestone(Milestone::ForkCancelled {
                uri: "sip:c@h".into()
            }),
            CallAction::AdoptFork { target: 1 },
            CallAction::Bridge,
            CallAction::WatchCallerMedia,
            CallAction::Milestone(Milestone::ForkAnswered {
                uri: "sip:b@h".into()
            }),
        ]
    );
    assert_eq!(h.flow.phase(), Phase::Bridged);
    assert_eq!(h.flow.current_operator(), Some("sip:b@h"));
    // A cancelled fork's 2xx that crossed the CANCEL is the adapter's to end.
    h.input(fork(0, ForkEvent::Answered));
    h.input(fork(2, ForkEvent::Failed(OperatorFailure::Status(487))));
    assert!(h.actions().is_empty());
    assert_eq!(h.flow.poll_timeout(), None);
    h.input(CallInput::CallerHungUp);
    let actions = h.actions();
    assert_eq!(actions[0], CallAction::HangUpOperator);
    let record = finished(&actions);
    assert_eq!(reason(record), EndReason::CallerHungUp);
    assert_eq!(record.operator_uri, "sip:b@h");
}

#[test]
fn simultaneous_hunt_fails_when_the_last_fork_does_each_on_its_own_timeout() {
    let mut h = forked(&["sip:a@h", "sip:b@h", "sip:c@h"], &[("sip:b@h", 10)]);
    assert_eq!(
        h.flow.poll_timeout().unwrap() - h.now,
        Duration::from_secs(10)
    );
    h.advance(1_000);
    h.input(fork(0, ForkEvent::Failed(OperatorFailure::Status(486))));
    // Only recorded: the others still ring.
    assert_eq!(
        h.milestones(),
        vec![Milestone::ForkFailed {
            uri: "sip:a@h".into(),
            reason: EndReason::OperatorBusy
        }]
    );
    h.advance(9_000);
    assert_eq!(h.actions(), vec![CallAction::CancelFork { target: 1 }]);
    assert_eq!(h.flow.phase(), Phase::DialingAll);
    assert_eq!(
        h.flow.poll_timeout().unwrap() - h.now,
        Duration::from_secs(20)
    );
    h.input(fork(2, ForkEvent::Failed(OperatorFailure::Refused)));
    let actions = h.actions();
    assert_eq!(actions[0], CallAction::CancelFork { target: 2 });
    assert_eq!(actions[1], CallAction::HangUpCaller);
    let record = finished(&actions);
    assert_eq!(reason(record), EndReason::OperatorUnreachable);
    assert_eq!(record.operator_uri, "sip:c@h");
}

#[test]
fn simultaneous_ring_timeout_ends_the_call_as_no_answer() {
    let mut h = forked(&["sip:a@h", "sip:b@h"], &[]);
    h.advance(30_000);
    let actions = h.actions();
    assert_eq!(
        actions[..3],
        [
            CallAction::CancelFork { target: 0 },
            CallAction::CancelFork { target: 1 },
            CallAction::HangUpCaller
        ]
    );
    assert_eq!(reason(finished(&actions)), EndReason::NoAnswer);
}

#[test]
fn simultaneous_caller_hang_up_cancels_every_fork() {
    let mut h = forked(&["sip:a@h", "sip:b@h"], &[]);
    h.input(CallInput::CallerHungUp);
    let actions = h.actions();
    assert_eq!(actions[0], CallAction::CancelOperator);
    assert_eq!(reason(finished(&actions)), EndReason::CallerHungUp);
    // Sequential inputs mean nothing to a forked hunt, and the reverse.
    let mut h = forked(&["sip:a@h", "sip:b@h"], &[]);
    h.input(CallInput::OperatorAnswered);
    assert!(h.actions().is_empty());
    assert_eq!(h.flow.phase(), Phase::DialingAll);
}

#[test]
fn a_single_target_simultaneous_line_forks_one() {
    let mut h = forked(&["sip:a@h"], &[]);
    h.input(fork(0, ForkEvent::Answered));
    assert_eq!(
        h.actions(),
        vec![
            CallAction::AdoptFork { target: 0 },
            CallAction::Bridge,
            CallAction::WatchCallerMedia
        ]
    );
}

fn busy_prompt() -> crate::contract::pb::PlayedPrompt {
    crate::contract::pb::PlayedPrompt {
        id: "busy_zh".into(),
        version: "1".into(),
        sha256: "cd".repeat(32),
        length_ms: 4_000,
        ms_sent: 0,
    }
}

fn with_failover(mut f: CallFacts) -> CallFacts {
    f.failover_prompt = Some(busy_prompt());
    f
}

#[test]
fn failed_hunt_plays_the_failover_prompt_then_hangs_up_for_the_hunts_reason() {
    let mut h = Harness::new(with_failover(facts(&["sip:a@h", "sip:b@h"])));
    h.answer_and_play_prompt();
    h.input(CallInput::OperatorFailed(OperatorFailure::Status(486)));
    h.actions();
    h.input(CallInput::OperatorFailed(OperatorFailure::Status(486)));
    assert_eq!(h.actions(), vec![CallAction::PlayFailover]);
    assert_eq!(
        h.flow.phase(),
        Phase::Failover {
            reason: EndReason::OperatorBusy
        }
    );
    assert_eq!(h.flow.poll_timeout(), None);
    // Keys and stale operator news change nothing while it plays.
    h.input(CallInput::CallerDtmf('1'));
    h.input(CallInput::OperatorAnswered);
    assert!(h.actions().is_empty());
    h.advance(4_200);
    h.input(CallInput::PromptFinished);
    let actions = h.actions();
    assert_eq!(actions[0], CallAction::HangUpCaller);
    let record = finished(&actions);
    assert_eq!(reason(record), EndReason::OperatorBusy);
    assert_eq!(record.operator_uri, "sip:b@h");
    let ids: Vec<&str> = record.prompts.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        ids.last(),
        Some(&"busy_zh"),
        "the failover prompt is on record"
    );
    assert!(record.prompt_completed);
}

#[test]
fn caller_hanging_up_during_the_failover_prompt_keeps_the_hunts_reason() {
    let mut h = Harness::new(with_failover(facts(&["sip:a@h"])));
    h.answer_and_play_prompt();
    h.advance(30_000);
    assert_eq!(
        h.actions(),
        vec![CallAction::CancelOperator, CallAction::PlayFailover]
    );
    h.advance(1_000);
    h.input(CallInput::CallerHungUp);
    let actions = h.actions();
    assert_eq!(actions.len(), 1, "no BYE back: {actions:?}");
    assert_eq!(reason(finished(&actions)), EndReason::NoAnswer);
}

#[test]
fn simultaneous_failure_plays_the_failover_prompt_too() {
    let mut f = with_failover(facts(&["sip:a@h", "sip:b@h"]));
    f.hunt = HuntStrategy::Simultaneous;
    let mut h = Harness::new(f);
    h.actions();
    h.input(CallInput::CallerAcked);
    h.input(CallInput::PromptFinished);
    h.actions();
    h.input(fork(0, ForkEvent::Failed(OperatorFailure::Unreachable)));
    h.input(fork(1, ForkEvent::Failed(OperatorFailure::Status(603))));
    assert_eq!(h.actions(), vec![CallAction::PlayFailover]);
    h.input(CallInput::PromptFinished);
    let actions = h.actions();
    assert_eq!(reason(finished(&actions)), EndReason::OperatorBusy);
}

#[test]
fn unanswered_early_media_caller_gets_no_failover_prompt_but_the_status() {
    let mut f = with_failover(facts(&["sip:a@h"]));
    f.early_media = true;
    let mut h = Harness::new(f);
    h.actions();
    h.input(CallInput::PromptFinished);
    h.actions();
    h.input(CallInput::OperatorFailed(OperatorFailure::Status(486)));
    let actions = h.actions();
    assert_eq!(actions[0], CallAction::RejectCaller { status: 486 });
    let record = finished(&actions);
    assert!(record.prompts.iter().all(|p| p.id != "busy_zh"));
}

/// A call on a `connect = "refer"` line, answered and warned: REFER is sent.
fn referring(operators: &[&str]) -> Harness {
    let mut f = facts(operators);
    f.connect = ConnectMode::Refer;
    let mut h = Harness::new(f);
    h.actions();
    h.input(CallInput::CallerAcked);
    h.actions();
    h.advance(12_000);
    h.input(CallInput::PromptFinished);
    let all: Vec<CallAction> = std::iter::from_fn(|| h.flow.poll_output()).collect();
    let uri = operators[0].to_string();
    assert_eq!(
        all[1..],
        [
            CallAction::StartRingback,
            CallAction::Milestone(Milestone::TransferRequested { uri: uri.clone() }),
            CallAction::ReferCaller { uri }
        ]
    );
    assert_eq!(h.flow.phase(), Phase::Transferring);
    h
}

#[test]
fn refer_accepted_and_succeeded_leaves_the_call_as_transferred() {
    let mut h = referring(&["sip:a@h", "sip:b@h"]);
    h.input(CallInput::ReferAnswered(202));
    h.input(CallInput::TransferProgress(100));
    h.input(CallInput::TransferProgress(180));
    assert!(h.actions().is_empty());
    h.advance(5_000);
    h.input(CallInput::TransferProgress(200));
    let actions = h.actions();
    assert_eq!(actions[0], CallAction::HangUpCaller);
    let record = finished(&actions);
    assert_eq!(reason(record), EndReason::Transferred);
    assert_eq!(record.operator_uri, "sip:a@h");
    assert_eq!(record.operator_answered_at_ms, h.ms_since_start());
}

#[test]
fn refused_refer_falls_back_to_the_bridge() {
    for status in [405, 403, 501, 408] {
        let mut h = referring(&["sip:a@h", "sip:b@h"]);
        h.input(CallInput::ReferAnswered(status));
        let all: Vec<CallAction> = std::iter::from_fn(|| h.flow.poll_output()).collect();
        assert_eq!(
            all,
            vec![
                CallAction::Milestone(Milestone::TransferFailed {
                    uri: "sip:a@h".into(),
                    status
                }),
                CallAction::Milestone(Milestone::OperatorDialed {
                    uri: "sip:a@h".into()
                }),
                CallAction::DialOperator {
                    uri: "sip:a@h".into()
                }
            ],
            "{status}"
        );
        h.input(CallInput::OperatorAnswered);
        assert_eq!(
            h.actions(),
            vec![CallAction::Bridge, CallAction::WatchCallerMedia]
        );
        // A NOTIFY that comes after the fallback changes nothing.
        h.input(CallInput::TransferProgress(200));
        assert!(h.actions().is_empty());
        assert_eq!(h.flow.phase(), Phase::Bridged);
    }
}

#[test]
fn failing_sipfrag_before_any_2xx_falls_back_and_so_does_silence() {
    let mut h = referring(&["sip:a@h"]);
    h.input(CallInput::ReferAnswered(202));
    h.input(CallInput::TransferProgress(486));
    assert_eq!(
        h.milestones(),
        vec![
            Milestone::TransferFailed {
                uri: "sip:a@h".into(),
                status: 486
            },
            Milestone::OperatorDialed {
                uri: "sip:a@h".into()
            }
        ]
    );
    assert_eq!(h.flow.phase(), Phase::DialingOperator { target: 0 });

    // Accepted, then no word within the target's ring timeout.
    let mut h = referring(&["sip:a@h"]);
    h.input(CallInput::ReferAnswered(202));
    h.advance(30_000);
    assert_eq!(
        h.actions(),
        vec![CallAction::DialOperator {
            uri: "sip:a@h".into()
        }]
    );
}

#[test]
fn refer_fallback_on_a_simultaneous_line_forks_and_caller_hang_up_ends_it() {
    let mut f = facts(&["sip:a@h", "sip:b@h"]);
    f.connect = ConnectMode::Refer;
    f.hunt = HuntStrategy::Simultaneous;
    let mut h = Harness::new(f);
    h.actions();
    h.input(CallInput::CallerAcked);
    h.input(CallInput::PromptFinished);
    h.actions();
    h.input(CallInput::ReferAnswered(603));
    assert_eq!(h.flow.phase(), Phase::DialingAll);

    let mut h = referring(&["sip:a@h"]);
    h.input(CallInput::CallerHungUp);
    let actions = h.actions();
    assert_eq!(actions.len(), 1);
    assert_eq!(reason(finished(&actions)), EndReason::CallerHungUp);
}

#[test]
fn early_media_line_never_refers() {
    let mut f = facts(&["sip:a@h"]);
    f.connect = ConnectMode::Refer;
    f.early_media = true;
    let mut h = Harness::new(f);
    h.actions();
    h.input(CallInput::PromptFinished);
    assert_eq!(
        h.actions(),
        vec![
            CallAction::StartRingback,
            CallAction::DialOperator {
                uri: "sip:a@h".into()
            }
        ]
    );
}

/// A call on a line with `whisper_history`, its history lookup answering
/// `history` (reports, flags) before the operator answers, if at all.
fn answered_with_history(whisper_history: bool, history: Option<(u32, u32)>) -> Harness {
    let mut h = Harness::new(CallFacts {
        whisper_history,
        ..facts(&["sip:op@h"])
    });
    if let Some((prior_reports, prior_flags)) = history {
        h.input(CallInput::CallerHistory {
            prior_reports,
            prior_flags,
        });
    }
    h.answer_and_play_prompt();
    h.input(CallInput::OperatorAnswered);
    h
}

#[test]
fn a_caller_with_prior_reports_or_flags_is_whispered_to_the_operator_right_after_the_bridge() {
    for history in [(1, 0), (0, 2), (3, 1)] {
        let mut h = answered_with_history(true, Some(history));
        assert_eq!(
            h.actions(),
            vec![
                CallAction::Bridge,
                CallAction::WhisperToOperator,
                CallAction::WatchCallerMedia
            ],
            "{history:?}"
        );
        h.input(CallInput::CallerHungUp);
        let actions = h.actions();
        let record = finished(&actions);
        assert_eq!((record.prior_reports, record.prior_flags), history);
    }
}

#[test]
fn no_whisper_when_off_without_history_or_without_an_answer_in_time() {
    // Off: the history is still recorded.
    let mut off = answered_with_history(false, Some((2, 1)));
    assert_eq!(
        off.actions(),
        vec![CallAction::Bridge, CallAction::WatchCallerMedia]
    );
    assert_eq!(
        (
            off.flow.record().prior_reports,
            off.flow.record().prior_flags
        ),
        (2, 1)
    );
    // A clean caller, and a lookup that failed (the adapter sends nothing).
    for history in [Some((0, 0)), None] {
        let mut h = answered_with_history(true, history);
        assert_eq!(
            h.actions(),
            vec![CallAction::Bridge, CallAction::WatchCallerMedia],
            "{history:?}"
        );
    }
    // An answer after the bridge is recorded, and not whispered late.
    let mut late = answered_with_history(true, None);
    late.actions();
    late.input(CallInput::CallerHistory {
        prior_reports: 1,
        prior_flags: 0,
    });
    assert_eq!(late.actions(), vec![]);
    assert_eq!(late.flow.record().prior_reports, 1);
}
