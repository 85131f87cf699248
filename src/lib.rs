//! courtline: a SIP switchboard for court main lines.
//!
//! Every caller hears the mandatory "three rules" warning before being connected
//! to an operator, and every call leaves a record in the records service.
//! See `ARCHITECTURE.md` for how a call flows through these modules.

pub mod cli;
pub mod config;
pub mod contract;
pub mod records;
pub mod switchboard;
