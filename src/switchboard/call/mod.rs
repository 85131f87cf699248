//! One call's life: the sans-IO decision logic (`flow`) and the task that runs
//! it against real SIP dialogs and media (`session`). Runs in the switchboard
//! process.

pub mod flow;
pub mod reoffer;
pub mod report_keys;
pub mod session;

pub use flow::{CallAction, CallFacts, CallFlow, CallInput, Milestone, OperatorFailure, Phase};

#[cfg(test)]
mod flow_tests;
