//! Delivery of call events: the durable spool and the sender that drains it
//! into the records service, and the uploads of kept recordings to a records
//! service on another machine, each failing over between several records
//! services (`endpoints`); and the caller-history lookup for the operator's
//! whisper, from the same services. Runs in the switchboard process; takes contract
//! types only (the call flow converts its milestones).

pub mod endpoints;
pub mod history;
pub mod sender;
pub mod spool;
pub mod upload;
