//! Names of the contract's enums as people read them, the same in the
//! switchboard's logs and the records service's outputs.

use super::pb::EndReason;

/// The stable, human-friendly name of an end reason (`caller_hung_up_during_prompt`),
/// used in every output format and accepted back by the CLI's `--end-reason`.
pub fn end_reason_name(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Unspecified => "unspecified",
        EndReason::CallerHungUpDuringPrompt => "caller_hung_up_during_prompt",
        EndReason::CallerHungUp => "caller_hung_up",
        EndReason::OperatorHungUp => "operator_hung_up",
        EndReason::OperatorBusy => "operator_busy",
        EndReason::NoAnswer => "no_answer",
        EndReason::OperatorUnreachable => "operator_unreachable",
        EndReason::CancelledBeforeAnswer => "cancelled_before_answer",
        EndReason::Rejected => "rejected",
        EndReason::MediaTimeout => "media_timeout",
        EndReason::Error => "error",
        EndReason::NoAck => "no_ack",
        EndReason::SessionExpired => "session_expired",
    }
}
