//! Names of the contract's enums as people read them, the same in the
//! switchboard's logs and the records service's outputs.

use std::borrow::Cow;

use super::pb::{CallState, EndReason, FlagCategory};

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
        EndReason::AfterHours => "after_hours",
        EndReason::Shutdown => "shutdown",
        EndReason::Transferred => "transferred",
    }
}

/// The name for a raw proto value; a number no enum variant knows is shown, not hidden.
pub fn end_reason_label(value: i32) -> Cow<'static, str> {
    match EndReason::try_from(value) {
        Ok(reason) => Cow::Borrowed(end_reason_name(reason)),
        Err(_) => Cow::Owned(format!("unknown_{value}")),
    }
}

/// The name of a raw call state ("ended", "interrupted", "in_progress").
pub fn state_label(value: i32) -> Cow<'static, str> {
    match CallState::try_from(value) {
        Ok(CallState::Unspecified) => Cow::Borrowed("unspecified"),
        Ok(CallState::InProgress) => Cow::Borrowed("in_progress"),
        Ok(CallState::Ended) => Cow::Borrowed("ended"),
        Ok(CallState::Interrupted) => Cow::Borrowed("interrupted"),
        Err(_) => Cow::Owned(format!("unknown_{value}")),
    }
}

/// The human name of a flag category, as the CLI accepts it (`improper_inquiry`).
pub fn flag_category_name(category: FlagCategory) -> &'static str {
    match category {
        FlagCategory::Unspecified => "unspecified",
        FlagCategory::ImproperInquiry => "improper_inquiry",
        FlagCategory::Intercession => "intercession",
        FlagCategory::ProbingCaseInformation => "probing_case_information",
        FlagCategory::Other => "other",
    }
}
