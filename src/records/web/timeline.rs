//! A call's timeline as the call page shows it: the chained events turned into steps
//! people read (received → answered → warning → operator attempts → ended), each
//! operator attempt with its target, and the call record's own times standing in for
//! milestones whose events the chain does not hold (calls logged by their final record
//! only). Pure, so the order and the pairing are tested without a browser.

use crate::contract::names::end_reason_name;
use crate::contract::pb::{CallRecord, EndReason, TimelineEvent};

/// What a step of the timeline is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// The INVITE arrived.
    Received,
    /// courtline answered (200 OK, or 183 on an early-media line).
    Answered,
    /// The warning started playing; the step lists the playlist.
    WarningStarted,
    /// The caller heard the whole warning.
    WarningFinished,
    /// The warning stopped before its end (the caller hung up).
    WarningInterrupted,
    /// An operator was dialled.
    OperatorDialed,
    /// That operator's phone rang.
    OperatorRinging,
    /// That operator answered: the call was bridged.
    OperatorAnswered,
    /// That operator could not be reached, was busy or did not answer.
    OperatorFailed,
    /// The bridged operator asked for a report by keys.
    ReportRequested,
    /// The call ended; the step says who hung up.
    Ended,
    /// The switchboard restarted while the call was up.
    Interrupted,
    /// Compliance staff flagged the call.
    Flagged,
    /// A report on the call changed.
    Report,
    /// The call's recording was closed.
    Recording,
    /// Anything else the chain holds about the call.
    Other,
}

impl StepKind {
    /// The step kind of a timeline event's `kind`.
    fn of_event(kind: &str) -> StepKind {
        match kind {
            "received" => StepKind::Received,
            "answered" => StepKind::Answered,
            "prompt_started" => StepKind::WarningStarted,
            "prompt_finished" => StepKind::WarningFinished,
            "prompt_interrupted" => StepKind::WarningInterrupted,
            "operator_dialed" => StepKind::OperatorDialed,
            "operator_ringing" => StepKind::OperatorRinging,
            "operator_answered" => StepKind::OperatorAnswered,
            "operator_failed" => StepKind::OperatorFailed,
            "report_requested" => StepKind::ReportRequested,
            "ended" => StepKind::Ended,
            "interrupted" => StepKind::Interrupted,
            "flagged" => StepKind::Flagged,
            "recording" => StepKind::Recording,
            report if report.starts_with("report_") => StepKind::Report,
            _ => StepKind::Other,
        }
    }

    /// The translation key of the step's name (also its CSS class).
    pub fn key(self) -> &'static str {
        match self {
            StepKind::Received => "step-received",
            StepKind::Answered => "step-answered",
            StepKind::WarningStarted => "step-warning",
            StepKind::WarningFinished => "step-warning-finished",
            StepKind::WarningInterrupted => "step-warning-interrupted",
            StepKind::OperatorDialed => "step-operator-dialed",
            StepKind::OperatorRinging => "step-operator-ringing",
            StepKind::OperatorAnswered => "step-operator-answered",
            StepKind::OperatorFailed => "step-operator-failed",
            StepKind::ReportRequested => "step-report-requested",
            StepKind::Ended => "step-ended",
            StepKind::Interrupted => "step-interrupted",
            StepKind::Flagged => "step-flagged",
            StepKind::Report => "step-report",
            StepKind::Recording => "step-recording",
            StepKind::Other => "step-other",
        }
    }

    /// Place in a call's course, for steps at the same moment or without a time.
    fn rank(self) -> u8 {
        match self {
            StepKind::Received => 0,
            StepKind::Answered => 1,
            StepKind::WarningStarted => 2,
            StepKind::WarningFinished | StepKind::WarningInterrupted => 3,
            StepKind::OperatorDialed
            | StepKind::OperatorRinging
            | StepKind::OperatorAnswered
            | StepKind::OperatorFailed => 4,
            StepKind::ReportRequested => 5,
            StepKind::Ended | StepKind::Interrupted => 6,
            StepKind::Flagged | StepKind::Report | StepKind::Recording | StepKind::Other => 7,
        }
    }
}

/// Who ended a call, as the end step says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HungUpBy {
    /// The caller hung up (or cancelled).
    Caller,
    /// The operator hung up.
    Operator,
    /// courtline ended it (no operator, refusal, lost media, error ...).
    Courtline,
}

impl HungUpBy {
    /// Who ended a call that ended with `reason`.
    pub fn of(reason: EndReason) -> HungUpBy {
        match reason {
            EndReason::CallerHungUpDuringPrompt
            | EndReason::CallerHungUp
            | EndReason::CancelledBeforeAnswer => HungUpBy::Caller,
            EndReason::OperatorHungUp => HungUpBy::Operator,
            _ => HungUpBy::Courtline,
        }
    }

    /// The translation key of who it was.
    pub fn key(self) -> &'static str {
        match self {
            HungUpBy::Caller => "hung-up-caller",
            HungUpBy::Operator => "hung-up-operator",
            HungUpBy::Courtline => "hung-up-courtline",
        }
    }
}

/// One step of the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What happened.
    pub kind: StepKind,
    /// When (Unix ms); 0 when neither an event nor the record says.
    pub at_ms: i64,
    /// Chain position of the event; `None` for a step taken from the call record.
    pub seq: Option<u64>,
    /// The operator an operator step is about.
    pub target: String,
    /// What else the event says (failure, end reason, flag, report ...).
    pub detail: String,
    /// Who hung up (end steps).
    pub hung_up_by: Option<HungUpBy>,
}

/// The steps of a call, in order: one per chained event, and one from the record's
/// times for each milestone the chain has no event of.
pub fn steps(record: &CallRecord, events: &[TimelineEvent]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut dialed = String::new();
    for event in events {
        let kind = StepKind::of_event(&event.kind);
        let mut step = Step {
            kind,
            at_ms: event.at_ms,
            seq: Some(event.seq),
            target: String::new(),
            detail: event.detail.clone(),
            hung_up_by: None,
        };
        match kind {
            // The milestone names the operator dialled; the others of that attempt
            // follow it (a failure's detail is how it failed).
            StepKind::OperatorDialed => {
                dialed = event.detail.clone();
                step.target = std::mem::take(&mut step.detail);
            }
            StepKind::OperatorRinging | StepKind::OperatorAnswered
                if event.detail.is_empty() || event.detail == dialed =>
            {
                step.target = dialed.clone();
                step.detail.clear();
            }
            StepKind::OperatorFailed => step.target = dialed.clone(),
            StepKind::Ended => {
                step.hung_up_by = Some(HungUpBy::of(record.end_reason()));
            }
            _ => {}
        }
        steps.push(step);
    }
    let has = |steps: &[Step], kinds: &[StepKind]| steps.iter().any(|s| kinds.contains(&s.kind));
    let warning_end = if record.prompt_completed {
        StepKind::WarningFinished
    } else {
        StepKind::WarningInterrupted
    };
    let played = !record.prompts.is_empty() || !record.prompt_id.is_empty();
    let from_record = [
        (StepKind::Received, record.received_at_ms, true, ""),
        (
            StepKind::Answered,
            record.answered_at_ms,
            record.answered_at_ms != 0,
            "",
        ),
        (
            StepKind::WarningStarted,
            record.prompt_started_at_ms,
            played || record.prompt_started_at_ms != 0,
            "",
        ),
        (
            warning_end,
            record.prompt_ended_at_ms,
            record.prompt_ended_at_ms != 0,
            "",
        ),
        (
            StepKind::OperatorAnswered,
            record.operator_answered_at_ms,
            record.operator_answered_at_ms != 0,
            record.operator_uri.as_str(),
        ),
        (
            StepKind::Ended,
            record.ended_at_ms,
            record.ended_at_ms != 0,
            "",
        ),
    ];
    for (kind, at_ms, happened, target) in from_record {
        let covered = match kind {
            StepKind::WarningFinished | StepKind::WarningInterrupted => has(
                &steps,
                &[StepKind::WarningFinished, StepKind::WarningInterrupted],
            ),
            StepKind::Ended => has(&steps, &[StepKind::Ended, StepKind::Interrupted]),
            other => has(&steps, &[other]),
        };
        if happened && !covered {
            steps.push(Step {
                kind,
                at_ms,
                seq: None,
                target: target.to_owned(),
                detail: if kind == StepKind::Ended {
                    end_reason_name(record.end_reason()).to_owned()
                } else {
                    String::new()
                },
                hung_up_by: (kind == StepKind::Ended).then(|| HungUpBy::of(record.end_reason())),
            });
        }
    }
    // A step without a time goes after the latest step of an earlier rank.
    let placed: Vec<i64> = steps
        .iter()
        .map(|step| {
            if step.at_ms != 0 {
                return step.at_ms;
            }
            steps
                .iter()
                .filter(|other| other.at_ms != 0 && other.kind.rank() < step.kind.rank())
                .map(|other| other.at_ms)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut order: Vec<usize> = (0..steps.len()).collect();
    // At one moment, the call's course; within a rank (an attempt's steps), the chain's order.
    order.sort_by_key(|&index| (placed[index], steps[index].kind.rank(), steps[index].seq));
    order
        .into_iter()
        .map(|index| steps[index].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::pb::PlayedPrompt;

    fn event(seq: u64, at_ms: i64, kind: &str, detail: &str) -> TimelineEvent {
        TimelineEvent {
            seq,
            at_ms,
            kind: kind.into(),
            detail: detail.into(),
            ..TimelineEvent::default()
        }
    }

    fn kinds(steps: &[Step]) -> Vec<StepKind> {
        steps.iter().map(|step| step.kind).collect()
    }

    #[test]
    fn every_milestone_becomes_a_step_and_attempts_name_their_target() {
        let record = CallRecord {
            received_at_ms: 1_000,
            end_reason: EndReason::OperatorHungUp as i32,
            prompt_completed: true,
            ..CallRecord::default()
        };
        let events = [
            event(1, 1_000, "received", ""),
            event(2, 1_100, "answered", ""),
            event(3, 1_200, "prompt_started", ""),
            event(4, 19_000, "prompt_finished", ""),
            event(5, 19_000, "operator_dialed", "sip:desk1@court"),
            event(6, 19_500, "operator_failed", "operator_unreachable"),
            event(7, 19_500, "operator_dialed", "sip:desk2@court"),
            event(8, 19_600, "operator_ringing", ""),
            event(9, 22_000, "operator_answered", "sip:desk2@court"),
            event(10, 60_000, "ended", "operator_hung_up"),
            event(11, 90_000, "flagged", "other by compliance-1: 打听"),
        ];
        let steps = steps(&record, &events);
        use StepKind::*;
        assert_eq!(
            kinds(&steps),
            [
                Received,
                Answered,
                WarningStarted,
                WarningFinished,
                OperatorDialed,
                OperatorFailed,
                OperatorDialed,
                OperatorRinging,
                OperatorAnswered,
                Ended,
                Flagged
            ]
        );
        let targets: Vec<&str> = steps[4..9].iter().map(|s| s.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                "sip:desk1@court",
                "sip:desk1@court",
                "sip:desk2@court",
                "sip:desk2@court",
                "sip:desk2@court"
            ]
        );
        assert_eq!(steps[5].detail, "operator_unreachable");
        assert_eq!(steps[8].detail, "");
        assert_eq!(steps[9].hung_up_by, Some(HungUpBy::Operator));
        assert!(steps.iter().all(|step| step.seq.is_some()));
    }

    #[test]
    fn the_record_stands_in_for_milestones_the_chain_lacks() {
        // Logged by its final record only: received and ended events, and the
        // record's times for the rest; the playlist without a start time.
        let record = CallRecord {
            received_at_ms: 1_000,
            answered_at_ms: 1_100,
            operator_answered_at_ms: 20_000,
            operator_uri: "sip:desk@court".into(),
            ended_at_ms: 30_000,
            end_reason: EndReason::CallerHungUp as i32,
            prompts: vec![PlayedPrompt::default()],
            ..CallRecord::default()
        };
        let events = [
            event(1, 1_000, "received", ""),
            event(2, 30_000, "ended", "caller_hung_up"),
        ];
        let steps = steps(&record, &events);
        use StepKind::*;
        assert_eq!(
            kinds(&steps),
            [Received, Answered, WarningStarted, OperatorAnswered, Ended]
        );
        assert_eq!(
            steps.iter().map(|s| s.seq).collect::<Vec<_>>(),
            [Some(1), None, None, None, Some(2)]
        );
        assert_eq!(steps[2].at_ms, 0, "no time is made up");
        assert_eq!(steps[3].target, "sip:desk@court");
        assert_eq!(steps[4].hung_up_by, Some(HungUpBy::Caller));
    }

    #[test]
    fn who_hung_up_follows_the_end_reason() {
        assert_eq!(
            HungUpBy::of(EndReason::CallerHungUpDuringPrompt),
            HungUpBy::Caller
        );
        assert_eq!(
            HungUpBy::of(EndReason::CancelledBeforeAnswer),
            HungUpBy::Caller
        );
        assert_eq!(HungUpBy::of(EndReason::OperatorHungUp), HungUpBy::Operator);
        assert_eq!(HungUpBy::of(EndReason::NoAnswer), HungUpBy::Courtline);
        assert_eq!(HungUpBy::of(EndReason::MediaTimeout), HungUpBy::Courtline);
    }
}
