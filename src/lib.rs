//! courtline: a SIP switchboard for court main lines.
//!
//! Every caller hears the mandatory "three rules" warning before being connected
//! to an operator, and every call leaves a record in the records service.
//! See `ARCHITECTURE.md` for how a call flows through these modules.

pub mod call;
pub mod cli;
pub mod config;
pub mod loadgen;
pub mod media;
pub mod records;
pub mod sdp;
pub mod sip;
