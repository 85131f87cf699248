//! courtline: a SIP switchboard for court main lines.
//!
//! Every caller hears the mandatory "three rules" warning before being connected
//! to an operator, and every call leaves a record in the records service.
//!
//! Two processes in one binary, one folder each: [`switchboard`] and
//! [`records`] (the service). Below both: [`contract`] (the gRPC types) and
//! [`config`]; above both: [`cli`]. See `ARCHITECTURE.md` for how a call flows
//! through these folders; `tests/module_layering.rs` keeps imports one way.

pub mod cli;
pub mod config;
pub mod contract;
pub mod records;
pub mod switchboard;
